"""The `accel` dialect: one program for the LoAS-style accelerator, at ISA level.

Level: after `convert-loops-to-accel`, before the encoder. Everything is explicit:
DRAM addresses of constants and tensors, SRAM addresses of every tile buffer,
tile bounds, timestep lane groups and barriers. The encoder
(`snnc.passes.encode`) turns it into prog.bin one-to-one.

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
entry as a property of the same name, and `accel.io` the `isa.IO_FIELDS`. A field
whose isa.Field has an `enum_type` prints by member name (lower case; a flag set
as `a|b`, the empty set as 0) and parses from names or an integer.

`accel.program` verifies the whole program: unique symbols, valid layer
references, tiles inside the layer's output geometry and timesteps, spike
tiles whole bytes (chs and ch0 multiples of 8), enum fields valid
(isa.Field.value_error), every SRAM operand range (isa.sram_operands: the
instruction's own definition in the ISA table) inside [0, sram_size), DMA
ranges inside DRAM and SRAM, constants non-overlapping and inside DRAM, exit
checks naming an output io op defined before them, each output's checks for
t = 0, 1, 2, ... in program order.
"""

from __future__ import annotations

import enum
import functools
import struct
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

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
from xdsl.ir import Attribute, Block, Dialect, Operation, Region
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
from snnc.backend.isa import WORD_FORMATS, Format, LayerKind, Opcode, SramOperand, tensor_bytes
from snnc.backend.isa import element_bits  # noqa: F401 -- the lowering's accel.element_bits
from snnc.backend.binformat import IODesc, io_shape_error

# --------------------------------------------------------------------------------------
# Field syntax shared by every op: `name=value` pairs in a fixed order
# --------------------------------------------------------------------------------------

# Fields printed in hexadecimal (addresses and byte counts are easier to read so).
_HEX_SUFFIXES = ("_addr",)


@functools.lru_cache(maxsize=None)
def _struct_range(fmt: str) -> tuple[int, int]:
    bits = 8 * struct.calcsize("<" + fmt)
    if fmt.islower():
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _enum_text(enum_type: type[enum.IntEnum], value: int) -> str:
    """An enum value by its member name, a flag set as `a|b` (lower case); what is no member
    (an invalid value, which the verifier then names) as the integer."""
    if issubclass(enum_type, enum.IntFlag):
        names, rest = isa.flag_names(enum_type, value)
        if rest or not names:
            return str(value)
        return "|".join(name.lower() for name in names)
    return enum_type(value).name.lower() if value in isa.enum_values(enum_type) else str(value)


def _print_int_field(printer: Printer, name: str, value: int, enum_type: type[enum.IntEnum] | None = None) -> None:
    if enum_type is not None:
        printer.print_string(f"{name}={_enum_text(enum_type, value)}")
    elif name.endswith("_addr") and value == isa.NO_ADDRESS:
        printer.print_string(f"{name}=none")
    elif name.endswith(_HEX_SUFFIXES):
        printer.print_string(f"{name}={value:#x}")
    else:
        printer.print_string(f"{name}={value}")


def _parse_enum_member(parser: Parser, name: str, enum_type: type[enum.IntEnum]) -> int:
    word = parser.parse_identifier(f" ({name}: a {enum_type.__name__} name)")
    try:
        return int(enum_type[word.upper()])
    except KeyError:
        parser.raise_error(f"{name}: unknown {enum_type.__name__} '{word}'")


