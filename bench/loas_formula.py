"""LoAS's own simulator formulas on the zoo's matrices: what RuokaiYin/LoAS would print for our workloads.

    python bench/loas_formula.py [--weight-profile layerwise|uniform|fan-in|fan-out]
                                 [--spike-profile layerwise|uniform] [--filter-spread SIGMA]
                                 [--seed N] [--per-layer]
                                 [alexnet-cifar10 vgg16-cifar10 resnet19-cifar10]

LoAS's published cycle counts come from src/snn-{sparten,gospa,gamma,loas-mntk}-result.py
(RuokaiYin/LoAS at cd635a8): each layer is a spike matrix x [T, M, K] (im2col) times a
weight matrix w [K, N], cut into tiles that all 16 PEs work on; a tile lasts its slowest
PE, the layer the sum over tiles, memory is not modelled:
  SparTen-SNN  tile (1 timestep, 32 rows, 128 of K) x 16 columns, a PE per column n
  GoSPA-SNN    tile (1 timestep, 64 rows, 256 of K) x 16 columns, a PE per column n
  Gamma-SNN    tile (1 timestep, 16 rows, 64 of K) x 64 columns, a PE per row m
  LoAS         packed x (a neuron is non-zero when it fires at any t; 'strong': at least
               twice), tile (16 rows, 128 of K) x 32 columns, a PE per row m
Layers: every snn.conv2d after the first, except the zoo's identity shortcuts (1x1
identity weights: the residual add, not a weight layer). Dense layers are left out
(bench/loas_table2.py counts them). The spikes are the snn interpreter's (the same as
the simulator's). The tile arithmetic is runtime/baselines.py's (which times each SYN
visit that way); here it runs on whole layers, without our tiling, memory or TPPE model,
so comparing its speedups with bench/loas_table2.py's shows which gaps come from the
matrices and which from our machine. About 20 s per model. `--per-layer` also prints, layer
by layer, the SparTen-SNN cycles, im2col spikes and lane SOPs against LoAS's SparTen-SNN logs.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

MODELS = ("alexnet-cifar10", "vgg16-cifar10", "resnet19-cifar10")
DESIGNS = ("SparTen-SNN", "GoSPA-SNN", "Gamma-SNN", "LoAS", "LoAS strong")
LOAS_K_CHUNK, LOAS_COLUMNS = 128, 32  # LoAS tile_dict: 'x': (1, 16, 128), 'w': (128, 32)


def im2col(x: np.ndarray, w: np.ndarray, strides, pads, dilations) -> tuple[np.ndarray, np.ndarray]:
    """x [T, 1, C, H, W] spikes, w [N, C, kh, kw] -> bool [T, M, K], bool [K, N] (K = c, ky, kx)."""
    t, _, c, h, wd = x.shape
    n, _, kh, kw = w.shape
    xp = np.zeros((t, c, h + pads[0] + pads[2], wd + pads[1] + pads[3]), dtype=bool)
    xp[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + wd] = x[:, 0] != 0
    ho = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (wd + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    cols = np.zeros((t, ho, wo, c, kh, kw), dtype=bool)
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dilations[0], kx * dilations[1]
            cols[..., ky, kx] = xp[:, :, y0:y0 + strides[0] * ho:strides[0],
                                   x0:x0 + strides[1] * wo:strides[1]].transpose(0, 2, 3, 1)
    return cols.reshape(t, ho * wo, c * kh * kw), w.reshape(n, -1).T != 0


def layer_cycles(x: np.ndarray, w: np.ndarray, pes: int = 16) -> dict[str, int]:
    """LoAS's simulator cycles of one layer, x bool [T, M, K], w bool [K, N], per design.

    The tile-synchronous work is the runtime's own (runtime/baselines.py, which times
    each SYN visit this way); here it runs on whole layers with LoAS's tile shapes."""
    from snnc.backend.isa import Dataflow
    from snnc.runtime.baselines import TILES, pe_per_channel, pe_per_position

    nzw = w.T
    fired = x.sum(axis=0, keepdims=True)
    sparten, gospa, gamma = TILES[Dataflow.IP_SEQ], TILES[Dataflow.OP], TILES[Dataflow.GUST]
    return {
        "SparTen-SNN": pe_per_channel(x, nzw, sparten.positions, sparten.k_chunk, pes).cycles,
        "GoSPA-SNN": pe_per_channel(x, nzw, gospa.positions, gospa.k_chunk, pes).cycles,
        "Gamma-SNN": pe_per_position(x, nzw, gamma.k_chunk, gamma.channels, pes).cycles,
        # LoAS: a PE per row of the packed matrix, tile 128 of K x 32 columns (snn-loas-mntk-result.py)
        "LoAS": pe_per_position(fired > 0, nzw, LOAS_K_CHUNK, LOAS_COLUMNS, pes).cycles,
        "LoAS strong": pe_per_position(fired > 1, nzw, LOAS_K_CHUNK, LOAS_COLUMNS, pes).cycles,
    }


