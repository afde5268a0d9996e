"""The snnc compilation pipeline, top to bottom in one place.

    model.onnx / model.nir
      1. frontend            import_onnx / import_nir            -> snn            (verified)
      2. snn-level passes    the user's (ir_level "snn")         -> snn            (verified after each)
      3. quantise            fixed-point numbers of every layer  -> snn
      4. convert-snn-to-loops  a plain nest per layer            -> loop level     (scf/arith/memref + tile)
      5. loop-level passes   the user's, in their order: compress-weights, loop-reorder,
                             time-batch, layer-fuse, time-interleave, spike-pack, your own
      6. tile-sizes          tile shapes and buffer copies that fit the SRAM
      7. hoist-loads         constant tiles loaded once where the loops do not change them
      8. sram-alloc          SRAM offsets, per kernel (liveness)
      9. dram-alloc          DRAM addresses of constants and maps
     10. convert-loops-to-accel   one instruction per tile-op instance -> accel      (mechanical)
     11. insert-barriers     WAR/WAW fences on SRAM
     12. accel-level passes  the user's (dma-prefetch)           -> accel
     13. backend             encode + write_program              -> prog.bin bytes

Passes given with `--passes` use xdsl-opt's pipeline syntax; `--schedule NAME` names one
of SCHEDULES instead (ftp = the default, elastic = the streaming schedule). Each pass
class says which IR level it runs on (`ir_level`: "snn", "loop" or "accel"); the
pipeline places it at its level, keeping the user's order within a level. A lowering
stage (3-4, 6-11) that the user names in `--passes` runs where they put it instead of
where it would be added (`tile-sizes` after your own tiling pass, for instance); the
rest are added. With `print_ir_after_all` the IR after every step goes to `ir_stream`.

IR text: `print_ir(module, elide=True)` (the CLI's default, also for
--print-ir-after-all) prints constants of more than ELIDE_LARGER_THAN elements as
MLIR's --mlir-elide-elementsattrs-if-larger does: `dense_resource<__elided__> : type`
(it parses, but as no data: such a module does not verify). Without `elide` every
weight is printed, and the text parses back to the same module.
"""

from __future__ import annotations

import dataclasses
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.printer import Printer
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, VerifyException

from snnc.backend.errors import CompileError, SnncError
from snnc.compiler.verify import IncrementalVerifier
from snnc.runtime.collect import IR_FULL_EVERY, fewer_collections
from snnc.dialects import make_context
from snnc.passes import get_all_passes, pass_level

# Passes run when the user gives no --passes. The LoAS schedule, made explicit: weights
# stored as bitmask fibers in DRAM (compress-weights; LoAS keeps fiber-B compressed, and
# only the compressed bytes move), the FTP loop nest (loop-reorder{dataflow=ftp} emits
# exactly the program the lowering emits without it), then dma-prefetch on the
# accelerator program so transfers overlap compute. spike-pack is not in the default: it
# cannot tile layers whose weights do not fit the SRAM whole (a packed map is written by
# whole rows of all channels).
DEFAULT_PIPELINE = "compress-weights,loop-reorder{dataflow=ftp},dma-prefetch"
# Named schedules (`--schedule NAME`): each is a plain --passes string, so `snnc explore` and
# sweeps can use it as one. ftp: the default, a layer's timesteps computed together (LoAS).
# elastic: timestep-major and depth-first (ELSA, issue 16): every layer time-batched to one
# timestep, then time-interleave runs the whole kernel sequence once per timestep, so timestep
# t's output leaves the chip before t + 1 starts anywhere (early exit decides sooner), at the
# price of reloading weights and spilling neuron state to DRAM every timestep.
SCHEDULES = {
    "ftp": DEFAULT_PIPELINE,
    "elastic": "compress-weights,time-batch{timesteps=1},time-interleave,dma-prefetch",
}
# The stages every compile runs, by level (numbers as in the module docstring).
SNN_LOWERING = ("quantise", "convert-snn-to-loops")
LOOP_LOWERING = ("tile-sizes", "hoist-loads", "sram-alloc", "dram-alloc", "convert-loops-to-accel")
ACCEL_LOWERING = ("insert-barriers",)
LOWERING_PASSES = (*SNN_LOWERING, *LOOP_LOWERING, *ACCEL_LOWERING)
# ELSA early exit (`--exit-checks`): opt-in, since each check costs a DRAM read and cycles even
# when no threshold is set, and a model with several outputs must name its classifier
EXIT_CHECKS_PASS = "exit-checks"


