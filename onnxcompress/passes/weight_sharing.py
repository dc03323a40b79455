"""K-means weight sharing (Deep Compression, stage 2) stored as small indices plus a codebook.

Each compute weight (Conv/Gemm/MatMul/Gather/RNN) is clustered with 1-D k-means, per tensor or
per (group of) output channels, into at most ``2**bits`` shared values. Snapping alone saves
nothing in ONNX (a float tensor with 16 distinct values is as large as before), so the weight is
*stored* as small indices plus a codebook in the weight's float type, and decoded with standard
ops in front of its consumers::

    indices -> [unpack] -> Cast(int32) -> [Add per-channel offsets] -> Gather(codebook) -> consumer

``storage`` (index format):

- ``auto`` (default): 8-bit indices as uint8; <= 4-bit indices as native UINT4 (``Cast`` ->
  ``Gather``) when the model is at opset 21 or can be upgraded safely, else bit planes; 5-7 bits
  as bit planes. (UINT4 and bit planes are the same size; UINT4 needs two nodes instead of ~six,
  which matters in small models, and gzips slightly better.)
- ``packed``: bit planes for every width below 8, exact ``bits`` per index at any opset >= 11
  (unpacked with ``BitShift``; see :mod:`onnxcompress.packing`); never changes the opset unless
  the model is older than 11.
- ``int4``: like ``auto``; ``uint8``: one byte per index at any opset >= 6.
- ``dense``: snap the weights to their centroids but keep float storage (for runtimes that
  want plain initializers; the gain shows only after gzip).

Models below the opset a format needs are upgraded when :func:`onnxcompress.opset.upgrade_opset`
says that is safe; otherwise the next format that works is used, and the result says so.

``codebook``: ``layer`` (one per tensor, or per group of output channels with ``per_channel``) or
``model`` (one for all weights of a bit width, each tensor or channel scaled by its RMS). ``auto``
gives every weight its own codebook, stored in float16 where rounding the centroids raises the
weight's error by at most 1%; at 8 bits, weights under 32768 values (whose own codebook would
cost a visible share) are offered one shared codebook and keep it only where their measured
error with it is within 1.1x their own and below int8's. At 8 bits every weight is at least as
faithful as int8 per-channel weights: where the linear initialisation errs more than int8, the
kmeans++ one is tried, then channels divided by their largest magnitude (int8's own grid,
improved by Lloyd). Tensors whose output channels differ widely in scale (folded BatchNorm) are
fitted with per-channel scales (``channel_scale``). Session memory (onnxruntime folds the decode
at load): see :mod:`onnxcompress.passes._kmeans_decode`; at 8 bits (``decode="auto"``) large
Conv/MatMul/Gemm weights are stored in int8 per channel, decoded by one Cast with the scales on
the consumer's output, unless their codebook halves the error (:mod:`._kmeans_int8`: the fold
then holds no int32 copy; channel scales float16 where chosen on its grid), and ONNX LSTMs
become onnxruntime's ``DynamicQuantizeLSTM`` with int8 W/R (:mod:`._kmeans_lstm`);
``decode="runtime"`` keeps every weight a codebook whose lookup runs each call (memory: the
stored size plus the largest weight's per-call buffers; slower). A small first layer (it
reads the graph input) stays float at 8 bits unless 256 levels hold it exactly; weights only
shape-only ops read (overlapping Slices of an LSTM matrix) are stored once and decoded in front
of them.

Large models stream: each weight is read, clustered, rewritten and its external data unmapped
before the next; error sums and lookups run in chunks, so no whole-weight float64 copy exists.

BatchNormalization that follows a Conv is folded into it first (``fold_batchnorm``, exact): its
parameters leave the file, and the folded weights, whose channels then differ in scale, are
clustered with per-channel scales.

The decode nodes read only constants, so onnxruntime folds them when it loads the model and runs
exactly the snapped weights. Activation tensor names are untouched; the decoded weight keeps the
original weight's name. Zeros (from pruning) stay exactly zero: 0 is then a fixed centroid.

Sensitivity: with calibration data (``sensitivity``), each weight value's squared error is weighed
by the mean square of the input channel it multiplies; a following BatchNormalization's gain
weighs each output channel (with or without data). With calibration data and
``bias_correction``, the mean output shift ``delta_W @ E[x]`` is folded into the layer's bias.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcompress import kmeans
from onnxcompress.errors import OnnxCompressError
from onnxcompress.layerwise import codebook
from onnxcompress.layerwise.collection import weight_moments
from onnxcompress.model import fits_whole_checks, to_proto
from onnxcompress.opset import opset_version, upgrade_opset
from onnxcompress.passes import _kmeans_lstm
from onnxcompress.passes._float_rest import REST_ROLES, later_weight_passes, store_rest
from onnxcompress.passes._folding import fold_batchnorm
from onnxcompress.passes._int8_rows import ROW_SCALES, gathered_weight
from onnxcompress.passes._kmeans_allocate import _allocate
from onnxcompress.passes._kmeans_codebook import HALF_IS_SMALLER, _model_group
from onnxcompress.passes._kmeans_config import (  # noqa: F401 (re-exported: the pass's options)
    ALLOCATION_MIN_SIZE,
    ALLOCATIONS,
    DECODES,
    STORAGES,
    UNIFORM_MIN_SIZE,
    WeightSharingConfig,
)
from onnxcompress.passes._kmeans_decode import (
    PACKED_MIN_OPSET,
    RUNTIME_MIN_OPSET,
    UINT4_MIN_IR,
    UINT4_MIN_OPSET,
    UINT8_MIN_OPSET,
    ConstantCache,
    Formats,
)
from onnxcompress.passes._kmeans_int8 import FOLDED_TABLE_BYTES, exact_form_pays, tiny_compute
from onnxcompress.passes._kmeans_rows import byte_bits, decodes_rows
from onnxcompress.passes._kmeans_select import _additive_table_weights, _first_kept_float, _shape_read
from onnxcompress.passes._kmeans_share import _FIT, _fit_own, _share, _share_model_codebook
from onnxcompress.passes._prune_select import _first_last_nodes
from onnxcompress.passes._qdq import Builder
from onnxcompress.passes._spectral import LOG_REASON, spectral_basis
from onnxcompress.passes.base import Pass, PassContext, PassResult
from onnxcompress.stats import gzip_size
from onnxcompress.synthetic import unscaled_features
from onnxcompress.weights import (
    COMPUTE_ROLES,
    ROLE_BIAS,
    ROLE_ELEMENTWISE,
    ROLE_EMBEDDING,
    ROLE_NORM,
    ROLE_RECURRENT,
    Weight,
    WeightIndex,
    model_names,
)

logger = logging.getLogger(__name__)

_ROLE_REASONS = {
    # Not clustered; stored in float16 unless rest="float32" (``_float_rest``: the metrics say which).
    ROLE_BIAS: "bias: not clustered (small and sensitive)",
    ROLE_NORM: "normalization parameter: not clustered",
    ROLE_ELEMENTWISE: "elementwise constant: not a layer weight",
}


#: int8 rows in place of a 5-7-bit table's codebook while their per-row scales cost at most this
#: share of the table more than its codebook does.
ROWS_SLACK = 0.02


def _gathered_rows(w: Weight, bits: int, cfg: WeightSharingConfig, formats: Formats) -> bool:
    """Whether ``w`` is stored as int8 rows gathered at run time: 8 bits asked of a table the
    rows decode takes below 8 bits (``Formats.rows``, ``_kmeans_rows.decodes_rows``), float32,
    with the default storage and no per-channel codebooks asked for; or 5-7 bits, which that
    decode stores a byte an index too (``byte_bits``), where the rows' scales cost about what
    the codebook does: 256 levels instead of 32-128 and no codebook lookup each call (wordllama's
    32000x256 table at k-means 6: the int8 rows' size, recall@10 98.3% against 99.6%, and 5.9x
    fp32's latency against int8 rows' 1.14x)."""
    if not (formats.rows and decodes_rows(w) and w.dtype == ir.DataType.FLOAT
            and formats.storage in ("auto", "uint8") and not cfg.per_channel):
        return False
    if bits >= kmeans.MAX_BITS:
        return True
    rows = w.shape[0] if w.shape else 0  # a float16 scale a row, against a float16 codebook
    return byte_bits(bits) == 8 and 2 * rows <= ROWS_SLACK * w.size + (1 << bits) * 2


class WeightSharing(Pass):
    name = "kmeans"
    config_class = WeightSharingConfig
    summary = "k-means weight sharing: per-layer codebooks stored as packed indices"
    cli_order = 30

    def statistics(self, model: ir.Model, context: PassContext) -> list:
        cfg: WeightSharingConfig = self.config  # type: ignore[assignment]
        if context.calibration is None or not (cfg.sensitivity or cfg.bias_correction):
            return []
        return list(weight_moments(WeightIndex.build(model), cfg.calibration_samples).values())

    def apply(self, model: ir.Model, context: PassContext, result: PassResult) -> ir.Model:
        cfg: WeightSharingConfig = self.config  # type: ignore[assignment]
        # File and gzip sizes need the whole model serialized (twice, external data inlined).
        measure = fits_whole_checks(model)
        before = _serialized(model) if measure else None

        self._min_elements = cfg.min_elements(cfg.allocates(context.calibration is not None))
        # Left float: biases and norm parameters, compute weights that are small or a first layer.
        self._unclustered: set[str] = set()
        probe = PassResult(self.name, {}, model)
        wanted = [b for b in (self._select(w, cfg, probe) for w in WeightIndex.build(model)) if b]
        wanted += [b for b in (self._select(w, cfg, probe) for w in _shape_read(model)) if b]
        if not wanted:
            result.skipped.update(probe.skipped)
            return model
        if cfg.fold_batchnorm:
            folded = fold_batchnorm(model)
            if folded:
                result.metrics["batchnorm_folded"] = folded
                result.modified = True
        model, formats = self._prepare_opset(model, cfg, wanted, result)
        index = WeightIndex.build(model)
        exact = exact_form_pays(list(index))
        # (a tiny model's tables decode at load: their rows' per-call decode cost it 1.1x)
        folds = tiny_compute(list(index)) and all(w.nbytes <= FOLDED_TABLE_BYTES for w in index
                                                  if w.role == ROLE_EMBEDDING)
        # decode="runtime" decodes every call: a table's gathered rows, never the whole table.
        rows = cfg.decode == "runtime" or (exact and cfg.decode == "auto" and not folds)
        half_rest = cfg.rest == "float16" and not later_weight_passes(context)
        formats = replace(formats, exact_form=exact, rows=rows, half_rest=half_rest)
        self._unclustered = {w.label for w in index if w.role in REST_ROLES}
        firsts, _ = _first_last_nodes(model, index)
        total = sum(w.size for w in index if w.role in COMPUTE_ROLES)
        todo: list[tuple[Weight, int]] = []
        unscaled = unscaled_features(model, index)
        for w in index:
            bits = self._select(w, cfg, result)
            if bits and _first_kept_float(w, bits, firsts, cfg, total, unscaled):
                result.skip(w.label, "first layer (reads the graph input): kept float at 8 bits, "
                                     + ("its features on unlike scales" if w.label in unscaled else
                                        "as int8's fidelity guard keeps it"))
                self._unclustered.add(w.label)
                continue
            if bits:
                todo.append((w, bits))

        energies, means = self._moments(model, [w for w, _ in todo], cfg, context, result)
        allocated: dict[str, dict[str, Any]] = {}
        if cfg.allocates(context.calibration is not None):
            todo, allocated = _allocate(model, todo, cfg, formats, energies, context, result)
        constants = ConstantCache()
        # ONNX LSTMs at 8 bits: onnxruntime's DynamicQuantizeLSTM (no graph decode of W/R stays
        # at fp32's memory); opted out of as the int8-exact form is, and not on a small model,
        # where folds cost no memory and the int8 kernel can cost time (madmom's downbeat BLSTMs,
        # hidden size 25 over 600 frames: 1.37x the fp32 latency).
        lstm_todo = todo if not cfg.per_channel and cfg.channel_scale != "off" and formats.exact_form else []
        stats, paired, refused = _kmeans_lstm.share_lstms(model, lstm_todo, cfg.decode, formats.storage,
                                                          context)
        if refused:
            result.note(refused)
        done = len(stats)
        groups: dict[tuple, list[Weight]] = {}
        singles: list[tuple[Weight, int]] = []
        for w, bits in todo:
            if id(w) in paired:
                continue
            if cfg.model_codebook(bits, w.size):
                groups.setdefault(_model_group(w, cfg, bits), []).append(w)
                w.release()  # _model_group read it; it is read again when its group is fitted
            else:
                singles.append((w, bits))
        for (_, _, bits, scaled, _), members in groups.items():
            stats += _share_model_codebook(
                members, bits, cfg, formats, energies, context, constants, result, scaled=scaled,
                means=means,
            )
            for w in members:
                w.release()
            done += len(members)
            context.report_progress("k-means", done, len(todo))
        # 8-bit tables only Gathers read, in a large model: int8 rows gathered at run time (the
        # quantize pass's form), not a codebook whose decode folds the whole table at load
        # (lac_encoder's 58224 x 128 embedding at k-means 8: peak session memory 141.9 MB
        # against fp32's 71.0, and live no lower; int8 rows: 25.0 and 21.4).
        rows = [(w, bits) for w, bits in singles if _gathered_rows(w, bits, cfg, formats)]
        for w, bits in rows:
            if bits < kmeans.MAX_BITS:
                result.note(f"{w.label}: int8 rows, not {bits}-bit indices: those take a byte each in a "
                            "table read by rows too; 256 levels, and no codebook decode each call")
            scratch = PassResult(self.name, {}, model)
            gathered_weight(w, Builder(w.graph, model_names(model)), scratch)
            stats += scratch.layers
            w.release()
        taken = {id(w) for w, _ in rows}
        singles = [(w, bits) for w, bits in singles if id(w) not in taken]
        refit = self._refitter(model, [w for w, _ in singles], cfg, context, result, means)
        grouped = len(stats)
        # With reconstruct, a stage of weights is clustered, refit and judged together before
        # it is stored (layerwise.codebook); else one weight at a time.
        for stage in refit.stages(singles) if refit is not None else [[s] for s in singles]:
            fits = [None] * len(stage)
            if refit is not None:
                fits = refit.refit_stage([w for w, _ in stage], [
                    _fit_own(w, bits, cfg, energies.get(w.label), context, result) for w, bits in stage])
            for (w, bits), fitted in zip(stage, fits, strict=True):
                stat = _share(w, bits, cfg, formats, energies.get(w.label), context, constants, result,
                              means=means if refit is None else refit.pass_means(means),
                              fitted=fitted if refit is not None else _FIT)
                if stat is not None:
                    stats.append(stat)
                elif refit is not None:
                    refit.not_stored(w)
                w.release()  # one weight at a time: its float data leaves memory before the next
                done += 1
                context.report_progress("k-means", done, len(todo))
        if refit is not None:  # never worse end to end: the plain clusterings may win (layerwise.codebook)
            scratch = PassResult(self.name, {}, model)
            kept = refit.finish(singles, lambda w, bits, fit: _share(
                w, bits, cfg, formats, energies.get(w.label), context, constants, scratch, means=means,
                fitted=fit))
            if kept is not None:
                model, stats = kept[0], stats[:grouped] + kept[1]
                result.note("reconstruction: the plain clustering was closer to the original model on the "
                            "held-apart calibration samples; the refit was not kept")
        # Weights that only shape-only ops read (overlapping Slices of an LSTM matrix, which
        # load_model leaves unfolded): stored once, decoded in front of the readers, as int8
        # does (silero_vad: 1 MB of LSTM weights stayed float).
        # Then large tables only added to activations, at 8 bits (below: _float_rest's float16).
        def decoded_in_front() -> Iterator[tuple[Weight, int, str]]:  # each found after the last's edit
            for w in _shape_read(model):
                if not w.value.meta.get(ROW_SCALES):  # (the gathered rows' own scales)
                    yield w, 1, "in front of its shape-only readers"
            for w in _additive_table_weights(model):
                yield w, kmeans.MAX_BITS, "in front of the Add (an additive table)"

        for w, least, where in decoded_in_front():
            bits = self._select(w, cfg, result)
            if bits < least:
                continue
            stat = _share(w, bits, cfg, formats, None, context, constants, result, means={})
            if stat is not None:
                stat.extra["decoded"] = where
                stats.append(stat)
                todo.append((w, bits))
            w.release()
        if cfg.rest == "float16":
            self._unclustered.update(result.skipped.get(HALF_IS_SMALLER, ()))
            store_rest(model, self._unclustered, cfg.exclude, context, result)
        order = {w.label: i for i, (w, _) in enumerate(todo)}
        for stat in sorted(stats, key=lambda s: order.get(s.name, 0)):
            stat.extra.update(allocated.get(stat.name, {}))
            result.add_layer(stat)
        corrected = sum(bool(s.extra.get("bias_corrected")) for s in stats)
        if means:
            result.metrics["bias_corrected"] = corrected
        total_before = sum(s.bytes_before for s in stats)
        total_after = sum(s.bytes_after for s in stats)

        result.metrics["opset"] = formats.opset
        result.metrics["storage"] = dict(
            sorted(collections.Counter(s.extra["storage"] for s in result.layers).items())
        )
        result.metrics["weights_shared"] = len(result.layers)
        result.metrics["weight_bytes_before"] = total_before
        result.metrics["weight_bytes_after"] = total_after
        if before is not None:
            after = _serialized(model)
            result.metrics["model_bytes_before"] = len(before)
            result.metrics["model_bytes_after"] = len(after)
            result.metrics["gzip_bytes_before"] = gzip_size(before)
            result.metrics["gzip_bytes_after"] = gzip_size(after)
            result.metrics["ratio"] = round(len(before) / max(len(after), 1), 3)
            result.metrics["gzip_ratio"] = round(len(before) / max(result.metrics["gzip_bytes_after"], 1), 3)
        return model

    # -- selection ----------------------------------------------------------------------------

    def _select(self, w: Weight, cfg: WeightSharingConfig, result: PassResult) -> int:
        """Requested bits for ``w``, or 0 after recording why it is left alone."""
        if w.role not in COMPUTE_ROLES:
            result.skip(w.label, _ROLE_REASONS.get(w.role, f"role '{w.role}': not a layer weight"))
            return 0
        if w.excluded_by(cfg.exclude):
            result.skip(w.label, "excluded")
            return 0
        if not w.is_float:
            result.skip(w.label, f"not a float tensor ({w.dtype.name})")
            return 0
        if w.size < self._min_elements:
            result.skip(w.label, f"smaller than min_size ({self._min_elements} elements)")
            self._unclustered.add(w.label)
            return 0
        if (why := w.kept_reason()) is not None:
            result.skip(w.label, why)
            return 0
        if spectral_basis(w):
            result.skip(w.label, LOG_REASON.replace("int8's", "a codebook's"))
            self._unclustered.add(w.label)
            return 0
        bits = cfg.bits_for(w)
        if bits == 0:
            result.skip(w.label, "bits set to 0 for this layer or op type")
            return 0
        return bits

    # -- opset --------------------------------------------------------------------------------

    def _prepare_opset(
        self, model: ir.Model, cfg: WeightSharingConfig, wanted_bits: list[int], result: PassResult
    ) -> tuple[ir.Model, Formats]:
        """The model at an opset the storage needs (upgraded when that is safe), and the index
        formats available there."""
        if cfg.storage == "dense":
            return model, Formats("dense", opset_version(model))
        current = opset_version(model)
        wants_uint4 = cfg.storage == "int4" or (cfg.storage == "auto" and any(b <= 4 for b in wanted_bits))
        if wants_uint4 and current < UINT4_MIN_OPSET and not fits_whole_checks(model):
            # The upgrade is checked by loading the model in onnxruntime before and after,
            # which holds all of it in memory twice over (a 2.4 GB model peaked at 2.5x its
            # size at 4 bits); one 4-bit bit plane is as small as UINT4 and needs no upgrade.
            result.note(
                f"indices of <= 4 bits are bit-packed: UINT4 needs opset {UINT4_MIN_OPSET}, and "
                "checking an upgrade would load this large model into onnxruntime twice"
            )
            wants_uint4 = False
        if wants_uint4 and current < UINT4_MIN_OPSET:
            upgraded, why = upgrade_opset(model, UINT4_MIN_OPSET)
            if why is None:
                result.note(f"upgraded opset {current} -> {UINT4_MIN_OPSET} for UINT4 indices")
                model, current = upgraded, UINT4_MIN_OPSET
            else:
                result.note(
                    f"UINT4 indices need opset {UINT4_MIN_OPSET}: {why}; indices of "
                    "<= 4 bits are bit-packed instead"
                )
        if cfg.storage in ("auto", "packed", "int4") and current < PACKED_MIN_OPSET:
            upgraded, why = upgrade_opset(model, PACKED_MIN_OPSET)
            if why is None:
                result.note(f"upgraded opset {current} -> {PACKED_MIN_OPSET} for BitShift unpacking")
                model, current = upgraded, PACKED_MIN_OPSET
            else:
                result.note(
                    f"bit-packed indices need opset {PACKED_MIN_OPSET}: {why}; indices are stored as uint8"
                )
        if current < UINT8_MIN_OPSET:
            result.note(
                f"opset {current} is older than {UINT8_MIN_OPSET}: weights are snapped "
                "to their centroids but kept dense"
            )
            return model, Formats("dense", current)
        if current >= UINT4_MIN_OPSET and cfg.storage in ("auto", "int4"):
            model.ir_version = max(model.ir_version, UINT4_MIN_IR)
        return model, Formats(cfg.storage, current,
                              runtime=cfg.decode == "runtime" and current >= RUNTIME_MIN_OPSET)

    # -- calibration --------------------------------------------------------------------------

    def _refitter(self, model: ir.Model, weights: list[Weight], cfg: WeightSharingConfig,
                  context: PassContext, result: PassResult, means: dict[str, np.ndarray]) -> Any:
        """The teacher-guided centroid refit (``reconstruct``): layerwise.codebook's hook."""
        if not cfg.reconstruct or not weights:
            return None
        if context.calibration is None:
            result.note("reconstruct needs calibration data (--calibration); centroids were not refit")
            return None
        refit = codebook.codebook_refitter(
            model, weights, context.calibration.take(context.stats.limit(cfg.calibration_samples)),
            seed=context.seed, means=means, bias=cfg.bias_correction)
        result.metrics["reconstruction"] = refit.report  # filled in as the weights are refit
        return refit

    def _moments(
        self,
        model: ir.Model,
        weights: list[Weight],
        cfg: WeightSharingConfig,
        context: PassContext,
        result: PassResult,
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(energies for sensitivity weighting, means for bias correction) per weight label."""
        if context.calibration is None or not (cfg.sensitivity or cfg.bias_correction):
            return {}, {}
        try:  # from the run's shared collection (context.stats)
            moments = context.stats.channel_moments(model, weights, cfg.calibration_samples)
        except OnnxCompressError as e:
            result.note(f"calibration data unused: {e.message}")
            return {}, {}
        # Tables a Gather reads rows of have no input to weigh by: not worth a note (lac_encoder's
        # embedding was said to be "e.g. in a subgraph" in a graph without one).
        missing = [w for w in weights if w.label not in moments and w.role != ROLE_EMBEDDING]
        if missing:
            why = ("LSTM/GRU/RNN weights: the cell reads them with its own state"
                   if all(w.role == ROLE_RECURRENT for w in missing)
                   else "their input could not be observed, e.g. in a subgraph")
            result.note(f"{len(missing)} weight(s) without activation statistics ({why}), "
                        f"e.g. {missing[0].label}")
        energies = {k: v[1] for k, v in moments.items()} if cfg.sensitivity else {}
        means = {k: v[0] for k, v in moments.items()} if cfg.bias_correction else {}
        if energies:
            result.metrics["sensitivity_weighted"] = len(energies)
        return energies, means


def _serialized(model: ir.Model) -> bytes:
    return to_proto(model).SerializeToString()
