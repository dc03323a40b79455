"""What dynamic int8 costs to make: onnxcompress against onnxruntime's ``quantize_dynamic``.

    python benchmarks/bench_quantize_cost.py MODEL.onnx [MODEL.onnx ...] [--pythonpath CHECKOUT]

For each model, each in a fresh child process (wall time from start to exit, imports included;
peak RSS from ``os.wait4``), alternating the tools ``--repeats`` times and keeping the median:

- ``ort``: ``onnxruntime.quantization.quantize_dynamic(model, out)`` with its defaults;
- ``ours``: ``python -m onnxcompress compress MODEL -o OUT --quantize dynamic`` with an empty
  decision cache (the speed guard measures);
- ``ours cached``: the same again with the cache the first run filled (a rerun), and a check
  that the output is byte-identical.

Issue 11's targets: ours at most 2x onnxruntime's wall time and 1.5x its peak memory. Writes a
Markdown table to stdout (and ``--json PATH`` when given).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ORT = ("from onnxruntime.quantization import quantize_dynamic, QuantType; import sys; "
       "quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8)")


def child(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    start = time.perf_counter()
    # cwd: `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH, so
    # from inside a checkout it would import that checkout instead of --pythonpath's.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=env["PYTHONPATH"])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... exit {code}: {err.strip().splitlines()[-1:]}")
    return {"seconds": wall, "peak_mb": usage.ru_maxrss / 1024}


def _files(path: Path) -> dict[str, bytes]:
    """A written model's bytes: the .onnx and every file beside it (its external data)."""
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir())}


def bench(model: Path, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=args.pythonpath, PYTHONDONTWRITEBYTECODE="1")
    runs: dict[str, list[dict[str, Any]]] = {"ort": [], "ours": [], "ours_cached": []}
    identical = True
    for i in range(args.repeats):
        runs["ort"].append(child([sys.executable, "-c", ORT, str(model), str(tmp / "ort.onnx")], env))
        cache = tmp / f"cache{i}"
        env_ours = dict(env, ONNXCOMPRESS_CACHE_DIR=str(cache))
        ours = [sys.executable, "-m", "onnxcompress", "compress", str(model), "--quantize", "dynamic",
                "--overwrite", "-o"]
        # Same file name in two folders: an external-data output names its data file inside
        # the .onnx, so a.onnx and b.onnx differed by that name alone ("rerun identical: False").
        first, second = (tmp / model.stem / f"{run}{i}" / "out.onnx" for run in "ab")
        first.parent.mkdir(parents=True), second.parent.mkdir(parents=True)
        runs["ours"].append(child([*ours, str(first)], env_ours))
        runs["ours_cached"].append(child([*ours, str(second)], env_ours))
        identical &= _files(first) == _files(second)
    size = sum(p.stat().st_size for p in (model, model.with_name(model.name + ".data")) if p.exists())
    row: dict[str, Any] = {"model": model.name, "mb": round(size / 1e6, 1),  # external data included
                           "identical_rerun": identical}
    for tool, rs in runs.items():
        row[tool] = {k: round(statistics.median(r[k] for r in rs), 2) for k in ("seconds", "peak_mb")}
    for tool in ("ours", "ours_cached"):
        row[f"{tool}_time_ratio"] = round(row[tool]["seconds"] / row["ort"]["seconds"], 2)
        row[f"{tool}_peak_ratio"] = round(row[tool]["peak_mb"] / row["ort"]["peak_mb"], 2)
    return row


def render(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | MB | ort s / MB peak | ours s / MB peak | ratio time, peak | cached rerun s / MB | "
             "ratio time, peak | rerun identical |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['mb']} | {r['ort']['seconds']} / {r['ort']['peak_mb']:.0f} | "
            f"{r['ours']['seconds']} / {r['ours']['peak_mb']:.0f} | {r['ours_time_ratio']}x, "
            f"{r['ours_peak_ratio']}x | {r['ours_cached']['seconds']} / {r['ours_cached']['peak_mb']:.0f} | "
            f"{r['ours_cached_time_ratio']}x, {r['ours_cached_peak_ratio']}x | {r['identical_rerun']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--pythonpath", default=str(REPO), help="checkout whose onnxcompress is measured")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="qcost-") as tmp:
        for model in args.models:
            try:
                rows.append(bench(model, args, Path(tmp)))
            except RuntimeError as e:  # e.g. quantize_dynamic refuses weights in Constant nodes
                print(f"{model.name}: skipped, {e}", file=sys.stderr, flush=True)
                continue
            print(render(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(render(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
