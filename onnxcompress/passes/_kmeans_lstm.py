"""The k-means pass's 8-bit form for ONNX LSTM weights: onnxruntime's ``DynamicQuantizeLSTM``.

An LSTM's ``W``/``R`` have no place for channel scales after the consumer (the gates' nonlinearity
follows the product), so the int8-exact form of :mod:`._kmeans_int8` does not apply, and every
graph decode onnxruntime folds at load leaves the float weights plus the fold's intermediates
(a codebook's int32 copy) in the session. Measured (``onnxcompress.memory.session_memory``,
median of 3 fresh processes, resident MB after creation + one run; latency vs fp32, 1 thread):

==================================================  ====================  ==================
LSTM W/R decoded by                                 ddddocr_ocr (fp32 80)  crnn_lstm (fp32 37)
==================================================  ====================  ==================
uint8 -> Cast(int32) -> Gather [-> Mul(scales)]     94 (78-128), peak 135  40
int8 -> Cast -> Mul(row scales) (folded)            85-115, peak 122-148    41
int8 -> DequantizeLinear (runs every call)          87, latency 1.42x       36, latency 1.13x
float16 -> Cast (file 3.04x instead of 3.96x)       76                      38
``com.microsoft.DynamicQuantizeLSTM`` (int8 kept)   **66.5**, latency 0.61x  **32**
==================================================  ====================  ==================

``DynamicQuantizeLSTM`` keeps the int8 weights (per gate row scales) packed and quantizes its
activations per call, as onnxruntime's own ``quantize_dynamic`` writes an LSTM. Task metric
unchanged on both (frame agreement 0.9969 = the codebook's on ddddocr_ocr; 0.983 vs 0.981 on
crnn_lstm). The rows' scales are the best of ``_kmeans_int8.CLIP_RATIOS`` (never worse than
int8 per row). Weights whose values a codebook holds exactly (<= 256 distinct values) keep the
codebook; ``decode="codebook"`` keeps it for every LSTM, ``"int8"`` forces this form. With
``"auto"`` the form is measured first (``MAX_DEVIATION``): its int8 inputs can cost a model far
more than int8 weights do (a speaker encoder's embedding cosine 0.81).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcompress import kmeans
from onnxcompress.passes import _kmeans_int8
from onnxcompress.passes.base import LayerStat
from onnxcompress.weights import Weight

MS_DOMAIN = "com.microsoft"
#: The suffix ``rewrite`` gives a weight's stored int8 codes (``rewritten_weights`` reads it back).
CODES_SUFFIX = ".q"


#: The form quantizes the LSTMs' inputs each call; past this output deviation (the mean of
#: ||y - y0||^2 / ||y0||^2 on a few samples) they keep the codebook: a speaker encoder's three
#: LSTMs over 40 log-mels lost 19 points of embedding cosine (0.81) where int8 weights lose 0.1.
MAX_DEVIATION = 1e-3
CHECK_SAMPLES = 4


def share_lstms(model: ir.Model, todo: list[tuple[Weight, int]], decode: str,
                storage: str, context: Any = None) -> tuple[list[LayerStat], set[int], str | None]:
    """Every eligible LSTM of ``todo`` rewritten (``lstm_pairs``, ``rewrite``): the LayerStats,
    the ids of the weights done, and why none was (the form measured too far from float on
    ``context``'s calibration samples, else synthetic ones; None: not refused)."""
    pairs = lstm_pairs(todo, decode, storage)
    if pairs and decode != "int8":
        deviation = _deviation(model, {w.label for _, ww, rw in pairs for w in (ww, rw)}, context)
        if deviation is None:  # (pyannote's [B, C, T] input without data: a guessed shape)
            return [], set(), ("DynamicQuantizeLSTM's int8 form not measured (the model does not run on "
                               "its samples; --calibration gives it data): the LSTMs keep their codebooks")
        if deviation > MAX_DEVIATION:
            return [], set(), (f"DynamicQuantizeLSTM's int8 inputs moved the outputs {deviation:.2g} "
                               f"(over {MAX_DEVIATION:g}): the LSTMs keep their codebooks")
    stats: list[LayerStat] = []
    done: set[int] = set()
    for node, ww, rw in pairs:
        stats += rewrite(model, node, ww, rw, kmeans.MAX_BITS)
        done.update((id(ww), id(rw)))
    return stats, done, None


def _deviation(model: ir.Model, labels: set[str], context: Any) -> float | None:
    """The output deviation of ``model`` with the LSTMs of ``labels`` in the form, measured on a
    copy (None: it could not run)."""
    from onnxcompress import runtime
    from onnxcompress.activations import run
    from onnxcompress.errors import OnnxCompressError
    from onnxcompress.model import copy_model
    from onnxcompress.passes._bit_allocation import output_deviation
    from onnxcompress.synthetic import synthetic_feeds
    from onnxcompress.weights import WeightIndex

    trial = copy_model(model)
    chosen = [(w, kmeans.MAX_BITS) for w in WeightIndex.build(trial) if w.label in labels]
    for node, ww, rw in lstm_pairs(chosen, "int8", "auto"):
        rewrite(trial, node, ww, rw, kmeans.MAX_BITS)
    source = getattr(context, "calibration", None)
    feeds = list(source.take(CHECK_SAMPLES) if source is not None else synthetic_feeds(model, CHECK_SAMPLES))
    try:
        float_run, form_run = (runtime.create_session(m, label="the LSTM form's check", arena=False)
                               for m in (model, trial))
        names = {i.name for i in float_run.get_inputs()}
        deviations = []
        for f in feeds:
            feed = {k: v for k, v in f.items() if k in names}
            deviations.append(output_deviation(run(form_run, None, feed, what="the LSTM form's check"),
                                               run(float_run, None, feed, what="the LSTM form's check")))
    except (OnnxCompressError, RuntimeError, ValueError):  # (run: onnxruntime's own errors too)
        return None
    return float(np.mean(deviations)) if deviations else None


def lstm_pairs(todo: list[tuple[Weight, int]], decode: str,
               storage: str) -> list[tuple[ir.Node, Weight, Weight]]:
    """The ONNX LSTM nodes whose ``W`` and ``R`` are both in ``todo`` at 8 bits and can take
    the ``DynamicQuantizeLSTM`` form: float32 3-D constants that only this LSTM reads, layout 0,
    and (with ``decode="auto"``) more than 2^bits distinct values in one of them."""
    if decode in ("codebook", "runtime") or storage not in ("auto", "uint8"):
        return []
    by_value = {id(w.value): (w, bits) for w, bits in todo}
    pairs = []
    seen: set[int] = set()
    for w, bits in todo:
        if w.via or len(w.uses) != 1 or bits < kmeans.MAX_BITS:
            continue
        node = w.uses[0].node
        if (node.op_type != "LSTM" or node.domain not in ("", "ai.onnx") or id(node) in seen
                or node.graph is not w.graph or _int_attr(node, "layout", 0) != 0):
            continue
        inputs = list(node.inputs)
        if len(inputs) < 3 or inputs[1] is None or inputs[2] is None:
            continue
        found = [by_value.get(id(inputs[1])), by_value.get(id(inputs[2]))]
        if any(f is None or f[1] < kmeans.MAX_BITS for f in found):
            continue
        ww, rw = found[0][0], found[1][0]  # type: ignore[index]
        if not all(_eligible(x, node) for x in (ww, rw)):
            continue
        if decode == "auto" and all(_few_levels(x) for x in (ww, rw)):
            continue  # a codebook holds them exactly; int8 would not
        seen.add(id(node))
        pairs.append((node, ww, rw))
    return pairs


def _int_attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return int(attr.value) if attr is not None else default


def _eligible(w: Weight, node: ir.Node) -> bool:
    return (not w.via and len(w.uses) == 1 and w.uses[0].node is node
            and w.dtype == ir.DataType.FLOAT and len(w.shape) == 3)


def _few_levels(w: Weight) -> bool:
    return len(np.unique(w.numpy())) <= 1 << kmeans.MAX_BITS


def rewrite(model: ir.Model, node: ir.Node, ww: Weight, rw: Weight, bits: int) -> list[LayerStat]:
    """Replace ``node`` by ``DynamicQuantizeLSTM`` with ``W``/``R`` stored as int8 per gate row
    (transposed to [directions, input, 4*hidden] as the op reads them); their LayerStats."""
    from onnxcompress.passes._kmeans_int8_store import layer_stat

    stats = []
    extra_inputs: list[ir.Value] = []
    stored: list[ir.Value] = []
    zero: ir.Value | None = None  # W's and R's zero points are alike ([directions, 4*hidden]): one
    for w in (ww, rw):
        array = w.numpy()
        dirs, rows, cols = array.shape
        flat = array.reshape(dirs * rows, cols)
        q, scales, decoded = _kmeans_int8.fit(flat, 0)
        scales = scales.astype(np.float32)
        error = float(np.linalg.norm(decoded - flat) / max(np.linalg.norm(flat), 1e-30))
        base = w.name or "weight"
        qt = np.ascontiguousarray(q.reshape(dirs, rows, cols).transpose(0, 2, 1))
        stored.append(w.add_constant(f"{base}{CODES_SUFFIX}", qt))
        extra_inputs.append(w.add_constant(f"{base}.scale", scales.reshape(dirs, rows)))
        if zero is None:
            zero = w.add_constant(f"{base}.zero", np.zeros((dirs, rows), np.int8))
        extra_inputs.append(zero)
        extra: dict[str, Any] = {
            "requested_bits": bits,
            "storage": "int8",
            "stored_bits": 8,
            "decode": "DynamicQuantizeLSTM (onnxruntime: int8 weights kept, activations "
                      "quantized per call)",
            "codebooks": 0,
            "channel_scales": True,
        }
        after = qt.nbytes + scales.nbytes + scales.size // 2  # int8, float32 scales, shared zero points
        stats.append(layer_stat(w, array.shape, w.nbytes, after, float(np.mean(q == 0)), error, extra))
    inputs = list(node.inputs) + [None] * (8 - len(node.inputs))
    new_inputs = [inputs[0], stored[0], stored[1], *inputs[3:8], *extra_inputs]
    attributes = {k: a for k, a in node.attributes.items() if k != "layout"}
    outputs = list(node.outputs)
    replacement = ir.Node(MS_DOMAIN, "DynamicQuantizeLSTM", new_inputs, attributes.values(),
                          num_outputs=len(outputs), name=node.name or "")
    graph = node.graph
    assert graph is not None
    ir.convenience.replace_nodes_and_values(graph, node, [node], [replacement], outputs,
                                            list(replacement.outputs))
    for w in (ww, rw):
        w.remove_if_unused()
    model.opset_imports.setdefault(MS_DOMAIN, 1)
    return stats


def rewritten_weights(model: ir.Model) -> list[str]:
    """The W and R (by their names before ``rewrite``) of ``model``'s DynamicQuantizeLSTM nodes."""
    return [v.name.removesuffix(CODES_SUFFIX) for node in model.graph
            if node.op_type == "DynamicQuantizeLSTM" and node.domain == MS_DOMAIN
            for v in node.inputs[1:3] if v is not None and v.name]
