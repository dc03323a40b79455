"""The quantize pass's fidelity guard: int8 steps down where measurement says it hurts.

Two checks, both measured on the calibration data (else synthetic inputs) through onnxruntime,
both decided from the output deviation of whole models, never from errors assumed to add:

1. **Weights** (before anything is built). One session of the float model in which every
   candidate weight is an overridable input and every compute node's input and output are extra
   outputs. Run with float weights (the reference) and with every weight at its int8 value: the
   output deviation of int8 weight-only. Then every weight is a candidate: a bisection search
   over groups of weights (``_int8_search.search``) measures alone each weight that can move the outputs
   ``OUTLIER`` x its fair share (a layer's output error is only seen downstream: ppocr_det's 7th
   conv alone is 78% of its int8 deviation, yet its local error is ordinary). Outliers keep
   float weights (small ones) or int8 in blocks, worst first, within a byte budget that keeps
   the model at ``min_ratio`` where the weights allow; the combination is verified by one run.
   Recurrent cells' W and R then take int8 blocks with what is left of the budget, whatever
   was measured (their error compounds over time steps).
2. **Compute** (after the speed guard). The final model's output deviation must stay within
   ``COMPUTE_FACTOR`` x what int8 weight-only achieves, and its top-1 flips (``top1_flips``: what
   a classifier, CTC, token or keypoint metric sees) within ``FLIP_SLACK`` of weight-only's. If not,
   the int8 compute ops whose output error jumps most (relative squared error out minus in) go
   back to float compute (int8 weights kept: same size), a quarter at a time, each combination
   built and measured again, until it is.

Cost (counted in MACs, never timed): the reference and int8 runs on ``GUARD_SAMPLES`` (fewer for
a heavy model), the search's runs on ``PROBE_SAMPLES`` (about 2 x log2(weights) per outlier, at
most ``PROBE_MACS``), one verification and the compute check's rebuilds; a model that cannot run
on the data is left as the other steps decide, and the report says so.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxcompress import runtime
from onnxcompress.activations import quiet_run_options, run
from onnxcompress.errors import OnnxCompressError
from onnxcompress.graph.outputs import class_score_outputs, maps_image_to_image
from onnxcompress.model import copy_model, fits_whole_checks, whole_check_limit_mb
from onnxcompress.passes._bit_allocation import expose_weights, finite_squared_error, output_deviation
from onnxcompress.passes._int8_search import (
    STEPS_HEADLINE,
    block_steps,
    choose,
    compounding_note,
    float_step,
    half_steps,
    heatmap_outputs,
    model_bytes,
    name_list,
    probe_samples,
    saturated_note,
    search,
    step_options,
    top1_flips,
    unscaled_headline,
    within_size,
    zeroed_note,
    zeroed_weights,
)
from onnxcompress.passes._qdq import along
from onnxcompress.passes._quant_plan import op_key
from onnxcompress.passes._speed import kept_compute_pays
from onnxcompress.passes.base import PassResult
from onnxcompress.weights import ROLE_RECURRENT, Weight

logger = logging.getLogger(__name__)

# Samples the guard runs (fewer for a heavy model: see GUARD_MACS).
GUARD_SAMPLES = 4
# Work the guard's sample runs aim at per measured model, in multiply-accumulates (~0.5 s on one
# core): a heavy model gets fewer samples, never 0. Counted, not timed, so that one input gives
# one output on every machine and under any load.
GUARD_MACS = 5e9
# A weight is an outlier (measured alone, then stepped down by deviation per byte within the
# budget) when int8 there, alone, moves the outputs this many times its fair share (the int8
# weight-only deviation over the number of weights). ppocr_det (64 weights): conv2d_399 alone
# 1.4e-2 of 1.8e-2, 50x its share; ppocr_rec (47): conv2d_184 21x, 182 13x; ssd_detector (15):
# its four stem convs 1.7-4x (32k weights: float for 96 KB, detection F1 96.1 -> see README).
OUTLIER = 1.5
# int8 weight-only output deviations (mean ||y - y0||^2 / ||y0||^2) below this are left alone
# (no search): 0.9% RMS. The real models that lose task metric to int8 weights are above it
# (ssd_detector 1.0e-4, ddddocr_det 1.6e-4, ppocr_det 2.4e-2, ppocr_rec 1.2e-2); below it a
# step buys little (bert_tiny 6.2e-5: its loss is spread over 19 weights, none over 2x its
# share) and would cost a small model its int8 compute (a test CNN's head at 5e-5).
DEVIATION_FLOOR = 8e-5
# int8 compute may move the outputs this many times as far as int8 weight-only (2x the RMS).
COMPUTE_FACTOR = 4.0
# ... and flip at most this share of top-1 positions more than int8 weight-only does (one in
# 200: the 1-point bar, halved for the guard's few samples).
FLIP_SLACK = 0.005
# ... and never needs to be below this (1% RMS). Not higher: ssd_detector's detection F1 is
# 81.9 with 15 int8 convs (deviation 1.4e-3), ~89 with 8 (8.3e-4), 96.9 with none (1.0e-4).
COMPUTE_FLOOR = 1e-4
# Back-off rounds for int8 compute before the last step (every op float compute).
BACKOFF_ROUNDS = 3
# When the weights cannot reach the size target anyway, float weights may still take this
# share of the output size (a first conv or a detection head is a few KB).
MIN_BUDGET_SHARE = 0.01
# Nodes that read a layer weight: their inputs and outputs are the probe's intermediates (not
# ``_qdq.COMPUTE_OPS``, the ops int8 computes).
WEIGHT_READER_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Gather", "GatherND",
                               "LSTM", "GRU", "RNN"})


@dataclass
class Guard:
    """The float reference: a session of the float model with weights as inputs and every
    compute node's input/output exposed, the feeds, and the reference outputs."""

    session: object
    feeds: list[dict[str, np.ndarray]]
    inputs: dict[str, str]  # weight label -> session input name
    outputs: list[str]  # final output names, then intermediates
    n_final: int
    references: list[list[np.ndarray]]
    source: str
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)
    macs: int = 0  # one sample's multiply-accumulates (0: not counted)
    weight_flips: float = 0.0  # top-1 flips of int8 weight-only (after the weights' steps)
    scores: list[bool] = field(default_factory=list)  # which final outputs are class scores
    heatmaps: dict[int, int] = field(default_factory=dict)  # keypoint heat maps: index -> axis
    float_model: ir.Model | None = None  # the float model the compute check reads tensors of
    offset: bool = False  # outputs whose deviation mostly measures their offset: no COMPUTE_FLOOR

    def run(self, overrides: Mapping[str, np.ndarray], i: int) -> list[np.ndarray]:
        """The model's own outputs on sample ``i`` with the ``overrides`` weights (label ->
        value). (The session exposes no intermediate: onnxruntime keeps every graph output of
        a run alive until it ends, all of DNSMOS's on a 9 s input: 316 MB. The compute check
        reads the few it compares from a session of its own: ``_final_run``.)"""
        feed = {**self.feeds[i], **{self.inputs[k]: v for k, v in overrides.items()}}
        return run(self.session, self.outputs[:self.n_final], feed,
                   what=f"{self.source} sample {i}", run_options=quiet_run_options())


