"""A whole `snnc compile` process beside a whole onnxruntime process, run in alternation.

    python bench/startup.py [--models vgg16-cifar10,mlp] [--rounds 15] [--imports]

bench/run.py times each whole-process command as a block of runs; on a shared machine
the load moves between blocks and the ratio with it. Here each round runs every command
once (`python -m snnc.compiler.cli compile MODEL -o p.bin` per model, then the
onnxruntime process of bench/run.py on the same model and input), so both sides see the
same load: it prints the median and the minimum wall time and CPU time (user + sys of
the child) of each, and the ratios of the medians. `--imports` also prints what a
compile process spends importing, by package: the sum of the modules' own import times
(`python -X importtime`, with importlib.import_module, which the pass registry uses,
routed through the import statement so that its imports are timed too), median of
--rounds runs. The header records the load average before and after.
Never part of the tests.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import ORT_PROCESS  # noqa: E402  (the onnxruntime process bench/run.py compares with)

# A compile as `snnc` runs it, with every import logged by -X importtime (importlib.import_module
# bypasses the log otherwise).
TRACED_COMPILE = """
import importlib, sys
_import_module = importlib.import_module
def import_module(name, package=None):
    if name.startswith("."):
        return _import_module(name, package)
    __import__(name)
    return sys.modules[name]
importlib.import_module = import_module
sys.argv = ["snnc", "compile", sys.argv[1], "-o", sys.argv[2]]
from snnc.compiler.cli import console_main
console_main()
"""
GROUPS = {"xdsl": "xdsl", "snnc": "snnc", "numpy": "numpy", "onnx": "onnx + protobuf", "google": "onnx + protobuf"}


def _run_round(commands: dict[str, list[str]], env: dict, samples: dict) -> None:
    """Run each command once; append its (wall s, CPU s of the child) to samples[name]."""
    for name, argv in commands.items():
        before, start = os.times(), time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        wall, after = time.perf_counter() - start, os.times()
        if proc.returncode:
            raise RuntimeError(f"{name} failed: {proc.stderr.decode(errors='replace')[-300:]}")
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        samples[name].append((wall, cpu))


def import_breakdown(model: Path, out: Path, rounds: int, env: dict) -> dict[str, float]:
    """Median over `rounds` compile processes of the summed own import time per package (ms)."""
    totals: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        err = subprocess.run([sys.executable, "-X", "importtime", "-c", TRACED_COMPILE, str(model), str(out)],
                             capture_output=True, text=True, env=env, check=True).stderr
        sums: dict[str, float] = defaultdict(float)
        for line in err.splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
            if match:
                top = match[2].split(".")[0]
                sums[GROUPS.get(top, "other (stdlib, site, ...)")] += int(match[1]) / 1000
        sums["all imports"] = sum(sums.values())
        for key, value in sums.items():
            totals[key].append(value)
    return {key: statistics.median(values) for key, values in totals.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg16-cifar10,mlp", help="comma-separated zoo models")
    parser.add_argument("--rounds", type=int, default=15, help="rounds (each runs every command once)")
    parser.add_argument("--imports", action="store_true", help="also the import time of a compile, by package")
    args = parser.parse_args(argv)

    from snnc.compiler.fileio import atomic_write_bytes, save_npz
    from snnc.compiler.zoo import ZOO, build

    names = args.models.split(",")
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        parser.error(f"unknown zoo models: {', '.join(unknown)}")
    # the first run leaves .pyc files behind, as an installed package has them
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="snnc-startup-") as tmp:
        commands: dict[str, list[str]] = {}
        for name in names:
            model, inputs = build(name)
            onnx_path, npz_path = Path(tmp) / f"{name}.onnx", Path(tmp) / f"{name}.npz"
            atomic_write_bytes(onnx_path, model.SerializeToString())
            save_npz(npz_path, inputs)
            commands[f"snnc compile {name}"] = [sys.executable, "-m", "snnc.compiler.cli", "compile", str(onnx_path),
                                                "-o", str(Path(tmp) / f"{name}.bin")]
            commands[f"onnxruntime {name}"] = [sys.executable, "-c", ORT_PROCESS, str(onnx_path), str(npz_path)]
        samples: dict[str, list[tuple[float, float]]] = defaultdict(list)
        _run_round(commands, env, defaultdict(list))  # warm-up: page cache, .pyc files
        for _ in range(args.rounds):
            _run_round(commands, env, samples)
        breakdowns = {name: import_breakdown(Path(tmp) / f"{name}.onnx", Path(tmp) / f"{name}.bin", args.rounds, env)
                      for name in names} if args.imports else {}
    load_after = os.getloadavg()[0]

    print(f"{args.rounds} alternating rounds; load average {load_before:.1f} before, {load_after:.1f} after\n")
    print("| process | wall median s | wall min s | CPU median s | CPU min s |")
    print("|---|---|---|---|---|")
    medians = {}
    for name, values in samples.items():
        walls, cpus = [w for w, _ in values], [c for _, c in values]
        medians[name] = (statistics.median(walls), statistics.median(cpus))
        print(f"| {name} | {medians[name][0]:.3f} | {min(walls):.3f} | {medians[name][1]:.3f} | {min(cpus):.3f} |")
    print("\n| model | compile / onnxruntime, wall | CPU |")
    print("|---|---|---|")
    for name in names:
        snnc, ort = medians[f"snnc compile {name}"], medians[f"onnxruntime {name}"]
        print(f"| {name} | {snnc[0] / ort[0]:.2f}x | {snnc[1] / ort[1]:.2f}x |")
    if breakdowns:
        groups = sorted({g for b in breakdowns.values() for g in b}, key=lambda g: -breakdowns[names[0]].get(g, 0))
        print("\nImport time of a compile process, ms (sum of the modules' own times, median):\n")
        print("| package | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for group in groups:
            print(f"| {group} | " + " | ".join(f"{breakdowns[n].get(group, 0):.1f}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
