"""The incremental verifier (compiler/verify.py) catches what module.verify() catches after a
pass: changes to an op, to the type of a value it uses, to a symbol it names, and to the
ops a container checks."""

from __future__ import annotations

import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import FunctionType, IntegerType, MemRefType, StringAttr
from xdsl.utils.exceptions import VerifyException

from snnc.compiler.pipeline import CompileOptions, compile_model
from snnc.compiler.verify import IncrementalVerifier
from snnc.compiler import zoo
from snnc.dialects import accel, tile
from snnc.passes.footprints import set_buffer_type


@pytest.fixture(scope="module")
def compiled():
    return compile_model(zoo.build("vgg-small")[0], CompileOptions())


def _verified(module):
    verifier = IncrementalVerifier()
    verifier(module)
    return verifier


def test_first_call_verifies_everything_and_unchanged_module_passes(compiled):
    verifier = _verified(compiled.loop_module)
    verifier(compiled.loop_module)  # nothing changed: nothing to report


def test_retyped_buffer_is_caught(compiled):
    module = compiled.loop_module.clone()
    verifier = _verified(module)
    buf = next(op for op in module.walk() if isinstance(op, tile.AllocOp))
    # a buffer moved to DRAM: the alloc's own verifier refuses it
    set_buffer_type(buf, MemRefType(IntegerType(8), [4], memory_space=tile.DRAM))
    with pytest.raises(VerifyException):
        verifier(module)
    with pytest.raises(VerifyException):
        module.verify()


def test_changed_function_type_is_caught_at_its_return(compiled):
    module = compiled.loop_module.clone()
    verifier = _verified(module)
    main = next(op for op in module.walk() if isinstance(op, func.FuncOp))
    # drop the results from the signature only: func.return (unchanged itself) no longer matches it
    main.function_type = FunctionType.from_lists(main.function_type.inputs.data, [])
    with pytest.raises(VerifyException):
        module.verify()
    with pytest.raises(VerifyException):
        verifier(module)


def test_program_rechecks_instructions_when_one_changes(compiled):
    module = compiled.accel_module.clone()
    verifier = _verified(module)
    inst = next(op for op in module.walk() if isinstance(op, accel.InstructionOp) and "layer" in op.properties)
    inst.properties["layer"] = type(inst.properties["layer"])(StringAttr("no_such_layer"))
    with pytest.raises(VerifyException, match="no_such_layer"):
        verifier(module)


def test_program_rechecks_an_instruction_whose_layer_changed(compiled):
    """accel.program remembers which instructions passed; a change to their layer's fields
    (the instruction itself untouched) still fails them."""
    from xdsl.dialects.builtin import IntAttr

    module = compiled.accel_module.clone()
    verifier = _verified(module)
    verifier(module)  # every instruction is now remembered as passed
    inst = next(op for op in module.walk() if isinstance(op, accel.SynOp))
    layer = next(op for op in module.walk() if isinstance(op, accel.LayerOp) and op.symbol == inst.layer_symbol)
    layer.properties["out_h"] = IntAttr(0)  # no row of any tile is inside a 0-row output now
    with pytest.raises(VerifyException, match="outside the output height 0"):
        verifier(module)


def test_program_rechecks_an_instruction_whose_field_changed(compiled):
    from xdsl.dialects.builtin import IntAttr

    module = compiled.accel_module.clone()
    verifier = _verified(module)
    inst = next(op for op in module.walk() if isinstance(op, accel.SynOp))
    inst.properties["rows"] = IntAttr(0)
    with pytest.raises(VerifyException, match="rows"):
        verifier(module)


@pytest.mark.parametrize("damage", ["missing", "unknown", "wrong type", "out of range"])
def test_program_checks_the_instructions_it_holds_as_their_own_definition_would(compiled, damage):
    """The verifier leaves a changed instruction to its accel.program (VERIFIES_HELD_OPS),
    which checks what the op's IRDL definition would: every field present, no other
    property, each of its type and range."""
    from xdsl.dialects.builtin import IntAttr

    module = compiled.accel_module.clone()
    verifier = _verified(module)
    inst = next(op for op in module.walk() if isinstance(op, accel.SynOp))
    if damage == "missing":
        del inst.properties["rows"]
    elif damage == "unknown":
        inst.properties["colour"] = IntAttr(1)
    elif damage == "wrong type":
        inst.properties["rows"] = StringAttr("1")
    else:
        inst.properties["rows"] = IntAttr(1 << 40)
    with pytest.raises(VerifyException, match="rows|colour"):
        module.verify()
    with pytest.raises(VerifyException, match="rows|colour"):
        verifier(module)
