"""Second moments of each layer's input, the statistics a layer-wise refit needs.

For a linear layer ``y = W x`` (MatMul, Gemm, and Conv on its unfolded patches), the output error
of a changed weight ``W'`` over calibration inputs is ``tr((W' - W) H (W' - W)^T)`` with
``H = E[x x^T]``: the one matrix from which pruning, weight sharing and quantization can all be
refit against the original layer (the teacher), without keeping activations around.

Weights are handled as rows: :func:`as_rows` turns a weight into ``[groups, out, k]`` (``k`` the
values one output reads: in-features, or ``C/g * kh * kw`` patch elements of a Conv), and
:func:`from_rows` back. ``H`` is ``[groups, k, k]``.

Memory: ``H`` takes ``groups * k^2 * 8`` bytes per layer; layers are collected in blocks whose
matrices fit ``budget_bytes`` (one pass over the data per block), so peak memory is bounded by the
budget and one sample's activations, not by the model; a layer whose own matrix is over
``MAX_MATRIX_BYTES`` is not collected (:func:`too_wide`). Rows of a Conv (one per output position)
are subsampled to ``max_rows`` per sample, deterministically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcompress import activations
from onnxcompress.data import Feed
from onnxcompress.weights import Use, Weight

logger = logging.getLogger(__name__)

DEFAULT_BUDGET_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_ROWS = 2048
# One layer's E[x x^T] over this is not collected: the refits that read it hold several copies
# (its inverse, the sweep's), and MEGnet's dense layer over a flattened time series (45411
# inputs) asked 16.5 GB for its one matrix and was killed at 23 GB (auto's 4-bit blocks). Such a
# layer keeps the form it has without the statistics (rounded to nearest, not refit).
MAX_MATRIX_BYTES = 512 << 20


def too_wide(k: int, groups: int = 1) -> str | None:
    """Why a layer reading ``k`` inputs a row (``groups`` groups) gets no E[x x^T], or None."""
    size = groups * k * k * 8
    if size <= MAX_MATRIX_BYTES:
        return None
    return (f"{k} inputs a row: its E[x x^T] would take {size / 2**30:.1f} GB (over "
            f"{MAX_MATRIX_BYTES >> 20} MB), not collected")


@dataclass
class InputStats:
    """E[x x^T] per group ([groups, k, k], float64), E[x] ([groups, k]) and the rows behind them.

    Collected with a ``student`` model, ``hessian`` and ``mean`` are the student's input moments
    and ``cross`` is E[x_student x_teacher^T]: what a refit needs to match the teacher's output
    from the inputs the (already compressed) student really produces.
    """

    hessian: np.ndarray
    mean: np.ndarray
    rows: int
    cross: np.ndarray | None = None
    teacher_hessian: np.ndarray | None = None  # the teacher's E[x x^T] (with a student)
    teacher_mean: np.ndarray | None = None  # the teacher's E[x] (with a student)


@dataclass(frozen=True)
class RowLayout:
    """How a weight maps to rows: op, group count, and the Conv geometry when it is one."""

    op_type: str
    groups: int
    transposed: bool = False  # MatMul [K, N] / Gemm without transB: rows are W^T
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()


def row_width(weight: Weight, layout: RowLayout) -> int:
    """The inputs a row of ``weight`` reads (``k`` of its E[x x^T]): a Conv's input channels per
    group x kernel, a MatMul's rows."""
    return int(weight.shape[0]) if layout.transposed else int(np.prod(weight.shape[1:]))


def layout_of(weight: Weight) -> tuple[RowLayout | None, str | None]:
    """The row layout of a compute weight, or (None, why it cannot be refit)."""
    if weight.scope:
        return None, "inside a subgraph"
    if weight.via:
        return None, "reaches its node through Transpose/Cast"
    layouts = [_use_layout(use, weight) for use in weight.uses]
    if len(layouts) > 1 and any(a != layouts[0] for a in layouts[1:]):
        # one layout for all (a merged decoder's two branches, an ALBERT's shared layers): the
        # readers' inputs are pooled (collect_input_stats)
        return None, "read by several nodes"
    return layouts[0] if layouts else (None, "not read")


