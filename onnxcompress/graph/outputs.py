"""What a graph output is, read from the graph where its shape alone misleads."""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir

from onnxcompress.graph.fold import SELECTION_OPS

#: Ops that decode step by step; with the recurrent cells, the ops whose outputs include a state.
LOOP_OPS = frozenset({"Loop", "Scan"})
RECURRENT_OPS = LOOP_OPS | {"LSTM", "GRU", "RNN"}


def recurrent_output(value: ir.Value, through: frozenset[str] | None = SELECTION_OPS,
                     ops: frozenset[str] = RECURRENT_OPS) -> bool:
    """Whether ``value`` comes from an output of one of ``ops`` (LSTM/GRU/RNN, Loop, Scan) through
    ops of one data input (of ``through`` only; None: any such op). A recurrent cell's state given out as
    ``[N, hidden]`` is shaped like class scores, but its arg-max means nothing: ``--validate``
    failed a correct g2p LSTM decoder on its state's top-1 (batch 7: every decoded word equal)."""
    for _ in range(16):
        node = value.producer()
        if node is None:
            return False
        if node.op_type in ops and node.domain in ("", "ai.onnx"):
            return True
        if through is not None and node.op_type not in through:
            return False
        data = [x for x in node.inputs if x is not None and x.const_value is None]
        if len(data) != 1:
            return False
        value = data[0]
    return False


def state_outputs(model: ir.Model) -> set[str]:
    """Names of the graph outputs a recurrent op gives out through selection ops only."""
    return {v.name for v in model.graph.outputs if v.name and recurrent_output(v)}


#: Layers whose reading an output makes it a feature the model computes on, not its answer.
FEATURE_READERS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum", "LSTM", "GRU", "RNN"})


def feature_outputs(model: ir.Model) -> set[str]:
    """Names of the graph outputs another layer of the graph reads (directly or through selection
    ops): a penultimate embedding given out beside the scores its head computes from it. Shaped
    like class scores, its arg-max means nothing: atspm-detector's pair model gives out its
    candidates' 128-d embeddings ``z`` beside their logits, and compare held z's top-1 over 128
    dimensions to 0.99 (batch 8)."""
    return {v.name for v in model.graph.outputs if v.name and reaches(
        v, lambda n: n.op_type in FEATURE_READERS and n.domain in ("", "ai.onnx"),
        through=lambda n: n.op_type in SELECTION_OPS)}


def reaches(value: ir.Value, found: Callable[[ir.Node], bool],
            through: Callable[[ir.Node], bool] | None = None) -> bool:
    """Whether a node ``found`` accepts reads ``value``, directly or downstream through nodes
    ``through`` accepts (None: any node)."""
    stack, seen = [value], {id(value)}
    while stack:
        for node, _ in stack.pop().uses():
            if found(node):
                return True
            if through is None or through(node):
                for out in node.outputs:
                    if id(out) not in seen:
                        seen.add(id(out))
                        stack.append(out)
    return False
