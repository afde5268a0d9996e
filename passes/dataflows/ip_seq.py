"""ip-seq: SparTen-SNN, the inner-product dataflow with timesteps run in sequence (LoAS §V).

    n > b > m > t    one timestep per visit (t innermost, step 1), as LoAS's conservative
                     baseline places it.
"""

from snnc.backend.isa import Dataflow
from snnc.passes.dataflows import DataflowRecipe, register

register(DataflowRecipe("ip-seq", Dataflow.IP_SEQ, ("n", "m", "t"), summary="SparTen-SNN: inner product, t sequential"))
