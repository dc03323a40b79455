"""Fetch the twenty-sixth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch26.md`` sweeps them (``bench_real_models.py --root DIR``).
Kinds no earlier batch had:

- ``spynet_chairs``: SPyNet (Ranjan & Black 2017), the spatial-pyramid optical-flow network, the
  authors' own Torch7 checkpoints (GitHub ``anuragranj/spynet@7c4a3f7``,
  ``models/modelL{1..4}_4.t7``: "chairsClean", trained on FlyingChairs, 1.9 MB each in float64),
  read with ``torchfile`` (pip-installed ``--target`` into the cache) into the repository's
  architecture (five 7x7 convs a level; each level's input is image 1, image 2 warped by the
  upsampled flow, and that flow; ``spynet.lua``'s ``computeInitFlowL{1..4}``) and exported by
  torch 2.13 defaults: two RGB images [1, 3, 192, 256] in 0..1 -> flow [1, 2, 192, 256] in
  pixels (x, y). Four levels on a 256 x 192 pair are the repository's first four levels of a
  512 x 384 pair (its level 4 runs at 256 x 192 on the average-pooled images). The port is
  checked on the repository's three FlyingChairs samples with their ground truth (five levels at
  512 x 384: EPE 1.59 / 0.53 / 1.61 px; flow channels swapped: 11.1 / 6.8 / 10.5 px).
- ``spynet_kitti`` / ``spynet_sintel``: the same graph with the KITTI- and Sintel-final-finetuned
  levels (``modelL{1..4}_K.t7`` / ``_F.t7``: ``spynet.lua``'s "kittiFinal" / "sintelFinal").

The three read the same kind of data (``d_flow``: FlyingChairs-like pairs made from photos);
``--evaluate`` adds the end-point error against fp32's flow (``_flow_epe``).

    /work/venv-torch/bin/python scripts/unseen_models26.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models26.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli  # noqa: E402
from unseen_models12 import git_file  # noqa: E402
from unseen_models13 import SR_PHOTOS, _photos  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen26"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

# ---------------------------------------------------------------------------------------------
# SPyNet optical flow

SPYNET = ("anuragranj/spynet", "7c4a3f7d1a5879a50361fff3e1b8fa35ec397fcd")
SPY_LEVELS = 4
SPY_H, SPY_W = 192, 256
SPY_MEAN = (0.485, 0.456, 0.406)  # the repository's TF.ColorNormalize, on both images
SPY_STD = (0.229, 0.224, 0.225)
SPY_NETS = {"spynet_chairs": "4", "spynet_kitti": "K", "spynet_sintel": "F"}  # spynet.lua's "chairsClean",
# "kittiFinal", "sintelFinal": the checkpoint suffix


def _torchfile(out: Path) -> Any:
    """``torchfile`` (a pure-Python Torch7 reader) pip-installed ``--target`` into the cache"""
    import subprocess  # noqa: PLC0415

    lib = out / "pylib"
    if not (lib / "torchfile.py").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(lib),
                        "torchfile==0.1.0"], check=True)  # fmt: skip
    sys.path.insert(0, str(lib))
    import torchfile  # noqa: PLC0415

    return torchfile


def _spy_level(out: Path, raw: bytes) -> Any:
    """one level's ``nn.Sequential`` of 7x7 ``SpatialConvolution`` + ``ReLU`` as torch modules"""
    import torch  # noqa: PLC0415

    tmp = out / "spynet_level.t7"
    tmp.write_bytes(raw)
    seq = _torchfile(out).load(str(tmp))
    layers: list[Any] = []
    for m in seq[b"modules"]:
        if m.torch_typename().endswith(b"SpatialConvolution"):
            assert int(m[b"kW"]) == 7 and int(m[b"padW"]) == 3 and int(m[b"dW"]) == 1
            c = torch.nn.Conv2d(int(m[b"nInputPlane"]), int(m[b"nOutputPlane"]), 7, padding=3)
            c.weight.data = torch.from_numpy(np.asarray(m[b"weight"], np.float32))
            c.bias.data = torch.from_numpy(np.asarray(m[b"bias"], np.float32))
            layers.append(c)
        else:
            assert m.torch_typename().endswith(b"ReLU"), m.torch_typename()
            layers.append(torch.nn.ReLU())
    tmp.unlink()
    return torch.nn.Sequential(*layers)


