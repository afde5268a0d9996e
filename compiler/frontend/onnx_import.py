"""ONNX -> `snn` dialect: re-roll time and recognise neurons.

Contract
    import_onnx(model: onnx.ModelProto | str | Path, warn=stderr_note) -> ModuleOp
        One `func.func @main` in the `snn` dialect. Arguments are the ONNX graph
        inputs ([T, B, ...] float32, typed `!snn.train<T, B x ...>`, T <= 64), results the
        ONNX graph outputs: stacked [T, ...] trains, or `snn.time_slice` results for outputs
        that hold part of the time axis (one step [B, ...] -- e.g. a Scan/Loop final state or
        the last step's v_next --, one Unsqueeze'd step, a window of steps); both in ONNX
        order and tagged with `snn.onnx_name`. Every layer op carries `source` = the name
        of the ONNX node it came from (in an unrolled graph, the node of step 0). The
        module verifies. `warn` receives notes (a body-less neuron onnxruntime cannot run).
    Every user error raises `FrontendError` with one line naming the file or the ONNX
    node (name, quoted, and op type), what was expected and what was found. Before
    reading, the model is checked as onnxruntime checks it: ir_version and opset known,
    unique node names, graph outputs present, tensors whose data match their dims,
    external data only from the model's folder, every node of its ONNX operator schema
    (arity, attribute types). Weights and neuron parameters must be finite.

Supported today: the canonical form of compiler/frontend/canonical.py, i.e.
    time      unrolled (Gather(x, t, axis=0) per step, Unsqueeze+Concat stacking, T
              copies of each layer sharing initializers) or one Scan over axis 0;
    layers    Gemm (transA=0, alpha=beta=1), MatMul (+ Add of a constant bias), Conv
              (2-D, group=1, auto_pad NOTSET), MaxPool / AveragePool (2-D, ceil_mode=0),
              Flatten, Reshape, Add of two per-step values; Identity and Constant;
    neurons   calls of the model-local functions snn::LIF / snn::IF (or body-less snn::LIF /
              snn::IF nodes: canonical semantics from their attributes);
              any exporter's elementwise neuron, recognised and fused by neuron_fusion.py
              (after inline.py inlines model-local functions of any domain).
Also (issue 3): time merged into the batch ([T*B, ...] Reshape/Flatten, SpikingJelly 'm'),
Slice+Squeeze per step, Shape of static tensors, Loop over time (legacy SpikingJelly too:
a Shape-derived trip count, resolved from the static input shape, and spikes written into a
loop-carried [T, ...] zeros buffer with ScatterND(buf, [[i]], s[None]), read as the stacked
train), BatchNormalization (folded into the Conv/Gemm before it), Dropout (identity), constant folding of any foldable node.
Also (issue 15): Split and Slice along time (windows of steps; SpikingJelly 2.0's TorchScript
export splits [T, B, ...] into T pieces, or a one-step sequence into one), Concat of consecutive
steps, TorchScript's `buf[t] = s` in a Loop body (buf[t] read for its Shape only, s expanded and
reshaped to [1, ...]; legacy SpikingJelly activation_based 'm'), the dynamo exporter's unrolled
`buf[t] = s` (ScatterElements / ScatterND per step into a zeros buffer), a stateless layer that
only some steps use (a readout of the last step: computed at every step), and the body-less
neuron's string `reset`. A model with no spiking neuron is refused naming what it holds.

How time is re-rolled: abstract interpretation. Every ONNX value is tagged as
`Whole(train)` (all T steps, [T, ...]), `Step(train, t)` (step t of a train, [B, ...]),
`Stacked(train, t)` (step t unsqueezed for stacking), `Const(array)` or, inside a Scan
body, `ScanState(i)`. A per-step op is keyed by (kind, attributes, constants, input
trains); the T copies of a layer share the key and become one layer record. A neuron
additionally checks its state chain: v_prev(0) is a zero constant and v_prev(t) is
its own v_next(t-1) (in a Scan: state i in, its v_next out).

Extending: other exporters' neuron patterns plug in as `NeuronMatcher`s (see
`NEURON_MATCHERS`), other per-step layers as `_Interpreter.op_<OpType>` handlers,
other time encodings (Slice+Squeeze, Loop) as handlers producing `Step`/`Whole` tags.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr, UnitAttr
from xdsl.ir import Operation, SSAValue
from xdsl.utils.exceptions import VerifyException

from snnc.backend.errors import FrontendError
from snnc.backend.isa import MAX_TIMESTEPS
from snnc.compiler.frontend.inline import inline_local_functions
from snnc.compiler.frontend.messages import quote, stderr_note
from snnc.compiler.frontend.neuron_fusion import (
    FUSED_DOMAIN,
    FUSED_OP,
    _opset,
    fold_node,
    foldable,
    fuse_neurons,
    initializer_arrays,
    tensor_array,
)
from snnc.compiler.frontend.onnx_loading import read_model
from snnc.dialects.snn import (
    ONNX_NAME_ATTR,
    AddOp,
    SpikeLogicOp,
    AvgPool2dOp,
    Conv2dOp,
    DenseOp,
    LIFOp,
    MaxPool2dOp,
    ReshapeOp,
    SpikeTrainType,
    TimeSliceOp,
    TrainType,
    conv_output_hw,
    int_array,
    tensor_attr,
)

# ------------------------------------------------------------------------------------------
# Abstract values
# ------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Train:
    """A value over all timesteps: per-step shape, binary (spikes) or multi-bit."""

    shape: tuple[int, ...]
    binary: bool
    origin: str  # for messages: graph input name or producing node name

    def describe(self) -> str:
        kind = "spikes" if self.binary else "values"
        return f"{kind} {list(self.shape)} from {quote(self.origin)}"


@dataclass(frozen=True, eq=False)
class Const:
    array: np.ndarray
    initializer: str | None = None  # initializer name, when it is one

    @cached_property
    def key(self) -> tuple:
        """Identity for merging per-step copies: the shared initializer, else the content."""
        if self.initializer is not None:
            return ("initializer", self.initializer)
        import hashlib  # (loads OpenSSL: ~5 ms that most compiles never need)

        data = np.ascontiguousarray(self.array)
        return (data.dtype.str, data.shape, hashlib.sha1(data.tobytes()).hexdigest())


@dataclass(frozen=True)
class Whole:
    train: Train


@dataclass(frozen=True)
class Step:
    train: Train
    t: int | None  # None: the symbolic step of a Scan body


@dataclass(frozen=True)
class Stacked:
    train: Train
    t: int | None


@dataclass(frozen=True)
class Merged:
    """All steps of a train with time merged into the batch: [T*B, ...] (SpikingJelly 'm')."""

    train: Train


@dataclass(frozen=True)
class IterIndex:
    """The iteration number of a Loop over time (the symbolic step t); ndim > 0: Unsqueeze'd to [1]*ndim."""

    ndim: int = 0


@dataclass(frozen=True)
class BufferWrite:
    """A Loop's [T, ...] state buffer with step t written: ScatterND(buf, [[i]], s[None]) (legacy SpikingJelly)."""

    state: int
    train: Train


@dataclass(frozen=True)
class Scattered:
    """A [T, ...] zeros buffer with some steps of `train` written into it (ScatterElements or
    ScatterND per step); all T steps written is the stacked train."""

    train: Train
    steps: frozenset


@dataclass(frozen=True)
class ScanState:
    index: int
    shape: tuple[int, ...] = ()  # of its initial value


@dataclass(frozen=True)
class ShapeOnly:
    """A value whose shape is known but not its content (one step of a Loop's [T, ...] state
    buffer, read only for its Shape by TorchScript's `buf[t] = s`)."""

    shape: tuple[int, ...]
    what: str


@dataclass(frozen=True)
class FinalState:
    """The final value of a Scan/Loop state: step T-1 of the neuron membrane `train`."""

    node: str
    train: Train


@dataclass(frozen=True)
class Window:
    """Steps t0 .. t0+nt-1 of a train, stacked [nt, ...] (part of the time axis)."""

    train: Train
    t0: int
    nt: int


Tag = Const | Whole | Step | Stacked | Merged | IterIndex | BufferWrite | ScanState | FinalState | Window | ShapeOnly | Scattered


def _float32(array: np.ndarray) -> np.ndarray:
    """`array` as float32, without a copy when it already is (an unrolled model reads
    the same weight initializer once per timestep; nothing writes to these arrays)."""
    return np.asarray(array, dtype=np.float32)


def _describe(tag: Tag) -> str:
    if isinstance(tag, Const):
        return f"a constant of shape {list(tag.array.shape)}"
    if isinstance(tag, Whole):
        return f"the whole time series of {tag.train.describe()}"
    if isinstance(tag, Step):
        return f"step {'t' if tag.t is None else tag.t} of {tag.train.describe()}"
    if isinstance(tag, Stacked):
        return f"unsqueezed step {tag.t} of {tag.train.describe()}"
    if isinstance(tag, Merged):
        return f"the time-merged [T*B, ...] view of {tag.train.describe()}"
    if isinstance(tag, ScanState):
        return f"Scan state #{tag.index}"
    if isinstance(tag, IterIndex):
        return "the Loop iteration number" + (f" unsqueezed to rank {tag.ndim}" if tag.ndim else "")
    if isinstance(tag, BufferWrite):
        return f"Loop state #{tag.state} with step t of {tag.train.describe()} written"
    if isinstance(tag, Window):
        return f"steps {tag.t0}..{tag.t0 + tag.nt - 1} of {tag.train.describe()}"
    if isinstance(tag, ShapeOnly):
        return tag.what
    if isinstance(tag, Scattered):
        return f"a [T, ...] buffer with steps {sorted(tag.steps)} of {tag.train.describe()} written"
    return f"the final state of {quote(tag.node)} (step T-1 of {tag.train.describe()})"


@dataclass(eq=False)
class LayerRecord:
    """One network layer merged from its per-step ONNX copies."""

    kind: str  # dense conv2d max_pool2d avg_pool2d reshape add lif bias_add
    node: onnx.NodeProto  # the first (step 0) node
    inputs: tuple[Train, ...]
    outputs: tuple[Train, ...]
    params: dict[str, Any]
    steps: set = field(default_factory=set)
    state_index: int | None = None  # neurons in a Scan body


@dataclass(frozen=True)
class NeuronSpec:
    """What a neuron matcher recognised: the `snn.lif` properties.

    Parameters are floats (scalars) or float32 [C] arrays (per channel)."""

    leak: str
    threshold: Any
    beta: Any = None
    reset: str = "subtract"
    reset_timing: str = "same"
    compare: str = "ge"
    tau: Any = None
    v_reset: Any = None

    def key(self) -> tuple:
        def k(v):
            return None if v is None else tuple(np.asarray(v, np.float32).reshape(-1).tolist())

        return (self.leak, k(self.threshold), k(self.beta), self.reset, self.reset_timing, self.compare,
                k(self.tau), k(self.v_reset))


class NeuronMatcher(Protocol):
    """Recognises one encoding of a neuron call; None when the node is not its form."""

    def __call__(self, node: onnx.NodeProto, model: onnx.ModelProto) -> NeuronSpec | None: ...


