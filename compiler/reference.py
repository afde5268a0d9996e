"""The reference `snnc verify` compares with: run a model, compare outputs with snnc's, judge.

`reference_outputs` runs onnxruntime on an ONNX model. A model onnxruntime cannot run
(NIR graphs; ONNX with body-less snn::LIF / snn::IF nodes, which have no function
body) runs in the `snn` dialect's reference interpreter on the frontend's IR instead;
that checks compilation and simulation, not the frontend's reading of the model, and
the returned description says which reference was used and why.

CONTRACT
  run_onnxruntime(model, inputs) -> {output name: array}
  reference_outputs(model, inputs, options) -> ({output name: array}, which reference and why)
  compare_outputs(ours, reference, tolerances) -> [OutputComparison]: per output, the
      fraction of elements that agree (spikes: equal; values: |diff| <= the output's
      tolerance), the fraction that are bit-equal, and the largest |diff|.
  parse_agreement("98" | "98%" | "0.98") -> 0.98 (the rule: see `parse_agreement`).
  judge(rows, plan) -> Verdict: what `snnc verify` prints and its exit status.

What verify compares (docs/numerics.md, "Verifying"):
  * a representable model (no layer rounds, the inputs are exact at their fixed-point
    scale): every output bit for bit; PASS only if every element is equal;
  * a quantised model: spikes must agree on at least QUANTISED_MIN_AGREEMENT of the
    elements, and values must lie within their quantisation bound (accel.io
    error_bound: the most rounding moves them while the spikes feeding them agree)
    on as many. `--atol` replaces the bound, `--min-agreement` the required fraction.
"bit-exact" is said only when every element of every output is equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snnc.backend.errors import InputError, SnncError

QUANTISED_MIN_AGREEMENT = 0.98  # spike agreement the default 8-bit quantisation reaches on float models


def run_onnxruntime(model: str | Path | bytes, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the CLI owns the terminal
    source = str(model) if isinstance(model, Path) else model
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise SnncError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None
    feeds = {}
    for node in session.get_inputs():
        if node.name not in inputs:
            raise InputError(f"input '{node.name}' is missing (inputs given: {sorted(inputs)})")
        feeds[node.name] = np.asarray(inputs[node.name], dtype=np.float32)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def _bodyless_neuron(model_path: Path) -> str | None:
    """The name of a body-less snn::LIF / snn::IF node of an ONNX file, if it has one."""
    import onnx

    from snnc.compiler.frontend.onnx_import import bodyless_neurons

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # not loadable: onnxruntime reports it
        return None
    nodes = bodyless_neurons(model)
    return (nodes[0].name or nodes[0].output[0]) if nodes else None


def reference_outputs(model: str | Path, inputs: dict[str, np.ndarray], options) -> tuple[dict[str, np.ndarray], str]:
    """(outputs, which reference computed them and why) for `snnc verify`; `options` are
    the CompileOptions (NIR's dt and T)."""
    path = Path(model)
    why = None
    if path.suffix == ".nir":
        why = "NIR graphs have no onnxruntime form"
    else:
        node = _bodyless_neuron(path)
        if node is not None:
            why = f"onnxruntime cannot run node {node!r}: a snn::LIF with no function body"
    if why is None:
        return run_onnxruntime(path, inputs), "onnxruntime"
    from snnc.dialects.snn_interpreter import run_snn

    if path.suffix == ".nir":
        from snnc.compiler.frontend.nir_import import import_nir

        # (its notes were printed when the model was compiled)
        module = import_nir(path, dt=options.dt, timesteps=options.timesteps, warn=lambda _note: None)
    else:
        from snnc.compiler.frontend.onnx_import import import_onnx

        module = import_onnx(path, warn=lambda _note: None)
    outputs = run_snn(module, inputs)
    return outputs, f"the snn-dialect reference interpreter ({why}; it checks the compiled program, not the import)"


@dataclass(frozen=True)
class OutputComparison:
    name: str
    shape: tuple[int, ...]
    binary: bool  # the reference output holds only 0/1 (spikes)
    agreement: float  # fraction of elements that agree (spikes: equal; values: within `tolerance`)
    max_abs_diff: float
    equal: float = 1.0  # fraction of elements bit-equal
    tolerance: float = 0.0  # values agree where |diff| <= tolerance (0 for spikes)

    @property
    def exact(self) -> bool:
        """Every element equal (not merely within a tolerance)."""
        return self.equal == 1.0


def compare_outputs(
    ours: dict[str, np.ndarray], reference: dict[str, np.ndarray], tolerances: float | dict[str, float] = 0.0,
) -> list[OutputComparison]:
    """Per output: spikes agree only when equal; values agree within their tolerance
    (one number for all, or one per output name; missing names: 0)."""
    rows = []
    for name, ref in reference.items():
        if name not in ours:
            raise SnncError(f"output '{name}' is missing from the simulator's outputs")
        got = ours[name]
        if got.shape != ref.shape:
            raise SnncError(f"output '{name}': simulator shape {got.shape} != the reference's {ref.shape}")
        binary = bool(np.isin(ref, (0.0, 1.0)).all())
        tolerance = 0.0 if binary else (
            tolerances.get(name, 0.0) if isinstance(tolerances, dict) else float(tolerances))
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        equal = got == ref
        agree = equal if binary else (diff <= tolerance)
        rows.append(
            OutputComparison(
                name=name,
                shape=tuple(ref.shape),
                binary=binary,
                agreement=float(agree.mean()) if agree.size else 1.0,
                max_abs_diff=float(diff.max()) if diff.size else 0.0,
                equal=float(equal.mean()) if equal.size else 1.0,
                tolerance=tolerance,
            )
        )
    return rows


def parse_agreement(text: str) -> float:
    """The required agreement as a fraction in [0, 1].

    "98%" and "98" are percentages, "0.98" is a fraction: a number above 1 (or one
    written with %) is a percentage, one of at most 1 a fraction. So "1" means 100 %;
    write "1%" for one percent. Anything else, or outside 0-100 %, is an InputError.
    """
    raw = text.strip()
    percent = raw.endswith("%")
    try:
        value = float(raw.removesuffix("%").strip())
    except ValueError:
        value = math.nan
    if percent or value > 1:
        value /= 100
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise InputError(f"--min-agreement {text!r}: expected a percentage 0-100 (98 or 98%) "
                         "or a fraction 0-1 (0.98)")
    return value


def percent(fraction: float) -> str:
    """A fraction as a percentage that never reads 100 % unless it is exactly 1."""
    if fraction == 1.0:
        return "100 %"
    return f"{min(100 * fraction, 99.99):.2f} %"


@dataclass(frozen=True)
class VerifyPlan:
    """How the outputs are judged, and why (printed above the table)."""

    representable: bool
    min_agreement: float
    tolerances: dict[str, float]  # value outputs: |diff| allowed
    tolerance_source: str  # "bit-exact", "--atol" or "quantisation bound"
    basis: str


def plan_verification(
    value_outputs: dict[str, float | None], inexact_layers: list[tuple[str, str]], rounded_inputs: list[str],
    *, atol: float | None = None, min_agreement: float | None = None,
) -> VerifyPlan:
    """Decide the rule: bit for bit where the compiler says nothing rounds, else spike
    agreement plus each value output's quantisation bound (`value_outputs`: name ->
    accel.io error_bound). `rounded_inputs` describes the graph inputs that the
    fixed-point input format rounds. An explicit `atol` / `min_agreement` overrides."""
    representable = not inexact_layers and not rounded_inputs
    if atol is not None:
        tolerances, source = dict.fromkeys(value_outputs, atol), "--atol"
    elif representable:
        tolerances, source = dict.fromkeys(value_outputs, 0.0), "bit-exact"
    else:
        tolerances, source = {k: v or 0.0 for k, v in value_outputs.items()}, "quantisation bound"
    required = min_agreement if min_agreement is not None else (1.0 if representable else QUANTISED_MIN_AGREEMENT)
    asked = " (--min-agreement)" if min_agreement is not None else ""
    if representable:
        why = "no layer rounds and every input is exact in its stored format"
        if atol is None and min_agreement is None:
            basis = f"compared bit for bit: {why}"
        else:
            basis = f"the model is representable ({why}), but compared as asked: "
            basis += _rule(required, source, asked)
    else:
        reasons = []
        if inexact_layers:
            node, reason = inexact_layers[0]
            reasons.append(f"{len(inexact_layers)} layer(s) round, e.g. {node}: {reason}")
        reasons.extend(rounded_inputs)
        basis = f"quantised model ({'; '.join(reasons)}), so: {_rule(required, source, asked)}"
    return VerifyPlan(representable, required, tolerances, source, basis)


def _rule(required: float, source: str, asked: str) -> str:
    values = {"--atol": "values within --atol",
              "bit-exact": "values equal",
              "quantisation bound": "values within their quantisation bound (the most rounding moves them "
                                    "while the spikes feeding them agree)"}[source]
    return f"spikes equal and {values}, on at least {percent(required)} of each output's elements{asked}"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    text: str  # one line, starting PASS or FAIL


def judge(rows: list[OutputComparison], plan: VerifyPlan, reference: str = "onnxruntime") -> Verdict:
    """PASS when every output agrees on at least plan.min_agreement of its elements.
    The words say "bit-exact" only when every element of every output is equal; `reference`
    names what was compared with."""
    ok = all(row.agreement >= plan.min_agreement for row in rows)
    equal = all(row.exact for row in rows)
    worst = min(rows, key=lambda r: r.agreement) if rows else None
    lowest = f"lowest agreement {percent(worst.agreement)} ('{worst.name}')" if worst else "no outputs"
    required = f"required {percent(plan.min_agreement)}"
    if equal and plan.representable:  # equal elements agree under any rule: ok
        text = f"PASS bit-exact: every output equals {reference}'s"
    elif equal:
        text = (f"PASS every output equals {reference}'s on this input (the model is quantised: "
                "not bit-exact on every input)")
    elif ok:
        text = f"PASS {lowest}, {required}; not bit-exact"
    elif plan.representable and plan.tolerance_source == "bit-exact":
        text = f"FAIL not bit-exact although the model is representable: {lowest}, {required}"
    else:
        text = f"FAIL {lowest}, {required}"
    return Verdict(ok, text)
