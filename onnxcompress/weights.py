"""The weight index: every constant tensor that feeds a weight slot of a compute op.

Exporters put weights in different places: graph initializers, ``Constant`` nodes (Paddle and
older exporters), initializers and Constants inside ``If``/``Loop``/``Scan`` bodies, external data
files. The index finds them all and gives passes one way to read and replace them, so no pass
needs to know where an exporter put a tensor.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxcompress.graph.einsum import weight_axes
from onnxcompress.graph.scope import first_reader

logger = logging.getLogger(__name__)

FLOAT_TYPES = frozenset(
    {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE}
)

# Ops a weight may pass through on its way to the op that uses it. A chain of these with no
# other input than the weight is folded into the index entry (its consumers are beyond it).
_PASS_THROUGH_OPS = frozenset({"Identity", "Cast", "Transpose"})

ROLE_WEIGHT = "weight"  # the main parameter tensor of a compute op
ROLE_BIAS = "bias"  # added to a compute op's output
ROLE_EMBEDDING = "embedding"  # Gather table
ROLE_RECURRENT = "recurrent"  # LSTM/GRU/RNN W, R
ROLE_NORM = "norm"  # BatchNormalization/LayerNormalization parameters
ROLE_ELEMENTWISE = "elementwise"  # constant operand of Add/Mul/...
ROLE_OTHER = "other"

COMPUTE_ROLES = frozenset({ROLE_WEIGHT, ROLE_EMBEDDING, ROLE_RECURRENT})
# Weights with fewer values stay float in every uniform 8-bit (or coarser) mode: int8 or a
# codebook saves under 1.5 KB on each, and they are a stem conv or a thin depthwise, where
# rounding hurts most (PP-OCRv5 rec, int8 without data: its three under 512 values cost 2.2 of
# its 93.75% of 512 strings). One rule for int8 and k-means (k-means had 256; its files moved by
# under 0.5%, no labelled metric moved). Allocations that measure each layer go lower (k-means: 64).
SMALL_WEIGHT_VALUES = 512
# Tensor -> whether every value is finite (Weight.kept_reason), kept while the tensor lives.
_FINITE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Slot:
    """How an op uses one of its constant inputs."""

    role: str
    # Axis of the constant that indexes output channels (None: no such axis).
    out_axis: int | None = None
    # Axis of the constant that is reduced against the op's input (input channels).
    in_axis: int | None = None


def _slot_for(node: ir.Node, index: int, tensor_rank: int) -> Slot | None:
    """The role of input ``index`` of ``node`` (ONNX domain only), or None if not a weight slot."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return None
    if op in ("Conv", "ConvTranspose"):
        if index == 1:
            # Conv W is [M, C/g, k...]; ConvTranspose W is [C, M/g, k...].
            return Slot(ROLE_WEIGHT, 0, 1) if op == "Conv" else Slot(ROLE_WEIGHT, 1, 0)
        if index == 2:
            return Slot(ROLE_BIAS, 0)
    elif op == "Gemm":
        if index == 1:
            trans_b = _int_attr(node, "transB", 0)
            return Slot(ROLE_WEIGHT, 0, 1) if trans_b else Slot(ROLE_WEIGHT, 1, 0)
        if index == 0:
            trans_a = _int_attr(node, "transA", 0)
            return Slot(ROLE_WEIGHT, 1, 0) if trans_a else Slot(ROLE_WEIGHT, 0, 1)
        if index == 2:
            return Slot(ROLE_BIAS, tensor_rank - 1 if tensor_rank else None)
    elif op == "MatMul":
        if tensor_rank < 2:
            return Slot(ROLE_WEIGHT, None, 0 if index == 1 else None)
        if index == 1:
            return Slot(ROLE_WEIGHT, tensor_rank - 1, tensor_rank - 2)
        return Slot(ROLE_WEIGHT, tensor_rank - 2, tensor_rank - 1)
    elif op == "Einsum" and len(node.inputs) == 2 and index in (0, 1):
        axes = weight_axes(node, index, tensor_rank)  # from the equation: graph/einsum.py
        return None if axes is None else Slot(ROLE_WEIGHT, *axes)
    elif op == "Gather" and index == 0:
        return Slot(ROLE_EMBEDDING, 0 if _int_attr(node, "axis", 0) == 0 else None)
    elif op == "GatherND" and index == 0 and _int_attr(node, "batch_dims", 0) == 0:
        return Slot(ROLE_EMBEDDING, 0)  # torch 2.13's table[ids]: GatherND(table, Unsqueeze(ids))
    elif op in ("LSTM", "GRU", "RNN"):
        if index in (1, 2):
            return Slot(ROLE_RECURRENT, 1, 2)
        if index == 3:
            return Slot(ROLE_BIAS, 1)
    elif op in ("BatchNormalization", "InstanceNormalization") and index >= 1:
        return Slot(ROLE_NORM, 0)
    elif op in ("LayerNormalization", "GroupNormalization") and index >= 1:
        return Slot(ROLE_NORM, tensor_rank - 1 if tensor_rank else None)
    elif op == "Add" and len(node.inputs) == 2 and _produced_by_compute(node.inputs[1 - index]):
        # MatMul + Add is how most exporters write a dense layer's bias.
        return Slot(ROLE_BIAS, tensor_rank - 1 if tensor_rank else None)
    elif op in ("Add", "Sub", "Mul", "Div", "PRelu", "Where", "Max", "Min"):
        return Slot(ROLE_ELEMENTWISE, tensor_rank - 1 if tensor_rank else None)
    return None


