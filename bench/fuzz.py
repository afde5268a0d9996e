"""Long fuzzer of `snnc run`: mutated prog.bin files, bad input files, mutated hardware configs.

    python bench/fuzz.py                      # 100,000 cases on 2 workers, summary table on stdout
    python bench/fuzz.py --cases 5000 --seed 3
    python bench/fuzz.py --replay 12345       # run one case in this process: its category, outcome and detail

A binary case runs the reader, the validator and the simulator in-process (`read_program` +
`simulate`, what `snnc run` does, without the files); every CLI_EVERY-th binary case, and every
input and config case, runs the CLI itself in-process (`snnc run prog.bin --input in.npz
--output out.npz`, with SNNC_DEBUG so that an internal error raises and is classified with its
traceback; the exit code, the one-line stderr and the absence of a partial output are checked).
A case is:
  * a binary mutant (bench/fuzz_cases.py `mutate_binary`) of a program compiled from a zoo
    model: byte edits of the stored file with the CRCs left as they are ("bytes"), the same
    with every CRC recomputed ("bytes+crc"), or field-level edits of the decoded sections
    stored with correct CRCs ("field"); run on inputs that fit its (mutated) descriptors;
  * a bad input file (`bad_input_file`) for a valid program ("input"), 1 case in 25;
  * a mutated hardware config (`mutate_toml`): parsed, and when it parses a small model is
    compiled for it and run ("config"), 1 case in 200 (a compile costs ~50 binary cases).
Outcomes: ok (exit 0), clean (exit 1 with one `snnc: error:` line on stderr and no output
file left), or a defect: any other exception or exit code, a second line or a traceback on
stderr, an output file left behind by a failed run, a MemoryError (each worker runs under
an address-space limit of --memory-gib), a case over --timeout seconds (a hang: a
watchdog in the parent kills the worker and starts a new one), or a worker whose resident
memory passed --rss-gib during a case.
Exit status 0 iff there was no defect and no hang.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import io
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("snnc_bench_fuzz_cases", HERE / "fuzz_cases.py")
fuzz_cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_cases)

# (zoo model, build options, pass pipeline): small programs that together use every opcode,
# every storage format and the fused / time-batched / baseline-dataflow schedules
BASES = (
    ("mlp", {}, None),
    ("mlp", {}, "spike-pack"),
    ("mlp", {}, "time-batch{timesteps=1},layer-fuse"),
    ("mlp", {}, "loop-reorder{dataflow=op}"),
    ("vgg-small", {"timesteps": 2}, None),
    ("vgg-small", {"timesteps": 2}, "spike-pack"),
    ("sew-resnet18-dvs", {"input_scale": 0.0625, "timesteps": 2}, None),
    ("sew-resnet18-dvs", {"input_scale": 0.0625, "timesteps": 2, "residual": "or"}, "spike-pack,layer-fuse"),
)
# the MLP programs simulate ~5-10x faster than the conv ones: they take 7 of every 8 cases
BASE_ROTATION = (0, 1, 2, 3) * 7 + (4, 5, 6, 7)
INPUT_EVERY, CONFIG_EVERY, CLI_EVERY = 25, 200, 10
TIMING_SHARE = 0.25  # simulations with the timing model (the rest functional, like --functional)
MAX_STARTUP_DEATHS = 5
CATEGORIES = ("bytes", "bytes+crc", "field", "input", "config")


def build_bases() -> list[tuple[str, bytes, dict]]:
    """(label, prog.bin, valid inputs) per entry of BASES."""
    from snnc.compiler.pipeline import CompileOptions, compile_model
    from snnc.compiler.zoo import build

    out = []
    for name, options, passes in BASES:
        model, inputs = build(name, **options)
        result = compile_model(model, CompileOptions(passes=passes))
        out.append((f"{name}{'/' + passes if passes else ''}", result.binary, inputs))
    return out


class Context:
    """What a worker needs to run any case: the bases, decoded once, and a scratch folder."""

    def __init__(self, bases, seed: int, scratch: Path):
        from snnc.backend.binformat import read_program
        from snnc.backend.hwconfig import PRESET_DIR

        self.bases = [(label, data, inputs, read_program(data)) for label, data, inputs in bases]
        self.seed = seed
        self.scratch = scratch
        self.hw_text = (PRESET_DIR / "loas.toml").read_text()
        self.config_model = None


def _run_cli(ctx: Context, argv: list[str], output: Path) -> tuple[str, str]:
    """(outcome, detail) of `snnc ...argv` in-process."""
    from snnc.compiler.cli import main

    err = io.StringIO()
    if output.exists():
        output.unlink()
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a numpy overflow warning is a defect too
            code = main(argv)
    except MemoryError as exc:
        return "memory", f"MemoryError: {exc}"
    except BaseException as exc:  # SNNC_DEBUG: internal errors raise
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return "defect", f"{type(exc).__name__}: {str(exc)[:120]} [{Path(frame.filename).name}:{frame.name}]"
    text = err.getvalue().strip()
    if code == 0:
        return "ok", ""
    if code != 1:
        return "defect", f"exit {code}: {text[:160]}"
    if not text.startswith("snnc: error: ") or "\n" in text or "Traceback" in text:
        return "defect", f"exit 1 with stderr {text[:160]!r}"
    if output.exists():
        return "defect", "exit 1 left the output file behind"
    return "clean", text[13:]


def category_of(k: int) -> str | None:
    if k % CONFIG_EVERY == 1:
        return "config"
    if k % INPUT_EVERY == 0:
        return "input"
    return None  # a binary mutant; its strategy decides the category


def run_case(ctx: Context, k: int) -> tuple[str, str, str]:
    """(category, outcome, detail) of case k."""
    from snnc.backend.binformat import read_program
    from snnc.backend.errors import SnncError

    rng = np.random.default_rng([ctx.seed, k])
    label, data, inputs, image = ctx.bases[BASE_ROTATION[k % len(BASE_ROTATION)]]
    program, npz, output = ctx.scratch / "p.bin", ctx.scratch / "in.npz", ctx.scratch / "out.npz"
    category = category_of(k)
    functional = rng.random() >= TIMING_SHARE
    if category == "config":
        return category, *_run_config(ctx, rng)
    if category == "input":
        _kind, raw = fuzz_cases.bad_input_file(inputs, rng)
        program.write_bytes(data)
        npz.write_bytes(raw)
    else:
        category, mutant = fuzz_cases.mutate_binary(data, rng, image)
        if k % CLI_EVERY:
            return category, *_run_in_process(mutant, rng, functional)
        program.write_bytes(mutant)
        try:  # inputs that fit the mutant's descriptors, so that it really runs
            inputs = fuzz_cases.inputs_for(read_program(mutant), rng)
        except SnncError:
            pass
        np.savez(npz, **inputs)
    outcome, detail = _run_cli(ctx, ["run", str(program), "--input", str(npz), "--output", str(output),
                                     "--quiet", *(["--functional"] if functional else [])], output)
    return category, outcome, detail


def _run_in_process(mutant: bytes, rng, functional: bool) -> tuple[str, str]:
    """read_program + simulate on inputs that fit the mutant's descriptors: (outcome, detail)."""
    from snnc.backend.binformat import read_program
    from snnc.backend.errors import SnncError
    from snnc.runtime import simulate

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            image = read_program(mutant)
            simulate(image, fuzz_cases.inputs_for(image, rng), functional=functional)
    except SnncError as exc:
        text = str(exc)
        return ("clean", text) if "\n" not in text else ("defect", f"a two-line error {text[:120]!r}")
    except MemoryError as exc:
        return "memory", f"MemoryError: {exc}"
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return "defect", f"{type(exc).__name__}: {str(exc)[:120]} [{Path(frame.filename).name}:{frame.name}]"
    return "ok", ""


