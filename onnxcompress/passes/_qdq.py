"""Quantization arithmetic and the Q/DQ node plumbing shared by the quantization modes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcompress.passes._half_store import half_grid
from onnxcompress.weights import unique_name

# The ops whose int8 kernels do the work, and how to find their weight/bias inputs.
COMPUTE_OPS = ("Conv", "MatMul", "Gemm")
# Ops onnxruntime runs on int8 data when Q/DQ surround them with the same scale on input and
# output (its "drop QDQ" rules): data movement and max.
SAME_SCALE_OPS = frozenset({
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "MaxPool", "Resize", "Slice",
    "Split", "Identity", "Gather",
})
# Ops onnxruntime fuses into QLinear kernels with their own output scale.
QLINEAR_OPS = frozenset({
    "Add", "Mul", "Concat", "AveragePool", "GlobalAveragePool", "Sigmoid", "LeakyRelu",
})
GLUE_OPS = SAME_SCALE_OPS | QLINEAR_OPS
# Activations onnxruntime removes in front of a QuantizeLinear whose range already clips.
REMOVABLE_ACTIVATIONS = frozenset({"Relu", "Clip"})
# Which inputs of a glue op carry quantizable data (the rest are shapes, indices, scales...).
DATA_INPUTS: dict[str, tuple[int, ...] | None] = {
    "Reshape": (0,), "Transpose": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Flatten": (0,),
    "MaxPool": (0,), "Resize": (0,), "Slice": (0,), "Split": (0,), "Identity": (0,),
    "Gather": (0,), "Add": (0, 1), "Mul": (0, 1), "Concat": None, "AveragePool": (0,),
    "GlobalAveragePool": (0,), "Sigmoid": (0,), "LeakyRelu": (0,),
}


@dataclass(frozen=True)
class QParams:
    """Scale and zero point of one activation tensor (per tensor)."""

    scale: float
    zero_point: int
    dtype: np.dtype  # uint8 or int8

    @property
    def low(self) -> float:
        info = np.iinfo(self.dtype)
        return (info.min - self.zero_point) * self.scale

    @property
    def high(self) -> float:
        info = np.iinfo(self.dtype)
        return (info.max - self.zero_point) * self.scale


def activation_qparams(low: float, high: float, *, symmetric: bool) -> QParams:
    """u8 asymmetric over [low, high] (zero always representable), or s8 symmetric."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if symmetric:
        m = max(-low, high)
        scale = m / 127.0 if m > 0 else 1.0
        return QParams(float(np.float32(scale)), 0, np.dtype(np.int8))
    span = high - low
    if span <= 0:
        return QParams(1.0, 0, np.dtype(np.uint8))
    scale = float(np.float32(span / 255.0))
    zp = int(np.clip(round(-low / scale), 0, 255))
    return QParams(scale, zp, np.dtype(np.uint8))


# A weight scale below it is a channel of weights under ~1e-28 (ppocr_rec has one of 3e-39):
# it takes scale 1, so its codes are 0 and a bias divided by its scale (the int8-exact form,
# int32 biases) stays finite. Dividing by the subnormal scale made every output NaN.
MIN_SCALE = 1e-30

def int8_grid(amax: np.ndarray) -> np.ndarray:
    """int8's scales (float64) for the largest magnitudes ``amax`` of its channels or blocks:
    amax / 127 on float16's grid (``half_grid``), 1 for an all-zero one. The grid every k-means
    int8 form and error bar compares against, and the guard's blocks use."""
    return half_grid(np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32).astype(np.float64))


