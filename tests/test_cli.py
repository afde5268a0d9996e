"""End-to-end tests of the `snnc` command line: the user's view of the spine.

Each bad-input case checks the three promises: a one-line error naming the
culprit, a non-zero exit, and no output file left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from snnc.compiler.cli import main
from snnc.compiler.frontend.canonical import neuron_function


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


@pytest.fixture(scope="module")
def float_mlp(tmp_path_factory) -> tuple[Path, Path]:
    """The zoo MLP with its weights scaled by random factors in [0.97, 1.03]: quantised inexactly."""
    tmp = tmp_path_factory.mktemp("float_mlp")
    model, inputs = tmp / "m.onnx", tmp / "in.npz"
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
    return model, inputs


def verdict_line(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.startswith(("PASS", "FAIL"))]
    assert len(lines) == 1, out
    return lines[0]


def test_verify_reports_agreement_when_quantised(float_mlp, capsys):
    """Arbitrary float weights are quantised: by default spikes are compared by agreement and
    membranes within their quantisation bound; verify says what it compared and why."""
    model, inputs = float_mlp
    capsys.readouterr()
    status = run_cli("verify", model, "--input", inputs, "--weight-bits", "16")
    captured = capsys.readouterr()
    out = captured.out
    assert "quantised model" in out and "quantisation bound" in out and "98.00 %" in out
    assert "agreement" in out and "spikes" in out
    assert "quantised inexactly" in captured.err and "quantised inexactly" not in out  # notes go to stderr
    assert status == 0 and verdict_line(out).startswith("PASS") and "bit-exact:" not in verdict_line(out)
    # 4-bit weights are far from the float model: the default rule fails it, showing the agreement.
    status = run_cli("verify", model, "--input", inputs, "--weight-bits", "4")
    line = verdict_line(capsys.readouterr().out)
    assert status == 1 and line.startswith("FAIL lowest agreement") and "required 98.00 %" in line


@pytest.mark.parametrize("analog", [False, True], ids=["spike-input", "analog-input"])
def test_membranes_stay_within_their_quantisation_bound(analog):
    """Where the spikes agree, a membrane output differs from onnxruntime by no more than the
    compiler's bound for it (accel.io error_bound: weight, bias, leak and input rounding),
    and that bound is not zero. One layer, so no hidden spike can differ unseen."""
    from snnc.passes.encode import find_program
    from snnc.compiler.frontend.canonical import Network
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.compiler.reference import run_onnxruntime
    from snnc.runtime import simulate

    rng = np.random.default_rng(3)
    T, K, N = 8, 48, 32
    net = Network(T, name="one_layer")
    x = net.input("x", (2, K))
    spikes, membrane = net.lif(net.dense(x, rng.normal(0, 0.3, (K, N)), rng.normal(0, 0.1, N)),
                               beta=0.8125, threshold=1.0)
    net.output(spikes, "spikes")
    net.output(membrane, "membrane")
    model = net.to_onnx()
    values = rng.random((T, 2, K)) if analog else rng.random((T, 2, K)) < 0.3
    feeds = {"x": values.astype(np.float32)}
    reference = run_onnxruntime(model.SerializeToString(), feeds)
    checked = 0
    for bits in (6, 8, 12, 16):
        result = compile_model(model, CompileOptions(weight_bits=bits, input_frac_bits=14 if analog else 8))
        bound = {io.io_name.data: io.error_bound for io in find_program(result.accel_module).io_ops()}
        assert bound["spikes"] is None and bound["membrane"].data > 0
        ours = simulate(result.image, feeds, functional=True).outputs
        if np.array_equal(ours["spikes"], reference["spikes"]):
            assert np.abs(ours["membrane"] - reference["membrane"]).max() <= bound["membrane"].data
            checked += 1
    assert checked >= 1  # (a spike may flip at any width: one whose float membrane lands on the threshold)


def test_verify_representable_model_is_compared_bit_for_bit(tmp_path, capsys):
    """No layer rounds: every output is compared bit for bit and the verdict says bit-exact;
    an --atol or a --min-agreement does not change a verdict on equal outputs."""
    model, inputs = tmp_path / "m.onnx", tmp_path / "in.npz"
    assert run_cli("zoo", "mlp", "--timesteps", "2", "-o", model, "--input-out", inputs) == 0
    capsys.readouterr()
    assert run_cli("verify", model, "--input", inputs) == 0
    captured = capsys.readouterr()
    assert "compared bit for bit" in captured.out
    assert verdict_line(captured.out) == "PASS bit-exact: every output equals onnxruntime's"
    assert "note" not in captured.err
    assert run_cli("verify", model, "--input", inputs, "--atol", "1e-5", "--min-agreement", "80") == 0
    out = capsys.readouterr().out
    assert "80.00 %" in out and verdict_line(out).startswith("PASS bit-exact")  # it is: every element equal


def test_verify_quantised_model_equal_on_this_input_is_not_called_bit_exact(vgg_small, capsys):
    """vgg-small has a layer that may round (its membrane is capped below the exact width); its
    outputs equal onnxruntime's on this input, and the verdict says that, not bit-exact."""
    model, inputs = vgg_small
    capsys.readouterr()
    assert run_cli("verify", model, "--input", inputs) == 0
    captured = capsys.readouterr()
    assert "may round" not in captured.out and "quantised inexactly" in captured.err
    line = verdict_line(captured.out)
    assert line.startswith("PASS every output equals onnxruntime's on this input") and "PASS bit-exact" not in line


