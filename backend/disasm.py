"""Readable listing of a ProgramImage, derived generically from the ISA table.

CONTRACT: `disassemble(image) -> str` (deterministic text) with
  * a header: container format version, model name, hardware summary, DRAM size;
  * the sections with their stored sizes, encodings, decoded sizes and CRC32s
    (as write_program lays them out);
  * the I/O descriptors;
  * the layer descriptors, each listing only fields that differ from 0 (enum
    fields by name);
  * one line per instruction: `IIII  mnemonic  field=value ...`, fields in ISA
    table order, addresses in hex, NO_ADDRESS as `-`, flags by name.
No per-opcode formatting code: everything comes from isa.INSTRUCTIONS and
isa.LAYER_FIELDS (enum and flag fields by the isa.Field's `enum_type`).
Imports only the standard library and snnc.backend.
"""

from __future__ import annotations

import struct
import zlib

from snnc.backend import isa
from snnc.backend.binformat import (
    FORMAT_MAJOR, FORMAT_MINOR, HEADER_STRUCT, SECTION_NAMES, SECTION_STRUCT, ProgramImage, SectionEncoding,
    decode_section, encoding_name, write_program,
)
from snnc.backend.errors import HwConfigError
from snnc.backend.hwconfig import HwConfig

def _enum_text(enum_type, value: int) -> str:
    if issubclass(enum_type, isa.enum.IntFlag):
        if value == 0:
            return "0"
        names, rest = isa.flag_names(enum_type, value)
        return "|".join(names + ([hex(rest)] if rest else []))
    try:
        return enum_type(value).name
    except ValueError:
        return f"?{value}"


def _field_text(field: isa.Field, value: int) -> str:
    if field.enum_type is not None:
        return _enum_text(field.enum_type, value)
    if field.name.endswith("_addr"):
        return "-" if value == isa.NO_ADDRESS else f"0x{value:x}"
    return str(value)


def format_instruction(index: int, spec: isa.InstructionSpec, fields: dict[str, int]) -> str:
    parts = [f"{f.name}={_field_text(f, fields[f.name])}" for f in spec.fields]
    return f"{index:04d}  {spec.mnemonic:<9s} {' '.join(parts)}".rstrip()


def _section_rows(image: ProgramImage) -> list[tuple[str, int, int, str, int, int]]:
    """(name, offset, stored size, encoding, decoded size, CRC32) per section."""
    data = write_program(image)
    n = struct.unpack_from("<H", data, 12)[0]
    rows = []
    for i in range(n):
        kind, encoding, crc, offset, size = SECTION_STRUCT.unpack_from(data, HEADER_STRUCT.size + i * SECTION_STRUCT.size)
        name, encoding = SECTION_NAMES[kind], SectionEncoding(encoding)
        decoded = len(decode_section(name, encoding, data[offset:offset + size]))
        rows.append((name, offset, size, encoding_name(encoding), decoded, crc))
    return rows


def disassemble(image: ProgramImage) -> str:
    out: list[str] = []
    try:
        hw_summary = HwConfig.from_toml(image.hw_toml, source="hw_config").summary()
    except HwConfigError as exc:
        hw_summary = f"(invalid: {exc})"
    out.append(f"; snnc program, format {FORMAT_MAJOR}.{FORMAT_MINOR}")
    out.append(f"; model     {image.model_name or '(unnamed)'}")
    out.append(f"; hardware  {hw_summary}")
    out.append(f"; dram_size {image.dram_size} bytes, constants {len(image.constants)} bytes "
               f"(crc32 {zlib.crc32(image.constants):08x})")
    out.append("")
    out.append("sections:")
    for name, offset, size, encoding, decoded, crc in _section_rows(image):
        out.append(f"  {name:<13s} offset={offset:<8d} size={size:<8d} encoding={encoding:<12s} "
                   f"decoded={decoded:<8d} crc32={crc:08x}")
    out.append("")
    out.append("io:")
    for d in image.io:
        out.append(
            f"  {'output' if d.is_output else 'input ':<6s} {d.name!r} shape={list(d.onnx_shape)} "
            f"dram=0x{d.dram_addr:x} format={isa.Format(d.format).name} frac={d.frac_bits} "
            f"T={d.timesteps} B={d.batch} C={d.channels}/{d.channels_stored} H={d.height} W={d.width}"
            + ("" if (d.t0, d.nt) == (0, d.timesteps) else f" steps={d.t0}..{d.t0 + d.nt - 1}"))
    out.append("")
    out.append("layers:")
    for i, raw in enumerate(image.layers):
        fields = isa.decode_layer(raw, i)
        name = image.layer_names[i] if i < len(image.layer_names) else "?"
        parts = []
        for f in isa.LAYER_FIELDS:
            value = fields[f.name]
            if f.name == "kind" or value != 0:
                parts.append(f"{f.name}={_field_text(f, value)}")
        out.append(f"  L{i:<3d} {name!r}: {' '.join(parts)}")
    out.append("")
    out.append("code:")
    raw = image.instructions
    for i in range(len(raw) // isa.INSTRUCTION_BYTES):
        spec, fields = isa.decode_instruction(raw[i * isa.INSTRUCTION_BYTES:(i + 1) * isa.INSTRUCTION_BYTES], i)
        out.append(format_instruction(i, spec, fields))
    return "\n".join(out) + "\n"
