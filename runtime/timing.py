"""Timing model: one function per hardware unit + an SRAM scoreboard.

CONTRACT (docs/isa.md "Timing model"):
  * Three engines (`ENGINES`) run concurrently, each issuing in program order:
    dma (DMA_LOAD/STORE and their bitmask forms, MOVE), compute (the TPPE array:
    SYN; POOL, ADD) and neuron (the P-LIF units and the compressor: LIF, PACK --
    LoAS §IV: a TPPE hands each finished output neuron to its P-LIF, so firing
    one tile overlaps the synapses of the next).
  * An instruction starts when its engine is free and every earlier instruction
    that wrote an SRAM range it reads, or read/wrote a range it writes, has
    finished (RAW, WAR, WAW on byte ranges). DMA transfers are ordered the same way
    on their DRAM ranges (`isa.strided_ranges`): a load of bytes an earlier store
    writes waits for that store, so no BARRIER is needed between a layer's stores
    and the next layer's loads. BARRIER starts when everything
    earlier has finished; all engines then resume from there. NOP/HALT take 0.
    The compute engine's wait for such hazards is recorded as `dependency` stall.
  * An engine is busy for an instruction's cycles, except that a DMA occupies
    the dma engine for its transfer time only: its DRAM latency overlaps the next
    transfer (requests in flight); its data is there latency + transfer after it starts.
  * Cycles per unit:
      DMA     runtime/memory.py: latency + busiest HBM channel's transfer time
      SYN     `syn_timing(hw, dataflow, lanes, nzw)`: per dataflow
                FTP     LoAS TPPEs (runtime/tppe.py); the scheduler (tppe.scheduler) deals
                        the visit's output neurons to streams: `balanced_streams` (one run
                        of equal estimated work per TPPE, or rounds of positions sorted by
                        bm-A popcount in large visits) or `rounds_streams` (a stream per
                        position, fiber-Bs split into groups when the positions do not
                        fill whole rounds: `split_factor`); num_pes streams per round,
                        a round lasts its slowest TPPE
                IP_SEQ/OP/GUST  runtime/baselines.py (SparTen-/GoSPA-/Gamma-SNN)
              multi-bit (ACT) inputs: `syn_cycles(hw, macs per neuron)`
      LIF     lif_overhead + ceil(neurons / num_pes)   (a P-LIF fires all lanes in one op)
      PACK    vector_overhead + ceil(neurons / num_pes) (compressor, inverted laggy
              prefix-sum: one neuron's T-bit word per PE per cycle)
      POOL/ADD vector_overhead + ceil(elements / num_pes) * window
    and every compute and neuron instruction takes at least its global-cache bank time
    (runtime/memory.py `bank_cycles`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Dataflow
from snnc.runtime.pe_array import balanced_runs, split_factor
from snnc.runtime import baselines, memory, tppe
from snnc.runtime.syn_model import SynTiming

ENGINES = ("dma", "compute", "neuron")  # issue queues that run concurrently (CONTRACT)
STALL_CAUSES = ("fifo_full", "laggy_wait", "pe_imbalance", "bank_conflict", "sram_bandwidth", "dependency",
                "psum_spill")


def dma_cycles(hw: HwConfig, nbytes: int, dram_addr: int = 0) -> int:
    """A contiguous DMA of `nbytes` from `dram_addr` (see memory.dma_cycles)."""
    return memory.dma_cycles(hw, [dram_addr], nbytes)


def syn_cycles(hw: HwConfig, work_per_neuron: np.ndarray) -> int:
    """Multi-bit inputs: work_per_neuron (MACs) in issue order, dealt to num_pes PEs in rounds."""
    work = np.asarray(work_per_neuron, dtype=np.int64).reshape(-1)
    return hw.compute.syn_overhead_cycles + int(rounds_of(work, hw.compute.num_pes).sum())


def rounds_of(work: np.ndarray, pes: int) -> np.ndarray:
    """Per round of `pes` consecutive items: the slowest item's work."""
    work = np.asarray(work, dtype=np.int64).reshape(-1)
    pad = (-work.size) % pes
    if pad:
        work = np.concatenate([work, np.zeros(pad, dtype=np.int64)])
    return work.reshape(-1, pes).max(axis=1) if work.size else work


