"""The k-means pass's int8-exact form at 8 bits (``_kmeans_int8``): int8 per channel decoded by
one Cast, the channel scales on the consumer's output, so onnxruntime's fold holds no int32
copy. Structure, onnx.checker, and numbers through onnxruntime against numpy formulas."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from onnxcompress import Pipeline
from onnxcompress.model import to_proto
from onnxcompress.passes import WeightSharing
from tests import helpers as h

F = onnx.TensorProto.FLOAT


pytestmark = pytest.mark.usefixtures("exact_form_on_small_models")


def share(model, **options):
    options.setdefault("fold_batchnorm", False)
    options.setdefault("rest", "float32")  # exact decodes; the float16 rest: test_weight_sharing_rest.py
    options.setdefault("bias_correction", False)  # the float model's biases: tests/passes/test_quantization_bias.py
    result = Pipeline([WeightSharing(**options)]).run(model)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    return result.passes[0], proto


def ops(proto: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in proto.graph.node)


def int8_error(w: np.ndarray, axis: int) -> float:
    """Symmetric int8 per channel, absmax / 127 (the bar), written out independently."""
    amax = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis), keepdims=True)
    step = np.where(amax > 0, amax / 127.0, 1.0)
    q = np.clip(np.round(w / step), -127, 127) * step
    return float(np.linalg.norm(q - w) / np.linalg.norm(w))


def stored(proto: onnx.ModelProto, name: str) -> tuple[np.ndarray, np.ndarray]:
    inits = {t.name: onh.to_array(t) for t in proto.graph.initializer}
    return inits[f"{name}.q"], inits[f"{name}.scale"]


def conv_model(w: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    graph = oh.make_graph(
        [oh.make_node("Conv", ["x", "W", "B"], ["y"], pads=[1, 1, 1, 1])], "g",
        [oh.make_tensor_value_info("x", F, [1, w.shape[1], 8, 8])],
        [oh.make_tensor_value_info("y", F, [1, w.shape[0], 8, 8])],
        [onh.from_array(w, "W"), onh.from_array(b, "B")])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_conv_weight_is_int8_decoded_by_one_cast_with_scales_after_the_conv():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 64, 3, 3)) * rng.uniform(0.01, 1, (64, 1, 1, 1))).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    result, proto = share(conv_model(w, b), bits=8)
    layer = result.layers[0]
    assert layer.extra["storage"] == "int8" and layer.extra["stored_bits"] == 8
    # No Gather: no int32 copy to fold; one Cast for the weight, one for its float16 scales.
    assert ops(proto) == {"Cast": 2, "Conv": 1, "Mul": 1}
    assert [o.name for o in proto.graph.output] == ["y"]  # the output keeps its name
    q, s = stored(proto, "W")
    assert q.dtype == np.int8 and q.shape == w.shape and np.abs(q).max() <= 127
    assert s.dtype == np.float16 and s.shape == (1, 64, 1, 1) and (s > 0).all()
    decoded = q.astype(np.float32) * s.astype(np.float32).reshape(64, 1, 1, 1)
    error = float(np.linalg.norm(decoded - w) / np.linalg.norm(w))
    assert error == pytest.approx(layer.error, rel=1e-4)
    assert error <= int8_error(w, 0) + 1e-7  # never less faithful than int8 per channel
    x = rng.standard_normal((1, 64, 8, 8)).astype(np.float32)
    want = h.run(conv_model(decoded, b), {"x": x})[0]  # the float conv of the decoded weight
    np.testing.assert_allclose(h.run(proto, {"x": x})[0], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", ["MatMul+Add", "Gemm"])
def test_matmul_and_gemm_weights_take_their_scales_on_the_output_columns(op):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((256, 128)) * rng.uniform(0.05, 1, 128)).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    if op == "Gemm":  # transB: the stored weight is [out, in], output channels on axis 0
        nodes = [oh.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)]
        arrays = {"W": np.ascontiguousarray(w.T), "B": b}
    else:
        nodes = [oh.make_node("MatMul", ["x", "W"], ["m"]), oh.make_node("Add", ["m", "B"], ["y"])]
        arrays = {"W": w, "B": b}
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", F, ["N", 256])],
                          [oh.make_tensor_value_info("y", F, ["N", 128])])
    model = h.attach_initializers(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), arrays)
    result, proto = share(model, bits=8)
    assert result.layers[0].extra["storage"] == "int8"
    assert ops(proto)["Gather"] == 0 and ops(proto)["Mul"] == 1
    q, s = stored(proto, "W")
    q = q.astype(np.float32)
    decoded = q * s.reshape(1, -1) if op != "Gemm" else (q * s[:, None]).T
    assert float(np.linalg.norm(decoded - w) / np.linalg.norm(w)) <= int8_error(w, 1) + 1e-7
    x = rng.standard_normal((5, 256)).astype(np.float32)
    np.testing.assert_allclose(h.run(proto, {"x": x})[0], x @ decoded + b, rtol=1e-4, atol=1e-4)


def test_codebook_is_kept_where_it_halves_the_error_or_asked_for():
    """An already-shared weight (200 values): its codebook holds it exactly, int8 does not, so
    auto keeps the Gather decode; decode="codebook" keeps it for any weight, "int8" forces it."""
    rng = np.random.default_rng(2)
    levels = rng.standard_normal(200).astype(np.float32)
    shared = rng.choice(levels, (256, 128))
    plain = rng.standard_normal((256, 128)).astype(np.float32)
    model = h.attach_initializers(_two_matmuls(), {"A": shared, "C": plain.T})
    result, proto = share(model, bits=8)
    by = {s.name: s for s in result.layers}
    assert by["A"].extra["storage"] == "uint8" and by["A"].error == 0
    assert by["C"].extra["storage"] == "int8"
    result, _ = share(model, bits=8, decode="codebook")
    assert {s.extra["storage"] for s in result.layers} == {"uint8"}
    result, _ = share(model, bits=8, decode="int8")
    assert {s.extra["storage"] for s in result.layers} == {"int8"}


def _two_matmuls() -> onnx.ModelProto:
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "A"], ["a"]), oh.make_node("Relu", ["a"], ["r"]),
         oh.make_node("MatMul", ["r", "C"], ["y"])], "g",
        [oh.make_tensor_value_info("x", F, ["N", 256])], [oh.make_tensor_value_info("y", F, ["N", 256])])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_a_weight_with_two_readers_keeps_the_codebook_decode():
    """Scales on an output need one consumer: a weight two MatMuls read is decoded by Gather."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((192, 192)).astype(np.float32)
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "W"], ["a"]), oh.make_node("MatMul", ["a", "W"], ["y"])], "g",
        [oh.make_tensor_value_info("x", F, ["N", 192])], [oh.make_tensor_value_info("y", F, ["N", 192])])
    model = h.attach_initializers(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), {"W": w})
    result, proto = share(model, bits=8)
    assert result.layers[0].extra["storage"] == "uint8" and ops(proto)["Gather"] == 1


