"""Graph editing shared by every pass (the home of constant reading/writing and folding)."""

from onnxcompress.graph.fold import SHAPE_ONLY_OPS, fold_shape_only_weights

__all__ = ["SHAPE_ONLY_OPS", "fold_shape_only_weights"]
