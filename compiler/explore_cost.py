"""The cost model of `snnc explore`: what a schedule costs, from its loop-level IR.

CONTRACT:
  * `LoopBase.build(model, hw)` runs the frontend, quantise, convert-snn-to-loops and the
    schedule-independent loop passes of the default pipeline (SCHEDULE_PREFIX) once; every
    schedule is evaluated on a clone of it.
  * A schedule is a list of `Group`s: consecutive kernels of the base, fused when the group
    has more than one (layer-fuse), all time-batched by `batch` (time-batch; batch = T is no
    batching); a synaptic kernel alone may take a loop order (loop-reorder `order`),
    tile-sizes' least-traffic plan (`tiling` "traffic": tile-sizes{least_traffic}) and another
    dataflow (`dataflow`: loop-reorder{dataflow=ip-seq}).
    `pipeline_string` is its `--passes` string, and the same passes run here.
  * `LoopBase.evaluate(groups, wanted)` runs the schedule's loop-reorder, time-batch and
    layer-fuse passes, then tile-sizes kernel by kernel (`size_kernel`, with its least-traffic
    plan for the groups of tiling "traffic") and hoist-loads, and
    walks the loop nests (passes/loop_walk.count, nest_run.evaluate's semantics) counting, per
    group, the DRAM bytes its DMAs move (maps, weights, neuron-state spills), its DMA
    instructions, the SRAM bytes of ring-buffer moves, and per layer the work of its compute
    ops (output positions, and positions x timesteps). A group with a kernel that fits the
    SRAM under no tiling (tile-sizes' CompileError) is None: infeasible, not penalised; a
    group layer-fuse does not make one kernel is SPLIT (a finer schedule is the same). A
    CompileError of the schedule's passes makes every group None. A Cost pickles (explore
    costs the batches in forked processes).
  * `Calibration.fit(hw, [(costs, report), ...])` fits, per layer, compute cycles, SRAM bytes
    and compute energy as a x positions + b x (positions x timesteps) (least squares, a, b >=
    0) to simulated schedules (the simulator's per-layer report); `Calibration.predict(costs)`
    gives dram_bytes (the count itself), sram_bytes, cycles and energy_pj of any schedule: per
    group the larger of its compute cycles and its DMA cycles (dma-prefetch overlaps them), their
    sum for a layer alone in single visit buffers (nothing to overlap with),
    energy from the hw config's per-bit DRAM/SRAM energy, the calibrated compute energy and the
    static power over the predicted cycles. Figures of groups add up to their schedule's.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from snnc.backend.errors import CompileError
from snnc.dialects import make_context, tile
from snnc.passes.footprints import members, own_buffers
from snnc.passes.loop_module import kernels, layer_table, module_hw, module_timesteps
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import PassPipeline

# The default pipeline's loop passes that every schedule shares, and its accel pass.
SCHEDULE_PREFIX = "compress-weights,loop-reorder{dataflow=ftp}"
SCHEDULE_SUFFIX = "dma-prefetch"
SPLIT = "split"  # a group that layer-fuse made into several kernels: the same as a finer schedule


@dataclass(frozen=True)
class Group:
    """Kernels [start, start + length) of the base, fused if more than one, time batch `batch`;
    a synaptic kernel alone may take a loop order (loop-reorder `order`; "" = the default n > m)
    and a tiling ("" = tile-sizes' heuristic, "traffic" = its least-traffic plan) and a dataflow
    ("" = ftp, the prefix's; "ip-seq": loop-reorder{dataflow=ip-seq})."""

    start: int
    length: int
    batch: int
    order: str = ""
    tiling: str = ""
    dataflow: str = ""

    @property
    def stop(self) -> int:
        return self.start + self.length


def _no_work() -> list[int]:
    return [0, 0]


@dataclass
class Cost:
    """Analytic counts of a group (summed over its kernels)."""

    dram_read: int = 0
    dram_write: int = 0
    dma_ops: int = 0
    ring_bytes: int = 0  # SRAM-to-SRAM moves of fused maps (read and written)
    constant_read: int = 0  # of dram_read: constant loads (weights, parameters)
    serial: bool = False  # a layer alone in single visit buffers: its DMAs cannot overlap its compute
    # per layer symbol: compute work as (output positions, positions x timesteps)
    work: dict[str, list[int]] = field(default_factory=lambda: defaultdict(_no_work))

    def add(self, other: Cost) -> None:
        self.dram_read += other.dram_read
        self.dram_write += other.dram_write
        self.dma_ops += other.dma_ops
        self.ring_bytes += other.ring_bytes
        self.constant_read += other.constant_read
        self.serial = self.serial or other.serial
        for name, (positions, lanes) in other.work.items():
            self.work[name][0] += positions
            self.work[name][1] += lanes

    @property
    def dram_bytes(self) -> int:
        return self.dram_read + self.dram_write


def pipeline_string(names: list[str], groups: list[Group], timesteps: int) -> str:
    """The `--passes` string of a schedule (kernels named by their first layer's ONNX name)."""
    return ",".join([SCHEDULE_PREFIX, *schedule_passes(names, groups, timesteps), SCHEDULE_SUFFIX])


# Loop orders searched per synaptic layer: only the default (n > m: a channel tile's weights
# stay while the rows stream). A Group can take another (loop-reorder `order`, e.g. "m,n,t*":
# rows outermost), but the lowering loads the input tile inside both loops either way, so rows
# outermost only reloads the weights per row tile: measured on sew-resnet18-dvs, it never moved
# fewer DRAM bytes, and searching it cost a run per batch.
ORDERS = ("",)
# Tilings searched per synaptic layer alone: tile-sizes' heuristic (double buffers first, so
# transfers overlap compute) and its least-traffic plan (tile-sizes{least_traffic}: fewer
# channel tiles or taller rows, often single-buffered; on sew-resnet18-dvs at 128 KB the stem's
# input is read 3x instead of 12x).
TILINGS = ("", "traffic")
# Dataflows searched per synaptic layer alone besides FTP: ip-seq (one timestep per visit) holds
# one lane of partial sums instead of FTP's four, so taller row tiles fit and the input's halo
# rows are re-read less (sew-resnet18-dvs at 128 KB: the stem's 2-row tiles read its input 2x,
# not 3x), at the price of the TPPE's lane parallelism. Searched with the least-traffic tiling
# and unbatched only (one run more).
DATAFLOWS = ("", "ip-seq")


def schedule_passes(names: list[str], groups: list[Group], timesteps: int) -> list[str]:
    by_batch: dict[int, list[str]] = defaultdict(list)
    by_order: dict[tuple[str, str], list[str]] = defaultdict(list)
    for g in groups:
        if g.batch < timesteps:
            by_batch[g.batch] += names[g.start:g.stop]
        if g.order or g.dataflow:
            by_order[g.dataflow or "ftp", g.order] += names[g.start:g.stop]
    passes = [f'loop-reorder{{dataflow={d}{_order_option(o)} layers="{",".join(by_order[d, o])}"}}'
              for d, o in sorted(by_order)]
    passes += [f'time-batch{{timesteps={b} layers="{",".join(by_batch[b])}"}}' for b in sorted(by_batch)]
    if any(g.length > 1 for g in groups):
        passes.append(f'layer-fuse{{boundaries="{",".join(names[g.start] for g in groups)}"}}')
    least = [name for g in groups if g.tiling == "traffic" for name in names[g.start:g.stop]]
    if least:
        passes.append(f'tile-sizes{{least_traffic="{",".join(least)}"}}')
    return passes


def _order_option(order: str) -> str:
    return f' order="{order}"' if order else ""


class LoopBase:
    """The loop-level module every schedule of one model and hw config starts from."""

    def __init__(self, module: ModuleOp):
        self.module = module
        self.hw = module_hw(module)
        self.timesteps = module_timesteps(module)
        self.layers = layer_table(module)
        base_kernels = kernels(module)
        self.symbols = [k.sym_name.data for k in base_kernels]
        self.names = [_onnx_name(k, self.layers) for k in base_kernels]
        self.synaptic = [any(isinstance(o, tile.SynOp) for o in k.body.walk()) for k in base_kernels]
        for name in self.names:
            if "," in name or '"' in name:
                raise CompileError(f"explore: layer name {name!r} has a comma or a quote: it cannot be named in "
                                   "a --passes option")
        self.ctx = make_context()
        self._scheduled: tuple[str | None, ModuleOp | None] = (None, None)  # the last schedule's passes run
        # (loop passes, kernel symbol) -> a layer alone's buffer sizes by tiling (TiledKernel.known): the
        # same passes make the same kernel, which the runs of one batch size under each tiling
        self._known_sizes: dict[tuple[str, str], dict] = {}

    @classmethod
    def build(cls, model, hw: str) -> LoopBase:
        from snnc.compiler.pipeline import (
            CompileOptions,
            _model_name,
            build_pipeline,
            import_model,
        )

        options = CompileOptions(hw=hw, passes=SCHEDULE_PREFIX)
        pipeline = build_pipeline(options, _model_name(model))
        ctx = make_context()
        module = import_model(model, options)
        for p in [*pipeline.snn, *(p for p in pipeline.loop if p.name not in _LOWERING_AFTER)]:
            p.apply(ctx, module)
        return cls(module)

    def evaluate(self, groups: list[Group], wanted: set[int] | None = None,
                 keep: bool = False) -> list[Cost | str | None]:
        """Per group: its Cost, None if it does not fit the SRAM, or SPLIT if layer-fuse did not
        make it one kernel (another schedule is the same). Groups not in `wanted` (indices; None =
        all) are not costed (their entry is None). `keep`: the next schedule has the same loop
        passes before layer-fuse (it starts from this one's module after them)."""
        from snnc.passes.hoist_loads import HoistLoads

        passes = [p for p in schedule_passes(self.names, groups, self.timesteps)
                  if not p.startswith("tile-sizes")]  # tile-sizes: kernel by kernel below
        spec = ",".join(p for p in passes if not p.startswith("layer-fuse"))
        if self._scheduled[0] == spec:  # the last schedule had the same passes before layer-fuse
            module = self._scheduled[1]
        else:
            module = self._apply(self.module.clone(), spec)
        self._scheduled = (spec, module.clone() if module is not None else None) if keep else (None, None)
        fuse = ",".join(p for p in passes if p.startswith("layer-fuse"))
        if module is not None and fuse:
            module = self._apply(module, fuse)
        if module is None:
            return [None] * len(groups)
        owner = {}  # base kernel index -> group index
        for gi, g in enumerate(groups):
            owner.update({i: gi for i in range(g.start, g.stop)})
        index = {s: i for i, s in enumerate(self.symbols)}
        outcome: list[Cost | str | None] = [None] * len(groups)
        by_group: dict[int, list[tile.KernelOp]] = defaultdict(list)
        for kernel in kernels(module):
            gi = owner[index[(members(kernel) or [kernel])[0].sym_name.data]]
            if wanted is None or gi in wanted:
                by_group[gi].append(kernel)
            else:  # not costed: out of the way of tile-sizes and hoist-loads
                kernel.detach()
                kernel.erase()
        placed = self._size(module, by_group, groups, outcome, ",".join(passes))
        HoistLoads().apply(self.ctx, module)
        names = {symbol: layer.source.data for symbol, layer in layer_table(module).items()}
        for gi, kernel in placed:
            outcome[gi].add(kernel_cost(kernel, names))
            outcome[gi].serial = not members(kernel) and max(
                (b.copies.data for b in own_buffers(kernel) if "t" in b.rotate_dims), default=2) == 1
        return outcome

    def _apply(self, module: ModuleOp, spec: str) -> ModuleOp | None:
        """The passes of `spec` run on `module`; None if they raise a CompileError."""
        from snnc.passes import get_all_passes

        try:
            for p in PassPipeline.parse_spec(get_all_passes(()), spec).passes if spec else ():
                p.apply(self.ctx, module)
        except CompileError:
            return None
        return module

    def _size(self, module: ModuleOp, by_group: dict, groups: list[Group], outcome: list, passes: str) -> list:
        """tile-sizes, kernel by kernel; a group with a kernel that does not fit is None.
        `passes`: the loop passes that made the module (a layer alone's sizes are shared with
        the same kernel of another run after the same passes)."""
        from snnc.passes.tile_sizes import size_kernel

        layers, placed = layer_table(module), []
        for gi, group_kernels in by_group.items():
            split = groups[gi].length > 1 and len(group_kernels) > 1
            fits = not split
            for kernel in group_kernels if fits else ():
                try:
                    known = None if members(kernel) else self._known_sizes.setdefault((passes, kernel.sym_name.data), {})
                    layers = size_kernel(module, kernel, self.hw, layers, self.timesteps,
                                         groups[gi].tiling == "traffic", known)
                except CompileError:
                    fits = False
            if not fits:
                outcome[gi] = SPLIT if split else None
                for kernel in group_kernels:
                    kernel.detach()
                    kernel.erase()
                continue
            outcome[gi] = Cost()
            placed += [(gi, kernel) for kernel in group_kernels]
        return placed


_LOWERING_AFTER = ("tile-sizes", "hoist-loads", "sram-alloc", "dram-alloc", "convert-loops-to-accel")


def _onnx_name(kernel: tile.KernelOp, layers) -> str:
    for op in kernel.body.walk():
        if isinstance(op, tile.COMPUTE_OPS):
            return layers[op.layer_symbol].source.data
    return kernel.sym_name.data


def kernel_cost(kernel: tile.KernelOp, report_names: dict[str, str]) -> Cost:
    """Walk the kernel's loops once, counting what its DMAs and compute ops do (per layer,
    under the name the simulator's report gives it)."""
    from snnc.passes.loop_walk import count

    cost = Cost()
    count(kernel, report_names, cost)
    return cost


@dataclass(frozen=True)
class Figures:
    """A schedule's figures: simulated (integers), or predicted (cycles and SRAM bytes fractional)."""

    dram_bytes: int
    sram_bytes: float
    cycles: float
    energy_pj: float

    def rounded(self) -> dict:
        return {"dram_bytes": self.dram_bytes, "energy_pj": round(float(self.energy_pj), 3),
                "cycles": int(round(self.cycles))}

    def __add__(self, other: Figures) -> Figures:
        return Figures(self.dram_bytes + other.dram_bytes, self.sram_bytes + other.sram_bytes,
                       self.cycles + other.cycles, self.energy_pj + other.energy_pj)

    def objective(self, name: str) -> float:
        return {"dram": self.dram_bytes, "energy": self.energy_pj, "cycles": self.cycles,
                "edp": self.energy_pj * self.cycles}[name]


def total_cost(costs: list[Cost]) -> Cost:
    total = Cost()
    for c in costs:
        total.add(c)
    return total


@dataclass
class Calibration:
    """Per layer symbol: compute cycles, SRAM bytes (beyond the DMAs' own) and compute energy
    as a x positions + b x (positions x timesteps), fitted by least squares (a, b >= 0) to
    the simulated schedules; with one schedule, b alone."""

    hw: object
    coefficients: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    @classmethod
    def fit(cls, hw, points: list[tuple[list[Cost], dict]]) -> Calibration:
        samples: dict[str, list] = defaultdict(list)  # layer -> [(positions, lanes, cycles, sram, pj)]
        for costs, report in points:
            work = total_cost(costs).work
            for row in report["layers"]:
                if row["name"] in work:
                    breakdown = row.get("energy_breakdown_pj", {})
                    compute_pj = sum(v for k, v in breakdown.items() if k not in ("dram", "sram", "static"))
                    samples[row["name"]].append((*work[row["name"]], row.get("compute_busy_cycles", row["cycles"]),
                                                 max(0, row["sram_bytes"] - row["dram_bytes"]), compute_pj))
        calib = cls(hw)
        for name, rows in samples.items():
            matrix = np.array([r[:2] for r in rows], dtype=float)
            calib.coefficients[name] = {what: _nonneg_fit(matrix, np.array([r[2 + i] for r in rows], dtype=float))
                                        for i, what in enumerate(("cycles", "sram", "pj"))}
        return calib

    def _per_work(self, cost: Cost, what: str) -> float:
        total = 0.0
        for name, (positions, lanes) in cost.work.items():
            a, b = self.coefficients.get(name, {}).get(what, (0.0, 0.0))
            total += a * positions + b * lanes
        return total

    def group_cycles(self, cost: Cost) -> float:
        compute = self._per_work(cost, "cycles")
        bytes_per_cycle = self.hw.dram.bandwidth_gb_s * 1e3 / self.hw.compute.clock_mhz
        dma = cost.dram_bytes / bytes_per_cycle
        return compute + dma if cost.serial else max(compute, dma)

    def predict(self, costs: list[Cost]) -> Figures:
        hw = self.hw
        cycles = sum(self.group_cycles(c) for c in costs)
        total = total_cost(costs)
        sram = total.dram_bytes + 2 * total.ring_bytes + self._per_work(total, "sram")
        sram_pj = sram * 8 * (hw.sram.read_fj_per_bit + hw.sram.write_fj_per_bit) / 2 / 1e3
        dram_pj = (total.dram_read * hw.dram.read_fj_per_bit + total.dram_write * hw.dram.write_fj_per_bit) * 8 / 1e3
        static_pj = hw.energy.static_power_mw * 1e-3 * cycles / (hw.compute.clock_mhz * 1e6) * 1e12
        # unrounded: the figures of groups add up to the figures of their schedule
        return Figures(dram_bytes=total.dram_bytes, sram_bytes=sram, cycles=cycles,
                       energy_pj=dram_pj + sram_pj + self._per_work(total, "pj") + static_pj)


def _nonneg_fit(matrix: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(a, b) >= 0 minimising |matrix @ (a, b) - target|: the unconstrained fit, else the
    better of the two one-coefficient fits."""
    if len(target) >= 2 and np.linalg.matrix_rank(matrix) == 2:
        a, b = np.linalg.lstsq(matrix, target, rcond=None)[0]
        if a >= 0 and b >= 0:
            return float(a), float(b)
    options = []
    for col in (0, 1):
        x = matrix[:, col]
        coef = float(x @ target / (x @ x)) if x @ x else 0.0
        pair = (max(coef, 0.0), 0.0) if col == 0 else (0.0, max(coef, 0.0))
        options.append((float(np.sum((matrix @ np.array(pair) - target) ** 2)), col == 0, pair))
    return min(options)[2]


__all__ = [
    "SCHEDULE_PREFIX",
    "SCHEDULE_SUFFIX",
    "Calibration",
    "Cost",
    "Figures",
    "Group",
    "LoopBase",
    "kernel_cost",
    "pipeline_string",
    "total_cost",
]
