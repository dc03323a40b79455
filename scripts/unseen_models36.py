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
- ``wordllama_l2``: **WordLlama ``l2_supercat`` static text embedder** of PyPI
  ``wordllama==0.4.0.post1`` (``wordllama/weights/l2_supercat_256.safetensors``: a 32,000 x 256
  float16 token table distilled from LLM embeddings), written here as the package's ``embed``
  (Gather, masked average pool, L2 norm) in ONNX (opset 17): token ids [N, L] + mask -> [N, 256]
  unit vectors. Its users rank documents by cosine (``rank``, ``topk``, ``deduplicate``).

Data: real inputs. e2k: English words of the standard library's docstrings (batch 4's
``english_sentences``), lower-case a-z, 3-14 letters; the bench's samples are 8-letter words
(encoder: [1, 10] ids with <sos> / <eos>), and decoder steps recorded while fp32 decodes them
(a random step of each word). WordLlama: those docstring sentences, tokenised by the package's
``l2_supercat`` tokenizer (``tokenizers`` installed by ``pip install --target DIR/pylib``),
padded to 48 tokens.

``--evaluate`` adds the task metrics: e2k decodes 300 words greedily end to end (max 16 katakana,
the package's default) with the file in its place and fp32 for the other half: share of words whose
katakana string equals fp32's, mean character edit distance / fp32's length; fp32's agreement with
the package's own numpy decoder is reported too. WordLlama embeds every docstring sentence and, for
each as a query, ranks the others by cosine: recall@10 of fp32's top 10 and top-1 agreement.

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
    return {c: i for i, c in enumerate(ins)}, meta["out_table"].split("\0"), int(meta["sos_idx"]), int(meta["eos_idx"])


@cache
def english_words() -> list[str]:
    """lower-case a-z words (3-14 letters) of the standard library's docstrings, seeded shuffle"""
    words = sorted({w for s in english_sentences() for w in re.findall(r"[a-z]+", s.lower()) if 3 <= len(w) <= 14})
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
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(pylib),
                        TOKENIZERS], check=True)  # fmt: skip
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
            "fp32_top1_in_file_top10": float(np.mean([x[0] in set(y) for x, y in zip(top_a, top_b, strict=True)])),
            "embedding_cosine_min": float(cos.min()), "embedding_cosine_mean": float(cos.mean())}  # fmt: skip


# ---------------------------------------------------------------------------------------------


def task(name: str, model: Path, out: Path) -> dict[str, Any]:
    if name.startswith("e2k"):
        return _e2k_task(name, out, model)
    return _wl_task(out / f"{name}.onnx", model)


E2K_WHAT = ("e2k English->katakana transliterator (attention GRU encoder-decoder, float16 weights as shipped, "
            "exported here with torch 2.13, opset 17, run greedily by the package's loop): ")  # fmt: skip
MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "e2k_c2k_enc": (E2K, E2K_MEMBER,
                    E2K_WHAT + "ENCODER letter ids [N, T] -> Embedding 31x256 -> bidirectional GRU 256 -> "
                    "Linear 512->256 -> tanh: memory [N, T, 256]",
                    d_e2k_enc, {"kind": "cosine", "output": 0}),
    "e2k_c2k_dec": (E2K, E2K_MEMBER,
                    E2K_WHAT + "DECODER STEP previous katakana id [N, 1], states h1, h2 [1, N, 256], memory -> "
                    "Embedding 88x256 -> GRU -> 4-head attention -> GRU 512->256 -> Linear 256->88 logits, h1, h2",
                    d_e2k_dec, {"kind": "top1", "output": 0}),
    "wordllama_l2": (WORDLLAMA, WL_MEMBER,
                     "WordLlama l2_supercat static text embedder (float16 32,000 x 256 token table widened to "
                     "float32; the package's embed(norm=True) written in ONNX, opset 17): token ids [N, L] + "
                     "mask -> Gather -> masked average -> L2 norm: [N, 256]",
                     d_wordllama, {"kind": "cosine", "output": 0}),
}  # fmt: skip
SHA256: dict[str, str] = {
    "e2k_c2k_enc": "9a17a71f341947541beaf67293c2799c7a4551c3f0662f4cec70fbef5ed8a928",
    "e2k_c2k_dec": "1d1c5a13aae7ba10ebc45d015aa4d2a068fe892cc62437b3dfc1948f4a0e1768",
    "wordllama_l2": "4ec25e16fffec302b57887dc8a83f9c9d0b22535f8581cd9d078c341cd8c6c35",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if name.startswith("e2k") and not (out / "e2k_c2k_enc.onnx").exists():
        e2k_export(out)
    if name == "wordllama_l2" and not dest.exists():
        _unpack(out, E2K, "e2k")
        wordllama_graph(out)
    entry = manifest_entry(out, name, dest.name, spec, mem, SHA256[name] if check else None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    how = "exported to ONNX here with torch" if name.startswith("e2k") else "written as ONNX here (package's embed)"
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
