"""Executes a ProgramImage instruction by instruction: functional results + timing.

CONTRACT:
  * `simulate(image, inputs, functional=False, progress=None) -> SimResult`.
    inputs: {ONNX input name: array of shape onnx_shape}; every input must be
    present, no unknown names. Outputs: {ONNX output name: float32 onnx_shape}.
  * Each instruction really executes on the Machine state (DMA copies bytes, SYN
    convolves, LIF integrates, ...); semantics per opcode are in docs/isa.md and
    the handler docstrings below. Each handler is vectorised over the tile with
    numpy; LIF steps through its nt lanes (the recurrence is sequential in t),
    each lane vectorised over all neurons of the tile.
  * Unless `functional`, every instruction also yields an `Effect` (engine, SRAM
    ranges read/written, cycles, bytes, operations) that the timing Scoreboard
    and the per-layer counters consume (runtime/timing.py, runtime/report.py).
  * Malformed programs (SRAM access out of range, wrong layer kind for an
    opcode, input rows missing from a tile) raise BinaryFormatError naming the
    instruction index and field.
Imports only numpy, rich, the standard library and snnc.backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from snnc.backend import isa
from snnc.backend.binformat import ProgramImage, decode_instructions, decode_layers, io_dram_bytes, validate_image
from snnc.backend.errors import BinaryFormatError, InputError
from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Format, LayerKind, LeakForm, LifFlags, Opcode, ResetMode, SynFlags
from snnc.runtime import memory, timing
from snnc.runtime.machine import (
    FORMAT_BITS, Machine, read_tile, saturate, shift, tile_bytes, word_dtype, write_tile,
)
from snnc.runtime.report import LayerCounters, build_report
from snnc.runtime.tensors import decode_output, encode_input

SPIKE_FORMATS = (Format.SPIKE_PLANES, Format.SPIKE_WORDS, Format.SPIKE_BITMASK)
ACC_BITS = 32  # the accumulator tile is int32 (isa.py: acc_addr "int32")


@dataclass
class SimResult:
    outputs: dict[str, np.ndarray]
    report: dict


@dataclass
class Effect:
    """What one instruction did, for the timing model and the counters."""

    engine: str | None  # "dma", "compute", None = BARRIER, "none" = NOP/HALT
    cycles: int = 0
    reads: list[tuple[int, int]] = field(default_factory=list)  # SRAM [lo, hi)
    writes: list[tuple[int, int]] = field(default_factory=list)
    dram_read: int = 0
    dram_written: int = 0
    dram_spans: tuple[np.ndarray, int] | None = None  # (row starts, row bytes) for compulsory traffic
    sram_bytes: int | None = None  # bytes really moved when the ranges are hulls (strided DMA)
    sops: int = 0
    macs: int = 0
    pe_work: int = 0  # TPPE busy cycles summed over neurons (matched positions; MACs for multi-bit)
    bitmask_bytes: int = 0  # dma.*_bm: DRAM bytes of fiber pointers + bitmasks (part of dram_read/written)
    packed_spikes: int = 0  # dma.load_bm of spike words: spikes (1 bits) delivered
    packed_meta_bits: int = 0  # ... and the pointer + bitmask bits that located them (LoAS Fig. 8)
    syn: timing.SynTiming | None = None  # the SYN unit model's report (runtime/timing.py)
    stalls: dict = field(default_factory=dict)  # cycles by cause (timing.STALL_CAUSES)

    @property
    def sram_read(self) -> int:
        if self.sram_bytes is not None and self.reads:
            return self.sram_bytes
        return sum(hi - lo for lo, hi in self.reads)

    @property
    def sram_written(self) -> int:
        if self.sram_bytes is not None and self.writes:
            return self.sram_bytes
        return sum(hi - lo for lo, hi in self.writes)


class _Context:
    def __init__(self, image: ProgramImage, hw: HwConfig, functional: bool):
        self.hw = hw
        self.machine = Machine(image, hw)
        self.layers = [SimpleNamespace(**d) for d in decode_layers(image)]
        self.functional = functional
        self.saturations = np.zeros(len(self.layers), dtype=np.int64)
        # per layer: {batch: (rows seen [in_h], fired [in_h, in_w, in_c])} for silent_ratio
        self.fired: list[dict[int, tuple[np.ndarray, np.ndarray]]] = [{} for _ in self.layers]

    def layer(self, f, where: str, *kinds: LayerKind):
        lay = self.layers[f.layer]
        if kinds and lay.kind not in kinds:
            raise BinaryFormatError(
                f"{where}.layer = {f.layer}: layer kind {LayerKind(lay.kind).name}, expected {'/'.join(k.name for k in kinds)}")
        return lay


def _span(addr: int, nbytes: int) -> tuple[int, int]:
    return (addr, addr + nbytes)


# --------------------------------------------------------------------------------------
# DMA
# --------------------------------------------------------------------------------------

def _strided(mem, addr: int, rows: int, row_bytes: int, stride: int, where: str) -> np.ndarray:
    if rows == 0 or row_bytes == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    extent = (rows - 1) * stride + row_bytes
    base = mem.span(addr, extent, where)
    return np.lib.stride_tricks.as_strided(base, shape=(rows, row_bytes), strides=(stride, 1))


def _dma(ctx: _Context, where: str, f, load: bool) -> Effect:
    """Copy `rows` rows of `row_bytes` between DRAM and SRAM with independent strides."""
    m = ctx.machine
    dram = _strided(m.dram, f.dram_addr, f.rows, f.row_bytes, f.dram_stride, where + ".dram_addr")
    sram = _strided(m.sram, f.sram_addr, f.rows, f.row_bytes, f.sram_stride, where + ".sram_addr")
    if load:
        sram[...] = dram
    else:
        dram[...] = sram
    nbytes = f.rows * f.row_bytes
    extent = [_span(f.sram_addr, (f.rows - 1) * f.sram_stride + f.row_bytes)] if nbytes else []
    starts = f.dram_addr + np.arange(f.rows, dtype=np.int64) * f.dram_stride
    return Effect(
        engine="dma", cycles=0 if ctx.functional else memory.dma_cycles(ctx.hw, starts, f.row_bytes if nbytes else 0),
        reads=[] if load else extent, writes=extent if load else [],
        dram_read=nbytes if load else 0, dram_written=0 if load else nbytes,
        dram_spans=(starts, f.row_bytes) if nbytes else None, sram_bytes=nbytes,
    )


def _dma_load(ctx, where, f):
    return _dma(ctx, where, f, load=True)


def _popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per element of an unsigned integer array."""
    as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(words.shape + (words.dtype.itemsize,))
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1)


