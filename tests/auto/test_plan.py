"""auto.plan: the plan form of a recipe (each layer's option once, the most common as "*") writes the
same tensors as the passes it expands to, in fewer metadata bytes; bad plans are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from onnxcompress.auto.candidates import recipe_labels
from onnxcompress.auto.plan import DEFAULT_LAYER, Plan, plan_from_recipe
from onnxcompress.errors import ConfigError
from onnxcompress.model import load_model, to_proto
from onnxcompress.pipeline import PROVENANCE_KEY, Pipeline
from tests.auto._common import CALIB, MODELS, payload, run_cli

MODEL = MODELS / "digits_mlp.onnx"


@pytest.mark.parametrize("choices", [
    {"fc1.weight": "fp16", "fc2.weight": "int8", "fc3.weight": "fp16"},
    {"fc1.weight": "kmeans4", "fc2.weight": "float", "fc3.weight": "int8"},
    {"fc1.weight": "int8", "fc2.weight": "int8", "fc3.weight": "int8"},
    {},
])
def test_plan_form_writes_the_passes_tensors_in_fewer_bytes(choices: dict[str, str]) -> None:
    model = load_model(MODEL)
    labels = recipe_labels(model)
    plan = Plan(choices)
    passes_form = plan.to_recipe(labels, calibration_samples=16)
    plan_form = plan.to_plan_recipe(labels, calibration_samples=16)
    assert "passes" not in plan_form
    assert plan_from_recipe(plan_form, labels).choices == plan_from_recipe(passes_form, labels).choices
    built = [to_proto(Pipeline.from_recipe(r).run(model, calibration=str(CALIB)).model).SerializeToString()
             for r in (passes_form, plan_form)]
    assert payload(built[1]) == payload(built[0])  # the same model but for its provenance
    if choices:
        assert len(built[1]) < len(built[0])
        # the model records the plan form, and the plan form reads back from it
        stored = {p.key: p.value for p in onnx.load_from_string(built[1]).metadata_props}[PROVENANCE_KEY]
        assert json.loads(stored)["history"][-1]["recipe"]["plan"] == plan_form["plan"]


def test_most_common_option_is_the_default_and_each_other_layer_is_named_once() -> None:
    labels = ["a", "b", "c", "d"]
    plan = Plan({"a": "int8", "b": "int8", "c": "fp16"}).to_plan_recipe(labels)["plan"]
    assert plan["layers"] == {"c": "fp16", "d": "float", DEFAULT_LAYER: "int8"}
    # float the most common: unnamed layers stay float without a default
    assert Plan({"a": "int8"}).to_plan_recipe(labels)["plan"]["layers"] == {"a": "int8"}
    # a weight named "*" is never read as the default
    named = Plan({"*": "int8", "b": "int8"}).to_plan_recipe(["*", "b", "c"])["plan"]["layers"]
    assert named == {"*": "int8", "b": "int8"}


@pytest.mark.parametrize(("plan", "words"), [
    ({"layers": {"fc1.weight": "int9"}}, "layer 'fc1.weight': no option 'int9'"),
    ({"layers": {"fc1.weight": "int8"}, "bits": 4}, "unknown key(s) bits"),
    ({"layers": ["fc1.weight"]}, "'layers' must map"),
    ({"layers": {}, "calibration_samples": 0}, "calibration_samples must be a positive integer"),
    ({"layers": {"conv9.weight": "int8"}}, "the model has no weight 'conv9.weight'"),
])
def test_bad_plans_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       plan: dict, words: str) -> None:
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"plan": plan}))
    out = tmp_path / "out.onnx"
    assert run_cli("compress", MODEL, "-o", out, "--recipe", recipe, "--calibration", CALIB, "-q") == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and not out.exists()


def test_a_recipe_has_passes_or_a_plan_not_both() -> None:
    with pytest.raises(ConfigError, match="'passes' or a 'plan', not both"):
        Pipeline.from_recipe({"passes": [{"pass": "kmeans"}], "plan": {"layers": {}}})
