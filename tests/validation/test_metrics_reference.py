"""Every metric of ``validation/metrics.py`` against an independent numpy formula.

Hand-computed cases first (answers you can check on paper), then random data streamed sample by
sample against the formula on the concatenated arrays, then the same numbers through
onnxruntime (``compare_models`` on a model whose output is exactly 0.9x the original's).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from onnxcompress.validation import compare_models
from onnxcompress.validation.metrics import TensorStats


def _stats(a: np.ndarray, b: np.ndarray, **kw) -> TensorStats:
    s = TensorStats(**kw)
    s.add(a, b)
    return s


# -- hand-computed -------------------------------------------------------------------------------
# original a = [3, 4] (norm 5), compressed b = [3, 0] (norm 3), difference [0, -4] (norm 4).


def test_relative_l2_divides_by_the_original_norm():
    s = _stats(np.array([3.0, 4.0]), np.array([3.0, 0.0]))
    assert s.rel_l2 == pytest.approx(0.8, abs=1e-12), (
        f"rel_l2 {s.rel_l2}: ||b-a||/||a|| = 4/5 = 0.8 (4/3 means divided by the compressed norm)"
    )


def test_snr_is_ten_log10_of_the_power_ratio():
    s = _stats(np.array([3.0, 4.0]), np.array([3.0, 0.0]))
    want = 10 * math.log10(25 / 16)  # 1.938 dB; 20*log10 would give 3.876
    assert s.snr_db == pytest.approx(want, abs=1e-9), f"snr_db {s.snr_db}, 10*log10(25/16) = {want}"


def test_cosine_is_not_square_rooted():
    s = _stats(np.array([3.0, 4.0]), np.array([3.0, 0.0]))
    assert s.cosine == pytest.approx(0.6, abs=1e-12), (
        f"cosine {s.cosine}: a.b/(|a||b|) = 9/15 = 0.6 (0.7746 is its square root)"
    )


def test_max_and_mean_abs_by_hand():
    s = _stats(np.array([1.0, -2.0, 3.0, 0.5]), np.array([1.5, -2.0, 1.0, 0.5]))
    assert s.max_abs == pytest.approx(2.0) and s.mean_abs == pytest.approx(2.5 / 4), (s.max_abs, s.mean_abs)


def test_top1_topk_and_accuracy_by_hand():
    a = np.array([[0.9, 0.05, 0.03, 0.02],   # top-1 0
                  [0.1, 0.7, 0.15, 0.05],    # top-1 1
                  [0.2, 0.3, 0.4, 0.1]])     # top-1 2
    b = np.array([[0.8, 0.1, 0.05, 0.05],    # top-1 0: agrees
                  [0.1, 0.2, 0.65, 0.05],    # top-1 2 (original's 1 is 2nd): top-2 agrees
                  [0.5, 0.1, 0.05, 0.35]])   # top-1 0 (original's 2 is last): neither
    s = TensorStats(top_k=2)
    s.add(a, b, labels=np.array([0, 2, 0]))
    assert s.top1_agreement == pytest.approx(1 / 3), f"top-1 agreement {s.top1_agreement}, want 1/3"
    assert s.topk_agreement == pytest.approx(2 / 3), f"top-2 agreement {s.topk_agreement}, want 2/3"
    # labels [0, 2, 0]: original predicts 0,1,2 -> 1 right; compressed 0,2,0 -> 3 right
    assert s.accuracy_original == pytest.approx(1 / 3), f"accuracy (original) {s.accuracy_original}"
    assert s.accuracy_compressed == pytest.approx(1.0), f"accuracy (compressed) {s.accuracy_compressed}"


def test_atol_rtol_counts_elements_outside_like_allclose():
    a = np.array([1.0, 10.0, -5.0, 0.0, 100.0])
    b = np.array([1.05, 10.5, -5.2, 0.2, 100.5])  # the last is inside only thanks to rtol
    s = _stats(a, b, atol=0.1, rtol=0.01)
    want = int(np.count_nonzero(~np.isclose(b, a, atol=0.1, rtol=0.01)))
    assert s.outside == want == 3, f"outside {s.outside}, numpy isclose says {want}"


def test_identical_and_degenerate_cases():
    z = np.zeros(4)
    s = _stats(z, z)
    assert s.rel_l2 == 0.0 and s.cosine == 1.0 and s.snr_db == math.inf
    s = _stats(z, np.ones(4))
    assert s.rel_l2 == math.inf and s.cosine == 0.0 and s.snr_db == -math.inf
    s = _stats(np.ones(4), -np.ones(4))
    assert s.cosine == -1.0 and s.rel_l2 == pytest.approx(2.0)


def test_one_value_a_sample_is_read_about_the_samples_spread():
    # predictions 1, 2, 3 (mean 2, spread 1 + 0 + 1 = 2), each off by 0.5: 1 - 0.75 / 4 = 0.8125
    s = TensorStats()
    for x in (1.0, 2.0, 3.0):
        s.add(np.array([[x]]), np.array([[x + 0.5]]))
    assert s.about_spread and s.cosine == pytest.approx(0.8125, abs=1e-12), s.cosine
    # the same errors on values sharing an offset read the same; the plain cosine read 0.99999
    far = TensorStats()
    for x in (1.0, 2.0, 3.0):
        far.add(np.array([x + 1000.0]), np.array([x + 1000.5]))
    assert far.cosine == pytest.approx(0.8125, abs=1e-9), far.cosine


def test_the_spread_form_keeps_the_plain_cosine_where_it_does_not_apply():
    vector = _stats(np.array([3.0, 4.0]), np.array([3.0, 0.0]))  # one sample, a vector
    assert not vector.about_spread and vector.cosine == pytest.approx(0.6)
    one = _stats(np.array([5.0]), np.array([4.0]))  # one sample: no spread to read
    assert not one.about_spread and one.cosine == 1.0
    same = TensorStats()  # the same value for every input: a constant's rounding
    for _ in range(3):
        same.add(np.array([0.1]), np.array([0.1001]))
    assert not same.about_spread and same.cosine == pytest.approx(1.0)
    column = _stats(np.arange(4.0).reshape(4, 1), np.arange(4.0).reshape(4, 1) + 1)  # a head's [P, 1]
    assert not column.about_spread


# -- random data, streamed -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streamed_metrics_equal_numpy_formulas_on_random_data(seed):
    r = np.random.default_rng(seed)
    scale = 10.0 ** r.uniform(-2, 2)
    samples_a = [r.standard_normal((3, 7)) * scale for _ in range(5)]
    samples_b = [x + r.standard_normal(x.shape) * scale * r.uniform(0.05, 0.8) for x in samples_a]
    samples_b[2] = samples_b[2] * 1.7  # a gain error: cosine != 1 - rel_l2^2/2
    s = TensorStats(classifier=False)
    for x, y in zip(samples_a, samples_b, strict=True):
        s.add(x.astype(np.float32), y.astype(np.float32))
    a = np.concatenate([x.astype(np.float32).astype(np.float64).ravel() for x in samples_a])
    b = np.concatenate([y.astype(np.float32).astype(np.float64).ravel() for y in samples_b])
    d = b - a
    want = {
        "rel_l2": np.linalg.norm(d) / np.linalg.norm(a),
        "cosine": a @ b / (np.linalg.norm(a) * np.linalg.norm(b)),
        "snr_db": 10 * np.log10((a @ a) / (d @ d)),
        "max_abs": np.abs(d).max(),
        "mean_abs": np.abs(d).mean(),
    }
    for name, value in want.items():
        got = getattr(s, name)
        assert got == pytest.approx(value, rel=1e-9), f"{name}: {got} != numpy {value}"
    assert s.finite_elements == a.size and s.samples == 5


def test_random_classifier_agreement_equals_numpy():
    r = np.random.default_rng(3)
    a = r.standard_normal((200, 10))
    b = a + 0.8 * r.standard_normal(a.shape)
    labels = r.integers(0, 10, 200)
    s = TensorStats(top_k=5)
    for i in range(0, 200, 50):  # four samples of 50 rows
        s.add(a[i:i + 50], b[i:i + 50], labels=labels[i:i + 50])
    top_a, top_b = a.argmax(1), b.argmax(1)
    top5_b = np.argsort(-b, axis=1)[:, :5]
    assert s.top1_agreement == pytest.approx(np.mean(top_a == top_b))
    assert s.topk_agreement == pytest.approx(np.mean((top5_b == top_a[:, None]).any(1)))
    assert s.accuracy_original == pytest.approx(np.mean(top_a == labels))
    assert s.accuracy_compressed == pytest.approx(np.mean(top_b == labels))
    assert 0.3 < s.top1_agreement < 0.95  # the data makes the metric discriminate


def test_non_finite_positions_are_excluded_and_counted():
    a = np.array([1.0, np.nan, 3.0, np.inf, 2.0, -np.inf, 4.0])
    b = np.array([1.5, np.nan, 3.0, 5.0, np.nan, -np.inf, np.inf])
    s = _stats(a, b)
    assert s.nonfinite_mismatch == 3 and s.finite_elements == 2  # same NaN / -inf are no mismatch
    assert (s.nan_original, s.inf_original, s.nan_compressed, s.inf_compressed) == (1, 2, 2, 2)
    assert s.rel_l2 == pytest.approx(0.5 / math.sqrt(10)) and s.max_abs == pytest.approx(0.5)


# -- through onnxruntime -------------------------------------------------------------------------


def _scaled_identity(gain: float) -> onnx.ModelProto:
    graph = oh.make_graph(
        [oh.make_node("Mul", ["x", "g"], ["y"])], "scaled",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 6])],
        initializer=[oh.make_tensor("g", onnx.TensorProto.FLOAT, [], [gain])],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])


def test_compare_models_reports_the_exact_error_of_a_known_gain():
    # compressed = 0.9 * original: rel L2 0.1 (0.111 if divided by the compressed norm),
    # SNR 20 dB (40 dB with 20*log10), cosine exactly 1.
    report = compare_models(_scaled_identity(1.0), _scaled_identity(0.9), samples=4)
    y = report.output("y")
    assert y.rel_l2 == pytest.approx(0.1, rel=1e-5), f"rel_l2 {y.rel_l2}, want 0.1"
    assert y.snr_db == pytest.approx(20.0, rel=1e-5), f"snr_db {y.snr_db}, want 20 dB"
    assert y.cosine == pytest.approx(1.0, abs=1e-6)
    x_abs_max = y.max_abs / 0.1  # |0.1 x| at its largest
    assert y.mean_abs < y.max_abs and x_abs_max > 0


def _offset_regressor(gain: float) -> onnx.ModelProto:
    """One prediction a sample near 100: y = 100 + gain * sum(x)."""
    graph = oh.make_graph(
        [oh.make_node("ReduceSum", ["x"], ["s"], keepdims=1), oh.make_node("Mul", ["s", "g"], ["t"]),
         oh.make_node("Add", ["t", "c"], ["y"])], "offset",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 6])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1])],
        initializer=[oh.make_tensor("g", onnx.TensorProto.FLOAT, [], [gain]),
                     oh.make_tensor("c", onnx.TensorProto.FLOAT, [], [100.0])],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])


def test_compare_fails_a_prediction_whose_errors_its_offset_hid():
    # gain 0.5: the predictions' deviations halve. Plain cosine of values near 100: 0.9998.
    report = compare_models(_offset_regressor(1.0), _offset_regressor(0.5), samples=16)
    y = report.output("y")
    assert not report.passed and y.cosine < 0.9, y.cosine
    assert any("about their mean" in n for n in y.notes), y.notes
    assert compare_models(_offset_regressor(1.0), _offset_regressor(1.0), samples=16).passed


def test_shape_mismatch_note_names_the_first_bad_sample_and_both_shapes():
    stats = TensorStats()
    stats.add(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32))
    stats.add(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32))
    stats.add(np.ones(()), np.ones((1,)))  # a later mismatch does not overwrite the first
    assert stats.shape_mismatch == "sample 1: shape 2x3 in the original, 3x2 in the compressed model"
    scalar = TensorStats()
    scalar.add(np.float32(1.0), np.ones((1,), np.float32))
    assert scalar.shape_mismatch == "sample 0: shape scalar in the original, 1 in the compressed model"


def test_distribution_rows_on_logits_probabilities_and_log_probabilities() -> None:
    """Large logits are neither probabilities nor their logarithms, and telling so takes no exp of
    them (batch 33's MNIST logits overflowed it and printed numpy's RuntimeWarning to the user)."""
    import warnings

    from onnxcompress.validation.metrics import distribution_rows

    logits = np.array([[1000.0, -5.0, 3.0], [2.0, 900.0, -1.0]], np.float32)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not distribution_rows(logits)
        assert distribution_rows(probs) and distribution_rows(np.log(probs))
        assert not distribution_rows(np.log(probs) - 1.0)  # log-scores that do not sum to 1
