"""One regression test per defect that fuzzing found (issue 15 §3): each is now a clean one-line
error (exit 1, no output file) or a correct result."""

from __future__ import annotations

import dataclasses
import itertools
import tracemalloc
import io
from contextlib import redirect_stderr
from pathlib import Path
import zipfile

import numpy as np
import onnxruntime as ort
import pytest

from passes_util import bench_module
from progbuild import Prog
from snnc.backend import isa
from snnc.backend import binformat as bf
from snnc.backend.binformat import IO_HOST_BYTES_PER_ELEMENT, IODesc, read_program, write_program
from snnc.backend.errors import BinaryFormatError, CompileError, InputError
from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Format, LayerKind, Opcode
from snnc.compiler.cli import main
from snnc.compiler.fileio import load_npz
from snnc.compiler.frontend.canonical import Network
from snnc.compiler.pipeline import CompileOptions, compile_model
from snnc.runtime import memory, simulate, tensors, timing
from test_runtime import SPIKES_IN, W_DENSE, dense_program

fc = bench_module("fuzz_cases")
K = fc.bf.SectionKind


@pytest.fixture
def image():
    return dense_program(W_DENSE, [1, 2], [4, 4], [0, 0], [0, 0])


def with_io(image, index: int, **changes) -> bytes:
    io_descs = list(image.io)
    io_descs[index] = dataclasses.replace(io_descs[index], **changes)
    payloads = fc.image_payloads(image)
    payloads[K.IO] = fc.bf._io_bytes(io_descs)
    return fc.store_raw(payloads, image.dram_size)


def with_layer(image, index: int = 0, **changes) -> bytes:
    layer = isa.decode_layer(image.layers[index])
    layer.update(changes)
    payloads = fc.image_payloads(image)
    payloads[K.LAYERS] = b"".join(isa.encode_layer(**layer) if i == index else raw
                                  for i, raw in enumerate(image.layers))
    return fc.store_raw(payloads, image.dram_size)


def with_instruction(image, index: int, opcode: Opcode, **fields) -> bytes:
    payloads = fc.image_payloads(image)
    raw = bytearray(payloads[K.INSTRUCTIONS])
    raw[index * isa.INSTRUCTION_BYTES:(index + 1) * isa.INSTRUCTION_BYTES] = isa.encode_instruction(opcode, **fields)
    payloads[K.INSTRUCTIONS] = bytes(raw)
    return fc.store_raw(payloads, image.dram_size)