def quantize_weight(
    w: np.ndarray, axis: int | None, *, reduce_range: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights: (q, scale); scale has one entry per ``axis`` slice (or is a scalar).

    ``reduce_range`` uses 7 bits ([-63, 63]) so u8 x s8 pairs cannot saturate int16 on AVX2.
    Per channel, the codes keep each channel's sum (``round_keeping_sums``) and no temporary is
    the size of ``w`` (large weights are read from a mapping); per tensor, rounded to nearest.
    """
    qmax = 63.0 if reduce_range else 127.0
    w = np.asarray(w, dtype=np.float32)
    if axis is None or w.ndim == 0:
        amax = np.array(max(float(w.max(initial=0.0)), -float(w.min(initial=0.0))), np.float32)
    else:
        axis = axis % w.ndim
        others = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.maximum(w.max(axis=others), -w.min(axis=others)) if others else np.abs(w)
    scale = np.asarray(amax / qmax, dtype=np.float32)
    # zero, subnormal or tiny channels: q = 0 (see MIN_SCALE)
    scale = np.where(scale >= MIN_SCALE, scale, np.float32(1.0)).astype(np.float32)
    if axis is not None and scale.size > 1:
        # on the float16 grid: a file stores per-channel scales in half the bytes
        # (``half_storable``; 2-4% of a small CNN's int8 file were float32 scales)
        scale = half_grid(scale.astype(np.float64)).astype(np.float32)
    if axis is not None and w.ndim >= 2:
        return round_keeping_sums(w, scale, axis, qmax), scale
    t = np.divide(w, scale, dtype=np.float32)
    np.round(t, out=t)
    np.clip(t, -qmax, qmax, out=t)
    return t.astype(np.int8), scale


# Channels rounded together per call of ``_keep_sums`` (bounds its temporaries).
_SUM_BLOCK = 256


def round_keeping_sums(w: np.ndarray, scale: np.ndarray, axis: int, qmax: float) -> np.ndarray:
    """int8 codes of ``w`` over its channel scales (``scale``, one per slice along ``axis``):
    nearest, except that each channel's codes sum to within half a step of its values' sum, by
    flipping the fewest codes nearest their rounding boundary (about 1 in 70; the squared error
    grows ~0.4%). Channels are done in blocks: no temporary the size of ``w``.

    Rounding to nearest moves a channel's response to a constant input (the sum of its weights)
    by a random walk of sqrt(n/12) steps, and real inputs are far from zero-mean (a white
    document page, post-ReLU features): PP-OCRv5 rec, int8 without calibration, 91.0 -> 93.4%
    of 93.75% read; seal_det's empty pages lit 27016 -> 13352 false pixels. Calibration data
    corrects the rest (``layerwise.bias``)."""
    axis %= w.ndim
    scale = np.asarray(scale, np.float32).reshape(-1)
    q = np.empty(w.shape, np.int8)
    for start in range(0, w.shape[axis], _SUM_BLOCK):
        part = [slice(None)] * w.ndim
        part[axis] = slice(start, start + _SUM_BLOCK)
        block = tuple(part)
        t = np.divide(w[block], along(scale[start:start + _SUM_BLOCK], axis, w.ndim), dtype=np.float32)
        np.clip(t, -qmax, qmax, out=t)  # the sums kept are of what the grid can reach
        q[block] = _keep_sums(t, axis, qmax)
    return q


def _keep_sums(t: np.ndarray, axis: int, qmax: float) -> np.ndarray:
    rows_t = np.moveaxis(t, axis, 0).reshape(t.shape[axis], -1)
    rows_q = np.rint(rows_t).astype(np.int16)
    d = rows_q - rows_t  # each in [-0.5, 0.5]
    flips = np.rint(d.sum(axis=1, dtype=np.float64)).astype(np.int64)  # > 0: too many rounded up
    if flips.any():
        _flip_nearest(rows_q, d, flips, qmax)
    moved_shape = (t.shape[axis], *(n for i, n in enumerate(t.shape) if i != axis))
    return np.moveaxis(rows_q.reshape(moved_shape), 0, axis).astype(np.int8)


def _flip_nearest(rows_q: np.ndarray, d: np.ndarray, flips: np.ndarray, qmax: float) -> None:
    """Step back ``|flips|`` codes of each row (in place) against its excess, those rounded that
    way nearest their boundary first."""
    sign = np.sign(flips)[:, None]
    # a flip steps a code back against the excess, from the values rounded that way and in range
    movable = (d * sign > 0) & (np.abs(rows_q - sign) <= qmax)
    cost = np.where(movable, 0.5 - np.abs(d), np.inf)  # nearest the boundary: cheapest
    most = min(int(np.abs(flips).max()), cost.shape[1])
    nearest = np.argpartition(cost, most - 1, axis=1)[:, :most]
    order = np.argsort(np.take_along_axis(cost, nearest, axis=1), axis=1)
    nearest = np.take_along_axis(nearest, order, axis=1)
    take = np.arange(most)[None, :] < np.abs(flips)[:, None]
    take &= np.isfinite(np.take_along_axis(cost, nearest, axis=1))
    r, c = np.nonzero(take)
    rows_q[r, nearest[r, c]] -= sign[r, 0].astype(np.int16)


def dequantize_weight(q: np.ndarray, scale: np.ndarray, axis: int | None) -> np.ndarray:
    if axis is None or np.ndim(scale) == 0:
        return q.astype(np.float32) * np.float32(scale)
    return q.astype(np.float32) * along(scale, axis % q.ndim, q.ndim)


def quantize_bias(bias: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int32 bias for ``scale`` = input scale * weight scale (per channel or scalar)."""
    b = np.asarray(bias, dtype=np.float64)
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), b.shape)
    q = np.round(b / np.where(s > 0, s, 1.0))
    return np.clip(q, -(2**31) + 1, 2**31 - 1).astype(np.int32)