def test_judge_says_bit_exact_only_when_every_element_is_equal():
    from snnc.compiler.reference import OutputComparison, judge, plan_verification

    def row(agreement, equal, binary=True):
        return OutputComparison("y", (4, 1, 10), binary, agreement, 0.0 if equal == 1 else 0.5, equal)

    exact_rule = plan_verification({}, [], [])
    assert judge([row(1.0, 1.0)], exact_rule).text == "PASS bit-exact: every output equals onnxruntime's"
    failed = judge([row(0.975, 0.975)], exact_rule)
    assert not failed.ok and failed.text.startswith("FAIL not bit-exact although the model is representable")
    loose = plan_verification({"y": None}, [], [], atol=1e-5)  # within --atol, yet not equal
    verdict = judge([row(1.0, 0.9, binary=False)], loose)
    assert verdict.ok and "PASS bit-exact" not in verdict.text and verdict.text.endswith("not bit-exact")
    quantised = plan_verification({}, [("fc1", "weights rounded")], [])
    assert quantised.min_agreement == 0.98 and "1 layer(s) round, e.g. fc1: weights rounded" in quantised.basis
    assert judge([row(0.985, 0.985)], quantised).ok and not judge([row(0.975, 0.975)], quantised).ok


@pytest.mark.parametrize("text,value", [("80", 0.8), ("80%", 0.8), ("80 %", 0.8), ("0.8", 0.8), ("1", 1.0),
                                        ("100", 1.0), ("0", 0.0), ("99.5%", 0.995), ("0.5%", 0.005)])
def test_min_agreement_is_a_percentage_or_a_fraction(text, value):
    from snnc.compiler.reference import parse_agreement

    assert parse_agreement(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["8000", "101", "-1", "abc", "nan", "", "120%"])
def test_min_agreement_out_of_range_is_one_line_error(vgg_small, text, capsys):
    model, inputs = vgg_small
    assert run_cli("verify", model, "--input", inputs, "--min-agreement", text) == 1
    assert "--min-agreement" in one_error_line(capsys)


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
        assert run_cli(vgg_small[0], "--emit", level, "--no-elide") == 0
        text = capsys.readouterr().out
        module = Parser(make_context(), text).parse_module()
        module.verify()
        assert print_ir(module) == text


