"""Long exporter names written as hashes (graph/names.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper as oh

from onnxcompress.graph.names import MARKER_KEY, hashed, shorten_names
from onnxcompress.model import load_model, to_proto
from onnxcompress.validation.layers import compare_layers

SCOPE = "functional_1/time_distributed_9_1/dense_{}/MatMul_{}:0"  # tf2onnx's kind of name


def _model(scope: str = SCOPE, width: int = 8) -> onnx.ModelProto:
    """x [N, 8] -> 6 MatMul + Relu layers with names like ``scope``, y."""
    r = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(6):
        w, mm, act = f"w{i}", scope.format(i, "mm"), scope.format(i, "relu")
        inits.append(onnx.numpy_helper.from_array(r.standard_normal((width, width)).astype(np.float32), w))
        nodes += [oh.make_node("MatMul", [prev, w], [mm], name=mm + "_node"),
                  oh.make_node("Relu", [mm], [act if i < 5 else "y"], name=act + "_node")]
        prev = act
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", width])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", width])], inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_long_intermediate_names_become_hashes_and_the_model_computes_the_same():
    """batch 8's Thai segmenter (tf2onnx): 215 KB of names in a 1.22 MB int8 file, 3.26x on a
    model of 94% weights; hashed, 3.72x."""
    model = load_model(_model())
    saved = shorten_names(model)
    assert saved > 0 and model.metadata_props[MARKER_KEY]
    proto = to_proto(model)
    names = {v for n in proto.graph.node for v in n.output}
    assert hashed(SCOPE.format(0, "mm")) in names and SCOPE.format(0, "mm") not in names
    assert {n.name for n in proto.graph.node} == {hashed(n.name) for n in _model().graph.node}
    # graph inputs and outputs and the weights keep their names
    assert [i.name for i in proto.graph.input] == ["x"] and [o.name for o in proto.graph.output] == ["y"]
    assert {t.name for t in proto.graph.initializer} == {f"w{i}" for i in range(6)}
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_array_equal(_run(proto, x), _run(_model(), x))
    assert hashed("a/b:0") == hashed("a/b:0") != hashed("a/b:1") and len(hashed("a/b:0")) == 9


def test_an_initializer_named_by_joined_scopes_is_hashed_a_weight_name_is_not():
    """tf2onnx's fused constants join every scope they came from (BodyPix's biases, 150 bytes
    written twice each: its k-means 8 file 3.71x -> 3.76x hashed)."""
    proto = _model()
    fused = ";".join(f"MobilenetV1/Conv2d_{i}/BatchNorm/batchnorm_1/add_1" for i in range(3))
    b = onnx.numpy_helper.from_array(np.ones(8, np.float32), fused)
    proto.graph.initializer.append(b)
    first = proto.graph.node[0]
    proto.graph.node.insert(1, oh.make_node("Add", [first.output[0], fused], ["biased"]))
    proto.graph.node[2].input[0] = "biased"
    model = load_model(onnx.ModelProto.FromString(proto.SerializeToString()))  # (renames in place)
    assert shorten_names(model) > 0
    out = to_proto(model)
    assert {t.name for t in out.graph.initializer} == {f"w{i}" for i in range(6)} | {hashed(fused)}
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_array_equal(_run(out, x), _run(proto, x))


def test_short_names_and_names_small_next_to_the_weights_stay():
    short = load_model(_model(scope="d{}{}"))
    assert shorten_names(short) == 0 and MARKER_KEY not in short.metadata_props
    few = load_model(_model(scope="abcdefghijkl{}{}"))  # ~100 bytes to save: not worth the marker
    assert shorten_names(few) == 0 and MARKER_KEY not in few.metadata_props
    heavy = load_model(_model(width=256))  # 1.5 MB of weights: a few hundred bytes of names stay
    assert shorten_names(heavy) == 0


def test_layer_wise_comparison_finds_the_hashed_tensors():
    original = load_model(_model())
    compressed = load_model(_model())
    shorten_names(compressed)
    feeds = [{"x": np.random.default_rng(2).standard_normal((2, 8)).astype(np.float32)}]
    report = compare_layers(original, compressed, feeds)
    assert report.only_original == 0 and len(report.layers) == 12  # y and the 11 hashed ones
    assert all(s.rel_l2 == 0.0 for s in report.layers)
    assert {s.name for s in report.layers} >= {SCOPE.format(0, "mm")}  # reported by the original's names


def test_compress_writes_hashes_and_keep_debug_info_keeps_the_names(tmp_path):
    from onnxcompress.cli import main

    onnx.save(_model(), tmp_path / "m.onnx")
    assert main(["compress", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "a.onnx"), "--kmeans", "8"]) == 0
    assert main(["compress", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "b.onnx"), "--kmeans", "8",
                 "--keep-debug-info"]) == 0
    hashed_out = {v for n in onnx.load(tmp_path / "a.onnx").graph.node for v in n.output}
    kept_out = {v for n in onnx.load(tmp_path / "b.onnx").graph.node for v in n.output}
    assert SCOPE.format(0, "mm") in kept_out and SCOPE.format(0, "mm") not in hashed_out
    assert (tmp_path / "a.onnx").stat().st_size < (tmp_path / "b.onnx").stat().st_size


def test_names_stay_where_hashes_would_grow_the_gzipped_file_more_than_they_shrink_it():
    """skl2onnx's names (``variable_sample12_output0``) repeat and deflate well, where a hash's 40
    random bits do not: batch 40's IsolationForest (names and tree attributes, no weights) came out
    1.10x smaller but 0.79x gzipped. A network's names are hashed as before (the tests above)."""
    import gzip

    nodes, prev = [], "x"
    for i in range(400):
        out = f"variable_sample{i}_output0" if i < 399 else "y"
        nodes.append(oh.make_node("Neg", [prev], [out], name=f"tree_ensemble_regressor_node_sample{i}"))
        prev = out
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 2])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 2])])
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    hashed_proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for node in hashed_proto.graph.node:
        node.name = hashed(node.name)
        node.input[:] = [n if n == "x" else hashed(n) for n in node.input]
        node.output[:] = [n if n == "y" else hashed(n) for n in node.output]
    size = len(proto.SerializeToString())
    gz = len(gzip.compress(proto.SerializeToString(), 6))
    raw_hashed, gz_hashed = len(hashed_proto.SerializeToString()), len(gzip.compress(hashed_proto.SerializeToString(), 6))
    assert 1 - raw_hashed / size < gz_hashed / gz - 1  # hashes: shrinks less than its gzip grows
    model = load_model(proto)
    assert shorten_names(model) == 0 and MARKER_KEY not in model.metadata_props
    assert [n.name for n in model.graph][:2] == ["tree_ensemble_regressor_node_sample0",
                                                 "tree_ensemble_regressor_node_sample1"]


def test_a_dry_run_says_what_hashing_saves_and_renames_nothing():
    model = load_model(_model())
    before = [v.name for n in model.graph for v in n.outputs] + [n.name for n in model.graph]
    saved = shorten_names(model, dry_run=True)
    assert saved > 0 and MARKER_KEY not in model.metadata_props
    assert [v.name for n in model.graph for v in n.outputs] + [n.name for n in model.graph] == before
    assert shorten_names(model) == saved
