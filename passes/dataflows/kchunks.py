"""Walking a synapse's reduction in k-chunks of input channels: the loop machinery of the
dataflows whose nest has a k loop (gust.py, op.py; a plugin's too). Not a pass.

`chunk_reduction` splits every synapse of a kernel into k-chunks of `K_CHUNK_CHANNELS`
input channels, or of a design's K tile (passes/synapse_split.py), accumulating in the visit's accumulator: k
innermost (gust). With k outermost (op) the kernel then runs one copy of its nest per
chunk, in turn, the partial sums of each output tile kept between chunks in a DRAM
ACT_I32 map (`<layer>.psum`, marked `tile.psum`); the LIF, pack and stores stay in the
last copy. tile-sizes then holds on chip the partial sums that fit (passes/psum_hold.py).
"""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp, UnitAttr
from xdsl.ir import Operation

from snnc.backend.errors import CompileError
from snnc.backend.isa import Format
from snnc.dialects import tile
from snnc.passes.footprints import buffer_of
from snnc.passes.loop_module import layer_table, maps, module_timesteps
from snnc.passes.loopnest import loops_in, nest_chain
from snnc.passes.synapse_split import Part, split_synapse

K_CHUNK_CHANNELS = 8  # op/gust walk K one byte of a spike-plane position at a time (LoAS §V)
PSUM_ATTR = "tile.psum"  # on the DRAM map of a kernel's partial sums between k-chunk nests


def chunk_reduction(module: ModuleOp, kernel: tile.KernelOp, loops: tuple[str, ...], k_elements: int = 0) -> None:
    """Split each synapse of `kernel` into k-chunks; with k outermost, one nest per chunk.
    A chunk is K_CHUNK_CHANNELS input channels, or with `k_elements` the most multiple of
    them whose kh*kw*channels reduction elements fit in k_elements (a design's K tile)."""
    where = kernel.sym_name.data
    for syn in [o for o in kernel.body.walk() if isinstance(o, tile.SynOp)]:
        _chunk(module, kernel, syn, where, k_elements)
    if loops[0] == "k":
        _outer_k(module, kernel, where)


def _chunk(module: ModuleOp, kernel: tile.KernelOp, syn: tile.SynOp, where: str, k_elements: int) -> None:
    layer = layer_table(module)[syn.layer_symbol]
    window = layer.get("kh") * layer.get("kw")
    channels = max(K_CHUNK_CHANNELS, k_elements // window // K_CHUNK_CHANNELS * K_CHUNK_CHANNELS)
    source = [u.operation for u in buffer_of(syn.inp).result.uses if isinstance(u.operation, tile.LoadOp)]
    packed = [load.src.owner for load in source if isinstance(load.src.owner, tile.MapOp)
              and load.src.owner.slice is not None and channels % load.src.owner.slice.data]
    if packed and Format(layer.get("in_format")) == Format.SPIKE_BITMASK:
        raise CompileError(f"loop-reorder: '{where}': its input is spike-packed in slices of "
                           f"{packed[0].slice.data} channels, and k-chunks of {channels} input channels "
                           f"would split its fibers; run loop-reorder before spike-pack, or use ftp / ip-seq")
    in_cs = layer.get("in_cs")
    if in_cs <= channels:
        return
    parts = [Part(c0, min(channels, in_cs - c0)) for c0 in range(0, in_cs, channels)]
    split_synapse(module, syn, parts, "channels")


def _outer_k(module: ModuleOp, kernel: tile.KernelOp, where: str) -> None:
    """One copy of the nest per k-chunk, partial sums in a DRAM map between them (op)."""
    chain = nest_chain(kernel.body.block)
    if not chain:
        return
    top = chain[0].op
    syns = [o for o in top.walk() if isinstance(o, tile.SynOp)]
    if len(syns) < 2:
        return
    acc = buffer_of(syns[0].acc)
    psum = _psum_map(module, kernel, syns[0])
    copies = [top] + [top.clone() for _ in syns[1:]]
    for clone in copies[1:]:
        top.parent_block().insert_op_before(clone, top)
    copies.append(copies.pop(0))  # the original last: it keeps the LIF, stores and the last chunk
    for index, nest in enumerate(copies):
        _keep_chunk(nest, index, len(copies), acc, psum)
    _share_chunk_buffers([next(o for o in nest.walk() if isinstance(o, tile.SynOp)) for nest in copies])


def _share_chunk_buffers(syns: list[tile.SynOp]) -> None:
    """The chunk nests run one after another: one weight and one input buffer serve them all
    (each chunk loads its own slice into it), so the SRAM holds one chunk's operands, not all."""
    for operand in ("weights", "inp"):
        first = buffer_of(getattr(syns[0], operand))
        for syn in syns[1:]:
            buf = buffer_of(getattr(syn, operand))
            if buf is first:
                continue
            buf.result.replace_all_uses_with(first.result)
            buf.detach()
            buf.erase()


def _psum_map(module: ModuleOp, kernel: tile.KernelOp, syn: tile.SynOp) -> tile.MapOp:
    layer = layer_table(module)[syn.layer_symbol]
    g = layer.get
    timesteps = module_timesteps(module)
    batch = next(loop for loop in loops_in(kernel.body.block) if loop.dim == "b").upper
    psum = tile.MapOp.create_with(f"{layer.source.data}.psum", Format.ACT_I32, 0, 0.0, timesteps, batch,
                                  g("out_cs"), g("out_h"), g("out_w"), g("out_cs"))
    psum.result.name_hint = "psum"
    psum.attributes[PSUM_ATTR] = UnitAttr()  # tile-sizes holds what fits of it on chip (passes/psum_hold.py)
    last_map = maps(module)[-1]
    last_map.parent_block().insert_op_after(psum, last_map)
    return psum


def _keep_chunk(nest: Operation, index: int, count: int, acc: tile.AllocOp, psum: tile.MapOp) -> None:
    """In copy `index` of the nest: only chunk `index`'s loads and syn; partial sums in and out."""
    syns = [o for o in nest.walk() if isinstance(o, tile.SynOp)]
    keep = syns[index]
    for syn in syns:
        if syn is keep:
            continue
        load = _load_into(syn.inp, nest)
        w_load = _load_into(syn.weights, nest)
        for op in (syn, load, w_load):
            if op is not None:
                op.detach()
                op.erase()
    coords = {name: getattr(keep, name) for name in tile.TILE_COORDS}
    if index > 0:  # the partial sums of the earlier chunks
        load = tile.LoadOp.build_with(src=psum.result, dst=acc.result, **coords)
        first = _load_into(keep.inp, nest) or keep
        first.parent_block().insert_op_before(load, first)
    if index < count - 1:
        after = [o for o in list(keep.parent_block().ops) if _after(keep, o)]
        for op in after:
            if isinstance(op, tile.LifOp | tile.PackOp | tile.StoreOp):
                op.detach()
                op.erase()
        keep.parent_block().insert_op_after(tile.StoreOp.build_with(src=acc.result, dst=psum.result, **coords), keep)


def _after(anchor: Operation, op: Operation) -> bool:
    node = anchor.next_op
    while node is not None:
        if node is op:
            return True
        node = node.next_op
    return False


def _load_into(value, nest: Operation) -> Operation | None:
    buf = buffer_of(value)
    for use in buf.result.uses:
        user = use.operation
        if isinstance(user, tile.LoadOp | tile.LoadConstOp) and use.index == 1 and nest.is_ancestor(user):
            return user
    return None

