"""compress --auto on the digits CNN: meets top1>=0.99 on held-out data, no larger than the best
uniform setting (the MLP test checks replay and failure paths)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from tests.auto._common import CALIB, EVAL, MODELS, best_uniform, run_cli, top1

MODEL = MODELS / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("auto")
    code = run_cli("compress", MODEL, "-o", out / "auto.onnx", "--auto", "--calibration", CALIB,
                   "--validate-data", EVAL, "--auto-target", "top1>=0.99",
                   "--save-recipe", out / "recipe.json",
                   "--report", out / "report.json", "-q")
    assert code == 0
    return out


def test_meets_target_and_beats_uniform(searched: Path) -> None:
    out = searched / "auto.onnx"
    onnx.checker.check_model(str(out))
    agreement = top1(MODEL, out)
    assert agreement >= 0.99
    size = out.stat().st_size
    uniform, which = best_uniform(MODEL, 0.99)
    assert size <= uniform, f"auto {size} B > uniform {which} {uniform} B"
    assert MODEL.stat().st_size / size > 5  # 8.8x measured: per-layer widths pay
