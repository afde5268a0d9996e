"""SRAM footprints of the tile ops, and the buffer types that follow from the loop steps.

Not a pass: tile-sizes and a user's tiling pass call `infer_buffer_types` after they
change loop steps, so every `tile.alloc` holds exactly its largest tile. A tile op's
operand holds, for the largest value of each tile coordinate (`loopnest.upper`):

    map tile (load dst / store src)   [nt][rows][W][chs] in the map's element type;
                                      a packed map's tile is its words [rows][W][chs]
    weights (load_const dst, syn)     [chs][kh][kw][Cs_in], or the largest channel
                                      tile's fiber bytes when kept compressed
    parameters                        [bias out_c + 3 x param_c] int32
    syn input / pool input            [nt][in_rows][W_in][Cs_in] in the layer's in_format
    accumulator, membrane             [nt][rows][Wo][chs] int32
    neuron state                      [2][rows][Wo][chs] int32 (v, s_prev)
    spike words                       [rows][Wo][chs], one word of nt bits each
    pack / pool / add output          the layer's out_format, as a map tile
These are the isa.py tile layouts of the instructions the tile ops become.
"""

from __future__ import annotations

import functools
import math
import weakref

from xdsl.dialects import memref
from xdsl.dialects.builtin import IntegerType, MemRefType
from xdsl.ir import Block, Operation, SSAValue
from xdsl.rewriter import Rewriter
from xdsl.traits import SymbolTable

from snnc.backend import isa
from snnc.backend.isa import Format
from snnc.dialects import accel, tile
from snnc.passes.loopnest import Steps, loop_of, upper

WORD_FORMATS = (Format.SPIKE_WORDS, Format.SPIKE_BITMASK)
FIBER_OFFSETS_ATTR = "tile.fiber_offsets"  # on a memref.global of compressed weights: N+1 fiber starts
Shape = tuple[tuple[int, ...], int]  # (shape, bits per element)
_GLOBALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # memref.get_global -> its memref.global


def word_bits(timesteps: int) -> int:
    return 8 * isa.spike_word_bytes(timesteps)


def shape_bytes(shape: Shape) -> int:
    dims, bits = shape
    return (math.prod(dims) * bits + 7) // 8


@functools.lru_cache(maxsize=4096)
def _sram_type(dims: tuple[int, ...], bits: int) -> MemRefType:
    return MemRefType(IntegerType(bits), dims, memory_space=tile.SRAM)


def sram_type(shape: Shape) -> MemRefType:
    """The memref type of an SRAM tile (types are immutable: shared between buffers)."""
    return _sram_type(tuple(shape[0]), shape[1])


def type_bytes(t: MemRefType) -> int:
    bits = t.element_type.width.data if isinstance(t.element_type, IntegerType) else 32
    return (math.prod(t.get_shape()) * bits + 7) // 8


def format_tile(fmt: Format, nt: int, rows: int, width: int, chs: int, timesteps: int) -> Shape:
    if fmt in WORD_FORMATS:
        return (rows, width, chs), word_bits(timesteps)
    return (nt, rows, width, chs), {Format.SPIKE_PLANES: 1, Format.ACT_I16: 16, Format.ACT_I32: 32}[fmt]


def global_of(value: SSAValue) -> memref.GlobalOp | None:
    """The memref.global a `memref.get_global` value names."""
    owner = value.owner
    if not isinstance(owner, memref.GetGlobalOp):
        return None
    found = _GLOBALS.get(owner)
    if found is None or found.sym_name.data != owner.name_.root_reference.data or found.parent is None:
        found = SymbolTable.lookup_symbol(owner, owner.name_)
        if not isinstance(found, memref.GlobalOp):
            return None
        _GLOBALS[owner] = found
    return found


_FIBERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # global -> (its offsets attr, the ints)


def fiber_offsets(glob: memref.GlobalOp) -> tuple[int, ...] | None:
    """The N+1 fiber starts of a compressed weights global (None for dense weights)."""
    attr = glob.attributes.get(FIBER_OFFSETS_ATTR)
    if attr is None:
        return None
    cached = _FIBERS.get(glob)
    if cached is None or cached[0] is not attr:
        cached = _FIBERS[glob] = (attr, tuple(int(v) for v in attr.get_values()))
    return cached[1]