def start(model: ir.Model, weights: list[Weight], feeds, source: str,  # noqa: ANN001
          result) -> Guard | None:  # noqa: ANN001
    """The float reference for ``model`` on up to GUARD_SAMPLES of ``feeds``; None (and a
    note saying why) when the model cannot run on them."""
    begin = time.perf_counter()
    try:
        probe = copy_model(model)
        inputs = expose_weights(probe, [w.label for w in weights])
        finals = [v.name for v in probe.graph.outputs]
        names = _intermediates(probe, set(finals) | set(inputs.values()))
        session = runtime.create_session(probe, label="the fidelity guard's float model", arena=False)
        del probe
        guard = Guard(session, [], inputs, finals + names, len(finals), [], source)
        for i, feed in enumerate(feeds):
            if i == 0:
                guard.macs = _sample_macs(model, feed)
            # Each sample is run ~5 more times (int8 weights, verification, final model...).
            if i >= GUARD_SAMPLES or guard.macs * 6 * i > GUARD_MACS:
                break
            guard.feeds.append(dict(feed))
            guard.references.append(guard.run({}, i))
    except OnnxCompressError as e:
        result.note(f"fidelity guard did not measure ({str(e).split(' Hint:')[0]}): int8 "
                    "placed from op types and ranges alone")
        return None
    own = [r[:guard.n_final] for r in guard.references]  # the model's outputs, per sample
    guard.scores, guard.heatmaps = class_score_outputs(model, own), heatmap_outputs(model, own)
    if not guard.feeds:
        result.note("fidelity guard did not measure (no samples): int8 placed from op types and ranges alone")
        return None
    guard.seconds = time.perf_counter() - begin
    return guard


