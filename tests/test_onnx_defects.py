"""Bad ONNX files found by fuzzing (issue 15 §3): `snnc bad.onnx -o out.bin` gives one clean line.

Each defect exits with status 1, prints exactly one `snnc: error:` line that names the node,
initializer or field and says what is wrong, raises no numpy warning, and writes no output.
A model whose neurons have no function body is compiled on purpose (torch.onnx.ops writes
such nodes; onnxruntime refuses them), and the compiler says so.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from snnc.compiler.cli import main
from snnc.compiler.frontend.canonical import Network
from snnc.compiler.frontend.onnx_import import all_graphs


def _model(form: str = "unrolled") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    net = Network(3)
    x = net.input("x", (1, 8))
    s, _ = net.lif(net.dense(x, rng.integers(-4, 5, (8, 4)) / 8, name="fc1"), beta=0.5, name="lif1")
    net.output(s, "spikes")
    return net.to_onnx(form)


def _weight(model: onnx.ModelProto) -> TensorProto:
    return next(i for i in model.graph.initializer if i.name == "fc1.weight")


def _set_weight(model, index, value):
    w = _weight(model)
    array = numpy_helper.to_array(w).copy()
    array[index] = value
    w.CopyFrom(numpy_helper.from_array(array, w.name))


def _nodes(graph: onnx.GraphProto):
    """Every node, Scan bodies included."""
    return [node for g in all_graphs(graph) for node in g.node]


def _set_threshold(model, value):
    for node in _nodes(model.graph):
        if node.op_type == "LIF":
            node.attribute.append(helper.make_attribute("threshold", value))


def _truncate_raw_data(model):
    w = _weight(model)
    w.raw_data = w.raw_data[:-8]


def _newline_name(model):
    node = next(n for n in model.graph.node if n.name == "fc1")
    node.name = "fc1\nsecond line"
    node.op_type = "Sin"  # Sin(x, W): wrong arity, so the node is named in an error


def _no_outputs(model):
    del model.graph.output[:]


def _ir_99(model):
    model.ir_version = 99


def _duplicate_names(model):
    for node in _nodes(model.graph):
        node.name = "same"


def _bias_1e30(model):
    model.graph.initializer.append(numpy_helper.from_array(np.full(4, 1e30, np.float32), "big_bias"))
    for node in _nodes(model.graph):
        if node.op_type == "Gemm":
            node.input.append("big_bias")


def _function_with_another_opset(model):
    """A model-local function importing another ONNX opset than the model (onnx cannot inline it)."""
    model.functions.append(helper.make_function("my", "Ident", ["a"], ["b"], [helper.make_node("Identity", ["a"], ["b"])],
                                                [helper.make_opsetid("", 11)]))
    model.opset_import.append(helper.make_opsetid("my", 1))
    graph = model.graph
    node = next(n for n in _nodes(graph) if n.op_type == "Gemm")
    out, node.output[0] = node.output[0], "gemm_out"
    graph.node.insert(list(graph.node).index(node) + 1, helper.make_node("Ident", ["gemm_out"], [out], domain="my"))


DEFECTS = {
    "raw data size": (_truncate_raw_data, ["initializer 'fc1.weight'", "raw data is 120 bytes", "need 128"]),
    "threshold inf": (lambda m: _set_threshold(m, float("inf")), ["node 'lif1' (snn::LIF)", "threshold", "inf"]),
    "NaN weight": (lambda m: _set_weight(m, (0, 0), np.nan), ["node 'fc1' (Gemm)", "weight holds nan at [0, 0]"]),
    "inf weight": (lambda m: _set_weight(m, (1, 2), -np.inf), ["node 'fc1' (Gemm)", "weight holds -inf"]),
    "weight 1e30": (lambda m: _set_weight(m, (0, 0), 1e30), ["'fc1'", "weight 1e+30 does not fit int8"]),
    "threshold 1e30": (lambda m: _set_threshold(m, 1e30), ["snn.lif 'lif1'", "threshold 1e+30 does not fit int32"]),
    "bias 1e30": (_bias_1e30, ["'fc1'", "bias 1e+30 does not fit int32"]),
    "newline in a name": (_newline_name, ["node 'fc1\\nsecond line' (Sin)"]),
    "no graph outputs": (_no_outputs, ["no graph outputs"]),
    "ir_version 99": (_ir_99, ["ir_version 99", f"({onnx.IR_VERSION})", "onnxruntime refuses it"]),
    "duplicate node names": (_duplicate_names, ["two nodes share the name 'same'", "onnxruntime refuses"]),
    "function opset": (_function_with_another_opset, ["cannot inline the model-local functions (my::Ident)",
                                                      "incompatible opset versions"]),
}


def _compile(path: Path, out: Path, capsys) -> tuple[int, list[str], list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["compile", str(path), "-o", str(out)])
    return code, capsys.readouterr().err.strip().splitlines(), caught


# (the node renamed for the newline, and the node the function wraps, are top-level in the unrolled form only)
CASES = [(d, form) for d in DEFECTS for form in ("unrolled", "scan")
         if form == "unrolled" or d not in ("newline in a name", "function opset")]


@pytest.mark.parametrize("defect,form", CASES)
def test_bad_onnx_is_one_clean_line(tmp_path, capsys, defect, form):
    mutate, fragments = DEFECTS[defect]
    model = _model(form)
    mutate(model)
    path, out = tmp_path / "bad.onnx", tmp_path / "out.bin"
    onnx.save(model, path)
    code, err, caught = _compile(path, out, capsys)
    assert code == 1, err
    assert len(err) == 1 and err[0].startswith("snnc: error: "), err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert not out.exists()


def test_external_data_outside_the_model_folder_names_the_initializer(tmp_path, capsys):
    model = _model()
    w = _weight(model)
    (tmp_path / "weights.bin").write_bytes(w.raw_data)
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../weights.bin")
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(model, folder / "m.onnx")
    code, err, _ = _compile(folder / "m.onnx", tmp_path / "out.bin", capsys)
    assert code == 1 and len(err) == 1
    assert "initializer 'fc1.weight'" in err[0] and "'../weights.bin' is outside the model's folder" in err[0]
    # the same file next to the model is read
    (folder / "weights.bin").write_bytes((tmp_path / "weights.bin").read_bytes())
    w.external_data[0].value = "weights.bin"
    onnx.save(model, folder / "m.onnx")
    assert main(["compile", str(folder / "m.onnx"), "-o", str(tmp_path / "out.bin")]) == 0


def test_missing_external_data_file_names_it(tmp_path, capsys):
    model = _model()
    w = _weight(model)
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="gone.bin")
    onnx.save(model, tmp_path / "m.onnx")
    code, err, _ = _compile(tmp_path / "m.onnx", tmp_path / "out.bin", capsys)
    assert code == 1 and "initializer 'fc1.weight'" in err[0] and "'gone.bin' does not exist" in err[0]


def test_missing_neuron_function_compiles_and_says_why(tmp_path, capsys):
    """onnxruntime refuses snn::LIF calls without a function; snnc reads them as its canonical
    neuron (what torch.onnx.ops.symbolic_multi_out writes), says so, and verify uses its own reference."""
    model = _model()
    del model.functions[:]
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert main(["compile", str(path), "-o", str(tmp_path / "out.bin")]) == 0
    err = capsys.readouterr().err
    assert "node 'lif1' (snn::LIF) and 2 more have no function body" in err and "onnxruntime cannot run" in err
    np.savez(tmp_path / "in.npz", x=np.full((3, 1, 8), 0.5, np.float32))
    assert main(["verify", str(path), "--input", str(tmp_path / "in.npz")]) == 0
    captured = capsys.readouterr()
    assert "reference: the snn-dialect reference interpreter" in captured.out + captured.err
