"""The speed guard: which options move first and where to, the loop (timings scripted; the
combined models are the real digits MLP's), its cached decision, and what a search reports."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from onnxcompress.auto import speed
from onnxcompress.auto.plan import Plan
from onnxcompress.auto.search import Evaluation, search
from onnxcompress.auto.speed import faster_of, next_plan, speed_guard, speed_tier, without_slower_kinds
from onnxcompress.auto.targets import Fidelity
from onnxcompress.errors import ConfigError
from onnxcompress.passes._bit_allocation import LayerChoices
from tests.auto._common import CALIB, MODELS, top1
from tests.auto.test_guard import _Built, _opt, _Picky

MODEL = MODELS / "digits_mlp.onnx"


def _layer(label: str, nbytes: int, int8_error: float = 0.01) -> LayerChoices:
    return LayerChoices(label, [_opt("float", nbytes, 0.0), _opt("int4", nbytes // 7, 0.05),
                                _opt("int8", nbytes // 4, int8_error), _opt("kmeans8", nbytes // 4 + 512, 0.008),
                                _opt("kmeans4", nbytes // 8, 0.1), _opt("fp16", nbytes // 2, 0.0001)],
                        sensitivity=1.0)


def _layers() -> list[LayerChoices]:
    return [_layer("fc1.weight", 200_000), _layer("fc2.weight", 40_000), _layer("fc3.weight", 1_000)]


def _start() -> Evaluation:
    plan = Plan({"fc1.weight": "int4", "fc2.weight": "int8", "fc3.weight": "kmeans4"})
    return Evaluation(plan, 0.0, 0, Fidelity({}, True, 0.0), held=Fidelity({}, True, 0.0))


def test_speed_tiers() -> None:
    assert [speed_tier(n) for n in ("int4", "int8", "kmeans2", "kmeans8", "fp16", "float")] == [0, 1, 2, 2, 2, 3]


def test_next_plan_moves_the_slowest_kind_to_the_cheapest_faster_option_with_no_more_error() -> None:
    layers = [_layer("a", 4000), _layer("b", 4000, int8_error=0.2), _layer("c", 4000)]
    plan = Plan({"a": "int4", "b": "int4", "c": "int8"})
    moved, n = next_plan(plan, layers)  # type: ignore[misc]
    # a: int8 (1 byte a value, less error than its 4-bit blocks); b's int8 errs more: k-means 8;
    # c is int8, a faster kind than 4-bit blocks: it waits for the next round
    assert n == 2 and moved.choices == {"a": "int8", "b": "kmeans8", "c": "int8"}
    moved, n = next_plan(moved, layers)  # type: ignore[misc]
    assert n == 2 and set(moved.choices.values()) == {"kmeans8"}  # never k-means 4: more error
    assert next_plan(moved, layers) is None  # every layer folds at load
    to_float, _ = next_plan(plan, layers, to_float=True)  # type: ignore[misc]
    assert to_float.choices == {"a": "float", "b": "float", "c": "int8"}


def _scripted(ratios: list[float], calls: list[str]):  # noqa: ANN202
    def latency_ratio(original, path: Path, feed: dict) -> float:  # noqa: ANN001
        onnx.checker.check_model(onnx.load(str(path)))
        calls.append(str(path))
        return ratios[min(len(calls), len(ratios)) - 1]
    return latency_ratio


def test_a_slower_plan_moves_to_faster_decodes_until_it_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    built, calls, notes = _Built(), [], []
    monkeypatch.setattr(speed, "latency_ratio", _scripted([1.2, 1.1, 1.0], calls))
    ev, out = speed_guard(_start(), _layers(), built, MODEL, built.original, {}, lambda *a: None, notes)  # type: ignore[arg-type]
    # round 1: the 4-bit block layer to int8; round 2: the int8 layers to k-means 8
    assert built.plans == [{"fc1.weight": "int8", "fc2.weight": "int8", "fc3.weight": "kmeans4"},
                           {"fc1.weight": "kmeans8", "fc2.weight": "kmeans8", "fc3.weight": "kmeans4"}]
    assert ev.plan.choices == built.plans[-1]
    assert out == {"ratio": 1.0, "rounds": 2, "cached": False, "moved_from": [0, 1]}
    assert len(calls) == 3 and sum("speed guard" in n for n in notes) == 2
    assert top1(MODEL, built.serialized(ev.plan)) >= 0.99
    # the same plan on this machine again: the decision is read back, nothing is timed
    calls.clear()
    again, out = speed_guard(_start(), _layers(), built, MODEL, built.original, {}, lambda *a: None, [])  # type: ignore[arg-type]
    assert again.plan.choices == ev.plan.choices and out["cached"] is True and calls == []


def test_a_plan_within_the_tolerance_is_kept_after_one_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    built, calls, notes = _Built(), [], []
    monkeypatch.setattr(speed, "latency_ratio", _scripted([1 + speed.SPEED_TOLERANCE], calls))
    start = _start()
    ev, out = speed_guard(start, _layers(), built, MODEL, built.original, {}, lambda *a: None, notes)  # type: ignore[arg-type]
    assert ev is start and built.plans == [] and not notes and len(calls) == 1 and out["rounds"] == 0


def test_a_plan_that_only_folds_is_not_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    built, calls = _Built(), []
    monkeypatch.setattr(speed, "latency_ratio", _scripted([2.0], calls))
    start = Evaluation(Plan({"fc1.weight": "kmeans4", "fc2.weight": "fp16"}), 0.0, 0,
                       Fidelity({}, True, 0.0), held=Fidelity({}, True, 0.0))
    ev, out = speed_guard(start, _layers(), built, MODEL, built.original, {}, lambda *a: None, [])  # type: ignore[arg-type]
    assert ev is start and calls == [] and out["ratio"] is None


def test_int8_decoded_at_load_is_not_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 the quantize pass wrote as Cast + Mul (a small model or weight) folds at load: the
    session runs the original's float kernels, so a timing measures noise only (batch 33's
    30 us MNIST: 0.86-1.24x between two identical runs moved its int8 plan to k-means 8, 9,779
    instead of 8,891 bytes). Such layers are on the folded tier and the plan is not timed."""
    assert speed_tier("int8", folded=True) == speed_tier("kmeans8") == speed.FOLDED
    assert speed_tier("int4", folded=True) == 0  # only int8's decode folds
    built, calls = _Built(), []
    monkeypatch.setattr(speed, "latency_ratio", _scripted([2.0], calls))
    plan = Plan({"fc1.weight": "int8", "fc2.weight": "int8", "fc3.weight": "fp16"})
    folded = Evaluation(plan, 0.0, 0, Fidelity({}, True, 0.0), held=Fidelity({}, True, 0.0),
                        folded=frozenset({"fc1.weight", "fc2.weight"}))
    ev, out = speed_guard(folded, _layers(), built, MODEL, built.original, {}, lambda *a: None, [])  # type: ignore[arg-type]
    assert ev is folded and calls == [] and out["ratio"] is None
    assert next_plan(plan, _layers(), folded=frozenset({"fc1.weight"})) == (
        Plan({**plan.choices, "fc2.weight": "kmeans8"}), 1)  # the one int8 layer not folded moves


