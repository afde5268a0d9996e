"""snnc sweep: the sweep file's strictness, the grid on a LocalCluster and on a real
`dask scheduler` + two `dask worker` processes, the cache and resuming, failing points,
and the peak-SRAM measure."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from xdsl.dialects.builtin import ModuleOp

from snnc.compiler.cli import main
from snnc.compiler.sweep_point import evaluate_point, npz_bytes, peak_sram_bytes, snnc_version
from snnc.dialects import accel

GRID = """
models = ["mlp"]
pipelines = ["default", "explore"]
[grid]
"compute.num_pes" = [8, 16]
"sram.size_bytes" = [1024, 262144]
"""


def _sweep(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("snnc: error: ") and "\n" not in err, err
    return err


# ---------------------------------------------------------------------------- the sweep file


BAD_SWEEPS = [
    ('models = ["mlp"]\nmodel = ["vgg-small"]\n', "unknown key 'model'"),
    ('models = ["mlp"]\n[grid]\n', "grid: empty"),
    ('models = ["mlp"]\n[grid]\n"compute.num_pes" = []\n', 'grid."compute.num_pes": empty'),
    ('models = []\n', "models: empty"),
    ('pipelines = ["default"]\n', "models: missing"),
    ('models = "mlp"\n', "models: expected an array of strings"),
    ('models = ["mlp", "mlp"]\n', "models: 'mlp' is listed twice"),
    ('models = ["no-such-model"]\n', "models[0] 'no-such-model': neither a zoo model"),
    ('models = ["mlp"]\npipelines = []\n', "pipelines: empty"),
    ('models = ["mlp"]\npipelines = ["no-such-pass"]\n', "pipelines[0]"),
    ('models = ["mlp"]\nhw = "no-such-preset"\n', "hw: unknown hardware preset 'no-such-preset'"),
    ('models = ["mlp"]\nhw = 3\n', "hw: expected a preset name"),
    ('models = ["mlp"]\n[grid]\n"num_pes" = [8]\n', 'grid."num_pes": expected a dotted hw key'),
    ('models = ["mlp"]\n[grid]\n"cpu.num_pes" = [8]\n', 'grid."cpu.num_pes": expected a dotted hw key'),
    ('models = ["mlp"]\n[grid]\n"compute.num_pe" = [8]\n', "compute.num_pe: unknown key"),
    ('models = ["mlp"]\n[grid]\n"compute.num_pes" = [8, 0]\n', "compute.num_pes = 0 is out of range"),
    ('models = ["mlp"]\n[grid]\n"compute.num_pes" = [8, 8]\n', 'grid."compute.num_pes": 8 is listed twice'),
    ('models = ["mlp"]\n[grid]\n"compute.num_pes" = ["8"]\n', "compute.num_pes: expected int"),
    ('models = ["mlp"]\n[grid]\n"tppe.scheduler" = ["fastest"]\n', "tppe.scheduler: expected one of"),
    ('models = ["mlp"]\n[grid]\n"compute.num_pes" = 8\n', 'grid."compute.num_pes": expected an array'),
    ('models = ["mlp"]\n[inputs]\n"m.onnx" = "in.npz"\n', 'inputs."m.onnx": not one of the models'),
    ('models = ["mlp"]\n[inputs]\n"mlp" = "in.npz"\n', 'inputs."mlp": a zoo model brings its own input'),
    ('models = ["m.onnx"]\n', "models[0] 'm.onnx': neither a zoo model"),
    ('models = ["mlp"\n', "not valid TOML"),
]


@pytest.mark.parametrize("text, message", BAD_SWEEPS, ids=[m for _, m in BAD_SWEEPS])
def test_a_bad_sweep_file_is_one_line_naming_the_key(tmp_path, capsys, text, message):
    out = tmp_path / "r.csv"
    assert main(["sweep", str(_sweep(tmp_path, text)), "--out", str(out)]) == 1
    err = _one_line_error(capsys)
    assert message in err and "sweep.toml" in err, err
    assert not out.exists() and not (tmp_path / ".snnc-cache").exists()


def test_an_onnx_model_needs_an_input_file(tmp_path, capsys):
    from snnc.compiler.zoo import build

    model, inputs = build("mlp")
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    path = _sweep(tmp_path, 'models = ["m.onnx"]\n')
    assert main(["sweep", str(path)]) == 1
    err = _one_line_error(capsys)
    assert "models[0] 'm.onnx': input file" in err and "put m.npz beside it" in err
    (tmp_path / "in.npz").write_bytes(npz_bytes(inputs))
    path = _sweep(tmp_path, 'models = ["m.onnx"]\n[inputs]\n"m.onnx" = "in.npz"\n')
    from snnc.compiler.sweep import grid_points, load_sweep

    (point,) = grid_points(load_sweep(path))
    assert point.model.path == tmp_path / "m.onnx" and point.model.input_path == tmp_path / "in.npz"


def test_command_line_mistakes_fail_before_any_work(tmp_path, capsys):
    path = _sweep(tmp_path, GRID)
    assert main(["sweep", str(path), "--workers", "0"]) == 1
    assert "--workers 0" in _one_line_error(capsys)
    assert main(["sweep", str(path), "--out", str(tmp_path / "no" / "r.csv")]) == 1
    assert "--out" in _one_line_error(capsys)
    assert main(["sweep", str(path), "--plot", str(tmp_path / "p.nope")]) == 1
    assert "--plot" in _one_line_error(capsys)
    assert not (tmp_path / ".snnc-cache").exists()


def test_the_grid_is_models_by_hw_values_by_pipelines(tmp_path):
    from snnc.compiler.sweep import grid_points, load_sweep

    spec = load_sweep(_sweep(tmp_path, GRID.replace('"mlp"', '"mlp", "vgg-small"')))
    points = grid_points(spec)
    assert spec.grid_keys == ("compute.num_pes", "sram.size_bytes")
    assert len(points) == 2 * 2 * 2 * 2
    assert [(p.model.label, p.values, p.pipeline) for p in points[:3]] == [
        ("mlp", (8, 1024), "default"), ("mlp", (8, 1024), "explore"), ("mlp", (8, 262144), "default")]
    assert points[2].hw.compute.num_pes == 8 and points[2].hw.sram.size_bytes == 262144
    assert points[2].hw.dram == points[0].hw.dram  # the rest is the base preset's


# ---------------------------------------------------------------------------- one point


def test_a_point_measures_what_compile_and_simulate_report(tmp_path):
    from snnc.passes.encode import find_program
    from snnc.backend.hwconfig import HwConfig
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.compiler.zoo import build
    from snnc.runtime import simulate

    model, inputs = build("mlp")
    hw = HwConfig.from_toml("[compute]\nnum_pes = 8\n")
    row = evaluate_point(model.SerializeToString(), npz_bytes(inputs), hw.to_toml(), "spike-pack", snnc_version())
    assert row["error"] is None and row["cacheable"]
    (tmp_path / "hw.toml").write_text(hw.to_toml())
    result = compile_model(model, CompileOptions(passes="spike-pack", hw=str(tmp_path / "hw.toml")))
    total = simulate(result.image, inputs).report["total"]
    assert (row["cycles"], row["dram_bytes"]) == (total["cycles"], total["dram_bytes"])
    assert row["energy_pj"] == pytest.approx(total["energy_pj"])
    assert 0 < row["sram_bytes"] == peak_sram_bytes(find_program(result.accel_module))
    assert row["compile_s"] > 0 and row["simulate_s"] > 0
    default = evaluate_point(model.SerializeToString(), npz_bytes(inputs), HwConfig().to_toml(), "spike-pack",
                             snnc_version())
    assert default["cycles"] < row["cycles"]  # 16 PEs, not 8: the point's config is the one compiled


def test_a_failing_point_is_a_row_with_its_one_line_error():
    row = evaluate_point(b"not onnx", npz_bytes({}), "", "default", snnc_version())
    assert row["error"] and "\n" not in row["error"] and row["cycles"] is None
    assert row["cacheable"]  # bad input fails again: no need to retry it
    row = evaluate_point(b"", npz_bytes({}), "", "explore", snnc_version())  # the search fails like a compile
    assert row["error"] and "\n" not in row["error"] and "internal error" not in row["error"] and row["cacheable"]
    row = evaluate_point(b"", b"", "", "default", "0.0.0+other")
    assert "the worker runs snnc" in row["error"] and not row["cacheable"]


def test_peak_sram_counts_live_values_not_addresses():
    def load(addr, size):
        return accel.DmaLoadOp.create_with(dram_addr=0, sram_addr=addr, row_bytes=size, rows=1,
                                           dram_stride=0, sram_stride=0)

    def store(addr, size):
        return accel.DmaStoreOp.create_with(dram_addr=0x800, sram_addr=addr, row_bytes=size, rows=1,
                                            dram_stride=0, sram_stride=0)

    def peak(*ops):
        module = ModuleOp([accel.ProgramOp.create_with(list(ops), model_name="t", hw_toml="", dram_size=4096,
                                                       sram_size=1 << 16, timesteps=4)])
        return peak_sram_bytes(module.ops.first)

    # A [0,100) and B [0x8000,+200) live together until A is stored; then A' (50) replaces A.
    assert peak(load(0, 100), load(0x8000, 200), store(0, 100), load(0, 50), store(0x8000, 200),
                store(0, 50)) == 300
    # The same buffers, B loaded only after A was stored: never more than B and A' at once.
    assert peak(load(0, 100), store(0, 100), load(0x8000, 200), load(0, 50), store(0x8000, 200),
                store(0, 50)) == 250
    assert peak(load(0, 100), load(100, 100)) == 100  # never read: live at its write only
    assert peak() == 0


def test_peak_sram_of_a_compiled_model_is_within_the_sram():
    from passes_util import run

    from snnc.passes.encode import find_program

    for hw in (None, "small-sram"):
        result, _ = run("vgg-small", hw=hw)
        program = find_program(result.accel_module)
        peak = peak_sram_bytes(program)
        biggest = max(sum(o.size for o in accel.sram_operands(op, {l.symbol: l for l in program.layers()}.get(
            op.layer_symbol) if op.layer_symbol else None)) for op in program.instructions())
        assert biggest <= peak <= program.sram_size.data


# ---------------------------------------------------------------------------- on a LocalCluster


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The GRID swept once on a LocalCluster of 2 workers: (directory, exit code, stderr)."""
    tmp = tmp_path_factory.mktemp("sweep")
    path = _sweep(tmp, GRID)
    proc = subprocess.run([sys.executable, "-m", "snnc.compiler.cli", "sweep", str(path), "--workers", "2",
                           "--out", str(tmp / "r.csv"), "--plot", str(tmp / "p.png")],
                          capture_output=True, text=True, timeout=600)
    return tmp, proc


