"""Shared helpers for the auto-mode tests: run the CLI, measure top-1 agreement, uniform baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxcompress.auto.targets import parse_target
from onnxcompress.cli import main
from onnxcompress.pipeline import PROVENANCE_KEY, Pipeline

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
CALIB = MODELS / "digits_calib.npz"
EVAL = MODELS / "digits_eval.npz"
UNIFORM = [{"pass": "kmeans", "bits": b, "allocation": "uniform"} for b in range(2, 9)] + [
    {"pass": "quantize", "mode": "weights"}, {"pass": "quantize", "mode": "dynamic"}]


def logits(model: str | Path | bytes, data: Path) -> np.ndarray:
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model),
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    with np.load(data) as d:
        x = d[name]
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def top1(original: Path, compressed: str | Path | bytes, data: Path = EVAL) -> float:
    return float((logits(original, data).argmax(1) == logits(compressed, data).argmax(1)).mean())


def best_uniform(model: Path, threshold: float) -> tuple[int, str]:
    """Bytes of the smallest single uniform setting that meets ``top1>=threshold`` as auto mode
    measures it (with its flip-rate estimate) on the calibration data and on the held-out data (the
    evidence auto mode itself requires: the search data, then the held-apart check), and which
    setting it is."""
    target = parse_target(f"top1>={threshold:g}")
    best = (model.stat().st_size, "float")
    for step in UNIFORM:
        result = Pipeline.from_recipe({"passes": [step]}).run(model, calibration=str(CALIB))
        data = onnx.ModelProto.SerializeToString(_proto(result.model))
        if payload(data) < best[0] and all(
                target.evaluate({"y": logits(model, d)}, {"y": logits(data, d)}).met for d in (CALIB, EVAL)):
            best = (payload(data), str(step))
    return best


def payload(data: bytes | Path) -> int:
    """Bytes of a model without its provenance (the recipe text in its metadata): a per-layer
    plan that gives every layer the same option writes the same weights as the uniform pass, and
    a recipe some 90 bytes longer (digits MLP, 3 layers)."""
    proto = onnx.load_from_string(data if isinstance(data, bytes) else Path(data).read_bytes())
    kept = [p for p in proto.metadata_props if p.key != PROVENANCE_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    return proto.ByteSize()


def _proto(model):  # noqa: ANN001, ANN202
    from onnxcompress.model import to_proto

    return to_proto(model)


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def search(model: Path, out: Path) -> Path:
    """``compress --auto`` of ``model`` at top1>=0.99 into ``out`` (auto.onnx, recipe.json,
    report.json), held-out check on the eval digits."""
    code = run_cli("compress", model, "-o", out / "auto.onnx", "--auto", "--calibration", CALIB,
                   "--validate-data", EVAL, "--auto-target", "top1>=0.99",
                   "--save-recipe", out / "recipe.json",
                   "--report", out / "report.json", "-q")
    assert code == 0
    return out


def assert_meets_target_and_beats_uniform(model: Path, out: Path) -> None:
    """The searched model meets top1>=0.99, is no larger than the best uniform setting meeting it,
    and more than 5x smaller than the original (per-layer widths pay)."""
    onnx.checker.check_model(str(out))
    agreement = top1(model, out)
    assert agreement >= 0.99
    size = payload(out)
    uniform, which = best_uniform(model, 0.99)
    assert size <= uniform, f"auto {size} B > uniform {which} {uniform} B"
    assert model.stat().st_size / size > 5
