"""Loading ONNX without ml_dtypes (compiler/frontend/onnx_loading.py): a compile never
initialises it, the initializers read the same as onnx.numpy_helper reads them, and onnx
still gets the real ml_dtypes once something needs it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from snnc.compiler.frontend.onnx_loading import tensor_to_array

PLAIN = [np.float32, np.float64, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64, np.uint32,
         np.uint64, np.bool_, np.float16]


def _typed(array: np.ndarray) -> onnx.TensorProto:
    """The tensor with its values in the typed field (no raw_data), as some exporters write it."""
    tensor = numpy_helper.from_array(array, "t")
    dtype = tensor.data_type
    tensor.ClearField("raw_data")
    if dtype == TensorProto.FLOAT:
        tensor.float_data.extend(array.ravel().tolist())
    elif dtype == TensorProto.DOUBLE:
        tensor.double_data.extend(array.ravel().tolist())
    elif dtype == TensorProto.INT64:
        tensor.int64_data.extend(array.ravel().tolist())
    elif dtype in (TensorProto.UINT32, TensorProto.UINT64):
        tensor.uint64_data.extend(array.ravel().tolist())
    elif dtype == TensorProto.FLOAT16:
        tensor.int32_data.extend(array.ravel().view(np.uint16).tolist())
    else:
        tensor.int32_data.extend(array.ravel().astype(np.int64).tolist())
    return tensor


@pytest.mark.parametrize("dtype", PLAIN, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("form", ["raw", "typed"])
def test_tensors_read_as_numpy_helper_reads_them(dtype, form):
    rng = np.random.default_rng(3)
    for shape in ((), (0,), (3, 4), (2, 1, 5)):
        array = (rng.standard_normal(shape) * 50).astype(dtype)
        tensor = numpy_helper.from_array(array, "t") if form == "raw" else _typed(array)
        got, want = tensor_to_array(tensor), numpy_helper.to_array(tensor)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_exotic_tensors_go_to_numpy_helper():
    tensor = onnx.helper.make_tensor("t", TensorProto.BFLOAT16, [2], [1.5, -2.0])
    np.testing.assert_array_equal(tensor_to_array(tensor).astype(np.float32), [1.5, -2.0])


def test_a_compile_never_initialises_ml_dtypes_and_onnx_still_gets_it(tmp_path):
    from snnc.compiler.fileio import atomic_write_bytes
    from snnc.compiler.zoo import build

    model, _ = build("mlp")
    path = tmp_path / "mlp.onnx"
    atomic_write_bytes(path, model.SerializeToString())
    code = (
        "import sys, json\n"
        "from snnc.compiler.cli import main\n"
        f"code = main(['compile', {str(path)!r}, '-o', {str(tmp_path / 'p.bin')!r}])\n"
        "state = [code, type(sys.modules['ml_dtypes']).__name__]\n"
        "import onnx\n"
        "state.append(str(onnx.helper.tensor_dtype_to_np_dtype(onnx.TensorProto.BFLOAT16)))\n"
        "state.append(type(sys.modules['ml_dtypes']).__name__)\n"
        "print(json.dumps(state))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert json.loads(out.splitlines()[-1]) == [0, "_DeferredModule", "bfloat16", "module"]


def _saved(model: onnx.ModelProto, path) -> str:
    path.write_bytes(model.SerializeToString())
    return str(path)


def _without(model: onnx.ModelProto, names) -> onnx.ModelProto:
    """`model` with the raw_data of initializers `names` cleared."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name in names:
            init.ClearField("raw_data")
    return out


def _matmul_model(*initializers: onnx.TensorProto) -> onnx.ModelProto:
    h = onnx.helper
    graph = h.make_graph([h.make_node("MatMul", ["X", "W"], ["Y"])], "g",
                         [h.make_tensor_value_info("X", TensorProto.FLOAT, [1, 64])],
                         [h.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 32])], list(initializers))
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_read_model_reads_big_initializers_in_place(tmp_path):
    """The zoo's vgg-small from a file: each initializer of over 1024 elements comes back as a
    read-only array equal to numpy_helper's reading, over a bytes object of its own (which
    the snn dialect's weight attributes keep: no further copy), and the model is onnx.load's
    without exactly those payloads (every other byte, field order included, the same)."""
    from snnc.compiler.frontend.onnx_loading import BIG_INITIALIZER_ELEMENTS, read_model
    from snnc.compiler.zoo import build
    from snnc.dialects.snn import _whole_bytes_buffer

    model, _ = build("vgg-small")
    path = _saved(model, tmp_path / "m.onnx")
    light, payloads = read_model(path)
    big = {i.name for i in model.graph.initializer if np.prod(i.dims) > BIG_INITIALIZER_ELEMENTS}
    assert set(payloads) == big and big
    for init in model.graph.initializer:
        if init.name in payloads:
            want, got = numpy_helper.to_array(init), payloads[init.name]
            assert got.dtype == want.dtype and got.shape == want.shape and not got.flags.writeable
            assert _whole_bytes_buffer(got) is not None
            np.testing.assert_array_equal(got, want)
    assert light.SerializeToString() == _without(onnx.load(path), big).SerializeToString()


def test_read_model_leaves_what_it_does_not_read_in_place_to_onnx(tmp_path):
    from snnc.compiler.frontend.onnx_loading import read_model

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 32)).astype(np.float32)
    cases = {
        "typed": _matmul_model(_typed(weight)),  # values in float_data: copied as before
        "short": _matmul_model(numpy_helper.from_array(weight[:63], "W")),  # raw_data shorter than dims say
        "small": _matmul_model(numpy_helper.from_array(weight[:4, :4].copy(), "W")),
    }
    short = cases["short"].graph.initializer[0]
    short.ClearField("dims")
    short.dims.extend([64, 32])
    for name, model in cases.items():
        for init in model.graph.initializer:
            init.name = "W"
        light, payloads = read_model(_saved(model, tmp_path / f"{name}.onnx"))
        assert payloads == {} and light == model, name
    twice = _matmul_model(numpy_helper.from_array(weight, "W"), numpy_helper.from_array(weight, "W"))
    light, payloads = read_model(_saved(twice, tmp_path / "twice.onnx"))  # two initializers named W
    assert payloads == {} and light == twice
    text = tmp_path / "m.textproto"  # onnx.load reads it as text: so does read_model
    onnx.save(_matmul_model(numpy_helper.from_array(weight, "W")), text)
    assert read_model(str(text)) == (onnx.load(str(text)), {})
    for data in (b"", b"\x3a\xff\xff"):  # empty; a graph field longer than the file
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(data)
        try:
            want = onnx.load(str(bad), load_external_data=False)
        except Exception as exc:  # the same error as onnx.load gives
            with pytest.raises(type(exc)):
                read_model(str(bad))
        else:
            assert read_model(str(bad)) == (want, {})


def test_a_shape_probe_runs_the_model_with_the_payloads_read_in_place(tmp_path):
    """neuron_fusion measures unknown shapes with onnxruntime: it gets the payloads back."""
    from snnc.compiler.frontend.neuron_fusion import _measured_shapes
    from snnc.compiler.frontend.onnx_loading import read_model

    weight = np.arange(64 * 32, dtype=np.float32).reshape(64, 32)
    light, payloads = read_model(_saved(_matmul_model(numpy_helper.from_array(weight, "W")), tmp_path / "m.onnx"))
    assert set(payloads) == {"W"}
    assert _measured_shapes(light, ["Y"], payloads) == {"Y": ([1, 32], TensorProto.FLOAT)}
    assert _measured_shapes(light, ["Y"]) == {}  # without them onnxruntime cannot run it
