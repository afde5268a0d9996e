"""Inline model-local functions, applying attribute defaults first.

Contract
    inline_local_functions(model: onnx.ModelProto, keep=KEEP) -> onnx.ModelProto
        A copy of `model` in which every call of a model-local function (any domain,
        e.g. snnTorch's `snntorch._neurons.leaky::Leaky`, `Leaky.1`, ...) is replaced by
        the function's body, recursively. Functions listed in `keep` (the canonical
        `snn::LIF` / `snn::IF`, which the importer reads by their attributes) stay calls.
        Returns the same object when there is nothing to inline.

Why not plain `onnx.inliner.inline_local_functions`: it drops the defaults declared in
a function's `attribute_proto`, so a body `Constant(value_float <- ref_attr_name)` whose
attribute the call does not set ends up with no value (checker and onnxruntime reject
it). Here every call first receives the defaults it does not override.
"""

from __future__ import annotations

import onnx
from onnx import inliner

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
    return inliner.inline_selected_functions(out, list(targets), exclude=False)
