"""Verifying a module after every pass without re-verifying ops the pass did not touch.

xDSL verifies an op against its own definition (operand and result types, properties,
attributes, traits, terminators) and then, recursively, everything nested in it. After a
pass most ops are exactly as the previous verification saw them: the same objects, with
the same operands, result types, properties and attributes (xDSL attributes are
immutable, so a changed property is a new object), in the same block. An op verifies the
same then, so `IncrementalVerifier` re-verifies (without its nested ops) only the ops
whose fingerprint of those identities (and of their operands' types, their blocks'
argument types and terminators) changed, and, when anything changed, the ops whose
verifiers look at all they contain (the module, functions, the accel program, symbol users). The
objects behind a fingerprint are kept alive, so their ids cannot be reused by new ones.
The first call verifies everything, as `module.verify()` does.
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.traits import SymbolUserOpInterface

from snnc.dialects import accel

WHOLE_BODY = (ModuleOp, func.FuncOp, accel.ProgramOp)  # their verifiers read everything inside them
_READS_OTHERS: dict[type, bool] = {}  # per op class: does its verifier read ops it does not hold?


def _reads_others(op: Operation) -> bool:
    """Containers that check all they hold, and symbol users (memref.get_global checks the
    global's type): re-verified whenever anything in the module changed."""
    cls = type(op)
    known = _READS_OTHERS.get(cls)
    if known is None:
        known = _READS_OTHERS[cls] = isinstance(op, WHOLE_BODY) or op.get_trait(SymbolUserOpInterface) is not None
    return known


def _fingerprint(op: Operation) -> tuple[tuple, tuple]:
    props = tuple(op.properties.values())
    attrs = tuple(op.attributes.values())
    names = (*op.properties, *op.attributes)  # tuples of interned strings: compared by value
    operands = tuple(op.operands)
    # An operand's type changes when a pass retypes the value's definition (a buffer, say)
    types = (*(v.type for v in operands), *(r.type for r in op.results))
    blocks = op.regions and tuple(b for r in op.regions for b in r.blocks)
    ends = blocks and tuple(b.last_op for b in blocks)
    arg_types = blocks and tuple(a.type for b in blocks for a in b.args)
    keep = (op, op.parent, props, attrs, operands, types, ends, arg_types)
    ids = (id(op.parent), names, *map(id, props), *map(id, attrs), len(operands), *map(id, operands),
           len(types), *map(id, types), len(ends), *map(id, ends), *map(id, arg_types))
    return ids, keep


class IncrementalVerifier:
    def __init__(self) -> None:
        self.seen: dict[int, tuple] = {}
        self.keep: list = []

    def __call__(self, module: ModuleOp) -> None:
        seen: dict[int, tuple] = {}
        keep: list = []
        changed = not self.seen
        containers: list[Operation] = []
        for op in module.walk():
            ids, kept = _fingerprint(op)
            if _reads_others(op):
                containers.append(op)
            elif self.seen.get(id(op)) != ids:
                op.verify(verify_nested_ops=False)
                changed = True
            seen[id(op)] = ids
            keep.append(kept)
        if changed or seen.keys() != self.seen.keys():
            for op in containers:
                op.verify(verify_nested_ops=False)
        self.seen, self.keep = seen, keep
