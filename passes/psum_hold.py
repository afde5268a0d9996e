"""Holding an op-dataflow kernel's partial sums on chip (GoSPA-SNN's merge), for tile-sizes. Not a pass.

loop-reorder{dataflow=op} (passes/dataflows/kchunks.py) runs one copy of a kernel's nest
per k-chunk and keeps every output tile's int32 partial sums between chunks in a DRAM
map (`tile.psum`): a `tile.load` into the accumulator before the chunk's synapse, a
`tile.store` after it. GoSPA merges partial sums on chip, in the SRAM it gives them, and
only the partial-sum matrices that do not fit go off chip and back (LoAS §V-B):

  `plan_psums`  GoSPA's partition of the cache (hw `sram.psum_share`, the share the
                simulator's OP model gives partial sums): the streaming buffers tiled
                in the rest (or in the rest and half the share, or in all of it: the
                plan of the fewest estimated DMA cycles, as smaller tiles mean more
                visits), the partial sums held in what they leave, by whole iterations
                of the outermost output loop of several tiles (n, else b, else m; every
                tile inside one, timesteps included);
  `hold_psums`  splits that loop of each chunk nest at the held iterations: their
                synapses (and the LIF after the last chunk) accumulate in a `psum`
                buffer with one copy per output tile (n, b, m, t), the same copy in every
                chunk nest, and their DRAM transfers go; the nests of the other tiles
                keep the accumulator and the DRAM map.

Values are unchanged: the same sums, accumulated in SRAM instead of through DRAM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.dialects import scf
from xdsl.dialects.builtin import IntAttr
from xdsl.ir import Operation

from snnc.backend.hwconfig import HwConfig
from snnc.dialects import tile
from snnc.passes.dataflows.kchunks import PSUM_ATTR
from snnc.passes.footprints import buffer_bytes, buffer_of, nested_ops
from snnc.passes.loopnest import Loop, const
from snnc.passes.tile_plan import TiledKernel, align, choose

PSUM_ROLE = "psum"
OUTPUT_DIMS = ("n", "b", "m")  # the output-tile loops a chunk nest may be split along


@dataclass(frozen=True)
class PsumPlan:
    plan: tuple  # (channels, rows, copies, weight copies), as `choose`
    dim: str  # the output loop split between held and spilled tiles (the outermost of several trips)
    held: int  # iterations of `dim` whose partial sums stay on chip
    spilled_bytes: int  # partial-sum bytes of the others (each goes out and back between chunks)
    cost: float  # estimated cycles of the DMAs: latency per visit and partial-sum traffic


def spills_psums(kernel: tile.KernelOp) -> bool:
    return any(_is_psum_transfer(op) for op in nested_ops(kernel.body.block, (tile.LoadOp, tile.StoreOp)))


def _is_psum_transfer(op: Operation) -> bool:
    if isinstance(op, tile.LoadOp):
        return PSUM_ATTR in op.src.owner.attributes
    return isinstance(op, tile.StoreOp) and PSUM_ATTR in op.dst.owner.attributes


def _accumulator(kernel: tile.KernelOp) -> tile.AllocOp:
    return next(buffer_of(op.acc) for op in kernel.body.walk() if isinstance(op, tile.SynOp))


def _trips(loop: Loop | None, step: int | None = None) -> int:
    if loop is None:
        return 1
    step = step if step is not None else loop.step
    return -(-(loop.upper - loop.lower) // step)


def plan_psums(k: TiledKernel, hw: HwConfig, out_width: int) -> PsumPlan | None:
    """GoSPA's partition: the streaming buffers planned in the SRAM less the psum share (or
    half of it, or none), the partial sums held in what they leave; of these the plan of
    the fewest estimated cycles (`PsumPlan.cost`)."""
    budget = int(hw.sram.size_bytes * hw.sram.psum_share)
    best: PsumPlan | None = None
    for stream in sorted({max(0, k.available - budget), max(0, k.available - budget // 2), k.available}):
        trial = TiledKernel(k.kernel, k.layers, k.timesteps, stream)
        plan = choose(trial, hw.compute.num_pes, out_width) if stream else None
        if plan is not None:
            candidate = _hold_plan(k, trial, plan, hw)
            if best is None or candidate.cost < best.cost:
                best = candidate
    return best


def _hold_plan(k: TiledKernel, trial: TiledKernel, plan: tuple, hw: HwConfig) -> PsumPlan:
    """What `plan` holds: whole iterations of the outermost output loop of several tiles."""
    chs, rows, copies, weight_copies = plan
    steps = {"n": chs, "m": rows}
    nests = _nests(k.kernel)
    nest = [loop for loop in _loops(nests[0]) if loop.dim in OUTPUT_DIMS + ("t",)]
    trips = [_trips(loop, steps.get(loop.dim)) for loop in nest]
    outputs = [i for i, loop in enumerate(nest) if loop.dim in OUTPUT_DIMS]
    split = next((i for i in outputs if trips[i] > 1), outputs[0] if outputs else None)
    acc_bytes = align(max(trial.sizes(chs, rows)[_accumulator(k.kernel)], 1))
    per_unit = acc_bytes * math.prod(trips[split + 1:] if split is not None else trips)
    units = trips[split] if split is not None else 1
    free = k.available - trial.total(chs, rows, copies, weight_copies)
    held = min(units, max(0, free) // per_unit)
    # each visit pays a DMA latency for its input, a spilled one two more (partial sums in, out)
    visits = math.prod(trips)
    spilled_visits = visits * (units - held) // units
    latency = hw.dram.latency_cycles * len(nests) * (visits + 2 * spilled_visits)
    traffic = 2 * (len(nests) - 1) * (units - held) * per_unit / hw.dram_bytes_per_cycle
    dim = nest[split].dim if split is not None else ""
    return PsumPlan(plan, dim, held, (units - held) * per_unit, latency + traffic)


def hold_psums(kernel: tile.KernelOp, dim: str, held: int) -> None:
    """Hold the partial sums of the first `held` iterations of loop `dim` of every chunk nest
    in a `psum` buffer (see the module docstring); after tile-sizes' steps are set."""
    if held <= 0:
        return
    acc = _accumulator(kernel)
    nests = _nests(kernel)
    psum = tile.AllocOp(PSUM_ROLE, acc.result.type, 1, acc.rotate_dims)
    acc.parent_block().insert_op_after(psum, acc)
    for nest in nests:
        loop = _loop_in(nest, dim)
        split = None if loop is None else loop.lower + held * loop.step
        if split is not None and split < loop.upper:
            spilled = nest.clone()
            nest.parent_block().insert_op_after(spilled, nest)
            _set_bound(_loop_in(spilled, dim), 0, split)
            _set_bound(loop, 1, split)
        _hold_in(nest, acc, psum)
    psum.copies = IntAttr(math.prod(loop.trips for loop in _loops(nests[0]) if loop.dim in psum.rotate_dims))
    if not acc.result.uses:
        acc.detach()
        acc.erase()


