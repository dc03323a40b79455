"""Paths through the space of per-layer plans, from the options' measured costs and errors to
the plan the search keeps (the steps of :func:`onnxcompress.auto.search.search` that choose;
``search`` measures and builds):

- ``allocation_path``: the budgeted allocation's plans from the cheapest options to all float;
- ``bisect``: the cheapest plan on it that meets the target on the search data;
- ``uniform_check``: every layer at one option, where that is cheaper and meets the target;
- ``allocated_check``: the k-means pass's own allocation at one width (``--kmeans B
  --calibration``), where that is cheaper and meets the target;
- ``refine``: a second path below the winner (each layer keeps its option or takes a cheaper one);
- ``verify``: the held-apart check, backing the worst layers off until it holds.

An option is named by ``Option.bits``: 0 is float, i the i-th candidate (``option_names``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from onnxcompress._text import value_text
from onnxcompress.auto.candidates import FLOAT, KMEANS_BITS, available_candidates
from onnxcompress.auto.plan import Plan
from onnxcompress.auto.targets import Fidelity
from onnxcompress.errors import OnnxCompressError
from onnxcompress.passes._bit_allocation import LayerChoices, Option, allocate

if TYPE_CHECKING:
    from onnxcompress.auto.search import Evaluation, _Evaluator

logger = logging.getLogger(__name__)

PATH_POINTS = 24  # budgets along the allocation path
BACKOFF_ROUNDS = 8
Progress = Callable[[str, int, int], None]


def option_names() -> list[str]:
    """Option.bits -> option name: 0 is float, i the i-th of every candidate (measured or not)."""
    return [FLOAT.name] + [c.name for c in available_candidates("all")]


def option_name(option: Option) -> str:
    return option_names()[option.bits]


def option_of(layer: LayerChoices, name: str) -> Option | None:
    """``layer``'s option called ``name`` (None: the layer has no such option)."""
    return next((o for o in layer.options if option_name(o) == name), None)


def allocation_path(layers: list[LayerChoices]) -> list[tuple[Plan, float]]:
    """Plans from the cheapest to all float, one per budget (deduplicated), with their summed
    estimated error."""
    low = sum(min(o.nbytes for o in layer.options) for layer in layers)
    high = sum(max(o.nbytes for o in layer.options) for layer in layers)
    budgets = [low * (high / max(low, 1)) ** (i / (PATH_POINTS - 1)) for i in range(PATH_POINTS)]
    seen: dict[tuple, tuple[Plan, float]] = {}
    for budget in budgets + [high]:
        chosen = allocate(layers, budget)
        key = tuple(sorted((k, o.bits) for k, o in chosen.items()))
        if key not in seen:
            plan = Plan({k: option_name(o) for k, o in chosen.items()})
            seen[key] = (plan, sum(layer.error(chosen[layer.label]) for layer in layers))
    return list(seen.values())


def bisect(path: list[tuple[Plan, float]], evaluate: _Evaluator, deadline: float,
            report: Progress) -> Evaluation:
    """The cheapest plan on the path that meets the target on the search data (the path's
    fidelity is nearly monotone; bisection assumes it), or the all-float end."""
    best = evaluate(path[-1][0])
    if not best.fidelity.met:  # all float fails: no plan can meet it (the target is unreachable)
        return best
    rounds = max(1, math.ceil(math.log2(len(path) + 1)))
    return _bisect_between(path, best, evaluate, deadline, report, "searching plans", rounds)


def _bisect_between(path: list[tuple[Plan, float]], best: Evaluation, evaluate: _Evaluator,
                    deadline: float, report: Progress, what: str, rounds: int,
                    cheaper_only: bool = False, held: bool = False) -> Evaluation:
    """Bisect ``path`` below its last plan, ``best`` (measured, meets the target): a plan that
    meets the target moves the upper end down, one that misses moves the lower end up.
    ``cheaper_only`` keeps a met plan only when its measured cost is below ``best``'s (the
    refinement path's estimates can misorder plans close in cost); ``held``: a plan meets the
    target when it also holds on the held-apart data (:func:`holds`)."""
    lo, hi, done = 0, len(path) - 1, 0
    while lo < hi and time.perf_counter() < deadline:
        mid = (lo + hi) // 2
        ev = evaluate(path[mid][0], held=held)
        done += 1
        report(what, done, rounds)
        met = holds(ev) if held else ev.fidelity.met
        if met:
            hi = mid
            if not cheaper_only or ev.cost < best.cost:
                best = ev
        else:
            lo = mid + 1
    return best


