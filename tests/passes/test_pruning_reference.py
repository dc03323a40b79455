"""Pruning checked against plain numpy: which weights go, which channels go, and what the bias
correction must achieve. Every expected mask or channel set is recomputed here from the formula
(never from the pass's other mode or its own report), and outputs go through onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from onnxcompress import Pipeline, WeightIndex, load_model
from onnxcompress.model import to_proto
from onnxcompress.passes import Prune
from onnxcompress.passes._folding import fold_batchnorm
from tests import helpers as h

ALL_LAYERS = {"keep_first": False, "keep_last": False, "min_size": 0}


def prune(model, calibration=None, **options):
    result = Pipeline([Prune(**options)]).run(model, calibration=calibration)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    return result.passes[0], proto


def inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {w.label: w.numpy() for w in WeightIndex.build(load_model(model))}


def drop_lowest(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Reference: keep-mask dropping the round(fraction * size) lowest scores (no ties here)."""
    k = int(round(fraction * scores.size))
    order = np.argsort(scores, axis=None)
    keep = np.ones(scores.size, bool)
    keep[order[:k]] = False
    return keep.reshape(scores.shape)


def _feeds(mean: float = 0.0, n: int = 4, width: int = 16, seed: int = 10):
    scales = np.geomspace(0.05, 5.0, width)  # input channels of very different energy
    return [
        {"x": (mean + np.random.default_rng(seed + i).standard_normal((8, width)) * scales)
         .astype(np.float32)}
        for i in range(n)
    ]


def _mlp_inputs(model: onnx.ModelProto, feeds) -> dict[str, np.ndarray]:
    """Numpy forward of helpers.mlp: the input activation of every fc weight, all rows stacked."""
    w = {i.name: onh.to_array(i) for i in model.graph.initializer}
    x = np.concatenate([f["x"] for f in feeds]).astype(np.float64)
    acts, i = {}, 0
    while f"fc{i}.weight" in w:
        acts[f"fc{i}.weight"] = x
        x = np.maximum(x @ w[f"fc{i}.weight"] + w[f"fc{i}.bias"], 0)
        i += 1
    return acts


# -- unstructured / N:M / global selection -------------------------------------------------------


def test_magnitude_pruning_zeroes_exactly_the_smallest_weights():
    model = h.mlp((16, 64, 32, 10))
    res, proto = prune(model, sparsity=0.5, importance="magnitude", **ALL_LAYERS)
    before, after = inits(model), inits(proto)
    for name in ("fc0.weight", "fc1.weight", "fc2.weight"):
        keep = drop_lowest(np.abs(before[name]), 0.5)
        np.testing.assert_array_equal(
            after[name] != 0, keep, err_msg=f"{name}: the zeros are not the 50% smallest |w|"
        )
        np.testing.assert_array_equal(after[name][keep], before[name][keep])  # survivors untouched
    x = _feeds()[0]
    want = np.maximum(x["x"] @ after["fc0.weight"] + after["fc0.bias"], 0)
    want = np.maximum(want @ after["fc1.weight"] + after["fc1.bias"], 0)
    want = want @ after["fc2.weight"] + after["fc2.bias"]
    np.testing.assert_allclose(h.run(proto, x)[0], want, rtol=1e-4, atol=1e-5)


def test_data_aware_importance_is_abs_w_times_input_rms():
    model = h.mlp((16, 64, 32, 10))
    feeds = _feeds()
    _, proto = prune(model, feeds, sparsity=0.5, importance="data", bias_correction=False, **ALL_LAYERS)
    before, after = inits(model), inits(proto)
    acts = _mlp_inputs(model, feeds)
    differs = 0
    for name, x in acts.items():
        rms = np.sqrt((x**2).mean(axis=0))  # per input channel (MatMul weight: axis 0)
        keep = drop_lowest(np.abs(before[name]) * rms[:, None], 0.5)
        got = after[name] != 0
        np.testing.assert_array_equal(got, keep, err_msg=f"{name}: not the Wanda mask |W| * ||x||")
        differs += int(np.count_nonzero(keep != drop_lowest(np.abs(before[name]), 0.5)))
    assert differs > 100, "the data-aware mask should differ from the magnitude mask on this data"


