from __future__ import annotations

import onnx
import pytest

from onnxcompress.validation import compare_models
from tests import helpers as h
from tests.validation._models import perturbed, qdq_copy


@pytest.mark.parametrize(
    "model, weight, tensor, node",
    [
        (h.mlp((16, 32, 32, 10)), "fc1.weight", "mm1", "fc1/MatMul"),
        (h.mlp((16, 32, 32, 10)), "fc0.weight", "mm0", "fc0/MatMul"),
        (h.cnn(), "conv1.weight", "c1", "conv1"),
        (h.cnn(), "fc.weight", "y", "fc"),
    ],
)
def test_perturbed_layer_is_named_first(model, weight, tensor, node):
    report = compare_models(model, perturbed(model, weight, scale=0.05), layers=True, samples=4)
    layers = report.layers
    assert layers.jumps[0].name == tensor and layers.jumps[0].node == node
    assert layers.first_divergent.name == tensor
    assert [s.index for s in layers.layers] == sorted(s.index for s in layers.layers)  # topological
    before = [s for s in layers.layers if s.index < layers.jumps[0].index]
    assert all(s.rel_l2 == 0 for s in before)
    text = report.render()
    assert f"1. {tensor} (" in text


def test_identical_models_have_no_jumps():
    model = h.cnn()
    layers = compare_models(model, model, layers=True, samples=2).layers
    assert layers.jumps == [] and layers.first_divergent is None
    # activations only: weights, BN constants and the model input are not "layers"
    assert [s.name for s in layers.layers] == ["c0", "b0", "r0", "c1", "b1", "r1", "gap", "flat", "y"]


def test_quantized_activations_are_compared_after_their_q_dq_pair():
    model = h.mlp((16, 32, 32, 10))
    layers = compare_models(model, qdq_copy(model), layers=True, samples=4).layers
    names = [s.name for s in layers.layers]
    assert "h0_dq" not in names and "h0_q" not in names and layers.only_compressed == 0
    h0 = next(s for s in layers.layers if s.name == "h0")
    assert h0.compared_as == "h0_dq" and layers.jumps[0].name == "h0"  # where the error enters
    assert all(s.rel_l2 == 0 for s in layers.layers if s.index < h0.index)


def test_relu_folded_into_quantize_linear_is_not_a_false_jump():
    """onnxruntime's QDQ quantizer drops a Relu before a uint8 Q and reuses its name for the tensor
    before it: comparing the bare name would report pre-activation values as a 100% error."""
    model = h.mlp((16, 32, 32, 10))
    report = compare_models(model, qdq_copy(model, fold_relu=True), layers=True, samples=8)
    h0 = next(s for s in report.layers.layers if s.name == "h0")
    assert h0.compared_as == "h0_dq" and h0.rel_l2 < 0.05
    assert report.output("y").cosine > 0.999
    assert "h0 (Relu 'relu0') [after Q/DQ]" in report.render()


def test_memory_budget_splits_the_tensors_into_groups_with_the_same_results():
    model = h.cnn()
    other = perturbed(model, "conv1.weight", scale=0.05)
    whole = compare_models(model, other, layers=True, samples=3).layers
    split = compare_models(model, other, layers=True, samples=3, layers_memory=8 * 1024).layers
    assert any("groups" in n for n in split.notes) and not whole.notes
    assert split.samples == whole.samples == 3
    assert [(s.name, s.rel_l2) for s in split.layers] == [(s.name, s.rel_l2) for s in whole.layers]


def test_renamed_model_says_why_nothing_is_compared():
    model = h.mlp((16, 32, 10))
    renamed = onnx.ModelProto.FromString(model.SerializeToString())
    for node in renamed.graph.node:
        node.input[:] = [f"r_{n}" if n not in ("x",) and "." not in n else n for n in node.input]
        node.output[:] = [f"r_{n}" if n != "y" else n for n in node.output]
    layers = compare_models(model, renamed, layers=True, samples=2).layers
    assert [s.name for s in layers.layers] == ["y"] and layers.only_compressed == layers.only_original == 4
    renamed.graph.node[-1].output[0] = "r_y"
    renamed.graph.output[0].name = "r_y"
    layers = compare_models(model, renamed, layers=True, samples=2).layers
    assert layers.layers == [] and "renamed" in layers.notes[0]


def test_a_layer_inside_an_if_branch_is_named():
    # the values inside If branches were "not compared one by one": a merged decoder (every layer
    # in the branches of If(use_cache_branch)) had nothing to localise
    from tests.merged_decoder import merged_decoder, ragged_feeds

    model = merged_decoder()
    report = compare_models(model, perturbed(model, "w1", scale=0.05), data=ragged_feeds(6), layers=True)
    layers = report.layers
    names = {s.name for s in layers.layers}
    assert {"d_h", "p_h", "d_logits", "p_logits"} <= names
    assert layers.jumps[0].name in ("d_h", "p_h") and layers.jumps[0].node in ("d_fc", "p_fc")
    assert layers.first_divergent.name in ("d_h", "p_h")
    assert not any("not compared one by one" in n for n in layers.notes)
