"""sram-alloc: give every tile buffer an SRAM offset per copy.

CONTRACT
  Requires: loop-level IR after tile-sizes (every tile.alloc has its copies and type).
  Guarantees: every tile.alloc's `offsets` holds one 16-byte-aligned SRAM offset per
    copy. A kernel's buffers live while the kernel runs (its liveness), so kernels
    reuse the SRAM; the bytes a kernel's `tile.reserved` holds for data that outlives
    it (buffers in @main outside every kernel, e.g. neuron state held across
    time-interleave's loop) are at the top of the SRAM, placed first, and left alone. Within a kernel the
    buffers never overlap. Values are unchanged. A kernel whose buffers exceed its
    SRAM is a CompileError naming the kernel, the buffer and the bytes.
  Policy: consecutive kernels allocate from opposite ends of their SRAM (upwards from
    0, then downwards from the top), so the next kernel's parameters, weights and first
    buffers do not overlap the buffers the previous kernel uses last, and dma-prefetch
    can load them while it runs. Within a kernel: buffers that never rotate (the
    parameter block) first, then those rotating over output-channel tiles only
    (weights, each copy in turn), then the per-visit buffers as sets, copy by copy.
    The set used by the kernel's last visit is the one allocated first (nearest the
    kernel's end of the SRAM, away from where the next kernel starts).
  Options: none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from snnc.dialects.snn import int_array
from snnc.backend.errors import CompileError
from snnc.dialects import tile
from snnc.passes.footprints import buffer_bytes, own_buffers
from snnc.passes.loop_module import kernels, main_of, module_hw
from snnc.passes.loopnest import loops_in
from snnc.passes.tile_plan import SRAM_ALIGN, align, reserved_bytes


class SramPlan:
    """A bump allocator over [base, limit): upwards from base, or downwards from `limit`."""

    def __init__(self, limit: int, descending: bool, where: str, base: int = 0) -> None:
        self.descending = descending
        self.base = base
        self.limit = limit
        self.where = where
        self.top = limit // SRAM_ALIGN * SRAM_ALIGN if descending else base

    def take(self, size: int, role: str) -> int:
        if self.descending:
            self.top = (self.top - max(size, 1)) // SRAM_ALIGN * SRAM_ALIGN
            if self.top < self.base:
                raise CompileError(self._full(role, size))
            return self.top
        addr = self.top
        self.top = align(self.top + max(size, 1))
        if self.top > self.limit:
            raise CompileError(self._full(role, size))
        return addr

    def _full(self, role: str, size: int) -> str:
        return (f"'{self.where}': buffer '{role}' ({size} bytes) does not fit: the kernel's buffers need more "
                f"than the {self.limit - self.base} bytes of SRAM available to it")

    def free(self) -> tuple[int, int]:
        """The part of [base, limit) not taken yet."""
        return (self.base, self.top) if self.descending else (self.top, self.limit)


def visits(kernel: tile.KernelOp, dims: tuple[str, ...]) -> int:
    """Iterations of the kernel's loops over `dims` (the rotation index's range)."""
    return math.prod(loop.trips for loop in loops_in(kernel.body.block) if loop.dim in dims)


def allocate_kernel(kernel: tile.KernelOp, limit: int, descending: bool, base: int = 0) -> None:
    """Place the kernel's own buffers, then each member kernel's in what is left (members
    run one after another, so they share it, from alternate ends)."""
    plan = SramPlan(limit, descending, kernel.sym_name.data, base)
    buffers = own_buffers(kernel)
    offsets: dict[tile.AllocOp, list[int]] = {}
    single = [b for b in buffers if not b.rotate_dims]
    channel = [b for b in buffers if b.rotate_dims == ("n",)]
    rest = [b for b in buffers if b not in single and b not in channel]
    visit_copies = max((b.copies.data for b in rest if "t" in b.rotate_dims), default=1)
    sets = [b for b in rest if b.copies.data == visit_copies]
    own = [b for b in rest if b not in sets]  # e.g. neuron state held per output tile
    for buf in (*single, *channel):
        offsets[buf] = [plan.take(buffer_bytes(buf), buf.role.data) for _ in range(buf.copies.data)]
    set_copies = max((b.copies.data for b in sets), default=0)
    base = [{buf: plan.take(buffer_bytes(buf), buf.role.data) for buf in sets if copy < buf.copies.data}
            for copy in range(set_copies)]
    if sets:
        last = visits(kernel, max((b.rotate_dims for b in sets), key=len)) - 1
        for buf in sets:
            n = buf.copies.data
            offsets[buf] = [base[(i - last) % n][buf] for i in range(n)]
    for buf in own:
        offsets[buf] = [plan.take(buffer_bytes(buf), buf.role.data) for _ in range(buf.copies.data)]
    for buf, placed in offsets.items():
        buf.offsets = int_array(placed)
    lo, hi = plan.free()
    for index, member in enumerate(direct_members(kernel)):
        allocate_kernel(member, hi, index % 2 == 1, lo)


def direct_members(kernel: tile.KernelOp) -> list[tile.KernelOp]:
    out = []
    for op in kernel.body.walk():
        if isinstance(op, tile.KernelOp) and op is not kernel:
            parent = op.parent_op()
            while not isinstance(parent, tile.KernelOp):
                parent = parent.parent_op()
            if parent is kernel:
                out.append(op)
    return out


def _outside_kernels(op) -> bool:
    parent = op.parent_op()
    while parent is not None and not isinstance(parent, tile.KernelOp):
        parent = parent.parent_op()
    return parent is None


@dataclass(frozen=True)
class SramAlloc(ModulePass):
    """Place every tile buffer in SRAM (per kernel; consecutive kernels from opposite ends)."""

    name = "sram-alloc"
    ir_level: ClassVar[str] = "loop"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        size = module_hw(op).sram.size_bytes
        held = SramPlan(size, True, "@main")  # buffers held across kernels (time-interleave's state): at the top
        for buf in [o for o in main_of(op).body.walk() if isinstance(o, tile.AllocOp) and _outside_kernels(o)]:
            buf.offsets = int_array([held.take(buffer_bytes(buf), buf.role.data)])
        for index, kernel in enumerate(kernels(op)):
            allocate_kernel(kernel, size - reserved_bytes(kernel), descending=index % 2 == 1)
