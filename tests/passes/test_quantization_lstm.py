"""Dynamic int8 compute for ONNX LSTMs (``passes._int8_lstm``): onnxruntime's
DynamicQuantizeLSTM, as ``quantize_dynamic`` writes an LSTM (batch 30's ECG LSTM autoencoder:
1.00x -> 0.45x fp32's latency, 500 / 500 anomaly decisions kept); not where an output is a
class-score sequence (ddddocr_ocr lost 1.1-1.8 points of its strings in this form)."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from onnxcompress.pipeline import PROVENANCE_KEY
from tests import helpers as h
from tests.passes.test_quantization import quantize, rel_error

F = onnx.TensorProto.FLOAT
T, B, I, H = 12, 2, 48, 64  # noqa: E741 - sequence, batch, input and hidden sizes


def _lstm(head: str | None) -> onnx.ModelProto:
    """x [T, B, I] -> LSTM -> Squeeze -> (a Tanh reconstruction, or a MatMul head over 40
    classes and its Softmax: a tagger's class-score sequence)."""
    rng = np.random.default_rng(3)
    inits = {
        "W": (rng.standard_normal((1, 4 * H, I)) * 0.2).astype(np.float32),
        "R": (rng.standard_normal((1, 4 * H, H)) * 0.2).astype(np.float32),
        "B": (rng.standard_normal((1, 8 * H)) * 0.1).astype(np.float32),
        "axis": np.array([1], np.int64),
    }
    nodes = [
        oh.make_node("LSTM", ["x", "W", "R", "B"], ["y4"], hidden_size=H, name="lstm"),
        oh.make_node("Squeeze", ["y4", "axis"], ["y3"]),
    ]
    if head is None:
        nodes.append(oh.make_node("Tanh", ["y3"], ["out"]))
        width = H
    else:
        inits["head"] = (rng.standard_normal((H, 40)) * 0.5).astype(np.float32)
        nodes += [
            oh.make_node("MatMul", ["y3", "head"], ["logits"]),
            oh.make_node("Softmax", ["logits"], ["out"]),
        ]
        width = 40
    graph = oh.make_graph(
        nodes,
        "g",
        [oh.make_tensor_value_info("x", F, [T, B, I])],
        [oh.make_tensor_value_info("out", F, [T, B, width])],
        [onh.from_array(v, k) for k, v in inits.items()],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def _ops(proto: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in proto.graph.node)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_an_lstm_computes_in_int8_as_dynamic_quantize_lstm(mode):
    # static too: an LSTM has no QDQ form, and static left batch 38's gesture bi-LSTM float
    # compute (1.00x the latency, dynamic 0.51x)
    proto = _lstm(None)
    calibration = [{"x": h.rng(i).standard_normal((T, B, I)).astype(np.float32)} for i in range(4)]
    res, q = quantize(proto, calibration if mode == "static" else None, mode=mode)
    onnx.checker.check_model(q)
    assert _ops(q)["DynamicQuantizeLSTM"] == 1 and _ops(q)["LSTM"] == 0
    assert res.metrics["int8_nodes"]["DynamicQuantizeLSTM"] == 1
    # a pass that only rewrote LSTMs changed the model: "applied", and its provenance recorded
    assert res.status == "applied" and any(p.key == PROVENANCE_KEY for p in q.metadata_props)
    assert {layer.name for layer in res.layers} >= {"W", "R"}
    # what the guard said of W and R (int8 blocks, recurrent) is no longer so: it says what is
    assert not any(n.startswith("fidelity guard: recurrent weights") for n in res.notes), res.notes
    assert not {"W", "R"} & set(res.metrics["fidelity_guard"]["steps"])
    assert any("DynamicQuantizeLSTM" in n and "W, R" in n for n in res.notes)
    x = {"x": h.rng(9).standard_normal((T, B, I)).astype(np.float32)}
    assert rel_error(h.run(proto, x)[0], h.run(q, x)[0]) < 0.03


def test_not_where_an_output_is_a_class_score_sequence():
    proto = _lstm("softmax")
    res, q = quantize(proto, None, mode="dynamic")
    assert _ops(q)["DynamicQuantizeLSTM"] == 0 and _ops(q)["LSTM"] == 1
    assert any("class-score sequence" in reason for reason in res.skipped)
    # without the guard nothing holds it back, as onnxruntime's quantize_dynamic writes it
    _, q = quantize(proto, None, mode="dynamic", fidelity_guard=False)
    assert _ops(q)["DynamicQuantizeLSTM"] == 1


def test_static_keeps_its_lstm_in_int8_where_its_qdq_ops_do_not_pay(monkeypatch, tmp_path):
    """Batch 8's Thai segmenter: its 154 QDQ ops (and the heavier half) needed 1.05x fp32's
    session memory, and static became weight-only, its LSTM float with them. The speed guard
    then tries the int8 compute that needs no Q/DQ activations: the LSTM (0.75x the latency)."""
    from tests.passes.test_quantization import priced_latency

    monkeypatch.setenv("ONNXCOMPRESS_CACHE_DIR", str(tmp_path))
    timed = priced_latency(monkeypatch, {"QuantizeLinear": 0.5, "DynamicQuantizeLSTM": -0.2})
    proto = _lstm_between_matmuls()
    data = [{"x": np.random.default_rng(i).standard_normal((T, B, I)).astype(np.float32)} for i in range(4)]
    res, q = quantize(proto, data, mode="static", speed_check=True)
    # all, the heavier half (the LSTM and one), the LSTM alone (faster: timed again to confirm)
    assert timed[2:] == [(0, 1), (0, 1)] and timed[0][0] > timed[1][0] > 0
    assert _ops(q)["DynamicQuantizeLSTM"] == 1 and _ops(q)["QuantizeLinear"] == 0
    assert res.metrics["int8_compute_ops"] == 1
    out, want = h.run(q, data[0])[0], h.run(proto, data[0])[0]
    assert rel_error(want, out) < 0.05


def _lstm_between_matmuls() -> onnx.ModelProto:
    """x [T, B, I] -> 3 MatMuls (I x I) and Relus -> LSTM -> Squeeze -> MatMul (H x H) -> Tanh."""
    rng = np.random.default_rng(5)
    inits = {f"m{i}": (rng.standard_normal((I, I)) / np.sqrt(I)).astype(np.float32) for i in range(3)}
    inits.update({
        "W": (rng.standard_normal((1, 4 * H, I)) * 0.2).astype(np.float32),
        "R": (rng.standard_normal((1, 4 * H, H)) * 0.2).astype(np.float32),
        "B": (rng.standard_normal((1, 8 * H)) * 0.1).astype(np.float32),
        "axis": np.array([1], np.int64),
        "m3": (rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)})
    nodes, prev = [], "x"
    for i in range(3):
        nodes += [oh.make_node("MatMul", [prev, f"m{i}"], [f"a{i}"], name=f"mm{i}"),
                  oh.make_node("Relu", [f"a{i}"], [f"r{i}"])]
        prev = f"r{i}"
    nodes += [oh.make_node("LSTM", [prev, "W", "R", "B"], ["y4"], hidden_size=H, name="lstm"),
              oh.make_node("Squeeze", ["y4", "axis"], ["y3"]),
              oh.make_node("MatMul", ["y3", "m3"], ["z"], name="mm3"),
              oh.make_node("Tanh", ["z"], ["out"])]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", F, [T, B, I])],
                          [oh.make_tensor_value_info("out", F, [T, B, H])],
                          [onh.from_array(v, k) for k, v in inits.items()])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
