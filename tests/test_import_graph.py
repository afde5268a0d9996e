"""The import rule of docs/architecture.md, checked on the whole snnc package.

The graph is built from the sources with `ast`: every `import` and `from ... import`
anywhere in a module (function-level lazy imports included) is an edge to the snnc
module it names (`from pkg import name` names `pkg.name` when that is a module, else
`pkg`). The implicit import of a package's __init__ by its submodules is not an edge:
a package __init__ that lazily imports its own submodules (the pass and dialect
registries) is a registry, not a cycle.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]

# Which top-level folders each folder may import (docs/architecture.md "Import rules").
ALLOWED_FOLDERS = {
    "compiler": {"passes", "dialects", "runtime", "backend"},
    "passes": {"dialects", "runtime", "backend"},
    "dialects": {"backend"},
    "runtime": {"backend"},
    "backend": set(),
}
# The only snnc modules outside runtime/ that the runtime may import: the format contract.
RUNTIME_CONTRACT = {"snnc.backend.isa", "snnc.backend.binformat", "snnc.backend.hwconfig", "snnc.backend.errors"}
RUNTIME_THIRD_PARTY = {"numpy", "rich", "scipy", "threadpoolctl", "matplotlib"}  # matplotlib: the optional `plot` extra, lazily


def package_modules() -> dict[str, Path]:
    """Module name -> source file of every module installed under `snnc` (pyproject package-dir)."""
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    modules = {}
    for package, folder in package_dirs.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """Absolute names `module` imports, at any depth of its syntax tree: `import a.b` gives
    a.b; `from a import b` gives a.b (b may be a module or a name defined in a)."""
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the module's package
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> tuple[nx.DiGraph, dict[str, set[str]]]:
    """(module graph of the snnc package, per module the top-level packages it imports)."""
    modules = package_modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    external: dict[str, set[str]] = {}
    for module, path in modules.items():
        for name in imported_names(module, path):
            external.setdefault(module, set()).add(name.partition(".")[0])
            target = name
            while target and target not in modules:  # a name defined in a module: that module
                target = target.rpartition(".")[0]
            if target and target != module:
                graph.add_edge(module, target)
    return graph, external


def folder_of(module: str) -> str:
    return module.split(".")[1]


def folder_graph(graph: nx.DiGraph) -> nx.DiGraph:
    folders = nx.DiGraph()
    for a, b in graph.edges:
        if folder_of(a) != folder_of(b):
            folders.add_edge(folder_of(a), folder_of(b), example=(a, b))
    return folders


def test_the_parser_sees_module_level_and_lazy_imports():
    graph, external = import_graph()
    assert graph.has_edge("snnc.runtime.simulator", "snnc.backend.isa")  # `from snnc.backend import isa`
    assert graph.has_edge("snnc.dialects", "snnc.dialects.accel")  # inside a function
    assert graph.has_edge("snnc.compiler.pipeline", "snnc.passes")  # `from snnc.passes import get_all_passes`
    assert "numpy" in external["snnc.runtime.simulator"]


def test_no_import_cycle_between_modules():
    graph, _ = import_graph()
    cycles = sorted(nx.simple_cycles(graph))
    assert not cycles, f"import cycles between modules: {cycles}"


def test_no_import_cycle_between_folders_and_only_allowed_folder_imports():
    folders = folder_graph(import_graph()[0])
    assert nx.is_directed_acyclic_graph(folders), f"import cycle between folders: {nx.find_cycle(folders)}"
    for a, b, data in folders.edges(data=True):
        assert b in ALLOWED_FOLDERS[a], f"{a}/ must not import {b}/ ({data['example'][0]} imports {data['example'][1]})"


def test_runtime_imports_only_its_allowed_set():
    graph, external = import_graph()
    runtime = [m for m in graph if folder_of(m) == "runtime"]
    reached = set().union(*(nx.descendants(graph, m) for m in runtime))  # what importing them loads
    outside = sorted(m for m in reached if folder_of(m) != "runtime" and m not in RUNTIME_CONTRACT)
    assert not outside, f"the runtime (transitively) imports {outside}"
    for module in runtime + sorted(RUNTIME_CONTRACT):
        foreign = external.get(module, set()) - RUNTIME_THIRD_PARTY - set(sys.stdlib_module_names) - {"snnc", "__future__"}
        assert not foreign, f"{module} imports {sorted(foreign)}"
