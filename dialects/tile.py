"""The `tile` dialect: the accelerator's compute and data-movement ops over tile buffers.

Level: the loop level, between `snn` and `accel`. A layer's execution is an explicit
loop nest (`scf.for`, bounds and index arithmetic in `arith`) over buffers that are
SSA values with a memory space:

    tile.map     a feature map in DRAM     memref<T x B x H x W x Cs x i1|i16|i32, "dram">
                 (format, fixed-point fraction, DRAM address once placed);
                 a packed (SPIKE_BITMASK) map is memref<B x H x W x Cs x iW, "dram">:
                 one all-T word per neuron, stored as bitmask fibers
    tile.alloc   a tile buffer in SRAM     memref<..., "sram"> (copies, SRAM offsets once placed)
    memref.global / memref.get_global      weights and parameter blocks in DRAM

and the accelerator's operations on tiles: `tile.load` / `tile.store` (a window of a
map <-> an SRAM tile), `tile.load_const`, `tile.syn`, `tile.lif`, `tile.pack`,
`tile.pool`, `tile.add`. Each compute op names its layer descriptor (`accel.layer`,
module level) and carries the tile it covers as index operands:

    b          batch index
    t0, nt     first timestep and timesteps of the visit (TPPE lanes)
    row0, rows first output row and rows of the tile
    ch0, chs   first output channel and channels of the tile

A `tile.kernel` is one scheduling unit (a layer, or a group of fused layers): its
region holds the buffers it allocates and its loop nest. Loops carry `tile.dim`
naming what they iterate over: "n" (output-channel tiles), "b" (batch), "m" (output
row tiles), "t" (timesteps: lane groups), "tb" (time batches), "k" (reduction
chunks), "band" (fused row bands); `tile.parallel` marks a t loop whose
iterations run on the TPPE lanes at once (FTP).

A buffer with `copies` > 1 rotates over the loops its `rotate` names (double
buffering: consecutive visits use different copies, so a transfer for the next can
overlap the compute of this one). The SRAM allocator (passes/sram_alloc.py) gives each copy an offset; until then
`offsets` is empty. The final lowering (passes/convert_loops_to_accel.py) walks the
nest, evaluates the index arithmetic and emits one `accel` instruction per op
instance: it decides nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    FloatAttr,
    IndexType,
    IntAttr,
    MemRefType,
    StringAttr,
    SymbolRefAttr,
    UnitAttr,
    f64,
    i64,
)
from xdsl.ir import Attribute, Block, Dialect, Operation, Region, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import NoTerminator
from xdsl.utils.exceptions import VerifyException

from snnc.backend.isa import Format

DRAM = StringAttr("dram")
SRAM = StringAttr("sram")
DIM_ATTR = "tile.dim"  # on scf.for: what the loop iterates over
PARALLEL_ATTR = "tile.parallel"  # on scf.for over t: the iterations run on the TPPE lanes at once
DIMS = ("tb", "k", "n", "b", "m", "t", "band", "part")  # part: the turns of split-synapse parts
TILE_COORDS = ("b", "t0", "nt", "row0", "rows", "ch0", "chs")
INDEX = IndexType()


def name_hint(text: str) -> str:
    """`text` as a valid SSA name hint: letters, digits, _ and ., not starting with a digit."""
    name = "".join(c if c.isalnum() or c in "_." else "_" for c in text).strip("_.") or "v"
    return f"v{name}" if name[0].isdigit() else name


def memory_space(value: SSAValue) -> str | None:
    t = value.type
    if isinstance(t, MemRefType) and isinstance(t.memory_space, StringAttr):
        return t.memory_space.data
    return None


def _parse_defined_operand(parser: Parser) -> SSAValue:
    """An operand that is defined above its use (every tile operand is): its type is known."""
    unresolved = parser.parse_unresolved_operand()
    values = parser.ssa_values.get(unresolved.operand_name)
    if values is None or unresolved.index >= len(values):
        parser.raise_error(f"%{unresolved.operand_name} is not defined before its use", unresolved.span)
    return values[unresolved.index]


# --------------------------------------------------------------------------------------
# Structure: kernels, maps, tile buffers
# --------------------------------------------------------------------------------------


@irdl_op_definition
class KernelOp(IRDLOperation):
    """One scheduling unit: a layer, or a group of fused layers, named after its first."""

    name = "tile.kernel"
    sym_name = prop_def(StringAttr)
    body = region_def("single_block")
    traits = traits_def(NoTerminator())

    def __init__(self, sym_name: str, ops: Sequence[Operation] = ()):
        super().__init__(properties={"sym_name": StringAttr(sym_name)}, regions=[Region(Block(list(ops)))])

    @property
    def block(self) -> Block:
        return self.body.block

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.sym_name.data)
        printer.print_string(" ")
        printer.print_region(self.body, print_entry_block_args=False, print_empty_block=True)
        if self.attributes:
            printer.print_string(" attributes ")
            printer.print_attr_dict(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> KernelOp:
        name = parser.parse_str_literal(" (the kernel name)")
        region = parser.parse_region()
        op = cls(name)
        op.body.detach_block(0)
        op.body.add_block(region.detach_block(0))
        if parser.parse_optional_keyword("attributes") is not None:
            op.attributes.update(parser.parse_optional_attr_dict())
        return op


def map_type(fmt: Format, timesteps: int, batch: int, height: int, width: int, cs: int) -> MemRefType:
    """The memref type of a DRAM feature map in `fmt` (see the module docstring)."""
    from xdsl.dialects.builtin import IntegerType

    if fmt == Format.SPIKE_BITMASK:
        word_bits = 8
        while word_bits < timesteps:
            word_bits *= 2
        return MemRefType(IntegerType(word_bits), [batch, height, width, cs], memory_space=DRAM)
    bits = {Format.SPIKE_PLANES: 1, Format.ACT_I16: 16, Format.ACT_I32: 32}[fmt]
    return MemRefType(IntegerType(bits), [timesteps, batch, height, width, cs], memory_space=DRAM)


@irdl_op_definition
class MapOp(IRDLOperation):
    """A feature map in DRAM: `[T][B][H][W][Cs]` channel-last (docs/architecture.md),
    `format` (isa.Format), `frac` fractional bits, `abs_max` a bound on |value| in real
    units, `channels` the logical channel count (Cs pads it to 8). `io` names the ONNX
    graph input or output it is; `slice` is the channels per fiber of a packed map;
    `addr` is its DRAM address (-1 until dram-alloc); `error` bounds |value - float
    reference| while the spikes feeding it agree (quantise; snnc verify uses it)."""

    name = "tile.map"
    label = prop_def(StringAttr)
    format = prop_def(IntAttr)
    frac = prop_def(IntAttr)
    abs_max = prop_def(FloatAttr)
    error = prop_def(FloatAttr)
    channels = prop_def(IntAttr)
    addr = prop_def(IntAttr)
    io = opt_prop_def(StringAttr)
    io_output = opt_prop_def(UnitAttr)
    mask_single = opt_prop_def(UnitAttr)
    slice = opt_prop_def(IntAttr)
    result = result_def(MemRefType)

    @classmethod
    def create_with(cls, label: str, fmt: Format, frac: int, abs_max: float, timesteps: int, batch: int,
                    channels: int, height: int, width: int, cs: int, error: float = 0.0) -> MapOp:
        return cls.create(
            properties={"label": StringAttr(label), "format": IntAttr(int(fmt)), "frac": IntAttr(frac),
                        "abs_max": FloatAttr(float(abs_max), f64), "error": FloatAttr(float(error), f64),
                        "channels": IntAttr(channels), "addr": IntAttr(-1)},
            result_types=[map_type(fmt, timesteps, batch, height, width, cs)])

    @property
    def fmt(self) -> Format:
        return Format(self.format.data)

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.label.data)
        printer.print_string(f" {self.fmt.name.lower()} frac={self.frac.data} channels={self.channels.data}")
        printer.print_string(f" abs_max={self.abs_max.value.data!r} error={self.error.value.data!r}")
        if self.io is not None:
            printer.print_string(" io=")
            printer.print_string_literal(self.io.data)
        if self.slice is not None:
            printer.print_string(f" slice={self.slice.data}")
        if self.mask_single is not None:
            printer.print_string(" mask_single")
        printer.print_string(f" addr={self.addr.data}")
        extra = {k: v for k, v in self.attributes.items()}
        if extra:
            printer.print_string(" ")
            printer.print_attr_dict(extra)
        printer.print_string(" : ")
        printer.print_attribute(self.result.type)

    @classmethod
    def parse(cls, parser: Parser) -> MapOp:
        label = parser.parse_str_literal(" (the map's label)")
        word = parser.parse_identifier(" (the map's format)")
        try:
            fmt = Format[word.upper()]
        except KeyError:
            parser.raise_error(f"tile.map: unknown format '{word}'")
        values: dict[str, object] = {}
        for name in ("frac", "channels"):
            parser.parse_keyword(name)
            parser.parse_punctuation("=")
            values[name] = parser.parse_integer()
        for name in ("abs_max", "error"):
            parser.parse_keyword(name)
            parser.parse_punctuation("=")
            values[name] = parser.parse_float()
        props: dict[str, Attribute] = {
            "label": StringAttr(label), "format": IntAttr(int(fmt)), "frac": IntAttr(values["frac"]),
            "channels": IntAttr(values["channels"]), "abs_max": FloatAttr(values["abs_max"], f64),
            "error": FloatAttr(values["error"], f64)}
        if parser.parse_optional_keyword("io") is not None:
            parser.parse_punctuation("=")
            props["io"] = StringAttr(parser.parse_str_literal())
        if parser.parse_optional_keyword("slice") is not None:
            parser.parse_punctuation("=")
            props["slice"] = IntAttr(parser.parse_integer())
        if parser.parse_optional_keyword("mask_single") is not None:
            props["mask_single"] = UnitAttr()
        parser.parse_keyword("addr")
        parser.parse_punctuation("=")
        props["addr"] = IntAttr(parser.parse_integer())
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        return cls.create(properties=props, attributes=attrs, result_types=[parser.parse_type()])

    def verify_(self) -> None:
        t = self.result.type
        if not isinstance(t, MemRefType) or t.memory_space != DRAM:
            raise VerifyException(f"tile.map '{self.label.data}': its type must be a memref in \"dram\"")
        rank = 4 if self.fmt == Format.SPIKE_BITMASK else 5
        if len(t.get_shape()) != rank:
            raise VerifyException(f"tile.map '{self.label.data}': a {self.fmt.name} map has rank {rank}")
        if t.get_shape()[-1] % 8:
            raise VerifyException(f"tile.map '{self.label.data}': stored channels must be a multiple of 8")


@irdl_op_definition
class AllocOp(IRDLOperation):
    """A tile buffer in SRAM, `copies` times. Copies rotate over the loops named in
    `rotate`: a use inside them takes copy (i mod copies), i being the position of the
    current iteration of those loops in their iteration space (row-major, outermost
    first). A buffer's content must not live from one iteration of a rotate loop to the
    next. `offsets` holds each copy's SRAM byte offset once sram-alloc has run. `role`
    names it in reports and errors (params, w0, in0, acc, state, spk, mem, out, ...)."""

    name = "tile.alloc"
    role = prop_def(StringAttr)
    copies = prop_def(IntAttr)
    rotate = prop_def(ArrayAttr[StringAttr])
    offsets = prop_def(DenseArrayBase)
    result = result_def(MemRefType)

    def __init__(self, role: str, buffer_type: MemRefType, copies: int = 1, rotate: Sequence[str] = ()):
        super().__init__(properties={"role": StringAttr(role), "copies": IntAttr(copies),
                                     "rotate": ArrayAttr([StringAttr(d) for d in rotate]),
                                     "offsets": DenseArrayBase.from_list(i64, [])},
                         result_types=[buffer_type])
        self.result.name_hint = name_hint(role)

    @property
    def rotate_dims(self) -> tuple[str, ...]:
        return tuple(d.data for d in self.rotate.data)

    def offset_list(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.offsets.get_values())

    def verify_(self) -> None:
        t = self.result.type
        if not isinstance(t, MemRefType) or t.memory_space != SRAM:
            raise VerifyException(f"tile.alloc '{self.role.data}': its type must be a memref in \"sram\"")
        if self.copies.data < 1:
            raise VerifyException(f"tile.alloc '{self.role.data}': copies must be >= 1")
        placed = self.offset_list()
        if placed and len(placed) != self.copies.data:
            raise VerifyException(f"tile.alloc '{self.role.data}': {len(placed)} offsets for {self.copies.data} copies")
        unknown = [d for d in self.rotate_dims if d not in DIMS]
        if unknown:
            raise VerifyException(f"tile.alloc '{self.role.data}': rotate names unknown loop dims {unknown}")

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.role.data)
        printer.print_string(f" copies={self.copies.data}")
        if self.rotate_dims:
            printer.print_string(" rotate=[" + ", ".join(self.rotate_dims) + "]")
        if self.offset_list():
            printer.print_string(" offsets=[" + ", ".join(f"{o:#x}" for o in self.offset_list()) + "]")
        printer.print_string(" : ")
        printer.print_attribute(self.result.type)

    @classmethod
    def parse(cls, parser: Parser) -> AllocOp:
        role = parser.parse_str_literal()
        parser.parse_keyword("copies")
        parser.parse_punctuation("=")
        copies = parser.parse_integer(allow_negative=False)
        rotate: list[str] = []
        if parser.parse_optional_keyword("rotate") is not None:
            parser.parse_punctuation("=")
            rotate = parser.parse_comma_separated_list(parser.Delimiter.SQUARE, parser.parse_identifier)
        offsets: list[int] = []
        if parser.parse_optional_keyword("offsets") is not None:
            parser.parse_punctuation("=")
            offsets = parser.parse_comma_separated_list(parser.Delimiter.SQUARE, parser.parse_integer)
        parser.parse_punctuation(":")
        op = cls(role, parser.parse_type(), copies, rotate)
        op.offsets = DenseArrayBase.from_list(i64, offsets)
        return op


# --------------------------------------------------------------------------------------
# Tile ops: `name=%value` operands in a fixed order, then flags
# --------------------------------------------------------------------------------------


class _TileOp(IRDLOperation):
    """An op whose operands are named groups printed as `name=%v` in OPERANDS order.
    Optional operands (OPTIONAL) are left out when absent."""

    OPERANDS: ClassVar[tuple[str, ...]] = ()
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    HAS_LAYER: ClassVar[bool] = True

    @classmethod
    def build_with(cls, layer: str | None = None, flags: Sequence[str] = (), **operands: SSAValue | None):
        missing = [n for n in cls.OPERANDS if operands.get(n) is None and n not in cls.OPTIONAL]
        if missing:
            raise ValueError(f"{cls.name}: missing operand(s) {missing}")
        unknown = set(operands) - set(cls.OPERANDS)
        if unknown:
            raise ValueError(f"{cls.name}: unknown operand(s) {sorted(unknown)}")
        props: dict[str, Attribute] = {}
        if cls.HAS_LAYER:
            props["layer"] = SymbolRefAttr(layer)
        for flag in flags:
            props[flag] = UnitAttr()
        args = [([operands[n]] if operands.get(n) is not None else []) if n in cls.OPTIONAL else operands[n]
                for n in cls.OPERANDS]
        return cls.build(operands=args, properties=props)

    @property
    def layer_symbol(self) -> str | None:
        ref = self.properties.get("layer")
        return ref.root_reference.data if isinstance(ref, SymbolRefAttr) else None

    def named_operands(self) -> dict[str, SSAValue]:
        out = {}
        for name in self.OPERANDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def print(self, printer: Printer) -> None:
        if self.HAS_LAYER:
            printer.print_string(" ")
            printer.print_symbol_name(self.layer_symbol)
        for name, value in self.named_operands().items():
            printer.print_string(f" {name}=")
            printer.print_operand(value)
        flags = sorted(k for k, v in self.properties.items() if isinstance(v, UnitAttr))
        if flags:
            printer.print_string(" {" + ", ".join(flags) + "}")

    @classmethod
    def parse(cls, parser: Parser):
        layer = parser.parse_symbol_name().data if cls.HAS_LAYER else None
        operands: dict[str, SSAValue] = {}
        for name in cls.OPERANDS:
            if name in cls.OPTIONAL and parser.parse_optional_keyword(name) is None:
                continue
            if name not in cls.OPTIONAL:
                parser.parse_keyword(name)
            parser.parse_punctuation("=")
            operands[name] = _parse_defined_operand(parser)
        flags: list[str] = []
        if parser.parse_optional_punctuation("{") is not None:
            flags = parser.parse_comma_separated_list(parser.Delimiter.NONE, parser.parse_identifier)
            parser.parse_punctuation("}")
        return cls.build_with(layer, flags, **operands)


def _coords() -> dict[str, object]:
    return {name: operand_def(IndexType) for name in TILE_COORDS}


@irdl_op_definition
class LoadOp(_TileOp):
    """DMA (or, for a map held in SRAM, MOVE) of a map window into an SRAM tile
    [nt][rows][W][chs]: timesteps t0.., batch b, rows row0.., channels ch0.."""

    name = "tile.load"
    OPERANDS: ClassVar[tuple[str, ...]] = ("src", "dst", *TILE_COORDS)
    HAS_LAYER: ClassVar[bool] = False
    src = operand_def(MemRefType)
    dst = operand_def(MemRefType)
    locals().update(_coords())


@irdl_op_definition
class StoreOp(_TileOp):
    """The SRAM tile [nt][rows][W][chs] `src` to the window of map `dst`."""

    name = "tile.store"
    OPERANDS: ClassVar[tuple[str, ...]] = ("src", "dst", *TILE_COORDS)
    HAS_LAYER: ClassVar[bool] = False
    src = operand_def(MemRefType)
    dst = operand_def(MemRefType)
    locals().update(_coords())


@irdl_op_definition
class LoadConstOp(_TileOp):
    """Output channels ch0..ch0+chs of a constant (weights [N][kh][kw][Cs_in], dense or
    as bitmask fibers; a parameter block whole) into an SRAM buffer."""

    name = "tile.load_const"
    OPERANDS: ClassVar[tuple[str, ...]] = ("src", "dst", "ch0", "chs")
    HAS_LAYER: ClassVar[bool] = False
    src = operand_def(MemRefType)
    dst = operand_def(MemRefType)
    ch0 = operand_def(IndexType)
    chs = operand_def(IndexType)


@irdl_op_definition
class InputRowsOp(IRDLOperation):
    """The input rows [in_row0, in_row0 + in_rows) that output rows [row0, row0 + rows) of a
    window op (kernel `k`, `stride`, `pad`, `dilation`) read inside an input of `height`
    rows, shifted by `offset` (the first row of a band)."""

    name = "tile.input_rows"
    row0 = operand_def(IndexType)
    rows = operand_def(IndexType)
    k = prop_def(IntAttr)
    stride = prop_def(IntAttr)
    pad = prop_def(IntAttr)
    dilation = prop_def(IntAttr)
    height = prop_def(IntAttr)
    in_row0 = result_def(IndexType)
    in_rows = result_def(IndexType)
    PARAMS: ClassVar[tuple[str, ...]] = ("k", "stride", "pad", "dilation", "height")

    def __init__(self, row0: SSAValue, rows: SSAValue, k: int, stride: int, pad: int, dilation: int, height: int):
        super().__init__(operands=[row0, rows], result_types=[INDEX, INDEX], properties={
            "k": IntAttr(k), "stride": IntAttr(stride), "pad": IntAttr(pad), "dilation": IntAttr(dilation),
            "height": IntAttr(height)})

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_operand(self.row0)
        printer.print_string(", ")
        printer.print_operand(self.rows)
        for name in self.PARAMS:
            printer.print_string(f" {name}={self.properties[name].data}")

    @classmethod
    def parse(cls, parser: Parser) -> InputRowsOp:
        row0 = parser.parse_operand(INDEX)
        parser.parse_punctuation(",")
        rows = parser.parse_operand(INDEX)
        values = {}
        for name in cls.PARAMS:
            parser.parse_keyword(name)
            parser.parse_punctuation("=")
            values[name] = parser.parse_integer()
        return cls(row0, rows, values["k"], values["stride"], values["pad"], values["dilation"], values["height"])

    def evaluate(self, row0: int, rows: int) -> tuple[int, int]:
        first = row0 * self.stride.data - self.pad.data
        last = (row0 + rows - 1) * self.stride.data - self.pad.data + (self.k.data - 1) * self.dilation.data
        height = self.height.data
        lo, hi = max(0, first), min(height - 1, last)
        return (lo, hi - lo + 1) if hi >= lo else (min(max(first, 0), height - 1), 0)


@irdl_op_definition
class SynOp(_TileOp):
    """TPPEs: the synaptic currents of a tile (accel `syn`). `accumulate` adds to the
    accumulator (a second synapse of a residual group, a later k-chunk or band)."""

    name = "tile.syn"
    OPERANDS: ClassVar[tuple[str, ...]] = ("inp", "weights", "params", "acc", *TILE_COORDS, "in_row0", "in_rows")
    inp = operand_def(MemRefType)
    weights = operand_def(MemRefType)
    params = operand_def(MemRefType)
    acc = operand_def(MemRefType)
    locals().update(_coords())
    in_row0 = operand_def(IndexType)
    in_rows = operand_def(IndexType)
    layer = prop_def(SymbolRefAttr)
    accumulate = opt_prop_def(UnitAttr)


@irdl_op_definition
class LifOp(_TileOp):
    """P-LIF: fire the tile's neurons for timesteps t0..t0+nt-1 (accel `lif`); state is
    kept in `state` between visits; `mem` receives the membrane trace when it is stored."""

    name = "tile.lif"
    OPERANDS: ClassVar[tuple[str, ...]] = ("acc", "params", "state", "spk", "mem", *TILE_COORDS)
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"mem"})
    acc = operand_def(MemRefType)
    params = operand_def(MemRefType)
    state = operand_def(MemRefType)
    spk = operand_def(MemRefType)
    mem = opt_operand_def(MemRefType)
    locals().update(_coords())
    layer = prop_def(SymbolRefAttr)
    irdl_options = (AttrSizedOperandSegments(as_property=True),)


@irdl_op_definition
class PackOp(_TileOp):
    """Compressor: spike words to the layer's output storage format (accel `pack`)."""

    name = "tile.pack"
    OPERANDS: ClassVar[tuple[str, ...]] = ("spk", "out", *TILE_COORDS)
    spk = operand_def(MemRefType)
    out = operand_def(MemRefType)
    locals().update(_coords())
    layer = prop_def(SymbolRefAttr)


