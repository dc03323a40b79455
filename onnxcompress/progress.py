"""Progress as log lines: what a long compression is doing, in any log, not only on a terminal.

Passes report progress through ``PassContext.report_progress(stage, done, total)``.
:class:`ProgressLog` turns those calls into INFO records of the ``onnxcompress.progress`` logger,
at most one per :data:`MIN_INTERVAL` seconds per stage (the first and last of a stage always), and
a heartbeat thread adds "still ..." lines when a step reports nothing for :data:`HEARTBEAT`
seconds (a speed check, a large k-means layer, onnxruntime building a session), so that a log
never goes quiet for long while work continues.

    with ProgressLog() as progress:
        pipeline.run(model, progress=progress)
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

logger = logging.getLogger("onnxcompress.progress")

MIN_INTERVAL = 2.0  # seconds between two lines of the same stage
HEARTBEAT = 5.0  # seconds without a report before a "still ..." line


class ProgressLog:
    """A ``progress(stage, done, total)`` callback that logs at INFO; a context manager that
    runs the heartbeat while it is open. Thread-safe."""

    def __init__(
        self, log: logging.Logger = logger, *, interval: float = MIN_INTERVAL, heartbeat: float = HEARTBEAT
    ) -> None:
        self._log = log
        self._interval = interval
        self._heartbeat = heartbeat
        self._lock = threading.Lock()
        self._stage: str | None = None
        self._stage_done = (0, 0)
        self._last_line = 0.0  # time of the last line of the current stage
        self._last_report = time.monotonic()
        self._stage_start = self._last_report
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        with self._lock:
            new_stage = stage != self._stage
            if new_stage:
                self._stage, self._stage_start = stage, now
            self._stage_done = (done, total)
            self._last_report = now
            last = total > 0 and done >= total
            if not (new_stage or last or now - self._last_line >= self._interval):
                return
            self._last_line = now
        self._log.info("%s", _line(stage, done, total))

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat / 2):
            now = time.monotonic()
            with self._lock:
                if self._stage is None or now - self._last_report < self._heartbeat:
                    continue
                if now - self._last_line < self._heartbeat:
                    continue
                self._last_line = now
                stage, (done, total), since = self._stage, self._stage_done, now - self._stage_start
            self._log.info("still working: %s (%.0f s)", _line(stage, done, total), since)

    def __enter__(self) -> ProgressLog:
        if self._heartbeat > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="onnxcompress-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _line(stage: str, done: int, total: int) -> str:
    return f"{stage} [{done}/{total}]" if total > 0 else f"{stage} [{done}]"
