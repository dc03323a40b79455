"""The layer-wise core: statistics of each layer's input and refits against the original model."""

from onnxcompress.layerwise.refit import (
    compensating_sweep,
    output_error,
    refit_centroids,
    refit_masked,
    relative_output_error,
)
from onnxcompress.layerwise.stats import InputStats, as_rows, collect_input_stats, from_rows, layout_of

__all__ = [
    "InputStats",
    "as_rows",
    "collect_input_stats",
    "compensating_sweep",
    "from_rows",
    "layout_of",
    "output_error",
    "refit_centroids",
    "refit_masked",
    "relative_output_error",
]
