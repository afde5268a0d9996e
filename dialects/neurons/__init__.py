"""The neuron-kind registry: one module per kind (dialects/neurons/kind.py states the contract).

Built-in kinds are imported lazily, on the first lookup: `lif` (leak "beta", snnTorch
Leaky, NIR LIF), `tau_lif` (leak "tau", SpikingJelly LIFNode) and `integrate_fire`
(leak "none", IF). Each registers itself when imported; a plugin kind does the same
(import its module before compiling). Lookups: `kind_named(name)`, `kinds()`.
"""

from __future__ import annotations

import importlib

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

# Modules of the built-in kinds, in the order the registry lists them.
BUILTIN_KINDS = ("lif", "tau_lif", "integrate_fire")
_loaded = False


def kinds() -> dict[str, NeuronKind]:
    """Every registered kind by name (built-ins first, then plugins in registration order)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_KINDS:
            importlib.import_module(f"snnc.dialects.neurons.{module}")
    return dict(sorted(registered().items(), key=lambda item: _builtin_rank(item[1])))


def _builtin_rank(kind: NeuronKind) -> int:
    """Built-ins first, in BUILTIN_KINDS order, even when a plugin registered earlier."""
    module = type(kind).__module__.rpartition(".")[2]
    return BUILTIN_KINDS.index(module) if module in BUILTIN_KINDS else len(BUILTIN_KINDS)


def kind_named(name: str) -> NeuronKind:
    """The kind of a `snn.lif` `leak` value; ValueError when none is registered."""
    found = kinds().get(name)
    if found is None:
        raise ValueError(f"unknown neuron kind (snn.lif leak) {name!r}, expected one of {tuple(kinds())}")
    return found


def isa_fields(leak: str, reset: str, reset_timing: str, compare: str, per_channel: bool,
               no_fire: bool) -> dict[str, int]:
    """The LIF fields of a layer descriptor (backend/isa.py) for a `snn.lif`'s properties."""
    return dict(leak=kind_named(leak).hw_leak, reset=RESETS[reset],
                lif_flags=int(lif_flags(compare, reset_timing, per_channel, no_fire)))
