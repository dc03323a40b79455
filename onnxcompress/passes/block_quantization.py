"""Block quantization (2-8 bits, 4 the common case) of MatMul/Gemm weights and Gather embeddings.

Each weight is quantized in blocks of ``block_size`` input elements (the numbers come from
:mod:`onnxcompress.blockwise`) and written in one of two forms:

- ``onnxruntime``: ``com.microsoft.MatMulNBits`` for MatMul/Gemm (Gemm's bias through the op's
  bias input) and ``com.microsoft.GatherBlockQuantized`` for embeddings. onnxruntime computes
  from the packed weights, so the model is small in memory too, not only on disk.
- ``portable``: standard ``DequantizeLinear`` with ``block_size`` (opset 21, INT4/UINT4 or
  INT8/UINT8) feeding the unchanged float op; the model's opset is raised when that is safe.

A weight read by several ops (an embedding table tied to the output head through a Transpose, a
weight shared through Identity) is quantized once: the Gather and the MatMul of a tied embedding
see the same ``[vocab, hidden]`` blocks, so they share the codes and scales, and the float
original leaves the file. Rounding is ``rtn``, ``hqq`` (data-free scale search) or ``gptq``
(error-compensating, from X^T X of each layer's input collected on the calibration data);
``auto`` is gptq with calibration data, else rtn.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxcompress import blockwise, runtime
from onnxcompress.errors import OnnxCompressError
from onnxcompress.graph.branches import observable_graphs
from onnxcompress.graph.scope import first_reader
from onnxcompress.layerwise.stats import collect_reader_stats, too_wide
from onnxcompress.model import copy_model
from onnxcompress.opset import opset_version, upgrade_opset
from onnxcompress.passes import _blockq_allocate, _blockq_speed
from onnxcompress.passes.base import LayerStat, Pass, PassConfig, PassContext, PassResult, option
from onnxcompress.weights import COMPUTE_ROLES, Weight, WeightIndex

logger = logging.getLogger(__name__)

TARGETS = ("onnxruntime", "portable")
METHODS = ("auto", *blockwise.METHODS)
MS_DOMAIN = "com.microsoft"
COVERED_OPS = frozenset({"MatMul", "Gemm", "Gather"})  # the readers blocks are written for
PORTABLE_OPSET = 21
# X^T X of the layer inputs held at once while streaming calibration data (float64); more
# layers than fit take further passes over the data.
HESSIAN_BUDGET_BYTES = 256 << 20
_FLOAT_DTYPES = {ir.DataType.FLOAT: np.float32, ir.DataType.FLOAT16: np.float16}


@dataclass(frozen=True)
class BlockQuantizeConfig(PassConfig):
    bits: int = option(
        default=4, flag="--quantize-bits", enables=True, metavar="N", type=int,
        help="block-quantize MatMul/Gemm weights and embeddings to N bits (2-8; 4 is "
        "--quantize int4)",
    )
    block_size: int = option(default=32, flag="--block-size", metavar="K",
                             help="input elements per block (a power of two, 16-256)")
    target: str = option(
        default="onnxruntime", flag="--target", choices=TARGETS,
        help="onnxruntime: MatMulNBits/GatherBlockQuantized (small in memory, fast on CPU); "
        "portable: standard DequantizeLinear with block_size (opset 21)",
    )
    symmetric: bool = option(default=True, flag="--block-symmetric",
                             help="blocks without zero points (--no-block-symmetric: with them)")
    method: str = option(
        default="auto", flag="--block-method", choices=METHODS,
        help="rounding: rtn, hqq (data-free scale search), gptq (needs --calibration); "
        "auto: gptq with calibration data, else rtn",
    )
    embeddings: bool = option(default=True, flag="--block-embeddings",
                              help="also quantize Gather embedding tables")
    accuracy_level: int = option(
        default=-1, flag="--accuracy-level", metavar="L",
        help="MatMulNBits accuracy_level: 0 computes in float from the packed weights, 4 "
        "quantizes activations to int8; -1 (auto): 0 for 2-4 bit layers, 4 for 8-bit ones "
        "(onnxruntime 1.32 CPU, 768x3072, 64 rows: 4-bit 11.4 ms at 0 vs 16.1 at 4; 8-bit "
        "48 ms at 0 vs 15 at 4; fp32 14.8)",
    )
    min_size: int = option(default=1024, help="weights with fewer elements stay float")
    budget_bits: float = option(
        default=0.0, flag="--quantize-budget", metavar="B",
        help="mixed bits per layer: the size budget as an average code width between BITS and 8 "
        "(4.5 with 4 bits: an eighth of the way to uniform 8-bit bytes); the layers whose "
        "rounding moves the outputs most, measured on --calibration data, get 8 bits; 0: every "
        "layer at BITS",
    )
    probe_samples: int = option(default=2, help="mixed bits: calibration feeds per layer (probe)")
    calibration_samples: int = option(default=128, help="calibration feeds used for gptq")
    damp: float = option(default=0.01, help="gptq: fraction of the mean diagonal added to X^T X")
    speed_note: bool = option(default=True, help="time the written model (a headline where slower)")

    def __post_init__(self) -> None:
        self._require(2 <= self.bits <= 8, "bits must be in 2..8")
        bs = self.block_size
        self._require(16 <= bs <= 256 and not bs & (bs - 1), "block_size must be a power of two in 16..256")
        self._require(self.target in TARGETS, f"target must be one of {', '.join(TARGETS)}")
        self._require(self.method in METHODS, f"method must be one of {', '.join(METHODS)}")
        self._require(self.accuracy_level in (-1, 0, 1, 2, 3, 4), "accuracy_level must be -1 (auto) or 0..4")
        self._require(self.min_size >= 0, "min_size must be >= 0")
        self._require(self.budget_bits == 0 or self.bits <= self.budget_bits <= 8,
                      f"budget_bits must be 0 (every layer at bits) or in bits..8, got {self.budget_bits}")
        self._require(self.probe_samples > 0, "probe_samples must be positive")
        self._require(self.calibration_samples > 0, "calibration_samples must be positive")
        self._require(0 <= self.damp < 1, "damp must be in [0, 1)")


@dataclass
class _Use:
    """A final consumer of a weight, past Identity/Cast/Transpose."""

    node: ir.Node
    index: int
    kind: str  # "matmul" | "gemm" | "gather"
    # True when the consumer's [rows=outputs, cols=inputs] matrix is the stored tensor itself,
    # False when it is its transpose.
    as_stored: bool
    dtype: ir.DataType  # the float type the consumer computes in


@dataclass
class _Layer:
    weight: Weight
    uses: list[_Use]
    as_stored: bool  # the [rows=outputs, cols=inputs] matrix is the stored tensor (else its .T)
    dtype: ir.DataType
    chain: list[ir.Node] = field(default_factory=list)  # Identity/Cast/Transpose in between
    hessian: np.ndarray | None = field(default=None, repr=False)
    # Other tensors holding the same matrix (an exporter's transposed copy of a tied embedding).
    copies: list[Weight] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.weight.shape
        return (rows, cols) if self.as_stored else (cols, rows)

    @property
    def matrix(self) -> np.ndarray:
        """[rows, cols] float32, blocks along cols; read from the weight on each access, so only
        the layer being quantized has a float copy in memory (issue 18), not every layer."""
        stored = np.asarray(self.weight.numpy(), dtype=np.float32)
        return np.ascontiguousarray(stored if self.as_stored else stored.T)


class BlockQuantize(Pass):
    name = "blockq"
    config_class = BlockQuantizeConfig
    summary = "block-wise 2-8 bit weights (MatMulNBits / GatherBlockQuantized / blocked DQ)"
    cli_order = 25  # before kmeans (30): it then shares what is left (Conv)

    def apply(self, model: ir.Model, context: PassContext, result: PassResult) -> ir.Model:
        cfg: BlockQuantizeConfig = self.config  # type: ignore[assignment]
        result.metrics.update(target=cfg.target, bits=cfg.bits, block_size=cfg.block_size)
        layers = self._select(model, cfg, result)
        float_copy = _blockq_speed.copy_to_time(model) if layers and cfg.target == "onnxruntime" \
            and cfg.speed_note else None
        if not context.planned:  # no weight pass after this one takes what blocks do not cover
            _say_uncovered(model, result)
        if not layers:
            result.note("no MatMul/Gemm weight or Gather embedding to block-quantize; model left as "
                        "is (--kmeans 4 stores Conv, Einsum and recurrent weights in 4 bits)")
            return model
        if cfg.target == "portable" and opset_version(model) < PORTABLE_OPSET:
            upgraded, why = upgrade_opset(model, PORTABLE_OPSET)
            if why is not None:
                for layer in layers:
                    result.skip(layer.weight.label,
                                f"portable blocked DequantizeLinear needs opset 21: {why}")
                return model
            model = upgraded
            layers = self._select(model, cfg, PassResult(self.name, {}, model))
        method = self._method(cfg, context, result)
        spec_dtype = {ir.DataType.FLOAT: "float32", ir.DataType.FLOAT16: "float16"}

        def scale_dtype(layer: _Layer) -> str:
            return spec_dtype[layer.dtype if cfg.target == "onnxruntime" else layer.weight.dtype]

        widths, extras = _blockq_allocate.allocate_bits(
            model, layers, bits=cfg.bits, budget_bits=cfg.budget_bits, block_size=cfg.block_size,
            symmetric=cfg.symmetric, scale_dtype={x.weight.label: scale_dtype(x) for x in layers},
            probe_samples=cfg.probe_samples, context=context, result=result,
        ) if cfg.budget_bits else ({}, {})
        if method == "gptq":
            self._collect_hessians(model, layers, context, cfg, result)
        result.metrics["method"] = method
        if cfg.target == "portable":
            # Written on a copy: onnxruntime may lack the blocked DequantizeLinear at this opset.
            original, model = model, copy_model(model)
            copied = self._select(model, cfg, PassResult(self.name, {}, model))
            for a, b in zip(layers, copied, strict=True):
                b.hessian = a.hessian
            layers = copied
        before = after = 0
        for i, layer in enumerate(layers):
            context.report_progress("blockq", i, len(layers))
            label = layer.weight.label
            spec = blockwise.BlockSpec(widths.get(label, cfg.bits), cfg.block_size, cfg.symmetric,
                                       scale_dtype(layer))
            use_method = method if (method != "gptq" or layer.hessian is not None) else "rtn"
            matrix = layer.matrix
            qt = blockwise.quantize(matrix, spec, use_method, hessian=layer.hessian, damp=cfg.damp)
            w = layer.weight
            label, shape = w.label, w.shape
            nbytes = w.nbytes + sum(c.nbytes for c in layer.copies)
            written = (_write_onnxruntime(layer, qt, cfg) if cfg.target == "onnxruntime"
                       else _write_portable(layer, qt))
            before += nbytes
            after += written
            result.add_layer(LayerStat(
                name=label, op_type="+".join(dict.fromkeys(u.node.op_type for u in layer.uses)),
                shape=shape, bytes_before=nbytes, bytes_after=written,
                bits=written * 8 / max(1, int(np.prod(shape))), error=qt.relative_error(matrix),
                extra={"method": qt.method, "block_size": cfg.block_size, "symmetric": cfg.symmetric,
                       "accuracy_level": accuracy_level(cfg.accuracy_level, spec.storage_bits),
                       "copies_merged": [c.label for c in layer.copies], **extras.get(label, {})},
            ))
            del matrix, qt  # the mapped input pages go before the next layer is read
            w.release()
        if cfg.target == "onnxruntime":
            model.opset_imports.setdefault(MS_DOMAIN, 1)
            if float_copy is not None and result.layers:
                _blockq_speed.say_if_slower(float_copy, model, context, result, cfg.to_dict())
        else:
            model.ir_version = max(model.ir_version or 0, 10)  # INT4 tensors: IR 10
            ok, why = runtime.loadable(model)
            if not ok and runtime.loadable(original)[0]:
                result.layers.clear()
                result.modified = False
                for layer in layers:
                    result.skip(layer.weight.label, f"onnxruntime cannot load the blocked "
                                f"DequantizeLinear at opset {opset_version(model)}: {why}")
                return original
        if cfg.bits not in blockwise.PACKED_BITS:
            result.note(f"{cfg.bits}-bit codes have no packed form in onnxruntime; stored one "
                        "code per byte (the accuracy of the width, the size of 8 bits)")
        result.metrics.update(weight_bytes_before=before, weight_bytes_after=after,
                              layers=len(layers))
        return model

    # -- selection ------------------------------------------------------------------------------

    def _select(self, model: ir.Model, cfg: BlockQuantizeConfig, result: PassResult) -> list[_Layer]:
        layers = []
        for w in WeightIndex.build(model).select(roles=COMPUTE_ROLES, float_only=False):
            if not COVERED_OPS & set(w.op_types):
                result.skip(w.label, f"{'/'.join(w.op_types)} weight (blocks cover MatMul, Gemm, Gather)")
                continue
            if w.excluded_by(cfg.exclude):
                result.skip(w.label, "excluded")
                continue
            if (why := w.kept_reason()) is not None:
                result.skip(w.label, why)
                continue
            layer_or_reason = _plan(w, cfg)
            if isinstance(layer_or_reason, str):
                result.skip(w.label, layer_or_reason)
            else:
                layers.append(layer_or_reason)
        return _merge_copies(layers) if cfg.target == "onnxruntime" else layers

    def _method(self, cfg: BlockQuantizeConfig, context: PassContext, result: PassResult) -> str:
        if cfg.method == "auto":
            return "gptq" if context.calibration is not None else "rtn"
        if cfg.method == "gptq" and context.calibration is None:
            result.note("method gptq needs calibration data (--calibration); none given, used rtn")
            return "rtn"
        return cfg.method

    # -- statistics: X^T X per layer input --------------------------------------------------------

    def _collect_hessians(self, model: ir.Model, layers: list[_Layer], context: PassContext,
                          cfg: BlockQuantizeConfig, result: PassResult) -> None:
        """E[x x^T] of each layer's inputs on the calibration data (pooled over the layer's
        readers, e.g. the time steps of an unrolled RNN), a group of layers per pass over the data
        so that the float64 matrices held at once stay under HESSIAN_BUDGET_BYTES."""
        assert context.calibration is not None
        inputs: dict[int, set[str]] = {}
        seen = observable_graphs(model)  # a merged decoder's layers are read in its If branches
        for layer in layers:
            names = {u.node.inputs[0].name for u in layer.uses
                     if u.kind in ("matmul", "gemm") and id(u.node.graph) in seen
                     and u.node.inputs[0] is not None and u.node.inputs[0].name}
            if names:
                inputs[id(layer)] = names
        feeds = context.calibration.take(context.stats.limit(cfg.calibration_samples))
        try:
            # layerwise.stats's reader-set mode: every reader's input pooled, all rows, the
            # matrices of a pass over the data within HESSIAN_BUDGET_BYTES. E[x x^T] instead of
            # the sum X^T X: GPTQ's damping is relative, so the scale does not matter.
            stats, passes = collect_reader_stats(
                model, {str(id(layer)): (sorted(inputs[id(layer)]), layer.shape[1])
                        for layer in layers if id(layer) in inputs},
                feeds, budget_bytes=HESSIAN_BUDGET_BYTES)
        except OnnxCompressError as e:
            result.note(f"calibration data could not be used for gptq ({e}); used rtn")
            return
        for layer in layers:
            layer.hessian = found.hessian[0] if (found := stats.get(str(id(layer)))) is not None else None
        unfit = Counter(too_wide(layer.shape[1]) or "without observable inputs (embeddings, subgraphs)"
                        for layer in layers if layer.hessian is None)
        for why, count in unfit.items():
            result.note(f"{count} weight(s) rounded to nearest: {why}")
        result.metrics["calibration_samples"] = len(feeds)
        result.metrics["calibration_passes"] = passes


def _merge_copies(layers: list[_Layer]) -> list[_Layer]:
    """One layer per distinct matrix: exporters often fold a tied embedding's transpose into a
    second initializer; both readers then share one set of codes and scales."""
    seen: dict[tuple, _Layer] = {}
    out = []
    for layer in layers:
        m = layer.matrix
        key = (id(layer.weight.graph), layer.dtype, m.shape, hashlib.sha1(m.tobytes()).hexdigest())
        del m
        layer.weight.release()
        first = seen.get(key)
        if first is None:
            seen[key] = layer
            out.append(layer)
        else:
            first.uses += layer.uses
            first.chain += layer.chain
            first.copies.append(layer.weight)
    return out


# -- planning -----------------------------------------------------------------------------------


def _plan(w: Weight, cfg: BlockQuantizeConfig) -> _Layer | str:
    """The layer to quantize, or why this weight cannot be."""
    if w.dtype not in _FLOAT_DTYPES:
        return f"{w.dtype.name} weights are not block-quantized (float32/float16 only)"
    if len(w.shape) != 2:
        return f"rank-{len(w.shape)} weight (2-D only)"
    if w.size < cfg.min_size:
        return f"fewer than min_size={cfg.min_size} elements"
    uses: list[_Use] = []
    chain: list[ir.Node] = []
    why = _walk(w.value, False, w.dtype, uses, chain)
    if why:
        return why
    if not uses:
        return "no MatMul/Gemm/Gather consumer"
    if any(u.kind == "gather" for u in uses) and not cfg.embeddings:
        return "embedding (--no-block-embeddings)"
    if len({u.as_stored for u in uses}) > 1:
        return "read in two orientations"
    if len({u.dtype for u in uses}) > 1:
        return "read as two float types"
    dtype = uses[0].dtype
    if dtype not in _FLOAT_DTYPES:
        return f"computed in {dtype.name}"
    rows, cols = w.shape if uses[0].as_stored else w.shape[::-1]
    for u in uses:
        if cfg.target == "portable":
            continue  # the float op stays: any consumer reads the DequantizeLinear output
        if u.kind == "gather" and cols % cfg.block_size:
            return f"embedding width {cols} is not a multiple of block_size {cfg.block_size}"
        if u.kind == "gemm":
            why = _gemm_problem(u.node)
            if why:
                return why
        if u.kind in ("matmul", "gemm"):
            a = u.node.inputs[0]
            if a is not None and a.shape is not None and len(a.shape) < 2:
                return f"{u.node.op_type} input A is 1-D (MatMulNBits needs rank >= 2)"
    return _Layer(weight=w, uses=uses, as_stored=uses[0].as_stored, dtype=dtype, chain=chain)


def _walk(value: ir.Value, transposed: bool, dtype: ir.DataType, uses: list[_Use],
          chain: list[ir.Node]) -> str | None:
    """Collect the consumers of ``value`` past Identity/Cast/Transpose; a reason if one is not
    a MatMul B, Gemm B or Gather table."""
    for node, index in list(value.uses()):
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        if op in ("Identity", "Cast", "Transpose") and len(node.outputs) == 1:
            out = node.outputs[0]
            if out.is_graph_output():
                return f"{op} {node.name!r} output is a graph output"
            t, d = transposed, dtype
            if op == "Transpose":
                perm = node.attributes.get("perm")
                if perm is not None and list(perm.value) != [1, 0]:
                    return f"Transpose {node.name!r} with perm {list(perm.value)}"
                t = not t
            elif op == "Cast":
                d = ir.DataType(node.attributes["to"].value)
            chain.append(node)
            why = _walk(out, t, d, uses, chain)
            if why:
                return why
        elif op == "MatMul" and index == 1:
            uses.append(_Use(node, index, "matmul", transposed, dtype))
        elif op == "Gemm" and index == 1:
            trans_b = bool(node.attributes["transB"].value) if "transB" in node.attributes else False
            uses.append(_Use(node, index, "gemm", transposed != trans_b, dtype))
        elif op == "Gather" and index == 0 and _axis(node) == 0:
            uses.append(_Use(node, index, "gather", not transposed, dtype))
        else:
            return f"read by {op} input {index}"
    return None


def _axis(node: ir.Node) -> int:
    attr = node.attributes.get("axis")
    return int(attr.value) if attr is not None else 0


def _gemm_problem(node: ir.Node) -> str | None:
    attrs = node.attributes
    if "transA" in attrs and attrs["transA"].value:
        return "Gemm with transA"
    if "alpha" in attrs and float(attrs["alpha"].value) != 1.0:
        return "Gemm with alpha != 1"
    if len(node.inputs) > 2 and node.inputs[2] is not None and "beta" in attrs \
            and float(attrs["beta"].value) != 1.0:
        return "Gemm with beta != 1"
    return None


# -- writing ------------------------------------------------------------------------------------


def _constant(layer: _Layer, hint: str, tensor_array: np.ndarray,
              dtype: ir.DataType | None = None) -> ir.Value:
    w = layer.weight
    name = w.fresh_name(hint)
    tensor = ir.Tensor(np.ascontiguousarray(tensor_array), dtype=dtype, name=name)
    value = ir.Value(name=name, shape=ir.Shape(tensor_array.shape),
                     type=ir.TensorType(tensor.dtype), const_value=tensor)
    w.graph.register_initializer(value)
    return value


def _nbytes(values: list[ir.Value]) -> int:
    return sum(v.const_value.nbytes for v in values if v is not None and v.const_value is not None)


def _replace(old: ir.Node, new: ir.Node) -> None:
    graph = old.graph
    assert graph is not None
    ir.convenience.replace_nodes_and_values(graph, old, [old], [new], list(old.outputs)[:1],
                                            list(new.outputs)[:1])


def _first_in(graph: ir.Graph, layer: _Layer) -> ir.Node:
    """The first node of ``graph`` that reads the layer (or holds a reader in a subgraph)."""
    first = first_reader(graph, (u.node for u in layer.uses))
    assert first is not None, "a layer without readers in its graph"
    return first


def _drop_float(layer: _Layer) -> None:
    """Remove the pass-through chain and the float tensor once nothing reads them."""
    for node in reversed(layer.chain):
        if node.graph is not None and not any(o.uses() for o in node.outputs):
            node.graph.remove(node, safe=True)
    layer.weight.remove_if_unused()
    for copy in layer.copies:
        copy.remove_if_unused()


def _write_onnxruntime(layer: _Layer, qt: blockwise.BlockQuantized, cfg: BlockQuantizeConfig) -> int:
    w = layer.weight
    np_dtype = _FLOAT_DTYPES[layer.dtype]
    rows, cols = layer.shape
    base = w.name or "weight"
    bits = qt.spec.storage_bits
    scales = _constant(layer, f"{base}_scales", qt.scales.astype(np_dtype))
    created = [scales]
    zps: ir.Value | None = None
    if not qt.spec.symmetric or bits != qt.spec.bits:
        zps = _constant(layer, f"{base}_zero_points", blockwise.pack(qt.zero_points, bits))
        created.append(zps)
    packed_b = None
    gather_data = None
    # Gathers first: a tied table's MatMulNBits then reads the same bytes through a Reshape
    # (constant-folded by onnxruntime) instead of a second packed copy in the file.
    for use in sorted(layer.uses, key=lambda u: u.kind != "gather"):
        node = use.node
        if use.kind == "gather":
            if gather_data is None:
                gather_data = _constant(layer, f"{base}_q{qt.spec.bits}",
                                        blockwise.pack(qt.codes[:, :cols], bits))
                created.append(gather_data)
            # No trailing empty input when symmetric: onnxruntime's own writers omit it.
            g_inputs = [gather_data, node.inputs[1], scales, *([zps] if zps is not None else [])]
            new = ir.node("GatherBlockQuantized", g_inputs,
                          {"bits": bits, "block_size": cfg.block_size, "gather_axis": 0,
                           "quantize_axis": 1}, domain=MS_DOMAIN, name=node.name)
            _replace(node, new)
            continue
        if packed_b is None and gather_data is not None:
            blob_shape = _constant(layer, f"{base}_blob_shape",
                                   np.array([rows, qt.n_blocks, cfg.block_size * bits // 8], np.int64))
            created.append(blob_shape)
            reshape = ir.node("Reshape", [gather_data, blob_shape], name="")
            reshape.outputs[0].name = w.fresh_name(f"{base}_q{qt.spec.bits}_blocks")
            layer.weight.graph.insert_before(_first_in(layer.weight.graph, layer), reshape)
            packed_b = reshape.outputs[0]
        elif packed_b is None:
            packed_b = _constant(layer, f"{base}_q{qt.spec.bits}",
                                 blockwise.matmul_nbits_tensors(qt)["B"])
            created.append(packed_b)
        inputs = [node.inputs[0], packed_b, scales, zps]
        bias = node.inputs[2] if use.kind == "gemm" and len(node.inputs) > 2 else None
        add_bias = None
        if bias is not None:
            if bias.shape is not None and list(bias.shape) == [rows]:
                inputs += [None, bias]  # g_idx (deprecated) then bias
            else:
                add_bias = bias
        while inputs and inputs[-1] is None:
            inputs.pop()
        attrs = {"K": cols, "N": rows, "bits": bits, "block_size": cfg.block_size}
        level = accuracy_level(cfg.accuracy_level, bits)
        if level:
            attrs["accuracy_level"] = level
        new = ir.node("MatMulNBits", inputs, attrs, domain=MS_DOMAIN, name=node.name)
        if add_bias is None:
            _replace(node, new)
        else:
            out = new.outputs[0]
            out.name = w.fresh_name(f"{node.name or base}_nobias")
            add = ir.node("Add", [out, add_bias], name=f"{node.name}_bias" if node.name else "")
            graph = node.graph
            assert graph is not None
            graph.insert_before(node, new)
            ir.convenience.replace_nodes_and_values(graph, node, [node], [add],
                                                    [node.outputs[0]], [add.outputs[0]])
    _drop_float(layer)
    return _nbytes(created)


def accuracy_level(configured: int, storage_bits: int) -> int:
    """The MatMulNBits accuracy_level written for codes of ``storage_bits``: ``configured``, or
    for -1 (auto) the faster one measured on onnxruntime's CPU kernels: 8-bit codes at level 0
    are dequantized on the fly (~4x slower than 4-bit), at level 4 they run an int8 kernel."""
    if configured >= 0:
        return configured
    return 4 if storage_bits == 8 else 0


def _write_portable(layer: _Layer, qt: blockwise.BlockQuantized) -> int:
    """One DequantizeLinear (block_size, opset 21) whose output replaces the stored tensor."""
    w = layer.weight
    spec = qt.spec
    base = w.name or "weight"
    wide = spec.bits > 4
    if spec.symmetric:
        codes = blockwise.signed_codes(qt)
        dtype = ir.DataType.INT8 if wide else ir.DataType.INT4
        zp_arr = None
    else:
        codes = qt.codes[:, : qt.cols]
        dtype = ir.DataType.UINT8 if wide else ir.DataType.UINT4
        zp_arr = qt.zero_points
    scales = qt.scales
    as_stored = layer.uses[0].as_stored
    axis = 1
    if not as_stored:  # the stored tensor is [cols, rows]: blocks run along axis 0
        codes, scales, axis = codes.T, scales.T, 0
        zp_arr = zp_arr.T if zp_arr is not None else None
    codes_v = _constant(layer, f"{base}_q{spec.bits}", np.ascontiguousarray(codes), dtype)
    scales_v = _constant(layer, f"{base}_scales", np.ascontiguousarray(scales))
    inputs = [codes_v, scales_v]
    if zp_arr is not None:
        inputs.append(_constant(layer, f"{base}_zero_points", np.ascontiguousarray(zp_arr), dtype))
    dq = ir.node("DequantizeLinear", inputs, {"axis": axis, "block_size": spec.block_size},
                 name="")
    dq.outputs[0].name = w.fresh_name(f"{base}_dequantized")
    dq.outputs[0].dtype = w.dtype
    dq.outputs[0].shape = ir.Shape(w.shape)
    w.insert_nodes([dq])
    w.replace_uses(dq.outputs[0])
    return _nbytes(inputs)


def _say_uncovered(model: ir.Model, result: PassResult) -> None:
    """A headline where most float weight bytes sit in ops blocks do not cover: 4-bit blocks asked
    for a CNN (a ResNet-18 torch export came out 1.04x, with nothing but a table saying why)."""
    weights = WeightIndex.build(model).select(roles=COMPUTE_ROLES)
    total = sum(w.nbytes for w in weights)
    left = [w for w in weights if not COVERED_OPS & set(w.op_types)]
    uncovered = sum(w.nbytes for w in left)
    if total and uncovered >= total / 2:  # say which (a gesture bi-LSTM's were LSTM weights, not Conv)
        ops = sorted({op for w in left for op in w.op_types})
        result.headline(f"{uncovered / total:.0%} of the float weight bytes are in ops 4-bit blocks do "
                        f"not cover (MatMul, Gemm and Gather only; {', '.join(ops)} weights stay float): "
                        "--quantize dynamic or --kmeans 4 compress them")
