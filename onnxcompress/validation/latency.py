"""Latency of the original and the compressed model, measured fairly against each other.

Both sessions are created with the same options; runs alternate between the models (A B, B A,
A B, ...) so that a burst of load on a shared machine hits both alike, and the median is
reported, which ignores the outliers such bursts cause. The ratio is what to read; absolute
numbers depend on the machine. The spread (10th-90th percentile of each model's times and of the
per-round speedup) says how far to trust the ratio.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from onnxcompress.data import Feed

DEFAULT_LATENCY_RUNS = 50
DEFAULT_WARMUP = 5
# Each timed measurement lasts about this long (several runs of a fast model).
BLOCK_SECONDS = 1e-3


@dataclass
class LatencyResult:
    runs: int
    warmup: int
    threads: int | None
    inner: int  # runs per timed measurement (fast models are timed in blocks)
    original_ms: float  # median per inference
    compressed_ms: float
    original_min_ms: float
    compressed_min_ms: float
    # Spread: the 10th and 90th percentiles of each model's times, and of the per-round speedup
    # (original / compressed within one round, in which both ran back to back): the ratio's
    # spread is what says whether a speedup is real on a noisy machine.
    original_p10_ms: float | None = None
    original_p90_ms: float | None = None
    compressed_p10_ms: float | None = None
    compressed_p90_ms: float | None = None
    speedup_p10: float | None = None
    speedup_p90: float | None = None

    @property
    def speedup(self) -> float:
        """original / compressed: above 1 means the compressed model is faster."""
        return self.original_ms / self.compressed_ms if self.compressed_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "speedup": self.speedup}


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation, as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def render_latency(lat: dict[str, Any]) -> str:
    """One line: medians, their p10-p90 spread, and the speedup with the spread of its per-round
    ratio (from :meth:`LatencyResult.to_dict`)."""

    def spread(lo: Any, hi: Any, spec: str, unit: str = "") -> str:
        return "" if lo is None or hi is None else f" (p10-p90 {lo:{spec}}-{hi:{spec}}{unit})"

    return (
        f"latency (median of {lat['runs']} alternated measurements, same session options): "
        f"original {lat['original_ms']:.4g} ms"
        f"{spread(lat.get('original_p10_ms'), lat.get('original_p90_ms'), '.4g', ' ms')}, "
        f"compressed {lat['compressed_ms']:.4g} ms"
        f"{spread(lat.get('compressed_p10_ms'), lat.get('compressed_p90_ms'), '.4g', ' ms')} per "
        f"inference, speedup {lat['speedup']:.2f}x"
        f"{spread(lat.get('speedup_p10'), lat.get('speedup_p90'), '.2f', 'x')}"
    )


def measure_latency(
    original: ort.InferenceSession,
    compressed: ort.InferenceSession,
    feed_original: Feed,
    feed_compressed: Feed,
    *,
    runs: int = DEFAULT_LATENCY_RUNS,
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
) -> LatencyResult:
    """Median wall time per ``run`` of each session on one feed, runs alternated.

    A measurement of a tiny model would mostly time Python's call overhead and the clock, so
    each measurement times a block of consecutive runs (``inner``, chosen during warm-up so that
    a block lasts about a millisecond) and divides.
    """
    runs = max(1, runs)
    slowest = 0.0
    for _ in range(max(1, warmup)):
        for session, feed in ((original, feed_original), (compressed, feed_compressed)):
            start = time.perf_counter()
            session.run(None, feed)
            slowest = max(slowest, time.perf_counter() - start)
    inner = max(1, min(100, int(BLOCK_SECONDS / max(slowest, 1e-7))))
    times_a: list[float] = []
    times_b: list[float] = []
    pairs = [(original, feed_original, times_a), (compressed, feed_compressed, times_b)]
    for i in range(runs):
        for session, feed, times in pairs if i % 2 == 0 else pairs[::-1]:
            start = time.perf_counter()
            for _ in range(inner):
                session.run(None, feed)
            times.append((time.perf_counter() - start) / inner)
    ratios = [a / b for a, b in zip(times_a, times_b, strict=True) if b > 0]
    return LatencyResult(
        runs=runs,
        warmup=warmup,
        threads=threads,
        inner=inner,
        original_ms=statistics.median(times_a) * 1e3,
        compressed_ms=statistics.median(times_b) * 1e3,
        original_min_ms=min(times_a) * 1e3,
        compressed_min_ms=min(times_b) * 1e3,
        original_p10_ms=percentile(times_a, 10) * 1e3,
        original_p90_ms=percentile(times_a, 90) * 1e3,
        compressed_p10_ms=percentile(times_b, 10) * 1e3,
        compressed_p90_ms=percentile(times_b, 90) * 1e3,
        speedup_p10=percentile(ratios, 10) if ratios else None,
        speedup_p90=percentile(ratios, 90) if ratios else None,
    )
