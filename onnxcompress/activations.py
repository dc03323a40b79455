"""Run a model on data and stream intermediate tensors out of it, one sample at a time.

Data-aware passes need activation statistics: Wanda-style pruning and sensitivity-weighted
k-means need the energy of each weight's input channels; static quantization needs activation
ranges. All of them go through :func:`iter_intermediates`, which exposes the wanted tensors as
extra graph outputs of a copy of the model and yields them per feed, so memory stays bounded by
one sample's activations however many samples there are.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxcompress import runtime
from onnxcompress.data import Feed
from onnxcompress.errors import RuntimeUnavailableError
from onnxcompress.graph.branches import BranchValue, branch_types, expose_branch_values
from onnxcompress.model import external_base_dir, is_large, shape_only_proto, to_proto
from onnxcompress.weights import Use, Weight

logger = logging.getLogger(__name__)


def expose_outputs(model: ir.Model, names: Iterable[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A proto copy of ``model`` whose graph also outputs the main-graph tensors ``names``.

    Returns the proto and the names actually exposed (those not found in the main graph, or of
    unknown element type, are dropped).
    """
    proto, exposed, _ = expose_with_branches(model, names, branches=False)
    return proto, exposed


def expose_with_branches(model: ir.Model, names: Iterable[str], *,
                         branches: bool) -> tuple[onnx.ModelProto, list[str], list[BranchValue]]:
    """:func:`expose_outputs`, and with ``branches`` the values inside top-level If branches
    given out through the If (``graph.branches``), read per sample by :func:`iter_intermediates`."""
    # External tensors stay references: exposing outputs of a 2 GB model must not read it.
    proto = to_proto(model, inline_external=False)
    try:  # types need no weight data: inferred on a copy without it (an 88 MB ResNet-50's
        # int8 rounding inferred over its weights 5 times, each a few copies of the model)
        inferred = onnx.shape_inference.infer_shapes(shape_only_proto(model), strict_mode=False)
    except Exception:  # shape inference fails on some custom ops; fall back to what we have
        inferred = proto
    types: dict[str, int] = {}
    for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    produced = {o for n in proto.graph.node for o in n.output}
    produced |= {i.name for i in proto.graph.input}
    existing = {o.name for o in proto.graph.output}
    exposed = []
    for name in dict.fromkeys(names):
        if name not in produced or name not in types:
            continue
        exposed.append(name)
        if name not in existing:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
    inside = [n for n in dict.fromkeys(names) if n not in produced] if branches else []
    return proto, exposed, expose_branch_values(proto, inside, branch_types(inferred)) if inside else []


def iter_intermediates(
    model: ir.Model, names: Iterable[str], feeds: Iterable[Feed], *, threads: int | None = None,
    data: str = "the data",
) -> Iterator[dict[str, np.ndarray]]:
    """For each feed, a dict of the requested intermediate tensors (of the main graph, and of the
    branches of its If nodes: the branch each sample takes).

    Raises :class:`RuntimeUnavailableError` when the model cannot run on a feed (``data`` names
    the feeds in the message); callers that only measure degrade on it."""
    proto, exposed, inside = expose_with_branches(model, names, branches=True)
    if not exposed and not inside:
        return
    # a branch value is read where its sample took that branch: the conditions not fed come out too
    inputs = {i.name for i in proto.graph.input}
    given = {o.name for o in proto.graph.output}
    conditions = [c for c in dict.fromkeys(b.condition for b in inside) if c not in inputs]
    proto.graph.output.extend(onnx.helper.make_tensor_value_info(c, onnx.TensorProto.BOOL, None)
                              for c in conditions if c not in given)
    try:
        session = _session(model, proto, threads)
    except Exception as e:  # noqa: BLE001 - branch values are extra: never lose the main graph's
        if not inside:
            raise
        logger.info("Values inside If branches not observed (%s): main-graph values only.",
                    runtime.first_line(e))
        proto, exposed = expose_outputs(model, names)
        inside, conditions = [], []
        if not exposed:
            return
        session = _session(model, proto, threads)
    fetch = [*exposed, *(b.output for b in inside), *conditions]
    for i, feed in enumerate(feeds):
        values = dict(zip(fetch, run(session, fetch, feed, what=f"sample {i} of {data}"), strict=True))
        out = {name: values[name] for name in exposed}
        for b in inside:
            taken = values.get(b.condition, feed.get(b.condition))
            if taken is not None and bool(np.asarray(taken).reshape(-1)[0]) == b.taken:
                out[b.name] = values[b.output]
        yield out


