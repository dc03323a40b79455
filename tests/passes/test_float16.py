"""fp16 / bf16: half the file, outputs within cosine 0.9999, no NaN/Inf, io types unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxcompress.synthetic import synthetic_feeds
from onnxcompress.model import load_model, to_proto
from onnxcompress.passes import BFloat16, Float16
from onnxcompress.passes._half_store import cast_bytes
from tests import helpers

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted([*ROOT.glob("models/*.onnx"), *ROOT.glob("tests/assets/*.onnx")])


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("pass_class", [Float16, BFloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_half_precision_on_example_models(path: Path, pass_class) -> None:
    model = load_model(path)
    feeds = list(synthetic_feeds(model, 2, seed=0))
    result = pass_class().run(model)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    assert len(proto.SerializeToString()) < 0.57 * path.stat().st_size
    original = onnx.load(path)
    assert [i.type for i in proto.graph.input] == [i.type for i in original.graph.input]
    assert [o.type.tensor_type.elem_type for o in proto.graph.output] == [
        o.type.tensor_type.elem_type for o in original.graph.output]
    for feed in feeds:
        for want, got in zip(helpers.run(path, feed), helpers.run(proto, feed), strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.isfinite(got).all()
            assert _cos(got, want) > 0.9999


def test_float16_keeps_sensitive_ops_float32() -> None:
    model = load_model(ROOT / "tests/assets/transformer_digits.onnx")
    proto = to_proto(Float16(compute="always").run(model).model)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    for node in proto.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert types[node.output[0]] == onnx.TensorProto.FLOAT
        if node.op_type == "MatMul":
            assert types[node.output[0]] == onnx.TensorProto.FLOAT16
    # Weights are stored in half precision.
    big = [t for t in proto.graph.initializer if len(t.dims) == 2]
    assert big and all(t.data_type == onnx.TensorProto.FLOAT16 for t in big)


def test_float16_without_keep_io_types_and_subgraphs() -> None:
    model = helpers.mlp((16, 32, 8))
    proto = to_proto(Float16(keep_io_types=False).run(load_model(model)).model)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    x = helpers.rng(0).standard_normal((4, 16)).astype(np.float32)
    got = helpers.run(proto, {"x": x.astype(np.float16)})[0]
    assert got.dtype == np.float16 and _cos(got, helpers.run(model, {"x": x})[0]) > 0.9999
    # An If whose branches read main-graph values stays float32 inside and still runs.
    sub = helpers.if_subgraph_model()
    proto = to_proto(Float16(compute="always").run(load_model(sub)).model)
    onnx.checker.check_model(proto)
    feed = {"x": x[:, :8], "cond": np.array(True)}
    np.testing.assert_allclose(helpers.run(proto, feed)[0], helpers.run(sub, feed)[0], rtol=1e-6)


def test_float16_fidelity_check_keeps_sensitive_layers_float32() -> None:
    # An unreachable target: the check keeps the layers with most output deviation per byte
    # float32 within its budget (small layers; not the 64K-value third, over the budget), each
    # with its bias Add and Relu, says so in a headline, and the outputs move less than without
    # the check.
    model = helpers.mlp((4, 8, 256, 256, 4))
    feeds = list(synthetic_feeds(load_model(model), 4, seed=1))
    plain = to_proto(Float16(target_cosine=0, compute="always").run(load_model(model)).model)
    result = Float16(target_cosine=1.0, compute="always").run(load_model(model))
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    types = {t.name: t.data_type for t in proto.graph.initializer}
    assert types["fc0.weight"] == types["fc0.bias"] == onnx.TensorProto.FLOAT
    assert types["fc2.weight"] == onnx.TensorProto.FLOAT16
    kept = result.metrics["kept_float32_layers"]
    assert "fc0/MatMul" in kept and "fc2/MatMul" not in kept and len(kept) == len(set(kept))
    inferred = onnx.shape_inference.infer_shapes(proto).graph.value_info
    relu = next(n for n in proto.graph.node if n.name == "relu0")
    # The Relu after a kept layer stays float32 with it.
    assert {v.name: v.type.tensor_type.elem_type for v in inferred}[relu.output[0]] == onnx.TensorProto.FLOAT
    assert any("kept" in h and "fc0/MatMul" in h for h in result.headlines)
    assert any("below the target" in h for h in result.headlines)
    errors = {"plain": 0.0, "checked": 0.0}
    for feed in feeds:
        want = helpers.run(model, feed)[0]
        for key, m in (("plain", plain), ("checked", proto)):
            got = helpers.run(m, feed)[0]
            assert np.isfinite(got).all()
            errors[key] += float(np.square(got - want).sum())
    assert errors["checked"] < errors["plain"]


def test_float16_fidelity_check_degrades_when_the_model_cannot_run() -> None:
    from onnxcompress.data import feed_source
    from onnxcompress.passes import PassContext

    model = load_model(helpers.mlp((16, 32, 8)))
    bad = feed_source([{"x": np.zeros((2, 15), np.float32)}], model, check=False)  # wrong width
    result = Float16(compute="always").run(model, PassContext(calibration=bad))
    assert any(n.startswith("fidelity check off") for n in result.notes)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    assert {t.data_type for t in proto.graph.initializer} == {onnx.TensorProto.FLOAT16}
    x = helpers.rng(0).standard_normal((3, 16)).astype(np.float32)
    assert _cos(helpers.run(proto, {"x": x})[0], helpers.run(helpers.mlp((16, 32, 8)), {"x": x})[0]) > 0.9999


def test_float16_writes_no_inferred_types_into_subgraphs() -> None:
    """The types inferred for the conversion stay out of If branches that declared none: they
    were 48 KB of silero_vad's 1.3 MB fp16 file (0.556x -> 0.535x)."""
    r = helpers.rng(3)

    def branch(name: str) -> onnx.GraphProto:
        w = r.standard_normal((32, 64)).astype(np.float32)  # 2048 values: stored float16
        return onnx.helper.make_graph(
            [onnx.helper.make_node("Constant", [], [f"{name}_w"], value=onnx.numpy_helper.from_array(w)),
             onnx.helper.make_node("MatMul", ["x", f"{name}_w"], [f"{name}_mm"]),
             onnx.helper.make_node("Relu", [f"{name}_mm"], [f"{name}_relu"]),
             onnx.helper.make_node("Sigmoid", [f"{name}_relu"], [f"{name}_y"])],
            name, [], [onnx.helper.make_tensor_value_info(f"{name}_y", onnx.TensorProto.FLOAT, None)])

    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("If", ["cond"], ["y"], then_branch=branch("a"), else_branch=branch("b"))],
        "if_chain",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 32]),
         onnx.helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 64])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    result = Float16(compute="always").run(load_model(model))
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    branches = [a.g for n in proto.graph.node if n.op_type == "If" for a in n.attribute]
    assert len(branches) == 2 and all(len(b.value_info) == 0 for b in branches)
    consts = [a.t for b in branches for n in b.node if n.op_type == "Constant" for a in n.attribute]
    assert sorted(t.data_type for t in consts) == [onnx.TensorProto.FLOAT16] * 2
    assert proto.ByteSize() < 0.53 * model.ByteSize()
    x = r.standard_normal((4, 32)).astype(np.float32)
    for cond in (True, False):
        feed = {"x": x, "cond": np.array(cond)}
        want, got = helpers.run(model, feed)[0], helpers.run(proto, feed)[0]
        assert got.dtype == np.float32 and _cos(got, want) > 0.9999


