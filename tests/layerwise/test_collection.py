"""The run's one statistics collection: prune + k-means + static int8 run the calibration data
through onnxruntime once, and every pass gets the numbers a collection of its own would give."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxcompress import WeightIndex, load_model
from onnxcompress.activations import input_channel_moments
from onnxcompress.calibration import Calibrator, collect
from onnxcompress.errors import ConfigError, RuntimeUnavailableError
from onnxcompress.layerwise.collection import Histogram, Statistics, weight_moments
from onnxcompress.model import to_proto
from onnxcompress.passes import Prune, Quantize, WeightSharing
from onnxcompress.passes._int8_guard import GUARD_SAMPLES
from onnxcompress.pipeline import Pipeline
from tests import helpers as h
from tests import unrunnable

N = 8


def _feeds(n: int = N, seed: int = 1) -> list[dict[str, np.ndarray]]:
    r = h.rng(seed)
    return [{"x": r.standard_normal((2, 3, 16, 16)).astype(np.float32)} for _ in range(n)]


class _SampleRuns:
    """Counts onnxruntime runs per calibration sample (a feed equal to sample i)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts = [0] * len(feeds)
        original = ort.InferenceSession.run

        def run(session, outputs, feed, *args, **kwargs):  # noqa: ANN001, ANN202
            for i, f in enumerate(feeds):
                x = feed.get("x") if isinstance(feed, dict) else None
                if x is not None and x.shape == f["x"].shape and np.array_equal(x, f["x"]):
                    self.counts[i] += 1
            return original(session, outputs, feed, *args, **kwargs)

        monkeypatch.setattr(ort.InferenceSession, "run", run)


def _pipeline() -> Pipeline:
    return Pipeline([
        Prune(sparsity=0.5),  # data importance and bias correction: input channel moments
        # sensitivity and bias correction: moments; conv1 is left to int8
        WeightSharing(bits=6, min_size=16, exclude=("conv1",)),
        # activation histograms; GPTQ rounding (default with calibration) runs the data for
        # its own E[x x^T] (not the shared collection's, see DEVELOPERS.md): off here
        Quantize(mode="static", allow_slower=True, reconstruct=False),
    ])


def test_a_pass_alone_collects_its_own_statistics_in_one_pass(monkeypatch):
    """Static int8 first asks its input means (bias correction), then its histograms: it
    declares both, so the first request collects both (HiFi-GAN: two passes of 24 samples, 20 s
    each, where one did)."""
    collections = _counted_collections(monkeypatch)
    Pipeline([Quantize(mode="static", allow_slower=True, reconstruct=False)]).run(h.cnn(), calibration=_feeds())
    assert collections == [["Histogram", "Moments"]]


def _counted_collections(monkeypatch) -> list[list[str]]:  # noqa: ANN001
    """The kinds of request each collection over the data served, in order."""
    collections: list[list[str]] = []
    original_collect = Statistics._collect

    def counting(self, model, requests, *, store):  # noqa: ANN001, ANN202
        collections.append(sorted({type(r).__name__ for r in requests}))
        return original_collect(self, model, requests, store=store)

    monkeypatch.setattr(Statistics, "_collect", counting)
    return collections


def test_prune_kmeans_static_run_the_calibration_data_once(monkeypatch):
    proto, feeds = h.cnn(), _feeds()
    runs = _SampleRuns(feeds, monkeypatch)
    collections = _counted_collections(monkeypatch)
    result = _pipeline().run(proto, calibration=feeds)
    monkeypatch.undo()

    # One collection served moments (prune, k-means) and histograms (static int8) ...
    assert collections == [["Histogram", "Moments"]]
    # ... in one onnxruntime run per sample. The first samples also run models that are not
    # the data's statistics: k-means's bit allocation probes each layer's sensitivity on the
    # first probe_samples (2) feeds, the speed guard times int8 against float on the first, and
    # quantize's fidelity guard measures int8 on the first GUARD_SAMPLES (4).
    probed = max(WeightSharing().config.probe_samples, GUARD_SAMPLES)
    assert probed < N
    assert runs.counts[probed:] == [1] * (N - probed), runs.counts
    prune, kmeans, quantize = result.passes
    assert prune.metrics["importance"] == "data"
    assert kmeans.metrics["sensitivity_weighted"] >= 1
    assert quantize.metrics["calibration"]["samples"] == N
    # conv1 computes in int8, and so do conv0 and fc: the bit allocation gave them 8 bits, whose
    # shared 1 KiB codebook they cannot carry (1648 bytes against 1504 in float), so k-means
    # leaves them float (_kmeans_codebook._shared_pays) and int8 takes them
    assert kmeans.layers == [] and quantize.metrics["int8_nodes"]["compute"] == 3
    assert any(n.op_type == "QuantizeLinear" for n in result.model.graph)
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    want = np.concatenate([h.run(proto, f)[0] for f in feeds])
    got = np.concatenate([h.run(out, f)[0] for f in feeds])
    cos = float(np.sum(want * got) / np.linalg.norm(want) / np.linalg.norm(got))
    assert cos > 0.9, cos


