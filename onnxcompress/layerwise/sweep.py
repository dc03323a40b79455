"""One-sweep pruning and rounding over grouped rows: mask selection and weight update together.

SparseGPT (Frantar & Alistarh, 2023) and GPTQ (Frantar et al., 2022) in one batched form: the
columns of ``W [g, m, k]`` are visited in order; in each block of columns the weights to drop (or
the value each rounds to) are chosen from the weights as the earlier columns' compensation left
them, and each column's error is spread over the columns not yet visited through the Cholesky
factor of ``H^-1``. All groups of a grouped Conv (depthwise: ``m`` = 1, ``k`` = 9 or 25) run
together, so the cost is ``O(g k^3)`` for the factorisations plus ``O(g m k^2)`` for the updates:
a 512x512 layer takes milliseconds where the exact per-row masked refit solves 512 systems.

Selection is per output row (each row keeps the same fraction of each block), as Wanda does:
the rows of a layer followed by a BatchNormalization are rescaled independently afterwards, so a
threshold shared across rows would empty the rows with small weights and large scales.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxcompress.layerwise.refit import DEFAULT_DAMP, damped

DEFAULT_BLOCK = 128


def inverse_factor(h: np.ndarray, damp: float = DEFAULT_DAMP) -> np.ndarray:
    """Upper Cholesky factor ``U`` of ``(H + damp)^-1`` (``H^-1 = U^T U``), batched over ``[g, k, k]``.

    A factorisation that fails (an ill-conditioned group) is retried with ten times the damping.
    """
    h = np.asarray(h, np.float64)
    for attempt, d in enumerate((damp, max(damp * 10, 0.1), 1.0)):
        # three k x k float64 matrices alive at most (HiFi-GAN's k = 2816: 63 MB each), not six
        hinv = damped(h[0], d)[None] if len(h) == 1 else np.stack([damped(h[i], d) for i in range(len(h))])
        try:
            hinv = np.linalg.inv(hinv)
            for i in range(len(hinv)):
                t = hinv[i].T.copy()
                hinv[i] += t
                hinv[i] /= 2
            del t
            lower = np.linalg.cholesky(hinv)
            del hinv
            return np.ascontiguousarray(lower.transpose(0, 2, 1))
        except np.linalg.LinAlgError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


Select = Callable[[np.ndarray, np.ndarray], np.ndarray]


def sparse_sweep(
    rows: np.ndarray,
    h: np.ndarray,
    *,
    sparsity: float | None = None,
    n_m: tuple[int, int] | None = None,
    mask: np.ndarray | None = None,
    damp: float = DEFAULT_DAMP,
    block: int = DEFAULT_BLOCK,
    factor: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Prune grouped rows ``[g, m, k]`` against ``h`` ``[g, k, k]`` in one compensating sweep.

    Exactly one of ``sparsity`` (each row drops that fraction of every block of ``block``
    columns, by the OBS saliency ``w^2 / [H^-1]_jj``), ``n_m`` (keep N of every M consecutive
    columns, chosen when the sweep reaches the group) or ``mask`` (fixed, True = kept).
    Returns ``(new rows, mask)``; pruned entries are exact zeros.
    """
    if sum(x is not None for x in (sparsity, n_m, mask)) != 1:
        raise ValueError("give exactly one of sparsity, n_m, mask")
    w = np.array(rows, dtype=np.float64, copy=True)
    g, m, k = w.shape
    u = inverse_factor(h, damp) if factor is None else factor
    keep = np.ones((g, m, k), bool) if mask is None else np.asarray(mask, bool).copy()
    if n_m is not None:
        block = max(n_m[1], block - block % n_m[1])

    def select_block(b0: int, w1: np.ndarray, d: np.ndarray) -> None:
        if sparsity is None:
            return
        drop = int(round(sparsity * w1.shape[2]))
        if drop:
            saliency = w1**2 / (d[:, None, :] ** 2)
            order = np.argpartition(saliency, drop - 1, axis=2)[:, :, :drop]
            sel = np.ones_like(saliency, bool)
            np.put_along_axis(sel, order, False, axis=2)
            keep[:, :, b0:b0 + w1.shape[2]] = sel

    def prune_column(b0: int, j: int, w1: np.ndarray, d: np.ndarray) -> np.ndarray:
        if n_m is not None and (b0 + j) % n_m[1] == 0:
            span = slice(j, min(j + n_m[1], w1.shape[2]))
            saliency = w1[:, :, span] ** 2 / (d[:, None, span] ** 2)
            drop = n_m[1] - n_m[0]
            order = np.argsort(saliency, axis=2, kind="stable")[:, :, :drop]
            sel = np.ones_like(saliency, bool)
            np.put_along_axis(sel, order, False, axis=2)
            keep[:, :, b0 + span.start:b0 + span.stop] = sel
        return np.where(keep[:, :, b0 + j], w1[:, :, j], 0.0)

    _sweep(w, u, block, prune_column, select_block)
    w[~keep] = 0.0
    return w, keep


