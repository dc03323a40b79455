"""Large models probe one reference option per layer and price the others by weight error; a
callable target works through the API."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from onnxcompress.auto import SerialExecutor, search
from tests.auto._common import CALIB, EVAL, MODELS, top1


def test_reference_probe_and_callable_target(monkeypatch: pytest.MonkeyPatch) -> None:
    # the module (the package's ``search`` is the function)
    module = importlib.import_module("onnxcompress.auto.search")
    monkeypatch.setattr(module, "PROBE_ALL_MAX_PAIRS", 0)
    extrapolated: list[dict] = []
    original = module._extrapolate

    def spy(measured: list) -> None:
        original(measured)
        extrapolated.extend({m.candidate: dict(m.deviation) for m in measured}.items())

    monkeypatch.setattr(module, "_extrapolate", spy)
    calls = []

    def agreement(orig, comp) -> float:  # noqa: ANN001
        calls.append(1)
        (a,), (b,) = orig.values(), comp.values()
        return float((a.argmax(1) == b.argmax(1)).mean())

    model = MODELS / "digits_mlp.onnx"
    found = search(model, str(CALIB), target=agreement, target_threshold=0.98, validate_data=str(EVAL),
                   executor=SerialExecutor())
    assert found.met and calls
    assert found.target == "agreement>=0.98"
    deviations = dict(extrapolated)
    assert set(deviations) >= {"kmeans2", "kmeans4", "kmeans8", "int8"}
    for label in ("fc1.weight", "fc2.weight", "fc3.weight"):  # fewer bits, more deviation
        assert deviations["kmeans2"][label] > deviations["kmeans4"][label] > deviations["kmeans8"][label] > 0
    # every option of every layer got a deviation (the unprobed ones extrapolated), ordered by bits
    rows = {r["layer"]: r for r in found.layers}
    assert set(rows) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert all(r["choice"] != "float" for r in rows.values())
    from onnxcompress.model import to_proto
    from onnxcompress.pipeline import Pipeline

    out = Pipeline.from_recipe(found.recipe).run(model, calibration=str(CALIB)).model
    assert top1(model, to_proto(out).SerializeToString()) >= 0.98
    assert np.isfinite(found.fidelity.margin)


def test_a_layer_the_probe_does_not_see_is_priced_not_free(tmp_path) -> None:
    """RetinaFace's coarse-level heads moved nothing on a probe sample whose faces were all small
    (its deviation is read at the positive anchors): k-means 2 on those 16 layers looked free,
    broke every large face, and auto backed off to 1.26x. A changed layer that moves nothing the
    probe reads is priced like a layer the probe cannot feed: the median sensitivity times its
    weight error."""
    import onnx
    import onnx.parser

    from onnxcompress.auto.candidates import measure_candidate
    from onnxcompress.auto.measure import save_feeds
    from tests import helpers as h

    module = importlib.import_module("onnxcompress.auto.search")
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 32] x, float[N, 32] z) => (float[N, 16] y, float[N, 16] w) {
            y = MatMul(x, a)
            w = MatMul(z, b)
        }
    """)
    r = np.random.default_rng(0)
    model = h.attach_initializers(model, {"a": r.standard_normal((32, 16)).astype(np.float32),
                                          "b": r.standard_normal((32, 16)).astype(np.float32)})
    for i, node in enumerate(model.graph.node):  # as search names them before pricing
        node.name = f"mm{i}"
    onnx.save(model, tmp_path / "base.onnx")
    # the probe's sample never exercises b (z is all zeros there): its change moves nothing
    feeds = [{"x": r.standard_normal((1, 32)).astype(np.float32), "z": np.zeros((1, 32), np.float32)}]
    save_feeds(tmp_path / "probe.npz", feeds)
    np.savez(tmp_path / "calib.npz", x=r.standard_normal((4, 1, 32)).astype(np.float32),
             z=r.standard_normal((4, 1, 32)).astype(np.float32))
    measured = measure_candidate({
        "candidate": "kmeans2", "base": str(tmp_path / "base.onnx"), "labels": ["a", "b"],
        "calibration": str(tmp_path / "calib.npz"), "probe": str(tmp_path / "probe.npz"),
        "calibration_samples": 4})
    assert measured.weight_error["b"] > 0 and "b" not in measured.deviation
    assert measured.deviation["a"] > 0
    module._fill_unprobed([measured])
    sensitivity = measured.deviation["a"] / measured.weight_error["a"]
    assert measured.deviation["b"] == pytest.approx(sensitivity * measured.weight_error["b"], rel=1e-4)


def test_prices_leave_out_the_exporters_metadata(tmp_path) -> None:
    """Every pipeline run drops an exporter's per-node metadata whatever the option; priced from
    a base that still had it, those bytes were spread over the changed layers as savings (a
    torch 2.13 export's 111 KB priced its float16 layers at 1 byte, and auto chose them)."""
    import onnx

    from onnxcompress.auto import SerialExecutor
    from onnxcompress.data import feed_source
    from onnxcompress.model import load_model

    module = importlib.import_module("onnxcompress.auto.search")
    proto = onnx.load(str(MODELS / "digits_mlp.onnx"))
    for node in proto.graph.node:  # what torch's exporter writes on every node
        onnx.helper.set_metadata_props(node, {"pkg.torch.onnx.fx_node": "%x = call_function" * 400})
    model = load_model(proto)
    feeds = [dict(f) for f in feed_source(str(CALIB), model)][:8]
    measured = module._measure(tmp_path, model, feeds, feeds, "size", 0, SerialExecutor(),
                               lambda *a: None)
    half = next(m for m in measured if m.candidate == "fp16")
    for label, after in half.bytes_after.items():  # float16: half the bytes, and its Cast
        assert half.bytes_before[label] // 2 <= after < half.bytes_before[label] // 2 + 512, label


def test_a_slow_model_probes_the_reference_option_only(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Probing every option of every layer costs pairs x PROBE_SAMPLES forward passes: fns_candy's
    720x720 pictures (17 layers x 10 options x 8 samples at ~1 s) took over 20 minutes. Past
    PROBE_ALL_SECONDS of them (the original's time a sample, measured on the search data), only
    the reference option is probed and the others are extrapolated, as for many pairs."""
    from onnxcompress.data import feed_source
    from onnxcompress.model import load_model

    module = importlib.import_module("onnxcompress.auto.search")
    calls: list[int] = []
    original = module._extrapolate
    monkeypatch.setattr(module, "_extrapolate", lambda measured: (calls.append(1), original(measured)))
    model = load_model(MODELS / "digits_mlp.onnx")
    feeds = [dict(f) for f in feed_source(str(CALIB), model)][:8]
    for seconds, extrapolated in ((0.001, False), (1.0, True)):  # 30 pairs x 8 samples: 0.24 s, 240 s
        calls.clear()
        measured = module._measure(tmp_path, model, feeds, feeds, "size", 0, SerialExecutor(),
                                   lambda *a: None, sample_seconds=seconds)
        assert bool(calls) == extrapolated
        probed = {m.candidate for m in measured if m.deviation}
        assert probed >= {"kmeans4", "int8"}  # every option gets a deviation either way
