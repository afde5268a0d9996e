"""dma-prefetch: let DMA loads run ahead of the compute they feed (double-buffer overlap).

The lowering emits each tile in order -- load its operands, compute, store its
result -- and fences every reuse of an SRAM buffer with a BARRIER. Both engines
issue in program order (docs/isa.md "Timing model"), so a tile's loads wait in
the DMA queue behind the previous tile's store, which waits for the previous
tile's compute: the transfers never overlap the compute even though the buffers
are double-buffered. This pass reschedules the instruction stream so they do.

CONTRACT
  Requires: accel-level IR (after convert-loops-to-accel): one accel.program.
  Guarantees:
    * BARRIERs are removed: the accelerator's scoreboard orders every access to
      overlapping SRAM ranges and every DMA transfer to overlapping DRAM ranges
      (RAW, WAR, WAW; docs/isa.md "Timing model"), so a layer's first tiles can
      start while the previous layer's last tiles finish.
    * Every DMA load (dma.load, dma.load_bm) moves up in program order past the
      instructions it is independent of: it stops below an earlier DMA load (loads
      keep their order, so the DMA queue fetches in need order), any instruction
      touching an SRAM range that overlaps the load's destination, and any DMA
      store writing DRAM bytes the load reads (`dram_ranges`, row by row).
    * Values are unchanged: no data dependence is reordered, so the simulator's
      outputs are identical (tests/test_passes_dma_prefetch.py); only the cycle
      counts change (fewer `dependency` stalls).
  Options: none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from snnc.backend import isa
from snnc.backend.errors import CompileError
from snnc.dialects import accel

LOADS = (accel.DmaLoadOp, accel.DmaLoadBmOp)
STORES = (accel.DmaStoreOp, accel.DmaStoreBmOp)
Range = tuple[int, int]


def dram_ranges(op: accel.InstructionOp) -> list[Range]:
    """The DRAM bytes a DMA instruction reads or writes: one range per strided row
    (`isa.strided_ranges`), the fibers' hull for the bitmask forms; [] for others."""
    kind = type(op)
    if kind is accel.DmaLoadOp or kind is accel.DmaStoreOp:  # the generated op classes are final
        p = op.properties  # read directly: field_values() would build a dict of every field
        return isa.strided_ranges(p["dram_addr"].data, p["rows"].data, p["row_bytes"].data, p["dram_stride"].data)
    if kind is accel.DmaLoadBmOp or kind is accel.DmaStoreBmOp:
        v = op.field_values()
        end = isa.fiber_dma_hull(v["dram_addr"], v["fibers"], v["fiber_elems"], v["elem_bits"], v["flags"],
                                 v["sram_bytes"])
        return [(v["dram_addr"], end)] if end > v["dram_addr"] else []
    return []


def _any_overlap(ranges: list[Range], others: list[Range]) -> bool:
    for a0, a1 in ranges:
        for b0, b1 in others:
            if a0 < b1 and b0 < a1:
                return True
    return False


def _sram_overlap(operands: Sequence[isa.SramOperand], others: Sequence[isa.SramOperand]) -> bool:
    for a in operands:
        a0, a1 = a.addr, a.addr + a.size
        for b in others:
            if a0 < b.addr + b.size and b.addr < a1:
                return True
    return False


_OTHER, _LOAD, _STORE, _BARRIER = range(4)
_KIND = {**{cls: _LOAD for cls in LOADS}, **{cls: _STORE for cls in STORES}, accel.BarrierOp: _BARRIER}


def hoist_loads(instructions: list[accel.InstructionOp], layers: dict[str, accel.LayerOp]) -> list[accel.InstructionOp]:
    """Move each DMA load up past the independent instructions before it (see CONTRACT)."""
    written: dict[int, list[Range]] = {}  # by id(store), computed for the stores a load meets
    out: list[tuple[accel.InstructionOp, int, Sequence[isa.SramOperand]]] = []  # (op, kind, its SRAM operands)
    for op in instructions:
        kind = _KIND.get(type(op), _OTHER)
        symbol = op.layer_symbol
        dest = accel.sram_operands(op, layers.get(symbol) if symbol else None)
        if kind != _LOAD:
            out.append((op, kind, dest))
            continue
        source = dram_ranges(op)
        at = len(out)
        while at > 0:
            before, before_kind, before_sram = out[at - 1]
            if before_kind == _BARRIER or before_kind == _LOAD:
                break
            if _sram_overlap(dest, before_sram):
                break
            if before_kind == _STORE:
                ranges = written.get(id(before))
                if ranges is None:
                    ranges = written[id(before)] = dram_ranges(before)
                if _any_overlap(ranges, source):
                    break
            at -= 1
        out.insert(at, (op, kind, dest))
    return [op for op, _kind, _sram in out]


@dataclass(frozen=True)
class DmaPrefetch(ModulePass):
    """Overlap DMA transfers with compute: drop barriers, hoist loads (accel level)."""

    name = "dma-prefetch"
    ir_level: ClassVar[str] = "accel"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        programs = [o for o in op.ops if isinstance(o, accel.ProgramOp)]
        if len(programs) != 1:
            raise CompileError(f"dma-prefetch: expected one accel.program (run it after convert-loops-to-accel), "
                               f"found {len(programs)}")
        program = programs[0]
        block = program.body.block
        parts = program.parts()
        instructions = parts.instructions
        if not instructions:
            return
        layers = {layer.symbol: layer for layer in parts.layers}
        kept = []
        for inst in instructions:
            if type(inst) is accel.BarrierOp:
                inst.detach()
                inst.erase()
            else:
                kept.append(inst)
        if kept:
            _reorder(block, kept[0].prev_op, hoist_loads(kept, layers))


def _reorder(block, anchor, scheduled: list[accel.InstructionOp]) -> None:
    """Put the block's instructions after `anchor` (None: at the start) in the order
    `scheduled`, moving only those out of place: the loads that moved up (every other
    instruction keeps its place relative to the others), not the whole program."""
    previous = anchor
    for inst in scheduled:
        if inst.prev_op is not previous:
            inst.detach()
            if previous is None:
                block.insert_op_before(inst, block.first_op)
            else:
                block.insert_op_after(inst, previous)
        previous = inst
