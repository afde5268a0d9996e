"""time-batch: the number of timesteps processed per layer visit (STEMS §4.2.4, Fig. 5, Fig. 7).

CONTRACT
  Requires: snn-level IR (before convert-snn-to-accel).
  Guarantees: every snn.dense / snn.conv2d carries `#snn.schedule` with
    `batch` = the timesteps per visit (1 = single timestep, T = fully time-batched).
    Values are unchanged. The lowering then runs each synaptic layer batch by
    batch: all tiles of the layer for timesteps [t0, t0 + batch), then the next
    batch. Within a batch a tile's neuron state (v, s_prev) stays in SRAM;
    between batches it stays in a reserved SRAM area if the whole layer's state
    fits next to the tile buffers, and is otherwise stored to DRAM after a
    batch and loaded back before the next ("SRAM is short"). Combined with
    layer-fuse this gives STEMS's ST-LBL, TB-LBL, ST-LF and TB-LF schedules.
  Options:
    timesteps  1..T, timesteps per visit; 0 (default) = T (fully time-batched,
               what the lowering does without this pass). Values above T are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from snnc.backend.errors import CompileError
from snnc.dialects.snn import train_type_of
from snnc.passes._schedule import synapse_ops, update_schedule


@dataclass(frozen=True)
class TimeBatch(ModulePass):
    """Set the timesteps per layer visit (STEMS time batching); state spills to DRAM between batches."""

    name = "time-batch"
    ir_level: ClassVar[str] = "snn"

    timesteps: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for syn in synapse_ops(op):
            T = train_type_of(syn.output).num_timesteps
            if not 0 <= self.timesteps <= T:
                where = syn.source.data if syn.source is not None else syn.name
                raise CompileError(
                    f"time-batch: timesteps={self.timesteps} for {syn.name} '{where}': expected 1..{T} (T), or 0 = T")
            update_schedule(syn, self.name, batch=self.timesteps or T)
