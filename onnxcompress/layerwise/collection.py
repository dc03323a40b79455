"""One streaming collection of activation statistics per run, shared by every pass.

Passes ask for statistics by what they are, not by how to get them: per-channel moments of a
tensor (:class:`Moments`: Wanda-style pruning importance, k-means sensitivity, bias correction)
and streaming histograms of named tensors (:class:`Histogram`: static int8 ranges). The first
request of a run collects, in one onnxruntime pass over the calibration data, what that request
and every later pass of the pipeline declared (:meth:`Pass.statistics`); later requests are
served from the cache, keyed by the request.

"Once" means: on the model as the first data-using pass sees it (the teacher, before any pass
that uses data has changed it), matched by tensor name afterwards. A later pass that asks for a
tensor the teacher did not have, or whose channel count changed (channel pruning), gets a
collection on its own model, counted in :attr:`Statistics.collections`. Why the teacher and not
one collection per model state: one pass over the data instead of one per pass, and the passes
that use data read statistics that pruning and k-means change little (bias correction keeps
channel means). The price, measured (DEVELOPERS.md, "Statistics"): static int8 after 50%
pruning scores the same task metric with the teacher's ranges, but reproduces the pruned float
model 0.1-2.3 dB less exactly than with ranges of the pruned model.

Each request keeps its own sample count (the first ``samples`` feeds count for it), so a pass's
statistics are the same numbers whether it ran alone or shared a collection; a run-wide
``samples`` cap (:attr:`Statistics.samples`, the one setting) overrides every request's count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcompress import activations
from onnxcompress.calibration import Calibrator
from onnxcompress.data import Feed
from onnxcompress.errors import OnnxCompressError
from onnxcompress.weights import Weight

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Moments:
    """Mean and mean square per channel (``axis``) of ``tensor`` over the first ``samples`` feeds."""

    tensor: str
    axis: int
    samples: int | None = None


@dataclass(frozen=True)
class Histogram:
    """A streaming histogram (calibration state) of ``tensor`` over the first ``samples`` feeds,
    with the max |x| per channel along ``channel_axis`` when given."""

    tensor: str
    method: str = "percentile"
    percentile: float = 99.999
    channel_axis: int | None = None
    samples: int | None = None


Request = Moments | Histogram


@dataclass
class ChannelMoments:
    """What a :class:`Moments` request gets: per-channel mean and mean square, and the count."""

    mean: np.ndarray
    square: np.ndarray
    count: int


class Statistics:
    """The run's statistics service (``context.stats``); see the module docstring.

    ``feeds`` is the calibration data (iterable more than once); ``declared(model)`` returns the
    requests of the passes after the one asking first (the pipeline sets them on the context)."""

    def __init__(self, feeds: Iterable[Feed] | None, *, samples: int | None = None,
                 declared: Callable[[ir.Model], list[Request]] | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 data: str = "the calibration data") -> None:
        self.feeds = feeds
        self.samples = samples
        self.declared = declared
        self.progress = progress
        self.data = data
        self._cache: dict[Request, Any] = {}
        self._failure: OnnxCompressError | None = None
        self.collections = 0  # passes over the data
        self.runs = 0  # onnxruntime runs over calibration samples
        self.seconds = 0.0

    # -- what passes call ------------------------------------------------------------------

    def get(self, model: ir.Model, requests: Iterable[Request]) -> dict[Request, Any]:
        """The result of each request that could be served (a tensor the model cannot expose
        is absent). Collects what is not cached: the first time, everything declared too.
        Raises :class:`RuntimeUnavailableError` when the model cannot run on the data."""
        requests = list(dict.fromkeys(requests))
        missing = [r for r in requests if r not in self._cache]
        if missing:
            if self._failure is not None:
                raise self._failure
            if self.collections == 0 and self.declared is not None:
                missing += [r for r in self.declared(model) if r not in self._cache]
            try:
                self._collect(model, list(dict.fromkeys(missing)), store=True)
            except OnnxCompressError as e:
                self._failure = e
                raise
        return {r: self._cache[r] for r in requests if self._cache.get(r) is not None}

    def channel_moments(self, model: ir.Model, weights: Iterable[Weight],
                        samples: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(mean, mean square) per input channel of each weight's activation, by label (what
        :func:`onnxcompress.activations.input_channel_moments` computes, from the shared
        collection). Statistics whose channel count no longer fits the weight (an earlier
        pass removed channels) are collected again on ``model``."""
        wanted = weight_moments(weights, samples)
        found = self.get(model, set(wanted.values()))
        stale = {label: r for label, r in wanted.items()
                 if r in found and not _fits(found[r].mean.size, weights_by_label(weights)[label])}
        if stale:
            logger.info("Statistics of %d tensor(s) no longer fit their weights (channels "
                        "removed): collected again on the current model.", len(stale))
            found = {**found, **self._collect(model, list(set(stale.values())), store=False)}
        return {label: (found[r].mean, found[r].square) for label, r in wanted.items() if r in found}

    def calibrator(self, model: ir.Model, requests: list[Histogram]) -> Calibrator:
        """One :class:`Calibrator` holding the histograms of ``requests`` (all of one method),
        from the shared collection; ``calibrator.ranges()`` as after a collection of its own."""
        found = self.get(model, requests)
        # A tensor whose channel count changed since the teacher's collection (channel pruning):
        # its range would count channels that are gone; collected again on ``model``.
        widths = _channel_counts(model, {r.tensor: r.channel_axis for r in requests
                                         if r.channel_axis is not None})
        stale = [r for r in requests if r in found and r.tensor in widths
                 and found[r].channel_count(r.tensor) not in (None, widths[r.tensor])]
        if stale:
            logger.info("Histograms of %d tensor(s) whose channels changed: collected again on "
                        "the current model.", len(stale))
            found = {**found, **self._collect(model, stale, store=False)}
        first = requests[0] if requests else Histogram("")
        return Calibrator.merged([found[r] for r in requests if r in found],
                                 method=first.method, percentile=first.percentile)

    # -- the one pass over the data --------------------------------------------------------

    def limit(self, n: int | None) -> int | None:
        """A request's sample count under the run-wide cap."""
        if self.samples is not None:
            return self.samples if n is None else min(n, self.samples)
        return n

    def _collect(self, model: ir.Model, requests: list[Request], *, store: bool) -> dict[Request, Any]:
        if self.feeds is None or not requests:
            return {}
        start = time.perf_counter()
        limits = [self.limit(r.samples) for r in requests]
        last = None if any(n is None for n in limits) else max(limits)  # type: ignore[type-var]
        names = {r.tensor for r in requests}
        sums: dict[Moments, list] = {}
        calibrators: dict[Histogram, Calibrator] = {
            r: Calibrator(r.method, percentile=r.percentile,
                          channel_axes={} if r.channel_axis is None else {r.tensor: r.channel_axis})
            for r in requests if isinstance(r, Histogram)
        }
        self.collections += 1
        total = _len(self.feeds)
        if total is not None and last is not None:
            total = min(total, last)
        # Each group of tensors streams the data on its own: a run holds every tensor it exposes.
        groups = activations.grouped_by_bytes(model, sorted(names), next(iter(self.feeds), None),
                                              activations.EXPOSED_BUDGET_BYTES)
        for g, group in enumerate(groups):
            mine = [(r, n) for r, n in zip(requests, limits, strict=True) if r.tensor in group]
            for i, outputs in enumerate(activations.iter_intermediates(
                    model, group, _first(self.feeds, last), data=self.data)):
                self.runs += 1
                moved: dict[tuple[str, int], np.ndarray] = {}
                for r, n in mine:
                    if n is not None and i >= n:
                        continue
                    if isinstance(r, Histogram):
                        calibrators[r].update_all({r.tensor: outputs[r.tensor]}
                                                  if r.tensor in outputs else {})
                    elif r.tensor in outputs:
                        _add_moments(sums.setdefault(r, [0.0, 0.0, 0]), outputs[r.tensor], r.axis, moved)
                if self.progress is not None:
                    self.progress("statistics", g * (total or 0) + i + 1, (total or 0) * len(groups))
        out: dict[Request, Any] = {}
        for r in requests:
            if isinstance(r, Histogram):
                out[r] = calibrators[r]
            else:
                acc = sums.get(r)
                out[r] = ChannelMoments(acc[0] / acc[2], acc[1] / acc[2], acc[2]) if acc and acc[2] else None
        seconds = time.perf_counter() - start
        self.seconds += seconds
        logger.info("Statistics: %d request(s) over %d tensor(s) in %d pass(es) (%.1f s).",
                    len(requests), len(names), len(groups), seconds)
        if store:
            self._cache.update(out)
        return {r: v for r, v in out.items() if v is not None}


