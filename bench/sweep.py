"""`snnc sweep` on 2 workers against a plain serial loop of `snnc compile` + `snnc run`.

    python bench/sweep.py [--model vgg16-cifar10] [--workers 2] [--out bench/sweep.md]

Issue 17's target: with 2 workers on a 2-core machine, a 24-point sweep of vgg16-cifar10
runs at >= 1.7x the points per minute of a serial loop over `snnc compile` + `snnc run`
processes. Both run here, one after the other, on the same 24 points (GRID: PEs x SRAM
size x DRAM bandwidth on the loas preset, the default pipeline) and the same ONNX model
and input, built once beforehand and not timed:
  * serial: for each point, its hw config written as TOML, then `snnc compile m.onnx -o
    p.bin --hw point.toml` and `snnc run p.bin --input m.npz --report r.json --quiet`;
  * sweep:  one `snnc sweep sweep.toml --workers N --out r.csv` process with an empty
    cache: cluster start-up, the model's transfer to the workers and every point.
Each is timed as a whole: wall clock (the target's measure) and the CPU time (user + sys)
of all its processes, the sweep's workers included, which a busy machine does not
inflate as much. "cores used" shows how much of the 2 cores each part got: Linux shares
the CPU fairly between sessions (sched_autogroup), so while other people's jobs run, the
sweep's two workers together get no more CPU than the serial loop's one process, and only
the CPU-time ratio is left to compare. The script also checks that both produce the same
cycles, DRAM bytes and energy at every point, and prints the load average before and
after each part: the machine is shared, so a busy neighbour shows in the figures.
Never part of the tests (tests/test_sweep_bench.py checks the plumbing).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.7
GRID = {  # 4 x 3 x 2 = 24 points
    "compute.num_pes": [4, 8, 16, 32],
    "sram.size_bytes": [131072, 262144, 524288],
    "dram.bandwidth_gb_s": [64.0, 128.0],
}
SNNC = [sys.executable, "-m", "snnc.compiler.cli"]


def grid_points() -> list[dict]:
    return [dict(zip(GRID, combo)) for combo in itertools.product(*GRID.values())]


def sweep_toml(model: Path) -> str:
    lines = [f"models = [{json.dumps(model.name)}]", 'pipelines = ["default"]', 'hw = "loas"', "[grid]"]
    lines += [f"{json.dumps(key)} = {json.dumps(values)}" for key, values in GRID.items()]
    return "\n".join(lines) + "\n"


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


class Clock:
    """Wall and CPU seconds (user + sys of the finished child processes) of a block."""

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), self._children()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._wall
        self.cpu = self._children() - self._cpu

    @staticmethod
    def _children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime


def _run(argv: list[str], cwd: Path) -> None:
    proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[2:])} failed: {proc.stderr.strip()[-300:]}")


def write_sweep(model: Path, workdir: Path) -> Path:
    spec = workdir / "sweep.toml"
    spec.write_text(sweep_toml(model))
    return spec


def serial_loop(spec: Path, inputs: Path, workdir: Path) -> tuple[Clock, list[dict]]:
    """The loop's Clock and each point's (cycles, dram_bytes, energy_pj). The points and
    their hw configs are the sweep's own (snnc.compiler.sweep), in its order."""
    from snnc.compiler import sweep

    points = sweep.grid_points(sweep.load_sweep(spec))
    for i, point in enumerate(points):
        (workdir / f"hw{i}.toml").write_text(point.hw.to_toml())
    with Clock() as clock:
        for i, point in enumerate(points):
            hw, prog, report = workdir / f"hw{i}.toml", workdir / f"p{i}.bin", workdir / f"r{i}.json"
            _run([*SNNC, "compile", str(point.model.path), "-o", str(prog), "--hw", str(hw)], workdir)
            _run([*SNNC, "run", str(prog), "--input", str(inputs), "--report", str(report), "--quiet"], workdir)
    results = []
    for i in range(len(points)):
        total = json.loads((workdir / f"r{i}.json").read_text())["total"]
        results.append({"cycles": int(total["cycles"]), "dram_bytes": int(total["dram_bytes"]),
                        "energy_pj": float(total["energy_pj"])})
    return clock, results


