"""The TPPE model: cycle-stepping reference vs batched closed form, and hand-computed cases.

Hand cases use the default config unless stated: L = 128 / 16 = 8 laggy cycles,
FIFO depth D = 8. Cycle numbering starts at 1. Timing rules (runtime/tppe.py):
push j in cycle p_j = max(p_{j-1}+1, q_{j-D}+1); laggy of a task starts at its
first push (or when the circuit frees), ready signal L cycles later, checks from
the cycle after; one check per cycle, after the push cycle.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from snnc.backend.hwconfig import HwConfig, TppeConfig
from snnc.runtime.tppe import Task, batched_streams, laggy_cycles, reference_stream


def _hw(depth: int = 8, **kw) -> HwConfig:
    return dataclasses.replace(HwConfig(), tppe=TppeConfig(fifo_depth=depth, **kw))


def _counts(tasks):
    return np.array([[int(((np.asarray(t.a) != 0)[None, :] & (np.asarray(t.b) != 0)).sum()) for t in tasks]])


def _word(bits: str) -> int:
    """'1010' written t0 first (as LoAS Fig. 10) -> integer with bit t = spike at t."""
    return sum(1 << t for t, ch in enumerate(bits) if ch == "1")


def test_laggy_latency_is_buffer_over_adders():
    assert laggy_cycles(HwConfig()) == 8  # LoAS §V: 128-bit buffer, 16 adders
    assert laggy_cycles(_hw(bitmask_buffer_bits=128, laggy_prefix_adders=64)) == 2


def test_fig10_walkthrough():
    """LoAS Fig. 10: laggy ready after 2 cycles; a_2 = 1111 discarded in cycle 4,
    a_4 = 1010 sends b_4 to the correction accumulators of t1 and t3 in cycle 5."""
    a = np.zeros(6, dtype=np.int64)
    a[2], a[4] = _word("1111"), _word("1010")
    a[1] = _word("0100")  # fires but meets a zero weight: no match
    b = np.zeros((1, 6), dtype=np.int64)
    b[0, 2], b[0, 4], b[0, 5] = 3, 5, 7  # b_5 meets a silent neuron: no match
    ref = reference_stream([Task(a, b)], 4, HwConfig(), laggy=2)
    events = [(c, e, k) for c, e, _task, _n, k in ref["trace"]]
    assert events == [(1, "push", 2), (2, "push", 4), (4, "discard", 2), (5, "correct", 4)]
    assert ref["cycles"] == 5 and ref["matched"] == 2 and ref["corrections"] == 1
    # pseudo = b2 + b4 = 8; correction: t1 and t3 get b4 = 5
    np.testing.assert_array_equal(ref["sums"][0], [[8, 3, 8, 3]])
    assert batched_streams(np.array([[2]]), HwConfig(), laggy=2).cycles.tolist() == [5]


@pytest.mark.parametrize("matches, cycles, stalls", [
    ([3], 8 + 1 + 3, 0),        # pushes 1..3, laggy 1..8, ready 9, checks 10..12
    ([8], 8 + 1 + 8, 0),        # the FIFO just holds all 8
    ([10], 8 + 1 + 10, 2),      # push 9 waits for check 1 (cycle 10): stall in cycles 9, 10
    ([0], 0, 0),                # no match: no cycle
    ([10, 10], 31, 4),          # hand trace below
    ([1, 1], 8 + 1 + 1 + 8, 0), # second laggy run waits for the first (1..8), 9..16, checks 18
])
def test_single_tppe_by_hand(matches, cycles, stalls):
    # [10, 10]: task 1 pushes 1..8, 11, 12 (stalled 9, 10), checks 10..19;
    # task 2 first push 13 (needs check of entry 2 = cycle 12), laggy 13..20, ready 21,
    # checks 22..31; its pushes 13..20 then 23, 24 (entries 18, 19 wait for checks 22, 23): 2 + 2 stalls
    st = batched_streams(np.array([matches]), HwConfig())
    assert int(st.cycles[0]) == cycles
    assert int(st.fifo_stall[0]) == stalls
    tasks = [Task(np.ones(m, dtype=np.int64), np.ones((1, m), dtype=np.int64)) for m in matches]
    ref = reference_stream(tasks, 4, HwConfig())
    assert ref["cycles"] == cycles and ref["fifo_stall"] == stalls


def test_reference_and_batched_agree_on_random_fibers():
    rng = np.random.default_rng(1234)
    for _ in range(600):
        T = int(rng.integers(1, 5))
        depth = int(rng.integers(2, 7))
        laggy = int(rng.integers(0, 11))
        hw = _hw(depth)
        tasks = []
        for _ in range(int(rng.integers(1, 5))):
            k, n = int(rng.integers(1, 14)), int(rng.integers(1, 4))
            a = rng.integers(0, 1 << T, size=k) * (rng.random(k) < rng.random())
            b = rng.integers(-4, 5, size=(n, k)) * (rng.random((n, k)) < rng.random())
            tasks.append(Task(a, b))
        ref = reference_stream(tasks, T, hw, laggy=laggy)
        st = batched_streams(_counts(tasks), hw, laggy=laggy)
        assert (int(st.cycles[0]), int(st.fifo_stall[0]), int(st.laggy_wait[0]), int(st.matched[0])) == \
            (ref["cycles"], ref["fifo_stall"], ref["laggy_wait"], ref["matched"])
        # functional: pseudo - correction = the exact per-timestep sum
        for task, got in zip(tasks, ref["sums"]):
            spikes = (np.asarray(task.a)[None, :] >> np.arange(T)[:, None]) & 1  # [T, K]
            np.testing.assert_array_equal(got, (np.asarray(task.b) @ spikes.T))


def test_batched_is_vectorised_over_streams():
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 30, size=(50, 6))
    whole = batched_streams(counts, HwConfig())
    for s in range(0, 50, 7):
        one = batched_streams(counts[s:s + 1], HwConfig())
        assert int(one.cycles[0]) == int(whole.cycles[s])
