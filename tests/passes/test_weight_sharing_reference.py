"""K-means weight sharing checked through the compressed model itself: the weights onnxruntime
decodes (x = identity rows read them out) must be a Lloyd fixed point of the ORIGINAL weights
(nearest centroid, centroid = (weighted) mean of its members), not merely equal to the same pass in
another storage. The codebook mode, storage, channel scales and allocation are set explicitly so
these tests do not depend on the pass's defaults.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from onnxcompress import Pipeline
from onnxcompress.model import to_proto
from onnxcompress.passes import WeightSharing
from tests import helpers as h
from tests.test_kmeans_reference import assert_lloyd_fixed_point, numpy_lloyd, sse

# Relative rounding of a float16 codebook (half an ulp), which the pass may store.
FP16_CODEBOOK = 2.0**-11
EXPLICIT = {"codebook": "layer", "per_channel": False, "channel_scale": "off", "allocation": "uniform",
            "min_size": 0, "init": "linear", "keep_sums": False}  # Lloyd's assignment (kept sums: below)


def _matmul(k: int = 48, m: int = 40, bias: bool = False, seed: int = 0) -> onnx.ModelProto:
    r = np.random.default_rng(seed)
    nodes = [oh.make_node("MatMul", ["x", "w"], ["mm" if bias else "y"], name="mm")]
    init = [onh.from_array((r.standard_normal((k, m)) / np.sqrt(k)).astype(np.float32), "w")]
    if bias:
        nodes.append(oh.make_node("Add", ["mm", "b"], ["y"], name="add"))
        init.append(onh.from_array(r.standard_normal(m).astype(np.float32), "b"))
    graph = oh.make_graph(nodes, "mm", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", k])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", m])],
                          initializer=init)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])


def share(model, calibration=None, **options):
    result = Pipeline([WeightSharing(**{**EXPLICIT, **options})]).run(model, calibration=calibration)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    return result.passes[0], proto


def decoded(proto: onnx.ModelProto, k: int) -> np.ndarray:
    """The weight as onnxruntime computes it: identity rows through the (bias-free) MatMul."""
    return h.run(proto, {"x": np.eye(k, dtype=np.float32)})[0]


@pytest.mark.parametrize("bits, storage", [(3, "packed"), (4, "int4"), (5, "uint8"), (2, "dense")])
def test_decoded_weights_are_a_lloyd_fixed_point_of_the_original(bits, storage):
    model = _matmul()
    w = onh.to_array(model.graph.initializer[0])
    res, proto = share(model, bits=bits, storage=storage)
    assert res.modified and len(res.layers) == 1, res.skipped
    got = decoded(proto, w.shape[0])
    book = np.unique(got)
    assert len(book) <= 1 << bits, f"{len(book)} distinct decoded values for {bits} bits"
    labels = np.searchsorted(book, got.ravel())
    assert_lloyd_fixed_point(w.ravel(), labels, book, what=f"{bits}-bit {storage}", rounding=FP16_CODEBOOK)
    # as good as a plain numpy Lloyd from the same evenly spaced start
    ref_labels, ref_book = numpy_lloyd(w.ravel(), np.linspace(w.min(), w.max(), 1 << bits))
    mine, ref = sse(w.ravel(), labels, book), sse(w.ravel(), ref_labels, ref_book)
    # a float16 codebook is chosen only where it costs at most 1% error
    assert mine <= ref * 1.011, f"decoded squared error {mine:.6g} > numpy Lloyd {ref:.6g}"


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_kept_channel_sums_move_the_fewest_values_one_centroid(bits):
    """keep_sums (the default): the same codebook, and each output channel's decoded sum within
    one centroid step of the original's, by moving values only to a neighbouring centroid, those
    nearest the boundary first. Lloyd's nearest assignment leaves the sums a random walk off."""
    model = _matmul(k=96, m=24, seed=3)
    w = onh.to_array(model.graph.initializer[0]).astype(np.float64)
    w += 0.02 * np.sign(w)  # away from zero-mean noise: the walk, not a bias, is what is tested
    model.graph.initializer[0].CopyFrom(onh.from_array(w.astype(np.float32), "w"))
    _, plain_proto = share(model, bits=bits, storage="dense")
    res, proto = share(model, bits=bits, storage="dense", keep_sums=True)
    plain, got = decoded(plain_proto, w.shape[0]), decoded(proto, w.shape[0])
    book = np.unique(plain)
    np.testing.assert_array_equal(np.unique(got), book)  # the same centroids
    assert res.layers[0].extra["channel_sums_kept"] is True
    plain_off, off = np.abs((plain - w).sum(0)), np.abs((got - w).sum(0))  # MatMul [in, out]
    gap = np.diff(book).max()
    assert off.max() <= gap and plain_off.max() > 2 * off.max()
    rank = {v: i for i, v in enumerate(book)}
    steps = np.vectorize(rank.get)(got) - np.vectorize(rank.get)(plain)
    assert set(np.unique(steps)) <= {-1, 0, 1}
    for c in range(w.shape[1]):  # each channel moves one way, and only as many as it needs
        moved = steps[:, c] != 0
        assert len(set(steps[moved, c])) <= 1
        assert moved.sum() <= np.ceil(plain_off[c] / np.diff(book).min())
    error = np.linalg.norm(got - w) / np.linalg.norm(w)
    assert error <= 1.1 * np.linalg.norm(plain - w) / np.linalg.norm(w)


