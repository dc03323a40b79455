"""GPTQ rounding of int8 weights (quantize --reconstruct): same scales and storage, codes chosen
in compensating order, kept per layer only where the output error falls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from onnxcompress.layerwise.refit import grouped_output_error
from onnxcompress.layerwise.rounding import Int8Rounding
from onnxcompress.layerwise.stats import InputStats
from onnxcompress.model import to_proto
from onnxcompress.pipeline import compress
from tests import helpers as h

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_gptq_codes_lower_the_output_error_of_round_to_nearest_on_the_same_scales():
    import onnx_ir as ir

    from onnxcompress.weights import WeightIndex

    r = np.random.default_rng(0)
    n, k, m = 2000, 32, 8
    x = r.standard_normal((n, k)) @ (r.standard_normal((k, k)) / 2 + np.eye(k))
    w = r.standard_normal((k, m)).astype(np.float32)  # MatMul [K, N]
    graph = onnx.parser.parse_graph("g (float[1,32] x) => (float[1,8] y) { y = MatMul(x, w) }")
    graph.initializer.append(onnx.numpy_helper.from_array(w, "w"))
    model = ir.serde.deserialize_model(onnx.helper.make_model(graph))
    weight = next(iter(WeightIndex.build(model)))
    scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    hess = (x.T @ x / n)[None]
    rounding = Int8Rounding({"w": InputStats(hessian=hess, mean=x.mean(0)[None], rows=n)})
    got = rounding.codes("w", weight, w, q, scale, 1, 127.0)
    assert got.dtype == np.int8 and got.shape == q.shape and np.abs(got.astype(int)).max() <= 127
    assert (got != q).any()
    rows = lambda codes: (codes.astype(np.float64) * scale).T[None]  # noqa: E731
    err_rtn = grouped_output_error(w.T[None].astype(np.float64), rows(q), hess)[0]
    err_gptq = grouped_output_error(w.T[None].astype(np.float64), rows(got), hess)[0]
    assert err_gptq < 0.8 * err_rtn
    before, after = rounding.report["refit"]["w"]
    assert after < before


def test_quantize_reconstruct_keeps_storage_and_moves_outputs_towards_fp32():
    calib, data = MODELS / "digits_calib.npz", np.load(MODELS / "digits_eval.npz")
    step = {"pass": "quantize", "mode": "weights", "fidelity_guard": False}
    plain = compress(MODELS / "digits_cnn.onnx", {"passes": [dict(step, reconstruct=False)]},
                     calibration=calib)  # GPTQ is the default with calibration: off explicitly
    result = compress(MODELS / "digits_cnn.onnx", {"passes": [dict(step, reconstruct=True)]},
                      calibration=calib)
    proto = to_proto(result.model)
    onnx.checker.check_model(proto)
    report = result.passes[0].metrics["reconstruction"]
    assert report["refit"] and all(after <= before for before, after in report["refit"].values())
    assert any(after < 0.9 * before for before, after in report["refit"].values())
    sizes = lambda res: sorted((s.name, s.bytes_after) for s in res.passes[0].layers)  # noqa: E731
    assert sizes(result) == sizes(plain)  # same int8 storage and scales: only the codes moved
    ref = h.run(MODELS / "digits_cnn.onnx", {"image": data["image"]})[0]
    ours = h.run(proto, {"image": data["image"]})[0]
    base = h.run(to_proto(plain.model), {"image": data["image"]})[0]
    assert np.square(ours - ref).mean() < np.square(base - ref).mean()


def test_a_layer_with_too_many_inputs_a_row_rounds_to_nearest(monkeypatch):
    """Its E[x x^T] and the sweep's inverse are k^2 float64 each, several copies at once:
    CREPE's 128 x 64 conv (k = 8192) took static int8 to a 2.86 GB peak for a 2 MB model. Past
    MAX_INPUTS a layer is not collected and the report says why; narrower layers still are."""
    from onnxcompress.layerwise import rounding
    from onnxcompress.model import load_model

    model = load_model(h.mlp((16, 64, 10)))  # rows of 16 and 64 inputs
    feeds = [{"x": np.random.default_rng(i).standard_normal((4, 16)).astype(np.float32)} for i in range(4)]
    monkeypatch.setattr(rounding, "MAX_INPUTS", 32)
    found = rounding.int8_rounding(model, feeds)
    wide = [label for label, why in found.report["skipped"].items() if "inputs a row (over 32)" in why]
    assert len(wide) == 1 and wide[0] not in found.stats
    assert len(found.stats) == 1  # the 16-input layer
