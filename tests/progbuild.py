"""Hand assembly of small ProgramImages for the runtime / binformat tests.

Tests place constants and tensors at explicit DRAM addresses and emit
instructions with isa.encode_instruction, so each test shows the exact program
it runs; nothing here comes from the compiler.
"""

from __future__ import annotations

import numpy as np

from snnc.backend import isa
from snnc.backend.binformat import IODesc, ProgramImage
from snnc.backend.hwconfig import HwConfig
from snnc.backend.isa import Format, Opcode

CONV_DEFAULTS = dict(kh=1, kw=1, stride_h=1, stride_w=1, dil_h=1, dil_w=1, weight_bytes=1)


class Prog:
    def __init__(self, dram_size: int = 8192, hw: HwConfig | None = None):
        self.dram_size = dram_size
        self.constants = bytearray()
        self.layers: list[bytes] = []
        self.names: list[str] = []
        self.code: list[bytes] = []
        self.io: list[IODesc] = []
        self.hw = hw or HwConfig()

    def const(self, addr: int, data: bytes | np.ndarray) -> int:
        raw = bytes(np.ascontiguousarray(data).view(np.uint8).reshape(-1)) if isinstance(data, np.ndarray) else bytes(data)
        end = addr + len(raw)
        if len(self.constants) < end:
            self.constants.extend(b"\0" * (end - len(self.constants)))
        self.constants[addr:end] = raw
        return len(raw)

    def layer(self, name: str, **fields: int) -> int:
        merged = dict(CONV_DEFAULTS)
        merged.update(fields)
        self.layers.append(isa.encode_layer(**merged))
        self.names.append(name)
        return len(self.layers) - 1

    def op(self, opcode: Opcode, **fields: int) -> None:
        self.code.append(isa.encode_instruction(opcode, **fields))

    def load(self, dram_addr: int, sram_addr: int, row_bytes: int, rows: int = 1,
             dram_stride: int | None = None, sram_stride: int | None = None) -> None:
        self.op(Opcode.DMA_LOAD, dram_addr=dram_addr, sram_addr=sram_addr, row_bytes=row_bytes, rows=rows,
                dram_stride=row_bytes if dram_stride is None else dram_stride,
                sram_stride=row_bytes if sram_stride is None else sram_stride)

    def store(self, dram_addr: int, sram_addr: int, row_bytes: int, rows: int = 1,
              dram_stride: int | None = None, sram_stride: int | None = None) -> None:
        self.op(Opcode.DMA_STORE, dram_addr=dram_addr, sram_addr=sram_addr, row_bytes=row_bytes, rows=rows,
                dram_stride=row_bytes if dram_stride is None else dram_stride,
                sram_stride=row_bytes if sram_stride is None else sram_stride)

    def tensor(self, name: str, is_output: bool, shape: tuple[int, ...], addr: int, fmt: Format,
               frac: int = 0) -> None:
        if len(shape) == 3:
            t, b, c = shape
            h = w = 1
        else:
            t, b, c, h, w = shape
        cs = -(-c // 8) * 8
        self.io.append(IODesc(name, is_output, tuple(shape), addr, fmt, frac, t, b, c, cs, h, w))

    def image(self, model_name: str = "hand") -> ProgramImage:
        return ProgramImage(
            hw_toml=self.hw.to_toml(), dram_size=self.dram_size, constants=bytes(self.constants),
            layers=list(self.layers), layer_names=list(self.names),
            instructions=b"".join(self.code) + isa.encode_instruction(Opcode.HALT),
            io=list(self.io), model_name=model_name,
        )


def param_block(bias, threshold, leak, v_reset) -> np.ndarray:
    """CONV parameter block: bias[out_c], threshold[param_c], leak[param_c], v_reset[param_c] (int32)."""
    return np.concatenate([np.asarray(a, dtype=np.int64).reshape(-1)
                           for a in (bias, threshold, leak, v_reset)]).astype("<i4")


def ref_lif(current, thr, leak, v_reset, *, leak_form, reset, flags, leak_frac):
    """Scalar Python-int reference of the integer LIF (current: list over t)."""
    v, s_prev, spikes, trace = 0, 0, [], []
    for i in current:
        if flags & isa.LifFlags.DELAYED_RESET and reset == isa.ResetMode.ZERO:
            v = 0 if s_prev else v
        if leak_form == isa.LeakForm.NONE:
            h = v + i
        elif leak_form == isa.LeakForm.BETA:
            h = ((v * leak) >> leak_frac) + i
        else:
            h = v + (((i - (v - v_reset)) * leak) >> leak_frac)
        if flags & isa.LifFlags.DELAYED_RESET and reset == isa.ResetMode.SUBTRACT:
            h -= s_prev * thr
        s = int(h > thr) if flags & isa.LifFlags.COMPARE_GT else int(h >= thr)
        if flags & isa.LifFlags.DELAYED_RESET:
            v = h
        elif reset == isa.ResetMode.SUBTRACT:
            v = h - s * thr
        elif reset == isa.ResetMode.ZERO:
            v = 0 if s else h
        else:
            v = v_reset if s else h
        s_prev = s
        spikes.append(s)
        trace.append(v)
    return spikes, trace
