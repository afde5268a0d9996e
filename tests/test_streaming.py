"""The streaming schedule (`--schedule elastic`, issue 16 item 1): time-batch{timesteps=1} then
time-interleave, one tb loop around every kernel. Its outputs are the FTP program's, its
first output comes early, and early exit halts it sooner."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from snnc.backend.errors import CompileError, SnncError
from snnc.compiler.cli import main
from snnc.compiler.pipeline import DEFAULT_PIPELINE, SCHEDULES, CompileOptions, compile_model, print_ir, \
    schedule_passes
from snnc.compiler.zoo import build, build_dataset
from snnc.runtime import simulate

ELASTIC = SCHEDULES["elastic"]


@pytest.fixture(scope="module")
def runs():
    """model -> schedule -> (SimResult, image), on the zoo input (digits: its first test image)."""
    out = {}
    for name in ("mlp", "vgg-small", "digits"):
        model, inputs = build(name)
        out[name] = {}
        for schedule in ("ftp", "elastic"):
            image = compile_model(model, CompileOptions(passes=SCHEDULES[schedule])).image
            out[name][schedule] = (simulate(image, inputs), image)
    return out


def test_the_named_schedules():
    assert SCHEDULES["ftp"] == DEFAULT_PIPELINE
    assert "time-interleave" in ELASTIC and "time-batch{timesteps=1}" in ELASTIC
    assert schedule_passes(None, "x") == "x" and schedule_passes("elastic") == ELASTIC
    with pytest.raises(SnncError, match="give one of them"):
        schedule_passes("elastic", "compress-weights")
    with pytest.raises(SnncError, match="unknown schedule"):
        schedule_passes("fast")


@pytest.mark.parametrize("model", ["mlp", "vgg-small", "digits"])
def test_outputs_identical_to_ftp(runs, model):
    ftp, elastic = runs[model]["ftp"][0], runs[model]["elastic"][0]
    assert ftp.outputs.keys() == elastic.outputs.keys()
    for name in ftp.outputs:
        np.testing.assert_array_equal(elastic.outputs[name], ftp.outputs[name])


@pytest.mark.parametrize("model", ["mlp", "vgg-small", "digits"])
def test_first_output_well_before_ftp(runs, model):
    ftp, elastic = runs[model]["ftp"][0].report, runs[model]["elastic"][0].report
    assert ftp["total"]["first_output_cycle"] >= 0.9 * ftp["total"]["cycles"]  # FTP: outputs come at the end
    assert elastic["total"]["first_output_cycle"] < 0.75 * ftp["total"]["first_output_cycle"]
    # timestep-major: timestep 0 is out after about 1/T of the streaming run
    timesteps = len(elastic["timesteps"])
    assert elastic["total"]["first_output_cycle"] < 2.5 * elastic["total"]["cycles"] / timesteps


@pytest.mark.parametrize("model", ["mlp", "vgg-small", "digits"])
def test_ready_cycles_non_decreasing_within_the_run(runs, model):
    report = runs[model]["elastic"][0].report
    ready = [step["ready_cycle"] for step in report["timesteps"]]
    assert ready == sorted(ready) and len(set(ready)) == len(ready)  # one timestep after another
    assert ready[-1] <= report["total"]["cycles"]
    assert ready[0] == report["total"]["first_output_cycle"]


def test_weights_reloaded_per_timestep(runs):
    """The trade-off: the streaming program moves more DRAM bytes than FTP (weights every timestep)."""
    for model in ("mlp", "vgg-small", "digits"):
        assert runs[model]["elastic"][0].report["total"]["dram_bytes"] > \
            runs[model]["ftp"][0].report["total"]["dram_bytes"]


def test_the_rewrite_in_the_ir(capsys, tmp_path):
    """--print-ir-after-all shows the pass's rewrite: after time-interleave @main holds one tb loop
    around the kernels, and no kernel has a tb loop of its own."""
    model, _ = build("mlp")
    stream = io.StringIO()
    compile_model(model, CompileOptions(passes=ELASTIC, print_ir_after_all=True), ir_stream=stream)
    text = stream.getvalue()
    before = text.split("// -----// IR after time-interleave //----- //")[0].split("// -----// IR after")[-1]
    after = text.split("// -----// IR after time-interleave //----- //")[1].split("// -----// IR after")[0]
    main_before = before[before.index("func.func @main"):]
    main_after = after[after.index("func.func @main"):]
    assert main_before.lstrip().splitlines()[1:] and "tile.kernel" in main_before
    # before: each kernel opens with its own tb loop; after: one tb loop opens before the first kernel
    assert main_before.count('{tile.dim = "tb"}') == 4
    assert main_after.count('{tile.dim = "tb"}') == 1
    loop_at = main_after.index("scf.for %tb")
    assert loop_at < main_after.index("tile.kernel")
    closing = main_after.index('{tile.dim = "tb"}')
    assert main_after.count("tile.kernel", loop_at, closing) == 4  # every kernel inside it


def test_cli(tmp_path, capsys):
    model, inputs = build("mlp")
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert main([str(path), "-o", str(tmp_path / "p.bin"), "--schedule", "elastic"]) == 0
    assert main([str(path), "-o", str(tmp_path / "q.bin"), "--passes", ELASTIC]) == 0
    assert (tmp_path / "p.bin").read_bytes() == (tmp_path / "q.bin").read_bytes()
    capsys.readouterr()
    assert main([str(path), "-o", str(tmp_path / "r.bin"), "--schedule", "elastic", "--passes", "dma-prefetch"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--schedule" in err and "--passes" in err
    assert not (tmp_path / "r.bin").exists()
    assert main(["passes"]) == 0
    listing = capsys.readouterr().out
    assert f"elastic                  {ELASTIC}" in listing and f"ftp                      {DEFAULT_PIPELINE}" in listing


def test_misuse_is_a_clean_error():
    model, _ = build("mlp")
    with pytest.raises(CompileError, match="not time-batched"):
        compile_model(model, CompileOptions(passes="time-batch{timesteps=1 layers=fc1},time-interleave"))
    with pytest.raises(CompileError, match="batched in time differently"):
        compile_model(model, CompileOptions(
            passes="time-batch{timesteps=1 layers=fc1},time-batch{timesteps=2 layers=fc2},"
                   "time-batch{timesteps=2 layers=residual},time-batch{timesteps=2 layers=fc3},time-interleave"))
    with pytest.raises(CompileError, match="run it once"):
        compile_model(model, CompileOptions(passes="time-batch{timesteps=1},time-interleave,time-interleave"))
    # nothing to interleave (no kernel batched): the module is left as it is
    plain = compile_model(model, CompileOptions(passes="compress-weights,time-interleave,dma-prefetch")).binary
    assert plain == compile_model(model, CompileOptions(passes="compress-weights,dma-prefetch")).binary


def test_early_exit_halts_sooner_than_ftp():
    """The same threshold on the same sample: both programs decide at the same timestep (same
    outputs), but the streaming one gets there in fewer cycles."""
    model, _ = build("digits")
    data = build_dataset("digits")
    images = {name: compile_model(model, CompileOptions(passes=SCHEDULES[name], exit_checks="")).image
              for name in ("ftp", "elastic")}
    compared = 0
    for i in range(8):
        sample = {"image": data["image"][:, i:i + 1]}
        exits = {name: simulate(image, sample, exit_confidence=0.5).report["exit"] for name, image in images.items()}
        ftp, elastic = exits["ftp"], exits["elastic"]
        assert ftp["timestep"] == elastic["timestep"]
        if ftp["timestep"] is not None and ftp["timestep"] < 15:
            compared += 1
            assert elastic["cycles"] < ftp["cycles"]
    assert compared


@pytest.mark.parametrize("passes", [
    "time-batch{timesteps=2},time-interleave",  # two timesteps per batch
    "compress-weights,time-batch{timesteps=1},layer-fuse,time-interleave,dma-prefetch",  # fused groups interleaved
    "loop-reorder{dataflow=ip-seq},time-batch{timesteps=1},time-interleave",
])
def test_variants_keep_the_values(passes):
    """Other batches, fused groups and dataflows interleave too, on an SRAM small enough that
    layers take several channel and row tiles: the outputs stay the default program's."""
    model, inputs = build("vgg-small")
    reference = simulate(compile_model(model, CompileOptions(hw="small-sram")).image, inputs, functional=True)
    streamed = simulate(compile_model(model, CompileOptions(hw="small-sram", passes=passes)).image, inputs,
                        functional=True)
    for name, values in reference.outputs.items():
        np.testing.assert_array_equal(streamed.outputs[name], values)