@irdl_op_definition
class PoolOp(_TileOp):
    """Max or average pooling of a tile (accel `pool`)."""

    name = "tile.pool"
    OPERANDS: ClassVar[tuple[str, ...]] = ("inp", "out", *TILE_COORDS, "in_row0", "in_rows")
    inp = operand_def(MemRefType)
    out = operand_def(MemRefType)
    locals().update(_coords())
    in_row0 = operand_def(IndexType)
    in_rows = operand_def(IndexType)
    layer = prop_def(SymbolRefAttr)


@irdl_op_definition
class AddOp(_TileOp):
    """Elementwise add (or SEW OR / AND) of two tiles (accel `add`)."""

    name = "tile.add"
    OPERANDS: ClassVar[tuple[str, ...]] = ("a", "b_in", "out", *TILE_COORDS)
    a = operand_def(MemRefType)
    b_in = operand_def(MemRefType)
    out = operand_def(MemRefType)
    locals().update(_coords())
    layer = prop_def(SymbolRefAttr)


COMPUTE_OPS = (SynOp, LifOp, PackOp, PoolOp, AddOp)
MOVE_OPS = (LoadOp, StoreOp, LoadConstOp)

TILE = Dialect(
    "tile",
    [KernelOp, MapOp, AllocOp, LoadOp, StoreOp, LoadConstOp, InputRowsOp,
     SynOp, LifOp, PackOp, PoolOp, AddOp],
    [],
)

__all__ = [
    "TILE", "DRAM", "SRAM", "DIM_ATTR", "PARALLEL_ATTR", "DIMS", "TILE_COORDS",
    "KernelOp", "MapOp", "AllocOp", "LoadOp", "StoreOp", "LoadConstOp", "InputRowsOp",
    "SynOp", "LifOp", "PackOp", "PoolOp", "AddOp", "COMPUTE_OPS", "MOVE_OPS", "map_type", "memory_space",
]
