"""Splitting one synapse into parts of its reduction: k-chunks of input channels, or row bands.

Not a pass: loop-reorder (the op and gust dataflows walk K a chunk of input channels at a
time) and tile-sizes (a whole-map kernel too large for the SRAM streams in row bands)
call it. Each part is a synapse of its own: a layer descriptor with the part's input
geometry (the first part keeps the original descriptor, which the LIF and PACK of a
group name), its own weights global (the slice of the integers; fibers again if the
original was compressed), its weight and input buffers, the load of its input window,
and a `tile.syn` that accumulates after the first. The parts replace the original ops
where they were, in order: part 0's buffers, loads and syn first.

`shared_buffers` (bands): every part uses one weight and one input buffer ("band_w",
"band_in"), rotating over the parts (`tile.part` on each op, the `part` rotate dim).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects import arith, memref
from xdsl.dialects.builtin import IntAttr, IntegerAttr, IntegerType, ModuleOp, StringAttr, i64
from xdsl.ir import Operation

from snnc.backend.errors import CompileError
from snnc.dialects import accel, tile
from snnc.passes.compress_weights import compress_global, dense_weights, is_compressed
from snnc.passes.convert_snn_to_loops import PLACEHOLDER, const_global, get_global
from snnc.passes.footprints import buffer_of, global_of
from snnc.passes.loop_module import globals_of, layer_table, module_symbols, unique_symbol
from snnc.passes.loopnest import const, const_value

PART_ATTR = "tile.part"  # on the ops of part i of a split synapse sharing buffers
PARTS_ATTR = "tile.parts"  # on the buffers they share: how many parts take turns


@dataclass(frozen=True)
class Part:
    start: int  # first input channel (channels) or input row (rows)
    size: int


def _users(buf: tile.AllocOp, kind: type) -> list[Operation]:
    return [use.operation for use in buf.result.uses if isinstance(use.operation, kind)]


def _one(ops: list[Operation], what: str, where: str) -> Operation:
    if len(ops) != 1:
        raise CompileError(f"'{where}': cannot split: its {what} has {len(ops)} writers, expected 1")
    return ops[0]


def split_synapse(module: ModuleOp, syn: tile.SynOp, parts: list[Part], axis: str,
                  shared_buffers: bool = False) -> list[tile.SynOp]:
    """Replace `syn` by one synapse per part of its reduction along `axis` ("channels" or "rows")."""
    layers, globs = layer_table(module), globals_of(module)
    layer = layers[syn.layer_symbol]
    where = layer.source.data
    w_buf, in_buf = buffer_of(syn.weights), buffer_of(syn.inp)
    w_load = _one(_users(w_buf, tile.LoadConstOp), "weight buffer", where)
    in_load = _one(_users(in_buf, tile.LoadOp), "input buffer", where)
    glob = global_of(w_load.src)
    ints = dense_weights(glob)
    compressed = is_compressed(glob) and not shared_buffers  # row bands stream dense band buffers
    taken = module_symbols(module)
    shared = None
    if shared_buffers:
        shared = (tile.AllocOp("band_w", PLACEHOLDER, rotate=in_buf.rotate_dims + ("part",)),
                  tile.AllocOp("band_in", PLACEHOLDER, rotate=in_buf.rotate_dims + ("part",)))
        for buf in shared:
            buf.attributes[PARTS_ATTR] = IntegerAttr(len(parts), i64)
    new_syns: list[tile.SynOp] = []
    original = layer.clone()  # part 0 reshapes `layer` itself (the LIF and PACK of a group name it)
    for index, part in enumerate(parts):
        sym = layer.symbol if index == 0 else unique_symbol(where, taken)
        descriptor = layer if index == 0 else original.clone()
        _reshape_descriptor(descriptor, original, sym, part, axis)
        if index:
            module.body.block.insert_op_after(descriptor, list(layer_table(module).values())[-1])
        piece = ints[..., part.start:part.start + part.size] if axis == "channels" else \
            ints[:, part.start:part.start + part.size]
        new_glob = const_global(unique_symbol(f"w_{sym}", taken), np.ascontiguousarray(piece), glob.type.element_type
                                if not is_compressed(glob) else IntegerType(_bits(glob)))
        module.body.block.insert_op_after(new_glob, list(globs.values())[-1])
        globs[new_glob.sym_name.data] = new_glob
        if compressed:
            compress_global(new_glob, module)
        new_syns.append(_emit_part(syn, w_buf, in_buf, w_load, in_load, new_glob, sym, part, axis, index, shared))
    for op in (syn, in_load, w_load):
        op.detach()
        op.erase()
    for buf in (in_buf, w_buf):
        if not buf.result.uses:
            buf.detach()
            buf.erase()
    if not any(isinstance(o, memref.GetGlobalOp) and o.name_.root_reference.data == glob.sym_name.data
               for o in module.walk()):
        glob.detach()
        glob.erase()
    return new_syns


def _bits(glob: memref.GlobalOp) -> int:
    return int(glob.attributes["tile.fiber_bits"].get_values()[0])


def _reshape_descriptor(layer: accel.LayerOp, original: accel.LayerOp, sym: str, part: Part, axis: str) -> None:
    layer.properties["sym_name"] = StringAttr(sym)
    if axis == "channels":
        in_c = original.get("in_c")
        layer.properties["in_c"] = IntAttr(max(0, min(in_c, part.start + part.size) - part.start))
        layer.properties["in_cs"] = IntAttr(part.size)
    else:
        layer.properties["in_h"] = IntAttr(part.size)
        layer.properties["kh"] = IntAttr(part.size)


def _emit_part(syn, w_buf, in_buf, w_load, in_load, glob, sym, part, axis, index, shared) -> tile.SynOp:
    ref = get_global(glob)
    if shared is not None:
        w_new, in_new = shared
        if index == 0:
            w_buf.parent_block().insert_ops_before([w_new, in_new], w_buf)
    else:
        w_new = tile.AllocOp(f"w{index}" if axis == "channels" else "band_w", PLACEHOLDER, w_buf.copies.data,
                             w_buf.rotate_dims)
        in_new = tile.AllocOp(f"in{index}", PLACEHOLDER, in_buf.copies.data, in_buf.rotate_dims)
        w_buf.parent_block().insert_ops_before([w_new, in_new], w_buf)
    kernel_block = w_buf.parent_block()
    kernel_block.insert_op_before(ref, kernel_block.first_op)
    load_w = tile.LoadConstOp.build_with(src=ref.memref, dst=w_new.result, ch0=w_load.ch0, chs=w_load.chs)
    if shared is None:
        w_load.parent_block().insert_op_before(load_w, w_load)
    window = {name: getattr(in_load, name) for name in tile.TILE_COORDS}
    extra: list[Operation] = []
    in_row0, in_rows = syn.in_row0, syn.in_rows
    if axis == "channels":
        ch0, chs = const(part.start), const(part.size)
        offset = const(_const(in_load.ch0) + part.start)
        extra += [ch0, chs, offset]
        window.update(ch0=offset.result, chs=chs.result)
    else:
        rows = tile.InputRowsOp(syn.row0, syn.rows, part.size, 1, 0, 1, part.size)
        offset = const(part.start)
        shifted = arith.AddiOp(rows.in_row0, offset.result)
        extra += [rows, offset, shifted]
        window.update(row0=shifted.result, rows=rows.in_rows)
        in_row0, in_rows = rows.in_row0, rows.in_rows
    load_in = tile.LoadOp.build_with(src=in_load.src, dst=in_new.result, **window)
    flags = ["accumulate"] if index or syn.accumulate is not None else []
    new = tile.SynOp.build_with(sym, flags, inp=in_new.result, weights=w_new.result, params=syn.params,
                                acc=syn.acc, in_row0=in_row0, in_rows=in_rows,
                                **{name: getattr(syn, name) for name in tile.TILE_COORDS})
    ops = [*extra, load_in, new] if shared is None else [load_w, *extra, load_in, new]  # a band's weights per visit
    if shared is not None:
        for op in (load_w, load_in, new):
            op.attributes[PART_ATTR] = IntegerAttr(index, i64)
    syn.parent_block().insert_ops_before(ops, syn)
    return new


def _const(value) -> int:
    c = const_value(value)
    if c is None:
        raise CompileError("split: the input load's first channel must be a constant")
    return c
