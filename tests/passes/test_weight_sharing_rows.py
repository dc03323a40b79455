"""k-means tables that only row Gathers read, decoded from the rows each Gather reads
(``passes/_kmeans_rows``): the same values as the folded decode, nothing folded at load."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest

from onnxcompress import Pipeline, packing
from onnxcompress.model import to_proto
from onnxcompress.passes import WeightSharing
from tests import helpers as h

ROWS, WIDTH = 3000, 100  # 300K values: past _kmeans_int8.SMALL_MODEL_VALUES; 100 pads at 1-bit planes


@pytest.fixture(autouse=True)
def rows_on_tiny_models(monkeypatch):
    """These lookup models are only their tables, which a tiny model decodes at load
    (``_kmeans_int8.TINY_COMPUTE_VALUES``): lowered, the rows form is what they test."""
    from onnxcompress.passes import _kmeans_int8

    monkeypatch.setattr(_kmeans_int8, "TINY_COMPUTE_VALUES", 0)


def lookup(opset: int = 17, table: np.ndarray | None = None) -> onnx.ModelProto:
    """Two Gathers of one table by [b, t] ids (a token and a position lookup), summed."""
    proto = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : {opset}]>
        g (int64[b, t] ids, int64[b, t] pos) => (float[b, t, {WIDTH}] y) {{
            a = Gather <axis = 0> (table, ids)
            p = Gather <axis = 0> (table, pos)
            y = Add (a, p)
        }}
    """)
    if table is None:
        table = np.random.default_rng(0).standard_normal((ROWS, WIDTH)).astype(np.float32)
    return h.attach_initializers(proto, {"table": table})


def share(proto: onnx.ModelProto, **options) -> tuple[object, onnx.ModelProto]:
    options.setdefault("rest", "float32")
    result = Pipeline([WeightSharing(**options)]).run(proto)
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    return result.passes[0], out


def feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"ids": rng.integers(0, ROWS, (2, 5)), "pos": np.array([[0, 1, 2, 3, ROWS - 1]] * 2)}


def folded_floats(proto: onnx.ModelProto, tmp_path) -> list[int]:
    """Sizes of the float initializers onnxruntime holds after its load-time folding."""
    path = tmp_path / "optimized.onnx"
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(path)
    ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(path))
    return [int(np.prod(t.dims)) for t in optimized.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]


@pytest.mark.parametrize("bits,opset,per_channel", [
    (4, 17, False), (3, 17, False), (2, 21, False), (7, 13, False), (5, 13, True), (3, 17, True)])
def test_a_gathered_table_decodes_only_its_rows_to_the_folded_decodes_values(bits, opset, per_channel,
                                                                             tmp_path, monkeypatch):
    """lac_encoder's 58224 x 128 embedding at k-means 4 folded whole at load (session peak 3.3x
    the fp32 model's); decoded from its gathered rows it holds the stored bytes. The values are
    the folded decode's exactly. One codebook: whole-byte widths read a byte at a time; per-row
    codebooks: bit planes (combined in int32 at opset 13: no uint8 Add). (A 100-wide table at 5-7
    bits is int8 rows, next test: held off here to test the codebook's byte form.)"""
    from onnxcompress.passes import weight_sharing

    monkeypatch.setattr(weight_sharing, "ROWS_SLACK", 0.0)
    proto = lookup(opset)
    result, rows = share(proto, bits=bits, per_channel=per_channel)
    layer = result.layers[0]
    assert layer.name == "table" and layer.extra["decode"] == "the rows each Gather reads, per call"
    stored = bits if per_channel else {3: 4, 5: 8, 7: 8}.get(bits, bits)
    assert layer.extra["stored_bits"] == stored
    assert per_channel or layer.bits < stored + 1  # + the book and row scales (not a book a row)
    _, folded = share(proto, bits=bits, decode="codebook", per_channel=per_channel)
    np.testing.assert_array_equal(h.run(rows, feeds())[0], h.run(folded, feeds())[0])
    assert max(folded_floats(folded, tmp_path)) == ROWS * WIDTH  # the fold this avoids
    assert max(folded_floats(rows, tmp_path), default=0) < ROWS * WIDTH // 3  # books and scales
    readers = {n.input[0] for n in rows.graph.node if n.op_type == "Gather" and n.input[1] in ("ids", "pos")}
    assert readers and "table" not in readers  # each lookup reads the stored rows
    ops = collections.Counter(n.op_type for n in rows.graph.node)
    assert ops["Shape"] == 0  # the ids' rank is known: no shape restored at run time
    if per_channel:  # each row's codebook: its offset gathered too
        assert ops["BitShift"] > 0 and ops["Gather"] >= 2 * (len(packing.plane_widths(bits)) + 2)
    else:  # a lookup a byte: rows, their values [, their scales]
        assert ops["BitShift"] == 0 and ops["Gather"] in (4, 6)
    out = h.run(rows, feeds())[0]
    assert out.shape == (2, 5, WIDTH)
    assert np.corrcoef(out.ravel(), h.run(proto, feeds())[0].ravel())[0, 1] > 0.9


