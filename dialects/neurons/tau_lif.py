"""The leaky integrate-and-fire neuron with a time constant, leak = "tau"
(SpikingJelly LIFNode, decay_input=True): the membrane decays towards v_reset.

    h = v[t-1] + (I[t] - (v[t-1] - v_reset)) / tau      (float32, in this order)

Machine: LeakForm.TAU, the layer's `leak` array is 1/tau in leak_frac bits and the
P-LIF unit computes v + (((I - (v - v_reset)) * leak) >> leak_frac).
"""

from __future__ import annotations

import numpy as np

from snnc.backend.isa import LeakForm
from snnc.dialects.neurons.kind import NeuronKind, register


@register
class TauLIF(NeuronKind):
    name = "tau"
    title = "tau"
    formula = "v + (I - (v - v_reset))/tau"
    hw_leak = LeakForm.TAU
    leak_params = ("tau",)
    needs_v_reset = True
    fusion_rank = (2, 0)

    def verify(self, params):
        return "tau must be > 0" if np.any(params["tau"] <= 0) else None

    def charge(self, v, current, p):
        return v + (current - (v - p["v_reset"])) / p["tau"]

    def leak_real(self, param):
        return 1.0 / param("tau", 1.0)

    def leak_scalings(self, timesteps: int) -> int:
        return timesteps  # h = v + (I - (v - v_reset)) / tau also scales the first step's current

    def membrane_gain(self, leak_real):
        return max(1.0, float(np.max(np.abs(1.0 - leak_real))))

    def membrane_drive(self, current, abs_v_reset, leak_real):
        return (current + abs_v_reset) * max(1.0, float(np.max(leak_real)))

    def error_step(self, leak_real, leak_rounded, threshold_error, v_reset_error, current_error, current_bound,
                   membrane_bound, floors, reference):
        # v += (I - (v - v_reset)) / tau: the step's inputs scaled by k = 1/tau
        k_rounded = float(np.max(np.abs(leak_rounded)))
        gain = float(np.max(np.abs(1.0 - leak_rounded)))
        k_error = float(np.max(np.abs(leak_rounded - leak_real)))
        return gain, (k_rounded * (current_error + v_reset_error) + k_error * (membrane_bound + current_bound)
                      + threshold_error + floors + reference)

    def fusion_candidates(self, params):
        positive = [p for p in params if np.all(p > 0)]
        taus = list(positive) + [np.float32(1.0) / p for p in positive if np.all(p < 1)]
        for tau in taus:
            for v_reset in params:
                for reset in ("to_value", "subtract", "zero"):
                    yield reset, "same", {"tau": tau, "v_reset": v_reset}