def test_shared_statistics_equal_a_collection_of_their_own():
    model = load_model(h.cnn())
    feeds = _feeds()
    weights = list(WeightIndex.build(model))
    stats = Statistics(feeds)
    # Nothing declared: each new request is a pass of its own (declared ones share one).
    shared_2 = stats.channel_moments(model, weights, 2)
    shared_all = stats.channel_moments(model, weights, None)
    calib = stats.calibrator(model, [Histogram("r0", "entropy", channel_axis=1, samples=4),
                                     Histogram("flat", "entropy", samples=4)])
    assert stats.collections == 3
    own_2 = input_channel_moments(model, weights, feeds[:2])
    own_all = input_channel_moments(model, weights, feeds)
    assert set(shared_2) == set(own_2) == {"conv0.weight", "conv1.weight", "fc.weight"}
    for label in own_2:
        for a, b in zip(shared_2[label], own_2[label], strict=True):
            assert a.tobytes() == b.tobytes()
        for a, b in zip(shared_all[label], own_all[label], strict=True):
            assert a.tobytes() == b.tobytes()
    own = collect(model, ["r0", "flat"], feeds, Calibrator("entropy", channel_axes={"r0": 1}),
                  max_samples=4)
    assert calib.ranges() == own.ranges() and calib.samples == own.samples == 4
    assert calib.channel_spread("r0") == own.channel_spread("r0")
    # Served again from the cache: no further run.
    stats.channel_moments(model, weights, 2)
    assert stats.collections == 3


def test_tensors_past_the_run_budget_stream_the_data_in_groups(monkeypatch):
    """A run keeps every tensor it exposes alive (batch 22's 1024 x 1024 segmenter: 3.3 GB a
    sample, static int8 peaked at 3.8 GB): past EXPOSED_BUDGET_BYTES the tensors are split into
    groups that each stream the data, with the numbers of one run."""
    from onnxcompress import activations

    model = load_model(h.cnn())
    feeds = _feeds()
    weights = list(WeightIndex.build(model))
    requests = [Histogram("r0", "entropy", channel_axis=1, samples=4), Histogram("flat", "entropy", samples=4)]
    whole = Statistics(feeds)
    one_moments, one_calib = whole.channel_moments(model, weights, None), whole.calibrator(model, requests)
    assert whole.runs == N + 4  # one run a sample: all 8 for the moments, 4 for the ranges
    monkeypatch.setattr(activations, "EXPOSED_BUDGET_BYTES", 1)  # every tensor a group of its own
    split = Statistics(feeds)
    moments, calib = split.channel_moments(model, weights, None), split.calibrator(model, requests)
    assert split.runs > whole.runs
    for label in one_moments:
        for a, b in zip(moments[label], one_moments[label], strict=True):
            assert a.tobytes() == b.tobytes()
    assert calib.ranges() == one_calib.ranges() and calib.samples == one_calib.samples == 4
    assert calib.channel_spread("r0") == one_calib.channel_spread("r0")


def test_declared_requests_are_collected_with_the_first():
    model = load_model(h.cnn())
    feeds = _feeds()
    weights = list(WeightIndex.build(model))
    later = [Histogram("r1"), *weight_moments(weights, 3).values()]
    stats = Statistics(feeds, declared=lambda m: later)
    stats.channel_moments(model, weights, N)
    assert stats.collections == 1 and stats.runs == N
    stats.calibrator(model, [Histogram("r1")])
    three = stats.channel_moments(model, weights, 3)
    assert stats.collections == 1
    own = input_channel_moments(model, weights, feeds[:3])
    assert three["conv1.weight"][1].tobytes() == own["conv1.weight"][1].tobytes()


