from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import CalibrationDataReader

from onnxcompress import Pipeline, load_model
from onnxcompress.calibration import CALIBRATE_METHODS, Calibrator, StreamingHistogram, collect
from onnxcompress.cpu import cpu_flags, default_reduce_range, has_vnni
from onnxcompress.data import feed_source
from onnxcompress.errors import ConfigError
from onnxcompress.passes import Quantize
from tests import helpers as h


def test_histogram_growth_keeps_every_count_and_the_exact_range():
    r = h.rng(0)
    hist = StreamingHistogram(256)
    chunks = [r.standard_normal(1000) * s + o for s, o in [(0.01, 0), (1, 3), (10, -20), (0.1, 50)]]
    for c in chunks:
        hist.add(c)
    data = np.concatenate(chunks)
    assert hist.counts.sum() == data.size == hist.total
    assert hist.min == pytest.approx(data.min()) and hist.max == pytest.approx(data.max())
    assert hist.start <= data.min() and hist.end >= data.max()
    # Each count sits within one bin of where a single histogram of all the data puts it.
    edges = hist.edges()
    direct, _ = np.histogram(data, bins=edges)
    assert np.abs(np.cumsum(direct) - np.cumsum(hist.counts)).max() <= np.max(direct)


def test_constant_and_non_finite_values():
    hist = StreamingHistogram(256)
    hist.add(np.full(10, 3.0))
    hist.add(np.array([np.nan, np.inf, 3.0]))
    assert hist.total == 11 and hist.min == hist.max == 3.0


@pytest.mark.parametrize("method", CALIBRATE_METHODS)
def test_state_is_flat_in_the_number_of_samples(method):
    r = h.rng(1)
    sizes = {}
    for n in (5, 200):
        cal = Calibrator(method)
        for i in range(n):
            # Samples of different shapes mix freely.
            cal.update("a", r.standard_normal((1 + i % 3, 7 + i % 5)))
            cal.update("b", np.maximum(r.standard_normal(50), 0))
        sizes[n] = cal.state_bytes
        lo, hi = cal.range("a").low, cal.range("a").high
        assert lo < 0 < hi
        assert cal.range("b").low == 0
    assert sizes[5] == sizes[200]


def test_methods_clip_outliers_differently():
    r = h.rng(2)
    x = r.standard_normal(200_000).astype(np.float32)
    x[:5] = 80.0  # a handful of outliers
    ranges = {}
    for method in CALIBRATE_METHODS:
        cal = Calibrator(method, percentile=99.99)
        for chunk in np.split(x, 20):
            cal.update("x", chunk)
        ranges[method] = cal.range("x")
    assert ranges["minmax"].high == pytest.approx(80.0)
    for method in ("percentile", "entropy"):
        assert ranges[method].high < 20, (method, ranges[method])
    # MSE weighs the outliers' squared clipping error against everyone's rounding error.
    assert ranges["mse"].high <= 80.0
    for method in ("percentile", "entropy", "mse"):
        assert ranges[method].low < -2
    assert all(r.count == x.size for r in ranges.values())


def test_relative_noise_matches_quantizing_the_data():
    r = h.rng(4)
    x = r.standard_normal(100_000).astype(np.float32)
    cal = Calibrator("percentile")
    cal.update("x", x)

    def measured(lo, hi):  # quantize to 255 steps of [lo, hi] for real
        step = (hi - lo) / 255
        q = np.clip(np.round((x - lo) / step), 0, 255) * step + lo
        return float(np.sqrt(np.mean((q - x) ** 2) / np.mean(x**2)))

    lo, hi = float(x.min()), float(x.max())
    for span in (1.0, 8.0, 0.3):  # fits, stretched by a long tail, too narrow (clips)
        est = cal.relative_noise("x", lo * span, hi * span)
        assert est == pytest.approx(measured(lo * span, hi * span), rel=0.1), span
    # A range stretched 8x spreads the values over 8x fewer steps: 8x the rounding noise.
    assert cal.relative_noise("x", 8 * lo, 8 * hi) > 6 * cal.relative_noise("x", lo, hi)
    minmax = Calibrator("minmax")
    minmax.update("x", x)
    assert minmax.relative_noise("x", lo, hi) is None  # no histogram to estimate it from


def test_bad_options_raise_config_errors():
    with pytest.raises(ConfigError):
        Calibrator("kl")
    with pytest.raises(ConfigError):
        Calibrator("percentile", percentile=20)


def test_collect_reads_the_data_once_for_all_tensors():
    model = load_model(h.mlp((8, 16, 16, 4)))
    r = h.rng(3)
    pulled = []

    def feeds():
        for i in range(6):
            pulled.append(i)
            yield {"x": r.standard_normal((1 + i % 2, 8)).astype(np.float32)}

    cal = collect(model, ["h0", "h1", "y"], feeds(), Calibrator("entropy"))
    assert pulled == list(range(6))
    assert set(cal.names) == {"h0", "h1", "y"} and cal.samples == 6