def uniform_check(chosen: Evaluation, layers: list[LayerChoices], evaluate: _Evaluator,
                   deadline: float, screened: Mapping[str, bool] | None = None,
                   held: bool = False) -> Evaluation:
    """Every layer at one option is a plan too: try those estimated cheaper than ``chosen``,
    cheapest first, and keep the first that meets the target on the search data (``held``: and on
    the held-apart data, ``holds``). Where the sensitivity estimates mislead the allocation (a
    probe on one sample, a metric with jumps such as detection F1), this keeps auto mode at least
    as small as the best uniform setting. Where the time budget ran out before anything smaller
    than the original was found (measuring HiFi-GAN's options took 480 of its 600 s, and it
    stayed float where float16 met the target), the cheapest uniform plan whose pricing model met
    the target is still tried, once."""
    if not chosen.fidelity.met:
        return chosen
    late = time.perf_counter() > deadline and set(chosen.plan.choices.values()) <= {FLOAT.name}
    uniform = []
    for name in option_names()[1:]:
        choices, cost = {}, 0
        for layer in layers:
            opt = uniform_option(layer, name)
            if opt is None:
                break
            choices[layer.label] = option_name(opt)
            cost += opt.nbytes
        else:
            uniform.append((cost, name, Plan(choices)))
    chosen_cost = estimated_cost(chosen.plan, layers)
    for cost, name, plan in sorted(uniform, key=lambda u: (u[0], u[1])):
        if cost >= chosen_cost or time.perf_counter() > deadline and not late:
            break
        if not (screened or {}).get(name, True) or late and screened is None:
            logger.info("auto: uniform %s not built: its pricing model missed the target", name)
            continue
        ev = evaluate(plan, held=True) if held else evaluate(plan)
        if (holds(ev) if held else ev.fidelity.met) and ev.cost < chosen.cost:
            return ev
        if late:
            break
    return chosen


def allocated_check(chosen: Evaluation, layers: list[LayerChoices], evaluate: _Evaluator,
                    deadline: float) -> Evaluation:
    """The k-means pass's own plans: ``--kmeans B --calibration`` gives each layer a width by its
    own sensitivity probe within B bits' bytes, a plan the search's path need not pass through
    (its estimates order layers by another probe). Widths whose uniform plan is estimated
    cheaper than ``chosen`` are tried from the widest down, while each meets the target on the
    search data and costs less (LiDAR PointNet: auto's path ended at 7.46x with a flip where
    ``--kmeans 4 --calibration`` keeps every decision at 7.71x). Size objective only: the pass
    allocates bytes."""
    if not chosen.fidelity.met or evaluate.objective != "size":
        return chosen
    chosen_cost = estimated_cost(chosen.plan, layers)
    best = chosen
    for bits in sorted(KMEANS_BITS[:-1], reverse=True):
        if uniform_cost(layers, f"kmeans{bits}") >= chosen_cost:
            continue
        if time.perf_counter() > deadline:
            break
        plan = kmeans_allocation(evaluate, bits, layers)
        if plan is None or plan.choices == best.plan.choices:
            continue
        ev = evaluate(plan)
        logger.info("auto: the k-means pass's allocation at %d bits: %s", bits, ev.fidelity.values)
        if not (ev.fidelity.met and ev.cost < best.cost):
            break
        best = ev
    return best


def estimated_cost(plan: Plan, layers: list[LayerChoices]) -> int:
    """The summed option prices of ``plan`` (built from ``layers``' options)."""
    return sum(option_of(layer, plan.choices[layer.label]).nbytes  # type: ignore[union-attr]
               for layer in layers)


def uniform_cost(layers: list[LayerChoices], name: str) -> int:
    """Estimated bytes of every layer at option ``name`` (``uniform_option``)."""
    return sum(uniform_option(layer, name).nbytes for layer in layers)  # type: ignore[union-attr]


def uniform_option(layer: LayerChoices, name: str) -> Option | None:
    """``layer``'s option in the plan of every layer at ``name``: where it has none, float16 if that
    is cheaper than float, as a uniform pass stores what it leaves (``--quantize-rest``,
    ``--kmeans-rest``); FSA-Net's 18 layers under int8's 512 values were priced float32 and
    auto's uniform int8 plan 4% above ``--quantize static``'s file."""
    own = option_of(layer, name)
    if own is not None:
        return own
    rest = [o for o in (option_of(layer, "fp16"), option_of(layer, FLOAT.name)) if o is not None]
    return min(rest, key=lambda o: o.nbytes) if rest else None


