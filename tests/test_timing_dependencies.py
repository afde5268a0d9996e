"""runtime/program_timing.py: the SRAM hazards read from per-program dependencies
(`sram_dependencies`) time every instruction exactly as timing.Scoreboard's tables of pending
accesses do: the same report, cycle for cycle, on compiled programs with barriers, MOVEs,
compressed DMAs and every engine; and the dependencies themselves on hand-made steps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from snnc.backend.binformat import read_program, write_program
from snnc.backend.isa import Opcode
from snnc.runtime import program_timing, simulate


def _compiled(tmp_path, model_name: str, passes: str | None = None, hw: str | None = None):
    from snnc.compiler.fileio import atomic_write_bytes
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.compiler.zoo import build

    model, inputs = build(model_name)
    path = tmp_path / f"{model_name}.onnx"
    atomic_write_bytes(path, model.SerializeToString())
    return read_program(compile_model(path, CompileOptions(passes=passes, hw=hw)).binary), inputs


@pytest.mark.parametrize("model_name, passes, hw", [
    ("mlp", None, None),
    ("vgg-small", None, "small-sram"),
    ("vgg-small", "compress-weights,time-batch{timesteps=2},loop-reorder{dataflow=ftp},layer-fuse,dma-prefetch", None),
    ("vgg-small", "compress-weights,spike-pack,loop-reorder{dataflow=ftp},dma-prefetch", "loas-rounds"),
    ("vgg-small", "compress-weights,loop-reorder{dataflow=gust}", None),
])
def test_dependencies_time_as_the_scoreboard(tmp_path, monkeypatch, model_name, passes, hw):
    image, inputs = _compiled(tmp_path, model_name, passes, hw)
    fast = simulate(image, inputs)
    monkeypatch.setattr(program_timing, "sram_dependencies", lambda steps: None)  # every hazard on the board
    board = simulate(read_program(write_program(image)), inputs)  # a new image: not the prepared one
    assert fast.report == board.report
    for name, value in fast.outputs.items():
        assert np.array_equal(value, board.outputs[name])


def _step(opcode, reads=(), writes=()):
    return SimpleNamespace(opcode=opcode, reads=list(reads), writes=list(writes))


def test_dependencies_by_hand():
    steps = [
        _step(Opcode.DMA_LOAD, writes=[(0, 64)]),             # 0: load A
        _step(Opcode.DMA_LOAD, writes=[(64, 128)]),           # 1: load B
        _step(Opcode.SYN, reads=[(0, 64), (64, 128)], writes=[(256, 320)]),  # 2: RAW on 0 and 1 (class 2: 1)
        _step(Opcode.BARRIER),                                # 3: no engine
        _step(Opcode.LIF, reads=[(256, 320)], writes=[(400, 410)]),  # 4: RAW on 2
        _step(Opcode.MOVE, reads=[(400, 410)], writes=[(0, 32)]),    # 5: RAW on 4; WAR on 2, WAW on 0
        _step(Opcode.DMA_STORE, reads=[(40, 40)]),            # 6: an empty range inside (0, 64), not (0, 32)
        _step(Opcode.DMA_LOAD, writes=[(500, 500)]),          # 7: an empty write: checked, never recorded
        _step(Opcode.SYN, reads=[(499, 501)]),                # 8: nothing wrote 499..501
    ]
    assert program_timing.sram_dependencies(steps) == [(), (), (1,), (), (2,), (2, 4, 0), (0,), (), ()]