def _produced_by_compute(value: ir.Value | None) -> bool:
    producer = value.producer() if value is not None else None
    return producer is not None and producer.op_type in ("MatMul", "Gemm", "Conv", "ConvTranspose")


def _int_attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return int(attr.value) if attr is not None else default


@dataclass(frozen=True)
class Use:
    """One consumer of a weight: ``node.inputs[index]`` is the weight (or its pass-through)."""

    node: ir.Node
    index: int
    slot: Slot


@dataclass
class Weight:
    """One constant tensor and everything a pass needs to rewrite it."""

    value: ir.Value
    graph: ir.Graph
    # "initializer" or "constant" (a Constant node's output).
    storage: str
    # "" for the main graph, else a path such as "if_node/then_branch/".
    scope: str
    uses: tuple[Use, ...]
    role: str
    out_axis: int | None
    in_axis: int | None
    # Pass-through nodes (Identity/Cast/Transpose) between the tensor and its consumers.
    via: tuple[ir.Node, ...] = field(default_factory=tuple)
    # Model-wide set of value names, shared by all entries of an index, for fresh names.
    names: set[str] = field(default_factory=set, repr=False)

    @property
    def name(self) -> str:
        return self.value.name or ""

    @property
    def label(self) -> str:
        """A name unique across subgraphs, for reports and pattern matching."""
        return f"{self.scope}{self.name}"

    @property
    def tensor(self) -> ir.TensorProtocol:
        if self.storage == "initializer":
            assert self.value.const_value is not None
            return self.value.const_value
        node = self.value.producer()
        assert node is not None
        return next(iter(node.attributes.values())).value

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.tensor.shape)

    @property
    def dtype(self) -> ir.DataType:
        return self.tensor.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.tensor.nbytes

    @property
    def is_external(self) -> bool:
        return isinstance(self.tensor, ir.ExternalTensor)

    @property
    def shared(self) -> bool:
        return len(self.uses) > 1

    @property
    def op_types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(u.node.op_type for u in self.uses))

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_TYPES

    def numpy(self) -> np.ndarray:
        return self.tensor.numpy()

    def kept_reason(self) -> str | None:
        """Why no pass may change the weight's values, or None: the graph gives it out too (int8
        gave out its codes), or it holds inf or NaN (rxnmap's -inf padding rows, a mask: no codebook,
        scale or pruning score is defined). Reads the data once per tensor (every index asks)."""
        if self.value.is_graph_output():
            return "also a graph output: given out as it is"
        if not self.is_float:
            return None
        tensor = self.tensor
        try:
            finite = _FINITE.get(tensor)
        except TypeError:  # a tensor without weak references: read each time
            finite = None
        if finite is None:
            array = self.numpy()
            finite = bool(np.isfinite(array.astype(np.float32, copy=False)).all())
            del array
            self.release()
            with contextlib.suppress(TypeError):  # a tensor without weak references: not kept
                _FINITE[tensor] = finite
        return None if finite else "holds inf or NaN values (a mask or bias table): left as it is"

    def release(self) -> None:
        """Unmap an external tensor's data once read (``model.release_external``)."""
        from onnxcompress.model import release_external

        if self.storage == "initializer":
            release_external(self.value.const_value)

    def set_numpy(self, array: np.ndarray) -> None:
        """Replace the tensor's data in place (same name; the shape may change).

        Works for initializers and Constant nodes alike; the new data is held in memory.
        """
        tensor = ir.tensor(_contiguous(array), name=self.name)
        if self.storage == "initializer":
            self.value.const_value = tensor
        else:
            node = self.value.producer()
            assert node is not None
            node.attributes.clear()
            node.attributes["value"] = ir.AttrTensor("value", tensor)
        self.value.shape = ir.Shape(array.shape)
        self.value.dtype = tensor.dtype

    def excluded_by(self, patterns: Iterable[str]) -> bool:
        """The one ``exclude`` rule of every pass: a pattern names this weight (its label or the
        last part of it) or a node that consumes it."""
        patterns = tuple(patterns)
        if not patterns:
            return False
        return matches(self.label, patterns) or any(
            u.node.name and matches(u.node.name, patterns) for u in self.uses
        )

    def fresh_name(self, hint: str) -> str:
        """A value name not yet used in the model."""
        return unique_name(self.names, hint)

    def add_constant(self, name_hint: str, array: np.ndarray) -> ir.Value:
        """A new initializer in this weight's graph (a unique name is derived from the hint)."""
        name = self.fresh_name(name_hint)
        value = ir.Value(
            name=name,
            shape=ir.Shape(array.shape),
            type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
            const_value=ir.tensor(_contiguous(array), name=name),
        )
        self.graph.register_initializer(value)
        return value

    def insert_nodes(self, nodes: Iterable[ir.Node]) -> None:
        """Insert ``nodes`` (which read only constants) before this weight's first consumer."""
        nodes = list(nodes)
        first = self.via[0] if self.via else first_reader(self.graph, (u.node for u in self.uses))
        if first is None:
            self.graph.extend(nodes)
        else:
            self.graph.insert_before(first, nodes)

    def replace_uses(self, new_value: ir.Value) -> None:
        """Make every consumer read ``new_value`` instead of this tensor, then drop the tensor."""
        target = self.value
        # The nodes that compute new_value from the old tensor (a DequantizeLinear, a Cast+Mul
        # chain...) keep reading it: rewiring them would make a cycle.
        decoders: set[int] = set()
        frontier = [new_value]
        while frontier:
            producer = frontier.pop().producer()
            if producer is None or id(producer) in decoders:
                continue
            decoders.add(id(producer))
            frontier.extend(v for v in producer.inputs if v is not None and v is not target)
        for user, index in list(target.uses()):
            if id(user) not in decoders:
                user.replace_input_with(index, new_value)
        self.remove_if_unused()

    def remove_if_unused(self) -> None:
        if self.value.uses() or self.value.is_graph_output():
            return
        if self.storage == "initializer":
            self.graph.initializers.pop(self.name, None)
        else:
            node = self.value.producer()
            if node is not None:
                self.graph.remove(node, safe=True)


