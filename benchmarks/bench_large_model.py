"""Compressing a model over 1 GB (external data): peak memory and time against the model's size.

    python benchmarks/bench_large_model.py [--gb 2.2] [--modes all] [--keep]
    python benchmarks/bench_large_model.py --gb 0.3 --width 2048 --modes kmeans8 kmeans4 \
        --pythonpath /work/main          # another checkout's package, for before/after
    python benchmarks/bench_large_model.py --model gpt_large.onnx --calibration gpt_large_calib.npz

Builds a stack of large MatMul + Add + Relu layers whose float32 weights total ``--gb`` GB,
saved with external data (protobuf cannot hold it inline), or takes ``--model``, then runs each
mode (a pass, or one of onnxruntime's quantizers) with ``compress_file`` in a fresh process
and reads that process's peak RSS (VmHWM). The target: peak memory <= 1.5x the model's size,
int8 and k-means no slower than onnxruntime's ``quantize_dynamic``. A mode that runs longer
than ``--timeout`` seconds is stopped and reported. The built model and the outputs are
deleted afterwards unless ``--keep``. Results go to ``benchmarks/results/large_model.md`` /
``.json``, one section per model (a rerun of a mode replaces its row).
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

import numpy as np
import onnx
import onnx.helper as oh

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def build(path: Path, gigabytes: float, width: int = 8192) -> int:
    """Write the model layer by layer (never more than one weight in memory); returns bytes."""
    per_layer = width * width * 4
    layers = max(1, int(np.ceil(gigabytes * 1e9 / per_layer)))
    data_name = path.name + ".data"
    offset = 0
    inits, nodes = [], []
    rng = np.random.default_rng(0)
    prev = "x"
    with open(path.parent / data_name, "wb") as f:
        for i in range(layers):
            for name, shape in ((f"w{i}", (width, width)), (f"b{i}", (width,))):
                arr = (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(width)).astype(np.float32)
                raw = arr.tobytes()
                f.write(raw)
                t = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=list(shape))
                t.data_location = onnx.TensorProto.EXTERNAL
                for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                    t.external_data.add(key=k, value=v)
                inits.append(t)
                offset += len(raw)
                del arr, raw
            out = "y" if i == layers - 1 else f"h{i}"
            nodes += [oh.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"layer{i}/MatMul"),
                      oh.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}" if out != "y" else out],
                                   name=f"layer{i}/Add")]
            if out != "y":
                nodes.append(oh.make_node("Relu", [f"a{i}"], [out], name=f"layer{i}/Relu"))
            prev = out
    graph = oh.make_graph(
        nodes, "large_mlp",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", width])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", width])],
        initializer=inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path.stat().st_size + (path.parent / data_name).stat().st_size


# mode -> (the pass as a recipe step, whether it takes the calibration data). "ort_*" modes run
# onnxruntime's quantizers instead (see ORT_CHILD).
MODES: dict[str, tuple[dict, bool]] = {
    "dynamic": ({"pass": "quantize", "mode": "dynamic"}, False),
    "static": ({"pass": "quantize", "mode": "static"}, True),
    "weights": ({"pass": "quantize", "mode": "weights"}, False),
    "int4": ({"pass": "blockq"}, False),
    "fp16": ({"pass": "float16", "enabled": True}, False),
    "prune50": ({"pass": "prune", "sparsity": 0.5}, False),
    "prune50_reconstruct": ({"pass": "prune", "sparsity": 0.5, "reconstruct": True}, True),
    "channels": ({"pass": "prune", "sparsity": 0.5, "pattern": "channel"}, False),
    "channels_reconstruct": ({"pass": "prune", "sparsity": 0.5, "pattern": "channel",
                              "reconstruct": True}, True),
    "kmeans8": ({"pass": "kmeans", "bits": 8}, False),
    "kmeans4": ({"pass": "kmeans", "bits": 4}, False),
    "ort_dynamic": ({}, False),
    "ort_int4": ({}, False),
}
# "all": every mode, the peers first (time / ort divides by ort_dynamic's seconds).
ALL = ["ort_dynamic", "ort_int4", *[m for m in MODES if not m.startswith("ort_")]]

CHILD = r"""
import json, sys, time
from pathlib import Path
def peak_rss():  # VmHWM: ru_maxrss would include the parent's RSS at fork time
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
start = time.perf_counter()
from onnxcompress.api import compress_file
from onnxcompress.pipeline import Pipeline
src, dst, step, calib = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4] or None
report = compress_file(src, dst, Pipeline.from_recipe({"passes": [step]}), calibration=calib)
seconds = time.perf_counter() - start
q = report.result.passes[0].to_dict()
print(json.dumps({"seconds": seconds,
                  "peak_rss": peak_rss(),
                  "notes": q["notes"], "headlines": report.result.headlines,
                  "metrics": {k: v for k, v in q["metrics"].items() if k != "calibration"},
                  "layers": len(q["layers"])}))