def channel_tiles(ch0: SSAValue, chs: SSAValue, steps: Steps | None) -> list[tuple[int, int]]:
    """Every (ch0, chs) a load takes: its ch0 is a loop's induction variable, or constant."""
    loop = loop_of(ch0)
    if loop is None:
        return [(upper(ch0, steps), upper(chs, steps))]
    overrides = steps[0] if isinstance(steps, tuple) else steps
    step = overrides.get(loop.op, loop.step) if overrides else loop.step
    return [(c, min(step, loop.upper - c)) for c in range(loop.lower, loop.upper, step)]


def const_footprint(op: tile.LoadConstOp, steps: Steps | None = None) -> Shape:
    glob = global_of(op.src)
    src_type = op.src.type
    offsets = fiber_offsets(glob) if glob is not None else None
    if offsets is not None:  # compressed weights kept compressed: the largest channel tile's fibers
        largest = max(offsets[c + n] - offsets[c] for c, n in channel_tiles(op.ch0, op.chs, steps))
        return (largest,), 8
    shape, bits = src_type.get_shape(), src_type.element_type.width.data
    if len(shape) == 1:  # a parameter block: whole
        return shape, bits
    return (upper(op.chs, steps), *shape[1:]), bits


def const_bytes(op: tile.LoadConstOp, ch0: int, chs: int) -> int:
    """DRAM bytes a constant load of channels ch0..ch0+chs moves: the channels' fibers of
    compressed weights, a parameter block whole, else the channels' dense weights."""
    glob = global_of(op.src)
    offsets = fiber_offsets(glob) if glob is not None else None
    if offsets is not None:
        return offsets[ch0 + chs] - offsets[ch0]
    shape, bits = op.src.type.get_shape(), op.src.type.element_type.width.data
    if len(shape) == 1:
        return shape[0] * bits // 8
    return chs * math.prod(shape[1:]) * bits // 8


def map_format(map_value: SSAValue) -> Format:
    """The storage format of a map: a DRAM tile.map's, or a ring buffer's by its element type."""
    owner = map_value.owner
    if isinstance(owner, tile.MapOp):
        return owner.fmt
    bits = map_value.type.element_type.width.data
    return {1: Format.SPIKE_PLANES, 16: Format.ACT_I16, 32: Format.ACT_I32}[bits]


def _map_tile(op: tile.LoadOp | tile.StoreOp, map_value: SSAValue, timesteps: int, steps: Steps | None) -> Shape:
    width = map_value.type.get_shape()[-2]
    return format_tile(map_format(map_value), upper(op.nt, steps), upper(op.rows, steps), width,
                       upper(op.chs, steps), timesteps)


def operand_footprints(op: Operation, layers: dict[str, accel.LayerOp], timesteps: int,
                       steps: Steps | None = None) -> dict[str, Shape]:
    """The SRAM operands of a tile op (by operand name) and the largest tile each holds
    (with the loops in `steps` taking those steps)."""
    if isinstance(op, tile.LoadOp):
        return {"dst": _map_tile(op, op.src, timesteps, steps)}
    if isinstance(op, tile.StoreOp):
        return {"src": _map_tile(op, op.dst, timesteps, steps)}
    if isinstance(op, tile.LoadConstOp):
        return {"dst": const_footprint(op, steps)}
    layer = layers[op.layer_symbol]
    g = layer.get
    nt, rows, chs = upper(op.nt, steps), upper(op.rows, steps), upper(op.chs, steps)
    i32 = 32
    acc = ((nt, rows, g("out_w"), chs), i32)
    if isinstance(op, tile.SynOp | tile.PoolOp):
        in_tile = format_tile(Format(g("in_format")), nt, upper(op.in_rows, steps), g("in_w"), g("in_cs"), timesteps)
        if isinstance(op, tile.PoolOp):
            return {"inp": in_tile,
                    "out": format_tile(Format(g("out_format")), nt, rows, g("out_w"), chs, timesteps)}
        return {"inp": in_tile, "acc": acc}
    if isinstance(op, tile.LifOp):
        out = {"acc": acc, "state": ((2, rows, g("out_w"), chs), i32), "spk": ((rows, g("out_w"), chs), word_bits(nt))}
        if op.mem is not None:
            out["mem"] = acc
        return out
    if isinstance(op, tile.PackOp):
        return {"spk": ((rows, g("out_w"), chs), word_bits(nt)),
                "out": format_tile(Format(g("out_format")), nt, rows, g("out_w"), chs, timesteps)}
    if isinstance(op, tile.AddOp):
        width = g("in_w")
        return {"a": format_tile(Format(g("in_format")), nt, rows, width, chs, timesteps),
                "b_in": format_tile(Format(g("in2_format")), nt, rows, width, chs, timesteps),
                "out": format_tile(Format(g("out_format")), nt, rows, width, chs, timesteps)}
    return {}


