"""Fetch the forty-second batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch42.md`` sweeps them (``bench_real_models.py --root DIR``).
Kinds no earlier batch had:

- ``nanotrack_backbone`` / ``nanotrack_head``: **NanoTrack v2, a Siamese single-object tracker**
  (the one OpenCV's ``cv2.TrackerNano`` runs), as its project exports it: GitHub
  ``HonglinChu/SiamTrackers`` ``NanoTrack/models/nanotrackv2/nanotrack_backbone_sim.onnx`` (MobileNetV3
  small, BGR 0-255 crop [1, 3, 255, 255] -> features [1, 48, 16, 16]; opset 14, IR 7, input size
  fixed at 255 although the tracker also runs it on the 127 x 127 template, as OpenCV's dnn allows)
  and ``nanotrack_head_sim.onnx`` (**two inputs**: template features ``input1`` [1, 48, 8, 8] and
  search features ``input2`` [1, 48, 16, 16] -> class logits ``output1`` [1, 2, 16, 16] and box
  distances ``output2`` [1, 4, 16, 16]; depth-wise cross-correlation, then the BAN head). The files
  are cached as shipped (sha256 pinned).
- ``nanotrack3_head``: NanoTrack v3's head (``nanotrackv3/nanotrack_head.onnx``, not simplified:
  36 Constant nodes, Slice / Concat; [1, 96, 8, 8] + [1, 96, 16, 16] -> [1, 2 / 4, 15, 15]),
  the same kind in the project's later version, as a second graph of that kind.
- ``fasnet_v2`` / ``fasnet_v1se``: **face anti-spoofing (liveness)**, the two MiniFASNets of GitHub
  ``minivision-ai/Silent-Face-Anti-Spoofing`` (``resources/anti_spoof_models/2.7_80x80_MiniFASNetV2.pth``
  and ``4_0_0_80x80_MiniFASNetV1SE.pth``), exported here with torch 2.13 (opset 17): a BGR 0-255
  face crop [1, 3, 80, 80] (2.7 / 4.0 x the face box) -> logits [1, 3], class 1 = real face.

Data (all real): the VOT "bag" sequence (196 frames, 480 x 360) as GitHub ``STVIR/pysot`` ships it
for its demo (``demo/bag.avi``, XviD; decoded once with OpenCV in a side venv into the cache),
and as the reference track the boxes SiamBAN gives on VOT2018 "bag" (no failure; shipped in the same
SiamTrackers snapshot, ``SiamBAN/SiamBAN/results/VOT2018/siamban/baseline/bag/bag_001.txt``);
VOT's own ground truth is not in any reachable snapshot. Two runs: forward from frame 1 and backward
from frame 196, each initialised with SiamBAN's box of the neighbouring frame. The tracker is the
project's ``nanotrack/tracker/nano_tracker.py`` ported to numpy (``configv2.yaml`` / ``configv3.yaml``:
context 0.5, exemplar 127, instance 255, stride 16, Hanning window, scale / ratio penalty, lr) with
an OpenCV-style bilinear resize. Samples: the backbone gets search crops (255) at fp32's track of
random frames; a head gets the template features of the object (fp32's box at a random frame) and
the search features of a frame 1-10 later (as a tracker started at that frame sees them).

Faces (all real): the project's RetinaFace (Caffe, via OpenCV's dnn in the side venv) finds the
face and its ``CropImage`` crops it, on its 3 sample images, the 88 frames of its demo animation and
21 photographs of GitHub ``ageitgey/face_recognition``'s examples and tests (112 faces).

``--evaluate`` adds the task metric. Anti-spoofing: the project's decision (``test.py``: argmax of
the two models' summed softmax) on all 112 faces with the file in place of its fp32 model, against
fp32's. Tracking: both runs (390 tracked frames) with the file in place of its
fp32 graph (a backbone serves both the 127 template and the 255 search crop, its input size made
symbolic in memory for the template as OpenCV's dnn does; a head with fp32's backbone): mean IoU of
each frame's box with fp32's box, share of frames within IoU 0.5 of fp32's, the success rate
(IoU >= 0.5) and success AUC against SiamBAN's boxes beside fp32's, and the step IoU (per frame, the
file's box from fp32's tracker state against fp32's box: the model's error without the drift).
``--tracks NAME MODEL`` gives the tracking numbers alone.

    /work/venv/bin/python scripts/unseen_models42.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models42.py --evaluate NAME MODEL
    /work/venv/bin/python scripts/unseen_models42.py --nt-e2e BACKBONE HEAD   # both v2 graphs replaced
    /work/venv/bin/python scripts/unseen_models42.py --fas-e2e V2 V1SE        # both MiniFASNets replaced

The side venv: ``python3 -m venv /work/venv-u42 && /work/venv-u42/bin/pip install
"opencv-python-headless<5" numpy`` (OpenCV 5 has no Caffe importer).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import batch_cli, evaluate  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen42"
MIRRORS = Path("/work/.mirror")
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]
NT_REPO = ("HonglinChu/SiamTrackers", "248663fde6bf7c40190cf10ee396d5662919ecd3")
PYSOT_REPO = ("STVIR/pysot", "d04028f8e18c6b27ee150a7c0d8aab9a1807219e")
CV_PY = "/work/venv-u42/bin/python"  # a side venv with opencv-python-headless (decodes the XviD file)
SIAMBAN = "SiamBAN/SiamBAN/results/VOT2018/siamban/baseline/bag/bag_001.txt"
FILES = {"nanotrack_backbone": "NanoTrack/models/nanotrackv2/nanotrack_backbone_sim.onnx",
         "nanotrack_head": "NanoTrack/models/nanotrackv2/nanotrack_head_sim.onnx",
         "nanotrack3_backbone": "NanoTrack/models/nanotrackv3/nanotrack_backbone.onnx",
         "nanotrack3_head": "NanoTrack/models/nanotrackv3/nanotrack_head.onnx"}  # fmt: skip
#: configv2.yaml / configv3.yaml TRACK: window influence, penalty k, lr
TRACK = {2: (0.490, 0.150, 0.385), 3: (0.455, 0.138, 0.348)}
EXEMPLAR, INSTANCE, STRIDE, CONTEXT = 127, 255, 16, 0.5


def git_file(repo: tuple[str, str], path: str) -> bytes:
    """``path`` at the pinned commit of ``repo``'s fetch mirror."""
    mirror = MIRRORS / repo[0].replace("/", "+") / "repo"
    return subprocess.run(["git", "-C", str(mirror), "show", f"{repo[1]}:{path}"],
                          check=True, capture_output=True).stdout  # fmt: skip


