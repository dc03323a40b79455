"""Channel dependency analysis for structured pruning: which constants shrink together.

Removing output channel ``c`` of a Conv is only correct if every tensor that carries that channel
shrinks the same way: the BatchNormalization parameters after it, per-channel constants of
activations, the input channels of every consumer, the other branch of a residual Add, the
offset range of a Concat, the rows of a Gemm behind a Flatten. This module finds those
dependencies in one forward walk over the main graph:

- A *space* is the output-channel axis of one compute op with a constant weight (Conv,
  ConvTranspose, Gemm, MatMul). Ops that tie the channels of two tensors index by index
  (residual Add, Mul of two branches) join their spaces (union-find); a joined set is a *group*,
  whose channels are removed together from every producer.
- Every activation gets a :class:`Layout`: its channel axis, the spaces along that axis in order
  (Concat makes several) and ``block``, the elements per channel once Flatten/Reshape merged
  trailing axes into the channel axis.
- Every constant that must shrink with a group is recorded as a *cut* (constant, axis, layout);
  depthwise ``group`` attributes and channel counts written in Reshape shapes are recorded as
  fixes.
- Anything not proven safe *freezes* the groups involved, with a reason: graph outputs, unknown
  ops, custom domains, subgraph boundaries, shape ops reading the channel count, grouped convs,
  shared weights, layouts that do not line up.
- On the way, per-channel samples of BatchNormalization outputs (N(shift, scale^2) on the data
  the model was trained on) are pushed through the elementwise ops, which gives every consumer
  an estimate of its input channels' mean and energy when there is no calibration data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxcompress.weights import ROLE_OTHER, Weight, WeightIndex, matches, unique_name

logger = logging.getLogger(__name__)

Shapes = Mapping[str, tuple[int | None, ...]]

# One input, same shape out, channels untouched (extra inputs must be constants).
UNARY_OPS = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Clip",
        "Elu",
        "Selu",
        "Celu",
        "Softplus",
        "Softsign",
        "Gelu",
        "Erf",
        "Exp",
        "Log",
        "Neg",
        "Abs",
        "Sqrt",
        "Reciprocal",
        "Identity",
        "Dropout",
        "Cast",
        "Mish",
        "ThresholdedRelu",
        "Sin",
        "Cos",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Not",
        "IsNaN",
        "IsInf",
        "Swish",
    }
)
# Elementwise with numpy broadcasting.
ELEMENTWISE_OPS = frozenset(
    {
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Max",
        "Min",
        "Sum",
        "Mean",
        "Where",
        "PRelu",
        "Equal",
        "Less",
        "Greater",
        "LessOrEqual",
        "GreaterOrEqual",
        "And",
        "Or",
        "Xor",
        "Mod",
    }
)
POOL_OPS = frozenset(
    {
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "LpPool",
        "GlobalLpPool",
    }
)
REDUCE_OPS = frozenset(
    {
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSumExp",
        "ReduceSumSquare",
        "ReduceLogSum",
    }
)


@dataclass(frozen=True)
class Layout:
    """How channels sit in an activation: ``spaces`` along ``axis``, ``block`` elements each."""

    axis: int
    rank: int
    spaces: tuple[int, ...]
    block: int = 1


@dataclass
class Producer:
    """A compute weight whose output channels (``axis``) form ``space``."""

    weight: Weight
    axis: int
    space: int
    node: ir.Node


@dataclass
class Consumer:
    """A compute weight whose input-channel axis reads channels laid out as ``spaces``."""

    weight: Weight
    axis: int
    spaces: tuple[int, ...]
    block: int
    node: ir.Node


@dataclass
class Group:
    """Spaces whose channels are removed together."""

    root: int
    size: int
    spaces: list[int]
    frozen: list[str]
    producers: list[Producer]
    consumers: list[Consumer]


@dataclass
class _ConstEdit:
    value: ir.Value
    user: ir.Node
    index: int
    edit: Callable[[np.ndarray], np.ndarray]


@dataclass
class ChannelGraph:
    """The dependency analysis of one model: spaces, groups, and what shrinks with them."""

    model: ir.Model
    sizes: list[int] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    reasons: dict[int, list[str]] = field(default_factory=dict)
    producers: list[Producer] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)
    # (weight, axis, spaces, block): slices of compute weights besides producers/consumers
    # (depthwise conv weights and conv biases follow their channels).
    weight_cuts: list[tuple[Weight, int, tuple[int, ...], int]] = field(default_factory=list)
    # (constant value, user node, input index, axis, spaces, block)
    const_cuts: list[tuple[ir.Value, ir.Node, int, int, tuple[int, ...], int]] = field(default_factory=list)
    # (node, spaces): depthwise convs whose ``group`` equals their channel count
    group_fixes: list[tuple[ir.Node, tuple[int, ...]]] = field(default_factory=list)
    # (shape constant, Reshape node, position, spaces, multiplier)
    shape_fixes: list[tuple[ir.Value, ir.Node, int, tuple[int, ...], int]] = field(default_factory=list)
    # space -> per-channel output scale of the BatchNormalization right after its producer
    bn_scale: dict[int, np.ndarray] = field(default_factory=dict)
    # weight label -> (mean, mean square) per input feature, estimated without data from the
    # BatchNormalization statistics upstream (see _Analyzer.samples)
    bn_input_stats: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    layouts: dict[ir.Value, Layout] = field(default_factory=dict)

    # -- union-find ----------------------------------------------------------------------------

    def new_space(self, size: int, reason: str | None = None) -> int:
        self.sizes.append(size)
        self.parent.append(len(self.parent))
        space = len(self.sizes) - 1
        if reason:
            self.freeze(space, reason)
        return space

    def find(self, space: int) -> int:
        root = space
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[space] != root:
            self.parent[space], space = root, self.parent[space]
        return root

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if self.sizes[ra] != self.sizes[rb]:
            return False
        self.parent[rb] = ra
        if rb in self.reasons:
            self.reasons.setdefault(ra, []).extend(self.reasons.pop(rb))
        return True

    def freeze(self, space: int, reason: str) -> None:
        reasons = self.reasons.setdefault(self.find(space), [])
        if reason not in reasons:
            reasons.append(reason)

    def freeze_layout(self, layout: Layout | None, reason: str) -> None:
        if layout is not None:
            for s in layout.spaces:
                self.freeze(s, reason)

    def groups(self) -> dict[int, Group]:
        out: dict[int, Group] = {}
        for space in range(len(self.sizes)):
            root = self.find(space)
            g = out.get(root)
            if g is None:
                g = out[root] = Group(root, self.sizes[root], [], list(self.reasons.get(root, [])), [], [])
            g.spaces.append(space)
        for p in self.producers:
            out[self.find(p.space)].producers.append(p)
        for c in self.consumers:
            for root in {self.find(s) for s in c.spaces}:
                out[root].consumers.append(c)
        return out

    # -- applying a decision -------------------------------------------------------------------

    def channel_index(self, spaces: Iterable[int], block: int, keep: Mapping[int, np.ndarray]) -> np.ndarray:
        """Kept element positions along an axis laid out as ``spaces`` with ``block``."""
        parts, offset = [], 0
        for s in spaces:
            size = self.sizes[s]
            k = keep.get(self.find(s))
            parts.append(offset + (np.arange(size) if k is None else np.asarray(k)))
            offset += size
        channels = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if block > 1:
            channels = (channels[:, None] * block + np.arange(block)).reshape(-1)
        return channels.astype(np.int64)

    def kept_count(self, spaces: Iterable[int], keep: Mapping[int, np.ndarray]) -> int:
        return sum(len(keep[self.find(s)]) if self.find(s) in keep else self.sizes[s] for s in spaces)

    def apply(self, keep: Mapping[int, np.ndarray]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """Remove every channel not in ``keep`` (root space -> kept indices, sorted).

        Returns weight label -> (shape before, shape after) for every compute weight changed.
        """
        changed: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        # Compute weights: producers (out axis), consumers (in axis), followers.
        per_weight: dict[int, tuple[Weight, list[tuple[int, np.ndarray]]]] = {}
        for p in self.producers:
            per_weight.setdefault(id(p.weight), (p.weight, []))[1].append(
                (p.axis, self.channel_index((p.space,), 1, keep))
            )
        for c in self.consumers:
            per_weight.setdefault(id(c.weight), (c.weight, []))[1].append(
                (c.axis, self.channel_index(c.spaces, c.block, keep))
            )
        for w, axis, spaces, block in self.weight_cuts:
            per_weight.setdefault(id(w), (w, []))[1].append((axis, self.channel_index(spaces, block, keep)))
        for weight, cuts in per_weight.values():
            array = weight.numpy()
            before = array.shape
            for axis, index in cuts:
                if len(index) != array.shape[axis]:
                    array = np.take(array, index, axis=axis)
            if array.shape != before:
                weight.set_numpy(array)
                changed[weight.label] = (tuple(before), tuple(array.shape))
        edits: list[_ConstEdit] = []
        for value, node, index, axis, spaces, block in self.const_cuts:
            idx = self.channel_index(spaces, block, keep)
            edits.append(_ConstEdit(value, node, index, _take(idx, axis)))
        for value, node, pos, spaces, mult in self.shape_fixes:
            edits.append(_ConstEdit(value, node, 1, _set_entry(pos, self.kept_count(spaces, keep) * mult)))
        _apply_const_edits(self.model.graph, edits)
        for node, spaces in self.group_fixes:
            node.attributes["group"] = ir.AttrInt64("group", self.kept_count(spaces, keep))
        return changed


def _take(index: np.ndarray, axis: int) -> Callable[[np.ndarray], np.ndarray]:
    def edit(array: np.ndarray) -> np.ndarray:
        return array if array.shape[axis] == len(index) else np.take(array, index, axis=axis)

    return edit


def _set_entry(pos: int, value: int) -> Callable[[np.ndarray], np.ndarray]:
    def edit(array: np.ndarray) -> np.ndarray:
        out = array.copy()
        out[pos] = value
        return out

    return edit


def _apply_const_edits(graph: ir.Graph, edits: list[_ConstEdit]) -> None:
    """Rewrite plain constants; a constant also read elsewhere is copied for the edited reader."""
    by_value: dict[ir.Value, list[_ConstEdit]] = {}
    for e in edits:
        by_value.setdefault(e.value, []).append(e)
    taken = {v.name for v in graph.initializers.values()} | {
        o.name for n in graph for o in n.outputs if o.name
    }
    for value, group in by_value.items():
        original = const_array(value)
        if original is None:
            continue
        # Every edit of one reader is applied in order.
        per_user: dict[tuple[int, int], tuple[ir.Node, int, np.ndarray]] = {}
        for e in group:
            key = (id(e.user), e.index)
            node, index, arr = per_user.get(key, (e.user, e.index, original))
            per_user[key] = (node, index, e.edit(arr))
        users = {(id(n), i) for n, i in value.uses()}
        results = list(per_user.values())
        same = all(r[2].shape == results[0][2].shape and np.array_equal(r[2], results[0][2]) for r in results)
        direct = _const_source(value) is value
        if direct and users == set(per_user) and same:
            if results[0][2] is not original:
                set_const_array(value, results[0][2])
            continue
        for node, index, arr in results:
            if arr is original:
                continue
            name = _fresh(taken, f"{value.name or 'const'}_pruned")
            new = ir.Value(
                name=name,
                shape=ir.Shape(arr.shape),
                type=ir.TensorType(ir.DataType.from_numpy(arr.dtype)),
                const_value=ir.tensor(np.ascontiguousarray(arr), name=name),
            )
            graph.register_initializer(new)
            node.replace_input_with(index, new)
        _remove_dead_constant(graph, value)


def _remove_dead_constant(graph: ir.Graph, value: ir.Value | None) -> None:
    """Drop an unused constant, and the Identity chain it came through."""
    while value is not None and not value.uses() and not value.is_graph_output():
        if value.is_initializer():
            graph.initializers.pop(value.name, None)
            return
        node = value.producer()
        if node is None or node.graph is not graph or node.op_type not in ("Constant", "Identity"):
            return
        source = node.inputs[0] if node.op_type == "Identity" else None
        graph.remove(node, safe=True)
        value = source


def _fresh(taken: set[str], hint: str) -> str:
    return unique_name(taken, hint)


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The data of an initializer or Constant-node output (through Identity nodes), else None."""
    source = _const_source(value)
    if source is None:
        return None
    if source.is_initializer():
        return source.const_value.numpy()
    return source.producer().attributes["value"].value.numpy()


