"""NIR import (issue 3): graphs from snnTorch's export_to_nir and SpikingJelly's export_to_nir.

snnTorch models use representable weights, so the importer's `snn` module (reference
interpreter) and the compiled program (simulator) reproduce snnTorch's spikes exactly.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr

import numpy as np
import pytest

from exporters_util import B, T, inputs_for, need, representable
from snnc.backend.errors import FrontendError
from snnc.compiler.frontend.nir_import import import_nir
from snnc.dialects.snn_interpreter import run_snn


def _snntorch_nir(tmp_path):
    torch, snn, nir = need("torch"), need("snntorch"), need("nir")
    need("nirtorch")
    from snntorch.export_nir import export_to_nir

    snn.SpikingNeuron.instances = []
    nn = torch.nn
    # per-neuron beta/threshold tensors: export_to_nir fails on scalar beta (encodings doc)
    net = nn.Sequential(
        nn.Linear(12, 10), snn.Leaky(beta=torch.full((10,), 0.5), threshold=torch.ones(10), init_hidden=True,
                                     reset_mechanism="zero"),
        nn.Linear(10, 5), snn.Leaky(beta=torch.full((5,), 0.75), threshold=torch.full((5,), 0.5), init_hidden=True,
                                    reset_mechanism="zero", output=True),
    )
    representable(net)
    with redirect_stderr(io.StringIO()):
        graph = export_to_nir(net, torch.zeros(1, 12), ignore_dims=[0])
    path = tmp_path / "m.nir"
    nir.write(str(path), graph)
    return net, path


def _torch_spikes(net, x):
    torch = need("torch")
    for module in net:
        if hasattr(module, "reset_hidden"):
            module.reset_hidden()
    with torch.no_grad():
        return np.stack([net(torch.tensor(x[t]))[0].numpy() for t in range(x.shape[0])])


def test_snntorch_nir_matches_snntorch(tmp_path):
    net, path = _snntorch_nir(tmp_path)
    x = inputs_for((T, 1, 12))
    warnings: list[str] = []
    module = import_nir(path, timesteps=T, warn=warnings.append)
    assert any("dt = 0.0001" in w for w in warnings)  # the discretisation is stated
    assert any("lossy" in w for w in warnings)  # v_reset = 0: a subtract reset would be lost
    got = run_snn(module, {"input": x})["output"]
    expected = _torch_spikes(net, x)
    assert np.array_equal(got, expected) and 0 < got.mean() < 1


def test_snnc_compiles_nir_file_and_simulator_agrees(tmp_path):
    from snnc.compiler.cli import main
    from snnc.runtime import load_program, simulate

    net, path = _snntorch_nir(tmp_path)
    x = inputs_for((T, 1, 12))
    out = tmp_path / "prog.bin"
    err = io.StringIO()
    with redirect_stderr(err):
        assert main([str(path), "-o", str(out), "--timesteps", str(T)]) == 0
    assert "lossy" in err.getvalue() and "dt = 0.0001" in err.getvalue()
    sim = simulate(load_program(out), {"input": x}, functional=True)
    assert np.array_equal(sim.outputs["output"], _torch_spikes(net, x))


def test_snnc_verify_nir_uses_the_snn_reference_and_says_so(tmp_path, capsys):
    """onnxruntime cannot run NIR: verify compares with the snn-dialect reference interpreter."""
    from snnc.compiler.cli import main

    _, path = _snntorch_nir(tmp_path)
    np.savez(tmp_path / "in.npz", input=inputs_for((T, 1, 12)))
    assert main(["verify", str(path), "--input", str(tmp_path / "in.npz"), "--timesteps", str(T)]) == 0
    captured = capsys.readouterr()
    assert "reference: the snn-dialect reference interpreter (NIR graphs have no onnxruntime form" in \
        captured.out + captured.err
    assert "INVALID_PROTOBUF" not in captured.out + captured.err


def test_nir_is_a_runtime_dependency():
    import tomllib

    from passes_util import REPO

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.split(">")[0].split("=")[0].strip() == "nir" for d in dependencies)


def test_spikingjelly_nir_compiles_and_agrees(tmp_path):
    torch, nir = need("torch"), need("nir")
    need("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir

    torch.manual_seed(0)
    net = torch.nn.Sequential(layer.Linear(12, 10), neuron.LIFNode(tau=2.0, v_reset=0.0),
                              layer.Linear(10, 5), neuron.IFNode(v_reset=0.0))
    with redirect_stderr(io.StringIO()):
        graph = export_to_nir(net, torch.zeros(1, 12))
    path = tmp_path / "sj.nir"
    nir.write(str(path), graph)
    x = inputs_for((T, 1, 12)) * 4
    module = import_nir(path, timesteps=T, warn=lambda m: None)
    got = run_snn(module, {"input_1": x})  # the NIR Input node's name
    functional.reset_net(net)
    with torch.no_grad():
        expected = np.stack([net(torch.tensor(x[t])).numpy() for t in range(T)])
    spikes = next(iter(got.values()))
    # NIR fires on v > threshold, SpikingJelly on >=: they differ only on exact ties
    assert np.mean(spikes == expected) >= 0.99 and 0 < spikes.mean() < 1


def test_nir_unsupported_node_is_rejected_by_name():
    nir = need("nir")
    graph = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array([4])}),
        nir.Affine(np.ones((3, 4), np.float32), np.zeros(3, np.float32)),
        nir.Threshold(threshold=np.ones(3)),
    )
    with pytest.raises(FrontendError, match=r"NIR node .*\(Threshold\): unsupported node type.*CubaLIF"):
        import_nir(graph, warn=lambda m: None)


def test_nir_dt_changes_beta(tmp_path):
    _, path = _snntorch_nir(tmp_path)
    module = import_nir(path, dt=2e-4, warn=lambda m: None)  # tau = 2e-4 for beta 0.5: beta -> 0
    betas = [float(op.parameter("beta")) for op in module.walk() if op.name == "snn.lif"]
    assert betas[0] == 0.0