def test_run_wide_sample_cap():
    model = load_model(h.cnn())
    feeds = _feeds()
    weights = list(WeightIndex.build(model))
    capped = Statistics(feeds, samples=2).channel_moments(model, weights, 64)
    own = input_channel_moments(model, weights, feeds[:2])
    assert capped["fc.weight"][0].tobytes() == own["fc.weight"][0].tobytes()


def test_channels_removed_by_an_earlier_pass_are_collected_again(monkeypatch):
    """After channel pruning the teacher's moments have more channels than the weights read:
    k-means gets moments of the pruned model instead (a second collection)."""
    proto, feeds = h.cnn(channels=(3, 8, 16)), _feeds()
    collections = []
    original_collect = Statistics._collect

    def counting(self, model, requests, *, store):  # noqa: ANN001, ANN202
        collections.append(store)
        return original_collect(self, model, requests, store=store)

    monkeypatch.setattr(Statistics, "_collect", counting)
    result = Pipeline([Prune(sparsity=0.5, pattern="channel"),
                       WeightSharing(bits=6, min_size=16)]).run(proto, calibration=feeds)
    monkeypatch.undo()
    assert collections == [True, False]
    kmeans = result.passes[1]
    assert kmeans.metrics["sensitivity_weighted"] >= 1
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    w = {i.name: i for i in out.graph.initializer}
    assert min(d for i in w.values() for d in i.dims[:1]) < 16  # channels were removed
    got = h.run(out, feeds[0])[0]
    assert np.isfinite(got).all() and got.shape == h.run(proto, feeds[0])[0].shape


def test_a_model_that_cannot_run_fails_once():
    model = load_model(unrunnable.stft_like())
    # A reflect Pad of 64 on 16 samples: onnxruntime refuses every feed.
    stats = Statistics(unrunnable.stft_feeds(length=16))
    weights = list(WeightIndex.build(model))
    with pytest.raises(RuntimeUnavailableError):
        stats.channel_moments(model, weights, 4)
    with pytest.raises(RuntimeUnavailableError):
        stats.channel_moments(model, weights, 4)
    assert stats.collections == 1


def test_static_int8_after_channel_pruning_recollects_the_changed_tensors(monkeypatch):
    """The teacher's histogram of a tensor that lost channels counts channels that are gone:
    static int8 gets that tensor's histogram from the pruned model instead."""
    proto, feeds = h.cnn(channels=(3, 8, 16)), _feeds()
    collected: list[tuple[bool, list[str]]] = []
    original_collect = Statistics._collect

    def counting(self, model, requests, *, store):  # noqa: ANN001, ANN202
        collected.append((store, sorted({r.tensor for r in requests if isinstance(r, Histogram)})))
        return original_collect(self, model, requests, store=store)

    monkeypatch.setattr(Statistics, "_collect", counting)
    prune = Pipeline([Prune(sparsity=0.5, pattern="channel")]).run(proto, calibration=feeds)
    result = Pipeline([Prune(sparsity=0.5, pattern="channel"),
                       Quantize(mode="static", allow_slower=True)]).run(proto, calibration=feeds)
    monkeypatch.undo()
    # prune alone: one collection; prune + static: the shared one, then the pruned tensors again
    assert collected[0] == (True, [])
    assert collected[1][0] and collected[1][1]
    # (the bias correction's input means of the pruned layers are collected again too)
    again = [tensors for store, tensors in collected[2:] if not store and tensors]
    assert len(again) == 1 and set(again[0]) < set(collected[1][1])
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    assert any(n.op_type == "QuantizeLinear" for n in out.graph.node)
    pruned = to_proto(prune.model)
    want = np.concatenate([h.run(pruned, f)[0] for f in feeds]).ravel()
    got = np.concatenate([h.run(out, f)[0] for f in feeds]).ravel()
    assert float(want @ got / np.linalg.norm(want) / np.linalg.norm(got)) > 0.99