def _dma_bm(ctx: _Context, where: str, f, load: bool) -> Effect:
    """Bitmask-compressed fibers (isa.fiber_slot_bytes) <-> a dense SRAM tile [fibers][fiber_elems].

    load: expand each fiber's `count` non-zero words to their bitmask positions (zeros elsewhere);
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
    raw = m.dram.span(f.dram_addr, n * slot, where + ".dram_addr").reshape(n, slot)
    meta = isa.FIBER_HEADER_BYTES + mbytes
    shifts = np.arange(eb, dtype=np.uint64)
    if load:
        counts = raw[:, :4].copy().view("<u4").reshape(-1).astype(np.int64)
        keep = np.unpackbits(raw[:, 4:meta], axis=1, bitorder="little")[:, :elems].astype(bool)
        bad = np.flatnonzero(keep.sum(axis=1) != counts)
        if bad.size:
            raise BinaryFormatError(f"{where}: fiber {int(bad[0])} pointer/count {int(counts[bad[0]])} "
                                    f"disagrees with its bitmask ({int(keep[bad[0]].sum())} bits set)")
        bits = np.unpackbits(raw[:, meta:], axis=1, bitorder="little")[:, :elems * eb].reshape(n, elems, eb)
        data = (bits.astype(np.uint64) << shifts).sum(axis=2).astype(dt)
        ranks = np.cumsum(keep, axis=1) - 1
        dense = np.zeros((n, elems), dtype=dt)
        rows = np.nonzero(keep)[0]
        dense[keep] = data[rows, ranks[keep]]
        m.sram.write(f.sram_addr, dense, where + ".sram_addr")
    else:
        dense = m.sram.read(f.sram_addr, dt, n * elems, where + ".sram_addr").reshape(n, elems)
        keep = dense != 0
        if eb < 8 * wb:  # an element is the low elem_bits bits of its SRAM word
            dense = dense & np.asarray((1 << eb) - 1, dtype=dt)
        if f.flags & isa.DmaFlags.MASK_SINGLE:
            keep &= _popcount(dense) > 1
        counts = keep.sum(axis=1).astype(np.int64)
        out = np.zeros((n, slot), dtype=np.uint8)
        out[:, :4] = counts.astype("<u4").view(np.uint8).reshape(n, 4)
        out[:, 4:meta] = np.packbits(keep, axis=1, bitorder="little")
        data = np.zeros((n, elems), dtype=dt)
        ranks = np.cumsum(keep, axis=1) - 1
        data[np.nonzero(keep)[0], ranks[keep]] = dense[keep]
        bits = ((data.astype(np.uint64)[..., None] >> shifts) & np.uint64(1)).astype(np.uint8)
        out[:, meta:] = np.packbits(bits.reshape(n, elems * eb), axis=1, bitorder="little")
        raw[...] = out
    moved = n * meta + int(((counts * eb + 7) // 8).sum())
    sram = [_span(f.sram_addr, n * elems * wb)] if n * elems else []
    effect = Effect(
        engine="dma", cycles=0 if ctx.functional else timing.dma_cycles(ctx.hw, moved),
        reads=[] if load else sram, writes=sram if load else [],
        dram_read=moved if load else 0, dram_written=0 if load else moved,
        dram_spans=(f.dram_addr + np.arange(n, dtype=np.int64) * slot, meta + (int(counts.min(initial=0)) * eb + 7) // 8)
        if n else None,
        sram_bytes=n * elems * wb, bitmask_bytes=n * meta,
    )
    if load and f.flags & isa.DmaFlags.SPIKES:
        effect.packed_spikes = int(_popcount(dense).sum())
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
        reads=[_span(f.src_addr, (f.rows - 1) * f.src_stride + f.row_bytes)],
        writes=[_span(f.dst_addr, (f.rows - 1) * f.dst_stride + f.row_bytes)], sram_bytes=nbytes,
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


def _gather_windows(x: np.ndarray, local, cin) -> np.ndarray:
    """x [nt, in_rows, in_w, C] -> [nt, rows, kh, Wo, kw, C] with zeros in the padding."""
    nt, in_rows, in_w, chans = x.shape
    xe = np.zeros((nt, in_rows + 1, in_w + 1, chans), dtype=x.dtype)
    xe[:, :in_rows, :in_w] = x
    return xe[:, local[:, :, None, None], cin[None, None, :, :]]


# --------------------------------------------------------------------------------------
# SYN
# --------------------------------------------------------------------------------------

def _abs_max(x: np.ndarray) -> int:
    return int(max(-int(x.min()), int(x.max()))) if x.size else 0


def _exact_matmul(a: np.ndarray, w: np.ndarray, a_max: int) -> np.ndarray:
    """a [R, K] @ w[C, K].T for integer arrays, exactly, on BLAS when a float type is exact.

    With |a| <= a_max and |w| <= w_max every partial sum is bounded by K * a_max * w_max:
    below 2**24 float32 represents them all (one float32 GEMM, the fastest), below 2**53
    float64 does; otherwise numpy's integer matmul (no BLAS) is used.
    """
    bound = a.shape[1] * a_max * _abs_max(w)
    if bound < 2**24:
        dtype = np.float32
    elif bound < 2**53:
        dtype = np.float64
    else:
        return a.astype(np.int64) @ w.T.astype(np.int64)
    af, wf = a.astype(dtype), w.astype(dtype)
    # OpenBLAS is several times faster on (w @ a.T) when a has fewer rows than w
    # (deep layers: few output positions, many channels); same numbers either way.
    product = (wf @ af.T).T if a.shape[0] < w.shape[0] else af @ wf.T
    return np.ascontiguousarray(product, dtype=np.int64)


def _syn(ctx: _Context, where: str, f) -> Effect:
    """acc[t][r][x][c] = bias[c] + sum_{ky,kx,ci} w[c][ky][kx][ci] * in[t][r*sh-pt+ky*dh][x*sw-pl+kx*dw][ci]."""
    lay = ctx.layer(f, where, LayerKind.CONV)
    m = ctx.machine
    in_fmt = Format(lay.in_format)
    x = read_tile(m.sram, in_fmt, f.in_addr, f.nt, f.in_rows, lay.in_w, lay.in_cs, f.t0, lay.timesteps,
                  where + ".in_addr")
    k = lay.kh * lay.kw * lay.in_cs
    wdtype = np.dtype("<i1") if lay.weight_bytes == 1 else np.dtype("<i2")
    w = m.sram.read(f.w_addr, wdtype, f.chs * k, where + ".w_addr").reshape(f.chs, k).astype(np.int64)
    local, cin, _valid = _window_indices(lay, f, where)
    patches = _gather_windows(x, local, cin).transpose(0, 1, 3, 2, 4, 5).reshape(f.nt, f.rows * lay.out_w, k)
    acc = _exact_matmul(patches.reshape(-1, k), w, 1 if in_fmt in SPIKE_FORMATS else _abs_max(x)
                        ).reshape(f.nt, f.rows * lay.out_w, f.chs)
    channels = f.ch0 + np.arange(f.chs)
    real = channels < lay.out_c
    acc[..., ~real] = 0  # padding channels stay zero
    acc_shape = (f.nt, f.rows, lay.out_w, f.chs)
    acc_bytes = 4 * f.nt * f.rows * lay.out_w * f.chs
    reads = [_span(f.in_addr, tile_bytes(in_fmt, f.nt, f.in_rows, lay.in_w, lay.in_cs, lay.timesteps)),
             _span(f.w_addr, f.chs * k * wdtype.itemsize)]
    if f.flags & SynFlags.ACCUMULATE:
        acc = acc + m.sram.read(f.acc_addr, "<i4", acc.size, where + ".acc_addr").reshape(acc.shape)
        reads.append(_span(f.acc_addr, acc_bytes))
    else:
        bias_all = m.sram.read(f.param_addr, "<i4", lay.out_c, where + ".param_addr").astype(np.int64)
        bias = np.zeros(f.chs, dtype=np.int64)
        bias[real] = bias_all[channels[real]]
        acc = acc + bias
        reads.append(_span(f.param_addr + 4 * f.ch0, 4 * int(real.sum())))
    acc, clamped = saturate(acc, ACC_BITS)
    ctx.saturations[f.layer] += clamped
    m.sram.write(f.acc_addr, acc.reshape(acc_shape).astype("<i4"), where + ".acc_addr")
    effect = Effect(engine="compute", reads=reads, writes=[_span(f.acc_addr, acc_bytes)])
    if in_fmt in SPIKE_FORMATS:
        _track_firing(ctx, lay, f, x)
    if ctx.functional:
        return effect
    # matched operations: nonzero weight x nonzero input, per lane (LoAS inner join)
    nonzero_w = (w != 0)
    nonzero_w[~real] = False
    lanes_active = np.count_nonzero(patches, axis=0)  # [neurons, K]: lanes with a spike/value
    matched = int(lanes_active.sum(axis=0) @ nonzero_w.sum(axis=0))
    if in_fmt in SPIKE_FORMATS:
        # the SYN unit of the layer's dataflow (FTP: LoAS TPPEs; baselines: runtime/baselines.py)
        syn = timing.syn_timing(ctx.hw, lay.dataflow, patches != 0, nonzero_w)
        effect.sops = matched
        effect.syn = syn
        effect.pe_work = syn.pe_work
        effect.cycles = syn.cycles
        return effect
    work = lanes_active.astype(np.float64) @ nonzero_w.T.astype(np.float64)
    effect.macs = matched
    work = np.rint(work).astype(np.int64).reshape(-1)
    effect.pe_work = int(work.sum())
    effect.cycles = timing.syn_cycles(ctx.hw, work)
    effect.stalls["pe_imbalance"] = timing.imbalance(work, ctx.hw.compute.num_pes)
    return effect


def _track_firing(ctx: _Context, lay, f, x: np.ndarray) -> None:
    """Record which input neurons fired in this visit (for silent_ratio)."""
    seen, fired = ctx.fired[f.layer].setdefault(
        f.batch, (np.zeros(lay.in_h, dtype=bool), np.zeros((lay.in_h, lay.in_w, lay.in_c), dtype=bool)))
    lo, hi = f.in_row0, min(f.in_row0 + f.in_rows, lay.in_h)
    if hi <= lo:
        return
    seen[lo:hi] = True
    fired[lo:hi] |= x[:, :hi - lo, :, :lay.in_c].any(axis=0)


# --------------------------------------------------------------------------------------
# LIF
# --------------------------------------------------------------------------------------

def _lif(ctx: _Context, where: str, f) -> Effect:
    """Integer P-LIF over lanes t0..t0+nt-1 (docs/isa.md "LIF semantics")."""
    lay = ctx.layer(f, where, LayerKind.CONV)
    m = ctx.machine
    neurons = f.rows * lay.out_w * f.chs
    acc = m.sram.read(f.acc_addr, "<i4", f.nt * neurons, where + ".acc_addr").reshape(f.nt, neurons // f.chs, f.chs)
    block = m.sram.read(f.param_addr, "<i4", lay.out_c + 3 * lay.param_c, where + ".param_addr").astype(np.int64)
    channels = f.ch0 + np.arange(f.chs)
    real = channels < lay.out_c
    pidx = np.zeros(f.chs, dtype=np.int64) if lay.param_c == 1 else np.minimum(channels, lay.out_c - 1)
    thr, leak, v_reset = (block[lay.out_c + j * lay.param_c:][pidx] for j in range(3))
    if f.t0 == 0:  # a neuron starts every sequence at rest: v = 0, no previous spike
        v = np.zeros((neurons // f.chs, f.chs), dtype=np.int64)
        s_prev = np.zeros_like(v)
    else:
        state = m.sram.read(f.state_addr, "<i4", 2 * neurons, where + ".state_addr").reshape(2, -1, f.chs)
        v, s_prev = state[0].astype(np.int64), state[1].astype(np.int64)
    current = shift(acc.astype(np.int64), lay.acc_shift)
    flags = LifFlags(lay.lif_flags)
    leak_form, reset = LeakForm(lay.leak), ResetMode(lay.reset)
    spikes = np.zeros((f.nt,) + v.shape, dtype=np.int64)
    trace = np.zeros_like(spikes)
    clamped_total = 0
    for lane in range(f.nt):  # the membrane recurrence is sequential in t; each lane is vectorised
        i_t = current[lane]
        if flags & LifFlags.DELAYED_RESET and reset == ResetMode.ZERO:
            v = (1 - s_prev) * v
        if leak_form == LeakForm.NONE:
            h = v + i_t
        elif leak_form == LeakForm.BETA:
            h = ((v * leak) >> lay.leak_frac) + i_t
        else:  # TAU: leak holds 1/tau
            h = v + (((i_t - (v - v_reset)) * leak) >> lay.leak_frac)
        if flags & LifFlags.DELAYED_RESET and reset == ResetMode.SUBTRACT:
            h = h - s_prev * thr
        h, clamped = saturate(h, ctx.hw.compute.membrane_bits)
        clamped_total += clamped
        s = (h > thr) if flags & LifFlags.COMPARE_GT else (h >= thr)
        s = s.astype(np.int64)
        if flags & LifFlags.NO_FIRE:
            s[:] = 0
        if flags & LifFlags.DELAYED_RESET:
            v = h
        elif reset == ResetMode.SUBTRACT:
            v = h - s * thr
        elif reset == ResetMode.ZERO:
            v = (1 - s) * h
        else:
            v = s * v_reset + (1 - s) * h
        v, clamped = saturate(v, ctx.hw.compute.membrane_bits)
        clamped_total += clamped
        s[:, ~real] = 0
        v[:, ~real] = 0
        s_prev = s
        spikes[lane] = s
        trace[lane] = v
    ctx.saturations[f.layer] += clamped_total
    m.sram.write(f.state_addr, np.stack([v, s_prev]).astype("<i4"), where + ".state_addr")
    bits = np.arange(f.nt, dtype=np.uint64).reshape(-1, 1, 1)
    words = np.bitwise_or.reduce(spikes.astype(np.uint64) << bits, axis=0).astype(word_dtype(f.nt))
    m.sram.write(f.spk_addr, words, where + ".spk_addr")
    writes = [_span(f.state_addr, 8 * neurons), _span(f.spk_addr, words.nbytes)]
    if f.mem_addr != isa.NO_ADDRESS:
        m.sram.write(f.mem_addr, trace.astype("<i4"), where + ".mem_addr")
        writes.append(_span(f.mem_addr, 4 * f.nt * neurons))
    reads = [_span(f.acc_addr, 4 * f.nt * neurons), _span(f.param_addr + 4 * lay.out_c, 12 * lay.param_c)]
    if f.t0 != 0:
        reads.append(_span(f.state_addr, 8 * neurons))
    return Effect(engine="compute", cycles=0 if ctx.functional else timing.lif_cycles(ctx.hw, neurons),
                  reads=reads, writes=writes)


# --------------------------------------------------------------------------------------
# PACK, POOL, ADD
# --------------------------------------------------------------------------------------

def _frac(fmt: Format, frac: int) -> int:
    """Fractional bits of a value in `fmt`: spikes are the integer 1 (0 fractional bits)."""
    return 0 if fmt in SPIKE_FORMATS else frac


def _store_values(ctx: _Context, lay, f, where: str, fmt: Format, addr: int, values: np.ndarray) -> int:
    """Write int64 values [nt][rows][W][chs] in `fmt`; spikes = value != 0; ints saturate."""
    if fmt in SPIKE_FORMATS:
        values = (values != 0).astype(np.int64)
    else:
        values, clamped = saturate(values, FORMAT_BITS[fmt])
        ctx.saturations[f.layer] += clamped
    write_tile(ctx.machine.sram, fmt, addr, values, f.t0, lay.timesteps, where)
    nt, rows, width, chans = values.shape
    return tile_bytes(fmt, nt, rows, width, chans, lay.timesteps)


def _pack(ctx: _Context, where: str, f) -> Effect:
    """Spike words (bit t-t0) -> the layer's out_format (ACT_*: spike = 1 << out_frac)."""
    lay = ctx.layer(f, where, LayerKind.CONV)
    neurons = f.rows * lay.out_w * f.chs
    words = ctx.machine.sram.read(f.spk_addr, word_dtype(f.nt), neurons, where + ".spk_addr").astype(np.uint64)
    bits = np.arange(f.nt, dtype=np.uint64).reshape(-1, 1)
    spikes = ((words[None, :] >> bits) & np.uint64(1)).astype(np.int64).reshape(f.nt, f.rows, lay.out_w, f.chs)
    out_fmt = Format(lay.out_format)
    values = spikes if out_fmt in SPIKE_FORMATS else spikes << lay.out_frac
    nbytes = _store_values(ctx, lay, f, where + ".out_addr", out_fmt, f.out_addr, values)
    reads = [_span(f.spk_addr, neurons * word_dtype(f.nt).itemsize)]
    if out_fmt == Format.SPIKE_WORDS:
        reads.append(_span(f.out_addr, nbytes))  # read-modify-write
    return Effect(engine="compute", cycles=0 if ctx.functional else timing.vector_cycles(ctx.hw, neurons),
                  reads=reads, writes=[_span(f.out_addr, nbytes)])


