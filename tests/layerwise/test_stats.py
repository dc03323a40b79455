"""Input statistics: Conv patches reproduce onnxruntime's Conv; E[x x^T] matches a direct numpy sum."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from onnxcompress import WeightIndex, load_model
from onnxcompress.data import feed_source
from onnxcompress.layerwise import as_rows, collect_input_stats, from_rows, layout_of
from onnxcompress.layerwise.stats import collect_reader_stats, unfold
from tests import helpers as h

CONVS = {
    "plain": dict(kernel=(3, 3), attrs={}),
    "stride_pad": dict(kernel=(3, 3), attrs={"strides": [2, 2], "pads": [1, 0, 2, 1]}),
    "dilated_grouped": dict(kernel=(3, 2), attrs={"dilations": [2, 1], "group": 2, "pads": [2, 1, 2, 1]}),
    "depthwise": dict(kernel=(3, 3), attrs={"group": 4, "pads": [1, 1, 1, 1]}, cout=4),
    "conv1d": dict(kernel=(5,), attrs={"strides": [2], "pads": [2, 2]}),
}


def _conv_model(kernel, attrs, cout=6, cin=4):
    group = attrs.get("group", 1)
    w = h.rng(0).standard_normal((cout, cin // group, *kernel)).astype(np.float32)
    spatial = ["H", "W"][: len(kernel)]
    graph = oh.make_graph(
        [oh.make_node("Conv", ["x", "w"], ["y"], **attrs)], "g",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", cin, *spatial])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
    )
    return h.attach_initializers(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)]), {"w": w}), w


@pytest.mark.parametrize("case", sorted(CONVS))
def test_conv_patches_times_rows_equal_onnxruntime(case):
    spec = CONVS[case]
    proto, w = _conv_model(spec["kernel"], spec["attrs"], cout=spec.get("cout", 6))
    x = h.rng(1).standard_normal((2, 4, 9, 8)[: 2 + len(spec["kernel"])]).astype(np.float32)
    y = h.run(proto, {"x": x})[0]
    weight = WeightIndex.build(load_model(proto))["w"]
    layout, why = layout_of(weight)
    assert why is None
    patches = unfold(x, layout, None, np.random.default_rng(0))  # [g, positions, k]
    rows = as_rows(w, layout)  # [g, out/g, k]
    got = np.matmul(patches, rows.transpose(0, 2, 1))  # [g, positions, out/g]
    # positions run over (n, *spatial); outputs over (group, out/g)
    expected = np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])
    np.testing.assert_allclose(np.concatenate(list(got), axis=1), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(from_rows(rows, layout, w.shape, w.dtype), w)


def test_matmul_statistics_match_a_direct_sum():
    proto = h.mlp((16, 24, 10))
    model = load_model(proto)
    r = h.rng(2)
    xs = [r.standard_normal((3, 16)).astype(np.float32) for _ in range(5)]
    feeds = feed_source([{"x": x} for x in xs], model)
    weights = [w for w in WeightIndex.build(model) if w.role == "weight"]
    stats, skipped = collect_input_stats(model, weights, feeds)
    assert not skipped and set(stats) == {"fc0.weight", "fc1.weight"}
    x = np.concatenate(xs).astype(np.float64)
    np.testing.assert_allclose(stats["fc0.weight"].hessian[0], x.T @ x / len(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["fc0.weight"].mean[0], x.mean(0), rtol=1e-6, atol=1e-7)
    assert stats["fc0.weight"].rows == 15
    # The second layer's input is relu(x W0 + b0): recompute it.
    w0, b0 = (np.asarray(onnx.numpy_helper.to_array(t), np.float64) for t in proto.graph.initializer[:2])
    hidden = np.maximum(x @ w0 + b0, 0)
    np.testing.assert_allclose(stats["fc1.weight"].hessian[0], hidden.T @ hidden / len(x), rtol=1e-5)
    # MatMul weights are [K, N]: rows are W^T
    w0_rows = as_rows(onnx.numpy_helper.to_array(proto.graph.initializer[0]), layout_of(weights[0])[0])
    assert w0_rows.shape == (1, 24, 16)


def test_blocks_under_a_small_budget_give_the_same_statistics():
    model = load_model(h.mlp((16, 24, 10)))
    samples = [{"x": h.rng(i).standard_normal((2, 16)).astype(np.float32)} for i in range(3)]
    feeds = feed_source(samples, model)
    weights = [w for w in WeightIndex.build(model) if w.role == "weight"]
    whole, _ = collect_input_stats(model, weights, feeds)
    blocked, _ = collect_input_stats(model, weights, feeds, budget_bytes=1)  # one layer a block
    for label in whole:
        np.testing.assert_array_equal(whole[label].hessian, blocked[label].hessian)


def test_sampled_rows_do_not_depend_on_the_blocks_and_float32_sums_take_half_the_passes(monkeypatch):
    """A Conv's rows are sampled per layer: its statistics are the same however the layers are
    blocked. Sums kept in float32 count 4 bytes a value against the budget (HiFi-GAN's GPTQ
    statistics took 10 passes over the data where 5 fit)."""
    from onnxcompress.layerwise import stats as stats_module

    model = load_model(h.cnn(channels=(3, 8, 16)))
    samples = [{"x": h.rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)} for i in range(2)]
    feeds = feed_source(samples, model)
    weights = [w for w in WeightIndex.build(model) if w.role == "weight"]
    whole, _ = collect_input_stats(model, weights, feeds, max_rows=20)
    blocked, _ = collect_input_stats(model, weights, feeds, max_rows=20, budget_bytes=1)
    assert len(whole) >= 2
    for label in whole:
        np.testing.assert_array_equal(whole[label].hessian, blocked[label].hessian)
    passes = []
    real = stats_module._collect_block
    monkeypatch.setattr(stats_module, "_collect_block", lambda *a, **k: passes.append(1) or real(*a, **k))
    from onnxcompress.layerwise.stats import row_width

    k2 = sum(lay.groups * row_width(w, lay) ** 2 for w in weights if (lay := layout_of(w)[0]) is not None)
    collect_input_stats(model, weights, feeds, budget_bytes=k2 * 4, hessian_dtype=np.float32)
    assert len(passes) == 1
    passes.clear()
    told: list[tuple[int, int]] = []
    collect_input_stats(model, weights, feeds, budget_bytes=k2 * 4, progress=lambda *a: told.append(a))
    assert len(passes) > 1  # float64: twice the bytes
    # progress before each pass over the data, and at the end (the quantize pass's GPTQ
    # statistics ran 200 s under one "still working: after statistics [24/24]")
    n = len(passes)
    assert told == [(i, n) for i in range(n)] + [(n, n)]


def test_statistics_kept_in_float32_match_the_float64_ones():
    # GPTQ rounding holds every layer's E[x x^T] until its weight is written: kept (and summed)
    # in float32, FaceBoxes' static int8 peaked at 333 MB instead of 666 MB
    model = load_model(h.mlp((16, 24, 10)))
    samples = [{"x": h.rng(i).standard_normal((2, 16)).astype(np.float32)} for i in range(3)]
    feeds = feed_source(samples, model)
    weights = [w for w in WeightIndex.build(model) if w.role == "weight"]
    wide, _ = collect_input_stats(model, weights, feeds)
    narrow, _ = collect_input_stats(model, weights, feeds, hessian_dtype=np.float32)
    for label in wide:
        assert wide[label].hessian.dtype == np.float64 and narrow[label].hessian.dtype == np.float32
        np.testing.assert_allclose(narrow[label].hessian, wide[label].hessian, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(narrow[label].mean, wide[label].mean)


def test_weights_that_cannot_be_refit_are_skipped_with_a_reason():
    model = load_model(h.if_subgraph_model())
    weights = list(WeightIndex.build(model))
    for w in weights:
        layout, why = layout_of(w)
        assert layout is None and why == "inside a subgraph"


def test_reader_set_pools_every_input_of_a_weight_read_twice():
    """A weight read by two MatMuls (tied, or an unrolled RNN's steps, or a merged decoder's two
    branches): the reader-set mode pools both inputs' rows, and so does the per-layer mode where
    the readers share one layout (it refused such a weight: "read by several nodes")."""
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] a, float[N, 3, 4] b) => (float[N, 5] y, float[N, 3, 5] z) {
            y = MatMul (a, w)
            t = Relu (b)
            z = MatMul (t, w)
        }
    """)
    w = h.rng(0).standard_normal((4, 5)).astype(np.float32)
    m = load_model(h.attach_initializers(model, {"w": w}))
    r = h.rng(1)
    feeds = [{"a": r.standard_normal((2, 4)).astype(np.float32),
              "b": r.standard_normal((2, 3, 4)).astype(np.float32)} for _ in range(3)]
    weight = next(iter(WeightIndex.build(m)))
    per_layer, skipped = collect_input_stats(m, [weight], feeds)
    stats, passes = collect_reader_stats(m, {"w": (["a", "t"], 4), "a only": (["a"], 4)}, feeds)
    rows = np.concatenate([np.concatenate([f["a"], np.maximum(f["b"], 0).reshape(-1, 4)]) for f in feeds])
    assert passes == 1 and stats["w"].rows == len(rows) == 24
    np.testing.assert_allclose(stats["w"].hessian[0], rows.T.astype(np.float64) @ rows / 24, rtol=1e-6)
    assert not skipped and per_layer[weight.label].rows == 24
    np.testing.assert_allclose(per_layer[weight.label].hessian[0], stats["w"].hessian[0], rtol=1e-6)
    np.testing.assert_allclose(stats["w"].mean[0], rows.mean(axis=0), rtol=1e-6, atol=1e-7)
    a = np.concatenate([f["a"] for f in feeds]).astype(np.float64)
    np.testing.assert_allclose(stats["a only"].hessian[0], a.T @ a / 6, rtol=1e-6)
    # A reader whose input does not have the weight's in-features is ignored.
    wrong, _ = collect_reader_stats(m, {"w": (["a"], 3)}, feeds)
    assert wrong == {}
    # Matrices over the budget: one pass over the data each.
    _, passes = collect_reader_stats(m, {"w": (["a", "t"], 4), "a only": (["a"], 4)}, feeds,
                                     budget_bytes=4 * 4 * 8)
    assert passes == 2


