"""Atomic file writes, shared by the runtime's reports and the CLI.

The data lands in a temporary file in the destination directory and is renamed
into place, so a failure never leaves a partial output behind. Problems with
the destination are `SnncError`s naming the path.

  * `check_destination(path)`: the checks a write would fail (the directory
    exists, the path is not a directory), for commands that must refuse before
    they compute anything.
  * `atomic_write_files({path: bytes})`: several outputs of one command; every
    destination is checked and every temporary file written before the first
    rename, so a failure leaves none of them behind (half of a command's outputs
    next to stale others would read as one consistent run).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from snnc.backend.errors import SnncError


def check_destination(path: str | Path) -> Path:
    """`path` as a Path when a file can be written there, else an SnncError naming it."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise SnncError(f"{path}: directory {directory} does not exist")
    if path.is_dir():
        raise SnncError(f"{path}: is a directory, expected a file name")
    return path


def _temporary_copy(path: Path, data: bytes) -> str:
    """A temporary file beside `path` holding `data`; removed again if writing it fails."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    except OSError as exc:
        raise SnncError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException as exc:
        os.unlink(tmp)
        if isinstance(exc, OSError):
            raise SnncError(f"{path}: cannot write ({exc.strerror})") from None
        raise
    return tmp


def atomic_write_files(files: dict[str | Path, bytes]) -> None:
    """Write every file or none (see the module docstring)."""
    targets = [(check_destination(path), data) for path, data in files.items()]
    written: list[tuple[str, Path]] = []
    try:
        for path, data in targets:
            written.append((_temporary_copy(path, data), path))
        for tmp, path in written:
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise SnncError(f"{path}: cannot write ({exc.strerror})") from None
    finally:
        for tmp, _ in written:
            if os.path.exists(tmp):
                os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write_files({path: data})


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def ensure_directory(path: str | Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SnncError(f"{path}: cannot create the directory ({exc.strerror})") from None
    return path
