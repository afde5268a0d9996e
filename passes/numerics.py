"""Fixed-point numerics of the compiler (docs/numerics.md): power-of-two weight scales,
exact fractions, and the integer LIF parameters of a layer.

Pure functions over numpy arrays; no IR. The quantise step of the lowering and the
tools that explain its choices (verify's membrane bound, bench/quantisation.py) share them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from snnc.backend.errors import CompileError
from snnc.backend.isa import LeakForm
from snnc.dialects.snn import LIFOp

MAX_FRAC = 24  # largest power-of-two scale searched for exact weights/thresholds
MIN_FRAC = -16
MAX_LEAK_FRAC = 16
INT32_MAX = (1 << 31) - 1


# --------------------------------------------------------------------------------------
# Quantisation (docs/numerics.md)
# --------------------------------------------------------------------------------------


def exact_frac(values: np.ndarray, limit: int | None = None, lo: int = MIN_FRAC, hi: int = MAX_FRAC) -> int | None:
    """Smallest f in [lo, hi] with every value * 2**f an integer (|int| <= limit), or None."""
    v = np.asarray(values)
    if v.dtype != np.float32:  # float32 weights widen exactly; only their non-zeros are widened
        v = v.astype(np.float64, copy=False)
    v = v.ravel()
    # Vectorised (one pass, no loop over f): v = m * 2**(e - 53) with m a 53-bit integer,
    # so v * 2**f is an integer iff f >= 53 - e - trailing_zeros(m). The limit test is
    # monotone in f, so only the smallest such f (clamped to lo) needs checking.
    nonzero = np.abs(v[v != 0].astype(np.float64))
    if nonzero.size == 0:
        return 0 if lo <= 0 <= hi else lo
    if not np.all(np.isfinite(nonzero)):
        return None
    mantissa, exponent = np.frexp(nonzero)
    m = np.ldexp(mantissa, 53).astype(np.int64)
    trailing = np.log2((m & -m).astype(np.float64)).astype(np.int64)
    f = max(lo, int(np.max(53 - exponent.astype(np.int64) - trailing)))
    if f > hi or (limit is not None and np.ldexp(float(nonzero.max()), f) > limit):
        return None
    return f


def max_frac(values: np.ndarray, limit: int, lo: int = MIN_FRAC, hi: int = MAX_FRAC) -> int:
    """Largest f in [lo, hi] with max|value| * 2**f <= limit."""
    # max(max, -min) == max(abs) without an |array| temporary (weights are large)
    m = float(max(np.max(values), -np.min(values))) if np.size(values) else 0.0
    if m == 0.0:
        return hi
    f = math.floor(math.log2(limit / m))
    while f < hi and m * 2.0 ** (f + 1) <= limit:
        f += 1
    while f > lo and m * 2.0**f > limit:
        f -= 1
    return max(lo, min(hi, f))


def quantise(values: np.ndarray, frac: int) -> np.ndarray:
    """round(values * 2**frac) as int64 (round half to even, numpy's rule)."""
    scaled = np.array(values, dtype=np.float64)  # a private copy, scaled in place
    scaled *= 2.0**frac  # == np.ldexp(values, frac): a power of two, exact barring overflow
    return np.rint(scaled, out=scaled).astype(np.int64)


@dataclass(frozen=True)
class NonzeroWeights:
    """The non-zero entries of a weight array of `shape`: flat (row-major) indices into
    it, in no particular order, and their values.

    Weight scales and quantisation depend on these alone (zero is exact at any scale),
    and SNN weights are mostly zero: dense relayouts and float64/int64 temporaries of
    whole layers would dominate the compile time.
    """

    shape: tuple[int, ...]
    index: np.ndarray
    values: np.ndarray

    @classmethod
    def relayout(cls, weights: np.ndarray, axes: tuple[int, ...], shape: tuple[int, ...]) -> NonzeroWeights:
        """The non-zeros of `weights.transpose(axes)` in an array of `shape` (each
        dimension at least the transposed one's: zero padding at the end)."""
        flat = weights.reshape(-1)
        source = np.flatnonzero(flat != 0)  # through a bool mask: several times faster on floats
        coords = np.unravel_index(source, weights.shape)
        index = np.ravel_multi_index(tuple(coords[axis] for axis in axes), shape)
        return cls(tuple(shape), index, flat[source])


def quantise_weights(weights: NonzeroWeights, frac: int, rows: int, nbytes: int, what: str) -> np.ndarray:
    """`quantise(weights, frac)` as the stored little-endian int of `nbytes` bytes, zero
    rows appended up to `rows`; a value that does not fit is a CompileError."""
    ints = quantise(weights.values, frac)
    lo, hi = -(1 << (8 * nbytes - 1)), (1 << (8 * nbytes - 1)) - 1
    if ints.size and (ints.min() < lo or ints.max() > hi):
        bad = int(ints.min()) if ints.min() < lo else int(ints.max())
        raise CompileError(f"{what}: value {bad} does not fit int{8 * nbytes}")
    out = np.zeros((rows, *weights.shape[1:]), dtype=f"<i{nbytes}")
    out.reshape(-1)[weights.index] = ints  # row-major: within the first shape[0] rows
    return out


@dataclass(frozen=True)
class WeightScales:
    """The joint scale of the synapses summed into one accumulator."""

    acc_frac: int  # fractional bits of the accumulator
    weight_fracs: tuple[int, ...]  # per synapse: acc_frac - input frac
    exact: bool


def choose_weight_scales(weights: list[np.ndarray], input_fracs: list[int], bits: int) -> WeightScales:
    """Per-layer power-of-two weight scales (docs/numerics.md, "Weights").

    Alone: the smallest exact f if one exists with |k| <= 2**(bits-1)-1, else the
    largest f that fits. Summed synapses share acc_frac = fw_i + f_in_i, so the
    one needing the most bits decides, capped by the one with the least room.
    Zeros do not change the result: `weights` may hold only the non-zero values.
    """
    limit = (1 << (bits - 1)) - 1
    exact = [exact_frac(w, limit) for w in weights]
    room = [max_frac(w, limit) for w in weights]
    wanted = max((e if e is not None else r) + fin for e, r, fin in zip(exact, room, input_fracs))
    cap = min(r + fin for r, fin in zip(room, input_fracs))
    acc_frac = min(wanted, cap)
    fracs = tuple(acc_frac - fin for fin in input_fracs)
    is_exact = all(e is not None and fw >= e for e, fw in zip(exact, fracs))
    return WeightScales(acc_frac, fracs, is_exact)


def leak_fraction(values: np.ndarray) -> tuple[int, bool]:
    """Smallest leak_frac <= 16 making beta (or 1/tau) an integer; (16, False) if none."""
    f = exact_frac(values, None, 0, MAX_LEAK_FRAC)
    return (MAX_LEAK_FRAC, False) if f is None else (f, True)


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


def choose_neuron_numbers(
    lif: LIFOp, acc_frac: int, current_bound: float, timesteps: int, param_c: int,
) -> NeuronNumbers:
    """Membrane fraction F, leak/threshold integers (docs/numerics.md, "Neurons")."""
    notes: list[str] = []

    def per_channel(name: str, default: float) -> np.ndarray:
        value = lif.parameter(name)
        if value is None:
            return np.full(param_c, default)
        arr = np.asarray(value, np.float64).reshape(-1)
        return np.full(param_c, arr[0]) if arr.size == 1 else arr

    thr = per_channel("threshold", 1.0)
    v_reset = per_channel("v_reset", 0.0)
    form = {"beta": LeakForm.BETA, "tau": LeakForm.TAU, "none": LeakForm.NONE}[lif.leak.data]
    if form == LeakForm.BETA:
        leak_real = per_channel("beta", 1.0)
    elif form == LeakForm.TAU:
        leak_real = 1.0 / per_channel("tau", 1.0)
    else:
        leak_real = np.ones(param_c)
    leak_frac, leak_exact = leak_fraction(leak_real) if form != LeakForm.NONE else (0, True)
    if not leak_exact:
        notes.append(f"leak {lif.leak.data} not a multiple of 2^-{MAX_LEAK_FRAC}")
    uses_v_reset = lif.reset.data == "to_value" or form == LeakForm.TAU
    fracs = [acc_frac]
    for what, values, used in (("threshold", thr, True), ("v_reset", v_reset, uses_v_reset)):
        if not used:
            continue
        f = exact_frac(values, None, 0, MAX_FRAC)
        if f is None:
            notes.append(f"{what} not a multiple of 2^-{MAX_FRAC}")
            f = MAX_FRAC
        fracs.append(f)
    wanted = max(fracs) + (timesteps - 1) * leak_frac if form != LeakForm.NONE else max(fracs)

    # Bound |v| over T steps (real units) so the integer part fits int32.
    gain = float(np.max(np.abs(leak_real))) if form == LeakForm.BETA else 1.0
    drive = current_bound
    if form == LeakForm.TAU:
        gain = max(1.0, float(np.max(np.abs(1.0 - leak_real))))
        drive = (current_bound + float(np.max(np.abs(v_reset)))) * max(1.0, float(np.max(leak_real)))
    v = 0.0
    for _ in range(timesteps):
        v = max(1.0, gain) * v + drive + float(np.max(thr)) + float(np.max(np.abs(v_reset)))
    bound = v
    cap = math.floor(math.log2(INT32_MAX / bound)) if bound > 0 else 30
    membrane_frac = max(0, min(wanted, cap))
    if membrane_frac < wanted:
        notes.append(f"membrane needs {wanted} fractional bits, |v| bound {bound:.3g} allows {membrane_frac}")
    thr_int = quantise(thr, membrane_frac)
    if np.any(thr_int < 1):
        notes.append("threshold rounds to 0")
    return NeuronNumbers(
        leak_form=form, leak_frac=leak_frac, membrane_frac=membrane_frac,
        acc_shift=membrane_frac - acc_frac, threshold=thr_int,
        leak=quantise(leak_real, leak_frac) if form != LeakForm.NONE else np.ones(param_c, np.int64),
        v_reset=quantise(v_reset, membrane_frac), membrane_bound=bound, notes=tuple(notes),
    )
