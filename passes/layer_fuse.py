"""layer-fuse: run consecutive layers depth-first over row bands (STEMS §3.2, §4.2.4).

CONTRACT
  Requires: loop-level IR (after convert-snn-to-loops; before or after time-batch,
    loop-reorder and spike-pack), before tile-sizes.
  Guarantees: each group of consecutive kernels (see `boundaries`) becomes one fused
    kernel that runs
        [tb >] b > band > member 1, member 2, ...
    `band` walks the output rows of the group's last layer; in every band each member
    computes the rows of its output that its consumers in the group need for the band
    and that it has not computed yet (`start`..`end`, in the band's index arithmetic),
    so every layer runs once over its whole map, a band at a time. A feature map made
    and used only inside the group (not a graph input or output, not spike-packed)
    lives in a ring buffer in SRAM (`tile.alloc "ring:<map>"`) that holds only the rows
    its consumers still need: row h in slot h mod rows; it never goes to DRAM. The
    members keep their own per-visit buffers, scoped by a nested `tile.kernel` (their
    SRAM is reused from one member to the next); their parameters and weights move up
    to the fused kernel and are loaded once (STEMS keeps the fused layers' weights on
    chip), so each member's output-channel loop is one tile (`tile.fixed`).
    tile-sizes chooses the band height and sizes the rings. Values are unchanged.
  Kernels that cannot join a group start a new one: a kernel with more than one nest
  (loop-reorder{dataflow=op}), a kernel batched in time differently from the group, a
  kernel that reads whole maps (a dense layer over a flattened map: every earlier map
  would have to be whole in SRAM), and a kernel that would make the group too large for
  the SRAM even in one-row bands (weights and rings estimated). A member's map that is read after the group (or returned) stays in DRAM, and
  the member completes it by the group's last band.
  Options:
    boundaries  comma-separated ONNX node names (a kernel's first layer) that start a
                new group; "" (default) = as few groups as the rules above allow;
                "*" = every layer its own group (no fusion)
    tile_rows   cap on the band height, in output rows of the group's last layer;
                0 (default) = tile-sizes' choice
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import scf
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass

from snnc.backend.errors import CompileError
from snnc.backend.isa import Format
from snnc.dialects import tile
from snnc.passes.footprints import largest_tiles, shape_bytes, type_bytes
from snnc.passes.fuse_nest import consumer_windows, fuse, kernel_reads, kernel_time_batch, kernel_writes
from snnc.passes.loop_module import kernels, layer_table, main_of, module_hw, module_timesteps
from snnc.passes.loopnest import Loop, loops_in, nest_chain


@dataclass(frozen=True)
class LayerFuse(ModulePass):
    """Fuse consecutive layers: depth-first row bands, intermediate maps in SRAM ring buffers."""

    name = "layer-fuse"
    ir_level: ClassVar[str] = "loop"

    boundaries: str = ""
    tile_rows: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.tile_rows < 0:
            raise CompileError(f"layer-fuse: tile_rows={self.tile_rows} must be >= 0")
        table = layer_table(op)
        members = kernels(op)
        names = [k.sym_name.data for k in members]
        every = self.boundaries.strip() == "*"
        starts = set() if every else {b.strip() for b in self.boundaries.split(",") if b.strip()}
        unknown = sorted(starts - set(names) - {table[s].source.data for s in table})
        if unknown:
            raise CompileError(f"layer-fuse: boundaries {unknown} are not layers of the model (layers: {', '.join(names)})")
        if every:
            return
        outputs = set(main_of(op).body.block.last_op.operands)
        estimate = _Estimate(op, members, outputs, module_hw(op).sram.size_bytes - 0)
        for group in _groups(members, starts, table, estimate.fits):
            if len(group) > 1:
                fuse(op, group, outputs, self.tile_rows)


def _sources(kernel: tile.KernelOp, table) -> set[str]:
    return {table[o.layer_symbol].source.data for o in kernel.body.walk() if isinstance(o, tile.COMPUTE_OPS)} \
        | {kernel.sym_name.data}








def _fusable(kernel: tile.KernelOp) -> bool:
    block = kernel.body.block
    inner = block
    tb = [o for o in block.ops if isinstance(o, scf.ForOp)]
    if tb and Loop(tb[0]).dim == "tb":
        inner = tb[0].body.block
    nests = [o for o in inner.ops if isinstance(o, scf.ForOp)]
    dims = [lp.dim for lp in nest_chain(inner)]
    return len(nests) == 1 and "m" in dims and "b" in dims


def _reads_whole_maps(kernel: tile.KernelOp) -> bool:
    """A kernel whose every output row reads all the rows of a multi-row input (a dense layer
    over a flattened map, a global pool): it would make its group one band of whole maps."""
    for load in kernel.body.walk():
        if isinstance(load, tile.LoadOp) and isinstance(load.rows.owner, tile.InputRowsOp):
            rows = load.rows.owner
            if rows.height.data > 1 and rows.k.data >= rows.height.data:
                return True
    return False


def _groups(members: list[tile.KernelOp], starts: set[str], table, fits) -> list[list[tile.KernelOp]]:
    """Consecutive kernels, split at `starts`, at kernels that cannot fuse, where the time
    batching changes, before a kernel that reads whole maps (depth-first bands buy nothing
    there: every earlier map would have to be whole in SRAM), and where the group would no
    longer fit the SRAM in one-row bands."""
    groups: list[list[tile.KernelOp]] = []
    for kernel in members:
        current = groups[-1] if groups else None
        if (current is not None and not (_sources(kernel, table) & starts) and _fusable(kernel)
                and _fusable(current[0]) and kernel_time_batch(kernel) == kernel_time_batch(current[0])
                and not _reads_whole_maps(kernel) and fits(current + [kernel])):
            current.append(kernel)
        else:
            groups.append([kernel])
    return groups


def _read_in_group(value: SSAValue, group: list[tile.KernelOp]) -> bool:
    return any(value in kernel_reads(k) for k in group)


# --------------------------------------------------------------------------------------
# Will a group fit? (held weights + rings at one-row bands + the largest member's tiles)
# --------------------------------------------------------------------------------------


class _Estimate:
    """The SRAM a group needs at its smallest: bands of one row of its last layer."""

    def __init__(self, module: ModuleOp, all_kernels, outputs, sram: int):
        self.module = module
        self.all = all_kernels
        self.outputs = outputs
        self.sram = sram
        self.layers = layer_table(module)
        self.timesteps = module_timesteps(module)

    def fits(self, group: list[tile.KernelOp]) -> bool:
        return self.bytes(group) <= self.sram

    def bytes(self, group: list[tile.KernelOp]) -> int:
        held = sum(_align(type_bytes(b.result.type)) for k in group for b in _held_buffers(k))
        tiles = max(self._member_tiles(k) for k in group)
        return held + tiles + self._rings(group)

    def _member_tiles(self, kernel: tile.KernelOp) -> int:
        steps = {lp.op: 1 for lp in loops_in(kernel.body.block) if lp.dim == "m"}
        shapes = largest_tiles(kernel.body.block, self.layers, self.timesteps, steps)
        return sum(_align(shape_bytes(t)) for b, t in shapes.items() if b not in _held_buffers(kernel))

    def _rings(self, group: list[tile.KernelOp]) -> int:
        writes = [kernel_writes(k) for k in group]
        outside = set().union(*(kernel_reads(k) for k in self.all if k not in group)) | set(self.outputs)
        escapes = [bool(w & outside) for w in writes]
        heights = [_height(k) for k in group]
        windows = {(j, c): consumer_windows(group[j], group[c]) for j in range(len(group)) for c in range(j + 1, len(group))}
        live = band_rows(heights, windows, escapes, 1)
        total = 0
        for j, made in enumerate(writes):
            for m in made:
                readers = [c for c in range(j + 1, len(group)) if m in kernel_reads(group[c])]
                if readers and m not in outside and m not in kernel_reads(group[j]) and m.owner.fmt != Format.SPIKE_BITMASK:
                    t, _, _, width, cs = m.type.get_shape()
                    bits = m.type.element_type.width.data
                    total += _align((kernel_time_batch(group[0]) or t) * live[j] * width * cs * bits // 8)
        return total


def _align(value: int) -> int:
    return (max(value, 1) + 15) // 16 * 16


def _held_buffers(kernel: tile.KernelOp) -> list[tile.AllocOp]:
    return [o for o in kernel.body.block.ops if isinstance(o, tile.AllocOp)
            and (not o.rotate_dims or o.rotate_dims == ("n",))]


def _height(kernel: tile.KernelOp) -> int:
    return next(lp for lp in loops_in(kernel.body.block) if lp.dim == "m").upper


def _python_window_end(end: int, k: int, stride: int, pad: int, dilation: int, height: int) -> int:
    return min(height, max(0, (end - 1) * stride - pad + (k - 1) * dilation + 1))


def band_rows(heights: list[int], windows: dict, escapes: list[bool], rows: int) -> list[int]:
    """Per member: the most rows of its output live at once when the group runs in bands of
    `rows` rows of its last member (the band arithmetic of the fused kernel, in Python)."""
    last = len(heights) - 1

    def ends(band_start: int) -> list[int]:
        out = [0] * len(heights)
        out[last] = min(band_start + rows, heights[last])
        for j in range(last - 1, -1, -1):
            need = [_python_window_end(out[c], *w) for c in range(j + 1, len(heights)) for w in windows[(j, c)]]
            out[j] = max(need) if need else heights[j]
            if escapes[j] and out[last] == heights[last]:
                out[j] = heights[j]
        return out

    live = [1] * len(heights)
    previous = [0] * len(heights)
    for band_start in range(0, heights[last], rows):
        now = ends(band_start)
        for j in range(len(heights)):
            reads = [max(0, previous[c] * w[1] - w[2]) for c in range(j + 1, len(heights)) for w in windows[(j, c)]
                     if now[c] > previous[c]]
            if reads:
                live[j] = max(live[j], now[j] - min(reads))
        previous = now
    return live