def _session(model: Path | bytes) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.intra_op_num_threads = 1
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), o,
                                providers=["CPUExecutionProvider"])  # fmt: skip


def any_size(path: Path) -> bytes:
    """The backbone with its input's and output's H / W made symbolic and its value_info dropped
    (in memory), so one session runs the 127 template and the 255 search crop, as OpenCV's dnn
    runs the fixed-size file."""
    import onnx  # noqa: PLC0415

    m = onnx.load(str(path))
    del m.graph.value_info[:]
    for v in list(m.graph.input) + list(m.graph.output):
        d = v.type.tensor_type.shape.dim
        d[2].dim_param, d[3].dim_param = "height", "width"
    return m.SerializeToString()


# ---------------------------------------------------------------------------------------------
# data

_DECODE = r"""
import sys, cv2, numpy as np
cap, frames = cv2.VideoCapture(sys.argv[1]), []
while True:
    ok, f = cap.read()
    if not ok:
        break
    frames.append(f)
np.savez_compressed(sys.argv[2], frames=np.stack(frames))
"""


@cache
def frames(out: Path) -> np.ndarray:
    """The 196 BGR frames [196, 360, 480, 3] uint8 of pysot's demo/bag.avi (decoded once)."""
    npz = out / "bag_frames.npz"
    if not npz.exists():
        avi = out / "bag.avi"
        avi.write_bytes(git_file(PYSOT_REPO, "demo/bag.avi"))
        subprocess.run([CV_PY, "-c", _DECODE, str(avi), str(npz)], check=True)
    return np.load(npz)["frames"]


@cache
def siamban_boxes() -> np.ndarray:
    """SiamBAN's VOT2018 boxes (x, y, w, h) for frames 2-196 (row 0 = frame 2)."""
    text = git_file(NT_REPO, SIAMBAN).decode().split()
    return np.array([[float(v) for v in line.split(",")] for line in text[1:]], np.float64)


def runs() -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """(frame order, init box, reference boxes of the tracked frames) for the forward and the
    backward run; the init box is SiamBAN's box of the neighbouring frame."""
    ref = np.concatenate([siamban_boxes()[:1], siamban_boxes()])  # frame 1 := frame 2's box
    n = len(ref)
    fwd = list(range(n))
    bwd = fwd[::-1]
    return [(fwd, ref[1], ref[fwd[1:]]), (bwd, ref[-2], ref[bwd[1:]])]


