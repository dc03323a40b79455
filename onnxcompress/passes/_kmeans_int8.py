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

The scales are chosen on the float16 grid (each ratio rounded; around ratio 1 the float16
values one ulp either side, which together err 0.3-6% less than int8's exact grid) and
stored in float16 behind a ``Cast`` that onnxruntime folds before it fuses the ``Mul`` into the
Conv: 2 bytes a channel saved.

On a small model the form is not used (``exact_form_pays``): its scale ``Mul`` after each op
is a per-call cost there, and the copies a fold keeps cost no memory the guards can see.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress._parallel import ordered_map
from onnxcompress.graph.constants import const_array
from onnxcompress.passes._half_store import HALF_TINY, half_grid, half_storable
from onnxcompress.passes._qdq import MIN_SCALE, int8_grid, round_keeping_sums
from onnxcompress.weights import COMPUTE_ROLES, ROLE_EMBEDDING, Weight

# Clipping ratios tried per channel (1.0 first: int8 per-channel's grid).
CLIP_RATIOS = (1.0, 0.97, 0.94, 0.91, 0.88, 0.85, 0.82, 0.79)
_CHUNK = 1 << 20
HALF_STEPS = 1  # +-1 ulp: 3 passes more than before; +-4 errs 1-4% less again for 6 more


#: A model whose float compute weights total at most this many values decodes them in forms
#: onnxruntime folds at load (int8 by Cast + Mul, a codebook by Gather), not in the exact form:
#: after the fold its ops run exactly the original's graph, where the exact form's scale ``Mul``
#: after each op, and the fusions it breaks (Gelu after a Gemm), are a per-call cost a small
#: model feels (atspm_head, 117 KB of int8 run in 0.14 ms: quantize static, weights only, 1.060x
#: the fp32 latency, 0.998x folded; k-means 8's exact Gemm broke the Gelu fusion). What the
#: folds keep (about twice the int8 bytes: bert_tiny) stays within half the memory slack
#: (``memory.SLACK_BYTES``).
SMALL_MODEL_VALUES = 1 << 18


#: A model whose compute weights (embedding tables aside) total under this many values runs a call
#: in tens of microseconds: a table's per-call decode (gathered int8 rows, scaled) is a visible
#: share of it (a recommender's 18 us MLP: 1.08-1.11x), so its tables decode at load instead.
TINY_COMPUTE_VALUES = 16384
#: ... up to this size (a fold holds the table's float copy beside its stored form while loading).
FOLDED_TABLE_BYTES = 16 << 20
#: A table (Gather-read) of a model that is not tiny folds at load up to this size.
SMALL_TABLE_BYTES = 1 << 20


def table_fold_limit(weights: list[Weight]) -> int:
    """The largest int8 table of ``weights``' model that decodes at load, not per gathered row."""
    return FOLDED_TABLE_BYTES if tiny_compute(weights) else SMALL_TABLE_BYTES


def tiny_compute(weights: list[Weight]) -> bool:
    """Whether ``weights``' model computes under TINY_COMPUTE_VALUES values a call."""
    return sum(w.size for w in weights if w.role in COMPUTE_ROLES and w.role != ROLE_EMBEDDING) \
        < TINY_COMPUTE_VALUES


def exact_form_pays(weights: list[Weight]) -> bool:
    """Whether the model whose weights are ``weights`` is large enough for the exact form (its
    float compute weights above ``SMALL_MODEL_VALUES``)."""
    return sum(w.size for w in weights if w.role in COMPUTE_ROLES and w.is_float) > SMALL_MODEL_VALUES


def half_neighbour(scale: np.ndarray, steps: int) -> np.ndarray:
    """``scale`` rounded to float16 and moved ``steps`` float16 ulps (float32 where that is not
    a normal float16 number, as ``half_grid``)."""
    half = scale.astype(np.float16)
    toward = np.float16(np.inf) if steps > 0 else np.float16(0)
    for _ in range(abs(steps)):
        half = np.nextafter(half, toward)
    wide = half.astype(np.float64)
    # A scale stepped out of float16's normal range (to 0 or inf) stays the one given.
    ok = np.isfinite(wide) & (wide >= HALF_TINY)
    return np.where(ok, half_grid(np.where(ok, wide, 1.0)), scale)


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
    # Each ratio's scale on the float16 grid, so the scales are stored in half the bytes
    # (``rewrite``). Ratio 1 is int8 per channel's own grid (``quantize_weight``), so the choice
    # is never worse than int8 per channel. Around it, the float16 values HALF_STEPS ulps either
    # side: the best of the three errs 0.3-6% less (Gaussian channels of 9-2048 values, 24
    # weights: never more).
    grid = int8_grid(amax)
    candidates = [grid] + [half_neighbour(grid, d) for d in range(-HALF_STEPS, HALF_STEPS + 1) if d]
    candidates += [half_grid(np.where(amax > 0, amax * r / 127.0, 1.0)) for r in CLIP_RATIOS[1:]]
    for scale in candidates:
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
    scales = best_scale.astype(array.dtype)
    scales[_unusable(scales)] = 1
    q = round_keeping_sums(array, scales, axis, 127)  # in the weight's own layout
    shape = [1] * array.ndim
    shape[axis] = -1
    decoded = (q.astype(array.dtype) * scales.reshape(shape)).astype(array.dtype)
    return q, scales, decoded


def _unusable(scales: np.ndarray) -> np.ndarray:
    """Channels whose scale cannot divide a bias: not finite, or below ``_qdq.MIN_SCALE``
    (ppocr_rec has a channel of 3e-39 weights: its bias / scale was inf, and the output NaN).
    Scale 1 decodes them to zero, an error of those tiny values."""
    return ~np.isfinite(scales) | (np.abs(scales) < MIN_SCALE)


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
    """``apply`` for scales chosen on a sample, in one pass of blocks on every core: when the
    chosen scales err more on all the values than int8's own grid (ratio 1), each channel that
    does takes the grid, so the form never falls below int8 per-channel weights. Also returns the relative
    error. Works in the weight's dtype (float32: half the bytes of float64, the large weights'
    passes are memory-bound); the errors are those of exactly what the decode computes."""
    dtype = array.dtype
    amax = channel_absmax(array, axis)
    grid = int8_grid(amax).astype(dtype)  # int8 per channel's own (``quantize_weight``)
    scales = best_scale.astype(dtype)
    for s in (scales, grid):
        s[_unusable(s)] = 1
    bshape = [1] * array.ndim
    bshape[axis] = -1
    s1, s2 = scales.reshape(bshape), grid.reshape(bshape)
    other = tuple(i for i in range(array.ndim) if i != axis)
    step = max(1, _CHUNK // max(array[0].size if array.ndim > 1 else 1, 1))

    def block_errors(a: int) -> tuple[np.ndarray, np.ndarray, float]:
        block = array[a:a + step]
        sb1, sb2 = (s1[a:a + step], s2[a:a + step]) if axis == 0 else (s1, s2)
        errs = []
        for sb in (sb1, sb2):
            r = np.rint(block / sb)
            np.clip(r, -127, 127, out=r)
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
    # As ``choose``: per weight first (float16 scales stay whole), per channel only when the
    # chosen scales err more in total than int8's grid.
    use_grid = err2 < err1 if err1.sum() > err2.sum() else np.zeros(err1.shape, bool)
    scales[use_grid] = grid[use_grid]
    # The codes keep each channel's sum (as ``apply``); the choice above compared nearest codes.
    q = round_keeping_sums(array, scales, axis, 127)
    decoded = q.astype(dtype)
    decoded *= scales.reshape(bshape)
    total = sum(float(np.square(decoded[a:a + step] - array[a:a + step], dtype=np.float64).sum())
                for a in starts)
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
    extra_nodes: list[ir.Node] = []
    if half_storable(scales):
        # float16 scales (chosen on the float16 grid: ``choose``), widened by a Cast that
        # onnxruntime folds before it fuses the Mul into the Conv.
        half = w.add_constant(f"{base}.scale", scales.astype(np.float16).reshape(shape))
        scale = ir.Value(name=w.fresh_name("k.s"))
        extra_nodes.append(ir.node("Cast", [half], attributes={"to": dtype}, outputs=[scale], name=""))
        stored -= scales.nbytes // 2
    else:
        scale = w.add_constant(f"{base}.scale", scales.reshape(shape))
    out = node.outputs[0]
    scaled = ir.Value(name=w.fresh_name("k.scaled"))
    mul = ir.node("Mul", [out, scale], outputs=[scaled], name="")
    original_name = w.name
    w.insert_nodes([cast])
    w.replace_uses(decoded)
    if original_name and not w.value.uses() and not w.value.is_graph_output():
        decoded.name = original_name  # the decoded weight keeps its name, as the codebook form
    graph = node.graph if node.graph is not None else w.graph  # the reader's: a branch's, maybe
    graph.insert_after(node, [*extra_nodes, mul])
    for user, index in list(out.uses()):
        if user is not mul:
            user.replace_input_with(index, scaled)
    # The consumer's output keeps its name (graph outputs, names other tools look up): the
    # raw product takes a fresh one.
    name = out.name
    out.name = w.fresh_name("k.raw")
    scaled.name = name
    scaled.type, scaled.shape = out.type, out.shape
    for i, o in enumerate(graph.outputs):
        if o is out:
            graph.outputs[i] = scaled
    return stored
