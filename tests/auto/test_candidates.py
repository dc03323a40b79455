"""The per-layer options beyond k-means and int8: float16 storage, pruning then k-means on the
same layer (unstructured and 2:4), in one recipe, read back from it, and priced by the same
uniform-run + probe measurement as every option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxcompress.auto.candidates import available_candidates, measure_candidate, pass_steps
from onnxcompress.auto.measure import decode_weight, save_feeds
from onnxcompress.auto.plan import Plan, plan_from_recipe
from onnxcompress.data import feed_source
from onnxcompress.model import load_model, save_model, to_proto
from onnxcompress.pipeline import Pipeline
from onnxcompress.weights import WeightIndex
from tests.auto._common import CALIB, EVAL, MODELS, run_cli, top1

MODEL = MODELS / "digits_mlp.onnx"
WEIGHTS = ("fc1.weight", "fc2.weight", "fc3.weight")


def _outputs(model: str | bytes) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    with np.load(EVAL) as d:
        return session.run(None, {"pixels": d["pixels"].reshape(len(d["pixels"]), -1)[:64]})[0]


def test_options_offered() -> None:
    default = [c.name for c in available_candidates()]
    assert "fp16" in default and "int8" in default and "kmeans4" in default
    assert not any(n.startswith(("prune", "nm")) for n in default)  # dominated: opt-in
    extra = {c.name for c in available_candidates("all")} - set(default)
    assert extra == {"prune50+kmeans4", "prune70+kmeans3", "nm24+kmeans4"}


def test_mixed_plan_writes_reads_back_and_runs() -> None:
    model = load_model(MODEL)
    labels = [w.label for w in WeightIndex.build(model)]
    plan = Plan({"fc1.weight": "nm24+kmeans4", "fc2.weight": "prune70+kmeans3", "fc3.weight": "fp16"})
    recipe = plan.to_recipe(labels)
    assert [s["pass"] for s in recipe["passes"]] == ["prune", "prune", "kmeans", "bfloat16"]
    assert plan_from_recipe(recipe, WEIGHTS).choices == plan.choices
    result = Pipeline.from_recipe(recipe).run(model, calibration=str(CALIB))
    proto = to_proto(result.model)
    onnx.checker.check_model(proto, full_check=True)
    index = {w.label: w for w in WeightIndex.build(load_model(MODEL))}
    fc1 = decode_weight(proto, index["fc1.weight"])
    fc2 = decode_weight(proto, index["fc2.weight"])
    fc3 = decode_weight(proto, index["fc3.weight"])
    assert fc1 is not None and fc2 is not None and fc3 is not None
    # 2:4 along the input axis: at most 2 non-zeros in every group of 4 (k-means keeps zeros)
    assert (np.count_nonzero(fc1.reshape(fc1.shape[0], -1, 4), axis=-1) <= 2).all()
    assert len(np.unique(fc1)) <= 16 and len(np.unique(fc2)) <= 8
    assert (fc2 == 0).mean() >= 0.70
    stored = {i.name: i.data_type for i in proto.graph.initializer}
    assert any(t == onnx.TensorProto.FLOAT16 and n.startswith("fc3.weight") for n, t in stored.items())
    ref3 = index["fc3.weight"].numpy()
    np.testing.assert_array_equal(fc3, ref3.astype(np.float16).astype(np.float32))
    # numbers through onnxruntime: float16 storage alone moves the logits by float16 rounding;
    # the pruned + clustered plan stays a working classifier on the held-out digits.
    fp16_only = Plan({"fc3.weight": "fp16"}).to_recipe(labels)
    half = to_proto(Pipeline.from_recipe(fp16_only).run(model).model).SerializeToString()
    ref = _outputs(str(MODEL))
    np.testing.assert_allclose(_outputs(half), ref, atol=2e-3 * np.abs(ref).max())
    mixed = _outputs(proto.SerializeToString())
    assert (mixed.argmax(1) == ref.argmax(1)).mean() >= 0.8


def test_int8_is_written_folded_except_for_the_memory_objective() -> None:
    """Next to folded layers (k-means 8, fp16) an int8 Conv weight left as a DequantizeLinear
    leaves onnxruntime's blocked layout and costs reordered activation copies: the written int8
    option is folded (as k-means 8's int8-exact form), the same codes as its pricing run's
    DequantizeLinear; under the memory objective it stays int8 in the session."""
    model = load_model(MODEL)
    labels = [w.label for w in WeightIndex.build(model)]
    plan = Plan({"fc1.weight": "int8", "fc2.weight": "kmeans8", "fc3.weight": "float"})
    forms = {}
    for objective in ("size", "latency", "memory"):
        recipe = plan.to_recipe(labels, objective=objective)
        step = next(s for s in recipe["passes"] if s["pass"] == "quantize")
        forms[objective] = step["weight_form"]
        assert plan_from_recipe(recipe, WEIGHTS).choices == plan.choices
    assert forms == {"size": "folded", "latency": "folded", "memory": "dequantize"}
    pricing = pass_steps(plan.assignment(), labels, pricing=True)
    assert next(s for s in pricing if s["pass"] == "quantize")["weight_form"] == "dequantize"
    written = to_proto(Pipeline.from_recipe(plan.to_recipe(labels)).run(model, calibration=str(CALIB)).model)
    assert not any(n.op_type == "DequantizeLinear" for n in written.graph.node)
    index = {w.label: w for w in WeightIndex.build(load_model(MODEL))}
    fc1 = decode_weight(written, index["fc1.weight"])
    ref = index["fc1.weight"].numpy()
    assert fc1 is not None and np.abs(fc1 - ref).max() <= np.abs(ref).max() / 127 + 1e-6


@pytest.fixture(scope="module")
def priced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("priced")
    model = load_model(MODEL)
    save_model(model, tmp / "base.onnx")
    feeds = [dict(f) for f in feed_source(str(CALIB), model)][:8]
    save_feeds(tmp / "probe.npz", feeds)
    out = {}
    for name in ("kmeans4", "prune50+kmeans4", "fp16"):
        out[name] = measure_candidate({
            "candidate": name, "base": str(tmp / "base.onnx"), "labels": list(WEIGHTS),
            "calibration": str(CALIB), "probe": str(tmp / "probe.npz"), "calibration_samples": 64,
            "outputs": str(tmp / "probe.npz")})
    out["feeds"] = feeds
    return out


def test_new_options_priced_by_the_same_probe(priced: dict) -> None:
    k4, p50, half = priced["kmeans4"], priced["prune50+kmeans4"], priced["fp16"]
    for label in WEIGHTS:
        # half the bytes, plus the layer's share of its Cast node and names
        assert half.bytes_before[label] // 2 < half.bytes_after[label] < half.bytes_before[label] // 2 + 512
        assert 0 < half.deviation[label] < 1e-6  # float16 rounding only
        # zeros are indices like any other value: the same bytes as k-means alone...
        assert abs(p50.bytes_after[label] - k4.bytes_after[label]) <= max(64, 0.02 * k4.bytes_after[label])
        # ...and more output error, so pruning never lies on a layer's hull (why it is opt-in)
        assert p50.deviation[label] > k4.deviation[label] > half.deviation[label]
        assert p50.weight_error[label] > k4.weight_error[label]


def test_uniform_prices_add_up_to_the_file(priced: dict) -> None:
    # a uniform plan's summed layer prices are its file's size change: the decode nodes, codebooks
    # and names the pass's statistics leave out are spread over the layers (else k-means widths
    # look cheaper than int8 while their files are larger)
    labels = [w.label for w in WeightIndex.build(load_model(MODEL))]
    base = len(to_proto(load_model(MODEL)).SerializeToString())
    for name in ("kmeans4", "fp16"):
        m = priced[name]
        recipe = Plan(dict.fromkeys(WEIGHTS, name)).to_recipe(labels)
        result = Pipeline.from_recipe(recipe).run(MODEL, calibration=str(CALIB))
        proto = to_proto(result.model)
        onnx.checker.check_model(proto)
        size = len(proto.SerializeToString())
        priced_size = base + sum(m.bytes_after[k] - m.bytes_before[k] for k in WEIGHTS)
        # the recipe's provenance lists the labels it leaves alone; the pricing run's does not
        assert abs(size - priced_size) <= 0.03 * size, (name, size, priced_size)
        assert _outputs(proto.SerializeToString()).shape == _outputs(str(MODEL)).shape


def test_uniform_outputs_screen_the_uniform_plans(priced: dict) -> None:
    # the pricing run's uniform model answers on the search data, so a uniform plan that misses
    # the target there is never built again
    from onnxcompress.auto.measure import run_outputs
    from onnxcompress.auto.search import _screen
    from onnxcompress.auto.targets import parse_target

    feeds = priced["feeds"]
    ref = run_outputs(MODEL, feeds)
    labels = [w.label for w in WeightIndex.build(load_model(MODEL))]
    for name in ("kmeans4", "fp16"):
        got = priced[name].outputs
        assert got is not None and set(got) == set(ref) and got["logits"].shape == ref["logits"].shape
        # the same numbers as the uniform recipe's model (pricing and replay run the same pass)
        result = Pipeline.from_recipe(Plan(dict.fromkeys(WEIGHTS, name)).to_recipe(labels)).run(
            MODEL, calibration=str(CALIB))
        replay = run_outputs(to_proto(result.model), feeds)["logits"]
        np.testing.assert_allclose(got["logits"], replay, atol=1e-3 * np.abs(replay).max())
    from onnxcompress.auto.candidates import Measured

    noise = Measured("kmeans2", {}, {}, {}, outputs={"logits": np.random.default_rng(0).normal(
        size=ref["logits"].shape).astype(np.float32)})
    half = Measured("fp16", {}, {}, {}, outputs=priced["fp16"].outputs)
    screened = _screen([noise, half], parse_target("top1>=0.99"), ref, None)
    assert screened == {"kmeans2": False, "fp16": True}
    assert noise.outputs is None and half.outputs is None  # dropped once judged


def test_all_float_plan_is_a_noop() -> None:
    # the plan of a model whose options are all float is a no-op recipe that still runs
    labels = [w.label for w in WeightIndex.build(load_model(MODEL))]
    recipe = Plan({label: "float" for label in WEIGHTS}).to_recipe(labels)
    result = Pipeline.from_recipe(recipe).run(MODEL)
    np.testing.assert_array_equal(_outputs(to_proto(result.model).SerializeToString()), _outputs(str(MODEL)))


def test_search_with_every_option_keeps_pruning_off_the_plan(tmp_path: Path) -> None:
    out = tmp_path / "auto.onnx"
    assert run_cli("compress", MODEL, "-o", out, "--auto", "--calibration", CALIB, "--validate-data", EVAL,
                   "--auto-target", "top1>=0.99", "--auto-candidates", "all", "--report",
                   tmp_path / "r.json", "-q") == 0
    report = json.loads((tmp_path / "r.json").read_text())["auto"]
    assert report["met"] and not any(k.startswith(("prune", "nm")) for k in report["choices"])
    onnx.checker.check_model(str(out))
    assert top1(MODEL, out) >= 0.99


def test_float16_storage_knob_is_validated() -> None:
    from onnxcompress.errors import ConfigError

    with pytest.raises(ConfigError, match="dtype must be one of bfloat16, float16"):
        Pipeline.from_recipe({"passes": [{"pass": "bfloat16", "dtype": "int8"}]})


def test_written_8_bit_layers_may_take_the_int8_exact_form() -> None:
    # pricing decodes through the codebook (it reads the weight at the consumer's input); the
    # written model lets k-means choose its int8-exact form for a large 8-bit weight, whose
    # session folds one Cast instead of an int32 copy of every index
    labels = [w.label for w in WeightIndex.build(load_model(MODEL))]
    plan = Plan({"fc1.weight": "kmeans8", "fc2.weight": "kmeans4", "fc3.weight": "float"})
    recipe = plan.to_recipe(labels)
    assert next(s for s in recipe["passes"] if s["pass"] == "kmeans")["decode"] == "auto"
    priced = pass_steps(plan.assignment(), labels, pricing=True)
    assert next(s for s in priced if s["pass"] == "kmeans")["decode"] == "codebook"
    proto = to_proto(Pipeline.from_recipe(recipe).run(MODEL, calibration=str(CALIB)).model)
    onnx.checker.check_model(proto)
    # the pass chose per weight (fc1's channel-scaled codebook more than halves int8's error here)
    assert {t.name for t in proto.graph.initializer} >= {"fc1.weight.q", "fc2.weight.q"}
    ref = _outputs(str(MODEL))
    assert (_outputs(proto.SerializeToString()).argmax(1) == ref.argmax(1)).mean() >= 0.98


def test_decode_weight_of_an_int8_table_reads_the_heads_floats() -> None:
    """int8 storage of a tied table: the Gather reads int8 rows (scaled after it), the head reads
    the decoded floats; the decoded value is the head's, never the int8 rows (bert_tiny's auto
    probe fed tok.weight's int8 rows to onnxruntime as the float weight)."""
    from tests import zoo

    model = load_model(zoo.tied_embedding())
    result = Pipeline.from_recipe({"passes": [{"pass": "quantize", "mode": "weights"}]}).run(model)
    proto = to_proto(result.model)
    assert any(i.data_type == onnx.TensorProto.INT8 for i in proto.graph.initializer)
    weight = next(w for w in WeightIndex.build(load_model(zoo.tied_embedding())) if w.label == "embed.weight")
    value = decode_weight(proto, weight)
    assert value is not None and value.dtype == np.float32 and value.shape == (100, 32)
    ref = weight.numpy()
    # int8 per-row (or per-column) rounding: within half a step of a 127-level grid of each row
    assert np.abs(value - ref).max() <= np.abs(ref).max() / 127 + 1e-6
    assert not np.array_equal(value, ref)


def test_every_option_reads_only_the_samples_the_search_measured(tmp_path: Path) -> None:
    # The CLI replays a plan's recipe on the whole calibration file; the search built it on its
    # first 18 samples. int8 (GPTQ rounding, bias correction) read all 24 on replay, so the file
    # written was not the model the search had judged (digits MLP: 0.99820 vs 0.99828).
    with np.load(CALIB) as c:
        np.savez(tmp_path / "all.npz", **{k: c[k][:24] for k in c.files})
        np.savez(tmp_path / "search.npz", **{k: c[k][:18] for k in c.files})
    recipe = Plan({"fc1.weight": "int4", "fc2.weight": "int8", "fc3.weight": "kmeans4"}).to_recipe(
        list(WEIGHTS), calibration_samples=18)
    built = [to_proto(Pipeline.from_recipe(recipe).run(MODEL, calibration=str(tmp_path / f)).model)
             .SerializeToString() for f in ("all.npz", "search.npz")]
    assert built[0] == built[1]
