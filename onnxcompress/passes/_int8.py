"""The quantize pass's graph rewriting: int8 weights, int32 biases and Q/DQ pairs written.

``_apply_static`` writes a ``_Plan`` (static QDQ); ``_dequantized_weight`` / ``_folded_weight``
store a float-compute weight in int8 (DequantizeLinear, or Cast+Mul folded at load; int8 rows
gathered are ``_int8_rows``'); ``_dynamic_rewrite`` writes DynamicQuantizeLinear + MatMulInteger.
Finer scales (blocks, a grouped Einsum's groups) are ``_int8_fine``'s.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxcompress import runtime
from onnxcompress.graph.constants import const_array
from onnxcompress.layerwise.bias import apply_int8_correction, int8_correction
from onnxcompress.layerwise.rounding import round_int8
from onnxcompress.passes._half_store import half_storable
from onnxcompress.passes._kmeans_int8 import output_scale_slot, rewrite
from onnxcompress.passes._qdq import (
    SAME_SCALE_OPS,
    Builder,
    QParams,
    activation_qparams,
    dequantize_weight,
    quantize_bias,
    quantize_weight,
    relative_error,
)
from onnxcompress.passes._quant_plan import _attr, _Plan, _Unit
from onnxcompress.passes._spectral import reaches_log
from onnxcompress.passes.base import LayerStat, PassResult
from onnxcompress.weights import ROLE_WEIGHT, Weight, model_names

if TYPE_CHECKING:
    from onnxcompress.passes._quant_config import QuantizeConfig


# -- helpers: rewriting ---------------------------------------------------------------------------


def _apply_static(model: ir.Model, plan: _Plan, ranges: dict, cfg: QuantizeConfig,
                  channelwise: bool, result: PassResult) -> None:
    graph = model.graph
    b = Builder(graph, model_names(model))
    params: dict[int, QParams] = {}
    for value in plan.tensors:
        src = plan.same_scale.get(id(value))
        while src is not None and id(src) in plan.same_scale:
            src = plan.same_scale[id(src)]
        key = src if src is not None else value
        if id(key) in params:
            params[id(value)] = params[id(key)]
            continue
        r = ranges.get(key.name) or _range_upstream(key, ranges)
        if r is None:
            continue
        params[id(value)] = params[id(key)] = activation_qparams(
            r.low, r.high, symmetric=cfg.symmetric_activations)
    # Units whose input was never calibrated (not reached by the data) stay float.
    units = [u for u in plan.units if id(u.activation) in params]
    for u in plan.units:
        if id(u.activation) not in params:
            result.skip(u.node.name or u.node.op_type, "input never reached by calibration data")
    live = {id(u.node) for u in units} | {id(n) for n in plan.glue}
    for value in plan.tensors:
        qp = params.get(id(value))
        readers = [n for n in plan.readers[id(value)] if id(n) in live or
                   not _is_planned(n, plan)]
        if qp is None or not readers:
            continue
        _insert_qdq(b, graph, value, qp, readers)
    done: dict[int, tuple[ir.Value, np.ndarray]] = {}
    for u in units:
        xq = params[id(u.activation)]
        w = u.weight
        axis = u.axis if channelwise else None
        if id(w.value) in done:
            dq, scale = done[id(w.value)]
        else:
            dq, scale = _dequantized_weight(w, axis, cfg.reduce_range, b, result)
            done[id(w.value)] = (dq, scale)
        if u.bias is not None:
            _quantize_bias_input(u, xq.scale * scale, b, graph)
    result.metrics["int8_nodes"] = {
        "compute": len(units),
        "glue": len(plan.glue),
        "qdq_pairs": sum(1 for v in plan.tensors if id(v) in params),
    }


def _range_upstream(value: ir.Value, ranges: dict) -> object | None:
    """The range of the nearest tensor upstream of ``value`` through same-scale ops (whose
    outputs hold values of their input), or None. The ranges were collected for a plan over every
    candidate unit, where ``value`` was such a copy and only its source was asked for; the plan
    applied, over the units kept, can start at ``value`` (pgc_nucseg's squeeze-excite chains,
    GlobalAveragePool -> Squeeze -> Reshape -> Conv: 6 Convs skipped as "never reached by
    calibration data" once the unit upstream was dropped)."""
    for _ in range(16):
        node = value.producer()
        if node is None or node.op_type not in SAME_SCALE_OPS or node.domain not in ("", "ai.onnx") \
                or not node.inputs or node.inputs[0] is None:
            return None
        value = node.inputs[0]
        if value.name in ranges:
            return ranges[value.name]
    return None


def _is_planned(node: ir.Node, plan: _Plan) -> bool:
    return any(node is u.node for u in plan.units) or any(node is g for g in plan.glue)


def _insert_qdq(b: Builder, graph: ir.Graph, value: ir.Value, qp: QParams,
                readers: list[ir.Node]) -> None:
    base = value.name or "t"
    scale = b.constant(f"{base}_scale", np.array(qp.scale, dtype=np.float32))
    zp = b.constant(f"{base}_zp", np.array(qp.zero_point, dtype=qp.dtype))
    q = b.node("QuantizeLinear", [value, scale, zp], f"{base}_q")
    dq = b.node("DequantizeLinear", [q.outputs[0], scale, zp], f"{base}_dq")
    dq.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    producer = value.producer()
    if producer is not None:
        graph.insert_after(producer, [q, dq])
    else:
        first = next(iter(graph), None)
        if first is None:
            graph.extend([q, dq])
        else:
            graph.insert_before(first, [q, dq])
    reader_ids = {id(r) for r in readers}
    for user, index in list(value.uses()):
        if id(user) in reader_ids and user is not q:
            user.replace_input_with(index, dq.outputs[0])


def _dequantized_weight(w: Weight, axis: int | None, reduce_range: bool, b: Builder,
                        result: PassResult) -> tuple[ir.Value, np.ndarray]:
    """Store ``w`` as int8 and feed its consumers through a DequantizeLinear."""
    q, scale, error, before, builder = _to_int8(w, axis, reduce_range, b)
    scale_v = builder.constant(f"{w.name}_scale", scale)
    attrs = {"axis": axis % q.ndim} if axis is not None and scale.ndim == 1 else {}
    # onnxruntime's QDQ fusions need the zero point input even though it is 0.
    zp_v = builder.constant(f"{w.name}_zp", np.zeros(scale.shape, dtype=np.int8))
    dq = builder.node("DequantizeLinear", [w.value, scale_v, zp_v], f"{w.name}_dq",
                      **attrs)
    dq.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    w.insert_nodes([dq])
    w.replace_uses(dq.outputs[0])
    result.add_layer(LayerStat(
        name=w.label, op_type="/".join(w.op_types), shape=w.shape, bytes_before=before,
        bytes_after=q.nbytes + scale.nbytes * 5 // 4, bits=7.0 if reduce_range else 8.0,
        error=round(error, 6),
        extra={"per_channel": axis is not None, "storage": w.storage},
    ))
    return dq.outputs[0], scale


#: Folded decodes store this many scales or more in float16 even where some are not on float16's
#: grid (their Cast folds at load with the rest; the added error, 2^-11 a scale, is a few % of int8's).
FLOAT16_SCALES = 1024


def _scale_constant(b: Builder, name: str, scale: np.ndarray) -> tuple[ir.Value, list[ir.Node], np.ndarray]:
    """The float32 value of a weight's scales for a decode or a MatMulInteger: stored in float16
    behind a Cast (returned, to insert; onnxruntime folds it at load) where ``half_storable``, or
    where there are FLOAT16_SCALES of them; else a float32 constant. Also the array as stored."""
    scale = np.asarray(scale, dtype=np.float32)
    if half_storable(scale) or (scale.size >= FLOAT16_SCALES
                                and np.isfinite(scale.astype(np.float16)).all()):
        half = b.constant(f"{name}_fp16", scale.astype(np.float16))
        cast = b.node("Cast", [half], name, to=ir.DataType.FLOAT)
        cast.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
        return cast.outputs[0], [cast], scale.astype(np.float16)
    return b.constant(name, scale), [], scale


def _folded_weight(w: Weight, axis: int | None, b: Builder, result: PassResult) -> None:
    """Store ``w`` as int8; ``Cast`` + ``Mul`` by the scales restore it.

    onnxruntime constant-folds the two nodes when it loads the model, so the op sees an ordinary
    float initializer again: every float fusion and layout optimization still applies, and the
    file is 4x smaller. (A DequantizeLinear would not be folded and would cost time every run.)
    """
    dtype = w.dtype  # float32, or float16 (decoded in float32, then cast back)
    q, scale, error, before, builder = _to_int8(w, axis, False, b)
    if axis is not None and scale.ndim == 1:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = -1
        scale = scale.reshape(shape)
    _decode_folded(w, q, scale, error, before, builder, result, per_channel=axis is not None, dtype=dtype)


#: A layer row's ``decode`` folded at load: the op runs on a float weight (auto's speed guard times none).
FOLDED_DECODE = "Cast + Mul, folded at load"


def _decode_folded(w: Weight, q: np.ndarray, scale: np.ndarray, error: float, before: int,
                   b: Builder, result: PassResult, *, per_channel: bool,
                   dtype: ir.DataType = ir.DataType.FLOAT) -> None:
    """Decode ``w``'s stored int8 ``q`` by ``Cast`` + ``Mul`` by ``scale`` in front of its readers.
    Many scales (an embedding table's, one a row) are stored in float16 behind a Cast of their
    own, folded at load too: a 10000 x 8 table's float32 row scales were half its codes. A
    float16 weight is decoded in float32 and cast back: onnxruntime's CPU provider has no
    float16 Mul to fold (it would run one every call behind inserted Casts). ``dtype``: the
    weight's own, before its data became ``q``."""
    stored = insert_folded_decode(w, scale, b, dtype).nbytes
    result.add_layer(LayerStat(name=w.label, op_type="/".join(w.op_types), shape=w.shape, bytes_before=before,
                               bytes_after=q.nbytes + stored, bits=8.0, error=round(error, 6),
                               extra={"per_channel": per_channel, "storage": w.storage, "compute": "float",
                                      "decode": FOLDED_DECODE}))


def insert_folded_decode(w: Weight, scale: np.ndarray, b: Builder,
                         dtype: ir.DataType = ir.DataType.FLOAT) -> np.ndarray:
    """``Cast`` + ``Mul`` by ``scale`` (broadcasting over ``w``, whose data is int8 already) in front
    of ``w``'s readers, cast back to ``dtype``; the scales as stored."""
    scale_v, nodes, scale = _scale_constant(b, f"{w.name}_scale", scale)
    cast = b.node("Cast", [w.value], f"{w.name}_f", to=ir.DataType.FLOAT)
    mul = b.node("Mul", [cast.outputs[0], scale_v], f"{w.name}_dq")
    for n in (*nodes, cast, mul):
        n.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    _insert_decode(w, [*nodes, cast, mul], dtype, b)
    return scale


def _insert_decode(w: Weight, decode: list[ir.Node], dtype: ir.DataType, b: Builder) -> None:
    """Put a float32 ``decode`` chain in front of ``w``'s readers, cast back to float16 where
    ``dtype`` (the weight's own) is float16: onnxruntime folds the chain at load."""
    if dtype == ir.DataType.FLOAT16:
        decode = [*decode, b.node("Cast", [decode[-1].outputs[0]], f"{w.name}_half", to=dtype)]
        decode[-1].outputs[0].type = ir.TensorType(dtype)
    w.insert_nodes(decode)
    w.replace_uses(decode[-1].outputs[0])


def _exact_weight(w: Weight, axis: int | None, result: PassResult) -> bool:
    """Store ``w`` as int8 decoded by ONE ``Cast``, its per-channel scales applied to the
    consumer's output (bias divided by them): ``_kmeans_int8.rewrite``. The same int8 values
    as ``_folded_weight``, but onnxruntime folds a single node from the stored bytes without
    keeping the int8 initializer beside the float copy (Cast + Mul did: bert_tiny weights-only
    1.24x the fp32 session, ddddocr_det 1.24x, gpt_small 1.26x). False (nothing done) where
    the form does not apply: per-tensor scales, shared or transposed weights, other consumers.
    The int8 initializer is named ``<weight>.q``; the decoded tensor keeps the weight's name."""
    slot = output_scale_slot(w) if axis is not None else None
    if slot is None or not w.shape:  # per channel needs an axis (quantize_weight: 1-D scales)
        return False
    node, shape = slot
    label, op_type = w.label, "/".join(w.op_types)  # before rewrite renames the stored tensor
    q, scale, error, before = _int8_codes(w, axis, False)
    stored = rewrite(w, q, np.asarray(scale, np.float32), node, shape)
    result.add_layer(LayerStat(
        name=label, op_type=op_type, shape=tuple(q.shape), bytes_before=before,
        bytes_after=stored, bits=8.0, error=round(error, 6),
        extra={"per_channel": True, "storage": w.storage, "compute": "float",
               "decode": "Cast; channel scales on the consumer's output"},
    ))
    return True


def _to_int8(w: Weight, axis: int | None, reduce_range: bool,
             b: Builder) -> tuple[np.ndarray, np.ndarray, float, int, Builder]:
    """Replace ``w``'s data by int8 codes: (codes, scale, relative error, bytes before, a
    builder for ``w``'s graph). The float data is released as soon as it is read."""
    q, scale, error, before = _int8_codes(w, axis, reduce_range)
    builder = Builder(w.graph, b.names) if w.graph is not b.graph else b
    w.set_numpy(q)
    return q, scale, error, before, builder


# Each weight's int8 codes, computed once per pass run (``remembered_codes``): the fidelity
# guard measures the codes the writer stores (GPTQ codes with reconstruct), and the rebuilds of
# the speed and fidelity guards do not round again (a GPTQ sweep: ~0.4 s a ppocr_rec layer).
_CODES: ContextVar[dict | None] = ContextVar("onnxcompress_int8_codes", default=None)


@contextlib.contextmanager
def remembered_codes() -> Iterator[None]:
    """Within the block, ``_int8_codes`` computes each weight's codes once (by label, axis,
    range and shape)."""
    token = _CODES.set({})
    try:
        yield
    finally:
        _CODES.reset(token)


def _keeping_zeros(arr: np.ndarray, nearest: np.ndarray, rounded: np.ndarray) -> np.ndarray:
    """``rounded`` (GPTQ codes) unless they fill one of ``arr``'s exact zeros (a mel filterbank,
    a pruned layer), else ``nearest``: GPTQ's compensation spreads into the zeros, and
    audio_kws's mel MatMul before a Log moved its outputs 6.6 (relative squared) with GPTQ
    codes, 2.8e-3 rounded to nearest."""
    if rounded is nearest or np.any((arr == 0) & (rounded != 0)):
        return nearest
    return rounded


def _int8_codes(w: Weight, axis: int | None, reduce_range: bool, *, release: bool = True,
                transposed: bool = False) -> tuple[np.ndarray, np.ndarray, float, int]:
    """``w``'s int8 codes (GPTQ codes with reconstruct), scale, relative error and bytes before
    (``transposed``: of ``w``'s value transposed, a Gemm ``transB`` weight); with ``release``
    its float data is released once read (``w`` holds no data until the caller writes it) and
    its bias takes the rounding's mean shift while ``layerwise.bias.corrections`` is active."""
    memo = _CODES.get()
    key = (w.label, axis, reduce_range, tuple(w.shape), transposed)
    if memo is not None and key in memo:
        q, scale, error, before, delta = memo[key]
        q, scale = q.copy(), scale.copy()
    else:
        arr = w.numpy().T if transposed else w.numpy()
        q, scale = quantize_weight(arr, axis, reduce_range=reduce_range)
        q = _keeping_zeros(arr, q, round_int8(w, arr, q, scale, axis, reduce_range,
                                              transposed=transposed))  # GPTQ codes
        error = relative_error(arr, q, scale, axis)
        def removed() -> np.ndarray:  # old - new in w's own layout, only when asked
            diff = arr - dequantize_weight(q, scale, axis)
            return diff.T if transposed else diff

        delta = int8_correction(w, removed)
        before = w.nbytes
        del arr
        if memo is not None:
            memo[key] = (q.copy(), np.array(scale, copy=True), error, before, delta)
    if release:
        apply_int8_correction(w, delta)  # before a writer divides the bias by the scales
        w.release()
    return q, scale, error, before


@functools.lru_cache(maxsize=8)
def _missing_runtime_kernel(opset: int) -> str | None:
    """Why onnxruntime could not run Q/DQ at this opset (newer than it knows), or None."""
    import onnx
    import onnx.helper as oh

    graph = oh.make_graph(
        [oh.make_node("QuantizeLinear", ["x", "s"], ["q"]),
         oh.make_node("DequantizeLinear", ["q", "s"], ["y"])],
        "probe",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
        initializer=[oh.make_tensor("s", onnx.TensorProto.FLOAT, [], [1.0])],
    )
    probe = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    probe.ir_version = min(probe.ir_version, 10)
    try:
        session = runtime.create_session(ir.serde.deserialize_model(probe), optimize=False)
        session.run(None, {"x": np.zeros(2, np.float32)})
    except Exception as e:  # noqa: BLE001 - any failure means the kernels are not usable
        return (f"onnxruntime {ort.__version__} has no QuantizeLinear/DequantizeLinear for opset "
                f"{opset} ({runtime.first_line(e)[:80]})")
    return None


def _quantize_bias_input(u: _Unit, scale: np.ndarray, b: Builder, graph: ir.Graph) -> None:
    assert u.bias is not None
    bias = u.bias.numpy().astype(np.float32).reshape(-1)
    n = bias.size if np.ndim(scale) == 0 else np.size(scale)
    if bias.size == 1 and n > 1:
        bias = np.full(n, bias[0], dtype=np.float32)
    per_tensor = np.ndim(scale) == 0
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float32), bias.shape).copy()
    q = quantize_bias(bias, scale)
    base = u.bias.name or "bias"
    q_v = b.constant(f"{base}_q", q)
    if per_tensor:
        # A scalar scale needs no axis: per-axis DequantizeLinear only exists from opset 13.
        s_v = b.constant(f"{base}_scale", np.asarray(scale.reshape(-1)[0], dtype=np.float32))
        dq = b.node("DequantizeLinear", [q_v, s_v], f"{base}_dq")
    else:
        s_v = b.constant(f"{base}_scale", scale)
        dq = b.node("DequantizeLinear", [q_v, s_v], f"{base}_dq", axis=0)
    dq.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    graph.insert_before(u.node, [dq])
    u.node.replace_input_with(2, dq.outputs[0])
    u.bias.remove_if_unused()


