"""An author's QDQ export that kept its weights float behind their QuantizeLinear (Qualcomm AI
Hub's YAMNet: 14.3 MB float, 1.00x in every configuration) is read with those weights as the
integer tensors the model computes with (``graph.fold.fold_constant_quantize``)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from onnxcompress import load_model
from onnxcompress.model import to_proto
from onnxcompress.pipeline import compress
from tests import helpers as h


def _qdq_conv(*, per_channel: bool, zero_type: int, quantized_output: bool = False) -> onnx.ModelProto:
    """x -> Conv(DequantizeLinear(QuantizeLinear(W float))) -> y, the weight's quantizer kept."""
    r = h.rng(7)
    w = r.standard_normal((16, 8, 3, 3)).astype(np.float32)
    scale = (np.abs(w).reshape(16, -1).max(1) / 127).astype(np.float32) if per_channel else \
        np.array(np.abs(w).max() / 127, np.float32)
    dtype = np.int8 if zero_type == onnx.TensorProto.INT8 else np.uint8
    zero = np.zeros(scale.shape, dtype) + (0 if dtype == np.int8 else 128)
    axis = {"axis": 0} if per_channel else {}
    nodes = [oh.make_node("QuantizeLinear", ["w", "w_scale", "w_zero"], ["wq"], **axis),
             oh.make_node("DequantizeLinear", ["wq", "w_scale", "w_zero"], ["wd"], **axis),
             oh.make_node("Conv", ["x", "wd"], ["y"], pads=[1, 1, 1, 1])]
    outputs = [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)]
    if quantized_output:
        outputs.append(oh.make_tensor_value_info("wq", zero_type, None))
    x = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 12, 12])
    graph = oh.make_graph(nodes, "qdq", [x], outputs, [onh.from_array(w, "w"),
                                                       onh.from_array(scale, "w_scale"),
                                                       onh.from_array(zero, "w_zero")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])
    model.ir_version = 7
    return model


@pytest.mark.parametrize(("per_channel", "zero_type"), [(True, onnx.TensorProto.INT8),
                                                        (False, onnx.TensorProto.UINT8)])
def test_a_quantizer_of_a_float_weight_is_folded_exactly(per_channel, zero_type):
    proto = _qdq_conv(per_channel=per_channel, zero_type=zero_type)
    folded = to_proto(load_model(proto))
    assert [n.op_type for n in folded.graph.node] == ["DequantizeLinear", "Conv"]
    stored = {t.name: t for t in folded.graph.initializer}
    assert stored["wq"].data_type == zero_type and "w" not in stored
    x = {"x": h.rng(1).standard_normal((1, 8, 12, 12)).astype(np.float32)}
    (a,), (b,) = h.run(proto, x), h.run(folded, x)
    assert np.array_equal(a, b)  # what onnxruntime computed from the float weight, bit for bit


def test_the_folded_model_is_a_quarter_of_the_bytes_with_a_note():
    proto = _qdq_conv(per_channel=True, zero_type=onnx.TensorProto.INT8)
    result = compress(proto, {"passes": [{"pass": "kmeans", "bits": 8}]})
    assert proto.ByteSize() / to_proto(result.model).ByteSize() > 3.0
    assert any("folded 1 QuantizeLinear" in n for n in result.notes)


def test_a_quantizer_whose_integers_are_an_output_stays():
    proto = _qdq_conv(per_channel=True, zero_type=onnx.TensorProto.INT8, quantized_output=True)
    folded = to_proto(load_model(proto))
    assert [n.op_type for n in folded.graph.node][0] == "QuantizeLinear"
