"""ftp: LoAS's fully temporal-parallel dataflow (LoAS §III, Algorithm 1).

    n > b > m > t*   inner product per output neuron, all timesteps of a visit at once on
                     the TPPE lanes (t parallel, step = timestep_lanes): the nest
                     convert-snn-to-loops builds.
"""

from snnc.backend.isa import Dataflow
from snnc.passes.dataflows import DataflowRecipe, register

register(DataflowRecipe("ftp", Dataflow.FTP, ("n", "m", "t*"), summary="LoAS: inner product, t parallel"))
