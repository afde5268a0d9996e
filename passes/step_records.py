"""The records of passes/snn_steps.py's analysis: stored feature maps and the steps
between them (synaptic groups, pools, adds), with their small geometry helpers.

Not a pass: plain data shared by `quantise`, `convert-snn-to-loops` and the nests it
builds. Fixed-point fractions start as placeholders; `quantise` decides them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Operation, SSAValue

from snnc.backend.isa import Format
from snnc.dialects.snn import AddOp, AvgPool2dOp, Conv2dOp, DenseOp, LIFOp, MaxPool2dOp, SpikeLogicOp, int_array_value
from snnc.passes.numerics import NonzeroWeights

FORMAT_BITS = {Format.SPIKE_PLANES: 1, Format.ACT_I16: 16, Format.ACT_I32: 32}


def align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def pad8(channels: int) -> int:
    return align(channels, 8)


@dataclass(eq=False)
class FeatureMap:
    """A stored tensor [T][B][H][W][Cs] (channel-last, channels padded to 8) of `value`."""

    fmt: Format
    frac: int
    timesteps: int
    batch: int
    channels: int
    height: int
    width: int
    abs_max: float  # bound on |value| (real units), for sizing later layers
    value: SSAValue | None = None
    label: str = ""  # the producing node and result, for the IR and errors
    error: float = 0.0  # bound on |value - float reference| while spikes agree (quantise)

    @property
    def cs(self) -> int:
        return pad8(self.channels)

    @property
    def bits(self) -> int:
        return FORMAT_BITS[self.fmt]

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
    anchor: Operation | None = None  # the op that completes the group (its current's producer, or the LIF)

    @property
    def head(self) -> SynapseInput:
        return self.synapses[0]


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


def source_name(op: Operation) -> str:
    src = getattr(op, "source", None)
    return src.data if isinstance(src, StringAttr) else op.name



def pool_output_frac(op: MaxPool2dOp | AvgPool2dOp, src: "FeatureMap", fmt: Format) -> int:
    """Fractional bits of a pool's output: a max keeps the input's; an average adds
    log2(window) bits (exact for power-of-two windows) as far as the format allows."""
    if isinstance(op, MaxPool2dOp):
        return src.frac
    kh, kw = int_array_value(op.kernel)
    n = kh * kw
    frac = src.frac + (int(math.log2(n)) if n & (n - 1) == 0 else 8)
    while frac > src.frac and src.abs_max * 2.0**frac >= 2 ** (FORMAT_BITS[fmt] - 1):
        frac -= 1
    return frac


