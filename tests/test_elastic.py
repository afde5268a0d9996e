"""`snnc eval`: accuracy on a labelled data set and ELSA's early-exit table (runtime/evaluate.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from snnc.backend.errors import InputError
from snnc.compiler.cli import main
from snnc.compiler.frontend.canonical import Network
from snnc.compiler.pipeline import CompileOptions, compile_model
from snnc.compiler.zoo import build, build_dataset
from snnc.compiler.zoo.models import digits_data
from snnc.runtime import simulate
from snnc.runtime.evaluate import check_dataset, evaluate

SAMPLES = 10
SCHEDULE = CompileOptions(passes="compress-weights,time-batch{timesteps=1},dma-prefetch", exit_checks="")


@pytest.fixture(scope="module")
def image():
    return compile_model(build("digits")[0], SCHEDULE).image


@pytest.fixture(scope="module")
def dataset():
    data = build_dataset("digits")
    return {"image": data["image"][:, :SAMPLES], "labels": data["labels"][:SAMPLES]}


def test_the_table_is_what_halting_runs_report(image, dataset):
    """Every figure of report["elastic"] equals what `simulate(..., exit_confidence=p)` of each
    sample reports at its halt (ELSA's definitions over those runs)."""
    thresholds = [0.3, 0.6, 0.9, 0.999]
    report = evaluate(image, dataset, thresholds)
    full = [simulate(image, {"image": dataset["image"][:, i:i + 1]}) for i in range(SAMPLES)]
    full_cycles = np.mean([r.report["total"]["cycles"] for r in full])
    full_energy = np.mean([r.report["total"]["energy_pj"] for r in full])
    predictions = [int(r.outputs["logits"][:, 0].astype(np.float64).sum(axis=0).argmax()) for r in full]
    assert report["accuracy"] == np.mean(np.array(predictions) == dataset["labels"])
    assert report["full"]["mean_cycles"] == full_cycles
    for p, row in zip(thresholds, report["elastic"]):
        exits = [simulate(image, {"image": dataset["image"][:, i:i + 1]}, exit_confidence=p).report["exit"]
                 for i in range(SAMPLES)]
        steps = [15 if e["timestep"] is None else e["timestep"] for e in exits]
        cycles = [e["full_cycles"] if e["timestep"] is None else e["cycles"] for e in exits]
        energy = [e["full_energy_pj"] if e["timestep"] is None else e["energy_pj"] for e in exits]
        classes = [predictions[i] if e["timestep"] is None else e["classes"][0] for i, e in enumerate(exits)]
        assert row["threshold"] == p
        assert row["mean_exit_timestep"] == np.mean(steps)
        assert row["accuracy"] == np.mean(np.array(classes) == dataset["labels"])
        assert row["latency_reduction"] == pytest.approx(1 - np.mean(cycles) / full_cycles, abs=1e-12)
        assert row["energy_reduction"] == pytest.approx(1 - np.mean(energy) / full_energy, abs=1e-12)
    assert report["elastic"][0]["latency_reduction"] > 0  # the timestep-major tail really exits early


def test_threshold_at_most_one_over_classes_exits_every_sample_after_timestep_0(image, dataset):
    report = evaluate(image, dataset, [0.1, 0.01])
    for row in report["elastic"]:
        assert row["mean_exit_timestep"] == 0.0


def test_batched_program_gives_the_same_accuracy(dataset):
    """A program of B = 2 runs the samples two at a time: same predictions as B = 1; a run
    exits when both of its samples are confident."""
    data = digits_data()
    net = Network(16, name="digits_b2")
    x = net.input("image", (2, 64))
    spikes, _ = net.if_neuron(net.dense(x, data["fc1_weight"], data["fc1_bias"], name="fc1"), name="lif1")
    net.output(net.dense(spikes, data["fc2_weight"], data["fc2_bias"], name="fc2"), "logits")
    batched = compile_model(net.to_onnx(), CompileOptions(exit_checks="")).image
    single = compile_model(build("digits")[0], CompileOptions(exit_checks="")).image
    a, b = evaluate(batched, dataset, [0.5]), evaluate(single, dataset, [0.5])
    assert a["batch"] == 2 and b["batch"] == 1
    assert a["accuracy"] == b["accuracy"]
    assert a["elastic"][0]["mean_exit_timestep"] >= b["elastic"][0]["mean_exit_timestep"]


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("labels"), "dataset: no 'labels' array"),
    (lambda d: d.update(labels=d["labels"][:-1]), f"dataset 'labels': {SAMPLES - 1} labels for {SAMPLES} samples"),
    (lambda d: d.update(labels=d["labels"].astype(np.float32)), "dataset 'labels': expected \\[N\\] integers"),
    (lambda d: d.update(labels=d["labels"] + 10), "label 1[0-9] outside the 10 classes of output 'logits'"),
    (lambda d: d.update(extra=d["labels"]), "dataset: 'extra' is not an input of the program"),
    (lambda d: d.update(pixels=d.pop("image")), "'pixels' is not an input of the program"),
    (lambda d: d.update(image=d["image"][:, :, :63]), r"dataset 'image': shape \[16, 10, 63\], expected \[16, N, 64\]"),
    (lambda d: d.update(image=d["image"][:8]), r"dataset 'image': shape \[8, 10, 64\]"),
    (lambda d: d.update(image=d["image"][:, 0]), r"dataset 'image': shape \[16, 64\]"),
])
def test_bad_datasets_are_one_line_errors(image, dataset, change, message):
    bad = dict(dataset)
    change(bad)
    with pytest.raises(InputError, match=message):
        check_dataset(image, bad)


