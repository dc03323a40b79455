"""PassResult bookkeeping: what a guard's rebuild reports replaces what the first build did."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxcompress.passes.base import LayerStat, PassResult


def _stat(name: str) -> LayerStat:
    return LayerStat(name=name, op_type="Conv", shape=(8, 8), bytes_before=256, bytes_after=64)


def test_a_rebuild_replaces_layers_and_the_skips_of_what_it_built():
    model = ir.Model(ir.Graph([], [], nodes=[]), ir_version=8)
    first = PassResult(pass_name="quantize", config={}, model=model)
    for name in ("small.w", "big.w"):  # the first build: both int8 (int8 compute)
        first.add_layer(_stat(name))
    first.skip("conv3", "int8 compute measured slower")  # a node the rebuild does not touch
    first.skip("big2.w", "kept float by the fidelity guard")  # the rebuild writes it after all
    rebuilt = PassResult(pass_name="quantize", config={}, model=model)
    rebuilt.add_layer(_stat("big.w"))
    rebuilt.add_layer(_stat("big2.w"))
    rebuilt.skip("small.w", "under 512 values: kept float")  # float again, its op computes float
    rebuilt.metrics["x"] = 1
    first.adopt_rebuild(rebuilt)
    assert [s.name for s in first.layers] == ["big.w", "big2.w"]
    assert first.skipped == {"int8 compute measured slower": ["conv3"],
                             "under 512 values: kept float": ["small.w"]}
    reported = {s.name for s in first.layers} | {n for v in first.skipped.values() for n in v}
    assert reported == {"small.w", "big.w", "big2.w", "conv3"}  # every tensor once, none lost
    assert first.metrics["x"] == 1



def test_a_tensor_skipped_twice_for_one_reason_is_listed_once(tmp_path):
    # quantize looks at a float64 weight in its guard and again in its writer: "W2, W1, W2"
    # (float16 weights were the example until quantize stored them int8)
    from onnxcompress.cli import main

    rng = np.random.default_rng(0)
    # W2 large enough (5120 values) that dynamic int8's candidate check reads it too
    w1 = onnx.numpy_helper.from_array((rng.normal(size=(64, 512)) * 0.1).astype(np.float64), "W1")
    w2 = onnx.numpy_helper.from_array((rng.normal(size=(512, 10)) * 0.1).astype(np.float64), "W2")
    b1 = onnx.numpy_helper.from_array(np.zeros(512, np.float64), "b1")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
         onnx.helper.make_node("Add", ["h", "b1"], ["hb"], name="add"),
         onnx.helper.make_node("Relu", ["hb"], ["r"], name="relu"),
         onnx.helper.make_node("MatMul", ["r", "W2"], ["y"], name="mm2")], "fp64",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, ["n", 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, ["n", 10])], [w1, w2, b1])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)]),
              tmp_path / "fp64.onnx")
    assert main(["compress", str(tmp_path / "fp64.onnx"), "-o", str(tmp_path / "out.onnx"),
                 "--quantize", "dynamic", "--json", str(tmp_path / "r.json"), "-q"]) == 0
    import json

    skipped = json.loads((tmp_path / "r.json").read_text())["passes"][0]["skipped"]
    listed = [n for names in skipped.values() for n in names]
    assert sorted(listed) == sorted(set(listed)) and {"W1", "W2"} <= set(listed), skipped


def _already_int8() -> onnx.ModelProto:
    """An MLP as onnxruntime's quantizer of 2020 wrote it (ddddocr's common_old.onnx): uint8
    activations by DynamicQuantizeLinear, int8 weights read by MatMulInteger, float scales."""
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 64] x) => (float[N, 32] y) {
        q, s, z = DynamicQuantizeLinear (x)
        acc = MatMulInteger (q, w, z, wz)
        f = Cast <to = 1> (acc)
        scale = Mul (s, ws)
        m = Mul (f, scale)
        y = Add (m, b)
    }
    """
    r = np.random.default_rng(0)
    proto = onnx.parser.parse_model(text)
    proto.graph.initializer.extend([
        onnx.numpy_helper.from_array(r.integers(-127, 128, (64, 32)).astype(np.int8), "w"),
        onnx.numpy_helper.from_array(np.int8(0), "wz"),
        onnx.numpy_helper.from_array(np.float32(0.01), "ws"),
        onnx.numpy_helper.from_array(r.standard_normal(32).astype(np.float32), "b"),
    ])  # fmt: skip
    return proto


@pytest.mark.parametrize("step", ["quantize", "kmeans", "prune"])
def test_a_pass_on_an_already_quantized_model_says_so(step):
    from onnxcompress import Pipeline, load_model
    from onnxcompress.model import to_proto
    from onnxcompress.passes import (
        Prune,
        PruneConfig,
        Quantize,
        QuantizeConfig,
        WeightSharing,
        WeightSharingConfig,  # fmt: skip
    )
    from tests import helpers as h

    proto = _already_int8()
    onnx.checker.check_model(proto)
    p = {"quantize": Quantize(QuantizeConfig(mode="dynamic")),
         "kmeans": WeightSharing(WeightSharingConfig(bits=4)),
         "prune": Prune(PruneConfig(sparsity=0.5))}[step]  # fmt: skip
    result = Pipeline([p]).run(load_model(proto))
    (res,) = result.passes
    assert res.status in ("unchanged", "skipped") and not res.layers
    # Was silent: "nothing to change" and a 1.00x file, with no word of the 2 KB of int8 codes.
    assert res.headlines == ["the model is already quantized: 1 integer weight(s) (0.0 MB) read by "
                             "MatMulInteger; this pass compresses float weights, so they stay as they are"]
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    x = {"x": np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)}
    np.testing.assert_array_equal(h.run(out, x)[0], h.run(proto, x)[0])
    # A float model that a pass leaves alone gets no such headline.
    float_result = Pipeline([Prune(PruneConfig(sparsity=0.5, exclude=("*",)))]).run(load_model(h.mlp()))
    assert not float_result.passes[0].headlines
