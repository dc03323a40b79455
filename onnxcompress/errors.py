"""The exceptions onnxcompress raises for problems the user must fix.

Every message names the file, node or tensor involved. Where the fix is known it is carried
separately in ``hint``: ``str(error)`` shows "message Hint: hint" for users, while code reads
``error.message`` and ``error.hint`` (never parse the string). The CLI turns these into one line
on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class OnnxCompressError(Exception):
    """Base class: a problem with the user's model, data, options or output path."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
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
    """A pass failed: it raised, or produced a model that fails the pipeline's checks (a bug in
    onnxcompress). ``pass_name`` names it; ``layer`` is the tensor or node it was working on,
    when known."""

    def __init__(
        self, message: str, *, hint: str | None = None, pass_name: str | None = None,
        layer: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.pass_name = pass_name
        self.layer = layer


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI timeout, ``kill``), raised where Ctrl-C would be, so that the same clean-up
    runs: auto's worker processes stopped (killed outright, they outlived the run holding 1.3 GB
    each), temporary files removed, no output half-written."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
