"""k-means decode forms that fold lean in onnxruntime, the 8-bit-vs-int8 fidelity rule, and the
blockwise helpers the large-model path uses (each checked against a direct numpy formula)."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import onnx.parser
import pytest

from onnxcompress import Pipeline, load_model
from onnxcompress.model import to_proto
from onnxcompress.passes import WeightSharing
from onnxcompress.passes._kmeans_fit import _channel_reduce, _divide, _int8_error
from tests import helpers as h


def one_matmul(w: np.ndarray, opset: int = 17) -> onnx.ModelProto:
    """y = x @ W: fed the identity, the output is the decoded weight exactly (one product a sum)."""
    rows, cols = w.shape
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", rows])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", cols])],
        [onh.from_array(w, "W")],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])


def share(model, **options):
    options.setdefault("rest", "float32")  # exact decodes; the float16 rest: test_weight_sharing_rest.py
    result = Pipeline([WeightSharing(**options)]).run(model)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    return result.passes[0], proto


def decoded(proto: onnx.ModelProto, rows: int) -> np.ndarray:
    return h.run(proto, {"x": np.eye(rows, dtype=np.float32)})[0]


def test_8_bits_with_fewer_levels_keep_uint8_indices_and_one_gather():
    """An already-shared weight (100 distinct values) asked for 8 bits: uint8 indices, Cast +
    Gather only (bit planes at 7 bits folded through ~8 uint8 intermediates a plane:
    captcha_crnn's session memory was 2.10x fp32's), decoded exactly codebook[indices]."""
    rng = np.random.default_rng(0)
    levels = rng.standard_normal(100).astype(np.float32)
    w = rng.choice(levels, (128, 96))
    result, proto = share(one_matmul(w), bits=8)
    layer = result.layers[0]
    assert layer.extra["storage"] == "uint8" and layer.extra["stored_bits"] == 8
    assert layer.extra["clusters_used"] == 100 and layer.error == 0
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    assert ops == {"Cast": 1, "Gather": 1, "MatMul": 1}
    inits = {t.name: onh.to_array(t) for t in proto.graph.initializer}
    q = next(a for n, a in inits.items() if n.endswith(".q"))
    book = next(a for n, a in inits.items() if n.endswith(".codebook"))
    assert q.dtype == np.uint8 and q.shape == w.shape
    expected = book.astype(np.float32)[q.astype(np.int64)]
    got = decoded(proto, w.shape[0])
    assert np.array_equal(got, expected)
    assert np.array_equal(got, w)  # 100 levels in 256: lossless


def test_8_bits_are_at_least_as_faithful_as_int8_per_channel():
    """Channels on integer grids of their own scale (a model quantized per channel before
    export; captcha_crnn: 330 distinct values in a tensor, <= 108 a channel): one codebook for
    the tensor cannot hold them all, int8 per-channel nearly can; the 8-bit layer must err no
    more than int8 per-channel weights, in the weight and in the output through onnxruntime."""
    rng = np.random.default_rng(1)
    rows, cols = 96, 64
    scales = (10.0 ** rng.uniform(-3, -1, cols)).astype(np.float32)
    q = np.stack([rng.choice(np.arange(-100, 101), 40)[rng.integers(0, 40, rows)] for _ in range(cols)], 1)
    w = (q * scales).astype(np.float32)
    assert len(np.unique(w)) > 256
    # int8 per output channel (axis 1 of a MatMul weight), written out independently.
    step = np.abs(w).max(axis=0, keepdims=True) / 127.0
    int8 = (np.clip(np.round(w / step), -127, 127) * step).astype(np.float32)
    int8_error = np.linalg.norm(int8 - w) / np.linalg.norm(w)
    assert int8_error > 0
    result, proto = share(one_matmul(w), bits=8)
    layer = result.layers[0]
    assert layer.error <= int8_error
    x = rng.standard_normal((8, rows)).astype(np.float32)
    y = x @ w
    y_kmeans = h.run(proto, {"x": x})[0]
    assert np.linalg.norm(y_kmeans - y) <= np.linalg.norm(x @ int8 - y) + 1e-6
    assert collections.Counter(n.op_type for n in proto.graph.node)["BitShift"] == 0


@pytest.mark.parametrize("bits", [8, 4])
def test_a_weight_read_by_overlapping_slices_is_stored_once_and_decoded_in_front(bits):
    """An LSTM-cell export: one [256, 64] matrix read by three overlapping row Slices (silero_vad:
    its LSTM weights stayed float, 1.55x). The matrix is stored once as indices, decoded in front
    of the Slices, which stay; the outputs are the Gemms of the decoded matrix's rows."""
    from tests.passes.test_quantization_guard import overlapping_slices

    proto = overlapping_slices()
    result, q = share(proto, bits=bits)
    layer = next(s for s in result.layers if s.name == "W")
    assert layer.extra["decoded"] == "in front of its shape-only readers"
    assert layer.extra["requested_bits"] == bits and layer.bytes_after < layer.bytes_before / 3
    ops = collections.Counter(n.op_type for n in q.graph.node)
    assert ops["Slice"] == 3 and ops["Gather"] == 1 and ops["Gemm"] == 3
    floats = [t.name for t in q.graph.initializer
              if t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) >= 64 * 64]
    assert floats == []
    # The decoded matrix, read from the compressed model by onnxruntime (the Slices' input).
    inner = onnx.ModelProto.FromString(q.SerializeToString())
    slice_in = next(n.input[0] for n in inner.graph.node if n.op_type == "Slice")
    inner.graph.output.append(oh.make_tensor_value_info(slice_in, onnx.TensorProto.FLOAT, None))
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    y, deq = h.run(inner, {"x": x})
    w = onh.to_array(next(t for t in proto.graph.initializer if t.name == "W"))
    assert deq.shape == w.shape and max(len(np.unique(row)) for row in deq) <= 2**bits
    assert np.linalg.norm(deq - w) / np.linalg.norm(w) == pytest.approx(layer.error, rel=1e-3)
    want = np.concatenate([x @ deq[lo:hi].T for lo, hi in [(0, 128), (64, 192), (128, 256)]], 1)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    if bits == 8:
        assert layer.error <= _int8_error(w, 0)


