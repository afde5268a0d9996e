"""Baseline dataflows on the same machine (LoAS §V "Baseline"): 16 PEs, same SRAM, no multipliers.

CONTRACT: each model takes (hw, lanes bool [nt, M, K], nzw bool [N, K]) for one SYN
visit and returns timing.SynTiming. The timestep loop t is sequential and
innermost (LoAS: "to be conservative, we place the t dimension at the innermost
loop"), so a PE spends one cycle per matched (spike at t, non-zero weight) pair:
the work is lane SOPs, not positions. Rounds of num_pes work items each last the
slowest item (as LoAS's simulator: a tile's latency is its slowest PE).

  IP_SEQ  SparTen-SNN, inner product. A PE owns an output channel n and streams
          all positions m, chunks of K and timesteps t: work[n] = sum_{t,m,k}
          A_t[m,k] B[n,k]. One fast prefix-sum (one match per cycle). The spike
          trains themselves are the A bitmasks: each round of channels reads the
          whole visit's spike planes (nt * M * K bits) plus bm-B of its channels.
  OP      GoSPA-SNN, outer product. A PE owns a column k (only columns with work are
          scheduled): work[k] = (sum_{t,m} A_t[m,k]) * nnz(B[:,k]). Every product
          updates a partial sum of the [nt, M, N] psum matrix (4 B each, the int32
          accumulator). Psums that do not fit in psum_share of the global cache
          spill: spilled fraction f = max(0, 1 - budget / (nt*M*N*4)); each spilled
          update is a DRAM read + write: psum DRAM bytes = 2 * 4 * SOPs * f, and the
          visit takes max(compute, psum DRAM bytes / DRAM bytes per cycle)
          (`psum_spill` stall = the excess). Spikes are CSR-coded: a 2-byte
          coordinate per spike, read once per use of its column.
  GUST    Gamma-SNN, Gustavson. A PE owns a row m: work[m] = sum_{t,k} A_t[m,k] nnz(B[k]).
          Partial rows are merged on chip: every product is a read + write of a
          4-byte partial-row element in the global cache (psums SRAM bytes = 8 * SOPs).
Imports only numpy, the standard library and snnc.backend.
"""

from __future__ import annotations

import math

import numpy as np

from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Dataflow
from snnc.runtime.timing import SynTiming, imbalance, rounds_of

PSUM_BYTES = 4  # the int32 accumulator of the ISA (isa.py acc_addr)
CSR_COORD_BYTES = 2  # a 16-bit coordinate per spike (K, M < 65536)


def _lane_counts(lanes: np.ndarray) -> np.ndarray:
    return lanes.sum(axis=0, dtype=np.int64)  # [M, K] spikes over lanes


def ip_seq(hw: HwConfig, lanes: np.ndarray, nzw: np.ndarray) -> SynTiming:
    nt, m_pos, k = lanes.shape
    pes = hw.compute.num_pes
    per_k = _lane_counts(lanes).sum(axis=0)  # spikes at k over (t, m)
    work = nzw.astype(np.int64) @ per_k  # [N]
    per_round = rounds_of(work, pes)
    sops = int(work.sum())
    rounds = per_round.size
    return SynTiming(
        cycles=hw.compute.syn_overhead_cycles + int(per_round.sum()), pe_work=sops,
        stalls={"pe_imbalance": imbalance(work, pes)},
        events={"pseudo_acc": sops},
        sram_extra={"bitmasks": rounds * math.ceil(nt * m_pos * k / 8) + nzw.shape[0] * math.ceil(k / 8),
                    "weights": sops * hw.compute.weight_bits // 8},
    )


def op(hw: HwConfig, lanes: np.ndarray, nzw: np.ndarray) -> SynTiming:
    nt, m_pos, k = lanes.shape
    n_out = nzw.shape[0]
    pes = hw.compute.num_pes
    per_k = _lane_counts(lanes).sum(axis=0)
    col = nzw.sum(axis=0, dtype=np.int64)
    work = per_k * col
    work = work[work > 0]  # only columns with work are scheduled
    per_round = rounds_of(work, pes)
    sops = int(work.sum())
    compute = hw.compute.syn_overhead_cycles + int(per_round.sum())
    footprint = nt * m_pos * n_out * PSUM_BYTES
    budget = hw.sram.size_bytes * hw.sram.psum_share
    spilled = max(0.0, 1.0 - budget / footprint) if footprint else 0.0
    spill_bytes = int(round(2 * PSUM_BYTES * sops * spilled))
    spill_cycles = math.ceil(spill_bytes / hw.dram_bytes_per_cycle)
    cycles = max(compute, spill_cycles)
    return SynTiming(
        cycles=cycles, pe_work=sops,
        stalls={"pe_imbalance": imbalance(work, pes), "psum_spill": cycles - compute},
        events={"pseudo_acc": sops},
        sram_extra={"bitmasks": CSR_COORD_BYTES * int((per_k * (col > 0)).sum()),
                    "psums": 2 * PSUM_BYTES * sops,
                    "weights": int(col.sum()) * hw.compute.weight_bits // 8},
        dram_extra={"psums": spill_bytes},
    )


def gust(hw: HwConfig, lanes: np.ndarray, nzw: np.ndarray) -> SynTiming:
    nt, m_pos, k = lanes.shape
    pes = hw.compute.num_pes
    col = nzw.sum(axis=0, dtype=np.int64)
    work = _lane_counts(lanes) @ col  # [M]
    per_round = rounds_of(work, pes)
    sops = int(work.sum())
    return SynTiming(
        cycles=hw.compute.syn_overhead_cycles + int(per_round.sum()), pe_work=sops,
        stalls={"pe_imbalance": imbalance(work, pes)},
        events={"pseudo_acc": sops},
        sram_extra={"bitmasks": nt * m_pos * math.ceil(k / 8) + nzw.shape[0] * math.ceil(k / 8),
                    "psums": 2 * PSUM_BYTES * sops,
                    "weights": sops * hw.compute.weight_bits // 8},
    )


MODELS = {Dataflow.IP_SEQ: ip_seq, Dataflow.OP: op, Dataflow.GUST: gust}
