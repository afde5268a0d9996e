"""Memory model by hand: HBM channel interleaving, global-cache banks, dataflow unit models."""

from __future__ import annotations

import numpy as np
import pytest

from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Dataflow
from snnc.runtime import baselines, memory, timing


def test_interleaved_bytes_by_hand():
    # 8-byte blocks over 4 ways: [5, 30) -> block0 3 B (way 0), block1 8 (way 1), block2 8 (way 2), block3 6 (way 3)
    assert memory.interleaved_bytes([5], 25, 8, 4).tolist() == [3, 8, 8, 6]
    # a whole rotation (32 B) plus 4 B: every way 8 B, way 0 another 4
    assert memory.interleaved_bytes([0], 36, 8, 4).tolist() == [12, 8, 8, 8]
    # several rows at once, with different lengths
    assert memory.interleaved_bytes([0, 16], [8, 8], 8, 4).tolist() == [8, 0, 8, 0]


def test_interleaved_bytes_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(200):
        block, ways = int(rng.integers(1, 9)), int(rng.integers(1, 6))
        starts = rng.integers(0, 200, size=int(rng.integers(1, 5)))
        lengths = rng.integers(0, 150, size=starts.size)
        brute = np.zeros(ways, dtype=np.int64)
        for s, n in zip(starts, lengths):
            for a in range(s, s + n):
                brute[(a // block) % ways] += 1
        assert memory.interleaved_bytes(starts, lengths, block, ways).tolist() == brute.tolist()


def test_dma_cycles_channels():
    hw = HwConfig()  # 10 B/cycle per channel, 32 B bursts, 16 channels, latency 64
    assert memory.dma_cycles(hw, [0], 16 * 32) == 64 + 4  # every channel one burst
    # 16 rows of 32 B with a 512 B stride all land on channel 0: 512 B / 10 = 52 cycles
    assert memory.dma_cycles(hw, np.arange(16) * 512, 32) == 64 + 52
    # the same bytes contiguous spread over all channels
    assert memory.dma_cycles(hw, [0], 512) == 64 + 4


def test_bank_cycles_conflicts():
    hw = HwConfig()  # 16 banks x 16 B ports
    # 256 contiguous bytes: one block per bank, 1 cycle, no conflict
    assert memory.bank_cycles(hw, [(0, 256)]) == (1, 1)
    # four 16 B ranges in bank 0 (stride 256): 4 cycles where 1 would do
    assert memory.bank_cycles(hw, [(i * 256, i * 256 + 16) for i in range(4)]) == (4, 1)
    # modelled traffic without addresses spreads evenly: 512 B -> 32 B per bank = 2 cycles
    assert memory.bank_cycles(hw, [], 512) == (2, 2)


def _layer(lanes_t_m_k, nzw_n_k):
    return np.asarray(lanes_t_m_k, dtype=bool), np.asarray(nzw_n_k, dtype=bool)


def test_dataflow_models_count_by_hand():
    """2 lanes, 2 output positions, K = 3, 2 output channels.

    spikes: m0: k0 at t0,t1; k2 at t1.   m1: k1 at t0.
    weights: n0 non-zero at k0, k1; n1 at k0, k2.
    matched positions (FTP, any lane): m0: k0 x {n0,n1} + k2 x {n1} = 3; m1: k1 x {n0} = 1
    lane SOPs: m0: 2*2 + 1*1 = 5; m1: 1 -> 6
    """
    lanes, nzw = _layer([[[1, 0, 0], [0, 1, 0]], [[1, 0, 1], [0, 0, 0]]], [[1, 1, 0], [1, 0, 1]])
    hw = HwConfig()
    ftp = timing.syn_timing(hw, Dataflow.FTP, lanes, nzw)
    assert ftp.pe_work == 4
    # 2 positions < 16 TPPEs: the 2 fiber-Bs are split over TPPEs (G = 2): streams
    # (m0,n0) 1, (m0,n1) 2, (m1,n0) 1, (m1,n1) 0 matches; slowest 8 + 1 + 2 = 11, + overhead 2
    assert ftp.cycles == 2 + 11
    # corrections: m0 k0 fires in both lanes (no correction), k2 silent in t0 (1 x n1),
    # m1 k1 silent in t1 (1 x n0)
    assert ftp.events["correction_acc"] == 2 and ftp.events["corrected_entries"] == 2
    ip = timing.syn_timing(hw, Dataflow.IP_SEQ, lanes, nzw)
    # SparTen-SNN: PE per channel, one broadcast tile per timestep (LoAS's simulator);
    # 2 channels < 16 PEs, so the positions are split too (G = 2): a PE owns (n, m).
    # t0: (n0,m0) = k0 = 1, (n0,m1) = k1 = 1, (n1,m0) = k0 = 1 -> 1;
    # t1: (n0,m0) = k0 = 1, (n1,m0) = k0 + k2 = 2 -> 2
    assert ip.pe_work == 6 and ip.cycles == 2 + 1 + 2
    assert ip.stalls["pe_imbalance"] == round(3 - 6 / 16)
    # without the split (LoAS's simulator, PE per channel n): t0: n0 = 2, n1 = 1 -> 2; t1: n0 = 1, n1 = 2 -> 2
    assert baselines.pe_per_channel(lanes, nzw, 32, 128, 16).cycles == 2 + 2
    gust = timing.syn_timing(hw, Dataflow.GUST, lanes, nzw)
    # Gamma-SNN: PE per row m, split by channels too (G = 2): a PE owns (m, n).
    # t0: (m0,n0) = k0 = 1, (m0,n1) = k0 = 1, (m1,n0) = k1 = 1 -> 1;
    # t1: (m0,n0) = k0 = 1, (m0,n1) = k0 + k2 = 2 -> 2
    assert gust.pe_work == 6 and gust.cycles == 2 + 1 + 2
    assert gust.sram_extra["psums"] == 2 * 4 * 6
    # without the split: t0: m0 = k0 x 2 = 2, m1 = k1 x 1 = 1 -> 2; t1: m0 = k0 x 2 + k2 x 1 = 3 -> 3
    assert baselines.pe_per_position(lanes, nzw, 64, 64, 16).cycles == 2 + 3
    op = timing.syn_timing(hw, Dataflow.OP, lanes, nzw)
    # GoSPA-SNN: PE per channel like SparTen-SNN (bigger tiles, same single tile here)
    assert op.pe_work == 6 and op.cycles == 2 + 1 + 2
    assert op.dram_extra["psums"] == 0  # 2*2*2*4 B of psums fit


def test_visit_rounds_in_whole_operand_rounds():
    from snnc.runtime.pe_array import visit_rounds

    # 16 PEs: 16 positions fill a round; 8 are split in 2 groups (half the work per stream);
    # 24 need a second round that is half idle; 12 are split in 4 groups: 3 rounds of a quarter
    assert [visit_rounds(m, 64, 16) for m in (16, 8, 24, 12, 32)] == [1.0, 0.5, 2.0, 0.75, 2.0]


def test_round_aware_rows():
    """FTP visits of an 8-wide map: rows in tiles of 3 (24 positions) leave half of every
    second TPPE round idle; tiles of 2 or 4 fill them (`row_rounds`). The lowering takes the
    most rows among those with the fewest rounds: AlexNet conv2 (8x8) in visits of 2 rows."""
    from snnc.passes.tile_plan import row_rounds

    assert row_rounds(8, 3, 8, 192, 16) == 5.0  # tiles 3, 3, 2: 2 + 2 + 1 rounds
    assert row_rounds(8, 2, 8, 192, 16) == 4.0 == row_rounds(8, 4, 8, 192, 16) == row_rounds(8, 1, 8, 192, 16)
    assert row_rounds(32, 3, 32, 64, 16) == row_rounds(32, 2, 32, 64, 16) == 64.0  # 32-wide rows always fill

    from snnc.backend.binformat import decode_instructions
    from snnc.backend.isa import Opcode
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.compiler.zoo import build

    image = compile_model(build("alexnet-cifar10")[0], CompileOptions()).image
    conv2 = image.layer_names.index("conv2")
    rows = {fields["rows"] for spec, fields in decode_instructions(image)
            if spec.opcode == Opcode.SYN and fields["layer"] == conv2}
    assert rows == {2}


def test_split_factor_fills_whole_rounds():
    # G minimises rounds per unit of work, ceil(items * G / pes) / G; the smallest G on ties
    assert [timing.split_factor(m, 64, 16) for m in (1, 2, 4, 8, 12, 15, 16, 20, 24, 64)] == [16, 8, 4, 2, 4, 16, 1, 1, 1, 1]
    assert timing.split_factor(12, 3, 16) == 1  # 3 groups: 36 items = 3 rounds for 3x less work each: a tie with G=1
    assert timing.split_factor(1, 5, 16) == 5  # never more groups than the dimension has


def test_split_keeps_the_work_and_only_regroups_pes():
    """Splitting the other dimension moves work between PEs, never creates or loses any:
    with G groups, PE (n, g)'s work summed over g is PE n's work, tile by tile."""
    rng = np.random.default_rng(11)
    lanes = rng.random((4, 12, 300)) < 0.3
    nzw = rng.random((10, 300)) < 0.1
    for split in (1, 2, 3, 5):
        ch = baselines.pe_per_channel(lanes, nzw, 32, 128, 16, split)
        pos = baselines.pe_per_position(lanes, nzw, 64, 64, 16, split)
        sops = int((lanes.astype(np.int64) @ nzw.T.astype(np.int64)).sum())
        assert ch.sops == pos.sops == sops
    # 10 channels leave 6 of 16 PEs idle; split_factor cuts the 12 positions into 8 groups
    # (80 PE work units = 5 full rounds for 1/8 of the work each), which is faster
    assert timing.split_factor(10, 12, 16) == 8
    assert baselines.pe_per_channel(lanes, nzw, 32, 128, 16, 8).cycles < baselines.pe_per_channel(
        lanes, nzw, 32, 128, 16).cycles


def test_split_groups_lie_within_each_broadcast_tile():
    """With 100 channels in 64-channel tiles and G = 2, both tiles give work to both groups' PEs:
    tile 0 channels 0-31 / 32-63, tile 1 (36 channels) 64-81 / 82-99."""
    onehot = baselines._group_onehot(100, 2, 64)
    group = onehot.argmax(axis=1)
    assert onehot.shape == (128, 2) and onehot[100:].sum() == 0 and onehot[:100].sum(axis=1).min() == 1
    assert (group[:32] == 0).all() and (group[32:64] == 1).all()
    assert (group[64:82] == 0).all() and (group[82:100] == 1).all()


def test_gospa_spills_psums_that_do_not_fit():
    hw = HwConfig()
    rng = np.random.default_rng(0)
    lanes = rng.random((4, 256, 64)) < 0.3
    nzw = rng.random((128, 64)) < 0.5
    op = baselines.op(hw, lanes, nzw)
    footprint = 4 * 256 * 128 * 4  # 512 KB of int32 psums vs 128 KB on chip
    spilled = 1 - (hw.sram.size_bytes * hw.sram.psum_share) / footprint
    assert op.dram_extra["psums"] == pytest.approx(2 * 4 * op.pe_work * spilled, abs=1)
    assert op.cycles >= op.dram_extra["psums"] / hw.dram_bytes_per_cycle


def test_ftp_is_faster_than_t_sequential_when_neurons_fire_often():
    rng = np.random.default_rng(5)
    active = rng.random((64, 288)) < 0.3  # non-silent neurons
    lanes = active[None] & (rng.random((4, 64, 288)) < 0.7)
    nzw = rng.random((32, 288)) < 0.05
    hw = HwConfig()
    ftp = timing.syn_timing(hw, Dataflow.FTP, lanes, nzw).cycles
    for df in (Dataflow.IP_SEQ, Dataflow.OP, Dataflow.GUST):
        assert timing.syn_timing(hw, df, lanes, nzw).cycles > 1.5 * ftp


def test_balanced_runs_by_hand():
    from snnc.runtime.pe_array import balanced_runs

    # neurons 3, 3, 1, 1 (rows of work 3 and 1 x 2 columns of work 1): midpoints 1.5, 4.5, 6.5, 7.5
    # of 8 -> runs floor(4 * mid / 8) = 0, 2, 3, 3
    assert balanced_runs([3, 1], [1, 1], 4).tolist() == [0, 1, 1, 2, 4]
    # one row of 10 equal neurons over 4 runs: midpoints 0.5 .. 9.5 -> 2, 3, 2, 3 neurons
    assert balanced_runs([5], [1] * 10, 4).tolist() == [0, 2, 5, 7, 10]
    assert balanced_runs([0, 0], [1, 1], 4).tolist() == [0, 0, 0, 0, 4]  # no work: any cut will do


def test_balanced_runs_cover_the_grid_evenly():
    from snnc.runtime.pe_array import balanced_runs

    rng = np.random.default_rng(4)
    for _ in range(100):
        rows, cols = rng.integers(0, 50, size=int(rng.integers(1, 20))), rng.integers(0, 30, size=int(rng.integers(1, 40)))
        pes = int(rng.integers(1, 20))
        bounds = balanced_runs(rows, cols, pes)
        est = np.outer(rows, cols).ravel()
        assert bounds[0] == 0 and bounds[-1] == est.size and (np.diff(bounds) >= 0).all()
        per_run = np.add.reduceat(np.append(est, 0), bounds[:-1])[: pes] * (np.diff(bounds) > 0)
        # a run holds the neurons whose midpoints fall in its 1/pes of the total: within one neuron of it
        assert per_run.max(initial=0) <= est.sum() / pes + est.max(initial=0)


def test_balanced_streams_by_hand():
    # positions m0 (4 inputs fire) and m1 (1); fiber-Bs n0 (k0, k1) and n1 (k0, k2, k3)
    bm_a = np.array([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=bool)
    nzw = np.array([[1, 1, 0, 0], [1, 0, 1, 1]], dtype=bool)
    # estimates pop x nnz: (m0,n0) 8, (m0,n1) 12, (m1,n0) 2, (m1,n1) 3; midpoints 4, 14, 21, 23.5 of 25
    # -> 2 TPPEs: run 0 = (m0,n0), run 1 = (m0,n1), (m1,n0), (m1,n1): pieces (m0, n0), (m0, n1), (m1, n0..n1)
    dealt = timing.balanced_streams(bm_a, nzw, nzw.sum(axis=0), pes=2, width=2)
    # tasks per piece = chunks of 2 of K: (m0,n0) k0,k1 -> [2, 0]; (m0,n1) k0 | k2,k3 -> [1, 2];
    # (m1, n0..n1) k0 twice -> [2, 0]
    assert dealt.counts.tolist() == [[2, 0, 0, 0], [1, 2, 2, 0]]
    assert dealt.a_fetches == 3  # three pieces, each fetches its position's bm-A chunks
    # run 1 needs n1 twice (for m0, then m1) and n0 once: n0 is sent once, n1 twice
    assert (dealt.b_fibers, dealt.b_nonzeros) == (1 + 2, 2 + 2 * 3)
    # the rounds scheduler: 2 positions on 2 TPPEs, one round, every fiber-B sent once
    rounds = timing.rounds_streams(bm_a, nzw, nzw.sum(axis=0), pes=2, width=2)
    assert rounds.counts.tolist() == [[3, 2], [2, 0]] and (rounds.b_fibers, rounds.b_nonzeros) == (2, 5)


def test_balanced_streams_keep_every_matched_pair():
    """Both schedulers only regroup the joins: every output neuron's matched pairs are computed once."""
    rng = np.random.default_rng(8)
    for m_pos, n_out, k in ((1, 5, 300), (8, 64, 576), (24, 16, 200), (40, 3, 129)):
        bm_a = rng.random((m_pos, k)) < 0.3
        nzw = rng.random((n_out, k)) < 0.1
        matched = int((bm_a.astype(np.int64) @ nzw.T.astype(np.int64)).sum())
        for deal in (timing.balanced_streams, timing.rounds_streams):
            dealt = deal(bm_a, nzw, nzw.sum(axis=0), 16, 128)
            assert dealt.counts.sum() == matched
        runs = timing.balanced_streams(bm_a, nzw, nzw.sum(axis=0), 16, 128).counts.shape[0]
        assert runs == (m_pos if m_pos > timing.BALANCED_CUT_POSITIONS * 16 else 16)  # a run per TPPE, or rounds


def test_balanced_streams_sort_large_visits_into_rounds():
    # 5 positions > 2 x 2 TPPEs: a stream per position, dealt in decreasing order of bm-A popcount
    bm_a = np.array([[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1]], dtype=bool)
    nzw = np.ones((2, 4), dtype=bool)  # every fiber-B non-zero everywhere: a position's work = 2 x popcount
    dealt = timing.balanced_streams(bm_a, nzw, nzw.sum(axis=0), pes=2, width=4)
    # popcounts 1, 3, 2, 0, 3 -> order m1, m4, m2, m0, m3 -> rounds (m1, m4), (m2, m0), (m3)
    assert dealt.counts[:, 0].tolist() == [6, 6, 4, 2, 0]
    assert dealt.a_fetches == 5 and (dealt.b_fibers, dealt.b_nonzeros) == (3 * 2, 3 * 8)  # 3 rounds broadcast all
    # in position order (the rounds scheduler) the rounds would be (m0, m1), (m2, m3), (m4): 6 + 4 + 6
    assert timing.rounds_of(dealt.counts[:, 0], 2).tolist() == [6, 4, 0]


def test_every_scheduler_the_config_accepts_has_a_timing_model():
    from snnc.backend.hwconfig import TPPE_SCHEDULERS

    assert tuple(timing.FTP_SCHEDULERS) == TPPE_SCHEDULERS


def test_visits_timed_in_one_batch_as_one_by_one():
    """The simulator times many FTP visits' TPPE streams in one tppe.batched_streams call
    (timing.time_ftp_visits): every visit's SynTiming is the one it gets alone, under both
    schedulers, with visits of different stream and task counts (and empty ones) mixed."""
    import dataclasses

    rng = np.random.default_rng(17)
    for scheduler in ("balanced", "rounds"):
        hw = dataclasses.replace(HwConfig(), tppe=dataclasses.replace(HwConfig().tppe, scheduler=scheduler))
        visits, alone = [], []
        for nt, m_pos, n_out, k in ((4, 1, 5, 300), (4, 8, 64, 576), (2, 40, 3, 129), (4, 0, 8, 64),
                                    (3, 33, 16, 1000), (4, 2, 1, 1), (1, 12, 10, 130)):
            lanes = rng.random((nt, m_pos, k)) < rng.random()
            nzw = rng.random((n_out, k)) < rng.random() * 0.3
            visits.append(timing.ftp_visit(hw, lanes, nzw))
            alone.append(timing.ftp_syn(hw, lanes, nzw))
        assert timing.time_ftp_visits(hw, visits) == alone
        assert [timing.time_ftp_visits(hw, [v])[0] for v in visits] == alone


def test_fiber_b_forms_agree():
    """The timing models read a weight tile's fiber-Bs in compressed-row form; the dense
    matrix, column and row counts, and block sums derived from it are the dense ones."""
    rng = np.random.default_rng(4)
    for n, k in ((1, 1), (5, 300), (64, 576), (3, 0), (0, 7)):
        nzw = rng.random((n, k)) < 0.2
        fb = timing.FiberBs.of(nzw)
        flat = np.flatnonzero(nzw)
        sparse = timing.FiberBs((n, k), flat % k if k else flat, np.searchsorted(flat, np.arange(n + 1) * k))
        np.testing.assert_array_equal(sparse.nonzero, nzw)
        for form in (fb, sparse):
            np.testing.assert_array_equal(form.col, nzw.sum(axis=0))
            np.testing.assert_array_equal(form.row_nnz, nzw.sum(axis=1))
            if n:
                starts = np.unique(np.concatenate([[0], rng.integers(0, n, 3)]))
                ends = np.append(starts[1:], n)
                expect = np.stack([nzw[a:b].sum(axis=0) for a, b in zip(starts, ends)])
                np.testing.assert_array_equal(form.block_column_sums(starts), expect)


@pytest.mark.parametrize("density", [0.003, 0.05, 0.6])
def test_balanced_piece_counts_two_ways(density, monkeypatch):
    """A balanced cut counts each piece's matched pairs from the (position, non-zero) pairs or
    from fiber-B block column sums, whichever is less work: both give the same streams."""
    rng = np.random.default_rng(int(density * 1000))
    for m_pos, n_out, k in ((1, 5, 300), (4, 512, 1152), (8, 64, 576), (32, 16, 200)):
        bm_a = rng.random((m_pos, k)) < 0.4
        nzw = rng.random((n_out, k)) < density
        results = []
        for factor in (0.0, float("inf")):
            monkeypatch.setattr(timing, "PIECES_BY_NONZEROS", factor)
            dealt = timing.balanced_streams(bm_a, nzw, nzw.sum(axis=0), 16, 128)
            results.append((dealt.counts.tolist(), dealt.a_fetches, dealt.b_fibers, dealt.b_nonzeros))
        assert results[0] == results[1]
        assert np.asarray(results[0][0]).sum() == int((bm_a.astype(np.int64) @ nzw.T.astype(np.int64)).sum())


def test_balanced_piece_counts_follow_their_definition():
    """A balanced cut's streams, brute force: run j holds output neurons bounds[j]..bounds[j+1]-1
    (pe_array.balanced_runs), cut into pieces at position ends; a piece (position m, fiber-Bs
    n0..n1-1) has sum over k in chunk c of bm-A[m, k] * #{n in n0..n1-1: B[n, k] != 0} pairs."""
    from snnc.runtime.pe_array import balanced_runs

    rng = np.random.default_rng(21)
    for _ in range(60):
        m_pos, n_out, k = int(rng.integers(1, 12)), int(rng.integers(1, 40)), int(rng.integers(1, 90))
        pes, width = int(rng.integers(1, 8)), int(rng.choice([1, 3, 8, 64]))
        if m_pos > timing.BALANCED_CUT_POSITIONS * pes:
            continue  # rounds of positions: test_balanced_streams_sort_large_visits_into_rounds
        bm_a = rng.random((m_pos, k)) < rng.random()
        nzw = rng.random((n_out, k)) < rng.random() * 0.6
        dealt = timing.balanced_streams(bm_a, nzw, nzw.sum(axis=0), pes, width)
        bounds = balanced_runs(bm_a.sum(axis=1), nzw.sum(axis=1), pes)
        chunks = -(-k // width)
        for run in range(pes):
            pieces, lo = [], int(bounds[run])
            while lo < bounds[run + 1]:
                m, n0 = divmod(lo, n_out)
                n1 = min(n_out, n0 + int(bounds[run + 1]) - lo)
                per_k = bm_a[m] * nzw[n0:n1].sum(axis=0)
                pieces += [int(per_k[c * width:(c + 1) * width].sum()) for c in range(chunks)]
                lo += n1 - n0
            expected = pieces + [0] * (dealt.counts.shape[1] - len(pieces))
            assert dealt.counts[run].tolist() == expected
