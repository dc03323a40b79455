"""compress --auto on the digits MLP: meets top1>=0.99 on held-out data, no larger than the best
uniform setting, replays byte for byte; an unreachable target exits 1 with the best model."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from onnxcompress.auto import plan_from_recipe
from onnxcompress.model import load_model
from onnxcompress.pipeline import read_provenance
from tests.auto._common import (
    CALIB,
    EVAL,
    MODELS,
    assert_meets_target_and_beats_uniform,
    run_cli,
    search,
    top1,
)

MODEL = MODELS / "digits_mlp.onnx"


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return search(MODEL, tmp_path_factory.mktemp("auto"))


def test_meets_target_and_beats_uniform(searched: Path) -> None:
    assert_meets_target_and_beats_uniform(MODEL, searched / "auto.onnx")  # 10x smaller measured



def test_recipe_replays_byte_for_byte(searched: Path) -> None:
    replay = searched / "replay.onnx"
    assert run_cli("compress", MODEL, "-o", replay, "--recipe", searched / "recipe.json",
                   "--calibration", CALIB, "-q") == 0
    assert replay.read_bytes() == (searched / "auto.onnx").read_bytes()
    recipe = json.loads((searched / "recipe.json").read_text())
    labels = [w for w in ("fc1.weight", "fc2.weight", "fc3.weight")]
    plan = plan_from_recipe(recipe, labels)
    report = json.loads((searched / "report.json").read_text())["auto"]
    assert {row["layer"]: row["choice"] for row in report["plan"]} == plan.choices
    assert any(p["chosen"] for p in report["front"]) and report["met"] is True
    # plans are priced as written (names shortened, equal constants merged): the chosen one's bytes
    # are the file's
    chosen = next(p for p in report["front"] if p["chosen"])
    assert chosen["bytes"] == (searched / "auto.onnx").stat().st_size
    provenance = read_provenance(load_model(searched / "auto.onnx"))
    # the model stores the plan form the recipe file has (each layer once, not exclude lists)
    assert provenance["history"][-1]["recipe"]["plan"] == recipe["plan"]
    assert "passes" not in recipe


def test_biases_are_stored_in_float16_as_the_uniform_passes_store_them() -> None:
    """No codec's ``exclude`` names a bias or norm parameter (``recipe_labels``): the last weight
    pass stores them in float16. transformer_digits with int8 (an ``exclude`` codec) on its
    weights: every bias and LayerNorm parameter of 64+ values float16; before, all float32."""
    from onnxcompress.auto.candidates import candidate_weights, recipe_labels
    from onnxcompress.auto.plan import Plan
    from onnxcompress.model import to_proto
    from onnxcompress.pipeline import Pipeline
    from onnxcompress.weights import WeightIndex

    model_path = MODELS.parent / "tests/assets/transformer_digits.onnx"
    original = load_model(model_path)
    plan = Plan({w.label: "int8" for w in candidate_weights(original)})
    rest = [w.label for w in WeightIndex.build(original) if w.role in ("bias", "norm") and w.size >= 64]
    assert len(rest) >= 8
    everything = [w.label for w in WeightIndex.build(original)]
    for labels, half in ((recipe_labels(original), True), (everything, False)):
        recipe = plan.to_recipe(labels)
        named = {p for step in recipe["passes"] for p in step.get("exclude", [])}
        assert (not set(rest) & named) is half
        written = to_proto(Pipeline.from_recipe(recipe).run(load_model(model_path)).model)
        stored = {t.name for t in written.graph.initializer}
        assert all((f"{label}_fp16" in stored) is half for label in rest), sorted(stored)


def test_unreachable_target_exits_1_with_best_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "best.onnx"
    code = run_cli("compress", MODEL, "-o", out, "--auto", "--calibration", CALIB, "--validate-data", EVAL,
                   "--auto-target", "accuracy>=5pt", "-q", "--json", tmp_path / "r.json")
    assert code == 1
    captured = capsys.readouterr()
    assert "not met" in captured.err
    # --json PATH writes the report there, as without --auto (it went to stdout)
    assert "auto" in json.loads((tmp_path / "r.json").read_text()) and "{" not in captured.out
    onnx.checker.check_model(str(out))
    assert top1(MODEL, out) == 1.0  # the best found is the original's own accuracy (float)


def test_bad_target_exits_2_before_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = run_cli("compress", MODEL, "-o", tmp_path / "x.onnx", "--auto", "--calibration", CALIB,
                   "--auto-target", "top1>0.9")
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "target" in err
    assert not (tmp_path / "x.onnx").exists()


def test_a_plan_left_all_float_says_so():
    """Nothing meets cosine>=1 but float: the file is the original, and the notes say why (with
    --objective memory a tiny CNN came out 1.00x without a word)."""
    from onnxcompress.auto import search

    found = search(MODEL, str(CALIB), target="cosine>=1")
    assert found.plan.counts() == {"float": 3} and found.met
    said = "every layer stays float: no option met the target and was smaller than the original"
    assert said in found.notes
