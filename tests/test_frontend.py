"""ONNX frontend: canonical models import, run bit-identically to onnxruntime,
round-trip through text, and every bad input is a one-line FrontendError."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from xdsl.context import Context
from xdsl.dialects.builtin import Builtin
from xdsl.dialects.func import Func
from xdsl.parser import Parser
from xdsl.printer import Printer

from snnc.backend.errors import FrontendError
from snnc.compiler import zoo
from snnc.compiler.frontend.canonical import Network
from snnc.compiler.frontend.onnx_import import import_onnx
from snnc.dialects.snn import SNN, LIFOp, tensor_value
from snnc.dialects.snn_interpreter import run_snn

FORMS = ("unrolled", "scan")


def _w(rng, *shape):
    """Representable weights: ints in [-7, 7] * 2^-4."""
    return (rng.integers(-7, 8, size=shape) / 16).astype(np.float32)


def _analog(rng, T, *shape):
    return (rng.integers(-512, 512, size=(T, *shape)) / 256).astype(np.float32)


def _binary(rng, T, *shape):
    return (rng.random((T, *shape)) < 0.4).astype(np.float32)


# ------------------------------------------------------------------ hand-built networks


def net_dense_lif(rng):
    """Gemm (transB=1) + LIF beta 0.5 subtract; spikes and membranes out."""
    net = Network(4)
    x = net.input("x", (2, 8))
    h = net.dense(x, _w(rng, 8, 6), _w(rng, 6), name="fc1")
    s, v = net.lif(h, beta=0.5, threshold=0.25, name="lif1")
    net.output(s, "spikes")
    net.output(v, "membrane")
    return net, {"x": _binary(rng, 4, 2, 8)}


def net_matmul_if_zero(rng):
    """MatMul+Add bias, Gemm transB=0, IF with zero reset, LIF with default attributes."""
    net = Network(5)
    x = net.input("x", (1, 10))
    h = net.dense(x, _w(rng, 10, 7), _w(rng, 7), name="mm", style="matmul")
    s, v = net.if_neuron(h, threshold=0.5, reset="zero", name="if1")
    h2 = net.dense(s, _w(rng, 7, 3), None, name="fc2", style="gemm_kn")
    s2, v2 = net.lif(h2, name="lif_default")  # beta 1, threshold 1, subtract: all defaults
    net.output(v, "if_membrane")
    net.output(s2, "spikes")
    net.output(v2, "membrane")
    return net, {"x": _analog(rng, 5, 1, 10)}


def net_residual(rng):
    """Two LIF layers joined by a residual Add, zero reset, MatMul without bias."""
    net = Network(3)
    x = net.input("x", (2, 6))
    s1, _ = net.lif(net.dense(x, _w(rng, 6, 6), _w(rng, 6), name="fc1"),
                    beta=0.75, threshold=0.25, name="lif1")
    s2, _ = net.lif(net.dense(s1, _w(rng, 6, 6), name="fc2", style="matmul"),
                    beta=0.5, threshold=0.125, reset="zero", name="lif2")
    res = net.add(s1, s2, name="res")
    s3, v3 = net.lif(net.dense(res, _w(rng, 6, 4), _w(rng, 4), name="fc3"),
                     beta=0.875, threshold=0.5, name="lif3")
    net.output(res, "residual")
    net.output(s3, "spikes")
    net.output(v3, "membrane")
    return net, {"x": _binary(rng, 3, 2, 6)}


def net_conv_pools(rng):
    """Conv (stride, pad) + LIF, MaxPool, AveragePool with pads, Reshape, Flatten, dense."""
    net = Network(4)
    x = net.input("x", (1, 2, 9, 9))
    h = net.conv2d(x, _w(rng, 4, 2, 3, 3), _w(rng, 4), strides=1, pads=1, name="conv1")
    s, v = net.lif(h, beta=0.5, threshold=0.5, name="lif1")
    m = net.max_pool2d(s, 3, strides=2, pads=1, name="maxpool")  # 5x5
    h2 = net.conv2d(m, _w(rng, 3, 4, 2, 2), None, strides=2, pads=(0, 0, 1, 1), name="conv2")
    s2, _ = net.if_neuron(h2, threshold=0.25, reset="zero", name="if2")
    a = net.avg_pool2d(s2, 2, strides=1, pads=(0, 0, 1, 1), name="avgpool")
    a2 = net.avg_pool2d(s2, 2, strides=1, pads=(1, 1, 0, 0), count_include_pad=True, name="avgpool_pad")
    r = net.reshape(a, (1, 3 * 3 * 3), name="reshape")
    f = net.flatten(a2, name="flatten")
    both = net.add(r, f, name="join")
    out, vout = net.lif(net.dense(both, _w(rng, 27, 5), _w(rng, 5), name="fc"),
                        beta=0.875, threshold=0.25, name="lif_out")
    net.output(v, "conv_membrane")
    net.output(m, "pooled_spikes")
    net.output(out, "spikes")
    net.output(vout, "membrane")
    return net, {"x": _analog(rng, 4, 1, 2, 9, 9)}


def net_two_inputs_T1(rng):
    """T = 1 and two graph inputs added per step."""
    net = Network(1)
    a = net.input("a", (3, 4))
    b = net.input("b", (3, 4))
    s, v = net.lif(net.add(a, b, name="sum"), beta=0.5, threshold=0.5, name="lif")
    net.output(s, "spikes")
    net.output(v, "membrane")
    return net, {"a": _analog(rng, 1, 3, 4), "b": _analog(rng, 1, 3, 4)}


NETWORKS = [net_dense_lif, net_matmul_if_zero, net_residual, net_conv_pools, net_two_inputs_T1]


def _onnxruntime(model: onnx.ModelProto, inputs) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    return dict(zip(names, session.run(names, inputs)))


def _assert_bit_identical(model, inputs):
    expected = _onnxruntime(model, inputs)
    got = run_snn(import_onnx(model), inputs)
    assert list(got) == [o.name for o in model.graph.output]
    for name, array in expected.items():
        assert got[name].dtype == np.float32
        assert got[name].shape == array.shape, name
        assert np.array_equal(got[name], array), f"output {name} differs"
    return got


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("make", NETWORKS, ids=lambda f: f.__name__)
def test_hand_built_matches_onnxruntime(make, form):
    net, inputs = make(np.random.default_rng(1))
    model = net.to_onnx(form)
    assert model.ir_version <= 13
    got = _assert_bit_identical(model, inputs)
    # the spikes are real spikes (something fired, not everything), so the test has teeth
    spikes = got.get("spikes")
    if spikes is not None:
        assert 0 < spikes.mean() < 1


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", sorted(n for n, m in zoo.ZOO.items() if not m.large))  # large: bench/run.py
def test_zoo_matches_onnxruntime(name, form):
    model, inputs = zoo.build(name, form=form)
    _assert_bit_identical(model, inputs)


def test_file_path_import(tmp_path):
    net, inputs = net_dense_lif(np.random.default_rng(2))
    path = tmp_path / "m.onnx"
    onnx.save(net.to_onnx(), path)
    assert np.array_equal(run_snn(import_onnx(str(path)), inputs)["spikes"],
                          run_snn(import_onnx(path), inputs)["spikes"])


# ----------------------------------------------------------------------- IR structure


def _context() -> Context:
    ctx = Context()
    for dialect in (Builtin, Func, SNN):
        ctx.load_dialect(dialect)
    return ctx


def _print(module) -> str:
    stream = io.StringIO()
    Printer(stream=stream).print_op(module)
    return stream.getvalue()


@pytest.mark.parametrize("form", FORMS)
def test_ir_round_trips_and_verifies(form):
    net, _ = net_conv_pools(np.random.default_rng(3))
    module = import_onnx(net.to_onnx(form))
    module.verify()
    text = _print(module)
    parsed = Parser(_context(), text).parse_module()
    parsed.verify()
    assert _print(parsed) == text


def test_zoo_ir_round_trips():
    module = import_onnx(zoo.build("vgg-small")[0])
    text = _print(module)
    assert _print(Parser(_context(), text).parse_module()) == text


@pytest.mark.parametrize("form", FORMS)
def test_one_op_per_layer_with_source_names(form):
    net, _ = net_residual(np.random.default_rng(4))
    module = import_onnx(net.to_onnx(form))
    main = next(iter(module.ops))
    ops = [op for op in main.body.block.ops if op.name.startswith("snn.")]
    assert [(op.name, op.source.data) for op in ops] == [
        ("snn.dense", "fc1"), ("snn.lif", "lif1"), ("snn.dense", "fc2"), ("snn.lif", "lif2"),
        ("snn.add", "res"), ("snn.dense", "fc3"), ("snn.lif", "lif3"),
    ]
    lif2 = ops[3]
    assert isinstance(lif2, LIFOp)
    assert (lif2.leak.data, lif2.reset.data, lif2.compare.data, lif2.reset_timing.data) == (
        "beta", "zero", "ge", "same")
    assert float(tensor_value(lif2.beta)) == 0.5 and float(tensor_value(lif2.threshold)) == 0.125
    # the ONNX names of the I/O, in ONNX order
    assert [a.data["snn.onnx_name"].data for a in main.arg_attrs.data] == ["x"]
    assert [a.data["snn.onnx_name"].data for a in main.res_attrs.data] == ["residual", "spikes", "membrane"]
    assert str(main.function_type.inputs.data[0]) == "!snn.train<T=3, 2x6xf32>"
    assert str(main.function_type.outputs.data[1]) == "!snn.spikes<T=3, 2x4>"


def test_if_neuron_imports_as_leak_none_with_default_threshold():
    net = Network(2)
    x = net.input("x", (1, 3))
    s, _ = net.if_neuron(net.dense(x, np.eye(3), name="fc"), name="if1")
    net.output(s, "s")
    lif = [op for op in next(iter(import_onnx(net.to_onnx()).ops)).body.block.ops if isinstance(op, LIFOp)][0]
    assert lif.leak.data == "none" and lif.beta is None
    assert float(tensor_value(lif.threshold)) == 1.0 and lif.reset.data == "subtract"


# ------------------------------------------------------------------------------- errors


def _expect_error(model_or_path, *fragments: str) -> str:
    with pytest.raises(FrontendError) as info:
        import_onnx(model_or_path)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def _nodes(model, name):
    """The step nodes of layer `name` (step 0 `name`, copies `name.tK`)."""
    return [n for n in model.graph.node if n.name == name or n.name.startswith(name + ".t")]


def _set_attr(model, layer, **attrs):
    for node in _nodes(model, layer):
        for key, value in attrs.items():
            for i, a in enumerate(node.attribute):
                if a.name == key:
                    del node.attribute[i]
                    break
            node.attribute.append(helper.make_attribute(key, value))


def _replace_initializer(model, name, array):
    for init in model.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(np.asarray(array), name))


def _small_conv_model():
    net = Network(2)
    x = net.input("x", (1, 2, 6, 6))
    s, _ = net.lif(net.conv2d(x, np.ones((4, 2, 3, 3)), name="conv1"), name="lif1")
    net.output(net.max_pool2d(s, 2, name="pool"), "out")
    return net.to_onnx()


def _dense_model(form="unrolled"):
    net = Network(3)
    x = net.input("x", (1, 8))
    s, v = net.lif(net.dense(x, np.ones((8, 4)), name="fc1"), beta=0.5, name="lif1")
    net.output(s, "spikes")
    return net.to_onnx(form)


def test_error_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.onnx", "nope.onnx", "no such ONNX file")


def test_error_not_onnx(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00\xffthis is not a protobuf\x13\x37" * 10)
    _expect_error(path, "garbage.onnx", "not an ONNX model")


def _hand_graph(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def test_error_unsupported_op():
    T = 2
    nodes = []
    for t in range(T):
        nodes += [
            helper.make_node("Gather", ["x", f"i{t}"], [f"x{t}"], name=f"g{t}", axis=0),
            helper.make_node("Sigmoid", [f"x{t}"], [f"y{t}"], name=f"act.t{t}"),
            helper.make_node("LIF", [f"y{t}", f"v{t - 1}"], [f"s{t}", f"v{t}"], name=f"lif.t{t}", domain="snn"),
            helper.make_node("Unsqueeze", [f"s{t}", "ax"], [f"u{t}"], name=f"u{t}"),
        ]
    nodes.append(helper.make_node("Concat", ["u0", "u1"], ["y"], name="cat", axis=0))
    inits = [numpy_helper.from_array(np.array(t, np.int64), f"i{t}") for t in range(T)]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "ax"))
    inits.append(numpy_helper.from_array(np.zeros((1, 4), np.float32), "v-1"))
    model = _hand_graph(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, 1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, 1, 4])], inits,
    )
    model.opset_import.append(helper.make_opsetid("snn", 1))
    _expect_error(model, "'act.t0'", "Sigmoid", "unsupported op")


def test_error_no_time_axis_whole_input_consumed():
    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    model = _hand_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1, 3])], [weight],
    )
    message = _expect_error(model, "no spiking neuron found", "MatMul x1")
    assert "time axis" not in message  # [T, B, ...] is read as given: the model simply has no neuron


def test_error_input_without_time_and_batch_axes():
    model = _hand_graph(
        [helper.make_node("Identity", ["x"], ["y"], name="id")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    _expect_error(model, "graph input 'x'", "[T, B, ...]")


def test_error_shape_mismatch_reports_node():
    model = _dense_model()
    _replace_initializer(model, "fc1.weight", np.ones((4, 9), np.float32))  # K=9, input has 8
    _expect_error(model, "'fc1'", "Gemm", "shape")


def test_error_shape_mismatch_inside_scan_reports_body_node():
    model = _dense_model("scan")
    _replace_initializer(model, "fc1.weight", np.ones((4, 9), np.float32))
    _expect_error(model, "'fc1'", "Gemm")


def test_error_conv_groups():
    model = _small_conv_model()
    _replace_initializer(model, "conv1.weight", np.ones((4, 1, 3, 3), np.float32))
    _set_attr(model, "conv1", group=2)
    _expect_error(model, "'conv1'", "Conv", "group=1", "group=2")


def test_error_pool_ceil_mode():
    model = _small_conv_model()
    _set_attr(model, "pool", ceil_mode=1)
    _expect_error(model, "'pool'", "MaxPool", "ceil_mode=0")


def test_error_gemm_alpha():
    model = _dense_model()
    _set_attr(model, "fc1", alpha=2.0)
    _expect_error(model, "'fc1'", "Gemm", "alpha=1")


def test_dilated_conv_is_accepted():
    net = Network(2)
    x = net.input("x", (1, 1, 7, 7))
    h = net.conv2d(x, _w(np.random.default_rng(5), 2, 1, 3, 3), dilations=2, name="conv")
    s, _ = net.lif(h, beta=0.5, threshold=0.125, name="lif")
    net.output(s, "s")
    _assert_bit_identical(net.to_onnx(), {"x": _analog(np.random.default_rng(6), 2, 1, 1, 7, 7)})


def test_zero_state_from_a_constant_node_is_accepted():
    model = _dense_model()
    zeros = helper.make_tensor("z", TensorProto.FLOAT, [1, 4], np.zeros(4, np.float32))
    model.graph.node.insert(0, helper.make_node("Constant", [], ["state0"], name="state0", value=zeros))
    _nodes(model, "lif1")[0].input[1] = "state0"
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == "lif1.v0"))
    _assert_bit_identical(model, {"x": _binary(np.random.default_rng(7), 3, 1, 8)})


def test_error_nonzero_initial_state():
    model = _dense_model()
    _replace_initializer(model, "lif1.v0", np.full((1, 4), 0.5, np.float32))
    _expect_error(model, "'lif1'", "snn::LIF", "zero constant")


def test_error_nonzero_initial_state_scan():
    model = _dense_model("scan")
    _replace_initializer(model, "lif1.v0", np.full((1, 4), 0.5, np.float32))
    _expect_error(model, "'time_scan'", "Scan", "must be zeros")


def test_error_scan_backwards():
    model = _dense_model("scan")
    model.graph.node[0].attribute.append(helper.make_attribute("scan_input_directions", [1]))
    _expect_error(model, "'time_scan'", "Scan", "scan_input_directions all 0")


def test_error_broken_state_chain():
    model = _dense_model()
    node = _nodes(model, "lif1")[2]  # step 2 restarts from the zero state
    node.input[1] = "lif1.v0"
    _expect_error(model, "'lif1.t2'", "snn::LIF", "v_next of step 1")


def test_error_output_that_is_a_constant():
    model = _dense_model()
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 4), np.float32), "zeros"))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("zeros", TensorProto.FLOAT, [1, 4]))
    _expect_error(model, "graph output 'zeros'", "computed from the input over time", "a constant")


def test_error_steps_out_of_order():
    model = _dense_model()
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    concat.input[0], concat.input[1] = concat.input[1], concat.input[0]
    _expect_error(model, "'spikes.stack'", "Concat", "found steps [1, 0, 2]")


def test_bodyless_neuron_call_means_canonical_lif():
    # issue 3: torch.onnx.ops.symbolic_multi_out("snn::LIF", ...) writes calls without a body;
    # they mean the canonical neuron (attributes, else the defaults), not an error
    model = _dense_model()
    del model.functions[:]
    assert "snn.lif" in str(import_onnx(model))


def test_error_bad_neuron_attribute():
    model = _dense_model()
    _set_attr(model, "lif1", reset_zero=3)
    _expect_error(model, "'lif1'", "snn::LIF", "reset_zero must be 0 or 1")
