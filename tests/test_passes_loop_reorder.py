"""loop-reorder: the dataflows as loop nests at the loop level, legality, and real alternative programs."""

from __future__ import annotations

import dataclasses

import pytest

from passes_util import assert_same_outputs, run
from snnc.backend.binformat import decode_instructions, decode_layers
from snnc.backend.errors import CompileError
from snnc.backend.hwconfig import load_hw
from snnc.backend.isa import Dataflow, LayerKind, Opcode
from snnc.compiler.pipeline import CompileOptions, compile_model
from snnc.compiler.zoo import build

DATAFLOWS = {"ftp": Dataflow.FTP, "ip-seq": Dataflow.IP_SEQ, "op": Dataflow.OP, "gust": Dataflow.GUST}


@pytest.mark.parametrize("name", ["mlp", "vgg-small"])
@pytest.mark.parametrize("dataflow", list(DATAFLOWS))
def test_differential_outputs_identical(name, dataflow):
    _, base = run(name)
    result, sim = run(name, f"loop-reorder{{dataflow={dataflow}}}")
    assert_same_outputs(base, sim)
    conv = [lay for lay in decode_layers(result.image) if lay["kind"] == LayerKind.CONV]
    assert conv and all(lay["dataflow"] == DATAFLOWS[dataflow] for lay in conv)


def test_ftp_takes_fewer_cycles_than_ip_seq():
    _, ftp = run("vgg-small", "loop-reorder{dataflow=ftp}")
    _, ipseq = run("vgg-small", "loop-reorder{dataflow=ip-seq}")
    assert ftp.report["total"]["cycles"] < ipseq.report["total"]["cycles"]


def _ops(result, opcode):
    return [f for spec, f in decode_instructions(result.image) if spec.opcode == opcode]


def test_dataflows_emit_different_programs():
    ftp, ftp_sim = run("vgg-small", "loop-reorder{dataflow=ftp}")
    ipseq, _ = run("vgg-small", "loop-reorder{dataflow=ip-seq}")
    op, op_sim = run("vgg-small", "loop-reorder{dataflow=op}")
    gust, gust_sim = run("vgg-small", "loop-reorder{dataflow=gust}")
    # ftp visits all T=4 timesteps on the lanes; the baselines one timestep at a time
    assert {f["nt"] for f in _ops(ftp, Opcode.SYN)} == {4}
    for seq in (ipseq, op, gust):
        assert {f["nt"] for f in _ops(seq, Opcode.SYN)} == {1}
    # gust and op split k into chunks (more SYNs, accumulating); ip-seq does not
    assert len(_ops(gust, Opcode.SYN)) > len(_ops(ipseq, Opcode.SYN)) > len(_ops(ftp, Opcode.SYN))
    assert any(f["flags"] for f in _ops(gust, Opcode.SYN))
    # gust merges partial rows on chip (no extra DRAM, more SRAM)
    assert gust_sim.report["total"]["dram_bytes"] <= ftp_sim.report["total"]["dram_bytes"]
    assert gust_sim.report["total"]["sram_bytes"] > 2 * ftp_sim.report["total"]["sram_bytes"]
    assert op_sim.report["total"]["dram_bytes"] >= ftp_sim.report["total"]["dram_bytes"]


def _loop_ir(passes: str, name: str = "vgg-small") -> str:
    return compile_model(build(name)[0], CompileOptions(passes=passes)).loop_ir


def test_the_loop_nest_changes_in_the_ir():
    """ip-seq runs t one timestep at a time (step 1, not parallel); gust splits the reduction
    into k-chunk synapses; op runs one nest per chunk with partial sums in a DRAM map."""
    ftp, ipseq = _loop_ir("loop-reorder{dataflow=ftp}"), _loop_ir("loop-reorder{dataflow=ip-seq}")
    gust, op = _loop_ir("loop-reorder{dataflow=gust}"), _loop_ir("loop-reorder{dataflow=op}")
    assert ftp.count("tile.parallel") > ipseq.count("tile.parallel")  # pools and adds keep their lanes
    assert gust.count("tile.syn ") > ipseq.count("tile.syn ") == ftp.count("tile.syn ")
    assert ".psum" in op and op.count('tile.dim = "n"') > ftp.count('tile.dim = "n"')


def test_ftp_is_the_nest_convert_snn_to_loops_builds():
    """loop-reorder{dataflow=ftp} (first in the default pipeline) states the nest the
    lowering builds on its own: the same program, byte for byte."""
    bare, _ = run("vgg-small", "")
    ftp, _ = run("vgg-small", "loop-reorder")
    assert bare.binary == ftp.binary


def test_a_user_order_puts_row_tiles_outside_channel_tiles(tmp_path):
    """order=m,n,t*: every channel tile of a row tile before the next row tile. With a 16 KB
    SRAM the layers have several channel and row tiles, so the weights load once per row
    tile instead of once: more loads, the same outputs."""
    hw = load_hw("loas")
    tiny = tmp_path / "tiny.toml"
    tiny.write_text(dataclasses.replace(hw, sram=dataclasses.replace(hw.sram, size_bytes=16384)).to_toml())
    base, base_sim = run("vgg-small", "loop-reorder", hw=str(tiny))
    swapped, swapped_sim = run("vgg-small", 'loop-reorder{order="m,n,t*"}', hw=str(tiny))
    assert_same_outputs(base_sim, swapped_sim)
    loads = (Opcode.DMA_LOAD, Opcode.DMA_LOAD_BM)
    assert sum(len(_ops(swapped, o)) for o in loads) > sum(len(_ops(base, o)) for o in loads)
    text = swapped.loop_ir
    assert text.index('tile.dim = "n"') < text.index('tile.dim = "m"')  # printed inner loop first: n inside m


