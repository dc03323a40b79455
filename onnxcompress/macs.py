"""Parameters and multiply-accumulates (MACs) per node, from shapes found by shape inference.

Structured pruning changes what a model costs to run, not only what it weighs; reports need both
numbers before and after. MACs are counted for the ops that dominate inference cost (Conv,
ConvTranspose, Gemm, MatMul, the three recurrent ops are not counted); elementwise ops are
ignored, as in every FLOP counter in common use. Symbolic dimensions (batch size, sequence
length), and dims written as -1 or 0, count as 1 unless ``input_shapes`` fixes them. Only the
main graph is counted: a node whose shapes cannot be inferred, or that lives in a subgraph, is
listed in ``unknown``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress.model import shape_only_proto
from onnxcompress.stats import _is_parameter
from onnxcompress.weights import iter_constant_tensors

logger = logging.getLogger(__name__)

MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass
class NodeCost:
    name: str
    op_type: str
    macs: int


@dataclass
class CostReport:
    """Parameters (elements of every parameter tensor) and MACs (per inference, batch 1)."""

    parameters: int
    macs: int
    nodes: list[NodeCost] = field(default_factory=list)
    # Compute nodes whose MACs could not be counted (shape unknown), by name.
    unknown: list[str] = field(default_factory=list)

    def by_node(self) -> dict[str, int]:
        return {n.name: n.macs for n in self.nodes}

    def to_dict(self) -> dict[str, Any]:
        return {"parameters": self.parameters, "macs": self.macs, "unknown": list(self.unknown)}


def count_parameters(model: ir.Model) -> int:
    """Elements of every constant tensor except small integer ones (shapes, axes)."""
    return sum(t.size for t in iter_constant_tensors(model) if _is_parameter(t))


def infer_shapes(
    model: ir.Model, input_shapes: Mapping[str, Sequence[int]] | None = None, *, default_dim: int = 1,
    pin: bool = True,
) -> dict[str, tuple[int | None, ...]]:
    """Static shape of every main-graph value that shape inference can resolve.

    Symbolic or unknown input dimensions become ``default_dim`` (or what ``input_shapes``
    says), so sizes that depend on them resolve to numbers. ``pin=False`` leaves them unknown
    (None): fewer sizes resolve, but none conflict where a guessed size cannot be right (a Concat
    whose width a later MatMul fixes).
    """
    proto = shape_only_proto(model)  # shapes need no weight data: no copy of the model
    initializers = {t.name for t in proto.graph.initializer}
    for vi in proto.graph.input if pin else ():
        if vi.name in initializers or not vi.type.HasField("tensor_type"):
            continue
        override = (input_shapes or {}).get(vi.name)
        dims = vi.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if override is not None and i < len(override):
                d.dim_value = int(override[i])
            elif not d.HasField("dim_value") or d.dim_value <= 0:
                d.dim_value = default_dim
    # Stale intermediate shapes would conflict with the fixed inputs: infer them afresh. Declared
    # output dims written as -1 or 0 mean "dynamic" (as for inputs): let inference fill them in.
    del proto.graph.value_info[:]
    for vi in proto.graph.output:
        if vi.type.HasField("tensor_type"):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_value") and d.dim_value <= 0:
                    d.Clear()
    # Without data propagation first: it is what Shape -> Reshape chains of torch exports need,
    # but it carries values through a compressed model's decode chains too (k-means bit planes,
    # int8 Casts: 9 s and 4 GB for one count on an 88 MB ResNet-50 in an auto plan).
    shapes = _shapes_of(_inferred(proto, data_prop=False))
    if not all(_static(shapes.get(name)) for node in proto.graph.node
               if node.op_type in MAC_OPS and node.domain in ("", "ai.onnx")
               for name in (*node.input, *node.output) if name):
        shapes = _shapes_of(_inferred(proto, data_prop=True))
    return shapes


def _shapes_of(proto: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Every main-graph value's shape in ``proto`` (None for an unknown dimension)."""
    shapes: dict[str, tuple[int | None, ...]] = {}
    for vi in (*proto.graph.input, *proto.graph.value_info, *proto.graph.output):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        shapes[vi.name] = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
            for d in vi.type.tensor_type.shape.dim
        )
    for t in proto.graph.initializer:
        shapes[t.name] = tuple(t.dims)
    for node in proto.graph.node:
        if (
            node.op_type == "Constant"
            and node.attribute
            and node.attribute[0].type == onnx.AttributeProto.TENSOR
        ):
            shapes[node.output[0]] = tuple(node.attribute[0].t.dims)
    return shapes


