"""The k-means pass's 8-bit form for ONNX LSTM weights (``_kmeans_lstm``): onnxruntime's
DynamicQuantizeLSTM with int8 W/R per gate row. Structure, onnx.checker, and numbers through
onnxruntime against the float LSTM of the decoded weights."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from onnxcompress import Pipeline
from onnxcompress.model import to_proto
from onnxcompress.passes import WeightSharing
from onnxcompress.passes._qdq import round_keeping_sums
from tests import helpers as h

F = onnx.TensorProto.FLOAT
T, B, I, H = 7, 2, 48, 32  # noqa: E741 - sequence, batch, input and hidden sizes


def lstm_model(w: np.ndarray, r: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    graph = oh.make_graph(
        [oh.make_node("LSTM", ["x", "W", "R", "B"], ["y", "y_h"], hidden_size=H,
                      direction="bidirectional", name="lstm"),
         oh.make_node("Tanh", ["y"], ["out"])], "g",
        [oh.make_tensor_value_info("x", F, [T, B, I])],
        [oh.make_tensor_value_info("out", F, [T, 2, B, H]), oh.make_tensor_value_info("y_h", F, [2, B, H])],
        [onh.from_array(w, "W"), onh.from_array(r, "R"), onh.from_array(b, "B")])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def weights(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = (rng.standard_normal((2, 4 * H, I)) * 0.3).astype(np.float32)
    r = (rng.standard_normal((2, 4 * H, H)) * 0.3).astype(np.float32)
    b = (rng.standard_normal((2, 8 * H)) * 0.1).astype(np.float32)
    return w, r, b


def share(model: onnx.ModelProto, **options):
    options.setdefault("rest", "float32")  # exact decodes; the float16 rest: test_weight_sharing_rest.py
    result = Pipeline([WeightSharing(bits=8, **options)]).run(model)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    return result.passes[0], proto


def ops(proto: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in proto.graph.node)


def int8_row_error(w: np.ndarray) -> float:
    flat = w.reshape(-1, w.shape[-1]).astype(np.float64)
    step = np.abs(flat).max(axis=1, keepdims=True) / 127.0
    q = round_keeping_sums(flat.astype(np.float32), step.reshape(-1), 0, 127) * step  # int8's rounding
    return float(np.linalg.norm(q - flat) / np.linalg.norm(flat))


@pytest.mark.usefixtures("exact_form_on_small_models")  # a small model keeps codebooks
def test_lstm_weights_become_dynamic_quantize_lstm_with_int8_rows():
    rng = np.random.default_rng(0)
    w, r, b = weights(rng)
    model = lstm_model(w, r, b)
    result, proto = share(model)
    assert ops(proto) == {"DynamicQuantizeLSTM": 1, "Tanh": 1}  # no decode nodes: nothing to fold
    node = next(n for n in proto.graph.node if n.op_type == "DynamicQuantizeLSTM")
    assert node.domain == "com.microsoft" and node.name == "lstm"
    assert {o.domain: o.version for o in proto.opset_import}["com.microsoft"] == 1
    assert [o.name for o in proto.graph.output] == ["out", "y_h"]
    inits = {t.name: onh.to_array(t) for t in proto.graph.initializer}
    decoded = {}
    for name, array in (("W", w), ("R", r)):
        q, s = inits[f"{name}.q"], inits[f"{name}.scale"]
        assert q.dtype == np.int8 and q.shape == (2, array.shape[2], 4 * H)  # [dirs, in, 4H]
        assert s.shape == (2, 4 * H) and s.dtype == np.float32
        decoded[name] = q.transpose(0, 2, 1).astype(np.float32) * s[:, :, None]
        layer = next(s for s in result.layers if s.name == name)
        assert layer.extra["storage"] == "int8"
        error = float(np.linalg.norm(decoded[name] - array) / np.linalg.norm(array))
        assert error == pytest.approx(layer.error, rel=1e-4)
        assert error <= int8_row_error(array) + 1e-7  # never less faithful than int8 per row
    assert "W" not in inits and "R" not in inits
    assert list(node.input[8:]) == ["W.scale", "W.zero", "R.scale", "W.zero"]  # one zero tensor
    assert inits["W.zero"].shape == (2, 4 * H) and not inits["W.zero"].any()
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    got = h.run(proto, {"x": x})
    want = h.run(lstm_model(decoded["W"], decoded["R"], b), {"x": x})
    ref = h.run(model, {"x": x})
    for g, wt, rf in zip(got, want, ref, strict=True):
        # onnxruntime quantizes the activations per call: close to the decoded weights' LSTM,
        # and about as close to the original as int8 weights alone are.
        assert np.abs(g - wt).max() < 0.03
        assert np.linalg.norm(g - rf) / np.linalg.norm(rf) < 0.03


@pytest.mark.usefixtures("exact_form_on_small_models")  # a small model keeps codebooks
def test_lstm_keeps_the_codebook_when_asked_or_when_it_is_exact():
    rng = np.random.default_rng(1)
    w, r, b = weights(rng)
    _, proto = share(lstm_model(w, r, b), decode="codebook")
    assert ops(proto)["LSTM"] == 1 and ops(proto)["Gather"] == 2
    levels = rng.standard_normal(200).astype(np.float32) * 0.3
    ws, rs = rng.choice(levels, w.shape), rng.choice(levels, r.shape)  # already shared
    result, proto = share(lstm_model(ws, rs, b))
    assert ops(proto)["LSTM"] == 1 and ops(proto)["DynamicQuantizeLSTM"] == 0
    assert {s.extra["storage"] for s in result.layers} == {"uint8"}
    assert max(s.error for s in result.layers) == 0
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    np.testing.assert_allclose(h.run(proto, {"x": x})[0], h.run(lstm_model(ws, rs, b), {"x": x})[0],
                               rtol=1e-5, atol=1e-6)
    result, proto = share(lstm_model(ws, rs, b), decode="int8")
    assert ops(proto)["DynamicQuantizeLSTM"] == 1


def test_recurrent_weights_without_statistics_say_why():
    # an LSTM's R reads the cell's own state, which no graph tensor shows: the note said "e.g.
    # in a subgraph" on a model without one (batch 7's NSNet2 GRUs)
    from tests.validation._models import lstm_state_model

    r = np.random.default_rng(0)
    data = [{"x": r.standard_normal((5, 1, 8)).astype(np.float32)} for _ in range(4)]
    result = Pipeline([WeightSharing(bits=8)]).run(lstm_state_model(hidden=64), calibration=data)
    notes = " ".join(result.passes[0].notes)
    assert "the cell reads them with its own state" in notes and "subgraph" not in notes


def test_a_small_models_lstms_keep_codebooks_that_fold_at_load():
    """Under ``_kmeans_int8.SMALL_MODEL_VALUES`` the LSTMs are not rewritten to DynamicQuantizeLSTM:
    folds cost no memory there, and the int8 kernel can cost time (madmom's downbeat BLSTMs,
    hidden size 25 over 600 frames: 1.37x the fp32 latency, now 1.00x)."""
    w, r, b = weights(np.random.default_rng(0))
    result, proto = share(lstm_model(w, r, b))
    assert ops(proto)["DynamicQuantizeLSTM"] == 0 and ops(proto)["LSTM"] == 1
    assert {s.name for s in result.layers} >= {"W", "R"}  # both still shared, by codebooks


@pytest.mark.usefixtures("exact_form_on_small_models")  # the form is for models past the small rule
def test_lstms_whose_int8_inputs_move_the_outputs_keep_their_codebooks():
    """DynamicQuantizeLSTM quantizes the LSTM's inputs each call, over their whole range: a
    speaker encoder's LSTMs over log-mels lost 19 points of embedding cosine (0.81) where int8
    weights lose 0.1. The form is measured on the calibration samples first and refused where
    it moves the outputs past _kmeans_lstm.MAX_DEVIATION."""
    from onnxcompress.data import feed_source
    from onnxcompress.model import load_model

    rng = np.random.default_rng(3)
    w, r, b = weights(rng)
    model = lstm_model(w, r, b)
    # small features beside a rare huge one: a per-call uint8 range leaves them a few levels
    xs = []
    for _ in range(4):
        x = (rng.standard_normal((T, B, I)) * 0.05).astype(np.float32)
        x[0, :, 0] = 60.0  # one step, one feature
        xs.append({"x": x})
    result = Pipeline([WeightSharing(bits=8, rest="float32")]).run(
        model, calibration=feed_source(xs, load_model(model)))
    proto = to_proto(result.model)
    assert "DynamicQuantizeLSTM" not in ops(proto)
    assert any("DynamicQuantizeLSTM's int8 inputs moved the outputs" in n for n in result.passes[0].notes)
    got, ref = h.run(proto, xs[0]), h.run(model, xs[0])
    assert np.linalg.norm(got[0] - ref[0]) / np.linalg.norm(ref[0]) < 0.03


@pytest.mark.usefixtures("exact_form_on_small_models", "codebooks_on_small_weights")
def test_lstms_whose_check_cannot_run_keep_their_codebooks_and_say_so():
    """batch 28's pyannote segmentation: a waveform [B, C, T] with C = 1 only, which the
    synthetic samples guess as 16 (InstanceNormalization's one scale then fails): the form's
    check raised onnxruntime's own error and --kmeans 8 exited 2."""
    rng = np.random.default_rng(4)
    model = _needs_one_channel_model(rng)
    result, proto = share(model)
    assert "DynamicQuantizeLSTM" not in ops(proto) and ops(proto)["Gather"] >= 2
    assert any("int8 form not measured" in n for n in result.notes)
    x = {"x": rng.standard_normal((B, 1, T)).astype(np.float32)}
    got, ref = h.run(proto, x), h.run(model, x)
    assert np.linalg.norm(got[0] - ref[0]) / np.linalg.norm(ref[0]) < 0.03


@pytest.mark.usefixtures("exact_form_on_small_models")
def test_the_users_shape_lets_the_check_run_without_data():
    """``--shape input:1x1x160000`` (``synthetic.given_shapes``) shapes every synthetic sample of
    the run: pyannote's LSTM form was measured with it, not left unmeasured."""
    from onnxcompress.synthetic import given_shapes

    model = _needs_one_channel_model(np.random.default_rng(4))
    with given_shapes({"x": (B, 1, T)}):
        result, proto = share(model)
    assert ops(proto)["DynamicQuantizeLSTM"] == 1
    assert not any("not measured" in n for n in result.notes)


def _needs_one_channel_model(rng: np.random.Generator) -> onnx.ModelProto:
    """InstanceNormalization of one channel (a waveform [B, 1, T]) -> 1x1 Conv to I channels ->
    the LSTM: synthetic samples guess the channel axis 16 and cannot run it."""
    w, r, b = weights(rng)
    conv = (rng.standard_normal((I, 1, 1)) * 0.5).astype(np.float32)
    graph = oh.make_graph(
        [oh.make_node("InstanceNormalization", ["x", "s", "o"], ["n"]),
         oh.make_node("Conv", ["n", "C"], ["c"]),  # 1 -> 48 channels
         oh.make_node("Transpose", ["c"], ["t"], perm=[2, 0, 1]),
         oh.make_node("LSTM", ["t", "W", "R", "B"], ["y", "y_h"], hidden_size=H, direction="bidirectional"),
         oh.make_node("Tanh", ["y"], ["out"])], "g",
        [oh.make_tensor_value_info("x", F, ["batch", "channels", "time"])],
        [oh.make_tensor_value_info("out", F, None), oh.make_tensor_value_info("y_h", F, None)],
        [onh.from_array(np.ones(1, np.float32), "s"), onh.from_array(np.zeros(1, np.float32), "o"),
         onh.from_array(conv, "C"), onh.from_array(w, "W"), onh.from_array(r, "R"), onh.from_array(b, "B")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    return model
