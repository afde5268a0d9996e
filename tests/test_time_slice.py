"""`snn.time_slice`: graph outputs that hold part of the time axis, from the IR to the binary.

The op prints and parses back, its verifier states the legality rule, the reference
interpreter gives it a meaning (steps start..start+count-1 of the train), and the lowering
turns it into an output descriptor with a time window (prog.bin format 2.2) that the
runtime decodes to the same array.
"""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, TensorType, f32, i64
from xdsl.parser import Parser
from xdsl.utils.exceptions import VerifyException

from snnc.passes.encode import encode
from snnc.compiler.pipeline import print_ir
from snnc.dialects import make_context
from snnc.dialects.snn import SpikeTrainType, TimeSliceOp, TrainType
from snnc.dialects.snn_interpreter import run_snn
from snnc.runtime import simulate
from test_lowering import Net, lower


def _net(T=4, windows=((3, 1, False), (1, 2, True), (0, 1, True))) -> ModuleOp:
    """dense -> LIF; the spikes whole, the membrane through one time slice per window."""
    rng = np.random.default_rng(2)
    n = Net(T, [("x", SpikeTrainType(T, (2, 6)))])
    s, v = n.lif(n.dense(n.args[0], rng.integers(-4, 5, (6, 5)) / 8, rng.integers(-2, 3, 5) / 8, name="fc1"),
                 name="lif1", beta=0.75)
    outputs = [("spk", s)]
    for k, (start, count, keep) in enumerate(windows):
        op = TimeSliceOp.create_slice(v, start, count, keep)
        n.block.add_op(op)
        outputs.append((f"v{k}", op.output))
    return n.finish(outputs)


def test_prints_parses_and_verifies():
    module = _net()
    text = print_ir(module)
    assert "snn.time_slice %" in text and "{start = 3 : i64, count = 1 : i64}" in text
    assert "-> tensor<2x5xf32>" in text and "-> tensor<2x2x5xf32>" in text and "-> tensor<1x2x5xf32>" in text
    again = Parser(make_context(), text).parse_module()
    again.verify()
    assert print_ir(again) == text


@pytest.mark.parametrize("start,count,shape,message", [
    (3, 2, (2, 2, 5), r"steps 3\.\.4 are outside 0\.\.3"),
    (-1, 1, (2, 5), r"steps -1\.\.-1 are outside"),
    (0, 2, (2, 5), r"result shape \[2, 5\], expected \[2, 2, 5\]\n"),  # (no one-step form for 2 steps)
    (0, 1, (5, 2), r"expected \[1, 2, 5\] or \[2, 5\] \(one step, time axis dropped\)"),
])
def test_verifier_states_the_rule(start, count, shape, message):
    train = TrainType(4, (2, 5))
    main = func.FuncOp("main", ([train], [TensorType(f32, shape)]))
    op = TimeSliceOp.build(operands=[main.body.block.args[0]], result_types=[TensorType(f32, shape)],
                           properties={"start": IntegerAttr(start, i64), "count": IntegerAttr(count, i64)})
    with pytest.raises(VerifyException, match=message):
        op.verify()


def test_interpreter_takes_the_steps():
    module = _net()
    x = (np.random.default_rng(3).random((4, 2, 6)) < 0.5).astype(np.float32)
    out = run_snn(module, {"x": x})
    whole = run_snn(_net(windows=((0, 4, True),)), {"x": x})["v0"]  # the membrane train itself
    assert np.array_equal(out["v0"], whole[3]) and out["v0"].shape == (2, 5)
    assert np.array_equal(out["v1"], whole[1:3])
    assert np.array_equal(out["v2"], whole[0:1])
    assert 0 < out["spk"].mean() < 1


def test_output_descriptors_carry_the_window_and_the_simulator_matches():
    module = _net()
    image = encode(lower(module))
    windows = {d.name: (d.t0, d.nt, d.onnx_shape) for d in image.io if d.is_output}
    assert windows == {"spk": (0, 4, (4, 2, 5)), "v0": (3, 1, (2, 5)), "v1": (1, 2, (2, 2, 5)), "v2": (0, 1, (1, 2, 5))}
    assert len({d.dram_addr for d in image.io if d.name.startswith("v")}) == 1  # one stored membrane trace
    x = (np.random.default_rng(4).random((4, 2, 6)) < 0.5).astype(np.float32)
    got, expected = simulate(image, {"x": x}).outputs, run_snn(module, {"x": x})
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
