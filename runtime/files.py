"""Atomic file writes, shared by the runtime's reports and the CLI.

The data lands in a temporary file in the destination directory and is renamed
into place, so a failure never leaves a partial output behind. Problems with
the destination are `SnncError`s naming the path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from snnc.backend.errors import SnncError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise SnncError(f"{path}: directory {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise SnncError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def ensure_directory(path: str | Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SnncError(f"{path}: cannot create the directory ({exc.strerror})") from None
    return path
