"""quantise: choose every layer's fixed-point numbers (docs/numerics.md).

CONTRACT
  Requires: snn-level IR, one func.func @main (as the frontend builds it).
  Guarantees: the first step of the lowering. Values are unchanged; the pass only
    records the integer formats the accelerator will use, as attributes:
      @main           `snn.input_fixed`  {frac, abs_max} of multi-bit graph inputs (ACT_I16)
      synaptic group  `snn.fixed` on the op completing it (passes/snn_steps.py):
                      {acc_frac, weight_fracs (one per synapse), weight_bytes,
                       channel_shift (per output channel, or empty), current_bound,
                       current_error, notes}
      snn.lif         `snn.neuron` {leak_frac, membrane_frac, acc_shift, param_c,
                       per_channel, threshold, leak, v_reset (integers, param_c each),
                       membrane_bound, membrane_error, notes}
      pools, adds     `snn.fixed` {frac, abs_max, error, notes} (+ avg_recip, avg_shift)
    `notes` says why a layer is not exact ("" when it is). A value the
    accelerator cannot hold (a scale out of range) is a CompileError naming the
    ONNX node.
  Options:
    weight_bits      2..16; 0 = the hw config's compute.weight_bits
    hw               hardware preset or TOML (for weight_bits)
    input_frac_bits  fractional bits of multi-bit graph inputs (0..15)
    input_abs_max    bound on |graph input|; 0 = the whole ACT_I16 range
    weight_scales    "channel" (default): a group whose weights round and whose only
                     stored output is its spikes takes a power-of-two scale per output
                     channel, carried by its threshold, bias and reset; "layer": one
                     scale per layer
  Every stored value also gets `error`, a bound on its distance from the float
  reference while the spikes feeding it agree (snnc verify compares within it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import (
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    f64,
    i64,
)
from xdsl.ir import Attribute, Operation
from xdsl.passes import ModulePass

from snnc.dialects.neurons import PARAMS as NEURON_PARAMS
from snnc.dialects.snn import int_array
from snnc.backend.errors import CompileError
from snnc.backend.hwconfig import load_hw
from snnc.dialects.snn import AvgPool2dOp, LIFOp, SpikeLogicOp, int_array_value, main_function
from snnc.passes.numerics import (
    INT32_MAX,
    channel_headroom,
    choose_weight_scales,
    current_error_bound,
    quantise_group,
)
from snnc.passes.neuron_numbers import choose_neuron_numbers
from snnc.passes.snn_steps import NetworkSteps
from snnc.passes.step_records import AddStep, GroupStep, PoolStep, pad8, pool_output_frac, source_name

FIXED_ATTR = "snn.fixed"
NEURON_ATTR = "snn.neuron"
INPUT_FIXED_ATTR = "snn.input_fixed"


def to_attr(values: dict[str, object]) -> DictionaryAttr:
    """A dictionary of ints, floats, strings and int sequences as builtin attributes."""
    out: dict[str, Attribute] = {}
    for key, value in values.items():
        if isinstance(value, str):
            out[key] = StringAttr(value)
        elif isinstance(value, bool | int | np.integer):
            out[key] = IntegerAttr(int(value), i64)
        elif isinstance(value, float | np.floating):
            out[key] = FloatAttr(float(value), f64)
        else:
            out[key] = int_array([int(v) for v in value])
    return DictionaryAttr(out)


def from_attr(attr: DictionaryAttr) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in attr.data.items():
        if isinstance(value, IntegerAttr):
            out[key] = value.value.data
        elif isinstance(value, FloatAttr):
            out[key] = value.value.data
        elif isinstance(value, StringAttr):
            out[key] = value.data
        else:
            out[key] = tuple(int(v) for v in value.get_values())
    return out


def read_fixed(op: Operation, name: str = FIXED_ATTR) -> dict[str, object]:
    attr = op.attributes.get(name)
    if not isinstance(attr, DictionaryAttr):
        raise CompileError(f"{op.name} '{source_name(op)}': no `{name}` numbers; run the quantise pass first")
    return from_attr(attr)


def input_fixed(input_frac_bits: int, input_abs_max: float) -> dict[str, object]:
    bound = input_abs_max if input_abs_max > 0 else 2.0 ** (15 - input_frac_bits)
    return {"frac": input_frac_bits, "abs_max": float(bound)}


@dataclass(frozen=True)
class Quantise(ModulePass):
    """Choose the fixed-point numbers of every layer (attributes; values unchanged)."""

    name = "quantise"
    ir_level: ClassVar[str] = "snn"

    weight_bits: int = 0
    hw: str = "loas"
    input_frac_bits: int = 8
    input_abs_max: float = 0.0
    weight_scales: str = "channel"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        hw = load_hw(self.hw)
        bits = self.weight_bits or hw.compute.weight_bits
        if not 2 <= bits <= 16:
            raise CompileError(f"weight_bits = {bits}: expected 2..16")
        if self.weight_scales not in ("channel", "layer"):
            raise CompileError(f"weight_scales = {self.weight_scales!r}: expected 'channel' or 'layer'")
        if not 0 <= self.input_frac_bits <= 15:
            raise CompileError(f"input_frac_bits = {self.input_frac_bits}: expected 0..15")
        main = main_function(op)
        main.attributes[INPUT_FIXED_ATTR] = to_attr(input_fixed(self.input_frac_bits, self.input_abs_max))
        net = NetworkSteps(main, self.input_frac_bits, self.input_abs_max)
        for step in net.steps:
            if isinstance(step, GroupStep):
                _quantise_group(step, bits, net.timesteps, self.weight_scales, hw.compute.membrane_bits)
            elif isinstance(step, PoolStep):
                _quantise_pool(step)
            else:
                _quantise_add(step)


def _quantise_group(step: GroupStep, bits: int, timesteps: int, weight_scales: str, membrane_bits: int = 32) -> None:
    """The group's accumulator scale (per output channel where its weights round and only its
    spikes are stored), and its LIF's integers (docs/numerics.md)."""
    syns = step.synapses
    where = f"{step.head.op.name} '{source_name(step.head.op)}'"
    notes: list[str] = []
    scales = choose_weight_scales([s.weights.values for s in syns], [s.src.fmap.frac for s in syns], bits)
    if not scales.exact:
        notes.append("weights rounded")
    if not -128 <= scales.acc_frac <= 127:
        raise CompileError(f"{where}: accumulator fraction {scales.acc_frac} out of range")
    weight_bytes = 1 if bits <= 8 else 2
    out_cs = pad8(step.out_c)
    bias_real = sum(s.bias_real for s in syns)
    group = [(s.weights, fw, s.src.fmap.int_max()) for s, fw in zip(syns, scales.weight_fracs)]
    errors = [(s.weights, fw, s.src.fmap.abs_max, s.src.fmap.error) for s, fw in zip(syns, scales.weight_fracs)]
    ints = quantise_group(group, bias_real, scales.acc_frac, out_cs, weight_bytes, where)
    current_bound = float(ints.acc_bound.max(initial=0.0)) * 2.0**-scales.acc_frac
    current_error = current_error_bound(errors, bias_real, scales.acc_frac)
    shift = None
    if step.lif is not None:
        per_channel_scales = weight_scales == "channel" and not scales.exact and step.membrane_out is None \
            and step.current_out is None  # a stored value keeps one scale per map
        shift = _quantise_lif(step, step.lif, scales.acc_frac, current_bound, current_error, timesteps, where,
                              ints, bits, scales.weight_fracs if per_channel_scales else None, membrane_bits)
        if shift is not None:
            ints = quantise_group(group, bias_real, scales.acc_frac, out_cs, weight_bytes, where, shift)
    if not ints.bias_exact:
        notes.append("bias rounded")
    if ints.acc_bound.max(initial=0.0) > INT32_MAX:
        notes.append("accumulator may overflow int32 for extreme inputs")
    if step.lif is not None:
        notes.append(str(read_fixed(step.lif, NEURON_ATTR)["notes"]))
    if step.current_out is not None:
        step.current_out.frac, step.current_out.abs_max = scales.acc_frac, current_bound
        step.current_out.error = current_error
    step.anchor.attributes[FIXED_ATTR] = to_attr({
        "acc_frac": scales.acc_frac, "weight_fracs": scales.weight_fracs, "weight_bytes": weight_bytes,
        "channel_shift": () if shift is None else shift, "current_bound": current_bound,
        "current_error": current_error, "notes": "; ".join(n for n in notes if n),
    })


