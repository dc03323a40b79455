"""Every pass on a merged decoder (optimum's ``If(use_cache_branch)`` layout), whose branches read
the embedding table and the layers' weights from the outer graph. k-means 8, weight-only and
static int8 stopped with "ValueError: Value Node(name='node_embedding' ...) is not in the list"
(the int8 rows' decode was inserted into the table's graph, not the Gather's branch), and
``--float16`` changed nothing ("nothing to change": weights read inside a branch were skipped)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxcompress.model import to_proto
from onnxcompress.pipeline import compress
from tests import helpers as h
from tests.merged_decoder import merged_decoder, ragged_feeds

CASES = {
    "kmeans 8": ({"pass": "kmeans", "bits": 8}, 0.02),
    # the table as int8 rows gathered at run time (a large model's form)
    "kmeans 8 rows": ({"pass": "kmeans", "bits": 8, "decode": "runtime"}, 0.02),
    "kmeans 4": ({"pass": "kmeans", "bits": 4}, 0.25),
    "int8 weights": ({"pass": "quantize", "mode": "weights", "speed_check": False}, 0.02),
    "int8 static": ({"pass": "quantize", "mode": "static", "speed_check": False}, 0.05),
    "int8 dynamic": ({"pass": "quantize", "mode": "dynamic", "speed_check": False}, 0.05),
    "float16": ({"pass": "float16"}, 0.01),
    "bfloat16": ({"pass": "bfloat16"}, 0.02),
}


def _weight_bytes(proto: onnx.ModelProto) -> int:
    return sum(onnx.numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)


@pytest.mark.parametrize("case", list(CASES))
def test_every_weight_of_both_branches_is_compressed(case):
    options, tolerance = CASES[case]
    proto = merged_decoder()
    data = ragged_feeds(12)
    result = compress(proto, {"passes": [options]}, calibration=data)
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    changed = {layer.name for layer in result.passes[0].layers}
    assert {"table", "head"} <= changed, (changed, result.passes[0].skipped)
    assert _weight_bytes(out) < 0.55 * _weight_bytes(proto)
    for feed in data[:4]:  # both branches, samples of different lengths
        want, got = h.run(proto, feed), h.run(out, feed)
        for a, b in zip(want, got, strict=True):
            assert a.shape == b.shape
            assert np.linalg.norm(a - b) / np.linalg.norm(a) < tolerance


def test_gptq_sees_the_inputs_of_layers_read_in_the_branches():
    # the Hessians were collected for main-graph readers only: every layer of a merged decoder was
    # "rounded to nearest: without observable inputs (embeddings, subgraphs)"
    result = compress(merged_decoder(), {"passes": [{"pass": "blockq", "method": "gptq"}]},
                      calibration=ragged_feeds(12))
    p = result.passes[0]
    assert p.metrics["method"] == "gptq" and p.metrics["calibration_passes"] >= 1
    rounded = [n for n in p.notes if "rounded to nearest" in n]
    assert rounded == ["1 weight(s) rounded to nearest: without observable inputs (embeddings, subgraphs)"]


def test_reconstruction_refits_layers_both_branches_read():
    # a weight read by the two branches' MatMuls was skipped as "read by several nodes"
    result = compress(merged_decoder(), {"passes": [{"pass": "kmeans", "bits": 4, "reconstruct": True}]},
                      calibration=ragged_feeds(12))
    refit = result.passes[0].metrics["reconstruction"]
    assert set(refit["refit"]) == {"w1", "head"} and set(refit["skipped"]) == {"table"}
