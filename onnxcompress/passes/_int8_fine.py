"""The quantize pass's int8 with finer scales than one per output channel, stored with a Cast and a
Mul that onnxruntime folds at load: blocks along the inputs (``_blocked_weight``, the fidelity
guard's step for an outlier weight) and one scale per group and output channel of a grouped
Einsum weight (``_grouped_weight``); and the guard's float step stored float16 behind a Cast
(``_half_weight``), folded at load the same way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcompress.passes._half_store import HALF, half_storable, store_narrow
from onnxcompress.passes._int8 import _decode_folded, _insert_decode, _scale_constant
from onnxcompress.passes._qdq import Builder, int8_grid, quantize_weight, relative_error, zeroes_most
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


@dataclass(frozen=True)
class BlockLayout:
    """How a weight splits into blocks of BLOCK along its inputs: ``flat`` is the weight with its
    input axis (``axis``, ``k`` long) gathered, padded with zeros to whole blocks; ``blocked``
    that axis split into (blocks, BLOCK), its scales one a block (``scale_axis`` kept)."""

    shape: tuple[int, ...]
    flat: tuple[int, ...]
    axis: int
    k: int

    @property
    def blocked(self) -> tuple[int, ...]:
        a = self.axis
        return (*self.flat[:a], self.flat[a] // BLOCK, BLOCK, *self.flat[a + 1:])

    @property
    def scale_axis(self) -> int:
        return self.axis + 1

    @property
    def padded(self) -> bool:
        return self.flat[self.axis] != self.k


def block_layout(w: Weight, pad: bool = False) -> BlockLayout | None:
    """``w``'s blocks of BLOCK along its inputs, or None: the output axis must be first (Conv, Gemm
    transB), last of a 2-D MatMul weight, or the gates' axis of a recurrent weight ([directions,
    gates x hidden, inputs]), over more than BLOCK inputs, a whole number of blocks; with ``pad``
    (a weight int8 per channel mostly zeroes) inputs that do not fill whole blocks are padded."""
    shape = tuple(w.shape)
    if len(shape) < 2 or w.out_axis is None:
        return None
    out = w.out_axis % len(shape)
    if w.role == ROLE_RECURRENT and len(shape) == 3 and out == 1:
        flat, axis = shape, 2
    elif out == 0:
        flat, axis = (shape[0], int(np.prod(shape[1:]))), 1
    elif out == 1 and len(shape) == 2:
        flat, axis = shape, 0
    else:
        return None
    k = flat[axis]
    if k <= BLOCK or k % BLOCK and not pad:
        return None
    padded = (*flat[:axis], -(-k // BLOCK) * BLOCK, *flat[axis + 1:])
    return BlockLayout(shape, padded, axis, k)


def block_quantize(arr: np.ndarray, layout: BlockLayout) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes in the blocked shape and their scales (keepdims on the block axis)."""
    a = layout.axis
    x = np.asarray(arr, np.float32).reshape(*layout.flat[:a], layout.k, *layout.flat[a + 1:])
    if layout.padded:
        pad = [(0, 0)] * x.ndim
        pad[a] = (0, layout.flat[a] - layout.k)
        x = np.pad(x, pad)
    x = x.reshape(layout.blocked)
    amax = np.abs(x).max(axis=layout.scale_axis, keepdims=True)
    scale = int8_grid(amax).astype(np.float32)  # stored in float16 (``_scale_constant``)
    q = np.clip(np.round(x / scale), -127, 127).astype(np.int8)
    return q, scale


def block_decode(q: np.ndarray, scale: np.ndarray, layout: BlockLayout) -> np.ndarray:
    """The float32 weight ``block_quantize``'s codes decode to, in its own shape."""
    x = (q.astype(np.float32) * scale).reshape(layout.flat)
    return np.take(x, np.arange(layout.k), axis=layout.axis).reshape(layout.shape)


def blocked_value(w: Weight, pad: bool = False) -> tuple[np.ndarray, int] | None:
    """``w`` as its blocked int8 decodes (its dtype) and the bytes of its block scales; None where
    it has no blocks (``block_layout``): the fidelity guard's block step, measured."""
    layout = block_layout(w, pad)
    if layout is None:
        return None
    q, scale = block_quantize(w.numpy(), layout)
    return block_decode(q, scale, layout).astype(w.dtype.numpy()), block_scale_bytes(scale)


def block_scale_bytes(scale: np.ndarray) -> int:
    """What ``_blocked_weight`` stores for the block scales ``scale``."""
    return scale.nbytes // 2 if half_storable(scale) else scale.nbytes