def _pool(ctx: _Context, where: str, f) -> Effect:
    """MAXPOOL: max over the valid window positions; AVGPOOL: (sum * avg_recip) >> avg_shift."""
    lay = ctx.layer(f, where, LayerKind.MAXPOOL, LayerKind.AVGPOOL)
    m = ctx.machine
    in_fmt, out_fmt = Format(lay.in_format), Format(lay.out_format)
    x = read_tile(m.sram, in_fmt, f.in_addr, f.nt, f.in_rows, lay.in_w, lay.in_cs, f.t0, lay.timesteps,
                  where + ".in_addr")[..., f.ch0:f.ch0 + f.chs]
    local, cin, valid = _window_indices(lay, f, where)
    win = _gather_windows(x, local, cin)  # [nt, rows, kh, Wo, kw, chs]
    mask = valid[None, :, :, :, :, None]
    if lay.kind == LayerKind.MAXPOOL:
        lowest = np.iinfo(np.int64).min
        out = np.where(mask, win, lowest).max(axis=(2, 4))
        out = np.where(out == lowest, 0, out)  # a window entirely in the padding
        out = shift(out, _frac(out_fmt, lay.out_frac) - _frac(in_fmt, lay.in_frac))
    else:
        total = win.sum(axis=(2, 4)) * lay.avg_recip
        count = valid.sum(axis=(1, 3))[None, :, :, None]  # [1, rows, Wo, 1]
        window = lay.kh * lay.kw
        if not lay.flags & 1:  # exclude padding: rescale the 1/(kh*kw) reciprocal to 1/count
            total = (total * window) // np.maximum(count, 1)
        out = total >> lay.avg_shift
    nbytes = _store_values(ctx, lay, f, where + ".out_addr", out_fmt, f.out_addr, out)
    reads = [_span(f.in_addr, tile_bytes(in_fmt, f.nt, f.in_rows, lay.in_w, lay.in_cs, lay.timesteps))]
    if out_fmt == Format.SPIKE_WORDS:
        reads.append(_span(f.out_addr, nbytes))
    elements = f.rows * lay.out_w * f.chs
    return Effect(engine="compute",
                  cycles=0 if ctx.functional else timing.vector_cycles(ctx.hw, elements, lay.kh * lay.kw),
                  reads=reads, writes=[_span(f.out_addr, nbytes)])


