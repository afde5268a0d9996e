"""Accuracy of a program on a labelled data set, and ELSA's elastic-inference table.

CONTRACT
  `check_dataset(image, dataset, classifier=None) -> Dataset` validates, raising InputError
  with one line naming the key: every graph input of the program is a key holding
  [T, N, ...] (the program's [T, B, ...] with the samples along the batch axis, N a multiple
  of B), `labels` ([N] integers in 0..C-1) is there, nothing else is. The classifier is the
  output the program's exit.checks read, else `classifier` (an output name), else the
  program's only output; its C values per batch item are the classes.
  `evaluate(image, dataset, thresholds=(), classifier=None, progress=None) -> report`:
    {"samples", "batch", "classifier", "classes", "timesteps", "accuracy",
     "full": {"mean_cycles", "mean_energy_pj", "mean_first_output_cycle"},
     "elastic": [{"threshold", "threshold_register", "accuracy", "mean_exit_timestep",
                  "latency_reduction", "energy_reduction", "mean_exit_cycles",
                  "mean_exit_energy_pj"}, ...]}     (one entry per threshold, in order)
  Each run of B samples is one cycle-level simulation of the whole program without a
  threshold. The prediction is the argmax of the classifier's output summed over all
  timesteps (the last exit.check's class when there are checks: the machine's integer sum).
  ELSA's definitions per threshold p: a run exits at its first exit.check whose every sample
  satisfies the rule with register R(p) (runtime/exit_rule.py), predicts that check's
  classes, and costs that check's cycles and energy (the run so far, the check included);
  a run never confident costs the full run and predicts as it. latency_reduction =
  1 - mean(cycles at exit) / mean(full cycles), energy_reduction likewise, means over samples.
  Exact: the instructions up to a check do not depend on the threshold (it only decides
  whether the program halts there), so the run without one has the same state, scoreboard and
  counters at each check as a run with threshold p that halts there; `simulate(...,
  exit_confidence=p)` reports the same exit (tests/test_elastic.py).
  `plot_elastic(report, path)`: accuracy against latency reduction, one point per threshold
  (matplotlib, optional; written atomically).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from snnc.backend.binformat import IODesc, ProgramImage, decode_instructions
from snnc.backend.errors import InputError
from snnc.backend.isa import Opcode
from snnc.runtime.exit_rule import threshold_of_register, threshold_register
from snnc.runtime.files import atomic_write_bytes

LABELS = "labels"


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]  # graph input -> [T, N, ...]
    labels: np.ndarray  # [N] int64
    classifier: IODesc
    batch: int  # samples per run (the program's B)

    @property
    def samples(self) -> int:
        return self.labels.size


def _classifier(image: ProgramImage, classifier: str | None) -> IODesc:
    outputs = [d for d in image.io if d.is_output]
    checked = sorted({f["io"] for spec, f in decode_instructions(image) if spec.opcode == Opcode.EXIT_CHECK})
    if classifier is not None:
        found = [d for d in outputs if d.name == classifier]
        if not found:
            raise InputError(f"classifier {classifier!r} is not an output of the program "
                             f"(outputs: {', '.join(d.name for d in outputs)})")
        if checked and image.io[checked[0]].name != classifier:
            raise InputError(f"classifier {classifier!r}: the program's exit checks read output "
                             f"{image.io[checked[0]].name!r}")
        return found[0]
    if checked:
        return image.io[checked[0]]
    if len(outputs) != 1:
        raise InputError(f"the program has {len(outputs)} outputs ({', '.join(d.name for d in outputs)}): "
                         "name the classifier (--classifier NAME)")
    return outputs[0]


def check_dataset(image: ProgramImage, dataset: dict, classifier: str | None = None) -> Dataset:
    if LABELS not in dataset:
        raise InputError(f"dataset: no {LABELS!r} array ([N] integer class labels)")
    declared = [d for d in image.io if not d.is_output]
    names = {d.name for d in declared}
    unknown = sorted(set(dataset) - names - {LABELS})
    if unknown:
        raise InputError(f"dataset: {unknown[0]!r} is not an input of the program (inputs: {sorted(names)})")
    batch = declared[0].batch if declared else 1
    samples = None
    inputs = {}
    for d in declared:
        if d.name not in dataset:
            raise InputError(f"dataset: input {d.name!r} of the program is missing")
        x = np.asarray(dataset[d.name])
        expected = f"[{d.onnx_shape[0]}, N, {', '.join(map(str, d.onnx_shape[2:]))}] (N samples; program input " \
                   f"{list(d.onnx_shape)})"
        if x.ndim != len(d.onnx_shape) or x.shape[0] != d.onnx_shape[0] or x.shape[2:] != tuple(d.onnx_shape[2:]):
            raise InputError(f"dataset {d.name!r}: shape {list(x.shape)}, expected {expected}")
        if x.shape[1] % d.batch or x.shape[1] == 0:
            raise InputError(f"dataset {d.name!r}: {x.shape[1]} samples, expected a positive multiple of the "
                             f"program's batch {d.batch}")
        if samples is not None and x.shape[1] != samples:
            raise InputError(f"dataset {d.name!r}: {x.shape[1]} samples, but another input has {samples}")
        samples = x.shape[1]
        inputs[d.name] = x
    labels = np.asarray(dataset[LABELS])
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InputError(f"dataset {LABELS!r}: expected [N] integers, found {labels.dtype} {list(labels.shape)}")
    if samples is not None and labels.size != samples:
        raise InputError(f"dataset {LABELS!r}: {labels.size} labels for {samples} samples")
    desc = _classifier(image, classifier)
    classes = int(np.prod(desc.onnx_shape[2:]))
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        bad = labels[(labels < 0) | (labels >= classes)][0]
        raise InputError(f"dataset {LABELS!r}: label {int(bad)} outside the {classes} classes of output {desc.name!r}")
    return Dataset(inputs=inputs, labels=labels.astype(np.int64), classifier=desc, batch=batch)


@dataclass
class _Run:
    """One simulation of `batch` samples: the full run and its exit checks in t order."""

    predictions: np.ndarray  # [B]
    cycles: int
    energy_pj: float
    first_output_cycle: int
    checks: list[dict]


def _run(image: ProgramImage, data: Dataset, start: int) -> _Run:
    from snnc.runtime.simulator import simulate

    chunk = {name: x[:, start:start + data.batch] for name, x in data.inputs.items()}
    result = simulate(image, chunk)
    report = result.report
    checks = [c for c in report["exit_checks"] if c["io"] == image.io.index(data.classifier)]
    if checks:
        predictions = np.array(checks[-1]["classes"])
    else:
        summed = result.outputs[data.classifier.name].astype(np.float64).sum(axis=0)
        predictions = summed.reshape(data.batch, -1).argmax(axis=1)
    total = report["total"]
    return _Run(predictions, total["cycles"], total["energy_pj"], total["first_output_cycle"], checks)


def _elastic_row(runs: list[_Run], data: Dataset, threshold: float) -> dict:
    register = threshold_register(threshold)
    last_t = data.classifier.timesteps - 1
    predictions, steps, cycles, energy = [], [], [], []
    for run in runs:
        exit_check = next((c for c in run.checks if all(s <= register for s in c["confidence_sums"])), None)
        if exit_check is None:
            predictions.append(run.predictions)
            steps.append(last_t)
            cycles.append(run.cycles)
            energy.append(run.energy_pj)
        else:
            predictions.append(np.array(exit_check["classes"]))
            steps.append(exit_check["t"])
            cycles.append(exit_check["cycles"])
            energy.append(exit_check["energy_pj"])
    weight = data.batch  # every run holds `batch` samples: means over runs are means over samples
    full_cycles = np.mean([r.cycles for r in runs])
    full_energy = np.mean([r.energy_pj for r in runs])
    return {
        "threshold": threshold,
        "threshold_register": register,
        "applied_threshold": threshold_of_register(register),
        "accuracy": float((np.concatenate(predictions) == data.labels).mean()),
        "mean_exit_timestep": float(np.repeat(steps, weight).mean()),
        "latency_reduction": float(1 - np.mean(cycles) / full_cycles),
        "energy_reduction": float(1 - np.mean(energy) / full_energy),
        "mean_exit_cycles": float(np.mean(cycles)),
        "mean_exit_energy_pj": float(np.mean(energy)),
    }


def evaluate(image: ProgramImage, dataset: dict, thresholds=(), *, classifier: str | None = None,
             progress: bool | None = None) -> dict:
    thresholds = [float(p) for p in thresholds]
    for p in thresholds:
        threshold_register(p)  # a bad threshold fails before any simulation
    data = check_dataset(image, dataset, classifier)
    has_checks = any(spec.opcode == Opcode.EXIT_CHECK for spec, _ in decode_instructions(image))
    if thresholds and not has_checks:
        raise InputError("exit confidences need a program with exit.check instructions (compile it with --exit-checks)")
    starts = range(0, data.samples, data.batch)
    runs = []
    bar = None
    if progress:
        from rich.console import Console
        from rich.progress import Progress

        bar = Progress(console=Console(stderr=True), transient=True)
        task = bar.add_task("evaluating", total=data.samples)
        bar.start()
    try:
        for start in starts:
            runs.append(_run(image, data, start))
            if bar is not None:
                bar.update(task, completed=start + data.batch)
    finally:
        if bar is not None:
            bar.stop()
    predictions = np.concatenate([r.predictions for r in runs])
    return {
        "model": image.model_name,
        "samples": data.samples,
        "batch": data.batch,
        "classifier": data.classifier.name,
        "classes": int(np.prod(data.classifier.onnx_shape[2:])),
        "timesteps": data.classifier.timesteps,
        "accuracy": float((predictions == data.labels).mean()),
        "full": {
            "mean_cycles": float(np.mean([r.cycles for r in runs])),
            "mean_energy_pj": float(np.mean([r.energy_pj for r in runs])),
            "mean_first_output_cycle": float(np.mean([r.first_output_cycle for r in runs])),
        },
        "elastic": [_elastic_row(runs, data, p) for p in thresholds],
    }


def plot_elastic(report: dict, path) -> None:
    """Accuracy against latency reduction, one point per threshold (needs matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'snnc[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["elastic"]
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [100 * r["latency_reduction"] for r in rows]
    y = [100 * r["accuracy"] for r in rows]
    ax.plot(x, y, "o-", label="early exit")
    for r, xi, yi in zip(rows, x, y):
        ax.annotate(f"{r['threshold']:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(100 * report["accuracy"], color="k", linestyle="--", linewidth=1, label="all timesteps")
    ax.set_xlabel("latency reduction (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{report.get('model', '')}: {report['samples']} samples, threshold at each point")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
