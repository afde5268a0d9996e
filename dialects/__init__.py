"""snnc's xDSL dialects: `snn` (time and neuron state), `tile` (the loop level's compute and
data-movement ops, with scf/arith/memref) and `accel` (the accelerator).

`get_all_dialects()` maps each dialect name to a lazy factory (the form xDSL's
Universe and drivers expect); `make_context()` returns a Context with builtin,
func and every snnc dialect loaded, ready to parse any snnc IR level.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.context import Context
from xdsl.ir import Dialect


def _snn() -> Dialect:
    from snnc.dialects.snn import SNN

    return SNN


def _accel() -> Dialect:
    from snnc.dialects.accel import ACCEL

    return ACCEL


def _tile() -> Dialect:
    from snnc.dialects.tile import TILE

    return TILE


def get_all_dialects() -> dict[str, Callable[[], Dialect]]:
    return {"snn": _snn, "tile": _tile, "accel": _accel}


def make_context() -> Context:
    from xdsl.dialects.arith import Arith
    from xdsl.dialects.builtin import Builtin
    from xdsl.dialects.func import Func
    from xdsl.dialects.memref import MemRef
    from xdsl.dialects.scf import Scf

    ctx = Context()
    for dialect in (Builtin, Func, Arith, Scf, MemRef):
        ctx.load_dialect(dialect)
    for name, factory in get_all_dialects().items():
        if name not in ctx.registered_dialect_names:
            ctx.register_dialect(name, factory)
    return ctx
