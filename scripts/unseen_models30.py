"""Fetch the thirtieth batch of "unseen" third-party models into a cache, with data made for each.

``benchmarks/results/unseen_models_batch30.md`` sweeps them (``bench_real_models.py --root DIR``).
Four models of three kinds no earlier batch had (face-attribute classifiers, a control policy, an
anomaly-detection autoencoder):

- ``emotion_xception``: facial-expression (emotion) classifier, mini-Xception (two 3x3 convs, four
  residual modules of depthwise-separable convs with max pooling, a 3x3 conv to 7 classes, global
  average pooling, softmax; 58 k parameters) trained on FER-2013 (66 % validation accuracy), as
  committed in GitHub ``oarriaga/face_classification@b861d21``
  (``trained_models/emotion_models/fer2013_mini_XCEPTION.102-0.66.hdf5``, the file its demos load;
  Keras 2.0.5 HDF5): [1, 1, 64, 64] grey face in [-1, 1] -> [1, 7] probabilities (angry, disgust,
  fear, happy, sad, surprise, neutral).
- ``gender_xception``: the same repository's gender classifier (mini-Xception, IMDB faces, 95 %
  validation accuracy; ``trained_models/gender_models/gender_mini_XCEPTION.21-0.95.hdf5``):
  [1, 1, 64, 64] grey face in [-1, 1] -> [1, 2] probabilities (woman, man).
- ``sac_halfcheetah``: a reinforcement-learning control policy: the actor of Stable-Baselines3's
  SAC agent for MuJoCo HalfCheetah (MLP 17 -> 256 -> 256 -> 6, tanh of the mean: the deterministic
  action; 73 k parameters) as committed in GitHub ``DLR-RM/rl-trained-agents@cd35bde``
  (``sac/HalfCheetah-v3_1/HalfCheetah-v3.zip``, ``policy.pth``): [1, 17] observation -> [1, 6]
  joint torques in [-1, 1].
- ``ecg_lstm_ae``: an anomaly detector: an LSTM autoencoder of heartbeats (encoder LSTM 1 -> 256 ->
  128, its last hidden state repeated 140 times, decoder LSTM 128 -> 128 -> 256, Linear 256 -> 1;
  0.99 M parameters) trained on ECG5000's normal beats, as committed in GitHub
  ``msarathrahul/anomaly_detection_ECG@9b2e1d8`` (``_models/model_1.pkl``, a pickled torch module
  read here by a restricted unpickler): [140, 1] beat -> [140, 1] reconstruction; the anomaly score
  is the mean |reconstruction - beat|, over 0.26 abnormal (the notebook's threshold).

The Keras files are ported to torch here (each layer read from the HDF5 file's own model config:
Conv2D / SeparableConv2D / BatchNormalization / MaxPooling2D with TensorFlow's "same" padding /
add / GlobalAveragePooling2D / softmax) and exported with torch 2.13's TorchScript exporter.

``--evaluate`` adds the task metrics: the classifiers' top-1 agreement with fp32 over all faces
(``*_eval_large.npz``) besides the 32 of the eval set; the policy's actions against fp32's (mean /
largest |difference|) and, run under /work/venv-torch (gymnasium + mujoco), the closed-loop return
of three 1000-step HalfCheetah-v5 episodes driven by the file against fp32's; the autoencoder's
anomaly decisions and score ranks against fp32's over ECG5000's 500 training-file beats, and the
AUROC of normal against abnormal beats, fp32's and the file's.

    /work/venv-torch/bin/python scripts/unseen_models30.py [--out DIR] [--only a,b]
    /work/venv/bin/python scripts/unseen_models30.py --evaluate NAME MODEL   # metric of a compressed file
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from unseen_models3 import N_CALIB, _savez, manifest_entry  # noqa: E402
from unseen_models4 import batch_cli, evaluate  # noqa: E402
from unseen_models12 import git_file  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "onnxcompress-unseen30"
Maker = Callable[[np.random.Generator, int, Path], dict[str, np.ndarray]]


def _out_dir() -> Path:
    return Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else DEFAULT_OUT


def _check(name: str, raw: bytes, check: bool) -> str:
    digest = hashlib.sha256(raw).hexdigest()
    if check and digest != SOURCE_SHA256[name]:
        raise SystemExit(f"{name}: sha256 {digest} differs from the one measured")
    return digest


# ---------------------------------------------------------------------------------------------
# Keras mini-Xception (oarriaga/face_classification) ported to torch

FACECLS = ("oarriaga/face_classification", "b861d21b0e76ca5514cdeb5b56a689b7318584f4")
EMOTION_MEMBER = "trained_models/emotion_models/fer2013_mini_XCEPTION.102-0.66.hdf5"
GENDER_MEMBER = "trained_models/gender_models/gender_mini_XCEPTION.21-0.95.hdf5"


def keras_to_torch(raw: bytes) -> Any:
    """a torch module computing the HDF5 file's functional Keras model (the layer kinds the two
    mini-Xception files use), weights from ``model_weights``"""
    import h5py  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: N812, PLC0415

    h = h5py.File(io.BytesIO(raw), "r")
    layers = json.loads(h.attrs["model_config"])["config"]["layers"]
    weights: dict[str, dict[str, torch.Tensor]] = {}
    for lay in layers:
        g = h["model_weights"].get(lay["name"])
        found: dict[str, Any] = {}
        if g is not None:
            g.visititems(lambda n, o, f=found: f.__setitem__(n.split("/")[-1].split(":")[0], o[()])
                         if isinstance(o, h5py.Dataset) else None)  # fmt: skip
        weights[lay["name"]] = {k: torch.tensor(np.asarray(v, np.float32)) for k, v in found.items()}

    def same_pad(x: Any, k: int, s: int) -> int:
        """TensorFlow's total "same" padding of a square input (as Python ints: the traced graph
        keeps plain Conv / MaxPool pads, no padding arithmetic)"""
        d = int(x.shape[2])
        return max(((d + s - 1) // s - 1) * s + k - d, 0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.ParameterDict()
            for lname, ws in weights.items():
                for k, v in ws.items():
                    self.w[f"{lname}__{k}"] = torch.nn.Parameter(v, requires_grad=False)

        def p(self, lname: str, k: str) -> Any:
            return self.w[f"{lname}__{k}"]

        def forward(self, x: Any) -> Any:
            vals: dict[str, Any] = {}
            for lay in layers:
                cls, cfg, lname = lay["class_name"], lay["config"], lay["name"]
                ins = [vals[n[0]] for n in lay["inbound_nodes"][0]] if lay["inbound_nodes"] else [x]
                y = ins[0]
                if cls == "InputLayer":
                    y = x
                elif cls in ("Conv2D", "SeparableConv2D"):
                    k, s = cfg["kernel_size"][0], cfg["strides"][0]
                    pad = same_pad(y, k, s) if cfg["padding"] == "same" else 0
                    if pad % 2:
                        raise SystemExit("asymmetric 'same' convolution padding not ported")
                    if cls == "Conv2D":
                        w = self.p(lname, "kernel").permute(3, 2, 0, 1)
                        y = F.conv2d(y, w, self.p(lname, "bias") if cfg["use_bias"] else None, s, pad // 2)
                    else:
                        dw = self.p(lname, "depthwise_kernel").permute(2, 3, 0, 1)
                        y = F.conv2d(y, dw, None, s, pad // 2, groups=dw.shape[0])
                        pw = self.p(lname, "pointwise_kernel").permute(3, 2, 0, 1)
                        y = F.conv2d(y, pw, self.p(lname, "bias") if cfg["use_bias"] else None)
                elif cls == "BatchNormalization":
                    y = F.batch_norm(y, self.p(lname, "moving_mean"), self.p(lname, "moving_variance"),
                                     self.p(lname, "gamma"), self.p(lname, "beta"), False, 0.0,
                                     cfg["epsilon"])  # fmt: skip
                elif cls == "Activation":
                    y = {"relu": F.relu, "softmax": lambda t: F.softmax(t, -1)}[cfg["activation"]](y)
                elif cls == "MaxPooling2D":
                    k, s = cfg["pool_size"][0], cfg["strides"][0]
                    pad = same_pad(y, k, s) if cfg["padding"] == "same" else 0
                    # TensorFlow pads (pad // 2, pad - pad // 2): an odd pad puts the extra row at
                    # the end, which ceil_mode's partial last window computes alike
                    y = F.max_pool2d(y, k, s, pad // 2, ceil_mode=bool(pad % 2))
                elif cls == "Add":
                    y = ins[0] + ins[1]
                elif cls == "GlobalAveragePooling2D":
                    y = y.mean((2, 3))
                else:
                    raise SystemExit(f"keras layer {cls} not ported")
                vals[lname] = y
            return vals[layers[-1]["name"]]

    return Net().eval()


def export_keras(member: str, channels: int) -> Callable[[str, Path, bool], None]:
    def export(name: str, out: Path, check: bool) -> None:
        import torch  # noqa: PLC0415

        raw = git_file(FACECLS, member)
        digest = _check(name, raw, check)
        net = keras_to_torch(raw)
        torch.onnx.export(net, (torch.zeros(1, channels, 64, 64),), str(out / f"{name}.onnx"),
                          input_names=["face"], output_names=["probs"], opset_version=17, dynamo=False,
                          dynamic_axes={"face": {0: "batch"}, "probs": {0: "batch"}})  # fmt: skip
        (out / f"{name}.source_sha256").write_text(digest)

    return export


ULTRAFACE = ("cunjian/pytorch_face_landmark", "6f34bf9f034aa2f521952f825e6ccc567deb42d6")
FACEREC = ("ageitgey/face_recognition", "2e2dccea9dd0ce730c8d464d0f67c6eebb40c9d1")
PHOTOS = [(FACECLS, p) for p in ("images/12_angry_men.jpg", "images/solvay_conference.jpg",
                                 "images/test_image.jpg", "images/emotion_classification.jpg")] + [
    (FACEREC, f"examples/{p}") for p in ("biden.jpg", "obama.jpg", "obama2.jpg", "two_people.jpg",
                                         "alex-lacamoire.png", "lin-manuel-miranda.png",
                                         "knn_examples/test/obama_and_biden.jpg",
                                         "knn_examples/test/kit_with_rose.jpg",
                                         "knn_examples/test/johnsnow_test1.jpg",
                                         "knn_examples/train/rose_leslie/img1.jpg",
                                         "knn_examples/train/rose_leslie/img2.jpg",
                                         "knn_examples/train/kit_harington/john1.jpeg",
                                         "knn_examples/train/kit_harington/john2.jpeg")] + [
    (ULTRAFACE, f"samples/12--Group/12_Group_Group_12_Group_Group_12_{k}.jpg")
    for k in (24, 459, 51)]  # fmt: skip


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / max((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter, 1e-9)


def face_boxes() -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB photo, [x1, y1, x2, y2] pixel box) of every face the Ultra-Light RFB-320 detector
    (pytorch_face_landmark's ONNX file; probability > 0.7, NMS 0.3) finds in the whole photo and in
    its 2 x 2 and 3 x 3 overlapping tiles (small faces of group photos), boxes of one face merged;
    faces under 40 px dropped"""
    import onnxruntime as ort  # noqa: PLC0415
    from bench_real_models import _nms  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    o = ort.SessionOptions()
    o.log_severity_level = 3
    sess = ort.InferenceSession(git_file(ULTRAFACE, "models/onnx/version-RFB-320.onnx"), o,
                                providers=["CPUExecutionProvider"])  # fmt: skip
    found = []
    for repo, path in PHOTOS:
        img = np.asarray(Image.open(io.BytesIO(git_file(repo, path))).convert("RGB"))
        H, W = img.shape[:2]
        boxes, scores = [], []
        for t in (1, 2, 3):
            tw, th = W / t * (1.5 if t > 1 else 1), H / t * (1.5 if t > 1 else 1)
            for i in range(t):
                for j in range(t):
                    x0 = 0 if t == 1 else int(i * (W - tw) / (t - 1))
                    y0 = 0 if t == 1 else int(j * (H - th) / (t - 1))
                    tile = Image.fromarray(img[y0 : y0 + int(th), x0 : x0 + int(tw)])
                    x = ((np.asarray(tile.resize((320, 240), Image.Resampling.BILINEAR), np.float32)
                          - 127) / 128).transpose(2, 0, 1)[None]  # fmt: skip
                    sc, bx = sess.run(None, {"input": x})
                    keep = sc[0][:, 1] > 0.7
                    for p, b in zip(sc[0][keep, 1], bx[0][keep], strict=True):
                        boxes.append(b * np.array([tile.width, tile.height] * 2) + np.array([x0, y0] * 2))
                        scores.append(float(p))
        if not boxes:
            continue
        b, p = np.array(boxes, np.float64), np.array(scores)
        for i in _nms(b, p, 0.3):
            if min(b[i][2] - b[i][0], b[i][3] - b[i][1]) >= 40 and all(
                    _iou(b[i], f[1]) < 0.3 for f in found if f[0] is img):  # fmt: skip
                found.append((img, b[i]))
    return found


