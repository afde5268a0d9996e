"""Toolchain speed and memory, measured beside onnxruntime in the same run.

    python bench/run.py [--quick] [--models a,b] [--repeats 5] [--out bench/results.md]

For every zoo model it measures, as the median of N runs after one warm-up, the two sides of
each ratio in alternating rounds (snnc, onnxruntime, snnc, ...) so that the machine's load
weighs on both alike:
  * compile time (ONNX -> prog.bin bytes: `compile_model`, which ends with
    `write_program`) vs onnxruntime InferenceSession creation on the same ONNX file;
  * simulation time, cycle-level and functional-only (`simulate(..., functional=True)`),
    vs onnxruntime inference (`session.run`) on the same input;
  * the same as a user waits: a whole `snnc compile` / `snnc run` / `snnc run
    --functional` process vs a whole `python -c` process that imports onnxruntime,
    creates the session and runs it once;
  * peak RSS (ru_maxrss of the child) of `snnc compile` and `snnc run`, and of the
    onnxruntime process;
  * binary size vs the packed payload it must carry: the weights bitmask-packed
    (1 bit per ONNX weight + 1 byte per non-zero weight, LoAS Fig. 8 style) plus the
    other constants as compiled (the int32 parameter blocks: bias, threshold, leak,
    v_reset); and the raw constants image the binary decodes to, for scale.
Targets (issue 17 section 3, vgg16-cifar10, ratios to onnxruntime in the same run): compile
in-process <= 2.15x (issue 14: 1.2x the 1.79x of 5e2ce31), compile as a whole process <= 2x, cycle-level simulation in-process <= 5x, functional simulation
in-process <= 2x; printed with MET/MISSED, beside the memory and binary-size checks; then the
last three for every model measured (the issue: "the same holds for every model"). The
machine is shared: the header records the load average before and after.
Models marked `large` in the zoo (minutes per run) get 1 timed run and no warm-up.
A measurement that fails is reported as "error" and the rest of the run goes on.
It prints markdown tables and writes bench/results.md. Never part of the tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK_MODELS = ("mlp", "vgg-small", "alexnet-cifar10", "vgg16-cifar10")
# The ratio targets of issue 17 section 3 and issue 14 (snnc / onnxruntime on the same model, measured
# in the same run): (what, snnc's figure, onnxruntime's figure, limit, note). Issue 14's is 1.2x the
# in-process compile of 5e2ce31 (before the loop level), which was 0.28 s / 0.16 s = 1.79x ORT.
TARGETS = (
    ("compile, in-process", "compile_s", "ort_session_s", 1.2 * 1.79, "issue 14: 1.2x 5e2ce31's 1.79x"),
    ("compile, whole process", "proc_compile_s", "proc_ort_s", 2.0, ""),
    ("cycle-level simulation, in-process", "sim_cycle_s", "ort_infer_s", 5.0, "this round; 2x long-term"),
    ("functional simulation, in-process", "sim_functional_s", "ort_infer_s", 2.0, ""),
)
TARGET_MODEL = "vgg16-cifar10"
MEMORY_LIMIT_MIB = 4096
BINARY_LIMIT = 1.1


# A pause before each timed call: onnxruntime's worker threads keep spinning for a while after
# session.run returns, and on 2 cores they slowed whatever was timed next (the functional
# simulation's median 75-101 ms right after an inference, 50-76 ms after a 0.2 s pause).
SETTLE_S = 0.2


def interleaved_medians(fns: dict, repeats: int, warmup: bool, errors: list[str], label: str = "",
                        settle_s: float = SETTLE_S) -> dict:
    """Median wall time of each of `fns`, run in alternating rounds (a, b, c, a, b, c, ...)
    so that a change in the machine's load during the measurement weighs on all of them
    alike and their ratios hold, each after a pause of `settle_s` (so that none is timed
    while the previous one's threads wind down); a function that raises is dropped (its
    error recorded)."""
    samples: dict = {name: [] for name in fns}
    live = dict(fns)
    for i in range(repeats + (1 if warmup else 0)):
        for name, fn in list(live.items()):
            time.sleep(settle_s)
            start = time.perf_counter()
            try:
                fn()
            except Exception as exc:  # keep measuring the others
                errors.append(f"{label}{name}: {type(exc).__name__}: {str(exc)[:300]}")
                if os.environ.get("SNNC_DEBUG"):
                    traceback.print_exc()
                del live[name]
                samples.pop(name)
                continue
            if i or not warmup:
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


TIME = "/usr/bin/time"


def process_stats(commands: dict[str, list[str]], repeats: int, warmup: bool, errors: list[str],
                  label: str = "") -> dict[str, tuple[float, float]]:
    """Per command: median wall time (s) and max peak RSS (MiB), each run a fresh process,
    the commands run in alternating rounds as in `interleaved_medians` (after a warm-up
    round that is not timed, unless `warmup` is False).

    The peak RSS comes from GNU time's %M: on Linux a child's ru_maxrss starts at its
    parent's RSS at fork (kept across exec), so measuring our own children would report
    this (large) benchmark process instead; the small `time` process in between avoids it.
    """
    peaks: dict[str, list[float]] = {name: [] for name in commands}
    # the warm-up run leaves .pyc files behind, as an installed package has them
    # (PYTHONDONTWRITEBYTECODE would make every run compile snnc's sources again)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as tmp:
        err_path, rss_path = Path(tmp) / "stderr", Path(tmp) / "rss"

        def runner(name: str, argv: list[str]):
            def run() -> None:
                with open(err_path, "wb") as err:
                    code = subprocess.call([TIME, "-f", "%M", "-o", str(rss_path), *argv],
                                           stdout=subprocess.DEVNULL, stderr=err, env=env)
                if code != 0:
                    detail = err_path.read_text(errors="replace")[-300:].strip()
                    raise RuntimeError(f"{' '.join(argv[2:])} failed: {detail}")
                peaks[name].append(int(rss_path.read_text().split()[-1]) / 1024)  # KiB -> MiB
            return run

        walls = interleaved_medians({name: runner(name, argv) for name, argv in commands.items()},
                                    repeats, warmup, errors, label)
    return {name: (wall, max(peaks[name])) for name, wall in walls.items()}


ORT_PROCESS = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
feeds = dict(np.load(sys.argv[2]))
s.run(None, feeds)
"""


