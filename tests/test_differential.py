"""Random canonical SNNs through every pass pipeline, bit for bit against onnxruntime.

bench/fuzz_cases.random_model draws T in 1..8, dense or conv stacks with LIF/IF neurons
(subtract or zero reset), max/avg pools and SEW residuals (ADD, OR, AND), with weights,
inputs and thresholds on a power-of-two grid, so every pipeline must reproduce onnxruntime
exactly. In CI each of the 200 models runs one pipeline, in rotation (every pipeline runs on
25 models; the suite must stay under a minute here); with SNNC_SLOW=1, 300 models run every
pipeline (2,400 compilations).
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import pytest

from passes_util import bench_module
from snnc.compiler.pipeline import CompileOptions, compile_model
from snnc.runtime import simulate

fc = bench_module("fuzz_cases")
SLOW = bool(os.environ.get("SNNC_SLOW"))
MODELS = 300 if SLOW else 200


def pipelines_for(seed: int) -> tuple:
    return fc.PIPELINES if SLOW else (fc.PIPELINES[seed % len(fc.PIPELINES)],)


@pytest.mark.parametrize("seed", range(MODELS))
def test_random_model_is_bit_exact_in_every_pipeline(seed):
    model, inputs, description = fc.random_model(np.random.default_rng([2026, seed]))
    session = ort.InferenceSession(model.SerializeToString())
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(None, inputs)))
    for passes in pipelines_for(seed):
        result = compile_model(model, CompileOptions(passes=passes))
        got = simulate(result.image, inputs, functional=True).outputs
        for name in names:
            agreement = float(np.mean(got[name] == expected[name]))
            assert agreement == 1.0, (f"{description} --passes {passes}: {name} agrees on {100 * agreement:.2f} % "
                                      f"(reproduce: fuzz_cases.random_model(np.random.default_rng([2026, {seed}])))")
