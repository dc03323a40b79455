from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from onnxcompress import ModelLoadError, SaveError, UnsafeExternalDataError, load_model, save_model
from onnxcompress.model import to_proto
from onnxcompress.weights import WeightIndex
from tests import helpers as h


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(tmp_path / "nope.onnx")


def test_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="is a directory"):
        load_model(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "e.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load_model(tmp_path / "e.onnx")


@pytest.mark.parametrize("cut", [0.3, 0.7, 0.95])
def test_truncated_file(tmp_path, cut):
    data = h.cnn().SerializeToString()
    path = tmp_path / "t.onnx"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ModelLoadError):
        load_model(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "g.onnx"
    path.write_bytes(b"this is not a protobuf at all \x00\xff" * 10)
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        load_model(path)


def test_tensor_data_shape_mismatch(tmp_path):
    model = h.mlp()
    t = model.graph.initializer[0]
    t.raw_data = t.raw_data[:-8]
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelLoadError, match=f"tensor '{t.name}' declares shape"):
        load_model(path)


def test_external_data_loads_and_is_indexed(tmp_path):
    path = h.save_with_external_data(h.mlp(), tmp_path / "m.onnx")
    model = load_model(path)
    weights = list(WeightIndex.build(model))
    assert weights and all(w.is_external for w in weights)
    original = {t.name: onnx.numpy_helper.to_array(t) for t in h.mlp().graph.initializer}
    for w in weights:
        np.testing.assert_array_equal(w.numpy(), original[w.name])


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../outside.bin"])
def test_external_data_outside_folder_is_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 4096)
    path = h.save_with_external_data(h.mlp(), folder / "m.onnx")
    proto = onnx.load(str(path), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(UnsafeExternalDataError):
        load_model(path)


def test_external_data_symlink_out_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    path = h.save_with_external_data(h.mlp(), folder / "m.onnx")
    real = tmp_path / "elsewhere.data"
    os.replace(folder / "m.onnx.data", real)
    os.symlink(real, folder / "m.onnx.data")
    with pytest.raises(UnsafeExternalDataError, match="outside"):
        load_model(path)


def test_missing_external_file(tmp_path):
    path = h.save_with_external_data(h.mlp(), tmp_path / "m.onnx")
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        load_model(path)


def test_truncated_external_file(tmp_path):
    path = h.save_with_external_data(h.mlp(), tmp_path / "m.onnx")
    data = tmp_path / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="too short|length"):
        load_model(path)


def test_save_refuses_to_overwrite_input(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(h.mlp().SerializeToString())
    before = path.read_bytes()
    with pytest.raises(SaveError, match="refusing to overwrite"):
        save_model(load_model(path), path, protect=(path,))
    assert path.read_bytes() == before
    save_model(load_model(path), path, protect=(path,), overwrite=True)


def test_save_into_missing_folder_leaves_nothing(tmp_path):
    with pytest.raises(SaveError, match="does not exist"):
        save_model(load_model(h.mlp()), tmp_path / "no" / "m.onnx")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_save_into_readonly_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(SaveError):
            save_model(load_model(h.mlp()), ro / "m.onnx")
    finally:
        ro.chmod(0o700)


def test_save_failure_leaves_no_partial_output(tmp_path, monkeypatch):
    import onnxcompress.model as model_module

    def boom(model, path, *maps):
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_module, "_save_inline", boom)
    out = tmp_path / "out.onnx"
    with pytest.raises(SaveError, match="No space left"):
        save_model(load_model(h.mlp()), out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_large_models_are_saved_with_external_data(tmp_path, monkeypatch):
    import onnxcompress.model as model_module

    monkeypatch.setattr(model_module, "EXTERNAL_DATA_THRESHOLD", 1000)
    out = save_model(load_model(h.mlp((64, 64, 10))), tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").exists()
    reloaded = load_model(out)
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(h.run(str(out), {"x": x})[0], h.run(h.mlp((64, 64, 10)), {"x": x})[0])
    assert all(w.is_external for w in WeightIndex.build(reloaded) if w.nbytes >= 1024)


def test_old_ir_initializers_as_inputs_are_normalized():
    proto = h.mlp(opset=7)
    proto.ir_version = 3
    for t in proto.graph.initializer:
        proto.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    model = load_model(proto)
    assert [v.name for v in model.graph.inputs] == ["x"]
    assert len(WeightIndex.build(model)) == 4
    onnx.checker.check_model(to_proto(model))


def test_in_memory_proto_round_trip(tmp_path):
    proto = h.cnn()
    out = save_model(load_model(proto), tmp_path / "c.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(h.run(str(out), {"x": x})[0], h.run(proto, {"x": x})[0], rtol=1e-6)


def test_identity_of_a_constant_is_bypassed_so_the_weight_is_seen_by_both_layers():
    # What the TorchScript exporter writes for two layers with equal weights (deep copies,
    # tied weights): the second MatMul reads Identity(first weight).
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["": 17]>
        g (float[N, 4] x) => (float[N, 4] y, float[4, 4] w_out) {
            w_copy = Identity(w)
            w_out = Identity(w)
            h = MatMul(x, w)
            y = MatMul(h, w_copy)
        }
    """)
    h.attach_initializers(proto, {"w": h.rng().standard_normal((4, 4)).astype(np.float32)})
    model = load_model(proto)
    assert [n.op_type for n in model.graph] == ["Identity", "MatMul", "MatMul"]  # output kept
    (w,) = WeightIndex.build(model).select(roles={"weight"})
    assert sorted(u.node.op_type for u in w.uses if u.slot.role == "weight") == ["MatMul", "MatMul"]
    x = h.rng(1).standard_normal((2, 4)).astype(np.float32)
    for a, b in zip(h.run(to_proto(model), {"x": x}), h.run(proto, {"x": x}), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_name_unnamed_nodes_gives_unique_names_and_keeps_given_ones():
    from onnxcompress.model import name_unnamed_nodes

    graph = onnx.parser.parse_graph(
        "g (float[2] x) => (float[2] y) { a = Relu(x) \n b = Relu(a) \n y = Relu(b) }")
    graph.node[1].name = "Relu_0"  # a given name that the generated one would repeat
    model = load_model(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]))
    assert name_unnamed_nodes(model) == 2
    names = [n.name for n in model.graph]
    assert names[1] == "Relu_0" and len(set(names)) == 3 and all(names)
    assert name_unnamed_nodes(model) == 0


def test_a_map_typed_input_is_refused_with_its_name_and_a_hint(tmp_path):
    # onnx_ir reads no map type: a ZipMap output is set aside (graph/maps.py), any other map is
    # refused by name (the error said only "Error calling _deserialize_graph with: 4cd32fb7...")
    from onnx import TensorProto, helper

    probs = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["m"], ["out"])],
        "maps", [helper.make_value_info("m", probs)], [helper.make_value_info("out", probs)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    path = tmp_path / "maps.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelLoadError, match=r"m, out: a map-typed value\). Hint: .*zipmap"):
        load_model(path)