def _const_source(value: ir.Value | None) -> ir.Value | None:
    for _ in range(8):
        if value is None:
            return None
        if value.is_initializer() and value.const_value is not None:
            return value
        node = value.producer()
        if node is None or node.domain != "":
            return None
        if node.op_type == "Constant":
            attr = node.attributes.get("value")
            ok = attr is not None and len(node.attributes) == 1 and not attr.is_ref()
            return value if ok else None
        if node.op_type != "Identity":
            return None
        value = node.inputs[0]
    return None


def set_const_array(value: ir.Value, array: np.ndarray) -> None:
    tensor = ir.tensor(np.ascontiguousarray(array), name=value.name)
    if value.is_initializer():
        value.const_value = tensor
    else:
        node = value.producer()
        assert node is not None
        node.attributes["value"] = ir.AttrTensor("value", tensor)
    value.shape = ir.Shape(array.shape)
    value.dtype = tensor.dtype


# -- the analysis ------------------------------------------------------------------------------


def analyze(
    model: ir.Model,
    index: WeightIndex,
    shapes: Shapes,
    *,
    exclude: Iterable[str] = (),
    rng: np.random.Generator | None = None,
) -> ChannelGraph:
    """Walk the main graph once and build the channel dependency graph.

    ``rng`` draws the BatchNormalization-derived activation samples (seeded from the pipeline).
    """
    return _Analyzer(model, index, shapes, tuple(exclude), rng).run()