def test_n_m_keeps_the_two_largest_of_every_four_input_weights():
    model = h.mlp((16, 64, 32, 10))
    _, proto = prune(model, pattern="2:4", importance="magnitude", **ALL_LAYERS)
    before, after = inits(model), inits(proto)
    for name in ("fc0.weight", "fc1.weight"):
        w = before[name]  # [in, out]: groups of 4 consecutive input channels per output
        groups = np.abs(w.T).reshape(-1, 4)
        keep = np.zeros_like(groups, bool)
        np.put_along_axis(keep, np.argsort(groups, axis=1)[:, 2:], True, axis=1)
        want = keep.reshape(w.T.shape).T
        np.testing.assert_array_equal(after[name] != 0, want, err_msg=f"{name}: not 2-of-4 by |w|")


def test_global_scope_uses_one_threshold_across_tensors():
    model = h.mlp((16, 64, 32, 10))
    _, proto = prune(model, sparsity=0.7, scope="global", importance="magnitude", **ALL_LAYERS)
    before, after = inits(model), inits(proto)
    names = ("fc0.weight", "fc1.weight", "fc2.weight")
    allw = np.concatenate([np.abs(before[n]).ravel() for n in names])
    threshold = np.sort(allw)[int(round(0.7 * allw.size)) - 1]
    for n in names:
        np.testing.assert_array_equal(after[n] != 0, np.abs(before[n]) > threshold,
                                      err_msg=f"{n}: not the global |w| threshold {threshold:.4g}")
    per_layer = [np.mean(after[n] == 0) for n in names]
    assert max(per_layer) - min(per_layer) > 0.05, f"global scope should vary per layer: {per_layer}"


def test_data_aware_scores_of_a_grouped_conv_use_each_group_s_input_channels():
    r = np.random.default_rng(3)
    w = r.standard_normal((8, 2, 3, 3)).astype(np.float32)  # 4 groups of 2 input channels
    graph = oh.make_graph(
        [oh.make_node("Conv", ["x", "w"], ["y"], name="gconv", group=4)], "gconv",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8, 6, 6])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 8, 4, 4])],
        initializer=[onh.from_array(w, "w")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])
    scales = np.geomspace(0.1, 10, 8).reshape(1, 8, 1, 1)
    feeds = [{"x": (r.standard_normal((4, 8, 6, 6)) * scales).astype(np.float32)} for _ in range(2)]
    _, proto = prune(model, feeds, sparsity=0.5, importance="data", bias_correction=False,
                     keep_depthwise=False, **ALL_LAYERS)
    x = np.concatenate([f["x"] for f in feeds]).astype(np.float64)
    rms = np.sqrt((x**2).mean(axis=(0, 2, 3)))  # per input channel of the whole tensor
    # output channel o (group o // 2) reads input channels 2g, 2g+1
    per_out = rms.reshape(4, 2)[np.arange(8) // 2]
    keep = drop_lowest(np.abs(w) * per_out[:, :, None, None], 0.5)
    np.testing.assert_array_equal(inits(proto)["w"] != 0, keep,
                                  err_msg="grouped conv: not |W| * rms(x) of its group")


# -- bias correction: the effect -----------------------------------------------------------------


def _mean_output(model, feeds) -> np.ndarray:
    return np.concatenate([h.run(model, f)[0] for f in feeds]).astype(np.float64).mean(axis=0)


def test_bias_correction_removes_the_mean_output_shift_of_a_linear_layer():
    model = h.mlp((16, 24), seed=3)  # y = x @ W + b: the correction is exact in expectation
    feeds = _feeds(mean=1.5)
    ref = _mean_output(model, feeds)
    _, plain = prune(model, feeds, sparsity=0.6, importance="data", bias_correction=False, **ALL_LAYERS)
    _, fixed = prune(model, feeds, sparsity=0.6, importance="data", bias_correction=True, **ALL_LAYERS)
    shift_plain = np.abs(_mean_output(plain, feeds) - ref).max()
    shift_fixed = np.abs(_mean_output(fixed, feeds) - ref).max()
    assert shift_plain > 0.05, f"the test needs a visible shift to remove, got {shift_plain}"
    assert shift_fixed < 1e-3 * shift_plain + 1e-5, (
        f"bias correction left a mean output shift of {shift_fixed:.3g} (uncorrected {shift_plain:.3g})"
    )
    # and exactly by the formula: b' = b + (W - W') ^T mean(x)
    w0, w1 = inits(model)["fc0.weight"], inits(plain)["fc0.weight"]
    mean_x = np.concatenate([f["x"] for f in feeds]).astype(np.float64).mean(axis=0)
    want_b = inits(model)["fc0.bias"] + (w0 - w1).astype(np.float64).T @ mean_x
    np.testing.assert_allclose(inits(fixed)["fc0.bias"], want_b, rtol=1e-5, atol=1e-5)


def _conv_model(seed: int = 0) -> onnx.ModelProto:
    r = np.random.default_rng(seed)
    w = (r.standard_normal((16, 8, 3, 3)) / 8).astype(np.float32)
    graph = oh.make_graph(
        [oh.make_node("Conv", ["x", "w"], ["y"], name="conv")], "conv",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8, 12, 12])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 16, 10, 10])],
        initializer=[onh.from_array(w, "w")],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])


