"""GPTQ rounding of int8 weights for the quantize pass's ``reconstruct``.

The quantize pass keeps its scales (symmetric, per channel or per tensor) and its storage; only
the integer each weight rounds to changes: the columns of a layer's rows are rounded in order,
each column's rounding error compensated on the columns not yet rounded through ``H^-1``
(:func:`sweep.round_sweep`, ``H = E[x x^T]`` of the layer's input on the calibration data). A
layer keeps the GPTQ codes only where they lower its output error against round-to-nearest.

The pass collects the statistics once (:func:`int8_rounding`) and makes them current for its
build (:func:`active`); its int8 writer asks :func:`round_int8` for the codes of each weight.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcompress.data import Feed
from onnxcompress.layerwise.refit import grouped_output_error
from onnxcompress.layerwise.stats import (
    InputStats,
    as_rows,
    collect_input_stats,
    from_rows,
    layout_of,
    row_width,
)
from onnxcompress.layerwise.sweep import round_sweep
from onnxcompress.passes._qdq import along
from onnxcompress.weights import ROLE_WEIGHT, WeightIndex

logger = logging.getLogger(__name__)

MAX_ROWS = 1024  # output positions per sample for a Conv's statistics (as reconstruct.py)
# A layer with more inputs a row (a Conv's input channels per group x kernel) rounds to nearest:
# its E[x x^T] and the sweep's inverse are k^2 float64 each, several copies at once (CREPE's
# 128 x 64 conv, k = 8192: static int8 peaked at 2.86 GB for a 2 MB model, 70 s).
MAX_INPUTS = 4096
# The statistics are collected in blocks of layers whose float64 sums fit this (one pass over
# the calibration data each): FaceBoxes' 230 MB of them at once peaked static int8 at 654 MB.
STATS_BLOCK_BYTES = 96 * 1024 * 1024


@dataclass
class Int8Rounding:
    """Input statistics by weight label, and what the rounding did (label -> (error RTN, GPTQ))."""

    stats: dict[str, InputStats]
    report: dict[str, Any] = field(default_factory=lambda: {"refit": {}, "skipped": {}, "seconds": 0.0})

    def codes(self, label: str, w: Any, arr: np.ndarray, q: np.ndarray, scale: np.ndarray,
              axis: int | None, qmax: float) -> np.ndarray:
        """``q`` (round-to-nearest codes of ``arr`` with ``scale`` along ``axis``), or GPTQ codes
        on the same scales where they lower the layer's output error."""
        stats = self.stats.get(label)
        layout, _ = layout_of(w)
        if stats is None or layout is None or tuple(arr.shape) != tuple(w.shape):
            return q
        start = time.perf_counter()
        full = np.broadcast_to(along(np.asarray(scale, np.float64), axis, arr.ndim), arr.shape)
        rows, steps = as_rows(arr, layout), as_rows(full, layout)
        steps = np.where(steps > 0, steps, 1.0)

        def round_column(j: int, values: np.ndarray) -> np.ndarray:
            s = steps[:, :, j]
            return np.clip(np.round(values / s), -qmax, qmax) * s

        h = np.asarray(stats.hessian, np.float64)
        swept = round_sweep(rows, h, round_column)
        codes = np.clip(np.round(swept / steps), -qmax, qmax)
        before = float(grouped_output_error(rows, as_rows(q, layout) * steps, h).sum())
        after = float(grouped_output_error(rows, codes * steps, h).sum())
        energy = float(grouped_output_error(np.zeros_like(rows), rows, h).sum()) or 1.0
        self.report["seconds"] += time.perf_counter() - start
        self.report["refit"][label] = (round(before / energy, 8), round(min(before, after) / energy, 8))
        if not after < before:
            return q
        return from_rows(codes, layout, arr.shape, np.dtype(np.int8))


_ACTIVE: ContextVar[Int8Rounding | None] = ContextVar("onnxcompress_int8_rounding", default=None)


def int8_rounding(model: ir.Model, feeds: Iterable[Feed], *, seed: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> Int8Rounding:
    """Collect E[x x^T] of every refittable compute weight's input (one streaming collection)."""
    start = time.perf_counter()
    laid = [(w, layout) for w in WeightIndex.build(model) if w.role == ROLE_WEIGHT and w.is_float
            and (layout := layout_of(w)[0]) is not None]
    wide = {w.label: f"{row_width(w, layout)} inputs a row (over {MAX_INPUTS}): rounded to nearest"
            for w, layout in laid if row_width(w, layout) > MAX_INPUTS}
    weights = [w for w, _ in laid if w.label not in wide]
    # every layer's E[x x^T] is alive until its weight is written: kept in float32 (the sweep
    # works in float64, one layer at a time), collected in blocks of STATS_BLOCK_BYTES
    stats, skipped = collect_input_stats(model, weights, list(feeds), seed=seed, max_rows=MAX_ROWS,
                                         budget_bytes=STATS_BLOCK_BYTES, hessian_dtype=np.float32,
                                         progress=progress)
    rounding = Int8Rounding(stats)
    rounding.report["skipped"].update({**wide, **skipped})
    rounding.report["seconds"] += time.perf_counter() - start
    return rounding


@contextlib.contextmanager
def active(rounding: Int8Rounding | None) -> Iterator[None]:
    """Make ``rounding`` the one :func:`round_int8` uses while the block runs."""
    token = _ACTIVE.set(rounding)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def round_int8(w: Any, arr: np.ndarray, q: np.ndarray, scale: np.ndarray, axis: int | None,
               reduce_range: bool, *, transposed: bool = False) -> np.ndarray:
    """The int8 writer's hook: ``q`` unchanged unless a rounding is active for ``w``.
    ``transposed``: ``arr``/``q`` are ``w``'s value transposed (a Gemm ``transB`` weight)."""
    rounding = _ACTIVE.get()
    if rounding is None:
        return q
    qmax = 63.0 if reduce_range else 127.0
    if transposed and arr.ndim == 2:
        back = rounding.codes(w.label, w, arr.T, q.T, scale, None if axis is None else 1 - axis % 2, qmax)
        return back.T
    return rounding.codes(w.label, w, arr, q, scale, axis, qmax)


