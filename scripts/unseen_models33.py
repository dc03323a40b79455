"""Fetch the thirty-third batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch33.md`` sweeps them (``bench_real_models.py --root DIR``).
**Old exports** (IR 3-6, opsets 7-11), all shipped as sample assets of GitHub
``microsoft/Windows-Machine-Learning`` (Windows ML's samples):

- ``fns_candy``: Fast Neural Style "candy" (``Samples/FNSCandyStyleTransfer/UWP/cs/Assets/candy.onnx``,
  OnnxMLTools 0.1 from Core ML, **IR 3, opset 7**), with the experimental ops later removed from
  ONNX (``ImageScaler``, ``Crop`` x7, ``Affine``) beside Conv / InstanceNormalization /
  ConvTranspose: an RGB image [1, 3, 720, 720] in 0..255 -> the stylised image.
- ``mnist_cntk``: the ONNX Model Zoo MNIST CNN as CNTK 2.5.1 wrote it (``Samples/MNIST/UWP/cs/Assets/
  mnist.onnx``, **IR 3, opset 7**): [1, 1, 28, 28] in 0..255 -> 10 logits.
- ``cifar_cnn``: the Windows ML PyTorch tutorial's CIFAR-10 classifier (``Samples/Tutorial Samples/
  PyTorch Image Classification/...ImageClassifier.onnx``, PyTorch 1.7, **IR 6, opset 10**):
  [1, 3, 32, 32] normalised to [-1, 1] -> 10 logits.
- ``iris_mlp``: the Windows ML PyTorch data-analysis tutorial's Iris classifier (``.../PyTorch
  Training - Data Analysis/Network.onnx``, PyTorch 1.7, **IR 6, opset 11**): 3 Gemms, [1, 4] -> 3.

Data: real inputs. Images are random crops of the repository's own photos (``fish_720.png``,
``DefaultImage.jpg``, ``fish.png``, ``hummingbird.jpg``, ``kitten.png``); MNIST digits are
scikit-learn's handwritten digits (8x8, 0..16) drawn 20x20 into a 28x28 frame at 0..255; Iris
rows come from the tutorial's own ``Iris.csv`` (150 rows).

``--evaluate`` adds the task metrics: candy the PSNR of the stylised image against fp32's on the
eval crops; MNIST top-1 agreement and accuracy on all 1797 scikit-learn digits; CIFAR top-1
agreement with fp32 on 1000 crops; Iris agreement and accuracy on the 150 rows.

    /work/venv/bin/python scripts/unseen_models33.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models33.py --evaluate NAME MODEL
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import batch_cli, evaluate  # noqa: E402
from unseen_models12 import git_file  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen33"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]
WINML = ("microsoft/Windows-Machine-Learning", "155b5eeb1f48b49235f31ef3a68db0bd8707ce89")
PHOTOS = ["Samples/CustomTensorization/CustomTensorization/fish_720.png",
          "Samples/FNSCandyStyleTransfer/UWP/cs/Assets/DefaultImage.jpg",
          "Samples/WinMLSamplesGallery/WinMLSamplesGallery/InputData/fish.png",
          "Samples/WinMLSamplesGallery/WinMLSamplesGallery/InputData/hummingbird.jpg",
          "Samples/WinMLSamplesGallery/WinMLSamplesGallery/InputData/kitten.png"]  # fmt: skip
IRIS_DIR = "Samples/Tutorial Samples/PyTorch Data Analysis/PyTorch Training - Data Analysis/"
CIFAR_DIR = "Samples/Tutorial Samples/PyTorch Image Classification/PyTorchTraining - Image Classification/"
IRIS_CLASSES = ["Iris-setosa", "Iris-versicolor", "Iris-virginica"]


def _session(path: Path) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def _photos() -> list[np.ndarray]:
    from PIL import Image  # noqa: PLC0415

    return [np.asarray(Image.open(io.BytesIO(git_file(WINML, p))).convert("RGB")) for p in PHOTOS]


def _crops(r: np.random.Generator, n: int, size: int, start: int = 0) -> np.ndarray:
    """n random square crops (side 40-100% of the shorter edge) of the photos, resized to size,
    RGB 0..255 float32 [n, 3, size, size]; sample k from photo (start + k) % 5"""
    from PIL import Image  # noqa: PLC0415

    photos = _photos()
    out = []
    for k in range(n):
        im = photos[(start + k) % len(photos)]
        h, w = im.shape[:2]
        s = int(min(h, w) * r.uniform(0.4, 1.0))
        y, x = int(r.integers(h - s + 1)), int(r.integers(w - s + 1))
        crop = Image.fromarray(im[y:y + s, x:x + s]).resize((size, size), Image.BILINEAR)
        out.append(np.asarray(crop, np.float32).transpose(2, 0, 1))
    return np.stack(out)


def d_candy(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """random crops of the repository's five photos resized to 720x720, RGB 0..255"""
    return {"inputImage": _crops(r, n, 720)[:, None]}


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image  # noqa: PLC0415
    from sklearn.datasets import load_digits  # noqa: PLC0415

    d = load_digits()
    imgs = []
    for im in d.images:
        big = np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((20, 20), Image.BILINEAR))
        frame = np.zeros((28, 28), np.float32)
        frame[4:24, 4:24] = big
        imgs.append(frame[None, None])
    return np.stack(imgs), d.target


