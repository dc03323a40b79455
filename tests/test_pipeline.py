from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxcompress import ConfigError, Pipeline, WeightIndex, compress, compress_file, load_model, save_model
from onnxcompress.errors import ModelLoadError, PassError
from onnxcompress.model import to_proto
from onnxcompress.passes.base import Pass, PassConfig, PassContext, PassResult, option
from onnxcompress.pipeline import read_provenance
from tests import helpers as h


@dataclass(frozen=True)
class HalveConfig(PassConfig):
    factor: float = option(default=0.5, help="multiply compute weights by this")


class HalveWeights(Pass):
    """A test pass: scales every compute weight, wherever it lives."""

    name = "test-halve"
    config_class = HalveConfig

    def apply(self, model, context: PassContext, result: PassResult):
        for w in WeightIndex.build(model).select(roles={"weight"}):
            w.set_numpy(w.numpy() * self.config.factor)
            result.modified = True
        return model


class BreakModel(Pass):
    """A test pass that produces an invalid model (must be rolled back)."""

    name = "test-break"
    config_class = PassConfig

    def apply(self, model, context, result):
        w = WeightIndex.build(model).select(roles={"weight"})[0]
        w.set_numpy(np.zeros((3, 3, 3), np.float32))  # wrong rank for MatMul
        result.modified = True
        return model


@pytest.mark.parametrize(
    "build",
    [h.mlp, h.cnn, lambda: h.constant_node_weights(h.cnn()), h.if_subgraph_model],
    ids=["mlp", "cnn", "constant-nodes", "if-subgraph"],
)
def test_pass_rewrites_weights_wherever_they_live(build):
    proto = build()
    result = Pipeline([HalveWeights()]).run(proto)
    before = {w.label: w.numpy() for w in WeightIndex.build(load_model(proto)).select(roles={"weight"})}
    after = {w.label: w.numpy() for w in WeightIndex.build(result.model).select(roles={"weight"})}
    assert before.keys() == after.keys() and before
    for k in before:
        np.testing.assert_allclose(after[k], before[k] * 0.5)
    onnx.checker.check_model(to_proto(result.model))


def test_input_model_object_is_not_modified():
    model = load_model(h.mlp())
    w0 = WeightIndex.build(model)["fc0.weight"].numpy().copy()
    Pipeline([HalveWeights()]).run(model)
    np.testing.assert_array_equal(WeightIndex.build(model)["fc0.weight"].numpy(), w0)


def test_invalid_pass_output_is_a_failure_of_that_pass():
    with pytest.raises(PassError, match=r"^pass test-break produced an invalid model: .*fc0/MatMul") as e:
        Pipeline([HalveWeights(), BreakModel()]).run(h.mlp())
    assert e.value.pass_name == "test-break" and "\n" not in str(e.value)


class Dangle(Pass):
    """A test pass whose output reads a value nothing provides (a dangling input)."""

    name = "test-dangle"
    config_class = PassConfig

    def apply(self, model, context, result):
        node = next(n for n in model.graph if n.op_type == "Add")
        node.replace_input_with(1, ir.Value(name="ghost"))
        result.modified = True
        return model


class Explode(Pass):
    """A test pass that changes a weight, then raises (a bug) while working on a named layer."""

    name = "test-explode"
    config_class = PassConfig

    def apply(self, model, context, result):
        w = WeightIndex.build(model)["fc1.weight"]
        w.set_numpy(w.numpy() * 0)
        with context.working_on(w.label):
            return {}["missing"]


def _weights(model) -> dict[str, np.ndarray]:
    return {w.label: w.numpy() for w in WeightIndex.build(model)}


def test_pass_emitting_a_dangling_input_is_named_on_one_line():
    with pytest.raises(PassError) as e:
        Pipeline([Dangle()]).run(h.mlp())
    assert str(e.value).startswith("pass test-dangle produced an invalid model: node 'fc0/Add' (Add) "
                                   "reads 'ghost', which no node, graph input or initializer provides.")


def test_exception_in_a_pass_names_the_pass_and_layer():
    with pytest.raises(PassError) as e:
        Pipeline([Explode()]).run(h.mlp())
    assert e.value.message == "pass test-explode failed on fc1.weight: KeyError: 'missing'"
    assert isinstance(e.value.__cause__, KeyError) and e.value.layer == "fc1.weight"


