"""Fetch the thirty-sixth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch36.md`` sweeps them (``bench_real_models.py --root DIR``).
Kinds no earlier batch had, judged at the sequence or rank level:

- ``e2k_c2k_enc`` / ``e2k_c2k_dec``: the **English -> katakana transliterator** of PyPI
  ``e2k==0.8.1`` (``e2k/models/model-c2k.safetensors``, float16 weights as the author ships them,
  read by the package's own numpy ``load_safetensors``; exported here to two ONNX graphs with torch
  2.13, opset 17): an attention GRU encoder-decoder run **greedily** by the package. Encoder: letter
  ids [N, T] -> Embedding 31x256 -> bidirectional GRU 256 -> Linear 512->256 -> tanh (memory).
  Decoder step: previous katakana id [N, 1], two GRU states [1, N, 256] and the memory ->
  Embedding 88x256 -> GRU -> 4-head attention over the memory -> GRU 512->256 -> Linear 256->88
  (next-katakana logits) and the two new states.
- ``e2k_accent``: the same wheel's **katakana pitch-accent predictor** (``e2k/models/accent.safetensors``,
  float16, exported the same way): katakana ids [N, T] -> Embedding 85x256 -> bidirectional GRU
  256 (final states) -> Linear 512->1, x T: the accent position the package rounds.
- ``wordllama_l2``: **WordLlama ``l2_supercat`` static text embedder** of PyPI
  ``wordllama==0.4.0.post1`` (``wordllama/weights/l2_supercat_256.safetensors``: a 32,000 x 256
  float16 token table distilled from LLM embeddings), written here as the package's ``embed``
  (Gather, masked average pool, L2 norm) in ONNX (opset 17): token ids [N, L] + mask -> [N, 256]
  unit vectors. Its users rank documents by cosine (``rank``, ``topk``, ``deduplicate``).

- ``silero_bel_q8`` / ``silero_bel``: the **Belarusian stress accentor** of PyPI ``silero-stress==1.5``
  (``silero_stress/data/accentor-bel.pt``, a ``torch.package``; weights read with torch): a
  fastText-style bag of char n-grams (104,632 x 16 table, **int8 with a float scale and zero point
  as its authors ship it**) + MLP 16->64->128->64->10 choosing the stressed vowel, written here in
  ONNX with the int8 table kept (Gather -> Cast -> Sub -> Mul, as ``load_accentor`` widens it) and
  with it widened to float32.

Data: real inputs. e2k: English words of the standard library's docstrings (batch 4's
``english_sentences``), lower-case a-z, 3-14 letters; the bench's samples are 8-letter words
(encoder: [1, 10] ids with <sos> / <eos>), and decoder steps recorded while fp32 decodes them
(a random step of each word). WordLlama: those docstring sentences, tokenised by the package's
``l2_supercat`` tokenizer (``tokenizers`` installed by ``pip install --target DIR/pylib``),
padded to 48 tokens. Accent: the katakana fp32's c2k pair writes for 900 docstring words (bench:
the five-kana ones). Stress: the package's own ``vocab-bel.gz`` (Belarusian words with the stressed
letter), n-gram ids as the package's ``word_ngrams`` / ``ngram_dict``, padded to 96.

``--evaluate`` adds the task metrics: e2k decodes 300 words greedily end to end (max 16 katakana,
the package's default) with the file in its place and fp32 for the other half: share of words whose
katakana string equals fp32's, mean character edit distance / fp32's length; fp32's agreement with
the package's own numpy decoder is reported too. WordLlama embeds every docstring sentence and, for
each as a query, ranks the others by cosine: recall@10 of fp32's top 10 and top-1 agreement.
The accent predictor: 600 words' rounded accent vs fp32's (and the package's). The stress models:
4,000 dictionary words, stressed vowel vs fp32's and accuracy against the dictionary.

    /work/venv/bin/python scripts/unseen_models36.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models36.py --evaluate NAME MODEL
"""

from __future__ import annotations

import json
import re
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
from unseen_models4 import batch_cli, english_sentences, evaluate, wheel  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen36"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]
E2K = "e2k==0.8.1"
E2K_MEMBER = "e2k/models/model-c2k.safetensors"
WORDLLAMA = "wordllama==0.4.0.post1"
WL_MEMBER = "wordllama/weights/l2_supercat_256.safetensors"
WL_TOKENIZER = "wordllama/tokenizers/l2_supercat_tokenizer_config.json"
TOKENIZERS = "tokenizers==0.23.3"
TORCH_PY = "/work/venv-torch/bin/python"
MAX_LEN = 16  # the package's default number of decoding steps
WL_LEN = 48


