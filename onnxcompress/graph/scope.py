"""Where a value is read across graph scopes: an If/Loop/Scan body reads values of the graphs
around it by name, so a node that feeds such a read must come before the node holding the body."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import onnx_ir as ir


def node_subgraphs(node: ir.Node) -> Iterator[ir.Graph]:
    """The bodies a node holds (If's branches, Loop's and Scan's body)."""
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            yield attr.value
        elif attr.type == ir.AttributeType.GRAPHS:
            yield from attr.value


def has_subgraph(node: ir.Node) -> bool:
    """Whether ``node`` holds a body (If, Loop, Scan)."""
    return next(node_subgraphs(node), None) is not None


def first_reader(graph: ir.Graph, readers: Iterable[ir.Node]) -> ir.Node | None:
    """The first node of ``graph`` that is one of ``readers`` or holds one inside its bodies:
    nodes computing what the readers will read go before it (None: none of them is in ``graph``)."""
    users = {id(node) for node in readers}
    for node in graph:
        if id(node) in users:
            return node
        for sub in node_subgraphs(node):
            if any(id(n) in users for n in ir.traversal.RecursiveGraphIterator(sub)):
                return node
    return None
