"""exit.check end to end: the exit-checks pass, the instruction in the simulator, the binary
validator and the accel verifier, and `snnc run --exit-confidence`."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.utils.exceptions import VerifyException

from progbuild import Prog
from snnc.backend.binformat import decode_instructions, validate_image
from snnc.backend.errors import BinaryFormatError, CompileError, InputError
from snnc.backend.isa import Format, Opcode
from snnc.compiler.cli import main
from snnc.compiler.pipeline import CompileOptions, compile_model
from snnc.compiler.zoo import build, build_dataset
from snnc.dialects import accel
from snnc.runtime import simulate

FTP = CompileOptions(exit_checks="")
TIMESTEP_MAJOR_TAIL = CompileOptions(passes="compress-weights,time-batch{timesteps=1},dma-prefetch", exit_checks="")


@pytest.fixture(scope="module")
def digits():
    model, _ = build("digits")
    data = build_dataset("digits")
    return model, data


def sample(data, i: int) -> dict[str, np.ndarray]:
    return {"image": data["image"][:, i:i + 1]}


@pytest.fixture(scope="module")
def programs(digits):
    model, _ = digits
    return {name: compile_model(model, options).image
            for name, options in (("plain", CompileOptions()), ("ftp", FTP), ("tail", TIMESTEP_MAJOR_TAIL))}


def checks_and_stores(image):
    """[(index, opcode, fields)] of the stores and exit checks, in program order."""
    return [(i, spec.opcode, f) for i, (spec, f) in enumerate(decode_instructions(image))
            if spec.opcode in (Opcode.EXIT_CHECK, Opcode.DMA_STORE)]


def logits_steps(image, fields) -> set[int]:
    """Timesteps of the `logits` output ([16, 1, 10] int32 = 64 bytes per step) a store writes."""
    out = next(d for d in image.io if d.name == "logits")
    rows = [fields["dram_addr"] + r * fields["dram_stride"] for r in range(fields["rows"])]
    return {(a - out.dram_addr) // 64 for a in rows if out.dram_addr <= a < out.dram_addr + 16 * 64}


@pytest.mark.parametrize("name", ["ftp", "tail"])
def test_one_check_per_timestep_right_after_its_store(programs, name):
    image = programs[name]
    io = [d.name for d in image.io].index("logits")
    events = checks_and_stores(image)
    checks = [(i, f) for i, op, f in events if op == Opcode.EXIT_CHECK]
    assert [f["t"] for _, f in checks] == list(range(16)) and all(f["io"] == io for _, f in checks)
    stored: set[int] = set()
    for i, op, f in events:
        if op == Opcode.DMA_STORE:
            stored |= logits_steps(image, f)
            previous_store = i
        else:
            assert set(range(f["t"] + 1)) <= stored  # never before its timesteps are stored
            # and no later than needed: right after the store that completed them (or another check)
            between = [e for e in events if previous_store < e[0] < i]
            assert all(op2 == Opcode.EXIT_CHECK for _, op2, _ in between)
            assert f["t"] in logits_steps(image, next(e[2] for e in events if e[0] == previous_store)) or \
                f["t"] < max(stored)


def test_timestep_major_tail_checks_before_the_next_timestep(programs):
    """With time-batch{timesteps=1} the output layer runs timestep by timestep: check t comes
    before the output layer's syn of timestep t + 1."""
    program = decode_instructions(programs["tail"])
    fc2 = 1  # the second layer descriptor
    for t in range(15):
        check = next(i for i, (s, f) in enumerate(program) if s.opcode == Opcode.EXIT_CHECK and f["t"] == t)
        next_syn = next(i for i, (s, f) in enumerate(program)
                        if s.opcode == Opcode.SYN and f["layer"] == fc2 and f["t0"] == t + 1)
        assert check < next_syn


def test_checks_change_no_output(programs, digits):
    _, data = digits
    for i in (0, 1):
        plain = simulate(programs["plain"], sample(data, i)).outputs
        for name in ("ftp", "tail"):
            result = simulate(programs[name], sample(data, i))
            assert np.array_equal(result.outputs["logits"], plain["logits"])
            assert result.report["exit"] is None and len(result.report["exit_checks"]) == 16


@pytest.mark.parametrize("p", [0.1, 0.05, 1e-6])
def test_threshold_at_most_one_over_classes_exits_after_timestep_0(programs, digits, p):
    _, data = digits
    for i in range(6):
        report = simulate(programs["ftp"], sample(data, i), exit_confidence=p).report
        assert report["exit"]["timestep"] == 0


