"""Work of third-party imports that snnc's processes seldom use, done on its first use.

CONTRACT:
  * `install_deferred(spec, ready)`: puts the module of `spec` in sys.modules unrun; its code
    runs on the first access to anything but its import metadata and the names in `ready`
    (bound beforehand; not when an import statement looks the module up), exactly as an
    eager import would have run it. From then on it is a plain module.
  * `defer_asyncio()` (called by snnc.compiler's __init__, before anything imports xDSL):
    typing_extensions.deprecated, with which xDSL decorates a few functions as it is
    imported, runs `import asyncio.coroutines` to ask `asyncio.coroutines.iscoroutinefunction`;
    that runs the whole asyncio package (ssl, socket, subprocess, concurrent.futures,
    logging: ~20 ms of every compile). So `asyncio` is deferred with only its small
    `coroutines` submodule loaded and ready. Any other use of asyncio (an attribute of it,
    `from asyncio import x`, a submodule import) runs the package first, as usual; nothing
    changes for a process that imported asyncio already.
  * `defer_assembly_formats()` (called by cli.console_main for the commands that build IR,
    before they import a dialect): each op's declarative assembly format is parsed when an
    op of its class is first parsed or printed, not as xDSL defines the class.
Imports only the standard library (and xDSL, in defer_assembly_formats).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

# what the import system reads of a module found in sys.modules: reading it must not run the
# module (importlib.util.LazyLoader's modules run on any access, `import x` included)
_IMPORT_METADATA = frozenset({"__spec__", "__name__", "__loader__", "__package__", "__class__", "__dict__"})
_READY = "__deferred_ready__"  # key in a deferred module's namespace: the names served unrun


class _DeferredModule(types.ModuleType):
    """A module whose code runs on the first access to anything but its import metadata
    and its ready names; from then on it is a plain module."""

    def __getattribute__(self, name: str):
        if name in _IMPORT_METADATA:
            return super().__getattribute__(name)
        namespace = super().__getattribute__("__dict__")
        if name in namespace.get(_READY, ()):
            return namespace[name]
        spec = namespace["__spec__"]
        namespace.pop(_READY, None)
        self.__class__ = types.ModuleType
        try:
            spec.loader.exec_module(self)
        except BaseException:
            sys.modules.pop(spec.name, None)  # as a failed import: the next import tries again
            raise
        return getattr(self, name)


def install_deferred(spec, ready: dict[str, object] | None = None) -> types.ModuleType:
    module = importlib.util.module_from_spec(spec)
    if ready:
        vars(module).update(ready)
        vars(module)[_READY] = frozenset(ready)
    module.__class__ = _DeferredModule
    sys.modules[spec.name] = module
    return module


def defer_asyncio() -> None:
    """Make `import asyncio.coroutines` load that submodule alone (CONTRACT)."""
    if "asyncio" in sys.modules or "asyncio.coroutines" in sys.modules:
        return
    package = importlib.util.find_spec("asyncio")
    if package is None or not package.submodule_search_locations:
        return
    spec = importlib.machinery.PathFinder.find_spec("asyncio.coroutines", package.submodule_search_locations)
    if spec is None or spec.loader is None:
        return
    coroutines = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = coroutines
    try:
        spec.loader.exec_module(coroutines)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    install_deferred(package, {"coroutines": coroutines})


class _DeferredFormat:
    """An op's declarative assembly format, parsed (by `parse_format`) when an op of its
    class is first parsed or printed."""

    __slots__ = ("_text", "_op_def", "_parse_format", "_program")

    def __init__(self, text: str, op_def, parse_format) -> None:
        self._text, self._op_def, self._parse_format, self._program = text, op_def, parse_format, None

    def _parsed(self):
        if self._program is None:
            self._program = self._parse_format(self._text, self._op_def)
        return self._program

    def parse(self, parser, op_type):
        return self._parsed().parse(parser, op_type)

    def print(self, printer, op):
        return self._parsed().print(printer, op)


def defer_assembly_formats() -> None:
    """xDSL parses the declarative assembly format of each op as it defines the op's class
    (~1 ms each; ~70 ops on a compile's path: builtin, func, arith, memref, scf, snn), and a
    compile that prints no IR never uses them. After this call, a format is parsed when an
    op of its class is first parsed or printed: a malformed one (a bug in its dialect) is
    then reported there instead of at import. For whole `snnc` processes (cli.console_main),
    before they import any dialect; not a library default, so xDSL still checks every
    format at import in tests and other callers."""
    from xdsl.irdl import declarative_assembly_format

    program = declarative_assembly_format.FormatProgram
    eager = program.__dict__.get("from_str")
    if not isinstance(eager, staticmethod) or getattr(program, "_formats_deferred", False):
        return  # an xDSL whose formats this does not know how to defer, or deferred already
    parse_format = eager.__func__
    program.from_str = staticmethod(lambda text, op_def: _DeferredFormat(text, op_def, parse_format))
    program._formats_deferred = True
