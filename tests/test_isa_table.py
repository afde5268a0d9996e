"""The ISA table owns the enum values and the SRAM operands: every consumer follows it."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from snnc.backend import binformat as bf
from snnc.backend import isa
from snnc.backend.disasm import disassemble
from snnc.backend.errors import BinaryFormatError
from snnc.backend.isa import DmaFlags, Format, Opcode, SynFlags
from snnc.backend.isa_doc import render_isa_tables
from test_binformat import assemble, stored_sections
from test_runtime import W_DENSE, dense_program


def _sram_address_fields(spec: isa.InstructionSpec) -> set[str]:
    return {f.name for f in spec.fields if f.name.endswith("_addr") and f.name != "dram_addr"}


def _sample_layer() -> dict[str, int]:
    layer = {f.name: 1 for f in isa.LAYER_FIELDS}
    layer.update(in_format=Format.ACT_I16, in2_format=Format.ACT_I16, out_format=Format.ACT_I16, timesteps=4, out_c=16)
    return layer


def test_every_sram_address_field_has_its_operand():
    """A new instruction must say how much SRAM each of its addresses covers."""
    layer = _sample_layer()
    for spec in isa.INSTRUCTIONS:
        fields = {f.name: 1 for f in spec.fields}
        fields.update({name: 0 for name in ("flags", "sram_bytes", "w_bytes") if name in fields})
        fields.update({name: 64 for name in _sram_address_fields(spec)})  # mem_addr: present, not NO_ADDRESS
        operands = isa.sram_operands(spec, fields, layer if spec.has_layer else None)
        assert {o.field for o in operands} == _sram_address_fields(spec), spec.mnemonic
        assert all(o.size > 0 and (o.reads or o.writes) for o in operands), spec.mnemonic


def test_flags_and_geometry_decide_the_operands():
    syn = isa.INSTRUCTION_BY_OPCODE[Opcode.SYN]
    layer = dict(_sample_layer(), out_c=10, out_w=4, in_w=4, in_cs=8, kh=3, kw=3, weight_bytes=1)
    fields = {f.name: 0 for f in syn.fields} | dict(nt=4, rows=2, ch0=8, chs=8, in_rows=3, param_addr=0x100)
    plain = {o.field: o for o in isa.sram_operands(syn, fields, layer)}
    assert (plain["param_addr"].addr, plain["param_addr"].size) == (0x100 + 4 * 8, 4 * 2)  # bias of channels 8, 9
    assert not plain["acc_addr"].reads and plain["w_addr"].size == 8 * 3 * 3 * 8
    accumulate = {o.field: o for o in isa.sram_operands(syn, fields | {"flags": SynFlags.ACCUMULATE}, layer)}
    assert "param_addr" not in accumulate and accumulate["acc_addr"].reads
    compressed = fields | {"flags": SynFlags.COMPRESSED_WEIGHTS, "w_bytes": 77}
    assert {o.field: o.size for o in isa.sram_operands(syn, compressed, layer)}["w_addr"] == 77
    load_bm = isa.INSTRUCTION_BY_OPCODE[Opcode.DMA_LOAD_BM]
    values = {f.name: 0 for f in load_bm.fields} | dict(fibers=3, fiber_elems=16, word_bytes=2)
    assert [o.size for o in isa.sram_operands(load_bm, values)] == [3 * 16 * 2]
    kept = values | {"flags": DmaFlags.KEEP_COMPRESSED, "sram_bytes": 40}
    assert [o.size for o in isa.sram_operands(load_bm, kept)] == [40]


def test_tile_bytes_holds_whole_words_for_word_formats():
    assert isa.tile_bytes(Format.SPIKE_PLANES, 2, 64, 4) == 16
    assert isa.tile_bytes(Format.ACT_I32, 2, 10, 4) == 80
    assert isa.tile_bytes(Format.SPIKE_WORDS, 2, 10, 12) == 20  # T = 12: 2-byte words, whatever the visit
    assert isa.tile_bytes(Format.SPIKE_BITMASK, 1, 10, 4) == 10


def test_decoders_reject_invalid_enum_values_and_unknown_flag_bits():
    with pytest.raises(isa.DecodeError, match=r"layer descriptor 3: field dataflow = 7 is not a valid Dataflow"):
        isa.decode_layer(isa.encode_layer(dataflow=7), 3)
    with pytest.raises(isa.DecodeError, match=r"field lif_flags = 0x31 sets bits 0x30 that are no LifFlags"):
        isa.decode_layer(isa.encode_layer(lif_flags=0x31))
    syn = isa.INSTRUCTION_BY_OPCODE[Opcode.SYN]
    raw = isa.encode_instruction(Opcode.SYN, **({f.name: 0 for f in syn.fields} | {"flags": 0x40}))
    with pytest.raises(isa.DecodeError, match=r"instruction 5 \(syn\)\.flags = 0x40 sets bits 0x40 that are no SynFlags"):
        isa.decode_instruction(raw, 5)


def _image():
    return dense_program(W_DENSE, [1, 2], [4, 4], [0, 0], [0, 0])


def test_reader_rejects_an_io_format_that_is_no_format():
    data = bf.write_program(_image())
    sections = []
    for kind, encoding, payload in stored_sections(data):
        if kind == bf.SectionKind.IO:
            raw = bytearray(bf.decode_section("io", bf.SectionEncoding(encoding), payload))
            name_length = struct.unpack_from("<I", raw, 4)[0]
            rank_at = 8 + name_length
            raw[rank_at + 1 + 4 * raw[rank_at] + 1] = 9  # the first descriptor's format (after is_output)
            encoding, payload = 0, bytes(raw)
        sections.append((kind, encoding, payload))
    with pytest.raises(BinaryFormatError, match=r"io\[0\] \('x'\)\.format = 9 is not a valid Format"):
        bf.read_program(assemble(sections, struct.unpack_from("<Q", data, 16)[0]))


def test_reader_checks_sram_operands_against_the_hw_config():
    image = _image()
    syn = isa.INSTRUCTION_BY_OPCODE[Opcode.SYN]
    code = bytearray(image.instructions)
    for i in range(len(code) // isa.INSTRUCTION_BYTES):
        spec, fields = isa.decode_instruction(bytes(code[i * 48:(i + 1) * 48]), i)
        if spec is syn:
            fields["acc_addr"] = 256 * 1024 - 8  # the loas preset's SRAM ends inside the accumulator tile
            code[i * 48:(i + 1) * 48] = isa.encode_instruction(Opcode.SYN, **fields)
            break
    with pytest.raises(BinaryFormatError, match=rf"instruction {i} \(syn\)\.acc_addr: SRAM bytes \[262136, \d+\) "
                                                r"outside the 262144-byte SRAM"):
        bf.write_program(dataclasses.replace(image, instructions=bytes(code)))


def test_disassembler_and_docs_name_every_enum_value():
    text = disassemble(_image())
    assert "kind=CONV" in text
    tables = render_isa_tables()
    for spec_fields in [isa.LAYER_FIELDS, isa.IO_FIELDS, *(spec.fields for spec in isa.INSTRUCTIONS)]:
        for field in isa.fields_of_enums(spec_fields):
            line = next(row for row in tables.splitlines() if row.startswith(f"* `{field.enum_type.__name__}`"))
            assert all(f"`{member.name}` = {int(member)}" in line for member in field.enum_type), line
