from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest

from onnxcompress import DataError, feed_source, load_model, synthetic_feeds
from onnxcompress.synthetic import parse_shape_overrides
from tests import helpers as h


@pytest.fixture
def mlp():
    return load_model(h.mlp())


def test_npz_stacked_samples_and_labels(tmp_path, mlp):
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float64)
    np.savez(tmp_path / "d.npz", x=x, labels=np.arange(5), other=np.zeros(3))
    source = feed_source(tmp_path / "d.npz", mlp)
    feeds = list(source)
    assert len(feeds) == len(source) == 5
    assert feeds[0]["x"].shape == (1, 16) and feeds[0]["x"].dtype == np.float32
    np.testing.assert_array_equal(source.labels, np.arange(5))
    assert len(list(source)) == 5  # re-iterable


def test_npz_missing_input_names_the_input(tmp_path, mlp):
    np.savez(tmp_path / "d.npz", wrong=np.zeros((3, 16)))
    with pytest.raises(DataError, match="'x'|input\\(s\\) x"):
        feed_source(tmp_path / "d.npz", mlp)


def test_npz_wrong_shape(tmp_path, mlp):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 15), np.float32))
    with pytest.raises(DataError, match="expects"):
        list(feed_source(tmp_path / "d.npz", mlp))


def test_folder_of_npz_with_varying_batch(tmp_path, mlp):
    for i, n in enumerate((1, 3, 2)):
        np.savez(tmp_path / f"{i}.npz", x=np.zeros((n, 16), np.float32))
    feeds = list(feed_source(tmp_path, mlp))
    assert [f["x"].shape[0] for f in feeds] == [1, 3, 2]


def test_not_an_npz(tmp_path, mlp):
    (tmp_path / "d.npz").write_bytes(b"nope")
    with pytest.raises(DataError, match="not a readable .npz"):
        feed_source(tmp_path / "d.npz", mlp)


class Reader:
    """The onnxruntime CalibrationDataReader protocol, without rewind."""

    def __init__(self, n):
        self.items = iter([{"x": np.full((1, 16), i, np.float32)} for i in range(n)])

    def get_next(self):
        return next(self.items, None)


def test_reader_is_cached_for_second_iteration(mlp):
    source = feed_source(Reader(4), mlp)
    first = [f["x"][0, 0] for f in source]
    second = [f["x"][0, 0] for f in source]
    assert first == second == [0, 1, 2, 3]


def test_generator_is_cached(mlp):
    source = feed_source(({"x": np.zeros((1, 16), np.float32)} for _ in range(3)), mlp)
    assert len(list(source)) == 3 and len(list(source)) == 3


def test_synthetic_is_seeded_and_dtype_aware():
    proto = h.mlp()
    model = load_model(proto)
    a = list(synthetic_feeds(model, 2, seed=1))
    b = list(synthetic_feeds(model, 2, seed=1))
    np.testing.assert_array_equal(a[1]["x"], b[1]["x"])
    assert a[0]["x"].shape == (1, 16)


def test_synthetic_integer_ids_respect_embedding_size():
    import onnx
    import onnx.helper as oh
    import onnx.numpy_helper as onh

    table = np.zeros((7, 4), np.float32)
    graph = oh.make_graph(
        [oh.make_node("Gather", ["table", "input_ids"], ["y"])], "g",
        [oh.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, ["batch", "seq"])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", "seq", 4])],
        initializer=[onh.from_array(table, "table")],
    )
    model = load_model(oh.make_model(graph))
    feeds = list(synthetic_feeds(model, 4, seed=0))
    ids = np.concatenate([f["input_ids"].ravel() for f in feeds])
    assert feeds[0]["input_ids"].shape == (1, 16) and ids.max() < 7 and ids.min() >= 0


