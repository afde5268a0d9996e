"""Where a compile's time goes: each pipeline step's own work and the module's verification
after it (CompileResult.step_seconds, CPU seconds), median over runs.

    python bench/compile_steps.py [--model vgg16-cifar10] [--runs 9] [--passes PIPELINE]

One warm-up compile, then --runs timed ones of the zoo model (default pipeline unless
--passes). Prints a markdown table in ms: step, work, verification, and the totals. CPU
time is less sensitive to the machine's load than wall time, and the header records the
load average. Never part of the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16-cifar10", help="zoo model (default vgg16-cifar10)")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--passes", default=None, help="a --passes pipeline (default: the default pipeline)")
    args = parser.parse_args()
    from snnc.compiler.fileio import atomic_write_bytes
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.compiler.zoo import build

    load_before = os.getloadavg()[0]
    options = CompileOptions(passes=args.passes)
    with tempfile.TemporaryDirectory(prefix="snnc-steps-") as tmp:
        path = Path(tmp) / f"{args.model}.onnx"
        atomic_write_bytes(path, build(args.model)[0].SerializeToString())
        compile_model(path, options)  # warm-up
        runs = [compile_model(path, options).step_seconds for _ in range(args.runs)]
    load_after = os.getloadavg()[0]
    print(f"# Compile steps of {args.model}: CPU ms, median of {args.runs} runs; "
          f"load {load_before:.1f} before, {load_after:.1f} after\n")
    print("| step | work | verification |")
    print("|---|---|---|")
    totals = [0.0, 0.0]
    for step in runs[0]:
        work = statistics.median(r[step][0] for r in runs) * 1000
        check = statistics.median(r[step][1] for r in runs) * 1000
        totals[0] += work
        totals[1] += check
        print(f"| {step} | {work:.1f} | {check:.1f} |")
    print(f"| **total** | **{totals[0]:.1f}** | **{totals[1]:.1f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
