"""Teacher-guided reconstruction of pruned weights: the glue between a pass and the refits.

A pass that has decided its masks hands them here with the calibration feeds; each layer's input
statistics are collected from the model as it was before the pass (the teacher's inputs), the
kept weights of every output row are refit to the least-squares optimum, and the refit is kept
only where it lowers the layer's output error on the calibration data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxcompress.data import Feed
from onnxcompress.layerwise.refit import grouped_output_error, refit_masked
from onnxcompress.layerwise.stats import InputStats, as_rows, collect_input_stats, from_rows, layout_of
from onnxcompress.layerwise.sweep import inverse_factor, sparse_sweep
from onnxcompress.model import copy_model
from onnxcompress.weights import Weight

logger = logging.getLogger(__name__)

# Rows (output positions) sampled per calibration sample for a Conv's statistics: 1024 x 12
# samples is still > 20 rows per unknown for a 512-wide layer, at half the collection time.
MAX_ROWS = 1024
# Layers with more than this many (rows x k^2) of one group are refit by the compensating sweep
# alone, not the exact refit (2048 x 2048: 8.6e9, swept; 1024 x 1024 and smaller: exact).
SWEEP_ONLY_MK2 = 4e9


@dataclass
class Refit:
    """A layer's refit weights and its relative output error on the calibration data."""

    array: np.ndarray
    error_before: float  # plain pruning, ||(W' - W) x||^2 / ||W x||^2
    error_after: float  # after the refit (never above error_before)
    mask: np.ndarray | None = None  # the mask the refit chose (True = kept), when it chose one
    method: str = "exact"  # exact (the pass's mask, refit), sweep (SparseGPT mask and update), plain


@dataclass
class ReconstructionResult:
    refits: dict[str, Refit] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    samples: int = 0


def refit_pruned(
    model: ir.Model,
    items: Iterable[tuple[Weight, np.ndarray]],
    feeds: Iterable[Feed],
    *,
    seed: int = 0,
    stages: int = 1,
    select: dict[str, tuple[float | None, tuple[int, int] | None]] | None = None,
) -> ReconstructionResult:
    """Refit each weight's kept entries (``mask`` True = kept) against its unpruned output.

    ``stages`` 1: every layer is refit on the teacher's inputs (one collection). ``stages`` > 1
    (sequential): layers are refit in that many groups in graph order, each against the inputs
    the model with the earlier groups already pruned and refit produces, so errors do not
    compound; the refit weights are written into ``model`` as each group is done. Costs one
    collection per stage and a copy of the model (the teacher).

    ``select`` (label -> (sparsity, N:M or None)): the refit may also choose the mask itself by a
    SparseGPT sweep (:func:`sweep.sparse_sweep`) at the same sparsity or N:M pattern; per group,
    whichever of the pass's mask (refit exactly) and the sweep's mask (then refit exactly) has
    the lower output error is kept (``Refit.mask`` says which mask).
    """
    select = select or {}
    start = time.perf_counter()
    items = list(items)
    result = ReconstructionResult()
    feeds = list(feeds)
    result.samples = len(feeds)
    if stages <= 1:
        stats, skipped = collect_input_stats(model, [w for w, _ in items], feeds, seed=seed,
                                              max_rows=MAX_ROWS)
        result.skipped.update(skipped)
        for w, mask in items:
            if w.label in stats:
                _refit_one(w, mask, stats[w.label], result, select.get(w.label))
    else:
        teacher = copy_model(model)
        size = -(-len(items) // stages)
        for s0 in range(0, len(items), size):
            group = items[s0:s0 + size]
            student = model if s0 else None  # the first group sees the teacher's own inputs
            stats, skipped = collect_input_stats(
                teacher, [w for w, _ in group], feeds, seed=seed, student=student, max_rows=MAX_ROWS)
            result.skipped.update(skipped)
            for w, mask in group:
                if w.label in stats and _refit_one(w, mask, stats[w.label], result, select.get(w.label)):
                    w.set_numpy(result.refits[w.label].array)
    result.seconds = time.perf_counter() - start
    return result


def _refit_one(
    w: Weight,
    mask: np.ndarray,
    stats: InputStats,
    result: ReconstructionResult,
    select: tuple[float | None, tuple[int, int] | None] | None = None,
) -> bool:
    layout, _ = layout_of(w)
    assert layout is not None
    original = w.numpy()
    rows = as_rows(original, layout)
    mask_rows = as_rows(mask, layout) != 0
    h, cross, teacher_h = stats.hessian, stats.cross, stats.teacher_hessian
    plain = np.where(mask_rows, rows, 0.0)
    # A large layer's exact refit (masked CG, CG_ITERATIONS products of m x k x k) took ~15 min
    # a layer at 8192 wide: there the compensating sweep with the pass's mask stands in for it
    # (one inverse factor of H, one m x k x k sweep; SparseGPT's update, OBS per column).
    large = rows[0].size * rows.shape[-1] > SWEEP_ONLY_MK2
    factor = inverse_factor(h) if large else None
    if large:
        candidate = sparse_sweep(rows, h, mask=mask_rows, factor=factor)[0]
    else:
        candidate = refit_masked(rows, h, mask_rows, cross=cross)
    e_plain = grouped_output_error(rows, plain, h, cross=cross, teacher_h=teacher_h)
    e_fit = grouped_output_error(rows, candidate, h, cross=cross, teacher_h=teacher_h)
    better = e_fit < e_plain  # per group: a refit is kept only where it lowers the error
    refit = np.where(better[:, None, None], candidate, plain)
    chosen_mask = mask_rows
    e_best = np.minimum(e_fit, e_plain)
    method = "exact" if better.any() else "plain"
    if select is not None:
        sparsity, n_m = select
        # The sweep picks the mask on the student's own statistics; the exact refit then
        # settles the kept weights (against the teacher, with cross statistics).
        swept, swept_mask = sparse_sweep(rows, h, sparsity=sparsity if n_m is None else None, n_m=n_m,
                                         factor=factor)
        if not large:
            swept = refit_masked(rows, h, swept_mask, cross=cross, start=swept)
        e_swept = grouped_output_error(rows, swept, h, cross=cross, teacher_h=teacher_h)
        wins = e_swept < e_best
        if wins.any():
            refit = np.where(wins[:, None, None], swept, refit)
            chosen_mask = np.where(wins[:, None, None], swept_mask, mask_rows)
            e_best = np.minimum(e_best, e_swept)
            method = "sweep" if wins.all() else "sweep+exact"
    before, after = float(e_plain.sum()), float(e_best.sum())
    reference_h = teacher_h if teacher_h is not None else h
    energy = float(grouped_output_error(np.zeros_like(rows), rows, reference_h).sum())
    if not np.all(np.isfinite(refit)):
        result.skipped[w.label] = "the refit was not finite"
        return False
    array = from_rows(refit, layout, original.shape, original.dtype)
    new_mask = from_rows(chosen_mask, layout, original.shape, np.dtype(bool))
    array = np.where(new_mask, array, np.zeros((), array.dtype))  # exact zeros where pruned
    scale = energy if energy > 0 else 1.0
    result.refits[w.label] = Refit(array, before / scale, after / scale, new_mask, method)
    return True