def test_bfloat16_stores_constant_node_weights_and_upgrades_opset() -> None:
    """Weights held in Constant nodes at opset 11 (PP-OCR's exports are opset 12 with Constant
    weights: their bf16 files were 1.0x) are stored bfloat16 after an opset upgrade to 13."""
    model = helpers.constant_node_weights(helpers.mlp((64, 96, 32), opset=11))
    result = BFloat16().run(load_model(model))
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 13
    consts = [n for n in proto.graph.node if n.op_type == "Constant"]
    # a tensor whose half saves less than its Cast costs stays float32 (a 32-value bias)
    big = [n.attribute[0].t for n in consts if np.prod(n.attribute[0].t.dims) * 2 > cast_bytes(n.output[0])]
    small = [n.attribute[0].t for n in consts if n.attribute[0].t not in big]
    assert big and all(t.data_type == onnx.TensorProto.BFLOAT16 for t in big)
    assert small and all(t.data_type == onnx.TensorProto.FLOAT for t in small)
    assert sum(n.op_type == "Cast" for n in proto.graph.node) == len(big)
    assert len(result.layers) == len(big)
    assert proto.ByteSize() < 0.55 * model.ByteSize()
    x = helpers.rng(1).standard_normal((4, 64)).astype(np.float32)
    want, got = helpers.run(model, {"x": x})[0], helpers.run(proto, {"x": x})[0]
    assert got.dtype == np.float32 and _cos(got, want) > 0.999


def _timed(monkeypatch, fp16_over_fp32: float) -> list[int]:
    """The speed guard's timing replaced: fp16 takes ``fp16_over_fp32`` times float32's time on
    this "CPU" (which CPU the suite runs on must not decide what the tests see). Returns a list
    that counts the timings."""
    from onnxcompress.passes import _speed

    calls: list[int] = []

    def fake(sessions, feed, budget):  # noqa: ANN001, ARG001
        calls.append(1)
        return [1e-3, fp16_over_fp32 * 1e-3]

    monkeypatch.setattr(_speed, "alternate_latency", fake)
    _fp16_arithmetic(monkeypatch, True)
    return calls


