from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.testing import assert_equivalent
from tests import helpers as h
from tests.validation._models import perturbed


@pytest.fixture(scope="module")
def mlp():
    return h.mlp((16, 32, 10))


def test_equivalent_models_return_the_report(mlp, tmp_path):
    path = tmp_path / "m.onnx"
    import onnx

    onnx.save(mlp, path)
    report = assert_equivalent(path, mlp)
    assert report.passed and report.output("y").max_abs == 0


def test_failure_message_is_the_table(mlp):
    with pytest.raises(AssertionError) as e:
        assert_equivalent(mlp, perturbed(mlp, "fc1.weight"))
    message = str(e.value)
    assert message.startswith("compressed model is not equivalent to the original:")
    assert "FAIL y [min_cosine]" in message and "max abs" in message


def test_default_policy_is_the_one_compare_and_validate_use(mlp):
    """No criterion: cosine >= 0.99 and top-1 >= 0.99 (DEFAULT_TOLERANCE), not allclose."""
    from onnxcompress.validation import DEFAULT_TOLERANCE

    feeds = [{"x": np.random.default_rng(i).standard_normal((4, 16)).astype(np.float32)} for i in range(4)]
    report = assert_equivalent(mlp, perturbed(mlp, "fc1.weight", scale=0.01), feeds)
    assert report.output("y").tolerance is DEFAULT_TOLERANCE
    assert {c.criterion for c in report.output("y").checks} == {"non-finite", "min_cosine", "min_top1"}
    with pytest.raises(AssertionError, match="allclose"):  # an explicit tolerance still overrides
        assert_equivalent(mlp, perturbed(mlp, "fc1.weight", scale=0.01), feeds, atol=1e-5)


def test_tolerances_and_inputs(mlp):
    slightly = perturbed(mlp, "fc1.weight", scale=0.01)
    feeds = [{"x": np.full((2, 16), i, np.float32)} for i in range(3)]
    report = assert_equivalent(mlp, slightly, feeds, min_cosine=0.99, min_top1=0.5)
    assert report.samples == 3
    assert_equivalent(mlp, slightly, per_output={"y": {"max_rel_error": 0.1}}, samples=4)
    with pytest.raises(AssertionError, match="min_cosine"):
        assert_equivalent(mlp, perturbed(mlp, "fc1.weight", scale=1.0), min_cosine=0.9999)


def test_unknown_keyword_is_a_type_error(mlp):
    with pytest.raises(TypeError, match="min_cosin"):
        assert_equivalent(mlp, mlp, min_cosin=0.9)