def _session(model: ir.Model, proto: onnx.ModelProto, threads: int | None) -> ort.InferenceSession:
    # A large model's weights are not prepacked: the packed copy of each MatMul weight is made
    # while its float data is held too (a 1 GB stack: +0.26 GB peak), and calibration runs few
    # samples, so packing saves no time worth the memory (issue 18).
    return runtime.create_session(_proto_model(proto, external_base_dir(model)), threads=threads,
                                  optimize=False, prepack=not is_large(model), arena=False)


# Bytes of exposed intermediate tensors one run may hold (the run's statistics collection): a
# run keeps every exposed tensor alive, and a 1024 x 1024 segmenter's activations sum to 3.3 GB
# a sample (batch 22's pgc_nucseg: static int8 peaked at 3.8 GB).
EXPOSED_BUDGET_BYTES = 512 * 2**20


def grouped_by_bytes(model: ir.Model, names: list[str], feed: Feed | None, budget: int) -> list[list[str]]:
    """``names`` (in their order) in consecutive groups of at most ``budget`` estimated bytes for
    one sample (shapes inferred with ``feed``'s input shapes; a tensor of unknown size counts as
    the largest known one): each group a run of its own keeps one sample's exposed tensors
    under the budget."""
    sizes = _estimated_bytes(model, names, feed)
    known = [b for b in sizes.values() if b is not None]
    fallback = max(known) if known else budget // 64
    groups: list[list[str]] = []
    current: list[str] = []
    total = 0
    for name in names:
        size = sizes.get(name) or fallback
        if current and total + size > budget:
            groups.append(current)
            current, total = [], 0
        current.append(name)
        total += size
    if current:
        groups.append(current)
    return groups


def _estimated_bytes(model: ir.Model, names: list[str], feed: Feed | None) -> dict[str, int | None]:
    proto = shape_only_proto(model)
    if feed is not None:
        for value in proto.graph.input:
            if value.name in feed and value.type.HasField("tensor_type"):
                shape = value.type.tensor_type.shape
                shape.ClearField("dim")
                for d in np.shape(feed[value.name]):
                    shape.dim.add().dim_value = int(d)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception:  # noqa: BLE001 - custom ops and the like: sizes stay unknown
        return {}
    wanted = set(names)
    sizes: dict[str, int | None] = {}
    for vi in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input):
        if vi.name not in wanted or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if tt.HasField("shape") and None not in dims and tt.elem_type:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize
            sizes[vi.name] = int(np.prod(dims, dtype=np.int64)) * itemsize
    return sizes


def quiet_run_options() -> ort.RunOptions:
    """Run options that keep onnxruntime from printing a failed run to stderr: the caller turns
    the failure into an error or a note of its own."""
    opts = ort.RunOptions()
    opts.log_severity_level = 4
    return opts


def run(session: ort.InferenceSession, outputs: list[str] | None, feed: Feed, *,
        what: str = "the data", run_options: ort.RunOptions | None = None) -> list:
    """``session.run`` whose failure (a model that cannot run on this input: a reflect Pad
    longer than a guessed axis, widths a Concat must match...) raises
    :class:`RuntimeUnavailableError` naming the failing node, so every step that only measures
    can degrade instead of failing the compression."""
    try:
        return session.run(outputs, feed, run_options or quiet_run_options())
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for every failure
        raise RuntimeUnavailableError(
            f"onnxruntime cannot run the model on {what}: {run_failure(e)}",
            hint="pass data the model runs on (--calibration FILE.npz).",
        ) from e


