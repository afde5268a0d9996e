"""CSV reports and `snnc report`: columns, totals, and the CLI round trip."""

from __future__ import annotations

import csv
import json

import pytest

from snnc.backend.isa import Dataflow
from snnc.compiler.cli import main
from snnc.runtime.report import COMPUTE_COLUMNS, ENERGY_COLUMNS, MEMORY_COLUMNS, csv_rows, write_csv_reports
from test_golden_timing import _run


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_csv_reports_columns_and_totals(tmp_path):
    report = _run(Dataflow.FTP).report
    paths = write_csv_reports(report, tmp_path / "out")
    assert sorted(p.name for p in paths) == ["COMPUTE_REPORT.csv", "ENERGY_REPORT.csv", "MEMORY_REPORT.csv"]
    compute = _read(tmp_path / "out" / "COMPUTE_REPORT.csv")
    assert compute[0] == COMPUTE_COLUMNS and compute[-1][0] == "total"
    layer = report["layers"][0]
    row = dict(zip(compute[0], compute[1]))
    assert int(row["cycles"]) == layer["cycles"] and int(row["bound_cycles"]) == layer["bound_cycles"]
    assert int(row["stall_dependency"]) == layer["stall_cycles"]["dependency"]
    assert float(row["pe_utilization"]) == pytest.approx(layer["pe_work"] / (16 * layer["cycles"]), rel=1e-5)
    memory = _read(tmp_path / "out" / "MEMORY_REPORT.csv")
    assert memory[0] == MEMORY_COLUMNS
    row = dict(zip(memory[0], memory[1]))
    # operand bytes add up to the totals
    assert sum(int(row[f"dram_{o}_bytes"]) for o in ("weights", "spikes", "outputs", "bitmasks", "neuron_state",
                                                      "psums")) == layer["dram_bytes"]
    energy = _read(tmp_path / "out" / "ENERGY_REPORT.csv")
    assert energy[0] == ENERGY_COLUMNS
    row = dict(zip(energy[0], energy[1]))
    parts = sum(float(v) for k, v in row.items() if k not in ("layer", "total_pj"))
    assert parts == pytest.approx(float(row["total_pj"]), rel=1e-6)


def test_baseline_psum_traffic_lands_in_the_memory_report():
    rows = csv_rows(_run(Dataflow.GUST).report)["MEMORY_REPORT.csv"]
    row = dict(zip(rows[0], rows[1]))
    assert row["sram_psums_bytes"] > csv_rows(_run(Dataflow.FTP).report)["MEMORY_REPORT.csv"][1][6]


def test_functional_report_has_no_csv():
    with pytest.raises(ValueError, match="functional"):
        csv_rows({"functional": True, "layers": [], "total": {}})


def test_cli_report_prints_tables_and_plots(tmp_path, capsys):
    report = _run(Dataflow.FTP).report
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    assert main(["report", str(path), "--csv", str(tmp_path / "csv")]) == 0
    out = capsys.readouterr().out  # tables are results: stdout
    assert "conv" in out and "compute" in out and "stall cycles" in out and "energy (" in out
    assert (tmp_path / "csv" / "COMPUTE_REPORT.csv").exists()
    pytest.importorskip("matplotlib")
    assert main(["report", str(path), "--plot", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.json")]) == 1
    assert "no such report file" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["report", str(bad)]) == 1
    assert "not a report JSON" in capsys.readouterr().err


def test_cli_run_writes_csv(tmp_path):
    import numpy as np

    from snnc.backend.binformat import write_program
    from test_golden_timing import conv_program, fixed_workload

    weights, x = fixed_workload()
    prog = tmp_path / "p.bin"
    prog.write_bytes(write_program(conv_program(Dataflow.FTP, weights).image()))
    np.savez(tmp_path / "in.npz", x=x)
    assert main(["run", str(prog), "--input", str(tmp_path / "in.npz"), "--csv", str(tmp_path / "csv"),
                 "--report", str(tmp_path / "r.json"), "--quiet"]) == 0
    rows = _read(tmp_path / "csv" / "COMPUTE_REPORT.csv")
    assert int(dict(zip(rows[0], rows[-1]))["cycles"]) == json.loads((tmp_path / "r.json").read_text())["total"]["cycles"]


def test_progress_bar_waits_a_second():
    from snnc.runtime import simulator

    bar, task = simulator._progress_bar(True, 100)
    bar.update(task, completed=1)  # well under a second: nothing shown
    assert bar._bar is None
    bar._start -= 2 * simulator.PROGRESS_AFTER_SECONDS
    bar.update(task, completed=2)
    assert bar._bar is not None
    bar.stop()
    assert simulator._progress_bar(False, 100) is None
