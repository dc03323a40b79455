from __future__ import annotations

import numpy as np

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
