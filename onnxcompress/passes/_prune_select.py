"""The prune pass's importance and selection: what is removed, before anything is.

Importance (``_use_data``, ``_stats``: calibration moments per input channel), weight scores
(``_weight_scores``: |W|, Wanda-style times the input RMS with data), masks (``_layer_mask``,
``_global_masks``, ``_nm_mask``), channel scores and the channels kept per group
(``_channel_scores``, ``_choose_channels``), and the first/last compute layers (``keep_first``,
``keep_last``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxcompress.errors import OnnxCompressError
from onnxcompress.layerwise.channels import per_element
from onnxcompress.layerwise.collection import weight_moments
from onnxcompress.passes import _channel_graph
from onnxcompress.passes.base import PassContext, PassResult
from onnxcompress.weights import ROLE_EMBEDDING, ROLE_RECURRENT, ROLE_WEIGHT, Weight, WeightIndex

if TYPE_CHECKING:
    from onnxcompress.passes.pruning import PruneConfig


# -- importance ---------------------------------------------------------------------------


def _use_data(cfg: PruneConfig, context: PassContext, result: PassResult) -> bool:
    if cfg.importance == "magnitude":
        return False
    if context.calibration is None:
        if cfg.importance == "data":
            result.note("importance=data needs calibration data; none given, used magnitude")
        return False
    return True


def _declared(cfg: PruneConfig, model: ir.Model, context: PassContext) -> list:
    """The moments ``_stats`` will ask for: every main-graph compute weight's input (a
    superset of the weights chosen; the collection is one pass whatever it covers)."""
    if cfg.importance == "magnitude" or context.calibration is None:
        return []
    weights = [w for w in WeightIndex.build(model) if w.role in (ROLE_WEIGHT, ROLE_EMBEDDING)]
    return list(weight_moments(weights, cfg.calibration_samples).values())


def _stats(
    cfg: PruneConfig, model: ir.Model, weights: list[Weight], context: PassContext, result: PassResult
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """label -> (mean, mean square) of the weight's input activation per input channel."""
    assert context.calibration is not None
    feeds = context.calibration.take(context.stats.limit(cfg.calibration_samples) or 0)
    try:
        # From the run's shared collection (context.stats), the same numbers as a collection
        # of its own: the first cfg.calibration_samples feeds.
        moments = context.stats.channel_moments(model, weights, cfg.calibration_samples)
        stats = {label: (mean, sq.astype(np.float32)) for label, (mean, sq) in moments.items()}
    except OnnxCompressError as e:
        result.note(f"calibration data could not be used ({e}); used magnitude")
        return {}
    if stats:
        result.metrics["importance"] = "data"
        result.metrics["calibration_samples"] = len(feeds)
    return stats


def _first_last_nodes(model: ir.Model, index: WeightIndex) -> tuple[set[int], set[int]]:
    """Compute nodes (with a constant weight) that no compute node precedes / follows."""
    compute = {
        id(u.node)
        for w in index
        if not w.scope and w.role in (ROLE_WEIGHT, ROLE_EMBEDDING, ROLE_RECURRENT)
        for u in w.uses
    }
    nodes = list(model.graph)
    after: set[ir.Value] = set()  # values computed from a compute node's output
    first: set[int] = set()
    for node in nodes:
        upstream = any(v is not None and v in after for v in node.inputs)
        if id(node) in compute and not upstream:
            first.add(id(node))
        if upstream or id(node) in compute:
            after.update(o for o in node.outputs if o is not None)
    before: set[ir.Value] = set()  # values that flow into a compute node
    last: set[int] = set()
    for node in reversed(nodes):
        downstream = any(o is not None and o in before for o in node.outputs)
        if id(node) in compute and not downstream:
            last.add(id(node))
        if downstream or id(node) in compute:
            before.update(v for v in node.inputs if v is not None)
    return first, last


def _weight_scores(w: Weight, energy: np.ndarray | None) -> np.ndarray:
    """|W|, times sqrt(input channel energy) along the in-channel axis when known."""
    array = np.abs(w.numpy().astype(np.float32))
    if energy is None or w.in_axis is None:
        return array
    scale = per_element(w, array.shape, np.sqrt(np.maximum(energy.astype(np.float32), 0)))
    return array if scale is None else array * scale


def _layer_mask(scores: np.ndarray, sparsity: float, row_axis: int | None) -> np.ndarray:
    """True where the weight is kept: the lowest ``sparsity`` fraction of scores is dropped."""
    if row_axis is None:
        flat = scores.reshape(-1)
        k = int(round(sparsity * flat.size))
        mask = np.ones(flat.size, bool)
        if k > 0:
            mask[np.argpartition(flat, k - 1)[:k]] = False
        return mask.reshape(scores.shape)
    moved = np.moveaxis(scores, row_axis, 0)
    rows = moved.reshape(moved.shape[0], -1)
    k = int(round(sparsity * rows.shape[1]))
    mask = np.ones(rows.shape, bool)
    if k > 0:
        drop = np.argpartition(rows, k - 1, axis=1)[:, :k]
        np.put_along_axis(mask, drop, False, axis=1)
    return np.moveaxis(mask.reshape(moved.shape), 0, row_axis)


