"""Fit each LoAS model's filter spread to LoAS's GoSPA-SNN logs; check it on its SparTen-SNN logs.

    python bench/fit_filter_spread.py [alexnet-cifar10 vgg16-cifar10 resnet19-cifar10]

Why. LoAS's per-layer logs fix how many spikes each layer gets (LOAS_SPARTEN_SPIKES), how
many pairs match (LOAS_MATCHED_WORK) and so each layer's weight density. They do not say how
the non-zero weights spread over the output channels. Pruned filters are far from equally
dense, and that spread is what a PE-per-output-channel design (SparTen-SNN, GoSPA-SNN) waits
on: a tile lasts as long as its busiest channel. The zoo models it with one number per
network, `filter_spread`: the sigma of a log-normal per-filter weight scale that one magnitude
threshold per layer prunes (snnc.compiler.zoo.models.filter_kept_counts).

What. For each model, bisection on sigma until LoAS's own GoSPA-SNN formula
(bench/loas_formula.py, src/snn-gospa-result.py) on the zoo's matrices gives the GoSPA-SNN
cycles LoAS published (bench/loas_table2.py PUBLISHED). The fitted sigma goes into
LOAS_FILTER_SPREAD by hand. SparTen-SNN (the Table II criterion) is not fitted: the script
prints its cycles, total and per layer, beside LoAS's logs as the check. Gamma-SNN and LoAS
(a PE per output position) barely move with sigma, which the script also prints.
About 10 s per evaluation, 2-3 minutes per model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loas_formula
from loas_table2 import LOAS_SPARTEN_LAYER_CYCLES, MODELS, PUBLISHED

from snnc.compiler.zoo.models import bisect_steps

STEP = 0.01  # the resolution of the fit
HIGH = 1.28  # sigma searched in [0, HIGH]


def fit(name: str, design: str = "GoSPA-SNN") -> tuple[float, list[dict[str, int]]]:
    """The sigma (a multiple of STEP) whose `design` total is nearest LoAS's, and its layers."""
    target = PUBLISHED[name][design][0]
    seen: dict[int, list[dict[str, int]]] = {}

    def total(steps: int) -> int:
        """`design`'s cycles at sigma = steps x STEP (each sigma built once)."""
        if steps not in seen:
            seen[steps] = loas_formula.model_layers(name, filter_spread=steps * STEP)
            print(f"  {name} filter_spread {steps * STEP:.2f}: {design} {total(steps):,} (LoAS {target:,})",
                  file=sys.stderr, flush=True)
        return sum(layer[design] for layer in seen[steps])

    low, high = bisect_steps(lambda steps: total(steps) < target, 0, round(HIGH / STEP))  # grows with sigma
    best = min((low, high), key=lambda k: abs(total(k) - target))
    return best * STEP, seen[best]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=list(MODELS))
    args = ap.parse_args(argv)
    summary = [("| model | filter spread | GoSPA-SNN: formula / LoAS (fitted) | SparTen-SNN: formula / LoAS (check) |"
                " Gamma-SNN: formula / LoAS | SparTen-SNN per layer: formula / LoAS, min-max (median) |"),
               "|---|---:|---:|---:|---:|---|"]
    for name in args.models:
        sigma, layers = fit(name)
        pub = PUBLISHED[name]
        total = loas_formula.layer_totals(layers)
        ratios = sorted(layer["SparTen-SNN"] / logged
                        for layer, logged in zip(layers, LOAS_SPARTEN_LAYER_CYCLES[name], strict=True))
        summary.append(
            f"| {name} | {sigma:.2f} | {total['GoSPA-SNN'] / pub['GoSPA-SNN'][0]:.3f} | "
            f"{total['SparTen-SNN'] / pub['SparTen-SNN'][0]:.3f} | {total['Gamma-SNN'] / pub['Gamma-SNN'][0]:.3f} | "
            f"{ratios[0]:.2f}-{ratios[-1]:.2f} ({ratios[len(ratios) // 2]:.2f}) |")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
