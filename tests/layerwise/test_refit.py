"""The refits reach the least-squares optimum on known inputs and never lose to what they refit."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.layerwise import (
    compensating_sweep,
    output_error,
    refit_centroids,
    refit_masked,
    relative_output_error,
)


def _correlated_inputs(n: int, k: int, seed: int = 0) -> np.ndarray:
    r = np.random.default_rng(seed)
    mix = r.standard_normal((k, k)) / np.sqrt(k) + np.eye(k)
    return r.standard_normal((n, k)) @ mix  # strongly correlated channels, as real layers have


def _magnitude_mask(w: np.ndarray, keep: float) -> np.ndarray:
    threshold = np.quantile(np.abs(w), 1 - keep, axis=1, keepdims=True)
    return np.abs(w) >= threshold


def test_masked_refit_is_the_least_squares_optimum():
    r = np.random.default_rng(1)
    x = _correlated_inputs(400, 24)
    w = r.standard_normal((6, 24))
    mask = _magnitude_mask(w, 0.5)
    h = x.T @ x / len(x)
    got = refit_masked(w, h, mask, damp=1e-12)
    for row in range(len(w)):
        support = np.flatnonzero(mask[row])
        best, *_ = np.linalg.lstsq(x[:, support], x @ w[row], rcond=None)
        np.testing.assert_allclose(got[row, support], best, rtol=1e-6, atol=1e-8)
        assert np.all(got[row, ~mask[row]] == 0)


def test_masked_refit_beats_plain_pruning_by_a_wide_margin():
    r = np.random.default_rng(2)
    x = _correlated_inputs(500, 32)
    w = r.standard_normal((16, 32))
    mask = _magnitude_mask(w, 0.5)
    h = x.T @ x / len(x)
    plain = np.where(mask, w, 0.0)
    refit = refit_masked(w, h, mask)
    assert output_error(w, refit, h) < 0.6 * output_error(w, plain, h)


def test_sweep_with_a_fixed_mask_lies_between_plain_pruning_and_the_exact_refit():
    """SparseGPT form with the mask fixed: compensation flows only to later columns, so the sweep
    improves on plain pruning but cannot reach the exact per-row optimum."""
    r = np.random.default_rng(3)
    x = _correlated_inputs(600, 32)
    w = r.standard_normal((8, 32))
    mask = _magnitude_mask(w, 0.5)
    h = x.T @ x / len(x)
    swept = compensating_sweep(w, h, lambda i, col: np.where(mask[:, i], col, 0.0), block=8)
    assert np.all(swept[~mask] == 0)
    exact = refit_masked(w, h, mask)
    plain = np.where(mask, w, 0.0)
    e_sweep, e_exact, e_plain = (output_error(w, c, h) for c in (swept, exact, plain))
    assert e_exact <= e_sweep * (1 + 1e-9) and e_sweep < e_plain


def test_sweep_rounding_to_a_grid_beats_round_to_nearest():
    r = np.random.default_rng(4)
    x = _correlated_inputs(800, 64)
    w = r.standard_normal((32, 64))
    scale = np.abs(w).max(axis=1) / 7  # 4-bit symmetric per row

    def rnd(_: int, col: np.ndarray) -> np.ndarray:
        return np.clip(np.round(col / scale), -7, 7) * scale

    h = x.T @ x / len(x)
    rtn = np.clip(np.round(w / scale[:, None]), -7, 7) * scale[:, None]
    gptq = compensating_sweep(w, h, rnd)
    on_grid = np.round(gptq / scale[:, None])
    np.testing.assert_allclose(gptq, on_grid * scale[:, None], atol=1e-9)  # still on the grid
    assert relative_output_error(w, gptq, h) < 0.7 * relative_output_error(w, rtn, h)


def test_centroid_refit_is_the_least_squares_optimum_and_keeps_fixed_zero():
    r = np.random.default_rng(5)
    n, m, k, big_k = 300, 5, 12, 6
    x = _correlated_inputs(n, k)
    w = r.standard_normal((m, k))
    centroids = np.linspace(-1.5, 1.5, big_k)
    centroids[2] = 0.0
    labels = np.abs(w[..., None] - centroids).argmin(-1)
    h = x.T @ x / n
    fixed = np.zeros(big_k, bool)
    fixed[2] = True
    got = refit_centroids(w, h, labels, centroids, fixed=fixed, damp=1e-12)
    assert got[2] == 0.0
    # Reference: outputs are linear in the free centroids; solve the stacked least squares.
    free = [c for c in range(big_k) if c != 2]
    design = np.stack([np.concatenate([x @ (labels[row] == c) for row in range(m)]) for c in free], 1)
    target = np.concatenate([x @ w[row] for row in range(m)])
    best, *_ = np.linalg.lstsq(design, target, rcond=None)
    used = [i for i, c in enumerate(free) if (labels == c).any()]
    np.testing.assert_allclose(got[np.array(free)[used]], best[used], rtol=1e-6, atol=1e-8)
    assert output_error(w, got[labels], h) <= output_error(w, centroids[labels], h)


@pytest.mark.parametrize("damp", [0.0, 0.01])
def test_dead_inputs_do_not_make_the_refit_singular(damp):
    r = np.random.default_rng(6)
    x = _correlated_inputs(200, 16)
    x[:, [3, 7]] = 0.0  # channels the calibration data never excites
    w = r.standard_normal((4, 16))
    h = x.T @ x / len(x)
    mask = _magnitude_mask(w, 0.5)
    out = refit_masked(w, h, mask, damp=damp)
    assert np.all(np.isfinite(out))
    assert output_error(w, out, h) <= output_error(w, np.where(mask, w, 0.0), h) + 1e-9


def test_masked_refit_against_a_student_reaches_the_teacher_optimum():
    """Sequential mode: the refit matches W x_teacher from the student's (already compressed) inputs."""
    r = np.random.default_rng(7)
    x_t = _correlated_inputs(500, 20)
    x_s = x_t + 0.3 * r.standard_normal(x_t.shape)  # what the compressed earlier layers produce
    w = r.standard_normal((5, 20))
    mask = _magnitude_mask(w, 0.5)
    h_s, cross = x_s.T @ x_s / len(x_s), x_s.T @ x_t / len(x_s)
    got = refit_masked(w, h_s, mask, damp=1e-12, cross=cross)
    for row in range(len(w)):
        support = np.flatnonzero(mask[row])
        best, *_ = np.linalg.lstsq(x_s[:, support], x_t @ w[row], rcond=None)
        np.testing.assert_allclose(got[row, support], best, rtol=1e-6, atol=1e-8)
    from onnxcompress.layerwise.refit import grouped_output_error

    h_t = x_t.T @ x_t / len(x_t)
    direct = ((x_s @ got.T - x_t @ w.T) ** 2).sum() / len(x_s)
    formula = grouped_output_error(w[None], got[None], h_s[None], cross=cross[None], teacher_h=h_t[None])[0]
    assert formula == pytest.approx(direct, rel=1e-9)


def test_large_layers_refit_by_conjugate_gradients_reach_the_exact_optimum(monkeypatch):
    """Above ITERATIVE_REFIT_FLOPS the per-row solves give way to batched CG: same optimum."""
    from onnxcompress.layerwise import refit

    r = np.random.default_rng(7)
    x = _correlated_inputs(800, 48)
    w = r.standard_normal((3, 20, 48))  # three groups
    mask = np.stack([_magnitude_mask(w[i], 0.5) for i in range(3)])
    h = np.stack([x.T @ x / len(x)] * 3)
    exact = refit_masked(w, h, mask)
    monkeypatch.setattr(refit, "ITERATIVE_REFIT_FLOPS", 0)
    iterative = refit_masked(w, h, mask)
    assert np.all(iterative[~mask] == 0)
    np.testing.assert_allclose(iterative, exact, atol=1e-3)
    for i in range(3):  # the objective agrees far more closely than the weights
        assert output_error(w[i], iterative[i], h[i]) <= output_error(w[i], exact[i], h[i]) * (1 + 1e-6)
    plain = np.where(mask, w, 0.0)
    for i in range(3):
        assert output_error(w[i], iterative[i], h[i]) < 0.7 * output_error(w[i], plain[i], h[i])