def _session(path: Path) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def _unpack(out: Path, spec: str, pkg: str) -> Path:
    dest = out / f"{pkg}_pkg"
    if not dest.exists():
        with zipfile.ZipFile(wheel(out, spec)) as z:
            z.extractall(dest)
    return dest


# ---------------------------------------------------------------------------------------------
# e2k: English -> katakana

_E2K_CHILD = r"""
import sys
out, pkg = sys.argv[1], sys.argv[2]
sys.path.insert(0, pkg)
import numpy as np, torch
from torch import nn
from e2k.inference import load_safetensors, to_fp32
w, meta = load_safetensors(open(pkg + "/e2k/models/model-c2k.safetensors", "rb").read())
w = {k: torch.from_numpy(np.array(v)) for k, v in to_fp32(w).items()}
D = w["e_emb.weight"].shape[1]

class Enc(nn.Module):
    def __init__(self):
        super().__init__()
        self.e_emb = nn.Embedding(*w["e_emb.weight"].shape)
        self.encoder = nn.GRU(D, D, batch_first=True, bidirectional=True)
        self.encoder_fc = nn.Sequential(nn.Linear(2 * D, D))
    def forward(self, src):
        o, _ = self.encoder(self.e_emb(src))
        return torch.tanh(self.encoder_fc(o))

class Dec(nn.Module):
    def __init__(self):
        super().__init__()
        self.k_emb = nn.Embedding(*w["k_emb.weight"].shape)
        self.pre_decoder = nn.GRU(D, D, batch_first=True)
        self.attn = nn.MultiheadAttention(D, 4, batch_first=True)  # weights only: run by hand below
        self.post_decoder = nn.GRU(2 * D, D, batch_first=True)
        self.fc = nn.Linear(D, w["fc.weight"].shape[0])
    def forward(self, token, h1, h2, memory):
        d, h1 = self.pre_decoder(self.k_emb(token), h1)
        a = self.attend(d, memory)
        x, h2 = self.post_decoder(torch.cat([d, a], -1), h2)
        return self.fc(x)[:, 0], h1, h2

def attend(self, q, kv):  # nn.MultiheadAttention's math, reshapes left dynamic for the export
    wq, wk, wv = self.attn.in_proj_weight.chunk(3)
    bq, bk, bv = self.attn.in_proj_bias.chunk(3)
    n, h = q.shape[0], 4
    q = nn.functional.linear(q, wq, bq).reshape(n, -1, h, D // h).transpose(1, 2)
    k = nn.functional.linear(kv, wk, bk).reshape(n, -1, h, D // h).transpose(1, 2)
    v = nn.functional.linear(kv, wv, bv).reshape(n, -1, h, D // h).transpose(1, 2)
    att = torch.softmax(q @ k.transpose(-1, -2) / (D // h) ** 0.5, -1)
    return self.attn.out_proj((att @ v).transpose(1, 2).reshape(n, -1, D))

Dec.attend = attend
enc, dec = Enc(), Dec()
for m in (enc, dec):
    sd = {k: v for k, v in w.items() if k in m.state_dict()}
    print(type(m).__name__, m.load_state_dict(sd, strict=True))
    m.eval()
src = torch.tensor([[1, 5, 6, 7, 2]])
torch.onnx.export(enc, (src,), out + "/e2k_c2k_enc.onnx", input_names=["src"], output_names=["memory"],
                  dynamic_axes={"src": {0: "n", 1: "t"}, "memory": {0: "n", 1: "t"}}, opset_version=17,
                  dynamo=False)
mem = enc(src)
h = torch.zeros(1, 1, D)
torch.onnx.export(dec, (torch.tensor([[1]]), h, h, mem), out + "/e2k_c2k_dec.onnx",
                  input_names=["token", "h1", "h2", "memory"], output_names=["logits", "h1_out", "h2_out"],
                  dynamic_axes={"token": {0: "n"}, "h1": {1: "n"}, "h2": {1: "n"}, "memory": {0: "n", 1: "t"},
                                "logits": {0: "n"}, "h1_out": {1: "n"}, "h2_out": {1: "n"}},
                  opset_version=17, dynamo=False)
"""


def e2k_export(out: Path) -> None:
    pkg = _unpack(out, E2K, "e2k")
    subprocess.run([TORCH_PY, "-c", _E2K_CHILD, str(out), str(pkg)], check=True, cwd=out)


