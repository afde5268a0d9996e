"""The simulator's fast paths against direct references (issue 6: speed without changing results).

The SYN product picks its kernel per weight tile and visit (sparse CSR on int16 / float32 /
float64, dense BLAS, numpy int64), caches decoded weight tiles while their SRAM bytes stay
the same, and caches window geometry per row-tile shape; LIF skips saturation checks while
magnitude bounds prove them unnecessary; DMA and bank timing are memoised per address
phase. Each test drives one of these paths with a hand-assembled program (progbuild) and
checks it against a direct computation.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from progbuild import Prog, param_block
from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Format, LayerKind, LeakForm, LifFlags, Opcode, ResetMode
from snnc.backend.errors import BinaryFormatError
from snnc.runtime import machine, memory, simulate, simulator

ACT_BYTES = {Format.SPIKE_PLANES: None, Format.ACT_I16: 2, Format.ACT_I32: 4}


def _out_size(size, k, stride, dil, pad_lo, pad_hi):
    return (size + pad_lo + pad_hi - dil * (k - 1) - 1) // stride + 1


def conv_acc_program(x_shape, weight_sets, bias, *, in_format=Format.SPIKE_PLANES, k=3, stride=1, dil=1,
                     pads=(1, 1, 1, 1), rows_per_tile=2, chs=None, weight_bytes=1):
    """A conv layer whose accumulator tiles are stored straight to DRAM outputs "acc<i>".

    x_shape [T, 1, Cin, H, W]; weight_sets: list of [Cout, Cin, k, k] integer arrays, all
    loaded in turn to the same SRAM weight address and run over every (row tile, channel
    block) visit, so later sets must replace the earlier ones' decoded tiles.
    """
    t, _b, cin, h, w = x_shape
    cout = weight_sets[0].shape[0]
    pt, pl, pb, pr = pads
    oh, ow = _out_size(h, k, stride, dil, pt, pb), _out_size(w, k, stride, dil, pl, pr)
    in_cs, out_cs = -(-cin // 8) * 8, -(-cout // 8) * 8
    chs = chs or out_cs
    kk = k * k * in_cs
    p = Prog(dram_size=1 << 21)
    lay = p.layer("conv", kind=LayerKind.CONV, timesteps=t, in_format=in_format, out_format=Format.SPIKE_PLANES,
                  leak=LeakForm.NONE, reset=ResetMode.SUBTRACT, in_c=cin, in_cs=in_cs, in_h=h, in_w=w,
                  out_c=cout, out_cs=out_cs, out_h=oh, out_w=ow, kh=k, kw=k, stride_h=stride, stride_w=stride,
                  dil_h=dil, dil_w=dil, pad_top=pt, pad_left=pl, pad_bottom=pb, pad_right=pr, param_c=1,
                  weight_bytes=weight_bytes)
    wdtype = np.int8 if weight_bytes == 1 else np.dtype("<i2")
    d_prm, d_in = 0, 4096
    block = param_block(bias, [1], [0], [0])
    p.const(d_prm, block)
    elem = ACT_BYTES[in_format]
    row_bytes = w * in_cs // 8 if elem is None else w * in_cs * elem
    p.tensor("x", False, x_shape, d_in, in_format)
    d_w = d_in + t * h * row_bytes
    for i, weights in enumerate(weight_sets):
        wt = np.zeros((out_cs, k, k, in_cs), dtype=wdtype)
        wt[:cout, :, :, :cin] = weights.transpose(0, 2, 3, 1)
        p.const(d_w + i * wt.nbytes, wt)
    d_out = d_w + len(weight_sets) * out_cs * kk * weight_bytes
    out_bytes = t * oh * ow * out_cs * 4
    for i in range(len(weight_sets)):
        p.tensor(f"acc{i}", True, (t, 1, cout, oh, ow), d_out + i * out_bytes, Format.ACT_I32)
    s_prm, s_w, s_in = 0, 1024, 1024 + chs * kk * weight_bytes
    s_acc = s_in + t * h * row_bytes
    p.load(d_prm, s_prm, block.nbytes)
    for i in range(len(weight_sets)):
        for ch0 in range(0, out_cs, chs):
            p.load(d_w + (i * out_cs + ch0) * kk * weight_bytes, s_w, chs * kk * weight_bytes)
            for row0 in range(0, oh, rows_per_tile):
                rows = min(rows_per_tile, oh - row0)
                lo = row0 * stride - pt
                hi = (row0 + rows - 1) * stride - pt + (k - 1) * dil
                in_row0, in_end = max(0, lo), min(h, hi + 1)
                in_rows = in_end - in_row0
                p.load(d_in + in_row0 * row_bytes, s_in, in_rows * row_bytes, rows=t, dram_stride=h * row_bytes,
                       sram_stride=in_rows * row_bytes)
                p.op(Opcode.SYN, layer=lay, batch=0, t0=0, nt=t, row0=row0, rows=rows, ch0=ch0, chs=chs,
                     in_row0=in_row0, in_rows=in_rows, flags=0, in_addr=s_in, w_addr=s_w, param_addr=s_prm,
                     acc_addr=s_acc)
                for lane in range(t):  # acc [nt][rows][Wo][chs] int32 -> output [T][H][W][Cs]
                    p.store(d_out + i * out_bytes + ((lane * oh + row0) * ow * out_cs + ch0) * 4,
                            s_acc + lane * rows * ow * chs * 4, chs * 4, rows=rows * ow,
                            dram_stride=out_cs * 4, sram_stride=chs * 4)
    return p.image()


def ref_conv_acc(x, weights, bias, *, k=3, stride=1, dil=1, pads=(1, 1, 1, 1)):
    """x [T, Cin, H, W] ints -> (acc [T, Cout, Ho, Wo], matched ops) by im2col in int64."""
    t, cin, h, w = x.shape
    pt, pl, pb, pr = pads
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh, ow = _out_size(h, k, stride, dil, pt, pb), _out_size(w, k, stride, dil, pl, pr)
    cols = np.stack([xp[:, :, ky * dil:ky * dil + (oh - 1) * stride + 1:stride,
                        kx * dil:kx * dil + (ow - 1) * stride + 1:stride]
                     for ky in range(k) for kx in range(k)], axis=2)  # [T, Cin, k*k, Ho, Wo]
    acc = np.zeros((t, weights.shape[0], oh, ow), dtype=np.int64)
    for ky, kx in itertools.product(range(k), range(k)):
        acc += np.einsum("tchw,nc->tnhw", cols[:, :, ky * k + kx], weights[:, :, ky, kx].astype(np.int64))
    lanes = (cols != 0).sum(axis=0)  # [Cin, k*k, Ho, Wo]: lanes with a value per window position
    nonzero_w = (weights != 0).reshape(weights.shape[0], cin, k * k)
    matched = int(np.einsum("cohw,nco->", lanes, nonzero_w.astype(np.int64)))
    return acc + np.asarray(bias, dtype=np.int64)[None, :, None, None], matched


def sparse_weights(rng, shape, density, high=7):
    values = rng.integers(-high, high + 1, size=shape)
    return np.where(rng.random(shape) < density, values, 0)


CONV_CASES = {
    # name: (in_format, input high, density, weight high, weight_bytes, geometry)
    "sparse-int16": (Format.SPIKE_PLANES, 1, 0.05, 7, 1, dict()),
    "dense-blas": (Format.SPIKE_PLANES, 1, 0.6, 7, 1, dict()),
    "dense-small-sparse-kernel": (Format.SPIKE_PLANES, 1, 0.6, 7, 1, dict()),
    "sparse-float32-16bit-weights": (Format.SPIKE_PLANES, 1, 0.05, 3000, 2, dict()),
    "sparse-float64-act-input": (Format.ACT_I16, 30000, 0.05, 7, 1, dict()),
    "dense-act-input": (Format.ACT_I16, 300, 0.6, 7, 1, dict()),
    "stride-dilation-asymmetric-pads": (Format.SPIKE_PLANES, 1, 0.05, 7, 1,
                                        dict(stride=2, dil=2, pads=(2, 1, 0, 3), rows_per_tile=1)),
    "channel-blocks": (Format.SPIKE_PLANES, 1, 0.05, 7, 1, dict(chs=20)),
    # 1x1, unit stride, unpadded: the patches are the input pixels (_pointwise_pixels)
    "pointwise-sparse": (Format.SPIKE_PLANES, 1, 0.05, 7, 1, dict(k=1, pads=(0, 0, 0, 0))),
    "pointwise-dense": (Format.SPIKE_PLANES, 1, 0.6, 7, 1, dict(k=1, pads=(0, 0, 0, 0))),
    "pointwise-act-input": (Format.ACT_I16, 300, 0.6, 7, 1, dict(k=1, pads=(0, 0, 0, 0), rows_per_tile=1)),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
@pytest.mark.parametrize("functional", [True, False])
@pytest.mark.parametrize("patches", ["take", "strided"])
def test_conv_visits_match_direct_convolution(case, functional, patches, monkeypatch):
    monkeypatch.setattr(simulator, "STRIDED_PATCHES_MIN_WIDTH", 1 if patches == "strided" else 1 << 16)
    if case in ("dense-blas", "dense-act-input"):  # a dense product on every BLAS thread
        monkeypatch.setattr(simulator, "BLAS_MIN_MACS", 0)
    if case == "dense-small-sparse-kernel":  # a dense tile through the sparse kernel
        monkeypatch.setattr(simulator, "SPARSE_MAX_DENSITY", 1.0)
    in_format, x_high, density, w_high, weight_bytes, geometry = CONV_CASES[case]
    rng = np.random.default_rng(sorted(CONV_CASES).index(case))
    t, cin, cout, h, w = 3, 60, 36, 7, 6  # out_cs 40: 4 padding channels
    if in_format == Format.SPIKE_PLANES:
        x = (rng.random((t, 1, cin, h, w)) < 0.3).astype(np.float32)
    else:
        x = rng.integers(-x_high, x_high + 1, size=(t, 1, cin, h, w)).astype(np.float32)
        x[rng.random(x.shape) < 0.5] = 0
    weights = sparse_weights(rng, (cout, cin, geometry.get("k", 3), geometry.get("k", 3)), density, w_high)
    bias = rng.integers(-5, 6, size=cout)
    image = conv_acc_program(x.shape, [weights], bias, in_format=in_format, weight_bytes=weight_bytes, **geometry)
    res = simulate(image, {"x": x}, functional=functional)
    ref_geometry = {key: value for key, value in geometry.items() if key in ("k", "stride", "dil", "pads")}
    expected, matched = ref_conv_acc(x[:, 0], weights, bias, **ref_geometry)
    np.testing.assert_array_equal(res.outputs["acc0"][:, 0], expected)
    if not functional:
        layer = res.report["layers"][0]
        assert layer["sops" if in_format == Format.SPIKE_PLANES else "macs"] == matched


@pytest.mark.parametrize("patches", ["take", "strided"])
def test_huge_products_use_int64_and_saturate_the_accumulator(patches, monkeypatch):
    """|x| ~ 2**30 times 16-bit weights over K = 540 needs more than float64's 53 bits: the
    int64 product, then the 32-bit accumulator clamps (and counts) as the ISA says."""
    monkeypatch.setattr(simulator, "STRIDED_PATCHES_MIN_WIDTH", 1 if patches == "strided" else 1 << 16)
    rng = np.random.default_rng(3)
    t, cin, cout, h, w = 2, 60, 12, 4, 4
    x = rng.integers(-(1 << 30), 1 << 30, size=(t, 1, cin, h, w)).astype(np.float64)
    x[rng.random(x.shape) < 0.3] = 0
    weights = sparse_weights(rng, (cout, cin, 3, 3), 0.2, (1 << 15) - 1)
    weights[0, 0, 1, 1] = (1 << 15) - 1  # the bound's maximum weight really occurs
    bias = np.zeros(cout, dtype=np.int64)
    image = conv_acc_program(x.shape, [weights], bias, in_format=Format.ACT_I32, weight_bytes=2)
    res = simulate(image, {"x": x}, functional=True)
    exact, _ = ref_conv_acc(x[:, 0].astype(np.int64), weights, bias)
    expected = np.clip(exact, -(1 << 31), (1 << 31) - 1)
    np.testing.assert_array_equal(res.outputs["acc0"][:, 0], expected.astype(np.float32))  # outputs are float32
    assert res.report["layers"][0]["saturations"] == int(np.count_nonzero(expected != exact)) > 0


def test_without_scipy_every_tile_takes_the_exact_dense_product(monkeypatch):
    monkeypatch.setattr(simulator, "_CSR_ARRAY", None)  # as if scipy were not installed
    test_conv_visits_match_direct_convolution("sparse-int16", False, "take", monkeypatch)


def test_weight_reload_at_the_same_address_is_seen():
    """The decoded-weight cache must follow the SRAM bytes: new weights at the same w_addr,
    same layer and channel block, give the new results."""
    rng = np.random.default_rng(11)
    t, cin, cout, h, w = 2, 32, 16, 4, 4
    x = (rng.random((t, 1, cin, h, w)) < 0.4).astype(np.float32)
    first, second = (sparse_weights(rng, (cout, cin, 3, 3), 0.1) for _ in range(2))
    bias = np.zeros(cout, dtype=np.int64)
    res = simulate(conv_acc_program(x.shape, [first, second, first], bias), {"x": x}, functional=True)
    for name, weights in (("acc0", first), ("acc1", second), ("acc2", first)):
        np.testing.assert_array_equal(res.outputs[name][:, 0], ref_conv_acc(x[:, 0], weights, bias)[0])


def dense_lif_program(currents, thr, leak, v_reset, *, leak_form, reset, flags, leak_frac, membrane_bits):
    """One neuron layer fed by an ACT_I32 input through a 1x1 identity synapse: current[t][n].
    thr, leak, v_reset: one value per neuron, or one value for all (param_c = 1)."""
    t, n = currents.shape
    param_c = len(thr)
    hw = HwConfig.from_toml(f"[compute]\nmembrane_bits = {membrane_bits}\ntimestep_lanes = {t}\n")
    p = Prog(hw=hw)
    lay = p.layer("lif", kind=LayerKind.CONV, timesteps=t, in_format=Format.ACT_I32, out_format=Format.SPIKE_PLANES,
                  leak=leak_form, reset=reset, lif_flags=flags | (LifFlags.PER_CHANNEL if param_c > 1 else 0),
                  in_c=n, in_cs=8, in_h=1, in_w=1, out_c=n, out_cs=8, out_h=1, out_w=1, leak_frac=leak_frac,
                  param_c=param_c)
    p.const(0, np.eye(8, dtype=np.int8))
    block = param_block(np.zeros(n), thr, leak, v_reset)
    p.const(64, block)
    p.tensor("x", False, (t, 1, n), 256, Format.ACT_I32)
    p.tensor("spk", True, (t, 1, n), 1024, Format.SPIKE_PLANES)
    p.tensor("mem", True, (t, 1, n), 2048, Format.ACT_I32)
    s_in, s_w, s_prm, s_acc, s_st, s_spk, s_out, s_mem = 0, 256, 512, 1024, 1536, 2048, 2304, 2560
    p.load(256, s_in, 32 * t)
    p.load(0, s_w, 64)
    p.load(64, s_prm, block.nbytes)
    tile = dict(layer=lay, batch=0, t0=0, nt=t, row0=0, rows=1, ch0=0, chs=8)
    p.op(Opcode.SYN, **tile, in_row0=0, in_rows=1, flags=0, in_addr=s_in, w_addr=s_w, param_addr=s_prm,
         acc_addr=s_acc)
    p.op(Opcode.LIF, **tile, acc_addr=s_acc, param_addr=s_prm, state_addr=s_st, spk_addr=s_spk, mem_addr=s_mem)
    p.op(Opcode.PACK, **tile, spk_addr=s_spk, out_addr=s_out)
    p.store(1024, s_out, t)
    p.store(2048, s_mem, 32 * t)
    return p.image()


def ref_lif_saturating(current, thr, leak, v_reset, *, leak_form, reset, flags, leak_frac, bits):
    """Scalar reference of the integer LIF with the membrane clamped to `bits` after the
    integration and after the reset; returns (spikes, trace, clamp count)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    v, s_prev, spikes, trace, clamps = 0, 0, [], [], 0

    def clamp(value):
        nonlocal clamps
        clamps += not lo <= value <= hi
        return min(max(value, lo), hi)

    for i in current:
        if flags & LifFlags.DELAYED_RESET and reset == ResetMode.ZERO:
            v = 0 if s_prev else v
        if leak_form == LeakForm.NONE:
            h = v + i
        elif leak_form == LeakForm.BETA:
            h = ((v * leak) >> leak_frac) + i
        else:
            h = v + (((i - (v - v_reset)) * leak) >> leak_frac)
        if flags & LifFlags.DELAYED_RESET and reset == ResetMode.SUBTRACT:
            h -= s_prev * thr
        h = clamp(h)
        s = int(h > thr) if flags & LifFlags.COMPARE_GT else int(h >= thr)
        if flags & LifFlags.DELAYED_RESET:
            v = h
        elif reset == ResetMode.SUBTRACT:
            v = h - s * thr
        elif reset == ResetMode.ZERO:
            v = 0 if s else h
        else:
            v = v_reset if s else h
        v = clamp(v)
        s_prev = s
        spikes.append(s)
        trace.append(v)
    return spikes, trace, clamps


