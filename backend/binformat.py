"""prog.bin: the container format, the contract between compiler and runtime.

CONTRACT:
  * `ProgramImage` is what the encoder produces and what the runtime consumes.
  * `write_program(image) -> bytes` is deterministic (same image => same bytes).
  * `read_program(data: bytes) -> ProgramImage` validates everything and raises
    `BinaryFormatError` with a one-line message naming the field (magic, version,
    section, checksum, truncation, descriptor field, address; every SRAM operand of
    every instruction, isa.sram_operands, inside the hw_config section's SRAM).
  * `load_program_file(path)` reads and validates a file.
  * Every size the reader accepts is bounded by the file and by the hardware config
    it carries (LIMITS below, docs/isa.md "Limits"): nothing a program declares can
    make the simulator allocate or loop beyond those bounds.
Imports only the standard library, numpy and snnc.backend.{isa,hwconfig,errors}.

Layout (all integers little-endian; docs/isa.md "Binary container"):

  header (HEADER_STRUCT, 32 bytes)
    magic        8s   b"SNNCPROG"
    major        u16  FORMAT_MAJOR (a reader rejects any other major)
    minor        u16  FORMAT_MINOR (a reader accepts minor <= its own)
    n_sections   u16
    reserved     u16  0
    dram_size    u64  bytes of DRAM the program addresses
    table_crc    u32  CRC32 of the header bytes before this field + the section table
    reserved     u32  0 (checked, like the u16 above: a flipped bit is an error)
  section table: n_sections x SECTION_STRUCT (24 bytes)
    kind u16, encoding u16, crc32 u32 (of the stored payload), offset u64, size u64 (stored)
  section payloads as stored, contiguous, in table order, no padding; the file ends
  at the end of the last payload.

Encoding (SectionEncoding flags, applied in this order; 0 = the section bytes as is):
  NONZERO   u64 size N, u64 count K, a bitmask of ceil(N/8) bytes (bit i, least
            significant bit first, set iff byte i is non-zero; the padding bits
            are 0), then the K non-zero bytes in order (int8 weights of a sparse
            SNN: 1 bit per zero weight + 1 byte per non-zero one)
  DELTA     n records of isa.INSTRUCTION_BYTES (R) bytes stored column by column:
            byte 0 of every record (the opcode) in order; then for each byte
            position 1..R-1, every record's byte, the records ordered by opcode
            (stably) and each stored as its difference mod 256 from the previous
            record with the same opcode (the first of an opcode as is). A program
            is loops over tiles: most of these differences are 0 or constant.
  ZLIB      a zlib stream (RFC 1950), nothing after it
The reader accepts any encoding on any section (NONZERO and DELTA not together).
The writer stores each section in the smallest of the forms it tries (the plainer
one on a tie): raw; filtered (NONZERO for the constants, DELTA for the
instructions); and ZLIB of the filtered form, for the instructions always (after
DELTA zlib is fast), for any other section when it is at most ZLIB_MAX_INPUT bytes
(small models' descriptors and constants, whose zero padding a bitmask does not
remove; on big constants zlib costs seconds of compile time for ~1% of the file).

Sections (each exactly once, in this order when written):
  hw_config     UTF-8 canonical TOML of the hardware config compiled for
  constants     the DRAM image placed at address 0 (weights, parameter blocks)
  layers        n x isa.LAYER_BYTES descriptors
  layer_names   u32 count, then count strings
  instructions  n x isa.INSTRUCTION_BYTES
  io            u32 count, then count I/O descriptors (name string, u8 rank,
                rank x u32 onnx_shape, then isa.IO_FIELDS; before format 2.4 without t0, nt)
  model_name    one string
A string is u32 byte length + UTF-8 bytes.
"""

from __future__ import annotations

import enum
import functools
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snnc.backend import isa
from snnc.backend.errors import BinaryFormatError, HwConfigError
from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Format, LayerKind, Opcode

MAGIC = b"SNNCPROG"
FORMAT_MAJOR = 2  # 2: sections may be stored encoded (SectionEncoding)
# 1: packed and SRAM-kept weight fibers (DmaFlags.PACKED/KEEP_COMPRESSED, SynFlags.COMPRESSED_WEIGHTS,
# the optional fields sram_bytes and w_bytes); 2: exit.check; 3: strided fiber tiles (sram_stride,
# run_elems, run_stride: channel-sliced packed maps); 4: I/O time windows (isa.IO_FIELDS t0, nt)
FORMAT_MINOR = 4

HEADER_STRUCT = struct.Struct("<8sHHHHQII")
SECTION_STRUCT = struct.Struct("<HHIQQ")
IO_STRUCT = isa.IO_STRUCT  # an I/O descriptor after its name string and shape: isa.IO_FIELDS
IO_STRUCT_2_3 = struct.Struct("<" + "".join(f.fmt for f in isa.IO_FIELDS[:-2]))  # minor <= 3: no t0, nt
_U32 = struct.Struct("<I")


class SectionKind(enum.IntEnum):
    HW_CONFIG = 1
    CONSTANTS = 2
    LAYERS = 3
    LAYER_NAMES = 4
    INSTRUCTIONS = 5
    IO = 6
    MODEL_NAME = 7


SECTION_NAMES = {kind: kind.name.lower() for kind in SectionKind}


class SectionEncoding(enum.IntFlag):
    RAW = 0
    NONZERO = 1  # applied first
    ZLIB = 2  # applied last
    DELTA = 4  # applied first


def encoding_name(encoding: SectionEncoding) -> str:
    """The flags in the order they are applied, e.g. "nonzero+zlib"; "raw" for none."""
    applied = (SectionEncoding.NONZERO, SectionEncoding.DELTA, SectionEncoding.ZLIB)
    return "+".join(flag.name.lower() for flag in applied if flag in encoding) or "raw"


ZLIB_LEVEL = 9
ZLIB_MAX_INPUT = 256 * 1024  # bytes; see the module docstring

# Sizes a program may declare (docs/isa.md "Limits"; LIMITS below states each rule). The
# sections are bounded before they are decoded, so a small file cannot inflate to more.
MAX_LAYERS = 1 << 16  # the `layer` field of a tile instruction is a u16
MAX_INSTRUCTIONS = 1 << 22
MAX_STRING_BYTES = 64 * 1024  # one layer, model or I/O name
SECTION_MAX_BYTES = {
    SectionKind.HW_CONFIG: 64 * 1024,
    SectionKind.LAYERS: MAX_LAYERS * isa.LAYER_BYTES,
    SectionKind.LAYER_NAMES: 16 << 20,
    SectionKind.INSTRUCTIONS: MAX_INSTRUCTIONS * isa.INSTRUCTION_BYTES,
    SectionKind.IO: 16 << 20,
    SectionKind.MODEL_NAME: _U32.size + MAX_STRING_BYTES,
}  # the constants: at most dram_size (the header), itself at most dram.size_bytes
_NONZERO_HEADER = struct.Struct("<QQ")  # decoded size N, count K of non-zero bytes


