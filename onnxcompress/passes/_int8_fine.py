"""The quantize pass's int8 with finer scales than one per output channel, stored with a Cast and a
Mul that onnxruntime folds at load: blocks along the inputs (``_blocked_weight``, the fidelity
guard's step for an outlier weight) and one scale per group and output channel of a grouped
Einsum weight (``_grouped_weight``); and the guard's float step stored float16 behind a Cast
(``_half_weight``), folded at load the same way."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.passes._half_store import HALF, half_storable, store_narrow
from onnxcompress.passes._int8 import _decode_folded, _insert_decode, _scale_constant
from onnxcompress.passes._qdq import Builder, int8_grid, quantize_weight, relative_error
from onnxcompress.passes.base import LayerStat, PassResult
from onnxcompress.weights import ROLE_RECURRENT, Weight


def _grouped_weight(w: Weight, axes: list[int], b: Builder, result: PassResult) -> None:
    """``_folded_weight`` with one scale per combination of ``axes`` (an Einsum's group and output
    axes, ``graph.einsum``): DeepFilterNet's grouped linear weights [g, i, h] erred 2.15e-2 with
    a scale per h, 8.2e-3 per (g, h). Rounded to nearest: no layout for GPTQ or bias correction."""
    arr = w.numpy().astype(np.float32)
    axes = sorted(set(axes))  # the scales then broadcast in the weight's own axis order
    rest = [a for a in range(arr.ndim) if a not in axes]
    order = (*axes, *rest)
    rows = np.transpose(arr, order).reshape(-1, int(np.prod([arr.shape[a] for a in rest])))
    q_rows, scale = quantize_weight(rows, 0)
    error = relative_error(rows, q_rows, scale, 0)
    q = np.ascontiguousarray(np.transpose(q_rows.reshape([arr.shape[a] for a in order]), np.argsort(order)))
    before = w.nbytes
    w.set_numpy(q)
    shape = [arr.shape[a] if a in axes else 1 for a in range(arr.ndim)]
    _decode_folded(w, q, np.ascontiguousarray(scale.reshape(shape), np.float32), error, before, b,
                   result, per_channel=True)


# The fidelity guard's finer int8: one scale per BLOCK consecutive input values of each output
# channel (folded at load like ``_folded_weight``). ppocr_rec's conv2d_184 (480x480 1x1):
# relative error 0.030 per channel -> 0.0087 in blocks of 32, for 3% more bytes.
BLOCK = 32


def block_layout(w: Weight) -> tuple[tuple[int, ...], int] | None:
    """(blocked shape, scale axis) for ``w`` in blocks of BLOCK along its inputs, or None: the
    output axis must be first (Conv, Gemm transB), last of a 2-D MatMul weight, or the gates'
    axis of a recurrent weight ([directions, gates x hidden, inputs])."""
    shape = tuple(w.shape)
    if len(shape) < 2 or w.out_axis is None:
        return None
    out = w.out_axis % len(shape)
    if w.role == ROLE_RECURRENT and len(shape) == 3 and out == 1:
        k = shape[2]
        return ((*shape[:2], k // BLOCK, BLOCK), 3) if k % BLOCK == 0 and k > BLOCK else None
    if out == 0:
        k = int(np.prod(shape[1:]))
        return ((shape[0], k // BLOCK, BLOCK), 2) if k % BLOCK == 0 and k > BLOCK else None
    if out == 1 and len(shape) == 2:
        k = shape[0]
        return ((k // BLOCK, BLOCK, shape[1]), 1) if k % BLOCK == 0 and k > BLOCK else None
    return None


def block_quantize(arr: np.ndarray, layout: tuple[tuple[int, ...], int]) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes in the blocked shape and their scales (keepdims on the block axis)."""
    blocked, axis = layout
    x = np.asarray(arr, np.float32).reshape(blocked)
    amax = np.abs(x).max(axis=axis, keepdims=True)
    scale = int8_grid(amax).astype(np.float32)  # stored in float16 (``_scale_constant``)
    q = np.clip(np.round(x / scale), -127, 127).astype(np.int8)
    return q, scale


def block_scale_bytes(scale: np.ndarray) -> int:
    """What ``_blocked_weight`` stores for the block scales ``scale``."""
    return scale.nbytes // 2 if half_storable(scale) else scale.nbytes


def _blocked_weight(w: Weight, b: Builder, result: PassResult) -> None:
    """Store ``w`` as int8 with one scale per block; Cast, Mul, Reshape (folded at load)."""
    layout = block_layout(w)
    assert layout is not None
    arr, dtype = w.numpy().astype(np.float32), w.dtype  # float16: decoded in float32, cast back
    shape = tuple(arr.shape)
    q, scale = block_quantize(arr, layout)
    diff = q.astype(np.float32) * scale - arr.reshape(layout[0])
    error = float(np.linalg.norm(diff) / max(float(np.linalg.norm(arr)), 1e-30))
    before = w.nbytes
    del arr, diff
    w.release()
    builder = Builder(w.graph, b.names) if w.graph is not b.graph else b
    w.set_numpy(q)
    scale_v, widen, scale = _scale_constant(builder, f"{w.name}_block_scale", scale)
    shape_v = builder.constant(f"{w.name}_shape", np.array(shape, dtype=np.int64))
    cast = builder.node("Cast", [w.value], f"{w.name}_f", to=ir.DataType.FLOAT)
    mul = builder.node("Mul", [cast.outputs[0], scale_v], f"{w.name}_blocks")
    reshape = builder.node("Reshape", [mul.outputs[0], shape_v], f"{w.name}_dq")
    for n in (cast, mul, reshape):
        n.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    reshape.outputs[0].shape = ir.Shape(shape)
    _insert_decode(w, [*widen, cast, mul, reshape], dtype, builder)
    result.add_layer(LayerStat(
        name=w.label, op_type="/".join(w.op_types), shape=shape, bytes_before=before,
        bytes_after=q.nbytes + scale.nbytes, bits=8.0, error=round(error, 6),
        extra={"per_channel": True, "block": BLOCK, "storage": w.storage, "compute": "float",
               "fidelity_guard": True},
    ))


def _half_weight(w: Weight, b: Builder, result: PassResult) -> None:
    """Store the float32 ``w`` in float16 with a Cast in front of its readers (the fidelity
    guard's float step where float16 holds it: ``_int8_search.halves``)."""
    arr = w.numpy()  # float32: ``halves``
    half = arr.astype(np.float16)
    error = float(np.linalg.norm(half.astype(np.float32) - arr) / max(float(np.linalg.norm(arr)), 1e-30))
    before = w.nbytes
    del arr
    w.release()
    store_narrow(w.graph, w.value, half, HALF, b.names, "fp16")
    result.add_layer(LayerStat(
        name=w.label, op_type="/".join(w.op_types), shape=tuple(half.shape), bytes_before=before,
        bytes_after=half.nbytes, bits=16.0, error=round(error, 8),
        extra={"storage": w.storage, "compute": "float", "float16": True, "fidelity_guard": True},
    ))
