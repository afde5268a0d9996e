"""The loop nests convert-snn-to-loops builds (its module docstring gives their shape).

Not a pass: `Nest` is the plain n? > b > m > t nest of one kernel around a body (one
tile per loop, t over the TPPE lanes), `GroupNest` a synaptic group's nest with its
visit body (load, syn, [store the current], lif, [store the membrane], pack, store).
Also the placeholder buffer type and the constant globals the lowering emits.
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects import arith, memref
from xdsl.dialects.builtin import (
    BytesAttr,
    DenseIntOrFPElementsAttr,
    IntegerType,
    MemRefType,
    StringAttr,
    TensorType,
    UnitAttr,
)
from xdsl.ir import Operation, SSAValue

from snnc.dialects import accel, tile
from snnc.passes.loopnest import const, loop_extent, new_loop
from snnc.passes.step_records import GroupStep, pad8, source_name

PLACEHOLDER = MemRefType(IntegerType(8), [1], memory_space=tile.SRAM)  # until infer_buffer_types
WEIGHTS_CONST_PREFIX = "w_"  # memref.global symbols: a layer's weights,
PARAMS_CONST_PREFIX = "p_"  # and a synaptic group's parameter block
VISIT_DIMS = ("tb", "k", "n", "b", "m", "t", "band")  # a per-visit buffer rotates over every loop
TILE_DIMS = ("n", "b", "m")  # the neuron state belongs to an output tile


def const_global(sym: str, data: np.ndarray, element: IntegerType) -> memref.GlobalOp:
    """An integer array as a constant memref.global in DRAM (little-endian bytes)."""
    shape = list(data.shape)
    body = DenseIntOrFPElementsAttr(TensorType(element, shape), BytesAttr(np.ascontiguousarray(data).tobytes()))
    return memref.GlobalOp.get(StringAttr(sym), MemRefType(element, shape, memory_space=tile.DRAM), body,
                               constant=UnitAttr())


def get_global(glob: memref.GlobalOp) -> memref.GetGlobalOp:
    op = memref.GetGlobalOp(glob.sym_name.data, glob.type)
    op.memref.name_hint = glob.sym_name.data
    return op


class Nest:
    """Builds the plain nest n? > b > m > t of one kernel around a body."""

    def __init__(self, buffers: list[tile.AllocOp], batch: int, height: int, timesteps: int, lanes: int,
                 channels: int | None = None):
        self.buffers = buffers
        self.outer: list[Operation] = []
        self.loops = []
        if channels is not None:
            ops, n = new_loop("n", 0, channels, channels)
            self.outer.extend(ops)
            self.loops.append(n)
        for dim, upper_bound, step, parallel in (("b", batch, 1, False), ("m", height, height, False),
                                                 ("t", timesteps, lanes, True)):
            ops, loop = new_loop(dim, 0, upper_bound, step, parallel)
            (self.loops[-1].body.insert_ops_before(ops, self.loops[-1].body.last_op) if self.loops
             else self.outer.extend(ops))
            self.loops.append(loop)
        self.extents = {}
        for loop in self.loops:
            if loop.dim == "b":
                continue
            ops, size = loop_extent(loop)
            loop.body.insert_ops_before(ops, loop.body.first_op)
            self.extents[loop.dim] = size
        by_dim = {loop.dim: loop for loop in self.loops}
        self.by_dim = by_dim
        self.row0, self.rows = by_dim["m"].iv, self.extents["m"]

    def coords(self, ch0, chs) -> dict[str, SSAValue]:
        t = self.by_dim["t"]
        return dict(b=self.by_dim["b"].iv, t0=t.iv, nt=self.extents["t"], row0=self.row0, rows=self.rows,
                    ch0=SSAValue.get(ch0), chs=SSAValue.get(chs))

    def map_window(self, row0, rows, ch0, chs) -> dict[str, SSAValue]:
        out = self.coords(ch0, chs)
        out.update(row0=SSAValue.get(row0), rows=SSAValue.get(rows))
        return out

    def body(self, ops: list[Operation]) -> None:
        innermost = self.loops[-1].body
        innermost.insert_ops_before(ops, innermost.last_op)

    def kernel(self, name: str, layers: dict[str, accel.LayerOp], timesteps: int, prologue=()) -> tile.KernelOp:
        return tile.KernelOp(name, [*self.buffers, *prologue, *self.outer])


class GroupNest:
    """The nest of a synaptic group (see the module docstring)."""

    def __init__(self, lowering, step: GroupStep, syms: list[str], weights: list[memref.GlobalOp],
                 params: memref.GlobalOp):
        self.lw, self.step, self.syms, self.weights, self.params = lowering, step, syms, weights, params

    def kernel(self) -> tile.KernelOp:
        step, lw = self.step, self.lw
        param_ref = get_global(self.params)
        params = tile.AllocOp("params", PLACEHOLDER)
        weight_refs = [get_global(g) for g in self.weights]
        bufs: list[tile.AllocOp] = [params]
        w_bufs, in_bufs = [], []
        for i in range(len(step.synapses)):  # w0, in0, w1, in1: the allocation order
            w_bufs.append(tile.AllocOp(f"w{i}", PLACEHOLDER, rotate=("n",)))
            in_bufs.append(tile.AllocOp(f"in{i}", PLACEHOLDER, rotate=VISIT_DIMS))
            bufs += [w_bufs[-1], in_bufs[-1]]
        acc = tile.AllocOp("acc", PLACEHOLDER, rotate=VISIT_DIMS)
        bufs.append(acc)
        named = {"acc": acc}
        if step.lif is not None:
            for role, rotate, used in (("state", TILE_DIMS, True), ("spk", VISIT_DIMS, True),
                                       ("mem", VISIT_DIMS, step.membrane_out is not None),
                                       ("out", VISIT_DIMS, step.spikes_out is not None)):
                if used:
                    named[role] = tile.AllocOp(role, PLACEHOLDER, rotate=rotate)
                    bufs.append(named[role])
        nest = Nest(bufs, step.batch, step.out_h, lw.T, lw.lanes, channels=pad8(step.out_c))
        n = nest.by_dim["n"]
        c0 = const(0)
        p_size = const(self.params.type.get_shape()[0])
        prologue = [param_ref, *weight_refs, c0, p_size,
                    tile.LoadConstOp.build_with(src=param_ref.memref, dst=params.result, ch0=c0.result,
                                                chs=p_size.result)]
        n.body.insert_ops_after([tile.LoadConstOp.build_with(src=ref.memref, dst=w.result, ch0=n.iv,
                                                             chs=nest.extents["n"])
                                 for ref, w in zip(weight_refs, w_bufs)], nest.extents["n"].owner)
        nest.body(self._visit(nest, params, w_bufs, in_bufs, named))
        return nest.kernel(source_name(step.head.op), lw.layer_by_sym, lw.T, prologue)

    def _visit(self, nest: Nest, params, w_bufs, in_bufs, named) -> list[Operation]:
        step, maps = self.step, self.lw.maps
        coords = nest.coords(nest.by_dim["n"].iv, nest.extents["n"])
        ops: list[Operation] = []
        for i, s in enumerate(step.synapses):
            rows = tile.InputRowsOp(nest.row0, nest.rows, s.kh, s.stride[0], s.pads[0], s.dil[0], s.in_h)
            ch0, chs = const(s.ch_offset), const(s.in_cs)
            ops += [rows, ch0, chs]
            load_row0 = rows.in_row0
            if s.row_offset:
                offset = const(s.row_offset)
                shifted = arith.AddiOp(rows.in_row0, offset.result)
                ops += [offset, shifted]
                load_row0 = shifted.result
            ops.append(tile.LoadOp.build_with(src=maps[id(s.src.fmap)], dst=in_bufs[i].result,
                                              **nest.map_window(load_row0, rows.in_rows, ch0, chs)))
            ops.append(tile.SynOp.build_with(
                self.syms[i], ["accumulate"] if i else [], inp=in_bufs[i].result, weights=w_bufs[i].result,
                params=params.result, acc=named["acc"].result, in_row0=rows.in_row0, in_rows=rows.in_rows, **coords))
        if step.current_out is not None:
            ops.append(tile.StoreOp.build_with(src=named["acc"].result, dst=maps[id(step.current_out)], **coords))
        if step.lif is None:
            return ops
        mem = named.get("mem")
        ops.append(tile.LifOp.build_with(self.syms[0], acc=named["acc"].result, params=params.result,
                                         state=named["state"].result, spk=named["spk"].result,
                                         mem=mem.result if mem is not None else None, **coords))
        if step.membrane_out is not None:
            ops.append(tile.StoreOp.build_with(src=mem.result, dst=maps[id(step.membrane_out)], **coords))
        if step.spikes_out is not None:
            ops.append(tile.PackOp.build_with(self.syms[0], spk=named["spk"].result, out=named["out"].result,
                                              **coords))
            ops.append(tile.StoreOp.build_with(src=named["out"].result, dst=maps[id(step.spikes_out)], **coords))
        return ops


