"""The fidelity guard's float step stored float16 (``_int8_search.halves``): priced at what it
costs in the file (one byte a value over the int8 codes, not three), so an outlier the size
budget could not keep float keeps float16. superres (batch 13, a 4-conv x3 upscaler): its last
conv's heavy-tailed weights (max 12x their RMS) alone took int8 per channel to PSNR 29 dB
against fp32; data-free dynamic int8 went from 34.7 to 40.9 dB at 3.65x."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh

from tests import helpers as h
from tests.passes.test_quantization import quantize, rel_error
from tests.passes.test_quantization_guard import stored


def upscaler_like(seed: int = 0) -> onnx.ModelProto:
    """Conv 5x5 -> Relu -> Conv 3x3 -> Relu -> Conv 3x3 to 4 channels, whose weights are
    Student-t (2 degrees of freedom: a few values 10x the RMS, which int8's per-channel step
    is sized for) and which no later layer averages out."""
    r = h.rng(seed)
    weights = {
        "c1.w": r.normal(0, 0.2, (64, 1, 5, 5)).astype(np.float32), "c1.b": np.full(64, 0.1, np.float32),
        "c2.w": r.normal(0, 0.06, (48, 64, 3, 3)).astype(np.float32), "c2.b": np.full(48, 0.02, np.float32),
        "c3.w": (r.standard_t(2, (4, 48, 3, 3)) * 0.03).astype(np.float32), "c3.b": np.zeros(4, np.float32),
    }
    nodes = [oh.make_node("Conv", ["x", "c1.w", "c1.b"], ["a"], pads=[2] * 4, name="c1"),
             oh.make_node("Relu", ["a"], ["ra"]),
             oh.make_node("Conv", ["ra", "c2.w", "c2.b"], ["b"], pads=[1] * 4, name="c2"),
             oh.make_node("Relu", ["b"], ["rb"]),
             oh.make_node("Conv", ["rb", "c3.w", "c3.b"], ["y"], pads=[1] * 4, name="c3")]
    graph = oh.make_graph(
        nodes, "upscaler_like", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 32, 32])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4, 32, 32])])
    return h.attach_initializers(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), weights)


def _error(proto: onnx.ModelProto, q: onnx.ModelProto) -> float:
    data = [{"x": h.rng(i).uniform(0, 1, (1, 1, 32, 32)).astype(np.float32)} for i in range(4)]
    return max(rel_error(h.run(proto, f)[0], h.run(q, f)[0]) for f in data)


def test_an_outlier_the_budget_cannot_keep_float_keeps_float16():
    proto = upscaler_like()
    size = len(proto.SerializeToString())
    res, q = quantize(proto, None, mode="dynamic")  # data-free, the default 3.5x budget
    guard = res.metrics["fidelity_guard"]
    assert guard["steps"] == {"c3.w": "half"}
    assert guard["step_bytes"] == {"c3.w": 4 * 48 * 9}  # one byte a value over the codes
    assert stored(q, "c3.w").data_type == onnx.TensorProto.FLOAT16
    layer = next(layer for layer in res.layers if layer.name == "c3.w")
    assert layer.bits == 16 and layer.extra["float16"] and layer.error < 1e-3
    assert any("float16 weights (float compute): c3.w" in line for line in res.headlines)
    assert size / len(q.SerializeToString()) >= 3.5
    _, plain = quantize(proto, None, mode="dynamic", fidelity_guard=False)
    assert _error(proto, q) < 0.4 * _error(proto, plain)  # 0.0058 against 0.0215
    onnx.checker.check_model(q)


def test_a_float_step_stays_float32_where_the_rest_does():
    """--quantize-rest float32: the pass writes no float16 but the int8 codec's own scales (on
    float16's grid), and at float32's price (three bytes a value over the codes) the outlier does
    not fit the budget."""
    proto = upscaler_like()
    res, q = quantize(proto, None, mode="dynamic", rest="float32")
    assert res.metrics["fidelity_guard"]["probed"].get("c3.w")
    assert "c3.w" not in res.metrics["fidelity_guard"]["steps"]
    assert not any(t.data_type == onnx.TensorProto.FLOAT16 and not t.name.endswith("_scale_fp16")
                   for t in q.graph.initializer)
    relaxed, q_relaxed = quantize(proto, None, mode="dynamic", rest="float32", fidelity_min_ratio=2.0)
    assert relaxed.metrics["fidelity_guard"]["steps"] == {"c3.w": "float"}
    assert stored(q_relaxed, "c3.w").data_type == onnx.TensorProto.FLOAT


def test_steps_are_chosen_by_deviation_bought_per_byte():
    """``choose``: int8 blocks (cheap) first where they buy most of a weight's error back; float16
    refines a stepped weight only for MIN_REFINE_GAIN of the deviation left; a float step where
    blocks buy little; nothing past the budget."""
    from onnxcompress.passes._int8_search import MIN_REFINE_GAIN, choose

    probed = {"last": 0.8, "mid": 0.1, "small": 0.09, "quiet": 0.001}
    options = {"last": [("block", 100, 0.05), ("half", 2000, 1e-5)],  # heavy-tailed: blocks help
               "mid": [("block", 800, 0.5), ("half", 6400, 1e-5)],  # Gaussian: blocks help less
               "small": [("half", 300, 1e-5)],  # no block layout
               "quiet": [("block", 10, 0.5)]}  # under the threshold: never stepped
    steps, left = choose(probed, 0.05, 1.0, options, 8000)
    # last: block (0.76 for 100 B), small: half, mid: block (0.05 for 800 B), then last's
    # float16 (0.04 of the 0.1 left); mid's float16 (0.05 of 0.06 left) needs 5600 B of 4900
    assert steps == {"last": "half", "mid": "block", "small": "half"}
    assert left == 8000 - 2000 - 800 - 300
    assert choose(probed, 0.05, 1.0, options, 10_000)[0]["mid"] == "half"
    # a refinement buying under MIN_REFINE_GAIN of what is left is not taken at any price
    steps, _ = choose({"a": 0.5, "b": 0.5}, 0.05, 1.0,
                      {"a": [("block", 10, 0.02), ("half", 100, 0.0)],
                       "b": [("block", 10, 0.02), ("half", 100, 0.0)]}, 10**9)
    assert 0.5 * 0.02 >= MIN_REFINE_GAIN * (1.0 - 2 * 0.49)  # 0.02 is left: both refine
    assert steps == {"a": "half", "b": "half"}
    steps, _ = choose({"a": 0.5, "b": 0.1}, 0.05, 10.0,  # most of the deviation elsewhere
                      {"a": [("block", 10, 0.02), ("half", 100, 0.0)],
                       "b": [("block", 10, 0.02), ("half", 100, 0.0)]}, 10**9)
    assert steps == {"a": "block", "b": "block"}
    assert choose(probed, 0.05, 1.0, options, 50) == ({}, 50)
    # nor once the deviation left is under the guard's floor (what it would not search for)
    two = {"a": [("block", 10, 0.02), ("half", 100, 0.0)], "b": [("block", 10, 0.02), ("half", 100, 0.0)]}
    assert choose({"a": 0.5, "b": 0.5}, 0.05, 1.0, two, 10**9, floor=0.03)[0] == {"a": "block", "b": "block"}
    assert choose({"a": 0.5, "b": 0.5}, 0.05, 1.0, two, 10**9, floor=0.005)[0] == {"a": "half", "b": "half"}


def _picture_net(flat: bool) -> onnx.ModelProto:
    """x [N, 1, 32, 32] in 0..255 -> three 3x3 Convs -> + x: a picture of the input's shape
    (mean ~128, most of its energy), or the same values flattened to [N, 1024]."""
    r = h.rng(3)
    weights = {"c1.w": r.normal(0, 0.05, (16, 1, 3, 3)).astype(np.float32), "c1.b": np.zeros(16, np.float32),
               "c2.w": r.normal(0, 0.1, (16, 16, 3, 3)).astype(np.float32), "c2.b": np.zeros(16, np.float32),
               "c3.w": r.normal(0, 0.1, (1, 16, 3, 3)).astype(np.float32), "c3.b": np.zeros(1, np.float32),
               "flat": np.array([-1, 1024], np.int64)}
    nodes = [oh.make_node("Conv", ["x", "c1.w", "c1.b"], ["a"], pads=[1] * 4, name="c1"),
             oh.make_node("Relu", ["a"], ["ra"]),
             oh.make_node("Conv", ["ra", "c2.w", "c2.b"], ["b"], pads=[1] * 4, name="c2"),
             oh.make_node("Relu", ["b"], ["rb"]),
             oh.make_node("Conv", ["rb", "c3.w", "c3.b"], ["d"], pads=[1] * 4, name="c3"),
             oh.make_node("Add", ["x", "d"], ["p"], name="residual")]
    shape: list = ["N", 1, 32, 32]
    if flat:
        nodes.append(oh.make_node("Reshape", ["p", "flat"], ["y"], name="flatten"))
        shape = ["N", 1024]
    else:
        nodes[-1].output[0] = "y"
    graph = oh.make_graph(nodes, "picture", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 32, 32])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)])
    return h.attach_initializers(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), weights)


def test_a_picture_holds_int8_compute_to_the_factor_without_the_floor():
    """A picture's deviation (||y - y0||^2 / ||y0||^2) is mostly its mean's: the compute check's
    COMPUTE_FLOOR (1e-4, measured on centred logits) would let int8 compute cost it several dB
    (batch 23's style_unet: static 43.5 dB PSNR against fp32, 49.7 with the factor alone)."""
    from onnxcompress.passes._int8_guard import COMPUTE_FLOOR

    data = [{"x": (h.rng(i).uniform(0, 255, (1, 1, 32, 32))).astype(np.float32)} for i in range(8)]
    targets = {flat: quantize(_picture_net(flat), data, mode="static", speed_check=False)[0]
               .metrics["fidelity_guard"]["compute_target"] for flat in (False, True)}
    assert targets[False] < COMPUTE_FLOOR and targets[True] == COMPUTE_FLOOR  # same values, other shape
