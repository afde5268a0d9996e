"""Recognise exporter-written spiking neurons and fuse them into `snnc.fused::Neuron` calls.

Contract
    fuse_neurons(model: onnx.ModelProto, arrays=None, payloads=None) -> onnx.ModelProto
        A copy of `model` in which every unrolled elementwise neuron subgraph is
        replaced by one `snnc.fused::Neuron(I_t, v_{t-1}) -> (s_t, v_t)` node per
        timestep. The node's attributes carry the full `snn.lif` semantics (leak,
        compare, reset, reset_timing and the parameters as tensors), so the importer
        (onnx_import.match_fused_neuron) reads them without looking at any body.
        Models without such subgraphs come back unchanged (the same object).
    Raises FrontendError (one line) when a subgraph looks like a neuron (it compares
    a value that depends on earlier timesteps) but matches no `snn.lif` form. The
    message names the subgraph's ONNX nodes and says what was expected.

Why not a structural matcher: snnTorch (TorchScript and dynamo), SpikingJelly and
hand-written models spell the same neuron in many op orders: Clip(beta, 0, 1),
Mul by 1, a recomputed previous spike, a peeled first step with the zero state
folded in, `graded_spikes_factor`, `Div` by tau or `Mul` by a folded 1/tau, reset
with Mul/Sub/Add or Where. Instead:

1. Constant folding marks every value that does not depend on a graph input.
2. The remaining elementwise nodes (ELEMENTWISE) form connected clusters. A cluster
   holding a comparison is a neuron candidate.
3. The cluster's external inputs are its currents I_0..I_{T-1}; they are ordered in
   time by the cluster nodes they reach (I_0 reaches every step's nodes through the
   membrane, I_{T-1} only the last step's; only some steps' values may leave the
   cluster, e.g. just the final membrane). An external output is at step t when the
   latest current it depends on is I_t. Anything else (two currents per step, a
   current reaching no output) is an error. Their shapes come from onnx's shape
   inference or, where it cannot infer one (a Reshape to a shape computed with Mod),
   from one onnxruntime run of the model on zero inputs.
4. The cluster runs in onnxruntime on probe currents (grid values so that ties with
   the threshold happen). Each candidate `snn.lif` form, with parameters drawn from
   the cluster's own constants (scalar or per channel), runs in the reference
   interpreter (snn_interpreter.lif_forward) on the same probes. The first form under
   which every external output is the spike s_t or the membrane v_t of its step, on
   every probe, is taken; the comparison op in the graph (Greater / GreaterOrEqual)
   orders `gt` / `ge` first.
5. The cluster's nodes are replaced by per-step Neuron nodes (outputs keep their ONNX
   names; duplicates become Identity nodes).

Scan / Loop bodies (state = the membrane, one step symbolic): the same clusters are probed
as one step f(I, v_prev) -> (s, v_next) against same-step forms and replaced in the body by
one Neuron(I, v_prev) node (the importer's Scan/Loop handlers then check the state wiring).

Assumes opset >= 13 for the cluster's ops (what every current exporter writes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from snnc.backend.errors import FrontendError
from snnc.dialects.neurons import PARAMS, kind_named, kinds
from snnc.compiler.frontend.onnx_loading import tensor_to_array
from snnc.compiler.frontend.messages import quote

FUSED_DOMAIN = "snnc.fused"
FUSED_OP = "Neuron"

ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Neg", "Greater", "GreaterOrEqual", "Less", "LessOrEqual",
    "Equal", "Cast", "Clip", "Where", "Not", "And", "Or", "Xor", "Identity", "Min", "Max",
    "Relu", "Sign", "Abs", "Reciprocal", "Sigmoid", "Heaviside", "Floor", "Ceil", "Round",
}
COMPARISONS = {"Greater", "GreaterOrEqual", "Less", "LessOrEqual"}
# Ops whose value is not a function of their inputs (every other op of the default
# domain with constant inputs folds: exporters compute shapes with Shape, Mod, Split, ...).
NOT_FOLDABLE = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def foldable(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx") and node.op_type not in NOT_FOLDABLE and not any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
MAX_FOLD_ELEMENTS = 1 << 20
PROBES = 6  # probe traces per cluster


@dataclass
class FusedNeuron:
    """One recognised neuron layer (what the per-step nodes carry)."""

    leak: str
    compare: str
    reset: str
    reset_timing: str
    threshold: np.ndarray
    beta: np.ndarray | None = None
    tau: np.ndarray | None = None
    v_reset: np.ndarray | None = None

    def params(self) -> dict:
        return {k: getattr(self, k) for k in ("beta", "tau", "threshold", "v_reset")
                if getattr(self, k) is not None}

    def describe(self) -> str:
        return f"{kind_named(self.leak).title}/{self.compare}/{self.reset}/{self.reset_timing}"


def _label(node: onnx.NodeProto) -> str:
    return f"{quote(node.name or node.output[0])} ({node.op_type})"


def _labels(nodes: list[onnx.NodeProto], limit: int = 8) -> str:
    shown = ", ".join(_label(n) for n in nodes[:limit])
    return shown + (f" and {len(nodes) - limit} more" if len(nodes) > limit else "")


# ------------------------------------------------------------------------------------------
# constant folding
# ------------------------------------------------------------------------------------------


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def fold_node(node: onnx.NodeProto, inputs: list, opset: int) -> list[np.ndarray] | None:
    """The outputs of a node whose inputs are all constants (onnx's reference evaluator), or
    None when it cannot be folded (unknown op, large tensors, subgraphs)."""
    from onnx.reference import ReferenceEvaluator

    if not foldable(node):
        return None
    if any(x is not None and np.asarray(x).size > MAX_FOLD_ELEMENTS for x in inputs) or _folds_too_big(node, inputs):
        return None
    feeds = {name: np.asarray(x) for name, x in zip(node.input, inputs) if name}
    try:
        return [np.asarray(v) for v in ReferenceEvaluator(node, opsets={"": opset}).run(None, feeds)]
    except Exception:  # the evaluator raises many types; not folding is always safe
        return None


def _folds_too_big(node: onnx.NodeProto, inputs: list) -> bool:
    """Whether an op that makes a tensor from a shape would make more than MAX_FOLD_ELEMENTS."""
    try:
        if node.op_type == "ConstantOfShape":
            size = float(np.prod(np.asarray(inputs[0], np.float64)))
        elif node.op_type == "Expand":
            size = float(np.prod(np.maximum(np.asarray(inputs[1], np.float64), 1))) * max(np.asarray(inputs[0]).size, 1)
        elif node.op_type == "Tile":
            size = float(np.asarray(inputs[0]).size) * float(np.prod(np.asarray(inputs[1], np.float64)))
        elif node.op_type == "Range":
            start, limit, delta = (float(np.asarray(x)) for x in inputs[:3])
            size = abs((limit - start) / delta) if delta else float("inf")
        else:
            return False
    except (TypeError, ValueError, IndexError):
        return True
    return not size <= MAX_FOLD_ELEMENTS


def initializer_arrays(graph: onnx.GraphProto, read: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The graph's initializers as numpy arrays, by name (each read once: reading a
    protobuf payload copies it, and weights are tens of MB); those in `read` (read in
    place by onnx_loading.read_model: they have no raw_data) from there."""
    read = read or {}
    return {init.name: read[init.name] if init.name in read else tensor_array(init) for init in graph.initializer}


def tensor_array(tensor: onnx.TensorProto, what: str = "initializer") -> np.ndarray:
    """numpy_helper.to_array; a malformed tensor (data that disagrees with its dims, an
    unknown type) is a FrontendError naming it and saying what is wrong."""
    try:
        return tensor_to_array(tensor)
    except Exception as exc:  # numpy and onnx raise several types for a malformed payload
        raise FrontendError(f"{what} {quote(tensor.name)}: {_tensor_problem(tensor, exc)}") from None


def _tensor_problem(tensor: onnx.TensorProto, exc: Exception) -> str:
    elements = math.prod(tensor.dims)
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except Exception:  # an unknown data_type
        return f"data_type {tensor.data_type} is not an ONNX tensor type"
    type_name = onnx.TensorProto.DataType.Name(tensor.data_type)
    if tensor.HasField("raw_data") and dtype.itemsize and tensor.data_type != onnx.TensorProto.STRING:
        return (f"its raw data is {len(tensor.raw_data)} bytes, but dims {list(tensor.dims)} of {type_name} "
                f"need {elements * dtype.itemsize}")
    field = helper.tensor_dtype_to_field(tensor.data_type) if tensor.data_type != onnx.TensorProto.UNDEFINED else None
    if field is not None:
        count = len(getattr(tensor, field))
        if count != elements:
            return f"it holds {count} values, but dims {list(tensor.dims)} need {elements}"
    return f"cannot be read ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"


def _fold_constants(
    graph: onnx.GraphProto, opset: int, outer: dict | None = None,
    arrays: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Values of the graph that are constants (initializers and what follows from them);
    `arrays`: `initializer_arrays(graph)` when the caller has it."""
    consts: dict[str, np.ndarray] = dict(outer or {})
    consts.update(initializer_arrays(graph) if arrays is None else arrays)
    for node in graph.node:
        if not foldable(node):
            continue
        if not all(n in consts for n in node.input if n):
            continue
        results = fold_node(node, [consts[n] if n else None for n in node.input], opset)
        if results is not None:
            for name, value in zip(node.output, results):
                if name:
                    consts[name] = value
    return consts


# ------------------------------------------------------------------------------------------
# clusters
# ------------------------------------------------------------------------------------------


@dataclass
class _Cluster:
    nodes: list[onnx.NodeProto]
    inputs: list[str]  # external non-constant inputs, graph order
    outputs: list[str]  # values used outside the cluster (or graph outputs)


def _spike_values(graph: onnx.GraphProto, consts: dict) -> set[str]:
    """Values that are spikes: Cast of a comparison (or of Not/And/Or of them), times 1."""
    bools: set[str] = set()
    spikes: set[str] = set()
    for n in graph.node:
        if n.op_type in COMPARISONS or (n.op_type in ("Not", "And", "Or", "Xor") and all(x in bools for x in n.input)):
            bools.update(n.output)
        elif n.op_type == "Cast" and n.input[0] in bools:
            spikes.update(n.output)
        elif n.op_type == "Mul" and len(n.input) == 2:
            a, b = n.input
            for x, c in ((a, b), (b, a)):
                if x in spikes and c in consts and np.all(np.asarray(consts[c]) == 1):
                    spikes.update(n.output)
        elif n.op_type == "Identity" and n.input[0] in spikes:
            spikes.update(n.output)
        elif _is_bool_cast_of(n, spikes) or (n.op_type in ("Or", "And") and all(x in spikes for x in n.input)):
            spikes.update(n.output)  # spikes as booleans (SEW-OR/AND written with Or/And)
    return spikes


def _is_bool_cast_of(node: onnx.NodeProto, spikes: set[str]) -> bool:
    """Cast(spike -> bool): the operand of a spike-wise Or/And, never part of a neuron."""
    return node.op_type == "Cast" and bool(node.input) and node.input[0] in spikes and any(
        a.name == "to" and a.i == onnx.TensorProto.BOOL for a in node.attribute)


def _clusters(graph: onnx.GraphProto, consts: dict) -> list[_Cluster]:
    # A node combining spikes of two neurons (SEW residual Add, spike AND/OR) joins no
    # cluster: it is a layer of its own, and each neuron stays a cluster of its own.
    spikes = _spike_values(graph, consts)
    dynamic = [
        i for i, n in enumerate(graph.node)
        if n.domain in ("", "ai.onnx") and n.op_type in ELEMENTWISE
        and not all(x in consts for x in n.input if x)
        and sum(1 for x in n.input if x in spikes) < 2
        and not _is_bool_cast_of(n, spikes)
    ]
    producer = {out: i for i in dynamic for out in graph.node[i].output if out}
    parent = {i: i for i in dynamic}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in dynamic:
        for name in graph.node[i].input:
            if name in producer and name not in consts:
                parent[find(i)] = find(producer[name])
    groups: dict[int, list[int]] = {}
    for i in dynamic:
        groups.setdefault(find(i), []).append(i)
    consumers: dict[str, set[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, set()).add(i)
        for attr in node.attribute:  # captures by subgraphs count as outside uses
            if attr.type == onnx.AttributeProto.GRAPH:
                for sub in attr.g.node:
                    for name in sub.input:
                        consumers.setdefault(name, set()).add(-1)
    graph_outputs = {o.name for o in graph.output}
    clusters = []
    for members in groups.values():
        nodes = [graph.node[i] for i in sorted(members)]
        if not any(n.op_type in COMPARISONS for n in nodes):
            continue
        member_set = set(members)
        produced = {o for n in nodes for o in n.output if o}
        inputs: list[str] = []
        for n in nodes:
            for name in n.input:
                if name and name not in produced and name not in consts and name not in inputs:
                    inputs.append(name)
        outputs = [
            o for n in nodes for o in n.output
            if o and (o in graph_outputs or consumers.get(o, set()) - member_set)
        ]
        clusters.append(_Cluster(nodes, inputs, outputs))
    return clusters


def _reach(cluster: _Cluster) -> dict[str, set[str]]:
    """For each external input, the external outputs that depend on it."""
    deps: dict[str, set[str]] = {name: {name} for name in cluster.inputs}
    for node in cluster.nodes:
        union: set[str] = set()
        for name in node.input:
            union |= deps.get(name, set())
        for out in node.output:
            deps[out] = union
    reach = {name: set() for name in cluster.inputs}
    for out in cluster.outputs:
        for name in deps.get(out, ()):
            reach[name].add(out)
    return reach, deps


# ------------------------------------------------------------------------------------------
# probing
# ------------------------------------------------------------------------------------------


def _value_shapes(model: onnx.ModelProto, wanted=(), runnable: onnx.ModelProto | None = None,
                  payloads: dict[str, np.ndarray] | None = None) -> dict[str, tuple[list, int]]:
    """(dims, elem_type) of the graph's values by shape inference; a dim it cannot infer is
    None (an unknown rank: [None]). Values in `wanted` it leaves unknown (e.g. a Reshape to a
    shape computed with Mod, as SpikingJelly 2.0 writes) are measured by running `runnable`
    (the model as onnxruntime can run it, once `payloads` fill its initializers read in
    place) once on zero inputs."""
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim] if t.HasField("shape") else [None]
        out[vi.name] = (dims, t.elem_type)
    unknown = [n for n in wanted if n not in out or None in out[n][0]]
    if unknown and runnable is not None:
        out.update(_measured_shapes(runnable, unknown, payloads))
    return out


def _measured_shapes(model: onnx.ModelProto, names: list[str],
                     payloads: dict[str, np.ndarray] | None = None) -> dict[str, tuple[list, int]]:
    """The shapes of top-level values `names` when `model` runs on zeros (nothing when it
    cannot run: the caller then reports the shape as unknown). `payloads`: the values of
    its initializers that were read in place (without raw_data in `model`)."""
    import onnxruntime as ort

    from snnc.compiler.frontend.inline import inline_local_functions

    probe = inline_local_functions(model)
    if probe is model:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
    for init in probe.graph.initializer:
        if payloads and init.name in payloads and not init.HasField("raw_data"):
            init.raw_data = np.ascontiguousarray(payloads[init.name]).tobytes()
    initializers = {i.name for i in probe.graph.initializer}
    feeds = {}
    for value in probe.graph.input:
        if value.name in initializers:
            continue
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
        if t.elem_type != onnx.TensorProto.FLOAT or 0 in dims:
            return {}
        feeds[value.name] = np.zeros(dims, np.float32)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        results = session.run(names, feeds)
    except Exception:  # onnxruntime raises its own types; an unknown shape is reported by the caller
        return {}
    return {n: (list(r.shape), onnx.helper.np_dtype_to_tensor_dtype(r.dtype)) for n, r in zip(names, results)}


def _run_cluster(model, cluster, consts, shapes, feeds_list):
    """The cluster's external outputs on each probe (onnxruntime)."""
    import onnxruntime as ort

    used_consts = {n for node in cluster.nodes for n in node.input if n in consts}
    inits = [numpy_helper.from_array(np.asarray(consts[n]), n) for n in sorted(used_consts)]
    inputs = [helper.make_tensor_value_info(n, shapes[n][1], None) for n in cluster.inputs]
    outputs = [helper.make_tensor_value_info(n, shapes.get(n, (None, 1))[1], None) for n in cluster.outputs]
    graph = helper.make_graph(list(cluster.nodes), "cluster", inputs, outputs, inits)
    sub = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(_opset(model), 13))])
    sub.ir_version = min(model.ir_version or 8, 10)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(sub.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return [dict(zip(cluster.outputs, session.run(cluster.outputs, feeds))) for feeds in feeds_list]
    except Exception as exc:  # onnxruntime raises its own types (a malformed node, a type it lacks)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FrontendError(f"nodes {_labels(cluster.nodes)}: onnxruntime cannot run this neuron-like "
                            f"subgraph: {first.replace(chr(10), ' ')}") from None


