"""Model-local functions that carry weights, inlined so the passes can reach them.

An exporter may wrap each layer in a function of the model (``model.functions``: the TorchScript
exporter's ``export_modules_as_functions``, onnxscript-built models) and call it with the layer's
weights as arguments. Inside the function a weight is a formal input, not a constant, so no pass
found one: such a model came out 1.00x under every pass, "nothing to change". onnxruntime inlines
every local function at load, so inlining the ones whose calls pass a constant (or whose bodies
hold Constant nodes) changes nothing the model computes.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxcompress.weights import all_graphs

#: ``ir.Model.meta`` key: how many function calls ``inline_weight_functions`` inlined.
INLINED_CALLS = "onnxcompress.inlined_function_calls"


def inline_weight_functions(model: ir.Model) -> int:
    """Inline the model-local functions called with a constant argument or holding a Constant
    node; returns how many calls were inlined (recorded under INLINED_CALLS)."""
    if not model.functions:
        return 0
    carrying: set[ir.OperatorIdentifier] = {
        key for key, fn in model.functions.items()
        if any(node.op_type == "Constant" and node.domain in ("", "ai.onnx") for node in fn)}
    for _, graph in all_graphs(model):
        for node in graph:
            key = (node.domain, node.op_type, node.overload)
            if key in model.functions and any(map(_constant, node.inputs)):
                carrying.add(key)
    if not carrying:
        return 0
    inlined = sum(1 for _, graph in all_graphs(model) for node in graph
                  if (node.domain, node.op_type, node.overload) in carrying)
    from onnx_ir.passes.common import InlinePass  # its import costs only runs that need it

    InlinePass(criteria=lambda fn: fn.identifier() in carrying)(model)
    model.meta[INLINED_CALLS] = inlined
    return inlined


def _constant(value: ir.Value | None) -> bool:
    """An initializer or a Constant node's output."""
    if value is None:
        return False
    producer = value.producer()
    return value.const_value is not None or (
        producer is not None and producer.op_type == "Constant" and producer.domain in ("", "ai.onnx"))
