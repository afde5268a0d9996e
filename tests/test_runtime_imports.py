"""snnc.runtime stands alone: importing it must not pull in the compiler side."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("xdsl", "onnx", "onnxruntime", "snnc.compiler", "snnc.dialects", "snnc.passes")


def test_runtime_does_not_import_the_compiler():
    code = (
        "import sys, json\n"
        "import snnc.runtime, snnc.runtime.simulator, snnc.backend.disasm\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    modules = json.loads(out)
    assert "snnc.runtime.simulator" in modules  # the probe really imported the runtime
    bad = [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, f"snnc.runtime imported {bad}"
