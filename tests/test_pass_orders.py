"""Any two loop-level passes, in either order, compile or stop with a one-line error
(snnc's own SnncError): a pass that cannot run after another says so; it never fails
with an internal error. Pairs are where such failures hid (loop-reorder after
layer-fuse raised a ValueError from deep in the nest rewriting)."""

from __future__ import annotations

import itertools

import pytest

from snnc.backend.errors import SnncError
from snnc.compiler import zoo
from snnc.compiler.pipeline import CompileOptions, compile_model

LOOP_PASSES = [
    "compress-weights",
    "loop-reorder{dataflow=ip-seq}",
    "loop-reorder{dataflow=gust}",
    "loop-reorder{dataflow=op}",
    "time-batch{timesteps=1}",
    "time-interleave",
    "layer-fuse",
    "spike-pack",
    'tile-sizes{least_traffic="*"}',
]


@pytest.fixture(scope="module")
def model():
    return zoo.build("vgg-small")[0]


@pytest.mark.parametrize("first,second", list(itertools.product(LOOP_PASSES, repeat=2)))
def test_any_two_loop_passes_compile_or_give_a_one_line_error(model, first, second):
    try:
        result = compile_model(model, CompileOptions(passes=f"{first},{second}"))
    except SnncError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert result.binary
