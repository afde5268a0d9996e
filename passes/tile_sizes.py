"""tile-sizes: choose each kernel's tile shape and buffer copies so that it fits the SRAM.

CONTRACT
  Requires: loop-level IR (after convert-snn-to-loops and the loop rewrites).
  Guarantees: in every kernel, the steps of the output-channel loop (`n`) and the
    output-row loop (`m`) are set, and every tile.alloc has its `copies` and the type
    of its largest tile (passes/footprints.py), so that the kernel's buffers fit the
    SRAM left free by data held across kernels (`tile.reserved` on the kernel, bytes).
    A time-batched layer keeps its neuron state on chip when it can (no more output
    tiles than copies of the state, or one copy per tile in the SRAM left free), and
    the state's DRAM transfers go; otherwise they stay.
    Loops marked `tile.fixed` keep the step they have (a user's choice). Values are
    unchanged. A kernel that fits under no tiling is a CompileError naming the ONNX
    node, the largest buffer and the bytes needed against the bytes available.
  The heuristic (replace it with your own pass, or fix loops per layer with
  `tile.fixed`): per-visit buffers double-buffered (copies = 2) so transfers overlap
  compute, and weights too when there are several channel tiles (the next tile's
  weights load during this one); the most output channels, then the most rows that
  fit; under FTP (t parallel over the TPPE lanes) the row count with the fewest TPPE
  rounds (`pe_array.visit_rounds`), the most rows on ties. Then single buffers, then
  single weights.
  Options: none (the SRAM size and PE count come from the module's hw config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import math

from xdsl.context import Context
from xdsl.dialects import scf
from xdsl.dialects.builtin import IntAttr, IntegerAttr, MemRefType, ModuleOp
from xdsl.passes import ModulePass

from snnc.backend.errors import CompileError
from snnc.runtime.pe_array import visit_rounds
from snnc.dialects import tile
from snnc.passes.footprints import (
    buffer_bytes,
    infer_buffer_types,
    kernel_buffers,
    largest_tiles,
    shape_bytes,
    tile_ops,
    members,
    own_buffers,
    role,
    set_buffer_type,
    type_bytes,
)
from snnc.passes.loop_module import kernels, layer_table, module_hw, module_timesteps
from snnc.backend import isa
from snnc.backend.isa import Format
from snnc.passes.footprints import buffer_of
from snnc.passes.layer_fuse import BAND_CAP_ATTR
from snnc.passes.synapse_split import Part, split_synapse
from snnc.passes.loopnest import Loop, evaluate, loops_in, set_step, upper

SRAM_ALIGN = 16  # bytes; every SRAM buffer starts on a bank word
FIXED_ATTR = "tile.fixed"  # on a loop: its step is the user's, not the heuristic's
RESERVED_ATTR = "tile.reserved"  # on a kernel: SRAM bytes held by data that outlives it


def align(value: int, to: int = SRAM_ALIGN) -> int:
    return (value + to - 1) // to * to


def buffer_copies(buf: tile.AllocOp, copies: int, weight_copies: int) -> int:
    """Copies of a buffer under a plan: none if it never rotates, `weight_copies` if it rotates
    over output-channel tiles only (weights), else `copies` (per-visit and per-tile buffers)."""
    dims = buf.rotate_dims
    if not dims:
        return 1
    return weight_copies if dims == ("n",) else copies


def reserved_bytes(kernel: tile.KernelOp) -> int:
    attr = kernel.attributes.get(RESERVED_ATTR)
    return attr.value.data if isinstance(attr, IntegerAttr) else 0


def kernel_layer_name(kernel: tile.KernelOp) -> str:
    return kernel.sym_name.data


@dataclass
class _Kernel:
    """A kernel under consideration: its tiled loops and a way to size a plan."""

    kernel: tile.KernelOp
    layers: dict
    timesteps: int
    available: int

    def __post_init__(self):
        self.by_dim: dict[str, list[Loop]] = {}
        for loop in loops_in(self.kernel.body.block):  # a kernel may run several nests (op: one per k-chunk)
            self.by_dim.setdefault(loop.dim, []).append(loop)
        self.n: Loop | None = self.by_dim.get("n", [None])[0]
        self.m: Loop | None = self.by_dim.get("m", [None])[0]
        self.t: Loop | None = self.by_dim.get("t", [None])[0]
        self.buffers = kernel_buffers(self.kernel)
        self.ops = tile_ops(self.kernel.body.block)
        self.cache: dict = {}

    def set_steps(self, dim: str, step: int) -> None:
        for loop in self.by_dim.get(dim, []):
            set_step(loop, step)

    def sizes(self, chs: int | None, rows: int | None) -> dict[tile.AllocOp, int]:
        steps = {}
        if chs is not None:
            steps.update({loop.op: chs for loop in self.by_dim.get("n", [])})
        if rows is not None:
            steps.update({loop.op: rows for loop in self.by_dim.get("m", [])})
        key = (chs, rows)
        if key not in self.cache:
            shapes = largest_tiles(self.kernel.body.block, self.layers, self.timesteps, steps, self.ops)
            self.cache[key] = {buf: shape_bytes(shapes[buf]) if buf in shapes else 1 for buf in self.buffers}
        return self.cache[key]

    def total(self, chs: int | None, rows: int | None, copies: int, weight_copies: int) -> int:
        return sum(buffer_copies(buf, copies, weight_copies) * align(max(size, 1))
                   for buf, size in self.sizes(chs, rows).items())

    def fits(self, chs, rows, copies, weight_copies) -> bool:
        return self.total(chs, rows, copies, weight_copies) <= self.available


def _fixed(loop: Loop | None) -> bool:
    return loop is None or FIXED_ATTR in loop.op.attributes


def _most_rows(k: _Kernel, chs: int | None, copies: int, weight_copies: int, most: int = 0) -> int | None:
    """The most output rows (up to `most`, if given) that fit with `chs` channels (sizes grow
    with rows), or None."""
    if _fixed(k.m):
        return (k.m.step if k.m else None) if k.fits(chs, None, copies, weight_copies) else None
    lo, hi = 1, most or k.m.upper - k.m.lower
    if not k.fits(chs, lo, copies, weight_copies):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if k.fits(chs, mid, copies, weight_copies) else (lo, mid - 1)
    return lo


def _channel_options(k: _Kernel) -> list[int | None]:
    """Channel tile sizes, largest first: multiples of 8, and of the fiber slice of a packed output."""
    if _fixed(k.n):
        return [None]
    out_cs = k.n.upper - k.n.lower
    grain = 8
    for op in k.kernel.body.walk():
        if isinstance(op, tile.StoreOp) and isinstance(op.dst.owner, tile.MapOp) and op.dst.owner.slice is not None:
            grain = max(grain, op.dst.owner.slice.data)
    return sorted({(-(-out_cs // parts) + grain - 1) // grain * grain for parts in range(1, out_cs // grain + 1)},
                  reverse=True)


def _row_rounds(height: int, rows: int, width: int, chs: int, pes: int) -> float:
    """TPPE rounds of one channel tile's row tiles (FTP: a stream per output position)."""
    return sum(visit_rounds(min(rows, height - r) * width, chs, pes) for r in range(0, height, rows))