def _parse_int_field(parser: Parser, name: str, keyword_parsed: bool = False,
                     enum_type: type[enum.IntEnum] | None = None) -> int:
    if not keyword_parsed:
        parser.parse_keyword(name, f" (field '{name}' expected here)")
    parser.parse_punctuation("=")
    if enum_type is not None:
        value = parser.parse_optional_integer(allow_boolean=False, allow_negative=False)
        if value is not None:
            return value
        value = _parse_enum_member(parser, name, enum_type)
        if issubclass(enum_type, enum.IntFlag):  # a flag set: a|b|c
            while parser.parse_optional_punctuation("|") is not None:
                value |= _parse_enum_member(parser, name, enum_type)
        return value
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
    instruction, mostly repeating values. `value` is an int (callers convert): the
    attribute's only state is it, so it is set directly rather than through the dataclass
    constructor and xDSL's attribute verification, which cost microseconds for each of the
    tens of thousands of distinct addresses (tests/test_accel_dialect.py checks the state)."""
    attr = IntAttr.__new__(IntAttr)
    object.__setattr__(attr, "data", value)
    return attr


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


@functools.lru_cache(maxsize=None)
def _create_plan(op_class: type[_FieldsOp]) -> tuple[tuple[str, bool], ...]:
    """(name, optional) of each field, in the table's order."""
    return tuple((f.name, f.optional) for f in op_class.FIELDS)


_ZERO = _int_attr(0)


@functools.lru_cache(maxsize=None)
def _int_field_plan(op_class: type[_FieldsOp]) -> tuple[bool, tuple[str, ...]]:
    """(whether the op has a `layer` field, its other fields in order); the layer, where an
    op has one, is its first field (isa._TILE), so a props dict built as layer then the rest
    has the table's order."""
    names = tuple(f.name for f in op_class.FIELDS)
    has_layer = "layer" in names
    assert not has_layer or names[0] == "layer", op_class.name
    return has_layer, tuple(n for n in names if n != "layer")


@functools.lru_cache(maxsize=None)
def _blank_state(op_class: type[IRDLOperation]) -> dict[str, object]:
    """The instance state `op_class.create(properties=...)` gives an op without operands,
    results, successors or regions, less its property and attribute dicts: every value in
    it is immutable (empty tuples, the unknown location), so new ops can share it."""
    state = dict(vars(op_class.create()))
    del state["properties"], state["attributes"]
    return state


def new_fields_op(op_class: type[_FieldsOp], properties: dict[str, Attribute]) -> _FieldsOp:
    """`op_class.create(properties=properties)` (taking the dict) without xDSL's generic
    set-up (operand uses, result values, successors, regions, defaults: a fields op has none)
    that costs most of building one; a program has tens of thousands. The same instance
    state, as tests/test_accel_dialect.py checks."""
    op = op_class.__new__(op_class)
    op.__dict__.update(_blank_state(op_class))
    op.properties = properties
    op.attributes = {}
    return op


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
        _verify_field_ranges(self)  # IRDL has checked that every field is present and an IntAttr


def _verify_field_ranges(op: _FieldsOp) -> None:
    props = op.properties
    for f, lo, hi in _int_fields(type(op)):
        if not lo <= props[f.name].data <= hi:
            _check_field_range(op.name, f, props[f.name].data)  # raises, naming the field


@functools.lru_cache(maxsize=None)
def _field_names(op_class: type[_FieldsOp]) -> frozenset[str]:
    return frozenset(f.name for f in op_class.FIELDS)


@functools.lru_cache(maxsize=None)
def _field_ranges(op_class: type[_FieldsOp]) -> tuple[tuple[str, int, int], ...]:
    """(name, lowest, highest) of each integer field: verify_fields_op's plan."""
    return tuple((f.name, lo, hi) for f, lo, hi in _int_fields(op_class))