def test_a_sweep_on_a_local_cluster(local_sweep):
    tmp, proc = local_sweep
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    rows = _rows(tmp / "r.csv")
    assert list(rows[0]) == ["model", "compute.num_pes", "sram.size_bytes", "pipeline", "cycles", "dram_bytes",
                             "sram_bytes", "energy_pj", "compile_s", "simulate_s", "error"]
    assert [(r["compute.num_pes"], r["sram.size_bytes"], r["pipeline"]) for r in rows] == [
        (pes, sram, pipeline) for pes in ("8", "16") for sram in ("1024", "262144")
        for pipeline in ("default", "explore")]
    done = [r for r in rows if not r["error"]]
    assert [(r["compute.num_pes"], r["sram.size_bytes"], r["pipeline"]) for r in done] == [
        ("8", "262144", "default"), ("8", "262144", "explore"), ("16", "262144", "default"),
        ("16", "262144", "explore")]
    assert int(done[0]["cycles"]) > int(done[2]["cycles"]) > 0  # 8 PEs take longer than 16
    assert done[0]["dram_bytes"] == done[2]["dram_bytes"]
    for r in done[1::2]:  # the searched schedule moves no more DRAM bytes than the default
        assert 0 < int(r["dram_bytes"]) <= int(done[0]["dram_bytes"])
    for r in rows:
        if r["sram.size_bytes"] == "1024":  # a real compile failure, one line (the search: no schedule fits)
            assert ("under no schedule" if r["pipeline"] == "explore" else "does not fit") in r["error"]
            assert r["cycles"] == ""
    assert "8 points: 0 from the cache, 8 run on 2 workers" in proc.stderr
    assert "4 failed" in proc.stderr
    assert (tmp / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the zoo model is built once per snnc version, kept under its full version
    assert sorted(p.name for p in (tmp / ".snnc-cache" / "models").iterdir()) == [
        f"mlp-{snnc_version()}.npz", f"mlp-{snnc_version()}.onnx"]


def test_a_rerun_takes_every_point_from_the_cache_and_resumes_the_rest(local_sweep):
    tmp, proc = local_sweep
    assert proc.returncode == 0, proc.stderr
    path, first = tmp / "sweep.toml", _rows(tmp / "r.csv")
    assert main(["sweep", str(path), "--out", str(tmp / "again.csv")]) == 0
    assert _rows(tmp / "again.csv") == first  # no cluster needed: the same rows, timings included
    # An interrupted sweep lost its four successful points: only those run again.
    entries = sorted((tmp / ".snnc-cache" / "points").glob("*.json"))
    assert len(entries) == 8
    lost = [e for e in entries if json.loads(e.read_text())["error"] is None]
    for entry in lost:
        entry.unlink()
    resumed = subprocess.run([sys.executable, "-m", "snnc.compiler.cli", "sweep", str(path), "--workers", "1",
                              "--out", str(tmp / "resumed.csv")], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "4 from the cache, 4 run on 1 worker " in resumed.stderr
    strip = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in _rows(tmp / "resumed.csv")]
    assert strip == [{k: v for k, v in r.items() if not k.endswith("_s")} for r in first]


def test_an_unreachable_scheduler_is_one_line_and_keeps_the_finished_points(local_sweep, capsys):
    tmp, proc = local_sweep
    assert proc.returncode == 0, proc.stderr
    path = _sweep(tmp, GRID.replace('"compute.num_pes" = [8, 16]', '"compute.num_pes" = [8, 16, 32]'),
                  "more.toml")
    out = tmp / "partial.csv"
    start = time.perf_counter()
    assert main(["sweep", str(path), "--scheduler", f"tcp://127.0.0.1:{_closed_port()}", "--out", str(out)]) == 1
    assert time.perf_counter() - start < 60  # a short connect timeout, not the default of minutes
    assert "--scheduler tcp://127.0.0.1:" in _one_line_error(capsys)
    rows = _rows(out)
    assert len(rows) == 8 and {r["compute.num_pes"] for r in rows} == {"8", "16"}  # the cached ones


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- on a Dask cluster


def _dask_command() -> str:
    beside = Path(sys.executable).with_name("dask")
    found = str(beside) if beside.exists() else shutil.which("dask")
    assert found, "the dask command (from distributed) is not installed"
    return found


def test_a_sweep_through_a_dask_scheduler_and_two_dask_workers(tmp_path):
    dask = _dask_command()
    scheduler_file = tmp_path / "scheduler.json"
    processes = []

    def start(*argv):
        processes.append(subprocess.Popen([dask, *argv], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))

    try:
        # port 0: the scheduler picks a free one and writes it to the scheduler file
        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--idle-timeout", "300s",
              "--scheduler-file", str(scheduler_file))
        deadline = time.monotonic() + 120
        while not scheduler_file.exists():
            assert processes[0].poll() is None and time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.2)
        time.sleep(0.2)  # written whole
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for _ in range(2):
            start("worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                  "--death-timeout", "60")
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=120)
        path = _sweep(tmp_path, GRID.replace("[1024, 262144]", "[262144]").replace('"explore"', '"spike-pack"'))
        out = tmp_path / "r.csv"
        proc = subprocess.run([sys.executable, "-m", "snnc.compiler.cli", "sweep", str(path), "--scheduler",
                               address, "--out", str(out)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        assert "4 points: 0 from the cache, 4 run on 2 workers" in proc.stderr
        rows = _rows(out)
        assert [r["error"] for r in rows] == [""] * 4
        assert all(int(r["cycles"]) > 0 for r in rows)
        for r in processes:
            assert r.poll() is None  # the cluster outlives the sweep: it is the user's
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


# ---------------------------------------------------------------------------- bench/sweep.py


def test_the_sweep_benchmark_plumbing(tmp_path):
    from passes_util import bench_module

    bench = bench_module("sweep")
    assert len(bench.grid_points()) == 24
    model = tmp_path / "v.onnx"
    model.write_bytes(b"")
    (tmp_path / "v.npz").write_bytes(npz_bytes({}))
    from snnc.compiler.sweep import grid_points, load_sweep

    points = grid_points(load_sweep(bench.write_sweep(model, tmp_path)))
    assert [p.values for p in points] == [tuple(p.values()) for p in bench.grid_points()]
    same = {"cycles": 10, "dram_bytes": 5, "energy_pj": 1.5}
    assert bench.agreement([same, same], [same, {**same, "cycles": 11}]) == 1

    def clock(wall, cpu):
        c = bench.Clock()
        c.wall, c.cpu = wall, cpu
        return c

    text = bench.render("m", 2, 24, clock(60.0, 50.0), clock(30.0, 40.0), 24, {"before": "1.00"})
    assert "| serial `snnc compile` + `snnc run` processes | 60.0 | 24.0 | 50.0 | 28.8 | 0.83 |" in text
    assert "2.00x (CPU time: 1.25x), 24/24 points agree | MET |" in text
    assert "MISSED" in bench.render("m", 2, 24, clock(60.0, 50.0), clock(40.0, 40.0), 24, {})
    assert "MISSED" in bench.render("m", 2, 24, clock(60.0, 50.0), clock(30.0, 40.0), 23, {})