def test_the_evaluator_reads_which_int8_layers_fold_from_the_written_model() -> None:
    """The contract ``Evaluation.folded`` is read from: the quantize pass marks the int8 layers
    it decodes by a Cast + Mul onnxruntime folds (the digits MLP is small: all of them)."""
    from onnxcompress.model import load_model
    from onnxcompress.passes._int8 import FOLDED_DECODE
    from onnxcompress.pipeline import Pipeline

    labels = ["fc1.weight", "fc2.weight", "fc3.weight"]
    plan = Plan({"fc1.weight": "int8", "fc2.weight": "int8", "fc3.weight": "float"})
    result = Pipeline.from_recipe(plan.to_recipe(labels)).run(load_model(MODEL))
    decodes = {s.name: s.extra.get("decode") for p in result.passes for s in p.layers}
    assert decodes == {"fc1.weight": FOLDED_DECODE, "fc2.weight": FOLDED_DECODE}


def test_a_move_that_misses_the_target_goes_to_float_else_the_plan_is_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    start = Evaluation(Plan({"fc1.weight": "int4", "fc2.weight": "kmeans4", "fc3.weight": "kmeans4"}), 0.0, 0,
                       Fidelity({}, True, 0.0), held=Fidelity({}, True, 0.0))
    monkeypatch.setattr(speed, "latency_ratio", _scripted([1.2, 1.0], []))
    built, notes = _Picky({"int8"}), []
    ev, _ = speed_guard(start, _layers(), built, MODEL, built.original, {}, lambda *a: None, notes)  # type: ignore[arg-type]
    assert ev.plan.choices["fc1.weight"] == "float" and ev.held is not None and ev.held.met
    assert built.plans == [{**start.plan.choices, "fc1.weight": "int8"}, ev.plan.choices]
    monkeypatch.setattr(speed, "latency_ratio", _scripted([1.2], []))
    built, notes = _Picky({"int8", "float"}), []
    ev, out = speed_guard(start, _layers(), built, MODEL, built.original, {}, lambda *a: None, notes)  # type: ignore[arg-type]
    assert ev is start and any("no faster plan met the target" in n for n in notes)


