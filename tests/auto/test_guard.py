"""The memory guard: which options back off first, how many layers a round moves, and the loop
(measured memory scripted; the combined models are the real digits MLP's); and that a search
reports the guard's measurements."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from onnxcompress.auto import guard
from onnxcompress.auto.guard import memory_guard, memory_tier, next_plan
from onnxcompress.auto.paths import option_names
from onnxcompress.auto.plan import Plan
from onnxcompress.auto.search import Evaluation
from onnxcompress.auto.targets import Fidelity
from onnxcompress.passes._bit_allocation import LayerChoices, Option
from tests.auto._common import CALIB, EVAL, MODELS, run_cli, top1

MODEL = MODELS / "digits_mlp.onnx"


def _opt(name: str, nbytes: int, error: float) -> Option:
    return Option(option_names().index(name), nbytes, error)


def _layer(label: str, nbytes: int) -> LayerChoices:
    # float, k-means 4 (codebook decode), k-means 8 (int8-exact) and fp16, errors in that order
    return LayerChoices(label, [_opt("float", nbytes, 0.0), _opt("kmeans4", nbytes // 8, 0.1),
                                _opt("kmeans8", nbytes // 4, 0.01), _opt("fp16", nbytes // 2, 0.0001)],
                        sensitivity=1.0)


def test_memory_tiers() -> None:
    assert [memory_tier(n) for n in ("kmeans2", "kmeans7", "kmeans8", "int8", "fp16", "int4", "float")] \
        == [0, 0, 1, 1, 2, 2, 3]


def test_next_plan_moves_the_largest_costly_layers_first() -> None:
    layers = [_layer("a", 4000), _layer("b", 40_000), _layer("c", 400)]
    plan = Plan({"a": "kmeans4", "b": "kmeans4", "c": "kmeans8"})
    # an excess the largest layer covers: only it moves, to its cheapest leaner option
    moved, n = next_plan(plan, layers, 30_000)  # type: ignore[misc]
    assert n == 1 and moved.choices == {"a": "kmeans4", "b": "kmeans8", "c": "kmeans8"}
    # a larger excess: every codebook layer, largest first; never to an option with more error
    moved, n = next_plan(plan, layers, 10**6)  # type: ignore[misc]
    assert n == 2 and moved.choices == {"a": "kmeans8", "b": "kmeans8", "c": "kmeans8"}
    # no codebook layer left: the int8-exact ones move to fp16, then fp16 to float
    moved, _ = next_plan(moved, layers, 10**6)  # type: ignore[misc]
    assert set(moved.choices.values()) == {"fp16"}
    moved, _ = next_plan(moved, layers, 10**6)  # type: ignore[misc]
    assert set(moved.choices.values()) == {"float"}
    assert next_plan(moved, layers, 10**6) is None


class _Built:
    """The evaluator's interface the guard uses, building the digits MLP's combined models."""

    def __init__(self) -> None:
        from onnxcompress.model import load_model

        self.original = load_model(MODEL)
        self.plans: list[dict[str, str]] = []

    def serialized(self, plan: Plan) -> bytes:
        from onnxcompress.model import to_proto
        from onnxcompress.pipeline import Pipeline

        recipe = plan.to_recipe(["fc1.weight", "fc2.weight", "fc3.weight"])
        model = Pipeline.from_recipe(recipe).run(self.original, calibration=str(CALIB)).model
        return to_proto(model).SerializeToString()

    def __call__(self, plan: Plan, *, held: bool = False) -> Evaluation:
        self.plans.append(dict(plan.choices))
        met = Fidelity({"top1>=0.99": 1.0}, True, 0.01)
        return Evaluation(plan, 0.0, 0, met, held=met)


def test_guard_backs_off_until_the_model_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layers = [_layer("fc1.weight", 200_000), _layer("fc2.weight", 40_000), _layer("fc3.weight", 1_000)]
    start = Plan({"fc1.weight": "kmeans4", "fc2.weight": "kmeans4", "fc3.weight": "kmeans4"})
    built = _Built()
    sizes: list[int] = []

    def memory(path: Path | str, feed: dict) -> int:
        # the original measures 10 MB; each model 10 MB plus 2 MB per k-means 4 layer
        if Path(path) == MODEL:
            return 10 << 20
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        sizes.append(len(Path(path).read_bytes()))
        measured = (built.plans or [start.choices])[-1]  # the plan the guard built last
        return (10 << 20) + sum(v == "kmeans4" for v in measured.values()) * (2 << 20)

    monkeypatch.setattr(guard, "measure_memory", memory)
    first = Evaluation(start, 0.0, 0, Fidelity({}, True, 0.0), held=Fidelity({}, True, 0.0))
    notes: list[str] = []
    ev, out = memory_guard(first, layers, built, MODEL, {}, float("inf"), lambda *a: None, notes)  # type: ignore[arg-type]
    # 6 MB over: fc1 alone (200 kB of float bytes) does not cover the excess estimate, so the
    # first round moves every codebook layer to k-means 8, and the model fits
    assert out["fits"] is True and out["rounds"] == 1 and out["original_bytes"] == 10 << 20
    assert ev.plan.choices == {"fc1.weight": "kmeans8", "fc2.weight": "kmeans8", "fc3.weight": "kmeans8"}
    assert len(sizes) == 2 and sizes[1] > sizes[0]  # the leaner-in-memory model is a larger file
    assert any("memory guard" in n for n in notes)
    data = built.serialized(ev.plan)
    assert top1(MODEL, data) >= 0.99  # the backed-off plan still runs and agrees


def test_search_reports_session_memory(tmp_path: Path) -> None:
    out, report = tmp_path / "auto.onnx", tmp_path / "report.json"
    assert run_cli("compress", MODEL, "-o", out, "--auto", "--calibration", CALIB, "--validate-data", EVAL,
                   "--auto-target", "top1>=0.99", "--report", report, "--time-budget", "60", "-q") == 0
    memory = json.loads(report.read_text())["auto"]["memory"]
    assert memory["original_bytes"] > 0 and memory["fits"] is True
    assert memory["bytes"] <= memory["original_bytes"] * 1.02 + (1 << 20)
    onnx.checker.check_model(str(out))
    assert top1(MODEL, out) >= 0.99
