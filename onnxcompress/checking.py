"""Is a model valid? One answer for the input (refused up front) and for every pass's output.

:func:`model_problem` says why a model is not valid ONNX, naming the node or value where it can:
first our own structural checks (a node reading a value nothing provides, a missing opset, a graph
input or output without a shape), which name what is wrong better than ``onnx.checker`` does, then
``onnx.checker``, then (when asked) an onnxruntime load.

:func:`complete_io_shapes` repairs the one defect exporters commonly write and onnxruntime
accepts: graph inputs/outputs declared with an element type but no shape, which onnx.checker
refuses ("Field 'shape' of 'type' is required but missing"). Their shapes are inferred.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import onnx
import onnx_ir as ir

from onnxcompress import runtime
from onnxcompress.model import external_base_dir, iter_tensor_protos, shape_only_proto, tensor_bytes, to_proto
from onnxcompress.weights import all_graphs

logger = logging.getLogger(__name__)

# Models with more tensor bytes than this are checked with their weights stubbed out (the
# proto would be a copy of the model, and its onnxruntime load check is deferred anyway).
CHECKER_INLINE_MAX_BYTES = 256 * 1024 * 1024
# onnx's shape inference names the dims it cannot know "unk__N"; they are unknown, not symbols.
_INFERRED_UNKNOWN = "unk__"


def one_line(text: str, limit: int = 300) -> str:
    """A checker or onnxruntime message on one line (they span several, naming the node on the
    second), without onnxruntime's "[ONNXRuntimeError] : 1 : FAIL :" prefix."""
    flat = " ".join(str(text).split())
    if "] :" in flat:
        flat = flat.rsplit(" : ", 1)[-1]
    return flat[:limit]


def _shapeless(value: ir.Value) -> bool:
    return isinstance(value.type, ir.TensorType) and value.shape is None


def complete_io_shapes(model: ir.Model) -> list[str]:
    """Give main-graph inputs/outputs that declare a tensor type without a shape their inferred
    shape; returns the names completed. Inputs cannot be inferred (and are left as they are)."""
    missing = [v for v in (*model.graph.inputs, *model.graph.outputs) if _shapeless(v)]
    if not missing:
        return []
    try:
        inferred = onnx.shape_inference.infer_shapes(shape_only_proto(model))
    except Exception as e:  # noqa: BLE001 - inference is best effort; the check reports what stays
        logger.info("shape inference failed: %s", one_line(str(e)))
        return []
    found = {vi.name: vi for vi in (*inferred.graph.output, *inferred.graph.value_info)}
    completed = []
    for value in missing:
        vi = found.get(value.name)
        if vi is None or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = []
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                dims.append(d.dim_value)
            elif d.HasField("dim_param") and not d.dim_param.startswith(_INFERRED_UNKNOWN):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        value.shape = ir.Shape(dims)
        completed.append(value.name)
    if completed:
        logger.info("Declared the inferred shape of graph input/output(s) %s.", ", ".join(completed))
    return completed


def structural_problem(model: ir.Model) -> str | None:
    """What onnx.checker would refuse, said with the node or value it concerns; None if nothing."""
    if "" not in model.opset_imports and "ai.onnx" not in model.opset_imports:
        return "the model declares no opset for the default ONNX domain (opset_import)"
    for value in (*model.graph.inputs, *model.graph.outputs):
        if _shapeless(value):
            kind = "input" if value.is_graph_input() else "output"
            return (f"graph {kind} '{value.name}' declares a type but no shape, and its shape "
                    "cannot be inferred")
    for scope, graph in all_graphs(model):
        where = f" in '{scope.rstrip('/')}'" if scope else ""
        for node in graph:
            for value in node.inputs:
                if value is None:
                    continue
                producer = value.producer()
                if producer is None and value.graph is None:
                    return (f"node '{node.name or node.op_type}' ({node.op_type}){where} reads "
                            f"'{value.name}', which no node, graph input or initializer provides")
                if producer is not None and producer.graph is None:
                    return (f"node '{node.name or node.op_type}' ({node.op_type}){where} reads "
                            f"'{value.name}', whose producing node was removed from the graph")
        for value in graph.outputs:
            producer = value.producer()
            orphan = producer.graph is None if producer is not None else value.graph is None
            if orphan:
                return f"graph output '{value.name}'{where} is produced by no node"
    return None


