"""Train briefly and export the real-architecture test models in ``tests/assets/`` (needs torch).

    pip install torch==2.13.0   # CPU wheel; a dev-only tool, never a runtime dependency
    python scripts/export_test_models.py [--only resnet,transformer,yolo]

Writes, for each model ``<name>``: ``<name>.onnx``, ``<name>_eval.npz`` (inputs + labels or ground
truth) and ``<name>_calib.npz`` (calibration inputs), and prints the metrics that
``tests/assets/README.md`` and ``tests/test_example_models.py`` record.

- ``resnet_digits``: ResNet-style CNN on digits upscaled to 32x32, BatchNormalization kept as nodes;
- ``transformer_digits``: 2-layer transformer encoder over the 8 pixel rows of a digit;
- ``yolo_digits``: YOLO-style single-stage detector on 64x64 canvases with 1-3 pasted digits.

Data comes from scikit-learn's ``load_digits`` with the same train / calib / eval split as
``models/make_models.py``; detector canvases are built from the digits of the matching split.
Deterministic (seeded, one thread, ``torch.use_deterministic_algorithms``). Exporter: the
TorchScript-based ``torch.onnx.export(..., dynamo=False)`` at opset 17 (see ``models/README.md``).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "tests" / "assets"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "models"))

from make_models import digits_splits, save_npz  # noqa: E402

from tests.detection import decode, detection_f1  # noqa: E402

SEED = 0
OPSET = 17


# --- shared --------------------------------------------------------------------------------------


def seed_everything() -> None:
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def fit(model: nn.Module, n: int, step, *, epochs: int, lr: float, batch: int = 64) -> None:
    """Adam + cosine schedule; ``step(idx) -> loss`` computes the loss of the samples ``idx``."""
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * ((n + batch - 1) // batch), pct_start=0.15
    )
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch):
            opt.zero_grad()
            step(order[start : start + batch]).backward()
            opt.step()
            sched.step()
    model.eval()


def export(
    model: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str, *, keep_bn: bool
) -> onnx.ModelProto:
    """TorchScript export at opset 17 with a dynamic batch axis; ``keep_bn`` keeps BatchNormalization
    nodes (``TrainingMode.PRESERVE`` on an eval-mode model) instead of folding them into Conv."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notice of the TorchScript exporter
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            training=torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL,
        )
    proto = onnx.load(str(path))
    tidy(proto)
    onnx.checker.check_model(proto, full_check=True)
    path.write_bytes(proto.SerializeToString())
    return proto


WEIGHT_SLOTS = {"Conv": ("weight", "bias"), "Gemm": ("weight", "bias"), "MatMul": ("weight",)}


def tidy(proto: onnx.ModelProto) -> None:
    """Name exporter-made weight tensors after their module (``onnx::Conv_45`` -> ``backbone.0.0.weight``,
    ``onnx::MatMul_80`` -> ``encoder.0.q.weight``, stored [in, out] for MatMul) and list the
    initializers in the order the graph first uses them."""
    taken = {i.name for i in proto.graph.initializer}
    renames: dict[str, str] = {}
    for node in proto.graph.node:
        module = module_name(node.name)
        if node.op_type not in WEIGHT_SLOTS or not module:
            continue
        for slot, name in zip(WEIGHT_SLOTS[node.op_type], node.input[1:], strict=False):
            new = f"{module}.{slot}"
            if name.startswith("onnx::") and name in taken and name not in renames and new not in taken:
                renames[name] = new
                taken.add(new)
    first_use: dict[str, int] = {}
    for pos, node in enumerate(proto.graph.node):
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
            first_use.setdefault(node.input[i], pos)
    for init in proto.graph.initializer:
        init.name = renames.get(init.name, init.name)
    inits = sorted(proto.graph.initializer, key=lambda t: first_use.get(t.name, len(first_use)))
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(inits)


