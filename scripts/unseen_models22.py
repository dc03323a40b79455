"""Fetch the twenty-second batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch22.md`` sweeps them (``bench_real_models.py --root DIR``).
Kinds no earlier batch had: a channel-last semantic segmenter at 1024 x 1024, a scikit-learn MLP
over sentence embeddings (skl2onnx, ZipMap), and a time-series forecaster with a boolean mask input
and quantile outputs. Files from PyPI wheels, pinned by sha256:

- ``pgc_nucseg``: napari-czann-segment's nucleus detector (``napari-czann-segment==0.1.2``,
  ``napari_czann_segment/_data/PGC_20X_nucleus_detector.czseg``, a Zeiss arivis/APEER zip whose
  ``.model`` member is the ONNX file, 20 MB): tf2onnx 1.9.2, opset 12, an EfficientNet-style
  encoder (SE blocks) and a DepthToSpace decoder, NHWC [N, 1024, 1024, 1] in [0, 1] ->
  [N, 1024, 1024, 2] softmax (background, nucleus). Data: crops of the wheel's own label-free
  image ``PGC_20X.czi`` (read with czifile, installed under ``out/pydeps`` without dependencies
  beside tifffile);
- ``skill_mlp``: skill-extractor's skill / not-skill classifier (``skill-extractor==0.2.0``,
  ``skill_extractor/data/mlp.json``: a trained scikit-learn ``MLPClassifier`` 384-256-128-64-1 as
  base64 float32), put back into an ``MLPClassifier`` and converted by skl2onnx 1.20 at its
  defaults (``to_onnx``: int64 label + ZipMap probabilities) in a Python that has skl2onnx
  (``SKL_PYTHON``, batch 17's venv). Data: all-MiniLM-L6-v2 embeddings (batch 17's torch BERT on
  the pinned safetensors) of ``"{skill} : {context}"``, as the package's extractor makes them;
- ``fracast``: the Fracast-0 time-series forecaster (``fracast==0.1.0``,
  ``fracast/weights/model.safetensors``, 344 KB) with the package's own model code, exported by
  torch 2.13 defaults (dynamo, external data): a normalised context [1, 1, 2048] and its bool
  observed mask -> [1, 48, 9] quantile forecasts (0.1 ... 0.9). Needs ``safetensors`` (under
  ``out/pydeps``).

    /work/venv-torch/bin/python scripts/unseen_models22.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models22.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import json
import os
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
from unseen_models4 import EXTRA_METRICS, batch_cli, wordpiece  # noqa: E402
from unseen_models15 import _package, _pinned_member  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen22"
SKL_PYTHON = os.environ.get("SKL_PYTHON", "/tmp/venv-skl17/bin/python")
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

NAPARI = "napari-czann-segment==0.1.2"
SKILL = "skill-extractor==0.2.0"
FRACAST = "fracast==0.1.0"


def _no_deps(out: Path, spec: str, top: str) -> None:
    """a small package installed once under out/pydeps without its dependencies (czifile would
    pull numpy and imagecodecs; the file it reads is uncompressed), put on sys.path"""
    import importlib

    deps = out / "pydeps"
    if not (deps / top).exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                        str(deps), spec], check=True)  # fmt: skip
    if str(deps) not in sys.path:
        sys.path.insert(0, str(deps))
        importlib.invalidate_caches()


# ---------------------------------------------------------------------------------------------
# napari-czann-segment: the PGC 20x nucleus detector on its own sample image

PGC_MEMBER = "napari_czann_segment/_data/PGC_20X_nucleus_detector.czseg"
PGC_TILE = 1024
PGC_IMAGE_SHA256 = "7adbf0baa6206349111272d721005b8abcfd18ac695f58cb206e2e72da15c864"


def export_pgc_nucseg(out: Path, check: bool) -> None:
    """the ONNX file inside the .czseg (a zip: model id, an XML of classes / tile size, the .model)"""
    czseg = _pinned_member(out, NAPARI, PGC_MEMBER, "PGC_20X_nucleus_detector.czseg",
                           SOURCE_SHA256["pgc_nucseg"] if check else None)  # fmt: skip
    with zipfile.ZipFile(czseg) as z:
        inner = next(n for n in z.namelist() if n.endswith(".model"))
        (out / "pgc_nucseg.onnx").write_bytes(z.read(inner))


def _pgc_image(out: Path) -> np.ndarray:
    """the wheel's PGC_20X.czi (2755 x 3675 Gray16, uncompressed), read by czifile"""
    _pinned_member(out, NAPARI, "napari_czann_segment/_data/PGC_20X.czi", "PGC_20X.czi", PGC_IMAGE_SHA256)
    _no_deps(out, "tifffile==2026.3.3", "tifffile")
    _no_deps(out, "czifile==2019.7.2.3", "czifile")
    import czifile

    return np.asarray(czifile.imread(str(out / "PGC_20X.czi"))).squeeze()


