"""k-means of long rows (issue 18's throughput): rows past ``_SUBSAMPLE_MIN_N`` values are fitted
on a strided subsample and labelled in full; chunk loops run on threads with the same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress import kmeans
from tests import helpers as h


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


# -- large weights choose their fit on a subsample (_kmeans_fit._subsample) -------------------


def _matmul_model(w: np.ndarray):
    import onnx.helper as oh
    import onnx.numpy_helper as onh

    f = 1  # onnx.TensorProto.FLOAT
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [oh.make_tensor_value_info("x", f, [4, w.shape[0]])],
        [oh.make_tensor_value_info("y", f, [4, w.shape[1]])],
        [onh.from_array(w, "W")])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def _share(model, monkeypatch, **options):
    """The pass on ``model`` with every ``_cluster`` call's size and every int8 choice's
    sample recorded."""
    import onnx

    from onnxcompress import Pipeline
    from onnxcompress.model import to_proto
    from onnxcompress.passes import WeightSharing, _kmeans_int8, _kmeans_share

    sizes, samples = [], []
    cluster, choose = _kmeans_share._cluster, _kmeans_int8.choose
    with monkeypatch.context() as mp:
        mp.setattr(_kmeans_share, "_cluster", lambda a, *r, **k: sizes.append(a.size) or cluster(a, *r, **k))
        mp.setattr(_kmeans_int8, "choose",
                   lambda a, x, s=None: samples.append(None if s is None else s.shape) or choose(a, x, s))
        result = Pipeline([WeightSharing(fold_batchnorm=False, **options)]).run(model)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    return result.passes[0].layers[0], proto, sizes, samples


def _small_choice(monkeypatch, size: int = 1 << 16, n: int = 1 << 14) -> None:
    from onnxcompress.passes import _kmeans_fit

    monkeypatch.setattr(_kmeans_fit, "CHOOSE_MIN_SIZE", size)
    monkeypatch.setattr(_kmeans_fit, "CHOOSE_N", n)


def _int8_error(w: np.ndarray, axis: int) -> float:
    """int8 per channel along ``axis`` as the quantize pass rounds it (each channel's sum kept)."""
    from onnxcompress.passes._qdq import dequantize_weight, quantize_weight

    q, scale = quantize_weight(w, axis)
    return float(np.linalg.norm(dequantize_weight(q, scale, axis) - w) / np.linalg.norm(w))


@pytest.mark.usefixtures("exact_form_on_small_models")
def test_large_weight_takes_the_int8_form_without_a_full_clustering(monkeypatch):
    from tests import helpers as h

    rng = np.random.default_rng(5)
    w = (rng.standard_normal((1024, 128)) * rng.uniform(0.05, 1, 128)).astype(np.float32)
    _small_choice(monkeypatch)
    layer, proto, sizes, samples = _share(_matmul_model(w), monkeypatch, bits=8)
    # Every candidate clustered on the subsample only: 128 channels x 128 of their 1024 values.
    assert sizes and all(s == 128 * 128 for s in sizes)
    assert samples == [(128, 128)]
    assert layer.extra["storage"] == "int8"
    inits = {t.name: t for t in proto.graph.initializer}
    import onnx.numpy_helper as onh

    q, s = onh.to_array(inits["W.q"]), onh.to_array(inits["W.scale"])
    decoded = q.astype(np.float32) * s.reshape(1, -1)
    error = float(np.linalg.norm(decoded - w) / np.linalg.norm(w))
    assert error == pytest.approx(layer.error, rel=1e-4)
    assert error <= _int8_error(w, 1) + 1e-7  # ratios chosen on the sample, checked on every value
    x = rng.standard_normal((4, 1024)).astype(np.float32)
    np.testing.assert_allclose(h.run(proto, {"x": x})[0], x @ decoded, rtol=1e-4, atol=1e-4)


def test_large_weight_fits_only_the_winning_codebook_in_full(monkeypatch):
    """4 bits: plain and channel-scaled candidates on the subsample, the winner once in full;
    its error as the full comparison's (within 2%)."""
    from tests import helpers as h

    rng = np.random.default_rng(6)
    w = (rng.standard_normal((1024, 128)) * rng.uniform(0.05, 1, 128)).astype(np.float32)
    full_layer, full_proto, full_sizes, _ = _share(_matmul_model(w), monkeypatch, bits=4)
    assert full_sizes == [w.size, w.size]  # before: both candidates at full size
    _small_choice(monkeypatch)
    layer, proto, sizes, _ = _share(_matmul_model(w), monkeypatch, bits=4)
    assert sizes == [128 * 128, 128 * 128, w.size]
    assert layer.extra["channel_scales"] == full_layer.extra["channel_scales"] is True
    assert layer.error <= 1.02 * full_layer.error
    x = rng.standard_normal((4, 1024)).astype(np.float32)
    got, want = h.run(proto, {"x": x})[0], x @ w
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 2 * layer.error


def test_weights_at_the_choice_size_are_unchanged(monkeypatch):
    """At or below CHOOSE_MIN_SIZE every candidate is compared on every value, as before."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((512, 128)).astype(np.float32)
    a, proto_a, sizes_a, _ = _share(_matmul_model(w), monkeypatch, bits=8)
    _small_choice(monkeypatch, size=w.size)
    b, proto_b, sizes_b, _ = _share(_matmul_model(w), monkeypatch, bits=8)
    assert sizes_a == sizes_b and all(s == w.size for s in sizes_b)
    assert proto_a.SerializeToString() == proto_b.SerializeToString()


@pytest.mark.parametrize("axis", [0, 1])
def test_checked_int8_scales_fall_back_to_int8_grid_per_channel(axis):
    """apply_checked: channels whose sampled ratio errs more than int8's own grid take the grid
    (here: half the channels given a ratio of 0.3), the others keep their scale."""
    from onnxcompress.passes import _kmeans_int8

    rng = np.random.default_rng(8)
    w = rng.standard_normal((96, 64)).astype(np.float32)
    amax = np.abs(w).max(axis=1 - axis).astype(np.float64)
    grid = h.int8_scales(amax).astype(np.float64)  # int8 per channel's grid (float16's)
    chosen = grid.copy()
    chosen[::2] *= 0.3  # heavy clipping: worse than the grid on every value
    chosen[1::2] *= 0.97
    q, scales, decoded, error = _kmeans_int8.apply_checked(w, axis, chosen)
    expect_scales = np.where(np.arange(amax.size) % 2 == 0, grid, chosen).astype(np.float32)
    want_q, _, _ = _kmeans_int8.apply(w, axis, expect_scales.astype(np.float64))
    # Odd channels: 0.97 of the range may or may not beat the grid; compare only where kept.
    kept = scales == chosen.astype(np.float32)
    assert not kept[::2].any()  # every clipped channel fell back
    np.testing.assert_array_equal(scales[::2], grid.astype(np.float32)[::2])
    qm, wm = np.moveaxis(q, axis, 0), np.moveaxis(want_q, axis, 0)
    np.testing.assert_array_equal(qm[::2], wm[::2])
    bshape = [-1 if i == axis else 1 for i in range(2)]
    np.testing.assert_array_equal(decoded, q.astype(np.float32) * scales.reshape(bshape))
    assert error == pytest.approx(float(np.linalg.norm(decoded - w) / np.linalg.norm(w)), rel=1e-5)
    assert error <= _int8_error(w, axis) + 1e-7


def test_eight_bit_codebook_without_the_int8_form_is_chosen_on_every_value(monkeypatch):
    """A weight read by two MatMuls has no int8-exact form: at 8 bits its candidates are compared
    against int8's error on every value (a sample misjudges that close choice), at 4 bits on the
    subsample."""
    import onnx.helper as oh
    import onnx.numpy_helper as onh

    from tests import helpers as h

    rng = np.random.default_rng(9)
    w = (rng.standard_normal((1024, 128)) * rng.uniform(0.05, 1, 128)).astype(np.float32)
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "W"], ["y"]), oh.make_node("MatMul", ["x", "W"], ["z"])], "g",
        [oh.make_tensor_value_info("x", 1, [4, 1024])],
        [oh.make_tensor_value_info("y", 1, [4, 128]), oh.make_tensor_value_info("z", 1, [4, 128])],
        [onh.from_array(w, "W")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    _small_choice(monkeypatch)
    layer, proto, sizes, samples = _share(model, monkeypatch, bits=8)
    assert layer.extra["storage"] == "uint8" and samples == []
    assert sizes and all(s == w.size for s in sizes)
    x = rng.standard_normal((4, 1024)).astype(np.float32)
    y, z = h.run(proto, {"x": x})
    np.testing.assert_array_equal(y, z)
    assert np.linalg.norm(y - x @ w) / np.linalg.norm(x @ w) < 3 * layer.error
    _, _, sizes4, _ = _share(model, monkeypatch, bits=4)
    assert sizes4[:-1] and all(s < w.size for s in sizes4[:-1]) and sizes4[-1] == w.size
