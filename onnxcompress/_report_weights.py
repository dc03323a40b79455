"""Weights for the HTML report's histograms: a layer's original values and what the compressed model decodes.

The compressed model stores a weight as a decode graph (k-means indices + codebook, int8 +
DequantizeLinear, bit planes...). Rather than know every encoding, the report finds the consumer
node of the original weight by name in the compressed model, takes the same input slot, and runs
the constant subgraph that produces it through onnxruntime. Whatever cannot be decoded this way
(the node was renamed or fused, the value depends on a graph input) is skipped with a reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxcompress.graph.names import hashed, marked
from onnxcompress.runtime import first_line

logger = logging.getLogger(__name__)

# Above this many distinct values the decoded tensor has no visible grid (per-channel scales).
MAX_LEVELS = 256
# Histograms of huge tensors use an evenly strided sample of this many values.
MAX_HISTOGRAM_VALUES = 2_000_000
LEVEL_KINDS = {"kmeans": "k-means centroids", "quantize": "int8 grid levels used"}


@dataclass
class WeightView:
    name: str
    pass_name: str
    original: np.ndarray  # 1-D, the values the histogram shows
    decoded: np.ndarray  # 1-D, same positions
    levels: np.ndarray | None  # distinct decoded values (centroids / grid), if few enough
    level_kind: str
    channel: int | None  # the output channel shown, when the levels are per channel
    error: float | None
    # The original was scaled per output channel to the compressed model's weight: a pass folded
    # BatchNorm into it, so the unscaled original would not be comparable.
    rescaled: bool = False


def worst_layers(passes: Sequence[dict[str, Any]], limit: int) -> list[tuple[str, str, float]]:
    """(layer, pass, error) of the ``limit`` layers with the largest weight error, worst first.

    A layer several passes changed counts with its last pass (the compressed model holds that)."""
    last: dict[str, tuple[str, float]] = {}
    for p in passes:
        for s in p.get("layers") or []:
            if isinstance(s, dict) and s.get("name") and isinstance(s.get("error"), (int, float)):
                last[str(s["name"])] = (str(p.get("pass", "")), float(s["error"]))
    ranked = sorted(last.items(), key=lambda kv: -kv[1][1])
    return [(name, pname, err) for name, (pname, err) in ranked[:limit] if err > 0]


def _load(model: Any) -> Any:
    from onnxcompress.model import load_model

    return load_model(model)


def weight_views(
    original: Any, compressed: Any, passes: Sequence[dict[str, Any]], limit: int
) -> tuple[list[WeightView], list[str]]:
    """Views of the layers that lost most, and a note per layer (or model) that could not be shown."""
    from onnxcompress.model import to_proto
    from onnxcompress.weights import WeightIndex

    wanted = worst_layers(passes, limit)
    if not wanted:
        return [], []
    try:
        orig_ir = _load(original)
        comp_proto = to_proto(_load(compressed))
    except Exception as e:  # a report renders without histograms rather than fail
        what = compressed if isinstance(compressed, (str, os.PathLike)) else "the models"
        return [], [f"weight histograms skipped: cannot load {what}: {first_line(e)}"]
    index = WeightIndex.build(orig_ir)
    folded = any(isinstance(p.get("metrics"), dict) and p["metrics"].get("batchnorm_folded") for p in passes)
    # int8-exact layers (k-means 8 bits, quantize's float-compute weights) read the unscaled int8
    # grid at the consumer: their channel scales act on its output, so the original is rescaled.
    scaled_after = {
        str(s.get("name")) for p in passes for s in p.get("layers") or []
        if isinstance(s, dict) and "scales on the consumer" in str((s.get("extra") or {}).get("decode", ""))
    }
    views, notes = [], []
    for name, pass_name, error in wanted:
        try:
            weight = index[name]
        except KeyError:
            notes.append(f"{name}: not found in the original model")
            continue
        w = weight.numpy()
        decoded = None
        for use in weight.uses if weight.scope == "" else ():
            decoded = _decode(comp_proto, use.node.name or "", use.index, int(weight.dtype))
            if decoded is not None:
                break
        if decoded is None:
            notes.append(f"{name}: its decoded value could not be computed from the compressed model")
            continue
        if decoded.shape != w.shape:
            notes.append(f"{name}: decoded shape {list(decoded.shape)} differs from {list(w.shape)}")
            continue
        views.append(_view(name, pass_name, error, w, decoded, weight.out_axis,
                           folded or name in scaled_after))
    return views, notes


def _view(
    name: str,
    pass_name: str,
    error: float,
    w: np.ndarray,
    d: np.ndarray,
    out_axis: int | None,
    folded: bool = False,
) -> WeightView:
    kind = LEVEL_KINDS.get(pass_name, "distinct values")
    w, d = w.astype(np.float64), d.astype(np.float64)
    axis = out_axis if out_axis is not None and out_axis < w.ndim else 0
    rescaled = False
    if folded and w.ndim >= 2:
        # Least-squares scale per output channel: the folded BatchNorm factor (up to the error).
        rows_w = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        rows_d = np.moveaxis(d, axis, 0).reshape(d.shape[axis], -1)
        energy = np.einsum("ij,ij->i", rows_w, rows_w)
        scale = np.where(
            energy > 0, np.einsum("ij,ij->i", rows_w, rows_d) / np.where(energy > 0, energy, 1), 1.0
        )
        if np.max(np.abs(scale - 1.0)) > 1e-3:
            shape = [1] * w.ndim
            shape[axis] = -1
            w, rescaled = w * scale.reshape(shape), True
    levels = np.unique(d)
    if levels.size <= MAX_LEVELS or w.ndim < 2:
        return WeightView(
            name,
            pass_name,
            _sample(w.ravel()),
            _sample(d.ravel()),
            levels if levels.size <= MAX_LEVELS else None,
            kind,
            None,
            error,
            rescaled,
        )
    # Levels per output channel (per-channel scales): show the channel that lost most.
    rows_w = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    rows_d = np.moveaxis(d, axis, 0).reshape(d.shape[axis], -1)
    norms = np.linalg.norm(rows_w, axis=1)
    errs = np.linalg.norm(rows_w - rows_d, axis=1) / np.where(norms > 0, norms, 1.0)
    ch = int(np.argmax(errs))
    row_levels = np.unique(rows_d[ch])
    if row_levels.size > MAX_LEVELS:  # no grid anywhere (pruning, fp16): the whole tensor
        return WeightView(
            name, pass_name, _sample(w.ravel()), _sample(d.ravel()), None, kind, None, error, rescaled
        )
    return WeightView(name, pass_name, rows_w[ch], rows_d[ch], row_levels, kind, ch, error, rescaled)


def _sample(values: np.ndarray) -> np.ndarray:
    if values.size <= MAX_HISTOGRAM_VALUES:
        return values
    return values[:: values.size // MAX_HISTOGRAM_VALUES + 1]


def _decode(proto: onnx.ModelProto, node_name: str, index: int, elem_type: int) -> np.ndarray | None:
    """The value at ``node_name``'s input ``index`` in ``proto``, if only constants produce it."""
    g = proto.graph
    # a written model may hold the node under its name's hash (graph/names.py)
    wanted = {node_name, hashed(node_name)} if marked({p.key: p.value for p in proto.metadata_props}) \
        else {node_name}
    node = next((n for n in g.node if node_name and n.name in wanted), None)
    if node is None or index >= len(node.input) or not node.input[index]:
        return None
    target = node.input[index]
    inits = {t.name: t for t in g.initializer}
    if target in inits:
        return numpy_helper.to_array(inits[target])
    producers = {o: n for n in g.node for o in n.output if o}
    needed: set[int] = set()
    needed_inits: set[str] = set()
    stack, seen = [target], set()
    while stack:
        name = stack.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        if name in inits:
            needed_inits.add(name)
            continue
        producer = producers.get(name)
        if producer is None:  # a graph input: not a constant
            return None
        if id(producer) not in needed:
            needed.add(id(producer))
            stack.extend(producer.input)
    nodes = [n for n in g.node if id(n) in needed]  # the graph's order is topological
    sub = helper.make_graph(
        nodes,
        "decode",
        [],
        [helper.make_tensor_value_info(target, elem_type, None)],
        initializer=[inits[n] for n in sorted(needed_inits)],
    )
    model = helper.make_model(sub, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {})[0])
    except Exception as e:  # an op onnxruntime cannot run alone: no histogram for this layer
        logger.debug("cannot decode %s input %d: %s", node_name, index, first_line(e))
        return None