def verify_fields_op(op: _FieldsOp) -> dict[str, int]:
    """What op.verify(verify_nested_ops=False) checks of a fields op (its IRDL definition:
    no operands, results, regions or successors, exactly its fields as properties, each an
    IntAttr or the layer's SymbolRefAttr; then its verify_), without IRDL's generic
    machinery: accel.program runs it for each instruction it holds (VERIFIES_HELD_OPS).
    Returns op.field_values()."""
    if op._operands or op.results or op.regions or op._successors:  # the tuples themselves (no views)
        raise VerifyException(f"{op.name}: an instruction has no operands, results, regions or successors")
    props = op.properties
    names, ranges = _field_names(type(op)), _field_ranges(type(op))
    if props.keys() == names:  # the common case in one pass: every field an IntAttr in range
        values = {}
        for name, lo, hi in ranges:
            attr = props[name]
            if type(attr) is not IntAttr:
                break  # the checks below, in their order, name it
            value = attr.data
            if not lo <= value <= hi:
                break
            values[name] = value
        else:
            layer = props.get("layer")
            if layer is None or type(layer) is SymbolRefAttr:
                return values
    if props.keys() != names:
        missing, unknown = sorted(names - props.keys()), sorted(props.keys() - names)
        raise VerifyException(f"{op.name}: " + (f"property '{missing[0]}' expected" if missing else
                                                f"property '{unknown[0]}' is not defined by the operation"))
    for name, value in props.items():
        if not isinstance(value, SymbolRefAttr if name == "layer" else IntAttr):
            raise VerifyException(f"{op.name}: property '{name}' is a {type(value).__name__}")
    _verify_field_ranges(op)  # its verify_ (op.verify_ would run the IRDL checks above as well)
    return op.field_values()


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
        # read for every instruction by the verifier and the accel passes: most (the DMA ops)
        # have no layer, and None or an exact SymbolRefAttr skip the abstract-base-class test
        ref = self.properties.get("layer")
        if ref is None:
            return None
        return ref.root_reference.data if type(ref) is SymbolRefAttr or isinstance(ref, SymbolRefAttr) else None

    @classmethod
    def create_with(cls, layer: str | None = None, **fields: int) -> InstructionOp:
        """Build from ISA field values; `layer` is the layer descriptor's symbol."""
        has_layer, names = _int_field_plan(cls)
        if len(fields) == len(names) and (layer is not None) == has_layer:  # every field given: no defaults
            props = {"layer": _symbol_ref(layer)} if has_layer else {}
            try:
                props.update(zip(names, map(_int_attr, map(int, map(fields.__getitem__, names)))))
            except KeyError:
                pass  # a field missing, another unknown: named below
            else:
                return new_fields_op(cls, props)
        props: dict[str, Attribute] = {}
        for name, optional in _create_plan(cls):
            if name == "layer":
                if layer is None:
                    raise ValueError(f"{cls.name}: a layer symbol is required")
                props["layer"] = _symbol_ref(layer)
            elif name in fields:
                props[name] = _int_attr(int(fields.pop(name)))
            elif optional:
                props[name] = _ZERO
            else:
                raise ValueError(f"{cls.name}: missing field {name}")
        if fields:
            raise ValueError(f"{cls.name}: unknown field(s) {sorted(fields)}")
        return new_fields_op(cls, props)

    def print(self, printer: Printer) -> None:
        for f in self.FIELDS:
            if f.optional and not self.properties[f.name].data:
                continue  # an optional field at 0 is left out of the text
            printer.print_string(" ")
            if f.name == "layer":
                printer.print_symbol_name(self.layer_symbol)
            else:
                _print_int_field(printer, f.name, self.properties[f.name].data, f.enum_type)
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
                props[f.name] = IntAttr(_parse_int_field(parser, f.name, keyword_parsed=f.optional,
                                                         enum_type=f.enum_type))
        attrs = parser.parse_optional_attr_dict()
        return cls.create(properties=props, attributes=attrs)


def _instruction_op(spec: isa.InstructionSpec) -> type[InstructionOp]:
    """The op class of an ISA instruction: `dma.load_bm` -> DmaLoadBmOp, named accel.dma_load_bm."""
    class_name = "".join(part.capitalize() for part in spec.mnemonic.replace(".", "_").split("_")) + "Op"
    namespace: dict[str, object] = {
        "__module__": __name__,
        "__qualname__": class_name,
        "__doc__": f"`{spec.mnemonic}` (opcode 0x{int(spec.opcode):02x}): {spec.doc}",
        "name": "accel." + spec.mnemonic.replace(".", "_"),
        "SPEC": spec,
        "FIELDS": spec.fields,
        "__annotations__": {"SPEC": ClassVar[isa.InstructionSpec], "FIELDS": ClassVar[tuple[isa.Field, ...]]},
    }
    for f in spec.fields:
        namespace[f.name] = prop_def(SymbolRefAttr if f.name == "layer" else IntAttr)
    return irdl_op_definition(type(class_name, (InstructionOp,), namespace))


