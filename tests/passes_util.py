"""Shared test helpers: cached zoo compiles and simulations, the bench scripts as modules."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from snnc.compiler import zoo
from snnc.compiler.pipeline import CompileOptions, compile_model
from snnc.runtime import simulate

REPO = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def model(name: str, spike_sparsity: float | None = None):
    return zoo.build(name, spike_sparsity=spike_sparsity)


@functools.lru_cache(maxsize=None)
def run(name: str, passes: str | None = None, hw: str | None = None, spike_sparsity: float | None = None):
    """(CompileResult, SimResult) of a zoo model compiled with `passes` on `hw`."""
    onnx_model, inputs = model(name, spike_sparsity)
    result = compile_model(onnx_model, CompileOptions(passes=passes, hw=hw))
    return result, simulate(result.image, inputs)


def assert_same_outputs(a, b) -> None:
    assert a.outputs.keys() == b.outputs.keys()
    for key in a.outputs:
        np.testing.assert_array_equal(a.outputs[key], b.outputs[key], err_msg=key)


def layers(report) -> dict[str, dict]:
    return {entry["name"]: entry for entry in report["layers"]}


def bench_module(name: str = "pass_effects"):
    """bench/<name>.py as a module (the benchmarks' analyses and plumbing are tested too)."""
    spec = importlib.util.spec_from_file_location(f"snnc_bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
