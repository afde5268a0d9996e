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

    Per task (vectorised over streams; M = the task's matches >= 1, tasks without a match
    cost nothing and are dropped; q_e = the pop time of the stream's e-th entry, E = the
    entries before the task, NEVER for e < 0):
      first push   p0 = max(P, q[E-D] + 1)          P: cycle after the previous push
      laggy start  ls = max(p0, ls_prev + L)
      first pop    Q  = max(q[E-1] + 1, p0 + 1, ls + L + 1)
      pops         Q .. Q+M-1  (pops never starve inside a task: pushes lead them)
      pushes       p_j = j + max(P, max_{j'<=j} (q[E-D+j'] + 1 - j')); for j' >= D the
                   popped entry is the task's own: q = Q + j' - D, a constant term
                   Q - D + 1. Pops are at least a cycle apart, so q[E-D+j'] - j' never
                   decreases in j': the maximum over the previous tasks' pops (j' <
                   min(M, D) = m) is at j' = m - 1.
      last push    M - 1 + max(P, H), H = max(q[E-D+m-1] + 2 - m, [M > D](Q - D + 1))
    A pop time q[e] of an earlier task t is Q_t + e - E_t (q[E-1] is the previous task's
    last pop, kept per stream): the loop over task slots keeps every task's Q in a table
    and reads the two it needs by precomputed index (which task holds entry e depends on
    the match counts only). Tasks are numbered slot-major with the streams that have the
    most tasks first, so the tasks of slot c are one contiguous run of the table.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2:
        raise ValueError("counts must be [streams, tasks]")
    S = counts.shape[0]
    L = laggy_cycles(hw) if laggy is None else laggy
    D = hw.tppe.fifo_depth
    total = counts.sum(axis=1)
    busy = counts > 0
    tasks = busy.sum(axis=1)
    streams = np.argsort(-tasks, kind="stable")
    tasks_sorted = tasks[streams]
    C = int(tasks_sorted[0]) if S else 0
    busy_sorted = busy[streams]
    row, _ = np.nonzero(busy_sorted)  # stream-major order (sorted streams, tasks in order)
    M = counts[streams][busy_sorted]  # matches of each task, stream-major
    row_start = np.cumsum(tasks_sorted) - tasks_sorted
    slot = np.arange(row.size) - np.repeat(row_start, tasks_sorted)
    working = np.searchsorted(-tasks_sorted, -np.arange(C), side="left")  # a_c: streams with a task in slot c
    slot_start = np.cumsum(working) - working
    position = slot_start[slot] + row  # slot-major index of each task
    # entries before each task, counted over all streams in stream-major order: a pop time
    # lookup of entry e >= the stream's first entry is a search in one sorted array
    ends = np.cumsum(M)
    starts = ends - M
    first_entry = np.repeat(starts[row_start[tasks_sorted > 0]], tasks_sorted[tasks_sorted > 0])
    never = row.size  # index of the NEVER cell of the Q table
    lookups = []
    for entry, add in ((starts - D, 1), (starts - D + np.minimum(M, D) - 1, 2 - np.minimum(M, D))):
        known = entry >= first_entry
        task = np.searchsorted(starts, entry[known], side="right") - 1
        index = np.full(row.size, never, dtype=np.int64)
        index[known] = position[task]
        offset = np.broadcast_to(add, row.size).copy()
        offset[known] += entry[known] - starts[task]
        by_slot_index = np.empty_like(index)
        by_slot_index[position] = index
        by_slot_offset = np.empty_like(offset)
        by_slot_offset[position] = offset
        lookups += [by_slot_index, by_slot_offset]
    i_first, o_first, i_h, o_h = lookups
    M_slot = np.empty_like(M)
    M_slot[position] = M
    own = np.where(M_slot > D, 1 - D, NEVER)  # [M > D](Q - D + 1) as Q + own
    q_table = np.full(row.size + 1, NEVER, dtype=np.int64)
    P = np.ones(S, dtype=np.int64)  # next free push cycle
    ls_prev = np.full(S, NEVER, dtype=np.int64)
    last = np.full(S, NEVER, dtype=np.int64)  # last pop so far
    stall = np.zeros(row.size, dtype=np.int64)
    wait = np.zeros(row.size, dtype=np.int64)
    after = L + 1
    for lo, a in zip(slot_start.tolist(), working.tolist()):
        hi = lo + a
        Pa = P[:a]
        p0 = np.maximum(Pa, q_table[i_first[lo:hi]] + o_first[lo:hi])
        ls = np.maximum(p0, ls_prev[:a] + L)
        could = np.maximum(last[:a], p0) + 1
        Q = np.maximum(could, ls + after)
        np.subtract(Q, could, out=wait[lo:hi])
        base = np.maximum(Pa, np.maximum(q_table[i_h[lo:hi]] + o_h[lo:hi], Q + own[lo:hi]))
        np.subtract(base, Pa, out=stall[lo:hi])
        np.add(M_slot[lo:hi], base, out=Pa)
        ls_prev[:a] = ls
        q_table[lo:hi] = Q
        np.add(Q, M_slot[lo:hi] - 1, out=last[:a])
    # a stream's latency is its last pop (0 without a match); stalls and waits summed per stream
    stream_of_slot = np.empty(row.size, dtype=np.int64)
    stream_of_slot[position] = row
    cycles_sorted = np.where(tasks_sorted > 0, last, 0)
    stall_sorted = np.bincount(stream_of_slot, weights=stall, minlength=S).astype(np.int64)
    wait_sorted = np.bincount(stream_of_slot, weights=wait, minlength=S).astype(np.int64)
    unsort = np.empty_like(streams)
    unsort[streams] = np.arange(S)
    return StreamTiming(cycles=cycles_sorted[unsort], matched=total, fifo_stall=stall_sorted[unsort],
                        laggy_wait=wait_sorted[unsort])
