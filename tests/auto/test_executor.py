"""The executors give the same measurements: serial, local worker processes, and Ray (skipped
when Ray is not installed; then through a local Ray cluster of 2 CPUs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxcompress.auto import LocalExecutor, SerialExecutor
from onnxcompress.auto.candidates import candidate_weights, measure_candidate
from onnxcompress.auto.measure import save_feeds
from onnxcompress.data import feed_source
from onnxcompress.model import load_model
from tests.auto._common import CALIB, EVAL, MODELS

MODEL = MODELS / "digits_mlp.onnx"


def _tasks(tmp: Path) -> list[dict]:
    model = load_model(MODEL)
    feeds = [dict(f) for f in feed_source(str(CALIB), model)]
    save_feeds(tmp / "probe.npz", feeds[:4])
    labels = [w.label for w in candidate_weights(model)]
    return [{"candidate": c, "base": str(MODEL), "labels": labels, "calibration": str(CALIB),
             "probe": str(tmp / "probe.npz"), "calibration_samples": 16} for c in ("kmeans3", "int8")]


def _key(measured: list) -> list:
    return [(m.candidate, m.bytes_before, m.bytes_after, m.deviation) for m in measured]


def test_local_executor_equals_serial(tmp_path: Path) -> None:
    tasks = _tasks(tmp_path)
    serial = SerialExecutor().map(measure_candidate, tasks)
    with LocalExecutor(workers=2) as ex:
        local = ex.map(measure_candidate, tasks)
        # the workers are released once their tasks are done (idle, they held 1.3-1.5 GB each
        # of an 88 MB ResNet-50's pricing while the search built its plans)
        assert ex._pool is None
        again = ex.map(measure_candidate, tasks[:2])
    assert _key(local) == _key(serial) and _key(again) == _key(serial[:2])
    by = {m.candidate: m for m in serial}
    assert set(by["kmeans3"].deviation) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert all(by["int8"].bytes_after[k] * 3 < by["int8"].bytes_before[k] for k in by["int8"].bytes_after)
    # 3-bit sharing moves the outputs more than int8 does, on every layer
    assert all(by["kmeans3"].deviation[k] > by["int8"].deviation[k] > 0 for k in by["int8"].deviation)


def test_ray_search_gives_the_local_plan() -> None:
    ray = pytest.importorskip("ray")
    from onnxcompress.auto import RayExecutor, search

    kwargs = {"target": "top1>=0.99", "validate_data": str(EVAL)}
    with LocalExecutor(workers=2) as ex:
        local = search(MODEL, str(CALIB), executor=ex, **kwargs)
    ex = RayExecutor("local", num_cpus=2, include_dashboard=False)
    try:
        remote = search(MODEL, str(CALIB), executor=ex, **kwargs)
    finally:
        ex.close()
    assert not ray.is_initialized()
    assert remote.plan.choices == local.plan.choices
    assert remote.recipe == local.recipe
    assert remote.met and local.met


def _report_pid_and_sleep(path: str) -> None:
    import os
    import time

    Path(path, f"{os.getpid()}.pid").write_text("")
    time.sleep(60)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="reads /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    """A parent killed outright (SIGKILL) cannot shut its pool down; its workers exit on their own
    (two went on for 37 minutes, holding 1.6 GB, after an auto run was killed)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    code = ("import sys; from onnxcompress.auto import LocalExecutor; "
            "from tests.auto.test_executor import _report_pid_and_sleep as f; "
            f"LocalExecutor(workers=2).map(f, [{str(tmp_path)!r}] * 2)")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("*.pid"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [int(p.stem) for p in tmp_path.glob("*.pid")]
        assert len(workers) == 2
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        status = Path(f"/proc/{pid}/status")
        return status.exists() and "zombie" not in status.read_text()

    deadline = time.monotonic() + 10
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(alive, workers))
