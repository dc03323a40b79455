"""A classifier's ZipMap (skl2onnx's default) is set aside while the graph is compressed."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from onnxcompress import Pipeline, compress_file
from onnxcompress.graph.maps import DETACHED_MAPS, map_rows
from onnxcompress.model import load_model
from onnxcompress.passes import Quantize, WeightSharing, WeightSharingConfig
from onnxcompress.validation import compare_models


def _zipmap_classifier(classes: int = 3, features: int = 32, hidden: int = 64) -> onnx.ModelProto:
    """x [N, features] -> MLP -> Softmax -> ZipMap (output_probability, a list of maps) and
    ArgMax (output_label), as skl2onnx writes an MLPClassifier."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (features, hidden)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (hidden, classes)).astype(np.float32)
    maps = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
         helper.make_node("ArgMax", ["probabilities"], ["output_label"], axis=1, keepdims=0),
         helper.make_node("ZipMap", ["probabilities"], ["output_probability"], domain="ai.onnx.ml",
                          classlabels_int64s=list(range(classes)))],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, features])],
        [helper.make_tensor_value_info("output_label", TensorProto.INT64, [None]),
         helper.make_value_info("output_probability", maps)],
        [onnx.numpy_helper.from_array(w1, "w1"), onnx.numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15),
                                                   helper.make_opsetid("ai.onnx.ml", 1)])


def test_a_zipmap_is_set_aside_when_read(tmp_path):
    """batch 17's breast-cancer pipeline (skl2onnx's defaults) exited 2 on every configuration:
    onnx_ir reads no map type."""
    proto = _zipmap_classifier()
    before = proto.SerializeToString()
    model = load_model(proto)
    assert proto.SerializeToString() == before  # the caller's proto is not cut
    assert [v.name for v in model.graph.outputs] == ["output_label", "probabilities"]
    assert len(model.meta[DETACHED_MAPS]) == 1
    onnx.save(proto, str(tmp_path / "m.onnx"))
    read = load_model(tmp_path / "m.onnx")
    assert [v.name for v in read.graph.outputs] == ["output_label", "probabilities"]


def test_a_compressed_classifier_keeps_its_zipmap_output(tmp_path):
    src = tmp_path / "mlp.onnx"
    onnx.save(_zipmap_classifier(), str(src))
    rng = np.random.default_rng(1)
    data = [{"x": rng.normal(size=(4, 32)).astype(np.float32)} for _ in range(8)]
    for name, pipeline in (("int8", Pipeline([Quantize(mode="dynamic")])),
                           ("kmeans", Pipeline([WeightSharing(WeightSharingConfig(bits=8))]))):
        out = tmp_path / f"{name}.onnx"
        compress_file(src, out, pipeline)
        written = onnx.load(str(out))
        onnx.checker.check_model(written)
        assert [o.name for o in written.graph.output] == ["output_label", "output_probability"]
        assert written.graph.output[1].type.HasField("sequence_type")  # the maps, as they were
        assert sum(n.op_type == "ZipMap" for n in written.graph.node) == 1
        assert all(init.name != "w1" or init.data_type != TensorProto.FLOAT
                   for init in written.graph.initializer)  # compressed
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, data[0])
        assert isinstance(got[1], list) and sorted(got[1][0]) == [0, 1, 2]
        result = compare_models(src, out, data)
        assert result.passed, result.outputs
        assert result.output("output_probability").cosine > 0.999  # read as its rows


def test_map_rows_reads_a_list_of_maps_as_rows():
    rows = map_rows([{1: 0.25, 0: 0.75}, {0: 0.1, 1: 0.9}])
    assert rows.dtype == np.float32 and rows.tolist() == [[0.75, 0.25], [np.float32(0.1), np.float32(0.9)]]
    a = np.zeros(3)
    assert map_rows(a) is a


def test_auto_searches_a_classifier_behind_its_zipmap(tmp_path):
    """auto ran the file (with the ZipMap: a list of maps) for its references and the candidates
    as written (without): no output to hold, "target: cannot read ''"."""
    from onnxcompress.auto.search import search

    src = tmp_path / "mlp.onnx"
    onnx.save(_zipmap_classifier(), str(src))
    rng = np.random.default_rng(2)
    found = search(src, [{"x": rng.normal(size=(1, 32)).astype(np.float32)} for _ in range(24)])
    assert any(k.startswith("top1") for k in found.fidelity.values), found.fidelity.values
    assert found.fidelity.met


def test_the_python_api_writes_the_zipmap_back(tmp_path):
    """``oc.compress(...)`` then ``oc.save_model(result.model, path)``, as the README's API
    example: the written classifier has its map output where it was."""
    import onnxcompress as oc

    src = tmp_path / "mlp.onnx"
    onnx.save(_zipmap_classifier(), str(src))
    for model in (src, _zipmap_classifier(), oc.load_model(src)):
        result = oc.compress(model, [Quantize(mode="dynamic")])
        out = oc.save_model(result.model, tmp_path / "out.onnx", overwrite=True)
        written = onnx.load(str(out))
        assert [o.name for o in written.graph.output] == ["output_label", "output_probability"]
        onnx.checker.check_model(written)