def run_sweep(spec: Path, workers: int, workdir: Path) -> tuple[Clock, list[dict]]:
    out = workdir / "results.csv"
    with Clock() as clock:
        _run([*SNNC, "sweep", str(spec), "--workers", str(workers), "--out", str(out), "--cache",
              str(workdir / "cache")], workdir)
    rows = list(csv.DictReader(out.open()))
    failed = [r["error"] for r in rows if r["error"]]
    if failed:
        raise RuntimeError(f"{len(failed)} sweep points failed, e.g. {failed[0]}")
    return clock, [{"cycles": int(r["cycles"]), "dram_bytes": int(r["dram_bytes"]),
                    "energy_pj": float(r["energy_pj"])} for r in rows]


def agreement(serial: list[dict], swept: list[dict]) -> int:
    """Points whose cycles, DRAM bytes and energy agree (energy to 1e-9 relative)."""
    return sum(1 for a, b in zip(serial, swept)
               if a["cycles"] == b["cycles"] and a["dram_bytes"] == b["dram_bytes"]
               and abs(a["energy_pj"] - b["energy_pj"]) <= 1e-9 * max(1.0, abs(a["energy_pj"])))


def render(model: str, workers: int, points: int, serial: Clock, swept: Clock, agree: int,
           loads: dict[str, str]) -> str:
    def rate(seconds: float) -> float:
        return 60 * points / seconds

    ratio, cpu_ratio = serial.wall / swept.wall, serial.cpu / swept.cpu
    verdict = "MET" if ratio >= TARGET_RATIO and agree == points else "MISSED"
    lines = [
        f"# snnc sweep vs a serial loop ({model}, {points} points)",
        "",
        f"python {platform.python_version()}, {os.cpu_count()} CPUs; load average (1/5/15 min) "
        + "; ".join(f"{when}: {value}" for when, value in loads.items()),
        "",
        "| run | wall s | points/min | CPU s | points per CPU min | cores used (CPU s / wall s) |",
        "|---|---|---|---|---|---|",
        f"| serial `snnc compile` + `snnc run` processes | {serial.wall:.1f} | {rate(serial.wall):.1f} "
        f"| {serial.cpu:.1f} | {rate(serial.cpu):.1f} | {serial.cpu / serial.wall:.2f} |",
        f"| `snnc sweep --workers {workers}` (one process, cluster start-up included) | {swept.wall:.1f} "
        f"| {rate(swept.wall):.1f} | {swept.cpu:.1f} | {rate(swept.cpu):.1f} | {swept.cpu / swept.wall:.2f} |",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        f"| sweep >= {TARGET_RATIO}x the serial loop's points/min (wall), same results | {ratio:.2f}x "
        f"(CPU time: {cpu_ratio:.2f}x), {agree}/{points} points agree | {verdict} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16-cifar10", help="zoo model (default vgg16-cifar10)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="snnc-bench-sweep-") as tmp:
        workdir = Path(tmp)
        model, inputs = workdir / f"{args.model}.onnx", workdir / f"{args.model}.npz"
        print(f"building {args.model} ...", file=sys.stderr)
        _run([*SNNC, "zoo", args.model, "-o", str(model), "--input-out", str(inputs)], workdir)
        spec = write_sweep(model, workdir)
        loads = {"before the serial loop": load()}
        print(f"serial loop over {len(grid_points())} points ...", file=sys.stderr)
        serial_clock, serial = serial_loop(spec, inputs, workdir)
        loads["after it"] = load()
        print(f"snnc sweep on {args.workers} workers ...", file=sys.stderr)
        sweep_clock, swept = run_sweep(spec, args.workers, workdir)
        loads["after the sweep"] = load()
    text = render(args.model, args.workers, len(serial), serial_clock, sweep_clock, agreement(serial, swept),
                  loads)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
