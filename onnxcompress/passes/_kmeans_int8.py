"""The k-means pass's int8-exact form for 8-bit weights: session memory no larger than fp32's.

A codebook decode (``indices -> Cast(int32) -> Gather``) is folded by onnxruntime at load, and
the fold holds every weight's int32 indices (4 bytes a value) next to its float result until the
folding pass ends; glibc then keeps much of it. Measured (ddddocr_det, 77 Conv weights, 20 MB,
``onnxcompress.memory.session_memory`` after creation + one run, fp32 66.7-71.9 MB):

=========================================================  ============  =================
decode of every Conv weight                                resident MB   latency vs fp32
=========================================================  ============  =================
uint8 -> Cast(int32) -> Gather (+ Mul where channel-scaled)  86-88        1.0
uint8 -> Cast(int32) -> Gather, no Mul                       78           1.0
int8 -> DequantizeLinear (not folded: runs every call)       34           1.3
int8 -> Cast(float), no scale (one folded node)              67-70        1.0
int8 -> Cast(float) -> Conv -> Mul(channel scale)            75           1.0 (Mul fused)
=========================================================  ============  =================

Only a one-node fold from the stored bytes stays at fp32's memory, and only ``Cast`` is both
one node and folded: so the weight is stored as symmetric int8 per output channel, decoded by
``Cast``, and its channel scales are applied to the consumer's output (``Mul`` after the Conv,
MatMul or Gemm, which onnxruntime fuses into a Conv; the bias is divided by the scales). Each
channel's scale is the best of a few clipping ratios of its largest magnitude (ratio 1 is int8
per-channel's own grid), so the form is never less faithful than int8 per-channel weights.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress._parallel import ordered_map
from onnxcompress.passes._folding import const_array
from onnxcompress.weights import Weight

# Clipping ratios tried per channel (1.0 first: int8 per-channel's grid).
CLIP_RATIOS = (1.0, 0.97, 0.94, 0.91, 0.88, 0.85, 0.82, 0.79)
_CHUNK = 1 << 20


def output_scale_slot(w: Weight) -> tuple[ir.Node, tuple[int, ...]] | None:
    """The consumer whose output can take ``w``'s per-output-channel scales, and the shape the
    scales broadcast in over that output; None when the form does not apply (shared or
    transposed weights, other ops, a subgraph consumer, a bias that is not a constant)."""
    if w.via or len(w.uses) != 1 or w.out_axis is None or not w.shape:
        return None
    use = w.uses[0]
    node = use.node
    if node.domain not in ("", "ai.onnx") or use.index != 1 or node.graph is not w.graph:
        return None
    if len(node.outputs) != 1:
        return None
    rank = len(w.shape)
    axis = w.out_axis % rank
    channels = w.shape[axis]
    if node.op_type == "Conv" and rank >= 3 and axis == 0:
        shape = (1, channels) + (1,) * (rank - 2)
    elif node.op_type in ("MatMul", "Gemm") and rank == 2:
        shape = (channels,)
    else:
        return None
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is not None and (node.op_type == "MatMul" or const_array(bias) is None):
        return None
    return node, shape


def fit(array: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric int8 per channel along ``axis``: (int8 values, scales [channels], decoded
    weight q * scale in the weight's dtype). Per channel the clipping ratio with the least
    squared error wins."""
    return apply(array, axis, choose(array, axis)[0])