def test_allow_slower_is_for_the_size_objective_only() -> None:
    with pytest.raises(ConfigError, match="size objective only"):
        search(MODEL, CALIB, objective="latency", allow_slower=True)


def test_the_kinds_moved_away_from_leave_the_next_search() -> None:
    layers = _layers()
    assert without_slower_kinds(layers, {"rounds": 0}) is None
    assert without_slower_kinds(layers, {"moved_from": []}) is None
    narrowed = without_slower_kinds(layers, {"moved_from": [0]})
    assert narrowed is not None and [n.label for n in narrowed] == [n.label for n in layers]
    from onnxcompress.auto.paths import option_name
    assert all({option_name(o) for o in n.options} == {"float", "int8", "kmeans8", "kmeans4", "fp16"}
               and n.sensitivity == 1.0 for n in narrowed)
    narrowed = without_slower_kinds(narrowed, {"moved_from": [1]})
    assert {option_name(o) for o in narrowed[0].options} == {"float", "kmeans8", "kmeans4", "fp16"}


def test_the_search_again_is_kept_where_it_is_cheaper_and_holds() -> None:
    def ev(cost: float, met: bool) -> Evaluation:
        f = Fidelity({}, met, 0.0 if met else -0.01)
        return Evaluation(Plan({}), cost, int(cost), f, held=f)

    first, guards, notes = ev(100, True), ({"m": 1}, {"s": 1}), []
    cheaper = (ev(60, True), {"m": 2}, {"s": 2})
    assert faster_of(first, guards, cheaper, notes) == cheaper and "100 -> 60 bytes" in notes[0]
    assert faster_of(first, guards, (ev(60, False), {}, {}), [])[0] is first  # misses the target
    assert faster_of(first, guards, (ev(120, True), {}, {}), [])[0] is first  # costs more
    missed = ev(100, False)  # neither holds: the cheaper one
    assert faster_of(missed, guards, (ev(60, False), {}, {}), [])[0].cost == 60