def _param_candidates(cluster, consts, step_shape) -> list[np.ndarray]:
    """Distinct scalar / per-channel constants of the cluster (plus 0, 1), as float32."""
    found: list[np.ndarray] = [np.float32(0.0), np.float32(1.0)]
    for node in cluster.nodes:
        for name in node.input:
            if name not in consts:
                continue
            value = np.asarray(consts[name])
            if value.dtype.kind not in "fiub" or value.size == 0:
                continue
            value = value.astype(np.float32)
            vec = _as_param(value, step_shape)
            if vec is not None and not any(v.shape == vec.shape and np.array_equal(v, vec) for v in found):
                found.append(vec)
    return found


def _as_param(value: np.ndarray, step_shape) -> np.ndarray | None:
    """A scalar, or a per-channel [C] vector, equal to `value` broadcast over step_shape."""
    if value.size == 1:
        return np.float32(value.reshape(()))
    try:
        if np.broadcast_shapes(value.shape, tuple(step_shape)) != tuple(step_shape):
            return None
    except ValueError:
        return None
    full = np.broadcast_to(value, step_shape)
    if len(step_shape) < 2:
        return None
    vec = np.ascontiguousarray(full[(0, slice(None)) + (0,) * (len(step_shape) - 2)])
    if not np.array_equal(np.broadcast_to(vec.reshape((1, -1) + (1,) * (len(step_shape) - 2)), step_shape), full):
        return None
    if np.all(vec == vec.flat[0]):
        return np.float32(vec.flat[0])
    return vec


