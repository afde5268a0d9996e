"""The dataclass code cache (compiler/codecache.py): a hit runs the code its source compiles
to, misses reach the file and are read back, a damaged file is an empty cache."""

from __future__ import annotations

import dataclasses
import marshal
import subprocess
import sys

from snnc.compiler import codecache


def test_the_compile_side_installs_the_cache():
    import snnc.compiler  # noqa: F401

    assert isinstance(vars(dataclasses)["exec"].__self__, codecache._CompiledSources)


def test_a_miss_is_saved_and_then_served(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as without PYTHONDONTWRITEBYTECODE
    path = tmp_path / "code.marshal"
    first = codecache._CompiledSources(path, vars(dataclasses))
    namespace: dict = {}
    first.exec("def f(x):\n return x + 1", {}, namespace)
    assert namespace["f"](1) == 2 and len(first.missed) == 1
    first.save()
    assert not first.missed

    second = codecache._CompiledSources(path, vars(dataclasses))
    namespace = {}
    second.exec("def f(x):\n return x + 1", {}, namespace)
    assert namespace["f"](41) == 42 and not second.missed  # served from the file


def test_a_damaged_or_foreign_file_is_an_empty_cache(tmp_path):
    path = tmp_path / "code.marshal"
    for content in (b"\x00garbage", marshal.dumps([1, 2, 3]), b"", marshal.dumps({"def g():\n return 7": 5})):
        path.write_bytes(content)
        sources = codecache._CompiledSources(path, vars(dataclasses))
        namespace: dict = {}
        sources.exec("def g():\n return 7", {}, namespace)
        assert namespace["g"]() == 7 and len(sources.missed) == 1


def test_dataclasses_behave_the_same_through_a_warm_cache(tmp_path):
    """Two processes define the same dataclasses; the second takes every method from the file."""
    script = """
import dataclasses, sys
import snnc.compiler
sources = vars(dataclasses)["exec"].__self__

@dataclasses.dataclass(frozen=True, order=True)
class P:
    x: int
    y: list = dataclasses.field(default_factory=list)

p = P(1)
assert p == P(1, []) and P(0) < p and repr(p) == "P(x=1, y=[])" and hash(P(2, ())) == hash(P(2, ()))
try:
    p.x = 3
except dataclasses.FrozenInstanceError:
    pass
else:
    raise AssertionError("frozen")
print(len(sources.missed))
"""
    env = {"SNNC_CACHE_DIR": str(tmp_path), "PATH": ""}
    cold = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    warm = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert int(cold.stdout) > 0 and int(warm.stdout) == 0
    nothing = subprocess.run([sys.executable, "-B", "-c", script], capture_output=True, text=True,
                             env={**env, "SNNC_CACHE_DIR": str(tmp_path / "unwritten")}, check=True)
    assert int(nothing.stdout) > 0 and not (tmp_path / "unwritten").exists()  # -B: no bytecode written


def test_a_cache_grown_too_big_keeps_what_the_saving_process_used(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = tmp_path / "code.marshal"
    path.write_bytes(marshal.dumps({f"x = {i}": compile(f"x = {i}", "<string>", "exec") for i in range(5)}))
    monkeypatch.setattr(codecache, "MAX_ENTRIES", 5)
    sources = codecache._CompiledSources(path, vars(dataclasses))
    sources.exec("x = 1", {}, {})  # a hit
    sources.exec("y = 2", {}, {})  # a miss: 6 sources, one too many
    sources.save()
    assert set(marshal.loads(path.read_bytes())) == {"x = 1", "y = 2"}