@pytest.mark.parametrize("broken", [BreakModel, Dangle, Explode])
def test_best_effort_rolls_the_failing_pass_back_and_keeps_the_others(broken):
    proto = h.mlp()
    result = Pipeline([HalveWeights(), broken(), HalveWeights()], best_effort=True).run(proto)
    assert [p.status for p in result.passes] == ["applied", "rolled_back", "applied"]
    failed = result.passes[1]
    assert result.failed == [failed] and failed.reason and failed.model is not None
    assert len(result.headlines) == 1 and result.headlines[0].startswith(f"{broken.name}: rolled back (")
    # The output is the two halvings and nothing of the broken pass.
    before, after = _weights(load_model(proto)), _weights(result.model)
    for label in ("fc0.weight", "fc1.weight"):
        np.testing.assert_allclose(after[label], before[label] * 0.25)
    onnx.checker.check_model(to_proto(result.model))
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    expected = h.run(proto, {"x": x})[0]
    got = h.run(to_proto(result.model), {"x": x})[0]
    bias_free = h.run(proto, {"x": x})  # sanity: the halvings changed the outputs
    assert not np.allclose(got, bias_free[0]) and np.isfinite(got).all() and got.shape == expected.shape
    assert json.loads(json.dumps(result.to_dict()))["passes"][1]["status"] == "rolled_back"


def test_status_and_reason_of_each_pass():
    class Skipper(Pass):
        name = "test-skipper"
        config_class = PassConfig

        def apply(self, model, context, result):
            result.skip("fc0.weight", "too small")
            return model

    result = Pipeline([HalveWeights(), Skipper(), CheckTeacher()]).run(h.mlp())
    assert [(p.status, p.reason) for p in result.passes] == [
        ("applied", ""), ("skipped", "too small (1)"), ("unchanged", "nothing to change")]


def test_headline_api():
    result = PassResult(pass_name="x", config={}, model=load_model(h.mlp()))
    result.headline("kept 3 MatMuls in float")
    assert result.headlines == ["kept 3 MatMuls in float"]
    assert result.to_dict()["headlines"] == ["kept 3 MatMuls in float"]


@pytest.mark.parametrize("mutate, message", h.INVALID_INPUTS, ids=h.INVALID_INPUT_IDS)
def test_invalid_input_is_refused_before_any_pass_runs(mutate, message):
    proto = h.mlp()
    mutate(proto)
    CheckTeacher.seen.clear()
    with pytest.raises(ModelLoadError) as e:
        Pipeline([CheckTeacher()]).run(proto)
    assert e.value.message.startswith("the input model: not a valid ONNX model: " + message)
    assert CheckTeacher.seen == []


