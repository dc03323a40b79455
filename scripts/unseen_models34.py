"""Fetch the thirty-fourth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch34.md`` sweeps them (``bench_real_models.py --root DIR``).
Kinds no earlier batch had:

- ``magika``: Google's **Magika file content-type identifier** (PyPI ``magika==1.0.3``,
  ``magika/models/standard_v3_3/model.onnx``; JAX -> TF -> tf2onnx 1.16.1, IR 8, opset 15): the
  first 1024 and last 1024 bytes of a file (whitespace-stripped, padded with 256) as **int32**
  ``bytes`` [N, 2048] -> one-hot (257) -> Dense 64 -> Conv 512 x 256 x 5 -> LayerNorm ->
  GlobalMaxPool -> LayerNorm -> Dense 214 -> softmax over 214 content types.
- ``langid_svc``: the **text language identifier** of PyPI ``langid-chat==0.1.0`` (15 classes:
  Arabic, Dutch, English, French, German, Italian, Portuguese, Russian, Spanish, Tamil and the
  romanised code-mixed Hinglish / Kanglish / Manglish / Tanglish / Teluglish): its pickled
  scikit-learn ``LinearSVC`` (``langid/artifacts/model.pkl``) over the pickled character 1-3-gram
  ``CountVectorizer`` (90,093 n-grams), written as the ONNX graph a PyTorch ``nn.Linear`` export
  gives (``Gemm`` transB=1, opset 17): float32 ``counts`` [N, 90093] -> 15 decision scores.

Data: real inputs. Magika reads real files: every blob of GitHub
``microsoft/Windows-Machine-Learning`` at the commit batch 33 pinned (C++ / C# / headers, XAML,
solution and project files, PNG / JPEG / ICO / GIF images, ONNX models, CSV, JSON, Markdown,
TypeScript, Python, pickles, DLLs...). The language identifier reads real translated sentences:
the gettext catalogues (``/usr/share/locale/<ll>/LC_MESSAGES/*.mo``) of this machine's Debian
packages, English from their message ids, the other nine languages from their translations
(strings of 4+ words, 25-200 characters), turned into counts by the package's own vectorizer.

``--evaluate`` adds the task metrics: magika's top-1 agreement with fp32 over **every** blob of
the repository (and accuracy on the ones whose extension names a Magika label); the language
identifier's top-1 agreement and accuracy over 100 sentences a language (1000).

    /work/venv/bin/python scripts/unseen_models34.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models34.py --evaluate NAME MODEL
"""

from __future__ import annotations

import gettext
import hashlib
import json
import pickle
import subprocess
import sys
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import batch_cli, evaluate, member  # noqa: E402
from unseen_models12 import MIRRORS, git_file  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen34"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]
WINML = ("microsoft/Windows-Machine-Learning", "155b5eeb1f48b49235f31ef3a68db0bd8707ce89")
MAGIKA = "magika==1.0.3"
MAGIKA_MODEL = "magika/models/standard_v3_3/model.onnx"
LANGID = "langid-chat==0.1.0"
BEG, END, BLOCK, PAD = 1024, 1024, 4096, 256  # standard_v3_3/config.min.json
# extension -> the Magika label it names (for accuracy; other files count for agreement only)
EXT_LABEL = {"png": "png", "jpg": "jpeg", "gif": "gif", "ico": "ico", "cs": "cs", "cpp": "cpp",
             "h": "c", "json": "json", "md": "markdown", "xml": "xml", "html": "html", "css": "css",
             "js": "javascript", "ts": "typescript", "py": "python", "csv": "csv", "onnx": "onnx",
             "ps1": "powershell", "rs": "rust", "yml": "yaml", "xaml": "xml", "pkl": "pickle",
             "dll": "pebin", "txt": "txt", "sln": "txt", "csproj": "csproj", "vcxproj": "xml"}  # fmt: skip
LOCALES = {"ar": "Arabic", "nl": "Dutch", "fr": "French", "de": "German", "it": "Italian",
           "pt_BR": "Portuguese", "ru": "Russian", "es": "Spanish", "ta": "Tamil"}  # fmt: skip


def _session(path: Path) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# magika


