"""Fetch the twenty-fourth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch24.md`` sweeps them (``bench_real_models.py --root DIR``).
A kind no earlier batch had: a whole seq2seq encoder-decoder with its greedy decoding loop in one
graph (unrolled GRU cells, ``ArgMax`` feeding the next step's embedding ``Gather``), and the same
decoder teacher-forced as one ``GRU`` op. Partial batch (found under a 2-hour deadline): the
search for pose, depth, CLIP, DETR, optical-flow, point-cloud and GNN weights shipped in PyPI
wheels or small enough for a repository snapshot found none in time (the write-up lists what was
tried); both networks are one checkpoint:

- ``g2p_en``: Kyubyong Park's English grapheme-to-phoneme GRU seq2seq, ``g2p-en==2.1.0``'s
  ``g2p_en/checkpoint20.npz`` (the package runs it in numpy: ``G2p.predict``), rebuilt in torch as
  the package computes it and exported by torch 2.13 defaults: graphemes int64 [1, 20] (the
  word's letters, ``</s>``, 0-padded; padding leaves the encoder state as it is, so the final
  state is the package's) -> phoneme logits [1, 20, 74] of the 20 greedy steps (``<s>`` first, each
  step's arg-max fed back, as ``G2p.predict``; the package stops at ``</s>`` = 3).
- ``g2p_en_tf``: the same decoder teacher-forced as one ``nn.GRU``: encoder state h [1, 256] and
  previous phonemes int64 [1, 20] (``<s>`` + fp32's greedy phonemes) -> logits [1, 20, 74].

    /work/venv-torch/bin/python scripts/unseen_models24.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models24.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli  # noqa: E402
from unseen_models15 import _pinned_member  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen24"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

G2P_SPEC = "g2p-en==2.1.0"
G2P_MEMBER = "g2p_en/checkpoint20.npz"
GRAPHEMES = ["<pad>", "<unk>", "</s>", *"abcdefghijklmnopqrstuvwxyz"]
T = 20  # the package's 20 decoder steps; words of up to 19 letters
EOS = 3  # the phoneme </s>
PREFIXES = ["", "", "un", "re", "over", "mis", "pre", "de"]
SUFFIXES = ["", "", "s", "ing", "ed", "er", "ly", "ness", "able", "ment", "ish", "ville", "ton"]


# ---------------------------------------------------------------------------------------------
# the package's GRU seq2seq in torch


def _g2p_weights(out: Path, check: bool) -> dict[str, np.ndarray]:
    path = _pinned_member(out, G2P_SPEC, G2P_MEMBER, "g2p_en_checkpoint20.npz",
                          SOURCE_SHA256["g2p_en"] if check else None)  # fmt: skip
    z = np.load(path)
    return {k: z[k].astype(np.float32) for k in z.files}


def _nets(w: dict[str, np.ndarray]) -> tuple[Any, Any, Callable[[Any], Any]]:
    """(greedy seq2seq, teacher-forced decoder, encoder) as torch modules / function"""
    import torch
    from torch import nn

    p = {k: torch.from_numpy(v) for k, v in w.items()}

    def cell(x: Any, h: Any, s: str) -> Any:  # G2p.grucell
        gi = x @ p[f"{s}_w_ih"].T + p[f"{s}_b_ih"]
        gh = h @ p[f"{s}_w_hh"].T + p[f"{s}_b_hh"]
        r, z = torch.sigmoid(gi[:, :512] + gh[:, :512]).chunk(2, -1)
        n = torch.tanh(gi[:, 512:] + r * gh[:, 512:])
        return (1 - z) * n + z * h

    def encode(x: Any) -> Any:
        e = p["enc_emb"][x]
        h = torch.zeros(x.shape[0], 256)
        for t in range(x.shape[1]):
            h = torch.where((x[:, t] != 0)[:, None], cell(e[:, t], h, "enc"), h)
        return h

    class Greedy(nn.Module):
        def forward(self, graphemes: Any) -> Any:
            h = encode(graphemes)
            tok = torch.full((graphemes.shape[0],), 2, dtype=torch.int64)
            logits = []
            for _ in range(T):
                h = cell(p["dec_emb"][tok], h, "dec")
                y = h @ p["fc_w"].T + p["fc_b"]
                logits.append(y)
                tok = y.argmax(-1)
            return torch.stack(logits, 1)

    class Forced(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding.from_pretrained(p["dec_emb"])
            self.gru = nn.GRU(256, 256, batch_first=True)
            self.fc = nn.Linear(256, 74)
            with torch.no_grad():
                for a, b in (("weight_ih_l0", "w_ih"), ("weight_hh_l0", "w_hh"), ("bias_ih_l0", "b_ih"),
                             ("bias_hh_l0", "b_hh")):  # fmt: skip
                    getattr(self.gru, a).copy_(p[f"dec_{b}"])
                self.fc.weight.copy_(p["fc_w"])
                self.fc.bias.copy_(p["fc_b"])

        def forward(self, h: Any, prev: Any) -> Any:
            y, _ = self.gru(self.emb(prev), h[None])
            return self.fc(y)

    return Greedy().eval(), Forced().eval(), encode


def _ids(word: str) -> np.ndarray:
    ids = [GRAPHEMES.index(c) for c in word] + [2]
    return np.array([ids + [0] * (T - len(ids))], np.int64)


def _words(r: np.random.Generator, n: int, out: Path) -> list[str]:
    """``n`` words: headwords of the wheel's own ``homographs.en``, half with a prefix and/or
    suffix (out-of-dictionary forms, the words the package hands the network), <= 19 letters"""
    folder = out / "wheels" / G2P_SPEC.replace("==", "-")
    with zipfile.ZipFile(next(folder.iterdir())) as z:
        lines = z.read("g2p_en/homographs.en").decode("utf-8").splitlines()
    heads = sorted({ln.split("|")[0].lower() for ln in lines if ln and not ln.startswith("#")})
    heads = [h for h in heads if h.isalpha() and h.isascii()]
    got: list[str] = []
    while len(got) < n:
        w = heads[int(r.integers(len(heads)))]
        if r.random() < 0.5:
            w = PREFIXES[int(r.integers(len(PREFIXES)))] + w + SUFFIXES[int(r.integers(len(SUFFIXES)))]
        if len(w) < T:
            got.append(w)
    return got


def d_g2p_en(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """words of the wheel's ``homographs.en`` (half with a prefix / suffix), as ``G2p.encode`` ids
    (letters, ``</s>``), 0-padded to [1, 20] int64"""
    return {"graphemes": np.stack([_ids(w) for w in _words(r, n, out)])}


def d_g2p_en_tf(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """the same words through the fp32 torch encoder (h [1, 256]) and ``<s>`` + the fp32 greedy
    phonemes of the first 19 steps (previous phonemes [1, 20] int64)"""
    import torch

    greedy, _, encode = _nets(_g2p_weights(out, False))
    g = d_g2p_en(r, n, out)["graphemes"]
    hs, prevs = [], []
    with torch.no_grad():
        for x in g:
            t = torch.from_numpy(x)
            hs.append(encode(t).numpy())
            steps = greedy(t).numpy()[0].argmax(-1)
            prevs.append(np.concatenate([[2], steps[: T - 1]])[None].astype(np.int64))
    return {"h": np.stack(hs).astype(np.float32), "prev": np.stack(prevs)}


def export_g2p(name: str, out: Path, check: bool) -> None:
    import torch

    greedy, forced, _ = _nets(_g2p_weights(out, check))
    if name == "g2p_en":
        args: tuple[Any, ...] = (torch.from_numpy(_ids("hello")),)
        torch.onnx.export(greedy, args, str(out / f"{name}.onnx"))
    else:
        args = (torch.zeros(1, 256), torch.full((1, T), 2, dtype=torch.int64))
        torch.onnx.export(forced, args, str(out / f"{name}.onnx"))


def _phonemes(steps: np.ndarray) -> tuple[int, ...]:
    """``G2p.predict``'s phoneme ids: the greedy arg-maxes up to the first ``</s>``"""
    got = []
    for k in steps:
        if k == EOS:
            break
        got.append(int(k))
    return tuple(got)


