"""Per-layer options for auto mode, taken from the existing passes' per-layer knobs, and their
pricing.

An option (a :class:`Candidate`) is a codec at one setting: ``kmeans4`` (k-means weight sharing,
16 values per layer codebook: ``layer_bits``), ``int8`` (quantize ``mode=weights``, restricted to
its layers with ``exclude``), ``int4`` (the ``blockq`` pass when it is registered). ``float``
leaves the layer alone. Unstructured pruning is not offered: its zeros do not shrink the file
(they only help a later k-means), and channel pruning changes neighbouring layers too, so neither
is a choice one layer can make alone.

Pricing measures instead of modelling: one *uniform* run per option (the pass applied to every
candidate layer at once, with the pass's own layer statistics giving each layer's bytes), the
decoded weights read back from that model through onnxruntime, and the sensitivity probe telling
how far the outputs move when only that layer takes its decoded value. One pipeline run and one
probe session per option, whatever the number of layers.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxcompress.passes import registered_passes
from onnxcompress.weights import COMPUTE_ROLES, Weight, WeightIndex

logger = logging.getLogger(__name__)

KMEANS_BITS = (2, 3, 4, 5, 6, 7, 8)
#: Layers below this many values stay float: an option would save less than its decode nodes cost.
MIN_CANDIDATE_SIZE = 64
#: k-means statistics use at most this many calibration feeds (the first ones), so a recipe
#: replayed with the same --calibration file uses exactly the samples the search used.
KMEANS_CALIBRATION_SAMPLES = 64
OBJECTIVES = ("size", "latency", "memory")


@dataclass(frozen=True)
class Candidate:
    """One per-layer option: a name used in plans, the pass that applies it and its setting."""

    name: str
    pass_name: str
    setting: int = 0

    @property
    def is_float(self) -> bool:
        return self.pass_name == ""


FLOAT = Candidate("float", "")


def available_candidates() -> list[Candidate]:
    """The options this installation offers, most compressed first within each codec."""
    passes = registered_passes()
    out = [Candidate(f"kmeans{b}", "kmeans", b) for b in KMEANS_BITS] if "kmeans" in passes else []
    if "quantize" in passes:
        out.append(Candidate("int8", "quantize", 8))
    if "blockq" in passes:  # 4-bit block quantization (MatMulNBits), merged on some builds
        out.append(Candidate("int4", "blockq", 4))
    return out


def by_name(name: str) -> Candidate:
    if name == FLOAT.name:
        return FLOAT
    for c in available_candidates():
        if c.name == name:
            return c
    raise KeyError(name)


def candidate_weights(model: Any) -> list[Weight]:
    """Weights auto mode may choose for: float compute weights of the main graph (the probe can
    only feed those), large enough to be worth a decode node, read by one consumer slot kind."""
    out = []
    for w in WeightIndex.build(model):
        if w.role not in COMPUTE_ROLES or not w.is_float or w.scope or w.size < MIN_CANDIDATE_SIZE:
            continue
        out.append(w)
    return out


def escape(label: str) -> str:
    """``label`` as a shell pattern matching only itself (``[`` ``*`` ``?`` are pattern syntax)."""
    return "".join(f"[{ch}]" if ch in "[]*?" else ch for ch in label)


def pass_steps(assignment: dict[str, Candidate], all_labels: Sequence[str], *,
               calibration_samples: int = KMEANS_CALIBRATION_SAMPLES,
               pricing: bool = False) -> list[dict[str, Any]]:
    """The recipe steps that give each label its candidate and leave every other weight alone.

    k-means goes first (it folds BatchNorm into the Conv before it, as the pricing base did), one
    ``layer_bits`` entry per layer and ``*=0`` for the rest; each other codec is one pass limited
    to its layers by ``exclude`` (every other weight label). ``pricing``: the form the pricing
    run needs to read decoded weights back (4-bit blocks as standard DequantizeLinear instead of
    MatMulNBits: the same values and bytes, but a constant subgraph onnxruntime can evaluate)."""
    steps: list[dict[str, Any]] = []
    kmeans = {label: c.setting for label, c in assignment.items() if c.pass_name == "kmeans"}
    if kmeans:
        layer_bits = {escape(label): bits for label, bits in kmeans.items()}
        layer_bits["*"] = 0
        steps.append({
            "pass": "kmeans", "bits": 8, "layer_bits": layer_bits, "allocation": "uniform",
            "codebook": "layer", "min_size": 1, "calibration_samples": calibration_samples,
        })
    # The speed guard times the model on this machine: off, so the recipe replays anywhere.
    blockq: dict[str, Any] = {"bits": 4, "calibration_samples": calibration_samples}
    if pricing:
        blockq["target"] = "portable"
    codecs = (("quantize", {"mode": "weights", "speed_check": False}), ("blockq", blockq))
    for pass_name, options in codecs:
        mine = {label for label, c in assignment.items() if c.pass_name == pass_name}
        if mine:
            others = [escape(label) for label in all_labels if label not in mine]
            steps.append({"pass": pass_name, **options, "exclude": others})
    return steps


# -- measuring one option on every layer ----------------------------------------------------------


@dataclass
class Measured:
    """What one uniform run of a candidate tells about each layer."""

    candidate: str
    bytes_before: dict[str, int]
    bytes_after: dict[str, int]
    deviation: dict[str, float]
    cost_total: float = 0.0  # the objective measured on the whole uniform model (latency, memory)
    seconds: float = 0.0
    skipped: dict[str, str] | None = None
    weight_error: dict[str, float] | None = None  # ||dW||^2 / ||W||^2 per layer


def measure_candidate(task: dict[str, Any]) -> Measured:
    """Executor task: apply ``task['candidate']`` to every label of ``task['labels']`` in the
    pricing base (``task['base']``, a file), read each layer's bytes from the pass's statistics
    and its decoded weight from the result, and probe each decoded weight alone on
    ``task['probe']`` (an .npz of feeds; with ``task['probe_layers']`` False only the relative
    weight errors are returned, and the search prices the option from another option's probe).
    Pure function of its inputs (a worker process or Ray)."""
    from onnxcompress.auto.measure import decode_weight, objective_cost, probe_feeds
    from onnxcompress.model import load_model, save_model, to_proto
    from onnxcompress.passes._bit_allocation import probe_sensitivity
    from onnxcompress.pipeline import Pipeline

    start = time.perf_counter()
    cand = by_name(task["candidate"])
    base = load_model(task["base"])
    labels = list(task["labels"])
    steps = pass_steps({label: cand for label in labels}, [w.label for w in WeightIndex.build(base)],
                       calibration_samples=task["calibration_samples"], pricing=True)
    pipeline = Pipeline.from_recipe({"passes": steps, "seed": task.get("seed", 0), "check": "none"})
    result = pipeline.run(base, calibration=task.get("calibration"))
    stats = {s.name: s for r in result.passes for s in r.layers}
    skipped = {k: v for r in result.passes for k, v in r.skipped.items() if k in labels}
    proto = to_proto(result.model)
    index = {w.label: w for w in WeightIndex.build(base)}
    degraded: dict[str, np.ndarray] = {}
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    for label in labels:
        s = stats.get(label)
        if s is None or s.bytes_after >= s.bytes_before:
            continue
        value = decode_weight(proto, index[label])
        if value is None:
            skipped[label] = "its decoded value could not be computed"
            continue
        degraded[label] = value
        before[label], after[label] = int(s.bytes_before), int(s.bytes_after)
    werr = {}
    for label, value in degraded.items():
        ref = index[label].numpy().astype(np.float64)
        norm = float(np.square(ref).sum())
        werr[label] = float(f"{float(np.square(value - ref).sum()) / norm:.6g}") if norm > 0 else 0.0
    feeds = probe_feeds(task["probe"])
    deviation: dict[str, float] = {}
    if task.get("probe_layers", True):
        probe = probe_sensitivity(base, degraded, feeds)
        # Rounded so that summation order or thread count in a worker cannot flip a later choice.
        deviation = {k: float(f"{v:.6g}") for k, v in probe.deviation.items()}
    cost_total = 0.0
    if task.get("objective", "size") != "size":
        with tempfile.TemporaryDirectory(prefix="onnxcompress-auto-") as tmp:
            path = Path(tmp) / "uniform.onnx"
            save_model(result.model, path)
            cost_total = objective_cost(path, task["objective"], feeds[0])
    return Measured(cand.name, before, after, deviation, cost_total,
                    time.perf_counter() - start, skipped or None, werr)


def layer_costs(measured: Measured, base_cost: float, objective: str) -> dict[str, int]:
    """Each layer's price under ``objective`` for ``measured``'s candidate.

    size: the layer's bytes. latency/memory: the uniform model's measured total, spread over its
    layers in proportion to their float bytes (what the codec changed is what they hold), in
    microseconds or bytes. ``base_cost`` is the float model's measured total."""
    if objective == "size":
        return dict(measured.bytes_after)
    change = measured.cost_total / max(base_cost, 1e-12)
    return {k: max(1, int(round(b * change))) for k, b in measured.bytes_before.items()}

