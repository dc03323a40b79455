"""Fetch the forty-third batch of "unseen" models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch43.md`` sweeps them (``bench_real_models.py --root DIR``).
Kinds no earlier batch had, both **tabular deep nets trained here** (no reachable project ships a
trained file of these kinds: every checked wheel / snapshot fetches its weights from GitHub
releases, Google Drive or Hugging Face, or stores them in Git LFS), on real data sets that
scikit-learn ships inside its wheel, with seeded, single-thread training (sha256 pinned):

- ``tabnet_digits``: **TabNet** (PyPI ``pytorch-tabnet`` 4.1.0, ``TabNetClassifier`` n_d = n_a = 16,
  3 steps, sparsemax attentive transformers, GLU feature transformers, ghost batch norm; early
  stopping on 200 training rows) trained on
  scikit-learn's ``load_digits`` (1,797 handwritten digits, 64 features 0-16), 1,257 rows to train,
  540 held out; exported with the TorchScript exporter (opset 17), batch axis dynamic:
  ``features`` [N, 64] -> ``logits`` [N, 10]. Ghost batch norm runs as the plain eval BatchNorm it
  equals at inference (its training-time chunking would bake the batch size into the graph).
- ``ftt_cancer``: **FT-Transformer** at its paper's default size (feature tokenizer: one learned
  d = 192 token per feature + a CLS token, 3 pre-norm ``nn.TransformerEncoderLayer`` with 8 heads,
  feed-forward 256 (ReLU, not the paper's ReGLU), AdamW 1e-4 / 1e-5; a linear head
  on the CLS token; the standardisation inside the graph; torch 2.13 ``nn`` modules, early stopping
  on 64 training rows) classifying tumours on scikit-learn's ``load_breast_cancer`` (569 Wisconsin
  diagnostic cases, 30 raw features; 398 to train, 171 held out), exported with the TorchScript
  exporter (opset 17), **batch axis dynamic** (the small-Transformer TorchScript export the graph
  compaction targets): ``features`` [N, 30] -> ``logits`` [N, 2] (1 = benign).

Data (all real): rows of the two data sets, one row a line. Each sample is a batch of rows (digits
16, cancer 4): the 24 calibration samples from the training rows, the 32 eval samples from the
held-out rows.

``--evaluate`` adds the task metric on **all held-out rows**: accuracy against the true labels
beside fp32's (1 point = 5.4 of digits' 540 rows, 1.7 of cancer's 171), the share of rows whose
class is fp32's, and (cancer) the largest change of the benign probability.

    /work/venv/bin/python scripts/unseen_models43.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models43.py --evaluate NAME MODEL
    /work/venv/bin/python scripts/unseen_models43.py --fold-bn IN OUT   # finding 1's experiment
    /work/venv/bin/python scripts/unseen_models43.py --half-tables IN OUT   # finding 2's experiment

The export runs in ``/work/venv-torch`` (torch 2.13 CPU) with ``pip install pytorch-tabnet
scikit-learn onnx``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import batch_cli, evaluate  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen43"
TORCH_PY = "/work/venv-torch/bin/python"
ROWS = {"tabnet_digits": 16, "ftt_cancer": 4}

_EXPORT = r'''
import sys, numpy as np, torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split
torch.set_num_threads(1)
torch.manual_seed(0)
np.random.seed(0)
out, name = sys.argv[1], sys.argv[2]
if name == "tabnet_digits":
    from pytorch_tabnet import tab_network
    from pytorch_tabnet.tab_model import TabNetClassifier
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x.astype(np.float32), y, test_size=540, random_state=0, stratify=y)
    clf = TabNetClassifier(n_d=16, n_a=16, n_steps=3, seed=0, verbose=0, device_name="cpu")
    clf.fit(xtr[:-200], ytr[:-200], eval_set=[(xtr[-200:], ytr[-200:])],  # early stopping on training rows
            max_epochs=120, patience=30, batch_size=256,
            virtual_batch_size=64)
    tab_network.GBN.forward = lambda self, x: self.bn(x)  # eval BatchNorm, no batch chunking

    class Logits(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, features):
            return self.net(features)[0]

    model, dummy, outs = Logits(clf.network.eval()), torch.from_numpy(xte[:16]), ["logits"]
    print("test accuracy", float(np.mean(clf.predict(xte) == yte)))
else:
    x, y = load_breast_cancer(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=171, random_state=0, stratify=y)
    mu, sd = xtr.mean(0), xtr.std(0)  # the standardisation is part of the graph: raw features in
    xtr, xte = xtr.astype(np.float32), xte.astype(np.float32)

    class FTT(torch.nn.Module):
        def __init__(self, nf, d=192):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(nf, d) * 0.2)
            self.b = torch.nn.Parameter(torch.zeros(nf, d))
            self.cls = torch.nn.Parameter(torch.randn(1, 1, d) * 0.2)
            layer = torch.nn.TransformerEncoderLayer(d, 8, 256, dropout=0.1, batch_first=True,
                                                     norm_first=True)
            self.enc = torch.nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
            self.norm = torch.nn.LayerNorm(d)
            self.head = torch.nn.Linear(d, 2)
            self.register_buffer("mu", torch.tensor(mu, dtype=torch.float32))
            self.register_buffer("sd", torch.tensor(sd, dtype=torch.float32))

        def forward(self, features):
            tok = ((features - self.mu) / self.sd).unsqueeze(-1) * self.w + self.b
            tok = torch.cat([self.cls.expand(features.shape[0], -1, -1), tok], 1)
            return self.head(self.norm(self.enc(tok)[:, 0]))

    model = FTT(x.shape[1])
    opt = torch.optim.AdamW(model.parameters(), 1e-4, weight_decay=1e-5)
    xt, yt = torch.from_numpy(xtr[:-64]), torch.from_numpy(ytr[:-64])
    xv, yv = torch.from_numpy(xtr[-64:]), torch.from_numpy(ytr[-64:])
    best = (float("inf"), None)
    for epoch in range(100):  # early stopping on the last 64 training rows
        model.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 32):
            j = perm[i:i + 32]
            loss = torch.nn.functional.cross_entropy(model(xt[j]), yt[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            v = float(torch.nn.functional.cross_entropy(model(xv), yv))
        if v < best[0]:
            best = (v, {k: t.clone() for k, t in model.state_dict().items()})
    model.load_state_dict(best[1])
    model.eval()
    with torch.no_grad():
        p = model(torch.from_numpy(xte)).numpy()
    print("test accuracy", float(np.mean(p.argmax(1) == yte)))
    dummy, outs = torch.from_numpy(xte[:4]), ["logits"]
torch.backends.mha.set_fastpath_enabled(False)  # the fused encoder-layer kernel has no ONNX export
np.savez_compressed(f"{out}/{name}_rows.npz", xtr=xtr, ytr=ytr, xte=xte, yte=yte)
with torch.no_grad():
    torch.onnx.export(model.eval(), (dummy,), f"{out}/{name}.onnx", input_names=["features"],
                      output_names=outs, dynamic_axes={"features": {0: "batch"}, outs[0]: {0: "batch"}},
                      opset_version=17, dynamo=False)
import onnxruntime as ort
with torch.no_grad():
    want = model(torch.from_numpy(xte)).numpy()
sess = ort.InferenceSession(f"{out}/{name}.onnx", providers=["CPUExecutionProvider"])
got = sess.run(None, {"features": xte})[0]
print("export fidelity: max abs logit difference", float(np.abs(want - got).max()), "same class",
      float(np.mean(want.argmax(1) == got.argmax(1))))
'''


def export(name: str, out: Path) -> None:
    subprocess.run([TORCH_PY, "-c", _EXPORT, str(out), name], check=True)


def rows(out: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(out / f"{name}_rows.npz") as d:
        return {k: d[k] for k in d.files}


def _maker(name: str) -> Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]:
    def make_arrays(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
        """Batches of real rows: 24 calibration samples of training rows, 32 eval samples of held-out rows."""
        d, k = rows(out, name), ROWS[name]
        tr = d["xtr"][r.permutation(len(d["xtr"]))[: 24 * k]].reshape(24, k, -1)
        te = d["xte"][r.permutation(len(d["xte"]))[: (n - 24) * k]].reshape(n - 24, k, -1)
        return {"features": np.concatenate([tr, te]).astype(np.float32)}

    make_arrays.__doc__ = make_arrays.__doc__
    return make_arrays


def task(name: str, model: Path, out: Path) -> dict[str, Any]:
    """The task metric on all held-out rows, the file beside the fp32 file."""
    import onnxruntime as ort  # noqa: PLC0415

    d = rows(out, name)

    def run(p: Path) -> np.ndarray:
        o = ort.SessionOptions()
        o.log_severity_level = 3
        s = ort.InferenceSession(str(p), o, providers=["CPUExecutionProvider"])
        return s.run(None, {"features": d["xte"].astype(np.float32)})[0]

    ref, got = run(out / f"{name}.onnx"), run(model)
    if name == "tabnet_digits":
        y = d["yte"]
        return {"rows": len(y), "accuracy_fp32": float(np.mean(ref.argmax(1) == y)),
                "accuracy": float(np.mean(got.argmax(1) == y)),
                "class_same_as_fp32": float(np.mean(ref.argmax(1) == got.argmax(1)))}  # fmt: skip
    y = d["yte"]

    def prob(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(1, keepdims=True))
        return e[:, 1] / e.sum(1)

    return {"rows": len(y), "accuracy_fp32": float(np.mean(ref.argmax(1) == y)),
            "accuracy": float(np.mean(got.argmax(1) == y)),
            "class_same_as_fp32": float(np.mean(ref.argmax(1) == got.argmax(1))),
            "max_abs_benign_prob": float(np.max(np.abs(prob(ref) - prob(got))))}  # fmt: skip


def fold_bn(src: Path, dst: Path) -> int:
    """Finding 1's experiment: each BatchNormalization that follows a MatMul whose weight only it
    reads folded into that weight (exact; a bias Add in its place), unused initializers dropped."""
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415
    from onnx import numpy_helper as nh  # noqa: PLC0415

    m = onnx.load(str(src))
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: nh.to_array(n.attribute[0].t) for n in g.node if n.op_type == "Constant"}
    prod = {o: n for n in g.node for o in n.output}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    folded = 0
    for bn in [n for n in g.node if n.op_type == "BatchNormalization"]:
        mm = prod.get(bn.input[0])
        if (mm is None or mm.op_type != "MatMul" or uses[bn.input[0]] != 1 or mm.input[1] not in inits
                or uses[mm.input[1]] != 1):
            continue
        gamma, beta, mean, var = (np.asarray(nh.to_array(inits[x]) if x in inits else consts[x], np.float64)
                                  for x in bn.input[1:5])  # fmt: skip
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        f = gamma / np.sqrt(var + eps)
        w = nh.to_array(inits[mm.input[1]]).astype(np.float64)
        inits[mm.input[1]].CopyFrom(nh.from_array((w * f).astype(np.float32), mm.input[1]))
        g.initializer.append(nh.from_array((beta - mean * f).astype(np.float32), bn.output[0] + "_foldbias"))
        mm.output[0] = bn.output[0] + "_mm"
        at = list(g.node).index(bn)
        g.node.remove(bn)
        g.node.insert(at, helper.make_node("Add", [mm.output[0], bn.output[0] + "_foldbias"], [bn.output[0]]))
        folded += 1
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.save(m, str(dst))
    return folded


def half_tables(src: Path, dst: Path) -> int:
    """Finding 2's experiment: every float32 initializer of 1,024+ values that only elementwise
    Mul / Add nodes read stored in float16 with a Cast to float32 in front."""
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415
    from onnx import numpy_helper as nh  # noqa: PLC0415

    m = onnx.load(str(src))
    g = m.graph
    readers: dict[str, set[str]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, set()).add(n.op_type)
    done = 0
    for t in list(g.initializer):
        a = nh.to_array(t)
        only_elementwise = bool(readers.get(t.name)) and not readers[t.name] - {"Mul", "Add"}
        if a.dtype != np.float32 or a.size < 1024 or not only_elementwise:
            continue
        name = t.name
        t.CopyFrom(nh.from_array(a.astype(np.float16), name + "_fp16"))
        g.node.insert(0, helper.make_node("Cast", [name + "_fp16"], [name], to=onnx.TensorProto.FLOAT))
        done += 1
    onnx.save(m, str(dst))
    return done


MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "tabnet_digits": ("pytorch-tabnet==4.1.0", "TabNet classifier (pytorch-tabnet 4.1.0, trained here on "
                      "scikit-learn's digits, 64 features; TorchScript export, opset 17, dynamic batch): "
                      "features [N, 64] -> logits [N, 10]", {"kind": "top1", "output": 0}),
    "ftt_cancer": ("torch==2.13.0 nn.TransformerEncoder", "FT-Transformer classifier (feature tokenizer + "
                   "3 pre-norm Transformer encoder layers, d 192, 8 heads; trained here on scikit-learn's "
                   "breast cancer, 30 features; TorchScript export, opset 17, dynamic batch): "
                   "features [N, 30] -> logits [N, 2]", {"kind": "top1", "output": 0}),
}  # fmt: skip
SHA256: dict[str, str] = {
    "tabnet_digits": "3cd772ad8d2f23aee052e5af296662ab8a3db9c1eaa1a9a76156a177dbf6b02c",
    "ftt_cancer": "2825c49ac9c33ec9afd019083de84292dd88cde3c493488008c2fb28498a12ca",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, what, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    if not (out / f"{name}.onnx").exists():
        export(name, out)
    maker = _maker(name)
    entry = manifest_entry(out, name, f"{name}.onnx", spec, "(trained and exported here)",
                           SHA256.get(name) if check else None, what, lambda r, n: maker(r, n, out),
                           maker.__doc__, metric, Path(__file__).name)  # fmt: skip
    entry["source"] = f"{spec} on scikit-learn 1.9.1's bundled data (trained and exported here, torch 2.13)"
    return entry


def _evaluate_option(ap: Any) -> Callable[[Any], bool]:
    ap.add_argument("--fold-bn", nargs=2, metavar=("IN", "OUT"),
                    help="only write IN with its BatchNorms after unshared MatMuls folded (finding 1)")

    ap.add_argument("--half-tables", nargs=2, metavar=("IN", "OUT"),
                    help="only write IN with its large Mul / Add tables in float16 (finding 2)")

    def handle(args: Any) -> bool:
        if args.half_tables:
            print("stored in float16", half_tables(Path(args.half_tables[0]), Path(args.half_tables[1])))
            return True
        if args.fold_bn:
            print("folded", fold_bn(Path(args.fold_bn[0]), Path(args.fold_bn[1])))
            return True
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
