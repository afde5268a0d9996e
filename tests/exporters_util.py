"""Helpers for the exporter tests: real snnTorch / SpikingJelly models, exported to ONNX.

Every builder returns a torch module whose forward takes x [T, B, ...] and returns stacked
[T, ...] outputs. `representable(model)` sets the weights to small integers times 1/8 so the
8-bit accelerator computes exactly what onnxruntime computes. `check_export` exports, runs
`snnc verify` (compile + simulate + onnxruntime) and returns the per-output agreements.
"""

from __future__ import annotations

import io
import os
import warnings
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pytest

T, B = 4, 2


def need(module: str):
    """Import a frontend package; skip locally when it is missing, fail in CI."""
    if os.environ.get("CI"):
        return __import__(module, fromlist=["_"])
    return pytest.importorskip(module)


def representable(model, seed: int = 0, scale: int = 8):
    """Weights and biases := integers in [-4, 4] / scale (exact at 8-bit weights)."""
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") or name.endswith("bias"):
                values = rng.integers(-4, 5, size=tuple(p.shape)) / scale
                p.copy_(torch.tensor(values, dtype=p.dtype))
    return model


def inputs_for(shape, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 17, size=shape) / 8).astype(np.float32)


def export(model, x: np.ndarray, path: Path, dynamo: bool, **kwargs) -> Path:
    import torch

    outputs = kwargs.pop("output_names", None)
    with warnings.catch_warnings(), redirect_stderr(io.StringIO()), redirect_stdout_quiet():
        warnings.simplefilter("ignore")
        model.eval()
        torch.onnx.export(model, (torch.tensor(x),), str(path), dynamo=dynamo, input_names=["x"],
                          output_names=outputs, **kwargs)
    return path


class redirect_stdout_quiet:
    def __enter__(self):
        import contextlib

        self._cm = contextlib.redirect_stdout(io.StringIO())
        return self._cm.__enter__()

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def verify(path: Path, x: np.ndarray, weight_bits: int = 8, atol: float = 0.0) -> dict[str, float]:
    """`snnc verify` in-process: output name -> agreement with onnxruntime."""
    from snnc.compiler.cli import _verify
    from snnc.compiler.pipeline import CompileOptions

    class _Quiet:
        def print(self, *args, **kwargs):
            pass

    rows, _, _, _ = _verify(path, {"x": x}, CompileOptions(weight_bits=weight_bits), _Quiet(), atol)
    return {row.name: row.agreement for row in rows}


def cli_verify(path: Path, x: np.ndarray, tmp: Path, *extra: str) -> int:
    from snnc.compiler.cli import main

    npz = tmp / "in.npz"
    np.savez(npz, x=x)
    with redirect_stderr(io.StringIO()):
        return main(["verify", str(path), "--input", str(npz), *extra])
