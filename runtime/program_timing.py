"""Timing of a cycle-level simulation's executed instructions, in program order.

CONTRACT:
  * `ProgramTimer(hw, counters, unattributed, timeline, const_size, plans)`; `time(pending)`
    takes the instructions executed since the last call, [(step index, owner layer, opcode,
    Effect)] in program order, and: times the TPPE streams of their FTP SYN visits in one batch
    (timing.time_ftp_visits), adds each one's global-cache bank time (timing.finish_compute),
    issues it on the Scoreboard (`board`), charges the makespan it adds to its owner's
    LayerCounters (or `unattributed` for owner -1), marks the output timesteps a store makes
    ready (OutputTimeline) and counts it (LayerCounters.add).
  * `plans` is a dict kept with the program (the simulator's _Prepared): per (step index,
    whether a SYN model ran) what the above needs of an instruction that does not change from
    one run of it to the next -- the bank split of its SRAM ranges, its static counts, the
    output timesteps a dma.store writes -- worked out the first time the step is timed.
Imports only the runtime's timing, memory, report and output_timing modules and snnc.backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Opcode
from snnc.runtime import memory, timing
from snnc.runtime.output_timing import OutputTimeline
from snnc.runtime.report import LayerCounters, StaticCounts, static_counts

DRAM_READERS = (Opcode.DMA_LOAD, Opcode.DMA_LOAD_BM, Opcode.EXIT_CHECK)  # ordered after stores to what they read
STORES = (Opcode.DMA_STORE, Opcode.DMA_STORE_BM)


@dataclass(frozen=True)
class _Plan:
    """What timing one instruction needs that is the same every time it runs (see CONTRACT)."""

    read_bytes: int  # sizes of its SRAM read ranges, summed (Effect._moved without sram_bytes)
    written_bytes: int
    bank_split: tuple[int, int] | None  # memory.bank_split of timing.bank_ranges (compute / neuron engines)
    counts: StaticCounts | None  # report.static_counts (compute / neuron engines)
    store_marks: list | None  # OutputTimeline.store_marks of a dma.store (its rows are its fields')


def time_deferred(hw: HwConfig, effects: list) -> None:
    """Give the effects whose SYN timing was deferred (timing.FtpVisit) their SynTiming and cycles."""
    waiting = [e for e in effects if isinstance(e.syn, timing.FtpVisit)]
    for effect, syn in zip(waiting, timing.time_ftp_visits(hw, [e.syn for e in waiting])):
        effect.syn = syn
        effect.cycles = syn.cycles


class ProgramTimer:
    def __init__(self, hw: HwConfig, counters: list[LayerCounters], unattributed: LayerCounters,
                 timeline: OutputTimeline, const_size: int, plans: dict):
        self.hw = hw
        self.counters = counters
        self.unattributed = unattributed
        self.timeline = timeline
        self.const_size = const_size
        self.plans = plans
        self.board = timing.Scoreboard()

    def _plan(self, index: int, opcode: Opcode, effect) -> _Plan:
        key = (index, effect.syn is None)
        plan = self.plans.get(key)
        if plan is None:
            on_units = effect.engine in ("compute", "neuron")
            plan = self.plans[key] = _Plan(
                sum(hi - lo for lo, hi in effect.reads), sum(hi - lo for lo, hi in effect.writes),
                memory.bank_split(self.hw, timing.bank_ranges(effect)) if on_units else None,
                static_counts(effect, opcode, self.hw) if on_units else None,
                self.timeline.store_marks(True, effect) if opcode == Opcode.DMA_STORE else None)
        return plan

    def time(self, pending: list[tuple[int, int, Opcode, object]]) -> None:
        """Time `pending` in program order (see CONTRACT)."""
        hw, board = self.hw, self.board
        time_deferred(hw, [effect for _, _, _, effect in pending])
        for index, owner, opcode, effect in pending:
            counter = self.counters[owner] if owner >= 0 else self.unattributed
            plan = self._plan(index, opcode, effect)
            if effect.engine != "none":
                timing.finish_compute(hw, effect, plan.bank_split)  # global-cache bank time
                before = board.makespan
                dram_read = opcode in DRAM_READERS
                _, finish = board.issue(effect.engine, effect.cycles, effect.reads, effect.writes,
                                        occupancy=effect.cycles - effect.latency,
                                        dram_reads=effect.dram_ranges if dram_read else (),
                                        dram_writes=() if dram_read else effect.dram_ranges)
                if effect.engine == "compute":
                    effect.stalls["dependency"] = board.last_wait
                counter.cycles += board.makespan - before
                if opcode in STORES:
                    self.timeline.stored(opcode == Opcode.DMA_STORE, effect, finish, plan.store_marks)
            moved = effect.sram_bytes  # Effect._moved: a strided DMA's hull ranges move sram_bytes
            counter.add(effect, opcode, self.const_size, hw, plan.counts,
                        (plan.read_bytes if moved is None else moved) if effect.reads else 0,
                        (plan.written_bytes if moved is None else moved) if effect.writes else 0)
