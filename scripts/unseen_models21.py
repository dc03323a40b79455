"""Fetch the twenty-first batch of "unseen" third-party models (heat-map detectors) into a cache.

``benchmarks/results/unseen_models_batch21.md`` sweeps them (``bench_real_models.py --root DIR``).
The brief asked for 3-4 heat-map models (per-keypoint heat maps [N, K, H, W] or CenterNet-style
centre heat maps) shipped in PyPI wheels; none of the wheels checked in the time had weights
(see the write-up), so the batch has one model, from a GitHub repository's committed file (pinned
by commit and sha256, read from the search tool's ``fetch`` mirror):

- ``yunet23``: OpenCV zoo's YuNet **2023mar** face detector (``BenYogesh/RoboDog@b0648b4``,
  ``python/face_models/face_detection_yunet_2023mar.onnx``, 232 KB): anchor-free, per stride
  (8 / 16 / 32) a class and an objectness score map (sigmoid, flattened [1, H*W, 1]), box and
  5-landmark offsets; input [1, 3, 640, 640] BGR 0-255. (Batch 10 had the older anchor-based
  ``face_detection_yunet_120x160``.)

``--heat-stats FILE`` writes, per heat-map output of the fp32 model on its calibration data, the
statistics a peaks target needs (share of pixels > 0.5, strict 3x3 local maxima > 0.5, positive
pixels per maximum, share of positive pixels >= 0.95), for this batch's model and, from their
batches' caches when present, batch 20's CenterFace heat map and batch 12's palm-detector scores
(``HEAT_MODELS``).

    /work/venv-torch/bin/python scripts/unseen_models21.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models21.py --evaluate NAME MODEL   # metric of a compressed file
    /work/venv/bin/python scripts/unseen_models21.py --heat-stats OUT.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli  # noqa: E402
from unseen_models13 import git_file  # noqa: E402
from unseen_models20 import face_metric, face_pictures  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen21"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

ROBODOG = ("BenYogesh/RoboDog", "b0648b4ea333199ccfa6f41c58e997e087afc79f")
YUNET_PATH = "python/face_models/face_detection_yunet_2023mar.onnx"
YN = 640
STRIDES = (8, 16, 32)

# ---------------------------------------------------------------------------------------------
# YuNet 2023mar


def d_yunet23(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """640 x 640: three in four crops (25-100 % of the shorter side, mirrored) of
    pytorch_face_landmark's three WIDER group photos and three face images, the rest 1/f scenes
    with 1-3 drawn faces of 30-200 px; BGR 0-255 NCHW as OpenCV's ``FaceDetectorYN`` feeds it"""
    del out
    pictures = face_pictures(r, n, YN, YN, 0.25, (30, 200))
    # BGR, as OpenCV's FaceDetectorYN feeds it
    return {"input": np.stack([p[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) for p in pictures])}


def yunet_decode(outs: list, threshold: float = 0.6, nms: float = 0.3) -> list[tuple]:
    """OpenCV's ``FaceDetectorYN`` decode of the 2023mar heads (score sqrt(cls * obj), centre
    (col + dx, row + dy) * stride, size exp(dw, dh) * stride, landmarks (col + kx, row + ky) *
    stride), score over ``threshold``, NMS ``nms``: [(1, score, box[4], landmarks[10])]"""
    from bench_real_models import _nms  # noqa: PLC0415

    boxes, scores, lms = [], [], []
    for i, s in enumerate(STRIDES):
        cls, obj = (np.clip(np.asarray(outs[k * 3 + i], np.float64)[0, :, 0], 0, 1) for k in (0, 1))
        bbox, kps = np.asarray(outs[6 + i], np.float64)[0], np.asarray(outs[9 + i], np.float64)[0]
        cols = YN // s
        score = np.sqrt(cls * obj)
        for idx in np.nonzero(score > threshold)[0]:
            row, col = divmod(int(idx), cols)
            cx, cy = (col + bbox[idx, 0]) * s, (row + bbox[idx, 1]) * s
            w, h = np.exp(bbox[idx, 2]) * s, np.exp(bbox[idx, 3]) * s
            boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            scores.append(score[idx])
            lms.append([(kps[idx, 2 * j] + col) * s for j in range(5)]
                       + [(kps[idx, 2 * j + 1] + row) * s for j in range(5)])  # fmt: skip
    if not boxes:
        return []
    b, p = np.array(boxes), np.array(scores)
    return [(1, float(p[k]), b[k], np.array(lms[k])) for k in _nms(b, p, nms)]


def _yunet23(ref: list, got: list) -> dict[str, Any]:
    """YuNet's faces (score > 0.6, NMS 0.3), landmarks within 2 % of the image size (12.8 px)"""
    return face_metric(ref, got, yunet_decode, YN)


EXTRA_METRICS["yunet23"] = _yunet23


# ---------------------------------------------------------------------------------------------
# heat-map statistics (fp32, calibration data)


