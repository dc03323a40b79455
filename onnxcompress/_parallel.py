"""Chunk loops of one weight on every core: numpy releases the GIL in its array operations
(bincount, take, ufuncs, reductions), so threads over a weight's chunks run in parallel while
only that weight is in memory (issue 18: one weight at a time, all cores used).

:func:`ordered_map` yields results in input order, so a caller that accumulates them (float
sums) adds them in the same order as a serial loop: the numbers are the same bit for bit.
``ONNXCOMPRESS_THREADS`` sets the number of threads (1: serial); default: the CPUs this process
may use, at most :data:`MAX_THREADS`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_THREADS = 8
_pool: ThreadPoolExecutor | None = None


def threads() -> int:
    """How many threads chunk loops use."""
    env = os.environ.get("ONNXCOMPRESS_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_THREADS))


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool._max_workers != n:  # noqa: SLF001 - resized when the setting changes
        _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="onnxcompress")
    return _pool


def ordered_map(fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``map(fn, items)`` on the thread pool, in order, with at most twice the threads' worth
    of results pending (each holds a chunk's temporaries)."""
    n = threads()
    if n == 1:
        yield from map(fn, items)
        return
    pool = _executor(n)
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= 2 * n:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
