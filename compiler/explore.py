"""`snnc explore`: search a schedule per block of a model under the SRAM of a hw config (STEMS §4.3).

CONTRACT:
  * The search space: the model's kernels (convert-snn-to-loops: one per layer; a residual
    add or a pool is its own) in order, cut into groups; a group is one kernel
    (layer-by-layer) or a fusable span (layer-fuse), and each group is time-batched by a
    divisor B of T (time-batch; B = T: no batching). The fusable spans are the model's
    blocks (`named_blocks`: ONNX names sharing their first component, sew1.conv_a ..
    sew1.pool), whole, as in STEMS §4.3; in a model whose names show no blocks, every run of
    2..max_group kernels, so where fusion groups begin is searched too. This holds STEMS's
    ST-LBL, TB-LBL, ST-LF and TB-LF per block, and every batch size between, per layer;
    shorter runs inside a block fuse at batches of at least the TPPE's timestep lanes.
    Tile shapes: a synaptic kernel alone takes tile-sizes' heuristic (double buffers first)
    or its least-traffic plan (tile-sizes{least_traffic}: fewer channel tiles, taller rows,
    often single-buffered), both searched; a fused group the band height with the least
    traffic (tile-sizes' choice). Dataflow: FTP, or for a synaptic kernel alone, unbatched,
    with the least-traffic plan, ip-seq (one lane of partial sums: taller rows fit).
  * Costs: explore_cost.LoopBase.evaluate (analytic counts from the loop-level IR) turned
    into figures by a Calibration fitted to two simulated schedules, the default pipeline and
    ST-LBL. A group that does not fit the SRAM is infeasible (never chosen).
  * Segment costs come from "runs": one evaluation of a schedule gives the cost of every group
    in it; per batch, one run per tiling costs every kernel alone and a few more the spans (those that do
    not overlap share a run). The costs of groups add up (kernels are planned and timed on
    their own), so dynamic programming over the kernels finds the best schedule of the space
    exactly ("dp"); it keeps the `top` best per prefix (for edp: the energy/cycles Pareto
    front), for the table. `exhaustive` evaluates every schedule as a whole instead (small
    models: the tests compare the two). The batches are costed in forked processes, one per
    core (`search_workers`); the table, and so the result, is the one a single process builds.
  * `explore(...)` returns an Exploration; nothing here prints except through `progress`.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from snnc.backend.errors import CompileError, SnncError
from snnc.runtime.collect import IR_FULL_EVERY, fewer_collections
from snnc.compiler.explore_cost import (
    DATAFLOWS,
    ORDERS,
    TILINGS,
    Calibration,
    Cost,
    Figures,
    Group,
    LoopBase,
    pipeline_string,
)

OBJECTIVES = ("dram", "energy", "cycles", "edp")
MAX_GROUP = 4  # kernels per fused group: a residual block (two convs, the add, the pool)
TOP = 10  # candidates kept per DP state and shown
EDP_FRONT = 256  # edp: most Pareto-optimal partial schedules kept per DP state


@dataclass(frozen=True)
class Candidate:
    groups: tuple[Group, ...]
    figures: Figures  # predicted


@dataclass
class Simulated:
    pipeline: str
    figures: Figures  # simulated
    predicted: Figures | None
    compile_s: float


@dataclass
class Exploration:
    names: list[str]
    timesteps: int
    objective: str
    method: str
    ranked: list[Candidate]  # best first
    best: Candidate
    runs: int
    search_s: float  # the runs and the search, without the simulations
    simulated: dict[str, Simulated] = field(default_factory=dict)  # "default", "st_lbl", "chosen"

    def pipeline(self, candidate: Candidate) -> str:
        return pipeline_string(self.names, list(candidate.groups), self.timesteps)

    def describe(self, groups) -> str:
        """Groups as text: `a..c LF B4 | d LBL B16`."""
        parts = []
        for g in groups:
            span = self.names[g.start] if g.length == 1 else f"{self.names[g.start]}..{self.names[g.stop - 1]}"
            order = " rows-outer" if g.order else ""
            tiling = " least-traffic" if g.tiling else ""
            dataflow = f" {g.dataflow}" if g.dataflow else ""
            parts.append(f"{span} {'LF' if g.length > 1 else 'LBL'} B{g.batch}{order}{tiling}{dataflow}")
        return " | ".join(parts)


def batch_sizes(timesteps: int) -> list[int]:
    """The time batches searched: the divisors of T (a ragged last batch buys nothing)."""
    return [b for b in range(1, timesteps + 1) if timesteps % b == 0]


def uniform(n: int, length: int, batch: int, offset: int = 0) -> list[Group]:
    """Kernels 0..offset-1 alone, then groups of `length` (the last may be shorter)."""
    groups = [Group(i, 1, batch) for i in range(min(offset, n))]
    return groups + [Group(s, min(length, n - s), batch) for s in range(offset, n, length)]


def named_blocks(names: list[str]) -> list[tuple[int, int]]:
    """(start, length) of the runs of kernels whose ONNX names share their first component
    (`sew1.conv_a`, `sew1.add`: block `sew1`), or [] when no two consecutive kernels do."""
    keys = [re.split(r"[./]", name.lstrip("/"))[0] for name in names]
    blocks, start = [], 0
    for i in range(1, len(names) + 1):
        if i == len(names) or keys[i] != keys[start]:
            blocks.append((start, i - start))
            start = i
    return blocks if any(length > 1 for _, length in blocks) else []


def fusable_spans(names: list[str], max_group: int, lanes: int = 1,
                  stateful: list[bool] | None = None) -> list[tuple[int, int, int]]:
    """(start, length, least batch) of the groups of more than one kernel the search may fuse.
    In a model with named blocks: each block whole at any batch (STEMS §4.3: a block is fused
    or layer-by-layer, ST or TB), and every shorter run of 2+ of its kernels (where fusion
    groups begin): at any batch if none of its kernels holds neuron state (`stateful`: an
    add, a pool), else at batches of at least `lanes` (the TPPE's timestep lanes: a smaller
    batch leaves lanes idle and spills the state, and planning its bands is the costliest
    part of the search). In a model whose names show no blocks: every run of 2..max_group
    kernels, at any batch."""
    blocks = named_blocks(names)
    if not blocks:
        n = len(names)
        return [(s, length, 1) for length in range(2, max_group + 1) for s in range(n - length + 1)]
    stateful = stateful or [True] * len(names)
    spans = []
    for start, size in blocks:
        for length in range(2, size + 1):
            for s in range(start, start + size - length + 1):
                cheap = length == size or not any(stateful[s:s + length])
                spans.append((s, length, 1 if cheap else lanes))
    return spans


def _spans_at(spans: list[tuple[int, int, int]], batch: int) -> list[tuple[int, int]]:
    return [(s, length) for s, length, least in spans if batch >= least]


Variant = tuple[str, str, str]  # a synaptic kernel alone: (loop order, tiling, dataflow)


def alone_variants(orders: tuple[str, ...], tilings: tuple[str, ...], dataflows: tuple[str, ...], batch: int,
                   largest: int) -> list[Variant]:
    """The variants of a synaptic kernel alone at `batch`: every loop order x tiling in FTP; each
    other dataflow with the least-traffic tiling, at the `largest` batch (unbatched) only."""
    variants = [(o, t, "") for o in orders for t in tilings]
    if batch == largest and "traffic" in tilings:
        variants += [("", "traffic", d) for d in dataflows if d]
    return variants


def segment_table(base: LoopBase, batches: list[int], spans: list[tuple[int, int, int]],
                  tick: Callable[[], None] = lambda: None, orders: tuple[str, ...] = ORDERS,
                  tilings: tuple[str, ...] = TILINGS, dataflows: tuple[str, ...] = DATAFLOWS,
                  workers: int = 1) -> tuple[dict, int]:
    """Group -> Cost, None (infeasible) or SPLIT, for every kernel alone (every synaptic one in
    every `alone_variants`) and every span in `spans`, at every batch. Spans that do not overlap
    share a run. `workers` > 1: the batches are costed in that many forked processes (each
    inherits `base`); the table is the same, in the same order."""
    n = len(base.names)
    plans = [_run_plan(n, _spans_at(spans, batch), alone_variants(orders, tilings, dataflows, batch, max(batches)))
             for batch in batches]
    table: dict[Group, Cost | str | None] = {}
    for costs in _costed_batches(base, list(zip(batches, plans)), workers, tick):
        table.update(costs)
    return table, sum(len(plan) for plan in plans)


def batch_costs(base: LoopBase, batch: int, plan: list[tuple[list, Variant]],
                tick: Callable[[], None] = lambda: None) -> dict:
    """The segment table's entries of one batch: its runs (`_run_plan`) evaluated in turn."""
    n, table = len(base.names), {}
    for ri, (packed, variant) in enumerate(plan):
        keep = ri + 1 < len(plan) and plan[ri + 1][1][::2] == variant[::2]
        chosen = {s: length for s, length in packed}
        groups, i = [], 0
        while i < n:
            length = chosen.get(i, 1)
            alone = length == 1 and base.synaptic[i]
            groups.append(Group(i, length, batch, *(variant if alone else ("", "", ""))))
            i += length
        wanted = {gi for gi, g in enumerate(groups) if g.start in chosen and g.length == chosen[g.start]
                  and (not any(variant) or (g.order, g.tiling, g.dataflow) == variant)}
        for gi, outcome in enumerate(base.evaluate(groups, wanted, keep)):
            if gi in wanted:
                table[groups[gi]] = outcome
        tick()
    return table


