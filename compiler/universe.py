"""The `xdsl.universe` entry point: stock `xdsl-opt` sees snnc's dialects and passes."""

from xdsl.universe import Universe

from snnc.dialects import get_all_dialects
from snnc.passes import get_builtin_passes

SNNC_UNIVERSE = Universe(all_dialects=get_all_dialects(), all_passes=get_builtin_passes())
