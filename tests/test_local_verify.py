"""compiler/local_verify.py's compiled check gives xDSL's verdict and message on every op:
on the IR each level of a real compile holds, and on that IR mutated the ways a buggy pass
could break it (wrong property types, missing and unknown properties, retyped operands,
values from outside a function, a block without its terminator)."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xdsl.dialects import arith, func, scf
from xdsl.dialects.builtin import IntAttr, IntegerAttr, IntegerType, StringAttr, i32
from xdsl.ir import Operation
from xdsl.utils.exceptions import VerifyException

from snnc.compiler import zoo
from snnc.compiler.local_verify import _compile, verify_local
from snnc.compiler.pipeline import CompileOptions, compile_model
from snnc.dialects import tile


@functools.cache
def _compiled():
    return compile_model(zoo.build("vgg-small")[0], CompileOptions(passes="time-batch{timesteps=2},layer-fuse"))


@pytest.fixture(scope="module")
def compiled():
    return _compiled()


def _levels(compiled):
    return {"snn": compiled.snn_module, "loop": compiled.loop_module, "accel": compiled.accel_module}


def _verdict(check, op: Operation) -> str | None:
    try:
        check(op)
    except VerifyException as error:
        return str(error)
    return None


def _xdsl(op: Operation) -> None:
    op.verify(verify_nested_ops=False)


def test_every_op_of_every_level_verifies_both_ways(compiled):
    for level, module in _levels(compiled).items():
        for op in module.walk():
            assert _verdict(verify_local, op) is None, (level, op.name)
            assert _verdict(_xdsl, op) is None, (level, op.name)


def test_the_loop_level_takes_the_compiled_path(compiled):
    """The point of the module: the ops the loop level is made of never fall back to
    xDSL's generic check when they verify."""
    classes = {type(op) for op in compiled.loop_module.walk()}
    for cls in (tile.AllocOp, tile.SynOp, tile.LifOp, scf.ForOp, scf.YieldOp, arith.ConstantOp, func.FuncOp):
        assert cls in classes
    assert all(_compile(cls) is not None for cls in classes), sorted(c.name for c in classes if _compile(c) is None)


_WRONG = {IntAttr: StringAttr("wrong"), StringAttr: IntAttr(3)}


def _mutate(module, index: int, kind: str) -> Operation | None:
    """Breaks (or, for a discardable attribute, merely changes) the index-th op; returns the
    op whose verdict to compare, or None when the mutation does not apply to that op."""
    ops = list(module.walk())
    op = ops[index % len(ops)]
    if kind == "wrong-property-type":
        name = next((n for n, v in op.properties.items() if type(v) in _WRONG), None)
        if name is None:
            return None
        op.properties[name] = _WRONG[type(op.properties[name])]
    elif kind == "missing-property":
        if not op.properties:
            return None
        del op.properties[next(iter(op.properties))]
    elif kind == "unknown-property":
        op.properties["no_such_property"] = IntAttr(1)
    elif kind == "discardable-attribute":
        op.attributes["note"] = StringAttr("harmless")
    elif kind == "retyped-operand":
        if not op.operands:
            return None
        wrong = arith.ConstantOp(IntegerAttr(1, IntegerType(7)))
        if op.parent_block() is not None:
            op.parent_block().insert_op_before(wrong, op)
        op.operands = [wrong.result, *op.operands[1:]]
    elif kind == "value-from-outside":
        if not op.operands:
            return None
        outside = arith.ConstantOp(IntegerAttr(1, i32))  # detached: defined in no function
        op.operands = [outside.result, *op.operands[1:]]
        return op.parent_op() if isinstance(op.parent_op(), func.FuncOp) else op
    elif kind == "no-terminator":  # the block's last op goes: the op before it now ends the block
        block = op.parent_block()
        if block is None or len(block.ops) < 2:
            return None
        block.last_op.detach()
        return block.last_op
    return op


@settings(max_examples=120, deadline=None, derandomize=True)
@given(level=st.sampled_from(["snn", "loop", "accel"]), index=st.integers(0, 10_000),
       kind=st.sampled_from(["wrong-property-type", "missing-property", "unknown-property",
                             "discardable-attribute", "retyped-operand", "value-from-outside", "no-terminator"]))
def test_mutated_ops_get_xdsls_verdict_and_message(level, index, kind):
    module = _levels(_compiled())[level].clone()
    op = _mutate(module, index, kind)
    if op is None:
        return
    assert _verdict(verify_local, op) == _verdict(_xdsl, op)