def _add(ctx: _Context, where: str, f) -> Effect:
    """out = a * 2**(out_frac-in_frac) + b * 2**(out_frac-in2_frac) (floor shifts), saturated;
    with LayerFlags.ADD_AND, out = ((a != 0) & (b != 0)) * 2**out_frac."""
    lay = ctx.layer(f, where, LayerKind.ADD)
    m = ctx.machine
    fmt_a, fmt_b, out_fmt = Format(lay.in_format), Format(lay.in2_format), Format(lay.out_format)
    shape = (f.nt, f.rows, lay.out_w, f.chs)
    a = read_tile(m.sram, fmt_a, f.a_addr, *shape, f.t0, lay.timesteps, where + ".a_addr")
    b = read_tile(m.sram, fmt_b, f.b_addr, *shape, f.t0, lay.timesteps, where + ".b_addr")
    out_frac = _frac(out_fmt, lay.out_frac)
    if lay.flags & isa.LayerFlags.ADD_AND:  # spike-wise AND: a spike where both operands are non-zero
        total = ((a != 0) & (b != 0)).astype(np.int64) << out_frac
    else:
        total = shift(a, out_frac - _frac(fmt_a, lay.in_frac)) + shift(b, out_frac - _frac(fmt_b, lay.in2_frac))
    nbytes = _store_values(ctx, lay, f, where + ".out_addr", out_fmt, f.out_addr, total)
    reads = [_span(f.a_addr, tile_bytes(fmt_a, *shape, lay.timesteps)),
             _span(f.b_addr, tile_bytes(fmt_b, *shape, lay.timesteps))]
    if out_fmt == Format.SPIKE_WORDS:
        reads.append(_span(f.out_addr, nbytes))
    return Effect(engine="compute",
                  cycles=0 if ctx.functional else timing.vector_cycles(ctx.hw, f.rows * lay.out_w * f.chs),
                  reads=reads, writes=[_span(f.out_addr, nbytes)])


