"""Per-input-channel statistics spread over a weight, once for every pass.

An activation statistic (mean, energy, RMS) has one value per channel of the activation a weight
reads; pruning importance, k-means importance and bias correction need it per weight element.
A grouped Conv's activation has ``groups`` times the weight's input channels: output channel
``m`` reads the input channels of its group ``m // (out / groups)``.
"""

from __future__ import annotations

import numpy as np

from onnxcompress.weights import Weight


def channel_table(w: Weight, shape: tuple[int, ...], per_channel: np.ndarray) -> np.ndarray | None:
    """``per_channel`` arranged for a weight of ``shape``: itself ([cin]) when the activation has
    the weight's input channels, an [out, cin] table for a grouped Conv, else None. The dtype of
    ``per_channel`` is kept."""
    if w.in_axis is None:
        return None
    in_axis = w.in_axis % len(shape)
    cin = shape[in_axis]
    values = np.asarray(per_channel).reshape(-1)
    if values.size == cin:
        return values
    if w.out_axis is None or cin == 0 or values.size % cin:
        return None
    groups = values.size // cin
    m = shape[w.out_axis % len(shape)]
    if m % groups:
        return None
    return values.reshape(groups, cin)[np.arange(m) // (m // groups)]  # [M, cin]


def per_element(w: Weight, shape: tuple[int, ...], per_channel: np.ndarray) -> np.ndarray | None:
    """``per_channel`` broadcast to the weight (a read-only view of ``shape``): each element gets
    the value of the input channel it multiplies (grouped Conv included); None if it cannot."""
    table = channel_table(w, shape, per_channel)
    if table is None:
        return None
    in_axis = w.in_axis % len(shape)  # type: ignore[operator]
    bshape = [1] * len(shape)
    if table.ndim == 1:
        bshape[in_axis] = table.size
        return np.broadcast_to(table.reshape(bshape), shape)
    out_axis = w.out_axis % len(shape)  # type: ignore[operator]
    bshape[out_axis], bshape[in_axis] = table.shape
    t = table if out_axis < in_axis else table.T
    return np.broadcast_to(t.reshape(bshape), shape)
