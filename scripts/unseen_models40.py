"""Fetch the fortieth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch40.md`` sweeps them (``bench_real_models.py --root DIR``).
Kinds no earlier batch had, from the text / tabular side of the brief:

- ``unidic_tagger``: **Japanese morphological analysis (word segmentation + part of speech)**, a
  character tagger shipped inside the PyPI wheel ``unidic-lite-imitator==0.2.1``
  (``unidic_lite_imitator/model.onnx``, as shipped: torch 2.0 export, IR 8 / opset 18, 419k
  parameters, 1.75 MB): an ALBERT-style encoder (embedding 48, hidden 116, 4 layers, 4 heads,
  max 256 characters) trained to imitate MeCab + the unidic-lite dictionary. Inputs: character ids
  (the package's ``config.json`` vocabulary, unknown kanji / non-kanji ids 1 / 2), attention mask,
  token types [1, 256] int64; output ``403``: [1, 256] int64, an ArgMax inside the graph: per
  character 0 (pad), 1 (same word as the previous character) or 2 + one of 16 unidic POS (a new
  word starts here).
- ``cancer_iforest`` and ``cancer_ae``: **tabular anomaly detectors** trained here on real data
  (no earlier batch had an anomaly detector on tabular rows; ``house_rf`` / ``surf_gbr`` are
  regressors, ``cancer_pipeline`` a supervised classifier): an sklearn 1.9 ``IsolationForest``
  (200 trees, converted by skl2onnx 1.20: ai.onnx.ml TreeEnsembleRegressor + the path-length
  arithmetic) and an ``MLPRegressor`` autoencoder 30-256-64-8-64-256-30 behind a
  ``StandardScaler`` (skl2onnx: Scaler + MatMul / Add / Relu), both fitted only on benign tumours
  of the Wisconsin diagnostic breast-cancer table (sklearn's bundled copy, 569 rows x 30 features),
  the malignant ones being the anomalies to find.

Data (all real). Japanese: sentences of the Kyoto University Web Document Leads Corpus (GitHub
``ku-nlp/KWDLC``, pinned commit; the raw text is the concatenated surface forms of its ``.knp``
files, read in sorted order): 400 sentences of 8-200 characters; the reference tags are what
MeCab + unidic-lite (fugashi 1.x) gives for each sentence, the tool the model imitates. Tabular:
benign rows are split (seed 0) into 60 % training and 40 % held out; the held-out benign rows
(143) and all malignant rows (212) form the pool the calibration / eval rows and the task metric
use.

``--evaluate`` adds the task metrics. unidic_tagger, over the 400 sentences: share of characters
(real characters, not padding) whose tag equals fp32's, share of sentences tagged identically, and
against MeCab the word-segmentation F1 and the word + POS F1 (a word counts when its span, and its
POS, match). Anomaly detectors, over the 355 held-out rows: ROC AUC of the anomaly score for
malignant vs benign, and the share of rows whose flag (score above fp32's 95th percentile of the
training rows) equals fp32's.

The sklearn models and the MeCab reference are made once by a helper Python that has
``skl2onnx==1.20.0 scikit-learn fugashi unidic-lite`` (env ``U40_PY``, default
``/tmp/u40skl/bin/python``: ``python3 -m venv /tmp/u40skl && /tmp/u40skl/bin/pip install
skl2onnx==1.20.0 scikit-learn fugashi unidic-lite``).

    /work/venv/bin/python scripts/unseen_models40.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models40.py --evaluate NAME MODEL
"""

from __future__ import annotations

import json
import os
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
from unseen_models4 import batch_cli, evaluate  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen40"
MIRRORS = Path("/work/.mirror")
HELPER_PY = os.environ.get("U40_PY", "/tmp/u40skl/bin/python")
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]
IMITATOR = "unidic-lite-imitator==0.2.1"
KWDLC = ("ku-nlp/KWDLC", "c6ae49d29eca4e1134c6676d682adf5ed6a25f5a")
N_SENTENCES = 400


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
# Japanese morphological analysis (unidic-lite-imitator)


def imitator_export(out: Path) -> None:
    """The wheel's model.onnx and config.json (the wheel says Requires-Python <=3.11, which pip reads
    as <= 3.11.0: downloaded for 3.10, it is pure Python)."""
    folder = out / "wheels" / IMITATOR.replace("==", "-")
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.glob("*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--python-version",
                        "3.10", "--only-binary=:all:", "-d", str(folder), IMITATOR], check=True)  # fmt: skip
    with zipfile.ZipFile(next(folder.glob("*.whl"))) as z:
        (out / "unidic_tagger.onnx").write_bytes(z.read("unidic_lite_imitator/model.onnx"))
        (out / "unidic_tagger_config.json").write_bytes(z.read("unidic_lite_imitator/config.json"))


