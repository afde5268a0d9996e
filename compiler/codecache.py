"""The code that `dataclasses` generates, compiled once per machine instead of once per process.

CONTRACT:
  * `cache_dataclass_code()` (called by snnc.compiler's __init__, before anything imports
    xDSL): `@dataclass` writes the source of each class's __init__, __repr__, __eq__,
    __setattr__, ... and compiles it with `exec` as it defines the class. A compile process
    defines ~240 dataclasses (xDSL's attributes and ops, snnc's own): ~1,400 sources whose
    compiling is about a fifth of a small model's `snnc compile`. After this call the code
    object of each source comes from a cache keyed by the source text itself, so a hit runs
    exactly the code the source compiles to (what a .pyc file is to a module); a miss
    compiles as before and is added.
  * The cache is one marshal file per interpreter bytecode version in `cache_dir()`
    (SNNC_CACHE_DIR, else $XDG_CACHE_HOME/snnc, else ~/.cache/snnc). It is read once, on
    the first dataclass defined; the misses are merged into it at exit (written to a
    temporary file, then renamed: a concurrent reader sees the old or the new file, never
    half of one). Past MAX_ENTRIES sources it keeps only those the saving process used.
    Nothing is written when Python is told not to write bytecode (PYTHONDONTWRITEBYTECODE,
    -B), when nothing was missed, or when the folder cannot be written; an unreadable or
    foreign file is an empty cache. Never an error.
  * Only `dataclasses`' own `exec` is replaced (a name in that module's namespace, which
    Python looks up before the builtins); an interpreter whose dataclasses module does not
    compile through `exec`, or where something else replaced it, is left alone.
Imports only the standard library.
"""

from __future__ import annotations

import atexit
import builtins
import importlib.util
import marshal
import os
import sys
import types
from pathlib import Path

FORMAT = 1  # bump when the file's layout changes
MAX_ENTRIES = 5_000  # a compile uses ~900; past this (other versions' or a script's classes) the file
# starts over from the sources the saving process used


def cache_dir() -> Path:
    if os.environ.get("SNNC_CACHE_DIR"):
        return Path(os.environ["SNNC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "snnc"


def cache_file() -> Path:
    tag = sys.implementation.cache_tag or "python"
    return cache_dir() / f"dataclass-code.{tag}-{importlib.util.MAGIC_NUMBER.hex()}.v{FORMAT}.marshal"


def _read(path: Path) -> dict:
    try:
        data = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


class _CompiledSources:
    """Source text -> code object, loaded on first use; the misses are saved at exit."""

    def __init__(self, path: Path, module_globals: dict) -> None:
        self.path, self.module_globals = path, module_globals
        self.codes: dict | None = None
        self.missed: dict = {}
        self.used: set[str] = set()

    def exec(self, source, globals=None, locals=None, /):
        if globals is None:  # what `exec` in the replaced module's code would take
            globals = self.module_globals
        if not isinstance(source, str):
            return builtins.exec(source, globals, locals)
        if self.codes is None:
            self.codes = _read(self.path)
        code = self.codes.get(source)
        self.used.add(source)
        if type(code) is not types.CodeType:  # a miss (or a foreign file's value)
            # what exec(source) compiles: file "<string>", no __future__ flags (dataclasses has none)
            code = compile(source, "<string>", "exec", dont_inherit=True)
            self.codes[source] = self.missed[source] = code
        return builtins.exec(code, globals, locals)

    def save(self) -> None:
        if not self.missed or sys.dont_write_bytecode:
            return
        import tempfile

        try:
            merged = _read(self.path)
            merged.update(self.missed)
            if len(merged) > MAX_ENTRIES:  # start over from what this process used
                merged = {source: self.codes[source] for source in self.used}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".dataclass-code-")
            try:
                with os.fdopen(fd, "wb") as out:
                    marshal.dump(merged, out)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except (OSError, ValueError):
            return
        self.missed = {}


def cache_dataclass_code() -> None:
    """Compile dataclasses' generated methods through the cache (CONTRACT)."""
    import dataclasses

    namespace = vars(dataclasses)
    if "exec" in namespace or not hasattr(dataclasses, "_create_fn"):
        return  # cached already, patched by someone else, or a dataclasses this does not know
    sources = _CompiledSources(cache_file(), namespace)
    namespace["exec"] = sources.exec
    atexit.register(sources.save)
