"""exit-checks: let the accelerator stop once the classifier is confident (ELSA early exit).

An SNN's output grows one timestep at a time: summed over timesteps 0..t, the classifier's
output may already be confident, and the rest of the run is wasted. `exit.check io t`
(backend/isa.py, docs/isa.md "Early exit") sums that output over 0..t and halts the program
when the top softmax probability of the sum reaches the threshold the host sets at run time
(`snnc run/eval --exit-confidence P`; no threshold: it never halts). This pass places the
checks.

CONTRACT
  Requires: accel-level IR (after convert-loops-to-accel; the compile pipeline runs it after
    every other accel-level pass, so nothing moves the checks afterwards), one accel.program
    without exit checks.
  Guarantees:
    * one `accel.exit_check` per timestep t of the chosen graph output, right after the last
      instruction that completes timesteps 0..t of it: the last DMA store in program order
      that writes a DRAM byte holding one of those timesteps (`binformat.io_timestep_mask`;
      a dma.store's exact rows, a dma.store_bm's fiber slots). Checks sharing a place are in
      t order. Under FTP a layer's timesteps come in lane groups, so the checks of a group
      follow its store; a timestep-major schedule gets them early.
    * nothing else moves, and values are unchanged: without a threshold the simulator's
      outputs are identical (each check only reads DRAM).
  Options:
    output  ONNX name of the graph output to check; "" (default) = the program's only output
            (an error names the outputs when there are several).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from snnc.backend import binformat, isa
from snnc.backend.errors import CompileError
from snnc.dialects import accel


def io_descriptor(op: accel.IoOp) -> binformat.IODesc:
    """The binformat.IODesc the encoder writes for `op`."""
    values = op.field_values()
    values["format"] = isa.Format(values["format"])
    return binformat.IODesc(name=op.io_name.data, is_output=bool(op.is_output.data), onnx_shape=op.shape, **values)


def store_rows(op: accel.InstructionOp) -> tuple[np.ndarray, np.ndarray] | None:
    """(starts, ends) of the DRAM bytes a store writes; None for other instructions."""
    v = op.field_values()
    if isinstance(op, accel.DmaStoreOp):
        starts = v["dram_addr"] + np.arange(v["rows"], dtype=np.int64) * v["dram_stride"]
        return starts, starts + v["row_bytes"]
    if isinstance(op, accel.DmaStoreBmOp):
        end = isa.fiber_dma_hull(v["dram_addr"], v["fibers"], v["fiber_elems"], v["elem_bits"], v["flags"],
                                 v["sram_bytes"])
        return np.array([v["dram_addr"]]), np.array([end])
    return None


def check_places(instructions: list[accel.InstructionOp], desc: binformat.IODesc) -> list[int]:
    """Per timestep t of `desc`: the index of the last store writing one of timesteps 0..t."""
    last = np.full(desc.timesteps, -1, dtype=np.int64)
    for index, op in enumerate(instructions):
        rows = store_rows(op)
        if rows is not None and rows[0].size:
            last[binformat.io_timestep_mask(desc, *rows)] = index
    missing = np.flatnonzero(last < 0)
    if missing.size:
        raise CompileError(f"exit-checks: no instruction stores timestep {int(missing[0])} of output '{desc.name}'")
    return [int(i) for i in np.maximum.accumulate(last)]


@dataclass(frozen=True)
class ExitChecks(ModulePass):
    """Place exit.check after each timestep of the classifier output (accel level, ELSA early exit)."""

    name = "exit-checks"
    ir_level: ClassVar[str] = "accel"

    output: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        programs = [o for o in op.ops if isinstance(o, accel.ProgramOp)]
        if len(programs) != 1:
            raise CompileError(f"exit-checks: expected one accel.program (run it after convert-loops-to-accel), "
                               f"found {len(programs)}")
        program = programs[0]
        instructions = program.instructions()
        if any(isinstance(inst, accel.ExitCheckOp) for inst in instructions):
            raise CompileError("exit-checks: the program already has exit checks")
        io_ops = program.io_ops()
        outputs = [(index, io) for index, io in enumerate(io_ops) if io.is_output.data]
        names = [io.io_name.data for _, io in outputs]
        if self.output:
            chosen = [(index, io) for index, io in outputs if io.io_name.data == self.output]
            if not chosen:
                raise CompileError(f"exit-checks: output={self.output!r} is not a graph output "
                                   f"(outputs: {', '.join(names)})")
        elif len(outputs) != 1:
            raise CompileError(f"exit-checks: the model has {len(outputs)} outputs ({', '.join(names)}); "
                               "name the classifier: exit-checks{output=NAME} (or --exit-checks NAME)")
        else:
            chosen = outputs
        index, io = chosen[0]
        places = check_places(instructions, io_descriptor(io))
        for t in reversed(range(len(places))):  # inserting after the same op in reverse keeps t's order
            program.body.block.insert_op_after(accel.ExitCheckOp.create_with(io=index, t=t), instructions[places[t]])
