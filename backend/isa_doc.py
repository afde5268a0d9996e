"""Generates the reference tables of docs/isa.md from backend/isa.py and hwconfig.py.

CONTRACT:
  * `render_isa_tables() -> str`: Markdown for every opcode (value, mnemonic,
    description) and every field (name, struct type, width in bytes, byte
    offset in the 48-byte instruction, meaning), the layer and I/O descriptor
    fields, every enum and flag type a field declares (isa.Field.enum_type) with
    its values and the fields using it, and the hardware-config keys with
    defaults and sources.
  * docs/isa.md holds that text verbatim between BEGIN_MARK and END_MARK;
    tests/test_isa_doc.py fails when they disagree.
  * `python -m snnc.backend.isa_doc [path]` rewrites the generated block of the
    doc in place (default docs/isa.md relative to the current directory).
Imports only the standard library and snnc.backend.
"""

from __future__ import annotations

import sys
from pathlib import Path

from snnc.backend import isa
from snnc.backend.binformat import LIMITS
from snnc.backend.hwconfig import describe_keys

BEGIN_MARK = "<!-- BEGIN GENERATED ISA TABLES (python -m snnc.backend.isa_doc) -->"
END_MARK = "<!-- END GENERATED ISA TABLES -->"

_TYPE_NAMES = {"B": "u8", "H": "u16", "I": "u32", "Q": "u64", "b": "i8", "h": "i16", "i": "i32"}


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _meaning(field: isa.Field) -> str:
    """The field's doc; an enum or flag field names its type (listed under "Enumerations")."""
    if field.enum_type is not None and field.enum_type.__name__ not in field.doc:
        return f"{field.doc} ({field.enum_type.__name__})"
    return field.doc


def _field_table(fields, first_offset: int) -> list[str]:
    """Markdown rows for packed little-endian fields, with their byte offsets."""
    rows = ["| field | type | width (bytes) | offset | meaning |", "|---|---|---|---|---|"]
    offset = first_offset
    for f in fields:
        rows.append(f"| `{f.name}` | {_TYPE_NAMES[f.fmt]} | {f.size} | {offset} | {_escape(_meaning(f))} |")
        offset += f.size
    return rows + [""]


def _enum_users() -> dict[type, list[str]]:
    """Every enum or flag type of a field, in table order, with the fields that hold it."""
    users: dict[type, list[str]] = {}
    tables = [("layer", isa.LAYER_FIELDS)] + [(spec.mnemonic, spec.fields) for spec in isa.INSTRUCTIONS] \
        + [("io", isa.IO_FIELDS)]
    for where, fields in tables:
        for f in isa.fields_of_enums(fields):
            name = f"{where} `{f.name}`"
            if name not in users.setdefault(f.enum_type, []):
                users[f.enum_type].append(name)
    return users


def render_isa_tables() -> str:
    out: list[str] = []
    out.append(f"### Opcodes\n\nEvery instruction is {isa.INSTRUCTION_BYTES} bytes: opcode (u8) at byte 0, "
               "then the fields below packed little-endian without alignment, then zero padding.\n")
    out.append("| opcode | mnemonic | bytes used | description |")
    out.append("|---|---|---|---|")
    for spec in isa.INSTRUCTIONS:
        out.append(f"| 0x{int(spec.opcode):02x} {spec.opcode.name} | `{spec.mnemonic}` | {spec.struct.size} "
                   f"| {_escape(spec.doc)} |")
    out.append("")
    for spec in isa.INSTRUCTIONS:
        out.append(f"#### `{spec.mnemonic}` (0x{int(spec.opcode):02x} {spec.opcode.name})\n")
        out.append(_escape(spec.doc) + "\n")
        if spec.layer_kinds:
            kinds = " or ".join(f"`{kind.name}`" for kind in spec.layer_kinds)
            out.append(f"Runs on a layer of kind {kinds} (its `layer` field).\n")
        if not spec.fields:
            out.append("No fields.\n")
            continue
        out.extend(_field_table(spec.fields, first_offset=1))  # byte 0 is the opcode
    out.append(f"### Layer descriptor fields\n\nEach descriptor is {isa.LAYER_BYTES} bytes, fields packed "
               "little-endian in this order.\n")
    out.extend(_field_table(isa.LAYER_FIELDS, first_offset=0))
    out.append(f"### I/O descriptor fields\n\nSection `io`: each descriptor is its name (string), a u8 rank and "
               f"rank x u32 `onnx_shape`, then these {isa.IO_STRUCT.size} bytes, packed little-endian.\n")
    out.extend(_field_table(isa.IO_FIELDS, first_offset=0))
    out.append("### Enumerations\n\nEvery enum and flag field's values (a flag field holds a set of flags, "
               "OR-ed; other bits are invalid).\n")
    for enum_type, users in _enum_users().items():
        values = ", ".join(f"`{m.name}` = {int(m.value)}" for m in enum_type)
        kind = "flags" if issubclass(enum_type, isa.enum.IntFlag) else "enum"
        out.append(f"* `{enum_type.__name__}` ({kind}; {', '.join(users)}): {values}")
    out.append("")
    out.append("### Limits\n\nWhat a program may declare (`backend/binformat.py` LIMITS; the reader and the "
               "simulator refuse anything else with a one-line error naming the field). Every allocation and loop "
               "of the simulator is bounded by these and the hardware config.\n")
    out.append("| what | rule |")
    out.append("|---|---|")
    for limit in LIMITS:
        out.append(f"| {limit.what} | {_escape(limit.rule)} |")
    out.append("")
    out.append("### Hardware configuration keys (defaults = preset `loas`)\n")
    out.append("| key | default | source |")
    out.append("|---|---|---|")
    for section, key, default, source in describe_keys():
        out.append(f"| `{section}.{key}` | {default!r} | {_escape(source)} |")
    return "\n".join(out) + "\n"


def splice(doc_text: str, tables: str) -> str:
    """Replace the generated block of `doc_text` with `tables`."""
    start = doc_text.index(BEGIN_MARK) + len(BEGIN_MARK)
    end = doc_text.index(END_MARK)
    return doc_text[:start] + "\n" + tables + doc_text[end:]


def generated_block(doc_text: str) -> str:
    start = doc_text.index(BEGIN_MARK) + len(BEGIN_MARK)
    return doc_text[start:doc_text.index(END_MARK)].lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0] if argv else "docs/isa.md")
    path.write_text(splice(path.read_text(encoding="utf-8"), render_isa_tables()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
