"""auto.settings: the one-flag runs (--kmeans 8, --quantize static/dynamic) tried against auto's plan
last; the smallest that holds and is no larger becomes the answer, its recipe the CLI's own."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper as oh
from onnx import numpy_helper as nh

from onnxcompress.auto import settings
from onnxcompress.auto.plan import Plan
from onnxcompress.auto.search import Evaluation
from onnxcompress.auto.targets import Fidelity
from onnxcompress.passes._bit_allocation import LayerChoices, Option
from tests.auto._common import run_cli

MET, MISSED = Fidelity({"top1": 1.0}, True, 0.01), Fidelity({"top1": 0.9}, False, -0.09)


def _layer(label: str) -> LayerChoices:
    def option(bits: int, nbytes: int) -> Option:
        return Option(bits=bits, nbytes=nbytes, weight_error=0.0)

    # option_names(): float, int4, int8, kmeans2..kmeans8, fp16 by their ``bits`` index
    from onnxcompress.auto.paths import option_names

    names = option_names()
    return LayerChoices(label, [option(names.index("float"), 4000), option(names.index("int8"), 1000),
                                option(names.index("kmeans8"), 1500), option(names.index("fp16"), 2000)],
                        sensitivity=1.0)


def _run(monkeypatch: pytest.MonkeyPatch, final: Evaluation, built: dict[str, tuple[int, bool]],
         ) -> tuple[tuple[Evaluation, dict] | None, list[str], list[str]]:
    """best_setting with each run's (bytes, holds) given instead of built."""
    tried: list[str] = []

    def judged(flag, recipe, plan, evaluate, calibration, memory_base):  # noqa: ANN001, ANN202
        tried.append(flag)
        size, ok = built[flag]
        ev = Evaluation(plan, float(size), size, MET if ok else MISSED)
        ev.held = MET if ok else MISSED
        return ev

    monkeypatch.setattr(settings, "_judged", judged)
    notes: list[str] = []
    layers = [_layer("a"), _layer("b")]
    found = settings.best_setting(final, layers, None, None, seed=0, deadline=float("inf"),  # type: ignore[arg-type]
                                  memory_base=None, notes=notes)
    return found, tried, notes


def _final(size: int, ok: bool = True, choice: str = "int8") -> Evaluation:
    ev = Evaluation(Plan({"a": choice, "b": choice}), float(size), size, MET if ok else MISSED)
    ev.held = MET if ok else MISSED
    return ev


def test_the_smallest_run_that_holds_and_is_no_larger_is_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    built = {"--kmeans 8": (2100, True), "--quantize static": (1990, False), "--quantize dynamic": (2000, True)}
    found, tried, notes = _run(monkeypatch, _final(2000), built)
    assert found is not None and found[0].file_bytes == 2000
    assert found[1] == {"seed": 0, "passes": [{"pass": "quantize", "mode": "dynamic"}]}
    assert len(tried) == 3 and notes == ["--quantize dynamic met the target in 2,000 bytes, against the "
                                         "per-layer plan's 2,000: its recipe is the answer"]
    # every run larger than the plan: the plan stays
    found, _, notes = _run(monkeypatch, _final(1500), {k: (v[0], True) for k, v in built.items()})
    assert found is None and notes == []


def test_runs_estimated_dearer_than_the_plan_are_not_built(monkeypatch: pytest.MonkeyPatch) -> None:
    # the plan at k-means 4-like prices (400 B a layer) far below int8's 1000: nothing is built
    cheap = _final(900, choice="kmeans8")
    layers_cost = {"--kmeans 8": (800, True), "--quantize static": (800, True), "--quantize dynamic": (800, True)}
    monkeypatch.setattr(settings, "estimated_cost", lambda plan, layers: 800)
    found, tried, _ = _run(monkeypatch, cheap, layers_cost)
    assert tried == [] and found is None


def test_a_plan_that_missed_the_target_takes_any_run_that_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    built = {"--kmeans 8": (3000, True), "--quantize static": (2500, False), "--quantize dynamic": (2600, False)}
    found, _, notes = _run(monkeypatch, _final(1000, ok=False), built)
    assert found is not None and found[0].file_bytes == 3000 and "(which missed it)" in notes[0]