def packed_weight_bytes(model) -> int:
    """Bitmask-packed weights: 1 bit per weight + 1 byte per non-zero (8-bit weights)."""
    import numpy as np
    from onnx import numpy_helper

    total = 0
    for init in model.graph.initializer:
        if init.name.endswith(".weight"):
            w = numpy_helper.to_array(init)
            total += (w.size + 7) // 8 + int(np.count_nonzero(w))
    return total


def bench_model(name: str, repeats: int, workdir: Path, errors: list[str], processes: bool,
                hw: str | None = None) -> dict:
    import onnxruntime as ort

    from snnc.backend.binformat import read_program
    from snnc.passes.encode import find_program
    from snnc.compiler.fileio import atomic_write_bytes, save_npz
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.compiler.zoo import ZOO, build
    from snnc.passes.convert_snn_to_loops import PARAMS_CONST_PREFIX
    from snnc.runtime import simulate

    large = ZOO[name].large
    reps, warm = (1, False) if large else (repeats, True)
    row: dict = {"model": name, "repeats": reps}
    start = time.perf_counter()
    model, inputs = build(name)
    row["build_s"] = time.perf_counter() - start
    model_path, input_path, prog_path = (workdir / f"{name}.onnx", workdir / f"{name}.npz",
                                         workdir / f"{name}.bin")
    atomic_write_bytes(model_path, model.SerializeToString())
    save_npz(input_path, inputs)
    row["packed_bytes"] = packed_weight_bytes(model)
    del model

    providers = ["CPUExecutionProvider"]
    options = CompileOptions(hw=hw)
    label = f"{name}: "
    row.update(interleaved_medians({  # each ratio's two sides in alternating rounds
        "ort_session_s": lambda: ort.InferenceSession(str(model_path), providers=providers),
        "compile_s": lambda: compile_model(model_path, options),
    }, reps, warm, errors, label))
    try:
        result = compile_model(model_path, options)
    except Exception as exc:
        errors.append(f"{name}: compile: {type(exc).__name__}: {str(exc)[:300]}")
        return row
    atomic_write_bytes(prog_path, result.binary)
    image = read_program(result.binary)
    row["binary_bytes"] = len(result.binary)
    row["param_bytes"] = sum(len(c.payload) for c in find_program(result.accel_module).constants()
                             if c.sym_name.data.startswith(PARAMS_CONST_PREFIX))
    row["payload_bytes"] = row["packed_bytes"] + row["param_bytes"]
    row["constants_bytes"] = len(image.constants)
    del result
    inferences = {
        "sim_functional_s": lambda: simulate(image, inputs, functional=True),
        "sim_cycle_s": lambda: simulate(image, inputs),
    }
    try:
        session = ort.InferenceSession(str(model_path), providers=providers)
        inferences["ort_infer_s"] = lambda: session.run(None, inputs)
    except Exception as exc:
        errors.append(f"{name}: onnxruntime: {type(exc).__name__}: {str(exc)[:300]}")
    row.update(interleaved_medians(inferences, reps, warm, errors, label))
    del image, inferences

    if processes:
        snnc = [sys.executable, "-m", "snnc.compiler.cli"]
        stats = process_stats({  # the compile first in each round: the runs read the prog.bin it writes
            "proc_compile": snnc + ["compile", str(model_path), "-o", str(prog_path)] + (["--hw", hw] if hw else []),
            "proc_ort": [sys.executable, "-c", ORT_PROCESS, str(model_path), str(input_path)],
            "proc_run": snnc + ["run", str(prog_path), "--input", str(input_path), "--quiet"],
            "proc_run_functional": snnc + ["run", str(prog_path), "--input", str(input_path), "--functional"],
        }, reps, warm, errors, label)
        for key, rss_key in (("proc_compile", "compile_rss_mib"), ("proc_run", "run_rss_mib"),
                             ("proc_run_functional", "run_functional_rss_mib"), ("proc_ort", "ort_rss_mib")):
            if key in stats:
                row[f"{key}_s"], row[rss_key] = stats[key]
    return row


