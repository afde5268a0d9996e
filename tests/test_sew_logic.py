"""Spike-wise OR / AND (SEW-OR / SEW-AND residuals): `snn.spike_logic` end to end.

Every ONNX spelling (Max / Or of bool casts / a + b - a*b for OR; Mul / Min / And for
AND) imports as one `snn.spike_logic`, runs in the interpreter, lowers to an ADD layer
(AND: LayerFlags.ADD_AND) and simulates bit for bit like onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from exporters_util import verify
from snnc.backend import isa
from snnc.compiler.frontend.canonical import Network
from snnc.compiler.frontend.onnx_import import import_onnx
from snnc.compiler.pipeline import print_ir
from snnc.dialects import make_context
from snnc.dialects.snn import SpikeLogicOp
from snnc.dialects.snn_interpreter import run_snn
from xdsl.parser import Parser
from xdsl.utils.exceptions import VerifyException

T = 4


def _base_model() -> onnx.ModelProto:
    """Two LIF branches on one input, combined by Max (the canonical SEW-OR)."""
    rng = np.random.default_rng(3)
    net = Network(timesteps=T)
    x = net.input("x", (1, 8))
    w1, w2 = (rng.integers(-8, 9, size=(8, 16)) / 8.0 for _ in range(2))
    s1, _ = net.lif(net.dense(x, w1, None, name="fc1"), beta=0.5, threshold=1.0, name="lif1")
    s2, _ = net.lif(net.dense(x, w2, None, name="fc2"), beta=0.5, threshold=1.0, name="lif2")
    net.output(net.spike_or(s1, s2, name="sew"), "y")
    return net.to_onnx(form="unrolled")


def _rewrite(model: onnx.ModelProto, form: str) -> onnx.ModelProto:
    """Replace every Max(a, b) by the ONNX spelling `form` of OR / AND."""
    graph = model.graph
    nodes = []
    for n in graph.node:
        if n.op_type != "Max":
            nodes.append(n)
            continue
        (a, b), (y,), name = n.input, n.output, n.name
        mk = helper.make_node
        if form in ("max", "min", "mul"):
            nodes.append(mk({"max": "Max", "min": "Min", "mul": "Mul"}[form], [a, b], [y], name=name))
        elif form in ("or", "and"):
            nodes += [mk("Cast", [a], [f"{y}_ab"], to=TensorProto.BOOL, name=f"{name}_ca"),
                      mk("Cast", [b], [f"{y}_bb"], to=TensorProto.BOOL, name=f"{name}_cb"),
                      mk(form.capitalize(), [f"{y}_ab", f"{y}_bb"], [f"{y}_l"], name=name),
                      mk("Cast", [f"{y}_l"], [y], to=TensorProto.FLOAT, name=f"{name}_cf")]
        elif form == "arith":
            nodes += [mk("Add", [a, b], [f"{y}_s"], name=f"{name}_add"),
                      mk("Mul", [a, b], [f"{y}_p"], name=f"{name}_mul"),
                      mk("Sub", [f"{y}_s", f"{y}_p"], [y], name=name)]
        else:
            raise AssertionError(form)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


FORMS = {"max": "or", "or": "or", "arith": "or", "mul": "and", "min": "and", "and": "and"}


def _inputs() -> np.ndarray:
    return (np.random.default_rng(7).integers(0, 9, size=(T, 1, 8)) / 4.0).astype(np.float32)


@pytest.mark.parametrize("form", list(FORMS))
def test_sew_forms_import_interpret_and_simulate_bit_exact(tmp_path, form):
    model = _rewrite(_base_model(), form)
    module = import_onnx(model)
    logic = [op for op in module.walk() if isinstance(op, SpikeLogicOp)]
    assert [op.op.data for op in logic] == [FORMS[form]]
    assert [op.name for op in module.walk() if op.name.startswith("snn.")].count("snn.add") == 0
    # the interpreter agrees with onnxruntime
    import onnxruntime as ort

    x = _inputs()
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got = run_snn(module, {"x": x})["y"]
    assert np.array_equal(got, expected) and 0 < expected.sum() < expected.size
    other = _rewrite(_base_model(), "and" if FORMS[form] == "or" else "or")
    assert not np.array_equal(ort.InferenceSession(other.SerializeToString()).run(None, {"x": x})[0], expected)
    # compile + simulate: bit for bit
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert verify(path, x) == {"y": 1.0}


@pytest.mark.parametrize("form", ["max", "and"])
def test_lowering_is_an_add_layer_with_spike_output_and_the_and_flag(form):
    from snnc.backend.binformat import decode_layers
    from snnc.compiler.pipeline import compile_model

    result = compile_model(_rewrite(_base_model(), form))
    adds = [lay for lay in decode_layers(result.image) if lay["kind"] == isa.LayerKind.ADD]
    assert len(adds) == 1
    assert adds[0]["out_format"] in (isa.Format.SPIKE_PLANES, isa.Format.SPIKE_BITMASK)
    assert bool(adds[0]["flags"] & isa.LayerFlags.ADD_AND) == (FORMS[form] == "and")


def test_spike_logic_prints_parses_and_verifies():
    module = import_onnx(_rewrite(_base_model(), "and"))
    text = print_ir(module)
    assert 'snn.spike_logic' in text and '"and"' in text
    reparsed = Parser(make_context(), text).parse_module()
    reparsed.verify()
    assert print_ir(reparsed) == text
    bad = Parser(make_context(), text.replace('op = "and"', 'op = "xor"')).parse_module()
    with pytest.raises(VerifyException, match="xor"):
        bad.verify()


@pytest.mark.parametrize("passes", [
    None,
    "loop-reorder{dataflow=ip-seq},spike-pack",
    "layer-fuse",
    'layer-fuse{boundaries="sew"}',  # the SEW op is a layer that can start a fusion group
])
def test_sew_and_feeding_a_layer_simulates_bit_exact(passes):
    """SEW-AND spikes stored and consumed by the next synapse layer, under the default and other schedules."""
    import onnxruntime as ort

    from snnc.backend.binformat import read_program
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.runtime import simulate

    rng = np.random.default_rng(5)
    net = Network(timesteps=T)
    x = net.input("x", (1, 8))
    w1, w2 = (rng.integers(-8, 9, size=(8, 16)) / 8.0 for _ in range(2))
    s1, _ = net.lif(net.dense(x, w1, None, name="fc1"), beta=0.5, threshold=0.5, name="lif1")
    s2, _ = net.lif(net.dense(x, w2, None, name="fc2"), beta=0.5, threshold=0.5, name="lif2")
    z = net.spike_or(s1, s2, name="sew")
    s3, _ = net.lif(net.dense(z, rng.integers(-4, 5, size=(16, 8)) / 4.0, None, name="fc3"),
                    beta=0.5, threshold=0.5, name="lif3")
    net.output(s3, "y")
    model = _rewrite(net.to_onnx(form="unrolled"), "and")
    xs = _inputs()
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": xs})[0]
    assert 0 < expected.mean() < 1
    result = compile_model(model, CompileOptions(passes=passes))
    got = simulate(read_program(result.binary), {"x": xs}, functional=True).outputs["y"]
    assert np.array_equal(got, expected)