def d_pgc_nucseg(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """1024 x 1024 crops of the wheel's own label-free image of cultured cells (PGC_20X.czi, 2755 x
    3675 Gray16) at random offsets, turned by a multiple of 90 degrees and mirrored at random, gain
    0.8-1.2 about the median, / 65535 as the package's predict_tiles2d does (do_rescale by the
    bit depth), [1, 1024, 1024, 1]"""
    img = _pgc_image(out).astype(np.float64)
    med = float(np.median(img))
    xs = []
    for _ in range(n):
        y0 = int(r.integers(0, img.shape[0] - PGC_TILE + 1))
        x0 = int(r.integers(0, img.shape[1] - PGC_TILE + 1))
        t = np.rot90(img[y0 : y0 + PGC_TILE, x0 : x0 + PGC_TILE], int(r.integers(4)))
        if r.random() < 0.5:
            t = t[:, ::-1]
        t = np.clip(med + (t - med) * r.uniform(0.8, 1.2), 0, 65535)
        xs.append((t / 65535).astype(np.float32)[None, :, :, None])
    return {"input:0": np.stack(xs)}


def _iou(ref: list, got: list) -> dict[str, Any]:
    """mean IoU over the two classes and the nucleus class's IoU, of the arg-max maps vs fp32's"""
    inter, union = np.zeros(2), np.zeros(2)
    for r, x in zip(ref, got, strict=True):
        a, b = np.asarray(r[0]).argmax(-1), np.asarray(x[0]).argmax(-1)
        for c in range(2):
            inter[c] += np.sum((a == c) & (b == c))
            union[c] += np.sum((a == c) | (b == c))
    iou = inter / np.maximum(union, 1)
    return {"miou": float(iou.mean()), "nucleus_iou": float(iou[1])}


EXTRA_METRICS["pgc_nucseg"] = _iou


# ---------------------------------------------------------------------------------------------
# skill-extractor: a scikit-learn MLP over MiniLM sentence embeddings, through skl2onnx

SKL_MLP_CODE = r"""
import json, base64, sys
import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import LabelBinarizer
from skl2onnx import to_onnx

spec = json.load(open(sys.argv[1]))
ws = [np.frombuffer(base64.b64decode(l["weights_b64"]), np.float32).reshape(l["shape"])
      for l in spec["layers"]]
bs = [np.frombuffer(base64.b64decode(l["bias_b64"]), np.float32) for l in spec["layers"]]
clf = MLPClassifier(hidden_layer_sizes=tuple(w.shape[1] for w in ws[:-1]), activation="relu")
clf.coefs_, clf.intercepts_ = [w.astype(np.float64) for w in ws], [b.astype(np.float64) for b in bs]
clf.n_layers_, clf.n_outputs_, clf.out_activation_ = len(ws) + 1, 1, "logistic"
clf.classes_, clf.n_features_in_ = np.array([0, 1]), ws[0].shape[0]
clf._label_binarizer = LabelBinarizer().fit([0, 1])
x = np.load(sys.argv[3]).astype(np.float32)
h = x
for i, (w, b) in enumerate(zip(ws, bs)):
    h = h @ w + b
    h = np.maximum(h, 0) if i < len(ws) - 1 else 1 / (1 + np.exp(-h))
assert np.allclose(clf.predict_proba(x)[:, 1], h[:, 0], atol=1e-5), "MLPClassifier != the package's MLP"
onx = to_onnx(clf, x[:1])
open(sys.argv[2], "wb").write(onx.SerializeToString())
"""

TASKS = {
    "python": ["Build data pipelines in {s} and deploy them to production",
               "The snake exhibit at the zoo has a large {s} from Burma"],
    "excel": ["Advanced {s} skills including pivot tables and VLOOKUP are required",
              "We want every new hire to {s} in customer service and grow with us"],
    "go": ["Our backend services are written in {s} and run on Kubernetes",
           "You will {s} to client sites twice a week to meet the account managers"],
    "spring": ["Experience with Java, {s} Boot and REST APIs is a must",
               "Our office hosts a team picnic every {s} and a holiday party in December"],
    "rust": ["Systems programming in {s} or C++ with a focus on memory safety",
             "Inspect the trailers for {s} and damage before each delivery run"],
    "swift": ["Ship native iOS features in {s} and SwiftUI with our mobile team",
              "We value a {s} response to customer emails, within one business day"],
    "sales": ["Five years of B2B {s} experience and a track record of closing deals",
              "The {s} office is on the third floor next to the cafeteria"],
    "tableau": ["Create dashboards in {s} or Power BI for the finance leadership team",
                "Guests enjoyed a {s} of local cheeses at the welcome reception"],
    "sql": ["Write complex {s} queries against our PostgreSQL warehouse",
            "Parking is available at the {s} building across the street"],
    "forklift": ["Operate a {s} safely and hold a valid certification",
                 "The toy {s} in the lobby was a gift from our first customer"],
}
CONTEXT = ["We are a fast-growing logistics company in Chicago looking for a motivated colleague.",
           "Responsibilities include working with cross-functional teams and reporting to the director.",
           "Competitive salary, health insurance and a hybrid schedule are offered.",
           "Requirements: a bachelor's degree or equivalent experience and strong communication skills.",
           "Join our team and help millions of customers every day.",
           "The position is full time and based in our Austin office."]


def _minilm(out: Path) -> tuple[Any, dict[str, int]]:
    """all-MiniLM-L6-v2 (batch 17's torch BERT on the pinned safetensors) and its vocabulary, under
    the batch 17 cache's wheels folder layout (out/wheels)"""
    from unseen_models4 import _vocab
    from unseen_models17 import _bert, _minilm_state

    return _bert(_minilm_state(out)), _vocab(out)


def _skill_texts(r: np.random.Generator, n: int, out: Path) -> list[str]:
    """``"{skill} : {context}"`` as SkillExtractor.candidates makes them: a gazetteer skill and the
    words around it in a job posting; half the skills are ambiguous words (go, spring, rust...) in
    a skill or a non-skill sense, half are drawn from the package's 30957-skill gazetteer"""
    data = _package(out, SKILL, "skill_extractor") / "skill_extractor/data"
    skills = json.loads((data / "skills.json").read_text())
    texts = []
    for _ in range(n):
        before = " ".join(CONTEXT[i] for i in r.choice(len(CONTEXT), 2, replace=False))
        after = CONTEXT[int(r.integers(len(CONTEXT)))]
        if r.random() < 0.5:
            s = list(TASKS)[int(r.integers(len(TASKS)))]
            sent = TASKS[s][int(r.integers(2))].format(s=s)
        else:
            s = skills[int(r.integers(len(skills)))]
            sent = ["Hands-on experience with {s} is required.", "Familiarity with {s} is a plus.",
                    "You will mentor juniors in {s}.", "Our team lunch talk was about {s} last week."][
                int(r.integers(4))].format(s=s)  # fmt: skip
        words = f"{before} {sent} {after}".split()
        at = len(before.split()) + sent.split().index(next(w for w in sent.split() if s.split()[0] in w))
        texts.append(f"{s} : " + " ".join(words[max(0, at - 20) : at + 21]))
    return texts


def d_skill_mlp(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """all-MiniLM-L6-v2 embeddings (mean-pooled, L2-normalised, WordPiece to 128 tokens) of
    ``"{skill} : {context}"`` strings as the package's extractor makes them: job-posting sentences
    with ambiguous words in a skill / non-skill sense, or gazetteer skills, [1, 384]"""
    import torch

    net, vocab = _minilm(out)
    texts = _skill_texts(r, n, out)
    ids, masks = zip(*(wordpiece(vocab, t, 128) for t in texts), strict=True)
    with torch.no_grad():
        emb = net(torch.from_numpy(np.stack(ids)), torch.from_numpy(np.stack(masks))).numpy()
    return {"X": emb.astype(np.float32)[:, None]}


def export_skill_mlp(out: Path, check: bool) -> None:
    spec = _pinned_member(out, SKILL, "skill_extractor/data/mlp.json", "skill_mlp.json",
                          SOURCE_SHA256["skill_mlp"] if check else None)  # fmt: skip
    probe = out / "skill_probe.npy"
    np.save(probe, d_skill_mlp(np.random.default_rng(0), 8, out)["X"][:, 0])
    subprocess.run([SKL_PYTHON, "-c", SKL_MLP_CODE, str(spec), str(out / "skill_mlp.onnx"), str(probe)],
                   check=True)  # fmt: skip
    probe.unlink()


def _skill_probs(ref: list, got: list) -> dict[str, Any]:
    """P(skill) from the ZipMap output (a list of {class: probability}) or a [N, 2] array"""

    def p(o: Any) -> float:
        return float(o[0][1]) if isinstance(o, list) else float(np.asarray(o).reshape(-1, 2)[0, 1])

    a, b = np.array([p(s[1]) for s in ref]), np.array([p(s[1]) for s in got])
    return {"decisions_at_0.5": float(np.mean((a >= 0.5) == (b >= 0.5))),
            "mean_abs_prob": float(np.mean(np.abs(a - b))), "max_abs_prob": float(np.max(np.abs(a - b)))}


EXTRA_METRICS["skill_mlp"] = _skill_probs


# ---------------------------------------------------------------------------------------------
# Fracast-0 (time-series forecasting)

FR_W, FR_H = 2048, 48


def _fracast(out: Path, check: bool) -> Any:
    import torch

    _pinned_member(out, FRACAST, "fracast/weights/model.safetensors", "fracast_model.safetensors",
                   SOURCE_SHA256["fracast"] if check else None)  # fmt: skip
    _no_deps(out, "safetensors==0.8.0", "safetensors")
    _package(out, FRACAST, "fracast")
    from fracast.inference import FracastModel

    m = FracastModel.from_pretrained(weights="fp32")

    class Forecaster(torch.nn.Module):
        """FracastModel._predict_rows' two calls on normalised rows"""

        def __init__(self) -> None:
            super().__init__()
            self.core, self.head = m.core, m.head

        def forward(self, values: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
            hidden = self.core(values, observed, observed.to(torch.float32))
            return self.head.forward_horizon(hidden, last_obs=values[:, 0, -1:], ctx=values[:, 0],
                                             ctx_mask=observed[:, 0])  # fmt: skip

    return Forecaster().eval()


def export_fracast(out: Path, check: bool) -> None:
    import torch

    net = _fracast(out, check)
    a = d_fracast(np.random.default_rng(0), 1, out)
    torch.onnx.export(net, (torch.from_numpy(a["values"][0]), torch.from_numpy(a["observed"][0])),
                      str(out / "fracast.onnx"))  # fmt: skip


def _series(r: np.random.Generator, length: int) -> np.ndarray:
    """one series of ``length`` steps: hourly load (daily + weekly cycles), daily retail (weekly
    cycle, trend, holidays), a random walk, intermittent demand (counts, mostly zero) or a
    noisy damped oscillation"""
    t = np.arange(length, dtype=np.float64)
    kind = int(r.integers(5))
    if kind == 0:
        x = (10 + 3 * np.sin(2 * np.pi * (t / 24 + r.random())) + 1.5 * np.sin(2 * np.pi * t / 168)
             + 0.5 * r.normal(size=length))  # fmt: skip
    elif kind == 1:
        week = r.uniform(0.5, 1.5, 7)
        x = 100 * (1 + r.uniform(-2, 2) * t / length) * week[(t % 7).astype(int)] + 5 * r.normal(size=length)
        x[r.choice(length, length // 60, replace=False)] *= 1.8
    elif kind == 2:
        x = 50 + np.cumsum(r.normal(r.uniform(-0.05, 0.05), 1, length))
    elif kind == 3:
        x = r.poisson(r.uniform(0.2, 2), length) * (r.random(length) < 0.3)
    else:
        p = r.uniform(8, 80)
        x = np.exp(-t / r.uniform(length, 4 * length)) * np.sin(2 * np.pi * t / p)
        x += 0.2 * r.normal(size=length)
    return x


def d_fracast(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """synthetic series (hourly load, daily retail, random walks, intermittent demand, damped
    oscillations) with 256-2048 observed steps (the rest left-padded unobserved), 3 % missing in
    a third of them, min-max normalised over the observed tail as FracastModel._predict_rows does:
    values [1, 1, 2048] (0 where unobserved) and observed [1, 1, 2048] bool. The 48 true next
    steps, normalised the same way, go to out/fracast_future.npy (the pinball loss of --evaluate)"""
    vals, obs, fut = [], [], []
    for _ in range(n):
        length = int(r.choice([256, 512, 1024, 2048]))
        x = _series(r, length + FR_H)
        ctx, future = x[:length].copy(), x[length:]
        m = np.ones(length, bool)
        if r.random() < 1 / 3:
            m[r.choice(length, length * 3 // 100, replace=False)] = False
        loc = ctx[m].min()
        span = max(ctx[m].max() - loc, 1e-5)
        v = np.zeros(FR_W, np.float32)
        o = np.zeros(FR_W, bool)
        v[FR_W - length :] = np.where(m, (ctx - loc) / span, 0)
        o[FR_W - length :] = m
        vals.append(v[None, None])
        obs.append(o[None, None])
        fut.append((future - loc) / span)
    if n > 1:
        np.save(out / "fracast_future.npy", np.stack(fut).astype(np.float32))
    return {"values": np.stack(vals), "observed": np.stack(obs)}


QUANTILES = np.arange(1, 10) / 10


def _pinball(ref: list, got: list) -> dict[str, Any]:
    """median forecast vs fp32's (mean |difference|, in context ranges) and the mean pinball loss
    of the 9 quantiles against the true next 48 steps, fp32 -> this file (eval = samples 24-55;
    the true steps are read from the default cache, DEFAULT_OUT / fracast_future.npy)"""
    future = np.load(DEFAULT_OUT / "fracast_future.npy")[24 : 24 + len(ref)]

    def loss(q: np.ndarray) -> float:
        e = future[:, :, None] - q
        return float(np.mean(np.maximum(QUANTILES * e, (QUANTILES - 1) * e)))

    a = np.stack([np.asarray(s[0])[0] for s in ref])
    b = np.stack([np.asarray(s[0])[0] for s in got])
    return {"median_mean_abs": float(np.mean(np.abs(a[..., 4] - b[..., 4]))),
            "pinball_fp32": loss(a), "pinball": loss(b)}


EXTRA_METRICS["fracast"] = _pinball


# ---------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    # per-pixel arg-max over the last (class) axis vs fp32: the bench's top1 reads [..., C] rows
    "pgc_nucseg": (NAPARI, PGC_MEMBER,
                   "Zeiss/APEER nucleus segmenter (PGC, 20x): tf2onnx 1.9.2 opset 12, NHWC 1024x1024x1 -> "
                   "1024x1024x2 softmax",
                   d_pgc_nucseg, {"kind": "top1", "output": 0}),  # fmt: skip
    # output 0 is the int64 label (0/1 at P >= 0.5): agreement with fp32
    "skill_mlp": (SKILL, "skill_extractor/data/mlp.json",
                  "skill-extractor's sklearn MLPClassifier 384-256-128-64-1 over MiniLM embeddings, "
                  "skl2onnx 1.20 defaults (ZipMap)",
                  d_skill_mlp, {"kind": "within", "output": 0, "tol": 0.0}),  # fmt: skip
    # all 48 x 9 quantile forecasts within 2 % of the context's range of fp32's
    "fracast": (FRACAST, "fracast/weights/model.safetensors",
                "Fracast-0 forecaster (dilated causal conv stack + gather head), torch 2.13 export, ext. "
                "data: context 2048 + bool mask -> 48 x 9 quantiles",
                d_fracast, {"kind": "within", "output": 0, "tol": 0.02}),  # fmt: skip
}
SOURCE_SHA256: dict[str, str | None] = {
    "pgc_nucseg": "12d548efc2a23aa8ac665c069a4cfd8ce83218a11d275ea4dac3e8520c80ac01",
    "skill_mlp": "3c4cbca744b6a245910d84af6d46a3855acececfdbf382414d76991fa20076ee",
    "fracast": "0d678f123f3d1f91c5065cca2b5d40eccc469360afc2381b27290486011ded2c",
}
EXPORTS = {"pgc_nucseg": export_pgc_nucseg, "skill_mlp": export_skill_mlp, "fracast": export_fracast}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, member, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        EXPORTS[name](out, check)
    src = {"pgc_nucseg": "PGC_20X_nucleus_detector.czseg", "skill_mlp": "skill_mlp.json",
           "fracast": "fracast_model.safetensors"}[name]  # fmt: skip
    print(name, "source sha256", hashlib.sha256((out / src).read_bytes()).hexdigest())
    # the file itself is made here (extracted, converted or exported): its source is pinned
    entry = manifest_entry(out, name, dest.name, spec, member, None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    how = {"pgc_nucseg": "the .czseg zip's `.model` member",
           "skill_mlp": "converted by skl2onnx 1.20 defaults",
           "fracast": "exported by torch 2.13 defaults"}[name]  # fmt: skip
    entry["source"] = f"PyPI `{spec}`, `{member}`, {how}"
    entry["source_sha256"] = hashlib.sha256((out / src).read_bytes()).hexdigest()
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
