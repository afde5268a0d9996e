"""compress-weights: the same outputs, weights moved as bitmask fibers (fewer DRAM bytes), IR round trip."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from onnx import numpy_helper
from passes_util import assert_same_outputs, model, run
from snnc.backend import isa
from snnc.backend.binformat import decode_instructions, validate_image
from snnc.backend.errors import BinaryFormatError
from snnc.backend.isa import Opcode
from snnc.compiler.pipeline import print_ir
from snnc.dialects import make_context
from snnc.passes import get_builtin_passes, pass_level
from snnc.passes.footprints import FIBER_OFFSETS_ATTR
from snnc.runtime import simulate
from xdsl.parser import Parser


@pytest.mark.parametrize("name", ["mlp", "vgg-small"])
@pytest.mark.parametrize("dataflow", ["ftp", "ip-seq", "gust"])
def test_differential_outputs_identical(name, dataflow):
    _, dense = run(name, f"loop-reorder{{dataflow={dataflow}}}")
    _, compressed = run(name, f"compress-weights,loop-reorder{{dataflow={dataflow}}}")
    assert_same_outputs(dense, compressed)


def test_weights_move_compressed_and_only_the_weights_change():
    dense_result, dense = run("vgg-small", "loop-reorder")
    result, compressed = run("vgg-small", "compress-weights,loop-reorder")
    opcodes = [spec.opcode for spec, _ in decode_instructions(result.image)]
    assert Opcode.DMA_LOAD_BM in opcodes  # weights come in as fibers
    assert Opcode.DMA_LOAD_BM not in [spec.opcode for spec, _ in decode_instructions(dense_result.image)]

    def dram(report, operand):
        return sum(layer["dram_operand_bytes"][operand] for layer in report["layers"])

    # the tiling is the same (SRAM holds the dense tile either way), so every channel moves as often;
    # a fiber of K weights is 4 + ceil(K/8) + nnz bytes against K dense int8 bytes
    weights = [numpy_helper.to_array(t) for t in model("vgg-small")[0].graph.initializer if t.dims and len(t.dims) >= 2]
    per_weight = max((4 + math.ceil(w[0].size / 8)) / w[0].size + np.count_nonzero(w) / w.size for w in weights)
    assert dram(compressed.report, "weights") <= per_weight * dram(dense.report, "weights")
    assert dram(compressed.report, "weights") < 0.6 * dram(dense.report, "weights")  # 50-90% sparse zoo weights
    for operand in ("spikes", "outputs"):
        assert dram(compressed.report, operand) == dram(dense.report, operand)


def test_every_weight_constant_becomes_fibers_and_round_trips_as_text():
    result, _ = run("mlp", "compress-weights")
    text = result.loop_ir
    weights = [line for line in text.splitlines() if "memref.global" in line and 'sym_name = "w_' in line]
    assert weights and all(FIBER_OFFSETS_ATTR in line and "xi8" in line for line in weights)
    module = Parser(make_context(), text).parse_module()
    module.verify()
    assert print_ir(module) == text


def test_registered_at_the_loop_level():
    cls = get_builtin_passes()["compress-weights"]()
    assert cls.name == "compress-weights" and pass_level(cls) == "loop"


def _first_fiber_load(image):
    for spec, f in decode_instructions(image):
        if spec.opcode == Opcode.DMA_LOAD_BM:
            return f
    raise AssertionError("no dma.load_bm")


def test_packed_fibers_hold_only_the_compressed_bytes():
    """The weights constant is the fibers back to back: pointer, bitmask, non-zeros, then the next."""
    result, _ = run("mlp", "compress-weights")
    f = _first_fiber_load(result.image)
    assert f["flags"] & isa.DmaFlags.PACKED
    at = f["dram_addr"]
    consts = np.frombuffer(result.image.constants, dtype=np.uint8)
    meta = 4 + (f["fiber_elems"] + 7) // 8
    for _ in range(f["fibers"]):
        # with slot padding the next "fiber" would start in the previous one's zeros: count 0
        count = int(consts[at:at + 4].view("<u4")[0])
        bits = np.unpackbits(consts[at + 4:at + meta], bitorder="little")[:f["fiber_elems"]]
        assert count > 0 and bits.sum() == count
        assert np.count_nonzero(consts[at + meta:at + meta + count * f["word_bytes"]].view(f"<u{f['word_bytes']}")) == count
        at += meta + count * f["word_bytes"]


def test_corrupt_pointer_is_a_one_line_error():
    result, _ = run("mlp", "compress-weights")
    f = _first_fiber_load(result.image)
    consts = bytearray(result.image.constants)
    consts[f["dram_addr"]:f["dram_addr"] + 4] = (1 << 30).to_bytes(4, "little")  # fiber 0 claims 2**30 non-zeros
    image = dataclasses.replace(result.image, constants=bytes(consts))
    # checked while the fibers are walked, before the wrong length derails the next ones
    with pytest.raises(BinaryFormatError, match=r"dma.load_bm\).dram_addr: fiber 0 pointer/count 1073741824 disagrees"):
        simulate(image, model("mlp")[1])


def _rewrite_first(image, opcode, new_opcode=None, **changes):
    """`image` with its first `opcode` instruction re-encoded (as `new_opcode`) with `changes`."""
    raw = bytearray(image.instructions)
    i, f = next((i, f) for i, (spec, f) in enumerate(decode_instructions(image)) if spec.opcode == opcode)
    raw[i * isa.INSTRUCTION_BYTES:(i + 1) * isa.INSTRUCTION_BYTES] = isa.encode_instruction(
        new_opcode or opcode, **{**f, **{k: change(f) for k, change in changes.items()}})
    return dataclasses.replace(image, instructions=bytes(raw))


def test_packed_store_is_refused():
    result, _ = run("mlp", "compress-weights")
    image = _rewrite_first(result.image, Opcode.DMA_LOAD_BM, Opcode.DMA_STORE_BM)
    with pytest.raises(BinaryFormatError, match="PACKED is for dma.load_bm only"):
        validate_image(image)


def test_weights_stay_compressed_in_sram_and_tiles_grow():
    """LoAS's FiberCache: dma.load_bm KEEP_COMPRESSED puts the packed fibers in SRAM and the SYN
    reads them there, so a channel tile needs its fibers' bytes, not chs x K, and tiles hold
    more channels than with dense SRAM tiles."""
    dense_result, _ = run("vgg-small", "loop-reorder")
    result, _ = run("vgg-small", "compress-weights,loop-reorder")
    syns = [f for spec, f in decode_instructions(result.image) if spec.opcode == Opcode.SYN]
    loads = [f for spec, f in decode_instructions(result.image) if spec.opcode == Opcode.DMA_LOAD_BM]
    assert loads and all(f["flags"] & isa.DmaFlags.KEEP_COMPRESSED and f["sram_bytes"] > 0 for f in loads)
    assert syns and all(f["flags"] & isa.SynFlags.COMPRESSED_WEIGHTS for f in syns)
    loaded = {}  # SRAM address -> bytes of the fibers last loaded there, in program order
    for spec, f in decode_instructions(result.image):
        if spec.opcode == Opcode.DMA_LOAD_BM:
            loaded[f["sram_addr"]] = f["sram_bytes"]
        elif spec.opcode == Opcode.SYN:
            assert f["w_bytes"] == loaded[f["w_addr"]]
    dense_syns = [f for spec, f in decode_instructions(dense_result.image) if spec.opcode == Opcode.SYN]
    assert len(syns) <= len(dense_syns)
    assert max(f["chs"] for f in syns) >= max(f["chs"] for f in dense_syns)


def test_tile_size_disagreeing_with_the_fibers_is_a_one_line_error():
    result, _ = run("mlp", "compress-weights")
    image = _rewrite_first(result.image, Opcode.DMA_LOAD_BM, sram_bytes=lambda f: f["sram_bytes"] + 1)
    with pytest.raises(BinaryFormatError, match=r"dma.load_bm\).sram_bytes = \d+, but the \d+ fibers take \d+ bytes"):
        simulate(image, model("mlp")[1])


def test_syn_weight_bytes_disagreeing_with_its_fibers_is_a_one_line_error():
    result, _ = run("mlp", "compress-weights")
    image = _rewrite_first(result.image, Opcode.SYN, w_bytes=lambda f: f["w_bytes"] - 1)
    with pytest.raises(BinaryFormatError, match=r"\(syn\).w_bytes = \d+, but its \d+ weight fibers take \d+ bytes"):
        simulate(image, model("mlp")[1])
    # and a dense SYN that claims packed bytes without the flag
    image = _rewrite_first(result.image, Opcode.SYN, flags=lambda f: f["flags"] & ~isa.SynFlags.COMPRESSED_WEIGHTS)
    with pytest.raises(BinaryFormatError, match=r"w_bytes = \d+: goes with flag COMPRESSED_WEIGHTS"):
        simulate(image, model("mlp")[1])