@cache
def kwdlc_sentences() -> list[str]:
    """The first N_SENTENCES sentences of 8-200 characters of KWDLC's .knp files, in sorted order."""
    mirror = MIRRORS / KWDLC[0].replace("/", "+") / "repo"
    names = subprocess.run(["git", "-C", str(mirror), "ls-tree", "-r", "--name-only", KWDLC[1], "knp/"],
                           check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
    out: list[str] = []
    for f in sorted(n for n in names if n.endswith(".knp")):
        words: list[str] = []
        for line in git_file(KWDLC, f).decode().splitlines():
            if line.startswith("EOS"):
                s = "".join(words)
                if 8 <= len(s) <= 200:
                    out.append(s)
                words = []
            elif line and not line.startswith(("#", "*", "+")):
                words.append(line.split(" ")[0])
        if len(out) >= N_SENTENCES:
            return out[:N_SENTENCES]
    return out


_MECAB_CHILD = r"""
import json, sys
from importlib.metadata import version
import fugashi
t = fugashi.Tagger()
res = []
for s in json.load(open(sys.argv[1])):
    words, pos = [], 0
    for w in t(s):
        i = s.find(w.surface, pos)
        if i < 0:
            continue
        words.append([i, i + len(w.surface), w.feature.pos1])
        pos = i + len(w.surface)
    res.append(words)
info = {"fugashi": version("fugashi"), "unidic_lite": version("unidic-lite"), "words": res}
json.dump(info, open(sys.argv[2], "w"), ensure_ascii=False)
"""


def mecab_reference(out: Path) -> list[list[tuple[int, int, str]]]:
    """MeCab + unidic-lite's words (start, end, POS) of each sentence, made once by the helper Python."""
    path = out / "unidic_tagger_mecab.json"
    if not path.exists():
        src = out / "unidic_tagger_sentences.json"
        src.write_text(json.dumps(kwdlc_sentences(), ensure_ascii=False))
        subprocess.run([HELPER_PY, "-c", _MECAB_CHILD, str(src), str(path)], check=True, cwd=out)
    return [[(a, b, p) for a, b, p in s] for s in json.loads(path.read_text())["words"]]


@cache
def _tagger_config(out: Path) -> tuple[dict[str, int], list[str], int]:
    cfg = json.loads((out / "unidic_tagger_config.json").read_text())
    return ({c: i + 3 for i, c in enumerate(cfg["chars"])}, ["[PAD]", "cont"] + cfg["parts_of_speech"],
            cfg["max_position_embeddings"])  # fmt: skip


def encode(text: str, out: Path) -> dict[str, np.ndarray]:
    """The package's ``Tagger.encode``: [1, 256] int64 ids, mask and token types."""
    char_to_id, _, n = _tagger_config(out)
    ids = []
    for c in text:
        o = ord(c)
        ids.append(char_to_id.get(c, 1 if (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF) else 2))
    mask = [1] * len(ids) + [0] * (n - len(ids))
    ids += [0] * (n - len(ids))
    return {"input.1": np.array([ids], np.int64), "onnx::Unsqueeze_1": np.array([mask], np.int64),
            "input.3": np.zeros((1, n), np.int64)}  # fmt: skip


def decode(text: str, tags: np.ndarray, out: Path) -> list[tuple[int, int, str]]:
    """The package's ``Tagger.decode`` as (start, end, POS) spans."""
    _, id_to_pos, _ = _tagger_config(out)
    words: list[list[Any]] = []
    for i, t in enumerate(tags[: len(text)]):
        t = int(t)
        if t == 0:
            continue
        if t == 1 and words:
            words[-1][1] = i + 1
        else:
            words.append([i, i + 1, id_to_pos[t] if 2 <= t < len(id_to_pos) else "名詞"])
    return [(a, b, p) for a, b, p in words]


def d_tagger(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """Japanese sentences of KWDLC (Kyoto University Web Document Leads Corpus), 8-200 characters,
    encoded as the package does"""
    sents = kwdlc_sentences()
    feeds = [encode(sents[i], out) for i in r.choice(len(sents), n, replace=False)]
    return {k: np.stack([f[k] for f in feeds]) for k in feeds[0]}  # [n, batch 1, 256]


def _f1(ref: list[list[tuple[int, int, str]]], got: list[list[tuple[int, int, str]]], pos: bool) -> float:
    tp = nr = ng = 0
    for a, b in zip(ref, got, strict=True):
        sa = {w if pos else w[:2] for w in a}
        sb = {w if pos else w[:2] for w in b}
        tp, nr, ng = tp + len(sa & sb), nr + len(sa), ng + len(sb)
    return 2 * tp / max(nr + ng, 1)


def _tagger_task(ref: Path, model: Path, out: Path) -> dict[str, Any]:
    sents, mecab = kwdlc_sentences(), mecab_reference(out)
    sa, sb = _session(ref), _session(model)
    ta = [sa.run(None, encode(s, out))[0][0] for s in sents]
    tb = [sb.run(None, encode(s, out))[0][0] for s in sents]
    chars = sum(len(s) for s in sents)
    same = sum(int(np.sum(a[: len(s)] == b[: len(s)])) for s, a, b in zip(sents, ta, tb, strict=True))
    wa = [decode(s, a, out) for s, a in zip(sents, ta, strict=True)]
    wb = [decode(s, b, out) for s, b in zip(sents, tb, strict=True)]
    return {"sentences": len(sents), "characters": chars, "same_tag_as_fp32": same / chars,
            "same_sentence_as_fp32": float(np.mean([a == b for a, b in zip(wa, wb, strict=True)])),
            "seg_f1_fp32": _f1(mecab, wa, False), "seg_f1": _f1(mecab, wb, False),
            "pos_f1_fp32": _f1(mecab, wa, True), "pos_f1": _f1(mecab, wb, True)}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# tabular anomaly detectors (Wisconsin breast cancer, benign = normal)

_SKL_CHILD = r"""
import json, sys
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import IsolationForest
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
import sklearn, skl2onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

out, name = sys.argv[1], sys.argv[2]
X, y = load_breast_cancer(return_X_y=True)
X = X.astype(np.float32)
benign = np.flatnonzero(y == 1)  # sklearn: 1 = benign
perm = np.random.default_rng(0).permutation(benign)
train = np.sort(perm[: int(0.6 * len(perm))])
held = np.sort(np.concatenate([perm[int(0.6 * len(perm)):], np.flatnonzero(y == 0)]))
if name == "cancer_iforest":
    m = IsolationForest(n_estimators=200, random_state=0).fit(X[train])
    score = -m.decision_function(X[train])  # higher = more anomalous
else:
    m = Pipeline([("scale", StandardScaler()),
                  ("ae", MLPRegressor(hidden_layer_sizes=(256, 64, 8, 64, 256), max_iter=3000,
                                      random_state=0))])
    m.fit(X[train], m.named_steps["scale"].fit_transform(X[train]))
    z = m.named_steps["scale"].transform(X[train])
    score = ((m.predict(X[train]) - z) ** 2).mean(1)
onx = convert_sklearn(m, initial_types=[("X", FloatTensorType([None, 30]))],
                      target_opset={"": 17, "ai.onnx.ml": 3})
open(f"{out}/{name}.onnx", "wb").write(onx.SerializeToString())
info = {"sklearn": sklearn.__version__, "skl2onnx": skl2onnx.__version__, "train": train.tolist(),
        "held": held.tolist(), "anomaly": (y[held] == 0).astype(int).tolist(),
        "threshold": float(np.percentile(score, 95))}
if name == "cancer_ae":
    s = m.named_steps["scale"]
    info.update(mean=s.mean_.tolist(), scale=s.scale_.tolist())
json.dump(info, open(f"{out}/{name}_split.json", "w"))
"""


def anomaly_export(name: str, out: Path) -> None:
    subprocess.run([HELPER_PY, "-c", _SKL_CHILD, str(out), name], check=True, cwd=out)


@cache
def _table(out: Path, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The held-out rows (float32 [n, 30]), their anomaly labels, the split's JSON."""
    from sklearn.datasets import load_breast_cancer  # noqa: PLC0415

    info = json.loads((out / f"{name}_split.json").read_text())
    x = load_breast_cancer().data.astype(np.float32)[info["held"]]
    return x, np.asarray(info["anomaly"]), info


def d_table(r: np.random.Generator, n: int, out: Path, name: str) -> dict[str, np.ndarray]:
    """Held-out rows of the Wisconsin diagnostic breast-cancer table (143 benign, 212 malignant), one
    row a sample"""
    x, _, _ = _table(out, name)
    return {"X": x[r.choice(len(x), n, replace=False)][:, None]}  # [n, batch 1, 30]


def anomaly_score(name: str, outputs: list[np.ndarray], x: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    if name == "cancer_iforest":  # outputs: label [n, 1], scores [n, 1] (decision_function)
        return -np.asarray(outputs[1]).ravel()
    z = (x - np.asarray(info["mean"], np.float32)) / np.asarray(info["scale"], np.float32)
    # skl2onnx 1.20 writes the multi-output regressor's variable as [n * 30, 1]
    return ((np.asarray(outputs[0]).reshape(len(x), -1) - z) ** 2).mean(1)


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    pos, neg = score[y == 1], score[y == 0]
    return float(np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])))


def _anomaly_task(name: str, ref: Path, model: Path, out: Path) -> dict[str, Any]:
    x, y, info = _table(out, name)
    a = anomaly_score(name, _session(ref).run(None, {"X": x}), x, info)
    b = anomaly_score(name, _session(model).run(None, {"X": x}), x, info)
    t = info["threshold"]
    return {"rows": len(y), "anomalies": int(y.sum()), "auc_fp32": _auc(a, y), "auc": _auc(b, y),
            "same_flag_as_fp32": float(np.mean((a > t) == (b > t))), "flags_fp32": int(np.sum(a > t)),
            "flags": int(np.sum(b > t)), "recall_fp32": float(np.mean(a[y == 1] > t)),
            "recall": float(np.mean(b[y == 1] > t)),
            "max_abs_score_diff": float(np.max(np.abs(a - b)))}  # fmt: skip


# ---------------------------------------------------------------------------------------------


def task(name: str, model: Path, out: Path) -> dict[str, Any]:
    if name == "unidic_tagger":
        return _tagger_task(out / f"{name}.onnx", model, out)
    return _anomaly_task(name, out / f"{name}.onnx", model, out)


MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "unidic_tagger": (IMITATOR, "unidic_lite_imitator/model.onnx",
                      "Japanese morphological analysis imitating MeCab + unidic-lite (as shipped: torch 2.0 "
                      "export, IR 8, opset 18, 419k params): ALBERT-style char encoder (emb 48, hidden 116, "
                      "4 layers) -> ArgMax: [1, 256] char ids / mask / types -> [1, 256] int64 tags "
                      "(pad / continue / 16 POS)", d_tagger, {"kind": "within", "output": 0, "tol": 0.5}),
    "cancer_iforest": ("scikit-learn==1.9.1", "IsolationForest (trained here)",
                       "tabular anomaly detector: sklearn IsolationForest (200 trees) fitted on benign "
                       "Wisconsin breast-cancer rows, skl2onnx 1.20 (TreeEnsembleRegressor, opset 17 / "
                       "ml 3): "
                       "X [n, 30] -> label [n, 1], scores [n, 1]",
                       lambda r, n, out: d_table(r, n, out, "cancer_iforest"),
                       {"kind": "within", "output": 1, "tol": 0.01}),
    "cancer_ae": ("scikit-learn==1.9.1", "MLPRegressor autoencoder (trained here)",
                  "tabular anomaly detector: StandardScaler + MLPRegressor autoencoder 30-256-64-8-64-256-30 "
                  "fitted on benign Wisconsin breast-cancer rows, skl2onnx 1.20 (opset 17): X [n, 30] -> "
                  "reconstruction [n, 30] (score: mean squared error to the scaled row)",
                  lambda r, n, out: d_table(r, n, out, "cancer_ae"), {"kind": "cosine", "output": 0}),
}  # fmt: skip
SHA256: dict[str, str | None] = {
    "unidic_tagger": "6cf54a6b3c3988cf7ebc1920be4737103a246fa63fcafdf5f771d8911c547ea8",
    "cancer_iforest": "7c75429c643802242421c14d05f2405b1a22407b448e7e3647c48f264b355978",  # trained here
    "cancer_ae": "ef4dd423d9de98f87fac3d94723571037c2f1622047f9485387462b87179def8",
}
EXPORTS: dict[str, Callable[[Path], None]] = {
    "unidic_tagger": imitator_export,
    "cancer_iforest": lambda out: anomaly_export("cancer_iforest", out),
    "cancer_ae": lambda out: anomaly_export("cancer_ae", out),
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        EXPORTS[name](out)
    if name == "unidic_tagger":
        mecab_reference(out)
    doc = d_tagger.__doc__ if name == "unidic_tagger" else d_table.__doc__
    entry = manifest_entry(out, name, dest.name, spec, mem, SHA256[name] if check else None, what,
                           lambda r, n: maker(r, n, out), doc, metric, Path(__file__).name)  # fmt: skip
    if name == "unidic_tagger":
        entry["source"] = f"PyPI `{IMITATOR}` wheel, `{mem}` (as shipped)"
    else:
        entry["source"] = f"trained here: {mem}, sklearn 1.9.1 + skl2onnx 1.20.0 (helper Python)"
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