def buffer_of(value: SSAValue) -> tile.AllocOp | None:
    """The tile.alloc a value is."""
    owner = value.owner
    return owner if isinstance(owner, tile.AllocOp) else None


_TILE_OPS = (*tile.COMPUTE_OPS, *tile.MOVE_OPS)


def largest_tiles(block: Block, layers: dict[str, accel.LayerOp], timesteps: int,
                  steps: Steps | None = None, ops: list[Operation] | None = None) -> dict[tile.AllocOp, Shape]:
    """Per tile.alloc of `block`: the largest tile its users hold (`ops`: the block's tile ops,
    when the caller has them)."""
    largest: dict[tile.AllocOp, Shape] = {}
    memo: dict = {}
    for op in ops if ops is not None else tile_ops(block):
        for name, shape in operand_footprints(op, layers, timesteps, (steps, memo)).items():
            buf = buffer_of(getattr(op, name))
            if buf is None:
                continue
            if buf not in largest or shape_bytes(shape) > shape_bytes(largest[buf]):
                largest[buf] = shape
    return largest


def tile_ops(block: Block) -> list[Operation]:
    return nested_ops(block, _TILE_OPS)


def nested_ops(block: Block, kind: type | tuple[type, ...]) -> list[Operation]:
    """The ops of `block` and of every region nested in it that are `kind`s, in walk order
    (`[op for op in block.walk() if isinstance(op, kind)]`). The search costs hundreds of
    kernels and asks each what it holds several times: xdsl's walk is a generator per op,
    this a loop over the linked ops, the isinstance test made once per op class."""
    out: list[Operation] = []
    is_kind: dict[type, bool] = {}

    def visit(inner: Block) -> None:
        op = inner.first_op
        while op is not None:
            cls = type(op)
            hit = is_kind.get(cls)
            if hit is None:
                hit = is_kind[cls] = issubclass(cls, kind)
            if hit:
                out.append(op)
            for region in op.regions:
                for nested in region.blocks:
                    visit(nested)
            op = op.next_op

    visit(block)
    return out


def infer_buffer_types(block: Block, layers: dict[str, accel.LayerOp], timesteps: int) -> None:
    """Give every tile.alloc in `block` the type of the largest tile its users hold."""
    for buf, shape in largest_tiles(block, layers, timesteps).items():
        t = buf.result.type
        if tuple(t.get_shape()) != tuple(shape[0]) or t.element_type.width.data != shape[1]:
            set_buffer_type(buf, sram_type(shape))


def set_buffer_type(buf: tile.AllocOp, new_type: MemRefType) -> None:
    hint = buf.result.name_hint
    Rewriter.replace_value_with_new_type(buf.result, new_type)
    buf.result.name_hint = hint


def role(value: SSAValue) -> str:
    buf = buffer_of(value)
    return buf.role.data if buf is not None else "?"


def kernel_buffers(kernel: tile.KernelOp) -> list[tile.AllocOp]:
    """Every buffer of the kernel, its members' included."""
    return nested_ops(kernel.body.block, tile.AllocOp)


def own_buffers(kernel: tile.KernelOp) -> list[tile.AllocOp]:
    """The buffers that live for the whole kernel (not inside a member kernel)."""
    return [op for op in _walk_own(kernel.body.block) if isinstance(op, tile.AllocOp)]


def members(kernel: tile.KernelOp) -> list[tile.KernelOp]:
    """The member kernels of a fused kernel, in order (none for a layer)."""
    return nested_ops(kernel.body.block, tile.KernelOp)


def _walk_own(block):
    for op in block.ops:
        yield op
        if isinstance(op, tile.KernelOp):
            continue
        for region in op.regions:
            for inner in region.blocks:
                yield from _walk_own(inner)


def buffer_bytes(buf: tile.AllocOp) -> int:
    return type_bytes(buf.result.type)


def is_sram(value: SSAValue) -> bool:
    t = value.type
    return isinstance(t, MemRefType) and t.memory_space == tile.SRAM

