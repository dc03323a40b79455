"""Validation: prove that a compressed model still does the original's job.

:func:`compare_models` runs both models through onnxruntime on user data or synthetic inputs
and returns a :class:`ComparisonReport` (per-output metrics checked against tolerances, and on
request layer-wise localisation and latency). ``onnxcompress compare`` and ``compress
--validate`` are thin layers over it; :func:`onnxcompress.testing.assert_equivalent` is the
pytest helper.
"""

from __future__ import annotations

from onnxcompress.validation.cli import validator_for_cli
from onnxcompress.validation.compare import (
    DEFAULT_SYNTHETIC_SAMPLES,
    DEFAULT_TOP_K,
    Check,
    ComparisonReport,
    OutputComparison,
    compare_models,
    render_report,
)
from onnxcompress.validation.latency import LatencyResult, measure_latency
from onnxcompress.validation.layers import LayerReport, LayerStat, compare_layers
from onnxcompress.validation.metrics import TensorStats
from onnxcompress.validation.tolerance import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    DEFAULT_SYNTHETIC_TOLERANCE,
    DEFAULT_TOLERANCE,
    VALIDATE_TOLERANCE,
    Tolerance,
    default_tolerance,
)

__all__ = [
    "compare_models",
    "ComparisonReport",
    "OutputComparison",
    "Check",
    "Tolerance",
    "TensorStats",
    "LayerReport",
    "LayerStat",
    "compare_layers",
    "LatencyResult",
    "measure_latency",
    "render_report",
    "validator_for_cli",
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "DEFAULT_TOLERANCE",
    "DEFAULT_SYNTHETIC_TOLERANCE",
    "default_tolerance",
    "DEFAULT_SYNTHETIC_SAMPLES",
    "DEFAULT_TOP_K",
    "VALIDATE_TOLERANCE",
]
