"""prog.bin: the container format, the contract between compiler and runtime.

CONTRACT (fixed; the serialiser below it is being written):
  * `ProgramImage` is what the encoder produces and what the runtime consumes.
  * `write_program(image) -> bytes` is deterministic.
  * `read_program(data: bytes) -> ProgramImage` validates everything and raises
    `BinaryFormatError` naming the field (magic, version, section, checksum,
    truncation, descriptor field).
Imports only the standard library and snnc.backend.{isa,errors}.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from snnc.backend.isa import Format


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