def along(scale: np.ndarray, axis: int | None, ndim: int) -> np.ndarray:
    """Per-channel ``scale`` shaped to broadcast along ``axis`` of a rank-``ndim`` weight (a
    per-tensor or scalar scale as it is)."""
    if axis is None or np.ndim(scale) != 1:
        return scale
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return np.reshape(scale, shape)


#: int8 per channel that rounds this share or more of a weight's nonzero values to zero does not
#: hold it: one scale a channel over a wide fan-in of weights decades apart (batch 34's language
#: identifier, a LinearSVC over 90,093 character n-grams as one Gemm: a class's largest weight
#: 68,000-7,300,000x its median, 90% rounded to zero, 1.1-2.1 points of 1000 sentences changed in
#: every int8 mode, k-means 8's int8 form too). A trained conv's near-Gaussian channels zero ~1%;
#: of 54 real models' weights the next most are road_seg's conv2d_88 (82%) and PFLD's conv8 (65%),
#: whose task metrics int8 per channel held.
ZEROED_SHARE = 0.85


def zeroed_share(w: np.ndarray, q: np.ndarray) -> float:
    """The share of ``w``'s nonzero values whose int8 codes (or decoded values) ``q`` are zero."""
    nonzero = np.asarray(w) != 0
    n = int(np.count_nonzero(nonzero))
    return float(np.count_nonzero(nonzero & (np.asarray(q) == 0)) / n) if n else 0.0


def zeroes_most(w: np.ndarray, q: np.ndarray) -> bool:
    """Whether the int8 codes ``q`` zero ZEROED_SHARE or more of ``w``'s nonzero values."""
    return zeroed_share(w, q) >= ZEROED_SHARE


def relative_error(w: np.ndarray, q: np.ndarray, scale: np.ndarray, axis: int | None) -> float:
    """||dequantize(q) - w|| / ||w||, computed in slices (no full-size float temporaries)."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim == 0 or w.size <= 1 << 20:
        diff = dequantize_weight(q, scale, axis) - w
        num, den = float(np.dot(diff.ravel(), diff.ravel())), float(np.dot(w.ravel(), w.ravel()))
    else:
        num = den = 0.0
        step = max(1, (1 << 20) // int(np.prod(w.shape[1:])))
        for i in range(0, w.shape[0], step):
            ws = w[i: i + step]
            if axis is None or np.ndim(scale) == 0:
                s = np.float32(scale)
            elif axis % w.ndim == 0:
                s = along(scale[i: i + step], 0, w.ndim)
            else:
                s = along(scale, axis % w.ndim, w.ndim)
            diff = q[i: i + step].astype(np.float32) * s - ws
            num += float(np.dot(diff.ravel(), diff.ravel()))
            den += float(np.dot(ws.ravel().astype(np.float64), ws.ravel().astype(np.float64)))
    return float(np.sqrt(num / den)) if den > 0 else 0.0


class Builder:
    """Creates constants and nodes in one graph with model-wide unique names."""

    def __init__(self, graph: ir.Graph, names: set[str]) -> None:
        self.graph = graph
        self.names = names

    def name(self, hint: str) -> str:
        return unique_name(self.names, hint)

    def constant(self, hint: str, array: np.ndarray) -> ir.Value:
        name = self.name(hint)
        # (np.ascontiguousarray would turn a scalar into shape [1]: per-axis, not per-tensor.)
        array = np.array(array, order="C", copy=True)
        value = ir.Value(
            name=name,
            shape=ir.Shape(array.shape),
            type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
            const_value=ir.tensor(array, name=name),
        )
        self.graph.register_initializer(value)
        return value

    def node(self, op: str, inputs: list[ir.Value | None], hint: str, *, outputs: int = 1,
             domain: str = "", **attrs: object) -> ir.Node:
        outs = [ir.Value(name=self.name(f"{hint}" if outputs == 1 else f"{hint}_{i}"))
                for i in range(outputs)]
        # Unnamed nodes: the output names say what they are, and small models stay small. (An
        # empty name, not None: onnx-ir would invent "node_DequantizeLinear_123" for None, ~25
        # bytes a node, a few percent of a tiny int8 model.)
        return ir.node(op, inputs, {k: v for k, v in attrs.items() if v is not None},
                       domain=domain, outputs=outs, name="")
