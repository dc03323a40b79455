"""Batch 33 finding 1's check: fns_candy's ONNX-1.x experimental ops rewritten into standard ops.

``ImageScaler`` -> Mul(scale) + Add(bias per channel), ``Affine`` -> Mul(alpha) + Add(beta),
``Crop(border=[l, t, r, b])`` -> Slice on axes 2, 3 (opset 7 attributes); new constants are also
declared as graph inputs (the file is IR 3). Writes ``candy_std7.onnx`` (opset 7) and prints the
largest difference from the original's output, and whether ``onnx.version_converter`` now takes it
to opset 13.

    /work/venv/bin/python scripts/unseen_models33_rewrite.py [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter as vc
from onnx import helper, numpy_helper

CACHE = Path.home() / ".cache" / "onnxcompress-unseen33"
BIG = 2**31 - 1


def rewrite(m: onnx.ModelProto) -> onnx.ModelProto:
    g = m.graph
    nodes, added = [], []
    for k, n in enumerate(g.node):
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        if n.op_type in ("ImageScaler", "Affine"):
            scale = a.get("scale", 1.0) if n.op_type == "ImageScaler" else a.get("alpha", 1.0)
            bias = (np.array(a["bias"], np.float32).reshape(1, -1, 1, 1) if n.op_type == "ImageScaler"
                    else np.array(a.get("beta", 0.0), np.float32))  # fmt: skip
            s = numpy_helper.from_array(np.array(scale, np.float32), f"rw_s{k}")
            b = numpy_helper.from_array(bias, f"rw_b{k}")
            added += [s, b]
            nodes += [helper.make_node("Mul", [n.input[0], s.name], [f"rw_t{k}"]),
                      helper.make_node("Add", [f"rw_t{k}", b.name], list(n.output))]  # fmt: skip
        elif n.op_type == "Crop":
            left, top, right, bottom = a["border"]
            ends = [-bottom if bottom else BIG, -right if right else BIG]
            nodes.append(helper.make_node("Slice", [n.input[0]], list(n.output), axes=[2, 3],
                                          starts=[top, left], ends=ends))  # fmt: skip
        else:
            nodes.append(n)
    g.initializer.extend(added)
    g.input.extend(helper.make_tensor_value_info(t.name, onnx.TensorProto.FLOAT, list(t.dims)) for t in added)
    del g.node[:]
    g.node.extend(nodes)
    return m


def main() -> None:
    import onnxruntime as ort  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=CACHE)
    args = ap.parse_args()
    src = args.out / "fns_candy.onnx"
    m = rewrite(onnx.load(str(src)))
    dst = args.out / "candy_std7.onnx"
    onnx.save(m, str(dst))
    c = vc.convert_version(m, 13)
    # the converter keeps IR 3, whose checker wants a graph input for every initializer
    c.ir_version = max(c.ir_version, 7)
    onnx.checker.check_model(c)
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    x = np.load(args.out / "fns_candy_eval.npz")["inputImage"][0]
    y0 = ort.InferenceSession(str(src), o).run(None, {"inputImage": x})[0]
    y7 = ort.InferenceSession(str(dst), o).run(None, {"inputImage": x})[0]
    y13 = ort.InferenceSession(c.SerializeToString(), o).run(None, {"inputImage": x})[0]
    print(f"wrote {dst}; max |diff| opset 7 rewrite {np.abs(y7 - y0).max():.4g}, "
          f"converted to opset 13 {np.abs(y13 - y0).max():.4g}")  # fmt: skip


if __name__ == "__main__":
    main()