def _nop(ctx, where, f):
    return Effect(engine="none")


def _barrier(ctx, where, f):
    return Effect(engine=None)


HANDLERS = {
    Opcode.NOP: _nop, Opcode.DMA_LOAD: _dma_load, Opcode.DMA_STORE: _dma_store,
    Opcode.DMA_LOAD_BM: _dma_load_bm, Opcode.DMA_STORE_BM: _dma_store_bm, Opcode.MOVE: _move,
    Opcode.SYN: _syn, Opcode.LIF: _lif, Opcode.PACK: _pack, Opcode.POOL: _pool, Opcode.ADD: _add,
    Opcode.BARRIER: _barrier, Opcode.HALT: _nop,
}
assert set(HANDLERS) == {spec.opcode for spec in isa.INSTRUCTIONS}, "every ISA opcode needs a handler"

TILE_OPCODES = (Opcode.SYN, Opcode.LIF, Opcode.PACK, Opcode.POOL, Opcode.ADD)


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


def simulate(image: ProgramImage, inputs: dict, *, functional: bool = False, progress: bool | None = None) -> SimResult:
    validate_image(image)
    hw = HwConfig.from_toml(image.hw_toml, source="prog.bin section hw_config")
    ctx = _Context(image, hw, functional)
    quantised = _write_inputs(ctx, image, inputs)
    program = decode_instructions(image)
    owners = attribute_layers(program)
    counters = [LayerCounters() for _ in image.layers]
    unattributed = LayerCounters()  # instructions of a program without tile instructions
    board = timing.Scoreboard()
    bar = _progress_bar(progress, len(program))
    executed = 0
    try:
        for i, (spec, fields) in enumerate(program):
            if spec.opcode == Opcode.HALT:
                break
            where = f"instruction {i} ({spec.mnemonic})"
            effect = HANDLERS[spec.opcode](ctx, where, SimpleNamespace(**fields))
            executed += 1
            owner = owners[i]
            if not functional and effect.engine != "none":
                timing.finish_compute(hw, effect)  # global-cache bank time
                before = board.makespan
                board.issue(effect.engine, effect.cycles, effect.reads, effect.writes)
                if effect.engine == "compute":
                    effect.stalls["dependency"] = board.last_wait
                (counters[owner] if owner >= 0 else unattributed).cycles += board.makespan - before
            (counters[owner] if owner >= 0 else unattributed).add(effect, spec.opcode, len(image.constants), hw)
            if bar is not None and i % 8 == 0:
                bar[0].update(bar[1], completed=i)
    finally:
        if bar is not None:
            bar[0].stop()
    outputs = {}
    for d in image.io:
        if d.is_output:
            raw = ctx.machine.dram.span(d.dram_addr, io_dram_bytes(d), f"io {d.name!r}").copy()
            outputs[d.name] = decode_output(d, raw)
    for idx, per_batch in enumerate(ctx.fired):
        for seen, fired in per_batch.values():
            counters[idx].neurons_seen += int(seen.sum()) * fired.shape[1] * fired.shape[2]
            counters[idx].neurons_fired += int(fired[seen].sum())
        counters[idx].saturations = int(ctx.saturations[idx])
        counters[idx].spike_input = Format(ctx.layers[idx].in_format) in SPIKE_FORMATS
    report = build_report(image, hw, counters, unattributed, executed=executed, functional=functional,
                          makespan=board.makespan, inputs_quantised=quantised)
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
