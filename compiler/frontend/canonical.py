"""Build canonical-form ONNX spiking networks with onnx.helper (no torch).

The canonical form is the ONNX encoding snnc defines for itself (zoo, tests); the
frontend (`onnx_import.py`) reads it back into the `snn` dialect.

Neurons are model-local functions in domain `snn` (opset import `snn` version 1):

    LIF(I, v_prev) -> (spike, v_next)
        attributes  beta: float = 1.0, threshold: float = 1.0,
                    reset_zero: int = 0 (0 = subtract reset, 1 = reset to zero)
        body        v      = beta * v_prev + I
                    spike  = Cast<float>(v >= threshold)
                    r      = Cast<float>(reset_zero)
                    v_next = v - spike * ((1 - r) * threshold + r * v)
    IF(I, v_prev) -> (spike, v_next)      the same without leak: v = v_prev + I
                    (attributes threshold, reset_zero)

The body reads its attributes through `Constant(value_float/value_int <- ref_attr_name)`
and the defaults live in the function's `attribute_proto`; a call node omits an
attribute whose value is the default. In the `snn` dialect this is `snn.lif` with
leak "beta" (LIF) or "none" (IF), compare "ge", reset "subtract"/"zero",
reset_timing "same".

Time. The graph input is `[T, B, ...]` float32. Two encodings of time:
  * unrolled: per step t, `Gather(x, t, axis=0)` gives `[B, ...]`; every layer is
    repeated T times (the copies share one set of initializers); the neuron state
    chains v_prev(t) = v_next(t-1) starting from a zero initializer; each graph
    output is stacked with `Unsqueeze(axes=[0])` + `Concat(axis=0)`.
  * scan: one `Scan` over axis 0 of the inputs; state = the membranes of every
    neuron layer (initial value: zero initializers), scan inputs = the graph inputs,
    weights captured from the outer scope, scan outputs = the stacked graph outputs.

Node names. In the unrolled form the step-0 node of a layer carries the layer name
(`fc1`) and the copies are `fc1.t1`, `fc1.t2`, ...; in the Scan body the nodes carry
the layer names. So the importer's `source` property is the layer name in both forms.

Models use opset 17 and IR version 10 (onnxruntime 1.31 reads IR version <= 13).

API
    net = Network(timesteps=4)
    x = net.input("x", (1, 64))                       # per-step shape [B, ...]
    h = net.dense(x, weight_kn, bias, name="fc1")     # weight is [K, N]
    s, v = net.lif(h, beta=0.5, threshold=1.0, name="lif1")
    z = net.spike_or(s1, s2)                          # SEW-OR residual: ONNX Max
    net.output(s, "spikes"); net.output(v, "membrane")
    net.final_output(v, "v_final")                    # the membrane after the last step, [B, ...]
    model = net.to_onnx(form="unrolled")              # or form="scan"
    traces = net.evaluate({"x": x_array})            # numpy reference, keyed by Value
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from snnc.dialects import snn_interpreter as ref
from snnc.dialects.snn import conv_output_hw

OPSET = 17
IR_VERSION = 10
NEURON_DOMAIN = "snn"
NEURON_DEFAULTS = {"beta": 1.0, "threshold": 1.0, "reset_zero": 0}
RESET_CODES = {"subtract": 0, "zero": 1}
FORMS = ("unrolled", "scan")
DENSE_STYLES = ("gemm", "gemm_kn", "matmul")


@dataclass(frozen=True, eq=False)
class Value:
    """A per-step tensor of the network ([B, ...]); `binary` marks spike values."""

    name: str
    shape: tuple[int, ...]
    binary: bool = False


@dataclass(eq=False)
class Layer:
    """One recorded layer: kind, name, input/output values and its parameters."""

    kind: str
    name: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    params: dict[str, Any] = field(default_factory=dict)


def _f32(array) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(array, dtype=np.float32))


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    a, b = value
    return (int(a), int(b))


def _pads4(value: int | Sequence[int]) -> tuple[int, int, int, int]:
    if isinstance(value, int):
        return (value,) * 4
    values = tuple(int(v) for v in value)
    if len(values) == 2:
        return (values[0], values[1], values[0], values[1])
    if len(values) != 4:
        raise ValueError(f"pads need 1, 2 or 4 values, got {values}")
    return values  # type: ignore[return-value]


class Network:
    """A small graph builder for canonical SNNs; see the module docstring."""

    def __init__(self, timesteps: int, name: str = "snn"):
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.timesteps = timesteps
        self.name = name
        self.inputs: list[Value] = []
        self.layers: list[Layer] = []
        self.outputs: list[tuple[Value, str]] = []
        self.final_outputs: list[tuple[Value, str]] = []  # membranes after the last step
        self._names: set[str] = set()
        self._evaluated: dict[Value, np.ndarray] = {}
        self._evaluated_inputs: dict[str, np.ndarray] | None = None

    # ----------------------------------------------------------------- building

    def _fresh(self, name: str | None, kind: str) -> str:
        if name is None:
            index = sum(1 for layer in self.layers if layer.kind == kind) + 1
            name = f"{kind}{index}"
            while name in self._names:
                index += 1
                name = f"{kind}{index}"
        if name in self._names:
            raise ValueError(f"name {name!r} is already used in this network")
        self._names.add(name)
        return name

    def _add(self, kind, name, inputs, out_shapes, binary=False, **params) -> Layer:
        name = self._fresh(name, kind)
        outs = tuple(
            Value(f"{name}.{suffix}", tuple(int(d) for d in shape), bin_)
            for suffix, shape, bin_ in out_shapes
        )
        layer = Layer(kind, name, tuple(inputs), outs, params)
        self.layers.append(layer)
        return layer

    def input(self, name: str, shape: Sequence[int]) -> Value:
        """A graph input; `shape` is the per-step shape [B, ...] (ONNX: [T, B, ...])."""
        if name in self._names:
            raise ValueError(f"name {name!r} is already used in this network")
        self._names.add(name)
        value = Value(name, tuple(int(d) for d in shape))
        self.inputs.append(value)
        return value

    def dense(
        self, x: Value, weight, bias=None, *, name: str | None = None, style: str = "gemm"
    ) -> Value:
        """y = x @ weight + bias with weight [K, N]. style: "gemm" (Gemm, transB=1,
        PyTorch layout), "gemm_kn" (Gemm, transB=0) or "matmul" (MatMul + Add)."""
        weight = _f32(weight)
        if style not in DENSE_STYLES:
            raise ValueError(f"dense style must be one of {DENSE_STYLES}, got {style!r}")
        if len(x.shape) != 2 or weight.ndim != 2 or weight.shape[0] != x.shape[1]:
            raise ValueError(f"dense: input {x.shape} does not match weight {weight.shape}")
        if bias is not None:
            bias = _f32(bias).reshape(weight.shape[1])
        layer = self._add(
            "dense", name, [x], [("out", (x.shape[0], weight.shape[1]), False)],
            weight=weight, bias=bias, style=style,
        )
        return layer.outputs[0]

    def conv2d(
        self, x: Value, weight, bias=None, *, strides: int | Sequence[int] = 1,
        pads: int | Sequence[int] = 0, dilations: int | Sequence[int] = 1,
        name: str | None = None,
    ) -> Value:
        """NCHW convolution, weight [Cout, Cin, kh, kw], pads [top, left, bottom, right]."""
        weight = _f32(weight)
        if len(x.shape) != 4 or weight.ndim != 4 or weight.shape[1] != x.shape[1]:
            raise ValueError(f"conv2d: input {x.shape} does not match weight {weight.shape}")
        strides, dilations, pads = _pair(strides), _pair(dilations), _pads4(pads)
        out_hw = conv_output_hw(x.shape[2:], weight.shape[2:], strides, pads, dilations)
        layer = self._add(
            "conv2d", name, [x], [("out", (x.shape[0], weight.shape[0], *out_hw), False)],
            weight=weight, bias=None if bias is None else _f32(bias).reshape(weight.shape[0]),
            strides=strides, pads=pads, dilations=dilations,
        )
        return layer.outputs[0]

    def _pool(self, kind, x, kernel, strides, pads, name, binary, **extra) -> Value:
        if len(x.shape) != 4:
            raise ValueError(f"{kind}: expects an NCHW input, got {x.shape}")
        kernel = _pair(kernel)
        strides = kernel if strides is None else _pair(strides)
        pads = _pads4(pads)
        out_hw = conv_output_hw(x.shape[2:], kernel, strides, pads)
        layer = self._add(
            kind, name, [x], [("out", (x.shape[0], x.shape[1], *out_hw), binary)],
            kernel=kernel, strides=strides, pads=pads, **extra,
        )
        return layer.outputs[0]

    def max_pool2d(self, x: Value, kernel, *, strides=None, pads=0, name=None) -> Value:
        return self._pool("max_pool2d", x, kernel, strides, pads, name, x.binary)

    def avg_pool2d(
        self, x: Value, kernel, *, strides=None, pads=0, count_include_pad: bool = False,
        name=None,
    ) -> Value:
        return self._pool(
            "avg_pool2d", x, kernel, strides, pads, name, False,
            count_include_pad=count_include_pad,
        )

    def flatten(self, x: Value, *, axis: int = 1, name: str | None = None) -> Value:
        """ONNX Flatten of the per-step tensor (axis 1 keeps the batch)."""
        shape = (int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))
        return self._add("flatten", name, [x], [("out", shape, x.binary)], axis=axis).outputs[0]

    def reshape(self, x: Value, shape: Sequence[int], *, name: str | None = None) -> Value:
        """ONNX Reshape of the per-step tensor to an explicit per-step shape."""
        shape = tuple(int(d) for d in shape)
        if int(np.prod(shape)) != int(np.prod(x.shape)):
            raise ValueError(f"reshape: cannot reshape {x.shape} to {shape}")
        return self._add("reshape", name, [x], [("out", shape, x.binary)], shape=shape).outputs[0]

    def add(self, a: Value, b: Value, *, name: str | None = None) -> Value:
        """Elementwise add of two per-step values (residual connection)."""
        if a.shape != b.shape:
            raise ValueError(f"add: shapes differ: {a.shape} vs {b.shape}")
        return self._add("add", name, [a, b], [("out", a.shape, False)]).outputs[0]

    def spike_or(self, a: Value, b: Value, *, name: str | None = None) -> Value:
        """Elementwise OR of two spike values, as ONNX `Max(a, b)` (SEW-OR residual)."""
        if a.shape != b.shape:
            raise ValueError(f"spike_or: shapes differ: {a.shape} vs {b.shape}")
        return self._add("max", name, [a, b], [("out", a.shape, a.binary and b.binary)]).outputs[0]

    def shift_bias(self, current: Value, delta: float) -> None:
        """Add `delta` to every element of `current` by changing a producing synapse's bias.

        `current` must come from a dense/conv2d layer or from an `add` with such an
        operand (a residual). The cached reference traces from that layer on are dropped.
        """
        if delta == 0:
            return
        layer = self._producer(current)
        if layer is not None and layer.kind == "add":
            layer = next(
                (p for p in map(self._producer, layer.inputs)
                 if p is not None and p.kind in ("dense", "conv2d")), None)
        if layer is None or layer.kind not in ("dense", "conv2d"):
            raise ValueError(f"shift_bias: {current.name} is not produced by a synapse")
        channels = layer.outputs[0].shape[1]
        bias = layer.params["bias"]
        bias = np.zeros(channels, np.float32) if bias is None else bias
        layer.params["bias"] = _f32(bias.astype(np.float64) + delta)
        start = self.layers.index(layer)
        for later in self.layers[start:]:
            for out in later.outputs:
                self._evaluated.pop(out, None)

    def _producer(self, value: Value) -> Layer | None:
        for layer in reversed(self.layers):
            if value in layer.outputs:
                return layer
        return None

    def lif(
        self, current: Value, *, beta: float = 1.0, threshold: float = 1.0,
        reset: str = "subtract", name: str | None = None,
    ) -> tuple[Value, Value]:
        """A layer of LIF neurons; returns (spikes, membranes after reset)."""
        return self._neuron("LIF", current, beta, threshold, reset, name)

    def if_neuron(
        self, current: Value, *, threshold: float = 1.0, reset: str = "subtract",
        name: str | None = None,
    ) -> tuple[Value, Value]:
        """A layer of IF neurons (no leak); returns (spikes, membranes after reset)."""
        return self._neuron("IF", current, None, threshold, reset, name)

    def _neuron(self, function, current, beta, threshold, reset, name):
        if reset not in RESET_CODES:
            raise ValueError(f"reset must be one of {tuple(RESET_CODES)}, got {reset!r}")
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        layer = self._add(
            "lif" if function == "LIF" else "if", name, [current],
            [("spikes", current.shape, True), ("membrane", current.shape, False)],
            function=function, beta=beta, threshold=float(threshold), reset=reset,
        )
        return layer.outputs[0], layer.outputs[1]

    def output(self, value: Value, name: str) -> None:
        """Expose `value` stacked over time as graph output `name` ([T, ...])."""
        if name in self._names:
            raise ValueError(f"name {name!r} is already used in this network")
        self._names.add(name)
        self.outputs.append((value, name))

    def final_output(self, membrane: Value, name: str) -> None:
        """Expose a neuron layer's membrane after the last step as graph output `name`
        ([B, ...], no time axis): in the unrolled form the last step's v_next, in the
        Scan form the Scan's final state."""
        if not any(layer.kind in ("lif", "if") and layer.outputs[1] is membrane for layer in self.layers):
            raise ValueError(f"final_output: {membrane.name} is not the membrane of a neuron layer")
        if name in self._names:
            raise ValueError(f"name {name!r} is already used in this network")
        self._names.add(name)
        self.final_outputs.append((membrane, name))

    # ------------------------------------------------------------- numpy reference

    def evaluate(self, inputs: Mapping[str, np.ndarray]) -> dict[Value, np.ndarray]:
        """Every value of the network as a [T, ...] float32 array (snn reference kernels).

        Results are cached for the same input arrays, so calling it after each added
        layer (threshold calibration) only computes the new layers.
        """
        if self._evaluated_inputs is None or any(
            self._evaluated_inputs.get(k) is not v for k, v in inputs.items()
        ):
            self._evaluated = {}
            self._evaluated_inputs = dict(inputs)
            for value in self.inputs:
                self._evaluated[value] = _f32(inputs[value.name])
        values = self._evaluated
        for layer in self.layers:
            if layer.outputs[0] in values:
                continue
            for out, array in zip(layer.outputs, _evaluate_layer(layer, values)):
                values[out] = array
        return values

    # --------------------------------------------------------------------- export

    def to_onnx(self, form: str = "unrolled") -> onnx.ModelProto:
        """The canonical ONNX model, time unrolled or wrapped in a Scan."""
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        if not self.outputs and not self.final_outputs:
            raise ValueError("the network has no outputs")
        initializers: list[TensorProto] = []
        for layer in self.layers:
            initializers.extend(_layer_initializers(layer))
        neurons = [layer for layer in self.layers if layer.kind in ("lif", "if")]
        for layer in neurons:
            initializers.append(
                numpy_helper.from_array(np.zeros(layer.inputs[0].shape, np.float32), f"{layer.name}.v0")
            )
        T = self.timesteps
        graph_inputs = [
            helper.make_tensor_value_info(v.name, TensorProto.FLOAT, (T, *v.shape))
            for v in self.inputs
        ]
        graph_outputs = [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, (T, *value.shape))
            for value, name in self.outputs
        ] + [helper.make_tensor_value_info(name, TensorProto.FLOAT, value.shape) for value, name in self.final_outputs]
        if form == "unrolled":
            nodes = self._unrolled_nodes(initializers)
        else:
            nodes = self._scan_nodes(neurons)
        graph = helper.make_graph(nodes, self.name, graph_inputs, graph_outputs, initializers)
        used = {layer.params["function"] for layer in neurons}
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(NEURON_DOMAIN, 1)],
            functions=[neuron_function(f) for f in ("LIF", "IF") if f in used],
            producer_name="snnc.canonical",
        )
        model.ir_version = IR_VERSION
        return model

    def _unrolled_nodes(self, initializers: list[TensorProto]) -> list[onnx.NodeProto]:
        T = self.timesteps
        for t in range(T):
            initializers.append(numpy_helper.from_array(np.array(t, np.int64), f"step{t}"))
        initializers.append(numpy_helper.from_array(np.array([0], np.int64), "time_axis"))
        nodes = []
        step_names: list[dict[Value, str]] = []
        for t in range(T):
            names: dict[Value, str] = {}
            for value in self.inputs:
                names[value] = f"{value.name}.t{t}"
                nodes.append(helper.make_node(
                    "Gather", [value.name, f"step{t}"], [names[value]],
                    name=f"gather.{value.name}.t{t}", axis=0,
                ))
            for layer in self.layers:
                if layer.kind in ("lif", "if"):
                    v_prev = f"{layer.name}.v0" if t == 0 else step_names[t - 1][layer.outputs[1]]
                else:
                    v_prev = None
                suffix = "" if t == 0 else f".t{t}"
                nodes.extend(_layer_nodes(layer, names, suffix, v_prev))
            step_names.append(names)
        for value, out_name in self.outputs:
            pieces = []
            for t in range(T):
                pieces.append(f"{out_name}.u{t}")
                nodes.append(helper.make_node(
                    "Unsqueeze", [step_names[t][value], "time_axis"], [pieces[-1]],
                    name=f"{out_name}.unsqueeze.t{t}",
                ))
            nodes.append(helper.make_node(
                "Concat", pieces, [out_name], name=f"{out_name}.stack", axis=0,
            ))
        for value, out_name in self.final_outputs:
            nodes.append(helper.make_node("Identity", [step_names[T - 1][value]], [out_name], name=out_name))
        return nodes

    def _scan_nodes(self, neurons: list[Layer]) -> list[onnx.NodeProto]:
        names: dict[Value, str] = {value: f"{value.name}.step" for value in self.inputs}
        body_nodes = []
        for layer in self.layers:
            v_prev = f"{layer.name}.v_prev" if layer.kind in ("lif", "if") else None
            body_nodes.extend(_layer_nodes(layer, names, "", v_prev))
        for value, out_name in self.outputs:
            body_nodes.append(helper.make_node(
                "Identity", [names[value]], [f"{out_name}.step"], name=f"{out_name}.step",
            ))

        def info(name, shape):
            return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

        body = helper.make_graph(
            body_nodes, f"{self.name}_step",
            [info(f"{n.name}.v_prev", n.inputs[0].shape) for n in neurons]
            + [info(names[v], v.shape) for v in self.inputs],
            [info(names[n.outputs[1]], n.inputs[0].shape) for n in neurons]
            + [info(f"{out_name}.step", value.shape) for value, out_name in self.outputs],
        )
        scan = helper.make_node(
            "Scan",
            [f"{n.name}.v0" for n in neurons] + [v.name for v in self.inputs],
            [self._final_name(n) for n in neurons] + [name for _, name in self.outputs],
            name="time_scan", body=body, num_scan_inputs=len(self.inputs),
        )
        return [scan]

    def _final_name(self, neuron: Layer) -> str:
        """The Scan output of `neuron`'s final state: a graph output's name, if it is one."""
        return next((name for value, name in self.final_outputs if value is neuron.outputs[1]),
                    f"{neuron.name}.v_final")


