"""Per-layer bit allocation: the knapsack, the onnxruntime probe, and the kmeans pass using them."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper as onh
import onnx.parser
import pytest

from onnxcompress import ConfigError, Pipeline, load_model
from onnxcompress.model import to_proto
from onnxcompress.passes import WeightSharing, WeightSharingConfig
from onnxcompress.passes._bit_allocation import LayerChoices, Option, allocate, probe_sensitivity
from tests import helpers as h


def two_branch(seed: int = 0, gain: float = 50.0) -> onnx.ModelProto:
    """y = gain * (x @ loud) + x @ quiet + x @ hush: same-sized weights that matter very
    differently (large enough that 3-bit planes cost less than UINT4 with their decode nodes)."""
    model = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 256] x) => (float[N, 256] y) {{
            a = MatMul(x, loud)
            gain = Constant <value = float {{{gain}}}> ()
            ag = Mul(a, gain)
            b = MatMul(x, quiet)
            c = MatMul(x, hush)
            bc = Add(b, c)
            y = Add(ag, bc)
        }}
    """)
    r = np.random.default_rng(seed)
    arrays = {n: (r.standard_normal((256, 256)) / 16).astype(np.float32) for n in ("loud", "quiet", "hush")}
    return h.attach_initializers(model, arrays)


def feeds(n: int = 4, seed: int = 1) -> list[dict[str, np.ndarray]]:
    r = np.random.default_rng(seed)
    return [{"x": r.standard_normal((2, 256)).astype(np.float32)} for _ in range(n)]


def share(model, calibration=None, **options):
    result = Pipeline([WeightSharing(**options)]).run(model, calibration=calibration)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    return result.passes[0], proto


def by_name(result) -> dict:
    return {layer.name: layer for layer in result.layers}


# -- the knapsack -----------------------------------------------------------------------------


