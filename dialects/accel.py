"""The `accel` dialect: one program for the LoAS-style accelerator, at ISA level.

Level: after `convert-snn-to-accel`, before the encoder. Everything is explicit:
DRAM addresses of constants and tensors, SRAM addresses of every tile buffer,
tile bounds, timestep lane groups and barriers. The encoder
(`snnc.backend.encoder`) turns it into prog.bin one-to-one.

Structure (one `accel.program` per module; its single block, in this order):
    accel.program {model_name, hw_toml, dram_size, sram_size, timesteps} {
      accel.const @name dram_addr=0x0 dense<"0x..."> : tensor<Nxi8>   DRAM constants image
      accel.io "onnx_name" input|output shape=[T, B, ...] dram_addr=... format=... ...
      accel.layer @name "onnx_node" kind=conv ... (all isa.LAYER_FIELDS)
      accel.dma_load dram_addr=... sram_addr=... ...        instructions, program order
      accel.syn @layer batch=0 t0=0 nt=4 ...
      ...
    }

Instruction ops are generated from `snnc.backend.isa.INSTRUCTIONS` (NOP and
HALT excepted: the encoder appends HALT), so their properties are named exactly
like the ISA fields. The `layer` field is a symbol reference to an
`accel.layer`; the encoder replaces it by the descriptor's index (the order of
`accel.layer` ops). Every other field is an integer; `none` stands for
`isa.NO_ADDRESS`. Layer descriptor ops likewise carry every `isa.LAYER_FIELDS`
entry as a property of the same name (enum fields print by name).

`accel.program` verifies the whole program: unique symbols, valid layer
references, tiles inside the layer's output geometry and timesteps, spike
tiles whole bytes (chs and ch0 multiples of 8), every SRAM operand range
(computed by `sram_operands` from the layer geometry and the isa.py tile
layouts) inside [0, sram_size), DMA ranges inside DRAM and SRAM, constants
non-overlapping and inside DRAM.
"""

from __future__ import annotations

import enum
import functools
import struct
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import numpy as np
from xdsl.dialects.builtin import (
    BytesAttr,
    DenseIntOrFPElementsAttr,
    FloatData,
    IntAttr,
    StringAttr,
    SymbolRefAttr,
    TensorType,
    i8,
)
from xdsl.ir import Attribute, Block, Dialect, Region
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    opt_prop_def,
    prop_def,
    region_def,
    traits_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import NoTerminator
from xdsl.utils.exceptions import VerifyException

from snnc.backend import isa
from snnc.backend.isa import Format, LayerKind, LeakForm, Opcode, ResetMode

# --------------------------------------------------------------------------------------
# Field syntax shared by every op: `name=value` pairs in a fixed order
# --------------------------------------------------------------------------------------

# Layer-descriptor fields whose values print as enum member names (lower case).
_ENUM_FIELDS: dict[str, type[enum.IntEnum]] = {
    "kind": LayerKind,
    "in_format": Format,
    "in2_format": Format,
    "out_format": Format,
    "leak": LeakForm,
    "reset": ResetMode,
}
# Fields printed in hexadecimal (addresses and byte counts are easier to read so).
_HEX_SUFFIXES = ("_addr",)


@functools.lru_cache(maxsize=None)
def _struct_range(fmt: str) -> tuple[int, int]:
    bits = 8 * struct.calcsize("<" + fmt)
    if fmt.islower():
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _print_int_field(printer: Printer, name: str, value: int) -> None:
    if name in _ENUM_FIELDS:
        printer.print_string(f"{name}={_ENUM_FIELDS[name](value).name.lower()}")
    elif name.endswith("_addr") and value == isa.NO_ADDRESS:
        printer.print_string(f"{name}=none")
    elif name.endswith(_HEX_SUFFIXES):
        printer.print_string(f"{name}={value:#x}")
    else:
        printer.print_string(f"{name}={value}")


def _parse_int_field(parser: Parser, name: str, keyword_parsed: bool = False) -> int:
    if not keyword_parsed:
        parser.parse_keyword(name, f" (field '{name}' expected here)")
    parser.parse_punctuation("=")
    if name in _ENUM_FIELDS:
        enum_type = _ENUM_FIELDS[name]
        value = parser.parse_optional_integer(allow_boolean=False, allow_negative=False)
        if value is not None:
            return value
        word = parser.parse_identifier(f" ({name}: a {enum_type.__name__} name)")
        try:
            return int(enum_type[word.upper()])
        except KeyError:
            parser.raise_error(f"{name}: unknown {enum_type.__name__} '{word}'")
    if name.endswith("_addr") and parser.parse_optional_keyword("none") is not None:
        return isa.NO_ADDRESS
    return parser.parse_integer(allow_boolean=False, allow_negative=True)


