"""Building a fused kernel, for layer-fuse (passes/layer_fuse.py): a group of kernels becomes
one `tile.kernel` that runs [tb >] b > band > member 1, member 2, ..., each member's rows
for the band computed from its consumers' windows in the band's index arithmetic (`fuse`),
its intermediate maps in SRAM ring buffers. Not a pass."""

from __future__ import annotations

from xdsl.dialects import arith, memref, scf
from xdsl.dialects.builtin import ArrayAttr, IntegerAttr, MemRefType, ModuleOp, StringAttr, UnitAttr, i64
from xdsl.ir import Operation, SSAValue

from snnc.backend.errors import CompileError
from snnc.backend.isa import Format
from snnc.dialects import tile
from snnc.passes.footprints import buffer_of, nested_ops
from snnc.passes.loop_module import kernels
from snnc.passes.loopnest import Loop, const, loops_in, nest_chain, new_loop

FIXED_ATTR = "tile.fixed"
BAND_CAP_ATTR = "tile.band_cap"  # on a fused kernel: layer-fuse's tile_rows


def kernel_writes(kernel: tile.KernelOp) -> set[SSAValue]:
    return {o.dst for o in nested_ops(kernel.body.block, tile.StoreOp) if isinstance(o.dst.owner, tile.MapOp)}

def kernel_reads(kernel: tile.KernelOp) -> set[SSAValue]:
    return {o.src for o in nested_ops(kernel.body.block, tile.LoadOp) if isinstance(o.src.owner, tile.MapOp)}

def kernel_time_batch(kernel: tile.KernelOp) -> int:
    """The time-batch size of a kernel (its tb loop's step), 0 if it has none."""
    tb = [lp for lp in loops_in(kernel.body.block) if lp.dim == "tb"]
    return tb[0].step if tb else 0


def fuse(module: ModuleOp, group: list[tile.KernelOp], outputs, tile_rows: int) -> None:
    writes = [kernel_writes(k) for k in group]
    others = set().union(*(kernel_reads(k) for k in kernels(module) if k not in group))
    escaping = others | set(outputs)  # read after the group: stays in DRAM, completed by the last band
    later_reads = [set().union(*(kernel_reads(k) for k in group[i + 1:])) for i in range(len(group))]
    ring_maps = [m for i, w in enumerate(writes) for m in w  # made by one member, read by later ones only
                 if m in later_reads[i] and m not in kernel_reads(group[i]) and m not in escaping
                 and m.owner.fmt != Format.SPIKE_BITMASK]
    batch_steps = kernel_time_batch(group[0])
    fused = tile.KernelOp("+".join(k.sym_name.data for k in group))
    if tile_rows:
        fused.attributes[BAND_CAP_ATTR] = IntegerAttr(tile_rows, i64)
    group[0].parent_block().insert_op_before(fused, group[0])
    body = fused.body.block
    rings = {m: _ring(m, batch_steps) for m in ring_maps}
    body.add_ops(list(rings.values()))
    last_chain = {lp.dim: lp for lp in nest_chain(_nest_block(group[-1]))}
    timesteps = next(lp for lp in loops_in(group[0].body.block) if lp.dim == "t").upper
    outer = body
    tb = None
    if batch_steps:
        tb_ops, tb = new_loop("tb", 0, timesteps, batch_steps)
        batch_end = _batch_end(tb, batch_steps, timesteps)
        body.add_ops(tb_ops)
        outer = tb.body
    b_ops, b_loop = new_loop("b", 0, last_chain["b"].upper, 1)
    height = last_chain["m"].upper
    band_ops, band = new_loop("band", 0, height, height)
    _insert(outer, b_ops)
    b_loop.body.insert_ops_before(band_ops, b_loop.body.last_op)
    escapes = [bool(w & escaping) for w in writes]
    now_ops, ends = _band_ends(group, band, height, band.iv, escapes, "end")
    previous = arith.SubiOp(band.iv, band.op.step)
    prev_ops, done = _band_ends(group, band, height, previous.result, escapes, "done")
    zero = const(0)
    first_band = arith.CmpiOp(band.iv, zero.result, "eq")
    arithmetic: list[Operation] = [*now_ops, previous, *prev_ops, zero, first_band]
    starts = []
    for value in done:
        sel = arith.SelectOp(first_band.result, zero.result, value)
        sel.result.name_hint = "start"
        arithmetic.append(sel)
        starts.append(sel.result)
    band.body.insert_ops_before(arithmetic, band.body.last_op)
    for kernel, start, end in zip(group, starts, ends):
        if tb is not None:
            _unbatch(kernel, tb, batch_end)
        member = _member(fused, kernel, b_loop, start, end)
        band.body.insert_op_before(member, band.body.last_op)
    for map_value, ring in rings.items():
        map_value.replace_all_uses_with(ring.result)
        map_value.owner.detach()
        map_value.owner.erase()
    for kernel in group:
        kernel.detach()
        kernel.erase()


