"""The float16 pass's fidelity check: keep the few layers float32 that the output needs.

Rounding weights to float16 moves most models' outputs by a cosine of 1e-7; a few models
amplify it. mobilenet_v2 from /work/realmodels (random weights, BatchNorm statistics
re-estimated and folded into the convolutions) loses 0.0032 of cosine from rounding its weights
alone, 47 % of it from the 864 values of its first convolution and 90 % from its first ten
layers: float32 for those costs a few KB. So after converting, the pass runs the float32 and the
float16 model on a few samples (calibration data, else synthetic); when the worst output cosine
is below ``target_cosine`` it measures each weight's share with the sensitivity probe (one
weight rounded at a time, compute float32) and keeps the layers with most deviation per byte
float32 (their nodes compute in float32 between Casts), within ``KEEP_BUDGET`` of the weight
bytes, re-measuring up to ``ROUNDS`` times. A model that cannot run on the samples (or is too
large to hold twice) is converted without the check, with a note saying why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxcompress.activations import quiet_run_options, run
from onnxcompress.errors import OnnxCompressError
from onnxcompress.model import copy_model, fits_whole_checks, whole_check_limit_mb
from onnxcompress.passes._bit_allocation import probe_sensitivity
from onnxcompress.passes.base import PassContext, PassResult
from onnxcompress.runtime import create_session
from onnxcompress.weights import WeightIndex

logger = logging.getLogger(__name__)

SAMPLES = 4
# Layers kept float32 may add at most this share of the model's float32 weight bytes to the
# float16 file (0.02: a 0.50x file stays <= 0.51x).
KEEP_BUDGET = 0.02
ROUNDS = 3
# Smaller constants (scalars, shape-like values) are not probed: they never decide the output
# alone and keeping their readers float32 would split the graph into small float32 islands.
MIN_SIZE = 16
# Aim below the target: the probe's per-layer deviations add up only approximately.
MARGIN = 0.7

# Ops onnxruntime fuses into the producing Conv/MatMul (activations, a bias Add) or that sit
# between two fused kernels: kept float32 together with the node before them, when they are its
# only reader.
ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish",
                         "Elu", "Selu", "Gelu", "Softsign", "Mish", "PRelu", "Add", "Sub", "Mul",
                         "Div"})

Converter = Callable[[ir.Model, frozenset[int], PassResult], ir.Model]


@dataclass
class _Unit:
    """Main-graph nodes that share weights: kept float32 together."""

    positions: set[int]
    labels: list[str] = field(default_factory=list)
    deviation: float = 0.0
    price: int = 0  # bytes the file grows by when these weights stay float32
    name: str = ""


@dataclass
class FidelityCheck:
    feeds: list[dict[str, np.ndarray]]
    references: list[list[np.ndarray]]
    source: str
    target: float
    keep_ops: frozenset[str]

    def cosine(self, model: ir.Model) -> float:
        """Worst cosine over samples and float outputs of ``model`` against the references."""
        # not through the layout stage: the final graph is first loaded so in a child (float16.py)
        session = create_session(model, label="the float16 model", arena=False, layout=False)
        worst = 1.0
        for i, (feed, refs) in enumerate(zip(self.feeds, self.references, strict=True)):
            outs = run(session, None, feed, what=f"{self.source} sample {i}", run_options=quiet_run_options())
            for got, want in zip(outs, refs, strict=True):
                if np.issubdtype(np.asarray(want).dtype, np.floating):
                    worst = min(worst, _cosine(got, want))
        return worst

    def convert(self, model: ir.Model, convert: Converter, result: PassResult) -> ir.Model:
        """``convert(model)`` with the float32 layers the target needs; statistics in ``result``."""
        begin = time.perf_counter()
        pristine = copy_model(model)
        trial = _scratch(result, model)
        out = convert(model, frozenset(), trial)
        try:
            cos = first = self.cosine(out)
        except OnnxCompressError as e:
            result.note(f"fidelity check off: {e.message}")
            _merge(result, trial)
            return out
        keep: set[int] = set()
        kept: list[_Unit] = []
        chosen: set[int] = set()  # ids of the units tried
        if cos < self.target:
            try:
                units, weight_bytes = self._units(pristine)
            except OnnxCompressError as e:
                result.note(f"fidelity check could not probe the layers: {e.message}")
                units, weight_bytes = [], 0
            budget, spent = int(KEEP_BUDGET * weight_bytes), 0
            remaining = sum(u.deviation for u in units)
            order = sorted(units, key=lambda u: u.deviation / max(u.price, 1), reverse=True)
            for _ in range(ROUNDS):
                need = remaining * (1 - self.target) / max(1 - cos, 1e-12) * MARGIN
                added = []
                for u in order:
                    if remaining <= need:
                        break
                    if id(u) in chosen or spent + u.price > budget:
                        continue
                    added.append(u)
                    chosen.add(id(u))
                    remaining -= u.deviation
                    spent += u.price
                if not added:
                    break
                kept += added
                keep.update(p for u in added for p in u.positions)
                candidate = _scratch(result, model)
                converted = convert(copy_model(pristine), frozenset(keep), candidate)
                try:
                    better = self.cosine(converted)
                except OnnxCompressError as e:
                    result.note(f"fidelity check stopped: {e.message}")
                    better = -1.0
                if better < cos:  # no better than without these layers: keep the last model
                    kept = kept[:-len(added)]
                    break
                trial, out, cos = candidate, converted, better
                if cos >= self.target:
                    break
        _merge(result, trial)
        names = [u.name for u in kept]
        result.metrics.update(output_cosine=round(cos, 6), fidelity_samples=len(self.feeds),
                              fidelity_source=self.source, kept_float32_layers=names,
                              fidelity_seconds=round(time.perf_counter() - begin, 2))
        what = f"{len(self.feeds)} {self.source} samples"
        if kept:
            extra = sum(u.price for u in kept)
            shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            result.headline(f"kept {len(kept)} layers float32 for the output (worst cosine {first:.6f} -> "
                            f"{cos:.6f} on {what}, target {self.target}; +{extra / 1024:.0f} KB): {shown}")
        if cos < self.target:
            result.headline(f"output cosine {cos:.6f} on {what} stays below the target {self.target} "
                            f"(float32 layers limited to {KEEP_BUDGET:.0%} of the weight bytes)")
        else:
            result.note(f"fidelity check: worst output cosine {cos:.6f} on {what}")
        return out

    def _units(self, model: ir.Model) -> tuple[list[_Unit], int]:
        """Float32 main-graph weights read by nodes that compute in float16, grouped by shared
        readers, with their probed output deviation (rounded alone) and bytes."""
        graph = model.graph
        position = {id(n): i for i, n in enumerate(graph)}
        weights, nbytes, degraded = [], {}, {}
        for w in WeightIndex.build(model):  # initializers and Constant nodes (ppocr_rec)
            if w.graph is not graph or not w.uses or any(
                    u.node.op_type in self.keep_ops or id(u.node) not in position for u in w.uses):
                continue
            arr = w.numpy()
            if arr.dtype != np.float32 or arr.size < MIN_SIZE:
                continue
            weights.append(w)
            nbytes[w.label] = arr.nbytes
            degraded[w.label] = np.clip(arr, -65504, 65504).astype(np.float16).astype(np.float32)
        weight_bytes = sum(nbytes.values())
        probe = probe_sensitivity(model, degraded, self.feeds)
        del degraded
        nodes = list(graph)

        def region(p: int) -> set[int]:
            # The activation a kept node feeds stays float32 with it: onnxruntime's CPU provider
            # fuses Conv+Clip/Relu and drops the float16 round trip between fused float32
            # kernels, so a float16 Clip alone after a float32 Conv would round the activation
            # that the all-float16 model never rounds (mobilenet_v2: cosine 0.9970 with every
            # Conv/Gemm float32 and only the Clips/Adds float16).
            out, node = {p}, nodes[p]
            while len(node.outputs) == 1 and len(node.outputs[0].uses()) == 1:
                node = node.outputs[0].uses()[0].node
                if node.op_type not in ACTIVATIONS or id(node) not in position:
                    break
                out.add(position[id(node)])
            return out

        # Union of weights whose regions overlap (a MatMul's weight and its bias Add are one unit).
        owner: dict[int, _Unit] = {}
        for w in weights:
            unit = _Unit(positions=set().union(*(region(position[id(u.node)]) for u in w.uses)))
            for other in {id(owner[p]): owner[p] for p in unit.positions if p in owner}.values():
                unit.positions |= other.positions
                unit.labels += other.labels
                unit.deviation += other.deviation
                unit.price += other.price
            unit.labels.append(w.label)
            unit.deviation += probe.deviation.get(w.label, 0.0)
            unit.price += nbytes[w.label] // 2
            for p in unit.positions:
                owner[p] = unit
        units = list({id(u): u for u in owner.values()}.values())
        for u in units:
            u.name = nodes[min(u.positions)].name or u.labels[0]
        return units, weight_bytes


def fidelity_check(model: ir.Model, context: PassContext, result: PassResult, target: float,
                   keep_ops: frozenset[str]) -> FidelityCheck | None:
    """The float32 reference outputs on a few samples, or None (with a note) when the check
    cannot run: the model is too large to hold twice, or onnxruntime cannot run it."""
    from onnxcompress.synthetic import synthetic_feeds

    # The check holds the model three times (float32 session, float16 session, the probe's copy).
    if not fits_whole_checks(model):
        result.note(f"fidelity check off: the model is large (over {whole_check_limit_mb()} "
                    "MB) and would be held three times")
        return None
    try:
        if context.calibration is not None:
            feeds = list(context.calibration.take(context.stats.limit(SAMPLES)))
            source = "calibration"
        else:
            feeds, source = list(synthetic_feeds(model, SAMPLES, seed=context.seed)), "synthetic"
        session = create_session(model, label="the float32 model", arena=False)
        refs = [run(session, None, f, what=f"{source} sample {i}", run_options=quiet_run_options())
                for i, f in enumerate(feeds)]
    except OnnxCompressError as e:
        result.note(f"fidelity check off: {e.message}")
        return None
    if not feeds:
        result.note("fidelity check off: no samples")
        return None
    return FidelityCheck([dict(f) for f in feeds], refs, source, target, keep_ops)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    if np.shape(a) != np.shape(b):  # a length the model computes changed (Piper's durations)
        return 0.0
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    if not (np.isfinite(na) and np.isfinite(nb)):
        return 0.0 if not np.isfinite(na) else 1.0
    return float(a @ b / (na * nb))


def _scratch(result: PassResult, model: ir.Model) -> PassResult:
    return PassResult(pass_name=result.pass_name, config=result.config, model=model)


def _merge(result: PassResult, trial: PassResult) -> None:
    result.layers.extend(trial.layers)
    for reason, names in trial.skipped.items():
        result.skipped.setdefault(reason, []).extend(names)
    result.notes.extend(trial.notes)
    result.metrics.update(trial.metrics)
    result.headlines.extend(trial.headlines)
    result.modified = result.modified or trial.modified
