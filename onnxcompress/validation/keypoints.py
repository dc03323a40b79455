"""Keypoint heat maps: outputs ``[N, K, H, W]`` or ``[N, H, W, K]`` whose task reads, per
channel, the cell of the peak (a pose network's joints: BodyPix / PoseNet, HRNet, hand and face
landmark heat maps). A cosine or a mean squared deviation averages away what such a task sees:
int8 moved BodyPix's peaks past a neighbouring cell on 2-5% of its joints (nearly all where two
candidates were within 0.2 logits) at a heat-map error of 1%, and nothing measured it (batch 27).

``heatmap_axis`` finds the layout from the values (the channel axis is the rough one, the two
spatial axes smooth; one compact blob a channel where its peak is present); ``keypoint_ratios``
gives auto's ``keypoints>=`` target and the int8 guard's flip count their flip ratios, and
``moved_keypoints`` compare its count of the peaks that moved. A peak that moves to a
neighbouring cell is no change: the offsets a decoder adds there point at the same joint.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx_ir as ir

#: Channels (keypoints) a heat map has at most (COCO-WholeBody: 133), and its sides at least.
MAX_KEYPOINTS = 256
MIN_SIDE = 8
#: A channel's peak counts where it is present: a logit map's above 0 (a sigmoid's 0.5; BodyPix
#: decodes only those), a map of scores (HRNet's Gaussians, near 0 away from a joint) at least
#: PRESENT_SHARE of the output's highest peak. Logits go LOGIT_LOW below 0 for every 1 above.
PRESENT_SHARE = 0.3
LOGIT_LOW = 0.25
#: A heat map's present peaks are compact: the median share of a channel's cells above the
#: presence level (logits: 0; else half the peak) is at most BLOB_AREA. BodyPix's joints 4.5%;
#: its body-part maps (24 regions, read per pixel) 43%, its person mask 59%, offsets ~50%.
BLOB_AREA = 0.1
#: ... over at least this many present channels of the samples given.
MIN_PRESENT = 4
#: Where the graph is at hand, a heat map is a linear layer's scores or their sigmoid (past layout
#: ops and a constant bias or scale: ``heatmap_heads``). A YOLO11-seg's 32 mask prototypes
#: ``[N, 32, 160, 160]`` (a SiLU's output: compact blobs in rough channels) are not.
HEAD_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum", "Sigmoid"})


def _channels_first(a: np.ndarray, axis: int) -> np.ndarray:
    """``a`` as ``[N, K, H, W]``."""
    return a if axis == 1 else np.moveaxis(a, 3, 1)


def _logits(a: np.ndarray) -> bool:
    """Whether heat maps ``a`` are logits (BodyPix: -14 to 7) rather than scores near 0 away from
    a joint (a regression to Gaussians dips a little below 0)."""
    low, high = float(np.min(a)), float(np.max(a))
    return high <= 0 or low < -LOGIT_LOW * high


def _present(peaks: np.ndarray, logits: bool) -> np.ndarray:
    if logits:
        return peaks > 0
    top = float(peaks.max()) if peaks.size else 0.0
    return (peaks > 0) & (peaks >= PRESENT_SHARE * top)


def _blob_area(maps: np.ndarray, logits: bool) -> float | None:
    """Median share of a present channel's cells above its presence level, over ``maps``
    ``[N, K, H, W]``; None with fewer than MIN_PRESENT present channels."""
    rows = maps.reshape(-1, maps.shape[2] * maps.shape[3]).astype(np.float64)
    peaks = rows.max(axis=1)
    present = _present(peaks, logits)
    if int(present.sum()) < MIN_PRESENT:
        return None
    rows, peaks = rows[present], peaks[present]
    level = np.zeros_like(peaks) if logits else peaks / 2
    return float(np.median((rows > level[:, None]).mean(axis=1)))


def heatmap_axis(a: np.ndarray) -> int | None:
    """The channel axis (1 or 3) of ``a`` when it is a keypoint heat map (see the module): its
    ``heatmap_layout``, with one compact blob a channel where the peak is present. Else None."""
    axis = heatmap_layout(a)
    if axis is None:
        return None
    maps = _channels_first(np.asarray(a), axis)
    logits = _logits(maps)
    if not logits and np.allclose(maps.sum(axis=1), 1.0, atol=1e-3):
        return None  # a softmax over the channels: a class map, read per pixel
    area = _blob_area(maps, logits)
    return axis if area is not None and area <= BLOB_AREA else None


def heatmap_layout(a: np.ndarray) -> int | None:
    """The channel axis (1 or 3) ``a`` would have as heat maps, from its shape and values alone:
    the rougher of axes 1 and 3 (neighbouring keypoints are unrelated, neighbouring cells alike:
    BodyPix's ``[N, H, W, 17]`` joints 0.20 against 0.06-0.07, in mean squared neighbour
    difference over the variance), rougher than either spatial axis, with 2 to MAX_KEYPOINTS
    channels and sides of MIN_SIDE or more. None otherwise."""
    a = np.asarray(a)
    if a.ndim != 4 or not np.issubdtype(a.dtype, np.floating) or not a.size \
            or not np.all(np.isfinite(a)):
        return None
    rough = {ax: _roughness(a, ax) for ax in (1, 2, 3)}
    axis = 1 if rough[1] > rough[3] else 3
    if rough[axis] <= max(rough[2], rough[4 - axis]):
        return None
    k, h, w = _channels_first(a, axis).shape[1:]
    return axis if 2 <= k <= MAX_KEYPOINTS and min(h, w) >= MIN_SIDE else None


def _roughness(a: np.ndarray, axis: int) -> float:
    """Mean squared difference of neighbours along ``axis`` over the variance (0: constant)."""
    if a.shape[axis] < 2:
        return 0.0
    x = a.astype(np.float64)
    var = float(x.var())
    return float(np.mean(np.square(np.diff(x, axis=axis)))) / var if var > 0 else 0.0


def heatmap_heads(model: ir.Model) -> set[str]:
    """The graph outputs of ``model`` that may be heat maps: made by an op of HEAD_OPS."""
    from onnxcompress.graph.outputs import head_op

    return {v.name for v in model.graph.outputs if head_op(v) in HEAD_OPS}


def keypoint_heatmaps(outputs: Mapping[str, np.ndarray],
                      heads: Collection[str] | None = None) -> dict[str, int]:
    """The outputs that are keypoint heat maps, with their channel axis; of ``heads`` only
    (``heatmap_heads``) when given."""
    found = {}
    for name, value in outputs.items():
        if heads is not None and name not in heads:
            continue
        axis = heatmap_axis(np.asarray(value))
        if axis is not None:
            found[name] = axis
    return found


def keypoint_rows(a: np.ndarray, axis: int) -> tuple[np.ndarray, int]:
    """Heat maps ``a`` as one row of cells per sample and channel ``[N x K, H x W]``, and the
    width a row's cells wrap at."""
    maps = _channels_first(np.asarray(a, dtype=np.float64), axis)
    return maps.reshape(-1, maps.shape[2] * maps.shape[3]), maps.shape[3]