@pytest.mark.parametrize("leak_form,reset,flags,shared", list(itertools.product(
    [LeakForm.NONE, LeakForm.BETA, LeakForm.TAU],
    [ResetMode.SUBTRACT, ResetMode.ZERO, ResetMode.TO_VALUE],
    [0, LifFlags.DELAYED_RESET], [False, True])))
def test_lif_saturation_paths(leak_form, reset, flags, shared):
    """A 12-bit membrane driven past its range (and one neuron that stays inside it): the
    clamps, spikes, membranes and the saturation count follow the reference exactly, with
    parameters per channel or one set for all (param_c = 1, the lanes' scalar operands)."""
    bits, t = 12, 8
    rng = np.random.default_rng(int(leak_form) * 16 + int(reset) * 4 + int(flags))
    currents = rng.integers(-3000, 3000, size=(t, 3))
    currents[:, 2] = rng.integers(-20, 20, size=t)  # within range: the bound lets LIF skip the clamp
    thr, leak, v_reset = ([1500], [200], [-300]) if shared else ([1500, -900, 40], [200, 96, 128], [-300, 7, 5])
    lif = dict(leak_form=leak_form, reset=reset, flags=flags, leak_frac=8)
    image = dense_lif_program(currents, thr, leak, v_reset, membrane_bits=bits, **lif)
    res = simulate(image, {"x": currents.reshape(t, 1, 3).astype(np.float32)}, functional=True)
    total_clamps = 0
    for n in range(3):
        p = 0 if shared else n
        s, v, clamps = ref_lif_saturating([int(c) for c in currents[:, n]], thr[p], leak[p], v_reset[p],
                                          bits=bits, **lif)
        np.testing.assert_array_equal(res.outputs["spk"][:, 0, n], s)
        np.testing.assert_array_equal(res.outputs["mem"][:, 0, n], v)
        total_clamps += clamps
    assert res.report["layers"][0]["saturations"] == total_clamps