def layer(label: str, sensitivity: float, size: int = 1000) -> LayerChoices:
    # Weight error falls 4x per bit, bytes grow with the width: the usual k-means trade-off.
    options = [Option(b, size * b // 8 + 16 * (1 << b), 4.0**-b) for b in range(3, 9)]
    return LayerChoices(label, options, sensitivity)


def test_allocate_spends_the_budget_on_the_sensitive_layer():
    layers = [layer("a", 1.0), layer("b", 100.0), layer("c", 1.0)]
    budget = sum(next(o.nbytes for o in x.options if o.bits == 4) for x in layers)
    chosen = allocate(layers, budget)
    assert sum(o.nbytes for o in chosen.values()) <= budget
    assert chosen["b"].bits > 4 > chosen["a"].bits
    # Never worse than uniform 4 bits, the allocation the budget was priced at.
    estimated = sum(x.error(chosen[x.label]) for x in layers)
    uniform = sum(x.error(next(o for o in x.options if o.bits == 4)) for x in layers)
    assert estimated < uniform


def test_allocate_below_the_cheapest_takes_the_cheapest():
    layers = [layer("a", 1.0), layer("b", 5.0)]
    chosen = allocate(layers, budget=1)
    assert {o.bits for o in chosen.values()} == {3}


def test_allocate_ignores_options_that_cost_more_for_more_error():
    # A 4-bit option that costs as much as 5 bits but is less accurate is never chosen.
    options = [Option(3, 100, 0.1), Option(4, 300, 0.05), Option(5, 300, 0.01), Option(8, 900, 0.0)]
    chosen = allocate([LayerChoices("a", options, 1.0)], budget=400)
    assert chosen["a"].bits == 5


# -- the probe --------------------------------------------------------------------------------


def test_probe_measures_each_weight_alone_and_leaves_the_model_alone():
    model = load_model(two_branch())
    before = to_proto(model).SerializeToString()
    arrays = {n: onh.to_array(t) for n, t in ((t.name, t) for t in two_branch().graph.initializer)}
    degraded = {n: a * 1.1 for n, a in arrays.items()}  # the same 10% relative error each
    probe = probe_sensitivity(model, degraded, feeds(2))
    assert probe.samples == 2 and set(probe.deviation) == {"loud", "quiet", "hush"}
    assert probe.deviation["loud"] > 100 * probe.deviation["quiet"]
    # The measured deviation is the output change of exactly that substitution.
    x = feeds(1)[0]
    ref = h.run(two_branch(), x)[0]
    loud = h.attach_initializers(two_branch(), {})
    for t in loud.graph.initializer:
        if t.name == "loud":
            t.CopyFrom(onh.from_array(degraded["loud"], "loud"))
    got = h.run(loud, x)[0]
    alone = float(np.square(got - ref).sum() / np.square(ref).sum())
    single = probe_sensitivity(model, {"loud": degraded["loud"]}, feeds(1))
    assert single.deviation["loud"] == pytest.approx(alone, rel=1e-4)
    assert to_proto(model).SerializeToString() == before


def test_probe_feeds_constant_node_weights():
    model = load_model(h.constant_node_weights(two_branch()))
    arrays = {t.name: onh.to_array(t) for t in two_branch().graph.initializer}
    probe = probe_sensitivity(model, {"loud": arrays["loud"] * 0.5}, feeds(1))
    assert probe.deviation["loud"] > 0.1


# -- the kmeans pass --------------------------------------------------------------------------


def test_probe_feeds_a_scalar_constant_weight():
    # ppocr_rec has scalar Constant weights: the probe's initializer must keep the scalar shape
    # (np.ascontiguousarray made it [1], which onnxruntime refused), and a numpy scalar value
    # (arithmetic on a 0-d weight) is fed as an array.
    model = load_model(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 4] x) => (float[2, 4] y) {
            s = Constant <value = float {2.0}> ()
            a = Relu(x)
            y = Mul(a, s)
        }"""))
    x = np.abs(h.rng(0).standard_normal((2, 4)).astype(np.float32))
    probe = probe_sensitivity(model, {"s": np.float32(2.0) * np.float32(1.1)}, [{"x": x}])
    assert probe.skipped == {}
    # y = 2.2 x against 2 x: deviation (0.1)^2 exactly, through onnxruntime
    assert probe.deviation["s"] == pytest.approx(0.01, rel=1e-4)
    onnx.checker.check_model(to_proto(model))  # the probe works on a copy
    assert h.run(to_proto(model), {"x": x})[0] == pytest.approx(2 * x)


def test_sensitive_layer_gets_more_bits_within_the_uniform_budget():
    model = two_branch()
    cal = feeds()
    result, proto = share(model, calibration=cal, bits=4, min_size=100)
    uniform, uniform_proto = share(model, calibration=cal, bits=4, min_size=100, allocation="uniform")
    layers = by_name(result)
    assert layers["loud"].extra["allocated_bits"] > 4 > layers["quiet"].extra["allocated_bits"]
    assert layers["loud"].extra["probe_deviation"] > layers["quiet"].extra["probe_deviation"]
    m = result.metrics
    assert m["allocation"] == "sensitivity" and m["probe_samples"] == 2 and m["probe_seconds"] >= 0
    assert m["allocation_estimated_bytes"] <= m["allocation_budget_bytes"]
    # The real file is no larger than uniform 4 bits, and the output is closer to the original.
    assert proto.ByteSize() <= uniform_proto.ByteSize()
    x = {"x": np.random.default_rng(5).standard_normal((16, 256)).astype(np.float32)}
    ref = h.run(model, x)[0]
    assert np.linalg.norm(h.run(proto, x)[0] - ref) < np.linalg.norm(h.run(uniform_proto, x)[0] - ref)
    assert "allocation" not in uniform.metrics
    assert {s.extra["requested_bits"] for s in uniform.layers} == {4}


def test_allocated_model_runs_exactly_the_snapped_weights():
    model = two_branch()
    cal = feeds()
    result, proto = share(model, calibration=cal, bits=4, min_size=100)
    widths = {s.name: s.extra["allocated_bits"] for s in result.layers}
    # The same widths given as overrides, snapped but stored dense: the decoded graph must
    # compute exactly what those float weights compute.
    _, dense = share(model, calibration=cal, bits=4, min_size=100, storage="dense", layer_bits=widths)
    x = {"x": np.random.default_rng(3).standard_normal((4, 256)).astype(np.float32)}
    assert np.array_equal(h.run(proto, x)[0], h.run(dense, x)[0])


def test_user_bits_win_over_the_allocation():
    result, _ = share(two_branch(), calibration=feeds(), bits=4, min_size=100, layer_bits={"quiet": 6})
    layers = by_name(result)
    assert layers["quiet"].extra["requested_bits"] == 6 and "allocated_bits" not in layers["quiet"].extra
    assert "allocated_bits" in layers["loud"].extra


def test_without_calibration_every_layer_gets_bits():
    auto, _ = share(two_branch(), bits=4, min_size=100)
    assert "allocation" not in auto.metrics
    assert {s.extra["requested_bits"] for s in auto.layers} == {4}
    forced, _ = share(two_branch(), bits=4, min_size=100, allocation="sensitivity")
    assert "allocation" not in forced.metrics
    assert any("calibration data" in n for n in forced.notes)
    eight, _ = share(two_branch(), calibration=feeds(), bits=8, min_size=100)
    assert "allocation" not in eight.metrics  # auto: 8 bits has nothing to allocate


def test_allocation_options_are_validated():
    with pytest.raises(ConfigError):
        WeightSharingConfig(allocation="greedy")
    with pytest.raises(ConfigError):
        WeightSharingConfig(probe_samples=0)


def test_fractional_budget_lies_between_the_uniform_sizes():
    model, cal = two_branch(), feeds()
    budgets = [
        share(model, calibration=cal, bits=4, min_size=100, budget_bits=b)[0].metrics
        for b in (4.0, 4.5, 5.0)
    ]
    four, half, five = (m["allocation_budget_bytes"] for m in budgets)
    assert four < half < five and half == pytest.approx((four + five) / 2, abs=1)
    assert all(m["allocation_estimated_bytes"] <= m["allocation_budget_bytes"] for m in budgets)
    with pytest.raises(ConfigError):
        WeightSharingConfig(budget_bits=9)


def test_cli_flags_reach_the_allocation(tmp_path):
    from onnxcompress.cli import main as cli_main

    src, calib = tmp_path / "two.onnx", tmp_path / "calib.npz"
    onnx.save(two_branch(), str(src))
    np.savez(calib, x=np.concatenate([f["x"] for f in feeds()]))
    sizes = {}
    for allocation in ("uniform", "sensitivity"):
        out = tmp_path / f"{allocation}.onnx"
        args = ["compress", str(src), "-o", str(out), "--quiet", "--kmeans", "4", "--calibration", str(calib)]
        args += ["--kmeans-min-size", "100", "--kmeans-allocation", allocation, "--kmeans-probe-samples", "1"]
        assert cli_main(args) == 0
        sizes[allocation] = out.stat().st_size
        proto = onnx.load(str(out))
        x = {"x": feeds(1, seed=9)[0]["x"]}
        sizes[allocation, "error"] = float(np.linalg.norm(h.run(proto, x)[0] - h.run(two_branch(), x)[0]))
    assert sizes["sensitivity"] <= sizes["uniform"]
    assert sizes["sensitivity", "error"] < sizes["uniform", "error"]


def test_small_stem_joins_only_when_the_allocation_can_protect_it():
    """min_size auto: a 144-weight first conv stays float at a uniform width (cheap and
    sensitive) but is shared, at the bits the probe justifies, under the allocation."""
    proto = h.cnn(channels=(1, 16, 32))  # conv0: 16x1x3x3 = 144 weights
    x = h.rng(2).standard_normal((4, 1, 16, 16)).astype(np.float32)
    calib = [{"x": x[i : i + 1]} for i in range(4)]
    stem = next(t.name for t in proto.graph.initializer if list(t.dims) == [16, 1, 3, 3])
    uniform, _ = share(proto, bits=4)
    assert stem in uniform.skipped["smaller than min_size (512 elements)"]
    allocated, out = share(proto, calibration=calib, bits=4)
    assert stem in by_name(allocated)
    assert by_name(allocated)[stem].extra["allocated_bits"] >= 3
    explicit, _ = share(proto, calibration=calib, bits=4, min_size=256)  # the user's choice wins
    assert stem not in by_name(explicit)


def test_output_deviation_skips_where_the_reference_is_not_finite():
    """A sample whose float output is NaN somewhere is judged where it is finite (one NaN made
    every deviation NaN, and NaN passes every check); a compressed output that is NaN where the
    reference is finite is broken, not equal."""
    from onnxcompress.passes._bit_allocation import BROKEN_DEVIATION, output_deviation

    ref = np.array([1.0, 2.0, np.nan, 4.0], np.float32)
    out = np.array([1.0, 2.0, 0.0, 4.4], np.float32)
    assert output_deviation([out], [ref]) == pytest.approx(0.16 / 21, rel=1e-5)
    assert output_deviation([np.array([1.0, np.nan, 3.0, 4.0])], [ref]) == BROKEN_DEVIATION
    assert output_deviation([out], [np.full(4, np.nan, np.float32)]) == 0.0
    assert output_deviation([out[:3]], [ref]) == BROKEN_DEVIATION  # a count that moved


def test_a_tiny_layer_on_the_model_codebook_does_not_push_the_largest_below_the_budget():
    """The SMS spam MLP (a 1001x16 embedding pooled and normalised, a 32x16 and a 2x32 Gemm,
    softmax): its 64-value head took 8 bits on the model-wide codebook, whose 1 KB came out of the
    4-bit budget and pushed the embedding (16k of 16.6k values) to 3 bits: --kmeans 4
    --calibration kept 42.8% of the decisions. The layers' own codebooks are the allocation
    when they cost less error."""
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[N, 100] tokens) => (float[N, 2] probs) {
            e = Gather(embed, tokens)
            pooled = ReduceMean <axes = [1], keepdims = 0> (e)
            mean = ReduceMean <axes = [1], keepdims = 1> (pooled)
            centred = Sub(pooled, mean)
            sq = Mul(centred, centred)
            var = ReduceMean <axes = [1], keepdims = 1> (sq)
            eps = Constant <value = float {1e-5}> ()
            vare = Add(var, eps)
            std = Sqrt(vare)
            normed = Div(centred, std)
            h = Gemm <transB = 1> (normed, fc1, b1)
            r = Relu(h)
            logits = Gemm <transB = 1> (r, fc2, b2)
            probs = Softmax <axis = -1> (logits)
        }
    """)
    r = np.random.default_rng(0)
    model = h.attach_initializers(model, {
        "embed": (1.2 * r.standard_normal((1001, 16))).astype(np.float32),
        "fc1": (0.34 * r.standard_normal((32, 16))).astype(np.float32),
        "b1": (0.17 * r.standard_normal(32)).astype(np.float32),
        "fc2": (0.4 * r.standard_normal((2, 32))).astype(np.float32),
        "b2": np.array([0.2, 0.1], np.float32)})
    calib = [{"tokens": r.integers(0, 1001, (1, 100)).astype(np.int64)} for _ in range(8)]
    result, _ = share(model, calibration=calib, bits=4)
    layers = by_name(result)
    assert layers["embed"].extra["allocated_bits"] >= 4
    m = result.metrics
    assert m["allocation_estimated_bytes"] <= m["allocation_budget_bytes"]