def test_synthetic_ids_respect_a_table_behind_index_arithmetic():
    # tf2onnx's Keras Embedding: Where(x < 0, x + V, x), written as Less/Cast/Mul/Add (slovorez:
    # ids drawn in [0, 100) went out of its 49 rows and no guard could run the model)
    import onnx

    model = load_model(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int32[N, T] ids) => (float[N, T, 4] y) <float[49, 4] table, int32 v = {49}, int32 zero = {0}> {
            wrapped = Add (ids, v)
            negative = Less (ids, zero)
            neg = Cast <to = 6> (negative)
            not_neg = Not (negative)
            pos = Cast <to = 6> (not_neg)
            a = Mul (neg, wrapped)
            b = Mul (ids, pos)
            index = Add (a, b)
            y = Gather (table, index)
        }"""))
    ids = np.concatenate([f["ids"].ravel() for f in synthetic_feeds(model, 4, seed=0)])
    assert ids.min() >= 0 and ids.max() < 49


def test_synthetic_ids_stay_in_a_table_read_by_gathernd():
    # torch 2.13 writes table[ids] as GatherND(table, Unsqueeze(ids)) (batch 24's g2p-en: ids
    # drawn up to 99 for 29 rows, and every guard's run failed)
    import onnx

    model = load_model(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[N, T] ids) => (float[N, T, 4] y) <float[29, 4] table, int64[1] last = {-1}> {
            index = Unsqueeze (ids, last)
            y = GatherND <batch_dims = 0> (table, index)
        }"""))
    ids = np.concatenate([f["ids"].ravel() for f in synthetic_feeds(model, 4, seed=0)])
    assert ids.min() >= 0 and ids.max() < 29