@dataclass(frozen=True)
class CompileOptions:
    hw: str | None = None  # preset name or TOML path; None = the LoAS default
    weight_bits: int = 8
    weight_scales: str = "channel"  # rounded layers: per-channel power-of-two scales, or one per layer
    input_frac_bits: int = 8
    passes: str | None = None  # pipeline spec; None = DEFAULT_PIPELINE
    load_passes: tuple[str, ...] = ()
    print_ir_after_all: bool = False
    elide_constants: bool = True  # IR text: constants of > ELIDE_LARGER_THAN elements as dense_resource<__elided__>
    dt: float = 1e-4  # NIR only: the Euler time step in seconds (snnTorch's export_to_nir value)
    timesteps: int = 4  # NIR only: T (NIR graphs carry no time axis)
    # exit-checks after the accel-level passes: None = none; "" = on the only graph output; else its name
    exit_checks: str | None = None
    keep_loop_module: bool = False  # copy the loop-level IR into CompileResult (else rebuilt when asked for)


def schedule_passes(schedule: str | None, passes: str | None = None) -> str | None:
    """The --passes of a named schedule (`passes` itself when no schedule is named); naming
    both, or an unknown schedule, is a one-line SnncError."""
    if schedule is None:
        return passes
    if passes is not None:
        raise SnncError(f"--schedule {schedule} and --passes: give one of them (a schedule is a named "
                        "--passes; `snnc passes` shows what each expands to)")
    if schedule not in SCHEDULES:
        raise SnncError(f"--schedule {schedule!r}: unknown schedule (known: {', '.join(SCHEDULES)})")
    return SCHEDULES[schedule]


def import_model(model: str | Path | object, options: CompileOptions = CompileOptions()) -> ModuleOp:
    """The frontend: NIR for `.nir` files and nir.NIRGraph objects, ONNX otherwise."""
    from snnc.compiler.frontend.onnx_import import import_onnx

    if (isinstance(model, str | Path) and Path(model).suffix == ".nir") or type(model).__name__ == "NIRGraph":
        from snnc.compiler.frontend.nir_import import import_nir

        return import_nir(model, dt=options.dt, timesteps=options.timesteps)
    return import_onnx(model)


@dataclass
class CompileResult:
    snn_module: ModuleOp  # a copy of the snn-level IR after the snn-level passes
    accel_module: ModuleOp
    image: object  # snnc.backend.binformat.ProgramImage
    binary: bytes
    steps: list[str] = field(default_factory=list)  # names of the steps that ran
    # per step: (its work, the module's verification after it), CPU seconds (a repeated pass summed)
    step_seconds: dict[str, tuple[float, float]] = field(default_factory=dict)
    kept_loop_module: ModuleOp | None = field(default=None, repr=False)
    rebuild_loop_module: Callable[[], ModuleOp] | None = field(default=None, repr=False)

    @property
    def loop_module(self) -> ModuleOp:
        """The loop-level IR as the final lowering received it. compile_model keeps a copy
        when `CompileOptions.keep_loop_module` is set (`--emit loop-ir` sets it); otherwise
        it is rebuilt on first use by running the pipeline again up to that point (the
        pipeline is deterministic), so a compile that never looks pays for no copy."""
        if self.kept_loop_module is None:
            if self.rebuild_loop_module is None:
                raise ValueError("this CompileResult holds no loop-level IR")
            self.kept_loop_module = self.rebuild_loop_module()
        return self.kept_loop_module

    @property
    def snn_ir(self) -> str:
        """The snn-level IR text in full (printed on demand: printing is not in the compile path)."""
        return print_ir(self.snn_module)

    @property
    def loop_ir(self) -> str:
        return print_ir(self.loop_module)

    @property
    def accel_ir(self) -> str:
        return print_ir(self.accel_module)