def _sample_macs(model: ir.Model, feed: Mapping[str, np.ndarray]) -> int:
    """Multiply-accumulates of one run on ``feed``'s shapes (0 when they cannot be counted:
    then the guard takes its full sample and probe counts)."""
    from onnxcompress.macs import run_macs

    return run_macs(model, {k: tuple(np.shape(v)) for k, v in feed.items()})


def _values(graph: ir.Graph) -> dict[str, ir.Value]:
    out = {v.name: v for v in graph.inputs if v.name}
    for node in graph:
        for v in node.outputs:
            if v.name:
                out[v.name] = v
    return out


def _intermediates(model: ir.Model, exclude: set[str]) -> list[str]:
    """Float inputs[0] and outputs[0] of every compute node of the main graph, graph order."""
    seen: list[str] = []
    taken = set(exclude) | {v.name for v in model.graph.inputs}
    for node in model.graph:
        if node.op_type not in WEIGHT_READER_OPS or node.domain not in ("", "ai.onnx"):
            continue
        for v in (node.inputs[0] if node.inputs else None, node.outputs[0]):
            producer = v.producer() if v is not None else None
            if producer is None or not v.name or v.name in taken or producer.op_type == "Constant" \
                    or v.dtype not in (ir.DataType.FLOAT, None):
                continue
            taken.add(v.name)
            seen.append(v.name)
    return seen


class _TensorErrors:
    """Relative squared error per tensor name, summed over samples."""

    def __init__(self) -> None:
        self.diff: dict[str, float] = {}
        self.norm: dict[str, float] = {}

    def add(self, name: str, out: np.ndarray, ref: np.ndarray) -> None:
        if np.shape(out) != np.shape(ref):
            return
        sums = finite_squared_error(out, ref)  # where the float model is finite
        if sums is None:
            return
        self.diff[name] = self.diff.get(name, 0.0) + sums[0]
        self.norm[name] = self.norm.get(name, 0.0) + sums[1]

    def error(self, name: str | None) -> float:
        if name is None or name not in self.diff:
            return 0.0
        return self.diff[name] / max(self.norm[name], 1e-30)


def _jump(errors: _TensorErrors, node: ir.Node) -> float:
    x = node.inputs[0].name if node.inputs and node.inputs[0] is not None else None
    return errors.error(node.outputs[0].name) - errors.error(x)


@dataclass
class WeightDecision:
    steps: dict[str, str]  # label -> "block" (finer int8), "half" (float16) or "float"
    deviation_int8: float  # int8 weight-only, every candidate per channel
    deviation: float  # int8 weight-only with the steps taken
    probed: dict[str, float] = field(default_factory=dict)  # label -> deviation alone
    probe_runs: int = 0  # sample runs the search took
    unexamined: int = 0  # weights in groups over the threshold when the search budget ran out
    flips: float = 0.0  # top-1 flip rate of int8 weight-only with the steps taken
    compounding: list[str] = field(default_factory=list)  # recurrent weights in blocks (no outliers)
    unscaled: list[str] = field(default_factory=list)  # input layers of unknown feature scales (no data)
    zeroed: dict[str, float] = field(default_factory=dict)  # int8 per channel zeroes most of them


