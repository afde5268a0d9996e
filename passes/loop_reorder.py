"""loop-reorder: make each synapse layer's loop nest over (t, m, n, k) explicit.

LoAS §III, Algorithm 1; baselines of §V. A synapse layer computes
C[t] = A[t] @ B for every timestep t (A: [M, K] input spikes, B: [K, N]
weights), then LIF fires C[t] in timestep order.

CONTRACT
  Requires: snn-level IR (before convert-snn-to-accel).
  Guarantees: every snn.dense / snn.conv2d carries `#snn.schedule` with
    `dataflow` and `order` set (other schedule fields are kept). The order is
    legal for the neuron-state dependence -- a neuron's timesteps fire in order
    and each timestep's k-reduction is complete before LIF fires it
    (`snnc.dialects.snn.loop_order_error`) -- or the pass fails with an error
    naming the problem. Values are unchanged: the simulator's outputs are
    identical for every dataflow.
  Options:
    dataflow  ftp (default; m, n, k, parallel-for t on the TPPE lanes),
              ip-seq (m, n, k, t sequential; SparTen-SNN),
              op (k, m, n, t; GoSPA-SNN: partial sums go to DRAM between k chunks),
              gust (m, k, n, t; Gamma-SNN: partial rows merged on chip)
    order     optional explicit nest, outermost first, e.g. "m,n,k,t*" (t* = parallel);
              checked for legality, and must be the nest of `dataflow`
How the lowering honours it: passes/convert_snn_to_accel.py ("Dataflows").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from snnc.backend.errors import CompileError
from snnc.dialects.snn import DATAFLOW_ORDERS, loop_order_error
from snnc.passes._schedule import synapse_ops, update_schedule


@dataclass(frozen=True)
class LoopReorder(ModulePass):
    """Choose the loop nest (dataflow) of every synapse layer: ftp, ip-seq, op or gust."""

    name = "loop-reorder"
    ir_level: ClassVar[str] = "snn"

    dataflow: str = "ftp"
    order: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.dataflow not in DATAFLOW_ORDERS:
            raise CompileError(
                f"loop-reorder: dataflow={self.dataflow!r}, expected one of {', '.join(DATAFLOW_ORDERS)}")
        expected = DATAFLOW_ORDERS[self.dataflow]
        if self.order:
            loops = tuple(s.strip() for s in self.order.split(","))
            error = loop_order_error(loops)
            if error:
                raise CompileError(f"loop-reorder: illegal loop order: {error}")
            if loops != expected:
                raise CompileError(
                    f"loop-reorder: order {','.join(loops)} is legal but is not the nest of dataflow "
                    f"{self.dataflow} ({','.join(expected)}); the accelerator implements "
                    + "; ".join(f"{k}: {','.join(v)}" for k, v in DATAFLOW_ORDERS.items()))
        for syn in synapse_ops(op):
            update_schedule(syn, self.name, dataflow=self.dataflow, order=",".join(expected))
