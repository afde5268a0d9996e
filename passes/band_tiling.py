"""Row bands, for tile-sizes (passes/tile_sizes.py): a whole-map reduction too large for the
SRAM streamed in row bands (`stream_in_bands`), and the band height of a fused kernel
(layer-fuse) chosen by least DRAM traffic, its members' state held on chip where it fits
(`plan_fused`). Not a pass."""

from __future__ import annotations

from functools import partial

from xdsl.dialects import func, scf
from xdsl.dialects.builtin import IntAttr, MemRefType, ModuleOp

from snnc.backend import isa
from snnc.backend.errors import CompileError
from snnc.backend.isa import Format
from snnc.dialects import tile
from snnc.passes.footprints import (
    buffer_bytes, buffer_of, infer_buffer_types, members, own_buffers, set_buffer_type, type_bytes,
)
from snnc.passes.fuse_nest import BAND_CAP_ATTR
from snnc.passes.loop_module import interleaved, layer_table
from snnc.passes.loopnest import Loop, const_value, loops_in, set_step, upper
from snnc.passes.nest_run import evaluate
from snnc.passes.synapse_split import Part, split_synapse
from snnc.passes.loop_walk import Counts, Walk
from snnc.passes.tile_plan import (
    TiledKernel, align, buffer_copies, channel_options, most_rows, state_transfers,
)


def _whole_map(layer) -> bool:
    g = layer.get
    return (g("kh"), g("kw")) == (g("in_h"), g("in_w")) and g("in_h") > 1 and (g("stride_h"), g("stride_w")) == (1, 1) \
        and not any(g(p) for p in ("pad_top", "pad_left", "pad_bottom", "pad_right")) \
        and (g("dil_h"), g("dil_w")) == (1, 1)


def stream_in_bands(module: ModuleOp, k: TiledKernel, layers, timesteps: int) -> bool:
    """A kernel whose one synapse is a whole-map kernel (a flattened dense layer) that fits in no
    tiling streams its reduction in row bands, dense weights and inputs through shared band
    buffers (synapse_split). The band: the most rows that fit at one output row, the most
    channels first. Returns whether it split the synapse."""
    syns = [o for o in k.kernel.body.walk() if isinstance(o, tile.SynOp)]
    if len(syns) != 1 or not _whole_map(layers[syns[0].layer_symbol]):
        return False
    syn, g = syns[0], layers[syns[0].layer_symbol].get
    weights, inputs = buffer_of(syn.weights), buffer_of(syn.inp)
    lanes = upper(syn.nt)
    in_fmt = Format(g("in_format"))
    for copies in (2, 1):
        for chs in channel_options(k):
            others = sum(buffer_copies(b, copies, 1) * align(max(size, 1))
                         for b, size in k.sizes(chs, 1).items() if b not in (weights, inputs))
            for band in range(g("in_h") - 1, 0, -1):
                band_w = (chs or g("out_cs")) * band * g("kw") * g("in_cs") * g("weight_bytes")
                band_in = isa.tile_bytes(in_fmt, lanes, band * g("in_w") * g("in_cs"), timesteps)
                if others + copies * (align(band_w) + align(band_in)) <= k.available:
                    parts = [Part(r, min(band, g("in_h") - r)) for r in range(0, g("in_h"), band)]
                    split_synapse(module, syn, parts, "rows", shared_buffers=True)
                    infer_buffer_types(k.kernel.body.block, layer_table(module), timesteps)
                    return True
    return False


# --------------------------------------------------------------------------------------
# Fused kernels (layer-fuse): the band height, the rings, each member's row tiles
# --------------------------------------------------------------------------------------


class _Reached(Exception):
    pass


def outer_env(kernel: tile.KernelOp) -> dict:
    """The index values the kernel reads from around it (time-interleave's tb loop and batch
    end), at the first iteration of the loops it is in: @main run up to the kernel, every
    other kernel passed over."""
    env: dict = {}
    block = kernel.parent_block()
    while not isinstance(block.parent_op(), func.FuncOp):
        block = block.parent_op().parent_block()

    def visit(op, _env):
        if op is kernel:
            raise _Reached

    try:
        evaluate(block, env, visit)
    except _Reached:
        pass
    return env


