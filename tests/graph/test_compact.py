"""graph.compact: equal nodes merged, computed Reshape targets written as constants where shape
inference proves them, and only there."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxcompress import load_model
from onnxcompress.graph.compact import compact, merge_equal_nodes
from onnxcompress.graph.constants import merge_duplicates
from onnxcompress.model import to_proto
from tests import helpers as h

F, I64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64


def _dim(prefix: str, tensor: str, axis: int, opset: int = 17) -> list[onnx.NodeProto]:
    """TorchScript's ``tensor.size(axis)`` as a 1-element int64 tensor: Shape, Gather, Unsqueeze
    (a Shape of its own each time, as the exporter writes it; Unsqueeze's axes an attribute
    before opset 13; from opset 15, a Shape(start, end) slice read whole)."""
    index, axes = (numpy_helper.from_array(np.array(v, np.int64)) for v in (axis, [0]))
    if opset >= 15:
        shape = oh.make_node("Shape", [tensor], [f"{prefix}_s"], start=axis, end=axis + 1)
        return [shape, oh.make_node("Identity", [f"{prefix}_s"], [prefix])]
    unsqueeze = (oh.make_node("Unsqueeze", [f"{prefix}_g"], [prefix], axes=[0]) if opset < 13 else
                 oh.make_node("Unsqueeze", [f"{prefix}_g", f"{prefix}_a"], [prefix]))
    return [oh.make_node("Shape", [tensor], [f"{prefix}_s"]),
            oh.make_node("Constant", [], [f"{prefix}_i"], value=index),
            oh.make_node("Gather", [f"{prefix}_s", f"{prefix}_i"], [f"{prefix}_g"], axis=0),
            *([oh.make_node("Constant", [], [f"{prefix}_a"], value=axes)] if opset >= 13 else []),
            unsqueeze]


def _attention_like(opset: int = 13) -> onnx.ModelProto:
    """x [batch, seq, 64] -> q = x @ Wq -> split into 4 heads of 16 with a target computed from
    x's own Shape (batch, seq, 4, 16) -> Transpose -> Softmax -> back -> merged with a target
    (batch, seq, 64) -> rows flattened with (batch * seq, 64): the shape code of a TorchScript
    attention block with dynamic axes."""
    r = h.rng(0)
    nodes = [oh.make_node("MatMul", ["x", "Wq"], ["q"])]
    nodes += _dim("b1", "x", 0, opset) + _dim("t1", "x", 1, opset)
    nodes += [oh.make_node("Concat", ["b1", "t1", "heads"], ["split_to"], axis=0),
              oh.make_node("Reshape", ["q", "split_to"], ["qh"]),
              oh.make_node("Transpose", ["qh"], ["qt"], perm=[0, 2, 1, 3]),
              oh.make_node("Softmax", ["qt"], ["p"], axis=-1),
              oh.make_node("Transpose", ["p"], ["pb"], perm=[0, 2, 1, 3])]
    nodes += _dim("b2", "x", 0, opset) + _dim("t2", "x", 1, opset)
    nodes += [oh.make_node("Concat", ["b2", "t2", "width"], ["merge_to"], axis=0),
              oh.make_node("Reshape", ["pb", "merge_to"], ["y"])]
    nodes += _dim("b3", "y", 0, opset) + _dim("t3", "y", 1, opset)
    nodes += [oh.make_node("Mul", ["b3", "t3"], ["rows"]),
              oh.make_node("Concat", ["rows", "width"], ["flat_to"], axis=0),
              oh.make_node("Reshape", ["y", "flat_to"], ["flat"])]
    inits = [numpy_helper.from_array(r.standard_normal((64, 64)).astype(np.float32), "Wq"),
             numpy_helper.from_array(np.array([4, 16], np.int64), "heads"),
             numpy_helper.from_array(np.array([64], np.int64), "width")]
    graph = oh.make_graph(nodes, "attention_like", [oh.make_tensor_value_info("x", F, ["batch", "seq", 64])],
                          [oh.make_tensor_value_info("y", F, ["batch", "seq", 64]),
                           oh.make_tensor_value_info("flat", F, [None, 64])], inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])


def _targets(proto: onnx.ModelProto) -> dict[str, list[int] | None]:
    consts = {t.name: numpy_helper.to_array(t).tolist() for t in proto.graph.initializer}
    return {n.output[0]: consts.get(n.input[1]) for n in proto.graph.node if n.op_type == "Reshape"}


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The model as written: onnxruntime's own ReshapeFusion trusts shared dimension names and
    writes -1 beside a copied dimension (both tests below fail under it on the original)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _same_outputs(a: onnx.ModelProto, b: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> None:
    for feed in feeds:
        for x, y in zip(_run(a, feed), _run(b, feed), strict=True):
            assert x.shape == y.shape
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("opset", [11, 13, 15, 18])
def test_computed_reshape_targets_become_constants_and_their_arithmetic_goes(opset):
    """Batch 41's transliterator: 1092 -> 527 nodes, int8 2.91x -> 3.51x. The split and merge
    targets read dimensions of the tensor they reshape (through a MatMul and two Transposes that
    keep them): 0 copies each; the flattening target's one unknown element (batch * seq) is -1
    beside a positive constant. Same outputs for every batch and length, an empty batch too (an
    empty sequence is an error of the original's: batch * 0 = 0 copies the batch)."""
    proto = _attention_like(opset)
    onnx.checker.check_model(proto)
    model = load_model(proto)
    before, after = compact(model)
    out = to_proto(model)
    onnx.checker.check_model(out)
    assert _targets(out) == {"qh": [0, 0, 4, 16], "y": [0, 0, 64], "flat": [-1, 64]}
    assert not any(n.op_type in ("Shape", "Gather", "Unsqueeze", "Concat", "Mul", "Identity")
                   for n in out.graph.node)
    assert (before, after) == (len(proto.graph.node), 7)  # MatMul, 3 Reshapes, 2 Transposes, Softmax
    r = h.rng(1)
    _same_outputs(proto, out, [{"x": r.standard_normal((n, t, 64)).astype(np.float32)}
                               for n, t in ((1, 1), (2, 7), (3, 12), (0, 5))])


def _two_inputs_one_name() -> onnx.ModelProto:
    """a [1, seq, 8] reshaped to (1, b's length, -1): both inputs name their length ``seq``, as
    exporters name an encoder's and a decoder's lengths alike, but they differ at run time."""
    nodes = _dim("tb", "b", 1) + [
        oh.make_node("Concat", ["one", "tb", "minus_one"], ["to"], axis=0),
        oh.make_node("Reshape", ["a", "to"], ["y"]),
        oh.make_node("Relu", ["b"], ["z"])]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus_one")]
    graph = oh.make_graph(nodes, "two_inputs", [oh.make_tensor_value_info("a", F, [1, "seq", 8]),
                                                oh.make_tensor_value_info("b", F, [1, "seq", 4])],
                          [oh.make_tensor_value_info(n, F, None) for n in ("y", "z")], inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_a_dimension_name_two_inputs_share_proves_nothing():
    """Folded to (1, 0, -1) the target would copy a's length: (1, 4, 8) where the model gives
    (1, 2, 16). Each input dimension is a symbol of its own, so the target stays computed."""
    proto = _two_inputs_one_name()
    model = load_model(proto)
    compact(model)
    out = to_proto(model)
    assert _targets(out) == {"y": None}
    feed = {"a": h.rng(2).standard_normal((1, 4, 8)).astype(np.float32), "b": np.ones((1, 2, 4), np.float32)}
    _same_outputs(proto, out, [feed])
    assert _run(out, feed)[0].shape == (1, 2, 16)


def test_minus_one_only_beside_positive_constants():
    """(batch, seq * 64) of x [batch, seq, 64]: the batch copies (0) and seq * 64 is unknown; -1
    beside a copied dimension would be ambiguous for an empty batch, so it stays computed."""
    nodes = _dim("b", "x", 0) + _dim("t", "x", 1) + [
        oh.make_node("Mul", ["t", "width"], ["tw"]),
        oh.make_node("Concat", ["b", "tw"], ["to"], axis=0),
        oh.make_node("Reshape", ["x", "to"], ["y"])]
    graph = oh.make_graph(nodes, "rows", [oh.make_tensor_value_info("x", F, ["batch", "seq", 64])],
                          [oh.make_tensor_value_info("y", F, None)],
                          [numpy_helper.from_array(np.array([64], np.int64), "width")])
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model = load_model(proto)
    compact(model)
    out = to_proto(model)
    assert _targets(out) == {"y": None}
    r = h.rng(3)
    _same_outputs(proto, out, [{"x": r.standard_normal((n, t, 64)).astype(np.float32)}
                               for n, t in ((2, 3), (0, 3), (2, 0))])


def test_equal_nodes_merge_but_not_random_ones_graph_outputs_or_outer_scope_reads():
    """Two Relu of x merge (and the Adds reading them then merge too); two RandomNormalLike of x
    stay two draws; a duplicate that is a graph output stays; so does one an If branch reads, and
    a DequantizeLinear per reader (the QDQ layout). (The MatMuls read different values then.)"""
    then = oh.make_graph([oh.make_node("Neg", ["r3"], ["t"])], "then", [],
                         [oh.make_tensor_value_info("t", F, None)])
    other = oh.make_graph([oh.make_node("Identity", ["r1"], ["e"])], "else", [],
                          [oh.make_tensor_value_info("e", F, None)])
    nodes = [oh.make_node("Relu", ["x"], ["r1"]), oh.make_node("Relu", ["x"], ["r2"]),
             oh.make_node("Add", ["r1", "x"], ["a1"]), oh.make_node("Add", ["r2", "x"], ["a2"]),
             oh.make_node("Relu", ["x"], ["r3"]), oh.make_node("Relu", ["x"], ["out_dup"]),
             oh.make_node("RandomNormalLike", ["x"], ["n1"], seed=1.0),
             oh.make_node("RandomNormalLike", ["x"], ["n2"], seed=1.0),
             oh.make_node("Sub", ["n1", "n2"], ["d"]),
             oh.make_node("Add", ["a1", "a2"], ["s"]),
             oh.make_node("ReduceSum", ["x"], ["sum"], keepdims=0),
             oh.make_node("Greater", ["sum", "zero"], ["c"]),
             oh.make_node("If", ["c"], ["branch"], then_branch=then, else_branch=other),
             oh.make_node("DequantizeLinear", ["q", "scale"], ["w1"]),
             oh.make_node("DequantizeLinear", ["q", "scale"], ["w2"]),
             oh.make_node("MatMul", ["x", "w1"], ["m1"]), oh.make_node("MatMul", ["x", "w2"], ["m2"])]
    graph = oh.make_graph(nodes, "dups", [oh.make_tensor_value_info("x", F, [2, 3])],
                          [oh.make_tensor_value_info(n, F, None)
                           for n in ("s", "out_dup", "d", "branch", "m1", "m2")],
                          [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                           numpy_helper.from_array(np.arange(9, dtype=np.int8).reshape(3, 3), "q"),
                           numpy_helper.from_array(np.array(0.1, np.float32), "scale")])
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model = load_model(proto)
    assert merge_equal_nodes(model) == 2  # r2 -> r1, then a2 -> a1
    out = to_proto(model)
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("Relu") == 3 and ops.count("RandomNormalLike") == 2 and ops.count("Add") == 2
    assert ops.count("DequantizeLinear") == 2 and ops.count("MatMul") == 2
    x = {"x": h.rng(4).standard_normal((2, 3)).astype(np.float32)}
    for a, b in zip(h.run(proto, x)[:2], h.run(out, x)[:2], strict=True):
        np.testing.assert_array_equal(a, b)


def test_large_equal_constants_merge_by_digest_and_bytes():
    """ultraface writes its 35 KB of priors twice (8% of its int8 file). Constants over
    MERGE_MAX_BYTES merge where type, shape and bytes are equal; one differing by one value stays."""
    table = h.rng(5).standard_normal((3000, 4)).astype(np.float32)
    other = table.copy()
    other[-1, -1] += 1
    nodes = [oh.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))
             for name, value in (("p1", table), ("p2", table.copy()), ("p3", other))]
    nodes += [oh.make_node("Add", ["p1", "x"], ["a"]), oh.make_node("Add", ["p2", "a"], ["b"]),
              oh.make_node("Add", ["p3", "b"], ["y"])]
    graph = oh.make_graph(nodes, "tables", [oh.make_tensor_value_info("x", F, [3000, 4])],
                          [oh.make_tensor_value_info("y", F, None)])
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model = load_model(proto)
    assert merge_duplicates(model) == (1, table.nbytes)
    out = to_proto(model)
    assert sorted(n.output[0] for n in out.graph.node if n.op_type == "Constant") == ["p1", "p3"]
    x = {"x": h.rng(6).standard_normal((3000, 4)).astype(np.float32)}
    _same_outputs(proto, out, [x])