def _global_masks(items: list[tuple[Weight, np.ndarray]], sparsity: float) -> dict[str, np.ndarray]:
    flat = np.concatenate([s.reshape(-1) for _, s in items])
    k = int(round(sparsity * flat.size))
    keep = np.ones(flat.size, bool)
    if k > 0:
        keep[np.argpartition(flat, k - 1)[:k]] = False
    out, offset = {}, 0
    for w, s in items:
        out[w.label] = keep[offset : offset + s.size].reshape(s.shape)
        offset += s.size
    return out


def _nm_mask(scores: np.ndarray, in_axis: int, n: int, m: int) -> np.ndarray:
    """Keep the N highest scores in every M consecutive weights along ``in_axis``."""
    moved = np.moveaxis(scores, in_axis, -1)
    groups = moved.reshape(-1, m)
    drop = np.argsort(groups, axis=1, kind="stable")[:, : m - n]
    mask = np.ones(groups.shape, bool)
    np.put_along_axis(mask, drop, False, axis=1)
    return np.moveaxis(mask.reshape(moved.shape), -1, in_axis)


def _norms(array: np.ndarray, axis: int, kind: str) -> np.ndarray:
    moved = np.moveaxis(array.astype(np.float64), axis, 0).reshape(array.shape[axis], -1)
    return np.abs(moved).sum(axis=1) if kind == "l1" else np.sqrt((moved**2).sum(axis=1))


def _consumer_channel_terms(
    graph: _channel_graph.ChannelGraph,
    group: _channel_graph.Group,
    c: _channel_graph.Consumer,
    energy: np.ndarray | None,
    kind: str,
) -> np.ndarray | None:
    """Per-channel weight of ``group``'s channels in consumer ``c`` (energy-scaled if given)."""
    array = np.moveaxis(c.weight.numpy().astype(np.float64), c.axis, 0)
    c.weight.release()  # a float64 copy is all we need: unmap the input's pages (issue 18)
    rows = array.reshape(array.shape[0], -1)
    if energy is not None and len(energy) == rows.shape[0]:
        per_row = np.sqrt((rows**2).sum(axis=1) * np.maximum(energy.astype(np.float64), 0))
    elif kind == "l1":
        per_row = np.abs(rows).sum(axis=1)
    else:
        per_row = np.sqrt((rows**2).sum(axis=1))
    total = np.zeros(group.size)
    offset, found = 0, False
    for s in c.spaces:
        size = graph.sizes[s]
        if graph.find(s) == group.root:
            block = per_row[offset * c.block : (offset + size) * c.block].reshape(size, c.block)
            total += (
                np.sqrt((block**2).sum(axis=1)) if kind == "l2" or energy is not None else block.sum(axis=1)
            )
            found = True
        offset += size
    return total if found else None


def _channel_scores(
    graph: _channel_graph.ChannelGraph,
    group: _channel_graph.Group,
    energies: dict[str, np.ndarray],
    kind: str,
) -> np.ndarray:
    """Importance of each channel of a group: summed over every tensor it lives in.

    Each term is normalized by its mean so that layers of different scale count alike.
    """

    def normalized(t: np.ndarray) -> np.ndarray:
        mean = float(t.mean())
        return t / mean if mean > 0 else t

    data_terms = []
    for c in group.consumers:
        e = energies.get(c.weight.label)
        if e is not None:
            t = _consumer_channel_terms(graph, group, c, e, kind)
            if t is not None:
                data_terms.append(normalized(t))
    if data_terms:
        return np.sum(data_terms, axis=0)
    terms = []
    for p in group.producers:
        t = _norms(p.weight.numpy(), p.axis, kind)
        p.weight.release()
        scale = graph.bn_scale.get(p.space)
        if scale is not None and len(scale) == len(t):
            t = t * scale
        terms.append(normalized(t))
    for c in group.consumers:
        t = _consumer_channel_terms(graph, group, c, None, kind)
        if t is not None:
            terms.append(normalized(t))
    return np.sum(terms, axis=0) if terms else np.ones(group.size)


def _n_keep(size: int, sparsity: float, round_to: int) -> int:
    keep = size - int(round(sparsity * size))
    if round_to > 1 and size >= round_to:
        keep = min(size, int(np.ceil(keep / round_to)) * round_to)
    return max(1, keep)


def _choose_channels(
    candidates: list[tuple[_channel_graph.Group, float]],
    scores: dict[int, np.ndarray],
    cfg: PruneConfig,
    overridden: set[int],
) -> dict[int, np.ndarray]:
    keep: dict[int, np.ndarray] = {}
    pool = []
    for group, sparsity in candidates:
        s = scores[group.root]
        if cfg.scope == "global" and group.root not in overridden:
            pool.append(group)
            continue
        n = _n_keep(group.size, sparsity, cfg.round_to)
        keep[group.root] = np.sort(np.argsort(-s, kind="stable")[:n])
    if pool:
        # One threshold over mean-normalized scores; every group keeps at least 10%.
        flat = np.concatenate([scores[g.root] / max(float(scores[g.root].mean()), 1e-12) for g in pool])
        total = flat.size
        k = int(round(cfg.sparsity * total))
        threshold = np.partition(flat, k - 1)[k - 1] if k > 0 else -np.inf
        for g in pool:
            s = scores[g.root] / max(float(scores[g.root].mean()), 1e-12)
            n = max(int(np.sum(s > threshold)), int(np.ceil(0.1 * g.size)), 1)
            if cfg.round_to > 1 and g.size >= cfg.round_to:
                n = min(g.size, int(np.ceil(n / cfg.round_to)) * cfg.round_to)
            keep[g.root] = np.sort(np.argsort(-s, kind="stable")[:n])
    return keep
