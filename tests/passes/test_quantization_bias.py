"""quantize's bias correction: each int8 weight's rounding moves its layer's output mean by
``dW @ E[x]``; with calibration data that shift goes into the layer's bias."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from tests import helpers as h
from tests.passes.test_quantization import check_outputs, feeds, quantize


def _shifted(shape, n=8, seed=0, offset=2.0):
    """Inputs with a large mean: the first layer's rounding shifts its outputs' means."""
    return [{"x": f["x"] + np.float32(offset)} for f in feeds(shape, n=n, seed=seed)]


def _mean_shift(proto, q, data) -> float:
    """Mean over outputs of |E[y_q - y]| on ``data``."""
    diff = np.concatenate([h.run(q, f)[0] - h.run(proto, f)[0] for f in data])
    return float(np.abs(diff.reshape(-1, diff.shape[-1]).mean(axis=0)).mean())


@pytest.mark.parametrize("mode", ["weights", "dynamic", "static"])
def test_the_rounding_shift_goes_into_the_bias(mode):
    proto = h.mlp((64, 256, 128, 10))
    data, held = _shifted((64, 64)), _shifted((64, 64), seed=5)
    res, q = quantize(proto, data, mode=mode, reconstruct=False, fidelity_guard=False)
    check_outputs(proto, q, data)
    assert res.metrics["bias_corrected"] == 3
    off_res, off = quantize(proto, data, mode=mode, reconstruct=False, fidelity_guard=False,
                            bias_correction=False)
    assert "bias_corrected" not in off_res.metrics
    assert _mean_shift(proto, q, held) < 0.5 * _mean_shift(proto, off, held)


def test_conv_layers_are_corrected_before_their_bias_is_rescaled():
    """A Conv stored in the int8-exact form divides its bias by the channel scales: the
    correction must be in the bias first (BatchNorm folded: the Convs have biases)."""
    proto = h.cnn(channels=(3, 32, 64))
    data, held = _shifted((4, 3, 16, 16)), _shifted((4, 3, 16, 16), seed=5)
    res, q = quantize(proto, data, mode="weights", reconstruct=False, fidelity_guard=False)
    check_outputs(proto, q, data)
    assert res.metrics["bias_corrected"] >= 2
    _, off = quantize(proto, data, mode="weights", reconstruct=False, fidelity_guard=False,
                      bias_correction=False)
    assert _mean_shift(proto, q, held) < _mean_shift(proto, off, held)


def test_a_transposed_gemm_weight_is_corrected_in_its_own_layout():
    r = h.rng(3)
    model = oh.make_model(oh.make_graph(
        [oh.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "g",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 96])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 160])]),
        opset_imports=[oh.make_opsetid("", 17)])
    proto = h.attach_initializers(model, {
        "w": (r.standard_normal((160, 96)) / 10).astype(np.float32),
        "b": np.zeros(160, np.float32)})
    data = _shifted((32, 96), offset=3.0)
    res, q = quantize(proto, data, mode="dynamic", reconstruct=False, fidelity_guard=False)
    check_outputs(proto, q, data)
    assert res.metrics["bias_corrected"] == 1
    _, off = quantize(proto, data, mode="dynamic", reconstruct=False, fidelity_guard=False,
                      bias_correction=False)
    assert _mean_shift(proto, q, data) < 0.5 * _mean_shift(proto, off, data)


def test_without_calibration_data_nothing_is_corrected():
    """Means from random inputs moved some real models away from fp32 (layerwise/bias.py)."""
    proto = h.mlp((64, 256, 128, 10))
    res, q = quantize(proto, None, mode="weights", fidelity_guard=False)
    _, off = quantize(proto, None, mode="weights", fidelity_guard=False, bias_correction=False)
    assert "bias_corrected" not in res.metrics
    tensors = lambda m: {t.name: t.SerializeToString() for t in m.graph.initializer}  # noqa: E731
    assert tensors(q) == tensors(off)


def test_kmeans_8_corrects_its_biases_with_calibration_data():
    """k-means shares the correction and its rule (calibration data only)."""
    from onnxcompress import Pipeline
    from onnxcompress.model import to_proto
    from onnxcompress.passes.weight_sharing import WeightSharing

    proto = h.mlp((64, 256, 128, 10))
    data, held = _shifted((64, 64)), _shifted((64, 64), seed=5)

    def share(**options):
        result = Pipeline([WeightSharing(bits=8, **options)]).run(proto, calibration=data)
        return to_proto(result.model)

    q, off = share(), share(bias_correction=False)
    onnx.checker.check_model(q)
    assert _mean_shift(proto, q, held) < 0.5 * _mean_shift(proto, off, held)
