"""k-means of long rows (issue 18's throughput): rows past ``_SUBSAMPLE_MIN_N`` values are fitted
on a strided subsample and labelled in full; chunk loops run on threads with the same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress import kmeans


def _row(n: int, seed: int = 0) -> np.ndarray:
    x = (np.random.default_rng(seed).standard_normal(n) / 40).astype(np.float32)
    x[::11] = 0  # exact zeros must stay exact
    return x


def _nearest(codebook: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.abs(x[:, None].astype(np.float64) - codebook[None, :]).min(axis=1)


@pytest.mark.parametrize("weighted", [False, True])
def test_subsampled_fit_labels_every_value_exactly(monkeypatch, weighted):
    n = 1 << 19
    x = _row(n)
    w = (np.random.default_rng(1).random(n).astype(np.float32) + 0.5) if weighted else None
    full = kmeans.kmeans_1d(x, 4, sample_weight=w)
    monkeypatch.setattr(kmeans, "_SUBSAMPLE_MIN_N", 1 << 18)
    monkeypatch.setattr(kmeans, "_SUBSAMPLE_N", 1 << 16)
    sizes = []
    histogram = kmeans._histogram
    monkeypatch.setattr(kmeans, "_histogram", lambda xs, *a: sizes.append(xs.size) or histogram(xs, *a))
    sub = kmeans.kmeans_1d(x, 4, sample_weight=w)
    assert sizes == [1 << 16]  # fitted on the subsample
    book = sub.codebook[0]
    snapped = book[sub.labels[0]]
    # Every value is labelled in full: clusters are contiguous intervals of the sorted values
    # (labels by the fitted centroids' midpoints), each value within a hair of its nearest
    # final centroid, zeros exactly zero.
    order = np.argsort(x, kind="stable")
    assert (np.diff(sub.labels[0][order].astype(int)) >= 0).all()
    assert (np.diff(book[: sub.used[0]]) > 0).all()
    gap = np.abs(snapped - x) - _nearest(book[: sub.used[0]], x)
    assert gap.max() < 0.05 * np.diff(book[: sub.used[0]]).max()
    assert (snapped[x == 0] == 0).all()
    assert 0.0 in book
    # A fit on 1/8 of the values (4,096 a cluster) errs at most 1% more than the fit on all of them.
    err = lambda r: float(np.sum((r.codebook[0][r.labels[0]] - x) ** 2 * (1 if w is None else w)))  # noqa: E731
    assert err(sub) <= 1.01 * err(full)
    assert err(sub) < 0.5 * float(np.sum(x.astype(np.float64) ** 2 * (1 if w is None else w))) / 16


def test_rows_below_the_subsample_size_are_unchanged(monkeypatch):
    """The subsample only starts past _SUBSAMPLE_MIN_N: below it the fit sees every value."""
    x = _row(1 << 18, seed=3)
    a = kmeans.kmeans_1d(x, 8)
    monkeypatch.setattr(kmeans, "_SUBSAMPLE_MIN_N", 1 << 18)  # exactly at the bound: not past it
    b = kmeans.kmeans_1d(x, 8)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.codebook, b.codebook)


def test_threads_give_the_serial_numbers(monkeypatch):
    x = _row(1 << 19, seed=2)
    w = np.random.default_rng(4).random(x.size).astype(np.float32) + 0.5
    monkeypatch.setenv("ONNXCOMPRESS_THREADS", "1")
    serial = kmeans.kmeans_1d(x, 8, sample_weight=w)
    monkeypatch.setenv("ONNXCOMPRESS_THREADS", "3")
    threaded = kmeans.kmeans_1d(x, 8, sample_weight=w)
    assert np.array_equal(serial.labels, threaded.labels)
    assert np.array_equal(serial.codebook, threaded.codebook)
