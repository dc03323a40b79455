"""int8 embedding rows: a table a Gather reads by rows stored as int8 with one scale a row,
each Gather's rows scaled after it (``gathered_weight``: only the rows gathered are ever float),
and folded back to a float table at load where those decodes measure slower than float
(``fold_gathered_rows``: a model that is all lookup, WordLlama's static embedder)."""

from __future__ import annotations

import onnx_ir as ir

from onnxcompress.graph.constants import const_array
from onnxcompress.graph.scope import first_reader
from onnxcompress.passes._int8 import _to_int8
from onnxcompress.passes._qdq import Builder
from onnxcompress.passes._quant_plan import _attr
from onnxcompress.passes.base import LayerStat, PassResult
from onnxcompress.weights import Weight, model_names


def row_gather_only(w: Weight) -> bool:
    """Whether every use of ``w`` is a ``Gather`` of its rows (axis 0) by run-time indices."""
    return bool(w.uses) and all(
        u.node.op_type == "Gather" and u.node.domain in ("", "ai.onnx") and u.index == 0
        and int(_attr(u.node, "axis", 0)) == 0 and const_array(u.node.inputs[1]) is None
        for u in w.uses) and len(w.shape) >= 2 and not w.via


def is_row_gather(node: ir.Node, index: int) -> bool:
    return (node.op_type == "Gather" and node.domain in ("", "ai.onnx") and index == 0
            and int(_attr(node, "axis", 0)) == 0 and const_array(node.inputs[1]) is None)


def tied_table(w: Weight) -> bool:
    """An embedding table also read, through a Transpose, by a MatMul/Gemm (a language model's
    tied input and output embedding): int8 rows for the Gathers, and one decode for the rest."""
    if len(w.shape) != 2 or w.via or not any(is_row_gather(u.node, u.index) for u in w.uses):
        return False
    others = [u.node for u in w.uses if not is_row_gather(u.node, u.index)]
    return bool(others) and all(
        n.op_type == "Transpose" and n.domain in ("", "ai.onnx") and all(
            user.op_type in ("MatMul", "Gemm") for user, _ in n.outputs[0].uses())
        for n in others)


#: Marks (``Value.meta``) the row scales :func:`gathered_weight` writes: they are read by a Gather as
#: well, and were stored as one more int8 table with float scales of their own, larger than they
#: were (batch 9, lac_encoder's 58224-row embedding: 227 KB -> 284 KB).
ROW_SCALES = "onnxcompress.int8_row_scales"


def gathered_weight(w: Weight, b: Builder, result: PassResult) -> None:
    """Store the table ``w`` as int8 with one scale per row; each Gather reads int8 rows and
    its output is ``Cast(rows) * Gather(scales)``: only the gathered rows are ever float.
    Other readers (a tied output projection through Transpose) read ``Cast(table) * scales``,
    which onnxruntime folds at load: the table is stored once, in int8."""
    users = [u.node for u in w.uses if is_row_gather(u.node, u.index)]
    others = [(u.node, u.index) for u in w.uses if not is_row_gather(u.node, u.index)]
    q, scale, error, before, builder = _to_int8(w, 0, False, b)
    scale_v = builder.constant(f"{w.name}_scale", scale.reshape(-1, *([1] * (q.ndim - 1))))
    scale_v.meta[ROW_SCALES] = True
    if others:
        table = _table_decode(w.value, scale_v, w.graph, builder, w.name)
        for node, index in others:
            node.replace_input_with(index, table)
    for node in users:
        # A Gather inside an If/Loop branch reads the table from the outer scope: its
        # dequantize goes next to it, in the branch.
        graph = node.graph if node.graph is not None else w.graph
        out = node.outputs[0]
        name = out.name
        indices = node.inputs[1]
        rows_scale = builder.node("Gather", [scale_v, indices], f"{name}_scale", axis=0)
        cast = builder.node("Cast", [out], f"{name}_f", to=ir.DataType.FLOAT)
        mul = builder.node("Mul", [cast.outputs[0], rows_scale.outputs[0]], f"{name}_dq")
        for n in (rows_scale, cast, mul):
            n.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
        mul.outputs[0].shape = out.shape
        graph.insert_after(node, [rows_scale, cast, mul])
        for user, index in list(out.uses()):
            if user is not cast:
                user.replace_input_with(index, mul.outputs[0])
        for i, o in enumerate(graph.outputs):
            if o is out:
                graph.outputs[i] = mul.outputs[0]
        out.type = ir.TensorType(ir.DataType.INT8)
        out.name = builder.name(f"{name}_int8")
        mul.outputs[0].name = name  # the output keeps its name
    result.add_layer(LayerStat(
        name=w.label, op_type="/".join(w.op_types), shape=w.shape, bytes_before=before,
        bytes_after=q.nbytes + scale.nbytes, bits=8.0, error=round(error, 6),
        extra={"per_channel": True, "storage": w.storage, "compute": "gathered int8 rows"
               + (" (tied: its other readers float, folded at load)" if others else "")},
    ))


