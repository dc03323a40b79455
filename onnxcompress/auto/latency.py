"""Latency per op type and shape, measured once on this machine: auto mode's latency prices.

A layer's price under an option is the time onnxruntime takes to run the layer's consumer op
(Conv, MatMul, Gemm, ...) on its real input shape, together with the nodes that decode its
weight in that option's model (k-means Gather, DequantizeLinear, MatMulNBits, Cast...): a
micro model cut from the compressed model around that one node. What onnxruntime folds at load
(a constant decode subgraph) costs nothing, what it runs every time (a DequantizeLinear it keeps
for fusion, a 4-bit kernel) is counted, measured rather than assumed.

The timing depends on the micro model's structure (ops, attributes, shapes and dtypes; not
weight values), the CPU and the onnxruntime version, so it is cached under that key
(:mod:`onnxcompress.cache`): layers of the same op type and shape, every later search on any
model, and a rerun reuse it, and the same plan comes out of a rerun.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from onnxcompress.cache import decision_key, get_decision, machine_id, put_decision

logger = logging.getLogger(__name__)

MIN_RUNS = 15
MIN_SECONDS = 0.05
WARMUP = 3


def consumer(proto: onnx.ModelProto, node_name: str) -> onnx.NodeProto | None:
    """The main-graph node named ``node_name`` (passes keep the names of the nodes they feed)."""
    return next((n for n in proto.graph.node if node_name and n.name == node_name), None)


def activation_inputs(proto: onnx.ModelProto, node: onnx.NodeProto) -> list[str]:
    """The inputs of ``node`` that are not computed from constants alone (its activations)."""
    constant = {i.name for i in proto.graph.initializer}
    for n in proto.graph.node:  # topological order: a node of constants makes constants
        if all(not i or i in constant for i in n.input):
            constant.update(o for o in n.output if o)
    return [i for i in node.input if i and i not in constant]


def micro_model(proto: onnx.ModelProto, node: onnx.NodeProto,
                activations: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """``node`` with the nodes that compute its constant inputs, its activations as graph inputs
    (shapes of ``activations``), its outputs as graph outputs."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    inits = {i.name: i for i in proto.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    used: dict[str, onnx.TensorProto] = {}
    seen: set[int] = set()

    def visit(name: str) -> None:
        if not name or name in activations:
            return
        if name in inits:
            used[name] = inits[name]
            return
        n = producer.get(name)
        if n is None or id(n) in seen:
            return
        seen.add(id(n))
        for i in n.input:
            visit(i)
        nodes.append(n)

    for i in node.input:
        visit(i)
    nodes.append(node)
    inputs = [onnx.helper.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in activations.items()]
    # The compute ops auto mode prices output float32 of their activation's rank (Gather: the
    # indices' rank + 1), dims left unnamed: a declaration the checker accepts, not a guess.
    first = next(iter(activations.values()))
    rank = first.ndim + (1 if node.op_type == "Gather" else 0)
    outputs = [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, [None] * rank)
               for o in node.output if o][:1]
    graph = onnx.helper.make_graph(nodes, "layer", inputs, outputs, initializer=list(used.values()))
    micro = onnx.helper.make_model(graph, opset_imports=list(proto.opset_import))
    micro.ir_version = proto.ir_version
    return micro


def structure_key(micro: onnx.ModelProto) -> str:
    """The cache key of a (micro) model: what its speed depends on, not its weight values."""
    import onnxruntime as ort

    nodes = [(n.op_type, n.domain, [(a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute
                                    if a.type != onnx.AttributeProto.TENSOR]) for n in micro.graph.node]
    inits = sorted((tuple(t.dims), t.data_type) for t in micro.graph.initializer)
    inputs = [(i.type.tensor_type.elem_type, [d.dim_value for d in i.type.tensor_type.shape.dim])
              for i in micro.graph.input]
    return decision_key("auto-op-latency", nodes, inits, inputs, ort.__version__, machine_id())


def op_latency(micro: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> float | None:
    """Median seconds per run of ``micro`` on one thread, or None if onnxruntime cannot run it
    (then the layer keeps no latency price and stays float under this objective).

    Cached under the structure of the graph onnxruntime actually runs (its optimized model): a
    decode subgraph it folds at load leaves the same graph as the float layer, so such options
    tie with float exactly instead of by the luck of two noisy timings."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    feed = dict(feed)
    try:
        with tempfile.TemporaryDirectory(prefix="onnxcompress-op-") as tmp:
            opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            session = ort.InferenceSession(micro.SerializeToString(), opts,
                                           providers=["CPUExecutionProvider"])
            key = structure_key(onnx.load(opts.optimized_model_filepath))
        cached = get_decision(key)
        if isinstance(cached, (int, float)):
            return float(cached)
        for _ in range(WARMUP):
            session.run(None, feed)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < MIN_RUNS or time.perf_counter() - start < MIN_SECONDS:
            t0 = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - t0)
    except Exception as e:  # onnxruntime's own exception types: the price is unknown, not fatal
        logger.debug("auto: no latency for %s: %s", [n.op_type for n in micro.graph.node], e)
        return None
    value = float(np.median(times))
    put_decision(key, value)
    return value


def layer_latencies(proto: onnx.ModelProto, uses: Mapping[str, str],
                    activations: Mapping[str, np.ndarray]) -> dict[str, float]:
    """label -> seconds of its consumer (``uses``: label -> consumer node name) with its decode
    nodes in ``proto``; ``activations``: tensor name -> a real value (from the float model)."""
    out: dict[str, float] = {}
    for label, node_name in uses.items():
        node = consumer(proto, node_name)
        if node is None:
            continue
        names = activation_inputs(proto, node)
        if not names or any(n not in activations for n in names):
            continue
        seconds = op_latency(micro_model(proto, node, {n: activations[n] for n in names}),
                             {n: activations[n] for n in names})
        if seconds is not None:
            out[label] = seconds
    return out