# One op per ISA instruction, generated from the table (NOP and HALT excepted: the encoder appends HALT).
INSTRUCTION_OP_BY_OPCODE: dict[Opcode, type[InstructionOp]] = {
    spec.opcode: _instruction_op(spec) for spec in isa.INSTRUCTIONS if spec.opcode not in (Opcode.NOP, Opcode.HALT)
}
INSTRUCTION_OPS: tuple[type[InstructionOp], ...] = tuple(INSTRUCTION_OP_BY_OPCODE.values())
# Python names of the ops the compiler refers to
DmaLoadOp = INSTRUCTION_OP_BY_OPCODE[Opcode.DMA_LOAD]
DmaStoreOp = INSTRUCTION_OP_BY_OPCODE[Opcode.DMA_STORE]
DmaLoadBmOp = INSTRUCTION_OP_BY_OPCODE[Opcode.DMA_LOAD_BM]
DmaStoreBmOp = INSTRUCTION_OP_BY_OPCODE[Opcode.DMA_STORE_BM]
MoveOp = INSTRUCTION_OP_BY_OPCODE[Opcode.MOVE]
SynOp = INSTRUCTION_OP_BY_OPCODE[Opcode.SYN]
LifOp = INSTRUCTION_OP_BY_OPCODE[Opcode.LIF]
PackOp = INSTRUCTION_OP_BY_OPCODE[Opcode.PACK]
PoolOp = INSTRUCTION_OP_BY_OPCODE[Opcode.POOL]
AddOp = INSTRUCTION_OP_BY_OPCODE[Opcode.ADD]
BarrierOp = INSTRUCTION_OP_BY_OPCODE[Opcode.BARRIER]
ExitCheckOp = INSTRUCTION_OP_BY_OPCODE[Opcode.EXIT_CHECK]

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
            _print_int_field(printer, f.name, self.properties[f.name].data, f.enum_type)
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
            props[f.name] = IntAttr(_parse_int_field(parser, f.name, enum_type=f.enum_type))
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


# The integer fields of accel.io: isa.IO_FIELDS but is_output (printed as input/output) and reserved.
IO_FIELDS = tuple(f for f in isa.IO_FIELDS if f.name not in ("is_output", "reserved"))
IO_INT_FIELDS = tuple(f.name for f in IO_FIELDS)


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
    t0 = prop_def(IntAttr)  # the user's time window: steps t0..t0+nt-1 (binformat.IODesc)
    nt = prop_def(IntAttr)
    error_bound = opt_prop_def(FloatData)

    @classmethod
    def create_with(cls, io_name: str, is_output: bool, onnx_shape: Sequence[int],
                    error_bound: float | None = None, **fields: int) -> IoOp:
        """`t0`/`nt` default to all `timesteps` (a whole train)."""
        from snnc.dialects.snn import int_array

        props: dict[str, Attribute] = {
            "io_name": StringAttr(io_name), "is_output": IntAttr(int(bool(is_output))),
            "onnx_shape": int_array(onnx_shape),
        }
        if error_bound is not None:
            props["error_bound"] = FloatData(float(error_bound))
        fields.setdefault("t0", 0)
        fields.setdefault("nt", fields.get("timesteps", 0))
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
        for f in IO_FIELDS:
            wrong = f.value_error(v[f.name])
            if wrong:
                raise VerifyException(f"{where}: {wrong}")
        fmt = Format(v["format"])
        if v["channels_stored"] % 8 or v["channels_stored"] < v["channels"]:
            raise VerifyException(f"{where}: channels_stored must be a multiple of 8 and >= channels")
        desc = IODesc(self.io_name.data, bool(self.is_output.data), self.shape, v["dram_addr"], fmt,
                      v["frac_bits"], v["timesteps"], v["batch"], v["channels"], v["channels_stored"],
                      v["height"], v["width"], v["t0"], v["nt"])
        wrong = io_shape_error(desc)
        if wrong:
            raise VerifyException(f"{where}: {wrong}")
        if fmt in (Format.SPIKE_PLANES, Format.SPIKE_WORDS) and v["frac_bits"] != 0:
            raise VerifyException(f"{where}: spike formats have frac_bits 0")

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.io_name.data)
        printer.print_string(" output" if self.is_output.data else " input")
        printer.print_string(" shape=[" + ", ".join(str(d) for d in self.shape) + "]")
        values = self.field_values()
        for f in IO_FIELDS:
            printer.print_string(" ")
            _print_int_field(printer, f.name, values[f.name], f.enum_type)
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
        fields = {f.name: _parse_int_field(parser, f.name, enum_type=f.enum_type) for f in IO_FIELDS}
        error_bound = None
        if parser.parse_optional_keyword("error_bound") is not None:
            parser.parse_punctuation("=")
            error_bound = parser.parse_float()
        return cls.create_with(io_name, direction == "output", shape, error_bound, **fields)