def _check_field_range(op_name: str, field: isa.Field, value: int) -> None:
    lo, hi = _struct_range(field.fmt)
    if not lo <= value <= hi:
        raise VerifyException(f"{op_name}: {field.name} = {value} does not fit '{field.fmt}' [{lo}, {hi}]")


@functools.lru_cache(maxsize=1 << 16)
def _int_attr(value: int) -> IntAttr:
    """A shared IntAttr (attributes are immutable): a program has ~20 integer fields per
    instruction, mostly repeating values, and building an IntAttr is not free."""
    return IntAttr(value)


@functools.lru_cache(maxsize=1 << 12)
def _symbol_ref(symbol: str) -> SymbolRefAttr:
    return SymbolRefAttr(symbol)


@functools.lru_cache(maxsize=None)
def _int_field_names(op_class: type[_FieldsOp]) -> tuple[str, ...]:
    return tuple(f.name for f, _lo, _hi in _int_fields(op_class))


@functools.lru_cache(maxsize=None)
def _int_fields(op_class: type[_FieldsOp]) -> tuple[tuple[isa.Field, int, int], ...]:
    """(field, lo, hi) of every integer field of an op class: FIELDS without the `layer` symbol."""
    return tuple((f, *_struct_range(f.fmt)) for f in op_class.FIELDS if f.name != "layer")


class _FieldsOp(IRDLOperation):
    """An op whose integer properties are the fields of one ISA table entry."""

    FIELDS: ClassVar[tuple[isa.Field, ...]] = ()

    def field_values(self) -> dict[str, int]:
        """The integer fields (a `layer` symbol is not included)."""
        props = self.properties
        # every integer field is an IntAttr: create_with and parse build them all, and
        # the verifier checks that before it reads them
        return {name: props[name].data for name in _int_field_names(type(self))}

    def verify_(self) -> None:
        props = self.properties
        for f, lo, hi in _int_fields(type(self)):
            # IRDL has checked that every field is present and an IntAttr before this runs
            if not lo <= props[f.name].data <= hi:
                _check_field_range(self.name, f, props[f.name].data)  # raises, naming the field


# --------------------------------------------------------------------------------------
# Instruction ops (generated from isa.INSTRUCTIONS)
# --------------------------------------------------------------------------------------


