"""The snnc accelerator ISA: the one table every other component derives from.

The tables: INSTRUCTIONS (opcode, mnemonic, fields, SRAM operands), LAYER_FIELDS
and IO_FIELDS. A field declares its struct type and, for enum and flag fields,
its `enum_type`. From them come:
  * the encoder (`encode_instruction`, `encode_layer`; `snnc.passes.encode`) and
    the decoders, which reject invalid enum values and unknown flag bits
    (`decode_instruction`, `decode_layer`; binformat's I/O reader);
  * the disassembler (`snnc.backend.disasm`: enum and flag fields by name);
  * the accel dialect (`snnc.dialects.accel`: one op per instruction, generated;
    its printing, parsing and verification, enum fields by name, the layer kinds
    an instruction runs on);
  * the SRAM operands of every instruction (`sram_operands`: which fields hold
    SRAM addresses, read or written, how many bytes), used by the accel verifier,
    the lowering's barriers, dma-prefetch, the binary validator and the simulator;
  * `tile_bytes` / `tensor_bytes`, the sizes of tiles and feature maps;
  * docs/isa.md's reference tables (`snnc.backend.isa_doc`).
Adding an instruction is one InstructionSpec (with its operands function and, for a
tile instruction, its layer kinds) plus its simulator handler; its accel op, encoding,
decoding, disassembly, validation and docs follow. Adding an enum value is one member
of its enum class.
This module imports only the standard library, so the runtime can use it
without pulling in the compiler (xDSL, ONNX).

Machine model (details in docs/isa.md):
  * DRAM: byte-addressed; holds the constants image, inputs, outputs and
    intermediate feature maps at addresses fixed by the compiler.
  * Global SRAM ("global cache", LoAS Table III): byte-addressed scratchpad; the
    compiler allocates every tile buffer at an explicit address.
  * 16 TPPEs with T lanes each compute synaptic currents for all timesteps of an
    output neuron at once (LoAS Alg. 1); P-LIF units fire all lanes together.
  * Every instruction is INSTRUCTION_BYTES long: opcode (u8) followed by the
    opcode's fields, little-endian, zero padded.
  * Static per-layer geometry and number formats live in LAYER descriptors
    (section `layers` of prog.bin); instructions refer to them by index.
"""

from __future__ import annotations

import enum
import functools
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

INSTRUCTION_BYTES = 48
NO_ADDRESS = 0xFFFFFFFF  # an absent optional SRAM operand


class Opcode(enum.IntEnum):
    NOP = 0x00
    DMA_LOAD = 0x01
    DMA_STORE = 0x02
    DMA_LOAD_BM = 0x03
    DMA_STORE_BM = 0x04
    MOVE = 0x05
    SYN = 0x10
    LIF = 0x11
    PACK = 0x12
    POOL = 0x13
    ADD = 0x14
    BARRIER = 0x20
    EXIT_CHECK = 0x21
    HALT = 0x3F


class Format(enum.IntEnum):
    """Element formats of tensors in DRAM and of tiles in SRAM."""

    SPIKE_PLANES = 0  # 1 bit per spike; one bit plane per timestep (t-major)
    SPIKE_WORDS = 1  # all T bits of a neuron in one word (LoAS Fig. 8 "packed")
    ACT_I16 = 2  # signed 16-bit fixed point, `frac_bits` fractional bits, per timestep
    ACT_I32 = 3  # signed 32-bit fixed point (membranes, currents), per timestep
    SPIKE_BITMASK = 4  # LoAS Fig. 8: per-row bitmask of non-silent neurons + pointer + their T-bit words


class Dataflow(enum.IntEnum):
    """Loop order of a CONV layer over (t, m, n, k); LoAS §III and §V "Baseline"."""

    FTP = 0  # m, n, k, parallel-for t: fully temporal-parallel (LoAS Algorithm 1)
    IP_SEQ = 1  # inner product, t sequential innermost (SparTen-SNN)
    OP = 2  # outer product (GoSPA-SNN)
    GUST = 3  # Gustavson (Gamma-SNN)


class LayerKind(enum.IntEnum):
    CONV = 0  # synapses; a dense layer is a 1x1 conv on a 1x1 image
    MAXPOOL = 1
    AVGPOOL = 2
    ADD = 3


class LeakForm(enum.IntEnum):
    NONE = 0
    BETA = 1
    TAU = 2


class ResetMode(enum.IntEnum):
    SUBTRACT = 0
    ZERO = 1
    TO_VALUE = 2


class LifFlags(enum.IntFlag):
    COMPARE_GT = 0x1  # strict '>' (else '>=')
    DELAYED_RESET = 0x2  # snnTorch's delayed, undecayed subtract reset
    PER_CHANNEL = 0x4  # neuron parameters vary per output channel
    NO_FIRE = 0x8  # a leaky integrator (NIR LI): never spikes, so never resets; the membrane is the output


class LayerFlags(enum.IntFlag):
    """The layer descriptor's `flags` field."""

    AVG_COUNT_PAD = 0x1  # AVGPOOL: the average counts padding
    ADD_AND = 0x2  # ADD: out = (a != 0) & (b != 0) (spike-wise AND) instead of the sum


class SynFlags(enum.IntFlag):
    ACCUMULATE = 0x1  # add into the accumulator tile instead of starting from bias
    COMPRESSED_WEIGHTS = 0x2  # w_addr holds the tile's chs weight fibers packed (w_bytes bytes), not [chs][K]


