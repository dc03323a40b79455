"""Issue 18: every pass processes an external-data model one weight at a time (no two weights'
float data alive at once), checked with the read instrument of tests/streaming.py. k-means has
its own test (tests/passes/test_weight_sharing.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxcompress import Pipeline, load_model
from onnxcompress.model import to_proto
from onnxcompress.weights import WeightIndex
from tests import helpers as h
from tests.streaming import track_weight_reads

SIZES = (256, 256, 256, 256, 256, 10)
# (recipe step, takes calibration data, output tolerance)
PASSES = {
    "prune": ({"pass": "prune", "sparsity": 0.5}, False, 1.0),
    "prune-channel": ({"pass": "prune", "sparsity": 0.5, "pattern": "channel"}, False, 1.5),
    "quantize-dynamic": ({"pass": "quantize", "mode": "dynamic", "speed_check": False}, False, 0.2),
    "quantize-static": ({"pass": "quantize", "mode": "static", "speed_check": False}, True, 0.3),
    "quantize-weights": ({"pass": "quantize", "mode": "weights", "speed_check": False}, False, 0.2),
    "blockq": ({"pass": "blockq"}, False, 0.5),
    "float16": ({"pass": "float16", "enabled": True}, False, 0.05),
}


@pytest.fixture(autouse=True)
def as_if_large(monkeypatch):
    """The checks that run a model whole (the int8 fidelity guard, the float16 check, the speed
    guards) skip models past their size limits, not external-data ones as such (a 6.7 MB dynamo
    export has external data): these tests take the small model here for a large one."""
    from onnxcompress import model as model_module
    from onnxcompress.passes import _speed

    monkeypatch.setattr(model_module, "WHOLE_CHECK_MAX_BYTES", 0)
    monkeypatch.setattr(_speed, "EXTERNAL_DATA_THRESHOLD", 0)

@pytest.fixture
def external_mlp(tmp_path):
    model = h.mlp(SIZES)
    path = tmp_path / "ext.onnx"
    external = onnx.ModelProto.FromString(model.SerializeToString())  # save() rewrites its input
    onnx.save(external, path, save_as_external_data=True, location="ext.onnx.data", size_threshold=1024)
    return model, path


@pytest.mark.parametrize("name", list(PASSES))
def test_pass_reads_one_weight_at_a_time(name, external_mlp, monkeypatch):
    model, path = external_mlp
    step, calibrated, tol = PASSES[name]
    rng = np.random.default_rng(0)
    calibration = [{"x": rng.standard_normal((1, SIZES[0])).astype(np.float32)} for _ in range(4)]
    loaded = load_model(path)
    assert sum(w.is_external for w in WeightIndex.build(loaded)) >= 5
    tracker = track_weight_reads(monkeypatch)
    result = Pipeline.from_recipe({"passes": [step]}).run(
        loaded, calibration=calibration if calibrated else None)
    monkeypatch.undo()
    assert result.passes[0].layers, result.passes[0].to_dict()  # it did change weights
    assert len(set(tracker.reads)) >= 3  # the instrument saw the weights being read (prune keeps
    # the first and last layers)
    assert tracker.overlaps == []
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    feeds = {"x": rng.standard_normal((2, SIZES[0])).astype(np.float32)}
    np.testing.assert_allclose(h.run(proto, feeds)[0], h.run(model, feeds)[0], rtol=tol, atol=tol)


def _capture_sessions(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Record how runtime creates onnxruntime sessions (their options), creating them as usual."""
    import onnxruntime as ort

    from onnxcompress import runtime

    made: list[dict] = []
    real = ort.InferenceSession

    def session(model, opts, providers=None, **kw):  # noqa: ANN001, ANN202
        made.append({"model": model, "opts": opts, **kw})
        return real(model, opts, providers=providers, **kw)

    monkeypatch.setattr(runtime.ort, "InferenceSession", session)
    return made


def test_load_check_of_a_large_output_is_lean(tmp_path, monkeypatch):
    """The written output of an external-data input is checked without the load-time copies
    onnxruntime would make: folded int8/float16 weights back in float32 and packed weights
    (a 0.3 GB stack's int8 weights: 3.6x its size at the check; float16: 2.4x)."""
    from onnxcompress import pipeline
    from onnxcompress.api import compress_file

    src = h.save_with_external_data(h.mlp(SIZES), tmp_path / "in.onnx")
    monkeypatch.setattr(pipeline, "DEFER_ORT_CHECK_BYTES", 0)  # checked on the file, as if large
    made = _capture_sessions(monkeypatch)
    out = tmp_path / "out.onnx"
    compress_file(src, out, Pipeline.from_recipe({"passes": [{"pass": "float16", "enabled": True}]}),
                  progress=lambda *a: None)
    monkeypatch.undo()
    checks = [m for m in made if isinstance(m["model"], str) and m["model"] == str(out)]
    assert len(checks) == 1
    assert {"ConstantFolding", "FuseFp16InitializerToFp32NodeTransformer"} <= set(
        checks[0]["disabled_optimizers"])
    assert checks[0]["opts"].get_session_config_entry("session.disable_prepacking") == "1"
    onnx.checker.check_model(str(out))
    feeds = {"x": np.random.default_rng(0).standard_normal((2, SIZES[0])).astype(np.float32)}
    got = h.run(out, feeds)[0]
    np.testing.assert_allclose(got, h.run(h.mlp(SIZES), feeds)[0], rtol=0.05, atol=0.05)


