"""Constants written in forms onnx_ir and the passes do not read, rewritten in the proto before it
is parsed: sparse initializers (``graph.sparse_initializer``: onnx_ir drops them, so a model whose
MatMul reads one was refused as "reads 'W', which no node ... provides" though onnx.checker and
onnxruntime accept it) become dense initializers, as do ``Constant`` nodes' ``sparse_value``
(onnx_ir could not read the graph); ``Constant`` nodes holding a list (``value_floats`` /
``value_ints``) hold the same values as a ``value`` tensor, where the weight index looks for a
constant (a weight given as 3072 floats and reshaped was never compressed).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

_LISTS = {"value_floats": (onnx.TensorProto.FLOAT, np.float32),
          "value_ints": (onnx.TensorProto.INT64, np.int64)}


def normalize_constants(proto: onnx.ModelProto) -> int:
    """Rewrite ``proto`` in place (every graph, subgraphs included); returns how many constants
    changed form."""
    from onnxcompress.model import proto_graphs  # model.py reads proto through here

    changed = 0
    for graph in proto_graphs(proto.graph):
        for sparse in graph.sparse_initializer:
            graph.initializer.append(_dense(sparse))
            changed += 1
        del graph.sparse_initializer[:]
        for node in graph.node:
            if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
                continue
            attr = node.attribute[0]
            if attr.name == "sparse_value":  # onnx_ir cannot read it either
                dense = _dense(attr.sparse_tensor)
                del node.attribute[:]
                node.attribute.append(onnx.helper.make_attribute("value", dense))
                changed += 1
            elif attr.name in _LISTS and attr.type in (onnx.AttributeProto.FLOATS, onnx.AttributeProto.INTS):
                dtype, np_type = _LISTS[attr.name]
                listed = attr.floats if dtype == onnx.TensorProto.FLOAT else attr.ints
                values = np.asarray(listed, dtype=np_type)
                del node.attribute[:]
                node.attribute.append(onnx.helper.make_attribute("value", numpy_helper.from_array(values)))
                changed += 1
    return changed


def needs_normalizing(proto: onnx.ModelProto) -> bool:
    """Whether :func:`normalize_constants` would change ``proto``."""
    from onnxcompress.model import proto_graphs

    return any(graph.sparse_initializer or any(
        node.op_type == "Constant" and any(a.name in (*_LISTS, "sparse_value") for a in node.attribute)
        for node in graph.node)
        for graph in proto_graphs(proto.graph))


def _dense(sparse: onnx.SparseTensorProto) -> onnx.TensorProto:
    """The dense tensor of ``sparse``: its values at their indices (flat, or one row of
    coordinates each), zeros elsewhere, under the values' name."""
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dims = tuple(sparse.dims)
    dense = np.zeros(int(np.prod(dims)), dtype=values.dtype)
    flat = indices if indices.ndim == 1 else np.ravel_multi_index(tuple(indices.T), dims)
    dense[flat] = values
    return numpy_helper.from_array(dense.reshape(dims), sparse.values.name)