def _inferred(proto: onnx.ModelProto, *, data_prop: bool) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=data_prop)
    except Exception as e:  # custom ops or broken shapes: count what we can
        logger.debug("shape inference failed: %s", e)
        return proto


def _static(shape: tuple[int | None, ...] | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def node_macs(node: ir.Node, shapes: Mapping[str, tuple[int | None, ...]]) -> int | None:
    """MACs of one node (batch as in ``shapes``), or None if its shapes are unknown."""

    def shape(i: int, outputs: bool = False) -> tuple[int | None, ...] | None:
        values = node.outputs if outputs else node.inputs
        if i >= len(values) or values[i] is None:
            return None
        return shapes.get(values[i].name or "")

    op = node.op_type
    if op == "Conv":
        w, y = shape(1), shape(0, outputs=True)
        if not (_static(w) and _static(y)):
            return None
        return int(np.prod(y, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    if op == "ConvTranspose":
        x, w = shape(0), shape(1)
        if not (_static(x) and _static(w)):
            return None
        # Every input element is multiplied with a (M/group) x kernel slice of W.
        return int(np.prod(x, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    if op == "Gemm":
        a, y = shape(0), shape(0, outputs=True)
        if not (_static(a) and _static(y)) or len(a) != 2:
            return None
        attr = node.attributes.get("transA")
        k = a[0] if attr is not None and attr.value else a[1]
        return int(np.prod(y, dtype=np.int64)) * int(k)
    if op == "MatMul":
        a, b, y = shape(0), shape(1), shape(0, outputs=True)
        if not _static(y):
            return None
        # The reduction length from either operand (a constant weight's is always known).
        if a and _static(a[-1:]):
            k = a[-1]
        elif b is not None and len(b) >= 2 and _static(b[-2:-1]):
            k = b[-2]
        else:
            return None
        return int(np.prod(y, dtype=np.int64)) * int(k)
    return 0


def node_key(node: ir.Node) -> str:
    """The name a node's MACs are reported under (its name, else its first output's)."""
    return (
        node.name
        or (node.outputs[0].name if node.outputs and node.outputs[0] is not None else "")
        or node.op_type
    )


def count_macs(model: ir.Model, input_shapes: Mapping[str, Sequence[int]] | None = None) -> CostReport:
    """Parameters and MACs of ``model``, with the MACs of every compute node."""
    shapes = infer_shapes(model, input_shapes)
    unpinned: dict[str, tuple[int | None, ...]] | None = None
    report = CostReport(parameters=count_parameters(model), macs=0)
    for node in model.graph:
        if node.op_type not in MAC_OPS or node.domain not in ("", "ai.onnx"):
            continue
        name = node_key(node)
        macs = node_macs(node, shapes)
        if macs is None:
            # A guessed input size the model cannot take (inference stops at the conflict):
            # count from the shapes that hold for every input size.
            if unpinned is None:
                unpinned = infer_shapes(model, input_shapes, pin=False)
            macs = node_macs(node, unpinned)
        if macs is None:
            report.unknown.append(name)
            continue
        report.nodes.append(NodeCost(name, node.op_type, macs))
        report.macs += macs
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.graph is not model.graph and node.op_type in MAC_OPS:
            report.unknown.append(node.name or node.op_type)
    return report


def run_macs(model: ir.Model, input_shapes: Mapping[str, Sequence[int]]) -> int:
    """One run's multiply-accumulates on ``input_shapes``, 0 where they cannot be counted: what
    the checks that size their own work by it read (the int8 fidelity guard's samples, synthetic
    inputs' larger-size probes)."""
    try:
        return int(count_macs(model, input_shapes).macs)
    except Exception as e:  # noqa: BLE001 - counting only sizes a check's work
        logger.debug("MACs not counted (%s)", e)
        return 0
