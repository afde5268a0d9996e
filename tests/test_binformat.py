"""prog.bin container: deterministic round trip and one-line errors for every corruption."""

from __future__ import annotations

import dataclasses
import struct

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
    with pytest.raises(BinaryFormatError, match=r"version: format 2\.0 is not supported"):
        read_program(data[:8] + struct.pack("<H", 2) + data[10:])
    with pytest.raises(BinaryFormatError, match=r"version: format 1\.7"):
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
        (dataclasses.replace(d, onnx_shape=(4, 1, 5)), r"implies onnx_shape \[4, 1, 3\], found \[4, 1, 5\]"),
        (dataclasses.replace(d, channels_stored=4), r"channels_stored = 4"),
        (dataclasses.replace(d, height=2), r"height = width = 1"),
        (dataclasses.replace(d, onnx_shape=(4, 3)), r"rank 2"),
    ):
        with pytest.raises(BinaryFormatError, match=pattern):
            write_program(dataclasses.replace(image, io=[bad] + image.io[1:]))


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
    assert "format 1.0" in text and "model     hand" in text and "16 PEs" in text
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
