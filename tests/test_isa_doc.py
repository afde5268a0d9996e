"""docs/isa.md must agree with the ISA table in backend/isa.py."""

from __future__ import annotations

from pathlib import Path

from snnc.backend import isa
from snnc.backend.isa_doc import _TYPE_NAMES, generated_block, render_isa_tables

DOC = Path(__file__).resolve().parents[1] / "docs" / "isa.md"


def test_generated_tables_are_up_to_date():
    block = generated_block(DOC.read_text(encoding="utf-8"))
    assert block == render_isa_tables(), "docs/isa.md is stale: run `python -m snnc.backend.isa_doc docs/isa.md`"


def test_every_opcode_field_and_width_is_documented():
    doc = DOC.read_text(encoding="utf-8")
    for spec in isa.INSTRUCTIONS:
        assert f"0x{int(spec.opcode):02x} {spec.opcode.name}" in doc
        assert f"`{spec.mnemonic}`" in doc
        section = doc.split(f"#### `{spec.mnemonic}`")[1].split("####")[0]
        for field in spec.fields:
            assert f"| `{field.name}` | {_TYPE_NAMES[field.fmt]} | {field.size} |" in section, (spec.mnemonic, field.name)
    for field in isa.LAYER_FIELDS:
        assert f"| `{field.name}` | {_TYPE_NAMES[field.fmt]} | {field.size} |" in doc, field.name
    for name in isa.PARAM_ARRAYS:
        assert name in doc.split("## Parameter block")[1]
