"""Starting centroids for the 1-D k-means of :mod:`onnxcompress.kmeans`, and the row-wise binary
search its Lloyd loop and labelling use: kept apart so that module holds the iteration itself."""

from __future__ import annotations

import numpy as np

# Sample size per row for the kmeans++ seeding (on quantiles of the sorted row).
_PLUSPLUS_SAMPLES = 4096

def _row_has_zero(s: np.ndarray) -> np.ndarray:
    # Sorted rows: a zero exists iff the first value >= 0 sits at a zero (binary search per row).
    out = np.empty(s.shape[0], dtype=bool)
    for g in range(s.shape[0]):
        i = np.searchsorted(s[g], 0.0, side="left")
        out[g] = i < s.shape[1] and s[g, i] == 0
    return out


def _distinct_padded(s: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((s.shape[0], k), dtype=np.float64)
    for i, row in enumerate(s):
        u = row[np.concatenate(([True], row[1:] != row[:-1]))].astype(np.float64)
        out[i, : u.size] = u
        out[i, u.size :] = u[-1]
    return out


def _init(
    s: np.ndarray, pw: np.ndarray | None, k: int, init: str, rng: np.random.Generator | None
) -> np.ndarray:
    lo = s[:, :1].astype(np.float64)
    hi = s[:, -1:].astype(np.float64)
    if init == "linear":
        return lo + (hi - lo) * np.linspace(0.0, 1.0, k)[None, :]
    n = s.shape[1]
    if pw is None:
        cdf = np.broadcast_to(np.arange(1, n + 1, dtype=np.float64) / n, s.shape)
    else:
        total = pw[:, -1:]
        cdf = pw[:, 1:] / np.where(total > 0, total, 1.0)
    if init == "density":
        targets = (np.arange(k) + 0.5) / k
        idx = _rowwise_searchsorted(cdf, np.broadcast_to(targets, (s.shape[0], k)))
        return np.take_along_axis(s, np.minimum(idx, n - 1), axis=1).astype(np.float64)
    return _plusplus(s, cdf, k, rng if rng is not None else np.random.default_rng(0))


def _plusplus(s: np.ndarray, cdf: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """kmeans++ seeding on at most _PLUSPLUS_SAMPLES quantiles per row, each with its mass."""
    g_rows, n = s.shape
    m = min(n, _PLUSPLUS_SAMPLES)
    idx = np.linspace(0, n - 1, m).round().astype(np.intp)
    pts = s[:, idx].astype(np.float64)
    c_at = np.take_along_axis(cdf, np.broadcast_to(idx, (g_rows, m)), axis=1)
    mass = np.diff(np.concatenate([np.zeros((g_rows, 1)), c_at], axis=1), axis=1)
    mass = np.maximum(mass, 1e-12)
    centers = np.empty((g_rows, k), dtype=np.float64)
    rows = np.arange(g_rows)

    def draw(p: np.ndarray) -> np.ndarray:
        cum = np.cumsum(p, axis=1)
        u = rng.random((g_rows, 1)) * cum[:, -1:]
        return np.minimum(_rowwise_searchsorted(cum, u, side="right")[:, 0], m - 1)

    first = draw(mass)
    centers[:, 0] = pts[rows, first]
    d2 = (pts - centers[:, :1]) ** 2
    for j in range(1, k):
        p = mass * d2
        # Rows whose points are all covered fall back to mass sampling (duplicates are harmless).
        p = np.where(p.sum(axis=1, keepdims=True) > 0, p, mass)
        pick = draw(p)
        centers[:, j] = pts[rows, pick]
        np.minimum(d2, (pts - centers[:, j : j + 1]) ** 2, out=d2)
    return np.sort(centers, axis=1)


def _pin_zero(c: np.ndarray, fixed_zero: np.ndarray) -> np.ndarray:
    """In rows with zeros, move the centroid nearest 0 to exactly 0."""
    if fixed_zero.any():
        rows = np.flatnonzero(fixed_zero)
        nearest = np.abs(c[rows]).argmin(axis=1)
        c[rows, nearest] = 0.0
        c[rows] = np.sort(c[rows], axis=1)
    return c


class _RowSearch:
    """``np.searchsorted(a[g], v[g])`` for every row at once (``a``'s rows sorted ascending).

    Rows are mapped to disjoint ranges (row g to [2g, 2g + 1]) once, so each search is one flat
    call. The affine map can merge values closer than ~1e-16 of a row's span; only the side such
    near-ties fall on can differ from a per-row search, which Lloyd's iterations tolerate (the
    final labelling searches exactly, row by row). A single row is searched directly.
    """

    def __init__(self, a: np.ndarray) -> None:
        g_rows, n = a.shape
        self.n = n
        self.single = g_rows == 1
        if self.single:
            # float64 keys: searching float64 queries in a float32 array would copy it per call.
            self.keys = a[0].astype(np.float64)
            return
        self.lo = a[:, :1].astype(np.float64)
        span = a[:, -1:].astype(np.float64) - self.lo
        self.span = np.where(span > 0, span, 1.0)
        self.offset = 2.0 * np.arange(g_rows, dtype=np.float64)[:, None]
        keys = a.astype(np.float64)  # in place from here: this is the one O(N) step
        keys -= self.lo
        keys /= self.span
        np.clip(keys, 0.0, 1.0, out=keys)
        keys += self.offset
        self.keys = keys.ravel()
        self.base = (np.arange(g_rows) * n)[:, None]

    def rows(self, rows: np.ndarray, v: np.ndarray, side: str = "left") -> np.ndarray:
        """Like calling with ``v`` for a subset ``rows`` of the rows."""
        q = ((v - self.lo[rows]) / self.span[rows]).clip(-0.5, 1.5) + self.offset[rows]
        return np.searchsorted(self.keys, q.ravel(), side=side).reshape(v.shape) - self.base[rows]

    def __call__(self, v: np.ndarray, side: str = "left") -> np.ndarray:
        if self.single:
            return np.searchsorted(self.keys, v[0], side=side)[None, :]
        q = ((v - self.lo) / self.span).clip(-0.5, 1.5) + self.offset
        return np.searchsorted(self.keys, q.ravel(), side=side).reshape(v.shape) - self.base


def _rowwise_searchsorted(a: np.ndarray, v: np.ndarray, side: str = "left") -> np.ndarray:
    return _RowSearch(a)(v, side)
