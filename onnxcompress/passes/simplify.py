"""Graph simplification with onnxsim: constant folding, shape inference, redundant-op removal.

onnxsim is native code and can abort the process on unusual graphs, so it runs in a child
process; any failure (crash, error, timeout, a result that fails the checker) leaves the model
unchanged and is reported as a skip, never as an error.
"""

from __future__ import annotations

import collections
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxcompress.model import EXTERNAL_DATA_THRESHOLD, tensor_bytes, to_proto
from onnxcompress.passes.base import Pass, PassConfig, PassContext, PassResult, option

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimplifyConfig(PassConfig):
    enabled: bool = option(
        default=True, flag="--simplify", enables=True,
        help="simplify the graph with onnxsim first (constant folding, dead-code removal)",
    )
    timeout: float = option(default=600.0, help="seconds before onnxsim is given up on")
    fuse_bn: bool = option(
        default=True, help="let onnxsim fold BatchNormalization into the preceding Conv"
    )

    def __post_init__(self) -> None:
        self._require(self.timeout > 0, "timeout must be positive")


class Simplify(Pass):
    name = "simplify"
    config_class = SimplifyConfig
    summary = "onnxsim graph simplification"
    cli_order = 10

    def apply(self, model: ir.Model, context: PassContext, result: PassResult) -> ir.Model:
        cfg: SimplifyConfig = self.config  # type: ignore[assignment]
        if not cfg.enabled:
            return model
        if tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD:
            result.skip("model", "larger than 2 GB: onnxsim works on in-memory protobufs only")
            return model
        proto = to_proto(model)
        before = collections.Counter(n.op_type for n in proto.graph.node)
        with tempfile.TemporaryDirectory(prefix="onnxcompress-sim-") as tmp:
            src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
            src.write_bytes(proto.SerializeToString())
            cmd = [sys.executable, "-m", "onnxcompress.passes._onnxsim_worker", str(src),
                   str(dst), "1" if cfg.fuse_bn else "0"]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg.timeout)
            except subprocess.TimeoutExpired:
                result.skip("model", f"onnxsim took longer than {cfg.timeout:.0f} s")
                return model
            if proc.returncode != 0 or not dst.exists():
                why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
                result.skip("model", f"onnxsim failed: {why[:200]}")
                logger.warning("onnxsim failed on this model; continuing without it: %s", why)
                return model
            simplified = onnx.load(str(dst))
        after = collections.Counter(n.op_type for n in simplified.graph.node)
        new_model = ir.serde.deserialize_model(simplified)
        new_model.metadata_props.update(model.metadata_props)
        result.metrics["nodes_before"] = sum(before.values())
        result.metrics["nodes_after"] = sum(after.values())
        result.metrics["ops_removed"] = {
            op: before[op] - after.get(op, 0) for op in before if before[op] > after.get(op, 0)
        }
        result.modified = before != after or len(proto.graph.initializer) != len(
            simplified.graph.initializer
        )
        return new_model
