"""Models whose inputs cannot be guessed: synthetic data of the guessed sizes (see
``onnxcompress.synthetic.concrete_shape``) does not run on them, real data does. The STFT runs
once synthetic_feeds raises the guessed length (``synthetic.LARGER_SIZES``); the Concat never.

- :func:`stft_like`: an STFT-style front end. ``Pad(mode=reflect)`` by 64 on a dynamic time axis
  needs at least 65 samples; the frames go through a strided Conv, then two MatMuls.
- :func:`concat_fixed_width`: the input is concatenated with a constant of width 96 and the
  MatMul after it takes 160 features: only inputs of width 64 run.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser

from tests import helpers as h

STFT_PAD = 64


def stft_like(*, seed: int = 0) -> onnx.ModelProto:
    model = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        stft (float[batch, time] x) => (float[batch, frames, 64] y) {{
            axis = Constant <value = int64[1] {{1}}> ()
            pads = Constant <value = int64[6] {{0, 0, {STFT_PAD}, 0, 0, {STFT_PAD}}}> ()
            x3 = Unsqueeze (x, axis)
            padded = Pad <mode = "reflect"> (x3, pads)
            spec = Conv <strides = [32]> (padded, frames_w)
            st = Transpose <perm = [0, 2, 1]> (spec)
            hidden = MatMul (st, w1)
            act = Relu (hidden)
            y = MatMul (act, w2)
        }}
    """)
    r = h.rng(seed)
    return h.attach_initializers(model, {
        "frames_w": (r.standard_normal((128, 1, 128)) * 0.1).astype(np.float32),
        "w1": (r.standard_normal((128, 256)) * 0.1).astype(np.float32),
        "w2": (r.standard_normal((256, 64)) * 0.1).astype(np.float32),
    })


def stft_feeds(n: int = 4, length: int = 2048, seed: int = 1) -> list[dict[str, np.ndarray]]:
    r = h.rng(seed)
    return [{"x": r.standard_normal((1, length)).astype(np.float32)} for _ in range(n)]


def concat_fixed_width(*, seed: int = 0) -> onnx.ModelProto:
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        concat (float[1, width] x) => (float[1, 64] y) {
            joined = Concat <axis = 1> (x, extra)
            hidden = MatMul (joined, w1)
            act = Relu (hidden)
            y = MatMul (act, w2)
        }
    """)
    r = h.rng(seed)
    return h.attach_initializers(model, {
        "extra": r.standard_normal((1, 96)).astype(np.float32),
        "w1": (r.standard_normal((160, 256)) * 0.1).astype(np.float32),
        "w2": (r.standard_normal((256, 64)) * 0.1).astype(np.float32),
    })


def concat_feeds(n: int = 4, seed: int = 1) -> list[dict[str, np.ndarray]]:
    r = h.rng(seed)
    return [{"x": r.standard_normal((1, 64)).astype(np.float32)} for _ in range(n)]


MODELS = {"stft": (stft_like, stft_feeds), "concat": (concat_fixed_width, concat_feeds)}
