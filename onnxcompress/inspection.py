"""``onnxcompress inspect``: what a model is made of and where its weights live."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcompress.data import input_specs
from onnxcompress.opset import opset_version
from onnxcompress.pipeline import read_provenance
from onnxcompress.stats import _is_parameter, model_stats
from onnxcompress.weights import WeightIndex, all_graphs

# Above this many elements, distinct values are counted on a sample (exact counts cost a sort).
_DISTINCT_EXACT_LIMIT = 4_000_000


def describe(model: ir.Model) -> dict[str, Any]:
    ops: collections.Counter[str] = collections.Counter()
    subgraphs = 0
    for scope, graph in all_graphs(model):
        subgraphs += bool(scope)
        for node in graph:
            ops[f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type] += 1
    index = WeightIndex.build(model)
    stats = model_stats(model)
    weights = []
    # Compute weights first: they are what users look for (BN statistics would bury them).
    order = {"weight": 0, "embedding": 0, "recurrent": 0, "bias": 1}
    for w in sorted(index, key=lambda w: order.get(w.role, 2)):
        arr = w.numpy()
        weights.append({
            "name": w.label,
            "storage": ("external " if w.is_external else "") + w.storage,
            "scope": w.scope or "main",
            "role": w.role,
            "consumers": [f"{u.node.op_type}:{u.node.name or '?'}" for u in w.uses],
            "shared": w.shared,
            "out_axis": w.out_axis,
            "shape": list(w.shape),
            "dtype": w.dtype.name,
            "bytes": w.nbytes,
            "sparsity": _sparsity(arr),
            "distinct": _distinct(arr),
        })
    weights += _encoded_tensors(model, {id(w.value) for w in index})
    specs = input_specs(model)
    return {
        "ir_version": model.ir_version,
        "opset": opset_version(model),
        "opset_imports": dict(model.opset_imports),
        "producer": f"{model.producer_name or ''} {model.producer_version or ''}".strip(),
        "inputs": [
            {"name": v.name, "dtype": v.dtype.name if v.dtype else None, "shape": _shape(s.shape)}
            for v, s in zip(model.graph.inputs, specs, strict=False)
        ],
        "outputs": [
            {"name": v.name, "dtype": v.dtype.name if v.dtype else None, "shape": _output_shape(v)}
            for v in model.graph.outputs
        ],
        "nodes": stats.nodes,
        "subgraphs": subgraphs,
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "parameters": stats.parameters,
        "weight_bytes": stats.weight_bytes,
        "sparsity": round(stats.sparsity, 6),
        "weights": weights,
        "provenance": read_provenance(model),
    }


def _sparsity(arr: np.ndarray) -> float:
    return round(float(np.mean(arr == 0)) if arr.size else 0.0, 6)


def _distinct(arr: np.ndarray) -> int:
    flat = arr.reshape(-1)
    if flat.size > _DISTINCT_EXACT_LIMIT:
        flat = flat[:: flat.size // _DISTINCT_EXACT_LIMIT + 1]
    return int(np.unique(flat).size)


def _encoded_tensors(model: ir.Model, indexed: set[int]) -> list[dict[str, Any]]:
    """Parameter tensors outside the weight index: int8 codes, k-means indices, codebooks...

    A compressed model stores weights behind DequantizeLinear, Gather or unpacking nodes, where
    they no longer sit in a weight slot; they are listed with role "encoded" so that nothing
    that takes space in the file is invisible.
    """
    out = []
    for scope, graph in all_graphs(model):
        values = [(v, "initializer") for v in graph.initializers.values()]
        values += [(n.outputs[0], "constant") for n in graph
                   if n.op_type == "Constant" and n.domain == "" and len(n.outputs) == 1]
        for value, storage in values:
            if id(value) in indexed:
                continue
            tensor = value.const_value if storage == "initializer" else _constant_tensor(value)
            if tensor is None or not _is_parameter(tensor):
                continue
            arr = tensor.numpy()
            out.append({
                "name": f"{scope}{value.name}",
                "storage": ("external " if isinstance(tensor, ir.ExternalTensor) else "") + storage,
                "scope": scope or "main",
                "role": "encoded",
                "consumers": [f"{n.op_type}:{n.name or '?'}" for n, _ in value.uses()],
                "shared": len(value.uses()) > 1,
                "out_axis": None,
                "shape": [int(d) for d in tensor.shape],
                "dtype": tensor.dtype.name,
                "bytes": tensor.nbytes,
                "sparsity": _sparsity(arr),
                "distinct": _distinct(arr),
            })
    return out


def _constant_tensor(value: ir.Value) -> ir.TensorProtocol | None:
    node = value.producer()
    attr = node.attributes.get("value") if node is not None else None
    return attr.value if attr is not None and attr.type == ir.AttributeType.TENSOR else None


def _output_shape(value: ir.Value) -> object:
    if value.shape is None:
        return _shape(None)
    return _shape(tuple(d if isinstance(d, int) else getattr(d, "value", None) for d in value.shape))


def _shape(shape: tuple | None) -> list | None:
    return None if shape is None else ["?" if d is None else d for d in shape]


def render(info: dict[str, Any], *, max_weights: int = 60) -> str:
    domains = ", ".join(
        f"{k}:{v}" for k, v in info["opset_imports"].items() if k not in ("", "ai.onnx")
    )
    lines = [
        f"IR {info['ir_version']}, opset {info['opset']}"
        + (f" (custom domains: {domains})" if domains else ""),
        f"producer: {info['producer'] or '-'}",
        f"nodes: {info['nodes']} ({info['subgraphs']} subgraphs), parameters: {info['parameters']:,} "
        f"({info['weight_bytes'] / 1e6:.2f} MB), sparsity {info['sparsity']:.1%}",
        "ops: " + ", ".join(f"{k} {v}" for k, v in info["ops"].items()),
        "inputs:",
        *[f"  {i['name']}: {i['dtype']} {i['shape']}" for i in info["inputs"]],
        "outputs:",
        *[f"  {o['name']}: {o['dtype']} {o['shape']}" for o in info["outputs"]],
        f"weights ({len(info['weights'])}):",
        f"  {'name':<40}{'storage':<22}{'role':<12}{'op':<22}{'shape':<18}{'dtype':<9}"
        f"{'sparsity':>9}{'distinct':>10}",
    ]
    for w in info["weights"][:max_weights]:
        name = w["name"] if len(w["name"]) < 40 else "..." + w["name"][-36:]
        op = w["consumers"][0].split(":")[0] + ("+" if w["shared"] else "")
        lines.append(
            f"  {name:<40}{w['storage']:<22}{w['role']:<12}{op:<22}"
            f"{'x'.join(map(str, w['shape'])):<18}{w['dtype']:<9}{w['sparsity']:>9.1%}{w['distinct']:>10,}"
        )
    if len(info["weights"]) > max_weights:
        lines.append(f"  ... {len(info['weights']) - max_weights} more (use --json for all)")
    if info.get("provenance"):
        for h in info["provenance"].get("history", []):
            steps = ", ".join(p["pass"] for p in h["recipe"]["passes"])
            lines.append(f"compressed by onnxcompress {info['provenance'].get('version')}: {steps}")
    return "\n".join(lines)