def test_memoised_dma_and_bank_cycles_match_the_direct_model():
    hw = HwConfig()
    rng = np.random.default_rng(5)
    for _ in range(200):
        addr, rows, row_bytes, stride = (int(v) for v in rng.integers([0, 0, 0, 0], [1 << 20, 40, 700, 5000]))
        starts = addr + np.arange(rows, dtype=np.int64) * stride
        assert memory.strided_dma_cycles(hw, addr, rows, row_bytes, stride) == memory.dma_cycles(hw, starts, row_bytes)
        ranges = [(int(lo), int(lo + n)) for lo, n in zip(rng.integers(0, 1 << 18, 3), rng.integers(-5, 3000, 3))]
        extra = int(rng.integers(0, 5000))
        per = memory.interleaved_bytes([lo for lo, hi in ranges if hi > lo],
                                       [hi - lo for lo, hi in ranges if hi > lo], hw.sram.port_bytes, hw.sram.banks)
        worst = int(per.max()) + math.ceil(extra / hw.sram.banks)
        total = int(per.sum()) + extra
        assert memory.bank_cycles(hw, ranges, extra) == (
            math.ceil(worst / hw.sram.port_bytes), math.ceil(total / (hw.sram.port_bytes * hw.sram.banks)))


@pytest.mark.parametrize("in_format", [Format.SPIKE_PLANES, Format.ACT_I16, Format.ACT_I32])
def test_maxpool_padding_never_wins_and_all_padding_windows_are_zero(in_format):
    """Max-pool pads with the minimum of a type wider than the stored one: the most negative
    stored value still beats the padding, and a window wholly in the padding gives 0."""
    from test_runtime import pool_program

    rng = np.random.default_rng(int(in_format))
    t, low = 2, {Format.SPIKE_PLANES: 0, Format.ACT_I16: -(1 << 15), Format.ACT_I32: -(1 << 31)}[in_format]
    if in_format == Format.SPIKE_PLANES:
        x = (rng.random((t, 1, 8, 4, 4)) < 0.3).astype(np.float64)
    else:
        x = np.full((t, 1, 8, 4, 4), float(low))
        x[rng.random(x.shape) < 0.2] = low + 1
    # 2x2 windows, stride 3, padding 2: the first row/column of windows lies wholly in the padding
    image = pool_program(LayerKind.MAXPOOL, in_format, Format.ACT_I32, k=2, stride=3, pad=2)
    res = simulate(image, {"x": x}, functional=True)
    padded = np.pad(x[:, 0], ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-np.inf)
    windows = np.stack([padded[:, :, ky:ky + 7:3, kx:kx + 7:3] for ky in range(2) for kx in range(2)])
    expected = windows.max(axis=0)
    expected[np.isneginf(expected)] = 0
    np.testing.assert_array_equal(res.outputs["y"][:, 0], expected.astype(np.float32))


