"""`snnc sweep`: a grid of (model, hardware config, pipeline) points, run on a Dask cluster.

CONTRACT:
  * `load_sweep(path) -> SweepSpec` parses the sweep TOML strictly (tomllib), like the hw
    presets; every mistake is a `SnncError` of one line naming the file and the key:
        models = ["vgg16-cifar10", "m.onnx"]   # required: zoo names or ONNX paths
        pipelines = ["default", "loop-reorder{dataflow=ip-seq}", "explore"]   # default ["default"]
        hw = "loas"                            # base: a preset or a TOML file (default loas)
        [grid]                                 # optional: hw config keys, dotted -> values
        "compute.num_pes" = [8, 16, 32]
        [inputs]                               # optional: ONNX path -> input npz
        "m.onnx" = "m-input.npz"               # (default: the .npz beside the model, same stem)
    Paths are relative to the sweep file. Each grid value goes through
    `HwConfig.from_mapping` on the base config, as a preset's would; each pipeline
    other than "default" and the searches of `sweep_point.SEARCHED_PIPELINES` must
    parse as `--passes`. Zoo models are built with their defaults (seed 0).
  * The points are models x grid (in key order) x pipelines, in that order.
  * `run_sweep(spec, ...)` evaluates every point not in the cache with
    `sweep_point.evaluate_point` on Dask workers (a LocalCluster of `workers`
    processes, or the cluster at `scheduler`), stores each finished row in the cache
    as it arrives, and always (also when interrupted or when the cluster fails)
    writes the CSV of the finished points atomically before returning or raising.
  * Cache: `<cache>/points/<key>.json`, key = sha256 of (model bytes, input bytes,
    canonical hw TOML, pipeline, `snnc_version()`); built zoo models in
    `<cache>/models/`. A point whose failure may not recur (an internal error, a lost
    worker) is not cached.
  * CSV columns: model, the grid keys, pipeline, RESULT_COLUMNS. Progress (rich) and
    notes go to stderr; the CSV to `out`, or stdout without it.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import signal
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from snnc.backend.errors import HwConfigError, SnncError
from snnc.backend.hwconfig import HwConfig, load_hw
from snnc.compiler.sweep_point import DEFAULT_PIPELINE_NAME, SEARCHED_PIPELINES, snnc_version

TOP_LEVEL_KEYS = ("grid", "hw", "inputs", "models", "pipelines")
RESULT_COLUMNS = ("cycles", "dram_bytes", "sram_bytes", "energy_pj", "compile_s", "simulate_s", "error")
CONNECT_TIMEOUT = "5s"


@dataclass(frozen=True)
class ModelEntry:
    label: str  # as written in the sweep file
    zoo: str | None  # zoo name, or None for an ONNX file
    path: Path | None = None
    input_path: Path | None = None


@dataclass(frozen=True)
class SweepSpec:
    source: str
    models: tuple[ModelEntry, ...]
    pipelines: tuple[str, ...]
    grid_keys: tuple[str, ...]
    hw_points: tuple[tuple[tuple, HwConfig], ...]  # (grid values in key order, config)


@dataclass(frozen=True)
class Point:
    model: ModelEntry
    values: tuple  # grid values in spec.grid_keys order
    hw: HwConfig
    pipeline: str


# --------------------------------------------------------------------------------------
# the sweep file
# --------------------------------------------------------------------------------------


def _string_list(doc: dict, key: str, source: str, default: list[str] | None = None) -> list[str]:
    if key not in doc:
        if default is None:
            raise SnncError(f"{source}: {key}: missing (a non-empty array of strings)")
        return default
    value = doc[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SnncError(f"{source}: {key}: expected an array of strings, found {value!r}")
    if not value:
        raise SnncError(f"{source}: {key}: empty (the grid would have no point)")
    _no_duplicates(value, key, source)
    return value


def _no_duplicates(values: list, key: str, source: str) -> None:
    seen = []
    for v in values:
        if any(type(v) is type(s) and v == s for s in seen):
            raise SnncError(f"{source}: {key}: {v!r} is listed twice")
        seen.append(v)


def _zoo_names() -> frozenset[str]:
    from snnc.compiler.zoo import ZOO  # imports onnx: only when a model is not an .onnx path

    return frozenset(ZOO)


def _model_entries(doc: dict, base: Path, source: str) -> tuple[ModelEntry, ...]:
    inputs = doc.get("inputs", {})
    if not isinstance(inputs, dict) or not all(isinstance(v, str) for v in inputs.values()):
        raise SnncError(f"{source}: inputs: expected a table of ONNX path = \"input.npz\", found {inputs!r}")
    entries = []
    for i, label in enumerate(_string_list(doc, "models", source)):
        if not label.endswith(".onnx") and label in _zoo_names():
            if label in inputs:
                raise SnncError(f"{source}: inputs.{json.dumps(label)}: a zoo model brings its own input")
            entries.append(ModelEntry(label, label))
            continue
        path = base / label
        if not label.endswith(".onnx") or not path.is_file():
            raise SnncError(f"{source}: models[{i}] {label!r}: neither a zoo model (`snnc zoo --list`) "
                            f"nor an existing .onnx file")
        input_path = base / inputs[label] if label in inputs else path.with_suffix(".npz")
        if not input_path.is_file():
            hint = "" if label in inputs else f" (name one in [inputs], or put {input_path.name} beside it)"
            raise SnncError(f"{source}: models[{i}] {label!r}: input file {input_path} not found{hint}")
        entries.append(ModelEntry(label, None, path, input_path))
    for key in inputs:
        if key not in {e.label for e in entries}:
            raise SnncError(f"{source}: inputs.{json.dumps(key)}: not one of the models")
    return tuple(entries)


def _pipelines(doc: dict, source: str) -> tuple[str, ...]:
    from snnc.compiler.pipeline import CompileOptions, build_passes

    pipelines = _string_list(doc, "pipelines", source, default=[DEFAULT_PIPELINE_NAME])
    for i, pipeline in enumerate(pipelines):
        if pipeline != DEFAULT_PIPELINE_NAME and pipeline not in SEARCHED_PIPELINES:
            try:
                build_passes(CompileOptions(passes=pipeline))
            except SnncError as exc:
                raise SnncError(f"{source}: pipelines[{i}]: {str(exc).removeprefix('--passes ')}") from None
    return tuple(pipelines)


def _hw_points(doc: dict, base_dir: Path, source: str) -> tuple[tuple[str, ...], tuple]:
    hw_spec = doc.get("hw", "loas")
    if not isinstance(hw_spec, str):
        raise SnncError(f"{source}: hw: expected a preset name or a TOML path, found {hw_spec!r}")
    if hw_spec.endswith(".toml") or "/" in hw_spec:
        hw_spec = str(base_dir / hw_spec)
    try:
        base = load_hw(hw_spec)
    except HwConfigError as exc:
        raise SnncError(f"{source}: hw: {exc}") from None
    grid = doc.get("grid", {})
    if not isinstance(grid, dict):
        raise SnncError(f"{source}: grid: expected a table of hw keys, found {grid!r}")
    if "grid" in doc and not grid:
        raise SnncError(f"{source}: grid: empty (name hw keys such as \"compute.num_pes\" = [8, 16], "
                        "or leave the table out)")
    base_doc = dataclasses.asdict(base)
    keys = tuple(grid)
    for key, values in grid.items():
        where = f"{source}: grid.{json.dumps(key)}"
        section, _, name = key.partition(".")
        if not name or section not in base_doc:
            raise SnncError(f"{where}: expected a dotted hw key, one of the sections "
                            f"{', '.join(sorted(base_doc))} then a key (e.g. \"compute.num_pes\")")
        if not isinstance(values, list):
            raise SnncError(f"{where}: expected an array of values, found {values!r}")
        if not values:
            raise SnncError(f"{where}: empty (the grid would have no point)")
        _no_duplicates(values, f"grid.{json.dumps(key)}", source)
        for value in values:  # each value checked alone first: the error names it
            _with_values(base_doc, {key: value}, f"{source}: grid")
    points = []
    for combo in itertools.product(*(grid[key] for key in keys)):
        points.append((combo, _with_values(base_doc, dict(zip(keys, combo)), f"{source}: grid")))
    return keys, tuple(points)


def _with_values(base_doc: dict, values: dict, source: str) -> HwConfig:
    doc = {section: dict(table) for section, table in base_doc.items()}
    for key, value in values.items():
        section, _, name = key.partition(".")
        doc[section][name] = value
    try:
        return HwConfig.from_mapping(doc, source=source)
    except HwConfigError as exc:
        raise SnncError(str(exc)) from None


def load_sweep(path: str | Path) -> SweepSpec:
    path = Path(path)
    source = str(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SnncError(f"{source}: no such sweep file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SnncError(f"{source}: cannot read the sweep file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SnncError(f"{source}: not valid TOML: {exc}") from None
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            raise SnncError(f"{source}: unknown key {key!r} (known: {', '.join(TOP_LEVEL_KEYS)})")
    base_dir = path.parent
    models = _model_entries(doc, base_dir, source)
    pipelines = _pipelines(doc, source)
    keys, hw_points = _hw_points(doc, base_dir, source)
    return SweepSpec(source, models, pipelines, keys, hw_points)


def grid_points(spec: SweepSpec) -> list[Point]:
    return [Point(model, values, hw, pipeline)
            for model in spec.models for values, hw in spec.hw_points for pipeline in spec.pipelines]


# --------------------------------------------------------------------------------------
# models and the cache
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelData:
    model: bytes
    inputs: bytes  # npz
    digest: str  # of model and inputs


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SnncError(f"{path}: cannot read ({exc.strerror})") from None


def prepare_model(entry: ModelEntry, cache: Path, on_layer=None) -> ModelData:
    """The model's ONNX and input bytes; a zoo model is built once per snnc version."""
    from snnc.compiler.fileio import atomic_write_bytes, load_npz
    from snnc.compiler.sweep_point import npz_bytes

    if entry.zoo is None:
        load_npz(entry.input_path)  # a bad input file is the user's error, named now
        model, inputs = _read(entry.path), _read(entry.input_path)
        return ModelData(model, inputs, _sha256(model, inputs))
    from snnc.runtime.files import ensure_directory

    stem = f"{entry.zoo}-{snnc_version()}"  # the version has dots: no with_suffix
    onnx_path, input_path = cache / "models" / f"{stem}.onnx", cache / "models" / f"{stem}.npz"
    if not (onnx_path.is_file() and input_path.is_file()):
        from snnc.compiler.zoo import build

        onnx_model, arrays = build(entry.zoo, on_layer=on_layer)
        ensure_directory(onnx_path.parent)
        atomic_write_bytes(input_path, npz_bytes(arrays))
        atomic_write_bytes(onnx_path, onnx_model.SerializeToString())
    model, inputs = _read(onnx_path), _read(input_path)
    return ModelData(model, inputs, _sha256(model, inputs))


