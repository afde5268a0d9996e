"""The lowering (quantise ... insert-barriers): quantisation decisions, tiling, SRAM use, schedule, errors,
and (when the simulator is present) bit-exactness against the snn interpreter."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr, UnitAttr
from xdsl.parser import Parser
from xdsl.printer import Printer

from snnc.backend.errors import CompileError
from snnc.backend.isa import Format, LayerKind, SynFlags
from snnc.dialects import accel, make_context
from snnc.dialects.snn import (
    ONNX_NAME_ATTR,
    AddOp,
    AvgPool2dOp,
    Conv2dOp,
    DenseOp,
    LIFOp,
    MaxPool2dOp,
    ReshapeOp,
    SpikeTrainType,
    TrainType,
    conv_output_hw,
    int_array,
    tensor_attr,
)
from snnc.compiler.pipeline import CompileOptions, lower_module
from snnc.passes.neuron_numbers import choose_neuron_numbers
from snnc.passes.numerics import (
    choose_weight_scales,
    exact_frac,
    leak_fraction,
)

# --------------------------------------------------------------------------------------
# Building snn modules by hand
# --------------------------------------------------------------------------------------


class Net:
    """A tiny builder of `func.func @main` in the snn dialect."""

    def __init__(self, timesteps: int, inputs: list[tuple[str, object]]):
        self.T = timesteps
        self.main = func.FuncOp(
            "main", ([t for _, t in inputs], []),
            arg_attrs=ArrayAttr([DictionaryAttr({ONNX_NAME_ATTR: StringAttr(n)}) for n, _ in inputs]),
        )
        self.block = self.main.body.block
        self.args = list(self.block.args)

    def op(self, cls, operands, result_types, **props):
        converted = {}
        for key, value in props.items():
            if isinstance(value, str):
                converted[key] = StringAttr(value)
            elif isinstance(value, UnitAttr):
                converted[key] = value
            elif isinstance(value, tuple):
                converted[key] = int_array(value)
            else:
                converted[key] = tensor_attr(np.asarray(value, np.float32))
        op = cls.build(operands=operands, result_types=result_types, properties=converted)
        self.block.add_op(op)
        return op

    def dense(self, x, w, b=None, name="fc"):
        batch = x.type.get_shape()[0]
        props = dict(weight=w, source=name) | ({"bias": b} if b is not None else {})
        return self.op(DenseOp, [x], [TrainType(self.T, (batch, np.shape(w)[1]))], **props).output

    def conv(self, x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), name="conv"):
        batch, _, h, wd = x.type.get_shape()
        ho, wo = conv_output_hw((h, wd), np.shape(w)[2:], strides, pads, dil)
        props = dict(weight=w, strides=strides, pads=pads, dilations=dil, source=name)
        if b is not None:
            props["bias"] = b
        return self.op(Conv2dOp, [x], [TrainType(self.T, (batch, np.shape(w)[0], ho, wo))], **props).output

    def lif(self, x, name="lif", **params):
        shape = x.type.get_shape()
        props = dict(reset="subtract", reset_timing="same", compare="ge", leak="beta", beta=0.5, threshold=1.0)
        props.update(params)
        if props["leak"] != "beta":
            props.pop("beta")
        op = self.op(LIFOp, [x], [SpikeTrainType(self.T, shape), TrainType(self.T, shape)], source=name, **props)
        return op.spikes, op.membrane

    def finish(self, outputs) -> ModuleOp:
        self.block.add_op(func.ReturnOp(*[v for _, v in outputs]))
        self.main.function_type = func.FunctionType.from_lists(
            [a.type for a in self.args], [v.type for _, v in outputs])
        self.main.res_attrs = ArrayAttr([DictionaryAttr({ONNX_NAME_ATTR: StringAttr(n)}) for n, _ in outputs])
        module = ModuleOp([self.main])
        module.verify()
        return module


COMPILE_OPTIONS = ("hw", "weight_bits", "weight_scales", "input_frac_bits", "passes")


def lower(module: ModuleOp, **options) -> ModuleOp:
    """The whole lowering (quantise ... insert-barriers) with no scheduling passes unless
    `passes` is given; other options go to the lowering stages (sram_bytes, ...)."""
    compile_options = CompileOptions(**{"passes": "", **{k: v for k, v in options.items() if k in COMPILE_OPTIONS}})
    stage = {k: v for k, v in options.items() if k not in COMPILE_OPTIONS}
    return lower_module(module.clone(), compile_options, **stage)


def program_of(module: ModuleOp) -> accel.ProgramOp:
    (program,) = list(module.ops)
    assert isinstance(program, accel.ProgramOp)
    return program


def text_of(module: ModuleOp) -> str:
    out = io.StringIO()
    Printer(stream=out).print_op(module)
    return out.getvalue()


RNG = np.random.default_rng(7)


def conv_lif_net(T=4, batch=2, cout=10) -> ModuleOp:
    """conv 3x3 (pad 1) -> LIF; spikes, membrane and current are outputs."""
    rng = np.random.default_rng(1)
    n = Net(T, [("x", SpikeTrainType(T, (batch, 3, 8, 8)))])
    c = n.conv(n.args[0], rng.integers(-4, 4, (cout, 3, 3, 3)) / 8, rng.integers(-4, 4, cout) / 4,
               pads=(1, 1, 1, 1), name="conv1")
    s, v = n.lif(c, name="lif1")
    return n.finish([("s", s), ("v", v), ("c", c)])


def mixed_net(T=6) -> ModuleOp:
    """analog input, strided conv, maxpool, flatten, dense, per-channel thresholds."""
    rng = np.random.default_rng(2)
    n = Net(T, [("x", TrainType(T, (1, 2, 9, 9)))])
    c = n.conv(n.args[0], rng.integers(-8, 8, (16, 2, 3, 3)) / 16, rng.integers(-4, 4, 16) / 8,
               strides=(2, 2), pads=(1, 1, 1, 1), name="conv1")
    s, _ = n.lif(c, name="lif1", beta=0.75, threshold=0.5)
    p = n.op(MaxPool2dOp, [s], [SpikeTrainType(T, (1, 16, 2, 2))], kernel=(2, 2), strides=(2, 2),
             pads=(0, 0, 0, 0), source="pool").output
    f = n.op(ReshapeOp, [p], [SpikeTrainType(T, (1, 64))], source="flatten").output
    d = n.dense(f, rng.integers(-8, 8, (64, 10)) / 8, rng.integers(-4, 4, 10) / 4, name="fc")
    thr = np.array([1, 2, 1, 2, 1, 2, 1, 2, 1, 0.5], np.float32)
    s2, v2 = n.lif(d, name="lif2", leak="none", threshold=thr, reset="zero", compare="gt")
    return n.finish([("s2", s2), ("v2", v2), ("p", p)])


def residual_net(T=5) -> ModuleOp:
    """tau/to_value LIF, a residual of two convs into one LIF (delayed reset),
    a SEW add of spikes, an average pool, a final conv."""
    rng = np.random.default_rng(3)
    n = Net(T, [("x", SpikeTrainType(T, (1, 8, 6, 6)))])
    x = n.args[0]
    c1 = n.conv(x, rng.integers(-8, 8, (8, 8, 3, 3)) / 32, None, pads=(1, 1, 1, 1), name="conv1")
    s1, _ = n.lif(c1, name="lif1", leak="tau", tau=2.0, v_reset=0.25, threshold=0.75, reset="to_value")
    c2 = n.conv(s1, rng.integers(-8, 8, (8, 8, 3, 3)) / 16, rng.integers(-4, 4, 8) / 8, pads=(1, 1, 1, 1), name="conv2")
    c3 = n.conv(x, rng.integers(-8, 8, (8, 8, 1, 1)) / 4, None, name="downsample")
    r = n.op(AddOp, [c2, c3], [TrainType(T, (1, 8, 6, 6))], source="residual").output
    s2, v2 = n.lif(r, name="lif2", reset_timing="delayed", beta=np.array([0.25, 0.5, 0.75, 1] * 2, np.float32))
    sew = n.op(AddOp, [s2, x], [TrainType(T, (1, 8, 6, 6))], source="sew").output
    ap = n.op(AvgPool2dOp, [sew], [TrainType(T, (1, 8, 3, 3))], kernel=(2, 2), strides=(2, 2),
              pads=(0, 0, 0, 0), source="avgpool").output
    c4 = n.conv(ap, rng.integers(-8, 8, (4, 8, 3, 3)) / 8, None, name="conv4")
    s4, v4 = n.lif(c4, name="lif4")
    return n.finish([("s4", s4), ("v4", v4), ("sew", sew), ("ap", ap), ("v2", v2), ("r", r)])


# --------------------------------------------------------------------------------------
# Quantisation decisions (hand-computed)
# --------------------------------------------------------------------------------------


def test_exact_weights_take_the_smallest_fraction():
    scales = choose_weight_scales([np.array([0.25, -0.5])], [0], 8)
    assert scales == type(scales)(acc_frac=2, weight_fracs=(2,), exact=True)  # ints {1, -2}
    assert exact_frac(np.array([0.25, -0.5]), 127) == 2
    # input frac adds to the accumulator frac: 8 + 2
    assert choose_weight_scales([np.array([0.25, -0.5])], [8], 8).acc_frac == 10
    # large round weights use a negative fraction: 256 = 1 * 2^8
    assert choose_weight_scales([np.array([256.0, -512.0])], [0], 8).weight_fracs == (-8,)


def test_inexact_weights_use_the_largest_fitting_fraction():
    scales = choose_weight_scales([np.array([0.3, -0.1])], [0], 8)
    # 0.3 * 2^8 = 76.8 <= 127 < 0.3 * 2^9
    assert scales.weight_fracs == (8,) and not scales.exact
    # 4 bits: q = 7; 0.3 * 2^4 = 4.8 <= 7 < 9.6
    assert choose_weight_scales([np.array([0.3])], [0], 4).weight_fracs == (4,)


def test_summed_synapses_share_the_accumulator_fraction():
    # A = {0.5} on spikes (f_in 0) needs fw 1; B = {0.25} on ACT f_in 8 needs fw 2 -> wants acc 10,
    # but A has room only up to fw 7 (0.5 * 2^7 = 64; 2^8 would be 128 > 127) -> acc 7, fw_B = -1: inexact.
    scales = choose_weight_scales([np.array([0.5]), np.array([0.25])], [0, 8], 8)
    assert scales.acc_frac == 7 and scales.weight_fracs == (7, -1) and not scales.exact
    # Both on spikes: acc = max(1, 2) = 2, exact.
    scales = choose_weight_scales([np.array([0.5]), np.array([0.25])], [0, 0], 8)
    assert scales == type(scales)(2, (2, 2), True)


def test_leak_fraction():
    assert leak_fraction(np.array([0.5])) == (1, True)
    assert leak_fraction(np.array([0.75, 0.5])) == (2, True)
    assert leak_fraction(np.array([1.0])) == (0, True)
    assert leak_fraction(np.array([0.3])) == (16, False)


def _lif_op(**params) -> LIFOp:
    n = Net(4, [("x", TrainType(4, (1, 4)))])
    s, _ = n.lif(n.args[0], **params)
    return s.owner


def test_membrane_fraction_for_beta_leak():
    # acc frac 2, beta 0.5 (leak_frac 1), thr 1.0 (frac 0), T = 4: F = 2 + 3 * 1 = 5
    nn = choose_neuron_numbers(_lif_op(beta=0.5, threshold=1.0), 2, current_bound=3.0, timesteps=4, param_c=1)
    assert (nn.leak_frac, nn.membrane_frac, nn.acc_shift) == (1, 5, 3)
    assert nn.threshold.tolist() == [32] and nn.leak.tolist() == [1] and nn.notes == ()
    # threshold 0.375 needs 3 bits > acc frac 2: F = 3 + 3 = 6
    nn = choose_neuron_numbers(_lif_op(beta=0.5, threshold=0.375), 2, 3.0, 4, 1)
    assert nn.membrane_frac == 6 and nn.threshold.tolist() == [24]


def test_membrane_fraction_without_leak_and_with_tau():
    nn = choose_neuron_numbers(_lif_op(leak="none", threshold=0.5), 4, 3.0, 4, 1)
    assert (nn.leak_frac, nn.membrane_frac, nn.acc_shift) == (0, 4, 0)
    # tau 4 -> leak 1/4 (leak_frac 2); v_reset 0.125 (3 bits): h = v + (I - (v - v_reset)) / 4 divides
    # at every step, the first included: F = max(0, 0, 3) + 4 * 2 = 11
    nn = choose_neuron_numbers(_lif_op(leak="tau", tau=4.0, v_reset=0.125, threshold=1.0), 0, 1.0, 4, 1)
    assert (nn.leak_frac, nn.membrane_frac) == (2, 11) and nn.leak.tolist() == [1] and nn.v_reset.tolist() == [256]
    v = 0.0  # the recurrence on an integer current (frac 0) with no spike: the last step needs all 11 bits
    for _ in range(4):
        v = v + (1.0 - (v - 0.125)) / 4
    assert v * 2**11 == int(v * 2**11) and v * 2**10 != int(v * 2**10)


def test_membrane_fraction_is_capped_by_the_range_and_flagged():
    nn = choose_neuron_numbers(_lif_op(beta=0.5, threshold=1.0), 20, current_bound=1e6, timesteps=4, param_c=1)
    assert nn.membrane_frac < 23 and nn.notes and "membrane needs 23" in nn.notes[0]
    assert nn.membrane_bound * 2.0**nn.membrane_frac < 2**31


def test_layer_descriptor_records_the_decisions():
    program = program_of(lower(conv_lif_net()))
    (layer,) = program.layers()
    g = layer.get
    # weights k/8 on spikes -> acc frac 3; beta 0.5 -> leak_frac 1; thr 1 -> F = 3 + 3 = 6
    assert (g("leak_frac"), g("membrane_frac"), g("acc_shift")) == (1, 6, 3)
    assert (g("kind"), g("out_format"), g("in_format")) == (LayerKind.CONV, Format.SPIKE_PLANES, Format.SPIKE_PLANES)
    assert (g("out_c"), g("out_cs"), g("in_c"), g("in_cs"), g("param_c")) == (10, 16, 3, 8, 1)
    assert layer.inexact is None and layer.source.data == "conv1"
    formats = {io.io_name.data: (io.format.data, io.frac_bits.data) for io in program.io_ops()}
    assert formats == {"x": (Format.SPIKE_PLANES, 0), "s": (Format.SPIKE_PLANES, 0),
                       "v": (Format.ACT_I32, 6), "c": (Format.ACT_I32, 3)}


def test_inexact_layers_are_flagged():
    n = Net(4, [("x", SpikeTrainType(4, (1, 8)))])
    d = n.dense(n.args[0], np.full((8, 4), 0.3), name="fc")
    s, _ = n.lif(d, name="lif")
    (layer,) = program_of(lower(n.finish([("s", s)]))).layers()
    assert layer.inexact is not None and "weights rounded" in layer.inexact.data


def test_flatten_permutes_dense_weight_rows_to_hwc_order():
    # [1, C=2, H=1, W=2] flattened: ONNX row k = c*2 + w; stored row = w*Cs + c with Cs = 8
    n = Net(2, [("x", SpikeTrainType(2, (1, 2, 1, 2)))])
    f = n.op(ReshapeOp, [n.args[0]], [SpikeTrainType(2, (1, 4))], source="flatten").output
    w = np.array([[1], [2], [3], [4]], np.float32)  # rows c0w0, c0w1, c1w0, c1w1
    d = n.dense(f, w, name="fc")
    s, _ = n.lif(d, name="lif", threshold=4.0)
    program = program_of(lower(n.finish([("s", s)])))
    (layer,) = program.layers()
    # an H x W = 1 x 2 kernel over the stored map: in_c = C = 2, in_cs = 8
    assert [layer.get(k) for k in ("in_c", "in_cs", "in_h", "in_w", "kh", "kw", "out_h", "out_w")] == [2, 8, 1, 2, 1, 2, 1, 1]
    weights = np.frombuffer(program.constants()[0].payload, np.int8).reshape(8, 16)  # [out_cs][kh*kw*in_cs]
    expected = np.zeros(16, np.int8)
    expected[[0, 8, 1, 9]] = [1, 2, 3, 4]  # (w0,c0) (w1,c0) (w0,c1) (w1,c1)
    assert weights[0].tolist() == expected.tolist() and not weights[1:].any()


# --------------------------------------------------------------------------------------
# IR properties: verification, round trip, determinism
# --------------------------------------------------------------------------------------

def banded_fc_net(T=4) -> ModuleOp:
    """flatten [1, 8, 4, 4] -> dense 10 -> LIF: with a small SRAM the 128-wide
    reduction is streamed in row bands that accumulate into one tile."""
    rng = np.random.default_rng(9)
    n = Net(T, [("x", SpikeTrainType(T, (1, 8, 4, 4)))])
    f = n.op(ReshapeOp, [n.args[0]], [SpikeTrainType(T, (1, 128))], source="flatten").output
    d = n.dense(f, rng.integers(-8, 8, (128, 10)) / 8, rng.integers(-4, 4, 10) / 4, name="fc")
    s, v = n.lif(d, name="lif", threshold=2.0)
    return n.finish([("s", s), ("v", v)])


NETS = {"conv_lif": conv_lif_net, "mixed": mixed_net, "residual": residual_net,
        "lif_on_maps": lambda: lif_on_stored_maps_net(), "banded_fc": banded_fc_net}
SMALL_SRAM = {"banded_fc": 1024}  # others: 6144


def sram_for(net: str, which: str) -> int:
    return 0 if which == "default" else SMALL_SRAM.get(net, 6144)


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("sram", ["default", "small"])
def test_lowered_ir_round_trips_and_is_deterministic(net, sram):
    lowered = lower(NETS[net](), sram_bytes=sram_for(net, sram))
    text = text_of(lowered)
    parsed = Parser(make_context(), text).parse_module()
    parsed.verify()
    assert text_of(parsed) == text
    assert text_of(lower(NETS[net](), sram_bytes=sram_for(net, sram))) == text


def test_pass_options_parse_from_a_pipeline_spec():
    from xdsl.utils.arg_spec import parse_pipeline

    from snnc.passes.convert_snn_to_loops import ConvertSnnToLoops
    from snnc.passes.quantise import Quantise

    quantise_spec, convert_spec = parse_pipeline(
        "quantise{weight_bits=4 hw=loas input_abs_max=2.0},convert-snn-to-loops{hw=loas sram_bytes=8192}")
    q, c = Quantise.from_pass_spec(quantise_spec), ConvertSnnToLoops.from_pass_spec(convert_spec)
    assert (q.weight_bits, q.hw, q.input_abs_max, c.sram_bytes) == (4, "loas", 2.0, 8192)
    program = program_of(lower(conv_lif_net(), weight_bits=4, sram_bytes=8192))
    assert program.sram_size.data == 8192 and program.layers()[0].get("weight_bytes") == 1


def test_module_holds_only_the_program():
    lowered = lower(conv_lif_net())
    assert [op.name for op in lowered.ops] == ["accel.program"]


# --------------------------------------------------------------------------------------
# Schedule properties computed from the emitted instructions
# --------------------------------------------------------------------------------------


def _layers_by_symbol(program):
    return {layer.symbol: layer for layer in program.layers()}


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("sram", ["default", "small"])
@pytest.mark.parametrize("lanes", [0, 3])
def test_tiles_cover_every_output_element_exactly_once(net, sram, lanes):
    program = program_of(lower(NETS[net](), sram_bytes=sram_for(net, sram), timestep_lanes=lanes))
    layers = _layers_by_symbol(program)
    covered: dict[tuple[str, str], Counter] = {}
    for op in program.instructions():
        if op.layer_symbol is None:
            continue
        v = op.field_values()
        if isinstance(op, accel.SynOp) and v["flags"] & SynFlags.ACCUMULATE:
            key = (op.name + "+acc", op.layer_symbol)
        else:
            key = (op.name, op.layer_symbol)
        counter = covered.setdefault(key, Counter())
        for b in [v["batch"]]:
            for t in range(v["t0"], v["t0"] + v["nt"]):
                for r in range(v["row0"], v["row0"] + v["rows"]):
                    for c in range(v["ch0"], v["ch0"] + v["chs"]):
                        counter[(b, t, r, c)] += 1
    assert covered
    for (opname, sym), counter in covered.items():
        g = layers[sym].get
        batch = next(io.batch.data for io in program.io_ops())
        expected = {(b, t, r, c) for b in range(batch) for t in range(g("timesteps"))
                    for r in range(g("out_h")) for c in range(g("out_cs"))}
        assert set(counter) == expected, (opname, sym)
        assert set(counter.values()) == {1}, (opname, sym)


def _dram_writes(program) -> Counter:
    written = Counter()
    for op in program.instructions():
        if isinstance(op, accel.DmaStoreOp):
            v = op.field_values()
            for row in range(v["rows"]):
                start = v["dram_addr"] + row * v["dram_stride"]
                written.update(range(start, start + v["row_bytes"]))
    return written


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("sram", ["default", "small"])
def test_outputs_are_written_exactly_once_and_nothing_overwrites_constants(net, sram):
    program = program_of(lower(NETS[net](), sram_bytes=sram_for(net, sram)))
    written = _dram_writes(program)
    assert set(written.values()) == {1}
    const_end = max(c.dram_addr.data + len(c.payload) for c in program.constants())
    assert min(written) >= const_end
    for io_op in program.io_ops():
        span = set(range(io_op.dram_addr.data, io_op.dram_addr.data + io_op.byte_size()))
        if io_op.is_output.data:
            assert span <= set(written), io_op.io_name.data  # every byte of every output is stored
        else:
            assert not span & set(written), io_op.io_name.data  # inputs are never overwritten


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("sram", ["default", "small"])
def test_sram_buffers_do_not_overlap_and_reuse_waits_for_a_barrier(net, sram):
    """Within an instruction its SRAM operands are disjoint; across instructions a
    range is only rewritten after a BARRIER once something read it (except an
    in-place update by the unit that wrote it)."""
    program = program_of(lower(NETS[net](), sram_bytes=sram_for(net, sram)))
    layers = _layers_by_symbol(program)
    since_barrier: list[tuple[int, int, bool, bool]] = []
    barriers = 0
    for op in program.instructions():
        if isinstance(op, accel.BarrierOp):
            since_barrier, barriers = [], barriers + 1
            continue
        operands = accel.sram_operands(op, layers.get(op.layer_symbol) if op.layer_symbol else None)
        for i, a in enumerate(operands):
            assert 0 <= a.addr and a.end <= program.sram_size.data
            for b in operands[i + 1:]:
                assert a.end <= b.addr or b.end <= a.addr, (op.name, a, b)
        for o in operands:
            if not o.writes:
                continue
            for start, end, did_read, did_write in since_barrier:
                if start < o.end and o.addr < end:
                    assert did_write and o.reads, f"{op.name} overwrites [{o.addr:#x}, {o.end:#x}) without a barrier"
        since_barrier += [(o.addr, o.end, o.reads, o.writes) for o in operands]
    secondary = {op.layer_symbol for op in program.instructions()
                 if isinstance(op, accel.SynOp) and op.field_values()["flags"] & SynFlags.ACCUMULATE}
    assert barriers >= len(program.layers()) - len(secondary) - 1  # at least one per layer boundary


def test_small_sram_forces_row_and_channel_tiles():
    program = program_of(lower(conv_lif_net(cout=32), sram_bytes=4096))
    syns = [op.field_values() for op in program.instructions() if isinstance(op, accel.SynOp)]
    assert max(v["rows"] for v in syns) < 8
    program = program_of(lower(conv_lif_net(cout=32), sram_bytes=6144))
    syns = [op.field_values() for op in program.instructions() if isinstance(op, accel.SynOp)]
    assert max(v["chs"] for v in syns) < 32


def test_timesteps_run_in_lane_groups():
    program = program_of(lower(conv_lif_net(T=6), timestep_lanes=4))
    groups = {(v["t0"], v["nt"]) for v in (op.field_values() for op in program.instructions()
                                            if isinstance(op, accel.LifOp))}
    assert groups == {(0, 4), (4, 2)}


def test_residual_add_is_two_syn_into_one_accumulator():
    program = program_of(lower(residual_net()))
    ops = program.instructions()
    syn_pairs = [(a, b) for a, b in zip(ops, ops[1:]) if isinstance(b, accel.SynOp)
                 and b.field_values()["flags"] & SynFlags.ACCUMULATE]
    assert syn_pairs
    for _, second in syn_pairs:
        first = next(op for op in reversed(ops[: ops.index(second)]) if isinstance(op, accel.SynOp)
                     and not op.field_values()["flags"] & SynFlags.ACCUMULATE)
        assert first.layer_symbol == "conv2" and second.layer_symbol == "downsample"
        assert first.field_values()["acc_addr"] == second.field_values()["acc_addr"]
    kinds = {layer.symbol: LayerKind(layer.get("kind")) for layer in program.layers()}
    assert kinds["sew"] == LayerKind.ADD and kinds["avgpool"] == LayerKind.AVGPOOL


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_lif_on_a_flattened_map_is_a_compile_error():
    n = Net(2, [("x", TrainType(2, (1, 2, 2, 2)))])
    f = n.op(ReshapeOp, [n.args[0]], [TrainType(2, (1, 8))], source="flatten").output
    s, _ = n.lif(f, name="flat_lif")
    with pytest.raises(CompileError, match="flat_lif"):
        lower(n.finish([("s", s)]))


def test_layout_changing_reshape_is_a_compile_error():
    n = Net(2, [("x", SpikeTrainType(2, (1, 2, 2, 2)))])
    r = n.op(ReshapeOp, [n.args[0]], [SpikeTrainType(2, (1, 2, 4, 1))], source="odd_reshape").output
    with pytest.raises(CompileError, match="odd_reshape"):
        lower(n.finish([("r", r)]))


def test_returning_a_flattened_map_is_a_compile_error():
    n = Net(2, [("x", SpikeTrainType(2, (1, 2, 2, 2)))])
    r = n.op(ReshapeOp, [n.args[0]], [SpikeTrainType(2, (1, 8))], source="flatten").output
    with pytest.raises(CompileError, match="flattened"):
        lower(n.finish([("r", r)]))


def test_a_layer_that_cannot_fit_sram_is_a_compile_error():
    with pytest.raises(CompileError, match="conv1.*SRAM"):
        lower(conv_lif_net(), sram_bytes=1024)


def test_avg_pool_excluding_padding_is_flagged_inexact():
    n = Net(2, [("x", SpikeTrainType(2, (1, 8, 4, 4)))])
    a = n.op(AvgPool2dOp, [n.args[0]], [TrainType(2, (1, 8, 4, 4))], kernel=(2, 2), strides=(1, 1),
             pads=(1, 1, 0, 0), source="avg").output
    (layer,) = program_of(lower(n.finish([("a", a)]))).layers()
    assert layer.get("flags") == 0 and "excluding padding" in layer.inexact.data
    # counting the padding is exact for a power-of-two window: sum with 2 more fraction bits
    n = Net(2, [("x", SpikeTrainType(2, (1, 8, 4, 4)))])
    a = n.op(AvgPool2dOp, [n.args[0]], [TrainType(2, (1, 8, 4, 4))], kernel=(2, 2), strides=(1, 1),
             pads=(1, 1, 0, 0), source="avg", count_include_pad=UnitAttr()).output
    (layer,) = program_of(lower(n.finish([("a", a)]))).layers()
    assert layer.inexact is None and layer.get("flags") == 1
    assert (layer.get("avg_recip"), layer.get("avg_shift"), layer.get("out_frac")) == (1, 0, 2)


def test_two_lifs_on_one_current_is_a_compile_error():
    n = Net(2, [("x", SpikeTrainType(2, (1, 8)))])
    d = n.dense(n.args[0], np.ones((8, 8)) / 4, name="shared_fc")
    s1, _ = n.lif(d, name="a")
    s2, _ = n.lif(d, name="b")
    with pytest.raises(CompileError, match="shared_fc"):
        lower(n.finish([("s1", s1), ("s2", s2)]))


# --------------------------------------------------------------------------------------
# End to end: simulator == snn interpreter, bit for bit (exact models)
# --------------------------------------------------------------------------------------


def _simulate_and_compare(module: ModuleOp, inputs: dict, **options) -> None:
    simulator = pytest.importorskip("snnc.runtime.simulator")
    from snnc.passes.encode import encode
    from snnc.dialects.snn_interpreter import run_snn

    lowered = lower(module, **options)
    for layer in program_of(lowered).layers():
        assert layer.inexact is None, (layer.symbol, layer.inexact.data)
    expected = run_snn(module, inputs)
    got = simulator.simulate(encode(lowered), inputs, functional=True).outputs
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.mark.parametrize("sram", [0, 4096])
def test_conv_lif_matches_the_interpreter(sram):
    x = (np.random.default_rng(4).random((4, 2, 3, 8, 8)) < 0.4).astype(np.float32)
    _simulate_and_compare(conv_lif_net(), {"x": x}, sram_bytes=sram)


@pytest.mark.parametrize("lanes", [0, 4, 5])
def test_mixed_net_matches_the_interpreter(lanes):
    x = (np.round(np.random.default_rng(5).normal(size=(6, 1, 2, 9, 9)) * 64) / 64).astype(np.float32)
    _simulate_and_compare(mixed_net(), {"x": x}, timestep_lanes=lanes, input_abs_max=4.0, sram_bytes=8192)


@pytest.mark.parametrize("lanes", [0, 2])
def test_residual_net_matches_the_interpreter(lanes):
    x = (np.random.default_rng(6).random((5, 1, 8, 6, 6)) < 0.5).astype(np.float32)
    _simulate_and_compare(residual_net(), {"x": x}, timestep_lanes=lanes, sram_bytes=8192)


def lif_on_stored_maps_net(T=4) -> ModuleOp:
    """LIF directly on an analog graph input, and on an average pool of spikes."""
    n = Net(T, [("x", TrainType(T, (1, 3, 4, 4)))])
    s1, v1 = n.lif(n.args[0], name="input_lif", beta=0.5, threshold=0.5)
    ap = n.op(AvgPool2dOp, [s1], [TrainType(T, (1, 3, 2, 2))], kernel=(2, 2), strides=(2, 2),
              pads=(0, 0, 0, 0), source="avgpool").output
    s2, v2 = n.lif(ap, name="pool_lif", leak="none", threshold=0.5)
    return n.finish([("s1", s1), ("v1", v1), ("s2", s2), ("v2", v2)])


def test_lif_on_a_stored_map_uses_an_identity_synapse():
    program = program_of(lower(lif_on_stored_maps_net()))
    layers = {layer.symbol: layer for layer in program.layers()}
    assert set(layers) == {"input_lif", "avgpool", "pool_lif"}
    assert layers["input_lif"].get("in_format") == Format.ACT_I16 and layers["input_lif"].get("in_frac") == 8
    weights = np.frombuffer(program.constants()[0].payload, np.int8).reshape(8, 8)  # [out_cs][in_cs]
    assert weights.tolist() == np.diag([1, 1, 1, 0, 0, 0, 0, 0]).tolist()


def test_lif_on_stored_maps_matches_the_interpreter():
    x = (np.round(np.random.default_rng(8).normal(size=(4, 1, 3, 4, 4)) * 32) / 32).astype(np.float32)
    _simulate_and_compare(lif_on_stored_maps_net(), {"x": x}, input_abs_max=8.0)


def test_a_reduction_too_big_for_sram_is_streamed_in_bands():
    program = program_of(lower(banded_fc_net(), sram_bytes=1024))
    bands = [layer for layer in program.layers() if layer.source.data == "fc"]
    assert len(bands) > 1
    assert sum(layer.get("in_h") for layer in bands) == 4 and all(layer.get("kh") == layer.get("in_h") for layer in bands)
    syns = [op for op in program.instructions() if isinstance(op, accel.SynOp)]
    channel_tiles = {op.field_values()["ch0"] for op in syns}
    # one visit (T = 4 = lanes) per channel tile starts the accumulator; every other band accumulates
    assert sum(1 for op in syns if not op.field_values()["flags"] & SynFlags.ACCUMULATE) == len(channel_tiles)
    assert len(syns) == len(channel_tiles) * len(bands)


@pytest.mark.parametrize("sram", [0, 1024])
def test_banded_fc_matches_the_interpreter(sram):
    x = (np.random.default_rng(10).random((4, 1, 8, 4, 4)) < 0.5).astype(np.float32)
    _simulate_and_compare(banded_fc_net(), {"x": x}, sram_bytes=sram)


def test_padded_average_pool_then_lif_matches_the_interpreter():
    n = Net(4, [("x", SpikeTrainType(4, (2, 8, 5, 5)))])
    a = n.op(AvgPool2dOp, [n.args[0]], [TrainType(4, (2, 8, 5, 5))], kernel=(2, 2), strides=(1, 1),
             pads=(1, 1, 0, 0), source="avg", count_include_pad=UnitAttr()).output
    s, v = n.lif(a, name="lif", threshold=0.75)
    x = (np.random.default_rng(11).random((4, 2, 8, 5, 5)) < 0.5).astype(np.float32)
    _simulate_and_compare(n.finish([("a", a), ("s", s), ("v", v)]), {"x": x}, sram_bytes=4096)


def test_layer_and_constant_symbols_never_collide():
    n = Net(2, [("x", SpikeTrainType(2, (1, 8)))])
    d1 = n.dense(n.args[0], np.eye(8) / 2, name="fc")
    s1, _ = n.lif(d1, name="a")
    d2 = n.dense(s1, np.eye(8) / 2, name="w_fc")  # the name the constant of layer @fc would take
    s2, _ = n.lif(d2, name="b")
    program = program_of(lower(n.finish([("s", s2)])))
    symbols = [op.sym_name.data for op in program.constants()] + [op.symbol for op in program.layers()]
    assert len(symbols) == len(set(symbols))
    assert [layer.source.data for layer in program.layers()] == ["fc", "w_fc"]
