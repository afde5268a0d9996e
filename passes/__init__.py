"""The pass registry: built-in snnc passes, plugin passes, and `--load-pass`.

Built-in passes are registered lazily by name (the xDSL convention), so the
`-p a,b{opt=1}` pipeline syntax of xdsl-opt works for all of them in `snnc
--passes`, `snn-opt` and stock `xdsl-opt`. Third-party passes join through the
entry-point group `snnc.passes` (name = pass name, value = "module:Class") or
explicitly with `--load-pass module:Class`.

Every pass class may set `ir_level` to "snn" (the default: before quantise),
"loop" (the loop level, after convert-snn-to-loops: where the scheduling passes
work) or "accel" (after convert-loops-to-accel); the compiler pipeline
(compiler/pipeline.py) uses it to place user passes among the lowering stages.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from xdsl.passes import ModulePass

from snnc.backend.errors import SnncError
from snnc.backend.plugins import entry_points

PLUGIN_GROUP = "snnc.passes"


def _lazy(module: str, cls: str) -> Callable[[], type[ModulePass]]:
    def load() -> type[ModulePass]:
        return getattr(importlib.import_module(f"snnc.passes.{module}"), cls)

    return load


# name -> (module, class), in pipeline order (compiler/pipeline.py)
BUILTIN_PASSES = {
    "quantise": ("quantise", "Quantise"),
    "convert-snn-to-loops": ("convert_snn_to_loops", "ConvertSnnToLoops"),
    "compress-weights": ("compress_weights", "CompressWeights"),
    "loop-reorder": ("loop_reorder", "LoopReorder"),
    "time-batch": ("time_batch", "TimeBatch"),
    "layer-fuse": ("layer_fuse", "LayerFuse"),
    "time-interleave": ("time_interleave", "TimeInterleave"),
    "spike-pack": ("spike_pack", "SpikePack"),
    "tile-sizes": ("tile_sizes", "TileSizes"),
    "hoist-loads": ("hoist_loads", "HoistLoads"),
    "sram-alloc": ("sram_alloc", "SramAlloc"),
    "dram-alloc": ("dram_alloc", "DramAlloc"),
    "convert-loops-to-accel": ("convert_loops_to_accel", "ConvertLoopsToAccel"),
    "insert-barriers": ("insert_barriers", "InsertBarriers"),
    "dma-prefetch": ("dma_prefetch", "DmaPrefetch"),
    "exit-checks": ("exit_checks", "ExitChecks"),
}


def get_builtin_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    return {name: _lazy(module, cls) for name, (module, cls) in BUILTIN_PASSES.items()}


def load_pass_class(spec: str) -> type[ModulePass]:
    """Import `module:Class` and check it is a ModulePass with a name."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise SnncError(f"--load-pass {spec!r}: expected the form module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SnncError(f"--load-pass {spec!r}: cannot import {module_name}: {exc}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, ModulePass)):
        raise SnncError(f"--load-pass {spec!r}: {class_name} is not an xdsl ModulePass")
    if not isinstance(getattr(cls, "name", None), str):
        raise SnncError(f"--load-pass {spec!r}: {class_name} has no `name`")
    return cls


def get_plugin_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    passes: dict[str, Callable[[], type[ModulePass]]] = {}
    for ep in entry_points(group=PLUGIN_GROUP):
        passes[ep.name] = lambda value=ep.value: load_pass_class(value)
    return passes


def get_all_passes(load: tuple[str, ...] = ()) -> dict[str, Callable[[], type[ModulePass]]]:
    """Built-in passes, then plugins, then explicitly loaded classes (later wins)."""
    passes = dict(get_builtin_passes())
    passes.update(get_plugin_passes())
    for spec in load:
        cls = load_pass_class(spec)
        passes[cls.name] = lambda cls=cls: cls
    return passes


def pass_level(cls: type[ModulePass]) -> str:
    return getattr(cls, "ir_level", "snn")
