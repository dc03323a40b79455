"""Constants in forms onnx_ir or the weight index do not read (``graph.constants``): a sparse
initializer (the model was refused as invalid) and a ``Constant`` holding ``value_floats`` (its
weight was never compressed) are rewritten before parsing; the caller's proto stays as it was."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx import numpy_helper

from onnxcompress.model import to_proto
from onnxcompress.pipeline import compress
from tests import helpers as h

F = onnx.TensorProto.FLOAT


def _linear(graph_nodes, initializers=(), sparse=()) -> onnx.ModelProto:
    graph = oh.make_graph(graph_nodes, "linear", [oh.make_tensor_value_info("x", F, ["N", 64])],
                          [oh.make_tensor_value_info("y", F, ["N", 48])], list(initializers))
    graph.sparse_initializer.extend(sparse)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _weight() -> np.ndarray:
    return (h.rng(0).standard_normal((64, 48)) / 8).astype(np.float32)


def sparse_model(coordinates: bool) -> onnx.ModelProto:
    w = _weight() * (h.rng(1).random((64, 48)) < 0.3)
    flat = np.flatnonzero(w)
    indices = np.stack(np.unravel_index(flat, w.shape), axis=1) if coordinates else flat
    sparse = oh.make_sparse_tensor(numpy_helper.from_array(w.ravel()[flat], "W"),
                                   numpy_helper.from_array(indices.astype(np.int64), "W_indices"),
                                   list(w.shape))
    return _linear([oh.make_node("MatMul", ["x", "W"], ["y"])], sparse=[sparse])


def listed_model() -> onnx.ModelProto:
    constant = oh.make_node("Constant", [], ["flat"], value_floats=_weight().ravel().tolist())
    shape = numpy_helper.from_array(np.array([64, 48], np.int64), "shape")
    return _linear([constant, oh.make_node("Reshape", ["flat", "shape"], ["W"]),
                    oh.make_node("MatMul", ["x", "W"], ["y"])], [shape])


def sparse_constant_model() -> onnx.ModelProto:
    sparse = sparse_model(False).graph.sparse_initializer[0]
    return _linear([oh.make_node("Constant", [], ["W"], sparse_value=sparse),
                    oh.make_node("MatMul", ["x", "W"], ["y"])])


@pytest.mark.parametrize("make", [lambda: sparse_model(False), lambda: sparse_model(True), listed_model,
                                  sparse_constant_model],
                         ids=["sparse flat indices", "sparse coordinates", "value_floats", "sparse_value"])
@pytest.mark.parametrize("options", [{"pass": "quantize", "mode": "weights", "speed_check": False},
                                     {"pass": "kmeans", "bits": 8}])
def test_the_weight_is_read_and_compressed(make, options):
    proto = make()
    before = proto.SerializeToString()
    feed = {"x": h.rng(2).standard_normal((4, 64)).astype(np.float32)}
    result = compress(proto, {"passes": [options]})
    assert proto.SerializeToString() == before  # the caller's proto untouched
    assert [layer.name for layer in result.passes[0].layers] == ["W"]
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    ref, got = h.run(proto, feed)[0], h.run(out, feed)[0]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.02


def test_a_file_with_a_sparse_initializer_loads(tmp_path):
    from onnxcompress.model import load_model

    path = tmp_path / "sparse.onnx"
    onnx.save(sparse_model(False), path)
    model = load_model(path)
    assert model.graph.initializers["W"].const_value.numpy().shape == (64, 48)