def _word_agreement(ref: list, got: list) -> dict[str, Any]:
    """share of words whose phoneme string (greedy, up to ``</s>``) is fp32's, and the steps
    before it that agree (the bench's top-1 also counts the steps after ``</s>``)"""
    same, steps = [], []
    for a, b in zip(ref, got, strict=True):
        ra, xa = np.asarray(a[0])[0].argmax(-1), np.asarray(b[0])[0].argmax(-1)
        pa = _phonemes(ra)
        same.append(pa == _phonemes(xa))
        k = len(pa) + 1
        steps.append(np.mean(ra[:k] == xa[:k]))
    return {"word_agreement": float(np.mean(same)), "step_agreement_to_eos": float(np.mean(steps))}


EXTRA_METRICS["g2p_en"] = _word_agreement
EXTRA_METRICS["g2p_en_tf"] = _word_agreement


# ---------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    # per-step arg-max agreement over the 20 steps (`--evaluate`: also whole words up to </s>)
    "g2p_en": (
        G2P_SPEC,
        G2P_MEMBER,
        "English G2P GRU seq2seq (256 units, 29 graphemes, 74 phonemes), the whole greedy "
        "decode unrolled in one graph (ArgMax -> Gather), torch 2.13 export",
        d_g2p_en,
        {"kind": "top1", "output": 0},
    ),  # fmt: skip
    "g2p_en_tf": (
        G2P_SPEC,
        G2P_MEMBER,
        "the same decoder teacher-forced as one nn.GRU (ONNX GRU op) + Linear, torch 2.13 "
        "export: h [1, 256], previous phonemes [1, 20] -> logits [1, 20, 74]",
        d_g2p_en_tf,
        {"kind": "top1", "output": 0},
    ),  # fmt: skip
}
SOURCE_SHA256: dict[str, str] = {
    "g2p_en": "b8af35e4596d8dd5836dfd3fe9b2ba4f97b9c311efe8879544cbcfcbd566d8c6",
    "g2p_en_tf": "b8af35e4596d8dd5836dfd3fe9b2ba4f97b9c311efe8879544cbcfcbd566d8c6",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, member, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        export_g2p(name, out, check)
    src = out / "g2p_en_checkpoint20.npz"
    print(name, "source sha256", hashlib.sha256(src.read_bytes()).hexdigest())
    entry = manifest_entry(out, name, dest.name, spec, member, None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    entry["source"] = (
        f"PyPI `{spec}`, `{member}` rebuilt in torch as `G2p.predict`, exported by torch 2.13 defaults"
    )
    entry["source_sha256"] = hashlib.sha256(src.read_bytes()).hexdigest()
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