def module_name(node_name: str) -> str:
    """Qualified torch module name from an exported node name: the exporter writes the scopes as
    ``/encoder/encoder.0/q/MatMul`` (``nn.Sequential`` children carry their parent's prefix)."""
    full, prev = "", ""
    for part in node_name.strip("/").split("/")[:-1]:
        if prev and part.startswith(prev + "."):
            full += part[len(prev) :]
        else:
            full = f"{full}.{part}" if full else part
        prev = part
    return full


def run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def accuracy(path: Path, input_name: str, x: np.ndarray, y: np.ndarray) -> float:
    return float((run_onnx(path, {input_name: x}).argmax(axis=1) == y).mean())


def upscale(x: np.ndarray, size: int) -> np.ndarray:
    """Digits [S, 64] -> images [S, 1, size, size] (bilinear), float32 in [0, 1]."""
    t = torch.from_numpy(x).reshape(-1, 1, 8, 8)
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1).numpy()


# --- ResNet --------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 strided projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetDigits(nn.Module):
    """Stem 32 @32x32, blocks 32 @32x32, 64 @16x16, 128 @8x8, global average pool, Linear 10."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.layer1 = BasicBlock(32, 32, 1)
        self.layer2 = BasicBlock(32, 64, 2)
        self.layer3 = BasicBlock(64, 128, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.layer3(self.layer2(self.layer1(self.stem(image))))
        return self.fc(torch.flatten(self.pool(h), 1))


def make_resnet(splits) -> dict[str, float]:
    seed_everything()
    x_train = torch.from_numpy(upscale(splits["train"][0], 32))
    y_train = torch.from_numpy(splits["train"][1])
    x_eval, y_eval = upscale(splits["eval"][0], 32), splits["eval"][1]
    save_npz(ASSETS / "resnet_digits_eval.npz", {"image": x_eval, "labels": y_eval}, compress=True)
    save_npz(
        ASSETS / "resnet_digits_calib.npz",
        {"image": upscale(splits["calib"][0], 32), "labels": splits["calib"][1]},
        compress=True,
    )
    model = ResNetDigits()
    fit(model, len(x_train), lambda i: F.cross_entropy(model(x_train[i]), y_train[i]), epochs=6, lr=3e-3)
    path = ASSETS / "resnet_digits.onnx"
    proto = export(model, x_train[:2], path, "image", "logits", keep_bn=True)
    assert sum(n.op_type == "BatchNormalization" for n in proto.graph.node) == 9, "BN nodes were folded"
    return {"accuracy": accuracy(path, "image", x_eval, y_eval)}


# --- transformer ---------------------------------------------------------------------------------

TOKENS, FEATURES, D_MODEL, HEADS, FFN = 8, 8, 64, 4, 128


class EncoderLayer(nn.Module):
    """Post-norm encoder layer (as ``nn.TransformerEncoderLayer``), attention written out with
    MatMul/Softmax so the exported graph has plain Linear weights instead of a fused op."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(D_MODEL, D_MODEL)
        self.k = nn.Linear(D_MODEL, D_MODEL)
        self.v = nn.Linear(D_MODEL, D_MODEL)
        self.out = nn.Linear(D_MODEL, D_MODEL)
        self.norm1 = nn.LayerNorm(D_MODEL)
        self.ffn1 = nn.Linear(D_MODEL, FFN)
        self.ffn2 = nn.Linear(FFN, D_MODEL)
        self.norm2 = nn.LayerNorm(D_MODEL)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        dh = D_MODEL // HEADS
        # Constant reshape targets (-1 for the batch) keep Shape/Gather ops out of the graph.
        q = self.q(x).reshape(-1, TOKENS, HEADS, dh).transpose(1, 2)
        k = self.k(x).reshape(-1, TOKENS, HEADS, dh).permute(0, 2, 3, 1)
        v = self.v(x).reshape(-1, TOKENS, HEADS, dh).transpose(1, 2)
        weights = torch.softmax(torch.matmul(q, k) * dh**-0.5, dim=-1)
        ctx = torch.matmul(weights, v).transpose(1, 2).reshape(-1, TOKENS, D_MODEL)
        return self.out(ctx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attention(x))
        return self.norm2(x + self.ffn2(F.gelu(self.ffn1(x))))