def all_graphs(model: ir.Model) -> Iterator[tuple[str, ir.Graph]]:
    """(scope, graph) for the main graph and every subgraph, recursively."""

    def walk(graph: ir.Graph, scope: str) -> Iterator[tuple[str, ir.Graph]]:
        yield scope, graph
        for node in graph:
            for attr in node.attributes.values():
                if attr.type == ir.AttributeType.GRAPH:
                    yield from walk(attr.value, f"{scope}{node.name or node.op_type}/{attr.name}/")
                elif attr.type == ir.AttributeType.GRAPHS:
                    for i, g in enumerate(attr.value):
                        yield from walk(g, f"{scope}{node.name or node.op_type}/{attr.name}[{i}]/")

    yield from walk(model.graph, "")


# Ops that read an integer constant as stored codes: where they hold the weights, the model is
# already quantized (onnxruntime's quantizer, QDQ exports, 4-bit MatMulNBits). No pass
# re-compresses codes, so a pass that changed nothing says so (ddddocr's common_old.onnx: 12.9 MB
# of ConvInteger/DynamicQuantizeLSTM weights, and every pass reported only "nothing to change").
QUANTIZED_READERS = frozenset({
    "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "QGemm", "DequantizeLinear",
    "DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulNBits",
    "QAttention", "GatherBlockQuantized",
})  # fmt: skip


QUANTIZED_OPS = QUANTIZED_READERS | {"QuantizeLinear", "DynamicQuantizeLinear"}


def has_quantized_ops(model: ir.Model) -> bool:
    """Whether ``model`` computes with quantized ops (``QUANTIZED_OPS``), subgraphs included."""
    return any(node.op_type in QUANTIZED_OPS for _, graph in all_graphs(model) for node in graph)


