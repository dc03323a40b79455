"""Mixed bits per layer (``budget_bits`` / ``--quantize-budget``): the sensitivity probe picks 8
bits for the layer whose rounding moves the outputs most, within the size budget, and the
written model computes exactly what its codes say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from onnxcompress import blockwise
from onnxcompress.cli import main
from onnxcompress.errors import ConfigError
from onnxcompress.model import load_model
from onnxcompress.passes import BlockQuantize
from onnxcompress.passes._bit_allocation import probe_sensitivity
from tests import helpers, zoo
from tests.passes.test_block_quantization import _assert_exact, _cos, _quantize

F = onnx.TensorProto.FLOAT


def _three_branches(seed: int = 0) -> onnx.ModelProto:
    """y = x @ loud + 0.02 * (x @ quiet1 + x @ quiet2): the three weights have the same shape and
    statistics (same bytes and weight error at every width), but only ``loud`` moves y much."""
    r = np.random.default_rng(seed)
    w = {n: (r.standard_normal((64, 48)) / 8).astype(np.float32) for n in ("quiet1", "loud", "quiet2")}
    nodes = [oh.make_node("MatMul", ["x", n], [f"{n}_y"], name=n) for n in w]
    nodes += [
        oh.make_node("Add", ["quiet1_y", "quiet2_y"], ["q"], name="add_q"),
        oh.make_node("Mul", ["q", "small"], ["qs"], name="scale_q"),
        oh.make_node("Add", ["loud_y", "qs"], ["y"], name="add_y"),
    ]
    inits = [onh.from_array(v, n) for n, v in w.items()] + [onh.from_array(np.float32(0.02), "small")]
    graph = oh.make_graph(nodes, "three_branches", [oh.make_tensor_value_info("x", F, ["N", 64])],
                          [oh.make_tensor_value_info("y", F, ["N", 48])], inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def _calib(n: int = 4) -> list[dict[str, np.ndarray]]:
    r = np.random.default_rng(7)
    return [{"x": r.standard_normal((8, 64)).astype(np.float32)} for _ in range(n)]


def _bits(proto: onnx.ModelProto) -> dict[str, int]:
    return {n.name: next(a.i for a in n.attribute if a.name == "bits")
            for n in proto.graph.node if n.op_type == "MatMulNBits"}


def test_sensitive_layer_gets_8_bits_within_the_budget() -> None:
    model = _three_branches()
    # 5.5 bits: the bytes of uniform 4 plus 3/8 of the way to uniform 8, one layer's step fits.
    # accuracy_level 0: exact float arithmetic, so the output can be checked against numpy.
    result, proto = _quantize(model, min_size=0, budget_bits=5.5, calibration=_calib(), method="rtn",
                              accuracy_level=0)
    assert _bits(proto) == {"quiet1": 4, "loud": 8, "quiet2": 4}
    assert result.metrics["allocated_bits"] == {4: 2, 8: 1}
    assert result.metrics["allocation_estimated_bytes"] <= result.metrics["allocation_budget_bytes"]
    stats = {s.name: s for s in result.layers}
    assert stats["loud"].extra["allocated_bits"] == 8
    assert stats["loud"].extra["probe_deviation"] > 100 * stats["quiet1"].extra["probe_deviation"]
    # Exactly the numpy decode of each layer at its own width (8-bit codes are RTN's here).
    x = helpers.rng(1).standard_normal((5, 64)).astype(np.float32)
    got = _assert_exact(proto, {"x": x})[0]
    weights = {t.name: onh.to_array(t) for t in model.graph.initializer}
    want = np.zeros((5, 48), np.float64)
    for name, bits, gain in (("loud", 8, 1.0), ("quiet1", 4, 0.02), ("quiet2", 4, 0.02)):
        qt = blockwise.quantize_rtn(weights[name].T, blockwise.BlockSpec(bits, 32))
        want += gain * (x.astype(np.float64) @ qt.dequantize().T.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    # By default (auto) the 8-bit layer runs onnxruntime's int8 kernel (level 4), 4-bit ones level 0.
    _, auto = _quantize(model, min_size=0, budget_bits=5.5, calibration=_calib(), method="rtn")
    levels = {n.name: next((a.i for a in n.attribute if a.name == "accuracy_level"), 0)
              for n in auto.graph.node if n.op_type == "MatMulNBits"}
    assert levels == {"quiet1": 0, "loud": 4, "quiet2": 0}
    assert _cos(helpers.run(auto, {"x": x})[0], got) > 0.9999
    # The mixed model is closer to float than uniform 4 bits.
    _, uniform = _quantize(model, min_size=0, method="rtn")
    ref = helpers.run(model, {"x": x})[0]
    assert _cos(got, ref) > _cos(helpers.run(uniform, {"x": x})[0], ref)


def test_budget_edges_and_no_calibration() -> None:
    model = _three_branches()
    # No calibration data: a note, every layer at 4 bits.
    result, proto = _quantize(model, min_size=0, budget_bits=6.0)
    assert set(_bits(proto).values()) == {4} and any("calibration" in n for n in result.notes)
    # The whole budget: every layer at 8 bits.
    result, proto = _quantize(model, min_size=0, budget_bits=8.0, calibration=_calib(2))
    assert set(_bits(proto).values()) == {8}
    with pytest.raises(ConfigError):
        BlockQuantize(bits=4, budget_bits=3.0)


def test_tied_embedding_is_probed_with_its_copy() -> None:
    """The exporter's transposed copy of a tied table is degraded with it in the probe, and the
    shared codes serve the Gather and the head at the allocated width."""
    model = zoo.tied_embedding_exporter_copy()
    table = next(onh.to_array(t) for t in model.graph.initializer if t.name == "embed.weight")
    r = np.random.default_rng(3)
    calib = [{"input_ids": r.integers(0, 100, (1, 6)).astype(np.int64)} for _ in range(3)]
    # The probe degrades the copy with the table: both readers move the outputs.
    table_q = blockwise.quantize_rtn(table, blockwise.BlockSpec(4, 32)).dequantize()
    m = load_model(model)
    alone = probe_sensitivity(m, {"embed.weight": table_q}, calib)
    linked = probe_sensitivity(m, {"embed.weight": table_q}, calib,
                               linked={"embed.weight": {"embed_t_copy": np.ascontiguousarray(table_q.T)}})
    assert linked.deviation["embed.weight"] > 1.5 * alone.deviation["embed.weight"] > 0
    result, proto = _quantize(model, min_size=0, budget_bits=8.0, calibration=calib, method="rtn",
                              accuracy_level=0)
    assert result.metrics["allocated_bits"] == {8: 2}
    gbq = next(n for n in proto.graph.node if n.op_type == "GatherBlockQuantized")
    head = next(n for n in proto.graph.node if n.name == "lm_head")
    assert next(a.i for a in gbq.attribute if a.name == "bits") == 8
    assert _bits(proto)["lm_head"] == 8 and gbq.input[2] == head.input[2]
    feeds = {"input_ids": np.array([[3, 7, 42]], np.int64)}
    got = _assert_exact(proto, feeds)
    assert _cos(got[0], helpers.run(model, feeds)[0]) > 0.99


def test_cli_quantize_budget(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(_three_branches(), src)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.stack([f["x"] for f in _calib()]))
    out = tmp_path / "q.onnx"
    assert main(["compress", str(src), "-o", str(out), "--quantize", "int4", "--quantize-budget", "5.5",
                 "--calibration", str(calib), "--block-method", "rtn", "-q"]) == 0
    assert _bits(onnx.load(out)) == {"quiet1": 4, "loud": 8, "quiet2": 4}
    assert main(["compress", str(src), "-o", str(out), "--quantize", "int4", "--quantize-budget", "9",
                 "-q", "--overwrite"]) == 2