def test_synthetic_graph_indices_stay_in_the_rows_their_columns_index():
    # torch 2.13 writes a graph net's ``bond_graph[:, 0]`` as Gather(bond_graph, 0, axis=1), the
    # input as the Gather's data, then stacks columns (Unsqueeze, Concat) before indexing the
    # atoms' features (batch 25's CHGNet: atom ids drawn up to 99 for 8 atoms, no guard ran)
    import onnx

    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[E, 3] bonds, float[8, 4] atoms) => (float[F, 4] y)
          <int64 zero = {0}, int64 two = {2}, int64[1] first = {1}, int64[1] flat_shape = {-1}> {
            src = Gather <axis = 1> (bonds, zero)
            dst = Gather <axis = 1> (bonds, two)
            a = Unsqueeze (src, first)
            b = Unsqueeze (dst, first)
            both = Concat <axis = 0> (a, b)
            flat = Reshape (both, flat_shape)
            y = Gather (atoms, flat)
        }""")
    feeds = list(synthetic_feeds(load_model(proto), 4, seed=0))
    ids = np.concatenate([f["bonds"].ravel() for f in feeds])
    assert ids.min() >= 0 and ids.max() < 8
    h.run(proto, feeds[0])  # runs: no index past the 8 atoms


def test_shape_overrides():
    assert parse_shape_overrides(["x:2x16"]) == {"x": (2, 16)}
    with pytest.raises(DataError, match="NAME:DIMS"):
        parse_shape_overrides(["x=2x16"])
    feeds = list(synthetic_feeds(load_model(h.mlp()), 1, shapes={"x": (4, 16)}))
    assert feeds[0]["x"].shape == (4, 16)
    with pytest.raises(DataError, match="unknown input"):
        synthetic_feeds(load_model(h.mlp()), 1, shapes={"nope": (1,)})


# -- dynamic dims written as -1 / 0, one calibration-data check for every pass ----------------


def paddle_style_cnn() -> onnx.ModelProto:
    """helpers.cnn with its input declared [-1, 3, 0, -1] (dim_value -1 and 0 in the proto, as
    Paddle and some other exporters write "any size") and its output [-1, 10]."""
    model = h.cnn()
    for value, dims in ((model.graph.input[0], (-1, 3, 0, -1)), (model.graph.output[0], (-1, 10))):
        for d, v in zip(value.type.tensor_type.shape.dim, dims, strict=True):
            d.Clear()
            d.dim_value = v
    return model


def test_dims_written_as_minus_one_and_zero_are_dynamic(tmp_path):
    from onnxcompress.data import input_specs, is_dynamic_dim
    from onnxcompress.macs import count_macs, infer_shapes
    from onnxcompress.validation import compare_models

    proto = paddle_style_cnn()
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [-1, 3, 0, -1]
    model = load_model(proto)
    assert input_specs(model)[0].shape == (None, 3, None, None)
    assert [is_dynamic_dim(d) for d in (-1, 0, None, "w", 3)] == [True, True, True, True, False]
    # The data of the bug report: shape (1, 3, 48, 192) against [-1, 3, 0, -1] is accepted.
    x = np.random.default_rng(0).standard_normal((4, 1, 3, 48, 192)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    feeds = list(feed_source(tmp_path / "d.npz", model))
    assert len(feeds) == 4 and feeds[0]["x"].shape == (1, 3, 48, 192)
    (feed,) = synthetic_feeds(model, 1)
    assert feed["x"].shape == (1, 3, 224, 224)  # batch 1, image sides 224, never -1 or 0
    # onnxruntime reads 0 as "size 0": the loaded model spells those dims as dynamic instead.
    from onnxcompress.model import to_proto

    dims = to_proto(model).graph.input[0].type.tensor_type.shape.dim
    assert [d.HasField("dim_value") for d in dims] == [False, True, False, False]
    assert h.run(to_proto(model), feed)[0].shape == (1, 10)
    shapes = infer_shapes(model, {"x": (1, 3, 48, 192)})
    assert shapes["y"] == (1, 10) and count_macs(model, {"x": (1, 3, 48, 192)}).macs > 0
    onnx.save(proto, tmp_path / "m.onnx")
    report = compare_models(tmp_path / "m.onnx", proto, tmp_path / "d.npz")
    assert report.passed and report.samples == 4
    assert compare_models(proto, proto, samples=2).passed  # synthetic feeds


def test_kmeans_with_calibration_on_minus_one_dims(tmp_path):
    from onnxcompress import Pipeline
    from onnxcompress.model import to_proto
    from onnxcompress.passes import WeightSharing, WeightSharingConfig

    proto = paddle_style_cnn()
    x = np.random.default_rng(1).standard_normal((8, 1, 3, 48, 64)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    pipeline = Pipeline([WeightSharing(WeightSharingConfig(bits=4))])
    result = pipeline.run(proto, calibration=tmp_path / "c.npz")
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    notes = " ".join(result.passes[0].notes)
    assert len(result.passes[0].layers) == 3 and "calibration data unused" not in notes
    a = h.run(to_proto(load_model(proto)), {"x": x[0]})[0]
    b = h.run(out, {"x": x[0]})[0]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98


@pytest.mark.parametrize("recipe", [
    {"pass": "prune", "sparsity": 0.5},
    {"pass": "kmeans", "bits": 4},
    {"pass": "quantize", "mode": "static"},
])
@pytest.mark.parametrize("bad", ["shape", "nan", "inf", "name"])
def test_bad_calibration_data_is_one_error_for_every_pass(tmp_path, recipe, bad):
    from onnxcompress import Pipeline

    x = np.random.default_rng(2).standard_normal((6, 1, 16)).astype(np.float32)
    arrays = {"x": x}
    if bad == "shape":
        arrays = {"x": x[..., :15]}
    elif bad == "nan":
        x[3, 0, 5] = np.nan
    elif bad == "inf":
        x[4, 0, 2] = -np.inf
    else:
        arrays = {"input": x}
    np.savez(tmp_path / "c.npz", **arrays)
    pipeline = Pipeline.from_recipe({"passes": [recipe]})
    with pytest.raises(DataError) as e:
        pipeline.run(h.mlp(), calibration=tmp_path / "c.npz")
    message = str(e.value)
    assert "\n" not in message and str(tmp_path / "c.npz") in message
    expected = {
        "shape": "sample 0 of input 'x' has shape (1, 15), the model expects [N, 16] (axis 1)",
        "nan": "sample 3 of input 'x' holds 1 NaN and 0 Inf value(s)",
        "inf": "sample 4 of input 'x' holds 0 NaN and 1 Inf value(s)",
        "name": "no array named after model input(s) x",
    }[bad]
    assert expected in message


def _tree_model() -> onnx.ModelProto:
    """x [N, 2] -> Scale -> a one-split TreeEnsembleRegressor (NaN goes to the true branch): a
    LightGBM export's shape, whose package feeds NaN for missing values."""
    from onnx import helper as oh

    tree = oh.make_node(
        "TreeEnsembleRegressor", ["scaled"], ["y"], domain="ai.onnx.ml", n_targets=1,
        nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0],
        nodes_values=[0.5, 0.0, 0.0], nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"],
        nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
        nodes_missing_value_tracks_true=[1, 0, 0],
        target_treeids=[0, 0], target_nodeids=[1, 2], target_ids=[0, 0], target_weights=[1.0, 2.0])
    scale = oh.make_node("Mul", ["x", "two"], ["scaled"])
    graph = oh.make_graph(
        [scale, tree], "trees",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 2])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 1])],
        [onnx.numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("ai.onnx.ml", 3)])


