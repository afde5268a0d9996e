"""End-to-end tests of the `snnc` command line: the user's view of the spine.

Each bad-input case checks the three promises: a one-line error naming the
culprit, a non-zero exit, and no output file left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from snnc.compiler.cli import main


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def vgg_small(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("vgg")
    model, inputs = tmp / "m.onnx", tmp / "in.npz"
    assert run_cli("zoo", "vgg-small", "-o", model, "--input-out", inputs) == 0
    return model, inputs


@pytest.fixture(scope="module")
def vgg_program(vgg_small, tmp_path_factory) -> Path:
    prog = tmp_path_factory.mktemp("prog") / "prog.bin"
    assert run_cli(vgg_small[0], "-o", prog) == 0
    return prog


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("snnc: error: "), err[0]
    assert "Traceback" not in err[0]
    return err[0]


# --------------------------------------------------------------------------------------
# the happy path
# --------------------------------------------------------------------------------------


def test_zoo_list(capsys):
    assert run_cli("zoo", "--list") == 0
    out = capsys.readouterr().out
    assert "mlp" in out and "vgg-small" in out


def test_zoo_weight_profile(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    assert run_cli("zoo", "vgg-small", "-o", model, "--weight-profile", "fan-in", "--weight-sparsity", "0.7") == 0
    capsys.readouterr()
    assert run_cli("zoo", "vgg-small", "-o", tmp_path / "bad.onnx", "--weight-profile", "lth") == 1
    assert "weight_profile must be one of layerwise, uniform, fan-in, fan-out, got 'lth'" in one_error_line(capsys)
    assert not (tmp_path / "bad.onnx").exists()
    assert run_cli("zoo", "vgg-small", "-o", tmp_path / "bad.onnx", "--filter-spread", "9") == 1
    assert "filter_spread must be in [0, 3.0], got 9.0" in one_error_line(capsys)
    assert run_cli("zoo", "vgg-small", "-o", tmp_path / "bad.onnx", "--spike-profile", "layerwise") == 1
    assert "zoo model 'vgg-small' has no per-layer table for spike_profile 'layerwise'" in one_error_line(capsys)
    assert not (tmp_path / "bad.onnx").exists()
    assert run_cli("zoo", "vgg-small", "-o", model, "--filter-spread", "0.5", "--spike-profile", "uniform") == 0


def test_compile_run_matches_onnxruntime(vgg_small, vgg_program, tmp_path):
    from snnc.compiler.reference import run_onnxruntime

    model, inputs = vgg_small
    out, report = tmp_path / "out.npz", tmp_path / "r.json"
    assert run_cli("run", vgg_program, "--input", inputs, "--output", out, "--report", report, "--quiet") == 0
    feeds = dict(np.load(inputs))
    expected = run_onnxruntime(model, feeds)
    got = dict(np.load(out))
    assert set(got) == set(expected)
    for name, ref in expected.items():
        assert got[name].dtype == ref.dtype and got[name].shape == ref.shape
        np.testing.assert_array_equal(got[name], ref)
    data = json.loads(report.read_text())
    for key in ("cycles", "bound_cycles", "dram_bytes", "sram_bytes", "energy_pj"):
        assert data["total"][key] > 0, key
    assert data["total"]["cycles"] >= data["total"]["bound_cycles"]
    names = {n.name for n in onnx.load(model).graph.node}
    for layer in data["layers"]:
        assert layer["name"] in names  # reports are keyed by ONNX node names
        for key in ("cycles", "dram_bytes", "sram_bytes", "energy_pj", "matched_ops", "silent_ratio"):
            assert key in layer


def test_compile_is_deterministic(vgg_small, vgg_program, tmp_path):
    again = tmp_path / "again.bin"
    assert run_cli("compile", vgg_small[0], "-o", again) == 0
    assert again.read_bytes() == vgg_program.read_bytes()


def test_verify_exit_codes(vgg_small):
    model, inputs = vgg_small
    assert run_cli("verify", model, "--input", inputs) == 0


def test_verify_reports_agreement_when_quantised(tmp_path, capsys):
    """Arbitrary float weights are quantised; verify reports agreement per output."""
    model, inputs = tmp_path / "m.onnx", tmp_path / "in.npz"
    assert run_cli("zoo", "mlp", "-o", model, "--input-out", inputs) == 0
    proto = onnx.load(model)
    rng = np.random.default_rng(1)
    perturbed = 0
    for init in proto.graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        if arr.ndim == 2 and arr.shape[0] > 1 and np.any(arr):  # weights, not the zero state
            noisy = (arr * rng.uniform(0.97, 1.03, arr.shape)).astype(np.float32)
            init.CopyFrom(onnx.numpy_helper.from_array(noisy, init.name))
            perturbed += 1
    assert perturbed >= 2
    onnx.save(proto, model)
    capsys.readouterr()
    status = run_cli("verify", model, "--input", inputs, "--weight-bits", "16",
                     "--min-agreement", "0.9", "--atol", "1e-3")
    err = capsys.readouterr().err
    assert "agreement" in err and "spikes" in err and "quantised inexactly" in err.replace("\n", " ")
    assert status == 0
    # Demanding exactness from a quantised model must fail, with the agreement shown.
    status = run_cli("verify", model, "--input", inputs, "--weight-bits", "4")
    err = capsys.readouterr().err
    assert status == 1 and "FAIL" in err and "%" in err


@pytest.mark.parametrize("level", ["snn-ir", "accel-ir", "asm"])
def test_emit_levels(vgg_small, level, capsys):
    assert run_cli(vgg_small[0], "--emit", level) == 0
    out = capsys.readouterr().out
    marker = {"snn-ir": "snn.lif", "accel-ir": "accel.syn", "asm": "syn"}[level]
    assert marker in out


def test_emitted_ir_parses_back(vgg_small, capsys):
    from snnc.compiler.pipeline import print_ir
    from snnc.dialects import make_context
    from xdsl.parser import Parser

    for level in ("snn-ir", "accel-ir"):
        assert run_cli(vgg_small[0], "--emit", level) == 0
        text = capsys.readouterr().out
        module = Parser(make_context(), text).parse_module()
        module.verify()
        assert print_ir(module) == text


def test_print_ir_after_all(vgg_small, tmp_path, capsys):
    assert run_cli(vgg_small[0], "-o", tmp_path / "p.bin", "--print-ir-after-all") == 0
    err = capsys.readouterr().err
    assert "IR after import-onnx" in err and "IR after convert-snn-to-accel" in err


def test_disasm(vgg_program, capsys):
    assert run_cli("disasm", vgg_program) == 0
    out = capsys.readouterr().out
    assert "dma.load" in out and "syn" in out and "lif" in out


def test_passes_lists_lowering(capsys):
    assert run_cli("passes") == 0
    assert "convert-snn-to-accel" in capsys.readouterr().out


def test_console_script_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snnc.compiler.cli", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "p.bin")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("snnc: error:")
    assert not (tmp_path / "p.bin").exists()


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 10
    onnx.save(model, path)
    return path


def _gemm_model(x_shape, w_shape, extra_nodes=(), gather=True) -> onnx.ModelProto:
    """A one-step 'model': Gather(x, 0) -> Gemm; used to build broken variants."""
    w = helper.make_tensor("W", TensorProto.FLOAT, w_shape, np.zeros(w_shape, np.float32).ravel())
    idx = helper.make_tensor("t0", TensorProto.INT64, [], [0])
    nodes = []
    src = "x"
    if gather:
        nodes.append(helper.make_node("Gather", ["x", "t0"], ["x0"], axis=0, name="gather_t0"))
        src = "x0"
    nodes.append(helper.make_node("Gemm", [src, "W"], ["y"], name="fc1"))
    nodes.extend(extra_nodes)
    out_name = nodes[-1].output[0]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)], [w, idx])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_missing_file(tmp_path, capsys):
    assert run_cli(tmp_path / "nope.onnx", "-o", tmp_path / "p.bin") == 1
    assert "nope.onnx" in one_error_line(capsys)
    assert not (tmp_path / "p.bin").exists()


def test_not_onnx(tmp_path, capsys):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("this is not a protobuf")
    assert run_cli(bogus, "-o", tmp_path / "p.bin") == 1
    assert "bogus.onnx" in one_error_line(capsys)
    assert not (tmp_path / "p.bin").exists()


def test_unsupported_op_names_node(tmp_path, capsys):
    sin = helper.make_node("Sin", ["y"], ["z"], name="weird_sin")
    path = _save(_gemm_model([4, 1, 3], [3, 2], [sin]), tmp_path / "m.onnx")
    assert run_cli(path, "-o", tmp_path / "p.bin") == 1
    line = one_error_line(capsys)
    assert "weird_sin" in line and "Sin" in line
    assert not (tmp_path / "p.bin").exists()


def test_no_time_axis(tmp_path, capsys):
    path = _save(_gemm_model([1, 3], [3, 2], gather=False), tmp_path / "m.onnx")
    assert run_cli(path, "-o", tmp_path / "p.bin") == 1
    assert "time" in one_error_line(capsys).lower()
    assert not (tmp_path / "p.bin").exists()


def test_shape_mismatch_names_node(tmp_path, capsys):
    path = _save(_gemm_model([4, 1, 3], [5, 2]), tmp_path / "m.onnx")
    assert run_cli(path, "-o", tmp_path / "p.bin") == 1
    assert "fc1" in one_error_line(capsys)
    assert not (tmp_path / "p.bin").exists()


@pytest.mark.parametrize(
    "corrupt, field",
    [
        (lambda b: b"XXXXXXXX" + b[8:], "magic"),
        (lambda b: b[:8] + (999).to_bytes(2, "little") + b[10:], "version"),
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b[:-100] + bytes([b[-100] ^ 0xFF]) + b[-99:], "checksum"),
    ],
)
def test_corrupt_binary(vgg_program, vgg_small, tmp_path, capsys, corrupt, field):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(corrupt(vgg_program.read_bytes()))
    out = tmp_path / "out.npz"
    assert run_cli("run", bad, "--input", vgg_small[1], "--output", out) == 1
    assert field in one_error_line(capsys).lower()
    assert not out.exists()


def test_npz_missing_input(vgg_program, tmp_path, capsys):
    empty = tmp_path / "empty.npz"
    np.savez(empty, something_else=np.zeros(3, np.float32))
    out = tmp_path / "out.npz"
    assert run_cli("run", vgg_program, "--input", empty, "--output", out) == 1
    line = one_error_line(capsys)
    assert "input" in line
    assert not out.exists()


def test_npz_misshaped_input(vgg_program, vgg_small, tmp_path, capsys):
    name, arr = next(iter(np.load(vgg_small[1]).items()))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{name: np.zeros(arr.shape[:-1] + (arr.shape[-1] + 1,), np.float32)})
    out = tmp_path / "out.npz"
    assert run_cli("run", vgg_program, "--input", bad, "--output", out) == 1
    assert name in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "spec, expected",
    [
        ('time-batch{timesteps=1},layer-fuse{boundaries="conv3",tile_rows=4}', "column"),
        ("no-such-pass", "no-such-pass"),
        ("time-batch{no_such_option=1}", "no_such_option"),
        ("time-batch{timesteps=banana}", "timesteps"),
    ],
)
def test_bad_pass_pipeline(vgg_small, tmp_path, capsys, spec, expected):
    assert run_cli(vgg_small[0], "-o", tmp_path / "p.bin", "--passes", spec) == 1
    assert expected in one_error_line(capsys)
    assert not (tmp_path / "p.bin").exists()


def test_bad_hw_config_names_key(vgg_small, tmp_path, capsys):
    cfg = tmp_path / "hw.toml"
    cfg.write_text("[compute]\nnum_pes = 16\nnum_pez = 3\n")
    assert run_cli(vgg_small[0], "-o", tmp_path / "p.bin", "--hw", cfg) == 1
    assert "num_pez" in one_error_line(capsys)
    assert not (tmp_path / "p.bin").exists()


def test_demo(capsys):
    assert run_cli("demo") == 0
    assert "PASS" in capsys.readouterr().err


def test_unwritable_csv_directory(vgg_program, vgg_small, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    report = tmp_path / "r.json"
    assert run_cli("run", vgg_program, "--input", vgg_small[1], "--csv", blocker / "reports",
                   "--report", report, "--quiet") == 1
    assert "a_file" in one_error_line(capsys)
    assert not report.exists()  # nothing half-done: the check comes before any output


def test_lazy_status_shows_only_after_its_delay():
    """`snnc zoo` names the layer it calibrates, on a terminal, once a build takes a second."""
    import io

    from rich.console import Console
    from snnc.compiler.cli import LazyStatus

    now = [0.0]
    out = io.StringIO()
    status = LazyStatus(Console(file=out, force_terminal=True), "building m", after=1.0, clock=lambda: now[0])
    status.calibrating("conv1.lif")
    assert status._status is None  # quick: silent
    now[0] = 1.5
    status.calibrating("conv2.lif")
    status.stop()
    assert "building m: calibrating conv2.lif" in out.getvalue() and "conv1.lif" not in out.getvalue()


def test_zoo_build_reports_each_neuron_layer():
    from snnc.compiler import zoo

    seen = []
    net, _ = zoo.build_network("vgg-small", on_layer=seen.append)
    assert seen == [layer.name for layer in net.layers if layer.kind in ("lif", "if")] and len(seen) >= 3