def step_down_weights(guard: Guard, weights: list[Weight],
                      int8_values: Mapping[str, np.ndarray],
                      block_values: Callable[..., tuple[np.ndarray, int] | None], budget: int,
                      half: bool = False, unscaled: Collection[str] = ()) -> WeightDecision:
    """Which weights step down (finer int8 blocks; float, or float16 where ``half`` allows:
    ``halves``) within ``budget`` extra bytes, by deviation bought per byte (``choose``). A
    bisection search (``search``) measures alone each weight that can move the outputs OUTLIER x
    its fair share (the int8 model's deviation over the number of weights): the outliers,
    verified together. Then, with the bytes left, whatever was measured: ``unscaled`` weights to
    float16 (``synthetic.unscaled_features``: no data), weights int8 per channel mostly zeroes
    (``zeroed_weights``) and recurrent ones to blocks."""
    fed = {k: v for k, v in int8_values.items() if k in guard.inputs}
    deviation, flips, per_sample = 0.0, 0.0, []
    for i, refs in enumerate(guard.references):
        outs = guard.run(fed, i)
        per_sample.append(output_deviation(outs, refs[:guard.n_final]))
        flips += top1_flips(outs, refs[:guard.n_final], guard.scores, guard.heatmaps)
    deviation = float(np.mean(per_sample))
    decision = WeightDecision({}, deviation, deviation, flips=flips / len(guard.references))
    left = budget
    by_label = {w.label: w for w in weights}
    if deviation > DEVIATION_FLOOR and fed:
        labels = [w.label for w in weights if w.label in fed]  # graph order: neighbours together
        samples = probe_samples(guard)
        threshold = OUTLIER * deviation / len(labels)
        decision.probed, decision.probe_runs, decision.unexamined = search(
            guard, fed, labels, float(np.mean(per_sample[:len(samples)])), threshold, samples)
        options, decoded = step_options(
            [by_label[k] for k, d in decision.probed.items() if d >= threshold and k in by_label],
            int8_values, block_values, half)
        decision.steps, left = choose(decision.probed, threshold, deviation, options, budget,
                                      DEVIATION_FLOOR)
        if decision.steps:
            trial = {k: v for k, v in fed.items() if decision.steps.get(k) != "float"}
            trial.update({k: decoded[k, v] for k, v in decision.steps.items() if (k, v) in decoded})
            verified, trial_flips = measure(guard, trial)
            if verified >= deviation:  # measured no better: int8 everywhere
                decision.steps, left = {}, budget
            else:
                decision.deviation, decision.flips = verified, trial_flips
    extra, left = half_steps([k for k in unscaled if k in fed and k not in decision.steps],
                             by_label, left, half)
    decision.steps.update(extra)
    decision.unscaled = list(extra)
    zeroed = zeroed_weights(weights, fed, decision.steps)
    extra, _, left = block_steps(list(zeroed), lambda k: block_values(k, pad=True), left)
    decision.steps.update(extra)
    decision.zeroed = {k: zeroed[k] for k in extra}
    # Recurrent cells' W and R, largest first: a cell applies them at every time step, so their
    # error compounds over a sequence no guard sample shows (khmer-ocr-ocm's BiLSTM: 5 of 256 CTC
    # lines changed per channel without data, guard deviation 3e-5; in blocks 1).
    recurrent = [w.label for w in sorted(weights, key=lambda w: -w.size)
                 if w.role == ROLE_RECURRENT and w.label in fed and w.label not in decision.steps]
    extra, _, _ = block_steps(recurrent, block_values, left)
    decision.steps.update(extra)
    decision.compounding = list(extra)
    return decision


