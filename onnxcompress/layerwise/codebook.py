"""Teacher-guided refit of k-means codebooks: the centroids that minimise each layer's output error.

A clustered weight is ``W'[e] = codebook[row(e), label(e)] * scale(e)``: linear in the codebook
entries, so for fixed assignments the entries minimising ``tr((W' - W) H (W' - W)^T)`` (``H`` the
layer input's E[x x^T], :mod:`stats`) solve one small ``K x K`` system per codebook row (k-means
codebook rows run along output channels, and output channels do not interact in that error).
The k-means pass calls :func:`codebook_refitter` once with its calibration feeds and then the
returned function per weight (the hook in ``_kmeans_share._share``); a refit is kept only where it
lowers the layer's output error.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcompress.data import Feed
from onnxcompress.errors import OnnxCompressError
from onnxcompress.layerwise.refit import DEFAULT_DAMP, damped, grouped_output_error
from onnxcompress.layerwise.stats import InputStats, as_rows, collect_input_stats, layout_of
from onnxcompress.model import copy_model
from onnxcompress.weights import Weight

logger = logging.getLogger(__name__)

MAX_ROWS = 1024  # output positions per sample for a Conv's statistics (as reconstruct.py)
STAGES = 4


def refit_entries(
    rows: np.ndarray,
    h: np.ndarray,
    ids: np.ndarray,
    scale: np.ndarray,
    book: np.ndarray,
    *,
    fixed: np.ndarray | None = None,
    damp: float = DEFAULT_DAMP,
    cross: np.ndarray | None = None,
) -> np.ndarray:
    """Codebook ``book`` [R, K] refit so that ``book.flat[ids] * scale`` matches ``rows``.

    ``rows``/``ids``/``scale`` are grouped weight rows ``[g, m, k]`` (:func:`stats.as_rows`),
    ``ids`` the flat codebook index of every weight (``row * K + label``), ``h`` [g, k, k].
    Every output row must read one codebook row. ``fixed`` ([R, K] bool) entries keep their
    value (an exact zero that encodes pruned weights); unused entries keep theirs too.
    ``cross`` [g, k, k]: E[x_student x_teacher^T] when ``h`` is the student's (sequential).
    """
    big_r, big_k = book.shape
    normal = np.zeros((big_r, big_k, big_k))
    rhs = np.zeros((big_r, big_k))
    for gi in range(rows.shape[0]):
        hd = damped(h[gi], damp)
        book_row = ids[gi, :, 0] // big_k  # [m]: the codebook row of each output row
        local = ids[gi] - book_row[:, None] * big_k  # [m, k] labels within that row
        m, k = local.shape
        onehot = np.zeros((m, k, big_k))
        np.put_along_axis(onehot, local[:, :, None], scale[gi][:, :, None], axis=2)
        h_onehot = np.matmul(hd, onehot)  # [m, k, K]
        np.add.at(normal, book_row, np.matmul(onehot.transpose(0, 2, 1), h_onehot))
        target = rows[gi] @ (hd if cross is None else cross[gi].T)  # [m, k]: (C w)^T per row
        np.add.at(rhs, book_row, np.einsum("mk,mkc->mc", target, onehot))
    out = np.asarray(book, np.float64).copy()
    keep = np.diagonal(normal, axis1=1, axis2=2) <= 0  # unused entries
    if fixed is not None:
        keep |= fixed
    # Fixed entries move to the right-hand side; their equations become c_j = old c_j.
    rhs -= np.einsum("rij,rj->ri", normal, np.where(keep, out, 0.0))
    normal = np.where(keep[:, None, :] | keep[:, :, None], 0.0, normal)
    idx = np.arange(big_k)
    normal[:, idx, idx] += keep
    rhs = np.where(keep, out, rhs)
    try:
        return np.linalg.solve(normal, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(normal[r], rhs[r], rcond=None)[0] for r in range(big_r)])


def codebook_refitter(
    model: ir.Model,
    weights: Iterable[Weight],
    feeds: Iterable[Feed],
    *,
    seed: int = 0,
    stages: int = STAGES,
) -> tuple[Callable[[Weight, Any], Any], dict[str, Any]]:
    """``refit(weight, clustering) -> clustering`` for the k-means pass, and a dict of what it
    did (``refit``: label -> (error before, after), ``skipped``, ``seconds``), filled as it runs.

    Sequential: the weights (in the order the pass clusters them) are refit in ``stages``
    groups; each group's statistics are collected when its first weight comes, from ``model`` as
    the pass has changed it so far (the student) against a copy of it as it is now (the
    teacher), so a layer's centroids also make up for what the layers before it lost. Refitting
    on the teacher's inputs alone shrank outputs and compounded (digits_mlp 2 bits: 92.5% ->
    82.2%)."""
    report: dict[str, Any] = {"refit": {}, "skipped": {}, "seconds": 0.0, "stages": stages}
    weights = list(weights)
    feeds = list(feeds)
    teacher = copy_model(model)
    size = max(1, -(-len(weights) // max(stages, 1)))
    stage_of = {w.label: i // size for i, w in enumerate(weights)}
    stats: dict[str, InputStats] = {}
    collected: set[int] = set()

    def refit(w: Weight, c: Any) -> Any:
        t0 = time.perf_counter()
        try:
            stage = stage_of.get(w.label)
            if stage is not None and stage not in collected:
                collected.add(stage)
                group = [x for x in weights if stage_of[x.label] == stage]
                try:
                    found, skipped = collect_input_stats(
                        teacher, group, feeds, seed=seed, max_rows=MAX_ROWS,
                        student=model if stage else None)
                except OnnxCompressError as e:
                    found, skipped = {}, {x.label: f"the model could not run ({e})" for x in group}
                stats.update(found)
                report["skipped"].update(skipped)
            if w.label in stats:
                c = _refit_clustering(w, c, stats.pop(w.label), report)
        finally:
            report["seconds"] += time.perf_counter() - t0
        return c

    return refit, report


def _refit_clustering(w: Weight, c: Any, stats: InputStats, report: dict[str, Any]) -> Any:
    """``c`` (the k-means pass's ``_Clustering``) with its codebook refit, when that helps."""
    from onnxcompress.passes._kmeans_fit import _broadcast, _lookup, _resnap  # the pass's decode

    layout, why = layout_of(w)
    if layout is None:
        report["skipped"][w.label] = why
        return c
    array = w.numpy()
    book = np.asarray(c.codebook, np.float64)
    big_r, big_k = book.shape
    id_book = np.arange(big_r * big_k, dtype=np.int64).reshape(big_r, big_k)
    ids = c.layout.restore(_lookup(id_book, c.km.labels))
    scale = np.ones(array.shape)
    if c.scales is not None:
        scale = scale * _broadcast(np.asarray(c.scales, np.float64), array.ndim, c.scale_axis)
    ids_rows = as_rows(ids, layout).astype(np.int64)
    if np.any(ids_rows // big_k != (ids_rows[:, :, :1] // big_k)):
        report["skipped"][w.label] = "an output row reads several codebook rows"
        return c
    rows = as_rows(array, layout)
    h, cross, teacher_h = stats.hessian, stats.cross, stats.teacher_hessian
    new_book = refit_entries(rows, h, ids_rows, as_rows(scale, layout), book, fixed=book == 0,
                             cross=cross)
    if not np.all(np.isfinite(new_book)):
        report["skipped"][w.label] = "the refit was not finite"
        return c
    new_book = new_book.astype(c.codebook.dtype)
    snapped = _resnap(c, new_book)
    def error(candidate: np.ndarray) -> float:
        return float(grouped_output_error(rows, as_rows(candidate, layout), h, cross=cross,
                                          teacher_h=teacher_h).sum())

    e_before, e_after = error(c.snapped), error(snapped)
    energy = float(grouped_output_error(np.zeros_like(rows), rows,
                                        h if teacher_h is None else teacher_h).sum()) or 1.0
    report["refit"][w.label] = (e_before / energy, min(e_before, e_after) / energy)
    if e_after >= e_before:
        return c
    return dataclasses.replace(c, codebook=new_book, snapped=snapped)
