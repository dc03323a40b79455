"""pytest helpers: guard a compressed model in a regression test.

    from onnxcompress.testing import assert_equivalent

    def test_compressed_model_still_works():
        assert_equivalent("model.onnx", "model.int8.onnx", "eval.npz", min_cosine=0.999, min_top1=0.99)

The assertion message is the per-output table of :func:`onnxcompress.validation.compare_models`.
"""

from __future__ import annotations

from typing import Any

from onnxcompress.validation.compare import ComparisonReport, compare_models
from onnxcompress.validation.tolerance import Tolerance

_TOLERANCE_KEYS = ("atol", "rtol", "min_cosine", "max_rel_error", "min_top1", "min_detection_f1")
_OPTION_KEYS = (
    "per_output",
    "classifiers",
    "top_k",
    "labels",
    "label_key",
    "shapes",
    "samples",
    "seed",
    "layers",
    "threads",
)


def assert_equivalent(
    original: Any, compressed: Any, inputs: Any = None, **tolerances: Any
) -> ComparisonReport:
    """Assert that ``compressed`` still computes what ``original`` computes.

    ``original``/``compressed``: paths, ``onnx.ModelProto`` or ``onnx_ir.Model``. ``inputs``: an
    ``.npz`` path, a folder of ``.npz``, a ``CalibrationDataReader``, a list of feed dicts, or None
    for seeded synthetic inputs. Keywords: the criteria ``atol``, ``rtol``, ``min_cosine``,
    ``max_rel_error``, ``min_top1`` (none given: the default policy
    :data:`onnxcompress.validation.tolerance.DEFAULT_TOLERANCE`, as ``compare`` and ``compress
    --validate``: cosine >= 0.99, top-1 agreement >= 0.99 on class-score outputs), and the
    :func:`~onnxcompress.validation.compare_models` options ``per_output`` (output name -> dict of
    criteria), ``classifiers``, ``top_k``, ``labels``, ``label_key``, ``shapes``, ``samples``,
    ``seed``, ``layers``, ``threads``.

    Raises AssertionError with the comparison table when an output is outside tolerance; returns
    the :class:`~onnxcompress.validation.ComparisonReport` otherwise. Errors (a model that does not
    load, data that does not fit) raise the usual ``onnxcompress.errors`` types.
    """
    __tracebackhide__ = True  # pytest: show the caller's line, not this one
    unknown = set(tolerances) - set(_TOLERANCE_KEYS) - set(_OPTION_KEYS)
    if unknown:
        raise TypeError(
            f"assert_equivalent() got unexpected keyword(s) {', '.join(sorted(unknown))}; "
            f"criteria: {', '.join(_TOLERANCE_KEYS)}; options: {', '.join(_OPTION_KEYS)}"
        )
    criteria = {k: v for k, v in tolerances.items() if k in _TOLERANCE_KEYS and v is not None}
    options = {k: v for k, v in tolerances.items() if k in _OPTION_KEYS}
    report = compare_models(
        original, compressed, inputs, tolerance=Tolerance.from_dict(criteria) if criteria else None, **options
    )
    if not report.passed:
        raise AssertionError("compressed model is not equivalent to the original:\n" + report.render())
    return report