def _resize(im: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of an [H, W, 3] uint8 patch to size x size, half-pixel centres (cv2's)."""
    h, w = im.shape[:2]

    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = (np.arange(size) + 0.5) * (n_in / size) - 0.5
        x = np.clip(x, 0, n_in - 1)
        lo = np.floor(x).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (x - lo)[:, None]

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    a = im.astype(np.float32)
    rows = a[y0] * (1 - fy[:, :, None]) + a[y1] * fy[:, :, None]
    out = rows[:, x0] * (1 - fx[None]) + rows[:, x1] * fx[None]
    return np.round(out).clip(0, 255).astype(np.uint8)


def subwindow(im: np.ndarray, pos: np.ndarray, model_sz: int, original_sz: float,
              avg: np.ndarray) -> np.ndarray:
    """base_tracker.get_subwindow: the square crop, padded with the channel mean -> [1, 3, S, S]."""
    sz = original_sz
    c = (original_sz + 1) / 2
    xmin = np.floor(pos[0] - c + 0.5)
    ymin = np.floor(pos[1] - c + 0.5)
    xmax, ymax = xmin + sz - 1, ymin + sz - 1
    r, cc, k = im.shape
    lp, tp = int(max(0.0, -xmin)), int(max(0.0, -ymin))
    rp, bp = int(max(0.0, xmax - cc + 1)), int(max(0.0, ymax - r + 1))
    xmin, xmax, ymin, ymax = xmin + lp, xmax + lp, ymin + tp, ymax + tp
    if any([tp, bp, lp, rp]):
        te = np.empty((r + tp + bp, cc + lp + rp, k), np.uint8)
        te[:] = avg
        te[tp:tp + r, lp:lp + cc] = im
        patch = te[int(ymin):int(ymax + 1), int(xmin):int(xmax + 1)]
    else:
        patch = im[int(ymin):int(ymax + 1), int(xmin):int(xmax + 1)]
    if model_sz != original_sz:
        patch = _resize(patch, model_sz)
    return patch.transpose(2, 0, 1)[None].astype(np.float32)


class Tracker:
    """nano_tracker.NanoTracker with onnxruntime sessions: backbone (any size), head."""

    def __init__(self, backbone: Any, head: Any, version: int):
        self.backbone, self.head = backbone, head
        self.wi, self.pk, self.lr = TRACK[version]
        self.score_size = 0
        self.zf: np.ndarray | None = None

    def _setup(self, size: int) -> None:
        self.score_size = size
        h = np.hanning(size)
        self.window = np.outer(h, h).flatten()
        ori = -(size // 2) * STRIDE
        x, y = np.meshgrid([ori + STRIDE * d for d in range(size)], [ori + STRIDE * d for d in range(size)])
        self.points = np.stack([x.ravel(), y.ravel()], 1).astype(np.float32)

    def template_crop(self, img: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        self.center = np.array([bbox[0] + (bbox[2] - 1) / 2, bbox[1] + (bbox[3] - 1) / 2])
        self.size = np.array([bbox[2], bbox[3]], np.float64)
        w_z = self.size[0] + CONTEXT * np.sum(self.size)
        h_z = self.size[1] + CONTEXT * np.sum(self.size)
        s_z = round(np.sqrt(w_z * h_z))
        self.avg = np.mean(img, axis=(0, 1))
        return subwindow(img, self.center, EXEMPLAR, s_z, self.avg)

    def init(self, img: np.ndarray, bbox: np.ndarray) -> None:
        self.zf = self.backbone.run(None, {"input": self.template_crop(img, bbox)})[0]

    def search_crop(self, img: np.ndarray) -> tuple[np.ndarray, float]:
        w_z = self.size[0] + CONTEXT * np.sum(self.size)
        h_z = self.size[1] + CONTEXT * np.sum(self.size)
        s_z = np.sqrt(w_z * h_z)
        s_x = s_z * (INSTANCE / EXEMPLAR)
        return subwindow(img, self.center, INSTANCE, round(s_x), self.avg), EXEMPLAR / s_z

    def track(self, img: np.ndarray) -> tuple[np.ndarray, float]:
        x, scale_z = self.search_crop(img)
        xf = self.backbone.run(None, {"input": x})[0]
        cls, loc = self.head.run(None, {"input1": self.zf, "input2": xf})
        if cls.shape[-1] != self.score_size:
            self._setup(cls.shape[-1])
        c = cls[0].reshape(2, -1).T.astype(np.float64)
        c = np.exp(c - c.max(1, keepdims=True))
        score = c[:, 1] / c.sum(1)
        d = loc[0].reshape(4, -1).astype(np.float64)
        p = self.points
        x1, y1, x2, y2 = p[:, 0] - d[0], p[:, 1] - d[1], p[:, 0] + d[2], p[:, 1] + d[3]
        pred = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])

        def change(r: np.ndarray) -> np.ndarray:
            return np.maximum(r, 1.0 / r)

        def sz(w: Any, h: Any) -> Any:
            pad = (w + h) * 0.5
            return np.sqrt((w + pad) * (h + pad))

        s_c = change(sz(pred[2], pred[3]) / sz(self.size[0] * scale_z, self.size[1] * scale_z))
        r_c = change((self.size[0] / self.size[1]) / (pred[2] / pred[3]))
        penalty = np.exp(-(r_c * s_c - 1) * self.pk)
        pscore = penalty * score * (1 - self.wi) + self.window * self.wi
        best = int(np.argmax(pscore))
        bbox = pred[:, best] / scale_z
        lr = penalty[best] * score[best] * self.lr
        cx, cy = bbox[0] + self.center[0], bbox[1] + self.center[1]
        width = self.size[0] * (1 - lr) + bbox[2] * lr
        height = self.size[1] * (1 - lr) + bbox[3] * lr
        cx, cy = max(0, min(cx, img.shape[1])), max(0, min(cy, img.shape[0]))
        width, height = max(10, min(width, img.shape[1])), max(10, min(height, img.shape[0]))
        self.center, self.size = np.array([cx, cy]), np.array([width, height])
        return np.array([cx - width / 2, cy - height / 2, width, height]), float(score[best])


def _version(name: str) -> int:
    return 3 if name.startswith("nanotrack3") else 2


#: (backbone, head) files that replace both fp32 graphs (``--nt-e2e``)
PAIR: dict[str, Path] = {}


def _graphs(out: Path, name: str, model: Path | None) -> tuple[Any, Any]:
    """(backbone, head) sessions: fp32's, with ``model`` in place of ``name``'s graph (or both
    replaced by ``PAIR`` when ``model`` is given)."""
    pre = "nanotrack3" if _version(name) == 3 else "nanotrack"
    bb = model if model is not None and name.endswith("backbone") else out / f"{pre}_backbone.onnx"
    hd = model if model is not None and name.endswith("head") else out / f"{pre}_head.onnx"
    if model is not None and PAIR:
        bb, hd = PAIR["backbone"], PAIR["head"]
    return _session(any_size(bb)), _session(hd)


def track_all(out: Path, name: str, model: Path | None) -> list[np.ndarray]:
    """Both runs' boxes [n - 1, 4] (the tracked frames)."""
    bb, hd = _graphs(out, name, model)
    fr = frames(out)
    res = []
    for order, init, _ in runs():
        t = Tracker(bb, hd, _version(name))
        t.init(fr[order[0]], init)
        res.append(np.array([t.track(fr[i])[0] for i in order[1:]]))
    return res


@cache
def fp32_tracks(out: Path, version: int) -> list[np.ndarray]:
    path = out / f"nanotrack{version}_fp32_tracks.json"
    if not path.exists():
        got = track_all(out, "nanotrack_head" if version == 2 else "nanotrack3_head", None)
        path.write_text(json.dumps([g.tolist() for g in got]))
    return [np.array(g) for g in json.loads(path.read_text())]


def step_iou(out: Path, name: str, model: Path) -> np.ndarray:
    """Per frame, the box the file's graph gives from fp32's tracker state (fp32's centre, size and
    crop; the file's own template features for a backbone), IoU with fp32's box of that step: the
    model's error without the drift that compounds it."""
    ref_bb, ref_hd = _graphs(out, name, None)
    bb, hd = _graphs(out, name, model)
    fr, res = frames(out), []
    for order, init, _ in runs():
        a, b = Tracker(ref_bb, ref_hd, _version(name)), Tracker(bb, hd, _version(name))
        a.init(fr[order[0]], init)
        b.init(fr[order[0]], init)
        for i in order[1:]:
            b.center, b.size = a.center.copy(), a.size.copy()
            res.append((b.track(fr[i])[0], a.track(fr[i])[0]))
    got, ref = (np.array(x) for x in zip(*res, strict=True))
    return iou(got, ref)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax2, ay2, bx2, by2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.clip(np.minimum(ax2, bx2) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(ay2, by2) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    return inter / (a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter)


def _picks(r: np.random.Generator, n: int, version: int, out: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(template crop, search crop) pairs: the object at a random frame of a random run (fp32's
    box), the search crop of a frame 1-10 later as fp32's tracker started there makes it."""
    fr, tracks, res = frames(out), fp32_tracks(out, version), []
    bb = _session(any_size(out / f"{'nanotrack3' if version == 3 else 'nanotrack'}_backbone.onnx"))
    hd = _session(out / f"{'nanotrack3' if version == 3 else 'nanotrack'}_head.onnx")
    for _ in range(n):
        k = int(r.integers(2))
        order, _, _ = runs()[k]
        i = int(r.integers(0, len(order) - 11))
        box = tracks[k][i - 1] if i > 0 else runs()[k][1]
        t = Tracker(bb, hd, version)
        z = t.template_crop(fr[order[i]], box)
        t.zf = bb.run(None, {"input": z})[0]
        last = i + int(r.integers(1, 11))
        for j in range(i + 1, last + 1):
            x, _ = t.search_crop(fr[order[j]])
            if j < last:
                t.track(fr[order[j]])
        res.append((z, x))
    return res


def d_backbone(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """search crops (BGR 0-255, 255 x 255) of pysot's bag.avi at fp32's track"""
    return {"input": np.stack([x for _, x in _picks(r, n, 2, out)])}


def _d_head(version: int) -> Maker:
    def d_head(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
        """fp32 backbone features of the object's template (127) and of a search crop (255) 1-10
        frames later, bag.avi"""
        bb = _session(any_size(out / f"{'nanotrack3' if version == 3 else 'nanotrack'}_backbone.onnx"))
        z, x = zip(*_picks(r, n, version, out), strict=True)
        return {"input1": np.stack([bb.run(None, {"input": a})[0] for a in z]),
                "input2": np.stack([bb.run(None, {"input": a})[0] for a in x])}  # fmt: skip

    return d_head


def task(name: str, model: Path, out: Path) -> dict[str, Any]:
    if name in FAS:
        return fas_task(name, model, out)
    v = _version(name)
    ref = fp32_tracks(out, v)
    got = track_all(out, name, model)
    truth = [t for _, _, t in runs()]
    thr = np.linspace(0, 1, 21)

    def success(boxes: list[np.ndarray]) -> tuple[float, float]:
        o = np.concatenate([iou(b, t) for b, t in zip(boxes, truth, strict=True)])
        return float(np.mean(o >= 0.5)), float(np.mean([np.mean(o > s) for s in thr]))

    same = np.concatenate([iou(a, b) for a, b in zip(ref, got, strict=True)])
    step = step_iou(out, name, model)
    s_ref, auc_ref = success(ref)
    s_got, auc_got = success(got)
    return {"frames": int(same.size), "mean_iou_vs_fp32": float(np.mean(same)),
            "frames_iou50_vs_fp32": float(np.mean(same >= 0.5)),
            "success50_fp32": s_ref, "success50": s_got, "auc_fp32": auc_ref, "auc": auc_got,
            "step_iou_mean": float(np.mean(step)), "step_iou_min": float(np.min(step)),
            "step_iou90": float(np.mean(step >= 0.9))}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# face anti-spoofing (Silent-Face-Anti-Spoofing's MiniFASNets)

FAS_REPO = ("minivision-ai/Silent-Face-Anti-Spoofing", "b6d5f04ad78778917853b25c778acef6d5626d15")
FR_REPO = ("ageitgey/face_recognition", "2e2dccea9dd0ce730c8d464d0f67c6eebb40c9d1")
TORCH_PY = "/work/venv-torch/bin/python"
FAS = {"fasnet_v2": ("resources/anti_spoof_models/2.7_80x80_MiniFASNetV2.pth", "MiniFASNetV2", 2.7),
       "fasnet_v1se": ("resources/anti_spoof_models/4_0_0_80x80_MiniFASNetV1SE.pth", "MiniFASNetV1SE", 4.0)}
_KNN = "examples/knn_examples/"
FR_IMAGES = ["examples/alex-lacamoire.png", "examples/biden.jpg", _KNN + "test/alex_lacamoire1.jpg",
             _KNN + "test/johnsnow_test1.jpg", _KNN + "test/kit_with_rose.jpg", _KNN + "test/obama1.jpg",
             _KNN + "test/obama_and_biden.jpg", _KNN + "train/alex_lacamoire/img1.jpg",
             _KNN + "train/biden/biden2.jpg", _KNN + "train/kit_harington/john1.jpeg",
             _KNN + "train/kit_harington/john2.jpeg", _KNN + "train/obama/obama.jpg",
             _KNN + "train/obama/obama2.jpg", _KNN + "train/rose_leslie/img1.jpg",
             _KNN + "train/rose_leslie/img2.jpg", "examples/lin-manuel-miranda.png",
             "examples/obama-240p.jpg", "examples/obama-480p.jpg", "examples/obama_small.jpg",
             "examples/two_people.jpg",
             "tests/test_images/obama3.jpg", "tests/test_images/obama_partial_face.jpg",
             "tests/test_images/obama_partial_face2.jpg"]

_FAS_EXPORT = r"""
import sys, collections
out, src, name, ckpt, cls = sys.argv[1:6]
sys.path.insert(0, src)
import torch, MiniFASNet
m = getattr(MiniFASNet, cls)(conv6_kernel=(5, 5))
sd = torch.load(ckpt, map_location="cpu")
sd = collections.OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in sd.items())
print(m.load_state_dict(sd, strict=True))
m.eval()
torch.onnx.export(m, (torch.rand(1, 3, 80, 80) * 255,), out + "/" + name + ".onnx", input_names=["input"],
                  output_names=["logits"], opset_version=17, dynamo=False)
"""

_FAS_CROP = r"""
import sys, math, json, cv2, numpy as np
proto, model, listing, dest = sys.argv[1:5]
net = cv2.dnn.readNetFromCaffe(proto, model)
def get_bbox(img):  # src/anti_spoof_predict.py Detection.get_bbox
    height, width = img.shape[0], img.shape[1]
    ar = width / height
    if img.shape[1] * img.shape[0] >= 192 * 192:
        size = (int(192 * math.sqrt(ar)), int(192 / math.sqrt(ar)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    net.setInput(cv2.dnn.blobFromImage(img, 1, mean=(104, 117, 123)), "data")
    out = net.forward("detection_out").squeeze()
    i = np.argmax(out[:, 2])
    l, t, r, b = out[i, 3] * width, out[i, 4] * height, out[i, 5] * width, out[i, 6] * height
    return [int(l), int(t), int(r - l + 1), int(b - t + 1)], float(out[i, 2])
def new_box(src_w, src_h, bbox, scale):  # src/generate_patches.py CropImage._get_new_box
    x, y, bw, bh = bbox
    scale = min((src_h - 1) / bh, min((src_w - 1) / bw, scale))
    nw, nh = bw * scale, bh * scale
    cx, cy = bw / 2 + x, bh / 2 + y
    l, t, r, b = cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2
    if l < 0: r -= l; l = 0
    if t < 0: b -= t; t = 0
    if r > src_w - 1: l -= r - src_w + 1; r = src_w - 1
    if b > src_h - 1: t -= b - src_h + 1; b = src_h - 1
    return int(l), int(t), int(r), int(b)
crops, names, confs = {2.7: [], 4.0: []}, [], []
for path in json.loads(open(listing).read()):
    img = cv2.imread(path)
    bbox, conf = get_bbox(img)
    if conf < 0.6 or bbox[2] < 8 or bbox[3] < 8:  # the detector's own confidence bar
        continue
    for s in crops:
        l, t, r, b = new_box(img.shape[1], img.shape[0], bbox, s)
        crops[s].append(cv2.resize(img[t:b + 1, l:r + 1], (80, 80)).transpose(2, 0, 1).astype(np.float32))
    names.append(path.split("/")[-1]); confs.append(conf)
np.savez(dest, v2=np.stack(crops[2.7]), v1se=np.stack(crops[4.0]), names=np.array(names),
         conf=np.array(confs))
"""


def fas_export(name: str, out: Path) -> None:
    src = out / "fasnet_src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "MiniFASNet.py").write_bytes(git_file(FAS_REPO, "src/model_lib/MiniFASNet.py"))
    ckpt, cls, _ = FAS[name]
    (src / Path(ckpt).name).write_bytes(git_file(FAS_REPO, ckpt))
    subprocess.run([TORCH_PY, "-c", _FAS_EXPORT, str(out), str(src), name, str(src / Path(ckpt).name), cls],
                   check=True)  # fmt: skip


@cache
def faces(out: Path) -> dict[str, np.ndarray]:
    """Face crops (BGR 0-255, 80 x 80) at scale 2.7 (``v2``) and 4.0 (``v1se``) of every image with
    a face the project's RetinaFace finds at confidence >= 0.6 (its own bar): the 3 sample images
    and the 88 frames of the demo animation of Silent-Face-Anti-Spoofing (a phone held to the camera
    and live faces), and 23 photographs of ageitgey/face_recognition's examples and tests."""
    npz = out / "fasnet_faces.npz"
    if not npz.exists():
        from PIL import Image  # noqa: PLC0415

        src = out / "fasnet_src" / "images"
        src.mkdir(parents=True, exist_ok=True)
        paths = []
        for f in ("image_F1.jpg", "image_F2.jpg", "image_T1.jpg"):
            (src / f).write_bytes(git_file(FAS_REPO, f"images/sample/{f}"))
            paths.append(str(src / f))
        (src / "demo.gif").write_bytes(git_file(FAS_REPO, "images/demo.gif"))
        gif = Image.open(src / "demo.gif")
        for i in range(gif.n_frames):
            gif.seek(i)
            gif.convert("RGB").save(src / f"demo_{i:03d}.png")
            paths.append(str(src / f"demo_{i:03d}.png"))
        for i, f in enumerate(FR_IMAGES):
            dest = src / f"fr_{i:02d}_{Path(f).name}"
            dest.write_bytes(git_file(FR_REPO, f))
            paths.append(str(dest))
        for f in ("deploy.prototxt", "Widerface-RetinaFace.caffemodel"):
            (src / f).write_bytes(git_file(FAS_REPO, f"resources/detection_model/{f}"))
        (src / "list.json").write_text(json.dumps(paths))
        subprocess.run([CV_PY, "-c", _FAS_CROP, str(src / "deploy.prototxt"),
                        str(src / "Widerface-RetinaFace.caffemodel"), str(src / "list.json"), str(npz)],
                       check=True)  # fmt: skip
    z = np.load(npz)
    return {k: z[k] for k in z.files}


def d_faces(key: str) -> Maker:
    def d_face(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
        """face crops 80 x 80 (BGR 0-255) of Silent-Face-Anti-Spoofing's samples and demo frames and
        face_recognition's photographs, found by the project's RetinaFace, cropped as its CropImage"""
        f = faces(out)[key]
        return {"input": f[r.permutation(len(f))[:n]][:, None]}

    return d_face


def fas_task(name: str, model: Path, out: Path, other: Path | None = None) -> dict[str, Any]:
    """The project's decision (test.py): argmax of the two models' summed softmax, label 1 = real
    face, 0 and 2 fake; the file in place of its fp32 graph, the other model fp32 (or ``other``)."""
    f = faces(out)

    def probs(path: Path, key: str) -> np.ndarray:
        s = _session(path)
        z = np.concatenate([s.run(None, {"input": x[None]})[0] for x in f[key]])
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    keys = {"fasnet_v2": "v2", "fasnet_v1se": "v1se"}
    ref = {n: probs(out / f"{n}.onnx", k) for n, k in keys.items()}
    got = dict(ref, **{name: probs(model, keys[name])})
    if other is not None:
        rest = next(n for n in keys if n != name)
        got[rest] = probs(other, keys[rest])
    a, b = sum(ref.values()), sum(got.values())
    one_ref, one_got = ref[name].argmax(1), got[name].argmax(1)
    real_a, real_b = a.argmax(1) == 1, b.argmax(1) == 1  # test.py: label 1 "Real Face", else "Fake Face"
    return {"faces": len(a), "decision_same_as_fp32": float(np.mean(real_a == real_b)),
            "class_same_as_fp32": float(np.mean(a.argmax(1) == b.argmax(1))),
            "fake_to_real": int(np.sum(~real_a & real_b)), "real_to_fake": int(np.sum(real_a & ~real_b)),
            "real_share_fp32": float(np.mean(a.argmax(1) == 1)),
            "real_share": float(np.mean(b.argmax(1) == 1)),
            "max_abs_real_score": float(np.max(np.abs(a[:, 1] - b[:, 1]) / 2)),
            "mean_abs_real_score": float(np.mean(np.abs(a[:, 1] - b[:, 1]) / 2)),
            "single_model_label_same": float(np.mean(one_ref == one_got))}  # fmt: skip


# ---------------------------------------------------------------------------------------------

WHAT = ("NanoTrack v2 Siamese single-object tracker (GitHub HonglinChu/SiamTrackers, the ONNX files "
        "its project exports, opset 14, IR 7; OpenCV's TrackerNano runs them)")
MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "nanotrack_backbone": (NT_REPO[0], FILES["nanotrack_backbone"],
                           WHAT + ": backbone (MobileNetV3 small), BGR 0-255 crop [1, 3, 255, 255] -> "
                           "features [1, 48, 16, 16] (input size fixed at 255; the tracker also runs it "
                           "on the 127 template)",
                           d_backbone, {"kind": "cosine", "output": 0}),
    "nanotrack_head": (NT_REPO[0], FILES["nanotrack_head"],
                       WHAT + ": head, two inputs: template features input1 [1, 48, 8, 8] + search "
                       "features input2 [1, 48, 16, 16] -> class logits output1 [1, 2, 16, 16], box "
                       "distances output2 [1, 4, 16, 16]",
                       _d_head(2), {"kind": "cosine", "output": 0}),
    "nanotrack3_head": (NT_REPO[0], FILES["nanotrack3_head"],
                        WHAT.replace("v2", "v3").replace(", opset 14", " (not simplified), opset 14")
                        + ": head, input1 [1, 96, 8, 8] + input2 [1, 96, 16, 16] -> output1 [1, 2, 15, 15], "
                        "output2 [1, 4, 15, 15]",
                        _d_head(3), {"kind": "cosine", "output": 0}),
    "fasnet_v2": (FAS_REPO[0], FAS["fasnet_v2"][0],
                  "MiniFASNetV2 face anti-spoofing classifier (Silent-Face-Anti-Spoofing, 2.7x face crop; "
                  "exported here with torch 2.13, opset 17): BGR 0-255 [1, 3, 80, 80] -> logits [1, 3] "
                  "(1 = real face)",
                  d_faces("v2"), {"kind": "top1", "output": 0}),
    "fasnet_v1se": (FAS_REPO[0], FAS["fasnet_v1se"][0],
                    "MiniFASNetV1SE face anti-spoofing classifier (squeeze-excitation; 4.0x face crop; "
                    "exported here with torch 2.13, opset 17): as fasnet_v2",
                    d_faces("v1se"), {"kind": "top1", "output": 0}),
}  # fmt: skip
SHA256: dict[str, str] = {
    "fasnet_v2": "df75c2d33b07a211371c78008c9f0eed0936d9d589fa900dbfe37dd1f7f3360a",
    "fasnet_v1se": "46b0f6f5a9be2e9bee80cd5365a5108af0e5c7c160812a0506fe13e672a29348",
    "nanotrack_backbone": "530bdd0cd00f19afab79a863e71ba71e3312395a5dc9151af675082bdaaa2fc4",
    "nanotrack_head": "0d8c0637be849f092cc7236cae02e55c8b9455ebe37ba50601d6115db4247cd9",
    "nanotrack3_head": "75357903be3f4817c965af16cb5a11fd32b1467f597a408405a98635ac63f61d",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    if name in FAS:
        for n in FAS:  # the task metric runs both (the project sums their softmax)
            if not (out / f"{n}.onnx").exists():
                fas_export(n, out)
        entry = manifest_entry(out, name, f"{name}.onnx", spec, mem, SHA256[name] if check else None, what,
                               lambda r, n: maker(r, n, out), maker.__doc__, metric,
                               Path(__file__).name)  # fmt: skip
        entry["source"] = (f"GitHub `{FAS_REPO[0]}`@{FAS_REPO[1][:8]}, `{mem}` "
                           "(exported to ONNX here with torch)")
        return entry
    pre = "nanotrack3" if _version(name) == 3 else "nanotrack"
    for n in (f"{pre}_backbone", f"{pre}_head"):  # the data are made with both fp32 graphs
        if not (out / f"{n}.onnx").exists():
            (out / f"{n}.onnx").write_bytes(git_file(NT_REPO, FILES[n]))
    entry = manifest_entry(out, name, f"{name}.onnx", spec, mem, SHA256[name] if check else None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    entry["source"] = f"GitHub `{NT_REPO[0]}`@{NT_REPO[1][:8]}, `{mem}` (the project's export, as shipped)"
    return entry


def _evaluate_option(ap: Any) -> Callable[[Any], bool]:
    ap.add_argument("--tracks", nargs=2, metavar=("NAME", "MODEL"),
                    help="only the tracking metric (no bench metric / latency)")
    ap.add_argument("--nt-e2e", nargs=2, metavar=("BACKBONE", "HEAD"),
                    help="only track with both NanoTrack v2 graphs replaced (both compressed, say)")

    ap.add_argument("--fas-e2e", nargs=2, metavar=("V2", "V1SE"),
                    help="only the anti-spoofing decision with both MiniFASNets replaced")

    def handle(args: Any) -> bool:
        if args.fas_e2e:
            res = fas_task("fasnet_v2", Path(args.fas_e2e[0]), args.out, Path(args.fas_e2e[1]))
            print(json.dumps({"v2": args.fas_e2e[0], "v1se": args.fas_e2e[1], **res}))
            return True
        if args.nt_e2e:
            PAIR.update(backbone=Path(args.nt_e2e[0]), head=Path(args.nt_e2e[1]))
            res = task("nanotrack_head", Path(args.nt_e2e[1]), args.out)
            print(json.dumps({"backbone": args.nt_e2e[0], "head": args.nt_e2e[1], **res}))
            return True
        if args.tracks:
            print(json.dumps(task(args.tracks[0], Path(args.tracks[1]), args.out)))
            return True
        if args.evaluate:
            name, model = args.evaluate
            res = evaluate(args.out, name, Path(model), args.latency_seconds)
            res.update(task(name, Path(model), args.out))
            print(json.dumps(res, ensure_ascii=False))
            return True
        return False

    return handle


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make, _evaluate_option)


if __name__ == "__main__":
    main()
