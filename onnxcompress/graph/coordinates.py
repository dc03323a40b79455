"""Graph inputs that are coordinates: points or displacement vectors whose distances the model
computes (an interatomic potential's positions or bond vectors, a point cloud's neighbourhoods).

Such a model is often differentiated by its user (forces are minus the energy's gradient, by
autograd or finite differences), and int8 activations make its outputs a step function of the
coordinates: dynamic int8 moved CHGNet's finite-difference forces by 397% and SevenNet's by
231%, static int8 CHGNet's by 67%, where weight-only int8 kept them within 4% and its energies
closer too (batch 25). A coordinate input: float, rank >= 2, a last axis of 2 or 3 entries,
that reaches a norm (``ReduceL2``, ``LpNormalization``, or ``Sqrt`` of a ``ReduceSum`` of its
square) within a few selection or difference ops (``pos[j] - pos[i]``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

#: Ops a coordinate passes through on its way to a distance: selection, differences, layout.
_PATH_OPS = frozenset({"Gather", "GatherElements", "GatherND", "Slice", "Split", "Sub", "Add", "Neg",
                       "Reshape", "Unsqueeze", "Squeeze", "Expand", "Identity", "Cast", "Concat",
                       "Transpose"})
_NORM_OPS = frozenset({"ReduceL2", "LpNormalization"})
_DEPTH = 4
_FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)


def coordinate_inputs(model: ir.Model) -> dict[str, str]:
    """Input name -> the op that takes its distance, for every coordinate input of ``model``."""
    found = {}
    for value in model.graph.inputs:
        shape = value.shape
        if value.dtype not in _FLOATS or shape is None or len(shape) < 2 or shape[-1] not in (2, 3):
            continue
        frontier = [value]
        for _ in range(_DEPTH):
            following = []
            for v in frontier:
                for node, _index in v.uses():
                    if node.domain not in ("", "ai.onnx"):
                        continue
                    norm = _norm_of(node)
                    if norm is not None:
                        found.setdefault(value.name, norm)
                    elif node.op_type in _PATH_OPS:
                        following.extend(node.outputs)
            frontier = following
            if value.name in found or not frontier:
                break
    return found


def _norm_of(node: ir.Node) -> str | None:
    """The norm ``node`` starts (its op type, or "Sqrt(ReduceSum(x^2))"), else None."""
    if node.op_type in _NORM_OPS:
        return node.op_type
    square = node.op_type == "Mul" and len(node.inputs) == 2 and node.inputs[0] is node.inputs[1] or (
        node.op_type == "Pow" and len(node.inputs) == 2 and _is_two(node.inputs[1]))
    if not square:
        return None
    for total, _ in node.outputs[0].uses():
        if total.op_type == "ReduceSum" and any(u.op_type == "Sqrt" for u, _ in total.outputs[0].uses()):
            return "Sqrt(ReduceSum(x^2))"
    return None


def _is_two(value: ir.Value | None) -> bool:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return tensor is not None and tensor.size == 1 and float(np.asarray(tensor.numpy()).ravel()[0]) == 2.0


def coordinate_note(model: ir.Model) -> str | None:
    """The headline that turns int8 compute into weight-only int8, or None (no coordinates)."""
    found = coordinate_inputs(model)
    if not found:
        return None
    which = ", ".join(f"'{name}' (its {op})" for name, op in found.items())
    return (f"coordinate input {which}: int8 activations would make the outputs a step function of "
            "its points (an interatomic potential's finite-difference forces moved 67-397%); "
            "weights stored in int8, compute float (--op-types-to-quantize forces int8 compute)")
