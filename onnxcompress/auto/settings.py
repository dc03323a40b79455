"""The one-flag runs a user would make instead of auto mode, tried against its plan last.

``--kmeans 8 --calibration``, ``--quantize static`` and ``--quantize dynamic`` are not plans of
auto's options: static int8 quantizes activations too (an option no layer has alone), and the
k-means pass's defaults share codebooks across layers. Where auto's plan is estimated no cheaper
than such a run would be, the run is built as the CLI builds it (its passes' own speed and memory
guards included) and judged like a plan (search and held-apart data; session memory against the
original's), and the smallest that holds and is no larger than the plan becomes the answer, its
recipe the CLI's own. Measured before (session 36, batches 30-35): auto ended 4-8% above static
int8 where an 18-sample search split read one int8 flip (emotion_xception, cifar_cnn), and where
its tensors equalled a uniform run's, its longer recipe was the whole difference (iris_mlp,
mnist_cntk, langid_svc); with these runs (and the plan form of recipes, ``auto.plan``) auto was at
least as small as the best uniform setting on 11 of those 16 models, not 5
(``benchmarks/results/session37_auto_vs_uniform.md``). The held-apart samples are the calibration
file's tail when no ``--validate-data`` is given, and these runs read the whole file as the CLI
does: a uniform setting is no choice fitted to the samples it is checked on.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from onnxcompress.auto.guard import MEMORY_FEEDS, measure_memory, memory_limit
from onnxcompress.auto.paths import estimated_cost, holds, option_name, uniform_cost, uniform_option
from onnxcompress.auto.plan import Plan
from onnxcompress.auto.targets import Fidelity
from onnxcompress.passes._bit_allocation import LayerChoices

if TYPE_CHECKING:
    from onnxcompress.auto.search import Evaluation, _Evaluator

logger = logging.getLogger(__name__)

#: The runs, each with the auto option its layers are shown at; the estimate of its bytes is
#: that option's uniform price (k-means 8: or int8's, the form it writes small weights in).
SETTINGS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("--kmeans 8", {"pass": "kmeans", "bits": 8}, "kmeans8"),
    ("--quantize static", {"pass": "quantize", "mode": "static"}, "int8"),
    ("--quantize dynamic", {"pass": "quantize", "mode": "dynamic"}, "int8"),
)
#: A run is built when its estimate is within this share above the plan's: the CLI's forms (shared
#: codebooks, int8-exact k-means) and a shorter recipe come in under the per-layer prices.
ESTIMATE_SLACK = 0.05


def best_setting(final: Evaluation, layers: list[LayerChoices], evaluate: _Evaluator, calibration: Any,
                 *, seed: int, deadline: float, memory_base: int | None,
                 notes: list[str]) -> tuple[Evaluation, dict[str, Any]] | None:
    """The smallest one-flag run that holds and is no larger than ``final`` (any that holds,
    smallest first, when ``final`` does not), as its evaluation and recipe; None when none is."""
    planned = estimated_cost(final.plan, layers)
    best: tuple[Evaluation, dict[str, Any], str] | None = None
    runs = sorted(SETTINGS, key=lambda s: _estimate(layers, s[2]))
    for flag, step, option in runs:
        if time.perf_counter() > deadline:
            break
        if holds(final) and _estimate(layers, option) > planned * (1 + ESTIMATE_SLACK):
            continue
        recipe = {"seed": seed, "passes": [dict(step)]}
        ev = _judged(flag, recipe, _uniform_plan(layers, option), evaluate, calibration, memory_base)
        if ev is None or not holds(ev):
            continue
        bound = best[0].file_bytes if best else (final.file_bytes if holds(final) else None)
        if bound is None or ev.file_bytes <= bound:
            best = (ev, recipe, flag)
    if best is None:
        return None
    ev, recipe, flag = best
    missed = "" if holds(final) else " (which missed it)"
    notes.append(f"{flag} met the target in {ev.file_bytes:,} bytes, against the per-layer plan's "
                 f"{final.file_bytes:,}{missed}: its recipe is the answer")
    return ev, recipe


def _estimate(layers: list[LayerChoices], option: str) -> int:
    return min(uniform_cost(layers, name) for name in {option, "int8"})


def _uniform_plan(layers: list[LayerChoices], option: str) -> Plan:
    """The plan a run stands for in the report: each layer at ``option``, or what a uniform pass
    stores where it has none (``paths.uniform_option``)."""
    return Plan({layer.label: option_name(uniform_option(layer, option)) for layer in layers})  # type: ignore[arg-type]


def _judged(flag: str, recipe: dict[str, Any], plan: Plan, evaluate: _Evaluator, calibration: Any,
            memory_base: int | None) -> Evaluation | None:
    """``recipe`` built on the whole calibration data and judged as ``plan``; None when it fails
    to build or needs more session memory than the original (``memory_base``)."""
    from onnxcompress.errors import OnnxCompressError

    key = ("setting", flag)
    try:
        ev = evaluate.build(key, plan, recipe, calibration, what=flag)
    except OnnxCompressError as e:
        logger.info("auto: %s not judged: %s", flag, e)
        return None
    if not ev.fidelity.met:
        ev.held = Fidelity({}, False, -1.0)
        return ev
    path = evaluate.hold(key)
    if holds(ev) and memory_base is not None:
        used = measure_memory(path, evaluate.search[0][:MEMORY_FEEDS])
        if used is not None and used > memory_limit(memory_base):
            logger.info("auto: %s needs %.2fx the original's session memory", flag, used / memory_base)
            return None
    return ev