def imbalance(work: np.ndarray, pes: int) -> int:
    """Sum over rounds of (slowest - mean) work: cycles lost to uneven PE loads."""
    work = np.asarray(work, dtype=np.int64).reshape(-1)
    if work.size == 0:
        return 0
    return int(round(float(rounds_of(work, pes).sum() - work.sum() / pes)))


def lif_cycles(hw: HwConfig, neurons: int) -> int:
    return hw.compute.lif_overhead_cycles + math.ceil(neurons / hw.compute.num_pes)


def vector_cycles(hw: HwConfig, elements: int, window: int = 1) -> int:
    return hw.compute.vector_overhead_cycles + math.ceil(elements / hw.compute.num_pes) * window


def chunk_sums(values: np.ndarray, width: int) -> np.ndarray:
    """[M, K] -> [M, ceil(K/width)]: sums over consecutive chunks of `width` positions of K."""
    m, k = values.shape
    chunks = max(1, math.ceil(k / width))
    pad = chunks * width - k
    if pad:
        values = np.concatenate([values, np.zeros((m, pad), dtype=values.dtype)], axis=1)
    return values.reshape(m, chunks, width).sum(axis=2)


def row_block_sums(nzw: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """bool [N, K] -> int64 [len(starts), K]: sums of the rows starts[i] .. starts[i+1]-1 (the last
    block to N). As np.add.reduceat(axis=0), ten times faster on wide bool rows (summed as bytes)."""
    ends = np.append(starts[1:], nzw.shape[0])
    view = nzw.view(np.uint8)
    return np.stack([view[a:b].sum(axis=0, dtype=np.int64) for a, b in zip(starts, ends)])


# the balanced scheduler cuts runs of output neurons in visits of up to this many positions
# per TPPE; larger visits fill rounds (runs of many positions would be long serial streams
# for the model to step through, for little gain: a big visit's sorted rounds are even)
BALANCED_CUT_POSITIONS = 2


@dataclass
class FtpStreams:
    """How a TPPE scheduler deals one visit: the task counts of its streams and what it reads."""

    counts: np.ndarray  # [S, C'] matched pairs per task slot (tppe.batched_streams)
    a_fetches: int  # times a position's bm-A chunks are fetched (once per stream piece of it)
    b_fibers: int  # fiber-B bitmasks sent (a fiber sent once per pass over it)
    b_nonzeros: int  # fiber-B non-zero weights sent


def rounds_streams(bm_a: np.ndarray, nzw: np.ndarray, col: np.ndarray, pes: int, width: int) -> FtpStreams:
    """`rounds` scheduler: a TPPE per output position m; when the positions do not fill
    whole rounds, the fiber-Bs are split into G = `split_factor(M, N, num_pes)` contiguous
    groups and each (m, group) is a stream (8 positions -> 2 groups, 12 -> 4). Streams are
    dealt to the TPPEs in rounds ((m, group) order); every round broadcasts all fiber-Bs once.
    col = nzw.sum(axis=0): the fiber-Bs with a non-zero at each k (the caller has it)."""
    m_pos, k = bm_a.shape
    n_out = nzw.shape[0]
    groups = split_factor(m_pos, n_out, pes)
    bounds = np.linspace(0, n_out, groups + 1).round().astype(np.int64)
    col_g = row_block_sums(nzw, bounds[:-1]) if groups > 1 else col[None, :]
    counts = chunk_sums((bm_a[:, None, :] * col_g[None, :, :]).reshape(m_pos * groups, k), width)
    rounds = -(-(m_pos * groups) // pes)
    return FtpStreams(counts, a_fetches=m_pos, b_fibers=rounds * n_out, b_nonzeros=rounds * int(col.sum()))


def balanced_streams(bm_a: np.ndarray, nzw: np.ndarray, col: np.ndarray, pes: int, width: int) -> FtpStreams:
    """`balanced` scheduler. Both of its rules use only what is known before the joins:
    popcount(bm-A[m]) from the bitmasks and nnz(bm-B[n]) from the fiber lengths.

    A visit of at most `BALANCED_CUT_POSITIONS` x num_pes positions: its output neurons
    (m, n), in (position, channel) order, are cut into one contiguous run per TPPE of about
    equal estimated work popcount(bm-A[m]) x nnz(bm-B[n]) (`pe_array.balanced_runs`). A run
    is a sequence of pieces (one position, a contiguous range of its fiber-Bs); each piece
    is that position's chunk tasks against the range, so each TPPE still computes whole
    output neurons. The fiber-Bs are broadcast in passes: fiber n is sent as often as the
    run that needs it most often needs it (a run inside one position: once; across two: twice).

    A larger visit: a stream per position, dealt in rounds of num_pes in decreasing order of
    popcount(bm-A[m]), so that each round holds positions of similar work (sorting the
    positions minimises the sum over rounds of the slowest estimate); every round
    broadcasts all fiber-Bs once, as `rounds_streams`."""
    m_pos, k = bm_a.shape
    n_out = nzw.shape[0]
    popcount = bm_a.sum(axis=1)
    if m_pos > BALANCED_CUT_POSITIONS * pes:
        order = np.argsort(-popcount, kind="stable")
        rounds = -(-m_pos // pes)
        return FtpStreams(chunk_sums(bm_a[order] * col[None, :], width),
                          a_fetches=m_pos, b_fibers=rounds * n_out, b_nonzeros=rounds * int(col.sum()))
    bounds = balanced_runs(popcount, nzw.sum(axis=1), pes)
    runs = bounds.size - 1
    edges = np.union1d(bounds, np.arange(0, m_pos * n_out + 1, n_out))  # runs cut at position ends
    lo, hi = edges[:-1], edges[1:]
    run = np.searchsorted(bounds, lo, side="right") - 1
    m = lo // n_out
    n0, n1 = lo - m * n_out, hi - m * n_out
    # fiber-B column sums over each piece's channel range, from blocks between the distinct cut channels
    cuts = np.union1d(np.concatenate([n0, n1]), [0, n_out])
    blocks = row_block_sums(nzw, cuts[:-1])  # [B, K]
    prefix = np.concatenate([np.zeros((1, k), dtype=np.int64), np.cumsum(blocks, axis=0)])
    i0, i1 = np.searchsorted(cuts, n0), np.searchsorted(cuts, n1)
    piece_counts = chunk_sums(bm_a[m] * (prefix[i1] - prefix[i0]), width)  # [P, C]
    rank = np.arange(lo.size) - np.searchsorted(run, run, side="left")  # piece index within its run
    depth = int(rank.max()) + 1 if rank.size else 1
    counts = np.zeros((runs, depth, piece_counts.shape[1]), dtype=np.int64)
    counts[run, rank] = piece_counts
    # passes per channel block: how many pieces of one run cover it, at most over the runs
    cover = np.zeros((runs, cuts.size), dtype=np.int64)
    np.add.at(cover, (run, i0), 1)
    np.add.at(cover, (run, i1), -1)
    passes = np.cumsum(cover, axis=1)[:, :-1].max(axis=0)
    return FtpStreams(counts.reshape(runs, -1), a_fetches=int(lo.size),
                      b_fibers=int(passes @ np.diff(cuts)), b_nonzeros=int(passes @ blocks.sum(axis=1)))


FTP_SCHEDULERS = {"balanced": balanced_streams, "rounds": rounds_streams}  # tppe.scheduler


def ftp_syn(hw: HwConfig, lanes: np.ndarray, nzw: np.ndarray) -> SynTiming:
    """LoAS FTP on TPPEs. lanes: bool [nt, M, K] input spikes per lane and window
    position; nzw: bool [N, K] non-zero weights of the visit's output channels.

    bm-A[m, k] = input fires in some lane (non-silent); a TPPE holds a fiber-A chunk
    (tppe.bitmask_buffer_bits of K) of one output position m and streams the fiber-B
    chunks of a range of output channels past it: task (m, c, range) has
    sum_{k in c} bm-A[m,k] * #{n in range: B[n, k] != 0} matched pairs.
    The scheduler (`tppe.scheduler`: `balanced_streams` or `rounds_streams`) deals the
    visit's output neurons to streams; the streams are dealt to num_pes TPPEs in rounds
    (a balanced cut: num_pes streams, one round), and a round lasts its slowest TPPE
    (runtime/tppe.batched_streams).
    """
    nt, m_pos, k = lanes.shape
    pes = hw.compute.num_pes
    width = hw.tppe.bitmask_buffer_bits
    bm_a = lanes.any(axis=0)
    fired = lanes.sum(axis=0, dtype=np.int64)
    col = nzw.sum(axis=0, dtype=np.int64)  # fiber-Bs with a non-zero at k
    dealt = FTP_SCHEDULERS[hw.tppe.scheduler](bm_a, nzw, col, pes, width)
    st = tppe.batched_streams(dealt.counts, hw)
    per_round = rounds_of(st.cycles, pes)
    matched = int(st.matched.sum())
    cycles = hw.compute.syn_overhead_cycles + int(per_round.sum())
    chunks = max(1, math.ceil(k / width))
    # modelled SRAM streams: bm-A chunks per stream piece, bm-B chunks and fiber-B non-zeros
    # per broadcast pass, matched fiber-A words fetched at their offsets
    word = max(1, math.ceil(nt / 8))
    correction_lanes = int((((nt - fired) * bm_a) @ col).sum()) if m_pos else 0
    corrected = int(((bm_a & (fired < nt)) @ col).sum()) if m_pos else 0
    return SynTiming(
        cycles=cycles, pe_work=matched,
        stalls={"fifo_full": int(round(st.fifo_stall.sum() / pes)),
                "laggy_wait": int(round(st.laggy_wait.sum() / pes)),
                "pe_imbalance": imbalance(st.cycles, pes)},
        events={"pseudo_acc": matched, "correction_acc": correction_lanes, "fifo_checks": matched,
                "corrected_entries": corrected},
        sram_extra={"bitmasks": (dealt.a_fetches + dealt.b_fibers) * chunks * width // 8,
                    "weights": dealt.b_nonzeros * hw.compute.weight_bits // 8,
                    "spikes": matched * word},
    )


def syn_timing(hw: HwConfig, dataflow: int, lanes: np.ndarray, nzw: np.ndarray) -> SynTiming:
    """Dispatch on the layer descriptor's `dataflow` (isa.Dataflow)."""
    df = Dataflow(dataflow)
    if df == Dataflow.FTP:
        return ftp_syn(hw, lanes, nzw)
    return baselines.MODELS[df](hw, lanes, nzw)


def _hazard_start(start: int, reads, writes, pending_reads: dict, pending_writes: dict) -> int:
    """The latest finish among the pending accesses that overlap (RAW, WAR, WAW), if later than `start`."""
    for lo, hi in reads:
        for (plo, phi), fin in pending_writes.items():
            if fin > start and plo < hi and lo < phi:
                start = fin
    for lo, hi in writes:
        for pending in (pending_writes, pending_reads):
            for (plo, phi), fin in pending.items():
                if fin > start and plo < hi and lo < phi:
                    start = fin
    return start


def _record(pending: dict, ranges, finish: int) -> None:
    """Add accesses; an access to the same range as a pending one keeps the later finish
    (the only one a hazard check can need), so reused buffers do not grow the table."""
    for key in ranges:
        if key[1] > key[0] and pending.get(key, -1) < finish:
            pending[key] = finish


def _prune(pending: dict, horizon: int) -> dict:
    return {key: fin for key, fin in pending.items() if fin > horizon}


@dataclass
class Scoreboard:
    """Start/finish times of instructions from engine occupancy and SRAM/DRAM hazards."""

    engine_free: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENGINES, 0))
    # (lo, hi) -> latest finish of earlier accesses still able to delay someone: SRAM ranges,
    # and the DRAM ranges of DMAs (only DMAs touch DRAM: pruned by the dma engine's time)
    pending_reads: dict = field(default_factory=dict)
    pending_writes: dict = field(default_factory=dict)
    dram_reads: dict = field(default_factory=dict)
    dram_writes: dict = field(default_factory=dict)
    makespan: int = 0
    last_wait: int = 0  # cycles the last instruction waited for hazards after its engine was free

    def issue(self, engine: str | None, cycles: int, reads: list[tuple[int, int]],
              writes: list[tuple[int, int]], occupancy: int | None = None,
              dram_reads=(), dram_writes=()) -> tuple[int, int]:
        """Schedule one instruction; returns (start, finish). engine None = BARRIER.

        `occupancy` (default `cycles`): how long the engine is busy; the rest of
        `cycles` is latency during which the engine already issues the next one.
        `dram_reads` / `dram_writes`: DRAM byte ranges of a DMA, ordered like SRAM ranges
        (a load of bytes an earlier store writes starts when that store has finished)."""
        if engine is None:  # everything earlier has finished: no hazard can delay anyone
            start = self.makespan
            for name in self.engine_free:
                self.engine_free[name] = start
            for pending in (self.pending_reads, self.pending_writes, self.dram_reads, self.dram_writes):
                pending.clear()
            self.last_wait = 0
            return start, start
        free = self.engine_free[engine]
        # the start is the latest finish among the overlapping hazards (and the engine's free time)
        start = _hazard_start(free, reads, writes, self.pending_reads, self.pending_writes)
        if dram_reads or dram_writes:
            start = _hazard_start(start, dram_reads, dram_writes, self.dram_reads, self.dram_writes)
        self.last_wait = start - free
        finish = start + cycles
        self.engine_free[engine] = start + (cycles if occupancy is None else min(occupancy, cycles))
        self.makespan = max(self.makespan, finish)
        _record(self.pending_reads, reads, finish)
        _record(self.pending_writes, writes, finish)
        _record(self.dram_reads, dram_reads, finish)
        _record(self.dram_writes, dram_writes, finish)
        if len(self.pending_reads) + len(self.pending_writes) > 64:
            # anything finished before every engine is free can no longer delay anyone
            horizon = min(self.engine_free.values())
            self.pending_reads = _prune(self.pending_reads, horizon)
            self.pending_writes = _prune(self.pending_writes, horizon)
        if len(self.dram_reads) + len(self.dram_writes) > 64:
            # only DMAs check DRAM ranges, and the next one starts no earlier than the dma engine is free
            horizon = self.engine_free["dma"]
            self.dram_reads = _prune(self.dram_reads, horizon)
            self.dram_writes = _prune(self.dram_writes, horizon)
        return start, finish


def bank_ranges(effect) -> list[tuple[int, int]]:
    """SRAM ranges a compute instruction really streams through the banks.

    A SYN with a dataflow model reads its input and weight tiles compressed: the
    model's streams (bitmasks, non-zero weights, matched spike words) replace the
    dense ranges reads[0] (input tile) and reads[1] (weights), which stay in
    `effect.reads` for the hazard scoreboard only.
    """
    reads = effect.reads[2:] if effect.syn is not None else effect.reads
    return reads + effect.writes


def finish_compute(hw: HwConfig, effect) -> None:
    """A compute instruction lasts at least its global-cache bank time (memory.bank_cycles).

    The SYN model's modelled SRAM streams (bitmasks, non-zero weights, matched spike
    words, partial sums) replace its dense input/weight ranges (`bank_ranges`) and
    count as traffic spread over the banks; bank-limited cycles beyond the unit's own time are
    `bank_conflict` stall cycles when they exceed the conflict-free time too.
    """
    if effect.engine not in ("compute", "neuron"):
        return
    extra = sum(effect.syn.sram_extra.values()) if effect.syn is not None else 0
    banked, ideal = memory.bank_cycles(hw, bank_ranges(effect), extra)
    if effect.syn is not None:
        for cause, value in effect.syn.stalls.items():
            effect.stalls[cause] = effect.stalls.get(cause, 0) + value
    unit = effect.cycles
    if banked > unit:
        effect.stalls["bank_conflict"] = banked - max(unit, ideal)
        effect.stalls["sram_bandwidth"] = max(0, ideal - unit)
        effect.cycles = banked
