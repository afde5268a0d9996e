"""spike-pack: store spike maps packed and compressed (LoAS §IV-A, Fig. 8), channel-sliced.

CONTRACT
  Requires: loop-level IR (after convert-snn-to-loops), before tile-sizes.
  Guarantees:
    * Every spike map (SPIKE_PLANES) that is not a graph input or output, whose
      producer is a LIF group or a max pool and whose every reader is a synapse, a max
      pool or an add, becomes SPIKE_BITMASK: all T bits of a neuron in one word
      (`memref<B x H x W x Cs x iW, "dram">`), stored as bitmask fibers that drop the
      silent neurons (no spike at any t), one fiber per (batch, channel slice, row):
      the row's W x `slice` words, behind a pointer and a bitmask.
    * Packing is channel-sliced, so a packed layer tiles like any other: tile-sizes
      gives its producer any channel tile that is a whole number of slices; each tile
      moves with one dma.store_bm / dma.load_bm per slice (strided into the
      channel-last SRAM tile).
    * The producer keeps each output tile's words until its last timestep is packed:
      the store moves after the timestep loop (all T bits), and the output buffer
      belongs to the output tile (it rotates over n, b, m). The spikes of a producer
      running in time batches stay spike planes (a batch writes only its timesteps'
      bits of a word).
    * Readers load the words (all T) and their descriptors read SPIKE_BITMASK.
    * With `weights` (default), compress-weights runs too (weights as bitmask fibers).
    * Values are unchanged, unless `mask-single-spike`: neurons firing exactly once
      across T are stored as silent (LoAS §IV-C preprocessing); `snnc verify` reports
      the agreement.
  The simulator moves and counts exactly the compressed bytes, pointers and bitmasks
  included; the report gives `compression_efficiency` per layer.
  Options:
    mask-single-spike  bool, default false
    weights            bool, default true: also compress the weights
    channels           channels per fiber slice (a multiple of 8 dividing the map's
                       stored channels); 0 (default) = all of them up to 128, else the
                       largest of 128, 64, 32, 16, 8 that divides them, made smaller while
                       the producer fits the SRAM in no tile of a whole slice
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, IntAttr, ModuleOp, StringAttr, UnitAttr
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from snnc.backend.errors import CompileError
from snnc.backend.isa import Format, LayerKind
from snnc.dialects import accel, tile
from snnc.passes.compress_weights import CompressWeights
from snnc.passes.convert_snn_to_loops import TILE_DIMS
from snnc.passes.footprints import buffer_of, infer_buffer_types
from snnc.passes.loop_module import kernels, layer_table, main_of, maps, module_hw, module_timesteps
from snnc.passes.loopnest import Loop, const, const_value, enclosing_loops, set_step
from snnc.passes.tile_plan import TiledKernel, is_fixed, most_rows, reserved_bytes

DEFAULT_SLICES = (128, 64, 32, 16, 8)  # a map of up to 128 channels is one slice


def slice_channels(cs: int, wanted: int, windows: set[int]) -> int:
    """Channels per fiber slice: `wanted`, or all of up to 128, or the largest of 128..8 dividing
    them, and in any case dividing every fixed channel window a reader loads (`windows`:
    the k-chunks of op / gust). Fewer, longer fibers cost fewer DMA instructions and
    pointers; smaller slices let the producer tile its channels finer (a layer whose
    weights do not fit the SRAM whole) and readers take channel slices."""
    if wanted:
        if wanted % 8 or cs % wanted or any(w % wanted for w in windows):
            raise CompileError(f"spike-pack: channels={wanted} must be a multiple of 8 dividing the stored channels "
                               f"{cs} and the channel windows its readers load {sorted(windows)}")
        return wanted
    candidates = ([cs] if cs <= DEFAULT_SLICES[0] else []) + list(DEFAULT_SLICES)
    return next(g for g in candidates if cs % g == 0 and not any(w % g for w in windows))


def _readers(map_op: tile.MapOp) -> list[tuple[tile.LoadOp, Operation, str]]:
    """(load, compute op reading its buffer, the descriptor field of that input) per reader."""
    out = []
    for use in map_op.result.uses:
        load = use.operation
        if not isinstance(load, tile.LoadOp) or load.src is not map_op.result:
            continue
        buf = buffer_of(load.dst)
        for u in buf.result.uses:
            op = u.operation
            if isinstance(op, tile.SynOp | tile.PoolOp) and u.index == 0:
                out.append((load, op, "in_format"))
            elif isinstance(op, tile.AddOp) and u.index in (0, 1):
                out.append((load, op, "in_format" if u.index == 0 else "in2_format"))
    return out


def _writer(map_op: tile.MapOp) -> tuple[tile.StoreOp, Operation] | None:
    stores = [u.operation for u in map_op.result.uses if isinstance(u.operation, tile.StoreOp)]
    if len(stores) != 1:
        return None
    buf = buffer_of(stores[0].src)
    producers = [u.operation for u in buf.result.uses if isinstance(u.operation, tile.PackOp | tile.PoolOp)
                 and u.operation.out is buf.result]
    return (stores[0], producers[0]) if len(producers) == 1 else None


def packable(map_op: tile.MapOp, outputs: set, table: dict[str, accel.LayerOp]) -> bool:
    if map_op.fmt != Format.SPIKE_PLANES or map_op.io is not None or map_op.result in outputs:
        return False
    writer = _writer(map_op)
    if writer is None:
        return False
    if isinstance(writer[1], tile.PoolOp) and table[writer[1].layer_symbol].get("kind") != LayerKind.MAXPOOL:
        return False
    readers = _readers(map_op)
    loads = [u.operation for u in map_op.result.uses if isinstance(u.operation, tile.LoadOp)]
    if not readers or len({id(r[0]) for r in readers}) != len(loads):
        return False  # a load whose buffer feeds something that cannot read words
    return all(not isinstance(op, tile.PoolOp) or table[op.layer_symbol].get("kind") == LayerKind.MAXPOOL
               for _, op, _ in readers)


@dataclass(frozen=True)
class SpikePack(ModulePass):
    """Pack spike maps (T bits per neuron, silent neurons behind row bitmasks, channel-sliced)."""

    name = "spike-pack"
    ir_level: ClassVar[str] = "loop"

    mask_single_spike: bool = False
    weights: bool = True
    channels: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.weights:
            CompressWeights().apply(ctx, op)
        table = layer_table(op)
        timesteps = module_timesteps(op)
        outputs = set(main_of(op).body.block.last_op.operands)
        packed = {}
        for map_op in maps(op):
            if packable(map_op, outputs, table):
                windows = self._pack(map_op, table, timesteps)
                if windows is not None:
                    packed[map_op] = windows
        for kernel in kernels(op):
            infer_buffer_types(kernel.body.block, table, timesteps)
        if not self.channels:
            for map_op, windows in packed.items():
                _fit_slice(map_op, windows, table, timesteps, module_hw(op).sram.size_bytes)

    def _pack(self, map_op: tile.MapOp, table, timesteps: int) -> set[int] | None:
        """Pack `map_op`; returns its readers' fixed channel windows (None: left unpacked)."""
        t, b, h, w, cs = map_op.result.type.get_shape()
        store, producer = _writer(map_op)
        if any(loop.dim == "tb" for loop in enclosing_loops(store)):
            return None  # a batch writes only its timesteps' bits of a word: the map stays spike planes
        windows = set()
        for load, _, _ in _readers(map_op):
            ch0, chs = const_value(load.ch0), const_value(load.chs)
            if ch0 is not None and chs is not None and chs != cs:
                windows |= {ch0, chs} - {0}
        map_op.slice = IntAttr(slice_channels(cs, self.channels, windows))
        map_op.format = IntAttr(int(Format.SPIKE_BITMASK))
        if self.mask_single_spike:
            map_op.mask_single = UnitAttr()
        Rewriter.replace_value_with_new_type(map_op.result, tile.map_type(Format.SPIKE_BITMASK, t, b, h, w, cs))
        _set_format(table, producer, "out_format")
        for _, reader, field in _readers(map_op):
            _set_format(table, reader, field)
        if isinstance(producer, tile.PackOp):
            _store_after_timesteps(store, timesteps)
        else:  # a max pool packs in one visit of all T
            for loop in enclosing_loops(store):
                if loop.dim == "t":
                    set_step(loop, timesteps)
        return windows


