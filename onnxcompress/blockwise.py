"""Block quantization codec: pure numpy, no graph.

A weight is handled as a matrix ``rows x cols`` quantized in blocks of ``block_size`` consecutive
elements along ``cols`` (the reduction axis K of a MatMul weight, whose rows are the N output
features; the hidden axis of an embedding table, whose rows are the tokens). Each block has one
scale and one unsigned zero point; codes are unsigned ``bits``-bit integers and decode as
``(code - zero_point) * scale``, which is exactly onnxruntime's ``MatMulNBits`` and
``GatherBlockQuantized`` arithmetic. Symmetric blocks use the fixed zero point 2^(bits-1) (the
default of both ops, so no zero-point tensor is stored).

Three ways to choose the codes:

- ``rtn``: round to nearest. Symmetric blocks map the largest-magnitude value to -2^(bits-1)
  (the full 2^bits levels are used, as onnxruntime's own quantizer does); asymmetric blocks span
  [min(w, 0), max(w, 0)].
- ``hqq``: data-free scale search in the spirit of HQQ: per block, a grid of shrunk ranges (a
  clipped outlier often lowers the block's total error) followed by alternating least-squares
  refits of the scale for the chosen codes. Never worse than RTN on the weight's L2 error.
- ``gptq``: error-compensating rounding given H = X^T X of the layer's inputs (GPTQ, Frantar et al.
  2022): columns are quantized in order and each column's rounding error is spread over the
  columns not yet quantized through the inverse Hessian. Block scales are chosen when the first
  column of a block is reached, from the already-updated weights. Falls back to RTN when H is
  singular even after damping.

Prices (``bytes_on_disk``, ``bytes_in_memory``) let a caller weigh options before writing any graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

METHODS = ("rtn", "hqq", "gptq")
SCALE_DTYPES = ("float32", "float16")
# Bit widths onnxruntime's MatMulNBits / GatherBlockQuantized unpack; other widths are stored one
# code per byte (their accuracy, 8-bit size).
PACKED_BITS = (2, 4, 8)
# Range shrink factors tried by the HQQ-style search (1.0 is RTN).
_HQQ_SHRINK = np.linspace(1.0, 0.70, 16)
_HQQ_REFITS = 3
# GPTQ: columns processed together before the lazy update of the rest (the sweep rounds it up
# to a multiple of the block size, so a block's scale is picked from its compensated columns).
_GPTQ_CHUNK = 128


@dataclass(frozen=True)
class BlockSpec:
    """How one weight is quantized."""

    bits: int = 4
    block_size: int = 32
    symmetric: bool = True
    scale_dtype: str = "float32"

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be in 2..8, got {self.bits}")
        bs = self.block_size
        if bs < 16 or bs & (bs - 1):
            raise ValueError(f"block_size must be a power of two >= 16, got {bs}")
        if self.scale_dtype not in SCALE_DTYPES:
            raise ValueError(f"scale_dtype must be one of {SCALE_DTYPES}, got {self.scale_dtype}")

    @property
    def levels(self) -> int:
        return (1 << self.bits) - 1

    @property
    def default_zero_point(self) -> int:
        return 1 << (self.bits - 1)

    @property
    def storage_bits(self) -> int:
        """Bits one code occupies when packed (2, 4 or 8)."""
        return self.bits if self.bits in PACKED_BITS else 8


@dataclass
class BlockQuantized:
    """Codes and block parameters of a ``rows x cols`` matrix (cols padded to whole blocks)."""

    codes: np.ndarray  # uint8 [rows, n_blocks * block_size]; padding holds the zero point
    scales: np.ndarray  # [rows, n_blocks], spec.scale_dtype
    zero_points: np.ndarray  # uint8 [rows, n_blocks]
    cols: int
    spec: BlockSpec
    method: str = "rtn"

    @property
    def rows(self) -> int:
        return int(self.codes.shape[0])

    @property
    def n_blocks(self) -> int:
        return int(self.scales.shape[1])

    def dequantize(self) -> np.ndarray:
        """The float32 ``rows x cols`` matrix the codes decode to (the runtime's arithmetic)."""
        bs = self.spec.block_size
        q = self.codes.reshape(self.rows, self.n_blocks, bs).astype(np.float32)
        zp = self.zero_points.astype(np.float32)[:, :, None]
        w = (q - zp) * self.scales.astype(np.float32)[:, :, None]
        return w.reshape(self.rows, -1)[:, : self.cols]

    def relative_error(self, matrix: np.ndarray) -> float:
        ref = np.asarray(matrix, dtype=np.float64)
        norm = float(np.linalg.norm(ref))
        diff = float(np.linalg.norm(self.dequantize().astype(np.float64) - ref))
        return diff / norm if norm > 0 else diff


# -- prices -------------------------------------------------------------------------------------


def bytes_on_disk(rows: int, cols: int, spec: BlockSpec) -> int:
    """Stored bytes of a quantized ``rows x cols`` matrix: codes, scales, zero points."""
    n_blocks = -(-cols // spec.block_size)
    codes = rows * n_blocks * spec.block_size * spec.storage_bits // 8
    scales = rows * n_blocks * (2 if spec.scale_dtype == "float16" else 4)
    zps = 0 if spec.symmetric else rows * -(-n_blocks * spec.storage_bits // 8)
    return codes + scales + zps


def bytes_in_memory(rows: int, cols: int, spec: BlockSpec) -> int:
    """Bytes the runtime holds: MatMulNBits/GatherBlockQuantized keep the packed form (plus a
    prepacked copy of similar size for MatMulNBits, which replaces the initializer on CPU)."""
    return bytes_on_disk(rows, cols, spec)


# -- block parameters ---------------------------------------------------------------------------


def _stored(scales: np.ndarray, spec: BlockSpec) -> np.ndarray:
    """Scales as the file holds them, back in float32 (codes are computed from these)."""
    dtype = np.float16 if spec.scale_dtype == "float16" else np.float32
    finfo = np.finfo(dtype)
    return np.clip(scales, -finfo.max, finfo.max).astype(dtype).astype(np.float32)


def block_params(blocks: np.ndarray, spec: BlockSpec, shrink: float | np.ndarray = 1.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) per block of ``blocks`` [..., block_size] by the RTN rule.

    ``shrink`` < 1 narrows the range (clips outliers); it broadcasts against ``blocks[..., 0]``.
    Scales are already rounded to ``spec.scale_dtype``.
    """
    b = blocks.astype(np.float32, copy=False)
    if spec.symmetric:
        idx = np.abs(b).argmax(axis=-1)
        peak = np.take_along_axis(b, idx[..., None], axis=-1)[..., 0]
        scale = peak * shrink / -float(spec.default_zero_point)
        zp = np.full(scale.shape, spec.default_zero_point, dtype=np.uint8)
        return _stored(scale, spec), zp
    lo = np.minimum(b.min(axis=-1), 0.0) * shrink
    hi = np.maximum(b.max(axis=-1), 0.0) * shrink
    scale = _stored((hi - lo) / spec.levels, spec)
    safe = np.where(scale != 0, scale, 1.0)
    zp = np.clip(np.rint(-lo / safe), 0, spec.levels).astype(np.uint8)
    return scale, zp


def encode(blocks: np.ndarray, scale: np.ndarray, zp: np.ndarray, spec: BlockSpec) -> np.ndarray:
    """Codes of ``blocks`` [..., block_size] for the given per-block scale and zero point."""
    safe = np.where(scale != 0, scale, 1.0)[..., None]
    q = np.rint(blocks / safe) + zp[..., None].astype(np.float32)
    q = np.clip(q, 0, spec.levels)
    # A zero scale (all-zero block, or one below fp16's range) decodes to 0 whatever the code.
    q = np.where((scale == 0)[..., None], zp[..., None], q)
    return q.astype(np.uint8)


def _decode(q: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
    return (q.astype(np.float32) - zp[..., None].astype(np.float32)) * scale[..., None]


def _as_blocks(matrix: np.ndarray, spec: BlockSpec) -> tuple[np.ndarray, int]:
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {m.shape}")
    rows, cols = m.shape
    bs = spec.block_size
    n_blocks = -(-cols // bs)
    padded = np.zeros((rows, n_blocks * bs), dtype=np.float32)
    padded[:, :cols] = m
    return padded.reshape(rows, n_blocks, bs), cols


def _result(q: np.ndarray, scale: np.ndarray, zp: np.ndarray, cols: int, spec: BlockSpec,
            method: str) -> BlockQuantized:
    dtype = np.float16 if spec.scale_dtype == "float16" else np.float32
    return BlockQuantized(codes=q.reshape(q.shape[0], -1), scales=scale.astype(dtype),
                          zero_points=zp, cols=cols, spec=spec, method=method)


# -- the three methods --------------------------------------------------------------------------


def quantize_rtn(matrix: np.ndarray, spec: BlockSpec) -> BlockQuantized:
    blocks, cols = _as_blocks(matrix, spec)
    scale, zp = block_params(blocks, spec)
    return _result(encode(blocks, scale, zp, spec), scale, zp, cols, spec, "rtn")


def quantize_hqq(matrix: np.ndarray, spec: BlockSpec) -> BlockQuantized:
    """Data-free: best of a grid of shrunk ranges per block, then least-squares scale refits."""
    blocks, cols = _as_blocks(matrix, spec)
    best_err = np.full(blocks.shape[:2], np.inf, dtype=np.float32)
    best_scale = np.zeros(blocks.shape[:2], dtype=np.float32)
    best_zp = np.zeros(blocks.shape[:2], dtype=np.uint8)
    for shrink in _HQQ_SHRINK:
        scale, zp = block_params(blocks, spec, float(shrink))
        q = encode(blocks, scale, zp, spec)
        err = ((_decode(q, scale, zp) - blocks) ** 2).sum(axis=-1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_scale = np.where(better, scale, best_scale)
        best_zp = np.where(better, zp, best_zp)
    scale, zp = best_scale, best_zp
    q = encode(blocks, scale, zp, spec)
    for _ in range(_HQQ_REFITS):
        # For fixed codes the L2-optimal scale is <w, q - z> / <q - z, q - z>.
        centred = q.astype(np.float32) - zp[..., None].astype(np.float32)
        denom = (centred * centred).sum(axis=-1)
        fitted = np.where(denom > 0, (centred * blocks).sum(axis=-1) / np.where(denom > 0, denom, 1), scale)
        fitted = _stored(fitted, spec)
        q_new = encode(blocks, fitted, zp, spec)
        err = ((_decode(q_new, fitted, zp) - blocks) ** 2).sum(axis=-1)
        better = err < best_err
        if not better.any():
            break
        best_err = np.where(better, err, best_err)
        scale = np.where(better, fitted, scale)
        q = np.where(better[..., None], q_new, q)
    return _result(q, scale, zp, cols, spec, "hqq")


def quantize_gptq(matrix: np.ndarray, hessian: np.ndarray, spec: BlockSpec, *,
                  damp: float = 0.01) -> BlockQuantized:
    """GPTQ rounding of ``matrix`` [rows, cols] given ``hessian`` [cols, cols] (= X^T X).

    The layer-wise core's sweep (:func:`onnxcompress.layerwise.sweep.round_sweep`) with each
    block's scale (and zero point) picked when the sweep reaches the block, from its columns as
    the earlier blocks' compensation left them. ``damp`` adds that fraction of the mean diagonal
    to H. Falls back to RTN (method "rtn") when H cannot be inverted.
    """
    from onnxcompress.layerwise.sweep import round_sweep

    w = np.array(matrix, dtype=np.float64)
    rows, cols = w.shape
    h = np.array(hessian, dtype=np.float64)
    if h.shape != (cols, cols):
        raise ValueError(f"hessian must be {cols}x{cols}, got {h.shape}")
    if not np.isfinite(h).all():
        logger.info("GPTQ: H is not finite; round to nearest instead.")
        return quantize_rtn(matrix, spec)
    w[:, np.diag(h) <= 0] = 0.0  # inputs that are always zero: their weights do not matter
    bs = spec.block_size
    n_blocks = -(-cols // bs)
    codes = np.zeros((rows, n_blocks * bs), dtype=np.uint8)
    scales = np.zeros((rows, n_blocks), dtype=np.float32)
    zps = np.zeros((rows, n_blocks), dtype=np.uint8)
    levels = float(spec.levels)
    current: dict[str, np.ndarray] = {}

    def start_block(col: int, view: np.ndarray) -> None:
        block = np.zeros((rows, bs), dtype=np.float32)
        block[:, : view.shape[2]] = view[0]
        b = col // bs
        scales[:, b], zps[:, b] = block_params(block, spec)
        zero = scales[:, b] == 0
        current.update(zero=zero, safe=np.where(zero, 1.0, scales[:, b]).astype(np.float32),
                       zp=zps[:, b].astype(np.float32), scale=scales[:, b].astype(np.float64))

    def round_column(col: int, values: np.ndarray) -> np.ndarray:
        # encode(): rint(w / scale) + zp, clipped; a zero scale keeps the zero point.
        q = np.clip(np.rint(values[0].astype(np.float32) / current["safe"]) + current["zp"], 0, levels)
        q = np.where(current["zero"], current["zp"], q).astype(np.uint8)
        codes[:, col] = q
        return ((q - current["zp"].astype(np.float64)) * current["scale"])[None]

    try:
        round_sweep(w[None], h[None], round_column, damp=damp, block=_GPTQ_CHUNK, span=bs,
                    start_span=start_block)
    except np.linalg.LinAlgError:
        logger.info("GPTQ: H is singular even after damping; round to nearest instead.")
        return quantize_rtn(matrix, spec)
    if not np.all(np.isfinite(scales)):
        return quantize_rtn(matrix, spec)
    # Padding past ``cols`` decodes to zero.
    if n_blocks * bs > cols:
        codes[:, cols:] = zps.repeat(bs, axis=1)[:, cols:]
    return _result(codes.reshape(rows, n_blocks, bs), scales, zps, cols, spec, "gptq")


def quantize(matrix: np.ndarray, spec: BlockSpec, method: str = "rtn", *,
             hessian: np.ndarray | None = None, damp: float = 0.01) -> BlockQuantized:
    """Quantize ``matrix`` [rows, cols] in blocks along cols. ``gptq`` needs ``hessian``."""
    if method == "rtn":
        return quantize_rtn(matrix, spec)
    if method == "hqq":
        return quantize_hqq(matrix, spec)
    if method == "gptq":
        if hessian is None:
            return quantize_rtn(matrix, spec)
        return quantize_gptq(matrix, hessian, spec, damp=damp)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


# -- packing (onnxruntime layouts) --------------------------------------------------------------


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned codes along the last axis, first value in the low bits (2, 4 or 8 bits).

    The last axis is padded with zeros to a whole number of bytes.
    """
    if bits == 8:
        return np.ascontiguousarray(codes, dtype=np.uint8)
    per_byte = 8 // bits
    c = np.asarray(codes, dtype=np.uint8)
    pad = (-c.shape[-1]) % per_byte
    if pad:
        c = np.concatenate([c, np.zeros((*c.shape[:-1], pad), dtype=np.uint8)], axis=-1)
    c = c.reshape(*c.shape[:-1], -1, per_byte)
    out = np.zeros(c.shape[:-1], dtype=np.uint8)
    for j in range(per_byte):
        out |= (c[..., j] << (j * bits)).astype(np.uint8)
    return out


def unpack(packed: np.ndarray, bits: int, length: int) -> np.ndarray:
    """Inverse of :func:`pack`: the first ``length`` codes along the last axis."""
    if bits == 8:
        return np.asarray(packed, dtype=np.uint8)[..., :length]
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    p = np.asarray(packed, dtype=np.uint8)
    parts = [(p >> (j * bits)) & mask for j in range(per_byte)]
    return np.stack(parts, axis=-1).reshape(*p.shape[:-1], -1)[..., :length]


def matmul_nbits_tensors(qt: BlockQuantized) -> dict[str, np.ndarray]:
    """MatMulNBits inputs for a weight quantized as ``[N, K]`` rows: B, scales, zero_points.

    B: uint8 [N, k_blocks, block_size * bits / 8]; scales [N, k_blocks]; zero_points packed
    uint8 [N, ceil(k_blocks * bits / 8)] (absent for symmetric blocks: the op's default is
    2^(bits-1)).
    """
    bits = qt.spec.storage_bits
    blob = qt.spec.block_size * bits // 8
    out = {
        "B": pack(qt.codes, bits).reshape(qt.rows, qt.n_blocks, blob),
        "scales": qt.scales,
    }
    if not qt.spec.symmetric or qt.spec.storage_bits != qt.spec.bits:
        out["zero_points"] = pack(qt.zero_points, bits)
    return out


def gather_block_tensors(qt: BlockQuantized) -> dict[str, np.ndarray]:
    """GatherBlockQuantized inputs (uint8 data) for a table quantized as ``[V, H]`` rows."""
    bits = qt.spec.storage_bits
    out = {"data": pack(qt.codes[:, : qt.cols], bits), "scales": qt.scales}
    if not qt.spec.symmetric or qt.spec.storage_bits != qt.spec.bits:
        out["zero_points"] = pack(qt.zero_points, bits)
    return out


def signed_codes(qt: BlockQuantized) -> np.ndarray:
    """Symmetric codes as signed integers (code - 2^(bits-1)), unpadded: for INT4/INT8 DQ."""
    return (qt.codes[:, : qt.cols].astype(np.int16) - qt.spec.default_zero_point).astype(np.int8)
