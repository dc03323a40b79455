"""Progress as log lines: what a long compression is doing, in any log, not only on a terminal.

Passes report progress through ``PassContext.report_progress(stage, done, total)``.
:class:`ProgressLog` turns those calls into INFO records of the ``onnxcompress.progress`` logger,
at most one per :data:`MIN_INTERVAL` seconds per stage (the first and last of a stage always), and
a heartbeat thread adds "still working ..." lines when nothing was logged for :data:`HEARTBEAT`
seconds (a speed check, a large k-means layer, onnxruntime building a session), so that a log
never goes quiet for long while work continues.

    with ProgressLog() as progress:
        pipeline.run(model, progress=progress)
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from types import TracebackType

logger = logging.getLogger("onnxcompress.progress")

MIN_INTERVAL = 2.0  # seconds between two lines of the same stage
HEARTBEAT = 5.0  # seconds without a report before a "still ..." line
# A stage that has run this long gets an estimate of its remaining time (per weight on large
# models: passes report one step per weight), from its average pace so far.
ETA_AFTER = 10.0


class ProgressLog:
    """A ``progress(stage, done, total)`` callback that logs at INFO; a context manager that
    runs the heartbeat while it is open. Thread-safe."""

    def __init__(
        self,
        log: logging.Logger = logger,
        *,
        interval: float = MIN_INTERVAL,
        heartbeat: float = HEARTBEAT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval
        self._heartbeat = heartbeat
        self._clock = clock
        self._lock = threading.Lock()
        self._stage: str | None = None
        self._stage_done = (0, 0)
        self._done_at = clock()  # when the stage last advanced
        self._last_line = -math.inf  # time of the last line written
        self._stage_start = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self._clock()
        with self._lock:
            new_stage = stage != self._stage
            if new_stage:
                self._stage, self._stage_start = stage, now
            if (done, total) != self._stage_done or new_stage:
                self._done_at = now
            self._stage_done = (done, total)
            last = total > 0 and done >= total
            if not (new_stage or last or now - self._last_line >= self._interval):
                return
            self._last_line = now
            line = _line(stage, done, total) + self._eta(now)
        self._log.info("%s", line)

    def _eta(self, now: float) -> str:
        """", ~N s left" once the stage has run ETA_AFTER seconds: its average time per step so
        far times the steps left, less the time since the last step. Call with the lock held."""
        done, total = self._stage_done
        elapsed = self._done_at - self._stage_start
        if not (0 < done < total) or now - self._stage_start < ETA_AFTER or elapsed <= 0:
            return ""
        left = max(0.0, elapsed / done * (total - done) - (now - self._done_at))
        return f", ~{left:.0f} s left" if left < 120 else f", ~{left / 60:.0f} min left"

    def beat(self) -> str | None:
        """Log (and return) a "still working" line if nothing was logged for ``heartbeat``
        seconds while a stage is open; the heartbeat thread calls this."""
        now = self._clock()
        with self._lock:
            if self._stage is None or now - self._last_line < self._heartbeat:
                return None
            self._last_line = now
            done, total = self._stage_done
            where = ("after " if 0 < total <= done else "") + _line(self._stage, done, total)
            line = f"still working: {where} ({now - self._stage_start:.0f} s{self._eta(now)})"
        self._log.info("%s", line)
        return line

    def _beat_loop(self) -> None:
        while not self._stop.wait(self._heartbeat / 4):
            self.beat()

    def __enter__(self) -> ProgressLog:
        if self._heartbeat > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._beat_loop, name="onnxcompress-progress", daemon=True)
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
