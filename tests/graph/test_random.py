"""Random ops run at their mean in every session the library creates (graph/random.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper as onh
import pytest
from onnx import TensorProto as T
from onnx import helper as oh

from onnxcompress.auto.targets import parse_target
from onnxcompress.graph.random import mean_draws, random_note
from onnxcompress.model import load_model
from onnxcompress.passes._float16_check import _cosine
from onnxcompress.runtime import create_session


def noisy_model(opset: int = 17) -> onnx.ModelProto:
    """x [N, 64] -> MatMul -> + noise (RandomNormalLike, mean 0.5, scale 1: as large as the
    signal, as Piper's VITS samples its latents) + a RandomUniform [8] bias in [1, 3] -> y."""
    w = (np.random.default_rng(0).standard_normal((64, 8)) * 0.2).astype(np.float32)
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "W"], ["h"]),
         oh.make_node("RandomNormalLike", ["h"], ["n"], mean=0.5, scale=1.0),
         oh.make_node("Add", ["h", "n"], ["hn"]),
         oh.make_node("RandomUniform", [], ["u"], shape=[8], low=1.0, high=3.0),
         oh.make_node("Add", ["hn", "u"], ["y"])],
        "g", [oh.make_tensor_value_info("x", T.FLOAT, ["n", 64])], [oh.make_tensor_value_info("y", T.FLOAT, ["n", 8])],
        [onh.from_array(w, "W")])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])


def test_every_session_runs_the_draws_at_their_mean(tmp_path):
    proto = noisy_model()
    onnx.save(proto, tmp_path / "m.onnx")
    x = {"x": np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)}
    want = x["x"] @ onh.to_array(proto.graph.initializer[0]) + 0.5 + 2.0
    for source in (proto, str(tmp_path / "m.onnx"), load_model(tmp_path / "m.onnx")):
        session = create_session(source)
        first, second = session.run(None, x)[0], session.run(None, x)[0]
        np.testing.assert_allclose(first, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(first, second)
    assert len([n for n in proto.graph.node if n.op_type.startswith("Random")]) == 2  # untouched
    assert "2 random op(s)" in random_note(load_model(proto))
    # before opset 15 (no CastLike) and inside a subgraph too
    old = noisy_model(opset=13)
    assert mean_draws(old) == 2 and not [n for n in old.graph.node if n.op_type.startswith("Random")]


def test_compress_and_validate_a_sampling_model_deterministically(tmp_path):
    from onnxcompress.cli import main

    onnx.save(noisy_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(2).standard_normal((8, 1, 64)).astype(np.float32))
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.onnx"
        assert main(["compress", str(tmp_path / "m.onnx"), "-o", str(out), "--quantize", "dynamic",
                     "--validate", "--validate-data", str(tmp_path / "d.npz")]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    kept = onnx.load_from_string(outs[0])
    assert {n.op_type for n in kept.graph.node} >= {"RandomNormalLike", "RandomUniform"}


@pytest.mark.parametrize("metric", ["cosine", "sequence", "values"])
def test_an_output_of_another_length_fails_a_target_and_the_float16_check(metric):
    """Piper's durations set its waveform's length: a compressed model may give another one."""
    a = np.random.default_rng(3).standard_normal((2, 100, 5)).astype(np.float32)
    b = a[:, :96]
    fidelity = parse_target(f"{metric}>=0.5").evaluate({"y": a}, {"y": b})
    assert not fidelity.met
    assert _cosine(a, b) == 0.0