@cache
def _blobs() -> list[tuple[str, bytes]]:
    """(path, content) of every blob at the pinned commit that the snapshot holds, sorted by path"""
    mirror = MIRRORS / WINML[0].replace("/", "+") / "repo"
    tree = subprocess.run(["git", "-C", str(mirror), "ls-tree", "-r", "-z", WINML[1]],
                          check=True, capture_output=True).stdout  # fmt: skip
    out = []
    for rec in tree.split(b"\0"):
        if not rec:
            continue
        meta, path = rec.split(b"\t", 1)
        kind, sha = meta.split()[1:3]
        if kind != b"blob":
            continue
        got = subprocess.run(["git", "-C", str(mirror), "cat-file", "blob", sha.decode()], capture_output=True)
        if got.returncode == 0 and len(got.stdout) >= 8:  # Magika's min_file_size_for_dl
            out.append((path.decode(), got.stdout))
    return sorted(out)


def magika_features(content: bytes) -> np.ndarray:
    """``Magika._extract_features_from_seekable`` (standard_v3_3): at most 4096 bytes from each end,
    stripped, the first / last 1024 bytes, padded with 256 -> int32 [2048]"""
    n = min(BLOCK, len(content))
    beg = content[:n].lstrip()[:BEG]
    end = content[len(content) - n:].rstrip()
    end = end[max(0, len(end) - END):]
    ints = list(beg) + [PAD] * (BEG - len(beg)) + [PAD] * (END - len(end)) + list(end)
    return np.array(ints, np.int32)


