"""op: GoSPA-SNN, the outer-product dataflow with timesteps in sequence (LoAS §V).

    k > n > b > m > t  the reduction walked in k-chunks of 8 input channels, outermost:
                       one copy of the nest per chunk, run in turn (each input column and
                       weight row read once); each output tile's partial sums are kept
                       between chunks (passes/dataflows/kchunks.py), the LIF after the last.
"""

from snnc.backend.isa import Dataflow
from snnc.passes.dataflows import DataflowRecipe, register
from snnc.passes.dataflows.kchunks import chunk_reduction

register(DataflowRecipe("op", Dataflow.OP, ("k", "n", "m", "t"), chunk_reduction,
                        summary="GoSPA-SNN: outer product, partial sums kept between k-chunks"))
