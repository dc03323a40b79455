"""The checked-in example models still do their job: each one, run through onnxruntime on its
evaluation set, scores what ``models/README.md`` and ``tests/assets/README.md`` record.

A regenerated model that is broken (bad export, wrong data, training gone wrong) fails here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.detection import decode, detection_f1

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 0.005  # half a percentage point


@dataclass(frozen=True)
class Example:
    model: str
    eval_npz: str
    calib_npz: str
    input_name: str
    input_shape: tuple[int | str, ...]
    metric: str  # "accuracy" (labels) or "f1" (detections, tests/detection.py)
    expected: float


EXAMPLES = [
    Example("models/digits_mlp.onnx", "models/digits_eval.npz", "models/digits_calib.npz",
            "pixels", ("batch", 64), "accuracy", 350 / 360),
    Example("models/digits_cnn.onnx", "models/digits_eval.npz", "models/digits_calib.npz",
            "image", ("batch", 1, 8, 8), "accuracy", 357 / 360),
    Example("tests/assets/resnet_digits.onnx", "tests/assets/resnet_digits_eval.npz",
            "tests/assets/resnet_digits_calib.npz", "image", ("batch", 1, 32, 32), "accuracy", 356 / 360),
    Example("tests/assets/transformer_digits.onnx", "tests/assets/transformer_digits_eval.npz",
            "tests/assets/transformer_digits_calib.npz", "rows", ("batch", 8, 8), "accuracy", 351 / 360),
    Example("tests/assets/yolo_digits.onnx", "tests/assets/yolo_digits_eval.npz",
            "tests/assets/yolo_digits_calib.npz", "image", ("batch", 1, 64, 64), "f1", 0.9343),
]  # fmt: skip


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def shape_of(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    return tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)


@pytest.mark.parametrize("ex", EXAMPLES, ids=lambda ex: Path(ex.model).stem)
def test_scores_what_is_recorded(ex: Example) -> None:
    path = REPO / ex.model
    assert path.stat().st_size < 5 * 2**20, f"{ex.model} grew beyond 5 MB"
    with np.load(REPO / ex.eval_npz) as data:
        arrays = {k: data[k] for k in data.files}
    outputs = session(path).run(None, {ex.input_name: arrays[ex.input_name]})[0]
    if ex.metric == "accuracy":
        score = float((outputs.argmax(axis=1) == arrays["labels"]).mean())
    else:
        score = detection_f1(decode(outputs), arrays["gt_boxes"], arrays["gt_classes"]).f1
    assert score == pytest.approx(ex.expected, abs=TOLERANCE), f"{ex.model}: {ex.metric} {score:.4f}"


@pytest.mark.parametrize("ex", EXAMPLES, ids=lambda ex: Path(ex.model).stem)
def test_interface(ex: Example) -> None:
    """Opset 17, one input with a dynamic batch axis, weights as initializers, data named after the
    input (what ``--calibration`` and validation rely on)."""
    model = onnx.load(REPO / ex.model)
    onnx.checker.check_model(model)
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import} == {"ai.onnx": 17}
    (graph_input,) = model.graph.input
    assert (graph_input.name, shape_of(graph_input)) == (ex.input_name, ex.input_shape)
    assert model.graph.initializer, "weights must be initializers"
    for npz in (ex.eval_npz, ex.calib_npz):
        with np.load(REPO / npz) as data:
            arr = data[ex.input_name]
        assert arr.dtype == np.float32 and arr.shape[1:] == ex.input_shape[1:], npz
        assert arr.min() >= 0.0 and arr.max() <= 1.0, npz


def test_resnet_keeps_batchnorm_and_residuals() -> None:
    ops = [n.op_type for n in onnx.load(REPO / "tests/assets/resnet_digits.onnx").graph.node]
    assert ops.count("BatchNormalization") == 9
    assert ops.count("Add") == 3
