"""`op.verify(verify_nested_ops=False)`, compiled once per op class.

xDSL verifies an IRDL op generically: for every op it re-derives from the op's definition
how many operands each definition takes, builds range constraints over tuples of types, and
formats names for error messages it will almost never raise. The incremental verifier
(compiler/verify.py) runs that check on every op a pass creates or changes, about 1,600
times per vgg16 compile, at ~45 µs each. `local_verifier(cls)` reads the definition once
and returns a function that performs the same checks in the same order with the same
`VerificationContext` (so constraint variables such as arith's `T` bind as in xDSL):

- Operation.verify's own checks (no erased operands; a block's last op is a terminator
  where its region needs one; ops with successors take xDSL's path whole);
- the definition's operands, results, regions and successors (fixed counts checked
  directly; variadic or segment-sized lists through xDSL's own functions);
- its properties (required ones present, no unknown ones) and attributes, each constraint
  checked directly where it is a plain type test and through its own `verify` otherwise;
- its traits and the class's own `verify_`.

The compiled check only says "this op verifies": on any failure, or any exception at all,
the op is verified again by xDSL, which raises the error users see. So the fast path can
only make verification cheaper, never change its verdict or its message.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import getclosurevars

from xdsl.ir import Attribute, ErasedSSAValue, Operation
from xdsl.irdl import IRDLOperation
from xdsl.irdl.constraints import (
    AnyAttr, AttrConstraint, BaseAttr, EqAttrConstraint, EqIntConstraint, RangeConstraint,
    RangeLengthConstraint, RangeOf, VarConstraint, VerificationContext,
)
from xdsl.irdl.operations import (
    AttrSizedOperandSegments, AttrSizedRegionSegments, AttrSizedResultSegments,
    AttrSizedSuccessorSegments, OpDef, OptAttributeDef, OptPropertyDef, SingleBlockRegionDef,
    VariadicDef, VarIRConstruct, irdl_op_verify_arg_list, irdl_op_verify_regions, verify_variadic_size,
)
from xdsl.traits import IsolatedFromAbove, IsTerminator, NoTerminator, OpTrait

AttrCheck = Callable[[Attribute, VerificationContext], object]  # raises VerifyException, or returns falsy
_VERIFIERS: dict[type[Operation], Callable[[Operation], None]] = {}


def verify_local(op: Operation) -> None:
    """op.verify(verify_nested_ops=False), through its class's compiled check."""
    verifier = _VERIFIERS.get(type(op))
    if verifier is None:
        verifier = _VERIFIERS[type(op)] = local_verifier(type(op))
    verifier(op)


def local_verifier(cls: type[Operation]) -> Callable[[Operation], None]:
    """A function equivalent to `op.verify(verify_nested_ops=False)` for ops of `cls`."""
    fast = _compile(cls)
    if fast is None:
        return _slow

    def verify(op: Operation) -> None:
        try:
            if fast(op):
                return
        except Exception:  # noqa: BLE001 - xDSL's own verification decides, and words the error
            pass
        op.verify(verify_nested_ops=False)

    return verify


def _slow(op: Operation) -> None:
    op.verify(verify_nested_ops=False)


def _custom_verify(cls: type[IRDLOperation], op_def: OpDef) -> tuple[bool, Callable | None]:
    """(found, the class's own verify_) from the wrapper irdl_op_definition installed, which
    runs op_def.verify and then the custom one; (False, None) for any other verify_."""
    wrapper = cls.verify_
    if getattr(wrapper, "__qualname__", "") != "get_accessors_from_op_def.<locals>.verify_":
        return False, None
    captured = getclosurevars(wrapper).nonlocals
    if captured.get("op_def") is not op_def:
        return False, None
    return True, captured.get("custom_verify")


def _attr_check(constraint: AttrConstraint) -> AttrCheck | None:
    """A check for one attribute; None when the constraint accepts anything."""
    if isinstance(constraint, AnyAttr):
        return None
    if type(constraint) is BaseAttr:
        base = constraint.attr
        return lambda attr, _: isinstance(attr, base)
    if type(constraint) is EqAttrConstraint:
        expected = constraint.attr
        return lambda attr, _: attr == expected
    if type(constraint) is VarConstraint:  # binds on first use; later uses must be equal (xDSL's order)
        name, inner = constraint.name, _attr_check(constraint.constraint)

        def bind(attr: Attribute, context: VerificationContext) -> bool:
            if context.set_attr_variable(name, attr) and inner is not None:
                return inner(attr, context)
            return True

        return bind

    def generic(attr: Attribute, context: VerificationContext) -> bool:
        constraint.verify(attr, context)
        return True

    return generic


def _single_check(range_constraint: RangeConstraint) -> AttrCheck | None | bool:
    """The element check of a one-element definition (`RangeOf(c)` of length 1); False when
    the range constraint has another shape."""
    if (type(range_constraint) is RangeLengthConstraint and type(range_constraint.constraint) is RangeOf
            and type(range_constraint.length) is EqIntConstraint and range_constraint.length.value == 1):
        return _attr_check(range_constraint.constraint.constr)
    return False


def _values_check(op_def: OpDef, construct: VarIRConstruct, segments: type) -> Callable | None:
    """Checks of the operands (or results): (count, [(index, check)]) for fixed lists;
    None when xDSL's irdl_op_verify_arg_list must run."""
    defs = op_def.operands if construct is VarIRConstruct.OPERAND else op_def.results
    if any(isinstance(o, segments) for o in op_def.options) or any(isinstance(d, VariadicDef) for _, d in defs):
        return None
    checks = []
    for index, (_, arg_def) in enumerate(defs):
        check = _single_check(arg_def.constr)
        if check is False:
            return None
        if check is not None:
            checks.append((index, check))
    return len(defs), checks


