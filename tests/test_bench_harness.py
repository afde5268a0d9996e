"""bench/run.py's plumbing (tables, verdicts, process measurement) without benchmarking."""

from __future__ import annotations

import sys

import pytest

from passes_util import bench_module


@pytest.fixture(scope="module")
def bench():
    return bench_module("run")


ROW = {
    "model": "vgg16-cifar10", "repeats": 5, "compile_s": 1.0, "ort_session_s": 0.4, "ort_infer_s": 0.1,
    "sim_cycle_s": 0.15, "sim_functional_s": 0.09, "proc_compile_s": 2.0, "proc_run_s": 1.5,
    "proc_run_functional_s": 1.4, "proc_ort_s": 1.0, "compile_rss_mib": 300.0, "run_rss_mib": 200.0,
    "run_functional_rss_mib": 190.0, "ort_rss_mib": 150.0, "binary_bytes": 1050, "payload_bytes": 1000,
    "packed_bytes": 900, "param_bytes": 100, "constants_bytes": 5000,
}


def test_tables_and_verdicts(bench):
    table = bench.render([ROW, {"model": "broken"}], processes=True)
    assert "| vgg16-cifar10 | 1.000 | 0.400 | 2.50x |" in table
    assert "| broken | error |" in table
    verdicts = bench.targets([ROW], processes=True)
    lines = {line.split("|")[1].strip(): line for line in verdicts.splitlines() if line.startswith("| ")}
    # issue 14's in-process compile (1.2x 5e2ce31's 1.79x) and issue 17's targets, each against ORT
    assert "= 2.50x | MISSED" in lines["compile, in-process vgg16-cifar10 <= 2.15x ORT (issue 14: 1.2x 5e2ce31's 1.79x)"]
    assert "= 2.00x | MET" in lines["compile, whole process vgg16-cifar10 <= 2x ORT"]  # 2.0 s / 1.0 s
    assert "= 1.50x | MET" in lines["cycle-level simulation, in-process vgg16-cifar10 <= 5x ORT (this round; 2x long-term)"]
    assert "MET" in lines["functional simulation, in-process vgg16-cifar10 <= 2x ORT"]  # 0.9x
    slow = bench.targets([{**ROW, "compile_s": 0.8, "sim_functional_s": 0.25, "proc_compile_s": 2.1}], processes=True)
    assert slow.count("MISSED") == 2 and "= 2.00x | MET" in slow and "= 2.50x | MISSED" in slow and "= 2.10x | MISSED" in slow
    assert bench.targets([{"model": "vgg16-cifar10"}], processes=False).count("not measured") == 4 + 1  # + memory
    assert "MET" in lines["binary <= 1.1x packed payload (all models)"]  # 1050 / (900 + 100)
    assert "| vgg16-cifar10 | 1,050 | 900 | 100 | 1,000 | 1.05x | 5,000 |" in table
    assert "n/a" in lines["resnet18-imagenet compile + simulate < 4096 MiB"]



def test_every_model_gets_the_three_ratio_verdicts(bench):
    fast = {**ROW, "model": "mlp", "proc_compile_s": 0.5, "proc_ort_s": 0.25, "sim_cycle_s": 0.6, "ort_infer_s": 0.1,
            "sim_functional_s": 0.3}
    table = bench.every_model([ROW, fast, {"model": "broken"}], processes=True)
    assert "| vgg16-cifar10 | 2.00x MET | 1.50x MET | 0.90x MET |" in table
    assert "| mlp | 2.00x MET | 6.00x MISSED | 3.00x MISSED |" in table
    assert "| broken | not measured | not measured | not measured |" in table
    assert "4 of 9 met." in table
    in_process = bench.every_model([fast], processes=False)  # no whole-process column without processes
    assert "| mlp | 6.00x MISSED | 3.00x MISSED |" in in_process and "whole process" not in in_process

def test_process_stats_measures_the_child_not_the_parent(bench):
    errors: list[str] = []
    stats = bench.process_stats({"big": [sys.executable, "-c", "x = bytearray(64 << 20)"],
                                 "small": [sys.executable, "-c", "pass"]}, 1, False, errors)
    assert not errors
    (wall, rss), (_, small_rss) = stats["big"], stats["small"]
    assert wall > 0
    assert 60 < rss < 1024  # the 64 MiB child, not this (bigger or smaller) pytest process
    assert small_rss < rss - 40


def test_process_stats_reports_failures_and_measures_the_rest(bench):
    errors: list[str] = []
    stats = bench.process_stats({"bad": [sys.executable, "-c", "raise SystemExit('boom')"],
                                 "good": [sys.executable, "-c", "pass"]}, 2, True, errors, "m: ")
    assert list(stats) == ["good"]
    assert len(errors) == 1 and errors[0].startswith("m: bad: RuntimeError") and "boom" in errors[0]


def test_interleaved_medians_alternates_the_functions(bench):
    calls: list[str] = []
    medians = bench.interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                        2, True, [])
    assert calls == ["a", "b"] * 3 and set(medians) == {"a", "b"}


def test_packed_weight_bytes(bench):
    import numpy as np
    from onnx import helper, numpy_helper

    w = np.zeros((4, 4), np.float32)
    w[0, 0] = 1
    graph = helper.make_graph([], "g", [], [], [numpy_helper.from_array(w, "fc.weight"),
                                                numpy_helper.from_array(w, "fc.bias")])
    assert bench.packed_weight_bytes(helper.make_model(graph)) == 2 + 1
