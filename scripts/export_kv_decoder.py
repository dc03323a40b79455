"""A small trained GPT-style decoder with a KV cache, exported as decoders are deployed (dev-only).

    /work/venv-torch/bin/python scripts/export_kv_decoder.py [--out DIR] [--steps 1500]
    /work/venv/bin/python scripts/export_kv_decoder.py --evaluate kv_decoder|kv_merged MODEL [--out DIR]

Generation with a cache is how language models run, and its graphs differ from a plain forward
pass: the past keys and values come in as inputs whose sequence axis starts at 0, positions are
offset by the past length, and one export (optimum's ``decoder_model_merged``) puts the prefill and
the decode step in the two branches of an ``If`` on a boolean input, both reading the same
weights from the outer graph. Writes:

- ``kv_decoder.onnx`` (+ ``.data``): GPT-2-style (learned positions, LayerNorm, GELU MLP, biases,
  512 tokens, 3 blocks 128 wide, 4 heads). Inputs ``input_ids`` [B, S] and ``past_key_i`` /
  ``past_value_i`` [B, 4, P, 32] (P >= 1); outputs ``logits`` [B, S, 512] and ``present_*``.
- ``kv_merged.onnx`` (one file): the prefill export (no past) and the decode export under
  ``If(use_cache_branch)``, the weights once, at the top; the past inputs are fed with P = 0
  on the prefill branch (optimum's convention).
- ``kv_calib/`` and ``kv_eval/`` folders of ``.npz`` (decode steps of several past lengths, one
  file each), ``kv_merged_calib/`` and ``kv_merged_eval/`` (prefills and decode steps).

Trained for ``--steps`` on a synthetic language whose each token has three successors with
probabilities 0.75 / 0.18 / 0.07 (as ``export_llama_opset23.py``). Task metric: next-token top-1
agreement with fp32 at every position, and the presents' worst cosine (what the next step reads).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

V, D, H, L, T = 512, 128, 4, 3, 48
DH = D // H
DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-kvdecoder"
N_CALIB, N_EVAL = 24, 32


def _torch_model():  # torch is a development tool: imported only to train and export
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
            self.q, self.k, self.v = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
            self.o = nn.Linear(D, D)
            self.fc, self.proj = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

        def forward(self, x, past_k, past_v):
            b, t, _ = x.shape
            h = self.ln1(x)
            q = self.q(h).view(b, t, H, DH).transpose(1, 2)
            k = torch.cat([past_k, self.k(h).view(b, t, H, DH).transpose(1, 2)], 2)
            v = torch.cat([past_v, self.v(h).view(b, t, H, DH).transpose(1, 2)], 2)
            p = k.shape[2] - t
            # causal over the whole cache: query i (absolute p + i) sees keys 0 .. p + i
            allowed = torch.arange(k.shape[2])[None, :] <= (torch.arange(t)[:, None] + p)
            att = (q @ k.transpose(-1, -2)) / DH**0.5
            att = att.masked_fill(~allowed, float("-inf")).softmax(-1)
            x = x + self.o((att @ v).transpose(1, 2).reshape(b, t, D))
            return x + self.proj(F.gelu(self.fc(self.ln2(x)))), k, v

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok, self.pos = nn.Embedding(V, D), nn.Embedding(256, D)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.ln = nn.LayerNorm(D)
            self.head = nn.Linear(D, V, bias=False)

        def forward(self, ids, *past):
            p = past[0].shape[2]
            x = self.tok(ids) + self.pos(torch.arange(p, p + ids.shape[1]))[None]
            presents = []
            for i, block in enumerate(self.blocks):
                x, k, v = block(x, past[2 * i], past[2 * i + 1])
                presents += [k, v]
            return (self.head(self.ln(x)), *presents)

    return torch, F, GPT


def _past_names() -> list[str]:
    return [f"past_{kind}_{i}" for i in range(L) for kind in ("key", "value")]


def _present_names() -> list[str]:
    return [f"present_{kind}_{i}" for i in range(L) for kind in ("key", "value")]


def _language(seed: int):
    r = np.random.default_rng(seed)
    successors = r.integers(0, V, (V, 3))
    odds = np.array([0.75, 0.18, 0.07])

    def sentences(n: int, length: int) -> np.ndarray:
        ids = np.zeros((n, length), np.int64)
        ids[:, 0] = r.integers(0, V, n)
        for i in range(1, length):
            ids[:, i] = successors[ids[:, i - 1], r.choice(3, n, p=odds)]
        return ids

    return sentences


def train(steps: int, out: Path):
    torch, F, GPT = _torch_model()
    torch.manual_seed(0)
    cached = out / f"kv_gpt_{steps}.pt"
    if cached.is_file():  # the export is what is iterated on, not the training
        model = GPT().eval()
        model.load_state_dict(torch.load(cached))
        return model
    sentences = _language(1)
    model = GPT().eval()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    empty = [torch.zeros(32, H, 0, DH)] * (2 * L)
    for _ in range(steps):
        ids = torch.from_numpy(sentences(32, T + 1))
        loss = F.cross_entropy(model(ids[:, :-1], *empty)[0].reshape(-1, V), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"training loss {float(loss):.3f}")
    torch.save(model.state_dict(), cached)
    return model


def export(model, out: Path) -> None:
    import onnx
    import torch

    names = _past_names()
    b, s, p = torch.export.Dim("batch"), torch.export.Dim("seq", max=128), torch.export.Dim("past", max=128)
    ids = torch.zeros(1, 4, dtype=torch.long)
    past = [torch.zeros(1, H, 5, DH) for _ in range(2 * L)]  # one object each: else torch merges the inputs
    dims = {"ids": {0: b, 1: s}, "past": tuple({0: b, 2: p} for _ in range(2 * L))}
    io = {"input_names": ["input_ids", *names], "output_names": ["logits", *_present_names()]}
    torch.onnx.export(model, (ids, *past), out / "kv_decoder.onnx", dynamic_shapes=dims, **io)

    # the prefill: the same module with an empty past, which torch folds away
    class Prefill(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, ids):
            return self.m(ids, *[torch.zeros(ids.shape[0], H, 0, DH)] * (2 * L))

    torch.onnx.export(Prefill(), (ids,), out / "kv_prefill.onnx", dynamic_shapes={"ids": {0: b, 1: s}},
                      input_names=["input_ids"], output_names=io["output_names"], external_data=False)
    merged = merge_if(onnx.load(str(out / "kv_prefill.onnx")), onnx.load(str(out / "kv_decoder.onnx")))
    onnx.checker.check_model(merged)
    onnx.save(merged, str(out / "kv_merged.onnx"))
    (out / "kv_prefill.onnx").unlink()


def merge_if(prefill, decode):
    """optimum's merged layout: ``If(use_cache_branch)``, decode in the then-branch, prefill in the
    else-branch, the weights (the same names in both exports, ``m.`` dropped) at the top."""
    import onnx
    import onnx.helper as oh

    def rename(graph, strip: str) -> dict[str, onnx.TensorProto]:
        inits = {}
        for t in graph.initializer:
            new = t.name[len(strip):] if t.name.startswith(strip) else t.name
            if new != t.name:
                for n in _all_nodes(graph):
                    n.input[:] = [new if x == t.name else x for x in n.input]
                t.name = new
            inits[t.name] = t
        return inits

    for graph, side in ((decode.graph, "d"), (prefill.graph, "p")):  # SSA across the branches
        local = {x: f"{side}_{x}" for n in graph.node for x in n.output if x}
        for n in graph.node:
            n.output[:] = [local.get(x, x) for x in n.output]
            n.input[:] = [local.get(x, x) for x in n.input]
        for o in graph.output:
            o.name = local.get(o.name, o.name)
    pre, dec = rename(prefill.graph, "m."), rename(decode.graph, "")
    top: dict[str, onnx.TensorProto] = {}
    by_value: dict[tuple, str] = {}  # the exports name folded constants apart: dedupe by content
    for side, inits, graph in (("decode", dec, decode.graph), ("prefill", pre, prefill.graph)):
        moved = {}
        for name, t in inits.items():
            key = (t.data_type, tuple(t.dims), onnx.numpy_helper.to_array(t).tobytes())
            if key in by_value:
                moved[name] = by_value[key]
                continue
            new = name if name not in top else f"{side}.{name}"
            moved[name] = by_value[key] = t.name = new
            top[new] = t
        for n in _all_nodes(graph):
            n.input[:] = [moved.get(x, x) for x in n.input]

    def branch(graph, name: str):
        outs = [oh.make_value_info(o.name, o.type) for o in graph.output]
        return oh.make_graph(list(graph.node), name, [], outs)

    out_names = [o.name[2:] for o in decode.graph.output]  # the If gives the exports' names
    then_g, else_g = branch(decode.graph, "decode"), branch(prefill.graph, "prefill")
    flag = oh.make_tensor_value_info("use_cache_branch", onnx.TensorProto.BOOL, [1])
    node = oh.make_node("If", ["use_cache_branch"], out_names, then_branch=then_g, else_branch=else_g,
                        name="optimum::if")
    outs = [oh.make_value_info(name, o.type) for name, o in zip(out_names, decode.graph.output, strict=True)]
    graph = oh.make_graph([node], "kv_merged", [*decode.graph.input, flag], outs, list(top.values()))
    model = oh.make_model(graph, opset_imports=list(decode.opset_import), ir_version=decode.ir_version)
    return model


def _all_nodes(graph):
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.g is not None and a.g.node:
                yield from _all_nodes(a.g)


# ---------------------------------------------------------------------------------------------
# data: decode steps of a generation (past from the fp32 model), and prefills for the merged file


def make_data(out: Path) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "kv_decoder.onnx"), providers=["CPUExecutionProvider"])
    sentences = _language(7)
    r = np.random.default_rng(11)
    names = _past_names()

    def decode_step(ids: np.ndarray) -> dict[str, np.ndarray]:
        """the last token of ``ids`` with the past of the ones before it, run once through the
        fp32 decoder (the first token against a one-long past of its own)"""
        # P >= 1 for the with-past export: start from one token's cache computed by a prefill of it
        past = _prefill_cache(out, ids[:, :1])
        for i in range(1, ids.shape[1] - 1):
            res = sess.run(None, {"input_ids": ids[:, i:i + 1], **dict(zip(names, past, strict=True))})
            past = res[1:]
        return {"input_ids": ids[:, -1:], **dict(zip(names, past, strict=True))}

    for split, n, offset in (("calib", N_CALIB, 0), ("eval", N_EVAL, N_CALIB)):
        plain, merged = out / f"kv_{split}", out / f"kv_merged_{split}"
        plain.mkdir(exist_ok=True)
        merged.mkdir(exist_ok=True)
        for i in range(n):
            ids = sentences(1, int(r.integers(3, 40)))
            step = decode_step(ids)
            np.savez(plain / f"{offset + i:03d}.npz", **step)
            if i % 2:
                np.savez(merged / f"{offset + i:03d}.npz", **step, use_cache_branch=np.ones(1, bool))
            else:  # a prefill: the whole sentence, the past empty
                empty = {k: np.zeros((1, H, 0, DH), np.float32) for k in names}
                np.savez(merged / f"{offset + i:03d}.npz", input_ids=ids, **empty,
                         use_cache_branch=np.zeros(1, bool))


def _prefill_cache(out: Path, ids: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "kv_merged.onnx"), providers=["CPUExecutionProvider"])
    empty = {k: np.zeros((1, H, 0, DH), np.float32) for k in _past_names()}
    return sess.run(None, {"input_ids": ids, **empty, "use_cache_branch": np.zeros(1, bool)})[1:]


def evaluate(out: Path, name: str, model: Path) -> dict[str, float]:
    import onnxruntime as ort

    files = sorted((out / ("kv_eval" if name == "kv_decoder" else "kv_merged_eval")).glob("*.npz"))
    ref = ort.InferenceSession(str(out / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    agree, n, worst = 0, 0, 1.0
    for f in files:
        with np.load(f) as z:
            feed = {k: z[k] for k in z.files}
        a, b = ref.run(None, feed), got.run(None, feed)
        agree += int(np.sum(a[0].argmax(-1) == b[0].argmax(-1)))
        n += a[0].shape[1]
        for x, y in zip(a[1:], b[1:], strict=True):
            x, y = x.ravel().astype(np.float64), y.ravel().astype(np.float64)
            worst = min(worst, float(x @ y / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-30)))
    size = lambda p: sum(q.stat().st_size for q in p.parent.glob(p.name + "*"))  # noqa: E731
    return {"top1": agree / n, "positions": n, "present_worst_cosine": worst,
            "size_ratio": size(out / f"{name}.onnx") / size(model)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--evaluate", nargs=2, metavar=("NAME", "MODEL"))
    args = ap.parse_args()
    if args.evaluate:
        res = evaluate(args.out, args.evaluate[0], Path(args.evaluate[1]))
        print(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    export(train(args.steps, args.out), args.out)
    make_data(args.out)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
