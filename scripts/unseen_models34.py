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
- ``sms_spam``: an **SMS spam filter** committed to GitHub ``a16z/jolt``
  (``onnx-tracer/models/medium_text_classification/network.onnx``, PyTorch 2.1.1, IR 8, opset 15;
  trained by the folder's ``gen.py`` on its ``Spam_SMS.csv``): int64 word ids [N, 100] (lower-cased,
  split on whitespace, a 1000-word vocabulary, 0 = unknown / padding) -> Embedding 1001 x 16 ->
  mean over words -> a LayerNorm written out (ReduceMean / Sub / Pow / Sqrt / Div) -> Gemm 16 -> 32
  -> Relu -> Gemm 32 -> 2 -> Softmax: P(ham), P(spam).
- ``fsanet_1x1``: **FSA-Net head-pose estimator** (yaw, pitch, roll in degrees), committed to GitHub
  ``omasaht/headpose-fsanet-pytorch`` (``pretrained/fsanet-1x1-iter-688590.onnx``, **PyTorch 1.5,
  IR 6, opset 9**, BatchNormalization unfolded): a BGR face crop [1, 3, 64, 64], (x - 127.5) / 128
  -> two streams of separable convs -> fine-grained structure mapping (attention maps, MatMul)
  -> capsule layer with 3 routing iterations (Softmax / MatMul / squash) -> SSR-Net soft stagewise
  regression -> [1, 3] angles.

