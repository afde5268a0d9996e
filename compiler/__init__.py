"""The compiler side of snnc (CLI, frontends, pipeline). Importing it defers asyncio, which
xDSL's imports would otherwise load in full for nothing (compiler/deferred.py), and has the
methods that `dataclasses` generates come from a compiled-code cache (compiler/codecache.py)."""

from snnc.compiler.codecache import cache_dataclass_code
from snnc.compiler.deferred import defer_asyncio

cache_dataclass_code()
defer_asyncio()