def _run_config(ctx: Context, rng) -> tuple[str, str]:
    """A mutated hardware config: compile a small model for it and run the program."""
    from snnc.compiler.frontend.canonical import Network

    if ctx.config_model is None:
        net = Network(timesteps=2)
        x = net.input("x", (1, 8))
        s, _ = net.lif(net.dense(x, np.eye(8, 8) / 2, None, name="fc"), beta=0.5, threshold=0.5, name="lif")
        net.output(s, "y")
        model_path = ctx.scratch / "config-model.onnx"
        model_path.write_bytes(net.to_onnx().SerializeToString())
        np.savez(ctx.scratch / "config-in.npz", x=np.ones((2, 1, 8), np.float32))
        ctx.config_model = model_path
    hw = ctx.scratch / "hw.toml"
    hw.write_text(fuzz_cases.mutate_toml(ctx.hw_text, rng))
    program = ctx.scratch / "config.bin"
    outcome, detail = _run_cli(ctx, ["compile", str(ctx.config_model), "--hw", str(hw), "-o", str(program)], program)
    if outcome != "ok":
        return outcome, detail
    output = ctx.scratch / "config-out.npz"
    return _run_cli(ctx, ["run", str(program), "--input", str(ctx.scratch / "config-in.npz"), "--output",
                          str(output), "--quiet", "--functional"], output)