def model_layers(name: str, **build_options) -> list[dict[str, int]]:
    """LoAS's simulator cycles of each of the model's layers (as LoAS's logs list them:
    the conv layers after the first, identity shortcuts left out), per design (DESIGNS),
    with the layer's im2col "spikes" (non-zeros over all steps) and "entries" (its size,
    padding included), "lane SOPs" and output "channels". build_options go to `snnc.compiler.zoo.build` (weight_profile, filter_spread, ...)."""
    from xdsl.dialects import func

    from snnc.compiler.pipeline import import_to_snn
    from snnc.compiler.zoo import build
    from snnc.dialects.snn import Conv2dOp, int_array_value, main_function, onnx_io_names, tensor_value
    from snnc.dialects.snn_interpreter import _run_op

    model, inputs = build(name, **build_options)
    main = main_function(import_to_snn(model))
    block = main.body.block
    names, _ = onnx_io_names(main)
    values = {arg: np.asarray(inputs[n], np.float32) for arg, n in zip(block.args, names)}
    layers = []
    convs = 0
    for op in block.ops:
        if isinstance(op, func.ReturnOp):
            break
        if isinstance(op, Conv2dOp):
            convs += 1
            weight = tensor_value(op.weight)
            identity = weight.shape[2:] == (1, 1) and np.array_equal(
                weight.reshape(weight.shape[:2]), np.eye(*weight.shape[:2]))
            if convs > 1 and not identity:
                x, w = im2col(values[op.input], weight, int_array_value(op.strides), int_array_value(op.pads),
                              int_array_value(op.dilations))
                sops = int(x.sum(axis=(0, 1), dtype=np.int64) @ w.sum(axis=1, dtype=np.int64))
                layers.append({**layer_cycles(x, w), "spikes": int(x.sum()), "lane SOPs": sops,
                               "channels": w.shape[1], "entries": x.size})
        _run_op(op, values)
    return layers


def model_totals(name: str, weight_profile: str | None = None, **build_options) -> dict[str, int]:
    """The sums of `model_layers` per design."""
    return layer_totals(model_layers(name, weight_profile=weight_profile, **build_options))


def layer_totals(layers: list[dict[str, int]]) -> dict[str, int]:
    """Cycles per design (DESIGNS), summed over `model_layers`' layers."""
    return {design: sum(layer[design] for layer in layers) for design in DESIGNS}


def per_layer_table(name: str, layers: list[dict[str, int]]) -> str:
    """Each layer against LoAS's SparTen-SNN log of it: cycles, im2col spikes, lane SOPs."""
    from loas_table2 import LOAS_SPARTEN_LAYER_CYCLES
    from snnc.compiler.zoo.models import LOAS_SPARTEN_SPIKES, SPARTEN_COLUMNS

    logged = zip(LOAS_SPARTEN_SPIKES[name].items(), LOAS_SPARTEN_LAYER_CYCLES[name], strict=True)
    rows = [(f"| {name} layer | SparTen-SNN cycles: formula / LoAS | im2col spikes: ours / LoAS | "
             "lane SOPs: ours / LoAS | LoAS's im2col density |"), "|---|---:|---:|---:|---:|"]
    for layer, ((label, (x_accesses, lane_sops)), cycles) in zip(layers, logged, strict=True):
        spikes = x_accesses / -(-layer["channels"] // SPARTEN_COLUMNS)
        rows.append(f"| {label} | {layer['SparTen-SNN'] / cycles:.2f} | {layer['spikes'] / spikes:.3f} | "
                    f"{layer['lane SOPs'] / lane_sops:.3f} | {spikes / layer['entries']:.3f} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=list(MODELS))
    ap.add_argument("--per-layer", action="store_true",
                    help="also each layer's SparTen-SNN cycles, spikes and SOPs against LoAS's logs")
    from loas_table2 import add_zoo_options, zoo_options

    add_zoo_options(ap)
    args = ap.parse_args(argv)
    tables = []
    print("| model | SparTen-SNN | GoSPA-SNN | Gamma-SNN | LoAS | LoAS strong | speedup over SparTen / GoSPA / Gamma |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name in args.models:
        layers = model_layers(name, **zoo_options(args))
        t = layer_totals(layers)
        if args.per_layer:
            tables.append(per_layer_table(name, layers))
        speedups = " / ".join(f"{t[d] / t['LoAS']:.2f}" for d in ("SparTen-SNN", "GoSPA-SNN", "Gamma-SNN"))
        print(f"| {name} | {t['SparTen-SNN']:,} | {t['GoSPA-SNN']:,} | {t['Gamma-SNN']:,} | {t['LoAS']:,} | "
              f"{t['LoAS strong']:,} | {speedups} |", flush=True)
    for table in tables:
        print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
