"""Fetch the nineteenth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch19.md`` sweeps them (``bench_real_models.py --root DIR``).
A trained checkpoint shipped inside its PyPI wheel, exported as a torch 2.13 user would
(``torch.onnx.export(model, args, path)`` at its defaults: the dynamo exporter, its default opset,
**weights in an external ``.onnx.data`` file**, symbolic batch and sequence axes):

- ``sre_embed``: ``sre-embedding-model==1.0.0``'s bundled fine-tuned sentence embedder
  (``sre_embedding_model/model_weights/model.safetensors``, 90.9 MB, a BertModel of the
  all-MiniLM-L6-v2 shape: 6 layers, d 384, 12 heads) with sentence-transformers' mean pooling and
  L2 normalisation; int64 ``input_ids`` + ``attention_mask`` [batch, sequence] -> [batch, 384].
  The wheel's own code is a sentence-transformers wrapper (not installed here): the BertModel is
  written out below in plain torch (the eager BertModel's arithmetic, the checkpoint's key names).

    /work/venv-torch/bin/python scripts/unseen_models19.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models19.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import batch_cli, english_sentences, wordpiece  # noqa: E402
from unseen_models15 import _package, _pinned_member  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen19"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

SRE = "sre-embedding-model==1.0.0"
SRE_DIR = "sre_embedding_model/model_weights"
SRE_LEN = 32
SRE_SENTENCES = [
    "Pod keeps crashing with CrashLoopBackOff after the last deployment.",
    "Container was OOMKilled because it exceeded its memory limit of 512Mi.",
    "The node is NotReady and kubelet stopped posting status.",
    "Disk usage on /var/lib/docker is above 95 percent on three hosts.",
    "p99 latency of the checkout service doubled since 14:00 UTC.",
    "TLS certificate for api.example.com expires in two days.",
    "Database connection pool exhausted, requests are timing out.",
    "Replication lag on the Postgres replica is over ten minutes.",
    "The load balancer returns 502 Bad Gateway for a third of the requests.",
    "Kafka consumer group is falling behind and lag keeps growing.",
    "DNS resolution fails intermittently inside the cluster.",
    "Rollback the release, error rate jumped to 12 percent.",
    "CPU throttling on the payment pods since the limits were lowered.",
    "Redis evicted keys because maxmemory was reached.",
    "The cron job did not run last night and backups are missing.",
    "Alert: high 5xx rate on the ingress controller in eu-west-1.",
    "Terraform apply failed with a state lock error.",
    "Image pull failed: ImagePullBackOff for the worker deployment.",
    "Out of inodes on the log volume, the application cannot write files.",
    "Autoscaler could not add nodes, the instance quota is exhausted.",
]


def _safetensors(path: Path) -> dict[str, np.ndarray]:
    """the F32 tensors of a .safetensors file (8-byte header length, JSON header, raw data)"""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        assert v["dtype"] == "F32", (k, v["dtype"])
        out[k] = np.frombuffer(raw[8 + n + a : 8 + n + b], np.float32).reshape(v["shape"]).copy()
    return out


def _bert_embedder(weights: dict[str, np.ndarray], cfg: dict[str, Any]) -> Any:
    """BertModel (eager attention, erf GELU, post-LayerNorm, token type 0) + mean pooling over the
    mask + L2 normalisation, as sentence-transformers runs the wheel's model"""
    import torch
    from torch import nn

    d, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]

    def lin(prefix: str) -> nn.Linear:
        w = weights[prefix + ".weight"]
        m = nn.Linear(w.shape[1], w.shape[0])
        m.weight.data = torch.from_numpy(w)
        m.bias.data = torch.from_numpy(weights[prefix + ".bias"])
        return m

    def norm(prefix: str) -> nn.LayerNorm:
        m = nn.LayerNorm(d, eps=eps)
        m.weight.data = torch.from_numpy(weights[prefix + ".weight"])
        m.bias.data = torch.from_numpy(weights[prefix + ".bias"])
        return m

    class Layer(nn.Module):
        def __init__(self, p: str) -> None:
            super().__init__()
            self.q, self.k, self.v = (lin(f"{p}.attention.self.{n}") for n in ("query", "key", "value"))
            self.o, self.ln1 = lin(f"{p}.attention.output.dense"), norm(f"{p}.attention.output.LayerNorm")
            self.up, self.down = lin(f"{p}.intermediate.dense"), lin(f"{p}.output.dense")
            self.ln2 = norm(f"{p}.output.LayerNorm")

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            n, s, _ = x.shape

            def split(t: torch.Tensor) -> torch.Tensor:
                return t.view(n, s, heads, d // heads).transpose(1, 2)

            att = split(self.q(x)) @ split(self.k(x)).transpose(-1, -2) / (d // heads) ** 0.5
            ctx = (torch.softmax(att + bias, -1) @ split(self.v(x))).transpose(1, 2).reshape(n, s, d)
            x = self.ln1(x + self.o(ctx))
            return self.ln2(x + self.down(nn.functional.gelu(self.up(x))))

    class Embedder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            emb = {k: torch.from_numpy(weights[f"embeddings.{k}_embeddings.weight"])
                   for k in ("word", "position", "token_type")}
            self.word = nn.Embedding.from_pretrained(emb["word"])
            self.pos = nn.Embedding.from_pretrained(emb["position"])
            self.typ = nn.Parameter(emb["token_type"][0])
            self.ln = norm("embeddings.LayerNorm")
            self.layers = nn.ModuleList(Layer(f"encoder.layer.{i}") for i in range(cfg["num_hidden_layers"]))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(input_ids.shape[1], device=input_ids.device)
            x = self.ln(self.word(input_ids) + self.pos(pos)[None] + self.typ)
            m = attention_mask.to(x.dtype)
            bias = (1.0 - m)[:, None, None, :] * torch.finfo(x.dtype).min
            for layer in self.layers:
                x = layer(x, bias)
            pooled = (x * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1e-9)
            return nn.functional.normalize(pooled, p=2, dim=1)

    return Embedder().eval()


def _sre_dir(out: Path, check: bool) -> Path:
    _pinned_member(out, SRE, f"{SRE_DIR}/model.safetensors", "sre_model.safetensors",
                   SOURCE_SHA256["sre_embed"] if check else None)  # fmt: skip
    return _package(out, SRE, "sre_embedding_model") / SRE_DIR


def export_sre(out: Path, check: bool) -> None:
    import torch

    src = _sre_dir(out, check)
    model = _bert_embedder(_safetensors(out / "sre_model.safetensors"),
                           json.loads((src / "config.json").read_text()))  # fmt: skip
    ids = torch.ones(2, 16, dtype=torch.long)
    mask = torch.ones(2, 16, dtype=torch.long)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=512)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    torch.onnx.export(model, (ids, mask), str(out / "sre_embed.onnx"), dynamic_shapes=shapes)


def d_sre_embed(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """two sentences a sample, one an SRE incident / alert line (20 written here), the other one
    too or a real English sentence (the standard library's docstrings), WordPiece-tokenised with the
    wheel's vocab.txt (uncased, [CLS] ... [SEP], zero padding), [2, 32] int64 ids and mask"""
    vocab = {t: i for i, t in enumerate((_sre_dir(out, True) / "vocab.txt").read_text().splitlines())}
    eng = english_sentences()
    ids, masks = [], []
    for _ in range(n):
        pair = [SRE_SENTENCES[int(r.integers(len(SRE_SENTENCES)))],
                SRE_SENTENCES[int(r.integers(len(SRE_SENTENCES)))] if r.random() < 0.5
                else eng[int(r.integers(len(eng)))]]  # fmt: skip
        toks = [wordpiece(vocab, s, SRE_LEN) for s in pair]
        ids.append(np.stack([t[0] for t in toks]))
        masks.append(np.stack([t[1] for t in toks]))
    return {"input_ids": np.stack(ids), "attention_mask": np.stack(masks)}


# ---------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "sre_embed": (SRE, f"{SRE_DIR}/model.safetensors",
                  "SRE sentence embedder (fine-tuned all-MiniLM-L6-v2 shape BertModel, 6 x 384, 12 heads) + "
                  "mean pooling + L2 norm, int64 ids + mask, torch 2.13 export, ext. data",
                  d_sre_embed, {"kind": "cosine", "output": 0}),  # fmt: skip
}
SOURCE_SHA256: dict[str, str | None] = {
    "sre_embed": "0229e9720c49a360254842661fac174bd403f6fd4a2b30d23195d205d5d6cbfb",
}
EXPORTS = {"sre_embed": export_sre}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, member, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        EXPORTS[name](out, check)
    entry = manifest_entry(out, name, dest.name, spec, member, None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    entry["source"] = f"PyPI `{spec}`, `{member}`, exported by torch 2.13 defaults"
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
