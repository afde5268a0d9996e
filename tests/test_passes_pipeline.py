"""The passes as a pipeline: registry, the lowering stages, text round trip at the loop level, snn-opt,
verification after each pass, and every scheduling pass rewriting loops or buffers."""

from __future__ import annotations

import io

import pytest
from xdsl.parser import Parser
from xdsl.passes import PassPipeline

from passes_util import model
from snnc.compiler.cli import main as snnc_main
from snnc.compiler.pipeline import CompileOptions, compile_model, import_to_snn, print_ir
from snnc.compiler.snn_opt import main as snn_opt_main
from snnc.dialects import make_context
from snnc.passes import get_all_passes, get_builtin_passes, pass_level

PASSES = ("loop-reorder", "spike-pack", "time-batch", "layer-fuse")
PIPELINE = ("loop-reorder{dataflow=ip-seq},time-batch{timesteps=2 layers=conv3},layer-fuse{boundaries=conv3 tile_rows=3},"
            "spike-pack{mask-single-spike=true}")
LOWERED = "quantise,convert-snn-to-loops," + PIPELINE


def test_every_builtin_pass_is_registered_at_its_level_with_a_contract():
    levels = {"quantise": "snn", "convert-snn-to-loops": "snn", "dma-prefetch": "accel", "insert-barriers": "accel",
              "exit-checks": "accel"}
    for name, factory in get_builtin_passes().items():
        cls = factory()
        assert cls.name == name and pass_level(cls) == levels.get(name, "loop"), name
        assert cls.__doc__.strip() and "CONTRACT" in __import__(cls.__module__, fromlist=["x"]).__doc__


def test_snnc_passes_lists_them(capsys):
    assert snnc_main(["passes"]) == 0
    out = capsys.readouterr().out
    for name in PASSES:
        assert name in out
    assert "dataflow=" in out and "timesteps=" in out and "boundaries=" in out and "mask_single_spike=" in out


def test_pipeline_round_trips_through_text():
    ctx = make_context()
    module = import_to_snn(model("vgg-small")[0])
    for p in PassPipeline.parse_spec(get_all_passes(), LOWERED).passes:
        p.apply(ctx, module)
        module.verify()
    text = print_ir(module)
    for fragment in ('tile.dim = "tb"', 'tile.dim = "band"', "ring:", " mask_single ", "spike_bitmask",
                     "tile.fiber_offsets", "dataflow=ip_seq"):
        assert fragment in text, fragment
    reparsed = Parser(make_context(), text).parse_module()
    reparsed.verify()
    assert print_ir(reparsed) == text


def _loop_ir_after(passes: str, name: str = "vgg-small") -> tuple[str, str]:
    """The loop IR right after convert-snn-to-loops, and after `passes` ran on it."""
    ctx = make_context()
    module = import_to_snn(model(name)[0])
    for p in PassPipeline.parse_spec(get_all_passes(), "quantise,convert-snn-to-loops").passes:
        p.apply(ctx, module)
    before = print_ir(module, elide=True)
    for p in PassPipeline.parse_spec(get_all_passes(), passes).passes:
        p.apply(ctx, module)
        module.verify()
    return before, print_ir(module, elide=True)


@pytest.mark.parametrize("passes, changes", [
    ("loop-reorder{dataflow=ip-seq}", ["tile.parallel"]),  # t runs one timestep per visit
    ("loop-reorder{dataflow=gust}", ["tile.syn "]),  # the reduction split into k-chunk synapses
    ("time-batch{timesteps=1}", ['tile.dim = "tb"', ".state"]),  # t strip-mined, state through DRAM
    ("layer-fuse", ['tile.dim = "band"', "ring:"]),  # row bands, maps in SRAM rings
    ("spike-pack", ["spike_bitmask", "slice="]),  # spike maps as channel-sliced fibers
])
def test_each_scheduling_pass_rewrites_loops_or_buffers(passes, changes):
    """On vgg-small, each optimisation changes loops or buffers in the IR, not only an attribute."""
    before, after = _loop_ir_after(passes)
    assert before != after
    for fragment in changes:
        assert before.count(fragment) != after.count(fragment), fragment


def test_snn_opt_output_parses_back(tmp_path, capsys):
    source = tmp_path / "m.mlir"
    source.write_text(compile_model(model("vgg-small")[0]).snn_ir)
    assert snn_opt_main([str(source), "-p", LOWERED]) == 0
    first = capsys.readouterr().out
    again = tmp_path / "again.mlir"
    again.write_text(first)
    assert snn_opt_main([str(again)]) == 0
    assert capsys.readouterr().out == first


def test_print_ir_after_every_pass():
    stream = io.StringIO()
    result = compile_model(model("mlp")[0], CompileOptions(passes="loop-reorder,time-batch{timesteps=2},layer-fuse",
                                                           print_ir_after_all=True), ir_stream=stream)
    for name in ("loop-reorder", "time-batch", "layer-fuse", "tile-sizes", "convert-loops-to-accel"):
        assert f"IR after {name}" in stream.getvalue()
    assert result.steps[:6] == ["import-onnx", "quantise", "convert-snn-to-loops", "loop-reorder", "time-batch",
                                "layer-fuse"]


def test_compile_announces_each_step_before_it_runs():
    """on_step (the CLI's progress display) hears every step, in order, before it runs."""
    started = []
    result = compile_model(model("mlp")[0], CompileOptions(passes="loop-reorder,time-batch{timesteps=2}"),
                           on_step=started.append)
    assert started == ["import", *result.steps[1:]]
    assert started[:5] == ["import", "quantise", "convert-snn-to-loops", "loop-reorder", "time-batch"]
    assert started[-1] == "encode"


def test_bad_option_is_a_one_line_error():
    from snnc.backend.errors import SnncError

    with pytest.raises(SnncError, match="time-batch"):
        compile_model(model("mlp")[0], CompileOptions(passes="time-batch{timesteps=0.5}"))


def test_compile_times_every_step_and_its_verification():
    """CompileResult.step_seconds (bench/compile_steps.py prints it): one entry per step that
    ran, a repeated pass summed, each (work, verification) in CPU seconds."""
    result = compile_model(model("vgg-small")[0], CompileOptions(passes="loop-reorder{dataflow=ip-seq},"
                                                                      "loop-reorder{dataflow=ftp}"))
    assert list(result.step_seconds) == list(dict.fromkeys(result.steps))
    assert result.steps.count("loop-reorder") == 2
    assert all(work >= 0 and check >= 0 for work, check in result.step_seconds.values())
    assert result.step_seconds["encode"][1] == 0.0  # nothing is verified after the encoder
