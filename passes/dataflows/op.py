"""op: GoSPA-SNN, the outer-product dataflow with timesteps in sequence (LoAS §V).

    k > n > b > m > t  the reduction walked in k-chunks, outermost: one copy of the nest
                       per chunk, run in turn (each input column and weight row read
                       once); each output tile's partial sums are kept between chunks
                       (passes/dataflows/kchunks.py), on chip for the tiles that fit
                       (passes/psum_hold.py), the LIF after the last chunk.
    A chunk is GoSPA's K tile in LoAS's simulator (256 reduction elements,
    runtime/baselines.py TILES; 24 input channels of a 3x3 convolution, 256 of a dense
    layer): GoSPA merges each K tile's partial-sum matrix into the running sums.
"""

from functools import partial

from snnc.backend.isa import Dataflow
from snnc.passes.dataflows import DataflowRecipe, register
from snnc.passes.dataflows.kchunks import chunk_reduction
from snnc.runtime.baselines import TILES

register(DataflowRecipe("op", Dataflow.OP, ("k", "n", "m", "t"),
                        partial(chunk_reduction, k_elements=TILES[Dataflow.OP].k_chunk),
                        summary="GoSPA-SNN: outer product, partial sums kept between K tiles"))
