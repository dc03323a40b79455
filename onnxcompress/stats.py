"""Model-level statistics shared by reports and passes: parameters, bytes, gzip bytes."""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxcompress.weights import all_graphs, iter_constant_tensors

GZIP_LEVEL = 9
_CHUNK = 1 << 22


def gzip_size(data: bytes | Path) -> int:
    """Bytes after DEFLATE at the highest level (the stand-in for an entropy-coding stage)."""
    compressor = zlib.compressobj(GZIP_LEVEL)
    total = 0
    if isinstance(data, Path):
        with open(data, "rb") as f:
            while chunk := f.read(_CHUNK):
                total += len(compressor.compress(chunk))
    else:
        for i in range(0, len(data), _CHUNK):
            total += len(compressor.compress(data[i : i + _CHUNK]))
    return total + len(compressor.flush())


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
        if isinstance(tensor, ir.ExternalTensor):
            # Unmap the file: counting a 2 GB model must not keep 2 GB of pages resident.
            with contextlib.suppress(BufferError):
                tensor.release()
    nodes = sum(len(list(g)) for _, g in all_graphs(model))
    return ModelStats(nodes=nodes, parameters=params, weight_bytes=nbytes, nonzero_parameters=nonzero)