@cache
def _e2k_meta() -> tuple[dict[str, int], list[str], int, int]:
    sys.path.insert(0, str(DEFAULT_OUT / "e2k_pkg"))
    from e2k.inference import load_safetensors  # noqa: PLC0415

    _, meta = load_safetensors((DEFAULT_OUT / "e2k_pkg" / E2K_MEMBER).read_bytes())
    ins = meta["in_table"].split("\0")
    outs = meta["out_table"].split("\0")
    return {c: i for i, c in enumerate(ins)}, outs, int(meta["sos_idx"]), int(meta["eos_idx"])


@cache
def english_words() -> list[str]:
    """lower-case a-z words (3-14 letters) of the standard library's docstrings, seeded shuffle"""
    words = sorted({w for s in english_sentences() for w in re.findall(r"[a-z]+", s.lower())
                    if 3 <= len(w) <= 14})  # fmt: skip
    r = np.random.default_rng(36)
    return [words[i] for i in r.permutation(len(words))]


def e2k_ids(word: str) -> np.ndarray:
    table, _, sos, eos = _e2k_meta()
    return np.array([[sos] + [table[c] for c in word if c in table] + [eos]], np.int64)


def e2k_decode(enc: Any, dec: Any, word: str, record: list | None = None) -> list[int]:
    """the package's greedy loop (``S2S.forward`` with ``greedy``) over the two ONNX graphs"""
    _, _, sos, eos = _e2k_meta()
    mem = enc.run(None, {"src": e2k_ids(word)})[0]
    h1 = h2 = np.zeros((1, 1, mem.shape[-1]), np.float32)
    res = [sos]
    for _ in range(MAX_LEN):
        feed = {"token": np.array([[res[-1]]], np.int64), "h1": h1, "h2": h2, "memory": mem}
        if record is not None:
            record.append(feed)
        logits, h1, h2 = dec.run(None, feed)
        res.append(int(np.argmax(logits[0])))
        if res[-1] == eos:
            break
    return res[1:-1] if res[-1] == eos else res[1:]


def _kana(ids: list[int]) -> str:
    return "".join(_e2k_meta()[1][i] for i in ids)


