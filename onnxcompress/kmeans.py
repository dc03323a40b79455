"""Fast, deterministic 1-D k-means for weight sharing.

Clustering one weight tensor is a 1-D problem, so Lloyd's algorithm needs no distance matrix:
sort each row once, keep prefix sums of the (weighted) values, and every iteration becomes
``K`` binary searches (the midpoints between neighbouring centroids split the sorted row into
contiguous clusters) plus ``K`` differences of prefix sums. An iteration costs O(K log N), not
O(N K), so Lloyd runs to exact convergence; the only O(N) steps are the sort and the final
labelling, which uses a fine lookup grid and an exact binary search for the few values near a
cluster boundary.

Long rows (millions of weights) skip the sort: one pass bins the row on a uniform grid of
``_BINS`` cells and Lloyd runs on the cells' (weighted) means, whose prefix sums play the role of
the sorted row's. A cell is ~1/256 of an 8-bit cluster's width, so the centroids match the
sorted run's to well below the clusters' own spread, and the final labelling and means are exact
per value as before. Rows the grid resolves poorly (few occupied cells: few distinct values or
outliers stretching the range) take the sorted path.

Rows are independent problems (one per tensor, channel or group of channels) solved together.

Guarantees:
- a row with at most ``K`` distinct values is reproduced exactly (each value is its own centroid);
- if a row contains exact zeros, 0.0 is a fixed centroid, so zeros stay exactly zero (values near
  zero may join it; the sparsity a pruning pass left can only grow);
- a centroid whose cluster holds copies of one value is that value exactly;
- no randomness except the ``kmeans++`` initialisation, which draws from the given generator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from onnxcompress._kmeans_grid import _BINS, _CHUNK, _histogram, _label
from onnxcompress._kmeans_init import (
    _distinct_padded,
    _init,
    _pin_zero,
    _row_has_zero,
    _RowSearch,
)

logger = logging.getLogger(__name__)

INITS = ("linear", "density", "kmeans++")
MAX_BITS = 8

# Lookup-grid size per row for the final labelling (capped so G rows stay within memory).
_GRID_MAX = 1 << 16
_GRID_TOTAL_MAX = 1 << 23
# Binned path: rows of at least _BIN_MIN_N values, binned on _BINS cells; a row whose values
# occupy fewer than _BIN_MIN_OCCUPIED cells per centroid is sorted instead.
_BIN_MIN_N = 1 << 18
BIN_MIN_N = _BIN_MIN_N  # rows this long are binned (callers size their temporaries by it)
_BIN_MIN_OCCUPIED = 32
# Rows over _SUBSAMPLE_MIN_N values are fitted on a strided subsample of about _SUBSAMPLE_N
# (see _binned_row); below it (every layer of the real models measured) the fit sees every value.
_SUBSAMPLE_MIN_N = 1 << 24
_SUBSAMPLE_N = 1 << 22
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class KMeansResult:
    """Cluster labels per value and the codebook per row.

    ``labels[g, i]`` indexes ``codebook[g]``; only used centroids are kept, so ``codebook`` has
    ``max(used)`` columns (rows with fewer used centroids repeat their last one).
    """

    labels: np.ndarray  # uint8 [G, N]
    codebook: np.ndarray  # float64 [G, K_used]
    used: np.ndarray  # int [G]: clusters holding at least one value
    iterations: int
    exact: np.ndarray  # bool [G]: the row had <= K distinct values (reproduced exactly)

    def reconstruct(self, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """The snapped rows, with the codebook rounded to ``dtype`` first (as it will be stored)."""
        book = self.codebook.astype(dtype)
        return np.take_along_axis(book, self.labels.astype(np.intp), axis=1)


def kmeans_1d(
    values: np.ndarray,
    bits: int,
    *,
    sample_weight: np.ndarray | None = None,
    init: str = "linear",
    max_iter: int = 300,
    tol: float = 1e-6,
    rng: np.random.Generator | None = None,
) -> KMeansResult:
    """Cluster each row of ``values`` ([G, N] or [N]) into at most ``2**bits`` centroids.

    ``sample_weight`` (same shape, >= 0) weighs each value's squared error, e.g. by the energy of
    the activation it multiplies. ``init``: ``linear`` (centroids evenly spaced between the row's
    min and max; keeps the rare large weights, best in Deep Compression), ``density`` (at the
    quantiles of the weighted distribution) or ``kmeans++`` (D^2 sampling from ``rng``).
    Lloyd stops for a row when no value changes cluster or no centroid moves more than ``tol``
    times the row's value range, or after ``max_iter`` iterations.
    """
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in 1..{MAX_BITS}, got {bits}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    x = np.asarray(values)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"values must be [G, N] with N > 0, got shape {np.shape(values)}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("values contain NaN or infinity")
    k = 1 << bits
    g_rows, n = x.shape
    w = None
    if sample_weight is not None:
        w = np.asarray(sample_weight)
        # float32 weights stay float32 for the binned path, which widens them a chunk at a time.
        if w.dtype != np.float32 or n < _BIN_MIN_N:
            w = w.astype(np.float64, copy=False)
        w = np.broadcast_to(w, x.shape)
    if n < _BIN_MIN_N:
        return _kmeans_sorted(x, w, k, init, max_iter, tol, rng)
    binned = [
        _binned_row(x[g], None if w is None else w[g], k, init, max_iter, tol, rng) for g in range(g_rows)
    ]
    rest = [g for g, r in enumerate(binned) if r is None]
    if not rest:
        return _merge_rows(binned, None)
    part = _kmeans_sorted(
        x[rest], None if w is None else w[rest].astype(np.float64), k, init, max_iter, tol, rng
    )
    return part if len(rest) == g_rows else _merge_rows(binned, part)


def _kmeans_sorted(
    x: np.ndarray,
    w: np.ndarray | None,
    k: int,
    init: str,
    max_iter: int,
    tol: float,
    rng: np.random.Generator | None,
) -> KMeansResult:
    """The sorted-prefix-sum path (module docstring) for rows ``x`` [G, N] with weights ``w``."""
    g_rows, n = x.shape
    weighted = w is not None
    if weighted:
        order = np.argsort(x, axis=1)
        s = np.take_along_axis(x, order, axis=1)
        ws = np.take_along_axis(w, order, axis=1)
        del order
    else:
        s = np.sort(x, axis=1)
        ws = None

    # Prefix sums along each sorted row: of w*x, and of w (counts when unweighted).
    px = np.zeros((g_rows, n + 1), dtype=np.float64)
    if weighted:
        np.cumsum(ws * s, axis=1, out=px[:, 1:])
        pw = np.zeros((g_rows, n + 1), dtype=np.float64)
        np.cumsum(ws, axis=1, out=pw[:, 1:])
    else:
        np.cumsum(s, axis=1, dtype=np.float64, out=px[:, 1:])
        pw = None

    distinct = 1 + np.count_nonzero(s[:, 1:] != s[:, :-1], axis=1)
    exact = distinct <= k
    has_zero = (s[:, 0] <= 0) & (s[:, -1] >= 0) & _row_has_zero(s)

    centroids = np.empty((g_rows, k), dtype=np.float64)
    if exact.any():
        centroids[exact] = _distinct_padded(s[exact], k)
    iterations = 0
    todo = np.flatnonzero(~exact)
    if todo.size:
        sub_s = s[todo]
        sub_px = px[todo]
        sub_pw = pw[todo] if weighted else None
        c = _init(sub_s, sub_pw, k, init, rng)
        fixed_zero = has_zero[todo]
        c = _pin_zero(c, fixed_zero)
        if todo.size == 1:
            # One row (a per-tensor codebook): the lean loop, with the sorted values as points.
            row_pw = sub_pw[0] if weighted else np.arange(n + 1, dtype=np.float64)
            c1, iterations = _lloyd_row(
                sub_s[0].astype(np.float64), sub_px[0], row_pw, c[0], bool(fixed_zero[0]), max_iter, tol
            )
            c = c1[None, :]
        else:
            c, iterations = _lloyd(sub_s, sub_px, sub_pw, c, fixed_zero, max_iter, tol)
        centroids[todo] = c

    labels, codebook, used = _finalize(x, s, px, pw, centroids, has_zero, exact)
    return KMeansResult(labels=labels, codebook=codebook, used=used, iterations=iterations, exact=exact)


def _binned_row(
    x1: np.ndarray,
    w1: np.ndarray | None,
    k: int,
    init: str,
    max_iter: int,
    tol: float,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """One long row by the binned path: (labels, codebook, iterations), or None for rows the
    sorted path must take (float64, few occupied cells: maybe <= K distinct values).

    Rows over ``_SUBSAMPLE_MIN_N`` values are fitted on a deterministic strided subsample of
    ``_SUBSAMPLE_N`` values (the grid, Lloyd and the centroids' final means), and only
    labelled in full: the histogram's passes were half the time of an 8-bit k-means of a
    2.4 GB model, and ~16,000 values per cluster of an 8-bit codebook fix its mean to well
    below the cluster's spread. Every value still gets its nearest centroid, exactly."""
    if x1.dtype != np.float32:
        return None  # the exactness arguments below rely on float32 values summed in float64
    lo, hi = float(x1.min()), float(x1.max())
    if not hi > lo:
        return None
    scale = (_BINS - 1) / (hi - lo)
    if scale > _F32_MAX:
        return None  # a range of a few subnormals: the grid step overflows float32
    xs, ws = x1, w1
    if x1.size > _SUBSAMPLE_MIN_N:
        step = -(-x1.size // _SUBSAMPLE_N)
        xs = np.ascontiguousarray(x1[::step])
        ws = None if w1 is None else np.ascontiguousarray(w1[::step])
    count, wsum, xsum = _histogram(xs, ws, lo, scale)
    if np.count_nonzero(count) < _BIN_MIN_OCCUPIED * k:
        return None
    pts = np.flatnonzero(wsum > 0)
    if pts.size <= k:
        return None
    means = xsum[pts] / wsum[pts]
    # float32 rounding can put a value one cell off, so neighbouring means may be out of order
    # by a hair; Lloyd's searches need them sorted.
    np.maximum.accumulate(means, out=means)
    s = means[None, :]
    px = np.concatenate(([0.0], np.cumsum(xsum[pts])))[None, :]
    pw = np.concatenate(([0.0], np.cumsum(wsum[pts])))[None, :]
    has_zero = bool((x1 == 0).any())
    fixed_zero = np.array([has_zero])
    c = _pin_zero(_init(s, pw, k, init, rng), fixed_zero)
    c, iterations = _lloyd_row(means, px[0], pw[0], c[0], has_zero, max_iter, tol)

    # Exact final half-step: a cell with no midpoint within one cell of it lies wholly in one
    # cluster (its label is its lower edge's); values in the few other cells are searched.
    mids = 0.5 * (c[1:] + c[:-1])
    table = np.searchsorted(mids, lo + np.arange(_BINS) / scale, side="right")
    marked = np.zeros(_BINS, dtype=bool)
    at = np.floor((mids - lo) * scale).astype(np.int64)
    marked[np.concatenate([at - 1, at, at + 1]).clip(0, _BINS - 1)] = True
    table = table.astype(np.uint8)  # labels before compaction: < k <= 256
    labels, idx = _label(x1, table, marked, lo, scale)
    lab = np.searchsorted(mids, x1[idx], side="right")
    labels[idx] = lab
    sub_labels = labels
    if xs is not x1:  # the means from the subsample, its values near a midpoint searched
        sub_labels, idx = _label(xs, table, marked, lo, scale)
        lab = np.searchsorted(mids, xs[idx], side="right")
        sub_labels[idx] = lab
    vals = xs[idx]
    whole = np.flatnonzero(~marked & (count > 0))
    tw = table[whole]
    n_in = np.bincount(tw, weights=count[whole], minlength=k) + np.bincount(lab, minlength=k)
    vw = np.ones(vals.size) if ws is None else ws[idx].astype(np.float64)
    w_in = np.bincount(tw, weights=wsum[whole], minlength=k) + np.bincount(lab, weights=vw, minlength=k)
    x_in = np.bincount(tw, weights=xsum[whole], minlength=k) + np.bincount(
        lab, weights=vw * vals, minlength=k
    )
    means = np.where(w_in > 0, x_in / np.where(w_in > 0, w_in, 1.0), c)
    if has_zero:
        means = np.where(c == 0, 0.0, means)
    nonempty = n_in > 0
    if xs is not x1 and not nonempty.all():
        # A cluster the subsample missed may still hold values (its centroid stands for them).
        missing = ~nonempty
        for a in range(0, x1.size, _CHUNK * 16):
            part = labels[a : a + _CHUNK * 16]
            nonempty[part[np.take(missing, part)]] = True
    remap = (np.cumsum(nonempty) - 1).clip(min=0)
    book = means[nonempty]
    u = book.size
    if u < k:
        labels = remap.astype(np.uint8)[labels]
    if w1 is not None:
        # A cluster of copies of one value keeps it exactly. Unweighted, the float64 mean of
        # float32 copies is already exact (every partial sum is); weighted, test each cluster
        # against its mean rounded to float32 (on the subsample when fitted on one).
        rep = book.astype(np.float32)
        off = np.zeros(book.size, dtype=np.int64)
        if u < k:
            sub_labels = labels if xs is x1 else remap.astype(np.uint8)[sub_labels]
        for a in range(0, xs.size, _CHUNK):  # chunks: a bool/float64 N-array each otherwise
            lab_a = sub_labels[a : a + _CHUNK]
            off += np.bincount(lab_a[xs[a : a + _CHUNK] != rep[lab_a]], minlength=book.size)
        book = np.where(off == 0, rep.astype(np.float64), book)
    return labels, book, iterations


def _merge_rows(binned: list, part: KMeansResult | None) -> KMeansResult:
    """One result from the binned rows and the sorted ``part`` (the rows binned left as None)."""
    rest = [g for g, r in enumerate(binned) if r is None]
    books = [r[1] for r in binned if r is not None]
    k_used = max([b.size for b in books] + ([part.codebook.shape[1]] if part is not None else []))
    n = next(r[0].size for r in binned if r is not None)
    g_rows = len(binned)
    # One row (a per-tensor codebook): its labels as they are, not copied.
    labels = binned[0][0][None, :] if g_rows == 1 else np.empty((g_rows, n), dtype=np.uint8)
    codebook = np.empty((g_rows, k_used), dtype=np.float64)
    used = np.zeros(g_rows, dtype=np.int64)
    exact = np.zeros(g_rows, dtype=bool)
    iterations = 0
    for g, r in enumerate(binned):
        if r is not None:
            if g_rows > 1:
                labels[g] = r[0]
            _, book, it = r
            codebook[g, : book.size] = book
            codebook[g, book.size :] = book[-1]
            used[g] = book.size
            iterations = max(iterations, it)
    if part is not None:
        labels[rest] = part.labels
        width = part.codebook.shape[1]
        codebook[rest, :width] = part.codebook
        codebook[rest, width:] = part.codebook[:, -1:]
        used[rest] = part.used
        exact[rest] = part.exact
        iterations = max(iterations, part.iterations)
    return KMeansResult(labels=labels, codebook=codebook, used=used, iterations=iterations, exact=exact)


def _lloyd(
    s: np.ndarray,
    px: np.ndarray,
    pw: np.ndarray | None,
    c: np.ndarray,
    fixed_zero: np.ndarray,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, int]:
    """Lloyd iterations on sorted rows; a row stops when its clusters stop changing or its
    centroids move less than ``tol`` times its value range.

    An empty cluster (common with ``linear`` init on heavy-tailed weights, whose outliers
    stretch the range) is moved into the cluster with the largest squared error, splitting it,
    during the first half of the iterations; otherwise it would be a wasted level.
    """
    g_rows, n = s.shape
    c = c.copy()
    reseed_until = max(1, max_iter // 2)
    active = np.arange(g_rows)
    search = _RowSearch(s)
    span = (s[:, -1].astype(np.float64) - s[:, 0]).clip(min=np.finfo(np.float64).tiny)
    prev = np.full((g_rows, c.shape[1] - 1), -1, dtype=np.intp)
    it = 0
    for it in range(1, max_iter + 1):
        if active.size == 0:
            break
        ca = c[active]
        mids = 0.5 * (ca[:, 1:] + ca[:, :-1])
        pos = search.rows(active, mids) if active.size < g_rows else search(mids)
        moved = (pos != prev[active]).any(axis=1)
        prev[active] = pos
        bounds = np.concatenate(
            [np.zeros((active.size, 1), np.intp), pos, np.full((active.size, 1), n, np.intp)],
            axis=1,
        )
        rows = active[:, None]
        sx = np.diff(px[rows, bounds], axis=1)
        sw = (
            np.diff(pw[rows, bounds], axis=1)
            if pw is not None
            else np.diff(bounds, axis=1).astype(np.float64)
        )
        pinned = fixed_zero[active, None] & (ca == 0)
        keep = (sw <= 0) | pinned
        new = np.where(keep, ca, sx / np.where(sw > 0, sw, 1.0))
        empty = (sw <= 0) & ~pinned
        if it <= reseed_until and empty.any():
            for r in np.flatnonzero(empty.any(axis=1)):
                if _reseed(s[active[r]], bounds[r], sw[r], new[r], empty[r], pinned[r]):
                    moved[r] = True
        new.sort(axis=1)
        shift = np.abs(new - ca).max(axis=1)
        c[active] = new
        active = active[moved & (shift > tol * span[active])]
    return c, it


def _lloyd_row(
    s: np.ndarray,
    px: np.ndarray,
    pw: np.ndarray,
    c: np.ndarray,
    fixed_zero: bool,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, int]:
    """``_lloyd`` for one row (the binned path), with as few numpy calls per iteration as
    possible: on a few thousand points, call overhead is the whole cost of an iteration."""
    n, k = s.size, c.size
    c = c.copy()
    reseed_until = max(1, max_iter // 2)
    limit = tol * max(float(s[-1] - s[0]), np.finfo(np.float64).tiny)
    bounds = np.empty(k + 1, dtype=np.intp)
    bounds[0], bounds[-1] = 0, n
    prev = np.full(k - 1, -1, dtype=np.intp)
    pinned = (c == 0) if fixed_zero else np.zeros(k, dtype=bool)
    it = 0
    for it in range(1, max_iter + 1):
        mids = c[1:] + c[:-1]
        mids *= 0.5
        pos = s.searchsorted(mids)
        if (pos == prev).all():
            break  # same clusters as last time: the means would not move
        prev = pos
        bounds[1:-1] = pos
        # (np.diff and np.array_equal cost more in Python overhead than in work here.)
        gx, gw = px[bounds], pw[bounds]
        new, sw = gx[1:] - gx[:-1], gw[1:] - gw[:-1]
        empty = sw <= 0
        new /= np.where(empty, 1.0, sw)
        keep = empty | pinned
        if keep.any():
            new[keep] = c[keep]
            empty &= ~pinned
            if it <= reseed_until and empty.any():
                _reseed(s, bounds, sw, new, empty, pinned)
            new.sort()
            if fixed_zero:
                pinned = new == 0
        if np.abs(new - c).max() <= limit:
            c = new
            break
        c = new
    return c, it


def _reseed(
    row: np.ndarray,
    bounds: np.ndarray,
    sw: np.ndarray,
    new: np.ndarray,
    empty: np.ndarray,
    pinned: np.ndarray,
) -> bool:
    """Move the empty centroids of one row into the widest clusters (weight x range^2, a cheap
    stand-in for the squared error that needs no extra pass over the data): the split cluster's
    centroid goes to its first quartile, the moved one to its third."""
    size = np.diff(bounds)
    first = row[np.minimum(bounds[:-1], row.size - 1)].astype(np.float64)
    last = row[np.maximum(bounds[1:] - 1, 0)].astype(np.float64)
    spread = sw * (last - first) ** 2
    spread = np.where((size >= 2) & (first != last) & ~pinned, spread, -1.0)
    targets = np.argsort(-spread, kind="stable")
    changed = False
    for e, j in zip(np.flatnonzero(empty), targets, strict=False):
        if spread[j] <= 0:
            break
        a, b = int(bounds[j]), int(bounds[j + 1])
        new[j] = float(row[a + (b - a) // 4])
        new[e] = float(row[a + (3 * (b - a)) // 4])
        changed = True
    return changed


def _finalize(
    x: np.ndarray,
    s: np.ndarray,
    px: np.ndarray,
    pw: np.ndarray | None,
    centroids: np.ndarray,
    has_zero: np.ndarray,
    exact: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact assignment by the converged centroids, the matching means, compact codebooks.

    The last half-step of Lloyd, done exactly row by row: each value goes to the nearest
    centroid (``label = #midpoints <= x``), and each used centroid becomes the (weighted) mean
    of its cluster, or the cluster's value itself when it holds copies of one value.
    """
    g_rows, n = x.shape
    k = centroids.shape[1]
    grid = int(
        min(_GRID_MAX, max(64, 1 << int(np.ceil(np.log2(max(n, 2))))), max(64, _GRID_TOTAL_MAX // g_rows))
    )
    mids_all = 0.5 * (centroids[:, 1:] + centroids[:, :-1])
    books = np.zeros((g_rows, k), dtype=np.float64)
    used = np.zeros(g_rows, dtype=np.int64)
    remaps = np.zeros((g_rows, k), dtype=np.int64)
    tables = np.zeros((g_rows, grid), dtype=np.uint8)
    marked = np.zeros((g_rows, grid), dtype=bool)
    lo = s[:, 0].astype(np.float64)
    span = s[:, -1].astype(np.float64) - lo
    scale = np.where(span > 0, (grid - 1) / np.where(span > 0, span, 1.0), 0.0)
    edges = np.arange(grid, dtype=np.float64)
    for g in range(g_rows):
        mids = mids_all[g]
        row = s[g]
        pos = np.searchsorted(row, mids, side="left")
        bounds = np.concatenate(([0], pos, [n]))
        counts = np.diff(bounds)
        nonempty = counts > 0
        if exact[g]:
            means = centroids[g]
        else:
            sx = np.diff(px[g, bounds])
            sw = np.diff(pw[g, bounds]) if pw is not None else counts.astype(np.float64)
            means = np.where(sw > 0, sx / np.where(sw > 0, sw, 1.0), centroids[g])
            if has_zero[g]:
                means = np.where(centroids[g] == 0, 0.0, means)
        # A cluster of copies of one value keeps that value exactly.
        first = row[np.minimum(bounds[:-1], n - 1)]
        last = row[np.maximum(bounds[1:] - 1, 0)]
        means = np.where(nonempty & (first == last), first, means)
        remap = np.cumsum(nonempty) - 1
        u = int(nonempty.sum())
        used[g] = u
        books[g, :u] = means[nonempty]
        books[g, u:] = books[g, u - 1]
        remaps[g] = np.maximum(remap, 0)
        # Lookup table: the label of each grid cell's lower edge; cells that may hold a midpoint
        # (with one cell of margin for rounding) are marked for an exact search.
        if scale[g] > 0:
            cell_lo = lo[g] + edges / scale[g]
            tables[g] = remaps[g][np.searchsorted(mids, cell_lo, side="right")]
            cells = np.floor((mids - lo[g]) * scale[g]).astype(np.int64)
            cells = np.concatenate([cells - 1, cells, cells + 1]).clip(0, grid - 1)
            marked[g, cells] = True
        else:
            tables[g] = remaps[g][np.searchsorted(mids, lo[g], side="right")]
    k_used = int(used.max())
    codebook = books[:, :k_used]

    xf = x if x.dtype == np.float64 else x.astype(np.float32, copy=False)
    if xf.dtype != np.float64 and scale.max() > _F32_MAX:
        xf = x.astype(np.float64)  # a row spanning a few subnormals: its grid step overflows float32
    cell = (xf - lo[:, None].astype(xf.dtype)) * scale[:, None].astype(xf.dtype)
    cell = cell.astype(np.int32)
    np.clip(cell, 0, grid - 1, out=cell)
    cell += (np.arange(g_rows, dtype=np.int32) * grid)[:, None]
    labels = tables.ravel()[cell]
    near = marked.ravel()[cell]
    del cell
    rows, cols = np.nonzero(near)
    if rows.size:
        starts = np.searchsorted(rows, np.arange(g_rows + 1))
        for g in range(g_rows):
            a, b = starts[g], starts[g + 1]
            if a == b:
                continue
            vals = x[g, cols[a:b]]
            labels[g, cols[a:b]] = remaps[g][np.searchsorted(mids_all[g], vals, side="right")]
    return labels, codebook, used
