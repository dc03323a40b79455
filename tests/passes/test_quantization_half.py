"""--quantize on a float16 model: its weights are stored int8 and decoded back to float16 by
nodes onnxruntime folds at load (Cast, Mul in float32, Cast), so the session runs the graph the
original runs; before, every float16 weight was skipped ("not float32") and the file stayed as
large (MNE-ICALabel converted to float16: 1.00x in every mode, k-means 8 1.99x)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper as oh
from onnx import numpy_helper

from onnxcompress import Pipeline
from onnxcompress.model import to_proto
from onnxcompress.passes import Quantize
from tests import helpers as h
from tests import zoo

H = onnx.TensorProto.FLOAT16


def _half_cnn() -> onnx.ModelProto:
    r = np.random.default_rng(3)
    inits = {"c0.w": r.normal(0, 0.2, (32, 8, 3, 3)), "c0.b": r.normal(0, 0.1, 32),
             "c1.w": r.normal(0, 0.1, (16, 32, 3, 3)), "c1.b": r.normal(0, 0.1, 16)}
    nodes = [oh.make_node("Conv", ["x", "c0.w", "c0.b"], ["h"], pads=[1, 1, 1, 1], name="c0"),
             oh.make_node("Relu", ["h"], ["hr"], name="relu"),
             oh.make_node("Conv", ["hr", "c1.w", "c1.b"], ["y"], pads=[1, 1, 1, 1], name="c1")]
    graph = oh.make_graph(nodes, "half_cnn", [oh.make_tensor_value_info("x", H, ["N", 8, 12, 12])],
                          [oh.make_tensor_value_info("y", H, None)],
                          [numpy_helper.from_array(v.astype(np.float16), k) for k, v in inits.items()])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _feeds(proto: onnx.ModelProto, n: int = 6) -> list[dict[str, np.ndarray]]:
    x = proto.graph.input[0]
    shape = [2 if d.dim_param else d.dim_value for d in x.type.tensor_type.shape.dim]
    r = np.random.default_rng(0)
    return [{x.name: r.normal(size=shape).astype(np.float16)} for _ in range(n)]


def _run(proto: onnx.ModelProto, feeds: list) -> np.ndarray:
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, f)[0].astype(np.float32) for f in feeds])



@pytest.mark.parametrize("make", [_half_cnn, zoo.fp16_model], ids=["cnn", "mlp"])
@pytest.mark.parametrize("mode", ["dynamic", "weights", "static"])
def test_float16_weights_are_stored_int8_and_decode_at_load(make, mode: str) -> None:
    proto = make()
    feeds = _feeds(proto)
    calibration = feeds if mode == "static" else None
    result = Pipeline([Quantize(mode=mode, speed_check=False)]).run(proto, calibration=calibration)
    q = to_proto(result.model)
    int8 = [t for t in q.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8) == 2, [t.name for t in q.graph.initializer]  # both weights
    assert not result.passes[0].skipped.get("weight is FLOAT16, not float32; --kmeans 8 stores FLOAT16 "
                                            "weights in 8 bits")
    weight_bytes = {t.name: t.ByteSize() for t in proto.graph.initializer if "w" in t.name.split(".")[-1]}
    assert sum(t.ByteSize() for t in int8) < 0.55 * sum(weight_bytes.values())
    a, b = _run(proto, feeds), _run(q, feeds)
    assert q.graph.output[0].type.tensor_type.elem_type == H
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.03
    # the decodes fold at load: the session runs the original's ops (a float16 Mul has no CPU
    # kernel to fold, and would run every call behind inserted Casts)
    assert h.loaded_ops(q) == h.loaded_ops(proto)


def _with_weight(dtype: type, w0: np.ndarray) -> onnx.ModelProto:
    """``_half_cnn`` with ``w0`` as c0's weight, all in ``dtype`` (float16 or float32)."""
    proto = _half_cnn()
    for t in proto.graph.initializer:
        value = w0 if t.name == "c0.w" else numpy_helper.to_array(t)
        t.CopyFrom(numpy_helper.from_array(value.astype(dtype), t.name))
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    proto.graph.input[0].type.tensor_type.elem_type = elem
    proto.graph.output[0].type.tensor_type.elem_type = elem
    return proto


def test_the_fidelity_guard_judges_float16_weights_as_float32_ones() -> None:
    """The guard measures a float16 model's weights (it had no candidate in one) and prices a
    float step at what it costs there: half a float16 weight's bytes, not three quarters."""
    w0 = np.random.default_rng(5).normal(0, 0.05, (32, 8, 3, 3))
    w0[:, 0, 0, 0] = 3.0  # one input position's outliers: int8 per output channel loses the rest
    guards = {}
    for dtype in (np.float32, np.float16):
        result = Pipeline([Quantize(mode="dynamic", speed_check=False, fidelity_min_ratio=1.2)]).run(
            _with_weight(dtype, w0))
        guards[dtype] = result.passes[0].metrics["fidelity_guard"]
        onnx.checker.check_model(to_proto(result.model))
    half, full = guards[np.float16], guards[np.float32]
    assert half["candidates"] == full["candidates"] == 2
    assert set(half["probed"]) == set(full["probed"]) == {"c0.w", "c1.w"}
    assert half["probed"]["c0.w"] == pytest.approx(full["probed"]["c0.w"], rel=0.05)
    # A float32 weight's float step is stored float16 with the rest (``_int8_search.halves``):
    # both cost one byte a value over their int8 codes.
    assert half["steps"] == {"c0.w": "float"} and full["steps"] == {"c0.w": "half"}
    values = w0.size
    assert half["step_bytes"] == full["step_bytes"] == {"c0.w": values}
