"""A toy of optimum's merged decoder (``decoder_model_merged.onnx``): ``If(use_cache_branch)`` with
the cached step in one branch and the prefill in the other, both reading the embedding table and
the layer weights from the outer graph. Samples differ in length (the prompt, the cache)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

V, D = 600, 64  # the table over 32768 values: the int8-rows form is open to it


def merged_decoder(seed: int = 0) -> onnx.ModelProto:
    """ids [1, S] (int64), past [1, 1, P, D] (float: one head's cache, shaped as decoders shape it),
    use_cache_branch [1] (bool) -> logits [1, S, V], present [1, 1, P + S, D] (the cache given
    back: the past and this step's embeddings)."""
    r = np.random.default_rng(seed)
    table = r.normal(0, 1, (V, D)).astype(np.float32)
    w1 = (r.normal(0, 1, (D, D)) / np.sqrt(D)).astype(np.float32)
    # a trained head's clear leads: each token scores itself first (an untied copy of the table)
    head = (table.T / np.sqrt(D)).astype(np.float32)

    def branch(cached: bool) -> onnx.GraphProto:
        p = "d_" if cached else "p_"
        nodes = [helper.make_node("Gather", ["table", "ids"], [p + "e"], name=p + "embed"),
                 helper.make_node("MatMul", [p + "e", "w1"], [p + "h"], name=p + "fc"),
                 helper.make_node("Tanh", [p + "h"], [p + "t"]),
                 helper.make_node("Add", [p + "t", p + "e"], [p + "r"]),
                 helper.make_node("MatMul", [p + "r", "head"], [p + "logits"], name=p + "head"),
                 helper.make_node("Unsqueeze", [p + "e", "one"], [p + "e4"])]
        if cached:
            nodes.append(helper.make_node("Concat", ["past", p + "e4"], [p + "present"], axis=2))
        else:
            nodes.append(helper.make_node("Identity", [p + "e4"], [p + "present"]))
        return helper.make_graph(nodes, p + "branch", [], [
            helper.make_tensor_value_info(p + "logits", TensorProto.FLOAT, None),
            helper.make_tensor_value_info(p + "present", TensorProto.FLOAT, None)])

    graph = helper.make_graph(
        [helper.make_node("If", ["use_cache_branch"], ["logits", "present"], name="optimum::if",
                          then_branch=branch(True), else_branch=branch(False))],
        "merged_decoder",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "seq"]),
         helper.make_tensor_value_info("past", TensorProto.FLOAT, [1, 1, "past_seq", D]),
         helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "seq", V]),
         helper.make_tensor_value_info("present", TensorProto.FLOAT, [1, 1, "total_seq", D])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w1, "w1"),
         numpy_helper.from_array(head, "head"),
         numpy_helper.from_array(np.array([1], np.int64), "one")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def ragged_feeds(n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """Prefills (the past empty) and cached steps (one token, a past of 1-40), alternating."""
    r = np.random.default_rng(seed)
    feeds = []
    for i in range(n):
        cached = bool(i % 2)
        seq = 1 if cached else int(r.integers(2, 10))
        past = int(r.integers(1, 41)) if cached else 0
        feeds.append({"ids": r.integers(0, V, (1, seq)).astype(np.int64),
                      "past": r.normal(0, 1, (1, 1, past, D)).astype(np.float32),
                      "use_cache_branch": np.array([cached])})
    return feeds
