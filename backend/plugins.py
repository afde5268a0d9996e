"""The entry points of the installed packages, for the plugin groups `snnc.passes`,
`snnc.neuron_kinds` and `snnc.dataflows`: `entry_points(group)`.

`importlib.metadata.entry_points(group=...)` reads the metadata of every installed
distribution on each call (~13 ms with a few hundred installed), and a compile looks up
all three groups, which usually no installed package declares. So the entry_points.txt
files importlib.metadata would read (those of the *.dist-info and *.egg-info directories
on sys.path) are first skimmed for their section names (~3 ms): a group that no file
names has no entry points. Otherwise importlib.metadata answers, reading the metadata
once for every group (and imported then, not before). Either reading is redone only when
sys.path or one of its directories changed (a plugin installed meanwhile). Where
importlib.metadata could see distributions the skim does not (a zip or egg on sys.path,
another distribution finder on sys.meta_path), it always answers.
Imports only the standard library.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys

_declared: tuple[tuple, set[str] | None] | None = None  # (path state, section names the skim found)
_read: tuple[tuple, object] | None = None  # (path state, importlib.metadata's EntryPoints)


def _path_state() -> tuple:
    state = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            state.append((entry, None))
    return tuple(state)


def _declared_groups() -> set[str] | None:
    """The section names of the entry_points.txt files importlib.metadata reads; None when
    it may read some that this does not see."""
    if any(hasattr(finder, "find_distributions") and finder is not importlib.machinery.PathFinder
           for finder in sys.meta_path):
        return None
    groups: set[str] = set()
    for entry in sys.path:
        root = entry or "."
        if root.endswith(".egg") or (os.path.exists(root) and not os.path.isdir(root)):
            return None
        try:
            children = os.listdir(root)
        except OSError:
            continue
        for child in children:
            if not child.lower().endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(root, child, "entry_points.txt"), encoding="utf-8") as file:
                    text = file.read()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
                continue  # what importlib.metadata reads as no entry points
            except (OSError, ValueError):  # it would fail: let it
                return None
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("[") and line.endswith("]"):  # a section, as importlib.metadata reads it
                    groups.add(line.strip("[]"))
    return groups


def entry_points(group: str):
    """The entry points of `group`, as `importlib.metadata.entry_points(group=group)` gives
    them (an empty tuple when no installed package names the group)."""
    global _declared, _read
    state = _path_state()
    if _declared is None or _declared[0] != state:
        _declared = (state, _declared_groups())
    if _declared[1] is not None and group not in _declared[1]:
        return ()
    if _read is None or _read[0] != state:
        from importlib.metadata import entry_points as read_all

        _read = (state, read_all())
    return _read[1].select(group=group)
