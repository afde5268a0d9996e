"""snnc.runtime: load, validate and simulate a prog.bin without the compiler.

Public API:
  load_program(path_or_bytes) -> ProgramImage      (validating; BinaryFormatError)
  simulate(image, inputs, *, functional=False, progress=None) -> SimResult
      SimResult.outputs: {ONNX output name: float32 array of onnx_shape}
      SimResult.report:  dict (see snnc.runtime.report)
  write_report_json(report, path)                   (atomic)
Imports only numpy, rich and scipy (lazily: the progress bar, sparse SYN products),
the standard library and snnc.backend.{isa,binformat,hwconfig,errors}; a test checks this.
"""

from __future__ import annotations

from pathlib import Path

from snnc.backend.binformat import ProgramImage, load_program_file, read_program

# The simulator and the report load on first use, so that importing a light submodule
# (runtime.files, for the compiler's atomic writes) does not pay for them.
_LAZY = {"simulate": "snnc.runtime.simulator", "SimResult": "snnc.runtime.simulator",
         "write_report_json": "snnc.runtime.report"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_program(path_or_bytes: str | Path | bytes | bytearray | memoryview) -> ProgramImage:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return read_program(bytes(path_or_bytes))
    return load_program_file(path_or_bytes)


__all__ = ["ProgramImage", "SimResult", "load_program", "simulate", "write_report_json"]
