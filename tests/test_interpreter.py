"""The snn interpreter against hand-computed values (one neuron or tiny tensors, T=4)."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr, UnitAttr

from snnc.backend.errors import InputError
from snnc.dialects.snn import (
    ONNX_NAME_ATTR,
    AvgPool2dOp,
    Conv2dOp,
    DenseOp,
    LIFOp,
    MaxPool2dOp,
    ReshapeOp,
    AddOp,
    SpikeTrainType,
    TrainType,
    int_array,
    tensor_attr,
)
from snnc.dialects.snn_interpreter import run_snn


def _names(*names: str) -> ArrayAttr:
    return ArrayAttr([DictionaryAttr({ONNX_NAME_ATTR: StringAttr(n)}) for n in names])


def _single_op_module(op_class, in_types, out_types, props, out_names=None) -> ModuleOp:
    main = func.FuncOp(
        "main", (in_types, out_types),
        arg_attrs=_names(*[f"in{i}" for i in range(len(in_types))]),
        res_attrs=_names(*(out_names or [f"out{i}" for i in range(len(out_types))])),
    )
    block = main.body.block
    op = op_class.build(operands=list(block.args), result_types=out_types, properties=props)
    block.add_op(op)
    block.add_op(func.ReturnOp(*op.results))
    module = ModuleOp([main])
    module.verify()
    return module


def _run_lif(current, **props):
    """Run one snn.lif on a [T, *shape] current; returns (spikes, membranes)."""
    current = np.asarray(current, np.float32)
    T, shape = current.shape[0], current.shape[1:]
    defaults = {"reset": "subtract", "reset_timing": "same", "compare": "ge"}
    defaults.update(props)
    properties = {}
    for key, value in defaults.items():
        if isinstance(value, str):
            properties[key] = StringAttr(value)
        else:
            properties[key] = tensor_attr(np.asarray(value, np.float32))
    module = _single_op_module(
        LIFOp, [TrainType(T, shape)], [SpikeTrainType(T, shape), TrainType(T, shape)], properties,
    )
    out = run_snn(module, {"in0": current})
    return out["out0"], out["out1"]


def _column(values):
    """A [T=len, B=1, 1] current for one neuron."""
    return np.asarray(values, np.float32).reshape(-1, 1, 1)


def _check(result, spikes, membranes):
    got_s, got_v = result
    np.testing.assert_array_equal(got_s.reshape(-1), np.asarray(spikes, np.float32))
    np.testing.assert_array_equal(got_v.reshape(-1), np.asarray(membranes, np.float32))


# ----------------------------------------------------------------------------------- neurons
# Every expected value below is worked out by hand in the comment next to it.


def test_lif_beta_ge_subtract_same():
    # h = 0.5 v + I, fire h >= 1, v = h - s:
    # t0 h=.5 | t1 h=.25+.5=.75 | t2 h=.375+1=1.375 fire, v=.375 | t3 h=.1875+.25=.4375
    result = _run_lif(_column([0.5, 0.5, 1.0, 0.25]), leak="beta", beta=0.5, threshold=1.0)
    _check(result, [0, 0, 1, 0], [0.5, 0.75, 0.375, 0.4375])


def test_if_ge_zero_reset():
    # h = v + I, fire h >= 1, v = (1-s) h:
    # t0 .5 | t1 1.0 fire (>=), v=0 | t2 1.0 fire, v=0 | t3 .25
    result = _run_lif(_column([0.5, 0.5, 1.0, 0.25]), leak="none", threshold=1.0, reset="zero")
    _check(result, [0, 1, 1, 0], [0.5, 0.0, 0.0, 0.25])


def test_if_gt_subtract():
    # strict compare: t0 .5 | t1 1.0 no fire (1 > 1 false) | t2 2.0 fire v=1 | t3 1.25 fire v=.25
    result = _run_lif(_column([0.5, 0.5, 1.0, 0.25]), leak="none", threshold=1.0, compare="gt")
    _check(result, [0, 0, 1, 1], [0.5, 1.0, 1.0, 0.25])


def test_tau_leak_reset_to_value():
    # h = v + (I - (v - vr)) / tau with tau=2, vr=-.5, I=2, thr=1; reset to vr on a spike:
    # t0 h = 0 + (2 - .5)/2 = .75 | t1 h = .75 + (2 - 1.25)/2 = 1.125 fire, v=-.5
    # t2 h = -.5 + (2 - 0)/2 = .5 | t3 h = .5 + (2 - 1)/2 = 1.0 fire, v=-.5
    result = _run_lif(
        _column([2.0] * 4), leak="tau", tau=2.0, v_reset=-0.5, threshold=1.0, reset="to_value",
    )
    _check(result, [0, 1, 0, 1], [0.75, -0.5, 0.5, -0.5])


def test_beta_zero_reset_and_to_value_differ_only_in_target():
    # beta=.5, thr=1, I=[1.5, .5, 1.25, 0]; zero reset: t0 1.5 fire v0 | t1 .5 | t2 .25+1.25=1.5 fire v0 | t3 0
    zero = _run_lif(_column([1.5, 0.5, 1.25, 0.0]), leak="beta", beta=0.5, threshold=1.0, reset="zero")
    _check(zero, [1, 0, 1, 0], [0.0, 0.5, 0.0, 0.0])
    # to_value .25: t0 fire v=.25 | t1 .125+.5=.625 | t2 .3125+1.25=1.5625 fire v=.25 | t3 .125
    to_value = _run_lif(
        _column([1.5, 0.5, 1.25, 0.0]), leak="beta", beta=0.5, threshold=1.0,
        reset="to_value", v_reset=0.25,
    )
    _check(to_value, [1, 0, 1, 0], [0.25, 0.625, 0.25, 0.125])


def test_delayed_subtract_reset():
    # snnTorch: h = beta v + I - s[t-1] thr (undecayed), v = h; beta=1, thr=1, I=[1.5, 0, .75, 0]
    # t0 1.5 fire | t1 1.5 + 0 - 1 = .5 | t2 .5 + .75 = 1.25 fire | t3 1.25 - 1 = .25
    result = _run_lif(
        _column([1.5, 0.0, 0.75, 0.0]), leak="beta", beta=1.0, threshold=1.0, reset_timing="delayed",
    )
    _check(result, [1, 0, 1, 0], [1.5, 0.5, 1.25, 0.25])


def test_delayed_reset_is_not_decayed():
    # beta=.5, thr=1, I=[2, 0, 0, 0]: t0 h=2 fire, v=2 | t1 h = 1 + 0 - 1 = 0 | t2 0 | t3 0
    # (a decayed reset would give .5)
    result = _run_lif(
        _column([2.0, 0.0, 0.0, 0.0]), leak="beta", beta=0.5, threshold=1.0, reset_timing="delayed",
    )
    _check(result, [1, 0, 0, 0], [2.0, 0.0, 0.0, 0.0])


def test_per_channel_parameters():
    # two channels, I = 1 always. ch0: beta .5, thr 1 -> h = 1 every step, fires, v = 0.
    # ch1: beta 1, thr 2 -> 1, 2 fire -> 0, 1, 2 fire -> 0.
    current = np.ones((4, 1, 2), np.float32)
    spikes, membranes = _run_lif(current, leak="beta", beta=[0.5, 1.0], threshold=[1.0, 2.0])
    np.testing.assert_array_equal(spikes[:, 0, 0], [1, 1, 1, 1])
    np.testing.assert_array_equal(membranes[:, 0, 0], [0, 0, 0, 0])
    np.testing.assert_array_equal(spikes[:, 0, 1], [0, 1, 0, 1])
    np.testing.assert_array_equal(membranes[:, 0, 1], [1, 0, 1, 0])


def test_per_channel_threshold_on_nchw():
    # [B=1, C=2, 1, 2] feature map; channel c has threshold c+1; I = 1.5 for every element
    # IF: ch0 thr 1: 1.5 fire .5 | 2.0 fire 1 | 2.5 fire 1.5 | 3.0 fire 2   (subtract 1 each)
    #     ch1 thr 2: 1.5 | 3.0 fire 1 | 2.5 fire .5 | 2.0 fire 0
    current = np.full((4, 1, 2, 1, 2), 1.5, np.float32)
    spikes, membranes = _run_lif(current, leak="none", threshold=[1.0, 2.0])
    np.testing.assert_array_equal(spikes[:, 0, 0, 0, 0], [1, 1, 1, 1])
    np.testing.assert_array_equal(membranes[:, 0, 0, 0, 1], [0.5, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(spikes[:, 0, 1, 0, 0], [0, 1, 1, 1])
    np.testing.assert_array_equal(membranes[:, 0, 1, 0, 1], [1.5, 1.0, 0.5, 0.0])


# ------------------------------------------------------------------------------- other ops


def test_dense():
    x = np.array([[[1, 0, 1]], [[0, 1, 1]]], np.float32)  # T=2, B=1, K=3
    weight = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
    module = _single_op_module(
        DenseOp, [TrainType(2, (1, 3))], [TrainType(2, (1, 2))],
        {"weight": tensor_attr(weight), "bias": tensor_attr(np.array([0.5, -1], np.float32))},
    )
    # t0: [1+5, 2+6] + b = [6.5, 7]; t1: [3+5, 4+6] + b = [8.5, 9]
    np.testing.assert_array_equal(run_snn(module, {"in0": x})["out0"], [[[6.5, 7]], [[8.5, 9]]])


def test_conv2d_with_padding_and_stride():
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 1, 3, 3)  # T=1; 0..8
    weight = np.ones((1, 1, 2, 2), np.float32)
    module = _single_op_module(
        Conv2dOp, [TrainType(1, (1, 1, 3, 3))], [TrainType(1, (1, 1, 2, 2))],
        {"weight": tensor_attr(weight), "strides": int_array([2, 2]),
         "pads": int_array([1, 1, 0, 0]), "dilations": int_array([1, 1])},
    )
    # padded top/left by one zero row/col; windows at (-1,-1),(−1,1),(1,-1),(1,1):
    # [0] ; [1+2] ; [3+6] ; [4+5+7+8]
    out = run_snn(module, {"in0": x})["out0"]
    np.testing.assert_array_equal(out.reshape(2, 2), [[0, 3], [9, 24]])


def test_pools():
    x = np.array([1, -2, 3, 4, 5, -6, 7, 8, 9], np.float32).reshape(1, 1, 1, 3, 3)
    props = {"kernel": int_array([2, 2]), "strides": int_array([2, 2]), "pads": int_array([0, 0, 1, 1])}
    in_t, out_t = [TrainType(1, (1, 1, 3, 3))], [TrainType(1, (1, 1, 2, 2))]
    max_out = run_snn(_single_op_module(MaxPool2dOp, in_t, out_t, props), {"in0": x})["out0"]
    # windows {1,-2,4,5} {3,-6} {7,8} {9}; padding never wins, even against negatives
    np.testing.assert_array_equal(max_out.reshape(2, 2), [[5, 3], [8, 9]])
    avg = run_snn(_single_op_module(AvgPool2dOp, in_t, out_t, props), {"in0": x})["out0"]
    np.testing.assert_array_equal(avg.reshape(2, 2), [[2, -1.5], [7.5, 9]])
    with_pad = dict(props, count_include_pad=UnitAttr())
    avg_pad = run_snn(_single_op_module(AvgPool2dOp, in_t, out_t, with_pad), {"in0": x})["out0"]
    np.testing.assert_array_equal(avg_pad.reshape(2, 2), [[2, -0.75], [3.75, 2.25]])


def test_reshape_and_add_keep_time_first():
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)  # T=2
    reshaped = run_snn(
        _single_op_module(ReshapeOp, [TrainType(2, (1, 2, 2))], [TrainType(2, (1, 4))], {}), {"in0": x}
    )["out0"]
    np.testing.assert_array_equal(reshaped, [[[0, 1, 2, 3]], [[4, 5, 6, 7]]])
    added = run_snn(
        _single_op_module(AddOp, [TrainType(2, (1, 2, 2))] * 2, [TrainType(2, (1, 2, 2))], {}),
        {"in0": x, "in1": x},
    )["out0"]
    np.testing.assert_array_equal(added, 2 * x)


def test_input_errors():
    module = _single_op_module(ReshapeOp, [TrainType(2, (1, 4))], [TrainType(2, (4, 1))], {})
    with pytest.raises(InputError, match="'in0'"):
        run_snn(module, {})
    with pytest.raises(InputError, match=r"expected shape \[2, 1, 4\]"):
        run_snn(module, {"in0": np.zeros((3, 1, 4), np.float32)})
