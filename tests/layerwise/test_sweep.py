"""The one-sweep pruner (SparseGPT form, batched over groups) keeps its sparsity or N:M pattern per
row and beats magnitude pruning on the output error; with a fixed mask it only updates weights."""

from __future__ import annotations

import numpy as np

from onnxcompress.layerwise.refit import grouped_output_error, refit_masked
from onnxcompress.layerwise.sweep import inverse_factor, round_sweep, sparse_sweep


def _problem(g: int, m: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(seed)
    h = []
    for _ in range(g):
        # inputs driven by half as many factors plus noise: correlated, as real layers' are
        x = r.standard_normal((10 * k, k // 2)) @ r.standard_normal((k // 2, k))
        x += 0.3 * r.standard_normal(x.shape)
        h.append(x.T @ x / len(x))
    return r.standard_normal((g, m, k)), np.stack(h)


def test_inverse_factor_is_the_upper_cholesky_of_the_damped_inverse():
    _, h = _problem(2, 1, 12)
    u = inverse_factor(h, damp=0.0)
    for i in range(2):
        np.testing.assert_allclose(u[i].T @ u[i], np.linalg.inv(h[i]), rtol=1e-6, atol=1e-9)
        assert np.allclose(np.tril(u[i], -1), 0)


def test_sweep_prunes_each_row_to_the_sparsity_and_beats_magnitude_pruning():
    w, h = _problem(3, 16, 40, seed=1)
    pruned, mask = sparse_sweep(w, h, sparsity=0.5, block=16)
    # 40 columns in blocks of 16, 16, 8: 8 + 8 + 4 dropped per row
    assert np.all((~mask).sum(axis=2) == 20)
    assert np.all(pruned[~mask] == 0)
    magnitude = np.abs(w) >= np.median(np.abs(w), axis=2, keepdims=True)
    plain = np.where(magnitude, w, 0.0)
    e_sweep = grouped_output_error(w, pruned, h)
    assert np.all(e_sweep < 0.6 * grouped_output_error(w, plain, h))
    # The exact refit on the sweep's mask can only lower it further.
    assert np.all(grouped_output_error(w, refit_masked(w, h, mask), h) <= e_sweep * (1 + 1e-9))


def test_sweep_keeps_n_of_every_m_columns():
    w, h = _problem(1, 8, 32, seed=2)
    pruned, mask = sparse_sweep(w, h, n_m=(2, 4))
    assert np.all(mask.reshape(1, 8, 8, 4).sum(axis=3) == 2)
    assert np.all(pruned[~mask] == 0)


def test_sweep_with_a_fixed_mask_keeps_it_and_lowers_the_error():
    w, h = _problem(2, 6, 24, seed=3)
    mask = np.abs(w) >= np.median(np.abs(w), axis=2, keepdims=True)
    pruned, kept = sparse_sweep(w, h, mask=mask)
    assert np.array_equal(kept, mask)
    assert np.all(pruned[~mask] == 0)
    assert np.all(grouped_output_error(w, pruned, h) < grouped_output_error(w, np.where(mask, w, 0.0), h))


def test_round_sweep_rounds_to_the_grid_with_less_output_error_than_nearest_rounding():
    w, h = _problem(2, 12, 32, seed=4)
    step = 0.25
    nearest = np.round(w / step) * step
    swept = round_sweep(w, h, lambda j, col: np.round(col / step) * step)
    assert np.allclose(swept / step, np.round(swept / step))
    assert np.all(grouped_output_error(w, swept, h) < grouped_output_error(w, nearest, h))
