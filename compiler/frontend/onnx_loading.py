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
import math
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



# Initializers with more elements than this are read in place (`read_model`): a smaller one
# costs less to copy than to find, and shape inference reads the values of small ones.
BIG_INITIALIZER_ELEMENTS = 1024


def read_model(path) -> tuple[object, dict[str, np.ndarray]]:
    """`onnx.load(path, load_external_data=False)`, and the values of the model's big
    initializers read in place (CONTRACT).

    The file is mapped, not read. Each big plain initializer of the main graph (more than
    BIG_INITIALIZER_ELEMENTS elements of a _PLAIN_TYPES type, in raw_data exactly as long
    as its dims say) is copied out of the mapping once, into a bytes object that its
    (read-only) numpy array wraps, as an array over raw_data would; the model is parsed
    from the file's bytes without those payloads, so each keeps its name, dims and type
    and has no raw_data. The mapping is closed before returning. A 60 MB model's weights
    are copied once this way instead of three times (reading the file, parsing it,
    copying each raw_data out): vgg16-cifar10 reads in ~80-100 ms instead of ~140-250 ms
    (a fresh process on a loaded 2-core machine). A file this does not fully understand (not
    one graph field, initializers sharing a name, a group or truncated field, a text
    format, ...) goes to onnx.load whole, with no arrays, so every error is onnx's own.
    """
    import mmap

    import onnx

    fmt = onnx.serialization.registry.get_format_from_file_extension(os.path.splitext(str(path))[1])
    if (fmt or "protobuf") != "protobuf":
        return onnx.load(path, load_external_data=False), {}
    with open(path, "rb") as file:
        try:
            data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # an empty or special file
            return onnx.load(path, load_external_data=False), {}
    try:
        light, payloads = _without_payloads(data)
        model = onnx.serialization.registry.get("protobuf").deserialize_proto(light, onnx.ModelProto())
    except Exception:  # not understood, or not a model: onnx.load decides, with its own error
        return onnx.load(path, load_external_data=False), {}
    finally:
        data.close()
    return model, payloads


def _varint(data, pos: int) -> tuple[int, int]:
    """The varint at data[pos] and the position after it."""
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(data, start: int, end: int):
    """(number, wire type, tag start, value start, value end) of each field of the protobuf
    message in data[start:end]; for a length-delimited field the value starts after its length."""
    pos = start
    while pos < end:
        tag_start = pos
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            after = _varint(data, pos)[1]
        elif wire == 1:
            after = pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            after = pos + length
        elif wire == 5:
            after = pos + 4
        else:  # groups (3, 4) and invalid wire types
            raise ValueError(f"wire type {wire}")
        if after > end or number == 0:
            raise ValueError("truncated field")
        yield number, wire, tag_start, pos, after
        pos = after


_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5  # ModelProto.graph, GraphProto.initializer
_DIMS, _DATA_TYPE, _NAME, _RAW_DATA = 1, 2, 8, 9  # TensorProto fields
# The other TensorProto fields a tensor read in place may have: doc_string, metadata_props. Any
# other (typed data, segment, external data, data_location) leaves the tensor to onnx.
_OTHER_TENSOR_FIELDS = {12, 16}


def _without_payloads(data) -> tuple[bytes, dict[str, np.ndarray]]:
    """The model's bytes without the big initializers' raw_data, and those initializers as
    arrays; ValueError for a file `read_model` leaves to onnx.load."""
    if sys.byteorder != "little":
        raise ValueError("big-endian host")
    graphs = [f for f in _fields(data, 0, len(data)) if f[0] == _MODEL_GRAPH]
    if len(graphs) != 1 or graphs[0][1] != 2:
        raise ValueError("not exactly one graph")
    _, _, graph_tag, graph_start, graph_end = graphs[0]
    parts: list[bytes] = []  # the graph's bytes, big payloads left out
    copied = graph_start  # data[copied:...] is still to copy unchanged
    payloads: dict[str, np.ndarray] = {}
    names: set[str] = set()
    for number, wire, tag_start, start, end in _fields(data, graph_start, graph_end):
        if number != _GRAPH_INITIALIZER or wire != 2:
            continue
        name, array, raw = _tensor(data, start, end)
        if name in names:
            raise ValueError("initializers share a name")
        names.add(name)
        if array is None:
            continue
        tensor = data[start:raw[0]] + data[raw[1]:end]
        parts += [data[copied:tag_start], _encode_varint(_GRAPH_INITIALIZER << 3 | 2), _encode_varint(len(tensor)),
                  tensor]
        copied = end
        payloads[name] = array
    if not payloads:
        return data[:], {}
    parts.append(data[copied:graph_end])
    graph = b"".join(parts)
    return (data[:graph_tag] + _encode_varint(_MODEL_GRAPH << 3 | 2) + _encode_varint(len(graph)) + graph
            + data[graph_end:]), payloads


def _tensor(data, start: int, end: int) -> tuple[str | None, np.ndarray | None, tuple[int, int] | None]:
    """(name, array of its raw_data, span of its raw_data field) of the TensorProto in
    data[start:end]; (name, None, None) when it is not a big plain one (name: None if
    unreadable, so that no other initializer is read in place under the same name)."""
    dims, seen, values = [], [], {}
    raw = None
    for number, wire, tag_start, value_start, value_end in _fields(data, start, end):
        seen.append(number)
        if number == _DIMS and wire == 0:
            dims.append(_varint(data, value_start)[0])
        elif number == _DIMS and wire == 2:
            pos = value_start
            while pos < value_end:
                dim, pos = _varint(data, pos)
                dims.append(dim)
        elif number in (_DATA_TYPE, _NAME, _RAW_DATA) and wire == (0 if number == _DATA_TYPE else 2):
            values[number] = (value_start, value_end)
            if number == _RAW_DATA:
                raw = (tag_start, value_end)
        elif number not in _OTHER_TENSOR_FIELDS:
            seen.append(-1)  # a field that rules reading in place out
    try:
        name = bytes(data[slice(*values[_NAME])]).decode("utf-8") if _NAME in values else ""
    except UnicodeDecodeError:
        return None, None, None
    if -1 in seen or any(seen.count(n) > 1 for n in (_DATA_TYPE, _NAME, _RAW_DATA)) or raw is None \
            or _DATA_TYPE not in values or any(d >= 1 << 63 for d in dims):
        return name, None, None
    plain = _PLAIN_TYPES.get(_varint(data, values[_DATA_TYPE][0])[0])
    count = math.prod(dims)
    raw_start, raw_end = values[_RAW_DATA]
    if plain is None or count <= BIG_INITIALIZER_ELEMENTS or raw_end - raw_start != count * plain[0].itemsize:
        return name, None, None
    return name, np.frombuffer(data[raw_start:raw_end], dtype=plain[0]).reshape(dims), raw
