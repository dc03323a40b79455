"""ONNX 1.x's experimental ops (``graph.legacy``): an opset-7 export with ImageScaler, Crop and
Affine (batch 33's fast-neural-style candy, Core ML -> OnnxMLTools) could not be upgraded, so int8
wrote it unchanged (1.00x) with onnx's unformatted converter message; written as standard ops it
upgrades and int8 gives 3.77x at 48.6 dB PSNR against fp32."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper as oh
from onnx import numpy_helper

from onnxcompress.graph.legacy import standard_legacy_ops
from onnxcompress.model import load_model, to_proto
from onnxcompress.opset import upgrade_opset
from onnxcompress.pipeline import Pipeline
from tests import helpers as h

F = onnx.TensorProto.FLOAT


def _legacy(crop_border: bool = True) -> onnx.ModelProto:
    """IR 3, opset 7: ImageScaler -> Conv -> Crop -> Affine -> ScaledTanh -> ParametricSoftplus
    (initializers listed as graph inputs, as IR 3 requires)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((32, 3, 3, 3)) * 0.3).astype(np.float32)
    nodes = [
        oh.make_node("ImageScaler", ["x"], ["s"], scale=0.017, bias=[-2.1, -2.0, -1.8]),
        oh.make_node("Conv", ["s", "w"], ["c"], pads=[1, 1, 1, 1]),
        oh.make_node("Crop", ["c"], ["k"], **({"border": [1, 2, 3, 1]} if crop_border else {})),
        oh.make_node("Affine", ["k"], ["a"], alpha=0.5, beta=0.25),
        oh.make_node("ScaledTanh", ["a"], ["t"], alpha=2.0, beta=0.7),
        oh.make_node("ParametricSoftplus", ["t"], ["y"], alpha=1.5, beta=0.8),
    ]
    graph = oh.make_graph(
        nodes,
        "legacy",
        [oh.make_tensor_value_info("x", F, [1, 3, 16, 16]), oh.make_tensor_value_info("w", F, [32, 3, 3, 3])],
        [oh.make_tensor_value_info("y", F, [1, 32, 13, 12])],
        [numpy_helper.from_array(w, "w")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 7)])
    model.ir_version = 3
    return model


def _x() -> dict[str, np.ndarray]:
    return {"x": (np.random.default_rng(1).random((1, 3, 16, 16)) * 255).astype(np.float32)}


def test_each_legacy_op_becomes_the_standard_ops_it_equals():
    proto = _legacy()
    rewritten = onnx.ModelProto.FromString(proto.SerializeToString())
    assert standard_legacy_ops(rewritten) == [
        "ImageScaler",
        "Crop",
        "Affine",
        "ScaledTanh",
        "ParametricSoftplus",
    ]
    onnx.checker.check_model(rewritten)
    assert {n.op_type for n in rewritten.graph.node} <= {"Mul", "Add", "Conv", "Slice", "Tanh", "Softplus"}
    a, b = h.run(proto, _x())[0], h.run(rewritten, _x())[0]
    assert a.shape == b.shape == (1, 32, 13, 12)  # Crop's border: top 2, bottom 1, left 1, right 3
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_the_upgrade_goes_through_them_and_computes_the_same():
    model = load_model(_legacy())
    upgraded, why = upgrade_opset(model, 13)
    assert why is None
    proto = to_proto(upgraded)
    assert proto.opset_import[0].version == 13
    np.testing.assert_allclose(h.run(_legacy(), _x())[0], h.run(proto, _x())[0], rtol=1e-5, atol=1e-5)


def test_an_op_left_as_it_was_is_named_in_the_reason():
    # a Crop with no border is no Slice to write: the converter still refuses it, and the reason
    # names it instead of onnx's unfilled "Op '%s' has no registered schema"
    model = load_model(_legacy(crop_border=False))
    kept, why = upgrade_opset(model, 13)
    assert kept is model and why is not None and "Crop" in why and "%s" not in why


def test_dynamic_int8_compresses_such_a_file():
    proto = _legacy()
    result = Pipeline.from_recipe({"passes": [{"pass": "quantize", "mode": "dynamic"}]}).run(proto)
    assert result.passes[0].status == "applied"
    out = to_proto(result.model)
    assert out.opset_import[0].version >= 11
    a, b = h.run(proto, _x())[0], h.run(out, _x())[0]
    assert float(np.linalg.norm(a - b) / np.linalg.norm(a)) < 0.02
