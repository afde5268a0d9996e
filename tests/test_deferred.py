"""compiler/deferred.py: a compile never runs asyncio's package or parses an assembly format
it does not print, and both still work in full when something uses them."""

from __future__ import annotations

import json
import subprocess
import sys


def _run(code: str) -> list:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def test_asyncio_is_deferred_until_used(tmp_path):
    from snnc.compiler.fileio import atomic_write_bytes
    from snnc.compiler.zoo import build

    model, _ = build("mlp")
    path = tmp_path / "mlp.onnx"
    atomic_write_bytes(path, model.SerializeToString())
    state = _run(
        "import sys, json\n"
        "from snnc.compiler.cli import main\n"
        f"code = main(['compile', {str(path)!r}, '-o', {str(tmp_path / 'p.bin')!r}])\n"
        "state = [code, type(sys.modules['asyncio']).__name__, 'asyncio.base_events' in sys.modules]\n"
        "import asyncio\n"
        "async def three(): return 3\n"
        "state.append(asyncio.run(three()))\n"
        "from asyncio import events\n"
        "state += [type(sys.modules['asyncio']).__name__, asyncio.coroutines is sys.modules['asyncio.coroutines']]\n"
        "print(json.dumps(state))\n"
    )
    assert state == [0, "_DeferredModule", False, 3, "module", True]


def test_a_deferred_assembly_format_prints_as_an_eager_one():
    code = (
        "import sys, json\n"
        "if sys.argv[1:] == ['defer']:\n"
        "    from snnc.compiler.deferred import defer_assembly_formats\n"
        "    defer_assembly_formats()\n"
        "from xdsl.dialects import arith, builtin\n"
        "from xdsl.irdl.declarative_assembly_format import FormatProgram\n"
        "a = arith.ConstantOp(builtin.IntegerAttr(3, builtin.i32))\n"
        "add = arith.AddiOp(a, a)\n"
        "text = str(builtin.ModuleOp([a, add]))\n"
        "print(json.dumps([text, getattr(FormatProgram, '_formats_deferred', False)]))\n"
    )
    eager = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    deferred = subprocess.run([sys.executable, "-c", code, "defer"], check=True, capture_output=True, text=True).stdout
    eager, deferred = json.loads(eager), json.loads(deferred)
    assert "arith.addi %" in eager[0] and deferred[0] == eager[0] and (eager[1], deferred[1]) == (False, True)
