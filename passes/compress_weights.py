"""compress-weights: store every synapse layer's weights as bitmask fibers (LoAS §IV-A).

CONTRACT
  Requires: snn-level IR (before convert-snn-to-accel), one func.func @main.
  Guarantees:
    * Every snn.dense / snn.conv2d in @main gets the unit attribute
      `snn.compressed_weights`: the lowering stores its weights column-wise as
      bitmask fibers, one per output channel (pointer, bitmask of K bits, the
      non-zero weights), and loads them with dma.load_bm, so only the
      compressed bytes move from DRAM.
    * The fibers stay compressed in SRAM (LoAS's FiberCache): dma.load_bm with
      KEEP_COMPRESSED, syn with COMPRESSED_WEIGHTS. A weight buffer is sized by
      its channel tile's fiber bytes, so tiles hold more output channels than
      with dense [chs][K] tiles. A layer streamed in row bands (its kernel does
      not fit) keeps dense band buffers.
    * Spike values and their types are untouched (unlike spike-pack, which also
      packs spikes and calls this with its `weights` option); outputs are
      identical.
    * The fibers of a layer lie back to back in DRAM (isa.DmaFlags.PACKED: the
      DRAM image and prog.bin hold only the compressed bytes); each channel
      tile's dma.load_bm starts at its first fiber.
  Options: none.

LoAS keeps fiber-B compressed in DRAM and in its FiberCache (§IV-D); without
this pass snnc moves the dense 8-bit weights, which for a 98%-sparse layer is
about 7x the compressed bytes. It is the first pass of the default pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from snnc.dialects.snn import Conv2dOp, DenseOp, main_function
from snnc.passes.convert_snn_to_accel import COMPRESSED_WEIGHTS_ATTR
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, UnitAttr
from xdsl.ir import Block
from xdsl.passes import ModulePass


def compress_synapse_weights(block: Block) -> int:
    """Mark every synapse op of `block` as having compressed weights; returns how many."""
    marked = 0
    for op in block.ops:
        if isinstance(op, DenseOp | Conv2dOp):
            op.attributes[COMPRESSED_WEIGHTS_ATTR] = UnitAttr()
            marked += 1
    return marked


@dataclass(frozen=True)
class CompressWeights(ModulePass):
    """Store synapse weights as bitmask fibers in DRAM (only the compressed bytes move)."""

    name = "compress-weights"
    ir_level: ClassVar[str] = "snn"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        compress_synapse_weights(main_function(op).body.block)