def _compile(cls: type[Operation]) -> Callable[[Operation], bool] | None:
    if not issubclass(cls, IRDLOperation):
        return None
    op_def = cls.get_irdl_definition()
    found, custom_verify = _custom_verify(cls, op_def)
    if not found:
        return None
    operand_checks = _values_check(op_def, VarIRConstruct.OPERAND, AttrSizedOperandSegments)
    result_checks = _values_check(op_def, VarIRConstruct.RESULT, AttrSizedResultSegments)
    region_checks = _region_checks(op_def)
    no_successors = not op_def.successors and not any(isinstance(o, AttrSizedSuccessorSegments) for o in op_def.options)
    properties = [(name, isinstance(d, OptPropertyDef), _attr_check(d.constr)) for name, d in op_def.properties.items()]
    property_names = frozenset(op_def.properties)
    attributes = [(name, isinstance(d, OptAttributeDef), _attr_check(d.constr)) for name, d in op_def.attributes.items()]
    traits = [_trait_check(t) for t in op_def.traits if type(t).verify is not OpTrait.verify]
    is_terminator = cls.has_trait(IsTerminator)

    def values_ok(op: Operation, values: tuple, checks, construct, context: VerificationContext) -> bool:
        if checks is None:
            irdl_op_verify_arg_list(op, op_def, construct, context)
            return True
        count, typed = checks
        if len(values) != count:
            return False
        return all(check(values[i].type, context) for i, check in typed)

    def fast(op: Operation) -> bool:
        operands = op._operands
        if op.successors or any(isinstance(o, ErasedSSAValue) for o in operands):
            return False
        if not is_terminator and not _terminator_ok(op):
            return False
        context = VerificationContext()
        if not values_ok(op, operands, operand_checks, VarIRConstruct.OPERAND, context):
            return False
        if not values_ok(op, op.results, result_checks, VarIRConstruct.RESULT, context):
            return False
        if region_checks is None:
            irdl_op_verify_regions(op, op_def, context)
        elif not _regions_ok(op, region_checks, context):
            return False
        if not no_successors:
            verify_variadic_size(op, op_def, VarIRConstruct.SUCCESSOR)
        if not (_named_ok(op.properties, properties, context) and property_names.issuperset(op.properties)
                and _named_ok(op.attributes, attributes, context)):
            return False
        if not all(trait(op) for trait in traits):
            return False
        if custom_verify is not None:
            custom_verify(op)
        return True

    return fast


def _named_ok(values: dict[str, Attribute], checks: list, context: VerificationContext) -> bool:
    """Each defined property (or attribute) present unless optional, and satisfying its constraint."""
    for name, optional, check in checks:
        value = values.get(name)
        if value is None:
            if not optional:
                return False
        elif check is not None and not check(value, context):
            return False
    return True


def _trait_check(trait: OpTrait) -> Callable[[Operation], object]:
    if type(trait) is IsolatedFromAbove:
        return _isolated_ok

    def generic(op: Operation) -> bool:
        trait.verify(op)
        return True

    return generic


def _isolated_ok(op: Operation) -> bool:
    """IsolatedFromAbove's rule in two linear walks instead of an ancestor search per
    operand: every operand of the ops it checks (all nested ops, except inside nested
    IsolatedFromAbove ops, which check themselves) is owned by an op or block nested in `op`."""
    inside: set[int] = set()
    checked: list[Operation] = []
    stack = [(region, True) for region in op.regions]
    while stack:
        region, check = stack.pop()
        for block in region.blocks:
            inside.add(id(block))
            for child in block.ops:
                inside.add(id(child))
                if check:
                    checked.append(child)
                if child.regions:
                    nested_check = check and not child.has_trait(IsolatedFromAbove)
                    stack.extend((r, nested_check) for r in child.regions)
    return all(id(value.owner) in inside for child in checked for value in child._operands)


def _terminator_ok(op: Operation) -> bool:
    """Operation.verify's rule for a non-terminator op that ends its block."""
    block = op.parent
    if block is None or block.last_op is not op:
        return True
    region = block.parent
    if region is None:
        return True
    blocks = len(region.blocks)
    if blocks == 1:
        parent = region.parent
        return parent is None or parent.has_trait(NoTerminator)
    return blocks == 0


def _region_checks(op_def: OpDef) -> list[tuple[bool, RangeConstraint | None]] | None:
    """[(single block, entry-argument constraint or None)] for fixed region lists; None
    when xDSL's irdl_op_verify_regions must run."""
    if any(isinstance(o, AttrSizedRegionSegments) for o in op_def.options):
        return None
    checks = []
    for _, region_def in op_def.regions:
        if isinstance(region_def, VariadicDef):
            return None
        entry = region_def.entry_args
        trivial = type(entry) is RangeOf and isinstance(entry.constr, AnyAttr)
        checks.append((isinstance(region_def, SingleBlockRegionDef), None if trivial else entry))
    return checks


def _regions_ok(op: Operation, checks: list, context: VerificationContext) -> bool:
    regions = op.regions
    if len(regions) != len(checks):
        return False
    for region, (single_block, entry) in zip(regions, checks):
        blocks = region.blocks
        if single_block and len(blocks) != 1:
            return False
        if entry is not None:
            first = region.first_block
            if first is not None:
                entry.verify(first.arg_types, context)
    return True