@pytest.mark.parametrize("bits", [5, 6, 7])
def test_a_wide_table_at_5_to_7_bits_is_int8_rows(bits):
    """5-7-bit indices of a table read by rows take a byte each, as int8 rows do: where the rows'
    float16 scales cost about what the codebook does (a 100-wide table), int8 rows, with 256
    levels and no codebook lookup each call (wordllama's 32000x256 table at k-means 6: 5.9x
    fp32's latency and 98.3% recall@10; int8 rows 1.14x and 99.6%, the same size). A 16-wide
    table's scales would cost 12.5%: its codebook stays."""
    result, rows = share(lookup(), bits=bits)
    layer = result.layers[0]
    assert layer.extra.get("stored_bits") is None and layer.bits >= 8  # int8 and its row scales
    assert any(f"int8 rows, not {bits}-bit indices" in n for n in result.notes)
    ref, out = h.run(lookup(), feeds())[0], h.run(rows, feeds())[0]
    _, coded = share(lookup(), bits=bits, per_channel=False, storage="uint8", decode="codebook")
    assert np.abs(out - ref).max() < np.abs(h.run(coded, feeds())[0] - ref).max()
    narrow = np.random.default_rng(0).standard_normal((ROWS, 16)).astype(np.float32)
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[b, t] ids) => (float[b, t, 16] y) { y = Gather <axis = 0> (table, ids) }
    """)
    result, _ = share(h.attach_initializers(proto, {"table": narrow}), bits=bits)
    assert result.layers[0].extra["stored_bits"] in (bits, 8)  # its codebook
    assert not any("int8 rows" in n for n in result.notes)


def test_ids_of_unknown_rank_are_read_flat_and_their_shape_restored():
    proto = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[n] raw, int64[r] shape) => (float[1, m] y, int64[k] s) {{
            ids = Reshape (raw, shape)
            rows = Gather <axis = 0> (table, ids)
            y = Flatten <axis = 0> (rows)
            s = Shape (rows)
        }}
    """)
    proto = h.attach_initializers(
        proto, {"table": np.random.default_rng(4).standard_normal((ROWS, WIDTH)).astype(np.float32)})
    _, rows = share(proto, bits=4)
    assert collections.Counter(n.op_type for n in rows.graph.node)["Shape"] == 2
    _, folded = share(proto, bits=4, decode="codebook")
    for shape in ([], [12], [2, 3, 2]):
        feed = {"raw": np.arange(int(np.prod(shape)), dtype=np.int64) * 7, "shape": np.array(shape, np.int64)}
        got, got_shape = h.run(rows, feed)
        assert list(got_shape) == [*shape, WIDTH]
        np.testing.assert_array_equal(got, h.run(folded, feed)[0])


