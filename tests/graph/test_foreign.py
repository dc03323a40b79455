"""Float weights only custom-domain ops read are named in the pipeline's notes."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxcompress import Pipeline, Quantize, load_model
from onnxcompress.graph.foreign import foreign_weights
from tests import helpers as h


def _fused():
    """x @ W (MatMul) and a custom-domain op reading its own packed weight P and W too (a fused
    attention's QKV weight next to an ordinary projection), plus a small custom parameter g."""
    r = h.rng(9)
    w = r.standard_normal((64, 64)).astype(np.float32)
    p = r.standard_normal((64, 192)).astype(np.float32)
    g = r.standard_normal(64).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["a"]),
         helper.make_node("Fused", ["a", "P", "W", "g"], ["y"], domain="custom.test")],
        "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(p, "P"),
         numpy_helper.from_array(g, "g")])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("custom.test", 1)])  # fmt: skip


def test_only_weights_no_onnx_op_reads_are_named():
    # batch 17's ORT-fused MiniLM: 58 MB of its 90 MB read by Attention / EmbedLayerNormalization,
    # int8 at 1.35x with no word about them. W is also a MatMul's weight (compressed); g is small.
    assert foreign_weights(load_model(_fused())) == {"P": ("Fused", 64 * 192 * 4)}


def test_the_pipeline_notes_them():
    result = Pipeline([Quantize(mode="weights", speed_check=False)], check="none").run(_fused())
    assert any("1 float weight(s) (0.0 MB) are read only by custom-domain ops (Fused)" in n
               for n in result.notes)