class DmaFlags(enum.IntFlag):
    """Flags of dma.load_bm / dma.store_bm."""

    SPIKES = 0x1  # the elements are spike words (counted for the compression report)
    MASK_SINGLE = 0x2  # store: words with exactly one spike are dropped as silent (LoAS §IV-C)
    PACKED = 0x4  # load: fibers lie back to back (no slots): fiber i+1 starts where fiber i's data ends
    KEEP_COMPRESSED = 0x8  # load: copy the fibers packed into SRAM (sram_bytes of them), do not expand them


# the flags as plain ints for the per-instruction tests below: `int & IntFlag` builds a flag object
_ACCUMULATE, _COMPRESSED_WEIGHTS = int(SynFlags.ACCUMULATE), int(SynFlags.COMPRESSED_WEIGHTS)
_PACKED, _KEEP_COMPRESSED = int(DmaFlags.PACKED), int(DmaFlags.KEEP_COMPRESSED)


# Bitmask-compressed fibers (LoAS §IV-A, Fig. 8): a fiber is one row of elements
# (a spatial row [W][Cs] of spike words, or one output channel's weight column
# [kh][kw][Cs_in]) stored in a fixed-size DRAM slot:
#   u32 count (the fiber's pointer: non-zero elements, i.e. where the next fiber's
#   data starts in a dense packing), bitmask of `elems` bits (little-endian bit
#   order, bit i = element i is non-zero), then the `count` non-zero elements in
#   order, each `elem_bits` wide, bit-packed little-endian (a spike word of T
#   timesteps takes T bits: LoAS packs the T spikes of a neuron in one T-bit value).
#   Only 4 + ceil(elems/8) + ceil(count * elem_bits / 8) bytes move.
# With DmaFlags.PACKED (loads of constants, e.g. compressed weights, whose sizes the
# compiler knows) the fibers are stored back to back instead of in slots: fiber i+1
# starts right after fiber i's last data byte, so the DRAM image holds exactly the
# compressed bytes; the instruction's dram_addr is its first fiber's start.
# With DmaFlags.KEEP_COMPRESSED a load copies its fibers into SRAM packed back to back
# (`sram_bytes` of them) instead of expanding them: LoAS's FiberCache holds fibers
# compressed. A SYN with SynFlags.COMPRESSED_WEIGHTS reads such a weight tile: `chs`
# fibers of kh*kw*in_cs weights, `w_bytes` in all.
FIBER_HEADER_BYTES = 4


def fiber_slot_bytes(elems: int, elem_bits: int) -> int:
    """DRAM bytes reserved for one compressed fiber of `elems` elements of `elem_bits` bits."""
    return FIBER_HEADER_BYTES + (elems + 7) // 8 + (elems * elem_bits + 7) // 8


