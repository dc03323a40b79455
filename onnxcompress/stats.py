"""Model-level statistics shared by reports and passes: parameters, bytes, gzip bytes."""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxcompress.model import release_external
from onnxcompress.weights import all_graphs, iter_constant_tensors

# gzip(1)'s default level, so the report's number is what `gzip model.onnx` gives. Level 9 took
# 25.7 s on a 19 MB CRNN whose weights compress well (level 6: 2.9 s, 9% larger), more than the
# whole int8 quantization; on weights that barely compress the levels are within 0.01%.
GZIP_LEVEL = 6
_CHUNK = 1 << 22
# Files (with their external data) up to this size are gzipped whole; larger ones are estimated
# from GZIP_SAMPLES evenly spaced windows of GZIP_WINDOW bytes (0.25 s). zlib runs at ~12 MB/s on
# float weights at any level, so an exact gzip of both files cost more CPU than onnxruntime's
# whole quantize_dynamic (bert_tiny, 22 MB: 2.3 s vs 0.94 s; a 150 MB stack: ~10 s vs 3.5 s).
# Estimates on 10 real-model files (fp32 and int8, 0.6-54 MB): within 1.5% of the exact size.
GZIP_EXACT_MAX_BYTES = 4 << 20
GZIP_SAMPLES = 32
GZIP_WINDOW = 128 << 10


def gzip_size(data: bytes | Path) -> int:
    """Bytes after DEFLATE at :data:`GZIP_LEVEL` (the stand-in for an entropy-coding stage)."""
    compressor = zlib.compressobj(GZIP_LEVEL)
    total = 0
    if isinstance(data, Path):
        with open(data, "rb") as f:
            while chunk := f.read(_CHUNK):
                _wait_while_timing()
                total += len(compressor.compress(chunk))
    else:
        for i in range(0, len(data), _CHUNK):
            _wait_while_timing()
            total += len(compressor.compress(data[i : i + _CHUNK]))
    return total + len(compressor.flush())


# Background work (the report's gzip sizes) yields the CPU while something is being timed: on a
# 2-core machine a compressing thread would slow the onnxruntime runs the speed guard compares.
_timing = threading.Condition()
_timing_sections = 0


@contextlib.contextmanager
def timing_section() -> Iterator[None]:
    """Hold while measuring latency: :class:`GzipJob` threads wait until it is released."""
    global _timing_sections
    with _timing:
        _timing_sections += 1
    try:
        yield
    finally:
        with _timing:
            _timing_sections -= 1
            _timing.notify_all()


def _wait_while_timing() -> None:
    if threading.current_thread() is threading.main_thread():
        return  # only background compression yields
    with _timing:
        _timing.wait_for(lambda: _timing_sections == 0)


def gzip_files(paths: Sequence[Path]) -> tuple[int, bool]:
    """The summed :func:`gzip_size` of ``paths`` and True when their total is at most
    :data:`GZIP_EXACT_MAX_BYTES`; otherwise an estimate and False: the ratio DEFLATE reaches on
    :data:`GZIP_SAMPLES` evenly spaced windows (one stream, windows back to back) times the
    total size."""
    sizes = [p.stat().st_size for p in paths]
    total = sum(sizes)
    if total <= GZIP_EXACT_MAX_BYTES:
        return sum(gzip_size(p) for p in paths), True
    step = total / GZIP_SAMPLES
    starts = [int(i * step + (step - GZIP_WINDOW) / 2) for i in range(GZIP_SAMPLES)]
    compressor = zlib.compressobj(GZIP_LEVEL)
    packed = sampled = 0
    for start in starts:
        _wait_while_timing()
        offset = start
        for path, size in zip(paths, sizes, strict=True):  # the window's file, by global offset
            if offset < size:
                with open(path, "rb") as f:
                    f.seek(offset)
                    window = f.read(GZIP_WINDOW)
                break
            offset -= size
        sampled += len(window)
        packed += len(compressor.compress(window))
    packed += len(compressor.flush())
    return round(packed * total / max(sampled, 1)), False


class GzipJob:
    """:func:`gzip_files` computed in a background thread (zlib releases the GIL, so it runs
    beside the compression on another core); :meth:`result` waits for it. Exact numbers are
    those of :func:`gzip_size`: same level, same stream."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = list(paths)
        self._result: tuple[int, bool] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="onnxcompress-gzip", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            self._result = gzip_files(self._paths)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread by result()
            self._error = e

    def result(self) -> tuple[int, bool]:
        """(bytes, exact): see :func:`gzip_files`."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


@dataclass
class ModelStats:
    nodes: int
    parameters: int  # elements of every float weight in the index
    weight_bytes: int  # bytes of those weights as stored
    nonzero_parameters: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero_parameters / self.parameters if self.parameters else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "sparsity": round(self.sparsity, 6)}


def _is_parameter(tensor: ir.TensorProtocol) -> bool:
    # Small integer tensors are shapes, axes and indices for Reshape/Slice..., not parameters.
    if tensor.dtype in (ir.DataType.INT64, ir.DataType.INT32) and tensor.size <= 64:
        return False
    return tensor.dtype != ir.DataType.STRING and tensor.size > 1


def model_stats(model: ir.Model) -> ModelStats:
    """Parameters are the elements of every constant tensor except small integer ones."""
    params = nbytes = nonzero = 0
    for tensor in iter_constant_tensors(model):
        if not _is_parameter(tensor):
            continue
        params += tensor.size
        nbytes += tensor.nbytes
        nonzero += int(np.count_nonzero(tensor.numpy()))
        release_external(tensor)  # counting a 2 GB model must not keep 2 GB of pages resident
    nodes = sum(len(list(g)) for _, g in all_graphs(model))
    return ModelStats(nodes=nodes, parameters=params, weight_bytes=nbytes, nonzero_parameters=nonzero)