def d_e2k_enc(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """8-letter English words of the standard library's docstrings, <sos> letters <eos> ids [1, 10]"""
    w8 = [w for w in english_words() if len(w) == 8]
    return {"src": np.stack([e2k_ids(w8[i]) for i in r.choice(len(w8), n, replace=False)])}


def d_e2k_dec(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """decoder steps fp32 takes on 8-letter docstring words (one random step of each word)"""
    w8 = [w for w in english_words() if len(w) == 8]
    enc, dec = _session(out / "e2k_c2k_enc.onnx"), _session(out / "e2k_c2k_dec.onnx")
    feeds = []
    for i in r.choice(len(w8), n, replace=False):
        rec: list = []
        e2k_decode(enc, dec, w8[i], rec)
        feeds.append(rec[int(r.integers(len(rec)))])
    return {k: np.stack([f[k] for f in feeds]) for k in ("token", "h1", "h2", "memory")}


_ACCENT_CHILD = r"""
import sys
out, pkg = sys.argv[1], sys.argv[2]
sys.path.insert(0, pkg)
import numpy as np, torch
from torch import nn
from e2k.inference import load_safetensors, to_fp32
w, meta = load_safetensors(open(pkg + "/e2k/models/accent.safetensors", "rb").read())
w = {k: torch.from_numpy(np.array(v)) for k, v in to_fp32(w).items()}
D = w["emb.weight"].shape[1]

class Accent(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(*w["emb.weight"].shape)
        self.rnn = nn.GRU(D, D, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * D, 1)
    def forward(self, kana):
        _, h = self.rnn(self.emb(kana))
        h = self.head(torch.cat([h[0], h[1]], -1))[:, 0]
        return h * kana.shape[1]  # the package's h[0] * len, rounded by the caller

m = Accent()
print(m.load_state_dict(w, strict=True))
m.eval()
torch.onnx.export(m, (torch.tensor([[3, 10, 20]]),), out + "/e2k_accent.onnx", input_names=["kana"],
                  output_names=["accent"], dynamic_axes={"kana": {0: "n", 1: "t"}, "accent": {0: "n"}},
                  opset_version=17, dynamo=False)
"""


def accent_export(out: Path) -> None:
    pkg = _unpack(out, E2K, "e2k")
    subprocess.run([TORCH_PY, "-c", _ACCENT_CHILD, str(out), str(pkg)], check=True, cwd=out)


@cache
def accent_words() -> tuple[list[str], list[str]]:
    """(English word, fp32 katakana) for the docstring words, decoded once by fp32's c2k pair"""
    enc, dec = _session(DEFAULT_OUT / "e2k_c2k_enc.onnx"), _session(DEFAULT_OUT / "e2k_c2k_dec.onnx")
    words = english_words()[:900]
    return words, [_kana(e2k_decode(enc, dec, w)) for w in words]


def _accent_ids(kana: str) -> np.ndarray:
    sys.path.insert(0, str(DEFAULT_OUT / "e2k_pkg"))
    from e2k import AccentPredictor  # noqa: PLC0415

    table = _accent_table(AccentPredictor)
    return np.array([[table[c] for c in kana if c in table]], np.int64)


@cache
def _accent_table(cls: Any) -> dict[str, int]:
    return cls().in_table


def d_accent(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """katakana fp32's c2k writes for docstring words, the 5-kana ones (accent ids [1, 5])"""
    _, kanas = accent_words()
    k5 = sorted({k for k in kanas if len(_accent_ids(k)[0]) == 5})
    return {"kana": np.stack([_accent_ids(k5[i]) for i in r.choice(len(k5), n, replace=False)])}


def _accent_task(ref: Path, model: Path) -> dict[str, Any]:
    words, kanas = accent_words()
    pairs = [(w, k) for w, k in zip(words, kanas, strict=True) if len(_accent_ids(k)[0]) > 0][:600]
    sa, sb = _session(ref), _session(model)
    a = np.array([sa.run(None, {"kana": _accent_ids(k)})[0][0] for _, k in pairs], np.float64)
    b = np.array([sb.run(None, {"kana": _accent_ids(k)})[0][0] for _, k in pairs], np.float64)
    sys.path.insert(0, str(DEFAULT_OUT / "e2k_pkg"))
    from e2k import AccentPredictor  # noqa: PLC0415

    pkg = AccentPredictor()
    p = np.array([pkg(k) for _, k in pairs])
    ra, rb = np.floor(a + 0.5).astype(int), np.floor(b + 0.5).astype(int)
    return {"words": len(pairs), "accent_same": float(np.mean(ra == rb)),
            "raw_mae": float(np.mean(np.abs(a - b))), "raw_max": float(np.max(np.abs(a - b))),
            "fp32_onnx_equals_package": float(np.mean(ra == p))}  # fmt: skip


def _edit(a: str, b: str) -> int:
    d = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, cb in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (ca != cb))
    return d[-1]


def _e2k_task(name: str, out: Path, model: Path, n: int = 300) -> dict[str, Any]:
    words = [w for w in english_words() if len(w) != 8][:n]
    enc_ref, dec_ref = out / "e2k_c2k_enc.onnx", out / "e2k_c2k_dec.onnx"
    sa_e, sa_d = _session(enc_ref), _session(dec_ref)
    sb_e = _session(model) if name == "e2k_c2k_enc" else sa_e
    sb_d = _session(model) if name == "e2k_c2k_dec" else sa_d
    a = [_kana(e2k_decode(sa_e, sa_d, w)) for w in words]
    b = [_kana(e2k_decode(sb_e, sb_d, w)) for w in words]
    sys.path.insert(0, str(out / "e2k_pkg"))
    from e2k import C2K  # noqa: PLC0415

    pkg = C2K()
    p = [pkg(w) for w in words]
    ed = [_edit(x, y) for x, y in zip(a, b, strict=True)]
    return {"words": len(words), "same_string": float(np.mean([x == y for x, y in zip(a, b, strict=True)])),
            "cer_vs_fp32": float(np.sum(ed) / max(sum(len(x) for x in a), 1)),
            "words_changed": [f"{w}: {x} -> {y}" for w, x, y in zip(words, a, b, strict=True) if x != y][:6],
            "fp32_onnx_equals_package": float(np.mean([x == y for x, y in zip(a, p, strict=True)])),
            "examples_fp32": [f"{w} {x}" for w, x in zip(words[:5], a[:5], strict=True)]}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# WordLlama l2_supercat


def wordllama_graph(out: Path) -> None:
    """the package's ``embed(norm=True)``: table[ids] * mask, summed over tokens, / max(sum(mask), 1),
    / its L2 norm; the float16 table widened to float32 as the package's loader does"""
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    pkg = _unpack(out, WORDLLAMA, "wordllama")
    sys.path.insert(0, str(out / "e2k_pkg"))
    from e2k.inference import load_safetensors  # noqa: PLC0415  (a numpy-only safetensors reader)

    w, _ = load_safetensors((pkg / WL_MEMBER).read_bytes())
    table = np.asarray(w["embedding.weight"], np.float32)
    init = [numpy_helper.from_array(table, "embedding"),
            numpy_helper.from_array(np.array([2], np.int64), "axis2"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
            numpy_helper.from_array(np.array(1.0, np.float32), "one")]  # fmt: skip
    nodes = [
        helper.make_node("Gather", ["embedding", "input_ids"], ["tok"]),
        helper.make_node("Unsqueeze", ["attention_mask", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["tok", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["attention_mask", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["count1"]),
        helper.make_node("Div", ["summed", "count1"], ["pooled"]),
        helper.make_node("LpNormalization", ["pooled"], ["embedding_out"], axis=1, p=2),
    ]
    g = helper.make_graph(
        nodes, "wordllama_l2_supercat_256",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["n", "l"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.FLOAT, ["n", "l"])],
        [helper.make_tensor_value_info("embedding_out", TensorProto.FLOAT, ["n", 256])], init)  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="unseen_models36")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, out / "wordllama_l2.onnx")


@cache
def _tokenizer() -> Any:
    pylib = DEFAULT_OUT / "pylib"
    if not (pylib / "tokenizers").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                        str(pylib), TOKENIZERS], check=True)  # fmt: skip
    sys.path.insert(0, str(pylib))
    from tokenizers import Tokenizer  # noqa: PLC0415

    return Tokenizer.from_file(str(_unpack(DEFAULT_OUT, WORDLLAMA, "wordllama") / WL_TOKENIZER))


@cache
def wl_sentences() -> tuple[list[str], np.ndarray, np.ndarray]:
    """docstring sentences whose ids fit 48 tokens (no special tokens, as ``WordLlama.tokenize``)"""
    tok = _tokenizer()
    keep, ids, masks = [], [], []
    for s in english_sentences():
        e = tok.encode(s, add_special_tokens=False).ids
        if len(e) <= WL_LEN:
            keep.append(s)
            ids.append(e + [0] * (WL_LEN - len(e)))
            masks.append([1.0] * len(e) + [0.0] * (WL_LEN - len(e)))
    return keep, np.array(ids, np.int64), np.array(masks, np.float32)


def d_wordllama(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """English sentences of the standard library's docstrings, l2_supercat tokens padded to 48"""
    _, ids, masks = wl_sentences()
    pick = r.choice(len(ids), n, replace=False)
    return {"input_ids": ids[pick][:, None], "attention_mask": masks[pick][:, None]}


def _wl_task(ref: Path, model: Path, k: int = 10) -> dict[str, Any]:
    sents, ids, masks = wl_sentences()
    sa, sb = _session(ref), _session(model)
    a = np.concatenate([sa.run(None, {"input_ids": ids[i:i + 64], "attention_mask": masks[i:i + 64]})[0]
                        for i in range(0, len(ids), 64)]).astype(np.float64)  # fmt: skip
    b = np.concatenate([sb.run(None, {"input_ids": ids[i:i + 64], "attention_mask": masks[i:i + 64]})[0]
                        for i in range(0, len(ids), 64)]).astype(np.float64)  # fmt: skip
    sim_a, sim_b = a @ a.T, b @ b.T
    np.fill_diagonal(sim_a, -np.inf)
    np.fill_diagonal(sim_b, -np.inf)
    top_a, top_b = np.argsort(-sim_a, 1)[:, :k], np.argsort(-sim_b, 1)[:, :k]
    rec = [len(set(x) & set(y)) / k for x, y in zip(top_a, top_b, strict=True)]
    cos = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {"sentences": len(sents), f"recall_at_{k}_vs_fp32": float(np.mean(rec)),
            "top1_same": float(np.mean(top_a[:, 0] == top_b[:, 0])),
            "fp32_top1_in_file_top10": float(np.mean([x[0] in set(y)
                                                      for x, y in zip(top_a, top_b, strict=True)])),
            "embedding_cosine_min": float(cos.min()), "embedding_cosine_mean": float(cos.mean())}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# silero-stress Belarusian accentor (fastText-style char n-gram bag, int8 table by its authors)

_SILERO_CHILD = r"""
import sys, json, gzip
out, pt = sys.argv[1], sys.argv[2]
import numpy as np, torch
acc = torch.package.PackageImporter(pt).load_pickle("accentor_models", "accentor")
m = acc.accentor.model
q = m.embedding.weight.data.clone()
arrays = {"table_q": q.numpy(), "scale": m.scale.numpy(), "zero_point": m.zero_point.numpy()}
for k, v in m.stress_clf.state_dict().items():
    arrays["clf_" + k.replace(".", "_")] = v.numpy()
m.embedding.weight.data = m.scale * (q - m.zero_point)  # the package's load_accentor
vocab = out + "/silero_stress_pkg/silero_stress/data/vocabularies/vocab-bel.gz"
words = [ln.split()[0] for ln in gzip.open(vocab, "rt")][:200]
arrays["check_logits"] = m(words)[0].numpy()
np.savez(out + "/silero_bel_weights.npz", **arrays)
json.dump(dict(m.embedding.ngram_dict), open(out + "/silero_bel_ngrams.json", "w"), ensure_ascii=False)
"""
SILERO = "silero-stress==1.5"
SILERO_MEMBER = "silero_stress/data/accentor-bel.pt"
BEL_VOWELS = "аоуіэыяеёю"  # the package's SimpleAccentor / AccentorNgramSimple for "bel"
NG_LEN = 96


def silero_export(out: Path) -> None:
    pkg = _unpack(out, SILERO, "silero_stress")
    subprocess.run([TORCH_PY, "-c", _SILERO_CHILD, str(out), str(pkg / SILERO_MEMBER)], check=True, cwd=out)


def silero_graph(out: Path, int8: bool) -> None:
    """the package's model in ONNX: EmbeddingBag(mean) over the word's n-gram ids (a masked mean of
    Gather rows), then Linear 16->64->128->64->10 with ReLU; ``int8``: the authors' int8 table kept,
    widened in the graph as their loader does (Cast, Sub zero point 6.16, Mul scale 0.089), else the
    table widened to float32 in the file"""
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    with np.load(out / "silero_bel_weights.npz") as z:
        w = {k: z[k] for k in z.files}
    scale, zp = np.float32(w["scale"]), np.float32(w["zero_point"])
    init, nodes = [], []
    if int8:
        init += [numpy_helper.from_array(w["table_q"].astype(np.int8), "table_q"),
                 numpy_helper.from_array(np.array(zp, np.float32), "zero_point"),
                 numpy_helper.from_array(np.array(scale, np.float32), "scale")]  # fmt: skip
        nodes += [helper.make_node("Gather", ["table_q", "ngram_ids"], ["rows_q"]),
                  helper.make_node("Cast", ["rows_q"], ["rows_f"], to=TensorProto.FLOAT),
                  helper.make_node("Sub", ["rows_f", "zero_point"], ["rows_c"]),
                  helper.make_node("Mul", ["rows_c", "scale"], ["rows"])]  # fmt: skip
    else:
        table = (scale * (w["table_q"].astype(np.float32) - zp)).astype(np.float32)
        init.append(numpy_helper.from_array(table, "table"))
        nodes.append(helper.make_node("Gather", ["table", "ngram_ids"], ["rows"]))
    init += [numpy_helper.from_array(np.array([2], np.int64), "axis2"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]  # fmt: skip
    nodes += [helper.make_node("Unsqueeze", ["mask", "axis2"], ["mask3"]),
              helper.make_node("Mul", ["rows", "mask3"], ["masked"]),
              helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
              helper.make_node("ReduceSum", ["mask", "axis1"], ["count"], keepdims=1),
              helper.make_node("Div", ["summed", "count"], ["x0"])]  # fmt: skip
    x = "x0"
    for i, k in enumerate((0, 2, 4, 6)):
        init += [numpy_helper.from_array(w[f"clf_{k}_weight"].T.copy(), f"clf{k}_w"),
                 numpy_helper.from_array(w[f"clf_{k}_bias"], f"clf{k}_b")]  # fmt: skip
        nodes += [helper.make_node("MatMul", [x, f"clf{k}_w"], [f"mm{k}"]),
                  helper.make_node("Add", [f"mm{k}", f"clf{k}_b"],
                                   ["logits" if k == 6 else f"lin{k}"])]  # fmt: skip
        if k != 6:
            nodes.append(helper.make_node("Relu", [f"lin{k}"], [f"x{i + 1}"]))
            x = f"x{i + 1}"
    g = helper.make_graph(
        nodes, "silero_stress_bel" + ("_int8" if int8 else ""),
        [helper.make_tensor_value_info("ngram_ids", TensorProto.INT64, ["n", "l"]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["n", "l"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])], init)  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="unseen_models36")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, out / ("silero_bel_q8.onnx" if int8 else "silero_bel.onnx"))


@cache
def _bel_ngrams() -> dict[str, int]:
    return json.loads((DEFAULT_OUT / "silero_bel_ngrams.json").read_text())


def bel_ngram_ids(word: str) -> list[int]:
    """the package's ``NewFastTextEmbeddingBag``: n-grams n = 1 .. len + 3 of "<word>" known to its
    dictionary (else "UNK")"""
    d, t = _bel_ngrams(), "<" + word + ">"
    ids = [d[t[i:i + n]] for n in range(1, len(word) + 4) for i in range(len(t) - n + 1) if t[i:i + n] in d]
    return ids or [d["UNK"]]


@cache
def bel_words() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """the package's Belarusian stress vocabulary (``vocab-bel.gz``: word, stressed char index), words
    of 2+ vowels whose n-grams fit 96 ids, seeded shuffle: words, ids, masks, stressed vowel ordinal"""
    pkg = _unpack(DEFAULT_OUT, SILERO, "silero_stress")
    import gzip  # noqa: PLC0415

    rows = []
    with gzip.open(pkg / "silero_stress/data/vocabularies/vocab-bel.gz", "rt") as f:
        for ln in f:
            word, pos = ln.split()
            vowels = [i for i, c in enumerate(word) if c in BEL_VOWELS]
            ids = bel_ngram_ids(word)
            if len(vowels) >= 2 and int(pos) in vowels and len(ids) <= NG_LEN:
                rows.append((word, ids, vowels.index(int(pos))))
    r = np.random.default_rng(36)
    rows = [rows[i] for i in r.permutation(len(rows))]
    ids = np.array([x[1] + [0] * (NG_LEN - len(x[1])) for x in rows], np.int64)
    mask = np.array([[1.0] * len(x[1]) + [0.0] * (NG_LEN - len(x[1])) for x in rows], np.float32)
    return [x[0] for x in rows], ids, mask, np.array([x[2] for x in rows])


def d_silero(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """Belarusian words of the package's stress vocabulary (vocab-bel.gz), n-gram ids padded to 96"""
    _, ids, mask, _ = bel_words()
    pick = r.choice(len(ids), n, replace=False)
    return {"ngram_ids": ids[pick][:, None], "mask": mask[pick][:, None]}


def _silero_task(ref: Path, model: Path, n: int = 4000) -> dict[str, Any]:
    words, ids, mask, truth = bel_words()
    ids, mask, truth = ids[:n], mask[:n], truth[:n]
    sa, sb = _session(ref), _session(model)
    a = np.concatenate([sa.run(None, {"ngram_ids": ids[i:i + 256], "mask": mask[i:i + 256]})[0]
                        for i in range(0, len(ids), 256)])  # fmt: skip
    b = np.concatenate([sb.run(None, {"ngram_ids": ids[i:i + 256], "mask": mask[i:i + 256]})[0]
                        for i in range(0, len(ids), 256)])  # fmt: skip

    def soft(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    pa, pb = soft(a.astype(np.float64)), soft(b.astype(np.float64))
    ka, kb = pa.argmax(1), pb.argmax(1)
    # the package sets the stress only when the top probability passes 0.5
    sa_, sb_ = np.where(pa.max(1) > 0.5, ka, -1), np.where(pb.max(1) > 0.5, kb, -1)
    return {"words": len(ids), "stress_same_as_fp32": float(np.mean(ka == kb)),
            "set_stress_same_as_fp32": float(np.mean(sa_ == sb_)),
            "accuracy_fp32": float(np.mean(ka == truth)), "accuracy_file": float(np.mean(kb == truth)),
            "prob_max_abs": float(np.abs(pa - pb).max())}  # fmt: skip


# ---------------------------------------------------------------------------------------------


def task(name: str, model: Path, out: Path) -> dict[str, Any]:
    if name == "e2k_accent":
        return _accent_task(out / f"{name}.onnx", model)
    if name.startswith("e2k"):
        return _e2k_task(name, out, model)
    if name.startswith("silero"):
        return _silero_task(out / f"{name}.onnx", model)
    return _wl_task(out / f"{name}.onnx", model)


E2K_WHAT = ("e2k English->katakana transliterator (attention GRU encoder-decoder, float16 weights as "
            "shipped, "
            "exported here with torch 2.13, opset 17, run greedily by the package's loop): ")  # fmt: skip
MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "e2k_c2k_enc": (E2K, E2K_MEMBER,
                    E2K_WHAT + "ENCODER letter ids [N, T] -> Embedding 31x256 -> bidirectional GRU 256 -> "
                    "Linear 512->256 -> tanh: memory [N, T, 256]",
                    d_e2k_enc, {"kind": "cosine", "output": 0}),
    "e2k_c2k_dec": (E2K, E2K_MEMBER,
                    E2K_WHAT + "DECODER STEP previous katakana id [N, 1], states h1, h2 [1, N, 256], "
                    "memory -> "
                    "Embedding 88x256 -> GRU -> 4-head attention -> GRU 512->256 -> Linear 256->88 "
                    "logits, h1, h2",
                    d_e2k_dec, {"kind": "top1", "output": 0}),
    "e2k_accent": (E2K, "e2k/models/accent.safetensors",
                   "e2k katakana pitch-accent predictor (float16 weights as shipped, exported here with "
                   "torch "
                   "2.13, opset 17): katakana ids [N, T] -> Embedding 85x256 -> bidirectional GRU 256 (final "
                   "states) -> Linear 512->1, x T: accent position (the package rounds it)",
                   d_accent, {"kind": "within", "output": 0, "tol": 0.5}),
    "wordllama_l2": (WORDLLAMA, WL_MEMBER,
                     "WordLlama l2_supercat static text embedder (float16 32,000 x 256 token table "
                     "widened to "
                     "float32; the package's embed(norm=True) written in ONNX, opset 17): token ids [N, L] + "
                     "mask -> Gather -> masked average -> L2 norm: [N, 256]",
                     d_wordllama, {"kind": "cosine", "output": 0}),
    "silero_bel_q8": (SILERO, SILERO_MEMBER,
                      "silero-stress Belarusian accentor with its authors' int8 n-gram table kept "
                      "(104,632 x 16 int8, widened in the graph: Gather -> Cast -> Sub 6.16 -> Mul 0.089, "
                      "as load_accentor): n-gram ids [N, L] + mask -> masked mean -> "
                      "Linear 16->64->128->64->10 (ReLU): logits over "
                      "the word's vowels (which one is stressed)",
                      d_silero, {"kind": "top1", "output": 0}),
    "silero_bel": (SILERO, SILERO_MEMBER,
                   "silero_bel_q8 with the table widened to float32 in the file (what the package "
                   "holds in memory "
                   "after load_accentor)",
                   d_silero, {"kind": "top1", "output": 0}),
}  # fmt: skip
SHA256: dict[str, str] = {
    "e2k_c2k_enc": "9a17a71f341947541beaf67293c2799c7a4551c3f0662f4cec70fbef5ed8a928",
    "e2k_c2k_dec": "1d1c5a13aae7ba10ebc45d015aa4d2a068fe892cc62437b3dfc1948f4a0e1768",
    "wordllama_l2": "4ec25e16fffec302b57887dc8a83f9c9d0b22535f8581cd9d078c341cd8c6c35",
    "e2k_accent": "fc5184ad4cfe4a65f3b6f96f20b593b3e8fe6f9e423d0fc467f8e87061946953",
    "silero_bel_q8": "58d45d50f8e5aa6d826a72827ff33350ea5bafb159f9ebd7d0c9dbdbaad2d77e",
    "silero_bel": "4728b1f6167970de946ed2830f840ecd841ce0018b28d67d7d9da546a03a9e27",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if name == "e2k_accent" and not dest.exists():
        accent_export(out)
    if name.startswith("e2k_c2k") and not (out / "e2k_c2k_enc.onnx").exists():
        e2k_export(out)
    if name.startswith("silero") and not dest.exists():
        if not (out / "silero_bel_weights.npz").exists():
            silero_export(out)
        silero_graph(out, int8=name.endswith("q8"))
    if name == "wordllama_l2" and not dest.exists():
        _unpack(out, E2K, "e2k")
        wordllama_graph(out)
    entry = manifest_entry(out, name, dest.name, spec, mem, SHA256[name] if check else None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    how = {"e": "exported to ONNX here with torch", "w": "written as ONNX here (package's embed)",
           "s": "weights read with torch.package, written as ONNX here"}[name[0]]
    entry["source"] = f"PyPI `{spec}`, `{mem}` ({how})"
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
