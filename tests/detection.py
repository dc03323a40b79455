"""Decoding and F1 for ``tests/assets/yolo_digits.onnx`` (numpy only; importable from any test).

The detector sees a 64x64 canvas split into an 8x8 grid of 8-pixel cells and outputs
``detections`` [N, 64, 15], everything already through a sigmoid. Row ``r * 8 + c`` is cell
(row r, column c); its 15 values are::

    0      objectness
    1..10  class scores (digits 0-9, independent sigmoids)
    11, 12 box centre inside the cell: x = (c + v11) * 8, y = (r + v12) * 8   (pixels)
    13, 14 box width and height as a fraction of the canvas: w = v13 * 64, h = v14 * 64

Decoding is NMS-free: each cell predicts at most one box, kept when objectness >= ``conf``.
Ground truth in ``yolo_digits_eval.npz``: ``gt_boxes`` float32 [S, 3, 4] (x1, y1, x2, y2 in pixels)
and ``gt_classes`` int64 [S, 3], padded with -1 where a canvas has fewer than 3 digits.

Example::

    out = session.run(None, {"image": data["image"]})[0]
    score = detection_f1(decode(out), data["gt_boxes"], data["gt_classes"])
    score.f1  # 0.0 .. 1.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxcompress.validation.detections import box_iou

GRID = 8
CANVAS = 64
CELL = CANVAS // GRID
NUM_CLASSES = 10


@dataclass(frozen=True)
class Detections:
    """Boxes of one image: ``boxes`` [k, 4] (x1, y1, x2, y2, pixels), ``scores`` [k], ``classes`` [k]."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class DetectionScore:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 0.0

    @property
    def recall(self) -> float:
        real = self.true_positives + self.false_negatives
        return self.true_positives / real if real else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def decode(output: np.ndarray, conf: float = 0.5) -> list[Detections]:
    """Turn ``detections`` [N, 64, 15] into one :class:`Detections` per image."""
    output = np.asarray(output, dtype=np.float32)
    if output.ndim != 3 or output.shape[1:] != (GRID * GRID, 5 + NUM_CLASSES):
        raise ValueError(f"expected detections of shape [N, {GRID * GRID}, 15], got {output.shape}")
    rows, cols = np.divmod(np.arange(GRID * GRID), GRID)
    cx = (cols + output[..., 11]) * CELL
    cy = (rows + output[..., 12]) * CELL
    w = output[..., 13] * CANVAS
    h = output[..., 14] * CANVAS
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
    result = []
    for i in range(len(output)):
        keep = output[i, :, 0] >= conf
        result.append(
            Detections(
                boxes=boxes[i, keep],
                scores=output[i, keep, 0],
                classes=output[i, keep, 1 : 1 + NUM_CLASSES].argmax(axis=-1),
            )
        )
    return result


def detection_f1(
    detections: list[Detections], gt_boxes: np.ndarray, gt_classes: np.ndarray, iou: float = 0.5
) -> DetectionScore:
    """Greedy matching, best score first: a detection is a true positive when it has the right
    class and IoU >= ``iou`` with a ground-truth box not matched yet."""
    if len(detections) != len(gt_boxes):
        raise ValueError(f"{len(detections)} images of detections but {len(gt_boxes)} of ground truth")
    tp = fp = fn = 0
    for det, boxes, classes in zip(detections, gt_boxes, gt_classes, strict=True):
        real = classes >= 0
        boxes, classes = boxes[real], classes[real]
        matched = np.zeros(len(boxes), dtype=bool)
        ious = box_iou(det.boxes, boxes) if len(det.boxes) and len(boxes) else None
        for j in np.argsort(-det.scores, kind="stable"):
            ok = np.zeros(len(boxes), dtype=bool) if ious is None else (ious[j] >= iou)
            ok &= (classes == det.classes[j]) & ~matched
            if ok.any():
                matched[np.flatnonzero(ok)[np.argmax(ious[j][ok])]] = True
                tp += 1
            else:
                fp += 1
        fn += int((~matched).sum())
    return DetectionScore(tp, fp, fn)