ELIDE_LARGER_THAN = 16  # elements; MLIR's flag takes the same kind of number


class _ElidingPrinter(Printer):
    """A Printer that prints dense constants of more than `elide_larger_than` elements
    as MLIR's elided placeholder."""

    elide_larger_than: int | None = None

    def print_attribute(self, attribute) -> None:
        limit = self.elide_larger_than
        if limit is not None and isinstance(attribute, DenseIntOrFPElementsAttr) and len(attribute) > limit:
            self.print_string("dense_resource<__elided__> : ")
            self.print_attribute(attribute.type)
            return
        super().print_attribute(attribute)


def print_ir(module: ModuleOp, elide: bool = False) -> str:
    """The module as text; with `elide`, constants of more than ELIDE_LARGER_THAN
    elements print as `dense_resource<__elided__> : <type>` (not data: it does not
    parse back to the module)."""
    stream = io.StringIO()
    printer = _ElidingPrinter(stream=stream)
    printer.elide_larger_than = ELIDE_LARGER_THAN if elide else None
    printer.print_op(module)
    stream.write("\n")
    return stream.getvalue()


def _one_line(exc: Exception) -> str:
    """xDSL verification errors embed the whole module; keep the diagnosis line."""
    lines = [ln.strip(" |^-") for ln in str(exc).splitlines()]
    for ln in lines:
        if "does not verify" in ln or ln.startswith("snn.") or ln.startswith("accel."):
            return ln.replace("Operation does not verify: ", "")
    return next((ln for ln in lines if ln), type(exc).__name__)


def verify_module(module: ModuleOp, after: str, verifier: Callable[[ModuleOp], None] | None = None) -> None:
    """Verify `module` (with `verifier`, an IncrementalVerifier, when the caller verifies the
    same module after each of many passes)."""
    try:
        (verifier or ModuleOp.verify)(module)
    except (VerifyException, DiagnosticException) as exc:
        raise CompileError(f"IR does not verify after {after}: {_one_line(exc)}") from None


