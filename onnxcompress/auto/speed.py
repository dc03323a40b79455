"""The speed guard: auto mode's model (size objective) runs no slower than the original.

The size objective prices bytes only, and two of its options run a kernel of their own on every
call instead of folding back to the original's float weights at load: a 4-bit block weight
(``MatMulNBits``, which on a small matrix loses to onnxruntime's float GEMM) and, less so, int8
(a scale ``Mul`` after the op where the int8-exact form applies). atspm_head's auto plan (one
128x128 MatMul in 4-bit blocks) ran at 1.03-1.07x the fp32 latency. So the chosen model is timed
against the original on one search feed (runs alternated, ``passes._speed.alternate_latency``),
and while it is slower beyond ``SPEED_TOLERANCE`` (confirmed by a second timing), the layers on
the slowest kind of option move to the cheapest option of a faster kind with no more estimated
error (4-bit blocks -> int8 usually; then int8 -> a codebook, fp16 or float), and the combined
model is judged again on the search and held-apart data. A move that loses the target goes to
float instead; if that loses it too, the plan that met it is kept and the note says how slow.

A timing moves with the machine's load, so the decision is cached per machine (as the quantize
pass's speed guard caches its own): the same input and options give the same file.
``search(allow_slower=True)`` (``--auto-allow-slower``) skips the guard.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxcompress.auto.candidates import FLOAT, by_name
from onnxcompress.auto.paths import holds, option_error, option_name
from onnxcompress.auto.plan import Plan
from onnxcompress.passes._bit_allocation import LayerChoices

if TYPE_CHECKING:
    from onnxcompress.auto.guard import Progress
    from onnxcompress.auto.search import Evaluation, _Evaluator

logger = logging.getLogger(__name__)

#: Slower than the original by more than this (the quantize speed guard's tolerance for weight
#: forms) moves layers; the second timing must agree.
SPEED_TOLERANCE = 0.03
#: Seconds each timing alternates the two models for (a small model gets thousands of rounds).
TIMING_SECONDS = 1.0
MAX_ROUNDS = 2  # one per kind of per-call decode: 4-bit blocks, then int8
FOLDED = 2  # the speed tier of decodes folded at load: the original's kernels


def speed_tier(name: str, folded: bool = False) -> int:
    """How much per-call work an option's decode adds, moved away from in this order: 0 a 4-bit
    block weight (its own kernel every call), 1 int8 (one scale Mul after the op in the exact
    form), 2 the decodes onnxruntime folds into float weights at load (k-means, fp16, and int8
    written ``folded``: Cast + Mul on a small model or weight), 3 float."""
    if name == FLOAT.name:
        return 3
    pass_name = by_name(name).pass_name
    return FOLDED if folded and pass_name == "quantize" else {"blockq": 0, "quantize": 1}.get(pass_name, 2)


def next_plan(plan: Plan, layers: list[LayerChoices], to_float: bool = False,
              folded: frozenset[str] = frozenset()) -> tuple[Plan, int] | None:
    """``plan`` with every layer on its slowest kind of per-call decode moved to the cheapest
    option of a faster kind with no more estimated error (``to_float``: to float); None when no
    layer is on a per-call decode. ``folded``: the int8 layers the written plan decodes at load
    (``Evaluation.folded``)."""
    by_label = {layer.label: layer for layer in layers}
    for tier in range(FOLDED):
        moves: dict[str, str] = {}
        for label, name in plan.choices.items():
            if label not in by_label or speed_tier(name, label in folded) != tier:
                continue
            layer = by_label[label]
            current = option_error(layer, name)
            faster = [o for o in layer.options if speed_tier(option_name(o)) > tier
                      and layer.error(o) <= current and (not to_float or option_name(o) == FLOAT.name)]
            if faster:
                moves[label] = option_name(min(faster, key=lambda o: (o.nbytes, layer.error(o))))
        if moves:
            return Plan({**plan.choices, **moves}), len(moves)
    return None


def latency_ratio(original: Any, path: Path, feed: dict[str, Any]) -> float | None:
    """The plan's latency over the original's (a session) on ``feed``: the median of three
    alternated timings when the first says slower (None when either cannot run)."""
    from onnxcompress.errors import OnnxCompressError
    from onnxcompress.passes._speed import alternate_latency

    ratios: list[float] = []
    for _ in range(3):
        try:
            t_original, t_plan = alternate_latency([original, str(path)], feed, budget=TIMING_SECONDS)
        except (OnnxCompressError, ValueError, RuntimeError) as e:
            logger.info("auto: the speed guard did not time the plan: %s", e)
            return None
        ratios.append(t_plan / t_original if t_original > 0 else 1.0)
        if ratios[0] <= 1 + SPEED_TOLERANCE:
            break
    return statistics.median(ratios)


def speed_guard(chosen: Evaluation, layers: list[LayerChoices], evaluate: _Evaluator,
                original: Path | str, original_model: Any, feed: dict[str, Any], report: Progress,
                notes: list[str]) -> tuple[Evaluation, dict[str, Any]]:
    """``chosen``, or the plan moved to faster decodes until it is within ``SPEED_TOLERANCE`` of
    the original's latency; the second value is what was measured (``ratio``, ``rounds``,
    ``cached``)."""
    from onnxcompress import cache, runtime
    from onnxcompress.auto.guard import has_external_data, write_plan
    from onnxcompress.errors import OnnxCompressError

    out: dict[str, Any] = {"ratio": None, "rounds": 0, "cached": False, "moved_from": []}
    if next_plan(chosen.plan, layers, folded=chosen.folded) is None \
            and not _row_decoded_tables(chosen.plan, original_model):
        return chosen, out  # every layer folds at load already: the original's kernels
    key = _decision_key(original_model, chosen.plan, feed)
    cached = cache.get_decision(key)
    if isinstance(cached, dict) and isinstance(cached.get("choices"), dict):
        plan = Plan(dict(cached["choices"]))
        ev = chosen if plan.choices == chosen.plan.choices else evaluate(plan, held=True)
        if holds(ev) or not holds(chosen):
            out.update(ratio=cached.get("ratio"), rounds=cached.get("rounds", 0), cached=True,
                       moved_from=_moved_from(chosen, ev.plan))
            if out["rounds"]:
                notes.append(f"speed guard: {out['rounds']} round(s) of moves to faster decodes, as "
                             "measured on this machine before")
            return ev, out
    try:
        session = runtime.create_session(original)
    except OnnxCompressError as e:
        notes.append(f"speed guard: the original could not be timed ({str(e).split(' Hint:')[0]})")
        return chosen, out
    ev = chosen
    external = has_external_data(original)
    with tempfile.TemporaryDirectory(prefix="onnxcompress-auto-speed-") as tmp:
        path = Path(tmp) / "plan.onnx"
        for i in range(MAX_ROUNDS + 1):
            write_plan(path, evaluate.serialized(ev.plan), external)
            ratio = latency_ratio(session, path, feed)
            out.update(ratio=None if ratio is None else round(ratio, 3), rounds=i)
            if ratio is None or ratio <= 1 + SPEED_TOLERANCE or i == MAX_ROUNDS:
                break
            step = next_plan(ev.plan, layers, folded=ev.folded)
            if step is None:
                break
            report("speed guard", i + 1, MAX_ROUNDS)
            logger.info("auto: %.2fx the original's latency: %d layer(s) moved to faster decodes",
                        ratio, step[1])
            moved = _first_holding(ev, step[0], layers, evaluate)
            if moved is None:
                notes.append(f"speed guard: {ratio:.2f}x the original's latency, and no faster plan "
                             "met the target: kept (--auto-allow-slower silences this)")
                break
            notes.append(f"speed guard: {ratio:.2f}x the original's latency: {step[1]} layer(s) moved "
                         "to decodes onnxruntime folds at load")
            ev = moved
    slower = out["ratio"] is not None and out["ratio"] > 1 + SPEED_TOLERANCE
    if slower and ev is not chosen:
        notes.append(f"speed guard: still {out['ratio']:.2f}x the original's latency after the moves")
    elif slower and next_plan(ev.plan, layers, folded=ev.folded) is None:
        notes.append(f"speed guard: {out['ratio']:.2f}x the original's latency (k-means tables decode "
                     "their gathered rows every call) and nothing faster to move to: kept "
                     "(--auto-allow-slower silences this)")
    cache.put_decision(key, {"choices": ev.plan.choices, "ratio": out["ratio"], "rounds": out["rounds"]})
    out["moved_from"] = _moved_from(chosen, ev.plan)
    return ev, out


def _row_decoded_tables(plan: Plan, original_model: Any) -> bool:
    """Whether ``plan`` has k-means on a table only Gathers read (``decodes_rows``): its codebook
    decodes the gathered rows every call, not folded at load (a merged GPT's step, 0.25 ms, ran
    0.91x at k-means 5 and was never timed)."""
    from onnxcompress.passes._kmeans_rows import decodes_rows
    from onnxcompress.weights import WeightIndex

    kmeans = {label for label, name in plan.choices.items()
              if name != FLOAT.name and by_name(name).pass_name == "kmeans"}
    return bool(kmeans) and original_model is not None and any(
        w.label in kmeans and decodes_rows(w) for w in WeightIndex.build(original_model))


def _moved_from(before: Evaluation, after: Plan) -> list[int]:
    """The speed tiers of per-call decode the guard moved layers away from."""
    tiers = {speed_tier(name, label in before.folded) for label, name in before.plan.choices.items()
             if after.choices.get(label) != name}
    return sorted(t for t in tiers if t < FOLDED)


def without_slower_kinds(layers: list[LayerChoices], speed: dict[str, Any]) -> list[LayerChoices] | None:
    """``layers`` without the kinds of per-call decode the speed guard moved away from (measured
    slower than the original on this machine), for a second search; None when it moved none.
    The guard's moves are local (each layer to its cheapest faster option with no more
    estimated error), and a plan searched without those kinds can be much smaller:
    transformer_digits' 4-bit blocks ran slower than fp32; moved, its plan was 88,780 bytes
    (3.25x), searched again 55,402 (5.20x), both at top-1 >= 0.99."""
    tiers = set(speed.get("moved_from") or ())
    if not tiers:
        return None
    return [LayerChoices(layer.label, [o for o in layer.options if speed_tier(option_name(o)) not in tiers],
                         layer.sensitivity) for layer in layers]


def faster_of(first: Evaluation, guards: tuple[dict[str, Any], dict[str, Any]],
              second: tuple[Evaluation, dict[str, Any], dict[str, Any]],
              notes: list[str]) -> tuple[Evaluation, dict[str, Any], dict[str, Any]]:
    """The cheaper of the speed guard's plan and the one searched again without the kinds it
    moved away from, where that meets the target wherever the first does."""
    again = second[0]
    if (holds(again) or not holds(first)) and again.cost < first.cost:
        notes.append(f"speed guard: searched again without the decodes measured slower here: "
                     f"{first.file_bytes:,} -> {again.file_bytes:,} bytes")
        return second
    return (first, *guards)


def _first_holding(ev: Evaluation, plan: Plan, layers: list[LayerChoices],
                   evaluate: _Evaluator) -> Evaluation | None:
    """``plan`` judged on both data sets, else the same layers moved to float; None when neither
    holds where ``ev`` did."""
    candidate = evaluate(plan, held=True)
    if holds(candidate) or not holds(ev):
        return candidate
    to_float = next_plan(ev.plan, layers, to_float=True, folded=ev.folded)
    if to_float is None or to_float[0].choices == plan.choices:
        return None
    candidate = evaluate(to_float[0], held=True)
    return candidate if holds(candidate) else None


def _decision_key(original_model: Any, plan: Plan, feed: dict[str, Any]) -> str:
    import onnxruntime as ort

    from onnxcompress import __version__, cache
    from onnxcompress.passes._speed import structure_digest

    shapes = {k: [list(getattr(v, "shape", ())), str(getattr(v, "dtype", ""))] for k, v in feed.items()}
    return cache.decision_key("auto-speed-guard", __version__, ort.__version__, cache.machine_id(),
                              structure_digest(original_model), sorted(plan.choices.items()), shapes)
