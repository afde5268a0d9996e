"""The LoAS temporal-parallel PE (TPPE): a cycle-stepping reference and a batched model.

CONTRACT
  A TPPE works through a *stream of tasks*. A task is one fiber-A chunk (at most
  `tppe.bitmask_buffer_bits` = 128 positions of the reduction dimension K, the
  packed T-bit spike words of one output position m) joined against the fiber-B
  chunks of the stream's output channels (one per channel n, same K positions; the
  scheduler in runtime/timing.py decides which positions and channels a stream has,
  `tppe.scheduler`). This is the
  "mntk" loop order of LoAS's own simulator: the fiber-A chunk stays in the
  bitmask buffer while the fiber-Bs stream past it (LoAS §IV-C: "we can proceed
  to fetch the next fiber-B's data into the buffer").

  Units and their timing (cycles are numbered from 1 inside a stream):
    inner join       AND of bm-A and bm-B. Fiber-B pairs whose AND-result is zero
                     are skipped without a cycle (assumption, as LoAS's simulator:
                     a PE's latency is its matched non-zeros).
    fast prefix-sum  pushes one matched (position, B value) per cycle into
                     FIFO-mp / FIFO-B and adds B to the pseudo-accumulator. Push j
                     needs a free FIFO slot: occupancy at the start of the cycle
                     < depth D (no same-cycle bypass), i.e. p_j >= q_{j-D} + 1.
    laggy prefix-sum one per TPPE, L = ceil(bitmask_buffer_bits / laggy_prefix_adders)
                     cycles (128/16 = 8). For task i it starts when the task's first
                     match is pushed and the circuit is free:
                        ls_i = max(p_first(i), ls_{i-1} + L)
                     occupies cycles ls_i .. ls_i+L-1, raises `ready` in ls_i+L,
                     and its offsets may be used from cycle ls_i+L+1 (LoAS Fig. 10:
                     L = 2, matches pushed in cycles 1, 2; a_2 checked in cycle 4,
                     a_4 in cycle 5).
    correction       pops one FIFO entry per cycle once its task's offsets are ready,
                     in a later cycle than its push:
                        q_j = max(q_{j-1} + 1, p_j + 1, ls_i + L + 1)
                     An all-ones A word is discarded; otherwise B goes to the
                     correction accumulator of every timestep whose bit is 0.
                     Both cost the pop cycle.
  A stream's latency is its last pop (0 for a stream without matches). Tasks with
  no match cost nothing (no push, no laggy run).

  `reference_stream(tasks, T, hw)`  slow, exact, steps one cycle at a time; returns
      cycles, stall counts and the corrected per-timestep sums (functional check).
  `batched_streams(counts, hw)`     vectorised over many independent streams:
      counts [S, C] matched pairs of task c of stream s; loops over the C task
      slots only (never over cycles, entries, neurons or timesteps). Returns
      StreamTiming arrays. Tests assert both agree exactly.
Imports only numpy, the standard library and snnc.backend.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from snnc.backend.hwconfig import HwConfig

NEVER = -(1 << 40)  # a pop time far in the past: no FIFO constraint


def laggy_cycles(hw: HwConfig) -> int:
    """L = len(bm-A) / #adders (LoAS §V: 128 / 16 = 8 cycles)."""
    return math.ceil(hw.tppe.bitmask_buffer_bits / hw.tppe.laggy_prefix_adders)


@dataclass
class Task:
    """One fiber-A chunk against the fiber-B chunks of the visit's output channels.

    a: int array [K] of T-bit spike words (bit t = spike at timestep t; 0 = silent)
    b: int array [N, K] of weights (0 = pruned)
    """

    a: np.ndarray
    b: np.ndarray


@dataclass
class StreamTiming:
    cycles: np.ndarray  # [S] last pop cycle (0: no match)
    matched: np.ndarray  # [S] entries pushed (matched positions x fiber-Bs)
    fifo_stall: np.ndarray  # [S] cycles the fast prefix-sum waited for a FIFO slot
    laggy_wait: np.ndarray  # [S] cycles the correction unit idled with entries waiting for `ready`


def reference_stream(tasks: list[Task], timesteps: int, hw: HwConfig, laggy: int | None = None) -> dict:
    """Cycle-by-cycle simulation of one TPPE working through `tasks` (tests only).

    Returns {"cycles", "matched", "fifo_stall", "laggy_wait", "pops", "corrections",
    "sums": list per task of int array [N, T] = pseudo - correction per timestep,
    "trace": list of (cycle, event, task, n, k)}.
    """
    L = laggy_cycles(hw) if laggy is None else laggy
    depth = hw.tppe.fifo_depth
    all_ones = (1 << timesteps) - 1
    # the fast prefix-sum's work list: matched (task, n, k) in order
    entries = []
    for i, task in enumerate(tasks):
        a = np.asarray(task.a)
        b = np.asarray(task.b)
        for n in range(b.shape[0]):
            for k in range(b.shape[1]):
                if a[k] != 0 and b[n, k] != 0:
                    entries.append((i, n, k))
    pseudo = [np.zeros(np.asarray(t.b).shape[0], dtype=np.int64) for t in tasks]
    corr = [np.zeros((np.asarray(t.b).shape[0], timesteps), dtype=np.int64) for t in tasks]
    fifo: deque = deque()  # (entry index, push cycle)
    laggy_start: dict[int, int] = {}
    laggy_free = 1  # first cycle the laggy circuit can start a task
    nxt = 0
    cycle = 0
    last_pop = 0
    stalls = waits = pops = corrections = 0
    trace = []
    while nxt < len(entries) or fifo:
        cycle += 1
        occupancy = len(fifo)  # at the start of the cycle
        # correction unit: check the head entry
        if fifo:
            j, pushed = fifo[0]
            ti, n, k = entries[j]
            ready = laggy_start[ti] + L + 1
            if pushed < cycle and cycle >= ready:
                fifo.popleft()
                pops += 1
                last_pop = cycle
                word = int(tasks[ti].a[k])
                if word == all_ones:
                    trace.append((cycle, "discard", ti, n, k))
                else:
                    corrections += 1
                    for t in range(timesteps):
                        if not (word >> t) & 1:
                            corr[ti][n, t] += int(tasks[ti].b[n, k])
                    trace.append((cycle, "correct", ti, n, k))
            elif pushed < cycle:
                waits += 1
        # fast prefix-sum: push the next matched entry
        if nxt < len(entries):
            if occupancy < depth:
                ti, n, k = entries[nxt]
                if ti not in laggy_start:  # first match of the task: its laggy run starts
                    laggy_start[ti] = max(cycle, laggy_free)
                    laggy_free = laggy_start[ti] + L
                pseudo[ti][n] += int(tasks[ti].b[n, k])
                fifo.append((nxt, cycle))
                trace.append((cycle, "push", ti, n, k))
                nxt += 1
            else:
                stalls += 1
    sums = [pseudo[i][:, None] - corr[i] for i in range(len(tasks))]
    return {"cycles": last_pop, "matched": len(entries), "fifo_stall": stalls, "laggy_wait": waits,
            "pops": pops, "corrections": corrections, "sums": sums, "trace": trace}


