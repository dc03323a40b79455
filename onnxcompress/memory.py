"""onnxruntime session memory: what a model occupies once loaded and run, measured in a fresh process.

The number users compress for is resident memory at run time, not the file: onnxruntime folds a
decode graph (k-means indices, weight-only int8) back into float constants at load, so a file four
times smaller can occupy as much memory as the original, or more while the fold holds the
intermediates. Each model is measured in its own child process (a process never returns freed
memory reliably, so two sessions in one process would blur each other):

- ``resident_bytes``: resident set after the session was created and ran one sample, less the
  process's resident set just before the session was created (Python, numpy, onnxruntime);
- ``peak_bytes``: the high-water mark over the same span (session creation folds constants,
  which can need transient memory well above what stays resident);
- ``live_bytes``: the resident set once the C allocator has returned the free memory it holds
  (glibc's ``malloc_trim``), less the same baseline: what the session's live objects occupy. With
  glibc's defaults the copies onnxruntime frees while it folds a decode graph at load stay in the
  heap, so ``resident_bytes`` moves by several MB from process to process (nudenet, fp32: resident
  41-44 MB over three runs, live 33.4 MB each time; its k-means 4-bit file: 52 MB resident, 33.8
  live). None where the allocator has no ``malloc_trim``.

``pin_allocator=True`` runs the child with glibc's mmap threshold pinned at its starting value
(``MALLOC_MMAP_THRESHOLD_``): for comparing two files, not for what a user's process occupies.
With the default (dynamic) threshold, whether a large buffer comes from the brk heap or its own
mmap depends on which large buffer was freed first, and a heap buffer freed under a live one stays
resident even after ``malloc_trim``: live memory of one file is bimodal (resnet_digits: 11.45 or
12.22 MB over eight children of one parent, the share of each mode moving with the file's path
and the feed; its auto plan 12.55 or 13.19). Pinned, every buffer of 128 KB and more is its own
mapping, returned when freed, and the same children read 11.44-11.48 and 12.52-12.57 MB: the low
mode. Resident memory comes closer to live too (benchmarks/results/memory_live.md).

A process pays about 1 MB once, the first time onnxruntime folds a decode graph at load (skl2onnx's
19 KB MLP surrogate: fp32 +11.8 MB, its int8, k-means 8 and fp16-storage files +13.0 MB; in a
process that loaded the fp16 file first, the int8 file costs +0.4 MB and fp32 +0.2): not the
arena (the same with it off) nor the decoded weights (the optimized graphs hold the same bytes).
On a model of a few MB that one-off is the whole excess a report shows.

Measurement is best effort: where the model cannot run on the inputs given or guessed, the numbers
are taken after session creation alone and ``ran`` is False; where no measurement is possible
(no /proc, the child failed) a ``MemoryResult`` is returned with ``error`` set, never raised.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Memory is read after a run on each of up to this many samples (``guard_reading``: the pages of
# a memory-mapped table come in as samples reach them); the guards and the reports alike.
READING_SAMPLES = 16

# One rule for "needs no more session memory than the original", for the guards (auto's layer
# back-off, quantize's int8-compute check) and the reports alike: within SLACK_FRACTION of the
# original's live memory plus SLACK_BYTES. Pinned live readings of one file move by 0.01-0.05
# MB child to child (ppocr_det, bert_tiny, the examples; five readings each), but a compressed
# file's fixed costs move with the environment: folding sub-8-bit decodes at load can grow
# onnxruntime's arena by a chunk (~1 MB: kv_decoder's k-means 5 16.0 MB with the arena, 14.9
# without), and a fresh install read tiny test models' plans 0.5-1 MB over where this one did
# not. So the slack covers one such chunk. (The reports had max(2%, 512 KB), the guards 2% + 1
# MB: kv_decoder's auto plan passed the guard and its report said it needed more.)
SLACK_FRACTION = 0.02
SLACK_BYTES = 1 << 20


def guard_limit(original_bytes: int) -> float:
    """The most session memory a compressed model may need against the original's reading."""
    return original_bytes * (1 + SLACK_FRACTION) + SLACK_BYTES


def report_excess(original_bytes: int, compressed_bytes: int) -> bool:
    """Whether a report calls ``compressed_bytes`` more than ``original_bytes`` (``guard_limit``)."""
    return compressed_bytes > guard_limit(original_bytes)


# A child that takes longer than this is abandoned (a huge model on a slow disk).
DEFAULT_TIMEOUT_SECONDS = 600.0
# glibc's starting mmap threshold (M_MMAP_THRESHOLD); set explicitly, it stops moving.
PINNED_MMAP_THRESHOLD = 128 << 10


@dataclass
class MemoryResult:
    """Session memory of one model (bytes), or why it could not be measured."""

    resident_bytes: int | None = None
    peak_bytes: int | None = None
    live_bytes: int | None = None  # resident after the allocator returned its free memory
    ran: bool = False  # whether one inference ran (else: after session creation only)
    note: str | None = None  # why the sample did not run, when it did not
    error: str | None = None  # why nothing could be measured

    @property
    def measured(self) -> bool:
        return self.error is None and self.resident_bytes is not None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _status_kib(field_name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return None


def _reset_peak() -> bool:
    """Reset VmHWM so the peak covers only the session (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> bool:
    """Return the C allocator's free memory to the system (glibc's ``malloc_trim(0)``: the top of
    the heap and free pages inside it); False where there is no such call."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


