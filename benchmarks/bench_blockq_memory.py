"""Where a 4-bit model's onnxruntime session memory goes (issue #14: <= 0.2x fp32).

    nice python benchmarks/bench_blockq_memory.py [--models gpt_small,bert_tiny] [--out PATH]

Each number is one fresh child process: resident set after creating the session and running
one eval sample, less the process's resident set before (as ``onnxcompress.memory``), one
thread. Variants isolate the parts: a one-node model (onnxruntime's fixed cost), the CPU arena
off or initializers outside it (``session.use_device_allocator_for_initializers``: the
originals of prepacked MatMulNBits weights go back to the system instead of the arena),
prepacking off, and glibc's malloc with a fixed mmap threshold (freed protobuf buffers returned).
Writes benchmarks/results/block_quantization_memory.md (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CACHE = Path.home() / ".cache" / "onnxcompress-bench"
from _common import REAL_MODELS  # noqa: E402

REAL = REAL_MODELS

CHILD = r"""
import json, sys
import numpy as np, onnxruntime as ort
def kib():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
path, feeds, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.log_severity_level = 3
opts.enable_cpu_mem_arena = options.pop('arena', True)
for k, v in options.items():
    opts.add_session_config_entry(k, v)
with np.load(feeds) as d:
    feed = {k: d[k] for k in d.files}
before = kib()
s = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
created = kib()
s.run(None, feed)
print(json.dumps({'created': (created - before) / 1024, 'ran': (kib() - before) / 1024}))
"""

# Resident memory after a run is bimodal on this machine (gpt_small 4-bit: 38.6 or 44.9 MB in
# otherwise identical runs): each cell is the range over this many fresh processes.
REPEATS = 3
VARIANTS = [
    ("default", {}, {}),
    ("initializers outside the arena", {"session.use_device_allocator_for_initializers": "1"}, {}),
    ("arena off", {"arena": False}, {}),
    ("prepacking off", {"session.disable_prepacking": "1"}, {}),
    ("glibc mmap threshold 64 KB", {},
     {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}),
]


def _span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.1f}" if hi - lo < 0.5 else f"{lo:.1f}-{hi:.1f}"


def _measure(path: Path, feeds: Path, options: dict, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(feeds), json.dumps(options)],
                         capture_output=True, text=True, env={**os.environ, **env}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from onnxcompress.data import feed_source
    from onnxcompress.model import load_model, save_model
    from onnxcompress.passes import BlockQuantize

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="gpt_small,bert_tiny")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/block_quantization_memory.md")
    args = ap.parse_args()
    lines = ["# 4-bit session memory: where it goes", "",
             "`benchmarks/bench_blockq_memory.py`: MB resident after session creation / after one run "
             f"(range over {REPEATS} fresh child processes, one thread, onnxruntime defaults unless the "
             "variant says).", ""]
    with tempfile.TemporaryDirectory(prefix="bench-blockq-mem-") as tmp:
        tiny = Path(tmp) / "tiny.onnx"
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny",
                                  [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                                  [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tiny)
        np.savez(Path(tmp) / "tiny.npz", x=np.zeros((1, 4), np.float32))
        fixed = _measure(tiny, Path(tmp) / "tiny.npz", {}, {})
        lines += [f"onnxruntime's fixed cost (a one-Relu model): {fixed['ran']:.1f} MB.", "",
                  "| model | form | file MB | " + " | ".join(v[0] for v in VARIANTS) + " |",
                  "|---|---|---|" + "---|" * len(VARIANTS)]
        for name in args.models.split(","):
            src = CACHE / f"{name}.onnx" if (CACHE / f"{name}.onnx").exists() else REAL / f"{name}.onnx"
            model = load_model(src)
            feed = next(iter(feed_source(str(src.with_name(f"{name}_eval.npz")), model).take(1)))
            feeds = Path(tmp) / f"{name}.npz"
            np.savez(feeds, **feed)
            q4 = Path(tmp) / f"{name}_q4.onnx"
            save_model(BlockQuantize().run(model).model, q4, overwrite=True)
            for form, path in (("fp32", src), ("ours rtn", q4)):
                cells = []
                for _, options, env in VARIANTS:
                    runs = [_measure(path, feeds, dict(options), env) for _ in range(REPEATS)]
                    cells.append(" / ".join(_span([r[key] for r in runs]) for key in ("created", "ran")))
                size = path.stat().st_size / 1e6
                lines.append(f"| {name} | {form} | {size:.1f} | " + " | ".join(cells) + " |")
                print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
