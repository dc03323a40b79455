"""int8 embedding rows (``passes._int8_rows``): kept where the model is not slower for them, and
folded back to a float table at load where they are (WordLlama, all lookup: 1.15x fp32)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxcompress import Pipeline
from onnxcompress.model import to_proto
from onnxcompress.passes import Quantize, _kmeans_int8, _speed
from tests import helpers as h
from tests import zoo

ROWS, WIDTH = 4000, 64


def _lookup_model() -> onnx.ModelProto:
    """A static embedder: ids -> rows of one table -> their mean (WordLlama's shape, smaller)."""
    proto = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[n, t] ids) => (float[n, {WIDTH}] vector) {{
            rows = Gather <axis = 0> (table, ids)
            vector = ReduceMean <axes = [1], keepdims = 0> (rows)
        }}
    """)
    table = h.rng(3).standard_normal((ROWS, WIDTH)).astype(np.float32)
    return h.attach_initializers(proto, {"table": table})


def _quantize(proto, data, **options):
    result = Pipeline([Quantize(**options)]).run(proto, calibration=data)
    return result.passes[0], to_proto(result.model)


def _ids(seed: int = 4) -> list[dict[str, np.ndarray]]:
    return [{"ids": h.rng(seed).integers(0, ROWS, (1, 64)).astype(np.int64)}]


def _row_gathers(q: onnx.ModelProto) -> int:
    """Gathers of a table's row scales: one a Gather of int8 rows."""
    return sum(1 for n in q.graph.node if n.op_type == "Gather" and n.input[0].startswith("table_scale"))


@pytest.mark.parametrize("mode", ["dynamic", "weights"])
def test_int8_rows_measured_slower_than_float_are_decoded_at_load(mode, monkeypatch, tmp_path):
    monkeypatch.setenv("ONNXCOMPRESS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_kmeans_int8, "FOLDED_TABLE_BYTES", 0)  # the small table would fold anyway
    timed = []

    def latency(models, feed, **kw):  # gathered rows cost 15% a call
        timed.append(models[1])
        return [1.0, 1.15 if any(n.op_type == "Gather" and n.inputs[0].name.startswith("table_scale")
                                 for n in models[1].graph) else 1.0]

    monkeypatch.setattr(_speed, "alternate_latency", latency)
    proto, data = _lookup_model(), _ids()
    res, q = _quantize(proto, data, mode=mode, speed_check=True)
    assert timed, "a model with no int8 compute candidate is timed for its rows"
    onnx.checker.check_model(q)
    table = next(t for t in q.graph.initializer if t.name == "table")
    assert table.data_type == onnx.TensorProto.INT8  # the file keeps its int8 table
    assert _row_gathers(q) == 0
    decode = [n.op_type for n in q.graph.node if "table" in n.input]
    assert decode == ["Cast"]  # read whole, as constants only: folded at load
    assert any("int8 embedding rows (table) ran 1.15x" in x for x in res.headlines)
    assert res.layers[0].extra["compute"].startswith("float (int8 table decoded at load)")
    assert "latency_ratio" not in res.metrics  # the rows' timing is not the written model's
    (a,), (b,) = h.run(proto, data[0]), h.run(q, data[0])
    assert np.abs(a - b).max() < 0.01 * np.abs(a).max()
    # the decision is cached: the same file again, without timing
    timed.clear()
    res2, q2 = _quantize(proto, data, mode=mode, speed_check=True)
    assert not timed and q2.SerializeToString() == q.SerializeToString()
    assert any("measured slower than float before" in x for x in res2.headlines)
    # asked to allow a slower model: the rows stay
    _, q3 = _quantize(proto, data, mode=mode, speed_check=True, allow_slower=True)
    assert _row_gathers(q3) == 1


def test_int8_rows_of_a_table_too_large_to_fold_stay_and_say_so(monkeypatch, tmp_path):
    """WordLlama's 32000 x 256 table (32.8 MB as float) ran 1.15x fp32 as int8 rows (live memory
    0.44x); decoded at load it ran 1.00x but stayed resident at 1.20x fp32's (peak 1.67x)."""
    monkeypatch.setenv("ONNXCOMPRESS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_kmeans_int8, "FOLDED_TABLE_BYTES", 0)
    monkeypatch.setattr(_speed, "FOLDED_TABLE_BYTES", ROWS * WIDTH * 4 - 1)
    monkeypatch.setattr(_speed, "alternate_latency", lambda models, feed, **kw: [1.0, 1.15])
    res, q = _quantize(_lookup_model(), _ids(), mode="dynamic", speed_check=True)
    assert _row_gathers(q) == 1
    assert any("int8 embedding rows (table) ran 1.15x" in x and "kept, for session memory" in x
               for x in res.headlines)
    assert res.metrics["latency_ratio"] == 1.15  # the written model's


def test_int8_rows_as_fast_as_float_stay(monkeypatch, tmp_path):
    monkeypatch.setenv("ONNXCOMPRESS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_kmeans_int8, "FOLDED_TABLE_BYTES", 0)
    monkeypatch.setattr(_speed, "alternate_latency", lambda models, feed, **kw: [1.0, 1.01])
    res, q = _quantize(_lookup_model(), _ids(), mode="dynamic", speed_check=True)
    assert _row_gathers(q) == 1 and not res.headlines
    assert res.layers[0].extra["compute"] == "gathered int8 rows"


def test_a_tied_tables_rows_fold_into_its_one_decode(monkeypatch, tmp_path):
    """A language model's tied table (rows gathered, and read whole through a Transpose by its
    output MatMul, decoded once at load): folding the rows reads that decode, not a second one."""
    monkeypatch.setenv("ONNXCOMPRESS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_kmeans_int8, "FOLDED_TABLE_BYTES", 0)
    monkeypatch.setattr(_speed, "alternate_latency", lambda models, feed, **kw: [1.0, 1.2])
    proto = zoo.tied_embedding()
    names = [i.name for i in proto.graph.input]
    data = [{names[0]: h.rng(5).integers(0, 50, (1, 6)).astype(np.int64)}]
    res, q = _quantize(proto, data, mode="weights", speed_check=True)
    onnx.checker.check_model(q)
    table = next(t for t in q.graph.initializer if t.data_type == onnx.TensorProto.INT8)
    casts = [n for n in q.graph.node if n.op_type == "Cast" and n.input[0] == table.name]
    assert len(casts) == 1  # one decode of the table for its rows and its transposed reader
    for a, b in zip(h.run(proto, data[0]), h.run(q, data[0]), strict=True):
        assert np.abs(a - b).max() < 0.05 * np.abs(a).max()