def _pipeline_syntax_error(exc: BaseException) -> str:
    """xDSL's multi-line caret diagnostic as one line: what is wrong, and at which column."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    where = next((ln.rsplit(":", 1)[-1] for ln in lines if ln.startswith("pass-pipeline:")), None)
    what = lines[-1] if lines else "malformed pipeline"
    hint = " (options are separated by spaces: p{a=1 b=2})" if "expected either a space" in what else ""
    return f"{what} at column {where}{hint}" if where else f"{what}{hint}"


@dataclass
class Pipeline:
    """The passes of one compile, by level, lowering stages included, in order."""

    snn: list[ModulePass]
    loop: list[ModulePass]
    accel: list[ModulePass]

    def all(self) -> list[ModulePass]:
        return [*self.snn, *self.loop, *self.accel]


def _parse(spec: str, available) -> list[ModulePass]:
    try:
        return list(PassPipeline.parse_spec(available, spec).passes) if spec.strip() else []
    except SnncError:
        raise
    except ArgSpecParseError as exc:  # a BaseException in xDSL 0.74, so named explicitly
        raise SnncError(f"--passes {spec!r}: {_pipeline_syntax_error(exc)}") from None
    except Exception as exc:  # unknown pass or option, bad option value (ValueError, ...)
        raise SnncError(f"--passes {spec!r}: {_one_line(exc)}") from None


def build_pipeline(options: CompileOptions, model_name: str = "") -> Pipeline:
    """The user's passes (or the default pipeline) with the lowering stages around them."""
    available = get_all_passes(options.load_passes)
    user = _parse(DEFAULT_PIPELINE if options.passes is None else options.passes, available)
    named = {p.name for p in user}
    stage_options = {
        "quantise": dict(hw=options.hw or "loas", weight_bits=options.weight_bits,
                         weight_scales=options.weight_scales, input_frac_bits=options.input_frac_bits),
        "convert-snn-to-loops": dict(hw=options.hw or "loas", model_name=model_name),
    }

    def stages(names: tuple[str, ...]) -> list[ModulePass]:
        return [available[n]()(**stage_options.get(n, {})) for n in names if n not in named]

    by_level = {level: [p for p in user if pass_level(type(p)) == level] for level in ("snn", "loop", "accel")}
    snn = [p for p in by_level["snn"] if p.name not in SNN_LOWERING]
    snn += stages(SNN_LOWERING) + [p for p in by_level["snn"] if p.name in SNN_LOWERING]
    loop = by_level["loop"] + stages(LOOP_LOWERING)
    lowering_last = [p for p in loop if p.name == "convert-loops-to-accel"]
    loop = [p for p in loop if p.name != "convert-loops-to-accel"] + lowering_last
    accel = stages(ACCEL_LOWERING) + by_level["accel"]
    if options.exit_checks is not None:  # last: no later pass may move instructions past the checks
        accel.append(available[EXIT_CHECKS_PASS]()(output=options.exit_checks))
    return Pipeline(snn, loop, accel)


def lower_module(module: ModuleOp, options: CompileOptions = CompileOptions(), model_name: str = "",
                 **stage_options) -> ModuleOp:
    """Run the pipeline after the frontend on an snn-level module, in place (verified after
    every pass); `stage_options` go to convert-snn-to-loops / quantise by name (e.g.
    sram_bytes, timestep_lanes, input_abs_max)."""
    ctx = make_context()
    for p in build_pipeline(options, model_name).all():
        fields = {k: v for k, v in stage_options.items() if k in getattr(p, "__dataclass_fields__", {})}
        if fields:
            p = dataclasses.replace(p, **fields)
        try:
            p.apply(ctx, module)
        except SnncError:
            raise
        except (VerifyException, DiagnosticException) as exc:
            raise CompileError(f"pass {p.name}: {_one_line(exc)}") from None
        verify_module(module, p.name)
    return module


def build_passes(options: CompileOptions) -> tuple[list[ModulePass], list[ModulePass]]:
    """The user's snn-level passes (what the reference interpreter runs) and accel-level ones."""
    pipeline = build_pipeline(options)
    return ([p for p in pipeline.snn if p.name not in SNN_LOWERING],
            [p for p in pipeline.accel if p.name not in ACCEL_LOWERING])


def _model_name(model: str | Path | object) -> str:
    if isinstance(model, str | Path):
        return Path(model).stem
    graph = getattr(model, "graph", None)
    return getattr(graph, "name", "") or ""


def compile_model(
    model: str | Path | object,
    options: CompileOptions = CompileOptions(),
    ir_stream: TextIO | None = None,
    on_step: Callable[[str], None] | None = None,
) -> CompileResult:
    """Compile an ONNX model (path or ModelProto) to a prog.bin image. `on_step` is called
    with each step's name as it starts (the CLI's progress display)."""
    with fewer_collections(full_every=IR_FULL_EVERY):
        result = _compile(model, options, ir_stream, on_step)
    if result.kept_loop_module is None:
        quiet = dataclasses.replace(options, print_ir_after_all=False)

        def rebuild() -> ModuleOp:
            with fewer_collections(full_every=IR_FULL_EVERY):
                return _compile(model, quiet, None, None, loop_level_only=True)

        result.rebuild_loop_module = rebuild
    return result