def test_constants_past_the_digest_size_are_not_read_to_be_compared(monkeypatch):
    """A large model's layers share shapes: hashing each one to find an equal would read the
    whole model again; past MERGE_DIGEST_MAX_BYTES a constant is not compared."""
    from onnxcompress.graph import constants

    monkeypatch.setattr(constants, "MERGE_DIGEST_MAX_BYTES", 40_000)  # the tables are 48 KB
    table = h.rng(5).standard_normal((3000, 4)).astype(np.float32)
    nodes = [oh.make_node("Constant", [], [name], value=numpy_helper.from_array(table, name))
             for name in ("p1", "p2")]
    nodes += [oh.make_node("Add", ["p1", "x"], ["a"]), oh.make_node("Add", ["p2", "a"], ["y"])]
    graph = oh.make_graph(nodes, "tables", [oh.make_tensor_value_info("x", F, [3000, 4])],
                          [oh.make_tensor_value_info("y", F, None)])
    model = load_model(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]))
    assert merge_duplicates(model) == (0, 0)


def test_a_compression_run_compacts_unless_debug_information_is_kept(tmp_path):
    from onnxcompress.api import compress_file
    from onnxcompress.passes import Quantize
    from onnxcompress.pipeline import Pipeline

    src = tmp_path / "m.onnx"
    onnx.save(_attention_like(), src)
    sizes, outputs = {}, {}
    x = {"x": h.rng(7).standard_normal((2, 5, 64)).astype(np.float32)}
    for keep in (False, True):
        dst = tmp_path / f"q{keep}.onnx"
        pipeline = Pipeline([Quantize(mode="weights", speed_check=False, fidelity_guard=False)],
                            keep_debug_info=keep)
        report = compress_file(src, dst, pipeline)
        notes = [n for n in report.result.notes if n.startswith("removed ")]
        out = onnx.load(dst)
        assert bool(notes) is not keep
        assert any(n.op_type == "Shape" for n in out.graph.node) is keep
        sizes[keep], outputs[keep] = dst.stat().st_size, _run(out, x)
    assert sizes[False] < sizes[True]
    for a, b in zip(outputs[False], outputs[True], strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_compaction_that_fails_leaves_the_run_and_says_so(tmp_path, monkeypatch):
    from onnxcompress.api import compress_file
    from onnxcompress.graph import compact as compact_module
    from onnxcompress.passes import Quantize
    from onnxcompress.pipeline import Pipeline

    def broken(model):
        raise ValueError("no symbols today")

    monkeypatch.setattr(compact_module, "fold_reshape_targets", broken)
    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(_attention_like(), src)
    pipeline = Pipeline([Quantize(mode="weights", speed_check=False, fidelity_guard=False)])
    report = compress_file(src, dst, pipeline)
    assert "the graph was not compacted (ValueError: no symbols today)" in report.result.notes
    x = {"x": h.rng(8).standard_normal((2, 5, 64)).astype(np.float32)}
    assert _run(onnx.load(dst), x)[0].shape == (2, 5, 64)
