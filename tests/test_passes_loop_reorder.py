"""loop-reorder: explicit loop nests, legality, and real alternative programs per dataflow."""

from __future__ import annotations

import pytest
from xdsl.parser import Parser
from xdsl.utils.exceptions import VerifyException

from passes_util import assert_same_outputs, run
from snnc.backend.binformat import decode_instructions, decode_layers
from snnc.backend.errors import CompileError
from snnc.backend.isa import Dataflow, LayerKind, Opcode
from snnc.dialects import make_context
from snnc.dialects.snn import ScheduleAttr, loop_order_error

DATAFLOWS = {"ftp": Dataflow.FTP, "ip-seq": Dataflow.IP_SEQ, "op": Dataflow.OP, "gust": Dataflow.GUST}


@pytest.mark.parametrize("name", ["mlp", "vgg-small"])
@pytest.mark.parametrize("dataflow", list(DATAFLOWS))
def test_differential_outputs_identical(name, dataflow):
    _, base = run(name)
    result, sim = run(name, f"loop-reorder{{dataflow={dataflow}}}")
    assert_same_outputs(base, sim)
    conv = [lay for lay in decode_layers(result.image) if lay["kind"] == LayerKind.CONV]
    assert conv and all(lay["dataflow"] == DATAFLOWS[dataflow] for lay in conv)
    assert f'dataflow = "{dataflow}"' in result.snn_ir


def test_ftp_takes_fewer_cycles_than_ip_seq():
    _, ftp = run("vgg-small", "loop-reorder{dataflow=ftp}")
    _, ipseq = run("vgg-small", "loop-reorder{dataflow=ip-seq}")
    assert ftp.report["total"]["cycles"] < ipseq.report["total"]["cycles"]


def _ops(result, opcode):
    return [f for spec, f in decode_instructions(result.image) if spec.opcode == opcode]


def test_dataflows_emit_different_programs():
    ftp, _ = run("vgg-small", "loop-reorder{dataflow=ftp}")
    ipseq, _ = run("vgg-small", "loop-reorder{dataflow=ip-seq}")
    op, op_sim = run("vgg-small", "loop-reorder{dataflow=op}")
    gust, gust_sim = run("vgg-small", "loop-reorder{dataflow=gust}")
    _, ftp_sim = run("vgg-small", "loop-reorder{dataflow=ftp}")
    # ftp visits all T=4 timesteps on the lanes; the baselines one timestep at a time
    assert {f["nt"] for f in _ops(ftp, Opcode.SYN)} == {4}
    for seq in (ipseq, op, gust):
        assert {f["nt"] for f in _ops(seq, Opcode.SYN)} == {1}
    # gust and op split k into chunks (more SYNs, accumulating); ip-seq does not
    assert len(_ops(gust, Opcode.SYN)) > len(_ops(ipseq, Opcode.SYN)) > len(_ops(ftp, Opcode.SYN))
    assert any(f["flags"] for f in _ops(gust, Opcode.SYN))
    # op spills partial sums to DRAM; gust merges partial rows on chip (no extra DRAM, more SRAM)
    assert op_sim.report["total"]["dram_bytes"] > 4 * ftp_sim.report["total"]["dram_bytes"]
    assert gust_sim.report["total"]["dram_bytes"] <= ftp_sim.report["total"]["dram_bytes"]
    assert gust_sim.report["total"]["sram_bytes"] > 2 * ftp_sim.report["total"]["sram_bytes"]


def test_ftp_schedule_is_the_lowering_default_program():
    """loop-reorder{dataflow=ftp} (first in the default pipeline) makes the LoAS schedule
    explicit without changing a byte of the program the lowering emits on its own."""
    from snnc.compiler.pipeline import DEFAULT_PIPELINE

    bare, _ = run("vgg-small", "")  # an empty pipeline: no pass at all
    ftp, _ = run("vgg-small", "loop-reorder")
    default, _ = run("vgg-small")
    prefetched, _ = run("vgg-small", "compress-weights,loop-reorder,dma-prefetch")
    assert DEFAULT_PIPELINE == "compress-weights,loop-reorder{dataflow=ftp},dma-prefetch"
    assert bare.binary == ftp.binary and default.binary == prefetched.binary
    assert "snn.schedule" not in bare.snn_ir and 'dataflow = "ftp"' in default.snn_ir


@pytest.mark.parametrize("order, fragment", [
    ("t*,m,n,k", "parallel timestep loop is outside the k-reduction"),
    ("m,t*,n,k", "parallel timestep loop is outside the k-reduction"),
    ("m,n,k", "permutation of t, m, n, k"),
    ("m*,n,k,t", "only t may be parallel"),
])
def test_illegal_orders_are_refused(order, fragment):
    assert fragment in loop_order_error(tuple(order.split(",")))
    with pytest.raises(CompileError, match="illegal loop order") as info:
        run("mlp", f'loop-reorder{{order="{order}"}}')
    assert fragment in str(info.value)


def test_legal_orders_per_dependence():
    for order in ("m,n,k,t*", "m,n,k,t", "k,m,n,t", "m,k,n,t", "t,m,n,k", "n,m,k,t*", "k,t*,m,n"):
        assert loop_order_error(tuple(order.split(","))) is None, order


def test_legal_but_unimplemented_order_names_the_implemented_ones():
    with pytest.raises(CompileError, match="legal but is not the nest of dataflow ftp"):
        run("mlp", 'loop-reorder{order="t,m,n,k"}')


def test_unknown_dataflow_is_refused():
    with pytest.raises(CompileError, match="dataflow='rowwise'"):
        run("mlp", "loop-reorder{dataflow=rowwise}")


def test_schedule_attribute_prints_parses_and_verifies():
    ctx = make_context()
    text = '#snn.schedule<dataflow = "gust", order = "m,k,n,t", batch = 2, group = -1, tile_rows = 0>'
    attr = Parser(ctx, text).parse_attribute()
    assert attr == ScheduleAttr("gust", batch=2) and str(attr) == text
    with pytest.raises(VerifyException, match="parallel timestep loop"):
        Parser(ctx, text.replace('"m,k,n,t"', '"t*,m,n,k"')).parse_attribute()
    with pytest.raises(VerifyException, match="dataflow gust is the loop nest m,k,n,t"):
        Parser(ctx, text.replace('"m,k,n,t"', '"m,n,k,t"')).parse_attribute()
