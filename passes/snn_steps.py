"""The network as the accelerator runs it: stored feature maps and the steps between them.

Not a pass: an analysis of snn-level @main shared by `quantise` and
`convert-snn-to-loops`, so both see the same grouping.

  * A synapse op (dense/conv2d) -- or a residual `snn.add` of two synapse results
    that have no other use -- is one synaptic group (`GroupStep`): one accumulator,
    one synapse per op, sharing the accumulator's scale. The `snn.lif` consuming
    the group's current is fused into it. If the current has other uses it is
    also stored (ACT_I32).
  * A `snn.lif` whose input is a stored map (graph input, pool, add, ...) is a group
    with a 1x1 identity synapse (weights 1, no bias; named after the LIF).
  * Pools are `PoolStep`s, adds that are not residual groups `AddStep`s (ACT_I16,
    or ACT_I32 if an operand is; spike logic gives spikes).
  * `snn.reshape` is free when the stored layout does not change, or when it flattens
    [B, C, H, W] -> [B, C*H*W] for dense consumers only: the dense layer becomes an
    H x W kernel over the stored map (weight rows permuted to (h, w, c_padded)).
Every stored value is a `FeatureMap` ([T][B][H][W][Cs], channel-last, channels padded
to 8). Fixed-point fractions start as placeholders; `quantise` decides them. The
records (maps and steps) are in passes/step_records.py.
"""

from __future__ import annotations

import weakref

import numpy as np
from snnc.backend.errors import CompileError
from snnc.backend.isa import Format
from snnc.dialects.snn import (
    AddOp,
    AvgPool2dOp,
    Conv2dOp,
    DenseOp,
    LIFOp,
    MaxPool2dOp,
    ReshapeOp,
    SpikeLogicOp,
    SpikeTrainType,
    TimeSliceOp,
    int_array_value,
    onnx_io_names,
    tensor_value,
    train_type_of,
)
from snnc.passes.numerics import NonzeroWeights
from snnc.passes.step_records import (
    AddStep,
    FeatureMap,
    GroupStep,
    PoolStep,
    Stored,
    SynapseInput,
    pool_output_frac,
    source_name,
)
from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

def _geometry(shape: tuple[int, ...], what: str) -> tuple[int, int, int, int]:
    """(B, C, H, W) of a per-step shape [B, C, H, W] or [B, N]."""
    if len(shape) == 4:
        return shape[0], shape[1], shape[2], shape[3]
    if len(shape) == 2:
        return shape[0], shape[1], 1, 1
    raise CompileError(f"{what}: per-step shape {list(shape)} is neither [B, C, H, W] nor [B, N]")


def _uses(value: SSAValue) -> list[Operation]:
    return [use.operation for use in value.uses]


# Per weights attribute (immutable; weakly held, by identity: hashing one hashes its bytes):
# its non-zeros in each stored layout. The quantise pass and the lowering both analyse the
# network, and on a pruned model finding the non-zeros of every layer is a good part of that.
_RELAYOUTS: dict[int, tuple[weakref.ref, dict]] = {}


def _layouts_of(weight_attr) -> dict:
    entry = _RELAYOUTS.get(id(weight_attr))
    if entry is None or entry[0]() is not weight_attr:
        key = id(weight_attr)
        entry = _RELAYOUTS[key] = (weakref.ref(weight_attr, lambda _, key=key: _RELAYOUTS.pop(key, None)), {})
    return entry[1]


def _relayout(weight_attr, view: tuple[int, ...], axes: tuple[int, ...], shape: tuple[int, ...]) -> NonzeroWeights:
    """NonzeroWeights.relayout of the attribute's tensor viewed as `view`."""
    layouts = _layouts_of(weight_attr)
    key = (tuple(view), axes, tuple(shape))
    found = layouts.get(key)
    if found is None:
        found = layouts[key] = NonzeroWeights.relayout(tensor_value(weight_attr).reshape(view), axes, shape)
    return found