def measure(guard: Guard, values: Mapping[str, np.ndarray]) -> tuple[float, float]:
    """Output deviation and top-1 flip rate with ``values`` (label -> weight), the rest
    float, on every guard sample."""
    deviation, flips = 0.0, 0.0
    for i, refs in enumerate(guard.references):
        outs = guard.run(values, i)
        deviation += output_deviation(outs, refs[:guard.n_final])
        flips += top1_flips(outs, refs[:guard.n_final], guard.scores, guard.heatmaps)
    n = len(guard.references)
    return deviation / n, flips / n


def _final_run(guard: Guard, model: ir.Model,
               extra: list[str]) -> tuple[float, float, _TensorErrors]:
    """Output deviation and top-1 flips of ``model`` on the guard's samples, and errors of
    ``extra`` tensors (exposed as outputs for this measurement only)."""
    by_name = _values(model.graph)
    finals = guard.outputs[:guard.n_final]
    intermediates = set(guard.outputs[guard.n_final:])  # the float compute tensors it knows
    known = _values(guard.float_model.graph) if guard.float_model is not None else {}
    added = [by_name[n] for n in dict.fromkeys(extra)
             if n in by_name and n in known and n in intermediates]
    model.graph.outputs.extend(added)
    try:
        session = runtime.create_session(model, label="the int8 model", arena=False)
    finally:
        for _ in added:
            model.graph.outputs.pop()
    extra_names = [v.name for v in added]
    names = [*finals, *extra_names]
    reference = _reference_session(guard, extra_names) if extra_names else None
    errors = _TensorErrors()
    deviation, flips = 0.0, 0.0
    for i, refs in enumerate(guard.references):
        what = f"{guard.source} sample {i}"
        outs = run(session, names, guard.feeds[i], what=what, run_options=quiet_run_options())
        deviation += output_deviation(outs[:len(finals)], refs[:guard.n_final])
        flips += top1_flips(outs[:len(finals)], refs[:guard.n_final], guard.scores, guard.heatmaps)
        if reference is not None:  # the float values of just these tensors, a sample at a time
            float_values = run(reference, extra_names, guard.feeds[i], what=what,
                               run_options=quiet_run_options())
            for name, o, ref in zip(extra_names, outs[len(finals):], float_values, strict=True):
                errors.add(name, o, ref)
    n = len(guard.references)
    return deviation / n, flips / n, errors


def _reference_session(guard: Guard, names: list[str]) -> object | None:
    """A session of the float model exposing ``names`` (None without the float model)."""
    if guard.float_model is None:
        return None
    reference = guard.float_model.clone()  # shares the tensors
    by_name = _values(reference.graph)
    reference.graph.outputs.extend(by_name[n] for n in names)
    return runtime.create_session(reference, label="the fidelity guard's float tensors", arena=False)


