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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from snnc.backend import isa
from snnc.backend.errors import CompileError
from snnc.dialects import accel


def fence(program: accel.ProgramOp) -> None:
    """Insert the BARRIERs in place (see CONTRACT): only the barriers added or dropped are
    linked or unlinked (a program has tens of thousands of instructions), and a barrier
    right after another or at the start is dropped."""
    parts = program.parts()
    layers = {layer.symbol: layer for layer in parts.layers}
    block = program.body.block
    last: accel.InstructionOp | None = None  # the last instruction kept
    touched: list[isa.SramOperand] = []  # SRAM ranges accessed since the last barrier
    for op in parts.instructions:
        if type(op) is accel.BarrierOp:
            if last is None or type(last) is accel.BarrierOp:
                op.detach()
                op.erase()
            else:
                last = op
            touched = []
            continue
        symbol = op.layer_symbol
        operands = accel.sram_operands(op, layers.get(symbol) if symbol else None)
        if touched and _conflicts(operands, touched):
            if last is not None and type(last) is not accel.BarrierOp:
                block.insert_op_before(accel.BarrierOp.create_with(), op)
            touched = []
        last = op
        touched.extend(operands)


def _conflicts(operands: Sequence[isa.SramOperand], touched: list[isa.SramOperand]) -> bool:
    for o in operands:
        if not o.writes:
            continue
        start, end, reads = o.addr, o.addr + o.size, o.reads
        for t in touched:
            if t.addr < end and start < t.addr + t.size and not (t.writes and reads):
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
        fence(programs[0])
