"""Toolchain speed and memory, measured beside onnxruntime in the same run.

    python bench/run.py [--quick] [--models a,b] [--repeats 5]

For every zoo model it measures, as the median of N runs after one warm-up:
  * compile time (ONNX -> prog.bin) vs onnxruntime InferenceSession creation;
  * simulation time, cycle-level and functional-only, vs onnxruntime inference;
  * peak RSS of `snnc compile` and `snnc run` (separate processes);
  * the same as a user waits: a whole `snnc` process vs a whole `python -c`
    process that imports onnxruntime, creates the session and runs it;
  * binary size vs the constants (weight) payload it carries.
It prints a markdown table and writes bench/results.md. Never part of the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
QUICK_MODELS = ("mlp", "vgg-small")


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def process_stats(argv: list[str], repeats: int) -> tuple[float, float]:
    """Median wall time and max peak RSS (MiB) of a command, each run in a fresh process."""
    walls, peaks = [], []
    for i in range(repeats + 1):
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err = proc.stderr.read().decode() if proc.stderr else ""
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {err[-500:]}")
        if i:  # the first run is the warm-up (page cache, pyc files)
            walls.append(wall)
            peaks.append(usage.ru_maxrss / 1024)
    return statistics.median(walls), max(peaks)


ORT_PROCESS = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
feeds = dict(np.load(sys.argv[2]))
s.run(None, feeds)
"""


def bench_model(name: str, repeats: int, workdir: Path) -> dict:
    import onnxruntime as ort

    from snnc.backend.binformat import read_program
    from snnc.compiler.fileio import atomic_write_bytes, save_npz
    from snnc.compiler.pipeline import compile_model
    from snnc.compiler.zoo import build
    from snnc.runtime import simulate

    model, inputs = build(name)
    model_path, input_path, prog_path = workdir / f"{name}.onnx", workdir / f"{name}.npz", workdir / f"{name}.bin"
    atomic_write_bytes(model_path, model.SerializeToString())
    save_npz(input_path, inputs)

    result = compile_model(model_path)
    atomic_write_bytes(prog_path, result.binary)
    image = read_program(result.binary)

    row = {"model": name}
    row["compile_s"] = median_time(lambda: compile_model(model_path), repeats)
    row["ort_session_s"] = median_time(
        lambda: ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]), repeats)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    row["ort_infer_s"] = median_time(lambda: session.run(None, inputs), repeats)
    row["sim_cycle_s"] = median_time(lambda: simulate(image, inputs), repeats)
    row["sim_functional_s"] = median_time(lambda: simulate(image, inputs, functional=True), repeats)

    snnc = [sys.executable, "-m", "snnc.compiler.cli"]
    row["proc_compile_s"], row["compile_rss_mib"] = process_stats(
        snnc + ["compile", str(model_path), "-o", str(prog_path)], repeats)
    row["proc_run_s"], row["run_rss_mib"] = process_stats(
        snnc + ["run", str(prog_path), "--input", str(input_path), "--quiet"], repeats)
    row["proc_run_functional_s"], _ = process_stats(
        snnc + ["run", str(prog_path), "--input", str(input_path), "--functional"], repeats)
    row["proc_ort_s"], row["ort_rss_mib"] = process_stats(
        [sys.executable, "-c", ORT_PROCESS, str(model_path), str(input_path)], repeats)
    row["binary_bytes"] = len(result.binary)
    row["payload_bytes"] = len(image.constants)
    return row


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def render(rows: list[dict]) -> str:
    head = ("| model | compile s | ort session s | ratio | sim cycle s | sim func s | ort infer s "
            "| cycle ratio | func ratio | process: compile / run / ort s | peak RSS compile / run MiB "
            "| binary / payload |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['compile_s']:.3f} | {r['ort_session_s']:.3f} | {ratio(r['compile_s'], r['ort_session_s'])} "
            f"| {r['sim_cycle_s']:.4f} | {r['sim_functional_s']:.4f} | {r['ort_infer_s']:.4f} "
            f"| {ratio(r['sim_cycle_s'], r['ort_infer_s'])} | {ratio(r['sim_functional_s'], r['ort_infer_s'])} "
            f"| {r['proc_compile_s']:.2f} / {r['proc_run_s']:.2f} / {r['proc_ort_s']:.2f} "
            f"| {r['compile_rss_mib']:.0f} / {r['run_rss_mib']:.0f} "
            f"| {r['binary_bytes']:,} / {r['payload_bytes']:,} ({ratio(r['binary_bytes'], r['payload_bytes'])}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_MODELS)}, 3 repeats")
    parser.add_argument("--models", help="comma-separated zoo models (default: all)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from snnc.compiler.zoo import ZOO

    names = args.models.split(",") if args.models else (QUICK_MODELS if args.quick else tuple(ZOO))
    repeats = 3 if args.quick and args.repeats == 5 else args.repeats
    rows = []
    with tempfile.TemporaryDirectory(prefix="snnc-bench-") as tmp:
        for name in names:
            print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            rows.append(bench_model(name, repeats, Path(tmp)))
    table = render(rows)
    header = (f"# snnc benchmark\n\nMedian of {repeats} runs after a warm-up; ratios are snnc / onnxruntime "
              f"measured in the same run on this machine ({os.cpu_count()} cores).\n\n")
    (HERE / "results.md").write_text(header + table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
