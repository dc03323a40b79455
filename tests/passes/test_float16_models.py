"""fp16 on the exported and third-party models (issue #14): file ~0.5x, outputs close to fp32 on
each model's own eval data, no NaN/Inf, input and output types unchanged.

The models are caches outside the repository (/work/realmodels from scripts/real_models.py, the
GPT-style model from scripts/export_transformer.py); a missing one is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxcompress.data import feed_source
from onnxcompress.model import load_model, to_proto
from onnxcompress.passes import Float16, PassContext
from onnxcompress.runtime import create_session

# The real models of scripts/real_models.py (skipped where absent), as benchmarks/_common.REAL_MODELS.
REAL = Path(os.environ.get("ONNXCOMPRESS_REAL_MODELS", "/work/realmodels"))
BENCH = Path.home() / ".cache" / "onnxcompress-bench"
# name -> (path, minimum cosine, maximum file ratio). The targets are cosine 0.9999 and
# 0.5x; the exceptions are measured properties of the weights, not of the conversion:
# - mobilenet_v2 (random weights, BatchNorm statistics re-estimated and folded) loses cosine
#   0.0032 from rounding its weights alone, 47 % from its first convolution: the pass's fidelity
#   check keeps its first layers float32 (+54 KB) and reaches the target;
# - ppocr_rec: rounding only its weights gives 0.99982 on the worst sample;
# - silero_vad: 141 KB of its 2.3 MB is graph (two If branches of ~110 nodes each), which does
#   not halve; its floor with every float tensor halved is 0.531x (measured 0.535x: 22 biases of
#   < 1024 values, 12.9 KB, stay float32 inside the branches).
MODELS = {
    "mobilenet_v2": (REAL / "mobilenet_v2.onnx", 0.9999, 0.52),
    "bert_tiny": (REAL / "bert_tiny.onnx", 0.9999, 0.52),
    "crnn_lstm": (REAL / "crnn_lstm.onnx", 0.9999, 0.52),  # LSTM weights stored fp16 + Cast
    "audio_kws": (REAL / "audio_kws.onnx", 0.9999, 0.52),  # STFT + GRU kept float32
    "ppocr_det": (REAL / "ppocr_det.onnx", 0.9999, 0.52),
    "ssd_detector": (REAL / "ssd_detector.onnx", 0.9999, 0.52),  # a BN variance of 1e8 stays fp32
    "ppocr_rec": (REAL / "ppocr_rec.onnx", 0.9997, 0.52),
    "silero_vad": (REAL / "silero_vad.onnx", 0.9999, 0.54),  # weights in If branches
    "gpt_small": (BENCH / "gpt_small.onnx", 0.9999, 0.51),
}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 1.0 if na == nb == 0 else float(a @ b / (na * nb))


def _elem_types(values) -> list[int]:  # noqa: ANN001 - protobuf repeated field
    return [v.type.tensor_type.elem_type for v in values]


@pytest.mark.parametrize("name", list(MODELS))
def test_float16_on_exported_and_real_models(name: str) -> None:
    path, min_cos, max_ratio = MODELS[name]
    if not path.exists():
        pytest.skip(f"{path} not present (made by scripts/real_models.py / export_transformer.py)")
    model = load_model(path)
    feeds = list(feed_source(str(path.with_name(f"{path.stem}_eval.npz")), model).take(2))
    context = PassContext(calibration=feed_source(str(path.with_name(f"{path.stem}_calib.npz")), model))
    result = Float16(compute="always").run(model, context)
    proto = onnx.load(path, load_external_data=False)
    converted = result.model
    out = to_proto(converted)
    onnx.checker.check_model(out)
    assert len(out.SerializeToString()) <= max_ratio * path.stat().st_size
    assert _elem_types(out.graph.input) == _elem_types(proto.graph.input)
    assert _elem_types(out.graph.output) == _elem_types(proto.graph.output)
    # Weights were converted or stored in float16 (in subgraphs too: silero_vad's If branches).
    assert result.layers and all(layer.bits == 16.0 for layer in result.layers)
    ref, half = create_session(path), create_session(converted)
    for feed in feeds:
        for want, got in zip(ref.run(None, feed), half.run(None, feed), strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape
            if np.issubdtype(want.dtype, np.floating):
                assert np.isfinite(got).all()
                assert _cos(got, want) >= min_cos, name
