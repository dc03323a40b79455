"""Export the larger transformer of the block quantization benchmark (needs torch; dev-only).

    /work/venv-torch/bin/python scripts/export_transformer.py [--size small|base|large] [--out DIR]

A GPT-style decoder (token embedding tied to the output head, learned positions, pre-norm blocks,
causal attention), weight-dominated like the language models people quantize to 4 bits:

- ``small``: 8192 tokens, 6 blocks 512 wide, 8 heads, 2048 MLP, 128 positions: 23.1 M parameters;
- ``base``: 32768 tokens, 12 blocks 768 wide, 12 heads, 3072 MLP (GPT-2 small's body with a
  smaller vocabulary), 64 positions: 110 M parameters. Fewer positions than ``small`` keep the
  benchmark's CPU time down; the weights dominate either way.
- ``large``: 32768 tokens, 20 blocks 1024 wide, 16 heads, 4096 MLP, 64 positions: ~285 M
  parameters (1.1 GB), written with external data: the real model of
  ``benchmarks/bench_large_model.py --model``.
 Weights are random
(GPT-2 initialisation, std 0.02, residual projections scaled by 1/sqrt(2 * layers)), so the
benchmark's accuracy numbers are agreement with the float model. Exported with the TorchScript
exporter (``dynamo=False``) at opset 17; the tied head is a MatMul with the transposed table.

Writes ``gpt_<size>.onnx``, ``gpt_<size>_calib.npz`` (32 samples) and ``gpt_<size>_eval.npz`` (16)
with ``input_ids`` [1, positions] per sample: Zipf-distributed token ids (a text-like frequency profile).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

SIZES = {  # vocabulary, width, layers, heads, MLP width, positions
    "small": (8192, 512, 6, 8, 2048, 128),
    "base": (32768, 768, 12, 12, 3072, 64),
    "large": (32768, 1024, 20, 16, 4096, 64),
}
# Sizes whose file is written with its weights in external data (``<name>.onnx.data``): the
# large-model benchmark's real transformer (issue 18).
EXTERNAL = {"large"}
VOCAB, WIDTH, LAYERS, HEADS, MLP, SEQ = SIZES["small"]


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.proj = nn.Linear(WIDTH, WIDTH)
        self.ln2 = nn.LayerNorm(WIDTH)
        self.fc1 = nn.Linear(WIDTH, MLP)
        self.fc2 = nn.Linear(MLP, WIDTH)
        self.register_buffer("mask", torch.full((SEQ, SEQ), float("-inf")).triu(1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(WIDTH, dim=-1)
        shape = (b, t, HEADS, WIDTH // HEADS)
        q, k, v = (z.reshape(shape).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(WIDTH // HEADS) + self.mask[:t, :t]
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, WIDTH)
        x = x + self.proj(y)
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, WIDTH)
        self.pos = nn.Parameter(torch.zeros(1, SEQ, WIDTH))
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln = nn.LayerNorm(WIDTH)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos[:, : ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.ln(x) @ self.tok.weight.T  # tied output head


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "onnxcompress-bench")
    parser.add_argument("--external", action="store_true",
                        help="write the weights to external data (always for --size large)")
    args = parser.parse_args()
    global VOCAB, WIDTH, LAYERS, HEADS, MLP, SEQ  # read by the modules at construction
    VOCAB, WIDTH, LAYERS, HEADS, MLP, SEQ = SIZES[args.size]
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = GPT().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * LAYERS) if name.endswith(("proj.weight", "fc2.weight")) else 0.02
                p.normal_(0.0, std)
            elif "ln" not in name:
                p.normal_(0.0, 0.01)
    params = sum(p.numel() for p in model.parameters())
    path = args.out / f"gpt_{args.size}.onnx"
    torch.onnx.export(model, (torch.zeros(1, SEQ, dtype=torch.int64),), str(path), dynamo=False,
                      opset_version=17, input_names=["input_ids"], output_names=["logits"])
    rng = np.random.default_rng(0)
    for name, n in (("calib", 32), ("eval", 16)):
        ids = np.minimum(rng.zipf(1.3, size=(n, 1, SEQ)), VOCAB) - 1
        np.savez(args.out / f"gpt_{args.size}_{name}.npz", input_ids=ids.astype(np.int64))
    if args.size in EXTERNAL or args.external:
        import onnx

        proto = onnx.load(str(path))
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=1024)
        del proto
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    print(f"{path}: {params / 1e6:.1f} M parameters, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
