"""Never worse end to end: a reconstructing pass keeps the refit only where the whole model's
outputs move closer to the teacher's on calibration samples the refit did not see; otherwise its
output is the plain pass's, numbers and all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxcompress.layerwise import judge as judge_module
from onnxcompress.layerwise.judge import Judge, split_feeds
from onnxcompress.model import load_model, to_proto
from onnxcompress.pipeline import compress
from tests import helpers as h

MODELS = Path(__file__).resolve().parents[2] / "models"
CALIB = MODELS / "digits_calib.npz"


def test_split_feeds_holds_the_last_quarter_apart_only_when_there_are_enough():
    feeds = [{"x": np.full((1, 2), i, np.float32)} for i in range(12)]
    fit, judging, apart = split_feeds(feeds)
    assert apart and len(fit) == 9 and len(judging) == 3
    assert [int(f["x"][0, 0]) for f in judging] == [9, 10, 11]
    fit, judging, apart = split_feeds(feeds[:3])
    assert not apart and len(fit) == len(judging) == 3


def test_judge_scores_the_teacher_zero_and_a_changed_model_above_zero():
    model = load_model(MODELS / "digits_mlp.onnx")
    data = np.load(CALIB)
    feeds = [{"pixels": data["pixels"][i:i + 1]} for i in range(4)]
    j = Judge(model, feeds)
    assert j.score(model) == 0.0
    changed = compress(MODELS / "digits_mlp.onnx", {"passes": [{"pass": "prune", "sparsity": 0.9}]})
    onnx.checker.check_model(to_proto(changed.model))
    assert j.score(changed.model) > 1e-4


def _eval_outputs(model) -> np.ndarray:  # noqa: ANN001
    data = np.load(MODELS / "digits_eval.npz")
    return h.run(to_proto(model), {"pixels": data["pixels"]})[0]


@pytest.mark.parametrize("step", [{"pass": "kmeans", "bits": 2}, {"pass": "prune", "sparsity": 0.9}])
def test_the_plain_pass_is_kept_when_the_refit_loses_end_to_end(monkeypatch, step):
    plain = compress(MODELS / "digits_mlp.onnx", {"passes": [step]}, calibration=CALIB)
    recipe = {"passes": [dict(step, reconstruct=True)]}
    refit = compress(MODELS / "digits_mlp.onnx", recipe, calibration=CALIB)
    metrics = refit.passes[0].metrics
    e2e = metrics["reconstruction"]["end_to_end"] if step["pass"] == "kmeans" else (
        metrics["reconstruction_end_to_end"])
    # Measured (output deviation, plain -> refit): 2-bit k-means 0.118 -> 0.0042, 90% pruning
    # 0.261 -> 0.0025 on the held-apart calibration samples.
    assert e2e["kept"] == "refit" and e2e["refit"] < 0.5 * e2e["plain"]
    assert not np.allclose(_eval_outputs(refit.model), _eval_outputs(plain.model), atol=1e-3)

    # A judge that prefers the plain model: the plain pass's model is kept, numbers and all.
    monkeypatch.setattr(judge_module, "prefer_refit", lambda refit_score, plain_score: False)
    kept = compress(MODELS / "digits_mlp.onnx", recipe, calibration=CALIB)
    proto = to_proto(kept.model)
    onnx.checker.check_model(proto)
    metrics = kept.passes[0].metrics
    e2e = metrics["reconstruction"]["end_to_end"] if step["pass"] == "kmeans" else (
        metrics["reconstruction_end_to_end"])
    assert e2e["kept"] == "plain"
    assert any("the refit was not kept" in n for n in kept.passes[0].notes)
    assert len(proto.graph.initializer) == len(to_proto(plain.model).graph.initializer)
    np.testing.assert_allclose(_eval_outputs(kept.model), _eval_outputs(plain.model), rtol=1e-5, atol=1e-5)


def test_the_chosen_kmeans_variant_is_fit_again_on_every_calibration_sample(monkeypatch):
    from onnxcompress.layerwise import codebook

    recipe = {"passes": [{"pass": "kmeans", "bits": 2, "reconstruct": True}]}
    calls = []
    original = codebook.CodebookRefitter._fit_on_all

    def spy(self, by_label, best, chosen, *args):  # noqa: ANN001, ANN202
        out = original(self, by_label, best, chosen, *args)
        calls.append((len(self.judge_feeds), sum(out[k] is not chosen[k] for k in chosen)))
        return out

    monkeypatch.setattr(codebook.CodebookRefitter, "_fit_on_all", spy)
    monkeypatch.setattr(codebook, "FINAL_FIT_ALL", True)
    both = compress(MODELS / "digits_mlp.onnx", recipe, calibration=CALIB)
    monkeypatch.setattr(codebook, "FINAL_FIT_ALL", False)
    held = compress(MODELS / "digits_mlp.onnx", recipe, calibration=CALIB)
    onnx.checker.check_model(to_proto(both.model))
    # every stage that kept a refit was fit again, with the held-apart samples' statistics added
    chosen = [c for c in both.passes[0].metrics["reconstruction"]["stage_choice"] if c["chosen"] != "plain"]
    assert len(calls) == len(chosen) >= 1 and all(n >= 4 and refit >= 1 for n, refit in calls)
    a, b = _eval_outputs(both.model), _eval_outputs(held.model)
    assert not np.allclose(a, b, atol=1e-4)
    # Measured: 2-bit top-1 agreement with fp32 on the 360 eval digits 0.9972 either way (the
    # option is off by default: it did not hold across the real models, see FINAL_FIT_ALL).
    fp32 = _eval_outputs(load_model(MODELS / "digits_mlp.onnx")).argmax(-1)
    assert (a.argmax(-1) == fp32).mean() >= 0.99 and (b.argmax(-1) == fp32).mean() >= 0.99
