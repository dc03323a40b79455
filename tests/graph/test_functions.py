"""Model-local functions called with weights are inlined so the passes reach the weights
(``graph.functions.inline_weight_functions``): inside a function a weight is a formal input, and
a model wrapping each layer in one came out 1.00x under every pass."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from onnxcompress.model import to_proto
from onnxcompress.pipeline import compress
from tests import helpers as h

F = onnx.TensorProto.FLOAT


def layered(weights_as_arguments: bool = True) -> onnx.ModelProto:
    """Three Linear+ReLU layers, each a call of the model-local function ``local.Lin``; with
    ``weights_as_arguments`` False the function only applies a ReLU (no weight goes in)."""
    r = h.rng(0)
    lin = oh.make_function("local", "Lin", ["x", "w", "b"], ["y"], [
        oh.make_node("MatMul", ["x", "w"], ["m"]), oh.make_node("Add", ["m", "b"], ["a"]),
        oh.make_node("Relu", ["a"], ["y"])], opset_imports=[oh.make_opsetid("", 17)])
    act = oh.make_function("local", "Act", ["x"], ["y"], [oh.make_node("Relu", ["x"], ["y"])],
                           opset_imports=[oh.make_opsetid("", 17)])
    arrays, nodes, prev = {}, [], "x"
    for i, (a, b) in enumerate([(64, 128), (128, 128), (128, 10)]):
        arrays[f"w{i}"] = (r.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        arrays[f"b{i}"] = (0.1 * r.standard_normal(b)).astype(np.float32)
        if weights_as_arguments:
            nodes.append(oh.make_node("Lin", [prev, f"w{i}", f"b{i}"], [f"h{i}"], domain="local"))
        else:
            nodes += [oh.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                      oh.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                      oh.make_node("Act", [f"a{i}"], [f"h{i}"], domain="local")]
        prev = f"h{i}"
    graph = oh.make_graph(nodes, "layered", [oh.make_tensor_value_info("x", F, ["N", 64])],
                          [oh.make_tensor_value_info(prev, F, ["N", 10])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("local", 1)],
                          functions=[lin, act])
    return h.attach_initializers(model, arrays)


@pytest.mark.parametrize("options", [{"pass": "quantize", "mode": "dynamic", "speed_check": False},
                                     {"pass": "kmeans", "bits": 8}])
def test_weights_passed_to_a_local_function_are_compressed(options):
    proto = layered()
    feed = {"x": h.rng(1).standard_normal((4, 64)).astype(np.float32)}
    result = compress(proto, {"passes": [options]})
    assert {layer.name for layer in result.passes[0].layers} >= {"w0", "w1", "w2"}
    assert any("inlined 3 call(s) of model-local functions" in n for n in result.notes)
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    assert not [f for f in out.functions if f.name == "Lin"]  # inlined, not left behind unused
    assert len(out.SerializeToString()) * 3 < len(proto.SerializeToString())
    ref, got = h.run(proto, feed)[0], h.run(out, feed)[0]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.02


def test_a_function_without_weights_stays_a_function():
    proto = layered(weights_as_arguments=False)
    result = compress(proto, {"passes": [{"pass": "kmeans", "bits": 8}]})
    assert {layer.name for layer in result.passes[0].layers} >= {"w0", "w1", "w2"}
    assert not any("inlined" in n for n in result.notes)
    out = to_proto(result.model)
    assert "Act" in [f.name for f in out.functions] and sum(n.op_type == "Act" for n in out.graph.node) == 3