def _fit_slice(map_op: tile.MapOp, windows: set[int], table, timesteps: int, sram_bytes: int) -> None:
    """The default slice, made smaller while the producer fits the SRAM in no tile of a whole
    slice of channels (e.g. a 64-channel conv on a 224-wide image, whose one-row tile of all 64
    channels exceeds 256 KB): the largest candidate slice that still divides the channels and
    the readers' windows and leaves the producer a tile that fits, one row, single buffers.
    (With `channels` given, the user's slice stands.)"""
    store, _ = _writer(map_op)
    kernel = store.parent_op()
    while kernel is not None and not isinstance(kernel, tile.KernelOp):
        kernel = kernel.parent_op()
    if kernel is None or not isinstance(kernel.parent_op(), func.FuncOp):
        return  # a fused member: its group's band planning decides
    k = TiledKernel(kernel, table, timesteps, sram_bytes - reserved_bytes(kernel))
    cs = map_op.result.type.get_shape()[3]
    current = map_op.slice.data
    smaller = [g for g in DEFAULT_SLICES if g < current and cs % g == 0 and not any(w % g for w in windows)]
    for candidate in [current, *smaller]:
        if is_fixed(k.n) or most_rows(k, candidate, 1, 1) is not None:
            break
    map_op.slice = IntAttr(candidate)  # if none fits, the smallest: tile-sizes' error names its tile


def _set_format(table, op: Operation, field: str) -> None:
    """The descriptors of `op`'s kernel's layers of its kind read or write SPIKE_BITMASK."""
    kernel = op.parent_op()
    while not isinstance(kernel, tile.KernelOp):
        kernel = kernel.parent_op()
    symbols = {op.layer_symbol}
    if field == "out_format":  # every synapse of a group shares the output format
        symbols |= {o.layer_symbol for o in kernel.body.walk() if isinstance(o, tile.SynOp)}
    for sym in symbols:
        table[sym].properties[field] = IntAttr(int(Format.SPIKE_BITMASK))


def _store_after_timesteps(store: tile.StoreOp, timesteps: int) -> None:
    """Store the words once all T bits are in: after the timestep loop, t0 = 0 and nt = T."""
    t_loop: Loop | None = next((lp for lp in reversed(enclosing_loops(store)) if lp.dim == "t"), None)
    if t_loop is None:
        return
    zero, all_t = const(0), const(timesteps)
    store.detach()
    store.operands[3], store.operands[4] = zero.result, all_t.result  # (src, dst, b, t0, nt, ...)
    parent = t_loop.op.parent_block()
    parent.insert_ops_after([zero, all_t, store], t_loop.op)
    buffer_of(store.src).rotate = ArrayAttr([StringAttr(d) for d in TILE_DIMS])