def _walk_one_by_one(mem, addr, n, elems, eb, where):
    """The plain fiber walk: read each header, check its count against its bitmask, step on."""
    meta = 4 + (elems + 7) // 8
    starts, counts, at = [], [], addr
    for i in range(n):
        head = mem.span(at, meta, f"{where} (fiber {i})")
        count = int(head[:4].view("<u4")[0])
        bits = int(np.unpackbits(head[4:], bitorder="little")[:elems].sum())
        if bits != count:
            raise BinaryFormatError(f"{where}: fiber {i} pointer/count {count} disagrees with its bitmask "
                                    f"({bits} bits set)")
        starts.append(at)
        counts.append(count)
        at += meta + (count * eb + 7) // 8
    mem.span(addr, at - addr, where)
    return starts, counts, at


def _outcome(fn):
    try:
        return fn()
    except BinaryFormatError as exc:
        return str(exc)


def test_fiber_walk_matches_the_fiber_by_fiber_walk():
    """The fiber walk (one 4-byte read per fiber, the bitmasks checked in one pass) gives the
    starts, counts, bitmask bits and the first error of a fiber-by-fiber walk, also when a
    wrong count derails it past the end of the memory."""
    rng = np.random.default_rng(21)
    for trial in range(300):
        elems, eb = int(rng.integers(1, 40)), int(rng.choice([1, 4, 8, 16]))
        n = int(rng.integers(0, 12))
        blob = []
        for _ in range(n):
            keep = rng.random(elems) < rng.random()
            data = rng.integers(0, 256, size=(int(keep.sum()) * eb + 7) // 8, dtype=np.uint8)
            blob += [np.array([int(keep.sum())], "<u4").view(np.uint8), np.packbits(keep, bitorder="little"), data]
        raw = np.concatenate(blob) if blob else np.zeros(0, dtype=np.uint8)
        mem = machine.Memory("SRAM", int(raw.size + rng.integers(0, 40)))
        addr = int(rng.integers(0, mem.data.size - raw.size + 1))
        mem.data[addr:addr + raw.size] = raw
        if n and trial % 3:  # corrupt a count, a bitmask byte or a byte past the end of the bitmask
            at = int(rng.choice(np.flatnonzero(raw != 255) if (raw != 255).any() else [0]))
            mem.data[addr + at] ^= np.uint8(1 << int(rng.integers(0, 8)))
        ref = _outcome(lambda: _walk_one_by_one(mem, addr, n, elems, eb, "here"))
        got = _outcome(lambda: simulator._walk_fibers(mem, addr, n, elems, eb, "here"))
        if isinstance(ref, str):
            assert got == ref
            continue
        starts, counts, end = ref
        assert (got.starts.tolist(), got.counts.tolist(), got.end) == (starts, counts, end)
        dense = np.unpackbits(mem.data[np.asarray(starts, dtype=np.int64)[:, None] + 4 + np.arange((elems + 7) // 8)],
                              axis=1, count=elems, bitorder="little") if n else np.zeros((0, elems), np.uint8)
        np.testing.assert_array_equal(got.set_bits(elems), np.flatnonzero(dense))


def test_a_simulated_image_that_changes_is_prepared_again():
    """simulate keeps what it derives from an image (decoded instructions, decoded weight tiles)
    for the image's next simulation: a second run is the same, and a change to any section of
    the image afterwards is seen (new weights give the new results; broken instructions the error)."""
    rng = np.random.default_rng(12)
    t, cin, cout, h, w = 2, 32, 16, 4, 4
    x = (rng.random((t, 1, cin, h, w)) < 0.4).astype(np.float32)
    first, second = (sparse_weights(rng, (cout, cin, 3, 3), 0.1) for _ in range(2))
    bias = np.zeros(cout, dtype=np.int64)
    image = conv_acc_program(x.shape, [first], bias)
    runs = [simulate(image, {"x": x}) for _ in range(2)]
    assert runs[0].report == runs[1].report
    np.testing.assert_array_equal(runs[1].outputs["acc0"][:, 0], ref_conv_acc(x[:, 0], first, bias)[0])
    image.constants = conv_acc_program(x.shape, [second], bias).constants  # same layout, other weights
    np.testing.assert_array_equal(simulate(image, {"x": x}, functional=True).outputs["acc0"][:, 0],
                                  ref_conv_acc(x[:, 0], second, bias)[0])
    image.instructions = image.instructions[:-1]  # no longer whole instructions
    with pytest.raises(BinaryFormatError):
        simulate(image, {"x": x})


@pytest.mark.parametrize("seed", range(4))
def test_lif_lanes_in_int32_match_int64(seed, monkeypatch):
    """LIF runs its lanes in int32 while `_lif_peak` bounds every value inside it: random
    parameters and currents around that limit give what the int64 lanes give."""
    rng = np.random.default_rng(100 + seed)
    cases = []
    for _ in range(40):
        t, n = int(rng.integers(1, 9)), 3
        mag = int(rng.choice([1000, 1 << 20, 1 << 28, (1 << 31) - 1]))
        pm = int(rng.choice([2, 1 << 16, 1 << 30, (1 << 31) - 1]))
        lif = {"leak_form": LeakForm(int(rng.integers(0, 3))), "reset": ResetMode(int(rng.integers(0, 3))),
               "flags": int(rng.choice([0, LifFlags.DELAYED_RESET, LifFlags.COMPARE_GT])),
               "leak_frac": int(rng.integers(0, 20)), "membrane_bits": int(rng.choice([12, 24, 32]))}
        currents = rng.integers(-mag, mag, size=(t, n))
        params = [[int(v) for v in rng.integers(-pm, pm, int(rng.choice([1, n])))] for _ in range(3)]
        params = [values[:min(len(p) for p in params)] for values in params]  # all per channel, or all shared
        cases.append((dense_lif_program(currents, *params, **lif), {"x": currents.reshape(t, 1, n).astype(np.float32)}))
    narrow = [simulate(image, inputs, functional=True) for image, inputs in cases]
    monkeypatch.setattr(simulator, "INT32_MAX", -1)  # no bound fits: every lane in int64
    for (image, inputs), ours in zip(cases, narrow):
        wide = simulate(image, inputs, functional=True)
        for name in wide.outputs:
            np.testing.assert_array_equal(ours.outputs[name], wide.outputs[name])
        assert ours.report["layers"][0]["saturations"] == wide.report["layers"][0]["saturations"]
