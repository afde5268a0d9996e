"""Executes a ProgramImage instruction by instruction: functional results + timing.

CONTRACT:
  * `simulate(image, inputs, functional=False, progress=None, exit_confidence=None,
    run_to_end=True) -> SimResult`.
    inputs: {ONNX input name: array of shape onnx_shape}; every input must be
    present, no unknown names. Outputs: {ONNX output name: float32 onnx_shape}.
    exit_confidence p sets exit.check's threshold register (docs/isa.md "Early exit"): the
    program halts at the first check that decides to exit and the outputs are what it
    leaves in DRAM; with run_to_end the simulation continues past the halt so that the
    report's totals describe the full run next to report["exit"].
  * Each instruction really executes on the Machine state (DMA copies bytes, SYN
    convolves, LIF integrates, ...); semantics per opcode are in docs/isa.md and
    the handler docstrings below. Each handler is vectorised over the tile with
    numpy; LIF steps through its nt lanes (the recurrence is sequential in t),
    each lane vectorised over all neurons of the tile.
  * Unless `functional`, every instruction also yields an `Effect` (engine, SRAM
    ranges read/written, cycles, bytes, operations) that the timing Scoreboard
    and the per-layer counters consume (runtime/timing.py, runtime/report.py), in
    program order, in batches of TIMING_BATCH executed instructions: the TPPE
    streams of a batch's FTP SYN visits are timed in one call (timing.time_ftp_visits),
    which is exact -- a visit's SYN timing depends only on its own spikes and weights.
    The SRAM ranges are the instruction's operands as the ISA table defines them
    (isa.sram_operands), not computed by the handlers.
  * Malformed programs (SRAM access out of range, wrong layer kind for an
    opcode, input rows missing from a tile) raise BinaryFormatError naming the
    instruction index and field.
  * Work that repeats across visits is cached without changing any result: window
    geometry per row-tile shape, decoded SYN weight tiles and LIF parameter blocks while
    their SRAM bytes are unchanged (compared on every visit), the fiber walk of a
    dma.load_bm while its DRAM bytes are unchanged, and for the SYN that reads the same
    bytes. What depends on the image alone (decoded, validated instructions, their SRAM
    ranges) and these caches stay with the image for its next simulation (`_Prepared`,
    made again when a section of the image changes). SYN products
    are exact in every kernel choice (sparse CSR or dense, see _exact_dtype); dense BLAS
    runs on one thread while a simulation runs, but for large products (BLAS_MIN_MACS).
Imports only numpy, rich, the standard library, snnc.backend and (lazily, for the
first large sparse weight tile) scipy.sparse, (for the first dense product) threadpoolctl.
"""

from __future__ import annotations

import functools
import struct
import threading
import weakref
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np

from snnc.backend import isa
from snnc.backend.binformat import (
    ProgramImage, decode_instructions, decode_layers, io_dram_bytes, io_step_bytes, validate_image,
)
from snnc.backend.errors import BinaryFormatError, InputError
from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Dataflow, Format, LayerKind, LeakForm, LifFlags, Opcode, ResetMode, SynFlags
from snnc.runtime import memory, timing
from snnc.runtime.collect import fewer_collections
from snnc.runtime.machine import (
    FORMAT_BITS, Machine, read_tile, saturate, shift, word_dtype, write_tile,
)
from snnc.runtime.exit_rule import confidence_sums, exits, threshold_register
from snnc.runtime.output_timing import CheckResult, ExitLog, OutputTimeline
from snnc.runtime.program_timing import ProgramTimer
from snnc.runtime.report import LayerCounters, build_report, total_energy_pj
from snnc.runtime.tensors import decode_output, decode_step_ints, encode_input

SPIKE_FORMATS = (Format.SPIKE_PLANES, Format.SPIKE_WORDS, Format.SPIKE_BITMASK)
ACC_BITS = 32  # the accumulator tile is int32 (isa.py: acc_addr "int32")


@dataclass
class SimResult:
    outputs: dict[str, np.ndarray]
    report: dict


@dataclass(slots=True)
class Effect:
    """What one instruction did, for the timing model and the counters."""

    engine: str | None  # "dma", "compute", "neuron" (P-LIF + compressor), None = BARRIER, "none" = NOP/HALT
    cycles: int = 0
    reads: list[tuple[int, int]] = field(default_factory=list)  # SRAM [lo, hi)
    writes: list[tuple[int, int]] = field(default_factory=list)
    dram_read: int = 0
    dram_written: int = 0
    dram_spans: tuple[np.ndarray, int] | None = None  # (row starts, row bytes) for compulsory traffic
    dram_ranges: list[tuple[int, int]] = field(default_factory=list)  # DRAM [lo, hi) read (load) or written (store)
    sram_bytes: int | None = None  # bytes really moved when the ranges are hulls (strided DMA)
    sops: int = 0
    macs: int = 0
    pe_work: int = 0  # TPPE busy cycles summed over neurons (matched positions; MACs for multi-bit)
    bitmask_bytes: int = 0  # dma.*_bm: DRAM bytes of fiber pointers + bitmasks (part of dram_read/written)
    packed_spikes: int = 0  # dma.load_bm of spike words: spikes (1 bits) delivered
    packed_meta_bits: int = 0  # ... and the pointer + bitmask bits that located them (LoAS Fig. 8)
    syn: timing.SynTiming | None = None  # the SYN unit model's report (runtime/timing.py)
    latency: int = 0  # part of `cycles` that is DRAM latency: the DMA engine issues the next transfer meanwhile
    stalls: dict = field(default_factory=dict)  # cycles by cause (timing.STALL_CAUSES)
    check: CheckResult | None = None  # exit.check: what it decided (runtime/output_timing.py)

    @property
    def sram_read(self) -> int:
        return self._moved(self.reads)

    @property
    def sram_written(self) -> int:
        return self._moved(self.writes)

    def _moved(self, ranges: list[tuple[int, int]]) -> int:
        """SRAM bytes moved through `ranges`: sram_bytes when the ranges are hulls (strided
        DMA), else their sizes."""
        if not ranges:
            return 0
        if self.sram_bytes is not None:
            return self.sram_bytes
        total = 0
        for lo, hi in ranges:
            total += hi - lo
        return total


class _Context:
    def __init__(self, image: ProgramImage, prepared: _Prepared, functional: bool, exit_register: int | None = None):
        self.hw = hw = prepared.hw
        self.io = image.io
        self.exit_register = exit_register  # exit.check's threshold register (None: never halts)
        self.exit_sums: dict[int, np.ndarray] = {}  # the exit unit's running sums, per output descriptor
        self.machine = Machine(image, hw)
        self.layers = prepared.layers
        self.functional = functional
        self.saturations = np.zeros(len(self.layers), dtype=np.int64)
        # per layer: {batch: (rows seen [in_h], which input neurons fired: _track_firing)} for silent_ratio
        self.fired: list[dict[int, tuple[np.ndarray, np.ndarray]]] = [{} for _ in self.layers]  # _track_firing
        # Per-visit work that only depends on the instruction's geometry or on SRAM bytes that
        # the program reloads unchanged: computed once, reused by later visits and by later
        # simulations of the same program (see _windows, _weight_tile, _channel_block, _Prepared).
        self.windows = prepared.windows
        self.weight_tiles = prepared.weight_tiles
        self.channel_blocks = prepared.channel_blocks
        self.lif_params = prepared.lif_params
        self.syn_biases = prepared.syn_biases
        self.fiber_walks = prepared.fiber_walks
        self.dma_timing = prepared.dma_timing  # id(instruction fields) -> _dma_timing
        self.dma_plans = prepared.dma_plans  # id(instruction fields) -> _dma_plan
        self.cache_lock = prepared.lock
        self.blas_held = False  # this simulation holds BLAS to one thread (_BlasThreads)
        # SRAM address -> (bytes, fiber_elems, elem_bits, _Fibers relative to the address) of the
        # packed fibers a dma.load_bm copied there: a SYN reading the same bytes skips re-walking them
        self.sram_fibers: dict[int, tuple[bytes, int, int, _Fibers]] = {}

    def layer(self, f, where: str, *kinds: LayerKind):
        lay = self.layers[f.layer]
        if kinds and lay.kind not in kinds:
            raise BinaryFormatError(
                f"{where}.layer = {f.layer}: layer kind {LayerKind(lay.kind).name}, expected {'/'.join(k.name for k in kinds)}")
        return lay


def _decoded(lay, name: str, kind):
    """Layer field `name` as enum `kind`, converted once per layer: an enum call costs about a
    microsecond per instruction otherwise. An invalid value raises ValueError on every use, as
    the direct conversion does."""
    cache = lay.enums
    if name not in cache:
        cache[name] = kind(getattr(lay, name))
    return cache[name]


# flag bits as plain ints: `int & IntFlag` builds a new flag object on every test
ACCUMULATE, COMPRESSED_WEIGHTS = int(SynFlags.ACCUMULATE), int(SynFlags.COMPRESSED_WEIGHTS)
PACKED, KEEP_COMPRESSED, MASK_SINGLE, SPIKES = (int(flag) for flag in (
    isa.DmaFlags.PACKED, isa.DmaFlags.KEEP_COMPRESSED, isa.DmaFlags.MASK_SINGLE, isa.DmaFlags.SPIKES))
DELAYED_RESET, COMPARE_GT, NO_FIRE = (int(flag) for flag in (LifFlags.DELAYED_RESET, LifFlags.COMPARE_GT,
                                                             LifFlags.NO_FIRE))


# --------------------------------------------------------------------------------------
# DMA
# --------------------------------------------------------------------------------------

def _strided(mem, addr: int, rows: int, row_bytes: int, stride: int, where: str) -> np.ndarray:
    """A writable [rows, row_bytes] view of `mem` whose rows start `stride` bytes apart."""
    if rows == 0 or row_bytes == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    extent = (rows - 1) * stride + row_bytes
    base = mem.span(addr, extent, where)
    if stride == row_bytes or rows == 1:
        return base.reshape(rows, row_bytes)
    # np.ndarray over the span's buffer: the same view as stride_tricks.as_strided, without its
    # per-call Python overhead (DMAs are the most frequent instructions)
    return np.ndarray((rows, row_bytes), dtype=np.uint8, buffer=base, strides=(stride, 1))


def _dma(ctx: _Context, where: str, f, load: bool) -> Effect:
    """Copy `rows` rows of `row_bytes` between DRAM and SRAM with independent strides."""
    plan = ctx.dma_plans.get(id(f))
    if plan is None:
        plan = _dma_plan(ctx, where, f, load)
    dram_at, sram_at, functional_effect = plan
    m = ctx.machine
    dram, sram = _placed(m.dram.data, dram_at), _placed(m.sram.data, sram_at)
    if load:
        sram[...] = dram
    else:
        dram[...] = sram
    if ctx.functional:
        return functional_effect
    nbytes = f.rows * f.row_bytes
    # its cycles, DRAM spans and ranges depend on its fields alone: worked out once per instruction
    found = ctx.dma_timing.get(id(f))
    if found is None:
        found = ctx.dma_timing[id(f)] = _dma_timing(ctx.hw, f)
    cycles, spans, ranges = found
    return Effect(engine="dma", cycles=cycles, latency=ctx.hw.dram.latency_cycles,
                  dram_read=nbytes if load else 0, dram_written=0 if load else nbytes,
                  dram_spans=spans, sram_bytes=nbytes, dram_ranges=ranges)


def _placed(data: np.ndarray, at):
    """The bytes of `data` a _dma_plan locates: a slice, or (offset, shape, strides) of a strided view."""
    if isinstance(at, slice):
        return data[at]
    offset, shape, strides = at
    return np.ndarray(shape, dtype=np.uint8, buffer=data, offset=offset, strides=strides)


