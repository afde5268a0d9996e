"""The effect of each scheduling pass, in the simulator's report, on zoo models.

    python bench/pass_effects.py [--quick]

Prints one markdown table per pass (every figure comes from `snnc.runtime.simulate`
on the binary the pass produced; outputs are checked identical to the default
compile, except with mask-single-spike where the agreement is printed):
  1. loop-reorder: cycles and DRAM bytes of ftp / ip-seq / op / gust (vgg-small);
  2. spike-pack: per layer, the input silent ratio, the DRAM bytes of the layer's
     input spikes plain vs packed (weights not compressed, to isolate the spikes),
     the compression efficiency (LoAS §IV-A), and the totals with weights compressed;
  3. layer-fuse: intermediate-feature DRAM bytes with and without fusion under the
     128 KB `small-sram` preset;
  4. time-batch: neuron-state DRAM bytes (the state spills between time batches) as
     the batch grows from 1 to T (STEMS Fig. 7), `small-sram` and `loas`;
  5. row-band fusion: per ring buffer of the fused groups (vgg-small, `small-sram`), the
     rows it keeps against the whole map, and the program's peak live SRAM fused and
     unfused (`--loas` adds sew-resnet18-dvs, whose maps do not fit 128 KB whole);
  6. with `--loas`: the LoAS configurations on the paper models (alexnet-cifar10,
     vgg16-cifar10, resnet19-cifar10; `--imagenet` adds resnet18-imagenet): LoAS
     (compress-weights + ftp + spike-pack) and SparTen-SNN (ip-seq + spike-pack), DRAM
     bytes and cycles beside the same programs unpacked, and whether the outputs are
     bit-exact with onnxruntime's.
Also importable: `run(model, inputs, passes, hw)`, `state_dram_bytes(image)`,
`spike_input_dram_bytes(image)`, `intermediate_dram_bytes(image)` (used by the tests).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import numpy as np

from snnc.backend.binformat import decode_instructions, decode_layers
from snnc.backend.isa import Opcode
from snnc.compiler import zoo
from snnc.compiler.pipeline import CompileOptions, compile_model
from snnc.runtime import simulate
from snnc.runtime.simulator import attribute_layers

DMA_PLAIN = (Opcode.DMA_LOAD, Opcode.DMA_STORE)


def run(model, inputs, passes: str | None = None, hw: str | None = None):
    """Compile with `passes` on `hw`, simulate; returns (CompileResult, SimResult)."""
    result = compile_model(model, CompileOptions(passes=passes, hw=hw))
    return result, simulate(result.image, inputs)


def same_outputs(a, b) -> bool:
    return all(np.array_equal(a.outputs[k], b.outputs[k]) for k in a.outputs)


def state_dram_bytes(image) -> dict[str, int]:
    """Per layer: DRAM bytes of DMAs whose SRAM side is a LIF state tile of that layer
    (the neuron state stored after a time batch and loaded before the next)."""
    program = decode_instructions(image)
    owners = attribute_layers(program)
    layers = decode_layers(image)
    states: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for spec, f in program:
        if spec.opcode == Opcode.LIF:
            states[f["layer"]].add((f["state_addr"], f["state_addr"] + 8 * f["rows"] * layers[f["layer"]]["out_w"] * f["chs"]))
    out: dict[str, int] = defaultdict(int)
    for i, (spec, f) in enumerate(program):
        if spec.opcode in DMA_PLAIN and f["rows"]:
            lo = f["sram_addr"]
            hi = lo + (f["rows"] - 1) * f["sram_stride"] + f["row_bytes"]
            if any(a <= lo and hi <= b for a, b in states.get(owners[i], ())):
                out[image.layer_names[owners[i]]] += f["rows"] * f["row_bytes"]
    return dict(out)


def spike_input_dram_bytes(image) -> dict[str, int]:
    """Per layer: DRAM bytes its plain DMA loads read outside the constants image (its input
    feature maps; for a layer reading spikes, the spike planes)."""
    program = decode_instructions(image)
    owners = attribute_layers(program)
    out: dict[str, int] = defaultdict(int)
    for i, (spec, f) in enumerate(program):
        if spec.opcode == Opcode.DMA_LOAD and f["dram_addr"] >= len(image.constants):
            out[image.layer_names[owners[i]]] += f["rows"] * f["row_bytes"]
    return dict(out)


def intermediate_dram_bytes(image) -> int:
    """DRAM bytes of the plain DMAs that touch feature maps other than the graph's inputs
    and outputs and the constants (the intermediate features, partial sums, spilled state)."""
    from snnc.backend.binformat import io_dram_bytes

    io = [(d.dram_addr, d.dram_addr + io_dram_bytes(d)) for d in image.io]
    total = 0
    for spec, f in decode_instructions(image):
        if spec.opcode in DMA_PLAIN and f["rows"] and f["dram_addr"] >= len(image.constants):
            if not any(lo <= f["dram_addr"] < hi for lo, hi in io):
                total += f["rows"] * f["row_bytes"]
    return total


def layer_rows(report) -> dict[str, dict]:
    return {entry["name"]: entry for entry in report["layers"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="mlp only where possible (seconds)")
    ap.add_argument("--loas", action="store_true", help="also the LoAS configurations on the paper models (minutes)")
    ap.add_argument("--imagenet", action="store_true", help="with --loas: resnet18-imagenet too (long)")
    args = ap.parse_args(argv)
    name = "mlp" if args.quick else "vgg-small"

    # 1. loop-reorder -------------------------------------------------------------------
    model, inputs = zoo.build(name)
    _, base = run(model, inputs)
    print(f"## loop-reorder ({name}, preset loas)\n")
    print("| dataflow | cycles | DRAM bytes | SRAM bytes | instructions | outputs identical |")
    print("|---|---|---|---|---|---|")
    for dataflow in ("ftp", "ip-seq", "op", "gust"):
        _, sim = run(model, inputs, f"loop-reorder{{dataflow={dataflow}}}")
        t = sim.report["total"]
        print(f"| {dataflow} | {t['cycles']} | {t['dram_bytes']} | {t['sram_bytes']} | {t['instructions']} "
              f"| {same_outputs(base, sim)} |")

    # 2. spike-pack ---------------------------------------------------------------------
    sparsity = 0.9  # the zoo's per-step sparsity that gives LoAS-like silent ratios (60-80 %) on conv2
    model, inputs = zoo.build(name, spike_sparsity=sparsity)
    base_result, base = run(model, inputs)
    _, packed_in = run(model, inputs, "spike-pack{weights=false}")
    _, packed = run(model, inputs, "spike-pack")
    _, masked = run(model, inputs, "spike-pack{mask-single-spike=true}")
    print(f"\n## spike-pack ({name}, spike_sparsity={sparsity}, preset loas)\n")
    print("| layer | input silent ratio | input spike DRAM bytes plain | packed | change | compression efficiency "
          "| layer DRAM bytes (weights compressed too) | with mask-single-spike: silent ratio, DRAM bytes |")
    print("|---|---|---|---|---|---|---|---|")
    rb, rp, rw, rm = (layer_rows(s.report) for s in (base, packed_in, packed, masked))
    for layer, b in rb.items():
        p, w, m = rp[layer], rw[layer], rm[layer]
        if p.get("compression_efficiency") is None:
            continue
        plain = spike_input_dram_bytes(base_result.image).get(layer, 0)
        pk = plain + p["dram_read_bytes"] - b["dram_read_bytes"]  # only the spike loads differ
        print(f"| {layer} | {b['silent_ratio']:.1%} | {plain} | {pk} | {(pk - plain) / plain:+.1%} "
              f"| {p['compression_efficiency']:.2f} | {b['dram_bytes']} -> {w['dram_bytes']} "
              f"| {m['silent_ratio']:.1%}, {m['dram_bytes']} |" if b["silent_ratio"] is not None else
              f"| {layer} | - | {plain} | {pk} | {(pk - plain) / plain:+.1%} | {p['compression_efficiency']:.2f} "
              f"| {b['dram_bytes']} -> {w['dram_bytes']} | -, {m['dram_bytes']} |")
    print(f"\ntotal DRAM bytes: plain {base.report['total']['dram_bytes']}, spikes packed "
          f"{packed_in.report['total']['dram_bytes']}, spikes+weights packed {packed.report['total']['dram_bytes']}; "
          f"outputs identical: {same_outputs(base, packed_in) and same_outputs(base, packed)}; "
          f"mask-single-spike agreement: {_agreement(base, masked)}")

    # 3. layer-fuse ---------------------------------------------------------------------
    _layer_fuse_table(name)

    # 4. time-batch ---------------------------------------------------------------------
    model, inputs = zoo.build(name)
    T = next(iter(inputs.values())).shape[0]
    for hw in ("small-sram", "loas"):
        _, base = run(model, inputs, hw=hw)
        print(f"\n## time-batch ({name}, T={T}, preset {hw})\n")
        print("| timesteps per visit | neuron-state DRAM bytes | total DRAM bytes | cycles | outputs identical |")
        print("|---|---|---|---|---|")
        for k in range(1, T + 1):
            result, sim = run(model, inputs, f"time-batch{{timesteps={k}}}", hw)
            state = sum(state_dram_bytes(result.image).values())
            t = sim.report["total"]
            print(f"| {k} | {state} | {t['dram_bytes']} | {t['cycles']} | {same_outputs(base, sim)} |")
    # STEMS's four schedules per block (time batching x layer fusion)
    _, base = run(model, inputs, hw="small-sram")
    print(f"\n## STEMS schedules ({name}, preset small-sram)\n")
    print("| schedule | passes | neuron-state DRAM bytes | intermediate-feature DRAM bytes | total DRAM bytes | cycles "
          "| identical |")
    print("|---|---|---|---|---|---|---|")
    for label, passes in (("ST-LBL", "time-batch{timesteps=1}"), ("TB-LBL", f"time-batch{{timesteps={T}}}"),
                          ("ST-LF", "time-batch{timesteps=1},layer-fuse"),
                          ("TB-LF", f"time-batch{{timesteps={T}}},layer-fuse")):
        result, sim = run(model, inputs, passes, "small-sram")
        t = sim.report["total"]
        state = sum(state_dram_bytes(result.image).values())
        print(f"| {label} | `{passes}` | {state} | {intermediate_dram_bytes(result.image) - state} "
              f"| {t['dram_bytes']} | {t['cycles']} | {same_outputs(base, sim)} |")

    # 5. row-band fusion: SRAM ------------------------------------------------------------
    ring_table("vgg-small", "small-sram")
    if args.loas:
        ring_table("sew-resnet18-dvs", "small-sram")
    # 6. the LoAS configurations on the paper models ----------------------------------------
    if args.loas:
        models = ["alexnet-cifar10", "vgg16-cifar10", "resnet19-cifar10"] + (["resnet18-imagenet"] if args.imagenet else [])
        loas_configs(models)
    return 0


LOAS_CONFIGS = (  # (label, packed pipeline, the same unpacked)
    ("LoAS", "compress-weights,loop-reorder{dataflow=ftp},spike-pack,dma-prefetch",
     "compress-weights,loop-reorder{dataflow=ftp},dma-prefetch"),
    ("SparTen-SNN", "loop-reorder{dataflow=ip-seq},spike-pack", "loop-reorder{dataflow=ip-seq}"),
)


def loas_configs(models: list[str]) -> None:
    """DRAM bytes and cycles of the LoAS configurations, packed and unpacked, per model."""
    from snnc.compiler.reference import run_onnxruntime

    print("\n## LoAS configurations on the paper models (preset loas)\n")
    print("| model | configuration | DRAM bytes unpacked | packed | cycles unpacked | packed "
          "| bit-exact with onnxruntime (unpacked, packed) |")
    print("|---|---|---|---|---|---|---|")
    for name in models:
        model, inputs = zoo.build(name)
        reference = run_onnxruntime(model.SerializeToString(), inputs)
        for label, packed_passes, plain_passes in LOAS_CONFIGS:
            sims = [run(model, inputs, passes)[1] for passes in (plain_passes, packed_passes)]
            exact = [all(np.array_equal(sim.outputs[k], reference[k]) for k in reference) for sim in sims]
            (a, b) = (sim.report["total"] for sim in sims)
            print(f"| {name} | {label} | {a['dram_bytes']:,} | {b['dram_bytes']:,} | {a['cycles']:,} | {b['cycles']:,} "
                  f"| {exact[0]}, {exact[1]} |", flush=True)


def ring_table(name: str, hw: str) -> None:
    """Per SRAM ring of the fused program: the rows it keeps against the whole map's rows,
    and the peak live SRAM of the fused and the unfused programs."""
    from snnc.compiler.sweep_point import peak_sram_bytes
    from snnc.dialects import tile
    from snnc.passes.footprints import type_bytes

    model, inputs = zoo.build(name)
    plain, plain_sim = run(model, inputs, hw=hw)
    fused, fused_sim = run(model, inputs, "layer-fuse", hw=hw)
    print(f"\n## row-band fusion: SRAM ({name}, preset {hw})\n")
    print("| ring (map) | rows kept | map rows | ring bytes | whole-map bytes |")
    print("|---|---|---|---|---|")
    ring_bytes = whole_bytes = 0
    for op in fused.loop_module.walk():
        if isinstance(op, tile.AllocOp) and op.role.data.startswith("ring:"):
            planes, batch, rows, width, cs = op.result.type.get_shape()
            height = _map_height(plain.loop_module, op.role.data.removeprefix("ring:"))
            size = type_bytes(op.result.type) * op.copies.data
            whole = size * height // rows
            ring_bytes += size
            whole_bytes += whole
            print(f"| {op.role.data} | {rows} | {height} | {size:,} | {whole:,} |")
    program = lambda result: next(o for o in result.accel_module.walk() if o.name == "accel.program")  # noqa: E731
    print(f"\nrings {ring_bytes:,} bytes against {whole_bytes:,} for the same maps whole; peak live SRAM: fused "
          f"{peak_sram_bytes(program(fused)):,}, unfused {peak_sram_bytes(program(plain)):,} bytes; DRAM bytes "
          f"{plain_sim.report['total']['dram_bytes']:,} -> {fused_sim.report['total']['dram_bytes']:,}; "
          f"outputs identical: {same_outputs(plain_sim, fused_sim)}")


def _map_height(module, label: str) -> int:
    from snnc.dialects import tile

    for op in module.walk():
        if isinstance(op, tile.MapOp) and op.label.data == label:
            return op.result.type.get_shape()[-3]
    raise KeyError(label)


def _agreement(a, b) -> str:
    parts = []
    for k in a.outputs:
        parts.append(f"{k} {np.mean(a.outputs[k] == b.outputs[k]):.1%}")
    return ", ".join(parts)


def _layer_fuse_table(name: str) -> None:
    try:
        from snnc.passes import get_builtin_passes
        if "layer-fuse" not in get_builtin_passes():
            return
    except ImportError:
        return
    model, inputs = zoo.build(name)
    base_result, base = run(model, inputs, hw="small-sram")
    fused_result, fused = run(model, inputs, "layer-fuse", hw="small-sram")
    print(f"\n## layer-fuse ({name}, preset small-sram = 128 KB)\n")
    print("| layer | DRAM bytes unfused | fused |")
    print("|---|---|---|")
    rb, rf = layer_rows(base.report), layer_rows(fused.report)
    for layer in rb:
        print(f"| {layer} | {rb[layer]['dram_bytes']} | {rf[layer]['dram_bytes']} |")
    print(f"\nintermediate-feature DRAM bytes {intermediate_dram_bytes(base_result.image)} -> "
          f"{intermediate_dram_bytes(fused_result.image)}; "
          f"total DRAM bytes {base.report['total']['dram_bytes']} -> {fused.report['total']['dram_bytes']}, "
          f"cycles {base.report['total']['cycles']} -> {fused.report['total']['cycles']}, "
          f"outputs identical: {same_outputs(base, fused)}")


if __name__ == "__main__":
    sys.exit(main())