@pytest.mark.parametrize(
    ("shape", "axis"), [((6, 5, 3, 3), 0), ((40, 7), 1), ((3, 200000), 0), ((3, 4, 5), 2), ((50, 9), None)]
)
def test_blockwise_helpers_match_the_whole_array_formulas(shape, axis):
    rng = np.random.default_rng(2)
    a = (rng.standard_normal(shape) * rng.uniform(0.1, 3, shape[-1])).astype(np.float32)
    work = a.astype(np.float64)
    if axis is None:
        amax = np.abs(work).max()
    else:
        other = tuple(i for i in range(a.ndim) if i != axis)
        amax = np.abs(work).max(axis=other, keepdims=True)
        assert np.array_equal(_channel_reduce(a, axis, "absmax"), amax.reshape(-1))
        np.testing.assert_allclose(_channel_reduce(a, axis, "sumsq"), (work**2).sum(axis=other), rtol=1e-12)
        s = amax + 1.0
        assert np.array_equal(_divide(a, s, axis, np.float32), (work / s).astype(np.float32))
    # int8 per channel's scales (float16's grid); one per-tensor scale stays max / 127
    step = (h.int8_scales(amax) if axis is not None else np.where(amax > 0, amax / 127.0, 1.0))
    step = np.asarray(step, np.float64)
    q = np.clip(np.round(work / step), -127, 127) * step
    expected = np.linalg.norm(q - work) / np.linalg.norm(work)
    assert _int8_error(a, axis) == pytest.approx(expected, rel=1e-9)