# ------------------------------------------------------------------------------------------
# ONNX pieces
# ------------------------------------------------------------------------------------------


def _ref_constant(output: str, attr_name: str, attr_type) -> onnx.NodeProto:
    node = helper.make_node("Constant", [], [output])
    ref_attr = onnx.AttributeProto()
    ref_attr.name = "value_int" if attr_type == onnx.AttributeProto.INT else "value_float"
    ref_attr.ref_attr_name = attr_name
    ref_attr.type = attr_type
    node.attribute.append(ref_attr)
    return node


def neuron_function(kind: str) -> onnx.FunctionProto:
    """The `snn::LIF` or `snn::IF` model-local function (see the module docstring)."""
    FLOAT, INT = onnx.AttributeProto.FLOAT, onnx.AttributeProto.INT
    nodes = [
        _ref_constant("threshold", "threshold", FLOAT),
        _ref_constant("reset_zero", "reset_zero", INT),
        helper.make_node("Cast", ["reset_zero"], ["r"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["one"], value_float=1.0),
    ]
    if kind == "LIF":
        nodes += [
            _ref_constant("beta", "beta", FLOAT),
            helper.make_node("Mul", ["beta", "v_prev"], ["decayed"]),
            helper.make_node("Add", ["decayed", "I"], ["v"]),
        ]
        attrs = ["beta", "threshold", "reset_zero"]
    elif kind == "IF":
        nodes.append(helper.make_node("Add", ["v_prev", "I"], ["v"]))
        attrs = ["threshold", "reset_zero"]
    else:
        raise ValueError(f"unknown neuron function {kind!r}")
    nodes += [
        helper.make_node("GreaterOrEqual", ["v", "threshold"], ["fired"]),
        helper.make_node("Cast", ["fired"], ["spike"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "r"], ["keep"]),
        helper.make_node("Mul", ["keep", "threshold"], ["subtract_amount"]),
        helper.make_node("Mul", ["r", "v"], ["zero_amount"]),
        helper.make_node("Add", ["subtract_amount", "zero_amount"], ["reset_amount"]),
        helper.make_node("Mul", ["spike", "reset_amount"], ["reset"]),
        helper.make_node("Sub", ["v", "reset"], ["v_next"]),
    ]
    return helper.make_function(
        NEURON_DOMAIN, kind, ["I", "v_prev"], ["spike", "v_next"], nodes,
        [helper.make_opsetid("", OPSET)],
        attribute_protos=[helper.make_attribute(a, NEURON_DEFAULTS[a]) for a in attrs],
    )


def _layer_initializers(layer: Layer) -> list[TensorProto]:
    p, name = layer.params, layer.name
    tensors = []
    if layer.kind == "dense":
        weight = p["weight"].T if p["style"] == "gemm" else p["weight"]
        tensors.append(numpy_helper.from_array(_f32(weight), f"{name}.weight"))
    elif layer.kind == "conv2d":
        tensors.append(numpy_helper.from_array(p["weight"], f"{name}.weight"))
    elif layer.kind == "reshape":
        tensors.append(numpy_helper.from_array(np.array(p["shape"], np.int64), f"{name}.shape"))
    if p.get("bias") is not None:
        tensors.append(numpy_helper.from_array(p["bias"], f"{name}.bias"))
    return tensors


def _layer_nodes(
    layer: Layer, names: dict[Value, str], suffix: str, v_prev: str | None
) -> list[onnx.NodeProto]:
    """The nodes of one step of `layer`; records its output names in `names`."""
    p, name = layer.params, layer.name
    node_name = name + suffix
    ins = [names[v] for v in layer.inputs]
    outs = [f"{v.name}{suffix or '.t0'}" for v in layer.outputs]
    for value, out in zip(layer.outputs, outs):
        names[value] = out
    bias = [f"{name}.bias"] if p.get("bias") is not None else []
    if layer.kind == "dense":
        if p["style"] == "matmul":
            if not bias:
                return [helper.make_node("MatMul", [ins[0], f"{name}.weight"], outs, name=node_name)]
            product = f"{name}.product{suffix or '.t0'}"
            return [
                helper.make_node("MatMul", [ins[0], f"{name}.weight"], [product], name=node_name),
                helper.make_node("Add", [product, bias[0]], outs, name=f"{name}.bias_add{suffix}"),
            ]
        return [helper.make_node(
            "Gemm", [ins[0], f"{name}.weight", *bias], outs, name=node_name,
            transB=1 if p["style"] == "gemm" else 0,
        )]
    if layer.kind == "conv2d":
        kernel = list(p["weight"].shape[2:])
        return [helper.make_node(
            "Conv", [ins[0], f"{name}.weight", *bias], outs, name=node_name,
            kernel_shape=kernel, strides=list(p["strides"]), pads=list(p["pads"]),
            dilations=list(p["dilations"]),
        )]
    if layer.kind == "max_pool2d":
        return [helper.make_node(
            "MaxPool", ins, outs, name=node_name, kernel_shape=list(p["kernel"]),
            strides=list(p["strides"]), pads=list(p["pads"]),
        )]
    if layer.kind == "avg_pool2d":
        return [helper.make_node(
            "AveragePool", ins, outs, name=node_name, kernel_shape=list(p["kernel"]),
            strides=list(p["strides"]), pads=list(p["pads"]),
            count_include_pad=int(p["count_include_pad"]),
        )]
    if layer.kind == "flatten":
        return [helper.make_node("Flatten", ins, outs, name=node_name, axis=p["axis"])]
    if layer.kind == "reshape":
        return [helper.make_node("Reshape", [ins[0], f"{name}.shape"], outs, name=node_name)]
    if layer.kind == "add":
        return [helper.make_node("Add", ins, outs, name=node_name)]
    if layer.kind == "max":
        return [helper.make_node("Max", ins, outs, name=node_name)]
    if layer.kind in ("lif", "if"):
        attrs: dict[str, Any] = {}
        if p["beta"] is not None and p["beta"] != NEURON_DEFAULTS["beta"]:
            attrs["beta"] = float(p["beta"])
        if p["threshold"] != NEURON_DEFAULTS["threshold"]:
            attrs["threshold"] = float(p["threshold"])
        if RESET_CODES[p["reset"]] != NEURON_DEFAULTS["reset_zero"]:
            attrs["reset_zero"] = RESET_CODES[p["reset"]]
        return [helper.make_node(
            p["function"], [ins[0], v_prev], outs, name=node_name, domain=NEURON_DOMAIN, **attrs,
        )]
    raise ValueError(f"unknown layer kind {layer.kind!r}")


def _evaluate_layer(layer: Layer, values: dict[Value, np.ndarray]) -> list[np.ndarray]:
    p = layer.params
    x = values[layer.inputs[0]]
    T = x.shape[0]
    if layer.kind == "dense":
        return [ref.dense_forward(x, p["weight"], p["bias"])]
    if layer.kind == "conv2d":
        return [ref.conv2d_forward(x, p["weight"], p["bias"], p["strides"], p["pads"], p["dilations"])]
    if layer.kind == "max_pool2d":
        return [ref.max_pool2d_forward(x, p["kernel"], p["strides"], p["pads"])]
    if layer.kind == "avg_pool2d":
        return [ref.avg_pool2d_forward(x, p["kernel"], p["strides"], p["pads"], p["count_include_pad"])]
    if layer.kind in ("flatten", "reshape"):
        return [x.reshape((T, *layer.outputs[0].shape))]
    if layer.kind == "add":
        return [(x + values[layer.inputs[1]]).astype(np.float32)]
    if layer.kind == "max":
        return [np.maximum(x, values[layer.inputs[1]])]
    if layer.kind in ("lif", "if"):
        spikes, membranes = ref.lif_forward(
            x, leak="beta" if layer.kind == "lif" else "none",
            beta=p["beta"], threshold=p["threshold"], reset=p["reset"],
        )
        return [spikes, membranes]
    raise ValueError(f"unknown layer kind {layer.kind!r}")