def round_sweep(
    rows: np.ndarray,
    h: np.ndarray,
    round_column: Callable[[int, np.ndarray], np.ndarray],
    *,
    damp: float = DEFAULT_DAMP,
    block: int = DEFAULT_BLOCK,
    factor: np.ndarray | None = None,
    span: int = 0,
    start_span: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray:
    """GPTQ over grouped rows: ``round_column(j, values [g, m]) -> rounded`` rounds column ``j``
    of every group at once, each column's error compensated on the columns after it.

    ``start_span(j, view [g, m, span])``, when given, is called as the sweep reaches each column
    ``j`` that is a multiple of ``span``, with the columns ``j .. j + span`` as the compensation
    of the earlier columns left them (block quantization picks each block's scale there)."""
    w = np.array(rows, dtype=np.float64, copy=True)
    u = inverse_factor(h, damp) if factor is None else factor
    if span and start_span is not None:
        block = max(span, block - block % span)  # a span never straddles two sweep blocks

    def column(b0: int, j: int, w1: np.ndarray, d: np.ndarray) -> np.ndarray:
        if span and start_span is not None and (b0 + j) % span == 0:
            start_span(b0 + j, w1[:, :, j:j + span])
        return np.asarray(round_column(b0 + j, w1[:, :, j]), np.float64)

    _sweep(w, u, block, column)
    return w


def _sweep(w: np.ndarray, u: np.ndarray, block: int,
           column: Callable[[int, int, np.ndarray, np.ndarray], np.ndarray],
           start_block: Callable[[int, np.ndarray, np.ndarray], None] | None = None) -> None:
    """The compensating sweep of both: over ``w`` [g, m, k] in place, column by column in
    blocks of ``block``, ``column(b0, j, w1, d)`` gives column ``b0 + j``'s new values (``w1``:
    the block's columns, ``d``: the diagonal of its inverse factor); each column's error is
    spread on the columns after it (within the block at once, beyond it per block)."""
    g, m, k = w.shape
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        w1 = w[:, :, b0:b1]  # a view: updated in place
        u1 = u[:, b0:b1, b0:b1]
        d = np.diagonal(u1, axis1=1, axis2=2)  # [g, b]
        if start_block is not None:
            start_block(b0, w1, d)
        err = np.zeros((g, m, b1 - b0))
        for j in range(b1 - b0):
            col = w1[:, :, j]
            q = column(b0, j, w1, d)
            e = (col - q) / d[:, None, j]
            w1[:, :, j] = q
            if j + 1 < b1 - b0:
                w1[:, :, j + 1:] -= e[:, :, None] * u1[:, None, j, j + 1:]
            err[:, :, j] = e
        if b1 < k:
            w[:, :, b1:] -= np.matmul(err, u[:, b0:b1, b1:])
