"""The early-exit rule of `exit.check` in the accelerator's fixed point (docs/isa.md "Early exit").

CONTRACT
  ELSA's rule: exit when the top softmax probability of the accumulated output reaches the
  threshold p,  max_j softmax(a)_j >= p,  a_j = sum_{t' <= t} x_j[t'] over the output's C
  values of a batch item (a classifier: C classes). Since max_j softmax(a)_j = 1 / S with
  S = sum_j exp(a_j - a_max), the rule is  S <= 1 / p  -- no division, no normalisation.

  Fixed point (what the accelerator computes):
    A_j      the accumulated stored integers (value * 2^f, spikes f = 0), int64
    E(d)     ceil(2^32 * exp(-d)) for d > 0, and E(0) = 2^32 exactly, with d_j = (A_max - A_j) / 2^f
    S_q      sum_j E(d_j)                                   (`confidence_sums`)
    R        the threshold register, round(2^32 / p), set by the host at run time
             (`threshold_register`; p outside (0, 1] is refused)
    exit  <=>  S_q <= R                                     (`exits`)

  Why it decides as the exact rule does, for the register's threshold p_R = 2^32 / R:
    * each term is rounded up by less than 1, so 2^32 S <= S_q < 2^32 S + C: the machine
      exits only if S <= 1 / p_R truly holds (it never exits on rounding), and it can miss an
      exit only when 0 <= 1 / p_R - S < C * 2^-32;
    * S equals a rational 1 / p_R only when every class ties with the maximum (S = C): by
      Lindemann-Weierstrass, exp of distinct rationals are linearly independent over the
      rationals, so k + sum_{d_j > 0} exp(-d_j) is irrational as soon as a d_j > 0. Ties
      are therefore the only exact boundary cases, and there S_q = C * 2^32 exactly;
    * R is exact for p = 1/k (|2^32/p - k 2^32| < 1/2 for k < 2^19 even with p rounded to
      float64), so a threshold <= 1/C exits at once: S <= C always.
  A numpy float64 softmax decides the same outside that band of width C * 2^-32 around the
  threshold; float64 itself is inexact within ~1e-16 of it and drops exp terms below its
  ulp (2 tied classes + one far below at p = 0.5: float64 says 0.5, the exact rule and
  the machine say just below). tests/test_exit_rule.py checks both on random outputs,
  ties and extremes.

  E(d) is a mathematically defined integer, computed deterministically: float64 exp where
  2^32 exp(-d) lies clearly between two integers (np.exp is within a few ulp: error
  < 2^-18 here, margin 2^-12), else with 50-digit decimal arithmetic (Decimal.exp is
  correctly rounded, and 2^32 exp(-d) is never an integer for d > 0).
"""

from __future__ import annotations

import decimal
import math

import numpy as np

from snnc.backend.errors import InputError

CONFIDENCE_FRAC_BITS = 32
ONE = 1 << CONFIDENCE_FRAC_BITS
# 2^32 exp(-d) < 1 beyond d = 32 ln 2 = 22.18: E(d) = 1 (a positive value rounded up)
_NEGLIGIBLE_D = CONFIDENCE_FRAC_BITS * math.log(2) + 1e-9
_MARGIN = 2.0**-12  # float64 results closer than this to an integer are recomputed exactly
_DECIMAL = decimal.Context(prec=50)


def threshold_register(p: float) -> int:
    """The threshold register for confidence `p` in (0, 1]: round(2^32 / p)."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise InputError(f"exit confidence {p!r}: expected a probability in (0, 1]") from None
    if not (0.0 < p <= 1.0):  # also refuses NaN
        raise InputError(f"exit confidence {p}: expected a probability in (0, 1]")
    return round(ONE / p)


def threshold_of_register(register: int) -> float:
    """The confidence p_R = 2^32 / R the machine really applies."""
    return ONE / register


def _exact_term(d: decimal.Decimal) -> int:
    return math.ceil(_DECIMAL.multiply(_DECIMAL.exp(-d), ONE))


def confidence_terms(distance: np.ndarray, frac_bits: int) -> np.ndarray:
    """E(d) for d = distance / 2^frac_bits, distance >= 0 integers (int64 array): int64."""
    distance = np.asarray(distance, dtype=np.int64)
    terms = np.ones(distance.shape, dtype=np.int64)
    terms[distance == 0] = ONE
    d = np.ldexp(distance.astype(np.float64), -frac_bits)
    middle = (distance > 0) & (d < _NEGLIGIBLE_D)
    if middle.any():
        scaled = np.ldexp(np.exp(-d[middle]), CONFIDENCE_FRAC_BITS)
        rounded_up = np.ceil(scaled)
        unclear = (rounded_up - scaled < _MARGIN) | (scaled - (rounded_up - 1) < _MARGIN)
        values = rounded_up.astype(np.int64)
        if unclear.any():
            exact = [_exact_term(_DECIMAL.divide(decimal.Decimal(int(n)), decimal.Decimal(2) ** frac_bits))
                     for n in distance[middle][unclear]]
            values[unclear] = exact
        terms[middle] = values
    return terms


def confidence_sums(accumulated: np.ndarray, frac_bits: int) -> np.ndarray:
    """S_q per row of `accumulated` [B, C] (stored integers summed over timesteps): int64 [B]."""
    acc = np.asarray(accumulated, dtype=np.int64)
    if acc.ndim != 2 or acc.shape[1] == 0:
        raise ValueError(f"accumulated outputs must be [B, C] with C >= 1, got shape {acc.shape}")
    distance = acc.max(axis=1, keepdims=True) - acc
    return confidence_terms(distance, frac_bits).sum(axis=1)


def exits(sums: np.ndarray | int, register: int) -> np.ndarray:
    """The decision per batch item: S_q <= R."""
    return np.asarray(sums, dtype=np.int64) <= register