def test_pipeline_sample_cap_reaches_every_statistic_and_round_trips(monkeypatch, tmp_path):
    """max_calibration_samples (recipe key, --max-calibration-samples) caps the run: with 3, the
    prune + k-means + static run never feeds sample 3 or later to onnxruntime, and static
    int8 reports 3 calibration samples; the recipe keeps the key, and omits it when unset."""
    proto, feeds = h.cnn(), _feeds()
    runs = _SampleRuns(feeds, monkeypatch)
    pipeline = _pipeline()
    pipeline.max_calibration_samples = 3
    result = pipeline.run(proto, calibration=feeds)
    monkeypatch.undo()
    assert runs.counts[3:] == [0] * (N - 3), runs.counts
    assert result.passes[2].metrics["calibration"]["samples"] == 3
    recipe = pipeline.to_recipe()
    assert recipe["max_calibration_samples"] == 3
    assert Pipeline.from_recipe(recipe).max_calibration_samples == 3
    assert "max_calibration_samples" not in _pipeline().to_recipe()
    with pytest.raises(ConfigError, match="max_calibration_samples must be a positive integer"):
        Pipeline.from_recipe({**recipe, "max_calibration_samples": 0})


def test_cli_max_calibration_samples_flag(tmp_path):
    from onnxcompress.cli import main

    model, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(h.cnn(), model)
    np.savez(data, x=np.stack([f["x"] for f in _feeds()]))
    out = tmp_path / "o.onnx"
    assert main(["compress", str(model), "-o", str(out), "--quantize", "static", "--allow-slower",
                 "--calibration", str(data), "--max-calibration-samples", "2", "-q"]) == 0
    provenance = {p.key: p.value for p in onnx.load(out).metadata_props}["onnxcompress"]
    assert '"max_calibration_samples":2' in provenance
    assert main(["compress", str(model), "-o", str(tmp_path / "p.onnx"), "--quantize", "static",
                 "--calibration", str(data), "--max-calibration-samples", "0", "-q"]) == 2


def _zero_width_attention() -> onnx.ModelProto:
    """A CBAM block's channel attention over 3 channels, reduction 16: a hidden layer of 3 // 16 =
    0 units (MatMul [3, 0] then [0, 3]), as batch 41's dehazer exported it, before a Conv."""
    r = h.rng(0)
    nodes = [onnx.helper.make_node("GlobalAveragePool", ["x"], ["gap"]),
             onnx.helper.make_node("Flatten", ["gap"], ["flat"]),
             onnx.helper.make_node("MatMul", ["flat", "fc1"], ["hidden"], name="fc1"),
             onnx.helper.make_node("Relu", ["hidden"], ["relu"]),
             onnx.helper.make_node("MatMul", ["relu", "fc2"], ["gate"], name="fc2"),
             onnx.helper.make_node("Sigmoid", ["gate"], ["sig"]),
             onnx.helper.make_node("Unsqueeze", ["sig", "axes"], ["g4"]),
             onnx.helper.make_node("Mul", ["x", "g4"], ["xa"]),
             onnx.helper.make_node("Conv", ["xa", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    graph = onnx.helper.make_graph(
        nodes, "cbam", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 16, 16])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 32, 16, 16])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    return h.attach_initializers(model, {
        "fc1": np.zeros((3, 0), np.float32), "fc2": np.zeros((0, 3), np.float32),
        "axes": np.array([2, 3], np.int64), "w": r.standard_normal((32, 3, 3, 3)).astype(np.float32),
        "b": r.standard_normal(32).astype(np.float32)})


@pytest.mark.parametrize("make", [lambda: Prune(sparsity=0.5, keep_last=False), lambda: WeightSharing(bits=4)])
def test_an_activation_of_no_channels_is_collected_as_nothing(make):
    """Batch 41's CBAM dehazer: every pass that collects input moments (prune, k-means with data)
    failed with "cannot reshape array of size 0 into shape (0)"."""
    proto = _zero_width_attention()
    feeds = _feeds(4)
    result = Pipeline([make()]).run(proto, calibration=feeds)
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    assert result.passes[0].status == "applied"
    got, want = h.run(out, feeds[0])[0], h.run(proto, feeds[0])[0]
    assert got.shape == want.shape and np.isfinite(got).all()
