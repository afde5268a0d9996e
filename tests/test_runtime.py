"""Simulator tests on hand-assembled programs, checked exactly against numpy/Python references."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from progbuild import Prog, param_block, ref_lif
from snnc.backend import isa
from snnc.backend.errors import BinaryFormatError, InputError
from snnc.backend.isa import Format, LayerKind, LeakForm, LifFlags, Opcode, ResetMode
from snnc.runtime import load_program, simulate, write_report_json
from snnc.runtime import timing
from snnc.backend.binformat import write_program
from snnc.backend.hwconfig import HwConfig

# SRAM map used by the dense programs
IN, WT, PRM, ACC, ST, SPK, OUT, MEM = 0, 64, 192, 256, 512, 768, 832, 1024
# DRAM map
D_W, D_PRM, D_IN, D_OUT, D_MEM = 0, 64, 256, 320, 384


def dense_program(weights, bias, thr, leak, v_reset, *, t=4, in_format=Format.SPIKE_PLANES, in_frac=0,
                  leak_form=LeakForm.NONE, reset=ResetMode.SUBTRACT, flags=0, leak_frac=0,
                  acc_shift=0, visits=None, hw=None):
    """A dense layer (1x1 conv on a 1x1 image) with 3 inputs and 2 neurons, outputs spikes + membrane."""
    weights = np.asarray(weights)
    out_c, in_c = weights.shape
    p = Prog(hw=hw)
    param_c = len(np.atleast_1d(thr))
    lay = p.layer("fc", kind=LayerKind.CONV, timesteps=t, in_format=in_format, out_format=Format.SPIKE_PLANES,
                  leak=leak_form, reset=reset, lif_flags=flags, in_c=in_c, in_cs=8, in_h=1, in_w=1,
                  out_c=out_c, out_cs=8, out_h=1, out_w=1, in_frac=in_frac, acc_shift=acc_shift,
                  leak_frac=leak_frac, param_c=param_c)
    w = np.zeros((8, 8), dtype=np.int8)
    w[:out_c, :in_c] = weights
    p.const(D_W, w)
    block = param_block(bias, thr, leak, v_reset)
    p.const(D_PRM, block)
    p.tensor("x", False, (t, 1, in_c), D_IN, in_format, in_frac)
    p.tensor("spk", True, (t, 1, out_c), D_OUT, Format.SPIKE_PLANES)
    p.tensor("mem", True, (t, 1, out_c), D_MEM, Format.ACT_I32)
    in_bytes = {Format.SPIKE_PLANES: t, Format.SPIKE_WORDS: 8 * isa.spike_word_bytes(t),
                Format.ACT_I16: 16 * t, Format.ACT_I32: 32 * t}[in_format]
    p.load(D_IN, IN, in_bytes)
    p.load(D_W, WT, 64)
    p.load(D_PRM, PRM, block.nbytes)
    for t0, nt in visits or [(0, t)]:
        tile = dict(layer=lay, batch=0, t0=t0, nt=nt, row0=0, rows=1, ch0=0, chs=8)
        if in_format == Format.SPIKE_PLANES:
            in_addr = IN + t0
        elif in_format == Format.SPIKE_WORDS:
            in_addr = IN
        else:
            in_addr = IN + t0 * in_bytes // t
        p.op(Opcode.SYN, **tile, in_row0=0, in_rows=1, flags=0, in_addr=in_addr, w_addr=WT,
             param_addr=PRM, acc_addr=ACC)
        p.op(Opcode.LIF, **tile, acc_addr=ACC, param_addr=PRM, state_addr=ST, spk_addr=SPK, mem_addr=MEM)
        p.op(Opcode.PACK, **tile, spk_addr=SPK, out_addr=OUT)
        p.store(D_OUT + t0, OUT, nt)  # SPIKE_PLANES: one byte (8 channels) per timestep
        p.store(D_MEM + 32 * t0, MEM, 32 * nt)
    return p.image()


SPIKES_IN = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1]], dtype=np.float32).reshape(4, 1, 3)
W_DENSE = np.array([[3, -2, 5], [-4, 7, 2]])


def expected_dense(x, weights, bias, thr, leak, v_reset, **lif):
    """Reference: per-neuron synaptic current per step, then the scalar LIF."""
    current = (x.reshape(x.shape[0], -1).astype(np.int64) @ weights.T) + np.asarray(bias)
    spikes, mem = [], []
    for n in range(weights.shape[0]):
        pick = (lambda a: int(np.atleast_1d(a)[n if np.size(a) > 1 else 0]))
        s, v = ref_lif([int(c) for c in current[:, n]], pick(thr), pick(leak), pick(v_reset), **lif)
        spikes.append(s)
        mem.append(v)
    return np.array(spikes).T, np.array(mem).T


def test_dense_subtract_reset_exact():
    image = dense_program(W_DENSE, [1, 2], [4, 4], [0, 0], [0, 0])
    res = simulate(image, {"x": SPIKES_IN})
    s, v = expected_dense(SPIKES_IN, W_DENSE, [1, 2], [4, 4], [0, 0], [0, 0], leak_form=LeakForm.NONE,
                          reset=ResetMode.SUBTRACT, flags=0, leak_frac=0)
    # by hand: neuron 0 currents 4, 6, 4, 6 -> spikes 1,1,1,1 ; neuron 1 currents -2, 4, -2, 4 -> v -2, 2(0 spk), 0, 4 -> 0,0,0,1
    assert s[:, 0].tolist() == [1, 1, 1, 1]
    assert s[:, 1].tolist() == [0, 0, 0, 1]
    np.testing.assert_array_equal(res.outputs["spk"], s.reshape(4, 1, 2).astype(np.float32))
    np.testing.assert_array_equal(res.outputs["mem"], v.reshape(4, 1, 2).astype(np.float32))
    assert res.outputs["spk"].dtype == np.float32 and res.outputs["spk"].shape == (4, 1, 2)


HW_8_LANES = HwConfig.from_toml("[compute]\ntimestep_lanes = 8\n")

LIF_COMBOS = list(itertools.product(
    [LeakForm.NONE, LeakForm.BETA, LeakForm.TAU],
    [ResetMode.SUBTRACT, ResetMode.ZERO, ResetMode.TO_VALUE],
    [0, LifFlags.COMPARE_GT, LifFlags.DELAYED_RESET, LifFlags.COMPARE_GT | LifFlags.DELAYED_RESET],
))


@pytest.mark.parametrize("leak_form,reset,flags", LIF_COMBOS)
def test_lif_every_combination(leak_form, reset, flags):
    t = 8
    rng = np.random.default_rng(int(leak_form) * 16 + int(reset) * 4 + int(flags))
    x = (rng.random((t, 1, 3)) < 0.6).astype(np.float32)
    weights = np.array([[40, -13, 25], [-30, 50, 17]])
    # membrane with 4 fractional bits, leak 0.75 / inv-tau 0.25 in 8 bits, per-channel thresholds
    thr, leak, v_reset = [48, 32], [192, 64], [-8, 5]
    lif = dict(leak_form=leak_form, reset=reset, flags=flags, leak_frac=8)
    image = dense_program(weights, [3, -1], thr, leak, v_reset, t=t, leak_frac=8, leak_form=leak_form,
                          reset=reset, flags=flags | LifFlags.PER_CHANNEL, hw=HW_8_LANES)
    s, v = expected_dense(x, weights, [3, -1], thr, leak, v_reset, **lif)
    res = simulate(image, {"x": x}, functional=True)
    np.testing.assert_array_equal(res.outputs["spk"].reshape(t, 2), s)
    np.testing.assert_array_equal(res.outputs["mem"].reshape(t, 2), v)


def test_split_visits_carry_state():
    """Two visits of 2 lanes each reproduce one visit of 4 lanes (state kept in SRAM)."""
    kwargs = dict(leak_form=LeakForm.BETA, reset=ResetMode.SUBTRACT, flags=LifFlags.DELAYED_RESET, leak_frac=4)
    whole = simulate(dense_program(W_DENSE, [1, 2], [3], [12], [0], **kwargs), {"x": SPIKES_IN})
    split = simulate(dense_program(W_DENSE, [1, 2], [3], [12], [0], visits=[(0, 2), (2, 2)], **kwargs),
                     {"x": SPIKES_IN})
    for name in ("spk", "mem"):
        np.testing.assert_array_equal(whole.outputs[name], split.outputs[name])
    s, v = expected_dense(SPIKES_IN, W_DENSE, [1, 2], [3], [12], [0], **kwargs)
    np.testing.assert_array_equal(whole.outputs["mem"].reshape(4, 2), v)


def test_spike_words_input_and_acc_shift():
    kwargs = dict(leak_form=LeakForm.NONE, reset=ResetMode.ZERO, flags=0, leak_frac=0)
    image = dense_program(W_DENSE, [1, 2], [16], [0], [0], in_format=Format.SPIKE_WORDS, acc_shift=2,
                          **{k: v for k, v in kwargs.items()})
    res = simulate(image, {"x": SPIKES_IN})
    current_scaled = lambda c: c << 2  # acc_shift = 2
    cur = (SPIKES_IN.reshape(4, 3).astype(np.int64) @ W_DENSE.T) + [1, 2]
    s0, v0 = ref_lif([current_scaled(int(c)) for c in cur[:, 0]], 16, 0, 0, **kwargs)
    np.testing.assert_array_equal(res.outputs["spk"].reshape(4, 2)[:, 0], s0)
    np.testing.assert_array_equal(res.outputs["mem"].reshape(4, 2)[:, 0], v0)


def test_multibit_input_quantisation_and_macs():
    x = np.array([0.5, -1.25, 2.0, 0.3], dtype=np.float32)[:, None, None] * np.array([1, 2, -1])
    image = dense_program(W_DENSE, [0, 0], [1 << 20], [0], [0], in_format=Format.ACT_I16, in_frac=2)
    res = simulate(image, {"x": x.astype(np.float32)})
    q = np.rint(x.astype(np.float64) * 4).astype(np.int64).reshape(4, 3)  # half-even rounding
    expected_v = np.cumsum(q @ W_DENSE.T, axis=0)  # no leak, nothing fires
    np.testing.assert_array_equal(res.outputs["mem"].reshape(4, 2), expected_v)
    assert res.report["inputs_quantised"] is True  # 0.3 * 4 is not an integer
    # MACs: nonzero inputs per step (all 3 unless q == 0) x nonzero weights (all 6 here)
    assert res.report["layers"][0]["macs"] == int(np.count_nonzero(q) * 2)
    assert res.report["layers"][0]["silent_ratio"] is None


def conv_program(x_shape, weights, *, pad=1, row_tiles=((0, 2), (2, 2))):
    """3x3 conv, stride 1, padding `pad`, spike input [T,1,Cin,4,4]; two row tiles with halos."""
    t, _b, cin, h, w = x_shape
    cout = weights.shape[0]
    p = Prog(dram_size=16384)
    lay = p.layer("conv", kind=LayerKind.CONV, timesteps=t, in_format=Format.SPIKE_PLANES,
                  out_format=Format.SPIKE_PLANES, leak=LeakForm.NONE, reset=ResetMode.SUBTRACT,
                  in_c=cin, in_cs=8, in_h=h, in_w=w, out_c=cout, out_cs=8, out_h=h, out_w=w,
                  kh=3, kw=3, pad_top=pad, pad_left=pad, pad_bottom=pad, pad_right=pad, param_c=1)
    wt = np.zeros((8, 3, 3, 8), dtype=np.int8)
    wt[:cout, :, :, :cin] = weights.transpose(0, 2, 3, 1)
    p.const(0, wt)
    block = param_block(np.arange(cout) - 1, [3], [0], [0])
    p.const(1024, block)
    d_in, d_out, d_mem = 2048, 3072, 4096
    p.tensor("x", False, x_shape, d_in, Format.SPIKE_PLANES)
    p.tensor("y", True, (t, 1, cout, h, w), d_out, Format.SPIKE_PLANES)
    p.tensor("v", True, (t, 1, cout, h, w), d_mem, Format.ACT_I32)
    row_bytes = w * 8 // 8  # one image row of spikes: W x 8 channels bits
    plane = h * row_bytes
    s_w, s_prm, s_in, s_acc, s_st, s_spk, s_out, s_mem = 0, 1024, 1200, 2048, 4096, 6144, 6400, 8192
    p.load(0, s_w, wt.nbytes)
    p.load(1024, s_prm, block.nbytes)
    for row0, rows in row_tiles:
        in_row0 = max(0, row0 - pad)
        in_end = min(h, row0 + rows - 1 - pad + 3)
        in_rows = in_end - in_row0
        p.load(d_in + in_row0 * row_bytes, s_in, in_rows * row_bytes, rows=t, dram_stride=plane,
               sram_stride=in_rows * row_bytes)
        tile = dict(layer=lay, batch=0, t0=0, nt=t, row0=row0, rows=rows, ch0=0, chs=8)
        p.op(Opcode.SYN, **tile, in_row0=in_row0, in_rows=in_rows, flags=0, in_addr=s_in, w_addr=s_w,
             param_addr=s_prm, acc_addr=s_acc)
        p.op(Opcode.LIF, **tile, acc_addr=s_acc, param_addr=s_prm, state_addr=s_st, spk_addr=s_spk, mem_addr=s_mem)
        p.op(Opcode.PACK, **tile, spk_addr=s_spk, out_addr=s_out)
        p.store(d_out + row0 * row_bytes, s_out, rows * row_bytes, rows=t, dram_stride=plane,
                sram_stride=rows * row_bytes)
        p.store(d_mem + row0 * w * 8 * 4, s_mem, rows * w * 8 * 4, rows=t, dram_stride=h * w * 8 * 4,
                sram_stride=rows * w * 8 * 4)
    return p.image()


def ref_conv(x, weights, bias, pad):
    """Direct convolution, x [T,Cin,H,W] ints, weights [Cout,Cin,3,3]."""
    t, cin, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((t, weights.shape[0], h, w), dtype=np.int64)
    for ky in range(3):
        for kx in range(3):
            out += np.einsum("tchw,oc->tohw", xp[:, :, ky:ky + h, kx:kx + w], weights[:, :, ky, kx])
    return out + np.asarray(bias)[None, :, None, None]


def test_conv3x3_padding_and_row_tiles():
    rng = np.random.default_rng(7)
    t, cin, cout = 3, 2, 3
    x = (rng.random((t, 1, cin, 4, 4)) < 0.5).astype(np.float32)
    weights = rng.integers(-4, 5, size=(cout, cin, 3, 3))
    res = simulate(conv_program(x.shape, weights), {"x": x})
    current = ref_conv(x[:, 0].astype(np.int64), weights, np.arange(cout) - 1, 1)
    v = np.zeros(current.shape[1:], dtype=np.int64)
    spikes, mem = [], []
    for step in range(t):  # IF neuron, threshold 3, subtract reset
        h_ = v + current[step]
        s = (h_ >= 3).astype(np.int64)
        v = h_ - 3 * s
        spikes.append(s)
        mem.append(v)
    np.testing.assert_array_equal(res.outputs["y"][:, 0], np.array(spikes))
    np.testing.assert_array_equal(res.outputs["v"][:, 0], np.array(mem))
    # every input neuron is seen; the silent ones never fire in any step
    silent = 1 - x[:, 0].any(axis=0).mean()
    assert res.report["layers"][0]["silent_ratio"] == pytest.approx(silent)


def test_missing_input_row_is_an_error():
    weights = np.ones((1, 1, 3, 3), dtype=np.int64)
    image = conv_program((1, 1, 1, 4, 4), weights, row_tiles=((0, 4),))
    # claim the tile holds only rows 0..1 although rows 0..3 are needed
    code = bytearray(image.instructions)
    for i in range(len(code) // isa.INSTRUCTION_BYTES):
        raw = bytes(code[i * 48:(i + 1) * 48])
        spec, f = isa.decode_instruction(raw)
        if spec.opcode == Opcode.SYN:
            f["in_rows"] = 2
            code[i * 48:(i + 1) * 48] = isa.encode_instruction(Opcode.SYN, **f)
    image.instructions = bytes(code)
    with pytest.raises(BinaryFormatError, match=r"instruction \d+ \(syn\)\.in_rows"):
        simulate(image, {"x": np.zeros((1, 1, 1, 4, 4), np.float32)}, functional=True)


def pool_program(kind, in_format, out_format, *, k=2, stride=2, pad=0, flags=0, avg_recip=1, avg_shift=0,
                 in_frac=0, out_frac=0, t=2):
    p = Prog()
    h = w = 4
    oh = (h + 2 * pad - k) // stride + 1
    lay = p.layer("pool", kind=kind, timesteps=t, in_format=in_format, out_format=out_format,
                  in_c=8, in_cs=8, in_h=h, in_w=w, out_c=8, out_cs=8, out_h=oh, out_w=oh, kh=k, kw=k,
                  stride_h=stride, stride_w=stride, pad_top=pad, pad_left=pad, pad_bottom=pad, pad_right=pad,
                  in_frac=in_frac, out_frac=out_frac, avg_recip=avg_recip, avg_shift=avg_shift, flags=flags)
    p.tensor("x", False, (t, 1, 8, h, w), 0, in_format, in_frac)
    in_bytes = isa.tile_bytes(in_format, t, h * w * 8, t)
    out_bytes = isa.tile_bytes(out_format, t, oh * oh * 8, t)
    p.tensor("y", True, (t, 1, 8, oh, oh), 4096, out_format, out_frac)
    p.load(0, 0, in_bytes)
    p.op(Opcode.POOL, layer=lay, batch=0, t0=0, nt=t, row0=0, rows=oh, ch0=0, chs=8, in_row0=0, in_rows=h,
         in_addr=0, out_addr=2048)
    p.store(4096, 2048, out_bytes)
    return p.image()


def test_maxpool_spikes():
    rng = np.random.default_rng(3)
    x = (rng.random((2, 1, 8, 4, 4)) < 0.3).astype(np.float32)
    res = simulate(pool_program(LayerKind.MAXPOOL, Format.SPIKE_PLANES, Format.SPIKE_PLANES), {"x": x})
    expected = x.reshape(2, 1, 8, 2, 2, 2, 2).max(axis=(4, 6))
    np.testing.assert_array_equal(res.outputs["y"], expected)


def test_avgpool_multibit_floor():
    rng = np.random.default_rng(4)
    q = rng.integers(-50, 50, size=(2, 1, 8, 4, 4))
    x = (q / 8.0).astype(np.float32)  # exact with 3 fractional bits
    # out = (sum * 1) >> 2 : the mean of 4, floored, in the same 3-bit format
    image = pool_program(LayerKind.AVGPOOL, Format.ACT_I16, Format.ACT_I16, avg_recip=1, avg_shift=2,
                         in_frac=3, out_frac=3)
    res = simulate(image, {"x": x})
    expected = (q.reshape(2, 1, 8, 2, 2, 2, 2).sum(axis=(4, 6)) >> 2) / 8.0
    np.testing.assert_array_equal(res.outputs["y"], expected.astype(np.float32))
    assert res.report["inputs_quantised"] is False


@pytest.mark.parametrize("count_pad", [True, False])
def test_avgpool_padding_modes(count_pad):
    q = np.arange(2 * 8 * 16).reshape(2, 1, 8, 4, 4) % 7
    # 3x3 window, stride 1, pad 1: recip/shift = 7282 / 2**16 ~ 1/9
    image = pool_program(LayerKind.AVGPOOL, Format.ACT_I32, Format.ACT_I32, k=3, stride=1, pad=1,
                         flags=int(count_pad), avg_recip=7282, avg_shift=16)
    res = simulate(image, {"x": q.astype(np.float32)})
    qp = np.pad(q, ((0, 0), (0, 0), (0, 0), (1, 1), (1, 1)))
    ones = np.pad(np.ones((4, 4), dtype=np.int64), 1)
    sums = sum(qp[..., dy:dy + 4, dx:dx + 4] for dy in range(3) for dx in range(3)) * 7282
    counts = sum(ones[dy:dy + 4, dx:dx + 4] for dy in range(3) for dx in range(3))
    expected = sums >> 16 if count_pad else (sums * 9 // counts) >> 16
    np.testing.assert_array_equal(res.outputs["y"], expected.astype(np.float32))


def test_add_aligns_fractions():
    p = Prog()
    t = 2
    lay = p.layer("add", kind=LayerKind.ADD, timesteps=t, in_format=Format.ACT_I16, in2_format=Format.SPIKE_PLANES,
                  out_format=Format.ACT_I16, in_c=8, in_cs=8, in_h=2, in_w=2, out_c=8, out_cs=8, out_h=2, out_w=2,
                  in_frac=2, out_frac=1)
    rng = np.random.default_rng(5)
    qa = rng.integers(-40, 40, size=(t, 1, 8, 2, 2))
    b = (rng.random((t, 1, 8, 2, 2)) < 0.5).astype(np.float32)
    p.tensor("a", False, qa.shape, 0, Format.ACT_I16, 2)
    p.tensor("b", False, b.shape, 1024, Format.SPIKE_PLANES)
    p.tensor("y", True, qa.shape, 2048, Format.ACT_I16, 1)
    p.load(0, 0, t * 2 * 2 * 8 * 2)
    p.load(1024, 512, t * 2 * 2 * 8 // 8)
    p.op(Opcode.ADD, layer=lay, batch=0, t0=0, nt=t, row0=0, rows=2, ch0=0, chs=8, a_addr=0, b_addr=512,
         out_addr=1024)
    p.store(2048, 1024, t * 2 * 2 * 8 * 2)
    res = simulate(p.image(), {"a": qa / 4.0, "b": b})
    expected = ((qa >> 1) + (b.astype(np.int64) << 1)) / 2.0  # a: 2 -> 1 frac bits (floor); spike 1 -> 2 halves
    np.testing.assert_array_equal(res.outputs["y"], expected.astype(np.float32))


# ---------------------------------------------------------------------------- inputs


def test_input_errors():
    image = dense_program(W_DENSE, [0, 0], [1], [0], [0])
    with pytest.raises(InputError, match=r"'x' is missing"):
        simulate(image, {})
    with pytest.raises(InputError, match=r"'x': expected shape \[4, 1, 3\], found \[4, 3\]"):
        simulate(image, {"x": np.zeros((4, 3))})
    with pytest.raises(InputError, match=r"'x': spike input must be 0 or 1"):
        simulate(image, {"x": np.full((4, 1, 3), 0.5)})
    with pytest.raises(InputError, match=r"'nope' is not an input"):
        simulate(image, {"x": SPIKES_IN, "nope": SPIKES_IN})


def test_strided_dma_counts_only_moved_sram_bytes():
    p = Prog()
    p.load(0, 0, row_bytes=4, rows=3, dram_stride=4, sram_stride=16)  # SRAM hull 36 B, 12 B moved
    rep = simulate(p.image(), {}).report
    assert rep["total"]["sram_bytes"] == 12 and rep["total"]["dram_bytes"] == 12
    assert rep["total"]["cycles"] == 64 + 2  # latency + ceil(12 B on one HBM channel / 10 B per cycle)
    assert [layer["name"] for layer in rep["layers"]] == ["(unattributed)"]


def test_sram_out_of_range_is_reported():
    p = Prog()
    p.op(Opcode.DMA_LOAD, dram_addr=0, sram_addr=HwConfig().sram.size_bytes - 4, row_bytes=8, rows=1,
         dram_stride=8, sram_stride=8)
    with pytest.raises(BinaryFormatError, match=r"instruction 0 \(dma.load\)\.sram_addr: .*SRAM"):
        simulate(p.image(), {})


# ---------------------------------------------------------------------------- timing


def test_dma_cycles_by_hand():
    hw = HwConfig()
    # 128 GB/s / 800 MHz = 160 B/cycle over 16 channels = 10 B/cycle each, 32 B bursts; latency 64
    assert timing.dma_cycles(hw, 512) == 64 + 4  # one 32 B burst per channel: ceil(32 / 10)
    assert timing.dma_cycles(hw, 513) == 64 + 4  # channel 0 gets 33 B: ceil(3.3)
    assert timing.dma_cycles(hw, 521) == 64 + 5  # channel 0 gets 41 B
    assert timing.dma_cycles(hw, 0) == 64


def test_syn_cycles_rounds_of_slowest_pe():
    hw = HwConfig()
    work = np.array([3, 1, 0, 2] + [0] * 12 + [5, 1])  # 18 neurons: round 1 max 3, round 2 max 5
    assert timing.syn_cycles(hw, work) == 2 + 3 + 5


def test_strided_ranges_by_hand():
    from snnc.backend.isa import HAZARD_ROWS, strided_ranges

    assert strided_ranges(100, 3, 10, 50) == [(100, 110), (150, 160), (200, 210)]  # one per row
    assert strided_ranges(100, 3, 10, 10) == [(100, 130)]  # touching rows: one range
    assert strided_ranges(100, 1, 10, 999) == [(100, 110)]
    assert strided_ranges(100, HAZARD_ROWS + 1, 10, 50) == [(100, 100 + HAZARD_ROWS * 50 + 10)]  # hull
    assert strided_ranges(100, 0, 10, 50) == [] == strided_ranges(100, 3, 0, 50)


def test_scoreboard_hazards_by_hand():
    sb = timing.Scoreboard()
    assert sb.issue("dma", 66, [], [(0, 100)]) == (0, 66)           # load A
    assert sb.issue("dma", 66, [], [(100, 200)]) == (66, 132)       # load B, DMA engine busy
    assert sb.issue("compute", 10, [(0, 100)], [(500, 600)]) == (66, 76)  # RAW on A only
    assert sb.issue("dma", 65, [], [(0, 50)]) == (132, 197)         # WAR on A: after compute (76) and engine (132)
    assert sb.issue("compute", 5, [(300, 310)], []) == (76, 81)     # independent: overlaps the DMA
    assert sb.issue(None, 0, [], []) == (197, 197)                  # barrier waits for everything
    assert sb.issue("compute", 1, [], []) == (197, 198)


def test_program_cycles_and_counters_by_hand():
    """Dense program: weights neuron0 [1,0,2], neuron1 [0,3,0]; in0 fires t0,t2; in1 never; in2 fires t3."""
    x = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32).reshape(4, 1, 3)
    image = dense_program(np.array([[1, 0, 2], [0, 3, 0]]), [0, 0], [100], [0], [0])
    rep = simulate(image, {"x": x}).report
    layer = rep["layers"][0]
    # HBM: 10 B/cycle per channel, 32 B bursts rotate over 16 channels, latency 64; a DMA holds
    # the dma engine for its transfer only, its data arrives latency + transfer after its start.
    # load x (4 B, one channel): 0..1, data at 65 | load W (64 B = 2 bursts on 2 channels): 1..5,
    # data at 1+64+4 = 69 | load params (20 B, one channel): 5..7, data at 5+64+2 = 71
    # SYN (compute): one TPPE, one task with 2 matched pairs (in0 x w00, in2 x w02): pushes in
    #      cycles 1, 2, laggy 1..8, ready 9, checks 10, 11 -> 11 + syn_overhead 2 = 13: 71 -> 84
    # LIF (neuron): 1 + ceil(8/16) = 2, but bank 0 holds 4 of its 16 B blocks: 4 cycles -> 88
    # PACK (neuron): 1 + 1 = 2 -> 90
    # store spikes (4 B) waits for PACK: 90 + 65 = 155, dma free at 91 | store membrane
    #   (128 B, 4 channels x 32 B; LIF wrote it at 88): 91 + 64 + 4 = 159
    assert rep["total"]["cycles"] == 159
    assert layer["cycles"] == 159
    assert layer["sops"] == 3  # in0 x w00 on 2 lanes + in2 x w02 on 1 lane
    assert layer["silent_ratio"] == pytest.approx(1 / 3)
    assert layer["dram_read_bytes"] == 4 + 64 + 20 and layer["dram_written_bytes"] == 4 + 128
    # bound: max(2 matched positions / 16 PEs, 220 distinct DRAM bytes / 160 B per cycle) -> ceil(1.375) = 2
    assert layer["pe_work"] == 2
    assert layer["bound_cycles"] == 2 and rep["total"]["bound_cycles"] == 2
    hw = HwConfig()
    dram_pj = (88 * 11000 + 132 * 12000) * 8 / 1000
    assert layer["energy_breakdown_pj"]["dram"] == pytest.approx(dram_pj)
    assert layer["energy_breakdown_pj"]["static"] == pytest.approx(188.9 * 159 * 1.25)
    # FTP: 2 pseudo-accumulator adds; corrections: in0 silent in 2 lanes, in2 in 3 lanes
    assert layer["energy_breakdown_pj"]["pe"] == pytest.approx(2 * hw.energy.sop_fj / 1000)
    assert layer["energy_breakdown_pj"]["correction"] == pytest.approx(5 * hw.energy.sop_fj / 1000)
    assert layer["energy_pj"] == pytest.approx(sum(layer["energy_breakdown_pj"].values()))


def test_functional_mode_skips_timing_and_report_json(tmp_path):
    image = dense_program(W_DENSE, [1, 2], [4, 4], [0, 0], [0, 0])
    fast = simulate(image, {"x": SPIKES_IN}, functional=True)
    timed = simulate(image, {"x": SPIKES_IN})
    np.testing.assert_array_equal(fast.outputs["spk"], timed.outputs["spk"])
    assert fast.report["total"]["cycles"] is None and timed.report["total"]["cycles"] > 0
    path = tmp_path / "report.json"
    write_report_json(timed.report, path)
    assert json.loads(path.read_text())["layers"][0]["name"] == "fc"


def test_load_program_from_bytes_and_path(tmp_path):
    image = dense_program(W_DENSE, [1, 2], [4, 4], [0, 0], [0, 0])
    data = write_program(image)
    (tmp_path / "p.bin").write_bytes(data)
    assert load_program(data) == image
    assert load_program(tmp_path / "p.bin") == image
    with pytest.raises(BinaryFormatError, match="no such program file"):
        load_program(tmp_path / "missing.bin")


def test_distinct_dram_bytes_union():
    from snnc.runtime.report import distinct_bytes
    # rows [0,10) [20,30) [40,50) and [5,25) [100,104): union = [0,30) + [40,50) + [100,104) = 44 bytes
    spans = [(np.array([0, 20, 40]), 10), (np.array([5]), 20), (np.array([100]), 4)]
    assert distinct_bytes(spans) == 44
    assert distinct_bytes([]) == 0
    assert distinct_bytes([(np.zeros(0, dtype=np.int64), 4), (np.zeros(0, dtype=np.int64), np.zeros(0))]) == 0


def test_distinct_dram_bytes_against_a_byte_set():
    """Groups with one length or a length per start (build_report merges the layers' runs so):
    the union's size is the number of distinct bytes."""
    from snnc.runtime.report import distinct_bytes, merged_runs
    rng = np.random.default_rng(11)
    for _ in range(200):
        spans = []
        for _ in range(int(rng.integers(1, 6))):
            starts = rng.integers(0, 300, int(rng.integers(1, 8)))
            lengths = int(rng.integers(0, 40)) if rng.random() < 0.5 else rng.integers(0, 40, starts.size)
            spans.append((starts, lengths))
        covered = set()
        for starts, lengths in spans:
            for lo, n in zip(starts, np.broadcast_to(lengths, starts.shape)):
                covered.update(range(int(lo), int(lo + n)))
        assert distinct_bytes(spans) == len(covered)
        run_start, run_end = merged_runs(spans)
        assert distinct_bytes([(run_start, run_end - run_start)]) == len(covered)
