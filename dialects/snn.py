"""The `snn` dialect: spiking networks with time as a real dimension.

Level: the first IR level after the frontend. Values are whole spike trains over
T timesteps; neuron ops carry their state semantics (leak, threshold, reset) as
verified properties. Arithmetic is real-valued (f32), exactly as in the ONNX
model; quantisation happens when lowering to the `accel` dialect.

Types
    !snn.spikes<T=4, 1x16x32x32>      binary spike train: T steps of a [B, C, H, W] tensor
    !snn.train<T=4, 1x10xf32>         multi-bit values per step: currents, membranes,
                                      analog inputs, spike counts after a residual add

Ops (one per network layer, never per neuron or per timestep)
    snn.dense      y[t] = x[t] @ W + b            W: [K, N] (LoAS matrix B), b: [N]
    snn.conv2d     y[t] = conv(x[t], W) + b       W: [Cout, Cin, kh, kw], groups = 1
    snn.avg_pool2d / snn.max_pool2d               per step; max of spikes is spikes (OR)
    snn.reshape    per-step reshape (Flatten included)
    snn.add        elementwise per step (residual / SEW-ADD)
    snn.spike_logic  spikes x spikes -> spikes per step: op = "or" (a | b) or "and" (a & b)
                   (SEW-OR / SEW-AND residuals)
    snn.lif        the neuron: (current train) -> (spikes, membrane after reset)
    snn.time_slice steps [start, start + count) of a train as a plain f32 tensor, for a
                   graph output that is not the whole train (a final membrane, the last
                   step's spikes, a window of steps); only func.return uses it

Neuron semantics (`snn.lif`), per step t, with v[-1] = 0 and s[-1] = 0:
    charge     the neuron kind `leak` names (dialects/neurons/, one module each):
               leak = "beta":  h = beta * v[t-1] + I[t]
               leak = "tau":   h = v[t-1] + (I[t] - (v[t-1] - v_reset)) / tau
               leak = "none":  h = v[t-1] + I[t]                       (IF)
    delayed    reset_timing = "delayed" (snnTorch default) applies the previous step's
               reset at this step; the same-step reset below is then skipped:
                 "subtract": after charging, undecayed:   h -= s[t-1] * threshold
                 "zero":     before charging: v[t-1] := (1 - s[t-1]) * v[t-1]
    fire       compare = "ge": s[t] = h >= threshold;  "gt": s[t] = h > threshold
    reset      reset_timing = "same":
                 "subtract": v[t] = h - s[t] * threshold
                 "zero":     v[t] = (1 - s[t]) * h
                 "to_value": v[t] = s[t] * v_reset + (1 - s[t]) * h
               reset_timing = "delayed": v[t] = h
    no_fire    (unit property) a leaky integrator (NIR LI): s[t] = 0 for every t, so
               v[t] = h and the spikes result is all zeros; the membrane is the output.
    membrane result = v[t] for every t.
Parameters (beta, tau, threshold, v_reset) are scalars (tensor<f32>) or
per-channel (tensor<Cxf32>, C = dim 1 of the per-step shape).

The executable meaning of every op is `snnc.dialects.snn_interpreter`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    BytesAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    Float32Type,
    IntAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    UnitAttr,
    f32,
    i64,
)
from xdsl.ir import Attribute, Dialect, ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    result_def,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from snnc.dialects.neurons import LEAK_PARAMS
from snnc.dialects.neurons import kinds as neuron_kinds

# --------------------------------------------------------------------------------------
# Attribute helpers shared by every snnc dialect
# --------------------------------------------------------------------------------------


def _whole_bytes_buffer(data: np.ndarray) -> bytes | None:
    """The bytes object `data` is a C-contiguous view of, covering all of it, if any
    (a weight read from an ONNX initializer is: numpy_helper.to_array wraps raw_data)."""
    owner = data
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if isinstance(owner, bytes) and len(owner) == data.nbytes and data.flags.c_contiguous:
        return owner
    return None


def tensor_attr(array: np.ndarray) -> DenseIntOrFPElementsAttr:
    """A dense f32 tensor attribute built from bytes (fast; see docs/xdsl-notes)."""
    # asarray keeps 0-d scalars 0-d and copies only when needed; weights read from ONNX
    # reuse their bytes (immutable) instead of a copy of tens of MB.
    data = np.asarray(array, dtype=np.float32, order="C")
    ttype = TensorType(f32, data.shape)
    raw = _whole_bytes_buffer(data)
    return DenseIntOrFPElementsAttr(ttype, BytesAttr(data.tobytes() if raw is None else raw))


def tensor_value(attr: DenseIntOrFPElementsAttr) -> np.ndarray:
    """The numpy value of a dense f32 tensor attribute (read-only view)."""
    shape = attr.get_shape()
    return np.frombuffer(attr.data.data, dtype=np.float32).reshape(shape)


def int_array(values: Sequence[int]) -> DenseArrayBase:
    """An i64 dense array built from bytes (from_list normalises every element: slow on long arrays)."""
    return DenseArrayBase(i64, BytesAttr(np.asarray(values, dtype="<i8").reshape(-1).tobytes()))


def int_array_value(attr: DenseArrayBase) -> tuple[int, ...]:
    return tuple(int(v) for v in attr.get_values())


# --------------------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------------------


def _parse_timesteps(parser: AttrParser) -> int:
    parser.parse_punctuation("<")
    parser.parse_keyword("T")
    parser.parse_punctuation("=")
    return parser.parse_integer(allow_boolean=False, allow_negative=False)


class _TrainTypeBase:
    timesteps: IntAttr
    shape: ArrayAttr[IntAttr]

    @property
    def num_timesteps(self) -> int:
        return self.timesteps.data

    def get_shape(self) -> tuple[int, ...]:
        """The per-timestep shape, e.g. [B, C, H, W]."""
        return tuple(d.data for d in self.shape.data)

    def _verify_dims(self) -> None:
        if self.timesteps.data < 1:
            raise VerifyException(f"{self.name}: T must be >= 1, got {self.timesteps.data}")
        if any(d.data < 1 for d in self.shape.data):
            raise VerifyException(f"{self.name}: dimensions must be >= 1, got {self.get_shape()}")


@irdl_attr_definition
class SpikeTrainType(_TrainTypeBase, ParametrizedAttribute, TypeAttribute):
    """A binary spike train: T timesteps of a tensor of 0/1 spikes."""

    name = "snn.spikes"
    timesteps: IntAttr
    shape: ArrayAttr[IntAttr]

    def __init__(self, timesteps: int, shape: Sequence[int]):
        super().__init__(IntAttr(timesteps), ArrayAttr([IntAttr(d) for d in shape]))

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        t = _parse_timesteps(parser)
        parser.parse_punctuation(",")
        dims = parser.parse_dimension_list()
        parser.parse_punctuation(">")
        return [IntAttr(t), ArrayAttr([IntAttr(d) for d in dims])]

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<T={self.num_timesteps}, ")
        printer.print_string("x".join(str(d) for d in self.get_shape()))
        printer.print_string(">")

    def verify(self) -> None:
        self._verify_dims()


@irdl_attr_definition
class TrainType(_TrainTypeBase, ParametrizedAttribute, TypeAttribute):
    """Multi-bit values over T timesteps (currents, membranes, analog inputs)."""

    name = "snn.train"
    timesteps: IntAttr
    shape: ArrayAttr[IntAttr]
    element_type: Attribute

    def __init__(self, timesteps: int, shape: Sequence[int], element_type: Attribute = f32):
        super().__init__(
            IntAttr(timesteps), ArrayAttr([IntAttr(d) for d in shape]), element_type
        )

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        t = _parse_timesteps(parser)
        parser.parse_punctuation(",")
        dims, element_type = parser.parse_ranked_shape()
        parser.parse_punctuation(">")
        return [IntAttr(t), ArrayAttr([IntAttr(d) for d in dims]), element_type]

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<T={self.num_timesteps}, ")
        printer.print_string("".join(f"{d}x" for d in self.get_shape()))
        printer.print_attribute(self.element_type)
        printer.print_string(">")

    def verify(self) -> None:
        self._verify_dims()
        if not isinstance(self.element_type, Float32Type):
            raise VerifyException(f"snn.train: element type must be f32, got {self.element_type}")


AnySpikeType = SpikeTrainType
AnyTrainType = SpikeTrainType | TrainType


def is_spikes(t: Attribute) -> bool:
    """A binary spike train."""
    return isinstance(t, SpikeTrainType)


def train_type_of(value: SSAValue) -> SpikeTrainType | TrainType:
    return train_type_of_type(value.type)


def train_type_of_type(t: Attribute) -> SpikeTrainType | TrainType:
    if not isinstance(t, SpikeTrainType | TrainType):
        raise VerifyException(f"expected a !snn.spikes or !snn.train value, got {t}")
    return t


# --------------------------------------------------------------------------------------
# Layer ops
# --------------------------------------------------------------------------------------

_LAYER_FORMAT = "$input attr-dict `:` type($input) `->` type($output)"


class _LayerOp(IRDLOperation):
    """Common parts of single-input layer ops."""

    irdl_options = (ParsePropInAttrDict(),)

    # The ONNX node this layer came from; reports are keyed by it.
    source = opt_prop_def(StringAttr)

    @property
    def source_name(self) -> str:
        return self.source.data if self.source is not None else self.name

    def _check_timesteps(self, *values: SSAValue) -> int:
        ts = {train_type_of(v).num_timesteps for v in values}
        if len(ts) != 1:
            raise VerifyException(f"{self.name}: operands and results disagree on T: {sorted(ts)}")
        return ts.pop()


def _check_optional_vector(op: IRDLOperation, what: str, attr, length: int) -> None:
    if attr is None:
        return
    shape = attr.get_shape()
    if shape != (length,):
        raise VerifyException(f"{op.name}: {what} must have shape [{length}], got {list(shape)}")


@irdl_op_definition
class DenseOp(_LayerOp):
    """Fully connected synapses (ONNX Gemm/MatMul): y[t] = x[t] @ weight + bias."""

    name = "snn.dense"
    input = operand_def(AnyTrainType)
    output = result_def(TrainType)
    weight = prop_def(DenseIntOrFPElementsAttr)  # [K, N]
    bias = opt_prop_def(DenseIntOrFPElementsAttr)  # [N]
    assembly_format = _LAYER_FORMAT

    def verify_(self) -> None:
        self._check_timesteps(self.input, self.output)
        w = self.weight.get_shape()
        ins, outs = train_type_of(self.input).get_shape(), train_type_of(self.output).get_shape()
        if len(w) != 2 or len(ins) != 2 or len(outs) != 2:
            raise VerifyException(f"{self.name}: expects [B, K] -> [B, N] with a [K, N] weight")
        if ins[1] != w[0] or outs != (ins[0], w[1]):
            raise VerifyException(
                f"{self.name}: input {list(ins)} x weight {list(w)} does not give {list(outs)}"
            )
        _check_optional_vector(self, "bias", self.bias, w[1])


def conv_output_hw(
    in_hw: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
    pads: Sequence[int], dilations: Sequence[int] = (1, 1),
) -> tuple[int, int]:
    """ONNX output size (floor mode); pads are [top, left, bottom, right]."""
    out = []
    for i in range(2):
        span = dilations[i] * (kernel[i] - 1) + 1
        out.append((in_hw[i] + pads[i] + pads[i + 2] - span) // strides[i] + 1)
    return out[0], out[1]


@irdl_op_definition
class Conv2dOp(_LayerOp):
    """2-D convolution synapses per timestep (ONNX Conv, groups = 1)."""

    name = "snn.conv2d"
    input = operand_def(AnyTrainType)
    output = result_def(TrainType)
    weight = prop_def(DenseIntOrFPElementsAttr)  # [Cout, Cin, kh, kw]
    bias = opt_prop_def(DenseIntOrFPElementsAttr)  # [Cout]
    strides = prop_def(DenseArrayBase)  # [sh, sw]
    pads = prop_def(DenseArrayBase)  # [top, left, bottom, right]
    dilations = prop_def(DenseArrayBase)  # [dh, dw]
    assembly_format = _LAYER_FORMAT

    def verify_(self) -> None:
        self._check_timesteps(self.input, self.output)
        w = self.weight.get_shape()
        ins, outs = train_type_of(self.input).get_shape(), train_type_of(self.output).get_shape()
        strides, pads, dil = (int_array_value(a) for a in (self.strides, self.pads, self.dilations))
        if len(w) != 4 or len(ins) != 4 or len(outs) != 4:
            raise VerifyException(f"{self.name}: expects NCHW tensors and an OIHW weight")
        if len(strides) != 2 or len(pads) != 4 or len(dil) != 2:
            raise VerifyException(f"{self.name}: strides/dilations need 2 values, pads 4")
        if min(strides) < 1 or min(dil) < 1 or min(pads) < 0:
            raise VerifyException(f"{self.name}: strides and dilations must be >= 1, pads >= 0")
        if ins[1] != w[1]:
            raise VerifyException(f"{self.name}: input has {ins[1]} channels, weight expects {w[1]}")
        expected = (ins[0], w[0], *conv_output_hw(ins[2:], w[2:], strides, pads, dil))
        if outs != expected:
            raise VerifyException(f"{self.name}: output shape {list(outs)}, expected {list(expected)}")
        _check_optional_vector(self, "bias", self.bias, w[0])


class _Pool2dOp(_LayerOp):
    input = operand_def(AnyTrainType)
    output = result_def(AnyTrainType)
    kernel = prop_def(DenseArrayBase)  # [kh, kw]
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)  # [top, left, bottom, right]
    assembly_format = _LAYER_FORMAT

    def verify_(self) -> None:
        self._check_timesteps(self.input, self.output)
        ins, outs = train_type_of(self.input).get_shape(), train_type_of(self.output).get_shape()
        kernel, strides, pads = (int_array_value(a) for a in (self.kernel, self.strides, self.pads))
        if len(ins) != 4 or len(kernel) != 2 or len(strides) != 2 or len(pads) != 4:
            raise VerifyException(f"{self.name}: expects NCHW input, 2-D kernel/strides, 4 pads")
        expected = (ins[0], ins[1], *conv_output_hw(ins[2:], kernel, strides, pads))
        if outs != expected:
            raise VerifyException(f"{self.name}: output shape {list(outs)}, expected {list(expected)}")
        self._verify_kinds()

    def _verify_kinds(self) -> None:
        raise NotImplementedError


@irdl_op_definition
class MaxPool2dOp(_Pool2dOp):
    """Max pooling per step; on spikes it is a spatial OR and stays binary."""

    name = "snn.max_pool2d"

    def _verify_kinds(self) -> None:
        if is_spikes(self.input.type) != is_spikes(self.output.type):
            raise VerifyException(f"{self.name}: result kind must equal input kind")


@irdl_op_definition
class AvgPool2dOp(_Pool2dOp):
    """Average pooling per step; the result is multi-bit (!snn.train)."""

    name = "snn.avg_pool2d"
    count_include_pad = opt_prop_def(UnitAttr)

    def _verify_kinds(self) -> None:
        if not isinstance(self.output.type, TrainType):
            raise VerifyException(f"{self.name}: result must be !snn.train")


@irdl_op_definition
class ReshapeOp(_LayerOp):
    """Per-step reshape (ONNX Reshape/Flatten applied to each timestep)."""

    name = "snn.reshape"
    input = operand_def(AnyTrainType)
    output = result_def(AnyTrainType)
    assembly_format = _LAYER_FORMAT

    def verify_(self) -> None:
        self._check_timesteps(self.input, self.output)
        if is_spikes(self.input.type) != is_spikes(self.output.type):
            raise VerifyException(f"{self.name}: result kind must equal input kind")
        ins, outs = train_type_of(self.input).get_shape(), train_type_of(self.output).get_shape()
        if int(np.prod(ins)) != int(np.prod(outs)):
            raise VerifyException(f"{self.name}: cannot reshape {list(ins)} to {list(outs)}")


class _ElementwiseBinaryOp(IRDLOperation):
    """Common parts of per-step elementwise ops on two trains of one shape."""

    irdl_options = (ParsePropInAttrDict(),)
    source = opt_prop_def(StringAttr)
    assembly_format = (
        "$lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs) `->` type($output)"
    )

    @property
    def source_name(self) -> str:
        return self.source.data if self.source is not None else self.name

    def verify_(self) -> None:
        types = [train_type_of(v) for v in (self.lhs, self.rhs, self.output)]
        if len({t.num_timesteps for t in types}) != 1:
            raise VerifyException(f"{self.name}: operands and result disagree on T")
        if len({t.get_shape() for t in types}) != 1:
            raise VerifyException(
                f"{self.name}: shapes differ: {[list(t.get_shape()) for t in types]}"
            )


@irdl_op_definition
class AddOp(_ElementwiseBinaryOp):
    """Elementwise add per step (residual connections; SEW-ADD of spikes)."""

    name = "snn.add"
    lhs = operand_def(AnyTrainType)
    rhs = operand_def(AnyTrainType)
    output = result_def(TrainType)


SPIKE_LOGIC_OPS = ("or", "and")


@irdl_op_definition
class SpikeLogicOp(_ElementwiseBinaryOp):
    """Spike-wise OR / AND of two spike trains per step (SEW-OR / SEW-AND residuals).

    out[t] = a[t] | b[t] (op = "or") or a[t] & b[t] (op = "and"); operands and result
    are binary spike trains of one shape.
    """

    name = "snn.spike_logic"
    lhs = operand_def(AnySpikeType)
    rhs = operand_def(AnySpikeType)
    output = result_def(AnySpikeType)
    op = prop_def(StringAttr)

    def verify_(self) -> None:
        if self.op.data not in SPIKE_LOGIC_OPS:
            raise VerifyException(f"{self.name}: op = {self.op.data!r}, expected one of {SPIKE_LOGIC_OPS}")
        super().verify_()


RESET_MODES = ("subtract", "zero", "to_value")
RESET_TIMINGS = ("same", "delayed")
COMPARISONS = ("ge", "gt")


@irdl_op_definition
class LIFOp(_LayerOp):
    """A layer of leaky integrate-and-fire neurons; see the module docstring."""

    name = "snn.lif"
    input = operand_def(TrainType)
    spikes = result_def(AnySpikeType)
    membrane = result_def(TrainType)
    leak = prop_def(StringAttr)
    beta = opt_prop_def(DenseIntOrFPElementsAttr)
    tau = opt_prop_def(DenseIntOrFPElementsAttr)
    threshold = prop_def(DenseIntOrFPElementsAttr)
    v_reset = opt_prop_def(DenseIntOrFPElementsAttr)
    reset = prop_def(StringAttr)
    reset_timing = prop_def(StringAttr)
    compare = prop_def(StringAttr)
    no_fire = opt_prop_def(UnitAttr)  # a leaky integrator: never spikes, output = membrane
    assembly_format = (
        "$input attr-dict `:` type($input) `->` type($spikes) `,` type($membrane)"
    )

    def verify_(self) -> None:
        self._check_timesteps(self.input, self.spikes, self.membrane)
        shapes = {train_type_of(v).get_shape() for v in (self.input, self.spikes, self.membrane)}
        if len(shapes) != 1:
            raise VerifyException(f"{self.name}: input, spikes and membrane shapes differ")
        shape = shapes.pop()
        kind = neuron_kinds().get(self.leak.data)
        if kind is None:
            raise VerifyException(f"{self.name}: leak = {self.leak.data!r}, expected one of {tuple(neuron_kinds())}")
        for attr_name, allowed in (
            ("reset", RESET_MODES),
            ("reset_timing", RESET_TIMINGS), ("compare", COMPARISONS),
        ):
            value = getattr(self, attr_name).data
            if value not in allowed:
                raise VerifyException(f"{self.name}: {attr_name} = {value!r}, expected one of {allowed}")
        for attr_name in LEAK_PARAMS:  # the kind's own parameters, and only those
            if (attr_name in kind.leak_params) != (getattr(self, attr_name) is not None):
                users = [k.name for k in neuron_kinds().values() if attr_name in k.leak_params]
                raise VerifyException(f"{self.name}: {attr_name} is required exactly when leak = "
                                      + " or ".join(f'"{name}"' for name in users))
        needs_v_reset = self.reset.data == "to_value" or kind.needs_v_reset
        if needs_v_reset and self.v_reset is None:
            why = "reset = to_value" if self.reset.data == "to_value" else f"leak = {kind.name}"
            raise VerifyException(f"{self.name}: v_reset is required for {why}")
        if self.no_fire is not None and (self.reset_timing.data != "same" or self.reset.data != "zero"):
            raise VerifyException(f"{self.name}: a no_fire neuron (leaky integrator) takes reset = \"zero\" "
                                  "and reset_timing = \"same\" (it never resets)")
        if self.reset_timing.data == "delayed" and self.reset.data not in ("subtract", "zero"):
            raise VerifyException(f"{self.name}: a delayed reset is only defined for reset = subtract or zero")
        channels = shape[1] if len(shape) > 1 else 1
        for attr_name in ("beta", "tau", "threshold", "v_reset"):
            attr = getattr(self, attr_name)
            if attr is None:
                continue
            if attr.get_shape() not in ((), (channels,)):
                raise VerifyException(
                    f"{self.name}: {attr_name} must be a scalar or have {channels} values "
                    f"(one per channel), got shape {list(attr.get_shape())}"
                )
        if np.any(tensor_value(self.threshold) <= 0):
            raise VerifyException(f"{self.name}: threshold must be > 0")
        problem = kind.verify({n: tensor_value(getattr(self, n)) for n in kind.leak_params})
        if problem:
            raise VerifyException(f"{self.name}: {problem}")

    def parameter(self, attr_name: str) -> np.ndarray | None:
        """A neuron parameter as a numpy array (scalar or per-channel), or None."""
        attr = getattr(self, attr_name)
        return None if attr is None else tensor_value(attr)


@irdl_op_definition
class TimeSliceOp(IRDLOperation):
    """Timesteps [start, start + count) of a train as a plain f32 tensor (spikes as 0.0/1.0).

    A graph output that is not stacked over all T steps: the final membrane of a Scan or
    Loop, the value of one step (ONNX `Gather(x, t)`), or a window of steps. The result
    is `tensor<count x per_step x f32>`, or `tensor<per_step x f32>` when count = 1 and
    the time axis is dropped (rank = the per-step rank). No snn op takes a tensor, so
    only func.return uses it.
        %v = snn.time_slice %m {start = 3 : i64, count = 1 : i64} : !snn.train<T=4, 2x5xf32> -> tensor<2x5xf32>
    """

    name = "snn.time_slice"
    irdl_options = (ParsePropInAttrDict(),)
    input = operand_def(AnyTrainType)
    output = result_def(TensorType)
    start = prop_def(IntegerAttr)
    count = prop_def(IntegerAttr)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"

    @staticmethod
    def result_type(train: Attribute, count: int, keep_time_axis: bool) -> TensorType:
        """The tensor type of `count` steps of a value of type `train`."""
        shape = train_type_of_type(train).get_shape()
        return TensorType(f32, ((count,) if keep_time_axis else ()) + shape)

    @classmethod
    def create_slice(cls, value: SSAValue, start: int, count: int, keep_time_axis: bool = True) -> "TimeSliceOp":
        return cls.build(
            operands=[value], result_types=[cls.result_type(value.type, count, keep_time_axis)],
            properties={"start": IntegerAttr(start, i64), "count": IntegerAttr(count, i64)},
        )

    @property
    def window(self) -> tuple[int, int]:
        """(start, count): the timesteps this slice takes."""
        return self.start.value.data, self.count.value.data

    @property
    def keeps_time_axis(self) -> bool:
        return len(self.output.type.get_shape()) == len(train_type_of(self.input).get_shape()) + 1

    def verify_(self) -> None:
        train = train_type_of(self.input)
        start, count = self.window
        if start < 0 or count < 1 or start + count > train.num_timesteps:
            raise VerifyException(
                f"{self.name}: steps {start}..{start + count - 1} are outside 0..{train.num_timesteps - 1}")
        out = self.output.type
        if not isinstance(out.element_type, Float32Type):
            raise VerifyException(f"{self.name}: the result element type must be f32, got {out.element_type}")
        shape, per_step = tuple(out.get_shape()), train.get_shape()
        if shape == (count, *per_step):
            return
        if shape == per_step and count == 1:
            return
        expected = f"[{count}, {', '.join(map(str, per_step))}]" + (
            f" or {list(per_step)} (one step, time axis dropped)" if count == 1 else "")
        raise VerifyException(f"{self.name}: result shape {list(shape)}, expected {expected}")


def io_window(value: SSAValue) -> tuple[int, int, tuple[int, ...]]:
    """(t0, nt, user-facing shape) of a graph input or output value: a train is all of its T
    steps ([T, *per_step]); a snn.time_slice result is its window (its tensor shape)."""
    if isinstance(value.type, TensorType) and isinstance(value.owner, TimeSliceOp):
        start, count = value.owner.window
        return start, count, tuple(value.type.get_shape())
    t = train_type_of(value)
    return 0, t.num_timesteps, (t.num_timesteps, *t.get_shape())


SNN = Dialect(
    "snn",
    [DenseOp, Conv2dOp, MaxPool2dOp, AvgPool2dOp, ReshapeOp, AddOp, SpikeLogicOp, LIFOp, TimeSliceOp],
    [SpikeTrainType, TrainType],
)

# Attribute names on func.func arguments/results carrying the ONNX I/O names.
ONNX_NAME_ATTR = "snn.onnx_name"


def main_function(module: ModuleOp) -> func.FuncOp:
    """The network: the module's single `func.func @main`."""
    mains = [op for op in module.ops if isinstance(op, func.FuncOp) and op.sym_name.data == "main"]
    if len(mains) != 1:
        raise VerifyException(f"the module must hold exactly one func.func @main, found {len(mains)}")
    return mains[0]


def onnx_io_names(main: func.FuncOp) -> tuple[list[str], list[str]]:
    """The ONNX graph input and output names of @main's arguments and results."""

    def names(attrs, count: int, what: str) -> list[str]:
        found = []
        for i in range(count):
            name = (attrs.data[i].data if attrs is not None else {}).get(ONNX_NAME_ATTR)
            if not isinstance(name, StringAttr):
                raise VerifyException(f"@main {what} #{i} has no {ONNX_NAME_ATTR} attribute")
            found.append(name.data)
        return found

    inputs, outputs = main.function_type.inputs.data, main.function_type.outputs.data
    return names(main.arg_attrs, len(inputs), "argument"), names(main.res_attrs, len(outputs), "result")
