"""Feeds for calibration and validation: files, readers, iterables, or synthetic data.

A *feed* is a dict from input name to array, one model run. Every data-driven step accepts the
same sources, wrapped in a :class:`FeedSource` that can be iterated more than once:

- a path to an ``.npz`` whose arrays are named after the model inputs, samples stacked on a new
  leading axis (sample ``i`` is ``arr[i]``); extra arrays such as ``labels`` are kept aside;
- a path to a folder of ``.npz`` files, one feed each (for inputs whose shape varies);
- an onnxruntime-style ``CalibrationDataReader`` (anything with ``get_next()`` returning a feed or
  None), used unchanged;
- any iterable of feed dicts;
- :func:`synthetic_feeds` for seeded random inputs built from the model's input types and shapes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcompress.errors import DataError
from onnxcompress.graph.outputs import reaches

logger = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]

LABEL_KEYS = ("labels", "label", "y", "targets")


@dataclass(frozen=True)
class InputSpec:
    """What the model expects of one input."""

    name: str
    dtype: np.dtype
    # Dimensions: a positive int, or a str (symbolic name) / None (unknown) for dynamic ones.
    shape: tuple[int | str | None, ...] | None
    # NaN is data here: the input reaches an op that reads it as a missing value
    nan_allowed: bool = False

    @classmethod
    def from_value(cls, value: ir.Value) -> InputSpec:
        dtype = np.dtype(value.dtype.numpy()) if value.dtype is not None else np.dtype("float32")
        shape = None
        if value.shape is not None:
            shape = tuple(_spec_dim(d) for d in value.shape)
        return cls(value.name or "", dtype, shape)


def is_dynamic_dim(dim: Any) -> bool:
    """Whether a declared dimension is dynamic: symbolic, unknown, or written as ``-1`` or ``0``.

    Exporters spell "any size" several ways (Paddle writes ``dim_value: -1``, some tools 0); a
    dimension of fixed size is a positive int. A symbolic name is dynamic too (it is kept as a
    str in :class:`InputSpec` so that sequence-like names can be recognised).
    """
    if isinstance(dim, (int, np.integer)) and not isinstance(dim, bool):
        return int(dim) <= 0
    return True


def free_dynamic_dims(model: ir.Model) -> int:
    """Rewrite graph-input dimensions written as ``-1`` or ``0`` as unnamed dynamic ones.

    onnxruntime accepts any size for ``-1`` but only 0 for ``0``, so a model that says "any size"
    with 0 would not run on real data at all; after this, every tool (onnxruntime included) reads
    such a dimension as dynamic, and the compressed model is written with the unambiguous
    spelling. Returns the number of dimensions rewritten (recorded in ``model.meta``).
    """
    count = 0
    for value in model.graph.inputs:
        if value.shape is None:
            continue
        dims = list(value.shape)
        if any(isinstance(d, int) and d <= 0 for d in dims):
            count += sum(isinstance(d, int) and d <= 0 for d in dims)
            freed = [ir.SymbolicDim(None) if isinstance(d, int) and d <= 0 else d for d in dims]
            value.shape = ir.Shape(freed)
    if count:
        model.meta[FREED_DIMS_KEY] = count
        logger.info("%d input dimension(s) written as -1 or 0 are read as dynamic.", count)
    return count


# model.meta key: how many input dims free_dynamic_dims rewrote (the file on disk still has them).
FREED_DIMS_KEY = "onnxcompress.freed_dynamic_dims"


def _spec_dim(dim: Any) -> int | str | None:
    if not is_dynamic_dim(dim):
        return int(dim)
    return dim.value if isinstance(dim, ir.SymbolicDim) else None  # -1 / 0 / unknown: None


#: Ops that read NaN as a missing value: a tree ensemble (LightGBM, XGBoost and scikit-learn
#: trees through onnxmltools / skl2onnx; batch 8's atspm-detector feeds LightGBM NaN for "no
#: data"), an Imputer, IsNaN. NaN in an input that reaches one is data, not an error.
MISSING_VALUE_OPS = frozenset({"TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble",
                               "Imputer", "IsNaN"})


def input_specs(model: ir.Model) -> list[InputSpec]:
    specs = [InputSpec.from_value(v) for v in model.graph.inputs]
    if not any(n.op_type in MISSING_VALUE_OPS for n in model.graph):  # the walk only where it can find one
        return specs
    return [replace(s, nan_allowed=reaches(v, lambda n: n.op_type in MISSING_VALUE_OPS))
            for s, v in zip(specs, model.graph.inputs, strict=True)]


class FeedSource:
    """A re-iterable source of feeds checked against the model's inputs.

    One-shot sources (readers, generators) are cached on first use so that several passes can
    read the same samples; a reader with ``rewind()`` is rewound instead of cached.
    """

    def __init__(
        self,
        make_iter: Callable[[], Iterator[Mapping[str, Any]]],
        *,
        specs: list[InputSpec] | None = None,
        labels: np.ndarray | None = None,
        description: str = "data",
        length: int | None = None,
    ) -> None:
        self._make_iter = make_iter
        self.specs = specs
        self.labels = labels
        self.description = description
        self._length = length

    def __iter__(self) -> Iterator[Feed]:
        for i, raw in enumerate(self._make_iter()):
            yield self._conform(dict(raw), i)

    def __len__(self) -> int:
        if self._length is None:
            self._length = sum(1 for _ in self._make_iter())
        return self._length

    def take(self, n: int) -> FeedSource:
        """The first ``n`` feeds only."""
        parent = self

        def make() -> Iterator[Mapping[str, Any]]:
            if n <= 0:
                return
            for i, feed in enumerate(parent._make_iter()):
                yield feed
                if i + 1 >= n:
                    return  # before pulling one more from a reader

        labels = self.labels[:n] if self.labels is not None else None
        # (a known length only: counting a reader would read all of it)
        length = min(n, self._length) if self._length is not None else None
        return FeedSource(make, specs=self.specs, labels=labels, description=self.description,
                          length=length)

    def with_specs(self, specs: list[InputSpec]) -> FeedSource:
        return FeedSource(self._make_iter, specs=specs, labels=self.labels,
                          description=self.description, length=self._length)

    def check(self) -> FeedSource:
        """Read every sample once and conform it, so that bad data (a missing input, a wrong
        shape or dtype, NaN/Inf) fails here, with the same error for every consumer, instead of
        in whichever pass reads that sample first (or is silently ignored by a pass that only
        notes what it could not use). Returns ``self``."""
        count = 0
        for _ in self:
            count += 1
        if count == 0:
            raise DataError(f"{self.description}: no samples.")
        if self._length is None:
            self._length = count
        return self

    def _conform(self, feed: Feed, index: int) -> Feed:
        """Check names, add a missing batch axis, cast safely to the input's dtype, refuse NaN/Inf."""
        if self.specs is None:
            out = {k: np.asarray(v) for k, v in feed.items()}
            for name, arr in out.items():
                self._check_finite(name, arr, index)
            return out
        out: Feed = {}
        for spec in self.specs:
            if spec.name not in feed:
                raise DataError(
                    f"{self.description}: sample {index} has no array for model input "
                    f"'{spec.name}' (it has: {', '.join(sorted(feed)) or 'nothing'}).",
                    hint="name the arrays after the model inputs (see `onnxcompress inspect`).",
                )
            arr = np.asarray(feed[spec.name])
            if spec.shape is not None and arr.ndim == len(spec.shape) - 1:
                arr = arr[None, ...]  # samples stored without their batch axis of 1
            if spec.shape is not None and arr.ndim != len(spec.shape):
                raise DataError(
                    f"{self.description}: sample {index} of input '{spec.name}' has shape "
                    f"{arr.shape}, the model expects rank {len(spec.shape)} "
                    f"({_format_shape(spec.shape)}).",
                    hint="stack samples on a new leading axis: sample i is arr[i].",
                )
            if spec.shape is not None:
                for axis, (have, want) in enumerate(zip(arr.shape, spec.shape, strict=True)):
                    if isinstance(want, int) and want != have:
                        raise DataError(
                            f"{self.description}: sample {index} of input '{spec.name}' has "
                            f"shape {arr.shape}, the model expects {_format_shape(spec.shape)} "
                            f"(axis {axis})."
                        )
            if arr.dtype != spec.dtype:
                if not np.can_cast(arr.dtype, spec.dtype, casting="same_kind") and not (
                    arr.dtype.kind in "iub" and spec.dtype.kind in "iubf"
                ):
                    raise DataError(
                        f"{self.description}: input '{spec.name}' is {arr.dtype}, the model "
                        f"expects {spec.dtype}."
                    )
                arr = arr.astype(spec.dtype)
            self._check_finite(spec.name, arr, index, nan_allowed=spec.nan_allowed)
            out[spec.name] = np.ascontiguousarray(arr)
        return out

    def _check_finite(self, name: str, arr: np.ndarray, index: int, *, nan_allowed: bool = False) -> None:
        # Calibration ranges, importance statistics and comparisons are all poisoned by one NaN,
        # unless the model reads NaN as a missing value (MISSING_VALUE_OPS).
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            nan = int(np.isnan(arr).sum())
            if nan_allowed and not np.isinf(arr).any():
                return
            raise DataError(
                f"{self.description}: sample {index} of input '{name}' holds {nan} NaN and "
                f"{int(arr.size - np.isfinite(arr).sum()) - nan} Inf value(s).",
                hint="data must be finite: fix or drop that sample.",
            )


