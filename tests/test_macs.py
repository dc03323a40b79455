from __future__ import annotations

import onnx
import onnx.parser

from onnxcompress import load_model
from onnxcompress.macs import count_macs, count_parameters, infer_shapes
from tests import helpers as h


def test_conv_gemm_macs_and_parameters():
    report = count_macs(load_model(h.cnn(channels=(3, 8, 16), classes=10)))
    by_node = report.by_node()
    # conv0: 8 x 16 x 16 outputs, each 3 x 3 x 3 MACs; conv1: 16 x 16 x 16, each 8 x 3 x 3.
    assert by_node["conv0"] == 8 * 16 * 16 * 27
    assert by_node["conv1"] == 16 * 16 * 16 * 72
    assert by_node["fc"] == 10 * 16
    assert report.macs == sum(by_node.values()) and not report.unknown
    # Weights, biases and the four BN vectors of both layers, then the classifier.
    assert report.parameters == count_parameters(load_model(h.cnn(channels=(3, 8, 16))))
    assert report.parameters == (8 * 27 + 8 * 5) + (16 * 72 + 16 * 5) + 10 * 16 + 10


def test_matmul_batch_override_depthwise_and_conv_transpose():
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4, 8, 8] x, float[N, 5, 16] t)
            => (float[N, 4, 8, 8] y, float[N, 5, 32] u, float[N, 2, 16, 16] v) {
            y = Conv <group = 4, pads = [1, 1, 1, 1]> (x, wd)
            u = MatMul (t, wm)
            v = ConvTranspose <strides = [2, 2], kernel_shape = [2, 2]> (x, wt)
        }
    """)
    import numpy as np

    h.attach_initializers(
        model,
        {
            "wd": np.ones((4, 1, 3, 3), np.float32),
            "wm": np.ones((16, 32), np.float32),
            "wt": np.ones((4, 2, 2, 2), np.float32),
        },
    )
    report = count_macs(load_model(model))
    macs = {n.op_type: n.macs for n in report.nodes}
    assert macs["Conv"] == 4 * 8 * 8 * 9
    assert macs["MatMul"] == 5 * 32 * 16
    assert macs["ConvTranspose"] == 4 * 8 * 8 * 2 * 2 * 2
    doubled = count_macs(load_model(model), {"x": [2, 4, 8, 8], "t": [2, 5, 16]})
    assert doubled.macs == 2 * report.macs
    assert infer_shapes(load_model(model))["u"] == (1, 5, 32)