# --------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------


def _num(row: dict, key: str, fmt: str = "{:.3f}") -> str:
    return fmt.format(row[key]) if key in row else "error"


def _ratio(row: dict, a: str, b: str) -> str:
    if a not in row or b not in row or not row[b]:
        return "-"
    return f"{row[a] / row[b]:.2f}x"


def render(rows: list[dict], processes: bool) -> str:
    out = ["## In-process (API calls)", "",
           "| model | compile s | ORT session s | compile ratio | sim cycle s | sim functional s "
           "| ORT infer s | cycle ratio | functional ratio |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r['model']} | {_num(r, 'compile_s')} | {_num(r, 'ort_session_s')} "
            f"| {_ratio(r, 'compile_s', 'ort_session_s')} | {_num(r, 'sim_cycle_s', '{:.4f}')} "
            f"| {_num(r, 'sim_functional_s', '{:.4f}')} | {_num(r, 'ort_infer_s', '{:.4f}')} "
            f"| {_ratio(r, 'sim_cycle_s', 'ort_infer_s')} | {_ratio(r, 'sim_functional_s', 'ort_infer_s')} |")
    if processes:
        out += ["", "## Whole processes (as a user waits)", "",
                "| model | snnc compile s | snnc run s | snnc run --functional s | python+ORT s "
                "| compile ratio | run ratio | functional ratio | peak RSS compile / run / ORT MiB |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(
                f"| {r['model']} | {_num(r, 'proc_compile_s', '{:.2f}')} | {_num(r, 'proc_run_s', '{:.2f}')} "
                f"| {_num(r, 'proc_run_functional_s', '{:.2f}')} | {_num(r, 'proc_ort_s', '{:.2f}')} "
                f"| {_ratio(r, 'proc_compile_s', 'proc_ort_s')} | {_ratio(r, 'proc_run_s', 'proc_ort_s')} "
                f"| {_ratio(r, 'proc_run_functional_s', 'proc_ort_s')} "
                f"| {_num(r, 'compile_rss_mib', '{:.0f}')} / {_num(r, 'run_rss_mib', '{:.0f}')} "
                f"/ {_num(r, 'ort_rss_mib', '{:.0f}')} |")
    out += ["", "## Binary size", "",
            "Packed payload = bitmask-packed weights (1 bit per ONNX weight + 1 byte per non-zero "
            "weight) + other constants (the compiled int32 parameter blocks: bias, threshold, leak, "
            "v_reset). Raw constants = the DRAM constants image the binary decodes to.", "",
            "| model | binary bytes | packed weights bytes | other constants bytes | packed payload bytes "
            "| binary / packed payload | raw constants bytes |",
            "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r['model']} | {_num(r, 'binary_bytes', '{:,}')} | {_num(r, 'packed_bytes', '{:,}')} "
            f"| {_num(r, 'param_bytes', '{:,}')} | {_num(r, 'payload_bytes', '{:,}')} "
            f"| {_ratio(r, 'binary_bytes', 'payload_bytes')} | {_num(r, 'constants_bytes', '{:,}')} |")
    return "\n".join(out) + "\n"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


