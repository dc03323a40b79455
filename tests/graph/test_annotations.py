"""Intermediate value types that shape inference gives back are not written to the output; the ones
it cannot give back (a custom op's output, a rank behind a computed shape, a dimension it does not
know) stay, and the model computes exactly what it did."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnxruntime as ort

from onnxcompress import load_model
from onnxcompress.graph.annotations import drop_inferable_annotations
from onnxcompress.model import to_proto
from onnxcompress.passes.quantization import Quantize
from onnxcompress.pipeline import Pipeline
from tests import helpers as h

F = onnx.TensorProto.FLOAT


def _model(custom: bool = False) -> onnx.ModelProto:
    """x [N, 64] -> MatMul -> Relu -> Reshape(by a shape computed from the input) -> out.
    Annotated: the MatMul and Relu outputs (inferable), the Reshape output as [N, 8, 8] (inference
    knows its rank, not its dimensions: the shape is computed), and optionally a custom
    op's output."""
    rng = h.rng(3)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    nodes = [
        oh.make_node("MatMul", ["x", "W"], ["mm"]),
        oh.make_node("Relu", ["mm"], ["act"]),
        oh.make_node("Shape", ["x"], ["xs"], start=0, end=1),
        oh.make_node("Concat", ["xs", "tail"], ["to"], axis=0),
        oh.make_node("Reshape", ["act", "to"], ["r"]),
        oh.make_node("Identity", ["r"], ["y"]),
    ]
    value_info = [
        oh.make_tensor_value_info("mm", F, ["N", 64]),
        oh.make_tensor_value_info("act", F, ["N", 64]),
        oh.make_tensor_value_info("r", F, ["N", 8, 8]),
    ]
    opsets = [oh.make_opsetid("", 17)]
    if custom:
        nodes.append(oh.make_node("Gelu", ["y"], ["g"], domain="com.example"))
        nodes.append(oh.make_node("Relu", ["g"], ["z"]))
        value_info.append(oh.make_tensor_value_info("g", F, ["N", 8, 8]))
        opsets.append(oh.make_opsetid("com.example", 1))
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", F, ["N", 64])],
                          [oh.make_tensor_value_info("z" if custom else "y", F, ["N", 8, 8])],
                          value_info=value_info)
    model = oh.make_model(graph, opset_imports=opsets)
    return h.attach_initializers(model, {"W": w, "tail": np.array([8, 8], np.int64)})


def _value_info(proto: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    return {vi.name: vi for vi in proto.graph.value_info}


def test_inferable_types_dropped_the_rest_kept():
    model = load_model(_model())
    assert drop_inferable_annotations(model) == 2
    kept = _value_info(to_proto(model))
    assert set(kept) == {"r"}  # a Reshape to a computed shape: its 8s unknown to inference
    assert [d.dim_value for d in kept["r"].type.tensor_type.shape.dim][1:] == [8, 8]
    onnx.checker.check_model(to_proto(model), full_check=True)


def test_custom_op_output_kept():
    model = load_model(_model(custom=True))
    drop_inferable_annotations(model)
    assert {"r", "g"} <= set(_value_info(to_proto(model)))


def test_a_wrong_annotation_is_not_reproduced_so_it_stays():
    proto = _model()
    proto.graph.value_info[1].type.tensor_type.shape.dim[1].dim_value = 63  # act says [N, 63]
    model = load_model(proto)
    drop_inferable_annotations(model)
    assert set(_value_info(to_proto(model))) == {"act", "r"}


def test_compress_writes_no_inferable_types_unless_asked():
    proto = _model()
    x = {"x": h.rng(4).standard_normal((2, 64)).astype(np.float32)}
    outs = []
    for keep in (False, True):
        pipeline = Pipeline([Quantize(mode="weights", speed_check=False)], keep_debug_info=keep)
        result = pipeline.run(load_model(proto))
        out = to_proto(result.model)
        names = set(_value_info(out))
        assert names == ({"r"} if not keep else {"mm", "act", "r"} | names)
        assert any("value type" in n for n in result.notes) is not keep
        session = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
        outs.append(session.run(None, x)[0])
    np.testing.assert_array_equal(outs[0], outs[1])
