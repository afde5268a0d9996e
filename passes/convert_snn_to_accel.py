"""convert-snn-to-accel: quantise, fuse, tile, allocate and schedule a network.

CONTRACT
  Requires: a module holding `func.func @main` in the `snn` dialect (as built by
    the frontend; args/results carry `snn.onnx_name`), every op one of
    snn.dense / conv2d / max_pool2d / avg_pool2d / reshape / add / lif.
  Guarantees: the module afterwards holds exactly one `accel.program` (nothing
    else) that verifies and is deterministic (same input + options -> same IR
    text). Numbers follow docs/numerics.md; each `accel.layer` whose
    quantisation is not exact carries `inexact "<reason>"`.
    Unsupported constructs raise `snnc.backend.errors.CompileError` naming the
    ONNX node.
  Options (pass fields; `-p convert-snn-to-accel{weight_bits=8 hw=loas}`):
    hw               hardware preset name or .toml path (`snnc.backend.hwconfig.load_hw`)
    weight_bits      2..16; 0 = the hw config's compute.weight_bits
    input_frac_bits  fractional bits of multi-bit graph inputs (stored ACT_I16)
    input_abs_max    bound on |graph input| used to size membranes; 0 = the
                     whole ACT_I16 range (2**(15 - input_frac_bits))
    sram_bytes, timestep_lanes   0 = the hw config's values (overrides for tests)
    model_name       recorded in the program

Lowering (layer by layer; every stored feature map lives in DRAM):
  * A synapse op (dense/conv2d) -- or a residual `snn.add` of two synapse
    results that have no other use -- is one "synaptic group": one accumulator,
    SYN per synapse (the second with SynFlags.ACCUMULATE; the bias of both is in
    the first layer's parameter block). The `snn.lif` consuming the group's
    current is fused: SYN -> LIF -> PACK per tile. If the current has other uses
    (graph output, add, pool, ...) the accumulator tile is also stored as ACT_I32
    with frac = the accumulator's.
  * A `snn.lif` whose input is a stored map (graph input, pool, add, ...) gets a
    1x1 identity synapse (weights 1, no bias; layer named after the LIF).
  * LIF membranes that are used are stored as an ACT_I32 trace (frac = membrane_frac).
  * A `snn.add` that is not a residual group is an ADD layer (ACT_I16 output, or
    ACT_I32 if an operand is ACT_I32); pools are POOL layers.
  * `snn.reshape` is free when the stored layout does not change (same H, W, C)
    or when it flattens [B, C, H, W] -> [B, C*H*W] and every consumer is a dense
    layer: that dense layer becomes an H x W kernel over the stored H x W map
    (output 1 x 1), its weight rows permuted from ONNX (c, h, w) to the stored
    (h, w, c_padded) order -- byte for byte a 1x1 conv with K = H*W*Cs.
  * Tiles: all channels or channel slices (multiples of 8) x output-row slices,
    chosen to fit the SRAM with double-buffered input/accumulator/output buffers
    (and double-buffered weights when the layer needs several channel tiles, so
    the next tile's weights can load during this one: see dma-prefetch); for FTP
    the row count with the fewest TPPE rounds (`_row_rounds`), the most rows on ties;
    FTP order: for each output tile, all T timesteps in lane groups of
    `timestep_lanes`, LIF state kept in SRAM between groups (the visit with
    t0 = 0 starts from rest and only writes the state).
  * Barriers: one at every layer boundary, plus one before any instruction that
    would overwrite an SRAM range read (or written) by an earlier instruction
    since the last barrier (write-after-read/write). Read-after-write on SRAM is
    left to the simulator's scoreboard.

Schedules (`#snn.schedule` and `!snn.packed` from the snn-level scheduling passes;
without them: FTP, all T per visit, no fusion, SPIKE_PLANES):
  * Dataflows (loop-reorder; descriptor field `dataflow`, docs/isa.md "Dataflows"):
    ftp = lane groups of `timestep_lanes`; ip-seq = one timestep per visit; gust =
    one timestep per visit and the reduction in k-chunks of K_CHUNK_CHANNELS input
    channels accumulated on chip (one descriptor per chunk); op = k-chunks
    outermost, partial sums stored to / loaded from a DRAM ACT_I32 scratch map
    between chunks, LIF after the last chunk.
  * Time batches (time-batch): loops batch > tiles > lane groups of the batch;
    neuron state per tile in its own SRAM slot when the layer's state fits next
    to the buffers, else stored to a DRAM scratch map after a batch and loaded
    before the next. Weights are reloaded per batch unless they are one tile.
  * Packed spikes (spike-pack): a `!snn.packed` value is a SPIKE_BITMASK map (one
    bitmask fiber per spatial row, `dma.load_bm`/`dma.store_bm`); its producer
    writes whole rows of all channels and all T bits (the out tile is kept per
    tile, stored after its last lane group); `snn.compressed_weights` stores the
    weights as column fibers.
  * Fusion (layer-fuse): `_plan_fusion` keeps maps made and used inside one group
    in SRAM (top of the SRAM, first fit over their lifetimes, at most
    FUSE_SRAM_SHARE of it); tiles move in and out with `move`; `tile_rows` caps
    the row tiles.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from snnc.backend import isa
from snnc.backend.errors import CompileError
from snnc.backend.hwconfig import HwConfig, load_hw
from snnc.backend.isa import (
    Dataflow,
    Format,
    LayerFlags,
    LayerKind,
    LifFlags,
    ResetMode,
    SynFlags,
)
from snnc.backend.isa import tile_bytes as _tile_bytes
from snnc.runtime.pe_array import visit_rounds
from snnc.passes.numerics import (
    INT32_MAX,
    NonzeroWeights,
    choose_neuron_numbers,
    channel_headroom,
    choose_weight_scales,
    current_error_bound,
    quantise_group,
)
from snnc.dialects import accel
from snnc.dialects.snn import (
    AddOp,
    AvgPool2dOp,
    Conv2dOp,
    DenseOp,
    LIFOp,
    MaxPool2dOp,
    PackedSpikeTrainType,
    ReshapeOp,
    ScheduleAttr,
    SpikeLogicOp,
    SpikeTrainType,
    int_array_value,
    main_function,
    onnx_io_names,
    schedule_of,
    tensor_value,
    train_type_of,
)
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

DRAM_ALIGN = 64  # bytes; every DRAM tensor / constant starts on a burst boundary
# accel.const symbols: a layer's weights, and a synaptic group's parameter block
WEIGHTS_CONST_PREFIX = "w_"
PARAMS_CONST_PREFIX = "p_"
SRAM_ALIGN = 16  # bytes; every SRAM buffer starts on a bank word


def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def _pad8(channels: int) -> int:
    return _align(channels, 8)


# --------------------------------------------------------------------------------------
# Feature maps in DRAM
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class FeatureMap:
    """A stored tensor [T][B][H][W][Cs] (channel-last, channels padded to 8)."""

    fmt: Format
    frac: int
    timesteps: int
    batch: int
    channels: int
    height: int
    width: int
    abs_max: float  # bound on |value| (real units), for sizing later layers
    addr: int = -1
    error: float = 0.0  # bound on |value - float reference| while spikes agree (numerics.current_error_bound)
    mask_single: bool = False  # SPIKE_BITMASK: the compressor drops single-spike words
    resident_addr: int = -1  # layer-fuse: the whole map lives in SRAM here (>= 0), not in DRAM

    @property
    def cs(self) -> int:
        return _pad8(self.channels)

    # SPIKE_BITMASK maps (spike-pack): one compressed fiber slot per spatial row (b, h)
    def word_bytes(self) -> int:
        return isa.spike_word_bytes(self.timesteps)

    def fiber_slot(self) -> int:
        return isa.fiber_slot_bytes(self.width * self.cs, self.timesteps)

    def fiber_addr(self, b: int, h: int) -> int:
        assert self.addr >= 0
        return self.addr + (b * self.height + h) * self.fiber_slot()

    @property
    def bits(self) -> int:
        return accel.element_bits(self.fmt)

    def nbytes(self) -> int:
        return accel.tensor_bytes(self.fmt, self.timesteps, self.batch, self.height, self.width, self.cs)

    def row_bytes(self) -> int:
        return self.width * self.cs * self.bits // 8

    def plane_bytes(self) -> int:
        """DRAM bytes between timestep t and t+1 of the same element."""
        return self.batch * self.height * self.row_bytes()

    def address(self, t: int, b: int, h: int, w: int = 0, c: int = 0) -> int:
        assert self.addr >= 0
        return self.addr + ((t * self.batch + b) * self.height + h) * self.row_bytes() + (w * self.cs + c) * self.bits // 8

    def int_max(self) -> int:
        """Largest integer magnitude this map can hold (for accumulator bounds)."""
        if self.fmt in (Format.SPIKE_PLANES, Format.SPIKE_BITMASK):
            return 1
        representable = (1 << (self.bits - 1)) - 1
        return min(representable, int(math.ceil(self.abs_max * 2.0**self.frac)))


@dataclass(frozen=True)
class Stored:
    """How an snn value is found in DRAM: a feature map, possibly seen flattened."""

    fmap: FeatureMap
    flattened: bool = False  # [B, C, H, W] map seen as [B, C*H*W] (dense consumers only)


# --------------------------------------------------------------------------------------
# Steps: the layers of the program, in order
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class SynapseInput:
    op: DenseOp | Conv2dOp | LIFOp  # a LIFOp for the identity synapse of a LIF on a stored map
    src: Stored
    # geometry as the accelerator sees it
    in_c: int
    in_cs: int
    in_h: int
    in_w: int
    kh: int
    kw: int
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    dil: tuple[int, int]
    # the non-zero weights (snn float32 values) in the stored [N, kh, kw, in_cs] layout;
    # None for the parts a split makes (after quantisation: their integers are sliced)
    weights: NonzeroWeights | None
    bias_real: np.ndarray  # [N]
    row_offset: int = 0  # first map row this synapse reads (a band of a split whole-map kernel)
    ch_offset: int = 0  # first stored channel this synapse reads (a k-chunk of the op/gust dataflows)

    @property
    def whole_map_kernel(self) -> bool:
        """The kernel covers the whole input map once (a flattened dense layer)."""
        return (self.kh, self.kw) == (self.in_h, self.in_w) and self.stride == (1, 1) \
            and not any(self.pads) and self.dil == (1, 1)


@dataclass(eq=False)
class GroupStep:
    synapses: list[SynapseInput]
    lif: LIFOp | None
    batch: int
    out_c: int
    out_h: int
    out_w: int
    current_out: FeatureMap | None = None
    spikes_out: FeatureMap | None = None
    membrane_out: FeatureMap | None = None
    schedule: ScheduleAttr | None = None  # from the scheduling passes (None = default FTP)
    lanes: int = 0  # timesteps per visit, fixed when the group is quantised


@dataclass(eq=False)
class PoolStep:
    op: MaxPool2dOp | AvgPool2dOp
    src: FeatureMap
    out: FeatureMap


@dataclass(eq=False)
class AddStep:
    op: AddOp | SpikeLogicOp
    a: FeatureMap
    b: FeatureMap
    out: FeatureMap


def _source(op: Operation) -> str:
    src = getattr(op, "source", None)
    return src.data if isinstance(src, StringAttr) else op.name


def _geometry(shape: tuple[int, ...], what: str) -> tuple[int, int, int, int]:
    """(B, C, H, W) of a per-step shape [B, C, H, W] or [B, N]."""
    if len(shape) == 4:
        return shape[0], shape[1], shape[2], shape[3]
    if len(shape) == 2:
        return shape[0], shape[1], 1, 1
    raise CompileError(f"{what}: per-step shape {list(shape)} is neither [B, C, H, W] nor [B, N]")


def _uses(value: SSAValue) -> list[Operation]:
    return [use.operation for use in value.uses]


class _Analysis:
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
                fm = FeatureMap(Format.SPIKE_PLANES, 0, t.num_timesteps, b, c, h, w, 1.0)
            else:
                bound = input_abs_max if input_abs_max > 0 else 2.0 ** (15 - input_frac_bits)
                fm = FeatureMap(Format.ACT_I16, input_frac_bits, t.num_timesteps, b, c, h, w, bound,
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
        raise CompileError(f"{op.name} '{_source(op)}': no accelerator lowering for this op")

    def _stored(self, value: SSAValue, consumer: Operation) -> Stored:
        stored = self.values.get(value)
        if stored is None:
            raise CompileError(f"{consumer.name} '{_source(consumer)}': operand is not stored (internal error)")
        return stored

    def _new_fmap(self, fmt: Format, frac: int, value: SSAValue, abs_max: float) -> FeatureMap:
        t = train_type_of(value)
        b, c, h, w = _geometry(t.get_shape(), f"{value.owner.name}")
        mask_single = False
        if fmt in (Format.SPIKE_PLANES, Format.SPIKE_BITMASK):  # spike-pack decides by the value's type
            packed = isinstance(t, PackedSpikeTrainType)
            fmt = Format.SPIKE_BITMASK if packed else Format.SPIKE_PLANES
            mask_single = packed and bool(t.mask_single.data)
        fm = FeatureMap(fmt, frac, t.num_timesteps, b, c, h, w, abs_max, mask_single=mask_single)
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
                    raise CompileError(f"snn.dense '{_source(syn)}': flattened map {fm.height}x{fm.width} exceeds a 255 kernel")
                weight = NonzeroWeights.relayout(w.reshape(fm.channels, fm.height, fm.width, n), (3, 1, 2, 0),
                                                 (n, fm.height, fm.width, fm.cs))
                return SynapseInput(syn, src, fm.channels, fm.cs, fm.height, fm.width, fm.height, fm.width,
                                    (1, 1), (0, 0, 0, 0), (1, 1), weight, bias)
            else:
                if fm.height != 1 or fm.width != 1 or fm.channels != k:
                    raise CompileError(f"snn.dense '{_source(syn)}': input map is {fm.channels}x{fm.height}x{fm.width}, expected [B, {k}]")
                weight = NonzeroWeights.relayout(w.reshape(k, n, 1, 1), (1, 2, 3, 0), (n, 1, 1, fm.cs))
                return SynapseInput(syn, src, k, fm.cs, 1, 1, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), weight, bias)
        if src.flattened:
            raise CompileError(f"snn.conv2d '{_source(syn)}': input is a flattened map")
        cout, cin, kh, kw = w.shape
        weight = NonzeroWeights.relayout(w, (0, 2, 3, 1), (cout, kh, kw, fm.cs))
        strides = int_array_value(syn.strides)
        pads = int_array_value(syn.pads)
        dil = int_array_value(syn.dilations)
        if max(kh, kw, *strides, *pads, *dil) > 255:
            raise CompileError(f"snn.conv2d '{_source(syn)}': kernel/stride/pad/dilation above 255")
        return SynapseInput(
            syn, src, cin, fm.cs, fm.height, fm.width, kh, kw,
            (strides[0], strides[1]), (pads[0], pads[1], pads[2], pads[3]), (dil[0], dil[1]), weight, bias,
        )

    def _group(self, anchor: Operation, synapses: list[DenseOp | Conv2dOp]) -> None:
        inputs = [self._synapse_input(s) for s in synapses]
        current = anchor.output
        b, c, h, w = _geometry(train_type_of(current).get_shape(), f"{anchor.name} '{_source(anchor)}'")
        users = _uses(current)
        lifs = [u for u in users if isinstance(u, LIFOp)]
        lif = lifs[0] if len(lifs) == 1 else None
        if len(lifs) > 1:
            raise CompileError(
                f"{anchor.name} '{_source(anchor)}': its current feeds {len(lifs)} snn.lif layers; only one is supported"
            )
        step = GroupStep(inputs, lif, b, c, h, w, schedule=schedule_of(synapses[0]))
        self.steps.append(step)
        if any(u is not lif for u in users):
            # Placeholder format/frac; fixed when the group is quantised.
            step.current_out = self._new_fmap(Format.ACT_I32, 0, current, 0.0)
        if lif is not None:
            self.fused.add(lif)
            if lif.spikes.uses.get_length():
                step.spikes_out = self._new_fmap(Format.SPIKE_PLANES, 0, lif.spikes, 1.0)
            if lif.membrane.uses.get_length():
                step.membrane_out = self._new_fmap(Format.ACT_I32, 0, lif.membrane, 0.0)

    def _lif_on_stored_map(self, lif: LIFOp) -> None:
        """A LIF whose input is a stored map (graph input, pool, add, ...): a 1x1
        identity synapse (weights 1, no bias) feeds the accumulator, then LIF as usual."""
        src = self._stored(lif.input, lif)
        if src.flattened:
            raise CompileError(f"snn.lif '{_source(lif)}': input is a flattened map; not supported")
        fm = src.fmap
        identity = NonzeroWeights(
            (fm.channels, 1, 1, fm.cs), np.arange(fm.channels) * (fm.cs + 1), np.ones(fm.channels, np.float32))
        synapse = SynapseInput(
            lif, src, fm.channels, fm.cs, fm.height, fm.width, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1),
            identity, np.zeros(fm.channels),
        )
        step = GroupStep([synapse], lif, fm.batch, fm.channels, fm.height, fm.width, schedule=schedule_of(lif))
        self.steps.append(step)
        self.fused.add(lif)
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
            raise CompileError(f"snn.reshape '{_source(op)}': the batch dimension changes ({in_shape[0]} -> {out_shape[0]})")
        b, c, h, w = _geometry(out_shape, f"snn.reshape '{_source(op)}'")
        if (c, h, w) == (fm.channels, fm.height, fm.width):
            self.values[op.output] = Stored(fm, src.flattened)  # stored layout unchanged
            return
        if len(out_shape) == 2 and c == fm.channels * fm.height * fm.width and not src.flattened:
            for user in _uses(op.output):
                if not isinstance(user, DenseOp | ReshapeOp | func.ReturnOp):
                    raise CompileError(
                        f"snn.reshape '{_source(op)}': a flattened map can only feed dense layers, "
                        f"not {user.name} '{_source(user)}'"
                    )
            self.values[op.output] = Stored(fm, flattened=True)
            return
        if src.flattened and (c, h, w) == (fm.channels * fm.height * fm.width, 1, 1):
            self.values[op.output] = src
            return
        raise CompileError(
            f"snn.reshape '{_source(op)}': {list(in_shape)} -> {list(out_shape)} changes the stored "
            "channel-last layout; only flattening [B, C, H, W] -> [B, C*H*W] before dense layers is supported"
        )

    def _pool(self, op: MaxPool2dOp | AvgPool2dOp) -> None:
        src = self._stored(op.input, op)
        if src.flattened:
            raise CompileError(f"{op.name} '{_source(op)}': input is a flattened map")
        fm = src.fmap
        if isinstance(op, MaxPool2dOp):
            fmt = fm.fmt
        else:
            fmt = Format.ACT_I32 if fm.fmt == Format.ACT_I32 else Format.ACT_I16
        # The source's scale may still be a placeholder here (a synapse group is only
        # quantised when the program is built); _pool_layer sets the real one.
        out = self._new_fmap(fmt, _pool_output_frac(op, fm, fmt), op.output, fm.abs_max)
        self.steps.append(PoolStep(op, fm, out))

    def _add(self, op: AddOp) -> None:
        a, b = self._stored(op.lhs, op), self._stored(op.rhs, op)
        if a.flattened or b.flattened:
            raise CompileError(f"snn.add '{_source(op)}': operands are flattened maps")
        fa, fb = a.fmap, b.fmap
        if (fa.channels, fa.height, fa.width) != (fb.channels, fb.height, fb.width):
            raise CompileError(f"snn.add '{_source(op)}': operand geometries differ")
        fmt = Format.ACT_I32 if Format.ACT_I32 in (fa.fmt, fb.fmt) else Format.ACT_I16
        if isinstance(op, SpikeLogicOp):  # spikes out: ADD computes OR, ADD with ADD_AND computes AND
            out = self._new_fmap(Format.SPIKE_PLANES, 0, op.output, 1.0)
            self.steps.append(AddStep(op, fa, fb, out))
            return
        # Placeholder scale, as for pools: _add_layer sets it once the operands are quantised.
        out = self._new_fmap(fmt, max(fa.frac, fb.frac), op.output, fa.abs_max + fb.abs_max)
        self.steps.append(AddStep(op, fa, fb, out))


def _pool_output_frac(op: MaxPool2dOp | AvgPool2dOp, src: "FeatureMap", fmt: Format) -> int:
    """Fractional bits of a pool's output: a max keeps the input's; an average adds
    log2(window) bits (exact for power-of-two windows) as far as the format allows."""
    if isinstance(op, MaxPool2dOp):
        return src.frac
    kh, kw = int_array_value(op.kernel)
    n = kh * kw
    frac = src.frac + (int(math.log2(n)) if n & (n - 1) == 0 else 8)
    while frac > src.frac and src.abs_max * 2.0**frac >= 2 ** (accel.element_bits(fmt) - 1):
        frac -= 1
    return frac


# --------------------------------------------------------------------------------------
# Scheduling: SRAM buffers, instruction emission with hazard barriers
# --------------------------------------------------------------------------------------


class _Emitter:
    """Appends instructions; inserts a BARRIER before a write-after-read/write on SRAM."""

    def __init__(self, layers: dict[str, accel.LayerOp]):
        self.ops: list[accel.InstructionOp] = []
        self.layers = layers
        self.touched: list[tuple[int, int, bool, bool]] = []  # since the last barrier

    def barrier(self) -> None:
        if self.ops and not isinstance(self.ops[-1], accel.BarrierOp):
            self.ops.append(accel.BarrierOp.create_with())
        self.touched = []

    def emit(self, op: accel.InstructionOp) -> None:
        layer = self.layers.get(op.layer_symbol) if op.layer_symbol else None
        operands = accel.sram_operands(op, layer)
        for o in operands:
            if not o.writes:
                continue
            for start, end, did_read, did_write in self.touched:
                if start < o.end and o.addr < end:
                    # An in-place update (reads what it writes) waits for the earlier writer.
                    if did_write and o.reads:
                        continue
                    self.barrier()
                    break
            else:
                continue
            break
        self.ops.append(op)
        self.touched.extend((o.addr, o.end, o.reads, o.writes) for o in operands)

    def dma(self, load: bool, dram_addr: int, sram_addr: int, row_bytes: int, rows: int,
            dram_stride: int, sram_stride: int, fm: FeatureMap | None = None) -> None:
        if rows == 0 or row_bytes == 0:
            return
        cls = accel.DmaLoadOp if load else accel.DmaStoreOp
        self.emit(cls.create_with(
            dram_addr=dram_addr, sram_addr=sram_addr, row_bytes=row_bytes, rows=rows,
            dram_stride=dram_stride if rows > 1 else 0, sram_stride=sram_stride if rows > 1 else 0,
        ))

    def store_tile(self, fm: FeatureMap, sram_addr: int, b: int, t0: int, nt: int,
                   row0: int, rows: int, ch0: int, chs: int) -> None:
        """DMA a tile [nt][rows][W][chs] (fm's format) to fm[t0.., b, row0.., :, ch0..]."""
        self._move_tile(False, fm, sram_addr, b, t0, nt, row0, rows, ch0, chs)

    def load_tile(self, fm: FeatureMap, sram_addr: int, b: int, t0: int, nt: int,
                  row0: int, rows: int) -> None:
        """DMA fm[t0.., b, row0..row0+rows, :, all channels] into a tile [nt][rows][W][Cs]."""
        self._move_tile(True, fm, sram_addr, b, t0, nt, row0, rows, 0, fm.cs)

    def _move_tile(self, load: bool, fm: FeatureMap, sram_addr: int, b: int, t0: int, nt: int,
                   row0: int, rows: int, ch0: int, chs: int) -> None:
        if rows == 0:
            return
        if fm.fmt == Format.SPIKE_BITMASK:
            # Compressed fibers, one per spatial row; the SRAM tile is the words [rows][W][Cs]
            # of all T timesteps (t0/nt do not matter). A fiber always holds every channel.
            if (ch0, chs) != (0, fm.cs):
                raise CompileError(f"internal: a SPIKE_BITMASK tile must hold all {fm.cs} channels, not {ch0}..{ch0 + chs}")
            flags = isa.DmaFlags.SPIKES | (isa.DmaFlags.MASK_SINGLE if fm.mask_single and not load else 0)
            cls = accel.DmaLoadBmOp if load else accel.DmaStoreBmOp
            self.emit(cls.create_with(dram_addr=fm.fiber_addr(b, row0), sram_addr=sram_addr, fibers=rows,
                                      fiber_elems=fm.width * fm.cs, word_bytes=fm.word_bytes(), elem_bits=fm.timesteps,
                                      flags=int(flags)))
            return
        eb = fm.bits
        move = self.move if fm.resident_addr >= 0 else self.dma
        if chs == fm.cs:
            step = rows * fm.width * chs * eb // 8
            move(load, fm.address(t0, b, row0), sram_addr, step, nt, fm.plane_bytes(), step, fm)
            return
        row = chs * eb // 8
        step = rows * fm.width * row
        for t in range(nt):
            move(load, fm.address(t0 + t, b, row0, 0, ch0), sram_addr + t * step,
                 row, rows * fm.width, fm.cs * eb // 8, row, fm)

    def move(self, load: bool, dram_addr: int, sram_addr: int, row_bytes: int, rows: int,
             dram_stride: int, sram_stride: int, fm: FeatureMap) -> None:
        """Like `dma`, for a map resident in SRAM (layer-fuse): its DRAM-layout address
        `dram_addr` is translated into the map's SRAM region and copied with MOVE."""
        if rows == 0 or row_bytes == 0:
            return
        resident = fm.resident_addr + (dram_addr - fm.addr)
        src, dst = (resident, sram_addr) if load else (sram_addr, resident)
        src_stride, dst_stride = (dram_stride, sram_stride) if load else (sram_stride, dram_stride)
        self.emit(accel.MoveOp.create_with(
            src_addr=src, dst_addr=dst, row_bytes=row_bytes, rows=rows,
            src_stride=src_stride if rows > 1 else 0, dst_stride=dst_stride if rows > 1 else 0))


class _SramPlan:
    """A bump allocator over the SRAM [0, limit) a layer may use: upwards from 0, or
    downwards from `limit` for every other layer. Consecutive layers then start at
    opposite ends, so the next layer's parameters, weights and first buffers need not
    overlap the buffers the previous layer's last tile uses (the set allocated first,
    nearest its end: `_last_first`), and dma-prefetch can load them while it runs."""

    def __init__(self, limit: int = 0, descending: bool = False) -> None:
        self.descending = descending
        self.top = limit // SRAM_ALIGN * SRAM_ALIGN if descending else 0

    def take(self, size: int) -> int:
        if self.descending:
            self.top = (self.top - max(size, 1)) // SRAM_ALIGN * SRAM_ALIGN
            assert self.top >= 0, "the tile sizes were checked against the SRAM (_fits)"
            return self.top
        addr = self.top
        self.top = _align(self.top + max(size, 1), SRAM_ALIGN)
        return addr


def _last_first(sets: list[dict], visits: int) -> list[dict]:
    """The buffer sets rotated so that visit `visits - 1`, the last (visit i uses set
    i % len), gets the set allocated first: the one nearest the layer's end of the SRAM,
    away from where the next layer starts (`_SramPlan`)."""
    n = len(sets)
    return [sets[(i - (visits - 1)) % n] for i in range(n)] if n else sets


def _channel_tiles(cs: int, chs: int) -> list[tuple[int, int]]:
    return [(c, min(chs, cs - c)) for c in range(0, cs, chs)]


def _row_tiles(height: int, rows: int) -> list[tuple[int, int]]:
    return [(r, min(rows, height - r)) for r in range(0, height, rows)]


def _row_rounds(height: int, rows: int, width: int, chs: int, pes: int) -> float:
    """TPPE rounds of one channel tile's row tiles (`pe_array.visit_rounds`, FTP: a stream per position)."""
    return sum(visit_rounds(n * width, chs, pes) for _, n in _row_tiles(height, rows))


def _lane_groups(timesteps: int, lanes: int) -> list[tuple[int, int]]:
    return [(t, min(lanes, timesteps - t)) for t in range(0, timesteps, lanes)]


def _input_rows(row0: int, rows: int, stride: int, pad_top: int, k: int, dil: int, in_h: int) -> tuple[int, int]:
    """Input rows [first, first + count) that output rows [row0, row0+rows) read, inside the image."""
    first = row0 * stride - pad_top
    last = (row0 + rows - 1) * stride - pad_top + (k - 1) * dil
    lo, hi = max(0, first), min(in_h - 1, last)
    return (lo, hi - lo + 1) if hi >= lo else (min(max(first, 0), in_h - 1), 0)


# --------------------------------------------------------------------------------------
# The pass
# --------------------------------------------------------------------------------------


def _split_into_bands(
    synapse: SynapseInput, weights: np.ndarray, bands: list[tuple[int, int]],
) -> tuple[list[SynapseInput], list[np.ndarray]]:
    """A whole-map kernel as one synapse per row band [r0, r0+n): each reads only its
    band (a descriptor with in_h = kh = n) and accumulates into the same tile."""
    parts, ints = [], []
    for r0, n in bands:
        parts.append(SynapseInput(
            synapse.op, synapse.src, synapse.in_c, synapse.in_cs, n, synapse.in_w, n, synapse.kw,
            (1, 1), (0, 0, 0, 0), (1, 1), None, synapse.bias_real, row_offset=r0,
        ))
        ints.append(np.ascontiguousarray(weights[:, r0:r0 + n]))
    return parts, ints


FUSE_SRAM_SHARE = 0.5  # layer-fuse: at most this share of the SRAM holds a group's resident maps
COMPRESSED_WEIGHTS_ATTR = "snn.compressed_weights"  # set by spike-pack on synapse ops


def _fiber_bytes(q: np.ndarray, nbytes: int) -> np.ndarray:
    """Per output channel: the bytes of its compressed weight fiber (pointer, bitmask, non-zeros)."""
    flat = np.asarray(q).reshape(q.shape[0], -1)
    return isa.FIBER_HEADER_BYTES + (flat.shape[1] + 7) // 8 + np.count_nonzero(flat, axis=1) * nbytes


def _tile_fiber_bytes(fiber_bytes: np.ndarray, ch0: int, chs: int) -> int:
    """SRAM bytes of output channels ch0..ch0+chs-1's fibers, packed (a KEEP_COMPRESSED weight tile)."""
    return int(fiber_bytes[ch0:ch0 + chs].sum())


def _largest_tile_fiber_bytes(fiber_bytes: np.ndarray, chs: int) -> int:
    """The weight buffer a KEEP_COMPRESSED tile of `chs` channels needs: its largest channel tile's fiber bytes."""
    return int(np.add.reduceat(fiber_bytes, np.arange(0, fiber_bytes.size, chs)).max())


def _weight_fibers(q: np.ndarray, nbytes: int, what: str) -> tuple[bytes, np.ndarray]:
    """Weights [out_cs][kh][kw][in_cs] compressed column-wise (LoAS §IV-A): one fiber per
    output channel (pointer, bitmask over its kh*kw*in_cs weights, non-zero weights), packed
    back to back (isa.DmaFlags.PACKED). Returns the bytes and each channel's fiber offset."""
    flat = np.asarray(q, np.int64).reshape(q.shape[0], -1)
    n, elems = flat.shape
    dense = np.frombuffer(_int_bytes(flat, nbytes, what), dtype=f"<u{nbytes}").reshape(n, elems)
    keep = dense != 0
    meta = isa.FIBER_HEADER_BYTES + (elems + 7) // 8
    offsets = np.concatenate([[0], np.cumsum(_fiber_bytes(flat, nbytes))]).astype(np.int64)
    out = np.zeros(int(offsets[-1]), dtype=np.uint8)
    headers = (offsets[:-1, None] + np.arange(meta)).reshape(-1)
    out[headers] = np.concatenate([keep.sum(axis=1).astype("<u4").view(np.uint8).reshape(n, 4),
                                   np.packbits(keep, axis=1, bitorder="little")], axis=1).reshape(-1)
    # every other byte is a non-zero weight, in order (row-major: channel by channel)
    values = np.ones(out.size, dtype=bool)
    values[headers] = False
    out[values] = dense[keep].view(np.uint8)
    return out.tobytes(), offsets[:-1]


K_CHUNK_CHANNELS = 8  # op/gust: the reduction is split into k-chunks of 8 stored input channels
# (one byte of a spike-plane position): GoSPA/Gamma walk k one fiber at a time (LoAS §V).
DATAFLOW_CODES = {"ftp": Dataflow.FTP, "ip-seq": Dataflow.IP_SEQ, "op": Dataflow.OP, "gust": Dataflow.GUST}


def _split_into_chunks(
    synapses: list[SynapseInput], weights: list[np.ndarray], chunk: int,
) -> tuple[list[SynapseInput], list[np.ndarray]]:
    """Each synapse as one synapse per k-chunk of `chunk` stored input channels [c0, c0+chunk):
    a descriptor with in_c/in_cs of the chunk, reading that channel slice of the map."""
    parts, ints = [], []
    for s, q in zip(synapses, weights):
        for c0 in range(0, s.in_cs, chunk):
            n = min(chunk, s.in_cs - c0)
            real = max(0, min(s.in_c, c0 + n) - c0)
            parts.append(SynapseInput(
                s.op, s.src, real, n, s.in_h, s.in_w, s.kh, s.kw, s.stride, s.pads, s.dil,
                None, s.bias_real, row_offset=s.row_offset, ch_offset=s.ch_offset + c0,
            ))
            ints.append(np.ascontiguousarray(q[..., c0:c0 + n]))
    return parts, ints


def _symbol(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "layer"
    if base[0].isdigit():
        base = "l_" + base
    sym, i = base, 1
    while sym in taken:
        sym, i = f"{base}_{i}", i + 1
    taken.add(sym)
    return sym


def _int_bytes(values: np.ndarray, nbytes: int, what: str) -> bytes:
    lo, hi = -(1 << (8 * nbytes - 1)), (1 << (8 * nbytes - 1)) - 1
    if values.dtype.kind == "i" and values.dtype.itemsize <= nbytes:  # fits by its type
        return values.astype(f"<i{nbytes}", copy=False).tobytes()
    v = np.asarray(values, np.int64)
    if v.size and (v.min() < lo or v.max() > hi):
        raise CompileError(f"{what}: value {int(v.min()) if v.min() < lo else int(v.max())} does not fit int{8 * nbytes}")
    return v.astype({1: "<i1", 2: "<i2", 4: "<i4"}[nbytes]).tobytes()


@dataclass(frozen=True)
class ConvertSnnToAccel(ModulePass):
    """Lower snn @main to one accel.program; see the module docstring."""

    name = "convert-snn-to-accel"

    hw: str = "loas"
    weight_bits: int = 0
    input_frac_bits: int = 8
    input_abs_max: float = 0.0
    sram_bytes: int = 0
    timestep_lanes: int = 0
    model_name: str = ""
    weight_scales: str = "channel"  # "channel": rounded layers get per-channel scales; "layer": one per layer

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        program = lower_to_program(op, self)
        for child in list(op.body.block.ops):
            op.body.block.detach_op(child)
            child.erase(safe_erase=False)
        op.body.block.add_op(program)


ConvertSnnToAccelPass = ConvertSnnToAccel  # the name used in the design brief


@dataclass
class _Options:
    hw: HwConfig
    weight_bits: int
    input_frac_bits: int
    input_abs_max: float
    sram: int
    lanes: int
    model_name: str
    weight_scales: str


def _options(p: ConvertSnnToAccel) -> _Options:
    hw = load_hw(p.hw)
    bits = p.weight_bits or hw.compute.weight_bits
    if not 2 <= bits <= 16:
        raise CompileError(f"weight_bits = {bits}: expected 2..16")
    if not 0 <= p.input_frac_bits <= 15:
        raise CompileError(f"input_frac_bits = {p.input_frac_bits}: expected 0..15")
    if p.weight_scales not in ("channel", "layer"):
        raise CompileError(f"weight_scales = {p.weight_scales!r}: expected 'channel' or 'layer'")
    return _Options(hw, bits, p.input_frac_bits, p.input_abs_max, p.sram_bytes or hw.sram.size_bytes,
                    p.timestep_lanes or hw.compute.timestep_lanes, p.model_name, p.weight_scales)


def lower_to_program(module: ModuleOp, pass_options: ConvertSnnToAccel) -> accel.ProgramOp:
    """Build the accel.program for the snn module (the module is not modified)."""
    opts = _options(pass_options)
    analysis = _Analysis(main_function(module), opts.input_frac_bits, opts.input_abs_max)
    return _Lowering(analysis, opts).build()


@dataclass
class _Consts:
    """The DRAM constants image, built in program order."""

    ops: list[accel.ConstOp] = field(default_factory=list)
    top: int = 0
    names: set[str] = field(default_factory=set)

    def add(self, name: str, data: bytes) -> int:
        addr = self.top
        self.ops.append(accel.ConstOp.create_with(_symbol(name, self.names), addr, data))
        self.top = _align(addr + len(data), DRAM_ALIGN)
        return addr


class _Lowering:
    def __init__(self, analysis: _Analysis, opts: _Options):
        self.a = analysis
        self.o = opts
        self.T = analysis.timesteps
        self.layers: list[accel.LayerOp] = []
        self.layer_by_sym: dict[str, accel.LayerOp] = {}
        self.symbols: set[str] = set()  # one namespace for layers and constants
        self.consts = _Consts(names=self.symbols)
        self.emitter = _Emitter(self.layer_by_sym)
        self.work: list[dict] = []  # per step: its "schedule" method and data, run after DRAM allocation
        self.avail = opts.sram  # SRAM the current step may use (less in a fused group)
        self.tile_rows = 0  # layer-fuse: cap on output rows per tile (0 = none)

    def _layer(self, source: str, notes: list[str], **fields: int) -> accel.LayerOp:
        sym = _symbol(source, self.symbols)
        layer = accel.LayerOp.create_with(sym, source, "; ".join(notes) or None, timesteps=self.T, **fields)
        self.layers.append(layer)
        self.layer_by_sym[sym] = layer
        return layer

    def build(self) -> accel.ProgramOp:
        # 0. Layer fusion: maps made and used inside one group stay in SRAM (top of it).
        reserved = self._plan_fusion()
        # 1. Quantise every step, creating layer descriptors and constants.
        for step, taken in zip(self.a.steps, reserved):
            self.avail = self.o.sram - taken
            self.tile_rows = self._schedule_of(step).tile_rows.data if self._group_of(step) >= 0 else 0
            if isinstance(step, GroupStep):
                self.work.append(self._quantise_group(step))
            elif isinstance(step, PoolStep):
                self.work.append(self._pool_layer(step))
            else:
                self.work.append(self._add_layer(step))
            # every other layer allocates its SRAM from the top of what it may use (_SramPlan)
            self.work[-1]["sram_plan"] = (self.avail, len(self.work) % 2 == 0)
        # 2. DRAM: constants, then I/O and intermediate feature maps in creation order.
        top = self.consts.top
        for fm in self.a.fmaps:
            fm.addr = top
            top = _align(top + fm.nbytes(), DRAM_ALIGN)
        dram_size = max(top, DRAM_ALIGN)
        # 3. Schedule.
        for w in self.work:
            self.emitter.barrier()  # layer boundary: earlier layers' stores are complete
            w["schedule"](w)
        io_ops = self._io_ops()
        return accel.ProgramOp.create_with(
            [*self.consts.ops, *io_ops, *self.layers, *self.emitter.ops],
            model_name=self.o.model_name, hw_toml=self.o.hw.to_toml(), dram_size=dram_size,
            sram_size=self.o.sram, timesteps=self.T,
        )

    # -- layer fusion (passes/layer_fuse.py) ---------------------------------------------
    @staticmethod
    def _schedule_of(step) -> ScheduleAttr:
        sched = step.schedule if isinstance(step, GroupStep) else schedule_of(step.op)
        return sched or ScheduleAttr()

    def _group_of(self, step) -> int:
        return self._schedule_of(step).group.data

    @staticmethod
    def _step_maps(step) -> tuple[list[FeatureMap], list[FeatureMap]]:
        """(maps the step reads, maps it writes)."""
        if isinstance(step, GroupStep):
            outs = [m for m in (step.current_out, step.spikes_out, step.membrane_out) if m is not None]
            return [s.src.fmap for s in step.synapses], outs
        if isinstance(step, PoolStep):
            return [step.src], [step.out]
        return [step.a, step.b], [step.out]

    def _plan_fusion(self) -> list[int]:
        """Mark the maps that stay resident in SRAM; returns the SRAM bytes reserved
        for them at each step (only maps alive at that step count).

        A map is resident when its producer and every consumer are in the same fusion
        group, it is not a graph input/output, not SPIKE_BITMASK (those move as DRAM
        fibers), and it fits in the top FUSE_SRAM_SHARE of the SRAM next to the other
        resident maps alive at the same time (first fit, from the top down). The
        layers tile in the SRAM below the resident maps alive during their step."""
        steps = self.a.steps
        producer: dict[FeatureMap, int] = {}
        consumers: dict[FeatureMap, list[int]] = {}
        for i, step in enumerate(steps):
            ins, outs = self._step_maps(step)
            for fm in ins:
                consumers.setdefault(fm, []).append(i)
            for fm in outs:
                producer[fm] = i
        io = {self.a.values[v].fmap for _, v in (*self.a.inputs, *self.a.outputs)}
        budget = int(self.o.sram * FUSE_SRAM_SHARE)
        placed: list[tuple[int, int, int, int]] = []  # (first step, last step, top offset, end offset)
        for fm in self.a.fmaps:
            if fm not in producer or fm in io or fm.fmt == Format.SPIKE_BITMASK or not consumers.get(fm):
                continue
            group = self._group_of(steps[producer[fm]])
            if group < 0 or any(self._group_of(steps[c]) != group for c in consumers[fm]):
                continue
            first, last = producer[fm], max(consumers[fm])
            size = _align(fm.nbytes(), SRAM_ALIGN)
            busy = sorted((lo, hi) for a, b, lo, hi in placed if a <= last and first <= b)
            offset = 0
            for lo, hi in busy:
                if offset + size <= lo:
                    break
                offset = max(offset, hi)
            if offset + size > budget:
                continue
            placed.append((first, last, offset, offset + size))
            fm.resident_addr = self.o.sram - offset - size
        return [max((hi for a, b, _, hi in placed if a <= i <= b), default=0) for i in range(len(steps))]

    def _io_ops(self) -> list[accel.IoOp]:
        ops = []
        for is_output, entries in ((False, self.a.inputs), (True, self.a.outputs)):
            for name, value in entries:
                fm = self.a.values[value].fmap
                t = train_type_of(value)
                ops.append(accel.IoOp.create_with(
                    name, is_output, (t.num_timesteps, *t.get_shape()),
                    error_bound=fm.error if is_output and fm.fmt in (Format.ACT_I16, Format.ACT_I32) else None,
                    dram_addr=fm.addr, format=int(fm.fmt), frac_bits=fm.frac, timesteps=fm.timesteps,
                    batch=fm.batch, channels=fm.channels, channels_stored=fm.cs, height=fm.height, width=fm.width,
                ))
        return ops

    # -- synaptic groups ----------------------------------------------------------------
    def _quantise_group(self, step: GroupStep) -> dict:
        syns = step.synapses
        head = syns[0]
        where = f"{head.op.name} '{_source(head.op)}'"
        notes: list[str] = []
        in_fracs = [s.src.fmap.frac for s in syns]
        scales = choose_weight_scales([s.weights.values for s in syns], in_fracs, self.o.weight_bits)
        if not scales.exact:
            notes.append("weights rounded")
        weight_bytes = 1 if self.o.weight_bits <= 8 else 2
        out_cs = _pad8(step.out_c)
        bias_real = sum(s.bias_real for s in syns)
        group = [(s.weights, fw, s.src.fmap.int_max()) for s, fw in zip(syns, scales.weight_fracs)]
        ints = quantise_group(group, bias_real, scales.acc_frac, out_cs, weight_bytes, where)
        # Bound on the real current per step (at the layer's scale), and on its rounding error.
        current_bound = float(ints.acc_bound.max(initial=0.0)) * 2.0**-scales.acc_frac
        errors = [(s.weights, fw, s.src.fmap.abs_max, s.src.fmap.error) for s, fw in zip(syns, scales.weight_fracs)]
        current_error = current_error_bound(errors, bias_real, scales.acc_frac)

        lif = step.lif
        fields = dict(
            kind=LayerKind.CONV, out_c=step.out_c, out_cs=out_cs, out_h=step.out_h, out_w=step.out_w,
            weight_bytes=weight_bytes,
        )
        if lif is not None:
            per_channel = any(
                lif.parameter(n) is not None and np.ndim(lif.parameter(n)) == 1
                for n in ("beta", "tau", "threshold", "v_reset")
            )
            param_c = step.out_c if per_channel else 1
            nn = None
            if self.o.weight_scales == "channel" and not scales.exact and step.membrane_out is None \
                    and step.current_out is None:  # stored values keep one scale per map
                headroom = channel_headroom([s.weights for s in syns], scales.weight_fracs, self.o.weight_bits,
                                            step.out_c)
                nn = choose_neuron_numbers(lif, scales.acc_frac, current_bound, self.T, step.out_c, current_error,
                                           headroom=headroom, channel_acc_bound=ints.acc_bound)
                if nn.channel_shift.any():  # numerics.py, "Per-channel weight scales"
                    per_channel, param_c, shift = True, step.out_c, nn.channel_shift
                    ints = quantise_group(group, bias_real, scales.acc_frac, out_cs, weight_bytes, where, shift)
                    current_error = current_error_bound(errors, bias_real, scales.acc_frac, shift)
                    nn = choose_neuron_numbers(lif, scales.acc_frac, current_bound, self.T, param_c, current_error,
                                               channel_shift=shift)
                else:
                    nn = None
            if nn is None:
                nn = choose_neuron_numbers(lif, scales.acc_frac, current_bound, self.T, param_c, current_error)
            if not -128 <= nn.acc_shift <= 127:
                raise CompileError(f"{where}: acc_shift {nn.acc_shift} out of range")
            flags = (LifFlags.COMPARE_GT if lif.compare.data == "gt" else 0) \
                | (LifFlags.DELAYED_RESET if lif.reset_timing.data == "delayed" else 0) \
                | (LifFlags.PER_CHANNEL if per_channel else 0) \
                | (LifFlags.NO_FIRE if lif.no_fire is not None else 0)
            reset = {"subtract": ResetMode.SUBTRACT, "zero": ResetMode.ZERO, "to_value": ResetMode.TO_VALUE}[lif.reset.data]
            fields.update(
                out_format=step.spikes_out.fmt if step.spikes_out is not None else Format.SPIKE_PLANES,
                leak=nn.leak_form, reset=reset, lif_flags=int(flags),
                acc_shift=nn.acc_shift, leak_frac=nn.leak_frac, membrane_frac=nn.membrane_frac, param_c=param_c,
            )
            thr, leak, v_reset = nn.threshold, nn.leak, nn.v_reset
            if step.membrane_out is not None:
                step.membrane_out.frac = nn.membrane_frac
                step.membrane_out.abs_max = nn.membrane_bound
                step.membrane_out.error = nn.membrane_error
        else:
            param_c = 1
            fields.update(out_format=Format.ACT_I32, out_frac=scales.acc_frac, param_c=1)
            thr, leak, v_reset = np.zeros(1), np.ones(1), np.zeros(1)
        if not ints.bias_exact:
            notes.append("bias rounded")
        if ints.acc_bound.max(initial=0.0) > INT32_MAX:
            notes.append("accumulator may overflow int32 for extreme inputs")
        if lif is not None:
            notes.extend(nn.notes)
        weights_int, bias_int = ints.weights, ints.bias
        if step.current_out is not None:
            step.current_out.frac = scales.acc_frac
            step.current_out.abs_max = current_bound
            step.current_out.error = current_error
        if not -128 <= scales.acc_frac <= 127:
            raise CompileError(f"{where}: accumulator fraction {scales.acc_frac} out of range")

        params = np.concatenate([
            bias_int.astype(np.int64),
            np.broadcast_to(np.asarray(thr, np.int64), (param_c,)),
            np.broadcast_to(np.asarray(leak, np.int64), (param_c,)),
            np.broadcast_to(np.asarray(v_reset, np.int64), (param_c,)),
        ])
        # The schedule (passes/loop_reorder.py, time_batch.py): lanes per visit, k-chunks.
        schedule = step.schedule or ScheduleAttr()
        dataflow = DATAFLOW_CODES[schedule.dataflow.data]
        time_batch = min(schedule.batch.data or self.T, self.T)
        step.lanes = min(self.o.lanes, self.T, time_batch) if dataflow == Dataflow.FTP else 1
        chunked = dataflow in (Dataflow.OP, Dataflow.GUST)
        if chunked and any(s.src.fmap.fmt == Format.SPIKE_BITMASK for s in syns):
            raise CompileError(
                f"{where}: dataflow {schedule.dataflow.data} reads k-chunks (channel slices) of its input, but the "
                "input is spike-packed (whole bitmask fibers); use loop-reorder{dataflow=ftp} or ip-seq with spike-pack")
        if step.spikes_out is not None and step.spikes_out.fmt == Format.SPIKE_BITMASK and time_batch < self.T:
            raise CompileError(
                f"{where}: its spikes are spike-packed (all T bits in one word) but time-batch visits "
                f"{time_batch} of {self.T} timesteps at a time; use time-batch{{timesteps={self.T}}} or no spike-pack")
        if chunked:
            syns, weights_int = _split_into_chunks(syns, weights_int, K_CHUNK_CHANNELS)
            step.synapses = syns
        fields["dataflow"] = int(dataflow)
        compressed = COMPRESSED_WEIGHTS_ATTR in getattr(head.op, "attributes", {})
        # compressed weights stay compressed in SRAM (LoAS's FiberCache): per synapse, each
        # output channel's fiber bytes size the weight buffers
        fiber_bytes = [_fiber_bytes(q, weight_bytes) for q in weights_int] if compressed else None
        tiling = self._choose_group_tiles(step, weight_bytes, len(params) * 4, where, allow_bands=not chunked,
                                          fiber_bytes=fiber_bytes, round_aware=dataflow == Dataflow.FTP)
        if tiling["bands"] is not None:  # streamed in row bands: the band buffer holds dense weights
            syns, weights_int = _split_into_bands(syns[0], weights_int[0], tiling["bands"])
            step.synapses = syns
            fiber_bytes = None
        tiling["batches"] = _lane_groups(self.T, time_batch)
        tiling["psum"] = None
        if dataflow == Dataflow.OP and len(syns) > 1:  # partial sums go to DRAM between k-chunks
            tiling["psum"] = FeatureMap(Format.ACT_I32, 0, self.T, step.batch, out_cs, step.out_h, step.out_w, 0.0)
            self.a.fmaps.append(tiling["psum"])
        tiles = len(_channel_tiles(out_cs, tiling["chs"])) * step.batch * len(_row_tiles(step.out_h, tiling["rows"]))
        tiling["tiles"], tiling["state"], tiling["state_spill"] = tiles, "copies", None
        if lif is not None and len(tiling["batches"]) > 1 and tiles > tiling["copies"]:
            # Neuron state must survive from one time batch to the next.
            free = self.avail - self._fits(tiling["sizes"], tiling["copies"], tiling["w_copies"])
            if tiles * _align(tiling["sizes"]["state"], SRAM_ALIGN) <= free:
                tiling["state"] = "resident"  # one SRAM slot per tile
            else:
                tiling["state"] = "spill"  # SRAM is short: DRAM between batches
                tiling["state_spill"] = FeatureMap(Format.ACT_I32, 0, 2, step.batch, out_cs, step.out_h, step.out_w, 0.0)
                self.a.fmaps.append(tiling["state_spill"])

        layer_syms = []
        for s, q in zip(syns, weights_int):
            fmap = s.src.fmap
            layer = self._layer(
                _source(s.op), notes, in_format=fmap.fmt, in_frac=fmap.frac,
                in_c=s.in_c, in_cs=s.in_cs, in_h=s.in_h, in_w=s.in_w, kh=s.kh, kw=s.kw,
                stride_h=s.stride[0], stride_w=s.stride[1], pad_top=s.pads[0], pad_left=s.pads[1],
                pad_bottom=s.pads[2], pad_right=s.pads[3], dil_h=s.dil[0], dil_w=s.dil[1], **fields,
            )
            layer_syms.append(layer.symbol)
        head_sym = layer_syms[0]
        w_addrs, fiber_offsets = [], []
        for sym, q in zip(layer_syms, weights_int):
            if compressed:
                data, offsets = _weight_fibers(q, weight_bytes, f"{where}: weight")
                fiber_offsets.append(offsets)
            else:
                data = _int_bytes(q, weight_bytes, f"{where}: weight")
            w_addrs.append(self.consts.add(f"{WEIGHTS_CONST_PREFIX}{sym}", data))
        p_addr = self.consts.add(f"{PARAMS_CONST_PREFIX}{head_sym}", _int_bytes(params, 4, f"{where}: parameter"))
        return dict(
            schedule=self._schedule_group, step=step, syms=layer_syms, w_addrs=w_addrs, p_addr=p_addr,
            compressed=compressed, fiber_offsets=fiber_offsets, sram_fibers=fiber_bytes,
            p_bytes=len(params) * 4, weight_bytes=weight_bytes, out_cs=out_cs, tiling=tiling,
        )

    def _group_buffers(self, step: GroupStep, weight_bytes: int, param_bytes: int, rows: int, chs: int,
                       band: int | None = None, fiber_bytes: list[np.ndarray] | None = None) -> dict[str, int]:
        """SRAM buffer sizes of a group for a tile of rows x chs. "params" and "w<i>"
        (resident weights) exist once; every other buffer once per copy. With `band`,
        the single whole-map synapse is streamed in bands of that many rows through
        "band_w" / "band_in"."""
        lanes, wo = step.lanes or min(self.o.lanes, self.T), step.out_w
        sizes = {"params": param_bytes}
        for i, s in enumerate(step.synapses):
            if band is not None:
                sizes["band_w"] = chs * band * s.kw * s.in_cs * weight_bytes
                sizes["band_in"] = _tile_bytes(s.src.fmap.fmt, lanes, band * s.in_w * s.in_cs, self.T)
                continue
            in_rows = min(s.in_h, (rows - 1) * s.stride[0] + (s.kh - 1) * s.dil[0] + 1)
            sizes[f"w{i}"] = (chs * s.kh * s.kw * s.in_cs * weight_bytes if fiber_bytes is None
                              else _largest_tile_fiber_bytes(fiber_bytes[i], chs))
            sizes[f"in{i}"] = _tile_bytes(s.src.fmap.fmt, lanes, in_rows * s.in_w * s.in_cs, self.T)
        elems = rows * wo * chs
        sizes["acc"] = 4 * lanes * elems
        if step.lif is not None:
            sizes["state"] = 8 * elems
            sizes["spk"] = isa.spike_word_bytes(lanes) * elems
            if step.membrane_out is not None:
                sizes["mem"] = 4 * lanes * elems
            if step.spikes_out is not None:
                sizes["out"] = _tile_bytes(step.spikes_out.fmt, lanes, elems, self.T)
        return sizes

    @staticmethod
    def _fits(sizes: dict[str, int], copies: int, weight_copies: int = 1) -> int:
        total = 0
        for name, size in sizes.items():
            n = 1 if name == "params" else weight_copies if name.startswith("w") else copies
            total += n * _align(max(size, 1), SRAM_ALIGN)
        return total

    def _choose_group_tiles(self, step: GroupStep, weight_bytes: int, param_bytes: int, where: str,
                            allow_bands: bool = True, fiber_bytes: list[np.ndarray] | None = None,
                            round_aware: bool = False) -> dict:
        """The tile shape: the most channels, then the most rows that fit the SRAM.
        `round_aware` (FTP: a TPPE per output position): among the row counts that fit,
        the fewest TPPE rounds over the layer's row tiles (`_row_rounds`), the most rows on
        ties: 8-wide rows in tiles of 3 leave half of every second round idle, tiles of 2 do not."""
        out_cs = _pad8(step.out_c)
        chs_options = sorted({_pad8(-(-out_cs // k)) for k in range(1, out_cs // 8 + 1)}, reverse=True)
        if step.spikes_out is not None and step.spikes_out.fmt == Format.SPIKE_BITMASK:
            chs_options = [out_cs]  # a compressed fiber is a whole spatial row: all channels
        # Several channel tiles: double-buffer their weights too, so the next tile's weights
        # load while this one computes (dma-prefetch hoists the loads); else one weight copy.
        for copies, double_weights in ((2, True), (2, False), (1, False)):
            for chs in chs_options:
                w_copies = 2 if double_weights and chs < out_cs else 1
                for rows in range(min(step.out_h, self.tile_rows or step.out_h), 0, -1):
                    sizes = self._group_buffers(step, weight_bytes, param_bytes, rows, chs, fiber_bytes=fiber_bytes)
                    if self._fits(sizes, copies, w_copies) <= self.avail:
                        if round_aware:  # fewer rows need less SRAM: all of 1..rows fit too
                            pes = self.o.hw.compute.num_pes
                            rows = min(range(rows, 0, -1), key=lambda r: _row_rounds(step.out_h, r, step.out_w, chs, pes))
                            sizes = self._group_buffers(step, weight_bytes, param_bytes, rows, chs,
                                                        fiber_bytes=fiber_bytes)
                        return dict(rows=rows, chs=chs, copies=copies, w_copies=w_copies, sizes=sizes, bands=None)
        synapse = step.synapses[0]
        if allow_bands and len(step.synapses) == 1 and synapse.whole_map_kernel and synapse.in_h > 1:
            # The reduction does not fit: stream the kernel in row bands, accumulating.
            for copies in (2, 1):
                for chs in chs_options:
                    for band in range(synapse.in_h - 1, 0, -1):
                        sizes = self._group_buffers(step, weight_bytes, param_bytes, 1, chs, band)
                        if self._fits(sizes, copies) <= self.avail:
                            bands = [(r, min(band, synapse.in_h - r)) for r in range(0, synapse.in_h, band)]
                            return dict(rows=1, chs=chs, copies=copies, w_copies=1, sizes=sizes, bands=bands)
        fused = " (the rest holds fused feature maps)" if self.avail < self.o.sram else ""
        if chs_options == [out_cs] and out_cs > 8:  # spike-pack: packed rows need every channel at once
            need = self._fits(self._group_buffers(step, weight_bytes, param_bytes, 1, out_cs, fiber_bytes=fiber_bytes), 1)
            raise CompileError(
                f"{where}: its spike-packed output is written by whole rows of all {out_cs} channels, and a 1-row tile "
                f"of all of them needs {need} bytes of SRAM, more than {self.avail}{fused}; keep this layer's output "
                "unpacked (run spike-pack only on models whose layers fit whole)")
        raise CompileError(f"{where}: even a 1-row x 8-channel tile does not fit in {self.avail} bytes of SRAM" + fused)

    def _load_weights(self, w: dict, i: int, ch0: int, chs: int, sram_addr: int) -> None:
        """Weights of output channels ch0..ch0+chs of synapse i into SRAM [chs][kh][kw][in_cs]."""
        s = w["step"].synapses[i]
        elems = s.kh * s.kw * s.in_cs
        if w["compressed"]:  # compress-weights: column-wise bitmask fibers, one per output channel, packed
            keep = w["sram_fibers"] is not None  # the fibers stay compressed in SRAM
            self.emitter.emit(accel.DmaLoadBmOp.create_with(
                dram_addr=w["w_addrs"][i] + int(w["fiber_offsets"][i][ch0]), sram_addr=sram_addr, fibers=chs,
                fiber_elems=elems, word_bytes=w["weight_bytes"], elem_bits=8 * w["weight_bytes"],
                flags=int(isa.DmaFlags.PACKED | (isa.DmaFlags.KEEP_COMPRESSED if keep else 0)),
                sram_bytes=_tile_fiber_bytes(w["sram_fibers"][i], ch0, chs) if keep else 0))
            return
        per_channel = elems * w["weight_bytes"]
        self.emitter.dma(True, w["w_addrs"][i] + ch0 * per_channel, sram_addr, chs * per_channel, 1, 0, 0)

    def _schedule_group(self, w: dict) -> None:
        """Emit a synaptic group. Loops, outermost first (see "Dataflows" in the docstring):
        time batches > k passes (op: one per k-chunk; else one) > channel tiles > batch
        > row tiles > lane groups of the time batch > synapses (k-chunks)."""
        step: GroupStep = w["step"]
        tiling = w["tiling"]
        sizes, copies = tiling["sizes"], tiling["copies"]
        plan = _SramPlan(*w["sram_plan"])
        single = {name: plan.take(size) for name, size in sizes.items() if name == "params"}
        weight_bufs = {name: [plan.take(size) for _ in range(tiling["w_copies"])]
                       for name, size in sizes.items() if name.startswith("w")}
        sets = [{name: plan.take(size) for name, size in sizes.items() if name not in single and name not in weight_bufs}
                for _ in range(copies)]
        k_count = len(step.synapses) if tiling["psum"] is not None else 1
        visits = k_count * len(_channel_tiles(w["out_cs"], tiling["chs"])) * step.batch * sum(
            len(_row_tiles(step.out_h, tiling["rows"])) * len(_lane_groups(tbn, step.lanes))
            for _, tbn in tiling["batches"])
        sets = _last_first(sets, visits)
        resident = [plan.take(sizes["state"]) for _ in range(tiling["tiles"])] if tiling["state"] == "resident" else []
        em = self.emitter
        em.dma(True, w["p_addr"], single["params"], w["p_bytes"], 1, 0, 0)
        head, syms = w["syms"][0], w["syms"]
        T, lanes = self.T, step.lanes
        iteration = band_index = 0
        streamed = tiling["bands"] is not None
        psum, spill = tiling["psum"], tiling["state_spill"]
        packed = step.spikes_out is not None and step.spikes_out.fmt == Format.SPIKE_BITMASK
        k_passes = [[i] for i in range(len(step.synapses))] if psum is not None else [list(range(len(step.synapses)))]
        for tb0, tbn in tiling["batches"]:
            for kp, members in enumerate(k_passes):
                last_pass = kp == len(k_passes) - 1
                tile_no = 0
                ch_tiles = _channel_tiles(w["out_cs"], tiling["chs"])
                for ch_index, (ch0, chs) in enumerate(ch_tiles):
                    w_slot = ch_index % tiling["w_copies"]
                    # Weights stay in SRAM from one time batch to the next when nothing replaced them.
                    reuse = tb0 > 0 and len(ch_tiles) == 1 and len(k_passes) == 1
                    for i in (members if not (streamed or reuse) else ()):
                        self._load_weights(w, i, ch0, chs, weight_bufs[f"w{i}"][w_slot])
                    for b in range(step.batch):
                        for row0, rows in _row_tiles(step.out_h, tiling["rows"]):
                            state = resident[tile_no] if resident else sets[tile_no % copies].get("state")
                            packed_out = sets[tile_no % copies].get("out") if packed else None
                            tile_no += 1
                            if spill is not None and last_pass and tb0 > 0:
                                em._move_tile(True, spill, state, b, 0, 2, row0, rows, ch0, chs)
                            for t0, nt in _lane_groups(tbn, lanes):
                                t0 += tb0
                                buf = sets[iteration % copies]
                                iteration += 1
                                tile = dict(batch=b, t0=t0, nt=nt, row0=row0, rows=rows, ch0=ch0, chs=chs)
                                if kp > 0:  # op: the partial sums of the earlier k-chunks
                                    em._move_tile(True, psum, buf["acc"], b, t0, nt, row0, rows, ch0, chs)
                                for i in members:
                                    s = step.synapses[i]
                                    if streamed:
                                        band_buf = sets[band_index % copies]
                                        band_index += 1
                                        in_addr, w_addr = band_buf["band_in"], band_buf["band_w"]
                                        self._load_weights(w, i, ch0, chs, w_addr)
                                    else:
                                        in_addr, w_addr = buf[f"in{i}"], weight_bufs[f"w{i}"][w_slot]
                                    in_row0, in_rows = _input_rows(row0, rows, s.stride[0], s.pads[0], s.kh, s.dil[0], s.in_h)
                                    if s.ch_offset or s.in_cs != s.src.fmap.cs:  # a k-chunk: a channel slice
                                        em._move_tile(True, s.src.fmap, in_addr, b, t0, nt, in_row0 + s.row_offset,
                                                      in_rows, s.ch_offset, s.in_cs)
                                    else:
                                        em.load_tile(s.src.fmap, in_addr, b, t0, nt, in_row0 + s.row_offset, in_rows)
                                    w_bytes = (_tile_fiber_bytes(w["sram_fibers"][i], ch0, chs)
                                               if w["sram_fibers"] is not None else 0)
                                    em.emit(accel.SynOp.create_with(
                                        syms[i], **tile, in_row0=in_row0, in_rows=in_rows,
                                        flags=int((SynFlags.ACCUMULATE if (i or kp) else 0)
                                                  | (SynFlags.COMPRESSED_WEIGHTS if w_bytes else 0)),
                                        in_addr=in_addr, w_addr=w_addr, param_addr=single["params"], acc_addr=buf["acc"],
                                        w_bytes=w_bytes,
                                    ))
                                if not last_pass:
                                    em.store_tile(psum, buf["acc"], b, t0, nt, row0, rows, ch0, chs)
                                    continue
                                if step.current_out is not None:
                                    em.store_tile(step.current_out, buf["acc"], b, t0, nt, row0, rows, ch0, chs)
                                if step.lif is None:
                                    continue
                                em.emit(accel.LifOp.create_with(
                                    head, **tile, acc_addr=buf["acc"], param_addr=single["params"], state_addr=state,
                                    spk_addr=buf["spk"], mem_addr=buf.get("mem", isa.NO_ADDRESS),
                                ))
                                if step.membrane_out is not None:
                                    em.store_tile(step.membrane_out, buf["mem"], b, t0, nt, row0, rows, ch0, chs)
                                if step.spikes_out is not None:
                                    out_addr = packed_out if packed else buf["out"]
                                    em.emit(accel.PackOp.create_with(head, **tile, spk_addr=buf["spk"], out_addr=out_addr))
                                    if not packed:
                                        em.store_tile(step.spikes_out, buf["out"], b, t0, nt, row0, rows, ch0, chs)
                            if packed and last_pass:  # all T bits of the tile's words are written
                                em.store_tile(step.spikes_out, packed_out, b, 0, T, row0, rows, ch0, chs)
                            if spill is not None and last_pass and tb0 + tbn < T:
                                em.store_tile(spill, state, b, 0, 2, row0, rows, ch0, chs)

    # -- pools --------------------------------------------------------------------------
    def _pool_layer(self, step: PoolStep) -> dict:
        op, src, out = step.op, step.src, step.out
        out.frac, out.abs_max = _pool_output_frac(op, src, out.fmt), src.abs_max  # src is quantised now
        kh, kw = int_array_value(op.kernel)
        sh, sw = int_array_value(op.strides)
        pads = int_array_value(op.pads)
        where = f"{op.name} '{_source(op)}'"
        notes: list[str] = []
        fields = dict(kind=LayerKind.MAXPOOL)
        if isinstance(op, AvgPool2dOp):
            include_pad = op.count_include_pad is not None
            if any(pads) and not include_pad:
                # The machine rescales 1/(kh*kw) to 1/count at the border: a floor division.
                notes.append("average excluding padding divides border windows with rounding")
            n = kh * kw
            extra = out.frac - src.frac
            if n & (n - 1) == 0 and extra == int(math.log2(n)):
                recip, shift = 1, 0  # sum * 2^-log2(n): exact
            else:
                recip, shift = round(2**16 / n), 16 - extra
                notes.append(f"average over {n} elements rounded")
            fields = dict(kind=LayerKind.AVGPOOL, avg_recip=recip, avg_shift=shift, flags=1 if include_pad else 0)
        out.error = src.error + (2.0**-out.frac if notes else 0.0)  # a rounded mean: within one step
        if max(kh, kw, sh, sw, *pads) > 255:
            raise CompileError(f"{where}: kernel/stride/pad above 255")
        layer = self._layer(
            _source(op), notes, in_format=src.fmt, in_frac=src.frac, out_format=out.fmt, out_frac=out.frac,
            in_c=src.channels, in_cs=src.cs, in_h=src.height, in_w=src.width,
            out_c=out.channels, out_cs=out.cs, out_h=out.height, out_w=out.width, kh=kh, kw=kw,
            stride_h=sh, stride_w=sw, pad_top=pads[0], pad_left=pads[1], pad_bottom=pads[2], pad_right=pads[3],
            dil_h=1, dil_w=1, param_c=0, **fields,
        )
        # A packed (bitmask) output is compressed per whole word: one visit covers all T.
        lanes = self.T if out.fmt == Format.SPIKE_BITMASK else min(self.o.lanes, self.T)

        def sizes(rows: int) -> dict[str, int]:
            in_rows = min(src.height, (rows - 1) * sh + kh)
            return {"in": _tile_bytes(src.fmt, lanes, in_rows * src.width * src.cs, self.T),
                    "out": _tile_bytes(out.fmt, lanes, rows * out.width * out.cs, self.T)}

        rows = self._largest_rows(out.height, sizes, where)
        return dict(schedule=self._schedule_pool, step=step, sym=layer.symbol, rows=rows, sizes=sizes(rows),
                    kh=kh, sh=sh, pad_top=pads[0])

    def _largest_rows(self, height: int, sizes, where: str) -> int:
        for rows in range(min(height, self.tile_rows or height), 0, -1):
            if self._fits(sizes(rows), 2) <= self.avail:  # double-buffered
                return rows
        raise CompileError(f"{where}: even a 1-row tile does not fit in {self.avail} bytes of SRAM"
                           + (" (the rest holds fused feature maps)" if self.avail < self.o.sram else ""))

    def _schedule_pool(self, w: dict) -> None:
        step: PoolStep = w["step"]
        src, out = step.src, step.out
        plan = _SramPlan(*w["sram_plan"])
        sets = [{name: plan.take(size) for name, size in w["sizes"].items()} for _ in range(2)]
        em, lanes, iteration = self.emitter, min(self.o.lanes, self.T), 0
        if out.fmt == Format.SPIKE_BITMASK:
            lanes = self.T
        sets = _last_first(sets, src.batch * len(_row_tiles(out.height, w["rows"])) * len(_lane_groups(self.T, lanes)))
        for b in range(src.batch):
            for row0, rows in _row_tiles(out.height, w["rows"]):
                in_row0, in_rows = _input_rows(row0, rows, w["sh"], w["pad_top"], w["kh"], 1, src.height)
                for t0, nt in _lane_groups(self.T, lanes):
                    buf = sets[iteration % 2]
                    iteration += 1
                    em.load_tile(src, buf["in"], b, t0, nt, in_row0, in_rows)
                    em.emit(accel.PoolOp.create_with(
                        w["sym"], batch=b, t0=t0, nt=nt, row0=row0, rows=rows, ch0=0, chs=out.cs,
                        in_row0=in_row0, in_rows=in_rows, in_addr=buf["in"], out_addr=buf["out"],
                    ))
                    em.store_tile(out, buf["out"], b, t0, nt, row0, rows, 0, out.cs)

    # -- residual / SEW adds ------------------------------------------------------------
    def _add_layer(self, step: AddStep) -> dict:
        a, b, out = step.a, step.b, step.out
        out.frac, out.abs_max = max(a.frac, b.frac), a.abs_max + b.abs_max  # operands are quantised now
        out.error = a.error + b.error
        notes = []
        if out.fmt == Format.ACT_I16 and out.abs_max * 2.0**out.frac >= 2**15:
            notes.append("sum may exceed the int16 range")
        logic = step.op.op.data if isinstance(step.op, SpikeLogicOp) else None
        if logic is not None:
            out.frac, out.abs_max = 0, 1.0
        layer = self._layer(
            _source(step.op), notes, kind=LayerKind.ADD, in_format=a.fmt, in2_format=b.fmt, out_format=out.fmt,
            in_frac=a.frac, in2_frac=b.frac, out_frac=out.frac, in_c=a.channels, in_cs=a.cs,
            in_h=a.height, in_w=a.width, out_c=out.channels, out_cs=out.cs, out_h=out.height, out_w=out.width,
            kh=1, kw=1, stride_h=1, stride_w=1, dil_h=1, dil_w=1, param_c=0,
            flags=int(LayerFlags.ADD_AND) if logic == "and" else 0,
        )
        lanes = min(self.o.lanes, self.T)

        def sizes(rows: int) -> dict[str, int]:
            elems = rows * a.width * a.cs
            return {"a": _tile_bytes(a.fmt, lanes, elems, self.T), "b": _tile_bytes(b.fmt, lanes, elems, self.T),
                    "out": _tile_bytes(out.fmt, lanes, elems, self.T)}

        rows = self._largest_rows(out.height, sizes, f"snn.add '{_source(step.op)}'")
        return dict(schedule=self._schedule_add, step=step, sym=layer.symbol, rows=rows, sizes=sizes(rows))

    def _schedule_add(self, w: dict) -> None:
        step: AddStep = w["step"]
        plan = _SramPlan(*w["sram_plan"])
        sets = [{name: plan.take(size) for name, size in w["sizes"].items()} for _ in range(2)]
        em, lanes, iteration = self.emitter, min(self.o.lanes, self.T), 0
        sets = _last_first(sets, step.out.batch * len(_row_tiles(step.out.height, w["rows"]))
                           * len(_lane_groups(self.T, lanes)))
        for bi in range(step.out.batch):
            for row0, rows in _row_tiles(step.out.height, w["rows"]):
                for t0, nt in _lane_groups(self.T, lanes):
                    buf = sets[iteration % 2]
                    iteration += 1
                    em.load_tile(step.a, buf["a"], bi, t0, nt, row0, rows)
                    em.load_tile(step.b, buf["b"], bi, t0, nt, row0, rows)
                    em.emit(accel.AddOp.create_with(
                        w["sym"], batch=bi, t0=t0, nt=nt, row0=row0, rows=rows, ch0=0, chs=step.out.cs,
                        a_addr=buf["a"], b_addr=buf["b"], out_addr=buf["out"],
                    ))
                    em.store_tile(step.out, buf["out"], bi, t0, nt, row0, rows, 0, step.out.cs)
