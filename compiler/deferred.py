"""Third-party modules that snnc's processes import but seldom use, run on their first use.

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
Imports only the standard library.
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
