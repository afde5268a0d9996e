"""Per-timestep output timing: report["timesteps"][t]["ready_cycle"] and total.first_output_cycle."""

from __future__ import annotations

import numpy as np
import pytest

from progbuild import Prog
from snnc.backend.isa import Format
from snnc.compiler.pipeline import CompileOptions, compile_model
from snnc.compiler.zoo import build
from snnc.runtime import simulate

X, Y = 0x100, 0x200  # DRAM: input and output, [3, 1, 8] int32 each (32 bytes per timestep)


def test_ready_cycles_by_hand():
    """Load all 3 timesteps, store t = 1, then t = 0 and t = 2 in one strided store.

    DMA cycles = latency 64 + the busiest HBM channel's bytes / 10 B per cycle (32-byte
    interleave): every 32-byte row sits in one channel, so each DMA is 64 + ceil(32/10) = 68
    cycles and holds the DMA engine for its 4 transfer cycles (docs/isa.md "Timing model").
      load   start 0,  finish 68 (engine free at 4)
      store1 reads SRAM [32, 64) the load writes: start 68, finish 136 (engine free at 72)
      store2 reads SRAM [0, 32) and [64, 96): start 72 (engine), finish 140
    So t = 1 is final at 136, t = 0 and t = 2 at 140: the raw per-timestep cycle, which a
    program may well make non-monotonic."""
    p = Prog(dram_size=1024)
    p.tensor("x", False, (3, 1, 8), X, Format.ACT_I32)
    p.tensor("y", True, (3, 1, 8), Y, Format.ACT_I32)
    p.load(X, 0, 96)
    p.store(Y + 32, 32, 32)
    p.store(Y, 0, 32, rows=2, dram_stride=64, sram_stride=64)
    x = np.arange(24, dtype=np.float32).reshape(3, 1, 8)
    result = simulate(p.image(), {"x": x})
    assert np.array_equal(result.outputs["y"], x)
    report = result.report
    assert [(s["t"], s["ready_cycle"], s["outputs"]) for s in report["timesteps"]] == [
        (0, 140, {"y": 140}), (1, 136, {"y": 136}), (2, 140, {"y": 140})]
    assert report["total"]["first_output_cycle"] == 140
    assert report["total"]["cycles"] == 140


def test_spike_words_are_ready_with_their_last_store():
    """Every SPIKE_WORDS word holds all timesteps: each timestep is ready with the last store."""
    p = Prog(dram_size=1024)
    p.tensor("x", False, (3, 1, 8), X, Format.SPIKE_WORDS)
    p.tensor("y", True, (3, 1, 8), Y, Format.SPIKE_WORDS)
    p.load(X, 0, 8)
    p.store(Y, 0, 4)
    p.store(Y + 4, 4, 4)
    x = (np.arange(24).reshape(3, 1, 8) % 3 == 0).astype(np.float32)
    result = simulate(p.image(), {"x": x})
    assert np.array_equal(result.outputs["y"], x)
    last = result.report["total"]["cycles"]
    assert [s["ready_cycle"] for s in result.report["timesteps"]] == [last] * 3


def test_functional_run_has_no_ready_cycles():
    model, inputs = build("mlp")
    result = simulate(compile_model(model).image, inputs, functional=True)
    assert all(s["ready_cycle"] is None for s in result.report["timesteps"])
    assert result.report["total"]["first_output_cycle"] is None


@pytest.mark.parametrize("name,passes", [
    ("mlp", None), ("vgg-small", None), ("digits", None),
    ("vgg-small", "time-batch{timesteps=1},dma-prefetch"),
    ("vgg-small", "layer-fuse,dma-prefetch"),
    ("digits", "time-batch{timesteps=1}"),
])
def test_ready_cycles_are_monotonic_and_within_the_run(name, passes):
    model, inputs = build(name)
    report = simulate(compile_model(model, CompileOptions(passes=passes)).image, inputs).report
    outputs = [o.name for o in model.graph.output]
    steps = report["timesteps"]
    assert len(steps) == model.graph.input[0].type.tensor_type.shape.dim[0].dim_value
    ready = [s["ready_cycle"] for s in steps]
    assert all(a <= b for a, b in zip(ready, ready[1:])), ready
    assert 0 < ready[-1] <= report["total"]["cycles"]
    assert report["total"]["first_output_cycle"] == ready[0]
    for s in steps:
        assert sorted(s["outputs"]) == sorted(outputs)
        assert s["ready_cycle"] == max(s["outputs"].values())
        per_output = [s["outputs"][o] for o in outputs]
        assert all(0 < c <= report["total"]["cycles"] for c in per_output)


def test_store_marks_of_one_range_match_the_timestep_mask():
    """OutputTimeline.store_marks works out a contiguous store's timesteps in plain ints; every
    range (empty, inside, overlapping an end, whole words of SPIKE_WORDS) gives what
    binformat.io_timestep_mask gives."""
    from types import SimpleNamespace

    from snnc.backend.binformat import io_timestep_mask
    from snnc.runtime.output_timing import OutputTimeline

    p = Prog(dram_size=4096)
    p.tensor("x", False, (3, 1, 8), X, Format.ACT_I32)
    p.tensor("y", True, (3, 1, 8), Y, Format.ACT_I32)  # [0x200, 0x260): 32 bytes per timestep
    p.tensor("s", True, (5, 1, 16), 0x400, Format.SPIKE_WORDS)  # every word holds all timesteps
    timeline = OutputTimeline(p.image())
    rng = np.random.default_rng(2)
    for _ in range(500):
        lo = int(rng.integers(0x1c0, 0x480))
        hi = lo + int(rng.integers(0, 120))
        effect = SimpleNamespace(dram_spans=(np.array([lo]), hi - lo))
        marks = dict((index, steps.tolist()) for index, steps in timeline.store_marks(True, effect))
        for index, desc in enumerate(timeline.outputs):
            olo, ohi = timeline.hulls[index]
            if lo < ohi and olo < hi:
                assert marks.pop(index) == io_timestep_mask(desc, np.array([lo]), np.array([hi])).tolist()
        assert not marks