# ------------------------------------------------------------------------------------------
# Errors and small helpers
# ------------------------------------------------------------------------------------------


def _node_label(node: onnx.NodeProto) -> str:
    name = node.name or (node.output[0] if node.output else "?")
    op = f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
    return f"node {quote(name)} ({op})"


def _node_error(node: onnx.NodeProto, message: str) -> FrontendError:
    return FrontendError(f"{_node_label(node)}: {message}")


_ATTR_READERS = {
    onnx.AttributeProto.FLOAT: lambda a: float(a.f),
    onnx.AttributeProto.INT: lambda a: int(a.i),
    onnx.AttributeProto.STRING: lambda a: a.s.decode(),
    onnx.AttributeProto.INTS: lambda a: tuple(int(v) for v in a.ints),
    onnx.AttributeProto.FLOATS: lambda a: tuple(float(v) for v in a.floats),
}


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr in node.attribute:
        reader = _ATTR_READERS.get(attr.type)
        if reader is not None:
            out[attr.name] = reader(attr)
        elif attr.type == onnx.AttributeProto.GRAPH:
            out[attr.name] = attr.g
        else:
            out[attr.name] = attr
    return out


@functools.lru_cache(maxsize=None)
def _schema(op_type: str, opset: int):
    try:
        return onnx.defs.get_schema(op_type, opset, "")
    except (onnx.defs.SchemaError, TypeError):  # (TypeError: an opset beyond int32)
        return None


def _schema_error(node: onnx.NodeProto, opset: int) -> str | None:
    """What makes `node` break its ONNX operator schema (arity, attribute types, a missing
    required attribute), as onnxruntime checks when it loads a model; None if nothing.
    (onnx's shape inference does not check every node of a Scan/Loop body.)"""
    schema = _schema(node.op_type, opset)
    if schema is None:
        return None  # not an ONNX op at this opset: the handler lookup reports it
    for what, count, low, high in (("inputs", len(node.input), schema.min_input, schema.max_input),
                                   ("outputs", len(node.output), schema.min_output, schema.max_output)):
        if not low <= count <= high:
            expected = f"{low}" if low == high else f"{low}..{high}" if high < 1 << 30 else f"at least {low}"
            return f"has {count} {what}, {node.op_type}-{schema.since_version} takes {expected}"
    present = set()
    for attr in node.attribute:
        present.add(attr.name)
        spec = schema.attributes.get(attr.name)
        if spec is not None and int(attr.type) != int(spec.type):
            return (f"attribute {quote(attr.name)} must be {spec.type.name}, found "
                    f"{onnx.AttributeProto.AttributeType.Name(attr.type) if attr.type in onnx.AttributeProto.AttributeType.values() else attr.type}")
    missing = [name for name, spec in schema.attributes.items() if spec.required and name not in present]
    return f"the required attribute {quote(missing[0])} is missing" if missing else None


def _check_allowed_attrs(node: onnx.NodeProto, attrs: dict, allowed: Sequence[str]) -> None:
    for name in attrs:
        if name not in allowed:
            raise _node_error(node, f"attribute {quote(name)} is not supported (supported: {', '.join(allowed)})")


# ------------------------------------------------------------------------------------------
# Neuron matchers
# ------------------------------------------------------------------------------------------

CANONICAL_DEFAULTS = {"beta": 1.0, "threshold": 1.0, "reset_zero": 0}
# The string `reset` of a body-less snn::LIF / snn::IF node (torch.onnx.ops.symbolic_multi_out),
# as its reset_zero value.
BODYLESS_RESETS = {"subtract": 0, "zero": 1}
_CANONICAL_ATTR_TYPES = {"beta": ((float, int), "a float"), "threshold": ((float, int), "a float"),
                         "reset_zero": (int, "an int"), "reset": (str, "a string")}


def _attr_type_name(node: onnx.NodeProto, name: str) -> str:
    attr = next(a for a in node.attribute if a.name == name)
    return onnx.AttributeProto.AttributeType.Name(attr.type)


def match_canonical_neuron(node: onnx.NodeProto, model: onnx.ModelProto) -> NeuronSpec | None:
    """snn::LIF / snn::IF calls of canonical.py's model-local functions."""
    if node.domain != "snn" or node.op_type not in ("LIF", "IF"):
        return None
    function = next(
        (f for f in model.functions if f.domain == "snn" and f.name == node.op_type), None
    )
    # No function body (torch.onnx.ops.symbolic_multi_out("snn::LIF", ...)): the node means
    # our canonical neuron, read from its attributes with CANONICAL_DEFAULTS.
    if len(node.input) != 2 or len(node.output) != 2:
        raise _node_error(
            node, f"expected inputs (I, v_prev) and outputs (spike, v_next), "
            f"found {len(node.input)} inputs and {len(node.output)} outputs",
        )
    values = dict(CANONICAL_DEFAULTS)
    if function is not None:
        values.update({a.name: _ATTR_READERS[a.type](a) for a in function.attribute_proto
                       if a.type in _ATTR_READERS})
    allowed = ("beta", "threshold", "reset_zero") if node.op_type == "LIF" else ("threshold", "reset_zero")
    if function is None:  # a body-less node states its reset as a string (nothing reads an int there)
        allowed += ("reset",)
    call_attrs = _attrs(node)
    _check_allowed_attrs(node, call_attrs, allowed)
    for name, (kinds, what) in _CANONICAL_ATTR_TYPES.items():
        if name in call_attrs and not isinstance(call_attrs[name], kinds):
            raise _node_error(node, f"attribute {quote(name)} must be {what}, found {_attr_type_name(node, name)}")
    values.update(call_attrs)
    if "reset" in call_attrs:
        reset_zero = BODYLESS_RESETS.get(call_attrs["reset"])
        if reset_zero is None:
            raise _node_error(node, f"reset = {call_attrs['reset']!r}, expected one of {sorted(BODYLESS_RESETS)}")
        if "reset_zero" in call_attrs and call_attrs["reset_zero"] != reset_zero:
            raise _node_error(node, f"reset = {call_attrs['reset']!r} contradicts reset_zero = {call_attrs['reset_zero']}")
        values["reset_zero"] = reset_zero
    if values["reset_zero"] not in (0, 1):
        raise _node_error(node, f"reset_zero must be 0 or 1, found {values['reset_zero']}")
    if not values["threshold"] > 0 or not math.isfinite(values["threshold"]):
        raise _node_error(node, f"threshold must be a finite number > 0, found {values['threshold']}")
    if node.op_type == "LIF" and not (math.isfinite(values["beta"]) and 0 <= values["beta"] <= 1):
        raise _node_error(node, f"beta must be in [0, 1], found {values['beta']}")
    return NeuronSpec(
        leak="beta" if node.op_type == "LIF" else "none",
        threshold=float(np.float32(values["threshold"])),
        beta=float(np.float32(values["beta"])) if node.op_type == "LIF" else None,
        reset="zero" if values["reset_zero"] == 1 else "subtract",
    )


def match_fused_neuron(node: onnx.NodeProto, model: onnx.ModelProto) -> NeuronSpec | None:
    """snnc.fused::Neuron nodes written by neuron_fusion.fuse_neurons (full spec in attributes)."""
    if node.domain != FUSED_DOMAIN or node.op_type != FUSED_OP:
        return None
    values: dict[str, Any] = {}
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR:
            array = tensor_array(attr.t, f"attribute {quote(attr.name)} tensor").astype(np.float32)
            values[attr.name] = float(array) if array.ndim == 0 else array
        else:
            values[attr.name] = _ATTR_READERS[attr.type](attr)
    return NeuronSpec(
        leak=values["leak"], threshold=values["threshold"], beta=values.get("beta"),
        reset=values["reset"], reset_timing=values["reset_timing"], compare=values["compare"],
        tau=values.get("tau"), v_reset=values.get("v_reset"),
    )


NEURON_MATCHERS: list[NeuronMatcher] = [match_canonical_neuron, match_fused_neuron]


# ------------------------------------------------------------------------------------------
# Loading and checking
# ------------------------------------------------------------------------------------------


def _load(model: onnx.ModelProto | str | Path) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The model, and the big initializers that were read in place (onnx_loading.read_model:
    in the model they have no raw_data)."""
    if isinstance(model, onnx.ModelProto):
        return model, {}
    path = Path(model)
    if not path.is_file():
        raise FrontendError(f"{path}: no such ONNX file")
    try:
        loaded, payloads = read_model(str(path))
    except Exception as exc:  # protobuf decode errors have many types
        raise FrontendError(f"{path}: not an ONNX model ({type(exc).__name__})") from None
    if not loaded.HasField("graph") or not loaded.graph.node:
        raise FrontendError(f"{path}: not an ONNX model (no graph nodes)")
    _load_external_data(loaded, path)
    return loaded, payloads


def all_graphs(graph: onnx.GraphProto):
    """`graph` and every subgraph (Scan / Loop / If bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else
                        attr.graphs if attr.type == onnx.AttributeProto.GRAPHS else []):
                yield from all_graphs(sub)


