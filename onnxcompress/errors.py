"""The exceptions onnxcompress raises for problems the user must fix.

Every message names the file, node or tensor involved and, where the fix is known, ends with
"Hint: ...". The CLI turns these into one line on stderr and exit code 2.
"""

from __future__ import annotations


class OnnxCompressError(Exception):
    """Base class: a problem with the user's model, data, options or output path."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(f"{message} Hint: {hint}" if hint else message)


class ModelLoadError(OnnxCompressError):
    """The model file is missing, unreadable, malformed or inconsistent."""


class UnsafeExternalDataError(ModelLoadError):
    """An external-data location points outside the model's folder."""


class ConfigError(OnnxCompressError):
    """A pass, pipeline or recipe option is invalid."""


class DataError(OnnxCompressError):
    """Calibration or validation data does not fit the model."""


class RuntimeUnavailableError(OnnxCompressError):
    """onnxruntime cannot run the model, so a data-driven step cannot happen."""


class SaveError(OnnxCompressError):
    """The output could not be written."""


class PassError(OnnxCompressError):
    """A pass produced a model that fails the pipeline's checks (a bug in onnxcompress)."""
