"""loop-reorder: choose each synaptic layer's dataflow by rewriting its loop nest.

LoAS §III (Algorithm 1) and the baselines of §V. A synapse layer computes
C[t] = A[t] @ B (A: [M, K] input spikes, B: [K, N] weights) and LIF fires C[t] in
timestep order. At the loop level its nest runs over output-channel tiles (n),
batch and output-row tiles (b, m: LoAS's M), timesteps (t) and, when the reduction
is walked in chunks, k-chunks of input channels (k).

CONTRACT
  Requires: loop-level IR (after convert-snn-to-loops), before layer-fuse (a fused
    kernel is a one-line error) and tile-sizes.
  Guarantees: in every kernel holding a `tile.syn` (of the layers named in `layers`,
    or all), the nest implements `dataflow`, and its descriptors say so (`dataflow`).
    Each dataflow is one module of passes/dataflows/ that registers itself (its code,
    default nest and rewrite); the built-in ones:
      ftp     n > b > m > t*   t parallel over the TPPE lanes (step = timestep_lanes)
      ip-seq  n > b > m > t    one timestep per visit (SparTen-SNN)
      gust    n > b > m > t > k  one timestep per visit; each synapse split into
              k-chunks of 8 input channels accumulated on chip (Gamma-SNN)
      op      k > n > b > m > t  one nest per k-chunk (GoSPA's K tile of 256 reduction
              elements), run in turn: partial sums kept between chunks (on chip for
              the tiles that fit, passes/psum_hold.py), LIF after the last (GoSPA-SNN)
    `order` reorders n and m (b stays with m): e.g. "m,n,t*" runs every channel tile
    of an output-row tile before the next row tile (weights reload per row tile).
    Legality is the neuron-state dependence: a neuron's timesteps fire in order, each
    after its whole k-reduction, so t stays inside the output tile loops (time-batch
    hoists it legally) and k-chunks run inside t or, with partial sums kept, outermost.
    An order the hardware cannot run is refused with a one-line error naming the
    layer and the loop. Values are unchanged: the simulator's outputs are identical
    for every dataflow and order.
  Options:
    dataflow  a registered dataflow: ftp (default) | ip-seq | gust | op, or a plugin's
              (passes/dataflows/__init__.py); an unknown name is a one-line error
              listing the registered ones
    order     optional, outermost first over n, m and t (t* = parallel), with k first
              (op) or last (gust) when the dataflow chunks K; checked for legality
    layers    comma-separated ONNX node names; "" (default) = every synaptic layer
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import IntAttr, ModuleOp, UnitAttr
from xdsl.passes import ModulePass

from snnc.backend.errors import CompileError
from snnc.dialects import tile
from snnc.passes.dataflows import DataflowRecipe, lookup
from snnc.passes.loop_module import kernels, layer_table, module_hw, module_timesteps
from snnc.passes.loopnest import loops_in, nest_chain, permute, set_step


def parse_order(text: str, recipe: DataflowRecipe, dataflow: str) -> tuple[str, ...]:
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
        recipe = lookup(self.dataflow)
        loops = parse_order(self.order or ",".join(recipe.order), recipe, self.dataflow)  # a plugin's default too
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
            if any(isinstance(o, tile.KernelOp) for o in kernel.body.walk() if o is not kernel):
                raise CompileError(f"loop-reorder: '{kernel.sym_name.data}' is fused (its layers run in row "
                                   "bands); run loop-reorder before layer-fuse")
            _reorder(kernel, loops, lanes)
            if recipe.rewrite is not None:
                recipe.rewrite(op, kernel, loops)
            table = layer_table(op)
            for syn in [o for o in kernel.body.walk() if isinstance(o, tile.SynOp)]:
                table[syn.layer_symbol].properties["dataflow"] = IntAttr(int(recipe.code))
        unknown = sorted(wanted - found)
        if unknown:
            raise CompileError(f"loop-reorder: layers {unknown} are not synaptic layers of the model")


def _reorder(kernel: tile.KernelOp, loops: tuple[str, ...], lanes: int) -> None:
    """Set the t loop's step and parallelism and permute the nest into `loops` (k aside)."""
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
    if not chain:
        raise CompileError(f"loop-reorder: '{where}': its loops are no longer one nest (op's k-chunks split "
                           "it); reorder a layer once, or op last")
    nest = [d.rstrip("*") for d in loops if d != "k"]
    if "b" in chain:  # b rides just outside m
        nest.insert(nest.index("m"), "b")
    inner = [d for d in chain if d not in nest]
    if [d for d in chain if d in nest] != nest:
        outer = [d for d in chain if d not in nest and chain.index(d) < chain.index(nest[0])] if nest[0] in chain else []
        permute(kernel.body.block, outer + nest + [d for d in inner if d not in outer])
