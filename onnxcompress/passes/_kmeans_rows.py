"""k-means tables that only row Gathers read, decoded per call from the rows gathered.

The codebook decode (``_kmeans_decode.rewrite``) reads only constants, so onnxruntime folds it
at load, and the fold holds the whole table as int32 indices and then as floats: a large
embedding at 4 bits took 2-3x the fp32 model's peak session memory (lac_encoder's 58224 x 128
table: 3.3x; bert_tiny's 30522 x 128: 1.8x). A table whose every reader is a ``Gather`` of rows
needs only the rows asked for. So each ``Gather`` reads the stored index rows themselves, and the
decode runs on those. With one codebook (``packing.pack_bytes``, ``packing.byte_book``)::

    Gather(bytes [V, L], ids) -> Cast(int32) -> Gather(byte book [256, 8/bits])
      -> Reshape [..., d_pad] [-> Slice d] [* Gather(row scales, ids) or * column scales]

With a codebook per row group, the rows are bit planes packed each on its own
(``packing.pack_rows``; ``Gather`` takes no 4-bit tensor), unpacked by BitShifts, offset into
the flat codebook and looked up one index at a time. Ids of unknown rank are read flat and
their shape restored at the end. The session holds the stored bytes and one call's rows; the
decode costs a few small ops a call, next to a lookup that copied rows anyway.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcompress import packing
from onnxcompress.passes._half_store import half_storable
from onnxcompress.passes._int8_rows import row_gather_only
from onnxcompress.passes._kmeans_codebook import INT8_FORM_MIN_SIZE
from onnxcompress.passes._kmeans_decode import UINT8_ADD_MIN_OPSET, ConstantCache, Decode, Formats, rewrite
from onnxcompress.weights import Weight

FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16)


def decodes_rows(w: Weight) -> bool:
    """Whether ``w`` is a float table of at least ``INT8_FORM_MIN_SIZE`` values that only row
    Gathers read (by run-time indices), so its codebook decode can run on the gathered rows."""
    return w.dtype in FLOAT_TYPES and w.size >= INT8_FORM_MIN_SIZE and row_gather_only(w)


def write_decode(w: Weight, d: Decode, index_bits: int, storage: str, formats: Formats,
                 constants: ConstantCache, book: ir.Value | None, output_dtype: np.dtype,
                 extra: dict[str, Any]) -> int:
    """Write ``w``'s decode as ``formats`` has it, from its gathered rows (``decodes_rows``) or
    folded whole at load (``_kmeans_decode.rewrite``); returns the bytes stored, and ``extra``
    (its LayerStat's) says what was written."""
    if formats.rows and decodes_rows(w):
        stored, extra["stored_bits"] = rewrite_rows(w, d, index_bits, storage, formats.opset, constants,
                                                    book, output_dtype)
        extra["decode"] = "the rows each Gather reads, per call"
        return stored
    return rewrite(w, d, index_bits, storage, formats.opset, constants, book=book,
                   output_dtype=output_dtype, runtime=formats.runtime)


def byte_bits(bits: int) -> int:
    """The whole-byte width (1, 2, 4 or 8) a table's ``bits``-bit indices are stored in when one
    codebook decodes them by bytes: 3 bits take 4 (the same clustering, a third more bytes,
    and no bit planes to combine each call: lac_encoder at 3 bits 1.07x fp32's latency with
    planes, 1.02x by bytes); the bit allocation prices a table's widths so."""
    return next(b for b in (1, 2, 4, 8) if b >= bits)


def rewrite_rows(
    w: Weight,
    d: Decode,
    index_bits: int,
    storage: str,
    opset: int,
    constants: ConstantCache,
    book: ir.Value | None = None,
    output_dtype: np.dtype | None = None,
) -> tuple[int, int]:
    """Store ``w``'s indices as rows its Gathers read, decode each Gather's rows after it, and
    return the bytes now stored (``book``: a shared codebook, not counted) and the bits an
    index is stored in."""
    labels = d.labels
    shape = tuple(labels.shape)
    rows, width = shape[0], int(np.prod(shape[1:]))
    base = w.name or "weight"
    flat = labels.reshape(rows, width)
    bits = 8 if storage == "uint8" or index_bits == 8 else index_bits
    codebook = d.codebook
    gathered = np.dtype(output_dtype) if output_dtype is not None else codebook.dtype
    stored = 0
    # One codebook: indices in whole-byte widths (``byte_bits``), a byte's values read in one
    # lookup of a [256, 8/bits] "byte book" (2-8 KB), so a call's decode is Cast + one Gather,
    # not BitShifts per plane and an element-wise Gather.
    by_byte = book is None and codebook.shape[0] == 1
    if by_byte:
        bits = byte_bits(bits)
        planes = [w.add_constant(f"{base}.q{bits}", packing.pack_bytes(flat, bits))]
        values = packing.byte_book(codebook[0], bits)
        book = w.add_constant(f"{base}.codebook", np.ascontiguousarray(values))
        stored += planes[0].const_value.nbytes + values.nbytes
        widen = values.dtype != gathered
    else:
        packed = packing.pack_rows(flat, bits)
        planes = [w.add_constant(f"{base}.q{pw}", p)
                  for pw, p in zip(packing.plane_widths(bits), packed, strict=True)]
        stored += sum(p.nbytes for p in packed)
        widen = False
        if book is None:
            book = w.add_constant(f"{base}.codebook", np.ascontiguousarray(codebook.reshape(-1)))
            stored += codebook.nbytes
            widen = codebook.dtype != gathered  # a float16 codebook, widened (2^bits values)
    padded = packing.padded_length(width, bits)  # whole bytes a row (the byte form: one plane)
    offsets = None
    if codebook.shape[0] > 1:
        assert d.row_axis is not None and d.row_of_channel is not None
        k = codebook.shape[1]
        offsets = _along(w, f"{base}.off", (d.row_of_channel * k).astype(np.int32), d.row_axis, shape)
        stored += d.row_of_channel.size * 4
    scales, half = None, False
    if d.scales is not None:
        # onnxruntime's CPU Mul has no float16 kernel: a float16 table is scaled in float32.
        # Scales chosen on the float16 grid (``_kmeans_fit._cluster``) are stored in float16
        # and widened where they are taken.
        half = half_storable(d.scales.astype(np.float32))
        scales = _along(w, f"{base}.scale", d.scales.astype(np.float16 if half else np.float32),
                        d.scale_axis, shape)
        stored += d.scales.size * (2 if half else 4)

    for gather, _ in list(w.value.uses()):
        node = _Chain(w)
        out = gather.outputs[0]
        ids = gather.inputs[1]
        # The ids' rank, where known, lets Reshape's 0s keep their dims; else they are read flat
        # and their shape restored at the end (Shape + Concat).
        rank = len(ids.shape) if ids.shape is not None else None
        if rank is None:
            ids = node("Reshape", [ids, constants.get(w, "flat", np.array([-1], np.int64))], "ids")
        lead = [0] * (rank if rank is not None else 1)
        rowshape = constants.get(w, f"rows{len(lead)}.{padded}", np.array([*lead, padded], np.int64))
        taken = [node("Gather", [p, ids], "rows", axis=0) for p in planes]
        lookup = node("Cast", [book], "book", to=ir.DataType.from_numpy(gathered)) if widen else book
        if by_byte:
            idx = node("Cast", [taken[0]], "idx", to=ir.DataType.INT32)
            value = node("Gather", [lookup, idx], "w", axis=0)
            value = _sliced(w, node("Reshape", [value, rowshape], "flat"), padded, width, constants, node)
        else:
            idx, wide = _unpack_rows(taken, bits, opset, rowshape, w, constants, node)
            idx = _sliced(w, idx, padded, width, constants, node)
            idx = idx if wide else node("Cast", [idx], "idx", to=ir.DataType.INT32)
            if offsets is not None:
                idx = node("Add", [idx, _take(offsets, ids, node)], "offset")
            value = node("Gather", [lookup, idx], "w", axis=0)
        if scales is not None:
            if gathered != np.float32:
                value = node("Cast", [value], "w32", to=ir.DataType.FLOAT)
            scale = _take(scales, ids, node)
            if half:
                scale = node("Cast", [scale], "s", to=ir.DataType.FLOAT)
            value = node("Mul", [value, scale], "scaled")
            if gathered != np.float32:
                value = node("Cast", [value], "w16", to=ir.DataType.from_numpy(gathered))
        if rank is None:
            tail = constants.get(w, f"tail{shape[1:]}", np.array(shape[1:], np.int64))
            full = node("Concat", [node("Shape", [gather.inputs[1]], "idshape"), tail], "outshape", axis=0)
            value = node("Reshape", [value, full], "rowsout")
        elif len(shape) > 2:
            target = constants.get(w, f"nd{rank}{shape[1:]}",
                                   np.array([0] * rank + list(shape[1:]), np.int64))
            value = node("Reshape", [value, target], "rowsout")
        value.type, value.shape = out.type, out.shape  # it may be a graph output
        gather.graph.insert_after(gather, node.nodes)
        name = out.name
        out.replace_all_uses_with(value, replace_graph_outputs=True)
        gather.graph.remove(gather, safe=True)
        value.name = name  # the lookup's output keeps its name
    w.remove_if_unused()
    return stored, bits


def _sliced(w: Weight, value: ir.Value, padded: int, width: int, constants: ConstantCache,
            node: Any) -> ir.Value:
    """``value`` without the padding its last axis has past ``width``."""
    if padded == width:
        return value
    starts = constants.get(w, "zero", np.array([0], np.int64))
    ends = constants.get(w, f"n{width}", np.array([width], np.int64))
    axes = constants.get(w, "last", np.array([-1], np.int64))
    return node("Slice", [value, starts, ends, axes], "slice")


class _Along:
    """A per-row constant (gathered by the ids) or one broadcast over every row."""

    def __init__(self, value: ir.Value, per_row: bool) -> None:
        self.value, self.per_row = value, per_row


def _along(w: Weight, hint: str, values: np.ndarray, axis: int | None,
           shape: tuple[int, ...]) -> _Along:
    """``values`` along ``axis`` of the table, laid out for the decoded rows ``[n, width]``:
    ``[rows, 1]`` to gather when it runs along the rows, else ``[1, width]`` (or a scalar)."""
    if axis is None:
        return _Along(w.add_constant(hint, values.reshape(())), False)
    if axis % len(shape) == 0:
        return _Along(w.add_constant(hint, values.reshape(-1, 1)), True)
    along = [1] * len(shape)
    along[axis] = values.size
    full = np.broadcast_to(values.reshape(along), (1, *shape[1:]))
    return _Along(w.add_constant(hint, np.ascontiguousarray(full.reshape(1, -1))), False)


def _take(along: _Along, ids: ir.Value, node: Any) -> ir.Value:
    return node("Gather", [along.value, ids], "take", axis=0) if along.per_row else along.value


def _unpack_rows(gathered: list[ir.Value], bits: int, opset: int, rowshape: ir.Value, w: Weight,
                 constants: ConstantCache, node: Any) -> tuple[ir.Value, bool]:
    """The gathered bit planes ``[..., 1, L]`` as indices ``[..., d_pad]`` and whether they are
    int32 already: combined in uint8 from opset 14, in int32 before (no uint8 Add)."""
    widths = packing.plane_widths(bits)
    if widths == (8,):
        return gathered[0], False
    narrow = opset >= UINT8_ADD_MIN_OPSET or len(widths) == 1
    acc: ir.Value | None = None
    for p, (plane_width, plane) in enumerate(zip(widths, gathered, strict=True)):
        parts = 8 // plane_width
        shifts = constants.get(w, f"shl{plane_width}",
                               (plane_width * np.arange(parts, dtype=np.uint8))[:, None])
        right = constants.get(w, f"shr{plane_width}", np.array([8 - plane_width], np.uint8))
        a = node("BitShift", [plane, shifts], f"shl{p}", direction="LEFT")
        part = node("Reshape", [node("BitShift", [a, right], f"shr{p}", direction="RIGHT"), rowshape],
                    f"flat{p}")
        if not narrow:
            part = node("Cast", [part], f"int{p}", to=ir.DataType.INT32)
        if acc is None:
            acc = part
        elif narrow:
            up = constants.get(w, f"up{plane_width}", np.array([plane_width], np.uint8))
            acc = node("Add", [node("BitShift", [acc, up], f"up{p}", direction="LEFT"), part], f"add{p}")
        else:
            mul = constants.get(w, f"mul{plane_width}", np.array([1 << plane_width], np.int32))
            acc = node("Add", [node("Mul", [acc, mul], f"mul{p}"), part], f"add{p}")
    assert acc is not None
    return acc, not narrow


class _Chain:
    """Makes the nodes of one Gather's decode, in order; called as ``node(op, inputs, hint)``."""

    def __init__(self, w: Weight) -> None:
        self.w = w
        self.nodes: list[ir.Node] = []

    def __call__(self, op: str, inputs: list[ir.Value], hint: str, **attrs: Any) -> ir.Value:
        # Short generic names and unnamed nodes, as the folded decode's (``_kmeans_decode``).
        out = ir.Value(name=self.w.fresh_name(f"k.{hint}"))
        self.nodes.append(ir.node(op, inputs, attributes=attrs or None, outputs=[out], name=""))
        return out