def _all_tensors(model: onnx.ModelProto):
    """Every tensor payload of the model: initializers and Constant values, in every graph."""
    for graph in all_graphs(model.graph):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Read the tensors stored in files next to the model; a file outside the model's folder
    is refused (as onnxruntime does), naming the initializer and the file."""
    base = path.resolve().parent
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        where = f"{path}: initializer {quote(tensor.name)}"
        location = info.get("location", "")
        if not location:
            raise FrontendError(f"{where}: its data is external but no file is named (no 'location')")
        target = (base / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(base):
            raise FrontendError(f"{where}: its external data file {quote(location)} is outside the model's folder "
                                f"{str(base)!r}; refused (a model may only read files next to it, as in onnxruntime)")
        if not target.is_file():
            raise FrontendError(f"{where}: its external data file {quote(location)} does not exist")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
        except ValueError:
            raise FrontendError(f"{where}: external data offset/length {info.get('offset')!r}/{info.get('length')!r} "
                                "are not integers") from None
        size = target.stat().st_size
        if offset < 0 or offset > size or offset + max(length, 0) > size:
            raise FrontendError(f"{where}: external data at offset {offset}, length {length} lies beyond the "
                                f"{size} bytes of {quote(location)}")
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(base))
    except Exception as exc:  # I/O and onnx errors
        raise FrontendError(f"{path}: cannot read its external data ({type(exc).__name__})") from None


def _check_utf8(message, where: str = "the model") -> None:
    """Names are text: protobuf hands back a string field that is not valid UTF-8 as bytes.
    (A tensor's payload is not read: only its name and external-data entries are text.)"""
    if isinstance(message, onnx.TensorProto):
        fields = [("name", message.name)] + [("external_data", e.value) for e in message.external_data]
        for name, value in fields:
            if not isinstance(value, str):
                raise FrontendError(f"{where}: a {name} is not valid UTF-8: {value!r}")
        return
    for descriptor, value in message.ListFields():
        repeated = descriptor.is_repeated if hasattr(descriptor, "is_repeated") else descriptor.label == descriptor.LABEL_REPEATED
        values = value if repeated else [value]
        if descriptor.type == descriptor.TYPE_STRING:
            for text in values:
                if not isinstance(text, str):
                    raise FrontendError(f"{where}: field {descriptor.name} is not valid UTF-8: {text!r}")
        elif descriptor.type == descriptor.TYPE_MESSAGE:
            for item in values:
                _check_utf8(item, f"{where}.{descriptor.name}")


def _check_model(model: onnx.ModelProto) -> None:
    """What onnxruntime refuses (and snnc would otherwise compile or crash on)."""
    if model.ir_version > onnx.IR_VERSION:
        raise FrontendError(f"ir_version {model.ir_version} is newer than the newest this ONNX reader knows "
                            f"({onnx.IR_VERSION}); onnxruntime refuses it too")
    newest = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and not 1 <= opset.version <= newest:
            raise FrontendError(f"opset_import: ONNX opset {opset.version} is not one this reader knows "
                                f"(1..{newest}); onnxruntime refuses it too")
    if not model.graph.output:
        raise FrontendError("the model has no graph outputs: there is nothing to compute")
    initializers = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name not in initializers:
            _input_dims(value)
    _check_utf8(model)
    for graph in all_graphs(model.graph):
        seen: set[str] = set()
        for node in graph.node:
            if node.name and node.name in seen:
                raise FrontendError(f"{_node_label(node)}: two nodes share the name {quote(node.name)}; node names "
                                    "must be unique (onnxruntime refuses the model too)")
            seen.add(node.name)


_INFERENCE_NODE = re.compile(r"\(op_type:([^,]*), node name: ([^)]*)\)")


# Initializers with more elements than this have their raw_data hidden from shape inference
# (4 KiB of float32; Reshape shapes and other values it propagates are far smaller).
_BIG_INITIALIZER_ELEMENTS = 1024


def _copy_fields(dst, src, skip: tuple[str, ...] = ()) -> None:
    """Copy the set fields of protobuf (proto2) message `src` into `dst`, except those
    named in `skip` (never read: reading a bytes field copies it)."""
    for descriptor in src.DESCRIPTOR.fields:
        name = descriptor.name
        if name in skip:
            continue
        value = getattr(src, name)
        if isinstance(value, str | bytes | int | float) or hasattr(value, "ListFields"):
            if not src.HasField(name):
                continue
            if hasattr(value, "ListFields"):  # a message
                getattr(dst, name).CopyFrom(value)
            else:
                setattr(dst, name, value)
        elif len(value):  # a repeated field
            getattr(dst, name).extend(value)


def _without_big_payloads(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose big initializers keep their dims and type but no raw_data.

    Shape inference needs only those (small ones, e.g. Reshape shapes, keep their values
    for constant propagation); copying or serialising tens of MB of weights would
    dominate its cost.
    """
    light = onnx.ModelProto()
    _copy_fields(light, model, skip=("graph",))
    _copy_fields(light.graph, model.graph, skip=("initializer",))
    for init in model.graph.initializer:
        # (from the dims: reading raw_data or ByteSize() would copy the payload)
        big = math.prod(init.dims) > _BIG_INITIALIZER_ELEMENTS
        _copy_fields(light.graph.initializer.add(), init, skip=("raw_data",) if big else ())
    return light


def _run_shape_inference(model: onnx.ModelProto) -> None:
    """onnx's own checks (shapes, types); the first error becomes a FrontendError.

    It runs on `_without_big_payloads(model)`: the inferred model is not used, only
    the errors.
    """
    try:
        onnx.shape_inference.infer_shapes(_without_big_payloads(model), check_type=True, strict_mode=True)
    except Exception as exc:
        text = str(exc).strip() or type(exc).__name__
        # The first error is the first line, but a node name may hold a newline: the line ends at
        # the first newline outside the names; its innermost (last) node is the one to name.
        matches = list(_INFERENCE_NODE.finditer(text))
        end = next((i for i, c in enumerate(text) if c == "\n" and not any(m.start() <= i < m.end() for m in matches)),
                   len(text))
        nodes = [m for m in matches if m.end() <= end]
        detail = text[nodes[-1].end() if nodes else 0:end].rsplit("] ", 1)[-1].strip(" :") or text[:end]
        if nodes:
            op_type, name = nodes[-1].groups()
            raise FrontendError(f"node {quote(name)} ({op_type}): shape inference failed: {detail}") from None
        raise FrontendError(f"ONNX shape inference failed: {detail}") from None


# ------------------------------------------------------------------------------------------
# The abstract interpreter
# ------------------------------------------------------------------------------------------


class _Interpreter:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.layers: list[LayerRecord] = []
        self.by_key: dict[tuple, LayerRecord] = {}
        self.timesteps: int | None = None
        self.time_source = ""  # what fixed T, for messages
        self.outer_env: dict[str, Tag] = {}  # top-level values, for Scan body captures
        self.body_start = 0  # index in `layers` of the first layer of the Scan/Loop body being read

    # ---------------------------------------------------------------------- plumbing

    def set_timesteps(self, T: int, source: str) -> None:
        if self.timesteps is None:
            self.timesteps, self.time_source = T, source
        elif self.timesteps != T:
            raise FrontendError(
                f"{source}: has T={T} timesteps, but {self.time_source} has T={self.timesteps}"
            )

    def run_graph(self, graph: onnx.GraphProto, env: dict[str, Tag], scan: bool) -> None:
        for node in graph.node:
            inputs = []
            for name in node.input:
                if name == "":
                    inputs.append(None)
                elif name in env:
                    inputs.append(env[name])
                else:
                    raise _node_error(node, f"input {quote(name)} is not defined")
            outputs = self.run_node(node, inputs, scan)
            for name, tag in zip(node.output, outputs):
                if name:
                    env[name] = tag

    def run_node(self, node: onnx.NodeProto, inputs: list, scan: bool) -> list[Tag]:
        for matcher in NEURON_MATCHERS:
            spec = matcher(node, self.model)
            if spec is not None:
                return self.neuron(node, spec, inputs, scan)
        if node.domain not in ("", "ai.onnx"):
            raise _node_error(node, f"unsupported op {node.domain}::{node.op_type}")
        wrong = _schema_error(node, _opset(self.model))
        if wrong:
            raise _node_error(node, wrong)
        constant = bool(inputs) and all(isinstance(i, Const) for i in inputs if i is not None)
        if constant and foldable(node):
            folded = fold_node(node, [None if i is None else i.array for i in inputs], _opset(self.model))
            if folded is not None:
                return [Const(v) for v in folded]
        handler: Callable | None = getattr(self, f"op_{node.op_type}", None)
        if handler is None:
            raise _node_error(node, f"unsupported op {node.op_type}")
        if constant and node.op_type not in ("Scan", "Loop"):
            # onnx's evaluator could not fold it: the constants do not fit the op
            try:
                return handler(node, inputs)
            except (ValueError, IndexError, TypeError, np.exceptions.AxisError) as exc:
                raise _node_error(node, f"cannot compute it from its constant inputs ({type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        if any(isinstance(i, Merged) for i in inputs) and node.op_type not in ("Reshape", "Identity"):
            return self.merged(node, handler, inputs, scan)
        if node.op_type in ("MatMul", "Add") and any(isinstance(i, Whole) for i in inputs) and not scan:
            # nn.Linear on [T, B, K] (SpikingJelly 'm', a Linear before a Loop over time): the
            # same layer at every step
            if all(isinstance(i, (Const, Whole)) for i in inputs):
                wholes = [Merged(i.train) if isinstance(i, Whole) else i for i in inputs]
                return [Whole(o.train) if isinstance(o, Merged) else o
                        for o in self.merged(node, handler, wholes, scan)]
        return handler(node, inputs, scan) if node.op_type in ("Scan", "Loop") else handler(node, inputs)

    def merged(self, node, handler, inputs, scan: bool) -> list[Tag]:
        """A per-step layer applied once to a [T*B, ...] merged batch: the same layer at every step."""
        if scan:
            raise _node_error(node, "a time-merged [T*B, ...] batch inside a Scan body is not supported")
        steps = [Step(i.train, None) if isinstance(i, Merged) else i for i in inputs]
        outputs = handler(node, steps)
        for record in self.layers:
            if None in record.steps and record.node is node:
                record.steps.discard(None)
                record.steps.update(range(self.timesteps))
        return [Merged(o.train) if isinstance(o, Step) and o.t is None else o for o in outputs]

    # --------------------------------------------------------------- tag helpers

    def const(self, node, tag, what: str) -> np.ndarray:
        if not isinstance(tag, Const):
            found = "nothing" if tag is None else _describe(tag)
            raise _node_error(node, f"{what} must be a constant, found {found}")
        return tag.array

    def step(self, node, tag, what: str = "input") -> Step:
        if isinstance(tag, Step):
            return tag
        if isinstance(tag, Whole):
            raise _node_error(
                node,
                f"{what} is {_describe(tag)} [T, ...]; expected one timestep "
                "(Gather(x, t, axis=0) per step or a Scan over axis 0): the model has no time axis",
            )
        found = "nothing" if tag is None else _describe(tag)
        raise _node_error(node, f"{what} must be a per-step value, found {found}")

    def same_step(self, node, steps: Sequence[Step]) -> int | None:
        times = {s.t for s in steps}
        if len(times) != 1:
            raise _node_error(node, f"inputs come from different timesteps {sorted(times, key=str)}")
        return times.pop()

    def layer(
        self, node, kind: str, inputs: Sequence[Step], params: dict,
        outputs: Sequence[tuple[tuple[int, ...], bool]],
        consts: Sequence[Const] = (), arrays: dict[str, np.ndarray | None] | None = None,
    ) -> list[Tag]:
        """Merge this per-step node into the layer with the same key; its output tags.

        `params` are hashable attributes, `consts` the constant inputs (their identity
        joins the key) and `arrays` the numpy parameters derived from them.
        """
        t = self.same_step(node, inputs)
        key = (
            kind, _freeze(params), tuple(c.key for c in consts),
            tuple(id(s.train) for s in inputs),
        )
        record = self.by_key.get(key)
        if record is None:
            record = LayerRecord(
                kind, node, tuple(s.train for s in inputs),
                tuple(Train(tuple(shape), binary, node.name or node.output[0]) for shape, binary in outputs),
                {**params, **(arrays or {})},
            )
            self.by_key[key] = record
            self.layers.append(record)
        record.steps.add(t)
        return [Step(train, t) for train in record.outputs]

    # ---------------------------------------------------------------- time plumbing

    def op_Constant(self, node, inputs):
        attrs = _attrs(node)
        if "value" in attrs:
            return [Const(tensor_array(attrs["value"].t, f"{_node_label(node)}: the value tensor"))]
        if "value_float" in attrs:
            return [Const(np.array(attrs["value_float"], np.float32))]
        if "value_int" in attrs:
            return [Const(np.array(attrs["value_int"], np.int64))]
        if "value_floats" in attrs:
            return [Const(np.array(attrs["value_floats"], np.float32))]
        if "value_ints" in attrs:
            return [Const(np.array(attrs["value_ints"], np.int64))]
        raise _node_error(node, "expected a value/value_float/value_int(s) attribute")

    def op_Shape(self, node, inputs):
        """Shapes are static: the [T, B, ...], [T*B, ...] or [B, ...] shape as a constant."""
        tag = inputs[0]
        if isinstance(tag, Whole):
            full = (self.timesteps, *tag.train.shape)
        elif isinstance(tag, Merged):
            full = (self.timesteps * tag.train.shape[0], *tag.train.shape[1:])
        elif isinstance(tag, Step):
            full = tag.train.shape
        elif isinstance(tag, Stacked):
            full = (1, *tag.train.shape)
        elif isinstance(tag, Const):
            full = tag.array.shape
        elif isinstance(tag, (ScanState, ShapeOnly)):
            full = tag.shape
        elif isinstance(tag, IterIndex):
            full = (1,) * tag.ndim
        else:
            raise _node_error(node, f"expected a tensor, found {_describe(tag) if tag is not None else 'nothing'}")
        attrs = _attrs(node)
        start, end = attrs.get("start", 0), attrs.get("end", len(full))
        return [Const(np.array(full[start:end], np.int64))]

    def op_Identity(self, node, inputs):
        return [inputs[0]]

    def op_Expand(self, node, inputs):
        """Expand to the value's own shape (TorchScript's `buf[i] = s` writes s expanded to buf[i])."""
        x = inputs[0]
        target = tuple(int(d) for d in self.const(node, inputs[1], "the shape").reshape(-1))
        if isinstance(x, Step):
            try:
                expanded = np.broadcast_shapes(x.train.shape, target)
            except ValueError:
                expanded = None
            if expanded == x.train.shape:
                return [x]
        found = "nothing" if x is None else _describe(x)
        raise _node_error(node, f"expected an Expand of a per-step value to its own shape, found {found} "
                                f"expanded to {list(target)}")

    def op_Dropout(self, node, inputs):
        """Inference: Dropout is the identity (its mask output is not supported)."""
        if len(node.output) > 1 and node.output[1]:
            raise _node_error(node, "the mask output of Dropout is not supported")
        if len(inputs) > 2 and inputs[2] is not None and np.any(self.const(node, inputs[2], "training_mode")):
            raise _node_error(node, "expected training_mode = false (an inference model)")
        return [inputs[0]]

    def op_BatchNormalization(self, node, inputs):
        """Inference BatchNorm: a per-channel scale and shift, folded into the Conv/Gemm before it."""
        attrs = _attrs(node)
        if attrs.get("training_mode", 0):
            raise _node_error(node, "expected training_mode = 0 (an inference model)")
        if len(node.output) > 1 and any(node.output[1:]):
            raise _node_error(node, "the running mean/var outputs are not supported (training mode)")
        x = self.step(node, inputs[0])
        gamma, beta, mean, var = (self.const(node, inputs[i], what).astype(np.float64).reshape(-1)
                                  for i, what in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
        scale = gamma / np.sqrt(var + attrs.get("epsilon", 1e-5))
        shift = beta - mean * scale
        shape = x.train.shape
        if len(shape) < 2 or scale.shape != (shape[1],):
            raise _node_error(node, f"shape mismatch: {scale.size} channels for input {list(shape)}")
        return self.layer(node, "bias_add", [x], {"bn": True}, [(shape, False)], list(inputs[1:5]),
                          {"bias": shift.astype(np.float32), "scale": scale.astype(np.float32)})

    def op_Gather(self, node, inputs):
        data, indices = inputs
        axis = _attrs(node).get("axis", 0)
        if isinstance(data, Const) and isinstance(indices, Const):
            return [Const(np.take(data.array, indices.array, axis=axis))]
        if isinstance(data, Stacked) and axis == 0 and isinstance(indices, Const) and indices.array.ndim == 0 \
                and int(indices.array) in (0, -1):
            return [Step(data.train, data.t)]  # x.unsqueeze(0)[0]
        if isinstance(data, Whole) and isinstance(indices, IterIndex) and indices.ndim == 0 and axis == 0:
            return [Step(data.train, None)]  # x[i] in a Loop over time
        if isinstance(data, ScanState) and isinstance(indices, IterIndex) and indices.ndim == 0 and axis == 0 \
                and data.shape:
            # buf[i] of a loop-carried [T, ...] buffer: TorchScript reads it for its shape (`buf[i] = s`)
            return [ShapeOnly(data.shape[1:], f"step i of Loop state #{data.index} (only its shape is known)")]
        if not isinstance(data, Whole):
            raise _node_error(node, f"expected Gather(x, t, axis=0) over a [T, B, ...] input, found data = {_describe(data)}")
        T = self.timesteps
        if axis not in (0, -(len(data.train.shape) + 1)):
            raise _node_error(node, f"expected a Gather over axis 0 (time), found axis {axis}")
        t_index = self.const(node, indices, "the time index")
        if t_index.ndim != 0 or t_index.dtype.kind not in "iu":
            raise _node_error(node, f"expected a scalar integer time index, found shape {list(t_index.shape)} {t_index.dtype}")
        t = int(t_index)
        t = t + T if t < 0 else t
        if not 0 <= t < T:
            raise _node_error(node, f"time index {int(t_index)} is outside 0..{T - 1}")
        return [Step(data.train, t)]

    def _axes(self, node, inputs, attrs) -> tuple[int, ...]:
        if len(inputs) > 1 and inputs[1] is not None:
            return tuple(int(a) for a in self.const(node, inputs[1], "axes").reshape(-1))
        return tuple(attrs.get("axes", ()))

    def op_Unsqueeze(self, node, inputs):
        axes = self._axes(node, inputs, _attrs(node))
        value = inputs[0]
        if isinstance(value, Const):
            return [Const(np.expand_dims(value.array, axes))]
        if isinstance(value, IterIndex):  # the index [i] / [[i]] of a ScatterND write
            if value.ndim + len(axes) > 2:
                raise _node_error(node, f"expected the Loop iteration number unsqueezed to [1] or [1, 1], "
                                  f"found rank {value.ndim + len(axes)}")
            return [IterIndex(value.ndim + len(axes))]
        step = self.step(node, value)
        if axes != (0,):
            raise _node_error(node, f"expected Unsqueeze(axes=[0]) to stack timesteps, found axes {list(axes)}")
        return [Stacked(step.train, step.t)]

    def op_Concat(self, node, inputs):
        axis = _attrs(node).get("axis")
        if all(isinstance(i, Const) for i in inputs):
            return [Const(np.concatenate([i.array for i in inputs], axis=axis))]
        pieces = [(i.train, i.t, 1) if isinstance(i, Stacked) else (i.train, i.t0, i.nt) if isinstance(i, Window)
                  else None for i in inputs]
        if axis not in (0, None) and pieces[0] is not None:
            axis = axis + len(pieces[0][0].shape) + 1 if axis < 0 else axis
        if axis != 0 or None in pieces or any(t is None for _, t, _ in pieces):
            found = ", ".join("nothing" if i is None else _describe(i) for i in inputs[:3])
            raise _node_error(node, f"expected Concat(axis=0) of Unsqueeze'd timesteps 0..T-1, found axis {axis} and {found}")
        train, t0 = pieces[0][0], pieces[0][1]
        times = [t for _, start, n in pieces for t in range(start, start + n)]
        if any(p[0] is not train for p in pieces) or times != list(range(t0, t0 + len(times))):
            raise _node_error(
                node, f"expected timesteps 0..{self.timesteps - 1} of one value in order, found steps {times}"
                + ("" if all(p[0] is train for p in pieces) else " of different values"),
            )
        return [self.window(train, t0, len(times))]

    def op_ScatterND(self, node, inputs):
        """ScatterND(buf, [[i]], s[None]) in a Loop body: step i of a time train into a loop-carried buffer."""
        attrs = _attrs(node)
        _check_allowed_attrs(node, attrs, ("reduction",))
        if attrs.get("reduction", b"none") not in (b"none", "none"):
            raise _node_error(node, f"expected reduction 'none', found {attrs['reduction']!r}")
        data, indices, updates = inputs
        if isinstance(data, (Const, Scattered)) and isinstance(indices, Const):  # unrolled: buf[t] = s
            index = np.asarray(indices.array)
            if index.dtype.kind not in "iu" or index.shape not in ((1,), (1, 1)):
                raise _node_error(node, f"expected indices [t] or [[t]] writing one timestep, found shape {list(index.shape)}")
            wanted = Step if index.ndim == 1 else Stacked
            if not isinstance(updates, wanted):
                raise _node_error(node, f"expected updates {'s' if index.ndim == 1 else 'Unsqueeze(s, 0)'} of one "
                                  f"timestep, found {'nothing' if updates is None else _describe(updates)}")
            return [self.scatter_step(node, data, int(index.reshape(-1)[0]), updates)]
        if not isinstance(data, ScanState):
            raise _node_error(node, "expected ScatterND into a loop-carried [T, ...] buffer (a Loop state), found "
                              f"{'nothing' if data is None else _describe(data)}")
        if not (isinstance(indices, IterIndex) and indices.ndim in (1, 2)):
            raise _node_error(node, "expected indices [[i]] (the Loop iteration number unsqueezed) to write step i, "
                              f"found {'nothing' if indices is None else _describe(indices)}")
        wanted = Step if indices.ndim == 1 else Stacked
        if not (isinstance(updates, wanted) and updates.t is None):
            form = "s" if indices.ndim == 1 else "Unsqueeze(s, 0)"
            raise _node_error(node, f"expected updates {form} of the current step, found "
                              f"{'nothing' if updates is None else _describe(updates)}")
        return [BufferWrite(data.index, updates.train)]

    def op_ScatterElements(self, node, inputs):
        """ScatterElements(buf, t (every index), s[None], axis=0): step t written into a [T, ...] buffer
        (the dynamo exporter's `buf[t] = s`)."""
        attrs = _attrs(node)
        _check_allowed_attrs(node, attrs, ("axis", "reduction"))
        if attrs.get("reduction", b"none") not in (b"none", "none") or attrs.get("axis", 0) != 0:
            raise _node_error(node, f"expected axis 0 and reduction 'none', found axis {attrs.get('axis', 0)}")
        data, indices, updates = inputs
        index = self.const(node, indices, "the indices")
        if not isinstance(data, (Const, Scattered)) or not isinstance(updates, Stacked) or index.dtype.kind not in "iu" \
                or index.shape != (1, *updates.train.shape) or np.any(index != index.flat[0]):
            found = ", ".join("nothing" if i is None else _describe(i) for i in inputs)
            raise _node_error(node, f"expected ScatterElements(buf, t, Unsqueeze(s, 0), axis=0) writing timestep t "
                                    f"of a [T, ...] buffer, found {found}")
        return [self.scatter_step(node, data, int(index.flat[0]), updates)]

    def scatter_step(self, node, data, t: int, updates: Step | Stacked) -> Tag:
        """`data` (a [T, ...] zeros buffer or one being written) with step t of a train written."""
        T = self.timesteps
        t = t + T if t < 0 else t
        train = updates.train
        if isinstance(data, Const):
            if data.array.shape != (T, *train.shape) or np.any(data.array != 0):
                raise _node_error(node, f"expected a [T, ...] = {[T, *train.shape]} buffer of zeros, found a constant "
                                        f"of shape {list(data.array.shape)}")
            written = frozenset()
        elif data.train is not train:
            raise _node_error(node, f"the buffer holds steps of {data.train.describe()}, not of {train.describe()}")
        else:
            written = data.steps
        if updates.t != t or t in written:
            raise _node_error(node, f"expected step {t} of {train.describe()} written at index {t} once, "
                                    f"found step {updates.t}" + (" written again" if t in written else ""))
        written = written | {t}
        return Whole(train) if written == frozenset(range(T)) else Scattered(train, written)

    def op_Loop(self, node, inputs, scan: bool):
        """A Loop over time: trip count T, state = membranes (zeros), x[i] read from the outer scope."""
        if scan:
            raise _node_error(node, "a Loop inside a Scan/Loop body is not supported")
        body: onnx.GraphProto = _attrs(node)["body"]
        T = self.timesteps
        trip = self.const(node, inputs[0], "the trip count M") if inputs and inputs[0] is not None else None
        if trip is None or int(np.asarray(trip).reshape(-1)[0]) != T:
            raise _node_error(node, f"expected a trip count of T={T} (a Loop over time), found "
                              f"{'none' if trip is None else int(np.asarray(trip).reshape(-1)[0])}")
        if len(inputs) > 1 and inputs[1] is not None and not np.all(self.const(node, inputs[1], "cond")):
            raise _node_error(node, "expected cond = true")
        num_state = len(inputs) - 2
        if len(body.input) != num_state + 2 or len(body.output) < num_state + 1:
            raise _node_error(node, f"body has {len(body.input)} inputs and {len(body.output)} outputs, "
                              f"expected {num_state + 2} inputs and at least {num_state + 1} outputs")
        env: dict[str, Tag] = {body.input[0].name: IterIndex(), body.input[1].name: Const(np.array(True))}
        for i, tag in enumerate(inputs[2:]):
            array = self.const(node, tag, f"initial state #{i}")
            if np.any(array != 0):
                raise _node_error(node, f"initial state #{i} must be zeros, found nonzero values")
            env[body.input[2 + i].name] = ScanState(i, array.shape)
        scope = _Scope(env, self.outer_env, captures=(Const, Whole))
        before = self.body_start = len(self.layers)
        self.run_graph(body, scope, scan=True)
        cond_out = scope.get(body.output[0].name)
        if not (isinstance(cond_out, Const) and np.all(cond_out.array)):
            raise _node_error(node, "expected the body's cond output to be constant true (a fixed number of steps)")
        neurons = {r.state_index: r for r in self.layers[before:] if r.kind == "lif"}
        results: list[Tag] = []
        for i in range(num_state):
            record, out = neurons.get(i), scope.get(body.output[1 + i].name)
            if isinstance(out, BufferWrite) and out.state == i and record is None:
                # a [T, ...] buffer of zeros, step i written each iteration: the stacked time train
                shape = tuple(self.const(node, inputs[2 + i], f"initial state #{i}").shape)
                if shape != (T, *out.train.shape):
                    raise _node_error(node, f"loop-carried buffer #{i} has shape {list(shape)}, expected "
                                      f"{[T, *out.train.shape]} (T steps of {out.train.describe()})")
                results.append(Whole(out.train))
                continue
            if record is None or not (isinstance(out, Step) and out.train is record.outputs[1]):
                raise _node_error(node, f"loop-carried state #{i} must be a neuron's membrane (v_prev in, v_next out) "
                                  "or a [T, ...] buffer written with ScatterND(buf, [[i]], s[None])")
            results.append(FinalState(node.name, record.outputs[1]))
        for out in body.output[1 + num_state:]:
            tag = scope.get(out.name)
            if not isinstance(tag, Step):
                raise _node_error(node, f"scan output {quote(out.name)} must be a per-step value, found "
                                  f"{'nothing' if tag is None else _describe(tag)}")
            results.append(Whole(tag.train))
        return results

    def op_Scan(self, node, inputs, scan: bool):
        if scan:
            raise _node_error(node, "nested Scan is not supported")
        attrs = _attrs(node)
        _check_allowed_attrs(node, attrs, ("body", "num_scan_inputs", "scan_input_axes",
                                           "scan_input_directions", "scan_output_axes",
                                           "scan_output_directions"))
        for name in attrs:
            if name.startswith("scan_") and any(attrs[name]):
                raise _node_error(node, f"expected {name} all 0 (forward over axis 0), found {list(attrs[name])}")
        body: onnx.GraphProto = attrs["body"]
        num_scan = attrs["num_scan_inputs"]
        num_state = len(inputs) - num_scan
        if len(body.input) != len(inputs) or len(body.output) != len(node.output) or num_state < 0:
            raise _node_error(
                node, f"body has {len(body.input)} inputs and {len(body.output)} outputs, expected "
                f"{len(inputs)} and {len(node.output)} (num_scan_inputs={num_scan})",
            )
        env: dict[str, Tag] = {}
        for i, tag in enumerate(inputs[:num_state]):
            array = self.const(node, tag, f"initial state #{i}")
            if np.any(array != 0):
                raise _node_error(node, f"initial state #{i} must be zeros, found nonzero values")
            env[body.input[i].name] = ScanState(i, array.shape)
        for j, tag in enumerate(inputs[num_state:]):
            if not isinstance(tag, Whole):
                raise _node_error(node, f"scan input #{j} must be a [T, B, ...] graph input, found {_describe(tag)}")
            env[body.input[num_state + j].name] = Step(tag.train, None)
        # Names the body does not define are captures from the outer scope (constants).
        scope = _Scope(env, self.outer_env)
        before = self.body_start = len(self.layers)
        self.run_graph(body, scope, scan=True)
        neurons = {r.state_index: r for r in self.layers[before:] if r.kind == "lif"}
        results: list[Tag] = []
        for i in range(num_state):
            record = neurons.get(i)
            out = scope.get(body.output[i].name)
            if record is None:
                raise _node_error(node, f"state #{i} is not the v_prev of a neuron call in the body")
            if not (isinstance(out, Step) and out.train is record.outputs[1]):
                raise _node_error(
                    node, f"state output #{i} must be the v_next of neuron {quote(record.node.name)}, "
                    f"found {'nothing' if out is None else _describe(out)}",
                )
            results.append(FinalState(node.name, record.outputs[1]))
        for k, out in enumerate(body.output[num_state:]):
            tag = scope.get(out.name)
            if not isinstance(tag, Step):
                raise _node_error(node, f"scan output {quote(out.name)} must be a per-step value, found {'nothing' if tag is None else _describe(tag)}")
            results.append(Whole(tag.train))
        return results

    # ---------------------------------------------------------------------- layers

    def op_Gemm(self, node, inputs):
        attrs = _attrs(node)
        _check_allowed_attrs(node, attrs, ("alpha", "beta", "transA", "transB"))
        if attrs.get("transA", 0) != 0 or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise _node_error(node, f"expected transA=0, alpha=1, beta=1, found transA={attrs.get('transA', 0)}, "
                              f"alpha={attrs.get('alpha', 1.0)}, beta={attrs.get('beta', 1.0)}")
        x = self.step(node, inputs[0])
        weight = _float32(self.const(node, inputs[1], "the weight (input B)"))
        if weight.ndim != 2:
            raise _node_error(node, f"expected a 2-D weight, found shape {list(weight.shape)}")
        if attrs.get("transB", 0):
            weight = weight.T
        consts = [inputs[1]]
        bias = None
        if len(inputs) > 2 and inputs[2] is not None:
            self.const(node, inputs[2], "the bias (input C)")
            consts.append(inputs[2])
            bias = self._channel_vector(node, inputs[2].array, (x.train.shape[0], weight.shape[1]))
        return self._dense(node, x, weight, bias, consts)

    def op_MatMul(self, node, inputs):
        x = self.step(node, inputs[0])
        weight = _float32(self.const(node, inputs[1], "the weight (input B)"))
        if weight.ndim != 2:
            raise _node_error(node, f"expected a 2-D weight, found shape {list(weight.shape)}")
        return self._dense(node, x, weight, None, [inputs[1]])

    def _dense(self, node, x: Step, weight: np.ndarray, bias, consts):
        shape = x.train.shape
        if len(shape) != 2 or shape[1] != weight.shape[0]:
            raise _node_error(node, f"shape mismatch: input {list(shape)} times weight [K, N] = {list(weight.shape)}")
        return self.layer(
            node, "dense", [x], {}, [((shape[0], weight.shape[1]), False)],
            consts, {"weight": weight, "bias": bias},
        )

    def _channel_vector(self, node, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A constant added to a [B, C, ...] tensor that varies only along C, as [C]."""
        array = np.asarray(array, np.float32)
        try:
            full = np.broadcast_to(array, shape) if np.broadcast_shapes(array.shape, shape) == shape else None
        except ValueError:
            full = None
        if full is None:
            raise _node_error(node, f"shape mismatch: constant {list(array.shape)} does not broadcast to {list(shape)}")
        vector = np.ascontiguousarray(full[(0, slice(None)) + (0,) * (len(shape) - 2)])
        if not np.array_equal(np.broadcast_to(vector.reshape((1, -1) + (1,) * (len(shape) - 2)), shape), full):
            raise _node_error(node, f"expected a bias that varies only along axis 1, found shape {list(array.shape)}")
        return vector

    def op_Conv(self, node, inputs):
        attrs = _attrs(node)
        _check_allowed_attrs(node, attrs, ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"))
        if attrs.get("auto_pad", "NOTSET") != "NOTSET":
            raise _node_error(node, f"expected auto_pad=NOTSET (explicit pads), found {attrs['auto_pad']}")
        if attrs.get("group", 1) != 1:
            raise _node_error(node, f"expected group=1, found group={attrs['group']}")
        x = self.step(node, inputs[0])
        weight = _float32(self.const(node, inputs[1], "the weight (input W)"))
        shape = x.train.shape
        if weight.ndim != 4 or len(shape) != 4:
            raise _node_error(node, f"expected a 2-D convolution of [B, C, H, W], found input {list(shape)} and weight {list(weight.shape)}")
        if weight.shape[1] != shape[1]:
            raise _node_error(node, f"shape mismatch: input has {shape[1]} channels, weight {list(weight.shape)} expects {weight.shape[1]}")
        kernel = tuple(weight.shape[2:])
        if tuple(attrs.get("kernel_shape", kernel)) != kernel:
            raise _node_error(node, f"kernel_shape {list(attrs['kernel_shape'])} does not match weight {list(weight.shape)}")
        strides, pads, dilations = self._window(node, attrs)
        out_hw = self._out_hw(node, shape, kernel, strides, pads, dilations)
        out_shape = (shape[0], weight.shape[0], *out_hw)
        consts = [inputs[1]]
        bias = None
        if len(inputs) > 2 and inputs[2] is not None:
            bias = _float32(self.const(node, inputs[2], "the bias (input B)"))
            if bias.shape != (weight.shape[0],):
                raise _node_error(node, f"shape mismatch: bias {list(bias.shape)}, expected [{weight.shape[0]}]")
            consts.append(inputs[2])
        params = {"strides": strides, "pads": pads, "dilations": dilations}
        return self.layer(node, "conv2d", [x], params, [(out_shape, False)], consts,
                          {"weight": weight, "bias": bias})

    def _window(self, node, attrs):
        strides = tuple(attrs.get("strides", (1, 1)))
        pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
        dilations = tuple(attrs.get("dilations", (1, 1)))
        if len(strides) != 2 or len(pads) != 4 or len(dilations) != 2:
            raise _node_error(node, f"expected 2-D strides/dilations and 4 pads, found strides {list(strides)}, "
                              f"pads {list(pads)}, dilations {list(dilations)}")
        return strides, pads, dilations

    def _out_hw(self, node, shape, kernel, strides, pads, dilations=(1, 1)):
        out_hw = conv_output_hw(shape[2:], kernel, strides, pads, dilations)
        if min(out_hw) < 1:
            raise _node_error(node, f"shape mismatch: kernel {list(kernel)} does not fit input {list(shape)} with pads {list(pads)}")
        return out_hw

    def _pool(self, node, inputs, kind, allowed, binary_result: bool | None):
        attrs = _attrs(node)
        _check_allowed_attrs(node, attrs, allowed)
        if attrs.get("auto_pad", "NOTSET") != "NOTSET":
            raise _node_error(node, f"expected auto_pad=NOTSET (explicit pads), found {attrs['auto_pad']}")
        if attrs.get("ceil_mode", 0) != 0:
            raise _node_error(node, f"expected ceil_mode=0, found ceil_mode={attrs['ceil_mode']}")
        if any(d != 1 for d in attrs.get("dilations", ())):
            raise _node_error(node, f"expected dilations 1 for pooling, found {list(attrs['dilations'])}")
        if attrs.get("storage_order", 0) != 0:
            raise _node_error(node, "expected storage_order=0")
        if len(node.output) > 1 and node.output[1]:
            raise _node_error(node, "the Indices output is not supported")
        x = self.step(node, inputs[0])
        shape = x.train.shape
        kernel = tuple(attrs.get("kernel_shape", ()))
        if len(shape) != 4 or len(kernel) != 2:
            raise _node_error(node, f"expected 2-D pooling of [B, C, H, W], found input {list(shape)} and kernel {list(kernel)}")
        strides, pads, _ = self._window(node, {**attrs, "dilations": (1, 1)})
        out_hw = self._out_hw(node, shape, kernel, strides, pads)
        params = {"kernel": kernel, "strides": strides, "pads": pads}
        if kind == "avg_pool2d":
            params["count_include_pad"] = bool(attrs.get("count_include_pad", 0))
        binary = x.train.binary if binary_result is None else binary_result
        return self.layer(node, kind, [x], params, [((shape[0], shape[1], *out_hw), binary)])

    def op_MaxPool(self, node, inputs):
        return self._pool(node, inputs, "max_pool2d", ("auto_pad", "ceil_mode", "dilations", "kernel_shape",
                                                       "pads", "storage_order", "strides"), None)

    def op_AveragePool(self, node, inputs):
        return self._pool(node, inputs, "avg_pool2d", ("auto_pad", "ceil_mode", "count_include_pad", "dilations",
                                                       "kernel_shape", "pads", "strides"), False)

    def op_Flatten(self, node, inputs):
        if isinstance(inputs[0], Whole):  # e.g. x.flatten(0, 1): [T, B, ...] -> [T*B, ...]
            full = (self.timesteps, *inputs[0].train.shape)
            axis = _attrs(node).get("axis", 1)
            axis = axis + len(full) if axis < 0 else axis
            return [self._time_reshape(node, inputs[0], [int(np.prod(full[:axis])), int(np.prod(full[axis:]))])]
        x = self.step(node, inputs[0])
        shape = x.train.shape
        axis = _attrs(node).get("axis", 1)
        axis = axis + len(shape) if axis < 0 else axis
        out = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
        return self.layer(node, "reshape", [x], {}, [(out, x.train.binary)])

    def op_Reshape(self, node, inputs):
        attrs = _attrs(node)
        if isinstance(inputs[0], Const):
            return [Const(inputs[0].array.reshape(self.const(node, inputs[1], "the shape")))]
        if isinstance(inputs[0], (Whole, Merged)):
            return [self._time_reshape(node, inputs[0], self.const(node, inputs[1], "the shape (input 2)"))]
        x = self.step(node, inputs[0])
        target = [int(d) for d in self.const(node, inputs[1], "the shape (input 2)").reshape(-1)]
        shape = x.train.shape
        if not attrs.get("allowzero", 0):
            target = [shape[i] if d == 0 and i < len(shape) else d for i, d in enumerate(target)]
        size = int(np.prod(shape))
        if target.count(-1) == 1:
            known = int(np.prod([d for d in target if d != -1]))
            target[target.index(-1)] = size // known if known else 0
        if int(np.prod(target)) != size or min(target, default=1) < 1:
            raise _node_error(node, f"shape mismatch: cannot reshape the per-step tensor {list(shape)} to {target}")
        if tuple(target) == shape:
            return [x]
        if tuple(target) == (1, *shape):  # s[None] as a reshape: a step ready for stacking
            return [Stacked(x.train, x.t)]
        return self.layer(node, "reshape", [x], {}, [(tuple(target), x.train.binary)])

    def _time_reshape(self, node, tag, target) -> Tag:
        """[T, B, ...] <-> [T*B, ...]: merging time into the batch, or splitting it out again."""
        T, shape = self.timesteps, tag.train.shape
        target = [int(d) for d in np.asarray(target).reshape(-1)]
        whole, merged = [T, *shape], [T * shape[0], *shape[1:]]
        known = lambda full: [full[i] if d == 0 and i < len(full) else d for i, d in enumerate(target)]
        for full, result in ((merged, Merged), (whole, Whole)):
            candidate = known(full)
            if candidate.count(-1) == 1:
                rest = int(np.prod([d for d in candidate if d != -1]))
                candidate[candidate.index(-1)] = int(np.prod(full)) // rest if rest else 0
            if candidate == full:
                return result(tag.train)
        B = shape[0]
        size = int(np.prod(shape))
        for lead, per_step_lead, result in (([T, B], [B], Whole), ([T * B], [B], Merged), ([T], [], Whole)):
            rest = target[len(lead):]
            if target[:len(lead)] != lead or rest.count(-1) > 1 or 0 in rest:
                continue
            per_step = per_step_lead + rest
            if -1 in per_step:
                known_size = int(np.prod([d for d in per_step if d != -1]))
                per_step[per_step.index(-1)] = size // known_size if known_size else 0
            if int(np.prod(per_step)) != size or per_step[0] != B:
                continue
            step = Step(tag.train, None)
            record_out = self.layer(node, "reshape", [step], {}, [(tuple(per_step), tag.train.binary)])[0]
            self.record_of(record_out.train).steps = set(range(T))
            return result(record_out.train)
        raise _node_error(
            node, f"expected a reshape between [T, B, ...] = {whole} and the time-merged [T*B, ...] = {merged}, "
            f"found target {target} for {_describe(tag)}")

    def record_of(self, train: Train) -> LayerRecord:
        return next(r for r in self.layers if any(o is train for o in r.outputs))

    def op_Slice(self, node, inputs):
        data = inputs[0]
        if isinstance(data, Stacked):  # x.unsqueeze(0)[0:1]: SpikingJelly's one-step sequence
            starts, ends = (self.const(node, inputs[i], what).reshape(-1) for i, what in ((1, "starts"), (2, "ends")))
            axes = self.const(node, inputs[3], "axes").reshape(-1) if len(inputs) > 3 and inputs[3] is not None else np.zeros(1)
            if starts.tolist() == [0] and int(ends[0]) >= 1 and axes.tolist() == [0]:
                return [data]
        if not isinstance(data, Whole):
            raise _node_error(node, f"expected Slice(x, t0, t1, axes=[0]) of a [T, B, ...] value, found {_describe(data) if data is not None else 'nothing'}")
        starts, ends = (self.const(node, inputs[i], what).reshape(-1) for i, what in ((1, "starts"), (2, "ends")))
        axes = self.const(node, inputs[3], "axes").reshape(-1) if len(inputs) > 3 and inputs[3] is not None else np.zeros(1, np.int64)
        steps = self.const(node, inputs[4], "steps").reshape(-1) if len(inputs) > 4 and inputs[4] is not None else np.ones(1, np.int64)
        T, rank = self.timesteps, len(data.train.shape) + 1
        if not (len(starts) == len(ends) == len(axes) == len(steps) == 1) or int(axes[0]) not in (0, -rank) \
                or int(steps[0]) != 1:
            raise _node_error(node, f"expected Slice(x, t0, t1, axes=[0]) picking timesteps, found starts {starts.tolist()}, "
                              f"ends {ends.tolist()}, axes {axes.tolist()}, steps {steps.tolist()}")
        # ONNX: negative indices count from the end, then both clamp to [0, T]
        t0, t1 = (min(max(int(i) + (T if int(i) < 0 else 0), 0), T) for i in (starts[0], ends[0]))
        if t1 <= t0:
            raise _node_error(node, f"Slice picks no timestep: steps {t0}..{t1 - 1} of T = {T}")
        return [self.window(data.train, t0, t1 - t0)]

    def window(self, train: Train, t0: int, nt: int) -> Tag:
        """Steps t0..t0+nt-1 of `train` stacked [nt, ...]: the whole train, one Unsqueeze'd step, or a window."""
        if (t0, nt) == (0, self.timesteps):
            return Whole(train)
        if nt == 1:
            return Stacked(train, t0)
        return Window(train, t0, nt)

    def op_Split(self, node, inputs):
        """Split along the time axis (axis 0) of a [T, ...] value: each piece is a window of steps
        (SpikingJelly 2.0 splits [T, B, ...] into T pieces, or a one-step sequence into one)."""
        attrs = _attrs(node)
        x = inputs[0]
        pieces = {Whole: lambda: (x.train, 0, self.timesteps), Stacked: lambda: (x.train, x.t, 1),
                  Window: lambda: (x.train, x.t0, x.nt)}.get(type(x))
        axis = attrs.get("axis", 0)
        train, t0, nt = pieces() if pieces is not None else (None, 0, 0)
        if train is not None and axis < 0:
            axis += len(train.shape) + 1
        if train is None or axis != 0 or t0 is None:
            raise _node_error(node, f"expected a Split along the time axis (axis 0) of a [T, ...] value, found axis "
                                    f"{attrs.get('axis', 0)} of {'nothing' if x is None else _describe(x)}")
        if len(inputs) > 1 and inputs[1] is not None:
            sizes = [int(v) for v in self.const(node, inputs[1], "split").reshape(-1)]
        elif "split" in attrs:
            sizes = list(attrs["split"])
        else:  # equal pieces, the last one smaller (opset 18 num_outputs)
            count = attrs.get("num_outputs", len(node.output))
            size = -(-nt // count) if count > 0 else 0
            sizes = [min(size, nt - k * size) for k in range(count)]
        if len(sizes) != len(node.output) or sum(sizes) != nt or min(sizes, default=0) < 1:
            raise _node_error(node, f"split sizes {sizes} do not cut the {nt} timesteps into {len(node.output)} pieces")
        starts = np.cumsum([t0] + sizes[:-1])
        return [self.window(train, int(start), size) for start, size in zip(starts, sizes)]

    def op_Squeeze(self, node, inputs):
        value = inputs[0]
        axes = self._axes(node, inputs, _attrs(node))
        if isinstance(value, Const):
            return [Const(np.squeeze(value.array, axis=axes) if axes else np.squeeze(value.array))]
        if not isinstance(value, Stacked) or tuple(axes) != (0,):
            raise _node_error(node, f"expected Squeeze(axes=[0]) of one sliced timestep, found axes {list(axes)} of "
                              f"{_describe(value) if value is not None else 'nothing'}")
        return [Step(value.train, value.t)]

    def op_Add(self, node, inputs):
        a, b = inputs
        if isinstance(a, Const) and isinstance(b, Const):
            return [Const(a.array + b.array)]
        if isinstance(a, Const) or isinstance(b, Const):
            x = self.step(node, b if isinstance(a, Const) else a)
            bias = a if isinstance(a, Const) else b
            shape = x.train.shape
            if len(shape) < 2:
                raise _node_error(node, f"expected a constant bias over [B, C, ...], found input {list(shape)}")
            vector = self._channel_vector(node, bias.array, shape)
            return self.layer(node, "bias_add", [x], {}, [(shape, False)], [bias], {"bias": vector})
        sa, sb = self.step(node, a, "input A"), self.step(node, b, "input B")
        if sa.train.shape != sb.train.shape:
            raise _node_error(node, f"shape mismatch: {list(sa.train.shape)} + {list(sb.train.shape)} (no broadcasting)")
        return self.layer(node, "add", [sa, sb], {}, [(sa.train.shape, False)])

    # ------------------------------------------------------- spike-wise OR / AND (SEW)

    def _spike_pair(self, node, inputs, form: str) -> tuple[Step, Step] | None:
        """The two operands as spike steps of one shape, or None when they are not both spikes."""
        if len(inputs) != 2 or not all(isinstance(i, Step) for i in inputs):
            return None
        a, b = inputs
        if not (a.train.binary and b.train.binary):
            return None
        if a.train.shape != b.train.shape:
            raise _node_error(node, f"shape mismatch: {form} of {list(a.train.shape)} and {list(b.train.shape)} "
                                    "(no broadcasting)")
        return a, b

    def spike_logic(self, node, inputs, logic: str, form: str) -> list[Tag]:
        pair = self._spike_pair(node, inputs, form)
        if pair is None:
            found = ", ".join("nothing" if i is None else _describe(i) for i in inputs)
            raise _node_error(node, f"expected {form} of two spike trains (spike-wise {logic.upper()}), found {found}")
        a, b = sorted(pair, key=lambda s: id(s.train))  # OR / AND commute: one layer for either order
        return self.layer(node, "spike_logic", [a, b], {"op": logic}, [(a.train.shape, True)])

    def op_Max(self, node, inputs):
        return self.spike_logic(node, inputs, "or", "Max(a, b)")

    def op_Min(self, node, inputs):
        return self.spike_logic(node, inputs, "and", "Min(a, b)")

    def op_Or(self, node, inputs):
        return self.spike_logic(node, inputs, "or", "Or(a, b)")

    def op_And(self, node, inputs):
        return self.spike_logic(node, inputs, "and", "And(a, b)")

    def op_Mul(self, node, inputs):
        return self.spike_logic(node, inputs, "and", "Mul(a, b)")

    def op_Cast(self, node, inputs):
        """A cast of spikes (to bool for Or/And, or back to float) keeps the spike train."""
        x = inputs[0]
        to = _attrs(node).get("to")
        if isinstance(x, Step) and (x.train.binary or to == onnx.TensorProto.FLOAT):
            return [x]
        raise _node_error(node, f"expected a Cast of spikes (or to float), found {'nothing' if x is None else _describe(x)}")

    def op_Sub(self, node, inputs):
        """a + b - a*b of two spike trains: spike-wise OR."""
        total, product = inputs
        records = []
        for tag in (total, product):
            record = next((r for r in self.layers if isinstance(tag, Step) and tag.train in r.outputs), None)
            records.append(record)
        add, mul = records
        if (add is not None and mul is not None and add.kind == "add" and mul.kind == "spike_logic"
                and mul.params.get("op") == "and" and {id(t) for t in add.inputs} == {id(t) for t in mul.inputs}):
            a, b = (Step(t, total.t) for t in mul.inputs)
            return self.layer(node, "spike_logic", [a, b], {"op": "or"}, [(a.train.shape, True)])
        raise _node_error(node, "expected a + b - a*b of two spike trains (spike-wise OR)")

    # ---------------------------------------------------------------------- neurons

    def neuron(self, node, spec: NeuronSpec, inputs, scan: bool) -> list[Tag]:
        current = self.step(node, inputs[0], "the current I")
        if current.train.binary:
            raise _node_error(node, f"the current I is {current.train.describe()}; expected multi-bit values")
        t = current.t
        key = ("lif", spec.key(), id(current.train))
        record = self.by_key.get(key)
        v_prev = inputs[1]
        shape = current.train.shape
        if scan:
            if not isinstance(v_prev, ScanState):
                raise _node_error(node, f"v_prev must be a Scan state, found {'nothing' if v_prev is None else _describe(v_prev)}")
        elif t == 0 or record is None:
            if not isinstance(v_prev, Const) or np.any(v_prev.array != 0):
                found = "nothing" if v_prev is None else _describe(v_prev)
                raise _node_error(node, f"v_prev at step 0 must be a zero constant, found {found}")
            try:
                np.broadcast_shapes(v_prev.array.shape, shape)
            except ValueError:
                raise _node_error(node, f"shape mismatch: zero state {list(v_prev.array.shape)} vs current {list(shape)}") from None
        elif not (isinstance(v_prev, Step) and v_prev.train is record.outputs[1] and v_prev.t == t - 1):
            found = "nothing" if v_prev is None else _describe(v_prev)
            raise _node_error(node, f"v_prev at step {t} must be this neuron layer's v_next of step {t - 1}, found {found}")
        if t not in (0, None) and record is None:
            raise _node_error(node, f"neuron call at step {t} has no step-0 call with the same current and attributes")
        if record is None:
            origin = node.name or node.output[0]
            record = LayerRecord(
                "lif", node, (current.train,),
                (Train(shape, True, origin), Train(shape, False, origin)),
                {"spec": spec},
            )
            self.by_key[key] = record
            self.layers.append(record)
        if scan:
            if record.state_index is not None and record.state_index != v_prev.index:
                raise _node_error(node, "the same neuron layer is called with two different Scan states")
            if any(r.state_index == v_prev.index and r is not record for r in self.layers[self.body_start:]):
                raise _node_error(node, f"Scan state #{v_prev.index} is used by two neuron layers")
            record.state_index = v_prev.index
        if t in record.steps:
            raise _node_error(node, f"the neuron layer of {quote(record.node.name)} is called twice at step {t}")
        record.steps.add(t)
        return [Step(record.outputs[0], t), Step(record.outputs[1], t)]



class _Scope(dict):
    """A Scan body's values; undefined names resolve to outer-scope constants."""

    def __init__(self, local: dict, outer: dict, captures: tuple = (Const,)):
        super().__init__(local)
        self.outer = outer
        self.captures = captures

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or isinstance(self.outer.get(name), self.captures)

    def __getitem__(self, name):
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        return self.outer[name]

    def get(self, name, default=None):
        return self[name] if name in self else default


def _freeze(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, NeuronSpec):
        return value.key()
    return value


# ------------------------------------------------------------------------------------------
# Building the snn module
# ------------------------------------------------------------------------------------------


def _train_type(train: Train, T: int):
    return SpikeTrainType(T, train.shape) if train.binary else TrainType(T, train.shape)


def _fuse_bias_adds(records: list[LayerRecord], output_trains: set[int]) -> list[LayerRecord]:
    """Fold Add(constant) into the preceding MatMul/Conv that has no bias yet."""
    consumers: dict[int, int] = {}
    producer: dict[int, LayerRecord] = {}
    for record in records:
        for train in record.inputs:
            consumers[id(train)] = consumers.get(id(train), 0) + 1
        for train in record.outputs:
            producer[id(train)] = record
    kept = []
    for record in records:
        if record.kind != "bias_add":
            kept.append(record)
            continue
        source = producer.get(id(record.inputs[0]))
        fusable = (
            source is not None and source.kind in ("dense", "conv2d")
            and (source.params.get("bias") is None or record.params.get("scale") is not None)
            and consumers.get(id(record.inputs[0])) == 1
            and id(record.inputs[0]) not in output_trains
        )
        if not fusable:
            raise _node_error(
                record.node, "adding a constant is only supported as the bias of the MatMul/Conv "
                "right before it (used by nothing else)",
            )
        scale = record.params.get("scale")
        if scale is not None:  # BatchNorm: W' = W * scale (per output channel), b' = b * scale + shift
            weight = source.params["weight"]
            source.params["weight"] = (weight * scale.reshape(1, -1) if source.kind == "dense"
                                       else weight * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
            if source.params.get("bias") is not None:
                record.params["bias"] = (source.params["bias"] * scale + record.params["bias"]).astype(np.float32)
        source.params["bias"] = record.params["bias"]
        source.outputs = record.outputs
    return kept


def _drop_dead_sew_parts(records: list[LayerRecord], output_trains: set[int]) -> list[LayerRecord]:
    """Drop the unused a + b and a*b layers left by an `a + b - a*b` spike-wise OR."""
    while True:
        used = set(output_trains) | {id(t) for r in records for t in r.inputs}
        dead = [r for r in records if r.kind in ("add", "spike_logic") and not any(id(t) in used for t in r.outputs)]
        if not dead:
            return records
        records = [r for r in records if r not in dead]


def _check_finite(record: LayerRecord) -> None:
    """Weights and neuron parameters must be numbers: NaN or infinity has no fixed-point form."""
    params = dict(record.params)
    spec = params.pop("spec", None)
    if spec is not None:
        params.update({name: getattr(spec, name) for name in ("threshold", "beta", "tau", "v_reset")})
    for name, value in params.items():
        if value is None or isinstance(value, (str, bool, tuple)):
            continue
        array = np.asarray(value)
        # min and max are finite exactly when every value is (NaN and infinities propagate), and
        # need no boolean array the size of the weights
        if array.dtype.kind == "f" and array.size and not (np.isfinite(array.min()) and np.isfinite(array.max())):
            index = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
            at = f" at {list(index)}" if index else ""
            raise _node_error(record.node, f"the {name} holds {array[index]}{at}; weights and neuron parameters "
                                           "must be finite")


def _emit(record: LayerRecord, operands: list[SSAValue], T: int) -> Operation:
    _check_finite(record)
    p = record.params
    source = StringAttr(record.node.name or record.node.output[0])
    results = [_train_type(t, T) for t in record.outputs]
    props: dict[str, Any] = {"source": source}
    if record.kind == "dense":
        props["weight"] = tensor_attr(p["weight"])
        if p.get("bias") is not None:
            props["bias"] = tensor_attr(p["bias"])
        return DenseOp.build(operands=operands, result_types=results, properties=props)
    if record.kind == "conv2d":
        props.update(
            weight=tensor_attr(p["weight"]), strides=int_array(p["strides"]),
            pads=int_array(p["pads"]), dilations=int_array(p["dilations"]),
        )
        if p.get("bias") is not None:
            props["bias"] = tensor_attr(p["bias"])
        return Conv2dOp.build(operands=operands, result_types=results, properties=props)
    if record.kind in ("max_pool2d", "avg_pool2d"):
        props.update(kernel=int_array(p["kernel"]), strides=int_array(p["strides"]), pads=int_array(p["pads"]))
        if record.kind == "max_pool2d":
            return MaxPool2dOp.build(operands=operands, result_types=results, properties=props)
        if p["count_include_pad"]:
            props["count_include_pad"] = UnitAttr()
        return AvgPool2dOp.build(operands=operands, result_types=results, properties=props)
    if record.kind == "reshape":
        return ReshapeOp.build(operands=operands, result_types=results, properties=props)
    if record.kind == "add":
        return AddOp.build(operands=operands, result_types=results, properties=props)
    if record.kind == "spike_logic":
        props["op"] = StringAttr(record.params["op"])
        return SpikeLogicOp.build(operands=operands, result_types=results, properties=props)
    if record.kind == "lif":
        spec: NeuronSpec = p["spec"]
        props.update(
            leak=StringAttr(spec.leak), threshold=tensor_attr(np.asarray(spec.threshold, np.float32)),
            reset=StringAttr(spec.reset), reset_timing=StringAttr(spec.reset_timing),
            compare=StringAttr(spec.compare),
        )
        for name in ("beta", "tau", "v_reset"):
            if getattr(spec, name) is not None:
                props[name] = tensor_attr(np.asarray(getattr(spec, name), np.float32))
        return LIFOp.build(operands=operands, result_types=results, properties=props)
    raise AssertionError(f"unhandled layer kind {record.kind}")


# Activations of non-spiking networks, named when a model has no neuron.
_ANN_ACTIVATIONS = {"Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Gelu", "Elu",
                    "Selu", "HardSigmoid", "HardSwish", "Softplus", "Clip", "Mish"}


def _require_neurons(model: onnx.ModelProto) -> None:
    """A model with no spiking neuron (after fusion) is not an SNN: say what it holds instead."""
    nodes = [node for graph in all_graphs(model.graph) for node in graph.node]
    if any(n.domain == FUSED_DOMAIN or (n.domain == "snn" and n.op_type in ("LIF", "IF")) for n in nodes):
        return
    counts: dict[str, int] = {}
    for n in nodes:
        if n.op_type not in ("Constant", "Identity"):
            op = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
            counts[op] = counts.get(op, 0) + 1
    found = ", ".join(f"{op} x{k}" for op, k in counts.items()) or "no operators"
    activations = [op for op in counts if op in _ANN_ACTIVATIONS]
    kind = f" (a non-spiking network: {', '.join(activations)} activations)" if activations else ""
    raise FrontendError(
        f"no spiking neuron found: the model holds {found}{kind}. snnc compiles spiking networks, whose "
        "neurons compare a membrane carried over the timesteps with a threshold (snnTorch Leaky, "
        "SpikingJelly LIF/IF nodes, snn::LIF)")


def _check_every_step(records: list[LayerRecord], T: int) -> None:
    """Neurons must run at every step (their state chains from step 0). A stateless layer
    seen at some steps only (e.g. a readout of the last step's spikes) is computed at
    every step: the steps nobody reads are dropped at the graph output."""
    for record in records:
        if None in record.steps or record.steps == set(range(T)):
            continue
        if record.kind == "lif":
            raise _node_error(
                record.node, f"the neuron layer appears at steps {sorted(record.steps)}, expected every step 0..{T - 1}",
            )
        record.steps = set(range(T))


@dataclass(frozen=True)
class _Output:
    """A graph output: `train`, whole (window None) or steps (start, count, keep_time_axis)."""

    name: str
    train: Train
    window: tuple[int, int, bool] | None = None

    def result_type(self, T: int):
        train_type = _train_type(self.train, T)
        if self.window is None:
            return train_type
        _, count, keep_time_axis = self.window
        return TimeSliceOp.result_type(train_type, count, keep_time_axis)


def _graph_output(name: str, tag: Tag | None, T: int) -> _Output:
    """What a graph output holds: a whole train, or some of its steps (the final membrane
    of a Scan/Loop, one step, a window of steps), which becomes a snn.time_slice."""
    if isinstance(tag, Whole):
        return _Output(name, tag.train)
    if isinstance(tag, Step) and tag.t is not None:
        return _Output(name, tag.train, (tag.t, 1, False))
    if isinstance(tag, Stacked) and tag.t is not None:
        return _Output(name, tag.train, (tag.t, 1, True))
    if isinstance(tag, Window):
        return _Output(name, tag.train, (tag.t0, tag.nt, True))
    if isinstance(tag, FinalState):
        return _Output(name, tag.train, (T - 1, 1, False))
    found = "nothing" if tag is None else _describe(tag)
    raise FrontendError(
        f"graph output {quote(name)}: expected a value computed from the input over time (stacked [T, ...], "
        f"one timestep, or the final state of a Scan/Loop), found {found}"
    )


def _graph_inputs(
    graph: onnx.GraphProto, interp: _Interpreter, arrays: dict[str, np.ndarray],
) -> tuple[list[tuple[str, Train]], dict[str, Tag]]:
    """`arrays`: initializer values already read, by name (others are read here)."""
    initializer_names = {init.name for init in graph.initializer}
    env: dict[str, Tag] = {}
    for init in graph.initializer:
        array = arrays.get(init.name)
        env[init.name] = Const(tensor_array(init) if array is None else array, init.name)
    inputs = []
    for value in graph.input:
        if value.name in initializer_names:
            continue
        dims = _input_dims(value)
        interp.set_timesteps(dims[0], f"graph input {quote(value.name)}")
        train = Train(tuple(dims[1:]), False, value.name)
        env[value.name] = Whole(train)
        inputs.append((value.name, train))
    if not inputs:
        raise FrontendError("the model has no graph inputs (expected a [T, B, ...] input)")
    return inputs, env


# Bound on the elements of one timestep of a graph input: the frontend probes neuron subgraphs
# on tensors of a step's size (256 Mi float32 values = 1 GiB).
MAX_STEP_ELEMENTS = 1 << 28


def _input_dims(value: onnx.ValueInfoProto) -> list[int]:
    """The static [T, B, ...] dims of a graph input; a FrontendError when they are not that."""
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if tensor.elem_type != onnx.TensorProto.FLOAT or len(dims) < 2 or None in dims or min(dims) < 1:
        kind = onnx.TensorProto.DataType.Name(tensor.elem_type) if tensor.elem_type in \
            onnx.TensorProto.DataType.values() else f"data type {tensor.elem_type}"
        found = f"{kind} {['?' if d is None else d for d in dims]}"
        raise FrontendError(
            f"graph input {quote(value.name)}: expected a float32 tensor [T, B, ...] with static dims "
            f"(time axis first), found {found}"
        )
    if dims[0] > MAX_TIMESTEPS:
        raise FrontendError(f"graph input {quote(value.name)}: T = {dims[0]} timesteps (dim 0); the accelerator "
                            f"runs at most {MAX_TIMESTEPS}")
    if math.prod(dims[1:]) > MAX_STEP_ELEMENTS:
        raise FrontendError(f"graph input {quote(value.name)}: one timestep {dims[1:]} has {math.prod(dims[1:]):,} "
                            f"elements, more than the {MAX_STEP_ELEMENTS:,} snnc handles")
    return dims


def bodyless_neurons(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The snn::LIF / snn::IF nodes with no model-local function (no body): onnxruntime
    cannot run them; snnc reads them as its canonical neuron."""
    functions = {(f.domain, f.name) for f in model.functions}
    return [node for graph in all_graphs(model.graph) for node in graph.node
            if node.domain == "snn" and node.op_type in ("LIF", "IF") and ("snn", node.op_type) not in functions]


def import_onnx(model: onnx.ModelProto | str | Path, warn: Callable[[str], None] = stderr_note) -> ModuleOp:
    """The `snn` dialect module of a canonical-form ONNX SNN (see the module docstring);
    `warn` receives notes (a body-less neuron that onnxruntime could not run)."""
    model, payloads = _load(model)
    _check_model(model)
    bodyless = bodyless_neurons(model)
    if bodyless:
        more = f" and {len(bodyless) - 1} more have" if len(bodyless) > 1 else " has"
        warn(f"note: {_node_label(bodyless[0])}{more} no function body: read as snnc's canonical neuron from its "
             "attributes (onnxruntime cannot "
             "run such a model, so `snnc verify` compares with the snn-dialect reference)")
    _run_shape_inference(model)
    model = inline_local_functions(model)
    arrays = initializer_arrays(model.graph, payloads)
    model = fuse_neurons(model, arrays, payloads)  # keeps these initializers (and may add small ones)
    graph = model.graph
    interp = _Interpreter(model)
    inputs, env = _graph_inputs(graph, interp, arrays)
    _require_neurons(model)
    interp.outer_env = env
    interp.run_graph(graph, env, scan=False)

    T = interp.timesteps
    _check_every_step(interp.layers, T)
    outputs = [_graph_output(value.name, env.get(value.name), T) for value in graph.output]
    records = _fuse_bias_adds(interp.layers, {id(out.train) for out in outputs})
    records = _drop_dead_sew_parts(records, {id(out.train) for out in outputs})

    arg_types = [_train_type(train, T) for _, train in inputs]
    result_types = [out.result_type(T) for out in outputs]
    main = func.FuncOp(
        "main", (arg_types, result_types),
        arg_attrs=ArrayAttr([DictionaryAttr({ONNX_NAME_ATTR: StringAttr(n)}) for n, _ in inputs]),
        res_attrs=ArrayAttr([DictionaryAttr({ONNX_NAME_ATTR: StringAttr(out.name)}) for out in outputs]),
    )
    block = main.body.block
    values: dict[int, SSAValue] = {id(train): arg for (_, train), arg in zip(inputs, block.args)}
    for record in records:
        op = _emit(record, [values[id(t)] for t in record.inputs], T)
        block.add_op(op)
        for train, result in zip(record.outputs, op.results):
            values[id(train)] = result
    returned = []
    for out in outputs:
        value = values[id(out.train)]
        if out.window is not None:
            start, count, keep_time_axis = out.window
            op = TimeSliceOp.create_slice(value, start, count, keep_time_axis)
            block.add_op(op)
            value = op.output
        returned.append(value)
    block.add_op(func.ReturnOp(*returned))
    module = ModuleOp([main])
    try:
        module.verify()
    except VerifyException as exc:
        raise FrontendError(f"the imported model does not verify: {str(exc).splitlines()[0]}") from None
    return module