def test_nan_is_data_for_an_input_that_reaches_a_tree_ensemble(tmp_path):
    """atspm-detector (batch 8) feeds its LightGBM model NaN for "no data": every pass that took
    calibration data refused it (exit 2), though onnxruntime runs it. NaN reaching a tree
    ensemble (here through a Mul) is a missing value; Inf still is not."""
    model = load_model(_tree_model())
    feeds = [{"x": np.array([[np.nan, 1.0]], np.float32)}, {"x": np.array([[0.1, 1.0]], np.float32)}]
    assert len(list(feed_source(feeds, model))) == 2
    with pytest.raises(DataError, match="holds 0 NaN and 1 Inf"):
        feed_source([{"x": np.array([[np.inf, 1.0]], np.float32)}], model)
    path = tmp_path / "trees.onnx"
    onnx.save(_tree_model(), path)
    np.savez(tmp_path / "calib.npz", x=np.array([[[np.nan, 1.0]], [[0.1, 2.0]]], np.float32))
    from onnxcompress.cli import main

    assert main(["compress", str(path), "-o", str(tmp_path / "out.onnx"), "--quantize", "static",
                 "--calibration", str(tmp_path / "calib.npz")]) == 0


def test_nan_refused_from_readers_and_lists_too(mlp):
    feeds = [{"x": np.zeros((1, 16), np.float32)}, {"x": np.full((1, 16), np.nan, np.float32)}]
    with pytest.raises(DataError, match="sample 1 of input 'x' holds 16 NaN"):
        feed_source(feeds, mlp)

    class Reader:
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    with pytest.raises(DataError, match="Reader: sample 1 of input 'x'"):
        feed_source(Reader(), mlp)
    assert len(list(feed_source(feeds[:1], mlp))) == 1


def nhwc_cnn(batch: str = "N") -> onnx.ModelProto:
    """A keras/tf2onnx-style image model: input [N, H, W, 3] (channels last, sides symbolic),
    transposed to NCHW in front of two 3x3 Convs (MTCNN's P-Net has this input)."""
    text = f"""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[{batch}, H, W, 3] x) => (float[{batch}, 16, H2, W2] y) {{
        t = Transpose <perm = [0, 3, 1, 2]> (x)
        a = Conv <kernel_shape = [3, 3]> (t, w1, b1)
        r = Relu (a)
        y = Conv <kernel_shape = [3, 3]> (r, w2, b2)
    }}
    """
    r = h.rng(3)
    return h.attach_initializers(onnx.parser.parse_model(text), {
        "w1": r.standard_normal((32, 3, 3, 3)).astype(np.float32) * 0.3,
        "b1": r.standard_normal(32).astype(np.float32) * 0.1,
        "w2": r.standard_normal((16, 32, 3, 3)).astype(np.float32) * 0.1,
        "b2": r.standard_normal(16).astype(np.float32) * 0.1,
    })  # fmt: skip


