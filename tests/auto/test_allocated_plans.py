"""The k-means pass's own allocations as plans of the search (``auto.paths.allocated_check``):
``--kmeans B --calibration`` chooses per-layer widths by its own probe, a plan the search's path
need not pass through (LiDAR PointNet: auto 7.46x with a flip, the pass at 4 bits 7.71x with
none; with these plans auto 8.05x, none)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from onnxcompress.auto import paths
from onnxcompress.auto.paths import allocated_check, kmeans_allocation, option_names
from onnxcompress.auto.plan import Plan
from onnxcompress.auto.search import Evaluation
from onnxcompress.auto.targets import Fidelity
from onnxcompress.data import feed_source
from onnxcompress.model import load_model
from onnxcompress.passes._bit_allocation import LayerChoices, Option
from onnxcompress.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "digits_cnn.onnx"
CALIB = ROOT / "models" / "digits_calib.npz"
INDEX = {name: i for i, name in enumerate(option_names())}


def _layers() -> list[LayerChoices]:
    """Two layers; k-means b costs 100 b bytes, float 3200, int8 800."""

    def options() -> list[Option]:
        return [Option(0, 3200, 0.0), Option(INDEX["int8"], 800, 0.001)] + [
            Option(INDEX[f"kmeans{b}"], 100 * b, 0.01 / b) for b in range(2, 9)
        ]

    return [LayerChoices(label, options(), sensitivity=1.0) for label in ("w0", "w1")]


class _Evaluator:
    """Plans cost their options' bytes; a plan meets the target while no layer is under
    ``floor`` bits."""

    objective = "size"

    def __init__(self, layers: list[LayerChoices], floor: int) -> None:
        self.layers, self.floor = {layer.label: layer for layer in layers}, floor
        self.calls: list[dict[str, str]] = []

    def __call__(self, plan: Plan, *, held: bool = False) -> Evaluation:
        self.calls.append(dict(plan.choices))
        cost = sum(paths.option_of(self.layers[k], v).nbytes for k, v in plan.choices.items())  # type: ignore[union-attr]
        ok = all(not v.startswith("kmeans") or int(v[6:]) >= self.floor for v in plan.choices.values())
        return Evaluation(
            plan, float(cost), cost, Fidelity({"top1": 1.0 if ok else 0.9}, ok, 0.0 if ok else -0.1)
        )


def test_the_widest_cheaper_allocation_first_then_narrower_while_each_holds(monkeypatch):
    layers = _layers()
    asked: list[int] = []

    def allocation(evaluate, bits, layers):  # the pass gives w0 one bit fewer, w1 one more
        asked.append(bits)
        return Plan({"w0": f"kmeans{bits - 1}", "w1": f"kmeans{bits + 1}"})

    monkeypatch.setattr(paths, "kmeans_allocation", allocation)
    evaluate = _Evaluator(layers, floor=4)
    chosen = Evaluation(Plan({"w0": "int8", "w1": "int8"}), 1600.0, 1600, Fidelity({"top1": 1.0}, True, 0.0))
    ev = allocated_check(chosen, layers, evaluate, time.perf_counter() + 60)  # type: ignore[arg-type]
    # uniform k-means 8 (1600 B) is not cheaper than int8 everywhere: 7 bits first; 5 is the last
    # whose allocation (4 and 6 bits) holds, and 4's (3 and 5) misses, which ends the walk
    assert asked == [7, 6, 5, 4]
    assert ev.plan.choices == {"w0": "kmeans4", "w1": "kmeans6"} and ev.cost == 1000


def test_nothing_is_tried_for_a_missed_target_another_objective_or_no_cheaper_width(monkeypatch):
    layers = _layers()
    monkeypatch.setattr(paths, "kmeans_allocation", lambda *a: (_ for _ in ()).throw(AssertionError))
    evaluate = _Evaluator(layers, floor=2)
    missed = Evaluation(
        Plan({"w0": "int8", "w1": "int8"}), 1600.0, 1600, Fidelity({"top1": 0.9}, False, -0.1)
    )
    assert allocated_check(missed, layers, evaluate, time.perf_counter() + 60) is missed  # type: ignore[arg-type]
    cheapest = Evaluation(
        Plan({"w0": "kmeans2", "w1": "kmeans2"}), 400.0, 400, Fidelity({"top1": 1.0}, True, 0.0)
    )
    assert allocated_check(cheapest, layers, evaluate, time.perf_counter() + 60) is cheapest  # type: ignore[arg-type]
    evaluate.objective = "latency"
    met = Evaluation(Plan({"w0": "int8", "w1": "int8"}), 1600.0, 1600, Fidelity({"top1": 1.0}, True, 0.0))
    assert allocated_check(met, layers, evaluate, time.perf_counter() + 60) is met  # type: ignore[arg-type]
    assert not evaluate.calls


def test_the_allocation_read_from_a_real_pass_run(tmp_path):
    """On the digits CNN, the plan is the k-means pass's own allocated widths, each layer on the
    search's option of that width."""
    original = load_model(MODEL)
    calib = [dict(f) for f in feed_source(str(CALIB), original, name="calibration data")][:16]
    layers = [
        LayerChoices(
            w,
            [Option(0, 10_000, 0.0)] + [Option(INDEX[f"kmeans{b}"], 100 * b, 0.0) for b in range(2, 9)],
            sensitivity=1.0,
        )
        for w in ("conv1.weight", "conv2.weight", "conv3.weight", "fc.weight")
    ]
    evaluate = SimpleNamespace(seed=0, calib=calib, tmp=tmp_path, original=original)
    plan = kmeans_allocation(evaluate, 4, layers)  # type: ignore[arg-type]
    assert plan is not None
    result = Pipeline.from_recipe(
        {
            "seed": 0,
            "passes": [{"pass": "kmeans", "bits": 4, "allocation": "sensitivity", "calibration_samples": 16}],
        }
    ).run(MODEL, calibration=calib)
    allocated = {
        s.name: s.extra["allocated_bits"] for s in result.passes[0].layers if "allocated_bits" in s.extra
    }
    assert {layer.label: plan.choices[layer.label] for layer in layers if layer.label in allocated} == {
        k: f"kmeans{max(2, b)}" for k, b in allocated.items() if k in plan.choices
    }
    assert len(set(allocated.values())) > 1  # widths differ by layer: a plan no uniform width gives
    assert np.mean(list(allocated.values())) <= 4.5
