"""A weight the graph also gives out keeps its values there, in every pass (``Weight.kept_reason``):
int8 gave out its codes (int8, a changed dtype), the fidelity guard's float16 step crashed the
default run (onnx_ir refuses to replace a graph output), pruning gave out the pruned weight and
channel pruning a smaller one. Anchor or prior tables are given out beside the boxes they decode."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from onnxcompress.model import to_proto
from onnxcompress.pipeline import compress
from tests import helpers as h
from tests.passes.test_quantization_guard_half import upscaler_like


def _given_out(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    tensor = next(t for t in proto.graph.initializer if t.name == name)
    proto.graph.output.append(oh.make_tensor_value_info(name, tensor.data_type, list(tensor.dims)))
    return proto


def _calibration(proto: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    shape = [d.dim_value or 1 for d in proto.graph.input[0].type.tensor_type.shape.dim]
    return [{proto.graph.input[0].name: h.rng(i).uniform(0, 1, shape).astype(np.float32)} for i in range(8)]


CASES = {
    # the default run (the guard steps the heavy-tailed last conv to float16)
    "quantize dynamic": (lambda: upscaler_like(), "c3.w", {"pass": "quantize", "mode": "dynamic"}),
    "quantize static": (lambda: upscaler_like(), "c2.w", {"pass": "quantize", "mode": "static",
                                                          "speed_check": False}),
    "prune": (lambda: h.mlp((32, 64, 64, 64, 10)), "fc1.weight", {"pass": "prune", "sparsity": 0.5}),
    "prune channels": (lambda: h.cnn(channels=(3, 16, 16, 16, 16)), "conv1.weight",
                       {"pass": "prune", "sparsity": 0.5, "pattern": "channel"}),
    "kmeans": (lambda: h.mlp((32, 64, 64, 10)), "fc1.weight", {"pass": "kmeans", "bits": 4}),
    "blockq": (lambda: h.mlp((64, 128, 128, 10)), "fc1.weight", {"pass": "blockq"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_weight_given_out_keeps_its_values(case):
    make, name, options = CASES[case]
    proto = _given_out(make(), name)
    original = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    data = _calibration(proto)
    result = compress(proto, {"passes": [options]}, calibration=data)
    p = result.passes[0]
    assert any("also a graph output" in why and name in names for why, names in p.skipped.items()), p.skipped
    assert p.layers, f"{case} changed nothing else"
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    for feed in data[:2]:
        given = h.run(out, feed)[-1]
        assert given.dtype == original[name].dtype and np.array_equal(given, original[name])