def _compile(model, options: CompileOptions, ir_stream: TextIO | None, on_step,
             loop_level_only: bool = False) -> CompileResult | ModuleOp:
    """The pipeline; with `loop_level_only`, stopped where the final lowering would start,
    returning the loop-level module."""
    from snnc.backend.binformat import write_program
    from snnc.passes.encode import encode
    from snnc.backend.hwconfig import load_hw

    if not 2 <= options.weight_bits <= 16:
        raise SnncError(f"--weight-bits {options.weight_bits}: expected 2..16")
    load_hw(options.hw)  # a bad --hw fails before any work is done
    ctx = make_context()
    ir_stream = ir_stream or sys.stderr
    steps: list[str] = []
    verifier = IncrementalVerifier()
    seconds: dict[str, list[float]] = {}  # step -> [its work, its verification], CPU seconds
    started = [time.process_time()]

    def timed(step: str, work: float, verification: float) -> None:
        total = seconds.setdefault(step, [0.0, 0.0])
        total[0] += work
        total[1] += verification

    def checkpoint(step: str, module: ModuleOp) -> None:
        verifying = time.process_time()
        verify_module(module, step, verifier)
        timed(step, verifying - started[0], time.process_time() - verifying)
        steps.append(step)
        if options.print_ir_after_all:
            ir_stream.write(f"// -----// IR after {step} //----- //\n")
            ir_stream.write(print_ir(module, elide=options.elide_constants))

    def starting(step: str) -> None:
        if on_step is not None:
            on_step(step)
        started[0] = time.process_time()

    def run(p: ModulePass, module: ModuleOp) -> None:
        starting(p.name)
        try:
            p.apply(ctx, module)
        except SnncError:
            raise
        except (VerifyException, DiagnosticException) as exc:
            raise CompileError(f"pass {p.name}: {_one_line(exc)}") from None
        checkpoint(p.name, module)

    pipeline = build_pipeline(options, _model_name(model))

    # 1. Frontend
    starting("import")
    module = import_model(model, options)
    checkpoint("import-onnx", module)
    # 2-4. snn-level passes, quantise, convert-snn-to-loops
    snn_module = None
    for p in pipeline.snn:
        if p.name == "quantise" and snn_module is None:
            snn_module = module.clone()  # cheap: attributes (weights) are shared, not copied
        run(p, module)
    # 5-10. loop-level passes, tile-sizes, hoist-loads, sram-alloc, dram-alloc, convert-loops-to-accel
    loop_module = None
    for p in pipeline.loop:
        if p.name == "convert-loops-to-accel":
            if loop_level_only:
                return module
            if options.keep_loop_module:
                loop_module = module.clone()
        run(p, module)
    if loop_level_only:  # no final lowering in this pipeline
        return module
    # 11-12. insert-barriers, accel-level passes
    for p in pipeline.accel:
        run(p, module)
    # 13. Backend
    starting("encode")
    image = encode(module, verify=False)  # verified by the checkpoint of the last step
    binary = write_program(image)
    timed("encode", time.process_time() - started[0], 0.0)
    steps.append("encode")
    return CompileResult(snn_module=snn_module or module, kept_loop_module=loop_module, accel_module=module,
                         image=image, binary=binary, steps=steps,
                         step_seconds={step: (work, check) for step, (work, check) in seconds.items()})


def import_to_snn(model: str | Path | object, options: CompileOptions = CompileOptions()) -> ModuleOp:
    """Frontend plus the snn-level passes: the IR the reference interpreter runs."""

    ctx = make_context()
    module = import_model(model, options)
    verify_module(module, "import-onnx")
    for p in build_passes(options)[0]:
        p.apply(ctx, module)
        verify_module(module, p.name)
    return module


__all__ = [
    "CompileOptions", "CompileResult", "compile_model", "import_to_snn", "print_ir",
    "DEFAULT_PIPELINE", "SCHEDULES", "schedule_passes", "LOWERING_PASSES", "build_pipeline", "lower_module",
]
