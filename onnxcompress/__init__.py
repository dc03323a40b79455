"""onnxcompress: make ONNX models smaller and faster, and prove they still do the same job."""

from __future__ import annotations

__version__ = "0.1.0"

# First, before any module imports onnx_ir: it imports onnx_ir with sympy deferred (0.2 s, 34 MB).
from onnxcompress import _deferred  # noqa: F401
from onnxcompress.api import compress_file, save_model
from onnxcompress.data import FeedSource, feed_source
from onnxcompress.errors import (
    ConfigError,
    DataError,
    ModelLoadError,
    OnnxCompressError,
    PassError,
    RuntimeUnavailableError,
    SaveError,
    UnsafeExternalDataError,
)
from onnxcompress.model import load_model
from onnxcompress.passes import *  # noqa: F403 - the passes are part of the public API
from onnxcompress.passes import __all__ as _passes_all
from onnxcompress.pipeline import Pipeline, PipelineResult, compress
from onnxcompress.synthetic import synthetic_feeds
from onnxcompress.testing import assert_equivalent
from onnxcompress.validation import compare_models
from onnxcompress.weights import Weight, WeightIndex

__all__ = [
    "__version__",
    "compress",
    "compress_file",
    "compare_models",
    "assert_equivalent",
    "load_model",
    "save_model",
    "Pipeline",
    "PipelineResult",
    "WeightIndex",
    "Weight",
    "FeedSource",
    "feed_source",
    "synthetic_feeds",
    "OnnxCompressError",
    "ConfigError",
    "DataError",
    "ModelLoadError",
    "PassError",
    "RuntimeUnavailableError",
    "SaveError",
    "UnsafeExternalDataError",
    *_passes_all,
]