def d_mnist(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """scikit-learn's handwritten digits (8x8, 0..16) resized to 20x20 in a 28x28 frame, 0..255, at random"""
    x, _ = _digits()
    return {"Input3": x[r.permutation(len(x))[:n]]}


def d_cifar(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """random crops of the repository's five photos resized to 32x32, (x / 255 - 0.5) / 0.5"""
    return {"modelInput": (_crops(r, n, 32) / 255 - 0.5)[:, None] / 0.5}


def _iris() -> tuple[np.ndarray, np.ndarray]:
    rows = git_file(WINML, IRIS_DIR + "Iris.csv").decode().strip().splitlines()[1:]
    x = np.array([[float(v) for v in row.split(",")[1:5]] for row in rows], np.float32)
    y = np.array([IRIS_CLASSES.index(row.split(",")[5]) for row in rows])
    return x, y


def d_iris(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """rows of the tutorial's own Iris.csv (150 flowers), at random, calibration and eval disjoint"""
    x, _ = _iris()
    return {"input": x[r.permutation(len(x))[:n]][:, None]}


def _top1(a: Path, b: Path, x: np.ndarray, y: np.ndarray | None) -> dict[str, Any]:
    sa, sb = _session(a), _session(b)
    name = sa.get_inputs()[0].name
    pa = np.array([int(np.argmax(sa.run(None, {name: v})[0])) for v in x])
    pb = np.array([int(np.argmax(sb.run(None, {name: v})[0])) for v in x])
    res: dict[str, Any] = {"samples": len(x), "top1_agreement": float(np.mean(pa == pb))}
    if y is not None:
        res.update(accuracy_fp32=float(np.mean(pa == y)), accuracy_file=float(np.mean(pb == y)))
    return res


def task(name: str, model: Path, out: Path) -> dict[str, Any]:
    ref = out / f"{name}.onnx"
    if name == "fns_candy":
        x = np.load(out / "fns_candy_eval.npz")["inputImage"]
        sa, sb = _session(ref), _session(model)
        psnr = []
        for v in x:
            a = np.clip(sa.run(None, {"inputImage": v})[0], 0, 255)
            b = np.clip(sb.run(None, {"inputImage": v})[0], 0, 255)
            psnr.append(float(10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-12))))
        return {"psnr_vs_fp32_db_mean": float(np.mean(psnr)), "psnr_vs_fp32_db_min": min(psnr)}
    if name == "mnist_cntk":
        x, y = _digits()
        return _top1(ref, model, x, y)
    if name == "cifar_cnn":
        x = (_crops(np.random.default_rng(33), 1000, 32) / 255 - 0.5)[:, None] / 0.5
        return _top1(ref, model, x.astype(np.float32), None)
    x, y = _iris()
    return _top1(ref, model, x[:, None], y)


def _what(name: str) -> str:
    return {
        "fns_candy": "Fast Neural Style 'candy' (Windows ML sample; OnnxMLTools 0.1 from Core ML, IR 3, "
                     "opset 7): RGB [1, 3, 720, 720] 0..255 -> stylised RGB; ImageScaler, Pad, 14 Conv, 15 "
                     "InstanceNormalization, 7 Crop, 2 ConvTranspose, Tanh, Affine",
        "mnist_cntk": "ONNX Model Zoo MNIST CNN (CNTK 2.5.1, IR 3, opset 7): [1, 1, 28, 28] 0..255 -> "
                      "10 logits; 2 Conv + MaxPool, MatMul",
        "cifar_cnn": "Windows ML PyTorch tutorial CIFAR-10 classifier (PyTorch 1.7, IR 6, opset 10): "
                     "[1, 3, 32, 32] in [-1, 1] -> 10 logits; 4 Conv, MaxPool, Gemm",
        "iris_mlp": "Windows ML PyTorch tutorial Iris classifier (PyTorch 1.7, IR 6, opset 11): "
                    "[1, 4] -> 3; 3 Gemm",
    }[name]


MODELS: dict[str, tuple[str, Maker, dict[str, Any]]] = {
    "fns_candy": ("Samples/FNSCandyStyleTransfer/UWP/cs/Assets/candy.onnx", d_candy,
                  {"kind": "cosine", "output": 0}),
    "mnist_cntk": ("Samples/MNIST/UWP/cs/Assets/mnist.onnx", d_mnist, {"kind": "top1", "output": 0}),
    "cifar_cnn": (CIFAR_DIR + "ImageClassifier.onnx", d_cifar, {"kind": "top1", "output": 0}),
    "iris_mlp": (IRIS_DIR + "Network.onnx", d_iris, {"kind": "top1", "output": 0}),
}
# the fetched file
SOURCE_SHA256: dict[str, str] = {
    "fns_candy": "4cc994e51bc371584fe38d91ac66015909d8e06eec5b22de9a6b969ad091c2c0",
    "mnist_cntk": "bd5891fdd7987910bfc3d8fc9a697a88e48309e26e529faa87931fba52904fe8",
    "cifar_cnn": "d04131695f980c7febadf5e64996500dc4c9a6b1c313a30262d1a78386fc076d",
    "iris_mlp": "97504a48f12590e5f18b9f8b66495209a99c5851de5f79d1db0b04c91a8a6abb",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    member, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    raw = git_file(WINML, member)
    digest = hashlib.sha256(raw).hexdigest()
    if check and digest != SOURCE_SHA256[name]:
        raise SystemExit(f"{name}: sha256 {digest} differs from the one measured")
    if not dest.exists():
        dest.write_bytes(raw)
    spec = f"{WINML[0]}@{WINML[1][:7]}"
    entry = manifest_entry(out, name, dest.name, spec, member, digest, _what(name),
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    entry["source"] = f"GitHub `{spec}`, `{member}`"
    entry["source_sha256"] = digest
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
