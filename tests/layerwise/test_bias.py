"""The one bias correction (pruning and k-means): the layer's mean output over the data is kept."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from onnxcompress import WeightIndex, load_model
from onnxcompress.activations import input_channel_moments
from onnxcompress.layerwise.bias import bias_delta, correct_bias
from onnxcompress.layerwise.channels import per_element
from onnxcompress.model import to_proto
from tests import helpers as h


def _conv(group: int, bias: bool):
    cin, cout = 4, 6
    w = h.rng(0).standard_normal((cout, cin // group, 3, 3)).astype(np.float32)
    inputs = ["x", "w", "b"] if bias else ["x", "w"]
    graph = oh.make_graph(
        [oh.make_node("Conv", inputs, ["y"], group=group)], "g",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", cin, 8, 8])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 6, 6, 6])],
    )
    arrays = {"w": w}
    if bias:
        arrays["b"] = (0.1 * h.rng(1).standard_normal(cout)).astype(np.float32)
    return h.attach_initializers(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)]), arrays), w


def _feeds():
    r = h.rng(2)
    # Channels with different means, so the correction is not a constant.
    offsets = np.arange(1, 5).reshape(1, 4, 1, 1)
    return [{"x": (0.3 * r.standard_normal((2, 4, 8, 8)) + offsets).astype(np.float32)} for _ in range(4)]


@pytest.mark.parametrize(("group", "bias"), [(1, True), (2, True), (1, False)])
def test_corrected_layer_keeps_its_mean_output(group, bias):
    proto, w = _conv(group, bias)
    model = load_model(proto)
    feeds = _feeds()
    weight = next(x for x in WeightIndex.build(model) if x.name == "w")
    mean = input_channel_moments(model, [weight], feeds)["w"][0]
    pruned = np.where(np.abs(w) > 0.8, w, 0).astype(np.float32)
    weight.set_numpy(pruned)
    assert correct_bias(weight, w - pruned, mean, create=True)
    out = to_proto(model)
    onnx.checker.check_model(out)
    assert len(out.graph.node[0].input) == 3  # a bias-less Conv got one
    before = np.mean([h.run(proto, f)[0].mean(axis=(0, 2, 3)) for f in feeds], axis=0)
    after = np.mean([h.run(out, f)[0].mean(axis=(0, 2, 3)) for f in feeds], axis=0)
    uncorrected = _conv(group, bias)[0]
    uncorrected.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(pruned, "w"))
    drift = np.mean([h.run(uncorrected, f)[0].mean(axis=(0, 2, 3)) for f in feeds], axis=0)
    # Kept up to the noise of where each window sits; without the correction it drifts.
    assert np.abs(after - before).max() < 0.05 * np.abs(drift - before).max()


def test_grouped_delta_matches_a_numpy_formula():
    proto, w = _conv(2, True)
    weight = next(x for x in WeightIndex.build(load_model(proto)) if x.name == "w")
    removed = h.rng(3).standard_normal(w.shape)
    mean = h.rng(4).standard_normal(4)
    # Output channel o (group o // 3) reads input channels 2g, 2g+1.
    want = np.array([sum(removed[o, i].sum() * mean[2 * (o // 3) + i] for i in range(2)) for o in range(6)])
    np.testing.assert_allclose(bias_delta(weight, removed, mean), want, rtol=1e-12)
    assert bias_delta(weight, removed, mean, grouped=False) is None


def test_per_element_gives_each_weight_its_input_channel():
    proto, w = _conv(2, True)
    weight = next(x for x in WeightIndex.build(load_model(proto)) if x.name == "w")
    values = np.arange(4.0)
    spread = per_element(weight, w.shape, values)
    # [6, 2, 3, 3]: outputs 0-2 read channels 0, 1; outputs 3-5 read channels 2, 3.
    assert spread.shape == w.shape
    np.testing.assert_array_equal(spread[:, :, 0, 0], [[0, 1]] * 3 + [[2, 3]] * 3)
    np.testing.assert_array_equal(per_element(weight, w.shape, values[:2])[4, :, 1, 2], [0, 1])
    assert per_element(weight, w.shape, np.arange(3.0)) is None
