"""The executable meaning of the `snn` dialect: a numpy reference interpreter.

Contract
    run_snn(module, inputs) -> outputs
        `module` holds one `func.func @main` in the `snn` dialect (see dialects/snn.py).
        `inputs` maps each argument's `snn.onnx_name` to a float32 array
        `[T, *per_step_shape]`; the result maps each result's `snn.onnx_name` to a
        float32 array `[T, *per_step_shape]` (a train) or of the result's tensor shape
        (a `snn.time_slice`: its steps), in ONNX output order.

Every op is evaluated on the whole train at once (vectorised over T and the tensor);
only the neuron loops over t, because its state depends on the previous step.

Numerics. The neuron is computed in float32 in exactly the order of the canonical
ONNX body (compiler/frontend/canonical.py), so interpreter and onnxruntime agree bit
for bit. Synapses (dense, conv) accumulate in float64 and round once to float32:
exact, and therefore equal to any float32 accumulation order, whenever the products
and partial sums are representable (the zoo guarantees this); otherwise the last
bit may differ from onnxruntime. Average pooling sums in float64, rounds the sum to
float32 and divides in float32, like onnxruntime.

The layer kernels (`dense_forward`, `conv2d_forward`, `max_pool2d_forward`,
`avg_pool2d_forward`, `lif_forward`) are public so that model builders (the zoo's
threshold calibration) compute with the same reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from snnc.backend.errors import InputError
from snnc.dialects.neurons import kind_named
from snnc.dialects.snn import (
    AddOp,
    AvgPool2dOp,
    Conv2dOp,
    DenseOp,
    LIFOp,
    MaxPool2dOp,
    ReshapeOp,
    SpikeLogicOp,
    TimeSliceOp,
    int_array_value,
    main_function,
    onnx_io_names,
    tensor_value,
    train_type_of,
)
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue

# --------------------------------------------------------------------------------------
# Layer kernels on whole trains: arrays are [T, B, ...] float32
# --------------------------------------------------------------------------------------


def _merge_time(x: np.ndarray) -> np.ndarray:
    """[T, B, ...] -> [T*B, ...] so per-step layers run on every step at once."""
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def _split_time(y: np.ndarray, timesteps: int) -> np.ndarray:
    return y.reshape((timesteps, y.shape[0] // timesteps) + y.shape[1:])


def dense_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """y[t] = x[t] @ weight + bias for x [T, B, K], weight [K, N], bias [N]."""
    y = x.astype(np.float64) @ weight.astype(np.float64)
    if bias is not None:
        y = y + bias.astype(np.float64)
    return y.astype(np.float32)


def _pad_hw(x: np.ndarray, pads: Sequence[int], value: float) -> np.ndarray:
    top, left, bottom, right = pads
    widths = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(x, widths, mode="constant", constant_values=value)


def _windows(
    x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> np.ndarray:
    """Sliding windows of an [N, C, H, W] array -> [N, C, Ho, Wo, kh, kw]."""
    kh, kw = kernel
    dh, dw = dilations
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    view = sliding_window_view(x, span, axis=(2, 3))
    return view[:, :, :: strides[0], :: strides[1], ::dh, ::dw]


def conv2d_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
    strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int] = (1, 1),
) -> np.ndarray:
    """Per-step NCHW convolution (groups = 1) of x [T, B, Cin, H, W]; pads [t, l, b, r]."""
    timesteps = x.shape[0]
    padded = _pad_hw(_merge_time(x).astype(np.float64), pads, 0.0)
    windows = _windows(padded, weight.shape[2:], strides, dilations)
    y = np.einsum("ncxyij,ocij->noxy", windows, weight.astype(np.float64), optimize=True)
    if bias is not None:
        y = y + bias.astype(np.float64)[None, :, None, None]
    return _split_time(y.astype(np.float32), timesteps)


def max_pool2d_forward(
    x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int]
) -> np.ndarray:
    """Per-step max pooling; padding never wins (it is -inf, as in ONNX)."""
    padded = _pad_hw(_merge_time(x), pads, -np.inf)
    y = _windows(padded, kernel, strides, (1, 1)).max(axis=(-2, -1))
    return _split_time(y.astype(np.float32), x.shape[0])


def avg_pool2d_forward(
    x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
    count_include_pad: bool = False,
) -> np.ndarray:
    """Per-step average pooling; without count_include_pad, pads are not counted."""
    merged = _merge_time(x)
    sums = _windows(_pad_hw(merged.astype(np.float64), pads, 0.0), kernel, strides, (1, 1))
    sums = sums.sum(axis=(-2, -1)).astype(np.float32)
    if count_include_pad:
        counts = np.float32(kernel[0] * kernel[1])
    else:
        ones = np.ones((1, 1) + merged.shape[2:], dtype=np.float64)
        counts = _windows(_pad_hw(ones, pads, 0.0), kernel, strides, (1, 1))
        counts = counts.sum(axis=(-2, -1)).astype(np.float32)
    return _split_time(sums / counts, x.shape[0])


def _per_channel(param: np.ndarray | float | None, ndim: int) -> np.ndarray | None:
    """A scalar or per-channel (dim 1) parameter, shaped to broadcast over [B, C, ...]."""
    if param is None:
        return None
    value = np.asarray(param, dtype=np.float32)
    if value.ndim == 0:
        return value
    return value.reshape((1, -1) + (1,) * (ndim - 2))


def lif_forward(
    current: np.ndarray,
    *,
    leak: str,
    threshold: np.ndarray | float,
    beta: np.ndarray | float | None = None,
    tau: np.ndarray | float | None = None,
    v_reset: np.ndarray | float | None = None,
    reset: str = "subtract",
    reset_timing: str = "same",
    compare: str = "ge",
    fires: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Run a layer of neurons over a current train [T, B, ...] -> (spikes, membranes).

    Follows the `snn.lif` semantics of dialects/snn.py, operation by operation in
    float32 (v[-1] = 0, s[-1] = 0); the charge step is the kind's (`leak`, a
    registered dialects/neurons kind).
    """
    kind = kind_named(leak)  # ValueError for an unknown kind
    current = np.asarray(current, dtype=np.float32)
    ndim = current.ndim - 1  # per-step rank
    thr = _per_channel(threshold, ndim)
    v_reset_ = _per_channel(v_reset, ndim)
    params = {"beta": _per_channel(beta, ndim), "tau": _per_channel(tau, ndim), "threshold": thr,
              "v_reset": v_reset_}
    one = np.float32(1.0)
    membrane = np.zeros(current.shape[1:], dtype=np.float32)
    spike = np.zeros(current.shape[1:], dtype=np.float32)
    spikes = np.empty_like(current)
    membranes = np.empty_like(current)
    for t in range(current.shape[0]):
        if reset_timing == "delayed" and reset == "zero":
            membrane = (one - spike) * membrane
        h = kind.charge(membrane, current[t], params)
        if reset_timing == "delayed" and reset == "subtract":
            h = h - spike * thr
        fired = (h >= thr) if compare == "ge" else (h > thr)
        spike = fired.astype(np.float32) if fires else np.zeros_like(h, dtype=np.float32)
        if reset_timing == "delayed":
            membrane = h
        elif reset == "subtract":
            membrane = h - spike * thr
        elif reset == "zero":
            membrane = (one - spike) * h
        elif reset == "to_value":
            membrane = spike * v_reset_ + (one - spike) * h
        else:
            raise ValueError(f"unknown reset mode {reset!r}")
        membrane = membrane.astype(np.float32, copy=False)
        spikes[t] = spike
        membranes[t] = membrane
    return spikes, membranes