def _use_layout(use: Use, weight: Weight) -> tuple[RowLayout | None, str | None]:
    node, rank = use.node, len(weight.shape)
    if node.op_type == "MatMul" and use.index == 1 and rank == 2:
        return RowLayout("MatMul", 1, transposed=True), None
    if node.op_type == "Gemm" and use.index == 1 and rank == 2:
        if _attr(node, "transA", 0):
            return None, "Gemm with transA"
        return RowLayout("Gemm", 1, transposed=not _attr(node, "transB", 0)), None
    if node.op_type == "Conv" and use.index == 1 and rank in (3, 4):
        auto_pad = node.attributes.get("auto_pad")
        if auto_pad is not None and auto_pad.value not in ("NOTSET", "VALID"):
            return None, f"Conv auto_pad {auto_pad.value}"
        spatial = rank - 2
        kernel = tuple(int(d) for d in weight.shape[2:])
        pads = _ints(node, "pads", [0] * (2 * spatial))
        return RowLayout(
            "Conv", _attr(node, "group", 1), kernel=kernel,
            strides=tuple(_ints(node, "strides", [1] * spatial)),
            dilations=tuple(_ints(node, "dilations", [1] * spatial)), pads=tuple(pads),
        ), None
    return None, f"{node.op_type} input {use.index} is not refit"


def _attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return int(attr.value) if attr is not None else default


def _ints(node: ir.Node, name: str, default: list[int]) -> list[int]:
    attr = node.attributes.get(name)
    return [int(v) for v in attr.value] if attr is not None else default


