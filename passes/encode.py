"""Encoder: an `accel.program` -> `binformat.ProgramImage` -> prog.bin bytes.

The last stage of the pipeline (after the accel-level passes). It lives in passes/,
not backend/, because it reads the accel dialect: backend/ is the format contract
that dialects/ and runtime/ import, so it imports neither (docs/architecture.md).

CONTRACT
  `encode(module) -> ProgramImage`: `module` holds exactly one verified
  `accel.program` (as produced by convert-loops-to-accel). One-to-one:
    constants     the DRAM image from address 0 to the end of the last
                  `accel.const` (gaps zero-filled)
    layers        `isa.encode_layer` of each `accel.layer`, in IR order; an
                  instruction's `layer` symbol becomes that order's index
    layer_names   each layer's `source` (the ONNX node name)
    instructions  `isa.encode_instruction` of each instruction op in IR order,
                  then one HALT (the IR never contains HALT)
    io            one `binformat.IODesc` per `accel.io`, in IR order
    hw_toml, dram_size, model_name   from the program's properties
  Deterministic: the same IR gives the same image.
  `encode_to_bytes(module) -> bytes` = `binformat.write_program(encode(module))`.
"""

from __future__ import annotations

import functools
import operator
import struct

from xdsl.dialects.builtin import ModuleOp

from snnc.backend import binformat, isa
from snnc.backend.errors import CompileError
from snnc.dialects import accel


def find_program(module: ModuleOp | accel.ProgramOp) -> accel.ProgramOp:
    if isinstance(module, accel.ProgramOp):
        return module
    programs = [op for op in module.ops if isinstance(op, accel.ProgramOp)]
    if len(programs) != 1:
        raise CompileError(f"encoder: expected exactly one accel.program in the module, found {len(programs)}")
    return programs[0]


def constants_image(program: accel.ProgramOp, constants: list[accel.ConstOp] | None = None) -> bytes:
    """The constants in address order, gaps zero-filled: one join, no image-sized
    scratch copies (the weights are tens of MB). `constants`: program.constants(), when
    the caller has them."""
    parts: list[bytes] = []
    end = 0
    for c in sorted(program.constants() if constants is None else constants, key=lambda c: c.dram_addr.data):
        start = c.dram_addr.data
        if start < end:
            raise CompileError(f"encoder: accel.const @{c.sym_name.data} overlaps the constant before it")
        parts += [bytes(start - end), c.payload]
        end = start + len(c.payload)
    return b"".join(parts)


def instruction_values(op: accel.InstructionOp, layer_index: dict[str, int]) -> list[int]:
    """The ISA field values of an instruction op in its table entry's order (the layer
    symbol resolved to its index)."""
    has_layer, names = _value_plan(type(op))
    props = op.properties
    values = list(map(_DATA, map(props.__getitem__, names)))
    if has_layer:  # the first field (isa._TILE)
        values.insert(0, layer_index[props["layer"].root_reference.data])
    return values


def instruction_fields(op: accel.InstructionOp, layer_index: dict[str, int]) -> dict[str, int]:
    """`instruction_values` by field name."""
    return dict(zip(_field_order(type(op)), instruction_values(op, layer_index)))


def _pack_instructions(ops: list[accel.InstructionOp], layer_index: dict[str, int]) -> bytearray:
    """The instruction stream, HALT appended: each op's fields packed in its table entry's
    order (isa.InstructionSpec.struct) straight from its properties. The program has been
    verified (every field present, an IntAttr in range), so isa.encode_instruction's
    argument checks are not repeated per instruction; a value the struct still refuses is
    a CompileError naming the instruction."""
    size = isa.INSTRUCTION_BYTES
    out = bytearray(size * (len(ops) + 1))  # zero padding after each instruction's fields
    for i, op in enumerate(ops):
        spec = op.SPEC
        try:
            spec.struct.pack_into(out, i * size, int(spec.opcode), *instruction_values(op, layer_index))
        except (struct.error, KeyError) as exc:
            raise CompileError(f"encoder: instruction {i} ({op.name}): {exc}") from None
    out[len(ops) * size:] = isa.encode_instruction(isa.Opcode.HALT)
    return out


_DATA = operator.attrgetter("data")


@functools.lru_cache(maxsize=None)
def _value_plan(op_class: type[accel.InstructionOp]) -> tuple[bool, tuple[str, ...]]:
    """(whether the op has a `layer` field, which is then its first; its other fields in order)."""
    order = _field_order(op_class)
    assert "layer" not in order or order[0] == "layer", op_class.name
    return "layer" in order, tuple(name for name in order if name != "layer")


@functools.lru_cache(maxsize=None)
def _field_order(op_class: type[accel.InstructionOp]) -> tuple[str, ...]:
    return tuple(f.name for f in op_class.SPEC.fields)


def encode(module: ModuleOp | accel.ProgramOp, *, verify: bool = True) -> binformat.ProgramImage:
    """The program image; `verify=False` when the caller has just verified the module
    (the compile pipeline verifies after every pass)."""
    program = find_program(module)
    if verify:
        program.verify()
    parts = program.parts()
    layers = parts.layers
    layer_index = {layer.symbol: i for i, layer in enumerate(layers)}  # program.layer_index()
    instructions = _pack_instructions(parts.instructions, layer_index)
    io = [
        binformat.IODesc(
            name=op.io_name.data, is_output=bool(op.is_output.data), onnx_shape=op.shape,
            **{k: (isa.Format(v) if k == "format" else v) for k, v in op.field_values().items()},
        )
        for op in parts.io_ops
    ]
    return binformat.ProgramImage(
        hw_toml=program.hw_toml.data,
        dram_size=program.dram_size.data,
        constants=constants_image(program, parts.constants),
        layers=[isa.encode_layer(**layer.field_values()) for layer in layers],
        layer_names=[layer.source.data for layer in layers],
        instructions=bytes(instructions),
        io=io,
        model_name=program.model_name.data,
    )


def encode_to_bytes(module: ModuleOp | accel.ProgramOp) -> bytes:
    """prog.bin bytes (needs `binformat.write_program`)."""
    return binformat.write_program(encode(module))
