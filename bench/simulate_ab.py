"""In-process simulation time of this tree against other git revisions, in alternating rounds.

    python bench/simulate_ab.py [--model vgg16-cifar10] [--rounds 5] [--runs 4] [--against main ...]

bench/run.py's simulation ratios are wall-clock medians beside onnxruntime; on a shared machine
they move by a third from one run to the next, more than most simulator changes. This measures
the simulator alone, as CPU time: the model is compiled once (by this tree) to a prog.bin and
its zoo input, then each round runs one fresh process per revision, in turn (this tree first),
that loads the program, simulates once to warm up (the per-program caches a second simulation
of the same image reuses, as bench/run.py's repeats do) and then `--runs` times cycle-level
and `--runs` times functional-only, and reports the fastest CPU time of each. Revisions are
checked out as git worktrees and imported through a `snnc` package of symlinks (as
bench/compile_ab.py does); a revision whose runtime cannot read this tree's prog.bin fails.
Printed per revision and mode: the minimum and the median over the rounds and their ratios to
the first --against revision. Never part of the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile_ab import alternating_rounds  # (bench/ is not a package)

PROBE = r"""
import sys, time
import numpy as np
import snnc.runtime.simulator as simulator
from snnc.backend.binformat import read_program
from snnc.runtime import simulate

assert simulator.__file__.startswith(sys.argv[4]), f"imported {simulator.__file__}, not {sys.argv[4]}"
image = read_program(open(sys.argv[1], "rb").read())
inputs = dict(np.load(sys.argv[2]))
simulate(image, inputs)  # warm-up
for functional in (False, True):
    times = []
    for _ in range(int(sys.argv[3])):
        start = time.process_time()
        simulate(image, inputs, functional=functional)
        times.append(time.process_time() - start)
    print(min(times))
"""
MODES = ("cycle-level", "functional")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16-cifar10", help="zoo model (default vgg16-cifar10)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=4, help="timed simulations per mode and process")
    parser.add_argument("--against", nargs="+", default=["main"], help="git revisions (default main)")
    args = parser.parse_args()
    from snnc.compiler.fileio import atomic_write_bytes, save_npz
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.compiler.zoo import build

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="snnc-simulate-ab-") as tmp_name:
        tmp = Path(tmp_name)
        model, inputs = build(args.model)
        model_path, input_path, program_path = (tmp / f"{args.model}.onnx", tmp / "inputs.npz", tmp / "prog.bin")
        atomic_write_bytes(model_path, model.SerializeToString())
        save_npz(input_path, inputs)
        atomic_write_bytes(program_path, compile_model(model_path, CompileOptions()).binary)
        outputs = alternating_rounds(args.against, tmp, args.rounds, PROBE,
                                     [str(program_path), str(input_path), str(args.runs)])
        samples = {(name, mode): [float(out.split()[i]) for out in runs]
                   for name, runs in outputs.items() for i, mode in enumerate(MODES)}
    load_after = os.getloadavg()[0]
    base = args.against[0]
    print(f"# In-process simulation of {args.model}, {args.rounds} alternating rounds (CPU time, fastest of "
          f"{args.runs} per process after a warm-up); load {load_before:.1f} before, {load_after:.1f} after\n")
    print(f"| code | mode | min ms | median ms | min / {base} | median / {base} |")
    print("|---|---|---|---|---|---|")
    for (name, mode), values in samples.items():
        reference = samples[(base, mode)]
        low, mid = min(values), statistics.median(values)
        print(f"| {name} | {mode} | {low * 1000:.1f} | {mid * 1000:.1f} | {low / min(reference):.2f}x "
              f"| {mid / statistics.median(reference):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
