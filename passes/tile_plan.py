"""The vocabulary of tile-size choice, shared by tile-sizes (passes/tile_sizes.py) and its
row-band planning (passes/band_tiling.py): a kernel's buffers and their sizes at a given
channel and row step (`TiledKernel`), the heuristic that picks the steps and copies
(`choose`), keeping time-batched state on chip (`settle_state`), and the one-line error of a
kernel that fits under no tiling. Not a pass."""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.dialects import scf
from xdsl.dialects.builtin import IntAttr, IntegerAttr

from snnc.dialects import tile
from snnc.passes.footprints import (
    buffer_bytes, channel_tiles, const_bytes, kernel_buffers, largest_tiles, nested_ops, role, shape_bytes, tile_ops,
)
from snnc.passes.loop_walk import Counts, Walk
from snnc.passes.loopnest import Loop, loops_in, set_step
from snnc.runtime.pe_array import visit_rounds

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
class TiledKernel:
    """A kernel under consideration: its tiled loops and a way to size a plan."""

    kernel: tile.KernelOp
    layers: dict
    timesteps: int
    available: int
    known: dict | None = None  # sizes by (chs, rows), per buffer in `buffers` order, shared with clones of the kernel

    def __post_init__(self):
        self.by_dim: dict[str, list[Loop]] = {}
        for loop in loops_in(self.kernel.body.block):  # a kernel may run several nests (op: one per k-chunk)
            self.by_dim.setdefault(loop.dim, []).append(loop)
        self.n: Loop | None = self.by_dim.get("n", [None])[0]
        self.m: Loop | None = self.by_dim.get("m", [None])[0]
        self.t: Loop | None = self.by_dim.get("t", [None])[0]
        self.buffers = kernel_buffers(self.kernel)
        # per buffer, what its copies follow (buffer_copies): 0 none, 1 the weight copies, 2 the copies
        self.kinds = [0 if not dims else 1 if dims == ("n",) else 2 for dims in (b.rotate_dims for b in self.buffers)]
        self.ops = tile_ops(self.kernel.body.block)
        self.cache: dict = {}
        self.sums: dict = {}  # (chs, rows) -> aligned bytes of the buffers of each kind
        self.walk: Walk | None = None  # the nest compiled for plan_traffic, its n and m steps variable

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
            # a step left as the IR's is the clones' alike only on a loop no plan changes
            known = self.known if (chs is not None or is_fixed(self.n)) and (rows is not None or is_fixed(self.m)) \
                else None
            found = known.get(key) if known is not None else None
            if found is None:
                shapes = largest_tiles(self.kernel.body.block, self.layers, self.timesteps, steps, self.ops)
                found = tuple(shape_bytes(shapes[buf]) if buf in shapes else 1 for buf in self.buffers)
                if known is not None:
                    known[key] = found
            self.cache[key] = dict(zip(self.buffers, found))
        return self.cache[key]

    def total(self, chs: int | None, rows: int | None, copies: int, weight_copies: int) -> int:
        """The bytes of every buffer in its copies (buffer_copies), aligned."""
        sums = self.sums.get((chs, rows))
        if sums is None:
            sums = self.sums[chs, rows] = [0, 0, 0]
            for kind, size in zip(self.kinds, self.sizes(chs, rows).values()):
                sums[kind] += align(max(size, 1))
        return sums[0] + weight_copies * sums[1] + copies * sums[2]

    def fits(self, chs, rows, copies, weight_copies) -> bool:
        return self.total(chs, rows, copies, weight_copies) <= self.available


def is_fixed(loop: Loop | None) -> bool:
    return loop is None or FIXED_ATTR in loop.op.attributes


def most_rows(k: TiledKernel, chs: int | None, copies: int, weight_copies: int, most: int = 0) -> int | None:
    """The most output rows (up to `most`, if given) that fit with `chs` channels (sizes grow
    with rows), or None."""
    if is_fixed(k.m):
        return (k.m.step if k.m else None) if k.fits(chs, None, copies, weight_copies) else None
    lo, hi = 1, most or k.m.upper - k.m.lower
    if not k.fits(chs, lo, copies, weight_copies):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if k.fits(chs, mid, copies, weight_copies) else (lo, mid - 1)
    return lo


