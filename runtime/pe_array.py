"""How the PE array deals a SYN visit's work to its PEs: one rule for the timing model
(runtime/timing.py, runtime/baselines.py) and the lowering's tile choice
(passes/tile_sizes.py), so the compiler plans for what the hardware does.
Part of the machine model, so it lives in runtime/ and the compiler imports it from
there (the runtime imports nothing of the compiler; docs/architecture.md).

A visit hands the array `items` work units (FTP: output positions, one TPPE stream each)
against `other` units of the second operand (FTP: fiber-Bs). Streams are dealt to the
`pes` PEs in rounds; a round lasts its slowest PE (`split_factor`, `visit_rounds`), or, with
the balanced TPPE scheduler on small visits, in one run of output neurons per PE (`balanced_runs`).
Imports only numpy and the standard library.
"""

from __future__ import annotations

import math

import numpy as np


def split_factor(items: int, other: int, pes: int) -> int:
    """G: into how many contiguous groups the scheduler splits the other operand
    dimension (`other` long) when `items` work units do not fill one round of `pes`
    PEs, so that the items x G units fill whole rounds: it minimises the rounds per
    unit of work, ceil(items * G / pes) / G, over G in 1..min(other, pes), the
    smallest G on ties. 16 PEs: 8 items -> 2, 12 -> 4 (three full rounds instead of
    one with four idle PEs), 1 -> 16. Items that fill a round are not split (G = 1):
    more streams would add each stream's start-up (the laggy prefix-sum's first
    run) for a smaller gain."""
    if items >= pes or items <= 0:
        return 1
    best, best_rounds = 1, 1
    for g in range(2, min(other, pes) + 1):
        rounds = math.ceil(items * g / pes)
        if rounds * best < best_rounds * g:
            best, best_rounds = g, rounds
    return best


def visit_rounds(items: int, other: int, pes: int) -> float:
    """Rounds of a visit in units of whole-operand rounds: ceil(items * G / pes) / G with
    G = split_factor (a round of G-split streams does 1/G of the work). 16 PEs: 16 and 8
    items -> 1 and 0.5; 24 items -> 2 (the second round half idle)."""
    groups = split_factor(items, other, pes)
    return math.ceil(items * groups / pes) / groups


def balanced_runs(row_work, col_work, pes: int):
    """The `balanced` TPPE scheduler's cut (tppe.scheduler, runtime/timing.py ftp_syn): the
    rows x cols grid of output neurons (FTP: output positions x fiber-Bs), in row-major
    order, cut into `pes` contiguous runs of about equal estimated work
    row_work[r] * col_work[c] (bm-A popcount x fiber-B non-zeros). Neuron i goes to run
    floor(S * midpoint_i / total) (midpoint_i = its work's midpoint on the cumulative
    axis), so a run's estimate is within one neuron's of total / pes.
    Returns bounds [pes + 1]: run j is flattened neurons bounds[j] .. bounds[j+1]-1
    (possibly empty). E.g. 2 rows of work 3 and 1 x 2 cols of work 1, 4 PEs:
    neurons 3, 3, 1, 1 at midpoints 1.5, 4.5, 6.5, 7.5 of 8 -> runs [0], [], [1], [2, 3]
    (the slowest run does 3, as in any cut)."""
    # np.outer (inputs flattened), by broadcasting: no per-call overhead on small vectors
    est = (np.asarray(row_work, dtype=np.int64).ravel()[:, None] * np.asarray(col_work, dtype=np.int64).ravel()).ravel()
    cum = np.cumsum(est)
    total = int(cum[-1]) if cum.size else 0
    key = pes * (2 * cum - est)  # 2 * pes * midpoint, exact in integers
    bounds = np.searchsorted(key, 2 * total * np.arange(pes + 1, dtype=np.int64), side="left")
    bounds[0], bounds[-1] = 0, est.size
    return bounds
