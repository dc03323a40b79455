"""Labels an ArgMax makes are measured by the scores it reads (``measure.argmax_scores``), and a
token model's padded positions are left out (``tokens.padding_mask``): batch 40's Japanese tagger
(int64 ArgMax out, 31 characters a sentence padded to 256) made auto exit 2 ("no output is
float"); measured on every position, its per-position top-1 read 0.9977 where 2.4% of the
characters changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxcompress.auto.measure import argmax_scores, run_outputs, save_calibration
from onnxcompress.tokens import padding_mask
from tests.auto._common import run_cli

T, V, C = 16, 40, 6


def _tagger(softmax: bool = False) -> onnx.ModelProto:
    """ids [N, T], mask [N, T] -> Gather -> x mask -> MatMul -> Add -> (Softmax) -> ArgMax: tags [N, T]."""
    r = np.random.default_rng(0)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]),
             helper.make_node("Unsqueeze", ["mask", "axes"], ["m3"]),
             helper.make_node("Cast", ["m3"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["emb", "mf"], ["kept"]),
             helper.make_node("MatMul", ["kept", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["logits"])]
    scores = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
        scores = "probs"
    nodes.append(helper.make_node("ArgMax", [scores], ["tags"], axis=-1, keepdims=0))
    inits = [numpy_helper.from_array(r.normal(size=(V, 32)).astype(np.float32), "table"),
             numpy_helper.from_array(r.normal(size=(32, C)).astype(np.float32), "w"),
             numpy_helper.from_array(r.normal(size=C).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([2], np.int64), "axes")]
    graph = helper.make_graph(
        nodes, "tagger",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, T]),
         helper.make_tensor_value_info("mask", TensorProto.INT64, [1, T])],
        [helper.make_tensor_value_info("tags", TensorProto.INT64, [1, T])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(n: int = 24, seed: int = 1) -> list[dict[str, np.ndarray]]:
    r = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        length = int(r.integers(3, 7))
        ids = np.zeros((1, T), np.int64)
        ids[0, :length] = r.integers(1, V, length)
        mask = (np.arange(T) < length).astype(np.int64)[None]
        feeds.append({"ids": ids, "mask": mask})
    return feeds


def test_labels_are_read_by_their_scores_class_axis_last_padding_left_out():
    feeds = _feeds()
    assert argmax_scores(_tagger().graph, 17) == {"tags": ("logits", -1)}
    assert argmax_scores(_tagger(softmax=True).graph, 17) == {"tags": ("logits", -1)}  # past the softmax
    assert padding_mask(feeds) == "mask"
    out = run_outputs(_tagger(), feeds)
    kept = sum(int(f["mask"].sum()) for f in feeds)
    assert set(out) == {"tags"} and out["tags"].shape == (kept, C) and out["tags"].dtype == np.float32


def test_segment_ids_and_unpadded_samples_are_no_padding_mask():
    feeds = _feeds()
    segments = [{"ids": f["ids"], "mask": np.zeros_like(f["mask"])} for f in feeds]  # zeros first
    assert padding_mask(segments) is None
    full = [{"ids": f["ids"] + 1, "mask": np.ones_like(f["mask"])} for f in feeds]  # nothing padded
    assert padding_mask(full) is None
    floats = [{"x": np.ones((1, T), np.float32), "mask": f["mask"]} for f in feeds]  # not a token model
    assert padding_mask(floats) is None


def test_auto_compresses_a_tagger_whose_only_output_is_labels(tmp_path: Path):
    onnx.save(_tagger(), tmp_path / "m.onnx")
    save_calibration(_feeds(), tmp_path / "calib.npz")
    code = run_cli("compress", tmp_path / "m.onnx", "-o", tmp_path / "auto.onnx", "--auto",
                   "--calibration", tmp_path / "calib.npz", "--report", tmp_path / "report.json", "-q")
    assert code == 0 and (tmp_path / "auto.onnx").exists()
    # the tags' scores, rows of the positions padding leaves: class scores, held by top-1
    assert json.loads((tmp_path / "report.json").read_text())["auto"]["target"].split(",")[0] == "top1>=0.99"
