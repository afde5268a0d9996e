"""What `snnc explore` shows and writes: schedule.json, the candidates table, the comparison
with ST-LBL and the default pipeline (simulated), the cost model's error, rich progress.

schedule.json:
    {"model", "hw", "objective", "method", "pipeline" (a --passes string), "schedule": [{"layers": [ONNX
     names of the group's first layers], "fused", "time_batch"}], "dram_bytes", "energy_pj", "cycles"
     (simulated; predicted if not confirmed), "predicted": {...}, "st_lbl": {...}, "default": {...}
     (each: pipeline, dram_bytes, energy_pj, cycles, predicted), "search_seconds", "compile_seconds"
     (one compile of the default pipeline), "runs" (schedules costed)}
"""

from __future__ import annotations

from snnc.compiler.explore import Exploration, Simulated
from snnc.compiler.explore_cost import Figures

FIGURES = ("dram_bytes", "energy_pj", "cycles")


def _figures(fig: Figures | None) -> dict | None:
    return None if fig is None else fig.rounded()


def _entry(sim: Simulated | None) -> dict | None:
    if sim is None:
        return None
    return {"pipeline": sim.pipeline, **_figures(sim.figures), "predicted": _figures(sim.predicted)}


def schedule_json(result: Exploration, model: str, hw: str) -> dict:
    best = result.best
    chosen = result.simulated.get("chosen")
    default = result.simulated.get("default")
    return {
        "model": model, "hw": hw, "objective": result.objective, "method": result.method,
        "pipeline": result.pipeline(best),
        "schedule": [{"layers": result.names[g.start:g.stop], "fused": g.length > 1, "time_batch": g.batch,
                      "least_traffic": g.tiling == "traffic", "dataflow": g.dataflow or "ftp"}
                     for g in best.groups],
        **_figures(chosen.figures if chosen else best.figures),
        "simulated": chosen is not None,
        "predicted": _figures(best.figures),
        "st_lbl": _entry(result.simulated.get("st_lbl")),
        "default": _entry(default),
        "search_seconds": round(result.search_s, 3),
        "compile_seconds": round(default.compile_s, 3) if default else None,
        "runs": result.runs,
    }


def _num(value: float) -> str:
    return f"{value:,.0f}"


def print_tables(result: Exploration, console) -> None:
    from rich.table import Table

    table = Table(title=f"best schedules by {result.objective} (predicted; {result.method}, {result.runs} runs)")
    for column in ("#", "schedule", "DRAM bytes", "energy pJ", "cycles"):
        table.add_column(column, justify="left" if column == "schedule" else "right")
    for rank, cand in enumerate(result.ranked, 1):
        f = cand.figures
        table.add_row(str(rank), result.describe(cand.groups), _num(f.dram_bytes), _num(f.energy_pj), _num(f.cycles))
    console.print(table)
    sims = result.simulated
    chosen = sims.get("chosen")
    compare = Table(title="simulated: chosen schedule against ST-LBL and the default pipeline")
    for column in ("schedule", "DRAM bytes", "energy pJ", "cycles", "DRAM x", "energy x", "cycles x"):
        compare.add_column(column, justify="left" if column == "schedule" else "right")
    for key in ("chosen", "st_lbl", "default"):
        sim = sims.get(key)
        if sim is None:
            compare.add_row(key, "does not fit", "", "", "", "", "")
            continue
        f = sim.figures
        ratios = [_ratio(getattr(f, k), getattr(chosen.figures, k)) if chosen else "" for k in FIGURES]
        compare.add_row(key, _num(f.dram_bytes), _num(f.energy_pj), _num(f.cycles), *ratios)
    console.print(compare)
    errors = Table(title="cost model against the simulator (default and ST-LBL are its calibration points)")
    for column in ("schedule", "DRAM error", "energy error", "cycles error"):
        errors.add_column(column, justify="left" if column == "schedule" else "right")
    for key, sim in sims.items():
        if sim.predicted is not None:
            errors.add_row(key, *(f"{model_error(sim, k):+.1%}" for k in FIGURES))
    console.print(errors)


def model_error(sim: Simulated, key: str) -> float:
    """(predicted - simulated) / simulated."""
    measured = getattr(sim.figures, key)
    return (getattr(sim.predicted, key) - measured) / measured if measured else 0.0


def _ratio(other: float, chosen: float) -> str:
    return f"{other / chosen:.2f}x" if chosen else "-"


class RichProgress:
    """explore.Progress drawn by rich on stderr: a bar per phase with a count."""

    def __init__(self, console):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False)
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self._finish()
        return self.progress.__exit__(*exc)

    def _finish(self) -> None:
        if self.task is not None:
            task = self.progress.tasks[self.task]
            self.progress.update(self.task, completed=task.total if task.total is not None else 1,
                                 total=task.total if task.total is not None else 1)

    def phase(self, text: str, total: int | None = None) -> None:
        self._finish()
        self.task = self.progress.add_task(text, total=total)

    def advance(self) -> None:
        if self.task is not None:
            self.progress.advance(self.task)
