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


def test_snnc_run_process_imports_no_compiler_machinery(tmp_path):
    """`snnc run` starts through the CLI (snnc.compiler.cli) but loads neither xDSL, ONNX nor the
    compiler's levels: its start-up is numpy, the runtime and the CLI's file helpers."""
    import numpy as np

    from progbuild import Prog
    from snnc.backend.binformat import write_program
    from snnc.backend.isa import Format

    p = Prog()
    p.tensor("x", False, (1, 1, 8), 0, Format.SPIKE_PLANES)
    p.tensor("y", True, (1, 1, 8), 64, Format.SPIKE_PLANES)
    p.load(0, 0, 1)
    p.store(64, 0, 1)
    (tmp_path / "p.bin").write_bytes(write_program(p.image()))
    np.savez(tmp_path / "x.npz", x=np.ones((1, 1, 8), np.float32))
    code = (
        "import sys, json\n"
        "from snnc.compiler.cli import main\n"
        f"code = main(['run', {str(tmp_path / 'p.bin')!r}, '--input', {str(tmp_path / 'x.npz')!r}, '--quiet'])\n"
        "print(json.dumps([code, sorted(sys.modules)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    code, modules = json.loads(out.splitlines()[-1])
    assert code == 0 and "snnc.runtime.simulator" in modules
    heavy = ("xdsl", "onnx", "onnxruntime", "snnc.dialects", "snnc.passes", "snnc.compiler.frontend",
             "snnc.compiler.pipeline")
    bad = [m for m in modules if any(m == f or m.startswith(f + ".") for f in heavy)]
    assert not bad, f"snnc run imported {bad}"