Data: real inputs. Magika reads real files: every blob of GitHub
``microsoft/Windows-Machine-Learning`` at the commit batch 33 pinned (C++ / C# / headers, XAML,
solution and project files, PNG / JPEG / ICO / GIF images, ONNX models, CSV, JSON, Markdown,
TypeScript, Python, pickles, DLLs...). The language identifier reads real translated sentences:
the gettext catalogues (``/usr/share/locale/<ll>/LC_MESSAGES/*.mo``) of this machine's Debian
packages, English from their message ids, the other nine languages from their translations
(strings of 4+ words, 25-200 characters), turned into counts by the package's own vectorizer.
The spam filter reads the repository's own ``Spam_SMS.csv`` (5,574 real SMS, 747 spam), tokenised
as its ``run_model.py`` does. The head-pose net sees the 63 faces UltraFace (batch 11's file,
``~/.cache/onnxcompress-unseen11/ultraface.onnx``, score 0.7) finds in the photos of
``dog-qiuqiu/FastestDet`` and ``cunjian/pytorch_face_landmark`` (three group photos), each box
jittered (side x 1.0-1.3, centre +-5 %), cropped with black borders, 64 x 64 bilinear, BGR as the
repository's ``demo.py`` feeds OpenCV frames.

``--evaluate`` adds the task metrics: magika's top-1 agreement with fp32 over **every** blob of
the repository (and accuracy on the ones whose extension names a Magika label); the language
identifier's top-1 agreement and accuracy over 100 sentences a language (1000); the spam filter's
agreement, accuracy and spam recall / precision on all 5,574 SMS (80 % of them were its training set);
the head-pose net's share of crops whose three angles all stay within 2 degrees of fp32's (the
bench's ``within`` metric) and mean / max absolute angle error (degrees) over 189 crops (each of the
63 faces at side x 1.0, 1.15, 1.3).

    /work/venv/bin/python scripts/unseen_models34.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models34.py --evaluate NAME MODEL
"""

from __future__ import annotations

import gettext
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
JOLT = ("a16z/jolt", "39dcb7edc2ac1ee1da4fe2473ec2d127283208f0")
SMS_DIR = "onnx-tracer/models/medium_text_classification/"
FSANET = ("omasaht/headpose-fsanet-pytorch", "002549c981b607f722e0810d999afcde7e5aaa66")
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


def _top1s(sess: Any, name: str, x: np.ndarray, step: int) -> np.ndarray:
    """arg-max of the first output over ``x`` run ``step`` rows at a time"""
    runs = [sess.run(None, {name: x[i:i + step]})[0] for i in range(0, len(x), step)]
    return np.concatenate([np.argmax(r, 1) for r in runs])


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
        got = subprocess.run(["git", "-C", str(mirror), "cat-file", "blob", sha.decode()],
                             capture_output=True)  # fmt: skip
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
    pa, pb = _top1s(sa, "bytes", x, 64), _top1s(sb, "bytes", x, 64)
    labels = _magika_labels()
    want = [EXT_LABEL.get(p.rsplit(".", 1)[-1].lower()) if "." in p.rsplit("/", 1)[-1] else None
            for p, _ in blobs]  # fmt: skip
    known = [i for i, w in enumerate(want) if w is not None]
    acc = lambda p: float(np.mean([labels[p[i]] == want[i] for i in known]))  # noqa: E731
    return {"samples": len(x), "top1_agreement": float(np.mean(pa == pb)), "labelled": len(known),
            "accuracy_fp32": acc(pa), "accuracy_file": acc(pb),
            "changed": [f"{blobs[i][0]}: {labels[pa[i]]} -> {labels[pb[i]]}"
                        for i in np.flatnonzero(pa != pb)][:20]}  # fmt: skip


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
    pa, pb = _top1s(sa, "counts", x, 50), _top1s(sb, "counts", x, 50)
    y = np.array([langs.index(v) for v in labels])
    return {"samples": len(x), "top1_agreement": float(np.mean(pa == pb)),
            "accuracy_fp32": float(np.mean(pa == y)), "accuracy_file": float(np.mean(pb == y))}


# ---------------------------------------------------------------------------------------------
# the SMS spam filter


@cache
def _sms() -> tuple[list[str], np.ndarray]:
    import csv  # noqa: PLC0415
    import io  # noqa: PLC0415

    rows = list(csv.reader(io.StringIO(git_file(JOLT, SMS_DIR + "Spam_SMS.csv").decode("utf-8-sig"))))[1:]
    return [m for _, m in rows], np.array([c == "spam" for c, _ in rows], np.int64)


def sms_ids(texts: list[str]) -> np.ndarray:
    """``run_model.py``'s ``tokenize_sms``: lower-case, split, vocab id (0 unknown), first 100, 0-padded"""
    vocab = json.loads(git_file(JOLT, SMS_DIR + "vocab.json"))
    out = np.zeros((len(texts), 100), np.int64)
    for i, t in enumerate(texts):
        ids = [vocab.get(w, 0) for w in t.lower().split()][:100]
        out[i, :len(ids)] = ids
    return out


def d_sms(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """real SMS: the repository's Spam_SMS.csv (5,574 messages) at random, as run_model.py tokenises them"""
    texts, _ = _sms()
    return {"input": sms_ids([texts[i] for i in r.permutation(len(texts))[:n]])[:, None]}


def _sms_task(ref: Path, model: Path) -> dict[str, Any]:
    texts, y = _sms()
    x = sms_ids(texts)
    sa, sb = _session(ref), _session(model)
    pa, pb = _top1s(sa, "input", x, 500), _top1s(sb, "input", x, 500)

    def stats(p: np.ndarray) -> dict[str, float]:
        return {"accuracy": float(np.mean(p == y)), "spam_recall": float(np.mean(p[y == 1] == 1)),
                "spam_precision": float(np.mean(y[p == 1] == 1))}

    return {"samples": len(x), "top1_agreement": float(np.mean(pa == pb)), "changed": int(np.sum(pa != pb)),
            "fp32_stats": stats(pa), "file_stats": stats(pb)}


# ---------------------------------------------------------------------------------------------
# FSA-Net head pose


@cache
def _faces() -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """(photo, box) of every face batch 11's UltraFace (fp32, score 0.7) finds in its photos"""
    import unseen_models11 as u11  # noqa: PLC0415

    uf = Path.home() / ".cache" / "onnxcompress-unseen11" / "ultraface.onnx"
    if not uf.exists():
        raise SystemExit(f"{uf} missing: make it with scripts/unseen_models11.py --only ultraface")
    sess = u11.session(uf)
    out = []
    for img in u11.photos():
        h, w = img.shape[:2]
        x = ((u11.resize(img, 240, 320).astype(np.float32) - 127) / 128).transpose(2, 0, 1)[None]
        scores, boxes = sess.run(None, {"input": x})
        for _, _, b in u11.ultraface_boxes(scores, boxes):
            x1, y1, x2, y2 = (int(v) for v in np.asarray(b) * np.array([w, h, w, h]))
            out.append((img, (x1, y1, x2, y2)))
    return out


def face_crop(img: np.ndarray, box: tuple[int, int, int, int], scale: float, dx: float,
              dy: float) -> np.ndarray:  # fmt: skip
    """the square of side ``scale`` x the box's longer side around its centre (shifted by dx, dy of
    that side), black outside the photo, 64 x 64 bilinear, BGR, (x - 127.5) / 128, CHW"""
    from PIL import Image  # noqa: PLC0415

    x1, y1, x2, y2 = box
    side = int(max(x2 - x1, y2 - y1) * scale)
    cx, cy = (x1 + x2) // 2 + int(dx * side), (y1 + y2) // 2 + int(dy * side)
    h, w = img.shape[:2]
    pad = np.zeros((side, side, 3), np.uint8)
    ox, oy = cx - side // 2, cy - side // 2
    part = img[max(0, oy):min(h, oy + side), max(0, ox):min(w, ox + side)]
    pad[max(0, -oy):max(0, -oy) + part.shape[0], max(0, -ox):max(0, -ox) + part.shape[1]] = part
    small = np.asarray(Image.fromarray(pad).resize((64, 64), Image.BILINEAR), np.float32)[..., ::-1]
    return ((small - 127.5) / 128).transpose(2, 0, 1).astype(np.float32)


def d_fsanet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """the 63 faces UltraFace finds in FastestDet's and pytorch_face_landmark's photos, jittered
    (side x 1.0-1.3, centre +-5 %), 64 x 64 BGR (x - 127.5) / 128; eval sample k of face k mod 63"""
    faces = _faces()
    xs = []
    for k in range(n):
        j = int(r.integers(len(faces))) if k < 24 else (k - 24) * 2 % len(faces)
        img, box = faces[j]
        xs.append(face_crop(img, box, r.uniform(1.0, 1.3), r.uniform(-0.05, 0.05), r.uniform(-0.05, 0.05)))
    return {"input": np.stack(xs)[:, None]}


def _fsanet_task(ref: Path, model: Path) -> dict[str, Any]:
    x = [face_crop(img, box, s, 0.0, 0.0)[None] for img, box in _faces() for s in (1.0, 1.15, 1.3)]
    sa, sb = _session(ref), _session(model)
    a = np.concatenate([sa.run(None, {"input": v})[0] for v in x])
    b = np.concatenate([sb.run(None, {"input": v})[0] for v in x])
    err = np.abs(a - b)
    return {"samples": len(x), "within_2deg": float(np.mean(err.max(1) <= 2.0)),
            "angle_mae_deg": float(err.mean()),
            "angle_mae_deg_yaw_pitch_roll": [float(v) for v in err.mean(0)],
            "angle_max_err_deg": float(err.max()), "fp32_angle_std_deg": [float(v) for v in a.std(0)]}


# ---------------------------------------------------------------------------------------------


def task(name: str, model: Path, out: Path) -> dict[str, Any]:
    ref = out / f"{name}.onnx"
    return {"magika": _magika_task, "langid_svc": _langid_task, "sms_spam": _sms_task,
            "fsanet_1x1": _fsanet_task}[name](ref, model)


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
    "sms_spam": (f"{JOLT[0]}@{JOLT[1][:7]}", SMS_DIR + "network.onnx",
                 "SMS spam filter (a16z/jolt onnx-tracer example; PyTorch 2.1.1, IR 8, opset 15): int64 "
                 "word ids [N, 100] -> Gather 1001x16, ReduceMean, LayerNorm written out, Gemm 16->32, "
                 "Relu, Gemm 32->2, Softmax -> P(ham), P(spam)",
                 d_sms, {"kind": "top1", "output": 0}),
    "fsanet_1x1": (f"{FSANET[0]}@{FSANET[1][:7]}", "pretrained/fsanet-1x1-iter-688590.onnx",
                   "FSA-Net head pose, 1x1-conv scoring (PyTorch 1.5, IR 6, opset 9): BGR face "
                   "[1, 3, 64, 64] -> yaw, pitch, roll (degrees); 37 Conv (separable, BatchNormalization "
                   "unfolded), "
                   "13 Gemm, 10 MatMul (structure mapping, capsule routing x3), SSR regression",
                   d_fsanet, {"kind": "within", "output": 0, "tol": 2.0}),
}  # fmt: skip
# the file written to the cache (magika: the wheel member; langid_svc: the graph built from the pickle)
SHA256: dict[str, str] = {
    "magika": "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
    "langid_svc": "ee88c16bf783a0696c0b329c3327901d04ed8fc5a71226c504f35242fb4b70f8",
    "sms_spam": "9bcd343c9d0a9e96f1f1dfae3b664cf66a032ac061e56563497df7ae2b670db7",
    "fsanet_1x1": "d85e90cb4b9d3a87e81bbfdcfcd130cbe0e175407042e439a570aa396c44eda6",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        raw = {"magika": lambda: member(out, spec, mem), "langid_svc": langid_onnx,
               "sms_spam": lambda: git_file(JOLT, mem), "fsanet_1x1": lambda: git_file(FSANET, mem)}[name]()
        dest.write_bytes(raw)
    entry = manifest_entry(out, name, dest.name, spec, mem, SHA256[name] if check else None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    if name in ("sms_spam", "fsanet_1x1"):
        entry["source"] = f"GitHub `{spec}`, `{mem}`"
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