def test_the_halt_reports_what_the_full_run_saw_at_that_check(programs, digits):
    """The instructions before a check do not depend on the threshold: the halted run's cycles,
    energy and classes at exit are the no-threshold run's record of that check."""
    _, data = digits
    image = programs["tail"]
    full = simulate(image, sample(data, 3))
    for p in (0.3, 0.9, 0.999):
        halted = simulate(image, sample(data, 3), exit_confidence=p)
        exit_info = halted.report["exit"]
        record = full.report["exit_checks"][exit_info["timestep"]]
        sums = record["confidence_sums"][0]
        assert sums <= exit_info["threshold_register"]
        assert all(c["confidence_sums"][0] > exit_info["threshold_register"]
                   for c in full.report["exit_checks"][:exit_info["timestep"]])
        assert (exit_info["cycles"], exit_info["energy_pj"], exit_info["classes"]) == (
            record["cycles"], record["energy_pj"], record["classes"])
        assert exit_info["full_cycles"] == full.report["total"]["cycles"] == halted.report["total"]["cycles"]
        assert exit_info["latency_reduction"] == pytest.approx(1 - record["cycles"] / exit_info["full_cycles"])
        # the halted program leaves timesteps 0..t in DRAM and nothing after them (tail: one store per step)
        t = exit_info["timestep"]
        logits = halted.outputs["logits"]
        assert np.array_equal(logits[:t + 1], full.outputs["logits"][:t + 1])
        assert not logits[t + 1:].any()
        stopped = simulate(image, sample(data, 3), exit_confidence=p, run_to_end=False).report
        assert stopped["total"]["cycles"] == exit_info["cycles"] and "full_cycles" not in stopped["exit"]


def test_never_confident_runs_to_the_end(programs, digits):
    _, data = digits
    report = simulate(programs["ftp"], sample(data, 0), exit_confidence=1.0).report
    assert report["exit"]["timestep"] is None and report["exit"]["threshold"] == 1.0


def test_a_threshold_needs_exit_checks(programs, digits):
    _, data = digits
    with pytest.raises(InputError, match="compile it with --exit-checks"):
        simulate(programs["plain"], sample(data, 0), exit_confidence=0.5)


def test_functional_run_decides_too(programs, digits):
    _, data = digits
    timed = simulate(programs["tail"], sample(data, 2), exit_confidence=0.9)
    functional = simulate(programs["tail"], sample(data, 2), exit_confidence=0.9, functional=True)
    assert functional.report["exit"]["timestep"] == timed.report["exit"]["timestep"]
    assert functional.report["exit"]["cycles"] is None
    assert np.array_equal(functional.outputs["logits"], timed.outputs["logits"])


# --------------------------------------------------------------------------------------
# the pass's and the compiler's refusals
# --------------------------------------------------------------------------------------


def test_several_outputs_need_a_name():
    model, inputs = build("mlp")
    with pytest.raises(CompileError, match=r"2 outputs \(spikes, membrane\).*exit-checks\{output=NAME\}"):
        compile_model(model, CompileOptions(exit_checks=""))
    with pytest.raises(CompileError, match="output='logits' is not a graph output"):
        compile_model(model, CompileOptions(exit_checks="logits"))
    image = compile_model(model, CompileOptions(exit_checks="membrane")).image
    checks = [f for s, f in decode_instructions(image) if s.opcode == Opcode.EXIT_CHECK]
    assert [f["t"] for f in checks] == [0, 1, 2, 3] and {image.io[f["io"]].name for f in checks} == {"membrane"}
    plain = simulate(compile_model(model).image, inputs).outputs
    assert all(np.array_equal(simulate(image, inputs).outputs[k], v) for k, v in plain.items())


def test_the_pass_runs_once(digits):
    with pytest.raises(CompileError, match="already has exit checks"):
        compile_model(digits[0], CompileOptions(passes="exit-checks", exit_checks=""))


# --------------------------------------------------------------------------------------
# malformed checks: the binary validator and the accel verifier
# --------------------------------------------------------------------------------------


def tiny_program(*checks: tuple[int, int]):
    p = Prog(dram_size=1024)
    p.tensor("x", False, (2, 1, 8), 0x100, Format.ACT_I32)
    p.tensor("y", True, (2, 1, 8), 0x200, Format.ACT_I32)
    p.load(0x100, 0, 64)
    p.store(0x200, 0, 64)
    for io, t in checks:
        p.op(Opcode.EXIT_CHECK, io=io, t=t)
    return p.image()


@pytest.mark.parametrize("checks,message", [
    (((0, 0),), r"instruction 2 \(exit.check\)\.io = 0: not an output descriptor \(outputs: \[1\]\)"),
    (((1, 2),), r"\.t = 2: outside 0\.\.1"),
    (((1, 1),), r"\.t = 1: the checks of io 1 go t = 0, 1, 2, \.\.\. in program order, expected t = 0"),
    (((1, 0), (1, 0)), r"instruction 3 \(exit.check\)\.t = 0: .* expected t = 1"),
])
def test_validator_refuses_malformed_checks(checks, message):
    image = tiny_program(*checks)
    with pytest.raises(BinaryFormatError, match=message):
        validate_image(image)
    with pytest.raises(BinaryFormatError, match=message):  # what a user's `snnc run` meets
        simulate(image, {"x": np.zeros((2, 1, 8), np.float32)})