def _quantise_lif(step: GroupStep, lif: LIFOp, acc_frac: int, current_bound: float, current_error: float,
                  timesteps: int, where: str, ints, bits: int, weight_fracs, membrane_bits: int = 32) -> np.ndarray | None:
    """The LIF's integers; returns the per-channel weight shift when per-channel scales are
    chosen (`weight_fracs` given: the group may use them), else None."""
    per_channel = any(
        lif.parameter(n) is not None and np.ndim(lif.parameter(n)) == 1 for n in NEURON_PARAMS)
    param_c = step.out_c if per_channel else 1
    nn, shift = None, None
    membrane = dict(membrane_bits=membrane_bits, where=f"{lif.name} '{source_name(lif)}'")  # the P-LIF registers (neuron_numbers.choose_neuron_numbers)
    if weight_fracs is not None:  # numerics.py, "Per-channel weight scales"
        headroom = channel_headroom([s.weights for s in step.synapses], weight_fracs, bits, step.out_c)
        trial = choose_neuron_numbers(lif, acc_frac, current_bound, timesteps, step.out_c, current_error,
                                      headroom=headroom, channel_acc_bound=ints.acc_bound, **membrane)
        if trial.channel_shift.any():
            per_channel, param_c, shift = True, step.out_c, trial.channel_shift
            errors = [(s.weights, fw, s.src.fmap.abs_max, s.src.fmap.error)
                      for s, fw in zip(step.synapses, weight_fracs)]
            current_error = current_error_bound(errors, sum(s.bias_real for s in step.synapses), acc_frac, shift)
            nn = choose_neuron_numbers(lif, acc_frac, current_bound, timesteps, param_c, current_error,
                                       channel_shift=shift, **membrane)
    if nn is None:
        nn = choose_neuron_numbers(lif, acc_frac, current_bound, timesteps, param_c, current_error, **membrane)
    if not -128 <= nn.acc_shift <= 127:
        raise CompileError(f"{where}: acc_shift {nn.acc_shift} out of range")
    if step.membrane_out is not None:
        step.membrane_out.frac, step.membrane_out.abs_max = nn.membrane_frac, nn.membrane_bound
        step.membrane_out.error = nn.membrane_error
    lif.attributes[NEURON_ATTR] = to_attr({
        "leak_frac": nn.leak_frac, "membrane_frac": nn.membrane_frac, "acc_shift": nn.acc_shift,
        "param_c": param_c, "per_channel": per_channel,
        "threshold": np.broadcast_to(np.asarray(nn.threshold, np.int64), (param_c,)),
        "leak": np.broadcast_to(np.asarray(nn.leak, np.int64), (param_c,)),  # ones for a kind without leak
        "v_reset": np.broadcast_to(np.asarray(nn.v_reset, np.int64), (param_c,)),
        "membrane_bound": nn.membrane_bound, "membrane_error": nn.membrane_error, "notes": "; ".join(nn.notes),
    })
    return shift


