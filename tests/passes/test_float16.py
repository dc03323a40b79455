"""fp16 / bf16: half the file, outputs within cosine 0.9999, no NaN/Inf, io types unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxcompress.data import synthetic_feeds
from onnxcompress.model import load_model, to_proto
from onnxcompress.passes import BFloat16, Float16
from tests import helpers

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted([*ROOT.glob("models/*.onnx"), *ROOT.glob("tests/assets/*.onnx")])


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("pass_class", [Float16, BFloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_half_precision_on_example_models(path: Path, pass_class) -> None:
    model = load_model(path)
    feeds = list(synthetic_feeds(model, 2, seed=0))
    result = pass_class().run(model)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    assert len(proto.SerializeToString()) < 0.57 * path.stat().st_size
    original = onnx.load(path)
    assert [i.type for i in proto.graph.input] == [i.type for i in original.graph.input]
    assert [o.type.tensor_type.elem_type for o in proto.graph.output] == [
        o.type.tensor_type.elem_type for o in original.graph.output]
    for feed in feeds:
        for want, got in zip(helpers.run(path, feed), helpers.run(proto, feed), strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.isfinite(got).all()
            assert _cos(got, want) > 0.9999


def test_float16_keeps_sensitive_ops_float32() -> None:
    model = load_model(ROOT / "tests/assets/transformer_digits.onnx")
    proto = to_proto(Float16().run(model).model)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    for node in proto.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert types[node.output[0]] == onnx.TensorProto.FLOAT
        if node.op_type == "MatMul":
            assert types[node.output[0]] == onnx.TensorProto.FLOAT16
    # Weights are stored in half precision.
    big = [t for t in proto.graph.initializer if len(t.dims) == 2]
    assert big and all(t.data_type == onnx.TensorProto.FLOAT16 for t in big)


def test_float16_without_keep_io_types_and_subgraphs() -> None:
    model = helpers.mlp((16, 32, 8))
    proto = to_proto(Float16(keep_io_types=False).run(load_model(model)).model)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    x = helpers.rng(0).standard_normal((4, 16)).astype(np.float32)
    got = helpers.run(proto, {"x": x.astype(np.float16)})[0]
    assert got.dtype == np.float16 and _cos(got, helpers.run(model, {"x": x})[0]) > 0.9999
    # An If whose branches read main-graph values stays float32 inside and still runs.
    sub = helpers.if_subgraph_model()
    proto = to_proto(Float16().run(load_model(sub)).model)
    onnx.checker.check_model(proto)
    feed = {"x": x[:, :8], "cond": np.array(True)}
    np.testing.assert_allclose(helpers.run(proto, feed)[0], helpers.run(sub, feed)[0], rtol=1e-6)