def _dma_plan(ctx: _Context, where: str, f, load: bool) -> tuple:
    """Where a dma.load / dma.store's rows lie in each memory (bounds checked once: the memory
    sizes are the program's) and its functional Effect (shared by every run: read only):
    plain slices when both sides' rows touch, else [rows, row_bytes] strided views."""
    m = ctx.machine
    sides = ((m.dram, f.dram_addr, f.dram_stride, ".dram_addr"), (m.sram, f.sram_addr, f.sram_stride, ".sram_addr"))
    views = [_strided(mem, addr, f.rows, f.row_bytes, stride, where + name)  # raise out of range
             for mem, addr, stride, name in sides]
    nbytes = f.rows * f.row_bytes
    if nbytes == 0:
        located = [slice(0, 0), slice(0, 0)]
    elif all(stride == f.row_bytes for _, _, stride, _ in sides) or f.rows == 1:
        located = [slice(addr, addr + nbytes) for _, addr, _, _ in sides]
    else:
        located = [(addr, view.shape, view.strides) for (_, addr, _, _), view in zip(sides, views)]
    effect = Effect(engine="dma", dram_read=nbytes if load else 0, dram_written=0 if load else nbytes,
                    sram_bytes=nbytes)
    plan = ctx.dma_plans[id(f)] = (located[0], located[1], effect)
    return plan


def _dma_timing(hw: HwConfig, f) -> tuple[int, tuple[np.ndarray, int] | None, list[tuple[int, int]]]:
    """A dma.load / dma.store's cycles, DRAM spans (compulsory traffic) and DRAM ranges (hazards);
    shared by every run of the instruction, so read-only."""
    nbytes = f.rows * f.row_bytes
    if not nbytes:
        spans = None
    elif f.rows == 1 or f.dram_stride == f.row_bytes:  # the rows touch: one span (the same bytes, few to merge)
        spans = (np.array([f.dram_addr], dtype=np.int64), nbytes)
    else:
        spans = (f.dram_addr + np.arange(f.rows, dtype=np.int64) * f.dram_stride, f.row_bytes)
    if spans is not None:
        spans[0].flags.writeable = False
    return (memory.strided_dma_cycles(hw, f.dram_addr, f.rows, f.row_bytes, f.dram_stride), spans,
            isa.strided_ranges(f.dram_addr, f.rows, f.row_bytes, f.dram_stride))


def _dma_load(ctx, where, f):
    return _dma(ctx, where, f, load=True)


def _popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per element of an unsigned integer array."""
    as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(words.shape + (words.dtype.itemsize,))
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1)


_U32 = struct.Struct("<I")
# per byte value: its set bits, little-endian (bit j = element 8*byte + j), and how many
_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(bool)
_BYTE_POPCOUNT = _BYTE_BITS.sum(axis=1).astype(np.uint8)


def _byte_popcounts(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint8 (numpy >= 2 has the ufunc; else a table lookup)."""
    count = getattr(np, "bitwise_count", None)
    return count(values) if count is not None else _BYTE_POPCOUNT[values]


@dataclass(frozen=True)
class _Fibers:
    """Back-to-back fibers as walked: where each starts, its count (checked against its
    bitmask), its bitmask bytes (bits past `elems` cleared), and the end of the last one."""

    starts: np.ndarray  # int64 [n]
    counts: np.ndarray  # int64 [n]
    masks: np.ndarray  # uint8 [n, ceil(elems / 8)]
    end: int

    def moved(self, delta: int) -> "_Fibers":
        """The same fibers `delta` bytes further on."""
        return _Fibers(self.starts + delta, self.counts, self.masks, self.end + delta)

    def set_bits(self, elems: int) -> np.ndarray:
        """Row-major flat indices into [n, elems] of the bitmasks' set bits."""
        mbytes = self.masks.shape[1]
        at = np.flatnonzero(self.masks)  # the bitmasks are sparse: expand only their non-zero bytes
        hits = np.flatnonzero(_BYTE_BITS[self.masks.reshape(-1)[at]])  # (non-zero byte, bit) row-major
        if elems == 8 * mbytes:  # rows of whole bytes: byte b of the masks holds elements 8b..8b+7
            return (at[hits >> 3] << 3) + (hits & 7)
        row, col = np.divmod(at[hits >> 3], mbytes)
        return row * elems + col * 8 + (hits & 7)


def _fiber_masks(data: np.ndarray, starts: np.ndarray, elems: int) -> np.ndarray:
    """The `elems`-bit bitmask bytes after the header of each fiber starting at `starts`
    (inside `data`: the walk has checked the headers)."""
    mbytes = (elems + 7) // 8
    # the slices joined: several times faster than a gather through an [n, mbytes] index array
    view = memoryview(data)
    joined = bytearray().join([view[at:at + mbytes] for at in (starts + isa.FIBER_HEADER_BYTES).tolist()])
    if len(joined) != starts.size * mbytes:  # pragma: no cover - a mask past the end: the gather raises
        joined = bytearray(data[(starts + isa.FIBER_HEADER_BYTES)[:, None] + np.arange(mbytes)].tobytes())
    if not joined:
        return np.zeros((starts.size, mbytes), dtype=np.uint8)
    masks = np.frombuffer(joined, dtype=np.uint8).reshape(starts.size, mbytes)  # writable: a bytearray
    if elems % 8 and masks.size:  # bits past `elems` in the last byte are not elements
        masks[:, -1] &= np.uint8((1 << (elems % 8)) - 1)
    return masks


def _check_fiber_counts(masks: np.ndarray, counts: np.ndarray, where: str) -> None:
    """The first fiber whose pointer/count disagrees with its bitmask is an error."""
    bits = _byte_popcounts(masks).sum(axis=1, dtype=np.int64)
    bad = np.flatnonzero(bits != counts)
    if bad.size:
        i = int(bad[0])
        raise BinaryFormatError(f"{where}: fiber {i} pointer/count {int(counts[i])} disagrees with its bitmask "
                                f"({int(bits[i])} bits set)")


def _walk_fibers(mem, addr: int, n: int, elems: int, eb: int, where: str) -> _Fibers:
    """The `n` back-to-back fibers from `addr` (isa.DmaFlags.PACKED in DRAM, or a
    KEEP_COMPRESSED tile in SRAM): fiber i+1 starts after fiber i's 4 + ceil(elems/8) +
    ceil(count*elem_bits/8) bytes. Every count is checked against its bitmask, and a header
    outside the memory is an error only once the counts before it are known good (a wrong
    count derails the walk): the errors of a fiber-by-fiber walk, in its order. The pointer
    chase is a loop of one 4-byte read per fiber; the bitmasks are checked in one pass."""
    meta = isa.FIBER_HEADER_BYTES + (elems + 7) // 8
    data, size = mem.data, mem.data.size
    starts, counts = [0] * n, [0] * n
    unpack = _U32.unpack_from
    at = addr
    for i in range(n):
        if at + meta > size:
            known = np.array(starts[:i], dtype=np.int64)
            _check_fiber_counts(_fiber_masks(data, known, elems), np.array(counts[:i], dtype=np.int64), where)
            mem.span(at, meta, f"{where} (fiber {i})")  # raises: the header is outside the memory
        count = unpack(data, at)[0]
        starts[i], counts[i] = at, count
        at += meta + (count * eb + 7) // 8
    fibers = _Fibers(np.array(starts, dtype=np.int64), np.array(counts, dtype=np.int64),
                     _fiber_masks(data, np.array(starts, dtype=np.int64), elems), at)
    _check_fiber_counts(fibers.masks, fibers.counts, where)
    mem.span(addr, at - addr, where)  # the last fiber's data lies inside the memory
    return fibers


