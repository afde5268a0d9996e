"""The leaky integrate-and-fire neuron, leak = "beta" (snnTorch Leaky, NIR LIF, snn::LIF).

    h = beta * v[t-1] + I[t]      (float32, one product and one sum)

Machine: LeakForm.BETA, the layer's `leak` array is beta in leak_frac bits and the
P-LIF unit computes ((v * leak) >> leak_frac) + I.
"""

from __future__ import annotations

import numpy as np

from snnc.backend.isa import LeakForm
from snnc.dialects.neurons.kind import NeuronKind, register

SAME_STEP_AND_DELAYED = (("subtract", "same"), ("zero", "same"), ("subtract", "delayed"), ("zero", "delayed"))


@register
class LIF(NeuronKind):
    name = "beta"
    title = "beta"
    formula = "beta*v + I"
    hw_leak = LeakForm.BETA
    leak_params = ("beta",)
    fusion_rank = (0, 1)

    def charge(self, v, current, p):
        return p["beta"] * v + current

    def leak_real(self, param):
        return param("beta", 1.0)

    def leak_scalings(self, timesteps: int) -> int:
        return timesteps - 1  # v[t] = beta v[t-1] + I[t]: the first current is scaled T - 1 times

    def membrane_gain(self, leak_real):
        return float(np.max(np.abs(leak_real)))

    def error_step(self, leak_real, leak_rounded, threshold_error, v_reset_error, current_error, current_bound,
                   membrane_bound, floors, reference):
        gain = float(np.max(np.abs(leak_rounded)))
        leak_error = float(np.max(np.abs(leak_rounded - leak_real)))
        return gain, (current_error + leak_error * membrane_bound + max(threshold_error, v_reset_error)
                      + floors + reference)

    def fusion_candidates(self, params):
        positive = [p for p in params if np.all(p > 0)]
        betas = [p for p in params if np.all((p >= 0) & (p <= 1)) and not np.all(p == 1)]  # beta 1 is IF
        # v - v/tau + I (SpikingJelly's decay_input=False with v_reset 0) is beta = 1 - 1/tau
        betas += [np.float32(1) - np.float32(1) / p for p in positive if np.all(p > 1)]
        for beta in betas:
            for reset, timing in SAME_STEP_AND_DELAYED:
                yield reset, timing, {"beta": beta}
            for v_reset in params:
                yield "to_value", "same", {"beta": beta, "v_reset": v_reset}
