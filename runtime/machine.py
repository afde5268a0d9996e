"""Architectural state of the simulated accelerator and the tile codecs.

CONTRACT:
  * `Machine(image, hw)`: DRAM is a zeroed np.uint8 array of `image.dram_size`
    bytes with `image.constants` at address 0; SRAM is a zeroed np.uint8 array of
    `hw.sram.size_bytes`. Every access is bounds-checked and an out-of-range
    access raises `BinaryFormatError` naming the instruction and field.
  * `read_tile` / `write_tile` convert between the byte layout of a tile in one
    of the isa.Format storage formats and an integer array [nt][rows][width][chans]
    (spikes as 0/1): int64 by default; `read_tile(..., dtype=None)` keeps the
    narrowest exact type (uint8 spikes, the stored int16/int32 activations) so
    that callers that only gather or multiply do not move 8-byte elements.
    Layouts (docs/isa.md "Tile layouts"):
      SPIKE_PLANES  [nt][rows][width][chans] bits, little-endian within a byte,
                    chans a multiple of 8 (every (row, x) is whole bytes)
      SPIKE_WORDS   [rows][width][chans] words of spike_word_bytes(timesteps)
                    bytes; bit t (absolute timestep) = spike at t; a write is a
                    read-modify-write of bits t0..t0+nt-1 only
      ACT_I16/I32   [nt][rows][width][chans] little-endian signed ints
Imports only numpy and snnc.backend.
"""

from __future__ import annotations

import functools

import numpy as np

from snnc.backend import isa
from snnc.backend.binformat import ProgramImage
from snnc.backend.errors import BinaryFormatError
from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Format

ACT_DTYPES = {Format.ACT_I16: np.dtype("<i2"), Format.ACT_I32: np.dtype("<i4")}


@functools.lru_cache(maxsize=None)  # every LIF and PACK asks; there are few distinct answers
def word_dtype(timesteps: int) -> np.dtype:
    return np.dtype(f"<u{isa.spike_word_bytes(timesteps)}")


class Memory:
    """A byte-addressed memory with bounds-checked, named accesses."""

    def __init__(self, name: str, size: int):
        self.name = name
        self.data = np.zeros(size, dtype=np.uint8)

    def span(self, addr: int, nbytes: int, where: str) -> np.ndarray:
        if addr + nbytes > self.data.size or addr < 0:
            raise BinaryFormatError(
                f"{where}: {self.name} bytes [{addr}, {addr + nbytes}) outside the {self.data.size}-byte {self.name}")
        return self.data[addr:addr + nbytes]

    def read(self, addr: int, dtype, count: int, where: str) -> np.ndarray:
        dtype = np.dtype(dtype)
        return self.span(addr, dtype.itemsize * count, where).view(dtype).copy()

    def write(self, addr: int, values: np.ndarray, where: str) -> None:
        raw = np.ascontiguousarray(values).view(np.uint8).reshape(-1)
        self.span(addr, raw.size, where)[:] = raw


class Machine:
    def __init__(self, image: ProgramImage, hw: HwConfig):
        self.hw = hw
        self.dram = Memory("DRAM", image.dram_size)
        self.dram.data[:len(image.constants)] = np.frombuffer(image.constants, dtype=np.uint8)
        self.sram = Memory("SRAM", hw.sram.size_bytes)


def read_tile(mem: Memory, fmt: Format, addr: int, nt: int, rows: int, width: int, chans: int,
              t0: int, timesteps: int, where: str, dtype=np.int64) -> np.ndarray:
    """The tile as `dtype` values [nt][rows][width][chans]; dtype None = as stored
    (uint8 0/1 spikes, int16/int32 activations), a fresh array either way."""
    shape = (nt, rows, width, chans)
    if fmt == Format.SPIKE_PLANES:
        if chans % 8:
            raise BinaryFormatError(f"{where}: SPIKE_PLANES tile needs a multiple of 8 channels, found {chans}")
        raw = mem.span(addr, isa.tile_bytes(fmt, nt, rows * width * chans, timesteps), where)
        spikes = np.unpackbits(raw, bitorder="little").reshape(shape)
    elif fmt in (Format.SPIKE_WORDS, Format.SPIKE_BITMASK):  # a BITMASK tile in SRAM is expanded words
        wdt = word_dtype(timesteps)
        words = mem.span(addr, wdt.itemsize * rows * width * chans, where).view(wdt).reshape(shape[1:])
        bit = np.arange(t0, t0 + nt, dtype=wdt).reshape(nt, 1, 1, 1)
        spikes = ((words[None] >> bit) & wdt.type(1)).astype(np.uint8)
    else:
        stored = ACT_DTYPES[fmt]
        values = mem.span(addr, stored.itemsize * nt * rows * width * chans, where).view(stored).reshape(shape)
        return values.copy() if dtype is None else values.astype(dtype)
    return spikes if dtype is None else spikes.astype(dtype, copy=False)


def write_tile(mem: Memory, fmt: Format, addr: int, values: np.ndarray, t0: int, timesteps: int,
               where: str) -> None:
    """Store integer `values` [nt][rows][width][chans] (already in range for ACT formats);
    spike formats take 0/1 (or bool) values."""
    nt, rows, width, chans = values.shape
    if fmt == Format.SPIKE_PLANES:
        if chans % 8:
            raise BinaryFormatError(f"{where}: SPIKE_PLANES tile needs a multiple of 8 channels, found {chans}")
        mem.write(addr, np.packbits(values.astype(np.uint8, copy=False).reshape(-1), bitorder="little"), where)
    elif fmt in (Format.SPIKE_WORDS, Format.SPIKE_BITMASK):
        dtype = word_dtype(timesteps)
        count = rows * width * chans
        words = mem.span(addr, dtype.itemsize * count, where).view(dtype).reshape(rows, width, chans)
        mask = dtype.type(((1 << nt) - 1) << t0)  # bits t0..t0+nt-1
        new = np.zeros((rows, width, chans), dtype=dtype)
        for lane in range(nt):  # nt <= 64 word-wide ORs: far cheaper than a [nt, ...] uint64 temporary
            new |= values[lane].astype(dtype) << dtype.type(t0 + lane)
        words[...] = (words & ~mask) | new
    else:
        dtype = ACT_DTYPES[fmt]
        mem.write(addr, values.astype(dtype), where)


def saturate(values: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """Clamp int64 values to a signed `bits`-bit range; returns (values, #clamped)."""
    if values.size == 0:
        return values, 0
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if values.min() >= lo and values.max() <= hi:  # the usual case: two reductions, no temporaries
        return values, 0
    clamped = int(np.count_nonzero((values < lo) | (values > hi)))
    return np.clip(values, lo, hi), clamped


def shift(values: np.ndarray, amount: int) -> np.ndarray:
    """values << amount, or arithmetic (floor) >> -amount when amount is negative."""
    return values << amount if amount >= 0 else values >> -amount


FORMAT_BITS = {Format.ACT_I16: 16, Format.ACT_I32: 32}
