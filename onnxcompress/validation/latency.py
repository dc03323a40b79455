"""Latency of the original and the compressed model, measured fairly against each other.

Both sessions are created with the same options; runs alternate between the models (A B, B A,
A B, ...) so that a burst of load on a shared machine hits both alike, and the median is
reported, which ignores the outliers such bursts cause. The ratio is what to read; absolute
numbers depend on the machine.
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

    @property
    def speedup(self) -> float:
        """original / compressed: above 1 means the compressed model is faster."""
        return self.original_ms / self.compressed_ms if self.compressed_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "speedup": self.speedup}


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
    return LatencyResult(
        runs=runs,
        warmup=warmup,
        threads=threads,
        inner=inner,
        original_ms=statistics.median(times_a) * 1e3,
        compressed_ms=statistics.median(times_b) * 1e3,
        original_min_ms=min(times_a) * 1e3,
        compressed_min_ms=min(times_b) * 1e3,
    )