def shapeless_output_model(size: int = 256) -> onnx.ModelProto:
    """Issue 17's model: MatMul + Reshape + Add, the graph output declared with a type and no
    shape (onnxruntime runs it, onnx.checker refuses it as is)."""
    r = np.random.default_rng(0)
    model = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, {size}] x) => (float y) {{
            m = MatMul(x, W)
            r = Reshape(m, shape)
            y = Add(r, b)
        }}""")
    h.attach_initializers(model, {
        "W": (r.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32),
        "shape": np.array([-1, size], np.int64),
        "b": (0.1 * r.standard_normal(size)).astype(np.float32),
    })
    model.graph.output[0].type.tensor_type.ClearField("shape")
    return model


def test_shapeless_graph_output_is_declared_and_the_model_compresses():
    from onnxcompress.passes import Quantize

    proto = shapeless_output_model(64)
    with pytest.raises(onnx.checker.ValidationError, match="shape"):
        onnx.checker.check_model(proto)
    result = Pipeline([Quantize(mode="dynamic", speed_check=False)]).run(proto)
    assert result.passes[0].status == "applied"
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    dims = out.graph.output[0].type.tensor_type.shape.dim
    assert len(dims) == 2 and dims[1].dim_value == 64 and not dims[0].dim_param
    assert any("declared no shape" in n for n in result.notes)
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    want, got = h.run(proto, {"x": x})[0], h.run(out, {"x": x})[0]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.05


def test_recipe_round_trip_and_provenance(tmp_path):
    pipeline = Pipeline([HalveWeights(factor=0.25)], seed=3)
    recipe = pipeline.to_recipe()
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    again = Pipeline.from_recipe(path)
    assert again.to_recipe() == recipe
    result = again.run(h.mlp())
    prov = read_provenance(result.model)
    assert prov["history"][-1]["recipe"] == recipe


def test_recipe_best_effort_key(tmp_path):
    recipe = {"best_effort": True, "passes": [{"pass": "test-halve"}, {"pass": "test-break"}]}
    pipeline = Pipeline.from_recipe(recipe)
    assert pipeline.best_effort and pipeline.to_recipe()["best_effort"] is True
    result = pipeline.run(h.mlp())
    assert [p.status for p in result.passes] == ["applied", "rolled_back"]
    assert Pipeline.from_recipe({"passes": [{"pass": "test-halve"}]}).best_effort is False
    # Stored without the default, read back in full.
    assert "best_effort" in read_provenance(result.model)["history"][-1]["recipe"]


def test_toml_recipe(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('seed = 1\n[[passes]]\npass = "test-halve"\nfactor = 0.1\n')
    result = compress(h.mlp(), path)
    assert result.recipe["passes"][0]["factor"] == 0.1


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({"passes": []}, "non-empty"),
        ({"passes": [{"pass": "nope"}]}, "unknown pass 'nope'"),
        ({"passes": [{"pass": "test-halve", "fator": 1}]}, "unknown option(s) fator"),
        ({"passes": [{"pass": "test-halve"}], "extra": 1}, "unknown key"),
        ({"passes": [{"pass": "test-halve", "factor": "half"}]},
         "recipe: passes[0] (test-halve): factor must be a number, got 'half' (a string)."),
        ({"passes": [{"pass": "test-halve", "exclude": "fc0*"}]}, "exclude must be a list of strings"),
        ({"passes": [{"pass": "test-halve"}], "best_effort": "yes"}, "best_effort must be true or false"),
        ({"passes": [{"pass": "test-halve"}], "check": "always"}, "check must be one of"),
        ({"passes": [{"pass": "prune", "sparsity": 0.3, "pattern": "2:4"}]},
         "sparsity 0.3 conflicts with pattern 2:4, which fixes the sparsity at 1 - N/M = 0.5"),
        ({"passes": [{"pass": "kmeans", "bits": 9}]}, "^kmeans: bits must be"),
    ],
)
def test_bad_recipes_are_config_errors(recipe, message):
    with pytest.raises(ConfigError) as e:
        Pipeline.from_recipe(recipe)
    text = e.value.message
    assert text.startswith(message[1:]) if message.startswith("^") else message in text
    assert "Config" not in text and "\n" not in text  # the pass as users know it, one line


def test_output_is_deterministic(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for out in (a, b):
        save_model(Pipeline([HalveWeights()], seed=5).run(h.cnn()).model, out)
    assert a.read_bytes() == b.read_bytes()


def test_custom_domain_node_survives():
    result = Pipeline([HalveWeights()]).run(h.custom_domain_model())
    nodes = [n for n in result.model.graph if n.domain == "com.example"]
    assert len(nodes) == 1 and nodes[0].op_type == "FancyRelu"
    assert any("onnxruntime cannot run" in n for n in result.notes)


class CheckTeacher(Pass):
    """A test pass that records the teacher's weight after an earlier pass changed the model."""

    name = "test-teacher"
    config_class = PassConfig
    seen: list = []

    def apply(self, model, context, result):
        CheckTeacher.seen.append(WeightIndex.build(context.original)["fc0.weight"].numpy().copy())
        return model


@pytest.mark.parametrize("as_path", [False, True])
def test_context_original_is_the_unmodified_input(tmp_path, as_path):
    proto = h.mlp()
    source = proto
    if as_path:
        source = tmp_path / "m.onnx"
        source.write_bytes(proto.SerializeToString())
    CheckTeacher.seen.clear()
    Pipeline([HalveWeights(), CheckTeacher()]).run(source)
    expected = WeightIndex.build(load_model(proto))["fc0.weight"].numpy()
    np.testing.assert_array_equal(CheckTeacher.seen[0], expected)


