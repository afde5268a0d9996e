"""Memory timing: HBM channels behind the DMA engine, banks of the global cache.

CONTRACT
  DRAM (LoAS Table III: 128 GB/s over 16 x 64-bit HBM channels):
    * addresses interleave over channels in bursts of `dram.interleave_bytes`:
      channel(a) = (a // interleave_bytes) % channels;
    * each channel moves bandwidth / channels per cycle (128 GB/s / 800 MHz / 16 = 10 B);
    * a DMA of rows (start addresses, row_bytes) takes
        dma_cycles = latency_cycles + max over channels ceil(bytes on channel / channel B per cycle)
      so a transfer that hits few channels is slower than its byte count alone says
      (`strided_dma_cycles`: the same for rows at a constant stride, memoised per
      address phase and shape -- bank_cycles is memoised the same way);
    * double buffering and compute/transfer overlap come from the two-engine
      scoreboard (runtime/timing.py): a DMA into one buffer runs while compute
      reads the other; only true SRAM hazards serialise them.
  Global cache (LoAS Table III: 256 KB, 16 banks):
    * consecutive `sram.port_bytes` blocks interleave across banks;
      a bank moves port_bytes per cycle;
    * a compute instruction's SRAM traffic (its byte ranges) needs
        bank_cycles = max over banks ceil(bytes in bank / port_bytes)
      and the ideal (conflict-free) time is ceil(total / (banks * port_bytes));
      bank conflict cycles = bank_cycles - max(ideal, unit cycles) when positive.
    * hit/miss accounting in `sram.line_bytes` lines: misses = lines filled from
      DRAM by DMA loads; hits = lines read by compute that were already on chip
      (lines read - lines filled, never negative). The cache is software managed
      (explicit DMA), so a "miss" is a refill the program asked for.
Imports only numpy, the standard library and snnc.backend.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from snnc.backend.hwconfig import HwConfig


DIRECT_ELEMENTS = 1 << 14  # ranges x (ways + 1) up to which the per-block table is the faster form


def interleaved_bytes(starts, lengths, block: int, ways: int) -> np.ndarray:
    """Bytes of ranges [start, start+length) per way when `block`-byte blocks rotate over `ways`.

    Whole rotations contribute block bytes to every way; the remainder (< block * ways bytes)
    of a range touches at most ways + 1 blocks. Few ranges over few ways: a table of those
    blocks (`_interleaved_table`); otherwise O(ranges + ways) memory and time whatever `ways`
    is (`_interleaved_runs`): a DMA of many rows on a config of many channels stays small.
    """
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    lengths = np.broadcast_to(np.asarray(lengths, dtype=np.int64), starts.shape)
    out = np.zeros(ways, dtype=np.int64)
    if starts.size == 0:
        return out
    ring = block * ways
    full = lengths // ring
    out += int(full.sum()) * block
    s = starts + full * ring
    e = starts + lengths
    fill = _interleaved_table if starts.size * (ways + 1) <= DIRECT_ELEMENTS else _interleaved_runs
    return out + fill(s, e, block, ways)


def _interleaved_table(s: np.ndarray, e: np.ndarray, block: int, ways: int) -> np.ndarray:
    """Per way, the bytes of ranges [s, e) shorter than a rotation: [ranges, ways + 1] blocks."""
    blk = (s // block)[:, None] + np.arange(ways + 1, dtype=np.int64)[None, :]
    lo = np.maximum(blk * block, s[:, None])
    hi = np.minimum((blk + 1) * block, e[:, None])
    overlap = np.clip(hi - lo, 0, None)
    return np.bincount((blk % ways).ravel(), weights=overlap.ravel(), minlength=ways).astype(np.int64)


def _interleaved_runs(s: np.ndarray, e: np.ndarray, block: int, ways: int) -> np.ndarray:
    """`_interleaved_table` in O(ranges + ways): the first and the last block of each range go
    to their ways; the whole blocks between them (a cyclic run of fewer than `ways` ways) are
    added through a difference array over the ways."""
    keep = e > s
    s, e = s[keep], e[keep]
    b0, b1 = s // block, (e - 1) // block
    one = b0 == b1
    ends = np.bincount(np.concatenate([b0[one] % ways, b0[~one] % ways, b1[~one] % ways]),
                       weights=np.concatenate([e[one] - s[one], (b0[~one] + 1) * block - s[~one],
                                               e[~one] - b1[~one] * block]).astype(np.float64), minlength=ways)
    first, count = (b0[~one] + 1) % ways, b1[~one] - b0[~one] - 1
    first, count = first[count > 0], count[count > 0]
    stop = first + count  # exclusive; past `ways` the run wraps on to 0 .. stop - ways
    wrapped = stop[stop > ways] - ways
    at = np.concatenate([first, np.minimum(stop, ways), np.zeros(wrapped.size, np.int64), wrapped])
    signs = np.concatenate([np.ones(first.size), -np.ones(first.size), np.ones(wrapped.size), -np.ones(wrapped.size)])
    runs = np.cumsum(np.bincount(at, weights=signs, minlength=ways + 1)[:ways])
    return ends.round().astype(np.int64) + runs.round().astype(np.int64) * block


def channel_bytes_per_cycle(hw: HwConfig) -> float:
    return hw.dram_bytes_per_cycle / hw.dram.channels


def dma_cycles(hw: HwConfig, starts, row_bytes: int) -> int:
    """latency + the busiest channel's transfer time (see CONTRACT)."""
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    if starts.size == 0 or row_bytes == 0:
        return hw.dram.latency_cycles
    per = interleaved_bytes(starts, row_bytes, hw.dram.interleave_bytes, hw.dram.channels)
    return hw.dram.latency_cycles + math.ceil(int(per.max()) / channel_bytes_per_cycle(hw))


