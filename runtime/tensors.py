"""User tensors (float32, ONNX shapes) <-> DRAM bytes in an I/O descriptor's format.

CONTRACT:
  * `encode_input(desc, x) -> (bytes as np.uint8, quantised)`: x must have shape
    `desc.onnx_shape` ([T,B,C,H,W] or [T,B,N]); it is transposed to
    [T][B][H][W][Cs] with zero channel padding and stored in `desc.format`:
      SPIKE_PLANES  bits, [T][B][H][W][Cs], little-endian in a byte
      SPIKE_WORDS   [B][H][W][Cs] words of spike_word_bytes(T), bit t = step t
      ACT_I16/I32   round(x * 2**frac) as signed ints [T][B][H][W][Cs]
    x must hold real numbers (bool, integer or float; `dtype_error` says why
    not). Spike inputs must be exactly 0/1; multi-bit values that are not exact
    in `frac` bits are rounded half-to-even (quantised = True); out-of-range or
    non-finite values raise InputError naming the input.
  * `decode_output(desc, raw) -> np.ndarray` float32 of shape `desc.onnx_shape`
    (spikes -> 0.0/1.0, ints -> int * 2**-frac): the stored T steps, of which the
    user sees steps t0 .. t0+nt-1 (`onnx_shape` [nt, ...], or [B, ...] for one step).
    `decode_step_ints` gives the stored integers themselves (int64) of one stored step,
    [B, *per_step flattened], as `exit.check` reads them.
"""

from __future__ import annotations

import numpy as np

from snnc.backend.binformat import IODesc
from snnc.backend.errors import InputError
from snnc.backend.isa import Format
from snnc.runtime.machine import ACT_DTYPES, word_dtype


def _to_storage_order(desc: IODesc, x: np.ndarray) -> np.ndarray:
    """[T,B,C,H,W] or [T,B,N] -> [T,B,H,W,Cs] with zero channel padding."""
    t, b, c, h, w = desc.timesteps, desc.batch, desc.channels, desc.height, desc.width
    x5 = x.reshape(t, b, c, h, w)
    out = np.zeros((t, b, h, w, desc.channels_stored), dtype=x.dtype)
    out[..., :c] = x5.transpose(0, 1, 3, 4, 2)
    return out


def _spike_input_error(desc: IODesc, x: np.ndarray) -> None:
    """Raise for the first value of float64 `x` that is not a spike (NaN or infinity first)."""
    if not np.all(np.isfinite(x)):
        raise InputError(f"input {desc.name!r}: contains NaN or infinity")
    bad = (x != 0) & (x != 1)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"input {desc.name!r}: spike input must be 0 or 1, found {x[where]!r} at index {list(where)}")


def _spike_bytes(desc: IODesc, fmt: Format, bits: np.ndarray) -> np.ndarray:
    """0/1 uint8 [T,B,H,W,Cs] -> the DRAM bytes of a SPIKE_PLANES or SPIKE_WORDS tensor."""
    if fmt == Format.SPIKE_PLANES:
        return np.packbits(bits.reshape(-1), bitorder="little")
    dtype = word_dtype(desc.timesteps)
    words = np.zeros(bits.shape[1:], dtype=dtype)
    for t in range(desc.timesteps):  # one step at a time: no [T, ...] uint64 temporary
        words |= bits[t].astype(dtype) << dtype.type(t)
    return words.view(np.uint8).reshape(-1)


CHUNK = 1 << 20  # elements converted at a time (encode_input, decode_output)
REAL_KINDS = "biuf"  # numpy dtype kinds of real numbers: bool, signed and unsigned integers, floats


def dtype_error(dtype: np.dtype) -> str | None:
    """Why an array of `dtype` is not an input value (complex, string, datetime, object,
    structured...), or None for bool, integer and float arrays."""
    if dtype.kind in REAL_KINDS and dtype.fields is None and dtype.subdtype is None:
        return None
    return f"dtype {dtype} is not a real number type (expected bool, integer or float values)"