#: A weight int8 per channel mostly zeroes (``_qdq.ZEROED_SHARE``) read by MatMul/Gemm: 8-bit
#: blocks of this many inputs in onnxruntime's MatMulNBits, whose kernel reads the int8 codes
#: (batch 34's language identifier: Cast + Mul blocks folded at load held 2.1x fp32's resident
#: session memory; MatMulNBits 0.87x, 0.54x the latency, 99.4% of 1000 sentences at 3.88x) ...
NBITS_BLOCK = 128
#: ... from this many values (a smaller weight's fold holds little; MatMulNBits loses to the
#: float GEMM on small matrices)
NBITS_MIN_VALUES = 1 << 18


def _nbits_weight(w: Weight, result: PassResult) -> bool:
    """Store ``w`` (int8 per channel would round most of it to zero) as MatMulNBits 8-bit blocks of
    NBITS_BLOCK where it has NBITS_MIN_VALUES values and blockq's writer takes it (a MatMul/Gemm
    weight); False: not done."""
    from onnxcompress import blockwise
    from onnxcompress.passes.block_quantization import (
        MS_DOMAIN,
        BlockQuantizeConfig,
        _plan,
        _write_onnxruntime,
        accuracy_level,
    )

    cfg = BlockQuantizeConfig(bits=8, block_size=NBITS_BLOCK, method="rtn", speed_note=False)
    layer = _plan(w, cfg) if w.size >= NBITS_MIN_VALUES and w.graph is not None else "small"
    if isinstance(layer, str):
        return False
    matrix = layer.matrix
    scales = "float32" if layer.dtype == ir.DataType.FLOAT else "float16"
    spec = blockwise.BlockSpec(8, NBITS_BLOCK, True, scales)
    qt = blockwise.quantize(matrix, spec, "rtn")
    label, shape, before = w.label, w.shape, w.nbytes
    written = _write_onnxruntime(layer, qt, cfg)
    w.graph.opset_imports.setdefault(MS_DOMAIN, 1)
    result.add_layer(LayerStat(
        name=label, op_type="MatMulNBits", shape=shape, bytes_before=before, bytes_after=written,
        bits=written * 8 / max(1, int(np.prod(shape))), error=round(qt.relative_error(matrix), 6),
        extra={"block": NBITS_BLOCK, "storage": "MatMulNBits", "fidelity_guard": True,
               "accuracy_level": accuracy_level(cfg.accuracy_level, 8)},
    ))
    return True


def _blocked_weight(w: Weight, b: Builder, result: PassResult) -> None:
    """Store ``w`` as int8 with one scale per block; Cast, Mul, Reshape (folded at load), or in
    MatMulNBits where int8 per channel mostly zeroes it (``_nbits_weight``)."""
    arr = w.numpy()
    zeroed = w.out_axis is not None and zeroes_most(arr, quantize_weight(arr, w.out_axis)[0])
    del arr
    if zeroed and _nbits_weight(w, result):
        return
    layout = block_layout(w, pad=zeroed)
    assert layout is not None
    arr, dtype = w.numpy().astype(np.float32), w.dtype  # float16: decoded in float32, cast back
    shape = tuple(arr.shape)
    q, scale = block_quantize(arr, layout)
    diff = block_decode(q, scale, layout) - arr
    error = float(np.linalg.norm(diff) / max(float(np.linalg.norm(arr)), 1e-30))
    before = w.nbytes
    del arr, diff
    w.release()
    builder = Builder(w.graph, b.names) if w.graph is not b.graph else b
    w.set_numpy(q)
    scale_v, widen, scale = _scale_constant(builder, f"{w.name}_block_scale", scale)
    cast = builder.node("Cast", [w.value], f"{w.name}_f", to=ir.DataType.FLOAT)
    decode = [*widen, cast, builder.node("Mul", [cast.outputs[0], scale_v], f"{w.name}_blocks")]
    if layout.padded:  # the whole blocks, then the inputs the weight has (all folded at load)
        flat = builder.constant(f"{w.name}_padded", np.array(layout.flat, dtype=np.int64))
        decode.append(builder.node("Reshape", [decode[-1].outputs[0], flat], f"{w.name}_padded"))
        ends = [builder.constant(f"{w.name}_{n}", np.array([v], dtype=np.int64))
                for n, v in (("start", 0), ("end", layout.k), ("axis", layout.axis))]
        decode.append(builder.node("Slice", [decode[-1].outputs[0], *ends], f"{w.name}_sliced"))
    shape_v = builder.constant(f"{w.name}_shape", np.array(shape, dtype=np.int64))
    decode.append(builder.node("Reshape", [decode[-1].outputs[0], shape_v], f"{w.name}_dq"))
    for n in decode:
        n.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    decode[-1].outputs[0].shape = ir.Shape(shape)
    _insert_decode(w, decode, dtype, builder)
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
