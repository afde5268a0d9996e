"""Fuzz cases shared by bench/fuzz.py and the tests (tests/test_fuzz*.py).

CONTRACT (pure functions of their arguments and a numpy Generator; no files unless named):
  * prog.bin mutants: `mutate_binary(data, rng)` -> (strategy, bytes). Strategies:
    byte-level edits of the stored file (`bytes`, CRCs left as they are: the container
    checks must catch them), the same with every CRC recomputed (`bytes+crc`), and
    field-level edits of the decoded sections re-stored raw with correct CRCs (`field`:
    header dram_size and reserved bytes, hw_config TOML values, constants, layer and
    instruction fields, I/O descriptor fields, names) -- those reach the validator and
    the simulator.
  * `recompute_crcs(data)`: every section CRC and the header/table CRC made consistent
    (as far as the table can be parsed).
  * `inputs_for(image, rng)`: valid inputs for a program's I/O descriptors.
  * bad input files: `bad_input_file(valid, rng)` -> (kind, bytes) from a valid input dict.
  * hardware configs: `mutate_toml(text, rng)` -> TOML text.
  * random canonical SNNs: `random_model(rng, ...)` -> (onnx.ModelProto, inputs, description)
    with weights and thresholds on a power-of-two grid, so that the compiled program is
    bit-exact with onnxruntime (T 1..8; dense, conv, max/avg pool, LIF and IF neurons,
    SEW residuals ADD / OR / AND).
Imports numpy, onnx (random models only) and snnc.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zipfile
import zlib

import numpy as np

from snnc.backend import binformat as bf
from snnc.backend import isa

# ---------------------------------------------------------------------------------------
# prog.bin
# ---------------------------------------------------------------------------------------

_WIDTH_MAX = {"B": (1 << 8) - 1, "H": (1 << 16) - 1, "I": (1 << 32) - 1, "Q": (1 << 64) - 1,
              "b": 127, "h": (1 << 15) - 1, "i": (1 << 31) - 1}


def _pick(options: list, rng):
    return options[int(rng.integers(0, len(options)))]


def _uniform(lo: int, hi: int, rng) -> int:
    """A uniform integer in [lo, hi] of any size (numpy's integers stop at int64)."""
    return lo + int.from_bytes(rng.bytes(9), "little") % (hi - lo + 1)


def interesting(fmt: str, original: int, rng: np.random.Generator) -> int:
    """A value for a field of struct code `fmt`: boundaries, powers of two, near the original, random."""
    top = _WIDTH_MAX[fmt]
    signed = fmt.islower()
    lo = -top - 1 if signed else 0
    if rng.random() < 0.15:
        return _uniform(lo, top, rng)
    bits = 8 * struct.calcsize(fmt)
    value = _pick([0, 1, 2, 3, 7, 8, 9, 15, 16, 63, 64, 65, 255, 256, top, top - 1, lo,
                   original + 1, original - 1, original * 2, original + 8, original * 255,
                   1 << int(rng.integers(0, bits - (1 if signed else 0)))], rng)
    return value if lo <= value <= top else _uniform(lo, top, rng)


def _table(data: bytes) -> list[tuple[int, int, int, int, int, int]] | None:
    """(entry offset, kind, encoding, crc, offset, size) per section table entry, or None."""
    if len(data) < bf.HEADER_STRUCT.size:
        return None
    n = struct.unpack_from("<H", data, 12)[0]
    end = bf.HEADER_STRUCT.size + n * bf.SECTION_STRUCT.size
    if end > len(data):
        return None
    out = []
    for i in range(n):
        at = bf.HEADER_STRUCT.size + i * bf.SECTION_STRUCT.size
        out.append((at, *bf.SECTION_STRUCT.unpack_from(data, at)))
    return out


def recompute_crcs(data: bytes) -> bytes:
    """`data` with every section CRC and the table CRC recomputed (sections that lie outside
    the file keep theirs)."""
    table = _table(data)
    if table is None:
        return data
    out = bytearray(data)
    for at, kind, encoding, _crc, offset, size in table:
        if offset + size <= len(data):
            struct.pack_into("<HHIQQ", out, at, kind, encoding, zlib.crc32(data[offset:offset + size]), offset, size)
    end = bf.HEADER_STRUCT.size + len(table) * bf.SECTION_STRUCT.size
    struct.pack_into("<I", out, 24, zlib.crc32(bytes(out[:24]) + bytes(out[bf.HEADER_STRUCT.size:end])))
    return bytes(out)


def store_raw(payloads: dict[bf.SectionKind, bytes], dram_size: int, reserved: tuple[int, int] = (0, 0)) -> bytes:
    """A prog.bin of these section bytes stored raw (no encoding), CRCs correct, nothing validated."""
    offset = bf.HEADER_STRUCT.size + bf.SECTION_STRUCT.size * len(payloads)
    table = []
    for kind, payload in payloads.items():
        table.append(bf.SECTION_STRUCT.pack(int(kind), 0, zlib.crc32(payload), offset, len(payload)))
        offset += len(payload)
    table_bytes = b"".join(table)
    head = bf.HEADER_STRUCT.pack(bf.MAGIC, bf.FORMAT_MAJOR, bf.FORMAT_MINOR, len(payloads), reserved[0], dram_size,
                                 0, reserved[1])
    head = head[:24] + struct.pack("<I", zlib.crc32(head[:24] + table_bytes)) + head[28:]
    return head + table_bytes + b"".join(payloads.values())


def image_payloads(image: bf.ProgramImage) -> dict[bf.SectionKind, bytes]:
    """The decoded section bytes of a (valid) image, in file order."""
    names = struct.pack("<I", len(image.layer_names)) + b"".join(bf._string(n) for n in image.layer_names)
    return {
        bf.SectionKind.HW_CONFIG: image.hw_toml.encode("utf-8"),
        bf.SectionKind.CONSTANTS: bytes(image.constants),
        bf.SectionKind.LAYERS: b"".join(image.layers),
        bf.SectionKind.LAYER_NAMES: names,
        bf.SectionKind.INSTRUCTIONS: bytes(image.instructions),
        bf.SectionKind.IO: bf._io_bytes(image.io),
        bf.SectionKind.MODEL_NAME: bf._string(image.model_name),
    }


def _set_field(record: bytes, layout: struct.Struct, index: int, value: int) -> bytes:
    values = list(layout.unpack_from(record))
    values[index] = value
    return layout.pack(*values) + record[layout.size:]


_IO_FIELDS = ("is_output", "format", "frac_bits", "reserved", "dram_addr", "timesteps", "batch", "channels",
              "channels_stored", "height", "width")


def _mutate_io(image: bf.ProgramImage, rng) -> bytes:
    if not image.io:
        return bf._io_bytes(image.io)
    descs = list(image.io)
    i = int(rng.integers(0, len(descs)))
    d = descs[i]
    what = rng.random()
    if what < 0.15:  # the shape alone, or shape and geometry together
        shape = list(d.onnx_shape)
        shape[int(rng.integers(0, len(shape)))] = interesting("I", 1, rng)
        d = dataclasses.replace(d, onnx_shape=tuple(shape))
    elif what < 0.2:
        d = dataclasses.replace(d, name=_pick(["", "x", "y\n", d.name * 3, "\u00e9"], rng))
    else:
        name = _IO_FIELDS[int(rng.integers(0, len(_IO_FIELDS)))]
        fmt = bf.IO_STRUCT.format[1:][_IO_FIELDS.index(name)]
        if name == "reserved":
            payload = bytearray(bf._io_bytes(descs))
            payload[int(rng.integers(0, len(payload)))] ^= 1 << int(rng.integers(0, 8))
            return bytes(payload)
        value = interesting(fmt, int(getattr(d, name) if name != "is_output" else d.is_output), rng)
        d = dataclasses.replace(d, **{name: value})
        if name in ("timesteps", "batch", "channels", "height", "width") and rng.random() < 0.5:
            d = dataclasses.replace(d, onnx_shape=_shape_of(d))  # keep the descriptor self-consistent
    descs[i] = d
    return bf._io_bytes(descs)


def _shape_of(d: bf.IODesc) -> tuple[int, ...]:
    if len(d.onnx_shape) == 3:
        return (d.timesteps, d.batch, d.channels)
    return (d.timesteps, d.batch, d.channels, d.height, d.width)


def _mutate_records(raw: bytes, size: int, rng, layout_of) -> bytes:
    if not raw:
        return raw
    n = len(raw) // size
    i = int(rng.integers(0, n))
    record = raw[i * size:(i + 1) * size]
    layout, fmts = layout_of(record)
    if layout is None or not fmts:
        new = bytearray(record)
        new[int(rng.integers(0, size))] = int(rng.integers(0, 256))
        record = bytes(new)
    else:
        k = int(rng.integers(0, len(fmts)))
        original = layout.unpack_from(record)[k]
        record = _set_field(record, layout, k, interesting(fmts[k], int(original), rng))
    return raw[:i * size] + record + raw[(i + 1) * size:]


def _instruction_layout(record: bytes):
    spec = isa.INSTRUCTION_BY_OPCODE.get(record[0])
    if spec is None:
        return None, ""
    return spec.struct, "B" + "".join(f.fmt for f in spec.fields)


def field_mutation(image: bf.ProgramImage, rng) -> bytes:
    """One field-level edit of a valid image, stored raw with correct CRCs."""
    payloads = image_payloads(image)
    dram_size, reserved = image.dram_size, (0, 0)
    for _ in range(1 + int(rng.integers(0, 3)) if rng.random() < 0.3 else 1):
        target = _pick(["dram_size", "reserved", "hw", "constants", "layer", "layer", "instruction",
                        "instruction", "instruction", "opcode", "io", "io", "names", "count"], rng)
        K = bf.SectionKind
        if target == "dram_size":
            dram_size = _pick([0, 1 << 63, (1 << 64) - 1, 1 << 40, 1 << 32, dram_size - 1, dram_size * 2,
                               interesting("Q", dram_size, rng)], rng)
        elif target == "reserved":
            reserved = (int(rng.integers(0, 2)), int(rng.integers(1, 1 << 32)))
        elif target == "hw":
            payloads[K.HW_CONFIG] = mutate_toml(payloads[K.HW_CONFIG].decode("utf-8", "replace"), rng).encode()
        elif target == "constants" and payloads[K.CONSTANTS]:
            raw = bytearray(payloads[K.CONSTANTS])
            for _ in range(int(rng.integers(1, 16))):
                raw[int(rng.integers(0, len(raw)))] = int(rng.integers(0, 256))
            payloads[K.CONSTANTS] = bytes(raw)
        elif target == "layer":
            fmts = "".join(f.fmt for f in isa.LAYER_FIELDS)
            payloads[K.LAYERS] = _mutate_records(payloads[K.LAYERS], isa.LAYER_BYTES, rng,
                                                 lambda _r: (isa.LAYER_STRUCT, fmts))
        elif target == "instruction":
            payloads[K.INSTRUCTIONS] = _mutate_records(payloads[K.INSTRUCTIONS], isa.INSTRUCTION_BYTES, rng,
                                                       _instruction_layout)
        elif target == "opcode" and payloads[K.INSTRUCTIONS]:
            raw = bytearray(payloads[K.INSTRUCTIONS])
            i = int(rng.integers(0, len(raw) // isa.INSTRUCTION_BYTES))
            raw[i * isa.INSTRUCTION_BYTES] = _pick([int(op) for op in isa.Opcode] + [0x3E, 0xFF], rng)
            payloads[K.INSTRUCTIONS] = bytes(raw)
        elif target == "io":
            payloads[K.IO] = _mutate_io(image, rng)
        elif target == "names":
            payloads[K.MODEL_NAME] = bf._string(_pick(["", "m" * 1000, "a\nb", "\u2603"], rng))
        elif target == "count":
            kind = _pick([K.LAYER_NAMES, K.IO], rng)
            raw = bytearray(payloads[kind])
            struct.pack_into("<I", raw, 0, interesting("I", struct.unpack_from("<I", raw)[0], rng))
            payloads[kind] = bytes(raw)
    return store_raw(payloads, int(dram_size) & ((1 << 64) - 1), reserved)


def byte_mutation(data: bytes, rng) -> bytes:
    """Random edits of the stored bytes: bit flips, interesting integers, cuts, splices."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        what = rng.random()
        if not out:
            break
        at = int(rng.integers(0, len(out)))
        if what < 0.35:
            out[at] ^= 1 << int(rng.integers(0, 8))
        elif what < 0.6:
            fmt = _pick(["<B", "<H", "<I", "<Q"], rng)
            size = struct.calcsize(fmt)
            if at + size <= len(out):
                struct.pack_into(fmt, out, at, interesting(fmt[1], struct.unpack_from(fmt, out, at)[0], rng))
        elif what < 0.7:
            del out[at:at + int(rng.integers(1, 64))]
        elif what < 0.8:
            out[at:at] = bytes(rng.integers(0, 256, size=int(rng.integers(1, 32)), dtype=np.uint8))
        elif what < 0.9:
            start = int(rng.integers(0, len(out)))
            out[at:at] = out[start:start + int(rng.integers(1, 128))]
        else:
            out = out[:at]
    return bytes(out)


def mutate_binary(data: bytes, rng, image: bf.ProgramImage | None = None) -> tuple[str, bytes]:
    """(strategy, mutant) of a valid prog.bin `data` (its decoded `image`, for field edits)."""
    pick = rng.random()
    if pick < 0.5 or image is None:
        mutant = byte_mutation(data, rng)
        return ("bytes+crc", recompute_crcs(mutant)) if pick < 0.25 else ("bytes", mutant)
    return "field", field_mutation(image, rng)


def inputs_for(image: bf.ProgramImage, rng) -> dict[str, np.ndarray]:
    """Valid inputs for every input descriptor (spikes for spike formats)."""
    out = {}
    for d in image.io:
        if d.is_output:
            continue
        if d.format in (isa.Format.SPIKE_PLANES, isa.Format.SPIKE_WORDS):
            out[d.name] = (rng.random(d.onnx_shape) < 0.3).astype(np.float32)
        else:
            out[d.name] = (rng.integers(-8, 9, size=d.onnx_shape) / 4).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------
# input files and hardware configs
# ---------------------------------------------------------------------------------------

def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


BAD_INPUT_KINDS = ("npy", "npy-named-npz", "complex", "string", "datetime", "structured", "object", "wrong-shape",
                   "missing", "extra", "nan", "inf", "huge", "bytes", "truncated", "not-zip", "empty", "bool", "int",
                   "float16", "big-endian", "huge-header", "zip-garbage-member", "spike-values")


def bad_input_file(valid: dict[str, np.ndarray], rng, kind: str | None = None) -> tuple[str, bytes]:
    """(kind, file bytes) of an input file derived from `valid` (one array per graph input);
    `kind` one of BAD_INPUT_KINDS, else drawn."""
    name, x = next(iter(valid.items()))
    kind = kind or _pick(BAD_INPUT_KINDS, rng)
    arrays = dict(valid)
    if kind in ("npy", "npy-named-npz"):
        buffer = io.BytesIO()
        np.save(buffer, x)
        return kind, buffer.getvalue()
    if kind == "complex":
        arrays[name] = x.astype(np.complex64)
    elif kind == "string":
        arrays[name] = x.astype(str)
    elif kind == "datetime":
        arrays[name] = np.zeros(x.shape, dtype="datetime64[s]")
    elif kind == "structured":
        arrays[name] = np.zeros(x.shape, dtype=[("a", "<f4"), ("b", "<i4")])
    elif kind == "object":
        buffer = io.BytesIO()
        np.savez(buffer, **{name: np.array([1, "a", None], dtype=object)})
        return kind, buffer.getvalue()
    elif kind == "wrong-shape":
        arrays[name] = x.reshape(-1)[: max(1, x.size - 1)]
    elif kind == "missing":
        arrays = {}
    elif kind == "extra":
        arrays["unknown"] = x
    elif kind in ("nan", "inf", "huge", "spike-values"):
        y = x.copy().reshape(-1)
        y[int(rng.integers(0, y.size))] = {"nan": np.nan, "inf": np.inf, "huge": 1e30, "spike-values": 0.5}[kind]
        arrays[name] = y.reshape(x.shape)
    elif kind in ("bool", "int", "float16", "big-endian"):
        arrays[name] = x.astype({"bool": bool, "int": np.int64, "float16": np.float16, "big-endian": ">f8"}[kind])
    data = _npz(arrays)
    if kind == "bytes":
        raw = bytearray(data)
        for _ in range(int(rng.integers(1, 8))):
            raw[int(rng.integers(0, len(raw)))] = int(rng.integers(0, 256))
        return kind, bytes(raw)
    if kind == "truncated":
        return kind, data[:int(rng.integers(0, len(data)))]
    if kind == "not-zip":
        return kind, bytes(rng.integers(0, 256, size=64, dtype=np.uint8))
    if kind == "empty":
        return kind, b""
    if kind == "huge-header":  # an .npy member whose header declares far more data than it holds
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (1 << 20, 1 << 20)})
        return kind, _zip({f"{name}.npy": header.getvalue() + b"\0" * 64})
    if kind == "zip-garbage-member":
        return kind, _zip({f"{name}.npy": b"\x93NUMPY\x01\x00" + bytes(rng.integers(0, 256, 40, dtype=np.uint8)),
                           "readme.txt": b"hello"})
    return kind, data


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, payload in members.items():
            archive.writestr(member, payload)
    return buffer.getvalue()


_TOML_VALUES = ["0", "1", "-1", "2", "3", "64", "4096", "1e308", "-1e308", "nan", "inf", "0.0", "1.5", "true",
                "\"balanced\"", "\"rounds\"", "\"x\"", "[]", "[1, 2]", "{}", "1073741824", "4294967296",
                "18446744073709551615", "16777216", "1024", "65536", "262144", "0x10", "1_000"]


def mutate_toml(text: str, rng) -> str:
    """A hardware config TOML with some values, keys or lines replaced."""
    lines = text.splitlines()
    for _ in range(int(rng.integers(1, 4))):
        if not lines:
            break
        i = int(rng.integers(0, len(lines)))
        line = lines[i]
        what = rng.random()
        if "=" in line and what < 0.7:
            key = line.split("=", 1)[0].strip()
            lines[i] = f"{key} = {_TOML_VALUES[int(rng.integers(0, len(_TOML_VALUES)))]}"
        elif what < 0.8:
            del lines[i]
        elif what < 0.9:
            lines.insert(i, _pick(["[compute]", "[nope]", "x = 1", "size_bytes = 2048", "= 3", "[sram"], rng))
        else:
            raw = bytearray(line.encode())
            if raw:
                raw[int(rng.integers(0, len(raw)))] = int(rng.integers(32, 127))
            lines[i] = raw.decode("ascii", "replace")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# random canonical models (the differential test of every pipeline)
# ---------------------------------------------------------------------------------------

PIPELINES = (None, "spike-pack", "loop-reorder{dataflow=ip-seq}", "loop-reorder{dataflow=op}",
             "loop-reorder{dataflow=gust}", "time-batch{timesteps=1}", "layer-fuse",
             "time-batch{timesteps=1},layer-fuse", 'tile-sizes{least_traffic="*"}',
             'loop-reorder{dataflow=ip-seq},time-batch{timesteps=1},tile-sizes{least_traffic="*"}')
RESIDUALS = ("add", "or", "and")


def _grid(rng, shape, scale: int = 8, span: int = 4) -> np.ndarray:
    """Integers in [-span, span] / scale: exact at 8-bit weights."""
    return rng.integers(-span, span + 1, size=shape) / scale


def random_model(rng, max_timesteps: int = 8):
    """(onnx model, {"x": input}, description) of a random canonical SNN whose values are exact in
    the accelerator's fixed point (weights k/8, inputs k/4, thresholds k/4, beta in {1/4, 1/2, 3/4, 1}),
    so that every pipeline must reproduce onnxruntime bit for bit."""
    from snnc.compiler.frontend.canonical import Network

    timesteps = int(rng.integers(1, max_timesteps + 1))
    net = Network(timesteps=timesteps, name="random")
    parts = [f"T={timesteps}"]
    spikes_in = bool(rng.random() < 0.5)
    conv = bool(rng.random() < 0.6)
    if conv:
        channels, size = int(rng.integers(1, 4)), int(rng.integers(3, 8))
        shape = (1, channels, size, size)
    else:
        shape = (1, int(rng.integers(4, 20)))
    x = net.input("x", shape)
    parts.append(f"x{list(shape)}{' spikes' if spikes_in else ''}")
    and_nodes: list[str] = []
    counter = [0]

    def neuron(current, tag):
        counter[0] += 1
        threshold = float(rng.integers(1, 7)) / 4
        reset = "zero" if rng.random() < 0.3 else "subtract"
        if rng.random() < 0.5:
            beta = float(_pick([0.25, 0.5, 0.75, 1.0], rng))
            parts.append(f"LIF(b={beta},th={threshold},{reset})")
            return net.lif(current, beta=beta, threshold=threshold, reset=reset, name=f"{tag}{counter[0]}")
        parts.append(f"IF(th={threshold},{reset})")
        return net.if_neuron(current, threshold=threshold, reset=reset, name=f"{tag}{counter[0]}")

    def synapse(value, out_features=None):
        counter[0] += 1
        if len(value.shape) == 4:
            c_in = value.shape[1]
            c_out = out_features or int(rng.integers(2, 9))
            k = int(_pick([1, 3], rng)) if value.shape[2] >= 3 else 1
            stride = int(_pick([1, 1, 2], rng)) if out_features is None else 1
            pads = k // 2 if (out_features is not None or rng.random() < 0.7) else 0
            parts.append(f"conv{k}x{k}/s{stride}p{pads}->{c_out}")
            bias = _grid(rng, (c_out,)) if rng.random() < 0.5 else None
            return net.conv2d(value, _grid(rng, (c_out, c_in, k, k)), bias, strides=stride, pads=pads,
                              name=f"conv{counter[0]}")
        n_out = out_features or int(rng.integers(4, 20))
        parts.append(f"dense->{n_out}")
        bias = _grid(rng, (n_out,)) if rng.random() < 0.5 else None
        return net.dense(value, _grid(rng, (value.shape[1], n_out)), bias, name=f"fc{counter[0]}")

    h = x
    spikes, membrane = neuron(synapse(h), "n")
    for _ in range(int(rng.integers(0, 3))):
        what = rng.random()
        counter[0] += 1  # a fresh number for this block's pool / SEW node names
        if what < 0.4:  # a SEW residual block: spikes + f(spikes), f = synapse of the same shape -> neuron
            kind = _pick(RESIDUALS, rng)
            branch, _ = neuron(synapse(spikes, spikes.shape[1]), "r")
            parts.append(f"SEW-{kind.upper()}")
            if kind == "add":
                combined = net.add(spikes, branch, name=f"sew{counter[0]}")
                spikes, membrane = neuron(synapse(combined), "n")  # a multi-bit sum feeds a synapse
                continue
            combined = net.spike_or(spikes, branch, name=f"sew{counter[0]}")
            if kind == "and":
                and_nodes.append(f"sew{counter[0]}")
            spikes = combined
        elif what < 0.6 and len(spikes.shape) == 4 and spikes.shape[2] >= 2:
            if rng.random() < 0.5:
                parts.append("maxpool2")
                spikes = net.max_pool2d(spikes, 2, name=f"pool{counter[0]}")
            else:
                parts.append("avgpool2")
                pooled = net.avg_pool2d(spikes, 2, name=f"pool{counter[0]}")
                spikes, membrane = neuron(synapse(pooled), "n")
        else:
            spikes, membrane = neuron(synapse(spikes), "n")
    if len(spikes.shape) == 4 and rng.random() < 0.7:
        parts.append("flatten")
        spikes = net.flatten(spikes, name="flatten")
        spikes, membrane = neuron(synapse(spikes), "n")
    net.output(spikes, "spikes")
    if rng.random() < 0.5 and membrane.shape == spikes.shape:
        net.output(membrane, "membrane")
    model = net.to_onnx(form="unrolled")
    for node in model.graph.node:  # SEW-AND: Min of two spike trains (an importer spelling of AND)
        if node.op_type == "Max" and any(node.name == n or node.name.startswith(n + ".") for n in and_nodes):
            node.op_type = "Min"
    shape_t = (timesteps, *shape)
    if spikes_in:
        value = (rng.random(shape_t) < 0.4).astype(np.float32)
    else:
        value = (rng.integers(0, 9, size=shape_t) / 4).astype(np.float32)
    return model, {"x": value}, " ".join(parts)
