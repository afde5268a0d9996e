"""spike-pack: packed spike types, bitmask-compressed spikes and weights in the binary and the simulator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from passes_util import assert_same_outputs, bench_module, layers, run
from snnc.backend import isa
from snnc.backend.binformat import decode_instructions, decode_layers
from snnc.backend.disasm import disassemble
from snnc.backend.errors import CompileError
from snnc.backend.isa import Format, Opcode

SPARSE = 0.9  # zoo spike sparsity giving a LoAS-like silent ratio (~76 %) at vgg-small conv2's input


@pytest.mark.parametrize("name", ["mlp", "vgg-small"])
@pytest.mark.parametrize("passes", ["spike-pack", "spike-pack{weights=false}", "loop-reorder{dataflow=ip-seq},spike-pack"])
def test_differential_outputs_identical(name, passes):
    _, base = run(name, None, None, SPARSE)
    result, sim = run(name, passes, None, SPARSE)
    assert_same_outputs(base, sim)
    assert "spike_bitmask" in result.loop_ir
    formats = {lay["out_format"] for lay in decode_layers(result.image)}
    assert Format.SPIKE_BITMASK in formats


def test_binary_carries_packed_fibers_and_counts_their_bytes():
    result, sim = run("vgg-small", "spike-pack", None, SPARSE)
    program = decode_instructions(result.image)
    stores = [f for spec, f in program if spec.opcode == Opcode.DMA_STORE_BM]
    loads = [f for spec, f in program if spec.opcode == Opcode.DMA_LOAD_BM]
    assert stores and all(f["flags"] & isa.DmaFlags.SPIKES and f["elem_bits"] == 4 for f in stores)
    assert any(f["flags"] & isa.DmaFlags.PACKED and f["elem_bits"] == 8 for f in loads)  # compressed weight columns
    assert "dma.load_bm" in disassemble(result.image)
    rows = layers(sim.report)
    conv2 = rows["conv2"]
    # bitmasks and pointers are part of the DRAM traffic: 32 input row fibers of 32x16 neurons
    assert conv2["bitmask_bytes"] >= 32 * (4 + 32 * 16 // 8)
    assert 0 < conv2["compression_efficiency"] < 10
    assert rows["conv1"]["compression_efficiency"] is None  # its input is the analog image


def test_packing_cuts_input_bytes_of_a_mostly_silent_layer():
    bench = bench_module()
    base_result, base = run("vgg-small", "loop-reorder", None, SPARSE)  # dense spikes and weights
    _, packed = run("vgg-small", "spike-pack{weights=false}", None, SPARSE)
    b, p = layers(base.report)["conv2"], layers(packed.report)["conv2"]
    assert 0.6 <= b["silent_ratio"] <= 0.8
    plain_spikes = bench.spike_input_dram_bytes(base_result.image)["conv2"]
    packed_spikes = plain_spikes + p["dram_read_bytes"] - b["dram_read_bytes"]
    assert packed_spikes < 0.75 * plain_spikes
    # and with the weights compressed too, the whole layer's DRAM traffic falls
    _, both = run("vgg-small", "spike-pack", None, SPARSE)
    assert layers(both.report)["conv2"]["dram_bytes"] < b["dram_bytes"]


def test_mask_single_spike_changes_results_and_silences_more():
    _, base = run("vgg-small", None, None, SPARSE)
    result, masked = run("vgg-small", "spike-pack{mask-single-spike=true}", None, SPARSE)
    assert " mask_single " in result.loop_ir
    assert any(f["flags"] & isa.DmaFlags.MASK_SINGLE
               for spec, f in decode_instructions(result.image) if spec.opcode == Opcode.DMA_STORE_BM)
    assert not all(np.array_equal(base.outputs[k], masked.outputs[k]) for k in base.outputs)
    assert layers(masked.report)["conv2"]["silent_ratio"] > layers(base.report)["conv2"]["silent_ratio"]


def test_graph_io_is_not_packed():
    result, _ = run("mlp", "spike-pack", None, SPARSE)
    assert all(d.format in (Format.SPIKE_PLANES, Format.ACT_I16, Format.ACT_I32) for d in result.image.io)


def test_time_batched_producers_stay_unpacked():
    """A time batch writes only its timesteps' bits of a word: after time-batch, spike-pack leaves
    those maps as spike planes; before it, time-batch refuses a packed producer."""
    result, sim = run("vgg-small", "time-batch{timesteps=2},spike-pack", None, SPARSE)
    _, base = run("vgg-small", None, None, SPARSE)
    assert_same_outputs(base, sim)
    batched = [line for line in result.loop_ir.splitlines() if "tile.map \"lif" in line]
    assert batched and not any("spike_bitmask" in line for line in batched)  # the maxpool's output still packs
    with pytest.raises(CompileError, match="spike-packed .* time batches"):
        run("vgg-small", "spike-pack,time-batch{timesteps=2}")


@pytest.mark.parametrize("dataflow", ["op", "gust"])
def test_k_chunked_dataflows_read_packed_inputs_in_8_channel_slices(dataflow):
    result, sim = run("vgg-small", f"loop-reorder{{dataflow={dataflow}}},spike-pack", None, SPARSE)
    _, base = run("vgg-small", None, None, SPARSE)
    assert_same_outputs(base, sim)
    assert "spike_bitmask" in result.loop_ir and " slice=8 " in result.loop_ir
    with pytest.raises(CompileError, match="run loop-reorder before spike-pack"):
        run("vgg-small", f"spike-pack,loop-reorder{{dataflow={dataflow}}}", None, SPARSE)


def test_fiber_pointer_must_match_bitmask():
    """The runtime rejects a corrupt fiber (count disagreeing with its bitmask), naming it."""
    from snnc.backend.errors import BinaryFormatError
    from snnc.runtime import simulate

    from passes_util import model

    result, _ = run("vgg-small", "spike-pack", None, SPARSE)
    load = next(f for spec, f in decode_instructions(result.image)
                if spec.opcode == Opcode.DMA_LOAD_BM and f["flags"] & isa.DmaFlags.PACKED)
    constants = bytearray(result.image.constants)
    constants[load["dram_addr"]] ^= 0x01  # the first weight fiber's pointer/count
    image = dataclasses.replace(result.image, constants=bytes(constants))
    with pytest.raises(BinaryFormatError, match=r"dma.load_bm\).dram_addr: fiber 0 pointer/count"):
        simulate(image, model("vgg-small", SPARSE)[1])


def test_packed_layers_tile_their_channels_on_the_paper_models():
    """Packing is channel-sliced: vgg16-cifar10's 512-channel layers, whose weights do not fit
    the SRAM whole, write their packed spikes one channel tile at a time."""
    from snnc.compiler.pipeline import CompileOptions, compile_model

    from passes_util import model

    result = compile_model(model("vgg16-cifar10")[0], CompileOptions(
        passes="compress-weights,loop-reorder{dataflow=ftp},spike-pack,dma-prefetch"))
    packs = [f for spec, f in decode_instructions(result.image) if spec.opcode == Opcode.PACK]
    stores = [f for spec, f in decode_instructions(result.image) if spec.opcode == Opcode.DMA_STORE_BM]
    assert stores and any(f["run_elems"] for f in stores)  # slices strided into a channel tile
    layers_ = decode_layers(result.image)
    wide = {i for i, lay in enumerate(layers_) if lay["out_cs"] == 512 and lay["out_format"] == Format.SPIKE_BITMASK}
    assert wide and any(f["chs"] < 512 for f in packs if f["layer"] in wide)


def test_slice_shrinks_until_the_producer_fits_the_sram(tmp_path):
    """On a 16 KB SRAM, vgg-small's conv1 fits no tile of all 16 channels: spike-pack's default
    slice becomes 8 channels, the program compiles and computes what the unpacked one does;
    the user's 16-channel slice stands, and tile-sizes refuses it in one line."""
    from snnc.backend.hwconfig import PRESET_DIR
    from snnc.backend.errors import CompileError
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.dialects import tile
    from snnc.runtime import simulate

    from passes_util import assert_same_outputs, model

    hw = tmp_path / "sram16k.toml"
    hw.write_text((PRESET_DIR / "small-sram.toml").read_text().replace("size_bytes = 131072", "size_bytes = 16384", 1))
    onnx_model, inputs = model("vgg-small")
    packed = compile_model(onnx_model, CompileOptions(passes="spike-pack", hw=str(hw)))
    slices = {o.label.data: o.slice.data for o in packed.loop_module.walk() if isinstance(o, tile.MapOp) and o.slice}
    assert slices["lif1.spikes"] == 8
    plain = compile_model(onnx_model, CompileOptions(hw=str(hw)))
    assert_same_outputs(simulate(plain.image, inputs), simulate(packed.image, inputs))
    with pytest.raises(CompileError, match=r"'conv1': does not fit the SRAM under any tiling: even a 1 row x 16 channels"):
        compile_model(onnx_model, CompileOptions(passes="spike-pack{channels=16}", hw=str(hw)))