BINARY_DEFECTS = {
    # dram_size >= 2**63 was a ValueError in numpy, 1 TiB a MemoryError (runtime/machine.py)
    "dram_size 2**63": (lambda im: fc.store_raw(fc.image_payloads(im), 1 << 63),
                        r"header: dram_size = 9223372036854775808 exceeds the DRAM of the hardware config"),
    "dram_size 1 TiB": (lambda im: fc.store_raw(fc.image_payloads(im), 1 << 40), r"header: dram_size = 1099511627776"),
    # SPIKE_BITMASK I/O was a KeyError in tensors.decode_output / encode_input
    "SPIKE_BITMASK output": (lambda im: with_io(im, 1, format=Format.SPIKE_BITMASK),
                             r"io\[1\] \('spk'\)\.format = SPIKE_BITMASK: not an I/O tensor format"),
    "SPIKE_BITMASK input": (lambda im: with_io(im, 0, format=Format.SPIKE_BITMASK), r"io\[0\] \('x'\)\.format"),
    # frac_bits -128 made outputs inf with numpy overflow warnings
    "io frac_bits -128": (lambda im: with_io(im, 2, frac_bits=-128),
                          r"io\[2\] \('mem'\)\.frac_bits = -128: ACT_I32 values need -96\.\.126"),
    # header bytes 28-31 were covered by no CRC and never checked
    "header bytes 28-31": (lambda im: fc.store_raw(fc.image_payloads(im), im.dram_size, (0, 0x01000000)),
                           r"header: reserved field \(bytes 28\.\.\.31\) = 16777216, expected 0"),
    # huge layer geometry: MemoryError of 15-32 GiB in _window_indices / _strided_patches
    "out_w inconsistent with in_w": (lambda im: with_layer(im, out_w=65535, out_h=65535),
                                     r"layer descriptor 0: field out_h = 65535, but in_h = 1 with this kernel"),
    "huge consistent map": (lambda im: with_layer(im, in_h=65535, in_w=65535, out_h=65535, out_w=65535,
                                                  in_c=65528, in_cs=65528),
                            r"layer descriptor 0: its input map takes \d+ bytes, more than the DRAM"),
    "kernel 255x255, stride 255": (lambda im: with_layer(im, kh=255, kw=255, in_h=255, in_w=255, stride_h=255,
                                                         stride_w=255),
                                   r"instruction 3 \(syn\)\.w_addr: SRAM bytes \[\d+, 4161664\) outside the 262144-byte SRAM"),
    # dma.load of 2**32-1 rows with both strides 0 passed the DRAM bound and ran for ~45 s
    "dma.load rows 2**32-1, strides 0": (
        lambda im: with_instruction(im, 0, Opcode.DMA_LOAD, dram_addr=0, sram_addr=0, row_bytes=8,
                                    rows=(1 << 32) - 1, dram_stride=0, sram_stride=0),
        r"instruction 0 \(dma.load\)\.rows: 4294967295 rows of 8 bytes, more than the 262144-byte SRAM holds"),
    "dma.load rows 2**32-1, 0 bytes": (
        lambda im: with_instruction(im, 0, Opcode.DMA_LOAD, dram_addr=0, sram_addr=0, row_bytes=0,
                                    rows=(1 << 32) - 1, dram_stride=0, sram_stride=0),
        r"instruction 0 \(dma.load\)\.rows"),
    "move rows 2**32-1": (
        lambda im: with_instruction(im, 0, Opcode.MOVE, src_addr=0, dst_addr=8, row_bytes=1, rows=(1 << 32) - 1,
                                    src_stride=0, dst_stride=0),
        r"instruction 0 \(move\)\.rows"),
    "dma.load_bm of empty fibers": (
        lambda im: with_instruction(im, 0, Opcode.DMA_LOAD_BM, dram_addr=0, sram_addr=0, fibers=(1 << 32) - 1,
                                    fiber_elems=0, word_bytes=1, elem_bits=1, flags=0),
        r"instruction 0 \(dma.load_bm\)\.fiber_elems = 0"),
    # a strided fiber tile whose runs overlap (run_stride < run bytes): its extent was taken at the
    # last element, the expansion wrote past it (IndexError in simulator._dma_bm)
    "dma.load_bm runs overlapping": (
        lambda im: with_instruction(im, 0, Opcode.DMA_LOAD_BM, dram_addr=0, sram_addr=0, fibers=1, fiber_elems=128,
                                    word_bytes=1, elem_bits=4, flags=0, run_elems=9, run_stride=0),
        r"instruction 0 \(dma.load_bm\)\.run_stride = 0: runs of 9 1-byte words overlap"),
    "dma.load_bm fibers overlapping": (
        lambda im: with_instruction(im, 0, Opcode.DMA_LOAD_BM, dram_addr=0, sram_addr=0, fibers=2, fiber_elems=16,
                                    word_bytes=1, elem_bits=4, flags=0, sram_stride=8),
        r"instruction 0 \(dma.load_bm\)\.sram_stride = 8: fibers 8 bytes apart, each spans 16 bytes"),
    "dma.load_bm strided fibers folded": (
        lambda im: with_instruction(im, 0, Opcode.DMA_LOAD_BM, dram_addr=0, sram_addr=0, fibers=1,
                                    fiber_elems=(1 << 32) - 1, word_bytes=8, elem_bits=1, flags=0, run_elems=1,
                                    run_stride=0),
        r"instruction 0 \(dma.load_bm\)\.fibers: 1 fibers of 4294967295 8-byte words, more than"),
}