# --------------------------------------------------------------------------------------
# Walking the module
# --------------------------------------------------------------------------------------


def _run_op(op: Operation, values: dict[SSAValue, np.ndarray]) -> None:
    if isinstance(op, DenseOp):
        values[op.output] = dense_forward(
            values[op.input], tensor_value(op.weight),
            None if op.bias is None else tensor_value(op.bias),
        )
    elif isinstance(op, Conv2dOp):
        values[op.output] = conv2d_forward(
            values[op.input], tensor_value(op.weight),
            None if op.bias is None else tensor_value(op.bias),
            int_array_value(op.strides), int_array_value(op.pads), int_array_value(op.dilations),
        )
    elif isinstance(op, MaxPool2dOp):
        values[op.output] = max_pool2d_forward(
            values[op.input], int_array_value(op.kernel),
            int_array_value(op.strides), int_array_value(op.pads),
        )
    elif isinstance(op, AvgPool2dOp):
        values[op.output] = avg_pool2d_forward(
            values[op.input], int_array_value(op.kernel), int_array_value(op.strides),
            int_array_value(op.pads), count_include_pad=op.count_include_pad is not None,
        )
    elif isinstance(op, ReshapeOp):
        out_type = train_type_of(op.output)
        values[op.output] = values[op.input].reshape(
            (out_type.num_timesteps,) + out_type.get_shape()
        )
    elif isinstance(op, AddOp):
        values[op.output] = (values[op.lhs] + values[op.rhs]).astype(np.float32)
    elif isinstance(op, SpikeLogicOp):
        a, b = values[op.lhs] != 0, values[op.rhs] != 0
        values[op.output] = ((a | b) if op.op.data == "or" else (a & b)).astype(np.float32)
    elif isinstance(op, LIFOp):
        spikes, membranes = lif_forward(
            values[op.input],
            leak=op.leak.data, threshold=op.parameter("threshold"),
            beta=op.parameter("beta"), tau=op.parameter("tau"),
            v_reset=op.parameter("v_reset"), reset=op.reset.data,
            reset_timing=op.reset_timing.data, compare=op.compare.data, fires=op.no_fire is None,
        )
        values[op.spikes] = spikes
        values[op.membrane] = membranes
    elif isinstance(op, TimeSliceOp):
        start, count = op.window
        values[op.output] = np.ascontiguousarray(
            values[op.input][start:start + count].reshape(op.output.type.get_shape()), dtype=np.float32)
    else:
        raise ValueError(f"the snn interpreter has no meaning for op {op.name}")


def run_snn(module: ModuleOp, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run @main on `inputs` (keyed by ONNX input name); outputs keyed by ONNX name."""
    main = main_function(module)
    block = main.body.block
    arg_names, result_names = onnx_io_names(main)
    values: dict[SSAValue, np.ndarray] = {}
    for arg, name in zip(block.args, arg_names):
        if name not in inputs:
            raise InputError(f"input '{name}': missing (got {sorted(inputs)})")
        arg_type = train_type_of(arg)
        expected = (arg_type.num_timesteps,) + arg_type.get_shape()
        array = np.asarray(inputs[name])
        if array.shape != expected:
            raise InputError(
                f"input '{name}': expected shape {list(expected)}, found {list(array.shape)}"
            )
        values[arg] = array.astype(np.float32)
    results: list[SSAValue] | None = None
    for op in block.ops:
        if isinstance(op, func.ReturnOp):
            results = list(op.arguments)
            break
        _run_op(op, values)
    if results is None:
        raise ValueError("@main has no func.return")
    return {name: values[value] for name, value in zip(result_names, results)}