class BandWatch:
    """The fused kernel's nest compiled once for `band_schedule`: its band step variable,
    its members' row loops one tile per band, its first time batch only (the rows are the same
    in every batch), the ring windows and compute ops watched."""

    def __init__(self, kernel: tile.KernelOp, band: Loop):
        self.band = band
        self.fixed = {loop.op.step: loop.upper for loop in loops_in(kernel.body.block) if loop.dim == "m"}
        tb = _batch_loop(kernel)
        if tb is not None:
            self.fixed.update({tb.op.lb: tb.lower, tb.op.ub: tb.lower + 1})
        self.env = outer_env(kernel)
        self.walk = Walk(kernel, None, (band.op.step, *self.fixed), self._probe)

    def run(self, rows: int) -> tuple[dict, dict]:
        self.written, self.oldest, self.live, self.spans, self.last = {}, {}, {}, {}, -1
        self.walk.run(Counts(), {**self.fixed, self.band.op.step: rows}, self.env)
        return self.live, self.spans

    def _at(self, position: int) -> None:
        if position < self.last:  # the bands start again (the next batch element or time batch)
            self.written.clear()
            self.oldest.clear()
        self.last = position

    def _probe(self, op):
        band = self.band.iv
        if isinstance(op, tile.StoreOp) and isinstance(op.dst.owner, tile.AllocOp):
            return partial(self._store, op.dst.owner), (band, op.row0, op.rows)
        if isinstance(op, tile.LoadOp) and isinstance(op.src.owner, tile.AllocOp):
            return partial(self._load, op.src.owner), (band, op.row0, op.rows)
        if isinstance(op, tile.COMPUTE_OPS):
            member = op.parent_op()
            while not isinstance(member, tile.KernelOp):
                member = member.parent_op()
            return partial(self._compute, member), (band, op.rows)
        return None

    def _store(self, ring, position: int, row0: int, count: int) -> None:
        self._at(position)
        self.written[ring] = max(self.written.get(ring, 0), row0 + count)

    def _load(self, ring, position: int, row0: int, count: int) -> None:
        self._at(position)
        if count:
            key = (ring, position)
            first = self.oldest[key] = min(self.oldest.get(key, row0), row0)
            self.live[ring] = max(self.live.get(ring, 0), self.written.get(ring, 0) - first, row0 + count - first)

    def _compute(self, member, position: int, count: int) -> None:
        self._at(position)
        self.spans[member] = max(self.spans.get(member, 0), count)


def band_schedule(kernel: tile.KernelOp, band: Loop, rows: int, watch: BandWatch | None = None) -> tuple[dict, dict]:
    """Run the fused kernel with bands of `rows` (each member one row tile per band): the rows
    each ring must hold (the most from the oldest row a band still reads to the newest
    written), and each member's most rows in one band (`watch`: the kernel's BandWatch, if the
    caller has it)."""
    return (watch or BandWatch(kernel, band)).run(rows)


def plan_fused(kernel: tile.KernelOp, layers, timesteps: int, available: int) -> None:
    """The band height with the least DRAM traffic (then the tallest) among those that fit: the
    rings and the held weights and parameters for the whole kernel, and in what is left each
    member's largest row tiles (its channels are one tile). Then, for a time-batched group,
    each member's neuron state on chip for all its tiles when it fits in what is still free."""
    band = next(loop for loop in loops_in(kernel.body.block) if loop.dim == "band")
    cap = kernel.attributes[BAND_CAP_ATTR].value.data if BAND_CAP_ATTR in kernel.attributes else band.upper
    own = own_buffers(kernel)
    rings = [b for b in own if b.role.data.startswith("ring:")]

    reserved = [0]  # neuron state to be held on chip for all its tiles (time-batched groups)
    schedules: dict = {}  # rows -> band_schedule (attempts at one height share it), "watch"
    tiled = {member: TiledKernel(member, layers, timesteps, available) for member in members(kernel)}

    def attempt(rows: int):
        if rows not in schedules:
            if "watch" not in schedules:
                schedules["watch"] = BandWatch(kernel, band)
            watch = schedules["watch"]
            schedules[rows] = band_schedule(kernel, band, rows, watch)
        live, spans = schedules[rows]
        ring_types = {r: _ring_type(r, live.get(r, 1)) for r in rings}
        held = sum(align(max(type_bytes(ring_types[b]) if b in ring_types else buffer_bytes(b), 1)) for b in own)
        plans = {}
        for member, k in tiled.items():  # a member's tile sizes do not depend on the SRAM left
            k.available = available - held - reserved[0]
            for copies in (2, 1):
                found = most_rows(k, None, copies, 1, most=max(spans.get(member, 1), 1))
                if found is not None:
                    plans[member] = (k, found, copies)
                    break
            else:
                return None, held, member
        return (ring_types, plans), held, None

    limit = max(1, min(cap, band.upper))
    stateful = [] if interleaved(kernel) else members(kernel)  # interleaved: other kernels reuse the SRAM
    for size in sorted(_whole_state_bytes(member, layers) for member in stateful):
        reserved[0] += size  # smallest first: every held byte saves the same traffic
        if size == 0 or attempt(1)[0] is None:
            reserved[0] -= size
    first, held, failed = attempt(1)
    if first is None:
        raise CompileError(f"'{kernel.sym_name.data}': the fused layers do not fit the SRAM even in bands of one "
                           f"row: the rings, weights and parameters held for the group take {held} bytes of "
                           f"{available}, and member '{failed.sym_name.data}' needs more than the rest; start a new "
                           "group there (layer-fuse{boundaries=...})")
    best, compiled = None, None
    for rows in sorted({1, limit, *(1 << i for i in range(limit.bit_length()) if 1 << i <= limit)}):
        plan, held, _ = attempt(rows) if rows > 1 else (first, held, None)
        if plan is None:
            break
        compiled = compiled or traffic_walk(kernel, band)
        cost = dram_traffic(kernel, band, rows, {m: r for m, (_, r, _) in plan[1].items()}, compiled)
        if best is None or cost <= best[0]:
            best = (cost, rows, plan, held)
    _, rows, (ring_types, plans), held = best
    set_step(band, rows)
    for ring, ring_type in ring_types.items():
        set_buffer_type(ring, ring_type)
    tiles_bytes = 0
    for member, (k, member_rows, copies) in plans.items():
        k.set_steps("m", member_rows)
        for buf in k.buffers:
            buf.copies = IntAttr(buffer_copies(buf, copies, 1))
        infer_buffer_types(member.body.block, layers, timesteps)
        tiles_bytes = max(tiles_bytes, k.total(None, None, copies, 1))
    free = available - held - tiles_bytes
    if interleaved(kernel):  # the kernels run between its batches reuse its SRAM: state via DRAM
        return
    for member in sorted(plans, key=lambda m: _whole_state_bytes(m, layers)):
        free -= _hold_member_state(kernel, member, free)


