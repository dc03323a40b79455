"""CTC line agreement of compressed khmer_ocr files with fp32's on 256 drawn lines (batch 18's
model; 32 eval lines cannot tell one borderline line from a real change).

    python scripts/eval_khmer_lines.py FILE.onnx [FILE.onnx ...]

Needs ``scripts/unseen_models18.py``'s cache (``~/.cache/onnxcompress-unseen18``). The lines are
drawn once (seed 12345) into ``khmer_ocr_lines256.npz`` there. Prints, per file, the lines whose
greedy CTC string changed and the share of frames whose arg-max changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))
import unseen_models18  # noqa: E402

CACHE = Path.home() / ".cache" / "onnxcompress-unseen18"


def decode(path: Path, images: np.ndarray) -> list[tuple[tuple[int, ...], np.ndarray]]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = []
    for x in images:
        k = session.run(None, {"image": x})[0][:, 0].argmax(-1)  # time-major [T, 1, C]
        runs = k[np.concatenate([[True], k[1:] != k[:-1]])]
        out.append((tuple(int(c) for c in runs[runs != 0]), k))
    return out


def main() -> None:
    lines = CACHE / "khmer_ocr_lines256.npz"
    if not lines.exists():
        np.savez(lines, **unseen_models18.d_khmer_ocr(np.random.default_rng(12345), 256, CACHE))
    images = np.load(lines)["image"]
    reference = decode(CACHE / "khmer_ocr.onnx", images)
    for name in sys.argv[1:]:
        got = decode(Path(name), images)
        changed = sum(a[0] != b[0] for a, b in zip(reference, got, strict=True))
        frames = float(np.mean(np.concatenate([a[1] == b[1] for a, b in zip(reference, got, strict=True)])))
        print(f"{name}: {changed} of {len(images)} lines changed, frames kept {frames:.5f}")


if __name__ == "__main__":
    main()
