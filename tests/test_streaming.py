"""Issue 18: every pass processes an external-data model one weight at a time (no two weights'
float data alive at once), checked with the read instrument of tests/streaming.py. k-means has
its own test (tests/passes/test_weight_sharing.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxcompress import Pipeline, load_model
from onnxcompress.model import to_proto
from onnxcompress.weights import WeightIndex
from tests import helpers as h
from tests.streaming import track_weight_reads

SIZES = (256, 256, 256, 256, 256, 10)
# (recipe step, takes calibration data, output tolerance)
PASSES = {
    "prune": ({"pass": "prune", "sparsity": 0.5}, False, 1.0),
    "prune-channel": ({"pass": "prune", "sparsity": 0.5, "pattern": "channel"}, False, 1.5),
    "quantize-dynamic": ({"pass": "quantize", "mode": "dynamic", "speed_check": False}, False, 0.2),
    "quantize-static": ({"pass": "quantize", "mode": "static", "speed_check": False}, True, 0.3),
    "quantize-weights": ({"pass": "quantize", "mode": "weights", "speed_check": False}, False, 0.2),
    "blockq": ({"pass": "blockq"}, False, 0.5),
    "float16": ({"pass": "float16", "enabled": True}, False, 0.05),
}


@pytest.fixture
def external_mlp(tmp_path):
    model = h.mlp(SIZES)
    path = tmp_path / "ext.onnx"
    external = onnx.ModelProto.FromString(model.SerializeToString())  # save() rewrites its input
    onnx.save(external, path, save_as_external_data=True, location="ext.onnx.data", size_threshold=1024)
    return model, path


@pytest.mark.parametrize("name", list(PASSES))
def test_pass_reads_one_weight_at_a_time(name, external_mlp, monkeypatch):
    model, path = external_mlp
    step, calibrated, tol = PASSES[name]
    rng = np.random.default_rng(0)
    calibration = [{"x": rng.standard_normal((1, SIZES[0])).astype(np.float32)} for _ in range(4)]
    loaded = load_model(path)
    assert sum(w.is_external for w in WeightIndex.build(loaded)) >= 5
    tracker = track_weight_reads(monkeypatch)
    result = Pipeline.from_recipe({"passes": [step]}).run(
        loaded, calibration=calibration if calibrated else None)
    monkeypatch.undo()
    assert result.passes[0].layers, result.passes[0].to_dict()  # it did change weights
    assert len(set(tracker.reads)) >= 3  # the instrument saw the weights being read (prune keeps
    # the first and last layers)
    assert tracker.overlaps == []
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    feeds = {"x": rng.standard_normal((2, SIZES[0])).astype(np.float32)}
    np.testing.assert_allclose(h.run(proto, feeds)[0], h.run(model, feeds)[0], rtol=tol, atol=tol)
