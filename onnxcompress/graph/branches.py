"""The branch of each top-level ``If`` a sample takes, as main-graph nodes.

onnxruntime gives out main-graph values only, so the activations inside an If's branches could not
be observed: optimum's merged decoder (``If(use_cache_branch)``) holds every layer in its two
branches and silero VAD its whole network in the branches of one ``If`` on the sample rate, and
their statistics-using passes ran without data ("without activation statistics ... in a
subgraph"). A copy whose If nodes are replaced by the branches a sample takes computes the same
values with the branches' tensors in the main graph, under their own names (ONNX names are unique
across a model's graphs), where they can be given out.
"""

from __future__ import annotations

import onnx
import onnx.helper as oh


def top_level_ifs(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The main graph's If nodes, in graph order."""
    return [n for n in proto.graph.node if n.op_type == "If" and n.domain in ("", "ai.onnx")]


def branch_values(proto: onnx.ModelProto) -> set[str]:
    """Names of the values computed inside the main graph's If branches (nested bodies not)."""
    names: set[str] = set()
    for node in top_level_ifs(proto):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names.update(o for n in attr.g.node for o in n.output if o)
    return names


def flattened(proto: onnx.ModelProto, taken: tuple[bool, ...]) -> onnx.ModelProto:
    """A copy of ``proto`` whose i-th top-level If is replaced by its then-branch (``taken[i]``)
    or else-branch: the branch's nodes and initializers move into the main graph, and an
    Identity gives each branch output the If's output name."""
    flat = onnx.ModelProto()
    flat.CopyFrom(proto)
    nodes: list[onnx.NodeProto] = []
    seen = 0  # the If nodes met so far, in top_level_ifs' order
    for node in flat.graph.node:
        if not (node.op_type == "If" and node.domain in ("", "ai.onnx")):
            nodes.append(_copy(node))
            continue
        wanted = "then_branch" if taken[seen] else "else_branch"
        seen += 1
        branch = next(a.g for a in node.attribute if a.name == wanted)
        nodes.extend(_copy(n) for n in branch.node)
        flat.graph.initializer.extend(branch.initializer)
        flat.graph.value_info.extend(branch.value_info)
        nodes.extend(oh.make_node("Identity", [inner.name], [outer], name=f"{outer}__branch_output")
                     for inner, outer in zip(branch.output, node.output, strict=True) if outer)
    del flat.graph.node[:]
    flat.graph.node.extend(nodes)
    return flat


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:  # kept apart from the field it is cleared from
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy
