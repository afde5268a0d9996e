"""Baseline dataflows on the same machine (LoAS §V "Baseline"): 16 PEs, same SRAM, no multipliers.

CONTRACT: each model takes (hw, lanes bool [nt, M, K], nzw bool [N, K]) for one SYN
visit and returns syn_model.SynTiming. The timestep loop t is sequential (LoAS: "to be
conservative, we place the t dimension at the innermost loop"): a PE spends one cycle
per matched (spike at t, non-zero weight) pair, so the work is lane SOPs, not positions.

Synchronisation is the one of LoAS's own simulator (RuokaiYin/LoAS at cd635a8,
src/snn-{sparten,gospa,gamma}-result.py), which the published cycle counts come from:
the operands are cut into *broadcast tiles* of one timestep; a tile is sent to all
PEs, every PE works on its share, and the next tile is sent when the slowest PE is
done. A tile's latency is its slowest PE; the visit's is the sum over tiles (tiles
without work cost nothing). Tile shapes (`TILES`, positions x K-chunk x channels)
are those of LoAS's simulator:

  IP_SEQ  SparTen-SNN, inner product. A PE owns one output channel n of a group of
          num_pes; the tile is (1 timestep, 32 positions, 128 of K), its spike bits
          broadcast as the A bitmasks: latency = max_n sum_{m,k in tile} A_t[m,k] B[n,k].
          One fast prefix-sum per PE (one match per cycle).
  OP      GoSPA-SNN, outer product. The same PE-per-channel split over bigger tiles
          (1 timestep, 64 positions, 256 of K). Every product updates a partial sum
          of the [nt, M, N] psum matrix (4 B each, the int32 accumulator). Psums that
          do not fit in psum_share of the global cache spill: spilled fraction
          f = max(0, 1 - budget / (nt*M*N*4)); each spilled update is a DRAM read +
          write: psum DRAM bytes = 2 * 4 * SOPs * f, and the visit takes
          max(compute, psum DRAM bytes / DRAM bytes per cycle) (`psum_spill` stall =
          the excess). Spikes are CSR-coded: a 2-byte coordinate per spike, read once
          per tile.
  GUST    Gamma-SNN, Gustavson. A PE owns one output position m of a group of num_pes;
          the tile is (1 timestep, num_pes positions, 64 of K, 64 channels):
          latency = max_m sum_{k in tile} A_t[m,k] * #n in tile(B[n,k]). Partial rows
          are merged on chip: every product is a read + write of a 4-byte
          partial-row element in the global cache (psums SRAM bytes = 8 * SOPs).
A visit of the FTP-tiled program can have fewer channels (IP_SEQ, OP) or positions
(GUST) than PEs. The scheduler then splits the other dimension into G contiguous
groups and a PE owns (channel, position group) or (position, channel group), with G
from `pe_array.split_factor`, the rule the FTP model uses for its fiber-B groups; LoAS's
simulator never meets such visits (it times whole layers), and bench/loas_formula.py
calls the tile helpers without a split.
`pe_imbalance` = sum over tiles of (slowest PE - mean PE) work.
Imports only numpy, the standard library and snnc.backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Dataflow
from snnc.runtime.pe_array import split_factor
from snnc.runtime.syn_model import SynTiming

PSUM_BYTES = 4  # the int32 accumulator of the ISA (isa.py acc_addr)
CSR_COORD_BYTES = 2  # a 16-bit coordinate per spike (K, M < 65536)


@dataclass(frozen=True)
class BroadcastTile:
    """positions x K-chunk x channels of one broadcast tile (0 = one per PE)."""

    positions: int
    k_chunk: int
    channels: int


# LoAS's simulator (RuokaiYin/LoAS cd635a8) tile_dict of each baseline: 'x': (t, m, k), 'w': (k, n)
TILES = {
    Dataflow.IP_SEQ: BroadcastTile(positions=32, k_chunk=128, channels=0),  # snn-sparten-result.py
    Dataflow.OP: BroadcastTile(positions=64, k_chunk=256, channels=0),  # snn-gospa-result.py
    Dataflow.GUST: BroadcastTile(positions=0, k_chunk=64, channels=64),  # snn-gamma-result.py
}


def _pad(a: np.ndarray, axis: int, multiple: int) -> np.ndarray:
    extra = (-a.shape[axis]) % multiple
    if not extra:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, extra)
    return np.pad(a, widths)


@dataclass
class TileWork:
    """Per broadcast tile, the slowest PE's work; and the total work (lane SOPs)."""

    slowest: np.ndarray
    sops: int

    @property
    def cycles(self) -> int:
        return int(self.slowest.sum())

    def imbalance(self, pes: int) -> int:
        return int(round(self.cycles - self.sops / pes))


