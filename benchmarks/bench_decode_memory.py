"""Session memory of each decode form on one-weight-kind models (issue #11: no output may need
more onnxruntime session memory than its original), read as users read it (resident) and as the
session's objects hold it (live, after glibc's ``malloc_trim``), median of N fresh processes.

Two fp32 models, each compressed by the library's own passes (k-means 4 bits in UINT4, 5 bits
in bit planes, 8 bits in uint8; int8 weight-only), then measured with the allocator as it is and
with glibc's mmap threshold pinned (``MALLOC_MMAP_THRESHOLD_=131072``: every buffer of 128 KB or
more gets its own mapping and is returned when freed, so resident ~ live):

- ``matmul``: 4 MatMuls of 1024x1024 (16 MB of float weights), input [1, 1024];
- ``embedding``: a 8192x256 Gather table read back through its transpose by a MatMul (the
  tied-embedding shape of a BERT encoder's masked-LM head, 8 MB).

``--real a,b``: the same readings on real models (``/work/realmodels``), fp32 and each
``bench_real_models.py`` configuration (``--configs``), compressed by the CLI in a child process,
on the first eval sample.

Writes ``results/decode_memory.md`` (or ``--out``). Light: ~40 child processes of < 1 s each
(a real model: its compressions, then ~6 children a file).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
FIELDS = ("resident_bytes", "live_bytes", "peak_bytes")
PINNED = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def matmul_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(4):
        w = rng.standard_normal((1024, 1024)).astype(np.float32) * 0.03
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = f"h{i}" if i < 3 else "y"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes, "matmul", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, {"x": rng.standard_normal((1, 1024)).astype(np.float32)}


def embedding_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    table = numpy_helper.from_array(rng.standard_normal((8192, 256)).astype(np.float32) * 0.05, "tok")
    nodes = [
        helper.make_node("Gather", ["tok", "ids"], ["e"], axis=0),
        helper.make_node("Transpose", ["tok"], ["tok_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["e", "tok_t"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "embedding", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 8192])], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, {"ids": rng.integers(0, 8192, (1, 64)).astype(np.int64)}


def configs() -> dict[str, Any]:
    import onnxcompress as oc

    return {
        "kmeans4 (UINT4)": lambda: [oc.WeightSharing(bits=4)],
        "kmeans5 (bit planes)": lambda: [oc.WeightSharing(bits=5)],
        "kmeans8 (uint8)": lambda: [oc.WeightSharing(bits=8, decode="codebook")],
        "int8 weight-only": lambda: [oc.Quantize(mode="weights")],
    }


def median_memory(
    path: Path, feed: dict[str, np.ndarray], runs: int, env: dict[str, str]
) -> dict[str, float]:
    """Median (MB) of each reading over ``runs`` fresh child processes with ``env`` set."""
    from onnxcompress.memory import session_memory

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        results = [session_memory(path, feed, threads=1) for _ in range(runs)]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    bad = [r.error for r in results if not r.measured]
    if bad:
        raise RuntimeError(f"{path.name}: {bad[0]}")
    return {f: statistics.median(getattr(r, f) or 0 for r in results) / 2**20 for f in FIELDS}


def _row(name: str, form: str, path: Path, feed: dict[str, np.ndarray], runs: int) -> str:
    d = median_memory(path, feed, runs, {})
    p = median_memory(path, feed, runs, PINNED)
    row = (f"| {name} | {form} | {path.stat().st_size / 2**20:.2f} | {d['resident_bytes']:.1f} | "
           f"{d['live_bytes']:.1f} | {d['peak_bytes']:.1f} | {p['resident_bytes']:.1f} | "
           f"{p['live_bytes']:.1f} |")
    print(row, flush=True)
    return row


def synthetic_rows(tmp: Path, runs: int) -> list[str]:
    import onnxcompress as oc

    rows = []
    for name, build in (("matmul", matmul_model), ("embedding", embedding_model)):
        model, feed = build()
        paths = {"fp32": tmp / f"{name}_fp32.onnx"}
        onnx.save(model, paths["fp32"])
        for form, passes in configs().items():
            result = oc.compress(paths["fp32"], passes())
            paths[form] = tmp / f"{name}_{len(paths)}.onnx"
            oc.save_model(result.model, paths[form])
        rows += [_row(name, form, path, feed, runs) for form, path in paths.items()]
    return rows


def real_rows(tmp: Path, models: list[str], config_names: list[str], runs: int) -> list[str]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import REAL_MODELS
    from bench_real_models import CONFIGS, load_feeds

    manifest = json.loads((REAL_MODELS / "manifest.json").read_text(encoding="utf-8"))
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path)
    rows = []
    for name in models:
        entry = manifest[name]
        model, calib = REAL_MODELS / entry["file"], REAL_MODELS / entry["calibration"]
        feed = load_feeds(REAL_MODELS / entry["evaluation"], list(entry["io"]["inputs"]), 1)[0]
        rows.append(_row(name, "fp32", model, feed, runs))
        for cfg in config_names:
            out = tmp / f"{name}.{cfg}.onnx"
            cmd = [sys.executable, "-m", "onnxcompress", "compress", str(model), "-o", str(out),
                   *[a.format(calib=calib) for a in CONFIGS[cfg]]]
            # cwd: python -m puts it ahead of PYTHONPATH (this checkout, wherever it was started)
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=ROOT)
            if done.returncode != 0 or not out.exists():
                rows.append(f"| {name} | {cfg} | exit {done.returncode} | | | | | |")
                continue
            rows.append(_row(name, cfg, out, feed, runs))
            out.unlink()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per reading (median)")
    parser.add_argument("--real", help="comma-separated real models instead of the synthetic ones")
    parser.add_argument("--configs", default="dynamic,static,kmeans8,kmeans4",
                        help="bench_real_models.py configurations for --real")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "decode_memory.md"))
    args = parser.parse_args(argv)
    lines = [
        "# Session memory by decode form (benchmarks/bench_decode_memory.py)", "",
        f"Median of {args.runs} fresh processes, MB over the process before the session "
        "(resident / live / peak); `pinned`: the same with `MALLOC_MMAP_THRESHOLD_=131072`.", "",
        "| model | form | file MB | resident | live | peak | pinned resident | pinned live |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="decode-memory-") as tmp:
        if args.real:
            lines += real_rows(Path(tmp), args.real.split(","), args.configs.split(","), args.runs)
        else:
            lines += synthetic_rows(Path(tmp), args.runs)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