def test_a_layer_too_wide_for_its_matrix_gets_no_statistics(monkeypatch):
    """MEGnet's dense layer over a flattened time series reads 45411 inputs a row: its E[x x^T]
    alone asked 16.5 GB and auto's 4-bit blocks were killed at 23 GB. A layer whose own matrix is
    over MAX_MATRIX_BYTES is skipped with the reason (here a cap of 24 inputs: the 16-wide layer
    is collected, the 24-wide one is not), in both collection modes."""
    from onnxcompress.layerwise import stats as stats_module

    monkeypatch.setattr(stats_module, "MAX_MATRIX_BYTES", 20 * 20 * 8)
    model = load_model(h.mlp((16, 24, 10)))
    r = h.rng(2)
    feeds = feed_source([{"x": r.standard_normal((3, 16)).astype(np.float32)} for _ in range(3)], model)
    weights = [w for w in WeightIndex.build(model) if w.role == "weight"]
    stats, skipped = collect_input_stats(model, weights, feeds)
    narrow, wide = (w.label for w in sorted(weights, key=lambda w: w.shape[0]))
    assert list(stats) == [narrow]
    assert skipped == {wide: "24 inputs a row: its E[x x^T] would take 0.0 GB (over 0 MB), not collected"}
    found, _ = collect_reader_stats(model, {"narrow": (["x"], 16), "wide": (["x"], 24)}, feeds)
    assert list(found) == ["narrow"]


def test_readers_of_other_layouts_are_still_refused():
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] a, float[N, 5] b) => (float[N, 5] y, float[N, 4] z) {
            y = MatMul (a, w)
            z = Gemm <transB: int = 1> (b, w)
        }
    """)
    m = load_model(h.attach_initializers(model, {"w": h.rng(0).standard_normal((4, 5)).astype(np.float32)}))
    weight = next(iter(WeightIndex.build(m)))
    assert layout_of(weight) == (None, "read by several nodes")
