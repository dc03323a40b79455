"""Layer-wise localisation: where, inside the graph, do the two models part ways?

Compression passes keep the names of the activations they touch (a quantized MatMul still
outputs ``mm1``; the Q/DQ, Cast and codebook Gather nodes they add get fresh names), so the
tensors that exist in both main graphs under the same name, with a float type, are the points
where the models can be compared. Both models are run with those tensors exposed as outputs,
sample by sample (memory holds one sample's activations of each model, never the data set),
and each tensor's error is compared with the error already present in its inputs: the layers
where the error *jumps* are where the compressed model goes wrong. Tensors of only one model
(the added nodes) are ignored, as are tensors computed from weights alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress.activations import expose_with_branches, grouped_by_bytes, iter_intermediates
from onnxcompress.data import Feed
from onnxcompress.errors import RuntimeUnavailableError
from onnxcompress.graph.branches import if_branches
from onnxcompress.graph.names import name_in
from onnxcompress.graph.scope import has_subgraph
from onnxcompress.runtime import first_line
from onnxcompress.validation.metrics import TensorStats

logger = logging.getLogger(__name__)

# A jump smaller than this (in relative L2 error) is float noise, not a finding.
JUMP_FLOOR = 1e-6
# A tensor whose relative error exceeds this counts as diverged (for "first divergent layer").
DIVERGENCE_THRESHOLD = 1e-3
# Bytes of exposed intermediate tensors per model and run (see compare_layers).
DEFAULT_MEMORY_BUDGET = 256 * 2**20
# Relative errors are capped here when computing jumps (an all-zero reference gives inf).
_ERROR_CAP = 1e6

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}


@dataclass
class LayerStat:
    """One tensor present in both models: its error and how much of it appeared right here."""

    index: int  # position of the producing node in the original graph (topological)
    name: str  # tensor name
    node: str  # producing node in the original model
    op_type: str
    rel_l2: float | None
    cosine: float | None
    max_abs: float
    mean_abs: float | None
    input_error: float  # largest relative error among the compared tensors it is computed from
    jump: float  # rel_l2 - input_error
    nonfinite_mismatch: int = 0
    shape_mismatch: str | None = None
    compared_as: str | None = None  # the compressed model's Q/DQ output standing for this tensor

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class LayerReport:
    """Per-layer errors in topological order, and the layers where the error jumps most."""

    samples: int
    layers: list[LayerStat]
    jumps: list[LayerStat]  # largest jump first; only jumps above JUMP_FLOOR
    first_divergent: LayerStat | None
    only_original: int = 0  # float activations with no counterpart in the compressed model
    only_compressed: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "compared": len(self.layers),
            "only_original": self.only_original,
            "only_compressed": self.only_compressed,
            "first_divergent": self.first_divergent.name if self.first_divergent else None,
            "jumps": [s.to_dict() for s in self.jumps],
            "layers": [s.to_dict() for s in self.layers],
            "notes": list(self.notes),
        }


def _float_activations(model: ir.Model) -> tuple[list[tuple[int, ir.Node, ir.Value]], set[str]]:
    """(node index, node, value) for every float tensor that depends on a graph input, in
    topological order (a top-level If's branch nodes under the If's index, before it: their
    values are given out through the If, ``activations.iter_intermediates``), plus every name a
    node of the main graph produces."""
    names = [v.name for _, n in _nodes(model) for v in n.outputs if v.name]
    proto, exposed, inside = expose_with_branches(model, names, branches=True)
    types = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    types.update({b.name: types.get(b.output) for b in inside})
    exposed_set = set(exposed) | {b.name for b in inside}
    dynamic: set[str] = {v.name for v in model.graph.inputs if v.name}
    found = []
    produced = {v.name for n in model.graph for v in n.outputs if v.name}
    for index, node in _nodes(model):
        outputs = [v for v in node.outputs if v.name]
        if not (has_subgraph(node) or any(i is not None and i.name in dynamic for i in node.inputs)):
            continue  # computed from weights only (a Constant, a DequantizeLinear of a weight)
        for v in outputs:
            dynamic.add(v.name)
            if v.name in exposed_set and types.get(v.name) in _FLOAT_TYPES:
                found.append((index, node, v))
    return found, produced


def _nodes(model: ir.Model) -> Iterator[tuple[int, ir.Node]]:
    """The main graph's nodes with their index, each top-level If preceded by its branches'."""
    for index, node in enumerate(model.graph):
        for branch in if_branches(node):
            yield from ((index, n) for n in branch)
        yield index, node


def compare_layers(
    original: ir.Model,
    compressed: ir.Model,
    feeds: Iterable[Feed],
    *,
    compressed_inputs: set[str] | None = None,
    casts: Mapping[str, np.dtype] | None = None,
    threads: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> LayerReport:
    """Compare every float activation the two main graphs share, sample by sample.

    Exposing a tensor keeps it alive for the whole run, so a run exposing every activation of a
    large model needs all of them in memory at once. When one sample's shared activations would
    exceed ``memory_budget`` bytes per model, they are split into groups, and each group streams
    the data through both models separately (more runs, bounded memory). ``compressed_inputs``
    (default: all) restricts the feeds the compressed model gets, ``casts`` converts some of them
    (a float16 model).
    """
    if compressed_inputs is None:
        compressed_inputs = {v.name for v in compressed.graph.inputs if v.name}
    candidates, _ = _float_activations(original)
    theirs, _ = _float_activations(compressed)
    their_names = {v.name for _, _, v in theirs}
    # the original's name -> the compressed model's (long names written as hashes: graph/names.py)
    alias = {v.name: name_in(compressed, v.name, their_names) for _, _, v in candidates}
    shared = [(i, n, v) for i, n, v in candidates if alias[v.name] in their_names]
    mine = set(alias.values())
    notes = []
    if any(has_subgraph(n) and n.op_type != "If" for n in original.graph):
        notes.append("tensors inside Loop/Scan bodies are not compared one by one.")
    names = [v.name for _, _, v in shared]
    if not names:
        notes.append(
            "no float activation has the same name in both models, so none can be compared; the "
            "compressed model was renamed (onnxcompress passes keep activation names)."
        )
    # A tensor the compressed model quantizes is seen downstream through its Q -> DQ pair; compare
    # that (a quantizer may also fold a Relu into the Q's range and give the Relu's name to the
    # tensor before it, so the bare name would carry pre-activation values).
    after = _after_qdq(compressed, [alias[n] for n in names])
    seen_as = {n: after.get(alias[n], alias[n]) for n in names}
    stats = {name: TensorStats(classifier=False) for name in names}  # intermediates: no top-1
    samples = 0
    chunks = grouped_by_bytes(original, names, next(iter(feeds), None), memory_budget) if names else []
    if len(chunks) > 1:
        notes.append(
            f"the tensors were compared in {len(chunks)} groups to keep each run under "
            f"{memory_budget / 2**20:.0f} MB of exposed tensors per model."
        )
    for chunk in chunks:
        chunk_b = [seen_as[n] for n in chunk]
        feeds_a, feeds_b = _tee(feeds, compressed_inputs, casts or {})
        count = 0
        try:
            for values_a, values_b in zip(
                iter_intermediates(original, chunk, feeds_a, threads=threads),
                iter_intermediates(compressed, chunk_b, feeds_b, threads=threads),
                strict=False,  # the second stream ends when the first does
            ):
                count += 1
                for name, name_b in zip(chunk, chunk_b, strict=True):
                    if name in values_a and name_b in values_b:
                        stats[name].add(values_a[name], values_b[name_b])
                del values_a, values_b
        except RuntimeUnavailableError:
            raise
        except Exception as e:  # onnxruntime's own exception types
            raise RuntimeUnavailableError(
                f"layer-wise comparison: onnxruntime failed with the intermediate tensors exposed: "
                f"{first_line(e)}",
                hint="rerun without --layers to compare the outputs only.",
            ) from e
        samples = max(samples, count)

    # Error present at each value: its own if compared, else the largest among its inputs.
    errors = {name: _capped(s.rel_l2) for name, s in stats.items() if s.samples}
    upstream: dict[str, float] = {}
    layer_stats = []
    by_name = {v.name: (i, n) for i, n, v in shared}
    for _, node in _nodes(original):
        # an If's outputs carry what its branches give out (their error is already upstream)
        reads = [v for v in node.inputs if v is not None and v.name] + [
            o for branch in if_branches(node) for o in branch.outputs]
        inputs_error = max((upstream.get(v.name, 0.0) for v in reads), default=0.0)
        for v in node.outputs:
            if not v.name:
                continue
            if v.name in errors:
                upstream[v.name] = errors[v.name]
                index, producer = by_name[v.name]
                s = stats[v.name]
                layer_stats.append(
                    LayerStat(
                        index=index,
                        name=v.name,
                        node=producer.name or "",
                        op_type=producer.op_type,
                        rel_l2=s.rel_l2,
                        cosine=s.cosine,
                        max_abs=s.max_abs,
                        mean_abs=s.mean_abs,
                        input_error=inputs_error,
                        jump=errors[v.name] - inputs_error,
                        nonfinite_mismatch=s.nonfinite_mismatch,
                        shape_mismatch=s.shape_mismatch,
                        compared_as=after.get(alias[v.name]),
                    )
                )
            else:
                upstream[v.name] = inputs_error
    jumps = sorted((s for s in layer_stats if s.jump > JUMP_FLOOR), key=lambda s: (-s.jump, s.index))
    first = next((s for s in layer_stats if _capped(s.rel_l2) > DIVERGENCE_THRESHOLD), None)
    return LayerReport(
        samples=samples,
        layers=layer_stats,
        jumps=jumps,
        first_divergent=first,
        only_original=len(mine - their_names),
        only_compressed=len(their_names - mine - set(seen_as.values())),
        notes=notes,
    )


def _after_qdq(model: ir.Model, names: Iterable[str]) -> dict[str, str]:
    """name -> output of the DequantizeLinear fed by a QuantizeLinear of that tensor."""
    values = {v.name: v for n in model.graph for v in n.outputs if v.name}
    found = {}
    for name in names:
        value = values.get(name)
        if value is None or value.is_graph_output():
            continue
        for node, index in value.uses():
            if node.op_type != "QuantizeLinear" or index != 0 or node.graph is not model.graph:
                continue
            dq = next(
                (u for u, i in node.outputs[0].uses() if u.op_type == "DequantizeLinear" and i == 0),
                None,
            )
            if dq is not None and dq.outputs[0].name:
                found[name] = dq.outputs[0].name
                break
    return found


def _capped(value: float | None) -> float:
    if value is None or math.isnan(value):
        return 0.0
    return min(value, _ERROR_CAP)


def _tee(
    feeds: Iterable[Feed], compressed_inputs: set[str], casts: Mapping[str, np.dtype]
) -> tuple[Iterator[Feed], Iterator[Feed]]:
    """Two iterators over the same feeds (the second restricted to the compressed model's
    inputs) that never hold more than the current sample."""
    current: list[Feed] = []

    def first() -> Iterator[Feed]:
        for feed in feeds:
            current[:] = [feed]
            yield feed

    def second() -> Iterator[Feed]:
        while True:
            if not current:
                return
            feed = current.pop()
            yield {
                k: (v.astype(casts[k]) if k in casts else v)
                for k, v in feed.items()
                if k in compressed_inputs
            }

    return first(), second()
