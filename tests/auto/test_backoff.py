"""The held-out check's back-off (``auto.paths.verify``): rounds that double the layers they
move, then the fewest of the last round's layers with which the target still holds."""

from __future__ import annotations

import time

from onnxcompress.auto.paths import verify
from onnxcompress.auto.plan import Plan
from onnxcompress.auto.search import Evaluation
from onnxcompress.auto.targets import Fidelity
from onnxcompress.passes._bit_allocation import LayerChoices, Option

# option index -> name (auto.paths.option_names): 3 = kmeans4, 10 = fp16
KMEANS4, FP16 = 3, 10


def _layers(n: int) -> list[LayerChoices]:
    """n layers, each k-means 4 (cheap, error) or fp16 (4x the bytes, no error); layer i's
    k-means 4 error grows with i, so the back-off takes the highest first."""
    return [LayerChoices(f"w{i}", [Option(KMEANS4, 100, 0.01 * (i + 1)), Option(FP16, 400, 0.0)],
                         sensitivity=1.0) for i in range(n)]


class _Evaluator:
    """The held-out check holds once every layer in ``needed`` is fp16."""

    def __init__(self, needed: set[str]) -> None:
        self.needed = needed
        self.calls: list[dict[str, str]] = []

    def __call__(self, plan: Plan, *, held: bool = False) -> Evaluation:
        self.calls.append(dict(plan.choices))
        ok = all(plan.choices.get(k) == "fp16" for k in self.needed)
        cost = sum(400 if v == "fp16" else 100 for v in plan.choices.values())
        fidelity = Fidelity({"top1": 1.0 if ok else 0.9}, ok, 0.0 if ok else -0.09)
        return Evaluation(plan, float(cost), cost, Fidelity({"top1": 1.0}, True, 0.0), fidelity)


def _run(n: int, needed: set[str]) -> tuple[Evaluation, bool, _Evaluator, list[str]]:
    layers = _layers(n)
    chosen = Evaluation(Plan({layer.label: "kmeans4" for layer in layers}), 100.0 * n, 100 * n,
                        Fidelity({"top1": 1.0}, True, 0.0))
    evaluate, notes = _Evaluator(needed), []
    ev, met = verify(chosen, layers, evaluate, time.perf_counter() + 60,  # type: ignore[arg-type]
                     lambda *a: None, notes)
    return ev, met, evaluate, notes


def test_the_last_round_keeps_only_the_layers_the_target_needs():
    # rounds move 1, 2, 4 layers (w9; w8, w7; w6..w3): the target needs w9..w4, so the third
    # round holds with 4 moved, and the bisection gives back w3
    ev, met, evaluate, notes = _run(10, {f"w{i}" for i in range(4, 10)})
    assert met
    assert {k for k, v in ev.plan.choices.items() if v == "fp16"} == {f"w{i}" for i in range(4, 10)}
    assert any("holds with 3 of the last 4" in n for n in notes)
    # the check, three rounds, two bisection steps, and the one uniform plan below it (k-means 4
    # everywhere: it misses)
    assert len(evaluate.calls) == 4 + 2 + 1


def test_a_round_that_needs_all_its_layers_is_kept_whole():
    ev, met, _, notes = _run(10, {f"w{i}" for i in range(3, 10)})
    assert met
    assert sum(v == "fp16" for v in ev.plan.choices.values()) == 7
    assert not any("holds with" in n for n in notes)


def test_an_unmet_target_returns_the_best_tried():
    ev, met, _, _ = _run(3, {"w0", "w1", "w2", "missing"})  # no plan can hold
    assert not met
    assert ev.held is not None and not ev.held.met


