"""Fetch the thirty-eighth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch38.md`` sweeps them (``bench_real_models.py --root DIR``).
A kind no earlier batch had (batch 37 asked for a time-series classifier and found none): time-series
classifiers on real sensor recordings, judged in the task's own terms:

- ``ecg_beat``: **ECG heartbeat (arrhythmia) classifier, AAMI classes N / S / V / F / Q**, as its
  author ships it: GitHub ``adii11001/Arrhythmia-detection-model`` (``ecg_model.onnx``, exported
  by torch 2.5.1, IR 6 / opset 11, 15.6k parameters, 63 KB; built for an Arduino Nano 33 BLE).
  One lead (MLII), 256 samples at 360 Hz (0.71 s) centred on the R peak, z-scored per beat ->
  Conv1d 16/32/64 (k5) + ReLU + MaxPool x3 -> global average pool -> Gemm 64->32 -> Gemm 32->5
  logits. Trained on all 48 MIT-BIH records with a random 70/15/15 beat split (``main.py``), so the
  record used here was partly seen in training: the task numbers below measure agreement with
  fp32 and with the cardiologists' labels, not generalisation.
- ``imu_bilstm`` / ``imu_cnn3``: **IMU gesture classifiers (circle / misc)** of GitHub
  ``PadmanabhaKavasseri/sensorAI`` (``results/models/best_lstm_model.pth``,
  ``best_gesturereccnn_v3_model.pth``, state dicts of ``model_defs/model_defs.py``; exported here
  with torch 2.13, opset 17, fixed batch 1): accelerometer + gyroscope [1, 200, 6] (4 s at 50 Hz,
  z-scored per window and channel) -> 2 logits. imu_bilstm: 2-layer bidirectional LSTM 128 +
  additive attention pooling + MLP (601,730 parameters); imu_cnn3: three Conv1d branches k3 / k7 /
  k15 + BN + pool, 1x1 fusion, sigmoid attention, Conv1d 256, MLP (173,730 parameters).

Data: real ECG. Record 100 of the MIT-BIH Arrhythmia Database (30 min, two leads, format 212) as
``MIT-LCP/wfdb-python`` commits it in ``sample-data/`` (100.dat / 100.hea / 100.atr), read here in
numpy (format 212 and the MIT annotation format, no wfdb): every annotated beat whose symbol the
repository's ``AAMI_MAP`` knows and whose 256-sample window fits, segmented and z-scored exactly as
``preprocessing.loading_and_segmenting`` (2,271 beats: 2,237 N, 33 S (A), 1 V). Calibration and eval
samples are drawn from these beats (seeded), the 34 non-N beats first in the pool so that the
rare classes are represented. IMU: every 4 s window (stride 1 s) of the repository's
``sensor_data/*.csv`` recordings (76 of 78 are in the snapshot; 355 windows), label from the file
name as ``util/pp.py`` (``circle*`` -> circle, the rest -> misc).

``--evaluate`` adds the task metrics over all 2,271 beats: share of beats whose class equals fp32's,
accuracy against the annotation (AAMI class), recall of the S (atrial premature) beats, and the
number of beats the model calls non-N. IMU: over all 355 windows, share whose class equals
fp32's and accuracy against the file's label.

    /work/venv/bin/python scripts/unseen_models38.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models38.py --evaluate NAME MODEL
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import batch_cli, evaluate  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen38"
MIRRORS = Path("/work/.mirror")
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]
ECG_REPO = ("adii11001/Arrhythmia-detection-model", "cfd8bdd7cb42e57b2f24758685c44fc7788c9807")
WFDB = ("MIT-LCP/wfdb-python", "6850ad1aa0c1fcb2282b3625f767de98396cf740")
SENSORAI = ("PadmanabhaKavasseri/sensorAI", "731d02b12ade0bc5690e6d7f9ce64d7c150a85ca")
TORCH_PY = "/work/venv-torch/bin/python"


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


# ---------------------------------------------------------------------------------------------
# ECG beat classifier (MIT-BIH record 100)

WINDOW = 256
AAMI = ["N", "S", "V", "F", "Q"]
AAMI_MAP = {"N": "N", "L": "N", "R": "N", "e": "N", "j": "N", "A": "S", "a": "S", "J": "S", "S": "S",
            "V": "V", "E": "V", "F": "F", "/": "Q", "f": "Q", "Q": "Q"}  # the repository's Config
# MIT annotation codes (ecgcodes.h) -> symbols, the ones a beat can have
CODES = {1: "N", 2: "L", 3: "R", 4: "a", 5: "V", 6: "F", 7: "J", 8: "A", 9: "S", 10: "E", 11: "j",
         12: "/", 13: "Q", 34: "e", 36: "f"}  # fmt: skip


def read_212(data: bytes, n_sig: int) -> np.ndarray:
    """Format 212 (two 12-bit two's-complement samples in three bytes), [n, n_sig] ADC units."""
    b = np.frombuffer(data, np.uint8)[: len(data) // 3 * 3].reshape(-1, 3).astype(np.int32)
    s0 = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
    s1 = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
    s = np.stack([s0, s1], 1).reshape(-1)
    s = np.where(s > 2047, s - 4096, s)
    return s[: len(s) // n_sig * n_sig].reshape(-1, n_sig)


def read_atr(data: bytes) -> tuple[np.ndarray, list[str]]:
    """MIT annotation file: (sample, symbol) of every beat annotation (SKIP / NUM / SUB / CHN /
    AUX words honoured; non-beat codes dropped)."""
    w = np.frombuffer(data, "<u2")
    i, t, samples, symbols = 0, 0, [], []
    while i < len(w):
        code, interval = int(w[i]) >> 10, int(w[i]) & 0x3FF
        if code == 0 and interval == 0:
            break
        if code == 59:  # SKIP: 32-bit interval, high word first
            t += int(np.int32(np.uint32((int(w[i + 1]) << 16) | int(w[i + 2]))))
            i += 3
            continue
        if code == 63:  # AUX string of `interval` bytes
            i += 1 + (interval + 1) // 2
            continue
        if code in (60, 61, 62):
            i += 1
            continue
        t += interval
        if code in CODES:
            samples.append(t)
            symbols.append(CODES[code])
        i += 1
    return np.asarray(samples), symbols


@cache
def ecg_beats() -> tuple[np.ndarray, np.ndarray]:
    """All beats of record 100 the repository would keep: [n, 1, 256] z-scored MLII windows, AAMI ids."""
    hea = git_file(WFDB, "sample-data/100.hea").decode().split("\n")
    fields = [ln.split() for ln in hea if ln.startswith("100.dat")]
    gain, baseline = float(fields[0][2]), int(fields[0][4])
    sig = (read_212(git_file(WFDB, "sample-data/100.dat"), len(fields))[:, 0] - baseline) / gain
    samples, symbols = read_atr(git_file(WFDB, "sample-data/100.atr"))
    half, x, y = WINDOW // 2, [], []
    for s, sym in zip(samples, symbols, strict=True):
        if sym in AAMI_MAP and s >= half and s + half <= len(sig):
            seg = sig[s - half: s + half]
            x.append((seg - seg.mean()) / (seg.std() + 1e-8))
            y.append(AAMI.index(AAMI_MAP[sym]))
    return np.asarray(x, np.float32)[:, None, :], np.asarray(y)


def ecg_export(out: Path) -> None:
    (out / "ecg_beat.onnx").write_bytes(git_file(ECG_REPO, "ecg_model.onnx"))


def d_ecg(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """Beats of MIT-BIH record 100 (MLII, 256 samples around each annotated R peak, z-scored)."""
    x, y = ecg_beats()
    rare = np.flatnonzero(y != 0)
    common = r.permutation(np.flatnonzero(y == 0))
    pick = np.concatenate([r.permutation(rare)[: n // 4], common])[:n]
    return {"input_ecg": x[r.permutation(pick)][:, None]}  # [n, batch 1, 1, 256]


def _ecg_task(ref: Path, model: Path) -> dict[str, Any]:
    x, y = ecg_beats()
    a = _session(ref).run(None, {"input_ecg": x})[0].argmax(1)
    b = _session(model).run(None, {"input_ecg": x})[0].argmax(1)
    s = y == 1
    return {"beats": len(y), "same_class_as_fp32": float(np.mean(a == b)),
            "accuracy_fp32": float(np.mean(a == y)), "accuracy": float(np.mean(b == y)),
            "s_recall_fp32": float(np.mean(a[s] == 1)), "s_recall": float(np.mean(b[s] == 1)),
            "non_n_calls_fp32": int(np.sum(a != 0)), "non_n_calls": int(np.sum(b != 0))}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# IMU gesture classifiers (sensorAI)

IMU_WINDOW, IMU_STRIDE = 200, 50  # 4 s and 1 s at 50 Hz (util/pp.py)
IMU_CLASSES = ["circle", "misc"]  # LabelEncoder order: files named circle* -> circle, the rest -> misc
IMU_FILES = {"imu_bilstm": "results/models/best_lstm_model.pth",
             "imu_cnn3": "results/models/best_gesturereccnn_v3_model.pth"}

_IMU_CHILD = r"""
import sys
out, src, name, ckpt = sys.argv[1:5]
sys.path.insert(0, src)
import torch
from model_defs import LSTMGestureModel, GestureRecCNN_V3
m = (LSTMGestureModel if name == "imu_bilstm" else GestureRecCNN_V3)(input_size=6, num_classes=2)
print(m.load_state_dict(torch.load(ckpt, map_location="cpu"), strict=True))
m.eval()
torch.onnx.export(m, (torch.zeros(1, 200, 6),), out + "/" + name + ".onnx", input_names=["imu"],
                  output_names=["logits"], opset_version=17, dynamo=False)
"""


def imu_export(name: str, out: Path) -> None:
    src = out / "sensorai_src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "model_defs.py").write_bytes(git_file(SENSORAI, "model_defs/model_defs.py"))
    ckpt = src / Path(IMU_FILES[name]).name
    ckpt.write_bytes(git_file(SENSORAI, IMU_FILES[name]))
    subprocess.run([TORCH_PY, "-c", _IMU_CHILD, str(out), str(src), name, str(ckpt)], check=True, cwd=out)


@cache
def imu_windows() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every 4 s window (stride 1 s) of the repository's recordings of 200+ samples, z-scored per
    window and channel as ``util/pp.py``: [n, 200, 6] float32, labels, file of each window."""
    mirror = MIRRORS / SENSORAI[0].replace("/", "+") / "repo"
    names = subprocess.run(["git", "-C", str(mirror), "ls-tree", "--name-only", SENSORAI[1], "sensor_data/"],
                           check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
    x, y, src = [], [], []
    for f in sorted(n for n in names if n.endswith(".csv")):
        try:
            text = git_file(SENSORAI, f).decode()
        except subprocess.CalledProcessError:  # circle_fast_small_cw_4, circle_multi_cw_0: not in it
            continue
        rows = [ln.split(",") for ln in text.splitlines()[1:]]
        data = np.asarray([[float(v) for v in r[1:7]] for r in rows if len(r) >= 7 and r[0]], np.float64)
        for start in range(0, len(data) - IMU_WINDOW + 1, IMU_STRIDE):
            w = data[start: start + IMU_WINDOW]
            sd = w.std(0)
            sd[sd == 0] = 1
            x.append((w - w.mean(0)) / sd)
            y.append(0 if Path(f).name.startswith("circle") else 1)
            src.append(Path(f).name)
    return np.asarray(x, np.float32), np.asarray(y), src


def d_imu(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """4 s IMU windows (accel xyz + gyro xyz at 50 Hz, z-scored) of the repository's 77 recordings"""
    x, _, _ = imu_windows()
    return {"imu": x[r.choice(len(x), n, replace=False)][:, None]}  # [n, batch 1, 200, 6]


def _imu_task(ref: Path, model: Path) -> dict[str, Any]:
    x, y, src = imu_windows()
    sa, sb = _session(ref), _session(model)  # the export takes one window at a time
    a = np.concatenate([sa.run(None, {"imu": x[i: i + 1]})[0] for i in range(len(x))]).argmax(1)
    b = np.concatenate([sb.run(None, {"imu": x[i: i + 1]})[0] for i in range(len(x))]).argmax(1)
    return {"windows": len(y), "files": len(set(src)), "same_class_as_fp32": float(np.mean(a == b)),
            "accuracy_fp32": float(np.mean(a == y)), "accuracy": float(np.mean(b == y))}  # fmt: skip


# ---------------------------------------------------------------------------------------------


def task(name: str, model: Path, out: Path) -> dict[str, Any]:
    if name == "ecg_beat":
        return _ecg_task(out / f"{name}.onnx", model)
    return _imu_task(out / f"{name}.onnx", model)


MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "ecg_beat": (ECG_REPO[0], "ecg_model.onnx",
                 "ECG heartbeat classifier, AAMI N/S/V/F/Q (as shipped: torch 2.5.1 export, IR 6, opset 11, "
                 "15.6k params): MLII beat [1, 1, 256] at 360 Hz, z-scored -> 3 x (Conv1d k5 + ReLU + "
                 "MaxPool) -> global average pool -> Gemm 64->32 -> Gemm 32->5 logits",
                 d_ecg, {"kind": "top1", "output": 0}),
    "imu_bilstm": (SENSORAI[0], IMU_FILES["imu_bilstm"],
                   "IMU gesture classifier circle / misc (2-layer bidirectional LSTM 128 + additive "
                   "attention pooling + MLP; exported here with torch 2.13, opset 17): accel + gyro "
                   "[1, 200, 6] (4 s at 50 Hz, z-scored per window) -> 2 logits",
                   d_imu, {"kind": "top1", "output": 0}),
    "imu_cnn3": (SENSORAI[0], IMU_FILES["imu_cnn3"],
                 "IMU gesture classifier circle / misc (GestureRecCNN_V3: three Conv1d branches k3/k7/k15 "
                 "+ BN + pool, adaptive pool to 100, 1x1 fusion, sigmoid channel attention, Conv1d 256, "
                 "MLP; exported here with torch 2.13, opset 17): [1, 200, 6] -> 2 logits",
                 d_imu, {"kind": "top1", "output": 0}),
}  # fmt: skip
SHA256: dict[str, str] = {
    "ecg_beat": "031b5dd65e805039d66744ce1d7041742baf557eeee9b3f1864dd97c1e2118a7",
    "imu_bilstm": "2f75866678a37603bd5c5c0cf3e4bff088b01ad640ea2366014c17129ba8be00",
    "imu_cnn3": "d5f1bcd79d4cdfff48a7d5adebd7876409ab1ff0e28085f8277c4372e712088b",
}
EXPORTS: dict[str, Callable[[Path], None]] = {"ecg_beat": ecg_export,
                                               "imu_bilstm": lambda out: imu_export("imu_bilstm", out),
                                               "imu_cnn3": lambda out: imu_export("imu_cnn3", out)}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        EXPORTS[name](out)
    entry = manifest_entry(out, name, dest.name, spec, mem, SHA256[name] if check else None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    if name == "ecg_beat":
        entry["source"] = f"GitHub `{ECG_REPO[0]}`@{ECG_REPO[1][:8]}, `{mem}` (as shipped)"
    else:
        entry["source"] = (f"GitHub `{SENSORAI[0]}`@{SENSORAI[1][:8]}, `{mem}` "
                           "(exported to ONNX here with torch)")
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
