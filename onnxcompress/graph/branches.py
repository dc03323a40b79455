"""Values inside the branches of top-level ``If`` nodes, given out through the If.

onnxruntime gives out main-graph values only, so the activations inside an If's branches could not
be observed: optimum's merged decoder (``If(use_cache_branch)``) holds every layer in its two
branches and silero VAD its whole network in the branches of one ``If`` on the sample rate, and
their statistics-using passes ran without data ("without activation statistics ... in a
subgraph"). A wanted value becomes one more output of its branch, the other branch gives an empty
tensor of its type there (both branches must give as many outputs), and the If gives it out: a
sample's value is read where the sample took that branch. One session, no copy of the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx.helper as oh
import onnx_ir as ir

#: Suffix of the If output that carries a branch value out (the value's own name is taken: ONNX
#: names are unique across a model's graphs).
OUTPUT_SUFFIX = "__from_branch"


@dataclass(frozen=True)
class BranchValue:
    """A branch value given out: its name, the graph output carrying it, the If's condition, and
    which branch computes it (the value is read only for samples whose condition is ``taken``)."""

    name: str
    output: str
    condition: str
    taken: bool


def top_level_ifs(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The main graph's If nodes, in graph order."""
    return [n for n in proto.graph.node if n.op_type == "If" and n.domain in ("", "ai.onnx")]


def if_branches(node: ir.Node) -> list[ir.Graph]:
    """The two branches of an If node (none for any other node)."""
    if node.op_type != "If" or node.domain not in ("", "ai.onnx"):
        return []
    return [a.value for a in node.attributes.values() if a.type == ir.AttributeType.GRAPH]


def branch_results(model: ir.Model) -> dict[int, ir.Value]:
    """id of each top-level If branch's output -> the If's output it becomes (a merged decoder's
    cache is a branch's Concat given out through the If: ``graph.outputs.reaches(beyond=)``)."""
    return {id(out): result for node in model.graph for branch in if_branches(node)
            for out, result in zip(branch.outputs, node.outputs, strict=False)}


def observable_graphs(model: ir.Model) -> set[int]:
    """ids of the graphs whose values a statistics run can read: the main graph and the branches
    of its If nodes (:func:`expose_branch_values`); not Loop or Scan bodies, nor nested ones."""
    return {id(model.graph)} | {id(branch) for node in model.graph for branch in if_branches(node)}


def branch_values(proto: onnx.ModelProto) -> set[str]:
    """Names of the values computed inside the main graph's If branches (nested bodies not)."""
    return {o for node in top_level_ifs(proto) for a in node.attribute
            if a.type == onnx.AttributeProto.GRAPH for n in a.g.node for o in n.output if o}


def branch_types(inferred: onnx.ModelProto) -> dict[str, int]:
    """Element types of the values inside top-level If branches, from a shape-inferred proto."""
    types: dict[str, int] = {}
    for node in top_level_ifs(inferred):
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                for vi in (*a.g.value_info, *a.g.output):
                    if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                        types[vi.name] = vi.type.tensor_type.elem_type
    return types


def expose_branch_values(proto: onnx.ModelProto, names: list[str],
                         types: dict[str, int]) -> list[BranchValue]:
    """Make ``proto`` (edited in place) give out each of ``names`` computed inside a top-level
    If branch whose type is known (``types``); the others are left out."""
    exposed: list[BranchValue] = []
    wanted = set(names)
    graph_outputs = {o.name for o in proto.graph.output}
    for node in top_level_ifs(proto):
        branches = {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
        if set(branches) != {"then_branch", "else_branch"}:
            continue
        for side, graph in branches.items():
            other = branches["else_branch" if side == "then_branch" else "then_branch"]
            produced = {o for n in graph.node for o in n.output if o}
            for name in sorted(wanted & produced):
                output = f"{name}{OUTPUT_SUFFIX}"
                if name not in types or output in graph_outputs:
                    continue
                # through an Identity: the value may already be one of the branch's outputs
                graph.node.append(oh.make_node("Identity", [name], [f"{name}__given"]))
                graph.output.append(oh.make_tensor_value_info(f"{name}__given", types[name], None))
                absent = f"{name}__absent"
                other.node.append(oh.make_node("Constant", [], [absent], value=oh.make_tensor(
                    absent, types[name], [0], [])))
                other.output.append(oh.make_tensor_value_info(absent, types[name], None))
                node.output.append(output)
                proto.graph.output.append(oh.make_tensor_value_info(output, types[name], None))
                graph_outputs.add(output)
                exposed.append(BranchValue(name, output, node.input[0], side == "then_branch"))
    return exposed
