"""Child-process entry point for the simplify pass: ``python -m ... IN OUT FUSE_BN``."""

from __future__ import annotations

import sys

import onnx
import onnxsim


def main() -> int:
    src, dst, fuse_bn = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    model = onnx.load(src)
    simplified, ok = onnxsim.simplify(model, skip_fuse_bn=not fuse_bn)
    if not ok:
        sys.stderr.write("onnxsim's own check of the simplified model failed\n")
        return 1
    onnx.checker.check_model(simplified)
    onnx.save(simplified, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