def quantized_weights(model: ir.Model) -> dict[str, tuple[str, int]]:
    """Integer constants of at least ``SMALL_WEIGHT_VALUES`` values that a quantized op reads
    (``QUANTIZED_READERS``): label -> (the op type, bytes)."""
    found: dict[str, tuple[str, int]] = {}
    for scope, graph in all_graphs(model):
        for node in graph:
            if node.op_type not in QUANTIZED_READERS:
                continue
            for value in node.inputs:
                if value is None or f"{scope}{value.name}" in found:
                    continue
                constant = _constant_tensor_of(value)
                if constant is None or not constant[1].dtype.is_integer():
                    continue
                if constant[1].size >= SMALL_WEIGHT_VALUES:
                    found[f"{scope}{value.name}"] = (node.op_type, int(constant[1].nbytes))
    return found


def already_quantized(model: ir.Model) -> str | None:
    """"N integer weight(s) (X MB) read by OPS" when ``model``'s weights are integer codes a
    quantized op reads (``quantized_weights``), else None: what a pass or auto mode says when it
    finds nothing float to compress."""
    held = quantized_weights(model)
    if not held:
        return None
    size = sum(nbytes for _, nbytes in held.values())
    return (f"{len(held)} integer weight(s) ({size / 2**20:.1f} MB) read by "
            f"{', '.join(sorted({op for op, _ in held.values()}))}")


def unread_integer_constants(model: ir.Model) -> tuple[int, list[tuple[int, str, ir.DataType]]]:
    """The bytes of all constants, and the integer ones of SMALL_WEIGHT_VALUES values or more no
    quantized op reads (``quantized_weights``), as (bytes, scoped name, dtype), largest first."""
    read, total, found = quantized_weights(model), 0, []
    for scope, graph in all_graphs(model):
        made = [n.outputs[0] for n in graph if n.op_type == "Constant"]
        for value in [*graph.initializers.values(), *made]:
            if (constant := _constant_tensor_of(value)) is None:
                continue
            tensor, name = constant[1], f"{scope}{value.name}"
            total += tensor.nbytes
            if tensor.dtype.is_integer() and tensor.size >= SMALL_WEIGHT_VALUES and name not in read:
                found.append((tensor.nbytes, name, tensor.dtype))
    return total, sorted(found, reverse=True)


def iter_constant_tensors(model: ir.Model) -> Iterator[ir.TensorProtocol]:
    """Every initializer and Constant-node tensor, subgraphs included."""
    for _, graph in all_graphs(model):
        for value in graph.initializers.values():
            if value.const_value is not None:
                yield value.const_value
        for node in graph:
            if node.op_type == "Constant" and node.domain == "":
                for attr in node.attributes.values():
                    if attr.type == ir.AttributeType.TENSOR:
                        yield attr.value


def model_names(model: ir.Model) -> set[str]:
    """Every value name used anywhere in the model (subgraphs included)."""
    names: set[str] = set()
    for _, graph in all_graphs(model):
        names.update(v.name for v in graph.inputs if v.name)
        names.update(graph.initializers)
        for node in graph:
            names.update(v.name for v in node.outputs if v.name)
    return names


def unique_name(taken: set[str], hint: str) -> str:
    """``hint``, or ``hint_1``, ``hint_2``... whichever is free; the result is marked taken."""
    name, i = hint, 0
    while name in taken:
        i += 1
        name = f"{hint}_{i}"
    taken.add(name)
    return name


def _constant_tensor_of(value: ir.Value) -> tuple[str, ir.TensorProtocol] | None:
    if value.const_value is not None and value.is_initializer():
        return "initializer", value.const_value
    node = value.producer()
    if (
        node is not None
        and node.op_type == "Constant"
        and node.domain == ""
        and len(node.attributes) == 1
        and "value" in node.attributes
        and not node.attributes["value"].is_ref()
    ):
        return "constant", node.attributes["value"].value
    return None


def _follow_pass_through(
    value: ir.Value,
) -> tuple[list[tuple[ir.Node, int]], tuple[ir.Node, ...], list[int] | None]:
    """Final consumers of ``value`` past single-input Identity/Cast/Transpose chains.

    Returns (uses, via-nodes, permutation from the final tensor's axes to the source's axes).
    Only a single linear chain is followed; anything else returns the direct uses.
    """
    uses = list(value.uses())
    via: list[ir.Node] = []
    perm: list[int] | None = None
    while (
        len(uses) == 1
        and uses[0][0].op_type in _PASS_THROUGH_OPS
        and uses[0][0].domain == ""
        and len(uses[0][0].outputs) == 1
        and not uses[0][0].outputs[0].is_graph_output()
    ):
        node = uses[0][0]
        if node.op_type == "Transpose":
            attr = node.attributes.get("perm")
            if attr is None:
                return list(value.uses()), (), None
            p = list(attr.value)
            perm = p if perm is None else [perm[i] for i in p]
        via.append(node)
        uses = list(node.outputs[0].uses())
    if not via:
        return uses, (), None
    return uses, tuple(via), perm