class InstructionOp(_FieldsOp):
    """Base of every instruction op; `SPEC` is its isa.InstructionSpec."""

    SPEC: ClassVar[isa.InstructionSpec]

    @property
    def opcode(self) -> Opcode:
        return self.SPEC.opcode

    @property
    def layer_symbol(self) -> str | None:
        ref = self.properties.get("layer")
        return ref.root_reference.data if isinstance(ref, SymbolRefAttr) else None

    @classmethod
    def create_with(cls, layer: str | None = None, **fields: int) -> InstructionOp:
        """Build from ISA field values; `layer` is the layer descriptor's symbol."""
        props: dict[str, Attribute] = {}
        for f in cls.FIELDS:
            if f.name == "layer":
                if layer is None:
                    raise ValueError(f"{cls.name}: a layer symbol is required")
                props["layer"] = _symbol_ref(layer)
            else:
                if f.name not in fields and not f.optional:
                    raise ValueError(f"{cls.name}: missing field {f.name}")
                props[f.name] = _int_attr(int(fields.pop(f.name, 0)))
        if fields:
            raise ValueError(f"{cls.name}: unknown field(s) {sorted(fields)}")
        return cls.create(properties=props)

    def print(self, printer: Printer) -> None:
        for f in self.FIELDS:
            if f.optional and not self.properties[f.name].data:
                continue  # an optional field at 0 is left out of the text
            printer.print_string(" ")
            if f.name == "layer":
                printer.print_symbol_name(self.layer_symbol)
            else:
                _print_int_field(printer, f.name, self.properties[f.name].data)
        if self.attributes:
            printer.print_string(" ")
            printer.print_attr_dict(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> InstructionOp:
        props: dict[str, Attribute] = {}
        for f in cls.FIELDS:
            if f.name == "layer":
                props["layer"] = SymbolRefAttr(parser.parse_symbol_name())
            elif f.optional and parser.parse_optional_keyword(f.name) is None:
                props[f.name] = IntAttr(0)
            else:
                props[f.name] = IntAttr(_parse_int_field(parser, f.name, keyword_parsed=f.optional))
        attrs = parser.parse_optional_attr_dict()
        return cls.create(properties=props, attributes=attrs)


def _instruction_op(class_name: str, opcode: Opcode) -> type[InstructionOp]:
    spec = isa.INSTRUCTION_BY_OPCODE[opcode]
    namespace: dict[str, object] = {
        "__module__": __name__,
        "__qualname__": class_name,
        "__doc__": f"`{spec.mnemonic}` (opcode 0x{int(opcode):02x}): {spec.doc}",
        "name": "accel." + spec.mnemonic.replace(".", "_"),
        "SPEC": spec,
        "FIELDS": spec.fields,
        "__annotations__": {"SPEC": ClassVar[isa.InstructionSpec], "FIELDS": ClassVar[tuple[isa.Field, ...]]},
    }
    for f in spec.fields:
        namespace[f.name] = prop_def(SymbolRefAttr if f.name == "layer" else IntAttr)
    return irdl_op_definition(type(class_name, (InstructionOp,), namespace))


DmaLoadOp = _instruction_op("DmaLoadOp", Opcode.DMA_LOAD)
DmaStoreOp = _instruction_op("DmaStoreOp", Opcode.DMA_STORE)
DmaLoadBmOp = _instruction_op("DmaLoadBmOp", Opcode.DMA_LOAD_BM)
DmaStoreBmOp = _instruction_op("DmaStoreBmOp", Opcode.DMA_STORE_BM)
MoveOp = _instruction_op("MoveOp", Opcode.MOVE)
SynOp = _instruction_op("SynOp", Opcode.SYN)
LifOp = _instruction_op("LifOp", Opcode.LIF)
PackOp = _instruction_op("PackOp", Opcode.PACK)
PoolOp = _instruction_op("PoolOp", Opcode.POOL)
AddOp = _instruction_op("AddOp", Opcode.ADD)
BarrierOp = _instruction_op("BarrierOp", Opcode.BARRIER)

INSTRUCTION_OPS: tuple[type[InstructionOp], ...] = (
    DmaLoadOp, DmaStoreOp, DmaLoadBmOp, DmaStoreBmOp, MoveOp, SynOp, LifOp, PackOp, PoolOp, AddOp, BarrierOp,
)
INSTRUCTION_OP_BY_OPCODE: dict[Opcode, type[InstructionOp]] = {
    op.SPEC.opcode: op for op in INSTRUCTION_OPS
}

# --------------------------------------------------------------------------------------
# Module-level ops: layer descriptors, DRAM constants, I/O tensors
# --------------------------------------------------------------------------------------


def _layer_namespace() -> dict[str, object]:
    return {f.name: prop_def(IntAttr) for f in isa.LAYER_FIELDS}


@irdl_op_definition
class LayerOp(_FieldsOp):
    """A layer descriptor (isa.LAYER_FIELDS), named by a symbol.

    `source` is the ONNX node name (reports are keyed by it); `inexact` holds
    the reason when quantisation of this layer is not exact.
    """

    name = "accel.layer"
    FIELDS: ClassVar[tuple[isa.Field, ...]] = isa.LAYER_FIELDS
    sym_name = prop_def(StringAttr)
    source = prop_def(StringAttr)
    inexact = opt_prop_def(StringAttr)
    locals().update(_layer_namespace())

    @classmethod
    def create_with(cls, sym_name: str, source: str, inexact: str | None = None, **fields: int) -> LayerOp:
        props: dict[str, Attribute] = {"sym_name": StringAttr(sym_name), "source": StringAttr(source)}
        if inexact:
            props["inexact"] = StringAttr(inexact)
        for f in isa.LAYER_FIELDS:
            props[f.name] = _int_attr(int(fields.pop(f.name, 0)))
        if fields:
            raise ValueError(f"accel.layer: unknown field(s) {sorted(fields)}")
        return cls.create(properties=props)

    @property
    def symbol(self) -> str:
        return self.sym_name.data

    def get(self, field_name: str) -> int:
        return self.properties[field_name].data

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_symbol_name(self.sym_name.data)
        printer.print_string(" ")
        printer.print_string_literal(self.source.data)
        for f in self.FIELDS:
            printer.print_string(" ")
            _print_int_field(printer, f.name, self.properties[f.name].data)
        if self.inexact is not None:
            printer.print_string(" inexact ")
            printer.print_string_literal(self.inexact.data)

    @classmethod
    def parse(cls, parser: Parser) -> LayerOp:
        props: dict[str, Attribute] = {
            "sym_name": parser.parse_symbol_name(),
            "source": StringAttr(parser.parse_str_literal(" (the ONNX node name)")),
        }
        for f in cls.FIELDS:
            props[f.name] = IntAttr(_parse_int_field(parser, f.name))
        if parser.parse_optional_keyword("inexact") is not None:
            props["inexact"] = StringAttr(parser.parse_str_literal())
        return cls.create(properties=props)


def bytes_attr(data: bytes) -> DenseIntOrFPElementsAttr:
    """Raw bytes as a dense i8 tensor attribute, built from bytes (prints as hex)."""
    return DenseIntOrFPElementsAttr(TensorType(i8, [len(data)]), BytesAttr(bytes(data)))


@irdl_op_definition
class ConstOp(IRDLOperation):
    """Bytes of the DRAM constants image at `dram_addr` (weights, parameter blocks)."""

    name = "accel.const"
    sym_name = prop_def(StringAttr)
    dram_addr = prop_def(IntAttr)
    data = prop_def(DenseIntOrFPElementsAttr)

    @classmethod
    def create_with(cls, sym_name: str, dram_addr: int, data: bytes) -> ConstOp:
        return cls.create(properties={
            "sym_name": StringAttr(sym_name), "dram_addr": IntAttr(dram_addr), "data": bytes_attr(data),
        })

    @property
    def payload(self) -> bytes:
        return self.data.data.data

    def verify_(self) -> None:
        ttype = self.data.type
        if not (isinstance(ttype, TensorType) and ttype.element_type == i8 and len(ttype.get_shape()) == 1):
            raise VerifyException(f"accel.const @{self.sym_name.data}: data must be a 1-D tensor of i8")
        if self.dram_addr.data < 0:
            raise VerifyException(f"accel.const @{self.sym_name.data}: negative dram_addr")

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_symbol_name(self.sym_name.data)
        printer.print_string(f" dram_addr={self.dram_addr.data:#x} ")
        printer.print_attribute(self.data)

    @classmethod
    def parse(cls, parser: Parser) -> ConstOp:
        sym = parser.parse_symbol_name()
        addr = _parse_int_field(parser, "dram_addr")
        data = parser.parse_attribute()
        if not isinstance(data, DenseIntOrFPElementsAttr):
            parser.raise_error("accel.const: expected a dense<...> : tensor<Nxi8> attribute")
        return cls.create(properties={"sym_name": sym, "dram_addr": IntAttr(addr), "data": data})


# The integer fields of accel.io, in binformat.IODesc order.
IO_INT_FIELDS = (
    "dram_addr", "format", "frac_bits", "timesteps", "batch",
    "channels", "channels_stored", "height", "width",
)


@irdl_op_definition
class IoOp(IRDLOperation):
    """One ONNX graph input or output tensor in DRAM (binformat.IODesc).

    `error_bound` (outputs of multi-bit values only; not in the binary): the most the
    quantisation can move a stored value from the float reference while the spikes
    feeding it agree (passes/numerics.py); `snnc verify` compares values within it.
    """

    name = "accel.io"
    io_name = prop_def(StringAttr)
    is_output = prop_def(IntAttr)
    onnx_shape = prop_def(Attribute)  # DenseArrayBase of i64
    dram_addr = prop_def(IntAttr)
    format = prop_def(IntAttr)
    frac_bits = prop_def(IntAttr)
    timesteps = prop_def(IntAttr)
    batch = prop_def(IntAttr)
    channels = prop_def(IntAttr)
    channels_stored = prop_def(IntAttr)
    height = prop_def(IntAttr)
    width = prop_def(IntAttr)
    error_bound = opt_prop_def(FloatData)

    @classmethod
    def create_with(cls, io_name: str, is_output: bool, onnx_shape: Sequence[int],
                    error_bound: float | None = None, **fields: int) -> IoOp:
        from snnc.dialects.snn import int_array

        props: dict[str, Attribute] = {
            "io_name": StringAttr(io_name), "is_output": IntAttr(int(bool(is_output))),
            "onnx_shape": int_array(onnx_shape),
        }
        if error_bound is not None:
            props["error_bound"] = FloatData(float(error_bound))
        for name in IO_INT_FIELDS:
            props[name] = IntAttr(int(fields.pop(name)))
        if fields:
            raise ValueError(f"accel.io: unknown field(s) {sorted(fields)}")
        return cls.create(properties=props)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.onnx_shape.get_values())

    def field_values(self) -> dict[str, int]:
        return {name: self.properties[name].data for name in IO_INT_FIELDS}

    def byte_size(self) -> int:
        v = self.field_values()
        return tensor_bytes(Format(v["format"]), v["timesteps"], v["batch"], v["height"], v["width"], v["channels_stored"])

    def verify_(self) -> None:
        v = self.field_values()
        where = f"accel.io \"{self.io_name.data}\""
        try:
            fmt = Format(v["format"])
        except ValueError:
            raise VerifyException(f"{where}: format {v['format']} is not a Format") from None
        if v["channels_stored"] % 8 or v["channels_stored"] < v["channels"]:
            raise VerifyException(f"{where}: channels_stored must be a multiple of 8 and >= channels")
        per_step = v["batch"] * v["channels"] * v["height"] * v["width"]
        if self.shape[0] != v["timesteps"] or int(np.prod(self.shape[1:])) != per_step:
            raise VerifyException(f"{where}: onnx_shape {list(self.shape)} does not match the geometry")
        if fmt in (Format.SPIKE_PLANES, Format.SPIKE_WORDS) and v["frac_bits"] != 0:
            raise VerifyException(f"{where}: spike formats have frac_bits 0")

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.io_name.data)
        printer.print_string(" output" if self.is_output.data else " input")
        printer.print_string(" shape=[" + ", ".join(str(d) for d in self.shape) + "]")
        values = self.field_values()
        for name in IO_INT_FIELDS:
            printer.print_string(" ")
            if name == "format":
                printer.print_string(f"format={Format(values[name]).name.lower()}")
            else:
                _print_int_field(printer, name, values[name])
        if self.error_bound is not None:
            printer.print_string(f" error_bound={self.error_bound.data:.6e}")  # MLIR float syntax

    @classmethod
    def parse(cls, parser: Parser) -> IoOp:
        io_name = parser.parse_str_literal(" (the ONNX tensor name)")
        direction = parser.parse_keyword_in(("input", "output"))
        parser.parse_keyword("shape")
        parser.parse_punctuation("=")
        shape = parser.parse_comma_separated_list(
            parser.Delimiter.SQUARE, lambda: parser.parse_integer(allow_boolean=False, allow_negative=False)
        )
        fields: dict[str, int] = {}
        for name in IO_INT_FIELDS:
            if name == "format":
                parser.parse_keyword("format")
                parser.parse_punctuation("=")
                word = parser.parse_identifier()
                try:
                    fields[name] = int(Format[word.upper()])
                except KeyError:
                    parser.raise_error(f"format: unknown Format '{word}'")
            else:
                fields[name] = _parse_int_field(parser, name)
        error_bound = None
        if parser.parse_optional_keyword("error_bound") is not None:
            parser.parse_punctuation("=")
            error_bound = parser.parse_float()
        return cls.create_with(io_name, direction == "output", shape, error_bound, **fields)


