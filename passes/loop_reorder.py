"""loop-reorder: choose each synaptic layer's dataflow by rewriting its loop nest.

LoAS §III (Algorithm 1) and the baselines of §V. A synapse layer computes
C[t] = A[t] @ B (A: [M, K] input spikes, B: [K, N] weights) and LIF fires C[t] in
timestep order. At the loop level its nest runs over output-channel tiles (n),
batch and output-row tiles (b, m: LoAS's M), timesteps (t) and, when the reduction
is walked in chunks, k-chunks of 8 input channels (k).

CONTRACT
  Requires: loop-level IR (after convert-snn-to-loops), before tile-sizes.
  Guarantees: in every kernel holding a `tile.syn` (of the layers named in `layers`,
    or all), the nest implements `dataflow`, and its descriptors say so (`dataflow`):
      ftp     n > b > m > t*   t parallel over the TPPE lanes (step = timestep_lanes)
      ip-seq  n > b > m > t    one timestep per visit (SparTen-SNN)
      gust    n > b > m > t > k  one timestep per visit; each synapse split into
              k-chunks of 8 input channels accumulated on chip (Gamma-SNN)
      op      k > n > b > m > t  one nest per k-chunk, run in turn: partial sums go to
              a DRAM ACT_I32 map between chunks, LIF after the last (GoSPA-SNN)
    `order` reorders n and m (b stays with m): e.g. "m,n,t*" runs every channel tile
    of an output-row tile before the next row tile (weights reload per row tile).
    Legality is the neuron-state dependence: a neuron's timesteps fire in order, each
    after its whole k-reduction, so t stays inside the output tile loops (time-batch
    hoists it legally) and k-chunks run inside t or, with partial sums kept, outermost.
    An order the hardware cannot run is refused with a one-line error naming the
    layer and the loop. Values are unchanged: the simulator's outputs are identical
    for every dataflow and order.
  Options:
    dataflow  ftp (default) | ip-seq | op | gust
    order     optional, outermost first over n, m and t (t* = parallel), with k first
              (op) or last (gust) when the dataflow chunks K; checked for legality
    layers    comma-separated ONNX node names; "" (default) = every synaptic layer
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import IntAttr, ModuleOp, UnitAttr
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from snnc.backend.errors import CompileError
from snnc.backend.isa import Dataflow, Format
from snnc.dialects import tile
from snnc.passes.footprints import buffer_of
from snnc.passes.loop_module import kernels, layer_table, maps, module_hw, module_timesteps
from snnc.passes.loopnest import loops_in, nest_chain, permute, set_step
from snnc.passes.synapse_split import Part, split_synapse

K_CHUNK_CHANNELS = 8  # op/gust walk K one byte of a spike-plane position at a time (LoAS §V)


@dataclass(frozen=True)
class Recipe:
    code: Dataflow
    order: tuple[str, ...]  # the default nest over n, m, t (t* = parallel) and k


DATAFLOWS = {
    "ftp": Recipe(Dataflow.FTP, ("n", "m", "t*")),
    "ip-seq": Recipe(Dataflow.IP_SEQ, ("n", "m", "t")),
    "gust": Recipe(Dataflow.GUST, ("n", "m", "t", "k")),
    "op": Recipe(Dataflow.OP, ("k", "n", "m", "t")),
}


def parse_order(text: str, recipe: Recipe, dataflow: str) -> tuple[str, ...]:
    loops = tuple(s.strip() for s in text.split(",") if s.strip())
    names = [name.rstrip("*") for name in loops]
    if sorted(names) != sorted(n.rstrip("*") for n in recipe.order) or any(
            n.endswith("*") and n != "t*" for n in loops):
        raise CompileError(f"loop-reorder: order {text!r} must order the loops of dataflow {dataflow}: "
                           f"{', '.join(recipe.order)} (only t may be parallel, 't*')")
    if ("t*" in loops) != ("t*" in recipe.order):
        raise CompileError(f"loop-reorder: order {text!r}: loop t runs {'in parallel' if 't*' in recipe.order else 'in sequence'} "
                           f"under dataflow {dataflow}")
    t = names.index("t")
    for outer in sorted(("n", "m"), key=names.index):
        if names.index(outer) > t:
            raise CompileError(f"loop-reorder: order {text!r}: loop t outside loop {outer} would keep every "
                               f"output tile's neuron state across timesteps; use time-batch to hoist t")
    if "k" in names and names.index("k") not in (0, len(names) - 1):
        raise CompileError(f"loop-reorder: order {text!r}: loop k runs innermost (chunks accumulated on chip) "
                           "or outermost (partial sums kept between chunks), not between other loops")
    return loops


@dataclass(frozen=True)
class LoopReorder(ModulePass):
    """Choose the dataflow of every synaptic layer by rewriting its loop nest: ftp, ip-seq, op or gust."""

    name = "loop-reorder"
    ir_level: ClassVar[str] = "loop"

    dataflow: str = "ftp"
    order: str = ""
    layers: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.dataflow not in DATAFLOWS:
            raise CompileError(f"loop-reorder: dataflow={self.dataflow!r}, expected one of {', '.join(DATAFLOWS)}")
        recipe = DATAFLOWS[self.dataflow]
        loops = parse_order(self.order, recipe, self.dataflow) if self.order else recipe.order
        wanted = {n.strip() for n in self.layers.split(",") if n.strip()}
        table = layer_table(op)
        lanes = min(module_hw(op).compute.timestep_lanes, module_timesteps(op))
        found: set[str] = set()
        for kernel in kernels(op):
            syns = [o for o in kernel.body.walk() if isinstance(o, tile.SynOp)]
            sources = {table[s.layer_symbol].source.data for s in syns}
            if not syns or (wanted and not sources & wanted):
                continue
            found |= sources
            _reorder(op, kernel, recipe, loops, lanes, self.dataflow)
        unknown = sorted(wanted - found)
        if unknown:
            raise CompileError(f"loop-reorder: layers {unknown} are not synaptic layers of the model")


def _reorder(module: ModuleOp, kernel: tile.KernelOp, recipe: Recipe, loops: tuple[str, ...], lanes: int,
             dataflow: str) -> None:
    where = kernel.sym_name.data
    by_dim = {loop.dim: loop for loop in loops_in(kernel.body.block)}
    t = by_dim.get("t")
    if t is None:
        raise CompileError(f"loop-reorder: '{where}': its nest has no timestep loop t")
    parallel = "t*" in loops
    set_step(t, lanes if parallel else 1)
    if parallel:
        t.op.attributes[tile.PARALLEL_ATTR] = UnitAttr()
    else:
        t.op.attributes.pop(tile.PARALLEL_ATTR, None)
    chain = [loop.dim for loop in nest_chain(kernel.body.block)]
    nest = [d.rstrip("*") for d in loops if d != "k"]
    if "b" in chain:  # b rides just outside m
        nest.insert(nest.index("m"), "b")
    inner = [d for d in chain if d not in nest]
    if [d for d in chain if d in nest] != nest:
        outer = [d for d in chain if d not in nest and chain.index(d) < chain.index(nest[0])] if nest[0] in chain else []
        permute(kernel.body.block, outer + nest + [d for d in inner if d not in outer])
    for syn in [o for o in kernel.body.walk() if isinstance(o, tile.SynOp)]:
        if "k" in loops:
            _chunk(module, kernel, syn, where)
    if loops[0] == "k":
        _outer_k(module, kernel, where)
    table = layer_table(module)
    for syn in [o for o in kernel.body.walk() if isinstance(o, tile.SynOp)]:
        table[syn.layer_symbol].properties["dataflow"] = IntAttr(int(recipe.code))


def _chunk(module: ModuleOp, kernel: tile.KernelOp, syn: tile.SynOp, where: str) -> None:
    layer = layer_table(module)[syn.layer_symbol]
    source = [u.operation for u in buffer_of(syn.inp).result.uses if isinstance(u.operation, tile.LoadOp)]
    packed = [load.src.owner for load in source if isinstance(load.src.owner, tile.MapOp)
              and load.src.owner.slice is not None and K_CHUNK_CHANNELS % load.src.owner.slice.data]
    if packed and Format(layer.get("in_format")) == Format.SPIKE_BITMASK:
        raise CompileError(f"loop-reorder: '{where}': its input is spike-packed in slices of "
                           f"{packed[0].slice.data} channels, and k-chunks of {K_CHUNK_CHANNELS} input channels "
                           f"would split its fibers; run loop-reorder before spike-pack, or use ftp / ip-seq")
    in_cs = layer.get("in_cs")
    if in_cs <= K_CHUNK_CHANNELS:
        return
    parts = [Part(c0, min(K_CHUNK_CHANNELS, in_cs - c0)) for c0 in range(0, in_cs, K_CHUNK_CHANNELS)]
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


def _psum_map(module: ModuleOp, kernel: tile.KernelOp, syn: tile.SynOp) -> tile.MapOp:
    layer = layer_table(module)[syn.layer_symbol]
    g = layer.get
    timesteps = module_timesteps(module)
    batch = next(loop for loop in loops_in(kernel.body.block) if loop.dim == "b").upper
    psum = tile.MapOp.create_with(f"{layer.source.data}.psum", Format.ACT_I32, 0, 0.0, timesteps, batch,
                                  g("out_cs"), g("out_h"), g("out_w"), g("out_cs"))
    psum.result.name_hint = "psum"
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
        if isinstance(user, tile.LoadOp | tile.LoadConstOp) and use.index == 1 and _inside(user, nest):
            return user
    return None


def _inside(op: Operation, ancestor: Operation) -> bool:
    while op is not None:
        if op is ancestor:
            return True
        op = op.parent_op()
    return False

