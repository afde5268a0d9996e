"""Running a loop nest of the `tile` level: `evaluate` walks its index arithmetic and loops
in program order and hands every other op (the tile ops) to a callback with the index
values it reads. Not a pass: the final lowering (convert-loops-to-accel) and band planning
use it; passes/loop_walk.py is the counting walk explore's cost model runs.
"""

from __future__ import annotations

from collections.abc import Callable

from snnc.dialects import tile
from xdsl.dialects import arith, scf
from xdsl.ir import Block, Operation, SSAValue

INDEX_ARITH = {  # the integer arith ops a nest's index arithmetic may use, as functions
    arith.AddiOp: lambda a, b: a + b,
    arith.SubiOp: lambda a, b: a - b,
    arith.MuliOp: lambda a, b: a * b,
    arith.MinSIOp: min,
    arith.MaxSIOp: max,
    arith.DivUIOp: lambda a, b: a // b,
    arith.FloorDivSIOp: lambda a, b: a // b,
    arith.RemUIOp: lambda a, b: a % b,
    arith.RemSIOp: lambda a, b: a % b,
}
CMPI_PREDICATES = {  # arith.cmpi's predicate code -> its test
    0: lambda a, b: a == b, 1: lambda a, b: a != b, 2: lambda a, b: a < b, 3: lambda a, b: a <= b,
    4: lambda a, b: a > b, 5: lambda a, b: a >= b}


def evaluate(block: Block, env: dict[SSAValue, int], visit: Callable[[Operation, dict[SSAValue, int]], None],
             fixed: dict[SSAValue, int] | None = None) -> None:
    """Run the index arithmetic and loops of `block` in program order; call `visit(op,
    env)` for every other op (the tile ops), with every index value it reads in env.
    Constants in `fixed` take the value given there (a tiling being considered). The nest
    must not change while it runs: each block is translated once into a flat list of steps
    (a loop body runs many times; reading operands through xDSL's accessors each time was
    most of the cost)."""
    _run(_Steps(fixed or {}).of(block), env, visit)


# A step: (kind, ...) with the SSA values it reads and writes.
_CONST, _ARITH, _CMP, _SELECT, _ROWS, _FOR, _IF, _VISIT = range(8)


class _Steps:
    """The steps of each block of a nest, translated on first use."""

    def __init__(self, fixed: dict[SSAValue, int]):
        self.fixed = fixed
        self.blocks: dict[Block, list[tuple]] = {}

    def of(self, block: Block) -> list[tuple]:
        steps = self.blocks.get(block)
        if steps is None:
            steps = self.blocks[block] = [self._step(op) for op in block.ops if type(op) is not scf.YieldOp]
        return steps

    def _step(self, op: Operation) -> tuple:
        kind = type(op)
        operands, results = op.operands, op.results
        if kind is arith.ConstantOp:
            value = self.fixed.get(results[0], op.value.value.data)
            return _CONST, results[0], value
        if kind in INDEX_ARITH:
            return _ARITH, results[0], INDEX_ARITH[kind], operands[0], operands[1]
        if kind is arith.CmpiOp:
            return _CMP, results[0], CMPI_PREDICATES[op.predicate.value.data], operands[0], operands[1]
        if kind is arith.SelectOp:
            return _SELECT, results[0], operands[0], operands[1], operands[2]
        if kind is tile.InputRowsOp:
            return _ROWS, op, op.in_row0, op.in_rows, op.row0, op.rows
        if kind is scf.ForOp:
            body = op.body.block
            return _FOR, body.args[0], operands[0], operands[1], operands[2], self, body
        if kind is scf.IfOp:
            return _IF, op.cond, self, op.true_region, op.false_region
        return _VISIT, op


def _run(steps: list[tuple], env: dict[SSAValue, int], visit) -> None:
    for step in steps:
        kind = step[0]
        if kind == _CONST:
            env[step[1]] = step[2]
        elif kind == _ARITH:
            env[step[1]] = step[2](env[step[3]], env[step[4]])
        elif kind == _VISIT:
            visit(step[1], env)
        elif kind == _FOR:
            _, iv, lb, ub, st, plans, body = step
            inner = plans.of(body)
            for value in range(env[lb], env[ub], env[st]):
                env[iv] = value
                _run(inner, env, visit)
        elif kind == _SELECT:
            env[step[1]] = env[step[3]] if env[step[2]] else env[step[4]]
        elif kind == _CMP:
            env[step[1]] = int(step[2](env[step[3]], env[step[4]]))
        elif kind == _ROWS:
            op = step[1]
            env[step[2]], env[step[3]] = op.evaluate(env[step[4]], env[step[5]])
        else:  # _IF
            region = step[3] if env[step[1]] else step[4]
            if region.blocks:
                _run(step[2].of(region.block), env, visit)
