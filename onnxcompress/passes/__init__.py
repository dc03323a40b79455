"""The passes. Importing a pass module registers it with the CLI and recipe loader."""

from onnxcompress.passes.base import (
    LayerStat,
    Pass,
    PassConfig,
    PassContext,
    PassResult,
    get_pass_class,
    registered_passes,
)
from onnxcompress.passes.block_quantization import BlockQuantize, BlockQuantizeConfig
from onnxcompress.passes.float16 import BFloat16, BFloat16Config, Float16, Float16Config
from onnxcompress.passes.pruning import Prune, PruneConfig
from onnxcompress.passes.quantization import Quantize, QuantizeConfig
from onnxcompress.passes.simplify import Simplify, SimplifyConfig
from onnxcompress.passes.weight_sharing import WeightSharing, WeightSharingConfig

__all__ = [
    "LayerStat",
    "Pass",
    "PassConfig",
    "PassContext",
    "PassResult",
    "get_pass_class",
    "registered_passes",
    "Simplify",
    "SimplifyConfig",
    "Quantize",
    "QuantizeConfig",
    "Prune",
    "PruneConfig",
    "WeightSharing",
    "WeightSharingConfig",
    "BlockQuantize",
    "BlockQuantizeConfig",
    "Float16",
    "Float16Config",
    "BFloat16",
    "BFloat16Config",
]