@pytest.mark.parametrize("order, fragment", [
    ("t*,m,n", "loop t outside loop m"),
    ("m,t*,n", "loop t outside loop n"),
    ("m,n", "must order the loops of dataflow ftp"),
    ("m*,n,t*", "only t may be parallel"),
    ("m,n,t", "loop t runs in parallel under dataflow ftp"),
])
def test_illegal_orders_are_refused(order, fragment):
    with pytest.raises(CompileError, match="loop-reorder") as info:
        run("mlp", f'loop-reorder{{order="{order}"}}')
    assert fragment in str(info.value)


def test_k_between_loops_is_refused():
    with pytest.raises(CompileError, match="loop k runs innermost"):
        run("mlp", 'loop-reorder{dataflow=gust order="n,k,m,t"}')


def test_unknown_dataflow_is_refused():
    with pytest.raises(CompileError, match="dataflow='rowwise'") as info:
        run("mlp", "loop-reorder{dataflow=rowwise}")
    message = str(info.value)
    assert "\n" not in message and all(name in message for name in ("ftp", "ip-seq", "gust", "op"))


def test_builtin_dataflows_are_one_module_each():
    from snnc.passes.dataflows import BUILTIN_MODULES, registered

    known = registered()
    assert list(known)[:4] == ["ftp", "ip-seq", "gust", "op"] and len(BUILTIN_MODULES) == 4
    assert {name: recipe.code for name, recipe in known.items() if name in DATAFLOWS} == DATAFLOWS
    assert {getattr(recipe.rewrite, "func", recipe.rewrite).__module__ for recipe in known.values()
            if recipe.rewrite} == {"snnc.passes.dataflows.kchunks"}


def test_a_plugin_dataflow_is_one_file(tmp_path):
    """tests/dataflow_ftp_rows.py registers ftp-rows (m > n > t*) on import: loop-reorder
    finds it, lists it among the known ones, and it runs vgg-small with the same outputs
    as ftp and the row tiles outside the channel tiles (with a 16 KB SRAM, several of each)."""
    import dataflow_ftp_rows  # noqa: F401  (registers on import)

    with pytest.raises(CompileError, match="ftp-rows"):
        run("mlp", "loop-reorder{dataflow=nope}")
    hw = load_hw("loas")
    tiny = tmp_path / "tiny.toml"
    tiny.write_text(dataclasses.replace(hw, sram=dataclasses.replace(hw.sram, size_bytes=16384)).to_toml())
    _, base = run("vgg-small", "loop-reorder", hw=str(tiny))
    plugin, sim = run("vgg-small", "loop-reorder{dataflow=ftp-rows}", hw=str(tiny))
    explicit, _ = run("vgg-small", 'loop-reorder{order="m,n,t*"}', hw=str(tiny))
    assert_same_outputs(base, sim)
    assert plugin.binary == explicit.binary
    assert plugin.loop_ir.index('tile.dim = "n"') < plugin.loop_ir.index('tile.dim = "m"')


def test_chosen_layers_only():
    result, sim = run("vgg-small", "loop-reorder{dataflow=ip-seq layers=conv2}")
    layers = {lay["name"] if "name" in lay else i: lay for i, lay in enumerate(decode_layers(result.image))}
    codes = {lay["dataflow"] for lay in layers.values() if lay["kind"] == LayerKind.CONV}
    assert codes == {Dataflow.FTP, Dataflow.IP_SEQ}
    _, base = run("vgg-small")
    assert_same_outputs(base, sim)
    with pytest.raises(CompileError, match=r"\['nope'\] are not synaptic layers"):
        run("vgg-small", "loop-reorder{layers=nope}")


def test_op_holds_the_partial_sums_that_fit_on_chip(tmp_path):
    """GoSPA's merge: the op dataflow's partial sums stay in a `psum` SRAM buffer across the
    k-chunk nests for the output tiles that fit in sram.psum_share, and only the others go
    through the DRAM map. With a 4 MB SRAM every tile fits: no psum map, less DRAM traffic
    than with 256 KB, where some still spill. Outputs are identical either way."""
    hw = load_hw("loas")
    big = tmp_path / "big.toml"
    big.write_text(dataclasses.replace(hw, sram=dataclasses.replace(hw.sram, size_bytes=4 << 20)).to_toml())
    _, base = run("vgg-small")
    held, held_sim = run("vgg-small", "loop-reorder{dataflow=op}", hw=str(big))
    some, some_sim = run("vgg-small", "loop-reorder{dataflow=op}")
    assert_same_outputs(base, held_sim)
    assert_same_outputs(base, some_sim)
    assert 'tile.alloc "psum"' in held.loop_ir and ".psum" not in held.loop_ir
    assert 'tile.alloc "psum"' in some.loop_ir and ".psum" in some.loop_ir
    psum_dma = held_sim.report["total"]["dram_bytes"]
    assert psum_dma < some_sim.report["total"]["dram_bytes"]


def test_a_plugin_dataflow_order_is_checked_like_a_users():
    from snnc.passes.dataflows import DataflowRecipe, register, unregister

    register(DataflowRecipe("t-outside", Dataflow.IP_SEQ, ("t", "n", "m")))
    try:
        with pytest.raises(CompileError, match="loop t outside loop n"):
            run("mlp", "loop-reorder{dataflow=t-outside}")
    finally:
        unregister("t-outside")
