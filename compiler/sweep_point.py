"""One point of a sweep, as a Dask worker runs it: compile, simulate, measure.

CONTRACT:
  * `evaluate_point(model, inputs, hw_toml, pipeline, version) -> dict` compiles the
    ONNX `model` (bytes) for the hardware config `hw_toml` (canonical TOML text) with
    `pipeline`, simulates it on `inputs` (npz bytes) with the timing model and returns
    one result row: cycles, dram_bytes, sram_bytes, energy_pj, compile_s, simulate_s,
    error (None, or the one-line message of a failure) and `cacheable` (True unless
    the failure may not recur: an internal error, a worker of another snnc version).
    It never raises: a failing point is a row with an error, not a stopped sweep.
  * `pipeline` is "default" (the default pipeline), a `--passes` string, or the name
    of a schedule search in `SEARCHED_PIPELINES`: a function (model path, hw TOML path)
    -> `--passes` string that is compiled like any other.
  * `snnc_version()` identifies the code that computes a row: the package version plus
    a hash of every source and preset file of the snnc packages, so a cached row never
    outlives a change to the compiler or the simulator. A worker whose version differs
    from the client's (`version`) refuses the point.
  * `peak_sram_bytes(program)`: the SRAM the program needs, defined below.
Imports the compiler side; runs in worker processes, so nothing here prints.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from snnc.backend.errors import SnncError

SNNC_PACKAGES = ("snnc.compiler", "snnc.dialects", "snnc.passes", "snnc.backend", "snnc.runtime")
DEFAULT_PIPELINE_NAME = "default"


def _explore(model_path: Path, hw_path: Path) -> str:
    """`snnc explore`'s search (objective energy) on the point's model and hw config; it
    simulates on the input beside the model (`_measure` writes it there)."""
    from snnc.compiler.explore import search_pipeline

    return search_pipeline(model_path, str(hw_path))


# The hook for schedule searches (issue 17 section 1): a sweep pipeline with one of these
# names asks the function for the point's `--passes` string, then compiles and simulates
# it. Entries live here, in this table: the workers are other processes (other machines)
# that import this module, so an entry added at run time by the client would never reach them.
SEARCHED_PIPELINES: dict[str, Callable[[Path, Path], str]] = {"explore": _explore}


@functools.cache
def snnc_version() -> str:
    digest = hashlib.sha256()
    for package in SNNC_PACKAGES:
        root = Path(importlib.import_module(package).__file__).parent
        for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".toml") and p.is_file()):
            digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return f"{importlib.metadata.version('snnc')}+{digest.hexdigest()[:12]}"


def peak_sram_bytes(program) -> int:
    """The most SRAM bytes that hold a live value at once, in program order.

    A byte is live from an instruction that writes it (a DMA load, a compute result)
    to the last instruction that reads that value before the next write; a value
    never read is live at its write only. Ranges are the instructions' SRAM operands
    (`accel.sram_operands`; a strided DMA counts its hull). Unlike the highest address
    used, this does not depend on where the allocator placed the buffers (the lowering
    alternates between the two ends of the SRAM), and a prefetch that loads the next
    layer's data early raises it, as it should."""
    from snnc.dialects import accel

    layers = {layer.symbol: layer for layer in program.layers()}
    accesses = []  # (instruction index, addr, end, reads, writes)
    for index, op in enumerate(program.instructions()):
        layer = layers.get(op.layer_symbol) if op.layer_symbol else None
        for operand in accel.sram_operands(op, layer):
            if operand.size > 0:
                accesses.append((index, operand.addr, operand.end, operand.reads, operand.writes))
    if not accesses:
        return 0
    # Elementary segments between all operand boundaries: every operand covers whole segments.
    bounds = np.unique([b for _, addr, end, _, _ in accesses for b in (addr, end)])
    length = np.diff(bounds)
    written = np.full(len(length), -1)  # index of the instruction that wrote the live value
    last_read = np.full(len(length), -1)
    steps = accesses[-1][0] + 2
    delta = np.zeros(steps + 1, dtype=np.int64)  # live bytes: +length at a write, -length after the last read

    def retire(segs: slice, now: int) -> None:
        live = written[segs] >= 0
        if not live.any():
            return
        start = written[segs][live]
        # read at `now` by the instruction that overwrites it: live until the new value takes over
        end = np.maximum(np.where(last_read[segs][live] == now, now - 1, last_read[segs][live]), start)
        np.add.at(delta, start, length[segs][live])
        np.add.at(delta, end + 1, -length[segs][live])

    for index, addr, end, reads, writes in accesses:
        segs = slice(int(np.searchsorted(bounds, addr)), int(np.searchsorted(bounds, end)))
        if reads:
            last_read[segs] = index
        if writes:
            retire(segs, index)
            written[segs] = index
            last_read[segs] = -1
    retire(slice(0, len(length)), steps)
    return int(np.cumsum(delta).max())


