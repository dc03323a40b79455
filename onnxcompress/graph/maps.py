"""Map-typed outputs: a classifier's ZipMap, set aside while the graph is compressed.

skl2onnx ends every classifier, by default, in ``ai.onnx.ml.ZipMap``: the probability tensor
``[N, C]`` becomes a sequence of {class: probability} maps. onnx_ir cannot read map types, so
such a file could not even be inspected (batch 17's breast-cancer pipeline: exit 2 on every
configuration, where onnxruntime's quantizer ran). The ZipMap holds no weight and computes
nothing a pass changes: it is cut off when the file is read (:func:`detach_maps`; its input
becomes a graph output while it is away, so that no pass renames or removes it) and put back
when the compressed model is written (:func:`reattach_maps`). onnxruntime gives the map output
as a list of dicts; :func:`map_rows` reads it back as the probability rows it was made from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

ML_DOMAIN = "ai.onnx.ml"
#: ``ir.Model.meta`` key of the maps a loaded model had (a tuple of :class:`DetachedMap`)
DETACHED_MAPS = "onnxcompress.detached_maps"


@dataclass(frozen=True)
class DetachedMap:
    """One ZipMap cut off a graph: the node and its graph output (serialized), the output's
    position, and the input it reads when that was made a graph output only while it is away."""

    node: bytes
    output: bytes
    index: int
    exposed: str | None


def _has_map(t: onnx.TypeProto) -> bool:
    if t.HasField("map_type"):
        return True
    return t.HasField("sequence_type") and _has_map(t.sequence_type.elem_type)


def detach_maps(proto: onnx.ModelProto) -> tuple[DetachedMap, ...]:
    """Cut from ``proto`` (in place) every ZipMap whose output is a map-typed graph output no node
    reads; return them for :func:`reattach_maps`. Nothing is cut (an empty tuple) unless every
    map-typed value of the main graph is such an output."""
    g = proto.graph
    outputs = {o.name: i for i, o in enumerate(g.output)}
    maps = {v.name for v in (*g.input, *g.output, *g.value_info) if _has_map(v.type)}
    read = {name for n in g.node for name in n.input}
    zipmaps = [n for n in g.node if n.op_type == "ZipMap" and n.domain == ML_DOMAIN
               and n.output and n.output[0] in outputs and n.output[0] not in read]
    if not zipmaps or maps - {n.output[0] for n in zipmaps}:
        return ()
    visible = set(outputs) | {i.name for i in g.input}
    typed = {v.name: v for v in g.value_info}
    detached = []
    for node in zipmaps:
        index, source = outputs[node.output[0]], node.input[0]
        detached.append(DetachedMap(node.SerializeToString(), g.output[index].SerializeToString(), index,
                                    None if source in visible else source))
    cut = {n.output[0] for n in zipmaps}
    kept_nodes = [n for n in g.node if not (n.op_type == "ZipMap" and n.output and n.output[0] in cut)]
    kept_outputs = [o for o in g.output if o.name not in cut]
    del g.node[:]
    g.node.extend(kept_nodes)
    del g.output[:]
    g.output.extend(kept_outputs)
    for node, d in zip(zipmaps, detached, strict=True):
        if d.exposed is not None and d.exposed not in {o.name for o in g.output}:
            # ZipMap reads [N, C] floats, C its class labels
            labels = [a for a in node.attribute if a.name.startswith("classlabels")]
            classes = len(labels[0].ints or labels[0].strings) if labels else None
            g.output.append(typed[d.exposed] if d.exposed in typed else onnx.helper.make_tensor_value_info(
                d.exposed, onnx.TensorProto.FLOAT, [None, classes]))
    return tuple(detached)


def reattach_maps(proto: onnx.ModelProto, detached: tuple[DetachedMap, ...]) -> None:
    """Put the ZipMaps :func:`detach_maps` cut back into ``proto`` (in place): their outputs at
    their places, the inputs exposed for them graph outputs no longer."""
    if not detached:
        return
    g = proto.graph
    exposed = {d.exposed for d in detached if d.exposed is not None}
    outputs = [o for o in g.output if o.name not in exposed]
    for d in sorted(detached, key=lambda d: d.index):
        info = onnx.ValueInfoProto()
        info.ParseFromString(d.output)
        outputs.insert(min(d.index, len(outputs)), info)
        node = onnx.NodeProto()
        node.ParseFromString(d.node)
        g.node.append(node)
    del g.output[:]
    g.output.extend(outputs)
    if not any(o.domain == ML_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(ML_DOMAIN, 1))


def map_rows(value: Any) -> Any:
    """onnxruntime's value of a map-typed output (a list of {class: probability} dicts, one a
    row) as the ``[N, C]`` float array of its probabilities, classes in sorted order; any other
    value as it is."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float32)
    return value
