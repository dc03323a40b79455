"""One exclude rule for every pass: a pattern names a weight (its label) or a node that reads it;
a pattern that names nothing is reported. Every weight pass must agree."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxcompress import WeightIndex
from onnxcompress.passes.base import registered_passes
from onnxcompress.pipeline import compress
from tests import helpers as h

OPTIONS = {
    "prune": {"sparsity": 0.5, "keep_first": False, "keep_last": False},
    "kmeans": {"bits": 4},
    "quantize": {"mode": "dynamic", "speed_check": False},
    "blockq": {},
}
PASSES = [name for name in OPTIONS if name in registered_passes()]


def _weights(model) -> dict[str, np.ndarray]:
    return {w.label: w.numpy() for w in WeightIndex.build(model) if w.role == "weight"}


@pytest.mark.parametrize("pass_name", PASSES)
@pytest.mark.parametrize("pattern", ["fc1.weight", "fc1/MatMul", "fc1*"])
def test_exclude_by_tensor_or_node_name_leaves_the_weight_alone(pass_name, pattern):
    proto = h.mlp((64, 64, 64, 64))
    original = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    result = compress(proto, {"passes": [{"pass": pass_name, "exclude": [pattern], **OPTIONS[pass_name]}]})
    p = result.passes[0]
    assert "fc1.weight" in p.skipped.get("excluded", []), p.skipped
    assert "fc1.weight" not in {s.name for s in p.layers}
    kept = _weights(result.model).get("fc1.weight")
    assert kept is not None and np.array_equal(kept, original["fc1.weight"])  # still a plain weight
    assert p.layers, f"{pass_name} changed nothing else"
    assert not any("matches no tensor or node" in n for n in result.notes)


@pytest.mark.parametrize("pass_name", PASSES)
def test_a_pattern_that_names_nothing_is_reported_and_changes_nothing(pass_name):
    proto = h.mlp((64, 64, 64, 64))
    with_typo = compress(proto, {"passes": [{"pass": pass_name, "exclude": ["fc9*"], **OPTIONS[pass_name]}]})
    plain = compress(proto, {"passes": [{"pass": pass_name, **OPTIONS[pass_name]}]})
    assert any("'fc9*' matches no tensor or node" in n for n in with_typo.notes)
    assert {s.name for s in with_typo.passes[0].layers} == {s.name for s in plain.passes[0].layers}
