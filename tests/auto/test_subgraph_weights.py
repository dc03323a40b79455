"""Auto prices an outer-graph weight that only a Loop body reads (a scripted time loop)."""

from __future__ import annotations

import numpy as np

from onnxcompress.auto.candidates import measure_candidate
from onnxcompress.auto.measure import save_feeds
from onnxcompress.model import load_model, save_model
from tests import helpers as h
from tests.passes.test_quantization_subgraphs import _loop_reader


def test_an_outer_weight_read_in_a_loop_body_gets_a_price(tmp_path):
    # k-means writes the decode in front of the reader, inside the body, where the probe's
    # decode_weight cannot compute it: the weight was dropped as "its decoded value could not be
    # computed", so auto offered it nothing (batch 17's digits_gru_loop: 1.05x, int8 2.84x)
    save_model(load_model(_loop_reader()), tmp_path / "base.onnx")
    feeds = [{"x": h.rng(i).standard_normal((1, 96)).astype(np.float32)} for i in range(4)]
    save_feeds(tmp_path / "probe.npz", feeds)
    measured = measure_candidate({
        "candidate": "kmeans4", "base": str(tmp_path / "base.onnx"), "labels": ["W"],
        "probe": str(tmp_path / "probe.npz"), "calibration_samples": 4,
        "outputs": str(tmp_path / "probe.npz")})  # fmt: skip
    assert "W" not in (measured.skipped or {})
    assert measured.bytes_after["W"] < measured.bytes_before["W"] / 4
    assert 0 < measured.weight_error["W"] < 0.05  # ||dW||^2 / ||W||^2 at 4 bits