def test_synthetic_channels_last_image_gets_image_sides():
    from onnxcompress import Pipeline
    from onnxcompress.data import InputSpec
    from onnxcompress.synthetic import concrete_shape
    from onnxcompress.model import to_proto
    from onnxcompress.passes import Quantize, QuantizeConfig

    model = load_model(nhwc_cnn())
    (feed,) = synthetic_feeds(model, 1)
    # Was (1, 1, 224, 3): the NCHW guess put a side of 1 under a 3x3 Conv, which cannot run.
    assert feed["x"].shape == (1, 224, 224, 3)
    assert h.run(nhwc_cnn(), feed)[0].shape == (1, 16, 220, 220)
    f32 = np.dtype("float32")
    assert concrete_shape(InputSpec("x", f32, (None, 3, "h", "w"))) == (1, 3, 224, 224)  # NCHW
    assert concrete_shape(InputSpec("x", f32, (None, "c", "h", "w"))) == (1, 1, 224, 224)
    assert concrete_shape(InputSpec("x", f32, (None, 48, 48, 3))) == (1, 48, 48, 3)
    # The int8 fidelity guard now measures on synthetic data (it said "did not measure").
    result = Pipeline([Quantize(QuantizeConfig(mode="dynamic"))]).run(model)
    notes = " ".join(p for r in result.passes for p in r.notes)
    assert "did not measure" not in notes and result.passes[0].status == "applied"
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    want, got = h.run(nhwc_cnn(), feed)[0], h.run(out, feed)[0]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_synthetic_inputs_give_a_symbolic_dimension_one_size():
    # PyTorch's LSTM state input [layers, batch, hidden] beside batch-first features [batch,
    # time, F] (voicefilter): guessed per input, batch was 1 in one and 16 (a sequence length
    # guess for axis 1 of a rank-3 input) in the other, so the model could not run
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[batch, time, 8] x, float[1, batch, 16] h0, float[1, batch, 16] c0) => (float[1, batch, 16] hn) {
        xt = Transpose <perm = [1, 0, 2]> (x)
        seq_y, hn, cn = LSTM <hidden_size = 16> (xt, W, R, , , h0, c0)
    }
    """
    r = h.rng(3)
    model = h.attach_initializers(onnx.parser.parse_model(text), {
        "W": r.standard_normal((1, 64, 8)).astype(np.float32),
        "R": r.standard_normal((1, 64, 16)).astype(np.float32)})
    (feed,) = synthetic_feeds(load_model(model), 1)
    assert feed["x"].shape[0] == feed["h0"].shape[1] == feed["c0"].shape[1]
    h.run(model, feed)  # runs: the sizes agree
    # a shape the user gives fixes the symbol for the other inputs too
    (feed,) = synthetic_feeds(load_model(model), 1, shapes={"h0": (1, 3, 16)})
    assert feed["x"].shape[0] == 3 and feed["c0"].shape == (1, 3, 16)


def test_synthetic_settings_are_positive():
    """A float input of a few values per sample (a diffusion model's sigma, a TTS speed scale)
    is drawn positive: a standard normal sigma into a Log made the float output NaN, and the int8
    guard measured nothing on that sample (batch 6's terrain U-Net)."""
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 1, 32, 32] noisy, float[N] sigma) => (float[N, 1, 32, 32] y) {
            c = Log(sigma)
            s = Reshape(c, shape)
            y = Mul(noisy, s)
        }
    """)
    model = h.attach_initializers(model, {"shape": np.array([-1, 1, 1, 1], np.int64)})
    feeds = list(synthetic_feeds(load_model(model), 8))
    assert all(f["sigma"].min() > 0 for f in feeds)
    assert any(f["noisy"].min() < 0 for f in feeds)  # a signal stays signed
    assert all(np.isfinite(h.run(model, f)[0]).all() for f in feeds)


def test_parameters_held_in_attributes_are_said_to_be_out_of_reach(tmp_path, capsys):
    """A tree ensemble's thresholds and leaf values are node attributes: the report said "weight
    bytes 0 B" and nothing else (batch 8's 1.6 MB LightGBM model)."""
    from onnx import helper as oh

    from onnxcompress.cli import main

    n = 4096
    tree = oh.make_node(
        "TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", n_targets=1,
        nodes_treeids=[0] * n, nodes_nodeids=list(range(n)), nodes_featureids=[0] * n,
        nodes_values=list(np.linspace(0, 1, n)), nodes_modes=["LEAF"] * n,
        nodes_truenodeids=[0] * n, nodes_falsenodeids=[0] * n,
        target_treeids=[0] * n, target_nodeids=list(range(n)), target_ids=[0] * n,
        target_weights=list(np.linspace(0, 1, n)))
    graph = oh.make_graph([tree], "trees", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 2])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 1])])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("ai.onnx.ml", 3)]),
              tmp_path / "t.onnx")
    assert main(["compress", str(tmp_path / "t.onnx"), "-o", str(tmp_path / "o.onnx")]) == 0
    said = "".join(capsys.readouterr())
    assert "are attributes of its TreeEnsembleRegressor node(s), which no pass compresses" in said
    assert "no calibration data" not in said  # nothing was rounded


