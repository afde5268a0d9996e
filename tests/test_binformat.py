"""prog.bin container: deterministic round trip and one-line errors for every corruption."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest

from progbuild import Prog
from snnc.backend import binformat as bf
from snnc.backend import isa
from snnc.backend.binformat import read_program, write_program
from snnc.backend.disasm import disassemble
from snnc.backend.errors import BinaryFormatError
from snnc.backend.isa import LayerKind, Opcode
from test_runtime import W_DENSE, dense_program


@pytest.fixture
def image():
    return dense_program(W_DENSE, [1, 2], [4, 4], [0, 0], [0, 0])


def section_offset(data: bytes, name: str) -> tuple[int, int]:
    n = struct.unpack_from("<H", data, 12)[0]
    for i in range(n):
        kind, _r, _crc, offset, size = bf.SECTION_STRUCT.unpack_from(data, bf.HEADER_STRUCT.size + 24 * i)
        if bf.SECTION_NAMES[kind] == name:
            return offset, size
    raise KeyError(name)


def test_round_trip_is_byte_identical(image):
    data = write_program(image)
    again = read_program(data)
    assert again == image
    assert write_program(again) == data
    assert write_program(image) == data  # deterministic
    assert data[:8] == b"SNNCPROG"


@pytest.mark.parametrize("section", list(bf.SECTION_NAMES.values()))
def test_flipped_byte_names_the_section(image, section):
    data = bytearray(write_program(image))
    offset, size = section_offset(bytes(data), section)
    data[offset + size // 2] ^= 0x40
    with pytest.raises(BinaryFormatError, match=rf"section {section}: checksum mismatch"):
        read_program(bytes(data))


def test_header_errors(image):
    data = write_program(image)
    with pytest.raises(BinaryFormatError, match="magic"):
        read_program(b"NOTAPROG" + data[8:])
    minor = bf.FORMAT_MINOR
    with pytest.raises(BinaryFormatError, match=rf"version: format 3\.{minor} is not supported"):
        read_program(data[:8] + struct.pack("<H", 3) + data[10:])
    with pytest.raises(BinaryFormatError, match=rf"version: format 1\.{minor} is not supported \(this reader: 2\.{minor}\)"):
        read_program(data[:8] + struct.pack("<H", 1) + data[10:])  # before packed sections
    with pytest.raises(BinaryFormatError, match=r"version: format 2\.7"):
        read_program(data[:10] + struct.pack("<H", 7) + data[12:])
    corrupt = bytearray(data)
    corrupt[16] ^= 1  # dram_size
    with pytest.raises(BinaryFormatError, match="header: checksum mismatch"):
        read_program(bytes(corrupt))


@pytest.mark.parametrize("cut", [4, 20, 100, -1, -50])
def test_truncated(image, cut):
    data = write_program(image)
    with pytest.raises(BinaryFormatError, match="truncated|magic"):
        read_program(data[:cut])


def test_trailing_bytes(image):
    with pytest.raises(BinaryFormatError, match="trailing bytes"):
        read_program(write_program(image) + b"\0")


def test_bad_opcode_and_descriptor_fields(image):
    bad = dataclasses.replace(image, instructions=image.instructions[:-48] + b"\x7f" + b"\0" * 47)
    with pytest.raises(BinaryFormatError, match=r"instruction 8: unknown opcode 0x7f"):
        write_program(bad)
    raw = bytearray(image.layers[0])
    raw[0] = 9  # kind
    with pytest.raises(BinaryFormatError, match="field kind = 9 is not a valid LayerKind"):
        write_program(dataclasses.replace(image, layers=[bytes(raw)]))
    with pytest.raises(BinaryFormatError, match="layers\\[0\\]: expected"):
        write_program(dataclasses.replace(image, layers=[bytes(raw[:-1])]))
    with pytest.raises(BinaryFormatError, match="layer_names: 2 names for 1"):
        write_program(dataclasses.replace(image, layer_names=["a", "b"]))


def test_addresses_beyond_dram(image):
    # without I/O descriptors the first out-of-range access is the spike store (320 + 4 > 300)
    with pytest.raises(BinaryFormatError, match=r"instruction 6 \(dma.store\)\.dram_addr: transfer ends at 324"):
        write_program(dataclasses.replace(image, dram_size=300, io=[]))
    small = dataclasses.replace(image, dram_size=300)
    with pytest.raises(BinaryFormatError, match=r"io\[1\] \('spk'\)\.dram_addr: tensor ends at 324"):
        write_program(dataclasses.replace(small, instructions=isa.encode_instruction(Opcode.HALT)))


def test_io_geometry_must_match_shape(image):
    d = image.io[0]
    for bad, pattern in (
        (dataclasses.replace(d, onnx_shape=(4, 1, 5)), r"imply onnx_shape \[4, 1, 3\], found \[4, 1, 5\]"),
        (dataclasses.replace(d, channels_stored=4), r"channels_stored = 4"),
        (dataclasses.replace(d, height=2), r"height = width = 1"),
        (dataclasses.replace(d, onnx_shape=(1, 4, 1, 3, 1, 1)), r"rank 6"),
        (dataclasses.replace(d, onnx_shape=(1, 3)), r"an input is a whole train"),  # one step: outputs only
    ):
        with pytest.raises(BinaryFormatError, match=pattern):
            write_program(dataclasses.replace(image, io=[bad] + image.io[1:]))


def test_output_time_windows_round_trip_and_are_checked(image):
    """Format 2.2: an output descriptor shows steps t0..t0+nt-1 ([nt, ...], or [B, ...] for one step)."""
    out = image.io[1]
    T, B, N = out.onnx_shape
    last = dataclasses.replace(out, onnx_shape=(B, N), t0=T - 1, nt=1)
    window = dataclasses.replace(out, name="win", onnx_shape=(2, B, N), t0=1, nt=2)
    windowed = dataclasses.replace(image, io=[image.io[0], last, window])
    assert read_program(write_program(windowed)) == windowed
    assert "steps=3..3" in disassemble(windowed)
    for bad, pattern in (
        (dataclasses.replace(last, t0=T), r"time window t0 = 4, nt = 1 is outside the 4 stored"),
        (dataclasses.replace(window, onnx_shape=(B, N)), r"drops the time axis, so nt must be 1"),
        (dataclasses.replace(window, onnx_shape=(3, B, N)), rf"imply onnx_shape \[2, {B}, {N}\], found \[3, {B}, {N}\]"),
    ):
        with pytest.raises(BinaryFormatError, match=pattern):
            write_program(dataclasses.replace(image, io=[image.io[0], bad]))


def test_reads_format_2_3_io_descriptors_without_time_windows(image):
    """A file written before I/O time windows (minor 3) still reads: every descriptor is the whole train."""
    def io_2_3(io):
        parts = [struct.pack("<I", len(io))]
        for d in io:
            name = d.name.encode()
            parts += [struct.pack("<I", len(name)), name, struct.pack("<B", len(d.onnx_shape)),
                      struct.pack(f"<{len(d.onnx_shape)}I", *d.onnx_shape),
                      bf.IO_STRUCT_2_3.pack(int(d.is_output), int(d.format), d.frac_bits, 0, d.dram_addr, d.timesteps,
                                            d.batch, d.channels, d.channels_stored, d.height, d.width)]
        return b"".join(parts)

    assert bf._read_io(io_2_3(image.io), minor=3) == image.io


def test_tile_instruction_outside_its_layer(image):
    p = Prog()
    p.layer("fc", kind=LayerKind.CONV, timesteps=4, in_c=3, in_cs=8, in_h=1, in_w=1, out_c=2, out_cs=8, out_h=1,
            out_w=1, param_c=1)
    tile = dict(batch=0, row0=0, rows=1, ch0=0, chs=8, spk_addr=0, out_addr=64)
    p.op(Opcode.PACK, layer=0, t0=2, nt=3, **tile)
    with pytest.raises(BinaryFormatError, match=r"instruction 0 \(pack\)\.nt: timesteps 2\.\.4 outside 0\.\.3"):
        write_program(p.image())
    p.code = [isa.encode_instruction(Opcode.PACK, layer=1, t0=0, nt=1, **tile)]
    with pytest.raises(BinaryFormatError, match=r"\(pack\)\.layer = 1, only 1 layer"):
        write_program(p.image())


def test_load_program_file_errors(tmp_path, image):
    with pytest.raises(BinaryFormatError, match=r"nope\.bin: no such program file"):
        bf.load_program_file(tmp_path / "nope.bin")
    path = tmp_path / "bad.bin"
    path.write_bytes(b"garbage!" * 8)
    with pytest.raises(BinaryFormatError, match=r"bad\.bin: magic"):
        bf.load_program_file(path)


def test_disassembly_lists_everything(image):
    text = disassemble(image)
    assert f"format 2.{bf.FORMAT_MINOR}" in text and "model     hand" in text and "16 PEs" in text
    for name in bf.SECTION_NAMES.values():
        assert f"  {name} " in text
    assert "0003  syn       layer=0 batch=0 t0=0 nt=4 row0=0 rows=1 ch0=0 chs=8 in_row0=0 in_rows=1 flags=0" in text
    assert "mem_addr=0x400" in text
    assert "'fc': kind=CONV timesteps=4 in_c=3" in text
    assert "output 'spk' shape=[4, 1, 2]" in text
    assert text.rstrip().endswith("halt")
    # every instruction appears once, in order
    code = text.split("code:\n")[1].splitlines()
    assert [line.split()[1] for line in code] == [
        isa.decode_instruction(image.instructions[i:i + 48])[0].mnemonic
        for i in range(0, len(image.instructions), 48)]


# --------------------------------------------------------------------------------------
# encoded sections (format 2): bitmask-packed constants, zlib
# --------------------------------------------------------------------------------------


def stored_sections(data: bytes) -> list[tuple[int, int, bytes]]:
    """(kind, encoding, stored payload) of every section, in table order."""
    n = struct.unpack_from("<H", data, 12)[0]
    out = []
    for i in range(n):
        kind, encoding, _crc, offset, size = bf.SECTION_STRUCT.unpack_from(data, bf.HEADER_STRUCT.size + 24 * i)
        out.append((kind, encoding, data[offset:offset + size]))
    return out


def assemble(sections: list[tuple[int, int, bytes]], dram_size: int) -> bytes:
    """A container of these (kind, encoding, stored payload) with every CRC right, so
    that only the decoding of a payload can fail."""
    offset = bf.HEADER_STRUCT.size + bf.SECTION_STRUCT.size * len(sections)
    table = b""
    for kind, encoding, payload in sections:
        table += bf.SECTION_STRUCT.pack(kind, encoding, zlib.crc32(payload), offset, len(payload))
        offset += len(payload)
    head = bf.HEADER_STRUCT.pack(bf.MAGIC, bf.FORMAT_MAJOR, bf.FORMAT_MINOR, len(sections), 0, dram_size, 0, 0)
    head = bf.HEADER_STRUCT.pack(bf.MAGIC, bf.FORMAT_MAJOR, bf.FORMAT_MINOR, len(sections), 0, dram_size,
                                 zlib.crc32(head[:24] + table), 0)
    return head + table + b"".join(payload for _kind, _encoding, payload in sections)


def with_constants(image, density: float, size: int = 3_000_000, seed: int = 0):
    """`image` with a constants image of `size` bytes, `density` of them non-zero."""
    rng = np.random.default_rng(seed)
    values = rng.integers(1, 256, size, dtype=np.uint8) * (rng.random(size) < density)
    return dataclasses.replace(image, constants=values.astype(np.uint8).tobytes(), dram_size=size + 4096)


def with_stored_constants(data: bytes, encoding: int, payload: bytes) -> bytes:
    sections = [(k, encoding, payload) if k == bf.SectionKind.CONSTANTS else (k, e, p)
                for k, e, p in stored_sections(data)]
    return assemble(sections, struct.unpack_from("<Q", data, 16)[0])


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 1000])
@pytest.mark.parametrize("density", [0.0, 0.02, 0.5, 1.0])
def test_nonzero_packing_round_trips(size, density):
    rng = np.random.default_rng(size)
    data = (rng.integers(1, 256, size, dtype=np.uint8) * (rng.random(size) < density)).astype(np.uint8).tobytes()
    packed = bf.pack_nonzero(data)
    nonzero = sum(1 for b in data if b)
    assert len(packed) == 16 + (size + 7) // 8 + nonzero
    assert bf.unpack_nonzero(packed) == data


@pytest.mark.parametrize("density, encoding", [
    # sparse weights: 1 bit per zero + 1 byte per non-zero (packed, too big to try zlib on)
    (0.02, bf.SectionEncoding.NONZERO),
    (1.0, bf.SectionEncoding.RAW),  # random dense bytes: nothing is smaller
])
def test_constants_are_stored_in_the_smallest_form(image, density, encoding):
    packed = with_constants(image, density)
    data = write_program(packed)
    (stored,) = [(e, p) for k, e, p in stored_sections(data) if k == bf.SectionKind.CONSTANTS]
    assert stored[0] == encoding
    if encoding == bf.SectionEncoding.NONZERO:
        assert len(stored[1]) < 3_000_000 / 8 + 0.03 * 3_000_000
    assert read_program(data) == packed  # the runtime sees the same constants
    assert write_program(read_program(data)) == data


def test_small_sections_and_instructions_are_zlib_compressed(image):
    small = with_constants(image, 0.02, size=20_000)
    sections = {k: e for k, e, _p in stored_sections(write_program(small))}
    assert sections[bf.SectionKind.CONSTANTS] == bf.SectionEncoding.NONZERO | bf.SectionEncoding.ZLIB
    assert sections[bf.SectionKind.INSTRUCTIONS] == bf.SectionEncoding.DELTA | bf.SectionEncoding.ZLIB
    assert sections[bf.SectionKind.HW_CONFIG] == bf.SectionEncoding.ZLIB
    assert read_program(write_program(small)) == small


def loop_program(tiles: int) -> bytes:
    """Instructions of a loop over `tiles` tiles: DMA in, SYN, DMA out, addresses striding."""
    code = []
    for i in range(tiles):
        code.append(isa.encode_instruction(Opcode.DMA_LOAD, dram_addr=4096 + 512 * i, sram_addr=0, row_bytes=512,
                                           rows=1, dram_stride=0, sram_stride=0))
        code.append(isa.encode_instruction(Opcode.SYN, layer=0, batch=0, t0=0, nt=4, row0=i % 7, rows=1, ch0=0,
                                           chs=8, in_row0=i % 7, in_rows=1, in_addr=0, w_addr=1024, acc_addr=2048,
                                           param_addr=4096, flags=0))
        code.append(isa.encode_instruction(Opcode.DMA_STORE, dram_addr=1 << 20 | 64 * i, sram_addr=2048,
                                           row_bytes=64, rows=1, dram_stride=0, sram_stride=0))
    return b"".join(code) + isa.encode_instruction(Opcode.HALT)


@pytest.mark.parametrize("tiles", [0, 1, 2, 3000])
def test_delta_records_round_trip(tiles):
    code = loop_program(tiles)
    delta = bf.delta_records(code)
    assert len(delta) == len(code) and bf.undelta_records(delta) == code
    if tiles == 3000:  # a loop is mostly zero differences: zlib shrinks it far more than the raw records
        assert len(zlib.compress(delta, 9)) < len(zlib.compress(code, 9)) / 3 < len(code) / 30


def test_corrupt_delta_instructions_are_one_line_errors(image):
    data = write_program(image)
    sections = stored_sections(data)
    dram_size = struct.unpack_from("<Q", data, 16)[0]
    code = image.instructions
    good = [(k, bf.SectionEncoding.DELTA, bf.delta_records(code)) if k == bf.SectionKind.INSTRUCTIONS else (k, e, p)
            for k, e, p in sections]
    assert read_program(assemble(good, dram_size)) == image
    for encoding, payload, message in [
        (bf.SectionEncoding.DELTA, bf.delta_records(code)[:-1], r"delta payload of \d+ bytes is not whole 48-byte records"),
        (bf.SectionEncoding.DELTA | bf.SectionEncoding.NONZERO, bf.delta_records(code), r"encoding 0x5 combines nonzero and delta"),
    ]:
        bad = [(k, encoding, payload) if k == bf.SectionKind.INSTRUCTIONS else (k, e, p) for k, e, p in sections]
        with pytest.raises(BinaryFormatError, match=rf"section instructions: {message}"):
            read_program(assemble(bad, dram_size))


def _packed(image):
    data = write_program(image)
    constants = image.constants
    return data, constants, bf.pack_nonzero(constants)


@pytest.mark.parametrize("corrupt, message", [
    # one bitmask bit set more than the count says
    (lambda p, n: p[:16] + bytes([p[16] ^ (1 << next(i for i in range(8) if not p[16] >> i & 1))]) + p[17:],
     r"section constants: bitmask has \d+ bits set, the non-zero count is \d+"),
    # a count (and a value) more than the bitmask has
    (lambda p, n: p[:8] + struct.pack("<Q", struct.unpack_from("<Q", p, 8)[0] + 1) + p[16:] + b"\x01",
     r"section constants: bitmask has \d+ bits set, the non-zero count is \d+"),
    (lambda p, n: p[:-1], r"section constants: packed payload is \d+ bytes, .* \(truncated\)"),
    (lambda p, n: p + b"\x01", r"section constants: packed payload is \d+ bytes, .* \(trailing bytes\)"),
    (lambda p, n: p[:10], r"section constants: truncated while reading the packed size and count"),
    (lambda p, n: p[:-1] + b"\x00", r"section constants: non-zero byte \d+ of \d+ is zero"),
    # size 1 byte short: the bitmask keeps its length, its last bit is now padding
    (lambda p, n: struct.pack("<Q", n - 1) + p[8:], r"section constants: bitmask padding bits after bit \d+ are set"),
])
def test_corrupt_packed_constants_are_one_line_errors(image, corrupt, message):
    # 1002 bytes (1001 need the same 126 bitmask bytes), every 8th byte non-zero, and
    # the last one: its bit is padding when the size says 1001
    values = np.zeros(1002, np.uint8)
    values[::8] = 7
    values[-1] = 9
    image = dataclasses.replace(image, constants=values.tobytes(), dram_size=8192)
    data, constants, packed = _packed(image)
    bad = with_stored_constants(data, bf.SectionEncoding.NONZERO, corrupt(packed, len(constants)))
    with pytest.raises(BinaryFormatError, match=message) as info:
        read_program(bad)
    assert "\n" not in str(info.value)


def test_corrupt_zlib_and_unknown_encodings_are_one_line_errors(image):
    data, _constants, packed = _packed(image)
    stream = zlib.compress(packed, 9)
    cases = [
        (bf.SectionEncoding.NONZERO | bf.SectionEncoding.ZLIB, stream[:-5], r"truncated zlib stream"),
        (bf.SectionEncoding.NONZERO | bf.SectionEncoding.ZLIB, stream + b"xx", r"2 trailing bytes after the zlib stream"),
        (bf.SectionEncoding.ZLIB, b"not zlib at all", r"corrupt zlib stream"),
        (8, packed, r"encoding 0x8 has unknown flags"),
    ]
    assert read_program(with_stored_constants(data, cases[0][0], stream)) == image  # the intact stream decodes
    for encoding, payload, message in cases:
        with pytest.raises(BinaryFormatError, match=rf"section constants: {message}"):
            read_program(with_stored_constants(data, encoding, payload))


def test_a_flipped_byte_of_a_packed_section_is_a_checksum_error(image):
    data = bytearray(write_program(with_constants(image, 0.02)))
    offset, size = section_offset(bytes(data), "constants")
    data[offset + size // 3] ^= 0x01
    with pytest.raises(BinaryFormatError, match=r"section constants: checksum mismatch"):
        read_program(bytes(data))
