"""The entry points of the installed packages, read once: the plugin groups `snnc.passes`,
`snnc.neuron_kinds` and `snnc.dataflows`.

`importlib.metadata.entry_points(group=...)` reads the metadata of every installed
distribution on each call (~10 ms with a few hundred installed); a compile looks up all
three groups. `entry_points(group)` reads the metadata once for every group, again only
when sys.path or one of its directories changed (a plugin installed meanwhile), and
imports importlib.metadata (~15 ms: email, csv, zipfile) on the first lookup, not before.
Imports only the standard library.
"""

from __future__ import annotations

import os
import sys

_scanned: tuple[tuple, object] | None = None  # (sys.path with its directories' mtimes, every EntryPoint)


def _path_state() -> tuple:
    state = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            state.append((entry, None))
    return tuple(state)


def entry_points(group: str):
    """`importlib.metadata.entry_points(group=group)`, from one reading of the metadata."""
    global _scanned
    state = _path_state()
    if _scanned is None or _scanned[0] != state:
        from importlib.metadata import entry_points as read_all

        _scanned = (state, read_all())
    return _scanned[1].select(group=group)
