"""layer-fuse: layers run depth-first over row bands; the maps between them live in SRAM rings."""

from __future__ import annotations

import re

import pytest

from passes_util import assert_same_outputs, bench_module, run
from snnc.backend.binformat import decode_instructions
from snnc.backend.errors import CompileError
from snnc.backend.isa import Opcode


@pytest.mark.parametrize("name, hw", [("mlp", None), ("vgg-small", "small-sram"), ("vgg-small", None)])
@pytest.mark.parametrize("passes", ["layer-fuse", "layer-fuse{boundaries=conv3 tile_rows=4}",
                                    "time-batch{timesteps=1},layer-fuse", "time-batch{timesteps=2},layer-fuse"])
def test_differential_outputs_identical(name, hw, passes):
    if "conv3" in passes and name == "mlp":
        passes = "layer-fuse{boundaries=fc2 tile_rows=4}"
    _, base = run(name, None, hw)
    result, sim = run(name, passes, hw)
    assert_same_outputs(base, sim)
    if name == "vgg-small":
        assert 'tile.dim = "band"' in result.loop_ir and "ring:" in result.loop_ir


def _ring_rows(loop_ir: str) -> dict[str, int]:
    """Per ring buffer: the rows it holds."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'tile.alloc "ring:([^"]+)".*memref<\d+x\d+x(\d+)x', loop_ir)}


def test_intermediate_dram_traffic_disappears_under_128kb():
    bench = bench_module()
    base_result, base = run("vgg-small", None, "small-sram")
    fused_result, fused = run("vgg-small", "layer-fuse", "small-sram")
    # every map inside the group moves on chip; only avgpool -> fc (a whole-map reader) stays
    assert bench.intermediate_dram_bytes(base_result.image) > 100_000
    assert bench.intermediate_dram_bytes(fused_result.image) < 0.35 * bench.intermediate_dram_bytes(base_result.image)
    assert any(spec.opcode == Opcode.MOVE for spec, _ in decode_instructions(fused_result.image))
    assert fused.report["total"]["dram_bytes"] < base.report["total"]["dram_bytes"]


def test_bands_keep_only_the_rows_consumers_still_need():
    """Depth-first row bands: a group ending in conv3 (16 rows) runs in bands of at most 4
    rows, and each ring holds a few rows of its map, not the whole map."""
    result, sim = run("vgg-small", "layer-fuse{boundaries=avgpool tile_rows=4}", "small-sram")
    _, base = run("vgg-small", None, "small-sram")
    assert_same_outputs(base, sim)
    rings = _ring_rows(result.loop_ir)  # of maps of 32 (conv1, conv2) and 16 rows (maxpool)
    assert rings and all(rows < 16 for rows in rings.values()), rings


def test_group_boundaries_keep_crossing_maps_in_dram():
    bench = bench_module()
    split, _ = run("vgg-small", "layer-fuse{boundaries=conv3 tile_rows=4}", "small-sram")
    assert 0 < bench.intermediate_dram_bytes(split.image)  # maxpool -> conv3 crosses the boundary
    kernels = re.findall(r'tile.kernel "([^"]+)"', split.loop_ir)
    assert "conv1+conv2+maxpool" in kernels and any(k.startswith("conv3") for k in kernels)


def test_every_layer_its_own_group_is_the_unfused_program():
    base, _ = run("vgg-small", "", "small-sram")  # no pass at all
    alone, _ = run("vgg-small", 'layer-fuse{boundaries="*"}', "small-sram")
    assert alone.binary == base.binary


def test_stems_schedules_order():
    """DRAM traffic on vgg-small at 128 KB: ST-LBL > ST-LF > TB-LBL > TB-LF (STEMS Fig. 5/7)."""
    totals = {}
    for label, passes in (("ST-LBL", "time-batch{timesteps=1}"), ("TB-LBL", None),
                          ("ST-LF", "time-batch{timesteps=1},layer-fuse"), ("TB-LF", "layer-fuse")):
        totals[label] = run("vgg-small", passes, "small-sram")[1].report["total"]["dram_bytes"]
    assert totals["ST-LBL"] > totals["ST-LF"] > totals["TB-LBL"] > totals["TB-LF"], totals


def test_time_batched_state_stays_on_chip_when_it_fits():
    result, _ = run("vgg-small", "time-batch{timesteps=2},layer-fuse")
    assert '"state:' in result.loop_ir  # a member's state map moved from DRAM to SRAM


def test_time_batch_after_fusion_is_refused():
    with pytest.raises(CompileError, match="run time-batch before layer-fuse"):
        run("vgg-small", "layer-fuse,time-batch{timesteps=1}")


def test_unknown_boundary_is_refused():
    with pytest.raises(CompileError, match=r"boundaries \['conv9'\] are not layers .*conv1"):
        run("vgg-small", "layer-fuse{boundaries=conv9}")
