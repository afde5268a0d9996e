"""The parts of a loop-level module (after convert-snn-to-loops), for the passes that read them.

    builtin.module attributes {tile.hw = "<TOML>", tile.timesteps = T, tile.model = "..."} {
      memref.global @w_conv1 ...          weights (dense, or bitmask fibers: `tile.fiber_offsets`)
      memref.global @p_conv1 ...          parameter blocks (int32)
      accel.layer @conv1 ...              layer descriptors (isa.LAYER_FIELDS)
      func.func @main() -> (outputs) {
        tile.map ...                      feature maps in DRAM, inputs (`io`) first
        tile.kernel "conv1" { ... }       one per layer or fused group, in program order
        func.return %outputs              graph outputs, named by `snn.onnx_name`
      }
    }
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from xdsl.dialects import func, memref, scf
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr

from snnc.backend.errors import CompileError
from snnc.backend.hwconfig import HwConfig
from snnc.dialects import accel, tile

HW_ATTR = "tile.hw"
TIMESTEPS_ATTR = "tile.timesteps"
MODEL_ATTR = "tile.model"


@functools.lru_cache(maxsize=8)
def _hw_from_toml(text: str) -> HwConfig:
    return HwConfig.from_toml(text, "the module's tile.hw")


def module_hw(module: ModuleOp) -> HwConfig:
    attr = module.attributes.get(HW_ATTR)
    if not isinstance(attr, StringAttr):
        raise CompileError("this pass runs on the loop level: run convert-snn-to-loops first")
    return _hw_from_toml(attr.data)


def module_timesteps(module: ModuleOp) -> int:
    attr = module.attributes.get(TIMESTEPS_ATTR)
    if not isinstance(attr, IntegerAttr):
        raise CompileError("this pass runs on the loop level: run convert-snn-to-loops first")
    return attr.value.data


def main_of(module: ModuleOp) -> func.FuncOp:
    for op in module.body.block.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == "main":
            return op
    raise CompileError("the module has no func.func @main")


def layer_table(module: ModuleOp) -> dict[str, accel.LayerOp]:
    return {op.symbol: op for op in module.body.block.ops if isinstance(op, accel.LayerOp)}


def globals_of(module: ModuleOp) -> dict[str, memref.GlobalOp]:
    return {op.sym_name.data: op for op in module.body.block.ops if isinstance(op, memref.GlobalOp)}


def kernels(module: ModuleOp) -> list[tile.KernelOp]:
    """@main's kernels in program order, those in a loop around kernels (time-interleave)
    included; not the members of a fused kernel."""
    return list(_kernels_in(main_of(module).body.block))


def _kernels_in(block) -> Iterator[tile.KernelOp]:
    for op in block.ops:
        if isinstance(op, tile.KernelOp):
            yield op
        elif isinstance(op, scf.ForOp):
            yield from _kernels_in(op.body.block)


def interleaved(kernel: tile.KernelOp) -> bool:
    """A kernel run inside a loop around kernels (time-interleave): the kernels run between
    its visits reuse its SRAM, so nothing of it stays on chip from one visit to the next."""
    return isinstance(kernel.parent_op(), scf.ForOp)


def maps(module: ModuleOp) -> list[tile.MapOp]:
    return [op for op in main_of(module).body.walk() if isinstance(op, tile.MapOp)]


def is_loop_level(module: ModuleOp) -> bool:
    return HW_ATTR in module.attributes


def unique_symbol(name: str, taken: set[str]) -> str:
    """A symbol made of `name`'s letters, digits and underscores, not in `taken` (added to it)."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "layer"
    if base[0].isdigit():
        base = "l_" + base
    sym, i = base, 1
    while sym in taken:
        sym, i = f"{base}_{i}", i + 1
    taken.add(sym)
    return sym


def module_symbols(module: ModuleOp) -> set[str]:
    """Every symbol of the module's layers and constants (one namespace)."""
    return set(layer_table(module)) | set(globals_of(module))