def weight_moments(weights: Iterable[Weight], samples: int | None = None) -> dict[str, Moments]:
    """The :class:`Moments` request of each weight's input activation, by label (main graph and
    top-level If branches observe it; a Loop body's does not come back)."""
    out = {}
    for w in weights:
        found = activations.activation_input(w)  # inside an If branch: observed through the If
        if found is not None and found[0] is not None and found[0].name:
            out[w.label] = Moments(found[0].name, found[1], samples)
    return out


def weights_by_label(weights: Iterable[Weight]) -> dict[str, Weight]:
    return {w.label: w for w in weights}


def _channel_counts(model: ir.Model, axes: dict[str, int]) -> dict[str, int]:
    """The declared size of axis ``axes[name]`` of each main-graph tensor, where known."""
    out = {}
    values = [*model.graph.inputs, *(v for node in model.graph for v in node.outputs)]
    for v in values:
        axis = axes.get(v.name or "")
        if axis is None or v.shape is None or not -len(v.shape) <= axis < len(v.shape):
            continue
        dim = v.shape[axis]
        if isinstance(dim, int):
            out[v.name] = dim
    return out


def _fits(channels: int, w: Weight) -> bool:
    """Whether ``channels`` input channels can feed ``w`` (a grouped Conv reads a multiple)."""
    if w.in_axis is None:
        return True
    k = w.shape[w.in_axis]
    conv = any(u.node.op_type in ("Conv", "ConvTranspose") for u in w.uses)
    return channels == k or (conv and k > 0 and channels % k == 0)


def _add_moments(acc: list, value: Any, axis: int, moved: dict[tuple[str, int], np.ndarray]) -> None:
    # The same float64 sums as activations.input_channel_moments, so results do not depend on
    # whether a request shared its collection.
    x = np.asarray(value)
    key = (id(value), axis % max(x.ndim, 1))
    flat = moved.get(key)
    if flat is None:
        x = x.astype(np.float64)
        axis %= x.ndim
        # (an activation of no channels: a CBAM block's 3 // 16 hidden units, batch 41's dehazer)
        flat = moved[key] = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis]) if x.shape[axis] \
            else np.zeros((0, 0))
    acc[0] = acc[0] + flat.sum(axis=0)
    acc[1] = acc[1] + np.einsum("ij,ij->j", flat, flat)  # einsum: no BLAS threads
    acc[2] += flat.shape[0]


def _first(feeds: Iterable[Feed], n: int | None) -> Iterator[Feed]:
    for i, feed in enumerate(feeds):
        if n is not None and i >= n:
            return
        yield feed


def _len(feeds: Iterable[Feed]) -> int | None:
    try:
        return len(feeds)  # type: ignore[arg-type]
    except TypeError:
        return None