def test_exclude_pattern_matching_nothing_is_noted():
    result = Pipeline([HalveWeights(exclude=("fc9*",)), HalveWeights(exclude=("fc0*",))]).run(h.mlp())
    assert any("'fc9*' matches no tensor" in n for n in result.notes)
    assert not any("'fc0*'" in n for n in result.notes)


def _with_debug_info(proto: onnx.ModelProto) -> onnx.ModelProto:
    """What torch's exporter writes: module path and FX node on every node, a doc string."""
    for node in proto.graph.node:
        onnx.helper.set_metadata_props(node, {"namespace": f"torch.nn.Module/{node.name}",
                                              "pkg.torch.onnx.fx_node": "%x = call_function" * 20})
        node.doc_string = "File model.py, line 12, in forward"
    onnx.helper.set_model_props(proto, {"names": "{0: 'cat', 1: 'dog'}"})  # the user's own
    return proto


@pytest.mark.parametrize("keep", [False, True])
def test_exporter_debug_info_is_dropped_unless_kept(keep):
    proto = _with_debug_info(h.mlp())
    result = Pipeline([HalveWeights()], keep_debug_info=keep).run(proto)
    out = to_proto(result.model)
    assert [n.name for n in out.graph.node] == [n.name for n in proto.graph.node]
    assert {p.key: p.value for p in out.metadata_props}["names"] == "{0: 'cat', 1: 'dog'}"
    debug = sum(len(n.metadata_props) + bool(n.doc_string) for n in out.graph.node)
    noted = any("debug metadata" in n for n in result.notes)
    if keep:
        assert debug == 3 * len(proto.graph.node) and not noted and result.debug_bytes == 0
    else:
        assert debug == 0 and noted and result.debug_bytes > 0
        kept = Pipeline([HalveWeights()], keep_debug_info=True).run(proto).model
        assert out.ByteSize() < to_proto(kept).ByteSize()
    assert Pipeline.from_recipe(result.recipe).keep_debug_info is keep


def test_provenance_is_stored_without_defaults_and_read_back_in_full():
    pipeline = Pipeline([HalveWeights(factor=0.25), HalveWeights()], seed=3)
    model = pipeline.run(h.mlp()).model
    raw = json.loads(model.metadata_props["onnxcompress"])
    assert raw["history"][-1]["recipe"] == {
        "seed": 3, "passes": [{"pass": "test-halve", "factor": 0.25}, {"pass": "test-halve"}]
    }
    assert raw["history"][-1]["changed"] == [0, 0]  # HalveWeights reports no layer stats
    assert read_provenance(model)["history"][-1]["recipe"] == pipeline.to_recipe()


class ShapelessOutput(Pass):
    """A test pass that rewrites the graph output as a new value with a type and no shape."""

    name = "test-shapeless-output"
    config_class = PassConfig

    def apply(self, model, context, result):
        old = model.graph.outputs[0]
        new = ir.Value(name="y_new", type=ir.TensorType(ir.DataType.FLOAT))
        node = ir.Node("", "Identity", [old], outputs=[new], name="out_identity")
        model.graph.append(node)
        old.name = "y_old"
        new.name = "y"
        model.graph.outputs[0] = new
        result.modified = True
        return model


def test_output_a_pass_left_shapeless_is_declared_again():
    result = Pipeline([ShapelessOutput()]).run(h.mlp())
    assert result.passes[0].status == "applied"
    out = to_proto(result.model)
    onnx.checker.check_model(out)
    assert [d.dim_value for d in out.graph.output[0].type.tensor_type.shape.dim][1:] == [10]
    x = np.ones((2, 16), np.float32)
    np.testing.assert_allclose(h.run(out, {"x": x})[0], h.run(h.mlp(), {"x": x})[0], rtol=1e-6)


class NaNWeights(Pass):
    """A test pass that writes a valid model whose outputs are NaN (a subnormal scale divided into
    a bias did this to ppocr_rec's int8 files, exit 0)."""

    name = "test-nan"
    config_class = PassConfig

    def apply(self, model, context, result):
        w = WeightIndex.build(model).select(roles={"weight"})[0]
        w.set_numpy(np.full(w.shape, np.nan, np.float32))
        result.modified = True
        return model