def test_bias_correction_gives_a_conv_without_bias_one_that_restores_the_mean():
    model = _conv_model()
    chan_mean = np.linspace(-2, 2, 8).reshape(1, 8, 1, 1)
    feeds = [{"x": (chan_mean + np.random.default_rng(i).standard_normal((4, 8, 12, 12))).astype(np.float32)}
             for i in range(3)]
    ref = _mean_output(model, feeds).mean(axis=(1, 2))
    _, plain = prune(model, feeds, sparsity=0.5, importance="magnitude", bias_correction=False, **ALL_LAYERS)
    _, fixed = prune(model, feeds, sparsity=0.5, importance="data", bias_correction=True, **ALL_LAYERS)
    shift_plain = np.abs(_mean_output(plain, feeds).mean(axis=(1, 2)) - ref).max()
    shift_fixed = np.abs(_mean_output(fixed, feeds).mean(axis=(1, 2)) - ref).max()
    assert shift_plain > 0.1 and shift_fixed < 0.05 * shift_plain, (
        f"per-channel mean shift {shift_fixed:.3g} with bias correction, {shift_plain:.3g} without"
    )


# -- channel importance, selection and removal ---------------------------------------------------


def _bn_cnn(zero_shift: bool) -> onnx.ModelProto:
    """helpers.cnn with conv1's first 8 channels strong in weights but nearly muted by their
    BatchNormalization scale (0.01): ranking by weights alone keeps exactly the wrong half."""
    model = h.cnn(seed=4)
    for t in model.graph.initializer:
        arr = onh.to_array(t).copy()
        if t.name == "conv1.weight":
            arr[:8] *= 3.0
        elif t.name == "bn1.scale":
            arr[:8] = 0.01
        elif t.name == "bn1.shift" and zero_shift:
            arr[:] = 0.0
        else:
            continue
        t.CopyFrom(onh.from_array(arr.astype(np.float32), t.name))
    return model


def _kept_rows(before: np.ndarray, after: np.ndarray) -> list[int]:
    return [int(np.flatnonzero((before == row).all(axis=tuple(range(1, before.ndim))))[0]) for row in after]


def _l2_rows(a: np.ndarray, axis: int) -> np.ndarray:
    return np.sqrt((np.moveaxis(a.astype(np.float64), axis, 0).reshape(a.shape[axis], -1) ** 2).sum(1))


def test_channel_importance_multiplies_weight_norms_by_the_batchnorm_scale():
    model = _bn_cnn(zero_shift=False)
    _, proto = prune(model, sparsity=0.5, pattern="channel", importance="magnitude", round_to=1)
    w = {i.name: onh.to_array(i) for i in model.graph.initializer}
    kept = sorted(_kept_rows(w["conv1.weight"], inits(proto)["conv1.weight"]))
    bn = np.abs(w["bn1.scale"].astype(np.float64)) / np.sqrt(w["bn1.var"].astype(np.float64) + 1e-5)
    producer = _l2_rows(w["conv1.weight"], 0) * bn
    consumer = _l2_rows(w["fc.weight"], 1)  # Gemm transB: channels on axis 1
    score = producer / producer.mean() + consumer / consumer.mean()
    want = sorted(np.argsort(-score)[:8].tolist())
    assert kept == want, f"kept channels {kept}; ||W_c|| * |gamma_c|/sigma_c (+ consumer norm) keeps {want}"
    assert kept == list(range(8, 16)), f"the muted channels 0-7 must go first, kept {kept}"


