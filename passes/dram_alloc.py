"""dram-alloc: give every constant and feature map its DRAM address.

CONTRACT
  Requires: loop-level IR (after convert-snn-to-loops and the passes that add maps or
    change constants: spike-pack, compress-weights, time-batch, loop-reorder).
  Guarantees: every memref.global carries `tile.addr` and every tile.map its `addr`:
    the constants first, in module order, then the maps in the order @main defines
    them (graph inputs first), each on a DRAM_ALIGN-byte boundary, none overlapping.
    The module's `tile.dram_size` is the end of the last one. Values are unchanged.
  Options: none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import IntAttr, IntegerAttr, ModuleOp, i64
from xdsl.passes import ModulePass

from snnc.backend import isa
from snnc.backend.isa import Format
from snnc.dialects import tile
from snnc.passes.footprints import type_bytes
from snnc.passes.loop_module import globals_of, maps, module_timesteps

DRAM_ALIGN = 64  # bytes; every DRAM tensor / constant starts on a burst boundary
ADDR_ATTR = "tile.addr"
DRAM_SIZE_ATTR = "tile.dram_size"


def map_bytes(map_op: tile.MapOp, timesteps: int) -> int:
    """DRAM bytes of a feature map: its planes, or for a packed map its fiber slots."""
    shape = map_op.result.type.get_shape()
    if map_op.fmt == Format.SPIKE_BITMASK:
        return packed_map_bytes(map_op, timesteps)
    return type_bytes(map_op.result.type) if len(shape) == 5 else 0


def packed_map_bytes(map_op: tile.MapOp, timesteps: int) -> int:
    batch, height, width, cs = map_op.result.type.get_shape()
    channels = map_op.slice.data if map_op.slice is not None else cs
    return batch * height * (cs // channels) * isa.fiber_slot_bytes(width * channels, timesteps)


def align(value: int) -> int:
    return (value + DRAM_ALIGN - 1) // DRAM_ALIGN * DRAM_ALIGN


@dataclass(frozen=True)
class DramAlloc(ModulePass):
    """Place the constants, then the feature maps, in DRAM."""

    name = "dram-alloc"
    ir_level: ClassVar[str] = "loop"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        top = 0
        for glob in globals_of(op).values():
            glob.attributes[ADDR_ATTR] = IntegerAttr(top, i64)
            top = align(top + len(glob.initial_value.data.data))
        timesteps = module_timesteps(op)
        for map_op in maps(op):
            map_op.addr = IntAttr(top)
            top = align(top + map_bytes(map_op, timesteps))
        op.attributes[DRAM_SIZE_ATTR] = IntegerAttr(max(top, DRAM_ALIGN), i64)