def _candidates(params: list[np.ndarray], compares: list[str], leaks: list[str]):
    """Every `snn.lif` form with parameters from `params`, in order of preference: per
    comparison and kind (`leaks`), every positive threshold with the kind's candidates."""
    positive = [p for p in params if np.all(p > 0)]
    for compare in compares:
        for leak in leaks:
            kind = kind_named(leak)
            for thr in positive:
                for reset, timing, kind_params in kind.fusion_candidates(params):
                    yield FusedNeuron(leak, compare, reset, timing, thr, **kind_params)


def _kind_order(ops: set[str]) -> list[str]:
    """The neuron kinds to try, most likely first: a Div in the subgraph suggests a tau form."""
    has_div = int("Div" in ops)
    return sorted(kinds(), key=lambda name: kinds()[name].fusion_rank[has_div])


def _agrees(ours: np.ndarray, theirs: np.ndarray, binary: bool) -> bool:
    theirs = np.asarray(theirs, dtype=np.float32)
    if ours.shape != theirs.shape:
        return False
    if binary:
        return bool(np.array_equal(ours, theirs))
    scale = 1.0 + float(np.max(np.abs(ours)))
    return float(np.max(np.abs(ours - theirs))) <= 1e-4 * scale


def _identify(cluster, ordered_inputs, out_step, probes, results, compares, leaks, params):
    from snnc.dialects.snn_interpreter import lif_forward

    currents = [np.stack([feeds[n] for n in ordered_inputs]) for feeds in probes]
    # which outputs are spikes (0/1 on every probe)
    binary = {o: all(np.isin(r[o], (0, 1)).all() for r in results) for o in cluster.outputs}
    for spec in _candidates(params, compares, leaks):
        roles: dict[str, str] = {}
        ok = True
        for current, result in zip(currents, results):
            try:
                spikes, membranes = lif_forward(
                    current, leak=spec.leak, threshold=spec.threshold, beta=spec.beta, tau=spec.tau,
                    v_reset=spec.v_reset, reset=spec.reset, reset_timing=spec.reset_timing,
                    compare=spec.compare)
            except (ValueError, FloatingPointError):
                ok = False
                break
            for out in cluster.outputs:
                t = out_step[out]
                role = roles.get(out)
                if role in (None, "spike") and binary[out] and _agrees(spikes[t], result[out], True):
                    roles[out] = "spike"
                elif role in (None, "membrane") and _agrees(membranes[t], result[out], False):
                    roles[out] = "membrane"
                else:
                    ok = False
                    break
            if not ok:
                break
        if ok:
            return spec, roles
    return None, None