def search_workers() -> int:
    """Processes to cost the batches in: the cores this process may use, or 1 where it cannot
    fork workers (a daemonic process, such as a Dask worker of `snnc sweep`; no fork)."""
    if multiprocessing.current_process().daemon or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_FORKED_BASE: LoopBase | None = None  # the base a forked worker costs on (inherited, never pickled)


def _forked_batch(task: tuple[int, int, list]) -> tuple[int, dict]:
    index, batch, plan = task
    return index, batch_costs(_FORKED_BASE, batch, plan)


def _costed_batches(base: LoopBase, tasks: list[tuple[int, list]], workers: int, tick: Callable[[], None]):
    """batch_costs of each (batch, plan), in order; in `workers` forked processes if more than one
    (the batches with the most runs first, so that the last to finish is short). A batch whose
    worker died (the pool broke: killed, out of memory) is costed here instead."""
    workers = min(workers, len(tasks))
    if workers <= 1:
        for batch, plan in tasks:
            yield batch_costs(base, batch, plan, tick)
        return
    global _FORKED_BASE
    _FORKED_BASE = base
    done: dict[int, dict] = {}
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            order = sorted(range(len(tasks)), key=lambda i: -len(tasks[i][1]))
            for future in as_completed([pool.submit(_forked_batch, (i, *tasks[i])) for i in order]):
                index, costs = future.result()
                done[index] = costs
                for _ in tasks[index][1]:
                    tick()
    except BrokenProcessPool:
        pass
    finally:
        _FORKED_BASE = None
    for index, (batch, plan) in enumerate(tasks):
        yield done[index] if index in done else batch_costs(base, batch, plan, tick)


