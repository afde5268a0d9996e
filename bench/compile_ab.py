"""In-process compile time of this tree against other git revisions, in alternating rounds.

    python bench/compile_ab.py [--model vgg16-cifar10] [--rounds 7] [--against 5e2ce31 ...]

Issue 14's target is relative: the in-process compile of vgg16-cifar10 no slower than 1.2x
that of 5e2ce31. Each revision is checked out as a git worktree (under a temporary
directory) and imported through a `snnc` package of symlinks to its top-level folders, so
that the same Python and dependencies compile the same ONNX file. Each round runs one fresh
process per revision, in turn (this tree first): a warm-up compile, then 4 timed ones; the
process reports its fastest CPU time. Printed per revision: the minimum and the median over
the rounds, and their ratios to the first --against revision. Alternating rounds make a
change in the machine's load weigh on every revision alike. Never part of the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("compiler", "dialects", "passes", "backend", "runtime")
PROBE = r"""
import sys, time
import snnc.compiler.pipeline as pipeline
from snnc.compiler.pipeline import CompileOptions, compile_model

assert pipeline.__file__.startswith(sys.argv[2]), f"imported {pipeline.__file__}, not {sys.argv[2]}"
compile_model(sys.argv[1], CompileOptions())  # warm-up
times = []
for _ in range(4):
    start = time.process_time()
    compile_model(sys.argv[1], CompileOptions())
    times.append(time.process_time() - start)
print(min(times))
"""


def package_of(revision: str, tmp: Path) -> Path:
    """The PYTHONPATH entry for a revision: a worktree and a `snnc` of symlinks into it."""
    tree = tmp / f"tree-{revision}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), revision],
                   check=True, capture_output=True)
    shim = tmp / f"shim-{revision}" / "snnc"
    shim.mkdir(parents=True)
    for folder in FOLDERS:
        if (tree / folder).is_dir():
            (shim / folder).symlink_to(tree / folder)
    return shim.parent


def alternating_rounds(revisions: list[str], tmp: Path, rounds: int, probe: str, argv: list[str]) -> dict[str, list[str]]:
    """The stdout of `python -c probe *argv EXPECTED` per round, for this tree and each revision
    (imported through package_of), the variants taking turns in each round so that the
    machine's load weighs on all alike; the probe checks that it imported EXPECTED's snnc."""
    variants = {"this tree": ("", str(ROOT))}
    try:
        for revision in revisions:
            path = str(package_of(revision, tmp))
            variants[revision] = (path, path)
        outputs: dict[str, list[str]] = {name: [] for name in variants}
        for i in range(rounds):
            print(f"round {i + 1}/{rounds}", file=sys.stderr)
            for name, (python_path, expected) in variants.items():
                env = dict(os.environ, PYTHONPATH=python_path)
                out = subprocess.run([sys.executable, "-c", probe, *argv, expected], env=env,
                                     capture_output=True, text=True, check=True)
                outputs[name].append(out.stdout)
        return outputs
    finally:
        for revision in revisions:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / f"tree-{revision}")],
                           capture_output=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16-cifar10", help="zoo model (default vgg16-cifar10)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--against", nargs="+", default=["5e2ce31"], help="git revisions (default 5e2ce31)")
    args = parser.parse_args()
    from snnc.compiler.fileio import atomic_write_bytes
    from snnc.compiler.zoo import build

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="snnc-compile-ab-") as tmp_name:
        tmp = Path(tmp_name)
        model_path = tmp / f"{args.model}.onnx"
        atomic_write_bytes(model_path, build(args.model)[0].SerializeToString())
        outputs = alternating_rounds(args.against, tmp, args.rounds, PROBE, [str(model_path)])
        samples = {name: [float(out) for out in runs] for name, runs in outputs.items()}
    load_after = os.getloadavg()[0]
    base = args.against[0]
    base_min, base_median = min(samples[base]), statistics.median(samples[base])
    print(f"# In-process compile of {args.model}, {args.rounds} alternating rounds "
          f"(CPU time, fastest of 4 per process); load {load_before:.1f} before, {load_after:.1f} after\n")
    print(f"| code | min ms | median ms | min / {base} | median / {base} |")
    print("|---|---|---|---|---|")
    for name, values in samples.items():
        low, mid = min(values), statistics.median(values)
        print(f"| {name} | {low * 1000:.0f} | {mid * 1000:.0f} | {low / base_min:.2f}x | {mid / base_median:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
