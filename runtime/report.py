"""Per-layer counters and the simulation report (a JSON-ready dict).

CONTRACT: `build_report(...)` returns
  {"model", "hw": {"summary", <sections>...}, "functional", "inputs_quantised",
   "total": {cycles, bound_cycles, dram_bytes, sram_bytes, energy_pj, matched_ops,
             instructions, saturations},
   "layers": [{"name", "cycles", "bound_cycles", "dram_bytes", "dram_read_bytes",
               "dram_written_bytes", "dram_compulsory_bytes", "sram_bytes",
               "sram_read_bytes", "sram_written_bytes", "matched_ops", "sops", "macs",
               "silent_ratio", "energy_pj", "energy_breakdown_pj", "instructions",
               "saturations", "compression_efficiency", "bitmask_bytes"}]}
compression_efficiency (spike-pack): spikes delivered by dma.load_bm / pointer+bitmask bits
moved for them (LoAS §IV-A's sense, Fig. 8: 5 spikes located by 4 bits = 1.25); None when the
layer reads no packed input. bitmask_bytes: pointer + bitmask bytes moved by dma.*_bm.
With functional=True, cycle/energy/op fields are None (not simulated).
The simulator adds (runtime/output_timing.py): "timesteps" [{"t", "ready_cycle", "outputs"}],
total.first_output_cycle, "exit_checks" (what each exit.check saw) and "exit" (the early
exit of a run with a threshold, next to the full run; None without one).
`total_energy_pj(hw, counters)`: the total energy of the counters so far (an exit's energy).
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snnc.backend.binformat import ProgramImage
from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Opcode
from snnc.runtime import energy as energy_model
from snnc.runtime.files import atomic_write_text, ensure_directory
from snnc.runtime.timing import STALL_CAUSES

OPERANDS = ("weights", "spikes", "outputs", "bitmasks", "neuron_state", "psums")
# operand of each SRAM range an instruction reads / writes, in the handler's order
# (runtime/simulator.py); a missing entry (optional range) falls back to the last one
READ_OPERANDS = {
    Opcode.SYN: ("spikes", "weights", "weights"),  # input tile, weights, bias (acc with ACCUMULATE: psums)
    Opcode.LIF: ("psums", "weights", "neuron_state"),
    Opcode.PACK: ("outputs", "outputs"),
    Opcode.POOL: ("spikes", "outputs"),
    Opcode.ADD: ("spikes", "spikes", "outputs"),
}
WRITE_OPERANDS = {
    Opcode.SYN: ("psums",),
    Opcode.LIF: ("neuron_state", "outputs", "neuron_state"),
    Opcode.PACK: ("outputs",),
    Opcode.POOL: ("outputs",),
    Opcode.ADD: ("outputs",),
}


# dma.load / dma.store and their bitmask forms move DRAM bytes; the loads fill cache lines
DMA_OPCODES = frozenset(op for op in Opcode if op.name.startswith("DMA_"))
DMA_LOAD_OPCODES = frozenset(op for op in DMA_OPCODES if "LOAD" in op.name)


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
    bitmask_bytes: int = 0  # spike-pack: fiber pointer + bitmask bytes moved (dma.*_bm)
    packed_spikes: int = 0  # spike-pack: spikes delivered by dma.load_bm ...
    packed_meta_bits: int = 0  # ... and the pointer + bitmask bits spent locating them
    saturations: int = 0
    neurons_seen: int = 0
    neurons_fired: int = 0
    spike_input: bool = False
    dram_spans: list[tuple[np.ndarray, int]] = field(default_factory=list)
    stalls: dict = field(default_factory=lambda: dict.fromkeys(STALL_CAUSES, 0))
    events: dict = field(default_factory=dict)
    sram_operands: dict = field(default_factory=lambda: dict.fromkeys(OPERANDS, 0))
    dram_operands: dict = field(default_factory=lambda: dict.fromkeys(OPERANDS, 0))
    compute_busy: int = 0  # cycles of compute-engine instructions (SYN, POOL, ADD: their own durations)
    neuron_busy: int = 0  # cycles of neuron-engine instructions (LIF, PACK)
    fill_lines: int = 0  # global-cache lines filled from DRAM (misses)
    read_lines: int = 0  # lines read by compute instructions
    dataflows: set = field(default_factory=set)
    _runs: tuple | None = field(default=None, repr=False, compare=False)  # dram_runs, with the span count it covers

    def add(self, effect, opcode=None, const_size: int = 0, hw: HwConfig | None = None,
            static: StaticCounts | None = None, sram_read: int | None = None,
            sram_written: int | None = None) -> None:
        """Count one executed instruction. `static`: static_counts(effect, opcode, hw), if the
        caller keeps it per instruction (it is the same every time the instruction runs);
        `sram_read` / `sram_written`: effect.sram_read / sram_written, if the caller has them."""
        self.instructions += 1
        self.dram_read += effect.dram_read
        self.dram_written += effect.dram_written
        self.sram_read += effect.sram_read if sram_read is None else sram_read
        self.sram_written += effect.sram_written if sram_written is None else sram_written
        self.sops += effect.sops
        self.macs += effect.macs
        self.pe_work += effect.pe_work
        self.bitmask_bytes += getattr(effect, "bitmask_bytes", 0)
        self.packed_spikes += getattr(effect, "packed_spikes", 0)
        self.packed_meta_bits += getattr(effect, "packed_meta_bits", 0)
        if effect.dram_spans is not None:
            self.dram_spans.append(effect.dram_spans)
        if effect.stalls:
            stalls = self.stalls
            for cause, value in effect.stalls.items():
                stalls[cause] = stalls.get(cause, 0) + int(value)
        if opcode is None:
            return
        line = hw.sram.line_bytes if hw is not None else 64
        if opcode in DMA_OPCODES:
            load = opcode in DMA_LOAD_OPCODES
            nbytes = effect.dram_read if load else effect.dram_written
            starts = effect.dram_spans[0] if effect.dram_spans is not None else np.zeros(0)
            operand = ("weights" if starts.size and int(starts[0]) < const_size else "spikes") if load else "outputs"
            self.dram_operands[operand] += nbytes
            self.sram_operands[operand] += nbytes
            if load:
                self.fill_lines += -(-nbytes // line)
            return
        if effect.engine == "neuron":
            self.neuron_busy += effect.cycles
        elif effect.engine == "compute":
            self.compute_busy += effect.cycles
        else:
            return
        if static is None:
            static = static_counts(effect, opcode, hw)
        sram_operands = self.sram_operands
        for name, nbytes in static.operand_bytes:
            sram_operands[name] += nbytes
        self.sram_read -= static.replaced_reads
        self.read_lines += static.read_lines
        if static.plif_lanes is not None:
            self.events["plif_lanes"] = self.events.get("plif_lanes", 0) + static.plif_lanes
        syn = effect.syn
        if syn is not None:
            for key, value in syn.events.items():
                self.events[key] = self.events.get(key, 0) + int(value)
            for key, value in syn.sram_extra.items():
                self.sram_operands[key] += int(value)
                self.sram_read += int(value)
                self.read_lines += -(-int(value) // line)
            for key, value in syn.dram_extra.items():
                self.dram_operands[key] += int(value)
                self.dram_read += int(value) // 2
                self.dram_written += int(value) - int(value) // 2
        elif opcode == Opcode.SYN and effect.sops:
            self.events["pseudo_acc"] = self.events.get("pseudo_acc", 0) + effect.sops

    def add_transfer(self, transfer: "TransferCounts") -> None:
        """`add` of a dma.load / dma.store whose counts are `transfer_counts` of it."""
        self.instructions += 1
        self.dram_read += transfer.dram_read
        self.dram_written += transfer.dram_written
        self.sram_read += transfer.sram_read
        self.sram_written += transfer.sram_written
        if transfer.dram_spans is not None:
            self.dram_spans.append(transfer.dram_spans)
        self.dram_operands[transfer.operand] += transfer.nbytes
        self.sram_operands[transfer.operand] += transfer.nbytes
        self.fill_lines += transfer.fill_lines

    def add_functional(self, effect, sram_read: int | None = None, sram_written: int | None = None) -> None:
        """`add` for a functional-only run: just the fields its report shows (instructions,
        DRAM/SRAM bytes, the spike-pack counters); timing, operands and events are not reported.
        `sram_read` / `sram_written`: effect.sram_read / sram_written, if the caller has them."""
        self.instructions += 1
        self.dram_read += effect.dram_read
        self.dram_written += effect.dram_written
        self.sram_read += effect.sram_read if sram_read is None else sram_read
        self.sram_written += effect.sram_written if sram_written is None else sram_written
        self.bitmask_bytes += effect.bitmask_bytes
        self.packed_spikes += effect.packed_spikes
        self.packed_meta_bits += effect.packed_meta_bits

    def compulsory_dram_bytes(self) -> int:
        """Size of the union of every DRAM byte range this layer's DMAs touched."""
        start, end = self.dram_runs()
        return int((end - start).sum())

    def dram_runs(self) -> tuple[np.ndarray, np.ndarray]:
        """That union as sorted disjoint runs [start, end) (`merged_runs`), worked out once."""
        found = self._runs
        if found is None or found[0] != len(self.dram_spans):
            found = self._runs = (len(self.dram_spans), merged_runs(self.dram_spans))
        return found[1]


