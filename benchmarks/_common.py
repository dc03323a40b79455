"""Helpers shared by the benchmark scripts and ``benchmarks/run.py``: onnxruntime sessions, the
alternating latency ratio, session memory, a compression run in a fresh child process (wall time,
peak RSS, last error line), the calibration reader for onnxruntime's quantizer, git provenance.

These were copies in several ``bench_*.py`` scripts; they live here once and the scripts import
them. Only numpy + onnxruntime at import time (``onnxcompress.memory`` is imported lazily).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

# The real third-party and exported models with their calibration/eval data and task metrics
# (made by scripts/real_models.py); ONNXCOMPRESS_REAL_MODELS points elsewhere.
REAL_MODELS = Path(os.environ.get("ONNXCOMPRESS_REAL_MODELS", "/work/realmodels"))


class Reader:
    """An onnxruntime CalibrationDataReader over stacked samples (one sample per feed)."""

    def __init__(self, name: str, x: np.ndarray) -> None:
        self.name, self.x, self.i = name, x, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.x):
            return None
        self.i += 1
        return {self.name: self.x[self.i - 1 : self.i]}

    def rewind(self) -> None:
        self.i = 0


def peak_rss() -> int:
    """This process's peak RSS since exec (VmHWM). ru_maxrss would include the parent's RSS
    at fork time, which Linux carries across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def session(path: Path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def latency_ratio(ref: Path, new: Path, feed: dict[str, np.ndarray], seconds: float) -> dict[str, float]:
    """Median latency of ``new`` / ``ref`` on one sample, one thread each, runs alternated so
    both see the same machine load; ``spread`` is the ratio's interquartile range over rounds."""
    a, b = session(ref), session(new)
    for _ in range(2):
        a.run(None, feed)
        b.run(None, feed)
    ta, tb = [], []
    start = time.perf_counter()
    while len(ta) < 5 or (time.perf_counter() - start < seconds and len(ta) < 200):
        t0 = time.perf_counter()
        a.run(None, feed)
        t1 = time.perf_counter()
        b.run(None, feed)
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    ratios = np.array(tb) / np.array(ta)
    q1, q3 = np.percentile(ratios, [25, 75])
    return {"ratio": float(statistics.median(tb) / statistics.median(ta)), "spread": float(q3 - q1),
            "fp32_ms": float(statistics.median(ta) * 1e3), "ms": float(statistics.median(tb) * 1e3),
            "rounds": len(ta)}  # fmt: skip


def memory(path: Path, feed: dict[str, np.ndarray], pinned: bool = False) -> dict[str, Any]:
    """Session memory of ``path`` after one run on ``feed`` in a child process; ``pinned``: with
    glibc's mmap threshold pinned (``onnxcompress.memory``: readings that compare between files)."""
    try:
        from onnxcompress.memory import session_memory
    except ImportError as e:
        return {"error": f"onnxcompress.memory unavailable: {e}"}
    return session_memory(path, feed, threads=1, pin_allocator=pinned).to_dict()


def run_child(cmd: list[str], env: dict[str, str], timeout: float, log: Path,
              cwd: str | None = None) -> dict[str, Any]:
    """Run ``cmd`` (in ``cwd``: give the checkout under test, since ``python -m`` puts the working
    directory ahead of PYTHONPATH and a bench started inside another checkout measured that one);
    exit code, wall seconds, peak RSS in MB, last error line when it failed.

    Peak RSS comes from ``/usr/bin/time`` where it exists: the rusage of a direct child also
    counts the resident set it inherited from this (large) process when it forked.
    """
    rss_file = log.with_suffix(".rss")
    timer = Path("/usr/bin/time")
    full = [str(timer), "-f", "%M", "-o", str(rss_file), *cmd] if timer.exists() else cmd
    start = time.perf_counter()
    timed_out = False
    with open(log, "w") as fh:
        proc = subprocess.Popen(full, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=cwd)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            timed_out = True
    seconds = time.perf_counter() - start
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Command exited with non-zero status")]
    try:
        peak = int(rss_file.read_text().split()[-1]) / 1024
    except (OSError, ValueError, IndexError):
        peak = float("nan")
    res: dict[str, Any] = {
        "exit": proc.returncode,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak, 1),
    }
    if timed_out:
        res["error"] = f"timeout after {timeout:.0f} s"
    elif proc.returncode != 0:
        errs = [ln for ln in lines if ln.lower().startswith(("error", "onnxcompress:")) or "Error" in ln]
        res["error"] = (errs or lines or ["(no output)"])[-1].strip()[:400]
    res["log_tail"] = lines[-25:]
    return res


def git_commit(path: str) -> str:
    try:
        cmd = ["git", "-C", path, "log", "-1", "--format=%h %s"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=10)
        return out.stdout.strip()[:60]
    except (OSError, subprocess.SubprocessError):
        return "?"
