"""Pools and adds on multi-bit values take their scale from the quantised source.

Regression: the lowering decides a synapse group's fixed-point scale only when it
builds the program, so a pool or add placed directly on synaptic currents must
not copy the placeholder scale it sees during analysis (it lost every
fractional bit: 85 % spike agreement on a snnTorch Conv -> MaxPool -> Leaky).
"""

import numpy as np
import pytest

from snnc.compiler.frontend.canonical import Network
from snnc.compiler.pipeline import compile_model
from snnc.compiler.reference import run_onnxruntime
from snnc.runtime import simulate


def _net(pool: str) -> tuple[Network, dict]:
    rng = np.random.default_rng(0)
    net = Network(timesteps=4)
    x = net.input("x", (1, 2, 8, 8))
    w1 = (rng.integers(-7, 8, (8, 2, 3, 3)) / 8).astype(np.float32)
    h = net.conv2d(x, w1, pads=1, name="conv")
    if pool == "max":
        h = net.max_pool2d(h, 2, name="pool")
    elif pool == "avg":
        h = net.avg_pool2d(h, 2, name="pool")
    else:  # a residual add of a current and a pooled-free second current
        w2 = (rng.integers(-7, 8, (8, 2, 1, 1)) / 8).astype(np.float32)
        h = net.add(h, net.max_pool2d(net.conv2d(x, w2, name="conv_b"), 1, name="id_pool"), name="add")
    s, v = net.lif(h, beta=0.5, threshold=1.0, name="lif")
    net.output(s, "spk")
    net.output(v, "mem")
    inputs = {"x": (rng.integers(-32, 32, (4, 1, 2, 8, 8)) / 16).astype(np.float32)}
    return net, inputs


@pytest.mark.parametrize("pool", ["max", "avg", "add"])
def test_pool_or_add_on_currents_is_exact(pool):
    net, inputs = _net(pool)
    model = net.to_onnx()
    result = compile_model(model)
    got = simulate(result.image, inputs, functional=True).outputs
    expected = run_onnxruntime(model.SerializeToString(), inputs)
    for name, ref in expected.items():
        np.testing.assert_array_equal(got[name], ref, err_msg=name)
