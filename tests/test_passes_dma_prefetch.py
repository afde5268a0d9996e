"""dma-prefetch: same outputs, fewer dependency stalls, barriers gone, SRAM and DRAM hazards respected."""

from __future__ import annotations

import pytest
from xdsl.parser import Parser

from passes_util import assert_same_outputs, run
from snnc.compiler.pipeline import print_ir
from snnc.dialects import accel, make_context
from snnc.passes import get_builtin_passes, pass_level
from snnc.passes.dma_prefetch import dram_ranges, hoist_loads


def _stalls(report, cause: str) -> int:
    return sum(layer["stall_cycles"][cause] for layer in report["layers"])


@pytest.mark.parametrize("name", ["mlp", "vgg-small"])
@pytest.mark.parametrize("dataflow", ["ftp", "ip-seq", "op", "gust"])
def test_differential_outputs_identical(name, dataflow):
    _, base = run(name, f"loop-reorder{{dataflow={dataflow}}}")
    _, prefetched = run(name, f"loop-reorder{{dataflow={dataflow}}},dma-prefetch")
    assert_same_outputs(base, prefetched)


def test_transfers_overlap_compute_on_vgg_small():
    base_result, base = run("vgg-small", "loop-reorder{dataflow=ftp}")
    result, prefetched = run("vgg-small", "loop-reorder{dataflow=ftp},dma-prefetch")
    assert prefetched.report["total"]["cycles"] < base.report["total"]["cycles"]
    assert _stalls(prefetched.report, "dependency") < _stalls(base.report, "dependency")
    assert result.steps[-2] == "dma-prefetch"  # ran after the lowering, before encode
    # the scoreboard orders SRAM and DRAM hazards: no barrier is left, not even at layer boundaries
    barriers = [op for op in result.accel_module.walk() if isinstance(op, accel.BarrierOp)]
    base_barriers = [op for op in base_result.accel_module.walk() if isinstance(op, accel.BarrierOp)]
    assert not barriers and base_barriers


def test_registered_at_accel_level():
    cls = get_builtin_passes()["dma-prefetch"]()
    assert cls.name == "dma-prefetch" and pass_level(cls) == "accel"


def test_output_prints_and_parses_back():
    result, _ = run("vgg-small", "loop-reorder{dataflow=ftp},dma-prefetch")
    text = print_ir(result.accel_module)
    reparsed = Parser(make_context(), text).parse_module()
    reparsed.verify()
    assert print_ir(reparsed) == text


# --- hand-built instruction lists -------------------------------------------------------

def _load(dram: int, sram: int, size: int = 64):
    return accel.DmaLoadOp.create_with(dram_addr=dram, sram_addr=sram, row_bytes=size, rows=1,
                                       dram_stride=0, sram_stride=0)


def _store(dram: int, sram: int, size: int = 64):
    return accel.DmaStoreOp.create_with(dram_addr=dram, sram_addr=sram, row_bytes=size, rows=1,
                                        dram_stride=0, sram_stride=0)


def _move(src: int, dst: int, size: int = 64):
    return accel.MoveOp.create_with(src_addr=src, dst_addr=dst, row_bytes=size, rows=1, src_stride=0, dst_stride=0)


def test_dram_ranges_row_by_row():
    """A strided DMA's DRAM bytes are its rows (not their hull), so the next layer's first rows
    are not held behind the stores of the previous layer's last rows."""
    rows = accel.DmaStoreOp.create_with(dram_addr=0x1000, sram_addr=0, row_bytes=16, rows=3,
                                        dram_stride=0x100, sram_stride=16)
    assert dram_ranges(rows) == [(0x1000, 0x1010), (0x1100, 0x1110), (0x1200, 0x1210)]
    assert dram_ranges(_load(0x2000, 0)) == [(0x2000, 0x2040)]
    between = _load(0x1010, 256, size=0xf0)  # the gap between the first two rows
    assert hoist_loads([rows, between], {}) == [between, rows]


