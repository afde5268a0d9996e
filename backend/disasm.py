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
isa.LAYER_FIELDS plus the small field-name -> enum map below.
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

# Field names whose values are enums / flag sets, shown by name.
LAYER_ENUMS = {
    "kind": isa.LayerKind, "in_format": isa.Format, "in2_format": isa.Format, "out_format": isa.Format,
    "leak": isa.LeakForm, "reset": isa.ResetMode, "lif_flags": isa.LifFlags,
}
INSTRUCTION_FLAGS = {
    isa.Opcode.SYN: {"flags": isa.SynFlags},
    isa.Opcode.DMA_LOAD_BM: {"flags": isa.DmaFlags},
    isa.Opcode.DMA_STORE_BM: {"flags": isa.DmaFlags},
}


def _enum_text(enum_type, value: int) -> str:
    if issubclass(enum_type, isa.enum.IntFlag):
        if value == 0:
            return "0"
        names = [m.name for m in enum_type if m.value & value]
        rest = value & ~sum(m.value for m in enum_type)
        return "|".join(names + ([hex(rest)] if rest else []))
    try:
        return enum_type(value).name
    except ValueError:
        return f"?{value}"


def _field_text(name: str, value: int) -> str:
    if name.endswith("_addr"):
        return "-" if value == isa.NO_ADDRESS else f"0x{value:x}"
    return str(value)


def format_instruction(index: int, spec: isa.InstructionSpec, fields: dict[str, int]) -> str:
    enums = INSTRUCTION_FLAGS.get(spec.opcode, {})
    parts = []
    for f in spec.fields:
        value = fields[f.name]
        text = _enum_text(enums[f.name], value) if f.name in enums else _field_text(f.name, value)
        parts.append(f"{f.name}={text}")
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
            f"T={d.timesteps} B={d.batch} C={d.channels}/{d.channels_stored} H={d.height} W={d.width}")
    out.append("")
    out.append("layers:")
    for i, raw in enumerate(image.layers):
        fields = isa.decode_layer(raw, i)
        name = image.layer_names[i] if i < len(image.layer_names) else "?"
        parts = []
        for f in isa.LAYER_FIELDS:
            value = fields[f.name]
            if f.name in ("kind",) or value != 0:
                text = _enum_text(LAYER_ENUMS[f.name], value) if f.name in LAYER_ENUMS else str(value)
                parts.append(f"{f.name}={text}")
        out.append(f"  L{i:<3d} {name!r}: {' '.join(parts)}")
    out.append("")
    out.append("code:")
    raw = image.instructions
    for i in range(len(raw) // isa.INSTRUCTION_BYTES):
        spec, fields = isa.decode_instruction(raw[i * isa.INSTRUCTION_BYTES:(i + 1) * isa.INSTRUCTION_BYTES], i)
        out.append(format_instruction(i, spec, fields))
    return "\n".join(out) + "\n"