def model_problem(model: ir.Model, *, need_ort: bool | Callable[[], bool],
                  proto: onnx.ModelProto | None = None, stub: bool = False,
                  probe: Callable[[Any], str | None] | None = None) -> str | None:
    """None if the model is valid ONNX (and loads in onnxruntime when ``need_ort``), else why,
    on one line. ``need_ort`` may be a callable, asked only when the model does not load (e.g.
    "does the input load?": a failure is the model's only if it does). ``proto``:
    ``to_proto(model)`` when the caller has it (models under 2 GB). ``stub``: onnx.checker sees
    the weights as stubs even when they would fit inline (a large model's output whose
    onnxruntime check is deferred to its file: the inline proto and the checker's own
    serialization of it were two copies of the output, 1.9x a 0.3 GB input in float16).
    ``probe``: asked with the onnxruntime session once the model loads (not for a large model,
    whose load check is lean): a problem it finds running the model, or None."""
    problem = structural_problem(model)
    if problem is not None:
        return problem
    complete = proto is not None
    if proto is None:
        proto, complete = checker_proto(model, stub=stub)
    if proto is not None:
        try:
            onnx.checker.check_model(proto)
        except Exception as e:  # ValidationError and friends
            return f"onnx.checker: {one_line(str(e))}"
    if need_ort:
        # One proto serves onnx.checker and the onnxruntime load when it holds every tensor.
        source = proto if complete and proto is not None else model
        found: list[str | None] = []
        ok, why = runtime.loadable(source, then=None if probe is None
                                   else lambda session: found.append(probe(session)))
        if found:
            return found[0]
        if not ok and (not callable(need_ort) or need_ort()):
            return why
    return None


def checker_proto(model: ir.Model, *, stub: bool = False) -> tuple[onnx.ModelProto, bool]:
    """The proto onnx.checker sees, and whether it is the whole model (then it also serves the
    onnxruntime load). Above :data:`CHECKER_INLINE_MAX_BYTES` of tensors, or with external data,
    weights become empty stubs: load_model checked external files (sizes, locations),
    onnx.checker cannot resolve their paths from an in-memory proto, and serializing the data
    would copy the model (a 0.3 GB external-data model peaked at 3x its size in this check)."""
    if not stub and external_base_dir(model) is None and tensor_bytes(model) <= CHECKER_INLINE_MAX_BYTES:
        return to_proto(model), True
    return stub_external(shape_only_proto(model)), False


def stub_external(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` (changed in place) with every external tensor an empty stub, for onnx.checker:
    it resolves external paths against the working directory, not the model's folder."""
    for _, t in iter_tensor_protos(proto.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
            del t.dims[:]
            t.dims.append(0)
    return proto


class FiniteOutputs:
    """A probe for ``model_problem``: a compressed model must not output NaN or inf where the
    original model does not. Runs one sample (``sample()``: calibration data's first, else a
    synthetic one; None when there is none) on the checked session; only when an output is not
    finite is the original model (``original()``) run on the same sample to compare. Best
    effort: a model that cannot run on the sample is not a problem here (ppocr_rec's int8 files
    were all NaN, through exit 0, from a channel of 3e-39 weights)."""

    def __init__(self, sample: Callable[[], dict[str, Any] | None], original: Callable[[], Any]) -> None:
        self._sample = sample
        self._original = original

    @functools.cached_property
    def _feed(self) -> dict[str, Any] | None:
        try:
            return self._sample()
        except Exception as e:  # no sample can be made: nothing to run
            logger.debug("finite-output check without a sample: %s", e)
            return None

    @functools.cached_property
    def _reference(self) -> list[str] | None:
        """The original's non-finite outputs on the sample; None when it cannot run on it."""
        try:
            return nonfinite_outputs(runtime.create_session(self._original(), prepack=False, arena=False),
                                     self._feed, strict=True)
        except Exception as e:  # the original cannot run on it: no judgement
            logger.debug("finite-output check: the original model did not run: %s", e)
            return None

    def __call__(self, session: Any) -> str | None:
        if self._feed is None:
            return None
        bad = nonfinite_outputs(session, self._feed)
        if not bad or self._reference is None:  # the original runs only when an output is bad
            return None
        new = [name for name in bad if name not in self._reference]
        if not new:
            return None
        return (f"output '{new[0]}' is NaN or infinite on a sample where the original model's is "
                "finite")


def nonfinite_outputs(session: Any, feed: dict[str, Any], *, strict: bool = False) -> list[str]:
    """Float outputs of ``session`` that hold NaN or inf on ``feed`` (float inputs cast to the
    session's float type); [] when it cannot run (``strict``: raise instead)."""
    import numpy as np

    try:
        run_feed = {}
        for arg in session.get_inputs():
            value = np.asarray(feed[arg.name])
            if value.dtype.kind == "f" and arg.type == "tensor(float16)":
                value = value.astype(np.float16)
            run_feed[arg.name] = value
        from onnxcompress.activations import quiet_run_options

        outputs = session.run(None, run_feed, quiet_run_options())  # a failed run is not printed
    except Exception:
        if strict:
            raise
        return []
    names = [o.name for o in session.get_outputs()]
    return [n for n, o in zip(names, outputs, strict=True)
            if isinstance(o, np.ndarray) and o.dtype.kind == "f" and not np.isfinite(o).all()]