def test_a_cheaper_plan_of_the_allocation_path_that_holds_replaces_a_long_back_off():
    from onnxcompress.auto.paths import held_path_check

    layers = _layers(8)
    # the path: k layers fp16 (the highest-error first), k = 0..8, cheapest first
    path = [(Plan({layer.label: "fp16" if i >= 8 - k else "kmeans4" for i, layer in enumerate(layers)}), 0.0)
            for k in range(9)]
    evaluate = _Evaluator({"w7", "w6", "w5"})  # holds from k = 3 on: cost 3 x 400 + 5 x 100
    backed = evaluate(Plan({layer.label: "fp16" for layer in layers}), held=True)  # all fp16: 3200
    notes: list[str] = []
    best = held_path_check(backed, path, evaluate, time.perf_counter() + 60, notes)  # type: ignore[arg-type]
    assert best.cost == 1700 and best.held is not None and best.held.met
    assert any("allocation path holds" in n for n in notes)
    # a backed-off plan cheaper than anything the path has that holds stays
    cheap = evaluate(path[3][0], held=True)
    assert held_path_check(cheap, path, evaluate, time.perf_counter() + 60, []) is cheap  # type: ignore[arg-type]


def test_a_layer_the_estimate_calls_harmless_is_still_backed_off():
    # w0's k-means 4 has zero estimated error (it moved no output on the search data), w1's
    # float op was timed slower than its option (latency noise): the held-out check needs both
    # back, and the back-off takes them to fp16 / float instead of stopping with nothing to move
    layers = [LayerChoices("w0", [Option(KMEANS4, 100, 0.0), Option(FP16, 400, 0.0)], sensitivity=1.0),
              LayerChoices("w1", [Option(0, 90, 0.0), Option(KMEANS4, 100, 0.05)], sensitivity=1.0)]
    chosen = Evaluation(Plan({"w0": "kmeans4", "w1": "kmeans4"}), 200.0, 200,
                        Fidelity({"top1": 1.0}, True, 0.0))

    class _Needs(_Evaluator):
        def __call__(self, plan: Plan, *, held: bool = False) -> Evaluation:
            ev = super().__call__(plan, held=held)
            ok = plan.choices["w0"] == "fp16" and plan.choices["w1"] == "float"
            return Evaluation(plan, ev.cost, ev.file_bytes, ev.fidelity,
                              Fidelity({"top1": 1.0 if ok else 0.9}, ok, 0.0 if ok else -0.09))

    ev, met = verify(chosen, layers, _Needs(set()), time.perf_counter() + 60, lambda *a: None, [])  # type: ignore[arg-type]
    assert met and ev.plan.choices == {"w0": "fp16", "w1": "float"}


def test_the_back_off_never_moves_a_float_layer():
    from onnxcompress.auto.paths import _step_up

    layer = LayerChoices("w", [Option(0, 100, 0.0), Option(FP16, 400, 0.0)], sensitivity=1.0)
    assert _step_up(layer, "float") is None
    assert _step_up(layer, "fp16") == "float"


def test_a_uniform_plan_that_holds_below_the_backed_off_one_replaces_it():
    # skill_mlp (batch 22): the back-off took its first layer to fp16 (2.32x) where every layer
    # at k-means 8 holds on both data (3.88x); the search had passed that uniform plan over as
    # costlier than its own k-means 6 plan
    KMEANS6, KMEANS8 = 5, 7
    # w0's estimates rank it first in both rounds: it goes to k-means 8, then to fp16, with w1
    layers = [LayerChoices("w0", [Option(0, 4000, 0.0), Option(KMEANS6, 750, 0.05),
                                  Option(KMEANS8, 1000, 0.03), Option(FP16, 2000, 0.0)], sensitivity=1.0),
              LayerChoices("w1", [Option(0, 400, 0.0), Option(KMEANS6, 75, 0.02),
                                  Option(KMEANS8, 100, 0.005), Option(FP16, 200, 0.0)], sensitivity=1.0)]
    prices = {layer.label: {o.bits: o.nbytes for o in layer.options} for layer in layers}
    index = {"float": 0, "kmeans6": KMEANS6, "kmeans8": KMEANS8, "fp16": FP16}

    def evaluate(plan: Plan, *, held: bool = False) -> Evaluation:
        cost = sum(prices[k][index[v]] for k, v in plan.choices.items())
        ok = plan.choices["w1"] != "kmeans6"  # the held-out data needs w1 at 8 bits or more
        return Evaluation(plan, float(cost), cost, Fidelity({"top1": 1.0}, True, 0.0),
                          Fidelity({"top1": 1.0 if ok else 0.9}, ok, 0.0 if ok else -0.09))

    chosen = Evaluation(Plan({"w0": "kmeans6", "w1": "kmeans6"}), 825.0, 825, Fidelity({"top1": 1.0}, True, 0.0))
    notes: list[str] = []
    ev, met = verify(chosen, layers, evaluate, time.perf_counter() + 60, lambda *a: None, notes)  # type: ignore[arg-type]
    assert met and ev.plan.choices == {"w0": "kmeans8", "w1": "kmeans8"} and ev.cost == 1100
    assert any("uniform plan holds" in n for n in notes)


