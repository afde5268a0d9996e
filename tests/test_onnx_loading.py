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
