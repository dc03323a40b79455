"""Fetch the fourteenth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch14.md`` sweeps them (``bench_real_models.py --root DIR``).
Two are trained PyTorch checkpoints committed in public repositories, exported here as a torch
2.13 user would make them (``torch.onnx.export(model, args, path)`` at its defaults: the dynamo
exporter, its default opset, **the weights in an external ``.onnx.data`` file**), with the
repositories' own model code; two are ONNX files as their repositories commit them. Each source
file is pinned by sha256 (for the exports, the checkpoint; the export itself is re-made by torch):

- ``vit_mnist``: a Vision Transformer digit classifier
  (``GauravPBhagwat/Handwritten-Digit-Recognition-Using-CNN-And-Vision-Transformer``,
  ``vit_mnist.pth``: 7 x 7 patches, class token, 6 pre-norm residual blocks of 8-head einsum
  attention + GELU MLP, dim 64), exported with [1, 1, 28, 28]. The checkpoint was trained with
  the early vit-pytorch / MNIST-tutorial ViT, not the repository's later ``vit_mnist.py`` (which
  cannot load it): the class is written here from the checkpoint's keys (``_vit_classes``);
- ``kws_m5``: the PyTorch tutorial's M5 raw-waveform keyword spotter, trained on Speech Commands
  (35 words) (``Fei2661/COMSE6998_KWS_Project``, ``model/best_model.pth`` + the ``M5`` class of
  ``model/cnn_speech.ipynb``: four Conv1d + BatchNorm + MaxPool, 8 kHz), exported with [1, 1, 8000];
- ``kws_matchbox``: NeMo MatchboxNet 3x1x64 keyword spotter (33 classes), as committed
  (``Rumeysakeskin/Speech-Command-Recognition``, ``model/classification_model.onnx``: PyTorch
  1.11, opset 12; 64 MFCC x T frames in);
- ``imdb_embedder``: a Keras IMDB-sentiment embedding layer converted by tf2onnx 1.9.3
  (``WallarooLabs/Wallaroo_Tutorials``, ``.../onnx/imdb/embedder.onnx``: one Gather over a
  10000 x 8 table, 100 token ids (float) -> 800 features).

Data: both keyword spotters hear Speech Commands words (those of both label sets) spoken by
espeak-ng (several voices, speeds and pitches), placed at a random offset in one second of
16 kHz audio with noise at 5-30 dB SNR; ``kws_matchbox`` reads them as NeMo's MFCC preprocessor
makes them (in numpy: 25 ms Hann / 10 ms, 512-point FFT, 64 mels, log, DCT-II ortho, 101 frames
cropped / padded to 128), ``kws_m5`` as the tutorial feeds them (resampled to 8 kHz).
``vit_mnist`` reads digits drawn in 14 DejaVu / Liberation fonts (rotation, stroke, blur,
noise) through the repository's ``app.py`` preprocessing (threshold 128, bounding box, longest
side 20, centred in 28 x 28, normalised 0.1307 / 0.3081). ``imdb_embedder`` reads the
repository's 50 tokenized IMDB reviews (``data/test_data.json``) and 6 more made of halves of
two of them. Each metric is agreement with fp32.

    /work/venv-torch/bin/python scripts/unseen_models14.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models14.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import batch_cli  # noqa: E402
from unseen_models12 import _pinned, git_file  # noqa: E402
from unseen_models13 import _copy_tree, _named  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen14"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

VITREPO = ("GauravPBhagwat/Handwritten-Digit-Recognition-Using-CNN-And-Vision-Transformer",
           "6607d7c001400aba9e62b8b6968bc2d9b3191434")  # fmt: skip
M5REPO = ("Fei2661/COMSE6998_KWS_Project", "24c76a2eb04c378153b0987587c8010c7b232cd0")
MATCHBOX = ("Rumeysakeskin/Speech-Command-Recognition", "6b97362d14a29a082a7d94cb3998c10e149d64fe")
WALLAROO = ("WallarooLabs/Wallaroo_Tutorials", "78b790457565dda19b361fdd925dc3d4b9d69c27")
IMDB = "wallaroo-model-operations-tutorials/deploy/by-framework/onnx/imdb"

# ---------------------------------------------------------------------------------------------
# ViT MNIST


def _vit_classes() -> Any:
    """The ViT the checkpoint was trained with. Its keys (``transformer.layers.N.0.fn.norm``,
    ``.fn.fn.to_qkv`` 64 -> 192 without bias, ``.fn.fn.to_out`` a plain Linear, ``mlp_head.0`` /
    ``.2``, no ``conv_embed``) are those of the early vit-pytorch / MNIST-tutorial ViT
    (Residual(PreNorm(...)) blocks, attention scaled by dim ** -0.5), not the repository's later
    ``vit_mnist.py`` (PreNorm only, to_out Linear + Dropout, a conv stem, head LayerNorm), which
    cannot load it. Written from the keys; heads = 8 and scale dim ** -0.5 are the only split
    that reads the drawn digits well (81 % of 200, against 26-80 % for the other splits)."""
    import torch
    import torch.nn as nn
    from einops import rearrange

    class Residual(nn.Module):
        def __init__(self, fn: nn.Module) -> None:
            super().__init__()
            self.fn = fn

        def forward(self, x: Any) -> Any:
            return self.fn(x) + x

    class PreNorm(nn.Module):
        def __init__(self, dim: int, fn: nn.Module) -> None:
            super().__init__()
            self.norm, self.fn = nn.LayerNorm(dim), fn

        def forward(self, x: Any) -> Any:
            return self.fn(self.norm(x))

    class FeedForward(nn.Module):
        def __init__(self, dim: int, hidden: int) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

        def forward(self, x: Any) -> Any:
            return self.net(x)

    class Attention(nn.Module):
        def __init__(self, dim: int, heads: int) -> None:
            super().__init__()
            self.heads, self.scale = heads, dim**-0.5
            self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
            self.to_out = nn.Linear(dim, dim)

        def forward(self, x: Any) -> Any:
            q, k, v = rearrange(self.to_qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.heads)
            attn = (torch.einsum("bhid,bhjd->bhij", q, k) * self.scale).softmax(dim=-1)
            out = torch.einsum("bhij,bhjd->bhid", attn, v)
            return self.to_out(rearrange(out, "b h n d -> b n (h d)"))

    class ViT(nn.Module):
        def __init__(self, *, image_size: int, patch_size: int, num_classes: int, dim: int,
                     depth: int, heads: int, mlp_dim: int, channels: int = 1) -> None:  # fmt: skip
            super().__init__()
            n = (image_size // patch_size) ** 2
            self.patch_size = patch_size
            self.pos_embedding = nn.Parameter(torch.randn(1, n + 1, dim))
            self.patch_to_embedding = nn.Linear(channels * patch_size**2, dim)
            self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
            self.transformer = nn.Module()
            self.transformer.layers = nn.ModuleList(
                nn.ModuleList(
                    [
                        Residual(PreNorm(dim, Attention(dim, heads))),
                        Residual(PreNorm(dim, FeedForward(dim, mlp_dim))),
                    ]
                )  # fmt: skip
                for _ in range(depth)
            )
            self.mlp_head = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, num_classes))

        def forward(self, img: Any) -> Any:
            p = self.patch_size
            x = self.patch_to_embedding(rearrange(img, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p))
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embedding
            for attn, ff in self.transformer.layers:
                x = ff(attn(x))
            return self.mlp_head(x[:, 0])

    return ViT


def export_vit_mnist(out: Path, check: bool) -> None:
    import torch

    src = out / "vit_mnist_src"
    _copy_tree(VITREPO, ["vit_mnist.pth"], src)
    _pinned(out, "vit_mnist_src/vit_mnist.pth", SOURCE_SHA256["vit_mnist"] if check else None)
    model = _vit_classes()(image_size=28, patch_size=7, num_classes=10, dim=64, depth=6, heads=8, mlp_dim=128)
    model.load_state_dict(torch.load(src / "vit_mnist.pth", map_location="cpu"))
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(out / "vit_mnist.onnx"))


_TT = "/usr/share/fonts/truetype"
DIGIT_FONTS = [f"{_TT}/dejavu/{f}.ttf" for f in (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSansMono",
    "DejaVuSansCondensed-Oblique", "DejaVuSerifCondensed-Italic", "DejaVuSans-ExtraLight")] + [
    f"{_TT}/liberation/{f}.ttf" for f in (
    "LiberationSans-Regular", "LiberationSerif-Italic", "LiberationSerif-Bold", "LiberationMono-Bold",
    "LiberationSansNarrow-Italic", "LiberationMono-BoldItalic")]  # fmt: skip


def d_vit_mnist(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """digits 0-9 drawn in 14 DejaVu / Liberation fonts (rotation +-20 deg, stroke 0-4 px, blur,
    noise) through the repository's app.py preprocessing (threshold 128, bounding box, longest
    side 20, centred in 28 x 28, (x / 255 - 0.1307) / 0.3081), [1, 1, 28, 28]"""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    xs = []
    for k in range(n):
        img = Image.new("L", (160, 160), 0)
        font = ImageFont.truetype(DIGIT_FONTS[int(r.integers(len(DIGIT_FONTS)))], int(r.integers(70, 110)))
        ImageDraw.Draw(img).text((40, 20), str(k % 10), fill=255, font=font,
                                 stroke_width=int(r.integers(0, 5)), stroke_fill=255)  # fmt: skip
        img = img.rotate(float(r.uniform(-20, 20)), resample=Image.Resampling.BILINEAR)
        img = img.filter(ImageFilter.GaussianBlur(float(r.uniform(0, 2.5))))
        a = np.asarray(img, np.float32) + r.normal(0, float(r.uniform(0, 25)), (160, 160))
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).point(lambda v: 255 if v > 128 else 0)
        box = img.getbbox() or (0, 0, 160, 160)
        c = img.crop(box)
        s = 20 / max(c.size)
        c = c.resize((max(1, round(c.size[0] * s)), max(1, round(c.size[1] * s))), Image.Resampling.LANCZOS)
        final = Image.new("L", (28, 28), 0)
        final.paste(c, ((28 - c.size[0]) // 2, (28 - c.size[1]) // 2))
        x = (np.asarray(final, np.float32) / 255.0 - 0.1307) / 0.3081
        xs.append(x[None, None])
    return {"img": np.stack(xs)}


# ---------------------------------------------------------------------------------------------
# keyword spotting: spoken words

SC35 = ["backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four",
        "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right",
        "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes",
        "zero"]  # fmt: skip
VOICES = ["en-us", "en", "en-us+f3", "en+m3", "en-us+f2", "en+m7", "en-gb-x-rp", "en-us+m1"]


def _resample(x: np.ndarray, n_out: int) -> np.ndarray:
    """Band-limited resampling to n_out samples (FFT truncation / zero-padding)."""
    spec = np.fft.rfft(x)
    k = n_out // 2 + 1
    spec = spec[:k] if len(spec) >= k else np.pad(spec, (0, k - len(spec)))
    return np.fft.irfft(spec, n_out) * (n_out / len(x))


def _say(word: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", f.name, word],
                       check=True, capture_output=True)  # fmt: skip
        with wave.open(f.name) as w:
            sr = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64) / 32768.0
    x = _resample(x, int(round(len(x) * 16000 / sr)))
    nz = np.nonzero(np.abs(x) > 0.01)[0]
    return x[nz[0] : nz[-1] + 1] if len(nz) else x


def _clips(r: np.random.Generator, n: int) -> list[np.ndarray]:
    """n one-second 16 kHz clips: a Speech Commands word spoken by espeak-ng at a random offset,
    with white or pink noise at 5-30 dB SNR."""
    clips = []
    for k in range(n):
        word = SC35[(k * 11) % len(SC35)]  # every word once in 35 clips
        s = _say(
            word, VOICES[int(r.integers(len(VOICES)))], int(r.integers(120, 220)), int(r.integers(20, 80))
        )
        s = s[:15000] * float(r.uniform(0.3, 1.0)) / max(np.max(np.abs(s)), 1e-6)
        x = np.zeros(16000)
        st = int(r.integers(0, 16000 - len(s) + 1))
        x[st : st + len(s)] = s
        noise = r.normal(size=16000)
        if r.random() < 0.5:
            f = np.fft.rfftfreq(16000)
            noise = np.fft.irfft(np.fft.rfft(noise) / np.sqrt(np.maximum(f, 1 / 16000)), 16000)
        snr = float(r.uniform(5, 30))
        noise *= np.sqrt(np.mean(s**2) / max(np.mean(noise**2), 1e-12) / 10 ** (snr / 10))
        clips.append(x + noise)
    return clips


def _mfcc(x: np.ndarray) -> np.ndarray:
    """NeMo's AudioToMFCCPreprocessor at MatchboxNet's settings, in numpy (torchaudio's MFCC:
    25 ms periodic Hann window in a 512-point FFT, 10 ms hop, centred reflect padding, power
    spectrum, 64 HTK mels, 10*log10 (floor 1e-10, top_db 80), DCT-II ortho), cropped / padded
    to 128 frames."""
    n_fft, win, hop, n_mels = 512, 400, 160, 64
    w = np.zeros(n_fft)
    off = (n_fft - win) // 2
    w[off : off + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    xp = np.pad(x, n_fft // 2, mode="reflect")
    frames = np.stack([xp[j : j + n_fft] * w for j in range(0, len(xp) - n_fft + 1, hop)])
    p = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [T, 257]
    hz = np.linspace(0, 8000, 257)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    pts = 700 * (10 ** (np.linspace(mel(0), mel(8000), n_mels + 2) / 2595) - 1)
    fb = np.zeros((257, n_mels))
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        fb[:, m] = np.maximum(0, np.minimum((hz - lo) / (c - lo), (hi - hz) / (hi - c)))
    db = 10 * np.log10(np.maximum(p @ fb, 1e-10))
    db = np.maximum(db, db.max() - 80)
    k = np.arange(n_mels)
    dct = np.cos(np.pi / n_mels * (k[None, :] + 0.5) * k[:, None]) * np.sqrt(2 / n_mels)
    dct[0] /= np.sqrt(2)
    feat = (db @ dct.T).T  # [64, T]
    t = feat.shape[1]
    return np.pad(feat, ((0, 0), (0, 128 - t))) if t < 128 else feat[:, :128]


def d_kws_matchbox(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """Speech Commands words spoken by espeak-ng (8 voices, 120-220 wpm, pitch 20-80) in one
    second of 16 kHz audio with white / pink noise at 5-30 dB SNR, as NeMo's MFCC preprocessor
    makes them (64 MFCC, 10 ms frames, padded to 128), [1, 64, 128]"""
    return {"audio_signal": np.stack([_mfcc(c)[None].astype(np.float32) for c in _clips(r, n)])}


def d_kws_m5(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """the same spoken Speech Commands words, resampled to 8 kHz as the tutorial's
    torchaudio Resample, [1, 1, 8000]"""
    return {"x": np.stack([_resample(c, 8000)[None, None].astype(np.float32) for c in _clips(r, n)])}


def _m5_class(src: Path) -> str:
    nb = json.loads((src / "model/cnn_speech.ipynb").read_text())
    for c in nb["cells"]:
        s = "".join(c["source"])
        if "class M5(" in s:
            return s.split("\nmodel = M5(")[0]
    raise SystemExit("no M5 class in model/cnn_speech.ipynb")


def export_kws_m5(out: Path, check: bool) -> None:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    src = out / "kws_m5_src"
    _copy_tree(M5REPO, ["model/best_model.pth", "model/cnn_speech.ipynb"], src)
    _pinned(out, "kws_m5_src/model/best_model.pth", SOURCE_SHA256["kws_m5"] if check else None)
    ns: dict[str, Any] = {"nn": nn, "F": F, "torch": torch}
    exec(_m5_class(src), ns)  # the notebook's own class
    sd = torch.load(src / "model/best_model.pth", map_location="cpu")
    model = ns["M5"](n_input=1, n_output=sd["fc1.weight"].shape[0])
    model.load_state_dict(sd)
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 1, 8000),), str(out / "kws_m5.onnx"))


# ---------------------------------------------------------------------------------------------
# IMDB embedder


def d_imdb_embedder(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """the repository's 50 tokenized IMDB reviews (data/test_data.json: 100 token ids, zero
    padded, as float) and 6 more joining halves of two of them, [1, 100]"""
    rows = np.asarray(json.loads(git_file(WALLAROO, f"{IMDB}/data/test_data.json"))["tensor"], np.float32)
    extra = [np.concatenate([rows[int(r.integers(50))][:50], rows[int(r.integers(50))][50:]])
             for _ in range(max(0, n - len(rows)))]  # fmt: skip
    x = np.concatenate([rows, np.stack(extra)]) if extra else rows
    return {"input": x[r.permutation(len(x))][:n, None]}


# ---------------------------------------------------------------------------------------------
# cyberbullying tweet classifier (a BERT-style encoder)

CYBER = ("reginafeles/transformer", "15748d6089ca80c1d348436e92baf22e8cb76896")


def _cyber_checkpoint(out: Path) -> dict[str, Any]:
    import torch

    return torch.load(
        out / "cyberbully_src/model/transformer_classifier.pt", map_location="cpu", weights_only=False
    )


def export_cyberbully(out: Path, check: bool) -> None:
    import importlib.util

    import torch

    src = out / "cyberbully_src"
    _copy_tree(CYBER, ["model/load.py", "model/transformer_classifier.pt"], src)
    _pinned(
        out, "cyberbully_src/model/transformer_classifier.pt", SOURCE_SHA256["cyberbully"] if check else None
    )
    spec = importlib.util.spec_from_file_location("cyberbully_load", src / "model/load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    ck = _cyber_checkpoint(out)  # as its load_model (which reads a global ``device`` it never sets)
    model = mod.TransformerClassifier(len(ck["vocab"]), len(ck["class_to_idx"]))
    model.load_state_dict(ck["model_state_dict"])
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 32, dtype=torch.long),), str(out / "cyberbully.onnx"))


def d_cyberbully(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """tweet-length texts encoded by the repository's encode() (lower case, [a-z0-9 ] only,
    <CLS> + words, <UNK> outside its 10000-word vocabulary, <PAD> to 32): half are sentences of
    an English book (batch 12's mini-gpt data.txt), half draw 5-30 words from the vocabulary with
    Zipf weights (its own frequency order), [1, 32] int64"""
    import re

    from unseen_models12 import _gpt_text

    vocab = _cyber_checkpoint(out)["vocab"]
    words = [w for w in vocab if not w.startswith("<")]
    zipf = 1.0 / np.arange(1, len(words) + 1)
    sents = [t.strip() for t in re.split(r"[.!?]\s", _gpt_text()) if len(t.split()) >= 4]
    xs = []
    for k in range(n):
        if k % 2 == 0:
            text = sents[int(r.integers(len(sents)))]
        else:
            text = " ".join(r.choice(words, int(r.integers(5, 31)), p=zipf / zipf.sum()))
        toks = ["<CLS>", *re.sub(r"[^a-z0-9\s]", "", text.lower()).split()]
        ids = [vocab.get(t, vocab["<UNK>"]) for t in toks][:32]
        xs.append(ids + [vocab["<PAD>"]] * (32 - len(ids)))
    return {"x": np.array(xs, np.int64)[:, None]}


# ---------------------------------------------------------------------------------------------
# botnet flow classifier (a tabular transformer)

BOTNET = ("Poorvii24/Mini-Project", "7fa4f5b294d075191900dc79c543b9e295a7b39d")
FLOW_COLUMNS = ["Duration", "Proto", "Sport", "Dir", "Dport", "State", "sTos", "dTos", "TotPkts",
                "TotBytes", "SrcBytes", "BytesPerSec", "PktsPerSec", "AvgPktSize", "SrcByteRatio",
                "Sport_is_priv", "Dport_is_priv"]  # fmt: skip


def export_botnet(out: Path, check: bool) -> None:
    import ast

    import torch
    import torch.nn as nn

    src = out / "botnet_src"
    _copy_tree(BOTNET, ["app.py", "models/transformer_classifier.pt"], src)
    _pinned(out, "botnet_src/models/transformer_classifier.pt", SOURCE_SHA256["botnet"] if check else None)
    code = (src / "app.py").read_text()
    cls = next(
        n for n in ast.parse(code).body if isinstance(n, ast.ClassDef) and n.name == "TransformerClassifier"
    )
    ns: dict[str, Any] = {"nn": nn, "torch": torch}
    exec(ast.get_source_segment(code, cls), ns)  # app.py's own class (the app imports streamlit)
    model = ns["TransformerClassifier"](input_dim=17)
    model.load_state_dict(torch.load(src / "models/transformer_classifier.pt", map_location="cpu"))
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 17),), str(out / "botnet.onnx"))


def d_botnet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """NetFlow records of the repository's processed CTU-13 captures (processed/scenario_5, 7
    and 11.parquet: the 17 features its model reads), robust-scaled over each capture as app.py
    scales an uploaded capture (sklearn RobustScaler: median, 25-75 % range), half of them
    botnet flows, [1, 17] (needs pyarrow)"""
    import pyarrow.parquet as pq

    rows, labels = [], []
    for k in (5, 7, 11):
        t = pq.read_table(io.BytesIO(git_file(BOTNET, f"processed/scenario_{k}.parquet"))).to_pydict()
        f = np.stack([np.asarray(t[c], np.float64) for c in FLOW_COLUMNS], 1)
        med, q1, q3 = np.median(f, 0), np.percentile(f, 25, 0), np.percentile(f, 75, 0)
        rows.append((f - med) / np.where(q3 > q1, q3 - q1, 1.0))  # app.py's RobustScaler over the capture
        labels.append(np.asarray(t["BinaryLabel"]))
    x, y = np.concatenate(rows), np.concatenate(labels)
    bot, normal = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
    nb = min(len(bot), n // 2)
    pick = np.concatenate([r.choice(bot, nb, replace=False), r.choice(normal, n - nb, replace=False)])
    return {"x": x[r.permutation(pick)].astype(np.float32)[:, None]}


# ---------------------------------------------------------------------------------------------
# house-price random forest (skl2onnx)

HOUSE = "wallaroo-model-operations-tutorials/management/abtesting"


def d_house_rf(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """rows of the repository's house-price test set (data/xtest-1k.csv: 1000 King County houses,
    18 features: bedrooms, bathrooms, living / lot area, floors, ..., latitude, longitude), [1, 18]"""
    import csv

    text = git_file(WALLAROO, f"{HOUSE}/data/xtest-1k.csv").decode()
    rows = np.array([json.loads(row["tensor"]) for row in csv.DictReader(io.StringIO(text))], np.float32)
    return {"float_input": rows[r.choice(len(rows), n, replace=False)][:, None]}


# ---------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[Any, str, str, Maker, dict[str, Any]]] = {
    "vit_mnist": (
        VITREPO,
        "vit_mnist.pth",
        "ViT digit classifier (7x7 patches, 6 blocks of 8-head attention, dim 64), torch 2.13, external data",
        d_vit_mnist,
        {"kind": "top1", "output": 0},
    ),
    "kws_m5": (
        M5REPO,
        "model/best_model.pth",
        "M5 raw-waveform keyword spotter (4 Conv1d, Speech Commands 35 words), torch 2.13, external data",
        d_kws_m5,
        {"kind": "top1", "output": 0},
    ),
    "kws_matchbox": (
        MATCHBOX,
        "model/classification_model.onnx",
        "NeMo MatchboxNet 3x1x64 keyword spotter (33 classes; PyTorch 1.11, opset 12; MFCC in)",
        d_kws_matchbox,
        {"kind": "top1", "output": 0},
    ),
    "imdb_embedder": (
        WALLAROO,
        f"{IMDB}/embedder.onnx",
        "Keras IMDB embedding (Gather over 10000 x 8, tf2onnx 1.9.3, opset 13; 100 ids -> 800)",
        d_imdb_embedder,
        {"kind": "cosine", "output": 0},
    ),
    # the predicted class of 6 (age, ethnicity, gender, not / other cyberbullying, religion)
    "cyberbully": (
        CYBER,
        "model/transformer_classifier.pt",
        "BERT-style tweet classifier (embedding 10003 x 64, 2 encoder layers), torch 2.13, ext. data",
        d_cyberbully,
        {"kind": "top1", "output": 0},
    ),
    # botnet / normal per flow
    "botnet": (
        BOTNET,
        "models/transformer_classifier.pt",
        "tabular transformer botnet detector (Linear 17 -> 128, 2 encoder layers), torch 2.13, ext. data",
        d_botnet,
        {"kind": "top1", "output": 0},
    ),
    # predicted price within $500 of fp32's (a tree ensemble: weights in node attributes)
    "house_rf": (
        WALLAROO,
        f"{HOUSE}/models/rf_model.onnx",
        "skl2onnx 1.14 RandomForestRegressor, house prices (TreeEnsembleRegressor, 18 features; opset 15)",
        d_house_rf,
        {"kind": "within", "output": 0, "tol": 500.0},
    ),
}
SOURCE_SHA256 = {
    "vit_mnist": "c54476e265815add5ee9261011e03b143c92390358ea4109d81c4b22e855cc58",
    "kws_m5": "c96d1a55ba07a1cad4b3f94c98e6eed5deeea1d0f77273aeba02691ee134759d",
    "cyberbully": "60667a05c642292a96edf702830ea85be1fb49af56bf606dddeabe594020ff5c",
    "botnet": "fa8241ba4ae5319f696d9977529837804119c03cab497d979e020ea8e7204845",
}
SHA256: dict[str, str] = {
    "kws_matchbox": "643953543e3754b08353b5929415115db48702f5704ef977642ee1596914aba2",
    "imdb_embedder": "d083fd87fa84451904f71ab8b9adfa88580beb92ca77c046800f79780a20b7e4",
    "house_rf": "e22a0831aafd9917f3cc87a15ed267797f80e2afa12ad7d8810ca58f173b8cc6",
}
EXPORTS = {
    "vit_mnist": export_vit_mnist,
    "kws_m5": export_kws_m5,
    "cyberbully": export_cyberbully,
    "botnet": export_botnet,
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    src, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    spec = f"{src[0]}@{src[1][:7]}"
    if name in EXPORTS:
        if not dest.exists():
            EXPORTS[name](out, check)
        entry = manifest_entry(out, name, dest.name, spec, mem, None, what, _named(maker, out, name),
                               maker.__doc__, metric, Path(__file__).name)  # fmt: skip
        sha = SOURCE_SHA256[name]
        entry["source"] = f"GitHub `{spec}`, `{mem}` (sha256 {sha[:12]}), exported by torch 2.13 defaults"
        return entry
    if not dest.exists():
        dest.write_bytes(git_file(src, mem))
    sha = SHA256.get(name) if check else None
    entry = manifest_entry(out, name, dest.name, spec, mem, sha, what, _named(maker, out, name),
                           maker.__doc__, metric, Path(__file__).name)  # fmt: skip
    entry["source"] = f"GitHub `{spec}`, `{mem}`"
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