# --------------------------------------------------------------------------------------
# The container
# --------------------------------------------------------------------------------------


@irdl_op_definition
class ProgramOp(IRDLOperation):
    """A whole accelerator program; see the module docstring for its layout."""

    name = "accel.program"
    model_name = prop_def(StringAttr)
    hw_toml = prop_def(StringAttr)  # canonical TOML of the hardware compiled for
    dram_size = prop_def(IntAttr)
    sram_size = prop_def(IntAttr)
    timesteps = prop_def(IntAttr)
    body = region_def("single_block")
    traits = traits_def(NoTerminator())

    @classmethod
    def create_with(
        cls, ops: Sequence[IRDLOperation], *, model_name: str, hw_toml: str,
        dram_size: int, sram_size: int, timesteps: int,
    ) -> ProgramOp:
        return cls.create(
            properties={
                "model_name": StringAttr(model_name), "hw_toml": StringAttr(hw_toml),
                "dram_size": IntAttr(dram_size), "sram_size": IntAttr(sram_size),
                "timesteps": IntAttr(timesteps),
            },
            regions=[Region(Block(list(ops)))],
        )

    # -- views -------------------------------------------------------------------------
    def constants(self) -> list[ConstOp]:
        return [op for op in self.body.block.ops if isinstance(op, ConstOp)]

    def io_ops(self) -> list[IoOp]:
        return [op for op in self.body.block.ops if isinstance(op, IoOp)]

    def layers(self) -> list[LayerOp]:
        return [op for op in self.body.block.ops if isinstance(op, LayerOp)]

    def instructions(self) -> list[InstructionOp]:
        return [op for op in self.body.block.ops if isinstance(op, InstructionOp)]

    def inexact_layers(self) -> list[tuple[str, str]]:
        """(ONNX node, reason) of every layer whose quantisation is not exact."""
        return [(layer.source.data, layer.inexact.data) for layer in self.layers() if layer.inexact is not None]

    def layer_index(self) -> dict[str, int]:
        return {layer.symbol: i for i, layer in enumerate(self.layers())}

    # -- syntax ------------------------------------------------------------------------

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.model_name.data)
        for name in ("dram_size", "sram_size", "timesteps"):
            printer.print_string(f" {name}={self.properties[name].data}")
        printer.print_string(" hw_toml=")
        printer.print_string_literal(self.hw_toml.data)
        printer.print_string(" ")
        printer.print_region(self.body, print_entry_block_args=False, print_empty_block=False)

    @classmethod
    def parse(cls, parser: Parser) -> ProgramOp:
        props: dict[str, Attribute] = {"model_name": StringAttr(parser.parse_str_literal(" (the model name)"))}
        for name in ("dram_size", "sram_size", "timesteps"):
            props[name] = IntAttr(_parse_int_field(parser, name))
        parser.parse_keyword("hw_toml")
        parser.parse_punctuation("=")
        props["hw_toml"] = StringAttr(parser.parse_str_literal())
        region = parser.parse_region()
        if not region.blocks:
            region.add_block(Block())
        return cls.create(properties=props, regions=[region])

    # -- verification ------------------------------------------------------------------
    def verify_(self) -> None:
        dram_size, sram_size, timesteps = self.dram_size.data, self.sram_size.data, self.timesteps.data
        if not 1 <= timesteps <= 64:
            raise VerifyException(f"accel.program: timesteps = {timesteps}, expected 1..64")
        symbols: set[str] = set()
        layers: dict[str, LayerOp] = {}
        const_ranges: list[tuple[int, int, str]] = []
        for op in self.body.block.ops:
            if isinstance(op, InstructionOp):  # the bulk of the body
                _verify_instruction(op, layers, dram_size, sram_size)
                continue
            if isinstance(op, ConstOp | LayerOp):
                sym = op.sym_name.data
                if sym in symbols:
                    raise VerifyException(f"accel.program: symbol @{sym} is defined twice")
                symbols.add(sym)
            if isinstance(op, LayerOp):
                layers[op.symbol] = op
                _verify_layer(op, timesteps)
            elif isinstance(op, ConstOp):
                start, size = op.dram_addr.data, len(op.payload)
                if start + size > dram_size:
                    raise VerifyException(f"accel.const @{op.sym_name.data}: [{start:#x}, {start + size:#x}) exceeds dram_size {dram_size:#x}")
                const_ranges.append((start, start + size, op.sym_name.data))
            elif isinstance(op, IoOp):
                end = op.dram_addr.data + op.byte_size()
                if end > dram_size:
                    raise VerifyException(f"accel.io \"{op.io_name.data}\": ends at {end:#x}, beyond dram_size {dram_size:#x}")
                if op.timesteps.data != timesteps:
                    raise VerifyException(f"accel.io \"{op.io_name.data}\": timesteps differ from the program's")
            else:
                raise VerifyException(f"accel.program: unexpected op {op.name} in the body")
        const_ranges.sort()
        for (s0, e0, n0), (s1, _, n1) in zip(const_ranges, const_ranges[1:]):
            if s1 < e0:
                raise VerifyException(f"accel.const @{n1} overlaps @{n0} in DRAM")


