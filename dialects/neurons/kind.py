"""The neuron-kind contract and the registry the kinds join on import.

A neuron kind is one value of the `snn.lif` `leak` property ("beta", "tau", "none", or
a plugin's). Its class holds everything that differs between kinds, so a new kind is
one module (docs/architecture.md, "Adding a neuron kind"):

  * the snn op's parameters: which of the `snn.lif` parameter properties (beta, tau)
    it requires, whether it needs v_reset, and their extra checks (`verify`);
  * reference semantics: `charge`, the float32 step h = f(v[t-1], I[t]) that the
    interpreter (dialects/snn_interpreter.py) and the frontend's neuron recogniser run;
  * the machine mapping: `hw_leak`, the ISA `LeakForm` the P-LIF unit computes, and
    `leak_real`, the real multiplier stored in the layer's `leak` parameter array (beta,
    or 1/tau); resets, comparisons and flags are common to every kind (`isa_fields`);
  * quantisation numbers (passes/neuron_numbers.py): how often the leak scales the
    membrane over T steps, the membrane's growth bound and its per-step error;
  * frontend recognition (compiler/frontend/neuron_fusion.py): the parameter
    candidates to try against an exported neuron subgraph, in order of preference.

The machine side (backend/isa.py, runtime/) stays generic: a kind is expressible when
its integer arithmetic is one of the hardware's leak forms with some `leak` integers.
Only numpy and backend.isa here: dialects/ imports only backend/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar

import numpy as np

from snnc.backend.isa import LeakForm, LifFlags, ResetMode

# The `snn.lif` properties a kind can draw its parameters from (threshold and v_reset
# are common to every kind). A kind needing another parameter adds a property to LIFOp.
LEAK_PARAMS = ("beta", "tau")
PARAMS = ("beta", "tau", "threshold", "v_reset")

Param = Callable[[str, float], np.ndarray]  # (name, default) -> float64 [param_c]


class NeuronKind:
    """One neuron kind; subclass, set the class attributes, and `register` an instance."""

    name: ClassVar[str]  # the snn.lif `leak` value
    title: ClassVar[str]  # how messages name it ("LIF", "IF")
    formula: ClassVar[str]  # the charge step for error messages, e.g. "beta*v + I"
    hw_leak: ClassVar[LeakForm]
    leak_params: ClassVar[tuple[str, ...]] = ()  # required snn.lif properties (LEAK_PARAMS)
    needs_v_reset: ClassVar[bool] = False  # v_reset is read by the charge step, whatever the reset
    # neuron_fusion tries kinds in this order: (without, with) a Div node in the subgraph
    fusion_rank: ClassVar[tuple[int, int]] = (100, 100)

    # -- the snn op --------------------------------------------------------------------
    def verify(self, params: dict[str, np.ndarray]) -> str | None:
        """What is wrong with the op's parameters (given as arrays), beyond the common checks."""
        return None

    # -- reference semantics (float32, in the canonical ONNX body's operation order) -----
    def charge(self, v: np.ndarray, current: np.ndarray, p: dict[str, np.ndarray | None]) -> np.ndarray:
        """h[t] from v[t-1] and I[t]; `p` holds the parameters shaped to broadcast."""
        raise NotImplementedError

    # -- the machine mapping and quantisation numbers -----------------------------------
    def leak_real(self, param: Param) -> np.ndarray | None:
        """The real value of the layer's `leak` array (per channel), or None: no leak."""
        return None

    def leak_scalings(self, timesteps: int) -> int:
        """How many times the leak multiplies a step's input before the last step: the
        membrane takes that many times leak_frac extra fractional bits to stay exact."""
        return 0

    def membrane_gain(self, leak_real: np.ndarray | None) -> float:
        """g in |v[t]| <= max(1, g) |v[t-1]| + drive + |threshold| + |v_reset|."""
        return 1.0

    def membrane_drive(self, current, abs_v_reset, leak_real: np.ndarray | None):
        """The input term of that bound, from |I| and |v_reset| (scalars or per channel)."""
        return current

    def error_step(self, leak_real, leak_rounded, threshold_error: float, v_reset_error: float,
                   current_error: float, current_bound: float, membrane_bound: float,
                   floors: float, reference: float) -> tuple[float, float]:
        """(gain, added error) of one step of |v - float reference| (real units); `floors`
        are the integer floors' and `reference` float32's own rounding."""
        return 1.0, current_error + max(threshold_error, v_reset_error) + floors + reference

    # -- frontend recognition -----------------------------------------------------------
    def fusion_candidates(self, params: list[np.ndarray]) -> Iterator[tuple[str, str, dict]]:
        """(reset, reset_timing, parameters) to try, for one threshold, with parameters
        drawn from a subgraph's constants `params`; nothing: not recognised from ONNX."""
        return iter(())


_KINDS: dict[str, NeuronKind] = {}


def register(kind: NeuronKind | type[NeuronKind]) -> NeuronKind:
    """Add a kind (an instance, or a class: used as a decorator) under its `name`; a
    second kind of the same name replaces the first."""
    instance = kind() if isinstance(kind, type) else kind
    for attr in ("name", "title", "formula", "hw_leak"):
        if not hasattr(instance, attr):
            raise TypeError(f"neuron kind {type(instance).__name__} has no `{attr}`")
    if not set(instance.leak_params) <= set(LEAK_PARAMS):
        raise TypeError(f"neuron kind {instance.name!r}: leak_params {instance.leak_params} "
                        f"must be among the snn.lif properties {LEAK_PARAMS}")
    _KINDS[instance.name] = instance
    return kind


def unregister(name: str) -> None:
    """Remove a kind (tests that register one of their own)."""
    _KINDS.pop(name, None)


def registered() -> dict[str, NeuronKind]:
    """The kinds registered so far, in registration order."""
    return _KINDS


# -- the ISA fields common to every kind --------------------------------------------------
RESETS = {"subtract": ResetMode.SUBTRACT, "zero": ResetMode.ZERO, "to_value": ResetMode.TO_VALUE}


def lif_flags(compare: str, reset_timing: str, per_channel: bool, no_fire: bool) -> LifFlags:
    return ((LifFlags.COMPARE_GT if compare == "gt" else 0)
            | (LifFlags.DELAYED_RESET if reset_timing == "delayed" else 0)
            | (LifFlags.PER_CHANNEL if per_channel else 0)
            | (LifFlags.NO_FIRE if no_fire else 0))