def check_compute(guard: Guard, model: ir.Model, chosen: list[str], nodes: dict[str, ir.Node],
                  weight_only: float, rebuild: Callable[[list[str]], ir.Model],
                  result) -> tuple[ir.Model, list[str]]:  # noqa: ANN001
    """Back int8 compute ops off to float compute until the model's output deviation is within
    COMPUTE_FACTOR x ``weight_only`` and its top-1 flips within FLIP_SLACK of weight-only's
    (``guard.weight_flips``). ``nodes``: op key -> its node in the float model;
    ``rebuild(chosen)`` builds the model with int8 compute on ``chosen`` only."""
    # A picture's deviation is mostly its mean's (a 0..255 photo, mean ~165: 88% of its energy): at
    # the floor int8 compute cost style_unet 5 dB (static 43.5 dB PSNR, weight-only 48.3); and one value
    # a sample's (iDeepLC's times, 1554-13862 s: 3 int8 Gemms moved them 29 s, weight-only 10 s).
    floor = 0.0 if guard.offset else COMPUTE_FLOOR
    target = max(COMPUTE_FACTOR * weight_only, floor)
    flip_target = guard.weight_flips + FLIP_SLACK
    if not chosen:
        return model, chosen
    try:
        deviation, flips, _ = _final_run(guard, model, [])
    except OnnxCompressError as e:
        result.note(f"fidelity guard did not measure the int8 model ({str(e).split(' Hint:')[0]})")
        return model, chosen
    history = [(len(chosen), deviation, flips)]
    backed: list[str] = []
    rounds = 0
    while chosen and (deviation > target or flips > flip_target):
        rounds += 1
        names = [n for k in chosen if k in nodes for n in _io_names(nodes[k])]
        try:
            if rounds == 1:
                _, _, errors = _final_run(guard, model, names)
            jumps = {k: (_jump(errors, nodes[k]) if k in nodes else 0.0) for k in chosen}
            if rounds > BACKOFF_ROUNDS:
                drop = list(chosen)
            else:
                drop = sorted(chosen, key=lambda k: -jumps[k])[:max(1, math.ceil(len(chosen) / 4))]
            chosen = [k for k in chosen if k not in drop]
            backed += drop
            model = rebuild(chosen)
            deviation, flips, errors = _final_run(guard, model, [
                n for k in chosen if k in nodes for n in _io_names(nodes[k])])
        except OnnxCompressError as e:
            result.note(f"fidelity guard stopped measuring ({str(e).split(' Hint:')[0]})")
            break
        history.append((len(chosen), deviation, flips))
    guard.metrics["compute_deviation"] = [(n, float(f"{d:.3g}")) for n, d, _ in history]
    guard.metrics["compute_flips"] = [(n, round(f, 4)) for n, _, f in history]
    guard.metrics["compute_target"] = float(f"{target:.3g}")
    guard.metrics["flip_target"] = round(flip_target, 4)
    if backed:
        first, why = history[0], []
        if first[1] > target:
            why.append(f"deviation {first[1]:.2e} > {target:.2e}: {COMPUTE_FACTOR:g}x int8 "
                       f"weight-only {weight_only:.2e}" + (f", at least {floor:g}" if floor else ""))
        if first[2] > flip_target:
            why.append(f"top-1 flips {first[2]:.2%} > {flip_target:.2%}: int8 weight-only's "
                       f"{guard.weight_flips:.2%} + {FLIP_SLACK:.1%}")
        result.headline(
            f"fidelity guard: {len(backed)} int8 compute op(s) moved the outputs too far "
            f"({'; '.join(why)}); they compute float with int8 weights (same size): "
            f"{name_list(backed)}; deviation now {deviation:.2e}, flips {flips:.2%} "
            "(--no-fidelity-guard keeps them)")
    return model, chosen


def _io_names(node: ir.Node) -> list[str]:
    out = [node.outputs[0].name]
    if node.inputs and node.inputs[0] is not None:
        out.append(node.inputs[0].name)
    return [n for n in out if n]


def guarded(guard: Guard | None, weight_only: float, model: ir.Model,
            candidates: list[tuple[str, int]], result, build, key, speed_guard,  # noqa: ANN001
            keep: dict[str, str] | None = None, min_ratio: float = 1.0, context=None) -> ir.Model:  # noqa: ANN001
    """``speed_guard(build)``, then the fidelity guard's compute check (int8 compute ops that
    move the outputs too far are rebuilt as float compute from an untouched clone; what it keeps
    of a set timed larger is timed again against float compute: ``kept_compute_pays``), then its
    size check: while the built model is under ``min_ratio`` x smaller than the float one,
    the weight steps in ``keep`` (which ``build`` reads) that buy least go back to int8."""
    if guard is None:
        return speed_guard(build)
    pristine = model.clone()  # shares the float tensors: building replaces, never writes them
    guard.float_model = pristine
    by_key = {key(n): n for n in pristine.graph}  # and a name in another form: its op's node
    nodes = {**by_key, **{c: by_key[op_key(c)] for c, _ in candidates if op_key(c) in by_key}}
    last: list[list[str]] = []

    def recording(m: ir.Model, chosen: list[str], res: PassResult) -> ir.Model:
        last.append(list(chosen))
        return build(m, chosen, res)

    def built(keys: list[str]) -> tuple[ir.Model, PassResult]:
        scratch = PassResult(pass_name=result.pass_name, config=result.config, model=pristine)
        return build(pristine.clone(), keys, scratch), scratch

    def rebuild(keys: list[str]) -> ir.Model:
        m, scratch = built(keys)
        result.adopt_rebuild(scratch)
        return m

    # Serialized only when there are steps to check (a 100 MB model's proto costs its size).
    float_bytes = model_bytes(pristine) if keep and min_ratio > 1.0 else 0
    out = speed_guard(recording if candidates else build)
    chosen = last[-1] if last else []
    start = time.perf_counter()
    if candidates:
        timed = len(chosen)
        out, chosen = check_compute(guard, out, chosen, nodes, weight_only, rebuild, result)
        plain = functools.cache(lambda: built([]))  # the weight-only build, made if timed
        if context is not None and 0 < len(chosen) < timed and not kept_compute_pays(
                out, chosen, lambda: plain()[0], context, result):
            (out, scratch), chosen = plain(), []
            result.adopt_rebuild(scratch)
    if float_bytes:
        out = within_size(guard.metrics, out, float_bytes / min_ratio, keep, chosen, rebuild, result)
    guard.seconds += time.perf_counter() - start
    result.metrics["int8_compute_ops"] = len(chosen)
    result.metrics["fidelity_guard"] = {**guard.metrics, "seconds": round(guard.seconds, 2)}
    return out


