"""NIR -> `snn` dialect.

Contract
    import_nir(model: str | Path | nir.NIRGraph, *, dt=1e-4, timesteps=4, batch=1,
               warn=print-to-stderr) -> ModuleOp
        One `func.func @main` like onnx_import's: one argument per NIR Input node
        ([T, B, ...] trains named after the node), one result per Output node (the
        stacked spikes or values feeding it). Every layer op's `source` is the NIR node
        name. Nested NIRGraph nodes are flattened ("outer.inner" names).
    Errors are FrontendError naming the NIR node, what was expected and what was found.

Nodes: Input, Output, Affine, Linear, Conv1d, Conv2d, AvgPool2d, SumPool2d (on a scale
folded into the next Affine/Linear/Conv2d), Flatten, Scale (folded into the preceding
Affine/Linear/Conv1d/Conv2d), LIF, IF, LI, CubaLIF, and nested NIRGraph nodes (flattened).
Fan-in > 1 is rejected.
Conv1d is a conv2d with H = 1: a 1-D value [C, L] is carried as [B, C, 1, L] (an Input
of per-sample rank 2 gets that shape too, and so do the Outputs it reaches).

Discretisation (NIR nodes carry no dt): forward Euler with `dt` (default 1e-4 s, what
snnTorch's exporter assumes):
    LIF  tau dv/dt = (v_leak - v) + r*I   ->  v[t] = (1 - dt/tau) v[t-1] + (r*dt/tau) I[t]
         i.e. snn.lif leak="beta", beta = 1 - dt/tau; the input gain r*dt/tau is folded
         into the weights of the layer feeding the neuron. v_leak must be 0.
    IF   dv/dt = r*I  ->  v[t] = v[t-1] + (r*dt) I[t]:  leak="none", gain r*dt folded likewise.
    LI   tau dv/dt = (v_leak - v) + r*I  ->  v[t] = (1 - dt/tau) v[t-1] + (r*dt/tau) I[t], no spikes:
         snn.lif leak="beta" with `no_fire`; its membrane is the node's output.
    CubaLIF  tau_syn dI/dt = -I + w_in*x,  tau_mem dv/dt = (v_leak - v) + r*I  ->
         I[t] = (1 - dt/tau_syn) I[t-1] + (w_in*dt/tau_syn) x[t]      (an LI stage, `no_fire`)
         v[t] = (1 - dt/tau_mem) v[t-1] + (r*dt/tau_mem) I[t]          (a LIF on the new I[t],
         as snnTorch's Synaptic); both gains are folded into the weights feeding the node
         (the LI stage is linear).
Spikes fire on v > v_threshold (compare="gt") and reset to v_reset at the same step
(reset="zero" when v_reset is 0, else "to_value"). NIR cannot express a subtract reset,
so a model exported with v_reset = 0 may have been a subtract-reset model: the importer
warns that the reset is lossy. Values within 1e-6 (relative) of a multiple of 2^-16 are
snapped to it (dt/tau round trips through float64 in the exporters).
Parameters must be uniform, or uniform per channel (dim 0 of NIR's per-sample shape).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr, UnitAttr
from xdsl.ir import Block

from snnc.backend.errors import FrontendError
from snnc.compiler.frontend.messages import stderr_note
from snnc.dialects.snn import (
    ONNX_NAME_ATTR, AvgPool2dOp, Conv2dOp, DenseOp, LIFOp, ReshapeOp, SpikeTrainType, TrainType,
    conv_output_hw, int_array, tensor_attr,
)

DEFAULT_DT = 1e-4  # snnTorch's export_to_nir: tau = dt / (1 - beta) with dt = 1e-4


def _snap(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    grid = np.round(values * 65536.0) / 65536.0
    close = np.abs(values - grid) <= 1e-6 * np.maximum(1.0, np.abs(values))
    return np.where(close, grid, values).astype(np.float32)


@dataclass(eq=False)
class _Value:
    shape: tuple[int, ...]  # per step, with batch: [B, ...]
    binary: bool
    op: object | None = None  # the snn op producing it (None: a function argument)
    ssa: object = None
    pending_scale: np.ndarray | None = None  # SumPool2d's area, to fold into the next layer
    users: int = 0


@dataclass
class _Builder:
    dt: float
    T: int
    B: int
    warn: Callable[[str], None]
    noted: bool = False
    block: Block = field(default_factory=lambda: Block())
    args: list = field(default_factory=list)  # (name, _Value)
    outputs: list = field(default_factory=list)  # (name, _Value)

    def train_type(self, value: _Value):
        return SpikeTrainType(self.T, value.shape) if value.binary else TrainType(self.T, value.shape)

    def emit(self, cls, operand: _Value, results: list[_Value], name: str, **props):
        op = cls.build(operands=[operand.ssa], result_types=[self.train_type(r) for r in results],
                       properties={"source": StringAttr(name), **props})
        self.block.add_op(op)
        for r, res in zip(results, op.results):
            r.op, r.ssa = op, res
        return op


def _per_channel(node_name: str, what: str, values, shape) -> np.ndarray:
    """A scalar, or a per-channel vector (channel = dim 0 of the per-sample shape)."""
    array = np.asarray(values, np.float32)
    if array.ndim and array.size == int(np.prod(shape)):
        array = array.reshape(shape)  # e.g. NIR's [C, L] over a [C, 1, L] value
    elif array.ndim == 1 and len(shape) > 1 and array.size == shape[0]:
        array = array.reshape((-1,) + (1,) * (len(shape) - 1))  # one value per channel
    array = np.broadcast_to(array, shape) if array.ndim else array
    if array.ndim == 0 or np.all(array == array.flat[0]):
        return np.float32(array.flat[0]) if array.size else np.float32(0)
    per_channel = array.reshape(array.shape[0], -1)
    if np.all(per_channel == per_channel[:, :1]):
        return np.ascontiguousarray(per_channel[:, 0])
    raise FrontendError(f"NIR node '{node_name}': {what} varies within a channel; snn.lif takes a scalar or "
                        f"one value per channel (found shape {list(array.shape)})")


def _order(nodes: dict, edges: list, where: str) -> list[str]:
    preds: dict[str, list[str]] = {name: [] for name in nodes}
    for src, dst in edges:
        src, dst = src.split(".")[0], dst.split(".")[0]
        if src not in nodes or dst not in nodes:
            raise FrontendError(f"NIR graph{where}: edge {src} -> {dst} names an unknown node")
        preds[dst].append(src)
    order, done = [], set()

    def visit(name, stack):
        if name in done:
            return
        if name in stack:
            raise FrontendError(f"NIR graph{where}: a cycle through node '{name}' (recurrent graphs are not supported)")
        for p in preds[name]:
            visit(p, stack | {name})
        done.add(name)
        order.append(name)

    for name in nodes:
        visit(name, frozenset())
    return order, preds


def _import_graph(graph, b: _Builder, prefix: str, inputs: dict[str, _Value] | None) -> dict[str, _Value]:
    import nir

    order, preds = _order(graph.nodes, graph.edges, f" '{prefix}'" if prefix else "")
    values: dict[str, _Value] = {}
    results: dict[str, _Value] = {}
    for name in order:
        node = graph.nodes[name]
        full = f"{prefix}{name}"
        kind = type(node).__name__
        if isinstance(node, nir.Input):
            if inputs is not None:
                values[name] = inputs[name] if name in inputs else next(iter(inputs.values()))
                continue
            shape = tuple(int(d) for d in np.asarray(node.input_type["input"]).reshape(-1))
            if len(shape) == 2:  # a 1-D signal [C, L]: carried as [C, 1, L] (Conv1d = conv2d with H = 1)
                shape = (shape[0], 1, shape[1])
            value = _Value((b.B, *shape), False)
            value.ssa = b.block.insert_arg(b.train_type(value), len(b.block.args))
            b.args.append((full, value))
            values[name] = value
            continue
        if len(preds[name]) != 1:
            raise FrontendError(f"NIR node '{full}' ({kind}): expected exactly one input edge, found {len(preds[name])}")
        x = values[preds[name][0]]
        x.users += 1
        if isinstance(node, nir.Output):
            results[name] = x
            continue
        if isinstance(node, nir.NIRGraph):
            inner = _import_graph(node, b, f"{full}.", {k: x for k, v in node.nodes.items() if isinstance(v, nir.Input)})
            values[name] = next(iter(inner.values()))
            continue
        values[name] = _import_node(node, kind, full, x, b)
    return results


def _scale_producer(x: _Value, gain: np.ndarray, full: str, kind: str) -> None:
    """Multiply the weights (per output channel) of the dense/conv producing x by gain."""
    op = x.op
    if not isinstance(op, (DenseOp, Conv2dOp)) or x.users != 1:
        raise FrontendError(f"NIR node '{full}' ({kind}): expected an Affine/Linear/Conv2d (used by nothing else) "
                            f"right before it to absorb the input gain r*dt/tau or scale, found "
                            f"{'the graph input' if op is None else op.name}")
    from snnc.dialects.snn import tensor_value

    gain = np.asarray(gain, np.float32)
    weight = tensor_value(op.weight).copy()
    if isinstance(op, DenseOp):
        weight = weight * gain.reshape(1, -1) if gain.ndim else weight * gain
    else:
        weight = weight * (gain.reshape(-1, 1, 1, 1) if gain.ndim else gain)
    op.weight = tensor_attr(weight)
    if op.bias is not None:
        op.bias = tensor_attr(tensor_value(op.bias) * gain)


def _import_node(node, kind: str, full: str, x: _Value, b: _Builder) -> _Value:
    import nir

    if isinstance(node, (nir.Affine, nir.Linear)):
        weight = np.asarray(node.weight, np.float32)
        if len(x.shape) != 2 or weight.ndim != 2 or weight.shape[1] != x.shape[1]:
            raise FrontendError(f"NIR node '{full}' ({kind}): expected a [N, {x.shape[1:]}] weight on a flat input, "
                                f"found weight {list(weight.shape)} and input {list(x.shape[1:])}")
        if x.pending_scale is not None:
            weight = weight * x.pending_scale
        out = _Value((x.shape[0], weight.shape[0]), False)
        props = {"weight": tensor_attr(weight.T.copy())}
        if isinstance(node, nir.Affine) and node.bias is not None:
            props["bias"] = tensor_attr(np.asarray(node.bias, np.float32).reshape(-1))
        b.emit(DenseOp, x, [out], full, **props)
        return out
    if isinstance(node, nir.Conv1d):
        weight = np.asarray(node.weight, np.float32)
        if int(np.asarray(node.groups)) != 1 or weight.ndim != 3 or len(x.shape) != 4 or x.shape[2] != 1:
            raise FrontendError(f"NIR node '{full}' (Conv1d): expected groups=1 and a [Cout, Cin, k] weight on a "
                                f"[C, L] input, found groups={node.groups}, weight {list(weight.shape)} and input "
                                f"{list(x.shape[1:])}")
        if isinstance(node.padding, str):
            raise FrontendError(f"NIR node '{full}' (Conv1d): expected explicit padding, found '{node.padding}'")
        stride, dil, pad = (int(np.asarray(v).reshape(-1)[0]) for v in (node.stride, node.dilation, node.padding))
        if x.pending_scale is not None:
            weight = weight * x.pending_scale
        weight = weight[:, :, None, :]  # [Cout, Cin, 1, k]
        pads = [0, pad, 0, pad]
        hw = conv_output_hw(x.shape[2:], weight.shape[2:], (1, stride), pads, (1, dil))
        out = _Value((x.shape[0], weight.shape[0], *hw), False)
        props = {"weight": tensor_attr(weight), "strides": int_array([1, stride]), "pads": int_array(pads),
                 "dilations": int_array([1, dil])}
        if node.bias is not None and np.any(np.asarray(node.bias) != 0):
            props["bias"] = tensor_attr(np.asarray(node.bias, np.float32).reshape(-1))
        b.emit(Conv2dOp, x, [out], full, **props)
        return out
    if isinstance(node, nir.Conv2d):
        weight = np.asarray(node.weight, np.float32)
        if int(np.asarray(node.groups)) != 1 or weight.ndim != 4 or len(x.shape) != 4:
            raise FrontendError(f"NIR node '{full}' (Conv2d): expected groups=1 on a [C, H, W] input, found "
                                f"groups={node.groups} and input {list(x.shape[1:])}")
        if isinstance(node.padding, str):
            raise FrontendError(f"NIR node '{full}' (Conv2d): expected explicit padding, found '{node.padding}'")
        stride, dil = [int(v) for v in np.broadcast_to(node.stride, 2)], [int(v) for v in np.broadcast_to(node.dilation, 2)]
        pad = [int(v) for v in np.broadcast_to(node.padding, 2)]
        if x.pending_scale is not None:
            weight = weight * x.pending_scale
        pads = [pad[0], pad[1], pad[0], pad[1]]
        hw = conv_output_hw(x.shape[2:], weight.shape[2:], stride, pads, dil)
        out = _Value((x.shape[0], weight.shape[0], *hw), False)
        props = {"weight": tensor_attr(weight), "strides": int_array(stride), "pads": int_array(pads),
                 "dilations": int_array(dil)}
        if node.bias is not None and np.any(np.asarray(node.bias) != 0):
            props["bias"] = tensor_attr(np.asarray(node.bias, np.float32).reshape(-1))
        b.emit(Conv2dOp, x, [out], full, **props)
        return out
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        kernel = [int(v) for v in np.broadcast_to(node.kernel_size, 2)]
        stride = [int(v) for v in np.broadcast_to(node.stride, 2)]
        pad = [int(v) for v in np.broadcast_to(node.padding, 2)]
        pads = [pad[0], pad[1], pad[0], pad[1]]
        if isinstance(node, nir.SumPool2d) and any(pads):
            raise FrontendError(f"NIR node '{full}' (SumPool2d): expected no padding, found {pad}")
        hw = conv_output_hw(x.shape[2:], kernel, stride, pads)
        out = _Value((x.shape[0], x.shape[1], *hw), False)
        b.emit(AvgPool2dOp, x, [out], full, kernel=int_array(kernel), strides=int_array(stride), pads=int_array(pads))
        if isinstance(node, nir.SumPool2d):
            out.pending_scale = np.float32(kernel[0] * kernel[1])  # sum = area * average
        return out
    if isinstance(node, nir.Flatten):
        per_sample = list(x.shape[1:])
        start = node.start_dim % len(per_sample) if per_sample else 0
        end = node.end_dim % len(per_sample) if per_sample else 0
        shape = per_sample[:start] + [int(np.prod(per_sample[start:end + 1]))] + per_sample[end + 1:]
        out = _Value((x.shape[0], *shape), x.binary, pending_scale=x.pending_scale)
        b.emit(ReshapeOp, x, [out], full)
        return out
    if isinstance(node, nir.Scale):
        _scale_producer(x, _per_channel(full, "scale", node.scale, x.shape[1:]), full, kind)
        return x
    if isinstance(node, (nir.LIF, nir.IF)):
        if x.binary:
            raise FrontendError(f"NIR node '{full}' ({kind}): its input is spikes; expected the output of a "
                                "weighted layer (Affine/Linear/Conv2d)")
        per_sample = x.shape[1:]
        if isinstance(node, nir.LIF):
            if np.any(np.asarray(node.v_leak) != 0):
                raise FrontendError(f"NIR node '{full}' (LIF): expected v_leak = 0, found {np.unique(node.v_leak)[:4]}")
            tau = np.asarray(node.tau, np.float64)
            beta = _per_channel(full, "1 - dt/tau", _snap(1.0 - b.dt / tau), per_sample)
            gain = _per_channel(full, "r*dt/tau", _snap(np.asarray(node.r, np.float64) * b.dt / tau), per_sample)
            if np.any(beta < 0) or np.any(beta > 1):
                raise FrontendError(f"NIR node '{full}' (LIF): dt={b.dt} gives beta = 1 - dt/tau outside [0, 1]; "
                                    "pass the dt the model was trained with (--dt)")
        else:
            beta = None
            gain = _per_channel(full, "r*dt", _snap(np.asarray(node.r, np.float64) * b.dt), per_sample)
        if not np.all(np.asarray(gain) == 1):
            _scale_producer(x, gain, full, kind)
        if not b.noted:
            b.noted = True
            b.warn(f"note: NIR carries no dt; discretised with forward Euler, dt = {b.dt:g} s "
                   "(beta = 1 - dt/tau, input gain r*dt/tau; change with --dt)")
        return _emit_lif(b, x, full, kind, beta, node.v_threshold, node.v_reset)
    if isinstance(node, (nir.LI, nir.CubaLIF)):
        if x.binary:
            raise FrontendError(f"NIR node '{full}' ({kind}): its input is spikes; expected the output of a "
                                "weighted layer (Affine/Linear/Conv)")
        per_sample = x.shape[1:]
        if np.any(np.asarray(node.v_leak) != 0):
            raise FrontendError(f"NIR node '{full}' ({kind}): expected v_leak = 0, found {np.unique(node.v_leak)[:4]}")
        r = np.asarray(node.r, np.float64)
        if isinstance(node, nir.LI):
            stages = [("", np.asarray(node.tau, np.float64), r)]
        else:
            stages = [(".syn", np.asarray(node.tau_syn, np.float64), np.asarray(node.w_in, np.float64)),
                      ("", np.asarray(node.tau_mem, np.float64), r)]
        betas, gain = [], np.float64(1.0)
        for _, tau, g in stages:
            beta = _per_channel(full, "1 - dt/tau", _snap(1.0 - b.dt / tau), per_sample)
            if np.any(beta < 0) or np.any(beta > 1):
                raise FrontendError(f"NIR node '{full}' ({kind}): dt={b.dt} gives beta = 1 - dt/tau outside [0, 1]; "
                                    "pass the dt the model was trained with (--dt)")
            betas.append(beta)
            gain = gain * g * b.dt / tau
        gain = _per_channel(full, "the input gain", _snap(gain), per_sample)
        if not np.all(np.asarray(gain) == 1):
            _scale_producer(x, gain, full, kind)
        _note_dt(b)
        current = _leaky_integrator(b, x, full + stages[0][0], betas[0])
        if isinstance(node, nir.LI):
            return current
        return _emit_lif(b, current, full, kind, betas[1], node.v_threshold, node.v_reset)
    raise FrontendError(f"NIR node '{full}' ({kind}): unsupported node type (supported: Input, Output, Affine, "
                        "Linear, Conv1d, Conv2d, AvgPool2d, SumPool2d, Flatten, Scale, LIF, IF, LI, CubaLIF)")


def _note_dt(b: _Builder) -> None:
    if not b.noted:
        b.noted = True
        b.warn(f"note: NIR carries no dt; discretised with forward Euler, dt = {b.dt:g} s "
               "(beta = 1 - dt/tau, input gain r*dt/tau; change with --dt)")


def _leaky_integrator(b: _Builder, x: _Value, full: str, beta) -> _Value:
    """v[t] = beta v[t-1] + x[t], never firing: snn.lif with `no_fire`; returns the membrane."""
    spikes, membrane = _Value(x.shape, True), _Value(x.shape, False)
    b.emit(LIFOp, x, [spikes, membrane], full, leak=StringAttr("beta"), beta=tensor_attr(beta),
           threshold=tensor_attr(np.float32(1.0)), reset=StringAttr("zero"), reset_timing=StringAttr("same"),
           compare=StringAttr("gt"), no_fire=UnitAttr())
    return membrane


def _emit_lif(b: _Builder, x: _Value, full: str, kind: str, beta, v_threshold, v_reset_values) -> _Value:
    """A firing neuron (gain already folded): compare gt, reset to v_reset at the same step."""
    per_sample = x.shape[1:]
    thr = _per_channel(full, "v_threshold", v_threshold, per_sample)
    v_reset = _per_channel(full, "v_reset", 0.0 if v_reset_values is None else v_reset_values, per_sample)
    zero_reset = bool(np.all(np.asarray(v_reset) == 0))
    if zero_reset:
        b.warn(f"NIR node '{full}' ({kind}): NIR resets to v_reset = 0; a subtract-reset model "
               "(snnTorch's default) exports like this, so its reset is lossy: compiled as reset to zero")
    spikes, membrane = _Value(x.shape, True), _Value(x.shape, False)
    props = {"leak": StringAttr("beta" if beta is not None else "none"), "threshold": tensor_attr(thr),
             "reset": StringAttr("zero" if zero_reset else "to_value"), "reset_timing": StringAttr("same"),
             "compare": StringAttr("gt")}
    if beta is not None:
        props["beta"] = tensor_attr(beta)
    if not zero_reset:
        props["v_reset"] = tensor_attr(v_reset)
    b.emit(LIFOp, x, [spikes, membrane], full, **props)
    return spikes


def import_nir(model, *, dt: float = DEFAULT_DT, timesteps: int = 4, batch: int = 1,
               warn: Callable[[str], None] = stderr_note) -> ModuleOp:
    """The `snn` dialect module of a NIR graph (see the module docstring)."""
    try:
        import nir
    except ImportError:
        raise FrontendError("reading NIR needs the `nir` package (pip install nir)") from None
    if not dt > 0:
        raise FrontendError(f"--dt {dt}: expected a positive time step in seconds")
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise FrontendError(f"{path}: no such NIR file")
        try:
            model = nir.read(str(path))
        except Exception as exc:  # h5py / nir raise many types
            raise FrontendError(f"{path}: not a NIR file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    b = _Builder(dt=dt, T=timesteps, B=batch, warn=warn)
    results = _import_graph(model, b, "", None)
    if not b.args or not results:
        raise FrontendError("NIR graph: expected at least one Input and one Output node")
    arg_types = [b.train_type(v) for _, v in b.args]
    main = func.FuncOp(
        "main", (arg_types, [b.train_type(v) for v in results.values()]),
        arg_attrs=ArrayAttr([DictionaryAttr({ONNX_NAME_ATTR: StringAttr(n)}) for n, _ in b.args]),
        res_attrs=ArrayAttr([DictionaryAttr({ONNX_NAME_ATTR: StringAttr(n)}) for n in results]),
    )
    b.block.add_op(func.ReturnOp(*[v.ssa for v in results.values()]))
    main.body.detach_block(main.body.block).erase()
    main.body.add_block(b.block)
    module = ModuleOp([main])
    module.verify()
    return module