def test_loads_hoist_past_independent_instructions_only():
    compute_a = _move(0, 64)  # reads SRAM [0, 64), writes [64, 128)
    store_b = _store(0x3000, 128)  # reads SRAM [128, 192)
    load_c = _load(0x4000, 256)  # independent of both
    assert hoist_loads([compute_a, store_b, load_c], {}) == [load_c, compute_a, store_b]
    # WAR on SRAM: the load would overwrite what the move reads
    load_war = _load(0x4000, 0)
    assert hoist_loads([compute_a, store_b, load_war], {}) == [compute_a, load_war, store_b]
    # DRAM RAW: the load reads what the store writes
    load_raw = _load(0x3000, 256)
    assert hoist_loads([compute_a, store_b, load_raw], {}) == [compute_a, store_b, load_raw]
    # loads keep their order, and never cross a barrier
    first, barrier = _load(0x5000, 512), accel.BarrierOp.create_with()
    assert hoist_loads([first, compute_a, load_c], {}) == [first, load_c, compute_a]
    assert hoist_loads([barrier, compute_a, load_c], {}) == [barrier, load_c, compute_a]


def test_channel_tiles_double_buffer_their_weights(tmp_path):
    """A layer whose weights do not fit whole is tiled by channels; consecutive channel
    tiles take alternate weight buffers, so the next tile's weights load during this one."""
    from passes_util import model
    from snnc.backend.binformat import decode_instructions
    from snnc.backend.isa import Opcode
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.runtime import simulate

    tiny = tmp_path / "tiny.toml"
    tiny.write_text("[sram]\nsize_bytes = 24576\n")
    onnx_model, inputs = model("vgg-small")
    plain = compile_model(onnx_model, CompileOptions(hw=str(tiny), passes="loop-reorder"))
    prefetched = compile_model(onnx_model, CompileOptions(hw=str(tiny), passes="loop-reorder,dma-prefetch"))
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for spec, f in decode_instructions(prefetched.image):
        if spec.opcode == Opcode.SYN and (f["ch0"], f["w_addr"]) not in by_layer.get(f["layer"], []):
            by_layer.setdefault(f["layer"], []).append((f["ch0"], f["w_addr"]))
    tiled = [tiles for tiles in by_layer.values() if len(tiles) > 1]
    assert tiled, "the tiny SRAM should force channel tiles"
    for tiles in tiled:
        addrs = [addr for _, addr in sorted(tiles)]
        assert all(a != b for a, b in zip(addrs, addrs[1:]))  # alternate buffers
    base, fast = simulate(plain.image, inputs), simulate(prefetched.image, inputs)
    assert_same_outputs(base, fast)
    assert fast.report["total"]["cycles"] < base.report["total"]["cycles"]


def test_consecutive_layers_use_opposite_ends_of_the_sram():
    """sram-alloc: every other kernel allocates downwards from the top of its SRAM, and the
    last visit of a kernel takes the buffer set allocated first, nearest its end, so the
    next kernel's first loads need not wait for it."""
    from snnc.passes.sram_alloc import SRAM_ALIGN, SramPlan

    up, down = SramPlan(64 * SRAM_ALIGN, False, "a"), SramPlan(64 * SRAM_ALIGN, True, "b")
    assert [up.take(SRAM_ALIGN, "x"), up.take(3, "y")] == [0, SRAM_ALIGN]
    assert [down.take(SRAM_ALIGN, "x"), down.take(3, "y")] == [63 * SRAM_ALIGN, 62 * SRAM_ALIGN]
    result, _ = run("mlp", "")
    program = [o for o in result.accel_module.ops][0]
    syns = [op for op in program.instructions() if op.name == "accel.syn"]
    by_layer: dict[str, list[int]] = {}
    for op in syns:
        by_layer.setdefault(op.layer_symbol, []).append(op.field_values()["acc_addr"])
    starts = [min(addrs) for addrs in by_layer.values()]  # kernels fc1, fc2, (the residual add), fc3
    half = program.sram_size.data // 2
    assert starts[0] < half < starts[1] and starts[2] > half  # first, second and fourth kernel
