"""The neuron-kind registry (dialects/neurons/): the built-in kinds, and a kind defined in
one test-local module (tests/neuron_kind_decay.py) that is recognised in an exported
ONNX graph, verified, interpreted, quantised, encoded and simulated bit for bit like
the reference interpreter, without any other file knowing it."""

from __future__ import annotations

import importlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from xdsl.utils.exceptions import VerifyException

from snnc.backend.isa import LeakForm, LifFlags, ResetMode
from snnc.compiler.frontend.onnx_import import import_onnx
from snnc.dialects.neurons import isa_fields, kind_named, kinds, register, unregister
from snnc.dialects.snn import LIFOp, SpikeTrainType, main_function
from snnc.dialects.snn_interpreter import lif_forward, run_snn
from snnc.passes.encode import encode
from snnc.runtime.simulator import simulate
from test_lowering import Net, lower, program_of

T = 6


@pytest.fixture
def decay_kind():
    """The test-local kind, registered for one test (importing the module registers it)."""
    module = importlib.import_module("neuron_kind_decay")
    register(module.DecayLIF)
    yield kinds()["decay"]
    unregister("decay")


def test_builtin_kinds_map_onto_the_hardware_leak_forms():
    builtin = kinds()
    assert list(builtin) == ["beta", "tau", "none"]
    assert {k.name: k.hw_leak for k in builtin.values()} == {
        "beta": LeakForm.BETA, "tau": LeakForm.TAU, "none": LeakForm.NONE}
    assert isa_fields("tau", "to_value", "same", "gt", True, False) == dict(
        leak=LeakForm.TAU, reset=ResetMode.TO_VALUE, lif_flags=int(LifFlags.COMPARE_GT | LifFlags.PER_CHANNEL))
    assert isa_fields("none", "zero", "delayed", "ge", False, True) == dict(
        leak=LeakForm.NONE, reset=ResetMode.ZERO, lif_flags=int(LifFlags.DELAYED_RESET | LifFlags.NO_FIRE))
    with pytest.raises(ValueError, match="unknown neuron kind .*'nope'"):
        kind_named("nope")


def test_builtin_charge_steps_are_the_documented_formulas():
    v, i = np.float32([0.75, -1.5]), np.float32([0.25, 2.0])
    p = {"beta": np.float32(0.5), "tau": np.float32(4.0), "v_reset": np.float32(0.5), "threshold": np.float32(1)}
    assert np.array_equal(kind_named("beta").charge(v, i, p), np.float32(0.5) * v + i)
    assert np.array_equal(kind_named("tau").charge(v, i, p), v + (i - (v - np.float32(0.5))) / np.float32(4))
    assert np.array_equal(kind_named("none").charge(v, i, p), v + i)


def _lif_net(leak: str = "decay", n: int = 8, **params):
    rng = np.random.default_rng(3)
    net = Net(T, [("x", SpikeTrainType(T, (1, 16)))])
    w = (rng.integers(-6, 9, (16, n)) / 8).astype(np.float32)
    current = net.dense(net.args[0], w, (rng.integers(-2, 3, n) / 8).astype(np.float32))
    spikes, membrane = net.lif(current, leak=leak, **params)
    return net.finish([("s", spikes), ("v", membrane)])


def _spikes(seed: int = 5) -> dict[str, np.ndarray]:
    return {"x": (np.random.default_rng(seed).random((T, 1, 16)) < 0.5).astype(np.float32)}


def _compile_and_compare(module, inputs, **options) -> dict:
    """Compile, check every layer is exact, simulate; outputs must equal the interpreter's."""
    lowered = lower(module, **options)
    for layer in program_of(lowered).layers():
        assert layer.inexact is None, (layer.symbol, layer.inexact.data)
    expected = run_snn(module, inputs)
    got = simulate(encode(lowered), inputs, functional=True).outputs
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    return {layer.symbol: layer for layer in program_of(lowered).layers()}


