"""How one weight is clustered for k-means sharing: its rows (per tensor or per group of output
channels), optional per-channel scales, importance weights from calibration statistics and a
following BatchNorm's gain. Pure numpy on one weight at a time; the graph is written by
:mod:`onnxcompress.passes._kmeans_decode`, bias correction by :mod:`onnxcompress.layerwise.bias`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from onnxcompress import kmeans
from onnxcompress.graph.constants import const_array
from onnxcompress.layerwise.channels import per_element
from onnxcompress.passes._half_store import half_grid
from onnxcompress.passes._qdq import int8_grid
from onnxcompress.weights import Weight

# Error sums run over this many values at a time, so a weight of any size needs float64
# temporaries of 8 MB, not 8 bytes per value (a 268 MB layer: 540 MB each).
_CHUNK = 1 << 20


def _sq_error(snapped: np.ndarray, array: np.ndarray, importance: np.ndarray | None = None) -> float:
    """sum(importance * (snapped - array)^2) in float64, in chunks of the flat arrays."""
    a, b = snapped.reshape(-1), array.reshape(-1)
    imp = None if importance is None else np.broadcast_to(importance, array.shape).reshape(-1)
    total = 0.0
    buf = np.empty(min(a.size, _CHUNK), dtype=np.float64)
    for start in range(0, a.size, _CHUNK):
        # The difference in float64 straight from the float32 inputs (one temporary, not two).
        d = np.subtract(a[start : start + _CHUNK], b[start : start + _CHUNK], dtype=np.float64,
                        out=buf[: min(_CHUNK, a.size - start)])
        d *= d
        if imp is not None:
            d *= imp[start : start + _CHUNK]
        total += float(d.sum())
    return total


def _lookup(codebook: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``codebook[g, labels[g, i]]`` for rows ``g`` ([G, K] and [G, N] -> [G, N]), indexed in
    chunks: numpy widens index arrays to intp, 8 bytes a value for the whole array at once."""
    out = np.empty(labels.shape, dtype=codebook.dtype)
    step = _CHUNK >> 4  # np.take's intp copy of the indices stays in cache: 2x faster
    for g in range(labels.shape[0]):
        row, book, dst = labels[g], codebook[g], out[g]
        for start in range(0, row.size, step):
            np.take(book, row[start : start + step], out=dst[start : start + step], mode="clip")
    return out


def _sq_norm(array: np.ndarray) -> float:
    flat = array.reshape(-1)
    return float(sum(float(np.square(flat[i : i + _CHUNK], dtype=np.float64).sum())
                     for i in range(0, flat.size, _CHUNK)))


class FitOptions(Protocol):
    """The clustering options (a ``WeightSharingConfig`` is one)."""

    channel_scale: str
    init: str
    max_iter: int
    tol: float


# channel_scale="auto": per-layer codebooks take channel scales when they cut the (importance-
# weighted) squared error of the weight by this factor.
_SCALE_GAIN = 0.8
# With a model-wide codebook, a tensor is normalised per channel when its channels' RMS values
# spread by more than this factor (10th to 90th percentile), as after BatchNorm folding, and as
# a whole otherwise: the codebook is fitted to the normalised values, so the choice comes first.
_CHANNEL_SPREAD = 3.0


def _choose_channel_scales(
    cfg: FitOptions, can_scale: bool, cluster: Callable[[bool], _Clustering]
) -> _Clustering:
    """``cluster(scaled)`` with per-channel scales always ("on"), never, or ("auto") when they
    cut the error clearly: they cost one float per channel (the scaled clustering itself
    minimises the weight's squared error)."""
    if cfg.channel_scale == "on" and can_scale:
        return cluster(True)
    if cfg.channel_scale == "auto" and can_scale:
        plain, scaled = cluster(False), cluster(True)
        return scaled if scaled.objective < _SCALE_GAIN * plain.objective else plain
    return cluster(False)


def _use_channel_scales(cfg: FitOptions, array: np.ndarray, axis: int | None) -> bool:
    """In a model-wide codebook: normalise this tensor per channel (else as a whole)."""
    if cfg.channel_scale == "off" or axis is None or array.shape[axis] < 2:
        return False
    return cfg.channel_scale == "on" or _channels_differ(array, axis)

