"""Legacy SpikingJelly 0.0.0.0.14 multi-step exports: an ONNX Loop writing spikes with ScatterND.

The real exporter could not be run here, so the models are built by hand to mirror the structure
recorded in docs/onnx-snn-encodings.md: a SeqToANNContainer Linear (Reshape [T*B, K], Gemm,
Reshape back), a trip count from Shape(h), and a Loop body that gathers h[i], charges the neuron,
compares with GreaterOrEqual and writes the spike of step i into a loop-carried [T, B, N] buffer
with ScatterND. The graph output has dynamic dims (Loopspk_dim_0, ...).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from snnc.backend.errors import FrontendError
from snnc.compiler.pipeline import compile_model
from snnc.runtime import simulate

T, B, K, N = 6, 2, 5, 4


def _const(name, value, dtype=np.float32):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, dtype), name + "_v"))


def legacy_model(neuron: str = "lif", reset: str = "hard", sub_compare: bool = False,
                 bad_indices: bool = False, per_step: bool = False, index_rank: int = 2,
                 seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    W = (rng.integers(-4, 9, (N, K)) / 8).astype(np.float32)  # Gemm transB=1 (torch Linear)
    bias = (rng.integers(-2, 3, (N,)) / 8).astype(np.float32)
    thr, tau, v_reset = 1.0, 2.0, 0.0

    body_nodes = [
        helper.make_node("Identity", ["cond"], ["cond_out"], name="cond_id"),
    ]
    if per_step:  # the Linear inside the body, on x[i] (x captured from the outer scope)
        body_nodes += [helper.make_node("Gather", ["x", "i"], ["x_i"], axis=0, name="gather_t"),
                       helper.make_node("Gemm", ["x_i", "W", "bias"], ["x_t"], transB=1, name="fc_t")]
    else:
        body_nodes += [helper.make_node("Gather", ["h", "i"], ["x_t"], axis=0, name="gather_t")]
    body_nodes += [
        _const("thr", thr), _const("v_reset", v_reset), _const("one", 1.0), _const("zero", 0.0),
    ]
    if neuron == "lif":  # v + (x - (v - v_reset)) / tau
        body_nodes += [
            _const("tau", tau),
            helper.make_node("Sub", ["v", "v_reset"], ["dv"], name="lif_sub_vr"),
            helper.make_node("Sub", ["x_t", "dv"], ["xd"], name="lif_sub_x"),
            helper.make_node("Div", ["xd", "tau"], ["xdt"], name="lif_div"),
            helper.make_node("Add", ["v", "xdt"], ["vc"], name="lif_charge"),
        ]
    else:  # IF: v + x
        body_nodes += [helper.make_node("Add", ["v", "x_t"], ["vc"], name="if_charge")]
    if sub_compare:
        body_nodes += [helper.make_node("Sub", ["vc", "thr"], ["vm"], name="sub_thr"),
                       helper.make_node("GreaterOrEqual", ["vm", "zero"], ["g"], name="fire")]
    else:
        body_nodes += [helper.make_node("GreaterOrEqual", ["vc", "thr"], ["g"], name="fire")]
    body_nodes += [helper.make_node("Cast", ["g"], ["s"], to=TensorProto.FLOAT, name="spike")]
    if reset == "hard":  # s * v_reset + (1 - s) * v
        body_nodes += [
            helper.make_node("Mul", ["s", "v_reset"], ["sr"], name="r1"),
            helper.make_node("Sub", ["one", "s"], ["ns"], name="r2"),
            helper.make_node("Mul", ["ns", "vc"], ["nv"], name="r3"),
            helper.make_node("Add", ["sr", "nv"], ["v_next"], name="r4"),
        ]
    else:  # v - s * thr
        body_nodes += [
            helper.make_node("Mul", ["s", "thr"], ["st"], name="r1"),
            helper.make_node("Sub", ["vc", "st"], ["v_next"], name="r2"),
        ]
    if bad_indices:
        body_nodes += [_const("idx", [[0]], np.int64)]
    else:
        body_nodes += [_const("ax0", [0], np.int64),
                       helper.make_node("Unsqueeze", ["i", "ax0"], ["i1"], name="idx_unsq0")]
        if index_rank == 2:
            body_nodes += [helper.make_node("Unsqueeze", ["i1", "ax0"], ["idx"], name="idx_unsq1")]
        else:  # indices [i] (shape [1]) with updates s ([B, N])
            body_nodes += [helper.make_node("Identity", ["i1"], ["idx"], name="idx_id")]
    if index_rank == 2:
        body_nodes += [helper.make_node("Unsqueeze", ["s", "ax0" if not bad_indices else "ax0b"], ["s1"],
                                        name="spk_unsq")]
    else:
        body_nodes += [helper.make_node("Identity", ["s"], ["s1"], name="spk_id")]
    body_nodes += [helper.make_node("ScatterND", ["buf", "idx", "s1"], ["buf_next"], name="write_spk")]
    if bad_indices:
        body_nodes.insert(0, _const("ax0b", [0], np.int64))
    body = helper.make_graph(
        body_nodes, "loop_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, [B, N]),
         helper.make_tensor_value_info("buf", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_next", TensorProto.FLOAT, [B, N]),
         helper.make_tensor_value_info("buf_next", TensorProto.FLOAT, None)],
    )
    outer = [_const("seq_shape", [T, B, N], np.int64)]
    if not per_step:  # SeqToANNContainer(Linear): Reshape [T*B, K], Gemm, Reshape back
        outer += [
            _const("flat_shape", [T * B, K], np.int64),
            helper.make_node("Reshape", ["x", "flat_shape"], ["xf"], name="seq_flatten"),
            helper.make_node("Gemm", ["xf", "W", "bias"], ["hf"], transB=1, name="fc"),
            helper.make_node("Reshape", ["hf", "seq_shape"], ["h"], name="seq_unflatten"),
            helper.make_node("Shape", ["h"], ["h_shape"], name="shape_h"),
        ]
    outer += [
        helper.make_node("Shape", ["x" if per_step else "h"], ["x_shape"], name="shape_x"),
        _const("zero_i", 0, np.int64),
        helper.make_node("Gather", ["x_shape", "zero_i"], ["trip"], axis=0, name="trip_count"),
        _const("cond0", True, np.bool_),
        helper.make_node("ConstantOfShape", ["seq_shape" if per_step else "h_shape"], ["spk_init"], name="spk_zeros",
                         value=numpy_helper.from_array(np.zeros(1, np.float32))),
        helper.make_node("Loop", ["trip", "cond0", "v_init", "spk_init"], ["v_last", "spk"], body=body, name="Loop"),
    ]
    dyn = [f"Loopspk_dim_{d}" for d in range(3)]
    graph = helper.make_graph(
        outer, "legacy_sj",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, B, K])],
        [helper.make_tensor_value_info("spk", TensorProto.FLOAT, dyn)],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(bias, "bias"),
         numpy_helper.from_array(np.zeros((B, N), np.float32), "v_init")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _inputs(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": (rng.integers(-24, 40, (T, B, K)) / 16).astype(np.float32)}


def _ort(model, inputs):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["spk"], inputs)[0]


@pytest.mark.parametrize("neuron,reset,sub_compare,per_step,index_rank", [
    ("lif", "hard", False, False, 2), ("if", "soft", True, False, 2), ("lif", "hard", True, True, 2),
    ("if", "soft", False, True, 1),
])
def test_legacy_loop_scatternd_matches_onnxruntime(neuron, reset, sub_compare, per_step, index_rank):
    model = legacy_model(neuron, reset, sub_compare, per_step=per_step, index_rank=index_rank)
    inputs = _inputs()
    expected = _ort(model, inputs)
    assert expected.shape == (T, B, N) and 0 < expected.mean() < 1
    result = compile_model(model)
    got = simulate(result.image, inputs).outputs["spk"]
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)


def test_legacy_loop_scatternd_with_constant_indices_is_rejected():
    model = legacy_model("lif", "hard", bad_indices=True)
    _ort(model, _inputs())  # a valid ONNX model, just not a time train
    with pytest.raises(FrontendError) as info:
        compile_model(model)
    message = str(info.value)
    assert "\n" not in message and "write_spk" in message
