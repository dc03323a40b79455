"""Latency prices per op type and shape: the micro model cut around one layer, its cache key (the
graph onnxruntime runs, so folded decodes tie with float), and the latency objective end to end.
No assertion depends on a timing's value."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxcompress.activations import iter_intermediates
from onnxcompress.auto import search
from onnxcompress.auto.latency import activation_inputs, consumer, layer_latencies, micro_model, op_latency
from onnxcompress.auto.plan import Plan
from onnxcompress.cache import cache_dir
from onnxcompress.data import feed_source
from onnxcompress.model import load_model, to_proto
from onnxcompress.passes._folding import fold_batchnorm
from onnxcompress.pipeline import Pipeline
from onnxcompress.weights import WeightIndex
from tests.auto._common import CALIB, EVAL, MODELS

ROOT = Path(__file__).resolve().parents[2]
RESNET = ROOT / "tests/assets/resnet_digits.onnx"
LAYER = "layer1.conv1.weight"


@pytest.fixture(scope="module")
def resnet() -> tuple:
    model = load_model(RESNET)
    fold_batchnorm(model)  # as auto mode's pricing base
    labels = [w.label for w in WeightIndex.build(model)]
    feed = dict(next(iter(feed_source(str(RESNET).replace(".onnx", "_calib.npz"), model))))
    node = next(w for w in WeightIndex.build(model) if w.label == LAYER).uses[0].node.name
    base = to_proto(model)
    names = activation_inputs(base, consumer(base, node))
    acts = next(iter_intermediates(model, names, [feed]))
    return model, labels, node, acts


def _option(model: object, labels: list[str], name: str, objective: str = "size") -> onnx.ModelProto:
    recipe = Plan({LAYER: name}).to_recipe(labels, objective=objective)
    return to_proto(Pipeline.from_recipe(recipe).run(model, calibration=str(CALIB).replace(
        "models/digits_calib", "tests/assets/resnet_digits_calib")).model)


def test_micro_model_is_the_layer_and_its_decode(resnet: tuple) -> None:
    model, labels, node, acts = resnet
    proto = _option(model, labels, "kmeans3")
    micro = micro_model(proto, consumer(proto, node), acts)
    onnx.checker.check_model(micro, full_check=True)
    ops = [n.op_type for n in micro.graph.node]
    assert ops[-1] == "Conv" and "Gather" in ops and len(micro.graph.input) == 1
    # numbers: the micro model computes what the full model computes at that node
    session = ort.InferenceSession(micro.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, dict(acts))[0]
    full = next(iter_intermediates(load_model(proto), [consumer(proto, node).output[0]],
                                   [{"image": next(iter(feed_source(str(RESNET).replace(
                                       ".onnx", "_calib.npz"), model)))["image"]}]))
    np.testing.assert_allclose(got, next(iter(full.values())), rtol=1e-5, atol=1e-5)


def test_folded_decodes_share_the_float_price_and_int8_dequantize_does_not(resnet: tuple) -> None:
    model, labels, node, acts = resnet
    base = to_proto(model)
    float_s = layer_latencies(base, {LAYER: node}, acts)[LAYER]
    entries = json.loads((cache_dir() / "decisions.json").read_text())
    # onnxruntime folds these decodes at load: the same graph (int8 is written folded unless the
    # objective is memory)
    for name in ("kmeans3", "fp16", "int8"):
        assert layer_latencies(_option(model, labels, name), {LAYER: node}, acts)[LAYER] == float_s
    assert json.loads((cache_dir() / "decisions.json").read_text()) == entries  # no new timing
    # under the memory objective int8 stays a DequantizeLinear onnxruntime runs every call
    int8 = layer_latencies(_option(model, labels, "int8", "memory"), {LAYER: node}, acts)[LAYER]
    assert int8 > 0 and len(json.loads((cache_dir() / "decisions.json").read_text())) == len(entries) + 1


def test_op_latency_of_an_unrunnable_model_is_none() -> None:
    graph = onnx.parser.parse_graph("g (float[2] x) => (float[2] y) { y = Custom.Op(x) }")
    micro = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17),
                                                         onnx.helper.make_opsetid("Custom", 1)])
    assert op_latency(micro, {"x": np.zeros(2, np.float32)}) is None


def test_latency_objective_search_meets_target() -> None:
    model = MODELS / "digits_cnn.onnx"
    found = search(model, str(CALIB), target="top1>=0.99", objective="latency", validate_data=str(EVAL))
    assert found.met and found.objective == "latency"
    assert found.front and all(p["objective"] > 0 for p in found.front)
    assert {row["layer"] for row in found.layers} <= {w.label for w in WeightIndex.build(load_model(model))}
    result = Pipeline.from_recipe(found.recipe).run(model, calibration=str(CALIB))
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    with np.load(EVAL) as d:
        x = d["image"][:64]
    a = np.concatenate([session.run(None, {"image": x[i:i + 1]})[0] for i in range(len(x))])
    b = np.concatenate([ref.run(None, {"image": x[i:i + 1]})[0] for i in range(len(x))])
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.95