@dataclass(frozen=True)
class IODesc:
    """One ONNX graph input or output and where it lives in DRAM.

    The user-facing value is float32 of shape `onnx_shape` = [T, *per_step], with
    per_step = [B, C, H, W] (rank 5) or [B, N] (rank 3; stored as H = W = 1, C = N).
    In DRAM it is stored in `format` (see docs/architecture.md "Storage layouts"),
    channel-last with channels padded to `channels_stored`.
    """

    name: str
    is_output: bool
    onnx_shape: tuple[int, ...]
    dram_addr: int
    format: Format
    frac_bits: int  # multi-bit formats: value = int * 2**-frac_bits
    timesteps: int
    batch: int
    channels: int
    channels_stored: int
    height: int
    width: int
    t0: int = 0  # the user sees timesteps t0 .. t0+nt-1 (see IO_FIELDS)
    nt: int | None = None  # None: all `timesteps`

    def __post_init__(self) -> None:
        if self.nt is None:
            object.__setattr__(self, "nt", self.timesteps)


def io_shape_error(d: IODesc) -> str | None:
    """Why `d.onnx_shape` and its time window disagree with the stored geometry, or None.

    onnx_shape is [nt, *per_step] (rank 3 or 5), or per_step (rank 2 or 4) for one step
    with the time axis dropped; per_step = [B, C, H, W], or [B, N] stored as H = W = 1."""
    shape = tuple(d.onnx_shape)
    if len(shape) in (2, 3):
        if (d.height, d.width) != (1, 1):
            return f"rank-{len(shape)} onnx_shape {list(shape)} needs height = width = 1, found {d.height}x{d.width}"
        per_step = (d.batch, d.channels)
    elif len(shape) in (4, 5):
        per_step = (d.batch, d.channels, d.height, d.width)
    else:
        return f"onnx_shape has rank {len(shape)}, expected [T, B, N], [T, B, C, H, W] or one step [B, N], [B, C, H, W]"
    if d.nt < 1 or d.t0 + d.nt > d.timesteps:
        return f"time window t0 = {d.t0}, nt = {d.nt} is outside the {d.timesteps} stored timesteps"
    timed = len(shape) in (3, 5)
    if not d.is_output and (d.t0, d.nt, timed) != (0, d.timesteps, True):
        return f"an input is a whole train [T, ...]: expected t0 = 0, nt = T = {d.timesteps}, found t0 = {d.t0}, nt = {d.nt}"
    if not timed and d.nt != 1:
        return f"onnx_shape {list(shape)} drops the time axis, so nt must be 1, found {d.nt}"
    expect = ((d.nt,) if timed else ()) + per_step
    if shape != expect:
        return f"geometry T,B,C,H,W and t0 = {d.t0}, nt = {d.nt} imply onnx_shape {list(expect)}, found {list(shape)}"
    return None


@dataclass
class ProgramImage:
    hw_toml: str  # canonical TOML of the hardware config compiled for
    dram_size: int  # bytes of DRAM the program addresses
    constants: bytes  # DRAM image placed at address 0 (weights, parameter blocks)
    layers: list[bytes]  # encoded layer descriptors (isa.encode_layer)
    layer_names: list[str]  # ONNX node name of each descriptor, for reports
    instructions: bytes  # n * isa.INSTRUCTION_BYTES
    io: list[IODesc] = field(default_factory=list)
    model_name: str = ""


def io_dram_bytes(desc: IODesc) -> int:
    """Bytes the tensor of `desc` occupies in DRAM in its storage format."""
    return isa.tensor_bytes(desc.format, desc.timesteps, desc.batch, desc.height, desc.width, desc.channels_stored)


def io_step_bytes(desc: IODesc) -> int | None:
    """Bytes of one timestep of the tensor of `desc` ([T][B][H][W][Cs]: timestep t is the t-th
    block of this many bytes), or None for SPIKE_WORDS, whose every word holds all T timesteps."""
    if desc.format == Format.SPIKE_WORDS:
        return None
    return io_dram_bytes(desc) // desc.timesteps


