"""The accel dialect: ISA correspondence, text round trip, verifier."""

from __future__ import annotations

import pytest
from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.exceptions import VerifyException

from snnc.backend import isa
from snnc.backend.isa import Format, LayerKind, Opcode
from snnc.dialects import accel, make_context


def _print(module: ModuleOp) -> str:
    import io

    from xdsl.printer import Printer

    out = io.StringIO()
    Printer(stream=out).print_op(module)
    return out.getvalue()


def _parse(text: str) -> ModuleOp:
    from xdsl.parser import Parser

    return Parser(make_context(), text).parse_module()


def test_every_opcode_has_an_op_with_the_isa_field_names():
    for spec in isa.INSTRUCTIONS:
        if spec.opcode in (Opcode.NOP, Opcode.HALT):
            continue
        op_class = accel.INSTRUCTION_OP_BY_OPCODE[spec.opcode]
        props = set(op_class.get_irdl_definition().properties)
        assert props == {f.name for f in spec.fields}, spec.mnemonic
        assert op_class.name == "accel." + spec.mnemonic.replace(".", "_")
    assert set(accel.INSTRUCTION_OP_BY_OPCODE) == {s.opcode for s in isa.INSTRUCTIONS} - {Opcode.NOP, Opcode.HALT}


def test_create_with_builds_the_op_create_would():
    """create_with skips xDSL's generic set-up (accel.new_fields_op): the op it returns has
    the same instance state as Operation.create gives, and behaves as one (attach, clone, erase)."""
    from xdsl.ir import Block

    for op_class in accel.INSTRUCTION_OPS:
        fields = {f.name: 1 for f in op_class.FIELDS if f.name != "layer"}
        layer = "l0" if any(f.name == "layer" for f in op_class.FIELDS) else None
        fast = op_class.create_with(layer, **fields)
        slow = op_class.create(properties=dict(fast.properties))
        assert vars(fast) == vars(slow), op_class.name
        assert fast.properties is not slow.properties and fast.attributes is not slow.attributes
        block = Block([fast, op_class.create_with(layer, **fields)])
        assert block.first_op is fast and fast.parent is block and fast.next_op is block.last_op
        copy = fast.clone()
        assert copy.properties == fast.properties and copy.parent is None
        fast.detach()
        fast.erase()
        assert block.first_op is block.last_op


def test_shared_int_attributes_are_what_the_constructor_builds():
    from xdsl.dialects.builtin import IntAttr

    for value in (0, 1, -5, isa.NO_ADDRESS, 1 << 40):
        fast = accel._int_attr(value)
        assert vars(fast) == vars(IntAttr(value)) and fast == IntAttr(value) and hash(fast) == hash(IntAttr(value))
        assert type(fast) is IntAttr and fast.data == value


def test_layer_op_has_every_layer_field():
    props = set(accel.LayerOp.get_irdl_definition().properties)
    assert {f.name for f in isa.LAYER_FIELDS} <= props
    assert props - {f.name for f in isa.LAYER_FIELDS} == {"sym_name", "source", "inexact"}


CONV = dict(
    kind=LayerKind.CONV, in_format=Format.SPIKE_PLANES, out_format=Format.SPIKE_PLANES,
    in_c=3, in_cs=8, in_h=4, in_w=4, out_c=10, out_cs=16, out_h=4, out_w=4,
    kh=3, kw=3, stride_h=1, stride_w=1, pad_top=1, pad_left=1, pad_bottom=1, pad_right=1,
    dil_h=1, dil_w=1, weight_bytes=1, param_c=1, acc_shift=-3, membrane_frac=6, leak_frac=1,
)
TILE = dict(batch=0, t0=0, nt=4, row0=0, rows=2, ch0=0, chs=16)


def _program(*instructions, sram_size=1 << 16, dram_size=4096, layer_fields=None) -> ModuleOp:
    layer = accel.LayerOp.create_with("conv1", "onnx::Conv_1", "weights rounded", timesteps=4, **(layer_fields or CONV))
    ops = [
        accel.ConstOp.create_with("w", 0, bytes(range(256)) * 2),
        accel.ConstOp.create_with("p", 0x400, bytes(16)),
        accel.IoOp.create_with("x", False, (4, 1, 3, 4, 4), dram_addr=0x800, format=Format.SPIKE_PLANES,
                               frac_bits=0, timesteps=4, batch=1, channels=3, channels_stored=8, height=4, width=4),
        layer,
        *instructions,
    ]
    module = ModuleOp([accel.ProgramOp.create_with(
        ops, model_name="tiny", hw_toml="[sram]\nsize_bytes = 65536\n", dram_size=dram_size,
        sram_size=sram_size, timesteps=4)])
    return module


