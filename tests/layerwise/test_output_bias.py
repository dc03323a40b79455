"""The last layers' empirical bias correction: which layers are the last ones, and their output
means matched to the teacher's through onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from onnxcompress.layerwise import output_bias
from onnxcompress.model import copy_model, load_model, to_proto
from onnxcompress.weights import WeightIndex
from tests import helpers as h

MODELS = Path(__file__).resolve().parents[2] / "models"


def _layers(model):
    return [w for w in WeightIndex.build(model) if w.role == "weight"]


def test_reach_and_sinks_of_a_chain():
    model = load_model(MODELS / "digits_mlp.onnx")
    layers = _layers(model)
    assert len(layers) == 3
    downstream, upstream = output_bias.reach(layers)
    # a chain: the first is fed by none of the others, the last feeds none
    assert downstream == {w.label for w in layers[1:]}
    assert upstream == {w.label for w in layers[:-1]}
    assert output_bias.reach(layers[1:2]) == (set(), set())
    last = layers[-1].uses[0].node
    site, axis = output_bias.bias_site(last)
    assert output_bias.sink_sites(layers) == {site.name: axis}
    # every layer alone is its own sink
    assert len(output_bias.sink_sites(layers[:1])) == 1


def _feeds(n: int = 6, width: int = 16, seed: int = 1) -> list[dict[str, np.ndarray]]:
    r = h.rng(seed)
    return [{"x": (r.standard_normal((4, width)) + 0.5).astype(np.float32)} for _ in range(n)]


def test_mean_shift_moves_the_last_layers_output_means_to_the_teachers():
    teacher = load_model(h.mlp((16, 32, 10)))
    student = copy_model(teacher)
    layers = _layers(student)
    r = h.rng(2)
    for w in layers:  # both layers change, so the last one's input means moved too
        w.set_numpy(w.numpy() + 0.2 * r.standard_normal(w.numpy().shape).astype(np.float32))
    sites = output_bias.sink_sites(_layers(student))
    assert list(sites) == ["y"]  # the MatMul's Add writes the graph output
    feeds = _feeds()
    deltas = output_bias.mean_shift(teacher, student, sites, feeds)
    assert np.abs(deltas["y"]).max() > 1e-2
    assert output_bias.apply_shift(student, deltas) == 1
    proto = to_proto(student)
    onnx.checker.check_model(proto)
    ref = np.concatenate([h.run(to_proto(teacher), f)[0] for f in feeds])
    out = np.concatenate([h.run(proto, f)[0] for f in feeds])
    np.testing.assert_allclose(out.mean(axis=0), ref.mean(axis=0), atol=1e-4)
    assert not np.allclose(out, ref, atol=1e-3)  # only the means are matched


def test_a_conv_without_bias_gets_the_shift_as_its_bias():
    proto = h.cnn()
    for node in proto.graph.node:  # conv1 loses its bias input
        if node.name == "conv1":
            del node.input[2]
    teacher = load_model(proto)
    student = copy_model(teacher)
    conv1 = next(w for w in _layers(student) if w.uses[0].node.name == "conv1")
    conv1.set_numpy(conv1.numpy() * 1.3)
    sites = output_bias.sink_sites([conv1])
    assert sites == {"c1": 1}
    feeds = [{"x": h.rng(i).standard_normal((2, 3, 16, 16)).astype(np.float32)} for i in range(3)]
    deltas = output_bias.mean_shift(teacher, student, sites, feeds)
    assert deltas["c1"].shape == (16,)
    assert output_bias.apply_shift(student, deltas) == 1
    out = to_proto(student)
    onnx.checker.check_model(out)
    node = next(n for n in student.graph if n.name == "conv1")
    assert len(node.inputs) == 3 and node.inputs[2] is not None
    after = output_bias.mean_shift(teacher, student, sites, feeds)
    assert np.abs(after["c1"]).max() < 1e-4 * max(1.0, np.abs(deltas["c1"]).max())


def test_kmeans_reconstruct_judges_the_last_layers_bias_end_to_end():
    from onnxcompress.pipeline import compress

    calib = MODELS / "digits_calib.npz"
    result = compress(MODELS / "digits_cnn.onnx",
                      {"passes": [{"pass": "kmeans", "bits": 3, "reconstruct": True}]}, calibration=calib)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    report = result.passes[0].metrics["reconstruction"]
    ob = report["output_bias"]
    assert ob["layers"] == 1  # the classifier: every other layer feeds it
    assert ob["kept"] == (ob["after"] < ob["before"])
    end = report["end_to_end"]
    assert end["kept"] == "refit"
    # the refit model's score is the one with the correction when it was kept
    assert end["refit"] == (ob["after"] if ob["kept"] else ob["before"])
    data = np.load(MODELS / "digits_eval.npz")
    ref = h.run(MODELS / "digits_cnn.onnx", {"image": data["image"]})[0]
    ours = h.run(proto, {"image": data["image"]})[0]
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.99  # measured 0.9944
