"""The prune pass's ``channel`` pattern: whole channel groups removed and the graph shrunk.

``_prune_channels`` analyses the coupled channels (:mod:`onnxcompress.passes._channels`),
``_prune_groups`` scores and chooses them, corrects biases and applies the removal;
``_report_unchanged_weights`` gives every weight left alone a reason.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress import macs
from onnxcompress.errors import OnnxCompressError
from onnxcompress.layerwise import reconstruct
from onnxcompress.layerwise.bias import add_to_bias, bias_delta
from onnxcompress.model import shape_only_proto
from onnxcompress.passes import _channel_graph, _channels
from onnxcompress.passes._prune_select import (
    _channel_scores,
    _choose_channels,
    _first_last_nodes,
    _stats,
    _use_data,
)
from onnxcompress.passes.base import LayerStat, PassContext, PassResult
from onnxcompress.weights import ROLE_EMBEDDING, ROLE_RECURRENT, ROLE_WEIGHT, Weight, WeightIndex

if TYPE_CHECKING:
    from onnxcompress.passes.pruning import PruneConfig

logger = logging.getLogger(__name__)


# -- channels -----------------------------------------------------------------------------


def _prune_channels(
    cfg: PruneConfig,
    model: ir.Model,
    index: WeightIndex,
    context: PassContext,
    result: PassResult,
    macs_before: dict[str, int],
) -> None:
    shapes = macs.infer_shapes(model)
    graph = _channels.analyze(model, index, shapes, exclude=cfg.exclude,
                              rng=context.rng("prune-channels"))
    group_reason: dict[int, str] = {}
    try:
        _prune_groups(cfg, model, index, context, result, macs_before, graph, group_reason)
    finally:
        _report_unchanged_weights(model, index, graph, group_reason, result)


_KEEP_FIRST = "first compute layer (keep_first)"
_COUPLED_TO_FIRST = "output channels tied to the first compute layer's (keep_first)"


def _prune_groups(
    cfg: PruneConfig,
    model: ir.Model,
    index: WeightIndex,
    context: PassContext,
    result: PassResult,
    macs_before: dict[str, int],
    graph: _channel_graph.ChannelGraph,
    group_reason: dict[int, str],
) -> None:
    first, last = _first_last_nodes(model, index)
    groups = graph.groups()
    candidates: list[tuple[_channel_graph.Group, float]] = []
    overridden: set[int] = set()  # groups with a per-layer sparsity: outside the global pool
    for group in groups.values():
        if not group.producers:
            continue
        names = [p.weight.label for p in group.producers] + [p.node.name or "" for p in group.producers]
        override = cfg.override_for(*names)
        sparsity = cfg.sparsity if override is None else override
        reason = group.frozen[0] if group.frozen else None
        if reason is None and group.size < 2:
            reason = "a single channel"
        if reason is None and cfg.keep_first and any(id(p.node) in first for p in group.producers):
            reason = _KEEP_FIRST
        if reason is None and sum(p.weight.size for p in group.producers) < cfg.min_size:
            reason = f"smaller than min_size ({cfg.min_size} elements)"
        if reason is None and sparsity == 0.0:
            reason = "per-layer sparsity 0"
        if reason is not None:
            group_reason[group.root] = reason
            for p in group.producers:  # every tensor of a coupled group, by name
                # (a layer whose output channels a residual Add or a depthwise conv ties to the
                # first layer's is not the first layer: PESTO's two prefilter convs were named so)
                coupled = reason == _KEEP_FIRST and id(p.node) not in first
                result.skip(p.weight.label, _COUPLED_TO_FIRST if coupled else reason)
            continue
        candidates.append((group, sparsity))
        if override is not None:
            overridden.add(group.root)
    for w in index:
        if w.scope and w.role == ROLE_WEIGHT:
            result.skip(w.label, "in a subgraph (If/Loop/Scan): channel pruning is main-graph only")
    use_data = bool(candidates) and _use_data(cfg, context, result)
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if use_data:
        consumers = {id(c.weight): c.weight for g, _ in candidates for c in g.consumers}
        stats = _stats(cfg, model, list(consumers.values()), context, result)
    elif cfg.importance == "auto" and graph.bn_input_stats:
        # No data: the BatchNormalization statistics still tell each channel's mean and
        # spread on the training data, which ranks channels and corrects biases far better
        # than weight norms alone.
        stats = dict(graph.bn_input_stats)
        result.metrics["importance"] = "batchnorm statistics"
    energies = {k: v[1] for k, v in stats.items()}
    result.metrics.setdefault("importance", "magnitude")
    scores = {g.root: _channel_scores(graph, g, energies, cfg.channel_norm) for g, _ in candidates}
    keep = _choose_channels(candidates, scores, cfg, overridden)
    keep = {root: k for root, k in keep.items() if len(k) < groups[root].size}
    if not keep:
        result.note("no channel group could be pruned (see skipped)")
        return
    weights_before = {id(w): (w.label, w.shape, w.nbytes) for w in index}
    refit = _refit_consumers(cfg, model, graph, groups, keep, context, result)
    deltas: list[tuple[Weight, np.ndarray]] = []
    if cfg.bias_correction and stats:
        # Consumers lose the removed channels' mean contribution: it moves into their bias.
        out_space = {id(p.weight): p.space for p in graph.producers}
        for c in {id(c.weight): c for r in keep for c in groups[r].consumers}.values():
            if c.weight.label not in stats or id(c.weight) not in out_space or c.weight.label in refit:
                continue  # a refit consumer matches the teacher's output, mean included
            removed = c.weight.numpy().copy()
            c.weight.release()
            np.moveaxis(removed, c.axis, 0)[graph.channel_index(c.spaces, c.block, keep)] = 0
            delta = bias_delta(c.weight, removed, stats[c.weight.label][0], grouped=False)
            if delta is not None:
                kept_out = graph.channel_index((out_space[id(c.weight)],), 1, keep)
                deltas.append((c.weight, delta[kept_out]))
    changed = graph.apply(keep)
    corrected = sum(add_to_bias(w, d, create=True) for w, d in deltas)
    if deltas:
        result.metrics["bias_corrected"] = int(corrected)
    _refresh_shapes(model)
    macs_after = macs.count_macs(model).by_node()
    op_of = {w.label: w for w in index}
    for label, (before, after) in changed.items():
        w = op_of[label]
        node = w.uses[0].node
        name = macs.node_key(node)
        _, _, bytes_before = weights_before[id(w)]
        extra: dict[str, Any] = {
            "shape_before": list(before),
            "params_before": int(np.prod(before)),
            "params_after": int(np.prod(after)),
        }
        if name in macs_before:
            extra["macs_before"] = macs_before[name]
            extra["macs_after"] = macs_after.get(name)
        result.add_layer(
            LayerStat(
                name=label,
                op_type=node.op_type,
                shape=after,
                bytes_before=bytes_before,
                bytes_after=w.nbytes,
                extra=extra,
            )
        )
    removed = sum(groups[r].size - len(k) for r, k in keep.items())
    _say_short_of(cfg, weights_before, result)
    result.metrics.update(
        {
            "pattern": "channel",
            "groups": len([g for g in groups.values() if g.producers]),
            "groups_pruned": len(keep),
            "channels_removed": removed,
            "channels_in_pruned_groups": sum(groups[r].size for r in keep),
        }
    )


#: Parameters removed below this share of what the sparsity asks make a headline.
SHORT_OF_ASKED = 0.5


def _say_short_of(cfg: PruneConfig, before: dict[int, tuple], result: PassResult) -> None:
    """A headline when the weights lost far fewer parameters than the sparsity asked (batch 8's
    Siamese CNN, whose twin towers share every conv: 0.5% for 30%, and only skip lines said
    why)."""
    total = sum(int(np.prod(shape)) for _, shape, _ in before.values())
    gone = sum(int(s.extra["params_before"]) - int(s.extra["params_after"]) for s in result.layers
               if s.extra and "params_before" in s.extra)
    if not total or gone >= SHORT_OF_ASKED * cfg.sparsity * total:
        return
    skipped = sorted(result.skipped.items(), key=lambda kv: -len(kv[1]))
    why = (f"{result.skipped_count} weight(s) skipped, e.g. {skipped[0][0]}" if skipped
           else "the other channels were kept")
    result.headline(f"channel pruning removed {gone / total:.1%} of the weights' parameters where "
                    f"{cfg.sparsity:.0%} was asked: {why}")


def _refit_consumers(
    cfg: PruneConfig,
    model: ir.Model,
    graph: _channel_graph.ChannelGraph,
    groups: dict[int, _channel_graph.Group],
    keep: dict[int, Any],
    context: PassContext,
    result: PassResult,
) -> set[str]:
    """With ``reconstruct``: each layer reading pruned channels gets the weights on its kept inputs
    refit to the least-squares optimum against its unpruned output (the teacher's inputs; the
    removed inputs' columns are then dropped by ``graph.apply``). Labels of the layers refit."""
    if not cfg.reconstruct or context.calibration is None:
        if cfg.reconstruct:
            result.note("reconstruct needs calibration data (--calibration); layers were not refit")
        return set()
    items: list[tuple[Weight, np.ndarray]] = []
    for c in {id(c.weight): c for r in keep for c in groups[r].consumers}.values():
        w = c.weight
        mask = np.zeros(w.shape, bool)
        np.moveaxis(mask, c.axis, 0)[graph.channel_index(c.spaces, c.block, keep)] = True
        if not mask.all():
            items.append((w, mask))
    if not items:
        return set()
    feeds = context.calibration.take(context.stats.limit(cfg.calibration_samples))
    try:
        done = reconstruct.refit_pruned(model, items, feeds, seed=context.seed)
    except OnnxCompressError as e:
        result.note(f"reconstruction skipped: the model could not run on the calibration data ({e})")
        return set()
    for w, _ in items:
        if w.label in done.refits:
            w.set_numpy(done.refits[w.label].array)
    for label, reason in done.skipped.items():
        result.metrics.setdefault("not_refit", {})[label] = reason
    result.metrics["reconstruction_seconds"] = round(done.seconds, 3)
    result.metrics["reconstructed_layers"] = len(done.refits)
    result.metrics["reconstruction"] = {
        label: (round(r.error_before, 6), round(r.error_after, 6)) for label, r in done.refits.items()}
    return set(done.refits)


def _report_unchanged_weights(
    model: ir.Model,
    index: WeightIndex,
    graph: _channel_graph.ChannelGraph,
    group_reason: dict[int, str],
    result: PassResult,
) -> None:
    """Give every compute weight channel pruning left alone a reason in ``result.skipped``."""
    mentioned = {s.name for s in result.layers} | {n for names in result.skipped.values() for n in names}
    follows = {id(w): spaces for w, _, spaces, _ in graph.weight_cuts}
    for w in index:
        if w.role not in (ROLE_WEIGHT, ROLE_EMBEDDING, ROLE_RECURRENT) or w.label in mentioned:
            continue
        reason = None
        if id(w) in follows:  # e.g. a depthwise weight: it follows its input's channels
            roots = {graph.find(s) for s in follows[id(w)]}
            reason = next((group_reason[r] for r in roots if r in group_reason), None)
            reason = _COUPLED_TO_FIRST if reason == _KEEP_FIRST else reason or "its channels are not pruned"
        elif w.role == ROLE_EMBEDDING:
            reason = "embedding table (Gather): channel pruning covers Conv/ConvTranspose/Gemm/MatMul"
        elif w.role == ROLE_RECURRENT:
            reason = "recurrent weight (LSTM/GRU/RNN): not channel-pruned"
        elif all(u.node.graph is not model.graph for u in w.uses):
            reason = "read inside a subgraph (If/Loop/Scan): channel pruning is main-graph only"
        elif any(u.node.op_type == "MatMul" and u.index == 0 for u in w.uses):
            reason = "left operand of MatMul (W @ x): output channels are not on the last axis"
        else:
            reason = "not a weight the channel analysis can rewrite"
        result.skip(w.label, reason)


def _refresh_shapes(model: ir.Model) -> None:
    """Forget intermediate shapes (channel counts changed) and infer them again."""
    graph = model.graph
    for node in graph:
        for out in node.outputs:
            if out is not None and not out.is_graph_output() and node.op_type != "Constant":
                out.shape = None
    try:
        proto = shape_only_proto(model)  # shapes need no weight data: no copy of the model
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception as e:  # custom ops: leave the shapes unknown, which is valid
        logger.debug("shape inference after pruning failed: %s", e)
        return
    found = {}
    for vi in inferred.graph.value_info:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            found[vi.name] = (
                [
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in vi.type.tensor_type.shape.dim
                ],
                vi.type.tensor_type.elem_type,
            )
    for node in graph:
        for out in node.outputs:
            if out is not None and out.shape is None and out.name in found:
                shape, elem = found[out.name]
                out.shape = ir.Shape(shape)
                if out.type is None and elem:
                    out.type = ir.TensorType(ir.DataType(elem))
