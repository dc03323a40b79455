"""Loading and saving models: the protobuf edge of onnxcompress.

Models are held in memory as ``onnx_ir.Model``: external data stays memory-mapped until a pass
reads it, subgraphs are first-class, and values know their consumers. Protobuf appears only here
(reading, writing) and where onnx's checker, version converter or onnxruntime need it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from onnxcompress.errors import ModelLoadError, SaveError, UnsafeExternalDataError
from onnxcompress.graph.constants import needs_normalizing, normalize_constants
from onnxcompress.graph.fold import fold_constant_quantize, fold_constant_shapes, fold_shape_only_weights
from onnxcompress.graph.functions import inline_weight_functions
from onnxcompress.graph.maps import DETACHED_MAPS, DetachedMap, detach_maps, reattach_maps
from onnxcompress.weights import all_graphs, iter_constant_tensors, unique_name

logger = logging.getLogger(__name__)

ModelLike = str | os.PathLike | onnx.ModelProto | ir.Model

# Protobuf refuses messages over 2 GiB; stay clear of it with room for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# Tensors smaller than this stay inline when a model is saved with external data.
EXTERNAL_TENSOR_MIN_BYTES = 1024


def load_model(model: ModelLike) -> ir.Model:
    """Load ``model`` (a path, a ModelProto or an ir.Model) into an ``ir.Model``.

    Paths are validated before anything is decoded: the file must exist and be a non-empty ONNX
    protobuf; every external-data location must stay inside the model's folder; every tensor's
    data must match its declared shape. An ``ir.Model`` is returned as is (not copied).
    """
    if isinstance(model, ir.Model):
        return model
    if isinstance(model, onnx.ModelProto):
        _check_tensor_sizes(model, base_dir=None, model_name="<in-memory model>")
        maps: tuple[DetachedMap, ...] = ()
        if any(n.op_type == "ZipMap" for n in model.graph.node) or needs_normalizing(model):
            model = onnx.ModelProto.FromString(model.SerializeToString())  # the caller's stays whole
            maps = detach_maps(model)
            normalize_constants(model)
        ir_model = ir.serde.deserialize_model(model)
        ir_model.meta[DETACHED_MAPS] = maps
        return _normalize(ir_model)
    path = Path(model)
    proto = _read_proto(path)
    base_dir = path.resolve().parent
    _check_tensor_sizes(proto, base_dir=base_dir, model_name=str(path))
    files = model_files(path, proto)
    maps = detach_maps(proto)  # skl2onnx's ZipMap: onnx_ir reads no map type
    normalize_constants(proto)
    try:
        ir_model = ir.serde.deserialize_model(proto)
    except Exception as e:  # onnx_ir raises many types on malformed graphs
        raise ModelLoadError(f"{path}: cannot read the graph: {_unreadable(proto, e)}") from e
    ir.external_data.set_base_dir(ir_model.graph, str(base_dir))
    ir_model.meta[MODEL_FILES] = (str(path), files)
    ir_model.meta[DETACHED_MAPS] = maps
    return _normalize(ir_model)


def _unreadable(proto: onnx.ModelProto, error: BaseException) -> str:
    """Why onnx_ir could not read ``proto``: the innermost error (onnx_ir's own wrapper says only
    "Error calling _deserialize_graph with: <hash>"), and for a map-typed value (skl2onnx's
    ZipMap output of a classifier's probabilities) which value and how to convert without it."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = f"{type(error).__name__}: {error}"
    g = proto.graph

    def has_map(t: onnx.TypeProto) -> bool:
        if t.HasField("map_type"):
            return True
        return t.HasField("sequence_type") and has_map(t.sequence_type.elem_type)

    maps = [v.name for v in (*g.input, *g.output, *g.value_info) if has_map(v.type)]
    if maps:
        zipmap = any(n.op_type == "ZipMap" for n in g.node)
        text += (f" ({', '.join(maps)}: a map-typed value{', made by ZipMap' if zipmap else ''}). Hint: "
                 "convert the classifier without ZipMap (skl2onnx: options={id(model): {'zipmap': "
                 "False}}, a probability tensor instead of a list of maps), or cut the graph before it.")
    return text


def _read_proto(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file.")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, not an ONNX file.")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: the file is empty.")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as e:
        raise ModelLoadError(
            f"{path}: not a valid ONNX model ({type(e).__name__}: {e}).",
            hint="the file may be truncated or not an ONNX protobuf.",
        ) from e
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        raise ModelLoadError(
            f"{path}: not a valid ONNX model (no graph).",
            hint="the file may be truncated or not an ONNX protobuf.",
        )
    return proto


def iter_tensor_protos(graph: onnx.GraphProto, scope: str = "") -> Iterator[tuple[str, onnx.TensorProto]]:
    """Yield (scope, tensor) for every initializer and Constant tensor, recursing into subgraphs."""
    for t in graph.initializer:
        yield scope, t
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield scope, attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                for t in attr.tensors:
                    yield scope, t
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_tensor_protos(attr.g, f"{scope}{node.name or node.op_type}/{attr.name}/")
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for i, g in enumerate(attr.graphs):
                    yield from iter_tensor_protos(g, f"{scope}{node.name or node.op_type}/{attr.name}[{i}]/")


def _external_info(t: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def _check_tensor_sizes(proto: onnx.ModelProto, base_dir: Path | None, model_name: str) -> None:
    """Refuse tensors whose data cannot match their shape, and unsafe external locations."""
    for scope, t in iter_tensor_protos(proto.graph):
        label = f"tensor '{scope}{t.name}'" if t.name else f"an unnamed tensor in '{scope or 'main graph'}'"
        numel = int(np.prod(t.dims, dtype=np.int64)) if len(t.dims) else 1
        if any(d < 0 for d in t.dims):
            raise ModelLoadError(f"{model_name}: {label} has a negative dimension {list(t.dims)}.")
        if t.data_type == onnx.TensorProto.STRING or t.data_type == onnx.TensorProto.UNDEFINED:
            continue
        try:
            bits = _bits_per_element(t.data_type)
        except ValueError:
            continue
        expected = (numel * bits + 7) // 8
        if t.data_location == onnx.TensorProto.EXTERNAL:
            _check_external(t, label, expected, base_dir, model_name)
            continue
        if t.HasField("raw_data"):
            actual = len(t.raw_data)
            if actual != expected:
                raise ModelLoadError(
                    f"{model_name}: {label} declares shape {list(t.dims)} "
                    f"({expected} bytes) but holds {actual} bytes of data.",
                    hint="the file is corrupt or was written by a broken exporter.",
                )
            continue
        field = onnx.helper.tensor_dtype_to_field(t.data_type)
        count = len(getattr(t, field))
        if t.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
            count //= 2
        if count and count != _stored_elements(t.data_type, numel):
            raise ModelLoadError(
                f"{model_name}: {label} declares shape {list(t.dims)} ({numel} elements) "
                f"but holds {count} values.",
                hint="the file is corrupt or was written by a broken exporter.",
            )
        if count == 0 and numel > 0:
            raise ModelLoadError(
                f"{model_name}: {label} declares shape {list(t.dims)} but holds no data.",
                hint="the file is corrupt or was written by a broken exporter.",
            )


def _stored_elements(data_type: int, numel: int) -> int:
    # Sub-byte types are packed two per int32 entry in the typed field.
    if _bits_per_element(data_type) == 4:
        return (numel + 1) // 2
    return numel


def _bits_per_element(data_type: int) -> int:
    ir_type = ir.DataType(data_type)
    return ir_type.bitwidth


def _check_external(
    t: onnx.TensorProto, label: str, expected: int, base_dir: Path | None, model_name: str
) -> None:
    info = _external_info(t)
    location = info.get("location", "")
    if base_dir is None:
        raise ModelLoadError(
            f"{model_name}: {label} stores its data in external file '{location}', "
            "but an in-memory model has no folder to find it in.",
            hint="pass the model's path instead of a ModelProto.",
        )
    if not location:
        raise ModelLoadError(f"{model_name}: {label} is external but names no location.")
    if os.path.isabs(location) or location.startswith(("/", "\\")):
        raise UnsafeExternalDataError(
            f"{model_name}: {label} points to absolute external-data path '{location}'.",
            hint="external data must sit in the model's folder, named by a relative path.",
        )
    target = (base_dir / location).resolve()
    if not target.is_relative_to(base_dir):
        raise UnsafeExternalDataError(
            f"{model_name}: external-data location '{location}' of {label} resolves outside "
            f"the model's folder ({target}).",
            hint="external data must sit in the model's folder.",
        )
    if not target.is_file():
        raise ModelLoadError(
            f"{model_name}: external-data file '{location}' of {label} is missing.",
            hint="copy the model together with its data file(s).",
        )
    offset = int(info.get("offset", 0) or 0)
    length = int(info["length"]) if info.get("length") else None
    if length is not None and length != expected:
        raise ModelLoadError(
            f"{model_name}: {label} declares shape {list(t.dims)} ({expected} bytes) but its "
            f"external data has length {length}."
        )
    if offset + expected > target.stat().st_size:
        raise ModelLoadError(
            f"{model_name}: external-data file '{location}' is too short for {label} "
            f"(needs {offset + expected} bytes, has {target.stat().st_size}).",
            hint="the data file may be truncated.",
        )


#: ``ir.Model.meta`` key: (path, ``model_files(path)``) of the file ``load_model`` read, listed from
#: the proto it parsed: ``compress_file``'s size report parsed the input a second time for them.
MODEL_FILES = "onnxcompress.model_files"
#: ``ir.Model.meta`` key: how many initializers ``_normalize`` took off the graph inputs.
INITIALIZER_INPUTS = "onnxcompress.initializer_inputs"
QUANTIZE_FOLDED = "onnxcompress.quantize_folded"


def _normalize(model: ir.Model) -> ir.Model:
    """Bring old-IR models to the form the passes expect.

    IR < 4 lists every initializer as a graph input; such "inputs" are weights nobody feeds. We
    drop them from the inputs (and raise the IR version to 4, which allows that) so that the weight
    index sees them as constants, as onnxruntime's quantizer does.
    """
    initializer_inputs = [v for v in model.graph.inputs if v.name in model.graph.initializers]
    if initializer_inputs:
        keep = [v for v in model.graph.inputs if v.name not in model.graph.initializers]
        model.graph.inputs.clear()
        model.graph.inputs.extend(keep)
        logger.info("Removed %d initializers from the graph inputs.", len(initializer_inputs))
        model.meta[INITIALIZER_INPUTS] = len(initializer_inputs)  # said in the run's notes
    if model.ir_version < 4:
        model.ir_version = 4
    if inlined := inline_weight_functions(model):
        logger.info("Inlined %d call(s) of model-local functions that carry weights.", inlined)
    bypassed = _bypass_constant_identities(model)
    if bypassed:
        logger.info("Removed %d Identity node(s) that only renamed a constant.", bypassed)
    shapes = fold_constant_shapes(model)
    if shapes:
        logger.info("Folded %d Shape/Size node(s) that read a constant's shape.", shapes)
    if quantized := fold_constant_quantize(model):
        logger.info("Folded %d QuantizeLinear node(s) of float weights into their int8 results.", quantized)
        model.meta[QUANTIZE_FOLDED] = quantized  # said in the run's notes
    folded = fold_shape_only_weights(model)
    if folded:
        logger.info("Folded %d shape-only node(s) over constant weights (Slice/Split/Reshape...), "
                    "so the passes can compress those weights.", folded)
    from onnxcompress.data import free_dynamic_dims  # input dims written as -1 / 0: dynamic

    free_dynamic_dims(model)
    return model


def _bypass_constant_identities(model: ir.Model) -> int:
    """Let readers of ``Identity(constant)`` read the constant itself.

    The TorchScript exporter deduplicates equal initializers this way (deep-copied layers before
    training, tied weights): the second layer's MatMul reads ``Identity(first layer's weight)``.
    To the passes that looks like a weight also read as a plain tensor, so nothing touched it.
    onnxruntime drops these nodes anyway; graph outputs keep theirs (the name is the interface).
    """
    count = 0
    for _, graph in all_graphs(model):
        for node in list(graph):
            if node.op_type != "Identity" or node.domain not in ("", "ai.onnx"):
                continue
            if len(node.inputs) != 1 or node.inputs[0] is None or len(node.outputs) != 1:
                continue
            source, out = node.inputs[0], node.outputs[0]
            producer = source.producer()
            constant = source.const_value is not None or (
                producer is not None and producer.op_type == "Constant" and producer.domain in ("", "ai.onnx")
            )
            if not constant or source.is_graph_input() or out.is_graph_output():
                continue
            out.replace_all_uses_with(source)
            graph.remove(node, safe=True)
            count += 1
    return count


def name_unnamed_nodes(model: ir.Model) -> int:
    """Give every unnamed main-graph node a unique name (``<op_type>_<position>``); returns how
    many. Exporters usually name nodes and the passes keep the name of the node a weight feeds,
    which is how auto mode finds a layer's consumer again in a compressed model; hand-built and
    some converted graphs leave names empty, and then no consumer could be found."""
    taken = {n.name for n in model.graph if n.name}
    count = 0
    for i, node in enumerate(model.graph):
        if not node.name:
            node.name = unique_name(taken, f"{node.op_type}_{i}")
            count += 1
    return count


def strip_debug_info(model: ir.Model) -> int:
    """Drop what exporters write for debugging only: per-node and per-value ``metadata_props``
    and ``doc_string`` (torch's exporter stores each node's module path, FX node and stack,
    ~1 KB a node: 8% of a small CNN's file, more than int8 leaves of its weights). The model's
    own metadata (class names, provenance) and every name stay. Returns the bytes removed."""
    removed = 0
    for _, graph in all_graphs(model):
        for node in graph:
            removed += _clear_debug(node)
            for value in node.outputs:
                removed += _clear_debug(value)
        for value in (*graph.inputs, *graph.initializers.values()):
            removed += _clear_debug(value)
    return removed


def _clear_debug(item: ir.Node | ir.Value) -> int:
    removed = sum(len(k) + len(v) for k, v in item.metadata_props.items())
    item.metadata_props.clear()
    if item.doc_string:
        removed += len(item.doc_string)
        item.doc_string = None
    return removed


def to_proto(model: ir.Model, *, inline_external: bool = True) -> onnx.ModelProto:
    """Serialize to a ModelProto.

    With ``inline_external`` (the default) tensors still in external files are read into the
    proto, so it stands on its own (use for models under 2 GB). Without it they stay references
    relative to the model's folder, which is cheap but only valid next to the original files.
    """
    proto = ir.serde.serialize_model(model)
    _drop_initializer_value_info(proto.graph)
    base_dir = external_base_dir(model)
    if inline_external and base_dir is not None:
        for _, t in iter_tensor_protos(proto.graph):
            if t.data_location == onnx.TensorProto.EXTERNAL:
                onnx.external_data_helper.load_external_data_for_tensor(t, base_dir)
                t.data_location = onnx.TensorProto.DEFAULT
                del t.external_data[:]
    return proto


def shape_only_proto(model: ir.Model) -> onnx.ModelProto:
    """A proto with every tensor's type and shape but no weight data: tensors above
    :data:`EXTERNAL_TENSOR_MIN_BYTES` become references to a file that does not exist. For
    shape inference and onnx.checker's structural checks, which never read weights: serializing
    them would copy the model (pruning 0.3 GB peaked at 5x its size in a MACs count)."""
    swapped: list[tuple[ir.Value, ir.TensorProtocol]] = []
    try:
        for _, graph in all_graphs(model):
            for value in graph.initializers.values():
                t = value.const_value
                if t is None or t.nbytes <= EXTERNAL_TENSOR_MIN_BYTES:
                    continue
                swapped.append((value, t))
                value.const_value = ir.ExternalTensor(
                    _NO_DATA, offset=0, length=t.nbytes, dtype=t.dtype, shape=t.shape,
                    name=t.name or value.name, base_dir="")
        proto = ir.serde.serialize_model(model)
    finally:
        for value, t in swapped:
            value.const_value = t
    _drop_initializer_value_info(proto.graph)
    return proto


_NO_DATA = "onnxcompress-no-data"


def proto_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph in it (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from proto_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from proto_graphs(g)


def _drop_initializer_value_info(root: onnx.GraphProto) -> None:
    """Remove value_info entries that repeat an initializer's type and shape (onnx_ir writes one
    per initializer; they are redundant and cost ~30 bytes each, visible in small models)."""
    for graph in proto_graphs(root):
        names = {t.name for t in graph.initializer}
        if names and any(vi.name in names for vi in graph.value_info):
            keep = [vi for vi in graph.value_info if vi.name not in names]
            del graph.value_info[:]
            graph.value_info.extend(keep)


def copy_model(model: ir.Model) -> ir.Model:
    """An independent copy through protobuf; external tensors stay references (cheap for 2 GB)."""
    copy = ir.serde.deserialize_model(to_proto(model, inline_external=False))
    base_dir = external_base_dir(model)
    if base_dir is not None:
        ir.external_data.set_base_dir(copy.graph, base_dir)
    return copy


def external_base_dir(model: ir.Model) -> str | None:
    """The folder external tensors are read from, if any tensor is external."""
    for _, graph in all_graphs(model):
        for value in graph.initializers.values():
            if isinstance(value.const_value, ir.ExternalTensor):
                return value.const_value.base_dir
    return None


# The one limit of the checks that hold a model whole in onnxruntime, often several copies at once
# (the int8 fidelity guard: float and int8 weights; the float16 check: three; k-means' opset
# upgrade check and file-size measurement: two). Larger models are compressed one weight at a time
# with those checks off (issue 18). External data alone does not make a model large: PyTorch's
# dynamo exporter writes it whatever the size (batch 5: a 6.7 MB transformer went unchecked).
WHOLE_CHECK_MAX_BYTES = 256 << 20


def fits_whole_checks(model: ir.Model) -> bool:
    """Whether the checks that hold ``model`` whole in memory may run: at most
    :data:`WHOLE_CHECK_MAX_BYTES` of tensors, external or not."""
    return tensor_bytes(model) <= WHOLE_CHECK_MAX_BYTES


def whole_check_limit_mb() -> int:
    """The limit in MB, for the notes that say a check was off."""
    return WHOLE_CHECK_MAX_BYTES >> 20


def is_large(model: ir.Model) -> bool:
    """External data, or tensors past the size that is saved with external data: a model that
    must not be serialized inline or copied whole."""
    return tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD or external_base_dir(model) is not None


def release_external(tensor: object) -> None:
    """Unmap an external tensor's data once read: its memory map keeps the pages it touched
    resident (and the array cached) until released; a later read maps it again (issue 18)."""
    if isinstance(tensor, ir.ExternalTensor):
        with contextlib.suppress(BufferError):  # a view is still referenced: the GC unmaps it
            tensor.release()


def tensor_bytes(model: ir.Model) -> int:
    """Bytes of every constant tensor in the model, subgraphs included."""
    return sum(t.nbytes for t in iter_constant_tensors(model))


def check_output_path(
    path: str | os.PathLike, *, protect: tuple[str | os.PathLike, ...] = (), overwrite: bool = False
) -> Path:
    """Raise SaveError if ``path`` cannot or must not be written; called before long work."""
    path = Path(path)
    for p in protect:
        if Path(p).exists() and path.exists() and path.resolve() == Path(p).resolve() and not overwrite:
            raise SaveError(
                f"{path}: refusing to overwrite the input model.",
                hint="choose another output path, or pass overwrite=True (--overwrite).",
            )
    if path.exists() and path.is_dir():
        raise SaveError(f"{path}: is a directory.", hint="give a file name ending in .onnx.")
    parent = path.parent
    if not parent.is_dir():
        raise SaveError(f"{path}: folder '{parent}' does not exist.")
    if not os.access(parent, os.W_OK):
        raise SaveError(f"{path}: folder '{parent}' is not writable.")
    return path


def save_model(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    protect: tuple[str | os.PathLike, ...] = (),
    external_data: bool | None = None,
    maps: tuple[DetachedMap, ...] = (),
) -> Path:
    """Write ``model`` to ``path`` atomically, with the ``maps`` its input had
    (``graph.maps``: a classifier's ZipMap) put back.

    The model (and, for models near protobuf's 2 GB limit or when ``external_data`` is True, its
    ``<name>.data`` file) is written to a temporary folder beside the target, then renamed into
    place, so a failure never leaves a half-written output. ``protect`` lists paths (the input
    model) that are never replaced unless ``overwrite`` is set.
    """
    path = check_output_path(path, protect=protect, overwrite=overwrite)
    parent = path.parent
    if external_data is None:
        external_data = tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD
    data_name = path.name + ".data"
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=".onnxcompress-", dir=parent))
    except OSError as e:
        raise SaveError(f"{path}: cannot write to '{parent}': {e.strerror}.") from e
    try:
        tmp_model = tmp_dir / path.name
        if external_data and not maps:
            ir.save(model, tmp_model, external_data=data_name,
                    size_threshold_bytes=EXTERNAL_TENSOR_MIN_BYTES)
        else:
            _save_inline(model, tmp_model, maps)
        if (tmp_dir / data_name).exists():
            os.replace(tmp_dir / data_name, parent / data_name)
        os.replace(tmp_model, path)
    except OSError as e:
        raise SaveError(f"{path}: cannot write the model: {e.strerror or e}.") from e
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info("Saved %s (%d bytes).", path, path.stat().st_size)
    return path


def write_text_atomic(path: str | os.PathLike, text: str, *, what: str = "the report") -> Path:
    """Write a text file atomically (a temporary file beside it, then renamed), with the mode
    a plain ``open()`` would give it (mkstemp's files are 0600: a report nobody else can read)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".onnxcompress-", dir=path.parent if str(path.parent) else ".")
        try:
            os.fchmod(fd, default_file_mode())
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise SaveError(f"{path}: cannot write {what}: {e.strerror or e}.") from e
    return path


def default_file_mode() -> int:
    """0o666 minus the user's umask: the mode ``open()`` gives a new file."""
    # The umask can only be read by setting it; set it straight back (a moment, one thread).
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _save_inline(model: ir.Model, path: Path, maps: tuple[DetachedMap, ...] = ()) -> None:
    # ir.save would load every external tensor anyway; going through the proto keeps the output
    # byte-for-byte deterministic and lets us reuse onnx's writer.
    proto = to_proto(model)
    reattach_maps(proto, maps)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString(deterministic=True))


def model_files(path: str | os.PathLike, proto: onnx.ModelProto | None = None) -> list[Path]:
    """The model file at ``path`` and the external-data files it references (that exist);
    ``proto``: the file's, when the caller has parsed it."""
    path = Path(path)
    if proto is None:
        proto = onnx.load(str(path), load_external_data=False)
    locations: dict[str, None] = {}
    for _, t in iter_tensor_protos(proto.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = _external_info(t).get("location", "")
            if loc:
                locations[loc] = None
    return [path] + [path.parent / loc for loc in locations if (path.parent / loc).is_file()]


def model_file_bytes(path: str | os.PathLike, files: list[Path] | None = None) -> int:
    """Size on disk of a model file plus the external-data files it references (``files``:
    :func:`model_files` of it, when already listed)."""
    return sum(p.stat().st_size for p in (files if files is not None else model_files(path)))
