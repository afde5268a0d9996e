"""gust: Gamma-SNN, Gustavson's dataflow with timesteps in sequence (LoAS §V).

    n > b > m > t > k  one timestep per visit; each synapse split into k-chunks of
                       8 input channels (one byte of a spike-plane position), the
                       partial rows merged on chip in the visit's accumulator.
"""

from snnc.backend.isa import Dataflow
from snnc.passes.dataflows import DataflowRecipe, register
from snnc.passes.dataflows.kchunks import chunk_reduction

register(DataflowRecipe("gust", Dataflow.GUST, ("n", "m", "t", "k"), chunk_reduction,
                        summary="Gamma-SNN: k-chunks merged on chip per visit"))