def choose(array: np.ndarray, axis: int, sample: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Per channel along ``axis``, the scale (float64) of the clipping ratio with the least
    squared error, and the relative error of those scales over the values they were chosen on.
    ``sample`` ([channels, m], e.g. ``_kmeans_fit._subsample``): choose on it instead of every
    value (a large weight: 8 ratios are 8 passes over it), then quantise with ``apply_checked``;
    the largest magnitudes are always the whole channel's."""
    if sample is None:
        moved = np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)
        amax = np.abs(moved).max(axis=1).astype(np.float64)
    else:
        amax = channel_absmax(array, axis)
    rows = moved if sample is None else sample
    best_err = np.full(amax.shape, np.inf)
    best_scale = np.ones_like(amax)
    step = max(1, _CHUNK // max(rows.shape[0], 1))
    for ratio in CLIP_RATIOS:
        scale = np.where(amax > 0, amax * ratio / 127.0, 1.0)
        err = np.zeros_like(amax)
        for start in range(0, rows.shape[1], step):
            block = rows[:, start:start + step].astype(np.float64)
            q = np.clip(np.round(block / scale[:, None]), -127, 127)
            err += np.square(q * scale[:, None] - block).sum(axis=1)
        better = err < best_err
        best_err[better], best_scale[better] = err[better], scale[better]
    ref = float(sum(float(np.square(rows[:, a:a + step], dtype=np.float64).sum())
                    for a in range(0, rows.shape[1], step)))
    error = float(np.sqrt(best_err.sum() / ref)) if ref > 0 else 0.0
    return best_scale, error


def apply(array: np.ndarray, axis: int, best_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``array`` quantised with the per-channel scales ``best_scale`` (from ``choose``), as ``fit``."""
    moved = np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)
    scales = best_scale.astype(array.dtype)
    scales[~np.isfinite(scales) | (scales == 0)] = 1
    s = scales.astype(np.float64)[:, None]
    q = np.clip(np.round(moved / s), -127, 127).astype(np.int8)
    decoded = (q.astype(array.dtype) * scales[:, None]).astype(array.dtype)
    restore = (array.shape[axis], *[d for i, d in enumerate(array.shape) if i != axis])
    q_full = np.moveaxis(q.reshape(restore), 0, axis)
    decoded_full = np.moveaxis(decoded.reshape(restore), 0, axis)
    return np.ascontiguousarray(q_full), scales, np.ascontiguousarray(decoded_full)


def channel_absmax(array: np.ndarray, axis: int) -> np.ndarray:
    """The largest magnitude per channel along ``axis`` (float64), blocks of leading-axis
    slices on every core, in the weight's dtype (exact: no whole-weight temporary)."""
    out = np.zeros(array.shape[axis], dtype=np.float64)
    other = tuple(i for i in range(array.ndim) if i != axis)
    step = max(1, _CHUNK // max(array[0].size if array.ndim > 1 else 1, 1))
    starts = range(0, array.shape[0], step)
    parts = ordered_map(lambda a: np.abs(array[a:a + step]).max(axis=other).astype(np.float64), starts)
    for a, part in zip(starts, parts, strict=True):
        if axis == 0:
            out[a:a + step] = part
        else:
            np.maximum(out, part, out=out)
    return out


def apply_checked(array: np.ndarray, axis: int,
                  best_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``apply`` for scales chosen on a sample, in one pass of blocks on every core: a channel
    whose chosen ratio errs more on all its values than int8's own grid (ratio 1) takes the
    grid, so the form never falls below int8 per-channel weights. Also returns the relative
    error. Works in the weight's dtype (float32: half the bytes of float64, the large weights'
    passes are memory-bound); the errors are those of exactly what the decode computes."""
    dtype = array.dtype
    amax = channel_absmax(array, axis)
    grid = np.where(amax > 0, amax / 127.0, 1.0).astype(dtype)
    scales = best_scale.astype(dtype)
    for s in (scales, grid):
        s[~np.isfinite(s) | (s == 0)] = 1
    bshape = [1] * array.ndim
    bshape[axis] = -1
    s1, s2 = scales.reshape(bshape), grid.reshape(bshape)
    other = tuple(i for i in range(array.ndim) if i != axis)
    q = np.empty(array.shape, dtype=np.int8)
    step = max(1, _CHUNK // max(array[0].size if array.ndim > 1 else 1, 1))

    def block_errors(a: int) -> tuple[np.ndarray, np.ndarray, float]:
        block = array[a:a + step]
        sb1, sb2 = (s1[a:a + step], s2[a:a + step]) if axis == 0 else (s1, s2)
        errs = []
        for sb in (sb1, sb2):
            r = np.rint(block / sb)
            np.clip(r, -127, 127, out=r)
            if sb is sb1:
                q[a:a + step] = r
            r *= sb
            r -= block
            errs.append(np.square(r).sum(axis=other, dtype=np.float64))
        return errs[0], errs[1], float(np.square(block, dtype=np.float64).sum())

    err1, err2 = np.zeros(amax.shape), np.zeros(amax.shape)
    ref = 0.0
    starts = range(0, array.shape[0], step)
    for a, (e1, e2, r) in zip(starts, ordered_map(block_errors, starts), strict=True):
        ref += r
        if axis == 0:
            err1[a:a + step], err2[a:a + step] = e1, e2
        else:
            err1 += e1
            err2 += e2
    use_grid = err2 < err1
    if use_grid.any():
        idx = np.flatnonzero(use_grid)
        scales[idx] = grid[idx]
        s = scales[idx].reshape([-1 if i == axis else 1 for i in range(array.ndim)])
        rows = np.clip(np.rint(np.take(array, idx, axis=axis) / s), -127, 127)
        np.moveaxis(q, axis, 0)[idx] = np.moveaxis(rows, axis, 0)  # a view: writes land in q
    total = float(np.where(use_grid, err2, err1).sum())
    decoded = q.astype(dtype)
    decoded *= scales.reshape(bshape)
    error = float(np.sqrt(total / ref)) if ref > 0 else 0.0
    return q, scales, decoded, error


def rewrite(w: Weight, q: np.ndarray, scales: np.ndarray, node: ir.Node,
            shape: tuple[int, ...]) -> int:
    """Store ``w`` as ``q`` (int8), decoded by one Cast in front of ``node``, whose output is
    multiplied by ``scales`` (its bias divided by them first); the stored bytes."""
    dtype = ir.DataType.from_numpy(np.dtype(scales.dtype))
    base = w.name or "weight"
    stored = q.nbytes + scales.nbytes
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = const_array(node.inputs[2])
        assert bias is not None
        # Conv: one bias per output channel; Gemm: C broadcast over the output's last axis.
        wide = np.broadcast_to(bias, np.broadcast_shapes(bias.shape, (scales.size,)))
        new = (wide.astype(np.float64) / scales.astype(np.float64)).astype(bias.dtype)
        old = node.inputs[2]
        node.replace_input_with(2, w.add_constant(f"{base}.bias", np.ascontiguousarray(new)))
        if not old.uses() and not old.is_graph_output():
            producer = old.producer()
            if old.is_initializer():
                w.graph.initializers.pop(old.name, None)
            elif producer is not None and producer.op_type == "Constant":
                producer.graph.remove(producer, safe=True)
    stored_q = w.add_constant(f"{base}.q", q)
    decoded = ir.Value(name=w.fresh_name("k.w"))
    cast = ir.node("Cast", [stored_q], attributes={"to": dtype}, outputs=[decoded], name="")
    scale = w.add_constant(f"{base}.scale", scales.reshape(shape))
    out = node.outputs[0]
    scaled = ir.Value(name=w.fresh_name("k.scaled"))
    mul = ir.node("Mul", [out, scale], outputs=[scaled], name="")
    original_name = w.name
    w.insert_nodes([cast])
    w.replace_uses(decoded)
    if original_name and not w.value.uses() and not w.value.is_graph_output():
        decoded.name = original_name  # the decoded weight keeps its name, as the codebook form
    w.graph.insert_after(node, [mul])
    for user, index in list(out.uses()):
        if user is not mul:
            user.replace_input_with(index, scaled)
    # The consumer's output keeps its name (graph outputs, names other tools look up): the
    # raw product takes a fresh one.
    name = out.name
    out.name = w.fresh_name("k.raw")
    scaled.name = name
    scaled.type, scaled.shape = out.type, out.shape
    graph = w.graph
    for i, o in enumerate(graph.outputs):
        if o is out:
            graph.outputs[i] = scaled
    return stored
