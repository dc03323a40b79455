from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper as oh

from onnxcompress import load_model
from onnxcompress.model import to_proto
from onnxcompress.opset import opset_version, upgrade_opset
from tests import helpers as h


def test_upgrade_keeps_numbers():
    proto = h.cnn(opset=11)
    model, why = upgrade_opset(load_model(proto), 13)
    assert why is None and opset_version(model) == 13
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(h.run(to_proto(model), {"x": x})[0], h.run(proto, {"x": x})[0], rtol=1e-5)


def test_no_upgrade_needed_returns_same_model():
    model = load_model(h.mlp(opset=17))
    same, why = upgrade_opset(model, 13)
    assert same is model and why is None


def test_failed_upgrade_returns_reason_and_unchanged_model():
    proto = h.mlp(opset=13)
    proto.graph.node[0].op_type = "NoSuchOp"
    model = load_model(proto)
    same, why = upgrade_opset(model, 21)
    assert same is model and why and "cannot upgrade" in why


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("opset", [7, 9])
def test_upgrade_keeps_an_upsamples_coordinate_mapping(mode, opset):
    """onnx's converter writes an Upsample as a Resize without coordinate_transformation_mode,
    so opset 11's half_pixel applies: a linear x2 upsampling computed other values, a nearest
    one ran slower (FastDepth, batch 27: fp32 1.10x). The Resize keeps Upsample's asymmetric
    mapping (nearest: floor)."""
    if opset == 7:
        node = oh.make_node("Upsample", ["x"], ["y"], mode=mode, scales=[1.0, 1.0, 2.0, 3.0])
        inits = []
    else:
        node = oh.make_node("Upsample", ["x", "s"], ["y"], mode=mode)
        inits = [onnx.numpy_helper.from_array(np.array([1, 1, 2, 3], np.float32), "s")]
    graph = oh.make_graph([node], "up", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 5, 4])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 10, 12])], inits)
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    proto.ir_version = 7
    model, why = upgrade_opset(load_model(proto), 13)
    assert why is None and opset_version(model) == 13
    upgraded = to_proto(model)
    resize = next(n for n in upgraded.graph.node if n.op_type == "Resize")
    attrs = {a.name: a.s.decode() for a in resize.attribute}
    assert attrs["coordinate_transformation_mode"] == "asymmetric"
    assert attrs.get("nearest_mode") == ("floor" if mode == "nearest" else None)
    x = np.random.default_rng(1).standard_normal((1, 2, 5, 4)).astype(np.float32)
    np.testing.assert_array_equal(h.run(upgraded, {"x": x})[0], h.run(proto, {"x": x})[0])
