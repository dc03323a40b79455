"""Streaming calibrators: activation ranges from data, in memory that does not grow with the data.

onnxruntime's histogram calibrators keep every activation of every sample until the end (users
report 100+ GB on BERT). Ours keep, per tensor, a min/max and a histogram with a fixed number of
bins over a range that only grows: when a batch falls outside it, the bin width is multiplied by
an integer and the old counts are merged into the wider bins, so no sample is kept and the state
is ``bins`` counters per tensor however many samples stream through. All tensors are collected in
one pass over the data (:func:`collect`), and samples of different shapes mix freely.

Methods (onnxruntime's names, lower-cased):

- ``minmax``: the observed min and max.
- ``percentile``: clip each tail at ``percentile`` (e.g. 99.999 keeps all but 1e-5 of each tail).
- ``entropy``: the range whose 8-bit quantized histogram has the least KL divergence from the
  observed one (TensorRT's method, generalized to asymmetric ranges).
- ``mse``: the range with the least expected squared quantization error (clipping plus rounding),
  computed from the histogram.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcompress.activations import iter_intermediates
from onnxcompress.data import Feed
from onnxcompress.errors import ConfigError

logger = logging.getLogger(__name__)

CALIBRATE_METHODS = ("minmax", "percentile", "entropy", "mse")
DEFAULT_BINS = 4096


class StreamingHistogram:
    """Counts over ``bins`` equal bins of a range that grows to cover every value seen.

    Growing multiplies the bin width by an integer ``k`` and shifts the start by whole old bins,
    so every old bin lands in exactly one new bin: merging loses resolution, never counts.
    """

    __slots__ = ("bins", "start", "width", "counts", "min", "max", "total")

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        self.bins = bins
        self.start = 0.0
        self.width = 0.0
        self.counts: np.ndarray | None = None
        self.min = math.inf
        self.max = -math.inf
        self.total = 0

    @property
    def end(self) -> float:
        return self.start + self.width * self.bins

    @property
    def nbytes(self) -> int:
        return 0 if self.counts is None else self.counts.nbytes

    def add(self, values: np.ndarray) -> None:
        x = np.asarray(values, dtype=np.float32).ravel()
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            x = x[np.isfinite(x)]
            if x.size == 0:
                return
            lo, hi = float(x.min()), float(x.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.total += x.size
        if self.counts is None:
            self.start = lo
            # A constant tensor still gets a usable bin width.
            self.width = max((hi - lo) / self.bins, abs(lo) * 1e-6 / self.bins, 1e-12)
            self.counts = np.zeros(self.bins, dtype=np.int64)
        elif lo < self.start or hi >= self.end:
            self._grow(lo, hi)
        idx = (x - np.float32(self.start)) * np.float32(1.0 / self.width)
        np.clip(idx, 0, self.bins - 1, out=idx)
        self.counts += np.bincount(idx.astype(np.int64), minlength=self.bins)

    def _grow(self, lo: float, hi: float) -> None:
        assert self.counts is not None
        new_lo, new_hi = min(lo, self.start), max(hi, self.end)
        # Old bins to add on the left, in units of the old width.
        j = math.ceil((self.start - new_lo) / self.width) if new_lo < self.start else 0
        k = max(1, math.ceil((new_hi - new_lo) / (self.width * self.bins)))
        while self.start - j * self.width + k * self.width * self.bins <= new_hi:
            k += 1
        target = (np.arange(self.bins, dtype=np.int64) + j) // k
        self.counts = np.bincount(target, weights=self.counts, minlength=self.bins).astype(np.int64)
        self.start -= j * self.width
        self.width *= k

    def edges(self) -> np.ndarray:
        return self.start + self.width * np.arange(self.bins + 1, dtype=np.float64)


@dataclass(frozen=True)
class Range:
    """A calibrated range of one tensor, and how much data it saw."""

    low: float
    high: float
    count: int


class Calibrator:
    """Collects statistics for many tensors, one batch at a time, then turns them into ranges.

    ``update(name, array)`` any number of times (any shapes), then ``range(name, ...)``. The
    state is a min/max per tensor, plus a ``bins``-bin histogram for the histogram methods.
    """

    def __init__(self, method: str = "percentile", *, percentile: float = 99.999,
                 bins: int = DEFAULT_BINS, channel_axes: dict[str, int] | None = None) -> None:
        if method not in CALIBRATE_METHODS:
            raise ConfigError(
                f"calibrate_method '{method}' is not one of {', '.join(CALIBRATE_METHODS)}."
            )
        if not 50.0 < percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {percentile}.")
        if bins < 256:
            raise ConfigError(f"bins must be at least 256, got {bins}.")
        self.method = method
        self.percentile = percentile
        self.bins = bins
        self._hist: dict[str, StreamingHistogram] = {}
        self._minmax: dict[str, list[float]] = {}
        # Per-channel max |x| of the tensors in ``channel_axes`` (one float per channel).
        self.channel_axes = dict(channel_axes or {})
        self._channel_max: dict[str, np.ndarray] = {}
        self.samples = 0

    @classmethod
    def merged(cls, parts: list[Calibrator], *, method: str, percentile: float = 99.999) -> Calibrator:
        """One calibrator holding the tensors of ``parts`` (each collected on its own, e.g. one
        tensor each by the run's statistics service); their states are shared, not copied."""
        out = cls(method, percentile=percentile)
        for c in parts:
            out._hist.update(c._hist)
            out._minmax.update(c._minmax)
            out._channel_max.update(c._channel_max)
            out.channel_axes.update(c.channel_axes)
            out.samples = max(out.samples, c.samples)
        return out

    @property
    def names(self) -> list[str]:
        return list(self._hist or self._minmax)

    @property
    def state_bytes(self) -> int:
        """Bytes of statistics held (flat in the number of samples)."""
        return (sum(h.nbytes + 64 for h in self._hist.values()) + 32 * len(self._minmax)
                + sum(a.nbytes for a in self._channel_max.values()))

    def channel_spread(self, name: str) -> float | None:
        """max / median of the per-channel max |x| (1 when all channels span alike).

        One per-tensor int8 scale serves every channel; when a few channels span 10x more than
        the rest, the rest keep only a few levels. None if ``name`` had no channel statistics.
        """
        a = self._channel_max.get(name)
        if a is None or a.size < 2:
            return None
        live = a[a > 0]
        if live.size == 0:
            return 1.0
        return float(live.max() / max(float(np.median(live)), 1e-30))

    def channel_count(self, name: str) -> int | None:
        """How many channels the per-channel statistics of ``name`` have (None: none kept)."""
        a = self._channel_max.get(name)
        return None if a is None else int(a.size)

    def relative_noise(self, name: str, low: float, high: float, levels: int = 255) -> float | None:
        """RMS error of quantizing ``name`` to ``levels`` steps of [low, high] (rounding plus
        clipping), relative to the tensor's RMS; None without a histogram (minmax method).

        A tensor whose values mostly sit in a few of the steps (a long tail stretched the
        range) gets a large value: its int8 copy is a poor one.
        """
        hist = self._hist.get(name)
        if hist is None or hist.counts is None:
            return None
        c = _centers(hist)
        power = float(np.dot(hist.counts, c * c))
        if power <= 0:
            return 0.0
        return math.sqrt(_mse_cost(hist, low, high, levels) / power)

    def update(self, name: str, values: np.ndarray) -> None:
        arr = np.asarray(values)
        if arr.dtype.kind != "f" or arr.size == 0:
            return
        axis = self.channel_axes.get(name)
        if axis is not None and arr.ndim >= 2:
            ax = axis % arr.ndim
            per = np.abs(arr).max(axis=tuple(i for i in range(arr.ndim) if i != ax))
            per = np.nan_to_num(per.astype(np.float32), nan=0.0, posinf=0.0)
            cur = self._channel_max.get(name)
            self._channel_max[name] = per if cur is None or cur.shape != per.shape else np.maximum(cur, per)
        if self.method == "minmax":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            cur = self._minmax.get(name)
            if cur is None:
                self._minmax[name] = [lo, hi, arr.size]
            else:
                cur[0], cur[1], cur[2] = min(cur[0], lo), max(cur[1], hi), cur[2] + arr.size
            return
        hist = self._hist.get(name)
        if hist is None:
            hist = self._hist[name] = StreamingHistogram(self.bins)
        hist.add(arr)

    def update_all(self, outputs: dict[str, np.ndarray]) -> None:
        for name, value in outputs.items():
            self.update(name, value)
        self.samples += 1

    def range(self, name: str, *, symmetric: bool = False, levels: int = 255) -> Range | None:
        """The range to quantize ``name`` to (``levels`` steps), or None if it was never seen."""
        if self.method == "minmax":
            cur = self._minmax.get(name)
            return None if cur is None else Range(cur[0], cur[1], int(cur[2]))
        hist = self._hist.get(name)
        if hist is None or hist.counts is None:
            return None
        if self.method == "percentile":
            lo, hi = _percentile_range(hist, self.percentile)
        elif self.method == "mse":
            lo, hi = _search_range(hist, symmetric, levels, _mse_cost)
        else:
            lo, hi = _search_range(hist, symmetric, levels, _kl_cost)
        return Range(lo, hi, hist.total)

    def ranges(self, *, symmetric: bool = False, levels: int = 255) -> dict[str, Range]:
        out = {}
        for name in self.names:
            r = self.range(name, symmetric=symmetric, levels=levels)
            if r is not None:
                out[name] = r
        return out


# -- range selection from a histogram ----------------------------------------------------------


def _percentile_range(hist: StreamingHistogram, percentile: float) -> tuple[float, float]:
    assert hist.counts is not None
    if percentile >= 100.0:
        return hist.min, hist.max
    cdf = np.cumsum(hist.counts, dtype=np.float64)
    total = cdf[-1]
    tail = total * (100.0 - percentile) / 100.0
    edges = hist.edges()
    i_lo = int(np.searchsorted(cdf, tail, side="right"))
    i_hi = int(np.searchsorted(cdf, total - tail, side="left"))
    lo = max(hist.min, float(edges[min(i_lo, hist.bins - 1)]))
    hi = min(hist.max, float(edges[min(i_hi + 1, hist.bins)]))
    return min(lo, hi), max(lo, hi)


def _candidates(hist: StreamingHistogram, symmetric: bool) -> list[tuple[float, float]]:
    """Ranges to try: the full range shrunk by factors, then each side refined separately."""
    lo, hi = min(hist.min, 0.0), max(hist.max, 0.0)
    if symmetric:
        m = max(-lo, hi)
        lo, hi = -m, m
    factors = np.geomspace(1.0, 0.02, 160)
    return [(lo * f, hi * f) for f in factors]


def _coarsened(hist: StreamingHistogram, levels: int, per_bin: int = 16) -> StreamingHistogram:
    """The histogram with merged bins when it is too sparse for a stable KL estimate.

    A few samples spread over thousands of bins make P spiky, and spiky histograms make KL
    favour over-clipping; ~``per_bin`` values per bin (never fewer than 2 * levels bins) fix it.
    """
    assert hist.counts is not None
    want = max(2 * levels, min(hist.bins, hist.total // per_bin))
    k = max(1, hist.bins // want)
    if k == 1:
        return hist
    out = StreamingHistogram(hist.bins // k)
    out.counts = np.add.reduceat(hist.counts[: out.bins * k], np.arange(0, out.bins * k, k))
    out.counts[-1] += hist.counts[out.bins * k:].sum()
    out.start, out.width = hist.start, hist.width * k
    out.min, out.max, out.total = hist.min, hist.max, hist.total
    return out


def _search_range(hist: StreamingHistogram, symmetric: bool, levels: int,
                  cost: Callable[[StreamingHistogram, float, float, int], float]) -> tuple[float, float]:
    """Minimize ``cost`` over shrink factors of the whole range, then per side (asymmetric)."""
    if cost is _kl_cost:
        hist = _coarsened(hist, levels)
    candidates = _candidates(hist, symmetric)
    best = min(candidates, key=lambda c: cost(hist, c[0], c[1], levels))
    if symmetric or hist.min >= 0 or hist.max <= 0:
        return _clip_to_seen(hist, best)
    lo, hi = best
    full_lo, full_hi = min(hist.min, 0.0), max(hist.max, 0.0)
    for _ in range(2):  # coordinate descent: one side at a time, from the joint optimum
        his = [h for h in np.geomspace(full_hi, max(full_hi * 0.02, 1e-12), 96)]
        hi = min(his, key=lambda h: cost(hist, lo, h, levels))
        los = [-v for v in np.geomspace(-full_lo, max(-full_lo * 0.02, 1e-12), 96)]
        lo = min(los, key=lambda v: cost(hist, v, hi, levels))
    return _clip_to_seen(hist, (lo, hi))


def _clip_to_seen(hist: StreamingHistogram, r: tuple[float, float]) -> tuple[float, float]:
    return max(r[0], min(hist.min, 0.0)), min(r[1], max(hist.max, 0.0))


def _centers(hist: StreamingHistogram) -> np.ndarray:
    return hist.start + hist.width * (np.arange(hist.bins, dtype=np.float64) + 0.5)


def _mse_cost(hist: StreamingHistogram, lo: float, hi: float, levels: int) -> float:
    """Expected squared error of quantizing the histogram's values to ``levels`` steps of [lo, hi]."""
    assert hist.counts is not None
    c = _centers(hist)
    n = hist.counts
    step = (hi - lo) / levels if hi > lo else 0.0
    clipped = np.where(c < lo, (lo - c) ** 2, np.where(c > hi, (c - hi) ** 2, step * step / 12.0))
    return float(np.dot(n, clipped))


def _kl_cost(hist: StreamingHistogram, lo: float, hi: float, levels: int) -> float:
    """KL(P || Q): P the histogram clipped to [lo, hi], Q that clipped histogram quantized."""
    assert hist.counts is not None
    i0 = int(np.clip(math.floor((lo - hist.start) / hist.width), 0, hist.bins - 1))
    i1 = int(np.clip(math.ceil((hi - hist.start) / hist.width), i0 + 1, hist.bins))
    counts = hist.counts.astype(np.float64)
    p = counts[i0:i1].copy()
    p[0] += counts[:i0].sum()
    p[-1] += counts[i1:].sum()
    nb = p.size
    if nb <= levels:
        # Quantization steps are finer than the histogram: only the clipping loses information.
        q = counts[i0:i1]
    else:
        groups = np.minimum((np.arange(nb) * levels) // nb, levels - 1)
        nonzero = (counts[i0:i1] > 0).astype(np.float64)
        mass = np.bincount(groups, weights=counts[i0:i1], minlength=levels)
        support = np.bincount(groups, weights=nonzero, minlength=levels)
        per_bin = np.divide(mass, support, out=np.zeros_like(mass), where=support > 0)
        q = per_bin[groups] * nonzero
    p_sum, q_sum = p.sum(), q.sum()
    if p_sum <= 0 or q_sum <= 0:
        return math.inf
    p = p / p_sum
    q = q / q_sum
    mask = p > 0
    # Bins where P has mass and Q has none (the clipped tails folded into an edge bin that Q
    # spread thin) get a small floor instead of an infinite cost.
    qm = np.maximum(q[mask], 1e-12)
    return float(np.sum(p[mask] * np.log(p[mask] / qm)))


# -- one pass over the data ---------------------------------------------------------------------


def collect(
    model: ir.Model,
    names: Sequence[str],
    feeds: Iterable[Feed],
    calibrator: Calibrator,
    *,
    max_samples: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    total: int | None = None,
    data: str = "the calibration data",
) -> Calibrator:
    """Run ``model`` once over ``feeds``, streaming every tensor in ``names`` into ``calibrator``.

    Memory is one sample's activations plus the calibrator's fixed state. Raises
    :class:`onnxcompress.errors.RuntimeUnavailableError` (naming the sample of ``data`` and the
    node) when the model cannot run on a feed.
    """
    start = time.perf_counter()

    def limited() -> Iterable[Feed]:
        for i, feed in enumerate(feeds):
            if max_samples is not None and i >= max_samples:
                return
            yield feed

    if total is not None and max_samples is not None:
        total = min(total, max_samples)
    for i, outputs in enumerate(iter_intermediates(model, names, limited(), data=data)):
        calibrator.update_all(outputs)
        if progress is not None:
            progress("calibrating", i + 1, total or 0)
    logger.info("Calibrated %d tensors on %d samples in %.1f s (%s, state %.1f KB).",
                len(calibrator.names), calibrator.samples, time.perf_counter() - start,
                calibrator.method, calibrator.state_bytes / 1024)
    return calibrator
