"""layer-fuse: intermediate feature maps stay in SRAM (MOVE instead of DMA) under a small SRAM."""

from __future__ import annotations

import pytest

from passes_util import assert_same_outputs, bench_module, layers, run
from snnc.backend.binformat import decode_instructions
from snnc.backend.errors import CompileError
from snnc.backend.isa import Opcode


@pytest.mark.parametrize("name, hw", [("mlp", None), ("vgg-small", "small-sram"), ("vgg-small", None)])
@pytest.mark.parametrize("passes", ["layer-fuse", "layer-fuse{boundaries=conv3 tile_rows=4}",
                                    "time-batch{timesteps=1},layer-fuse"])
def test_differential_outputs_identical(name, hw, passes):
    if "conv3" in passes and name == "mlp":
        passes = "layer-fuse{boundaries=fc2 tile_rows=4}"
    _, base = run(name, None, hw)
    result, sim = run(name, passes, hw)
    assert_same_outputs(base, sim)
    assert "group = 0" in result.snn_ir


def test_intermediate_dram_traffic_disappears_under_128kb():
    bench = bench_module()
    base_result, base = run("vgg-small", None, "small-sram")
    fused_result, fused = run("vgg-small", "layer-fuse", "small-sram")
    assert bench.intermediate_dram_bytes(base_result.image) > 100_000
    assert bench.intermediate_dram_bytes(fused_result.image) == 0
    assert any(spec.opcode == Opcode.MOVE for spec, _ in decode_instructions(fused_result.image))
    before, after = layers(base.report), layers(fused.report)
    for layer in ("maxpool", "avgpool"):  # their input and output were both intermediate maps
        assert before[layer]["dram_bytes"] > 0 and after[layer]["dram_bytes"] == 0
    assert fused.report["total"]["dram_bytes"] < 0.7 * base.report["total"]["dram_bytes"]


def test_group_boundaries_keep_crossing_maps_in_dram():
    bench = bench_module()
    whole, _ = run("vgg-small", "layer-fuse", "small-sram")
    split, _ = run("vgg-small", "layer-fuse{boundaries=conv3 tile_rows=4}", "small-sram")
    assert 0 < bench.intermediate_dram_bytes(split.image)  # maxpool -> conv3 crosses the boundary
    syn_rows = {f["rows"] for spec, f in decode_instructions(split.image) if spec.opcode == Opcode.SYN}
    assert max(syn_rows) <= 4
    assert "tile_rows = 4" in split.snn_ir and "group = 1" in split.snn_ir


def test_every_layer_its_own_group_is_the_unfused_program():
    base, _ = run("vgg-small", "", "small-sram")  # no pass at all
    alone, _ = run("vgg-small", 'layer-fuse{boundaries="*"}', "small-sram")
    assert alone.binary == base.binary


def test_stems_schedules_order():
    """ST-LBL > ST-LF > TB-LBL > TB-LF in DRAM traffic (STEMS Fig. 5/7 ordering on vgg-small)."""
    totals = {}
    for label, passes in (("ST-LBL", "time-batch{timesteps=1}"), ("TB-LBL", None),
                          ("ST-LF", "time-batch{timesteps=1},layer-fuse"), ("TB-LF", "layer-fuse")):
        totals[label] = run("vgg-small", passes, "small-sram")[1].report["total"]["dram_bytes"]
    assert totals["ST-LBL"] > totals["ST-LF"] > totals["TB-LBL"] > totals["TB-LF"]


def test_unknown_boundary_is_refused():
    with pytest.raises(CompileError, match=r"boundaries \['conv9'\] are not layers .*conv1"):
        run("vgg-small", "layer-fuse{boundaries=conv9}")
