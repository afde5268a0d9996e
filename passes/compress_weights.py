"""compress-weights: store every synapse layer's weights as bitmask fibers (LoAS §IV-A).

CONTRACT
  Requires: loop-level IR (after convert-snn-to-loops), before tile-sizes.
  Guarantees:
    * The weights global of every `tile.syn` becomes its fibers: one per output
      channel (a 4-byte pointer, a bitmask of its kh*kw*Cs_in weights, the non-zero
      weights), packed back to back in DRAM (isa.DmaFlags.PACKED: the DRAM image and
      prog.bin hold only the compressed bytes): `memref<bytes x i8>` with
      `tile.fiber_offsets` (N+1 fiber starts), `tile.fiber_shape` ([N, kh, kw, Cs_in])
      and `tile.fiber_bits` (8 or 16).
    * The weight buffers hold the fibers as they are (LoAS's FiberCache): a buffer is
      as large as its largest channel tile's fibers, so tiles hold more output
      channels than dense [chs][K] tiles; the final lowering loads them with
      dma.load_bm (KEEP_COMPRESSED) and marks the syn COMPRESSED_WEIGHTS.
    * Values are unchanged.
  Options: none.
LoAS keeps fiber-B compressed in DRAM and in its FiberCache (§IV-D); without this
pass snnc moves the dense 8-bit weights, which for a 98%-sparse layer is about 7x
the compressed bytes. It is the first pass of the default pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from xdsl.context import Context
from xdsl.dialects import memref
from xdsl.dialects.builtin import BytesAttr, DenseIntOrFPElementsAttr, IntegerType, MemRefType, \
    ModuleOp, TensorType
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from snnc.dialects.snn import int_array
from snnc.backend import isa
from snnc.dialects import tile
from snnc.passes.footprints import FIBER_OFFSETS_ATTR, buffer_of, global_of, infer_buffer_types
from snnc.passes.loop_module import kernels, layer_table, module_timesteps

FIBER_SHAPE_ATTR = "tile.fiber_shape"
FIBER_BITS_ATTR = "tile.fiber_bits"


def fiber_bytes(q: np.ndarray, nbytes: int) -> np.ndarray:
    """Per output channel: the bytes of its compressed weight fiber (pointer, bitmask, non-zeros)."""
    flat = np.asarray(q).reshape(q.shape[0], -1)
    return isa.FIBER_HEADER_BYTES + (flat.shape[1] + 7) // 8 + np.count_nonzero(flat, axis=1) * nbytes


def weight_fibers(q: np.ndarray, nbytes: int) -> tuple[bytes, np.ndarray]:
    """Weights [N][kh][kw][Cs] (little-endian ints of `nbytes`) compressed column-wise: one fiber
    per output channel, packed back to back. Returns the bytes and the N+1 fiber starts."""
    dense = np.ascontiguousarray(q).view(f"<u{nbytes}").reshape(q.shape[0], -1)
    n = dense.shape[0]
    keep = dense != 0
    counts = np.count_nonzero(keep, axis=1)
    # a fiber: its non-zero count (the header), its bitmask, then its non-zeros in order
    meta = np.concatenate([counts.astype("<u4").view(np.uint8).reshape(n, isa.FIBER_HEADER_BYTES),
                           np.packbits(keep, axis=1, bitorder="little")], axis=1)
    values = dense[keep].view(np.uint8)  # row-major: channel by channel
    ends = (np.cumsum(counts) * nbytes).tolist()
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(meta.shape[1] + counts * nbytes, out=offsets[1:])
    pieces: list[bytes] = []
    for row, start, end in zip(meta, [0, *ends[:-1]], ends):  # N joins: cheaper than scattering bytes
        pieces += (row.tobytes(), values[start:end].tobytes())
    return b"".join(pieces), offsets


def is_compressed(glob: memref.GlobalOp) -> bool:
    return FIBER_OFFSETS_ATTR in glob.attributes


def compress_global(glob: memref.GlobalOp, module: ModuleOp, readers: list | None = None) -> None:
    """Replace a dense weights global by its fibers (and retype every memref.get_global of it;
    `readers`: those ops, when the caller has them)."""
    shape = tuple(glob.type.get_shape())
    bits = glob.type.element_type.width.data
    ints = np.frombuffer(glob.initial_value.data.data, dtype=f"<i{bits // 8}").reshape(shape)
    data, offsets = weight_fibers(ints, bits // 8)
    new_type = MemRefType(IntegerType(8), [len(data)], memory_space=tile.DRAM)
    glob.type = new_type
    glob.initial_value = DenseIntOrFPElementsAttr(TensorType(IntegerType(8), [len(data)]), BytesAttr(data))
    glob.attributes[FIBER_OFFSETS_ATTR] = int_array(offsets)
    glob.attributes[FIBER_SHAPE_ATTR] = int_array(shape)
    glob.attributes[FIBER_BITS_ATTR] = int_array([bits])
    if readers is None:
        readers = [op for op in module.walk() if isinstance(op, memref.GetGlobalOp)]
    for op in readers:
        if op.name_.root_reference.data == glob.sym_name.data:
            hint = op.memref.name_hint
            Rewriter.replace_value_with_new_type(op.memref, new_type)
            op.memref.name_hint = hint


def dense_weights(glob: memref.GlobalOp) -> np.ndarray:
    """The integer weights [N][kh][kw][Cs] of a weights global, dense or compressed."""
    if not is_compressed(glob):
        bits = glob.type.element_type.width.data
        return np.frombuffer(glob.initial_value.data.data, dtype=f"<i{bits // 8}").reshape(glob.type.get_shape())
    shape = [int(v) for v in glob.attributes[FIBER_SHAPE_ATTR].get_values()]
    nbytes = int(glob.attributes[FIBER_BITS_ATTR].get_values()[0]) // 8
    offsets = [int(v) for v in glob.attributes[FIBER_OFFSETS_ATTR].get_values()]
    data = np.frombuffer(glob.initial_value.data.data, dtype=np.uint8)
    elems = math.prod(shape[1:])
    meta = isa.FIBER_HEADER_BYTES + (elems + 7) // 8
    out = np.zeros((shape[0], elems), dtype=f"<i{nbytes}")
    for n in range(shape[0]):
        start = offsets[n]
        keep = np.unpackbits(data[start + isa.FIBER_HEADER_BYTES:start + meta], bitorder="little")[:elems].astype(bool)
        out[n, keep] = data[start + meta:offsets[n + 1]].view(f"<i{nbytes}")
    return out.reshape(shape)


def fiber_layout(glob: memref.GlobalOp) -> tuple[int, int]:
    """(weights per fiber, bits per weight) of a compressed global."""
    shape = [int(v) for v in glob.attributes[FIBER_SHAPE_ATTR].get_values()]
    return math.prod(shape[1:]), int(glob.attributes[FIBER_BITS_ATTR].get_values()[0])


def weight_globals(kernel: tile.KernelOp) -> list[memref.GlobalOp]:
    """The globals the kernel's syn ops read their weights from (through a load_const)."""
    found: list[memref.GlobalOp] = []
    for op in kernel.body.walk():
        if not isinstance(op, tile.SynOp):
            continue
        buf = buffer_of(op.weights)
        for use in buf.result.uses:
            if isinstance(use.operation, tile.LoadConstOp):
                glob = global_of(use.operation.src)
                if glob is not None and glob not in found:
                    found.append(glob)
    return found


@dataclass(frozen=True)
class CompressWeights(ModulePass):
    """Store synapse weights as bitmask fibers in DRAM, kept compressed in SRAM."""

    name = "compress-weights"
    ir_level: ClassVar[str] = "loop"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        layers, timesteps = layer_table(op), module_timesteps(op)
        readers = [o for o in op.walk() if isinstance(o, memref.GetGlobalOp)]
        for kernel in kernels(op):
            for glob in weight_globals(kernel):
                if not is_compressed(glob):
                    compress_global(glob, op, readers)
            infer_buffer_types(kernel.body.block, layers, timesteps)