def _small_mlp(path: Path, prefix: str = "") -> Path:
    """An iris-sized classifier (4 -> 24 -> 24 -> 3): 24x24 is too small for a per-layer codebook
    to pay, where --kmeans 8 stores such weights int8. ``prefix``: before every node's and
    intermediate value's name (an exporter's long scoped names)."""
    rng = np.random.default_rng(3)
    inits = []
    nodes = []
    x = "input"
    for i, (n_in, n_out) in enumerate(((4, 24), (24, 24), (24, 3))):
        inits += [nh.from_array(rng.normal(0, 1 / np.sqrt(n_in), (n_out, n_in)).astype(np.float32), f"w{i}"),
                  nh.from_array(rng.normal(0, 0.1, n_out).astype(np.float32), f"b{i}")]
        y = "logits" if i == 2 else f"{prefix}h{i}"
        nodes.append(oh.make_node("Gemm", [x, f"w{i}", f"b{i}"], [y + ("" if i == 2 else "_pre")], transB=1,
                                  name=f"{prefix}gemm{i}"))
        if i < 2:
            nodes.append(oh.make_node("Relu", [y + "_pre"], [y], name=f"{prefix}relu{i}"))
        x = y
    graph = oh.make_graph(nodes, "mlp", [oh.make_tensor_value_info("input", 1, ["n", 4])],
                          [oh.make_tensor_value_info("logits", 1, ["n", 3])], inits)
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def test_on_a_small_classifier_auto_writes_no_more_than_any_one_flag_run(tmp_path: Path) -> None:
    model = _small_mlp(tmp_path / "mlp.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).normal(size=(24, 1, 4)).astype(np.float32))
    sizes = {}
    for flag, _, _ in settings.SETTINGS:
        out = tmp_path / f"{flag.split()[-1]}.onnx"
        assert run_cli("compress", model, "-o", out, *flag.split(), "--calibration", calib, "-q") == 0
        sizes[flag] = out.read_bytes()
    auto = tmp_path / "auto.onnx"
    assert run_cli("compress", model, "-o", auto, "--auto", "--calibration", calib, "-q") == 0
    # every run keeps values>=0.9995 here (0.99996-0.999995 on the held-apart samples)
    assert auto.stat().st_size <= min(len(data) for data in sizes.values())


def test_a_run_that_wins_is_written_and_replayed_as_the_cli_writes_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The search held at its float plan (its steps patched out): the runs are built, judged and
    the smallest holding is the answer, byte for byte the CLI's file, and its recipe replays."""
    search_module = importlib.import_module("onnxcompress.auto.search")

    def keep(chosen, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        return chosen

    monkeypatch.setattr(search_module, "allocation_path", lambda layers: [(Plan(dict.fromkeys((la.label for la in layers), "float")), 0.0)])
    for step in ("uniform_check", "allocated_check", "refine"):
        monkeypatch.setattr(search_module, step, keep)
    model = _small_mlp(tmp_path / "mlp.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).normal(size=(24, 1, 4)).astype(np.float32))
    auto, recipe = tmp_path / "auto.onnx", tmp_path / "r.json"
    assert run_cli("compress", model, "-o", auto, "--auto", "--calibration", calib,
                   "--save-recipe", recipe, "-q") == 0
    assert json.loads(recipe.read_text()) == {"seed": 0, "passes": [{"pass": "quantize", "mode": "static"}]}
    static = tmp_path / "static.onnx"
    assert run_cli("compress", model, "-o", static, "--quantize", "static", "--calibration", calib, "-q") == 0
    replay = tmp_path / "replay.onnx"
    assert run_cli("compress", model, "-o", replay, "--recipe", recipe, "--calibration", calib, "-q") == 0
    assert auto.read_bytes() == static.read_bytes() == replay.read_bytes()


def test_plans_and_runs_are_priced_as_written(tmp_path: Path) -> None:
    """Writing shortens an exporter's long names and merges equal constants; plans and runs are
    compared on those bytes (fsanet: dynamic read 289,874 B before them and static 291,278, but
    wrote 279,583 and 279,337), and the chosen one's bytes are the file's."""
    model = _small_mlp(tmp_path / "mlp.onnx", prefix="/model/encoder/layers.0/feed_forward/" * 3)
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).normal(size=(24, 1, 4)).astype(np.float32))
    auto, report = tmp_path / "auto.onnx", tmp_path / "report.json"
    assert run_cli("compress", model, "-o", auto, "--auto", "--calibration", calib, "--report", report, "-q") == 0
    data = json.loads(report.read_text())
    assert any("shortened long tensor and node names" in n for n in data["notes"])
    chosen = next(p for p in data["auto"]["front"] if p["chosen"])
    assert chosen["bytes"] == auto.stat().st_size