def present_rows(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which of ``rows`` (``keypoint_rows`` of ``a``) hold a present peak."""
    return _present(rows.max(axis=1), _logits(a))


def keypoint_ratios(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    """Per present keypoint (sample and channel) of the original heat maps ``a``: how near the
    compressed ``b`` brings its peak to moving past the cells next to it (``auto.flips.flip_ratios``'
    share of the lead lost; > 1: moved). The peak's 3 x 3 neighbourhood is one cell, at its
    highest value, in both."""
    from onnxcompress.auto.flips import position_ratios  # auto's package is heavy: when needed
    ra, width = keypoint_rows(a, axis)
    rb, _ = keypoint_rows(b, axis)
    keep = present_rows(a, ra)
    ra, rb = ra[keep], rb[keep]
    if not len(ra):
        return np.zeros(0)
    near = neighbourhood(ra.argmax(axis=1), ra.shape[1], width)
    merged = []
    for r in (ra, rb):
        inside = np.where(near, r, -np.inf).max(axis=1, keepdims=True)
        outside = np.where(near, r.min(axis=1, keepdims=True), r)  # never the runner-up
        merged.append(np.concatenate([inside, outside], axis=1))
    ratio, _ = position_ratios(*merged)
    return ratio.max(axis=1)


def moved_keypoints(out: np.ndarray, ref: np.ndarray, axis: int) -> tuple[int, int]:
    """How many of ``ref``'s present keypoints have ``out``'s peak more than one cell from
    ``ref``'s, and how many there are."""
    ra, width = keypoint_rows(ref, axis)
    ro, _ = keypoint_rows(out, axis)
    keep = present_rows(ref, ra)
    pa, po = ra[keep].argmax(axis=1), ro[keep].argmax(axis=1)
    far = (np.abs(pa // width - po // width) > 1) | (np.abs(pa % width - po % width) > 1)
    return int(far.sum()), int(keep.sum())


def neighbourhood(peaks: np.ndarray, cells: int, width: int) -> np.ndarray:
    """``[R, cells]``: the cells within one of each row's ``peaks`` (Chebyshev distance)."""
    index = np.arange(cells)
    dy = np.abs(index[None, :] // width - (peaks // width)[:, None])
    dx = np.abs(index[None, :] % width - (peaks % width)[:, None])
    return (dy <= 1) & (dx <= 1)