def point_key(point: Point, data: ModelData) -> str:
    text = json.dumps({"model": data.digest, "hw": point.hw.to_toml(), "pipeline": point.pipeline,
                       "snnc": snnc_version()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class ResultCache:
    def __init__(self, directory: Path):
        from snnc.runtime.files import ensure_directory

        self.points = ensure_directory(directory / "points")

    def get(self, key: str) -> dict | None:
        try:
            row = json.loads((self.points / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # absent (or unreadable: run the point again)
        return row if isinstance(row, dict) and set(RESULT_COLUMNS) <= row.keys() else None

    def put(self, key: str, row: dict) -> None:
        from snnc.compiler.fileio import atomic_write_text

        atomic_write_text(self.points / f"{key}.json", json.dumps({c: row[c] for c in RESULT_COLUMNS}))


# --------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------


@dataclass
class SweepOutcome:
    points: list[Point]
    rows: dict[int, dict]  # point index -> finished row
    cached: int = 0
    ran: int = 0
    workers: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(1 for row in self.rows.values() if row["error"])


def _connect(scheduler: str | None, workers: int, n_pending: int):
    """(client, cluster or None). The import of distributed waits until there is work."""
    import dask
    from distributed import Client, LocalCluster

    # In-process scheduler and client chatter (a closing comm is CRITICAL to them) is not
    # the user's business: what goes wrong reaches the sweep as an exception or a row.
    # Dask's logging config gives some loggers their own level, so each one is told.
    for name in ["distributed", *logging.root.manager.loggerDict]:
        if name.split(".")[0] == "distributed":
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    if scheduler is not None:
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False), None
        except (OSError, ValueError, TypeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SnncError(f"--scheduler {scheduler}: cannot connect ({reason})") from None
    environ = {key: value for key, value in dask.config.get("distributed.nanny.pre-spawn-environ").items()
               if key != "MALLOC_TRIM_THRESHOLD_"}
    # The worker processes inherit an ignored SIGINT: Ctrl-C stops the sweep here (which
    # closes the cluster), instead of every worker dying with a traceback of its own.
    with _sigint_ignored(), dask.config.set({
        # Dask's fixed trim threshold also fixes glibc's mmap threshold: every big NumPy
        # array is then mapped and unmapped afresh, which made a point cost 1.7x the CPU
        # time of the same compile + simulate in a plain process (page faults). The
        # sampling profiler (every 10 ms) cost another 10 %.
        "distributed.nanny.pre-spawn-environ": environ,
        "distributed.worker.profile.enabled": False,
    }):
        cluster = LocalCluster(n_workers=min(workers, n_pending), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
    return Client(cluster, set_as_default=False), cluster


@contextlib.contextmanager
def _sigint_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_lost(exc: BaseException) -> dict:
    reason = str(exc).splitlines()[0] if str(exc) else ""
    return {**dict.fromkeys(RESULT_COLUMNS), "error": f"worker failed: {type(exc).__name__}: {reason}",
            "cacheable": False}


def run_sweep(spec: SweepSpec, *, cache_dir: Path, out: Path | None, workers: int = 2,
              scheduler: str | None = None, plot: Path | None = None, console=None) -> SweepOutcome:
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    console = console or Console(stderr=True)
    start = time.perf_counter()
    cache = ResultCache(cache_dir)
    points = grid_points(spec)
    outcome = SweepOutcome(points, {})
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                        disable=not console.is_terminal, transient=True)
    try:
        with progress:
            data: dict[str, ModelData] = {}
            for entry in spec.models:
                task = progress.add_task(f"preparing {entry.label}", total=None)
                data[entry.label] = prepare_model(
                    entry, cache_dir, on_layer=lambda layer, t=task, e=entry.label: progress.update(
                        t, description=f"building {e}: calibrating {layer}"))
                progress.remove_task(task)
            keys = [point_key(p, data[p.model.label]) for p in points]
            pending = []
            for i, key in enumerate(keys):
                row = cache.get(key)
                if row is None:
                    pending.append(i)
                else:
                    outcome.rows[i] = row
            outcome.cached = len(outcome.rows)
            if pending:
                _evaluate(spec, points, keys, pending, data, cache, outcome, progress, workers, scheduler)
    finally:
        outcome.seconds = time.perf_counter() - start
        write_csv(spec, outcome, out)
    if plot is not None:
        plot_pareto(spec, outcome, plot)
    return outcome


def _evaluate(spec, points, keys, pending, data, cache, outcome, progress, workers, scheduler) -> None:
    from snnc.compiler.sweep_point import evaluate_point

    where = scheduler or f"{min(workers, len(pending))} local workers"
    task = progress.add_task(f"starting {where}", total=len(pending))
    client, cluster = _connect(scheduler, workers, len(pending))
    try:
        from concurrent.futures import CancelledError

        from distributed import as_completed

        progress.update(task, description=f"waiting for a worker on {where}")
        if not client.scheduler_info(n_workers=-1)["workers"]:  # a batch queue may take a while
            progress.console.print(f"sweep: no worker on {where} yet, waiting for one to join")
        client.wait_for_workers(1)
        outcome.workers = len(client.scheduler_info(n_workers=-1)["workers"])
        progress.update(task, description=f"sweep on {outcome.workers} workers")
        version = snnc_version()
        # each model travels to a worker once, not once per point
        shared = {label: client.scatter([data[label].model, data[label].inputs])
                  for label in {points[i].model.label for i in pending}}
        futures = {}
        for i in pending:
            p = points[i]
            model, inputs = shared[p.model.label]
            futures[client.submit(evaluate_point, model, inputs, p.hw.to_toml(), p.pipeline, version,
                                  key=f"snnc-point-{keys[i]}")] = i
        for future in as_completed(futures, loop=client.loop):
            i = futures[future]
            try:
                row = future.result()
            except CancelledError as exc:  # the cluster went away: every point left would say so
                first = (str(exc).splitlines() or ["cancelled"])[0]
                reason = first.rsplit("reason: ", 1)[-1].rstrip(".")
                raise SnncError(f"sweep: lost the Dask cluster ({reason}) with {len(pending) - outcome.ran} "
                                "points unfinished; the finished ones are kept: run the sweep again to resume"
                                ) from None
            except Exception as exc:  # the task never returned: its worker died (KilledWorker), ...
                row = _worker_lost(exc)
            if row.pop("cacheable"):
                cache.put(keys[i], row)
            outcome.rows[i] = row
            outcome.ran += 1
            p = points[i]
            progress.update(task, advance=1, description=f"{_point_text(spec, p)}: "
                            f"{'failed' if row['error'] else 'done'}")
        # workers of a batch queue may have joined since the start
        outcome.workers = max(outcome.workers, len(client.scheduler_info(n_workers=-1)["workers"]))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _point_text(spec: SweepSpec, point: Point) -> str:
    values = " ".join(f"{key}={value}" for key, value in zip(spec.grid_keys, point.values))
    return " ".join(part for part in (point.model.label, values, point.pipeline) if part)


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------


def csv_text(spec: SweepSpec, outcome: SweepOutcome) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", *spec.grid_keys, "pipeline", *RESULT_COLUMNS])
    for i, point in enumerate(outcome.points):
        row = outcome.rows.get(i)
        if row is not None:
            writer.writerow([point.model.label, *point.values, point.pipeline,
                             *("" if row[c] is None else row[c] for c in RESULT_COLUMNS)])
    return buffer.getvalue()


def write_csv(spec: SweepSpec, outcome: SweepOutcome, out: Path | None) -> None:
    from snnc.compiler.fileio import atomic_write_text

    text = csv_text(spec, outcome)
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(out, text)


def pareto_front(pairs: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both (lower is better), by the first."""
    order = sorted(range(len(pairs)), key=lambda i: pairs[i])
    front, best = [], float("inf")
    for i in order:
        if pairs[i][1] < best:
            front.append(i)
            best = pairs[i][1]
    return front


def plot_pareto(spec: SweepSpec, outcome: SweepOutcome, path: Path) -> None:
    """Cycles against energy of every finished point: a panel per model, in it a colour and
    a Pareto front per SRAM size."""
    try:
        import matplotlib
    except ImportError:
        raise SnncError("--plot needs matplotlib: pip install 'snnc[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from snnc.compiler.fileio import atomic_write_bytes

    panels: dict[str, dict[int, list[tuple[float, float]]]] = {entry.label: {} for entry in spec.models}
    for i, row in sorted(outcome.rows.items()):
        if not row["error"]:
            point = outcome.points[i]
            panels[point.model.label].setdefault(point.hw.sram.size_bytes, []).append(
                (float(row["cycles"]), float(row["energy_pj"]) / 1e6))
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    sizes = sorted({size for groups in panels.values() for size in groups})
    for ax, (label, groups) in zip(axes.flat, panels.items()):
        for size, pairs in sorted(groups.items()):
            colour = colours[sizes.index(size) % len(colours)]
            x, y = zip(*pairs)
            ax.scatter(x, y, s=18, alpha=0.35, color=colour)
            front = [pairs[i] for i in pareto_front(pairs)]
            fx, fy = zip(*front)
            ax.step(fx, fy, where="post", color=colour, marker="o",
                    label=f"SRAM {size / 1024:g} KB: {len(front)} of {len(pairs)} on the front")
        every = [pair for pairs in groups.values() for pair in pairs]
        if every:
            for axis, values in (("x", [p[0] for p in every]), ("y", [p[1] for p in every])):
                if min(values) > 0 and max(values) / min(values) > 10:
                    getattr(ax, f"set_{axis}scale")("log")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no point finished without an error", ha="center", transform=ax.transAxes)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("cycles")
        ax.set_ylabel("energy (uJ)")
    fig.suptitle(f"{Path(spec.source).name}: cycles against energy, Pareto front per SRAM size "
                 "(lower left is better)", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".").lower(), dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
