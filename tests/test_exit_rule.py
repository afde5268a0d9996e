"""The fixed-point exit rule (runtime/exit_rule.py) decides as ELSA's softmax rule does."""

from __future__ import annotations

import decimal

import numpy as np
import pytest

from snnc.backend.errors import InputError
from snnc.runtime.exit_rule import ONE, confidence_sums, confidence_terms, exits, threshold_register

EXACT = decimal.Context(prec=80, Emin=-decimal.MAX_EMAX, Emax=decimal.MAX_EMAX)


def machine(acc: np.ndarray, frac: int, p: float) -> np.ndarray:
    return exits(confidence_sums(acc, frac), threshold_register(p))


def numpy_softmax_rule(acc: np.ndarray, frac: int, p: float) -> np.ndarray:
    """ELSA's code: softmax of the accumulated output (float64), exit when its top probability >= p."""
    a = np.ldexp(acc.astype(np.float64), -frac)
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).max(axis=1) >= p


def exact_rule(acc: np.ndarray, frac: int, p: float) -> np.ndarray:
    """The rule in 80-digit decimal arithmetic, for the threshold the register holds:
    sum_j exp(a_j - a_max) <= 2^-32 R. The k classes at the top contribute exactly k, so the
    others' sum (each term in (0, 1)) is compared with 2^-32 R - k: exact in sign however
    small the terms are."""
    bound = EXACT.divide(decimal.Decimal(threshold_register(p)), decimal.Decimal(ONE))
    scale = EXACT.power(decimal.Decimal(2), frac)
    out = []
    with decimal.localcontext(EXACT):
        for row in acc:
            top = int(row.max())
            below = sum((EXACT.exp(EXACT.divide(decimal.Decimal(int(v) - top), scale)) for v in row if v != top),
                        decimal.Decimal(0))
            out.append(below <= bound - int((row == top).sum()))
    return np.array(out)


def random_outputs(rng: np.random.Generator, rows: int, classes: int, spread: int) -> np.ndarray:
    return rng.integers(-spread, spread + 1, size=(rows, classes), dtype=np.int64)


@pytest.mark.parametrize("classes", [1, 2, 3, 10, 100])
@pytest.mark.parametrize("frac,spread", [(0, 3), (0, 16), (6, 400), (8, 1 << 12), (16, 1 << 20), (4, 1 << 36)])
def test_random_outputs_decide_as_numpy_softmax(classes, frac, spread):
    """Spike counts (frac 0, many ties) and fixed-point logits of every range, thresholds at
    random and at the tie points 1/k: the same decision as the float64 softmax, element by element.
    (p = 1 only holds for one class; float64 rounds a far-ahead class's probability to 1:
    test_extremes_where_float64_rounds.)"""
    rng = np.random.default_rng(classes * 1000 + frac)
    acc = random_outputs(rng, 400, classes, spread)
    thresholds = list(rng.uniform(0.0, 1.0, size=12)) + [1 / k for k in range(2, 6)] + [1 / classes, 0.3, 0.9]
    for p in thresholds:
        p = float(p) or 0.5
        assert np.array_equal(machine(acc, frac, p), numpy_softmax_rule(acc, frac, p)), (p, frac, spread)


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_random_outputs_decide_as_the_exact_rule(classes):
    rng = np.random.default_rng(classes)
    acc = random_outputs(rng, 60, classes, 64)
    for p in (0.3, 0.5, 0.9, 1 / classes, float(rng.uniform())):
        assert np.array_equal(machine(acc, 2, p), exact_rule(acc, 2, p)), p


@pytest.mark.parametrize("classes", [1, 2, 3, 7, 10, 1000])
def test_all_tied_is_exactly_one_over_classes(classes):
    """Every class ties (e.g. nothing fired yet): max prob = 1/C exactly; it exits at p = 1/C
    (the float literal) and below, not above."""
    for value in (0, 5, -(1 << 35)):
        acc = np.full((1, classes), value, dtype=np.int64)
        assert confidence_sums(acc, 8)[0] == classes * ONE
        for p, expected in ((1 / classes, True), (0.5 / classes, True), (1 / classes * (1 + 1e-9), False)):
            if p > 1:
                continue
            assert machine(acc, 8, p)[0] == expected
            assert numpy_softmax_rule(acc, 8, p)[0] == expected
            assert exact_rule(acc, 8, p)[0] == expected


def test_ties_at_the_top():
    """k classes tie at the top, the others below: max prob < 1/k, so p = 1/k does not exit,
    while p a little lower does -- in the machine, in float64 and exactly."""
    for k, gap in ((2, 1), (2, 5), (3, 2), (4, 10), (2, 20)):
        acc = np.array([[7] * k + [7 - gap] * 3], dtype=np.int64)
        top = 1 / (k + 3 * np.exp(-gap))
        for p, expected in ((1 / k, False), (top * (1 - 1e-6), True), (top * (1 + 1e-6), False)):
            for rule in (machine, numpy_softmax_rule, exact_rule):
                assert rule(acc, 0, p)[0] == expected, (k, gap, p, rule.__name__)


@pytest.mark.parametrize("gap", [40, 800, 1 << 30, 1 << 38])
def test_extremes_where_float64_rounds(gap):
    """Far below the top (exp(-gap) under float64's resolution or range), a class still has a
    probability above 0: the machine rounds its term up to one unit (never down to 0), so it
    decides as the exact rule. The float64 softmax drops the term; it disagrees exactly at the
    tie point 1/k and at p = 1, and agrees anywhere else."""
    acc = np.array([[gap, gap, 0], [gap, 0, 0]], dtype=np.int64)
    assert list(confidence_sums(acc, 0)) == [2 * ONE + 1, ONE + 2]
    for p, expected in ((0.5, [False, True]), (1.0, [False, False]), (0.4999, [True, True]), (0.9, [False, True])):
        assert machine(acc, 0, p).tolist() == expected
        assert exact_rule(acc, 0, p).tolist() == expected
    assert numpy_softmax_rule(acc, 0, 0.9).tolist() == [False, True]
    assert numpy_softmax_rule(acc, 0, 0.4999).tolist() == [True, True]


def test_one_class_always_exits():
    acc = np.array([[123]], dtype=np.int64)
    for p in (1e-9, 0.5, 1.0):
        assert machine(acc, 3, p)[0]


def test_terms_are_exp_rounded_up():
    """E(d) = ceil(2^32 exp(-d)): checked against 80-digit decimals, including the terms the
    float64 shortcut hands to the decimal path (values within 2^-12 of an integer)."""
    rng = np.random.default_rng(5)
    distance = np.concatenate([rng.integers(1, 1 << 14, size=300), [1, 2, 3, 1 << 12, 5678, 22 << 8, 23 << 8]])
    terms = confidence_terms(distance, 8)
    for n, term in zip(distance, terms):
        exact = EXACT.multiply(EXACT.exp(EXACT.divide(decimal.Decimal(-int(n)), decimal.Decimal(256))), ONE)
        assert term == int(exact.to_integral_value(rounding=decimal.ROUND_CEILING)), n
    assert confidence_terms(np.array([0]), 8)[0] == ONE


@pytest.mark.parametrize("p", [0.0, -0.1, 1.0000001, 2.0, float("nan"), float("inf")])
def test_threshold_outside_the_unit_interval_is_refused(p):
    with pytest.raises(InputError, match="expected a probability in \\(0, 1\\]"):
        threshold_register(p)


def test_threshold_register_is_exact_at_one_over_k():
    for k in range(1, 2000):
        assert threshold_register(1 / k) == k * ONE