def _whole_state_bytes(member: tile.KernelOp, layers) -> int:
    """A time-batched member's neuron state for its whole output (v and s_prev, int32), or 0."""
    for op in state_transfers(member):
        for inner in op.walk():
            if isinstance(inner, tile.LoadOp) and isinstance(inner.src.owner, tile.MapOp):
                return align(type_bytes(inner.src.type))
    return 0


def traffic_walk(kernel: tile.KernelOp, band: Loop) -> Walk:
    """The fused kernel's nest compiled for `dram_traffic`: its band and member row steps and
    its time-batch bounds variable."""
    steps = [loop.op.step for member in members(kernel) for loop in loops_in(member.body.block) if loop.dim == "m"]
    tb = _batch_loop(kernel)
    return Walk(kernel, None, (band.op.step, *steps, *((tb.op.lb, tb.op.ub) if tb is not None else ())))


def dram_traffic(kernel: tile.KernelOp, band: Loop, rows: int, member_rows: dict,
                 compiled: Walk | None = None) -> int:
    """DRAM bytes the fused kernel's map loads and stores move with bands of `rows` rows and
    each member's row tiles (constants are loaded once whatever the band); `compiled`: its
    `traffic_walk`, if the caller has it."""
    fixed = {band.op.step: rows}
    for member, step in member_rows.items():
        for loop in loops_in(member.body.block):
            if loop.dim == "m":
                fixed[loop.op.step] = step
    env = outer_env(kernel)
    tb = _batch_loop(kernel)
    compiled = compiled or traffic_walk(kernel, band)

    def walk(fixed: dict) -> int:
        counts = Counts()
        compiled.run(counts, fixed, env)
        return counts.dram_read + counts.dram_write - counts.constant_read

    if tb is None or tb.trips <= 3:
        return walk(fixed)

    def batch(start: int) -> int:  # the time batch at `start` alone
        return walk({**fixed, tb.op.lb: start, tb.op.ub: start + 1})

    # The batches between the first (no state to load) and the last (no state to store, maybe
    # fewer timesteps) move the same bytes: walk one of them.
    last = tb.lower + (tb.trips - 1) * tb.step
    return batch(tb.lower) + (tb.trips - 2) * batch(tb.lower + tb.step) + batch(last)


def _batch_loop(kernel: tile.KernelOp) -> Loop | None:
    """The fused kernel's time-batch loop, when its bounds are constants that only it reads (a
    walk may then run chosen batches by fixing them), else None."""
    tb = next((loop for loop in loops_in(kernel.body.block) if loop.dim == "tb"), None)
    if tb is None or not all(const_value(v) is not None and v.has_one_use() for v in (tb.op.lb, tb.op.ub)):
        return None
    return tb


def _hold_member_state(kernel: tile.KernelOp, member: tile.KernelOp, free: int) -> int:
    """A time-batched member's neuron state kept on chip between batches when it fits in `free`:
    the map time-batch spills it to moves from DRAM into SRAM for the whole kernel
    (`tile.alloc "state:<layer>"`, addressed like a ring of all its rows), so the state
    loads and stores become MOVEs. Returns the bytes it took."""
    transfers = state_transfers(member)
    spills = {inner.src.owner for op in transfers for inner in op.walk()
              if isinstance(inner, tile.LoadOp) and isinstance(inner.src.owner, tile.MapOp)}
    if len(spills) != 1:
        return 0
    spill = spills.pop()
    planes, batch, height, width, cs = spill.result.type.get_shape()
    held = MemRefType(spill.result.type.element_type, [planes, batch, height, width, cs], memory_space=tile.SRAM)
    need = align(type_bytes(held))
    if need > free:
        return 0
    buf = tile.AllocOp(f"state:{spill.label.data.removesuffix('.state')}", held)
    kernel.body.block.insert_op_before(buf, next(o for o in kernel.body.block.ops if isinstance(o, scf.ForOp)))
    spill.result.replace_all_uses_with(buf.result)
    spill.detach()
    spill.erase()
    return need


def _ring_type(ring: tile.AllocOp, rows: int) -> MemRefType:
    planes, one, _, width, cs = ring.result.type.get_shape()
    return MemRefType(ring.result.type.element_type, [planes, one, max(rows, 1), width, cs], memory_space=tile.SRAM)
