"""Activations inside If branches are observed through the branch each sample takes
(``graph.branches``): a merged decoder's layers all sit in its two branches, and every
statistics-using pass ran there without data ("19 weight(s) without activation statistics ...
in a subgraph")."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from onnxcompress.activations import iter_intermediates
from onnxcompress.graph.branches import branch_types, branch_values, expose_branch_values
from onnxcompress.layerwise.collection import Statistics
from onnxcompress.weights import WeightIndex
from tests import helpers as h
from tests.merged_decoder import merged_decoder, ragged_feeds


def test_branch_values_are_given_out_through_the_if():
    proto = merged_decoder()
    assert {"d_h", "p_h", "d_logits", "p_present"} <= branch_values(proto)
    edited = onnx.ModelProto()
    edited.CopyFrom(proto)
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    found = expose_branch_values(edited, ["d_h", "p_h", "d_logits"], branch_types(inferred))
    assert {(b.name, b.taken) for b in found} == {("d_h", True), ("p_h", False), ("d_logits", True)}
    for feed in ragged_feeds(4):
        want, got = h.run(proto, feed), h.run(edited, feed)
        for a, b in zip(want, got, strict=False):  # the model's own outputs first, unchanged
            assert np.array_equal(a, b)
        given = dict(zip([o.name for o in edited.graph.output], got, strict=True))
        for b in found:
            taken = bool(feed["use_cache_branch"][0]) == b.taken
            assert given[b.output].size > 0 if taken else given[b.output].size == 0


def test_each_sample_gives_the_values_of_its_branch():
    model = ir.serde.deserialize_model(merged_decoder())
    feeds = ragged_feeds(6)
    got = list(iter_intermediates(model, ["d_h", "p_h"], feeds))
    assert len(got) == len(feeds)
    for feed, values in zip(feeds, got, strict=True):
        mine, other = ("d_h", "p_h") if feed["use_cache_branch"][0] else ("p_h", "d_h")
        assert set(values) == {mine}
        assert values[mine].shape == (1, feed["ids"].shape[1], 64)


def _computed_condition() -> onnx.ModelProto:
    """y = x @ W1 when sum(x) > 0 else x @ W2: the condition is computed, not an input."""
    r = np.random.default_rng(0)
    branch = {}
    for side, w in (("then", "w1"), ("else", "w2")):
        branch[side] = helper.make_graph(
            [helper.make_node("MatMul", ["x", w], [f"{side}_y"], name=f"{side}_fc")], side, [],
            [helper.make_tensor_value_info(f"{side}_y", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["positive"]),
         helper.make_node("If", ["positive"], ["y"], then_branch=branch["then"], else_branch=branch["else"])],
        "computed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(r.normal(size=(8, 8)).astype(np.float32), "w1"),
         numpy_helper.from_array(r.normal(size=(8, 8)).astype(np.float32), "w2"),
         numpy_helper.from_array(np.array(0, np.float32), "zero")])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_computed_condition_is_computed_first():
    proto = _computed_condition()
    model = ir.serde.deserialize_model(proto)
    feeds = [{"x": np.full((1, 8), v, np.float32)} for v in (1.0, -1.0, 2.0)]
    got = list(iter_intermediates(model, ["then_y", "else_y"], feeds))
    assert [set(v) for v in got] == [{"then_y"}, {"else_y"}, {"then_y"}]
    assert np.allclose(got[1]["else_y"], h.run(proto, feeds[1])[0])


def test_moments_of_a_weight_read_in_the_branches():
    model = ir.serde.deserialize_model(merged_decoder())
    w1 = [w for w in WeightIndex.build(model) if w.label == "w1"]
    moments = Statistics(ragged_feeds(8)).channel_moments(model, w1)
    mean, square = moments["w1"]
    assert mean.shape == (64,) and (square > 0).all()


def test_a_branch_edit_onnxruntime_refuses_leaves_the_main_graph_values(monkeypatch):
    import onnxcompress.activations as activations

    def broken(proto, names, types):  # an If output no branch gives: the model does not load
        proto.graph.node[0].output.append("nowhere")
        proto.graph.output.append(helper.make_tensor_value_info("nowhere", TensorProto.FLOAT, None))
        return expose_branch_values(proto, names, types)

    monkeypatch.setattr(activations, "expose_branch_values", broken)
    model = ir.serde.deserialize_model(merged_decoder())
    got = list(iter_intermediates(model, ["logits", "d_h"], ragged_feeds(3)))
    assert [set(v) for v in got] == [{"logits"}] * 3


def test_moments_of_a_weight_held_inside_a_branch():
    # a weight whose initializer is the branch's own (scope "If/then_branch/") was never asked for
    r = np.random.default_rng(1)
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t_h"]),
                              helper.make_node("MatMul", ["t_h", "own"], ["t_y"])], "then", [],
                             [helper.make_tensor_value_info("t_y", TensorProto.FLOAT, None)],
                             [numpy_helper.from_array(r.normal(size=(8, 8)).astype(np.float32), "own")])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e_y"])], "else", [],
                              [helper.make_tensor_value_info("e_y", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "own",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    own = [w for w in WeightIndex.build(model) if w.name == "own"]
    assert own and own[0].scope
    feeds = [{"x": r.normal(size=(1, 8)).astype(np.float32), "c": np.array([i % 2 == 0])} for i in range(6)]
    mean, square = Statistics(feeds).channel_moments(model, own)[own[0].label]
    taken = np.maximum(np.concatenate([f["x"] for f in feeds if f["c"][0]]), 0)  # its samples only
    assert np.allclose(mean, taken.mean(axis=0), atol=1e-6)