def guard_weights(model: ir.Model, weights: list[Weight], channelwise: bool, context,  # noqa: ANN001
                  min_ratio: float, result, half: bool = False,  # noqa: ANN001
                  ) -> tuple[Guard | None, dict[str, str], float]:
    """Step 1 for the quantize pass: (the guard or None, label -> "block"/"half"/"float" for the
    weights that step down, the output deviation of int8 weight-only; ``half``: the pass stores
    what it leaves float32 in float16). A headline names them."""
    from onnxcompress.model import tensor_bytes
    from onnxcompress.passes._int8 import _int8_codes
    from onnxcompress.passes._int8_fine import BLOCK, blocked_value
    from onnxcompress.synthetic import synthetic_feeds, unscaled_features

    weights = [w for w in weights if w.graph is model.graph]
    if not fits_whole_checks(model):  # its session holds every weight in float and int8 at once
        result.note("fidelity guard skipped: the model is large (over "
                    f"{whole_check_limit_mb()} MB) and its session would hold every weight in float "
                    "and int8 at once; the weights are stored one at a time instead")
        return None, {}, 0.0
    if context.calibration is not None:  # under the run's sample cap, when one is set
        feeds, source = context.calibration.take(context.stats.limit(GUARD_SAMPLES)), "calibration"
    else:
        try:
            feeds, source = synthetic_feeds(model, GUARD_SAMPLES, seed=context.seed), "synthetic"
        except OnnxCompressError as e:
            result.note(f"fidelity guard did not measure ({str(e).split(' Hint:')[0]})")
            return None, {}, 0.0
    guard = start(model, weights, feeds, source, result)
    if guard is None:
        return None, {}, 0.0
    finals = [r[:guard.n_final] for r in guard.references]
    guard.offset = maps_image_to_image(model) or all(np.size(o) == 1 for r in finals for o in r)
    if source == "synthetic" and (why := saturated_note(model, finals)):
        result.headline(why)
    begin = time.perf_counter()
    int8_values = {}
    by_label = {w.label: w for w in weights}

    def block_values(label: str, pad: bool = False) -> tuple[np.ndarray, int] | None:  # steps' candidates
        return blocked_value(by_label[label], pad)

    for w in weights:
        axis = w.out_axis if channelwise else None
        # The codes the writer will store (GPTQ codes when the pass reconstructs), remembered
        # for it: an outlier under round-to-nearest may not be one after GPTQ rounding, and the
        # compute check holds int8 compute to what these codes cost (a bar at round-to-nearest's
        # deviation let ssd_detector keep 6 int8 convs: box F1 98.1 -> 91.9).
        q, scale, _, _ = _int8_codes(w, axis, False, release=False)
        scale = along(scale, axis, q.ndim)
        int8_values[w.label] = (q.astype(np.float32) * scale).astype(w.dtype.numpy())  # float16 too
    # Tensor bytes only (the graph, scales and Q/DQ pairs are not known yet): guarded() measures
    # the built model and gives steps back when this was optimistic.
    total = tensor_bytes(model)
    estimate = total - sum(float_step(w) for w in weights)
    budget = max(int(total / min_ratio) - estimate, int(MIN_BUDGET_SHARE * estimate))
    try:
        unscaled = unscaled_features(model, weights) if source == "synthetic" else {}
        decision = step_down_weights(guard, weights, int8_values, block_values, budget, half, unscaled)
    except OnnxCompressError as e:
        result.note(f"fidelity guard did not measure int8 weights ({str(e).split(' Hint:')[0]})")
        return None, {}, 0.0
    weight_only, guard.weight_flips = decision.deviation, decision.flips
    del int8_values
    guard.seconds += time.perf_counter() - begin
    guard.metrics.update({
        "samples": len(guard.feeds), "source": source,
        "weight_deviation": float(f"{decision.deviation_int8:.3g}"),
        "weight_flips": round(decision.flips, 4),
        "steps": decision.steps,
        "probed": {k: float(f"{v:.3g}") for k, v in decision.probed.items()},
        "probe_runs": decision.probe_runs, "candidates": len(weights),
        "step_bytes": {k: (float_step(by_label[k], v == "half") if v in ("float", "half") else
                           by_label[k].size // 16) for k, v in decision.steps.items()},
        "macs_per_sample": guard.macs,
    })
    outliers = {k: v for k, v in decision.steps.items()
                if k not in decision.compounding and k not in decision.unscaled and k not in decision.zeroed}
    if decision.unexamined:
        guard.metrics["unexamined"] = decision.unexamined
        result.note(f"fidelity guard: its search stopped after {decision.probe_runs} sample runs "
                    f"({guard.macs / 1e9:.1f} GMAC a sample), {decision.unexamined} weight(s) in "
                    "groups that moved the outputs past the outlier bar not measured alone "
                    "(calibration data, or --auto, measures every layer)")
    if decision.steps:
        guard.metrics["weight_deviation_after"] = float(f"{decision.deviation:.3g}")
    if decision.compounding:
        guard.metrics["compounding"] = decision.compounding
        result.note(compounding_note(decision.compounding))
    if decision.zeroed:
        guard.metrics["zeroed"] = list(decision.zeroed)
        result.note(zeroed_note(decision.zeroed))
    if decision.unscaled:
        guard.metrics["unscaled"] = decision.unscaled
        result.headline(unscaled_headline(decision.unscaled, decision.steps, unscaled))
    if outliers:
        blocks = [k for k, v in outliers.items() if v == "block"]
        floats = [k for k, v in outliers.items() if v == "float"]
        halfs = [k for k, v in outliers.items() if v == "half"]
        what = "; ".join(part for part in (
            f"int8 in blocks of {BLOCK} (float compute): {name_list(blocks)}" if blocks else "",
            f"float16 weights (float compute): {name_list(halfs)}" if halfs else "",
            f"float weights: {name_list(floats)}" if floats else "") if part)
        result.headline(
            f"{STEPS_HEADLINE}{len(outliers)} weight(s) alone moved the outputs over "
            f"{OUTLIER:g}x their share of the int8 deviation (per channel), so they step "
            f"down ({what}); output "
            f"deviation of int8 weights {decision.deviation_int8:.2e} -> "
            f"{decision.deviation:.2e} on {len(guard.feeds)} {source} samples "
            "(--no-fidelity-guard keeps them per channel)")
    # What follows (the speed guard's, the compute check's sessions) needs the references, not this
    # session with every weight an input: MiniLM-L3's dynamic int8 peaked at 700 MB (1.67x ort's)
    guard.session = None
    return guard, dict(decision.steps), weight_only