def held_bytes(kernel: tile.KernelOp) -> int:
    """SRAM bytes of the kernel's held partial sums (after infer_buffer_types)."""
    return sum(buf.copies.data * align(max(buffer_bytes(buf), 1)) for buf in nested_ops(kernel.body.block, tile.AllocOp)
               if buf.role.data == PSUM_ROLE)


def _hold_in(nest: Operation, acc: tile.AllocOp, psum: tile.AllocOp) -> None:
    for op in [o for o in nest.walk() if _is_psum_transfer(o)]:
        dram = op.src.owner if isinstance(op, tile.LoadOp) else op.dst.owner
        op.detach()
        op.erase()
        if not dram.result.uses:  # every tile held: the DRAM map goes too
            dram.detach()
            dram.erase()
    acc.result.replace_uses_with_if(psum.result, lambda use: nest.is_ancestor(use.operation))


def _nests(kernel: tile.KernelOp) -> list[scf.ForOp]:
    """The kernel's top-level loop nests: one per k-chunk."""
    return [op for op in kernel.body.block.ops if isinstance(op, scf.ForOp) and tile.DIM_ATTR in op.attributes]


def _loops(nest: Operation) -> list[Loop]:
    return [Loop(op) for op in nest.walk() if isinstance(op, scf.ForOp) and tile.DIM_ATTR in op.attributes]


def _loop_in(nest: Operation, dim: str) -> Loop | None:
    return next((loop for loop in _loops(nest) if loop.dim == dim), None)


def _set_bound(loop: Loop, index: int, value: int) -> None:
    """Give the loop a new constant lower (index 0) or upper (1) bound; the tile sizes inside
    keep their own bound (the split is at a tile boundary)."""
    bound = const(value, f"{loop.dim}_split")
    loop.op.parent_block().insert_op_before(bound, loop.op)
    loop.op.operands[index] = bound.result
