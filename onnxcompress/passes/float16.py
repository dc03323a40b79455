"""fp16 / bf16 conversion of weights (and, for fp16, compute).

``--float16``: float32 weights and activations of the main graph become float16, except around
ops that overflow or lose accuracy in half precision (``KEEP_FLOAT32``): those keep float32
with Casts on their inputs and outputs. Model inputs and outputs keep their types
(``keep_io_types``, default on) through Casts at the boundary. Subgraph bodies (If/Loop/Scan)
stay float32; values they read from the main graph are cast back for them.

``--bfloat16``: onnxruntime's CPU provider computes very few ops in bfloat16, so only the stored
weights become bfloat16, each followed by a Cast to float32: the file halves, compute and
memory stay float32 (onnxruntime folds the Cast at load).

onnxruntime's CPU provider has few float16 kernels either: it inserts its own Casts around the
others, so fp16 compute is slower on CPU (nudenet 1.06-1.19x, a transformer 1.19x; faster on GPU).
``--float16-compute auto`` (default) writes the weights in float16 with a Cast to float32 on a
CPU with no float16 arithmetic (``cpu.has_fp16_arithmetic``: x86 without AVX512-FP16 / AMX-FP16),
and elsewhere times it and does so where it is slower (``_speed.latency_ratio``, cached per
machine and graph structure so that reruns write the same file): same file, float32 speed. Measured on
nudenet's YOLOv8n (12 MB, 64 Conv): fp16 compute 19.6 ms against 18.5 ms float32 (one thread),
36.5 MB live session against 35.6; fp16 stored, float32 compute 18.3 ms with 33.7 MB.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress import runtime
from onnxcompress.cpu import has_fp16_arithmetic
from onnxcompress.graph.scope import has_subgraph, node_subgraphs
from onnxcompress.model import external_base_dir, fits_whole_checks, release_external, to_proto
from onnxcompress.opset import opset_version, upgrade_opset
from onnxcompress.passes._float16_check import fidelity_check
from onnxcompress.passes._half_store import cast_node as _cast
from onnxcompress.passes._half_store import fits_half as _fits_half
from onnxcompress.passes._half_store import half_pays, store_narrow
from onnxcompress.passes._half_store import to_half as _to_half
from onnxcompress.passes._speed import TOO_LARGE_TO_TIME, latency_ratio, too_slow
from onnxcompress.passes.base import LayerStat, Pass, PassConfig, PassContext, PassResult, option
from onnxcompress.weights import WeightIndex, all_graphs, has_quantized_ops, model_names, unique_name

logger = logging.getLogger(__name__)

COMPUTE_CHOICES = ("auto", "always", "never")

FLOAT = ir.DataType.FLOAT
HALF = ir.DataType.FLOAT16
BF16 = ir.DataType.BFLOAT16
# Ops kept in float32. Measured on models/*.onnx, tests/assets/*.onnx and an exported BERT-style
# model: normalisations (mean/variance of many values), Softmax and the exp/log family overflow
# or lose too many bits in fp16; Pow and reductions accumulate (x^2 over a hidden dimension);
# Range, Resize and shape arithmetic are exact integer-like computations in float.
KEEP_FLOAT32 = frozenset({
    "LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
    "LpNormalization", "MeanVarianceNormalization", "SimplifiedLayerNormalization",
    "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Erf", "Softplus",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceProd", "CumSum", "Range", "Resize", "Upsample", "RoiAlign",
    "NonMaxSuppression", "TopK", "RandomNormal", "RandomUniform", "RandomNormalLike",
    "RandomUniformLike", "Multinomial", "EyeLike", "If", "Loop", "Scan", "SequenceConstruct",
    "ConstantOfShape", "Einsum", "LSTM", "GRU", "RNN", "STFT", "DFT",
    # Quantization ops: float16 scales need opset 19, and int8 models are already small.
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
})
# Float32 weights of at least this many elements read only by ops kept in float32 are stored in
# float16 with a Cast (smaller ones are scales and shape-like constants: kept exact).
STORE_HALF_MIN_SIZE = 1024


@dataclass(frozen=True)
class Float16Config(PassConfig):
    enabled: bool = option(default=False, flag="--float16", enables=True,
                           help="float16 weights, and compute where not slower on this CPU (file ~0.5x)")
    keep_io_types: bool = option(default=True, flag="--keep-io-types",
                                 help="keep float32 model inputs/outputs (Casts at the boundary)")
    keep_float32: tuple[str, ...] = option(
        default=(), flag="--keep-float32", metavar="OP",
        help="also keep these op types in float32 (adds to the built-in list)",
    )
    # Checked on a few calibration (else synthetic) samples; layers kept float32 are priced
    # within _float16_check.KEEP_BUDGET of the weight bytes. 0 turns the check off.
    target_cosine: float = option(
        default=0.9999, flag="--float16-target-cosine", metavar="COS",
        help="keep the most sensitive layers float32 until the worst output cosine against "
             "float32 reaches this (0: no check)",
    )

    compute: str = option(
        default="auto", flag="--float16-compute", choices=COMPUTE_CHOICES,
        help="auto: fp16 compute only where it measures no slower than float32 on this CPU, else "
             "weights stored in fp16 with a Cast and compute float32 (same size); always; never",
    )

    def __post_init__(self) -> None:
        self._require(0.0 <= self.target_cosine <= 1.0,
                      f"target_cosine must be within [0, 1], got {self.target_cosine}")
        self._require(self.compute in COMPUTE_CHOICES,
                      f"compute must be one of {', '.join(COMPUTE_CHOICES)}, got '{self.compute}'")


@dataclass(frozen=True)
class BFloat16Config(PassConfig):
    enabled: bool = option(default=False, flag="--bfloat16", enables=True,
                           help="store weights in bfloat16 with a Cast to float32 (file ~0.5x)")
    min_size: int = option(default=16, help="smaller weights stay float32")
    # float16 storage keeps 10 mantissa bits (bfloat16: 7) in the same 2 bytes; auto mode offers
    # it per layer (with ``exclude``) as the lossless-looking step between int8 and float32.
    dtype: str = option(default="bfloat16", choices=("bfloat16", "float16"),
                        help="storage type of the weights (both are cast to float32 at load)")

    def __post_init__(self) -> None:
        self._require(self.dtype in ("bfloat16", "float16"),
                      f"dtype must be bfloat16 or float16, got '{self.dtype}'")


class Float16(Pass):
    name = "float16"
    config_class = Float16Config
    summary = "float16 weights and compute (sensitive ops stay float32)"
    cli_order = 90

    def apply(self, model: ir.Model, context: PassContext, result: PassResult) -> ir.Model:
        cfg: Float16Config = self.config  # type: ignore[assignment]
        if _left_quantized(model, context, result):
            return model
        if cfg.compute == "never":
            return _stored_half(model, cfg.exclude, context, result)
        if cfg.compute == "auto" and cfg.keep_io_types and has_fp16_arithmetic() is False \
                and fits_whole_checks(model):
            # Not timed (a timing's noise decided it run by run) nor converted: float32 compute on
            # fp16-rounded weights (the storage form holds the weights whole: a large model
            # converts as before, one weight at a time, its fp16 compute kept untimed).
            stored = _stored_half(model, tuple(cfg.exclude), context, result)
            result.headline(_stored_headline("this CPU has no float16 arithmetic (no AVX512-FP16 / "
                                              "AMX-FP16), fp16 compute would convert every op"))
            return stored
        # fp16 inputs/outputs ask for fp16 compute (a GPU deployment): not timed on the CPU.
        original = model.clone() if cfg.compute == "auto" and cfg.keep_io_types else None
        converted = self._compute_half(model, context, result)
        if converted is None:  # onnxruntime cannot load the fp16 graph (``model`` is untouched)
            return _stored_half(model, cfg.exclude, context, result)
        if original is None or not result.layers:
            return converted
        ratio, source = latency_ratio(original, converted, context, cfg.to_dict())
        if source == TOO_LARGE_TO_TIME:
            result.note(f"fp16 compute kept without a speed check ({source})")
            return converted
        if ratio is not None:
            result.metrics["fp16_compute_latency_ratio"] = ratio
            if not too_slow(ratio):
                result.note(f"speed guard: fp16 compute {ratio:.2f}x float32's latency on this CPU")
                return converted
        # Too slow, or not timed (madmom's beat TCN, untimed: 2.42x): float32 compute, whose
        # speed is the original's by construction.
        why = (f"fp16 compute measured {ratio:.2f}x float32's latency on this CPU" if ratio is not None
               else f"fp16 compute could not be timed ({source})")
        return _stored_instead(original, converted, cfg, context, result, why)

    def _compute_half(self, model: ir.Model, context: PassContext, result: PassResult) -> ir.Model | None:
        """The model computing in float16, or None when onnxruntime cannot load that graph."""
        cfg: Float16Config = self.config  # type: ignore[assignment]
        keep_ops = frozenset(KEEP_FLOAT32 | set(cfg.keep_float32))
        declared = {v.name for _, g in all_graphs(model) for v in _main_values(g) if v.type is not None}
        model = _typed(model)
        if not any(v.dtype == FLOAT for v in _main_values(model.graph)):
            result.note("no float32 tensor in the main graph; model left as is")
            return model
        check = (fidelity_check(model, context, result, cfg.target_cosine, keep_ops)
                 if cfg.target_cosine else None)
        if check is None:
            model = _convert(model, keep_ops, frozenset(), cfg.keep_io_types, context, result)
        else:
            model = check.convert(model, lambda m, keep, r: _convert(
                m, keep_ops, keep, cfg.keep_io_types, context, r), result)
        # The types inferred for the conversion are not written out where the input declared
        # none, in the main graph and in subgraphs: value_info was 6.5 KB of transformer_digits'
        # 288 KB (file 0.556x -> 0.533x) and 48 KB of silero_vad's If branches (0.556x -> 0.535x).
        for _, graph in all_graphs(model):
            for node in graph:
                for out in node.outputs:
                    if out.name not in declared and not out.is_graph_output():
                        out.type, out.shape = None, None
        # Loaded in a child with the user's optimizations before anything here loads it so: an
        # fp16 graph can crash onnxruntime's optimizer outright (a GPT's batch-first Transpose
        # before a MatMul on a constant: a segmentation fault at load in onnxruntime 1.32, in
        # this run and in the user's). The fidelity check above stops short of the layout stage.
        if result.layers:
            loads, why = runtime.loads_in_child(model)
            if not loads:
                for kept in (result.layers, result.skipped, result.notes, result.metrics):
                    kept.clear()
                result.headline(f"fp16 compute not used: {why}; weights stored in float16, computed "
                                "in float32")
                return None
        return model


def _convert(model: ir.Model, keep_ops: frozenset[str], keep_nodes: frozenset[int], keep_io_types: bool,
             context: PassContext, result: PassResult) -> ir.Model:
    """Convert ``model`` (typed, main graph) in place: float16 weights and compute except ops of
    ``keep_ops`` and the main-graph nodes at the positions ``keep_nodes`` (with their weights)."""
    graph = model.graph
    names = model_names(model)
    before = sum(v.const_value.nbytes for _, g in all_graphs(model) for v in g.initializers.values()
                 if v.const_value is not None)
    converted: set[int] = set()  # ids of values that became float16
    half_nodes = []
    kept = {id(node) for position, node in enumerate(graph) if position in keep_nodes}
    for node in graph:
        if (node.domain not in ("", "ai.onnx") or node.op_type in keep_ops or has_subgraph(node)
                or id(node) in kept):
            continue
        outs = [o for o in node.outputs if o.dtype == FLOAT]
        if not outs and not any(i is not None and i.dtype == FLOAT for i in node.inputs):
            continue
        if any(o.dtype is None for o in node.outputs):
            result.skip(node.name or node.op_type, "output type unknown: left float32")
            continue
        half_nodes.append(node)
    half_ids = {id(n) for n in half_nodes}
    # A Constant is float16 only when every reader computes in float16 and its values fit:
    # a BatchNormalization variance of 1e8 saturated to 65504 and cast back for the float32
    # op would be wrong (PP-OCR's detector).
    half_nodes = [n for n in half_nodes if n.op_type != "Constant" or _constant_fits(n, half_ids)]
    half_ids = {id(n) for n in half_nodes}
    # Weights: every float32 constant read only by float16 nodes becomes float16.
    n_weights = 0
    initializers = list(graph.initializers.values())
    for i, value in enumerate(initializers):
        context.report_progress("float16", i, len(initializers))  # per weight
        t = value.const_value
        if t is None or t.dtype != FLOAT or value.is_graph_input() or value.is_graph_output():
            continue
        users = value.uses()
        if not users or not all(id(n) in half_ids for n, _ in users):
            continue
        arr = t.numpy()
        if not _fits_half(arr):
            continue  # beyond float16's range: stays float32, cast at run time
        value.const_value = ir.tensor(_to_half(arr), name=value.name)
        value.dtype = HALF
        converted.add(id(value))
        n_weights += 1
        result.add_layer(LayerStat(name=value.name or "", op_type="/".join(
            dict.fromkeys(n.op_type for n, _ in users)), shape=tuple(arr.shape),
            bytes_before=arr.nbytes, bytes_after=arr.nbytes // 2, bits=16.0))
        del arr  # one weight's data at a time (issue 18): the view first, then the map
        release_external(t)
        del t
    # Weights of the nodes the fidelity check keeps stay float32: the check kept them for it.
    n_stored = _store_half(graph, half_ids | kept, names, result)
    n_stored += _store_half_constants(model, half_ids, names, result, kept)
    for node in half_nodes:
        if node.op_type == "Constant":
            attr = node.attributes.get("value")
            if attr is not None and attr.type == ir.AttributeType.TENSOR and attr.value.dtype == FLOAT:
                arr = attr.value.numpy()
                node.attributes["value"] = ir.AttrTensor(
                    "value", ir.tensor(_to_half(arr), name=attr.value.name))
                if arr.size >= STORE_HALF_MIN_SIZE:  # a weight held in a Constant node
                    result.add_layer(LayerStat(
                        name=node.outputs[0].name or "constant", op_type="Constant",
                        shape=tuple(arr.shape), bytes_before=arr.nbytes,
                        bytes_after=arr.nbytes // 2, bits=16.0))
            elif attr is None or attr.type != ir.AttributeType.TENSOR:
                continue
        if node.op_type == "Cast" and node.attributes["to"].value == FLOAT:
            node.attributes["to"] = ir.AttrInt64("to", HALF)
        for o in node.outputs:
            if o.dtype == FLOAT:
                o.dtype = HALF
                converted.add(id(o))
    # Inputs: float16 nodes read float16, the others float32.
    new_nodes: dict[int, list[ir.Node]] = {}
    cache: dict[tuple[int, ir.DataType], ir.Value] = {}
    for node in list(graph):
        want_half = id(node) in half_ids
        for i, inp in enumerate(node.inputs):
            if inp is None or inp.dtype not in (FLOAT, HALF):
                continue
            if want_half and inp.dtype == FLOAT and not _stays_float(node, i):
                target = HALF
            elif not want_half and id(inp) in converted:
                target = FLOAT
            else:
                continue
            key = (id(inp), target)
            if key not in cache:
                cast_nodes = new_nodes.setdefault(id(node), [])
                suffix = "fp16" if target == HALF else "fp32"
                cache[key] = _cast(cast_nodes, inp, target, unique_name(names, f"{inp.name}_{suffix}"))
                cache[key].producer().name = ""
            node.replace_input_with(i, cache[key])
        # Values a subgraph reads from this graph keep float32 for it.
        for sub in node_subgraphs(node):
            for inner in ir.traversal.RecursiveGraphIterator(sub):
                for i, inp in enumerate(inner.inputs):
                    if inp is not None and id(inp) in converted and inp.graph is graph:
                        key = (id(inp), FLOAT)
                        if key not in cache:
                            cache[key] = _cast(new_nodes.setdefault(id(node), []), inp, FLOAT,
                                               unique_name(names, f"{inp.name}_fp32"))
                        inner.replace_input_with(i, cache[key])
    for node in list(graph):
        if id(node) in new_nodes:
            graph.insert_before(node, new_nodes[id(node)])
    # Outputs.
    for i, out in enumerate(list(graph.outputs)):
        if id(out) not in converted:
            continue
        if keep_io_types:
            name = out.name
            out.name = unique_name(names, f"{name}_fp16")
            cast_list: list[ir.Node] = []
            new_out = _cast(cast_list, out, FLOAT, name)
            graph.extend(cast_list)
            graph.outputs[i] = new_out
    if not keep_io_types:
        for inp in graph.inputs:
            if inp.dtype == FLOAT and inp.uses() and all(
                    c.op_type == "Cast" and c.attributes["to"].value == HALF for c, _ in inp.uses()):
                casts = [c for c, _ in inp.uses()]
                inp.dtype = HALF
                for c in casts:
                    ir.convenience.replace_all_uses_with(c.outputs[0], inp)
                    graph.remove(c, safe=True)
    after = sum(v.const_value.nbytes for _, g in all_graphs(model) for v in g.initializers.values()
                if v.const_value is not None)
    result.metrics.update(weights_converted=n_weights, weights_stored_float16=n_stored,
                          nodes_float16=len(half_nodes),
                          initializer_bytes_before=before, initializer_bytes_after=after)
    result.modified = result.modified or bool(half_nodes)
    return model



def _left_quantized(model: ir.Model, context: PassContext, result: PassResult) -> bool:
    """Whether ``model`` already computes in int8 and is left as it is (said as a skip; Pass.run
    adds the "already quantized" headline). Rounding an int8 model's scales, biases or norms
    moves what its int8 activations round to: pipecat's Smart Turn (QDQ int8), float16 compute
    flipped 4 of 32 turn decisions, float16 storage of its biases, norms and position table 5,
    for 4% of the file."""
    quantized = context.input_quantized
    if not (has_quantized_ops(model) if quantized is None else quantized):
        return False
    result.skip("model", "already quantized (int8 ops): 16-bit floats would move what its int8 "
                         "activations round to")
    return True


def _stored_instead(original: ir.Model, converted: ir.Model, cfg: Float16Config, context: PassContext,
                    result: PassResult, why: str) -> ir.Model:
    """``original`` with fp16 storage and float32 compute in place of ``converted`` (fp16
    compute), the result's records replaced and a headline saying ``why``. Weights the
    conversion kept float32 (the fidelity check's layers, --exclude) stay so."""
    kept = {name for name, v in converted.graph.initializers.items()
            if v.const_value is not None and v.const_value.dtype == FLOAT}
    kept &= set(original.graph.initializers)
    headlines = list(result.headlines)
    ratio = result.metrics.get("fp16_compute_latency_ratio")
    result.layers.clear()
    result.skipped.clear()
    result.notes.clear()
    result.metrics.clear()
    if ratio is not None:
        result.metrics["fp16_compute_latency_ratio"] = ratio
    stored = _stored_half(original, tuple(cfg.exclude) + tuple(sorted(kept)), context, result)
    result.headlines[:] = headlines
    result.headline(_stored_headline(why))
    return stored


def _stored_headline(why: str) -> str:
    return (f"{why}: weights stored in fp16 with a Cast, compute float32 (same file size; "
            "--float16-compute always keeps fp16 compute)")


def _stored_half(model: ir.Model, exclude: tuple[str, ...], context: PassContext,
                 result: PassResult) -> ir.Model:
    """Weights stored in float16 with a Cast to float32 (the bfloat16 pass's storage form)."""
    store = BFloat16(BFloat16Config(enabled=True, dtype="float16", exclude=exclude))
    return store.apply(model, context, result)


class BFloat16(Pass):
    name = "bfloat16"
    config_class = BFloat16Config
    summary = "bfloat16 weight storage (compute stays float32)"
    cli_order = 91

    def apply(self, model: ir.Model, context: PassContext, result: PassResult) -> ir.Model:
        cfg: BFloat16Config = self.config  # type: ignore[assignment]
        if _left_quantized(model, context, result):
            return model
        half = cfg.dtype == "float16"
        if not half and opset_version(model) < 13:
            # PP-OCR's exports are opset 12: upgraded when the converted model checks and loads.
            upgraded, why = upgrade_opset(model, 13)
            if why is not None:
                result.skip("model", f"Cast from bfloat16 needs opset 13: {why}")
                return model
            result.note(f"opset {opset_version(model)} upgraded to 13 for the Cast from bfloat16")
            model = upgraded
        names = model_names(model)
        excluded = {id(w.value) for w in WeightIndex.build(model) if w.excluded_by(cfg.exclude)}
        tiny = 0
        for _, graph in all_graphs(model):
            for value in list(graph.initializers.values()):
                t = value.const_value
                if t is None or t.dtype != FLOAT or value.is_graph_input() or value.is_graph_output():
                    continue
                if int(np.prod(t.shape.numpy())) < cfg.min_size or not value.uses():
                    continue
                if id(value) in excluded:
                    result.skip(value.name or "weight", "excluded")
                    continue
                arr = t.numpy()
                name = value.name or "weight"
                if not half_pays(arr.nbytes, name):  # a Cast would cost more than it saves
                    tiny += 1
                    continue
                data = _to_half(arr) if half else _to_bf16_bits(arr)
                store_narrow(graph, value, data, HALF if half else BF16, names, "fp16" if half else "bf16")
                result.add_layer(LayerStat(name=name, op_type=cfg.dtype, shape=tuple(arr.shape),
                                           bytes_before=arr.nbytes, bytes_after=arr.nbytes // 2,
                                           bits=16.0))
            # Weights held in Constant nodes (PP-OCR's exports, silero_vad's If branches): the
            # node holds the half tensor and a Cast follows it (they were left float32: bf16
            # files of those models were 1.0x).
            for node in list(graph):
                if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
                    continue
                attr = node.attributes.get("value")
                if attr is None or attr.type != ir.AttributeType.TENSOR or attr.value.dtype != FLOAT:
                    continue
                out = node.outputs[0]
                if (out.is_graph_output() or not out.uses()
                        or int(np.prod(attr.value.shape.numpy())) < cfg.min_size):
                    continue
                if id(out) in excluded:
                    result.skip(out.name or "constant", "excluded")
                    continue
                arr = attr.value.numpy()
                if half and not _fits_half(arr):
                    continue  # an attention mask's -1e9 would saturate: stays float32
                name = out.name or "constant"
                if not half_pays(arr.nbytes, name):
                    tiny += 1
                    continue
                data = _to_half(arr) if half else _to_bf16_bits(arr)
                store_narrow(graph, out, data, HALF if half else BF16, names, "fp16" if half else "bf16")
                result.add_layer(LayerStat(name=name, op_type=f"Constant ({cfg.dtype})",
                                           shape=tuple(arr.shape), bytes_before=arr.nbytes,
                                           bytes_after=arr.nbytes // 2, bits=16.0))
        if tiny:
            result.note(f"{tiny} small tensor(s) left float32: a Cast would add more bytes than "
                        f"{cfg.dtype} saves")
        if not result.layers:
            result.note(f"no float32 weight to store in {cfg.dtype}; model left as is")
        else:
            result.note(f"weights stored in {cfg.dtype} with a Cast to float32: onnxruntime's CPU "
                        "provider computes in float32 (memory stays float32 after load)")
        return model


# -- helpers ------------------------------------------------------------------------------------


def _store_half(graph: ir.Graph, half_ids: set[int], names: set[str], result: PassResult) -> int:
    """Large float32 weights read by ops that stay float32 (LSTM/GRU, Einsum...) are stored in
    float16 with a Cast back to float32: the file halves for them too (onnxruntime folds the Cast
    at load, so they compute as before from the rounded values)."""
    n = 0
    for value in list(graph.initializers.values()):
        t = value.const_value
        if t is None or t.dtype != FLOAT or value.is_graph_input() or value.is_graph_output():
            continue
        users = value.uses()
        if not users or any(id(node) in half_ids for node, _ in users):
            continue  # read by float16 nodes: converted (or cast) with them
        if int(np.prod(t.shape.numpy())) < STORE_HALF_MIN_SIZE:
            continue  # small constants (scales, shapes in float) stay exact
        arr = t.numpy()
        if not _fits_half(arr):
            continue
        name = value.name or "weight"
        store_narrow(graph, value, _to_half(arr), HALF, names, "fp16")
        result.add_layer(LayerStat(name=name, op_type="/".join(dict.fromkeys(
            node.op_type for node, _ in users)) + " (stored float16)", shape=tuple(arr.shape),
            bytes_before=arr.nbytes, bytes_after=arr.nbytes // 2, bits=16.0))
        n += 1
    return n


def _store_half_constants(model: ir.Model, half_ids: set[int], names: set[str],
                          result: PassResult, kept: set[int]) -> int:
    """The same for ``Constant`` nodes that stay float32, in every graph (weights inside
    If/Loop bodies, as exporters write them): the node holds float16, a Cast follows it."""
    n = 0
    for _, graph in all_graphs(model):
        for node in list(graph):
            if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or id(node) in half_ids:
                continue
            attr = node.attributes.get("value")
            if attr is None or attr.type != ir.AttributeType.TENSOR or attr.value.dtype != FLOAT:
                continue
            out = node.outputs[0]
            if out.is_graph_output() or int(np.prod(attr.value.shape.numpy())) < STORE_HALF_MIN_SIZE:
                continue
            if any(id(user) in kept for user, _ in out.uses()):
                continue  # read by a node the fidelity check keeps float32
            arr = attr.value.numpy()
            if not _fits_half(arr):
                continue
            name = out.name or "constant"
            store_narrow(graph, out, _to_half(arr), HALF, names, "fp16")
            result.add_layer(LayerStat(name=name, op_type="Constant (stored float16)",
                                       shape=tuple(arr.shape), bytes_before=arr.nbytes,
                                       bytes_after=arr.nbytes // 2, bits=16.0))
            n += 1
    return n


def _constant_fits(node: ir.Node, half_ids: set[int]) -> bool:
    """A Constant node may become float16: its values fit and only float16 nodes read it."""
    attr = node.attributes.get("value")
    if (attr is not None and attr.type == ir.AttributeType.TENSOR and attr.value.dtype == FLOAT
            and not _fits_half(attr.value.numpy())):
        return False
    return all(id(user) in half_ids for o in node.outputs for user, _ in o.uses())


def _to_bf16_bits(arr: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 with round-to-nearest-even, as ml_dtypes values."""
    import ml_dtypes

    return np.asarray(arr, dtype=np.float32).astype(ml_dtypes.bfloat16)


def _stays_float(node: ir.Node, index: int) -> bool:
    """Inputs the schema types as float32 whatever the data type (Resize/Upsample scales)."""
    return node.op_type in ("Resize", "Upsample") and index >= 1


def _main_values(graph: ir.Graph):  # noqa: ANN202
    yield from graph.inputs
    for node in graph:
        yield from node.outputs


def _typed(model: ir.Model) -> ir.Model:
    """``model`` with element types inferred for every main-graph value (onnx shape inference)."""
    proto = to_proto(model, inline_external=False)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception:  # custom ops: keep what we have
        inferred = proto
    typed = ir.serde.deserialize_model(inferred)
    base = external_base_dir(model)
    if base:
        ir.external_data.set_base_dir(typed.graph, base)
    typed.metadata_props.update(model.metadata_props)
    return typed


