"""insert-barriers: fence every SRAM write-after-read and write-after-write with a BARRIER.

CONTRACT
  Requires: accel-level IR (after convert-loops-to-accel): one accel.program.
  Guarantees: before an instruction that writes an SRAM range an earlier instruction
    read or wrote since the last BARRIER, a BARRIER is inserted, so that the write
    cannot overtake the earlier access (the engines issue in program order, but a DMA
    load may finish before the compute that read its buffer). An in-place update (an
    instruction reading what it writes, after the writer) needs no barrier: the
    scoreboard orders read-after-write. Values are unchanged. dma-prefetch later
    removes every barrier when the machine's scoreboard orders all hazards.
  Options: none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from snnc.backend.errors import CompileError
from snnc.dialects import accel


def with_barriers(instructions: list[accel.InstructionOp], layers: dict[str, accel.LayerOp]) -> list[accel.InstructionOp]:
    out: list[accel.InstructionOp] = []
    touched: list[tuple[int, int, bool, bool]] = []  # SRAM ranges accessed since the last barrier
    for op in instructions:
        if isinstance(op, accel.BarrierOp):
            if out and not isinstance(out[-1], accel.BarrierOp):
                out.append(op)
            touched = []
            continue
        operands = accel.sram_operands(op, layers.get(op.layer_symbol) if op.layer_symbol else None)
        if _conflicts(operands, touched):
            if out and not isinstance(out[-1], accel.BarrierOp):
                out.append(accel.BarrierOp.create_with())
            touched = []
        out.append(op)
        touched.extend((o.addr, o.end, o.reads, o.writes) for o in operands)
    return out


def _conflicts(operands, touched) -> bool:
    for o in operands:
        if not o.writes:
            continue
        for start, end, did_read, did_write in touched:
            if start < o.end and o.addr < end and not (did_write and o.reads):
                return True
    return False


@dataclass(frozen=True)
class InsertBarriers(ModulePass):
    """Insert BARRIERs before SRAM write-after-read / write-after-write hazards (accel level)."""

    name = "insert-barriers"
    ir_level: ClassVar[str] = "accel"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        programs = [o for o in op.ops if isinstance(o, accel.ProgramOp)]
        if len(programs) != 1:
            raise CompileError(f"insert-barriers: expected one accel.program, found {len(programs)}")
        program = programs[0]
        instructions = program.instructions()
        layers = {layer.symbol: layer for layer in program.layers()}
        fenced = with_barriers(instructions, layers)
        if len(fenced) == len(instructions):
            return
        kept = {id(i) for i in fenced}
        anchor = instructions[0].prev_op
        for inst in instructions:
            inst.detach()
            if id(inst) not in kept:
                inst.erase()
        block = program.body.block
        for inst in fenced:
            if anchor is None:
                block.insert_op_before(inst, block.first_op) if block.first_op else block.add_op(inst)
            else:
                block.insert_op_after(inst, anchor)
            anchor = inst
