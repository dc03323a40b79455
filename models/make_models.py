"""Train and export the example models in this folder (needs torch, a dev-only tool).

    pip install torch==2.13.0   # CPU wheel; not a runtime dependency of onnxcompress
    python models/make_models.py

Writes, next to this file:

- ``digits_mlp.onnx``: LeNet-300-100 shape, input ``pixels`` [N, 64] -> output ``logits`` [N, 10];
- ``digits_cnn.onnx``: small CNN, input ``image`` [N, 1, 8, 8] -> output ``logits`` [N, 10];
- ``digits_eval.npz``: the held-out evaluation split (``pixels``, ``image``, ``labels``);
- ``digits_calib.npz``: 200 calibration samples, same array names.

Data: scikit-learn's ``load_digits`` (1797 8x8 images, pixel values 0..16, scaled to [0, 1]),
split once, stratified and seeded, into train (1237) / calibration (200) / eval (360). The three
parts are disjoint: calibration samples are carved out of the training part and not trained on.

Everything is deterministic (seeded, single thread, ``torch.use_deterministic_algorithms``) and the
exporter writes no timestamps, so running the script twice gives byte-identical files.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. In torch 2.13 the dynamo
exporter only implements opset >= 18 and its down-conversion to 17 fails (``ReduceMean`` axes),
while the TorchScript one writes opset 17 directly with a clean graph (no shape subgraphs). In eval
mode it folds BatchNormalization into the preceding Conv, so ``digits_cnn.onnx`` has no BN nodes.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
OPSET = 17
N_EVAL = 360
N_CALIB = 200


# --- data ------------------------------------------------------------------------------------------


def digits_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stratified, seeded train / calib / eval split; pixels float32 in [0, 1], labels int64."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_rest, x_eval, y_rest, y_eval = train_test_split(x, y, test_size=N_EVAL, stratify=y, random_state=SEED)
    x_train, x_calib, y_train, y_calib = train_test_split(
        x_rest, y_rest, test_size=N_CALIB, stratify=y_rest, random_state=SEED
    )
    return {"train": (x_train, y_train), "calib": (x_calib, y_calib), "eval": (x_eval, y_eval)}


def save_npz(path: Path, arrays: dict[str, np.ndarray], *, compress: bool = False) -> None:
    """Like ``np.savez`` (or ``savez_compressed``) but byte-reproducible: fixed zip timestamps and
    member order."""
    buf = io.BytesIO()
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression  # writestr(ZipInfo) ignores the archive's default
            zf.writestr(info, member.getvalue())
    path.write_bytes(buf.getvalue())


def feed_arrays(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """One file for both models: ``pixels`` [S, 64] for the MLP, ``image`` [S, 1, 8, 8] for the CNN."""
    return {"pixels": x, "image": x.reshape(-1, 1, 8, 8), "labels": y}


# --- models ----------------------------------------------------------------------------------------


class DigitsMLP(nn.Module):
    """LeNet-300-100 on 64 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(pixels))
        h = torch.relu(self.fc2(h))
        return self.fc3(h)


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class DigitsCNN(nn.Module):
    """Conv16-Conv32-MaxPool-Conv64 (each with BN + ReLU), global average pool, Linear 64 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(1, 16)
        self.conv2 = conv_bn_relu(16, 32)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = conv_bn_relu(32, 64)
        self.fc = nn.Linear(64, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.conv2(self.conv1(image)))
        h = self.conv3(h).mean(dim=(2, 3))  # global average pool; exported as ReduceMean
        return self.fc(h)


# --- training --------------------------------------------------------------------------------------


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float) -> None:
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 64):
            idx = order[start : start + 64]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    model.eval()


def export(model: nn.Module, example: torch.Tensor, input_name: str, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[input_name],
            output_names=["logits"],
            dynamic_axes={input_name: {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    rename_initializers(proto)
    onnx.checker.check_model(proto, full_check=True)
    path.write_bytes(proto.SerializeToString())


def rename_initializers(proto: onnx.ModelProto) -> None:
    """Give folded tensors (``onnx::Conv_45``) a readable name from their node (``conv1.weight``),
    and list initializers in graph order."""
    taken = {i.name for i in proto.graph.initializer}
    renames: dict[str, str] = {}
    for node in proto.graph.node:
        scope = node.name.strip("/").split("/")[0]  # "/conv1/conv1.0/Conv" -> "conv1"
        for slot, name in zip(("weight", "bias"), node.input[1:3], strict=False):
            if name.startswith("onnx::") and name in taken and name not in renames:
                new = f"{scope}.{slot}"
                if new in taken:
                    continue
                renames[name] = new
                taken.add(new)
    for init in proto.graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
    # List initializers in the order the graph first uses them (the exporter puts folded ones last).
    first_use = {}
    for pos, node in enumerate(proto.graph.node):
        for name in node.input:
            first_use.setdefault(name, pos)
    inits = sorted(proto.graph.initializer, key=lambda t: first_use.get(t.name, len(first_use)))
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(inits)


def onnx_accuracy(path: Path, input_name: str, x: np.ndarray, y: np.ndarray) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {input_name: x})[0]
    return float((logits.argmax(axis=1) == y).mean())


def main() -> None:
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    splits = digits_splits()
    x_train, y_train = (torch.from_numpy(a) for a in splits["train"])
    x_eval, y_eval = splits["eval"]
    save_npz(HERE / "digits_eval.npz", feed_arrays(x_eval, y_eval))
    save_npz(HERE / "digits_calib.npz", feed_arrays(*splits["calib"]))

    torch.manual_seed(SEED)
    mlp = DigitsMLP()
    train(mlp, x_train, y_train, epochs=100, lr=1e-3)
    export(mlp, x_train[:2], "pixels", HERE / "digits_mlp.onnx")

    torch.manual_seed(SEED)
    cnn = DigitsCNN()
    train(cnn, x_train.reshape(-1, 1, 8, 8), y_train, epochs=40, lr=2e-3)
    export(cnn, x_train[:2].reshape(-1, 1, 8, 8), "image", HERE / "digits_cnn.onnx")

    for name, input_name, x in (
        ("digits_mlp.onnx", "pixels", x_eval),
        ("digits_cnn.onnx", "image", x_eval.reshape(-1, 1, 8, 8)),
    ):
        acc = onnx_accuracy(HERE / name, input_name, x, y_eval)
        size = (HERE / name).stat().st_size
        print(f"{name}: eval accuracy {100 * acc:.2f}% on {len(y_eval)} samples, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
