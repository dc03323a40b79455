"""The result of the channel analysis, and applying it: which constants shrink, and shrinking them.

``ChannelGraph`` (spaces joined into groups by union-find, frozen groups with reasons, the
producers, consumers and constant cuts of each group; ``apply(keep)`` removes the channels not
kept from every weight and constant, and fixes depthwise ``group`` attributes and Reshape shapes),
``Layout``/``Producer``/``Consumer``/``Group``, and the constant editing it needs
(``set_const_array``; reading one: ``graph.constants.const_array``). The analysis that builds
it: :mod:`._channels`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxcompress.graph.constants import const_array
from onnxcompress.weights import Weight, unique_name


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
            del array  # then unmap an external input's pages: one weight at a time (issue 18)
            weight.release()
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
