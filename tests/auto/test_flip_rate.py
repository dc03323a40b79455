"""The flip-rate estimate behind top1 / sequence / accuracy targets, on synthetic samples whose
flip rate is known: margins with a density at zero (exponential), a deviation d per sample, so
a sample flips when its margin is below d (rate ~ d)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxcompress.auto.flips import _poisson_upper, flip_rate, flip_ratios
from onnxcompress.auto.targets import parse_target


def _acceptance(rate: float, n: int, trials: int = 400, seed: int = 0) -> float:
    """Share of ``trials`` sets of ``n`` samples flipping at ``rate`` whose estimate holds 1%."""
    rng = np.random.default_rng(seed)
    ratios = rate / rng.exponential(size=(trials, n))  # r = d / margin; P(r > 1) = 1 - e^-rate
    return float(np.mean([flip_rate(r) <= 0.01 for r in ratios]))


@pytest.mark.parametrize("n", [18, 24, 32])
def test_rejects_a_few_percent_accepts_a_few_per_mille(n: int) -> None:
    # what the calibration samples of one model can show: 2-5% flip rates (magika's and
    # ppocr_cls's old plans) are rejected almost always, 0.3% (int8 on ppocr_cls) accepted mostly
    # (measured at 2000 sets: 2% passes 4-5%, 0.3% passes 77-80%)
    assert _acceptance(0.05, n) == 0.0
    assert _acceptance(0.03, n) <= 0.03
    assert _acceptance(0.02, n) <= 0.1
    assert _acceptance(0.003, n) >= 0.7
    # and in between it is a judgement: a true 1% passes a third of the time
    assert 0.15 <= _acceptance(0.01, n) <= 0.5


def test_counting_alone_could_not() -> None:
    # 2% flip rate, 24 samples: most sets show no flip at all, yet the estimate rejects them
    rng = np.random.default_rng(1)
    ratios = 0.02 / rng.exponential(size=(400, 24))
    no_flip = [r for r in ratios if (r <= 1).all()]
    assert len(no_flip) > 0.5 * len(ratios)
    assert np.mean([flip_rate(r) > 0.01 for r in no_flip]) > 0.85


def test_estimate_is_the_tail_bound() -> None:
    r = np.array([0.5, 0.2, 0.1] + [0.01] * 17)
    q0, q1 = (_poisson_upper(k, 0.8) for k in range(2))
    assert q0 == pytest.approx(-np.log(0.2), rel=1e-6)  # P(0 events) = e^-mu
    assert flip_rate(r) == pytest.approx(min(0.5 * q0, 0.2 * q1) / 20)  # the two largest ratios
    # observed flips are a floor; all-flip tails are the count
    assert flip_rate(np.array([3.0, 2.0, 1.5] + [0.01] * 7)) == pytest.approx(0.3)
    assert flip_rate(np.zeros(8)) == 0.0 and flip_rate(np.zeros(0)) == 0.0
    # more samples than ratios (accuracy: only correct predictions can lose a point)
    assert flip_rate(r, 40) == pytest.approx(flip_rate(r) / 2)


def test_ratios_on_sequences_and_ties() -> None:
    a = np.zeros((2, 3, 4))
    a[..., 0] = 2.0
    a[..., 1] = 1.0
    b = a.copy()
    b[0, 1, 1] = 1.5  # sample 0, position 1: half the lead over class 1 gone
    b[1, 2, 3] = 3.0  # sample 1, position 2: class 3 overtakes (lead 2, fall 3)
    assert flip_ratios(a, b) == pytest.approx([0.5, 1.5])
    tie = np.array([[1.0, 1.0, 0.0]])
    assert flip_ratios(tie, tie)[0] == 0.0
    assert flip_ratios(tie, np.array([[1.0, 1.1, 0.0]]))[0] == np.inf  # a tie flips with any fall
    assert flip_ratios(tie, np.array([[1.0, np.nan, 0.0]]))[0] == np.inf


def test_sequence_target_judges_the_nearest_position() -> None:
    # 30 sequences of 20 positions, one position of each at 1/20 of a flip: 0.05 x 1.61 / 30
    rng = np.random.default_rng(2)
    a = rng.normal(size=(30, 20, 5))
    top = a.argmax(-1)
    lead = np.sort(a, -1)[..., -1] - np.sort(a, -1)[..., -2]
    b = a.copy()
    np.put_along_axis(b, top[..., None], (np.take_along_axis(a, top[..., None], -1)
                                          - 0.05 * lead[..., None]), -1)
    f = parse_target("sequence>=0.99").evaluate({"y": a}, {"y": b})
    assert f.values["sequence>=0.99"] == pytest.approx(1 - 0.05 * _poisson_upper(0, 0.8) / 30) and f.met
    b2 = b.copy()
    np.put_along_axis(b2, top[..., None], (np.take_along_axis(a, top[..., None], -1)
                                           - 0.3 * lead[..., None]), -1)
    assert not parse_target("sequence>=0.99").evaluate({"y": a}, {"y": b2}).met


def test_held_out_check_pools_counts_only(tmp_path) -> None:  # noqa: ANN001
    # the held-out check: top1 over search + held-apart samples, cosine over the held-apart ones
    from onnx import TensorProto, helper

    from onnxcompress.auto.search import _Evaluator

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    rng = np.random.default_rng(3)
    search = rng.normal(size=(18, 1, 4)).astype(np.float32)
    held = rng.normal(size=(6, 1, 4)).astype(np.float32)
    ev = object.__new__(_Evaluator)
    ev.goal = parse_target("top1>=0.5,cosine>=0.99")
    # the "compressed" model returns its input; the references: the search samples' exactly, the
    # held-apart ones exactly, then reversed (cosine -1, every sample flips)
    ev.search = ([{"x": s} for s in search], {"y": search[:, 0]}, None)
    ev.held = ([{"x": h} for h in held], {"y": held[:, 0]}, None)
    f = ev.judge(path)
    assert f.met and f.values == {"top1>=0.5": 1.0, "cosine>=0.99": pytest.approx(1.0)}
    ev.held = ([{"x": h} for h in held], {"y": -held[:, 0]}, None)
    f = ev.judge(path)
    assert f.values["top1>=0.5"] == pytest.approx(1 - 6 / 24)  # 6 flips of 24: pooled
    assert f.values["cosine>=0.99"] == pytest.approx(-1.0) and not f.met  # held-apart alone