def _batch_end(tb: Loop, batch: int, timesteps: int) -> SSAValue:
    step, last = const(batch), const(timesteps)
    end = arith.AddiOp(tb.iv, step.result)
    clipped = arith.MinSIOp(end.result, last.result)
    clipped.result.name_hint = "tb_end"
    tb.body.insert_ops_before([step, last, end, clipped], tb.body.last_op)
    return clipped.result


def _unbatch(kernel: tile.KernelOp, tb: Loop, batch_end: SSAValue) -> None:
    """The kernel's own tb loop dissolved: its nest runs in the fused tb loop."""
    own = next(lp for lp in loops_in(kernel.body.block) if lp.dim == "tb")
    own.iv.replace_all_uses_with(tb.iv)
    _tb_end(own).replace_all_uses_with(batch_end)
    parent = own.op.parent_block()
    for op in [o for o in own.body.ops if not isinstance(o, scf.YieldOp)]:
        op.detach()
        parent.insert_op_before(op, own.op)
    own.op.detach()
    own.op.erase()


def _insert(block, ops: list[Operation]) -> None:
    last = block.last_op
    if isinstance(last, scf.YieldOp):
        block.insert_ops_before(ops, last)
    else:
        block.add_ops(ops)


def _ring(map_value: SSAValue, batch_steps: int) -> tile.AllocOp:
    """An SRAM ring for a fused map: [timesteps of a batch][1][rows][W][Cs] (one batch element;
    tile-sizes gives it the rows its consumers keep live)."""
    t, _, height, width, cs = map_value.type.get_shape()
    return tile.AllocOp(f"ring:{map_value.owner.label.data}", MemRefType(
        map_value.type.element_type, [batch_steps or t, 1, height, width, cs], memory_space=tile.SRAM))


def _nest_block(kernel: tile.KernelOp):
    block = kernel.body.block
    loops = [o for o in block.ops if isinstance(o, scf.ForOp)]
    if loops and Loop(loops[0]).dim == "tb":
        return loops[0].body.block
    return block


def _tb_end(loop: Loop) -> SSAValue:
    for op in loop.body.ops:
        if isinstance(op, arith.MinSIOp):
            return op.result
    raise CompileError("layer-fuse: a time-batched kernel has no batch end")


def _band_ends(group, band: Loop, height: int, band_start: SSAValue, escapes: list[bool], hint: str):
    """Ops computing, for the band starting at `band_start`, the end row of every member's
    output that the band needs: the last member's is the band's own end; an earlier
    member's, the most its readers in the group need, or its whole map in the last band
    when it is also read after the group."""
    ops: list[Operation] = []
    rows = const(height)
    last_end = arith.MinSIOp(arith_add(ops, band_start, band.op.step), rows.result)
    last_band = arith.CmpiOp(last_end.result, rows.result, "eq")
    ops += [rows, last_end, last_band]
    ends: dict[int, SSAValue] = {len(group) - 1: last_end.result}
    for j in range(len(group) - 2, -1, -1):
        needed: SSAValue | None = None
        for c in range(j + 1, len(group)):
            for window in consumer_windows(group[j], group[c]):
                need = _window_end(ops, ends[c], *window)
                needed = need if needed is None else _max(ops, needed, need)
        full = _map_height_const(ops, group[j])
        if needed is None:  # nothing in the group reads it (a side branch): all of it at once
            needed = full
        elif escapes[j]:
            whole = arith.SelectOp(last_band.result, full, needed)
            ops.append(whole)
            needed = whole.result
        ends[j] = needed
    for value in ends.values():
        value.name_hint = hint
    return ops, [ends[j] for j in range(len(group))]


def arith_add(ops: list, a: SSAValue, b: SSAValue) -> SSAValue:
    add = arith.AddiOp(a, b)
    ops.append(add)
    return add.result


