"""Loop nests of the `tile` level: building, reading, bounding and reshaping them.

Not a pass: the vocabulary the loop-level passes share (and a user's pass can use).

A loop is an `scf.for` with constant bounds whose `tile.dim` attribute names what it
iterates over (dialects/tile.py). Inside, the size of the current tile is
`arith.minsi %step, (%ub - %iv)` (`loop_extent`), so a pass that changes a loop's
step (`set_step`) keeps every tail tile right. Index arithmetic is `arith` plus
`tile.input_rows`; `index_bounds` gives each index value's range without running the
nest, and `nest_run.evaluate` runs it (the final lowering and band planning use it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from xdsl.dialects import arith, scf
from xdsl.dialects.builtin import IndexType, IntegerAttr, StringAttr, UnitAttr
from xdsl.ir import Block, Operation, Region, SSAValue

from snnc.dialects import tile

INDEX = IndexType()


_INDEX_ATTRS: dict[int, IntegerAttr] = {}  # attributes are immutable: one per value serves every constant


def const(value: int, hint: str | None = None) -> arith.ConstantOp:
    attr = _INDEX_ATTRS.get(value)
    if attr is None:
        attr = IntegerAttr.from_index_int_value(value)
        if len(_INDEX_ATTRS) < 4096:
            _INDEX_ATTRS[value] = attr
    op = arith.ConstantOp.create(properties={"value": attr}, result_types=[INDEX])  # no builder argument checks
    if hint:
        op.result.name_hint = hint
    return op


def const_value(value: SSAValue) -> int | None:
    owner = value.owner
    if isinstance(owner, arith.ConstantOp) and isinstance(owner.value, IntegerAttr):
        return owner.value.value.data
    return None


@dataclass
class Loop:
    """A view of one `scf.for` of the nest."""

    op: scf.ForOp

    @property
    def dim(self) -> str:
        attr = self.op.attributes.get(tile.DIM_ATTR)
        return attr.data if isinstance(attr, StringAttr) else ""

    @property
    def lower(self) -> int:
        """The first value (the lowest, for a loop whose bounds are computed: a strip-mined t)."""
        return index_bounds(self.op.lb)[0]

    @property
    def upper(self) -> int:
        """The bound (the highest, for a loop whose bounds are computed)."""
        return index_bounds(self.op.ub)[1]

    @property
    def step(self) -> int:
        return _required_const(self.op.step, "step")

    def span(self) -> int:
        """The most values the loop covers in one run (upper - lower, or less when the upper
        bound is its lower bound plus a constant, as strip-mining makes it)."""
        return span(self.op.ub, self.op.lb)

    @property
    def iv(self) -> SSAValue:
        return self.op.body.block.args[0]

    @property
    def parallel(self) -> bool:
        return tile.PARALLEL_ATTR in self.op.attributes

    @property
    def trips(self) -> int:
        """Iterations of one run of the loop (the most, when its bounds are computed)."""
        return max(0, -(-self.span() // self.step))

    @property
    def body(self) -> Block:
        return self.op.body.block


def _required_const(value: SSAValue, what: str) -> int:
    c = const_value(value)
    if c is None:
        raise ValueError(f"scf.for: the {what} must be an arith.constant")
    return c


def new_loop(dim: str, lower: int, upper: int, step: int, parallel: bool = False) -> tuple[list[Operation], Loop]:
    """The ops defining a loop's bounds, and the loop (empty body ending in scf.yield)."""
    lb, ub, st = const(lower), const(upper, f"{dim}_end"), const(step, f"{dim}_step")
    body = Block([scf.YieldOp()], arg_types=[INDEX])
    body.args[0].name_hint = dim
    loop = scf.ForOp(lb, ub, st, [], Region(body))
    loop.attributes[tile.DIM_ATTR] = StringAttr(dim)
    if parallel:
        loop.attributes[tile.PARALLEL_ATTR] = UnitAttr()
    return [lb, ub, st, loop], Loop(loop)


def loop_extent(loop: Loop) -> tuple[list[Operation], SSAValue]:
    """Ops computing the size of the current tile, min(step, upper - iv), to put first in its body."""
    remaining = arith.SubiOp.create(operands=[loop.op.ub, loop.iv], result_types=[INDEX])
    size = arith.MinSIOp.create(operands=[loop.op.step, remaining.result], result_types=[INDEX])
    size.result.name_hint = f"{loop.dim}_size"
    return [remaining, size], size.result


def set_step(loop: Loop, step: int) -> None:
    """Give the loop a new constant step (its own constant op, placed before it)."""
    new = const(step, f"{loop.dim}_step")
    loop.op.parent_block().insert_op_before(new, loop.op)
    old = loop.op.step
    old.replace_uses_with_if(new.result, lambda use: loop.op.is_ancestor(use.operation))
    if isinstance(old.owner, Operation) and not old.uses:
        old.owner.detach()
        old.owner.erase()


