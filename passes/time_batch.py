"""time-batch: strip-mine each synaptic layer's timestep loop and run its batches outermost.

STEMS §4.2.4 (Fig. 5, Fig. 7): a layer visits `timesteps` timesteps of every tile
before the next batch. Combined with layer-fuse this gives STEMS's ST-LBL (one
timestep per batch), TB-LBL (all T: no rewrite), ST-LF and TB-LF schedules.

CONTRACT
  Requires: loop-level IR (after convert-snn-to-loops), before tile-sizes.
  Guarantees: in every kernel (of the layers named in `layers`, or all), with
    B = `timesteps` < T:
    * its nests run inside a new loop `tb` over time batches (0..T step B), the
      outermost; the t loop runs over the batch, [tb, min(tb + B, T)), at most
      B lanes at a time;
    * the neuron state of every output tile survives from one batch to the next:
      before the t loop of a batch after the first, the state is loaded from a DRAM
      scratch map (`<layer>.state`, ACT_I32 [2][B][H][W][Cs]: v and s_prev), and
      after every batch but the last it is stored there. tile-sizes keeps the state
      on chip instead (one SRAM copy per output tile, no DRAM) when the SRAM allows.
    * weights and inputs are reloaded per batch (reuse-weights keeps the weights
      of a layer with one channel tile on chip).
    Values are unchanged. A layer whose spikes are packed (all T bits per word) cannot
    be time-batched below T: a CompileError names it.
  Options:
    timesteps  1..T timesteps per batch; 0 (default) = T (no batching). Above T is refused.
    layers     comma-separated ONNX node names; "" (default) = every layer
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import arith, scf
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass

from snnc.backend.errors import CompileError
from snnc.backend.isa import Format
from snnc.dialects import tile
from snnc.passes.footprints import buffer_of
from snnc.passes.loop_module import kernels, layer_table, maps, module_timesteps
from snnc.passes.loopnest import Loop, const, loops_in, new_loop, set_step

STATE_MAP_SUFFIX = ".state"


def guarded(condition: SSAValue, ops: list[Operation]) -> scf.IfOp:
    """`scf.if condition { ops }` (no results, no else)."""
    block = Block([*ops, scf.YieldOp()])
    return scf.IfOp(condition, [], Region(block), Region())


@dataclass(frozen=True)
class TimeBatch(ModulePass):
    """Strip-mine the timestep loop into batches run outermost (STEMS time batching)."""

    name = "time-batch"
    ir_level: ClassVar[str] = "loop"

    timesteps: int = 0
    layers: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        timesteps = module_timesteps(op)
        if not 0 <= self.timesteps <= timesteps:
            raise CompileError(f"time-batch: timesteps={self.timesteps}: expected 1..{timesteps} (T), or 0 = T")
        batch = self.timesteps or timesteps
        wanted = {n.strip() for n in self.layers.split(",") if n.strip()}
        table = layer_table(op)
        last_map: list = []  # the module's last tile.map, found once: the state spills go after it
        for kernel in kernels(op):
            computes = [o for o in kernel.body.walk() if isinstance(o, tile.COMPUTE_OPS)]
            sources = {table[c.layer_symbol].source.data for c in computes}
            if not computes or (wanted and not sources & wanted) or batch == timesteps:
                continue
            if any(isinstance(o, tile.KernelOp) for o in kernel.body.walk() if o is not kernel):
                raise CompileError(f"time-batch: '{kernel.sym_name.data}' is fused; run time-batch before layer-fuse")
            if any(loop.dim == "tb" for loop in loops_in(kernel.body.block)):
                raise CompileError(f"time-batch: '{kernel.sym_name.data}' is already time-batched")
            _check_unpacked(kernel, table)
            tb = _strip_mine(kernel, batch, timesteps)
            _keep_state(op, kernel, tb, batch, timesteps, table, last_map)


def _check_unpacked(kernel: tile.KernelOp, table) -> None:
    for op in kernel.body.walk():
        if isinstance(op, tile.PackOp) and Format(table[op.layer_symbol].get("out_format")) == Format.SPIKE_BITMASK:
            raise CompileError(f"time-batch: '{kernel.sym_name.data}': its spikes are spike-packed (all T bits in "
                               "one word), so it cannot run in time batches; time-batch it before spike-pack, or "
                               "leave it unbatched")


def _strip_mine(kernel: tile.KernelOp, batch: int, timesteps: int) -> Loop:
    block = kernel.body.block
    nests = [op for op in block.ops if isinstance(op, scf.ForOp)]
    bound_ops, tb = new_loop("tb", 0, timesteps, batch)
    first = nests[0]
    block.insert_ops_before(bound_ops, first)
    end = arith.AddiOp(tb.iv, (b := const(batch)).result)
    last = const(timesteps)
    batch_end = arith.MinSIOp(end.result, last.result)
    batch_end.result.name_hint = "tb_end"
    tb.body.insert_ops_before([b, end, last, batch_end], tb.body.last_op)
    for nest in nests:
        nest.detach()
        tb.body.insert_op_before(nest, tb.body.last_op)
    for loop in loops_in(block):
        if loop.dim != "t":
            continue
        old_ub = loop.op.ub
        old_ub.replace_uses_with_if(batch_end.result, lambda use, lp=loop.op: lp.is_ancestor(use.operation))
        loop.op.operands[0] = tb.iv
        if loop.step > batch:
            set_step(loop, batch)
    return tb


def _keep_state(module: ModuleOp, kernel: tile.KernelOp, tb: Loop, batch: int, timesteps: int, table,
                last_map: list) -> None:
    """Neuron state through DRAM between batches (tile-sizes may keep it on chip instead).
    `last_map`: [the module's last tile.map] once known (each spill map becomes it), else []."""
    lifs = [op for op in kernel.body.walk() if isinstance(op, tile.LifOp)]
    for lif in lifs:
        state = buffer_of(lif.state)
        t_loop = next(lp for lp in _enclosing_t(lif))
        layer = table[lif.layer_symbol]
        g = layer.get
        batch_count = next(lp for lp in loops_in(kernel.body.block) if lp.dim == "b").upper
        spill = tile.MapOp.create_with(f"{layer.source.data}{STATE_MAP_SUFFIX}", Format.ACT_I32, 0, 0.0, 2,
                                       batch_count, g("out_cs"), g("out_h"), g("out_w"), g("out_cs"))
        spill.result.name_hint = "state_spill"
        if not last_map:
            last_map.append(maps(module)[-1])
        last_map[0].parent_block().insert_op_after(spill, last_map[0])
        last_map[0] = spill
        zero, two = const(0), const(2)
        window = dict(b=lif.b, t0=zero.result, nt=two.result, row0=lif.row0, rows=lif.rows, ch0=lif.ch0, chs=lif.chs)
        parent = t_loop.op.parent_block()
        c0 = const(0)
        later = arith.CmpiOp(tb.iv, c0.result, "sgt")
        ahead = arith.AddiOp(tb.iv, (b := const(batch)).result)
        last = const(timesteps)
        more = arith.CmpiOp(ahead.result, last.result, "slt")
        restore = guarded(later.result, [tile.LoadOp.build_with(src=spill.result, dst=state.result, **window)])
        save = guarded(more.result, [tile.StoreOp.build_with(src=state.result, dst=spill.result, **window)])
        parent.insert_ops_before([c0, later, b, ahead, last, more, zero, two, restore], t_loop.op)
        parent.insert_op_after(save, t_loop.op)


def _enclosing_t(op: Operation):
    parent = op.parent_op()
    while parent is not None:
        if isinstance(parent, scf.ForOp) and Loop(parent).dim == "t":
            yield Loop(parent)
        parent = parent.parent_op()