def _probe_shapes(names, shapes, cluster=None, consts=None) -> dict:
    """The same shapes with a probe batch of >= 256 neurons (an elementwise cluster runs on any
    batch, unless one of its constants spans the batch, e.g. a folded [B, N] zero state)."""
    out = dict(shapes)
    rank = max(len(shapes[n][0]) for n in names)
    for node in (cluster.nodes if cluster else ()):
        for x in node.input:
            if x in consts and rank > 0 and np.ndim(consts[x]) == rank and np.shape(consts[x])[0] != 1:
                return out
    for name in names:
        dims, elem = shapes[name]
        per_sample = int(np.prod(dims[1:])) if len(dims) > 1 else 1
        batch = max(dims[0], min(256, -(-256 // max(per_sample, 1)))) if dims else 1
        out[name] = ([batch, *dims[1:]] if dims else dims, elem)
    return out


def _probes(ordered_inputs, shapes, scale: float, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    probes = []
    for k in range(PROBES):
        s = scale * (0.5, 1.0, 2.0, 4.0, 1.0, 0.25)[k % 6]
        feeds = {}
        for name in ordered_inputs:
            dims = shapes[name][0]
            grid = rng.integers(-8, 25, size=dims).astype(np.float32) / 16.0
            feeds[name] = (grid * np.float32(s)).astype(np.float32)
        probes.append(feeds)
    return probes


# ------------------------------------------------------------------------------------------
# the pass
# ------------------------------------------------------------------------------------------


def _expected() -> str:
    forms = " | ".join(kind.formula for kind in kinds().values())
    return (f"expected a neuron with one current per timestep, h = {forms}, spike h > thr or h >= thr, "
            "reset subtract / zero / to v_reset (same step or snnTorch's delayed subtraction), scalar or "
            "per-channel parameters")


def analyse_cluster(model, cluster, consts, shapes):
    """(ordered currents, output -> step, spec, output -> role) of one neuron cluster."""
    where = f"nodes {_labels(cluster.nodes)}"
    for name in cluster.inputs:
        if name not in shapes or None in shapes[name][0] or shapes[name][1] != onnx.TensorProto.FLOAT:
            raise FrontendError(f"{where}: input {quote(name)} of this neuron-like subgraph has no static float32 shape")
    reach, deps = _reach(cluster)
    # Time order: I_t reaches the nodes of step t and of every later step (through the
    # membrane), so the node sets are nested. Only some steps' values may leave the cluster
    # (e.g. the final membrane), so the order comes from the nodes, not the outputs.
    node_reach = {name: frozenset(i for i, n in enumerate(cluster.nodes) if any(name in deps[o] for o in n.output))
                  for name in cluster.inputs}
    ordered = sorted(cluster.inputs, key=lambda n: -len(node_reach[n]))
    nested = all(node_reach[ordered[i + 1]] < node_reach[ordered[i]] for i in range(len(ordered) - 1))
    if not ordered or not reach[ordered[-1]] or not nested:
        raise FrontendError(
            f"{where}: looks like a spiking neuron but its inputs {cluster.inputs[:4]} are not one current per "
            f"timestep (each step's current must reach that step's outputs and all later ones); {_expected()}")
    step_shape = shapes[ordered[0]][0]
    if any(shapes[n][0] != step_shape for n in ordered):
        raise FrontendError(f"{where}: the per-step currents differ in shape; {_expected()}")
    out_step = {}
    for out in cluster.outputs:
        latest = [i for i, n in enumerate(ordered) if n in deps[out]]
        if not latest:
            raise FrontendError(f"{where}: output {quote(out)} depends on no current; {_expected()}")
        out_step[out] = max(latest)
    params = _param_candidates(cluster, consts, step_shape)
    ops = {n.op_type for n in cluster.nodes}
    compares = ["ge", "gt"] if ops & {"GreaterOrEqual", "LessOrEqual"} else ["gt", "ge"]
    leaks = _kind_order(ops)
    scale = max([1.0] + [float(np.max(np.abs(p))) for p in params])
    probe_shapes = _probe_shapes(ordered, shapes, cluster, consts)
    probes = _probes(ordered, probe_shapes, scale)
    results = _run_cluster(model, cluster, consts, probe_shapes, probes)
    spec, roles = _identify(cluster, ordered, out_step, probes, results, compares, leaks, params)
    if spec is None:
        raise FrontendError(f"{where}: looks like a spiking neuron but matches no supported form; {_expected()}")
    return ordered, out_step, spec, roles


def _spliced(nodes, replaced: dict[int, list], removed: set[int]) -> list:
    """`nodes` with each fused cluster swapped for its replacement nodes (placed where
    the cluster's last node was) and the cluster's other nodes dropped."""
    out = []
    for i, node in enumerate(nodes):
        if i in replaced:
            out.extend(replaced[i])
        elif i not in removed:
            out.append(node)
    return out


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """The nodes in a dependency order, as close to the given order as possible (Kahn, stable)."""
    import heapq

    producer_of = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    waiting = [0] * len(nodes)
    users: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        deps = {producer_of[x] for x in _needed(node) if x in producer_of and x not in available}
        deps.discard(i)
        waiting[i] = len(deps)
        for j in deps:
            users.setdefault(j, []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for j in users.get(i, ()):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise FrontendError("fusing neurons left a cycle in the graph (a bug in snnc)")
    return order


def _needed(node: onnx.NodeProto) -> list[str]:
    names = list(node.input)
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            names += [x for sub in attr.g.node for x in sub.input]
    return names


def _lif_step(spec: FusedNeuron, current: np.ndarray, v: np.ndarray):
    """One step of a same-step-reset `snn.lif` from membrane v (dialects/snn.py semantics)."""
    shape = current.shape

    def p(x):
        x = np.asarray(x, np.float32)
        return x if x.ndim == 0 else x.reshape((1, -1) + (1,) * (len(shape) - 2))

    thr, one = p(spec.threshold), np.float32(1)
    h = kind_named(spec.leak).charge(v, current, {name: None if getattr(spec, name) is None else p(getattr(spec, name))
                                                  for name in PARAMS})
    s = ((h >= thr) if spec.compare == "ge" else (h > thr)).astype(np.float32)
    if spec.reset == "subtract":
        v_next = h - s * thr
    elif spec.reset == "zero":
        v_next = (one - s) * h
    else:
        v_next = s * p(spec.v_reset) + (one - s) * h
    return s, v_next.astype(np.float32)


def _is_loop(node: onnx.NodeProto) -> bool:
    """An ONNX Scan or Loop with its body (anything else named so is left to the importer's errors)."""
    return node.domain in ("", "ai.onnx") and node.op_type in ("Scan", "Loop") and any(
        a.name == "body" and a.type == onnx.AttributeProto.GRAPH for a in node.attribute)


def _fuse_scan_body(model, scan: onnx.NodeProto, consts: dict, opset: int, tag: str) -> None:
    """Replace the elementwise neurons of a Scan body (state = membrane) by Neuron nodes, in place."""
    body = next(a.g for a in scan.attribute if a.name == "body")
    if scan.op_type == "Loop":  # body inputs: (iteration, cond, states...)
        state_names = [v.name for v in body.input[2:]]
    else:  # Scan: the first len(inputs) - num_scan_inputs inputs are state
        num_scan = next(a.i for a in scan.attribute if a.name == "num_scan_inputs")
        state_names = [body.input[i].name for i in range(len(scan.input) - num_scan)]
    body_consts = _fold_constants(body, opset, outer=consts)
    for name in state_names:  # a state is never a constant (even when it starts as zeros)
        body_consts.pop(name, None)
    clusters = _clusters(body, body_consts)
    if not clusters:
        return
    index = {id(n): i for i, n in enumerate(body.node)}
    replaced, removed = {}, set()
    for k, cluster in enumerate(clusters):
        where = f"Scan {quote(scan.name)} body nodes {_labels(cluster.nodes)}"
        states = [n for n in cluster.inputs if n in state_names]
        currents = [n for n in cluster.inputs if n not in state_names]
        if len(states) != 1 or len(currents) != 1:
            raise FrontendError(f"{where}: looks like a spiking neuron but has states {states} and inputs {currents}; "
                                f"expected one current and one membrane state (same-step reset); {_expected()}")
        state_type = next(v for v in body.input if v.name == states[0]).type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in state_type.shape.dim]
        if None in dims:
            raise FrontendError(f"{where}: the membrane state {quote(states[0])} has no static shape")
        shapes = {currents[0]: (dims, onnx.TensorProto.FLOAT), states[0]: (dims, onnx.TensorProto.FLOAT)}
        params = _param_candidates(cluster, body_consts, dims)
        ops = {n.op_type for n in cluster.nodes}
        compares = ["ge", "gt"] if ops & {"GreaterOrEqual", "LessOrEqual"} else ["gt", "ge"]
        leaks = _kind_order(ops)
        scale = max([1.0] + [float(np.max(np.abs(p))) for p in params])
        shapes = _probe_shapes([currents[0], states[0]], shapes, cluster, body_consts)
        probes = _probes([currents[0], states[0]], shapes, scale)
        results = _run_cluster(model, cluster, body_consts, shapes, probes)
        binary = {o: all(np.isin(r[o], (0, 1)).all() for r in results) for o in cluster.outputs}
        found = None
        for spec in _candidates(params, compares, leaks):
            if spec.reset_timing != "same":
                continue
            roles = {}
            for feeds, result in zip(probes, results):
                s_, v_ = _lif_step(spec, feeds[currents[0]], feeds[states[0]])
                for out in cluster.outputs:
                    if roles.get(out) in (None, "spike") and binary[out] and _agrees(s_, result[out], True):
                        roles[out] = "spike"
                    elif roles.get(out) in (None, "membrane") and _agrees(v_, result[out], False):
                        roles[out] = "membrane"
                    else:
                        roles = None
                        break
                if roles is None:
                    break
            if roles is not None:
                found = (spec, roles)
                break
        if found is None:
            raise FrontendError(f"{where}: looks like a spiking neuron but matches no supported form; {_expected()}")
        spec, roles = found
        base = f"snnc_{tag}_neuron{k}"
        names = {"spike": f"{base}_s", "membrane": f"{base}_v"}
        aliases = []
        for out in cluster.outputs:
            if names[roles[out]].startswith(base):
                names[roles[out]] = out
            else:
                aliases.append((names[roles[out]], out))
        node = helper.make_node(FUSED_OP, [currents[0], states[0]], [names["spike"], names["membrane"]],
                                name=cluster.nodes[0].name or cluster.nodes[0].output[0], domain=FUSED_DOMAIN,
                                leak=spec.leak, compare=spec.compare, reset=spec.reset, reset_timing=spec.reset_timing)
        for key, value in spec.params().items():
            node.attribute.append(helper.make_attribute(key, numpy_helper.from_array(np.asarray(value, np.float32), key)))
        new_nodes = [node] + [helper.make_node("Identity", [a], [b], name=f"{base}_alias_{b}") for a, b in aliases]
        positions = [index[id(n)] for n in cluster.nodes]
        removed.update(positions)
        replaced[max(positions)] = new_nodes
    nodes = _spliced(body.node, replaced, removed)
    available = {v.name for v in body.input} | set(body_consts)
    ordered = _topological(nodes, available)
    del body.node[:]
    body.node.extend(ordered)


def fuse_neurons(model: onnx.ModelProto, arrays: dict[str, np.ndarray] | None = None,
                 payloads: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """See the module docstring; `arrays`: `initializer_arrays(model.graph)` when the
    caller has it; `payloads`: the initializers read in place (no raw_data in `model`)."""
    graph = model.graph
    opset = _opset(model)
    consts = _fold_constants(graph, opset, arrays=arrays)
    original = model
    if any(_is_loop(n) for n in graph.node):
        model_copy = onnx.ModelProto()
        model_copy.CopyFrom(model)
        for k, scan in enumerate(n for n in model_copy.graph.node if _is_loop(n)):
            _fuse_scan_body(model_copy, scan, consts, opset, f"scan{k}")
        if not any(o.domain == FUSED_DOMAIN for o in model_copy.opset_import):
            model_copy.opset_import.append(helper.make_opsetid(FUSED_DOMAIN, 1))
        model, graph = model_copy, model_copy.graph
    clusters = _clusters(graph, consts)
    if not clusters:
        return model
    shapes = _value_shapes(model, [n for c in clusters for n in c.inputs], runnable=original, payloads=payloads)
    replaced: dict[int, list[onnx.NodeProto]] = {}  # index of a cluster's first node -> new nodes
    removed: set[int] = set()
    index = {id(n): i for i, n in enumerate(graph.node)}
    new_inits = []
    for k, cluster in enumerate(clusters):
        ordered, out_step, spec, roles = analyse_cluster(model, cluster, consts, shapes)
        T = len(ordered)
        base = f"snnc_neuron{k}"
        spike_names = [f"{base}_s{t}" for t in range(T)]
        mem_names = [f"{base}_v{t}" for t in range(T)]
        aliases: list[tuple[str, str]] = []
        for out in cluster.outputs:
            t, role = out_step[out], roles[out]
            names = spike_names if role == "spike" else mem_names
            if names[t].startswith(base):
                names[t] = out
            else:
                aliases.append((names[t], out))
        zero = f"{base}_zero_state"
        new_inits.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
        attrs = {
            "leak": spec.leak, "compare": spec.compare, "reset": spec.reset, "reset_timing": spec.reset_timing,
        }
        tensors = {k2: numpy_helper.from_array(np.asarray(v, np.float32), k2) for k2, v in spec.params().items()}
        source = cluster.nodes[0].name or cluster.nodes[0].output[0]
        new_nodes = []
        for t in range(T):
            node = helper.make_node(
                FUSED_OP, [ordered[t], zero if t == 0 else mem_names[t - 1]], [spike_names[t], mem_names[t]],
                name=source if t == 0 else f"{source}__t{t}", domain=FUSED_DOMAIN, **attrs,
            )
            for key, tensor in tensors.items():
                node.attribute.append(helper.make_attribute(key, tensor))
            new_nodes.append(node)
        for src, dst in aliases:
            new_nodes.append(helper.make_node("Identity", [src], [dst], name=f"{base}_alias_{dst}"))
        positions = [index[id(n)] for n in cluster.nodes]
        removed.update(positions)
        # The fused nodes go where the cluster's last node was: every current exists by then.
        replaced[max(positions)] = new_nodes
    nodes = _spliced(graph.node, replaced, removed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(_topological(nodes, {v.name for v in graph.input} | set(consts)))
    out.graph.initializer.extend(new_inits)
    if not any(o.domain == FUSED_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(FUSED_DOMAIN, 1))
    return out