# --------------------------------------------------------------------------------------
# The container
# --------------------------------------------------------------------------------------


def ops_of(block: Block, kind: type | tuple[type, ...], wanted: bool = True) -> list:
    """The ops of `block` that are `kind`s (with `wanted` False: that are not), in order. A
    program holds tens of thousands: the list is followed link by link (not through the
    block's op iterator) and the (abstract-base-class) isinstance test is made once per op class."""
    out = []
    is_kind: dict[type, bool] = {}
    op = block.first_op
    while op is not None:
        cls = type(op)
        hit = is_kind.get(cls)
        if hit is None:
            hit = is_kind[cls] = issubclass(cls, kind)
        if hit is wanted:
            out.append(op)
        op = op.next_op
    return out


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
    # its verify_ checks each of these it holds completely (verify_fields_op), so a
    # verifier that re-verifies changed ops may leave them to it (compiler/verify.py)
    VERIFIES_HELD_OPS: ClassVar[tuple[type[Operation], ...]] = ()  # set below, once the classes exist

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
        return ops_of(self.body.block, ConstOp)

    def io_ops(self) -> list[IoOp]:
        return ops_of(self.body.block, IoOp)

    def layers(self) -> list[LayerOp]:
        return ops_of(self.body.block, LayerOp)

    def instructions(self) -> list[InstructionOp]:
        return ops_of(self.body.block, InstructionOp)

    def parts(self) -> ProgramParts:
        """constants(), io_ops(), layers() and instructions() in one walk of the body."""
        found: tuple[list, ...] = ([], [], [], [])
        slot_of: dict[type, int] = {}
        op = self.body.block.first_op
        while op is not None:
            cls = type(op)
            slot = slot_of.get(cls)
            if slot is None:
                slot = slot_of[cls] = next((i for i, kind in enumerate(_PART_KINDS) if issubclass(cls, kind)), -1)
            if slot >= 0:
                found[slot].append(op)
            op = op.next_op
        return ProgramParts(*found)

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
        io_ops: list[IoOp] = []
        last_check: dict[int, int] = {}
        const_ranges: list[tuple[int, int, str]] = []
        layer_inputs: dict[str, tuple] = {}  # symbol -> what an instruction's check reads of its layer
        is_instruction: dict[type, bool] = {}  # per op class (an abstract-base-class test is slow)
        op = self.body.block.first_op
        while op is not None:
            cls = type(op)
            instruction = is_instruction.get(cls)
            if instruction is None:
                instruction = is_instruction[cls] = issubclass(cls, InstructionOp)
            if instruction:  # the bulk of the body
                if cls is ExitCheckOp:
                    _verify_exit_check(op, io_ops, last_check)
                props = op.properties
                layer_key = layer_inputs.get(op.layer_symbol)
                passed = op.__dict__.get("_verified_inputs")
                if (passed is None or passed[1] is not layer_key or passed[2] != dram_size
                        or passed[3] != sram_size or passed[0] != props
                        or op._operands or op.results or op.regions or op._successors):
                    operands = _verify_instruction(op, verify_fields_op(op), layers, layer_key, dram_size,
                                                   sram_size)
                    op._verified_inputs = (props.copy(), layer_key, dram_size, sram_size, operands)
                op = op.next_op
                continue
            if isinstance(op, ConstOp | LayerOp):
                sym = op.sym_name.data
                if sym in symbols:
                    raise VerifyException(f"accel.program: symbol @{sym} is defined twice")
                symbols.add(sym)
            if isinstance(op, LayerOp):
                layers[op.symbol] = op
                layer_inputs[op.symbol] = _layer_inputs(op)
                _verify_layer(op, timesteps)
            elif isinstance(op, ConstOp):
                start, size = op.dram_addr.data, len(op.payload)
                if start + size > dram_size:
                    raise VerifyException(f"accel.const @{op.sym_name.data}: [{start:#x}, {start + size:#x}) exceeds dram_size {dram_size:#x}")
                const_ranges.append((start, start + size, op.sym_name.data))
            elif isinstance(op, IoOp):
                io_ops.append(op)
                end = op.dram_addr.data + op.byte_size()
                if end > dram_size:
                    raise VerifyException(f"accel.io \"{op.io_name.data}\": ends at {end:#x}, beyond dram_size {dram_size:#x}")
                if op.timesteps.data != timesteps:
                    raise VerifyException(f"accel.io \"{op.io_name.data}\": timesteps differ from the program's")
            else:
                raise VerifyException(f"accel.program: unexpected op {op.name} in the body")
            op = op.next_op
        const_ranges.sort()
        for (s0, e0, n0), (s1, _, n1) in zip(const_ranges, const_ranges[1:]):
            if s1 < e0:
                raise VerifyException(f"accel.const @{n1} overlaps @{n0} in DRAM")


