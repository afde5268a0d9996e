"""hoist-loads: load a constant tile once when the loops around its load do not change it.

CONTRACT
  Requires: loop-level IR after tile-sizes (the trip counts are final).
  Guarantees: a `tile.load_const` (weights, parameters) moves out of every enclosing
    loop that does not change what it loads: a loop whose induction variable it does
    not read, or that runs once (its induction variable is then a constant, and the
    load's operands become constants). It moves only when it is the only writer of
    a single-copy buffer, so the tile stays on chip for every iteration it leaves.
    This is what keeps a time-batched layer's weights in SRAM from one batch to the
    next when they are one channel tile. A load never leaves its kernel (time-interleave's
    loop around kernels reloads them per batch). Values are unchanged.
  Options: none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from snnc.dialects import tile
from snnc.passes.footprints import buffer_of, nested_ops
from snnc.passes.loop_module import kernels
from snnc.passes.loopnest import Loop, const, const_value, enclosing_loops, loop_of
from snnc.passes.nest_run import INDEX_ARITH


def static_value(value: SSAValue, fixed: dict[SSAValue, int]) -> int | None:
    """The value of an index computed from constants and the induction variables in `fixed`."""
    c = const_value(value)
    if c is not None:
        return c
    if value in fixed:
        return fixed[value]
    op = value.owner
    if type(op) in INDEX_ARITH:
        a, b = static_value(op.lhs, fixed), static_value(op.rhs, fixed)
        return None if a is None or b is None else INDEX_ARITH[type(op)](a, b)
    return None


def _single_writer(load: tile.LoadConstOp) -> bool:
    buf = buffer_of(load.dst)
    if buf is None or buf.copies.data != 1:
        return False
    writers = [u.operation for u in buf.result.uses if isinstance(u.operation, tile.LoadConstOp | tile.LoadOp)]
    return writers == [load]


def hoist(load: tile.LoadConstOp, kernel: tile.KernelOp | None = None) -> bool:
    """Move `load` out of the loops (inside `kernel`, if given) that do not change it; True if it moved."""
    if not _single_writer(load):
        return False
    loops = enclosing_loops(load)  # outermost first
    if kernel is not None:  # not out of the kernel: a loop around kernels runs others in between
        loops = [lp for lp in loops if kernel.is_ancestor(lp.op)]
    fixed: dict[SSAValue, int] = {}
    target: Loop | None = None
    for loop in reversed(loops):
        reads = _reads_iv(load, loop)
        if reads and loop.trips != 1:
            break
        if reads:
            fixed[loop.iv] = loop.lower
        target = loop
    if target is None:
        return False
    operands = [static_value(v, fixed) if _needs_static(v, target) else v for v in load.operands]
    if any(o is None for o in operands):
        return False
    block = target.op.parent_block()
    new_ops: list[Operation] = []
    values = []
    for operand in operands:
        if isinstance(operand, int):
            c = const(operand)
            new_ops.append(c)
            values.append(c.result)
        else:
            values.append(operand)
    load.detach()
    for i, value in enumerate(values):
        load.operands[i] = value
    block.insert_ops_before([*new_ops, load], target.op)
    return True


def _needs_static(value: SSAValue, target: Loop) -> bool:
    """A value defined inside the loop the load leaves, or its induction variable (it must
    become a constant)."""
    owner = value.owner
    node = owner if isinstance(owner, Operation) else owner.parent_op()
    while node is not None:
        if node is target.op:
            return True
        node = node.parent_op()
    return False


def _reads_iv(op: Operation, loop: Loop) -> bool:
    seen: set = set()
    stack = list(op.operands)
    while stack:
        value = stack.pop()
        if value is loop.iv:
            return True
        if loop_of(value) is not None or value in seen:
            continue
        seen.add(value)
        owner = value.owner
        if isinstance(owner, Operation) and not isinstance(owner, tile.AllocOp):
            stack.extend(owner.operands)
    return False


@dataclass(frozen=True)
class HoistLoads(ModulePass):
    """Load constant tiles (weights, parameters) once where the loops around them do not change them."""

    name = "hoist-loads"
    ir_level: ClassVar[str] = "loop"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for kernel in kernels(op):
            for load in nested_ops(kernel.body.block, tile.LoadConstOp):
                hoist(load, kernel)
