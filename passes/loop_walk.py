"""A kernel's loop walk, compiled: its nest becomes nested tuples over integer slots once, then
runs in plain Python (nest_run.evaluate's semantics, without reading xDSL operands on every
iteration: explore's cost model runs a schedule's nests hundreds of thousands of times, and
tile-sizes' least-traffic plan one nest per candidate tiling). Not a pass.

`count(kernel, report_names, cost, fixed)` adds to `cost` (compiler/explore_cost.Cost, or
`Counts`) what the kernel's tile ops do: DRAM bytes and DMA instructions of map and constant
transfers, SRAM bytes of ring-buffer moves, and per layer its compute ops' (positions,
positions x timesteps). Constants in `fixed` take the value given there (a tiling being
considered, as nest_run.evaluate's `fixed`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from snnc.backend.isa import Format
from snnc.dialects import tile
from snnc.passes.footprints import fiber_offsets, global_of
from snnc.passes.nest_run import CMPI_PREDICATES, INDEX_ARITH
from xdsl.dialects import arith, scf

CONST, BINARY, SELECT, ROWS, FOR, IF, WINDOW, CONSTLOAD, COMPUTE, PROBE = range(10)


class _Slots:
    def __init__(self):
        self.index: dict = {}

    def __call__(self, value) -> int:
        slot = self.index.get(value)
        if slot is None:
            slot = self.index[value] = len(self.index)
        return slot


@dataclass
class Counts:
    """What `count` adds up (explore_cost.Cost has the same fields)."""

    dram_read: int = 0
    dram_write: int = 0
    dma_ops: int = 0
    ring_bytes: int = 0
    constant_read: int = 0  # of dram_read: constant loads
    work: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0]))


def _compile(block, slot: _Slots, report_names: dict, variable: dict, probe=None) -> list[tuple]:
    """`variable`: constants left out of the program (their slots are set before each run),
    filled in here with their values. `probe(op)`: for a tile op, None or (function, values):
    the function is called with the values at every instance of the op."""
    prog = []
    for op in block.ops:
        kind = type(op)
        probed = probe(op) if probe is not None and isinstance(op, _TILE_OPS) else None
        if probed is not None:
            prog.append((PROBE, probed[0], tuple(slot(v) for v in probed[1])))
        if kind is arith.ConstantOp:
            if op.result in variable:
                slot(op.result)
                variable[op.result] = op.value.value.data
            else:
                prog.append((CONST, slot(op.result), op.value.value.data))
        elif kind in INDEX_ARITH:
            prog.append((BINARY, slot(op.result), INDEX_ARITH[kind], slot(op.lhs), slot(op.rhs)))
        elif kind is arith.CmpiOp:
            prog.append((BINARY, slot(op.result), CMPI_PREDICATES[op.predicate.value.data], slot(op.lhs), slot(op.rhs)))
        elif kind is arith.SelectOp:
            prog.append((SELECT, slot(op.result), slot(op.cond), slot(op.lhs), slot(op.rhs)))
        elif kind is tile.InputRowsOp:
            prog.append((ROWS, slot(op.in_row0), slot(op.in_rows), _input_rows(op), slot(op.row0), slot(op.rows)))
        elif kind is scf.ForOp:
            prog.append((FOR, slot(op.lb), slot(op.ub), slot(op.step), slot(op.body.block.args[0]),
                         _compile(op.body.block, slot, report_names, variable, probe)))
        elif kind is scf.IfOp:
            other = _compile(op.false_region.block, slot, report_names, variable, probe) if op.false_region.blocks else []
            prog.append((IF, slot(op.cond), _compile(op.true_region.block, slot, report_names, variable, probe), other))
        elif kind is tile.KernelOp:  # a fused kernel's member: its nest runs in place
            prog.extend(_compile(op.body.block, slot, report_names, variable, probe))
        elif kind is tile.LoadOp or kind is tile.StoreOp:
            prog.append(_window(op, slot))
        elif kind is tile.LoadConstOp:
            prog.append(_const(op, slot))
        elif isinstance(op, tile.COMPUTE_OPS):
            name = report_names.get(op.layer_symbol, op.layer_symbol)
            prog.append((COMPUTE, name, slot(op.rows), slot(op.chs), slot(op.nt)))
    return prog


_TILE_OPS = (tile.LoadOp, tile.StoreOp, *tile.COMPUTE_OPS)


def _input_rows(op: tile.InputRowsOp):
    """tile.InputRowsOp.evaluate with its properties read once."""
    k, stride, pad, dilation, height = (op.properties[name].data for name in op.PARAMS)

    def evaluate(row0: int, rows: int) -> tuple[int, int]:
        first = row0 * stride - pad
        last = (row0 + rows - 1) * stride - pad + (k - 1) * dilation
        lo, hi = max(0, first), min(height - 1, last)
        return (lo, hi - lo + 1) if hi >= lo else (min(max(first, 0), height - 1), 0)

    return evaluate


def _window(op, slot: _Slots) -> tuple:
    load = type(op) is tile.LoadOp
    target = op.src if load else op.dst
    shape = target.type.get_shape()
    width, cs, bits = shape[-2], shape[-1], target.type.element_type.width.data
    ring = isinstance(target.owner, tile.AllocOp)
    packed = not ring and target.owner.fmt == Format.SPIKE_BITMASK
    return (WINDOW, slot(op.rows), slot(op.nt), slot(op.chs), width * bits, cs, load, ring, packed)


def _const(op, slot: _Slots) -> tuple:
    glob = global_of(op.src)
    offsets = fiber_offsets(glob) if glob is not None else None
    shape, bits = op.src.type.get_shape(), op.src.type.element_type.width.data
    whole = shape[0] * bits // 8 if len(shape) == 1 else None  # a parameter block
    return (CONSTLOAD, slot(op.ch0), slot(op.chs), offsets, math.prod(shape[1:]) * bits // 8, whole)


def _run(prog: list[tuple], env: list, cost) -> None:
    for ins in prog:
        code = ins[0]
        if code == BINARY:
            env[ins[1]] = ins[2](env[ins[3]], env[ins[4]])
        elif code == CONST:
            env[ins[1]] = ins[2]
        elif code == FOR:
            body, iv = ins[5], ins[4]
            for value in range(env[ins[1]], env[ins[2]], env[ins[3]]):
                env[iv] = value
                _run(body, env, cost)
        elif code == COMPUTE:
            positions = env[ins[2]] * env[ins[3]]
            work = cost.work[ins[1]]
            work[0] += positions
            work[1] += positions * env[ins[4]]
        elif code == WINDOW:
            _, rows, nt, chs, row_bits, cs, load, ring, packed = ins
            rows, nt, chs = env[rows], env[nt], env[chs]
            if rows == 0:
                continue
            if ring:
                cost.ring_bytes += nt * rows * chs * row_bits // 8
                continue
            moved = (1 if packed else nt) * rows * chs * row_bits // 8
            if load:
                cost.dram_read += moved
            else:
                cost.dram_write += moved
            cost.dma_ops += 1 if packed or chs == cs else nt
        elif code == CONSTLOAD:
            _, ch0, chs, offsets, per_channel, whole = ins
            ch0, chs = env[ch0], env[chs]
            cost.dma_ops += 1
            if offsets is not None:
                moved = offsets[ch0 + chs] - offsets[ch0]
            else:
                moved = whole if whole is not None else chs * per_channel
            cost.dram_read += moved
            cost.constant_read += moved
        elif code == SELECT:
            env[ins[1]] = env[ins[3]] if env[ins[2]] else env[ins[4]]
        elif code == ROWS:
            env[ins[1]], env[ins[2]] = ins[3](env[ins[4]], env[ins[5]])
        elif code == IF:
            _run(ins[2] if env[ins[1]] else ins[3], env, cost)
        elif code == PROBE:
            ins[1](*[env[s] for s in ins[2]])


class Walk:
    """A kernel's nest compiled once, to count it under several tilings: the constants in
    `variable` (loop steps, bounds) take the values a run gives, else their own. `probe`:
    see _compile (band_tiling.band_schedule watches the ring windows with it)."""

    def __init__(self, kernel: tile.KernelOp, report_names: dict | None = None, variable=(), probe=None):
        self.slot = _Slots()
        self.defaults: dict = dict.fromkeys(variable)
        self.prog = _compile(kernel.body.block, self.slot, report_names or {}, self.defaults, probe)

    def run(self, cost, fixed: dict | None = None, env: dict | None = None) -> None:
        """Add to `cost` what the nest does with the constants in `fixed` (of `variable`) and
        `env`: values the kernel reads from around it (band_tiling.outer_env; others are 0)."""
        index = self.slot.index
        values = [0] * len(index)
        for value, number in (env or {}).items():
            if value in index:
                values[index[value]] = number
        fixed = fixed or {}
        for value, default in self.defaults.items():
            number = fixed.get(value, default)
            if value in index and number is not None:
                values[index[value]] = number
        _run(self.prog, values, cost)


def count(kernel: tile.KernelOp, report_names: dict, cost, fixed: dict | None = None,
          env: dict | None = None) -> None:
    """Walk the kernel once (`Walk.run`)."""
    Walk(kernel, report_names, tuple(fixed or ())).run(cost, fixed, env)