def test_larger_synthetic_sizes_stop_where_the_input_would_be_too_large(monkeypatch):
    """PP-OCR's recogniser runs only at height 48: every larger size was tried, up to 16000 x
    16000 pixels (3 GB of input), and compress without data was killed for memory."""
    from onnxcompress import synthetic

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, H, W] x) => (float[N, 3, H, W] y) { y = Relu(x) }
    """)
    tried = []

    def never_runs(probe, concrete):  # noqa: ANN001
        tried.append(concrete["x"])
        return False

    monkeypatch.setattr(synthetic._Probe, "runs", never_runs)
    synthetic_feeds(load_model(model), 1, seed=0)
    assert len(tried) >= 2  # the guessed sizes, then larger ones
    assert all(4 * np.prod(shape) <= synthetic.MAX_PROBE_INPUT_BYTES for shape in tried)
    assert max(shape[2] for shape in tried) == 1024  # 4096 x 4096 x 3 would be 201 MB


def test_larger_synthetic_sizes_stop_where_a_run_would_take_too_long(monkeypatch):
    """PP-OCR's recogniser (height 48 only) failed at 1024 x 1024 after 8-12 s a try: 18 of the
    19 s of a dynamic int8 run without data. A size whose run counts more than MAX_PROBE_MACS
    multiply-accumulates is not tried."""
    from onnxcompress import synthetic

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, H, W] x) => (float[N, 8, H, W] y) { y = Conv(x, w) }
    """)
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w"))
    tried = []

    def never_runs(probe, concrete):  # noqa: ANN001
        tried.append(concrete["x"][2])
        return False

    monkeypatch.setattr(synthetic._Probe, "runs", never_runs)
    synthetic_feeds(load_model(model), 1, seed=0)
    assert 1024 in tried  # 1024 x 1024 x 216 MACs a pixel: 2.3e8
    tried.clear()
    monkeypatch.setattr(synthetic, "MAX_PROBE_MACS", 1e8)
    synthetic_feeds(load_model(model), 1, seed=0)
    assert tried and max(tried) == 256  # 1.4e7 MACs; 1024 would be 2.3e8


def test_synthetic_feature_size_is_read_from_the_layer_that_fixes_it():
    """madmom's downbeat LSTM and note RNN take ``input [frames, features]`` with both axes
    dynamic, and W fixes the features (314, 482): the guessed 16 ran nothing, so --validate
    exited 2 and every guard ran blind. The size is read from the recurrent layer's W, or the
    rows of a constant MatMul / Gemm matrix, through Unsqueeze and Cast."""
    rnn = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[T, F] x) => (float[T, 1, 1, 4] y) {
            axes = Constant <value = int64[1] {1}> ()
            xb = Unsqueeze(x, axes)
            y, h = RNN <hidden_size = 4> (xb, W, R)
        }
    """)
    rng = np.random.default_rng(0)
    rnn.graph.initializer.extend([onnx.numpy_helper.from_array(rng.standard_normal((1, 4, 7)).astype(np.float32), "W"),
                                  onnx.numpy_helper.from_array(rng.standard_normal((1, 4, 4)).astype(np.float32), "R")])
    mm = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, F] x) => (float[N, 3] y) { c = Cast <to = 1> (x)  y = MatMul(c, B) }
    """)
    mm.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((5, 3), np.float32), "B"))
    for proto, size in ((rnn, 7), (mm, 5)):
        model = load_model(proto)
        feed = next(iter(synthetic_feeds(model, 1, seed=0)))
        assert feed["x"].shape[-1] == size
        h.run(proto, feed)  # it runs