def _fp16_arithmetic(monkeypatch, native: bool) -> None:
    """This "CPU" has (or lacks) float16 arithmetic, whatever the suite runs on."""
    from onnxcompress import cpu

    monkeypatch.setenv(cpu.ENV_FP16, "1" if native else "0")


def test_float16_on_a_cpu_without_float16_arithmetic_is_not_timed(monkeypatch) -> None:
    """x86 without AVX512-FP16 converts every fp16 op: fp16 compute is slower there (HiFi-GAN
    1.13-1.19x), and a 0.6 s timing had read 0.87-1.11x from run to run, each cached. Stored in
    fp16, computed in float32, with no timing."""
    calls = _timed(monkeypatch, 0.8)
    _fp16_arithmetic(monkeypatch, False)
    result = Float16().run(load_model(ROOT / "models" / "digits_cnn.onnx"))
    assert not calls and any("no float16 arithmetic" in h for h in result.headlines)
    assert _compute_types(to_proto(result.model)) == {onnx.TensorProto.FLOAT}


def _compute_types(proto: onnx.ModelProto) -> set[int]:
    """Element types of every MatMul/Conv/Gemm output."""
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.output]}
    return {types[n.output[0]] for n in proto.graph.node if n.op_type in ("MatMul", "Conv", "Gemm")}


def test_float16_compute_that_cannot_be_timed_is_not_kept(monkeypatch) -> None:
    """An fp16 graph the speed guard cannot time (madmom's beat TCN ran nothing on synthetic
    inputs: 2.42x float32's latency, kept "without a speed check") is stored in fp16 and computes
    in float32, whose speed is the original's."""
    from onnxcompress.errors import RuntimeUnavailableError
    from onnxcompress.passes import _speed

    def cannot_run(sessions, feed, budget):  # noqa: ANN001, ARG001
        raise RuntimeUnavailableError("onnxruntime cannot run the model on the timing sample")

    monkeypatch.setattr(_speed, "alternate_latency", cannot_run)
    _fp16_arithmetic(monkeypatch, True)
    path = ROOT / "models" / "digits_cnn.onnx"
    result = Float16().run(load_model(path))
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    assert "fp16_compute_latency_ratio" not in result.metrics
    assert any("fp16 compute could not be timed" in h for h in result.headlines)
    assert _compute_types(proto) == {onnx.TensorProto.FLOAT}
    assert len(proto.SerializeToString()) < 0.57 * path.stat().st_size


def test_float16_slower_on_this_cpu_stores_weights_and_computes_float32(monkeypatch) -> None:
    calls = _timed(monkeypatch, 1.2)
    path = ROOT / "models" / "digits_cnn.onnx"
    result = Float16().run(load_model(path))
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    assert calls and result.metrics["fp16_compute_latency_ratio"] == pytest.approx(1.2)
    assert any("fp16 compute measured 1.20x" in h for h in result.headlines)
    assert _compute_types(proto) == {onnx.TensorProto.FLOAT}
    weights = [t for t in proto.graph.initializer if t.name.endswith("_fp16")]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert len(proto.SerializeToString()) < 0.57 * path.stat().st_size
    feed = next(iter(synthetic_feeds(load_model(path), 1, seed=0)))
    want, got = helpers.run(path, feed)[0], helpers.run(proto, feed)[0]
    # float32 compute on float16-rounded weights: closer than fp16 compute, same file size
    compute = to_proto(Float16(compute="always").run(load_model(path)).model)
    assert _cos(got, want) > 0.99999 and _cos(got, want) >= _cos(helpers.run(compute, feed)[0], want)
    # the decision is cached per machine: a rerun writes the same bytes without timing again
    again = to_proto(Float16().run(load_model(path)).model)
    assert len(calls) == 1 and again.SerializeToString() == proto.SerializeToString()


def test_float16_not_slower_keeps_fp16_compute(monkeypatch) -> None:
    calls = _timed(monkeypatch, 0.8)
    result = Float16().run(load_model(ROOT / "models" / "digits_cnn.onnx"))
    assert calls and not result.headlines
    assert onnx.TensorProto.FLOAT16 in _compute_types(to_proto(result.model))


def test_float16_compute_never_and_fp16_io_are_not_timed(monkeypatch) -> None:
    calls = _timed(monkeypatch, 2.0)
    path = ROOT / "models" / "digits_cnn.onnx"
    stored = Float16(compute="never").run(load_model(path))
    assert _compute_types(to_proto(stored.model)) == {onnx.TensorProto.FLOAT}
    half_io = Float16(keep_io_types=False).run(load_model(path))  # fp16 in and out: a GPU target
    assert onnx.TensorProto.FLOAT16 in _compute_types(to_proto(half_io.model))
    assert not calls and not stored.headlines