@pytest.mark.parametrize("defect", list(BINARY_DEFECTS))
def test_binary_defect_is_a_one_line_error(image, defect, tmp_path, capsys):
    build, message = BINARY_DEFECTS[defect]
    data = build(image)
    with pytest.raises(BinaryFormatError, match=message):
        read_program(data)
    program, inputs, out = tmp_path / "bad.bin", tmp_path / "in.npz", tmp_path / "out.npz"
    program.write_bytes(data)
    np.savez(inputs, x=SPIKES_IN)
    assert main(["run", str(program), "--input", str(inputs), "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("snnc: error: ") and "\n" not in err and "internal error" not in err
    assert not out.exists()


def test_window_gather_beyond_the_visit_volume_limit():
    """Every operand fits the SRAM, but the visit gathers 181x181 windows: 4.3 G elements that the
    simulator would materialise (the im2col it multiplies) are refused instead."""
    p = Prog()
    lay = p.layer("big", kind=LayerKind.CONV, timesteps=4, in_format=Format.SPIKE_PLANES, out_format=Format.SPIKE_PLANES,
                  in_c=8, in_cs=8, in_h=308, in_w=308, out_c=1, out_cs=8, out_h=128, out_w=128, kh=181, kw=181,
                  param_c=1)
    p.op(Opcode.SYN, layer=lay, batch=0, t0=0, nt=4, row0=0, rows=32, ch0=0, chs=1, in_row0=0, in_rows=212, flags=0,
         in_addr=0, w_addr=0, param_addr=0, acc_addr=0)
    with pytest.raises(BinaryFormatError, match=r"instruction 0 \(syn\): its window gather spans 4294049792 "
                                                r"elements, more than 64 per SRAM byte \(16777216\)"):
        read_program(fc.store_raw(fc.image_payloads(p.image()), p.dram_size))


def test_every_limit_holds_for_the_image_the_simulator_gets(image):
    """simulate() validates too: an image built in memory meets the same bounds as a file."""
    bad = dataclasses.replace(image, dram_size=1 << 40)
    with pytest.raises(BinaryFormatError, match="dram_size"):
        simulate(bad, {"x": SPIKES_IN})
    with pytest.raises(BinaryFormatError, match="dram_size"):
        write_program(bad)  # and the compiler cannot write one


def test_a_zlib_bomb_is_not_inflated(image):
    payloads = fc.image_payloads(image)
    bomb = fc.zlib.compress(b"\0" * (fc.bf.SECTION_MAX_BYTES[K.IO] + 1), 9)
    data = fc.store_raw(payloads, image.dram_size)
    # re-store the io section zlib-encoded with a body inflating past its bound
    table = fc._table(data)
    at, kind, _enc, _crc, offset, size = next(entry for entry in table if entry[1] == K.IO)
    rebuilt = {K(entry[1]): data[entry[4]:entry[4] + entry[5]] for entry in table}
    rebuilt[K.IO] = bomb
    stored = fc.store_raw(rebuilt, image.dram_size)
    raw = bytearray(stored)
    at = next(entry[0] for entry in fc._table(stored) if entry[1] == K.IO)
    raw[at + 2:at + 4] = int(fc.bf.SectionEncoding.ZLIB).to_bytes(2, "little")
    with pytest.raises(BinaryFormatError, match=r"section io: the zlib stream inflates to more than"):
        read_program(fc.recompute_crcs(bytes(raw)))


# ---------------------------------------------------------------------------------------
# input files and output files
# ---------------------------------------------------------------------------------------

def _save(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _npz_with_header(path: Path, header: str) -> Path:
    """An .npz whose one member "x.npy" has this (version 1.0) header text."""
    text = header.encode("latin1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + bytes(16))
    return path


BAD_INPUTS = {
    "npy": (lambda p: (np.save(p.with_suffix(".npy"), SPIKES_IN), p.with_suffix(".npy"))[1], r"a \.npy file"),
    "npy named npz": (lambda p: (np.save(p.with_suffix(".npy"), SPIKES_IN),
                                 p.with_suffix(".npy").rename(p), p)[2], r"a \.npy file"),
    "structured": (lambda p: _save(p, x=np.zeros(3, dtype=[("a", "<i4"), ("b", "<f4")])), r"dtype \[\('a'"),
    "complex": (lambda p: _save(p, x=SPIKES_IN.astype(np.complex64)), "dtype complex64 is not a real number type"),
    "string": (lambda p: _save(p, x=np.array(["1", "0"])), "dtype <U1 is not a real number type"),
    "datetime": (lambda p: _save(p, x=np.zeros(3, dtype="datetime64[s]")), r"dtype datetime64\[s\]"),
    "object": (lambda p: _save(p, x=np.array([1, None], dtype=object)), "dtype object is not a real number type"),
    "header beyond the data": (lambda p: (p.write_bytes(fc.bad_input_file({"x": SPIKES_IN}, None, "huge-header")[1]),
                                          p)[1], r"array 'x': its header declares \[1048576, 1048576\]"),
    # numpy's fallback header filter tokenizes the text and raised tokenize.TokenError (found by bench/fuzz.py)
    "header with an unbalanced bracket": (lambda p: _npz_with_header(p, "{'descr': '<f4', 'fortran_order': False, "
                                                                        "'shape': -2, 1), }"), "not a readable .npz file"),
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_file_is_a_one_line_error(image, kind, tmp_path, capsys):
    make, message = BAD_INPUTS[kind]
    path = make(tmp_path / "in.npz")
    with pytest.raises(InputError, match=message):
        load_npz(path)
    program, out = tmp_path / "p.bin", tmp_path / "out.npz"
    program.write_bytes(write_program(image))
    assert main(["run", str(program), "--input", str(path), "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("snnc: error: ") and "\n" not in err and not out.exists()


def test_simulate_refuses_non_real_arrays(image):
    for bad in (SPIKES_IN.astype(np.complex64), SPIKES_IN.astype(str), np.zeros(SPIKES_IN.shape, "datetime64[s]")):
        with pytest.raises(InputError, match="is not a real number type"):
            simulate(image, {"x": bad})


def test_report_pointing_at_a_directory_leaves_no_output(image, tmp_path, capsys):
    program, inputs, out = tmp_path / "p.bin", tmp_path / "in.npz", tmp_path / "out.npz"
    program.write_bytes(write_program(image))
    np.savez(inputs, x=SPIKES_IN)
    (tmp_path / "report").mkdir()
    assert main(["run", str(program), "--input", str(inputs), "--output", str(out),
                 "--report", str(tmp_path / "report")]) == 1
    assert "report: is a directory" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
    assert main(["run", str(program), "--input", str(inputs), "--output", str(tmp_path / "report")]) == 1
    assert main(["run", str(program), "--input", str(inputs), "--output", str(out),
                 "--report", str(tmp_path / "r.json")]) == 0
    assert out.exists() and (tmp_path / "r.json").exists()


# ---------------------------------------------------------------------------------------
# compiler: membrane_bits, spike-pack on SEW-OR with T > lanes
# ---------------------------------------------------------------------------------------

def _hw_file(tmp_path: Path, membrane_bits: int) -> str:
    text = HwConfig().to_toml().replace("membrane_bits = 32", f"membrane_bits = {membrane_bits}")
    path = tmp_path / f"m{membrane_bits}.toml"
    path.write_text(text)
    return str(path)


def _small_net(timesteps: int = 4):
    rng = np.random.default_rng(2)
    net = Network(timesteps=timesteps)
    x = net.input("x", (1, 8))
    s, v = net.lif(net.dense(x, rng.integers(-8, 9, size=(8, 16)) / 8.0, None, name="fc1"), beta=0.5,
                   threshold=1.0, name="lif1")
    net.output(s, "spikes")
    net.output(v, "membrane")
    xs = (rng.integers(0, 9, size=(timesteps, 1, 8)) / 4.0).astype(np.float32)
    return net.to_onnx(), xs


def test_membrane_bits_fit_the_membrane_or_refuse_naming_the_layer(tmp_path):
    model, xs = _small_net()
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": xs})
    wide = compile_model(model, CompileOptions())
    narrow = compile_model(model, CompileOptions(hw=_hw_file(tmp_path, 16)))
    frac = lambda result: isa.decode_layer(result.image.layers[0])["membrane_frac"]  # noqa: E731
    assert frac(narrow) < frac(wide)
    bound = 2 ** 15 - 1  # every membrane of the layer fits the 16-bit register at its fraction
    got = simulate(narrow.image, {"x": xs}, functional=True)
    membrane = got.outputs["membrane"] * 2.0 ** frac(narrow)
    assert np.abs(membrane).max() <= bound
    assert np.mean(got.outputs["spikes"] == expected[0]) > 0.5  # was 0 % before the fit
    with pytest.raises(CompileError, match=r"'lif1': the membrane bound \|v\| <= [\d.]+ needs \d+-bit membranes, "
                                           r"the hardware has compute.membrane_bits = 8"):
        compile_model(model, CompileOptions(hw=_hw_file(tmp_path, 8)))


@pytest.mark.parametrize("timesteps", [5, 6, 9])
def test_spike_pack_sew_or_with_more_timesteps_than_lanes(timesteps):
    """T = 6, dense->IF->dense->IF->Max(s2, s1)->dense->IF: spike-pack was 97.9 % (the SEW-OR's
    packed output was stored per lane group, each store_bm rewriting the whole fiber)."""
    rng = np.random.default_rng(0)
    net = Network(timesteps=timesteps)
    x = net.input("x", (1, 8))
    s1, _ = net.if_neuron(net.dense(x, rng.integers(-8, 9, size=(8, 16)) / 8.0, None, name="fc1"), threshold=1.0,
                          name="if1")
    s2, _ = net.if_neuron(net.dense(s1, rng.integers(-8, 9, size=(16, 16)) / 8.0, None, name="fc2"),
                          threshold=1.0, name="if2")
    z = net.spike_or(s2, s1, name="sew")
    s3, _ = net.if_neuron(net.dense(z, rng.integers(-8, 9, size=(16, 8)) / 8.0, None, name="fc3"), threshold=1.0,
                          name="if3")
    net.output(s3, "y")
    model = net.to_onnx()
    xs = (rng.integers(0, 9, size=(timesteps, 1, 8)) / 4.0).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": xs})[0]
    assert 0 < expected.mean() < 1
    result = compile_model(model, CompileOptions(passes="spike-pack"))
    got = simulate(read_program(result.binary), {"x": xs}, functional=True).outputs["y"]
    assert np.array_equal(got, expected)


def test_fiber_tile_extent_is_the_end_of_its_furthest_element():
    """isa.fiber_tile_extent against the offsets themselves, for every small strided layout
    (it was taken at the last element, short of an earlier run when runs overlap)."""
    for fibers, elems, wb, sram_stride, run_elems, run_stride in itertools.product(
            (1, 2, 3), (1, 5, 9), (1, 2), (0, 3, 40), (0, 1, 2, 4), (0, 1, 3, 8)):
        layout = isa.fiber_tile_offsets(fibers, elems, wb, sram_stride, run_elems, run_stride)
        stride, run, step = layout or (elems * wb, elems, elems * wb)
        j = np.arange(elems)
        ends = np.arange(fibers)[:, None] * stride + (j // run) * step + (j % run) * wb + wb
        assert isa.fiber_tile_extent(fibers, elems, wb, sram_stride, run_elems, run_stride) == ends.max()
        starts = (ends - wb)[..., None] + np.arange(wb)
        overlap = np.unique(starts).size < starts.size
        wrong = isa.fiber_layout_error(fibers, elems, wb, sram_stride, run_elems, run_stride)
        assert wrong is not None or not overlap
        if wrong is not None and not overlap:  # interleaved fibers: refused too, by the simpler rule
            assert wrong.startswith("sram_stride") and stride < ends[0].max()


# ---------------------------------------------------------------------------------------
# the timing model: memory bounded by the ranges, not ranges x DRAM channels
# ---------------------------------------------------------------------------------------

def _bytes_per_way(starts, lengths, block: int, ways: int) -> np.ndarray:
    out = np.zeros(ways, dtype=np.int64)
    for start, length in zip(starts, lengths):
        for address in range(start, start + length):
            out[(address // block) % ways] += 1
    return out


@pytest.mark.parametrize("direct_elements", [memory.DIRECT_ELEMENTS, 0])
def test_interleaved_bytes_counts_every_byte_on_its_way(direct_elements, monkeypatch):
    monkeypatch.setattr(memory, "DIRECT_ELEMENTS", direct_elements)  # both forms: the table and the runs
    rng = np.random.default_rng(0)
    for _ in range(400):
        block, ways, n = int(rng.integers(1, 9)), int(rng.integers(1, 9)), int(rng.integers(0, 6))
        starts, lengths = rng.integers(0, 200, n), rng.integers(0, 150, n)
        assert np.array_equal(memory.interleaved_bytes(starts, lengths, block, ways),
                              _bytes_per_way(starts, lengths, block, ways))
    for _ in range(400):  # strided rows: whole periods of the rotation counted once
        block, ways = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        phase, stride = int(rng.integers(0, block * ways)), int(rng.integers(0, block * ways))
        rows, row_bytes = int(rng.integers(1, 60)), int(rng.integers(1, 30))
        expected = _bytes_per_way(phase + np.arange(rows) * stride, [row_bytes] * rows, block, ways).max()
        assert memory._busiest_way_strided.__wrapped__(block, ways, phase, stride, rows, row_bytes) == expected


def test_a_dma_of_many_rows_on_many_channels_is_timed_in_little_memory(image):
    """dram.channels = 4096 and a dma.load of 16384 rows: the channel split was a [rows, channels + 1]
    int64 table per temporary (8 GiB at 262144 rows: a MemoryError in memory.interleaved_bytes)."""
    image = dataclasses.replace(image, hw_toml=image.hw_toml.replace("channels = 16", "channels = 4096"))
    assert "channels = 4096" in image.hw_toml
    data = with_instruction(image, 0, Opcode.DMA_LOAD, dram_addr=0, sram_addr=0, row_bytes=1, rows=16384,
                            dram_stride=0, sram_stride=1)
    tracemalloc.start()
    try:
        simulate(read_program(data), {"x": SPIKES_IN}, functional=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


def test_chunk_sums_do_not_pad_to_a_wide_bitmask_buffer():
    """tppe.bitmask_buffer_bits = 2**20 (in range): each visit's [M, K] spikes were padded to
    [M, 2**20] (vgg-small: 38 s and 1.9 GB of resident memory, a hang for the fuzzer)."""
    rng = np.random.default_rng(0)
    values = rng.random((256, 70)) < 0.3
    tracemalloc.start()
    try:
        wide = timing.chunk_sums(values, 1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert np.array_equal(wide, values.sum(axis=1, keepdims=True))
    for width in (1, 7, 64, 70, 71):  # several chunks: each the sum of its `width` positions
        expected = np.stack([values[:, c:c + width].sum(axis=1) for c in range(0, 70, width)], axis=1)
        assert np.array_equal(timing.chunk_sums(values, width), expected)


# ---------------------------------------------------------------------------------------
# I/O tensors: host memory bounded per element
# ---------------------------------------------------------------------------------------

def test_io_elements_are_bounded_by_the_host_bytes_they_take(image):
    """An ACT_I32 input of 2**27 elements in a 1 GiB dram_size passed (its float32 array fit
    dram.size_bytes) and took 5.7 GB resident in encode_input / decode_output."""
    big = dataclasses.replace(image.io[0], format=Format.ACT_I32, timesteps=1, t0=0, nt=1, channels=1 << 27,
                              channels_stored=1 << 27, onnx_shape=(1, 1, 1 << 27), dram_addr=4096)
    bad = dataclasses.replace(image, io=[big, *image.io[1:]], dram_size=1 << 30)
    with pytest.raises(BinaryFormatError, match=r"io\[0\] \('x'\): the I/O tensors take 2147483648 bytes on the "
                                                r"host \(16 per element\), more than dram.size_bytes = 1073741824"):
        read_program(fc.store_raw(fc.image_payloads(bad), bad.dram_size))


def _peak(run) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", [Format.ACT_I32, Format.ACT_I16, Format.SPIKE_PLANES, Format.SPIKE_WORDS])
def test_io_conversion_stays_within_its_per_element_bytes(fmt):
    """encode_input / decode_output convert a chunk (or a timestep) at a time: at most the
    LIMITS' bytes per element, where the float64 and int64 copies of the whole tensor took 44."""
    n = 1 << 23
    desc = IODesc("x", False, (1, 1, n), 0, fmt, 2 if fmt in (Format.ACT_I32, Format.ACT_I16) else 0, 1, 1, n, n,
                  1, 1)
    rng = np.random.default_rng(0)
    x = (rng.integers(-64, 64, n) / 4.0 if fmt in (Format.ACT_I32, Format.ACT_I16) else rng.integers(0, 2, n)
         ).astype(np.float32).reshape(1, 1, n)
    (raw, _), peak = _peak(lambda: tensors.encode_input(desc, x))
    assert peak < IO_HOST_BYTES_PER_ELEMENT * n
    decoded, peak = _peak(lambda: tensors.decode_output(desc, raw))
    assert peak < IO_HOST_BYTES_PER_ELEMENT * n
    assert np.array_equal(decoded, x)


def test_decoded_act_values_round_once_to_float32():
    """k * 2**-frac through float32(k) equals the correctly rounded float64 product at every frac
    the validator accepts (the decode no longer goes through float64)."""
    rng = np.random.default_rng(1)
    ints = np.concatenate([rng.integers(-(1 << 31), 1 << 31, 10_000), [0, 1, -1, (1 << 31) - 1, -(1 << 31),
                                                                    (1 << 24) + 1, -(1 << 24) - 3]]).astype("<i4")
    lo, hi = bf.io_frac_range(Format.ACT_I32)
    for frac in (lo, -10, 0, 17, hi):
        desc = IODesc("y", True, (1, 1, ints.size), 0, Format.ACT_I32, frac, 1, 1, ints.size, ints.size, 1, 1)
        got = tensors.decode_output(desc, ints.view(np.uint8)).reshape(-1)
        assert np.array_equal(got, np.ldexp(ints.astype(np.float64), -frac).astype(np.float32))


def test_ftp_visit_counts_without_int64_copies_of_the_visit():
    """The FTP timing of a large SYN visit held [M, K] int64 arrays (fired lanes, their
    corrections, the weighted bm-A): 2.9 GB and 19 s for a visit of 2**27 window elements."""
    rng = np.random.default_rng(3)
    for _ in range(20):  # the sums over positions first are the per-(m, k) counts summed
        nt, m_pos, k, n = int(rng.integers(1, 5)), int(rng.integers(0, 9)), int(rng.integers(1, 40)), 6
        lanes = rng.random((nt, m_pos, k)) < 0.4
        nzw = rng.random((n, k)) < 0.5
        visit = timing.ftp_visit(HwConfig(), lanes, nzw)
        fired, bm_a, col = lanes.sum(axis=0), lanes.any(axis=0), nzw.sum(axis=0)
        assert visit.correction_lanes == int((((nt - fired) * bm_a) @ col).sum())
        assert visit.corrected == int(((bm_a & (fired < nt)) @ col).sum())
    lanes = rng.random((4, 1 << 14, 1 << 10)) < 0.3  # 2**24 window elements per lane
    nzw = rng.random((8, 1 << 10)) < 0.5
    visit, peak = _peak(lambda: timing.ftp_visit(HwConfig(), lanes, nzw))
    assert peak < 10 * lanes[0].size  # the int64 form took > 24 bytes per (m, k)
    assert visit.dealt.counts.sum() == visit.matched > 0