# --------------------------------------------------------------------------------------
# Geometry: tile byte sizes and the SRAM ranges an instruction touches
# --------------------------------------------------------------------------------------


def element_bits(fmt: Format) -> int:
    """Bits per element of a per-timestep format (SPIKE_WORDS is per neuron, not per step)."""
    return {Format.SPIKE_PLANES: 1, Format.ACT_I16: 16, Format.ACT_I32: 32}[fmt]


WORD_FORMATS = (Format.SPIKE_WORDS, Format.SPIKE_BITMASK)  # SRAM tiles of all-T words per neuron


def tile_bytes(fmt: Format, nt: int, elements_per_step: int) -> int:
    """Bytes of a tile holding `elements_per_step` neurons for nt timesteps in `fmt`.
    For the word formats (SPIKE_WORDS, and SPIKE_BITMASK whose SRAM tile is the
    expanded words) pass nt = T: a word holds all T bits whatever the visit."""
    if fmt in WORD_FORMATS:
        return isa.spike_word_bytes(nt) * elements_per_step
    return (nt * elements_per_step * element_bits(fmt) + 7) // 8


_tile_bytes = tile_bytes


def tensor_bytes(fmt: Format, timesteps: int, batch: int, height: int, width: int, cs: int) -> int:
    """Bytes of a DRAM feature map `[T][B][H][W][Cs]` (or `[B][H][W][Cs]` words)."""
    if fmt == Format.SPIKE_WORDS:
        return isa.spike_word_bytes(timesteps) * batch * height * width * cs
    if fmt == Format.SPIKE_BITMASK:  # one compressed fiber slot per spatial row
        return batch * height * isa.fiber_slot_bytes(width * cs, timesteps)
    return timesteps * batch * height * width * cs * element_bits(fmt) // 8