def test_collect_memory_does_not_grow_with_samples():
    import tracemalloc

    model = load_model(h.mlp((64, 256, 10)))
    r = h.rng(4)
    peaks = {}
    for n in (4, 64):
        feeds = ({"x": r.standard_normal((32, 64)).astype(np.float32)} for _ in range(n))
        tracemalloc.start()
        collect(model, ["h0", "y"], feeds, Calibrator("percentile"))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[64] < peaks[4] * 1.5 + 200_000


class DigitsReader(CalibrationDataReader):
    """A reader written for onnxruntime.quantization, used unchanged."""

    def __init__(self, n: int) -> None:
        r = h.rng(5)
        self.data = iter([{"x": r.standard_normal((1, 16)).astype(np.float32)} for _ in range(n)])

    def get_next(self):
        return next(self.data, None)


def test_onnxruntime_calibration_data_reader_works_unchanged():
    reader = DigitsReader(12)
    result = Pipeline([Quantize(mode="static", speed_check=False)]).run(h.mlp((16, 96, 64)),
                                                                        calibration=reader)
    q = result.passes[0]
    assert q.metrics["calibration"]["samples"] == 12
    assert q.metrics["calibration"]["source"] == "calibration data"
    assert any(n.op_type == "QuantizeLinear" for n in result.model.graph)
    # A reader is read once; the cached samples serve every later pass.
    assert len(feed_source(reader)) == 0


def test_vnni_detection(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse avx2 avx512_vnni\n")
    assert "avx512_vnni" in cpu_flags(info)
    assert cpu_flags(tmp_path / "missing") == frozenset()
    has_vnni.cache_clear()
    monkeypatch.setenv("ONNXCOMPRESS_CPU_VNNI", "0")
    assert default_reduce_range() is True
    has_vnni.cache_clear()
    monkeypatch.setenv("ONNXCOMPRESS_CPU_VNNI", "1")
    assert default_reduce_range() is False
    has_vnni.cache_clear()


def test_onnx_text_model_round_trip():
    # The calibrator sees exactly the tensors the model produces (sanity of names).
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) { r = Relu(x)  y = Neg(r) }
    """)
    cal = collect(load_model(model), ["r", "y"], [{"x": np.ones((2, 4), np.float32)}],
                  Calibrator("minmax"))
    assert cal.range("r").high == 1.0 and cal.range("y").low == -1.0


# -- models that cannot run on the data at hand (issue 11) -------------------------------------


def test_collect_names_the_sample_and_the_node_that_cannot_run():
    from onnxcompress.errors import RuntimeUnavailableError
    from tests import unrunnable

    model = load_model(unrunnable.stft_like())
    short = unrunnable.stft_feeds(2, length=16)  # the reflect Pad needs more than 64 samples
    with pytest.raises(RuntimeUnavailableError, match=r"sample 0 of my data: Pad node: .*reflect"):
        collect(model, ["hidden"], short, Calibrator("minmax"), data="my data")
    calibrator = collect(model, ["hidden"], unrunnable.stft_feeds(2), Calibrator("minmax"))
    assert calibrator.samples == 2 and calibrator.range("hidden") is not None


def test_sensitivity_probe_raises_the_runtime_error_its_callers_degrade_on():
    from onnxcompress.errors import RuntimeUnavailableError
    from onnxcompress.passes._bit_allocation import probe_sensitivity
    from tests import unrunnable

    model = load_model(unrunnable.stft_like())
    degraded = {"w1": np.zeros((128, 256), np.float32)}
    with pytest.raises(RuntimeUnavailableError, match="Pad node"):
        probe_sensitivity(model, degraded, unrunnable.stft_feeds(2, length=16))
    probe = probe_sensitivity(model, degraded, unrunnable.stft_feeds(2))
    assert probe.deviation["w1"] == pytest.approx(1.0)  # a zero weight zeroes the output


@pytest.mark.parametrize("build", ["prune", "kmeans"])
def test_data_driven_passes_complete_with_a_note_when_the_data_cannot_run(build):
    """Pruning's activation statistics and k-means' sensitivity probe only measure: data the
    model cannot run on (too short for the STFT's reflect padding) leaves them data-free."""
    from onnxcompress.model import to_proto
    from onnxcompress.passes import Prune, WeightSharing
    from tests import unrunnable

    proto = unrunnable.stft_like()
    p = Prune(sparsity=0.5) if build == "prune" else WeightSharing(bits=4)
    result = Pipeline([p]).run(proto, calibration=unrunnable.stft_feeds(2, length=16))
    res = result.passes[0]
    assert res.modified
    assert any("Pad node" in n for n in res.notes), res.notes
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    feed = unrunnable.stft_feeds(1)[0]
    ref, got = h.run(proto, feed)[0], h.run(out, feed)[0]
    cosine = float(np.dot(ref.ravel(), got.ravel()) / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert cosine > 0.8
