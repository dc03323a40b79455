"""Class scores the exporter named so stay class scores where the calibration rows nearly all pick
one class (``graph.outputs.SCORES_NAME``): a detector of rare events calibrated on real data."""

from __future__ import annotations

import numpy as np

from onnxcompress.auto.default_targets import default_target


def _one_class_logits(seed: int = 0) -> np.ndarray:
    """24 rows of 5 logits, 23 of them led by class 0 (batch 38's ECG beats: 23 of 24 normal)."""
    r = np.random.default_rng(seed)
    logits = r.normal(size=(24, 5)).astype(np.float32)
    logits[:, 0] += 3.0
    logits[5, 0], logits[5, 2] = -1.0, 4.0
    return logits


def test_named_class_scores_led_by_one_class_are_held_by_top1():
    logits = _one_class_logits()
    assert default_target({"output_classification": logits}) == "top1>=0.99"
    assert default_target({"logits": logits}) == "top1>=0.99"


def test_unnamed_values_led_by_one_column_are_held_by_their_values():
    # MediaPipe's landmarks (x, y, z): one coordinate the largest in every picture, not a class
    assert default_target({"Identity": _one_class_logits()}) == "values>=0.9995"
    assert default_target({"landmarks": _one_class_logits()}) == "values>=0.9995"
