"""The encoder: accel IR -> ProgramImage -> prog.bin, checked by decoding back."""

from __future__ import annotations

import numpy as np
import pytest

from snnc.backend import binformat, isa
from snnc.passes.encode import encode, encode_to_bytes, instruction_fields
from snnc.backend.isa import Opcode

from test_lowering import NETS, lower, program_of, sram_for


@pytest.fixture(params=sorted(NETS))
def lowered(request):
    return lower(NETS[request.param](), sram_bytes=sram_for(request.param, "small"))


def test_every_instruction_decodes_to_the_op_properties(lowered):
    program = program_of(lowered)
    image = encode(lowered)
    raw = image.instructions
    assert len(raw) % isa.INSTRUCTION_BYTES == 0
    ops = program.instructions()
    count = len(raw) // isa.INSTRUCTION_BYTES
    assert count == len(ops) + 1  # + HALT
    index = {layer.symbol: i for i, layer in enumerate(program.layers())}
    for i, op in enumerate(ops):
        spec, fields = isa.decode_instruction(raw[i * isa.INSTRUCTION_BYTES:(i + 1) * isa.INSTRUCTION_BYTES], i)
        assert spec.opcode == op.opcode
        expected = op.field_values()
        if op.layer_symbol is not None:
            expected["layer"] = index[op.layer_symbol]
        assert fields == expected, (i, op.name)
        assert instruction_fields(op, index) == expected
    last, _ = isa.decode_instruction(raw[-isa.INSTRUCTION_BYTES:], count - 1)
    assert last.opcode == Opcode.HALT


def test_layers_names_constants_and_io(lowered):
    program = program_of(lowered)
    image = encode(lowered)
    layers = program.layers()
    assert [isa.decode_layer(raw, i) for i, raw in enumerate(image.layers)] == [l.field_values() for l in layers]
    assert image.layer_names == [l.source.data for l in layers]
    for const in program.constants():
        start = const.dram_addr.data
        assert image.constants[start:start + len(const.payload)] == const.payload
    assert len(image.constants) == max(c.dram_addr.data + len(c.payload) for c in program.constants())
    assert image.dram_size == program.dram_size.data
    assert image.hw_toml == program.hw_toml.data
    assert [d.name for d in image.io] == [o.io_name.data for o in program.io_ops()]
    for desc, op in zip(image.io, program.io_ops()):
        assert desc.onnx_shape == op.shape and desc.is_output == bool(op.is_output.data)
        assert isinstance(desc.format, isa.Format)
        assert binformat.io_dram_bytes(desc) == op.byte_size()


def test_bytes_round_trip_through_the_container(lowered):
    data = encode_to_bytes(lowered)
    assert data == encode_to_bytes(lowered)  # deterministic
    image = binformat.read_program(data)
    original = encode(lowered)
    assert image.instructions == original.instructions
    assert image.layers == original.layers
    assert image.constants == original.constants
    assert image.io == original.io


def test_weights_in_the_image_are_the_quantised_integers():
    # One dense layer with weights k/4: ints = k, stored [out_cs][1][1][in_cs] int8.
    from test_lowering import Net
    from snnc.dialects.snn import SpikeTrainType

    w = np.arange(-6, 6, dtype=np.float32).reshape(4, 3) / 4  # [K=4, N=3]
    n = Net(2, [("x", SpikeTrainType(2, (1, 4)))])
    d = n.dense(n.args[0], w, np.array([0.5, 0, -0.25], np.float32), name="fc")
    s, _ = n.lif(d, name="lif")
    lowered = lower(n.finish([("s", s)]))
    program = program_of(lowered)
    image = encode(lowered)
    w_const, p_const = program.constants()[:2]
    stored = np.frombuffer(image.constants, np.int8, count=8 * 8, offset=w_const.dram_addr.data).reshape(8, 8)
    assert stored[:3, :4].tolist() == (w.T * 4).astype(int).tolist()
    assert not stored[3:].any() and not stored[:, 4:].any()
    params = np.frombuffer(image.constants, "<i4", count=3 + 3, offset=p_const.dram_addr.data)
    # bias in accumulator units (frac 2); threshold 1.0 at F = 2 + 1 = 3; beta 0.5 -> 1; v_reset 0
    assert params.tolist() == [2, 0, -1, 8, 1, 0]


def test_encode_rejects_a_module_without_a_program():
    from xdsl.dialects.builtin import ModuleOp

    from snnc.backend.errors import CompileError

    with pytest.raises(CompileError, match="accel.program"):
        encode(ModuleOp([]))