@pytest.mark.parametrize("level", ["snn-ir", "accel-ir"])
def test_emitted_ir_elides_large_constants(vgg_small, level, capsys):
    """By default weights print as MLIR's elided placeholder, never as data: no hex blob, and
    such text does not verify as a module."""
    from snnc.dialects import make_context
    from xdsl.parser import Parser

    assert run_cli(vgg_small[0], "--emit", level) == 0
    elided = capsys.readouterr().out
    assert run_cli(vgg_small[0], "--emit", level, "--no-elide") == 0
    full = capsys.readouterr().out
    assert "dense_resource<__elided__> : tensor<" in elided and 'dense<"0x' not in elided
    assert 'dense<"0x' in full and "__elided__" not in full
    assert len(elided) < len(full) / 2
    with pytest.raises(Exception):
        Parser(make_context(), elided).parse_module().verify()


def test_print_ir_after_all(vgg_small, tmp_path, capsys):
    assert run_cli(vgg_small[0], "-o", tmp_path / "p.bin", "--print-ir-after-all") == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "IR after import-onnx" in err and "IR after convert-snn-to-loops" in err and "IR after convert-loops-to-accel" in err
    assert "dense_resource<__elided__>" in err and 'dense<"0x' not in err and captured.out == ""
    assert run_cli(vgg_small[0], "-o", tmp_path / "p.bin", "--print-ir-after-all", "--no-elide") == 0
    assert 'dense<"0x' in capsys.readouterr().err


def test_disasm(vgg_program, capsys):
    assert run_cli("disasm", vgg_program) == 0
    out = capsys.readouterr().out
    assert "dma.load" in out and "syn" in out and "lif" in out


def test_passes_lists_lowering(capsys):
    assert run_cli("passes") == 0
    out = capsys.readouterr().out
    assert "every compile runs: quantise,convert-snn-to-loops,compress-weights,loop-reorder" in out
    for stage in ("tile-sizes", "sram-alloc", "convert-loops-to-accel", "insert-barriers"):
        assert f"{stage}" in out and "lowering stage" in out


def test_console_script_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snnc.compiler.cli", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "p.bin")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("snnc: error:")
    assert not (tmp_path / "p.bin").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("command", [["--emit", "snn-ir"], ["--emit", "asm"]])
