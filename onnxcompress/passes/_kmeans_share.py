"""The k-means pass's fitting and writing: one weight, or one codebook for many weights.

``_fit_own`` clusters a weight into a codebook of its own (at 8 bits never less faithful than
int8 per-channel); ``_share_model_codebook`` fits one codebook for a group of weights and keeps
it per weight where it measures as good; ``_finish`` stores a clustered weight (float16 codebook
where it costs <= 1%, bias correction with ``means``) and describes it in a LayerStat.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxcompress import kmeans
from onnxcompress.layerwise.bias import correct_bias, correctable
from onnxcompress.passes import _kmeans_int8
from onnxcompress.passes._half_store import cast_bytes
from onnxcompress.passes._kmeans_codebook import (
    FP16_CODEBOOK_TOLERANCE,
    HALF_IS_SMALLER,
    INT8_FORM_GAIN,
    MODEL_CODEBOOK_TOLERANCE,
    _index_bits,
    _own_codebook_pays,
    _shared_pays,
)
from onnxcompress.passes._kmeans_decode import (
    STORED_BITS,
    ConstantCache,
    Decode,
    Formats,
    estimate_bytes,
)
from onnxcompress.passes._kmeans_fit import (
    _broadcast,
    _choose_channel_scales,
    _cluster,
    _Clustering,
    _element_importance,
    _int8_error,
    _relative_error,
    _resnap,
    _rms_scales,
    _Sample,
    _scaled_clustering,
    _subsample,
    _use_channel_scales,
    _with_output_gain,
    keep_channel_sums,
)
from onnxcompress.passes._kmeans_int8_store import finish_int8, folded_int8, int8_slot, layer_stat, side_bytes
from onnxcompress.passes._kmeans_rows import write_decode
from onnxcompress.passes._qdq import zeroes_most
from onnxcompress.passes.base import LayerStat, PassContext, PassResult
from onnxcompress.weights import Weight

if TYPE_CHECKING:
    from onnxcompress.passes._kmeans_config import WeightSharingConfig


# -- one codebook for many weights -----------------------------------------------------------


def _share_model_codebook(
    members: list[Weight],
    bits: int,
    cfg: WeightSharingConfig,
    formats: Formats,
    energies: dict[str, np.ndarray],
    context: PassContext,
    constants: ConstantCache,
    result: PassResult,
    *,
    means: dict[str, np.ndarray],
    scaled: bool = False,
) -> list[LayerStat]:
    """Cluster the RMS-normalised values of all ``members`` together into one codebook; each
    weight decodes as Gather(codebook, indices) * scale, the scale per tensor or, where it
    cuts the weight's error by 20% (channel_scale auto) or always (on), per output channel.

    ``scaled``: the members' channels differ widely in scale (see ``_model_group``); each is
    normalised per channel and its values weighed by scale^2, as a codebook of its own would
    be fitted, so k-means minimises each weight's own relative error.

    At 8 bits a codebook per layer is 1 KiB of float32, more than a small layer saves; one
    codebook for the model costs that once, and 256 shared levels lose nothing measurable.
    """
    if scaled and len(members) == 1:
        # Nothing to share with: a codebook of its own, channel scales only if they pay.
        w = members[0]
        stat = _share(w, bits, cfg, formats, energies.get(w.label), context, constants, result,
                      means=means)
        return [stat] if stat is not None else []
    # Each tensor is normalised by its channels' RMS (when it has output channels and
    # channel_scale allows) or by its own RMS, so one codebook fits them all.
    arrays, importances, norms, axes, keep = [], [], [], [], []
    for w in members:
        array = w.numpy()
        if not _finite(array):
            result.skip(w.label, "contains NaN or infinity")
            continue
        axis = w.out_axis % array.ndim if w.out_axis is not None and array.ndim else None
        if not scaled and not _use_channel_scales(cfg, array, axis):
            axis = None
        imp = None
        if w.label in energies:
            imp = _element_importance(w, array.shape, energies[w.label])
        imp = _with_output_gain(w, array.shape, imp)
        norm = _rms_scales(array, axis)
        if scaled:
            s = _broadcast(norm, array.ndim, axis)
            fit = np.broadcast_to(s**2, array.shape) if imp is None else imp * s**2
            energy = float((fit * (array.astype(np.float64) / s) ** 2).sum())
            # Per tensor relative: a layer counts by its size, not by its weights' magnitude.
            imp = fit * (array.size / energy) if energy > 0 else fit
        arrays.append(array)
        importances.append(imp)
        norms.append(norm)
        axes.append(axis)
        keep.append(w)
    if not keep:
        return []
    dtype = arrays[0].dtype
    cdtype = np.float64 if dtype == np.float64 else np.float32
    values = np.concatenate(
        [
            (a.astype(np.float64) / _broadcast(s, a.ndim, ax)).reshape(-1)
            for a, s, ax in zip(arrays, norms, axes, strict=True)
        ]
    ).astype(cdtype)
    sample_weight = None
    if any(i is not None for i in importances):
        sample_weight = np.concatenate(
            [
                (i if i is not None else np.ones(a.shape)).reshape(-1)
                for a, i in zip(arrays, importances, strict=True)
            ]
        )
    km = kmeans.kmeans_1d(
        values,
        bits,
        sample_weight=sample_weight,
        init=cfg.init,
        max_iter=cfg.max_iter,
        tol=cfg.tol,
        rng=context.rng(f"kmeans:model:{bits}:{'scaled:' if scaled else ''}{keep[0].label}"),
    )
    codebook = km.codebook[0].astype(dtype)
    k_used = codebook.size
    index_bits = max(1, math.ceil(math.log2(k_used))) if k_used > 1 else 1
    dense = formats.choose(index_bits, 1 << 20) == "dense"
    book = None if dense else keep[0].add_constant("kmeans.codebook", np.ascontiguousarray(codebook))
    stats, own_stats = [], []
    offset = 0
    # [weight, shared clustering, importance, own fit (_FIT: not fitted yet), where, shared error]
    members: list[list[Any]] = []
    for w, array, norm, axis, imp in zip(keep, arrays, norms, axes, importances, strict=True):
        labels = km.labels[0, offset : offset + array.size].reshape(array.shape)
        offset += array.size
        c = _scaled_clustering(km, codebook, labels, array, norm, axis, imp)
        fit, where, shared_error = _FIT, "shared", None
        if cfg.codebook == "auto":
            # The shared codebook only where the measured error says it is as good.
            fit = _fit_own(w, bits, cfg, energies.get(w.label), context, result)
            shared_error = _relative_error(c.snapped, array)
            # At 8 bits also never worse than int8 per-channel weights.
            bar = _int8_error(array, _out_axis(w, array)) if bits >= kmeans.MAX_BITS else math.inf
            if fit is not None and _own_codebook_pays(w, fit[0], formats) and (
                    shared_error > MODEL_CODEBOOK_TOLERANCE * _relative_error(fit[0].snapped, array)
                    or shared_error > bar):
                where = "own"
        members.append([w, c, imp, fit, where, shared_error])
    left = [(m[0], m[1]) for m in members if m[4] == "shared"]
    if left and not _shared_pays(left, codebook, index_bits, formats):
        # What stays on the shared codebook is too small to carry it (batch 5, spindles at
        # k-means 4: two MatMuls of 217 values took the whole 1 KiB codebook, 868 -> 1249 B):
        # a codebook of its own where that pays, else float.
        for m in (m for m in members if m[4] == "shared"):
            if m[3] is _FIT:
                m[3] = _fit_own(m[0], bits, cfg, energies.get(m[0].label), context, result)
            m[4] = "own" if m[3] is not None and _own_codebook_pays(m[0], m[3][0], formats) else "float"
            m[5] = None  # not measured against the shared codebook's error: it could not pay
            if m[4] == "float":
                result.skip(m[0].label, "too small for a codebook: a shared one would cost more "
                            "bytes than its values save")
    on_book = sum(m[0].size for m in members if m[4] == "shared")
    for w, c, imp, fit, where, shared_error in members:
        # int8 folded at load where it is smaller than the codebook the weight would carry (its
        # share of the shared one; iris' one 24 x 24 Gemm carried all 1 KiB of it)
        folded = None
        if where == "shared":
            share = codebook.nbytes * w.size // max(on_book, 1)
            folded = folded_int8(w, bits, cfg, formats, c, imp, means=means, book_bytes=share)
        elif fit not in (None, _FIT):
            folded = folded_int8(w, bits, cfg, formats, fit[0], fit[1], means=means)
        if folded is not None:
            own_stats.append(folded)
            continue
        if where == "float":
            continue
        if where == "own":
            stat = _finish(
                w, bits, formats, fit[0], _index_bits(fit[0]), fit[1], constants, result,
                means=means, keep_sums=cfg.keep_sums,
            )
            if stat is not None:
                if shared_error is not None:
                    stat.extra["model_codebook_error"] = round(shared_error, 6)
                own_stats.append(stat)
            continue
        stat = _finish(
            w, bits, formats, c, index_bits, imp, constants, result, book=book, shared=True,
            means=means, keep_sums=cfg.keep_sums,
        )
        if stat is None:
            continue
        stat.extra["codebook_shared_by"] = len(keep)
        stats.append(stat)
    if book is not None and stats:
        # The shared codebook is charged to its users in proportion to their size, so that the
        # per-tensor bytes add up to the total and no tensor shows e.g. 65 bits per weight.
        sizes = [math.prod(s.shape) for s in stats]
        shares = _apportion(codebook.nbytes, sizes)
        for stat, size, share in zip(stats, sizes, shares, strict=True):
            stat.bytes_after += share
            stat.bits = round(8 * stat.bytes_after / max(size, 1), 4)
            stat.extra["shared_bytes"] = share
    if book is not None and not book.uses():
        keep[0].graph.initializers.pop(book.name, None)
    return stats + own_stats


# -- one weight ---------------------------------------------------------------------------

_FIT = object()  # _share's default: cluster the weight itself


def _share(
    w: Weight,
    bits: int,
    cfg: WeightSharingConfig,
    formats: Formats,
    energy: np.ndarray | None,
    context: PassContext,
    constants: ConstantCache,
    result: PassResult,
    *,
    means: dict[str, np.ndarray],
    fitted: tuple[_Clustering, np.ndarray | None] | None | object = _FIT,
) -> LayerStat | None:
    """Cluster ``w`` (or take ``fitted``: already clustered and refit, None when it could not
    be) and store it."""
    slot = int8_slot(w, bits, cfg, formats)
    if fitted is not _FIT:
        if fitted is None:
            return None
        c, importance = fitted  # type: ignore[misc]
        # A refit codebook was judged end to end by the refitter (layerwise.codebook): it
        # stays a codebook unless the int8 form is asked for.
        if cfg.decode != "int8":
            slot = None
    else:
        sampled = slot is not None or not _int8_promise(bits, cfg)
        plan = _plan_own(w, bits, cfg, energy, context, result, sampled=sampled)
        if plan is None:
            return None
        importance = plan.importance
        if slot is not None and plan.sample is not None:
            # A large weight: the form is chosen on the subsample its clustering was chosen
            # on, and only the winner is computed in full (kmeans_error: the subsample's
            # estimate).
            array = w.numpy()
            axis = w.out_axis % array.ndim
            scales64, sample_error = _kmeans_int8.choose(array, axis, plan.sample.values)
            if cfg.decode == "int8" or plan.error >= INT8_FORM_GAIN * sample_error:
                q, scales, decoded, error = _kmeans_int8.apply_checked(array, axis, scales64)
                if cfg.decode == "int8" or not zeroes_most(array, q):
                    return finish_int8(w, bits, q, scales, decoded, slot, error, plan.error,
                                       importance, means=means)
            slot = None
        c = plan.full()
    if slot is not None:
        array = w.numpy()
        q, scales, decoded = _kmeans_int8.fit(array, w.out_axis % array.ndim)
        error = _relative_error(decoded, array)
        kmeans_error = _relative_error(c.snapped, array)
        if cfg.decode == "int8" or kmeans_error >= INT8_FORM_GAIN * error \
                and not zeroes_most(array, q):  # (the codebook's levels hold them)
            return finish_int8(w, bits, q, scales, decoded, slot, error, kmeans_error,
                               importance, means=means)
    if slot is None and fitted is _FIT and (
            stat := folded_int8(w, bits, cfg, formats, c, importance, means=means)) is not None:
        return stat  # a small weight: int8 folded at load where its codebook costs more
    # A refit codebook keeps the assignment its refitter judged on the data.
    return _finish(w, bits, formats, c, _index_bits(c), importance, constants, result,
                   means=means, keep_sums=cfg.keep_sums and fitted is _FIT)


def _fit_own(
    w: Weight,
    bits: int,
    cfg: WeightSharingConfig,
    energy: np.ndarray | None,
    context: PassContext,
    result: PassResult,
) -> tuple[_Clustering, np.ndarray | None] | None:
    """``w`` clustered into a codebook of its own (or one per channel group), with the
    importance used; None (and a skip) when it cannot be shared."""
    plan = _plan_own(w, bits, cfg, energy, context, result, sampled=not _int8_promise(bits, cfg))
    return None if plan is None else (plan.full(), plan.importance)


def _int8_promise(bits: int, cfg: WeightSharingConfig) -> bool:
    """Whether the codebook's candidates are compared against int8's error (``_plan_own``)."""
    return bits >= kmeans.MAX_BITS and cfg.channel_scale == "auto" and not cfg.per_channel


class _OwnFit:
    """How ``w`` is clustered into a codebook of its own: the candidates compared (on every
    value, or on a ``_subsample`` of a large weight), and the winner's full clustering, fitted
    when first asked for (``full``): a large weight the int8-exact form takes is never
    clustered in full."""

    def __init__(self, array: np.ndarray, importance: np.ndarray | None, sample: _Sample | None,
                 cluster: Callable[..., _Clustering]) -> None:
        self.array, self.importance, self.sample = array, importance, sample
        self._cluster = cluster
        self._full: _Clustering | None = None
        self.recipe: tuple[bool, str, str | None] = (False, "rms", None)
        self.error = math.inf  # the winner's relative error where it was chosen

    def full(self) -> _Clustering:
        if self._full is None:
            self._full = self._cluster(self.array, None, *self.recipe)
        return self._full


def _plan_own(
    w: Weight,
    bits: int,
    cfg: WeightSharingConfig,
    energy: np.ndarray | None,
    context: PassContext,
    result: PassResult,
    *,
    sampled: bool = True,
) -> _OwnFit | None:
    """``w``'s candidate codebooks compared, on a ``_subsample`` where ``sampled`` and the weight is
    large. Not where the candidates are compared against int8's error with no int8-exact form to
    fall back on: that choice is close, and a sample misjudges it (ddddocr_ocr's 2x2048x512 LSTM
    weight: error 0.0097 -> 0.0164; bert_tiny's token table 0.0065 -> 0.0069)."""
    array = w.numpy()
    if not _finite(array):
        result.skip(w.label, "contains NaN or infinity")
        return None
    axis = w.out_axis % array.ndim if w.out_axis is not None and array.ndim else None
    if cfg.per_channel and axis is None:
        result.note(f"{w.label}: no output-channel axis, one codebook for the tensor")
    importance = None
    if energy is not None:
        importance = _element_importance(w, array.shape, energy)
        if importance is None:
            result.note(
                f"{w.label}: activation energy does not match its input channels; "
                "clustered without sensitivity"
            )
    importance = _with_output_gain(w, array.shape, importance)
    rng_salt = f"kmeans:{w.label}"

    def cluster_on(values: np.ndarray, sample: _Sample | None, scaled: bool, norm: str = "rms",
                   init: str | None = None) -> _Clustering:
        ax, imp = (axis, importance) if sample is None else (sample.axis, sample.importance)
        return _cluster(
            values,
            bits,
            ax if cfg.per_channel else None,
            cfg.channel_group,
            ax if scaled else None,
            imp,
            cfg,
            context.rng(rng_salt),
            norm=norm,
            init=init,
        )

    sample = _subsample(array, axis, importance) if sampled else None
    plan = _OwnFit(array, importance, sample, cluster_on)
    values = array if sample is None else sample.values
    v_axis = axis if sample is None else sample.axis

    def cluster(scaled: bool, norm: str = "rms", init: str | None = None) -> _Clustering:
        return cluster_on(values, sample, scaled, norm, init)

    can_scale = axis is not None and array.shape[axis] > 1
    c = _choose_channel_scales(cfg, can_scale, cluster)
    recipe = (c.scale_axis is not None, "rms", None)
    best_error = -1.0
    if _int8_promise(bits, cfg):
        # 8 bits promise at least int8's fidelity. Lloyd from the linear initialisation
        # stalls with many levels in a bell-shaped tensor's sparse tails (1M Gaussian
        # values: relative error 0.0090, kmeans++ 0.0065, int8 per-channel 0.0079), and
        # per-tensor levels lose to int8's per-channel grids where channels' ranges differ
        # (resnet_digits: 7 of 9 layers). So: the better of the two initialisations, and
        # if that still errs more than int8, channels divided by their largest magnitude
        # (int8's own grid, which Lloyd only improves; one scale per channel and a Mul).
        amax = None
        if sample is not None:  # int8's grid from the whole channels' largest magnitudes
            amax = (np.asarray(float(np.abs(array).max())) if axis is None
                    else _kmeans_int8.channel_absmax(array, axis))
        bar = _int8_error(values, v_axis, amax)
        best, best_error = c, _relative_error(c.snapped, values)
        if best_error > bar and cfg.init != "kmeans++":
            alt = cluster(c.scale_axis is not None, init="kmeans++")
            if (alt_error := _relative_error(alt.snapped, values)) < best_error:
                best, best_error = alt, alt_error
                recipe = (c.scale_axis is not None, "rms", "kmeans++")
        if best_error > bar and can_scale:
            alt = cluster(True, "absmax")
            if (alt_error := _relative_error(alt.snapped, values)) < best_error:
                best, best_error = alt, alt_error
                recipe = (True, "absmax", None)
        c = best
    plan.recipe = recipe
    if sample is None:
        plan._full = c  # chosen on every value: the winner is the full clustering
    else:
        plan.error = best_error if best_error >= 0 else _relative_error(c.snapped, values)
    return plan


def _finish(
    w: Weight,
    bits: int,
    formats: Formats,
    c: _Clustering,
    index_bits: int,
    importance: np.ndarray | None,
    constants: ConstantCache,
    result: PassResult,
    book: ir.Value | None = None,
    *,
    means: dict[str, np.ndarray],
    shared: bool = False,
    keep_sums: bool = True,
) -> LayerStat | None:
    """Store one clustered weight (or skip it if that would not shrink it) and describe it.
    ``shared``: ``c``'s codebook is the model-wide one (``book``, or none when dense);
    ``keep_sums``: its labels keep each output channel's sum (``keep_channel_sums``)."""
    array = w.numpy()
    dtype = array.dtype
    storage = formats.choose(index_bits, array.size, requested=bits)
    km = c.km
    stored_book = c.codebook
    snapped = c.snapped
    error = _relative_error(snapped, array)
    if not shared and dtype == np.float32:
        # A float16 codebook where rounding the centroids costs (almost) nothing: half the
        # codebook bytes (512 B a layer at 8 bits), decoded by one Cast of 2^bits values.
        # Dense storage snaps to the same values, so it is exactly what the indices decode.
        half = c.codebook.astype(np.float16)
        if np.isfinite(half).all():
            snapped16 = _resnap(c, half.astype(np.float32))
            error16 = _relative_error(snapped16, array)
            if error16 <= error * FP16_CODEBOOK_TOLERANCE:
                stored_book, snapped, error = half, snapped16, error16
            del snapped16
    mean = means.get(w.label)
    # Where calibration means correct the bias (below), the measured shift is removed exactly:
    # the sums are kept only for weights without them (a run without data) or without a bias.
    kept = None
    if keep_sums and (mean is None or not correctable(w, mean)):
        kept = keep_channel_sums(c, stored_book, array, _out_axis(w, array))
    if kept is not None:
        c, snapped = kept, kept.snapped
        error = _relative_error(snapped, array)
    # The float64 difference only where bias correction or the weighted error needs it.
    diff = snapped.astype(np.float64) - array if mean is not None or importance is not None else None
    extra: dict[str, Any] = {
        "requested_bits": bits,
        "clusters_used": int(len(np.unique(c.labels))) if book is not None else int(km.used.max()),
        "codebooks": "model" if book is not None else int(km.codebook.shape[0]),
        "channel_scales": c.scales is not None and c.scale_axis is not None,
        "iterations": km.iterations,
        "sensitivity": importance is not None,
        "channel_sums_kept": kept is not None,
    }
    if importance is not None and diff is not None:
        ref2 = (importance * array.astype(np.float64) ** 2).sum()
        werr = float(np.sqrt((importance * diff**2).sum() / max(ref2, 1e-30)))
        extra["weighted_error"] = round(werr, 6)
    bytes_before = w.nbytes
    sparsity = float(np.mean(snapped == 0))
    if storage == "dense":
        w.set_numpy(snapped)
        bytes_after = w.nbytes
        extra["stored_bits"] = 8 * dtype.itemsize
    else:
        side = side_bytes(c, 0 if book is not None else stored_book.nbytes)
        estimate = estimate_bytes(storage, index_bits, array.size, side)
        if estimate >= bytes_before:
            result.skip(w.label, "indices + codebook would not be smaller than the tensor")
            return None
        if formats.half_rest and dtype == np.float32 and book is None \
                and estimate >= bytes_before // 2 + cast_bytes(w.name):
            result.skip(w.label, HALF_IS_SMALLER)
            return None
        decode = Decode(
            labels=c.labels,
            codebook=stored_book,
            row_axis=c.layout.axis,
            row_of_channel=c.layout.row_of_channel() if km.codebook.shape[0] > 1 else None,
            scales=c.scales,
            scale_axis=c.scale_axis,
        )
        extra["stored_bits"] = STORED_BITS.get(storage, index_bits)
        extra["codebook_dtype"] = "model" if book is not None else str(stored_book.dtype)
        bytes_after = write_decode(w, decode, index_bits, storage, formats, constants, book, dtype, extra)
    extra["storage"] = storage
    if mean is not None and diff is not None:
        extra["bias_corrected"] = correct_bias(w, -diff, mean)  # removed: old - new
    return layer_stat(w, array.shape, bytes_before, bytes_after, sparsity, error, extra)


def _apportion(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` into integers that sum to ``total`` (largest
    remainders get the leftover units)."""
    whole = sum(weights)
    if whole <= 0:
        return [total] + [0] * (len(weights) - 1) if weights else []
    exact = [total * w / whole for w in weights]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: shares[i] - exact[i])[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _finite(array: np.ndarray) -> bool:
    """No NaN/inf, without a float32 copy of the whole weight where numpy can test it as is."""
    if array.dtype in (np.float16, np.float32, np.float64):
        return bool(np.isfinite(array).all())
    return bool(np.isfinite(array.astype(np.float32)).all())  # bfloat16 and friends


def _out_axis(w: Weight, array: np.ndarray) -> int | None:
    return w.out_axis % array.ndim if w.out_axis is not None and array.ndim else None