def _all_instruction_kinds():
    return [
        accel.DmaLoadOp.create_with(dram_addr=0x800, sram_addr=0, row_bytes=16, rows=4, dram_stride=16, sram_stride=16),
        accel.SynOp.create_with("conv1", **TILE, in_row0=0, in_rows=3, flags=0, in_addr=0, w_addr=0x100,
                                param_addr=0x1000, acc_addr=0x2000),
        accel.LifOp.create_with("conv1", **TILE, acc_addr=0x2000, param_addr=0x1000, state_addr=0x3000,
                                spk_addr=0x4000, mem_addr=isa.NO_ADDRESS),
        accel.PackOp.create_with("conv1", **TILE, spk_addr=0x4000, out_addr=0x5000),
        accel.DmaStoreOp.create_with(dram_addr=0x900, sram_addr=0x5000, row_bytes=8, rows=4, dram_stride=32, sram_stride=8),
        accel.BarrierOp.create_with(),
    ]


def test_program_prints_parses_back_identically_and_verifies():
    module = _program(*_all_instruction_kinds())
    module.verify()
    text = _print(module)
    assert "accel.syn @conv1 batch=0 t0=0 nt=4" in text
    assert "mem_addr=none" in text
    assert 'inexact "weights rounded"' in text
    assert "kind=conv" in text and "in_format=spike_planes" in text
    parsed = _parse(text)
    parsed.verify()
    assert _print(parsed) == text
    assert parsed.is_structurally_equivalent(module)


def test_big_constants_print_as_hex():
    text = _print(_program())
    assert 'dense<"0x000102' in text


@pytest.mark.parametrize(
    "instruction, message",
    [
        (accel.SynOp.create_with("nope", **TILE, in_row0=0, in_rows=3, flags=0, in_addr=0, w_addr=0x100,
                                 param_addr=0x1000, acc_addr=0x2000), "not an accel.layer"),
        (accel.LifOp.create_with("conv1", **{**TILE, "rows": 5}, acc_addr=0, param_addr=0x1000,
                                 state_addr=0x3000, spk_addr=0x4000, mem_addr=isa.NO_ADDRESS), "outside the output height"),
        (accel.LifOp.create_with("conv1", **{**TILE, "t0": 2}, acc_addr=0, param_addr=0x1000,
                                 state_addr=0x3000, spk_addr=0x4000, mem_addr=isa.NO_ADDRESS), "timesteps"),
        (accel.LifOp.create_with("conv1", **{**TILE, "ch0": 8}, acc_addr=0, param_addr=0x1000,
                                 state_addr=0x3000, spk_addr=0x4000, mem_addr=isa.NO_ADDRESS), "outside out_cs"),
        (accel.PackOp.create_with("conv1", **{**TILE, "chs": 12}, spk_addr=0x4000, out_addr=0x5000), "multiples of 8"),
        (accel.SynOp.create_with("conv1", **TILE, in_row0=0, in_rows=3, flags=0, in_addr=0xFFF0, w_addr=0x100,
                                 param_addr=0x1000, acc_addr=0x2000), "in_addr range"),
        (accel.LifOp.create_with("conv1", **TILE, acc_addr=0, param_addr=0x1000, state_addr=0x3000,
                                 spk_addr=0x4000, mem_addr=0xFF00), "mem_addr range"),
        (accel.SynOp.create_with("conv1", **TILE, in_row0=3, in_rows=3, flags=0, in_addr=0, w_addr=0x100,
                                 param_addr=0x1000, acc_addr=0x2000), "outside in_h"),
        (accel.DmaStoreOp.create_with(dram_addr=4000, sram_addr=0, row_bytes=64, rows=2, dram_stride=64,
                                      sram_stride=64), "beyond dram_size"),
        (accel.DmaLoadOp.create_with(dram_addr=0, sram_addr=0xFFC0, row_bytes=64, rows=2, dram_stride=64,
                                     sram_stride=64), "outside SRAM"),
        (accel.PoolOp.create_with("conv1", **TILE, in_row0=0, in_rows=1, in_addr=0, out_addr=0x100),
         "cannot run accel.pool"),
        (accel.DmaLoadOp.create_with(dram_addr=0, sram_addr=-1, row_bytes=1, rows=1, dram_stride=0,
                                     sram_stride=0), "does not fit"),
        (accel.SynOp.create_with("conv1", **TILE, in_row0=0, in_rows=3, flags=0, in_addr=0, w_addr=0x100,
                                 param_addr=0x1000, acc_addr=0x2000, w_bytes=64), "goes with flag COMPRESSED_WEIGHTS"),
        (accel.DmaLoadBmOp.create_with(dram_addr=0, sram_addr=0, fibers=2, fiber_elems=8, word_bytes=1, elem_bits=8,
                                       flags=int(isa.DmaFlags.PACKED | isa.DmaFlags.KEEP_COMPRESSED)),
         "goes with flag KEEP_COMPRESSED"),
        (accel.DmaStoreBmOp.create_with(dram_addr=0, sram_addr=0, fibers=2, fiber_elems=8, word_bytes=1, elem_bits=8,
                                        flags=int(isa.DmaFlags.PACKED)), "PACKED is for dma.load_bm only"),
        (accel.SynOp.create_with("conv1", **TILE, in_row0=0, in_rows=3, flags=0x41, in_addr=0, w_addr=0x100,
                                 param_addr=0x1000, acc_addr=0x2000), "flags = 0x41 sets bits 0x40 that are no SynFlags"),
    ],
)
def test_verifier_rejects(instruction, message):
    module = _program(instruction)
    with pytest.raises(VerifyException, match=message):
        module.verify()