class NetworkSteps:
    """Walks @main once: decides fusion, builds steps and feature maps."""

    def __init__(self, main: func.FuncOp, input_frac_bits: int, input_abs_max: float):
        self.main = main
        self.steps: list[GroupStep | PoolStep | AddStep] = []
        self.values: dict[SSAValue, Stored] = {}
        self.fmaps: list[FeatureMap] = []  # creation order (inputs first)
        self.inputs: list[tuple[str, SSAValue]] = []
        self.outputs: list[tuple[str, SSAValue]] = []
        self.timesteps = 0
        block = main.body.block
        if not block.args:
            raise CompileError("@main has no inputs")
        names, self.output_names = onnx_io_names(main)
        for arg, name in zip(block.args, names):
            t = train_type_of(arg)
            self.timesteps = t.num_timesteps
            b, c, h, w = _geometry(t.get_shape(), f"graph input '{name}'")
            if isinstance(t, SpikeTrainType):
                fm = FeatureMap(Format.SPIKE_PLANES, 0, t.num_timesteps, b, c, h, w, 1.0, arg, name)
            else:
                bound = input_abs_max if input_abs_max > 0 else 2.0 ** (15 - input_frac_bits)
                fm = FeatureMap(Format.ACT_I16, input_frac_bits, t.num_timesteps, b, c, h, w, bound, arg, name,
                                error=2.0 ** -(input_frac_bits + 1))  # the input is rounded to input_frac_bits
            self.fmaps.append(fm)
            self.values[arg] = Stored(fm)
            self.inputs.append((name, arg))
        if not 1 <= self.timesteps <= 64:
            raise CompileError(f"T = {self.timesteps} timesteps: the accelerator supports 1..64")
        self.fused: set[Operation] = set()
        self._plan_groups(block)
        for op in block.ops:
            self._visit(op)


    # -- fusion decisions ---------------------------------------------------------------
    def _plan_groups(self, block) -> None:
        """Map the op that completes each synaptic group to its synapse ops."""
        self.group_at: dict[Operation, list[DenseOp | Conv2dOp]] = {}
        in_residual: set[Operation] = set()
        for op in block.ops:
            if isinstance(op, AddOp):
                producers = [v.owner for v in (op.lhs, op.rhs)]
                if (
                    all(isinstance(p, DenseOp | Conv2dOp) for p in producers)
                    and producers[0] is not producers[1]
                    and all(p.output.has_one_use() for p in producers)
                ):
                    self.group_at[op] = producers
                    in_residual.update(producers)
        for op in block.ops:
            if isinstance(op, DenseOp | Conv2dOp) and op not in in_residual:
                self.group_at[op] = [op]

    # -- one op -------------------------------------------------------------------------
    def _visit(self, op: Operation) -> None:
        if isinstance(op, func.ReturnOp):
            names = self.output_names
            for name, value in zip(names, op.arguments):
                stored = self.values.get(value)
                if stored is None:
                    raise CompileError(f"graph output '{name}': its value is not stored (internal error)")
                if stored.flattened:
                    raise CompileError(
                        f"graph output '{name}': a flattened [B, C, H, W] map cannot be returned "
                        "(its stored order is (h, w, c)); return the map before the reshape"
                    )
                self.outputs.append((name, value))
            return
        if op in self.group_at:
            self._group(op, self.group_at[op])
            return
        if isinstance(op, DenseOp | Conv2dOp):
            return  # part of a residual group completed by a later snn.add
        if isinstance(op, LIFOp):
            if op not in self.fused:
                self._lif_on_stored_map(op)
            return
        if isinstance(op, ReshapeOp):
            self._reshape(op)
            return
        if isinstance(op, MaxPool2dOp | AvgPool2dOp):
            self._pool(op)
            return
        if isinstance(op, AddOp | SpikeLogicOp):
            self._add(op)
            return
        if isinstance(op, TimeSliceOp):  # some steps of a stored map: only the output descriptor differs
            self.values[op.output] = self._stored(op.input, op)
            return
        raise CompileError(f"{op.name} '{source_name(op)}': no accelerator lowering for this op")

    def _stored(self, value: SSAValue, consumer: Operation) -> Stored:
        stored = self.values.get(value)
        if stored is None:
            raise CompileError(f"{consumer.name} '{source_name(consumer)}': operand is not stored (internal error)")
        return stored

    def _new_fmap(self, fmt: Format, frac: int, value: SSAValue, abs_max: float) -> FeatureMap:
        t = train_type_of(value)
        b, c, h, w = _geometry(t.get_shape(), f"{value.owner.name}")
        owner = value.owner
        label = source_name(owner) if isinstance(owner, Operation) else str(value)
        if isinstance(owner, LIFOp):
            label += ".spikes" if value is owner.spikes else ".membrane"
        fm = FeatureMap(fmt, frac, t.num_timesteps, b, c, h, w, abs_max, value=value, label=label)
        self.fmaps.append(fm)
        self.values[value] = Stored(fm)
        return fm

    def _synapse_input(self, syn: DenseOp | Conv2dOp) -> SynapseInput:
        src = self._stored(syn.input, syn)
        fm = src.fmap
        w = tensor_value(syn.weight)  # float32, read-only; the layouts below are float32 copies
        bias = np.zeros(w.shape[1] if isinstance(syn, DenseOp) else w.shape[0])
        if syn.bias is not None:
            bias = np.asarray(tensor_value(syn.bias), np.float64)
        if isinstance(syn, DenseOp):
            k, n = w.shape
            if src.flattened:
                # ONNX row order (c, h, w) -> stored order (h, w, c padded). The dense layer
                # is an H x W kernel over the stored H x W map (output 1 x 1): byte for byte
                # the same weights and input tile as a 1x1 conv with K = H*W*Cs channels,
                # without the 16-bit channel-count limit.
                if max(fm.height, fm.width) > 255:
                    raise CompileError(f"snn.dense '{source_name(syn)}': flattened map {fm.height}x{fm.width} exceeds a 255 kernel")
                weight = _relayout(syn.weight, (fm.channels, fm.height, fm.width, n), (3, 1, 2, 0),
                                   (n, fm.height, fm.width, fm.cs))
                return SynapseInput(syn, src, fm.channels, fm.cs, fm.height, fm.width, fm.height, fm.width,
                                    (1, 1), (0, 0, 0, 0), (1, 1), weight, bias)
            else:
                if fm.height != 1 or fm.width != 1 or fm.channels != k:
                    raise CompileError(f"snn.dense '{source_name(syn)}': input map is {fm.channels}x{fm.height}x{fm.width}, expected [B, {k}]")
                weight = _relayout(syn.weight, (k, n, 1, 1), (1, 2, 3, 0), (n, 1, 1, fm.cs))
                return SynapseInput(syn, src, k, fm.cs, 1, 1, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), weight, bias)
        if src.flattened:
            raise CompileError(f"snn.conv2d '{source_name(syn)}': input is a flattened map")
        cout, cin, kh, kw = w.shape
        weight = _relayout(syn.weight, w.shape, (0, 2, 3, 1), (cout, kh, kw, fm.cs))
        strides = int_array_value(syn.strides)
        pads = int_array_value(syn.pads)
        dil = int_array_value(syn.dilations)
        if max(kh, kw, *strides, *pads, *dil) > 255:
            raise CompileError(f"snn.conv2d '{source_name(syn)}': kernel/stride/pad/dilation above 255")
        return SynapseInput(
            syn, src, cin, fm.cs, fm.height, fm.width, kh, kw,
            (strides[0], strides[1]), (pads[0], pads[1], pads[2], pads[3]), (dil[0], dil[1]), weight, bias,
        )

    def _group(self, anchor: Operation, synapses: list[DenseOp | Conv2dOp]) -> None:
        inputs = [self._synapse_input(s) for s in synapses]
        current = anchor.output
        b, c, h, w = _geometry(train_type_of(current).get_shape(), f"{anchor.name} '{source_name(anchor)}'")
        users = _uses(current)
        lifs = [u for u in users if isinstance(u, LIFOp)]
        lif = lifs[0] if len(lifs) == 1 else None
        if len(lifs) > 1:
            raise CompileError(
                f"{anchor.name} '{source_name(anchor)}': its current feeds {len(lifs)} snn.lif layers; only one is supported"
            )
        step = GroupStep(inputs, lif, b, c, h, w, anchor=anchor)
        self.steps.append(step)
        if any(u is not lif for u in users):
            # Placeholder format/frac; fixed when the group is quantised.
            step.current_out = self._new_fmap(Format.ACT_I32, 0, current, 0.0)
        if lif is not None:
            self.fused.add(lif)
            self._lif_outputs(step, lif)

    def _lif_on_stored_map(self, lif: LIFOp) -> None:
        """A LIF whose input is a stored map (graph input, pool, add, ...): a 1x1
        identity synapse (weights 1, no bias) feeds the accumulator, then LIF as usual."""
        src = self._stored(lif.input, lif)
        if src.flattened:
            raise CompileError(f"snn.lif '{source_name(lif)}': input is a flattened map; not supported")
        fm = src.fmap
        identity = NonzeroWeights(
            (fm.channels, 1, 1, fm.cs), np.arange(fm.channels) * (fm.cs + 1), np.ones(fm.channels, np.float32))
        synapse = SynapseInput(
            lif, src, fm.channels, fm.cs, fm.height, fm.width, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1),
            identity, np.zeros(fm.channels),
        )
        step = GroupStep([synapse], lif, fm.batch, fm.channels, fm.height, fm.width, anchor=lif)
        self.steps.append(step)
        self.fused.add(lif)
        self._lif_outputs(step, lif)

    def _lif_outputs(self, step: GroupStep, lif: LIFOp) -> None:
        """The stored maps of a fused LIF's used results (placeholder scales until quantise)."""
        if lif.spikes.uses.get_length():
            step.spikes_out = self._new_fmap(Format.SPIKE_PLANES, 0, lif.spikes, 1.0)
        if lif.membrane.uses.get_length():
            step.membrane_out = self._new_fmap(Format.ACT_I32, 0, lif.membrane, 0.0)

    def _reshape(self, op: ReshapeOp) -> None:
        src = self._stored(op.input, op)
        fm = src.fmap
        out_shape = train_type_of(op.output).get_shape()
        in_shape = train_type_of(op.input).get_shape()
        if out_shape[0] != in_shape[0]:
            raise CompileError(f"snn.reshape '{source_name(op)}': the batch dimension changes ({in_shape[0]} -> {out_shape[0]})")
        b, c, h, w = _geometry(out_shape, f"snn.reshape '{source_name(op)}'")
        if (c, h, w) == (fm.channels, fm.height, fm.width):
            self.values[op.output] = Stored(fm, src.flattened)  # stored layout unchanged
            return
        if len(out_shape) == 2 and c == fm.channels * fm.height * fm.width and not src.flattened:
            for user in _uses(op.output):
                if not isinstance(user, DenseOp | ReshapeOp | func.ReturnOp):
                    raise CompileError(
                        f"snn.reshape '{source_name(op)}': a flattened map can only feed dense layers, "
                        f"not {user.name} '{source_name(user)}'"
                    )
            self.values[op.output] = Stored(fm, flattened=True)
            return
        if src.flattened and (c, h, w) == (fm.channels * fm.height * fm.width, 1, 1):
            self.values[op.output] = src
            return
        raise CompileError(
            f"snn.reshape '{source_name(op)}': {list(in_shape)} -> {list(out_shape)} changes the stored "
            "channel-last layout; only flattening [B, C, H, W] -> [B, C*H*W] before dense layers is supported"
        )

    def _pool(self, op: MaxPool2dOp | AvgPool2dOp) -> None:
        src = self._stored(op.input, op)
        if src.flattened:
            raise CompileError(f"{op.name} '{source_name(op)}': input is a flattened map")
        fm = src.fmap
        if isinstance(op, MaxPool2dOp):
            fmt = fm.fmt
        else:
            fmt = Format.ACT_I32 if fm.fmt == Format.ACT_I32 else Format.ACT_I16
        # The source's scale may still be a placeholder here (a synapse group is only
        # quantised when the program is built); _pool_layer sets the real one.
        out = self._new_fmap(fmt, pool_output_frac(op, fm, fmt), op.output, fm.abs_max)
        self.steps.append(PoolStep(op, fm, out))

    def _add(self, op: AddOp) -> None:
        a, b = self._stored(op.lhs, op), self._stored(op.rhs, op)
        if a.flattened or b.flattened:
            raise CompileError(f"snn.add '{source_name(op)}': operands are flattened maps")
        fa, fb = a.fmap, b.fmap
        if (fa.channels, fa.height, fa.width) != (fb.channels, fb.height, fb.width):
            raise CompileError(f"snn.add '{source_name(op)}': operand geometries differ")
        fmt = Format.ACT_I32 if Format.ACT_I32 in (fa.fmt, fb.fmt) else Format.ACT_I16
        if isinstance(op, SpikeLogicOp):  # spikes out: ADD computes OR, ADD with ADD_AND computes AND
            out = self._new_fmap(Format.SPIKE_PLANES, 0, op.output, 1.0)
            self.steps.append(AddStep(op, fa, fb, out))
            return
        # Placeholder scale, as for pools: _add_layer sets it once the operands are quantised.
        out = self._new_fmap(fmt, max(fa.frac, fb.frac), op.output, fa.abs_max + fb.abs_max)
        self.steps.append(AddStep(op, fa, fb, out))
