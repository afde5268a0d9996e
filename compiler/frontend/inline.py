"""Inline model-local functions, applying attribute defaults first.

Contract
    inline_local_functions(model: onnx.ModelProto, keep=KEEP) -> onnx.ModelProto
        A copy of `model` in which every call of a model-local function (any domain,
        e.g. snnTorch's `snntorch._neurons.leaky::Leaky`, `Leaky.1`, ...) is replaced by
        the function's body, recursively. Functions listed in `keep` (the canonical
        `snn::LIF` / `snn::IF`, which the importer reads by their attributes) stay calls.
        Returns the same object when there is nothing to inline; functions onnx cannot
        inline (e.g. incompatible opset versions) are a FrontendError.

Why not plain `onnx.inliner.inline_local_functions`: it drops the defaults declared in
a function's `attribute_proto`, so a body `Constant(value_float <- ref_attr_name)` whose
attribute the call does not set ends up with no value (checker and onnxruntime reject
it). Here every call first receives the defaults it does not override.
"""

from __future__ import annotations

import onnx
from onnx import inliner

from snnc.backend.errors import FrontendError

KEEP = {("snn", "LIF"), ("snn", "IF")}


def inline_local_functions(model: onnx.ModelProto, keep: set[tuple[str, str]] = KEEP) -> onnx.ModelProto:
    targets = {(f.domain, f.name): f for f in model.functions if (f.domain, f.name) not in keep}
    if not targets:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)

    def apply_defaults(nodes) -> None:
        for node in nodes:
            function = targets.get((node.domain, node.op_type))
            if function is not None:
                present = {a.name for a in node.attribute}
                for default in function.attribute_proto:
                    if default.name not in present:
                        node.attribute.append(default)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    apply_defaults(attr.g.node)

    apply_defaults(out.graph.node)
    for function in out.functions:
        apply_defaults(function.node)
    try:
        return inliner.inline_selected_functions(out, list(targets), exclude=False)
    except Exception as exc:  # onnx's C++ inliner raises RuntimeError/TypeError on malformed functions
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        names = ", ".join(f"{domain}::{name}" for domain, name in list(targets)[:3])
        raise FrontendError(f"cannot inline the model-local functions ({names}): {first}") from None
