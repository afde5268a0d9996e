"""Per-layer counters and the simulation report (a JSON-ready dict).

CONTRACT: `build_report(...)` returns
  {"model", "hw": {"summary", <sections>...}, "functional", "inputs_quantised",
   "total": {cycles, bound_cycles, dram_bytes, sram_bytes, energy_pj, matched_ops,
             instructions, saturations},
   "layers": [{"name", "cycles", "bound_cycles", "dram_bytes", "dram_read_bytes",
               "dram_written_bytes", "dram_compulsory_bytes", "sram_bytes",
               "sram_read_bytes", "sram_written_bytes", "matched_ops", "sops", "macs",
               "silent_ratio", "energy_pj", "energy_breakdown_pj", "instructions",
               "saturations"}]}
With functional=True, cycle/energy/op fields are None (not simulated).
energy_pj = DRAM bits x fJ/bit + SRAM bits x fJ/bit + SOPs x sop_fj + MACs x mac_fj
            + static_power_mw x cycles x ns/cycle (mW x ns = pJ).
bound_cycles = ceil(max(pe_work / num_pes, compulsory DRAM bytes / (bytes per cycle))),
pe_work = TPPE work (matched positions for spike inputs: a TPPE does all lanes of a
position in one cycle; MACs for multi-bit inputs), compulsory = distinct DRAM bytes
the DMAs touch. The total's bound uses the program-wide sums/union, so it is a true
lower bound of total cycles (a layer's bound can exceed its attributed cycles
when its work overlaps other layers).
`report_to_json(report) -> str`; `write_report_json(report, path)` writes it atomically
(temp file + rename).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snnc.backend.binformat import ProgramImage
from snnc.backend.hwconfig import HwConfig


@dataclass
class LayerCounters:
    cycles: int = 0
    instructions: int = 0
    dram_read: int = 0
    dram_written: int = 0
    sram_read: int = 0
    sram_written: int = 0
    sops: int = 0
    macs: int = 0
    pe_work: int = 0
    saturations: int = 0
    neurons_seen: int = 0
    neurons_fired: int = 0
    spike_input: bool = False
    dram_spans: list[tuple[np.ndarray, int]] = field(default_factory=list)

    def add(self, effect) -> None:
        self.instructions += 1
        self.dram_read += effect.dram_read
        self.dram_written += effect.dram_written
        self.sram_read += effect.sram_read
        self.sram_written += effect.sram_written
        self.sops += effect.sops
        self.macs += effect.macs
        self.pe_work += effect.pe_work
        if effect.dram_spans is not None:
            self.dram_spans.append(effect.dram_spans)

    def compulsory_dram_bytes(self) -> int:
        """Size of the union of every DRAM byte range this layer's DMAs touched."""
        return distinct_bytes(self.dram_spans)


def distinct_bytes(spans: list[tuple[np.ndarray, int]]) -> int:
    """Size of the union of byte ranges given as (row starts, row length) groups."""
    if not spans:
        return 0
    starts = np.concatenate([s for s, _ in spans])
    ends = np.concatenate([s + n for s, n in spans])
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    # a new disjoint run begins where a start lies beyond everything before it
    new_run = np.concatenate([[True], starts[1:] > reach[:-1]])
    run_id = np.cumsum(new_run) - 1
    run_start = starts[new_run]
    run_end = np.zeros(run_start.size, dtype=np.int64)
    np.maximum.at(run_end, run_id, ends)
    return int((run_end - run_start).sum())


def _energy(hw: HwConfig, c: LayerCounters, cycles: int) -> dict[str, float]:
    return {
        "dram": (c.dram_read * hw.dram.read_fj_per_bit + c.dram_written * hw.dram.write_fj_per_bit) * 8 / 1e3,
        "sram": (c.sram_read * hw.sram.read_fj_per_bit + c.sram_written * hw.sram.write_fj_per_bit) * 8 / 1e3,
        "compute": (c.sops * hw.energy.sop_fj + c.macs * hw.energy.mac_fj) / 1e3,
        "static": hw.energy.static_power_mw * cycles * hw.cycle_ns,
    }


def _bound(hw: HwConfig, pe_work: int, compulsory: int) -> int:
    """Lower bound: all PEs busy on the matched work, or DRAM streaming the distinct bytes."""
    return math.ceil(max(pe_work / hw.compute.num_pes, compulsory / hw.dram_bytes_per_cycle))


def build_report(image: ProgramImage, hw: HwConfig, counters: list[LayerCounters], unattributed: LayerCounters,
                 *, executed: int, functional: bool, makespan: int, inputs_quantised: bool) -> dict:
    """`unattributed` holds instructions no layer owns (a program without tile
    instructions); they count in the totals only."""
    layers = []
    names = list(image.layer_names) + ["(unattributed)"]
    for name, c in zip(names, counters + [unattributed]):
        entry = {
            "name": name,
            "instructions": c.instructions,
            "dram_bytes": c.dram_read + c.dram_written,
            "dram_read_bytes": c.dram_read,
            "dram_written_bytes": c.dram_written,
            "sram_bytes": c.sram_read + c.sram_written,
            "sram_read_bytes": c.sram_read,
            "sram_written_bytes": c.sram_written,
            "silent_ratio": (1 - c.neurons_fired / c.neurons_seen) if c.spike_input and c.neurons_seen else None,
            "saturations": c.saturations,
        }
        if functional:
            entry.update(cycles=None, bound_cycles=None, matched_ops=None, sops=None, macs=None, pe_work=None,
                         dram_compulsory_bytes=None, energy_pj=None, energy_breakdown_pj=None)
        else:
            compulsory = c.compulsory_dram_bytes()
            energy = _energy(hw, c, c.cycles)
            entry.update(
                cycles=c.cycles,
                bound_cycles=_bound(hw, c.pe_work, compulsory),
                matched_ops=c.sops + c.macs, sops=c.sops, macs=c.macs, pe_work=c.pe_work,
                dram_compulsory_bytes=compulsory,
                energy_pj=sum(energy.values()), energy_breakdown_pj=energy,
            )
        layers.append(entry)
    counters = counters + [unattributed]

    def total(key):
        return None if functional else sum(e[key] for e in layers)

    hw_dict = {"summary": hw.summary(), **dataclasses.asdict(hw)}
    return {
        "model": image.model_name,
        "hw": hw_dict,
        "functional": functional,
        "inputs_quantised": inputs_quantised,
        "total": {
            "cycles": None if functional else makespan,
            "bound_cycles": None if functional else _bound(
                hw, sum(c.pe_work for c in counters), distinct_bytes([s for c in counters for s in c.dram_spans])),
            "dram_bytes": sum(e["dram_bytes"] for e in layers),
            "sram_bytes": sum(e["sram_bytes"] for e in layers),
            "energy_pj": total("energy_pj"),
            "matched_ops": total("matched_ops"),
            "instructions": executed,
            "saturations": sum(e["saturations"] for e in layers),
        },
        "layers": layers if unattributed.instructions else layers[:-1],
    }


def report_to_json(report: dict) -> str:
    """The report as indented JSON text (key order as built; ends with a newline)."""
    return json.dumps(report, indent=2) + "\n"


def write_report_json(report: dict, path: str | Path) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(report_to_json(report))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
