"""Custom passes: a plugin package installed with pip (entry point `snnc.passes`), and
`--load-pass module:Class`, run through `snnc` and `snn-opt` like built-in passes.

The plugin is tests/plugin_example, the example of docs/writing-a-pass.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from xdsl.parser import Parser

from snnc.backend.binformat import decode_instructions, load_program_file
from snnc.backend.errors import SnncError
from snnc.compiler import zoo
from snnc.compiler.pipeline import CompileOptions, compile_model, print_ir
from snnc.dialects import make_context
from snnc.passes import get_all_passes
from snnc.runtime import simulate

EXAMPLE = Path(__file__).resolve().parent / "plugin_example"
BIN = Path(sys.executable).parent


def _env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in paths), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(args: list, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install` the example plugin (a copy) into a private --target directory."""
    tmp = tmp_path_factory.mktemp("plugin")
    source = tmp / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps",
          "--target", target, source], dict(os.environ))
    assert (target / "snnc_prune" / "prune.py").exists()
    return target


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[Path, dict, Path]:
    tmp = tmp_path_factory.mktemp("model")
    model, inputs = zoo.build("mlp")
    onnx.save(model, tmp / "m.onnx")
    mlir = tmp / "m.mlir"
    mlir.write_text(compile_model(model).snn_ir)  # what `snnc compile --emit snn-ir` writes
    return tmp / "m.onnx", inputs, mlir


def _sops(program: Path, inputs: dict) -> int:
    return simulate(load_program_file(program), inputs).report["total"]["matched_ops"]


def test_installed_plugin_runs_in_snnc(installed, model_files, tmp_path):
    onnx_path, inputs, _ = model_files
    env = _env(installed)
    listing = _run([BIN / "snnc", "passes"], env).stdout
    assert "prune-weights" in listing and "Zero synapse weights with |w| < threshold" in listing
    plain, pruned = tmp_path / "plain.bin", tmp_path / "pruned.bin"
    plain.write_bytes(compile_model(onnx_path).binary)
    # it composes with built-in passes, each at its own IR level
    proc = _run([BIN / "snnc", onnx_path, "--passes", "prune-weights{threshold=0.2},loop-reorder{dataflow=ip-seq}",
                 "-o", pruned, "--print-ir-after-all"], env)
    assert "IR after prune-weights" in proc.stderr and "IR after loop-reorder" in proc.stderr
    assert plain.read_bytes() != pruned.read_bytes()
    assert _sops(pruned, inputs) < _sops(plain, inputs)


def test_installed_plugin_runs_in_snn_opt_and_round_trips(installed, model_files, tmp_path):
    _, _, mlir = model_files
    env = _env(installed)
    out = _run([BIN / "snn-opt", mlir, "-p", "prune-weights{threshold=0.2},quantise,convert-snn-to-loops,spike-pack"],
               env).stdout
    assert "spike_bitmask" in out
    module = Parser(make_context(), out).parse_module()  # parses back to the same text
    assert print_ir(module).rstrip() == out.rstrip()


def test_installed_loop_level_plugin_reshapes_the_nest(installed, model_files, tmp_path):
    """fixed-tiles (the second example) gives conv-free mlp's fc2 one-channel-group tiles through
    the loop IR: the program changes (more, smaller SYNs), the outputs do not."""
    onnx_path, inputs, _ = model_files
    env = _env(installed)
    plain, tiled = tmp_path / "plain.bin", tmp_path / "tiled.bin"
    _run([BIN / "snnc", onnx_path, "-o", plain], env)
    proc = _run([BIN / "snnc", onnx_path, "--passes", "compress-weights,fixed-tiles{layers=fc2 channels=16},dma-prefetch",
                 "-o", tiled, "--print-ir-after-all"], env)
    assert "IR after fixed-tiles" in proc.stderr and "tile.fixed" in proc.stderr
    assert plain.read_bytes() != tiled.read_bytes()
    a, b = simulate(load_program_file(plain), inputs), simulate(load_program_file(tiled), inputs)
    assert all(np.array_equal(a.outputs[k], b.outputs[k]) for k in a.outputs)
    def syns(path: Path) -> list[int]:  # the channels of fc2's SYN tiles
        image = load_program_file(path)
        index = [i for i, name in enumerate(image.layer_names) if name == "fc2"]
        return [f["chs"] for spec, f in decode_instructions(image) if spec.mnemonic == "syn" and f["layer"] in index]

    assert syns(plain) == [128] and syns(tiled) == [16] * 8  # 128 channels in tiles of 16
    with pytest.raises(AssertionError, match="are not layers of the model"):
        _run([BIN / "snnc", onnx_path, "--passes", "fixed-tiles{layers=nope}", "-o", tiled], env)


def test_installed_dataflow_plugin_joins_loop_reorder(installed, model_files, tmp_path):
    """rows-first (entry point `snnc.dataflows`, one file) is a dataflow loop-reorder knows once
    installed: it compiles, lists among the known ones, and gives ftp's outputs; without the
    install the name is a one-line error listing the built-in ones."""
    onnx_path, inputs, _ = model_files
    plain, rows = tmp_path / "plain.bin", tmp_path / "rows.bin"
    _run([BIN / "snnc", onnx_path, "-o", plain], _env(installed))
    _run([BIN / "snnc", onnx_path, "--passes", "loop-reorder{dataflow=rows-first}", "-o", rows], _env(installed))
    a, b = simulate(load_program_file(plain), inputs), simulate(load_program_file(rows), inputs)
    assert all(np.array_equal(a.outputs[k], b.outputs[k]) for k in a.outputs)
    listed = _run([BIN / "snnc", onnx_path, "--passes", "loop-reorder{dataflow=nope}", "-o", rows], _env(installed),
                  check=False)
    assert listed.returncode == 1 and "rows-first" in listed.stderr and "Traceback" not in listed.stderr
    absent = _run([BIN / "snnc", onnx_path, "--passes", "loop-reorder{dataflow=rows-first}", "-o", rows], _env(),
                  check=False)
    assert absent.returncode == 1 and len(absent.stderr.strip().splitlines()) == 1
    assert "expected one of ftp, ip-seq, gust, op" in absent.stderr


def test_plugin_is_absent_without_install():
    assert "prune-weights" not in get_all_passes()
    with pytest.raises(SnncError, match="prune-weights"):
        compile_model(zoo.build("mlp")[0], CompileOptions(passes="prune-weights"))


def test_load_pass_without_installing(model_files, tmp_path):
    onnx_path, _, mlir = model_files
    env = _env(EXAMPLE)  # importable, not installed: no entry point
    out = tmp_path / "p.bin"
    _run([BIN / "snnc", onnx_path, "--load-pass", "snnc_prune.prune:PruneWeights",
          "--passes", "prune-weights{threshold=0.2}", "-o", out], env)
    assert out.stat().st_size > 0
    text = _run([BIN / "snn-opt", "--load-pass", "snnc_prune.prune:PruneWeights", mlir,
                 "-p", "prune-weights{threshold=0.2}"], env).stdout
    assert "snn.dense" in text