def param_block_bytes(layer: LayerOp) -> int:
    """bias[out_c], threshold/leak/v_reset[param_c], int32 (isa.PARAM_ARRAYS)."""
    return 4 * (layer.get("out_c") + 3 * layer.get("param_c"))


class SramOperand(NamedTuple):  # a tuple: built for every instruction by the emitter and the verifier
    field: str  # the instruction field holding the address
    addr: int
    size: int
    reads: bool
    writes: bool

    @property
    def end(self) -> int:
        return self.addr + self.size


def sram_operands(op: InstructionOp, layer: LayerOp | None, values: dict[str, int] | None = None) -> list[SramOperand]:
    """Every SRAM range `op` reads or writes, sized from the isa.py tile layouts
    (`values`: `op.field_values()` when the caller already has them)."""
    v = op.field_values() if values is None else values
    if isinstance(op, DmaLoadOp | DmaStoreOp):
        if v["rows"] == 0 or v["row_bytes"] == 0:
            return []
        size = (v["rows"] - 1) * v["sram_stride"] + v["row_bytes"]
        return [SramOperand("sram_addr", v["sram_addr"], size, isinstance(op, DmaStoreOp), isinstance(op, DmaLoadOp))]
    if isinstance(op, MoveOp):
        if v["rows"] == 0 or v["row_bytes"] == 0:
            return []
        return [
            SramOperand("src_addr", v["src_addr"], (v["rows"] - 1) * v["src_stride"] + v["row_bytes"], True, False),
            SramOperand("dst_addr", v["dst_addr"], (v["rows"] - 1) * v["dst_stride"] + v["row_bytes"], False, True),
        ]
    if isinstance(op, DmaLoadBmOp | DmaStoreBmOp):
        if v["flags"] & isa.DmaFlags.KEEP_COMPRESSED:  # the fibers as they are, packed
            size = v["sram_bytes"]
        else:
            size = v["fibers"] * v["fiber_elems"] * v["word_bytes"]
        if size == 0:
            return []
        return [SramOperand("sram_addr", v["sram_addr"], size, isinstance(op, DmaStoreBmOp), isinstance(op, DmaLoadBmOp))]
    if isinstance(op, BarrierOp):
        return []
    assert layer is not None
    g = layer.get
    nt, rows, chs = v["nt"], v["rows"], v["chs"]

    def tile_bytes(fmt: Format, nt: int, elems: int) -> int:  # word tiles hold all T bits
        return _tile_bytes(fmt, g("timesteps") if fmt in WORD_FORMATS else nt, elems)

    out_elems = rows * g("out_w") * chs
    acc_bytes = 4 * nt * out_elems
    ops: list[SramOperand] = []
    if isinstance(op, SynOp):
        in_elems = v["in_rows"] * g("in_w") * g("in_cs")
        ops += [
            SramOperand("in_addr", v["in_addr"], tile_bytes(Format(g("in_format")), nt, in_elems), True, False),
            SramOperand("w_addr", v["w_addr"], v["w_bytes"] if v["flags"] & isa.SynFlags.COMPRESSED_WEIGHTS
                        else chs * g("kh") * g("kw") * g("in_cs") * g("weight_bytes"), True, False),
            SramOperand("acc_addr", v["acc_addr"], acc_bytes, bool(v["flags"] & isa.SynFlags.ACCUMULATE), True),
        ]
        if not v["flags"] & isa.SynFlags.ACCUMULATE:
            ops.append(SramOperand("param_addr", v["param_addr"], param_block_bytes(layer), True, False))
    elif isinstance(op, LifOp):
        ops += [
            SramOperand("acc_addr", v["acc_addr"], acc_bytes, True, False),
            SramOperand("param_addr", v["param_addr"], param_block_bytes(layer), True, False),
            # A visit starting at t0 = 0 starts from rest (v = 0, s_prev = 0): state is only written.
            SramOperand("state_addr", v["state_addr"], 2 * 4 * out_elems, v["t0"] > 0, True),
            SramOperand("spk_addr", v["spk_addr"], isa.spike_word_bytes(nt) * out_elems, False, True),
        ]
        if v["mem_addr"] != isa.NO_ADDRESS:
            ops.append(SramOperand("mem_addr", v["mem_addr"], acc_bytes, False, True))
    elif isinstance(op, PackOp):
        ops += [
            SramOperand("spk_addr", v["spk_addr"], isa.spike_word_bytes(nt) * out_elems, True, False),
            SramOperand("out_addr", v["out_addr"], tile_bytes(Format(g("out_format")), nt, out_elems), False, True),
        ]
    elif isinstance(op, PoolOp):
        in_elems = v["in_rows"] * g("in_w") * g("in_cs")
        ops += [
            SramOperand("in_addr", v["in_addr"], tile_bytes(Format(g("in_format")), nt, in_elems), True, False),
            SramOperand("out_addr", v["out_addr"], tile_bytes(Format(g("out_format")), nt, out_elems), False, True),
        ]
    elif isinstance(op, AddOp):
        elems = rows * g("in_w") * chs
        ops += [
            SramOperand("a_addr", v["a_addr"], tile_bytes(Format(g("in_format")), nt, elems), True, False),
            SramOperand("b_addr", v["b_addr"], tile_bytes(Format(g("in2_format")), nt, elems), True, False),
            SramOperand("out_addr", v["out_addr"], tile_bytes(Format(g("out_format")), nt, elems), False, True),
        ]
    return ops