def kmeans_allocation(evaluate: _Evaluator, bits: int, layers: list[LayerChoices]) -> Plan | None:
    """The k-means pass's per-layer widths at ``bits`` on the search's calibration samples, as a
    plan of the search's options (a width a layer has no option for: its next wider one, else
    float); None where the pass allocated nothing (its probe could not run)."""
    from onnxcompress.pipeline import Pipeline

    recipe = {"seed": evaluate.seed, "check": "none",
              "passes": [{"pass": "kmeans", "bits": bits, "allocation": "sensitivity",
                          "calibration_samples": len(evaluate.calib)}]}
    calibration = evaluate.tmp / "calib.npz"
    try:
        result = Pipeline.from_recipe(recipe).run(
            evaluate.original, calibration=str(calibration) if calibration.exists() else evaluate.calib)
    except OnnxCompressError as e:
        logger.info("auto: the k-means pass's allocation at %d bits did not run (%s)", bits, e)
        return None
    allocated = {stat.name: stat.extra["allocated_bits"] for p in result.passes for stat in p.layers
                 if "allocated_bits" in stat.extra}
    if not allocated:
        return None
    choices = {}
    for layer in layers:
        width = allocated.get(layer.label)
        name = FLOAT.name
        if width is not None:
            name = next((f"kmeans{b}" for b in KMEANS_BITS if b >= width
                         and option_of(layer, f"kmeans{b}") is not None), FLOAT.name)
        choices[layer.label] = name
    return Plan(choices)


def refine(chosen: Evaluation, layers: list[LayerChoices], evaluate: _Evaluator, deadline: float,
            report: Progress) -> Evaluation:
    """A second allocation path below ``chosen`` (a plan that meets the target, often a uniform
    one): each layer keeps its option or takes one no costlier, from the cheapest such plan up
    to ``chosen`` itself, bisected like the first path. The first path spans all float to the
    cheapest options, so its plans are far apart near the good end; this one mixes cheaper
    options into the winning plan (ppocr_cls: int8 on every layer met the target, plans mixing
    k-means widths into it were never on the first path)."""
    if not chosen.fidelity.met:
        return chosen
    narrowed = []
    for layer in layers:
        name = chosen.plan.choices.get(layer.label, FLOAT.name)
        top = option_of(layer, name)
        assert top is not None  # the plan was built from these options
        options = [top] + [o for o in layer.options if o.nbytes < top.nbytes]
        # the chosen option is the layer's no-error point here: what the path spends bytes on is
        # getting back to it
        base = layer.error(top)
        narrowed.append(LayerChoices(layer.label, [Option(o.bits, o.nbytes, max(0.0, layer.error(o) - base))
                                                   for o in options], sensitivity=1.0))
    path = [p for p in allocation_path(narrowed)
            if p[0].choices != chosen.plan.choices]
    if not path:
        return chosen
    path.append((chosen.plan, 0.0))
    rounds = max(1, math.ceil(math.log2(len(path))))
    return _bisect_between(path, chosen, evaluate, deadline, report, "refining the plan", rounds,
                           cheaper_only=True)


def verify(chosen: Evaluation, layers: list[LayerChoices], evaluate: _Evaluator, deadline: float,
            report: Progress, notes: list[str],
            path: list[tuple[Plan, float]] | None = None) -> tuple[Evaluation, bool]:
    """Measure ``chosen`` on the held-apart data (with the search data: ``_Evaluator._judge``);
    while it fails, move the layers with the largest estimated error one step up their options
    (less error, more cost) and measure again. Once it holds, the last round is trimmed
    (``_fewest_backed_off``), and after more than one round the allocation ``path`` is judged on
    the held-apart data too (``held_path_check``)."""
    by_label = {layer.label: layer for layer in layers}
    ev = evaluate(chosen.plan, held=True)
    tried = [ev]
    step = 1
    failed, moved = ev, []  # the last plan that failed, and the layers its round backed off
    for i in range(BACKOFF_ROUNDS):
        if holds(ev) or time.perf_counter() > deadline:
            break
        report("backing off", i + 1, BACKOFF_ROUNDS)
        plan = Plan(dict(ev.plan.choices))
        ranked = sorted(plan.choices, key=lambda k: -option_error(by_label[k], plan.choices[k]))
        failed, moved = ev, []
        for label in ranked:
            better = _step_up(by_label[label], plan.choices[label])
            if better is None:
                continue
            plan.choices[label] = better
            moved.append(label)
            if len(moved) >= step:
                break
        if not moved:
            break
        notes.append(f"held-out check failed ({fidelity_text(ev.held)}): {len(moved)} layer(s) "  # type: ignore[arg-type]
                     "backed off")
        ev = evaluate(plan, held=True)
        tried.append(ev)
        step *= 2
    met = holds(ev)
    if met and len(moved) > 1:
        ev = _fewest_backed_off(failed, ev, moved, evaluate, deadline, notes)
    if met and path and len(tried) > 2:  # more than one round
        ev = held_path_check(ev, path, evaluate, deadline, notes, report)
    if met and len(tried) > 1:
        # a back-off can end above a uniform plan the search passed over as costlier than its
        # own plan (it tried uniform plans only below that one)
        backed = ev
        ev = uniform_check(ev, layers, evaluate, deadline, held=True)
        if ev is not backed:
            notes.append(f"held-out check: a uniform plan holds below the backed-off one "
                         f"({_uniform_name(ev.plan)})")
    if not met:
        ev = max(tried, key=lambda e: (min(e.held.margin, e.fidelity.margin), -e.cost))  # type: ignore[union-attr]
    return ev, met


