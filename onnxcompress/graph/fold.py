"""Fold shape-only ops over constants into the constants, so the weights behind them are weights.

Exporters often put a weight behind ops that only move its values: an LSTM cell exported as one
matrix ``Slice``d or ``Split`` into gates, a weight ``Reshape``d, ``Squeeze``d or ``Unsqueeze``d
before its MatMul, a ``Concat`` of constants, a ``Gather`` of constant rows. The compute op then
reads a computed tensor, not a constant, so no pass could compress it (half of one audio model
stayed fp32). onnxruntime folds these ops at load anyway; doing it first, where the result feeds
a weight slot, makes every pass see one weight per consumer.

A node is folded only when every input is a constant, its data is float, at least one output
reaches a compute op's weight slot (directly or through other foldable or pass-through ops), no
output is a graph output, and the file does not grow: the folded outputs may not be larger than
the inputs that become unused (plus a small allowance for index and shape constants).

A ``Transpose`` of a constant is folded the same way where it is the constant's only reader and
its result reaches a weight slot: a weight read through one Transpose by several compute ops (a
block applied several times: torch 2.13's export of Fracast's shared FFN, one Transpose read by 10
MatMuls) is a weight no pass-through chain explains (``Weight.via`` follows one reader), and int8
and auto left it float.

A ``Shape`` or ``Size`` of a constant is replaced by its value first (:func:`fold_constant_shapes`),
so a weight copy kept only for its shape goes, and a ``QuantizeLinear`` of a float constant by its
integer result (:func:`fold_constant_quantize`: an author's QDQ export that kept its weights float).

A constant ``Slice`` or ``Gather`` that keeps at most half of a float constant it alone reads is
folded wherever its result goes (:func:`_drops_most_of`): a positional table exported whole and
sliced to the sequence length (m6AFormer: ``pe[:, :100]`` of a [4096, 128] table, 2 MB of its
5 MB file, 97.6% never read), whose stored rows no pass compresses. onnxruntime folds it at load.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)

# Ops that only select, reorder or reshape their data input's values.
SHAPE_ONLY_OPS = frozenset(
    {"Slice", "Split", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Gather", "Flatten"}
)
# Arithmetic a weight is computed by from constants alone: weight normalisation, which torch 2.13
# exports as its parametrization (W = g * v / ||v||: a pitch model's output projection, every conv
# of a vocoder), left the weight fp32 in every pass ("elementwise constant: not a layer weight").
WEIGHT_ARITHMETIC_OPS = frozenset({"Mul", "Div", "Add", "Sub", "ReduceL2", "Sqrt", "Pow", "Neg", "Abs"})
# Ops a weight reaches its consumer through without being "used" (see weights._PASS_THROUGH_OPS).
_PASS_THROUGH_OPS = frozenset({"Identity", "Cast", "Transpose"})
# Ops that only select, reshape or broadcast a value: what an RNN's state passes through after
# its Loop (auto.measure), what a positional table passes through to its Add (_float_rest).
SELECTION_OPS = SHAPE_ONLY_OPS | _PASS_THROUGH_OPS | {"Expand"}
# Compute op -> input indices that hold weights.
_WEIGHT_SLOTS = {
    "MatMul": (0, 1), "Gemm": (0, 1), "Conv": (1,), "ConvTranspose": (1,),
    "LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2), "Gather": (0,), "Einsum": (0, 1),
}
# Folding may add this many bytes beyond what it frees (small index/shape constants).
_GROWTH_ALLOWANCE = 4096
# Selections folded wherever their result goes when they drop most of a constant (_drops_most_of).
_DROPPING_OPS = frozenset({"Slice", "Gather"})
# Layout ops folded into a constant they alone read (see the module docstring).
_FOLDED_LAYOUT_OPS = frozenset({"Transpose"})
_FLOAT_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE})


def fold_shape_only_weights(model: ir.Model) -> int:
    """Fold foldable shape-only nodes (see the module docstring) in every graph; returns how many."""
    from onnxcompress.weights import all_graphs  # weights imports this package's users

    opset = model.opset_imports.get("", 1)
    folded = 0
    for _, graph in list(all_graphs(model)):
        changed = True
        while changed:  # a fold can make the next node of a chain foldable
            changed = False
            for node in list(graph):
                if _fold_node(graph, node, opset):
                    folded += 1
                    changed = True
    return folded


#: Constants at least this large whose shape a Shape/Size node reads get that read folded.
SHAPE_READ_MIN_BYTES = 1024


def fold_constant_shapes(model: ir.Model) -> int:
    """Replace ``Shape``/``Size`` of a constant (of >= SHAPE_READ_MIN_BYTES) by its value, and drop
    the constant when nothing else reads it; returns how many nodes were folded. tf2onnx leaves
    copies of weights that only a Shape reads (batch 7's g2p BERT: 7 tensors, 37% of its weights,
    stored float32 by every pass and named by none); onnxruntime folds them at load anyway."""
    from onnxcompress.weights import all_graphs

    folded = 0
    for _, graph in list(all_graphs(model)):
        for node in list(graph):
            if node.op_type not in ("Shape", "Size") or node.domain not in ("", "ai.onnx") \
                    or not node.inputs or node.outputs[0].is_graph_output():
                continue
            value = node.inputs[0]
            tensor = _const_tensor(value)
            if tensor is None or value.is_graph_input() or tensor.nbytes < SHAPE_READ_MIN_BYTES:
                continue
            dims = [int(d) for d in tensor.shape]
            if node.op_type == "Size":
                result = np.array(int(np.prod(dims, dtype=np.int64)), np.int64)
            else:
                start, end = (node.attributes.get(k) for k in ("start", "end"))
                lo = int(start.value) if start is not None else 0
                hi = int(end.value) if end is not None else len(dims)
                result = np.array(dims[slice(lo, hi)], np.int64)
            _replace(graph, node, [result])
            folded += 1
    return folded


def fold_constant_quantize(model: ir.Model) -> int:
    """Replace each ``QuantizeLinear`` of a float constant by its integer result, as onnxruntime
    folds it at load (onnx's reference implementation: the spec's rounding and saturation); returns
    how many. An author's QDQ export may keep its weights float behind their quantizer: Qualcomm
    AI Hub's YAMNet stored 14.3 MB of float weights that every pass left float (1.00x in every
    configuration); as the integer tensors the model computes with, 3.88x, the same outputs."""
    from onnxcompress.weights import all_graphs

    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
    folded = 0
    for _, graph in list(all_graphs(model)):
        for node in list(graph):
            if node.op_type != "QuantizeLinear" or node.domain not in ("", "ai.onnx") \
                    or any(o.is_graph_output() for o in node.outputs):
                continue
            arrays = [_const_array(v) for v in node.inputs]
            if not arrays or arrays[0] is None or arrays[0].dtype.kind != "f" \
                    or any(a is None for a, v in zip(arrays, node.inputs, strict=True) if v is not None):
                continue
            results = _evaluate(node, arrays, opset)
            if results is not None and all(r.dtype.kind in "iu" for r in results):
                _replace(graph, node, results)
                folded += 1
    return folded


def _const_tensor(value: ir.Value | None) -> ir.TensorProtocol | None:
    """The tensor of a constant (an initializer or a Constant node's), its data unread."""
    if value is None:
        return None
    if value.const_value is not None and value.is_initializer():
        return value.const_value
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and producer.domain in ("", "ai.onnx"):
        attr = producer.attributes.get("value")
        if attr is not None and attr.type == ir.AttributeType.TENSOR:
            return attr.value
    return None


def _const_array(value: ir.Value | None) -> np.ndarray | None:
    tensor = _const_tensor(value)
    return None if tensor is None else tensor.numpy()


def loop_carried(user: ir.Node, index: int) -> ir.Value | None:
    """The body input through which a ``Loop`` hands its input ``index`` to every iteration
    (a loop-carried value, index >= 2: inputs are M, cond, then the carried values, as the
    body's are iteration, cond, carried), or None, also where the body updates the value. Paddle's
    exporter passes a decoder's weights into its Loop this way (SLANet: 2.1 MB of GRU and linear
    weights)."""
    if user.op_type != "Loop" or user.domain not in ("", "ai.onnx") or index < 2:
        return None
    body = user.attributes.get("body")
    if body is None or body.type != ir.AttributeType.GRAPH:
        return None
    inputs, outputs = body.value.inputs, body.value.outputs
    if index >= len(inputs) or index - 1 >= len(outputs):
        return None
    # A weight is passed on unchanged (the body's carried output is its input, or an Identity
    # of it); a state the body updates (a scripted RNN's hidden state, zeros at the start) is
    # not a weight, however it is read (batch 17: a 1 x 64 zero state k-means-2'd by auto).
    out = outputs[index - 1]
    producer = out.producer()
    if out is not inputs[index] and not (
        producer is not None and producer.op_type == "Identity" and producer.inputs[0] is inputs[index]
    ):
        return None
    return inputs[index]


def _reaches_weight_slot(value: ir.Value, depth: int = 0) -> bool:
    if depth > 8:
        return False
    for user, index in value.uses():
        if user.domain not in ("", "ai.onnx"):
            continue
        if index in _WEIGHT_SLOTS.get(user.op_type, ()):
            return True
        carried = loop_carried(user, index)
        if carried is not None and _reaches_weight_slot(carried, depth + 1):
            return True
        # Through a chain: the data input of a shape-only op (any input of a Concat), arithmetic
        # over constants (a weight normalisation's).
        moves_values = (user.op_type in SHAPE_ONLY_OPS and (index == 0 or user.op_type == "Concat")) or (
            user.op_type in _PASS_THROUGH_OPS
        ) or user.op_type in WEIGHT_ARITHMETIC_OPS and all(
            x is not None and computed_from_constants(x) for x in user.inputs)
        if moves_values and any(_reaches_weight_slot(out, depth + 1) for out in user.outputs):
            return True
    return False


def _bytes_freed(node: ir.Node) -> int:
    """Bytes of the node's constant inputs that nothing else reads."""
    freed = 0
    for value in dict.fromkeys(v for v in node.inputs if v is not None):
        if value.is_graph_output() or any(user is not node for user, _ in value.uses()):
            continue
        array = _const_array(value)
        if array is not None:
            freed += array.nbytes
    return freed


def _fold_node(graph: ir.Graph, node: ir.Node, opset: int) -> bool:
    if node.op_type in _FOLDED_LAYOUT_OPS and node.inputs and node.inputs[0] is not None \
            and any(user is not node for user, _ in node.inputs[0].uses()):
        return False  # a weight also read as it is stays one weight (``Weight.via``)
    results = _foldable_results(node, opset)
    if results is None:
        results = _drops_most_of(node, opset)
        if results is None:
            return False
        _replace(graph, node, results)
        return True
    if sum(r.nbytes for r in results) <= _bytes_freed(node) + _GROWTH_ALLOWANCE:
        _replace(graph, node, results)
        return True
    return _fold_readers_together(node, opset)


def _drops_most_of(node: ir.Node, opset: int) -> list[np.ndarray] | None:
    """The outputs of a ``Slice``/``Gather`` over constants that reaches no weight slot, when it
    is its float data's only reader and keeps at most half of it (and frees more than the index
    constants' allowance); else None. What it keeps is read as before, the rest was never read."""
    if node.op_type not in _DROPPING_OPS or node.domain not in ("", "ai.onnx"):
        return None
    data = node.inputs[0] if node.inputs else None
    if data is None or data.is_graph_output() or any(user is not node for user, _ in data.uses()):
        return None
    if any(out.is_graph_output() for out in node.outputs):
        return None
    tensors = [_const_tensor(v) for v in node.inputs if v is not None]  # data unread so far
    if any(t is None for t in tensors) or tensors[0].dtype not in _FLOAT_TYPES:
        return None
    if tensors[0].nbytes <= 2 * _GROWTH_ALLOWANCE:
        return None
    arrays = [_const_array(v) if v is not None else None for v in node.inputs]
    results = _evaluate(node, arrays, opset)
    if results is None or 2 * sum(r.nbytes for r in results) > arrays[0].nbytes:
        return None
    return results


def _foldable_results(node: ir.Node, opset: int) -> list[np.ndarray] | None:
    """The node's folded outputs when it may be folded (size aside), else None."""
    if node.op_type not in SHAPE_ONLY_OPS | WEIGHT_ARITHMETIC_OPS | _FOLDED_LAYOUT_OPS \
            or node.domain not in ("", "ai.onnx"):
        return None
    if not node.inputs or node.inputs[0] is None:
        return None
    if any(out.is_graph_output() for out in node.outputs):
        return None
    arrays = [_const_array(v) if v is not None else None for v in node.inputs]
    if any(a is None for a, v in zip(arrays, node.inputs, strict=True) if v is not None):
        return None
    # Only weights: the data input (every input of a Concat or of arithmetic) is float.
    data_arrays = arrays if node.op_type == "Concat" else arrays[:1]
    if node.op_type in WEIGHT_ARITHMETIC_OPS:  # (ReduceL2's axes and Pow's exponent aside)
        data_arrays = arrays[:1] if node.op_type in ("ReduceL2", "Pow") else arrays
    if not all(a is not None and a.dtype.kind == "f" for a in data_arrays):
        return None
    if not any(_reaches_weight_slot(out) for out in node.outputs):
        return None
    return _evaluate(node, arrays, opset)


def _fold_readers_together(node: ir.Node, opset: int) -> bool:
    """A weight read by several shape-only nodes (an LSTM matrix sliced into reordered gates,
    perhaps in both branches of an If): none frees the weight alone, all of them together do.
    Folded together when every reader folds and their outputs are not larger than the weight."""
    data = node.inputs[0]
    if data is None or data.is_graph_output():
        return False
    readers = list(dict.fromkeys(user for user, _ in data.uses()))
    if len(readers) < 2 or any(r.graph is None for r in readers):
        return False
    folds = []
    for reader in readers:
        results = _foldable_results(reader, opset)
        if results is None:
            return False
        folds.append((reader, results))
    array = _const_array(data)
    total = sum(r.nbytes for _, results in folds for r in results)
    if array is None or total > array.nbytes + _GROWTH_ALLOWANCE * len(readers):
        return False
    for reader, results in folds:
        _replace(reader.graph, reader, results)
    return True


def _replace(graph: ir.Graph, node: ir.Node, results: list[np.ndarray]) -> None:
    """Replace ``node`` by initializers holding its outputs; drop inputs nothing reads anymore."""
    inputs = list(dict.fromkeys(v for v in node.inputs if v is not None))
    replacements = []
    for out, array in zip(node.outputs, results, strict=False):
        name = out.name
        new = ir.Value(
            name=None,
            shape=ir.Shape(array.shape),
            type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
            const_value=ir.tensor(np.ascontiguousarray(array)),
        )
        out.replace_all_uses_with(new)
        replacements.append((name, new))
    graph.remove(node, safe=True)
    for name, new in replacements:
        if not new.uses():
            continue  # an unused Split output
        new.name = name
        new.const_value.name = name
        graph.register_initializer(new)
    for value in inputs:
        _drop_if_unused(value.graph or graph, value)
    logger.debug("Folded %s node %r over constants.", node.op_type, node.name)


def _drop_if_unused(graph: ir.Graph, value: ir.Value) -> None:
    if value.uses() or value.is_graph_output():
        return
    if value.is_initializer() and value.name in graph.initializers:
        graph.initializers.pop(value.name)
        return
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and producer.graph is not None:
        producer.graph.remove(producer, safe=True)


def _evaluate(node: ir.Node, arrays: list[np.ndarray | None], opset: int) -> list[np.ndarray] | None:
    """The node's outputs by onnx's reference implementation (all opset variants of these ops)."""
    from onnx.reference import ReferenceEvaluator

    proto = ir.serde.serialize_node(node)
    feeds = {}
    for name, array in zip(proto.input, arrays, strict=False):
        if name and array is not None:
            feeds[name] = array
    try:
        return [np.asarray(r) for r in ReferenceEvaluator(proto, opsets={"": opset}).run(None, feeds)]
    except Exception as e:  # an op variant the reference cannot run: leave the node as it is
        logger.debug("Cannot fold %s node %r: %s", node.op_type, node.name, e)
        return None


def _constant_values(graph: ir.Graph) -> list[ir.Value]:
    """``graph``'s initializers and Constant nodes' outputs, those that are not graph inputs or
    outputs: the constants a pass may compress where they are."""
    values = list(graph.initializers.values())
    values += [n.outputs[0] for n in graph if n.op_type == "Constant" and n.domain in ("", "ai.onnx")]
    return [v for v in values if not (v.is_graph_output() or v.is_graph_input())]


def shape_read_weights(model: ir.Model, min_size: int = 0) -> list[tuple[str, ir.Graph, ir.Value]]:
    """(scope, graph, value) of every float constant left unfolded whose readers all only move its
    values (several overlapping Slices of one LSTM matrix: folding them would grow the file; a
    Loop carrying it into every iteration: ``loop_carried``) and lead to a weight slot. A pass
    may compress it in place and decode it in front of them."""
    from onnxcompress.weights import all_graphs

    found = []
    for scope, graph in all_graphs(model):
        for value in _constant_values(graph):
            uses = list(value.uses())
            if not uses or not all(
                user.domain in ("", "ai.onnx")
                and user.op_type in SHAPE_ONLY_OPS
                and (index == 0 or user.op_type == "Concat")
                or loop_carried(user, index) is not None
                for user, index in uses
            ) or not _reaches_weight_slot(value):
                continue
            array = _const_array(value)  # read only now: an external model's other weights stay unread
            if array is not None and array.dtype == np.float32 and array.ndim >= 2 and array.size >= min_size:
                found.append((scope, graph, value))
            del array
    return found


# What tf2onnx puts between Relu(Neg(x)) and its slopes' Mul (NHWC <-> NCHW).
_LAYOUT_OPS = _PASS_THROUGH_OPS | {"Reshape", "Squeeze", "Unsqueeze"}
# A slope table holds a learned value for each position and channel: fewer values a row (axis 0,
# where int8 puts a scale and k-means decodes from), or fewer in all, and it is a per-channel
# PReLU's few hundred bytes (palmdet's 26 of [1, C, 1, 1]: at 4 bits they cost detection F1 and
# saved 9 KB of 540).
SLOPE_MIN_ROW = 16
SLOPE_MIN_SIZE = 4096


def slope_tables(model: ir.Model, min_size: int = 0) -> list[tuple[str, ir.Graph, ir.Value]]:
    """(scope, graph, value) of every float constant that is a PReLU's learned slopes: the slope
    input of ``PRelu``, or the table tf2onnx multiplies ``Relu(Neg(x))`` by when it spells a
    Keras PReLU as ``Relu(x) - alpha * Relu(-x)``. Per-position slopes are large (MEGnet's
    [120, 120, 47] and 30 more: 22% of its weights, left float32 as "elementwise constant": int8
    and k-means 8 at 2.39x). A pass may compress it in place and decode it in front of them, as
    it does :func:`shape_read_weights`."""
    from onnxcompress.weights import all_graphs

    found = []
    for scope, graph in all_graphs(model):
        for value in _constant_values(graph):
            uses = list(value.uses())
            if not uses or not all(_reads_slopes(user, index) for user, index in uses):
                continue
            tensor = _const_tensor(value)
            shape = tuple(tensor.shape) if tensor is not None else ()
            if (tensor is not None and tensor.dtype == ir.DataType.FLOAT and len(shape) >= 2
                    and tensor.size >= max(min_size, SLOPE_MIN_SIZE)
                    and tensor.size // max(shape[0], 1) >= SLOPE_MIN_ROW):
                found.append((scope, graph, value))
    return found


def _reads_slopes(node: ir.Node, index: int) -> bool:
    """Whether input ``index`` of ``node`` is a PReLU's slopes (see :func:`slope_tables`)."""
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "PRelu":
        return index == 1
    if node.op_type != "Mul" or len(node.inputs) != 2:
        return False
    other = node.inputs[1 - index]
    producer = other.producer() if other is not None else None
    while producer is not None and producer.op_type in _LAYOUT_OPS and producer.inputs:
        producer = producer.inputs[0].producer() if producer.inputs[0] is not None else None
    if producer is None or producer.op_type != "Relu" or producer.inputs[0] is None:
        return False
    negated = producer.inputs[0].producer()
    return negated is not None and negated.op_type == "Neg"


def decoded_in_place(model: ir.Model, min_size: int = 0) -> list[tuple[str, ir.Graph, ir.Value]]:
    """The constants outside the weight index that a weight pass compresses where they are and
    decodes in front of their readers: :func:`shape_read_weights`, :func:`slope_tables` and the
    tables only onnxruntime's own ops read (``graph.foreign.runtime_tables``)."""
    from onnxcompress.graph.foreign import runtime_tables

    return [*shape_read_weights(model, min_size), *slope_tables(model, min_size),
            *runtime_tables(model, min_size)]


def computed_from_constants(value: ir.Value | None, depth: int = 12) -> bool:
    """Whether ``value`` is a constant or computed from constants alone (within ``depth`` ops,
    no subgraph op): what onnxruntime folds at load, e.g. a k-means decode's indices."""
    if value is None or value.const_value is not None:
        return value is not None
    node = value.producer()
    if node is None or depth == 0 or node.op_type in ("Loop", "Scan", "If"):
        return False
    return all(computed_from_constants(x, depth - 1) for x in node.inputs if x is not None)
