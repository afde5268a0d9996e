"""The compiler side of snnc (CLI, frontends, pipeline). Importing it defers asyncio, which
xDSL's imports would otherwise load in full for nothing (compiler/deferred.py)."""

from snnc.compiler.deferred import defer_asyncio

defer_asyncio()
