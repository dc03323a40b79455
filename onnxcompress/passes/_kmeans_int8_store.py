"""Where the k-means pass stores an 8-bit weight in int8 per channel instead of a codebook.

Two forms, both never less faithful than int8 per-channel weights (``_kmeans_int8.fit``):

- the int8-exact form (``_int8_slot``): a large weight of a large model, decoded by one Cast
  with its channel scales on the consumer's output (session memory at fp32's; see
  :mod:`._kmeans_int8`), unless its codebook halves the error;
- the folded form (``folded_int8``): a weight the exact form does not take, decoded by Cast + Mul
  in front of its readers, which onnxruntime folds at load, where its own codebook would cost
  more bytes (``CODEBOOK_PREMIUM``).

``layer_stat`` is the stored weight's row in the report, for these forms and the codebooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxcompress import kmeans
from onnxcompress.layerwise.bias import correct_bias
from onnxcompress.passes import _kmeans_int8
from onnxcompress.passes._half_store import half_storable
from onnxcompress.passes._int8 import FOLDED_DECODE, insert_folded_decode
from onnxcompress.passes._kmeans_codebook import INT8_FORM_GAIN, INT8_FORM_MIN_SIZE
from onnxcompress.passes._kmeans_decode import Formats
from onnxcompress.passes._kmeans_fit import _Clustering, _int8_error, _relative_error
from onnxcompress.passes._kmeans_rows import decodes_rows
from onnxcompress.passes._qdq import Builder, zeroes_most
from onnxcompress.passes.base import LayerStat
from onnxcompress.weights import SMALL_WEIGHT_VALUES, Weight

if TYPE_CHECKING:
    from onnxcompress.passes._kmeans_config import WeightSharingConfig


#: decode="auto" at 8 bits, a weight the int8-exact form does not take (a small model's, or one
#: under ``INT8_FORM_MIN_SIZE`` values) is stored in int8 per channel decoded by Cast + Mul in
#: front of its readers, folded at load (the original's kernels; a small weight's fold holds no
#: memory that counts), where its own codebook would cost more than CODEBOOK_PREMIUM over the
#: int8 bytes and not halve int8's error (``INT8_FORM_GAIN``, the exact form's rule). 256
#: entries are 512-1024 B: 22.3 bits a weight on batch 33's iris 24 x 24 Gemm (int8: 8.7), 9.3
#: on its MNIST 16 x 8 x 5 x 5 Conv (int8: 8.1); k-means 8 wrote both files larger than int8's.
#: (1/32 also took CIFAR's 14400-value Conv: 3.77x, 98.7% top-1 against 3.74x, 99.2%.) Never
#: less faithful than int8 per channel. Weights under ``SMALL_WEIGHT_VALUES`` keep the pass's
#: own rule, as int8 keeps them float.
CODEBOOK_PREMIUM = 1 / 16


def folded_axis(w: Weight, bits: int, cfg: WeightSharingConfig, formats: Formats) -> int | None:
    """The output-channel axis ``w`` would take int8 scales along in the folded form (see
    CODEBOOK_PREMIUM), or None where the form does not apply: not 8 bits of a float32 weight of
    at least SMALL_WEIGHT_VALUES values under decode="auto" with channel scales, or a weight read
    through shape-only ops or by row (a large model's tables decode their gathered rows)."""
    if cfg.decode != "auto" or not _int8_allowed(w, bits, cfg, formats):
        return None
    if w.size < SMALL_WEIGHT_VALUES or w.via or w.out_axis is None or not w.shape \
            or (formats.rows and decodes_rows(w)):
        return None
    return w.out_axis % len(w.shape)


def _int8_allowed(w: Weight, bits: int, cfg: WeightSharingConfig, formats: Formats) -> bool:
    """What both int8 forms need: 8 bits of a float32 weight, uint8-sized storage, channel scales
    (not per-channel codebooks, not ``channel_scale="off"``)."""
    return (bits >= kmeans.MAX_BITS and formats.storage in ("auto", "uint8") and w.dtype == ir.DataType.FLOAT
            and not cfg.per_channel and cfg.channel_scale != "off")


def _codebook_costs_more(codebook_bytes: int, q: np.ndarray, scales: np.ndarray) -> bool:
    """Whether a codebook form of ``codebook_bytes`` costs more than CODEBOOK_PREMIUM over the
    int8 codes ``q`` and their ``scales`` (float16 where ``half_storable``)."""
    int8 = q.nbytes + scales.size * (2 if half_storable(scales) else 4)
    return codebook_bytes > int8 * (1 + CODEBOOK_PREMIUM)


def folded_int8(w: Weight, bits: int, cfg: WeightSharingConfig, formats: Formats, c: _Clustering,
                importance: np.ndarray | None, *, means: dict[str, np.ndarray],
                book_bytes: int | None = None) -> LayerStat | None:
    """``w`` stored in the folded int8 form where it applies and ``c``, its clustering, would
    cost more (None: nothing done). ``book_bytes``: ``w``'s share of a shared codebook (else
    its own, at best float16)."""
    axis = folded_axis(w, bits, cfg, formats)
    if axis is None:
        return None
    book = 2 * c.codebook.size if book_bytes is None else book_bytes
    codebook = w.size + side_bytes(c, book)
    if codebook <= (w.size + 2 * w.shape[axis]) * (1 + CODEBOOK_PREMIUM):
        return None  # not even float16 scales make int8 smaller enough: no int8 fit
    array = w.numpy()
    q, scales, decoded = _kmeans_int8.fit(array, axis)
    error = _relative_error(decoded, array)
    kmeans_error = _relative_error(c.snapped, array)
    # Not where the codebook halves the error, nor where float16's grid and the kept channel sums
    # err more than int8's own absmax / 127 (a weight quantized per channel before export).
    if kmeans_error < INT8_FORM_GAIN * error or error > _int8_error(array, axis) \
            or zeroes_most(array, q) or not _codebook_costs_more(codebook, q, scales):
        return None
    return finish_int8(w, bits, q, scales, decoded, None, error, kmeans_error, importance, means=means)


def side_bytes(c: _Clustering, book_bytes: int) -> int:
    """What ``c``'s decode stores beside its indices: channel scales, its codebook (``book_bytes``)
    and each channel's row offset where there are several codebooks."""
    rows = 4 * c.layout.channels if c.km.codebook.shape[0] > 1 else 0
    return (c.scales.nbytes if c.scales is not None else 0) + book_bytes + rows


def int8_slot(w: Weight, bits: int, cfg: WeightSharingConfig, formats: Formats) -> Any:
    """Where ``w`` can take the int8-exact form (see ``_kmeans_int8``), or None: 8 bits, float32,
    at least ``INT8_FORM_MIN_SIZE`` values in a model where it pays (``exact_form_pays``: a small
    one's folds cost no memory), a consumer taking channel scales, and the decode allowing it."""
    if cfg.decode in ("codebook", "runtime") or not _int8_allowed(w, bits, cfg, formats):
        return None
    if cfg.decode == "auto" and (w.size < INT8_FORM_MIN_SIZE or not formats.exact_form):
        return None
    return _kmeans_int8.output_scale_slot(w)


def finish_int8(
    w: Weight,
    bits: int,
    q: np.ndarray,
    scales: np.ndarray,
    decoded: np.ndarray,
    slot: tuple[ir.Node, tuple[int, ...]] | None,
    error: float,
    kmeans_error: float,
    importance: np.ndarray | None,
    *,
    means: dict[str, np.ndarray],
) -> LayerStat:
    """Store ``w`` in the int8-exact form at ``slot`` (None: decoded by Cast + Mul in front of its
    readers, folded at load) and describe it; bias correction (with ``means``) happens before
    the bias is divided by the channel scales."""
    array = w.numpy()
    bytes_before = w.nbytes
    extra: dict[str, Any] = {
        "requested_bits": bits,
        "storage": "int8",
        "stored_bits": 8,
        "decode": "Cast; channel scales on the consumer's output",
        "codebooks": 0,
        "channel_scales": True,
        "kmeans_error": round(kmeans_error, 6),
        "sensitivity": importance is not None,
    }
    mean = means.get(w.label)
    if mean is not None:
        extra["bias_corrected"] = correct_bias(w, array.astype(np.float64) - decoded, mean)
    sparsity = float(np.mean(q == 0))
    if slot is None:
        extra["decode"] = FOLDED_DECODE
        w.set_numpy(q)
        axis = w.out_axis % q.ndim  # type: ignore[operator]
        stored = insert_folded_decode(w, scales.reshape([-1 if i == axis else 1 for i in range(q.ndim)]),
                                      Builder(w.graph, w.names))
        return layer_stat(w, array.shape, bytes_before, q.nbytes + stored.nbytes, sparsity, error, extra)
    bytes_after = _kmeans_int8.rewrite(w, q, scales, *slot)
    return layer_stat(w, array.shape, bytes_before, bytes_after, sparsity, error, extra)


def layer_stat(w: Weight, shape: tuple[int, ...], bytes_before: int, bytes_after: int,
                sparsity: float, error: float, extra: dict[str, Any]) -> LayerStat:
    """The stored weight's row in the report (both forms: codebook and int8-exact)."""
    size = int(np.prod(shape)) if shape else 1
    return LayerStat(name=w.label, op_type="/".join(w.op_types), shape=tuple(shape),
                     bytes_before=bytes_before, bytes_after=bytes_after, sparsity=round(sparsity, 6),
                     bits=round(8 * bytes_after / max(size, 1), 4), error=round(error, 6), extra=extra)
