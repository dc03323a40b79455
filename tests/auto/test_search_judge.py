"""The held-out check reuses the search-data outputs the evaluator already has (the model built
last, the cheapest one meeting the target) instead of running the same file again: the kept
outputs are the ones a fresh run gives, and the search ends on the same plan with the same
judged numbers as without them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxcompress.auto.executor import SerialExecutor
from onnxcompress.auto.measure import run_outputs
from onnxcompress.auto.search import _Evaluator, search
from tests.auto._common import ROOT

ASSETS = ROOT / "tests/assets"
# the transformer: its chosen plan is judged (kept as the cheapest meeting the target), fails
# the held-out check, and the backed-off plan is judged right after it is built (kept as last)
MODEL = ASSETS / "transformer_digits.onnx"
CALIB, EVAL = ASSETS / "transformer_digits_calib.npz", ASSETS / "transformer_digits_eval.npz"
JUDGE = _Evaluator.judge


def _search(monkeypatch: pytest.MonkeyPatch, keep: bool) -> tuple[object, list[bool]]:
    judged: list[bool] = []

    def judge(self: _Evaluator, path: Path, search_outputs: dict | None = None) -> object:
        onnx.checker.check_model(str(path))
        if not keep:
            search_outputs = None
        if search_outputs is not None:  # what the kept outputs stand for: a fresh run of the file
            fresh = run_outputs(path, self.search[0])
            assert fresh.keys() == search_outputs.keys()
            assert all(np.array_equal(fresh[k], search_outputs[k]) for k in fresh)
        judged.append(search_outputs is not None)
        return JUDGE(self, path, search_outputs)

    monkeypatch.setattr(_Evaluator, "judge", judge)
    found = search(MODEL, str(CALIB), validate_data=str(EVAL), executor=SerialExecutor(),
                   allow_more_memory=True)
    return found, judged


def test_held_out_check_reuses_search_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    kept, judged = _search(monkeypatch, keep=True)
    # The first checks (the plan the search ends on, the back-off step right after it is built)
    # find their outputs kept; a bisection between two plans judges plans built earlier.
    assert judged and all(judged[:2]) and sum(judged) >= 3
    rerun, judged_again = _search(monkeypatch, keep=False)
    assert len(judged_again) == len(judged) and not any(judged_again)
    assert kept.plan.choices == rerun.plan.choices and kept.recipe == rerun.recipe  # type: ignore[attr-defined]
    assert kept.fidelity.values == rerun.fidelity.values and kept.met == rerun.met  # type: ignore[attr-defined]
    assert kept.front == rerun.front  # type: ignore[attr-defined]
