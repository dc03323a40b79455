"""Diagnosis for issue #15: how close each sample is to flipping, calibration vs eval.

For a compressed model and its fp32 original, per sample the flip ratio r = (fall of the fp32
top-1's lead over a class) / (that lead), the worst class and (for sequences) the worst position,
on logits (probability outputs are read as their logarithms). A sample flips when r > 1. Prints
per data set the flip rate, the largest ratios, and what auto's estimator
(``onnxcompress.auto.flips.flip_rate``) says from the calibration samples alone.

    python benchmarks/bench_auto_margins.py MODEL.onnx COMPRESSED.onnx CALIB.npz EVAL.npz [--output K]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxcompress.auto.measure import _stack  # noqa: E402
from onnxcompress.auto.flips import flip_rate, flip_ratios  # noqa: E402


def outputs(path: str, data: str, index: int) -> np.ndarray:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    with np.load(data) as d:
        arrays = {k: d[k] for k in names if k in d.files}
    if not arrays:
        sys.exit(f"{data}: none of {path}'s inputs ({', '.join(names)})")
    n = len(next(iter(arrays.values())))
    # samples on axis 0, as auto mode stacks them (a [T, 1, C] output gets its own sample axis)
    return _stack([sess.run(None, {k: v[i] for k, v in arrays.items()})[index] for i in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("compressed")
    ap.add_argument("data", nargs="+", help=".npz files (the first is the calibration data)")
    ap.add_argument("--output", type=int, default=0)
    ap.add_argument("--per-position", action="store_true", help="frames count one by one (top1), "
                    "not as a sequence")
    args = ap.parse_args()
    for data in args.data:
        a = outputs(args.model, data, args.output)
        b = outputs(args.compressed, data, args.output)
        if args.per_position:
            a, b = a.reshape(-1, 1, a.shape[-1]), b.reshape(-1, 1, b.shape[-1])
        r = flip_ratios(a, b)
        top = np.sort(r)[::-1]
        est = flip_rate(r)
        print(f"{Path(data).name}: n {len(r)} flips {int((r > 1).sum())} ({(r > 1).mean():.4f}) "
              f"estimate {est:.4f}; largest r {np.round(top[:6], 3).tolist()}; "
              f"t*P(r>t) at t=1,.5,.25,.1: "
              f"{[round(t * float((r > t).mean()), 4) for t in (1, 0.5, 0.25, 0.1)]}")


if __name__ == "__main__":
    main()