def test_a_search_whose_4bit_blocks_run_slower_searches_again_without_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripted: any plan with a MatMulNBits runs 1.2x the original. The guard's local moves
    (each 4-bit layer to its cheapest faster option with no more error) are one answer; a
    search without 4-bit blocks is another, kept where it is smaller and holds."""
    def latency_ratio(original, path: Path, feed: dict) -> float:  # noqa: ANN001
        model = onnx.load(str(path))
        return 1.2 if any(n.op_type == "MatMulNBits" for n in model.graph.node) else 1.0

    def chosen_bytes(result) -> int:  # noqa: ANN001
        return next(f["bytes"] for f in result.front if f["chosen"])

    monkeypatch.setattr(speed, "latency_ratio", latency_ratio)
    result = search(MODEL, CALIB, target="top1>=0.99")
    assert result.met and "int4" not in result.plan.counts()
    assert top1(MODEL, _serialized(result)) >= 0.99
    assert any("searched again" in n for n in result.notes), result.notes
    import importlib  # onnxcompress.auto.search the name is the function
    monkeypatch.setattr(importlib.import_module("onnxcompress.auto.search"), "without_slower_kinds",
                        lambda layers, speed: None)
    moved_only = search(MODEL, CALIB, target="top1>=0.99")
    assert "int4" not in moved_only.plan.counts()
    assert chosen_bytes(result) < chosen_bytes(moved_only)


def _serialized(result) -> bytes:  # noqa: ANN001
    from onnxcompress.model import load_model, to_proto
    from onnxcompress.pipeline import Pipeline

    return to_proto(Pipeline.from_recipe(result.recipe).run(load_model(MODEL)).model).SerializeToString()


class _BuiltDecoder:
    """The guard's evaluator interface over the merged-decoder toy (a table only Gathers read)."""

    def __init__(self) -> None:
        from onnxcompress.model import load_model
        from tests.merged_decoder import merged_decoder

        self.original = load_model(merged_decoder())

    def serialized(self, plan: Plan) -> bytes:
        from onnxcompress.model import to_proto
        from onnxcompress.pipeline import Pipeline

        model = Pipeline.from_recipe(plan.to_recipe(["table", "w1", "head"])).run(self.original).model
        return to_proto(model).SerializeToString()

    def __call__(self, plan: Plan, *, held: bool = False) -> Evaluation:
        met = Fidelity({"top1>=0.99": 1.0}, True, 0.01)
        return Evaluation(plan, 0.0, 0, met, held=met)


def test_k_means_tables_decoded_every_call_are_timed_and_a_slower_plan_is_said(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # k-means is taken to fold at load, so a plan of k-means only was never timed; a table that
    # only Gathers read decodes its gathered rows every call (a merged GPT's 0.25 ms step at
    # k-means 5: 0.91x fp32's latency, said nowhere)
    from tests.merged_decoder import merged_decoder

    onnx.save(merged_decoder(), tmp_path / "m.onnx")
    built, calls, notes = _BuiltDecoder(), [], []
    layers = [_layer("table", 153_600), _layer("w1", 16_384), _layer("head", 153_600)]
    tables = Evaluation(Plan({"table": "kmeans5", "w1": "kmeans8", "head": "kmeans5"}), 0.0, 0,
                        Fidelity({}, True, 0.0), held=Fidelity({}, True, 0.0))
    monkeypatch.setattr(speed, "latency_ratio", _scripted([1.09], calls))
    ev, out = speed_guard(tables, layers, built, tmp_path / "m.onnx", built.original, {},  # type: ignore[arg-type]
                          lambda *a: None, notes)
    assert ev is tables and len(calls) == 1 and out["ratio"] == 1.09
    assert any("gathered rows every call" in n for n in notes)
    # without k-means on the table, the plan folds at load: not timed
    calls.clear()
    folded = Evaluation(Plan({"table": "fp16", "w1": "kmeans8", "head": "kmeans5"}), 0.0, 0,
                        Fidelity({}, True, 0.0), held=Fidelity({}, True, 0.0))
    ev, out = speed_guard(folded, layers, built, tmp_path / "m.onnx", built.original, {},  # type: ignore[arg-type]
                          lambda *a: None, [])
    assert calls == [] and out["ratio"] is None