N_SAMPLES = 128


def _normal_quantiles(n: int) -> np.ndarray:
    from statistics import NormalDist

    dist = NormalDist()
    return np.array([dist.inv_cdf((i + 0.5) / n) for i in range(n)], np.float64)


_NORMAL_QUANTILES = _normal_quantiles(N_SAMPLES)

_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
    "Max": np.maximum,
    "Min": np.minimum,
}


def _float_attr(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return float(attr.value) if attr is not None else default


def _unary_samples(node: ir.Node, x: np.ndarray) -> np.ndarray | None:
    """The op applied to per-channel samples, for the activations whose formula is known."""
    op = node.op_type
    if op in ("Identity", "Dropout"):
        return x
    if op == "Relu":
        return np.maximum(x, 0)
    if op == "LeakyRelu":
        return np.where(x > 0, x, _float_attr(node, "alpha", 0.01) * x)
    if op == "Sigmoid":
        return 1 / (1 + np.exp(-np.clip(x, -60, 60)))
    if op == "Tanh":
        return np.tanh(x)
    if op == "HardSigmoid":
        return np.clip(_float_attr(node, "alpha", 0.2) * x + _float_attr(node, "beta", 0.5), 0, 1)
    if op == "HardSwish":
        return x * np.clip(x / 6 + 0.5, 0, 1)
    if op == "Clip":
        lo = _float_attr(node, "min", -np.inf)
        hi = _float_attr(node, "max", np.inf)
        for i in (1, 2):
            if len(node.inputs) > i and node.inputs[i] is not None:
                arr = const_array(node.inputs[i])
                if arr is None or arr.size != 1:
                    return None
                if i == 1:
                    lo = float(arr.reshape(-1)[0])
                else:
                    hi = float(arr.reshape(-1)[0])
        return np.clip(x, lo, hi)
    return None


def _per_channel(arr: np.ndarray, from_end: int, channels: int) -> np.ndarray | None:
    """A broadcasting constant as a [channels, 1] column (or a scalar), else None."""
    if arr.size == 1:
        return np.asarray(arr, np.float64).reshape(())
    if arr.ndim >= from_end and arr.shape[arr.ndim - from_end] == channels and arr.size == channels:
        return arr.astype(np.float64).reshape(channels, 1)
    return None


def _symbolic_shape(value: ir.Value) -> list | None:
    """A 1-D shape tensor built as Concat of constants and Unsqueeze(Gather(Shape(t), i)).

    Returns its entries: ints for constants, ``(t, i)`` for "dimension i of t at run time";
    None for anything else.
    """
    arr = const_array(value)
    if arr is not None:
        return [int(v) for v in arr.reshape(-1)]
    node = value.producer()
    if node is None or node.domain != "":
        return None
    if node.op_type == "Concat":
        out: list = []
        for v in node.inputs:
            part = _symbolic_shape(v) if v is not None else None
            if part is None:
                return None
            out += part
        return out
    if node.op_type in ("Unsqueeze", "Cast", "Identity"):
        inner = node.inputs[0].producer() if node.inputs[0] is not None else None
        if node.op_type == "Unsqueeze" and inner is not None and inner.op_type == "Gather":
            node = inner
        else:
            return _symbolic_shape(node.inputs[0]) if node.inputs[0] is not None else None
    if node.op_type == "Gather" and _int_attr(node, "axis", 0) == 0:
        shape_node = node.inputs[0].producer() if node.inputs[0] is not None else None
        index = const_array(node.inputs[1])
        if (
            shape_node is not None
            and shape_node.op_type == "Shape"
            and index is not None
            and index.size == 1
            and not shape_node.attributes
        ):
            return [(shape_node.inputs[0], int(index.reshape(-1)[0]))]
    return None


def _int_attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return int(attr.value) if attr is not None else default


def _ints_attr(node: ir.Node, name: str) -> list[int] | None:
    attr = node.attributes.get(name)
    return [int(v) for v in attr.value] if attr is not None else None


class _Analyzer:
    def __init__(self, model: ir.Model, index: WeightIndex, shapes: Shapes, exclude: tuple[str, ...],
                 rng: np.random.Generator | None = None):
        self.model = model
        self.g = ChannelGraph(model)
        self.shapes = shapes
        self.exclude = exclude
        self.opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 13))
        self.weights: dict[tuple[int, int], Weight] = {}
        # Per-channel samples of activations [channels, N_SAMPLES], derived from
        # BatchNormalization: its output is ~ N(shift, scale^2) per channel on the data it was
        # trained on. Pushed through elementwise ops (activations, residual Adds, constants),
        # pooling and flattening; anything else drops them.
        self.samples: dict[ir.Value, np.ndarray] = {}
        self.rng = rng if rng is not None else np.random.default_rng(0)
        for w in index:
            if w.scope:
                continue
            for u in w.uses:
                self.weights[(id(u.node), u.index)] = w

    # helpers

    def shape(self, value: ir.Value | None) -> tuple[int | None, ...] | None:
        if value is None:
            return None
        return self.shapes.get(value.name or "")

    def rank(self, value: ir.Value | None) -> int | None:
        s = self.shape(value)
        return len(s) if s is not None else None

    def layout(self, value: ir.Value | None) -> Layout | None:
        return self.g.layouts.get(value) if value is not None else None

    def total(self, layout: Layout) -> int:
        return sum(self.g.sizes[s] for s in layout.spaces) * layout.block

    def set_out(self, node: ir.Node, layout: Layout | None, outputs: Iterable[int] = (0,)) -> None:
        if layout is None:
            return
        for i in outputs:
            if i < len(node.outputs) and node.outputs[i] is not None:
                self.g.layouts[node.outputs[i]] = layout

    def freeze_inputs(self, node: ir.Node, reason: str) -> None:
        for v in node.inputs:
            self.g.freeze_layout(self.layout(v), reason)

    def weight_problem(self, w: Weight) -> str | None:
        if not w.is_float:
            return f"weight {w.label} is not a float tensor"
        if matches(w.label, self.exclude):
            return f"weight {w.label} is excluded"
        if len(w.uses) > 1 or any(u.slot.role == ROLE_OTHER for u in w.uses):
            return f"weight {w.label} is shared by several nodes"
        return None

    # the walk

    def run(self) -> ChannelGraph:
        graph = self.model.graph
        for node in graph:
            self.visit(node)
        # Channels that leave the graph or enter a subgraph must keep their count.
        for value, layout in list(self.g.layouts.items()):
            if value.is_graph_output():
                self.g.freeze_layout(layout, f"reaches graph output {value.name}")
            for user, _ in value.uses():
                if user.graph is not graph:
                    self.g.freeze_layout(layout, f"read inside a subgraph ({user.name or user.op_type})")
        return self.g

    def visit(self, node: ir.Node) -> None:
        op = node.op_type
        name = node.name or op
        ins = [self.layout(v) for v in node.inputs]
        if not any(ins) and op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            return
        if node.domain not in ("", "ai.onnx"):
            self.freeze_inputs(node, f"custom op {node.domain}::{op} ({name})")
            return
        if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
            self.freeze_inputs(node, f"{op} {name} has subgraphs")
            return
        handler = getattr(self, f"op_{op}", None)
        compute = op in ("Conv", "ConvTranspose", "Gemm", "MatMul")
        if compute:
            # Channels feeding a weight or bias slot are read as parameters: keep them.
            for v in node.inputs[1:]:
                self.g.freeze_layout(self.layout(v), f"{op} {name} reads them as a parameter")
        elif ins[0] is None and op not in ELEMENTWISE_OPS and op != "Concat":
            self.freeze_inputs(node, f"{op} {name} reads them as a parameter")
            return
        if handler is not None:
            handler(node)
        elif op in UNARY_OPS:
            self.unary(node)
        elif op in ELEMENTWISE_OPS:
            self.elementwise(node)
        elif op in POOL_OPS:
            self.pool(node)
        elif op in REDUCE_OPS:
            self.reduce(node)
        elif op in ("Shape", "Size"):
            self.freeze_inputs(node, f"{op} {name} reads the channel count")
        else:
            self.freeze_inputs(node, f"{op} {name} is not known to keep channels apart")

    # compute ops

    def producer(self, node: ir.Node, w: Weight, axis: int, data_layout: Layout | None) -> int:
        problem = self.weight_problem(w)
        space = self.g.new_space(w.shape[axis], problem)
        if problem is not None:
            self.g.freeze_layout(data_layout, problem)
        self.g.producers.append(Producer(w, axis, space, node))
        return space

    def consumer(self, node: ir.Node, w: Weight, axis: int | None, layout: Layout | None) -> None:
        if layout is None:
            return
        x = self.samples.get(node.inputs[0])
        if x is not None and axis is not None and len(x) == w.shape[axis]:
            self.g.bn_input_stats[w.label] = (x.mean(axis=1), (x**2).mean(axis=1).astype(np.float32))
        name = node.name or node.op_type
        if axis is None or self.total(layout) != w.shape[axis]:
            self.g.freeze_layout(layout, f"{name}: input channels do not match its weight")
            return
        problem = self.weight_problem(w)
        if problem is not None:
            self.g.freeze_layout(layout, problem)
            return
        self.g.consumers.append(Consumer(w, axis, layout.spaces, layout.block, node))

    def follower(self, node: ir.Node, index: int, layout: Layout, axis_from_end: int) -> bool:
        """Record that constant input ``index`` shrinks with ``layout``; False if not a constant."""
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is None:
            return True
        arr = const_array(value)
        if arr is None:
            w = self.weights.get((id(node), index))
            if w is not None and w.out_axis is not None and self.weight_problem(w) is None:
                if w.shape[w.out_axis] != self.total(layout):
                    return False
                self.g.weight_cuts.append((w, w.out_axis, layout.spaces, layout.block))
                return True
            return False
        if arr.ndim < axis_from_end or arr.shape[arr.ndim - axis_from_end] == 1:
            return True
        if arr.shape[arr.ndim - axis_from_end] != self.total(layout):
            return False
        self.g.const_cuts.append((value, node, index, arr.ndim - axis_from_end, layout.spaces, layout.block))
        return True

    def op_Conv(self, node: ir.Node) -> None:
        self._conv(node, transpose=False)

    def op_ConvTranspose(self, node: ir.Node) -> None:
        self._conv(node, transpose=True)

    def _conv(self, node: ir.Node, *, transpose: bool) -> None:
        name = node.name or node.op_type
        data = self.layout(node.inputs[0])
        w = self.weights.get((id(node), 1))
        if w is None or w.out_axis is None:
            self.g.freeze_layout(data, f"{name}: weight is not a constant")
            return
        if data is not None and (data.axis != 1 or data.block != 1):
            self.g.freeze_layout(data, f"{name}: channels are not on axis 1")
            data = None
        group = _int_attr(node, "group", 1)
        rank = len(w.shape)
        if group > 1:
            depthwise = (
                not transpose
                and w.shape[1] == 1
                and w.shape[0] == group
                and data is not None
                and self.total(data) == group
            )
            if depthwise and self.weight_problem(w) is None:
                self.g.weight_cuts.append((w, 0, data.spaces, 1))
                self.g.group_fixes.append((node, data.spaces))
                out = Layout(1, rank, data.spaces)
                if len(node.inputs) > 2 and not self.follower(node, 2, out, 1):
                    self.g.freeze_layout(data, f"{name}: bias is not a constant")
                self.set_out(node, out)
                return
            reason = f"{name}: grouped convolution (group={group})"
            self.g.freeze_layout(data, reason)
            space = self.g.new_space(w.shape[w.out_axis], reason)
            self.g.producers.append(Producer(w, w.out_axis, space, node))  # named in the skips
            self.set_out(node, Layout(1, rank, (space,)))
            return
        space = self.producer(node, w, w.out_axis, data)
        self.consumer(node, w, w.in_axis, data)
        out = Layout(1, rank, (space,))
        if len(node.inputs) > 2 and not self.follower(node, 2, out, 1):
            self.g.freeze(space, f"{name}: bias is not a constant")
        self.set_out(node, out)

    def op_Gemm(self, node: ir.Node) -> None:
        name = node.name or "Gemm"
        data = self.layout(node.inputs[0])
        w = self.weights.get((id(node), 1))
        if w is None or w.out_axis is None or _int_attr(node, "transA", 0):
            self.g.freeze_layout(data, f"{name}: not x @ constant weight")
            return
        if data is not None and data.axis != 1:
            self.g.freeze_layout(data, f"{name}: features are not on axis 1")
            data = None
        space = self.producer(node, w, w.out_axis, data)
        self.consumer(node, w, w.in_axis, data)
        out = Layout(1, 2, (space,))
        if len(node.inputs) > 2 and not self.follower(node, 2, out, 1):
            self.g.freeze(space, f"{name}: bias is not a constant")
        self.set_out(node, out)

    def op_MatMul(self, node: ir.Node) -> None:
        name = node.name or "MatMul"
        data = self.layout(node.inputs[0])
        w = self.weights.get((id(node), 1))
        other = self.layout(node.inputs[1]) if len(node.inputs) > 1 else None
        if w is None or len(w.shape) < 2 or w.out_axis is None:
            self.g.freeze_layout(data, f"{name}: not x @ constant weight")
            self.g.freeze_layout(other, f"{name}: not x @ constant weight")
            return
        if data is not None and data.axis != data.rank - 1:
            self.g.freeze_layout(data, f"{name}: features are not on the last axis")
            data = None
        out_rank = self.rank(node.outputs[0]) or max(data.rank if data else 2, len(w.shape))
        space = self.producer(node, w, w.out_axis, data)
        self.consumer(node, w, w.in_axis, data)
        self.set_out(node, Layout(out_rank - 1, out_rank, (space,)))

    # channel-preserving ops

    def unary(self, node: ir.Node) -> None:
        name = node.name or node.op_type
        layout = self.layout(node.inputs[0])
        for v in node.inputs[1:]:
            if v is not None and const_array(v) is None:
                self.freeze_inputs(node, f"{node.op_type} {name} has a computed parameter")
                return
        x = self.samples.get(node.inputs[0])
        if x is not None:
            y = _unary_samples(node, x)
            if y is not None:
                self.samples[node.outputs[0]] = y
        self.set_out(node, layout, range(len(node.outputs)))

    def elementwise(self, node: ir.Node) -> None:
        name = node.name or node.op_type
        acts = [(i, v, self.layout(v)) for i, v in enumerate(node.inputs) if v is not None]
        laid = [(i, v, lay) for i, v, lay in acts if lay is not None]
        # Channel position counted from the end (numpy broadcasting aligns on the right).
        from_end = {lay.rank - lay.axis for _, _, lay in laid}
        wide = [(i, v, lay) for i, v, lay in laid if self.total(lay) > 1]
        if len(from_end) != 1 or not wide:
            self.freeze_inputs(node, f"{node.op_type} {name}: channel axes do not line up")
            return
        e = from_end.pop()
        ref = wide[0][2]
        for _, _, lay in laid:
            if lay is ref:
                continue
            if self.total(lay) == 1:
                self.g.freeze_layout(lay, f"{node.op_type} {name}: broadcast single channel")
                continue
            if (
                lay.block != ref.block
                or len(lay.spaces) != len(ref.spaces)
                or not all(self.g.union(a, b) for a, b in zip(ref.spaces, lay.spaces, strict=True))
            ):
                self.freeze_inputs(node, f"{node.op_type} {name}: channel groups do not line up")
                return
        for i, v, lay in acts:
            if lay is not None:
                continue
            if const_array(v) is not None:
                if not self.follower(node, i, ref, e):
                    self.freeze_inputs(
                        node, f"{node.op_type} {name}: constant does not broadcast per channel"
                    )
                    return
                continue
            s = self.shape(v)
            if s is None or (len(s) >= e and s[len(s) - e] != 1):
                self.freeze_inputs(
                    node, f"{node.op_type} {name}: mixed with a tensor whose channels are not tracked"
                )
                return
        out_rank = self.rank(node.outputs[0]) or ref.rank
        y = self._binary_samples(node, e, self.total(ref))
        if y is not None:
            self.samples[node.outputs[0]] = y
        self.set_out(node, Layout(out_rank - e, out_rank, ref.spaces, ref.block))

    def pool(self, node: ir.Node) -> None:
        layout = self.layout(node.inputs[0])
        name = node.name or node.op_type
        if layout is None:
            return
        if layout.axis != 1 or layout.block != 1:
            self.g.freeze_layout(layout, f"{node.op_type} {name}: channels are not on axis 1")
            return
        if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
            self.g.freeze_layout(layout, f"{node.op_type} {name}: pooling indices are used")
            return
        if node.inputs[0] in self.samples:
            self.samples[node.outputs[0]] = self.samples[node.inputs[0]]  # means survive pooling
        self.set_out(node, layout)

    def reduce(self, node: ir.Node) -> None:
        name = node.name or node.op_type
        layout = self.layout(node.inputs[0])
        if layout is None:
            return
        axes = _ints_attr(node, "axes")
        if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
            arr = const_array(node.inputs[1])
            axes = None if arr is None else [int(a) for a in arr.reshape(-1)]
        if not axes:
            self.g.freeze_layout(layout, f"{node.op_type} {name} reduces over the channels")
            return
        axes = [a % layout.rank for a in axes]
        if layout.axis in axes:
            self.g.freeze_layout(layout, f"{node.op_type} {name} reduces over the channels")
            return
        if _int_attr(node, "keepdims", 1):
            self.set_out(node, layout)
        else:
            shift = sum(1 for a in set(axes) if a < layout.axis)
            self.set_out(
                node, Layout(layout.axis - shift, layout.rank - len(set(axes)), layout.spaces, layout.block)
            )

    def op_BatchNormalization(self, node: ir.Node) -> None:
        self._norm(node)

    def op_InstanceNormalization(self, node: ir.Node) -> None:
        self._norm(node)

    def _norm(self, node: ir.Node) -> None:
        name = node.name or node.op_type
        layout = self.layout(node.inputs[0])
        if layout is None:
            return
        if layout.axis != 1 or layout.block != 1:
            self.g.freeze_layout(layout, f"{node.op_type} {name}: channels are not on axis 1")
            return
        if any(o is not None and o.uses() for o in node.outputs[1:]):
            self.g.freeze_layout(layout, f"{node.op_type} {name}: training outputs are used")
            return
        params = [const_array(v) for v in node.inputs[1:]]
        if any(p is None or p.shape != (self.total(layout),) for p in params):
            self.g.freeze_layout(layout, f"{node.op_type} {name}: parameters are not constants")
            return
        for i in range(1, len(node.inputs)):
            self.follower(node, i, layout, 1)
        if node.op_type == "BatchNormalization" and len(layout.spaces) == 1 and len(params) == 4:
            eps = node.attributes.get("epsilon")
            eps_v = float(eps.value) if eps is not None else 1e-5
            scale = np.abs(params[0].astype(np.float64)) / np.sqrt(params[3].astype(np.float64) + eps_v)
            self.g.bn_scale.setdefault(layout.spaces[0], scale)
        if node.op_type == "BatchNormalization" and len(params) == 4:
            # Stratified normal quantiles (exact marginals with few samples), shuffled per
            # BatchNormalization so that different branches are independent.
            z = np.tile(self.rng.permutation(_NORMAL_QUANTILES), (len(params[0]), 1))
            self.samples[node.outputs[0]] = (
                params[1].astype(np.float64)[:, None] + np.abs(params[0].astype(np.float64))[:, None] * z
            )
        self.set_out(node, layout)

    def op_LayerNormalization(self, node: ir.Node) -> None:
        name = node.name or node.op_type
        layout = self.layout(node.inputs[0])
        if layout is None:
            return
        axis = _int_attr(node, "axis", -1) % layout.rank
        if layout.axis >= axis:
            self.g.freeze_layout(layout, f"LayerNormalization {name} normalizes over the channels")
            return
        self.set_out(node, layout)

    def op_Concat(self, node: ir.Node) -> None:
        name = node.name or "Concat"
        lays = [self.layout(v) for v in node.inputs]
        if any(lay is None for lay in lays):
            self.freeze_inputs(node, f"Concat {name}: an input's channels are not tracked")
            return
        first = lays[0]
        axis = _int_attr(node, "axis", 0) % first.rank
        if any(lay.axis != first.axis or lay.rank != first.rank or lay.block != first.block for lay in lays):
            self.freeze_inputs(node, f"Concat {name}: inputs lay their channels out differently")
            return
        if axis == first.axis:
            spaces = tuple(s for lay in lays for s in lay.spaces)
            self.set_out(node, Layout(first.axis, first.rank, spaces, first.block))
            return
        for lay in lays[1:]:
            if len(lay.spaces) != len(first.spaces) or not all(
                self.g.union(a, b) for a, b in zip(first.spaces, lay.spaces, strict=True)
            ):
                self.freeze_inputs(node, f"Concat {name}: channel groups do not line up")
                return
        self.set_out(node, first)

    def op_Split(self, node: ir.Node) -> None:
        layout = self.layout(node.inputs[0])
        axis = _int_attr(node, "axis", 0) % layout.rank
        if axis == layout.axis:
            self.g.freeze_layout(layout, f"Split {node.name or ''} splits the channels")
            return
        self.set_out(node, layout, range(len(node.outputs)))

    def op_Slice(self, node: ir.Node) -> None:
        layout = self.layout(node.inputs[0])
        name = node.name or "Slice"
        if layout is None:
            return
        if len(node.inputs) < 3:
            self.g.freeze_layout(layout, f"Slice {name}: old-style Slice")
            return
        starts = const_array(node.inputs[1])
        axes = const_array(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
        if starts is None or (len(node.inputs) > 3 and node.inputs[3] is not None and axes is None):
            self.g.freeze_layout(layout, f"Slice {name}: computed slice bounds")
            return
        axes_list = [int(a) % layout.rank for a in axes] if axes is not None else list(range(len(starts)))
        if layout.axis in axes_list:
            self.g.freeze_layout(layout, f"Slice {name} slices the channels")
            return
        self.set_out(node, layout)

    def op_Transpose(self, node: ir.Node) -> None:
        layout = self.layout(node.inputs[0])
        perm = _ints_attr(node, "perm") or list(reversed(range(layout.rank)))
        if len(perm) != layout.rank:
            self.g.freeze_layout(layout, f"Transpose {node.name or ''}: rank mismatch")
            return
        self.set_out(node, Layout(perm.index(layout.axis), layout.rank, layout.spaces, layout.block))

    def _axes(self, node: ir.Node) -> list[int] | None:
        axes = _ints_attr(node, "axes")
        if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
            arr = const_array(node.inputs[1])
            axes = None if arr is None else [int(a) for a in arr.reshape(-1)]
        return axes

    def op_Unsqueeze(self, node: ir.Node) -> None:
        layout = self.layout(node.inputs[0])
        axes = self._axes(node)
        if axes is None:
            self.g.freeze_layout(layout, f"Unsqueeze {node.name or ''}: computed axes")
            return
        out_rank = layout.rank + len(axes)
        inserted = {a % out_rank for a in axes}
        kept = [j for j in range(out_rank) if j not in inserted]
        self.set_out(node, Layout(kept[layout.axis], out_rank, layout.spaces, layout.block))

    def op_Squeeze(self, node: ir.Node) -> None:
        layout = self.layout(node.inputs[0])
        axes = self._axes(node)
        if axes is None:
            s = self.shape(node.inputs[0])
            axes = [i for i, d in enumerate(s) if d == 1] if s is not None else None
        if axes is None:
            self.g.freeze_layout(layout, f"Squeeze {node.name or ''}: unknown axes")
            return
        axes = [a % layout.rank for a in axes]
        if layout.axis in axes:
            self.g.freeze_layout(layout, f"Squeeze {node.name or ''} removes the channel axis")
            return
        shift = sum(1 for a in set(axes) if a < layout.axis)
        self.set_out(
            node, Layout(layout.axis - shift, layout.rank - len(set(axes)), layout.spaces, layout.block)
        )

    def _repeat_samples(self, node: ir.Node, factor: int) -> None:
        x = self.samples.get(node.inputs[0])
        if x is not None:
            self.samples[node.outputs[0]] = np.repeat(x, factor, axis=0)

    def _binary_samples(self, node: ir.Node, from_end: int, channels: int) -> np.ndarray | None:
        fn = _BINARY.get(node.op_type)
        if fn is None or len(node.inputs) != 2:
            return None
        operands = []
        for v in node.inputs:
            x = self.samples.get(v)
            if x is None:
                arr = const_array(v)
                if arr is None:
                    return None
                x = _per_channel(arr, from_end, channels)
                if x is None:
                    return None
            operands.append(x)
        if all(np.ndim(o) == 0 or o.shape[1] == 1 for o in operands):
            return None  # constants only
        with np.errstate(all="ignore"):
            y = fn(operands[0], operands[1])
        return y if np.all(np.isfinite(y)) else None

    def op_Flatten(self, node: ir.Node) -> None:
        layout = self.layout(node.inputs[0])
        name = node.name or "Flatten"
        axis = _int_attr(node, "axis", 1) % max(layout.rank, 1)
        s = self.shape(node.inputs[0])
        if (
            axis != layout.axis
            or axis == 0
            or s is None
            or not all(isinstance(d, int) for d in s[axis + 1 :])
        ):
            self.g.freeze_layout(layout, f"Flatten {name} mixes the channels with other axes")
            return
        block = layout.block * int(np.prod(s[axis + 1 :], dtype=np.int64))
        self._repeat_samples(node, block // layout.block)
        self.set_out(node, Layout(1, 2, layout.spaces, block))

    def op_Reshape(self, node: ir.Node) -> None:
        layout = self.layout(node.inputs[0])
        name = node.name or "Reshape"
        target = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
        s_in, s_out = self.shape(node.inputs[0]), self.shape(node.outputs[0])
        a = layout.axis
        if target is None and len(node.inputs) > 1 and s_in is not None:
            # x.view(x.size(0), -1) as exporters write it: the target is assembled at run time
            # from x's own leading dimensions and -1, so it follows the pruned channel count.
            entries = _symbolic_shape(node.inputs[1])
            if (
                entries is not None
                and len(entries) == a + 1
                and entries[a] == -1
                and all(e == 0 or e == (node.inputs[0], i) for i, e in enumerate(entries[:a]))
                and all(isinstance(d, int) for d in s_in)
            ):
                target = np.full(a + 1, -1, np.int64)
                s_out = (*s_in[:a], int(np.prod(s_in[a:], dtype=np.int64)))
        if (
            target is None
            or s_in is None
            or s_out is None
            or len(s_in) != layout.rank
            or not all(isinstance(d, int) for d in (*s_in, *s_out))
            or _int_attr(node, "allowzero", 0)
        ):
            self.g.freeze_layout(layout, f"Reshape {name}: shape not known")
            return
        target = target.reshape(-1)
        if layout.block == 1 and len(s_out) > a and tuple(s_in[: a + 1]) == tuple(s_out[: a + 1]):
            # The channel axis and everything before it stay; only later axes change.
            if target[a] not in (0, -1):
                self.g.shape_fixes.append((node.inputs[1], node, a, layout.spaces, 1))
            self.set_out(node, Layout(a, len(s_out), layout.spaces, 1))
            return
        if (
            len(s_out) == a + 1
            and tuple(s_in[:a]) == tuple(s_out[:a])
            and s_out[a] == int(np.prod(s_in[a:], dtype=np.int64))
        ):
            # Flatten from the channel axis on: each channel becomes a block of features.
            block = layout.block * int(np.prod(s_in[a + 1 :], dtype=np.int64))
            self._repeat_samples(node, block // layout.block)
            if target[a] != -1:
                self.g.shape_fixes.append((node.inputs[1], node, a, layout.spaces, block))
            self.set_out(node, Layout(a, a + 1, layout.spaces, block))
            return
        self.g.freeze_layout(layout, f"Reshape {name} mixes the channels with other axes")

    def op_Shape(self, node: ir.Node) -> None:
        """Shape is safe when only dimensions other than the channel axis are taken from it."""
        layout = self.layout(node.inputs[0])
        name = node.name or "Shape"
        reason = f"Shape {name} reads the channel count"
        if "start" in node.attributes or "end" in node.attributes or node.outputs[0].is_graph_output():
            self.g.freeze_layout(layout, reason)
            return
        for user, index in node.outputs[0].uses():
            indices = const_array(user.inputs[1]) if len(user.inputs) > 1 else None
            if (
                user.op_type != "Gather"
                or index != 0
                or _int_attr(user, "axis", 0) != 0
                or indices is None
                or layout.axis in {int(i) % layout.rank for i in indices.reshape(-1)}
            ):
                self.g.freeze_layout(layout, reason)
                return

    def op_Resize(self, node: ir.Node) -> None:
        layout = self.layout(node.inputs[0])
        name = node.name or node.op_type
        scales = None
        if node.op_type == "Upsample" or len(node.inputs) == 2:
            scales = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
        else:
            sizes = node.inputs[3] if len(node.inputs) > 3 else None
            if sizes is not None:
                self.g.freeze_layout(layout, f"{node.op_type} {name}: output sizes include the channel count")
                return
            scales = (
                const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
            )
        if scales is None or scales.size != layout.rank or float(scales.reshape(-1)[layout.axis]) != 1.0:
            self.g.freeze_layout(layout, f"{node.op_type} {name}: scales the channel axis")
            return
        self.set_out(node, layout)

    op_Upsample = op_Resize

    def op_Pad(self, node: ir.Node) -> None:
        layout = self.layout(node.inputs[0])
        name = node.name or "Pad"
        pads = _ints_attr(node, "pads")
        if pads is None and len(node.inputs) > 1:
            arr = const_array(node.inputs[1])
            pads = None if arr is None else [int(p) for p in arr.reshape(-1)]
        axes = None
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            arr = const_array(node.inputs[3])
            if arr is None:
                pads = None
            else:
                axes = [int(x) % layout.rank for x in arr.reshape(-1)]
        if pads is None:
            self.g.freeze_layout(layout, f"Pad {name}: computed pads")
            return
        axes = axes if axes is not None else list(range(layout.rank))
        n = len(axes)
        if layout.axis in axes:
            i = axes.index(layout.axis)
            if pads[i] != 0 or pads[i + n] != 0:
                self.g.freeze_layout(layout, f"Pad {name} pads the channels")
                return
        self.set_out(node, layout)

    def op_Softmax(self, node: ir.Node) -> None:
        self._softmax(node)

    def op_LogSoftmax(self, node: ir.Node) -> None:
        self._softmax(node)

    def op_Hardmax(self, node: ir.Node) -> None:
        self._softmax(node)

    def _softmax(self, node: ir.Node) -> None:
        layout = self.layout(node.inputs[0])
        new = self.opset >= 13
        axis = _int_attr(node, "axis", -1 if new else 1) % layout.rank
        mixes = layout.axis == axis if new else layout.axis >= axis
        if mixes:
            self.g.freeze_layout(layout, f"{node.op_type} {node.name or ''} normalizes over the channels")
            return
        self.set_out(node, layout)
