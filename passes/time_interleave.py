"""time-interleave: one time-batch loop around the whole kernel sequence (the streaming schedule).

ELSA (issue 16): an SNN's output grows one timestep at a time, so a schedule that finishes
timestep 0 through the whole network before timestep 1 starts anywhere lets the first
output leave the chip after about 1/T of the run, and an early exit stop the rest.
time-batch strip-mines the timesteps *within* each kernel (`tb` outermost in the kernel),
but the kernels still run one after another over all timesteps. This pass hoists those
per-kernel `tb` loops into ONE loop in @main around every kernel:

    func.func @main {                         func.func @main {
      tile.kernel "a" { scf.for %tb {..a..} }   scf.for %tb = 0 to T step B {tile.dim = "tb"} {
      tile.kernel "b" { scf.for %tb {..b..} }     tile.kernel "a" {..a.. over [tb, tb + B)}
    }                                             tile.kernel "b" {..b.. over [tb, tb + B)}
                                                }
                                              }

CONTRACT
  Requires: loop-level IR before tile-sizes, every kernel of @main time-batched
    (time-batch) with the same batch B < T (layer-fuse may have fused some: a fused
    kernel's own tb loop is hoisted the same way). With B = T (no kernel batched:
    T = 1, or time-batch{timesteps=T}) there is nothing to interleave and the module is
    left as it is.
  Guarantees:
    * @main's kernels, in their order, run inside one `scf.for %tb = 0 to T step B`
      (`tile.dim = "tb"`); each kernel's own tb loop is gone, its body runs in place
      with the outer %tb and batch end, so kernel k runs timesteps [tb, tb + B) of every
      tile, then kernel k + 1 does, and timestep batch tb of the graph outputs is final
      before batch tb + B starts anywhere.
    * A kernel runs once per batch, so everything it loads per kernel run -- weights,
      parameters -- is loaded again for every batch (hoist-loads keeps a load inside its
      kernel): the price of the early outputs, measured by bench/elastic.py.
    * Neuron state survives between a kernel's visits: tile-sizes does not keep an
      interleaved kernel's state in the kernel's own SRAM (the kernels run between its
      visits reuse it), but holds the state of the layers that fit in the SRAM no
      interleaved kernel uses, smallest first, in buffers across the loop
      (`hold_state`: `tile.alloc "state:<layer>"` in @main, `tile.reserved` on every
      kernel, placed at the top of the SRAM by sram-alloc); the rest goes through the
      DRAM spill maps that time-batch wrote.
    * Values are unchanged (tests/test_streaming.py: identical to the FTP program).
  Options: none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, MemRefType, ModuleOp, i64
from xdsl.passes import ModulePass

from snnc.backend.errors import CompileError
from snnc.dialects import tile
from snnc.passes.footprints import buffer_bytes, own_buffers, type_bytes
from snnc.passes.fuse_nest import _batch_end, _unbatch, kernel_time_batch
from snnc.passes.loop_module import interleaved, kernels, main_of, module_timesteps
from snnc.passes.loopnest import new_loop
from snnc.passes.sram_alloc import direct_members
from snnc.passes.tile_plan import RESERVED_ATTR, align, reserved_bytes, state_transfers
from snnc.passes.time_batch import STATE_MAP_SUFFIX


@dataclass(frozen=True)
class TimeInterleave(ModulePass):
    """Hoist every kernel's time-batch loop into one loop around all kernels (timestep-major)."""

    name = "time-interleave"
    ir_level: ClassVar[str] = "loop"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        timesteps = module_timesteps(op)
        block = main_of(op).body.block
        group = kernels(op)
        if any(k.parent_block() is not block for k in group):
            raise CompileError("time-interleave: the kernels already run in a loop around them (run it once)")
        batch = _common_batch(group)
        if batch is None:
            return
        bound_ops, tb = new_loop("tb", 0, timesteps, batch)
        block.insert_ops_before(bound_ops, group[0])
        batch_end = _batch_end(tb, batch, timesteps)
        for kernel in group:
            _unbatch(kernel, tb, batch_end)
            kernel.detach()
            tb.body.insert_op_before(kernel, tb.body.last_op)


def _common_batch(group: list[tile.KernelOp]) -> int | None:
    """The time-batch size B every kernel shares; None if no kernel is batched."""
    batches = {k.sym_name.data: kernel_time_batch(k) for k in group}
    if not any(batches.values()):
        return None
    unbatched = [name for name, b in batches.items() if not b]
    if unbatched:
        raise CompileError(f"time-interleave: kernel '{unbatched[0]}' is not time-batched: run "
                           "time-batch{timesteps=B} on every layer first")
    if len(set(batches.values())) > 1:
        listed = ", ".join(f"{name}: {b}" for name, b in batches.items())
        raise CompileError(f"time-interleave: the kernels are batched in time differently ({listed}); "
                           "every kernel must run the same timesteps per batch")
    return next(iter(batches.values()))



def kernel_bytes(kernel: tile.KernelOp) -> int:
    """The SRAM a sized kernel's buffers take as sram-alloc places them (its members share
    what its own buffers leave)."""
    own = sum(buf.copies.data * align(max(buffer_bytes(buf), 1)) for buf in own_buffers(kernel))
    return own + max((kernel_bytes(member) for member in direct_members(kernel)), default=0)


def hold_state(module: ModuleOp, sram_bytes: int) -> None:
    """tile-sizes' last step for interleaved kernels: the neuron state of the layers whose
    spill maps fit (smallest first) in the SRAM that no interleaved kernel uses stays on chip
    for the whole run. Each such map becomes a buffer in @main, before the loop around the
    kernels (`tile.alloc "state:<layer>"`, addressed like a ring of all its rows: the state
    loads and stores become MOVEs), and every interleaved kernel's `tile.reserved` grows by
    its bytes, so sram-alloc places it at the top of the SRAM, where no kernel's buffers go."""
    group = [k for k in kernels(module) if interleaved(k)]
    if not group:
        return
    free = sram_bytes - max(kernel_bytes(k) + reserved_bytes(k) for k in group)
    spills = {inner.src.owner for k in group for guard in state_transfers(k) for inner in guard.walk()
              if isinstance(inner, tile.LoadOp) and isinstance(inner.src.owner, tile.MapOp)}
    loop = group[0].parent_op()
    held = 0
    for spill in sorted(spills, key=lambda m: (type_bytes(m.result.type), m.label.data)):
        need = align(type_bytes(spill.result.type))
        if held + need > free:
            break
        kept = MemRefType(spill.result.type.element_type, spill.result.type.get_shape(), memory_space=tile.SRAM)
        buf = tile.AllocOp(f"state:{spill.label.data.removesuffix(STATE_MAP_SUFFIX)}", kept)
        loop.parent_block().insert_op_before(buf, loop)
        spill.result.replace_all_uses_with(buf.result)
        spill.detach()
        spill.erase()
        held += need
    if held:
        for kernel in group:
            kernel.attributes[RESERVED_ATTR] = IntegerAttr(reserved_bytes(kernel) + held, i64)
