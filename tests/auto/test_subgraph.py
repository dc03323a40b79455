"""Auto mode on a model whose weights live inside If branches (silero_vad's layout): the probe
cannot feed them, so their output error is estimated from their weight error, and the combined
models are still measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxcompress.auto import SerialExecutor, search
from onnxcompress.auto.candidates import candidate_weights
from onnxcompress.model import load_model, to_proto
from onnxcompress.pipeline import Pipeline
from tests import zoo


def test_branch_weights_are_chosen_and_the_target_holds(tmp_path: Path) -> None:
    path = tmp_path / "if.onnx"
    onnx.save(zoo.if_weights(), path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 1, 32)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x, cond=np.ones(24, dtype=bool))  # a scalar input per sample
    labels = {w.label for w in candidate_weights(load_model(path))}
    assert any(w.startswith("branch/") for w in labels)  # branch weights are candidates now
    with SerialExecutor() as ex:
        found = search(path, str(tmp_path / "calib.npz"), target="cosine>=0.999", executor=ex)
    assert found.met
    chosen = {k: v for k, v in found.plan.choices.items() if "W_then" in k}
    assert chosen and all(v != "float" for v in chosen.values()), found.plan.choices
    result = Pipeline.from_recipe(found.recipe).run(path, calibration=str(tmp_path / "calib.npz"))
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    assert len(proto.SerializeToString()) < path.stat().st_size
    new = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for i in range(4):
        feed = {"x": x[20 + i], "cond": np.array(True)}
        a, b = new.run(None, feed)[0], ref.run(None, feed)[0]
        assert float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.99


def test_a_weight_read_by_overlapping_slices_is_an_option(tmp_path: Path) -> None:
    # silero_vad's LSTM matrices are read by three overlapping Slices each (no weight slot):
    # k-means compresses such a constant in place, so auto mode must offer it too
    from tests.passes.test_quantization_guard import overlapping_slices

    path = tmp_path / "slices.onnx"
    onnx.save(overlapping_slices(), path)
    x = np.random.default_rng(0).normal(size=(24, 1, 64)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    assert "W" in {w.label for w in candidate_weights(load_model(path))}
    with SerialExecutor() as ex:
        found = search(path, str(tmp_path / "calib.npz"), target="cosine>=0.999", executor=ex)
    assert found.met and found.plan.choices["W"] != "float", found.plan.choices
    result = Pipeline.from_recipe(found.recipe).run(path, calibration=str(tmp_path / "calib.npz"))
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    assert len(proto.SerializeToString()) < path.stat().st_size / 2
    new = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    a, b = new.run(None, {"x": x[20]})[0], ref.run(None, {"x": x[20]})[0]
    assert float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b))) >= 0.999


def test_a_graph_of_unnamed_nodes_is_priced(tmp_path: Path) -> None:
    # hand-built and some converted graphs leave node names empty: auto mode finds a layer's
    # consumer in the compressed pricing models by name, and priced nothing here before
    rng = np.random.default_rng(0)
    w1 = onnx.numpy_helper.from_array((rng.normal(size=(64, 128)) * 0.1).astype(np.float32), "W1")
    w2 = onnx.numpy_helper.from_array((rng.normal(size=(128, 64)) * 0.1).astype(np.float32), "W2")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "W1"], ["h"]), onnx.helper.make_node("Relu", ["h"], ["r"]),
         onnx.helper.make_node("MatMul", ["r", "W2"], ["y"])], "mlp",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 64])], [w1, w2])
    path = tmp_path / "unnamed.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(24, 1, 64)).astype(np.float32))
    with SerialExecutor() as ex:
        found = search(path, str(tmp_path / "calib.npz"), target="cosine>=0.99", executor=ex)
    assert found.met and set(found.plan.choices) == {"W1", "W2"}, (found.plan.choices, found.notes)
    assert all(v != "float" for v in found.plan.choices.values())
    assert not any("could be priced" in n for n in found.notes)
    # the file the recipe writes keeps the input's (empty) node names: only the pricing base
    # is named
    result = Pipeline.from_recipe(found.recipe).run(path, calibration=str(tmp_path / "calib.npz"))
    proto = to_proto(result.model)
    assert not any(n.name for n in proto.graph.node if n.op_type in ("MatMul", "Relu"))


def test_a_model_with_nothing_to_compress_is_written_as_it_is(tmp_path: Path) -> None:
    # as a pass does (a tree ensemble's weights live in attributes; an int8 model's are codes)
    graph = onnx.parser.parse_graph("g (float[N, 4] x) => (float[N, 4] y) { y = Relu(x) }")
    path = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).normal(size=(8, 1, 4)).astype(np.float32))
    with SerialExecutor() as ex:
        found = search(path, str(tmp_path / "calib.npz"), executor=ex)
    assert found.met and not found.plan.choices
    assert any("no float weight large enough to compress" in n for n in found.notes)
    out = to_proto(Pipeline.from_recipe(found.recipe).run(path).model)
    assert len(out.SerializeToString()) <= path.stat().st_size


def test_a_prelu_slope_table_is_an_option(tmp_path: Path) -> None:
    # MEGnet (tf2onnx): its per-position PReLU slope tables (22% of the weights) are weights the
    # k-means pass compresses where they are; the index holds them as elementwise constants, and
    # auto left them float (3.29x where uniform k-means 8 gives 3.85x)
    from tests.graph.test_fold import _prelu_model

    proto, _ = _prelu_model("decomposed")
    path = tmp_path / "prelu.onnx"
    onnx.save(proto, path)
    x = np.random.default_rng(0).normal(size=(24, 1, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    assert "slopes" in {w.label for w in candidate_weights(load_model(path))}
    with SerialExecutor() as ex:
        found = search(path, str(tmp_path / "calib.npz"), target="cosine>=0.999", executor=ex)
    assert found.met and found.plan.choices["slopes"] != "float", found.plan.choices
