"""A pass that can do nothing with float16 weights says so as a headline, not only as a skip."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxcompress import Pipeline, Quantize
from tests import helpers as h


def _half_mlp():
    """x (float16) @ W1 -> Relu -> @ W2, weights stored and computed in float16 (onnxruntime's
    float16 converter's output: batch 17's minilm6_fp16)."""
    r = h.rng(7)
    w1 = (r.standard_normal((64, 128)) / 8).astype(np.float16)
    w2 = (r.standard_normal((128, 32)) / 11).astype(np.float16)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
         helper.make_node("MatMul", ["b", "w2"], ["y"])],
        "half_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [None, 32])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_int8_of_a_float16_model_headlines_why_nothing_changed():
    # 1.00x and exit 0 with the reason only among the skips, under the size table
    result = Pipeline([Quantize(mode="dynamic", speed_check=False)]).run(_half_mlp())
    res = result.passes[0]
    assert not res.modified
    assert any("already FLOAT16 (2 weight(s)" in line and "--kmeans 8" in line for line in res.headlines)