def _uniform_name(plan: Plan) -> str:
    names = sorted(set(plan.choices.values()))
    return names[0] if len(names) == 1 else ", ".join(names)


def holds(ev: Evaluation) -> bool:
    """Whether ``ev`` meets the target on the search data and on the held-apart data."""
    return ev.held is not None and ev.held.met and ev.fidelity.met


def _fewest_backed_off(failed: Evaluation, passed: Evaluation, moved: list[str],
                       evaluate: _Evaluator, deadline: float, notes: list[str]) -> Evaluation:
    """The doubling back-off's last round moved ``moved`` (worst first) and the plan held: the
    fewest of them (a prefix, by bisection) with which it still holds. The round doubles, so it
    may move twice the layers needed (ppocr_rec: its last round ended larger than a plan of
    fewer steps)."""
    lo, hi, best = 0, len(moved), passed
    while hi - lo > 1 and time.perf_counter() < deadline:
        mid = (lo + hi) // 2
        plan = Plan(dict(failed.plan.choices))
        for label in moved[:mid]:
            plan.choices[label] = passed.plan.choices[label]
        ev = evaluate(plan, held=True)
        if holds(ev):
            hi, best = mid, ev
        else:
            lo = mid
    if hi < len(moved):
        notes.append(f"held-out check holds with {hi} of the last {len(moved)} layers backed off")
    return best


def held_path_check(final: Evaluation, path: list[tuple[Plan, float]], evaluate: _Evaluator,
                     deadline: float, notes: list[str], report: Progress | None = None) -> Evaluation:
    """After a back-off of more than one round (``verify``: the search's plan was far from
    holding on the held-apart data): the allocation path's plans judged by the held-out check too, by
    bisection; the cheapest that holds replaces ``final`` when it costs less. Moving the worst
    layers one option up from a plan chosen on the search data can end far above a plan the
    path has (ppocr_rec: 1.14x after 4 rounds)."""
    rounds = max(1, math.ceil(math.log2(len(path) + 1)))
    best = _bisect_between(path, final, evaluate, deadline, report or (lambda *_: None),
                           "checking the path on held-apart data", rounds, held=True)
    if best is not final and best.cost < final.cost:
        notes.append(f"a plan of the allocation path holds on the held-apart data at "
                     f"{best.cost:.4g} (backed off: {final.cost:.4g}): taken")
        return best
    return final


def option_error(layer: LayerChoices, name: str) -> float:
    option = option_of(layer, name)
    return 0.0 if option is None else layer.error(option)


def _step_up(layer: LayerChoices, name: str) -> str | None:
    """The cheapest option of ``layer`` with less estimated error than ``name``'s; where the
    estimate sees none (an error measured as zero on the search data, or, under the latency
    objective, the float op timed slower than the option's), the next costlier option, and last
    the original weight: the held-out check failed, so the estimate is not to be trusted here.
    Every step lowers the estimated error or raises the cost, so the back-off cannot cycle."""
    if name == FLOAT.name:
        return None
    current = option_error(layer, name)
    option = option_of(layer, name)
    cost = 0 if option is None else option.nbytes
    better = [o for o in layer.options if layer.error(o) < current and o.nbytes >= cost]
    if not better:
        better = [o for o in layer.options if layer.error(o) <= current and o.nbytes > cost]
    if better:
        return option_name(min(better, key=lambda o: (o.nbytes, layer.error(o))))
    return FLOAT.name


def fidelity_text(f: Fidelity) -> str:
    return ", ".join(f"{k} {value_text(v)}" for k, v in f.values.items())


def explain(plan: Plan, layers: list[LayerChoices]) -> list[dict[str, Any]]:
    """Per layer: its choice and why (cost, measured deviation, and what the next option up
    would have cost), in the report's plan table."""
    rows = []
    for layer in layers:
        name = plan.choices.get(layer.label, FLOAT.name)
        opt = option_of(layer, name)
        assert opt is not None  # the plan was built from these options
        floor = min(layer.options, key=lambda o: o.nbytes)
        if name == FLOAT.name:
            why = "every option moved the outputs too much for the target"
        elif opt is floor:
            why = "cheapest option; the combined model still meets the target"
        else:
            why = (f"{option_name(floor)} would save {opt.nbytes - floor.nbytes:,} more but move the "
                   f"outputs {layer.error(floor):.2g} vs {layer.error(opt):.2g}")
        rows.append({"layer": layer.label, "choice": name, "cost": opt.nbytes,
                     "float_cost": max(o.nbytes for o in layer.options),
                     "deviation": float(f"{layer.error(opt):.3g}"), "why": why})
    return rows