def test_per_channel_codebooks_are_fixed_points_per_output_channel():
    model = _matmul()
    w = onh.to_array(model.graph.initializer[0])
    _, proto = share(model, bits=3, per_channel=True, storage="packed")
    got = decoded(proto, w.shape[0])
    for c in range(w.shape[1]):  # MatMul [in, out]: output channel c is column c
        book = np.unique(got[:, c])
        assert len(book) <= 8
        assert_lloyd_fixed_point(w[:, c], np.searchsorted(book, got[:, c]), book, what=f"channel {c}",
                                 rounding=FP16_CODEBOOK)


def _calibration(k: int, mean: float = 0.0, n: int = 4):
    scales = np.geomspace(0.3, 3.0, k)
    return [{"x": (mean + np.random.default_rng(i).standard_normal((16, k)) * scales).astype(np.float32)}
            for i in range(n)]


def test_sensitivity_weighted_centroids_are_weighted_means_of_input_energy():
    model = _matmul()
    w = onh.to_array(model.graph.initializer[0])
    feeds = _calibration(w.shape[0])
    _, proto = share(model, feeds, bits=3, storage="packed", sensitivity=True, bias_correction=False)
    got = decoded(proto, w.shape[0])
    x = np.concatenate([f["x"] for f in feeds]).astype(np.float64)
    energy = (x**2).mean(axis=0)  # per input channel = per row of W
    weight = np.maximum(energy / energy.mean(), 1e-2)[:, None] * np.ones_like(w, dtype=np.float64)
    book = np.unique(got)
    labels = np.searchsorted(book, got.ravel())
    assert_lloyd_fixed_point(w.ravel(), labels, book, weight.ravel(), what="energy-weighted",
                             rounding=FP16_CODEBOOK)
    _, plain = share(model, bits=3, storage="packed")
    plain_w = decoded(plain, w.shape[0])
    err = [float((energy[:, None] * (d - w) ** 2).sum()) for d in (got, plain_w)]
    assert err[0] < err[1], f"weighted error {err[0]:.4g} not below the unweighted one's {err[1]:.4g}"


def test_kmeans_bias_correction_removes_the_mean_output_shift():
    model = _matmul(bias=True, seed=2)
    feeds = _calibration(48, mean=1.0)
    ref = np.concatenate([h.run(model, f)[0] for f in feeds]).mean(0)

    def shift(**opts) -> float:
        _, proto = share(model, feeds, bits=2, storage="dense", sensitivity=False, **opts)
        return float(np.abs(np.concatenate([h.run(proto, f)[0] for f in feeds]).mean(0) - ref).max())

    plain, fixed = shift(bias_correction=False), shift(bias_correction=True)
    assert plain > 0.02, f"the test needs a visible shift to remove, got {plain}"
    assert fixed < 1e-3 * plain + 1e-5, f"mean output shift {fixed:.3g} with bias correction, {plain:.3g} w/o"
