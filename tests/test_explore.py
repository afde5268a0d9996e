"""snnc explore: the dynamic programme finds the exhaustive optimum, the analytic DRAM bytes
are the simulator's, the chosen pipeline reproduces the figures in schedule.json, infeasible
groups are never chosen, bad input is one line and exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from snnc.backend.errors import CompileError
from snnc.compiler.cli import main
from snnc.compiler.explore import (
    OBJECTIVES, _calibrate, count_schedules, dynamic_programme, exhaustive, fusable_spans, named_blocks,
    runs_needed, segment_table, uniform,
)
from snnc.compiler.explore_cost import SPLIT, Cost, Group, LoopBase, pipeline_string
from snnc.compiler.fileio import save_npz
from snnc.compiler.zoo import build


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (onnx path, inputs), written once."""
    root = tmp_path_factory.mktemp("explore")
    out = {}
    for name in ("mlp", "vgg-small"):
        model, inputs = build(name)
        path = root / f"{name}.onnx"
        path.write_bytes(model.SerializeToString())
        save_npz(root / f"{name}.npz", inputs)
        out[name] = (path, inputs)
    return out


def _small_sram(tmp_path: Path, size: int) -> str:
    path = tmp_path / "hw.toml"
    path.write_text(f"[sram]\nsize_bytes = {size}\n")
    return str(path)


# (model, hw, time batches, most kernels per group, loop orders, tilings, dataflows): spaces small
# enough to enumerate
SPACES = [("mlp", "loas", [1, 2], 4, ("",), ("", "traffic"), ("", "ip-seq")),
          ("vgg-small", "small-sram", [4], 4, ("", "m,n,t*"), ("",), ("",)),
          ("vgg-small", "small-sram", [1, 4], 1, ("",), ("",), ("",)),
          ("vgg-small", "small-sram", [4], 1, ("",), ("", "traffic"), ("", "ip-seq"))]


@pytest.mark.parametrize("name, hw, batches, max_group, orders, tilings, dataflows", SPACES)
def test_dynamic_programming_finds_the_exhaustive_optimum(models, name, hw, batches, max_group, orders, tilings,
                                                          dataflows):
    path, inputs = models[name]
    base = LoopBase.build(path, hw)
    n = len(base.names)
    spans = fusable_spans(base.names, max_group)
    variants = {"orders": orders, "tilings": tilings, "dataflows": dataflows}
    table, runs = segment_table(base, batches, spans, **variants)
    count = count_schedules(n, batches, spans, base.synaptic, **variants)
    assert runs == runs_needed(n, batches, spans, **variants) < count
    _, calibration = _calibrate(path, hw, inputs, base, _Quiet())
    evaluate, costs = base.evaluate, {}

    def once(groups, *rest):  # every objective ranks the same schedules: evaluate each once
        if tuple(groups) not in costs:
            costs[tuple(groups)] = evaluate(groups, *rest)
        return costs[tuple(groups)]

    base.evaluate = once
    for objective in OBJECTIVES:
        ranked, evaluated = exhaustive(base, batches, spans, calibration, objective, **variants)
        assert evaluated == count
        best = dynamic_programme(n, table, calibration, objective)
        assert best[0].figures.objective(objective) == pytest.approx(ranked[0].figures.objective(objective), rel=1e-9)
        assert _same(best[0].figures, ranked[0].figures), objective  # ties are broken alike


def _same(a, b) -> bool:
    return all(getattr(a, k) == pytest.approx(getattr(b, k), rel=1e-9)
               for k in ("dram_bytes", "sram_bytes", "cycles", "energy_pj"))


class _Quiet:
    def phase(self, text, total=None): ...

    def advance(self): ...


def test_forked_workers_build_the_same_segment_table(models, tmp_path):
    path, _ = models["vgg-small"]
    base = LoopBase.build(path, _small_sram(tmp_path, 8192))  # infeasible and SPLIT groups too
    spans = fusable_spans(base.names, 4)
    serial, runs = segment_table(base, [1, 2, 4], spans, workers=1)
    forked, forked_runs = segment_table(base, [1, 2, 4], spans, workers=2)
    assert runs == forked_runs and list(forked) == list(serial)  # same groups, same order (ties rank alike)
    assert [repr(c) for c in forked.values()] == [repr(c) for c in serial.values()]


def test_analytic_dram_bytes_are_the_simulators(models):
    from snnc.compiler.explore import simulate_schedule

    path, inputs = models["vgg-small"]
    base = LoopBase.build(path, "small-sram")
    n, T = len(base.names), base.timesteps
    _, calibration = _calibrate(path, "small-sram", inputs, base, _Quiet())
    schedules = [uniform(n, 1, T), uniform(n, 1, 1), [Group(0, 3, 2), Group(3, 2, 2), Group(5, 1, 2)],
                 [Group(0, 1, T, "m,n,t*"), Group(1, 2, T), Group(3, 2, T), Group(5, 1, 1, "m,n,t*")],
                 [Group(i, 1, T if i % 2 else 1, "", "traffic") for i in range(n)],
                 [Group(i, 1, T, "", "traffic", "ip-seq" if base.synaptic[i] else "") for i in range(n)]]
    for groups in schedules:
        costs = base.evaluate(groups)
        assert all(isinstance(c, Cost) for c in costs)
        predicted = calibration.predict(costs)
        measured, *_ = simulate_schedule(path, "small-sram", inputs, pipeline_string(base.names, groups, T))
        assert predicted.dram_bytes == measured.dram_bytes
        assert abs(predicted.cycles / measured.cycles - 1) < 0.2
        assert abs(predicted.energy_pj / measured.energy_pj - 1) < 0.1


