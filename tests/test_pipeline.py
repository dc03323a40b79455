from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
import pytest

from onnxcompress import ConfigError, Pipeline, WeightIndex, compress, load_model, save_model
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


def test_invalid_pass_output_is_rolled_back():
    result = Pipeline([BreakModel()]).run(h.mlp())
    assert not result.passes[0].modified
    assert any("rolled back" in n for n in result.passes[0].notes)
    onnx.checker.check_model(to_proto(result.model))


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
    ],
)
def test_bad_recipes_are_config_errors(recipe, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Pipeline.from_recipe(recipe)


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
        assert debug == 3 * len(proto.graph.node) and not noted
    else:
        assert debug == 0 and noted
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
