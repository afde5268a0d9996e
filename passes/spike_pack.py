"""spike-pack: store spike trains packed and compressed (LoAS §IV-A, Fig. 8).

CONTRACT
  Requires: snn-level IR (before convert-snn-to-accel), one func.func @main.
  Guarantees:
    * Every `!snn.spikes` value produced inside @main (LIF spikes, max pool or
      reshape of spikes) that is not a graph output, and whose users are all
      synapse layers (snn.dense / snn.conv2d), snn.add, snn.max_pool2d or a
      reshape whose result is packable too, becomes `!snn.packed<T=.., shape>`:
      all T bits of a presynaptic neuron in one word, silent neurons (no spike at
      any t) dropped behind a per-row bitmask with one pointer per fiber. Graph
      inputs and outputs keep their types (the I/O format does not change).
    * With `weights` (default), every synapse op gets the unit attribute
      `snn.compressed_weights`: its weights are stored column-wise as bitmask
      fibers (one per output channel: pointer, bitmask, non-zero weights).
    * Values are unchanged (simulator outputs identical), unless
      `mask-single-spike`, which marks the packed types `mask_single`: neurons
      firing exactly once across T are stored as silent (LoAS §IV-C
      preprocessing). That changes results; `snnc verify` reports the agreement.
  The lowering stores packed maps as Format.SPIKE_BITMASK (dma.store_bm /
  dma.load_bm, backend/isa.py), and the simulator moves and counts exactly the
  compressed bytes, pointers and bitmasks included; the report gives
  `compression_efficiency` per layer. A packed map is written by whole rows of
  all channels and all T timesteps, so its producer cannot be time-batched
  below T, and op/gust (channel-sliced k-chunks) cannot read it.
  Options:
    mask-single-spike  bool, default false
    weights            bool, default true: also compress the weights
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from snnc.dialects.snn import (
    AddOp,
    Conv2dOp,
    DenseOp,
    MaxPool2dOp,
    PackedSpikeTrainType,
    ReshapeOp,
    SpikeTrainType,
    main_function,
)
from snnc.passes.compress_weights import compress_synapse_weights
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter


@dataclass(frozen=True)
class SpikePack(ModulePass):
    """Pack spike trains (T bits per neuron, silent neurons behind row bitmasks) and compress weights."""

    name = "spike-pack"
    ir_level: ClassVar[str] = "snn"

    mask_single_spike: bool = False
    weights: bool = True

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        main = main_function(op)
        block = main.body.block
        returned = {v for o in block.ops if isinstance(o, func.ReturnOp) for v in o.arguments}

        def packable(value: SSAValue) -> bool:
            if value in returned or not isinstance(value.type, SpikeTrainType | PackedSpikeTrainType):
                return False
            for use in value.uses:
                user = use.operation
                if isinstance(user, ReshapeOp):
                    if not packable(user.output):  # a reshape shares its input's storage
                        return False
                elif not isinstance(user, DenseOp | Conv2dOp | AddOp | MaxPool2dOp):
                    return False
            return True

        if self.weights:
            compress_synapse_weights(block)  # the compress-weights pass
        for o in block.ops:
            for result in o.results:
                t = result.type
                if isinstance(t, SpikeTrainType) and packable(result):
                    Rewriter.replace_value_with_new_type(
                        result, PackedSpikeTrainType(t.num_timesteps, t.get_shape(), self.mask_single_spike))
