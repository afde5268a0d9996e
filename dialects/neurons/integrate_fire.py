"""The integrate-and-fire neuron, leak = "none" (snn::IF, NIR IF, SpikingJelly IFNode).

    h = v[t-1] + I[t]

Machine: LeakForm.NONE (the layer's `leak` array holds ones, unused).
"""

from __future__ import annotations

from snnc.backend.isa import LeakForm
from snnc.dialects.neurons.kind import NeuronKind, register
from snnc.dialects.neurons.lif import SAME_STEP_AND_DELAYED


@register
class IntegrateFire(NeuronKind):
    name = "none"
    title = "IF"
    formula = "v + I"
    hw_leak = LeakForm.NONE
    fusion_rank = (1, 2)

    def charge(self, v, current, p):
        return v + current

    def fusion_candidates(self, params):
        for reset, timing in SAME_STEP_AND_DELAYED:
            yield reset, timing, {}
        for v_reset in params:
            yield "to_value", "same", {"v_reset": v_reset}
