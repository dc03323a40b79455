"""Per-layer precision under a size budget, from sensitivities measured through onnxruntime.

Two independent pieces, so other passes (or an accuracy-driven mode) can reuse them:

- :func:`probe_sensitivity` builds one *probe* copy of the model in which the chosen weights are
  overridable initializers (graph inputs with a default value; weights held in ``Constant``
  nodes become initializers in the copy only), runs a few calibration feeds with the original
  weights, then again with one weight at a time replaced by a degraded version, and returns each
  weight's normalised output deviation. One session serves every layer, so the cost is one
  forward pass per (layer, sample).
- :func:`allocate` picks one option (bit width, grouping...) per layer to minimise the summed
  estimated output error within a byte budget: a greedy walk up each layer's lower convex hull
  of (bytes, error), best error saved per byte first (the Lagrangian solution of the knapsack,
  exact when layer errors add up).

The output error of an option is modelled as ``sensitivity * weight_error(option)``, where the
sensitivity is the measured deviation divided by the weight error of the probed option: output
error is, to first order, proportional to the (importance-weighted) squared weight error, so
one measurement per layer prices every width and grouping.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxcompress.activations import quiet_run_options, run
from onnxcompress.model import copy_model
from onnxcompress.runtime import create_session
from onnxcompress.weights import WeightIndex

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Option:
    """One way to store a layer: its stored bytes and relative squared weight error."""

    bits: int
    nbytes: int
    weight_error: float  # ||dW||^2 / ||W||^2, importance-weighted where known
    group: int = 0  # output channels per codebook (0: one codebook for the tensor)

    @property
    def name(self) -> str:
        return f"{self.bits}" if not self.group else f"{self.bits}/g{self.group}"


@dataclass
class LayerChoices:
    """A layer's options and its measured sensitivity (output deviation per unit weight error)."""

    label: str
    options: list[Option]
    sensitivity: float = 0.0

    def error(self, option: Option) -> float:
        return self.sensitivity * option.weight_error


@dataclass
class ProbeResult:
    """Per label, the mean normalised output deviation when only that weight is degraded."""

    deviation: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    seconds: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)  # label -> why it was not probed


