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
            "min_size": 0, "init": "linear"}


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
