"""`snnc explore`: search a schedule per block of a model under the SRAM of a hw config (STEMS §4.3).

CONTRACT:
  * The search space: the model's kernels (convert-snn-to-loops: one per layer, a residual
    block's add with its conv) in order, cut into groups of at most `max_group` consecutive
    kernels; each group fused (layer-fuse, several kernels) or alone, and time-batched by a
    divisor B of T (time-batch; B = T: no batching). Per group this holds STEMS's ST-LBL,
    TB-LBL, ST-LF and TB-LF and the batch sizes between. Tile shapes are tile-sizes' choice
    for each schedule (it picks the largest tiles that fit), not searched.
  * Costs: explore_cost.LoopBase.evaluate (analytic counts from the loop-level IR) turned
    into figures by a Calibration fitted to two simulated schedules, the default pipeline and
    ST-LBL. A group that does not fit the SRAM is infeasible (never chosen).
  * Segment costs come from "runs": one evaluation of a schedule that cuts the model into
    groups of one length L at one offset and one batch B gives the cost of every group it
    holds; max_group(max_group+1)/2 x |B| runs give every (start, length, B) segment. The
    costs of groups add up (kernels are planned and timed on their own), so dynamic
    programming over the kernels finds the best schedule exactly ("dp"); it keeps the
    `top` best per prefix (for edp: the energy/cycles Pareto front), for the table.
    `exhaustive` evaluates every schedule as a whole instead (small models: tests compare).
  * `explore(...)` returns an Exploration; nothing here prints except through `progress`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from snnc.backend.errors import CompileError, SnncError
from snnc.compiler.explore_cost import Calibration, Cost, Figures, Group, LoopBase, pipeline_string

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
            parts.append(f"{span} {'LF' if g.length > 1 else 'LBL'} B{g.batch}")
        return " | ".join(parts)


def batch_sizes(timesteps: int) -> list[int]:
    """The time batches searched: the divisors of T (a ragged last batch buys nothing)."""
    return [b for b in range(1, timesteps + 1) if timesteps % b == 0]


def uniform(n: int, length: int, batch: int, offset: int = 0) -> list[Group]:
    """Kernels 0..offset-1 alone, then groups of `length` (the last may be shorter)."""
    groups = [Group(i, 1, batch) for i in range(min(offset, n))]
    return groups + [Group(s, min(length, n - s), batch) for s in range(offset, n, length)]


def segment_table(base: LoopBase, batches: list[int], max_group: int,
                  tick: Callable[[], None] = lambda: None) -> tuple[dict, int]:
    """(start, length, batch) -> Cost or None (infeasible), from max_group(max_group+1)/2 x |batches| runs."""
    n = len(base.names)
    table: dict[tuple[int, int, int], Cost | str | None] = {}
    runs = 0
    for batch in batches:
        for length in range(1, max_group + 1):
            for offset in range(length if length > 1 else 1):
                groups = uniform(n, length, batch, offset)
                wanted = {i for i, g in enumerate(groups) if (g.start, g.length, batch) not in table}
                if wanted:
                    for i, outcome in enumerate(base.evaluate(groups, wanted)):
                        if i in wanted:
                            table[(groups[i].start, groups[i].length, batch)] = outcome
                    runs += 1
                tick()
    return table, runs


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
                      max_group: int, top: int = TOP) -> list[Candidate]:
    """The best schedules, from the segment costs: best[j] = the best ways to schedule kernels 0..j-1."""
    figures = {key: calibration.predict([cost]) for key, cost in table.items() if isinstance(cost, Cost)}
    best: list[list] = [[(Figures(0, 0, 0, 0.0), ())]] + [[] for _ in range(n)]
    for end in range(1, n + 1):
        entries = []
        for length in range(1, min(max_group, end) + 1):
            start = end - length
            for (s, ln, batch), fig in figures.items():
                if s != start or ln != length:
                    continue
                for prefix, groups in best[start]:
                    entries.append((prefix + fig, (*groups, Group(start, length, batch))))
        best[end] = _prune(entries, objective, top)
    return [Candidate(groups, fig) for fig, groups in best[n][:top]]


def all_schedules(n: int, batches: list[int], max_group: int):
    """Every schedule of the space (for the exhaustive search)."""
    for cuts in itertools.product((False, True), repeat=n - 1):
        starts = [0] + [i + 1 for i, cut in enumerate(cuts) if cut]
        spans = [(s, e - s) for s, e in zip(starts, starts[1:] + [n])]
        if any(length > max_group for _, length in spans):
            continue
        for chosen in itertools.product(batches, repeat=len(spans)):
            yield tuple(Group(s, length, b) for (s, length), b in zip(spans, chosen))


def exhaustive(base: LoopBase, batches: list[int], max_group: int, calibration: Calibration, objective: str,
               top: int = TOP, tick: Callable[[], None] = lambda: None) -> tuple[list[Candidate], int]:
    """Every schedule evaluated as a whole (one run each)."""
    found, runs = [], 0
    for groups in all_schedules(len(base.names), batches, max_group):
        costs = base.evaluate(list(groups))
        runs += 1
        tick()
        if all(isinstance(c, Cost) for c in costs):
            found.append(Candidate(groups, calibration.predict(costs)))
    found.sort(key=lambda c: rank_key(c.figures, objective))
    return found[:top], runs


def count_schedules(n: int, batches: int, max_group: int) -> int:
    ways = [1] + [0] * n
    for end in range(1, n + 1):
        ways[end] = sum(ways[end - length] * batches for length in range(1, min(max_group, end) + 1))
    return ways[n]


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
            progress: Progress = Progress()) -> Exploration:
    if objective not in OBJECTIVES:
        raise SnncError(f"--objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
    progress.phase("lowering to the loop level")
    start = time.perf_counter()
    base = LoopBase.build(model, hw)
    n, timesteps = len(base.names), base.timesteps
    batches = sorted(batches or batch_sizes(timesteps))
    max_group = max(1, min(max_group, n))
    progress.phase("costing schedule segments", (max_group * (max_group + 1) // 2) * len(batches))
    table, runs = segment_table(base, batches, max_group, progress.advance)
    stuck = _uncovered(n, table)
    if stuck is not None:
        raise CompileError(f"explore: {_model_label(model)} fits the SRAM ({base.hw.sram.size_bytes} bytes) under no "
                           f"schedule: no schedule gets past layer '{base.names[stuck]}'")
    search_s = time.perf_counter() - start
    simulated, calibration = _calibrate(model, hw, inputs, base, progress)
    start = time.perf_counter()
    if method == "exhaustive":
        progress.phase("evaluating every schedule", count_schedules(n, len(batches), max_group))
        ranked, more = exhaustive(base, batches, max_group, calibration, objective, tick=progress.advance)
        runs += more
    else:
        progress.phase("searching (dynamic programming over the kernels)")
        ranked = dynamic_programme(n, table, calibration, objective, max_group)
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
            reached |= {s + length for (s, length, _), c in table.items() if s == start and isinstance(c, Cost)}
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
    result = explore(model, hw, load_npz(input_path), objective, confirm=False)
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
