"""CPU time of `snnc explore`'s search, this tree against other git revisions, in alternating rounds.

    python bench/explore_ab.py [--model red-lif-gen4] [--rounds 5] [--runs 3] [--against main ...]

bench/explore.py's search-time ratio is wall clock against one compile, each measured once, on
a machine other work shares: it moves by a third from one run to the next. This measures the
search's work alone, as CPU time in one process (no forked workers): building the loop-level
base, costing every segment (explore.segment_table) and the dynamic programme's input, the
way bench/explore.py's workloads set it up (red-lif-gen4 at input scale 0.25 and 512 KB SRAM,
sew-resnet18-dvs at 128 KB), beside one in-process compile of the model with the default
pipeline. Each round runs one fresh process per revision, in turn (this tree first): a warm-up
search and compile, then `--runs` timed ones of each; the process reports its fastest CPU times.
Revisions are checked out as git worktrees and imported through a `snnc` package of symlinks
(bench/compile_ab.py's alternating_rounds). Printed per revision: the minimum and the median
over the rounds of the search and of the compile, the search in compiles, and the search's
ratio to the first --against revision. Never part of the tests.
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
import snnc.compiler.explore as ex
from snnc.compiler.explore_cost import LoopBase
from snnc.compiler.pipeline import CompileOptions, compile_model
from snnc.runtime.collect import IR_FULL_EVERY, fewer_collections

model, hw, runs, expected = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
assert ex.__file__.startswith(expected), f"imported {ex.__file__}, not {expected}"


def search():
    with fewer_collections(full_every=IR_FULL_EVERY):  # as explore() runs it
        base = LoopBase.build(model, hw)
        batches = ex.batch_sizes(base.timesteps)
        spans = ex.fusable_spans(base.names, max(1, min(ex.MAX_GROUP, len(base.names))),
                                 base.hw.compute.timestep_lanes, base.synaptic)
        ex.segment_table(base, batches, spans)


def compile_once():
    compile_model(model, CompileOptions(hw=hw))


for what in (search, compile_once):
    what()  # warm-up
    times = []
    for _ in range(runs):
        start = time.process_time()
        what()
        times.append(time.process_time() - start)
    print(min(times))
"""
# (input scale, SRAM bytes): bench/explore.py's workloads
WORKLOADS = {"red-lif-gen4": (0.25, 524288), "sew-resnet18-dvs": (1.0, 131072)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="red-lif-gen4", choices=tuple(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3, help="timed searches and compiles per process")
    parser.add_argument("--against", nargs="+", default=["main"], help="git revisions (default main)")
    args = parser.parse_args()
    from snnc.backend.hwconfig import HwConfig
    from snnc.compiler.fileio import atomic_write_bytes
    from snnc.compiler.zoo import build

    scale, sram = WORKLOADS[args.model]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="snnc-explore-ab-") as tmp_name:
        tmp = Path(tmp_name)
        model_path, hw_path = tmp / f"{args.model}.onnx", tmp / "hw.toml"
        model = build(args.model, input_scale=scale)[0] if scale != 1.0 else build(args.model)[0]
        atomic_write_bytes(model_path, model.SerializeToString())
        hw_path.write_text(HwConfig.from_toml(f"[sram]\nsize_bytes = {sram}\n").to_toml())
        outputs = alternating_rounds(args.against, tmp, args.rounds, PROBE,
                                     [str(model_path), str(hw_path), str(args.runs)])
        samples = {name: [[float(x) for x in out.split()] for out in runs] for name, runs in outputs.items()}
    load_after = os.getloadavg()[0]
    base = args.against[0]
    base_min = min(s for s, _ in samples[base])
    base_median = statistics.median(s for s, _ in samples[base])
    print(f"# explore's search on {args.model} (input scale {scale}, SRAM {sram // 1024} KB), {args.rounds} "
          f"alternating rounds (CPU time, one process, fastest of {args.runs}); load {load_before:.1f} before, "
          f"{load_after:.1f} after\n")
    print(f"| code | search min ms | search median ms | compile min ms | search / compile (mins) | "
          f"search min / {base} | search median / {base} |")
    print("|---|---|---|---|---|---|---|")
    for name, values in samples.items():
        search = [s for s, _ in values]
        compile_min = min(c for _, c in values)
        low, mid = min(search), statistics.median(search)
        print(f"| {name} | {low * 1000:.0f} | {mid * 1000:.0f} | {compile_min * 1000:.0f} | {low / compile_min:.2f} | "
              f"{low / base_min:.2f}x | {mid / base_median:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
