"""STEMS schedule search (issue 17 §1): `snnc explore` against STEMS's figures.

    python bench/explore.py                          # sew-resnet18-dvs (128 KB) + red-lif-gen4 (512 KB, scale 0.25)
    python bench/explore.py --red-scale 1.0          # red-lif-gen4 at its full 360x640 input (slow)
    python bench/explore.py --only sew-resnet18-dvs --objective dram

Prints, measured in this run, for each workload (zoo model, its input; the LoAS preset with
the SRAM size of STEMS's experiment):
  1. DRAM bytes and energy of ST-LBL (time-batch{timesteps=1} on every layer, no fusion),
     the default pipeline and the chosen schedule, all compiled and simulated; the chosen
     schedule's reduction against ST-LBL beside STEMS's (Fig. 9, Fig. 12): sew-resnet18-dvs
     >= 12x DRAM and >= 5x energy, red-lif-gen4 >= 7.3x and >= 1.9x.
  2. The search time (segment costing + dynamic programming, without the simulations) in
     units of one in-process compile of the model with the default pipeline (measured in
     the same run). Target <= 5.
  3. The cost model's error against the simulator on every simulated schedule: default and
     ST-LBL are its calibration points, the chosen schedule is held out. Target: DRAM within
     10 %, cycles within 20 %.
Verdicts are PASS or MISS; the figures are what this machine measured.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from snnc.backend.hwconfig import HwConfig
from snnc.compiler.explore import explore
from snnc.compiler.explore_report import model_error
from snnc.compiler.zoo import build

# (zoo model, SRAM bytes, STEMS's DRAM reduction, STEMS's energy reduction)
WORKLOADS = {"sew-resnet18-dvs": (131072, 12.0, 5.0), "red-lif-gen4": (524288, 7.3, 1.9)}
SEARCH_TARGET = 5.0  # compiles
DRAM_ERROR_TARGET, CYCLES_ERROR_TARGET = 0.10, 0.20


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def run_workload(name: str, scale: float, objective: str, tmp: Path) -> list[str]:
    sram, stems_dram, stems_energy = WORKLOADS[name]
    model, inputs = build(name, input_scale=scale) if scale != 1.0 else build(name)
    path = tmp / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    hw = tmp / f"{name}-hw.toml"
    hw.write_text(HwConfig.from_toml(f"[sram]\nsize_bytes = {sram}\n").to_toml())
    start = time.perf_counter()
    result = explore(path, str(hw), inputs, objective)
    wall = time.perf_counter() - start
    sims = result.simulated
    chosen, st_lbl, default = sims.get("chosen"), sims.get("st_lbl"), sims.get("default")
    label = f"{name} (SRAM {sram // 1024} KB, input scale {scale}, objective {objective})"
    lines = [f"\n## {label}\n", f"chosen: `{result.describe(result.best.groups)}`  ", f"pipeline: `{result.pipeline(result.best)}`\n",
             "| schedule | DRAM bytes | energy pJ | cycles |", "|---|---|---|---|"]
    for key, sim in (("ST-LBL", st_lbl), ("default", default), ("chosen", chosen)):
        if sim is None:
            lines.append(f"| {key} | does not fit | | |")
        else:
            f = sim.figures
            lines.append(f"| {key} | {f.dram_bytes:,} | {f.energy_pj:,.0f} | {f.cycles:,} |")
    lines += ["", "| measure | snnc | STEMS / target | verdict |", "|---|---|---|---|"]
    if chosen and st_lbl:
        dram_x = st_lbl.figures.dram_bytes / chosen.figures.dram_bytes
        energy_x = st_lbl.figures.energy_pj / chosen.figures.energy_pj
        lines.append(f"| DRAM traffic, ST-LBL / chosen | {dram_x:.2f}x | {stems_dram}x | {_verdict(dram_x >= stems_dram)} |")
        lines.append(f"| energy, ST-LBL / chosen | {energy_x:.2f}x | {stems_energy}x | "
                     f"{_verdict(energy_x >= stems_energy)} |")
    if chosen and default:
        lines.append(f"| DRAM traffic, default / chosen | {default.figures.dram_bytes / chosen.figures.dram_bytes:.2f}x "
                     "| (snnc's default is TB-LBL) | |")
        lines.append(f"| energy, default / chosen | {default.figures.energy_pj / chosen.figures.energy_pj:.2f}x | | |")
    if default:
        compiles = result.search_s / default.compile_s
        lines.append(f"| search time ({result.runs} runs, {result.search_s:.1f} s) / one compile ({default.compile_s:.1f} s) "
                     f"| {compiles:.2f} | <= {SEARCH_TARGET} | {_verdict(compiles <= SEARCH_TARGET)} |")
        lines.append(f"| explore wall time, simulations included | {wall:.1f} s = {wall / default.compile_s:.1f} compiles "
                     "| | |")
    for key, sim in sims.items():
        if sim.predicted is None:
            continue
        role = "held out" if key == "chosen" else "calibration point"
        dram, cycles, energy = (model_error(sim, k) for k in ("dram_bytes", "cycles", "energy_pj"))
        lines.append(f"| cost model error, {key} ({role}): DRAM | {dram:+.1%} | within 10 % | "
                     f"{_verdict(abs(dram) <= DRAM_ERROR_TARGET)} |")
        lines.append(f"| cost model error, {key} ({role}): cycles | {cycles:+.1%} | within 20 % | "
                     f"{_verdict(abs(cycles) <= CYCLES_ERROR_TARGET)} |")
        lines.append(f"| cost model error, {key} ({role}): energy | {energy:+.1%} | | |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--red-scale", type=float, default=0.25, help="red-lif-gen4 --input-scale (default 0.25)")
    ap.add_argument("--sew-scale", type=float, default=1.0, help="sew-resnet18-dvs --input-scale (default 1.0)")
    ap.add_argument("--objective", default="energy", choices=("dram", "energy", "cycles", "edp"))
    ap.add_argument("--only", choices=tuple(WORKLOADS), help="one workload")
    args = ap.parse_args(argv)
    print("# snnc explore against STEMS (issue 17 §1)")
    with tempfile.TemporaryDirectory(prefix="snnc-bench-explore-") as tmp:
        for name in WORKLOADS:
            if args.only and name != args.only:
                continue
            scale = args.red_scale if name == "red-lif-gen4" else args.sew_scale
            print(f"{name}: exploring ...", file=sys.stderr, flush=True)
            print("\n".join(run_workload(name, scale, args.objective, Path(tmp))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