def test_session_of_an_external_model_reads_its_files_in_place(external_mlp, monkeypatch):
    """A session of a large in-memory model maps the input's external data where it is, with
    the tensors a pass made inline: no copy of the model is written to a temporary folder."""
    from onnxcompress import runtime

    model, path = external_mlp
    loaded = load_model(path)
    first = next(w for w in WeightIndex.build(loaded) if w.is_external and len(w.shape) == 2)
    changed = (first.numpy() * 0.5).astype(np.float32)
    first.set_numpy(changed)  # one tensor in memory, the rest external

    def no_copy(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the model was saved to be loaded")

    monkeypatch.setattr(runtime, "save_model", no_copy)
    session = runtime.create_session(loaded)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, SIZES[0])).astype(np.float32)}
    proto = onnx.ModelProto.FromString(model.SerializeToString())
    for t in proto.graph.initializer:
        if t.name == first.name:
            t.CopyFrom(onnx.numpy_helper.from_array(changed, t.name))
    np.testing.assert_allclose(session.run(None, feeds)[0], h.run(proto, feeds)[0], rtol=1e-5, atol=1e-5)


def test_speed_guard_does_not_time_a_large_model(external_mlp):
    """The speed guard's timing sessions held 4.6x a 0.3 GB external-data model: large models
    take the attempt chosen from op types and shapes, and say so."""
    _, path = external_mlp
    result = Pipeline.from_recipe({"passes": [{"pass": "quantize", "mode": "dynamic"}]}).run(load_model(path))
    notes = result.passes[0].notes
    assert any("speed guard did not measure (the model is large" in n for n in notes), notes
    onnx.checker.check_model(to_proto(result.model))


def test_a_small_external_data_model_is_guarded(external_mlp, monkeypatch):
    """External data alone is not a large model (PyTorch's dynamo exporter writes it whatever
    the size): the fidelity and speed guards measure it (khmersm, 6.7 MB, went unguarded)."""
    monkeypatch.undo()  # the real size limits
    _, path = external_mlp
    result = Pipeline.from_recipe({"passes": [{"pass": "quantize", "mode": "dynamic"}]}).run(load_model(path))
    notes = " ".join(result.passes[0].notes)
    assert "the model is large" not in notes and "did not measure" not in notes, notes
    assert result.passes[0].metrics["fidelity_guard"]["probed"]  # the fidelity guard measured it
    assert "latency_float_ms" in result.passes[0].metrics  # and the speed guard timed it


def test_small_external_model_gets_uint4_indices(external_mlp, monkeypatch):
    """k-means under 8 bits on a small external-data model upgrades the opset for UINT4 indices
    as it does inline (the upgrade check is off only past the whole-model checks' limit): bit
    planes held khmersm's load at 2x its fp32 session memory (batch 5)."""
    monkeypatch.undo()  # the real size limits
    _, path = external_mlp
    recipe = {"passes": [{"pass": "kmeans", "bits": 4, "min_size": 16}]}
    result = Pipeline.from_recipe(recipe).run(load_model(path))
    notes = " ".join(result.passes[0].notes)
    assert "upgraded opset" in notes and "bit-packed" not in notes, notes
    proto = to_proto(result.model, inline_external=False)
    dtypes = {t.data_type for t in proto.graph.initializer}
    assert onnx.TensorProto.UINT4 in dtypes
    assert not any(n.op_type == "BitShift" for n in proto.graph.node)


def test_output_of_an_external_input_keeps_external_data(external_mlp, tmp_path):
    """The output of an external-data input is written with external data too (onnxruntime then
    holds no protobuf copy of the weights: khmersm pruned, 1.22x its fp32 session memory inline,
    1.0x external); the CLI names the data file."""
    import subprocess
    import sys

    model, path = external_mlp
    out = tmp_path / "out" / "pruned.onnx"
    out.parent.mkdir()
    done = subprocess.run([sys.executable, "-m", "onnxcompress", "compress", str(path), "-o", str(out),
                           "--prune", "0.5", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out.parent / "pruned.onnx.data").exists()
    assert out.stat().st_size < (out.parent / "pruned.onnx.data").stat().st_size
    feeds = {"x": np.random.default_rng(0).standard_normal((2, SIZES[0])).astype(np.float32)}
    assert np.isfinite(h.run(out, feeds)[0]).all()
    done = subprocess.run([sys.executable, "-m", "onnxcompress", "compress", str(path), "-o",
                           str(tmp_path / "q.onnx"), "--quantize", "dynamic"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "wrote " + str(tmp_path / "q.onnx") + " (+ q.onnx.data)" in done.stdout