def targets(rows: list[dict], processes: bool) -> str:
    """The issue's targets, met or missed, with the measured numbers."""
    by_name = {r["model"]: r for r in rows}
    lines = ["## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    r = by_name.get(TARGET_MODEL)
    for what, ours, theirs, limit, note in TARGETS:
        label = f"{what} {TARGET_MODEL} <= {limit:.3g}x ORT{f' ({note})' if note else ''}"
        if r is None or ours not in r or theirs not in r or not r[theirs]:
            lines.append(f"| {label} | not measured | n/a |")
            continue
        x = r[ours] / r[theirs]
        lines.append(f"| {label} | {r[ours]:.4f} s / {r[theirs]:.4f} s = {x:.2f}x | {_verdict(x <= limit)} |")
    big = by_name.get("resnet18-imagenet")
    if big is None or not processes:
        lines.append(f"| resnet18-imagenet compile + simulate < {MEMORY_LIMIT_MIB} MiB | not measured | n/a |")
    else:
        peaks = [big.get("compile_rss_mib"), big.get("run_rss_mib")]
        ok = None if None in peaks else max(peaks) < MEMORY_LIMIT_MIB
        lines.append(f"| resnet18-imagenet compile + simulate < {MEMORY_LIMIT_MIB} MiB "
                     f"| compile {peaks[0] or 0:.0f} MiB, run {peaks[1] or 0:.0f} MiB | {_verdict(ok)} |")
    ratios = [r["binary_bytes"] / r["payload_bytes"] for r in rows if r.get("payload_bytes")]
    worst = max(ratios) if ratios else None
    lines.append(f"| binary <= {BINARY_LIMIT}x packed payload (all models) | worst "
                 f"{'-' if worst is None else f'{worst:.3f}x'} | {_verdict(None if worst is None else worst <= BINARY_LIMIT)} |")
    return "\n".join(lines) + "\n"


def every_model(rows: list[dict], processes: bool) -> str:
    """Issue 17 section 3's ratio targets ("the same holds for every model in bench/run.py"), per model."""
    wanted = [t for t in TARGETS[1:] if processes or not t[1].startswith("proc_")]
    head = " | ".join(f"{what} <= {limit:.3g}x" for what, _, _, limit, _ in wanted)
    lines = ["", "### Issue 17 section 3 ratios, every model", "", f"| model | {head} |", "|---" * (len(wanted) + 1) + "|"]
    met = 0
    for r in rows:
        cells = []
        for _, ours, theirs, limit, _ in wanted:
            if r.get(ours) is None or not r.get(theirs):
                cells.append("not measured")
                continue
            x = r[ours] / r[theirs]
            met += x <= limit
            cells.append(f"{x:.2f}x {_verdict(x <= limit)}")
        lines.append(f"| {r['model']} | {' | '.join(cells)} |")
    lines.append(f"\n{met} of {len(rows) * len(wanted)} met.")
    return "\n".join(lines) + "\n"


def _load_average() -> str:
    """The 1-minute load average (the machine is shared: ratios move with it)."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"only {', '.join(QUICK_MODELS)} with 3 repeats")
    parser.add_argument("--models", help="comma-separated zoo models (default: all)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-processes", action="store_true", help="skip the whole-process measurements")
    parser.add_argument("--out", default=str(HERE / "results.md"), help="markdown file to write")
    parser.add_argument("--hw", metavar="PRESET|FILE.toml", default=None,
                        help="hardware config to compile for (default: loas; e.g. loas-rounds)")
    args = parser.parse_args(argv)

    from snnc.compiler.zoo import ZOO

    names = args.models.split(",") if args.models else (QUICK_MODELS if args.quick else tuple(ZOO))
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        parser.error(f"unknown zoo models: {', '.join(unknown)} (known: {', '.join(ZOO)})")
    repeats = 3 if args.quick and args.repeats == 5 else args.repeats
    processes = not args.no_processes
    rows, errors = [], []
    started = time.perf_counter()
    load_before = _load_average()
    with tempfile.TemporaryDirectory(prefix="snnc-bench-") as tmp:
        for name in names:
            print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                rows.append(bench_model(name, repeats, Path(tmp), errors, processes, args.hw))
            except Exception as exc:
                errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
            print(f"  {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    import onnxruntime

    header = (
        f"# snnc benchmark\n\nMedian of {repeats} runs after a warm-up (models marked large: 1 run, "
        f"no warm-up); ratios are snnc / onnxruntime {onnxruntime.__version__} (CPUExecutionProvider) "
        f"measured in the same run on this machine ({os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}); total {time.perf_counter() - started:.0f} s; "
        f"load average {load_before} before, {_load_average()} after"
        f"{f'; hardware config {args.hw}' if args.hw else ''}.\n\n")
    text = header + render(rows, processes) + "\n" + targets(rows, processes) + every_model(rows, processes)
    if errors:
        text += "\n## Errors\n\n" + "\n".join(f"- {e}" for e in errors) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
