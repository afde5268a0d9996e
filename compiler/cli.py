"""The `snnc` command line.

    snnc MODEL.onnx -o prog.bin           compile (same as `snnc compile ...`)
    snnc MODEL.onnx --emit snn-ir         print an IR level (snn-ir, loop-ir, accel-ir, asm)
    snnc run prog.bin --input in.npz --output out.npz --report r.json
    snnc eval prog.bin --dataset test.npz --exit-confidence 0.5 0.9 --report r.json   accuracy, ELSA table
    snnc verify MODEL.onnx --input in.npz compile + simulate + onnxruntime; exit 0 iff they agree
                                          (bit for bit if no layer rounds; docs/numerics.md)
    snnc disasm prog.bin                  listing of sections and instructions
    snnc zoo --list | snnc zoo NAME -o m.onnx --input-out in.npz
    snnc passes                           the registered passes and the default pipeline
    snnc demo                             zoo model -> compile -> simulate -> verify -> table
    snnc sweep sweep.toml --out r.csv     models x hw grid x pipelines on a Dask cluster (docs/sweeps.md)
    snnc explore MODEL.onnx --hw PRESET|FILE --objective energy --out schedule.json   STEMS schedule search

Results (tables, verdicts, IR text, listings) go to stdout; notes, progress (a
spinner on a terminal once a wait passes a second) and errors go to stderr.
Every user error is one line `snnc: error: ...` on stderr and exit status 1; no
traceback (set SNNC_DEBUG=1 to see one), and no partially written file.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

from snnc.backend.errors import SnncError
from snnc.backend.hwconfig import preset_names

COMMANDS = ("compile", "run", "eval", "verify", "disasm", "zoo", "passes", "demo", "report", "sweep", "explore")
EMIT_CHOICES = ("snn-ir", "loop-ir", "accel-ir", "asm", "bin")


# --------------------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------------------


def _add_compile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dt", type=float, default=1e-4, metavar="SECONDS",
                   help="NIR models: Euler time step; beta = 1 - dt/tau (default 1e-4, snnTorch's export_to_nir)")
    p.add_argument("--timesteps", type=int, default=4, metavar="T",
                   help="NIR models: number of timesteps T to compile for (default 4)")
    p.add_argument("--hw", metavar="PRESET|FILE.toml", default=None,
                   help=f"hardware config: a preset ({', '.join(preset_names())}; default loas) or a TOML file")
    p.add_argument("--weight-bits", type=int, default=8, metavar="N",
                   help="integer weight width, 2..16 (default 8)")
    p.add_argument("--weight-scales", choices=("channel", "layer"), default="channel",
                   help="layers whose weights must be rounded: a power-of-two scale per output channel (default; "
                        "no ISA change: the channel's threshold and bias carry it) or one per layer")
    p.add_argument("--input-frac-bits", type=int, default=8, metavar="N",
                   help="fractional bits of multi-bit graph inputs (default 8)")
    p.add_argument("--passes", default=None, metavar="PIPELINE",
                   help="pass pipeline in xdsl-opt syntax, e.g. 'a,b{opt=1}' (default: `snnc passes`)")
    p.add_argument("--schedule", default=None, metavar="NAME",
                   help="a named pipeline instead of --passes: ftp (the default) or elastic (timestep-major, "
                        "depth-first: early outputs for early exit); `snnc passes` lists them")
    p.add_argument("--load-pass", action="append", default=[], metavar="MODULE:CLASS",
                   help="make a ModulePass from your own module available to --passes")
    p.add_argument("--print-ir-after-all", action="store_true",
                   help="print the IR after the frontend and after every pass (to stderr)")
    p.add_argument("--no-elide", action="store_true",
                   help="IR text (--emit, --print-ir-after-all): print every constant in full, as text that "
                        "parses back (default: constants of over 16 elements print as dense_resource<__elided__>)")
    p.add_argument("--exit-checks", nargs="?", const="", default=None, metavar="OUTPUT",
                   help="ELSA early exit: an exit.check after each timestep of the classifier output OUTPUT "
                        "(default: the only graph output); set the confidence with snnc run/eval --exit-confidence")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snnc", description="Compile spiking neural networks for a sparse SNN accelerator.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("compile", help="compile an ONNX model to prog.bin (the default command)")
    p.add_argument("model", help="ONNX model")
    p.add_argument("-o", "--output", help="output file (default: MODEL stem + .bin, or stdout for --emit)")
    p.add_argument("--emit", choices=EMIT_CHOICES, default="bin",
                   help="what to produce: the binary (default) or an IR level as text")
    _add_compile_options(p)

    p = sub.add_parser("run", help="simulate prog.bin on the accelerator model")
    p.add_argument("program", help="prog.bin")
    p.add_argument("--input", required=True, help="npz with one array per ONNX graph input")
    p.add_argument("--output", help="write the outputs to this npz (keys: ONNX output names)")
    p.add_argument("--report", help="write the per-layer report to this JSON file")
    p.add_argument("--csv", metavar="DIR",
                   help="write COMPUTE_REPORT.csv, MEMORY_REPORT.csv, ENERGY_REPORT.csv to DIR")
    p.add_argument("--functional", action="store_true", help="skip the timing model (faster)")
    p.add_argument("--quiet", action="store_true", help="do not print the per-layer table")
    p.add_argument("--exit-confidence", type=float, default=None, metavar="P",
                   help="halt at the first exit.check whose top softmax probability is >= P, 0 < P <= 1 (a program "
                        "compiled with --exit-checks); the report gives the exit next to the full run")

    p = sub.add_parser("eval", help="accuracy on a labelled data set; early-exit (ELSA) table per confidence")
    p.add_argument("program", help="prog.bin")
    p.add_argument("--dataset", required=True,
                   help="npz: each graph input as [T, N, ...] (samples along the batch axis) and labels [N]")
    p.add_argument("--exit-confidence", type=float, nargs="+", action="extend", default=[], metavar="P",
                   help="confidence thresholds in (0, 1] (a program compiled with --exit-checks): accuracy, mean exit "
                        "timestep, latency and energy reduction for each")
    p.add_argument("--classifier", metavar="OUTPUT",
                   help="the output whose argmax is the prediction (default: the one the exit checks read, or the "
                        "only output)")
    p.add_argument("--report", help="write the results to this JSON file")
    p.add_argument("--plot", metavar="OUT.png", help="draw accuracy against latency reduction (needs matplotlib)")

    p = sub.add_parser(
        "verify", help="compile, simulate and compare with onnxruntime (NIR: the snn-dialect reference)",
        description="Compile, simulate and compare every output with onnxruntime. A model the compiler "
                    "represents exactly is compared bit for bit. A quantised one (some layer rounds, or the "
                    "input does) passes when its spikes agree on at least 98%% of each output's elements and "
                    "its values (membranes, currents) lie within the bound the quantisation allows.")
    p.add_argument("model", help="ONNX model")
    p.add_argument("--input", required=True, help="npz with one array per ONNX graph input")
    p.add_argument("--min-agreement", default=None, metavar="PERCENT",
                   help="pass when every output agrees on at least this much of its elements: a percentage "
                        "(98 or 98%%) or a fraction (0.98); a number above 1 is a percentage, so 1 means 100%% "
                        "(default: 100%% for a representable model, 98%% for a quantised one)")
    p.add_argument("--atol", type=float, default=None, metavar="X",
                   help="value outputs (membranes) agree where |diff| <= X (default: 0 for a representable "
                        "model, else each output's quantisation bound)")
    _add_compile_options(p)

    p = sub.add_parser("disasm", help="print a readable listing of prog.bin")
    p.add_argument("program", help="prog.bin")

    p = sub.add_parser("zoo", help="generate a model of the zoo (canonical ONNX, no torch needed)")
    p.add_argument("name", nargs="?", help="model name (see --list)")
    p.add_argument("--list", action="store_true", help="list the models")
    p.add_argument("-o", "--output", help="ONNX file to write")
    p.add_argument("--input-out", help="also write a matching input npz (a model with a labelled data set, "
                                       "e.g. digits: the whole test split, [T, N, ...] and `labels`, for snnc eval)")
    p.add_argument("--timesteps", type=int, default=None, help="T (default: the model's)")
    p.add_argument("--weight-sparsity", type=float, default=None, help="fraction of zero weights")
    p.add_argument("--weight-profile", default=None,
                   help="how the sparsity spreads over the layers: layerwise (LoAS's logged work per layer; the "
                        "default of the LoAS Table II models), uniform (the same in each; the others' default), "
                        "fan-in or fan-out (global magnitude pruning of He-initialised layers)")
    p.add_argument("--filter-spread", type=float, default=None,
                   help="sigma of the log-normal per-filter weight scale that magnitude pruning sees: how unevenly "
                        "the non-zero weights spread over the output channels (0: at random; default: the LoAS "
                        "models' fitted value with --weight-profile layerwise, else 0)")
    p.add_argument("--spike-sparsity", type=float, default=None, help="target fraction of silent spikes")
    p.add_argument("--spike-profile", default=None,
                   help="layerwise: each neuron layer fires as LoAS's runs fed the next layer (the LoAS Table II "
                        "models' default); uniform: the model's spike sparsity and silent ratio in every layer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--silent-ratio", type=float, default=None,
                   help="target fraction of neurons silent at every step (default: the model's)")
    p.add_argument("--input-scale", type=float, default=1.0,
                   help="spatial input scale, e.g. 0.25 for quick runs (red-lif-gen4, sew-resnet18-dvs, resnet18-imagenet)")
    p.add_argument("--residual", choices=("add", "or"), default=None,
                   help="SEW residual function of sew-resnet18-dvs (default add)")

    sub.add_parser("passes", help="list the registered passes and the default pipeline")

    p = sub.add_parser("report", help="print a report JSON written by `snnc run --report` as tables")
    p.add_argument("report", help="report JSON")
    p.add_argument("--plot", metavar="OUT.png", help="draw per-layer cycles and energy by component (needs matplotlib)")
    p.add_argument("--csv", metavar="DIR", help="also write the CSV reports to DIR")

    p = sub.add_parser("demo", help="compile a bundled model, simulate, verify, print a table")
    p.add_argument("--model", default="vgg-small", help="zoo model to use (default vgg-small)")
    p.add_argument("--keep", metavar="DIR", help="keep the generated files in DIR")

    p = sub.add_parser("sweep", help="compile and simulate a grid of models x hw configs x pipelines on Dask")
    p.add_argument("sweep", help="sweep TOML (docs/sweeps.md)")
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes of the local Dask cluster (default: the CPUs available)")
    engine.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                        help="run on an existing Dask cluster (`dask scheduler` / `dask worker`, dask-jobqueue)")
    p.add_argument("--out", metavar="results.csv", help="write the results here (default: stdout)")
    p.add_argument("--cache", metavar="DIR",
                   help="finished points (default: .snnc-cache/ beside --out, else beside the sweep file)")
    p.add_argument("--plot", metavar="pareto.png", help="draw cycles against energy, the Pareto front per SRAM "
                   "size (needs matplotlib)")

    p = sub.add_parser("explore", help="search a schedule per block (time batch, layer fusion) under the SRAM "
                       "(STEMS); writes schedule.json")
    p.add_argument("model", help="ONNX model")
    p.add_argument("--hw", required=True, metavar="PRESET|FILE.toml",
                   help=f"hardware config: a preset ({', '.join(preset_names())}) or a TOML file")
    p.add_argument("--objective", default="energy", metavar="dram|energy|cycles|edp",
                   help="what to minimise (default energy)")
    p.add_argument("--out", default="schedule.json", metavar="schedule.json",
                   help="the chosen schedule (default schedule.json)")
    p.add_argument("--input", metavar="in.npz",
                   help="input to simulate on (default: the .npz beside the model, same stem)")
    p.add_argument("--max-group", type=int, default=4, metavar="N",
                   help="most kernels in a fused group, in a model whose names show no blocks (default 4)")
    p.add_argument("--exhaustive", action="store_true",
                   help="evaluate every schedule as a whole instead of dynamic programming (small models)")
    return parser


def _normalise_argv(argv: list[str]) -> list[str]:
    """`snnc model.onnx ...` means `snnc compile model.onnx ...`."""
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        return ["compile", *argv]
    return argv


# --------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------


def _compile_options(args):
    from snnc.compiler.pipeline import CompileOptions, schedule_passes

    return CompileOptions(
        hw=args.hw, weight_bits=args.weight_bits, weight_scales=args.weight_scales,
        input_frac_bits=args.input_frac_bits,
        passes=schedule_passes(args.schedule, args.passes), load_passes=tuple(args.load_pass),
        print_ir_after_all=args.print_ir_after_all, dt=args.dt, timesteps=args.timesteps,
        elide_constants=not args.no_elide,
        exit_checks=args.exit_checks, keep_loop_module=getattr(args, "emit", None) == "loop-ir",
    )


def _require_model(path: str) -> Path:
    model = Path(path)
    if not model.is_file():
        raise SnncError(f"{model}: no such file")
    return model


def cmd_compile(args) -> int:
    from snnc.backend.isa import INSTRUCTION_BYTES
    from snnc.compiler.fileio import atomic_write_bytes, atomic_write_text
    from snnc.compiler.pipeline import compile_model, print_ir

    model = _require_model(args.model)
    options = _compile_options(args)
    with _lazy_status(f"compiling {model.name}", quiet=options.print_ir_after_all) as status:
        result = compile_model(model, options, on_step=status.update if status else None)
        if args.emit != "bin" and status:
            status.update(f"printing {args.emit}")
        if args.emit == "snn-ir":
            text = print_ir(result.snn_module, elide=options.elide_constants)
        elif args.emit == "loop-ir":
            text = print_ir(result.loop_module, elide=options.elide_constants)
        elif args.emit == "accel-ir":
            text = print_ir(result.accel_module, elide=options.elide_constants)
        elif args.emit == "asm":
            from snnc.backend.disasm import disassemble

            text = disassemble(result.image)
    if args.emit == "bin":
        out = Path(args.output) if args.output else Path(model.stem + ".bin")
        atomic_write_bytes(out, result.binary)
        print(f"wrote {out} ({len(result.binary):,} bytes, "
              f"{len(result.image.instructions) // INSTRUCTION_BYTES:,} instructions)", file=sys.stderr)
        return 0
    if args.output:
        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


class LazyStatus:
    """A spinner on `console` naming the step under way, shown only once the run has taken
    `after` seconds (quick runs stay silent). With the real clock a timer shows it then
    even if no step starts meanwhile (a long first step, a long import)."""

    def __init__(self, console, title: str, after: float = 1.0, clock=None):
        import threading

        self._console, self._title, self._after = console, title, after
        self._clock = clock or time.perf_counter
        self._start = self._clock()
        self._status = None
        self._text = title
        self._lock = threading.Lock()
        self._timer = None
        if clock is None:
            self._timer = threading.Timer(after, self._show)
            self._timer.daemon = True
            self._timer.start()

    def calibrating(self, layer: str) -> None:
        self.update(f"calibrating {layer}")

    def update(self, step: str) -> None:
        with self._lock:
            self._text = f"{self._title}: {step}"
            if self._status is None:
                if self._clock() - self._start < self._after:
                    return
                self._status = self._console.status(self._text)
                self._status.start()
            self._status.update(self._text)

    def _show(self) -> None:
        with self._lock:
            if self._status is None and self._timer is not None:
                self._status = self._console.status(self._text)
                self._status.start()

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._status is not None:
                self._status.stop()


@contextlib.contextmanager
def _lazy_status(title: str, quiet: bool = False):
    """A LazyStatus on stderr when it is a terminal (and not `quiet`), else None; stopped on exit."""
    status = LazyStatus(_console(), title) if sys.stderr.isatty() and not quiet else None
    try:
        yield status
    finally:
        if status is not None:
            status.stop()


def _console(stdout: bool = False):
    """Rich console on stderr (notes, progress) or stdout (results); when not a
    terminal, as wide as a table needs (tables are never cut in a file)."""
    from rich.console import Console

    console = Console(stderr=not stdout)
    return console if console.is_terminal else Console(stderr=not stdout, width=_FILE_WIDTH)


_FILE_WIDTH = 400  # a piped table is as wide as its columns need, up to this


def cmd_run(args) -> int:
    from snnc.compiler.fileio import atomic_write_files, check_destination, load_npz, npz_bytes
    from snnc.runtime import load_program, simulate
    from snnc.runtime.exit_rule import threshold_register
    from snnc.runtime.files import ensure_directory
    from snnc.runtime.report import report_to_json, write_csv_reports

    # Every check that can fail comes before the first file is written.
    if args.csv and args.functional:
        raise SnncError("run: --csv needs the timing model (drop --functional)")
    if args.exit_confidence is not None:
        threshold_register(args.exit_confidence)  # a bad threshold fails before any work
    for destination in (args.output, args.report):
        if destination:
            check_destination(destination)
    image = load_program(args.program)
    inputs = load_npz(args.input)
    csv_dir = ensure_directory(args.csv) if args.csv else None
    result = simulate(image, inputs, functional=args.functional, progress=sys.stderr.isatty(),
                      exit_confidence=args.exit_confidence)
    files = {}
    if args.output:
        files[args.output] = npz_bytes(result.outputs)
    if args.report:
        files[args.report] = report_to_json(result.report).encode("utf-8")
    atomic_write_files(files)  # both or neither
    if csv_dir is not None:
        write_csv_reports(result.report, csv_dir)
    if not args.quiet and not args.functional:
        from snnc.runtime.report import report_tables

        _print_tables(report_tables(result.report, f"{args.program}", details=False))
    exit_info = result.report.get("exit")
    if exit_info is not None and not args.quiet:
        _console(stdout=True).print(_exit_line(exit_info))
    return 0


def _print_tables(tables) -> None:
    console = _console(stdout=True)
    for table in tables:
        console.print(table)


def _exit_line(exit_info: dict) -> str:
    """One line on the early exit of `snnc run --exit-confidence`."""
    head = f"exit confidence {exit_info['threshold']:.6g}: "
    if exit_info["timestep"] is None:
        return head + "never confident, ran all timesteps"
    text = head + f"exit after timestep {exit_info['timestep']}"
    if exit_info["cycles"] is not None and exit_info.get("full_cycles"):
        text += (f", {exit_info['cycles']:,} of {exit_info['full_cycles']:,} cycles "
                 f"({100 * exit_info['latency_reduction']:.1f} % less), "
                 f"{exit_info['energy_pj'] / 1e3:,.2f} of {exit_info['full_energy_pj'] / 1e3:,.2f} nJ "
                 f"({100 * exit_info['energy_reduction']:.1f} % less)")
    return text


def cmd_eval(args) -> int:
    import importlib.util

    from rich.table import Table

    from snnc.compiler.fileio import atomic_write_text, load_npz
    from snnc.runtime import load_program
    from snnc.runtime.evaluate import evaluate, plot_elastic
    from snnc.runtime.exit_rule import threshold_register
    from snnc.runtime.report import report_to_json

    for p in args.exit_confidence:  # every check that can fail comes before the simulations
        threshold_register(p)
    if args.plot and not args.exit_confidence:
        raise SnncError("eval: --plot draws the early-exit curve: give --exit-confidence values")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise SnncError("eval: --plot needs matplotlib: pip install 'snnc[plot]' (or pip install matplotlib)")
    image = load_program(args.program)
    dataset = load_npz(args.dataset)
    report = evaluate(image, dataset, args.exit_confidence, classifier=args.classifier,
                      progress=sys.stderr.isatty())
    if args.report:
        atomic_write_text(args.report, report_to_json(report))
    if args.plot:
        plot_elastic(report, args.plot)
    full = report["full"]
    out = _console(stdout=True)
    out.print(f"{args.program}: accuracy {100 * report['accuracy']:.2f} % on {report['samples']} samples "
              f"({report['classifier']!r}, T={report['timesteps']}); full run {full['mean_cycles']:,.0f} cycles, "
              f"{full['mean_energy_pj'] / 1e3:,.2f} nJ, first output at {full['mean_first_output_cycle']:,.0f} cycles "
              "(means)")
    if report["elastic"]:
        table = Table(title="early exit (ELSA)")
        for column in ("threshold", "accuracy %", "mean exit timestep", "latency reduction %", "energy reduction %"):
            table.add_column(column, justify="right")
        for row in report["elastic"]:
            table.add_row(f"{row['threshold']:g}", f"{100 * row['accuracy']:.2f}", f"{row['mean_exit_timestep']:.2f}",
                          f"{100 * row['latency_reduction']:.2f}", f"{100 * row['energy_reduction']:.2f}")
        out.print(table)
    return 0


def cmd_report(args) -> int:
    """Print the per-layer, compute, stall and energy tables of a report JSON; optional plot and CSVs."""
    import json

    from snnc.runtime.report import plot_report, report_tables, write_csv_reports

    try:
        report = json.loads(Path(args.report).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SnncError(f"{args.report}: no such report file") from None
    except (OSError, ValueError) as exc:
        raise SnncError(f"{args.report}: not a report JSON ({exc})") from None
    if not isinstance(report, dict) or "layers" not in report or "total" not in report:
        raise SnncError(f"{args.report}: not a report JSON (expected keys 'total' and 'layers')")
    if report.get("functional"):
        raise SnncError(f"{args.report}: a functional-only report has no timing (run without --functional)")
    _print_tables(report_tables(report, f"{report.get('model', args.report)}"))
    if args.csv:
        write_csv_reports(report, args.csv)
    if args.plot:
        try:
            plot_report(report, args.plot)
        except ImportError as exc:
            raise SnncError(str(exc)) from None
    return 0


def _verify(model: Path, inputs: dict, options, console, atol: float | None = None,
            min_agreement: float | None = None, notes=None):
    """Compile, simulate, run the reference and judge; prints what was compared and
    why, the table and the verdict on `console` (stdout), notes on `notes` (stderr).
    Returns (rows, compile result, simulation, verdict)."""
    from rich.table import Table

    from snnc.passes.encode import find_program
    from snnc.compiler.pipeline import compile_model
    from snnc.compiler.reference import (
        compare_outputs, judge, percent, plan_verification, reference_outputs,
    )
    from snnc.runtime import simulate

    with _lazy_status(f"verifying {model.name}") as status:
        result = compile_model(model, options, on_step=(lambda step: status.update(f"compiling: {step}"))
                               if status else None)
    sim = simulate(result.image, inputs, progress=sys.stderr.isatty())
    with _lazy_status(f"verifying {model.name}") as status:
        if status:
            status.update("running the reference")
        reference, reference_name = reference_outputs(model, inputs, options)
    console.print(f"reference: {reference_name}", highlight=False)
    program = find_program(result.accel_module)
    inexact = program.inexact_layers()
    value_outputs = {io.io_name.data: (io.error_bound.data if io.error_bound is not None else None)
                     for io in program.io_ops() if io.is_output.data and io.error_bound is not None}
    rounded_inputs = _rounded_inputs(program, inputs) if sim.report.get("inputs_quantised") else []
    plan = plan_verification(value_outputs, inexact, rounded_inputs, atol=atol, min_agreement=min_agreement)
    rows = compare_outputs(sim.outputs, reference, plan.tolerances)
    if inexact and notes is not None:
        for node, reason in inexact[:5]:
            notes.print(f"note: layer {node!r} is quantised inexactly: {reason}", highlight=False)
        if len(inexact) > 5:
            notes.print(f"note: ... and {len(inexact) - 5} more layer(s)", highlight=False)
    table = Table(title=f"snnc verify {model.name}")
    for column in ("output", "shape", "kind", "compared", "agreement", "max |diff|"):
        table.add_column(column, justify="right" if column in ("agreement", "max |diff|") else "left")
    for row in rows:
        if row.binary:
            kind, compared = "spikes", "equal"
        elif row.tolerance == 0:
            kind, compared = "values", "equal"
        else:
            kind, compared = "values", f"|diff| <= {row.tolerance:.3g} ({plan.tolerance_source})"
        table.add_row(row.name, "x".join(map(str, row.shape)), kind, compared, percent(row.agreement),
                      f"{row.max_abs_diff:.3g}")
    console.print(table)
    console.print(plan.basis, highlight=False)
    verdict = judge(rows, plan, "onnxruntime" if reference_name == "onnxruntime" else "the snn-dialect reference")
    console.print(("[green]PASS[/]" if verdict.ok else "[red]FAIL[/]") + verdict.text[4:], highlight=False)
    return rows, result, sim, verdict


def _rounded_inputs(program, inputs: dict) -> list[str]:
    """The multi-bit graph inputs whose values the input format rounds, each with the
    --input-frac-bits that would hold it most finely (ACT_I16: |x| * 2**f < 2**15)."""
    import numpy as np

    from snnc.backend.isa import Format
    from snnc.passes.numerics import input_frac_for

    described = []
    for io in program.io_ops():
        name = io.io_name.data
        if io.is_output.data or io.format.data != Format.ACT_I16 or name not in inputs:
            continue
        x = np.asarray(inputs[name], np.float64)
        frac = io.frac_bits.data
        if np.array_equal(np.ldexp(np.rint(np.ldexp(x, frac)), -frac), x):
            continue
        largest = float(np.max(np.abs(x))) if x.size else 0.0
        best = input_frac_for(x)
        hint = f"; --input-frac-bits {best} holds it more finely" if best > frac else ""
        described.append(f"input {name!r} rounded to {frac} fractional bits (max |x| {largest:.3g}{hint})")
    return described or ["the inputs are rounded to their stored format"]


def cmd_verify(args) -> int:
    from snnc.compiler.fileio import load_npz
    from snnc.compiler.reference import parse_agreement

    min_agreement = parse_agreement(args.min_agreement) if args.min_agreement is not None else None
    if args.atol is not None and not args.atol >= 0:
        raise SnncError(f"--atol {args.atol}: expected a number >= 0")
    model = _require_model(args.model)
    inputs = load_npz(args.input)
    _, _, _, verdict = _verify(model, inputs, _compile_options(args), _console(stdout=True), args.atol,
                               min_agreement, notes=_console())
    return 0 if verdict.ok else 1


def cmd_disasm(args) -> int:
    from snnc.backend.disasm import disassemble
    from snnc.runtime import load_program

    sys.stdout.write(disassemble(load_program(args.program)))
    return 0


def cmd_zoo(args) -> int:
    from snnc.compiler.fileio import atomic_write_bytes, save_npz
    from snnc.compiler.zoo import ZOO, build, build_dataset

    if args.list or not args.name:
        if not args.list:
            raise SnncError("zoo: name a model or use --list")
        width = max(map(len, ZOO))
        for name, entry in ZOO.items():
            print(f"{name:<{width}}  {entry.description}")
        return 0
    if args.name not in ZOO:
        raise SnncError(f"zoo: unknown model '{args.name}' (known: {', '.join(ZOO)})")
    if not args.output:
        raise SnncError("zoo: -o MODEL.onnx is required")
    with _lazy_status(f"building {args.name}") as status:
        model, inputs = build(args.name, timesteps=args.timesteps, weight_sparsity=args.weight_sparsity,
                              spike_sparsity=args.spike_sparsity, seed=args.seed,
                              silent_ratio=args.silent_ratio, input_scale=args.input_scale,
                              residual=args.residual, weight_profile=args.weight_profile,
                              spike_profile=args.spike_profile, filter_spread=args.filter_spread,
                              on_layer=status.calibrating if status else None)
    if args.input_out and ZOO[args.name].dataset is not None:  # the labelled test split, for `snnc eval`
        inputs = build_dataset(args.name, timesteps=args.timesteps)
    atomic_write_bytes(args.output, model.SerializeToString())
    if args.input_out:
        save_npz(args.input_out, inputs)
    print(f"wrote {args.output}" + (f" and {args.input_out}" if args.input_out else ""), file=sys.stderr)
    return 0


def cmd_passes(args) -> int:
    from xdsl.passes import get_pass_option_infos

    from snnc.compiler.pipeline import (
        DEFAULT_PIPELINE,
        EXIT_CHECKS_PASS,
        LOWERING_PASSES,
        SCHEDULES,
        CompileOptions,
        build_pipeline,
    )
    from snnc.passes import get_all_passes, pass_level

    print(f"default pipeline: {DEFAULT_PIPELINE or '(none)'}")
    print("every compile runs: " + ",".join(p.name for p in build_pipeline(CompileOptions()).all()))
    print("named schedules (--schedule NAME, instead of --passes):")
    for name, spec in SCHEDULES.items():
        print(f"  {name:<24} {spec}")
    print(f"--exit-checks [OUTPUT]: {EXIT_CHECKS_PASS}{{output=OUTPUT}} after every other accel-level pass")
    for name, factory in get_all_passes().items():
        cls = factory()
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        level = f"{pass_level(cls)}, lowering stage" if name in LOWERING_PASSES else pass_level(cls)
        options = ", ".join(
            f"{o.name}={o.default_value if o.default_value is not None else ''} ({o.expected_type.strip(chr(39))})"
            for o in get_pass_option_infos(cls)
        )
        print(f"  {name:<24} [{level}] {doc}")
        if options:
            print(f"  {'':<24}   options: {options}")
    return 0


def cmd_demo(args) -> int:
    from snnc.compiler.fileio import atomic_write_bytes, save_npz
    from snnc.compiler.pipeline import CompileOptions
    from snnc.compiler.zoo import ZOO, build
    from snnc.runtime.report import report_tables

    if args.model not in ZOO:
        raise SnncError(f"demo: unknown model '{args.model}' (known: {', '.join(ZOO)})")
    notes, results = _console(), _console(stdout=True)
    with tempfile.TemporaryDirectory(prefix="snnc-demo-") as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        model_path, input_path = workdir / f"{args.model}.onnx", workdir / "in.npz"
        with _lazy_status(f"building {args.model}") as status:
            model, inputs = build(args.model, on_layer=status.calibrating if status else None)
        atomic_write_bytes(model_path, model.SerializeToString())
        save_npz(input_path, inputs)
        notes.print(f"[bold]snnc demo[/]: zoo model [cyan]{args.model}[/] -> {model_path}")
        start = time.perf_counter()
        _, result, sim, verdict = _verify(model_path, inputs, CompileOptions(), results, notes=notes)
        elapsed = time.perf_counter() - start
        atomic_write_bytes(workdir / "prog.bin", result.binary)
        for table in report_tables(sim.report, f"{args.model} on the LoAS configuration", details=False):
            results.print(table)
        notes.print(f"{elapsed:.2f} s for compile + simulate + onnxruntime")
        if args.keep:
            notes.print(f"files kept in {workdir}: {model_path.name}, in.npz, prog.bin")
    return 0 if verdict.ok else 1


def _check_plot_path(path: Path) -> None:
    """--plot fails before the work, not after it: matplotlib present, a format it writes."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SnncError("--plot needs matplotlib: pip install 'snnc[plot]' (or pip install matplotlib)") from None
    formats = Figure().canvas.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise SnncError(f"--plot {path}: unknown image format (use one of .{', .'.join(sorted(formats))})")


