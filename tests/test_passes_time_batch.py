"""time-batch: timesteps per layer visit, neuron state spilled between batches (STEMS Fig. 7)."""

from __future__ import annotations

import pytest

from passes_util import assert_same_outputs, bench_module, run
from snnc.backend.binformat import decode_instructions
from snnc.backend.errors import CompileError
from snnc.backend.isa import Opcode


@pytest.mark.parametrize("name, hw", [("mlp", None), ("vgg-small", None), ("vgg-small", "small-sram")])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_differential_outputs_identical(name, hw, k):
    _, base = run(name, None, hw)
    result, sim = run(name, f"time-batch{{timesteps={k}}}", hw)
    assert_same_outputs(base, sim)
    assert ('tile.dim = "tb"' in result.loop_ir) == (k < 4)  # batches of k timesteps run outermost


def test_visits_stay_inside_their_batch():
    result, _ = run("vgg-small", "time-batch{timesteps=2}")
    lifs = [f for spec, f in decode_instructions(result.image) if spec.opcode == Opcode.LIF]
    assert {(f["t0"], f["nt"]) for f in lifs} == {(0, 2), (2, 2)}
    # batch-major within a layer: every visit of batch [0, 2) before any of [2, 4)
    for layer in {f["layer"] for f in lifs}:
        t0s = [f["t0"] for f in lifs if f["layer"] == layer]
        assert t0s == sorted(t0s) and len(set(t0s)) == 2


def test_full_batch_is_the_default_program():
    base, _ = run("vgg-small", "")  # no pass at all
    full, _ = run("vgg-small", "time-batch{timesteps=4}")
    assert base.binary == full.binary


@pytest.mark.parametrize("hw", ["small-sram", "loas"])
def test_state_traffic_falls_as_the_batch_grows(hw):
    """STEMS Fig. 7: neuron-state DRAM traffic shrinks with more timesteps per visit."""
    bench = bench_module()
    state = []
    for k in (1, 2, 4):
        result, sim = run("vgg-small", f"time-batch{{timesteps={k}}}", hw)
        state.append(sum(bench.state_dram_bytes(result.image).values()))
    assert state[0] > state[1] > state[2] == 0
    # the simulator's DRAM traffic carries it: every batch boundary stores and reloads v, s_prev
    _, one = run("vgg-small", "time-batch{timesteps=1}", hw)
    _, full = run("vgg-small", None, hw)
    assert one.report["total"]["dram_bytes"] > full.report["total"]["dram_bytes"] + state[0] // 2


def test_state_stays_in_sram_when_it_fits():
    bench = bench_module()
    result, _ = run("mlp", "time-batch{timesteps=1}")
    assert sum(bench.state_dram_bytes(result.image).values()) == 0


def test_out_of_range_batch_is_refused():
    with pytest.raises(CompileError, match=r"timesteps=5: expected 1..4"):
        run("mlp", "time-batch{timesteps=5}")
