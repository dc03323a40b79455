"""The float16 pass's speed guard: fp16 compute is kept only where it is not slower than float32.

onnxruntime's CPU provider has float16 kernels for few ops; for the rest it inserts Casts that
run on every call, and the weights those ops read stay float16 in the session, cast each run.
Measured on nudenet's YOLOv8n (12 MB, 64 Conv): fp16 compute 19.6 ms against 18.5 ms float32
(1.06x, one thread) and 36.5 MB live session memory against 35.6; the same weights stored in
float16 with a Cast to float32 (folded at load) run in 18.3 ms with 33.7 MB. So with
``--float16-compute auto`` (the default) the fp16 model is timed against the float32 one on one
sample, as the quantize pass times int8 compute, and when it is slower the weights are stored in
float16 instead and computed in float32: the same file size, fp32's speed and memory, and less
rounding (activations stay float32). The decision is cached per machine and graph structure so
that reruns write the same file.
"""

from __future__ import annotations

import logging

import onnx_ir as ir
import onnxruntime as ort

from onnxcompress import __version__, cache, runtime
from onnxcompress.errors import OnnxCompressError
from onnxcompress.model import EXTERNAL_DATA_THRESHOLD, tensor_bytes
from onnxcompress.passes._speed import (
    GUARD_SECONDS,
    SPEED_TOLERANCE,
    alternate_latency,
    one_feed,
    structure_digest,
)
from onnxcompress.passes.base import PassContext

logger = logging.getLogger(__name__)

COMPUTE_CHOICES = ("auto", "always", "never")


#: Why a model is not timed for its size: its fp16 compute is kept (a fallback would hold the
#: float32 model beside the fp16 one, two copies of a model this large).
TOO_LARGE_TO_TIME = "the model is large (over 2 GB)"


def latency_ratio(original: ir.Model, converted: ir.Model, context: PassContext,
                  config: dict, kind: str = "float16") -> tuple[float | None, str]:
    """converted / original latency on one sample (the first calibration sample, else a
    synthetic one), or None with the reason it was not measured; cached per machine and graph
    structure. ``kind``: the pass asking (fp16 compute here, blockq's 4-bit blocks)."""
    if tensor_bytes(original) > EXTERNAL_DATA_THRESHOLD:  # external data alone: see _int8_guard.fits
        return None, TOO_LARGE_TO_TIME
    key = cache.decision_key(f"{kind}-speed-guard", "1 thread", __version__, ort.__version__,
                             cache.machine_id(), config, structure_digest(original),
                             structure_digest(converted))
    cached = cache.get_decision(key)
    if isinstance(cached, dict) and isinstance(cached.get("ratio"), (int, float)):
        return float(cached["ratio"]), "cached"
    feed, source = one_feed(original, context)
    if feed is None:
        return None, source
    context.report_progress(f"{kind}: speed check", 0, 1)
    try:
        # One thread: on a loaded 2-core machine, two-thread timings of nudenet moved 0.9-1.07x
        # between runs; single-thread ratios held (1.06-1.07x) and kernels rank alike.
        sessions = [runtime.create_session(m, threads=1) for m in (original, converted)]
        t_float, t_half = alternate_latency(sessions, feed, budget=GUARD_SECONDS)
    except OnnxCompressError as e:
        return None, str(e).split(" Hint:")[0]
    ratio = round(t_half / t_float, 3) if t_float > 0 else 1.0
    cache.put_decision(key, {"ratio": ratio})
    return ratio, source


def too_slow(ratio: float) -> bool:
    return ratio > 1 + SPEED_TOLERANCE