def probe_sensitivity(
    model: ir.Model,
    degraded: Mapping[str, np.ndarray],
    feeds: Iterable[Mapping[str, np.ndarray]],
    *,
    progress: Callable[[int, int], None] | None = None,
    linked: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> ProbeResult:
    """Measure, for each weight label in ``degraded``, how far the model's outputs move when that
    weight alone takes the given value: ``mean over samples and outputs of
    ||y - y0||^2 / ||y0||^2``. ``model`` is not modified.

    ``linked[label]`` gives further weights (label -> value) degraded together with ``label``:
    copies of one matrix (a tied embedding and the head's transposed copy) are one layer.

    Raises :class:`onnxcompress.errors.RuntimeUnavailableError` when onnxruntime cannot load the
    probe copy or run it on the feeds (the caller falls back to uniform widths).
    """
    start = time.perf_counter()
    result = ProbeResult()
    probe = copy_model(model)
    linked = linked or {}
    extra = [x for label in degraded for x in linked.get(label, {}) if x not in degraded]
    feed_names = expose_weights(probe, [*degraded, *dict.fromkeys(extra)], result.skipped)
    session = create_session(probe, label="the sensitivity probe model", arena=False)
    samples = [dict(f) for f in feeds]
    result.samples = len(samples)
    if not samples or not feed_names:
        result.seconds = time.perf_counter() - start
        return result
    quiet = quiet_run_options()
    references = [run(session, None, feed, what=f"calibration sample {i}", run_options=quiet)
                  for i, feed in enumerate(samples)]
    labels = [label for label in degraded if label in feed_names]
    for i, label in enumerate(labels):
        total = 0.0
        for feed, ref in zip(samples, references, strict=True):
            # np.asarray: arithmetic on a 0-d weight gives a numpy scalar, which onnxruntime refuses
            changed = {feed_names[label]: np.asarray(degraded[label])}
            changed.update({feed_names[x]: np.asarray(v) for x, v in linked.get(label, {}).items()
                            if x in feed_names})
            outs = run(session, None, {**feed, **changed}, what=f"{label} degraded", run_options=quiet)
            total += output_deviation(outs, ref)
        result.deviation[label] = total / len(samples)
        if progress is not None:
            progress(i + 1, len(labels))
    result.seconds = time.perf_counter() - start
    logger.info(
        "sensitivity probe: %d layers x %d samples in %.1f s", len(labels), len(samples), result.seconds
    )
    return result


#: The deviation of an output that is not finite where the reference is: the change broke the
#: model there (a large finite number, so that sums and ratios of deviations stay ordered).
BROKEN_DEVIATION = 1e6


def output_deviation(outs: list[np.ndarray], refs: list[np.ndarray]) -> float:
    """Mean over float outputs of ||y - y0||^2 / ||y0||^2 (the normalised output deviation that
    ``probe_sensitivity`` measures per layer and the int8 fidelity guard per model), over the
    positions where the reference is finite: one synthetic sample whose float output was NaN (a
    negative ``sigma`` into a Log: batch 6's terrain U-Net) made every deviation NaN, and NaN
    passes every ``<=`` check by failing it. A compressed output that is not finite where the
    reference is counts as :data:`BROKEN_DEVIATION`. An SSD/RetinaFace detector's scores and
    box rows are compared at the anchors its task reads (``validation.detections.
    positive_anchors``): over all 8064 anchors of a licence-plate detector, its class head's
    k-means 4 moved the softmax-saturated background so little (1.9e-11) that auto took it and
    lost the plates' scores."""
    # here, not at the top: onnxcompress.validation imports the pipeline, which imports the passes
    from onnxcompress.validation.detections import anchor_rows, positive_anchors

    per = []
    focus = positive_anchors(refs, outs)
    for i, (o, r) in enumerate(zip(outs, refs, strict=True)):
        if not np.issubdtype(np.asarray(r).dtype, np.floating):
            continue
        if np.shape(o) != np.shape(r):  # a data-dependent count (boxes after NMS) that moved
            per.append(BROKEN_DEVIATION)
            continue
        if i in focus:
            o, r = anchor_rows(o)[focus[i]], anchor_rows(r)[focus[i]]
        sums = finite_squared_error(o, r)
        if sums is not None:
            per.append(min(sums[0] / max(sums[1], 1e-30), BROKEN_DEVIATION))
    return float(np.mean(per)) if per else 0.0


def finite_squared_error(out: np.ndarray, ref: np.ndarray) -> tuple[float, float] | None:
    """(||y - y0||^2, ||y0||^2) over the positions where the reference ``ref`` is finite (None
    where none is); where ``out`` is not finite there, the error is BROKEN_DEVIATION x the norm."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    finite = np.isfinite(ref)
    if not finite.all():
        if not finite.any():
            return None
        out, ref = out[finite], ref[finite]
    norm = float(np.square(ref).sum())
    if not np.isfinite(out).all():
        return BROKEN_DEVIATION * max(norm, 1e-30), norm
    return float(np.square(out - ref).sum()), norm


def weigh_layers(model: ir.Model, layers: list[LayerChoices], degraded: Mapping[str, np.ndarray],
                 probed_error: Mapping[str, float], feeds: Iterable[Mapping[str, np.ndarray]],
                 context, result, *, kept_bits: int, what: str,  # noqa: ANN001
                 linked: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                 ) -> tuple[list[LayerChoices], ProbeResult] | None:
    """The probe step of a pass's allocation: each layer's output deviation with its
    ``degraded`` value, turned into its sensitivity (deviation per unit of ``probed_error``, the
    weight error of the probed option). Returns the probed layers and the probe; ``None`` (with
    a note "WHAT off, ...") when the model cannot run on the feeds. Layers the probe could not
    reach keep ``kept_bits`` (noted)."""
    from onnxcompress.errors import RuntimeUnavailableError

    try:
        probe = probe_sensitivity(model, degraded, feeds, linked=linked,
                                  progress=lambda d, n: context.report_progress("sensitivity", d, n))
    except RuntimeUnavailableError as e:
        result.note(f"{what} off, the sensitivity probe cannot run: {e.message}")
        return None
    for label, why in probe.skipped.items():
        result.note(f"{label}: kept at {kept_bits} bits, not probed ({why})")
    probed = [c for c in layers if c.label in probe.deviation]
    for c in probed:
        e = probed_error[c.label]
        c.sensitivity = probe.deviation[c.label] / e if e > 0 else 0.0
    return probed, probe


def uniform_bytes(layers: Iterable[LayerChoices], bits: int) -> int:
    """Bytes of every layer at ``bits`` (each layer must have that option)."""
    return sum(next(o.nbytes for o in c.options if o.bits == bits) for c in layers)


def allocation_extras(layers: Iterable[LayerChoices], chosen: Mapping[str, Option],
                      probe: ProbeResult) -> dict[str, dict[str, float | int]]:
    """Per layer, what the report shows of the allocation (LayerStat extras)."""
    return {
        c.label: {"allocated_bits": chosen[c.label].bits,
                  "probe_deviation": float(f"{probe.deviation[c.label]:.4g}"),
                  "estimated_output_error": float(f"{c.error(chosen[c.label]):.4g}")}
        for c in layers
    }


def expose_weights(probe: ir.Model, labels: Iterable[str],
                   skipped: dict[str, str] | None = None) -> dict[str, str]:
    """Make each weight of ``labels`` an initializer that is also a graph input of ``probe``;
    return label -> input name. Only main-graph weights can be fed; the others are left out
    (and, when ``skipped`` is given, recorded there: label -> why). Shared by the sensitivity
    probe and the int8 fidelity guard."""
    if skipped is None:
        skipped = {}
    index = {w.label: w for w in WeightIndex.build(probe)}
    graph = probe.graph
    names: dict[str, str] = {}
    for label in labels:
        w = index.get(label)
        if w is None:
            skipped[label] = "not found in the probe copy"
            continue
        if w.graph is not graph:
            skipped[label] = "in a subgraph: cannot be fed at run time"
            continue
        if w.value.is_graph_input():
            names[label] = w.value.name
            continue
        if w.storage == "initializer":
            value = w.value
        else:
            # A Constant node cannot be overridden; an initializer with the same data can.
            value = w.add_constant(f"{w.name or 'w'}.probe", w.numpy())
            w.replace_uses(value)
        graph.inputs.append(value)
        names[label] = value.name
    return names


def allocate(layers: list[LayerChoices], budget: float) -> dict[str, Option]:
    """The option per layer minimising the summed estimated error with total bytes <= ``budget``
    (the cheapest option everywhere if even that exceeds it). Deterministic: ties go to the
    layer listed first."""
    hulls = {layer.label: _lower_hull(layer) for layer in layers}
    position = {layer.label: 0 for layer in layers}
    spent = sum(hulls[layer.label][0].nbytes for layer in layers)
    by_label = {layer.label: layer for layer in layers}
    heap: list[tuple[float, int, str]] = []

    def push(order: int, label: str) -> None:
        hull, at = hulls[label], position[label]
        if at + 1 < len(hull):
            layer = by_label[label]
            saved = layer.error(hull[at]) - layer.error(hull[at + 1])
            cost = hull[at + 1].nbytes - hull[at].nbytes
            heapq.heappush(heap, (-saved / max(cost, 1), order, label))

    order = {layer.label: i for i, layer in enumerate(layers)}
    for layer in layers:
        push(order[layer.label], layer.label)
    while heap:
        _, i, label = heapq.heappop(heap)
        hull, at = hulls[label], position[label]
        cost = hull[at + 1].nbytes - hull[at].nbytes
        if spent + cost > budget:
            continue  # this layer's later steps cost more still; others may fit
        spent += cost
        position[label] = at + 1
        push(i, label)
    return {label: hulls[label][position[label]] for label in hulls}


def _lower_hull(layer: LayerChoices) -> list[Option]:
    """Options on the lower convex hull of (bytes, estimated error), cheapest first: the only
    ones a budgeted minimum can pick, and along them error saved per byte only falls."""
    best: dict[int, Option] = {}
    for o in layer.options:  # of equal size, keep the more accurate
        if o.nbytes not in best or layer.error(o) < layer.error(best[o.nbytes]):
            best[o.nbytes] = o
    points = sorted(best.values(), key=lambda o: o.nbytes)
    frontier: list[Option] = []
    for o in points:  # Pareto: each costlier option must be more accurate
        if not frontier or layer.error(o) < layer.error(frontier[-1]):
            frontier.append(o)
    hull: list[Option] = []
    for o in frontier:
        while len(hull) >= 2 and _not_convex(layer, hull[-2], hull[-1], o):
            hull.pop()
        hull.append(o)
    return hull


def _not_convex(layer: LayerChoices, a: Option, b: Option, c: Option) -> bool:
    # b lies on or above the segment a-c: going straight to c saves more per byte.
    ea, eb, ec = layer.error(a), layer.error(b), layer.error(c)
    return (eb - ea) * (c.nbytes - a.nbytes) >= (ec - ea) * (b.nbytes - a.nbytes)
