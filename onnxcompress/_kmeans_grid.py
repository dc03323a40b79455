"""The binned k-means path's grid passes over a long row (``kmeans._binned_row``): each value's
cell on a uniform grid of ``_BINS`` cells, the per-cell sums, and the labelling by cell. Chunks
of ``_CHUNK`` values keep the temporaries in cache and run on a thread pool, their results
added in order (the same float sums as a serial loop).
"""

from __future__ import annotations

import numpy as np

from onnxcompress._parallel import ordered_map

_BINS = 1 << 16
_CHUNK = 1 << 16


def _histogram(x1: np.ndarray, w1: np.ndarray | None, lo: float,
               scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per grid cell: the count, the sum of weights (the count itself when unweighted) and
    the weighted sum of the values, in float64. Chunks are binned in parallel and added in
    order (the same sums as a serial loop)."""

    def one(a: int) -> tuple[np.ndarray, ...]:
        cell = _cell_of(x1, a, lo, scale)
        chunk = x1[a : a + cell.size]
        if w1 is None:
            return np.bincount(cell, minlength=_BINS), np.bincount(cell, weights=chunk, minlength=_BINS)
        wc = w1[a : a + cell.size].astype(np.float64)
        return (np.bincount(cell, minlength=_BINS), np.bincount(cell, weights=wc, minlength=_BINS),
                np.bincount(cell, weights=wc * chunk, minlength=_BINS))

    count = np.zeros(_BINS, dtype=np.float64)
    wsum = count if w1 is None else np.zeros(_BINS, dtype=np.float64)
    xsum = np.zeros(_BINS, dtype=np.float64)
    for parts in ordered_map(one, range(0, x1.size, _CHUNK)):
        count += parts[0]
        if w1 is None:
            xsum += parts[1]
        else:
            wsum += parts[1]
            xsum += parts[2]
    return count, wsum, xsum


def _label(x1: np.ndarray, table: np.ndarray, marked: np.ndarray, lo: float,
           scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Each value's label by its grid cell (``table``), and the indices of the values in
    ``marked`` cells (near a midpoint: the caller searches them exactly). Chunks in parallel."""
    labels = np.empty(x1.size, dtype=np.uint8)

    def one(a: int) -> np.ndarray:
        cell = _cell_of(x1, a, lo, scale)
        np.take(table, cell, out=labels[a : a + cell.size], mode="clip")
        return a + np.flatnonzero(np.take(marked, cell))

    near = list(ordered_map(one, range(0, x1.size, _CHUNK)))
    return labels, np.concatenate(near)


def _cell_of(x1: np.ndarray, a: int, lo: float, scale: float) -> np.ndarray:
    """The grid cell of each value of ``x1``'s chunk at ``a``, as ``intp`` (np.bincount would
    copy anything else); chunks keep the temporaries in cache."""
    b = np.subtract(x1[a : a + _CHUNK], np.float32(lo))
    b *= np.float32(scale)
    # No clip needed: lo is the row's exact float32 minimum, so b >= 0, and b <= (_BINS - 1)
    # times (1 + a few ulp) < _BINS truncates to at most _BINS - 1.
    return b.astype(np.intp)