def _crop(img: np.ndarray, box: np.ndarray, off: int, jitter: np.ndarray) -> np.ndarray:
    """the demo's crop: the box grown by ``off`` px (``apply_offsets``), clipped to the photo"""
    H, W = img.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box + jitter)
    x1, y1, x2, y2 = max(0, x1 - off), max(0, y1 - off), min(W, x2 + off), min(H, y2 + off)
    return img[y1:y2, x1:x2]


def _face_input(name: str, face: np.ndarray) -> np.ndarray:
    """grey 64 x 64, (x / 255 - 0.5) * 2 (``preprocess_input(v2=True)``, as both files were trained:
    the gender file is a grey mini-Xception, not the demo's RGB simple_CNN); NCHW"""
    from PIL import Image  # noqa: PLC0415

    pil = Image.fromarray(np.ascontiguousarray(face))
    g = np.asarray(pil.convert("L").resize((64, 64), Image.Resampling.BILINEAR), np.float32)
    return ((g / 255 - 0.5) * 2)[None, None]


def d_faces(name: str) -> Maker:
    def make(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
        """faces found by the Ultra-Light RFB-320 detector in 20 real photos (the repository's
        own: 12 Angry Men, the Solvay conference, its test images; face_recognition's portraits
        and group shots; three WIDER "Group" photos), cropped as ``image_emotion_gender_demo.py``
        (emotion: the box; gender: the box + 10 px), grey 64 x 64; calibration and eval
        faces random, box jittered by up to 6 % of its size, mirrored half the time;
        ``NAME_eval_large.npz``: every face once, unjittered, and mirrored"""
        faces = face_boxes()
        off = 0 if name == "emotion_xception" else 10
        xs = []
        for _ in range(n):
            img, box = faces[int(r.integers(len(faces)))]
            s = box[2] - box[0]
            f = _crop(img, box, off, r.uniform(-0.06, 0.06, 4) * s)
            xs.append(_face_input(name, f[:, ::-1] if r.random() < 0.5 else f))
        if n > 1:
            large = [_face_input(name, m(_crop(img, box, off, np.zeros(4))))
                     for img, box in faces for m in (lambda a: a, lambda a: a[:, ::-1])]  # fmt: skip
            _savez(out / f"{name}_eval_large.npz", {"face": np.stack(large)})
            print(name, len(faces), "faces", len(large), "large-eval samples")
        return {"face": np.stack(xs)}

    return make


def _cls_metric(ref: list, got: list) -> dict[str, Any]:
    a = np.array([np.asarray(x[0]).ravel() for x in ref])
    b = np.array([np.asarray(x[0]).ravel() for x in got])
    return {"top1_as_fp32": float(np.mean(a.argmax(1) == b.argmax(1))),
            "prob_max_change": float(np.abs(a - b).max()),
            "fp32_class_counts": np.bincount(a.argmax(1), minlength=a.shape[1]).tolist(),
            "n": len(ref)}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# SAC HalfCheetah policy

RLZOO = ("DLR-RM/rl-trained-agents", "cd35bde610f4045bf2e0731c8f4c88d22df8fc85")
SAC_MEMBER = "sac/HalfCheetah-v3_1/HalfCheetah-v3.zip"


def export_sac(name: str, out: Path, check: bool) -> None:
    """the actor of the zip's ``policy.pth`` (SB3 SAC MlpPolicy: latent_pi 17 -> 256 -> 256 ReLU,
    mu 256 -> 6) with the deterministic action tanh(mu); torch 2.13 TorchScript exporter"""
    import torch  # noqa: PLC0415

    raw = git_file(RLZOO, SAC_MEMBER)
    digest = _check(name, raw, check)
    sd = torch.load(io.BytesIO(zipfile.ZipFile(io.BytesIO(raw)).read("policy.pth")), map_location="cpu")
    net = torch.nn.Sequential(torch.nn.Linear(17, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                              torch.nn.ReLU(), torch.nn.Linear(256, 6), torch.nn.Tanh())  # fmt: skip
    net.load_state_dict({"0.weight": sd["actor.latent_pi.0.weight"], "0.bias": sd["actor.latent_pi.0.bias"],
                         "2.weight": sd["actor.latent_pi.2.weight"], "2.bias": sd["actor.latent_pi.2.bias"],
                         "4.weight": sd["actor.mu.weight"], "4.bias": sd["actor.mu.bias"]})  # fmt: skip
    torch.onnx.export(net.eval(), (torch.zeros(1, 17),), str(out / f"{name}.onnx"), input_names=["obs"],
                      output_names=["action"], opset_version=17, dynamo=False,
                      dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}})  # fmt: skip
    (out / f"{name}.source_sha256").write_text(digest)