# --------------------------------------------------------------------------------------
# The SRAM ranges an instruction touches (defined once, in isa.py)
# --------------------------------------------------------------------------------------


class _LayerFields:
    """An accel.layer's field values by name: the mapping isa.sram_operands reads, without
    building a dict of all fields per instruction."""

    __slots__ = ("_properties",)

    def __init__(self, layer: LayerOp):
        self._properties = layer.properties

    def __getitem__(self, name: str) -> int:
        return self._properties[name].data


def sram_operands(op: InstructionOp, layer: LayerOp | None, values: dict[str, int] | None = None) -> list[SramOperand]:
    """Every SRAM range `op` reads or writes: isa.sram_operands, the one definition
    (`values`: `op.field_values()` when the caller already has them). When accel.program's
    check last passed `op` with the fields and layer fields it has now, the ranges computed
    then (insert-barriers and dma-prefetch read every instruction's, after a verification):
    the list is shared, not to be changed."""
    passed = op.__dict__.get("_verified_inputs")
    if passed is not None and passed[0] == op.properties:
        layer_key = passed[1]
        if layer_key is None if layer is None else (layer_key[0] is layer and layer_key[1] == layer.properties):
            return passed[4]
    return op.SPEC.sram_operands(op.field_values() if values is None else values,
                                 None if layer is None else _LayerFields(layer))


