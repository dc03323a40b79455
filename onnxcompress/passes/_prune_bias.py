"""The prune pass's bias correction: the mean contribution of what was removed moves into the bias.

``_bias_delta`` (``removed @ E[x]`` along the weight's input channels), ``_add_to_bias`` (into the
consumer's bias input, created where the op has none), ``_correct_bias`` (both).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.passes import _channel_graph
from onnxcompress.weights import Weight


def _bias_delta(w: Weight, removed: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """Per output channel, the mean that ``removed`` (the pruned part of ``w``) contributed."""
    if w.in_axis is None or w.out_axis is None or len(mean) != removed.shape[w.in_axis]:
        return None
    other = [a for a in range(removed.ndim) if a not in (w.out_axis, w.in_axis)]
    per_pair = removed.astype(np.float64).sum(axis=tuple(other)) if other else removed.astype(np.float64)
    if w.out_axis > w.in_axis:
        per_pair = per_pair.T
    return per_pair @ mean


def _correct_bias(w: Weight, removed: np.ndarray, mean: np.ndarray) -> bool:
    delta = _bias_delta(w, removed, mean)
    return delta is not None and _add_to_bias(w, delta)


def _add_to_bias(w: Weight, delta: np.ndarray) -> bool:
    """Add ``delta`` to the bias of ``w``'s node (Conv and Gemm get one if they have none)."""
    if len(w.uses) != 1:
        return False
    node = w.uses[0].node
    if node.op_type == "Conv" and _conv_group(node) == 1 or node.op_type == "Gemm":
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is None:
            value = w.add_constant(f"{w.name}_bias", delta.astype(w.numpy().dtype))
            node.resize_inputs(3)
            node.replace_input_with(2, value)
            return True
    elif node.op_type == "MatMul" and len(node.outputs[0].uses()) == 1:
        add, index = node.outputs[0].uses()[0]
        if add.op_type != "Add" or len(add.inputs) != 2:
            return False
        bias = add.inputs[1 - index]
    else:
        return False
    b = _channel_graph.const_array(bias)
    if (
        b is None
        or b.shape != (len(delta),)
        or bias.is_graph_input()
        or len(bias.uses()) != 1
        or _channel_graph._const_source(bias) is not bias
    ):
        return False
    _channel_graph.set_const_array(bias, (b + delta).astype(b.dtype))
    return True


def _conv_group(node: ir.Node) -> int:
    attr = node.attributes.get("group")
    return int(attr.value) if attr is not None else 1