def _verify_layer(layer: LayerOp, timesteps: int) -> None:
    where = f"accel.layer @{layer.symbol}"
    g = layer.get
    for name, enum_type in _ENUM_FIELDS.items():
        try:
            enum_type(g(name))
        except ValueError:
            raise VerifyException(f"{where}: {name} = {g(name)} is not a valid {enum_type.__name__}") from None
    if g("timesteps") != timesteps:
        raise VerifyException(f"{where}: timesteps = {g('timesteps')}, the program has {timesteps}")
    for c, cs in (("in_c", "in_cs"), ("out_c", "out_cs")):
        if g(cs) % 8 or g(cs) < g(c):
            raise VerifyException(f"{where}: {cs} = {g(cs)} must be a multiple of 8 and >= {c} = {g(c)}")
    if g("kind") == LayerKind.CONV and g("weight_bytes") not in (1, 2):
        raise VerifyException(f"{where}: weight_bytes must be 1 or 2")
    if g("param_c") not in (0, 1, g("out_c")):
        raise VerifyException(f"{where}: param_c must be 1 or out_c")


def _verify_instruction(op: InstructionOp, layers: dict[str, LayerOp], dram_size: int, sram_size: int) -> None:
    v = op.field_values()
    where = op.name
    layer = None
    if "layer" in op.properties:
        sym = op.layer_symbol
        layer = layers.get(sym)
        if layer is None:
            raise VerifyException(f"{where}: layer @{sym} is not an accel.layer defined before it")
        where = f"{op.name} @{sym}"
        g = layer.get
        if v["nt"] < 1 or v["t0"] + v["nt"] > g("timesteps"):
            raise VerifyException(f"{where}: timesteps [{v['t0']}, {v['t0'] + v['nt']}) outside [0, {g('timesteps')})")
        if v["rows"] < 1 or v["row0"] + v["rows"] > g("out_h"):
            raise VerifyException(f"{where}: rows [{v['row0']}, {v['row0'] + v['rows']}) outside the output height {g('out_h')}")
        if v["chs"] < 1 or v["ch0"] + v["chs"] > g("out_cs"):
            raise VerifyException(f"{where}: channels [{v['ch0']}, {v['ch0'] + v['chs']}) outside out_cs {g('out_cs')}")
        spike_out = g("out_format") in (Format.SPIKE_PLANES, *WORD_FORMATS)
        if (isinstance(op, PackOp) or (isinstance(op, PoolOp | AddOp) and spike_out)) and (v["chs"] % 8 or v["ch0"] % 8):
            raise VerifyException(f"{where}: a spike tile needs ch0 and chs multiples of 8, got {v['ch0']}, {v['chs']}")
        if isinstance(op, PoolOp) and (v["ch0"] != 0 or v["chs"] != g("out_cs")):
            raise VerifyException(f"{where}: a POOL tile covers all {g('out_cs')} channels")
        if isinstance(op, SynOp | PoolOp) and v["in_row0"] + v["in_rows"] > g("in_h"):
            raise VerifyException(f"{where}: input rows [{v['in_row0']}, {v['in_row0'] + v['in_rows']}) outside in_h {g('in_h')}")
        expected_kind = {SynOp: (LayerKind.CONV,), LifOp: (LayerKind.CONV,), PackOp: (LayerKind.CONV,),
                         PoolOp: (LayerKind.MAXPOOL, LayerKind.AVGPOOL), AddOp: (LayerKind.ADD,)}[type(op)]
        if g("kind") not in expected_kind:
            raise VerifyException(f"{where}: layer kind {LayerKind(g('kind')).name} cannot run {op.name}")
    wrong = isa.weight_fiber_field_error(op.opcode, v)
    if wrong:
        raise VerifyException(f"{where}: {wrong}")
    for operand in sram_operands(op, layer, v):
        if operand.addr < 0 or operand.end > sram_size:
            raise VerifyException(
                f"{where}: {operand.field} range [{operand.addr:#x}, {operand.end:#x}) outside SRAM [0, {sram_size:#x})"
            )
    if isinstance(op, DmaLoadOp | DmaStoreOp) and v["rows"] and v["row_bytes"]:
        end = v["dram_addr"] + (v["rows"] - 1) * v["dram_stride"] + v["row_bytes"]
        if end > dram_size:
            raise VerifyException(f"{where}: DRAM range ends at {end:#x}, beyond dram_size {dram_size:#x}")
    if isinstance(op, DmaLoadBmOp | DmaStoreBmOp):
        if v["word_bytes"] not in (1, 2, 4, 8):
            raise VerifyException(f"{where}: word_bytes = {v['word_bytes']}, expected 1, 2, 4 or 8")
        if not 1 <= v["elem_bits"] <= 8 * v["word_bytes"]:
            raise VerifyException(f"{where}: elem_bits = {v['elem_bits']}, expected 1..{8 * v['word_bytes']}")
        end = isa.fiber_dma_end(v["dram_addr"], v["fibers"], v["fiber_elems"], v["elem_bits"], v["flags"])
        if end > dram_size:
            raise VerifyException(f"{where}: fibers end at {end:#x}, beyond dram_size {dram_size:#x}")


ACCEL = Dialect(
    "accel",
    [ProgramOp, LayerOp, ConstOp, IoOp, *INSTRUCTION_OPS],
    [],
)