def test_blocks_are_runs_of_a_shared_name_else_every_short_run_fuses():
    names = ["stem", "sew1.conv_a", "sew1.conv_b", "sew1.add", "sew2.conv_a", "sew2.pool", "fc"]
    assert named_blocks(names) == [(0, 1), (1, 3), (4, 2), (6, 1)]
    # whole blocks at any batch, however long; shorter runs in a block at batches >= the lanes
    # if they hold neuron state (a conv and its LIF), at any batch if not (the add)
    stateful = [True, True, True, False, True, False, True]
    assert fusable_spans(names, 2, lanes=4, stateful=stateful) == [(1, 2, 4), (2, 2, 4), (1, 3, 1), (4, 2, 1)]
    names = ["stem", "sew1.conv_a", "sew1.conv_b", "sew1.add", "sew1.pool", "fc"]
    assert fusable_spans(names, 2, 4, [True, True, True, False, False, True]) == [
        (1, 2, 4), (2, 2, 4), (3, 2, 1), (1, 3, 4), (2, 3, 4), (1, 4, 1)]
    assert named_blocks(["conv1", "conv2", "fc"]) == []
    spans = fusable_spans(["conv1", "conv2", "fc"], 3, lanes=4)
    assert spans == [(0, 2, 1), (1, 2, 1), (0, 3, 1)]
    assert count_schedules(3, [1, 2], spans) == 2 ** 3 + 2 * 2 * 2 + 2
    assert count_schedules(3, [1, 4], [(0, 2, 4)]) == 2 ** 3 + 1 * 2


def test_the_pipeline_string_names_the_groups():
    names = ["a", "b", "c", "d"]
    groups = [Group(0, 2, 1), Group(2, 1, 4, "m,n,t*"), Group(3, 1, 2, "", "traffic", "ip-seq")]
    assert pipeline_string(names, groups, 4) == (
        'compress-weights,loop-reorder{dataflow=ftp},loop-reorder{dataflow=ftp order="m,n,t*" layers="c"},'
        'loop-reorder{dataflow=ip-seq layers="d"},'
        'time-batch{timesteps=1 layers="a,b"},time-batch{timesteps=2 layers="d"},layer-fuse{boundaries="a,c,d"},'
        'tile-sizes{least_traffic="d"},dma-prefetch')
    assert pipeline_string(names, uniform(4, 1, 4), 4) == "compress-weights,loop-reorder{dataflow=ftp},dma-prefetch"


def test_groups_that_do_not_fit_are_infeasible_not_chosen(models, tmp_path):
    path, inputs = models["vgg-small"]
    hw = _small_sram(tmp_path, 8192)  # some kernels fit only time-batched (or not at all), no group fuses
    base = LoopBase.build(path, hw)
    table, _ = segment_table(base, [1, 4], fusable_spans(base.names, 4), orders=("",))
    assert None in table.values() and any(isinstance(c, Cost) for c in table.values())
    assert SPLIT in table.values()  # a group layer-fuse cannot fuse: the same as a finer schedule
    _, calibration = _calibrate(path, hw, inputs, base, _Quiet())
    for cand in dynamic_programme(len(base.names), table, calibration, "dram"):
        assert all(isinstance(table[g], Cost) for g in cand.groups)


def test_explore_writes_a_schedule_that_reproduces_its_figures(models, tmp_path, capsys):
    from snnc.compiler.explore import simulate_schedule

    path, inputs = models["vgg-small"]
    out = tmp_path / "schedule.json"
    assert main(["explore", str(path), "--hw", "small-sram", "--objective", "dram", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "best schedules by dram" in captured.out and "cost model against the simulator" in captured.out
    doc = json.loads(out.read_text())
    for key in ("dram_bytes", "energy_pj", "cycles"):
        assert doc[key] > 0 and doc["st_lbl"][key] > 0 and doc["default"][key] > 0
    assert doc["dram_bytes"] <= doc["default"]["dram_bytes"] and doc["dram_bytes"] < doc["st_lbl"]["dram_bytes"]
    figures, *_ = simulate_schedule(path, "small-sram", inputs, doc["pipeline"])
    assert (figures.dram_bytes, figures.cycles, figures.energy_pj) == (doc["dram_bytes"], doc["cycles"],
                                                                      doc["energy_pj"])
    assert doc["predicted"]["dram_bytes"] == doc["dram_bytes"]


def test_the_sweep_hook_searches(models):
    from snnc.compiler.sweep_point import SEARCHED_PIPELINES

    path, _ = models["mlp"]
    pipeline = SEARCHED_PIPELINES["explore"](path, "loas")
    assert pipeline.startswith("compress-weights,loop-reorder{dataflow=ftp}") and pipeline.endswith("dma-prefetch")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("snnc: error: "), err
    return err


def test_bad_input_is_one_line_and_exit_1(models, tmp_path, capsys):
    path, _ = models["mlp"]
    out = tmp_path / "s.json"
    cases = [
        (["--hw", "loas", "--objective", "speed"], "--objective 'speed'"),
        (["--hw", "no-such-preset"], "no-such-preset"),
        (["--hw", _small_sram(tmp_path, 1024)], "under no schedule"),
        (["--hw", "loas", "--input", str(tmp_path / "none.npz")], "none.npz"),
        (["--hw", "loas", "--max-group", "0"], "--max-group 0"),
    ]
    for extra, message in cases:
        assert main(["explore", str(path), "--out", str(out), *extra]) == 1
        assert message in _one_line_error(capsys)
        assert not out.exists()
    with pytest.raises(CompileError, match="under no schedule"):
        from snnc.compiler.explore import explore

        explore(path, _small_sram(tmp_path, 1024), {"x": np.zeros(1)})
