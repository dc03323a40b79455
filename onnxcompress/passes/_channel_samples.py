"""Helpers of the channel analysis: BatchNorm-derived activation samples and node readers.

Per-channel samples (``N_SAMPLES`` normal quantiles, pushed through unary and binary ops:
``_unary_samples``, ``_BINARY``, ``_per_channel``) give consumers an estimate of their input
channels' mean and energy without calibration data; ``_int_attr``/``_ints_attr``/``_float_attr``
and ``_symbolic_shape`` read attributes and shape constants.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxcompress.graph.constants import const_array

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
