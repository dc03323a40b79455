"""compress --auto on the digits CNN: meets top1>=0.99 on held-out data, no larger than the best
uniform setting (the MLP test checks replay and failure paths)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.auto._common import MODELS, assert_meets_target_and_beats_uniform, search

MODEL = MODELS / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return search(MODEL, tmp_path_factory.mktemp("auto"))


def test_meets_target_and_beats_uniform(searched: Path) -> None:
    assert_meets_target_and_beats_uniform(MODEL, searched / "auto.onnx")  # 8.8x smaller measured