def cmd_sweep(args) -> int:
    from snnc.compiler.sweep import load_sweep, run_sweep

    if args.workers is not None and args.workers < 1:
        raise SnncError(f"--workers {args.workers}: expected at least 1")
    spec = load_sweep(args.sweep)
    out = Path(args.out) if args.out else None
    for path, what in ((out, "--out"), (Path(args.plot) if args.plot else None, "--plot")):
        if path is not None and not (path.parent if str(path.parent) else Path(".")).is_dir():
            raise SnncError(f"{what} {path}: directory {path.parent} does not exist")
    if args.plot:
        _check_plot_path(Path(args.plot))
    cache = Path(args.cache) if args.cache else (out or Path(args.sweep)).parent / ".snnc-cache"
    workers = args.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    outcome = run_sweep(spec, cache_dir=cache, out=out, workers=workers or 1, scheduler=args.scheduler,
                        plot=Path(args.plot) if args.plot else None, console=_console())
    ran = (f"{outcome.ran} run on {outcome.workers} worker{'s' if outcome.workers != 1 else ''}"
           if outcome.ran else "none to run")
    rate = f", {60 * outcome.ran / outcome.seconds:.1f} points/min" if outcome.ran and outcome.seconds else ""
    failed = f"; {outcome.failed} failed (see the error column)" if outcome.failed else ""
    points = f"{len(outcome.points)} point{'s' if len(outcome.points) != 1 else ''}"
    print(f"sweep: {points}: {outcome.cached} from the cache, {ran} "
          f"in {outcome.seconds:.1f} s{rate}{failed}" + (f" -> {out}" if out else ""), file=sys.stderr)
    return 0