def _dynamic_check(node: ir.Node, index: int, w: Weight) -> str | None:
    if index != 1:
        return "weight is the left operand"
    if len(w.shape) != 2:
        return "weight is not 2-D"
    if any(u.node.op_type != node.op_type or u.slot.role != ROLE_WEIGHT for u in w.uses):
        return "weight also used by other ops"
    if node.op_type == "Gemm":
        attrs = {k: a.value for k, a in node.attributes.items()}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
            return "Gemm with transA/alpha has no integer form"
        if w.shared:
            return "Gemm weight shared between nodes"
    x = node.inputs[0]
    if x is None or x.dtype not in (ir.DataType.FLOAT, None):
        return "input is not float32"
    if reaches_log(node):
        return ("its output goes to a Log (a spectrogram's mel filterbank): one dynamic int8 scale "
                "per input zeroes the small values the log spreads out")
    return None


def _dynamic_rewrite(w: Weight, cfg: QuantizeConfig, channelwise: bool, b: Builder,
                     shared: dict, result: PassResult) -> None:
    """X @ W -> DynamicQuantizeLinear(X); MatMulInteger(Xq, Wq, Xzp, Wzp) * (Xs * Ws)."""
    node = w.uses[0].node
    trans_b = node.op_type == "Gemm" and bool(_attr(node, "transB", 0))
    axis = 1 if channelwise else None
    q, scale, error, before = _int8_codes(w, axis, cfg.reduce_range, transposed=trans_b)
    shape = tuple(q.shape)
    users = [u.node for u in w.uses]
    base = w.name
    zp = b.constant(f"{base}_zp", np.zeros(scale.shape, dtype=np.int8))
    s_w, widen, stored_scale = _scale_constant(b, f"{base}_scale", scale)
    if widen:  # the scales' Cast, ahead of every reader (some may sit in subgraphs)
        w.graph.insert_before(next(iter(w.graph)), widen)
    w.set_numpy(q)
    for user in users:
        # The reader may sit in a Loop/Scan/If body that reads an outer-scope weight (a scripted
        # time loop): its new nodes go into the reader's graph, the codes stay where they were.
        graph = user.graph if user.graph is not None else w.graph
        x = user.inputs[0]
        key = (id(graph), id(x))
        if key not in shared:
            dql = b.node("DynamicQuantizeLinear", [x], f"{x.name}_dynamic", outputs=3)
            shared[key] = tuple(dql.outputs)
            producer = x.producer()
            if producer is not None and producer.graph is graph:
                graph.insert_after(producer, [dql])
            else:
                graph.insert_before(next(iter(graph)), [dql])
        xq, xs, xzp = shared[key]
        out = user.outputs[0]
        mmi = b.node("MatMulInteger", [xq, w.value, xzp, zp], f"{out.name}_int32")
        scales = b.node("Mul", [xs, s_w], f"{out.name}_scales")
        cast = b.node("Cast", [mmi.outputs[0]], f"{out.name}_float", to=ir.DataType.FLOAT)
        chain = [mmi, scales, cast]
        if user.op_type == "Gemm" and len(user.inputs) > 2 and user.inputs[2] is not None:
            mul = b.node("Mul", [cast.outputs[0], scales.outputs[0]], f"{out.name}_matmul")
            c = user.inputs[2]
            beta = float(_attr(user, "beta", 1.0))
            if beta != 1.0:
                beta_v = b.constant(f"{out.name}_beta", np.array(beta, dtype=np.float32))
                cb = b.node("Mul", [c, beta_v], f"{out.name}_bias")
                chain.append(cb)
                c = cb.outputs[0]
            final = b.node("Add", [mul.outputs[0], c], f"{out.name}_biased")
            chain += [mul, final]
        else:
            final = b.node("Mul", [cast.outputs[0], scales.outputs[0]], f"{out.name}_dequantized")
            chain.append(final)
        graph.insert_before(user, chain)
        new_out = final.outputs[0]
        new_out.type = out.type
        new_out.shape = out.shape
        name = out.name
        out.replace_all_uses_with(new_out, replace_graph_outputs=True)
        graph.remove(user, safe=True)
        new_out.name = name  # the output keeps its name
    result.add_layer(LayerStat(
        name=w.label, op_type="/".join(w.op_types) or "MatMul", shape=shape,
        bytes_before=before, bytes_after=q.nbytes + stored_scale.nbytes * 2,
        bits=7.0 if cfg.reduce_range else 8.0, error=round(error, 6),
        extra={"per_channel": axis is not None, "storage": w.storage, "dynamic": True},
    ))


