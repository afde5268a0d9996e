"""bench/loas_formula.py: LoAS's tile-synchronous formulas, counted by hand on a tiny layer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Dataflow
from snnc.runtime import baselines

FORMULA = Path(__file__).resolve().parents[1] / "bench" / "loas_formula.py"


@pytest.fixture(scope="module")
def formula():
    spec = importlib.util.spec_from_file_location("snnc_bench_loas_formula", FORMULA)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# 2 timesteps, 2 positions, K = 3, 2 output channels (as tests/test_timing_memory.py)
X = np.array([[[1, 0, 0], [0, 1, 0]], [[1, 0, 1], [0, 0, 0]]], dtype=bool)  # [t, m, k]
W = np.array([[1, 1], [1, 0], [0, 1]], dtype=bool)  # [k, n]


def test_pe_per_column_by_hand(formula):
    # SparTen-SNN: t0: n0 = m0k0 + m1k1 = 2, n1 = m0k0 = 1 -> 2; t1: n0 = 1, n1 = m0k0 + m0k2 = 2 -> 2
    assert formula.pe_per_column(X, W, 32, 128) == 4


def test_pe_per_row_by_hand(formula):
    # Gamma-SNN: t0: m0 = k0 x 2 = 2, m1 = k1 x 1 = 1 -> 2; t1: m0 = 2 + 1 = 3 -> 3
    assert formula.pe_per_row(X, W, 64, 64) == 5
    # LoAS on the packed matrix (fires at any t): m0 = k0 x 2 + k2 x 1 = 3, m1 = k1 x 1 = 1 -> 3
    assert formula.pe_per_row(X.any(axis=0, keepdims=True), W, 128, 32) == 3


def test_agrees_with_the_simulator_baselines_on_one_visit(formula):
    """On a single visit the simulator's baseline models are these formulas (+ syn overhead)."""
    rng = np.random.default_rng(3)
    x = rng.random((4, 96, 300)) < 0.2
    w = rng.random((300, 40)) < 0.1
    hw = HwConfig()
    overhead = hw.compute.syn_overhead_cycles
    assert baselines.ip_seq(hw, x, w.T).cycles == overhead + formula.pe_per_column(x, w, 32, 128)
    assert baselines.gust(hw, x, w.T).cycles == overhead + formula.pe_per_row(x, w, 64, 64)
    assert baselines.TILES[Dataflow.OP].k_chunk == 256