def _measure_here(model_path: str, feeds_path: str | None, threads: int | None) -> dict[str, Any]:
    """Runs in the child process: load onnxruntime, then measure one session."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
    trims = _trim_heap()  # the baseline without the imports' free memory, as the live reading
    before = _status_kib("VmRSS")
    if before is None:
        return {"error": "no /proc/self/status on this system"}
    peak_reset = _reset_peak()
    session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    ran, note = False, None
    try:
        feeds = _read_feeds(feeds_path) if feeds_path is not None else [_guess_feed(session)]
        for feed in feeds:
            session.run(None, feed)
            ran = True
    except Exception as e:  # the model cannot run on these inputs: creation memory only
        text = str(e).strip()
        note = f"no sample ran ({text.splitlines()[0][:200] if text else type(e).__name__})"
    after = _status_kib("VmRSS") or before
    peak = _status_kib("VmHWM") if peak_reset else None
    live = _status_kib("VmRSS") if trims and _trim_heap() else None
    del session
    return {
        "resident_bytes": max(0, after - before) * 1024,
        "peak_bytes": max(0, peak - before) * 1024 if peak is not None else None,
        "live_bytes": max(0, live - before) * 1024 if live is not None else None,
        "ran": ran,
        "note": note,
    }


# Samples are stored in one npz as "<index>|<input name>" (an input name may hold any character).
_SAMPLE_SEPARATOR = "|"


def _write_feeds(path: str, feeds: list[dict[str, Any]]) -> None:
    import numpy as np

    np.savez(path, **{f"{i}{_SAMPLE_SEPARATOR}{k}": np.asarray(v)
                      for i, feed in enumerate(feeds) for k, v in feed.items()})


def _read_feeds(path: str) -> list[dict[str, Any]]:
    import numpy as np

    feeds: dict[int, dict[str, Any]] = {}
    with np.load(path) as data:
        for key in data.files:
            index, name = key.split(_SAMPLE_SEPARATOR, 1)
            feeds.setdefault(int(index), {})[name] = data[key]
    return [feeds[i] for i in sorted(feeds)]


_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}


def _guess_feed(session: Any) -> dict[str, Any]:
    """Zeros of each input's declared shape, dynamic dims as 1 (only used when no sample is given)."""
    import numpy as np

    feed = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
        feed[arg.name] = np.zeros(shape, dtype=_ORT_TYPES.get(arg.type, "float32"))
    return feed


# Model files up to this size are parsed to find their external-data files (a larger one holds
# its weights inline).
_LISTED_MAX_BYTES = 64 << 20


def _read_from_disk(path: str | os.PathLike) -> None:
    """Write the model's files out and drop them from the page cache, so the child maps them as
    read from disk. onnxruntime maps external data, and how many of its pages a run brings in
    depends on how the page cache holds the file: sre_embed's auto plan read 66.9 MB just
    after it was written and 60.9 MB once read back from disk (the original, long on disk:
    63.7), so a plan written a moment ago compared unlike with its original."""
    from onnxcompress.model import model_files

    files = [Path(path)]
    try:
        if files[0].stat().st_size <= _LISTED_MAX_BYTES:
            files = model_files(path)
    except Exception:  # noqa: BLE001 - the child reports an unreadable file
        return
    for file in files:
        try:
            fd = os.open(file, os.O_RDONLY)
        except OSError:
            continue
        try:
            with contextlib.suppress(OSError):  # a read-only file system: nothing to write out
                os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except (OSError, AttributeError):  # no posix_fadvise here: read as the cache holds it
            return
        finally:
            os.close(fd)


def session_memory(
    model_path: str | os.PathLike,
    feed: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
    *,
    threads: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    pin_allocator: bool = False,
) -> MemoryResult:
    """Session memory of the model file at ``model_path``, measured in a child process.

    ``feed``: one sample (input name -> array) to run, or several run one after another (the
    pages of a memory-mapped table a Gather reads come in as the samples reach them: see
    ``guard_reading``); without it, zeros of the declared shapes
    (dynamic dims as 1) are tried, and where the model cannot run on them only the memory after
    session creation is reported (``ran=False``). ``pin_allocator``: glibc's mmap threshold
    pinned in the child (readings that compare between files; see the module's docstring).
    """

    env = None
    if pin_allocator:  # read by glibc at the child's start; other C libraries ignore it
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(PINNED_MMAP_THRESHOLD)}

    _read_from_disk(model_path)
    with tempfile.TemporaryDirectory(prefix="onnxcompress-mem-") as tmp:
        feeds_path = None
        if feed is not None:
            feeds_path = str(Path(tmp) / "feed.npz")
            _write_feeds(feeds_path, [feed] if isinstance(feed, dict) else list(feed))
        result_path = Path(tmp) / "result.json"
        args = [sys.executable, "-m", "onnxcompress.memory", str(model_path), "--out", str(result_path)]
        if feeds_path:
            args += ["--feed", feeds_path]
        if threads is not None:
            args += ["--threads", str(threads)]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, env=env)
        except (OSError, subprocess.TimeoutExpired) as e:
            return MemoryResult(error=f"could not measure session memory: {e}")
        if done.returncode != 0 or not result_path.is_file():
            why = (done.stderr.strip().splitlines() or ["the measuring process failed"])[-1][:300]
            return MemoryResult(error=f"could not measure session memory: {why}")
        values = json.loads(result_path.read_text(encoding="utf-8"))
    if "error" in values:
        return MemoryResult(error=values["error"])
    return MemoryResult(**values)


