"""Float weights only custom-domain ops read are named in the pipeline's notes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcompress import Pipeline, Quantize, WeightSharing, load_model
from onnxcompress.graph.foreign import foreign_weights
from onnxcompress.model import to_proto
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


def _runtime_fused():
    """An MLP whose layers are onnxruntime's own FusedMatMul (com.microsoft), as its transformer
    optimizer writes them, and one ordinary MatMul."""
    r = h.rng(4)
    p1 = (r.standard_normal((64, 256)) * 0.1).astype(np.float32)
    p2 = (r.standard_normal((64, 256)) * 0.1).astype(np.float32)  # read transposed
    w = (r.standard_normal((64, 16)) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("FusedMatMul", ["x", "P1"], ["a"], domain="com.microsoft", alpha=1.0),
         helper.make_node("Relu", ["a"], ["ar"]),
         helper.make_node("FusedMatMul", ["ar", "P2"], ["b"], domain="com.microsoft", transB=1, alpha=1.0),
         helper.make_node("MatMul", ["b", "W"], ["y"])],
        "runtime_fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        [numpy_helper.from_array(v, k) for k, v in (("P1", p1), ("P2", p2), ("W", w))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)])  # fmt: skip


@pytest.mark.parametrize("make", [lambda: Quantize(mode="dynamic", speed_check=False),
                                  lambda: WeightSharing(bits=8)], ids=["int8", "kmeans8"])
def test_onnxruntime_ops_weights_are_stored_int8_where_they_are(make):
    # batch 17's fused MiniLM: int8 1.35x -> 3.91x (cosine 0.9996), k-means 8 -> 3.97x
    model = _runtime_fused()
    result = Pipeline([make()]).run(model)
    out = to_proto(result.model)
    for name in ("P1", "P2"):  # int8 (quantize) or 8-bit codes (k-means), no float copy left
        kept = [t for t in out.graph.initializer if t.name.startswith(name)]
        assert kept and all(t.data_type != TensorProto.FLOAT or np.prod(t.dims) < 1024 for t in kept), kept
        assert sum(t.ByteSize() for t in kept) < 0.3 * 64 * 256 * 4
    x = h.rng(1).standard_normal((8, 64)).astype(np.float32)
    a, b = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            .run(None, {"x": x})[0] for m in (model, out))
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.02
    # decoded in front of the op and folded at load: the session runs the original's ops
    assert h.loaded_ops(out) == h.loaded_ops(model)


def test_other_custom_domains_are_left_as_they_are():
    result = Pipeline([Quantize(mode="weights", speed_check=False)], check="none").run(_fused())
    stored = {t.name: t.data_type for t in to_proto(result.model).graph.initializer}
    assert stored["P"] == TensorProto.FLOAT  # (W is read by the custom op too: float as well)


def test_rotary_caches_are_not_taken_for_weights():
    """A RotaryEmbedding's cos / sin caches are positions' values, not learned weights."""
    from onnxcompress.graph.foreign import runtime_tables

    r = h.rng(2)
    cos, sin = (r.standard_normal((512, 32)).astype(np.float32) for _ in range(2))
    graph = helper.make_graph(
        [helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], domain="com.microsoft")],
        "rope", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 64]),
                 helper.make_tensor_value_info("pos", TensorProto.INT64, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 64])],
        [numpy_helper.from_array(cos, "cos"), numpy_helper.from_array(sin, "sin")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    assert runtime_tables(load_model(model)) == []
    assert [v.name for _, _, v in runtime_tables(load_model(_runtime_fused()))] == ["P1", "P2"]
