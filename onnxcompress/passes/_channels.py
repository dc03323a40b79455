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
from collections.abc import Iterable, Mapping

import numpy as np
import onnx_ir as ir

from onnxcompress.graph.constants import const_array
from onnxcompress.graph.scope import has_subgraph
from onnxcompress.passes._channel_graph import ChannelGraph, Consumer, Layout, Producer
from onnxcompress.passes._channel_samples import _NORMAL_QUANTILES, _int_attr, _ints_attr, _unary_samples
from onnxcompress.passes._channel_shape_ops import _ShapeOps
from onnxcompress.weights import ROLE_OTHER, Weight, WeightIndex

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


class _Analyzer(_ShapeOps):
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
        if w.excluded_by(self.exclude):
            return f"weight {w.label} is excluded"
        if len(w.uses) > 1 or any(u.slot.role == ROLE_OTHER for u in w.uses):
            return f"weight {w.label} is shared by several nodes"
        if (why := w.kept_reason()) is not None:  # every pass's rule: given out, or inf/NaN
            return f"weight {w.label}: {why}"
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
        if has_subgraph(node):
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
