"""onnxruntime as the reference: run a model, and compare outputs with snnc's.

`compare_outputs` is what `snnc verify` prints: per output, the fraction of
elements that agree exactly (the spike agreement for spike outputs) and the
largest absolute difference (for membrane outputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snnc.backend.errors import InputError, SnncError


def run_onnxruntime(model: str | Path | bytes, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the CLI owns the terminal
    source = str(model) if isinstance(model, Path) else model
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise SnncError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None
    feeds = {}
    for node in session.get_inputs():
        if node.name not in inputs:
            raise InputError(f"input '{node.name}' is missing (inputs given: {sorted(inputs)})")
        feeds[node.name] = np.asarray(inputs[node.name], dtype=np.float32)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


@dataclass(frozen=True)
class OutputComparison:
    name: str
    shape: tuple[int, ...]
    binary: bool  # the reference output holds only 0/1 (spikes)
    agreement: float  # fraction of elements equal (within atol for value outputs)
    max_abs_diff: float

    @property
    def exact(self) -> bool:
        return self.agreement == 1.0


def compare_outputs(
    ours: dict[str, np.ndarray], reference: dict[str, np.ndarray], atol: float = 0.0
) -> list[OutputComparison]:
    """Per output: spikes agree only when equal; values agree within `atol`."""
    rows = []
    for name, ref in reference.items():
        if name not in ours:
            raise SnncError(f"output '{name}' is missing from the simulator's outputs")
        got = ours[name]
        if got.shape != ref.shape:
            raise SnncError(f"output '{name}': simulator shape {got.shape} != onnxruntime {ref.shape}")
        binary = bool(np.isin(ref, (0.0, 1.0)).all())
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        equal = (got == ref) if binary else (diff <= atol)
        rows.append(
            OutputComparison(
                name=name,
                shape=tuple(ref.shape),
                binary=binary,
                agreement=float(equal.mean()) if equal.size else 1.0,
                max_abs_diff=float(diff.max()) if diff.size else 0.0,
            )
        )
    return rows
