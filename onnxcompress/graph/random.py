"""Ops that draw random numbers, which every measurement runs at their mean.

A model that samples (Piper's VITS text-to-speech: ``RandomNormalLike`` noise, scaled by its
``scales`` input, drives both the waveform and the durations that set its length) gives other
outputs on every run: two runs of the same file on one sentence differ, the fidelity checks read
that as the compression's doing, and a length drawn differently breaks any comparison. Every
onnxruntime session the library creates (``runtime.create_session``: guards, probes,
calibration, validation) therefore runs a copy whose random ops give their mean (a normal's
``mean``, a uniform's midpoint): the model's noise-free path, the same in the original and the
compressed model. The model written keeps its random ops as they were.
"""

from __future__ import annotations

import mmap
import os

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

from onnxcompress.model import proto_graphs
from onnxcompress.weights import all_graphs

RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"})
_LIKE = frozenset({"RandomNormalLike", "RandomUniformLike"})


def random_ops(model: ir.Model) -> int:
    """How many random-number ops ``model`` (subgraphs included) holds."""
    return sum(_is_random(node) for _, graph in all_graphs(model) for node in graph)


def random_note(model: ir.Model) -> str | None:
    """The note saying that the model's measurements run its random ops at their mean."""
    count = random_ops(model)
    if not count:
        return None
    return (f"the model draws random numbers ({count} random op(s)): every check runs it with each "
            "draw at its mean (the noise-free path), the same in the original and the output; "
            "the written model keeps them")


def file_mentions_random(path: str | os.PathLike) -> bool:
    """Whether a model file may hold a random op (its op type's name is in the bytes): the cheap
    test before a file is parsed to be rewritten."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(b"RandomNormal") >= 0 or data.find(b"RandomUniform") >= 0


def proto_random_ops(proto: onnx.ModelProto) -> int:
    """How many random-number ops ``proto`` (subgraphs included) holds."""
    return sum(_is_random(node) for graph in proto_graphs(proto.graph) for node in graph.node)


def _is_random(node: ir.Node | onnx.NodeProto) -> bool:
    return node.op_type in RANDOM_OPS and node.domain in ("", "ai.onnx")


def mean_draws(proto: onnx.ModelProto) -> int:
    """Replace, in place, every random op of ``proto`` (subgraphs included) by nodes giving its
    mean with the same output name, type and shape; returns how many were replaced."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    count = 0
    # Innermost graphs first: rewriting a graph's node list copies its nodes, subgraphs included.
    for graph in reversed(list(proto_graphs(proto.graph))):
        if not any(map(_is_random, graph.node)):
            continue
        nodes = [new for node in graph.node
                 for new in (_at_mean(node, opset) if _is_random(node) else [node])]
        count += len([n for n in graph.node if _is_random(n)])
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def _at_mean(node: onnx.NodeProto, opset: int) -> list[onnx.NodeProto]:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    normal = node.op_type.startswith("RandomNormal")
    mean = float(attrs.get("mean", 0.0)) if normal else \
        (float(attrs.get("low", 0.0)) + float(attrs.get("high", 1.0))) / 2
    out = node.output[0]
    dtype = attrs.get("dtype")
    np_type = helper.tensor_dtype_to_np_dtype(int(dtype)) if dtype is not None else np.float32
    name = node.name or out
    if node.op_type not in _LIKE:  # a fixed shape
        value = np.full([int(d) for d in attrs.get("shape", [])], mean, dtype=np_type)
        return [helper.make_node("Constant", [], [out], name=name, value=numpy_helper.from_array(value))]
    shape = f"{out}__shape"
    fill = numpy_helper.from_array(np.array([mean], dtype=np_type))
    nodes = [helper.make_node("Shape", [node.input[0]], [shape], name=f"{name}__shape")]
    if dtype is not None or opset < 15:  # (without CastLike the common case: float32)
        return nodes + [helper.make_node("ConstantOfShape", [shape], [out], name=name, value=fill)]
    filled = f"{out}__filled"
    return nodes + [helper.make_node("ConstantOfShape", [shape], [filled], name=f"{name}__fill", value=fill),
                    helper.make_node("CastLike", [filled, node.input[0]], [out], name=name)]