def choose(k: _Kernel, pes: int, out_width: int) -> tuple[int | None, int | None, int, int]:
    """(channels, rows, copies, weight copies) of the first plan that fits (see CONTRACT)."""
    several_tiles = not _fixed(k.n)
    for copies, double_weights in ((2, True), (2, False), (1, False)):
        for chs in _channel_options(k):
            out_cs = None if k.n is None else k.n.upper - k.n.lower
            weight_copies = 2 if double_weights and several_tiles and chs is not None and chs < out_cs else 1
            rows = _most_rows(k, chs, copies, weight_copies)
            if rows is None:
                continue
            if k.t is not None and k.t.parallel and k.n is not None and not _fixed(k.m):
                height = k.m.upper - k.m.lower
                width_chs = chs if chs is not None else k.n.step
                rows = min(range(rows, 0, -1), key=lambda r: _row_rounds(height, r, out_width, width_chs, pes))
            return chs, rows, copies, weight_copies
    return None


@dataclass(frozen=True)
class TileSizes(ModulePass):
    """Choose tile steps (n, m) and buffer copies that fit each kernel in the SRAM."""

    name = "tile-sizes"
    ir_level: ClassVar[str] = "loop"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        hw = module_hw(op)
        layers = layer_table(op)
        timesteps = module_timesteps(op)
        for kernel in kernels(op):
            if members(kernel):
                plan_fused(kernel, layers, timesteps, hw.sram.size_bytes - reserved_bytes(kernel))
                continue
            available = hw.sram.size_bytes - reserved_bytes(kernel)
            k = _Kernel(kernel, layers, timesteps, available)
            out_width = _out_width(kernel, layers)
            plan = choose(k, hw.compute.num_pes, out_width)
            if plan is None and stream_in_bands(op, k, layers, timesteps):
                layers = layer_table(op)  # the bands' descriptors
                k = _Kernel(kernel, layers, timesteps, available)
                plan = choose(k, hw.compute.num_pes, out_width)
            if plan is None:
                raise CompileError(_no_fit_message(k))
            chs, rows, copies, weight_copies = plan
            if chs is not None and not _fixed(k.n):
                k.set_steps("n", chs)
            if rows is not None and not _fixed(k.m):
                k.set_steps("m", rows)
            for buf in k.buffers:
                buf.copies = IntAttr(buffer_copies(buf, copies, weight_copies))
            infer_buffer_types(kernel.body.block, layers, timesteps)
            _settle_state(k, copies, available - k.total(None, None, copies, weight_copies))


