"""The channel analysis's shape and layout ops: how Concat, Split, Slice, Transpose, (Un)Squeeze,
Flatten, Reshape, Shape, Resize, Pad and Softmax carry (or freeze) the tracked channels.

``_ShapeOps`` is a base class of :class:`onnxcompress.passes._channels._Analyzer`, whose ``visit``
finds these handlers by name (``op_<OpType>``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.graph.constants import const_array
from onnxcompress.passes._channel_graph import Layout
from onnxcompress.passes._channel_samples import _BINARY, _int_attr, _ints_attr, _per_channel, _symbolic_shape


class _ShapeOps:
    """``_Analyzer``'s handlers for the ops that move channels between axes or tensors."""

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
