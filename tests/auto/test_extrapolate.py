"""Large models probe one reference option per layer and price the others by weight error; a
callable target works through the API."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from onnxcompress.auto import SerialExecutor, search
from tests.auto._common import CALIB, EVAL, MODELS, top1


def test_reference_probe_and_callable_target(monkeypatch: pytest.MonkeyPatch) -> None:
    # the module (the package's ``search`` is the function)
    module = importlib.import_module("onnxcompress.auto.search")
    monkeypatch.setattr(module, "PROBE_ALL_MAX_PAIRS", 0)
    extrapolated: list[dict] = []
    original = module._extrapolate

    def spy(measured: list) -> None:
        original(measured)
        extrapolated.extend({m.candidate: dict(m.deviation) for m in measured}.items())

    monkeypatch.setattr(module, "_extrapolate", spy)
    calls = []

    def agreement(orig, comp) -> float:  # noqa: ANN001
        calls.append(1)
        (a,), (b,) = orig.values(), comp.values()
        return float((a.argmax(1) == b.argmax(1)).mean())

    model = MODELS / "digits_mlp.onnx"
    found = search(model, str(CALIB), target=agreement, target_threshold=0.98, validate_data=str(EVAL),
                   executor=SerialExecutor())
    assert found.met and calls
    assert found.target == "agreement>=0.98"
    deviations = dict(extrapolated)
    assert set(deviations) >= {"kmeans2", "kmeans4", "kmeans8", "int8"}
    for label in ("fc1.weight", "fc2.weight", "fc3.weight"):  # fewer bits, more deviation
        assert deviations["kmeans2"][label] > deviations["kmeans4"][label] > deviations["kmeans8"][label] > 0
    # every option of every layer got a deviation (the unprobed ones extrapolated), ordered by bits
    rows = {r["layer"]: r for r in found.layers}
    assert set(rows) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert all(r["choice"] != "float" for r in rows.values())
    from onnxcompress.model import to_proto
    from onnxcompress.pipeline import Pipeline

    out = Pipeline.from_recipe(found.recipe).run(model, calibration=str(CALIB)).model
    assert top1(model, to_proto(out).SerializeToString()) >= 0.98
    assert np.isfinite(found.fidelity.margin)
