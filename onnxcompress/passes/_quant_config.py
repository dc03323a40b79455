"""The quantize pass's options: ``QuantizeConfig`` (every flag of ``--quantize``) and ``MODES``.

Kept apart from the pass (``quantization.py``) so the modules that only read options
(``_int8``, ``_quant_plan``, ``_speed``) and the CLI's flag table need not import the pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxcompress.calibration import CALIBRATE_METHODS
from onnxcompress.passes.base import PassConfig, option

MODES = ("static", "dynamic", "weights", "int4")  # int4: the blockq pass at 4 bits
DEFAULT_CALIBRATE_METHOD = "percentile"


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
    reduce_range: bool | str = option(
        default="auto", flag="--reduce-range", type=bool,
        help="7-bit weights so u8*s8 products cannot saturate on x86 CPUs without VNNI "
        "(default auto: on when the CPU running the pass lacks VNNI/AMX; the value used is "
        "recorded in the model's provenance, so a replay elsewhere gives the same bytes)",
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
    allow_more_memory: bool = option(
        default=False, flag="--quantize-allow-more-memory",
        help="keep int8 compute even where its model needs more onnxruntime session memory than "
        "the float model (its quantize/dequantize activations: a 480x480 detector 1.13x)",
    )
    fidelity_guard: bool = option(
        default=True, flag="--fidelity-guard",
        help="measure the outputs on the data: weights whose int8 error is an outlier keep "
        "float values, int8 compute ops that move the outputs too far compute float",
    )
    fidelity_min_ratio: float = option(
        default=3.5, flag="--fidelity-min-ratio", metavar="X",
        help="the fidelity guard keeps weights float only while the model stays this many "
        "times smaller than float (where the weights allow)",
    )
    bias_correction: bool = option(
        default=True, flag="--quantize-bias-correction",
        help="with calibration data, move the mean output shift each int8 weight's rounding "
        "causes (dW @ mean input) into its layer's bias (PP-OCRv5 rec: dynamic 91.8 -> 93.4%%, "
        "static 91.2 -> 93.6%% of 512 strings, fp32 93.75%%)",
    )
    weight_form: str = option(
        default="auto", flag="--weight-form", choices=("auto", "dequantize", "folded"),
        help="--quantize weights: how Conv weights are decoded. dequantize: a DequantizeLinear "
        "onnxruntime runs every call (the weights stay int8 in session memory); folded: a Cast "
        "onnxruntime folds at load (float speed and layout, session memory as float's); auto: "
        "dequantize unless the speed guard measures it slower, then folded",
    )
    rest: str = option(
        default="float16", flag="--quantize-rest", choices=("float16", "float32"),
        help="what stays float (biases, normalisation parameters, weights under 512 values or "
        "kept float by the fidelity guard): float16 behind a Cast onnxruntime folds at load, "
        "where every value fits (as --kmeans-rest), unless a later pass rewrites weights; or "
        "float32 as they are",
    )
    reconstruct: bool | str = option(
        default="auto", flag="--quantize-reconstruct", type=bool,
        help="round each int8 weight in GPTQ order on the calibration data (each column's "
        "rounding error compensated on the later ones, layerwise/rounding.py); same scales, kept "
        "per layer where its output error is lower than round-to-nearest's. Default auto: on "
        "when calibration data is given (ppocr_rec 85.0 -> 96.3 string agreement on 512 "
        "strings), round to nearest without it",
    )

    def __post_init__(self) -> None:
        self._require(self.mode in MODES, f"mode must be one of {', '.join(MODES)}")
        self._require(self.reduce_range in (True, False, "auto"),
                      f"reduce_range must be true, false or auto, got {self.reduce_range!r}")
        self._require(self.calibrate_method in CALIBRATE_METHODS,
                      f"calibrate_method must be one of {', '.join(CALIBRATE_METHODS)}")
        self._require(50.0 < self.percentile <= 100.0, "percentile must be in (50, 100]")
        self._require(self.calibration_samples > 0, "calibration_samples must be positive")
        self._require(self.synthetic_samples > 0, "synthetic_samples must be positive")
        self._require(self.fidelity_min_ratio >= 1.0, "fidelity_min_ratio must be >= 1")
        self._require(self.reconstruct in (True, False, "auto"),
                      f"reconstruct must be true, false or auto, got {self.reconstruct!r}")

    @property
    def channelwise(self) -> bool:
        return self.per_channel and not self.per_tensor


__all__ = ["DEFAULT_CALIBRATE_METHOD", "MODES", "QuantizeConfig"]