def test_a_float16_table_decodes_its_rows_in_float16():
    table = np.random.default_rng(2).standard_normal((ROWS, WIDTH)).astype(np.float16)
    proto = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[n] ids) => (float16[n, {WIDTH}] y) {{ y = Gather <axis = 0> (table, ids) }}
    """)
    proto = h.attach_initializers(proto, {"table": table})
    result, rows = share(proto, bits=4)
    assert result.layers[0].extra["decode"] == "the rows each Gather reads, per call"
    _, folded = share(proto, bits=4, decode="codebook")
    ids = {"ids": np.array([5, 0, ROWS - 1], np.int64)}
    got = h.run(rows, ids)[0]
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, h.run(folded, ids)[0])


def test_a_table_also_read_by_a_matmul_keeps_the_folded_decode():
    """A tied table (a Gather and, through Transpose, the output MatMul) needs the whole table
    decoded anyway: one decode, folded at load."""
    proto = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[n] ids) => (float[n, {ROWS}] y) {{
            e = Gather <axis = 0> (table, ids)
            t = Transpose <perm = [1, 0]> (table)
            y = MatMul (e, t)
        }}
    """)
    proto = h.attach_initializers(
        proto, {"table": np.random.default_rng(3).standard_normal((ROWS, WIDTH)).astype(np.float32)})
    result, out = share(proto, bits=4)
    assert "decode" not in result.layers[0].extra
    ops = collections.Counter(n.op_type for n in out.graph.node)
    assert ops["Shape"] == 0  # one decode, folded at load; no per-lookup one


def test_a_table_read_inside_if_branches_is_decoded_in_each_branch():
    proto = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[n] ids, bool c) => (float[n, {WIDTH}] y) {{
            y = If (c) <then_branch = t () => (float[n, {WIDTH}] a) {{ a = Gather <axis = 0> (table, ids) }},
                        else_branch = e () => (float[n, {WIDTH}] b) {{ g = Gather <axis = 0> (table, ids)
                                                                      b = Neg (g) }}>
        }}
    """)
    proto = h.attach_initializers(
        proto, {"table": np.random.default_rng(5).standard_normal((ROWS, WIDTH)).astype(np.float32)})
    result, rows = share(proto, bits=4)
    assert result.layers[0].extra["decode"] == "the rows each Gather reads, per call"
    _, folded = share(proto, bits=4, decode="codebook")
    for c in (True, False):
        feed = {"ids": np.array([1, 5, ROWS - 1]), "c": np.array(c)}
        np.testing.assert_array_equal(h.run(rows, feed)[0], h.run(folded, feed)[0])


@pytest.mark.parametrize("tiny", [True, False])
def test_runtime_decode_of_a_gathered_table_decodes_only_its_rows(tiny, monkeypatch):
    """``--kmeans-decode runtime`` put the whole table's lookup in front of the Gather: every call
    decoded all 30522 x 384 values of a MiniLM's word embeddings to read a few rows (batch 19:
    live session memory 181 MB against fp32's 73). It decodes the gathered rows, in a tiny model
    too (which the auto decode folds at load), to the folded decode's values."""
    if tiny:
        from onnxcompress.passes import _kmeans_int8

        monkeypatch.setattr(_kmeans_int8, "TINY_COMPUTE_VALUES", 10**9)
    proto = lookup()
    result, runtime = share(proto, bits=4, decode="runtime")
    assert result.layers[0].extra["decode"] == "the rows each Gather reads, per call"
    readers = {n.input[0] for n in runtime.graph.node
               if n.op_type == "Gather" and n.input[1] in ("ids", "pos")}
    assert readers and "table" not in readers
    _, folded = share(proto, bits=4, decode="codebook")
    np.testing.assert_array_equal(h.run(runtime, feeds())[0], h.run(folded, feeds())[0])