"""

# onnxruntime's quantizers on the same file, imports included in the time as for ours.
ORT_CHILD = r"""
import json, sys, time, logging
from pathlib import Path
def peak_rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
start = time.perf_counter()
src, dst, mode = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "ort_dynamic":
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, use_external_data_format=True)
else:
    from onnxruntime.quantization import matmul_nbits_quantizer as mq
    config = mq.DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True)
    q = mq.MatMulNBitsQuantizer(src, bits=4, block_size=32, is_symmetric=True, algo_config=config)
    q.process()
    q.model.save_model_to_file(dst, use_external_data_format=True)
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss": peak_rss()}))
"""


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def write_calibration(path: Path, width: int, samples: int = 8) -> Path:
    """``samples`` inputs of the stack (``x`` stacked on axis 0, batch 1 each)."""
    rng = np.random.default_rng(1)
    np.savez(path, x=rng.standard_normal((samples, 1, width), dtype=np.float32))
    return path


def run_mode(mode: str, src: Path, dst: Path, calib: Path | None, pythonpath: str,
             timeout: float | None = None) -> dict:
    # A fresh decision cache: the speed guard measures as on a first run.
    env = dict(os.environ, PYTHONPATH=pythonpath,
               ONNXCOMPRESS_CACHE_DIR=tempfile.mkdtemp(prefix="cache-", dir=dst.parent))
    if mode.startswith("ort_"):
        cmd = [sys.executable, "-c", ORT_CHILD, str(src), str(dst), mode]
    else:
        step, calibrated = MODES[mode]
        cmd = [sys.executable, "-c", CHILD, str(src), str(dst), json.dumps(step),
               str(calib) if calibrated and calib is not None else ""]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=pythonpath, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"mode": mode, "error": f"did not finish in {timeout:.0f} s (stopped)"}
    if proc.returncode != 0:
        return {"mode": mode, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return {"mode": mode, **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.2)
    ap.add_argument("--modes", nargs="*", default=["all"],
                    help=f"any of {', '.join(MODES)}; 'all' (default): {' '.join(ALL)}")
    ap.add_argument("--width", type=int, default=8192, help="layer width (8192: 268 MB a layer)")
    ap.add_argument("--model", type=Path, help="benchmark this model instead of building a stack")
    ap.add_argument("--calibration", type=Path, help="calibration data of --model (.npz)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds a mode may run")
    ap.add_argument("--pythonpath", help="import onnxcompress from this checkout (default: this one)")
    ap.add_argument("--results", default="large_model",
                    help="results file stem in benchmarks/results ('' writes none)")
    ap.add_argument("--dir", help="where to build and write (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    modes = [m for a in args.modes for m in (ALL if a == "all" else [a])]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {', '.join(unknown)}")
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="large-model-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.model:
            src, calib = args.model.resolve(), args.calibration
            size = file_bytes(src)
            section = f"{src.stem} (external data)"
            describe = (f"`{src.name}`, {size / 1e9:.2f} GB with its external data"
                        + (f"; calibration `{calib.name}`" if calib else ""))
        else:
            src = work / "large.onnx"
            t = time.perf_counter()
            size = build(src, args.gb, args.width)
            print(f"built {src} ({size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s", flush=True)
            calib = write_calibration(work / "calib.npz", args.width)
            section = ("Large model (external data)" if args.gb >= 1
                       else f"{args.gb:g} GB stack (development size, {args.width}-wide)")
            describe = (f"A stack of {args.width}x{args.width} MatMul+Add+Relu layers, "
                        f"{size / 1e9:.2f} GB of float32 weights in one external data file")
        rows = []
        for mode in modes:
            dst = work / f"out_{mode}.onnx"
            row = run_mode(mode, src, dst, calib, str(args.pythonpath or REPO), args.timeout)
            if "error" not in row:
                row["output_bytes"] = file_bytes(dst)
                row["peak_over_size"] = row["peak_rss"] / size
                row["size_ratio"] = size / row["output_bytes"]
            for p in work.glob(dst.name + "*"):
                p.unlink()
            rows.append(row)
            print(json.dumps(row), flush=True)
        if args.results:
            write_results(size, rows, args.results, section=section, describe=describe)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def write_results(size: int, rows: list[dict], stem: str = "large_model", *,
                  section: str = "Large model (external data)", describe: str = "") -> None:
    """Rows into ``results/<stem>.json`` / ``.md`` under ``section``: this run's modes replace
    their earlier rows there; other sections and text outside them stay."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath = RESULTS / f"{stem}.json"
    data = json.loads(jpath.read_text()) if jpath.exists() else {}
    key = "large_model" if section == "Large model (external data)" else section
    previous = [r for r in data.get(key, {}).get("runs", [])
                if r["mode"] not in {x["mode"] for x in rows}]
    rows = previous + rows
    data[key] = {"model_bytes": size, "runs": rows}
    jpath.write_text(json.dumps(data, indent=2, default=str))
    mpath = RESULTS / f"{stem}.md"
    text = mpath.read_text() if mpath.exists() else "# Large models: time and peak memory\n"
    lines = [f"## {section}", "",
             f"{describe} (`benchmarks/bench_large_model.py`). Each mode runs `compress_file` in a "
             "fresh process; peak RSS is that process's VmHWM. Target: peak <= 1.5x the model "
             "size, int8 dynamic and k-means 8 no slower than `quantize_dynamic`.", "",
             "`ort_dynamic` / `ort_int4`: onnxruntime's `quantize_dynamic` (QInt8) and "
             "`MatMulNBitsQuantizer` (4 bits, block 32, RTN) on the same file; time / ort: the "
             "mode's wall time over `quantize_dynamic`'s (imports included in both). Each run "
             "starts with an empty decision cache.", "",
             "| mode | peak RSS | peak / model size | output size | size ratio | seconds | time / ort |",
             "|---|---|---|---|---|---|---|"]
    ort = next((r["seconds"] for r in rows if r["mode"] == "ort_dynamic" and "seconds" in r), None)
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mode']} | error: {r['error'][:80]} | | | | | |")
            continue
        vs_ort = f"{r['seconds'] / ort:.2f}x" if ort else ""
        lines.append(f"| {r['mode']} | {r['peak_rss'] / 1e9:.2f} GB | {r['peak_over_size']:.2f}x | "
                     f"{r['output_bytes'] / 1e9:.2f} GB | {r['size_ratio']:.2f}x | "
                     f"{r['seconds']:.1f} | {vs_ort} |")
    header = f"\n## {section}\n"
    if header in text:  # replace the section's table and its first paragraphs, keep the notes
        head, rest = text.split(header, 1)
        tail = rest.split("\n## ", 1)
        notes = tail[0].split("\n\n")
        kept = [n for n in notes if not n.lstrip().startswith(("|", "A stack", "`", "|---"))
                and "fresh process" not in n and n.strip()]
        after = ("\n## " + tail[1]) if len(tail) > 1 else ""
        body = "\n".join(lines) + ("\n\n" + "\n\n".join(kept) if kept else "") + "\n"
        mpath.write_text(head.rstrip("\n") + "\n\n" + body + after)
    else:
        mpath.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