def test_verifier_rejects_duplicate_symbols_and_overlapping_constants():
    module = _program()
    program = module.body.block.first_op
    program.body.block.add_op(accel.ConstOp.create_with("w", 0x2000, b"\0"))
    with pytest.raises(VerifyException, match="defined twice"):
        module.verify()
    module = _program()
    module.body.block.first_op.body.block.add_op(accel.ConstOp.create_with("w2", 0x1F0, bytes(32)))
    with pytest.raises(VerifyException, match="overlaps"):
        module.verify()


def test_enum_and_flag_fields_print_by_name_and_parse_back():
    syn = accel.SynOp.create_with("conv1", **TILE, in_row0=0, in_rows=3, in_addr=0, w_addr=0x100, param_addr=0x1000,
                                  acc_addr=0x2000, w_bytes=64,
                                  flags=int(isa.SynFlags.ACCUMULATE | isa.SynFlags.COMPRESSED_WEIGHTS))
    module = _program(syn, layer_fields={**CONV, "dataflow": isa.Dataflow.IP_SEQ, "lif_flags": isa.LifFlags.COMPARE_GT})
    text = _print(module)
    assert "flags=accumulate|compressed_weights" in text
    assert "dataflow=ip_seq" in text and "lif_flags=compare_gt" in text and "flags=0 " in text  # layer flags: none
    assert "format=spike_planes" in text  # accel.io
    parsed = _parse(text)
    assert parsed.is_structurally_equivalent(module) and _print(parsed) == text
    assert _parse(text.replace("flags=accumulate|compressed_weights", "flags=3")).is_structurally_equivalent(module)
    with pytest.raises(Exception, match="unknown SynFlags 'accumulat'"):
        _parse(text.replace("flags=accumulate|", "flags=accumulat|"))


def test_verifier_rejects_invalid_layer_enums():
    with pytest.raises(VerifyException, match=r"accel.layer @conv1: dataflow = 7 is not a valid Dataflow"):
        _program(layer_fields={**CONV, "dataflow": 7}).verify()
    with pytest.raises(VerifyException, match=r"accel.layer @conv1: flags = 0x10 sets bits 0x10 that are no LayerFlags"):
        _program(layer_fields={**CONV, "flags": 0x10}).verify()


def test_verifier_rejects_bad_layer_geometry():
    with pytest.raises(VerifyException, match="out_cs"):
        _program(layer_fields={**CONV, "out_cs": 12}).verify()
    with pytest.raises(VerifyException, match="param_c"):
        _program(layer_fields={**CONV, "param_c": 7}).verify()


def test_parse_rejects_fields_out_of_order():
    text = _print(_program(_all_instruction_kinds()[0]))
    broken = text.replace("row_bytes=16 rows=4", "rows=4 row_bytes=16")
    with pytest.raises(Exception, match="row_bytes"):
        _parse(broken)


def test_sram_operands_follow_the_isa_tile_layouts():
    module = _program()
    layer = module.body.block.first_op.layers()[0]
    syn = accel.SynOp.create_with("conv1", **TILE, in_row0=0, in_rows=3, flags=0, in_addr=0, w_addr=0x100,
                                  param_addr=0x1000, acc_addr=0x2000)
    sizes = {o.field: o.size for o in accel.sram_operands(syn, layer)}
    # in: nt=4 x 3 rows x W=4 x Cs=8 bits = 48 B; w: 16 x 3 x 3 x 8 int8; acc: int32 4 x 2 x 4 x 16;
    # param: the bias of the tile's 10 real channels (out_c = 10 of chs = 16)
    assert sizes == {"in_addr": 48, "w_addr": 16 * 9 * 8, "acc_addr": 4 * 4 * 2 * 4 * 16, "param_addr": 4 * 10}
    lif = accel.LifOp.create_with("conv1", **TILE, acc_addr=0, param_addr=0x100, state_addr=0, spk_addr=0, mem_addr=0)
    operands = {o.field: o for o in accel.sram_operands(lif, layer)}
    sizes = {name: o.size for name, o in operands.items()}
    assert sizes["state_addr"] == 2 * 4 * 2 * 4 * 16 and sizes["spk_addr"] == 1 * 2 * 4 * 16
    # threshold, leak, v_reset[param_c = 1] after bias[out_c = 10]
    assert (operands["param_addr"].addr, operands["param_addr"].size) == (0x100 + 4 * 10, 12)
    assert sizes["mem_addr"] == 4 * 4 * 2 * 4 * 16