def _group_onehot(length: int, groups: int, block: int) -> np.ndarray:
    """float32 [length padded to `block`, groups]: 1 where index i (< length) is in group g.
    Groups are contiguous *within each broadcast tile* of `block` indices, so that every
    tile has work for every group's PEs: index j of a tile holding c indices is in group
    j * groups // c."""
    padded = -(-length // block) * block
    index = np.arange(padded)
    in_tile = np.minimum(block, length - index // block * block)  # indices the tile holds
    group = (index % block) * groups // np.maximum(in_tile, 1)
    onehot = np.zeros((padded, groups), dtype=np.float32)
    real = index < length
    onehot[index[real], group[real]] = 1
    return onehot


def pe_per_channel(lanes: np.ndarray, nzw: np.ndarray, positions: int, k_chunk: int, pes: int,
                   split: int = 1) -> TileWork:
    """PE n of a group of `pes` channels; tile = (t, `positions` rows, `k_chunk` of K).

    PE work in a tile = sum_{m, k in tile} A_t[m,k] B[n,k]: the spike counts of the
    tile's rows per k, times the channel's bitmask (one float32 GEMM per K-chunk;
    counts < 2**24 are exact). `split` G > 1: each tile's positions are cut into G
    contiguous groups and a PE owns (n, group) (`pe_array.split_factor`: fewer
    channels than fill the PEs)."""
    nt, m_pos, _ = lanes.shape
    a = _pad(_pad(lanes, 1, positions), 2, k_chunk)
    chunks = a.shape[2] // k_chunk
    blocks = a.shape[1] // positions
    a = a.reshape(nt, blocks, positions, chunks, k_chunk)
    if split > 1:  # spikes per (group, t, row block, k)
        onehot = _group_onehot(m_pos, split, positions).reshape(blocks, positions, split)
        per_block = np.einsum("tbpck,bpg->cgtbk", a.astype(np.float32), onehot)
    else:
        per_block = a.sum(axis=2, dtype=np.float32).transpose(2, 0, 1, 3)[:, None]
    per_block = per_block.reshape(chunks, -1, k_chunk)  # [chunks, G * nt * blocks, k_chunk]
    b = _pad(nzw.T, 0, k_chunk).astype(np.float32).reshape(chunks, k_chunk, -1)
    work = np.matmul(per_block, b).reshape(chunks, split, nt * blocks, -1)  # [chunks, G, tiles, N]
    work = _pad(work.transpose(0, 2, 3, 1).reshape(chunks, nt * blocks, -1), 2, pes)  # PE (n, g), n-major
    slowest = work.reshape(chunks, nt * blocks, -1, pes).max(axis=3)
    return TileWork(slowest=slowest, sops=int(work.sum(dtype=np.float64)))


def pe_per_position(lanes: np.ndarray, nzw: np.ndarray, k_chunk: int, channels: int, pes: int,
                    split: int = 1) -> TileWork:
    """PE m of a group of `pes` positions; tile = (t, `pes` rows, `k_chunk` of K, `channels`).

    PE work in a tile = sum_{k in tile} A_t[m,k] * #n in tile(B[n,k]). `split` G > 1:
    each tile's channels are cut into G contiguous groups and a PE owns (m, group)
    (`pe_array.split_factor`: fewer positions than fill the PEs)."""
    nt, m_pos, _ = lanes.shape
    a = _pad(lanes, 2, k_chunk)
    chunks = a.shape[2] // k_chunk
    a = a.reshape(nt * m_pos, chunks, k_chunk).transpose(1, 0, 2).astype(np.float32)  # [chunks, nt*M, kc]
    b = _pad(_pad(nzw.T, 0, k_chunk), 1, channels).astype(np.float32)
    blocks = b.shape[1] // channels
    b = b.reshape(chunks, k_chunk, blocks, channels)
    if split > 1:  # non-zero weights per (k, channel block, group)
        onehot = _group_onehot(nzw.shape[0], split, channels).reshape(blocks, channels, split)
        per_k = np.einsum("ckbn,bng->ckbg", b, onehot)
    else:
        per_k = b.sum(axis=3)[..., None]
    work = np.matmul(a, per_k.reshape(chunks, k_chunk, -1))  # [chunks, nt*M, blocks*G]
    work = work.reshape(chunks, nt, m_pos, blocks, split).transpose(0, 1, 3, 2, 4)
    work = _pad(work.reshape(chunks, nt, blocks, m_pos * split), 3, pes)  # PE (m, g), m-major
    slowest = work.reshape(chunks, nt, blocks, -1, pes).max(axis=4)
    return TileWork(slowest=slowest, sops=int(work.sum(dtype=np.float64)))


def ip_seq(hw: HwConfig, lanes: np.ndarray, nzw: np.ndarray) -> SynTiming:
    nt, m_pos, k = lanes.shape
    pes = hw.compute.num_pes
    tile = TILES[Dataflow.IP_SEQ]
    split = split_factor(nzw.shape[0], m_pos, pes)
    tw = pe_per_channel(lanes, nzw, tile.positions, tile.k_chunk, pes, split)
    groups = math.ceil(nzw.shape[0] * split / pes)
    return SynTiming(
        cycles=hw.compute.syn_overhead_cycles + tw.cycles, pe_work=tw.sops,
        stalls={"pe_imbalance": tw.imbalance(pes)},
        events={"pseudo_acc": tw.sops},
        # each channel group re-reads the visit's spike planes (the A bitmasks) and its bm-B
        sram_extra={"bitmasks": groups * math.ceil(nt * m_pos * k / 8) + nzw.shape[0] * math.ceil(k / 8),
                    "weights": tw.sops * hw.compute.weight_bits // 8},
    )


def op(hw: HwConfig, lanes: np.ndarray, nzw: np.ndarray) -> SynTiming:
    nt, m_pos, k = lanes.shape
    n_out = nzw.shape[0]
    pes = hw.compute.num_pes
    tile = TILES[Dataflow.OP]
    split = split_factor(n_out, m_pos, pes)
    tw = pe_per_channel(lanes, nzw, tile.positions, tile.k_chunk, pes, split)
    compute = hw.compute.syn_overhead_cycles + tw.cycles
    footprint = nt * m_pos * n_out * PSUM_BYTES
    budget = hw.sram.size_bytes * hw.sram.psum_share
    spilled = max(0.0, 1.0 - budget / footprint) if footprint else 0.0
    spill_bytes = int(round(2 * PSUM_BYTES * tw.sops * spilled))
    spill_cycles = math.ceil(spill_bytes / hw.dram_bytes_per_cycle)
    cycles = max(compute, spill_cycles)
    groups = math.ceil(n_out * split / pes)
    spikes = int(np.count_nonzero(lanes))
    return SynTiming(
        cycles=cycles, pe_work=tw.sops,
        stalls={"pe_imbalance": tw.imbalance(pes), "psum_spill": cycles - compute},
        events={"pseudo_acc": tw.sops},
        sram_extra={"bitmasks": CSR_COORD_BYTES * spikes * groups,
                    "psums": 2 * PSUM_BYTES * tw.sops,
                    "weights": int(nzw.sum()) * hw.compute.weight_bits // 8},
        dram_extra={"psums": spill_bytes},
    )


def gust(hw: HwConfig, lanes: np.ndarray, nzw: np.ndarray) -> SynTiming:
    nt, m_pos, k = lanes.shape
    pes = hw.compute.num_pes
    tile = TILES[Dataflow.GUST]
    split = split_factor(m_pos, nzw.shape[0], pes)
    tw = pe_per_position(lanes, nzw, tile.k_chunk, tile.channels, pes, split)
    return SynTiming(
        cycles=hw.compute.syn_overhead_cycles + tw.cycles, pe_work=tw.sops,
        stalls={"pe_imbalance": tw.imbalance(pes)},
        events={"pseudo_acc": tw.sops},
        sram_extra={"bitmasks": split * nt * m_pos * math.ceil(k / 8) + nzw.shape[0] * math.ceil(k / 8),
                    "psums": 2 * PSUM_BYTES * tw.sops,
                    "weights": tw.sops * hw.compute.weight_bits // 8},
    )


MODELS = {Dataflow.IP_SEQ: ip_seq, Dataflow.OP: op, Dataflow.GUST: gust}
