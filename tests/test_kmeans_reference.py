"""1-D k-means checked against its definition: every value sits at its nearest centroid and every
centroid is the (weighted) mean of its members (Lloyd's fixed point), and the result is at least
as good as a plain numpy Lloyd from the same start. Independent of the pass and its defaults.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.kmeans import kmeans_1d


def assert_lloyd_fixed_point(x: np.ndarray, labels: np.ndarray, book: np.ndarray,
                             weight: np.ndarray | None = None, what: str = "", slack: float = 1e-6,
                             mean_tol: float = 1e-7, rounding: float = 0.0) -> None:
    """Nearest-centroid assignment and centroid = (weighted) mean of its members.

    ``rounding``: relative rounding of the stored centroids (2**-11 for a float16 codebook, which
    the pass picks where it costs <= 1% error): each centroid may sit that far from the mean, and a
    value that far from a boundary may land on either side."""
    x = x.astype(np.float64)
    book = np.asarray(book, dtype=np.float64)
    dist = np.abs(x[:, None] - book[None, :])
    nearest = dist.min(axis=1)
    own = dist[np.arange(x.size), labels]
    span = float(x.max() - x.min())
    # float32 values on a boundary (midpoints rounded to float32) may go either way
    bad = np.flatnonzero(own > nearest + slack * span + 2 * rounding * float(np.abs(book).max()))
    assert bad.size == 0, (
        f"{what}: {bad.size} values not at their nearest centroid, e.g. x={x[bad[0]]:.6g} -> "
        f"{book[labels[bad[0]]]:.6g}, nearest {book[dist[bad[0]].argmin()]:.6g}"
    )
    w = np.ones_like(x) if weight is None else weight.astype(np.float64)
    for c in np.unique(labels):
        members = labels == c
        mean = float((x[members] * w[members]).sum() / w[members].sum())
        assert book[c] == pytest.approx(mean, abs=max(mean_tol * span, rounding * abs(mean))), (
            f"{what}: centroid {c} is {book[c]:.8g}, the {'weighted ' if weight is not None else ''}"
            f"mean of its {int(members.sum())} members is {mean:.8g}"
        )


def numpy_lloyd(x: np.ndarray, init: np.ndarray, weight: np.ndarray | None = None, iters: int = 300):
    x = x.astype(np.float64)
    w = np.ones_like(x) if weight is None else weight
    c = init.astype(np.float64).copy()
    for _ in range(iters):
        labels = np.abs(x[:, None] - c[None, :]).argmin(axis=1)
        new = c.copy()
        for k in range(len(c)):
            m = labels == k
            if m.any():
                new[k] = (x[m] * w[m]).sum() / w[m].sum()
        if np.allclose(new, c, rtol=0, atol=1e-12):
            break
        c = new
    labels = np.abs(x[:, None] - c[None, :]).argmin(axis=1)
    return labels, c


def sse(x, labels, book, weight=None) -> float:
    w = 1.0 if weight is None else weight
    return float((w * (x.astype(np.float64) - np.asarray(book, np.float64)[labels]) ** 2).sum())


@pytest.mark.parametrize("bits", [2, 3, 4, 6])
def test_rows_are_at_a_lloyd_fixed_point_and_no_worse_than_numpy_lloyd(bits):
    r = np.random.default_rng(bits)
    rows = np.stack([r.standard_normal(3000), r.laplace(size=3000), r.uniform(-1, 1, 3000)])
    rows = rows.astype(np.float32)
    km = kmeans_1d(rows, bits, init="linear")
    for g in range(rows.shape[0]):
        labels, book = km.labels[g].astype(np.intp), km.codebook[g]
        assert_lloyd_fixed_point(rows[g], labels, book, what=f"row {g}, {bits} bits")
        # numpy Lloyd from the same linear start (evenly spaced between min and max)
        init = np.linspace(rows[g].min(), rows[g].max(), 1 << bits)
        ref_labels, ref_book = numpy_lloyd(rows[g], init)
        mine, ref = sse(rows[g], labels, book), sse(rows[g], ref_labels, ref_book)
        assert mine <= ref * (1 + 1e-4), f"row {g}: squared error {mine:.6g} > numpy Lloyd {ref:.6g}"
        if bits <= 3:  # few, well-filled clusters: Lloyd from the same start reaches the same point
            span = float(rows[g].max() - rows[g].min())
            np.testing.assert_allclose(np.unique(book), np.unique(ref_book), rtol=0, atol=1e-6 * span,
                                       err_msg=f"row {g}: not the codebook numpy Lloyd converges to")
        assert len(np.unique(labels)) <= 1 << bits


def test_weighted_centroids_are_weighted_means():
    r = np.random.default_rng(7)
    x = r.standard_normal(4000).astype(np.float32)
    weight = np.where(x > 0, 10.0, 0.1) * r.uniform(0.5, 1.5, x.size)  # positives matter 100x more
    km = kmeans_1d(x, 3, sample_weight=weight)
    labels, book = km.labels[0].astype(np.intp), km.codebook[0]
    assert_lloyd_fixed_point(x, labels, book, weight, what="weighted")
    unweighted = kmeans_1d(x, 3)
    err_w = sse(x, labels, book, weight)
    err_u = sse(x, unweighted.labels[0].astype(np.intp), unweighted.codebook[0], weight)
    assert err_w < err_u, f"weighted objective {err_w:.4g} not below the unweighted clustering's {err_u:.4g}"


def test_hand_computed_two_clusters_and_exact_small_rows():
    x = np.array([1.0, 2.0, 3.0, 10.0, 11.0, 12.0], np.float32)
    km = kmeans_1d(x, 1)
    assert sorted(km.codebook[0].tolist()) == [2.0, 11.0], km.codebook
    assert km.reconstruct()[0].tolist() == [2.0, 2.0, 2.0, 11.0, 11.0, 11.0]
    # an exact zero is a fixed centroid (pruned weights stay pruned): {0, 1, 2} snap to 0, not 1
    km = kmeans_1d(np.array([0.0, 1.0, 2.0, 10.0, 11.0, 12.0], np.float32), 1)
    assert km.reconstruct()[0].tolist() == [0.0, 0.0, 0.0, 11.0, 11.0, 11.0], km.codebook
    x = np.array([0.5, -0.25, 0.5, 3.0], np.float32)  # 3 distinct values, 2 bits: reproduced exactly
    km = kmeans_1d(x, 2)
    np.testing.assert_array_equal(km.reconstruct()[0], x)
    # weighted by hand: members {1, 2} with weights {1, 3} -> 1.75
    km = kmeans_1d(np.array([1.0, 2.0, 10.0], np.float32), 1, sample_weight=np.array([1.0, 3.0, 1.0]))
    assert sorted(km.codebook[0].tolist()) == [pytest.approx(1.75), pytest.approx(10.0)]


def test_centroids_are_exact_member_means_even_before_convergence():
    # The final half-step of Lloyd sets each centroid to its members' mean however few
    # iterations ran: a codebook left at the previous step's centroids shows here.
    x = np.random.default_rng(5).laplace(size=5000).astype(np.float32)
    km = kmeans_1d(x, 4, max_iter=1)
    labels, book = km.labels[0].astype(np.intp), km.codebook[0]
    for c in np.unique(labels):
        mean = float(x[labels == c].astype(np.float64).mean())
        assert book[c] == pytest.approx(mean, rel=1e-9, abs=1e-12), (
            f"centroid {c} = {book[c]:.9g}, its members' mean is {mean:.9g} (max_iter=1)")


def test_long_binned_rows_still_reach_the_fixed_point():
    x = np.random.default_rng(3).standard_normal(1 << 18).astype(np.float32)  # the binned path
    km = kmeans_1d(x, 4)
    # Lloyd converges on 2^16 cells (1.5e-5 of the span each) and the exact final half-step
    # assigns by those centroids before taking exact means: values within a few cells of a
    # boundary may sit at the second-nearest centroid by that much, by design.
    assert_lloyd_fixed_point(x, km.labels[0].astype(np.intp), km.codebook[0], what="binned row",
                             slack=1e-4)


def test_binned_rows_keep_zeros_weights_and_copies_exact():
    r = np.random.default_rng(4)
    n = 1 << 18  # the binned path
    x = r.standard_normal(n).astype(np.float32)
    x[r.random(n) < 0.3] = 0.0  # a pruned tensor: zeros must stay exactly zero
    x[r.random(n) < 0.2] = 20.0  # an isolated cluster of copies of one value keeps that value
    km = kmeans_1d(x, 3)
    rec = km.reconstruct()[0]
    assert (rec[x == 0] == 0).all(), "binned path: exact zeros did not stay zero"
    assert (rec[x == 20.0] == 20.0).all(), "binned path: a cluster of copies of 20.0 is not 20.0"
    labels, book = km.labels[0].astype(np.intp), km.codebook[0]
    nz = (x != 0) & (x != 20.0)
    for c in np.unique(labels[nz]):
        members = labels == c
        if book[c] not in (0.0, 20.0):
            assert book[c] == pytest.approx(float(x[members].astype(np.float64).mean()), abs=1e-6 * 20)
    # weighted: the binned path weighs each value too
    weight = np.where(x > 0, 5.0, 0.5)
    kw = kmeans_1d(x, 3, sample_weight=weight)
    lw, bw = kw.labels[0].astype(np.intp), kw.codebook[0]
    for c in np.unique(lw):
        m = lw == c
        if bw[c] not in (0.0, 20.0):
            want = float((x[m] * weight[m]).sum() / weight[m].sum())
            assert bw[c] == pytest.approx(want, abs=1e-6 * 20), f"binned weighted centroid {c}"


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_zeros_stay_zero_when_zero_is_the_rows_min_or_max(sign):
    r = np.random.default_rng(8)
    x = (sign * np.abs(r.standard_normal(2000))).astype(np.float32)  # all >= 0, or all <= 0
    x[r.random(2000) < 0.3] = 0.0
    rec = kmeans_1d(x, 2).reconstruct()[0]
    side = 'min' if sign > 0 else 'max'
    assert (rec[x == 0] == 0).all(), f"zeros moved to {np.unique(rec[x == 0])} (0 is the row's {side})"
