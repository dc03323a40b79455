"""The 1-D k-means core and the bit-plane packing it is stored with."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress import packing
from onnxcompress.kmeans import INITS, kmeans_1d


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_few_distinct_values_round_trip_exactly(bits):
    k = 1 << bits
    levels = np.concatenate([[0.0, 3e-30, -1e-7, 7.25], _rng(bits).standard_normal(k)])[:k]
    values = _rng(1).choice(levels.astype(np.float32), size=5000)
    result = kmeans_1d(values, bits)
    assert result.exact.all()
    assert np.array_equal(result.reconstruct(np.float32)[0], values)
    assert result.used[0] == len(np.unique(values))


def test_exact_per_row_with_float16():
    rows = np.stack([_rng(i).choice(np.float16([-2, -0.5, 0, 0.125, 1]), 300) for i in range(5)])
    result = kmeans_1d(rows.astype(np.float32), 3)
    assert np.array_equal(result.reconstruct(np.float16), rows)


def test_zeros_stay_zero_and_zero_is_a_centroid():
    w = _rng().standard_normal(20000).astype(np.float32)
    w[np.abs(w) < 0.6] = 0  # ~45% pruned
    for init in INITS:
        result = kmeans_1d(w, 4, init=init, rng=_rng())
        snapped = result.reconstruct(np.float32)[0]
        assert np.all(snapped[w == 0] == 0)
        assert 0.0 in result.codebook[0]
        # Pruned zeros stay zeros: sparsity can only grow.
        assert np.mean(snapped == 0) >= np.mean(w == 0)


def test_lloyd_is_a_local_optimum_and_better_than_uniform():
    x = _rng().laplace(size=50000).astype(np.float32)
    result = kmeans_1d(x, 4)
    book = result.codebook[0]
    labels = result.labels[0]
    # Every value sits with (one of) its nearest centroid(s), up to the last half-step.
    nearest = np.abs(x[:, None].astype(np.float64) - book[None, :]).argmin(axis=1)
    assert np.mean(nearest == labels) > 0.999
    err = np.linalg.norm(result.reconstruct()[0] - x)
    grid = np.linspace(x.min(), x.max(), 16)
    uniform = np.linalg.norm(grid[np.abs(x[:, None] - grid).argmin(axis=1)] - x)
    assert err < 0.6 * uniform


def test_empty_clusters_are_reseeded_on_heavy_tails():
    x = _rng().standard_t(2, size=20000).astype(np.float32)  # a few huge outliers
    result = kmeans_1d(x, 8)
    assert result.used[0] > 240


def test_per_row_codebooks_fit_each_row():
    scales = np.array([0.01, 1.0, 100.0])
    rows = (_rng().standard_normal((3, 4000)) * scales[:, None]).astype(np.float32)
    result = kmeans_1d(rows, 4)
    rel = np.linalg.norm(result.reconstruct() - rows, axis=1) / np.linalg.norm(rows, axis=1)
    assert np.all(rel < 0.12)
    one = kmeans_1d(rows.reshape(1, -1), 4)
    assert np.linalg.norm(one.reconstruct()[0].reshape(3, -1)[0] - rows[0]) > 10 * np.linalg.norm(
        result.reconstruct()[0] - rows[0]
    )


def test_sample_weights_pull_centroids_to_important_values():
    x = _rng().standard_normal(20000).astype(np.float32)
    weight = np.where(x > 1.0, 100.0, 1.0)
    plain = kmeans_1d(x, 2)
    weighted = kmeans_1d(x, 2, sample_weight=weight)
    assert (weighted.codebook[0] > 1.0).sum() > (plain.codebook[0] > 1.0).sum() or (
        weighted.codebook[0].max() > plain.codebook[0].max()
    )
    important = x > 1.0
    err_w = np.abs(weighted.reconstruct()[0] - x)[important].mean()
    err_p = np.abs(plain.reconstruct()[0] - x)[important].mean()
    assert err_w < err_p


def test_deterministic():
    x = _rng().standard_normal((4, 3000)).astype(np.float32)
    for init in INITS:
        a = kmeans_1d(x, 5, init=init, rng=np.random.default_rng(7))
        b = kmeans_1d(x, 5, init=init, rng=np.random.default_rng(7))
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.codebook, b.codebook)


def test_constant_row_and_single_value():
    result = kmeans_1d(np.full(100, 0.5, np.float32), 4)
    assert result.used[0] == 1 and np.all(result.reconstruct()[0] == 0.5)
    assert kmeans_1d(np.array([3.0], np.float32), 1).reconstruct()[0][0] == 3.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="bits"):
        kmeans_1d(np.zeros(4, np.float32), 9)
    with pytest.raises(ValueError, match="init"):
        kmeans_1d(np.zeros(4, np.float32), 4, init="random")
    with pytest.raises(ValueError, match="NaN"):
        kmeans_1d(np.array([1.0, np.nan], np.float32), 4)


_LONG = 1 << 18  # long enough for the binned path


def test_binned_path_matches_the_sorted_path():
    from onnxcompress.kmeans import _kmeans_sorted

    x = _rng().standard_normal(_LONG).astype(np.float32)
    for bits in (4, 8):
        binned = kmeans_1d(x, bits)
        exact = _kmeans_sorted(x[None, :], None, 1 << bits, "linear", 300, 1e-6, None)
        err_b = np.linalg.norm(binned.reconstruct()[0] - x)
        err_s = np.linalg.norm(exact.reconstruct()[0] - x)
        assert err_b < 1.01 * err_s
        # The final half-step is exact per value: clusters are contiguous in value, each value
        # sits with its nearest centroid (up to that last step), each centroid is its mean.
        book, labels = binned.codebook[0], binned.labels[0]
        assert book.size == binned.used[0] and np.all(np.diff(book) > 0)
        order = np.argsort(x, kind="stable")
        assert np.all(np.diff(labels[order].astype(int)) >= 0)
        mids = 0.5 * (book[1:] + book[:-1])
        assert np.mean(labels == np.searchsorted(mids, x, side="right")) > 0.99
        means = np.bincount(labels, weights=x) / np.bincount(labels)
        np.testing.assert_allclose(book, means, rtol=1e-12, atol=1e-15)


def test_binned_path_keeps_zeros_and_exact_values():
    x = _rng().standard_normal(_LONG).astype(np.float32)
    x[np.abs(x) < 0.5] = 0
    x[:1000] = 7.25  # copies of one far value: its own cluster, kept exactly
    weight = _rng(1).random(_LONG) + 0.5
    for w in (None, weight):
        result = kmeans_1d(x, 4, sample_weight=w)
        snapped = result.reconstruct(np.float32)[0]
        assert np.all(snapped[x == 0] == 0) and 0.0 in result.codebook[0]
        assert np.all(snapped[:1000] == np.float32(7.25))
    few = _rng().choice(np.float32([-1.5, 0, 0.1, 2]), _LONG)
    assert np.array_equal(kmeans_1d(few, 2).reconstruct(np.float32)[0], few)


@pytest.mark.parametrize("n", [5000, _LONG])
def test_subnormal_range_is_labelled_exactly(n):
    """A row spanning a few subnormals: its labelling grid step overflows float32."""
    x = (_rng().standard_normal(n) * 1e-40).astype(np.float32)
    result = kmeans_1d(x, 4)
    book = result.codebook[0, : result.used[0]]
    assert np.isfinite(book).all() and result.used[0] >= 8
    x64 = x.astype(np.float64)
    nearest = np.abs(x64[:, None] - book[None, :]).argmin(axis=1)
    assert np.mean(nearest == result.labels[0]) > 0.99


def test_binned_rows_and_sorted_rows_mix():
    rows = _rng().standard_normal((2, _LONG)).astype(np.float32)
    rows[1] = np.round(rows[1])  # few distinct values: the sorted path, exactly
    result = kmeans_1d(rows, 4)
    assert list(result.exact) == [False, True]
    assert np.array_equal(result.reconstruct(np.float32)[1], rows[1])
    alone = kmeans_1d(rows[0], 4)
    assert np.array_equal(result.labels[0], alone.labels[0])
    assert np.array_equal(result.codebook[0, : alone.used[0]], alone.codebook[0])


def test_throughput_smoke():
    """Not a benchmark (benchmarks/bench_weight_sharing.py measures): a guard against an
    accidental O(N*K) or per-iteration O(N) step. 1M weights at 8 bits well under a second."""
    import time

    x = _rng().standard_normal(1_000_000).astype(np.float32)
    kmeans_1d(x[:1000], 8)
    start = time.perf_counter()
    kmeans_1d(x, 8)
    assert time.perf_counter() - start < 1.5


@pytest.mark.parametrize("bits", range(1, 9))
def test_packing_round_trip(bits):
    for n in (1, 7, 8, 9, 1001):
        idx = _rng(n).integers(0, 1 << bits, n)
        planes = packing.pack(idx, bits)
        assert sum(p.size for p in planes) == packing.packed_bytes(n, bits)
        assert np.array_equal(packing.unpack(planes, bits, n), idx)
    assert sum(packing.plane_widths(bits)) == bits