class TransformerDigits(nn.Module):
    """Rows of the 8x8 digit as 8 tokens -> Linear 64 + learned positions -> 2 layers -> mean -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(FEATURES, D_MODEL)
        self.pos = nn.Parameter(0.02 * torch.randn(1, TOKENS, D_MODEL))
        self.encoder = nn.Sequential(EncoderLayer(), EncoderLayer())
        self.fc = nn.Linear(D_MODEL, 10)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(rows) + self.pos)
        return self.fc(h.mean(dim=1))


def make_transformer(splits) -> dict[str, float]:
    seed_everything()
    x_train = torch.from_numpy(splits["train"][0].reshape(-1, TOKENS, FEATURES))
    y_train = torch.from_numpy(splits["train"][1])
    x_eval, y_eval = splits["eval"][0].reshape(-1, TOKENS, FEATURES), splits["eval"][1]
    save_npz(ASSETS / "transformer_digits_eval.npz", {"rows": x_eval, "labels": y_eval}, compress=True)
    save_npz(
        ASSETS / "transformer_digits_calib.npz",
        {"rows": splits["calib"][0].reshape(-1, TOKENS, FEATURES), "labels": splits["calib"][1]},
        compress=True,
    )
    model = TransformerDigits()
    fit(model, len(x_train), lambda i: F.cross_entropy(model(x_train[i]), y_train[i]), epochs=100, lr=2e-3)
    path = ASSETS / "transformer_digits.onnx"
    export(model, x_train[:2], path, "rows", "logits", keep_bn=False)
    return {"accuracy": accuracy(path, "rows", x_eval, y_eval)}


# --- YOLO-style detector -------------------------------------------------------------------------

CANVAS, GRID, MAX_DIGITS = 64, 8, 3
CELL = CANVAS // GRID


def make_canvases(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` canvases [n, 1, 64, 64] with 1-3 digits of ``x`` (random size 12-20 px, random place,
    at most one digit centre per grid cell, little overlap); boxes are the pasted squares."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 1, CANVAS, CANVAS), dtype=np.float32)
    boxes = np.full((n, MAX_DIGITS, 4), -1, dtype=np.float32)
    classes = np.full((n, MAX_DIGITS), -1, dtype=np.int64)
    for i in range(n):
        placed: list[tuple[int, int, int]] = []
        for _ in range(int(rng.integers(1, MAX_DIGITS + 1))):
            for _attempt in range(50):
                s = int(rng.integers(12, 21))
                x1, y1 = (int(v) for v in rng.integers(0, CANVAS - s + 1, size=2))
                cell = ((y1 + s // 2) // CELL, (x1 + s // 2) // CELL)
                if all(
                    cell != ((py + ps // 2) // CELL, (px + ps // 2) // CELL)
                    and _overlap((x1, y1, s), (px, py, ps)) < 0.1
                    for px, py, ps in placed
                ):
                    break
            else:
                continue
            j = int(rng.integers(len(x)))
            digit = upscale(x[j : j + 1], s)[0, 0]
            images[i, 0, y1 : y1 + s, x1 : x1 + s] = np.maximum(images[i, 0, y1 : y1 + s, x1 : x1 + s], digit)
            boxes[i, len(placed)] = (x1, y1, x1 + s, y1 + s)
            classes[i, len(placed)] = y[j]
            placed.append((x1, y1, s))
    return {"image": images, "gt_boxes": boxes, "gt_classes": classes}


def _overlap(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """Intersection over the smaller square, squares given as (x1, y1, size)."""
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[2], b[1] + b[2]) - max(a[1], b[1]))
    return iw * ih / min(a[2], b[2]) ** 2


def yolo_targets(boxes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per-cell targets [n, 64, 15] in the layout of ``tests/detection.py``."""
    t = np.zeros((len(boxes), GRID * GRID, 15), dtype=np.float32)
    for i, (bs, cs) in enumerate(zip(boxes, classes, strict=True)):
        for (x1, y1, x2, y2), c in zip(bs, cs, strict=True):
            if c < 0:
                continue
            cx, cy = (x1 + x2) / 2 / CELL, (y1 + y2) / 2 / CELL
            col, row = min(int(cx), GRID - 1), min(int(cy), GRID - 1)
            cell = t[i, row * GRID + col]
            cell[0] = 1
            cell[1 + c] = 1
            cell[11:15] = (cx - col, cy - row, (x2 - x1) / CANVAS, (y2 - y1) / CANVAS)
    return t


