"""convert-loops-to-accel: the loop level, one accel instruction per tile-op instance.

CONTRACT
  Requires: loop-level IR after tile-sizes, sram-alloc and dram-alloc (every buffer
    placed, every constant and map addressed).
  Guarantees: the module holds exactly one `accel.program` that verifies: the
    constants (accel.const), the graph's I/O tensors (accel.io: inputs, then the
    returned outputs in order), the layer descriptors, and the instructions the
    kernels' nests produce when run in program order (a loop around kernels in @main,
    time-interleave's, runs them once per iteration), with a BARRIER between
    kernels (each kernel sees the previous one's results; dma-prefetch may relax
    this). Mechanical, no choice is made here: loop bounds and index arithmetic are
    evaluated, a rotated buffer's copy is (its rotation index mod copies), and
      tile.load / tile.store   dma.load / dma.store of the window (one per timestep
                               when the tile holds a channel slice), dma.load_bm /
                               dma.store_bm for a packed map, move for a map held
                               in SRAM (`tile.resident` offset)
      tile.load_const          dma.load of the channel tile's bytes, or dma.load_bm of
                               its fibers (compressed weights, kept compressed)
      tile.syn/lif/pack/pool/add   syn / lif / pack / pool / add
  Options: none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import func, memref
from xdsl.dialects.builtin import IntegerAttr, ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from snnc.backend import isa
from snnc.backend.errors import CompileError
from snnc.backend.isa import Format, SynFlags
from snnc.dialects import accel, tile
from snnc.dialects.snn import ONNX_NAME_ATTR
from snnc.passes.compress_weights import fiber_layout
from snnc.passes.convert_snn_to_loops import SHAPE_ATTR, WINDOW_ATTR
from snnc.passes.dram_alloc import ADDR_ATTR, DRAM_SIZE_ATTR
from snnc.passes.synapse_split import PART_ATTR, PARTS_ATTR
from snnc.passes.footprints import buffer_of, fiber_offsets, global_of
from snnc.passes.loop_module import HW_ATTR, MODEL_ATTR, globals_of, layer_table, main_of, module_hw, \
    module_timesteps
from snnc.passes.loopnest import enclosing_loops
from snnc.passes.nest_run import evaluate

@dataclass(frozen=True)
class ConvertLoopsToAccel(ModulePass):
    """Unroll the loop level into one accel.program (mechanical)."""

    name = "convert-loops-to-accel"
    ir_level: ClassVar[str] = "loop"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        program = _Emitter(op).program()
        for child in list(op.body.block.ops):
            child.detach()
            child.erase(safe_erase=False)
        for name in (HW_ATTR, MODEL_ATTR, "tile.timesteps", DRAM_SIZE_ATTR):
            op.attributes.pop(name, None)
        op.body.block.add_op(program)


def _addr(glob: memref.GlobalOp) -> int:
    attr = glob.attributes.get(ADDR_ATTR)
    if not isinstance(attr, IntegerAttr):
        raise CompileError(f"memref.global @{glob.sym_name.data} has no DRAM address: run dram-alloc first")
    return attr.value.data


class _Emitter:
    def __init__(self, module: ModuleOp):
        self.module = module
        self.T = module_timesteps(module)
        self.layers = layer_table(module)
        self.ops: list[accel.InstructionOp] = []
        self.rotation: dict[tuple, tuple] = {}  # (buffer, op) -> how its copy is chosen
        self.coords: dict[Operation, tuple] = {}  # op -> its tile coordinate operands
        self.fibers: dict[Operation, tuple | None] = {}  # syn -> its weights' fiber starts, its ch0, chs
        # compute op -> what is the same for each of its instances (its operands, layer, buffers'
        # rotation plans): a program has tens of thousands of instances of a few hundred ops
        self.plans: dict[Operation, tuple] = {}

    def program(self) -> accel.ProgramOp:
        consts = [accel.ConstOp.create_with(name, _addr(g), g.initial_value.data.data)
                  for name, g in globals_of(self.module).items()]
        evaluate(main_of(self.module).body.block, {}, self._visit_main)
        layers = [layer.clone() for layer in self.layers.values()]
        attr = self.module.attributes.get(DRAM_SIZE_ATTR)
        if not isinstance(attr, IntegerAttr):
            raise CompileError("convert-loops-to-accel: the maps have no DRAM addresses: run dram-alloc first")
        hw = module_hw(self.module)
        return accel.ProgramOp.create_with(
            [*consts, *self._io_ops(), *layers, *self.ops], model_name=self.module.attributes[MODEL_ATTR].data,
            hw_toml=self.module.attributes[HW_ATTR].data, dram_size=attr.value.data, sram_size=hw.sram.size_bytes,
            timesteps=self.T)

    # -- I/O -----------------------------------------------------------------------------
    def _io_ops(self) -> list[accel.IoOp]:
        main = main_of(self.module)
        entries = [(m.io.data, False, m, m.attributes[SHAPE_ATTR], None) for m in main.body.walk()
                   if isinstance(m, tile.MapOp) and m.io is not None]
        ret = main.body.block.last_op
        assert isinstance(ret, func.ReturnOp)
        results = main.res_attrs.data if main.res_attrs else ()
        entries += [(attrs.data[ONNX_NAME_ATTR].data, True, value.owner, attrs.data[SHAPE_ATTR],
                     attrs.data.get(WINDOW_ATTR)) for attrs, value in zip(results, ret.arguments)]
        ops = []
        for name, is_output, m, shape_attr, window_attr in entries:
            t, b, h, w, cs = m.result.type.get_shape()
            shape = tuple(int(v) for v in shape_attr.get_values())
            t0, nt = (int(v) for v in window_attr.get_values()) if window_attr is not None else (0, t)
            multibit = m.fmt in (Format.ACT_I16, Format.ACT_I32)
            ops.append(accel.IoOp.create_with(
                name, is_output, shape, error_bound=m.error.value.data if is_output and multibit else None,
                dram_addr=m.addr.data, format=m.format.data, frac_bits=m.frac.data,
                timesteps=t, batch=b, channels=m.channels.data, channels_stored=cs, height=h, width=w, t0=t0, nt=nt))
        return ops

    # -- instructions --------------------------------------------------------------------
    def _barrier(self) -> None:
        if self.ops and not isinstance(self.ops[-1], accel.BarrierOp):
            self.ops.append(accel.BarrierOp.create_with())

    def _address(self, value: SSAValue, op: Operation, env: dict) -> int:
        """The SRAM offset of the copy of buffer `value` that this instance of `op` uses: copy
        (rotation index mod copies), the rotation index being the row-major position of the
        current iteration among the buffer's rotate loops around `op` (and its part, for the
        parts of a split synapse)."""
        key = (value, op)
        plan = self.rotation.get(key)
        if plan is None:
            plan = self.rotation[key] = self._rotation_plan(value, op)
        return _rotated(plan, env)

    @staticmethod
    def _rotation_plan(value: SSAValue, op: Operation) -> tuple:
        buf = buffer_of(value)
        if buf is None:
            raise CompileError(f"{op.name}: operand is not a tile.alloc buffer")
        offsets = buf.offset_list()
        if not offsets:
            raise CompileError(f"tile.alloc '{buf.role.data}' has no SRAM offsets: run sram-alloc first")
        dims = buf.rotate_dims
        loops = tuple((lp.iv, lp.op.lb, lp.step, lp.trips) for lp in enclosing_loops(op) if lp.dim in dims)
        if "part" in dims:  # statically split parts (row bands) take turns too
            return offsets, loops, buf.attributes[PARTS_ATTR].value.data, op.attributes[PART_ATTR].value.data
        return offsets, loops, 1, 0

    def _visit_main(self, op: Operation, env: dict) -> None:
        """@main: each kernel's nest in program order (in the loops around kernels, if any)."""
        if isinstance(op, tile.KernelOp):
            self._barrier()
            evaluate(op.body.block, env, self._visit)
        elif not isinstance(op, tile.MapOp | tile.AllocOp | func.ReturnOp):  # an alloc: placed by sram-alloc
            raise CompileError(f"convert-loops-to-accel: {op.name} in @main has no accelerator lowering")

    def _visit(self, op: Operation, env: dict) -> None:
        handler = _HANDLERS.get(type(op))
        if handler is not None:
            handler(self, op, env)
        elif isinstance(op, tile.KernelOp):  # a member of a fused kernel: its nest runs in place
            evaluate(op.body.block, env, self._visit)
        elif not isinstance(op, tile.AllocOp | memref.GetGlobalOp):
            raise CompileError(f"convert-loops-to-accel: {op.name} has no accelerator lowering")

    def _tile(self, op, env) -> dict[str, int]:
        coords = self.coords.get(op)
        if coords is None:
            coords = self.coords[op] = (op.b, op.t0, op.nt, op.row0, op.rows, op.ch0, op.chs)
        b, t0, nt, row0, rows, ch0, chs = coords
        return dict(batch=env[b], t0=env[t0], nt=env[nt], row0=env[row0], rows=env[rows], ch0=env[ch0], chs=env[chs])

    def _emit(self, op: accel.InstructionOp) -> None:
        self.ops.append(op)

    def _dma(self, load: bool, dram: int, sram: int, row_bytes: int, rows: int, dram_stride: int,
             sram_stride: int) -> None:
        if rows == 0 or row_bytes == 0:
            return
        cls = accel.DmaLoadOp if load else accel.DmaStoreOp
        self.ops.append(cls.create_with(dram_addr=dram, sram_addr=sram, row_bytes=row_bytes, rows=rows,
                                        dram_stride=dram_stride if rows > 1 else 0,
                                        sram_stride=sram_stride if rows > 1 else 0))

    def _window(self, op: tile.LoadOp | tile.StoreOp, env: dict) -> None:
        plan = self.plans.get(op)
        if plan is None:
            plan = self.plans[op] = self._window_plan(op)
        load, map_value, map_op, buffer, plain = plan
        sram = _rotated(buffer, env)
        c = self._tile(op, env)
        if c["rows"] == 0:
            return
        if plain is None:
            if isinstance(map_op, tile.AllocOp):  # a fused map's ring buffer in SRAM
                self._ring(load, map_op, self._address(map_value, op, env), sram, c)
            else:
                self._fibers(load, map_op, sram, c)
            return
        addr, b_dim, height, width, cs, bits, row_bytes, plane = plain
        first = addr + ((c["t0"] * b_dim + c["batch"]) * height + c["row0"]) * row_bytes
        if c["chs"] == cs:
            step = c["rows"] * width * cs * bits // 8
            self._dma(load, first, sram, step, c["nt"], plane, step)
            return
        row = c["chs"] * bits // 8
        step = c["rows"] * width * row
        first += c["ch0"] * bits // 8
        for t in range(c["nt"]):  # timestep t's window is `plane` bytes after t - 1's
            self._dma(load, first + t * plane, sram + t * step, row, c["rows"] * width, cs * bits // 8, row)

    def _window_plan(self, op: tile.LoadOp | tile.StoreOp) -> tuple:
        """(load?, the map value, its op, the buffer's rotation plan, the DRAM map's (address,
        B, H, W, Cs, bits, row bytes, plane bytes) or None for a ring buffer or a packed map)."""
        load = isinstance(op, tile.LoadOp)
        map_value, buf_value = (op.src, op.dst) if load else (op.dst, op.src)
        map_op = map_value.owner
        buffer = self._rotation_plan(buf_value, op)
        plain = None
        if not isinstance(map_op, tile.AllocOp) and map_op.fmt != Format.SPIKE_BITMASK:
            _t_dim, b_dim, height, width, cs = map_op.result.type.get_shape()
            bits = map_op.result.type.element_type.width.data
            row_bytes = width * cs * bits // 8
            plain = (map_op.addr.data, b_dim, height, width, cs, bits, row_bytes, b_dim * height * row_bytes)
        return load, map_value, map_op, buffer, plain

    def _ring(self, load: bool, ring: tile.AllocOp, base: int, sram: int, c: dict) -> None:
        """A window of a map held in SRAM as a ring buffer [Tr][Br][R][W][Cs]: timestep t in plane
        t mod Tr, batch element b in b mod Br, row h in slot h mod R; MOVEs to or from the tile
        [nt][rows][W][chs], split where the rows wrap."""
        planes, batches, slots, width, cs = ring.result.type.get_shape()
        bits = ring.result.type.element_type.width.data
        row_bytes, tile_row = width * cs * bits // 8, width * c["chs"] * bits // 8
        for t in range(c["nt"]):
            plane = base + (((c["t0"] + t) % planes) * batches + c["batch"] % batches) * slots * row_bytes
            done = 0
            while done < c["rows"]:
                slot = (c["row0"] + done) % slots
                run = min(c["rows"] - done, slots - slot)
                ring_addr = plane + slot * row_bytes + c["ch0"] * bits // 8
                tile_addr = sram + (t * c["rows"] + done) * tile_row
                if c["chs"] == cs:
                    args = (run * row_bytes, 1, 0, 0)
                else:
                    args = (c["chs"] * bits // 8, run * width, cs * bits // 8, c["chs"] * bits // 8)
                src, dst = (ring_addr, tile_addr) if load else (tile_addr, ring_addr)
                src_stride, dst_stride = (args[2], args[3]) if load else (args[3], args[2])
                if args[0] and args[1]:
                    self._emit(accel.MoveOp.create_with(
                        src_addr=src, dst_addr=dst, row_bytes=args[0], rows=args[1],
                        src_stride=src_stride if args[1] > 1 else 0, dst_stride=dst_stride if args[1] > 1 else 0))
                done += run

    def _fibers(self, load: bool, map_op: tile.MapOp, sram: int, c: dict) -> None:
        """A packed map's window: one dma.*_bm per channel slice, `rows` fibers each, strided
        into the channel-last SRAM tile [rows][W][chs] of all-T words."""
        batch, height, width, cs = map_op.result.type.get_shape()
        group = map_op.slice.data if map_op.slice is not None else cs
        slices = cs // group
        ch0, chs = c["ch0"], c["chs"]
        if ch0 % group or chs % group:
            raise CompileError(f"tile.map '{map_op.label.data}': a tile of channels {ch0}..{ch0 + chs} is not "
                               f"whole fiber slices of {group} channels")
        wb = isa.spike_word_bytes(self.T)
        slot = isa.fiber_slot_bytes(width * group, self.T)
        flags = isa.DmaFlags.SPIKES | (isa.DmaFlags.MASK_SINGLE if map_op.mask_single is not None and not load else 0)
        cls = accel.DmaLoadBmOp if load else accel.DmaStoreBmOp
        strides = dict(sram_stride=width * chs * wb, run_elems=group, run_stride=chs * wb)
        if isa.fiber_tile_offsets(c["rows"], width * group, wb, **strides) is None:
            strides = dict(sram_stride=0, run_elems=0, run_stride=0)  # back to back: the plain encoding
        for s in range(ch0 // group, (ch0 + chs) // group):
            self._emit(cls.create_with(
                dram_addr=map_op.addr.data + ((c["batch"] * slices + s) * height + c["row0"]) * slot,
                sram_addr=sram + (s * group - ch0) * wb, fibers=c["rows"], fiber_elems=width * group,
                word_bytes=wb, elem_bits=self.T, flags=int(flags), **strides))

    def _load_const(self, op: tile.LoadConstOp, env: dict) -> None:
        glob = global_of(op.src)
        sram = self._address(op.dst, op, env)
        ch0, chs = env[op.ch0], env[op.chs]
        offsets = fiber_offsets(glob)
        if offsets is not None:  # compressed weights: their fibers, kept compressed
            elems, bits = fiber_layout(glob)
            self._emit(accel.DmaLoadBmOp.create_with(
                dram_addr=_addr(glob) + offsets[ch0], sram_addr=sram, fibers=chs, fiber_elems=elems,
                word_bytes=bits // 8, elem_bits=bits, flags=int(isa.DmaFlags.PACKED | isa.DmaFlags.KEEP_COMPRESSED),
                sram_bytes=offsets[ch0 + chs] - offsets[ch0]))
            return
        shape = glob.type.get_shape()
        per_channel = math.prod(shape[1:]) * glob.type.element_type.width.data // 8
        self._dma(True, _addr(glob) + ch0 * per_channel, sram, chs * per_channel, 1, 0, 0)

    def _compute(self, op: tile.SynOp | tile.LifOp | tile.PackOp | tile.PoolOp | tile.AddOp, env: dict) -> None:
        """SYN / LIF / PACK / POOL / ADD: the tile, its index operands and its buffers' copies
        for this instance (`_compute_plan` has the rest)."""
        plan = self.plans.get(op)
        if plan is None:
            plan = self.plans[op] = self._compute_plan(op)
        cls, layer, indices, buffers, fixed, syn_flags = plan
        fields = {name: env[value] for name, value in indices}
        for name, rotation in buffers:
            fields[name] = _rotated(rotation, env)
        if fixed:
            fields.update(fixed)
        if syn_flags is not None:  # SYN: the weights kept compressed, per channel tile
            w_bytes = self._weight_bytes(op, env)
            fields["w_bytes"] = w_bytes
            fields["flags"] = int(syn_flags | (SynFlags.COMPRESSED_WEIGHTS if w_bytes else 0))
        self.ops.append(cls.create_with(layer, **fields))

    def _compute_plan(self, op: Operation) -> tuple:
        """(accel op class, layer symbol, (field, index operand) pairs, (field, rotation plan)
        pairs, fixed fields, SYN's flags without COMPRESSED_WEIGHTS or None)."""
        indices = [("batch", op.b), ("t0", op.t0), ("nt", op.nt), ("row0", op.row0), ("rows", op.rows),
                   ("ch0", op.ch0), ("chs", op.chs)]
        fixed: dict[str, int] = {}
        syn_flags = None
        if isinstance(op, tile.SynOp):
            self._weight_bytes_source(op)
            syn_flags = SynFlags.ACCUMULATE if op.accumulate is not None else SynFlags(0)
            indices += [("in_row0", op.in_row0), ("in_rows", op.in_rows)]
            buffers = [("in_addr", op.inp), ("w_addr", op.weights), ("param_addr", op.params), ("acc_addr", op.acc)]
            cls = accel.SynOp
        elif isinstance(op, tile.LifOp):
            buffers = [("acc_addr", op.acc), ("param_addr", op.params), ("state_addr", op.state), ("spk_addr", op.spk)]
            if op.mem is not None:
                buffers.append(("mem_addr", op.mem))
            else:
                fixed["mem_addr"] = isa.NO_ADDRESS
            cls = accel.LifOp
        elif isinstance(op, tile.PackOp):
            buffers, cls = [("spk_addr", op.spk), ("out_addr", op.out)], accel.PackOp
        elif isinstance(op, tile.PoolOp):
            indices += [("in_row0", op.in_row0), ("in_rows", op.in_rows)]
            buffers, cls = [("in_addr", op.inp), ("out_addr", op.out)], accel.PoolOp
        else:
            buffers, cls = [("a_addr", op.a), ("b_addr", op.b_in), ("out_addr", op.out)], accel.AddOp
        rotations = []
        for name, value in buffers:
            plan = self._rotation_plan(value, op)
            if len(plan[0]) == 1:  # one copy: the same address in every instance
                fixed[name] = plan[0][0]
            else:
                rotations.append((name, plan))
        return cls, op.layer_symbol, tuple(indices), tuple(rotations), fixed, syn_flags

    def _weight_bytes_source(self, op: tile.SynOp) -> None:
        if op not in self.fibers:
            source = _weights_source(op)
            glob = global_of(source.src) if source is not None else None
            offsets = fiber_offsets(glob) if glob is not None else None
            self.fibers[op] = None if offsets is None else (offsets, op.ch0, op.chs)

    def _weight_bytes(self, op: tile.SynOp, env: dict) -> int:
        """Bytes of the channel tile's fibers when the weights stay compressed in SRAM, else 0."""
        fibers = self.fibers[op]
        if fibers is None:
            return 0
        offsets, ch0, chs = fibers
        return offsets[env[ch0] + env[chs]] - offsets[env[ch0]]


def _rotated(plan: tuple, env: dict) -> int:
    """The SRAM offset a rotation plan (_Emitter._rotation_plan) gives in this iteration."""
    offsets, loops, parts, part = plan
    if len(offsets) == 1:
        return offsets[0]
    index = 0
    for iv, lower, step, trips in loops:
        index = index * trips + (env[iv] - env[lower]) // step
    return offsets[(index * parts + part) % len(offsets)]


_HANDLERS = {
    tile.LoadOp: _Emitter._window, tile.StoreOp: _Emitter._window, tile.LoadConstOp: _Emitter._load_const,
    tile.SynOp: _Emitter._compute, tile.LifOp: _Emitter._compute, tile.PackOp: _Emitter._compute,
    tile.PoolOp: _Emitter._compute, tile.AddOp: _Emitter._compute,
}


def _weights_source(syn: tile.SynOp) -> tile.LoadConstOp | None:
    """The load that filled the SYN's weight buffer: the last one before it (a buffer shared
    by the k-chunk nests of the op dataflow takes each chunk's weights in turn)."""
    loads = [u.operation for u in buffer_of(syn.weights).result.uses if isinstance(u.operation, tile.LoadConstOp)]
    if len(loads) <= 1:
        return loads[0] if loads else None
    block = syn.parent_op()
    while not isinstance(block, tile.KernelOp):
        block = block.parent_op()
    order = {op: i for i, op in enumerate(block.body.walk())}
    before = [load for load in loads if order[load] < order[syn]]
    return max(before, key=order.__getitem__) if before else loads[0]
