"""Property test of the ONNX reader (issue 15 §3): mutated model bytes and mutated graphs compile
or fail with a clean SnncError (one line), never another exception.

Small and derandomised so CI runs the same examples in seconds; SNNC_SLOW=1 draws many more at
random. Each example goes through the whole compiler (import, passes, lowering, encoding), since a
mutation the reader accepts must not crash a later stage either.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from snnc.backend.errors import SnncError
from snnc.compiler.frontend.canonical import Network
from snnc.compiler.frontend.onnx_import import all_graphs
from snnc.compiler.pipeline import compile_model

SLOW = bool(os.environ.get("SNNC_SLOW"))
FUZZ = settings(max_examples=400 if SLOW else 40, derandomize=not SLOW, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _base(form: str) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    net = Network(3)
    x = net.input("x", (1, 6))
    s1, _ = net.lif(net.dense(x, rng.integers(-4, 5, (6, 5)) / 8, name="fc1"), beta=0.5, name="lif1")
    s2, v2 = net.lif(net.dense(s1, rng.integers(-4, 5, (5, 3)) / 4, name="fc2"), threshold=0.5, name="lif2")
    net.output(s2, "spikes")
    net.final_output(v2, "v_final")
    return net.to_onnx(form)


BASES = {form: _base(form) for form in ("unrolled", "scan")}
# a real export: legacy SpikingJelly's Loop over T writing spikes with ScatterND (tests/data)
BASES["loop"] = onnx.load(str(Path(__file__).parent / "data" / "legacy_sj_loop_if_soft.onnx"))
BYTES = {form: model.SerializeToString() for form, model in BASES.items()}


def _compiles_or_fails_cleanly(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a numpy overflow/invalid warning is a defect too
        try:
            compile_model(path)
        except SnncError as exc:
            assert "\n" not in str(exc) or "\\n" in repr(str(exc)), str(exc)


def _check_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        path.write_bytes(data)
        _compiles_or_fails_cleanly(path)


# --------------------------------------------------------------------------- mutated bytes

byte_edits = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(["flip", "set", "cut", "insert"]),
                                st.integers(0, 255)), min_size=1, max_size=6)


@FUZZ
@given(form=st.sampled_from(sorted(BYTES)), edits=byte_edits)
def test_mutated_model_bytes_fail_cleanly(form, edits):
    data = bytearray(BYTES[form])
    for where, how, value in edits:
        i = int(where * len(data))
        if how == "flip":
            data[i] ^= 1 << (value % 8)
        elif how == "set":
            data[i] = value
        elif how == "cut":
            del data[i:i + 1 + value % 16]
        else:
            data[i:i] = bytes([value])
        if not data:
            break
    _check_bytes(bytes(data))


# --------------------------------------------------------------------------- mutated graphs


SPECIAL = [0.0, -1.0, 1e30, -1e30, float("nan"), float("inf"), 1e-30, 3.0, 2**31]
OPS = ["Relu", "Sin", "Add", "MatMul", "Gemm", "Conv", "Concat", "Gather", "Identity", "Reshape", "Split", "Loop",
       "Scan", "Greater", "Cast", "LIF", "Unsqueeze", "Squeeze", "Slice", "ScatterND", "Expand"]


def _mutate(model: onnx.ModelProto, data) -> None:
    """One structural edit, chosen by hypothesis's `data`."""
    graphs = list(all_graphs(model.graph))
    nodes = [node for g in graphs for node in g.node]
    names = sorted({x for n in nodes for x in [*n.input, *n.output] if x} | {i.name for g in graphs for i in g.initializer})
    if not nodes:
        return
    kind = data.draw(st.sampled_from([
        "op_type", "domain", "input", "drop_node", "attr_value", "attr_add", "init_value", "init_dims",
        "init_type", "input_shape", "output_name", "drop_function", "name", "opset", "swap_inputs",
    ]))
    node = data.draw(st.sampled_from(nodes))
    if kind == "op_type":
        node.op_type = data.draw(st.sampled_from(OPS))
    elif kind == "domain":
        node.domain = data.draw(st.sampled_from(["", "snn", "other", "com.microsoft"]))
    elif kind == "input" and node.input:
        node.input[data.draw(st.integers(0, len(node.input) - 1))] = data.draw(st.sampled_from([*names, "", "nowhere"]))
    elif kind == "drop_node":
        graph = next(g for g in graphs if any(n is node for n in g.node))
        graph.node.remove(node)
    elif kind == "attr_value" and node.attribute:
        attr = data.draw(st.sampled_from(list(node.attribute)))
        if attr.type == onnx.AttributeProto.FLOAT:
            attr.f = data.draw(st.sampled_from(SPECIAL))
        elif attr.type == onnx.AttributeProto.INT:
            attr.i = data.draw(st.sampled_from([-1, 0, 2, 7, 2**40]))
        elif attr.type == onnx.AttributeProto.INTS:
            attr.ints[:] = data.draw(st.lists(st.integers(-3, 9), max_size=5))
    elif kind == "attr_add":
        name = data.draw(st.sampled_from(["threshold", "beta", "reset", "reset_zero", "axis", "to", "transB", "num_scan_inputs"]))
        value = data.draw(st.sampled_from([*SPECIAL[:7], 0, 1, -5, "zero", "subtract", "bogus", [1, 2]]))
        del node.attribute[:]  # (an attribute name may appear once)
        node.attribute.append(helper.make_attribute(name, value))
    elif kind in ("init_value", "init_dims", "init_type"):
        inits = [i for g in graphs for i in g.initializer]
        init = data.draw(st.sampled_from(inits))
        if kind == "init_value":
            try:  # (an earlier edit may have broken it)
                array = numpy_helper.to_array(init)
            except Exception:
                return
            if array.dtype.kind == "f" and array.size:
                array = array.copy()
                array.reshape(-1)[data.draw(st.integers(0, array.size - 1))] = data.draw(st.sampled_from(SPECIAL))
                init.CopyFrom(numpy_helper.from_array(array, init.name))
        elif kind == "init_dims":
            init.dims[:] = data.draw(st.lists(st.integers(0, 9), max_size=4))
        else:
            init.data_type = data.draw(st.sampled_from([0, 2, 7, 8, 9, 11, 16, 99]))
    elif kind == "input_shape":
        dims = model.graph.input[0].type.tensor_type.shape.dim
        if dims:
            dims[data.draw(st.integers(0, len(dims) - 1))].dim_value = data.draw(st.sampled_from([0, 1, 2, 5, 65, 2**31]))
    elif kind == "output_name" and model.graph.output:
        model.graph.output[0].name = data.draw(st.sampled_from([*names, "nowhere"]))
    elif kind == "drop_function":
        del model.functions[:]
    elif kind == "name":
        node.name = data.draw(st.sampled_from(["", "a\nb", "x" * 300, nodes[0].name]))
    elif kind == "opset":
        model.opset_import[0].version = data.draw(st.sampled_from([1, 7, 11, 13, 19, 99]))
    elif kind == "swap_inputs" and len(node.input) > 1:
        node.input[0], node.input[1] = node.input[1], node.input[0]


@FUZZ
@given(form=st.sampled_from(sorted(BASES)), data=st.data())
def test_mutated_graphs_fail_cleanly(form, data):
    model = onnx.ModelProto()
    model.CopyFrom(BASES[form])
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate(model, data)
    try:
        serialised = model.SerializeToString()
    except Exception:  # the edit made an unserialisable proto (e.g. an unpaired surrogate): nothing to test
        return
    _check_bytes(serialised)
