"""When each timestep of each graph output is final in DRAM, and what each exit.check saw.

CONTRACT
  `OutputTimeline(image)`; `stored(exact_rows, effect, finish)` for every DMA store the timed
  simulation issues (its DRAM rows and the cycle it finishes); `section(functional)` ->
      {"timesteps": [{"t", "ready_cycle", "outputs": {output name: cycle}} for t in 0..T-1],
       "first_output_cycle": int}
  outputs[name] of timestep t: the finish cycle of the last store (the latest finish) that
  writes a DRAM byte holding timestep t of that graph output (binformat.io_timestep_mask:
  the t-th [B][H][W][Cs] block of a per-step format; every byte of a SPIKE_WORDS tensor);
  0 when no store writes one (the value is in DRAM from the start). After that cycle no
  instruction changes those bytes, so the values are final. ready_cycle = the latest of the
  outputs' cycles: every graph output's timestep-t values are final. first_output_cycle =
  ready_cycle of t = 0: the first timestep of every output is out. All None in a
  functional run (no timing).
  `ExitLog(threshold, register)`: `record(check, instruction, cycles, energy_pj)` per executed exit.check
  (cycles, energy: the run so far, the check included);
  `halted` tells whether the program halts at it (the first check whose every batch item
  satisfies the rule of runtime/exit_rule.py, when a threshold register is set);
  `section(full_cycles, full_energy_pj)` -> {"exit_checks": [...], "exit": {...} or None}.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snnc.backend.binformat import IODesc, ProgramImage, io_dram_bytes, io_step_bytes, io_timestep_mask
from snnc.runtime.exit_rule import threshold_of_register


class OutputTimeline:
    def __init__(self, image: ProgramImage):
        self.outputs: list[IODesc] = [d for d in image.io if d.is_output]
        self.timesteps = max((d.timesteps for d in self.outputs), default=0)
        self.hulls = [(d.dram_addr, d.dram_addr + io_dram_bytes(d)) for d in self.outputs]
        self.step_bytes = [io_step_bytes(d) for d in self.outputs]
        self.ready = np.zeros((len(self.outputs), self.timesteps), dtype=np.int64)

    def stored(self, exact_rows: bool, effect, finish: int, marks: list | None = None) -> None:
        """A store finishing at `finish` wrote effect.dram_spans rows (`exact_rows`: dma.store)
        or effect.dram_ranges (dma.store_bm: its fiber slots). `marks`: store_marks(exact_rows,
        effect), if the caller has them."""
        for index, steps in self.store_marks(exact_rows, effect) if marks is None else marks:
            ready = self.ready[index, :self.outputs[index].timesteps]
            ready[steps] = np.maximum(ready[steps], finish)

    def mark_slots(self, marks: list[tuple[int, np.ndarray]]) -> np.ndarray:
        """The cells of `ready` (flattened) that `marks` (store_marks) set: `stored_slots`' input."""
        slots = [index * self.timesteps + np.flatnonzero(steps) for index, steps in marks]
        return np.concatenate(slots).astype(np.int64) if slots else np.zeros(0, dtype=np.int64)

    def stored_slots(self, slots: list[np.ndarray], finishes: list[int]) -> None:
        """`stored` of many stores at once: store i finishes at finishes[i] and sets the cells
        slots[i] (mark_slots of its marks)."""
        if not slots:
            return
        cells = np.concatenate(slots)
        finish = np.repeat(np.array(finishes, dtype=np.int64), [s.size for s in slots])
        np.maximum.at(self.ready.reshape(-1), cells, finish)

    def store_marks(self, exact_rows: bool, effect) -> list[tuple[int, np.ndarray]]:
        """(output index, bool [T] timesteps written) of each output a store writes to (see
        `stored`); a dma.store's depend on its fields alone."""
        if exact_rows:
            if effect.dram_spans is None:
                return []
            starts, row_bytes = effect.dram_spans
            if starts.size == 1:  # one range: no array arithmetic
                lo = int(starts[0])
                return self._range_marks(lo, lo + row_bytes)
            ends = starts + row_bytes
        else:
            if not effect.dram_ranges:
                return []
            starts, ends = np.array(effect.dram_ranges, dtype=np.int64).T
        lo, hi = int(starts.min()), int(ends.max())
        if starts.size == 1:
            return self._range_marks(lo, hi)
        return [(index, io_timestep_mask(desc, starts, ends))
                for index, (desc, (olo, ohi)) in enumerate(zip(self.outputs, self.hulls)) if lo < ohi and olo < hi]

    def _range_marks(self, lo: int, hi: int) -> list[tuple[int, np.ndarray]]:
        """store_marks of one DRAM range [lo, hi), in plain ints (what io_timestep_mask gives)."""
        marks = []
        for index, (desc, (olo, ohi)) in enumerate(zip(self.outputs, self.hulls)):
            if not (lo < ohi and olo < hi):
                continue
            steps = np.zeros(desc.timesteps, dtype=bool)
            first, last = max(lo, olo), min(hi, ohi) - 1  # bytes of the output it writes
            step = self.step_bytes[index]
            if first > last:  # an empty range writes nothing
                pass
            elif step is None:  # every word holds every timestep
                steps[:] = True
            else:
                steps[(first - olo) // step:(last - olo) // step + 1] = True
            marks.append((index, steps))
        return marks

    def section(self, functional: bool) -> dict:
        names = [d.name for d in self.outputs]
        timesteps = []
        for t in range(self.timesteps):
            cycles = {name: None if functional else int(self.ready[i, t])
                      for i, name in enumerate(names) if t < self.outputs[i].timesteps}
            ready = None if functional else max(cycles.values(), default=0)
            timesteps.append({"t": t, "ready_cycle": ready, "outputs": cycles})
        first = timesteps[0]["ready_cycle"] if timesteps else None
        return {"timesteps": timesteps, "first_output_cycle": first}


@dataclass
class CheckResult:
    """What one exit.check computed (simulator `_exit_check`)."""

    io: int
    timestep: int
    sums: np.ndarray  # S_q per batch item (exit_rule.confidence_sums)
    classes: np.ndarray  # argmax of the accumulated output per batch item (first maximum)
    exits: bool  # every batch item satisfies S_q <= R (False without a threshold register)


class ExitLog:
    def __init__(self, threshold: float | None, register: int | None):
        self.threshold = threshold  # the confidence the host asked for; the machine applies 2^32 / register
        self.register = register
        self.checks: list[dict] = []
        self.exit: dict | None = None
        self.halted = False  # True from the check the program halts at on

    def record(self, check: CheckResult, instruction: int, cycles: int | None, energy_pj: float | None) -> bool:
        """Log one executed check; True when the program halts at it (the first exiting check)."""
        self.checks.append({
            "instruction": instruction, "io": check.io, "t": check.timestep, "cycles": cycles,
            "energy_pj": energy_pj, "confidence_sums": [int(s) for s in check.sums],
            "classes": [int(c) for c in check.classes],
        })
        if self.halted or not check.exits:
            return False
        self.halted = True
        self.exit = {"timestep": check.timestep, "instruction": instruction, "cycles": cycles,
                     "energy_pj": energy_pj, "classes": [int(c) for c in check.classes]}
        return True

    def section(self, full_cycles: int | None, full_energy_pj: float | None, ran_to_end: bool) -> dict:
        exit_info = None
        if self.register is not None:
            exit_info = {"threshold": self.threshold, "applied_threshold": threshold_of_register(self.register),
                         "threshold_register": self.register}
            if self.exit is None:
                exit_info.update(timestep=None)  # never confident: the program ran to its end
            else:
                exit_info.update(self.exit)
            if ran_to_end:
                exit_info.update(full_cycles=full_cycles, full_energy_pj=full_energy_pj)
                if self.exit is not None and full_cycles:
                    exit_info["latency_reduction"] = 1 - self.exit["cycles"] / full_cycles
                    exit_info["energy_reduction"] = 1 - self.exit["energy_pj"] / full_energy_pj
        return {"exit_checks": self.checks, "exit": exit_info}
