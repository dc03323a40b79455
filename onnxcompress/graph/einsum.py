"""Reading a two-operand ``Einsum`` whose one operand is a constant layer weight."""

from __future__ import annotations

import onnx_ir as ir


def operand_axes(node: ir.Node, index: int, rank: int) -> tuple[list[int], list[int], list[int]] | None:
    """For operand ``index`` (of ``rank``) of a two-operand Einsum: its output axes (letters only
    it and the result carry), its input axes (letters summed against the other operand) and its
    group axes (letters all three carry: DeepFilterNet's grouped linear ``btgi,gih->btgh``, g).
    None where the equation is not plain letters of that rank (an ellipsis, one operand)."""
    attr = node.attributes.get("equation")
    equation = str(attr.value).replace(" ", "") if attr is not None else ""
    operands, arrow, result = equation.partition("->")
    terms = operands.split(",")
    if not arrow or "." in equation or len(terms) != 2 or not all(t.isalpha() for t in terms):
        return None
    mine, other = terms[index], terms[1 - index]
    if len(mine) != rank or len(set(mine)) != len(mine):
        return None
    out = [a for a, c in enumerate(mine) if c in result and c not in other]
    summed = [a for a, c in enumerate(mine) if c not in result and c in other]
    groups = [a for a, c in enumerate(mine) if c in result and c in other]
    return out, summed, groups


def weight_axes(node: ir.Node, index: int, rank: int) -> tuple[int | None, int | None] | None:
    """(output axis, input axis) of a constant operand as a layer weight: its last output axis
    and its first summed axis (None where it has none); None where the equation is unread."""
    axes = operand_axes(node, index, rank)
    if axes is None:
        return None
    out, summed, _ = axes
    return (out[-1] if out else None), (summed[0] if summed else None)


def einsum_groups(weight) -> list[int]:  # noqa: ANN001 - a weights.Weight (which imports this module)
    """The group axes (see :func:`operand_axes`) of a weight one Einsum reads directly, else []."""
    if len(weight.uses) != 1 or weight.via or weight.uses[0].node.op_type != "Einsum":
        return []
    use = weight.uses[0]
    axes = operand_axes(use.node, use.index, len(weight.shape))
    return axes[2] if axes else []
