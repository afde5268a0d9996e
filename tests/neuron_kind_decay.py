"""A neuron kind defined outside snnc, as a plugin would: SpikingJelly's LIFNode with
decay_input=False and a soft reset (v_reset=None), which decays the membrane alone:

    h = v[t-1] - v[t-1] / tau + I[t]          (float32, in this order)

The hardware has no such leak form, but its integer step is the BETA one with
leak = 1 - 1/tau, so the kind reuses the LIF kind's machine mapping and numbers and
states only what differs: its parameter, checks, float32 step and leak value, and
how it is recognised in an exported graph. This one file is the whole kind;
tests/test_neuron_kinds.py imports it (which registers it) and compiles with it.
"""

from __future__ import annotations

import numpy as np

from snnc.dialects.neurons import register
from snnc.dialects.neurons.lif import LIF, SAME_STEP_AND_DELAYED


@register
class DecayLIF(LIF):
    name = "decay"
    title = "decay"
    formula = "v - v/tau + I"
    leak_params = ("tau",)
    fusion_rank = (3, -1)  # a Div in the subgraph: try before beta (whose 1 - 1/tau only approximates it)

    def verify(self, params):
        return "tau must be >= 1" if np.any(params["tau"] < 1) else None

    def charge(self, v, current, p):
        return v - v / p["tau"] + current

    def leak_real(self, param):
        return 1.0 - 1.0 / param("tau", 1.0)

    def fusion_candidates(self, params):
        for tau in (p for p in params if np.all(p >= 1)):
            for reset, timing in SAME_STEP_AND_DELAYED:
                yield reset, timing, {"tau": tau}