def strided_dma_cycles(hw: HwConfig, addr: int, rows: int, row_bytes: int, stride: int) -> int:
    """`dma_cycles` of `rows` rows starting at addr + i * stride, memoised.

    The channel of an address only depends on it modulo one interleave rotation
    (interleave_bytes * channels), and programs repeat the same transfer shapes tile after
    tile, so the per-channel split is computed once per (phase, shape).
    """
    if rows == 0 or row_bytes == 0:
        return hw.dram.latency_cycles
    block, ways = hw.dram.interleave_bytes, hw.dram.channels
    ring = block * ways
    busiest = _busiest_way_strided(block, ways, addr % ring, stride % ring, rows, row_bytes)
    return hw.dram.latency_cycles + math.ceil(busiest / channel_bytes_per_cycle(hw))


@functools.lru_cache(maxsize=1 << 14)
def _busiest_way_strided(block: int, ways: int, phase: int, stride: int, rows: int, row_bytes: int) -> int:
    """Row starts repeat modulo the rotation every `period` rows: whole periods are counted once."""
    period = block * ways // math.gcd(stride, block * ways)
    whole, rest = divmod(rows, period) if rows > period else (0, rows)
    per = interleaved_bytes(phase + np.arange(rest, dtype=np.int64) * stride, row_bytes, block, ways)
    if whole:
        per += whole * interleaved_bytes(phase + np.arange(period, dtype=np.int64) * stride, row_bytes, block, ways)
    return int(per.max())


def bank_cycles(hw: HwConfig, ranges: list[tuple[int, int]], extra_bytes: int = 0) -> tuple[int, int]:
    """(bank-limited cycles, conflict-free cycles) for SRAM byte ranges [lo, hi).

    `extra_bytes`: modelled traffic without addresses (bitmask / partial-sum streams
    of the dataflow models), spread evenly over the banks.
    """
    return bank_cycles_of(hw, bank_split(hw, ranges), extra_bytes)


def bank_split(hw: HwConfig, ranges: list[tuple[int, int]]) -> tuple[int, int]:
    """(bytes on the busiest bank, bytes on all banks) of SRAM byte ranges [lo, hi): what
    `bank_cycles` needs of the ranges (an instruction's are the same every time it runs)."""
    port, banks = hw.sram.port_bytes, hw.sram.banks
    ring = port * banks  # a range's bank split only depends on its start modulo one rotation
    return _busiest_way_ranges(port, banks, tuple((lo % ring, hi - lo) for lo, hi in ranges if hi > lo))


def bank_cycles_of(hw: HwConfig, split: tuple[int, int], extra_bytes: int = 0) -> tuple[int, int]:
    """`bank_cycles` from the ranges' `bank_split`."""
    port, banks = hw.sram.port_bytes, hw.sram.banks
    busiest, total = split
    total += extra_bytes
    worst = busiest + math.ceil(extra_bytes / banks)
    return math.ceil(worst / port), math.ceil(total / (port * banks))


@functools.lru_cache(maxsize=1 << 14)
def _busiest_way_ranges(block: int, ways: int, shape: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """(bytes on the busiest way, bytes on all ways) of ranges given as (start phase, length)."""
    if not shape:
        return 0, 0
    starts = np.array([start for start, _ in shape], dtype=np.int64)
    lengths = np.array([length for _, length in shape], dtype=np.int64)
    per = interleaved_bytes(starts, lengths, block, ways)
    return int(per.max()), int(per.sum())


def lines(nbytes: int, hw: HwConfig) -> int:
    return math.ceil(nbytes / hw.sram.line_bytes)