def test_synthetic_sizes_raise_a_dynamic_leading_axis_when_nothing_else_runs():
    """madmom's beat TCN takes ``input [frames, 81]`` whole and runs a 3x3 Conv over the frames:
    axis 0, guessed as a batch of 1, was never raised, so no guard could run it."""
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[T, F] x) => (float[1, 2, A, B] y) {
            axes = Constant <value = int64[2] {0, 1}> ()
            x4 = Unsqueeze(x, axes)
            y = Conv <kernel_shape = [3, 3]> (x4, W)
        }
    """)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "W"))
    feed = next(iter(synthetic_feeds(load_model(proto), 1, seed=0)))
    assert feed["x"].shape[0] >= 3
    h.run(proto, feed)


def test_synthetic_batch_is_raised_when_only_the_batch_is_dynamic_and_one_does_not_run():
    """ICLabel takes each EEG component with its 3 flips and reshapes the batch to [-1, 4]: the
    batch was the only dynamic axis, so 1 was never raised and every guard ran blind without
    data. The first of the batch sizes that runs is taken (4)."""
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3] x) => (float[M, 3] y) {
            shape = Constant <value = int64[3] {-1, 4, 3}> ()
            grouped = Reshape(x, shape)
            pooled = ReduceMean <axes = [1], keepdims = 0> (grouped)
            y = MatMul(pooled, B)
        }
    """)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((3, 3), np.float32), "B"))
    feed = next(iter(synthetic_feeds(load_model(proto), 1, seed=0)))
    assert feed["x"].shape == (4, 3)
    h.run(proto, feed)


def test_attribute_parameters_count_a_forest_of_small_trees(tmp_path, capsys):
    """skl2onnx writes an IsolationForest as one TreeEnsembleRegressor a tree, each attribute
    under 1 KB: the note counted 0.1 MB of batch 40's 995 KB (attributes were counted only where
    one alone reached 1 KB)."""
    from onnx import helper as oh

    from onnxcompress.cli import main

    n, trees = 48, 200  # ~1.1 MB of attributes, none over 400 bytes
    nodes, names = [], []
    for t in range(trees):
        nodes.append(oh.make_node(
            "TreeEnsembleRegressor", ["x"], [f"y{t}"], domain="ai.onnx.ml", n_targets=1,
            nodes_treeids=[0] * n, nodes_nodeids=list(range(n)), nodes_featureids=[t % 2] * n,
            nodes_values=list(np.linspace(0, 1, n) + t), nodes_modes=["LEAF"] * n,
            nodes_truenodeids=[0] * n, nodes_falsenodeids=[0] * n,
            target_treeids=[0] * n, target_nodeids=list(range(n)), target_ids=[0] * n,
            target_weights=list(np.linspace(0, 1, n) * t)))
        names.append(f"y{t}")
    nodes.append(oh.make_node("Sum", names, ["y"]))
    graph = oh.make_graph(nodes, "forest", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 2])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 1])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("ai.onnx.ml", 3)])
    assert max(a.ByteSize() for a in model.graph.node[0].attribute) < 1024
    onnx.save(model, tmp_path / "f.onnx")
    attributes = sum(a.ByteSize() for node in model.graph.node[:-1] for a in node.attribute)
    assert main(["compress", str(tmp_path / "f.onnx"), "-o", str(tmp_path / "o.onnx")]) == 0
    said = "".join(capsys.readouterr())
    assert (f"most of the model's parameters ({attributes / 2**20:.1f} MB) are attributes of its "
            "TreeEnsembleRegressor node(s)") in said


def test_the_size_probe_creates_one_session_for_every_size_it_tries(monkeypatch):
    """A session per size was most of the probe's time (silero VAD, which runs on none: 1.8 s ->
    1.4 s a dynamic int8 run without the guards); the sizes tried and the answer are the same."""
    from onnxcompress import runtime, synthetic

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, T] x) => (float[N, 1, T] y) {
            axes = Constant <value = int64[1] {1}> ()
            r = Unsqueeze(x, axes)
            y = Conv(r, w)
        }
    """)  # a 300-tap Conv: runs from T = 300 on, the guessed 16 is too short
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((1, 1, 300), np.float32), "w"))
    created = []
    real = runtime.create_session

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003
        created.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime, "create_session", counting)
    feed = next(iter(synthetic_feeds(load_model(model), 1, seed=0)))
    assert feed["x"].shape[1] == 1024 and len(created) == 1  # 256 failed, 1024 ran
