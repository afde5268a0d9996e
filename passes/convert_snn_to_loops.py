"""convert-snn-to-loops: every layer as a plain, legal loop nest over buffers.

CONTRACT
  Requires: snn-level IR with one func.func @main, after `quantise` (every layer
    carries its fixed-point numbers).
  Guarantees: the module is at the loop level (passes/loop_module.py): DRAM feature
    maps (`tile.map`, in the order passes/snn_steps.py creates them, graph inputs
    first), weights quantised to their integers in the stored layout
    [N][kh][kw][Cs_in] (`memref.global`, dense), parameter blocks, one `accel.layer`
    descriptor per synapse / pool / add, and one `tile.kernel` per step, in program
    order. Each kernel's nest, outermost first:
        synaptic group   n (output-channel tiles) > b > m (output-row tiles) > t
                         weights per n; per visit: load each input, syn (one per
                         synapse, the second accumulating), [store the current],
                         lif, [store the membrane], pack, store the spikes
        pool, add        b > m > t; per visit: load, pool / add, store
    Each loop holds one tile (step = its extent) and t runs the TPPE lanes at once
    (step = timestep_lanes, `tile.parallel`): the FTP nest, the machine's native
    dataflow. loop-reorder, time-batch, layer-fuse and spike-pack rewrite it;
    tile-sizes chooses the tiles. Per-visit buffers rotate over every loop, the
    neuron state over the output tiles (n, b, m), weights over n.
    Values are unchanged. Unsupported constructs are CompileErrors naming the node.
    @main returns the output maps; its results carry the ONNX name, the user's shape
    (`tile.shape`) and the timesteps the user sees (`tile.window` [t0, nt]: all T, or a
    snn.time_slice's window).
  Options:
    hw              hardware preset name or .toml path
    model_name      recorded in the program
    sram_bytes, timestep_lanes   0 = the hw config's; else they replace it (tests, sweeps)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func, memref
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DictionaryAttr,
    IntegerAttr,
    IntegerType,
    ModuleOp,
    StringAttr,
    i64,
)
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from snnc.dialects.snn import int_array
from snnc.backend.errors import CompileError
from snnc.backend.hwconfig import load_hw
from snnc.backend.isa import Format, LayerFlags, LayerKind
from snnc.dialects import accel, tile
from snnc.dialects.neurons import isa_fields
from snnc.dialects.snn import (
    ONNX_NAME_ATTR,
    AvgPool2dOp,
    SpikeLogicOp,
    int_array_value,
    io_window,
    main_function,
)
from snnc.passes.footprints import infer_buffer_types
from snnc.passes.kernel_nests import PLACEHOLDER, VISIT_DIMS, GroupNest, Nest, const_global
from snnc.passes.kernel_nests import TILE_DIMS as TILE_DIMS  # re-exported: spike_pack
from snnc.passes.kernel_nests import get_global as get_global  # re-exported: synapse_split
from snnc.passes.loop_module import HW_ATTR, MODEL_ATTR, TIMESTEPS_ATTR, unique_symbol
from snnc.passes.loopnest import const
from snnc.passes.numerics import quantise_group
from snnc.passes.quantise import INPUT_FIXED_ATTR, NEURON_ATTR, from_attr, read_fixed
from snnc.passes.snn_steps import NetworkSteps
from snnc.passes.step_records import AddStep, FeatureMap, GroupStep, PoolStep, pad8, source_name

WEIGHTS_CONST_PREFIX = "w_"  # memref.global symbols: a layer's weights,
PARAMS_CONST_PREFIX = "p_"  # and a synaptic group's parameter block


@dataclass(frozen=True)
class ConvertSnnToLoops(ModulePass):
    """Lower snn @main to the loop level: maps, constants, descriptors and one nest per layer."""

    name = "convert-snn-to-loops"
    ir_level: ClassVar[str] = "snn"

    hw: str = "loas"
    model_name: str = ""
    sram_bytes: int = 0
    timestep_lanes: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        hw = load_hw(self.hw)
        if self.sram_bytes or self.timestep_lanes:
            hw = dataclasses.replace(hw, sram=dataclasses.replace(hw.sram, size_bytes=self.sram_bytes or hw.sram.size_bytes),
                                     compute=dataclasses.replace(hw.compute, timestep_lanes=self.timestep_lanes
                                                                 or hw.compute.timestep_lanes))
        main = main_function(op)
        fixed = from_attr(main.attributes[INPUT_FIXED_ATTR]) if INPUT_FIXED_ATTR in main.attributes else None
        if fixed is None:
            raise CompileError("convert-snn-to-loops: @main has no fixed-point numbers; run the quantise pass first")
        net = NetworkSteps(main, int(fixed["frac"]), float(fixed["abs_max"]))
        lowering = _Lowering(net, min(hw.compute.timestep_lanes, net.timesteps))
        new_main = lowering.build()
        for child in list(op.body.block.ops):
            child.detach()
            child.erase(safe_erase=False)
        op.body.block.add_ops([*lowering.globals, *lowering.layers, new_main])
        op.attributes[HW_ATTR] = StringAttr(hw.to_toml())
        op.attributes[TIMESTEPS_ATTR] = IntegerAttr(net.timesteps, i64)
        op.attributes[MODEL_ATTR] = StringAttr(self.model_name)
        for kernel in new_main.body.block.ops:
            if isinstance(kernel, tile.KernelOp):  # the buffers hold the plain nest's whole tiles
                infer_buffer_types(kernel.body.block, lowering.layer_by_sym, net.timesteps)


class _Lowering:
    def __init__(self, net: NetworkSteps, lanes: int):
        self.net = net
        self.T = net.timesteps
        self.lanes = lanes
        self.symbols: set[str] = set()
        self.globals: list[memref.GlobalOp] = []
        self.layers: list[accel.LayerOp] = []
        self.layer_by_sym: dict[str, accel.LayerOp] = {}
        self.maps: dict[int, SSAValue] = {}

    def build(self) -> func.FuncOp:
        for step in self.net.steps:  # the numbers first: later steps read earlier maps' scales
            _restore_numbers(step)
        body: list[Operation] = [self._map_op(fm) for fm in self.net.fmaps]
        for step in self.net.steps:
            if isinstance(step, GroupStep):
                body.append(self._group_kernel(step))
            elif isinstance(step, PoolStep):
                body.append(self._pool_kernel(step))
            else:
                body.append(self._add_kernel(step))
        outputs = [self._output_map(name, value) for name, value in self.net.outputs]
        body.append(func.ReturnOp(*outputs))
        main = func.FuncOp("main", ([], [v.type for v in outputs]), res_attrs=ArrayAttr([
            DictionaryAttr({ONNX_NAME_ATTR: StringAttr(n), SHAPE_ATTR: _shape_attr(v), WINDOW_ATTR: _window_attr(v)})
            for n, v in self.net.outputs]))
        main.body.block.add_ops(body)
        return main

    # -- maps, descriptors, constants ----------------------------------------------------
    def _map_op(self, fm: FeatureMap) -> tile.MapOp:
        op = tile.MapOp.create_with(fm.label, fm.fmt, fm.frac, fm.abs_max, fm.timesteps, fm.batch, fm.channels,
                                    fm.height, fm.width, fm.cs, fm.error)
        inputs = {id(self.net.values[v].fmap): name for name, v in self.net.inputs}
        if id(fm) in inputs:
            op.io = StringAttr(inputs[id(fm)])
            op.attributes[SHAPE_ATTR] = _shape_attr(fm.value)
        op.result.name_hint = tile.name_hint(fm.label)
        self.maps[id(fm)] = op.result
        return op

    def _output_map(self, name: str, value: SSAValue) -> SSAValue:
        stored = self.net.values.get(value)
        if stored is None:
            raise CompileError(f"graph output '{name}': its value is not stored (internal error)")
        if stored.flattened:
            raise CompileError(f"graph output '{name}': a flattened [B, C, H, W] map cannot be returned "
                               "(its stored order is (h, w, c)); return the map before the reshape")
        return self.maps[id(stored.fmap)]

    def _layer(self, source: str, notes: str, **fields: int) -> str:
        sym = unique_symbol(source, self.symbols)
        layer = accel.LayerOp.create_with(sym, source, notes or None, timesteps=self.T, **fields)
        self.layers.append(layer)
        self.layer_by_sym[sym] = layer
        return sym

    def _global(self, name: str, data: np.ndarray, element: IntegerType) -> memref.GlobalOp:
        glob = const_global(unique_symbol(name, self.symbols), data, element)
        self.globals.append(glob)
        return glob

    # -- synaptic groups ------------------------------------------------------------------
    def _group_kernel(self, step: GroupStep) -> tile.KernelOp:
        fix = read_fixed(step.anchor)
        syns = step.synapses
        where = f"{step.head.op.name} '{source_name(step.head.op)}'"
        weight_bytes, out_cs = int(fix["weight_bytes"]), pad8(step.out_c)
        fields = dict(kind=LayerKind.CONV, out_c=step.out_c, out_cs=out_cs, out_h=step.out_h, out_w=step.out_w,
                      weight_bytes=weight_bytes)
        fields.update(_neuron_fields(step, fix))
        syms = []
        for s in syns:
            fm = s.src.fmap
            syms.append(self._layer(
                source_name(s.op), str(fix["notes"]), in_format=fm.fmt, in_frac=fm.frac, in_c=s.in_c, in_cs=s.in_cs,
                in_h=s.in_h, in_w=s.in_w, kh=s.kh, kw=s.kw, stride_h=s.stride[0], stride_w=s.stride[1],
                pad_top=s.pads[0], pad_left=s.pads[1], pad_bottom=s.pads[2], pad_right=s.pads[3],
                dil_h=s.dil[0], dil_w=s.dil[1], **fields))
        element = IntegerType(8 * weight_bytes)
        shift = np.asarray(fix["channel_shift"], np.int64) if fix["channel_shift"] else None
        ints = quantise_group([(s.weights, fw, s.src.fmap.int_max()) for s, fw in zip(syns, fix["weight_fracs"])],
                              sum(s.bias_real for s in syns), int(fix["acc_frac"]), out_cs, weight_bytes, where, shift)
        weights = [self._global(f"{WEIGHTS_CONST_PREFIX}{sym}", q, element) for sym, q in zip(syms, ints.weights)]
        params = self._global(f"{PARAMS_CONST_PREFIX}{syms[0]}", _param_block(step, ints.bias), IntegerType(32))
        return GroupNest(self, step, syms, weights, params).kernel()

    def _pool_kernel(self, step: PoolStep) -> tile.KernelOp:
        op, src, out = step.op, step.src, step.out
        fix = read_fixed(op)
        kh, kw = int_array_value(op.kernel)
        sh, sw = int_array_value(op.strides)
        pads = int_array_value(op.pads)
        if max(kh, kw, sh, sw, *pads) > 255:
            raise CompileError(f"{op.name} '{source_name(op)}': kernel/stride/pad above 255")
        fields: dict[str, int] = dict(kind=LayerKind.MAXPOOL)
        if isinstance(op, AvgPool2dOp):
            fields = dict(kind=LayerKind.AVGPOOL, avg_recip=int(fix["avg_recip"]), avg_shift=int(fix["avg_shift"]),
                          flags=1 if op.count_include_pad is not None else 0)
        sym = self._layer(
            source_name(op), str(fix["notes"]), in_format=src.fmt, in_frac=src.frac, out_format=out.fmt,
            out_frac=out.frac, in_c=src.channels, in_cs=src.cs, in_h=src.height, in_w=src.width,
            out_c=out.channels, out_cs=out.cs, out_h=out.height, out_w=out.width, kh=kh, kw=kw, stride_h=sh,
            stride_w=sw, pad_top=pads[0], pad_left=pads[1], pad_bottom=pads[2], pad_right=pads[3],
            dil_h=1, dil_w=1, param_c=0, **fields)
        inp = tile.AllocOp("in", PLACEHOLDER, rotate=VISIT_DIMS)
        res = tile.AllocOp("out", PLACEHOLDER, rotate=VISIT_DIMS)
        nest = Nest([inp, res], src.batch, out.height, self.T, self.lanes)
        c0, cs, cs_in = const(0), const(out.cs), const(src.cs)
        rows = tile.InputRowsOp(nest.row0, nest.rows, kh, sh, pads[0], 1, src.height)
        coords = nest.coords(c0, cs)
        nest.body([
            c0, cs, cs_in, rows,
            tile.LoadOp.build_with(src=self.maps[id(src)], dst=inp.result, **nest.map_window(
                rows.in_row0, rows.in_rows, c0, cs_in)),
            tile.PoolOp.build_with(sym, inp=inp.result, out=res.result, in_row0=rows.in_row0,
                                   in_rows=rows.in_rows, **coords),
            tile.StoreOp.build_with(src=res.result, dst=self.maps[id(out)], **coords),
        ])
        return nest.kernel(source_name(op), self.layer_by_sym, self.T)

    def _add_kernel(self, step: AddStep) -> tile.KernelOp:
        a, b, out = step.a, step.b, step.out
        fix = read_fixed(step.op)
        logic = step.op.op.data if isinstance(step.op, SpikeLogicOp) else None
        sym = self._layer(
            source_name(step.op), str(fix["notes"]), kind=LayerKind.ADD, in_format=a.fmt, in2_format=b.fmt,
            out_format=out.fmt, in_frac=a.frac, in2_frac=b.frac, out_frac=out.frac, in_c=a.channels, in_cs=a.cs,
            in_h=a.height, in_w=a.width, out_c=out.channels, out_cs=out.cs, out_h=out.height, out_w=out.width,
            kh=1, kw=1, stride_h=1, stride_w=1, dil_h=1, dil_w=1, param_c=0,
            flags=int(LayerFlags.ADD_AND) if logic == "and" else 0)
        bufs = [tile.AllocOp(role, PLACEHOLDER, rotate=VISIT_DIMS) for role in ("a", "b", "out")]
        nest = Nest(bufs, out.batch, out.height, self.T, self.lanes)
        c0, cs = const(0), const(out.cs)
        coords = nest.coords(c0, cs)
        window = nest.map_window(nest.row0, nest.rows, c0, cs)
        nest.body([
            c0, cs,
            tile.LoadOp.build_with(src=self.maps[id(a)], dst=bufs[0].result, **window),
            tile.LoadOp.build_with(src=self.maps[id(b)], dst=bufs[1].result, **window),
            tile.AddOp.build_with(sym, a=bufs[0].result, b_in=bufs[1].result, out=bufs[2].result, **coords),
            tile.StoreOp.build_with(src=bufs[2].result, dst=self.maps[id(out)], **coords),
        ])
        return nest.kernel(source_name(step.op), self.layer_by_sym, self.T)


SHAPE_ATTR = "tile.shape"  # on an I/O map and @main's results: the ONNX tensor shape [T, B, ...]
WINDOW_ATTR = "tile.window"  # on @main's results: the timesteps [t0, nt] the user sees (snn.time_slice)


def _shape_attr(value: SSAValue) -> DenseArrayBase:
    return int_array(list(io_window(value)[2]))


def _window_attr(value: SSAValue) -> DenseArrayBase:
    return int_array(list(io_window(value)[:2]))


def _restore_numbers(step) -> None:
    """Put quantise's numbers on the step's maps (the scales later steps read)."""
    if isinstance(step, GroupStep):
        fix = read_fixed(step.anchor)
        if step.current_out is not None:
            step.current_out.frac, step.current_out.abs_max = int(fix["acc_frac"]), float(fix["current_bound"])
            step.current_out.error = float(fix["current_error"])
        if step.lif is not None and step.membrane_out is not None:
            neu = read_fixed(step.lif, NEURON_ATTR)
            step.membrane_out.frac, step.membrane_out.abs_max = int(neu["membrane_frac"]), float(neu["membrane_bound"])
            step.membrane_out.error = float(neu["membrane_error"])
        return
    fix = read_fixed(step.op)
    step.out.frac, step.out.abs_max, step.out.error = int(fix["frac"]), float(fix["abs_max"]), float(fix["error"])


def _neuron_fields(step: GroupStep, fix: dict) -> dict[str, int]:
    lif = step.lif
    if lif is None:
        return dict(out_format=Format.ACT_I32, out_frac=int(fix["acc_frac"]), param_c=1)
    neu = read_fixed(lif, NEURON_ATTR)
    return dict(out_format=Format.SPIKE_PLANES, acc_shift=int(neu["acc_shift"]), leak_frac=int(neu["leak_frac"]),
                membrane_frac=int(neu["membrane_frac"]), param_c=int(neu["param_c"]),
                **isa_fields(lif.leak.data, lif.reset.data, lif.reset_timing.data, lif.compare.data,
                             bool(neu["per_channel"]), lif.no_fire is not None))


def _param_block(step: GroupStep, bias: np.ndarray) -> np.ndarray:
    """bias[out_c] (accumulator units), then threshold, leak, v_reset [param_c] (isa.PARAM_ARRAYS)."""
    if step.lif is None:
        rest = [np.zeros(1), np.ones(1), np.zeros(1)]
    else:
        neu = read_fixed(step.lif, NEURON_ATTR)
        rest = [np.asarray(neu[n], np.int64) for n in ("threshold", "leak", "v_reset")]
    block = np.concatenate([bias.astype(np.int64), *[np.asarray(r, np.int64) for r in rest]])
    if block.size and (block.min() < -(1 << 31) or block.max() >= 1 << 31):
        bad = int(block.min()) if block.min() < -(1 << 31) else int(block.max())
        raise CompileError(f"{step.head.op.name} '{source_name(step.head.op)}': parameter: value {bad} does not fit int32")
    return block.astype("<i4")