# ---------------------------------------------------------------------------------------
# workers and the watchdog
# ---------------------------------------------------------------------------------------

def _worker(bases, seed: int, memory_gib: float, tasks, results, current) -> None:
    import resource

    os.environ["SNNC_DEBUG"] = "1"
    limit = int(memory_gib * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with tempfile.TemporaryDirectory(prefix="snnc-fuzz-") as scratch:
        ctx = Context(bases, seed, Path(scratch))
        while True:
            batch = tasks.get()
            if batch is None:
                return
            for k in batch:
                # the start before the case number, and no reset of the start after a batch: the
                # watchdog reads the number, then the start, never a new number with a stale start
                current[1] = time.monotonic()
                current[0] = k
                start = time.perf_counter()
                category, outcome, detail = run_case(ctx, k)
                rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                results.put((k, category, outcome, detail, time.perf_counter() - start, rss_kib))
            current[0] = -1
            results.put(("done", batch))


class Pool:
    """Workers fed batches of case numbers; a case over `timeout` seconds kills its worker."""

    def __init__(self, workers: int, bases, seed: int, memory_gib: float, timeout: float):
        self.ctx = mp.get_context("spawn")
        self.args = (bases, seed, memory_gib)
        self.timeout = timeout
        self.results = self.ctx.Queue()
        self.deaths = 0
        self.slots = [self._start() for _ in range(workers)]

    def _start(self) -> dict:
        tasks = self.ctx.Queue()
        current = self.ctx.Array("d", [-1.0, 0.0], lock=False)
        process = self.ctx.Process(target=_worker, args=(*self.args, tasks, self.results, current), daemon=True)
        process.start()
        return {"process": process, "tasks": tasks, "current": current, "batch": None, "seen": set()}

    def run(self, batches, on_result) -> None:
        pending = collections.deque(batches)
        while pending or any(slot["batch"] is not None for slot in self.slots):
            for slot in self.slots:
                if slot["batch"] is None and pending:
                    slot["batch"], slot["seen"] = pending.popleft(), set()
                    slot["tasks"].put(slot["batch"])
            try:
                message = self.results.get(timeout=0.5)
            except Exception:  # queue.Empty: time to look at the watchdog
                message = None
            if message is not None:
                if message[0] == "done":
                    for slot in self.slots:
                        if slot["batch"] == message[1]:
                            slot["batch"] = None
                else:
                    for slot in self.slots:
                        if slot["batch"] is not None and message[0] in slot["batch"]:
                            slot["seen"].add(message[0])
                    on_result(*message)
            self._watch(pending, on_result)

    def _watch(self, pending, on_result) -> None:
        for i, slot in enumerate(self.slots):
            k, started = slot["current"][0], slot["current"][1]
            dead = not slot["process"].is_alive() and slot["batch"] is not None
            if not dead and (k < 0 or time.monotonic() - started <= self.timeout):
                continue
            slot["process"].kill()
            slot["process"].join()
            self.deaths = self.deaths + 1 if dead and k < 0 else 0
            if self.deaths > MAX_STARTUP_DEATHS:  # a worker that cannot even start: stop, do not loop
                raise RuntimeError(f"{self.deaths} workers died before running a case (see stderr)")
            k = int(k)
            on_result(k, category_label(k), "hang" if not dead else "defect",
                      f"over {self.timeout:g} s" if not dead else "the worker died", time.monotonic() - started, 0)
            rest = [j for j in slot["batch"] if j not in slot["seen"] and j != k]
            if rest:
                pending.appendleft(rest)
            self.slots[i] = self._start()

    def close(self) -> None:
        for slot in self.slots:
            slot["tasks"].put(None)
        for slot in self.slots:
            slot["process"].join(timeout=10)
            if slot["process"].is_alive():
                slot["process"].kill()


def category_label(k: int) -> str:
    return category_of(k) or "binary"


# ---------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------

def summary_table(stats: dict, elapsed: float, cases: int, workers: int) -> str:
    lines = [f"snnc fuzz: {cases:,} cases in {elapsed:,.0f} s on {workers} worker(s) "
             f"({cases / max(elapsed, 1e-9):,.1f} cases/s)", "",
             "| category | cases | ok | clean error | defects | hangs | memory | slowest s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    total = collections.Counter()
    slowest_all = 0.0
    for category in CATEGORIES + ("binary",):
        row = stats.get(category)
        if not row:
            continue
        counts, slowest = row["counts"], row["slowest"]
        n = sum(counts.values())
        total.update(counts)
        slowest_all = max(slowest_all, slowest)
        lines.append(f"| {category} | {n:,} | {counts['ok']:,} | {counts['clean']:,} | {counts['defect']:,} | "
                     f"{counts['hang']:,} | {counts['memory']:,} | {slowest:.2f} |")
    n = sum(total.values())
    lines.append(f"| **total** | {n:,} | {total['ok']:,} | {total['clean']:,} | {total['defect']:,} | "
                 f"{total['hang']:,} | {total['memory']:,} | {slowest_all:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a case counts as a hang")
    parser.add_argument("--memory-gib", type=float, default=8.0, help="address-space limit per worker")
    parser.add_argument("--rss-gib", type=float, default=3.0, help="resident memory that counts as a blow-up")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--replay", type=int, default=None, metavar="K", help="run case K here and print its category, outcome and detail")
    args = parser.parse_args(argv)

    from rich.progress import Progress

    print("compiling the base programs ...", file=sys.stderr)
    bases = build_bases()
    if args.replay is not None:
        os.environ["SNNC_DEBUG"] = "1"
        with tempfile.TemporaryDirectory() as scratch:
            ctx = Context(bases, args.seed, Path(scratch))
            print(run_case(ctx, args.replay))
        return 0
    stats: dict = {}
    defects: dict[str, list[int]] = collections.defaultdict(list)
    rss_limit_kib = args.rss_gib * (1 << 20)
    done = [0]
    start = time.perf_counter()
    with Progress(transient=True) as progress:
        task = progress.add_task("fuzzing", total=args.cases)

        def on_result(k, category, outcome, detail, seconds, rss_kib):
            if outcome in ("ok", "clean") and rss_kib > rss_limit_kib:
                outcome, detail = "memory", f"worker resident memory reached {rss_kib / (1 << 20):.1f} GiB"
            row = stats.setdefault(category, {"counts": collections.Counter(), "slowest": 0.0})
            row["counts"][outcome] += 1
            row["slowest"] = max(row["slowest"], seconds)
            if outcome not in ("ok", "clean"):
                defects[f"{outcome}: {detail}"].append(k)
            progress.advance(task)
            done[0] += 1
            if not sys.stderr.isatty() and done[0] % 10_000 == 0:  # a log file sees no bar
                print(f"{done[0]:,} cases, {sum(map(len, defects.values()))} defects, "
                      f"{time.perf_counter() - start:,.0f} s", file=sys.stderr, flush=True)

        pool = Pool(args.workers, bases, args.seed, args.memory_gib, args.timeout)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            cases = list(range(args.cases))
            pool.run([cases[i:i + args.batch] for i in range(0, len(cases), args.batch)], on_result)
        except KeyboardInterrupt:  # stopped early: the summary of the cases that ran
            print(f"interrupted after {done[0]:,} of {args.cases:,} cases", file=sys.stderr)
        finally:
            pool.close()
    elapsed = time.perf_counter() - start
    print(summary_table(stats, elapsed, done[0], args.workers))
    print(f"\nbases: {', '.join(label for label, _, _ in bases)}; seed {args.seed}; timeout {args.timeout:g} s; "
          f"memory limit {args.memory_gib:g} GiB address space, {args.rss_gib:g} GiB resident")
    if defects:
        print("\ndistinct defects (replay one with --replay K):")
        for key, ks in sorted(defects.items(), key=lambda item: -len(item[1])):
            print(f"  {len(ks):>6} x {key}  (cases {', '.join(map(str, ks[:5]))})")
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