def _spynet_class() -> Any:
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: N812, PLC0415

    class SpyNet(torch.nn.Module):
        """``spynet.lua``'s pyramid: 2x2 average pooling down, level 1 from a zero flow, then per
        level bilinear x2 upsampling (align corners, as ``ScaleBHWD``) of the flow times 2, image 2
        warped by it (bilinear, zeros outside, as ``BilinearSamplerBHWD``), the level's residual"""

        def __init__(self, levels: list[Any]) -> None:
            super().__init__()
            self.levels = torch.nn.ModuleList(levels)
            self.register_buffer("mean", torch.tensor(SPY_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(SPY_STD).view(1, 3, 1, 1))

        @staticmethod
        def warp(img: Any, flow: Any) -> Any:
            _, _, h, w = img.shape
            ys = torch.arange(h, dtype=img.dtype).view(1, h, 1).expand(1, h, w)
            xs = torch.arange(w, dtype=img.dtype).view(1, 1, w).expand(1, h, w)
            gx = (xs + flow[:, 0]) * (2.0 / (w - 1)) - 1.0
            gy = (ys + flow[:, 1]) * (2.0 / (h - 1)) - 1.0
            return F.grid_sample(img, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="zeros",
                                 align_corners=True)  # fmt: skip

        def forward(self, image1: Any, image2: Any) -> Any:
            a, b = [(image1 - self.mean) / self.std], [(image2 - self.mean) / self.std]
            for _ in range(len(self.levels) - 1):
                a.insert(0, F.avg_pool2d(a[0], 2))
                b.insert(0, F.avg_pool2d(b[0], 2))
            zero = torch.zeros_like(a[0][:, :2])
            flow = self.levels[0](torch.cat([a[0], b[0], zero], 1))
            for k in range(1, len(self.levels)):
                up = F.interpolate(flow, scale_factor=2.0, mode="bilinear", align_corners=True) * 2.0
                flow = self.levels[k](torch.cat([a[k], self.warp(b[k], up), up], 1)) + up
            return flow

    return SpyNet


def export_spynet(name: str, out: Path, check: bool) -> None:
    import torch  # noqa: PLC0415

    suffix = SPY_NETS[name]
    raws = [git_file(SPYNET, f"models/modelL{k}_{suffix}.t7") for k in range(1, SPY_LEVELS + 1)]
    digest = hashlib.sha256(b"".join(raws)).hexdigest()
    (out / f"{name}.source_sha256").write_text(digest)
    if check and digest != SOURCE_SHA256[name]:
        raise SystemExit(f"{name}: the checkpoints' sha256 {digest} differs from the one measured")
    net = _spynet_class()([_spy_level(out, raw) for raw in raws]).eval()
    d = d_flow(np.random.default_rng(0), 1, out)
    args = (torch.from_numpy(d["image1"][0]), torch.from_numpy(d["image2"][0]))
    torch.onnx.export(net, args, str(out / f"{name}.onnx"))


def _affine(img: Any, size: tuple[int, int], cx: float, cy: float, s: float, rot: float,
            dx: float, dy: float) -> np.ndarray:  # fmt: skip
    """``img`` seen by a camera at centre (cx, cy) of the source, s source pixels an output pixel,
    turned by ``rot`` radians and moved by (dx, dy) output pixels"""
    from PIL import Image  # noqa: PLC0415

    w, h = size
    c, n = np.cos(rot) * s, np.sin(rot) * s
    # source = centre + R s (p - p0 - d): PIL's AFFINE maps output (x, y) to input
    x0, y0 = w / 2 + dx, h / 2 + dy
    data = (c, -n, cx - c * x0 + n * y0, n, c, cy - n * x0 - c * y0)
    return np.asarray(img.transform(size, Image.Transform.AFFINE, data, Image.Resampling.BILINEAR))


def d_flow(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """pairs of 256 x 192 RGB frames (0..1) from eight photos of two repositories (three WIDER
    group photos, FastestDet's five street photos): a camera move (up to 6 px, 2 degrees, 3 %
    zoom) over a photo crop plus one or two elliptic patches of another photo that move on their
    own (up to 12 px), FlyingChairs-like; brightness x0.85-1.15"""
    from PIL import Image, ImageDraw  # noqa: PLC0415

    photos = [Image.fromarray(_photos(repo, [p])[0]) for repo, p in SR_PHOTOS]
    size = (SPY_W, SPY_H)
    one, two = [], []
    for k in range(n):
        bg = photos[k % len(photos)]
        s = r.uniform(0.4, 0.9) * min(bg.width / SPY_W, bg.height / SPY_H)
        cx = r.uniform(SPY_W * s / 2 + 8 * s, bg.width - SPY_W * s / 2 - 8 * s)
        cy = r.uniform(SPY_H * s / 2 + 8 * s, bg.height - SPY_H * s / 2 - 8 * s)
        m = (r.uniform(-6, 6), r.uniform(-6, 6), r.uniform(-0.035, 0.035), r.uniform(0.97, 1.03))
        f1 = _affine(bg, size, cx, cy, s, 0.0, 0.0, 0.0).astype(np.float32)
        f2 = _affine(bg, size, cx, cy, s * m[3], m[2], m[0], m[1]).astype(np.float32)
        for _ in range(int(r.integers(1, 3))):
            fg = photos[int(r.integers(len(photos)))]
            fs = r.uniform(0.3, 0.8) * min(fg.width / SPY_W, fg.height / SPY_H)
            fx = r.uniform(SPY_W * fs / 2 + 16, fg.width - SPY_W * fs / 2 - 16)
            fy = r.uniform(SPY_H * fs / 2 + 16, fg.height - SPY_H * fs / 2 - 16)
            ew, eh = r.uniform(40, 110), r.uniform(30, 90)
            ex, ey = r.uniform(ew / 2, SPY_W - ew / 2), r.uniform(eh / 2, SPY_H - eh / 2)
            mv = (r.uniform(-12, 12), r.uniform(-12, 12), r.uniform(-0.06, 0.06))
            for f, (ddx, ddy, rot) in ((f1, (0.0, 0.0, 0.0)), (f2, mv)):
                patch = _affine(fg, size, fx, fy, fs, rot, ddx, ddy).astype(np.float32)
                mask = Image.new("L", size, 0)
                ImageDraw.Draw(mask).ellipse([ex + ddx - ew / 2, ey + ddy - eh / 2, ex + ddx + ew / 2,
                                              ey + ddy + eh / 2], fill=255)  # fmt: skip
                a = np.asarray(mask, np.float32)[..., None] / 255.0
                f[...] = f * (1 - a) + patch * a
        gain = r.uniform(0.85, 1.15)
        one.append(np.clip(f1 * gain / 255.0, 0, 1).transpose(2, 0, 1)[None])
        two.append(np.clip(f2 * gain / 255.0, 0, 1).transpose(2, 0, 1)[None])
    return {"image1": np.stack(one).astype(np.float32), "image2": np.stack(two).astype(np.float32)}


def _flow_epe(ref: list, got: list) -> dict[str, Any]:
    """end-point error of the compressed model's flow against fp32's, in pixels (mean over
    pixels, then over pairs; worst pair), the same relative to fp32's mean flow magnitude, and
    the share of pixels more than 1 px off"""
    epe, rel, bad = [], [], []
    for a, b in zip(ref, got, strict=True):
        fa, fb = np.asarray(a[0], np.float64)[0], np.asarray(b[0], np.float64)[0]
        e = np.sqrt(((fa - fb) ** 2).sum(0))
        epe.append(float(e.mean()))
        rel.append(float(e.mean() / max(np.sqrt((fa**2).sum(0)).mean(), 1e-9)))
        bad.append(float(np.mean(e > 1.0)))
    return {"epe_px": float(np.mean(epe)), "epe_worst_px": float(np.max(epe)),
            "epe_rel": float(np.mean(rel)), "px_over_1": float(np.mean(bad))}  # fmt: skip


for _n in SPY_NETS:
    EXTRA_METRICS[_n] = _flow_epe


# ---------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any], Callable[[str, Path, bool], None]]] = {
    # every flow component within 1 px of fp32's (`--evaluate`: EPE vs fp32)
    "spynet_chairs": (f"{SPYNET[0]}@{SPYNET[1][:7]}", "models/modelL{1..4}_4.t7",
                      "SPyNet optical flow, FlyingChairs (chairsClean) levels 1-4: five 7x7 convs "
                      "a level, avg-pool pyramid, bilinear upsampling, GridSample warping; two RGB "
                      "256x192 frames -> flow [1, 2, 192, 256] px",
                      d_flow, {"kind": "within", "output": 0, "tol": 1.0}, export_spynet),  # fmt: skip
    "spynet_kitti": (f"{SPYNET[0]}@{SPYNET[1][:7]}", "models/modelL{1..4}_K.t7",
                     "SPyNet optical flow, the KITTI-finetuned levels 1-4 (kittiFinal), same graph",
                     d_flow, {"kind": "within", "output": 0, "tol": 1.0}, export_spynet),  # fmt: skip
    "spynet_sintel": (f"{SPYNET[0]}@{SPYNET[1][:7]}", "models/modelL{1..4}_F.t7",
                      "SPyNet optical flow, the Sintel-final-finetuned levels 1-4 (sintelFinal), same graph",
                      d_flow, {"kind": "within", "output": 0, "tol": 1.0}, export_spynet),  # fmt: skip
}
SOURCE_SHA256: dict[str, str] = {
    "spynet_chairs": "0a745cc94b47d6e46c22326b53e30b351c71c00ca816ddb3fa9d1e4b9ee39d67",
    "spynet_kitti": "4b17d7576fe5dc7ef604d1c922b229c8a831a00439d36b235c54c49935f9d9fe",
    "spynet_sintel": "730fa1f946c7c2c0e5461254ba696f83a19b15fa3be743f7c7be0a409bd2ec5e",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, member, what, maker, metric, export = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        export(name, out, check)
    digest = (out / f"{name}.source_sha256").read_text()
    print(name, "source sha256", digest)
    entry = manifest_entry(out, name, dest.name, spec, member, None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    entry["source"] = (f"GitHub `{spec}`, `{member}` + the repository's model code, exported by "
                       "torch 2.13 defaults")
    entry["source_sha256"] = digest
    entry["io"]["bytes_with_data"] = sum(p.stat().st_size for p in out.glob(dest.name + "*"))
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