def loops_in(block: Block) -> Iterator[Loop]:
    """Every tile loop nested in `block`, outermost first (pre-order)."""
    for op in block.ops:
        if isinstance(op, scf.ForOp) and tile.DIM_ATTR in op.attributes:
            yield Loop(op)
        for region in op.regions:
            for inner in region.blocks:
                yield from loops_in(inner)


def loop_of(value: SSAValue) -> Loop | None:
    """The loop whose induction variable `value` is."""
    owner = value.owner
    if isinstance(owner, Block) and isinstance(owner.parent_op(), scf.ForOp):
        return Loop(owner.parent_op())
    return None


def enclosing_loops(op: Operation) -> list[Loop]:
    """The tile loops around `op`, outermost first."""
    out = []
    parent = op.parent_op()
    while parent is not None:
        if isinstance(parent, scf.ForOp) and tile.DIM_ATTR in parent.attributes:
            out.append(Loop(parent))
        parent = parent.parent_op()
    return out[::-1]


# --------------------------------------------------------------------------------------
# Index ranges without running the nest
# --------------------------------------------------------------------------------------


def span(upper_bound: SSAValue, lower_bound: SSAValue) -> int:
    """An upper bound on upper_bound - lower_bound (min(lower + c, ...) spans at most c)."""
    if upper_bound is lower_bound:
        return 0
    op = upper_bound.owner
    if isinstance(op, arith.MinSIOp):
        return min(span(op.lhs, lower_bound), span(op.rhs, lower_bound))
    if isinstance(op, arith.AddiOp) and op.lhs is lower_bound and const_value(op.rhs) is not None:
        return const_value(op.rhs)
    return index_bounds(upper_bound)[1] - index_bounds(lower_bound)[0]


Steps = dict[scf.ForOp, int]  # loop steps that replace the IR's (a tiling being considered)


def index_bounds(value: SSAValue, steps=None) -> tuple[int, int]:
    """(lowest, highest) value an index can take (conservative, from the loop bounds),
    with the loops in `steps` taking those steps instead of their own. `steps` may be a
    (steps, memo) pair: the memo dict keeps bounds already computed under those steps."""
    if isinstance(steps, tuple):
        memo = steps[1]
        found = memo.get(value)
        if found is None:
            found = memo[value] = _index_bounds(value, steps)
        return found
    return _index_bounds(value, steps)


_STEP_VALUES = object()  # memo key: the step constants of the loops in `steps`