def test_past_the_time_budget_an_all_float_result_still_tries_the_cheapest_uniform_plan_that_priced_well():
    """HiFi-GAN's options took 480 of its 600 s to measure: the search had no time left and kept
    every layer float, where float16 everywhere had met the target in its pricing run."""
    from onnxcompress.auto.paths import uniform_check

    layers = _layers(3)
    floats = Evaluation(Plan({layer.label: "float" for layer in layers}), 4800.0, 4800,
                        Fidelity({"top1": 1.0}, True, 0.0))
    for layer in layers:
        layer.options.insert(0, Option(0, 4 * 400, 0.0))  # float: the all-float plan's cost
    evaluate = _Evaluator(needed={layer.label for layer in layers})  # only fp16 everywhere meets it
    past = time.perf_counter() - 1
    screened = {"kmeans4": False, "fp16": True}
    ev = uniform_check(floats, layers, evaluate, past, screened)  # type: ignore[arg-type]
    assert set(ev.plan.choices.values()) == {"fp16"} and len(evaluate.calls) == 1
    # within the budget nothing changes; past it, a plan already smaller than float is kept
    # as it is, and without the pricing runs' word nothing is tried blindly
    smaller = Evaluation(Plan({layer.label: "kmeans4" for layer in layers}), 300.0, 300,
                         Fidelity({"top1": 1.0}, True, 0.0))
    assert uniform_check(smaller, layers, evaluate, past, screened) is smaller  # type: ignore[arg-type]
    assert uniform_check(floats, layers, evaluate, past, None) is floats  # type: ignore[arg-type]
    assert len(evaluate.calls) == 1


def test_a_uniform_plan_stores_layers_without_the_option_in_float16_as_the_uniform_pass_does():
    """``--quantize`` stores the layers it leaves float (under 512 values) in float16; auto's
    uniform int8 plan priced them float32 (FSA-Net: 18 small layers, the plan 4% above the
    uniform file), so it was passed over. Where a layer has no such option either, float."""
    from onnxcompress.auto.paths import uniform_cost, option_names, uniform_check

    int8 = option_names().index("int8")
    big = LayerChoices("big", [Option(0, 40000, 0.0), Option(int8, 10100, 0.001),
                               Option(FP16, 20050, 0.0)], sensitivity=1.0)
    small = LayerChoices("small", [Option(0, 1600, 0.0), Option(FP16, 850, 0.0)], sensitivity=1.0)
    bare = LayerChoices("bare", [Option(0, 300, 0.0)], sensitivity=1.0)
    layers = [big, small, bare]
    assert uniform_cost(layers, "int8") == 10100 + 850 + 300
    seen: list[dict[str, str]] = []

    def evaluate(plan: Plan, *, held: bool = False) -> Evaluation:
        seen.append(dict(plan.choices))
        cost = sum(next(o.nbytes for o in layer.options if option_names()[o.bits] == plan.choices[layer.label])
                   for layer in layers)
        return Evaluation(plan, float(cost), cost, Fidelity({"top1": 1.0}, True, 0.0))

    chosen = Evaluation(Plan({"big": "int8", "small": "float", "bare": "float"}), 12000.0, 12000,
                        Fidelity({"top1": 1.0}, True, 0.0))
    ev = uniform_check(chosen, layers, evaluate, time.perf_counter() + 60)  # type: ignore[arg-type]
    assert ev.plan.choices == {"big": "int8", "small": "fp16", "bare": "float"} and ev.cost == 11250