def cmd_explore(args) -> int:
    from snnc.backend.hwconfig import load_hw
    from snnc.compiler.explore import OBJECTIVES, explore
    from snnc.compiler.explore_report import RichProgress, print_tables, schedule_json
    from snnc.compiler.fileio import atomic_write_text, check_destination, load_npz
    import json

    if args.objective not in OBJECTIVES:
        raise SnncError(f"--objective {args.objective!r}: expected one of {', '.join(OBJECTIVES)}")
    if args.max_group < 1:
        raise SnncError(f"--max-group {args.max_group}: expected at least 1")
    load_hw(args.hw)
    model = Path(args.model)
    if not model.is_file():
        raise SnncError(f"{model}: no such file")
    input_path = Path(args.input) if args.input else model.with_suffix(".npz")
    if not input_path.is_file():
        hint = "" if args.input else " (name one with --input)"
        raise SnncError(f"{input_path}: no such input file{hint}")
    out = check_destination(args.out)
    inputs = load_npz(input_path)
    with RichProgress(_console()) as progress:
        result = explore(model, args.hw, inputs, args.objective, max_group=args.max_group,
                         method="exhaustive" if args.exhaustive else "dp", progress=progress)
    print_tables(result, _console(stdout=True))
    atomic_write_text(out, json.dumps(schedule_json(result, str(model), args.hw), indent=2) + "\n")
    print(f"explore: wrote {out}; search {result.search_s:.1f} s ({result.runs} runs)", file=sys.stderr)
    return 0


