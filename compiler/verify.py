"""Verifying a module after every pass without re-verifying ops the pass did not touch.

xDSL verifies an op against its own definition (operand and result types, properties,
attributes, traits, terminators) and then, recursively, everything nested in it. After a
pass most ops are exactly as the previous verification saw them: the same objects, with
the same operands, result types, properties and attributes (xDSL attributes are
immutable, so a changed property is a new or unequal object), in the same block. An op verifies the
same then, so `IncrementalVerifier` re-verifies (without its nested ops) only the ops
whose fingerprint of those (and of their operands' types, their blocks' argument types
and terminators) changed; the ops whose verifiers read the ops they hold
(the module's symbol table, a function's body, the accel program's instructions) when one
of those changed or came or went; and symbol users (memref.get_global checks its global)
when a module-level op changed; and, when a function's type or attributes change, the ops
it holds (its return checks the type). A container that checks the ops it holds whole
(VERIFIES_HELD_OPS: accel.program and its instructions) is re-run every time and those ops
are not fingerprinted here: it remembers which of them passed, with what. Ops compare by
identity and attributes by value (an equal attribute verifies the same); a fingerprint holds its objects, so no id is reused while
it is kept. Only op-local and the listed container checks are redone: a check that reads
ops elsewhere (beyond those above) would need listing here.
The first call verifies everything, as `module.verify()` does.
"""

from __future__ import annotations

from operator import attrgetter

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.traits import SymbolUserOpInterface

from snnc.compiler.local_verify import verify_local
from snnc.dialects import accel

CONTAINERS = (ModuleOp, func.FuncOp, accel.ProgramOp)  # their verifiers read the ops they hold directly
READ_BY_HELD_OPS = (func.FuncOp,)  # containers whose held ops' verifiers read them: func.return checks the type
_PLAIN, _CONTAINER, _SYMBOL_USER = range(3)
_KINDS: dict[type, int] = {}


def _kind(op: Operation) -> int:
    """A container; a symbol user (memref.get_global and the like check the symbol they
    name: a module-level op); or neither. Per op class, looked up once."""
    cls = type(op)
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _KINDS[cls] = (_CONTAINER if isinstance(op, CONTAINERS) else
                              _SYMBOL_USER if op.get_trait(SymbolUserOpInterface) is not None else _PLAIN)
    return kind


def _walk(root: Operation) -> list[Operation]:
    """root and every op nested in it, in pre-order (as Operation.walk, without its nested
    generators), less the ops a container checks whole itself (its VERIFIES_HELD_OPS, the
    accel program's instructions: tens of thousands, left to the container's own memory;
    they hold no ops, the container's check refusing any region)."""
    out: list[Operation] = []
    stack = [root]
    while stack:
        op = stack.pop()
        out.append(op)
        held = getattr(type(op), "VERIFIES_HELD_OPS", ())
        for region in reversed(op.regions):
            for block in reversed(region.blocks):
                stack.extend(reversed(accel.ops_of(block, held, wanted=False) if held else tuple(block.ops)))
    return out


_TYPE = attrgetter("type")


def _fingerprint(op: Operation) -> tuple:
    """What op.verify(verify_nested_ops=False) reads, as the objects themselves: compared
    with `==`, a tuple (or dict) checks each item by identity first, and xDSL attributes
    compare by value, so an equal attribute rebuilt by a pass counts as unchanged (it
    verifies the same). Holding the objects keeps them alive, so no id is reused while compared."""
    operands = op._operands  # an immutable tuple, replaced when an operand changes
    regions = op.regions
    if regions:
        blocks = tuple(b for r in regions for b in r.blocks)
        return (op, op.parent, op.properties.copy(), op.attributes.copy(), operands,
                tuple(map(_TYPE, operands)), tuple(map(_TYPE, op.results)), blocks,
                tuple(b.last_op for b in blocks), tuple(a.type for b in blocks for a in b.args))
    return (op, op.parent, op.properties.copy(), op.attributes.copy(), operands,
            tuple(map(_TYPE, operands)), tuple(map(_TYPE, op.results)))


class IncrementalVerifier:
    def __init__(self) -> None:
        self.seen: dict[int, tuple] = {}
        self.children: dict[int, tuple] = {}  # container -> ids of the ops it holds directly
        self.signatures: dict[int, tuple] = {}  # container -> what its held ops' verifiers read of it

    def __call__(self, module: ModuleOp) -> None:
        seen: dict[int, tuple] = {}
        changed_parents: set[int] = set()  # ids of the ops holding a changed op directly
        verified: set[int] = set()
        containers: list[Operation] = []
        symbol_users: list[Operation] = []
        previous = self.seen
        for op in _walk(module):
            fingerprint = _fingerprint(op)
            kind = _kind(op)
            if kind == _CONTAINER:
                containers.append(op)
            elif kind == _SYMBOL_USER:
                symbol_users.append(op)
            elif previous.get(id(op)) != fingerprint:
                verify_local(op)
                verified.add(id(op))
                changed_parents.add(id(op.parent_op()))
            seen[id(op)] = fingerprint
        children, signatures = {}, {}
        for op in containers:
            if getattr(type(op), "VERIFIES_HELD_OPS", ()):
                # it checks the ops it holds itself, remembering which passed (_walk left them
                # out): run it every time, its own memory makes that cheap
                children[id(op)] = ()
                verify_local(op)
                continue
            held = children[id(op)] = tuple(id(o) for r in op.regions for b in r.blocks for o in b.ops)
            signature = signatures[id(op)] = (*map(id, op.properties.values()), *map(id, op.attributes.values()),
                                              *(id(a.type) for r in op.regions for b in r.blocks for a in b.args))
            if self.signatures.get(id(op)) != signature:
                if isinstance(op, READ_BY_HELD_OPS):
                    for child in (o for r in op.regions for b in r.blocks for o in b.ops):
                        if id(child) not in verified:
                            verify_local(child)
                verify_local(op)
            elif id(op) in changed_parents or self.children.get(id(op)) != held:
                verify_local(op)
        symbols_changed = id(module) in changed_parents or self.children.get(id(module)) != children[id(module)]
        for op in symbol_users:
            if symbols_changed or self.seen.get(id(op)) != seen[id(op)]:
                verify_local(op)
        self.seen, self.children, self.signatures = seen, children, signatures