def _max(ops: list, a: SSAValue, b: SSAValue) -> SSAValue:
    m = arith.MaxSIOp(a, b)
    ops.append(m)
    return m.result


def consumer_windows(producer: tile.KernelOp, consumer: tile.KernelOp) -> list[tuple[int, int, int, int, int]]:
    """(k, stride, pad, dilation, height) of every window the consumer reads the producer's output by."""
    made = kernel_writes(producer)
    out = []
    for load in consumer.body.walk():
        if isinstance(load, tile.LoadOp) and load.src in made:
            owner = load.rows.owner
            if isinstance(owner, tile.InputRowsOp):
                out.append((owner.k.data, owner.stride.data, owner.pad.data, owner.dilation.data, owner.height.data))
            else:  # the same rows (an add)
                out.append((1, 1, 0, 1, load.src.type.get_shape()[2]))
    return out


def _window_end(ops: list, end: SSAValue, k: int, stride: int, pad: int, dilation: int, height: int) -> SSAValue:
    """min(height, max(0, (end - 1) * stride - pad + (k - 1) * dilation + 1)): the input rows that
    output rows [0, end) read (monotone in end)."""
    s, c, h, z = const(stride), const((k - 1) * dilation + 1 - pad - stride), const(height), const(0)
    scaled = arith.MuliOp(end, s.result)
    shifted = arith.AddiOp(scaled.result, c.result)
    low = arith.MaxSIOp(shifted.result, z.result)
    clipped = arith.MinSIOp(low.result, h.result)
    ops += [s, c, h, z, scaled, shifted, low, clipped]
    return clipped.result


def _map_height_const(ops: list, kernel: tile.KernelOp) -> SSAValue:
    chain = {lp.dim: lp for lp in nest_chain(_nest_block(kernel))}
    c = const(chain["m"].upper)
    ops.append(c)
    return c.result


def _member(fused: tile.KernelOp, kernel: tile.KernelOp, b_loop: Loop, start: SSAValue,
             end: SSAValue) -> tile.KernelOp:
    """The kernel's nest as a member of the band: its b loop becomes the fused one, its m loop
    runs [start, end), its parameters and weights move to the fused kernel."""
    block = _nest_block(kernel)
    chain = {lp.dim: lp for lp in nest_chain(block)}
    member = tile.KernelOp(kernel.sym_name.data)
    held = []
    for op in list(kernel.body.block.ops):
        if isinstance(op, tile.AllocOp) and (not op.rotate_dims or op.rotate_dims == ("n",)) \
                or _is_prologue(op):
            for operand in op.operands:  # the constants a held load reads go with it
                owner = operand.owner
                if isinstance(owner, arith.ConstantOp) and owner.parent_block() is kernel.body.block:
                    owner.detach()
                    held.append(owner)
            op.detach()
            held.append(op)
    bands = fused.body.block
    anchor = next(o for o in bands.ops if isinstance(o, scf.ForOp))
    for op in held:
        bands.insert_op_before(op, anchor)
    if "n" in chain:
        chain["n"].op.attributes[FIXED_ATTR] = UnitAttr()
    m = chain["m"]
    old_end = m.op.ub
    old_end.replace_uses_with_if(end, lambda use: m.op.is_ancestor(use.operation))
    m.op.operands[0], m.op.operands[1] = start, end
    b = chain["b"]
    b.iv.replace_all_uses_with(b_loop.iv)
    inner = [o for o in b.body.ops if not isinstance(o, scf.YieldOp)]
    parent = b.op.parent_block()
    for op in inner:
        op.detach()
        parent.insert_op_before(op, b.op)
    b.op.detach()
    b.op.erase()
    for op in list(kernel.body.block.ops):
        op.detach()
        member.body.block.add_op(op)
    for op in member.body.walk():  # an output tile is now (band, n, b, m)
        if isinstance(op, tile.AllocOp) and "m" in op.rotate_dims and "band" not in op.rotate_dims:
            op.rotate = ArrayAttr([StringAttr("band"), *op.rotate.data])
    return member


def _is_prologue(op: Operation) -> bool:
    """The fetch of a constant (get_global) and a whole-constant load (the parameter block)."""
    if isinstance(op, memref.GetGlobalOp):
        return True
    return isinstance(op, tile.LoadConstOp) and buffer_of(op.dst) is not None and not buffer_of(op.dst).rotate_dims