def test_thresholds_need_exit_checks(dataset):
    plain = compile_model(build("digits")[0]).image
    assert evaluate(plain, dataset)["accuracy"] > 0  # accuracy alone needs none
    with pytest.raises(InputError, match="compile it with --exit-checks"):
        evaluate(plain, dataset, [0.5])


def test_cli_eval(tmp_path, capsys):
    model, data = tmp_path / "d.onnx", tmp_path / "test.npz"
    assert main(["zoo", "digits", "-o", str(model), "--input-out", str(data)]) == 0
    small = tmp_path / "small.npz"
    full = np.load(data)
    np.savez(small, image=full["image"][:, :6], labels=full["labels"][:6])
    prog = tmp_path / "d.bin"
    assert main([str(model), "-o", str(prog), "--exit-checks"]) == 0
    report, plot = tmp_path / "r.json", tmp_path / "curve.png"
    assert main(["eval", str(prog), "--dataset", str(small), "--exit-confidence", "0.3", "0.9",
                 "--exit-confidence", "0.95", "--report", str(report), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "early exit" in out
    written = json.loads(report.read_text())
    assert [row["threshold"] for row in written["elastic"]] == [0.3, 0.9, 0.95]
    assert written["samples"] == 6 and 0 <= written["accuracy"] <= 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("snnc: error: "), err
    return err[0]


@pytest.mark.parametrize("arrays,args,message", [
    ({"labels": None}, [], "no 'labels' array"),
    ({"labels": "short"}, [], "labels for 4 samples"),
    ({}, ["--exit-confidence", "1.2"], "expected a probability in (0, 1]"),
    ({}, ["--plot", "x.png"], "--plot draws the early-exit curve"),
    ({"image": "narrow"}, [], "expected [16, N, 64]"),
])
def test_cli_eval_bad_input(tmp_path, capsys, arrays, args, message):
    data = build_dataset("digits")
    image, labels = data["image"][:, :4], data["labels"][:4]
    if arrays.get("image") == "narrow":
        image = image[..., :32]
    if arrays.get("labels") == "short":
        labels = labels[:3]
    npz = {"image": image} if "labels" in arrays and arrays["labels"] is None else {"image": image, "labels": labels}
    np.savez(tmp_path / "set.npz", **npz)
    prog = tmp_path / "d.bin"
    model = tmp_path / "d.onnx"
    assert main(["zoo", "digits", "-o", str(model)]) == 0
    assert main([str(model), "-o", str(prog), "--exit-checks"]) == 0
    capsys.readouterr()
    report = tmp_path / "r.json"
    assert main(["eval", str(prog), "--dataset", str(tmp_path / "set.npz"), "--report", str(report), *args]) == 1
    assert message in one_error_line(capsys)
    assert not report.exists()