def rollout(model: Path, seed: int, steps: int = 1000, record: bool = False) -> tuple[float, np.ndarray]:
    """one HalfCheetah-v5 episode (gymnasium + mujoco) driven by ``model``: its return, and the
    observations it saw"""
    import gymnasium as gym  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), o, providers=["CPUExecutionProvider"])
    env = gym.make("HalfCheetah-v5")
    obs, _ = env.reset(seed=seed)
    total, seen = 0.0, []
    for _ in range(steps):
        seen.append(obs.astype(np.float32))
        act = sess.run(None, {"obs": obs.astype(np.float32)[None]})[0][0]
        obs, rew, term, trunc, _ = env.step(act)
        total += float(rew)
        if term or trunc:
            break
    return total, np.array(seen)


def d_sac(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """HalfCheetah-v5 observations [1, 17] the fp32 policy meets in its own 1000-step episodes
    (seeds 0-3; the first 50 steps of the start-up included): calibration samples random steps of
    seeds 0-1, eval samples random steps of seeds 2-3; ``sac_halfcheetah_eval_large.npz``: every
    10th step of seeds 2-3 (200)"""
    eps = [rollout(out / "sac_halfcheetah.onnx", s)[1] for s in range(4)]
    xs = []
    for k in range(n):
        e = eps[int(r.integers(2)) + (2 if k >= N_CALIB else 0)]
        xs.append(e[int(r.integers(len(e)))][None])
    if n > 1:
        large = np.concatenate([eps[2][::10], eps[3][::10]])[:, None]
        _savez(out / "sac_halfcheetah_eval_large.npz", {"obs": large})
    return {"obs": np.stack(xs)}


def _action_metric(ref: list, got: list) -> dict[str, Any]:
    a = np.array([np.asarray(x[0]).ravel() for x in ref], np.float64)
    b = np.array([np.asarray(x[0]).ravel() for x in got], np.float64)
    return {"action_mean_abs_diff": float(np.abs(a - b).mean()),
            "action_max_abs_diff": float(np.abs(a - b).max()),
            "action_sign_agreement": float(np.mean(np.sign(a) == np.sign(b))), "n": len(ref)}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# LSTM autoencoder for ECG anomaly detection

ECGAE = ("msarathrahul/anomaly_detection_ECG", "9b2e1d8cfe2f183fbd2a780779559b31a9c7b204")
ECGAE_MEMBER = "_models/model_1.pkl"
ECG_THRESHOLD = 0.26  # the notebook's: mean |reconstruction - beat| over it is an anomaly


def _ecg_classes() -> dict[str, Any]:
    """the notebook's RecurrentAutoencoder (its forward code; the attributes come from the pickle):
    encoder LSTM 1 -> 256 -> 128 (last hidden state), decoder repeats it 140 times, LSTM 128 -> 128
    -> 256, Linear 256 -> 1"""
    import torch  # noqa: PLC0415

    class Encoder(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            x = x.reshape((1, self.seq_len, self.n_features))
            x, _ = self.rnn1(x)
            x, (hidden_n, _) = self.rnn2(x)
            return hidden_n.reshape((self.n_features, self.embedding_dim))

    class Decoder(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            x = x.repeat(self.seq_len, self.n_features)
            x = x.reshape((self.n_features, self.seq_len, self.input_dim))
            x, _ = self.rnn1(x)
            x, _ = self.rnn2(x)
            return self.output_layer(x.reshape((self.seq_len, self.hidden_dim)))

    class RecurrentAutoencoder(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return self.decoder(self.encoder(x))

    return {"Encoder": Encoder, "Decoder": Decoder, "RecurrentAutoencoder": RecurrentAutoencoder}


def export_ecg(name: str, out: Path, check: bool) -> None:
    """the committed pickle (``pickle.dump(model)`` of the notebook's module) read by an unpickler
    that admits only torch / collections classes and the notebook's three module classes; exported
    with torch 2.13's TorchScript exporter: [140, 1] beat -> [140, 1] reconstruction"""
    import pickle  # noqa: PLC0415

    import torch  # noqa: PLC0415

    raw = git_file(ECGAE, ECGAE_MEMBER)
    digest = _check(name, raw, check)
    classes = _ecg_classes()

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, cls: str) -> Any:
            if module == "__main__" and cls in classes:
                return classes[cls]
            if module.split(".")[0] in ("torch", "collections"):
                return super().find_class(module, cls)
            raise pickle.UnpicklingError(f"{module}.{cls} is not admitted")

    net = Restricted(io.BytesIO(raw)).load().eval()
    torch.onnx.export(net, (torch.zeros(140, 1),), str(out / f"{name}.onnx"), input_names=["beat"],
                      output_names=["reconstruction"], opset_version=17, dynamo=False)  # fmt: skip
    (out / f"{name}.source_sha256").write_text(digest)


def _ecg_beats() -> tuple[np.ndarray, np.ndarray]:
    """ECG5000's training file as the repository commits it (500 beats of 140 samples, already
    z-normalised per beat; class 1 normal, 2-5 abnormal): (labels, beats)"""
    d = np.loadtxt(io.BytesIO(git_file(ECGAE, "_data_setup/ECG5000_TRAIN.txt")))
    return d[:, 0].astype(int), d[:, 1:].astype(np.float32)


def d_ecg(r: np.random.Generator, n: int, out: Path) -> dict[str, np.ndarray]:
    """heartbeats of ECG5000 (the repository's ``ECG5000_TRAIN.txt``: 500 beats, 292 normal, 208
    abnormal of four kinds), [140, 1] as the notebook feeds them; calibration and eval samples
    random beats of any class (what a monitor sees); ``ecg_lstm_ae_eval_large.npz``: all 500 beats
    (labels in ``ecg_lstm_ae_labels.npy``)"""
    labels, beats = _ecg_beats()
    xs = [beats[int(r.integers(len(beats)))][:, None] for _ in range(n)]
    if n > 1:
        _savez(out / "ecg_lstm_ae_eval_large.npz", {"beat": beats[:, :, None]})
        np.save(out / "ecg_lstm_ae_labels.npy", labels)
    return {"beat": np.stack(xs)}


def _auroc(anomalous: np.ndarray, score: np.ndarray) -> float:
    ranks = np.argsort(np.argsort(score)) + 1.0
    p = int(anomalous.sum())
    return float((ranks[anomalous].sum() - p * (p + 1) / 2) / (p * (len(score) - p)))


def _ecg_metric(feeds: list, ref: list, got: list, labels: np.ndarray | None = None) -> dict[str, Any]:
    """anomaly scores (mean |reconstruction - beat|, the notebook's L1 loss) against fp32's: the
    decision at the notebook's 0.26 as fp32's, Spearman rank correlation, largest score change;
    with the labels, the AUROC of normal against abnormal beats, fp32's and this file's"""
    x = [np.asarray(f["beat"], np.float64) for f in feeds]
    a = np.array([np.abs(np.asarray(o[0]) - b).mean() for o, b in zip(ref, x, strict=True)])
    b = np.array([np.abs(np.asarray(o[0]) - c).mean() for o, c in zip(got, x, strict=True)])
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    res = {"decisions_as_fp32": float(np.mean((a > ECG_THRESHOLD) == (b > ECG_THRESHOLD))),
           "score_spearman": float(np.corrcoef(ra, rb)[0, 1]), "score_max_change": float(np.abs(a - b).max()),
           "fp32_anomaly_share": float(np.mean(a > ECG_THRESHOLD)), "n": len(ref)}  # fmt: skip
    if labels is not None:
        res["auroc_fp32"], res["auroc"] = _auroc(labels != 1, a), _auroc(labels != 1, b)
    return res


# ---------------------------------------------------------------------------------------------


def evaluate30(out: Path, name: str, model: Path, seconds: float) -> dict[str, Any]:
    """``evaluate`` (the bench's metric, size, latency) plus the task metric on the eval set and on
    ``NAME_eval_large.npz``; for the policy also closed-loop returns where gymnasium is installed"""
    from bench_real_models import load_feeds, run_all  # noqa: PLC0415
    from unseen_models4 import read_manifest  # noqa: PLC0415

    res = evaluate(out, name, model, seconds)
    entry = read_manifest(out)[name]
    ref_path = out / entry["file"]
    inputs = list(entry["io"]["inputs"])
    feeds = load_feeds(out / entry["evaluation"], inputs, None)
    large = load_feeds(out / f"{name}_eval_large.npz", inputs, None)
    if name == "ecg_lstm_ae":
        labels = np.load(out / "ecg_lstm_ae_labels.npy")
        res["eval32"] = _ecg_metric(feeds, run_all(ref_path, feeds), run_all(model, feeds))
        res["large"] = _ecg_metric(large, run_all(ref_path, large), run_all(model, large), labels)
        return res
    metric = _action_metric if name == "sac_halfcheetah" else _cls_metric
    res["eval32"] = metric(run_all(ref_path, feeds), run_all(model, feeds))
    res["large"] = metric(run_all(ref_path, large), run_all(model, large))
    if name == "sac_halfcheetah":
        try:
            import gymnasium  # noqa: F401, PLC0415
        except ImportError:
            return res
        ref_ret = [rollout(ref_path, s)[0] for s in (10, 11, 12)]
        got_ret = [rollout(model, s)[0] for s in (10, 11, 12)]
        res["return_fp32"], res["return"] = ref_ret, got_ret
        res["return_change_pct"] = float(100 * (np.mean(got_ret) / np.mean(ref_ret) - 1))
    return res


MODELS: dict[str, tuple[str, str, str, Maker, dict[str, Any], Callable[[str, Path, bool], None]]] = {
    # the emotion as fp32's (`--evaluate`: over every face, mirrored too)
    "emotion_xception": (f"{FACECLS[0]}@{FACECLS[1][:7]}", EMOTION_MEMBER,
                         "mini-Xception facial-expression classifier (FER-2013, 7 emotions; 58 k "
                         "parameters), Keras 2.0.5 HDF5 ported to torch and exported with torch 2.13 "
                         "(opset 17): [1, 1, 64, 64] grey face in [-1, 1] -> [1, 7] probabilities",
                         d_faces("emotion_xception"), {"kind": "top1", "output": 0},
                         export_keras(EMOTION_MEMBER, 1)),  # fmt: skip
    # the gender as fp32's
    "gender_xception": (f"{FACECLS[0]}@{FACECLS[1][:7]}", GENDER_MEMBER,
                        "mini-Xception gender classifier (IMDB faces, woman / man), Keras 2.0.5 HDF5 "
                        "ported to torch and exported with torch 2.13 (opset 17): [1, 1, 64, 64] grey "
                        "face in [-1, 1] -> [1, 2] probabilities",
                        d_faces("gender_xception"), {"kind": "top1", "output": 0},
                        export_keras(GENDER_MEMBER, 1)),  # fmt: skip
    # the action's cosine to fp32's (`--evaluate`: action differences, closed-loop return)
    "sac_halfcheetah": (f"{RLZOO[0]}@{RLZOO[1][:7]}", SAC_MEMBER,
                        "SAC actor for MuJoCo HalfCheetah (Stable-Baselines3 MlpPolicy 17 -> 256 -> 256 "
                        "-> 6, tanh; 73 k parameters), exported with torch 2.13 (opset 17): [1, 17] "
                        "observation -> [1, 6] action",
                        d_sac, {"kind": "cosine", "output": 0}, export_sac),  # fmt: skip
    # the reconstruction's cosine to fp32's (`--evaluate`: anomaly decisions, score ranks, AUROC)
    "ecg_lstm_ae": (f"{ECGAE[0]}@{ECGAE[1][:7]}", ECGAE_MEMBER,
                    "LSTM autoencoder for ECG anomaly detection (encoder LSTM 1 -> 256 -> 128, decoder "
                    "LSTM 128 -> 128 -> 256, Linear 256 -> 1; 0.99 M parameters), pickled torch module "
                    "exported with torch 2.13 (opset 17): [140, 1] beat -> [140, 1] reconstruction",
                    d_ecg, {"kind": "cosine", "output": 0}, export_ecg),  # fmt: skip
}
# the fetched file: the Keras HDF5 files, the SB3 zip, the pickle
SOURCE_SHA256: dict[str, str] = {
    "emotion_xception": "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
    "gender_xception": "7affc7bd520c48ca908eada26988d0e17fdfa1d447d8ae5675395f05ca6f943b",
    "sac_halfcheetah": "63ac27ae0c2ffe0428ded7bf93c6981c2f638352ae9d2770afc55c9ce2fdfba8",
    "ecg_lstm_ae": "8eb0c3d7c64d27bee11cc89f1f103e1e7416bae98c647d611afbf4c6b3cf5bc1",
}


def make(name: str, out: Path, check: bool = True) -> dict[str, Any]:
    spec, member, what, maker, metric, export = MODELS[name]
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.onnx"
    if not dest.exists():
        export(name, out, check)
    digest = (out / f"{name}.source_sha256").read_text()
    print(name, "source sha256", digest, "file sha256", hashlib.sha256(dest.read_bytes()).hexdigest())
    entry = manifest_entry(out, name, dest.name, spec, member, None, what,
                           lambda r, n: maker(r, n, out), maker.__doc__, metric,
                           Path(__file__).name)  # fmt: skip
    entry["source"] = f"GitHub `{spec}`, `{member}`, exported with torch 2.13"
    entry["source_sha256"] = digest
    entry["io"]["bytes_with_data"] = dest.stat().st_size
    entry["evaluation_large"] = f"{name}_eval_large.npz"
    return entry


def _evaluate_option(ap: Any) -> Callable[[Any], bool]:
    def handle(args: Any) -> bool:
        if args.evaluate:
            name, model = args.evaluate
            print(json.dumps(evaluate30(args.out, name, Path(model), args.latency_seconds)))
            return True
        return False

    return handle


def main() -> None:
    batch_cli(__doc__, DEFAULT_OUT, list(MODELS), make, _evaluate_option)


if __name__ == "__main__":
    main()
