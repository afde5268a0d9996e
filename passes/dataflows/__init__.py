"""The dataflows `loop-reorder{dataflow=NAME}` knows: one module per dataflow, each registering itself.

A dataflow is a `DataflowRecipe`: its name, the descriptor code the simulator's SYN
timing model reads (`snnc.backend.isa.Dataflow`), its default loop nest over the
output-channel tiles n, the output-row tiles m (the batch loop b rides just outside m),
the timesteps t (`t*`: parallel over the TPPE lanes) and, when the reduction is walked
in chunks, k; and `rewrite`, what it does to a synaptic kernel once loop-reorder has
ordered the nest (k-chunking, where partial sums live). The built-in ones are ftp.py,
ip_seq.py, gust.py and op.py (as SCALE-Sim keeps one file per dataflow).

Adding one is one file: a module that calls `register(DataflowRecipe(...))` when it is
imported. It joins through the entry-point group `snnc.dataflows` (name = dataflow,
value = module), or by being imported before the compile (a plugin pass module, a test).
Not a pass.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from xdsl.dialects.builtin import ModuleOp

from snnc.backend.errors import CompileError
from snnc.backend.isa import Dataflow
from snnc.backend.plugins import entry_points
from snnc.dialects import tile

PLUGIN_GROUP = "snnc.dataflows"
BUILTIN_MODULES = ("ftp", "ip_seq", "gust", "op")  # registration order: the order errors list them in
LOOPS = ("n", "m", "t", "k")

# rewrite(module, kernel, loops): run on each synaptic kernel after loop-reorder ordered its nest
Rewrite = Callable[[ModuleOp, tile.KernelOp, tuple[str, ...]], None]


@dataclass(frozen=True)
class DataflowRecipe:
    name: str  # loop-reorder{dataflow=NAME}
    code: Dataflow  # the layer descriptor's `dataflow` field: the simulator's SYN model
    order: tuple[str, ...]  # the default nest, outermost first, over n, m, t (t* = parallel) and k
    rewrite: Rewrite | None = None
    summary: str = ""  # one line for listings

    def __post_init__(self) -> None:
        names = [loop.rstrip("*") for loop in self.order]
        if sorted(set(names)) != sorted(names) or not {"n", "m", "t"} <= set(names) or set(names) - set(LOOPS):
            raise ValueError(f"dataflow {self.name!r}: order {self.order} must name each of n, m, t once (and k)")
        if "k" in names and self.rewrite is None:
            raise ValueError(f"dataflow {self.name!r}: a k loop needs a rewrite that chunks the reduction")


_REGISTRY: dict[str, DataflowRecipe] = {}
_loaded = False


def register(recipe: DataflowRecipe) -> DataflowRecipe:
    """Add `recipe` under its name (a later registration of the same name replaces it)."""
    _REGISTRY[recipe.name] = recipe
    return recipe


def unregister(name: str) -> None:
    """Drop dataflow `name` (a test's or a session's own), if registered."""
    _REGISTRY.pop(name, None)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            importlib.import_module(ep.value.partition(":")[0])
        except Exception as exc:  # a broken plugin is the user's error: one line, naming it
            raise CompileError(f"dataflow plugin {ep.name!r} ({ep.value}): {type(exc).__name__}: {exc}") from None


def registered() -> dict[str, DataflowRecipe]:
    """Every registered dataflow by name: the built-in ones, then plugins."""
    _load()
    return dict(_REGISTRY)


def lookup(name: str) -> DataflowRecipe:
    """The dataflow `name`, or a one-line CompileError listing the registered ones."""
    known = registered()
    if name not in known:
        raise CompileError(f"loop-reorder: dataflow={name!r}, expected one of {', '.join(known)}")
    return known[name]