def test_state_held_across_the_loop_where_it_fits():
    """digits' hidden layer state (128 neurons) fits in the SRAM no kernel uses: it is held in a
    buffer before the loop around the kernels, at the top of the SRAM, every kernel reserving it,
    and no state map goes to DRAM. On small-sram, vgg-small's conv layers' state does not fit
    (DRAM maps), its classifier's does."""
    model, _ = build("digits")
    text = print_ir(compile_model(model, CompileOptions(passes=ELASTIC)).loop_module)
    main_ir = text[text.index("func.func @main"):]
    held = re.search(r'%\S+ = tile.alloc "state:fc1" copies=1 offsets=\[(0x[0-9a-f]+)\] : '
                     r'memref<2x1x1x1x128xi32, "sram">', main_ir)
    assert held and main_ir.index(held.group(0)) < main_ir.index("scf.for %tb")
    assert int(held.group(1), 16) == 262144 - 1024  # loas: 256 KiB of SRAM, 2 x 128 x int32 at its top
    assert main_ir.count("tile.reserved = 1024") == 2  # fc1 and fc2
    assert '.state"' not in main_ir
    vgg, _ = build("vgg-small")
    small = print_ir(compile_model(vgg, CompileOptions(passes=ELASTIC, hw="small-sram")).loop_module)
    assert re.findall(r'"state:(\w+)"', small) == ["fc"]
    assert len(re.findall(r'tile.map "\w+.state" act_i32', small)) == 3
