"""Auto mode reads a probability output's margins on the logits behind it (``measure.LOGITS``):
a float32 softmax saturates to exactly 0 and 1 (MEGnet: logit leads of 50-2500), and on those
probabilities no change short of a flip showed, so the search took a plan that flipped 1 of 32
eval samples (8.22x, top-1 96.9; with the logits 5.37x, 32 of 32)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcompress.auto.measure import LOGITS, logit_values, run_outputs, save_calibration, visible
from onnxcompress.auto.targets import parse_target
from tests import helpers as h
from tests.auto._common import run_cli

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 8)).astype(np.float32)
W = (RNG.normal(size=(8, 4)) * 1e4).astype(np.float32)  # leads of 2000 and more: saturated


def _classifier(w: np.ndarray, head: str = "Softmax", opset: int = 13, **attrs: int) -> onnx.ModelProto:
    """x [n, 8] -> MatMul -> head -> probs; a Sigmoid head scores one class (probs [n, 1])."""
    w = w[:, :1] if head == "Sigmoid" else w
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"], name="fc"),
             helper.make_node(head, ["logits"], ["probs"], name="head", **attrs)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", w.shape[1]])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _feeds() -> list[dict[str, np.ndarray]]:
    return [{"x": X[i : i + 1]} for i in range(len(X))]


def _nudged(head: str) -> np.ndarray:
    """W moved so that one sample loses 90% of its lead (still saturated), no decision changing (a sigmoid's
    lead is its logit's distance from 0)."""
    w = W.copy()
    z = X @ W
    if head == "Sigmoid":
        i = int(np.argmin(np.abs(z[:, 0])))
        w[:, 0] -= 0.9 * z[i, 0] * X[i] / float(X[i] @ X[i])
        assert (np.sign(X @ w[:, 0]) == np.sign(z[:, 0])).all()
        return w
    top = z.argmax(axis=1)
    i = int(np.argmin(z.max(axis=1) - np.sort(z, axis=1)[:, -2]))
    j = int(np.argsort(z[i])[-2])
    step = 0.9 * (z[i, top[i]] - z[i, j]) / float(X[i] @ X[i])
    w[:, top[i]] -= step * X[i] / 2
    w[:, j] += step * X[i] / 2
    assert ((X @ w).argmax(axis=1) == top).all()
    return w


def test_softmax_and_sigmoid_heads_name_their_logits() -> None:
    assert logit_values(_classifier(W).graph, 13) == {"probs": "logits"}
    assert logit_values(_classifier(W, "Sigmoid").graph, 13) == {"probs": "logits"}
    # before opset 13 a softmax normalises every axis from `axis` on: the last one too
    assert logit_values(_classifier(W, opset=11, axis=1).graph, 11) == {"probs": "logits"}
    # from 13 on, a softmax over another axis than the last does not give class margins there
    assert logit_values(_classifier(W, axis=0).graph, 13) == {}
    assert logit_values(_classifier(W, "Relu").graph, 13) == {}
    named = _classifier(W)  # tf2onnx names the output through an Identity
    named.graph.node[1].output[0] = "p"
    named.graph.node.append(helper.make_node("Identity", ["p"], ["probs"]))
    assert logit_values(named.graph, 13) == {"probs": "logits"}


def test_run_outputs_gives_logits_and_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    proto = _classifier(W)
    before = proto.SerializeToString()
    out = run_outputs(proto, _feeds())
    assert proto.SerializeToString() == before
    assert set(out) == {"probs", "probs" + LOGITS} and set(visible(out)) == {"probs"}
    assert np.allclose(out["probs" + LOGITS], X @ W, rtol=1e-4, atol=1e-3)
    onnx.save(proto, tmp_path / "m.onnx")
    from_path = run_outputs(tmp_path / "m.onnx", _feeds())
    assert set(from_path) == set(out) and np.array_equal(from_path["probs" + LOGITS], out["probs" + LOGITS])
    # weights in an external file (torch 2.13's default export), read where they are
    onnx.save(proto, tmp_path / "e.onnx", save_as_external_data=True, location="e.onnx.data", size_threshold=0)
    external = run_outputs(tmp_path / "e.onnx", _feeds())
    assert set(external) == set(out) and np.array_equal(external["probs" + LOGITS], out["probs" + LOGITS])


@pytest.mark.parametrize("head", ["Softmax", "Sigmoid"])
def test_a_count_sees_the_margin_a_saturated_output_hides(head: str) -> None:
    ref = run_outputs(_classifier(W, head), _feeds())
    out = run_outputs(_classifier(_nudged(head), head), _feeds())
    probs = ref["probs"] if head == "Softmax" else np.concatenate([1 - ref["probs"], ref["probs"]], 1)
    assert (np.sort(probs, axis=1)[:, -2] < 1e-30).all()  # every sample saturated
    goal = parse_target(None, visible(ref))
    key = "top1>=0.99" if head == "Softmax" else "probs:top1>=0.99"  # a probability a sample
    assert goal.text.startswith(key)
    on_probs = goal.evaluate(visible(ref), visible(out)).values[key]
    on_logits = goal.evaluate(ref, out).values[key]
    # on the probabilities nothing moved; on the logits one sample came 90% of the way to a flip
    assert on_probs == 1.0 and on_logits < 0.995


def test_a_callable_target_gets_the_model_outputs_only() -> None:
    ref = run_outputs(_classifier(W), _feeds())
    seen: list[set[str]] = []

    def metric(a: dict, b: dict) -> float:
        seen.append(set(a) | set(b))
        return 1.0

    parse_target(None, metric=metric, threshold=0.5).evaluate(ref, ref)
    assert seen == [{"probs"}]


def test_a_large_inline_model_is_run_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the whole-check size a model is not parsed and serialized again to give its logits
    out: its counts read the probabilities."""
    import onnxcompress.model

    proto = _classifier(W)
    onnx.save(proto, tmp_path / "m.onnx")
    monkeypatch.setattr(onnxcompress.model, "WHOLE_CHECK_MAX_BYTES", 64)
    assert set(run_outputs(proto, _feeds())) == {"probs"}
    assert set(run_outputs(tmp_path / "m.onnx", _feeds())) == {"probs"}


def test_auto_reads_a_quantized_output_by_its_values(tmp_path: Path):
    # a QDQ export's uint8 class scores (YAMNet w8a8): auto stopped at "target: cannot read ''"
    proto = h.mlp((16, 64, 10))
    out = proto.graph.output[0]
    proto.graph.node.append(helper.make_node("QuantizeLinear", [out.name, "y_scale", "y_zero"], ["scores"]))
    proto.graph.initializer.extend([numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
                                    numpy_helper.from_array(np.array(128, np.uint8), "y_zero")])
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info("scores", TensorProto.UINT8, ["N", 10]))
    onnx.save(proto, tmp_path / "m.onnx")
    r = np.random.default_rng(0)
    save_calibration([{"x": r.standard_normal((1, 16)).astype(np.float32)} for _ in range(24)],
                     tmp_path / "calib.npz")
    code = run_cli("compress", tmp_path / "m.onnx", "-o", tmp_path / "auto.onnx", "--auto",
                   "--calibration", tmp_path / "calib.npz", "--report", tmp_path / "report.json", "-q")
    assert code == 0
    assert "top1>=0.99" in json.dumps(json.loads((tmp_path / "report.json").read_text()))


def test_auto_on_integer_values_alone_says_it_has_nothing_to_measure(tmp_path: Path, capsys):
    # integer outputs no ArgMax makes (counts: a Cast of a rounded value) are not labels
    proto = h.mlp((16, 64, 10))
    out = proto.graph.output[0]
    proto.graph.node.extend([helper.make_node("Round", [out.name], ["rounded"]),
                             helper.make_node("Cast", ["rounded"], ["counts"], to=TensorProto.INT64)])
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info("counts", TensorProto.INT64, ["N", 10]))
    onnx.save(proto, tmp_path / "m.onnx")
    r = np.random.default_rng(0)
    save_calibration([{"x": r.standard_normal((1, 16)).astype(np.float32)} for _ in range(24)],
                     tmp_path / "calib.npz")
    code = run_cli("compress", tmp_path / "m.onnx", "-o", tmp_path / "auto.onnx", "--auto",
                   "--calibration", tmp_path / "calib.npz", "-q")
    assert code == 2 and not (tmp_path / "auto.onnx").exists()
    assert "no output is float (counts)" in capsys.readouterr().err
