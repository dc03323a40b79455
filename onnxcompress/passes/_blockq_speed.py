"""blockq's speed note: onnxruntime's MatMulNBits computes from the packed 4-bit blocks, which on
small matrices runs slower than the float MatMul it replaces (a ViT of width 64: 1.10x its float
latency), and nothing said so. The written model is timed against the input as the float16 pass
times fp16 compute (one thread, alternated, cached per machine and graph) and a headline says when
it is slower; the blocks stay (the user asked for them: memory and size are what they buy).
"""

from __future__ import annotations

import onnx_ir as ir

from onnxcompress.model import tensor_bytes
from onnxcompress.passes._speed import latency_ratio, too_slow
from onnxcompress.passes.base import PassContext, PassResult

#: Models whose float weights exceed this are not timed (their copy would be held for it).
TIMED_BYTES = 256 << 20


def copy_to_time(model: ir.Model) -> ir.Model | None:
    """A copy of ``model`` to time the written model against (None: too large to hold twice)."""
    return model.clone() if tensor_bytes(model) <= TIMED_BYTES else None


def say_if_slower(original: ir.Model, written: ir.Model, context: PassContext, result: PassResult,
                  config: dict) -> None:
    """Time ``written`` against ``original``; a headline where it is slower."""
    ratio, _ = latency_ratio(original, written, context, config, kind="blockq")
    if ratio is None:
        return
    result.metrics["latency_ratio"] = ratio
    if too_slow(ratio):
        result.headline(f"4-bit blocks measured {ratio:.2f}x the float model's latency on this CPU "
                        "(MatMulNBits on small matrices); --quantize dynamic keeps float speed at 8 bits")