# --------------------------------------------------------------------------------------
# A reduction too large for the SRAM: row bands
# --------------------------------------------------------------------------------------


def _whole_map(layer) -> bool:
    g = layer.get
    return (g("kh"), g("kw")) == (g("in_h"), g("in_w")) and g("in_h") > 1 and (g("stride_h"), g("stride_w")) == (1, 1) \
        and not any(g(p) for p in ("pad_top", "pad_left", "pad_bottom", "pad_right")) \
        and (g("dil_h"), g("dil_w")) == (1, 1)


def stream_in_bands(module: ModuleOp, k: _Kernel, layers, timesteps: int) -> bool:
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
        for chs in _channel_options(k):
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


def band_schedule(kernel: tile.KernelOp, band: Loop, rows: int) -> tuple[dict, dict]:
    """Run the fused kernel with bands of `rows` (each member one row tile per band): the rows
    each ring must hold (the most from the oldest row a band still reads to the newest
    written), and each member's most rows in one band."""
    fixed = {band.op.step: rows}
    for loop in loops_in(kernel.body.block):
        if loop.dim == "m":
            fixed[loop.op.step] = loop.upper
    written: dict = {}
    oldest: dict = {}
    live: dict = {}
    spans: dict = {}
    last = [-1]

    def visit(op, env):
        if isinstance(op, tile.KernelOp):
            evaluate(op.body.block, env, visit, fixed)
            return
        position = env.get(band.iv, -1)
        if position < last[0]:  # the bands start again (the next batch element or time batch)
            written.clear()
            oldest.clear()
        last[0] = position
        if isinstance(op, tile.StoreOp) and isinstance(op.dst.owner, tile.AllocOp):
            ring = op.dst.owner
            written[ring] = max(written.get(ring, 0), env[op.row0] + env[op.rows])
        elif isinstance(op, tile.LoadOp) and isinstance(op.src.owner, tile.AllocOp) and env[op.rows]:
            ring = op.src.owner
            key = (ring, position)
            oldest[key] = min(oldest.get(key, env[op.row0]), env[op.row0])
            live[ring] = max(live.get(ring, 0), written.get(ring, 0) - oldest[key],
                             env[op.row0] + env[op.rows] - oldest[key])
        elif isinstance(op, tile.COMPUTE_OPS):
            member = op.parent_op()
            while not isinstance(member, tile.KernelOp):
                member = member.parent_op()
            spans[member] = max(spans.get(member, 0), env[op.rows])

    evaluate(kernel.body.block, {}, visit, fixed)
    return live, spans


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

    def attempt(rows: int):
        live, spans = band_schedule(kernel, band, rows)
        ring_types = {r: _ring_type(r, live.get(r, 1)) for r in rings}
        held = sum(align(max(type_bytes(ring_types[b]) if b in ring_types else buffer_bytes(b), 1)) for b in own)
        plans = {}
        for member in members(kernel):
            k = _Kernel(member, layers, timesteps, available - held - reserved[0])
            for copies in (2, 1):
                found = _most_rows(k, None, copies, 1, most=max(spans.get(member, 1), 1))
                if found is not None:
                    plans[member] = (k, found, copies)
                    break
            else:
                return None, held, member
        return (ring_types, plans), held, None

    limit = max(1, min(cap, band.upper))
    for size in sorted(_whole_state_bytes(member, layers) for member in members(kernel)):
        reserved[0] += size  # smallest first: every held byte saves the same traffic
        if size == 0 or attempt(1)[0] is None:
            reserved[0] -= size
    first, held, failed = attempt(1)
    if first is None:
        raise CompileError(f"'{kernel.sym_name.data}': the fused layers do not fit the SRAM even in bands of one "
                           f"row: the rings, weights and parameters held for the group take {held} bytes of "
                           f"{available}, and member '{failed.sym_name.data}' needs more than the rest; start a new "
                           "group there (layer-fuse{boundaries=...})")
    best = None
    for rows in sorted({1, limit, *(1 << i for i in range(limit.bit_length()) if 1 << i <= limit)}):
        plan, held, _ = attempt(rows) if rows > 1 else (first, held, None)
        if plan is None:
            break
        cost = dram_traffic(kernel, band, rows, {m: r for m, (_, r, _) in plan[1].items()})
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
    for member in sorted(plans, key=lambda m: _whole_state_bytes(m, layers)):
        free -= _hold_member_state(kernel, member, free)


