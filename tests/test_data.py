from __future__ import annotations

import numpy as np
import pytest

from onnxcompress import DataError, feed_source, load_model, synthetic_feeds
from onnxcompress.data import parse_shape_overrides
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


def test_shape_overrides():
    assert parse_shape_overrides(["x:2x16"]) == {"x": (2, 16)}
    with pytest.raises(DataError, match="NAME:DIMS"):
        parse_shape_overrides(["x=2x16"])
    feeds = list(synthetic_feeds(load_model(h.mlp()), 1, shapes={"x": (4, 16)}))
    assert feeds[0]["x"].shape == (4, 16)
    with pytest.raises(DataError, match="unknown input"):
        synthetic_feeds(load_model(h.mlp()), 1, shapes={"nope": (1,)})
