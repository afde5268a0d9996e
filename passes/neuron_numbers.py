"""The integer LIF parameters of a layer (docs/numerics.md, "Neurons").

Not a pass: pure functions over numpy arrays, shared by `quantise` and the tools that
explain its choices. What differs between neuron kinds (how often the leak scales the
membrane, the membrane's growth bound, its per-step error) is asked of the layer's
kind (dialects/neurons/); the rest is common to every kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from snnc.backend.errors import CompileError
from snnc.backend.isa import LeakForm
from snnc.dialects.neurons import NeuronKind, kind_named
from snnc.dialects.snn import LIFOp
from snnc.passes.numerics import (
    INT32_MAX,
    MAX_CHANNEL_SHIFT,
    MAX_FRAC,
    MAX_LEAK_FRAC,
    exact_frac,
    leak_fraction,
    quantise,
    quantise_checked,
)


@dataclass(frozen=True)
class NeuronNumbers:
    """Integer LIF parameters of one layer."""

    leak_form: LeakForm
    leak_frac: int
    membrane_frac: int
    acc_shift: int
    threshold: np.ndarray  # int64, [param_c]
    leak: np.ndarray
    v_reset: np.ndarray
    membrane_bound: float  # bound on |v| (real units)
    notes: tuple[str, ...]  # reasons the neuron arithmetic is inexact
    membrane_error: float = 0.0  # bound on |v - float reference| while the input spikes agree
    channel_shift: np.ndarray | None = None  # per output channel: extra fractional bits (see choose_neuron_numbers)


@dataclass(frozen=True)
class _RealParams:
    """A layer's real neuron parameters, per channel (float64 [param_c])."""

    kind: NeuronKind
    threshold: np.ndarray
    v_reset: np.ndarray
    leak: np.ndarray  # the real `leak` array (ones for a kind without leak)
    has_leak: bool
    uses_v_reset: bool


def _real_params(lif: LIFOp, param_c: int) -> _RealParams:
    def per_channel(name: str, default: float) -> np.ndarray:
        value = lif.parameter(name)
        if value is None:
            return np.full(param_c, default)
        arr = np.asarray(value, np.float64).reshape(-1)
        return np.full(param_c, arr[0]) if arr.size == 1 else arr

    kind = kind_named(lif.leak.data)
    leak = kind.leak_real(per_channel)
    return _RealParams(kind, per_channel("threshold", 1.0), per_channel("v_reset", 0.0),
                       np.ones(param_c) if leak is None else leak, leak is not None,
                       lif.reset.data == "to_value" or kind.needs_v_reset)


def membrane_bits_needed(bound: float) -> int:
    """Bits of a signed integer membrane holding every |v| <= `bound` at 0 fractional bits."""
    return max(2, math.ceil(math.log2(math.floor(bound) + 1)) + 1)


def _wanted_frac(p: _RealParams, acc_frac: int, leak_frac: int, timesteps: int,
                 notes: list[str]) -> int:
    """The membrane fraction that keeps every step exact: the finest of the current,
    threshold and reset value, plus leak_frac for every time the leak scales a step."""
    fracs = [acc_frac]
    for what, values, used in (("threshold", p.threshold, True), ("v_reset", p.v_reset, p.uses_v_reset)):
        if not used:
            continue
        f = exact_frac(values, None, 0, MAX_FRAC)
        if f is None:
            notes.append(f"{what} not a multiple of 2^-{MAX_FRAC}")
            f = MAX_FRAC
        fracs.append(f)
    return max(fracs) + p.kind.leak_scalings(timesteps) * leak_frac


def _membrane_bound(p: _RealParams, drive_current, abs_v_reset, threshold, timesteps: int):
    """Bound on |v| over T steps (real units), scalar or per channel."""
    gain = p.kind.membrane_gain(p.leak if p.has_leak else None)
    drive = p.kind.membrane_drive(drive_current, abs_v_reset, p.leak if p.has_leak else None)
    v = 0.0 if np.ndim(drive_current) == 0 else np.zeros(np.shape(drive_current))
    for _ in range(timesteps):
        v = max(1.0, gain) * v + drive + threshold + abs_v_reset
    return v


def _channel_shift(p: _RealParams, acc_frac: int, timesteps: int, membrane_frac: int, membrane_max: int,
                   headroom: np.ndarray, channel_acc_bound: np.ndarray) -> np.ndarray:
    """Per-channel extra fractional bits: |v| of channel c in integers is at most its real
    bound (the same recursion on its own current, threshold and reset value) times
    2**(F + s_c); its |acc| is channel_acc_bound * 2**s_c."""
    channel_drive = np.asarray(channel_acc_bound, np.float64) * 2.0**-acc_frac
    channel_bound = _membrane_bound(p, channel_drive, np.abs(p.v_reset), p.threshold, timesteps)
    with np.errstate(divide="ignore"):
        fits = np.floor(np.log2(membrane_max / np.ldexp(channel_bound, membrane_frac)))
        acc_fits = np.floor(np.log2(INT32_MAX / np.maximum(np.asarray(channel_acc_bound, np.float64), 1.0)))
    return np.clip(np.minimum(np.minimum(headroom, fits), acc_fits), 0, MAX_CHANNEL_SHIFT).astype(np.int64)


