"""The FTP timing model's chunk sums against their int64 definitions.

timing.weighted_chunk_sums and the balanced scheduler's piece counts sum 0/1 bitmask entries
times fiber counts in floating point where every sum is an exact integer (float32, float64),
else in int64; these tests pin each regime, the row blocks of large visits and padded last
chunks to the direct int64 computation.
"""

from __future__ import annotations

import numpy as np
import pytest
from snnc.runtime import timing


def _direct(bits: np.ndarray, weights: np.ndarray, width: int) -> np.ndarray:
    weights = weights.reshape(-1, bits.shape[1])
    return timing.chunk_sums((bits[:, None, :].astype(np.int64) * weights[None]).reshape(-1, bits.shape[1]), width)


@pytest.mark.parametrize("magnitude", [50, 1 << 20, 1 << 40, 1 << 58])  # float32, float64 and int64 sums
def test_weighted_chunk_sums_exact_in_every_regime(magnitude):
    rng = np.random.default_rng(magnitude % 1000)
    for _ in range(200):
        m, k, g = int(rng.integers(0, 10)), int(rng.integers(1, 300)), int(rng.integers(1, 4))
        width = int(rng.choice([1, 5, 64, 128, 1 << 20]))
        bits = rng.random((m, k)) < rng.random()
        weights = rng.integers(-magnitude, magnitude, (g, k))
        got = timing.weighted_chunk_sums(bits, weights if g > 1 else weights[0], width)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, _direct(bits, weights, width))


@pytest.mark.parametrize("macs, min_rows", [(0, 1), (1 << 11, 1), (1 << 18, 32)])  # einsum; BLAS in blocks of rows
def test_weighted_chunk_sums_blas_and_einsum_agree(monkeypatch, macs, min_rows):
    monkeypatch.setattr(timing, "BLAS_SINGLE_THREAD_MACS", macs)
    monkeypatch.setattr(timing, "BLAS_MIN_ROWS", min_rows)
    rng = np.random.default_rng(macs)
    for _ in range(100):
        m, k, g = int(rng.integers(0, 70)), int(rng.integers(1, 700)), int(rng.integers(1, 4))
        width = int(rng.choice([16, 128, 1 << 20]))
        bits = rng.random((m, k)) < rng.random()
        weights = rng.integers(0, 64, (g, k))
        got = timing.weighted_chunk_sums(bits, weights if g > 1 else weights[0], width, bound=64)
        np.testing.assert_array_equal(got, _direct(bits, weights, width))


def test_weighted_chunk_sums_blocks_of_rows(monkeypatch):
    monkeypatch.setattr(timing, "WEIGHTED_BLOCK_ELEMENTS", 100)  # a block of a few rows at a time
    rng = np.random.default_rng(7)
    for _ in range(100):
        m, k, g = int(rng.integers(1, 40)), int(rng.integers(1, 200)), int(rng.integers(1, 4))
        bits = rng.random((m, k)) < 0.4
        weights = rng.integers(0, 1000, (g, k))
        np.testing.assert_array_equal(timing.weighted_chunk_sums(bits, weights, 7, bound=1000),
                                      _direct(bits, weights, 7))


def test_balanced_piece_counts_match_direct_sums():
    """Each piece (position m, fiber-Bs n0 up to the next piece's start in the same position,
    or N): chunk sums of bm-A[m] times its fibers' non-zeros per k."""
    rng = np.random.default_rng(3)
    for _ in range(100):
        m_pos, n, k = int(rng.integers(1, 9)), int(rng.integers(1, 40)), int(rng.integers(1, 400))
        width = int(rng.choice([16, 128, 1024]))
        bm_a = rng.random((m_pos, k)) < rng.random()
        nzw = rng.random((n, k)) < rng.random()
        fb = timing.FiberBs.of(nzw)
        # pieces: every position from 0, plus random cuts inside positions
        cuts = {(int(rng.integers(0, m_pos)), int(rng.integers(1, n))) for _ in range(int(rng.integers(0, 6))) if n > 1}
        starts = sorted({(p, 0) for p in range(m_pos)} | cuts)
        m = np.array([p for p, _ in starts], dtype=np.int64)
        n0 = np.array([c for _, c in starts], dtype=np.int64)
        got = timing._piece_counts(bm_a, fb, fb.col, width, m, n0)
        for i, (p, lo) in enumerate(starts):
            hi = starts[i + 1][1] if i + 1 < len(starts) and starts[i + 1][0] == p else n
            weights = nzw[lo:hi].sum(axis=0).astype(np.int64)
            np.testing.assert_array_equal(got[i], _direct(bm_a[p:p + 1], weights, width)[0])