def _run_plan(n: int, spans: list[tuple[int, int]], variants: list[Variant]) -> list[tuple[list, Variant]]:
    """The runs of one batch: every kernel alone in each FTP variant, the spans packed, then the
    other dataflows' variants (runs next to each other with the same order and dataflow share
    their time-batch passes)."""
    alone = [(i, 1) for i in range(n)]
    return [(alone, v) for v in variants if not v[2]] + [(pack, ("", "", "")) for pack in _pack(spans)] + \
        [(alone, v) for v in variants if v[2]]


def runs_needed(n: int, batches: list[int], spans: list[tuple[int, int, int]], orders: tuple[str, ...] = ORDERS,
                tilings: tuple[str, ...] = TILINGS, dataflows: tuple[str, ...] = DATAFLOWS) -> int:
    return sum(len(_run_plan(n, _spans_at(spans, batch), alone_variants(orders, tilings, dataflows, batch,
                                                                        max(batches))))
               for batch in batches)


def _pack(spans: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Spans in as few lists of non-overlapping spans as first-fit finds."""
    packs: list[list[tuple[int, int]]] = []
    for start, length in sorted(spans):
        for pack in packs:
            if pack[-1][0] + pack[-1][1] <= start:
                pack.append((start, length))
                break
        else:
            packs.append([(start, length)])
    return packs


def rank_key(figures: Figures, objective: str) -> tuple:
    """Best first: the objective, then energy, then cycles (ties broken the same everywhere)."""
    return figures.objective(objective), figures.energy_pj, figures.cycles, figures.dram_bytes


def _prune(entries: list, objective: str, top: int) -> list:
    """The `top` best partial schedules; for edp the Pareto front of (energy, cycles), best first."""
    entries.sort(key=lambda e: rank_key(e[0], objective))
    if objective != "edp":
        return entries[:top]
    front, best_cycles = [], float("inf")
    for entry in sorted(entries, key=lambda e: (e[0].energy_pj, e[0].cycles)):
        if entry[0].cycles < best_cycles:
            front.append(entry)
            best_cycles = entry[0].cycles
    front.sort(key=lambda e: rank_key(e[0], objective))
    return front[:EDP_FRONT]  # a Pareto prefix is all an optimum of (E + e)(C + c) can start with


def dynamic_programme(n: int, table: dict, calibration: Calibration, objective: str,
                      top: int = TOP) -> list[Candidate]:
    """The best schedules, from the segment costs: best[j] = the best ways to schedule kernels 0..j-1."""
    ending: dict[int, list] = {}
    for group, cost in table.items():
        if isinstance(cost, Cost):
            ending.setdefault(group.stop, []).append((group, calibration.predict([cost])))
    best: list[list] = [[(Figures(0, 0, 0, 0.0), ())]] + [[] for _ in range(n)]
    for end in range(1, n + 1):
        entries = [(prefix + fig, (*groups, group))
                   for group, fig in ending.get(end, ()) for prefix, groups in best[group.start]]
        best[end] = _prune(entries, objective, top)
    return [Candidate(groups, fig) for fig, groups in best[n][:top]]


def all_schedules(n: int, batches: list[int], spans: list[tuple[int, int, int]], synaptic: list[bool],
                  orders: tuple[str, ...] = ORDERS, tilings: tuple[str, ...] = TILINGS,
                  dataflows: tuple[str, ...] = DATAFLOWS):
    """Every schedule of the space (for the exhaustive search): kernels alone (a synaptic one in
    any of its `alone_variants`) or in a span, each group at any batch."""
    lengths: dict[int, list[tuple[int, int]]] = {i: [(1, 1)] for i in range(n)}
    for start, length, least in spans:
        lengths[start].append((length, least))

    def choices(start: int, length: int, least: int) -> list[Group]:
        if length == 1 and synaptic[start]:
            return [Group(start, length, b, *v) for b in batches
                    for v in alone_variants(orders, tilings, dataflows, b, max(batches))]
        return [Group(start, length, b) for b in batches if b >= least]

    def schedules(start: int):
        if start == n:
            yield ()
            return
        for length, least in lengths[start]:
            for group in choices(start, length, least):
                for rest in schedules(start + length):
                    yield (group, *rest)

    yield from schedules(0)


def exhaustive(base: LoopBase, batches: list[int], spans: list[tuple[int, int, int]], calibration: Calibration,
               objective: str, top: int = TOP, tick: Callable[[], None] = lambda: None,
               orders: tuple[str, ...] = ORDERS, tilings: tuple[str, ...] = TILINGS,
               dataflows: tuple[str, ...] = DATAFLOWS) -> tuple[list[Candidate], int]:
    """Every schedule evaluated as a whole (one run each)."""
    found, runs = [], 0
    for groups in all_schedules(len(base.names), batches, spans, base.synaptic, orders, tilings, dataflows):
        costs = base.evaluate(list(groups))
        runs += 1
        tick()
        if all(isinstance(c, Cost) for c in costs):
            found.append(Candidate(groups, calibration.predict(costs)))
    found.sort(key=lambda c: rank_key(c.figures, objective))
    return found[:top], runs


def count_schedules(n: int, batches: list[int], spans: list[tuple[int, int, int]],
                    synaptic: list[bool] | None = None, orders: tuple[str, ...] = ("",),
                    tilings: tuple[str, ...] = ("",), dataflows: tuple[str, ...] = ("",)) -> int:
    """Schedules in the space (a synaptic kernel alone in any of its `alone_variants`)."""
    variants = sum(len(alone_variants(orders, tilings, dataflows, b, max(batches))) for b in batches)
    ways = [0] * n + [1]
    for start in range(n - 1, -1, -1):
        alone = (variants if synaptic and synaptic[start] else len(batches)) * ways[start + 1]
        ways[start] = alone + sum(sum(b >= least for b in batches) * ways[start + length]
                                  for s, length, least in spans if s == start)
    return ways[0]


# --------------------------------------------------------------------------------------
# The whole exploration: runs, calibration, search, confirmation
# --------------------------------------------------------------------------------------


class Progress:
    """What explore reports as it goes (the CLI draws it with rich); silent by default."""

    def phase(self, text: str, total: int | None = None) -> None: ...

    def advance(self) -> None: ...


def simulate_schedule(model, hw: str, inputs: dict, pipeline: str) -> tuple[Figures, dict, float, object]:
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.runtime.simulator import simulate

    start = time.perf_counter()
    result = compile_model(model, CompileOptions(hw=hw, passes=pipeline))
    compile_s = time.perf_counter() - start
    report = simulate(result.image, inputs).report
    total = report["total"]
    return (Figures(int(total["dram_bytes"]), int(total["sram_bytes"]), int(total["cycles"]),
                    round(float(total["energy_pj"]), 3)), report, compile_s, result)


def explore(model: str | Path, hw: str, inputs: dict, objective: str = "energy", *, max_group: int = MAX_GROUP,
            batches: list[int] | None = None, method: str = "dp", confirm: bool = True,
            progress: Progress | None = None, workers: int | None = None) -> Exploration:
    """`workers`: processes to cost the segments in (None: `search_workers()`)."""
    with fewer_collections(full_every=IR_FULL_EVERY):  # the search clones and drops whole modules
        if objective not in OBJECTIVES:
            raise SnncError(f"--objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
        progress = progress or Progress()
        progress.phase("lowering to the loop level")
        start = time.perf_counter()
        base = LoopBase.build(model, hw)
        n, timesteps = len(base.names), base.timesteps
        batches = sorted(batches or batch_sizes(timesteps))
        spans = fusable_spans(base.names, max(1, min(max_group, n)), base.hw.compute.timestep_lanes, base.synaptic)
        progress.phase("costing schedule segments", runs_needed(n, batches, spans))
        table, runs = segment_table(base, batches, spans, progress.advance,
                                    workers=search_workers() if workers is None else workers)
        stuck = _uncovered(n, table)
        if stuck is not None:
            raise CompileError(f"explore: {_model_label(model)} fits the SRAM ({base.hw.sram.size_bytes} bytes) under no "
                               f"schedule: no schedule gets past layer '{base.names[stuck]}'")
        search_s = time.perf_counter() - start
        simulated, calibration = _calibrate(model, hw, inputs, base, progress)
        start = time.perf_counter()
        if method == "exhaustive":
            progress.phase("evaluating every schedule", count_schedules(n, batches, spans, base.synaptic,
                                                                       ORDERS, TILINGS, DATAFLOWS))
            ranked, more = exhaustive(base, batches, spans, calibration, objective, tick=progress.advance)
            runs += more
        else:
            progress.phase("searching (dynamic programming over the kernels)")
            ranked = dynamic_programme(n, table, calibration, objective)
        if not ranked:
            raise CompileError(f"explore: {_model_label(model)} fits the SRAM ({base.hw.sram.size_bytes} bytes) under no "
                               "schedule of the space")
        search_s += time.perf_counter() - start
        result = Exploration(base.names, timesteps, objective, method, ranked, ranked[0], runs, search_s, simulated)
        for key, sim in simulated.items():
            costs = base.evaluate(_named_schedule(key, n, timesteps))
            sim.predicted = calibration.predict(costs) if all(isinstance(c, Cost) for c in costs) else None
        if confirm:
            progress.phase("compiling and simulating the chosen schedule")
            pipeline = result.pipeline(result.best)
            figures, _, compile_s, _ = simulate_schedule(model, hw, inputs, pipeline)
            simulated["chosen"] = Simulated(pipeline, figures, result.best.figures, compile_s)
        return result


def _uncovered(n: int, table: dict) -> int | None:
    """The first kernel that no chain of feasible groups reaches past, or None."""
    reached = {0}
    for start in range(n):
        if start in reached:
            reached |= {g.stop for g, c in table.items() if g.start == start and isinstance(c, Cost)}
    if n in reached:
        return None
    return max(reached)


def search_pipeline(model: Path, hw: str, objective: str = "energy") -> str:
    """The `--passes` string of the best schedule (not confirmed by a simulation); the
    input is the .npz beside the model (same stem). The sweep's `explore` pipeline."""
    from snnc.compiler.fileio import load_npz

    input_path = Path(model).with_suffix(".npz")
    if not input_path.is_file():
        raise SnncError(f"explore: {input_path}: no input beside the model to calibrate the cost model on")
    # one process: the sweep already runs a point per core
    result = explore(model, hw, load_npz(input_path), objective, confirm=False, workers=1)
    return result.pipeline(result.best)


def _model_label(model) -> str:
    return Path(model).name if isinstance(model, str | Path) else "the model"


def _named_schedule(key: str, n: int, timesteps: int) -> list[Group]:
    return uniform(n, 1, timesteps if key == "default" else 1)


def _calibrate(model, hw, inputs, base: LoopBase, progress: Progress) -> tuple[dict[str, Simulated], Calibration]:
    """Simulate the default pipeline and ST-LBL; fit the cost model to them."""
    n, timesteps = len(base.names), base.timesteps
    simulated, points = {}, []
    for key in ("default", "st_lbl"):
        progress.phase(f"calibrating: compiling and simulating {key}")
        groups = _named_schedule(key, n, timesteps)
        pipeline = pipeline_string(base.names, groups, timesteps)
        try:
            figures, report, compile_s, _ = simulate_schedule(model, hw, inputs, pipeline)
        except CompileError:
            continue  # does not fit: no calibration point, no figures
        simulated[key] = Simulated(pipeline, figures, None, compile_s)
        costs = base.evaluate(groups)
        if all(isinstance(c, Cost) for c in costs):
            points.append((costs, report))
    if not points:
        raise CompileError(f"explore: neither the default schedule nor ST-LBL fits the SRAM "
                           f"({base.hw.sram.size_bytes} bytes): nothing to calibrate the cost model on")
    return simulated, Calibration.fit(base.hw, points)
