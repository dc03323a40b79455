"""A small trained llama-style language model exported by torch 2.13 at opset 23 (needs torch; dev-only).

    /work/venv-torch/bin/python scripts/export_llama_opset23.py [--out DIR] [--steps 1500]

At opset 23 torch's exporter writes ONNX's own ``RMSNormalization`` and ``Attention`` ops (a
3-D causal Attention with the head counts as attributes), which no other model of ours uses. The
model: 2000 tokens, tied embeddings, 2 pre-norm blocks 128 wide (4 heads, rotary positions, SwiGLU
MLP), dynamic batch and sequence, external data. Trained for ``--steps`` on a synthetic language
whose each token has three successors with probabilities 0.75 / 0.18 / 0.07, so that, like a
real LM's, its next-token arg-max is mostly clear (median top-1 lead 1.7 logits) with some near
ties. Writes ``llama23.onnx`` (+ ``.data``), ``llama18.onnx`` (the same at opset 18, for a side by
side), ``calib.npz`` (24 samples) and ``eval.npz`` (32) of ``ids`` [1, 32]. Results:
``benchmarks/results/opset23_llama.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

V, D, H, L, T = 2000, 128, 4, 2, 32


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.n1, self.n2 = nn.RMSNorm(D), nn.RMSNorm(D)
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.o = nn.Linear(D, D, bias=False)
        self.up = nn.Linear(D, 4 * D, bias=False)
        self.gate = nn.Linear(D, 4 * D, bias=False)
        self.down = nn.Linear(4 * D, D, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, t, 3, H, D // H).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(rope(q, cos, sin), rope(k, cos, sin), v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, D))
        h = self.n2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class LM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.blocks = nn.ModuleList(Block() for _ in range(L))
        self.norm = nn.RMSNorm(D)
        inv = 1.0 / (10000 ** (torch.arange(0, D // H, 2).float() / (D // H)))
        angles = torch.arange(512).float()[:, None] * inv[None]
        self.register_buffer("cos", angles.cos())
        self.register_buffer("sin", angles.sin())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        x = self.emb(ids)
        for block in self.blocks:
            x = block(x, self.cos[:t], self.sin[:t])
        return self.norm(x) @ self.emb.weight.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "onnxcompress-llama23")
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    successors = torch.randint(0, V, (V, 3), generator=g)
    odds = torch.tensor([0.75, 0.18, 0.07])

    def batch(n: int) -> torch.Tensor:
        ids = torch.zeros(n, T + 1, dtype=torch.long)
        ids[:, 0] = torch.randint(0, V, (n,), generator=g)
        for i in range(T):
            ids[:, i + 1] = successors[ids[:, i], torch.multinomial(odds, n, replacement=True, generator=g)]
        return ids

    model = LM().eval()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(args.steps):
        ids = batch(32)
        loss = F.cross_entropy(model(ids[:, :-1]).reshape(-1, V), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"training loss {float(loss):.3f}")
    np.savez(args.out / "calib.npz", ids=batch(24)[:, :-1].numpy()[:, None])
    np.savez(args.out / "eval.npz", ids=batch(32)[:, :-1].numpy()[:, None])
    dims = {"ids": {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", max=512)}}
    for opset in (23, 18):
        torch.onnx.export(model, (torch.zeros(1, T, dtype=torch.long),), args.out / f"llama{opset}.onnx",
                          opset_version=opset, dynamic_shapes=dims, input_names=["ids"],
                          output_names=["logits"])


if __name__ == "__main__":
    main()