def as_rows(array: np.ndarray, layout: RowLayout) -> np.ndarray:
    """Weight -> [groups, out_per_group, k] (a copy in float64)."""
    w = np.asarray(array, dtype=np.float64)
    if layout.op_type in ("MatMul", "Gemm"):
        return (w.T if layout.transposed else w)[None].copy()
    out = w.shape[0]
    return w.reshape(layout.groups, out // layout.groups, -1).copy()


def from_rows(rows: np.ndarray, layout: RowLayout, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`as_rows`."""
    if layout.op_type in ("MatMul", "Gemm"):
        w = rows[0].T if layout.transposed else rows[0]
    else:
        w = rows.reshape(shape)
    return np.ascontiguousarray(w.reshape(shape)).astype(dtype)


def unfold(x: np.ndarray, layout: RowLayout, rows_out: int | None, rng: np.random.Generator) -> np.ndarray:
    """Activation -> [groups, rows, k] (float32): the vectors each output row of the weight reads."""
    if layout.op_type in ("MatMul", "Gemm"):
        flat = x.reshape(-1, x.shape[-1])
        if rows_out is not None and flat.shape[0] > rows_out:
            flat = flat[np.sort(rng.choice(flat.shape[0], rows_out, replace=False))]
        return flat[None].astype(np.float32)
    spatial = len(layout.kernel)
    n, c = x.shape[:2]
    pad_width = [(0, 0), (0, 0)] + [(layout.pads[i], layout.pads[i + spatial]) for i in range(spatial)]
    xp = np.pad(x, pad_width)
    span = tuple((k - 1) * d + 1 for k, d in zip(layout.kernel, layout.dilations, strict=True))
    windows = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(2, 2 + spatial)))
    # windows: [n, c, *out_positions(unstrided), *span]; apply strides and dilations.
    index = (slice(None), slice(None))
    index += tuple(slice(None, None, s) for s in layout.strides)
    index += tuple(slice(None, None, d) for d in layout.dilations)
    windows = windows[index]  # [n, c, *positions, *kernel], still a view
    positions = windows.shape[2:2 + spatial]
    count = n * int(np.prod(positions))
    # Pick the rows first, then copy only those patches: a full unfold of a large feature map
    # would hold every patch of every position.
    chosen = np.arange(count)
    if rows_out is not None and count > rows_out:
        chosen = np.sort(rng.choice(count, rows_out, replace=False))
    coords = np.unravel_index(chosen, (n, *positions))
    patches = windows[(coords[0], slice(None), *coords[1:])]  # [rows, c, *kernel]
    patches = patches.reshape(len(chosen), c, -1)
    g = layout.groups
    per_group = patches.reshape(patches.shape[0], g, c // g, -1)
    return per_group.transpose(1, 0, 2, 3).reshape(g, patches.shape[0], -1).astype(np.float32)


def collect_input_stats(
    model: ir.Model,
    weights: Iterable[Weight],
    feeds: Iterable[Feed],
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    seed: int = 0,
    student: ir.Model | None = None,
    teacher_hessian: bool = True,
    hessian_dtype: np.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, InputStats], dict[str, str]]:
    """E[x x^T] of each weight's input (by ``weight.label``), and the weights skipped with why.

    One onnxruntime pass over ``feeds`` per block of layers whose matrices fit ``budget_bytes``
    (two with a ``student``: ``model`` is then the teacher, and the same rows are sampled from
    both; ``feeds`` must be iterable twice). ``teacher_hessian`` False: the teacher's E[x x^T] is
    not collected (a third of the products; a refit that measures errors up to a constant).
    ``hessian_dtype``: each E[x x^T] is kept in this type once its block is collected (float32
    for GPTQ rounding, which holds every layer's at once: half the memory). ``progress(done,
    blocks)`` is told before each pass over the data.
    """
    feeds = list(feeds) if not hasattr(feeds, "__len__") else feeds
    wanted: list[_Item] = []
    skipped: dict[str, str] = {}
    for w in weights:
        layout, why = layout_of(w)
        names = tuple(dict.fromkeys(
            found[0].name for use in w.uses if (found := activations.reader_activation(use)) is not None
            and found[0] is not None and found[0].name)) if layout is not None else ()
        if layout is None or not names:
            skipped[w.label] = why or "its input activation cannot be read"
            continue
        if (wide := too_wide(k := row_width(w, layout), layout.groups)) is not None:
            skipped[w.label] = wide
            continue
        wanted.append(_Item(w.label, layout, names, k))  # several readers: their inputs pooled
    stats: dict[str, InputStats] = {}
    # sums kept in ``hessian_dtype`` take its bytes: float32 for GPTQ, half the passes over the
    # data (HiFi-GAN's 74 convs, 375 MB of float32 matrices: 10 passes of 16 samples, 171 s)
    itemsize = np.dtype(hessian_dtype or np.float64).itemsize if student is None else 8
    blocks = list(_blocks(wanted, budget_bytes, itemsize))
    for i, (offset, block) in enumerate(_after(blocks)):
        if progress is not None:
            progress(i, len(blocks))
        _collect_block(model, block, feeds, max_rows, seed, stats, skipped, student, teacher_hessian,
                       hessian_dtype, offset=offset)
    if progress is not None and blocks:
        progress(len(blocks), len(blocks))
    return stats, skipped


def collect_reader_stats(
    model: ir.Model,
    readers: dict[str, tuple[Iterable[str], int]],
    feeds: Iterable[Feed],
    *,
    max_rows: int | None = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    seed: int = 0,
) -> tuple[dict[str, InputStats], int]:
    """The reader-set mode: E[x x^T] over every input that reads one weight, summed.

    ``readers`` maps a key to (the main-graph tensors multiplied with the weight, ``k`` its
    in-features): a weight read by several MatMul/Gemm nodes (tied weights, the time steps of an
    unrolled RNN) gets the statistics of all their inputs pooled, where
    :func:`collect_input_stats` refuses it. Inputs whose last axis is not ``k`` are ignored, and
    a key whose ``k`` is :func:`too_wide` gets nothing; all rows are used unless ``max_rows``.
    Returns the statistics by key and the passes made over ``feeds`` (one per block of matrices
    fitting ``budget_bytes``).
    """
    feeds = list(feeds) if not hasattr(feeds, "__len__") else feeds
    items = [_Item(key, RowLayout("MatMul", 1), tuple(dict.fromkeys(names)), k)
             for key, (names, k) in readers.items() if too_wide(k) is None]
    stats: dict[str, InputStats] = {}
    skipped: dict[str, str] = {}
    blocks = list(_blocks([i for i in items if i.names], budget_bytes))
    for offset, block in _after(blocks):
        _collect_block(model, block, feeds, max_rows, seed, stats, skipped, offset=offset)
    return stats, len(blocks)


@dataclass(frozen=True)
class _Item:
    """One matrix to collect: its key, row layout, the tensors it reads and their width ``k``."""

    key: str
    layout: RowLayout
    names: tuple[str, ...]
    k: int


def _blocks(items: list[_Item], budget_bytes: int, itemsize: int = 8) -> Iterable[list[_Item]]:
    """Items in order, grouped so that each group's matrices (of ``itemsize`` bytes a value: float64
    unless the sums are kept narrower) fit ``budget_bytes``."""
    block: list[_Item] = []
    used = 0
    for item in items:
        size = item.layout.groups * item.k * item.k * itemsize
        if block and used + size > budget_bytes:
            yield block
            block, used = [], 0
        block.append(item)
        used += size
    if block:
        yield block


def _after(blocks: list[list[_Item]]) -> Iterable[tuple[int, list[_Item]]]:
    """Each block with the number of items before it (``_collect_block``'s ``offset``)."""
    offset = 0
    for block in blocks:
        yield offset, block
        offset += len(block)


def _collect_block(
    model: ir.Model,
    block: list[_Item],
    feeds: Iterable[Feed],
    max_rows: int | None,
    seed: int,
    stats: dict[str, InputStats],
    skipped: dict[str, str],
    student: ir.Model | None = None,
    teacher_hessian: bool = True,
    hessian_dtype: np.dtype | None = None,
    *,
    offset: int = 0,
) -> None:
    """One pass over ``feeds`` for ``block``'s sums (``offset``: the items before the block, so a
    layer's sampled rows do not depend on how the layers were blocked)."""
    sums: dict[str, list] = {}
    names = {name for item in block for name in item.names}
    teacher_runs = activations.iter_intermediates(model, names, feeds)
    student_runs = activations.iter_intermediates(student, names, feeds) if student is not None else None
    for sample, outputs in enumerate(teacher_runs):
        mine = next(student_runs) if student_runs is not None else outputs
        # All rows of a MatMul input are the same for every weight reading it (the Q, K, V
        # projections of one input): its products are computed once per sample.
        shared: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, int]] = {}
        for layer, item in enumerate(block):
            layout = item.layout
            for name in item.names:
                if name not in outputs or name not in mine:
                    continue
                if layout.op_type in ("MatMul", "Gemm") and np.shape(outputs[name])[-1:] != (item.k,):
                    continue  # a reader whose input is not the weight's in-features
                key = (name, item.k)
                if key in shared:
                    _accumulate(sums.setdefault(item.key, [0.0, 0.0, 0, 0.0, 0.0, 0.0]), *shared[key])
                    continue
                try:
                    # The same seed for teacher and student: the same rows (positions) of both.
                    x_t = unfold(np.asarray(outputs[name]), layout, max_rows,
                                 np.random.default_rng([seed, sample, offset + layer]))
                    x = x_t if student_runs is None else unfold(
                        np.asarray(mine[name]), layout, max_rows,
                        np.random.default_rng([seed, sample, offset + layer]))
                except ValueError as e:  # shapes that do not match the weight (should not happen)
                    skipped[item.key] = f"cannot unfold its input ({e})"
                    continue
                acc = sums.setdefault(item.key, [0.0, 0.0, 0, 0.0, 0.0, 0.0])
                # float32 products per sample (half the time), summed over samples in float64
                # (in float32 where the statistics are kept so: no float64 copy of each product)
                product = (np.matmul(x.transpose(0, 2, 1), x).astype(hessian_dtype or np.float64, copy=False),
                           x.sum(axis=1, dtype=np.float64), x.shape[1])
                if student_runs is None and max_rows is None and layout.op_type in ("MatMul", "Gemm"):
                    shared[key] = product
                _accumulate(acc, *product)
                if student_runs is not None:
                    acc[3] = acc[3] + np.matmul(x.transpose(0, 2, 1), x_t).astype(np.float64)
                    if teacher_hessian:
                        acc[4] = acc[4] + np.matmul(x_t.transpose(0, 2, 1), x_t).astype(np.float64)
                    acc[5] = acc[5] + x_t.sum(axis=1, dtype=np.float64)
    for item in block:
        acc = sums.get(item.key)
        if acc is None or not acc[2]:
            skipped.setdefault(item.key, "its input could not be read from the calibration run")
            continue
        hessian = acc[0]
        hessian /= acc[2]  # in place: the sum is not needed again
        kept = hessian if hessian_dtype is None else hessian.astype(hessian_dtype, copy=False)
        stats[item.key] = InputStats(hessian=kept, mean=acc[1] / acc[2], rows=acc[2])
        acc[0] = hessian = None  # a float64 sum kept as float32: freed now, not with the block
        if student is not None:
            stats[item.key].cross = acc[3] / acc[2]
            stats[item.key].teacher_hessian = acc[4] / acc[2] if teacher_hessian else None
            stats[item.key].teacher_mean = acc[5] / acc[2]


def _accumulate(acc: list, hessian: np.ndarray, total: np.ndarray, rows: int) -> None:
    # in place once an array: a new sum beside the old one doubled every k x k matrix at once
    acc[0] = acc[0] + hessian if np.isscalar(acc[0]) else np.add(acc[0], hessian, out=acc[0])
    acc[1] = acc[1] + total
    acc[2] += rows