def _batch_first_transpose_matmul() -> onnx.ModelProto:
    """A GPT block's attention input: Transpose(1, 0, 2) then a MatMul on a constant weight.
    In float16 compute, onnxruntime 1.32's optimizer dies on it at load (segmentation fault)."""
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array((rng.normal(size=(64, 96)) * 0.1).astype(np.float32), "W")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2], name="transpose"),
         onnx.helper.make_node("MatMul", ["t", "W"], ["y"], name="matmul")], "gpt_in",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", "t", 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["t", "b", 96])], [w])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])


def test_float16_compute_onnxruntime_cannot_load_falls_back_to_storage(tmp_path: Path) -> None:
    from onnxcompress.runtime import loads_in_child

    result = Float16(compute="always").run(load_model(_batch_first_transpose_matmul()))
    # whatever this onnxruntime does with the fp16 graph, the output loads (in a child, with the
    # user's optimizations), and where the fp16 graph could not, the weights are stored fp16
    # and computed float32, and the report says why
    assert loads_in_child(result.model) == (True, None)
    if _compute_types(to_proto(result.model)) == {onnx.TensorProto.FLOAT}:
        assert any("fp16 compute not used: onnxruntime" in h for h in result.headlines)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in to_proto(result.model).graph.initializer)


def test_loads_in_child_says_why_a_model_does_not_load() -> None:
    from onnxcompress.runtime import loads_in_child

    assert loads_in_child(load_model(ROOT / "models" / "digits_mlp.onnx")) == (True, None)
    bad = _batch_first_transpose_matmul()
    bad.graph.node[1].op_type = "NoSuchOp"
    ok, why = loads_in_child(load_model(bad))
    assert not ok and "NoSuchOp" in why and "cannot load" in why


def test_an_already_quantized_model_is_left_as_it_is() -> None:
    """float16 and bfloat16 leave an int8 (QDQ) model alone: rounding its scales, biases and
    norms moved what its int8 activations round to (pipecat's Smart Turn: 4-5 of 32 decisions
    flipped for 4% of the file). A run's own earlier int8 pass is no such model: auto's plans
    store some layers in int8 (DequantizeLinear) and others in float16 in one run."""
    from onnxcompress import Pipeline

    model = helpers.mlp((64, 64, 64))
    feeds = [{"x": np.random.default_rng(i).standard_normal((2, 64)).astype(np.float32)} for i in range(4)]
    int8 = Pipeline.from_recipe({"passes": [{"pass": "quantize", "mode": "static", "speed_check": False}]}).run(
        load_model(model), calibration=feeds).model
    proto = to_proto(int8)
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    for step in ({"pass": "float16", "enabled": True}, {"pass": "bfloat16", "enabled": True}):
        result = Pipeline.from_recipe({"passes": [step]}).run(load_model(proto))
        assert any("already quantized" in h for h in result.headlines), result.headlines
        assert onnx.printer.to_text(to_proto(result.model).graph) == onnx.printer.to_text(proto.graph)
    mixed = Pipeline.from_recipe({"passes": [
        {"pass": "quantize", "mode": "weights", "weight_form": "dequantize", "exclude": ["fc1.weight"]},
        {"pass": "bfloat16", "dtype": "float16", "min_size": 1, "exclude": ["fc0.weight"]}]}).run(
        load_model(model))
    assert [layer.name for layer in mixed.passes[1].layers if layer.name == "fc1.weight"] == ["fc1.weight"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_storage_never_grows_the_file(dtype: str) -> None:
    """Every tensor is stored narrow only where its half saves more than the Cast and the second
    name cost: auto mode's fp16 option (min_size 1) made batch 33's MNIST file 35 bytes larger
    than leaving the layer float (a Cast for each 8-16 value bias and scale)."""
    model = helpers.mlp((24, 8, 3), opset=13)
    result = BFloat16(dtype=dtype, min_size=1).run(load_model(model))
    proto = to_proto(result.model)
    assert proto.ByteSize() < model.ByteSize()
    kept = {t.name: t.data_type for t in proto.graph.initializer}
    narrow = onnx.TensorProto.FLOAT16 if dtype == "float16" else onnx.TensorProto.BFLOAT16
    assert [name for name, t in kept.items() if t == narrow] == [f"fc0.weight_{'fp16' if dtype == 'float16' else 'bf16'}"]
    assert all(kept[name] == onnx.TensorProto.FLOAT for name in ("fc0.bias", "fc1.bias", "fc1.weight"))
    assert any("left float32: a Cast would add more bytes" in n for n in result.notes)