def row_tables(model: ir.Model) -> bool:
    """Whether ``model`` has a float table a Gather reads rows of, which the quantize pass may
    store as int8 rows (a scan of the nodes: no weight index built for it)."""
    return any(is_row_gather(n, 0) and n.inputs[0] is not None and n.inputs[0].const_value is not None
               and n.inputs[0].const_value.dtype.is_floating_point()
               for n in ir.traversal.RecursiveGraphIterator(model.graph))


def gathered_rows(model: ir.Model) -> bool:
    """Whether ``model`` reads int8 rows :func:`gathered_weight` wrote."""
    return any(n.op_type == "Mul" and _gathered_rows(n) is not None
               for n in ir.traversal.RecursiveGraphIterator(model.graph))


def fold_gathered_rows(model: ir.Model, result: PassResult, max_bytes: int) -> tuple[list[str], list[str]]:
    """Each table :func:`gathered_weight` stored, of up to ``max_bytes`` as float, read as
    ``Cast(table) * scales`` instead, which onnxruntime folds at load: a plain float Gather a
    call (float speed; the file keeps the int8 table, the session holds a float one, and both
    while loading). The names of the tables folded, and of those kept as rows."""
    taken = model_names(model)
    decoded: dict[str, ir.Value] = {}  # table name -> its whole decode
    kept: list[str] = []
    for mul in [n for n in ir.traversal.RecursiveGraphIterator(model.graph) if n.op_type == "Mul"]:
        rows = _gathered_rows(mul)
        if rows is None:
            continue
        cast, gather, scales_gather = rows
        table, scales, indices = gather.inputs[0], scales_gather.inputs[0], gather.inputs[1]
        if table.const_value is None or table.const_value.size * 4 > max_bytes:
            kept += [table.name] if table.name not in kept else []
            continue
        if table.name not in decoded:  # a tied table's decode serves its rows too
            decoded[table.name] = _tied_decode(table, scales) or _table_decode(
                table, scales, table.graph or model.graph, Builder(model.graph, taken), table.name)
        graph, out = mul.graph, mul.outputs[0]
        name = out.name
        rows_float = Builder(graph, taken).node("Gather", [decoded[table.name], indices],
                                                f"{name}_folded", axis=0)
        rows_float.outputs[0].type, rows_float.outputs[0].shape = out.type, out.shape
        graph.insert_before(gather, rows_float)
        out.replace_all_uses_with(rows_float.outputs[0], replace_graph_outputs=True)
        graph.remove([mul, cast, gather, scales_gather], safe=True)
        rows_float.outputs[0].name = name  # the output keeps its name
    for layer in result.layers:
        if layer.extra.get("compute", "").startswith("gathered int8 rows") and layer.name in decoded:
            layer.extra["compute"] = "float (int8 table decoded at load)"
    return list(decoded), kept


def _gathered_rows(mul: ir.Node) -> tuple[ir.Node, ir.Node, ir.Node] | None:
    """(Cast, Gather of int8 rows, Gather of their scales) when ``mul`` scales gathered rows."""
    cast, scaled = (x.producer() if x is not None else None for x in mul.inputs)
    if cast is None or scaled is None or cast.op_type != "Cast" or scaled.op_type != "Gather" \
            or not scaled.inputs[0].meta.get(ROW_SCALES):
        return None
    gather = cast.inputs[0].producer()
    if gather is None or gather.op_type != "Gather" or gather.inputs[1] is not scaled.inputs[1] \
            or len(cast.outputs[0].uses()) != 1 or len(gather.outputs[0].uses()) != 1:
        return None
    return cast, gather, scaled


def _table_decode(table: ir.Value, scales: ir.Value, graph: ir.Graph, builder: Builder,
                  hint: str) -> ir.Value:
    """``Cast(table) * scales``, which onnxruntime folds at load, in ``graph`` ahead of the table's
    first reader (in a subgraph too)."""
    cast = builder.node("Cast", [table], f"{hint}_f", to=ir.DataType.FLOAT)
    mul = builder.node("Mul", [cast.outputs[0], scales], f"{hint}_dq")
    for n in (cast, mul):
        n.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    mul.outputs[0].shape = ir.Shape(table.const_value.shape)
    first = first_reader(graph, (u for u, _ in table.uses() if u is not cast))
    if first is None:
        graph.extend([cast, mul])
    else:
        graph.insert_before(first, [cast, mul])
    return mul.outputs[0]


def _tied_decode(table: ir.Value, scales: ir.Value) -> ir.Value | None:
    """The decode :func:`gathered_weight` wrote for a tied table's other readers, if any."""
    for node, _ in table.uses():
        if node.op_type == "Cast" and len(node.outputs[0].uses()) == 1:
            user = next(iter(node.outputs[0].uses()))[0]
            if user.op_type == "Mul" and user.inputs[1] is scales:
                return user.outputs[0]
    return None