HANDLERS = {
    "compile": cmd_compile, "run": cmd_run, "eval": cmd_eval, "verify": cmd_verify, "disasm": cmd_disasm,
    "zoo": cmd_zoo, "passes": cmd_passes, "demo": cmd_demo, "report": cmd_report, "sweep": cmd_sweep,
    "explore": cmd_explore,
}


def main(argv: list[str] | None = None) -> int:
    argv = _normalise_argv(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        code = HANDLERS[args.command](args)
        sys.stdout.flush()  # a full disk or a closed pipe shows here, handled below, not at exit
        return code
    except SnncError as exc:  # one line, even when a name from the input holds a newline
        print(f"snnc: error: {exc}".replace("\n", "\\n"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("snnc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `snnc disasm p.bin | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # the environment's (a full disk, a file that cannot be written), not snnc's
        where = f"{exc.filename}: " if exc.filename else "writing the output: "
        print(f"snnc: error: {where}{exc.strerror or exc}".replace("\n", "\\n"), file=sys.stderr)
        try:
            sys.stdout.flush()
        except OSError:  # stdout itself failed: drop what is left, or the exit would fail on it again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # a bug in snnc, not bad input: still one line by default
        if os.environ.get("SNNC_DEBUG"):
            raise
        print(f"snnc: internal error: {type(exc).__name__}: {exc} (set SNNC_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 70


_IR_COMMANDS = ("compile", "verify", "demo", "explore", "passes")  # the commands that import xDSL's dialects


def console_main() -> None:
    """`main` as a whole process: exits without garbage-collecting what it built.

    A compiled program is one big reference cycle (thousands of IR ops); collecting
    it at interpreter exit costs ~0.1-0.2 s of a `snnc compile`, and the OS frees the
    memory anyway. Not for in-process callers of `main`: frozen objects are never freed.

    A `snnc compile` process goes further, as everything it builds (~400 imported
    modules, then the IR) stays alive until it ends: it runs without the cyclic
    collector, whose ~100 collections found next to nothing (30-60 ms of the process),
    with a single OpenBLAS thread, and it ends without tearing the interpreter down
    (once its output is flushed and the atexit handlers have run). A command that builds
    IR parses the assembly formats of xDSL's ops when it first prints or parses one, not
    as it imports them (compiler/deferred.py).
    """
    argv = _normalise_argv(sys.argv[1:])
    compiling = bool(argv) and argv[0] == "compile"
    if compiling:
        gc.disable()
        # no numpy call of a compile uses BLAS: spare OpenBLAS starting a thread per core
        # as numpy is imported (~40 ms); a user's own setting stands
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if argv and argv[0] in _IR_COMMANDS:
        from snnc.compiler.deferred import defer_assembly_formats

        defer_assembly_formats()
    code = main(argv)
    gc.freeze()
    if compiling:
        _exit_now(code)
    sys.exit(code)


def _exit_now(code: int) -> None:
    """End the process with `code` as `sys.exit` would, minus the interpreter's teardown
    (freeing every module and object one by one: ~20 ms after a compile). Returns when
    that is not safe (another thread still runs, or flushing the output fails): the
    caller then exits normally."""
    import atexit
    import threading

    if threading.active_count() > 1:
        return
    atexit._run_exitfuncs()  # what a normal exit runs first (logging's flush, a plugin's handlers)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken stream: let the normal exit report it
        return
    os._exit(code)


if __name__ == "__main__":
    console_main()