def _decoded_source(scope: str, graph: ir.Graph, value: ir.Value, b: Builder,
                    result: PassResult) -> None:
    """Store a constant that only shape-only ops read, or a PReLU slope table (see
    ``graph.fold.decoded_in_place``) in int8 with one scale per row, and decode it (Cast * scale)
    where it was: its readers take the decoded tensor, onnxruntime folds the chain at load, the
    weight is stored once."""
    builder = Builder(graph, b.names) if graph is not b.graph else b
    arr = const_array(value)
    assert arr is not None
    q, scale = quantize_weight(arr, 0)
    error = relative_error(arr, q, scale, 0)
    before = arr.nbytes
    name = value.name or "w"
    readers = list(value.uses())  # may sit in subgraphs (a Loop body reading the outer matrix)
    producer = value.producer()
    tensor = ir.tensor(np.ascontiguousarray(q), name=name)
    if producer is not None and producer.op_type == "Constant":
        producer.attributes.clear()
        producer.attributes["value"] = ir.AttrTensor("value", tensor)
        storage = "constant"
    else:
        value.const_value = tensor
        storage = "initializer"
    value.type = ir.TensorType(ir.DataType.INT8)
    scale_v, widen, scale = _scale_constant(builder, f"{name}_scale",
                                            scale.reshape(-1, *([1] * (q.ndim - 1))))
    cast = builder.node("Cast", [value], f"{name}_f", to=ir.DataType.FLOAT)
    mul = builder.node("Mul", [cast.outputs[0], scale_v], f"{name}_dq")
    for n in (cast, mul):
        n.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    mul.outputs[0].shape = ir.Shape(q.shape)
    if storage == "constant":
        graph.insert_after(producer, [*widen, cast, mul])
    else:
        graph.insert_before(next(iter(graph)), [*widen, cast, mul])
    for user, index in readers:
        user.replace_input_with(index, mul.outputs[0])
    result.add_layer(LayerStat(
        name=f"{scope}{name}", op_type="/".join(sorted({u.op_type for u, _ in readers})),
        shape=tuple(q.shape), bytes_before=before, bytes_after=q.nbytes + scale.nbytes,
        bits=8.0, error=round(error, 6),
        extra={"per_channel": True, "storage": storage, "compute": "float",
               "decoded": "in front of its shape-only readers"},
    ))