def batched_streams(counts: np.ndarray, hw: HwConfig, laggy: int | None = None) -> StreamTiming:
    """Exact closed form of `reference_stream`'s timing for many streams at once.

    Per task slot c (vectorised over streams; M = counts[:, c] > 0 only):
      first push   p0 = max(P, q[-D] + 1)           P: cycle after the previous push
      laggy start  ls = max(p0, ls_prev + L)
      first pop    Q  = max(q[-1] + 1, p0 + 1, ls + L + 1)
      pops         Q .. Q+M-1  (pops never starve inside a task: pushes lead them)
      pushes       p_j = j + max(P, max_{j'<=j} (q_{j'-D} + 1 - j')); for j' >= D the
                   popped entry is the task's own: q = Q + j' - D, a constant term
                   Q - D + 1; for j' < D it is one of the D previous pops (history).
      last push    M - 1 + max(P, H), H over j' < min(M, D) plus [M > D](Q - D + 1)
    `hist` keeps the last D pop times of each stream (NEVER when fewer).
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2:
        raise ValueError("counts must be [streams, tasks]")
    total = counts.sum(axis=1)
    # Tasks without a match cost nothing: drop them, keeping each stream's order, and put the
    # streams with the most tasks first, so that the streams still working at slot c are rows :a_c.
    busy = counts > 0
    tasks = busy.sum(axis=1)
    streams = np.argsort(-tasks, kind="stable")
    order = np.argsort(~busy[streams], axis=1, kind="stable")
    packed = np.take_along_axis(counts[streams], order, axis=1)[:, :int(tasks.max(initial=0))]
    working = np.searchsorted(-tasks[streams], -np.arange(packed.shape[1]), side="left")  # a_c
    S = counts.shape[0]
    L = laggy_cycles(hw) if laggy is None else laggy
    D = hw.tppe.fifo_depth
    P = np.ones(S, dtype=np.int64)  # next free push cycle
    ls_prev = np.full(S, NEVER, dtype=np.int64)
    hist = np.full((S, D), NEVER, dtype=np.int64)  # hist[:, D-1] = most recent pop
    stall = np.zeros(S, dtype=np.int64)
    wait = np.zeros(S, dtype=np.int64)
    jd = np.arange(D, dtype=np.int64)
    # per (stream, slot, j): what only depends on the task's size M, computed for all slots at once
    first = jd < np.minimum(packed, D)[:, :, None]  # the first min(M, D) pushes wait on history
    back = packed[:, :, None] + jd - D  # index into the task's own pops, < 0: from the old history
    own = back >= 0
    old_idx = np.minimum(jd + packed[:, :, None], D - 1)
    big = packed > D
    for c, a in enumerate(working.tolist()):
        M = packed[:a, c]  # >= 1: every stream in :a has a task here
        h, Pa = hist[:a], P[:a]
        p0 = np.maximum(Pa, h[:, 0] + 1)
        ls = np.maximum(p0, ls_prev[:a] + L)
        # the wait of the correction unit: cycles between "could pop" and Q caused by `ready`
        could = np.maximum(h[:, D - 1] + 1, p0 + 1)
        Q = np.maximum(could, ls + L + 1)
        wait[:a] += Q - could
        # push-delay constant over the first min(M, D) entries: q_{j'-D} + 1 - j' = hist[:, j'] + 1 - j'
        H = np.where(first[:a, c], h - jd, NEVER).max(axis=1) + 1
        H = np.where(big[:a, c], np.maximum(H, Q - D + 1), H)
        base = np.maximum(Pa, H)
        stall[:a] += base - Pa
        P[:a] = M + base  # the cycle after the last push, M - 1 + base
        ls_prev[:a] = ls
        # new history: last D pops after this task (Q .. Q+M-1)
        hist[:a] = np.where(own[:a, c], Q[:, None] + back[:a, c],
                            np.take_along_axis(h, old_idx[:a, c], axis=1))
    unsort = np.empty_like(streams)
    unsort[streams] = np.arange(S)
    cycles = np.where(total > 0, hist[unsort, D - 1], 0)
    stall, wait = stall[unsort], wait[unsort]
    return StreamTiming(cycles=cycles, matched=total, fifo_stall=stall, laggy_wait=wait)
