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
from loas_table2 import PUBLISHED

MODELS = ("alexnet-cifar10", "vgg16-cifar10", "resnet19-cifar10")
STEP = 0.01  # the resolution of the fit
HIGH = 1.28  # sigma searched in [0, HIGH]

# tot_cycs of every layer of LoAS's SparTen-SNN runs (RuokaiYin/LoAS
# simulation_results/txt_results/snn_sparten_<model>_result.txt), Layer_1, Layer_2, ...
LOAS_SPARTEN_LAYER_CYCLES = {
    "alexnet-cifar10": (80_365, 65_682, 144_933, 74_609),
    "vgg16-cifar10": (717_307, 230_575, 452_296, 145_717, 213_917, 197_028, 53_565, 71_013, 302_761,
                      10_345, 6_976, 14_140),
    "resnet19-cifar10": (368_512, 398_068, 56_319, 525_999, 365_250, 684_371, 478_244, 194_715, 422_320,
                         80_827, 817_343, 1_634_758, 1_029_163, 5_194_899, 317_161, 118_596, 78_471,
                         164_143, 338_732),
}


def fit(name: str, design: str = "GoSPA-SNN") -> tuple[float, list[dict[str, int]]]:
    """The sigma (a multiple of STEP) whose `design` total is nearest LoAS's, and its layers."""
    target = PUBLISHED[name][design][0]
    seen: dict[int, list[dict[str, int]]] = {}

    def layers(steps: int) -> list[dict[str, int]]:
        if steps not in seen:
            seen[steps] = loas_formula.model_layers(name, filter_spread=steps * STEP)
            total = sum(layer[design] for layer in seen[steps])
            print(f"  {name} filter_spread {steps * STEP:.2f}: {design} {total:,} (LoAS {target:,})",
                  file=sys.stderr, flush=True)
        return seen[steps]

    low, high = 0, round(HIGH / STEP)  # the total grows with sigma
    while high - low > 1:
        middle = (low + high) // 2
        if sum(layer[design] for layer in layers(middle)) < target:
            low = middle
        else:
            high = middle
    best = min((low, high), key=lambda k: abs(sum(layer[design] for layer in layers(k)) - target))
    return best * STEP, layers(best)


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
        total = {design: sum(layer[design] for layer in layers) for design in layers[0]}
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
