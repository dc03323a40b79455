"""What quantize takes from calibration data for its int8 weights before writing any: the input
statistics GPTQ rounding needs (``reconstruct``: ``layerwise.rounding``) and each weight's input
means for bias correction (``layerwise.bias``). The pass makes both current for the int8 writer
(``_int8._int8_codes``); without calibration data there is neither.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.errors import OnnxCompressError
from onnxcompress.layerwise import rounding
from onnxcompress.layerwise.collection import Moments, weight_moments
from onnxcompress.passes._quant_config import QuantizeConfig
from onnxcompress.passes.base import PassContext, PassResult
from onnxcompress.weights import Weight

# Calibration samples GPTQ rounding (``reconstruct``) collects its input statistics on (Conv:
# up to 1024 positions a sample): ppocr_rec keeps 96.3% string agreement from 8 samples as from
# 24, and the collection's time grows with the samples (39 s of 62 at 24).
ROUNDING_SAMPLES = 16
# ... and a layer is GPTQ-rounded only where they hold this many input rows per input value:
# fewer, and E[x x^T] is rank-deficient or noisy, so the codes fit the calibration data and
# the outputs move away on other data (an MLP on 32 rows for 64 inputs: held-out error 1.2x
# round-to-nearest's). A Conv gets up to 1024 rows a sample, a transformer its tokens.
MIN_ROWS_PER_INPUT = 2


def _wants_means(cfg: QuantizeConfig, context: PassContext) -> bool:
    return cfg.bias_correction and cfg.mode != "int4" and context.calibration is not None


def mean_requests(weights: list[Weight], cfg: QuantizeConfig, context: PassContext) -> list[Moments]:
    """The statistics :func:`input_means` will ask the run's collection for (the pass declares
    them, so one collection serves every pass)."""
    if not _wants_means(cfg, context):
        return []
    return list(weight_moments(weights, cfg.calibration_samples).values())


def input_means(model: ir.Model, weights: list[Weight], cfg: QuantizeConfig, context: PassContext,
                result: PassResult) -> dict[str, np.ndarray]:
    """Each weight's input channel means on the calibration data, by label ({} without data or
    when the model cannot run on it: a note says so)."""
    if not _wants_means(cfg, context):
        return {}
    try:
        found = context.stats.channel_moments(model, weights, cfg.calibration_samples)
    except OnnxCompressError as e:
        result.note(f"bias correction skipped: the model could not run on the calibration data "
                    f"({e.message})")
        return {}
    return {label: mean for label, (mean, _) in found.items()}


def gptq_rounding(model: ir.Model, cfg: QuantizeConfig, context: PassContext,
                  result: PassResult) -> rounding.Int8Rounding | None:
    """The GPTQ rounding statistics of ``model`` as it comes (BatchNorm folding keeps the
    weights' inputs) where ``reconstruct`` asks for them, else None (a note says why not)."""
    if not cfg.reconstruct or cfg.mode == "int4" or context.calibration is None:
        if cfg.reconstruct and context.calibration is None:
            result.note("reconstruct needs calibration data (--calibration); weights rounded to "
                        "nearest")
        return None
    limit = context.stats.limit(min(cfg.calibration_samples, ROUNDING_SAMPLES))
    try:
        found = rounding.int8_rounding(
            model, context.calibration.take(limit), seed=context.seed,
            progress=lambda done, total: context.report_progress("quantize: GPTQ rounding statistics",
                                                                 done, total))
    except OnnxCompressError as e:
        result.note(f"reconstruction skipped: the model could not run on the calibration data ({e})")
        return None
    _enough_rows(found)
    result.metrics["reconstruction"] = found.report
    return found


def _enough_rows(found: rounding.Int8Rounding) -> None:
    """Drop the statistics of layers with under MIN_ROWS_PER_INPUT rows per input value (they
    round to nearest); the report says which."""
    for label, stats in list(found.stats.items()):
        k = stats.hessian.shape[-1]
        if stats.rows < MIN_ROWS_PER_INPUT * k:
            del found.stats[label]
            found.report["skipped"][label] = (
                f"{stats.rows} calibration rows for {k} inputs (under {MIN_ROWS_PER_INPUT} per "
                "input): rounded to nearest")
