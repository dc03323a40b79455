from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

from onnxcompress import (
    Pipeline,
    load_model,
    stats,  # noqa: I001
)
from onnxcompress.api import compress_file
from onnxcompress.model import model_files
from onnxcompress.passes import Quantize
from tests import helpers as h


def _data(n: int = 1 << 16) -> bytes:
    # Half compressible (a ramp), half not (noise): exercises both of DEFLATE's regimes.
    rng = np.random.default_rng(0)
    return np.arange(n, dtype=np.float32).tobytes() + rng.standard_normal(n).astype(np.float32).tobytes()


def test_gzip_job_gives_gzip_size_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(stats, "_CHUNK", 4096)  # many chunks: the stream must not depend on them
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(_data())
    b.write_bytes(_data(1000))
    import zlib

    # Fed in chunks, the stream is the one-shot stream of the same level.
    assert stats.gzip_size(a) == len(zlib.compress(a.read_bytes(), stats.GZIP_LEVEL))
    assert stats.GzipJob([a, b]).result() == (stats.gzip_size(a) + stats.gzip_size(b), True)
    assert stats.gzip_size(a.read_bytes()) == stats.gzip_size(a)


def test_gzip_job_waits_while_something_is_timed(tmp_path, monkeypatch):
    monkeypatch.setattr(stats, "_CHUNK", 1024)
    path = tmp_path / "a.bin"
    path.write_bytes(_data())
    with stats.timing_section():
        job = stats.GzipJob([path])
        job._thread.join(0.3)
        assert job._thread.is_alive()  # paused before its first chunk, not finished
    assert job.result() == (stats.gzip_size(path), True)


def test_gzip_job_reraises_in_the_caller(tmp_path):
    job = stats.GzipJob([tmp_path / "missing.bin"])
    with pytest.raises(FileNotFoundError):
        job.result()


def test_handed_over_model_is_rewritten_in_place_and_the_original_reread(tmp_path):
    from onnxcompress.model import to_proto
    from onnxcompress.passes.base import Pass, PassConfig
    from onnxcompress.weights import WeightIndex

    path = tmp_path / "m.onnx"
    onnx.save(h.mlp((16, 32, 10)), path)
    model = load_model(path)
    seen = {}

    class HalveSpy(Pass):  # no CLI flags: registering it adds none
        name = "test-halve-spy"
        config_class = PassConfig

        def apply(self, m, context, result):
            seen["original_is_input"] = context.original is m
            seen["original_weights"] = len(list(context.original.graph.initializers))
            for w in WeightIndex.build(m).select(roles={"weight"}):
                w.set_numpy(w.numpy() * 0.5)
                result.modified = True
            return m

    result = Pipeline([HalveSpy(PassConfig())]).run(model, source_path=path)
    assert result.model is model  # no copy of the input
    assert seen == {"original_is_input": False, "original_weights": 4}
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    x = h.rng(1).standard_normal((2, 16)).astype(np.float32)
    original = onnx.load(path)
    w0 = onnx.numpy_helper.to_array(next(t for t in original.graph.initializer if t.name == "fc0.weight"))
    halved = onnx.numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "fc0.weight"))
    np.testing.assert_array_equal(halved, w0 * 0.5)
    assert h.run(proto, {"x": x})[0].shape == h.run(str(path), {"x": x})[0].shape


def test_compress_file_reports_gzip_sizes_of_both_files(tmp_path):
    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(h.mlp((64, 128, 10)), src)
    report = compress_file(src, dst, Pipeline([Quantize(mode="weights", speed_check=False)]))
    assert report.before.gzip_bytes == stats.gzip_size(src)
    assert report.after.gzip_bytes == stats.gzip_size(dst)
    assert report.to_dict()["gzip_level"] == stats.GZIP_LEVEL
    assert f"gzip -{stats.GZIP_LEVEL} size" in report.render()
    onnx.checker.check_model(onnx.load(dst))
    feeds = {"x": h.rng(1).standard_normal((2, 64)).astype(np.float32)}
    np.testing.assert_allclose(h.run(dst, feeds)[0], h.run(src, feeds)[0], rtol=0.05, atol=0.05)


def test_compress_file_parses_the_input_once(tmp_path, monkeypatch):
    # The size report lists the input's files (external data included) from the proto
    # load_model parsed (model.MODEL_FILES), not from a second parse of the file.
    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    h.save_with_external_data(h.mlp((64, 128, 10)), src)
    parsed: list[str] = []
    real_load = onnx.load

    def counting_load(f, *args, **kwargs):
        parsed.append(str(f))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(onnx, "load", counting_load)
    report = compress_file(src, dst, Pipeline([Quantize(mode="weights", speed_check=False)]))
    assert parsed.count(str(src)) == 1
    files = [src, *(p for p in tmp_path.iterdir() if p.name.startswith("m.onnx."))]
    assert len(files) == 2 and report.before.files == [src, files[1]]
    assert report.before.file_bytes == sum(p.stat().st_size for p in files)
    assert report.after.files == model_files(dst)  # the output's own, not the input's


def test_large_files_gzip_size_is_estimated_from_samples(tmp_path, monkeypatch):
    # Two files (a model and its external data), homogeneous weights: the sampled ratio holds.
    monkeypatch.setattr(stats, "GZIP_EXACT_MAX_BYTES", 1 << 18)
    monkeypatch.setattr(stats, "GZIP_WINDOW", 1 << 14)
    rng = np.random.default_rng(0)
    weights = (rng.standard_normal(1 << 18) * 16).round().astype(np.float32)  # compressible floats
    a, b = tmp_path / "m.onnx", tmp_path / "m.onnx.data"
    a.write_bytes(weights[:1000].tobytes())
    b.write_bytes(weights[1000:].tobytes())
    exact = stats.gzip_size(a) + stats.gzip_size(b)
    estimate, is_exact = stats.gzip_files([a, b])
    assert not is_exact
    assert abs(estimate - exact) < 0.05 * exact
    assert exact < 0.8 * (a.stat().st_size + b.stat().st_size)  # the data does compress
    monkeypatch.setattr(stats, "GZIP_EXACT_MAX_BYTES", 1 << 30)
    assert stats.gzip_files([a, b]) == (exact, True)


def test_progress_estimates_the_time_left_once_a_stage_runs_long(caplog):
    import logging

    from onnxcompress.progress import ETA_AFTER, ProgressLog

    now = [0.0]
    progress = ProgressLog(interval=0.0, heartbeat=5.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="onnxcompress.progress"):
        progress("quantize", 0, 10)
        now[0] = 3.0
        progress("quantize", 1, 10)  # too early for an estimate
        now[0] = ETA_AFTER + 2  # 4 weights in 12 s: 3 s a weight, 6 left
        progress("quantize", 4, 10)
        now[0] += 7  # nothing for 7 s: the heartbeat's estimate counts that time as spent
        beat = progress.beat()
        progress("quantize", 10, 10)  # done: no estimate
        progress("save", 0, 100)
        now[0] += 400
        progress("save", 1, 100)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:3] == ["quantize [0/10]", "quantize [1/10]", "quantize [4/10], ~18 s left"]
    assert beat == "still working: quantize [4/10] (19 s, ~11 s left)"
    # 400 s for 1 of 100 steps: 99 x 400 s left
    assert messages[3:] == [beat, "quantize [10/10]", "save [0/100]", "save [1/100], ~660 min left"]