def test_bias_correction_happens_before_the_bias_is_divided_by_the_scales():
    """With calibration data the mean output shift of the int8 weights is folded into the Conv
    bias first, in the output's units; then the bias is divided by the channel scales: the
    output means over the data match the original's (were it corrected after the division, the
    correction would be scaled by 1 / scale, ~100x too large)."""
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32)
    w[:, :, 0, 0] += 0.004  # an offset int8 rounding meets unevenly, so the shift is visible
    b = rng.standard_normal(64).astype(np.float32)
    # inputs of unequal non-zero means per channel (equal ones: the kept channel sums cancel it)
    x = (rng.standard_normal((8, 1, 64, 8, 8)) + rng.uniform(0, 6, (64, 1, 1))).astype(np.float32)
    feeds = [{"x": x[i]} for i in range(8)]
    model = conv_model(w, b)
    result = Pipeline([WeightSharing(bits=8, fold_batchnorm=False, decode="int8")]).run(
        model, calibration=feeds)
    layer = result.passes[0].layers[0]
    assert layer.extra["storage"] == "int8" and layer.extra["bias_corrected"] is True
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    plain = to_proto(Pipeline([WeightSharing(bits=8, fold_batchnorm=False, decode="int8",
                                             bias_correction=False)]).run(model).model)

    def means(m):
        return np.mean([h.run(m, f)[0].mean(axis=(0, 2, 3)) for f in feeds], axis=0)

    ref = means(model)
    shift_fixed, shift_plain = np.abs(means(proto) - ref).max(), np.abs(means(plain) - ref).max()
    assert shift_plain > 0
    assert shift_fixed < 0.5 * shift_plain


def test_scales_are_float16_where_channels_pay_for_the_cast_and_onnxruntime_fuses_them():
    """float16 scales (chosen on the float16 grid, still never worse than int8 per channel)
    for a 64-channel Conv: onnxruntime folds their Cast and fuses the Mul into the Conv, so
    the session runs one Conv. A 32-channel Conv keeps float32 scales (a Cast node costs more
    bytes than 32 channels save)."""
    rng = np.random.default_rng(7)
    for channels, half in ((32, False), (64, True)):
        w = (rng.standard_normal((channels, 128, 3, 3))
             * rng.uniform(0.01, 1, (channels, 1, 1, 1))).astype(np.float32)
        b = rng.standard_normal(channels).astype(np.float32)
        result, proto = share(conv_model(w, b), bits=8, decode="int8")
        q, s = stored(proto, "W")
        assert (s.dtype == np.float16) is half
        decoded = q.astype(np.float32) * s.astype(np.float32).reshape(channels, 1, 1, 1)
        error = float(np.linalg.norm(decoded - w) / np.linalg.norm(w))
        assert error == pytest.approx(result.layers[0].error, rel=1e-4)
        assert error <= int8_error(w, 0)
        x = rng.standard_normal((1, 128, 8, 8)).astype(np.float32)
        want = h.run(conv_model(decoded, b), {"x": x})[0]
        np.testing.assert_allclose(h.run(proto, {"x": x})[0], want, rtol=1e-4, atol=1e-4)
    assert _optimized_ops(proto) == {"Conv": 1}


