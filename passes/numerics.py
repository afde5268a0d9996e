"""Fixed-point numerics of the compiler (docs/numerics.md): power-of-two weight scales,
exact fractions, synaptic groups' integers and error bounds (a layer's integer LIF
parameters: passes/neuron_numbers.py).

Pure functions over numpy arrays; no IR. The quantise step of the lowering and the
tools that explain its choices (verify's membrane bound, bench/quantisation.py) share them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from snnc.backend.errors import CompileError

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
    """round(values * 2**frac) as int64 (round half to even, numpy's rule); magnitudes beyond
    2**62 saturate there (no int64 wrap-around: range checks then see them as too large)."""
    scaled = np.array(values, dtype=np.float64)  # a private copy, scaled in place
    scaled *= 2.0**frac  # == np.ldexp(values, frac): a power of two, exact barring overflow
    np.clip(scaled, -_SATURATE, _SATURATE, out=scaled)
    return np.rint(scaled, out=scaled).astype(np.int64)


_SATURATE = float(1 << 62)


def quantise_checked(values: np.ndarray, frac: int, bits: int, what: str, shown: np.ndarray | None = None) -> np.ndarray:
    """`quantise(values, frac)`, a CompileError naming `what` and the real value (`shown`:
    the model's value, when `values` are scaled from it) when one does not fit a signed
    `bits`-bit integer."""
    ints = quantise(values, frac)
    hi = (1 << (bits - 1)) - 1
    outside = (ints < -hi - 1) | (ints > hi)
    if np.any(outside):
        model_values = np.broadcast_to(np.asarray(values if shown is None else shown, np.float64), outside.shape)
        real = float(model_values.reshape(-1)[np.flatnonzero(outside.reshape(-1))[0]])
        raise CompileError(f"{what} {real:g} does not fit int{bits} with {frac} fractional bits "
                           f"(|value| <= {hi * 2.0 ** -frac:g})")
    return ints


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
    # quantise_weights' results, read-only: the quantise pass and the lowering both need them
    quantised: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def relayout(cls, weights: np.ndarray, axes: tuple[int, ...], shape: tuple[int, ...]) -> NonzeroWeights:
        """The non-zeros of `weights.transpose(axes)` in an array of `shape` (each
        dimension at least the transposed one's: zero padding at the end)."""
        flat = weights.reshape(-1)
        source = np.flatnonzero(flat != 0)  # through a bool mask: several times faster on floats
        coords = np.unravel_index(source, weights.shape)
        index = np.ravel_multi_index(tuple(coords[axis] for axis in axes), shape)
        return cls(tuple(shape), index, flat[source])


def _rows(weights: NonzeroWeights) -> np.ndarray:
    """The output channel (first index) of each non-zero weight."""
    return weights.index // max(1, math.prod(weights.shape[1:]))


def _shifted(values: np.ndarray, rows: np.ndarray, channel_shift: np.ndarray | None) -> np.ndarray:
    """values * 2**channel_shift[row] (exact: a power of two), or the values unchanged."""
    if channel_shift is None:
        return values
    return np.ldexp(np.asarray(values, np.float64), channel_shift[rows])


def quantise_weights(weights: NonzeroWeights, frac: int, rows: int, nbytes: int, what: str,
                     channel_shift: np.ndarray | None = None) -> np.ndarray:
    """`quantise(weights, frac)` as the stored little-endian int of `nbytes` bytes, zero
    rows appended up to `rows`; a value that does not fit is a CompileError. With
    `channel_shift`, output channel c is quantised with frac + channel_shift[c]."""
    return _quantised(weights, frac, rows, nbytes, what, channel_shift)[0]


def _quantised(weights: NonzeroWeights, frac: int, rows: int, nbytes: int, what: str,
               channel_shift: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(quantise_weights' array, per row the sum of its |integers|), computed once per arguments."""
    key = (frac, rows, nbytes, None if channel_shift is None else np.asarray(channel_shift, np.int64).tobytes())
    found = weights.quantised.get(key)
    if found is not None:
        return found
    row_of = _rows(weights)
    ints = quantise_checked(_shifted(weights.values, row_of, channel_shift), frac, 8 * nbytes, what,
                            shown=weights.values)
    out = np.zeros((rows, *weights.shape[1:]), dtype=f"<i{nbytes}")
    out.reshape(-1)[weights.index] = ints  # row-major: within the first shape[0] rows
    out.flags.writeable = False
    # from the non-zeros, not a pass over the dense array: exact (at most ~2**20 per row, in float64)
    row_sums = np.bincount(row_of, weights=np.abs(np.asarray(ints, np.int64)), minlength=rows)[:rows]
    row_sums.flags.writeable = False
    found = weights.quantised[key] = (out, row_sums)
    return found


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


@dataclass(frozen=True)
class GroupIntegers:
    """The stored integers of a synaptic group (synapses summed into one accumulator)."""

    weights: list[np.ndarray]  # per synapse, little-endian ints [rows, ...]
    bias: np.ndarray  # int64 [out_c], in accumulator units
    acc_bound: np.ndarray  # float64 [out_c]: bound on |acc| in integers for any input
    bias_exact: bool


def quantise_group(
    synapses: list[tuple[NonzeroWeights, int, int]], bias_real: np.ndarray, acc_frac: int, rows: int, nbytes: int,
    what: str, channel_shift: np.ndarray | None = None,
) -> GroupIntegers:
    """Weights (synapses as (non-zero weights, frac, largest |input| integer)) and the
    summed bias as integers, with output channel c at `channel_shift[c]` more bits."""
    out_c = np.asarray(bias_real).size
    quantised = [_quantised(w, frac, rows, nbytes, f"{what}: weight", channel_shift) for w, frac, _ in synapses]
    weights = [q for q, _ in quantised]
    shifted_bias = _shifted(bias_real, np.arange(out_c), channel_shift)
    bias = quantise_checked(shifted_bias, acc_frac, 32, f"{what}: bias", shown=bias_real)
    bias_exact = bool(np.array_equal(np.ldexp(bias.astype(np.float64), -acc_frac), shifted_bias))
    acc_bound = np.abs(bias).astype(np.float64)
    for (_, row_sums), (_, _, x_int_max) in zip(quantised, synapses):
        acc_bound = acc_bound + row_sums[:out_c] * x_int_max
    return GroupIntegers(weights, bias, acc_bound, bias_exact)


def current_error_bound(
    synapses: list[tuple[NonzeroWeights, int, float, float]], bias_real: np.ndarray, acc_frac: int,
    channel_shift: np.ndarray | None = None,
) -> float:
    """Bound on |quantised - float| synaptic current per step (real units), over the
    output channels, for synapses given as (non-zero weights, their frac, bound on
    |input|, bound on the input's own error): the weight rounding times the largest
    input, the rounded weights times the input's error, and the bias rounding."""
    bias_real = np.asarray(bias_real, np.float64).reshape(-1)
    channels = np.arange(bias_real.size)
    scale = np.ldexp(1.0, channel_shift) if channel_shift is not None else np.ones(bias_real.size)
    bias_rounded = np.ldexp(quantise(_shifted(bias_real, channels, channel_shift), acc_frac).astype(np.float64),
                            -acc_frac) / scale
    error = np.abs(bias_rounded - bias_real)
    for weights, frac, x_abs_max, x_error in synapses:
        rows = _rows(weights)
        ints = quantise(_shifted(weights.values, rows, channel_shift), frac)
        rounded = np.ldexp(ints.astype(np.float64), -frac) / scale[rows]
        per_weight = np.abs(rounded - weights.values) * x_abs_max + np.abs(rounded) * x_error
        error = error + np.bincount(rows, per_weight, minlength=error.size)[: error.size]
    return float(error.max()) if error.size else 0.0


MAX_CHANNEL_SHIFT = 16


def channel_headroom(weights: list[NonzeroWeights], fracs: tuple[int, ...], bits: int, out_c: int) -> np.ndarray:
    """Per output channel, the extra fractional bits d >= 0 its weights take at the
    layer's fracs before some |round(w * 2**(frac + d))| exceeds 2**(bits-1)-1 (all
    synapses summed into the channel; channels without weights: MAX_CHANNEL_SHIFT)."""
    limit = (1 << (bits - 1)) - 1
    room = np.full(out_c, MAX_CHANNEL_SHIFT, np.int64)
    for w, frac in zip(weights, fracs):
        largest = np.zeros(out_c)
        np.maximum.at(largest, _rows(w), np.abs(w.values.astype(np.float64)))
        present = largest > 0
        d = np.full(out_c, MAX_CHANNEL_SHIFT, np.int64)
        d[present] = np.floor(np.log2(limit / largest[present])).astype(np.int64) - frac
        # the log2 may be off by one at exact powers of two: settle on the largest d that rounds within the limit
        while np.any(over := present & (np.rint(np.ldexp(largest, frac + d)) > limit)):
            d[over] -= 1
        while np.any(under := present & (d < MAX_CHANNEL_SHIFT) & (np.rint(np.ldexp(largest, frac + d + 1)) <= limit)):
            d[under] += 1
        room = np.minimum(room, d)
    return np.clip(room, 0, MAX_CHANNEL_SHIFT)


def input_frac_for(values: np.ndarray, bits: int = 16) -> int:
    """The most fractional bits (0..bits-1) a signed `bits`-wide input format can give
    `values` without saturating: |x| * 2**f < 2**(bits-1) (calibration on an input)."""
    largest = float(np.max(np.abs(values))) if np.size(values) else 0.0
    if largest == 0.0:
        return bits - 1
    f = math.floor(math.log2(2 ** (bits - 1) / largest))
    while f > 0 and largest * 2.0**f >= 2 ** (bits - 1):
        f -= 1
    return max(0, min(bits - 1, f))


def leak_fraction(values: np.ndarray) -> tuple[int, bool]:
    """Smallest leak_frac <= 16 making beta (or 1/tau) an integer; (16, False) if none."""
    f = exact_frac(values, None, 0, MAX_LEAK_FRAC)
    return (MAX_LEAK_FRAC, False) if f is None else (f, True)