def _output_gain(w: Weight) -> np.ndarray | None:
    """Per output channel, the factor a following BatchNormalization applies to the layer's
    output (scale / sqrt(var + eps)): an error in a channel the norm amplifies costs more."""
    if len(w.uses) != 1 or w.out_axis is None:
        return None
    node = w.uses[0].node
    if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.outputs) != 1:
        return None
    users = list(node.outputs[0].uses())
    if len(users) != 1:
        return None
    bn, index = users[0]
    if bn.op_type != "BatchNormalization" or index != 0 or len(bn.inputs) < 5 or len(bn.outputs) != 1:
        return None
    scale, var = const_array(bn.inputs[1]), const_array(bn.inputs[4])
    if scale is None or var is None or scale.shape != var.shape:
        return None
    eps = bn.attributes.get("epsilon")
    gain = np.abs(scale.astype(np.float64)) / np.sqrt(var.astype(np.float64) + (eps.value if eps else 1e-5))
    channels = w.shape[w.out_axis % len(w.shape)]
    if gain.size != channels or not np.isfinite(gain).all():
        return None
    return gain


def _with_output_gain(w: Weight, shape: tuple[int, ...], importance: np.ndarray | None) -> np.ndarray | None:
    """``importance`` times the squared BatchNorm gain of each output channel, renormalised."""
    gain = _output_gain(w)
    if gain is None or not len(shape):
        return importance
    bshape = [1] * len(shape)
    bshape[w.out_axis % len(shape)] = -1
    g2 = np.broadcast_to((gain**2).reshape(bshape), shape)
    combined = g2 if importance is None else importance * g2
    mean = float(combined.mean())
    if not np.isfinite(mean) or mean <= 0:
        return importance
    return np.maximum(combined / mean, 1e-4)


def _channels_differ(array: np.ndarray, axis: int) -> bool:
    rms = _rms_scales(array, axis).astype(np.float64)
    lo, hi = np.percentile(rms, [10, 90])
    return bool(hi > _CHANNEL_SPREAD * lo)


@dataclass
class _Clustering:
    """One tensor's k-means result in its own layout."""

    km: kmeans.KMeansResult
    layout: _Layout
    labels: np.ndarray  # uint8, the weight's shape
    codebook: np.ndarray  # [rows, k] in the weight's dtype
    scales: np.ndarray | None  # [channels] in the weight's dtype, along layout.scale_axis
    scale_axis: int | None
    snapped: np.ndarray  # what the decode graph computes, the weight's shape and dtype
    objective: float  # (importance-)weighted squared error


def _rms_scales(array: np.ndarray, axis: int | None) -> np.ndarray:
    """RMS per channel along ``axis`` (or of the whole tensor), in the weight's dtype; 1 where
    it is 0 or not finite."""
    work = array.astype(np.float64) ** 2
    if axis is None:
        rms = np.sqrt(np.asarray(work.mean()))
    else:
        rms = np.sqrt(work.mean(axis=tuple(i for i in range(array.ndim) if i != axis)))
    scales = np.asarray(rms).astype(array.dtype)
    scales[~np.isfinite(scales.astype(np.float64)) | (scales == 0)] = 1
    return scales


