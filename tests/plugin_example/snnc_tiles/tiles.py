"""fixed-tiles: give chosen layers a tile shape of your own, on the loop level.

CONTRACT
  Requires: loop-level IR (after convert-snn-to-loops, before tile-sizes; `ir_level =
    "loop"`).
  Guarantees: in the kernel of every layer named in `layers`, the output-row loop (m)
    steps by `rows` and the output-channel loop (n) by `channels` (when given), and
    both are marked `tile.fixed`, so tile-sizes keeps them and only sizes the buffers
    and their copies. Values are unchanged: the program computes the same outputs
    with more, smaller tiles. A shape that does not fit the SRAM is tile-sizes'
    one-line error, naming the layer and the buffer.
  Options:
    layers    comma-separated ONNX node names (required)
    rows      output rows per tile (>= 1)
    channels  output channels per tile (a multiple of 8); 0 = leave it to tile-sizes
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, UnitAttr
from xdsl.passes import ModulePass

from snnc.backend.errors import CompileError
from snnc.dialects import tile
from snnc.passes.loop_module import kernels, layer_table
from snnc.passes.loopnest import loops_in, set_step

FIXED = "tile.fixed"  # tile-sizes leaves such a loop's step alone


@dataclass(frozen=True)
class FixedTiles(ModulePass):
    """Fix the tile shape (rows, channels) of chosen layers."""

    name = "fixed-tiles"
    ir_level: ClassVar[str] = "loop"

    layers: str = ""
    rows: int = 1
    channels: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        wanted = {name.strip() for name in self.layers.split(",") if name.strip()}
        if not wanted or self.rows < 1 or self.channels < 0 or self.channels % 8:
            raise CompileError(f"fixed-tiles: layers={self.layers!r} rows={self.rows} channels={self.channels}: "
                               "name at least one layer, rows >= 1, channels a multiple of 8")
        table = layer_table(op)
        found = set()
        for kernel in kernels(op):
            names = {table[o.layer_symbol].source.data for o in kernel.body.walk() if isinstance(o, tile.COMPUTE_OPS)}
            if not names & wanted:
                continue
            found |= names & wanted
            for loop in loops_in(kernel.body.block):
                if loop.dim == "m" or (loop.dim == "n" and self.channels):
                    set_step(loop, self.rows if loop.dim == "m" else self.channels)
                    loop.op.attributes[FIXED] = UnitAttr()
        if wanted - found:
            raise CompileError(f"fixed-tiles: {sorted(wanted - found)} are not layers of the model")
