"""First timing model: one cycle function per hardware unit + an SRAM scoreboard.

CONTRACT (docs/isa.md "Timing model"):
  * Two engines run concurrently: DMA (DMA_LOAD/DMA_STORE) and compute
    (SYN, LIF, PACK, POOL, ADD). Instructions issue in program order per engine.
  * An instruction starts when its engine is free and every earlier instruction
    that wrote an SRAM range it reads, or read/wrote a range it writes, has
    finished (RAW, WAR, WAW on byte ranges). BARRIER starts when everything
    earlier has finished; both engines then resume from there. NOP/HALT take 0.
  * Cycle counts per unit:
      dma_cycles   = dram.latency_cycles + ceil(bytes / (GB/s / clock))
      syn_cycles   = syn_overhead + sum over rounds of num_pes output neurons of the
                     slowest neuron's work (neurons in (row, x, channel) order);
                     work = matched positions (spike inputs) or MACs (multi-bit)
      lif_cycles   = lif_overhead + ceil(neurons / num_pes)   (P-LIF fires all lanes)
      vector_cycles= vector_overhead + ceil(elements / num_pes) * window
This is a first model; a faithful LoAS model replaces these functions one by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from snnc.backend.hwconfig import HwConfig


def dma_cycles(hw: HwConfig, nbytes: int) -> int:
    return hw.dram.latency_cycles + math.ceil(nbytes / hw.dram_bytes_per_cycle)


def syn_cycles(hw: HwConfig, work_per_neuron: np.ndarray) -> int:
    """work_per_neuron: int array, one entry per output neuron in issue order."""
    work = np.asarray(work_per_neuron, dtype=np.int64).reshape(-1)
    pes = hw.compute.num_pes
    pad = (-work.size) % pes
    if pad:
        work = np.concatenate([work, np.zeros(pad, dtype=np.int64)])
    rounds = work.reshape(-1, pes).max(axis=1) if work.size else work
    return hw.compute.syn_overhead_cycles + int(rounds.sum())


def lif_cycles(hw: HwConfig, neurons: int) -> int:
    return hw.compute.lif_overhead_cycles + math.ceil(neurons / hw.compute.num_pes)


def vector_cycles(hw: HwConfig, elements: int, window: int = 1) -> int:
    return hw.compute.vector_overhead_cycles + math.ceil(elements / hw.compute.num_pes) * window


@dataclass
class Scoreboard:
    """Start/finish times of instructions from engine occupancy and SRAM hazards."""

    engine_free: dict[str, int] = field(default_factory=lambda: {"dma": 0, "compute": 0})
    # (lo, hi, finish) of earlier instructions still able to delay someone
    pending_reads: list[tuple[int, int, int]] = field(default_factory=list)
    pending_writes: list[tuple[int, int, int]] = field(default_factory=list)
    makespan: int = 0

    def issue(self, engine: str | None, cycles: int, reads: list[tuple[int, int]],
              writes: list[tuple[int, int]]) -> tuple[int, int]:
        """Schedule one instruction; returns (start, finish). engine None = BARRIER."""
        if engine is None:
            start = self.makespan
            for name in self.engine_free:
                self.engine_free[name] = start
            self.pending_reads.clear()
            self.pending_writes.clear()
            return start, start
        start = self.engine_free[engine]
        for lo, hi in reads:
            for plo, phi, fin in self.pending_writes:
                if fin > start and plo < hi and lo < phi:
                    start = fin
        for lo, hi in writes:
            for plo, phi, fin in self.pending_writes + self.pending_reads:
                if fin > start and plo < hi and lo < phi:
                    start = fin
        finish = start + cycles
        self.engine_free[engine] = finish
        self.makespan = max(self.makespan, finish)
        self.pending_reads.extend((lo, hi, finish) for lo, hi in reads if hi > lo)
        self.pending_writes.extend((lo, hi, finish) for lo, hi in writes if hi > lo)
        # anything finished before every engine is free can no longer delay anyone
        horizon = min(self.engine_free.values())
        if len(self.pending_reads) + len(self.pending_writes) > 64:
            self.pending_reads = [p for p in self.pending_reads if p[2] > horizon]
            self.pending_writes = [p for p in self.pending_writes if p[2] > horizon]
        return start, finish