def choose_neuron_numbers(
    lif: LIFOp, acc_frac: int, current_bound: float, timesteps: int, param_c: int, current_error: float = 0.0,
    *, headroom: np.ndarray | None = None, channel_acc_bound: np.ndarray | None = None,
    channel_shift: np.ndarray | None = None, membrane_bits: int = 32, where: str = "",
) -> NeuronNumbers:
    """Membrane fraction F, leak/threshold integers (docs/numerics.md, "Neurons"), and
    the membrane's error bound given `current_error` (see `membrane_error_bound`).

    Per-channel scales (docs/numerics.md, "Per-channel weight scales"): channel c may
    hold its weights, bias, threshold and reset value with s_c more fractional bits
    (so its membrane is v * 2**(F + s_c); spikes are unchanged). Given `headroom` (the
    bits its weights allow, `channel_headroom`) and `channel_acc_bound` (|acc| bound per
    channel in integers at s = 0), s_c is the headroom capped so that neither the
    accumulator nor the membrane can leave int32; the result is `channel_shift`. Given
    `channel_shift` instead, those shifts are used. param_c must be the channel count.

    F is capped so that the |v| bound fits a signed `membrane_bits` integer (the P-LIF
    registers, hw key compute.membrane_bits); a bound that does not fit even at F = 0 is a
    CompileError naming `where` and the bits the layer needs."""
    notes: list[str] = []
    p = _real_params(lif, param_c)
    leak_frac, leak_exact = leak_fraction(p.leak) if p.has_leak else (0, True)
    if not leak_exact:
        notes.append(f"leak {lif.leak.data} not a multiple of 2^-{MAX_LEAK_FRAC}")
    wanted = _wanted_frac(p, acc_frac, leak_frac, timesteps, notes)
    thr, v_reset = p.threshold, p.v_reset
    bound = _membrane_bound(p, current_bound, float(np.max(np.abs(v_reset))), float(np.max(thr)), timesteps)
    membrane_max = (1 << (membrane_bits - 1)) - 1
    for what, values in (("threshold", thr), ("v_reset", v_reset)):  # the parameter itself first: it names the value
        quantise_checked(values, 0, membrane_bits, f"{where} {what}")
    if bound > membrane_max:
        raise CompileError(
            f"{where}: the membrane bound |v| <= {bound:.6g} needs {membrane_bits_needed(bound)}-bit membranes, "
            f"the hardware has compute.membrane_bits = {membrane_bits}")
    cap = math.floor(math.log2(membrane_max / bound)) if bound > 0 else membrane_bits - 2
    membrane_frac = max(0, min(wanted, cap))
    if membrane_frac < wanted:
        notes.append(f"membrane needs {wanted} fractional bits, |v| bound {bound:.3g} allows {membrane_frac} "
                     f"in {membrane_bits}-bit membranes")
    if headroom is not None and channel_acc_bound is not None:
        channel_shift = _channel_shift(p, acc_frac, timesteps, membrane_frac, membrane_max, headroom,
                                       channel_acc_bound)
    scale = np.ldexp(1.0, channel_shift) if channel_shift is not None else 1.0
    where = f"snn.lif '{lif.source_name}':"
    thr_int = quantise_checked(thr * scale, membrane_frac, 32, f"{where} threshold", shown=thr)
    if np.any(thr_int < 1):
        notes.append("threshold rounds to 0")
    leak_int = quantise(p.leak, leak_frac) if p.has_leak else np.ones(param_c, np.int64)
    v_reset_int = quantise_checked(v_reset * scale, membrane_frac, 32, f"{where} v_reset", shown=v_reset)
    error = 0.0
    if current_error or notes:
        error = membrane_error_bound(
            p.kind, p.leak, np.ldexp(leak_int.astype(np.float64), -leak_frac),
            float(np.max(np.abs(np.ldexp(thr_int.astype(np.float64), -membrane_frac) / scale - thr))),
            float(np.max(np.abs(np.ldexp(v_reset_int.astype(np.float64), -membrane_frac) / scale - v_reset))),
            current_error, current_bound, bound, membrane_frac, membrane_frac < acc_frac, timesteps)
    return NeuronNumbers(
        leak_form=p.kind.hw_leak, leak_frac=leak_frac, membrane_frac=membrane_frac,
        acc_shift=membrane_frac - acc_frac, threshold=thr_int, leak=leak_int,
        v_reset=v_reset_int, membrane_bound=bound, notes=tuple(notes), membrane_error=error,
        channel_shift=channel_shift,
    )


def membrane_error_bound(
    kind: NeuronKind, leak_real: np.ndarray, leak_rounded: np.ndarray, threshold_error: float, v_reset_error: float,
    current_error: float, current_bound: float, membrane_bound: float, membrane_frac: int, shifted_right: bool,
    timesteps: int,
) -> float:
    """Bound on |v - float reference| (real units) over `timesteps` steps while the
    spikes feeding the layer and its own spikes agree with the reference's.

    Each step adds the current's error, the leak's rounding times the largest |v|,
    the threshold/reset rounding, one floor of the membrane's last bit for the leak
    product (and one for a right-shifted current), and float32's own rounding of the
    reference; the error carried from the step before is scaled by the rounded leak
    (the kind's `error_step`).
    """
    ulp = 2.0**-membrane_frac
    floors = ulp * (1 + int(shifted_right))
    reference = np.finfo(np.float32).eps * (membrane_bound + current_bound)
    gain, per_step = kind.error_step(leak_real, leak_rounded, threshold_error, v_reset_error, current_error,
                                     current_bound, membrane_bound, floors, reference)
    error = 0.0
    for _ in range(timesteps):
        error = gain * error + per_step
    return error
