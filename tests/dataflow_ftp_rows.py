"""A test-local dataflow plugin: one file that registers itself on import (passes/dataflows).

ftp-rows is LoAS's FTP with the output-row tiles outside the channel tiles (m > n > t*): a
legal variant order, the same SYN timing model (descriptor code FTP)."""

from snnc.backend.isa import Dataflow
from snnc.passes.dataflows import DataflowRecipe, register

register(DataflowRecipe("ftp-rows", Dataflow.FTP, ("m", "n", "t*"), summary="FTP, row tiles outermost"))