class WeightIndex:
    """Every constant tensor that feeds a weight slot, in graph order, subgraphs included.

    Build it with ``WeightIndex.build(model)``; rebuild after a pass rewrites the graph.
    """

    def __init__(self, weights: list[Weight]) -> None:
        self._weights = weights

    @classmethod
    def build(cls, model: ir.Model) -> WeightIndex:
        weights: list[Weight] = []
        seen: set[int] = set()
        names = model_names(model)
        for scope, graph in all_graphs(model):
            candidates: list[tuple[ir.Value, str]] = [
                (v, "initializer") for v in graph.initializers.values()
            ]
            candidates += [
                (node.outputs[0], "constant")
                for node in graph
                if node.op_type == "Constant" and node.domain == "" and len(node.outputs) == 1
            ]
            for value, _ in candidates:
                if id(value) in seen:
                    continue
                seen.add(id(value))
                weight = _index_entry(value, graph, scope)
                if weight is not None:
                    weight.names = names
                    weights.append(weight)
        return cls(weights)

    def __iter__(self) -> Iterator[Weight]:
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)

    def __getitem__(self, label: str) -> Weight:
        for w in self._weights:
            if w.label == label or w.name == label:
                return w
        raise KeyError(label)

    def select(
        self,
        *,
        roles: Iterable[str] | None = None,
        op_types: Iterable[str] | None = None,
        float_only: bool = True,
        min_size: int = 0,
    ) -> list[Weight]:
        roles = set(roles) if roles is not None else None
        op_types = set(op_types) if op_types is not None else None
        out = []
        for w in self._weights:
            if roles is not None and w.role not in roles:
                continue
            if op_types is not None and not (set(w.op_types) & op_types):
                continue
            if float_only and not w.is_float:
                continue
            if w.size < min_size:
                continue
            out.append(w)
        return out


def _index_entry(value: ir.Value, graph: ir.Graph, scope: str) -> Weight | None:
    found = _constant_tensor_of(value)
    if found is None:
        return None
    storage, tensor = found
    raw_uses, via, perm = _follow_pass_through(value)
    rank = len(tensor.shape)
    uses: list[Use] = []
    for node, index in raw_uses:
        slot = _slot_for(node, index, rank)
        if slot is None:
            continue
        if perm is not None:
            # The slot's axes refer to the transposed tensor; map them back to the source.
            slot = Slot(
                slot.role,
                perm[slot.out_axis] if slot.out_axis is not None else None,
                perm[slot.in_axis] if slot.in_axis is not None else None,
            )
        uses.append(Use(node, index, slot))
    if not uses:
        return None
    # The most specific role wins: a tensor used as a Conv weight and by an Add is a weight.
    order = [ROLE_WEIGHT, ROLE_EMBEDDING, ROLE_RECURRENT, ROLE_BIAS, ROLE_NORM, ROLE_ELEMENTWISE]
    primary = min(uses, key=lambda u: order.index(u.slot.role) if u.slot.role in order else 99)
    if len(raw_uses) != len(uses):
        # Other consumers read it as a plain constant (shape, mask...): it is not only a weight.
        uses = uses + [
            Use(n, i, Slot(ROLE_OTHER)) for n, i in raw_uses if _slot_for(n, i, rank) is None
        ]
    return Weight(
        value=value,
        graph=graph,
        storage=storage,
        scope=scope,
        uses=tuple(uses),
        role=primary.slot.role,
        out_axis=primary.slot.out_axis,
        in_axis=primary.slot.in_axis,
        via=via,
    )


def matches(label: str, patterns: Iterable[str]) -> bool:
    """True if ``label`` or its last path part matches any name or shell-style pattern."""
    short = label.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(label, p) or fnmatch.fnmatchcase(short, p) for p in patterns)


def _contiguous(array: np.ndarray) -> np.ndarray:
    """``array`` C-contiguous with its shape: ``np.ascontiguousarray`` makes a 0-d array 1-d,
    which onnxruntime refuses against the value's declared scalar shape (a scalar Constant
    weight exposed by ``_bit_allocation.expose_weights``: ppocr_rec's probe failed on it)."""
    return np.ascontiguousarray(array).reshape(np.shape(array))