def conv_bn_silu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class YoloDigits(nn.Module):
    """Strided Conv-BN-SiLU backbone 64x64 -> 8x8, a 1x1 head with 15 values per cell, sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            conv_bn_silu(1, 16),
            conv_bn_silu(16, 32, 2),
            conv_bn_silu(32, 32),
            conv_bn_silu(32, 64, 2),
            conv_bn_silu(64, 64),
            conv_bn_silu(64, 96, 2),
            conv_bn_silu(96, 96),
        )
        self.head = nn.Conv2d(96, 15, 1)

    def raw(self, image: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid predictions [N, 64, 15]."""
        return self.head(self.backbone(image)).reshape(-1, 15, GRID * GRID).transpose(1, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.raw(image))


def yolo_loss(raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    obj = target[..., 0]
    pos = obj > 0
    loss = F.binary_cross_entropy_with_logits(raw[..., 0], obj)
    loss = loss + F.binary_cross_entropy_with_logits(raw[pos][:, 1:11], target[pos][:, 1:11])
    return loss + 5 * F.binary_cross_entropy_with_logits(raw[pos][:, 11:], target[pos][:, 11:])


def make_yolo(splits) -> dict[str, float]:
    seed_everything()
    train = make_canvases(*splits["train"], n=2000, seed=1)
    evaluation = make_canvases(*splits["eval"], n=300, seed=2)
    calib = make_canvases(*splits["calib"], n=100, seed=3)
    save_npz(ASSETS / "yolo_digits_eval.npz", evaluation, compress=True)
    save_npz(ASSETS / "yolo_digits_calib.npz", calib, compress=True)
    x_train = torch.from_numpy(train["image"])
    t_train = torch.from_numpy(yolo_targets(train["gt_boxes"], train["gt_classes"]))
    model = YoloDigits()
    fit(model, len(x_train), lambda i: yolo_loss(model.raw(x_train[i]), t_train[i]), epochs=15, lr=3e-3)
    path = ASSETS / "yolo_digits.onnx"
    export(model, x_train[:2], path, "image", "detections", keep_bn=False)
    out = run_onnx(path, {"image": evaluation["image"]})
    score = detection_f1(decode(out, conf=0.5), evaluation["gt_boxes"], evaluation["gt_classes"], iou=0.5)
    return {"f1": score.f1, "precision": score.precision, "recall": score.recall}


MAKERS = {"resnet": make_resnet, "transformer": make_transformer, "yolo": make_yolo}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(MAKERS), help="comma-separated subset of " + ", ".join(MAKERS)
    )
    args = parser.parse_args()
    ASSETS.mkdir(parents=True, exist_ok=True)
    splits = digits_splits()
    for name in args.only.split(","):
        start = time.process_time()
        metrics = MAKERS[name](splits)
        onnx_path = ASSETS / f"{name}_digits.onnx"
        shown = ", ".join(f"{k} {100 * v:.2f}%" for k, v in metrics.items())
        print(
            f"{onnx_path.name}: {shown}; {onnx_path.stat().st_size / 1024:.0f} KiB; "
            f"{time.process_time() - start:.0f} s CPU"
        )


if __name__ == "__main__":
    main()