def test_channel_importance_without_data_uses_the_batchnorm_statistics():
    model = _bn_cnn(zero_shift=True)  # BN output of channels 0-7 is ~0.01 * N(0, 1)
    res, proto = prune(model, sparsity=0.5, pattern="channel", round_to=1)  # importance auto
    conv1 = next(onh.to_array(i) for i in model.graph.initializer if i.name == "conv1.weight")
    kept = sorted(_kept_rows(conv1, inits(proto)["conv1.weight"]))
    assert kept == list(range(8, 16)), (
        f"kept {kept} ({res.metrics.get('importance')}): channels muted by a BatchNormalization "
        f"scale of 0.01 carry no signal and must be removed first"
    )


def _with_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    out = onnx.ModelProto.FromString(model.SerializeToString())
    out.graph.output.append(oh.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return out


def _zeroed_reference(model, removed, delta=None) -> onnx.ModelProto:
    ref = onnx.ModelProto.FromString(model.SerializeToString())
    for t in ref.graph.initializer:
        if t.name == "fc.weight":
            arr = onh.to_array(t).copy()
            arr[:, removed] = 0
            t.CopyFrom(onh.from_array(arr, t.name))
        if t.name == "fc.bias" and delta is not None:
            t.CopyFrom(onh.from_array((onh.to_array(t) + delta).astype(np.float32), t.name))
    return ref


@pytest.mark.parametrize("data", [False, True])
def test_removed_channels_equal_the_original_with_those_channels_zeroed(data):
    model = h.cnn(seed=5)
    r = np.random.default_rng(0)
    feeds = [{"x": (0.5 + r.standard_normal((4, 3, 16, 16))).astype(np.float32)} for _ in range(3)]
    opts = {"sparsity": 0.5, "pattern": "channel", "round_to": 1}
    if data:
        _, proto = prune(model, feeds, importance="data", bias_correction=True, **opts)
    else:
        _, proto = prune(model, importance="magnitude", **opts)
    w = {i.name: onh.to_array(i) for i in model.graph.initializer}
    kept = _kept_rows(w["conv1.weight"], inits(proto)["conv1.weight"])
    removed = sorted(set(range(16)) - set(kept))
    assert len(removed) == 8
    delta = None
    if data:
        flat = np.concatenate([h.run(_with_output(model, "flat"), f)[1] for f in feeds]).astype(np.float64)
        # data importance: the consumer's column norm times the channel's input RMS
        score = _l2_rows(w["fc.weight"], 1) * np.sqrt((flat**2).mean(0))
        want = sorted(np.argsort(-score)[:8].tolist())
        assert sorted(kept) == want, f"kept {sorted(kept)}, ||W[:, c]|| * rms(x_c) keeps {want}"
        delta = w["fc.weight"][:, removed].astype(np.float64) @ flat.mean(0)[removed]
    ref = _zeroed_reference(model, removed, delta)
    x = {"x": np.random.default_rng(9).standard_normal((5, 3, 16, 16)).astype(np.float32)}
    np.testing.assert_allclose(h.run(proto, x)[0], h.run(ref, x)[0], rtol=1e-4, atol=1e-5,
                               err_msg="the pruned model must equal the original with those channels zeroed"
                               + (" plus their mean moved into the bias" if data else ""))


# -- BatchNormalization folding ------------------------------------------------------------------


def test_batchnorm_folding_matches_the_formula_and_the_outputs():
    model = h.cnn(seed=6)
    ir_model = load_model(model)
    assert fold_batchnorm(ir_model) == 2
    folded = to_proto(ir_model)
    onnx.checker.check_model(folded)
    assert not any(n.op_type == "BatchNormalization" for n in folded.graph.node)
    w, got = {i.name: onh.to_array(i).astype(np.float64) for i in model.graph.initializer}, inits(folded)
    factor = w["bn0.scale"] / np.sqrt(w["bn0.var"] + 1e-5)
    np.testing.assert_allclose(got["conv0.weight"], w["conv0.weight"] * factor[:, None, None, None],
                               rtol=1e-6)
    np.testing.assert_allclose(got["conv0.bias"], (w["conv0.bias"] - w["bn0.mean"]) * factor + w["bn0.shift"],
                               rtol=1e-5, atol=1e-7)
    x = {"x": np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)}
    np.testing.assert_allclose(h.run(folded, x)[0], h.run(model, x)[0], rtol=1e-4, atol=1e-5)
