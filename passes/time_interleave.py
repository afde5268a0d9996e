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
    * Neuron state survives between a kernel's visits through the DRAM spill maps that
      time-batch wrote: tile-sizes does not keep an interleaved kernel's state in its own
      SRAM (the kernels run between its visits reuse that SRAM).
    * Values are unchanged (tests/test_streaming.py: identical to the FTP program).
  Options: none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from snnc.backend.errors import CompileError
from snnc.dialects import tile
from snnc.passes.fuse_nest import _batch_end, _unbatch, kernel_time_batch
from snnc.passes.loop_module import kernels, main_of, module_timesteps
from snnc.passes.loopnest import new_loop


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

