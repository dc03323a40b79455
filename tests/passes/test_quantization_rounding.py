"""quantize's GPTQ rounding by default with calibration data (``reconstruct`` auto), the codes
computed once per run and shared by the fidelity guard and the writer."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxcompress.layerwise import rounding
from onnxcompress.passes import _int8
from onnxcompress.passes._qdq import quantize_weight
from tests import helpers as h
from tests.passes.test_quantization import check_outputs, feeds, int8_weights, quantize


def _codes(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer
            if t.data_type == onnx.TensorProto.INT8}


def _mlp_data():
    proto = h.mlp((64, 256, 128, 10))
    return proto, feeds((64, 64))  # 512 rows: at least MIN_ROWS_PER_INPUT per input


@pytest.mark.parametrize("mode", ["weights", "static"])
def test_calibration_data_turns_gptq_rounding_on_and_records_it(mode):
    proto, data = _mlp_data()
    res, q = quantize(proto, data, mode=mode)
    onnx.checker.check_model(q)
    check_outputs(proto, q, data)
    assert res.config["reconstruct"] is True  # resolved, so a replay gives the same bytes
    report = res.metrics["reconstruction"]
    assert report["refit"] and any(after < before for before, after in report["refit"].values())
    plain_res, plain = quantize(proto, data, mode=mode, reconstruct=False)
    assert plain_res.config["reconstruct"] is False and "reconstruction" not in plain_res.metrics
    moved = [k for k, v in _codes(q).items() if k in _codes(plain)
             and not np.array_equal(v, _codes(plain)[k])]
    assert moved  # the same int8 tensors, other codes
    # ... closer to fp32 on data the rounding did not see
    held = feeds((64, 64), seed=7)
    err = lambda m: np.mean([np.square(h.run(m, f)[0] - h.run(proto, f)[0]).mean()  # noqa: E731
                             for f in held])
    assert err(q) < err(plain)


def test_without_calibration_weights_round_to_nearest():
    proto = h.mlp((64, 256, 128, 10))
    res, q = quantize(proto, None, mode="weights")
    onnx.checker.check_model(q)
    assert res.config["reconstruct"] is False and "reconstruction" not in res.metrics
    w = onnx.numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "fc0.weight"))
    stored = next(v for k, v in _codes(q).items() if v.shape == w.shape)
    want, _ = quantize_weight(w, 1, reduce_range=False)
    np.testing.assert_array_equal(stored, want)


def test_each_weight_is_rounded_once_for_the_guard_and_the_writer(monkeypatch):
    calls: list[str] = []
    codes = rounding.Int8Rounding.codes

    def counting(self, label, *args, **kwargs):
        calls.append(label)
        return codes(self, label, *args, **kwargs)

    monkeypatch.setattr(rounding.Int8Rounding, "codes", counting)
    proto, data = _mlp_data()
    res, q = quantize(proto, data, mode="weights")
    assert res.metrics["fidelity_guard"]["samples"] > 0  # the guard measured the codes
    assert calls and len(calls) == len(set(calls)) == int8_weights(q)


def test_guard_measures_the_codes_the_writer_stores():
    """With GPTQ rounding, the guard's int8 weight-only deviation is that of the GPTQ codes
    (lower than round-to-nearest's): its steps and the compute check's bar follow them."""
    proto, data = _mlp_data()
    gptq = quantize(proto, data, mode="static")[0].metrics["fidelity_guard"]
    nearest = quantize(proto, data, mode="static", reconstruct=False)[0].metrics["fidelity_guard"]
    assert gptq["weight_deviation"] < 0.9 * nearest["weight_deviation"]
    assert gptq["compute_target"] <= nearest["compute_target"]


def test_layers_with_too_few_calibration_rows_round_to_nearest():
    """8 samples of 4 rows for 64 inputs: E[x x^T] is rank 32, GPTQ codes would fit those rows
    (held-out error 1.2x round-to-nearest's): every layer keeps its nearest codes."""
    proto = h.mlp((64, 256, 128, 10))
    res, q = quantize(proto, feeds((4, 64)), mode="weights")
    report = res.metrics["reconstruction"]
    assert not report["refit"] and all("calibration rows" in why for why in report["skipped"].values())
    assert len(report["skipped"]) == 3
    plain = quantize(proto, feeds((4, 64)), mode="weights", reconstruct=False)[1]
    assert _codes(q).keys() == _codes(plain).keys()
    for k, v in _codes(q).items():
        np.testing.assert_array_equal(v, _codes(plain)[k])


def test_exact_zeros_stay_zero():
    """A weight with exact zeros (a filterbank, a pruned layer) keeps its nearest codes: GPTQ
    would fill the zeros with compensation (a mel MatMul before a Log went to 6.6 relative
    squared output deviation on audio_kws)."""
    proto = h.mlp((64, 256, 128, 10))
    init = next(t for t in proto.graph.initializer if t.name == "fc0.weight")
    w = onnx.numpy_helper.to_array(init).copy()
    w[h.rng(3).random(w.shape) < 0.5] = 0.0  # half the values exactly zero, scattered
    init.CopyFrom(onnx.numpy_helper.from_array(w, "fc0.weight"))
    res, q = quantize(proto, feeds((64, 64)), mode="weights")
    onnx.checker.check_model(q)
    stored = next(v for k, v in _codes(q).items() if v.shape == w.shape)
    assert np.all(stored[w == 0] == 0)
    assert "fc0.weight" in res.metrics["reconstruction"]["refit"]  # GPTQ ran
    check_outputs(proto, q, feeds((64, 64)))
    # The rule itself: codes that fill a zero are refused for the nearest ones, others kept.
    nearest = quantize_weight(w, 1, reduce_range=False)[0]
    filled = nearest.copy()
    filled[w == 0] = 1
    assert _int8._keeping_zeros(w, nearest, filled) is nearest
    moved = nearest.copy()
    moved[w != 0] += 1
    assert _int8._keeping_zeros(w, nearest, moved) is moved