def test_external_data_model_is_checked_without_inlining_its_weights(tmp_path):
    """The pipeline's checks of an external-data model run on files (onnx.checker) and a lean
    session (no folding, no prepacking); they still find what they must."""
    from onnxcompress import checking
    from onnxcompress.model import external_base_dir

    model = h.mlp((256, 256, 10))
    path = tmp_path / "ext.onnx"
    external = onnx.ModelProto.FromString(model.SerializeToString())  # save() rewrites its input
    onnx.save(external, path, save_as_external_data=True, location="ext.onnx.data", size_threshold=1024)
    loaded = load_model(path)
    assert external_base_dir(loaded) is not None
    assert checking.model_problem(loaded, need_ort=True) is None
    result, proto = share(loaded, bits=8)
    assert len(result.layers) == 2
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)}
    np.testing.assert_allclose(h.run(proto, feeds)[0], h.run(model, feeds)[0], rtol=0.1, atol=0.1)
    broken = load_model(path)
    node = next(iter(broken.graph))
    node.op_type = "NoSuchOp"
    assert checking.model_problem(broken, need_ort=True) is not None


def stem_and_body(stem: np.ndarray, body: np.ndarray) -> onnx.ModelProto:
    """y = relu(x @ S) @ B: S is the first layer (reads the graph input), B the bulk."""
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "S"], ["h"]), oh.make_node("Relu", ["h"], ["r"]),
         oh.make_node("MatMul", ["r", "B"], ["y"])],
        "g",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", stem.shape[0]])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", body.shape[1]])],
        [onh.from_array(stem, "S"), onh.from_array(body, "B")],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_a_small_first_layer_stays_float_at_8_bits_unless_256_levels_hold_it():
    """The first layer meets the raw input (captcha_crnn: 0..255 pixels): at 8 bits a small
    one (<= 1% of the weights) stays float, as int8's fidelity guard keeps it, unless it has at
    most 256 values (then indices are exact); at 4 bits, or with a width set for it, it is
    shared like the rest."""
    rng = np.random.default_rng(4)
    stem = rng.standard_normal((64, 32)).astype(np.float32)
    body = rng.standard_normal((32, 8192)).astype(np.float32)
    x = rng.standard_normal((3, 64)).astype(np.float32) * 100
    result, proto = share(stem_and_body(stem, body), bits=8)
    assert [s.name for s in result.layers] == ["B"]
    assert "first layer" in next(r for r, names in result.skipped.items() if "S" in names)
    inits = {t.name: onh.to_array(t) for t in proto.graph.initializer}
    assert np.array_equal(inits["S"], stem)  # float, untouched
    # The output is the float stem followed by the decoded body (read back through onnxruntime).
    body_q = decoded(body_only(proto), 32)
    want = np.maximum(x @ stem, 0) @ body_q
    np.testing.assert_allclose(h.run(proto, {"x": x})[0], want, rtol=1e-4, atol=1e-3)
    for options in ({"bits": 4}, {"bits": 8, "layer_bits": {"S": 8}}):
        result, _ = share(stem_and_body(stem, body), **options)
        assert sorted(s.name for s in result.layers) == ["B", "S"]
    levels = rng.standard_normal(200).astype(np.float32)
    result, proto = share(stem_and_body(rng.choice(levels, (64, 32)), body), bits=8)
    stem_stat = next(s for s in result.layers if s.name == "S")
    assert stem_stat.error == 0


