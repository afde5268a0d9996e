"""layer-fuse: group consecutive layers so intermediate feature maps stay in SRAM (STEMS §3.2, §4.2.4).

CONTRACT
  Requires: snn-level IR (before convert-snn-to-accel), one func.func @main.
  Guarantees: every layer op of @main (snn.dense / conv2d / max_pool2d /
    avg_pool2d / add / lif / reshape) carries `#snn.schedule` with `group` = its
    fusion group (consecutive ops; a new group starts at each boundary) and
    `tile_rows`. Values are unchanged: simulator outputs are identical.
  The lowering keeps a feature map in SRAM when its producer and all its
  consumers are in the same group, it is not a graph input/output, not
  spike-packed, and the group's resident maps fit in half of the SRAM
  (`FUSE_SRAM_SHARE`): the producer MOVEs its output tiles into the resident map
  and the consumers MOVE their input tiles out of it (isa `move`, on-chip), so
  the map's DRAM stores and loads disappear. The layers of the group tile in
  the remaining SRAM, at most `tile_rows` output rows per tile.
  Not implemented: STEMS's depth-first execution over row bands (a line buffer
  holding only a band of the intermediate map); a group runs layer by layer with
  whole intermediate maps on chip, so a map larger than the share stays in DRAM.
  With time-batch this gives the four STEMS schedules: ST-LBL (time-batch
  {timesteps=1}), TB-LBL (time-batch{timesteps=T}), ST-LF and TB-LF (the same
  plus layer-fuse).
  Options:
    boundaries  comma-separated ONNX node names (the `source` of layer ops) that
                start a new group; "" (default) = one group of all layers;
                "*" = every layer its own group (no fusion)
    tile_rows   cap on output rows per tile inside a group; 0 (default) = the
                lowering's choice
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from snnc.backend.errors import CompileError
from snnc.dialects.snn import (
    AddOp,
    AvgPool2dOp,
    Conv2dOp,
    DenseOp,
    LIFOp,
    MaxPool2dOp,
    ReshapeOp,
    SpikeLogicOp,
    main_function,
)
from snnc.passes._schedule import update_schedule
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

LAYER_OPS = (DenseOp, Conv2dOp, MaxPool2dOp, AvgPool2dOp, AddOp, SpikeLogicOp, LIFOp, ReshapeOp)


@dataclass(frozen=True)
class LayerFuse(ModulePass):
    """Fuse consecutive layers into groups whose intermediate feature maps stay in SRAM."""

    name = "layer-fuse"
    ir_level: ClassVar[str] = "snn"

    boundaries: str = ""
    tile_rows: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.tile_rows < 0:
            raise CompileError(f"layer-fuse: tile_rows={self.tile_rows} must be >= 0")
        main = main_function(op)
        layers = [o for o in main.body.block.ops if isinstance(o, LAYER_OPS)]
        names = [o.source.data if o.source is not None else o.name for o in layers]
        every = self.boundaries.strip() == "*"
        starts = set() if every else {b.strip() for b in self.boundaries.split(",") if b.strip()}
        unknown = sorted(starts - set(names))
        if unknown:
            raise CompileError(f"layer-fuse: boundaries {unknown} are not layers of the model (layers: {', '.join(names)})")
        group = 0
        for i, (layer, name) in enumerate(zip(layers, names)):
            if i and (every or name in starts):
                group += 1
            update_schedule(layer, self.name, group=group, tile_rows=self.tile_rows)
