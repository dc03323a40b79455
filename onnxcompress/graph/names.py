"""Short names for an exporter's long ones in the written model.

tf2onnx and Keras name every node and tensor by its scope (``functional_1/time_distributed_9_1/
MatMul_8:0``, once where it is made and again wherever it is read): 215 KB of the int8 file of
batch 8's Thai word segmenter (1.22 MB), which capped a model of 94% weights at 3.26x. onnxruntime
reads nothing in them. :func:`shorten_names` replaces each intermediate tensor's and node's name
longer than a hash by a hash of it (:func:`hashed`: the same name always gives the same hash, so
compare's layer-wise localisation finds the original's tensors in the output again) and marks the
model (``MARKER_KEY``). Graph inputs and outputs and initializers (the weights the report names)
keep theirs, but initializer names past LONG_WEIGHT_NAME (scopes joined by an exporter). Only
where it pays: the names are at least NAME_SHARE of the weights' bytes (a PyTorch export's
``/layer1/conv/Conv_output_0`` on megabytes of weights stays readable), and where the file
shrinks by a larger share than its gzip grows: a hash is 40 random bits, which deflate worse than
an exporter's repetitive names (:func:`_pays_gzipped`; batch 40's IsolationForest, all names and
tree attributes, came out 1.10x smaller raw but 0.79x gzipped).
``--keep-debug-info`` keeps every name.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import zlib
from collections.abc import Mapping

import onnx_ir as ir

from onnxcompress.weights import all_graphs

logger = logging.getLogger(__name__)

MARKER_KEY = "onnxcompress.hashed_names"
MARKER_VALUE = "blake2b-40"
#: Names are shortened when they take at least this share of the weights' bytes, and save at
#: least MIN_SAVED_BYTES (the marker costs ~40: a 2.3 KB tree ensemble with no weights grew by it).
NAME_SHARE = 0.01
MIN_SAVED_BYTES = 1024


HASHED_LENGTH = 9
#: An initializer's name longer than this is no name a reader looks a weight up by: tf2onnx's
#: fused constants join every scope they came from (BodyPix's biases: ``MobilenetV1/Conv2d_1_
#: depthwise/BatchNorm/batchnorm_1/add_1;MobilenetV1/Conv2d_0/...;Const_52``, 150 bytes, twice
#: each: 1.2% of its k-means 8 file). It is hashed with the rest; shorter ones stay.
LONG_WEIGHT_NAME = 64


def hashed(name: str) -> str:
    """The short name of ``name``: 'h' and 8 base32 characters of its 40-bit BLAKE2b hash."""
    digest = hashlib.blake2b(name.encode(), digest_size=5).digest()
    return "h" + base64.b32encode(digest).decode().lower()


def marked(metadata: Mapping[str, str]) -> bool:
    """Whether a model with this metadata has its long names written as hashes."""
    return metadata.get(MARKER_KEY) == MARKER_VALUE


def shorten_names(model: ir.Model, *, dry_run: bool = False) -> int:
    """Rename long intermediate tensor and node names to :func:`hashed` ones (see the module doc);
    returns the bytes of names saved (0: the model is unchanged: the names are short already or
    too few to matter, or two hashes collide). ``dry_run``: the bytes it would save, nothing renamed."""
    graphs = [g for _, g in all_graphs(model)]
    kept = {v.name for v in (*model.graph.inputs, *model.graph.outputs) if v.name}
    kept |= {name for g in graphs for name in g.initializers if len(name) <= LONG_WEIGHT_NAME}
    values = [v for g in graphs for name, v in g.initializers.items() if name not in kept]
    nodes = []
    for graph in graphs:
        for node in graph:
            if node.name and len(node.name) > HASHED_LENGTH:
                nodes.append(node)
            values += [v for v in node.outputs if v.name and v.name not in kept
                       and len(v.name) > HASHED_LENGTH]
    saved = sum((len(v.name) - HASHED_LENGTH) * (1 + len(v.uses())) for v in values)
    saved += sum(len(n.name) - HASHED_LENGTH for n in nodes)
    weights = sum(v.const_value.nbytes for g in graphs for v in g.initializers.values()
                  if v.const_value is not None)
    if saved < max(MIN_SAVED_BYTES, NAME_SHARE * weights):
        return 0
    short = {v.name: hashed(v.name) for v in values}
    taken = {v.name for g in graphs for n in g for v in n.outputs if v.name} | kept
    taken |= {name for g in graphs for name in g.initializers}
    if len(set(short.values())) < len(short) or set(short.values()) & (taken - set(short)):
        logger.info("names: two hashes collide, the names stay as they are")
        return 0
    if not _pays_gzipped(graphs, values, nodes, weights):
        logger.info("names: hashes would grow the gzipped file more than they shrink the file")
        return 0
    if dry_run:
        return saved
    for v in values:
        v.name = short[v.name]
    for n in nodes:
        n.name = hashed(n.name)
    model.metadata_props[MARKER_KEY] = MARKER_VALUE
    return saved


#: Names hashed where the weights are this many times their raw bytes or more: the gzipped file
#: is mostly weights, which the names' deflated growth cannot outweigh. Below, the graph is
#: deflated both ways (:func:`_pays_gzipped`).
WEIGHTS_OUTWEIGH_NAMES = 8


def _pays_gzipped(graphs: list[ir.Graph], values: list[ir.Value], nodes: list[ir.Node],
                  weights: int) -> bool:
    """Whether hashing ``values``' and ``nodes``' names shrinks the file by at least the share by
    which it grows the file gzipped (weights taken as incompressible: both ways alike)."""
    names = sum(len(v.name or "") for g in graphs for n in g for v in n.outputs) + \
        sum(len(n.name or "") for g in graphs for n in g)
    if weights >= WEIGHTS_OUTWEIGH_NAMES * names:
        return True
    raw_before, gz_before = _graph_bytes(graphs, {})
    # renamed in place and back (an initializer's renaming would move it in the graph's order)
    renamed = [v for v in values if not v.is_initializer()]
    old = [(v, v.name) for v in renamed] + [(n, n.name) for n in nodes]
    for v in renamed:
        v.name = hashed(v.name)
    for n in nodes:
        n.name = hashed(n.name)
    try:
        weight_names = {v.name: hashed(v.name) for v in values if v.is_initializer()}
        raw_after, gz_after = _graph_bytes(graphs, weight_names)
    finally:
        for item, name in old:
            item.name = name
    shrink = (raw_before - raw_after) / (raw_before + weights)
    return gz_after <= gz_before or shrink >= (gz_after - gz_before) / (gz_before + weights)


def _graph_bytes(graphs: list[ir.Graph], short: Mapping[str, str]) -> tuple[int, int]:
    """Raw and deflated bytes of the graphs' nodes and initializer names (``short``: hashed), as
    the file holds them (a subgraph's nodes inside its holder's)."""
    parts = [ir.serde.serialize_node(n).SerializeToString() for n in graphs[0]]
    parts += [short.get(name, name).encode() for g in graphs for name in g.initializers]
    data = b"".join(parts)
    return len(data), len(zlib.compress(data, 6))


def name_in(model: ir.Model, name: str, names: set[str]) -> str:
    """``name`` (a tensor of the model ``model`` was compressed from) as it is called in
    ``model``, whose tensor names are ``names``: its hash where ``model`` is marked and has it."""
    if marked(model.metadata_props) and name not in names:
        short = hashed(name)
        if short in names:
            return short
    return name