def heat_stats(maps: np.ndarray) -> dict[str, Any]:
    """``maps`` [S, K, H, W] of probabilities: share of pixels > 0.5, strict 3x3 local maxima
    > 0.5 (all, per sample per channel), positive pixels per maximum, share of positive pixels
    >= 0.95"""
    m = np.asarray(maps, np.float64)
    pos = m > 0.5
    p = np.pad(m, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h, w = m.shape[2:]
    nb = [p[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
          for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]  # fmt: skip
    peaks = pos & np.all([m > q for q in nb], axis=0)
    n_pos, n_peak = int(pos.sum()), int(peaks.sum())
    return {
        "shape": list(m.shape),
        "share_gt_0.5": float(pos.mean()),
        "maxima_gt_0.5": n_peak,
        "maxima_per_map": n_peak / (m.shape[0] * m.shape[1]),
        "positive_per_maximum": n_pos / n_peak if n_peak else None,
        "share_positive_ge_0.95": float((m[pos] >= 0.95).mean()) if n_pos else None,
        "max": float(m.max()),
    }


def _run(model: Path, data: Path) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    d = np.load(data)
    n = len(d[s.get_inputs()[0].name])
    return [s.run(None, {i.name: d[i.name][k] for i in s.get_inputs()}) for k in range(n)]


def heat_maps_of(name: str, root: Path) -> dict[str, np.ndarray]:
    """the heat-map outputs of a model's fp32 run on its calibration data, [S, K, H, W]"""
    outs = _run(root / f"{name}.onnx", root / f"{name}_calib.npz")
    if name == "yunet23":
        res = {}
        for i, s in enumerate(STRIDES):
            g = YN // s
            cls = np.stack([o[i][0, :, 0] for o in outs]).reshape(-1, 1, g, g)
            obj = np.stack([o[3 + i][0, :, 0] for o in outs]).reshape(-1, 1, g, g)
            res[f"cls_{s}"], res[f"obj_{s}"] = cls, obj
            res[f"score_{s} (sqrt cls*obj)"] = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        return res
    if name == "centerface":  # heat map [1, 1, 72, 96] (sigmoid)
        return {"heat (537)": np.concatenate([o[0] for o in outs])}
    if name == "palmdet":  # 2016 score logits: 24 x 24 x 2 anchors then 12 x 12 x 6 (BlazePalm order)
        z = np.stack([1 / (1 + np.exp(-o[1][0, :, 0].astype(np.float64))) for o in outs])
        return {
            "scores_24x24 (sigmoid)": z[:, :1152].reshape(-1, 24, 24, 2).transpose(0, 3, 1, 2),
            "scores_12x12 (sigmoid)": z[:, 1152:].reshape(-1, 12, 12, 6).transpose(0, 3, 1, 2),
        }
    raise KeyError(name)


# batch 12's palm detector: made by ``scripts/unseen_models12.py --out DIR/batch12 --only palmdet``
HEAT_MODELS = {
    "yunet23": DEFAULT_OUT,
    "centerface": DEFAULT_OUT.parent / "onnxcompress-unseen20",
    "palmdet": DEFAULT_OUT / "batch12",
}


def _heat_option(ap: argparse.ArgumentParser) -> Callable[[argparse.Namespace], bool]:
    ap.add_argument("--heat-stats", type=Path, metavar="OUT", help="only write the heat-map statistics")

    def handle(args: argparse.Namespace) -> bool:
        if args.heat_stats:
            res = {}
            for name, root in HEAT_MODELS.items():
                root = args.out if name == "yunet23" else root
                if (root / f"{name}_calib.npz").exists():
                    res[name] = {k: heat_stats(v) for k, v in heat_maps_of(name, root).items()}
            args.heat_stats.write_text(json.dumps(res, indent=1) + "\n")
            print(json.dumps(res, indent=1))
        return bool(args.heat_stats)

    return handle


# ---------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[str, str, Maker, dict[str, Any]]] = {
    # stride-8 objectness pixels over 0.5 (the class map is > 0.5 on 82 % of pixels), F1 vs fp32
    # (+ decoded faces in --evaluate)
    "yunet23": (
        YUNET_PATH,
        "YuNet 2023mar face detector (OpenCV zoo): anchor-free, class / objectness maps, box and "
        "5-landmark offsets at strides 8/16/32; opset 11, 640 x 640",
        d_yunet23,
        {"kind": "mask_f1", "output": 3, "threshold": 0.5},
    ),  # fmt: skip
}
SOURCE_SHA256 = {"yunet23": "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    member, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        dest.write_bytes(git_file(ROBODOG, member))
    entry = manifest_entry(out, name, dest.name, f"{ROBODOG[0]}@{ROBODOG[1][:7]}", member,
                           SOURCE_SHA256[name] if check else None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    entry["source"] = f"GitHub `{ROBODOG[0]}@{ROBODOG[1][:7]}`, `{member}` (sha256 {SOURCE_SHA256[name]})"
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make, _heat_option)


if __name__ == "__main__":
    main()
