"""The pass registry: built-in snnc passes, plugin passes, and `--load-pass`.

Built-in passes are registered lazily by name (the xDSL convention), so the
`-p a,b{opt=1}` pipeline syntax of xdsl-opt works for all of them in `snnc
--passes`, `snn-opt` and stock `xdsl-opt`. Third-party passes join through the
entry-point group `snnc.passes` (name = pass name, value = "module:Class") or
explicitly with `--load-pass module:Class`.

Every pass class may set `ir_level = "snn"` (runs before lowering, the default)
or `ir_level = "accel"` (runs after `convert-snn-to-accel`); the compiler
pipeline uses it to place user passes around the lowering.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from xdsl.passes import ModulePass

from snnc.backend.errors import SnncError

PLUGIN_GROUP = "snnc.passes"


def _convert_snn_to_accel() -> type[ModulePass]:
    from snnc.passes.convert_snn_to_accel import ConvertSnnToAccel

    return ConvertSnnToAccel


def _loop_reorder() -> type[ModulePass]:
    from snnc.passes.loop_reorder import LoopReorder

    return LoopReorder


def _time_batch() -> type[ModulePass]:
    from snnc.passes.time_batch import TimeBatch

    return TimeBatch


def _spike_pack() -> type[ModulePass]:
    from snnc.passes.spike_pack import SpikePack

    return SpikePack


def _layer_fuse() -> type[ModulePass]:
    from snnc.passes.layer_fuse import LayerFuse

    return LayerFuse


def _compress_weights() -> type[ModulePass]:
    from snnc.passes.compress_weights import CompressWeights

    return CompressWeights


def _dma_prefetch() -> type[ModulePass]:
    from snnc.passes.dma_prefetch import DmaPrefetch

    return DmaPrefetch


def _exit_checks() -> type[ModulePass]:
    from snnc.passes.exit_checks import ExitChecks

    return ExitChecks


def get_builtin_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    return {
        "convert-snn-to-accel": _convert_snn_to_accel,
        "loop-reorder": _loop_reorder,
        "time-batch": _time_batch,
        "spike-pack": _spike_pack,
        "compress-weights": _compress_weights,
        "layer-fuse": _layer_fuse,
        "dma-prefetch": _dma_prefetch,
        "exit-checks": _exit_checks,
    }


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
