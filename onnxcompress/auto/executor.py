"""One interface for running auto mode's candidate evaluations: in this process, in local worker
processes (the default), or on a Ray cluster (``--ray ADDRESS|auto``, the ``[distributed]`` extra).

Every task is a top-level function of picklable arguments that reads what it needs from files
and returns plain data, and results come back in task order, so the search makes the same choices
whichever executor ran it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

from onnxcompress.errors import ConfigError

logger = logging.getLogger(__name__)

#: This machine has 2 cores shared by many; more workers only contend.
DEFAULT_WORKERS = 2


class Executor:
    """Runs ``fn(item)`` for each item and returns the results in order."""

    name = "serial"

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return [fn(item) for item in items]

    def close(self) -> None:
        """Release workers (idempotent)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SerialExecutor = Executor


class LocalExecutor(Executor):
    """Worker processes on this machine (spawned: onnxruntime's threads do not survive fork).

    One task alone runs in this process: a worker's start-up would cost more than it saves."""

    name = "local"

    def __init__(self, workers: int = DEFAULT_WORKERS) -> None:
        self.workers = max(1, min(workers, os.cpu_count() or 1))
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1 or self.workers == 1:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent, initargs=(os.getpid(),),
            )
        futures = [self._pool.submit(fn, item) for item in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        finally:
            # Idle workers keep what their last task held (1.3-1.5 GB each after pricing the
            # options of an 88 MB ResNet-50) while the search builds its plans in this process:
            # released now; a later map starts new ones.
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            # cancel_futures: Ctrl-C leaves no queued work behind; running tasks finish and exit.
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


#: How often a worker checks that the process that started it still runs.
PARENT_POLL_SECONDS = 1.0


def _exit_with_parent(parent: int) -> None:
    """In each worker: exit once ``parent`` is gone. A parent killed outright (SIGKILL: a CI
    timeout, the OOM killer) cannot shut its pool down, and its workers went on pricing options
    (two of them held 1.6 GB for 37 minutes after an auto run on a U-Net was killed)."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class RayExecutor(Executor):
    """Tasks as Ray remote functions on the cluster at ``address`` ("auto": the one this machine
    belongs to; "local": start one here). Ray is imported only when this executor is made."""

    name = "ray"

    def __init__(self, address: str = "auto", **init_options: Any) -> None:
        try:
            import ray
        except ImportError as e:
            raise ConfigError("--ray needs Ray, which is not installed.",
                              hint="pip install 'onnxcompress[distributed]'") from e
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs = dict(init_options)
            if address != "local":
                kwargs["address"] = address
            kwargs.setdefault("log_to_driver", False)
            try:
                ray.init(**kwargs)
            except Exception as e:  # Ray raises ConnectionError, RuntimeError... by version
                raise ConfigError(f"--ray {address}: cannot connect to the Ray cluster ({e}).",
                                  hint="start one with 'ray start --head', or use --ray local") from e
            self._started = True

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        remote = self._ray.remote(fn)
        return list(self._ray.get([remote.remote(item) for item in items]))

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def make_executor(ray: str | None = None, workers: int = DEFAULT_WORKERS) -> Executor:
    """The executor the CLI options ask for: Ray at ``ray`` when given, else local processes."""
    if ray:
        return RayExecutor(ray)
    return LocalExecutor(workers)
