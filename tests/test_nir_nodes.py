"""NIR LI, CubaLIF, Scale, Conv1d and nested graphs (issue 3), against a numpy
forward-Euler reference of the NIR semantics (the discretisation of nir_import's
docstring, dt = 1e-4) through `snnc model.nir -o prog.bin` and the simulator.

Taus are multiples of dt and weights small multiples of powers of two, so every
product is representable: the simulator must agree exactly (spikes) or to float
rounding (membranes).
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr

import numpy as np
import pytest

nir = pytest.importorskip("nir")

from snnc.backend.errors import FrontendError  # noqa: E402
from snnc.compiler.cli import main  # noqa: E402
from snnc.compiler.frontend.nir_import import import_nir  # noqa: E402
from snnc.compiler.pipeline import print_ir  # noqa: E402
from snnc.dialects import make_context  # noqa: E402
from snnc.dialects.snn_interpreter import run_snn  # noqa: E402
from snnc.runtime import load_program, simulate  # noqa: E402

T, DT = 6, 1e-4


def _io(shape):
    return nir.Input(input_type={"input": np.array(shape)}), nir.Output(output_type={"output": np.array(shape)})


def _weights(rng, shape, step=8):
    return (rng.integers(-step, step + 1, size=shape) / step).astype(np.float32)


def _compile_and_simulate(tmp_path, graph, x, name="input"):
    path = tmp_path / "m.nir"
    nir.write(str(path), graph)
    out = tmp_path / "p.bin"
    err = io.StringIO()
    with redirect_stderr(err):
        assert main([str(path), "-o", str(out), "--timesteps", str(T), "--weight-bits", "16"]) == 0, err.getvalue()
    assert "forward Euler" in err.getvalue()
    sim = simulate(load_program(out), {name: x}, functional=True)
    return sim.outputs["output"], err.getvalue()


def _euler_leak(x, tau, gain):
    """v[t] = (1 - dt/tau) v[t-1] + gain x[t] (forward Euler of tau dv/dt = -v + ...)."""
    v, out = np.zeros_like(x[0], dtype=np.float64), []
    for t in range(x.shape[0]):
        v = (1 - DT / tau) * v + gain * x[t]
        out.append(v)
    return np.stack(out)


def _euler_lif(current, tau, thr):
    """LIF on a current: v = (1-dt/tau) v + I, fire on v > thr, reset to 0."""
    v, out = np.zeros_like(current[0]), []
    for t in range(current.shape[0]):
        v = (1 - DT / tau) * v + current[t]
        s = (v > thr).astype(np.float64)
        v = np.where(s > 0, 0.0, v)
        out.append(s)
    return np.stack(out)


def _cuba_li_graph(rng):
    w1, w2 = _weights(rng, (16, 8)), _weights(rng, (4, 16))
    inp, outp = _io([8])
    outp = nir.Output(output_type={"output": np.array([4])})
    tau_syn, tau_mem, tau_li = 2 * DT, 4 * DT, 2 * DT
    graph = nir.NIRGraph(
        nodes={
            "input": inp,
            "fc1": nir.Affine(w1, np.zeros(16, np.float32)),
            "cuba": nir.CubaLIF(tau_syn=np.full(16, tau_syn), tau_mem=np.full(16, tau_mem), r=np.full(16, 2.0),
                                v_leak=np.zeros(16), v_threshold=np.full(16, 0.25), v_reset=np.zeros(16),
                                w_in=np.full(16, 2.0)),
            "fc2": nir.Linear(w2),
            "li": nir.LI(tau=np.full(4, tau_li), r=np.full(4, 2.0), v_leak=np.zeros(4)),
            "output": outp,
        },
        edges=[("input", "fc1"), ("fc1", "cuba"), ("cuba", "fc2"), ("fc2", "li"), ("li", "output")],
        type_check=False,
    )

    def reference(x):
        x = x.astype(np.float64)
        syn = _euler_leak(x @ w1.T, tau_syn, 2.0 * DT / tau_syn)  # tau_syn dI/dt = -I + w_in x
        spikes = _euler_lif(syn * (2.0 * DT / tau_mem), tau_mem, 0.25)  # tau_mem dv/dt = -v + r I
        return _euler_leak(spikes @ w2.T, tau_li, 2.0 * DT / tau_li), spikes

    return graph, reference


def test_cuba_lif_and_li_compile_and_match_forward_euler(tmp_path):
    rng = np.random.default_rng(0)
    graph, reference = _cuba_li_graph(rng)
    x = (rng.integers(0, 9, size=(T, 1, 8)) / 2.0).astype(np.float32)
    expected, spikes = reference(x)
    assert 0 < spikes.mean() < 1 and np.abs(expected).max() > 0  # the test exercises firing and leaking
    module = import_nir(graph, timesteps=T, warn=lambda m: None)
    lifs = [op for op in module.walk() if op.name == "snn.lif"]
    assert [op.no_fire is not None for op in lifs] == [True, False, True]  # syn stage, LIF, LI
    np.testing.assert_allclose(run_snn(module, {"input": x})["output"], expected, rtol=1e-5, atol=1e-6)
    got, _ = _compile_and_simulate(tmp_path, graph, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_li_no_fire_prints_parses_and_is_verified():
    from xdsl.parser import Parser
    from xdsl.utils.exceptions import VerifyException

    graph, _ = _cuba_li_graph(np.random.default_rng(0))
    text = print_ir(import_nir(graph, timesteps=T, warn=lambda m: None))
    assert text.count("no_fire") == 2
    reparsed = Parser(make_context(), text).parse_module()
    reparsed.verify()
    assert print_ir(reparsed) == text
    bad = Parser(make_context(), text.replace('no_fire, reset = "zero"', 'no_fire, reset = "subtract"', 1)
                 if 'no_fire, reset = "zero"' in text else text.replace('no_fire', 'no_fire, reset_timing = "delayed"', 1))
    with pytest.raises(Exception):
        bad.parse_module().verify()
    with pytest.raises(VerifyException, match="no_fire"):
        m = Parser(make_context(), text).parse_module()
        for op in m.walk():
            if op.name == "snn.lif" and op.no_fire is not None:
                from xdsl.dialects.builtin import StringAttr
                op.reset = StringAttr("subtract")
                break
        m.verify()


def test_nested_graph_with_conv1d_and_scale(tmp_path):
    rng = np.random.default_rng(1)
    w = _weights(rng, (4, 2, 3), step=4)
    bias = np.zeros(4, np.float32)
    inner_in, inner_out = nir.Input(input_type={"input": np.array([2, 8])}), nir.Output(output_type={"output": np.array([4, 8])})
    inner = nir.NIRGraph(
        nodes={"input": inner_in, "conv": nir.Conv1d(8, w, 1, 1, 1, 1, bias),
               "scale": nir.Scale(np.full((4, 8), 0.5, np.float32)), "output": inner_out},
        edges=[("input", "conv"), ("conv", "scale"), ("scale", "output")],
        type_check=False,
    )
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([2, 8])}), "block": inner,
               "if1": nir.IF(r=np.full((4, 8), 1.0 / DT), v_threshold=np.full((4, 8), 1.0), v_reset=np.zeros((4, 8))),
               "output": nir.Output(output_type={"output": np.array([4, 8])})},
        edges=[("input", "block"), ("block", "if1"), ("if1", "output")],
        type_check=False,
    )
    x = (rng.integers(0, 5, size=(T, 1, 2, 8)) / 2.0).astype(np.float32)
    # reference: conv1d (padding 1) * 0.5, then IF v += I, fire v > 1, reset to 0
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (0, 0), (1, 1)))
    conv = np.stack([np.einsum("tbck,ock->tbo", padded[..., i:i + 3], w) for i in range(8)], axis=-1) * 0.5
    expected = _euler_lif(conv, np.inf, 1.0)
    assert 0 < expected.mean() < 1
    module = import_nir(graph, timesteps=T, warn=lambda m: None)
    sources = [op.source.data for op in module.walk() if op.name in ("snn.conv2d", "snn.lif")]
    assert sources == ["block.conv", "if1"]  # the nested graph is flattened
    x4 = x[:, :, :, None, :]  # a 1-D signal [C, L] is carried as [C, 1, L]
    np.testing.assert_array_equal(run_snn(module, {"input": x4})["output"][:, :, :, 0, :], expected)
    got, _ = _compile_and_simulate(tmp_path, graph, x4)
    np.testing.assert_array_equal(got[:, :, :, 0, :], expected)


def test_li_on_spikes_is_rejected_by_name():
    inp, outp = _io([4])
    graph = nir.NIRGraph(
        nodes={"input": inp, "if1": nir.IF(r=np.full(4, 1.0 / DT), v_threshold=np.ones(4), v_reset=np.zeros(4)),
               "li": nir.LI(tau=np.full(4, 2 * DT), r=np.ones(4), v_leak=np.zeros(4)), "output": outp},
        edges=[("input", "if1"), ("if1", "li"), ("li", "output")], type_check=False,
    )
    with pytest.raises(FrontendError, match=r"NIR node 'li' \(LI\): its input is spikes"):
        import_nir(graph, timesteps=T, warn=lambda m: None)