def _format_shape(shape: tuple[int | str | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def feed_source(
    source: Any,
    model: ir.Model | None = None,
    *,
    name: str | None = None,
    labels: str | None = None,
    check: bool = True,
) -> FeedSource:
    """Wrap any supported data source (see the module doc) in a :class:`FeedSource`.

    ``labels`` names the array holding the labels in ``.npz`` files (default: the first of
    ``LABEL_KEYS`` present). With a ``model`` and ``check``, every sample is read and conformed
    once here (:meth:`FeedSource.check`); a caller that uses only the first samples passes
    ``check=False`` and checks ``source.take(n)`` itself.
    """
    specs = input_specs(model) if model is not None else None
    if isinstance(source, FeedSource):
        wrapped = source.with_specs(specs) if specs is not None else source
    elif isinstance(source, (str, os.PathLike)):
        wrapped = _from_path(Path(source), specs, labels)
    elif hasattr(source, "get_next"):
        wrapped = _from_reader(source, specs, name or type(source).__name__)
    elif isinstance(source, Mapping):
        raise DataError(
            "data: got a single dict; pass a list of feed dicts, or an .npz path.",
        )
    elif isinstance(source, Iterable):
        wrapped = _from_iterable(source, specs, name or "data")
    else:
        raise DataError(
            f"data: cannot read feeds from a {type(source).__name__}.",
            hint="pass an .npz path, a folder of .npz files, a CalibrationDataReader or a list of dicts.",
        )
    # Checked against the model up front: every consumer (prune, kmeans, quantize, validation)
    # then sees the same error for the same bad data, before any work is done.
    return wrapped.check() if specs is not None and check else wrapped


def _from_path(path: Path, specs: list[InputSpec] | None, label_key: str | None = None) -> FeedSource:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder.")
    label_keys = (label_key,) if label_key else LABEL_KEYS
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise DataError(f"{path}: the folder holds no .npz files.")
        for f in files:
            _open_npz(f)  # fail early, with the file's name, on a broken one

        def make() -> Iterator[Mapping[str, Any]]:
            for f in files:
                with _open_npz(f) as data:
                    yield {k: data[k] for k in data.files if k not in label_keys}

        labels = _folder_labels(files, label_keys)
        if label_key and labels is None:
            raise DataError(f"{path}: not every .npz file holds an array named '{label_key}'.")
        return FeedSource(make, specs=specs, labels=labels, description=str(path), length=len(files))
    with _open_npz(path) as data:
        arrays = {k: data[k] for k in data.files}
    if label_key and label_key not in arrays:
        raise DataError(
            f"{path}: no labels array named '{label_key}' "
            f"(the file has: {', '.join(sorted(arrays)) or 'nothing'})."
        )
    labels = next((arrays.pop(k) for k in label_keys if k in arrays), None)
    if specs is not None:
        names = [s.name for s in specs]
        missing = [n for n in names if n not in arrays]
        if missing:
            raise DataError(
                f"{path}: no array named after model input(s) {', '.join(missing)} "
                f"(the file has: {', '.join(sorted(arrays)) or 'nothing'}).",
                hint="name the arrays after the model inputs (see `onnxcompress inspect`).",
            )
        arrays = {n: arrays[n] for n in names}
    if not arrays:
        raise DataError(f"{path}: the file holds no input arrays.")
    counts = {k: len(v) if v.ndim else 0 for k, v in arrays.items()}
    n = min(counts.values())
    if len(set(counts.values())) != 1 or n == 0:
        raise DataError(
            f"{path}: arrays must stack the same number (>0) of samples on their first axis; "
            f"got {counts}."
        )

    def make_stacked() -> Iterator[Mapping[str, Any]]:
        for i in range(n):
            yield {k: v[i] for k, v in arrays.items()}

    return FeedSource(make_stacked, specs=specs, labels=labels, description=str(path), length=n)


def _open_npz(path: Path):  # noqa: ANN202 - np.lib.npyio.NpzFile
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:  # zipfile, OSError, ValueError: all mean "not a readable npz"
        # numpy's message for non-npz bytes suggests allow_pickle=True: never that for data files.
        detail = "not a zip of .npy arrays" if "pickle" in str(e) else f"{type(e).__name__}: {e}"
        raise DataError(f"{path}: not a readable .npz file ({detail}).") from e
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path}: holds a single array, not named arrays.",
            hint="save an .npz whose arrays are named after the model inputs: "
            "np.savez('data.npz', input_name=array).",
        )
    return data