def _broadcast(scales: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    if axis is None:
        return scales.astype(np.float64)
    shape = [1] * ndim
    shape[axis] = -1
    return scales.astype(np.float64).reshape(shape)


def _channel_error(c: _Clustering, array: np.ndarray, axis: int) -> float:
    """Mean over output channels of the squared relative error: scale-free, so a channel with
    small weights (common after BatchNorm folding) counts as much as a large one."""
    moved = np.moveaxis(array.astype(np.float64), axis, 0).reshape(array.shape[axis], -1)
    diff = np.moveaxis(c.snapped.astype(np.float64), axis, 0).reshape(moved.shape) - moved
    norm = (moved**2).sum(axis=1)
    ok = norm > 0
    return float(((diff**2).sum(axis=1)[ok] / norm[ok]).mean()) if ok.any() else 0.0


def _scaled_clustering(
    km: kmeans.KMeansResult,
    codebook: np.ndarray,
    labels: np.ndarray,
    array: np.ndarray,
    scales: np.ndarray,
    axis: int | None,
    importance: np.ndarray | None,
) -> _Clustering:
    """A weight decoded as codebook[labels] * scales (a scalar, or per channel along ``axis``)."""
    dtype = array.dtype
    if axis is not None:
        bshape = [1] * array.ndim
        bshape[axis] = -1
        s = scales.reshape(bshape)
    else:
        s = scales
    snapped = (codebook[labels.astype(np.intp)] * s).astype(dtype)  # as Gather then Mul compute it
    objective = _sq_error(snapped, array, importance)
    return _Clustering(
        km=km,
        layout=_Layout(tuple(array.shape), None, 1),
        labels=labels,
        codebook=codebook[None, :],
        scales=np.asarray(scales, dtype=dtype).reshape(-1),
        scale_axis=axis,
        snapped=snapped,
        objective=objective,
    )


def _cluster(
    array: np.ndarray,
    bits: int,
    row_axis: int | None,
    group: int,
    scale_axis: int | None,
    importance: np.ndarray | None,
    cfg: FitOptions,
    rng: np.random.Generator,
    *,
    norm: str = "rms",
    init: str | None = None,
) -> _Clustering:
    """k-means of ``array``: one codebook per tensor or per group of output channels; with a
    ``scale_axis``, channels are divided by their RMS (``norm="absmax"``: their largest
    magnitude) first and share the codebook, and the squared error is weighed by scale^2 so
    k-means minimises the error of the weight itself."""
    dtype = array.dtype
    cdtype = np.float64 if dtype == np.float64 else np.float32
    weight = importance
    scales = None
    if scale_axis is None:
        work = array  # the rows are the weight itself in the clustering dtype (no float64 copy)
    else:
        if norm == "absmax":
            rms = _channel_reduce(array, scale_axis, "absmax")
        else:
            per_channel = max(array.size // array.shape[scale_axis], 1)
            rms = np.sqrt(_channel_reduce(array, scale_axis, "sumsq") / per_channel)
        # The scale is stored in the weight's dtype, or float16 where every channel's is a
        # normal float16 number (``_kmeans_decode.rewrite``: half the bytes): normalise by
        # exactly the value stored. Any positive scale serves (the codebook adapts).
        scales = (half_grid(rms.astype(np.float64)) if dtype == np.float32 else rms).astype(dtype)
        scales[~np.isfinite(scales.astype(np.float64)) | (scales == 0)] = 1
        bshape = [1] * array.ndim
        bshape[scale_axis] = -1
        s = scales.astype(np.float64).reshape(bshape)
        work = _divide(array, s, scale_axis, cdtype)
        # A long row takes the binned path, which reads the weights a chunk at a time in
        # float64: float32 scale^2 there halves the largest temporary (a 4096x4096 layer: 67 MB
        # instead of 134); short rows keep float64 weights (exact prefix sums).
        wdtype = np.float32 if weight is None and array.size >= kmeans.BIN_MIN_N else np.float64
        s2 = np.broadcast_to((s**2).astype(wdtype), array.shape)
        weight = s2 if weight is None else weight * s2
    rows, layout = _rows(work.astype(cdtype, copy=False), row_axis, group)
    del work
    sample_weight = None
    if weight is not None:
        sample_weight, _ = _rows(np.ascontiguousarray(np.broadcast_to(weight, array.shape)), row_axis, group)
    km = kmeans.kmeans_1d(
        rows, bits, sample_weight=sample_weight, init=init or cfg.init, max_iter=cfg.max_iter, tol=cfg.tol,
        rng=rng,
    )
    del rows, sample_weight, weight  # the normalised copy and the scale^2 weights: before the lookup
    codebook = km.codebook.astype(dtype)
    snapped = layout.restore(_lookup(codebook, km.labels))
    if scales is not None:
        snapped *= scales.reshape(bshape)  # in the weight's dtype, as Mul computes it
    objective = _sq_error(snapped, array, importance)
    return _Clustering(
        km=km,
        layout=layout,
        labels=layout.restore(km.labels),
        codebook=codebook,
        scales=scales,
        scale_axis=scale_axis,
        snapped=snapped.astype(dtype, copy=False),
        objective=objective,
    )

# Weights over CHOOSE_MIN_SIZE values choose between their candidate fits (channel scales or
# not, the initialisation, int8's grid, the int8-exact form and its clipping ratios) on a strided
# subsample of about CHOOSE_N values, and only the winner is fitted and labelled in full: each
# candidate was a full clustering, labelling and error pass (issue 18: three per weight at 8 bits,
# the pass 1.42x onnxruntime's quantize_dynamic on the 2.4 GB stack). Each output channel keeps
# at least _CHOOSE_PER_CHANNEL of its values; smaller weights choose on every value, as before.
# int8's bar on the sample takes the whole channels' largest magnitudes (_int8_error's amax):
# with the sample's own, bert_tiny's 2^21-value token table chose absmax channel scales
# where every value keeps plain levels (error 0.00648 -> 0.00692).
CHOOSE_MIN_SIZE = 1 << 20
CHOOSE_N = 1 << 20
_CHOOSE_PER_CHANNEL = 64


@dataclass
class _Sample:
    """A strided subsample of a weight: ``values`` [channels, m] with the output channels on
    axis 0 (``axis`` 0), or flat [m] (``axis`` None); ``importance`` sampled alike."""

    values: np.ndarray
    axis: int | None
    importance: np.ndarray | None


def _subsample(array: np.ndarray, axis: int | None, importance: np.ndarray | None) -> _Sample | None:
    """``array``'s deterministic strided subsample for choosing its fit, or None (too small to
    gain, or too few values per channel). Gathers by index, so neither the weight nor a
    broadcast importance is copied whole."""
    if array.size <= CHOOSE_MIN_SIZE or array.ndim == 0:
        return None
    step = -(-array.size // CHOOSE_N)
    if axis is None:
        if step < 2:
            return None
        idx = np.unravel_index(np.arange(0, array.size, step), array.shape)
        imp = None if importance is None else np.broadcast_to(importance, array.shape)[idx]
        return _Sample(np.ascontiguousarray(array[idx]), None, imp)
    inner = tuple(d for i, d in enumerate(array.shape) if i != axis)
    cols = max(array.size // array.shape[axis], 1)
    step = min(step, cols // _CHOOSE_PER_CHANNEL)
    if step < 2:
        return None
    idx = np.unravel_index(np.arange(0, cols, step), inner) if inner else ()

    def take(x: np.ndarray) -> np.ndarray:
        moved = np.moveaxis(np.broadcast_to(x, array.shape), axis, 0)
        return np.ascontiguousarray(moved[(slice(None), *idx)]).reshape(array.shape[axis], -1)

    return _Sample(take(array), 0, None if importance is None else take(importance))


# -- layouts: rows to cluster <-> the weight's own shape ------------------------------------------


@dataclass
class _Layout:
    shape: tuple[int, ...]
    axis: int | None  # the output-channel axis the rows are built along (None: one row)
    group: int  # channels per row

    @property
    def channels(self) -> int:
        return self.shape[self.axis] if self.axis is not None else 1

    def restore(self, rows: np.ndarray) -> np.ndarray:
        if self.axis is None:
            return rows.reshape(self.shape)
        moved = (self.shape[self.axis], *self.shape[: self.axis], *self.shape[self.axis + 1 :])
        return np.moveaxis(rows.reshape(moved), 0, self.axis)

    def row_of_channel(self) -> np.ndarray:
        return np.arange(self.channels) // self.group


def _rows(array: np.ndarray, axis: int | None, group: int) -> tuple[np.ndarray, _Layout]:
    """``array`` as [rows, values]: one row, or one per ``group`` output channels on ``axis``."""
    if axis is None or array.ndim == 0:
        return array.reshape(1, -1), _Layout(tuple(array.shape), None, 1)
    axis = axis % array.ndim
    channels = array.shape[axis]
    group = max(1, min(group, channels))
    while channels % group:  # rows must be equally long: the largest divisor <= group
        group -= 1
    moved = np.moveaxis(array, axis, 0).reshape(channels // group, -1)
    return moved, _Layout(tuple(array.shape), axis, group)


def _channel_reduce(array: np.ndarray, axis: int, how: str) -> np.ndarray:
    """Per channel along ``axis``: the largest magnitude ("absmax") or the float64 sum of
    squares ("sumsq"), over blocks of leading-axis slices, so no whole-weight float64 copy."""
    axis %= array.ndim
    out = np.zeros(array.shape[axis], dtype=np.float64)
    step = max(1, _CHUNK // max(array[0].size if array.ndim > 1 else 1, 1))
    for a in range(0, array.shape[0], step):
        block = array[a : a + step].astype(np.float64)
        other = tuple(i for i in range(array.ndim) if i != axis)
        part = np.max(np.abs(block), axis=other) if how == "absmax" else np.square(block).sum(axis=other)
        if axis == 0:
            out[a : a + step] = part
        elif how == "absmax":
            np.maximum(out, part, out=out)
        else:
            out += part
    return out


def _divide(array: np.ndarray, s: np.ndarray, axis: int, dtype: type) -> np.ndarray:
    """``array / s`` computed in float64 and stored in ``dtype``, a block of leading-axis slices
    at a time (``s`` broadcasts along ``axis``)."""
    axis %= array.ndim
    out = np.empty(array.shape, dtype=dtype)
    step = max(1, _CHUNK // max(array[0].size if array.ndim > 1 else 1, 1))
    for a in range(0, array.shape[0], step):
        sb = s[a : a + step] if axis == 0 else s
        out[a : a + step] = array[a : a + step].astype(np.float64) / sb
    return out


def _element_importance(w: Weight, shape: tuple[int, ...], energy: np.ndarray) -> np.ndarray | None:
    """Per-element importance: the energy of the input channel each weight value multiplies."""
    imp = per_element(w, shape, np.asarray(energy, dtype=np.float64))
    if imp is None:
        return None
    mean = float(imp.mean())
    if not np.isfinite(mean) or mean <= 0:
        return None
    # Normalised; a floor keeps channels that calibration never excited from being ignored.
    return np.maximum(imp / mean, 1e-2)


def _resnap(c: _Clustering, codebook: np.ndarray) -> np.ndarray:
    """What the decode graph computes from ``c``'s labels with another ``codebook`` (rows as
    ``c.codebook``; e.g. its float16 rounding), in the weight's dtype."""
    dtype = c.snapped.dtype
    values = c.layout.restore(_lookup(codebook.astype(dtype), c.km.labels))
    if c.scales is not None:
        values = values * _broadcast(c.scales, values.ndim, c.scale_axis).astype(dtype)
    return values.astype(dtype, copy=False)


def _relative_error(snapped: np.ndarray, array: np.ndarray) -> float:
    """||snapped - array|| / ||array||, accumulated in float64."""
    ref = _sq_norm(array)
    return float(np.sqrt(_sq_error(snapped, array) / ref)) if ref > 0 else 0.0


def _int8_error(array: np.ndarray, axis: int | None, amax: np.ndarray | None = None) -> float:
    """Relative error of symmetric int8 per-channel weights (scale = absmax / 127 per output
    channel, as the quantize pass's weight-only int8): the bar 8-bit sharing must clear.
    Computed a block of leading-axis slices at a time (no whole-weight float64 copies)."""
    if array.ndim == 0 or array.size == 0:
        return 0.0
    # ``amax``: the largest magnitudes of the whole weight when ``array`` is its _subsample (a
    # sample's own maxima are smaller: int8's grid would look finer than it is).
    if axis is None:
        if amax is None:
            amax = np.asarray(_channel_reduce(array.reshape(1, -1), 0, "absmax")[0])
        scale = np.where(amax > 0, amax / 127.0, 1.0)
    else:
        axis %= array.ndim
        if amax is None:
            amax = _channel_reduce(array, axis, "absmax")
        bshape = [1] * array.ndim
        bshape[axis] = -1
        # quantize_weight's: a single channel's scale is not rounded to float16
        one = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32).astype(np.float64)
        scale = (int8_grid(amax) if amax.size > 1 else one).reshape(bshape)
    err = ref = 0.0
    step = max(1, _CHUNK // max(array[0].size if array.ndim > 1 else 1, 1))
    for a in range(0, array.shape[0], step):
        work = array[a : a + step].astype(np.float64)
        sb = scale[a : a + step] if axis == 0 else scale
        q = np.clip(np.round(work / sb), -127, 127) * sb
        err += float(np.square(q - work).sum())
        ref += float(np.square(work).sum())
    return float(np.sqrt(err / ref)) if ref > 0 else 0.0


# Weights up to this size have their clustering's channel sums kept (``keep_channel_sums``:
# a sort per channel); larger ones mostly take the int8-exact form, whose rounding keeps them.
KEEP_SUMS_MAX = CHOOSE_MIN_SIZE


def keep_channel_sums(c: _Clustering, book: np.ndarray, array: np.ndarray,
                      out_axis: int | None) -> _Clustering | None:
    """``c``'s labels (decoded through ``book``, rows as ``c.codebook``: sorted centroids) with
    each output channel's sum kept: in every channel whose decoded values' sum is off by more
    than a neighbouring centroid's step, values move to the neighbouring centroid against the
    excess, cheapest first (added squared error per unit of sum), as far as that brings the sum
    closer. As int8's ``round_keeping_sums``: a channel's response to a constant input is what
    real, non-zero-mean inputs see first. ``c`` with the new labels (its ``snapped`` through
    ``book``), or None (nothing moved, or a weight this does not apply to)."""
    if out_axis is None or array.ndim < 2 or array.size > KEEP_SUMS_MAX or book.shape[1] < 2:
        return None
    dtype = c.snapped.dtype
    book = book.astype(dtype)
    last = book.shape[1] - 1
    scales = None if c.scales is None else _broadcast(c.scales, array.ndim, c.scale_axis).astype(dtype)

    def decode(labels: np.ndarray) -> np.ndarray:
        values = c.layout.restore(_lookup(book, np.clip(labels, 0, last).astype(np.uint8)))
        return (values if scales is None else values * scales).astype(np.float64)

    rows = _rows(c.labels, c.layout.axis, c.layout.group)[0].astype(np.int16)  # c.km may span a model
    now = decode(rows)
    moved = (array.shape[out_axis], -1)

    def by_channel(x: np.ndarray) -> np.ndarray:
        return np.moveaxis(x, out_axis, 0).reshape(moved)

    w = by_channel(array.astype(np.float64))
    v = by_channel(now)
    excess = (v - w).sum(axis=1)
    down, up = by_channel(decode(rows - 1)), by_channel(decode(rows + 1))
    step = np.where(excess[:, None] > 0, down, up) - v  # toward the sum: <= 0 where in excess
    size = np.abs(step)
    cost = step * step + 2 * step * (v - w)  # added squared error of the move
    usable = size > 0
    order = np.argsort(np.where(usable, cost / np.where(usable, size, 1.0), np.inf), axis=1)
    sorted_size = np.take_along_axis(np.where(usable, size, 0.0), order, axis=1)
    left = np.abs(np.abs(excess)[:, None] - np.cumsum(sorted_size, axis=1))
    best = left.argmin(axis=1)
    take = np.where(left[np.arange(len(best)), best] < np.abs(excess), best + 1, 0)
    if not take.any():
        return None
    chosen = np.arange(order.shape[1])[None, :] < take[:, None]
    flip = np.zeros(order.shape, bool)
    np.put_along_axis(flip, order, chosen, axis=1)
    delta = np.where(flip, np.where(excess[:, None] > 0, -1, 1), 0).astype(np.int16)
    restore = (array.shape[out_axis], *(n for i, n in enumerate(array.shape) if i != out_axis))
    delta = np.moveaxis(delta.reshape(restore), 0, out_axis)
    labels = np.clip(c.labels.astype(np.int16) + delta, 0, last).astype(c.labels.dtype)
    rows = np.ascontiguousarray(_rows(labels, c.layout.axis, c.layout.group)[0])
    kept = replace(c, km=replace(c.km, labels=rows), labels=labels)
    return replace(kept, snapped=_resnap(kept, book))
