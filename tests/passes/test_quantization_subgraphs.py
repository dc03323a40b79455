"""Dynamic int8 of a weight that a Loop body reads from the outer graph (a scripted time loop)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxcompress import Pipeline, Quantize
from onnxcompress.model import to_proto
from tests import helpers as h


def _loop_reader(hidden: int = 96, steps: int = 4) -> onnx.ModelProto:
    """h <- Tanh(h @ W + x) for ``steps`` steps, W [hidden, hidden] an outer-graph initializer that
    only the Loop body reads (torch.jit.script's export of a recurrent cell written as a for loop)."""
    w = (h.rng(5).standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "W"], ["hw"], name="step_matmul"),
         helper.make_node("Add", ["hw", "x"], ["pre"]),
         helper.make_node("Tanh", ["pre"], ["h_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, hidden])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, hidden])])  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Loop", ["steps", "", "x"], ["y"], body=body)],
        "loop_reader", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, hidden])],
        [numpy_helper.from_array(w, "W"),
         numpy_helper.from_array(np.array(steps, np.int64), "steps")])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_dynamic_int8_of_an_outer_weight_read_in_a_loop_body():
    # The rewrite inserted the reader's new nodes into the weight's graph, where the reader is not:
    # "ValueError: Value Node(name='/h2h/Gemm' ...) is not in the list" (batch 17's digits_gru_loop)
    proto = _loop_reader()
    result = Pipeline([Quantize(mode="dynamic", speed_check=False)]).run(proto)
    q = to_proto(result.model)
    onnx.checker.check_model(q)
    loop = next(n for n in q.graph.node if n.op_type == "Loop")
    body_ops = [n.op_type for n in loop.attribute[0].g.node]
    assert "MatMulInteger" in body_ops and "DynamicQuantizeLinear" in body_ops
    assert "MatMulInteger" not in [n.op_type for n in q.graph.node]
    x = {"x": h.rng(6).standard_normal((1, 96)).astype(np.float32)}
    want, got = h.run(proto, x)[0], h.run(q, x)[0]
    assert np.linalg.norm(want - got) / np.linalg.norm(want) < 0.05
