"""fp16 fidelity on the example, test-asset and exported models (issue #14's fp16 targets).

    nice python benchmarks/bench_float16.py [--models a,b] [--out PATH]

For each model: file ratio, worst output cosine against fp32 over the eval samples (the model's
``*_eval.npz``, else 4 synthetic samples), NaN/Inf, whether input/output types are unchanged, and
the ceiling of any float16 conversion: the same model with only its weights rounded to float16
(compute in float32). The file's bytes are broken down (float tensors, other tensors, graph
structure) so the ratio can be read against its floor: the file with every float tensor exactly
halved and the graph unchanged. bf16 (``BFloat16``: weights stored bfloat16, a Cast to float32
before use) is measured beside it: file ratio and worst cosine.
Writes benchmarks/results/float16.md (or --out).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import REAL_MODELS  # noqa: E402

from onnxcompress.data import feed_source  # noqa: E402

from onnxcompress.synthetic import synthetic_feeds  # noqa: E402
from onnxcompress.model import load_model, to_proto  # noqa: E402
from onnxcompress.passes import BFloat16, Float16, PassContext  # noqa: E402
from onnxcompress.runtime import create_session  # noqa: E402
from onnxcompress.weights import WeightIndex  # noqa: E402

REAL = REAL_MODELS
# The exported models (random weights), then third-party ones the fp16 tests also cover.
EXPORTED = ("mobilenet_v2", "crnn_lstm", "audio_kws", "ssd_detector", "bert_tiny", "ppocr_det",
            "ppocr_rec", "silero_vad")


def _models(names: set[str] | None) -> list[tuple[str, Path]]:
    paths = sorted([*REPO.glob("models/*.onnx"), *REPO.glob("tests/assets/*.onnx")])
    paths += [REAL / f"{n}.onnx" for n in EXPORTED if (REAL / f"{n}.onnx").exists()]
    return [(p.stem, p) for p in paths if names is None or p.stem in names]


def _feeds(model, path: Path, n: int) -> list[dict]:  # noqa: ANN001
    for stem in (path.stem, path.stem.split("_")[0]):
        data = path.with_name(f"{stem}_eval.npz")
        if data.exists():
            return list(feed_source(str(data), model).take(n))
    return list(synthetic_feeds(model, n, seed=0))


def _calib(path: Path) -> str | None:
    for stem in (path.stem, path.stem.split("_")[0]):
        data = path.with_name(f"{stem}_calib.npz")
        if data.exists():
            return str(data)
    return None


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 1.0 if na == nb == 0 else float(a @ b / (na * nb))


def _worst(ref, got, feeds) -> tuple[float, bool]:  # noqa: ANN001
    worst, finite = 1.0, True
    for feed in feeds:
        for want, have in zip(ref.run(None, feed), got.run(None, feed), strict=True):
            if np.issubdtype(want.dtype, np.floating):
                finite &= bool(np.isfinite(have).all())
                worst = min(worst, _cos(have, want))
    return worst, finite


def breakdown(proto: onnx.ModelProto) -> dict[str, int]:
    """Bytes of a serialized model: float32 and float16/bfloat16 tensors (initializers and
    Constant values, subgraphs included), other tensors (int64 shapes, indices), and the graph
    itself (nodes, names, value_info: everything that is not tensor data)."""
    out = {"float32": 0, "half": 0, "other": 0, "float32_tensors": 0}

    def walk(graph: onnx.GraphProto) -> None:
        tensors = list(graph.initializer)
        for node in graph.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    tensors.append(a.t)
                elif a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for g in a.graphs:
                    walk(g)
        for t in tensors:
            kind = ("float32" if t.data_type == onnx.TensorProto.FLOAT else "half"
                    if t.data_type in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16) else "other")
            out[kind] += t.ByteSize()
            out["float32_tensors"] += kind == "float32"

    walk(proto.graph)
    out["total"] = proto.ByteSize()
    out["graph"] = out["total"] - out["float32"] - out["half"] - out["other"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", help="comma-separated model names (default: all)")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "float16.md")
    args = ap.parse_args()
    names = set(args.models.split(",")) if args.models else None
    rows = []
    for name, path in _models(names):
        model = load_model(path)
        feeds = _feeds(model, path, args.samples)
        ref = create_session(path)
        calib = _calib(path)
        context = PassContext(calibration=feed_source(calib, model) if calib else None)
        t0 = time.perf_counter()
        result = Float16().run(load_model(path), context)
        seconds = time.perf_counter() - t0
        proto = to_proto(result.model)
        size = len(proto.SerializeToString())
        original = onnx.load(path, load_external_data=False)
        types_ok = ([i.type for i in proto.graph.input] == [i.type for i in original.graph.input]
                    and [o.type.tensor_type.elem_type for o in proto.graph.output]
                    == [o.type.tensor_type.elem_type for o in original.graph.output])
        cos, finite = _worst(ref, create_session(proto), feeds)
        ceiling = load_model(path)  # every weight rounded (Constant nodes too), stored float32
        for w in WeightIndex.build(ceiling):
            arr = w.numpy()
            # Beyond float16's range (a BatchNorm variance of 1e8) the pass keeps float32 too.
            if arr.dtype == np.float32 and (arr.size == 0 or np.abs(arr).max() <= 65504):
                w.set_numpy(np.clip(arr, -65504, 65504).astype(np.float16).astype(np.float32))
        cos_w, _ = _worst(ref, create_session(ceiling), feeds)
        kept = result.metrics.get("kept_float32_layers", [])
        bd0, bd1 = breakdown(original), breakdown(proto)
        floor = (bd0["graph"] + bd0["other"] + bd0["half"] + bd0["float32"] / 2) / bd0["total"]
        bf = to_proto(BFloat16().run(load_model(path), PassContext()).model)
        bf_cos, _ = _worst(ref, create_session(bf), feeds)
        rows.append((name, size / path.stat().st_size, cos, cos_w, finite, types_ok, kept, seconds,
                     "eval" if path.with_name(f"{path.stem}_eval.npz").exists() else "synthetic",
                     floor, bd0, bd1, bf.ByteSize() / bd0["total"], bf_cos))
        print(f"{name}: file {rows[-1][1]:.3f}x (floor {floor:.3f}x) cos {cos:.6f} weights-only "
              f"{cos_w:.6f} finite {finite} types {types_ok} kept {kept} bf16 {rows[-1][-2]:.3f}x "
              f"{bf_cos:.6f}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    lines = [
        "# fp16 fidelity", "",
        f"`benchmarks/bench_float16.py` at {commit}: worst output cosine against fp32 over "
        f"{args.samples} samples (eval data where the model has it, else synthetic), the same with "
        "only the weights rounded to float16 (compute float32: the ceiling), file ratio, NaN/Inf, "
        "I/O types, layers the fidelity check kept float32.", "",
        "| model | data | file | cosine (worst) | weights-only cosine | finite | I/O types | kept fp32 | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, ratio, cos, cos_w, finite, types_ok, kept, seconds, data, *_ in rows:
        lines.append(f"| {name} | {data} | {ratio:.3f}x | {cos:.6f} | {cos_w:.6f} | "
                     f"{'yes' if finite else 'NO'} | {'same' if types_ok else 'CHANGED'} | "
                     f"{', '.join(kept) or '-'} | {seconds:.1f} |")
    lines += [
        "", "Where the bytes are (KB, before -> after fp16): the floor is the file with every float "
        "tensor exactly halved and the graph unchanged; float32 left: tensors still float32 after "
        "the conversion (count); bf16: the `BFloat16` pass (weights stored bfloat16, a Cast to "
        "float32 before use), file and worst cosine on the same samples.", "",
        "| model | file | floor | float tensors | float32 left | other tensors | graph | bf16 file "
        "| bf16 cosine |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, ratio, *_, floor, b0, b1, bf_ratio, bf_cos in rows:
        lines.append(
            f"| {name} | {ratio:.3f}x | {floor:.3f}x | {b0['float32'] / 1e3:.1f} -> "
            f"{(b1['half'] + b1['float32']) / 1e3:.1f} | {b1['float32'] / 1e3:.1f} "
            f"({b1['float32_tensors']}) | {b0['other'] / 1e3:.1f} | {b0['graph'] / 1e3:.1f} -> "
            f"{b1['graph'] / 1e3:.1f} | {bf_ratio:.3f}x | {bf_cos:.6f} |")
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
