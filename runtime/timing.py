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
              the models read a weight tile's fiber-Bs as `FiberBs` (compressed rows,
              kept per decoded tile); `ftp_visit` deals a visit's streams and
              `time_ftp_visits` times the streams of many visits in one batch
              (`ftp_syn` = both for one visit: the same SynTiming either way)
              multi-bit (ACT) inputs: `syn_cycles(hw, macs per neuron)`
      LIF     lif_overhead + ceil(neurons / num_pes)   (a P-LIF fires all lanes in one op)
      PACK    vector_overhead + ceil(neurons / num_pes) (compressor, inverted laggy
              prefix-sum: one neuron's T-bit word per PE per cycle)
      POOL/ADD vector_overhead + ceil(elements / num_pes) * window
    and every compute and neuron instruction takes at least its global-cache bank time
    (runtime/memory.py `bank_cycles`).
"""

from __future__ import annotations

import bisect
import functools
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


def syn_cycles_and_imbalance(hw: HwConfig, work_per_neuron: np.ndarray) -> tuple[int, int, int]:
    """(syn_cycles, imbalance, total work) of one multi-bit visit, its rounds worked out once."""
    work = np.asarray(work_per_neuron, dtype=np.int64).reshape(-1)
    pes = hw.compute.num_pes
    slowest = int(rounds_of(work, pes).sum())
    total = int(work.sum())
    return (hw.compute.syn_overhead_cycles + slowest,
            int(round(float(slowest - total / pes))) if work.size else 0, total)


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


WEIGHTED_BLOCK_ELEMENTS = 1 << 22  # [rows, K] entries weighted at a time by weighted_chunk_sums
# weighted_chunk_sums multiplies by a block-diagonal matrix on BLAS in products of under this
# many multiply-adds (OpenBLAS then runs one thread: m * n * k < 65536 * 4, as the simulator's
# BLAS_MAX_SINGLE_THREAD_MACS) when that leaves at least BLAS_MIN_ROWS rows per product (else
# the block-diagonal's zeros, C times the work, outweigh the calls saved: np.einsum)
BLAS_SINGLE_THREAD_MACS = 1 << 18
BLAS_MIN_ROWS = 32


def weighted_chunk_sums(bits: np.ndarray, weights: np.ndarray, width: int, bound: int | None = None) -> np.ndarray:
    """chunk_sums(bits * weights, width) for bool [M, K] and int64 weights [G, K] (G = 1: [K])
    -> [M * G, C], a block of rows at a time: the products of a large visit never exist whole.
    `bound`: an upper bound on |weights| if the caller knows one (fiber counts: N).

    In float32 or float64 while every sum is exact there (the bits are 0/1: a sum is an
    integer <= bound * chunk length), else the int64 products: small products on BLAS against
    a block-diagonal matrix (BLAS_SINGLE_THREAD_MACS), others one np.einsum per block over
    zero-padded chunks (`_padded_chunks`); never a multi-threaded BLAS call: between the
    simulator's other work it waits for its threads on a busy machine."""
    weights = weights.reshape(-1, bits.shape[1])
    m, k = bits.shape
    g = weights.shape[0]
    out = np.empty((m * g, max(1, math.ceil(k / width))), dtype=np.int64)
    if bound is None:
        bound = max(-int(weights.min()), int(weights.max())) if weights.size else 0
    dtype = _exact_float(bound * min(k, width))
    chunks = out.shape[1]
    rows = (BLAS_SINGLE_THREAD_MACS - 1) // max(1, k * g * chunks)  # rows per single-thread product
    if dtype is not None and rows >= min(m, BLAS_MIN_ROWS):
        # bits [M, K] x a block-diagonal [K, G * C] (weights[g, k] in column g * C + k // width):
        # one small BLAS product per block of rows, each below OpenBLAS's threading threshold,
        # in place of padding K to whole chunks (most of the einsum's time on small visits)
        right = np.zeros((k, g, chunks), dtype=dtype)
        ks = np.arange(k)
        right[ks, :, ks // width] = weights.T
        right = right.reshape(k, g * chunks)
        flat = out.reshape(m, g * chunks)  # row m: groups g, each its C chunk sums
        step = max(1, min(rows, WEIGHTED_BLOCK_ELEMENTS // max(1, k)))
        for lo in range(0, m, step):
            flat[lo:lo + step] = bits[lo:lo + step].astype(dtype) @ right
        return out
    if dtype is not None:
        right = _padded_chunks(weights, width, dtype)
        step = max(1, WEIGHTED_BLOCK_ELEMENTS // max(1, right.shape[1] * right.shape[2]))
        for lo in range(0, m, step):
            left = _padded_chunks(bits[lo:lo + step], width, dtype)
            out[lo * g:(lo + left.shape[0]) * g] = np.einsum("mcl,gcl->mgc", left, right).reshape(-1, out.shape[1])
        return out
    step = max(1, WEIGHTED_BLOCK_ELEMENTS // max(1, g * k))
    for lo in range(0, m, step):
        block = bits[lo:lo + step]
        out[lo * g:(lo + block.shape[0]) * g] = chunk_sums((block[:, None, :] * weights[None]).reshape(-1, k), width)
    return out


def _exact_float(bound: int):
    """The float type whose sums of integers up to `bound` in magnitude are exact (None: none)."""
    return np.float32 if bound < 2**24 else np.float64 if bound < 2**53 else None


def _padded_chunks(values: np.ndarray, width: int, dtype) -> np.ndarray:
    """[M, K] -> [M, C, lane] in `dtype`: K cut into chunks of `width` (one chunk of K when
    K <= width), the last one zero-padded, so that chunk_sums is a sum over the last axis."""
    rows, k = values.shape
    lane = min(k, width) or 1
    chunks = max(1, math.ceil(k / width))
    padded = np.zeros((rows, chunks * lane), dtype=dtype)
    padded[:, :k] = values
    return padded.reshape(rows, chunks, lane)


def chunk_sums(values: np.ndarray, width: int) -> np.ndarray:
    """[M, K] -> [M, ceil(K/width)]: sums over consecutive chunks of `width` positions of K."""
    k = values.shape[1]
    if k <= width:  # one chunk: no padding up to a buffer that may be far wider than K
        return values.sum(axis=1, keepdims=True)
    # segment sums in place of padding K up to whole chunks (no copy of `values`)
    return np.add.reduceat(values, np.arange(0, k, width), axis=1)


class FiberBs:
    """The non-zero pattern of a visit's weight tile (its fiber-B bitmasks) as the timing
    models read it: in compressed-row form (the non-zeros' columns, row by row), with the
    dense bool [N, K] matrix, the per-column and per-row counts derived on first use. The
    simulator keeps one per decoded weight tile, so what only depends on the weights is
    worked out once for all visits of the tile."""

    def __init__(self, shape: tuple[int, int], columns: np.ndarray, row_starts: np.ndarray,
                 nonzero: np.ndarray | None = None):
        self.shape = shape
        self.columns = columns  # int64 [nnz]: k of each non-zero, row-major
        self.row_starts = row_starts  # int64 [N + 1]: row n's non-zeros are columns[row_starts[n]:row_starts[n+1]]
        if nonzero is not None:
            self.__dict__["nonzero"] = nonzero

    @classmethod
    def of(cls, nzw: "np.ndarray | FiberBs") -> "FiberBs":
        """`nzw` as FiberBs (a bool [N, K] matrix is converted)."""
        if isinstance(nzw, FiberBs):
            return nzw
        nzw = np.asarray(nzw, dtype=bool)
        flat = np.flatnonzero(nzw)
        n, k = nzw.shape
        return cls((n, k), flat % k if k else flat, np.searchsorted(flat, np.arange(n + 1) * k), nzw)

    @functools.cached_property
    def nonzero(self) -> np.ndarray:
        """bool [N, K] (read-only: shared by every visit of the tile)."""
        n, k = self.shape
        dense = np.zeros(n * k, dtype=bool)
        dense[np.repeat(np.arange(n) * k, np.diff(self.row_starts)) + self.columns] = True
        dense = dense.reshape(self.shape)
        dense.flags.writeable = False
        return dense

    @functools.cached_property
    def col(self) -> np.ndarray:
        """int64 [K]: the fiber-Bs with a non-zero at each k."""
        return np.bincount(self.columns, minlength=self.shape[1]).astype(np.int64)

    @functools.cached_property
    def row_nnz(self) -> np.ndarray:
        """int64 [N]: non-zeros of each fiber-B."""
        return np.diff(self.row_starts)

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """int64 [nnz]: the fiber-B of each non-zero."""
        return np.repeat(np.arange(self.shape[0]), self.row_nnz)

    def block_column_sums(self, starts: np.ndarray) -> np.ndarray:
        """int64 [len(starts), K]: column sums of the rows starts[i] .. starts[i+1]-1 (the last
        block to N), counted over the non-zeros only."""
        block = np.searchsorted(starts, self.rows, side="right") - 1
        k = self.shape[1]
        return np.bincount(block * k + self.columns, minlength=len(starts) * k).reshape(len(starts), k)


# the balanced scheduler cuts runs of output neurons in visits of up to this many positions
# per TPPE; larger visits fill rounds (runs of many positions would be long serial streams
# for the model to step through, for little gain: a big visit's sorted rounds are even)
BALANCED_CUT_POSITIONS = 2
# a balanced cut's piece counts come from (position, non-zero weight) pairs when there are at
# most this many times as many of them as entries of its [blocks + pieces, K] column sums
# (the other way, same counts)
PIECES_BY_NONZEROS = 1.0


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
    fb = FiberBs.of(nzw)
    n_out = fb.shape[0]
    groups = split_factor(m_pos, n_out, pes)
    bounds = np.linspace(0, n_out, groups + 1).round().astype(np.int64)
    col_g = fb.block_column_sums(bounds[:-1]) if groups > 1 else col[None, :]
    counts = weighted_chunk_sums(bm_a, col_g, width, bound=n_out)  # [(m, group), C]
    rounds = -(-(m_pos * groups) // pes)
    return FtpStreams(counts, a_fetches=m_pos, b_fibers=rounds * n_out, b_nonzeros=rounds * int(col.sum()))


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique of a small int array, without its per-call overhead."""
    values = np.sort(values)
    keep = np.empty(values.size, dtype=bool)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _piece_counts(bm_a: np.ndarray, fb: FiberBs, col: np.ndarray, width: int, m: np.ndarray,
                  n0: np.ndarray) -> np.ndarray:
    """[P, C] matched pairs per chunk of the balanced cut's pieces (position m[p], fiber-Bs
    n0[p] up to the next piece's start, or to N when the next piece starts a new position).

    With prefix[u][k] = the fiber-Bs before u with a non-zero at k (prefix[N] = col) and
    F(m, u) = chunk_sums(bm-A[m] * prefix[u]), a piece [n0, n1) of position m has
    F(m, n1) - F(m, n0): F(m, 0) = 0, F(m, N) = the whole column sums, and the only other
    u are the cuts inside positions (at most num_pes - 1), each the start of one piece and
    the end of the piece before it. So the work is one [M, K] pass, one pass over the
    non-zeros and one [inside pieces, K] pass, whatever the number of pieces.
    """
    k = bm_a.shape[1]
    # the sums of products per chunk by np.einsum over zero-padded [rows, C, lane] operands, in
    # float32 while they are exact there (every sum is an integer <= lane * N): about half the
    # time of int64 products and a segment sum on the zoo models' visits
    dtype = _exact_float(fb.shape[0] * min(k, width)) or np.float64  # N * chunk length < 2**53 in any real tile
    bits = _padded_chunks(bm_a, width, dtype)
    counts = np.einsum("mcl,cl->mc", bits, _padded_chunks(col[None], width, dtype)[0])[m].astype(np.int64)
    # ... F(m, N): the end of every piece, as if it ran to N
    inside = np.flatnonzero(n0 > 0)  # pieces starting at a cut inside their position
    if inside.size:
        cut = n0[inside]
        us = np.array(sorted(set(cut.tolist())), dtype=np.int64)  # at most num_pes - 1 distinct cuts
        # prefix[u] for the distinct cuts: the non-zeros of the rows up to each cut, added up
        # block by block (the non-zeros are in row-major order)
        prefix = np.zeros((us.size, bits.shape[1] * bits.shape[2]), dtype=dtype)
        running, start = np.zeros(k, dtype=np.int64), 0
        for j, end in enumerate(fb.row_starts[us].tolist()):
            running += np.bincount(fb.columns[start:end], minlength=k)
            prefix[j, :k], start = running, end
        which = np.searchsorted(us, cut)
        # F(m, u) of each inside cut
        at_cut = np.einsum("icl,icl->ic", bits[m[inside]], prefix.reshape(us.size, *bits.shape[1:])[which])
        at_cut = at_cut.astype(np.int64)
        counts[inside - 1] = at_cut  # ... but the piece before an inside cut ends there
        counts[inside] -= at_cut
    return counts


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
    fb = FiberBs.of(nzw)
    n_out = fb.shape[0]
    # popcounts summed over the bool's bytes in the narrowest type that holds k (a bool -> int64
    # sum is a casting loop several times slower)
    popcount = bm_a.view(np.uint8).sum(axis=1, dtype=np.uint16 if k < 2**16 else np.int64)
    if m_pos > BALANCED_CUT_POSITIONS * pes:
        order = np.argsort(k - popcount, kind="stable")  # decreasing popcount (no negation of unsigned)
        rounds = -(-m_pos // pes)
        return FtpStreams(weighted_chunk_sums(bm_a, col, width, bound=n_out)[order],
                          a_fetches=m_pos, b_fibers=rounds * n_out, b_nonzeros=rounds * int(col.sum()))
    bounds = balanced_runs(popcount, fb.row_nnz, pes)
    runs = bounds.size - 1
    edges = _sorted_unique(np.concatenate([bounds, np.arange(0, m_pos * n_out + 1, n_out)]))  # runs cut at position ends
    lo, hi = edges[:-1], edges[1:]
    run = np.searchsorted(bounds, lo, side="right") - 1
    m = lo // n_out
    n0, n1 = lo - m * n_out, hi - m * n_out
    cuts = _sorted_unique(np.concatenate([n0, n1, [0, n_out]]))
    i0, i1 = np.searchsorted(cuts, n0), np.searchsorted(cuts, n1)
    piece_counts = _piece_counts(bm_a, fb, col, width, m, n0)
    rank = np.arange(lo.size) - np.searchsorted(run, run, side="left")  # piece index within its run
    depth = int(rank.max()) + 1 if rank.size else 1
    counts = np.zeros((runs, depth, piece_counts.shape[1]), dtype=np.int64)
    counts[run, rank] = piece_counts
    # passes per channel block: how many pieces of one run cover it, at most over the runs
    size = runs * cuts.size  # cover[run, cut]: +1 where a piece of the run starts, -1 where it ends
    cover = (np.bincount(run * cuts.size + i0, minlength=size)
             - np.bincount(run * cuts.size + i1, minlength=size)).reshape(runs, cuts.size)
    passes = np.cumsum(cover, axis=1)[:, :-1].max(axis=0)
    return FtpStreams(counts.reshape(runs, -1), a_fetches=int(lo.size),
                      b_fibers=int(passes @ np.diff(cuts)), b_nonzeros=int(passes @ np.diff(fb.row_starts[cuts])))


FTP_SCHEDULERS = {"balanced": balanced_streams, "rounds": rounds_streams}  # tppe.scheduler


@dataclass
class FtpVisit:
    """An FTP SYN visit whose streams are dealt but not yet timed: `time_ftp_visits` times
    many at once (one `tppe.batched_streams` call), `ftp_syn` one."""

    dealt: FtpStreams
    nt: int
    k: int
    matched: int  # matched pairs of all streams (the TPPE work)
    correction_lanes: int
    corrected: int
    sops: int  # synaptic operations: spikes x the non-zero weights they meet, summed over lanes


def fired_lanes(lanes: np.ndarray) -> np.ndarray:
    """uint8 [M, K]: in how many of its nt (<= 255) lanes each input fires."""
    lanes = lanes.view(np.uint8)
    fired = lanes[0].copy()
    for lane in lanes[1:]:
        fired += lane
    return fired


def ftp_visit(hw: HwConfig, lanes: np.ndarray, nzw: np.ndarray | FiberBs, fired: np.ndarray | None = None) -> FtpVisit:
    """The scheduling half of `ftp_syn`: what the visit's streams are and what they read.
    `fired`: fired_lanes(lanes), if the caller has it."""
    return ftp_visit_fired(hw, fired_lanes(lanes) if fired is None else fired, lanes.shape[0], nzw)


def ftp_visit_fired(hw: HwConfig, fired: np.ndarray, nt: int, nzw: np.ndarray | FiberBs) -> FtpVisit:
    """`ftp_visit` from fired_lanes [M, K] of the visit's nt lanes (all that FTP timing reads of them)."""
    m_pos, k = fired.shape
    bm_a = fired != 0
    fb = FiberBs.of(nzw)
    col = fb.col  # fiber-Bs with a non-zero at k
    dealt = FTP_SCHEDULERS[hw.tppe.scheduler](bm_a, fb, col, hw.compute.num_pes, hw.tppe.bitmask_buffer_bits)
    matched = int(dealt.counts.sum())  # a scheduler's streams cover every (position, fiber-B) pair once
    if m_pos:
        # summed over positions first (fired > 0 exactly where bm-A is set): per k,
        # sum_m (nt - fired) * bm-A = nt * popcount - spikes, and the entries not all fired
        # (set in bm-A, but fired < nt); no [M, K] int64 array, whatever the visit's size
        # column sums in the narrowest type that holds m_pos * nt (a uint8 -> int64 sum is a
        # casting loop three times slower); uint64 would make the products with col float64
        acc = np.uint16 if m_pos * nt < 2**16 else np.uint32 if m_pos * nt < 2**32 else np.int64
        spikes = int(fired.sum(axis=0, dtype=acc) @ col)
        popcount = matched  # sum_k (popcount of bm-A column k) x col[k]: every matched pair once
        correction_lanes = nt * popcount - spikes
        # fired <= nt: an input that fires in every lane is set in bm-A
        corrected = popcount - (int((fired == nt).view(np.uint8).sum(axis=0, dtype=acc) @ col) if nt else 0)
    else:
        spikes = correction_lanes = corrected = 0
    return FtpVisit(dealt, nt, k, matched, correction_lanes, corrected, spikes)


def time_ftp_visits(hw: HwConfig, visits: list[FtpVisit]) -> list[SynTiming]:
    """The SynTiming of each visit (see `ftp_syn`), their streams timed in one batch: a
    visit's streams are dealt to num_pes TPPEs in rounds, and a round lasts its slowest."""
    if not visits:
        return []
    pes = hw.compute.num_pes
    width = hw.tppe.bitmask_buffer_bits
    slots = max(v.dealt.counts.shape[1] for v in visits)
    counts = [v.dealt.counts for v in visits]
    if len(counts) > 1:  # the visits' streams one after the other, task slots padded with empty tasks
        stacked = np.zeros((sum(c.shape[0] for c in counts), slots), dtype=np.int64)
        row = 0
        for c in counts:
            stacked[row:row + c.shape[0], :c.shape[1]] = c
            row += c.shape[0]
    st = tppe.batched_streams(stacked if len(counts) > 1 else counts[0], hw)
    sizes = np.array([c.shape[0] for c in counts], dtype=np.int64)
    first = np.cumsum(sizes) - sizes
    # rounds: pes consecutive streams of a visit (the last one short); a round's time is its slowest
    rounds = -(-sizes // pes)
    round_first = np.repeat(first, rounds) + (np.arange(int(rounds.sum())) - np.repeat(np.cumsum(rounds) - rounds, rounds)) * pes
    has = sizes > 0
    per_round = np.maximum.reduceat(st.cycles, round_first) if round_first.size else np.zeros(0, dtype=np.int64)
    round_sum = np.zeros(len(visits), dtype=np.int64)
    cycle_sum, stall_sum, wait_sum = (np.zeros(len(visits), dtype=np.int64) for _ in range(3))
    if has.any():
        round_owner = np.repeat(np.arange(len(visits)), rounds)
        round_sum = np.bincount(round_owner, weights=per_round, minlength=len(visits)).astype(np.int64)
        starts = first[has]
        cycle_sum[has] = np.add.reduceat(st.cycles, starts)
        stall_sum[has] = np.add.reduceat(st.fifo_stall, starts)
        wait_sum[has] = np.add.reduceat(st.laggy_wait, starts)
    out = []
    for v, slowest, busy, stall, wait in zip(visits, round_sum.tolist(), cycle_sum.tolist(), stall_sum.tolist(),
                                             wait_sum.tolist()):
        chunks = max(1, math.ceil(v.k / width))
        # modelled SRAM streams: bm-A chunks per stream piece, bm-B chunks and fiber-B non-zeros
        # per broadcast pass, matched fiber-A words fetched at their offsets
        word = max(1, math.ceil(v.nt / 8))
        out.append(SynTiming(
            cycles=hw.compute.syn_overhead_cycles + slowest, pe_work=v.matched,
            stalls={"fifo_full": int(round(stall / pes)), "laggy_wait": int(round(wait / pes)),
                    "pe_imbalance": int(round(float(slowest - busy / pes)))},
            events={"pseudo_acc": v.matched, "correction_acc": v.correction_lanes, "fifo_checks": v.matched,
                    "corrected_entries": v.corrected},
            sram_extra={"bitmasks": (v.dealt.a_fetches + v.dealt.b_fibers) * chunks * width // 8,
                        "weights": v.dealt.b_nonzeros * hw.compute.weight_bits // 8,
                        "spikes": v.matched * word},
        ))
    return out


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
    (runtime/tppe.batched_streams). `ftp_visit` + `time_ftp_visits` for one visit.
    """
    return time_ftp_visits(hw, [ftp_visit(hw, lanes, nzw)])[0]


def syn_timing(hw: HwConfig, dataflow: int, lanes: np.ndarray, nzw: np.ndarray | FiberBs,
               defer: bool = False, fired: np.ndarray | None = None) -> SynTiming | FtpVisit:
    """Dispatch on the layer descriptor's `dataflow` (isa.Dataflow). With `defer`, an FTP
    visit comes back untimed (`FtpVisit`), for `time_ftp_visits` to time with others.
    `fired`: fired_lanes(lanes), if the caller has it."""
    df = Dataflow(dataflow)
    if df == Dataflow.FTP:
        visit = ftp_visit(hw, lanes, nzw, fired)
        return visit if defer else time_ftp_visits(hw, [visit])[0]
    return baselines.MODELS[df](hw, lanes, nzw.nonzero if isinstance(nzw, FiberBs) else nzw)


class PendingAccesses:
    """Earlier accesses still able to delay someone: (lo, hi) -> the latest finish of an access
    to that range (an access to the same range as a pending one keeps the later finish, the
    only one a hazard check can need, so reused buffers do not grow the table), and the same
    entries as (finish, lo, hi) sorted by finish, so that a hazard check visits only the
    entries that finish after its start, latest first."""

    __slots__ = ("by_finish", "finish")

    def __init__(self) -> None:
        self.finish: dict[tuple[int, int], int] = {}
        self.by_finish: list[tuple[int, int, int]] = []

    def __len__(self) -> int:
        return len(self.finish)

    def items(self):
        return self.finish.items()

    def clear(self) -> None:
        self.finish.clear()
        self.by_finish.clear()

    def record(self, ranges, finish: int) -> None:
        """Add accesses to `ranges` finishing at `finish` (empty ranges are no access)."""
        table, entries = self.finish, self.by_finish  # (locals: every instruction records a few)
        for key in ranges:
            lo, hi = key
            if hi <= lo:
                continue
            old = table.get(key)
            if old is None or old < finish:
                if old is not None:
                    del entries[bisect.bisect_left(entries, (old, lo, hi))]
                table[key] = finish
                bisect.insort(entries, (finish, lo, hi))

    def latest(self, start: int, ranges, more=()) -> int:
        """max(start, the latest finish among the pending accesses overlapping `ranges` or `more`)."""
        entries = self.by_finish
        for i in range(len(entries) - 1, -1, -1):
            fin, plo, phi = entries[i]
            if fin <= start:
                break
            for lo, hi in ranges:
                if plo < hi and lo < phi:
                    return fin  # the latest overlapping one: the entries go by decreasing finish
            for lo, hi in more:
                if plo < hi and lo < phi:
                    return fin
        return start

    def prune(self, horizon: int) -> None:
        """Drop the accesses finished by `horizon`."""
        cut = bisect.bisect_right(self.by_finish, (horizon, math.inf, math.inf))
        for _, lo, hi in self.by_finish[:cut]:
            del self.finish[(lo, hi)]
        del self.by_finish[:cut]


def _hazard_start(start: int, reads, writes, pending_reads: PendingAccesses, pending_writes: PendingAccesses) -> int:
    """The latest finish among the pending accesses that overlap (RAW, WAR, WAW), if later than `start`."""
    if reads or writes:
        start = pending_writes.latest(start, reads, writes)  # RAW, WAW
    if writes:
        start = pending_reads.latest(start, writes)  # WAR
    return start


@dataclass
class Scoreboard:
    """Start/finish times of instructions from engine occupancy and SRAM/DRAM hazards."""

    engine_free: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENGINES, 0))
    # earlier accesses still able to delay someone: SRAM ranges, and the DRAM ranges of DMAs
    # (only DMAs touch DRAM: pruned by the dma engine's time)
    pending_reads: PendingAccesses = field(default_factory=PendingAccesses)
    pending_writes: PendingAccesses = field(default_factory=PendingAccesses)
    dram_reads: PendingAccesses = field(default_factory=PendingAccesses)
    dram_writes: PendingAccesses = field(default_factory=PendingAccesses)
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
        if reads:
            self.pending_reads.record(reads, finish)
        if writes:
            self.pending_writes.record(writes, finish)
        if dram_reads:
            self.dram_reads.record(dram_reads, finish)
        if dram_writes:
            self.dram_writes.record(dram_writes, finish)
        if len(self.pending_reads.finish) + len(self.pending_writes.finish) > 64:
            # anything finished before every engine is free can no longer delay anyone
            horizon = min(self.engine_free.values())
            self.pending_reads.prune(horizon)
            self.pending_writes.prune(horizon)
        if len(self.dram_reads.finish) + len(self.dram_writes.finish) > 64:
            # only DMAs check DRAM ranges, and the next one starts no earlier than the dma engine is free
            horizon = self.engine_free["dma"]
            self.dram_reads.prune(horizon)
            self.dram_writes.prune(horizon)
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


def finish_compute(hw: HwConfig, effect, split: tuple[int, int] | None = None) -> None:
    """A compute instruction lasts at least its global-cache bank time (memory.bank_cycles).

    The SYN model's modelled SRAM streams (bitmasks, non-zero weights, matched spike
    words, partial sums) replace its dense input/weight ranges (`bank_ranges`) and
    count as traffic spread over the banks; bank-limited cycles beyond the unit's own time are
    `bank_conflict` stall cycles when they exceed the conflict-free time too.
    `split`: memory.bank_split of bank_ranges(effect), if the caller has it.
    """
    if effect.engine not in ("compute", "neuron"):
        return
    extra = sum(effect.syn.sram_extra.values()) if effect.syn is not None else 0
    if split is None:
        split = memory.bank_split(hw, bank_ranges(effect))
    banked, ideal = memory.bank_cycles_of(hw, split, extra)
    if effect.syn is not None:
        for cause, value in effect.syn.stalls.items():
            effect.stalls[cause] = effect.stalls.get(cause, 0) + value
    unit = effect.cycles
    if banked > unit:
        effect.stalls["bank_conflict"] = banked - max(unit, ideal)
        effect.stalls["sram_bandwidth"] = max(0, ideal - unit)
        effect.cycles = banked
