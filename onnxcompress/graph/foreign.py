"""Float weights only custom-domain ops read (onnxruntime's fused transformer ops, a vendor's
ops). Their weight slots are not known (ONNX-domain ops' are), so no pass reads them as layers;
those onnxruntime's own ops read (``com.microsoft``: fused Attention, EmbedLayerNormalization,
FusedConv...) quantize and k-means store int8 where they are, decoded in front of the op and
folded at load (:func:`runtime_tables`, part of ``graph.fold.decoded_in_place``): batch 17's
fused MiniLM, 58 of 90 MB read by them, int8 1.35x before. The pipeline names the others."""

from __future__ import annotations

import onnx_ir as ir

from onnxcompress.weights import QUANTIZED_READERS, all_graphs

#: smaller constants are a custom op's parameters (a LayerNorm's gamma), not weights
MIN_VALUES = 4096
#: the custom domain whose ops onnxruntime runs itself: a decode in front of them folds at load
RUNTIME_DOMAIN = "com.microsoft"
#: its ops whose float tables are position caches (rotary cos / sin), not learned weights, kept,
#: as are the scales of its quantized ops (``QUANTIZED_READERS``: MatMulNBits' block scales)
CACHE_OPS = frozenset({"RotaryEmbedding", "GroupQueryAttention", "SparseAttention", "PagedAttention"})
_FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)


def foreign_weights(model: ir.Model) -> dict[str, tuple[str, int]]:
    """Constant name -> (the op types reading it, bytes) for float constants of at least
    ``MIN_VALUES`` values that custom-domain ops read and no ONNX-domain op does."""
    custom: dict[str, tuple[set[str], int]] = {}
    standard: set[str] = set()
    for _, graph in all_graphs(model):
        for node in graph:
            for value in node.inputs:
                tensor = value.const_value if value is not None else None
                if tensor is None or tensor.dtype not in _FLOATS or tensor.size < MIN_VALUES:
                    continue
                if node.domain in ("", "ai.onnx"):
                    standard.add(value.name)
                else:
                    ops, nbytes = custom.setdefault(value.name, (set(), int(tensor.nbytes)))
                    ops.add(node.op_type)
    return {name: ("/".join(sorted(ops)), nbytes) for name, (ops, nbytes) in custom.items()
            if name not in standard}


def runtime_tables(model: ir.Model, min_size: int = 0) -> list[tuple[str, ir.Graph, ir.Value]]:
    """(scope, graph, value) of the float32 constants of rank >= 2 and at least ``MIN_VALUES``
    values that only onnxruntime's own custom ops (``RUNTIME_DOMAIN``) read: a pass may store
    them int8 and decode them in front of their readers (their rows scaled: an embedding table's
    tokens, a fused QKV weight's input rows)."""
    from onnxcompress.graph.fold import _constant_values

    found = []
    for scope, graph in all_graphs(model):
        for value in _constant_values(graph):
            tensor = value.const_value
            uses = list(value.uses())
            if (tensor is not None and tensor.dtype == ir.DataType.FLOAT and len(tensor.shape) >= 2
                    and tensor.size >= max(MIN_VALUES, min_size) and uses
                    and all(user.domain == RUNTIME_DOMAIN and user.op_type not in CACHE_OPS
                            and user.op_type not in QUANTIZED_READERS for user, _ in uses)):
                found.append((scope, graph, value))
    return found


def foreign_note(model: ir.Model) -> str | None:
    """The pipeline's note on ``foreign_weights``, or None when there are none."""
    found = foreign_weights(model)
    if not found:
        return None
    total = sum(nbytes for _, nbytes in found.values())
    ops = sorted({op for op_types, _ in found.values() for op in op_types.split("/")})
    return (f"{len(found)} float weight(s) ({total / 1e6:.1f} MB) are read only by custom-domain ops "
            f"({', '.join(ops)}): no pass reads them as layers (weight slots are known for ONNX-domain "
            f"ops); quantize and k-means store those of {RUNTIME_DOMAIN} ops int8 where they are, "
            "decoded at load; for onnxruntime's fused transformer ops, the unfused export compresses further")