def _optimized_ops(proto: onnx.ModelProto) -> collections.Counter:
    """The op types of the graph onnxruntime runs after its basic optimisations (constant
    folding, Conv + Mul fusion)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return ops(onnx.load(options.optimized_model_filepath))


def test_a_channel_of_subnormal_weights_with_a_bias_decodes_to_zero_not_to_nan():
    """ppocr_rec has a Conv channel of 3e-39 weights: once the Conv had a bias, bias / scale was
    inf and every output NaN."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    w[5] = 3e-39
    b = rng.standard_normal(64).astype(np.float32)
    result, proto = share(conv_model(w, b), bits=8)
    assert result.layers[0].extra["storage"] == "int8"
    x = rng.standard_normal((1, 64, 8, 8)).astype(np.float32)
    got, want = h.run(proto, {"x": x})[0], h.run(conv_model(w, b), {"x": x})[0]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[0, 5], want[0, 5], rtol=1e-6, atol=1e-6)  # the bias alone


# -- the folded form: a small weight whose codebook costs more than int8 -------------------------


def _small_mlp() -> onnx.ModelProto:
    """An MLP of batch 33's iris kind, 4 -> 64 -> 48 -> 3: only the hidden Gemm reaches 512 values."""
    return h.mlp((4, 64, 48, 3), opset=13)


def test_a_small_weight_whose_codebook_costs_more_is_int8_folded_at_load(monkeypatch):
    """A 256-entry codebook is 512-1024 B: on iris' 576-value Gemm 22.3 bits a weight, and k-means 8
    wrote a larger file than int8 (1.18x against 1.67x). Stored int8 per channel, decoded by Cast +
    Mul in front of the Gemm (onnxruntime folds both at load), never less faithful than int8."""
    from onnxcompress.passes import _kmeans_int8_store
    from onnxcompress.passes._int8 import FOLDED_DECODE

    model = _small_mlp()
    w = onh.to_array(next(t for t in model.graph.initializer if t.name == "fc1.weight"))
    result, proto = share(model, bits=8, min_size=512)
    layer = result.layers[0]
    assert [s.name for s in result.layers] == ["fc1.weight"]
    assert layer.extra["storage"] == "int8" and layer.extra["decode"] == FOLDED_DECODE
    assert layer.bits < 9 and layer.error <= int8_error(w, 1) + 1e-7
    assert "Gather" not in ops(proto) and ops(proto)["Mul"] == 1
    q = next(onh.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8)
    assert q.shape == w.shape
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    got, want = h.run(proto, {"x": x})[0], h.run(model, {"x": x})[0]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.02
    monkeypatch.setattr(_kmeans_int8_store, "CODEBOOK_PREMIUM", float("inf"))
    codebook = share(model, bits=8, min_size=512)[1]
    assert "Gather" in ops(codebook) and proto.ByteSize() < codebook.ByteSize() - 300


def test_a_codebook_that_holds_the_weight_exactly_or_pays_for_itself_stays():
    """The folded form only where the codebook costs more than int8 and does not halve its error:
    a 3072-value weight on 200 levels is held exactly (error 0), and a 24576-value weight carries
    its 512 B codebook within CODEBOOK_PREMIUM."""
    rng = np.random.default_rng(3)
    levels = rng.standard_normal(200).astype(np.float32)
    exact = h.attach_initializers(_small_mlp(), {"fc1.weight": levels[rng.integers(0, 200, (64, 48))]})
    result, proto = share(exact, bits=8, min_size=512)
    assert result.layers[0].extra["storage"] == "uint8" and result.layers[0].error == 0
    large = h.mlp((4, 96, 256, 3), opset=13)  # fc1: 24576 values
    result, proto = share(large, bits=8, min_size=20000)
    assert [s.name for s in result.layers] == ["fc1.weight"]
    assert result.layers[0].extra["storage"] == "uint8" and "Gather" in ops(proto)


def test_a_weight_int8_would_round_mostly_to_zero_keeps_its_codebook(monkeypatch):
    """Batch 34's n-gram classifier: int8 per channel (the exact form k-means 8 takes for a large
    weight) rounds 90% of the weights to zero; a codebook's levels follow their density."""
    from onnxcompress.passes import _qdq

    rng = np.random.default_rng(7)
    w = rng.standard_normal((16, 4016)) * 1e-4  # the bulk: n-grams seen rarely
    big = rng.random(w.shape) < 0.02
    w[big] = rng.standard_normal(int(big.sum()))  # the few that decide
    graph = oh.make_graph([oh.make_node("Gemm", ["x", "W"], ["y"], transB=1)], "g",
                          [oh.make_tensor_value_info("x", F, ["N", 4016])],
                          [oh.make_tensor_value_info("y", F, ["N", 16])])
    model = h.attach_initializers(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]),
                                  {"W": w.astype(np.float32)})
    result, _ = share(model, bits=8)
    assert result.layers[0].extra["storage"] == "uint8"
    monkeypatch.setattr(_qdq, "ZEROED_SHARE", 2.0)  # without the rule: the int8 form
    result, _ = share(model, bits=8)
    assert result.layers[0].extra["storage"] == "int8"