def _verify_layer(layer: LayerOp, timesteps: int) -> None:
    where = f"accel.layer @{layer.symbol}"
    g = layer.get
    for f in isa.LAYER_ENUM_FIELDS:
        wrong = f.value_error(g(f.name))
        if wrong:
            raise VerifyException(f"{where}: {wrong}")
    if g("timesteps") != timesteps:
        raise VerifyException(f"{where}: timesteps = {g('timesteps')}, the program has {timesteps}")
    for c, cs in (("in_c", "in_cs"), ("out_c", "out_cs")):
        if g(cs) % 8 or g(cs) < g(c):
            raise VerifyException(f"{where}: {cs} = {g(cs)} must be a multiple of 8 and >= {c} = {g(c)}")
    if g("kind") == LayerKind.CONV and g("weight_bytes") not in (1, 2):
        raise VerifyException(f"{where}: weight_bytes must be 1 or 2")
    if g("param_c") not in (0, 1, g("out_c")):
        raise VerifyException(f"{where}: param_c must be 1 or out_c")


def _verify_exit_check(op: InstructionOp, io_ops: list[IoOp], last_check: dict[int, int]) -> None:
    """`io` indexes the accel.io ops before it (the I/O descriptors' order) and names an
    output; an output's checks come for t = 0, 1, 2, ... in program order (`last_check`)."""
    outputs = {i: io.timesteps.data for i, io in enumerate(io_ops) if io.is_output.data}
    wrong = isa.exit_check_field_error(op.field_values(), outputs, last_check)
    if wrong:
        raise VerifyException(f"{op.name}: {wrong}")


# The program's verifier runs after every accel-level pass, over tens of thousands of
# instructions that mostly did not change. An instruction's check reads only its own fields
# (and that it has no operands, results, regions or successors), its layer's fields and the
# two memory sizes; when all are equal to what they were when it last passed, it passes
# again. What it passed with is kept on the op itself (`_verified_inputs`: it dies with the
# op, and a clone starts without), its layer's part as one object per layer state
# (`_layer_inputs`), so the check per unchanged instruction is an identity test and one dict
# comparison (equal attributes compare by identity first).


def _layer_inputs(layer: LayerOp) -> tuple:
    """What an instruction's check reads of its layer, (layer, its properties, its integer
    field values): the same object while the layer's properties stay equal, a new one when
    they change."""
    kept = layer.__dict__.get("_verified_inputs")
    if kept is None or kept[1] != layer.properties:
        kept = layer._verified_inputs = (layer, layer.properties.copy(), layer.field_values())
    return kept


_SPIKE_OUT = frozenset((Format.SPIKE_PLANES, *WORD_FORMATS))
_SPIKE_TILE_OPCODES = frozenset((Opcode.POOL, Opcode.ADD))  # and PACK whatever the format
_IN_ROWS_OPCODES = frozenset((Opcode.SYN, Opcode.POOL))
_DMA_OPCODES = frozenset((Opcode.DMA_LOAD, Opcode.DMA_STORE))
_FIBER_DMA_OPCODES = frozenset((Opcode.DMA_LOAD_BM, Opcode.DMA_STORE_BM))