def body_only(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The compressed model with its input moved to the body's MatMul: x @ decoded B."""
    m = onnx.ModelProto.FromString(proto.SerializeToString())
    keep = [n for n in m.graph.node if n.op_type != "Relu" and "S" not in n.input]
    last = next(n for n in keep if n.op_type == "MatMul")
    last.input[0] = "x"
    del m.graph.node[:]
    m.graph.node.extend(keep)
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 32
    return m


@pytest.mark.parametrize(("bits", "opset"), [(8, 17), (4, 21), (3, 13)])
def test_runtime_decode_keeps_the_lookup_out_of_onnxruntimes_fold(bits, opset, tmp_path):
    """decode="runtime": every index tensor (uint8, UINT4, bit planes) reaches its int32 Cast
    through DequantizeLinear(scale 1), which onnxruntime does not fold, so the session keeps the
    Gather (and the stored indices, not the float weight); the numbers are exactly the codebook
    decode's, and no weight takes the int8-exact form."""
    import onnxruntime as ort

    rng = np.random.default_rng(11)
    w = (rng.standard_normal((256, 192)) * rng.uniform(0.1, 1, 192)).astype(np.float32)
    _, folded = share(one_matmul(w, opset), bits=bits, decode="codebook")
    result, proto = share(one_matmul(w, opset), bits=bits, decode="runtime")
    assert result.layers[0].extra["storage"] != "int8"
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    assert ops["DequantizeLinear"] >= 1 and ops["Gather"] == 1
    assert np.array_equal(decoded(proto, 256), decoded(folded, 256))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ran = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    assert ran["Gather"] == 1 and ran["DequantizeLinear"] >= 1  # the lookup runs every call
    options.optimized_model_filepath = str(tmp_path / "folded.onnx")
    ort.InferenceSession(folded.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert "Gather" not in {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}


def test_codebook_channel_scales_are_stored_in_float16():
    """Channels of widely different scale take channel scales; those are rounded to float16
    before clustering (any positive scale serves), so they are stored in half the bytes behind
    a Cast, and the decode computes exactly codebook[indices] * scale."""
    rng = np.random.default_rng(12)
    w = (rng.standard_normal((256, 192)) * rng.uniform(0.001, 1, 192)).astype(np.float32)
    result, proto = share(one_matmul(w), bits=4, decode="codebook")
    assert result.layers[0].extra["channel_scales"] is True
    inits = {t.name: onh.to_array(t) for t in proto.graph.initializer}
    s = next(a for n, a in inits.items() if n.endswith(".scale"))
    q = next(a for n, a in inits.items() if n.endswith(".q"))
    book = next(a for n, a in inits.items() if n.endswith(".codebook"))
    assert s.dtype == np.float16 and s.size == 192
    expected = book.astype(np.float32)[q.astype(np.int64)] * s.astype(np.float32).reshape(1, -1)
    got = decoded(proto, 256)
    np.testing.assert_array_equal(got, expected)
    error = float(np.linalg.norm(got - w) / np.linalg.norm(w))
    assert error == pytest.approx(result.layers[0].error, rel=1e-4)


def test_float16_channel_scales_fold_at_load(tmp_path):
    """A float16 weight's channel scales are applied in float32 and cast back: onnxruntime has no
    float16 Mul on CPU, so a float16 Mul of weight and scales stayed in the optimized graph, ran
    every call and kept its Conv out of the NCHWc layout (slovorez k-means 8: 1.21x fp32's
    latency, 0.97x now)."""
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    w = (rng.standard_normal((64, 48, 3, 3)) * rng.uniform(0.001, 1, (64, 1, 1, 1))).astype(np.float16)
    graph = oh.make_graph(
        [oh.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "fp16conv",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, ["N", 48, 16, 16])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, ["N", 64, 16, 16])],
        initializer=[onh.from_array(w, "w")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    result, proto = share(model, bits=8, decode="codebook")
    assert result.layers[0].extra["channel_scales"] is True
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ran = {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}
    assert not ran & {"Mul", "Gather"}, ran  # the whole decode folded at load
    x = rng.standard_normal((1, 48, 16, 16)).astype(np.float16)
    got = session.run(None, {"x": x})[0].astype(np.float32)
    want = h.run(model, {"x": x})[0].astype(np.float32)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.02


def test_a_small_models_8bit_weights_keep_codebooks_that_fold_to_its_own_graph(monkeypatch):
    """A model under ``_kmeans_int8.SMALL_MODEL_VALUES`` keeps codebooks at 8 bits even on weights
    large enough for the int8-exact form: folded at load they leave the fp32 graph, where the exact
    form's scale Mul after each op is a per-call cost (atspm_head: its Gemm lost the Gelu fusion).
    Above the bound (here: the bound lowered) the same weight takes the exact form."""
    from onnxcompress.passes import _kmeans_int8

    proto = h.mlp((16, 256, 256, 10))  # fc1: 65536 values, above INT8_FORM_MIN_SIZE
    small = share(proto, bits=8)[1]
    int8 = onnx.TensorProto.INT8  # the exact form's codes (a codebook's indices are uint8)
    # (fc0 and fc2, 4096 and 2560 values, take int8 folded at load: test_weight_sharing_int8.py)
    assert not [t.name for t in small.graph.initializer if t.data_type == int8 and t.name.startswith("fc1")]
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_allclose(h.run(small, {"x": x})[0], h.run(proto, {"x": x})[0], rtol=0.05, atol=0.02)
    monkeypatch.setattr(_kmeans_int8, "SMALL_MODEL_VALUES", 0)
    large = share(proto, bits=8)[1]
    assert "fc1.weight.q" in {t.name for t in large.graph.initializer if t.data_type == int8}


def _lookup_at_8_bits() -> tuple[np.ndarray, object, onnx.ModelProto]:
    """A model that is only a 3000 x 100 table's lookup, shared at 8 bits: (table, result, model)."""
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[n] ids) => (float[n, 100] rows) { rows = Gather <axis = 0> (table, ids) }
    """)
    table = np.random.default_rng(0).standard_normal((3000, 100)).astype(np.float32)
    result, q = share(h.attach_initializers(proto, {"table": table}), bits=8)
    return table, result, q


def test_a_large_gather_table_at_8_bits_keeps_int8_rows_gathered_at_run_time(monkeypatch):
    """A codebook's decode folds the whole table at load: lac_encoder's 58224 x 128 embedding at
    k-means 8 peaked at 141.9 MB against fp32's 71.0, live no lower. At 8 bits a table only row
    Gathers read (in a model past _kmeans_int8.SMALL_MODEL_VALUES) is int8 rows scaled after the
    Gather, as quantize stores it: peak 23.8 MB, live 20.4. (This model is only its table, whose
    rows a tiny model decodes at load: ``TINY_COMPUTE_VALUES`` is lowered to see the rows.)"""
    from onnxcompress.passes import _kmeans_int8

    monkeypatch.setattr(_kmeans_int8, "TINY_COMPUTE_VALUES", 0)
    table, result, q = _lookup_at_8_bits()
    gather = next(n for n in q.graph.node if n.op_type == "Gather" and n.input[1] == "ids")
    stored = next(t for t in q.graph.initializer if t.name == gather.input[0])
    assert stored.data_type == onnx.TensorProto.INT8 and list(stored.dims) == [3000, 100]
    assert not [n for n in q.graph.node if n.op_type == "Cast" and n.input[0] == gather.input[0]]
    assert [s.name for s in result.layers] == ["table"] and result.layers[0].bits == 8.0
    ids = np.array([0, 2999, 7, 7], np.int64)
    np.testing.assert_allclose(h.run(q, {"ids": ids})[0], table[ids], atol=np.abs(table).max() / 127)


def test_a_tiny_models_table_at_8_bits_keeps_a_codebook_decoded_at_load():
    """A recommender's 10000 x 32 user table over an MLP of 6.7K values (18 us a call) ran 1.11x
    slower with int8 rows gathered and scaled each call: a model computing under
    TINY_COMPUTE_VALUES keeps a codebook, decoded once at load."""
    table, result, q = _lookup_at_8_bits()
    gather = next(n for n in q.graph.node if n.op_type == "Gather" and n.input[1] == "ids")
    assert gather.input[0] not in {t.name for t in q.graph.initializer}  # a decoded table: computed
    assert [s.name for s in result.layers] == ["table"]
    ids = np.array([0, 2999, 7, 7], np.int64)
    np.testing.assert_allclose(h.run(q, {"ids": ids})[0], table[ids], atol=np.abs(table).max() / 100)