def _quantise_pool(step: PoolStep) -> None:
    op, src, out = step.op, step.src, step.out
    out.frac, out.abs_max = pool_output_frac(op, src, out.fmt), src.abs_max  # src is quantised now
    out.error = src.error
    fixed: dict[str, object] = {"frac": out.frac, "abs_max": out.abs_max, "notes": ""}
    if isinstance(op, AvgPool2dOp):
        kh, kw = int_array_value(op.kernel)
        notes = []
        if any(int_array_value(op.pads)) and op.count_include_pad is None:
            # The machine rescales 1/(kh*kw) to 1/count at the border: a floor division.
            notes.append("average excluding padding divides border windows with rounding")
        n, extra = kh * kw, out.frac - src.frac
        if n & (n - 1) == 0 and extra == int(math.log2(n)):
            recip, shift = 1, 0  # sum * 2^-log2(n): exact
        else:
            recip, shift = round(2**16 / n), 16 - extra
            notes.append(f"average over {n} elements rounded")
        fixed.update(avg_recip=recip, avg_shift=shift, notes="; ".join(notes))
        out.error = src.error + (2.0**-out.frac if notes else 0.0)  # a rounded mean: within one step
    fixed["error"] = out.error
    op.attributes[FIXED_ATTR] = to_attr(fixed)


def _quantise_add(step: AddStep) -> None:
    a, b, out = step.a, step.b, step.out
    out.frac, out.abs_max = max(a.frac, b.frac), a.abs_max + b.abs_max  # operands are quantised now
    out.error = a.error + b.error
    notes = ""
    if isinstance(step.op, SpikeLogicOp):
        out.frac, out.abs_max = 0, 1.0
    elif out.bits == 16 and out.abs_max * 2.0**out.frac >= 2**15:
        notes = "sum may exceed the int16 range"
    step.op.attributes[FIXED_ATTR] = to_attr({"frac": out.frac, "abs_max": out.abs_max, "error": out.error,
                                               "notes": notes})