def _verify_instruction(op: InstructionOp, v: dict[str, int], layers: dict[str, LayerOp], layer_key: tuple | None,
                        dram_size: int, sram_size: int) -> list[SramOperand]:
    """Check one instruction (its fields `v` against its layer, the ISA's enums and rules, its
    SRAM and DRAM ranges); returns its SRAM operands. `layer_key`: _layer_inputs of its layer,
    None when it has none or its layer is not defined before it."""
    spec = op.SPEC
    opcode = spec.opcode
    where = op.name
    layer = None
    if "layer" in op.properties:
        sym = op.layer_symbol
        layer = layers.get(sym)
        if layer is None:
            raise VerifyException(f"{where}: layer @{sym} is not an accel.layer defined before it")
        where = f"{op.name} @{sym}"
        g = layer_key[2]
        if v["nt"] < 1 or v["t0"] + v["nt"] > g["timesteps"]:
            raise VerifyException(f"{where}: timesteps [{v['t0']}, {v['t0'] + v['nt']}) outside [0, {g['timesteps']})")
        if v["rows"] < 1 or v["row0"] + v["rows"] > g["out_h"]:
            raise VerifyException(f"{where}: rows [{v['row0']}, {v['row0'] + v['rows']}) outside the output height {g['out_h']}")
        if v["chs"] < 1 or v["ch0"] + v["chs"] > g["out_cs"]:
            raise VerifyException(f"{where}: channels [{v['ch0']}, {v['ch0'] + v['chs']}) outside out_cs {g['out_cs']}")
        spike_out = g["out_format"] in _SPIKE_OUT
        if (opcode == Opcode.PACK or (opcode in _SPIKE_TILE_OPCODES and spike_out)) and (v["chs"] % 8 or v["ch0"] % 8):
            raise VerifyException(f"{where}: a spike tile needs ch0 and chs multiples of 8, got {v['ch0']}, {v['chs']}")
        if opcode == Opcode.POOL and (v["ch0"] != 0 or v["chs"] != g["out_cs"]):
            raise VerifyException(f"{where}: a POOL tile covers all {g['out_cs']} channels")
        if opcode in _IN_ROWS_OPCODES and v["in_row0"] + v["in_rows"] > g["in_h"]:
            raise VerifyException(f"{where}: input rows [{v['in_row0']}, {v['in_row0'] + v['in_rows']}) outside in_h {g['in_h']}")
        if g["kind"] not in spec.layer_kinds:
            raise VerifyException(f"{where}: layer kind {LayerKind(g['kind']).name} cannot run {op.name}")
        g_values: dict[str, int] | None = g
    else:
        g_values = None
    for f in spec.enum_fields:
        wrong = f.value_error(v[f.name])
        if wrong:
            raise VerifyException(f"{where}: {wrong}")
    if opcode in isa.WEIGHT_FIBER_OPCODES:
        wrong = isa.weight_fiber_field_error(opcode, v)
        if wrong:
            raise VerifyException(f"{where}: {wrong}")
    operands = spec.sram_operands(v, g_values)
    for operand in operands:
        if operand.addr < 0 or operand.addr + operand.size > sram_size:
            raise VerifyException(
                f"{where}: {operand.field} range [{operand.addr:#x}, {operand.end:#x}) outside SRAM [0, {sram_size:#x})"
            )
    if opcode in _DMA_OPCODES and v["rows"] and v["row_bytes"]:
        end = v["dram_addr"] + (v["rows"] - 1) * v["dram_stride"] + v["row_bytes"]
        if end > dram_size:
            raise VerifyException(f"{where}: DRAM range ends at {end:#x}, beyond dram_size {dram_size:#x}")
    if opcode in _FIBER_DMA_OPCODES:
        if v["word_bytes"] not in (1, 2, 4, 8):
            raise VerifyException(f"{where}: word_bytes = {v['word_bytes']}, expected 1, 2, 4 or 8")
        if not 1 <= v["elem_bits"] <= 8 * v["word_bytes"]:
            raise VerifyException(f"{where}: elem_bits = {v['elem_bits']}, expected 1..{8 * v['word_bytes']}")
        wrong = isa.fiber_layout_error(v["fibers"], v["fiber_elems"], v["word_bytes"], v.get("sram_stride", 0),
                                       v.get("run_elems", 0), v.get("run_stride", 0))
        if wrong:
            raise VerifyException(f"{where}: {wrong}")
        end = isa.fiber_dma_end(v["dram_addr"], v["fibers"], v["fiber_elems"], v["elem_bits"], v["flags"])
        if end > dram_size:
            raise VerifyException(f"{where}: fibers end at {end:#x}, beyond dram_size {dram_size:#x}")
    return operands


ProgramOp.VERIFIES_HELD_OPS = (InstructionOp,)


class ProgramParts(NamedTuple):
    """The ops of an accel.program's body by kind, each in program order (ProgramOp.parts)."""

    constants: list[ConstOp]
    io_ops: list[IoOp]
    layers: list[LayerOp]
    instructions: list[InstructionOp]


_PART_KINDS = (ConstOp, IoOp, LayerOp, InstructionOp)

ACCEL = Dialect(
    "accel",
    [ProgramOp, LayerOp, ConstOp, IoOp, *INSTRUCTION_OPS],
    [],
)