def compare_session_memory(
    original: str | os.PathLike,
    compressed: str | os.PathLike,
    feed: dict[str, Any] | None,
    feed_compressed: dict[str, Any] | None,
    *,
    threads: int | None = None,
) -> dict[str, Any]:
    """Session memory of two model files, one child process each: ``{"original": {...},
    "compressed": {...}, "resident_ratio", "peak_ratio"}``, the ratios original / compressed
    like the size ratios of the reports (above 1: the compressed model needs less), None where
    a number is missing."""
    a = session_memory(original, feed, threads=threads)
    b = session_memory(compressed, feed_compressed, threads=threads)
    out: dict[str, Any] = {"original": a.to_dict(), "compressed": b.to_dict()}
    if a.live_bytes and b.live_bytes and report_excess(a.live_bytes, b.live_bytes):
        # The default allocator's live reading has two modes (see pin_allocator above): an
        # excess is read again with the threshold pinned before a report says "needs more"
        # (nemo128 static int8: 12.89 MB against 12.28 unpinned, 12.35 against 12.28 pinned).
        pa = session_memory(original, feed, threads=threads, pin_allocator=True)
        pb = session_memory(compressed, feed_compressed, threads=threads, pin_allocator=True)
        if pa.live_bytes and pb.live_bytes:
            out["original"]["live_bytes_pinned"] = pa.live_bytes
            out["compressed"]["live_bytes_pinned"] = pb.live_bytes
    for key in ("resident_bytes", "peak_bytes", "live_bytes"):
        va, vb = getattr(a, key), getattr(b, key)
        ok = a.measured and b.measured and va is not None and bool(vb)
        out[key.replace("_bytes", "_ratio")] = round(va / vb, 4) if ok else None
    return out


def guard_reading(path: str | os.PathLike, feed: dict[str, Any] | Sequence[dict[str, Any]],
                  repeats: int = 3) -> int | None:
    """The guards' reading of the model at ``path`` after a run on each sample of ``feed`` (one
    sample, or several) (bytes): live memory with the allocator pinned where it can be trimmed,
    else the least resident reading of ``repeats`` children; None when it cannot be measured.

    Several samples, because onnxruntime maps external data into memory and a Gather over a
    mapped table brings in its pages (2 MB at a time here) only as samples reach them: after one
    sentence, sre_embed's fp32 word table (44 MB) had 1 MB resident and the int8 table of its
    auto plan (11 MB) 7 MB, so every compressed form read 1.11x the original; after its 24
    calibration sentences the original reads 66 MB resident and auto's plan 65."""
    feeds = [dict(feed)] if isinstance(feed, dict) else [dict(f) for f in feed]
    values = []
    for _ in range(repeats):
        m = session_memory(path, feeds, threads=1, pin_allocator=True)
        if not m.measured or m.resident_bytes is None:
            logger.info("session memory not measured: %s", m.error)
            return None
        if m.live_bytes is not None:
            return m.live_bytes
        values.append(m.resident_bytes)
    return min(values)


def confirm_excess(measure: Callable[[str | os.PathLike], int | None], original: str | os.PathLike,
                   compressed: str | os.PathLike, bases: list[int], used: int,
                   readings: int) -> tuple[int, int] | None:
    """The least readings of ``original`` and of ``compressed`` after measuring both again
    alternately (``measure``: fresh children, same conditions) until ``compressed`` fits the
    least original reading (``guard_limit``) or each side has ``readings``; ``bases`` (the
    original's readings so far, ``used`` the compressed one's first) grows. The noise only adds
    (memory the allocator could not return), so the least of each is compared. None when a
    reading failed."""
    useds = [used]
    while min(useds) > guard_limit(min(bases)) and len(useds) < readings:
        base, again = measure(original), measure(compressed)
        if base is None or again is None:
            return None
        bases.append(base)
        useds.append(again)
    logger.info("session memory readings, original %s MB, compressed %s MB",
                [round(b / 2**20, 2) for b in bases], [round(u / 2**20, 2) for u in useds])
    return min(bases), min(useds)


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m onnxcompress.memory")
    parser.add_argument("model")
    parser.add_argument("--feed")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", required=True, help="where the child writes its JSON result")
    args = parser.parse_args(argv)
    result = _measure_here(args.model, args.feed, args.threads)
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