def test_hand_built_checks_by_hand():
    """x = [[1, 0, ...], [0, 3, ...]] (frac 0): after t = 0 the sum is class 0 alone at 1 vs seven
    0s: S = 1 + 7e^-1; after t = 1, [1, 3, 0...]: S = 1 + e^-2 + 6e^-3."""
    x = np.zeros((2, 1, 8), np.float32)
    x[0, 0, 0], x[1, 0, 1] = 1, 3
    report = simulate(tiny_program((1, 0), (1, 1)), {"x": x}).report
    one = 1 << 32
    expected = [one + 7 * int(np.ceil(one * np.exp(-1))), one + int(np.ceil(one * np.exp(-2))) + 6 * int(
        np.ceil(one * np.exp(-3)))]
    assert [c["confidence_sums"][0] for c in report["exit_checks"]] == expected
    assert [c["classes"][0] for c in report["exit_checks"]] == [0, 1]
    # top probability 1 / (1 + 7/e) = 0.2797 after t = 0, 1 / (1 + e^-2 + 6e^-3) = 0.69732 after t = 1
    for p, timestep in ((0.2797, 0), (0.2798, 1), (0.6973, 1), (0.6974, None)):
        report = simulate(tiny_program((1, 0), (1, 1)), {"x": x}, exit_confidence=p).report
        assert report["exit"]["timestep"] == timestep


def test_accel_verifier_refuses_malformed_checks(digits):
    module = compile_model(digits[0], FTP).accel_module
    program = next(op for op in module.ops if isinstance(op, accel.ProgramOp))
    check = next(op for op in program.instructions() if isinstance(op, accel.ExitCheckOp))
    check.properties["io"] = accel.IntAttr(0)  # the input
    with pytest.raises(VerifyException, match=r"accel.exit_check: io = 0: not an output descriptor \(outputs: \[1\]\)"):
        program.verify()
    check.properties["io"] = accel.IntAttr(1)
    check.properties["t"] = accel.IntAttr(3)
    with pytest.raises(VerifyException, match=r"t = 3: the checks of io 1 go t = 0, 1, 2, .* expected t = 0"):
        program.verify()


# --------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("snnc: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exit")
    model, data = tmp / "d.onnx", tmp / "test.npz"
    assert main(["zoo", "digits", "-o", str(model), "--input-out", str(data)]) == 0
    one = tmp / "one.npz"
    np.savez(one, image=np.load(data)["image"][:, :1])
    return tmp, model, one


def test_cli_run_with_exit_confidence(cli_files, capsys):
    tmp, model, one = cli_files
    prog, report = tmp / "e.bin", tmp / "r.json"
    assert main([str(model), "-o", str(prog), "--exit-checks"]) == 0
    assert main(["run", str(prog), "--input", str(one), "--exit-confidence", "0.1", "--report", str(report)]) == 0
    assert "exit after timestep 0" in capsys.readouterr().out  # a result: stdout
    import json

    assert json.loads(report.read_text())["exit"]["timestep"] == 0


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2", "nan"])
def test_cli_threshold_outside_the_unit_interval(cli_files, capsys, value):
    tmp, model, one = cli_files
    prog = tmp / "e2.bin"
    assert main([str(model), "-o", str(prog), "--exit-checks"]) == 0
    capsys.readouterr()
    out = tmp / f"bad{value}.npz"
    assert main(["run", str(prog), "--input", str(one), "--exit-confidence", value, "--output", str(out)]) == 1
    assert "expected a probability in (0, 1]" in one_error_line(capsys)
    assert not out.exists()


def test_cli_threshold_without_checks_and_checks_without_a_name(cli_files, tmp_path, capsys):
    tmp, model, one = cli_files
    prog = tmp_path / "p.bin"
    assert main([str(model), "-o", str(prog)]) == 0
    capsys.readouterr()
    assert main(["run", str(prog), "--input", str(one), "--exit-confidence", "0.5"]) == 1
    assert "--exit-checks" in one_error_line(capsys)
    mlp = tmp_path / "mlp.onnx"
    assert main(["zoo", "mlp", "-o", str(mlp)]) == 0
    capsys.readouterr()
    assert main([str(mlp), "-o", str(tmp_path / "m.bin"), "--exit-checks"]) == 1
    assert "name the classifier" in one_error_line(capsys)
    assert not (tmp_path / "m.bin").exists()


def test_cli_passes_lists_exit_checks(capsys):
    assert main(["passes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:2] == ["exit-checks", "[accel]"] for line in lines)
    assert any(line.startswith("--exit-checks [OUTPUT]: exit-checks{output=OUTPUT}") for line in lines)
