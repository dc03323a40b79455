"""ONNX 1.x's experimental ops in old exports (opset 7-8: Core ML / Caffe2 / WinML-era files such
as the ONNX Model Zoo's fast-neural-style, tiny-yolov2 and emotion-ferplus), written as the standard
ops they equal so that ``onnx.version_converter`` can raise the opset: it has no schema for them
and refused the whole file (batch 33's fns_candy: ImageScaler, Crop and Affine; no int8 at all).

- ``ImageScaler(scale, bias)``: ``x * scale + bias[c]`` (Mul, Add with a [1, C, 1, 1] bias);
- ``Affine(alpha, beta)``: ``x * alpha + beta``;
- ``ScaledTanh(alpha, beta)``: ``alpha * tanh(beta * x)``;
- ``ParametricSoftplus(alpha, beta)``: ``alpha * softplus(beta * x)``;
- ``Crop(border=[left, top, right, bottom], scale=[h, w])``: a ``Slice`` of axes 2 and 3 (Slice-1's
  attributes below opset 10, inputs from 10).

Each equals its original in float arithmetic up to rounding (fns_candy: bit-identical outputs).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxcompress.weights import unique_name

LEGACY_OPS = frozenset({"ImageScaler", "Affine", "ScaledTanh", "ParametricSoftplus", "Crop"})
_INT64_MAX = 2**63 - 1


def has_legacy_ops(proto: onnx.ModelProto) -> bool:
    return any(n.op_type in LEGACY_OPS and n.domain in ("", "ai.onnx") for n in proto.graph.node)


def standard_legacy_ops(proto: onnx.ModelProto) -> list[str]:
    """Rewrite ``proto``'s main-graph legacy ops in place as standard ops; returns the op types
    rewritten (an op whose attributes it cannot read is left as it is)."""
    if not has_legacy_ops(proto):
        return []
    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    declare_inputs = proto.ir_version < 4  # IR 3: every initializer is a graph input too
    names = {n for node in graph.node for n in (*node.input, *node.output)}
    names |= {i.name for i in graph.initializer}
    done: list[str] = []
    nodes: list[onnx.NodeProto] = []

    def fresh(hint: str) -> str:
        return unique_name(names, hint)

    def constant(hint: str, value: np.ndarray) -> str:
        name = fresh(hint)
        graph.initializer.append(numpy_helper.from_array(value, name))
        if declare_inputs:
            graph.input.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
        return name

    for node in graph.node:
        replaced = _rewrite(node, opset, fresh, constant) if (
            node.op_type in LEGACY_OPS and node.domain in ("", "ai.onnx")) else None
        if replaced is None:
            nodes.append(node)
        else:
            nodes.extend(replaced)
            done.append(node.op_type)
    if done:
        del graph.node[:]
        graph.node.extend(nodes)
    return done


def _rewrite(node: onnx.NodeProto, opset: int, fresh, constant) -> list[onnx.NodeProto] | None:  # noqa: ANN001
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    x, y = node.input[0], node.output[0]
    base = node.name or y
    f32 = np.float32
    if node.op_type in ("ImageScaler", "Affine"):
        scale = float(attrs.get("scale" if node.op_type == "ImageScaler" else "alpha", 1.0))
        if node.op_type == "ImageScaler":
            bias = np.asarray(attrs.get("bias", [0.0]), f32).reshape(1, -1, 1, 1)
        else:
            bias = np.asarray(attrs.get("beta", 0.0), f32)
        scaled = fresh(f"{base}_scaled")
        return [helper.make_node("Mul", [x, constant(f"{base}_scale", np.asarray(scale, f32))], [scaled],
                                 name=fresh(f"{base}_mul")),
                helper.make_node("Add", [scaled, constant(f"{base}_bias", bias)], [y],
                                 name=fresh(f"{base}_add"))]
    if node.op_type in ("ScaledTanh", "ParametricSoftplus"):
        inner = "Tanh" if node.op_type == "ScaledTanh" else "Softplus"
        a, b = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        bx, fx = fresh(f"{base}_bx"), fresh(f"{base}_f")
        return [helper.make_node("Mul", [x, constant(f"{base}_beta", np.asarray(b, f32))], [bx],
                                 name=fresh(f"{base}_mul_in")),
                helper.make_node(inner, [bx], [fx], name=fresh(f"{base}_{inner.lower()}")),
                helper.make_node("Mul", [fx, constant(f"{base}_alpha", np.asarray(a, f32))], [y],
                                 name=fresh(f"{base}_mul_out"))]
    if node.op_type == "Crop":
        border = [int(v) for v in attrs.get("border", [])]
        if len(border) != 4:
            return None
        left, top, right, bottom = border
        starts = [top, left]
        if "scale" in attrs and len(attrs["scale"]) == 2:
            ends = [top + int(attrs["scale"][0]), left + int(attrs["scale"][1])]
        else:
            ends = [-bottom if bottom else _INT64_MAX, -right if right else _INT64_MAX]
        if opset < 10:
            return [helper.make_node("Slice", [x], [y], name=fresh(f"{base}_slice"),
                                     axes=[2, 3], starts=starts, ends=ends)]
        return [helper.make_node("Slice", [x, constant(f"{base}_starts", np.asarray(starts, np.int64)),
                                           constant(f"{base}_ends", np.asarray(ends, np.int64)),
                                           constant(f"{base}_axes", np.asarray([2, 3], np.int64))],
                                 [y], name=fresh(f"{base}_slice"))]
    return None