def _resolve_pipeline(pipeline: str, model_path: Path, hw_path: Path) -> str | None:
    """The `--passes` string of a sweep pipeline name (None: the default pipeline)."""
    if pipeline == DEFAULT_PIPELINE_NAME:
        return None
    search = SEARCHED_PIPELINES.get(pipeline)
    return search(model_path, hw_path) if search is not None else pipeline


def _measure(model: bytes, inputs: bytes, hw_toml: str, pipeline: str) -> dict:
    # Imported before the clocks start: a worker's first point would otherwise count
    # seconds of imports as compile and simulation time.
    import snnc.compiler.frontend.onnx_import  # noqa: F401
    import snnc.passes.convert_loops_to_accel  # noqa: F401
    import snnc.passes.convert_snn_to_loops  # noqa: F401
    import snnc.passes.tile_sizes  # noqa: F401
    from snnc.passes.encode import find_program
    from snnc.compiler.fileio import load_npz
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.runtime.simulator import simulate

    with tempfile.TemporaryDirectory(prefix="snnc-sweep-") as tmp:
        # the input beside the model, same stem: where a search (`explore`) looks for it
        model_path, hw_path, input_path = Path(tmp, "model.onnx"), Path(tmp, "hw.toml"), Path(tmp, "model.npz")
        model_path.write_bytes(model)
        hw_path.write_text(hw_toml, encoding="utf-8")
        input_path.write_bytes(inputs)
        start = time.perf_counter()
        passes = _resolve_pipeline(pipeline, model_path, hw_path)
        result = compile_model(model_path, CompileOptions(hw=str(hw_path), passes=passes))
        compile_s = time.perf_counter() - start
        arrays = load_npz(input_path)
    sram = peak_sram_bytes(find_program(result.accel_module))
    start = time.perf_counter()
    total = simulate(result.image, arrays).report["total"]
    simulate_s = time.perf_counter() - start
    return {"cycles": int(total["cycles"]), "dram_bytes": int(total["dram_bytes"]), "sram_bytes": sram,
            "energy_pj": round(float(total["energy_pj"]), 3), "compile_s": round(compile_s, 4),
            "simulate_s": round(simulate_s, 4)}


def evaluate_point(model: bytes, inputs: bytes, hw_toml: str, pipeline: str, version: str) -> dict:
    row = {"cycles": None, "dram_bytes": None, "sram_bytes": None, "energy_pj": None,
           "compile_s": None, "simulate_s": None, "error": None, "cacheable": True}
    try:
        if snnc_version() != version:
            row.update(error=f"the worker runs snnc {snnc_version()}, the client {version}", cacheable=False)
            return row
        row.update(_measure(model, inputs, hw_toml, pipeline))
    except SnncError as exc:
        row["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except Exception as exc:  # a bug, or the machine (memory): recorded, not cached
        row.update(error=f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                   cacheable=False)
    return row


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
