"""tile-sizes: choose each kernel's tile shape and buffer copies so that it fits the SRAM.

CONTRACT
  Requires: loop-level IR (after convert-snn-to-loops and the loop rewrites).
  Guarantees: in every kernel, the steps of the output-channel loop (`n`) and the
    output-row loop (`m`) are set, and every tile.alloc has its `copies` and the type
    of its largest tile (passes/footprints.py), so that the kernel's buffers fit the
    SRAM left free by data held across kernels (`tile.reserved` on the kernel, bytes).
    A time-batched layer keeps its neuron state on chip when it can (no more output
    tiles than copies of the state, or one copy per tile in the SRAM left free), and
    the state's DRAM transfers go; otherwise they stay. The kernels time-interleave
    runs in a loop keep state on chip only in the SRAM none of them uses, reserved
    across the loop (passes/time_interleave.py `hold_state`).
    Partial sums kept between the k-chunk nests of the op dataflow stay on chip for as
    many output tiles as fit in GoSPA's psum share of the SRAM (hw `sram.psum_share`,
    passes/psum_hold.py); the other tiles' go through their DRAM map.
    Loops marked `tile.fixed` keep the step they have (a user's choice). Values are
    unchanged. A kernel that fits under no tiling is a CompileError naming the ONNX
    node, the largest buffer and the bytes needed against the bytes available.
  The heuristic (replace it with your own pass, or fix loops per layer with
  `tile.fixed`): per-visit buffers double-buffered (copies = 2) so transfers overlap
  compute, and weights too when there are several channel tiles (the next tile's
  weights load during this one); the most output channels, then the most rows that
  fit; under FTP (t parallel over the TPPE lanes) the row count with the fewest TPPE
  rounds (`pe_array.visit_rounds`), the most rows on ties. Then single buffers, then
  single weights.
  Options (the SRAM size and PE count come from the module's hw config):
    least_traffic  comma-separated ONNX node names: their kernels (layers alone, not fused)
                   take the fitting plan that moves the fewest DRAM bytes instead
                   (tile_plan.least_traffic: often fewer channel tiles or taller row
                   tiles in single buffers, so the input is re-read less); "" = none,
                   "*" = every layer
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import IntAttr, ModuleOp
from xdsl.passes import ModulePass

from snnc.backend.errors import CompileError
from snnc.passes.footprints import infer_buffer_types, members
from snnc.passes.band_tiling import plan_fused, stream_in_bands
from snnc.passes.loop_module import interleaved, kernels, layer_table, module_hw, module_timesteps
from snnc.passes.psum_hold import held_bytes, hold_psums, plan_psums, spills_psums
from snnc.passes.time_interleave import hold_state
from snnc.dialects import tile
from snnc.passes.tile_plan import least_traffic as least_traffic_plan
from snnc.passes.tile_plan import (
    TiledKernel, buffer_copies, choose, is_fixed, no_fit_message, reserved_bytes, settle_state, synapse_out_width,
)


@dataclass(frozen=True)
class TileSizes(ModulePass):
    """Choose tile steps (n, m) and buffer copies that fit each kernel in the SRAM."""

    name = "tile-sizes"
    ir_level: ClassVar[str] = "loop"

    least_traffic: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        hw = module_hw(op)
        layers = layer_table(op)
        timesteps = module_timesteps(op)
        wanted = {n.strip() for n in self.least_traffic.split(",") if n.strip()}
        for kernel in kernels(op):
            least = "*" in wanted or bool(wanted & kernel_sources(kernel, layers))
            layers = size_kernel(op, kernel, hw, layers, timesteps, least)
        hold_state(op, hw.sram.size_bytes)


def kernel_sources(kernel, layers: dict) -> set[str]:
    """The ONNX node names of the layers a kernel computes."""
    return {layers[o.layer_symbol].source.data for o in kernel.body.walk() if isinstance(o, tile.COMPUTE_OPS)}


def size_kernel(op: ModuleOp, kernel, hw, layers: dict, timesteps: int, least_traffic: bool = False,
                known_sizes: dict | None = None) -> dict:
    """tile-sizes on one kernel (a CompileError if it fits under no tiling); returns the
    layer table, which band streaming may have replaced. One kernel at a time, so that a
    schedule search (compiler/explore_cost.py) can tell which kernels do not fit. With
    `least_traffic`, a layer alone takes the plan with the fewest DRAM bytes. `known_sizes`:
    a layer alone's buffer sizes by tiling (TiledKernel.known), shared by the caller between
    identical clones of the kernel (the search sizes each under both plans)."""
    if members(kernel):
        plan_fused(kernel, layers, timesteps, hw.sram.size_bytes - reserved_bytes(kernel))
        return layers
    available = hw.sram.size_bytes - reserved_bytes(kernel)
    k = TiledKernel(kernel, layers, timesteps, available, known_sizes)
    out_width = synapse_out_width(kernel, layers)
    psums = plan_psums(k, hw, out_width) if spills_psums(kernel) else None
    pick = least_traffic_plan if least_traffic else choose
    plan = psums.plan if psums is not None else pick(k, hw.compute.num_pes, out_width)
    if plan is None and stream_in_bands(op, k, layers, timesteps):
        layers = layer_table(op)  # the bands' descriptors
        k = TiledKernel(kernel, layers, timesteps, available)
        plan = pick(k, hw.compute.num_pes, out_width)
    if plan is None:
        raise CompileError(no_fit_message(k))
    chs, rows, copies, weight_copies = plan
    if chs is not None and not is_fixed(k.n):
        k.set_steps("n", chs)
    if rows is not None and not is_fixed(k.m):
        k.set_steps("m", rows)
    for buf in k.buffers:
        buf.copies = IntAttr(buffer_copies(buf, copies, weight_copies))
    if psums is not None:
        hold_psums(kernel, psums.dim, psums.held)
    infer_buffer_types(kernel.body.block, layers, timesteps)
    if not interleaved(kernel):  # else other kernels reuse its SRAM between batches: hold_state
        settle_state(k, copies, available - k.total(None, None, copies, weight_copies) - held_bytes(kernel))
    return layers