def io_timestep_mask(desc: IODesc, starts, ends) -> np.ndarray:
    """bool [T]: the timesteps of `desc` with a byte in any DRAM range [starts[i], ends[i])."""
    lo, hi = desc.dram_addr, desc.dram_addr + io_dram_bytes(desc)
    first = np.maximum(np.asarray(starts, dtype=np.int64), lo)
    last = np.minimum(np.asarray(ends, dtype=np.int64), hi) - 1
    inside = first <= last
    mask = np.zeros(desc.timesteps, dtype=bool)
    if not inside.any():
        return mask
    step = io_step_bytes(desc)
    if step is None:  # every word holds every timestep
        mask[:] = True
        return mask
    marks = np.zeros(desc.timesteps + 1, dtype=np.int64)
    np.add.at(marks, (first[inside] - lo) // step, 1)
    np.add.at(marks, (last[inside] - lo) // step + 1, -1)
    return np.cumsum(marks[:-1]) > 0


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U32.pack(len(raw)) + raw


def _io_bytes(io: list[IODesc]) -> bytes:
    parts = [_U32.pack(len(io))]
    for d in io:
        parts.append(_string(d.name))
        parts.append(struct.pack("<B", len(d.onnx_shape)))
        parts.append(struct.pack(f"<{len(d.onnx_shape)}I", *d.onnx_shape))
        parts.append(IO_STRUCT.pack(
            int(d.is_output), int(d.format), d.frac_bits, 0, d.dram_addr,
            d.timesteps, d.batch, d.channels, d.channels_stored, d.height, d.width, d.t0, d.nt,
        ))
    return b"".join(parts)


def pack_nonzero(data: bytes) -> bytes:
    """The `nonzero` encoding of `data` (see the module docstring)."""
    values = np.frombuffer(data, dtype=np.uint8)
    nonzero = values != 0
    kept = values[nonzero]
    return _NONZERO_HEADER.pack(len(values), len(kept)) + np.packbits(nonzero, bitorder="little").tobytes() \
        + kept.tobytes()


def _opcode_groups(opcodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(record order by opcode, stable; index in that order where each opcode's run starts)."""
    order = np.argsort(opcodes, kind="stable")
    sorted_opcodes = opcodes[order]
    run_start = np.ones(len(opcodes), dtype=bool)
    run_start[1:] = sorted_opcodes[1:] != sorted_opcodes[:-1]
    return order, np.flatnonzero(run_start)


def delta_records(data: bytes) -> bytes:
    """The DELTA encoding of instruction records (see the module docstring); `data`
    is whole records (write_program has validated the image)."""
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, isa.INSTRUCTION_BYTES)
    order, starts = _opcode_groups(records[:, 0])
    by_opcode = records[order]
    deltas = np.empty_like(by_opcode)
    np.subtract(by_opcode[1:], by_opcode[:-1], out=deltas[1:])  # uint8: mod 256
    deltas[starts] = by_opcode[starts]
    deltas[:, 0] = records[:, 0]  # column 0: the opcodes in program order
    return np.ascontiguousarray(deltas.T).tobytes()


def undelta_records(payload: bytes, section: str = "instructions") -> bytes:
    """The records a DELTA payload stands for."""
    if len(payload) % isa.INSTRUCTION_BYTES:
        raise BinaryFormatError(
            f"section {section}: delta payload of {len(payload)} bytes is not whole {isa.INSTRUCTION_BYTES}-byte records")
    columns = np.frombuffer(payload, dtype=np.uint8).reshape(isa.INSTRUCTION_BYTES, -1)
    opcodes = columns[0]
    order, starts = _opcode_groups(opcodes)
    # within an opcode's run the bytes are the running sums of the deltas (mod 256)
    sums = np.cumsum(columns[1:].T, axis=0, dtype=np.uint8)
    before_run = np.zeros((len(starts), sums.shape[1]), dtype=np.uint8)
    before_run[1:] = sums[starts[1:] - 1]
    run_lengths = np.diff(np.append(starts, len(opcodes)))
    records = np.empty((len(opcodes), isa.INSTRUCTION_BYTES), dtype=np.uint8)
    records[:, 0] = opcodes
    records[order, 1:] = sums - np.repeat(before_run, run_lengths, axis=0)
    return records.tobytes()


def _encode_section(kind: SectionKind, raw: bytes) -> tuple[SectionEncoding, bytes]:
    """The smallest stored form of a section: (encoding, stored bytes); see the module
    docstring. Candidates are listed plainest first and a tie keeps the first."""
    if kind == SectionKind.CONSTANTS:
        filtered = (SectionEncoding.NONZERO, pack_nonzero(raw))
    elif kind == SectionKind.INSTRUCTIONS:
        filtered = (SectionEncoding.DELTA, delta_records(raw))  # same size; it is for zlib
    else:
        filtered = (SectionEncoding.RAW, raw)
    candidates = [(SectionEncoding.RAW, raw), filtered]
    encoding, data = filtered
    if kind == SectionKind.INSTRUCTIONS or len(data) <= ZLIB_MAX_INPUT:
        candidates.append((encoding | SectionEncoding.ZLIB, zlib.compress(data, ZLIB_LEVEL)))
    return min(candidates, key=lambda candidate: len(candidate[1]))


def write_program(image: ProgramImage) -> bytes:
    """Serialise `image`; validates it first so a bad image never reaches disk."""
    payloads = {
        SectionKind.HW_CONFIG: image.hw_toml.encode("utf-8"),
        SectionKind.CONSTANTS: bytes(image.constants),
        SectionKind.LAYERS: b"".join(image.layers),
        SectionKind.LAYER_NAMES: _U32.pack(len(image.layer_names))
        + b"".join(_string(n) for n in image.layer_names),
        SectionKind.INSTRUCTIONS: bytes(image.instructions),
        SectionKind.IO: _io_bytes(image.io),
        SectionKind.MODEL_NAME: _string(image.model_name),
    }
    for i, raw in enumerate(image.layers):
        if len(raw) != isa.LAYER_BYTES:
            raise BinaryFormatError(f"layers[{i}]: expected {isa.LAYER_BYTES} bytes, got {len(raw)}")
    validate_image(image)
    stored = {kind: _encode_section(kind, raw) for kind, raw in payloads.items()}
    offset = HEADER_STRUCT.size + SECTION_STRUCT.size * len(stored)
    table = []
    for kind, (encoding, payload) in stored.items():
        table.append(SECTION_STRUCT.pack(int(kind), int(encoding), zlib.crc32(payload), offset, len(payload)))
        offset += len(payload)
    table_bytes = b"".join(table)
    head = HEADER_STRUCT.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(payloads), 0, image.dram_size, 0, 0)
    crc = zlib.crc32(head[:24] + table_bytes)
    head = HEADER_STRUCT.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(payloads), 0, image.dram_size, crc, 0)
    return head + table_bytes + b"".join(payload for _encoding, payload in stored.values())


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


class _Cursor:
    """Reads a section payload; every overrun names the section."""

    def __init__(self, data: bytes, section: str):
        self.data, self.pos, self.section = data, 0, section

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise BinaryFormatError(f"section {self.section}: truncated while reading {what}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct, what: str) -> tuple:
        return st.unpack(self.take(st.size, what))

    def string(self, what: str) -> str:
        (n,) = self.unpack(_U32, what)
        if n > MAX_STRING_BYTES:
            raise BinaryFormatError(f"section {self.section}: {what} is {n} bytes long, more than {MAX_STRING_BYTES}")
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError:
            raise BinaryFormatError(f"section {self.section}: {what} is not valid UTF-8") from None

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise BinaryFormatError(
                f"section {self.section}: {len(self.data) - self.pos} unexpected trailing bytes")


def _read_io(payload: bytes, minor: int = FORMAT_MINOR) -> list[IODesc]:
    cur = _Cursor(payload, "io")
    (count,) = cur.unpack(_U32, "descriptor count")
    out = []
    for i in range(count):
        name = cur.string(f"io[{i}].name")
        (rank,) = cur.unpack(struct.Struct("<B"), f"io[{i}].rank")
        shape = cur.unpack(struct.Struct(f"<{rank}I"), f"io[{i}].onnx_shape")
        if minor >= 4:
            values = cur.unpack(IO_STRUCT, f"io[{i}]")
        else:  # before time windows: the whole train
            whole = cur.unpack(IO_STRUCT_2_3, f"io[{i}]")
            values = (*whole, 0, whole[5])  # t0 = 0, nt = timesteps
        for field, value in zip(isa.IO_FIELDS, values):
            wrong = field.value_error(value)
            if wrong:
                raise BinaryFormatError(f"io[{i}] ({name!r}).{wrong}")
        (is_out, fmt, frac, _res, addr, t, b, c, cs, h, w, t0, nt) = values
        fmt = Format(fmt)
        if is_out not in (0, 1):
            raise BinaryFormatError(f"io[{i}] ({name!r}).is_output = {is_out}, expected 0 or 1")
        out.append(IODesc(name, bool(is_out), tuple(shape), addr, fmt, frac, t, b, c, cs, h, w, t0, nt))
    cur.finish()
    return out


def _too_big(section: str, size: int, limit: int) -> BinaryFormatError:
    return BinaryFormatError(f"section {section}: decodes to {size} bytes, more than the {limit} it may hold")


def unpack_nonzero(payload: bytes, section: str = "constants", limit: int | None = None) -> bytes:
    """The bytes a `nonzero`-encoded payload stands for (at most `limit`); every
    inconsistency is a BinaryFormatError naming the section."""
    where = f"section {section}"
    if len(payload) < _NONZERO_HEADER.size:
        raise BinaryFormatError(f"{where}: truncated while reading the packed size and count")
    size, count = _NONZERO_HEADER.unpack_from(payload)
    if limit is not None and size > limit:
        raise _too_big(section, size, limit)
    mask_bytes = (size + 7) // 8
    expected = _NONZERO_HEADER.size + mask_bytes + count
    if len(payload) != expected:
        raise BinaryFormatError(
            f"{where}: packed payload is {len(payload)} bytes, its size {size} and count {count} "
            f"need {expected} ({'truncated' if len(payload) < expected else 'trailing bytes'})")
    bitmask = np.frombuffer(payload, dtype=np.uint8, count=mask_bytes, offset=_NONZERO_HEADER.size)
    nonzero = np.unpackbits(bitmask, bitorder="little").view(bool)
    if nonzero[size:].any():
        raise BinaryFormatError(f"{where}: bitmask padding bits after bit {size} are set")
    nonzero = nonzero[:size]
    set_bits = int(np.count_nonzero(nonzero))
    if set_bits != count:
        raise BinaryFormatError(f"{where}: bitmask has {set_bits} bits set, the non-zero count is {count}")
    values = np.frombuffer(payload, dtype=np.uint8, offset=_NONZERO_HEADER.size + mask_bytes)
    if not values.all():
        raise BinaryFormatError(
            f"{where}: non-zero byte {int(np.argmin(values != 0))} of {count} is zero (corrupt bitmask or values)")
    out = np.zeros(size, dtype=np.uint8)
    out[nonzero] = values
    return out.tobytes()


def _inflate(payload: bytes, section: str, limit: int | None = None) -> bytes:
    """The zlib stream's bytes; more than `limit` of them is an error (no zlib bomb is inflated)."""
    stream = zlib.decompressobj()
    try:
        out = stream.decompress(payload, 0 if limit is None else limit + 1)
    except zlib.error as exc:
        raise BinaryFormatError(f"section {section}: corrupt zlib stream ({exc})") from None
    if limit is not None and len(out) > limit:
        raise BinaryFormatError(f"section {section}: the zlib stream inflates to more than the {limit} bytes "
                                "the section may hold")
    if not stream.eof:
        raise BinaryFormatError(f"section {section}: truncated zlib stream")
    if stream.unused_data:
        raise BinaryFormatError(f"section {section}: {len(stream.unused_data)} trailing bytes after the zlib stream")
    return out


def decode_section(name: str, encoding: SectionEncoding, payload: bytes, limit: int | None = None) -> bytes:
    """The section bytes a stored payload stands for (the encodings undone in reverse order),
    at most `limit` of them: every intermediate form is bounded too (a NONZERO form is at
    least 1/8 + 16 bytes of what it stands for)."""
    if SectionEncoding.ZLIB in encoding:
        inner = None if limit is None else (limit + 7) // 8 + limit + _NONZERO_HEADER.size \
            if SectionEncoding.NONZERO in encoding else limit
        payload = _inflate(payload, name, inner)
    if SectionEncoding.DELTA in encoding:
        payload = undelta_records(payload, name)
    if SectionEncoding.NONZERO in encoding:
        payload = unpack_nonzero(payload, name, limit)
    if limit is not None and len(payload) > limit:
        raise _too_big(name, len(payload), limit)
    return payload


def read_program(data: bytes) -> ProgramImage:
    """Parse and validate prog.bin bytes."""
    data = bytes(data)
    if len(data) < 8 or data[:8] != MAGIC:
        raise BinaryFormatError(f"magic: expected {MAGIC!r}, found {data[:8]!r} (not a snnc program)")
    if len(data) < HEADER_STRUCT.size:
        raise BinaryFormatError(f"header: truncated file ({len(data)} bytes, header needs {HEADER_STRUCT.size})")
    _m, major, minor, n_sections, reserved, dram_size, table_crc, reserved2 = HEADER_STRUCT.unpack_from(data)
    if major != FORMAT_MAJOR or minor > FORMAT_MINOR:
        raise BinaryFormatError(
            f"version: format {major}.{minor} is not supported (this reader: {FORMAT_MAJOR}.{FORMAT_MINOR})")
    if reserved or reserved2:  # bytes 28-31 are outside every CRC: checking them is their only guard
        raise BinaryFormatError(f"header: reserved field (bytes {14 if reserved else 28}..."
                                f"{15 if reserved else 31}) = {reserved or reserved2}, expected 0")
    table_end = HEADER_STRUCT.size + n_sections * SECTION_STRUCT.size
    if len(data) < table_end:
        raise BinaryFormatError(f"section table: truncated file ({len(data)} bytes, table ends at {table_end})")
    if zlib.crc32(data[:24] + data[HEADER_STRUCT.size:table_end]) != table_crc:
        raise BinaryFormatError("header: checksum mismatch in the header/section table")
    stored: dict[SectionKind, tuple[SectionEncoding, bytes]] = {}
    expected_offset = table_end
    for i in range(n_sections):
        kind, encoding, crc, offset, size = SECTION_STRUCT.unpack_from(data, HEADER_STRUCT.size + i * SECTION_STRUCT.size)
        try:
            kind = SectionKind(kind)
        except ValueError:
            raise BinaryFormatError(f"section table[{i}].kind = {kind} is not a known section") from None
        name = SECTION_NAMES[kind]
        if encoding & ~int(SectionEncoding.NONZERO | SectionEncoding.ZLIB | SectionEncoding.DELTA):
            raise BinaryFormatError(f"section {name}: encoding {encoding:#x} has unknown flags")
        encoding = SectionEncoding(encoding)
        if SectionEncoding.NONZERO in encoding and SectionEncoding.DELTA in encoding:
            raise BinaryFormatError(f"section {name}: encoding {encoding:#x} combines nonzero and delta")
        if kind in stored:
            raise BinaryFormatError(f"section {name}: appears twice")
        if offset != expected_offset:
            raise BinaryFormatError(f"section {name}: offset {offset}, expected {expected_offset} (sections are contiguous)")
        if offset + size > len(data):
            raise BinaryFormatError(
                f"section {name}: truncated file (section ends at {offset + size}, file has {len(data)} bytes)")
        payload = data[offset:offset + size]
        if zlib.crc32(payload) != crc:
            raise BinaryFormatError(f"section {name}: checksum mismatch (CRC32 {zlib.crc32(payload):08x}, table says {crc:08x})")
        stored[kind] = (encoding, payload)
        expected_offset = offset + size
    if expected_offset != len(data):
        raise BinaryFormatError(f"file: {len(data) - expected_offset} unexpected trailing bytes after the last section")
    for kind in SectionKind:
        if kind not in stored:
            raise BinaryFormatError(f"section {SECTION_NAMES[kind]}: missing")
    # decoded only once the whole file has been checked (every CRC, no missing section); the
    # hardware config first: it bounds the DRAM, and so the constants
    raw_hw = decode_section("hw_config", *stored[SectionKind.HW_CONFIG], SECTION_MAX_BYTES[SectionKind.HW_CONFIG])
    try:
        hw_toml = raw_hw.decode("utf-8")
    except UnicodeDecodeError:
        raise BinaryFormatError("section hw_config: not valid UTF-8") from None
    _check_dram_size(dram_size, program_hw(hw_toml))
    payloads = {kind: decode_section(SECTION_NAMES[kind], encoding, payload,
                                     SECTION_MAX_BYTES.get(kind, dram_size))
                for kind, (encoding, payload) in stored.items() if kind != SectionKind.HW_CONFIG}
    layer_raw = payloads[SectionKind.LAYERS]
    if len(layer_raw) % isa.LAYER_BYTES:
        raise BinaryFormatError(f"section layers: size {len(layer_raw)} is not a multiple of {isa.LAYER_BYTES}")
    layers = [layer_raw[i:i + isa.LAYER_BYTES] for i in range(0, len(layer_raw), isa.LAYER_BYTES)]
    cur = _Cursor(payloads[SectionKind.LAYER_NAMES], "layer_names")
    (count,) = cur.unpack(_U32, "name count")
    if count > MAX_LAYERS:
        raise BinaryFormatError(f"section layer_names: {count} names, at most {MAX_LAYERS} (one per layer)")
    layer_names = [cur.string(f"layer_names[{i}]") for i in range(count)]
    cur.finish()
    cur = _Cursor(payloads[SectionKind.MODEL_NAME], "model_name")
    model_name = cur.string("model name")
    cur.finish()
    image = ProgramImage(
        hw_toml=hw_toml, dram_size=dram_size, constants=payloads[SectionKind.CONSTANTS],
        layers=layers, layer_names=layer_names, instructions=payloads[SectionKind.INSTRUCTIONS],
        io=_read_io(payloads[SectionKind.IO], minor), model_name=model_name,
    )
    validate_image(image)
    return image


def load_program_file(path: str | Path) -> ProgramImage:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BinaryFormatError(f"{path}: no such program file") from None
    except OSError as exc:
        raise BinaryFormatError(f"{path}: cannot read program file ({exc.strerror})") from None
    try:
        return read_program(data)
    except BinaryFormatError as exc:
        raise BinaryFormatError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------------------
# Semantic validation (shared by reader and writer)
# --------------------------------------------------------------------------------------

_TILE_OPCODES = {isa.Opcode.SYN, isa.Opcode.LIF, isa.Opcode.PACK, isa.Opcode.POOL, isa.Opcode.ADD}


def decode_layers(image: ProgramImage) -> list[dict[str, int]]:
    out = []
    for i, raw in enumerate(image.layers):
        try:
            out.append(isa.decode_layer(raw, i))
        except isa.DecodeError as exc:
            raise BinaryFormatError(str(exc)) from None
    return out


@functools.cache
def _instruction_decoders() -> dict[int, tuple[isa.InstructionSpec, struct.Struct, tuple[str, ...]]]:
    """Per opcode byte: its spec, struct and field names (isa.decode_instruction's work that
    does not depend on the instruction, done once)."""
    return {int(op): (spec, spec.struct, tuple(f.name for f in spec.fields))
            for op, spec in isa.INSTRUCTION_BY_OPCODE.items()}


def decode_instructions(image: ProgramImage) -> list[tuple[isa.InstructionSpec, dict[str, int]]]:
    raw = image.instructions
    if len(raw) % isa.INSTRUCTION_BYTES:
        raise BinaryFormatError(
            f"section instructions: size {len(raw)} is not a multiple of {isa.INSTRUCTION_BYTES}")
    decoders = _instruction_decoders()
    out = []
    for offset in range(0, len(raw), isa.INSTRUCTION_BYTES):
        found = decoders.get(raw[offset])
        if found is None:  # isa.decode_instruction names the problem
            try:
                isa.decode_instruction(raw[offset:offset + isa.INSTRUCTION_BYTES], offset // isa.INSTRUCTION_BYTES)
            except isa.DecodeError as exc:
                raise BinaryFormatError(str(exc)) from None
            raise AssertionError("an opcode without a decoder decoded")  # pragma: no cover
        spec, layout, names = found
        out.append((spec, dict(zip(names, layout.unpack_from(raw, offset)[1:]))))
    return out


# Limits (docs/isa.md "Limits" is generated from LIMITS). What the simulator allocates or
# loops over for an instruction is bounded by the SRAM (its operands) times these factors.
DEFAULT_DRAM_LIMIT_DOC = "`dram.size_bytes` of the hardware config"
VISIT_VOLUME_PER_SRAM_BYTE = 64  # elements of a visit's window gather per SRAM byte
SHIFT_LIMIT = 63  # |a shift or fraction| of a layer: shifts of int64 values stay defined
IO_FORMATS = (Format.SPIKE_PLANES, Format.SPIKE_WORDS, Format.ACT_I16, Format.ACT_I32)
_FORMAT_BITS = {Format.ACT_I16: 16, Format.ACT_I32: 32}
FLOAT32_MAX_EXP, FLOAT32_MIN_EXP = 127, -126  # finite normal float32: 2**-126 <= |x| < 2**128


def io_frac_range(fmt: Format) -> tuple[int, int]:
    """frac_bits of an ACT I/O tensor such that every stored integer k, as k * 2**-frac, is 0 or
    a finite normal float32 (no inf, no lost bits below the normal range)."""
    return _FORMAT_BITS[fmt] - 1 - FLOAT32_MAX_EXP, -FLOAT32_MIN_EXP


IO_HOST_BYTES_PER_ELEMENT = 16  # LIMITS "I/O descriptors": host memory per I/O element, with margin


@dataclass(frozen=True)
class Limit:
    what: str
    rule: str


LIMITS: tuple[Limit, ...] = (
    Limit("header", "the reserved fields (bytes 14-15 and 28-31) are 0"),
    Limit("dram_size", f"at most {DEFAULT_DRAM_LIMIT_DOC} (the DRAM capacity of the machine model)"),
    Limit("sections", "decoded: hw_config <= 64 KiB; constants <= dram_size; layers <= "
          f"{MAX_LAYERS} descriptors (the `layer` field is a u16); layer_names and io <= 16 MiB; "
          f"instructions <= {MAX_INSTRUCTIONS} records; each name <= {MAX_STRING_BYTES} bytes. A zlib "
          "stream is never inflated beyond its section's bound"),
    Limit("layer geometry", "CONV, MAXPOOL, AVGPOOL: out_h = floor((in_h + pad_top + pad_bottom - dil_h*(kh-1) - 1) "
          "/ stride_h) + 1, the same along W. ADD: out_c, out_h, out_w = in_c, in_h, in_w"),
    Limit("feature maps", "a layer's input and output map (one batch, all T timesteps, in its format, and at "
          "least one byte per neuron) fit in `dram.size_bytes`"),
    Limit("shifts", f"acc_shift, in_frac, in2_frac, out_frac in [-{SHIFT_LIMIT}, {SHIFT_LIMIT}]; leak_frac, "
          f"membrane_frac, avg_shift <= {SHIFT_LIMIT}"),
    Limit("I/O descriptors", "format SPIKE_PLANES, SPIKE_WORDS, ACT_I16 or ACT_I32 (a SPIKE_BITMASK map is never "
          "an I/O tensor); ACT frac_bits make every stored integer a finite normal float32 (ACT_I16: "
          f"{io_frac_range(Format.ACT_I16)[0]}..{io_frac_range(Format.ACT_I16)[1]}, ACT_I32: "
          f"{io_frac_range(Format.ACT_I32)[0]}..{io_frac_range(Format.ACT_I32)[1]}); the tensor inside dram_size; "
          f"all I/O tensors together at most `dram.size_bytes` / {IO_HOST_BYTES_PER_ELEMENT} elements (what the "
          "host holds per element: the float32 array, its stored integers and its DRAM bytes, converted a chunk "
          "at a time)"),
    Limit("dma.load, dma.store, move", "at most `sram.size_bytes` rows and bytes (rows * row_bytes); every row "
          "inside its memory"),
    Limit("dma.load_bm, dma.store_bm", "fibers >= 1 needs fiber_elems >= 1; the dense SRAM tile "
          "(fibers * fiber_elems * word_bytes at most `sram.size_bytes`; strided by sram_stride / run_elems / "
          "run_stride, runs at least a run apart, fibers at least a fiber's extent apart, its extent inside the "
          "SRAM) or, "
          "with KEEP_COMPRESSED, sram_bytes (at least fibers * "
          "(4 + ceil(fiber_elems/8))) inside the SRAM; the fiber slots inside dram_size"),
    Limit("tile instructions", "the layer has the opcode's kind (syn, lif, pack: CONV; pool: MAXPOOL/AVGPOOL; "
          "add: ADD); every SRAM operand (\"Tile layouts per instruction\") inside the SRAM"),
    Limit("visit volume", "syn: nt*rows*out_w*kh*kw*in_cs (the window gather) and nt*in_cs*(in_rows+pad_top+"
          "pad_bottom)*(in_w+pad_left+pad_right) (the zero-padded input tile); pool: nt*rows*out_w*kh*kw*chs: each "
          f"at most {VISIT_VOLUME_PER_SRAM_BYTE} * `sram.size_bytes` elements"),
)


@functools.lru_cache(maxsize=8)  # read_program, validate_image and simulate parse the same text
def program_hw(hw_toml: str) -> HwConfig:
    """The hardware config a program was compiled for; a bad one is a BinaryFormatError."""
    try:
        return HwConfig.from_toml(hw_toml, source="prog.bin section hw_config")
    except HwConfigError as exc:
        raise BinaryFormatError(str(exc)) from None


def _check_dram_size(dram_size: int, hw: HwConfig) -> None:
    if dram_size > hw.dram.size_bytes:
        raise BinaryFormatError(f"header: dram_size = {dram_size} exceeds the DRAM of the hardware config "
                                f"(dram.size_bytes = {hw.dram.size_bytes})")


def _check_io(i: int, d: IODesc, dram_size: int) -> None:
    where = f"io[{i}] ({d.name!r})"
    if d.format not in IO_FORMATS:
        raise BinaryFormatError(f"{where}.format = {d.format.name}: not an I/O tensor format "
                                f"(expected {', '.join(f.name for f in IO_FORMATS)})")
    if d.format in _FORMAT_BITS:
        lo, hi = io_frac_range(d.format)
        if not lo <= d.frac_bits <= hi:
            raise BinaryFormatError(f"{where}.frac_bits = {d.frac_bits}: {d.format.name} values need {lo}..{hi} "
                                    "(finite normal float32)")
    shape = d.onnx_shape
    if min(d.timesteps, d.batch, d.channels, d.height, d.width) < 1:
        raise BinaryFormatError(f"{where}: every dimension must be >= 1, found {list(shape)}")
    wrong = io_shape_error(d)
    if wrong:
        raise BinaryFormatError(f"{where}: {wrong}")
    if d.timesteps > 64:
        raise BinaryFormatError(f"{where}.timesteps = {d.timesteps} exceeds 64")
    if d.channels_stored < d.channels or d.channels_stored % 8:
        raise BinaryFormatError(
            f"{where}.channels_stored = {d.channels_stored}, expected a multiple of 8 >= channels = {d.channels}")
    end = d.dram_addr + io_dram_bytes(d)
    if end > dram_size:
        raise BinaryFormatError(f"{where}.dram_addr: tensor ends at {end}, beyond dram_size {dram_size}")


def _conv_out(size: int, pad_before: int, pad_after: int, k: int, stride: int, dil: int) -> int:
    return (size + pad_before + pad_after - dil * (k - 1) - 1) // stride + 1


def _map_bytes(fmt: int, timesteps: int, height: int, width: int, cs: int) -> int:
    return isa.tile_bytes(Format(fmt), timesteps, height * width * cs, timesteps)


def _check_layer(i: int, lay: dict[str, int], hw: HwConfig) -> None:
    where = f"layer descriptor {i}"
    if not 1 <= lay["timesteps"] <= 64:
        raise BinaryFormatError(f"{where}: field timesteps = {lay['timesteps']}, expected 1..64")
    for name in ("in_c", "in_h", "in_w", "out_c", "out_h", "out_w"):
        if lay[name] < 1:
            raise BinaryFormatError(f"{where}: field {name} = {lay[name]}, expected >= 1")
    for c, cs in (("in_c", "in_cs"), ("out_c", "out_cs")):
        if lay[cs] < lay[c] or lay[cs] % 8:
            raise BinaryFormatError(f"{where}: field {cs} = {lay[cs]}, expected a multiple of 8 >= {c} = {lay[c]}")
    for name in ("acc_shift", "in_frac", "in2_frac", "out_frac", "leak_frac", "membrane_frac", "avg_shift"):
        if abs(lay[name]) > SHIFT_LIMIT:
            raise BinaryFormatError(f"{where}: field {name} = {lay[name]}, expected at most {SHIFT_LIMIT} in magnitude")
    kind = lay["kind"]
    if kind in (LayerKind.CONV, LayerKind.MAXPOOL, LayerKind.AVGPOOL):
        for name in ("kh", "kw", "stride_h", "stride_w", "dil_h", "dil_w"):
            if lay[name] < 1:
                raise BinaryFormatError(f"{where}: field {name} = {lay[name]}, expected >= 1")
        for axis, (k, dil, pads, size, out, stride) in {
            "h": ("kh", "dil_h", ("pad_top", "pad_bottom"), "in_h", "out_h", "stride_h"),
            "w": ("kw", "dil_w", ("pad_left", "pad_right"), "in_w", "out_w", "stride_w"),
        }.items():
            expected = _conv_out(lay[size], lay[pads[0]], lay[pads[1]], lay[k], lay[stride], lay[dil])
            if lay[out] != expected:
                raise BinaryFormatError(f"{where}: field {out} = {lay[out]}, but {size} = {lay[size]} with this "
                                        f"kernel, stride, dilation and padding gives {expected}")
    elif kind == LayerKind.ADD:
        for a, b in (("in_c", "out_c"), ("in_h", "out_h"), ("in_w", "out_w")):
            if lay[a] != lay[b]:
                raise BinaryFormatError(f"{where}: field {b} = {lay[b]}, an ADD layer keeps its shape ({a} = {lay[a]})")
    if kind == LayerKind.CONV:
        if lay["weight_bytes"] not in (1, 2):
            raise BinaryFormatError(f"{where}: field weight_bytes = {lay['weight_bytes']}, expected 1 or 2")
        if lay["param_c"] not in (1, lay["out_c"]):
            raise BinaryFormatError(
                f"{where}: field param_c = {lay['param_c']}, expected 1 or out_c = {lay['out_c']}")
    for side, fmt in (("in", lay["in_format"]), ("out", lay["out_format"])):
        neurons = lay[f"{side}_h"] * lay[f"{side}_w"] * lay[f"{side}_cs"]  # the simulator keeps a byte per neuron
        size = max(neurons, _map_bytes(fmt, lay["timesteps"], lay[f"{side}_h"], lay[f"{side}_w"], lay[f"{side}_cs"]))
        if size > hw.dram.size_bytes:
            raise BinaryFormatError(f"{where}: its {side}put map takes {size} bytes, more than the DRAM "
                                    f"(dram.size_bytes = {hw.dram.size_bytes})")


KEEP_COMPRESSED = int(isa.DmaFlags.KEEP_COMPRESSED)  # a plain int: `int & IntFlag` builds a flag object per test

_TILE_OPCODES = {spec.opcode for spec in isa.INSTRUCTIONS if spec.has_layer}  # SYN, LIF, PACK, POOL, ADD
_DMA_2D_OPCODES = frozenset((Opcode.DMA_LOAD, Opcode.DMA_STORE))


def visit_volumes(opcode: Opcode, f: dict[str, int], lay: dict[str, int]) -> dict[str, int]:
    """The element counts a visit's window gather and padded input tile span (LIMITS "visit volume")."""
    windows = f["nt"] * f["rows"] * lay["out_w"] * lay["kh"] * lay["kw"]
    if opcode == Opcode.POOL:
        return {"window gather": windows * f["chs"]}
    if opcode != Opcode.SYN:
        return {}
    padded = f["nt"] * lay["in_cs"] * (f["in_rows"] + lay["pad_top"] + lay["pad_bottom"]) \
        * (lay["in_w"] + lay["pad_left"] + lay["pad_right"])
    return {"window gather": windows * lay["in_cs"], "padded input tile": padded}


def _check_span(where: str, field_name: str, addr: int, nbytes: int, size: int, memory: str,
                what: str = "operand") -> None:
    """`memory`: "dram_size" or "SRAM" (sram.size_bytes)."""
    if addr + nbytes > size:
        if memory == "SRAM":
            raise BinaryFormatError(f"{where}.{field_name}: SRAM bytes [{addr}, {addr + nbytes}) outside the "
                                    f"{size}-byte SRAM")
        raise BinaryFormatError(f"{where}.{field_name}: {what} ends at {addr + nbytes}, beyond dram_size {size}")


def _check_rows(where: str, f: dict[str, int], sram: int, sides: tuple[tuple[str, str, int, str], ...]) -> None:
    """A strided copy of rows x row_bytes: bounded by the SRAM, every row inside its memory."""
    rows, row_bytes = f["rows"], f["row_bytes"]
    if rows > sram or rows * row_bytes > sram:
        raise BinaryFormatError(f"{where}.rows: {rows} rows of {row_bytes} bytes, more than the "
                                f"{sram}-byte SRAM holds")
    if rows == 0 or row_bytes == 0:
        return
    for addr_field, stride_field, size, memory in sides:
        _check_span(where, addr_field, f[addr_field], (rows - 1) * f[stride_field] + row_bytes, size, memory,
                    "transfer")


def _check_fiber_dma(where: str, f: dict[str, int], dram_size: int, sram: int) -> None:
    if f["word_bytes"] not in (1, 2, 4, 8):
        raise BinaryFormatError(f"{where}.word_bytes = {f['word_bytes']}: expected 1, 2, 4 or 8")
    if not 1 <= f["elem_bits"] <= 8 * f["word_bytes"]:
        raise BinaryFormatError(f"{where}.elem_bits = {f['elem_bits']}: expected 1..{8 * f['word_bytes']}")
    if f["fibers"] and not f["fiber_elems"]:
        raise BinaryFormatError(f"{where}.fiber_elems = 0: {f['fibers']} fibers need elements")
    if f["flags"] & KEEP_COMPRESSED:
        meta = f["fibers"] * (isa.FIBER_HEADER_BYTES + (f["fiber_elems"] + 7) // 8)
        if f["sram_bytes"] < meta:
            raise BinaryFormatError(f"{where}.sram_bytes = {f['sram_bytes']}: its {f['fibers']} fibers take at "
                                    f"least {meta} bytes")
        _check_span(where, "sram_addr", f["sram_addr"], f["sram_bytes"], sram, "SRAM", "fiber tile")
    else:
        dense = f["fibers"] * f["fiber_elems"] * f["word_bytes"]
        if dense > sram:  # strides may fold the tile onto fewer bytes, but the expansion is this big
            raise BinaryFormatError(f"{where}.fibers: {f['fibers']} fibers of {f['fiber_elems']} {f['word_bytes']}-byte "
                                    f"words, more than the {sram}-byte SRAM holds")
        strides = (f.get("sram_stride", 0), f.get("run_elems", 0), f.get("run_stride", 0))
        wrong = isa.fiber_layout_error(f["fibers"], f["fiber_elems"], f["word_bytes"], *strides)
        if wrong:
            raise BinaryFormatError(f"{where}.{wrong}")
        _check_span(where, "sram_addr", f["sram_addr"],
                    isa.fiber_tile_extent(f["fibers"], f["fiber_elems"], f["word_bytes"], *strides), sram, "SRAM",
                    "fiber tile")
    end = isa.fiber_dma_end(f["dram_addr"], f["fibers"], f["fiber_elems"], f["elem_bits"], f["flags"])
    if end > dram_size:
        raise BinaryFormatError(f"{where}.dram_addr: fibers end at {end}, beyond dram_size {dram_size}")


# The fields a tile instruction's footprint depends on: all but the addresses, in order.
_FOOTPRINT_FIELDS = {spec.opcode: tuple(f.name for f in spec.fields if not f.name.endswith("_addr"))
                     for spec in isa.INSTRUCTIONS if spec.has_layer}


def _tile_footprint(where: str, spec: isa.InstructionSpec, f: dict[str, int], layers: list[dict[str, int]],
                    sram: int) -> list[tuple[str, int]]:
    """The checks of a tile instruction that do not depend on its addresses; its SRAM operands."""
    if f["layer"] >= len(layers):
        raise BinaryFormatError(f"{where}.layer = {f['layer']}, only {len(layers)} layer descriptors")
    lay = layers[f["layer"]]
    kinds = spec.layer_kinds
    if lay["kind"] not in kinds:
        raise BinaryFormatError(f"{where}.layer = {f['layer']}: layer kind {LayerKind(lay['kind']).name}, "
                                f"expected {'/'.join(k.name for k in kinds)}")
    if f["nt"] < 1 or f["t0"] + f["nt"] > lay["timesteps"]:
        raise BinaryFormatError(
            f"{where}.nt: timesteps {f['t0']}..{f['t0'] + f['nt'] - 1} outside 0..{lay['timesteps'] - 1}")
    if f["rows"] < 1 or f["row0"] + f["rows"] > lay["out_h"]:
        raise BinaryFormatError(f"{where}.rows: rows {f['row0']}+{f['rows']} outside out_h = {lay['out_h']}")
    if f["chs"] < 1 or f["ch0"] + f["chs"] > lay["out_cs"]:
        raise BinaryFormatError(f"{where}.chs: channels {f['ch0']}+{f['chs']} outside out_cs = {lay['out_cs']}")
    limit = VISIT_VOLUME_PER_SRAM_BYTE * sram
    for what, volume in visit_volumes(spec.opcode, f, lay).items():
        if volume > limit:
            raise BinaryFormatError(f"{where}: its {what} spans {volume} elements, more than "
                                    f"{VISIT_VOLUME_PER_SRAM_BYTE} per SRAM byte ({limit})")
    return [(operand.field, operand.size) for operand in spec.sram_operands(f, lay)]  # sizes: not the addresses


def validate_image(image: ProgramImage,
                   instructions: list[tuple[isa.InstructionSpec, dict[str, int]]] | None = None) -> None:
    """Cross-section checks and the LIMITS; raises BinaryFormatError naming the field.
    `instructions`: the image's decode_instructions, when the caller has them (decoding is
    most of the work)."""
    hw = program_hw(image.hw_toml)
    _check_dram_size(image.dram_size, hw)
    dram_size, sram = image.dram_size, hw.sram.size_bytes
    if len(image.constants) > dram_size:
        raise BinaryFormatError(f"constants: {len(image.constants)} bytes exceed dram_size {dram_size}")
    if len(image.layers) > MAX_LAYERS:
        raise BinaryFormatError(f"section layers: {len(image.layers)} descriptors, at most {MAX_LAYERS}")
    layers = decode_layers(image)
    if len(image.layer_names) != len(layers):
        raise BinaryFormatError(
            f"layer_names: {len(image.layer_names)} names for {len(layers)} layer descriptors")
    for i, lay in enumerate(layers):
        _check_layer(i, lay, hw)
    names: set[tuple[bool, str]] = set()
    host_bytes = 0
    for i, d in enumerate(image.io):
        if (d.is_output, d.name) in names:
            raise BinaryFormatError(f"io[{i}].name: duplicate {'output' if d.is_output else 'input'} {d.name!r}")
        names.add((d.is_output, d.name))
        _check_io(i, d, dram_size)
        host_bytes += IO_HOST_BYTES_PER_ELEMENT * d.timesteps * d.batch * d.channels * d.height * d.width
        if host_bytes > hw.dram.size_bytes:
            raise BinaryFormatError(
                f"io[{i}] ({d.name!r}): the I/O tensors take {host_bytes} bytes on the host "
                f"({IO_HOST_BYTES_PER_ELEMENT} per element), more than dram.size_bytes = {hw.dram.size_bytes}")
    if len(image.instructions) > MAX_INSTRUCTIONS * isa.INSTRUCTION_BYTES:
        raise BinaryFormatError(f"section instructions: more than {MAX_INSTRUCTIONS} instructions")
    dram_side = ("dram_addr", "dram_stride", dram_size, "dram_size")
    sram_side = ("sram_addr", "sram_stride", sram, "SRAM")
    move_sides = (("src_addr", "src_stride", sram, "SRAM"), ("dst_addr", "dst_stride", sram, "SRAM"))
    footprints: dict[tuple, list[tuple[str, int]]] = {}  # programs repeat tile shapes at other addresses
    outputs = {i: d.timesteps for i, d in enumerate(image.io) if d.is_output}  # exit.check's io
    last_check: dict[int, int] = {}  # per output descriptor: t of its last exit.check so far
    for i, (spec, f) in enumerate(decode_instructions(image) if instructions is None else instructions):
        opcode = spec.opcode
        if opcode in _DMA_2D_OPCODES:  # most of a program: its in-bounds case inline, _check_rows names a fault
            rows, row_bytes = f["rows"], f["row_bytes"]
            if rows > sram or rows * row_bytes > sram or (rows and row_bytes and (
                    f["dram_addr"] + (rows - 1) * f["dram_stride"] + row_bytes > dram_size
                    or f["sram_addr"] + (rows - 1) * f["sram_stride"] + row_bytes > sram)):
                _check_rows(f"instruction {i} ({spec.mnemonic})", f, sram, (dram_side, sram_side))
            continue  # (no weight-fiber fields)
        where = f"instruction {i} ({spec.mnemonic})"
        if opcode == Opcode.MOVE:
            _check_rows(where, f, sram, move_sides)
        elif opcode in (Opcode.DMA_LOAD_BM, Opcode.DMA_STORE_BM):
            _check_fiber_dma(where, f, dram_size, sram)
        elif opcode in _TILE_OPCODES:
            key = (opcode, f.get("mem_addr") == isa.NO_ADDRESS, *map(f.__getitem__, _FOOTPRINT_FIELDS[spec.opcode]))
            operands = footprints.get(key)
            if operands is None:
                operands = footprints[key] = _tile_footprint(where, spec, f, layers, sram)
            for field_name, nbytes in operands:
                _check_span(where, field_name, f[field_name], nbytes, sram, "SRAM")
        else:  # nop, barrier, halt, exit.check
            if opcode == Opcode.EXIT_CHECK:
                wrong = isa.exit_check_field_error(f, outputs, last_check)
                if wrong:
                    raise BinaryFormatError(f"{where}.{wrong}")
            for operand in spec.sram_operands(f, None):
                _check_span(where, operand.field, operand.addr, operand.size, sram, "SRAM")
        if opcode in isa.WEIGHT_FIBER_OPCODES:
            wrong = isa.weight_fiber_field_error(opcode, f)
            if wrong:
                raise BinaryFormatError(f"{where}.{wrong}")