@pytest.mark.parametrize("reset, timing", [("subtract", "same"), ("zero", "same"), ("subtract", "delayed"),
                                           ("to_value", "same")])
@pytest.mark.parametrize("tau", [2.0, 4.0, [2.0, 4.0, 1.0, 8.0, 2.0, 4.0, 2.0, 8.0]])
def test_test_local_kind_compiles_and_runs_bit_exact(decay_kind, reset, timing, tau):
    extra = {"v_reset": 0.25} if reset == "to_value" else {}
    module = _lif_net(tau=np.asarray(tau, np.float32), threshold=0.75, reset=reset, reset_timing=timing, **extra)
    inputs = _spikes()
    layers = _compile_and_compare(module, inputs)
    (layer,) = layers.values()
    assert layer.get("leak") == LeakForm.BETA  # the kind maps onto the BETA leak form
    assert 0 < run_snn(module, inputs)["s"].mean() < 1  # (a test that can fail: some spikes, not all)


def test_test_local_kind_semantics_by_hand(decay_kind):
    current = np.float32([[[1.0]], [[0.5]], [[0.5]], [[0.0]]])
    spikes, membranes = lif_forward(current, leak="decay", tau=np.float32(2.0), threshold=np.float32(1.25))
    # v: 1.0; 0.5 + 0.5 = 1.0; 0.5 + 0.5 = 1.0 ... never >= 1.25; a beta = 0.5 LIF agrees here,
    # so also step past the threshold: 1.0 - 0.5 + 1.0 = 1.5 fires, subtract 1.25 -> 0.25
    assert membranes[:, 0, 0].tolist() == [1.0, 1.0, 1.0, 0.5] and not spikes.any()
    spikes, membranes = lif_forward(np.float32([[[1.0]], [[1.0]], [[0.0]]]), leak="decay", tau=np.float32(2.0),
                                    threshold=np.float32(1.25))
    assert spikes[:, 0, 0].tolist() == [0.0, 1.0, 0.0] and membranes[:, 0, 0].tolist() == [1.0, 0.25, 0.125]


def test_kind_parameters_are_verified(decay_kind):
    with pytest.raises(VerifyException, match='tau is required exactly when leak = "tau" or "decay"'):
        _lif_net(threshold=1.0)
    with pytest.raises(VerifyException, match="tau must be >= 1"):
        _lif_net(tau=np.float32(0.5), threshold=1.0)
    with pytest.raises(VerifyException, match='tau is required exactly when leak = "tau" or "decay"'):
        _lif_net(leak="beta", beta=np.float32(0.5), tau=np.float32(2.0), threshold=1.0)  # a parameter it does not take


def test_unregistered_kind_is_a_verify_error():
    with pytest.raises(VerifyException, match=r"leak = 'decay', expected one of \('beta', 'tau', 'none'\)"):
        _lif_net(tau=np.float32(2.0), threshold=1.0)


