"""A CTC recogniser's per-position scores are compared as the strings read off them: compare
passed khmer-ocr-ocm's int8 at cosine 0.999994 with 1 of 32 strings changed (batch 18)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest

from onnxcompress.validation import compare_models
from onnxcompress.validation.metrics import ctc_string, ctc_time_axis
from tests import helpers as h

C, T, SAMPLES = 40, 24, 32  # a charset: a linear head's CTC scores have 36 classes or more


def recogniser(weight: np.ndarray, time_major: bool = False) -> onnx.ModelProto:
    """features [N, T, C] -> logits [N, T, C] by a linear head (time-major: [T, N, C])."""
    tail = "y = Transpose <perm = [1, 0, 2]> (z)" if time_major else "y = Identity (z)"
    out = f"float[t, n, {C}] y" if time_major else f"float[n, t, {C}] y"
    proto = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        ocr (float[n, t, {C}] x) => ({out}) {{
            m = MatMul (x, w)
            z = Add (m, b)
            {tail}
        }}
    """)
    return h.attach_initializers(proto, {"w": weight, "b": np.zeros(C, np.float32)})


def lines(edge: bool) -> list[dict[str, np.ndarray]]:
    """Mostly blank frames (class 0) and a few characters; the last line's frame 10 is a near
    tie: between classes 3 and 5 (a character), or (``edge``) between the 3 it ends and the blank."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(SAMPLES):
        frames = np.zeros((T, C), np.float32)
        frames[:, 0] = 1.0
        for pos in rng.choice(np.arange(2, T - 2, 3), 4, replace=False):
            frames[pos] = 0.0
            frames[pos, rng.integers(1, C)] = 1.0
        if i == SAMPLES - 1:
            frames[8:12] = 0.0
            frames[9, 3] = 1.0
            frames[11, 0] = 1.0
            frames[10, [3, 0 if edge else 5]] = (0.5, 0.49)
        samples.append({"x": (frames + 0.01 * rng.standard_normal((T, C)))[None].astype(np.float32)})
    return samples


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("edge", [False, True])
def test_a_changed_string_fails_and_a_moved_run_edge_passes(edge, time_major):
    original = recogniser(np.eye(C, dtype=np.float32), time_major)
    w = np.eye(C, dtype=np.float32)
    w[0 if edge else 5, 0 if edge else 5] = 1.05  # the near tie's runner-up wins
    report = compare_models(original, recogniser(w, time_major), data=lines(edge))
    y = report.output("y")
    assert y.cosine > 0.999 and y.classifier and y.rows == SAMPLES
    if edge:  # [3, 3, 0] -> [3, 0, 0]: the same string
        assert report.passed and y.top1_agreement == 1.0
    else:  # [3, 3, 0] -> [3, 5, 0]: "3" became "35"
        assert not report.passed and y.top1_agreement == pytest.approx(31 / 32)
        assert [c.criterion for c in y.failures] == ["min_top1"]
        assert "96.88% over 32 CTC strings" in y.failures[0].detail


def test_token_logits_without_a_blank_are_not_strings():
    """A language model's per-position logits: no class holds half the positions, so they are
    no CTC strings (held by cosine, as before)."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((1, T, C))
    assert ctc_time_axis(logits) is None
    model = recogniser(np.eye(C, dtype=np.float32))
    data = [{"x": rng.standard_normal((1, T, C)).astype(np.float32)} for _ in range(4)]
    y = compare_models(model, model, data=data).output("y")
    assert not y.classifier and y.top1_agreement is None


def test_time_axis_and_greedy_decoding():
    a = np.zeros((1, 10, 4))
    a[..., 0] = 1.0
    a[0, 3, :] = [0, 0, 2, 0]
    assert ctc_time_axis(a) == 1 and ctc_time_axis(a.transpose(1, 0, 2)) == 0
    assert ctc_time_axis(a[:, :5]) is None  # too short to read as a line
    assert ctc_time_axis(np.zeros((4, 4, 4))) is None  # which axis is time: unknown
    wide = np.zeros((20, 10, 4))  # 20 lines of 10 positions: the batch is the longer axis
    wide[..., 0] = 1.0
    assert ctc_time_axis(wide) == 0 and ctc_time_axis(wide, batch=20) == 1
    assert ctc_time_axis(a.transpose(1, 0, 2), batch=10) == 0  # a time-major input's T: not the batch
    path = np.array([0, 2, 2, 0, 2, 3, 3, 0, 0])
    assert ctc_string(path, blank=0).tolist() == [2, 2, 3]
    assert ctc_string(np.zeros(0, np.int64), blank=0).size == 0


def test_a_detectors_offsets_per_grid_cell_are_not_strings():
    """YuNet's box offsets per grid cell ([1, 6400, 4] from a conv head, one column the largest
    at most cells) read as CTC strings failed its int8 file (face F1 99.4) in compare: a linear
    head's scores are strings only over a charset (36 classes or more)."""
    rng = np.random.default_rng(2)
    w = np.eye(4, dtype=np.float32)
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        head (float[1, 400, 4] x) => (float[1, 400, 4] y) { y = MatMul (x, w) }
    """)
    original = h.attach_initializers(proto, {"w": w})
    moved = h.attach_initializers(proto, {"w": w + 0.02 * rng.standard_normal((4, 4)).astype(np.float32)})
    data = []
    for _ in range(8):
        x = rng.standard_normal((1, 400, 4)).astype(np.float32) * 0.3
        x[..., 0] += 1.0  # one offset the largest at most cells, as a blank would be
        data.append({"x": x})
    assert ctc_time_axis(data[0]["x"]) == 1  # shaped like a line of scores...
    y = compare_models(original, moved, data=data).output("y")
    assert not y.classifier and y.top1_agreement is None  # ...but no charset: cosine only