def d_magika(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """real files: blobs of microsoft/Windows-Machine-Learning@155b5ee at random, as Magika's features"""
    blobs = _blobs()
    pick = r.permutation(len(blobs))[:n]
    return {"bytes": np.stack([magika_features(blobs[i][1]) for i in pick])[:, None]}


def _magika_task(ref: Path, model: Path) -> dict[str, Any]:
    blobs = _blobs()
    x = np.stack([magika_features(c) for _, c in blobs])
    sa, sb = _session(ref), _session(model)
    pa = np.concatenate([np.argmax(sa.run(None, {"bytes": x[i:i + 64]})[0], 1) for i in range(0, len(x), 64)])
    pb = np.concatenate([np.argmax(sb.run(None, {"bytes": x[i:i + 64]})[0], 1) for i in range(0, len(x), 64)])
    labels = _magika_labels()
    want = [EXT_LABEL.get(p.rsplit(".", 1)[-1].lower()) if "." in p.rsplit("/", 1)[-1] else None for p, _ in blobs]
    known = [i for i, w in enumerate(want) if w is not None]
    acc = lambda p: float(np.mean([labels[p[i]] == want[i] for i in known]))  # noqa: E731
    return {"samples": len(x), "top1_agreement": float(np.mean(pa == pb)), "labelled": len(known),
            "accuracy_fp32": acc(pa), "accuracy_file": acc(pb),
            "changed": [f"{blobs[i][0]}: {labels[pa[i]]} -> {labels[pb[i]]}" for i in np.flatnonzero(pa != pb)][:20]}


@cache
def _magika_labels() -> list[str]:
    cfg = json.loads(member(DEFAULT_OUT, MAGIKA, "magika/models/standard_v3_3/config.min.json"))
    return cfg["target_labels_space"]


# ---------------------------------------------------------------------------------------------
# langid-chat's LinearSVC


@cache
def _langid() -> tuple[Any, Any, list[str]]:
    with warnings.catch_warnings():  # pickled with scikit-learn 1.9.0
        warnings.simplefilter("ignore")
        vec, svc, langs = (pickle.loads(member(DEFAULT_OUT, LANGID, f"langid/artifacts/{f}.pkl"))
                           for f in ("vectorizer", "model", "languages"))  # fmt: skip
    return vec, svc, langs


def langid_onnx() -> bytes:
    """the LinearSVC's decision function as ``nn.Linear`` exports it: Gemm(counts, W, b, transB=1)"""
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    _, svc, _ = _langid()
    w = numpy_helper.from_array(svc.coef_.astype(np.float32), "classifier.weight")
    b = numpy_helper.from_array(svc.intercept_.astype(np.float32), "classifier.bias")
    node = helper.make_node("Gemm", ["counts", "classifier.weight", "classifier.bias"], ["scores"],
                            name="/classifier/Gemm", alpha=1.0, beta=1.0, transB=1)  # fmt: skip
    graph = helper.make_graph(
        [node], "main_graph",
        [helper.make_tensor_value_info("counts", TensorProto.FLOAT, ["batch", svc.coef_.shape[1]])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", svc.coef_.shape[0]])],
        [w, b])  # fmt: skip
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch",
                          producer_version="2.13.0", ir_version=8)  # fmt: skip
    onnx.checker.check_model(m)
    return m.SerializeToString()


@cache
def _sentences() -> dict[str, list[str]]:
    """language -> this machine's gettext translations of 4+ words, 25-200 characters, deduplicated,
    sorted; English from the message ids of the same catalogues"""
    root = Path("/usr/share/locale")
    by: dict[str, set[str]] = {lang: set() for lang in [*LOCALES.values(), "English"]}

    def keep(s: str) -> bool:
        return 25 <= len(s) <= 200 and s.count(" ") >= 3

    for loc, lang in LOCALES.items():
        for mo in sorted((root / loc / "LC_MESSAGES").glob("*.mo")):
            try:
                cat = gettext.GNUTranslations(mo.open("rb"))._catalog  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001, S112
                continue
            for k, v in cat.items():
                msgid = k[0] if isinstance(k, tuple) else k
                src, tr = " ".join(str(msgid).split()), " ".join(str(v).split())
                if keep(src):
                    by["English"].add(src)
                if keep(tr) and tr != src:  # an untranslated entry repeats its English id
                    by[lang].add(tr)
    return {k: sorted(v) for k, v in by.items()}


def _langid_pick(r: np.random.Generator, per_lang: int) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for lang, ss in sorted(_sentences().items()):
        for i in r.permutation(len(ss))[:per_lang]:
            texts.append(ss[i])
            labels.append(lang)
    return texts, labels


def _counts(texts: list[str]) -> np.ndarray:
    vec, _, _ = _langid()
    return vec.transform(texts).toarray().astype(np.float32)


def d_langid(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """real sentences: this machine's gettext catalogues in the 10 languages, at random, as counts"""
    texts, _ = _langid_pick(r, 8)
    order = r.permutation(len(texts))[:n]
    return {"counts": _counts([texts[i] for i in order])[:, None]}


def _langid_task(ref: Path, model: Path) -> dict[str, Any]:
    _, _, langs = _langid()
    texts, labels = _langid_pick(np.random.default_rng(34), 100)
    x = _counts(texts)
    sa, sb = _session(ref), _session(model)
    pa = np.concatenate([np.argmax(sa.run(None, {"counts": x[i:i + 50]})[0], 1) for i in range(0, len(x), 50)])
    pb = np.concatenate([np.argmax(sb.run(None, {"counts": x[i:i + 50]})[0], 1) for i in range(0, len(x), 50)])
    y = np.array([langs.index(v) for v in labels])
    return {"samples": len(x), "top1_agreement": float(np.mean(pa == pb)),
            "accuracy_fp32": float(np.mean(pa == y)), "accuracy_file": float(np.mean(pb == y))}


# ---------------------------------------------------------------------------------------------


def task(name: str, model: Path, out: Path) -> dict[str, Any]:
    ref = out / f"{name}.onnx"
    return (_magika_task if name == "magika" else _langid_task)(ref, model)


MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "magika": (MAGIKA, MAGIKA_MODEL,
               "Google Magika standard_v3_3 file content-type identifier (tf2onnx 1.16.1 from JAX, IR 8, "
               "opset 15 + ai.onnx.ml 2): int32 bytes [N, 2048] (first + last 1024 bytes) -> 214 "
               "content-type probabilities; one-hot 257, MatMul 257x64, Conv 512x256x5, 2 LayerNorm "
               "(decomposed), GlobalMaxPool, MatMul 512x214, Softmax (decomposed)",
               d_magika, {"kind": "top1", "output": 0}),
    "langid_svc": (LANGID, "langid/artifacts/model.pkl",
                   "langid-chat's LinearSVC text language identifier (15 languages incl. 5 romanised "
                   "code-mixed ones) over character 1-3-gram counts, as an nn.Linear export: Gemm "
                   "[N, 90093] x [15, 90093]^T (opset 17, IR 8) -> 15 decision scores",
                   d_langid, {"kind": "top1", "output": 0}),
}  # fmt: skip
# the file written to the cache (magika: the wheel member; langid_svc: the graph built from the pickle)
SHA256: dict[str, str] = {
    "magika": "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
    "langid_svc": "ee88c16bf783a0696c0b329c3327901d04ed8fc5a71226c504f35242fb4b70f8",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        dest.write_bytes(member(out, spec, mem) if name == "magika" else langid_onnx())
    entry = manifest_entry(out, name, dest.name, spec, mem, SHA256[name] if check else None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    if name == "langid_svc":
        entry["source"] = f"PyPI `{spec}`, `{mem}` + `langid/artifacts/vectorizer.pkl` (written as ONNX here)"
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