def _whole_state_bytes(member: tile.KernelOp, layers) -> int:
    """A time-batched member's neuron state for its whole output (v and s_prev, int32), or 0."""
    for op in _state_transfers(member):
        for inner in op.walk():
            if isinstance(inner, tile.LoadOp) and isinstance(inner.src.owner, tile.MapOp):
                return align(type_bytes(inner.src.type))
    return 0


def dram_traffic(kernel: tile.KernelOp, band: Loop, rows: int, member_rows: dict) -> int:
    """DRAM bytes the fused kernel's map loads and stores move with bands of `rows` rows and
    each member's row tiles (constants are loaded once whatever the band)."""
    fixed = {band.op.step: rows}
    for member, step in member_rows.items():
        for loop in loops_in(member.body.block):
            if loop.dim == "m":
                fixed[loop.op.step] = step
    total = [0]

    def visit(op, env):
        if isinstance(op, tile.KernelOp):
            evaluate(op.body.block, env, visit, fixed)
        elif isinstance(op, tile.LoadOp | tile.StoreOp):
            target = op.src if isinstance(op, tile.LoadOp) else op.dst
            if isinstance(target.owner, tile.MapOp):
                width, bits = target.type.get_shape()[-2], target.type.element_type.width.data
                nt = 1 if target.owner.fmt == Format.SPIKE_BITMASK else env[op.nt]  # packed: all-T words
                total[0] += nt * env[op.rows] * width * env[op.chs] * bits // 8

    evaluate(kernel.body.block, {}, visit, fixed)
    return total[0]


def _hold_member_state(kernel: tile.KernelOp, member: tile.KernelOp, free: int) -> int:
    """A time-batched member's neuron state kept on chip between batches when it fits in `free`:
    the map time-batch spills it to moves from DRAM into SRAM for the whole kernel
    (`tile.alloc "state:<layer>"`, addressed like a ring of all its rows), so the state
    loads and stores become MOVEs. Returns the bytes it took."""
    transfers = _state_transfers(member)
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


def _state_transfers(kernel: tile.KernelOp) -> list[scf.IfOp]:
    """The guarded loads and stores of neuron state between time batches (time-batch)."""
    found = []
    for op in kernel.body.walk():
        if isinstance(op, scf.IfOp) and any(
                isinstance(inner, tile.LoadOp | tile.StoreOp) and role(inner.dst if isinstance(inner, tile.LoadOp)
                                                                      else inner.src) == "state"
                for inner in op.walk()):
            found.append(op)
    return found


def _settle_state(k: _Kernel, copies: int, free: int) -> None:
    """Keep the neuron state on chip between time batches when it can be: each output tile's
    state in its own copy when there are no more tiles than copies, or in one SRAM copy per
    tile when those fit in the SRAM left free; else it goes through DRAM (as time-batch wrote)."""
    transfers = _state_transfers(k.kernel)
    if not transfers:
        return
    tiles = math.prod(loop.trips for dim in ("n", "b", "m") for loop in k.by_dim.get(dim, [])[:1])
    state = next(buf for buf in k.buffers if buf.role.data == "state")
    if tiles > copies:
        if tiles * align(max(buffer_bytes(state), 1)) > free:
            return
        state.copies = IntAttr(tiles)
    _drop_transfers(transfers)


def _drop_transfers(transfers: list) -> None:
    """Remove the guarded state loads and stores (and their DRAM maps, now unused)."""
    spill_maps = set()
    for op in transfers:
        for inner in op.walk():
            if isinstance(inner, tile.LoadOp):
                spill_maps.add(inner.src.owner)
        op.detach()
        op.erase()
    for map_op in spill_maps:
        if not map_op.result.uses:
            map_op.detach()
            map_op.erase()


def _out_width(kernel: tile.KernelOp, layers) -> int:
    for op in kernel.body.walk():
        if isinstance(op, tile.SynOp):
            return layers[op.layer_symbol].get("out_w")
    return 1


def _no_fit_message(k: _Kernel) -> str:
    smallest_chs = 8 if not _fixed(k.n) else None
    smallest_rows = 1 if not _fixed(k.m) else None
    sizes = k.sizes(smallest_chs, smallest_rows)
    need = sum(buffer_copies(buf, 1, 1) * align(max(size, 1)) for buf, size in sizes.items())
    biggest = max(sizes, key=sizes.get)
    shape = " x ".join(filter(None, [f"{smallest_rows} row" if smallest_rows else "",
                                     f"{smallest_chs} channels" if smallest_chs else ""])) or "its fixed"
    held = f" (another {reserved_bytes(k.kernel)} bytes hold data of other layers)" if reserved_bytes(k.kernel) else ""
    return (f"'{kernel_layer_name(k.kernel)}': does not fit the SRAM under any tiling: even a {shape} tile needs {need} bytes "
            f"(buffer '{biggest.role.data}' alone {sizes[biggest]}) against {k.available} available{held}")