def encode_input(desc: IODesc, x) -> tuple[np.ndarray, bool]:
    x = np.asarray(x)
    problem = dtype_error(x.dtype)
    if problem:
        raise InputError(f"input {desc.name!r}: {problem}")
    if tuple(x.shape) != tuple(desc.onnx_shape):
        raise InputError(f"input {desc.name!r}: expected shape {list(desc.onnx_shape)}, found {list(x.shape)}")
    fmt = Format(desc.format)
    if fmt in (Format.SPIKE_PLANES, Format.SPIKE_WORDS) and x.dtype.kind in "biuf":
        # a numeric spike input is compared as it is (0 and 1 are exact in every numeric type):
        # the float64 copy below is only made to report a bad value
        bad = (x != 0) & (x != 1)
        if bad.any():
            _spike_input_error(desc, x.astype(np.float64))
        bits = _to_storage_order(desc, x.astype(np.uint8))
        return _spike_bytes(desc, fmt, bits), False
    if fmt in (Format.SPIKE_PLANES, Format.SPIKE_WORDS):
        x = x.astype(np.float64)
        _spike_input_error(desc, x)
        bits = _to_storage_order(desc, x.astype(np.uint8))
        return _spike_bytes(desc, fmt, bits), False
    # multi-bit: converted CHUNK elements at a time into the stored type, so that the float64
    # working copies stay small whatever the tensor's size (errors in the order of whole-array
    # checks: any NaN or infinity first, then the range)
    flat = x.reshape(-1)
    for lo in range(0, flat.size, CHUNK):
        if not np.all(np.isfinite(flat[lo:lo + CHUNK])):
            raise InputError(f"input {desc.name!r}: contains NaN or infinity")
    dtype = ACT_DTYPES[fmt]
    info = np.iinfo(dtype)
    ints = np.empty(flat.size, dtype=dtype)
    quantised = False
    for lo in range(0, flat.size, CHUNK):
        scaled = np.ldexp(flat[lo:lo + CHUNK].astype(np.float64), desc.frac_bits)
        q = np.rint(scaled)  # round half to even
        quantised = quantised or bool(np.any(q != scaled))
        if q.min(initial=0) < info.min or q.max(initial=0) > info.max:
            raise InputError(
                f"input {desc.name!r}: values outside the {fmt.name} range "
                f"[{info.min * 2.0 ** -desc.frac_bits}, {info.max * 2.0 ** -desc.frac_bits}] with {desc.frac_bits} "
                "fractional bits")
        ints[lo:lo + CHUNK] = q
    return _to_storage_order(desc, ints).view(np.uint8).reshape(-1), quantised


def _step_values(desc: IODesc, raw: np.ndarray, step: int, channels_last: bool = False) -> np.ndarray:
    """Stored timestep `step` of the tensor as integers [B, C, H, W] (spikes 0/1, multi-bit as
    stored; [B, H, W, C] as stored with channels_last): the bytes of that step only, never a
    copy of all T."""
    t, b, c, h, w, cs = desc.timesteps, desc.batch, desc.channels, desc.height, desc.width, desc.channels_stored
    fmt = Format(desc.format)
    if fmt == Format.SPIKE_PLANES:
        per_step = raw.size // t
        values = np.unpackbits(raw[step * per_step:(step + 1) * per_step], bitorder="little").reshape(b, h, w, cs)
    elif fmt == Format.SPIKE_WORDS:
        words = raw.view(word_dtype(t)).reshape(b, h, w, cs)
        values = (words >> words.dtype.type(step)) & words.dtype.type(1)
    else:
        values = raw.view(ACT_DTYPES[fmt]).reshape(t, b, h, w, cs)[step]
    return values[..., :c] if channels_last else values[..., :c].transpose(0, 3, 1, 2)


def decode_step_ints(desc: IODesc, raw: np.ndarray, step: int) -> np.ndarray:
    """The stored integers (spikes 0/1; multi-bit: value * 2**frac_bits) of stored timestep
    `step` as int64 [B, *per_step] (the user's window is decode_output's), as `exit.check`
    reads them."""
    return _step_values(desc, raw, step).astype(np.int64).reshape((desc.batch, -1))


def decode_output(desc: IODesc, raw: np.ndarray) -> np.ndarray:
    """The user's window (steps t0 .. t0+nt-1) as float32 [onnx_shape], one stored step at a
    time (no int64 copy of all T). ACT values: k * 2**-frac rounded once to float32, as
    round(k) * 2**-frac: the validator keeps every stored k * 2**-frac a normal float32, where
    scaling by a power of two is exact."""
    out = np.empty((desc.nt, desc.batch, desc.channels, desc.height, desc.width), dtype=np.float32)
    spikes = Format(desc.format) in (Format.SPIKE_PLANES, Format.SPIKE_WORDS)
    for i, step in enumerate(range(desc.t0, desc.t0 + desc.nt)):
        values = _step_values(desc, raw, step, channels_last=True)
        if not spikes:  # scaled in storage order (contiguous), then one transposing copy
            values = values.astype(np.float32)
            np.ldexp(values, -desc.frac_bits, out=values)
        out[i] = values.transpose(0, 3, 1, 2)
    return out.reshape(desc.onnx_shape)