@pytest.mark.parametrize("calibration", [False, True])
def test_a_pass_that_turns_finite_outputs_into_nan_fails_the_check(calibration):
    proto = h.mlp()
    data = [{"x": np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)}]
    with pytest.raises(PassError, match="test-nan produced an invalid model: output 'y' is NaN or infinite"):
        Pipeline([NaNWeights()]).run(proto, calibration=data if calibration else None)
    result = Pipeline([HalveWeights(), NaNWeights()], best_effort=True).run(proto)
    assert [p.status for p in result.passes] == ["applied", "rolled_back"]
    x = data[0]
    assert np.isfinite(h.run(to_proto(result.model), x)[0]).all()


def test_outputs_the_original_already_gives_as_nan_are_not_the_pass_fault():
    proto = h.mlp()
    for t in proto.graph.initializer:  # the input model itself outputs NaN
        if t.name == "fc1.bias":
            t.CopyFrom(onnx.numpy_helper.from_array(np.full(t.dims, np.nan, np.float32), t.name))
    result = Pipeline([HalveWeights()]).run(proto)
    assert result.passes[0].status == "applied"


def test_a_run_that_changes_nothing_writes_no_provenance(tmp_path):
    # a model with nothing to compress (a tree ensemble, weights in attributes) must not come
    # out larger than it went in
    graph = onnx.parser.parse_graph("g (float[N, 4] x) => (float[N, 4] y) { y = Relu(x) }")
    path = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    out = tmp_path / "out.onnx"
    compress_file(path, out, Pipeline.from_recipe({"passes": [{"pass": "quantize", "mode": "dynamic"}]}))
    assert out.stat().st_size <= path.stat().st_size
    assert read_provenance(load_model(out)) is None


def test_initializers_listed_as_graph_inputs_are_said_to_become_constants():
    """An old export (NanoDet, batch 10: 185 weights) lists its initializers as graph inputs too;
    the output lists only the inputs a caller feeds, and the run's notes say so."""
    proto = h.mlp()
    proto.ir_version = 3
    proto.graph.input.extend(
        onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in proto.graph.initializer)
    listed = len(proto.graph.initializer)
    result = Pipeline([HalveWeights()]).run(proto)
    assert [v.name for v in to_proto(result.model).graph.input] == ["x"]
    assert any(f"lists its {listed:,} initializer(s) as graph inputs" in n for n in result.notes)
    assert not any("graph inputs" in n for n in Pipeline([HalveWeights()]).run(h.mlp()).notes)


def test_integer_tables_no_pass_compresses_are_named_in_a_note():
    """silero-stress ships its 1.6 MB n-gram table int8, dequantized after the Gather by its own
    arithmetic: every setting gave 1.02-1.04x and only a skipped line said why. A note names the
    integer bytes; codes a quantized op reads (DequantizeLinear) have the passes' own headline."""
    import onnx.parser

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[N] ids, float[N, 64] x) => (float[N, 64] y) {
            rows = Gather(table, ids)
            f = Cast <to = 1> (rows)
            scaled = Mul(f, scale)
            h = MatMul(x, w)
            y = Add(scaled, h)
        }
    """)
    r = np.random.default_rng(0)
    model = h.attach_initializers(model, {
        "table": r.integers(-127, 127, (2048, 64)).astype(np.int8), "scale": np.array(0.01, np.float32),
        "w": r.standard_normal((64, 64)).astype(np.float32)})
    notes = Pipeline.from_recipe({"passes": [{"pass": "kmeans"}]}).run(model).notes
    assert any("integer tensors already (largest: table, int8" in n for n in notes)
    qdq = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 64] x) => (float[N, 2048] y) {
            wf = DequantizeLinear(table, scale)
            wt = Transpose(wf)
            y = MatMul(x, wt)
        }
    """)
    qdq = h.attach_initializers(qdq, {"table": r.integers(-127, 127, (2048, 64)).astype(np.int8),
                                      "scale": np.array(0.01, np.float32)})
    notes = Pipeline.from_recipe({"passes": [{"pass": "kmeans"}]}).run(qdq).notes
    assert not any("integer tensors already" in n for n in notes)