def channel_options(k: TiledKernel) -> list[int | None]:
    """Channel tile sizes, largest first: multiples of 8, and of the fiber slice of a packed output."""
    if is_fixed(k.n):
        return [None]
    out_cs = k.n.upper - k.n.lower
    grain = 8
    for op in nested_ops(k.kernel.body.block, tile.StoreOp):
        if isinstance(op.dst.owner, tile.MapOp) and op.dst.owner.slice is not None:
            grain = max(grain, op.dst.owner.slice.data)
    return sorted({(-(-out_cs // parts) + grain - 1) // grain * grain for parts in range(1, out_cs // grain + 1)},
                  reverse=True)


def row_rounds(height: int, rows: int, width: int, chs: int, pes: int) -> float:
    """TPPE rounds of one channel tile's row tiles (FTP: a stream per output position)."""
    return sum(visit_rounds(min(rows, height - r) * width, chs, pes) for r in range(0, height, rows))


def fitting_plans(k: TiledKernel):
    """(channels, most rows, copies, weight copies) of every plan that fits, in the heuristic's
    order of preference: double-buffered before single, then the most channels first."""
    several_tiles = not is_fixed(k.n)
    for copies, double_weights in ((2, True), (2, False), (1, False)):
        for chs in channel_options(k):
            out_cs = None if k.n is None else k.n.upper - k.n.lower
            weight_copies = 2 if double_weights and several_tiles and chs is not None and chs < out_cs else 1
            rows = most_rows(k, chs, copies, weight_copies)
            if rows is not None:
                yield chs, rows, copies, weight_copies


def choose(k: TiledKernel, pes: int, out_width: int) -> tuple[int | None, int | None, int, int]:
    """(channels, rows, copies, weight copies) of the first plan that fits (see CONTRACT)."""
    for chs, rows, copies, weight_copies in fitting_plans(k):
        if k.t is not None and k.t.parallel and k.n is not None and not is_fixed(k.m):
            height = k.m.upper - k.m.lower
            width_chs = chs if chs is not None else k.n.step
            rows = min(range(rows, 0, -1), key=lambda r: row_rounds(height, r, out_width, width_chs, pes))
        return chs, rows, copies, weight_copies
    return None


def least_traffic(k: TiledKernel, pes: int, out_width: int) -> tuple[int | None, int | None, int, int] | None:
    """The plan that moves the fewest DRAM bytes (`plan_traffic`): `choose`'s, or for a channel
    tile size the most rows that fit (double-buffered if those rows fit twice, else single:
    at one channel size, taller row tiles re-read fewer halo rows); ties go to `choose`'s, then
    to more channels. Fewer channel tiles re-read the input fewer times: a channel size whose
    bytes with whole-height row tiles (no halo re-read; a bound) are no fewer than the best
    so far ends the search, smaller sizes having more channel tiles."""
    first = choose(k, pes, out_width)
    if first is None:
        return None
    best, best_bytes = first, plan_traffic(k, first[0], first[1], first[3])
    out_cs = None if k.n is None else k.n.upper - k.n.lower
    whole = None if k.m is None or is_fixed(k.m) else k.m.upper - k.m.lower
    for chs in channel_options(k):
        if whole is not None and plan_traffic(k, chs, whole, 1) >= best_bytes:
            break
        rows = most_rows(k, chs, 1, 1)
        if rows is None or (chs, rows) == first[:2]:
            continue
        several = not is_fixed(k.n) and chs is not None and chs < out_cs
        copies, weight_copies = next(pair for pair in ((2, 2 if several else 1), (2, 1), (1, 1))
                                     if k.fits(chs, rows, *pair))
        traffic = plan_traffic(k, chs, rows, weight_copies)
        if traffic < best_bytes:
            best, best_bytes = (chs, rows, copies, weight_copies), traffic
    return best


def plan_traffic(k: TiledKernel, chs: int | None, rows: int | None, weight_copies: int) -> int:
    """DRAM bytes of the kernel's map loads and stores (feature maps, spilled state) and its
    constant loads with channel tiles of `chs` and row tiles of `rows` (the compiled loop walk);
    with one channel tile in one copy, each constant tile counts once, as hoist-loads leaves it."""
    n_steps = [loop.op.step for loop in k.by_dim.get("n", [])]
    m_steps = [loop.op.step for loop in k.by_dim.get("m", [])]
    if k.walk is None:
        k.walk = Walk(k.kernel, None, (*n_steps, *m_steps))
    fixed = {**dict.fromkeys(n_steps, chs), **dict.fromkeys(m_steps, rows)}
    counts = Counts()
    k.walk.run(counts, {step: value for step, value in fixed.items() if value is not None})
    total = counts.dram_read + counts.dram_write
    one_tile = k.n is None or chs is None or (chs >= k.n.upper - k.n.lower and weight_copies == 1)
    if one_tile:
        steps = {loop.op: chs for loop in k.by_dim.get("n", [])} if chs is not None else {}
        loads = nested_ops(k.kernel.body.block, tile.LoadConstOp)
        once = sum(const_bytes(op, c, n) for op in loads for c, n in channel_tiles(op.ch0, op.chs, steps))
        total += once - counts.constant_read
    return total


def state_transfers(kernel: tile.KernelOp) -> list[scf.IfOp]:
    """The guarded loads and stores of neuron state between time batches (time-batch)."""
    found = []
    for op in nested_ops(kernel.body.block, scf.IfOp):
        if any(
                isinstance(inner, tile.LoadOp | tile.StoreOp) and role(inner.dst if isinstance(inner, tile.LoadOp)
                                                                      else inner.src) == "state"
                for inner in op.walk()):
            found.append(op)
    return found


def settle_state(k: TiledKernel, copies: int, free: int) -> None:
    """Keep the neuron state on chip between time batches when it can be: each output tile's
    state in its own copy when there are no more tiles than copies, or in one SRAM copy per
    tile when those fit in the SRAM left free; else it goes through DRAM (as time-batch wrote)."""
    transfers = state_transfers(k.kernel)
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


def synapse_out_width(kernel: tile.KernelOp, layers) -> int:
    for op in kernel.body.walk():
        if isinstance(op, tile.SynOp):
            return layers[op.layer_symbol].get("out_w")
    return 1


def no_fit_message(k: TiledKernel) -> str:
    smallest_chs = channel_options(k)[-1]  # 8, or a packed output's fiber slice; None when fixed
    smallest_rows = 1 if not is_fixed(k.m) else None
    sizes = k.sizes(smallest_chs, smallest_rows)
    need = sum(buffer_copies(buf, 1, 1) * align(max(size, 1)) for buf, size in sizes.items())
    biggest = max(sizes, key=sizes.get)
    shape = " x ".join(filter(None, [f"{smallest_rows} row" if smallest_rows else "",
                                     f"{smallest_chs} channels" if smallest_chs else ""])) or "its fixed"
    held = f" (another {reserved_bytes(k.kernel)} bytes hold data of other layers)" if reserved_bytes(k.kernel) else ""
    return (f"'{kernel_layer_name(k.kernel)}': does not fit the SRAM under any tiling: even a {shape} tile needs {need} bytes "
            f"(buffer '{biggest.role.data}' alone {sizes[biggest]}) against {k.available} available{held}")