@dataclass(frozen=True)
class TransferCounts:
    """What `LayerCounters.add` counts of a dma.load / dma.store (`transfer_counts`): all of it
    depends on the instruction's fields alone, so a caller keeps it per instruction."""

    dram_read: int
    dram_written: int
    sram_read: int
    sram_written: int
    dram_spans: tuple | None
    operand: str
    nbytes: int
    fill_lines: int


def transfer_counts(effect, opcode: Opcode, const_size: int, hw: HwConfig | None, sram_read: int,
                    sram_written: int) -> TransferCounts:
    """The TransferCounts of a dma.load / dma.store's effect, as `LayerCounters.add` counts it
    (`sram_read` / `sram_written`: the bytes it moves through its SRAM ranges)."""
    if effect.stalls or effect.sops or effect.macs or effect.pe_work or effect.bitmask_bytes \
            or effect.packed_spikes or effect.packed_meta_bits:
        raise ValueError(f"{opcode.name}: a transfer counts DRAM and SRAM bytes only")
    load = opcode == Opcode.DMA_LOAD
    if not load and opcode != Opcode.DMA_STORE:
        raise ValueError(f"{opcode.name} is not a dma.load or dma.store")
    nbytes = effect.dram_read if load else effect.dram_written
    starts = effect.dram_spans[0] if effect.dram_spans is not None else np.zeros(0)
    operand = ("weights" if starts.size and int(starts[0]) < const_size else "spikes") if load else "outputs"
    line = hw.sram.line_bytes if hw is not None else 64
    return TransferCounts(effect.dram_read, effect.dram_written, sram_read, sram_written, effect.dram_spans,
                          operand, nbytes, -(-nbytes // line) if load else 0)


@dataclass(frozen=True)
class StaticCounts:
    """What `LayerCounters.add` counts of a compute or neuron instruction from its SRAM ranges
    alone: per operand the bytes of its ranges, the lines they read, the dense input/weight
    reads a SYN model's streams replace (`timing.bank_ranges`), a LIF's lanes (None: not a LIF)."""

    operand_bytes: tuple[tuple[str, int], ...]
    read_lines: int
    replaced_reads: int
    plif_lanes: int | None


def static_counts(effect, opcode: Opcode, hw: HwConfig | None) -> StaticCounts:
    """The StaticCounts of a compute or neuron instruction (its ranges, opcode, and whether a
    SYN model's streams replace its dense tiles: effect.syn)."""
    line = hw.sram.line_bytes if hw is not None else 64
    operand_bytes = []
    read_lines = 0
    names = READ_OPERANDS.get(opcode, ())
    skip = 2 if effect.syn is not None else 0  # compressed streams replace the dense tiles (timing.bank_ranges)
    for i, (lo, hi) in enumerate(effect.reads):
        if i < skip:
            continue
        name = names[min(i, len(names) - 1)] if names else "spikes"
        if opcode == Opcode.SYN and i == 2 and effect.writes and (lo, hi) == effect.writes[0]:
            name = "psums"  # ACCUMULATE reads the accumulator it writes
        operand_bytes.append((name, hi - lo))
        read_lines += -(-(hi - lo) // line)
    names = WRITE_OPERANDS.get(opcode, ())
    for i, (lo, hi) in enumerate(effect.writes):
        operand_bytes.append((names[min(i, len(names) - 1)] if names else "outputs", hi - lo))
    plif_lanes = None
    if opcode == Opcode.LIF and effect.reads:
        lo, hi = effect.reads[0]
        plif_lanes = (hi - lo) // 4
    return StaticCounts(tuple(operand_bytes), read_lines, sum(hi - lo for lo, hi in effect.reads[:skip]),
                        plif_lanes)


def merged_runs(spans: list[tuple[np.ndarray, int | np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The union of byte ranges given as (starts, lengths) groups (a length per start, or one
    for the group) as sorted disjoint runs (run starts, run ends)."""
    none = np.zeros(0, dtype=np.int64)
    starts = np.concatenate([s for s, _ in spans] or [none])
    if not starts.size:
        return none, none
    if all(isinstance(n, (int, np.integer)) for _, n in spans):  # a length per group (the DMAs' rows)
        ends = starts + np.repeat(np.array([n for _, n in spans], dtype=np.int64), [s.size for s, _ in spans])
    else:
        ends = np.concatenate([np.asarray(s + n).reshape(-1) for s, n in spans])
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    # a new disjoint run begins where a start lies beyond everything before it; a run ends at
    # the reach of its last range (reach only grows)
    new_run = np.empty(starts.size, dtype=bool)
    new_run[0] = True
    np.greater(starts[1:], reach[:-1], out=new_run[1:])
    first = np.flatnonzero(new_run)
    return starts[first], reach[np.append(first[1:] - 1, starts.size - 1)]


def distinct_bytes(spans: list[tuple[np.ndarray, int | np.ndarray]]) -> int:
    """Size of the union of byte ranges given as (row starts, row length) groups."""
    start, end = merged_runs(spans)
    return int((end - start).sum())


def _energy(hw: HwConfig, c: LayerCounters, cycles: int) -> dict[str, float]:
    return energy_model.layer_energy(hw, c, cycles)


def total_energy_pj(hw: HwConfig, counters: list[LayerCounters]) -> float:
    """The energy of everything `counters` hold so far (each with its attributed cycles):
    what the report's total energy_pj would be if the run ended now."""
    return sum(sum(_energy(hw, c, c.cycles).values()) for c in counters)


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
            # spike-pack (LoAS §IV-A): spikes per pointer/bitmask bit of the packed input (Fig. 8: 5/4 = 125%)
            "compression_efficiency": c.packed_spikes / c.packed_meta_bits if c.packed_meta_bits else None,
            "bitmask_bytes": c.bitmask_bytes,
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
                compute_busy_cycles=c.compute_busy, neuron_busy_cycles=c.neuron_busy,
                stall_cycles=dict(c.stalls),
                pe_utilization=(c.pe_work / (hw.compute.num_pes * c.cycles)) if c.cycles else 0.0,
                sram_operand_bytes=dict(c.sram_operands),
                dram_operand_bytes=dict(c.dram_operands),
                sram_hits=max(0, c.read_lines - c.fill_lines), sram_misses=c.fill_lines,
                events=dict(c.events),
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
            "bound_cycles": None if functional else _bound(hw, sum(c.pe_work for c in counters), distinct_bytes(
                [(start, end - start) for start, end in (c.dram_runs() for c in counters)])),
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
    atomic_write_text(path, report_to_json(report))


# --------------------------------------------------------------------------------------
# SCALE-Sim-style CSV reports (one row per layer, then a "total" row)
# --------------------------------------------------------------------------------------

COMPUTE_COLUMNS = (["layer", "cycles", "compute_busy_cycles", "bound_cycles", "matched_ops", "pe_work",
                    "pe_utilization"] + [f"stall_{c}" for c in STALL_CAUSES])
MEMORY_COLUMNS = (["layer"] + [f"sram_{o}_bytes" for o in OPERANDS] + [f"dram_{o}_bytes" for o in OPERANDS]
                  + ["sram_bytes", "dram_bytes", "dram_compulsory_bytes", "sram_hits", "sram_misses"])
ENERGY_COLUMNS = ["layer"] + [f"{c}_pj" for c in energy_model.COMPONENTS] + ["total_pj"]


def csv_rows(report: dict) -> dict[str, list[list]]:
    """{file name: rows (header first)} of the three reports; needs a timed report."""
    if report.get("functional"):
        raise ValueError("a functional-only report has no timing: run without --functional")
    compute, mem, energy = [COMPUTE_COLUMNS], [MEMORY_COLUMNS], [ENERGY_COLUMNS]
    for layer in report["layers"]:
        stalls = layer.get("stall_cycles", {})
        compute.append([layer["name"], layer["cycles"], layer.get("compute_busy_cycles", 0), layer["bound_cycles"],
                        layer["matched_ops"], layer["pe_work"], round(layer.get("pe_utilization", 0.0), 6)]
                       + [stalls.get(c, 0) for c in STALL_CAUSES])
        sram_ops, dram_ops = layer.get("sram_operand_bytes", {}), layer.get("dram_operand_bytes", {})
        mem.append([layer["name"]] + [sram_ops.get(o, 0) for o in OPERANDS] + [dram_ops.get(o, 0) for o in OPERANDS]
                   + [layer["sram_bytes"], layer["dram_bytes"], layer["dram_compulsory_bytes"],
                      layer.get("sram_hits", 0), layer.get("sram_misses", 0)])
        parts = layer["energy_breakdown_pj"]
        energy.append([layer["name"]] + [round(parts.get(c, 0.0), 3) for c in energy_model.COMPONENTS]
                      + [round(layer["energy_pj"], 3)])
    for rows in (compute, mem, energy):
        width = len(rows[0])
        total = ["total"] + [None] * (width - 1)
        for j in range(1, width):
            values = [r[j] for r in rows[1:]]
            if rows is compute and rows[0][j] == "pe_utilization":
                continue
            total[j] = round(sum(values), 3) if any(isinstance(v, float) for v in values) else sum(values)
        if rows is compute:
            t = report["total"]
            total[1], total[3] = t["cycles"], t["bound_cycles"]  # makespan and the program-wide bound
            pes = report["hw"]["compute"]["num_pes"]
            work = total[rows[0].index("pe_work")]
            total[rows[0].index("pe_utilization")] = round(work / (pes * t["cycles"]), 6) if t["cycles"] else 0.0
        rows.append(total)
    return {"COMPUTE_REPORT.csv": compute, "MEMORY_REPORT.csv": mem, "ENERGY_REPORT.csv": energy}


def write_csv_reports(report: dict, directory: str | Path) -> list[Path]:
    import csv
    import io

    directory = ensure_directory(directory)
    written = []
    for name, rows in csv_rows(report).items():
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        path = directory / name
        atomic_write_text(path, buf.getvalue())
        written.append(path)
    return written


def plot_report(report: dict, path: str | Path) -> None:
    """Per-layer cycles (busy vs stalls) and energy stacked by component (matplotlib, optional)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'snnc[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["layers"]
    names = [layer["name"] for layer in layers]
    x = np.arange(len(layers))
    fig, (ax_c, ax_e) = plt.subplots(2, 1, figsize=(max(6, 0.6 * len(layers) + 2), 8), sharex=True)
    bottom = np.zeros(len(layers))
    busy = np.array([min(layer["cycles"], layer.get("compute_busy_cycles", 0)) for layer in layers], dtype=float)
    ax_c.bar(x, busy, label="compute busy")
    bottom += busy
    rest = np.array([layer["cycles"] for layer in layers], dtype=float) - busy
    ax_c.bar(x, rest, bottom=bottom, label="other (DMA-bound / waiting)")
    ax_c.plot(x, [layer["bound_cycles"] for layer in layers], "k_", markersize=14, label="bound")
    ax_c.set_ylabel("cycles")
    ax_c.legend(fontsize=8)
    bottom = np.zeros(len(layers))
    for comp in energy_model.COMPONENTS:
        vals = np.array([layer["energy_breakdown_pj"].get(comp, 0.0) for layer in layers]) / 1e3
        if vals.any():
            ax_e.bar(x, vals, bottom=bottom, label=comp)
            bottom += vals
    ax_e.set_ylabel("energy (nJ)")
    ax_e.legend(fontsize=8)
    ax_e.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    fig.suptitle(f"{report.get('model', '')}: {report['total']['cycles']:,} cycles")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# Tables for the terminal (`snnc run`, `snnc report`, `snnc demo`)
# --------------------------------------------------------------------------------------

STALL_LABELS = {"fifo_full": "FIFO full", "laggy_wait": "laggy wait", "pe_imbalance": "PE imbalance",
                "bank_conflict": "bank conflict", "sram_bandwidth": "SRAM bandwidth", "dependency": "dependency",
                "psum_spill": "psum spill"}
ENERGY_UNITS = (("pJ", 1.0), ("nJ", 1e3), ("µJ", 1e6), ("mJ", 1e9), ("J", 1e12))


def energy_unit(largest_pj: float) -> tuple[str, float]:
    """The unit (and pJ per unit) in which `largest_pj` reads 1 to 999."""
    chosen = ENERGY_UNITS[0]
    for unit in ENERGY_UNITS:
        if abs(largest_pj) >= unit[1]:
            chosen = unit
    return chosen


def format_energy(pj: float, unit: tuple[str, float]) -> str:
    """An energy in `unit` with three decimals (exact zeros as 0)."""
    return "0" if pj == 0 else f"{pj / unit[1]:,.3f}"


def report_tables(report: dict, title: str, details: bool = True) -> list:
    """rich Tables of a timed report: per layer (cycles, bytes, ops, energy), and with
    `details` the compute, stall and energy breakdowns (all-zero columns left out)."""
    from rich.table import Table

    layers, total = report["layers"], report["total"]
    unit = energy_unit(total["energy_pj"])

    def table(title: str, columns: list[str]) -> Table:
        t = Table(title=title)
        for j, column in enumerate(columns):
            t.add_column(column, justify="left" if j == 0 else "right", no_wrap=j > 0)
        return t

    main = table(title, ["layer", "cycles", "bound", "DRAM KB", "SRAM KB", "matched ops", "silent %",
                         f"energy {unit[0]}"])
    for layer in layers:
        silent = layer.get("silent_ratio")
        main.add_row(
            layer["name"], f"{layer['cycles']:,}", f"{layer.get('bound_cycles', 0):,}",
            f"{layer['dram_bytes'] / 1024:,.1f}", f"{layer['sram_bytes'] / 1024:,.1f}",
            f"{layer['matched_ops']:,}", "-" if silent is None else f"{100 * silent:.1f}",
            format_energy(layer["energy_pj"], unit))
    main.add_section()
    main.add_row("total", f"{total['cycles']:,}", f"{total.get('bound_cycles', 0):,}",
                 f"{total['dram_bytes'] / 1024:,.1f}", f"{total['sram_bytes'] / 1024:,.1f}",
                 f"{total['matched_ops']:,}", "", format_energy(total["energy_pj"], unit))
    if not details:
        return [main]
    compute_rows = csv_rows(report)["COMPUTE_REPORT.csv"][1:]
    compute = table("compute", ["layer", "cycles", "busy", "bound", "matched ops", "PE work", "PE use %"])
    stall_columns = [c for c in STALL_CAUSES if any(layer.get("stall_cycles", {}).get(c) for layer in layers)]
    stalls = table("stall cycles", ["layer", *(STALL_LABELS.get(c, c) for c in stall_columns)])
    head = COMPUTE_COLUMNS
    for row in compute_rows:
        if row[0] == "total":
            compute.add_section()
            stalls.add_section()
        value = dict(zip(head, row))
        compute.add_row(row[0], *(f"{value[k]:,}" for k in ("cycles", "compute_busy_cycles", "bound_cycles",
                                                           "matched_ops", "pe_work")),
                        f"{100 * value['pe_utilization']:.1f}")
        stalls.add_row(row[0], *(f"{value[f'stall_{c}']:,}" for c in stall_columns))
    parts = [c for c in energy_model.COMPONENTS if any(layer["energy_breakdown_pj"].get(c) for layer in layers)]
    energy = table(f"energy ({unit[0]})", ["layer", *(c.replace("_", " ") for c in parts), "total"])
    for layer in layers:
        energy.add_row(layer["name"], *(format_energy(layer["energy_breakdown_pj"].get(c, 0.0), unit) for c in parts),
                       format_energy(layer["energy_pj"], unit))
    energy.add_section()
    energy.add_row("total", *(format_energy(sum(layer["energy_breakdown_pj"].get(c, 0.0) for layer in layers), unit)
                              for c in parts), format_energy(total["energy_pj"], unit))
    return [main, compute] + ([stalls] if stall_columns else []) + [energy]