_NODE_FAILURE = re.compile(
    r"Non-zero status code returned while running (\S+) node\. Name:'([^']*)' Status Message: (.*)")


def run_failure(error: BaseException) -> str:
    """onnxruntime's run error in one short line: "Pad node 'name': what went wrong"."""
    line = runtime.first_line(error)
    m = _NODE_FAILURE.search(line)
    if m is None:
        return line
    op, name, message = m.groups()
    return f"{op} node{f' {name!r}' if name else ''}: {message.strip()}"


def _proto_model(proto: onnx.ModelProto, base_dir: str | None = None) -> ir.Model:
    model = ir.serde.deserialize_model(proto)
    if base_dir is not None:
        ir.external_data.set_base_dir(model.graph, base_dir)
    return model


def activation_input(weight: Weight) -> tuple[ir.Value, int] | None:
    """The activation a compute weight is multiplied with, and that activation's channel axis.

    Conv: X, axis 1. Gemm: A (axis 1, or 0 with transA). MatMul: the other operand, its last axis
    (or second to last when the weight is the left operand). None for anything else. The first
    reader's (:func:`reader_activation` reads each).
    """
    return next((found for use in weight.uses if (found := reader_activation(use)) is not None), None)


def reader_activation(use: Use) -> tuple[ir.Value, int] | None:
    """:func:`activation_input` of one reader (a ``weights.Use``)."""
    node = use.node
    if node.op_type in ("Conv", "ConvTranspose") and use.index == 1:
        return node.inputs[0], 1
    if node.op_type == "Gemm" and use.index == 1:
        trans_a = node.attributes.get("transA")
        return node.inputs[0], 0 if trans_a is not None and trans_a.value else 1
    if node.op_type == "MatMul" and len(node.inputs) == 2:
        other = node.inputs[1 - use.index]
        return other, -1 if use.index == 1 else -2
    return None


def input_channel_moments(
    model: ir.Model, weights: Iterable[Weight], feeds: Iterable[Feed]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(mean, mean square) per input channel of each weight's activation, by ``weight.label``.

    One pass over ``feeds`` serves every weight; weights reading the same activation share its
    statistics. A grouped Conv's result has C entries while its weight holds C/groups
    in-channels. Weights inside subgraphs, or whose activation cannot be exposed, are absent.
    """
    wanted: dict[str, tuple[str, int]] = {}
    for w in weights:
        found = activation_input(w)  # a weight inside an If branch: observed through the If
        if found is not None and found[0] is not None and found[0].name:
            wanted[w.label] = (found[0].name, found[1])
    sums: dict[tuple[str, int], list] = {}
    for outputs in iter_intermediates(model, {name for name, _ in wanted.values()}, feeds):
        for key in set(wanted.values()):
            if key[0] not in outputs:
                continue
            x = np.asarray(outputs[key[0]], dtype=np.float64)
            axis = key[1] % x.ndim
            moved = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
            acc = sums.setdefault(key, [0.0, 0.0, 0])
            acc[0] = acc[0] + moved.sum(axis=0)
            acc[1] = acc[1] + np.einsum("ij,ij->j", moved, moved)  # einsum: no BLAS threads
            acc[2] += moved.shape[0]
    return {
        label: (sums[key][0] / sums[key][2], sums[key][1] / sums[key][2])
        for label, key in wanted.items()
        if key in sums and sums[key][2]
    }


def input_channel_energy(
    model: ir.Model, weights: Iterable[Weight], feeds: Iterable[Feed]
) -> dict[str, np.ndarray]:
    """Mean squared activation per input channel for each weight (keyed by ``weight.label``)."""
    moments = input_channel_moments(model, weights, feeds)
    return {label: sq.astype(np.float32) for label, (_, sq) in moments.items()}
