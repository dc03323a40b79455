"""Empirical bias correction at a refit's last layers: the output means the whole compressed
model gives them, matched to the teacher's.

A refit sets each layer's bias from the means of that layer's own input (``codebook``:
``W E[x_t] - W' E[x_s]``), measured when its stage began: the shifts of the layers of the same
stage that feed it, and whatever the per-layer targets leave, still move the means of the
model's last layers, where no later layer can make up for them. Here those last layers (the
refit layers that no other refit layer is downstream of) get ``b += E[y_teacher] - E[y_student]``
per output channel, measured by running both whole models on the fit feeds: Nagel et al. 2019's
empirical bias correction, at the layers nearest the outputs. Only these "sink" layers: a
correction upstream would change what the sinks measured (one run per layer otherwise). The
caller keeps the correction only where the end-to-end judge finds the model closer to the teacher.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx_ir as ir

from onnxcompress.activations import iter_intermediates
from onnxcompress.data import Feed
from onnxcompress.graph.constants import const_array
from onnxcompress.passes import _channel_graph
from onnxcompress.weights import Weight, model_names, unique_name


def reach(weights: Sequence[Weight]) -> tuple[set[str], set[str]]:
    """(labels of the weights whose node is downstream of another one's node, labels of the
    weights whose node is upstream of another one's), over the main graph; weights with several
    readers are in neither."""
    node_of = {id(w.uses[0].node): w.label for w in weights if len(w.uses) == 1}
    downstream: set[str] = set()
    upstream: set[str] = set()
    for w in weights:
        if len(w.uses) != 1:
            continue
        start = w.uses[0].node
        seen = {id(start)}
        todo = [start]
        while todo:
            node = todo.pop()
            for out in node.outputs:
                for user, _ in out.uses():
                    if id(user) in seen:
                        continue
                    seen.add(id(user))
                    if id(user) in node_of:
                        downstream.add(node_of[id(user)])
                        upstream.add(w.label)
                    todo.append(user)
    return downstream, upstream


def sink_sites(weights: Sequence[Weight]) -> dict[str, int]:
    """The tensors where the last layers of ``weights`` add their bias (name -> channel axis):
    the layers no other layer of ``weights`` is downstream of, with a bias site (:func:`bias_site`)."""
    _, upstream = reach(weights)
    sites: dict[str, int] = {}
    for w in weights:
        if len(w.uses) != 1 or w.label in upstream or w.uses[0].index != 1:
            continue
        site = bias_site(w.uses[0].node)
        if site is not None and site[0].name:
            sites[site[0].name] = site[1]
    return sites


def bias_site(node: ir.Node) -> tuple[ir.Value, int] | None:
    """(the tensor after the node's bias, its channel axis): a Conv's or Gemm's output (axis 1),
    the single ``Add`` after a ``MatMul`` (last axis); None for anything else."""
    if node.op_type in ("Conv", "Gemm"):
        return node.outputs[0], 1
    if node.op_type == "MatMul" and len(node.outputs[0].uses()) == 1:
        add, _ = node.outputs[0].uses()[0]
        if add.op_type == "Add" and len(add.inputs) == 2:
            return add.outputs[0], -1
    return None


def mean_shift(teacher: ir.Model, student: ir.Model, sites: dict[str, int], feeds: Iterable[Feed]
               ) -> dict[str, np.ndarray]:
    """Per site tensor, ``E[y_teacher] - E[y_student]`` per channel over the feeds (positions
    and samples pooled). Raises :class:`onnxcompress.errors.OnnxCompressError` when a model
    cannot run."""
    feeds = list(feeds)
    means = [_means(m, sites, feeds) for m in (teacher, student)]
    return {k: means[0][k] - means[1][k] for k in means[0] if k in means[1]
            and means[0][k].shape == means[1][k].shape}


def apply_shift(model: ir.Model, deltas: dict[str, np.ndarray]) -> int:
    """Add each delta to the bias of the node producing its site tensor (a Conv/Gemm without one
    gets it as its bias); how many layers changed."""
    producers: dict[str, ir.Node] = {}
    for node in model.graph:
        for out in node.outputs:
            if out.name in deltas:
                producers[out.name] = node
    taken: set[str] | None = None
    done = 0
    for name, delta in deltas.items():
        node = producers.get(name)
        if node is None or not np.isfinite(delta).all() or _rescaled(node):
            continue
        if node.op_type == "Add":  # MatMul + Add: the constant operand is the bias
            bias = next((v for v in node.inputs if v is not None and _const(v) is not None), None)
        else:
            bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is None and node.op_type in ("Conv", "Gemm") and _attr(node, "group", 1) == 1:
            taken = model_names(model) if taken is None else taken
            dtype = _float_dtype(node.inputs[1])
            value = ir.Value(name=unique_name(taken, f"{name}_bias"), shape=ir.Shape(delta.shape),
                             type=ir.TensorType(ir.DataType.from_numpy(dtype)),
                             const_value=ir.tensor(delta.astype(dtype)))
            taken.add(value.name)
            model.graph.register_initializer(value)
            node.resize_inputs(3)
            node.replace_input_with(2, value)
            done += 1
            continue
        b = _const(bias) if bias is not None else None
        if b is None or b.dtype.kind != "f" or b.size != delta.size or len(bias.uses()) != 1:
            continue
        _channel_graph.set_const_array(bias, (b.astype(np.float64) + delta.reshape(b.shape)).astype(b.dtype))
        done += 1
    return done


def _means(model: ir.Model, sites: dict[str, int], feeds: list[Feed]) -> dict[str, np.ndarray]:
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for values in iter_intermediates(model, list(sites), feeds, data="the calibration data"):
        for name, value in values.items():
            v = np.moveaxis(np.asarray(value, np.float64), sites[name], 0)
            v = v.reshape(v.shape[0], -1)
            if name in sums and sums[name].shape != (v.shape[0],):
                continue  # channel counts differ between samples: not a per-channel tensor
            sums[name] = sums.get(name, 0.0) + v.sum(axis=1)
            counts[name] = counts.get(name, 0) + v.shape[1]
    return {k: s / max(counts[k], 1) for k, s in sums.items()}


def _rescaled(node: ir.Node) -> bool:
    """Whether the node's output is scaled again before anything else reads it (k-means's
    int8-exact form puts the channel scales in a ``Mul`` after its consumer): the bias is then
    in other units than the measured means."""
    uses = node.outputs[0].uses()
    return len(uses) == 1 and uses[0][0].op_type == "Mul"


def _const(value: ir.Value) -> np.ndarray | None:
    if value.is_graph_input() or _channel_graph._const_source(value) is not value:
        return None
    return const_array(value)


def _attr(node: ir.Node, name: str, default: int | None) -> int | None:
    attr = node.attributes.get(name)
    return int(attr.value) if attr is not None else default


def _float_dtype(value: ir.Value) -> np.dtype:
    dtype = value.dtype.numpy() if value.dtype is not None else np.dtype(np.float32)
    return dtype if dtype.kind == "f" else np.dtype(np.float32)
