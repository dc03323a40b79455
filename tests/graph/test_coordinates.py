"""Coordinate inputs (graph/coordinates.py) and what int8 does with them."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper as onh
import pytest

from onnxcompress import Pipeline
from onnxcompress.graph.coordinates import coordinate_inputs
from onnxcompress.model import load_model, to_proto
from onnxcompress.passes import Quantize
from tests import helpers as h


def potential(norm: str = "ReduceL2", width: int = 3) -> onnx.ModelProto:
    """A toy interatomic potential: bond vectors [E, width] -> length -> radial basis -> MLP ->
    summed energy [1, 1]. ``norm``: how the length is taken (``ReduceL2``, or ``sqrt`` of a
    ``ReduceSum`` of the square)."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((16, 256)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((256, 256)) * 0.1).astype(np.float32)
    w3 = (rng.standard_normal((256, 1)) * 0.1).astype(np.float32)
    length = ("r = ReduceL2 <keepdims = 1> (vec, last)" if norm == "ReduceL2" else
              "sq = Mul (vec, vec)\n r2 = ReduceSum <keepdims = 1> (sq, last)\n r = Sqrt (r2)")
    model = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[E, {width}] vec) => (float[1, 1] energy) {{
            {length}
            x = Mul (r, freq)
            basis = Sin (x)
            h1 = MatMul (basis, w1)
            a1 = Tanh (h1)
            h2 = MatMul (a1, w2)
            a2 = Tanh (h2)
            e = MatMul (a2, w3)
            energy = ReduceSum <keepdims = 1> (e, all)
        }}""")
    model.graph.initializer.extend([
        onh.from_array(np.arange(1, 17, dtype=np.float32)[None], "freq"),
        onh.from_array(w1, "w1"), onh.from_array(w2, "w2"), onh.from_array(w3, "w3"),
        onh.from_array(np.array([-1], np.int64), "last"), onh.from_array(np.array([0, 1], np.int64), "all")])
    return model


@pytest.mark.parametrize("norm", ["ReduceL2", "sqrt"])
def test_a_bond_vector_input_reaching_a_length_is_a_coordinate(norm):
    found = coordinate_inputs(load_model(potential(norm)))
    assert found == {"vec": "ReduceL2" if norm == "ReduceL2" else "Sqrt(ReduceSum(x^2))"}


def test_images_and_other_widths_are_not_coordinates():
    assert coordinate_inputs(load_model(potential(width=4))) == {}  # not 2 or 3 entries
    cnn = h.cnn(channels=(3, 8, 16), classes=10)  # [N, 3, H, W]: its last axis is W
    assert coordinate_inputs(load_model(cnn)) == {}
    nhwc = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[1, 8, 8, 3] img) => (float[1, 3, 8, 8] y) {
            y = Transpose <perm = [0, 3, 1, 2]> (img)
        }""")
    assert coordinate_inputs(load_model(nhwc)) == {}  # an NHWC picture: nothing takes a length


def _edges(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    r = np.random.default_rng(seed)
    return [{"vec": (r.standard_normal((64, 3)) * 0.8 + 1.5).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_on_a_coordinate_model_stores_int8_weights_with_float_compute_and_says_so(mode):
    # Batch 25's potentials: int8 activations made CHGNet's finite-difference forces 397% off
    # (dynamic) where weight-only int8 kept them within 4%, at the same latency.
    proto = potential()
    data = _edges(8, 0)
    result = Pipeline([Quantize(mode=mode, speed_check=False)]).run(proto, calibration=data)
    q, res = to_proto(result.model), result.passes[0]
    ops = {n.op_type for n in q.graph.node}
    assert not ops & {"DynamicQuantizeLinear", "MatMulInteger", "QuantizeLinear", "QLinearMatMul"}, ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in q.graph.initializer)
    assert any("coordinate input 'vec'" in line for line in res.headlines), res.headlines
    # the energy is a smooth function of a bond's length: its finite difference follows fp32's
    vec = _edges(1, 5)[0]["vec"]
    step = np.zeros_like(vec)
    step[0, 0] = 1e-3
    fp32 = [h.run(proto, {"vec": vec + s})[0] for s in (step, -step)]
    int8 = [h.run(q, {"vec": vec + s})[0] for s in (step, -step)]
    assert abs((int8[0] - int8[1]) - (fp32[0] - fp32[1])) < 0.1 * abs(fp32[0] - fp32[1]) + 1e-6
    # asked for by op type, int8 compute is kept, and its finite difference is a step's
    forced = Pipeline([Quantize(mode=mode, speed_check=False, op_types_to_quantize=("MatMul",),
                                fidelity_guard=False)]).run(proto, calibration=data)
    assert not any("coordinate input" in line for line in forced.passes[0].headlines)
    stepped = [h.run(to_proto(forced.model), {"vec": vec + s})[0] for s in (step, -step)]
    assert abs((stepped[0] - stepped[1]) - (fp32[0] - fp32[1])) > 0.3 * abs(fp32[0] - fp32[1])