def _folder_labels(files: list[Path], keys: tuple[str, ...] = LABEL_KEYS) -> np.ndarray | None:
    labels = []
    for f in files:
        with _open_npz(f) as data:
            key = next((k for k in keys if k in data.files), None)
            if key is None:
                return None
            labels.append(np.asarray(data[key]).reshape(-1))
    return np.concatenate(labels)


def _from_reader(reader: Any, specs: list[InputSpec] | None, name: str) -> FeedSource:
    if hasattr(reader, "rewind"):
        state = {"started": False}

        def make() -> Iterator[Mapping[str, Any]]:
            if state["started"]:
                reader.rewind()  # also after an abandoned pass (take(), a failed run)
            state["started"] = True
            while (feed := reader.get_next()) is not None:
                yield feed

        return FeedSource(make, specs=specs, description=name)
    return FeedSource(_replayable(reader.get_next), specs=specs, description=name)


def _from_iterable(items: Iterable[Any], specs: list[InputSpec] | None, name: str) -> FeedSource:
    if isinstance(items, (list, tuple)):
        seq = list(items)
        return FeedSource(lambda: iter(seq), specs=specs, description=name, length=len(seq))
    iterator = iter(items)
    return FeedSource(_replayable(lambda: next(iterator, None)), specs=specs, description=name)


def _replayable(pull: Callable[[], Any]) -> Callable[[], Iterator[Any]]:
    """Iterations over a one-shot source (``pull`` returns None at the end): items are cached as
    they are read, so every pass starts from the first item, even after an abandoned one."""
    cache: list[Any] = []
    state = {"done": False}

    def make() -> Iterator[Any]:
        i = 0
        while True:
            if i < len(cache):
                yield cache[i]
            elif state["done"]:
                return
            else:
                item = pull()
                if item is None:
                    state["done"] = True
                    return
                cache.append(item)
                yield item
            i += 1

    return make


# -- synthetic inputs ---------------------------------------------------------------------------
