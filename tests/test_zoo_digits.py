"""The `digits` zoo model: trained weights and the test split ship with the package."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from snnc.backend.errors import FrontendError
from snnc.compiler.cli import main
from snnc.compiler.pipeline import CompileOptions, compile_model
from snnc.compiler.zoo import DATASET_LABELS, build, build_dataset
from snnc.compiler.zoo.models import DIGITS_DATA
from snnc.runtime import simulate

ROOT = Path(__file__).resolve().parent.parent


def test_building_twice_gives_the_same_bytes(tmp_path):
    assert build("digits")[0].SerializeToString() == build("digits")[0].SerializeToString()
    paths = [(tmp_path / f"d{i}.onnx", tmp_path / f"t{i}.npz") for i in range(2)]
    for model, data in paths:
        assert main(["zoo", "digits", "-o", str(model), "--input-out", str(data)]) == 0
    assert paths[0][0].read_bytes() == paths[1][0].read_bytes()
    a, b = np.load(paths[0][1]), np.load(paths[1][1])
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_the_test_split_layout():
    data = build_dataset("digits")
    assert sorted(data) == ["image", DATASET_LABELS]
    x, labels = data["image"], data[DATASET_LABELS]
    assert x.shape == (16, 360, 64) and x.dtype == np.float32
    assert labels.shape == (360,) and labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    assert np.array_equal(x * 16, np.round(x * 16)) and 0 <= x.min() and x.max() <= 1  # pixel / 16, direct coding
    assert (x == x[:1]).all()  # the same frame at every step
    model, inputs = build("digits")
    assert np.array_equal(inputs["image"], x[:, :1])  # build()'s input is the first test image
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["logits"]
    assert build_dataset("digits", timesteps=4)["image"].shape == (4, 360, 64)


def test_onnxruntime_runs_the_data_set_slice_by_slice_and_the_accelerator_agrees():
    """At 16-bit weights (the shipped weights have 12 significant bits) the accelerator's
    logits are bit-exact with onnxruntime's on every sample tried."""
    model, _ = build("digits")
    data = build_dataset("digits")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    image = compile_model(model, CompileOptions(weight_bits=16)).image
    for i in (0, 17, 359):
        x = data["image"][:, i:i + 1]
        (expected,) = session.run(None, {"image": x})
        assert np.array_equal(simulate(image, {"image": x}).outputs["logits"], expected)


def test_options_of_generated_models_do_not_apply():
    for option, value in (("weight_sparsity", 0.5), ("seed", 3), ("spike_profile", "uniform"), ("input_scale", 0.5)):
        with pytest.raises(FrontendError, match=f"zoo model 'digits' has trained weights: option {option}"):
            build("digits", **{option: value})
    with pytest.raises(FrontendError, match="zoo model 'mlp' has no labelled data set"):
        build_dataset("mlp")


def test_the_zoo_needs_neither_torch_nor_sklearn(tmp_path):
    code = ("import sys\n"
            "from snnc.compiler.cli import main\n"
            f"assert main(['zoo', 'digits', '-o', {str(tmp_path / 'd.onnx')!r}, '--input-out', "
            f"{str(tmp_path / 't.npz')!r}]) == 0\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'sklearn', 'snntorch')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    assert DIGITS_DATA.stat().st_size < 100_000  # a small data file


def test_the_shipped_split_is_sklearns():
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("train_digits", ROOT / "examples" / "train_digits.py")
    train_digits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_digits)
    _, _, x_test, y_test = train_digits.load_split()
    shipped = np.load(DIGITS_DATA)
    assert np.array_equal(shipped["test_images"], x_test) and np.array_equal(shipped["test_labels"], y_test)
    # and the shipped weights have the 12 significant bits the script rounds to
    for layer in ("fc1", "fc2"):
        w, b = train_digits.round_layer(shipped[f"{layer}_weight"], shipped[f"{layer}_bias"])
        assert np.array_equal(w, shipped[f"{layer}_weight"]) and np.array_equal(b, shipped[f"{layer}_bias"])
