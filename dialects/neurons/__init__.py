"""The neuron-kind registry: one module per kind (dialects/neurons/kind.py states the contract).

Built-in kinds are the modules of this package, imported lazily on the first lookup:
`lif` (leak "beta", snnTorch Leaky, NIR LIF), `tau_lif` (leak "tau", SpikingJelly
LIFNode), `integrate_fire` (leak "none", IF), and any module added here (a new built-in
kind is one new file). Each registers itself when imported. A plugin kind does the same:
its module is imported before compiling, or named in the entry-point group
`snnc.neuron_kinds` (value: the module), which the first lookup imports after the
built-ins. Lookups: `kind_named(name)`, `kinds()`.
"""

from __future__ import annotations

import importlib
import pkgutil

from snnc.backend.errors import SnncError
from snnc.backend.plugins import entry_points

from snnc.dialects.neurons.kind import (
    LEAK_PARAMS,
    PARAMS,
    RESETS,
    NeuronKind,
    lif_flags,
    register,
    registered,
    unregister,
)

__all__ = ["LEAK_PARAMS", "PARAMS", "NeuronKind", "isa_fields", "kind_named", "kinds", "register", "unregister"]

# The built-in kinds are this package's modules (all but `kind`); these first, in this
# order (messages list kinds in it), then any other module of the package by name.
BUILTIN_KINDS = ("lif", "tau_lif", "integrate_fire")
PLUGIN_GROUP = "snnc.neuron_kinds"
_builtin: list[str] = []  # the built-in kinds' modules once loaded, in registry order


def _load() -> None:
    if _builtin:
        return
    found = {info.name for info in pkgutil.iter_modules(__path__)} - {"kind"}
    _builtin.extend(f"{__name__}.{m}" for m in [*(m for m in BUILTIN_KINDS if m in found),
                                                 *sorted(found - set(BUILTIN_KINDS))])
    for module in _builtin:
        importlib.import_module(module)
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            importlib.import_module(ep.value)
        except Exception as exc:  # a broken plugin: one line naming it, not a traceback
            raise SnncError(f"neuron kind plugin {ep.name!r} ({ep.value}): cannot import: {exc}") from None


def kinds() -> dict[str, NeuronKind]:
    """Every registered kind by name (built-ins first, then plugins in registration order)."""
    _load()
    return dict(sorted(registered().items(), key=lambda item: _builtin_rank(item[1])))


def _builtin_rank(kind: NeuronKind) -> int:
    """Built-ins first, in registry order, even when a plugin registered earlier."""
    module = type(kind).__module__
    return _builtin.index(module) if module in _builtin else len(_builtin)


def kind_named(name: str) -> NeuronKind:
    """The kind of a `snn.lif` `leak` value; ValueError when none is registered."""
    _load()
    found = registered().get(name)
    if found is None:
        raise ValueError(f"unknown neuron kind (snn.lif leak) {name!r}, expected one of {tuple(kinds())}")
    return found


def isa_fields(leak: str, reset: str, reset_timing: str, compare: str, per_channel: bool,
               no_fire: bool) -> dict[str, int]:
    """The LIF fields of a layer descriptor (backend/isa.py) for a `snn.lif`'s properties."""
    return dict(leak=kind_named(leak).hw_leak, reset=RESETS[reset],
                lif_flags=int(lif_flags(compare, reset_timing, per_channel, no_fire)))