def _unrolled_decay_neuron(tau: float, threshold: float, K: int = 16, N: int = 8) -> onnx.ModelProto:
    """x[T,1,K] -> per step MatMul -> h = v - v/tau + I, s = h >= thr, v = h - s*thr (as
    SpikingJelly's decay_input=False writes it) -> stacked spikes and the last membrane."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.integers(-6, 9, (K, N)) / 8).astype(np.float32), "W"),
             numpy_helper.from_array(np.zeros((1, N), np.float32), "v_init"),
             numpy_helper.from_array(np.float32(tau), "tau"), numpy_helper.from_array(np.float32(threshold), "thr"),
             numpy_helper.from_array(np.array([0], np.int64), "axes0")]
    nodes, v_prev, spikes = [], "v_init", []
    for t in range(T):
        inits.append(numpy_helper.from_array(np.array(t, np.int64), f"t{t}"))
        nodes += [helper.make_node("Gather", ["x", f"t{t}"], [f"x{t}"], axis=0),
                  helper.make_node("MatMul", [f"x{t}", "W"], [f"I{t}"]),
                  helper.make_node("Div", [v_prev, "tau"], [f"d{t}"], name=f"decay{t}"),
                  helper.make_node("Sub", [v_prev, f"d{t}"], [f"vd{t}"]),
                  helper.make_node("Add", [f"vd{t}", f"I{t}"], [f"h{t}"]),
                  helper.make_node("GreaterOrEqual", [f"h{t}", "thr"], [f"g{t}"]),
                  helper.make_node("Cast", [f"g{t}"], [f"s{t}"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [f"s{t}", "thr"], [f"st{t}"]),
                  helper.make_node("Sub", [f"h{t}", f"st{t}"], [f"v{t}"]),
                  helper.make_node("Unsqueeze", [f"s{t}", "axes0"], [f"u{t}"])]
        spikes.append(f"u{t}")
        v_prev = f"v{t}"
    nodes += [helper.make_node("Concat", spikes, ["spk"], axis=0), helper.make_node("Identity", [v_prev], ["v_last"])]
    graph = helper.make_graph(nodes, "decay", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, 1, K])],
                              [helper.make_tensor_value_info("spk", TensorProto.FLOAT, [T, 1, N]),
                               helper.make_tensor_value_info("v_last", TensorProto.FLOAT, [1, N])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_test_local_kind_is_recognised_in_an_onnx_export(decay_kind):
    """The kind's recognition hook: the unrolled neuron imports as one snn.lif of the new
    kind; its program's spikes equal onnxruntime's and the interpreter's bit for bit."""
    from snnc.compiler.reference import run_onnxruntime

    model = _unrolled_decay_neuron(tau=4.0, threshold=0.75)
    module = import_onnx(model)
    (lif,) = [op for op in main_function(module).walk() if isinstance(op, LIFOp)]
    assert (lif.leak.data, float(lif.parameter("tau")), lif.reset.data) == ("decay", 4.0, "subtract")
    inputs = _spikes(11)  # 0/1 values in a float input: |x| <= 1
    _compile_and_compare(module, inputs, input_abs_max=1.0)
    onnx_out = run_onnxruntime(model.SerializeToString(), inputs)
    ours = run_snn(module, inputs)
    np.testing.assert_array_equal(ours["spk"], onnx_out["spk"])
    assert 0 < ours["spk"].mean() < 1


def test_without_the_kind_the_export_is_an_approximate_beta(decay_kind):
    """Unregistered, the same graph falls back to beta = 1 - 1/tau (the built-in reading)."""
    unregister("decay")
    module = import_onnx(_unrolled_decay_neuron(tau=4.0, threshold=0.75))
    (lif,) = [op for op in main_function(module).walk() if isinstance(op, LIFOp)]
    assert (lif.leak.data, float(lif.parameter("beta"))) == ("beta", 0.75)


def test_plugin_kinds_load_from_the_entry_point_group(monkeypatch):
    """`snnc.neuron_kinds` entry points are imported after the built-ins (importing registers
    the kind); one that cannot be imported is a one-line error naming it."""
    import importlib.metadata

    import snnc.dialects.neurons as registry
    from snnc.backend.errors import SnncError

    def group(value):
        return lambda group: [importlib.metadata.EntryPoint("decay", value, group)] \
            if group == registry.PLUGIN_GROUP else []

    import sys

    monkeypatch.setattr(registry, "_builtin", [])  # as in a fresh process
    monkeypatch.delitem(sys.modules, "neuron_kind_decay", raising=False)
    monkeypatch.setattr(registry, "entry_points", group("neuron_kind_decay"))
    try:
        assert list(registry.kinds()) == ["beta", "tau", "none", "decay"]
    finally:
        unregister("decay")
    monkeypatch.setattr(registry, "_builtin", [])
    monkeypatch.setattr(registry, "entry_points", group("no_such_module_xyz"))
    with pytest.raises(SnncError, match=r"^neuron kind plugin 'decay' \(no_such_module_xyz\): cannot import: "):
        registry.kinds()
