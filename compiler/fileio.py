"""File I/O used by the CLI: input npz loading, and (re-exported from the
runtime, which owns them) the atomic writes every output file goes through.

`load_npz(path)` reads an .npz of real-valued arrays (bool, integer, float) and
refuses anything else with an InputError naming the file and the array: a .npy
(one unnamed array), a corrupt archive, a member that is not an .npy, structured,
complex, string, datetime or object arrays, or an array whose header declares
more data than the archive member holds (nothing is allocated for it).
"""

from __future__ import annotations

import io
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from snnc.backend.errors import InputError
from snnc.runtime.files import atomic_write_bytes, atomic_write_files, atomic_write_text, check_destination
from snnc.runtime.tensors import dtype_error

__all__ = ["atomic_write_bytes", "atomic_write_files", "atomic_write_text", "check_destination", "load_npz",
           "npz_bytes", "save_npz"]

NPY_MAGIC = b"\x93NUMPY"
HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
# Everything a corrupt archive or member can raise while it is read (zipfile, zlib,
# numpy's header parser); each becomes an InputError naming the file.
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, ValueError, OSError, EOFError,
                KeyError, NotImplementedError, UnicodeDecodeError, SyntaxError, TypeError,
                tokenize.TokenError)  # numpy tokenizes a header that literal_eval refused (unbalanced brackets)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write_bytes(path, npz_bytes(arrays))


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    """One .npy member: its header checked against the member's size before any data is read."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in HEADER_READERS:  # 3.0 only holds structured dtypes with non-Latin-1 field names
            raise InputError(f"{where}: .npy format version {version[0]}.{version[1]} (expected 1.0 or 2.0)")
        shape, _fortran_order, dtype = HEADER_READERS[version](member)
        problem = dtype_error(dtype)
        if problem:
            raise InputError(f"{where}: {problem}")
        header_end = member.tell()
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if header_end + nbytes != info.file_size:
            raise InputError(f"{where}: its header declares {list(shape)} {dtype} ({nbytes} bytes), the member "
                             f"holds {info.file_size - header_end}")
    with archive.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such input file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if head == NPY_MAGIC:
        raise InputError(f"{path}: a .npy file holds one unnamed array; the input must be an .npz with one array "
                         "per graph input, named like it (numpy.savez(path, x=array))")
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise InputError(f"{path}: member {info.filename!r} is not an .npy array")
                name = info.filename[:-len(".npy")]
                arrays[name] = _read_member(archive, info, f"{path}: array {name!r}")
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise InputError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    return arrays