def _index_bounds(value: SSAValue, context) -> tuple[int, int]:
    steps = context[0] if isinstance(context, tuple) else context
    owner = value.owner
    if type(owner) is arith.ConstantOp and isinstance(owner.value, IntegerAttr):
        c = owner.value.value.data
        if steps:  # a loop's step constant takes the step being considered
            step = _step_values(steps, context).get(value)
            if step is not None:
                return step, step
        return c, c
    if isinstance(owner, Block):
        loop = owner.parent_op()
        if isinstance(loop, scf.ForOp):  # an induction variable
            lb, ub, st = loop.operands
            step = steps.get(loop) if steps else None
            if step is None:
                step = _required_const(st, "step")
            lower, upper_bound = index_bounds(lb, context)[0], index_bounds(ub, context)[1]
            trips = max(0, -(-(upper_bound - lower) // step))
            return lower, lower + (trips - 1) * step if trips else lower
    op = owner
    combine = _BOUNDS.get(type(op))
    if combine is not None:
        lhs, rhs = op.operands
        return combine(index_bounds(lhs, context), index_bounds(rhs, context))
    if isinstance(op, arith.SelectOp):
        (a_lo, a_hi), (b_lo, b_hi) = index_bounds(op.lhs, context), index_bounds(op.rhs, context)
        return min(a_lo, b_lo), max(a_hi, b_hi)
    if isinstance(op, arith.CmpiOp):
        return 0, 1
    if isinstance(op, tile.InputRowsOp):
        _, rows_hi = index_bounds(op.rows, context)
        height = op.height.data
        if value is op.in_rows:  # a tile of the most rows reads at most this many input rows
            return 0, min(height, (rows_hi - 1) * op.stride.data + (op.k.data - 1) * op.dilation.data + 1)
        return 0, height - 1
    raise ValueError(f"no bounds for an index computed by {getattr(op, 'name', op)}")


def _step_values(steps: dict, context) -> dict[SSAValue, int]:
    """The step constant of each loop in `steps` -> its step there (kept in the memo, if any)."""
    memo = context[1] if isinstance(context, tuple) else None
    found = memo.get(_STEP_VALUES) if memo is not None else None
    if found is None:
        found = {loop.operands[2]: step for loop, step in steps.items()}
        if memo is not None:
            memo[_STEP_VALUES] = found
    return found


def _products(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    products = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
    return min(products), max(products)


_BOUNDS = {  # (lowest, highest) of a binary index op from its operands'
    arith.MinSIOp: lambda a, b: (min(a[0], b[0]), min(a[1], b[1])),
    arith.MaxSIOp: lambda a, b: (max(a[0], b[0]), max(a[1], b[1])),
    arith.AddiOp: lambda a, b: (a[0] + b[0], a[1] + b[1]),
    arith.SubiOp: lambda a, b: (a[0] - b[1], a[1] - b[0]),
    arith.MuliOp: _products,
}


def upper(value: SSAValue, steps=None) -> int:
    return index_bounds(value, steps)[1]


# --------------------------------------------------------------------------------------
# Reshaping a nest
# --------------------------------------------------------------------------------------

PURE_OPS = (arith.ConstantOp, arith.AddiOp, arith.SubiOp, arith.MuliOp, arith.MinSIOp, arith.MaxSIOp,
            arith.DivUIOp, arith.FloorDivSIOp, arith.RemUIOp, arith.RemSIOp, arith.CmpiOp, arith.SelectOp,
            tile.InputRowsOp)


def nest_chain(block: Block) -> list[Loop]:
    """The perfectly nested chain of tile loops starting at `block`'s first tile loop: each
    body holds exactly one inner tile loop, down to the innermost."""
    chain: list[Loop] = []
    current = block
    while True:
        inner = [op for op in current.ops if isinstance(op, scf.ForOp) and tile.DIM_ATTR in op.attributes]
        if len(inner) != 1:
            return chain
        chain.append(Loop(inner[0]))
        current = inner[0].body.block


def _loop_deps(op: Operation, inside: set[Operation], memo: dict) -> frozenset:
    """The nest loops whose induction variables `op` reads, directly or through pure ops."""
    if op in memo:
        return memo[op]
    deps: set = set()
    for operand in op.operands:
        loop = loop_of(operand)
        if loop is not None and loop.op in inside:
            deps.add(loop.op)
        elif isinstance(operand.owner, Operation) and isinstance(operand.owner, PURE_OPS):
            deps |= _loop_deps(operand.owner, inside, memo)
    memo[op] = frozenset(deps)
    return memo[op]


def permute(block: Block, order: list[str]) -> None:
    """Reorder the nest chain of `block` so its loops run in `order` (dims, outermost first).

    Each op with an effect (loads, compute, stores) stays in the body of the loop it was
    in, before or after that loop's inner loop as it was; index arithmetic moves to the
    innermost loop it depends on. So an op that ran once per iteration of its loop still
    does, under whichever loops now enclose it (a weight load inside n reloads per row
    tile if m now encloses n)."""
    chain = nest_chain(block)
    by_dim = {loop.dim: loop for loop in chain}
    if sorted(order) != sorted(by_dim):
        raise ValueError(f"order {order} is not a permutation of the nest's loops {list(by_dim)}")
    loop_ops = {loop.op for loop in chain}
    memo: dict = {}
    outside: list[Operation] = []  # constants and other index values no loop changes: before the nest
    placed: dict[Operation, list[Operation]] = {loop.op: [] for loop in chain}
    before: dict[Operation, list[Operation]] = {loop.op: [] for loop in chain}
    after: dict[Operation, list[Operation]] = {loop.op: [] for loop in chain}
    for loop in chain:
        seen_inner = False
        for op in list(loop.body.ops):
            if op in loop_ops:
                seen_inner = True
                continue
            if isinstance(op, scf.YieldOp):
                continue
            if isinstance(op, PURE_OPS):
                deps = _loop_deps(op, loop_ops, memo) | ({loop.op} if _uses_iv(op, loop) else set())
                if deps:
                    placed[max(deps, key=lambda d: order.index(Loop(d).dim))].append(op)
                else:
                    outside.append(op)
            else:
                (after if seen_inner else before)[loop.op].append(op)
    outer = chain[0].op
    anchor_block, anchor = outer.parent_block(), outer.next_op
    outer.detach()
    for loop in chain:
        for op in list(loop.body.ops):
            if not isinstance(op, scf.YieldOp):
                op.detach()
    for i, dim in enumerate(order):
        loop = by_dim[dim]
        body = loop.body
        ops = [*placed[loop.op], *before[loop.op]]
        if i + 1 < len(order):
            ops.append(by_dim[order[i + 1]].op)
        ops += after[loop.op]
        body.insert_ops_before(ops, body.last_op)
    top = by_dim[order[0]].op
    if anchor is None:
        anchor_block.add_ops([*outside, top])
    else:
        anchor_block.insert_ops_before([*outside, top], anchor)


def _uses_iv(op: Operation, loop: Loop) -> bool:
    return any(operand is loop.iv for operand in op.operands)
