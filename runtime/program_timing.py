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
    output timesteps a dma.store writes -- worked out the first time the step is timed; and
    under "sram_hazards" the SRAM dependencies of every step (`sram_dependencies`).
  * `steps`: the program's instructions in order (each with .opcode, .reads, .writes: the SRAM
    ranges its effects carry). With them the SRAM hazards are not looked up in tables of
    pending accesses (timing.Scoreboard) but read from `sram_dependencies`, worked out once per
    program: the finish of at most one earlier instruction per `hazard_class`. DRAM hazards
    (whose ranges a compressed DMA's data decides) are found in a log of the run's DMAs in
    program order, searched back only while their finishes (which never decrease: class 2)
    are later than the start so far. Start, finish and stall of every instruction are the
    Scoreboard's (see `sram_dependencies`); without `steps` the Scoreboard times them.
Imports only numpy, the runtime's timing, memory, report and output_timing modules and snnc.backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Opcode
from snnc.runtime import memory, timing
from snnc.runtime.output_timing import OutputTimeline
from snnc.runtime.report import LayerCounters, StaticCounts, TransferCounts, static_counts, transfer_counts

DRAM_READERS = (Opcode.DMA_LOAD, Opcode.DMA_LOAD_BM, Opcode.EXIT_CHECK)  # ordered after stores to what they read
STORES = (Opcode.DMA_STORE, Opcode.DMA_STORE_BM)
TRANSFERS = (Opcode.DMA_LOAD, Opcode.DMA_STORE)  # their counts depend on their fields alone (report.transfer_counts)


@dataclass(frozen=True)
class _Plan:
    """What timing one instruction needs that is the same every time it runs (see CONTRACT)."""

    read_bytes: int  # sizes of its SRAM read ranges, summed (Effect._moved without sram_bytes)
    written_bytes: int
    bank_split: tuple[int, int] | None  # memory.bank_split of timing.bank_ranges (compute / neuron engines)
    counts: StaticCounts | None  # report.static_counts (compute / neuron engines)
    store_marks: list | None  # OutputTimeline.store_marks of a dma.store (its rows are its fields')
    store_slots: np.ndarray | None  # OutputTimeline.mark_slots of store_marks (None: no output written)
    transfer: TransferCounts | None  # report.transfer_counts of a dma.load / dma.store


def time_deferred(hw: HwConfig, effects: list) -> None:
    """Give the effects whose SYN timing was deferred (timing.FtpVisit) their SynTiming and cycles."""
    waiting = [e for e in effects if isinstance(e.syn, timing.FtpVisit)]
    for effect, syn in zip(waiting, timing.time_ftp_visits(hw, [e.syn for e in waiting])):
        effect.syn = syn
        effect.cycles = syn.cycles


COMPUTE_OPCODES = (Opcode.SYN, Opcode.POOL, Opcode.ADD)
NEURON_OPCODES = (Opcode.LIF, Opcode.PACK)
LATENT_DMA_OPCODES = (Opcode.DMA_LOAD, Opcode.DMA_STORE, Opcode.DMA_LOAD_BM, Opcode.DMA_STORE_BM, Opcode.EXIT_CHECK)


def hazard_class(opcode: Opcode) -> int | None:
    """The instructions whose finish times never decrease in program order (see
    `sram_dependencies`): 0 compute engine, 1 neuron engine, 2 DMA engine with DRAM latency,
    3 DMA engine without (MOVE); None: no engine (BARRIER, NOP, HALT)."""
    if opcode in COMPUTE_OPCODES:
        return 0
    if opcode in NEURON_OPCODES:
        return 1
    if opcode in LATENT_DMA_OPCODES:
        return 2
    if opcode == Opcode.MOVE:
        return 3
    return None


CLASSES = 4


MAX_DEPENDENCY_KEYS = 4096  # distinct SRAM ranges beyond which sram_dependencies gives up (None)


def sram_dependencies(steps) -> list[tuple[int, ...]] | None:
    """Per step, the earlier steps whose finish can delay its start through an SRAM hazard:
    of every `hazard_class`, the last earlier step that wrote a range overlapping one it reads
    or writes (RAW, WAW) or read a range overlapping one it writes (WAR); ranges overlap as in
    timing.PendingAccesses (an empty range is never recorded, but is checked).

    timing.Scoreboard starts an instruction at the latest finish among all earlier overlapping
    accesses (its pruning and BARRIER's clearing drop only finishes no later than every
    engine's free time). Within a class the finishes never decrease: an instruction starts no
    earlier than its engine is free, i.e. than the previous one's finish less its DRAM latency
    (the same for every DMA of class 2, whose cycles include it; 0 elsewhere), so the last
    overlapping one per class has the latest finish."""
    ids: dict[tuple[int, int], int] = {}
    for step in steps:
        for key in step.reads:
            ids.setdefault(key, len(ids))
        for key in step.writes:
            ids.setdefault(key, len(ids))
    if len(ids) > MAX_DEPENDENCY_KEYS:  # the overlaps below are len(ids) ** 2 comparisons
        return None
    bounds = np.array(list(ids) or [(0, 0)], dtype=np.int64).reshape(-1, 2)
    lo, hi = bounds[:, 0], bounds[:, 1]
    # the keys an access to key r delays: q with r.lo < q.hi and q.lo < r.hi (r not empty)
    delays = [np.flatnonzero((r_lo < hi) & (lo < r_hi)).tolist() if r_hi > r_lo else []
              for r_lo, r_hi in ids]
    n = len(ids)
    last_write = [[-1] * n for _ in range(CLASSES)]  # per class and key: the last step that wrote an overlapping range
    last_read = [[-1] * n for _ in range(CLASSES)]
    shapes: dict[tuple, tuple | None] = {}  # per (opcode, reads, writes): what its steps query and record
    out: list[tuple[int, ...]] = []
    for index, step in enumerate(steps):
        shape = (step.opcode, tuple(step.reads), tuple(step.writes))
        plan = shapes.get(shape, False)
        if plan is False:
            plan = shapes[shape] = _dependency_plan(step, ids, delays)
        if plan is None:
            out.append(())
            continue
        cls, queries, written, read_targets, write_targets = plan
        latest = []
        for c in range(CLASSES):
            best = -1
            table = last_write[c]
            for key in queries:
                if table[key] > best:
                    best = table[key]
            table = last_read[c]
            for key in written:
                if table[key] > best:
                    best = table[key]
            if best >= 0:
                latest.append(best)
        out.append(tuple(latest))
        table = last_read[cls]
        for key in read_targets:
            table[key] = index
        table = last_write[cls]
        for key in write_targets:
            table[key] = index
    return out


def _dependency_plan(step, ids: dict, delays: list) -> tuple | None:
    """(hazard class, keys checked against earlier writes, ... against earlier reads, keys whose
    last read / last write it becomes) of a step (`sram_dependencies`); None without an engine."""
    cls = hazard_class(step.opcode)
    if cls is None:
        return None
    reads = [ids[key] for key in step.reads]
    writes = [ids[key] for key in step.writes]
    return (cls, tuple(sorted(set(reads + writes))), tuple(sorted(set(writes))),
            tuple(sorted({q for key in reads for q in delays[key]})),
            tuple(sorted({q for key in writes for q in delays[key]})))


def _overlap(ranges, recorded) -> bool:
    """Whether a range of `ranges` overlaps a non-empty one of `recorded` (timing.PendingAccesses)."""
    for lo, hi in ranges:
        for rlo, rhi in recorded:
            if rlo < hi and lo < rhi and rlo < rhi:
                return True
    return False


class ProgramTimer:
    def __init__(self, hw: HwConfig, counters: list[LayerCounters], unattributed: LayerCounters,
                 timeline: OutputTimeline, const_size: int, plans: dict, steps=None):
        self.hw = hw
        self.counters = counters
        self.unattributed = unattributed
        self.timeline = timeline
        self.const_size = const_size
        self.plans = plans
        self.board = timing.Scoreboard()
        self.dependencies = None
        if steps is not None:
            if "sram_hazards" not in plans:
                plans["sram_hazards"] = sram_dependencies(steps)
            self.dependencies = plans["sram_hazards"]
            if self.dependencies is not None:
                self.finish = [0] * len(steps)  # per step: its finish in this run
                self.dram_log: list[tuple[int, list, bool]] = []  # (finish, DRAM ranges, read them) per DMA
                if "latencies" not in plans:  # the DRAM latency sram_dependencies counts on (hazard classes)
                    plans["latencies"] = [hw.dram.latency_cycles if hazard_class(step.opcode) == 2 else 0
                                          for step in steps]
                self.expected_latency = plans["latencies"]

    def _plan(self, index: int, opcode: Opcode, effect) -> _Plan:
        key = (index, effect.syn is None)
        plan = self.plans.get(key)
        if plan is None:
            on_units = effect.engine in ("compute", "neuron")
            read_bytes, written_bytes = sum(hi - lo for lo, hi in effect.reads), sum(hi - lo for lo, hi in effect.writes)
            marks = self.timeline.store_marks(True, effect) if opcode == Opcode.DMA_STORE else None
            transfer = None
            if opcode in TRANSFERS:
                moved = effect.sram_bytes
                transfer = transfer_counts(effect, opcode, self.const_size, self.hw,
                                           (read_bytes if moved is None else moved) if effect.reads else 0,
                                           (written_bytes if moved is None else moved) if effect.writes else 0)
            plan = self.plans[key] = _Plan(
                read_bytes, written_bytes,
                memory.bank_split(self.hw, timing.bank_ranges(effect)) if on_units else None,
                static_counts(effect, opcode, self.hw) if on_units else None,
                marks, self.timeline.mark_slots(marks) if marks else None, transfer)
        return plan

    def time(self, pending: list[tuple[int, int, Opcode, object]]) -> None:
        """Time `pending` in program order (see CONTRACT)."""
        if self.dependencies is None:
            self._time_on_board(pending)
            return
        hw, board, finish_of, dependencies = self.hw, self.board, self.finish, self.dependencies
        engine_free = board.engine_free
        expected_latency = self.expected_latency
        plans, counters, unattributed, const_size = self.plans, self.counters, self.unattributed, self.const_size
        dram_log = self.dram_log
        slots, slot_finishes = [], []  # the dma.stores' marks, applied together (OutputTimeline.stored_slots)
        time_deferred(hw, [effect for _, _, _, effect in pending])
        for index, owner, opcode, effect in pending:
            counter = counters[owner] if owner >= 0 else unattributed
            plan = plans.get((index, effect.syn is None)) or self._plan(index, opcode, effect)
            engine = effect.engine
            if engine is None:  # BARRIER: everything earlier has finished (Scoreboard.issue)
                board.issue(None, 0, (), ())
                dram_log.clear()
            elif engine != "none":
                if plan.bank_split is not None:
                    timing.finish_compute(hw, effect, plan.bank_split)  # global-cache bank time
                cycles, latency = effect.cycles, effect.latency
                if latency != expected_latency[index] or cycles < latency:
                    raise AssertionError(f"instruction {index}: DRAM latency {latency} of {cycles} cycles "
                                         "breaks sram_dependencies' ordering")
                free = engine_free[engine]
                start = free
                for earlier in dependencies[index]:
                    if finish_of[earlier] > start:
                        start = finish_of[earlier]
                ranges = effect.dram_ranges
                if ranges:
                    # DRAM hazards: the latest finish among the earlier DMAs (hazard class 2, finishes
                    # in program order) that wrote bytes it touches or read bytes it writes (timing.
                    # Scoreboard's DRAM tables; empty ranges are never recorded)
                    reader = opcode in DRAM_READERS
                    for earlier_finish, earlier, earlier_reader in reversed(dram_log):
                        if earlier_finish <= start:
                            break
                        if reader and earlier_reader:
                            continue
                        if _overlap(ranges, earlier):
                            start = earlier_finish
                            break
                    dram_entry = (ranges, reader)
                finish = finish_of[index] = start + cycles
                engine_free[engine] = finish - latency
                before = board.makespan
                if finish > before:
                    board.makespan = finish
                    counter.cycles += finish - before
                if ranges:
                    dram_log.append((finish, *dram_entry))
                if engine == "compute":
                    effect.stalls["dependency"] = start - free
                if plan.store_slots is not None:
                    slots.append(plan.store_slots)
                    slot_finishes.append(finish)
                elif opcode == Opcode.DMA_STORE_BM:
                    self.timeline.stored(False, effect, finish)
            if plan.transfer is not None:
                counter.add_transfer(plan.transfer)
                continue
            moved = effect.sram_bytes  # Effect._moved: a strided DMA's hull ranges move sram_bytes
            counter.add(effect, opcode, const_size, hw, plan.counts,
                        (plan.read_bytes if moved is None else moved) if effect.reads else 0,
                        (plan.written_bytes if moved is None else moved) if effect.writes else 0)
        self.timeline.stored_slots(slots, slot_finishes)

    def _time_on_board(self, pending: list[tuple[int, int, Opcode, object]]) -> None:
        """`time` with every hazard looked up in the Scoreboard's tables (no `steps`)."""
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
