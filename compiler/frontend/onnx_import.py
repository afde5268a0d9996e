"""ONNX -> `snn` dialect: re-roll time and recognise neurons.

Contract
    import_onnx(model: onnx.ModelProto | str | Path) -> ModuleOp
        One `func.func @main` in the `snn` dialect. Arguments are the ONNX graph
        inputs ([T, B, ...] float32, typed `!snn.train<T, B x ...>`), results the ONNX
        graph outputs (stacked [T, ...] values), both in ONNX order and tagged with
        `snn.onnx_name`. Every layer op carries `source` = the name of the ONNX node it
        came from (in an unrolled graph, the node of step 0). The module verifies.
    Every user error raises `FrontendError` with one line naming the file or the ONNX
    node (name and op type), what was expected and what was found.

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

import hashlib
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
from snnc.compiler.frontend.inline import inline_local_functions
from snnc.compiler.frontend.neuron_fusion import (
    FOLDABLE,
    FUSED_DOMAIN,
    FUSED_OP,
    _opset,
    fold_node,
    fuse_neurons,
    initializer_arrays,
)
from snnc.compiler.frontend.onnx_loading import tensor_to_array
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
        return f"{kind} {list(self.shape)} from '{self.origin}'"


@dataclass(frozen=True, eq=False)
class Const:
    array: np.ndarray
    initializer: str | None = None  # initializer name, when it is one

    @cached_property
    def key(self) -> tuple:
        """Identity for merging per-step copies: the shared initializer, else the content."""
        if self.initializer is not None:
            return ("initializer", self.initializer)
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
class ScanState:
    index: int


@dataclass(frozen=True)
class FinalState:
    """The final membrane of a Scan (not supported as a graph output)."""

    node: str


Tag = Const | Whole | Step | Stacked | Merged | IterIndex | BufferWrite | ScanState | FinalState


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
    return f"the final state of Scan '{tag.node}'"


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
    return f"node '{name}' ({op})"


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


def _check_allowed_attrs(node: onnx.NodeProto, attrs: dict, allowed: Sequence[str]) -> None:
    for name in attrs:
        if name not in allowed:
            raise _node_error(node, f"attribute '{name}' is not supported (supported: {', '.join(allowed)})")


# ------------------------------------------------------------------------------------------
# Neuron matchers
# ------------------------------------------------------------------------------------------

CANONICAL_DEFAULTS = {"beta": 1.0, "threshold": 1.0, "reset_zero": 0}


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
    call_attrs = _attrs(node)
    _check_allowed_attrs(node, call_attrs, allowed)
    values.update(call_attrs)
    if values["reset_zero"] not in (0, 1):
        raise _node_error(node, f"reset_zero must be 0 or 1, found {values['reset_zero']}")
    if not values["threshold"] > 0:
        raise _node_error(node, f"threshold must be > 0, found {values['threshold']}")
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
            array = tensor_to_array(attr.t).astype(np.float32)
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


def _load(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise FrontendError(f"{path}: no such ONNX file")
    try:
        loaded = onnx.load(str(path))
    except Exception as exc:  # protobuf decode errors have many types
        raise FrontendError(f"{path}: not an ONNX model ({type(exc).__name__})") from None
    if not loaded.HasField("graph") or not loaded.graph.node:
        raise FrontendError(f"{path}: not an ONNX model (no graph nodes)")
    return loaded


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
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        nodes = _INFERENCE_NODE.findall(first_line)
        detail = first_line.rsplit("] ", 1)[-1].strip()
        if nodes:
            op_type, name = nodes[-1]
            raise FrontendError(f"node '{name}' ({op_type}): shape inference failed: {detail}") from None
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
                    raise _node_error(node, f"input '{name}' is not defined")
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
        if inputs and all(isinstance(i, Const) for i in inputs if i is not None) and node.op_type in FOLDABLE:
            folded = fold_node(node, [None if i is None else i.array for i in inputs], _opset(self.model))
            if folded is not None:
                return [Const(v) for v in folded]
        handler: Callable | None = getattr(self, f"op_{node.op_type}", None)
        if handler is None:
            raise _node_error(node, f"unsupported op {node.op_type}")
        if any(isinstance(i, Merged) for i in inputs) and node.op_type not in ("Reshape", "Identity"):
            return self.merged(node, handler, inputs, scan)
        if node.op_type in ("MatMul", "Add") and any(isinstance(i, Whole) for i in inputs) and not scan:
            # nn.Linear on [T, B, K] (SpikingJelly 'm'): the same layer at every step
            # (not on a graph input: a MatMul applied to the raw [T, B, K] input means the model has
            # no time axis handling, which is reported as such by the per-step handler)
            graph_inputs = {v.name for v in self.model.graph.input}
            if all(isinstance(i, Const) or (isinstance(i, Whole) and i.train.origin not in graph_inputs)
                   for i in inputs):
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
            return [Const(tensor_to_array(attrs["value"].t))]
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
        else:
            raise _node_error(node, f"expected a tensor, found {_describe(tag) if tag is not None else 'nothing'}")
        attrs = _attrs(node)
        start, end = attrs.get("start", 0), attrs.get("end", len(full))
        return [Const(np.array(full[start:end], np.int64))]

    def op_Identity(self, node, inputs):
        return [inputs[0]]

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
        if axis != 0 or not all(isinstance(i, Stacked) for i in inputs):
            found = ", ".join(_describe(i) for i in inputs[:3])
            raise _node_error(node, f"expected Concat(axis=0) of Unsqueeze'd timesteps 0..T-1, found axis {axis} and {found}")
        train = inputs[0].train
        times = [i.t for i in inputs]
        if any(i.train is not train for i in inputs) or times != list(range(self.timesteps)):
            raise _node_error(
                node, f"expected timesteps 0..{self.timesteps - 1} of one value in order, found steps {times}"
                + ("" if all(i.train is train for i in inputs) else " of different values"),
            )
        return [Whole(train)]

    def op_ScatterND(self, node, inputs):
        """ScatterND(buf, [[i]], s[None]) in a Loop body: step i of a time train into a loop-carried buffer."""
        attrs = _attrs(node)
        _check_allowed_attrs(node, attrs, ("reduction",))
        if attrs.get("reduction", b"none") not in (b"none", "none"):
            raise _node_error(node, f"expected reduction 'none', found {attrs['reduction']!r}")
        data, indices, updates = inputs
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
            env[body.input[2 + i].name] = ScanState(i)
        scope = _Scope(env, self.outer_env, captures=(Const, Whole))
        before = len(self.layers)
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
            results.append(FinalState(node.name))
        for out in body.output[1 + num_state:]:
            tag = scope.get(out.name)
            if not isinstance(tag, Step):
                raise _node_error(node, f"scan output '{out.name}' must be a per-step value, found "
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
            env[body.input[i].name] = ScanState(i)
        for j, tag in enumerate(inputs[num_state:]):
            if not isinstance(tag, Whole):
                raise _node_error(node, f"scan input #{j} must be a [T, B, ...] graph input, found {_describe(tag)}")
            env[body.input[num_state + j].name] = Step(tag.train, None)
        # Names the body does not define are captures from the outer scope (constants).
        scope = _Scope(env, self.outer_env)
        before = len(self.layers)
        self.run_graph(body, scope, scan=True)
        neurons = {r.state_index: r for r in self.layers[before:] if r.kind == "lif"}
        for i in range(num_state):
            record = neurons.get(i)
            out = scope.get(body.output[i].name)
            if record is None:
                raise _node_error(node, f"state #{i} is not the v_prev of a neuron call in the body")
            if not (isinstance(out, Step) and out.train is record.outputs[1]):
                raise _node_error(
                    node, f"state output #{i} must be the v_next of neuron '{record.node.name}', "
                    f"found {'nothing' if out is None else _describe(out)}",
                )
        results: list[Tag] = [FinalState(node.name) for _ in range(num_state)]
        for k, out in enumerate(body.output[num_state:]):
            tag = scope.get(out.name)
            if not isinstance(tag, Step):
                raise _node_error(node, f"scan output '{out.name}' must be a per-step value, found {'nothing' if tag is None else _describe(tag)}")
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
            raise _node_error(node, f"expected Slice(x, t, t+1, axes=[0]) of a [T, B, ...] value, found {_describe(data) if data is not None else 'nothing'}")
        starts, ends = (self.const(node, inputs[i], what).reshape(-1) for i, what in ((1, "starts"), (2, "ends")))
        axes = self.const(node, inputs[3], "axes").reshape(-1) if len(inputs) > 3 and inputs[3] is not None else np.zeros(1, np.int64)
        steps = self.const(node, inputs[4], "steps").reshape(-1) if len(inputs) > 4 and inputs[4] is not None else np.ones(1, np.int64)
        T = self.timesteps
        t = int(starts[0]) + (T if int(starts[0]) < 0 else 0) if len(starts) == 1 else -1
        if len(starts) != 1 or int(axes[0]) != 0 or int(steps[0]) != 1 or not 0 <= t < T or int(ends[0]) != t + 1:
            raise _node_error(node, f"expected Slice(x, t, t+1, axes=[0]) picking one timestep, found starts {starts.tolist()}, "
                              f"ends {ends.tolist()}, axes {axes.tolist()}")
        return [Stacked(data.train, t)]

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
            if any(r.state_index == v_prev.index and r is not record for r in self.layers):
                raise _node_error(node, f"Scan state #{v_prev.index} is used by two neuron layers")
            record.state_index = v_prev.index
        if t in record.steps:
            raise _node_error(node, f"the neuron layer of '{record.node.name}' is called twice at step {t}")
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


def _emit(record: LayerRecord, operands: list[SSAValue], T: int) -> Operation:
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


def _graph_inputs(
    graph: onnx.GraphProto, interp: _Interpreter, arrays: dict[str, np.ndarray],
) -> tuple[list[tuple[str, Train]], dict[str, Tag]]:
    """`arrays`: initializer values already read, by name (others are read here)."""
    initializer_names = {init.name for init in graph.initializer}
    env: dict[str, Tag] = {}
    for init in graph.initializer:
        array = arrays.get(init.name)
        env[init.name] = Const(tensor_to_array(init) if array is None else array, init.name)
    inputs = []
    for value in graph.input:
        if value.name in initializer_names:
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if tensor.elem_type != onnx.TensorProto.FLOAT or len(dims) < 2 or None in dims or min(dims) < 1:
            found = f"{onnx.TensorProto.DataType.Name(tensor.elem_type)} {['?' if d is None else d for d in dims]}"
            raise FrontendError(
                f"graph input '{value.name}': expected a float32 tensor [T, B, ...] with static dims "
                f"(time axis first), found {found}"
            )
        interp.set_timesteps(dims[0], f"graph input '{value.name}'")
        train = Train(tuple(dims[1:]), False, value.name)
        env[value.name] = Whole(train)
        inputs.append((value.name, train))
    if not inputs:
        raise FrontendError("the model has no graph inputs (expected a [T, B, ...] input)")
    return inputs, env


def import_onnx(model: onnx.ModelProto | str | Path) -> ModuleOp:
    """The `snn` dialect module of a canonical-form ONNX SNN (see the module docstring)."""
    model = _load(model)
    _run_shape_inference(model)
    model = inline_local_functions(model)
    arrays = initializer_arrays(model.graph)
    model = fuse_neurons(model, arrays)  # keeps these initializers (and may add small ones)
    graph = model.graph
    interp = _Interpreter(model)
    inputs, env = _graph_inputs(graph, interp, arrays)
    interp.outer_env = env
    interp.run_graph(graph, env, scan=False)

    T = interp.timesteps
    for record in interp.layers:
        if None not in record.steps and record.steps != set(range(T)):
            raise _node_error(
                record.node, f"the layer appears at steps {sorted(record.steps)}, expected every step 0..{T - 1}",
            )
    outputs: list[tuple[str, Train]] = []
    for value in graph.output:
        tag = env.get(value.name)
        if not isinstance(tag, Whole):
            found = "nothing" if tag is None else _describe(tag)
            raise FrontendError(
                f"graph output '{value.name}': expected a value stacked over time [T, ...] "
                f"(Unsqueeze+Concat or a Scan output), found {found}"
            )
        outputs.append((value.name, tag.train))
    records = _fuse_bias_adds(interp.layers, {id(train) for _, train in outputs})
    records = _drop_dead_sew_parts(records, {id(train) for _, train in outputs})

    arg_types = [_train_type(train, T) for _, train in inputs]
    main = func.FuncOp(
        "main", (arg_types, [_train_type(train, T) for _, train in outputs]),
        arg_attrs=ArrayAttr([DictionaryAttr({ONNX_NAME_ATTR: StringAttr(n)}) for n, _ in inputs]),
        res_attrs=ArrayAttr([DictionaryAttr({ONNX_NAME_ATTR: StringAttr(n)}) for n, _ in outputs]),
    )
    block = main.body.block
    values: dict[int, SSAValue] = {id(train): arg for (_, train), arg in zip(inputs, block.args)}
    for record in records:
        op = _emit(record, [values[id(t)] for t in record.inputs], T)
        block.add_op(op)
        for train, result in zip(record.outputs, op.results):
            values[id(train)] = result
    block.add_op(func.ReturnOp(*[values[id(train)] for _, train in outputs]))
    module = ModuleOp([main])
    try:
        module.verify()
    except VerifyException as exc:
        raise FrontendError(f"the imported model does not verify: {str(exc).splitlines()[0]}") from None
    return module