def _packed_fibers(mem, addr: int, n: int, elems: int, eb: int, slot: int, where: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Back-to-back fibers from `addr` (`_walk_fibers`) as ([n, slot] bytes, each fiber
    zero-padded to its slot as if stored in slots; each fiber's start; the end of the last one)."""
    meta = isa.FIBER_HEADER_BYTES + (elems + 7) // 8
    walked = _walk_fibers(mem, addr, n, elems, eb, where)
    starts, counts, at = walked.starts, walked.counts, walked.end
    sizes = meta + (counts * eb + 7) // 8
    span = mem.data[addr:at]
    raw = np.zeros((n, slot), dtype=np.uint8)
    cols = np.arange(slot)
    inside = cols < sizes[:, None]
    raw[inside] = span[((starts - addr)[:, None] + cols)[inside]]
    return raw, starts, at


def _fiber_counts(raw: np.ndarray, elems: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(counts, keep [n, elems]) of fibers laid out in slots; a count disagreeing with its bitmask is an error."""
    meta = isa.FIBER_HEADER_BYTES + (elems + 7) // 8
    counts = raw[:, :4].copy().view("<u4").reshape(-1).astype(np.int64)
    keep = np.unpackbits(raw[:, 4:meta], axis=1, bitorder="little")[:, :elems].astype(bool)
    bad = np.flatnonzero(keep.sum(axis=1) != counts)
    if bad.size:
        raise BinaryFormatError(f"{where}: fiber {int(bad[0])} pointer/count {int(counts[bad[0]])} "
                                f"disagrees with its bitmask ({int(keep[bad[0]].sum())} bits set)")
    return counts, keep


def _expand_fibers(raw: np.ndarray, counts: np.ndarray, keep: np.ndarray, eb: int, dt: np.dtype) -> np.ndarray:
    """The dense [n, elems] words of fibers in slots: each fiber's `count` elements at its bitmask's set bits."""
    n, elems = keep.shape
    meta = isa.FIBER_HEADER_BYTES + (elems + 7) // 8
    dense = np.zeros((n, elems), dtype=dt)
    wb = dt.itemsize
    if eb == 8 * wb:  # whole-word elements (weights): the packed data is already an array of words
        width = int(counts.max(initial=0))
        data = np.ascontiguousarray(raw[:, meta:meta + width * wb]).view(dt)
        # fiber i's first counts[i] words, in row-major order = the bitmask's set bits in order
        dense[keep] = data[np.arange(width) < counts[:, None]]
    else:  # bit-packed elements (spike words of T bits)
        bits = np.unpackbits(raw[:, meta:], axis=1, bitorder="little")[:, :elems * eb].reshape(n, elems, eb)
        data = (bits.astype(np.uint64) << np.arange(eb, dtype=np.uint64)).sum(axis=2).astype(dt)
        ranks = np.cumsum(keep, axis=1) - 1
        dense[keep] = data[np.nonzero(keep)[0], ranks[keep]]
    return dense


def _fiber_byte_offsets(n: int, elems: int, wb: int, layout: tuple[int, int, int]) -> np.ndarray:
    """[n, elems * wb] SRAM byte offsets of the expanded fibers under `isa.fiber_tile_offsets`."""
    stride, run, step = layout
    j = np.arange(elems, dtype=np.int64)
    element = (j // run) * step + (j % run) * wb
    starts = np.arange(n, dtype=np.int64)[:, None] * stride + element[None, :]
    return (starts[..., None] + np.arange(wb, dtype=np.int64)).reshape(n, elems * wb)


def _walked_dram_fibers(ctx: _Context, f, n: int, elems: int, eb: int, where: str) -> tuple[_Fibers, bytes]:
    """`_walk_fibers` of the DRAM fibers at dram_addr and their bytes; a walk is reused while
    the bytes it covered are the same (weights: every simulation of the program reloads them).
    The walk reads only those bytes (and the DRAM's size, fixed per program), so a reused walk
    is the walk, errors included: a walk that raised is never kept."""
    key = (f.dram_addr, n, elems, eb)
    data = ctx.machine.dram.data
    known = ctx.fiber_walks.get(key)
    if known is not None:
        raw, walked = known
        copied = data[f.dram_addr:walked.end].tobytes()
        if copied == raw:
            return walked, copied
    walked = _walk_fibers(ctx.machine.dram, f.dram_addr, n, elems, eb, where)
    copied = data[f.dram_addr:walked.end].tobytes()
    ctx.fiber_walks[key] = (copied, walked)
    return walked, copied


def _dma_bm(ctx: _Context, where: str, f, load: bool) -> Effect:
    """Bitmask-compressed fibers (isa.fiber_slot_bytes) <-> a dense SRAM tile [fibers][fiber_elems]
    (or, with sram_stride / run_elems / run_stride, fibers laid out strided: a channel slice).

    load: expand each fiber's `count` non-zero words to their bitmask positions (zeros elsewhere);
    with DmaFlags.PACKED the fibers lie back to back in DRAM; with KEEP_COMPRESSED they are
    copied into SRAM packed (`sram_bytes` of them) instead of expanded.
    store: take the low elem_bits bits of each SRAM word, drop the zero ones (with MASK_SINGLE
    also those with one bit set) and write pointer, bitmask and the kept elements bit-packed.
    Only 4 + ceil(elems/8) + ceil(count*elem_bits/8) bytes per fiber move (and count as DRAM
    traffic)."""
    if f.word_bytes not in (1, 2, 4, 8):
        raise BinaryFormatError(f"{where}.word_bytes = {f.word_bytes}: expected 1, 2, 4 or 8")
    if not 1 <= f.elem_bits <= 8 * f.word_bytes:
        raise BinaryFormatError(f"{where}.elem_bits = {f.elem_bits}: expected 1..{8 * f.word_bytes}")
    m = ctx.machine
    n, elems, wb, eb = f.fibers, f.fiber_elems, f.word_bytes, f.elem_bits
    dt = np.dtype(f"<u{wb}")
    mbytes = (elems + 7) // 8
    slot = isa.fiber_slot_bytes(elems, eb)
    meta = isa.FIBER_HEADER_BYTES + mbytes
    # validate_image has checked the flags against the sizes (isa.weight_fiber_field_error)
    packed = bool(f.flags & PACKED)
    keep_compressed = bool(f.flags & KEEP_COMPRESSED)
    sram_size = n * elems * wb
    layout = isa.fiber_tile_offsets(n, elems, wb, f.sram_stride, f.run_elems, f.run_stride)
    extent = isa.fiber_tile_extent(n, elems, wb, f.sram_stride, f.run_elems, f.run_stride)  # a channel slice
    if packed and keep_compressed and not (load and f.flags & SPIKES):
        # back to back in DRAM and in SRAM (LoAS's FiberCache): once walked, a single copy
        walked, copied = _walked_dram_fibers(ctx, f, n, elems, eb, where + ".dram_addr")
        starts, counts, end = walked.starts, walked.counts, walked.end
        if end - f.dram_addr != f.sram_bytes:
            raise BinaryFormatError(f"{where}.sram_bytes = {f.sram_bytes}, but the {n} fibers take "
                                    f"{end - f.dram_addr} bytes")
        m.sram.write(f.sram_addr, np.frombuffer(copied, dtype=np.uint8), where + ".sram_addr")
        ctx.sram_fibers[f.sram_addr] = (copied, elems, eb, walked.moved(-f.dram_addr))
        sram_size = f.sram_bytes
    else:
        if packed:
            raw, starts, _ = _packed_fibers(m.dram, f.dram_addr, n, elems, eb, slot, where + ".dram_addr")
        else:
            raw = m.dram.span(f.dram_addr, n * slot, where + ".dram_addr").reshape(n, slot)
            starts = f.dram_addr + np.arange(n, dtype=np.int64) * slot
        if keep_compressed:  # LoAS's FiberCache: the fibers go to SRAM as they are, back to back
            counts, keep = _fiber_counts(raw, elems, where)
            sizes = meta + (counts * eb + 7) // 8
            fibers = raw[np.arange(slot) < sizes[:, None]]
            if fibers.size != f.sram_bytes:
                raise BinaryFormatError(f"{where}.sram_bytes = {f.sram_bytes}, but the {n} fibers take {fibers.size} bytes")
            m.sram.write(f.sram_addr, fibers, where + ".sram_addr")
            sram_size = f.sram_bytes
        elif load:
            counts, keep = _fiber_counts(raw, elems, where)
            dense = _expand_fibers(raw, counts, keep, eb, dt)
            if layout is None:
                m.sram.write(f.sram_addr, dense, where + ".sram_addr")
            else:
                region = m.sram.span(f.sram_addr, extent, where + ".sram_addr")
                region[_fiber_byte_offsets(n, elems, wb, layout)] = np.ascontiguousarray(dense).view(np.uint8).reshape(n, -1)
        else:
            if layout is None:
                dense = m.sram.read(f.sram_addr, dt, n * elems, where + ".sram_addr").reshape(n, elems)
            else:
                region = m.sram.span(f.sram_addr, extent, where + ".sram_addr")
                dense = np.ascontiguousarray(region[_fiber_byte_offsets(n, elems, wb, layout)]).view(dt).reshape(n, elems)
            keep = dense != 0
            if eb < 8 * wb:  # an element is the low elem_bits bits of its SRAM word
                dense = dense & np.asarray((1 << eb) - 1, dtype=dt)
            if f.flags & MASK_SINGLE:
                keep &= _popcount(dense) > 1
            counts = keep.sum(axis=1).astype(np.int64)
            out = np.zeros((n, slot), dtype=np.uint8)
            out[:, :4] = counts.astype("<u4").view(np.uint8).reshape(n, 4)
            out[:, 4:meta] = np.packbits(keep, axis=1, bitorder="little")
            data = np.zeros((n, elems), dtype=dt)
            ranks = np.cumsum(keep, axis=1) - 1
            data[np.nonzero(keep)[0], ranks[keep]] = dense[keep]
            shifts = np.arange(eb, dtype=np.uint64)
            bits = ((data.astype(np.uint64)[..., None] >> shifts) & np.uint64(1)).astype(np.uint8)
            out[:, meta:] = np.packbits(bits.reshape(n, elems * eb), axis=1, bitorder="little")
            raw[...] = out
    moved = n * meta + int(((counts * eb + 7) // 8).sum())
    effect = Effect(
        engine="dma", cycles=0 if ctx.functional else memory.strided_dma_cycles(ctx.hw, 0, 1, moved, 0),
        latency=0 if ctx.functional else ctx.hw.dram.latency_cycles,
        dram_read=moved if load else 0, dram_written=0 if load else moved,
        dram_spans=(starts, meta + (int(counts.min(initial=0)) * eb + 7) // 8) if n else None,
        sram_bytes=sram_size, bitmask_bytes=n * meta,
        # packed fibers lie back to back; slotted ones fill n slots
        dram_ranges=[(f.dram_addr, f.dram_addr + (moved if packed else n * slot))] if n and not ctx.functional else [],
    )
    if load and f.flags & SPIKES:
        spikes = _expand_fibers(raw, counts, keep, eb, dt) if keep_compressed else dense
        effect.packed_spikes = int(_popcount(spikes).sum())
        effect.packed_meta_bits = 8 * n * meta
    return effect


def _move(ctx: _Context, where: str, f) -> Effect:
    """Copy `rows` rows of `row_bytes` inside the SRAM (strided both sides); no DRAM traffic.
    Runs on the DMA engine: cycles = vector_overhead + ceil(2 * bytes / (banks * port_bytes))."""
    m = ctx.machine
    src = _strided(m.sram, f.src_addr, f.rows, f.row_bytes, f.src_stride, where + ".src_addr")
    dst = _strided(m.sram, f.dst_addr, f.rows, f.row_bytes, f.dst_stride, where + ".dst_addr")
    dst[...] = src.copy()
    nbytes = f.rows * f.row_bytes
    if not nbytes:
        return Effect(engine="dma")
    per_cycle = ctx.hw.sram.banks * ctx.hw.sram.port_bytes
    return Effect(
        engine="dma",
        cycles=0 if ctx.functional else ctx.hw.compute.vector_overhead_cycles + -(-2 * nbytes // per_cycle),
        sram_bytes=nbytes,
    )


def _dma_load_bm(ctx, where, f):
    return _dma_bm(ctx, where, f, load=True)


def _dma_store_bm(ctx, where, f):
    return _dma_bm(ctx, where, f, load=False)


def _dma_store(ctx, where, f):
    return _dma(ctx, where, f, load=False)


# --------------------------------------------------------------------------------------
# Windows (shared by SYN and POOL)
# --------------------------------------------------------------------------------------

def _window_indices(lay, f, where: str):
    """Local input row/col index per (output row, ky) and (output col, kx).

    Positions in the zero padding map to the extra zero row (in_rows) / column
    (in_w); `valid` marks positions inside the input image.
    """
    out_rows = f.row0 + np.arange(f.rows)
    rin = out_rows[:, None] * lay.stride_h - lay.pad_top + np.arange(lay.kh)[None, :] * lay.dil_h
    valid_r = (rin >= 0) & (rin < lay.in_h)
    local = rin - f.in_row0
    missing = valid_r & ((local < 0) | (local >= f.in_rows))
    if missing.any():
        r = int(rin[missing][0])
        raise BinaryFormatError(
            f"{where}.in_rows: input row {r} is needed but the tile holds rows {f.in_row0}..{f.in_row0 + f.in_rows - 1}")
    local = np.where(valid_r, local, f.in_rows)
    cin = np.arange(lay.out_w)[:, None] * lay.stride_w - lay.pad_left + np.arange(lay.kw)[None, :] * lay.dil_w
    valid_c = (cin >= 0) & (cin < lay.in_w)
    cin = np.where(valid_c, cin, lay.in_w)
    valid = valid_r[:, :, None, None] & valid_c[None, None, :, :]  # [rows, kh, Wo, kw]
    return local, cin, valid


@dataclass(frozen=True)
class _Windows:
    """The input pixel under every window position of one visit geometry.

    Pixels are flat indices into the visit's input tile padded with one zero row and one
    zero column, [nt][in_rows + 1][in_w + 1] (`_padded_pixels`): padding positions read the
    zero pixel, so a window gather is one np.take with no masking.
    """

    valid: np.ndarray  # bool [rows, kh, Wo, kw]: inside the input image
    by_position: np.ndarray  # [nt, rows, Wo, kh, kw]: (lane, output position) major, the im2col order


def _windows(ctx: _Context, lay, f, where: str) -> _Windows:
    """The visit's _Windows, cached: every interior row tile of a layer has the same one.

    Input row of (r, ky) = row0*sh + r*sh - pad_top + ky*dh: relative to the tile it only
    depends on row0*sh - in_row0, and its validity (0 <= row < in_h) on how close row0*sh
    comes to the top (below pad_top) and to the bottom (within the window's reach) of the
    image -- the key holds exactly these.
    """
    top = min(f.row0 * lay.stride_h, lay.pad_top)
    reach = (f.rows - 1) * lay.stride_h + (lay.kh - 1) * lay.dil_h + 1
    bottom = min(lay.in_h + lay.pad_top - f.row0 * lay.stride_h, reach)
    key = (f.layer, f.nt, f.rows, f.in_rows, f.row0 * lay.stride_h - f.in_row0, top, bottom)
    found = ctx.windows.get(key)
    if found is not None:
        return found
    local, cin, valid = _window_indices(lay, f, where)  # raises on missing input rows
    width = lay.in_w + 1
    lane = np.arange(f.nt)[:, None, None, None, None] * ((f.in_rows + 1) * width)
    by_position = lane + local[None, :, None, :, None] * width + cin[None, None, :, None, :]
    found = _Windows(valid=valid, by_position=by_position)
    ctx.windows[key] = found
    return found


def _padded_pixels(x: np.ndarray, fill=0, dtype=None) -> np.ndarray:
    """x [nt, in_rows, in_w, C] -> [nt * (in_rows + 1) * (in_w + 1), C], the extra row/column = fill."""
    nt, in_rows, in_w, chans = x.shape
    xe = np.full((nt, in_rows + 1, in_w + 1, chans), fill, dtype=dtype or x.dtype)
    xe[:, :in_rows, :in_w] = x
    return xe.reshape(-1, chans)


# --------------------------------------------------------------------------------------
# SYN
# --------------------------------------------------------------------------------------

def _abs_max(x: np.ndarray) -> int:
    """The largest magnitude in integer array `x` (0 if empty). A small one (a LIF's tiles): one
    abs pass and one reduction, the abs read as unsigned (|-2**(b-1)| wraps to itself, which
    unsigned is 2**(b-1)) -- fewer calls than min and max; a large one: min and max, which
    write no temporary."""
    if not x.size:
        return 0
    if x.dtype.kind == "i" and x.size <= ABS_PASS_MAX_SIZE:
        return int(np.abs(x).view(UNSIGNED_OF[x.dtype.itemsize]).max())
    return int(max(-int(x.min()), int(x.max())))


ABS_PASS_MAX_SIZE = 1 << 15


UNSIGNED_OF = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _exact_dtype(bound: int, sparse: bool):
    """The cheapest type whose products and sums up to `bound` in magnitude are exact integers.

    The sparse kernel is fastest on int16 (half the bytes of float32 to gather and stream);
    BLAS (dense tiles) on float32 (exact below 2**24), then float64 (below 2**53); beyond
    that numpy's int64 matmul.
    """
    if sparse and bound < 2**15:
        return np.int16
    if bound < 2**24:
        return np.float32
    if bound < 2**53:
        return np.float64
    return np.int64


# A weight tile takes the sparse (CSR, scipy) product when at most this fraction of it is
# non-zero and it is big enough for the sparse kernel's per-call cost to pay off; otherwise
# dense BLAS, on one thread (_BlasThreads): single-threaded float32 BLAS is 1.5-2x as fast as
# the int16 sparse kernel on half-dense tiles, and at about this density they are even.
SPARSE_MAX_DENSITY = 0.25
SPARSE_MIN_WEIGHTS = 2048
# Dense products of at least BLAS_MIN_MACS multiply-adds run on every BLAS thread (a few ms of
# work pays for waking them); smaller ones on one. OpenBLAS splits products of 2**18 MACs and
# more over every core, and on the shared 2-core bench machine that cost 10-50x the
# single-thread CPU time (resnet19-cifar10's [128, 576] x [576, 128] visits, 0.15 ms of work,
# took 22 ms each; a red-lif-gen4 [32, 1152] x [1152, 320] visit 17 ms instead of 0.3 ms).
BLAS_MIN_MACS = 1 << 27


class _BlasThreads:
    """Holds the BLAS libraries (threadpoolctl) to one thread while some simulation runs, and
    gives them back their thread counts when the last one ends. Results never depend on it:
    every product is exact in any summation order (_exact_dtype). Without threadpoolctl it
    does nothing."""

    def __init__(self):
        self.lock = threading.Lock()
        self.holders = 0
        self.libraries = None  # threadpoolctl's controllers of the loaded BLAS libraries
        self.saved: list[int] = []

    def hold(self) -> None:
        with self.lock:
            if self.libraries is None:
                try:
                    from threadpoolctl import ThreadpoolController
                    self.libraries = ThreadpoolController().select(user_api="blas").lib_controllers
                except ImportError:  # pragma: no cover - a dependency; products stay exact
                    self.libraries = []
            if self.holders == 0:
                self.saved = [library.get_num_threads() for library in self.libraries]
                for library in self.libraries:
                    library.set_num_threads(1)
            self.holders += 1

    def release(self) -> None:
        with self.lock:
            self.holders -= 1
            if self.holders == 0:
                for library, threads in zip(self.libraries, self.saved):
                    library.set_num_threads(threads)

    def all_threads(self, product):
        """product() on the libraries' own thread counts (a large product)."""
        with self.lock:
            held = self.holders > 0
            if held:
                for library, threads in zip(self.libraries, self.saved):
                    library.set_num_threads(threads)
        try:
            return product()
        finally:
            if held:
                with self.lock:
                    if self.holders > 0:
                        for library in self.libraries:
                            library.set_num_threads(1)


_BLAS_THREADS = _BlasThreads()


def _csr_array_type():
    """scipy.sparse.csr_array, imported on first use (the import costs ~0.2 s, which small
    programs never pay); None without scipy, and every tile then takes the dense product."""
    global _CSR_ARRAY
    if _CSR_ARRAY is _NOT_LOADED:
        try:
            from scipy.sparse import csr_array
        except ImportError:  # pragma: no cover - scipy is a dependency; dense products still exact
            csr_array = None
        _CSR_ARRAY = csr_array
    return _CSR_ARRAY


_NOT_LOADED = object()
_CSR_ARRAY = _NOT_LOADED


# Column orders of a visit's transposed patches (rows of patches^T, columns of the weights):
ISA_ORDER = "isa"  # (ky, kx, c), the ISA's weight layout: patches^T from the im2col gather, transposed
PERMUTED_ORDER = "permuted"  # (c, ky, kx): patches^T as one strided copy of the channel-major tile


class _WeightTile:
    """A SYN weight tile [chs, K] decoded for the product and the timing models.

    Decoding costs about as much as a visit's product, and programs visit the same weights
    several times (row tiles of a layer reload them), so tiles are cached and reused while
    the SRAM bytes at w_addr stay identical (`_weight_tile`).

    The product's operators come in either column order of the patches (ISA_ORDER,
    PERMUTED_ORDER); the timing models see the ISA order (`nonzero`). Padding channels'
    rows are zero.
    """

    def __init__(self, raw: bytes, flat: np.ndarray, values: np.ndarray, shape: tuple[int, int], lay):
        """flat: row-major indices into [chs, K] of the non-zero weights of real channels;
        values: those weights (signed)."""
        chs, k = shape
        self.raw = raw
        self.flat = flat  # row-major: CSR order
        self.values = values
        isa_columns = flat % k
        offsets, channel = np.divmod(isa_columns, lay.in_cs)  # ISA column = (ky*kw + kx) * in_cs + c
        self.columns = {ISA_ORDER: isa_columns, PERMUTED_ORDER: channel * (lay.kh * lay.kw) + offsets}
        self.row_starts = np.searchsorted(flat, np.arange(chs + 1) * k)
        self.shape = shape
        self.abs_max = _abs_max(self.values)
        self.sparse = (chs * k >= SPARSE_MIN_WEIGHTS and flat.size <= SPARSE_MAX_DENSITY * chs * k
                       and _csr_array_type() is not None)
        self._operators: dict = {}
        # bytes it may come to hold, roughly: per non-zero its indices, values and operators;
        # a dense operator (and pattern) per weight when the tile is dense
        self.cost = len(raw) + 64 * flat.size + (0 if self.sparse else 16 * chs * k)

    @functools.cached_property
    def fiber_bs(self) -> timing.FiberBs:
        """The fiber-B bitmasks of the visit's output channels, ISA order (padding channels'
        rows are empty), for the timing models: shared by every visit of the tile."""
        return timing.FiberBs(self.shape, self.columns[ISA_ORDER], self.row_starts)

    def column_nonzeros(self, order: str) -> np.ndarray:
        """Per column (in `order`): how many of the tile's fiber-Bs are non-zero there."""
        key = ("column_nonzeros", order)
        if key not in self._operators:
            self._operators[key] = np.bincount(self.columns[order], minlength=self.shape[1])
        return self._operators[key]

    def _operator(self, values: np.ndarray, order: str, sparse: bool):
        """The matrix with `values` at the non-zeros, columns in `order`: CSR when sparse, else dense."""
        columns = self.columns[order]
        if sparse:
            return _csr_array_type()((values, columns.astype(np.int32), self.row_starts.astype(np.int32)),
                                     shape=self.shape)
        dense = np.zeros(self.shape, dtype=values.dtype)
        dense[np.repeat(np.arange(self.shape[0]), np.diff(self.row_starts)), columns] = values
        return dense

    def matrix(self, dtype, order: str, sparse: bool):
        """The weights as a `dtype` operator for `matrix @ patches_t` with patches in `order`."""
        key = ("weights", dtype, order, sparse)
        if key not in self._operators:
            self._operators[key] = self._operator(self.values.astype(dtype), order, sparse)
        return self._operators[key]

    def pattern(self, order: str, sparse: bool):
        """The non-zero pattern (float64 1s) as an operator: matched-pair counts."""
        key = ("pattern", order, sparse)
        if key not in self._operators:
            self._operators[key] = self._operator(np.ones(self.values.size, dtype=np.float64), order, sparse)
        return self._operators[key]



# Decoded tiles are kept with the program (`_Prepared`): always the last WEIGHT_TILE_CACHE (a layer
# visits one to a few at a time), and more while they take at most WEIGHT_TILE_CACHE_BYTES
# (estimated, `_WeightTile.cost`), so that the next simulation of a program finds all its tiles.
WEIGHT_TILE_CACHE = 16
# (The estimate runs about three times the arrays really held: red-lif-gen4's 50 tiles are
# estimated at 143 MB and hold 50 MB; under a 128 MB budget its every simulation decoded 52.)
WEIGHT_TILE_CACHE_BYTES = 256 << 20


def _compressed_weights(mem, f, k: int, wdtype: np.dtype, where: str, copied: _Fibers | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row-major flat indices into [chs, K], signed values) of the non-zero weights in the
    SYN's `chs` packed weight fibers at w_addr: each fiber's words, in order, belong to its
    bitmask's set bits. A stored zero word is not a non-zero weight. `copied`: these bytes'
    fibers as the dma.load_bm that put them there walked them (relative to w_addr), if known."""
    eb = 8 * wdtype.itemsize
    fibers = None if copied is None else copied.moved(f.w_addr)
    if fibers is None or fibers.starts.size != f.chs:
        fibers = _walk_fibers(mem, f.w_addr, f.chs, k, eb, where + ".w_addr")
    if fibers.end - f.w_addr != f.w_bytes:
        raise BinaryFormatError(f"{where}.w_bytes = {f.w_bytes}, but its {f.chs} weight fibers take "
                                f"{fibers.end - f.w_addr} bytes")
    flat = fibers.set_bits(k)
    meta = isa.FIBER_HEADER_BYTES + (k + 7) // 8
    lengths = fibers.counts * wdtype.itemsize
    total = int(lengths.sum())
    # the fibers' data bytes back to back: a segmented gather
    index = np.arange(total, dtype=np.int64) + np.repeat(fibers.starts + meta - (np.cumsum(lengths) - lengths), lengths)
    values = mem.data[index].view(wdtype)
    nonzero = values != 0
    if not nonzero.all():
        flat, values = flat[nonzero], values[nonzero]
    return flat, values


def _weight_tile(ctx: _Context, lay, f, block: _ChannelBlock, k: int, where: str) -> _WeightTile:
    wdtype = np.dtype("<i1") if lay.weight_bytes == 1 else np.dtype("<i2")
    compressed = bool(f.flags & COMPRESSED_WEIGHTS)  # w_bytes agrees (validate_image)
    span = ctx.machine.sram.span(f.w_addr, isa.weight_tile_bytes(vars(f), vars(lay)), where + ".w_addr")
    raw = span.tobytes()
    key = (f.layer, f.w_addr, f.ch0, f.chs)
    tile = ctx.weight_tiles.get(key)
    if tile is not None and tile.raw == raw:
        return tile
    if compressed:  # the tile's chs fibers, packed (dma.load_bm with KEEP_COMPRESSED put them there)
        known = ctx.sram_fibers.get(f.w_addr)
        copied = known[3] if known is not None and known[1:3] == (k, 8 * wdtype.itemsize) and known[0] == raw else None
        flat, values = _compressed_weights(ctx.machine.sram, f, k, wdtype, where, copied)
    else:
        w = span.view(wdtype).reshape(f.chs, k)
        nonzero = w != 0
        flat = np.flatnonzero(nonzero)
        values = w.reshape(-1)[flat]
    if not block.real.all():  # padding channels accumulate nothing
        real = block.real[flat // k]
        flat, values = flat[real], values[real]
    tile = _WeightTile(raw, flat, values, (f.chs, k), lay)
    tiles = ctx.weight_tiles
    with ctx.cache_lock:  # simulations of one image in several threads share the cache
        tiles.pop(key, None)
        tiles[key] = tile
        if len(tiles) > WEIGHT_TILE_CACHE and sum(t.cost for t in tiles.values()) > WEIGHT_TILE_CACHE_BYTES:
            del tiles[next(iter(tiles))]  # the oldest
    return tile


@dataclass(frozen=True)
class _ChannelBlock:
    """Output channels ch0..ch0+chs-1 of a layer: which are real (< out_c), not padding."""

    channels: np.ndarray
    real: np.ndarray
    padded: bool  # some channel of the block is padding
    param_index: np.ndarray  # per channel: its entry in the per-channel LIF parameters


def _channel_block(ctx: _Context, lay, f) -> _ChannelBlock:
    key = (f.layer, f.ch0, f.chs)
    found = ctx.channel_blocks.get(key)
    if found is None:
        channels = f.ch0 + np.arange(f.chs)
        real = channels < lay.out_c
        param_index = np.zeros(f.chs, dtype=np.int64) if lay.param_c == 1 else np.minimum(channels, lay.out_c - 1)
        found = ctx.channel_blocks[key] = _ChannelBlock(channels, real, not real.all(), param_index)
    return found


# Output rows at least this wide gather their transposed patches as one strided copy (runs of
# out_w contiguous pixels per offset); narrower ones gather whole channel rows with np.take
# (`_window_pixels`) and transpose them, which is faster when those runs are short.
STRIDED_PATCHES_MIN_WIDTH = 16


def _window_pixels(x: np.ndarray, windows: _Windows) -> np.ndarray:
    """The input pixel (all channels, as stored) under every window position of a visit:
    [(t, r, x, ky, kx), C] -- reshaped [nt, positions, K] it is the ISA's im2col order."""
    return np.take(_padded_pixels(x), windows.by_position.reshape(-1), axis=0)


def _fired_windows(x: np.ndarray, windows: _Windows, positions: int) -> np.ndarray:
    """timing.fired_lanes of the visit's window lanes, [positions, K] in ISA order: the input
    tile's 0/1 spikes x [nt, rows, W, C] summed over the lanes (nt <= 255), then gathered
    under the windows once instead of once per lane."""
    fired = x[0].copy()
    for lane in x[1:]:
        fired += lane
    pixels = _padded_pixels(fired[None])  # one lane: the windows' lane-0 indices address it
    return np.take(pixels, windows.by_position[0].reshape(-1), axis=0).reshape(positions, -1)


def _strided_patches(x: np.ndarray, lay, f, dtype, transposed: bool = False) -> np.ndarray:
    """patches [nt, rows, Wo, kh, kw, in_cs] of a visit (ISA_ORDER: the rows of `_window_pixels`)
    as one strided copy, in `dtype`; `transposed`: patches^T [in_cs, kh, kw, nt, rows, Wo]
    (PERMUTED_ORDER), the sparse product's right operand.

    The tile goes into a zero frame (channels last as it is stored, or channel-major when
    `transposed`) wide enough that every window position -- padding included -- is an affine
    function of (r, ky) and (x, kx); rows of the tile beyond the image are left out (they read
    as padding). `_windows` has checked the rows are present.
    """
    sh, sw, dh, dw = lay.stride_h, lay.stride_w, lay.dil_h, lay.dil_w
    image_rows = max(0, min(f.in_rows, lay.in_h - f.in_row0))
    row_off = f.row0 * sh - lay.pad_top - f.in_row0  # tile row of (r = 0, ky = 0)
    row_reach = (f.rows - 1) * sh + (lay.kh - 1) * dh + 1
    col_reach = (lay.out_w - 1) * sw + (lay.kw - 1) * dw + 1
    top, left = max(0, -row_off), max(0, lay.pad_left)
    frame_rows, frame_cols = top + max(image_rows, row_off + row_reach), left + max(lay.in_w, col_reach - lay.pad_left)
    if transposed:
        frame = np.zeros((lay.in_cs, f.nt, frame_rows, frame_cols), dtype=dtype)
        frame[:, :, top:top + image_rows, left:left + lay.in_w] = x[:, :image_rows].transpose(3, 0, 1, 2)
        s_c, s_t, s_r, s_x = frame.strides
        shape = (lay.in_cs, lay.kh, lay.kw, f.nt, f.rows, lay.out_w)
        strides = (s_c, dh * s_r, dw * s_x, s_t, sh * s_r, sw * s_x)
    else:
        frame = np.zeros((f.nt, frame_rows, frame_cols, lay.in_cs), dtype=dtype)
        frame[:, top:top + image_rows, left:left + lay.in_w] = x[:, :image_rows]
        s_t, s_r, s_x, s_c = frame.strides
        shape = (f.nt, f.rows, lay.out_w, lay.kh, lay.kw, lay.in_cs)
        strides = (s_t, sh * s_r, sw * s_x, dh * s_r, dw * s_x, s_c)
    # np.ndarray over the frame's buffer from (row top + row_off, column left - pad_left): the
    # view stride_tricks.as_strided would give, without its per-call overhead
    windows = np.ndarray(shape, dtype=frame.dtype, buffer=frame, strides=strides,
                         offset=(top + row_off) * s_r + (left - lay.pad_left) * s_x)
    return np.ascontiguousarray(windows)


def _pointwise_pixels(x: np.ndarray, lay, f) -> np.ndarray | None:
    """The input pixels [nt, rows, W, C] (a view of x) under the output rows of a 1x1, unit-stride,
    unpadded visit -- its patches, gathered by nothing -- or None for any other geometry (and
    for output rows outside the image or the tile: the general gathers handle those)."""
    if (lay.kh, lay.kw, lay.stride_h, lay.stride_w, lay.pad_top, lay.pad_left) != (1, 1, 1, 1, 0, 0) \
            or lay.in_w != lay.out_w or f.row0 + f.rows > lay.in_h:
        return None
    first = f.row0 - f.in_row0
    if first < 0 or first + f.rows > f.in_rows:
        return None
    return x[:, first:first + f.rows]


def _transposed(rows: np.ndarray, dtype) -> np.ndarray:
    """rows [n, K]^T as a C-contiguous `dtype` array; a few rows are copied one by one (numpy's
    transposing copy is slow when the new rows are that short)."""
    n, k = rows.shape
    if n > 16:
        return np.ascontiguousarray(rows.T).astype(dtype, copy=False)
    out = np.empty((k, n), dtype=dtype)
    for j in range(n):
        out[:, j] = rows[j]
    return out


def _syn_bias(ctx: _Context, lay, f, block: _ChannelBlock, where: str) -> tuple[np.ndarray, int]:
    """The bias of the visit's channels (0 for padding channels) and its largest magnitude,
    cached while the bias block's SRAM bytes stay the same (every visit of a layer reads it)."""
    raw = ctx.machine.sram.span(f.param_addr, 4 * lay.out_c, where + ".param_addr").tobytes()
    key = (f.layer, f.param_addr, f.ch0, f.chs)
    found = ctx.syn_biases.get(key)
    if found is not None and found[0] == raw:
        return found[1], found[2]
    bias_all = np.frombuffer(raw, dtype="<i4")
    if block.padded:
        bias = np.zeros(f.chs, dtype=np.int32)
        bias[block.real] = bias_all[block.channels[block.real]]
    else:
        bias = bias_all[f.ch0:f.ch0 + f.chs].copy()
    bias_max = _abs_max(bias)
    ctx.syn_biases[key] = (raw, bias, bias_max)
    return bias, bias_max


def _syn(ctx: _Context, where: str, f) -> Effect:
    """acc[t][r][x][c] = bias[c] + sum_{ky,kx,ci} w[c][ky][kx][ci] * in[t][r*sh-pt+ky*dh][x*sw-pl+kx*dw][ci]."""
    lay = ctx.layer(f, where, LayerKind.CONV)
    m = ctx.machine
    in_fmt = _decoded(lay, "in_format", Format)
    spike_input = in_fmt in SPIKE_FORMATS
    x = read_tile(m.sram, in_fmt, f.in_addr, f.nt, f.in_rows, lay.in_w, lay.in_cs, f.t0, lay.timesteps,
                  where + ".in_addr", dtype=None)  # uint8 spikes / stored ints: no int64 traffic
    k = lay.kh * lay.kw * lay.in_cs
    block = _channel_block(ctx, lay, f)
    weights = _weight_tile(ctx, lay, f, block, k, where)
    windows = _windows(ctx, lay, f, where)
    positions = f.rows * lay.out_w
    # Every partial sum of the product is an integer within the bound, so the narrow and float
    # types are exact (see _exact_dtype).
    bound = k * (1 if spike_input else _abs_max(x)) * weights.abs_max  # |any partial sum| <= bound
    sparse = weights.sparse
    dtype = _exact_dtype(bound, sparse)
    window_pixels = None
    n = f.nt * positions
    pixels = _pointwise_pixels(x, lay, f)  # a 1x1 convolution's patches are its input pixels
    if sparse:
        # acc^T [chs, nt*positions] = W [chs, K] @ patches^T [K, nt*positions]: the sparse
        # weights are the left operand, with their columns in the order the patches were gathered in
        if pixels is not None:
            order = ISA_ORDER  # (= PERMUTED_ORDER for a 1x1 kernel)
            patches_t = _transposed(pixels.reshape(n, k), dtype)
        elif lay.out_w >= STRIDED_PATCHES_MIN_WIDTH:
            order = PERMUTED_ORDER
            patches_t = _strided_patches(x, lay, f, dtype, transposed=True).reshape(k, n)
        else:
            order = ISA_ORDER
            window_pixels = _window_pixels(x, windows)
            # a 2-D transpose in the stored type, then the cast (values are exact in `dtype`: bound)
            patches_t = np.ascontiguousarray(window_pixels.reshape(n, k).T).astype(dtype, copy=False)
        product_t = weights.matrix(dtype, order, sparse) @ patches_t
        product = product_t.T
        lanes_nonzero = None if spike_input or ctx.functional else (patches_t != 0).reshape(k, f.nt, positions)
    else:
        # acc [nt*positions, chs] = patches [nt*positions, K] @ W^T [K, chs] (BLAS), the
        # accumulator's own layout: the patches in ISA order are the im2col rows as gathered
        order = ISA_ORDER
        if pixels is not None:
            patches = pixels.astype(dtype).reshape(n, k)
        elif lay.out_w >= STRIDED_PATCHES_MIN_WIDTH:
            patches = _strided_patches(x, lay, f, dtype).reshape(n, k)
        else:
            window_pixels = _window_pixels(x, windows)
            patches = window_pixels.reshape(n, k).astype(dtype, copy=False)
        weights_t = weights.matrix(dtype, order, sparse).T
        macs = n * k * f.chs
        if dtype is np.int64:
            product = patches @ weights_t
        elif macs >= BLAS_MIN_MACS:
            product = _BLAS_THREADS.all_threads(lambda: patches @ weights_t)
        else:
            if not ctx.blas_held:
                _BLAS_THREADS.hold()
                ctx.blas_held = True
            product = patches @ weights_t
        lanes_nonzero = None if spike_input or ctx.functional else (patches != 0).reshape(
            f.nt, positions, k).transpose(2, 0, 1)
    acc_shape = (f.nt, f.rows, lay.out_w, f.chs)
    acc_bytes = 4 * f.nt * positions * f.chs
    if f.flags & ACCUMULATE:
        acc = product.astype(np.int64, order="C").reshape(acc_shape)
        acc += m.sram.span(f.acc_addr, acc_bytes, where + ".acc_addr").view("<i4").reshape(acc_shape)
    else:
        bias, bias_max = _syn_bias(ctx, lay, f, block, where)
        # |product| <= bound: when bound + |bias| fits the accumulator nothing can clamp, so
        # the sum is formed directly in int32 (no int64 temporaries, no saturation pass)
        if bound + bias_max < 2**(ACC_BITS - 1):
            # straight into the accumulator tile: the product's values are exact integers
            acc = m.sram.span(f.acc_addr, acc_bytes, where + ".acc_addr").view("<i4").reshape(acc_shape)
            if product.flags.c_contiguous:  # (BLAS) cast, then an int32 add: twice as fast as a mixed add
                acc[...] = product.reshape(acc_shape)
                acc += bias
            else:
                np.add(product.reshape(acc_shape), bias, out=acc, casting="unsafe")
        else:
            acc = product.astype(np.int64, order="C").reshape(acc_shape)
            acc += bias
    if acc.dtype == np.int64:
        acc, clamped = saturate(acc, ACC_BITS)
        ctx.saturations[f.layer] += clamped
        m.sram.write(f.acc_addr, acc.astype("<i4"), where + ".acc_addr")
    effect = Effect(engine="compute")
    if spike_input:
        _track_firing(ctx, lay, f, x, in_fmt, where + ".in_addr")
    if ctx.functional:
        return effect
    # matched operations: nonzero weight x nonzero input, per lane (LoAS inner join)
    if spike_input:
        # the SYN unit of the layer's dataflow (FTP: LoAS TPPEs; baselines: runtime/baselines.py)
        if window_pixels is None and _decoded(lay, "dataflow", Dataflow) == Dataflow.FTP:
            # FTP only needs how often each input fires: the lanes summed before the window gather
            fired = _fired_windows(x, windows, positions)
            # an FTP visit's TPPE streams are timed later, with those of other visits (_time_deferred)
            syn = timing.ftp_visit_fired(ctx.hw, fired, f.nt, weights.fiber_bs)
        else:
            if window_pixels is None:
                window_pixels = _window_pixels(x, windows)
            lanes = window_pixels.reshape(f.nt, positions, k).view(bool)  # 0/1 uint8 spikes
            fired = timing.fired_lanes(lanes)  # [positions, K]: lanes in which each input fires
            syn = timing.syn_timing(ctx.hw, lay.dataflow, lanes, weights.fiber_bs, defer=True, fired=fired)
        # SOPs = spikes x the non-zero weights they meet (an FTP visit has summed them already)
        effect.sops = syn.sops if isinstance(syn, timing.FtpVisit) else int(
            fired.sum(axis=0, dtype=np.int64) @ weights.column_nonzeros(ISA_ORDER))
        effect.syn = syn
        if isinstance(syn, timing.FtpVisit):
            effect.pe_work = syn.matched
        else:
            effect.pe_work = syn.pe_work
            effect.cycles = syn.cycles
        return effect
    # multi-bit inputs: a neuron's MACs = its lanes with a value x its non-zero weights, per offset
    # [K, positions]: lanes with a value, added up lane by lane in uint8 (nt <= 255): a reduction
    # over the middle axis (count_nonzero's, or sum's) is several times slower on these shapes
    nonzero = lanes_nonzero  # [K, nt, positions] in `order`
    lanes_active = nonzero[:, 0].astype(np.uint8 if f.nt < 256 else np.int64)
    for lane in range(1, f.nt):
        lanes_active += nonzero[:, lane]
    work = np.rint(weights.pattern(order, sparse) @ lanes_active.astype(np.float64)).astype(np.int64).T.reshape(-1)
    effect.macs = int(lanes_active.sum(axis=1, dtype=np.int64) @ weights.column_nonzeros(order))
    effect.cycles, effect.stalls["pe_imbalance"], effect.pe_work = timing.syn_cycles_and_imbalance(ctx.hw, work)
    return effect


def _track_firing(ctx: _Context, lay, f, x: np.ndarray, in_fmt: Format, where: str) -> None:
    """Record which input neurons fired in this visit (for silent_ratio). A SPIKE_PLANES layer
    keeps them as bit planes [in_h][in_w * in_cs / 8], ORed over the lanes as stored (an eighth
    of the unpacked tile's bytes); `_fired_counts` unpacks them once."""
    per_batch = ctx.fired[f.layer]
    planes = in_fmt == Format.SPIKE_PLANES
    if f.batch not in per_batch:
        per_batch[f.batch] = (np.zeros(lay.in_h, dtype=bool),
                              np.zeros((lay.in_h, lay.in_w * lay.in_cs // 8), dtype=np.uint8) if planes
                              else np.zeros((lay.in_h, lay.in_w, lay.in_c), dtype=bool))
    seen, fired = per_batch[f.batch]
    lo, hi = f.in_row0, min(f.in_row0 + f.in_rows, lay.in_h)
    if hi <= lo:
        return
    seen[lo:hi] = True
    if planes:  # the tile's bytes read_tile unpacked into x: [nt][in_rows][in_w * in_cs / 8]
        raw = ctx.machine.sram.span(f.in_addr, f.nt * f.in_rows * fired.shape[1], where).reshape(f.nt, f.in_rows, -1)
        fired[lo:hi] |= np.bitwise_or.reduce(raw[:, :hi - lo], axis=0)
    else:
        fired[lo:hi] |= np.bitwise_or.reduce(x[:, :hi - lo, :, :lay.in_c], axis=0).view(bool)  # x is 0/1 uint8


def _fired_counts(lay, seen: np.ndarray, fired: np.ndarray) -> tuple[int, int]:
    """(input neurons seen, of which fired) of one layer and batch as _track_firing left them."""
    if fired.dtype == np.uint8:  # SPIKE_PLANES bit planes
        fired = np.unpackbits(fired, axis=1, bitorder="little").reshape(lay.in_h, lay.in_w, lay.in_cs)[..., :lay.in_c]
    return int(seen.sum()) * lay.in_w * lay.in_c, int(np.count_nonzero(fired[seen]))


# --------------------------------------------------------------------------------------
# LIF
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _LifParams:
    """A LIF's per-channel parameters for its channel block, and bounds over all channels."""

    raw: bytes  # the parameter block's SRAM bytes they were read from
    thr: np.ndarray  # int64 [chs], or an np.int64 scalar when one value serves every channel (param_c = 1)
    leak: np.ndarray
    v_reset: np.ndarray
    thr_max: int
    leak_max: int
    reset_max: int
    narrow: tuple  # thr, leak, v_reset as int32 (read from int32 words): [chs] arrays or np.int32 scalars


def _lif_params(ctx: _Context, lay, f, channels: _ChannelBlock, where: str) -> _LifParams:
    """The LIF parameters at param_addr, cached while those SRAM bytes stay the same (every
    tile of a layer reads the same block)."""
    count = lay.out_c + 3 * lay.param_c
    raw = ctx.machine.sram.span(f.param_addr, 4 * count, where + ".param_addr").tobytes()
    key = (f.layer, f.param_addr, f.ch0, f.chs)
    found = ctx.lif_params.get(key)
    if found is not None and found.raw == raw:
        return found
    block = np.frombuffer(raw, dtype="<i4").astype(np.int64)
    # bounds over every channel's parameters (one pass), valid for this block's
    thr_max, leak_max, reset_max = (int(b) for b in np.abs(block[lay.out_c:].reshape(3, -1)).max(axis=1))
    if lay.param_c == 1:
        # one value for all channels: the lanes' compares and products take numpy scalars, whose
        # loops run about twice as fast as broadcasting a [chs] row (same values, same dtypes)
        thr, leak, v_reset = (block[lay.out_c + j] for j in range(3))  # np.int64 scalars
        narrow = tuple(np.int32(value) for value in (thr, leak, v_reset))
    else:
        thr, leak, v_reset = (block[lay.out_c + j * lay.param_c:][channels.param_index] for j in range(3))
        narrow = tuple(values.astype(np.int32) for values in (thr, leak, v_reset))
    found = ctx.lif_params[key] = _LifParams(raw, thr, leak, v_reset, thr_max, leak_max, reset_max, narrow)
    return found


INT32_MAX = (1 << 31) - 1


@functools.lru_cache(maxsize=1 << 12)
def _lif_peak(nt: int, leak_form: LeakForm, reset: ResetMode, delayed: bool, leak_frac: int, in_range: int,
              i_max: int, v_max: int, s_max: int, thr_max: int, leak_max: int, reset_max: int) -> int:
    """A bound on the magnitude of every value `_lif`'s lanes compute, from the same bounds
    its loop carries (and updates the same way): while it is at most INT32_MAX the lanes run
    in int32, exactly as in int64 (nothing can wrap), with half the memory traffic."""
    peak = max(i_max, v_max, s_max, thr_max, leak_max, reset_max)
    for _ in range(nt):
        if delayed and reset == ResetMode.ZERO:
            v_max *= 1 + s_max
            peak = max(peak, v_max)
        if leak_form == LeakForm.NONE:
            h_max = v_max + i_max
        elif leak_form == LeakForm.BETA:
            product = v_max * leak_max
            h_max = (product >> leak_frac) + 1 + i_max
            peak = max(peak, product)
        else:  # TAU
            difference = i_max + v_max + reset_max  # |i_t - (v - v_reset)|
            product = difference * leak_max
            h_max = v_max + (product >> leak_frac) + 1
            peak = max(peak, difference, product)
        if delayed and reset == ResetMode.SUBTRACT:
            h_max += s_max * thr_max
        peak = max(peak, h_max)
        if h_max > in_range:
            h_max = in_range + 1
        if delayed or reset == ResetMode.ZERO:
            v_max = h_max
        elif reset == ResetMode.SUBTRACT:
            v_max = h_max + thr_max
        else:
            v_max = max(h_max, reset_max)
        peak = max(peak, v_max)
        if v_max > in_range:
            v_max = in_range + 1
        s_max = 1
    return peak


def _lif(ctx: _Context, where: str, f) -> Effect:
    """Integer P-LIF over lanes t0..t0+nt-1 (docs/isa.md "LIF semantics")."""
    lay = ctx.layer(f, where, LayerKind.CONV)
    m = ctx.machine
    neurons = f.rows * lay.out_w * f.chs
    acc = m.sram.span(f.acc_addr, 4 * f.nt * neurons, where + ".acc_addr").view("<i4").reshape(
        f.nt, neurons // f.chs, f.chs)
    channels = _channel_block(ctx, lay, f)
    params = _lif_params(ctx, lay, f, channels, where)
    if f.t0 == 0:  # a neuron starts every sequence at rest: v = 0, no previous spike
        v = s_prev = None
    else:  # (views: nothing is written to the SRAM before the lanes are done with them)
        state = m.sram.span(f.state_addr, 8 * neurons, where + ".state_addr").view("<i4").reshape(2, -1, f.chs)
        v, s_prev = state[0], state[1]
    leak_form, reset = _decoded(lay, "leak", LeakForm), _decoded(lay, "reset", ResetMode)
    delayed = bool(lay.lif_flags & DELAYED_RESET)
    compare_gt, no_fire = bool(lay.lif_flags & COMPARE_GT), bool(lay.lif_flags & NO_FIRE)
    membrane_bits = ctx.hw.compute.membrane_bits
    padding = ~channels.real if channels.padded else None
    wdtype = word_dtype(f.nt)
    shape = (neurons // f.chs, f.chs)
    words = None  # bit `lane` = spike at t0 + lane: lane 0's spikes, then the others ORed in lane by lane
    trace = np.zeros((f.nt,) + shape, dtype="<i4") if f.mem_addr != isa.NO_ADDRESS else None
    # Magnitude bounds (exact Python ints) carried through the lanes: while a bound stays inside
    # the membrane range, `saturate` would find nothing to clamp and is skipped (its two
    # reductions are a large part of a lane's work); and while every bound fits int32
    # (`_lif_peak`), the lanes compute in int32.
    in_range = (1 << (membrane_bits - 1)) - 1
    acc_max = _abs_max(acc)  # |current| from the int32 accumulator; a floor shift adds at most 1
    i_max = acc_max << lay.acc_shift if lay.acc_shift >= 0 else (acc_max >> -lay.acc_shift) + 1
    thr_max, leak_max, reset_max = params.thr_max, params.leak_max, params.reset_max
    v_max = 0 if v is None else _abs_max(v)
    # only a delayed reset computes with the previous spikes; otherwise they are only copied back
    # (no lanes), in either type: their bound cannot change a result
    s_max = 0 if s_prev is None or not delayed else _abs_max(s_prev)
    narrow = _lif_peak(f.nt, leak_form, reset, delayed, lay.leak_frac, in_range, i_max, v_max, s_max,
                       thr_max, leak_max, reset_max) <= INT32_MAX
    dt = np.int32 if narrow else np.int64
    thr, leak, v_reset = params.narrow if narrow else (params.thr, params.leak, params.v_reset)
    if v is None:
        v = np.zeros(shape, dtype=dt)
        s_prev = np.zeros(shape, dtype=bool)
    else:
        v, s_prev = v.astype(dt, copy=False), s_prev.astype(dt, copy=False)  # never written in place
    # the lanes read the accumulator as it is (all of them before anything is written back);
    # shifted, it is a fresh array in dt (one pass: the shift casts), which lane 0 may take over
    if lay.acc_shift == 0:
        current = acc
    elif lay.acc_shift > 0:
        current = np.left_shift(acc, lay.acc_shift, dtype=dt)
    else:
        current = np.right_shift(acc, -lay.acc_shift, dtype=dt)
    clamped_total = 0
    for lane in range(f.nt):  # the membrane recurrence is sequential in t; each lane is vectorised
        i_t = current[lane]
        # s_prev is 0/1 (bool after the first lane); the state read from SRAM is used as is
        if delayed and reset == ResetMode.ZERO:
            v = (1 - s_prev.astype(dt, copy=False)) * v
            v_max *= 1 + s_max
        if leak_form == LeakForm.NONE:
            h = v + i_t
            h_max = v_max + i_max
        elif leak_form == LeakForm.BETA:
            if v_max == 0:  # v is all zeros (a sequence's first lane): h = i_t
                h = i_t if current is not acc else i_t.astype(dt)  # h is worked on in place
            else:
                h = v * leak  # ((v * leak) >> leak_frac) + i_t, in place on the fresh product
                h >>= lay.leak_frac
                h += i_t
            h_max = ((v_max * leak_max) >> lay.leak_frac) + 1 + i_max  # a floor shift adds at most 1
        else:  # TAU: leak holds 1/tau
            h = v + (((i_t - (v - v_reset)) * leak) >> lay.leak_frac)
            h_max = v_max + (((i_max + v_max + reset_max) * leak_max) >> lay.leak_frac) + 1
        if delayed and reset == ResetMode.SUBTRACT:
            h = h - s_prev * thr
            h_max += s_max * thr_max
        if h_max > in_range:
            h, clamped = saturate(h, membrane_bits)
            clamped_total += clamped
            h_max = in_range + 1
        if no_fire:
            s = np.zeros(v.shape, dtype=bool)
        elif compare_gt:
            s = np.greater(h, thr)
        else:
            s = np.greater_equal(h, thr)
        # h is this lane's own array (fresh, or saturate's copy): the reset may work in place
        if delayed:
            v, v_max = h, h_max
        elif reset == ResetMode.SUBTRACT:
            h -= thr * s  # (thr: dt) a masked subtract (where=s) is several times slower
            v, v_max = h, h_max + thr_max
        elif reset == ResetMode.ZERO:
            v, v_max = np.where(s, 0, h), h_max
        else:
            v, v_max = np.where(s, v_reset, h), max(h_max, reset_max)
        if v_max > in_range:
            v, clamped = saturate(v, membrane_bits)
            clamped_total += clamped
            v_max = in_range + 1
        if padding is not None:
            s[:, padding] = False
            v[:, padding] = 0
        s_prev, s_max = s, 1
        if trace is not None:
            trace[lane] = v
        bits = s.view(np.uint8)
        if words is None:
            words = bits.astype(wdtype)  # a copy: s lives on as s_prev
        else:  # bit `lane` added (the bits are disjoint): a multiply is twice as fast as a shift
            words += np.multiply(bits, wdtype.type(1 << lane), dtype=wdtype)
    ctx.saturations[f.layer] += clamped_total
    if words is None:  # no lanes
        words = np.zeros(shape, dtype=wdtype)
    # v and s_prev straight into the state words in SRAM (after every lane has read the accumulator)
    state = m.sram.span(f.state_addr, 8 * neurons, where + ".state_addr").view("<i4").reshape((2,) + shape)
    state[0], state[1] = v, s_prev
    m.sram.write(f.spk_addr, words, where + ".spk_addr")
    if trace is not None:
        m.sram.write(f.mem_addr, trace, where + ".mem_addr")
    return Effect(engine="neuron", cycles=0 if ctx.functional else timing.lif_cycles(ctx.hw, neurons))


# --------------------------------------------------------------------------------------
# PACK, POOL, ADD
# --------------------------------------------------------------------------------------

def _frac(fmt: Format, frac: int) -> int:
    """Fractional bits of a value in `fmt`: spikes are the integer 1 (0 fractional bits)."""
    return 0 if fmt in SPIKE_FORMATS else frac


def _store_values(ctx: _Context, lay, f, where: str, fmt: Format, addr: int, values: np.ndarray) -> None:
    """Write integer values [nt][rows][W][chs] in `fmt`; spikes = value != 0; ints saturate."""
    if fmt in SPIKE_FORMATS:
        values = values != 0
    else:
        values, clamped = saturate(values.astype(np.int64, copy=False), FORMAT_BITS[fmt])
        ctx.saturations[f.layer] += clamped
    write_tile(ctx.machine.sram, fmt, addr, values, f.t0, lay.timesteps, where)


def _pack(ctx: _Context, where: str, f) -> Effect:
    """Spike words (bit t-t0) -> the layer's out_format (ACT_*: spike = 1 << out_frac)."""
    lay = ctx.layer(f, where, LayerKind.CONV)
    neurons = f.rows * lay.out_w * f.chs
    wdtype = word_dtype(f.nt)
    words = ctx.machine.sram.span(f.spk_addr, wdtype.itemsize * neurons, where + ".spk_addr").view(wdtype)
    bits = np.arange(f.nt, dtype=wdtype).reshape(-1, 1)
    spikes = ((words[None, :] >> bits) & wdtype.type(1)).astype(np.uint8).reshape(f.nt, f.rows, lay.out_w, f.chs)
    out_fmt = _decoded(lay, "out_format", Format)
    if out_fmt in SPIKE_FORMATS:  # already 0/1: stored as they are (_store_values' `!= 0` is the identity)
        write_tile(ctx.machine.sram, out_fmt, f.out_addr, spikes, f.t0, lay.timesteps, where + ".out_addr")
    else:
        _store_values(ctx, lay, f, where + ".out_addr", out_fmt, f.out_addr, spikes.astype(np.int64) << lay.out_frac)
    return Effect(engine="neuron", cycles=0 if ctx.functional else timing.vector_cycles(ctx.hw, neurons))


POOL_WIDER = {np.uint8: np.int16, np.int16: np.int32, np.int32: np.int64}  # stored type -> max-pool type


def _pool(ctx: _Context, where: str, f) -> Effect:
    """MAXPOOL: max over the valid window positions; AVGPOOL: (sum * avg_recip) >> avg_shift."""
    lay = ctx.layer(f, where, LayerKind.MAXPOOL, LayerKind.AVGPOOL)
    m = ctx.machine
    in_fmt, out_fmt = _decoded(lay, "in_format", Format), _decoded(lay, "out_format", Format)
    x = read_tile(m.sram, in_fmt, f.in_addr, f.nt, f.in_rows, lay.in_w, lay.in_cs, f.t0, lay.timesteps,
                  where + ".in_addr", dtype=None)[..., f.ch0:f.ch0 + f.chs]
    windows = _windows(ctx, lay, f, where)
    if lay.kind == LayerKind.MAXPOOL:
        # padding positions read a value below every input (the minimum of the next wider type
        # than the stored one), so a plain max skips them
        wider = POOL_WIDER[x.dtype.type]
        lowest = np.iinfo(wider).min
        pixels = _padded_pixels(x, fill=lowest, dtype=wider)
        out = np.take(pixels, windows.by_position, axis=0).max(axis=(3, 4))  # [nt, rows, Wo, chs]
        out[out == lowest] = 0  # a window entirely in the padding
        out = shift(out.astype(np.int64), _frac(out_fmt, lay.out_frac) - _frac(in_fmt, lay.in_frac))
    else:
        pixels = _padded_pixels(x)
        total = np.take(pixels, windows.by_position, axis=0).sum(axis=(3, 4), dtype=np.int64) * lay.avg_recip
        count = windows.valid.sum(axis=(1, 3))[None, :, :, None]  # [1, rows, Wo, 1]
        window = lay.kh * lay.kw
        if not lay.flags & 1:  # exclude padding: rescale the 1/(kh*kw) reciprocal to 1/count
            total = (total * window) // np.maximum(count, 1)
        out = total >> lay.avg_shift
    _store_values(ctx, lay, f, where + ".out_addr", out_fmt, f.out_addr, out)
    elements = f.rows * lay.out_w * f.chs
    return Effect(engine="compute",
                  cycles=0 if ctx.functional else timing.vector_cycles(ctx.hw, elements, lay.kh * lay.kw))


def _add(ctx: _Context, where: str, f) -> Effect:
    """out = a * 2**(out_frac-in_frac) + b * 2**(out_frac-in2_frac) (floor shifts), saturated;
    with LayerFlags.ADD_AND, out = ((a != 0) & (b != 0)) * 2**out_frac."""
    lay = ctx.layer(f, where, LayerKind.ADD)
    m = ctx.machine
    fmt_a, fmt_b, out_fmt = (_decoded(lay, name, Format) for name in ("in_format", "in2_format", "out_format"))
    shape = (f.nt, f.rows, lay.out_w, f.chs)
    a = read_tile(m.sram, fmt_a, f.a_addr, *shape, f.t0, lay.timesteps, where + ".a_addr")
    b = read_tile(m.sram, fmt_b, f.b_addr, *shape, f.t0, lay.timesteps, where + ".b_addr")
    out_frac = _frac(out_fmt, lay.out_frac)
    if lay.flags & isa.LayerFlags.ADD_AND:  # spike-wise AND: a spike where both operands are non-zero
        total = ((a != 0) & (b != 0)).astype(np.int64) << out_frac
    else:
        total = shift(a, out_frac - _frac(fmt_a, lay.in_frac)) + shift(b, out_frac - _frac(fmt_b, lay.in2_frac))
    _store_values(ctx, lay, f, where + ".out_addr", out_fmt, f.out_addr, total)
    return Effect(engine="compute",
                  cycles=0 if ctx.functional else timing.vector_cycles(ctx.hw, f.rows * lay.out_w * f.chs))


def _exit_check(ctx: _Context, where: str, f) -> Effect:
    """The exit unit adds timestep t of the output's stored integers to its running sum (one
    int64 per output value; t = 0 starts it: validate_image has checked that each output's
    checks come for t = 0, 1, 2, ...) and decides the exit rule (runtime/exit_rule.py) on
    the sum. Runs on the DMA engine: it reads timestep t's bytes of the output (all of a
    SPIKE_WORDS tensor) from DRAM after the stores that write them; cycles = that read +
    vector_cycles(2 * B * C) (an add, then an exp, sum and compare per value)."""
    desc = ctx.io[f.io]  # an output (validate_image)
    step = io_step_bytes(desc)
    offset, nbytes = (0, io_dram_bytes(desc)) if step is None else (f.t * step, step)
    raw = ctx.machine.dram.span(desc.dram_addr, io_dram_bytes(desc), where + ".io")
    values = decode_step_ints(desc, raw, f.t)
    running = values if f.t == 0 else ctx.exit_sums[f.io] + values
    ctx.exit_sums[f.io] = running
    sums = confidence_sums(running, 0 if desc.format in SPIKE_FORMATS else desc.frac_bits)
    decided = ctx.exit_register is not None and bool(exits(sums, ctx.exit_register).all())
    lo = desc.dram_addr + offset
    return Effect(
        engine="dma", dram_read=nbytes,
        cycles=0 if ctx.functional else (memory.strided_dma_cycles(ctx.hw, lo, 1, nbytes, 0)
                                         + timing.vector_cycles(ctx.hw, 2 * running.size)),
        latency=0 if ctx.functional else ctx.hw.dram.latency_cycles,
        dram_ranges=[] if ctx.functional else [(lo, lo + nbytes)],
        check=CheckResult(io=f.io, timestep=f.t, sums=sums, classes=running.argmax(axis=1), exits=decided),
    )


def _nop(ctx, where, f):
    return Effect(engine="none")


def _barrier(ctx, where, f):
    return Effect(engine=None)


HANDLERS = {
    Opcode.NOP: _nop, Opcode.DMA_LOAD: _dma_load, Opcode.DMA_STORE: _dma_store,
    Opcode.DMA_LOAD_BM: _dma_load_bm, Opcode.DMA_STORE_BM: _dma_store_bm, Opcode.MOVE: _move,
    Opcode.SYN: _syn, Opcode.LIF: _lif, Opcode.PACK: _pack, Opcode.POOL: _pool, Opcode.ADD: _add,
    Opcode.BARRIER: _barrier, Opcode.EXIT_CHECK: _exit_check, Opcode.HALT: _nop,
}
assert set(HANDLERS) == {spec.opcode for spec in isa.INSTRUCTIONS}, "every ISA opcode needs a handler"

TILE_OPCODES = tuple(spec.opcode for spec in isa.INSTRUCTIONS if spec.has_layer)  # SYN, LIF, PACK, POOL, ADD


def attribute_layers(program) -> list[int]:
    """Layer index charged for each instruction (-1: none).

    Tile instructions use their `layer` field. DMA, NOP, BARRIER and HALT are
    charged to the layer of the next tile instruction in program order (the DMA
    feeds it), or, after the last one, to the last tile instruction's layer.
    """
    out = [-1] * len(program)
    following = -1
    for i in range(len(program) - 1, -1, -1):
        spec, f = program[i]
        if spec.opcode in TILE_OPCODES:
            following = f["layer"]
        out[i] = following
    last = -1
    for i, (spec, f) in enumerate(program):
        if spec.opcode in TILE_OPCODES:
            last = f["layer"]
        elif out[i] == -1:
            out[i] = last
    return out


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------

def _write_inputs(ctx: _Context, image: ProgramImage, inputs: dict) -> bool:
    declared = [d for d in image.io if not d.is_output]
    names = {d.name for d in declared}
    unknown = sorted(set(inputs) - names)
    if unknown:
        raise InputError(f"input {unknown[0]!r} is not an input of the program (inputs: {sorted(names)})")
    quantised = False
    for d in declared:
        if d.name not in inputs:
            raise InputError(f"input {d.name!r} is missing (expected shape {list(d.onnx_shape)})")
        raw, q = encode_input(d, inputs[d.name])
        quantised |= q
        ctx.machine.dram.span(d.dram_addr, raw.size, f"io {d.name!r}")[:] = raw
    return quantised


# Instructions executed before their timing is worked out: the TPPE streams of their SYN
# visits are timed in one batch (tppe.batched_streams loops over task slots, not visits).
TIMING_BATCH = 256


def _sram_ranges(spec: isa.InstructionSpec, fields: dict[str, int], layer: dict[str, int] | None
                 ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The SRAM ranges the instruction reads and writes, from its definition in the ISA table
    (isa.sram_operands: the verifiers and the compiler use the same), in the table's order."""
    reads, writes = [], []
    for operand in spec.sram_operands(fields, layer):
        lo = operand.addr
        hi = lo + operand.size  # (operand.end: a property call per operand of every instruction)
        if operand.reads:
            reads.append((lo, hi))
        if operand.writes:
            writes.append((lo, hi))
    return reads, writes


class _Step(NamedTuple):
    """One instruction as the driver runs it, prepared once per program (a tuple: a large
    program makes one per instruction, and a frozen dataclass takes several times longer)."""

    handler: object
    where: str
    fields: SimpleNamespace  # read only: shared by every simulation of the program
    opcode: Opcode
    owner: int  # the layer it is charged to (attribute_layers)
    reads: list  # SRAM ranges (shared: never modified)
    writes: list
    read_bytes: int  # their sizes summed (Effect._moved without sram_bytes)
    written_bytes: int


class _Prepared:
    """What `simulate` derives from a ProgramImage alone, kept with the image while its sections
    stay the same (`_prepared`): the decoded and validated instructions and layers, the hardware
    config, per instruction its handler, SRAM ranges and owner layer; and the caches of work
    that depends only on the program or on bytes compared on every use (windows, decoded weight
    tiles, SYN biases, LIF parameter blocks, fiber walks of DRAM weights, DMA plans), which later
    simulations reuse."""

    def __init__(self, image: ProgramImage, sections: tuple):
        self.sections = sections
        try:
            program = decode_instructions(image)
        except BinaryFormatError:
            validate_image(image)  # the image's first problem, in the validator's order
            raise
        validate_image(image, program)  # with the instructions decoded once for both
        self.hw = HwConfig.from_toml(image.hw_toml, source="prog.bin section hw_config")
        layer_fields = decode_layers(image)
        self.layers = [SimpleNamespace(**d, enums={}) for d in layer_fields]  # enums: see _decoded
        owners = attribute_layers(program)
        handler_of = {id(spec): HANDLERS[spec.opcode] for spec in isa.INSTRUCTIONS}  # (an enum key hashes slowly)
        self.steps: list[_Step] = []
        for i, (spec, fields) in enumerate(program):
            if spec.opcode == Opcode.HALT:
                break
            reads, writes = _sram_ranges(spec, fields, layer_fields[fields["layer"]] if spec.has_layer else None)
            read_bytes = written_bytes = 0
            for lo, hi in reads:
                read_bytes += hi - lo
            for lo, hi in writes:
                written_bytes += hi - lo
            self.steps.append(_Step(handler_of[id(spec)], f"instruction {i} ({spec.mnemonic})",
                                    SimpleNamespace(**fields), spec.opcode, owners[i], reads, writes,
                                    read_bytes, written_bytes))
        self.instructions = len(program)
        self.has_exit_checks = any(spec.opcode == Opcode.EXIT_CHECK for spec, _ in program)
        self.windows: dict[tuple, _Windows] = {}
        self.weight_tiles: dict[tuple, _WeightTile] = {}
        self.channel_blocks: dict[tuple, _ChannelBlock] = {}
        self.lif_params: dict[tuple, _LifParams] = {}
        self.syn_biases: dict[tuple, tuple[bytes, np.ndarray, int]] = {}
        self.fiber_walks: dict[tuple, tuple[bytes, _Fibers]] = {}
        self.timing_plans: dict = {}  # program_timing.ProgramTimer's per-instruction plans
        # per dma.load / dma.store (keyed by id of its fields, which live as long as this): _dma_timing
        self.dma_timing: dict[int, tuple] = {}
        self.dma_plans: dict[int, tuple] = {}  # ... and its _dma_plan
        self.lock = threading.Lock()


def _sections(image: ProgramImage) -> tuple:
    """Everything of the image a _Prepared depends on (bytes, strings, frozen IODescs)."""
    return (image.hw_toml, image.dram_size, image.constants, tuple(image.layers), tuple(image.layer_names),
            image.instructions, tuple(image.io), image.model_name)


_PREPARED: dict[int, _Prepared] = {}  # id(image) -> its prepared program, dropped with the image


def _prepared(image: ProgramImage) -> _Prepared:
    """The image's _Prepared, made again when any section of the image has changed since."""
    sections = _sections(image)
    found = _PREPARED.get(id(image))
    if found is not None and all(a is b or a == b for a, b in zip(found.sections, sections)):
        return found
    prepared = _Prepared(image, sections)  # raises BinaryFormatError for an invalid image
    if found is None:
        weakref.finalize(image, _PREPARED.pop, id(image), None)
    _PREPARED[id(image)] = prepared
    return prepared


def _read_outputs(ctx: _Context, image: ProgramImage) -> dict[str, np.ndarray]:
    outputs = {}
    for d in image.io:
        if d.is_output:
            # (no copy: decode_output's arrays are its own, never views of the DRAM)
            raw = ctx.machine.dram.span(d.dram_addr, io_dram_bytes(d), f"io {d.name!r}")
            outputs[d.name] = decode_output(d, raw)
    return outputs


def simulate(image: ProgramImage, inputs: dict, *, functional: bool = False, progress: bool | None = None,
             exit_confidence: float | None = None, run_to_end: bool = True) -> SimResult:
    """`exit_confidence` sets exit.check's threshold register (exit_rule.threshold_register);
    the program then halts at the first check that decides to exit, and SimResult.outputs are
    the outputs as it leaves them. With `run_to_end` the simulation goes on past the halt so
    that the report's totals and layers describe the full run next to report["exit"]."""
    with fewer_collections():
        return _simulate(image, inputs, functional, progress, exit_confidence, run_to_end)


def _simulate(image: ProgramImage, inputs: dict, functional: bool, progress: bool | None,
              exit_confidence: float | None, run_to_end: bool) -> SimResult:
    prepared = _prepared(image)
    hw = prepared.hw
    register = None if exit_confidence is None else threshold_register(exit_confidence)
    ctx = _Context(image, prepared, functional, register)
    quantised = _write_inputs(ctx, image, inputs)
    if register is not None and not prepared.has_exit_checks:
        raise InputError("an exit confidence needs a program with exit.check instructions "
                         "(compile it with --exit-checks)")
    counters = [LayerCounters() for _ in image.layers]
    unattributed = LayerCounters()  # instructions of a program without tile instructions
    timeline = OutputTimeline(image)
    timer = ProgramTimer(hw, counters, unattributed, timeline, len(image.constants), prepared.timing_plans,
                         prepared.steps)
    board = timer.board
    exit_log = ExitLog(None if register is None else float(exit_confidence), register)
    halted_outputs = None
    stopped = False
    bar = _progress_bar(progress, prepared.instructions)
    executed = 0
    # executed, not yet timed: (step index, owner, opcode, effect)
    pending: list[tuple[int, int, Opcode, Effect]] = []

    def time_pending() -> None:
        timer.time(pending)
        pending.clear()

    try:
        for i, step in enumerate(prepared.steps):
            effect = step.handler(ctx, step.where, step.fields)
            effect.reads, effect.writes = step.reads, step.writes  # shared lists: never modified
            executed += 1
            owner = step.owner
            if functional:
                moved = effect.sram_bytes  # Effect._moved: a strided DMA's hull ranges move sram_bytes
                (counters[owner] if owner >= 0 else unattributed).add_functional(
                    effect, (step.read_bytes if moved is None else moved) if step.reads else 0,
                    (step.written_bytes if moved is None else moved) if step.writes else 0)
            else:
                pending.append((i, owner, step.opcode, effect))
                if len(pending) >= TIMING_BATCH:
                    time_pending()
                if effect.check is not None or len(pending) >= TIMING_BATCH:
                    time_pending()  # an exit.check records the cycles and energy so far
            if effect.check is not None and exit_log.record(
                    effect.check, i, None if functional else board.makespan,
                    None if functional else total_energy_pj(hw, counters + [unattributed])):
                halted_outputs = _read_outputs(ctx, image)  # what the halted program leaves in DRAM
                if not run_to_end:
                    stopped = True
                    break
            if bar is not None and i % 8 == 0:
                bar[0].update(bar[1], completed=i)
        time_pending()
    finally:
        if ctx.blas_held:
            _BLAS_THREADS.release()
        if bar is not None:
            bar[0].stop()
    outputs = _read_outputs(ctx, image) if halted_outputs is None else halted_outputs
    for idx, per_batch in enumerate(ctx.fired):
        for seen, fired in per_batch.values():
            neurons_seen, neurons_fired = _fired_counts(ctx.layers[idx], seen, fired)
            counters[idx].neurons_seen += neurons_seen
            counters[idx].neurons_fired += neurons_fired
        counters[idx].saturations = int(ctx.saturations[idx])
        counters[idx].spike_input = Format(ctx.layers[idx].in_format) in SPIKE_FORMATS
    report = build_report(image, hw, counters, unattributed, executed=executed, functional=functional,
                          makespan=board.makespan, inputs_quantised=quantised)
    timed = timeline.section(functional)
    report["total"]["first_output_cycle"] = timed["first_output_cycle"]
    report["timesteps"] = timed["timesteps"]
    report.update(exit_log.section(report["total"]["cycles"], report["total"]["energy_pj"], ran_to_end=not stopped))
    return SimResult(outputs=outputs, report=report)


PROGRESS_AFTER_SECONDS = 1.0  # a bar appears only once a run has taken this long


class _LazyProgress:
    """A rich progress bar that starts only after PROGRESS_AFTER_SECONDS of simulation."""

    def __init__(self, total: int):
        import time

        self._clock = time.perf_counter
        self._start = self._clock()
        self._total = total
        self._bar = None
        self._task = None

    def update(self, _task, completed: int) -> None:
        if self._bar is None:
            if self._clock() - self._start < PROGRESS_AFTER_SECONDS:
                return
            from rich.progress import Progress  # only when needed: keeps the fast path import-light

            self._bar = Progress(transient=True)
            self._task = self._bar.add_task("simulating", total=self._total)
            self._bar.start()
        self._bar.update(self._task, completed=completed)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _progress_bar(progress: bool | None, total: int):
    """(bar, task) or None; the bar shows only for simulations longer than a second."""
    if not progress:
        return None
    return _LazyProgress(total), None
