"""An example dataflow plugin (entry point `snnc.dataflows`): one file that registers itself.

rows-first is LoAS's FTP with the output-row tiles outside the channel tiles (m > n > t*),
timed by the FTP SYN model; `loop-reorder{dataflow=rows-first}` finds it once installed."""

from snnc.backend.isa import Dataflow
from snnc.passes.dataflows import DataflowRecipe, register

register(DataflowRecipe("rows-first", Dataflow.FTP, ("m", "n", "t*"), summary="FTP, row tiles outermost"))