def fiber_dma_end(dram_addr: int, fibers: int, elems: int, elem_bits: int, flags: int) -> int:
    """The DRAM end a dma.load_bm / dma.store_bm certainly reaches: all its slots, or with
    DmaFlags.PACKED its fibers' headers and bitmasks (the data lengths come from the
    pointers, checked when they are walked)."""
    if flags & DmaFlags.PACKED:
        return dram_addr + fibers * (FIBER_HEADER_BYTES + (elems + 7) // 8)
    return dram_addr + fibers * fiber_slot_bytes(elems, elem_bits)


WEIGHT_FIBER_OPCODES = frozenset((Opcode.DMA_LOAD_BM, Opcode.DMA_STORE_BM, Opcode.SYN))  # weight_fiber_field_error's


def weight_fiber_field_error(opcode: Opcode, fields: dict[str, int]) -> str | None:
    """A message starting with the field's name when an instruction's weight-fiber flags and
    sizes disagree, else None: PACKED / KEEP_COMPRESSED are for loads only; sram_bytes goes
    with KEEP_COMPRESSED and w_bytes with SynFlags.COMPRESSED_WEIGHTS (each > 0 exactly when
    its flag is set). The one statement of the rule, for the binary validator (which the
    simulator runs first) and the accel verifier; it concerns WEIGHT_FIBER_OPCODES only."""
    flags = fields.get("flags", 0)
    if opcode == Opcode.DMA_STORE_BM and flags & (_PACKED | _KEEP_COMPRESSED):
        return "flags: PACKED is for dma.load_bm only (a store writes slots), and so is KEEP_COMPRESSED"
    if opcode == Opcode.DMA_LOAD_BM and bool(flags & _KEEP_COMPRESSED) != (fields["sram_bytes"] > 0):
        return f"sram_bytes = {fields['sram_bytes']}: goes with flag KEEP_COMPRESSED (and only with it)"
    if opcode == Opcode.SYN and bool(flags & _COMPRESSED_WEIGHTS) != (fields["w_bytes"] > 0):
        return f"w_bytes = {fields['w_bytes']}: goes with flag COMPRESSED_WEIGHTS (and only with it)"
    return None


def exit_check_field_error(fields: dict[str, int], outputs: dict[int, int], last_check: dict[int, int]) -> str | None:
    """A message starting with the field's name when an exit.check does not name an output
    descriptor (`outputs`: io index -> its timesteps) and one of its timesteps, or breaks the
    order t = 0, 1, 2, ... of its output's checks (the exit unit's running sum starts at t = 0
    and adds one timestep per check); `last_check` (io index -> t of its last check so far)
    carries the order across a program and is updated. For the binary validator and the
    accel verifier."""
    io, t = fields["io"], fields["t"]
    if io not in outputs:
        return f"io = {io}: not an output descriptor (outputs: {sorted(outputs)})"
    if t >= outputs[io]:
        return f"t = {t}: outside 0..{outputs[io] - 1}"
    expected = last_check.get(io, -1) + 1
    if t != expected:
        return f"t = {t}: the checks of io {io} go t = 0, 1, 2, ... in program order, expected t = {expected}"
    last_check[io] = t
    return None


def fiber_dma_hull(dram_addr: int, fibers: int, elems: int, elem_bits: int, flags: int, sram_bytes: int) -> int:
    """The DRAM end a dma.load_bm / dma.store_bm can reach at most: PACKED fibers kept
    compressed move exactly `sram_bytes`; otherwise no fiber is longer than its slot."""
    if flags & DmaFlags.PACKED and flags & DmaFlags.KEEP_COMPRESSED:
        return dram_addr + sram_bytes
    return dram_addr + fibers * fiber_slot_bytes(elems, elem_bits)


def fiber_tile_offsets(fibers: int, elems: int, word_bytes: int, sram_stride: int, run_elems: int,
                       run_stride: int) -> tuple[int, int, int] | None:
    """How a dma.load_bm / store_bm lays its expanded fibers out in SRAM: (fiber stride,
    run elements, run stride) in bytes/elements, or None when they are back to back
    ([fibers][fiber_elems] dense). A channel-sliced packed map uses the strides: fiber i
    holds one row of a channel slice, whose W runs of `run_elems` words lie `run_stride`
    apart in the channel-last SRAM tile."""
    stride = sram_stride or elems * word_bytes
    run = run_elems or elems
    step = run_stride if run_elems else run * word_bytes
    if stride == elems * word_bytes and (run >= elems or step == run * word_bytes):
        return None
    return stride, run, step


def fiber_layout_error(fibers: int, elems: int, word_bytes: int, sram_stride: int, run_elems: int,
                       run_stride: int) -> str | None:
    """A message starting with the field's name when a strided fiber tile's runs lie closer than
    a run or its fibers closer than a fiber's extent (interleaving them), else None. Overlapping
    elements would be written in no defined order by an expanding load; the lowering's channel
    slices never interleave."""
    layout = fiber_tile_offsets(fibers, elems, word_bytes, sram_stride, run_elems, run_stride)
    if layout is None:
        return None
    stride, run, step = layout
    if elems > run and step < run * word_bytes:
        return f"run_stride = {run_stride}: runs of {run} {word_bytes}-byte words overlap (expected >= {run * word_bytes})"
    span = fiber_tile_extent(1, elems, word_bytes, sram_stride, run_elems, run_stride)
    if fibers > 1 and stride < span:
        return f"sram_stride = {sram_stride}: fibers {stride} bytes apart, each spans {span} bytes (expected >= {span})"
    return None


def fiber_tile_extent(fibers: int, elems: int, word_bytes: int, sram_stride: int = 0, run_elems: int = 0,
                      run_stride: int = 0) -> int:
    """SRAM bytes from the tile's address to the end of its last expanded element."""
    if fibers == 0 or elems == 0:
        return 0
    layout = fiber_tile_offsets(fibers, elems, word_bytes, sram_stride, run_elems, run_stride)
    if layout is None:
        return fibers * elems * word_bytes
    stride, run, step = layout
    last = elems - 1
    end = (last // run) * step + (last % run) * word_bytes  # the last element's offset in its fiber
    if last >= run:  # a run stride below the run's bytes overlaps runs: the last full run may end later
        end = max(end, (last // run - 1) * step + (run - 1) * word_bytes)
    return (fibers - 1) * stride + end + word_bytes


HAZARD_ROWS = 16  # a strided DMA of more rows is ordered by its hull (conservative)


def strided_ranges(addr: int, rows: int, row_bytes: int, stride: int) -> list[tuple[int, int]]:
    """The byte ranges [lo, hi) of `rows` rows of `row_bytes` at `addr + i * stride`, as the
    DMA engine orders transfers by them (docs/isa.md "Timing model"): one per row, one in all
    when the rows touch, their hull beyond HAZARD_ROWS rows."""
    if rows <= 0 or row_bytes <= 0:
        return []
    last = addr + (rows - 1) * stride
    if rows == 1 or stride == row_bytes:
        return [(addr, last + row_bytes)]
    if rows > HAZARD_ROWS or stride < row_bytes:
        return [(min(addr, last), max(addr, last) + row_bytes)]
    return [(addr + i * stride, addr + i * stride + row_bytes) for i in range(rows)]


@dataclass(frozen=True)
class Field:
    name: str
    fmt: str  # struct code: B H I Q b h i
    doc: str
    optional: bool = False  # may be left out when encoding (0); instructions from before it decode it as 0
    enum_type: type[enum.IntEnum] | None = None  # its values are this enum's (IntFlag: a set of its flags)

    @property
    def size(self) -> int:
        return struct.calcsize("<" + self.fmt)

    def value_error(self, value: int) -> str | None:
        """Why `value` is not valid for this field's enum or flag set (a message starting with
        the field's name), or None. Every decoder and verifier checks enum fields with this."""
        enum_type = self.enum_type
        if enum_type is None:
            return None
        if issubclass(enum_type, enum.IntFlag):
            unknown = value & ~flag_mask(enum_type)
            if unknown:
                return f"{self.name} = {value:#x} sets bits {unknown:#x} that are no {enum_type.__name__}"
            return None
        if value not in enum_values(enum_type):
            return f"{self.name} = {value} is not a valid {enum_type.__name__}"
        return None


@functools.cache
def flag_mask(flags: type[enum.IntFlag]) -> int:
    """Every bit of a flag set."""
    return functools.reduce(lambda mask, flag: mask | int(flag), flags, 0)


@functools.cache
def enum_values(enum_type: type[enum.IntEnum]) -> frozenset[int]:
    return frozenset(int(member) for member in enum_type)


def flag_names(flags: type[enum.IntFlag], value: int) -> tuple[list[str], int]:
    """(names of the flags set in `value`, in declaration order; bits that are no flag)."""
    return [flag.name for flag in flags if value & flag], value & ~flag_mask(flags)


def fields_of_enums(fields: tuple[Field, ...]) -> tuple[Field, ...]:
    return tuple(f for f in fields if f.enum_type is not None)


class SramOperand(NamedTuple):  # a tuple: built for every instruction by the compiler, verifiers and simulator
    """One SRAM range an instruction reads and/or writes."""

    field: str  # the instruction field holding the address
    addr: int
    size: int
    reads: bool
    writes: bool

    @property
    def end(self) -> int:
        return self.addr + self.size


# An instruction's SRAM operands from its field values and its layer descriptor's fields
# (None for instructions without a `layer` field); see "SRAM operands" below.
OperandsFn = Callable[[Mapping[str, int], Mapping[str, int] | None], list[SramOperand]]


def _no_operands(fields: Mapping[str, int], layer: Mapping[str, int] | None) -> list[SramOperand]:
    return []


@dataclass(frozen=True)
class InstructionSpec:
    opcode: Opcode
    mnemonic: str
    fields: tuple[Field, ...]
    doc: str
    sram_operands: OperandsFn = _no_operands  # every SRAM range it touches (the one definition)
    layer_kinds: tuple[LayerKind, ...] = ()  # the kinds of layer it runs on (instructions with a `layer` field)

    @functools.cached_property  # built once per opcode: decoding calls it per instruction
    def struct(self) -> struct.Struct:
        return struct.Struct("<B" + "".join(f.fmt for f in self.fields))

    @functools.cached_property
    def enum_fields(self) -> tuple[Field, ...]:
        return fields_of_enums(self.fields)

    @property
    def has_layer(self) -> bool:
        """Whether the instruction works on a layer's tile (its first field is `layer`)."""
        return bool(self.fields) and self.fields[0].name == "layer"


# --------------------------------------------------------------------------------------
# Tile and tensor sizes, and the SRAM operands of every instruction
# --------------------------------------------------------------------------------------

WORD_FORMATS = (Format.SPIKE_WORDS, Format.SPIKE_BITMASK)  # SRAM tiles of all-T words per neuron


def element_bits(fmt: Format) -> int:
    """Bits per element of a per-timestep format (SPIKE_WORDS is per neuron, not per step)."""
    return _ELEMENT_BITS[fmt]


_ELEMENT_BITS = {Format.SPIKE_PLANES: 1, Format.ACT_I16: 16, Format.ACT_I32: 32}  # built once: tile_bytes is hot


def tile_bytes(fmt: Format, lanes: int, elements: int, timesteps: int) -> int:
    """Bytes of an SRAM tile of `elements` neurons per timestep in `fmt`, for a visit of
    `lanes` timesteps: a word format (SPIKE_WORDS, and SPIKE_BITMASK whose SRAM tile is the
    expanded words) holds all `timesteps` bits of a neuron in one word whatever the visit."""
    if fmt in WORD_FORMATS:
        return spike_word_bytes(timesteps) * elements
    return (lanes * elements * element_bits(fmt) + 7) // 8


def tensor_bytes(fmt: Format, timesteps: int, batch: int, height: int, width: int, cs: int) -> int:
    """Bytes of a DRAM feature map `[T][B][H][W][Cs]` (or `[B][H][W][Cs]` words)."""
    if fmt == Format.SPIKE_WORDS:
        return spike_word_bytes(timesteps) * batch * height * width * cs
    if fmt == Format.SPIKE_BITMASK:  # one compressed fiber slot per spatial row
        return batch * height * fiber_slot_bytes(width * cs, timesteps)
    return timesteps * batch * height * width * cs * element_bits(fmt) // 8


def weight_tile_bytes(fields: Mapping[str, int], layer: Mapping[str, int]) -> int:
    """SRAM bytes of a SYN's weight tile: `w_bytes` of packed fibers (SynFlags.COMPRESSED_WEIGHTS)
    or [chs][kh][kw][in_cs] weights of weight_bytes."""
    if fields["flags"] & _COMPRESSED_WEIGHTS:
        return fields["w_bytes"]
    return fields["chs"] * layer["kh"] * layer["kw"] * layer["in_cs"] * layer["weight_bytes"]


# SRAM operands: for every instruction, each field holding an SRAM address, whether the
# instruction reads and/or writes there and how many bytes, from its fields and its layer's
# geometry (the tile layouts of the field docs). This is the one definition: the accel
# verifier checks these ranges against the SRAM, the lowering and dma-prefetch order
# instructions by them, the binary validator checks them, and the simulator's timing
# scoreboard and SRAM traffic counters use them. Order: the reads and the writes of an
# instruction are reported in this order (runtime/report.py names them by position).

def _strided_extent(rows: int, row_bytes: int, stride: int) -> int:
    return (rows - 1) * stride + row_bytes


def _dma_operands(load: bool) -> OperandsFn:
    def operands(f: Mapping[str, int], layer: Mapping[str, int] | None) -> list[SramOperand]:
        if f["rows"] == 0 or f["row_bytes"] == 0:
            return []
        extent = _strided_extent(f["rows"], f["row_bytes"], f["sram_stride"])
        return [SramOperand("sram_addr", f["sram_addr"], extent, not load, load)]
    return operands


def _fiber_dma_operands(load: bool) -> OperandsFn:
    def operands(f: Mapping[str, int], layer: Mapping[str, int] | None) -> list[SramOperand]:
        if f["flags"] & _KEEP_COMPRESSED:  # the fibers as they are, packed
            size = f["sram_bytes"]
        else:  # the dense tile [fibers][fiber_elems]
            size = fiber_tile_extent(f["fibers"], f["fiber_elems"], f["word_bytes"], f.get("sram_stride", 0),
                                     f.get("run_elems", 0), f.get("run_stride", 0))
        return [SramOperand("sram_addr", f["sram_addr"], size, not load, load)] if size else []
    return operands


def _move_operands(f: Mapping[str, int], layer: Mapping[str, int] | None) -> list[SramOperand]:
    if f["rows"] == 0 or f["row_bytes"] == 0:
        return []
    return [
        SramOperand("src_addr", f["src_addr"], _strided_extent(f["rows"], f["row_bytes"], f["src_stride"]), True, False),
        SramOperand("dst_addr", f["dst_addr"], _strided_extent(f["rows"], f["row_bytes"], f["dst_stride"]), False, True),
    ]


def _out_elements(f: Mapping[str, int], layer: Mapping[str, int]) -> int:
    return f["rows"] * layer["out_w"] * f["chs"]


def _input_tile(f: Mapping[str, int], layer: Mapping[str, int]) -> SramOperand:
    """The input tile of SYN / POOL: in_rows rows, all in_w columns and in_cs channels."""
    size = tile_bytes(layer["in_format"], f["nt"], f["in_rows"] * layer["in_w"] * layer["in_cs"], layer["timesteps"])
    return SramOperand("in_addr", f["in_addr"], size, True, False)


def _output_tile(f: Mapping[str, int], layer: Mapping[str, int]) -> SramOperand:
    """The output tile of PACK / POOL / ADD: [nt][rows][out_w][chs] in the layer's out_format;
    SPIKE_WORDS words are read-modify-written (the visit's bits t0..t0+nt-1 only)."""
    size = tile_bytes(layer["out_format"], f["nt"], _out_elements(f, layer), layer["timesteps"])
    return SramOperand("out_addr", f["out_addr"], size, layer["out_format"] == Format.SPIKE_WORDS, True)


def _syn_operands(f: Mapping[str, int], layer: Mapping[str, int] | None) -> list[SramOperand]:
    assert layer is not None
    accumulate = bool(f["flags"] & _ACCUMULATE)
    operands = [
        _input_tile(f, layer),
        SramOperand("w_addr", f["w_addr"], weight_tile_bytes(f, layer), True, False),
        SramOperand("acc_addr", f["acc_addr"], 4 * f["nt"] * _out_elements(f, layer), accumulate, True),
    ]
    if not accumulate:  # the bias of the tile's real channels (entry c of bias[out_c])
        real = max(0, min(f["chs"], layer["out_c"] - f["ch0"]))
        operands.append(SramOperand("param_addr", f["param_addr"] + 4 * f["ch0"], 4 * real, True, False))
    return operands


def _lif_operands(f: Mapping[str, int], layer: Mapping[str, int] | None) -> list[SramOperand]:
    assert layer is not None
    neurons = _out_elements(f, layer)
    operands = [
        SramOperand("acc_addr", f["acc_addr"], 4 * f["nt"] * neurons, True, False),
        # threshold, leak and v_reset: the parameter block after bias[out_c]
        SramOperand("param_addr", f["param_addr"] + 4 * layer["out_c"], 12 * layer["param_c"], True, False),
        # a visit starting at t0 = 0 starts from rest (v = 0, s_prev = 0): state is only written
        SramOperand("state_addr", f["state_addr"], 2 * 4 * neurons, f["t0"] > 0, True),
        SramOperand("spk_addr", f["spk_addr"], spike_word_bytes(f["nt"]) * neurons, False, True),
    ]
    if f["mem_addr"] != NO_ADDRESS:
        operands.append(SramOperand("mem_addr", f["mem_addr"], 4 * f["nt"] * neurons, False, True))
    return operands


def _pack_operands(f: Mapping[str, int], layer: Mapping[str, int] | None) -> list[SramOperand]:
    assert layer is not None
    words = SramOperand("spk_addr", f["spk_addr"], spike_word_bytes(f["nt"]) * _out_elements(f, layer), True, False)
    return [words, _output_tile(f, layer)]


def _pool_operands(f: Mapping[str, int], layer: Mapping[str, int] | None) -> list[SramOperand]:
    assert layer is not None
    return [_input_tile(f, layer), _output_tile(f, layer)]


def _add_operands(f: Mapping[str, int], layer: Mapping[str, int] | None) -> list[SramOperand]:
    assert layer is not None
    elements = _out_elements(f, layer)
    return [
        SramOperand("a_addr", f["a_addr"], tile_bytes(layer["in_format"], f["nt"], elements, layer["timesteps"]),
                    True, False),
        SramOperand("b_addr", f["b_addr"], tile_bytes(layer["in2_format"], f["nt"], elements, layer["timesteps"]),
                    True, False),
        _output_tile(f, layer),
    ]


def sram_operands(spec: InstructionSpec, fields: Mapping[str, int],
                  layer: Mapping[str, int] | None = None) -> list[SramOperand]:
    """Every SRAM range the instruction reads or writes (`layer`: its layer descriptor's fields,
    for instructions with a `layer` field)."""
    return spec.sram_operands(fields, layer)


F = Field
_TILE = (
    F("layer", "H", "index of the layer descriptor"),
    F("batch", "H", "batch index b"),
    F("t0", "B", "first timestep of this visit"),
    F("nt", "B", "timesteps in this visit (lanes used)"),
    F("row0", "H", "first output row of the tile"),
    F("rows", "H", "output rows in the tile"),
    F("ch0", "H", "first output channel of the tile"),
    F("chs", "H", "output channels in the tile"),
)


def _dma_2d_fields(load: bool) -> tuple[Field, ...]:
    dram, sram = ("source", "destination") if load else ("destination", "source")
    return (
        Field("dram_addr", "Q", f"{dram} DRAM byte address"),
        Field("sram_addr", "I", f"{sram} SRAM byte address"),
        Field("row_bytes", "I", "bytes per row"),
        Field("rows", "I", "number of rows"),
        Field("dram_stride", "I", "DRAM bytes between row starts"),
        Field("sram_stride", "I", "SRAM bytes between row starts"),
    )


_FIBER_DMA_FIELDS = (
    F("dram_addr", "Q", "DRAM address of the first fiber slot"),
    F("sram_addr", "I", "SRAM dense tile [fibers][fiber_elems] of word_bytes elements (KEEP_COMPRESSED: the fibers)"),
    F("fibers", "I", "number of fibers (consecutive slots)"),
    F("fiber_elems", "I", "elements per fiber"),
    F("word_bytes", "B", "bytes per element in SRAM (1, 2, 4 or 8)"),
    F("elem_bits", "B", "bits per element in DRAM (1..8*word_bytes; T for spike words)"),
    F("flags", "B", "DmaFlags", enum_type=DmaFlags),
    Field("sram_bytes", "I", "KEEP_COMPRESSED: SRAM bytes of the packed fibers (else 0: the dense tile)", optional=True),
    Field("sram_stride", "I", "SRAM bytes between consecutive fibers' first elements (0: fiber_elems x word_bytes, "
                              "back to back)", optional=True),
    Field("run_elems", "H", "elements of a fiber that lie contiguous in SRAM (0: the whole fiber)", optional=True),
    Field("run_stride", "I", "SRAM bytes between the starts of a fiber's runs (with run_elems)", optional=True),
)

INSTRUCTIONS: tuple[InstructionSpec, ...] = (
    InstructionSpec(Opcode.NOP, "nop", (), "Does nothing."),
    InstructionSpec(Opcode.DMA_LOAD, "dma.load", _dma_2d_fields(load=True),
                    "2-D DMA from DRAM into the global SRAM.", _dma_operands(load=True)),
    InstructionSpec(Opcode.DMA_STORE, "dma.store", _dma_2d_fields(load=False),
                    "2-D DMA from the global SRAM to DRAM.", _dma_operands(load=False)),
    InstructionSpec(
        Opcode.DMA_LOAD_BM, "dma.load_bm", _FIBER_DMA_FIELDS,
        "Bitmask-compressed DMA: reads fibers (pointer, bitmask, non-zero words) and expands them in SRAM.",
        _fiber_dma_operands(load=True),
    ),
    InstructionSpec(
        Opcode.DMA_STORE_BM, "dma.store_bm", _FIBER_DMA_FIELDS,
        "Compressor + DMA: drops zero (silent) words of each SRAM row, stores fibers to DRAM.",
        _fiber_dma_operands(load=False),
    ),
    InstructionSpec(
        Opcode.MOVE, "move",
        (
            F("src_addr", "I", "source SRAM byte address"),
            F("dst_addr", "I", "destination SRAM byte address"),
            F("row_bytes", "I", "bytes per row"),
            F("rows", "I", "number of rows"),
            F("src_stride", "I", "source bytes between row starts"),
            F("dst_stride", "I", "destination bytes between row starts"),
        ),
        "2-D copy inside the global SRAM (layer fusion: tiles to/from an on-chip feature map).", _move_operands,
    ),
    InstructionSpec(
        Opcode.SYN, "syn",
        _TILE + (
            F("in_row0", "H", "first input row held in the SRAM input tile"),
            F("in_rows", "H", "input rows held in the SRAM input tile"),
            F("flags", "B", "SynFlags", enum_type=SynFlags),
            F("in_addr", "I", "SRAM input tile [nt][in_rows][W][Cs]"),
            F("w_addr", "I", "SRAM weights [chs][kh][kw][Cs_in], or chs packed fibers (COMPRESSED_WEIGHTS)"),
            F("param_addr", "I", "SRAM layer parameter block (bias at channel 0)"),
            F("acc_addr", "I", "SRAM accumulator tile int32 [nt][rows][Wo][chs]"),
            Field("w_bytes", "I", "COMPRESSED_WEIGHTS: SRAM bytes of the packed weight fibers (else 0)", optional=True),
        ),
        "TPPEs: synaptic currents of an output tile for timesteps t0..t0+nt-1.",
        _syn_operands, (LayerKind.CONV,),
    ),
    InstructionSpec(
        Opcode.LIF, "lif",
        _TILE + (
            F("acc_addr", "I", "SRAM accumulator tile int32 [nt][rows][Wo][chs]"),
            F("param_addr", "I", "SRAM layer parameter block"),
            F("state_addr", "I", "SRAM neuron state int32 [2][rows][Wo][chs] (v, s_prev)"),
            F("spk_addr", "I", "SRAM spike words [rows][Wo][chs] (bit t-t0 = spike at t)"),
            F("mem_addr", "I", "SRAM membrane trace int32 [nt][rows][Wo][chs] or NO_ADDRESS"),
        ),
        "P-LIF: fire all nt lanes of every neuron in the tile; updates state in place.",
        _lif_operands, (LayerKind.CONV,),
    ),
    InstructionSpec(
        Opcode.PACK, "pack",
        _TILE + (
            F("spk_addr", "I", "SRAM spike words [rows][Wo][chs]"),
            F("out_addr", "I", "SRAM output tile in the layer's output format"),
        ),
        "Compressor: spike words -> the layer's output storage format.",
        _pack_operands, (LayerKind.CONV,),
    ),
    InstructionSpec(
        Opcode.POOL, "pool",
        _TILE + (
            F("in_row0", "H", "first input row held in the SRAM input tile"),
            F("in_rows", "H", "input rows held in the SRAM input tile"),
            F("in_addr", "I", "SRAM input tile [nt][in_rows][W][Cs]"),
            F("out_addr", "I", "SRAM output tile [nt][rows][Wo][chs]"),
        ),
        "Max or average pooling of a tile (layer kind MAXPOOL / AVGPOOL).",
        _pool_operands, (LayerKind.MAXPOOL, LayerKind.AVGPOOL),
    ),
    InstructionSpec(
        Opcode.ADD, "add",
        _TILE + (
            F("a_addr", "I", "SRAM operand tile A [nt][rows][W][chs]"),
            F("b_addr", "I", "SRAM operand tile B [nt][rows][W][chs]"),
            F("out_addr", "I", "SRAM result tile [nt][rows][W][chs]"),
        ),
        "Elementwise add of two tiles (residual / SEW-ADD).",
        _add_operands, (LayerKind.ADD,),
    ),
    InstructionSpec(
        Opcode.BARRIER, "barrier", (),
        "Waits until every earlier DMA and compute instruction has finished.",
    ),
    InstructionSpec(
        Opcode.EXIT_CHECK, "exit.check",
        (
            F("io", "H", "index of the I/O descriptor of the graph output to check (the classifier)"),
            F("t", "B", "timestep: the output's values of timesteps 0..t are summed"),
        ),
        "Early exit (ELSA): reads the output's timesteps 0..t from DRAM, sums them per batch item "
        "and halts the program when every item's top softmax probability of the sum reaches the run-time "
        "threshold (docs/isa.md \"Early exit\"; without a threshold it never halts).",
    ),
    InstructionSpec(Opcode.HALT, "halt", (), "End of program."),
)
del F

INSTRUCTION_BY_OPCODE = {spec.opcode: spec for spec in INSTRUCTIONS}
INSTRUCTION_BY_MNEMONIC = {spec.mnemonic: spec for spec in INSTRUCTIONS}

for _spec in INSTRUCTIONS:  # the table itself is checked at import
    assert _spec.struct.size <= INSTRUCTION_BYTES, _spec.mnemonic
    assert bool(_spec.layer_kinds) == _spec.has_layer, f"{_spec.mnemonic}: layer_kinds go with a `layer` field"


class DecodeError(ValueError):
    """A malformed instruction or descriptor; the message names the field."""


def encode_instruction(opcode: Opcode, **fields: int) -> bytes:
    spec = INSTRUCTION_BY_OPCODE[opcode]
    names = [f.name for f in spec.fields]
    unknown = set(fields) - set(names)
    if unknown:
        raise ValueError(f"{spec.mnemonic}: unknown field(s) {sorted(unknown)}")
    missing = [f.name for f in spec.fields if f.name not in fields and not f.optional]
    if missing:
        raise ValueError(f"{spec.mnemonic}: missing field(s) {missing}")
    try:
        raw = spec.struct.pack(int(opcode), *(int(fields.get(n, 0)) for n in names))
    except struct.error as exc:
        raise ValueError(f"{spec.mnemonic}: a field is out of range: {exc}") from exc
    return raw.ljust(INSTRUCTION_BYTES, b"\0")


def decode_instruction(raw: bytes, index: int = 0) -> tuple[InstructionSpec, dict[str, int]]:
    if len(raw) != INSTRUCTION_BYTES:
        raise DecodeError(f"instruction {index}: expected {INSTRUCTION_BYTES} bytes, got {len(raw)}")
    try:
        spec = INSTRUCTION_BY_OPCODE[Opcode(raw[0])]
    except ValueError:
        raise DecodeError(f"instruction {index}: unknown opcode 0x{raw[0]:02x}") from None
    values = spec.struct.unpack_from(raw)
    fields = dict(zip((f.name for f in spec.fields), values[1:]))
    for field in spec.enum_fields:
        wrong = field.value_error(fields[field.name])
        if wrong:
            raise DecodeError(f"instruction {index} ({spec.mnemonic}).{wrong}")
    return spec, fields


# --------------------------------------------------------------------------------------
# Layer descriptors (section `layers`): static geometry and number formats
# --------------------------------------------------------------------------------------

LAYER_FIELDS: tuple[Field, ...] = (
    Field("kind", "B", "LayerKind", enum_type=LayerKind),
    Field("timesteps", "B", "T of the whole network"),
    Field("in_format", "B", "Format of the (first) input", enum_type=Format),
    Field("in2_format", "B", "Format of the second input (ADD only)", enum_type=Format),
    Field("out_format", "B", "Format of the stored output", enum_type=Format),
    Field("leak", "B", "LeakForm (CONV followed by LIF)", enum_type=LeakForm),
    Field("reset", "B", "ResetMode", enum_type=ResetMode),
    Field("lif_flags", "B", "LifFlags", enum_type=LifFlags),
    Field("in_c", "H", "input channels (logical)"),
    Field("in_cs", "H", "input channels as stored (padded)"),
    Field("in_h", "H", "input height"),
    Field("in_w", "H", "input width"),
    Field("out_c", "H", "output channels (logical)"),
    Field("out_cs", "H", "output channels as stored (padded)"),
    Field("out_h", "H", "output height"),
    Field("out_w", "H", "output width"),
    Field("kh", "B", "kernel height"),
    Field("kw", "B", "kernel width"),
    Field("stride_h", "B", "stride along H"),
    Field("stride_w", "B", "stride along W"),
    Field("pad_top", "B", "zero padding above"),
    Field("pad_left", "B", "zero padding left"),
    Field("pad_bottom", "B", "zero padding below"),
    Field("pad_right", "B", "zero padding right"),
    Field("dil_h", "B", "dilation along H"),
    Field("dil_w", "B", "dilation along W"),
    Field("weight_bytes", "B", "bytes per weight (1 = int8, 2 = int16)"),
    Field("in_frac", "b", "fractional bits of the (first) input"),
    Field("in2_frac", "b", "fractional bits of the second input (ADD)"),
    Field("out_frac", "b", "fractional bits of the output (multi-bit formats)"),
    Field("acc_shift", "b", "accumulator -> membrane: v += acc << acc_shift (>> if negative)"),
    Field("leak_frac", "B", "fractional bits of beta / inverse-tau"),
    Field("membrane_frac", "B", "fractional bits of the membrane"),
    Field("avg_recip", "H", "AVGPOOL: multiplier, out = (sum * avg_recip) >> avg_shift"),
    Field("avg_shift", "B", "AVGPOOL: shift paired with avg_recip"),
    Field("flags", "B", "LayerFlags (AVG_COUNT_PAD: AVGPOOL counts padding; ADD_AND: ADD computes a AND b)",
          enum_type=LayerFlags),
    Field("param_c", "H", "channels in the parameter block (out_c, or 1 when shared)"),
    Field("dataflow", "B", "Dataflow of a CONV layer (loop order; drives the timing model)", enum_type=Dataflow),
)
LAYER_STRUCT = struct.Struct("<" + "".join(f.fmt for f in LAYER_FIELDS))
LAYER_BYTES = LAYER_STRUCT.size

# Parameter block of a CONV layer, int32 little-endian, param_c entries each:
#   bias[out_c] (accumulator units; always out_c entries), threshold[param_c],
#   leak[param_c] (beta or 1/tau in leak_frac bits), v_reset[param_c]  (membrane units)
PARAM_ARRAYS = ("bias", "threshold", "leak", "v_reset")


def encode_layer(**fields: int) -> bytes:
    names = [f.name for f in LAYER_FIELDS]
    unknown = set(fields) - set(names)
    if unknown:
        raise ValueError(f"layer descriptor: unknown field(s) {sorted(unknown)}")
    try:
        return LAYER_STRUCT.pack(*(int(fields.get(n, 0)) for n in names))
    except struct.error as exc:
        raise ValueError(f"layer descriptor: a field is out of range: {exc}") from exc


LAYER_ENUM_FIELDS = fields_of_enums(LAYER_FIELDS)


def decode_layer(raw: bytes, index: int = 0) -> dict[str, int]:
    if len(raw) != LAYER_BYTES:
        raise DecodeError(f"layer descriptor {index}: expected {LAYER_BYTES} bytes, got {len(raw)}")
    values = LAYER_STRUCT.unpack(raw)
    out = dict(zip((f.name for f in LAYER_FIELDS), values))
    for field in LAYER_ENUM_FIELDS:
        wrong = field.value_error(out[field.name])
        if wrong:
            raise DecodeError(f"layer descriptor {index}: field {wrong}")
    return out


# --------------------------------------------------------------------------------------
# I/O descriptors (section `io` of prog.bin, after each one's name string and shape)
# --------------------------------------------------------------------------------------

IO_FIELDS: tuple[Field, ...] = (
    Field("is_output", "B", "1 for a graph output, 0 for a graph input"),
    Field("format", "B", "Format of the tensor in DRAM", enum_type=Format),
    Field("frac_bits", "b", "fractional bits (multi-bit formats: value = int * 2**-frac_bits)"),
    Field("reserved", "B", "0"),
    Field("dram_addr", "Q", "DRAM byte address of the tensor"),
    Field("timesteps", "H", "T"),
    Field("batch", "H", "B"),
    Field("channels", "I", "C (logical)"),
    Field("channels_stored", "I", "Cs: channels as stored (padded to a multiple of 8)"),
    Field("height", "I", "H"),
    Field("width", "I", "W"),
    Field("t0", "H", "since format 2.4: the first timestep the user sees (0 for an input)"),
    Field("nt", "H", "since format 2.4: timesteps the user sees, t0 + nt <= T (T for an input); onnx_shape is "
                     "[nt, B, ...], or [B, ...] for one step with the time axis dropped (a final membrane)"),
)
IO_STRUCT = struct.Struct("<" + "".join(f.fmt for f in IO_FIELDS))

MAX_TIMESTEPS = 64  # T fits one SPIKE_WORDS word (u64); descriptors, tiles and the lowering share the bound


def spike_word_bytes(timesteps: int) -> int:
    """Bytes of one SPIKE_WORDS element (all T bits of a neuron)."""
    for size in (1, 2, 4, 8):
        if timesteps <= 8 * size:
            return size
    raise ValueError(f"T = {timesteps} exceeds {MAX_TIMESTEPS} timesteps")
