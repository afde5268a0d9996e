"""Loading ONNX models without paying for ml_dtypes.

CONTRACT:
  * `defer_ml_dtypes()` (called by snnc.compiler.frontend before any frontend module
    imports onnx): `import onnx` imports ml_dtypes, whose extension takes about half a
    second to register its dtypes with numpy -- more than a whole compile of a small model.
    onnx only needs it for tensors of its exotic element types (bfloat16, float8, int4, ...).
    So ml_dtypes and onnx._mapping (the only onnx module that reads ml_dtypes at import) are
    installed as deferred modules (compiler/deferred.py): each runs on the first access to
    one of its attributes (but not when an import statement looks it up), exactly as an
    eager import would have. Nothing changes for a process that already imported onnx (or
    ml_dtypes), or that uses them: it only loads them later.
  * `tensor_to_array(tensor)` = onnx.numpy_helper.to_array(tensor) (the same values, shape
    and dtype), read directly for the plain numpy element types (raw_data or the typed
    field); every other tensor (external data, segments, exotic or string types, a
    big-endian host) goes to numpy_helper, which then loads ml_dtypes.
Imports only the standard library, numpy and compiler/deferred.py (onnx: lazily, for the fallback).
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

from snnc.compiler.deferred import install_deferred

# TensorProto.DataType -> (numpy dtype, typed field holding the values without raw_data,
# that field's storage dtype, or None where numpy_helper converts the field specially)
_PLAIN_TYPES = {
    1: (np.dtype("float32"), "float_data", np.float32),  # FLOAT
    2: (np.dtype("uint8"), "int32_data", np.int32),  # UINT8
    3: (np.dtype("int8"), "int32_data", np.int32),  # INT8
    4: (np.dtype("uint16"), "int32_data", None),  # UINT16
    5: (np.dtype("int16"), "int32_data", None),  # INT16
    6: (np.dtype("int32"), "int32_data", np.int32),  # INT32
    7: (np.dtype("int64"), "int64_data", np.int64),  # INT64
    9: (np.dtype("bool"), "int32_data", None),  # BOOL
    10: (np.dtype("float16"), "int32_data", None),  # FLOAT16
    11: (np.dtype("float64"), "double_data", np.float64),  # DOUBLE
    12: (np.dtype("uint32"), "uint64_data", np.uint64),  # UINT32
    13: (np.dtype("uint64"), "uint64_data", np.uint64),  # UINT64
}


def defer_ml_dtypes() -> None:
    """Make `import onnx` leave ml_dtypes unloaded until something uses it (CONTRACT)."""
    if "onnx" in sys.modules or "ml_dtypes" in sys.modules or "onnx._mapping" in sys.modules:
        return
    onnx_spec = importlib.util.find_spec("onnx")  # finds the package without importing it
    ml_spec = importlib.util.find_spec("ml_dtypes")
    if onnx_spec is None or ml_spec is None or not onnx_spec.submodule_search_locations:
        return
    mapping = None
    for folder in onnx_spec.submodule_search_locations:
        mapping = importlib.util.spec_from_file_location("onnx._mapping", f"{folder}/_mapping.py")
        if mapping is not None and os.path.isfile(mapping.origin):
            break
        mapping = None
    if mapping is None:
        return
    install_deferred(ml_spec)
    install_deferred(mapping)


def tensor_to_array(tensor) -> np.ndarray:
    """onnx.numpy_helper.to_array(tensor), without ml_dtypes for the plain element types."""
    plain = _PLAIN_TYPES.get(tensor.data_type)
    if (plain is None or sys.byteorder != "little" or tensor.HasField("segment")
            or tensor.data_location == 1):  # TensorProto.EXTERNAL: numpy_helper reads the file
        from onnx import numpy_helper

        return numpy_helper.to_array(tensor)
    dtype, field, storage = plain
    if tensor.HasField("raw_data"):
        return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(tensor.dims)
    if storage is None:
        from onnx import numpy_helper

        return numpy_helper.to_array(tensor)
    return np.asarray(getattr(tensor, field), dtype=storage).astype(dtype).reshape(tensor.dims)