def test_a_full_disk_on_stdout_is_a_one_line_error(vgg_small, command):
    """Output that cannot be written (here: every write to /dev/full fails with ENOSPC)
    is the environment's fault: one line naming it and exit 1, not an internal error."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "snnc.compiler.cli", str(vgg_small[0]), *command],
                              stdout=full, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "snnc: error: writing the output: No space left on device"


def test_a_compile_process_writes_and_prints_what_main_does(vgg_small, vgg_program, tmp_path, capsys):
    """A whole `snnc compile` process (no cyclic GC, no interpreter teardown, assembly
    formats parsed on first use: cli.console_main) writes the same prog.bin and prints the
    same IR text, notes and exit status as `main` in-process."""
    def process(*args):
        return subprocess.run([sys.executable, "-m", "snnc.compiler.cli", *map(str, args)],
                              capture_output=True, text=True)

    proc = process(vgg_small[0], "-o", tmp_path / "p.bin")
    assert proc.returncode == 0 and proc.stdout == ""
    assert proc.stderr.startswith("wrote ") and (tmp_path / "p.bin").read_bytes() == vgg_program.read_bytes()
    for level in ("snn-ir", "loop-ir", "accel-ir"):
        proc = process(vgg_small[0], "--emit", level)
        assert run_cli(vgg_small[0], "--emit", level) == 0
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, capsys.readouterr().out, "")


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
    lif = helper.make_node("LIF", ["z", "v0"], ["s", "v"], name="lif", domain="snn")  # a spiking model
    model = _gemm_model([4, 1, 3], [3, 2], [sin, lif])
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 2), np.float32), "v0"))
    model.opset_import.append(helper.make_opsetid("snn", 1))
    model.functions.append(neuron_function("LIF"))
    path = _save(model, tmp_path / "m.onnx")
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
    captured = capsys.readouterr()
    assert "PASS" in captured.out and "cycles" in captured.out and "snnc demo" in captured.err


def test_results_go_to_stdout_notes_to_stderr(vgg_small, vgg_program, tmp_path, capsys):
    """Tables and verdicts on stdout (so `snnc run ... > log` keeps them); notes, file
    messages and errors on stderr."""
    model, inputs = vgg_small
    capsys.readouterr()
    report = tmp_path / "r.json"
    assert run_cli("run", vgg_program, "--input", inputs, "--report", report) == 0
    captured = capsys.readouterr()
    assert "cycles" in captured.out and "total" in captured.out and captured.err == ""
    assert run_cli("report", report) == 0
    captured = capsys.readouterr()
    assert "compute" in captured.out and "energy" in captured.out and captured.err == ""
    assert run_cli(model, "-o", tmp_path / "p.bin") == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("wrote ")
    assert run_cli("zoo", "mlp", "-o", tmp_path / "m.onnx") == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "wrote" in captured.err
    assert run_cli("verify", model, "--input", inputs) == 0
    captured = capsys.readouterr()
    assert "snnc verify" in captured.out and "PASS" in captured.out and "PASS" not in captured.err
    assert run_cli("run", tmp_path / "missing.bin", "--input", inputs) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("snnc: error:")


def test_report_tables_are_not_cut_and_show_energy_units(vgg_small, vgg_program, tmp_path, capsys):
    report = tmp_path / "r.json"
    assert run_cli("run", vgg_program, "--input", vgg_small[1], "--report", report, "--quiet") == 0
    capsys.readouterr()
    assert run_cli("report", report) == 0
    out = capsys.readouterr().out
    assert "…" not in out  # no column header or cell cut short
    assert "energy µJ" in out and "energy (µJ)" in out and "PE imbalance" in out
    data = json.loads(report.read_text())
    raw = f"{data['layers'][0]['energy_breakdown_pj']['dram']}"
    assert raw not in out  # energy in units with three decimals, not raw pJ floats
    assert f"{data['total']['energy_pj'] / 1e6:,.3f}" in out


def test_energy_units():
    from snnc.runtime.report import energy_unit, format_energy

    assert energy_unit(66_590_257.0) == ("µJ", 1e6)
    assert energy_unit(999.0) == ("pJ", 1.0) and energy_unit(1000.0) == ("nJ", 1e3)
    assert format_energy(25_309_022.91, ("µJ", 1e6)) == "25.309" and format_energy(0.0, ("µJ", 1e6)) == "0"


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


def test_lazy_status_shows_a_long_first_step_without_an_update():
    """A wait with no step starting in it (a long import, one long build step) still shows
    the spinner once `after` has passed, and nothing once stopped."""
    import io
    import time

    from rich.console import Console
    from snnc.compiler.cli import LazyStatus

    out = io.StringIO()
    status = LazyStatus(Console(file=out, force_terminal=True), "building m", after=0.05)
    deadline = time.monotonic() + 5
    while status._status is None and time.monotonic() < deadline:
        time.sleep(0.01)
    status.stop()
    assert "building m" in out.getvalue()
    quick = LazyStatus(Console(file=io.StringIO(), force_terminal=True), "quick", after=10)
    quick.stop()
    assert quick._status is None and quick._timer is None


def test_zoo_build_reports_each_neuron_layer():
    from snnc.compiler import zoo

    seen = []
    net, _ = zoo.build_network("vgg-small", on_layer=seen.append)
    assert seen == [layer.name for layer in net.layers if layer.kind in ("lif", "if")] and len(seen) >= 3


def test_layer_that_fits_no_tiling_is_one_line_naming_node_buffer_and_bytes(vgg_small, tmp_path, capsys):
    """A 4 KB SRAM holds no tile of vgg-small's conv2 (3x3x16 weights per channel, input rows):
    the error names the ONNX node, the largest buffer and the bytes needed against the bytes there."""
    from snnc.backend.hwconfig import PRESET_DIR

    text = (PRESET_DIR / "small-sram.toml").read_text().replace("size_bytes = 131072", "size_bytes = 4096", 1)
    hw = tmp_path / "tiny.toml"
    hw.write_text(text)
    out = tmp_path / "p.bin"
    assert run_cli(vgg_small[0], "-o", out, "--hw", hw) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "does not fit the SRAM under any tiling" in err and "available" in err
    assert "'conv" in err and "buffer '" in err and "4096" in err.replace(",", "")
    assert not out.exists()
