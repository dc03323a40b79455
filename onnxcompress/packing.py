"""Bit-packing of small unsigned integers (cluster indices) into uint8 planes.

ONNX has 4-bit tensor types only from opset 21, and nothing for 1-3 or 5-7 bits. Any width is
stored exactly with *bit planes*: a ``b``-bit index is split into planes of 4, 2 and 1 bits
(5 = 4 + 1, 6 = 4 + 2, 7 = 4 + 2 + 1, 3 = 2 + 1) and each plane packs ``8 / w`` indices per
byte. A plane is unpacked with two standard ``BitShift`` ops on uint8 (opset 11): shifting the
packed row ``[1, L]`` left by ``[w*j]`` for ``j < 8/w`` (broadcast to ``[8/w, L]``) and then right
by ``8 - w`` yields the indices in their original order when read row-major. So the packed
layout is *chunked*: byte ``i`` holds index ``i`` in its top bits, index ``L + i`` next, and so on.
"""

from __future__ import annotations

import numpy as np

PLANE_WIDTHS = (4, 2, 1)


def plane_widths(bits: int) -> tuple[int, ...]:
    """The plane widths whose sum is ``bits`` (8 is one plain uint8 plane)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    if bits == 8:
        return (8,)
    out, rest = [], bits
    for w in PLANE_WIDTHS:
        if rest >= w:
            out.append(w)
            rest -= w
    return tuple(out)


def padded_length(n: int, bits: int) -> int:
    """``n`` rounded up so every plane of ``bits`` packs whole bytes."""
    m = max(8 // w for w in plane_widths(bits))
    return -(-n // m) * m


def pack(indices: np.ndarray, bits: int) -> list[np.ndarray]:
    """Pack ``indices`` (< 2**bits, any shape, read flat) into uint8 planes, high bits first.

    Each plane of width ``w < 8`` is a ``[1, n_pad * w / 8]`` array; a width-8 plane is the flat
    indices. ``n_pad`` is :func:`padded_length` (the tail is zero-padded).
    """
    flat = np.asarray(indices).reshape(1, -1)
    return [p.reshape(-1) if w == 8 else p.reshape(1, -1)
            for w, p in zip(plane_widths(bits), pack_rows(flat, bits), strict=True)]


def pack_rows(indices: np.ndarray, bits: int) -> list[np.ndarray]:
    """Pack each row of the 2-D ``indices`` on its own, so that a ``Gather`` of rows reads whole
    packed rows: planes of shape ``[rows, 1, d_pad * w / 8]`` (``d_pad``: the row length
    :func:`padded_length` pads to), each row in :func:`pack`'s chunked layout (a width-8 plane is
    ``[rows, d]``). Unpacking a gathered ``[n, 1, L]`` broadcasts the shifts ``[8/w, 1]`` to
    ``[n, 8/w, L]``, which reads row-major as ``[n, d_pad]``."""
    rows = np.asarray(indices).astype(np.uint8)
    if rows.ndim != 2:
        raise ValueError(f"pack_rows takes a 2-D array, got shape {rows.shape}")
    if rows.size and int(rows.max()) >= 1 << bits:
        raise ValueError(f"an index exceeds {bits} bits")
    d_pad = padded_length(rows.shape[1], bits)
    rows = np.pad(rows, ((0, 0), (0, d_pad - rows.shape[1])))
    planes, shift = [], bits
    for w in plane_widths(bits):
        shift -= w
        part = (rows >> shift) & ((1 << w) - 1)
        if w == 8:
            planes.append(part.astype(np.uint8))
            continue
        m = 8 // w
        chunks = part.reshape(rows.shape[0], m, -1).astype(np.uint16)
        byte = np.zeros((rows.shape[0], chunks.shape[2]), np.uint16)
        for j in range(m):
            byte |= chunks[:, j] << (8 - w * (j + 1))
        planes.append(byte.astype(np.uint8)[:, None, :])
    return planes


def pack_bytes(indices: np.ndarray, bits: int) -> np.ndarray:
    """Pack each row of the 2-D ``indices`` (``bits`` in 1, 2, 4 or 8) into whole bytes, ``8 /
    bits`` neighbours a byte, the first in the top bits: ``[rows, d_pad * bits / 8]``. A byte read
    through :func:`byte_book` gives its ``8 / bits`` values in order."""
    rows = np.asarray(indices).astype(np.uint8)
    if bits not in (1, 2, 4, 8) or rows.ndim != 2:
        raise ValueError(f"pack_bytes takes 2-D indices of 1, 2, 4 or 8 bits, got {bits} bits, "
                         f"shape {rows.shape}")
    m = 8 // bits
    rows = np.pad(rows, ((0, 0), (0, -rows.shape[1] % m))).reshape(rows.shape[0], -1, m)
    byte = np.zeros(rows.shape[:2], np.uint16)
    for t in range(m):
        byte |= rows[:, :, t].astype(np.uint16) << (8 - bits * (t + 1))
    return byte.astype(np.uint8)


def byte_book(codebook: np.ndarray, bits: int) -> np.ndarray:
    """``[256 or len(codebook), 8 / bits]``: row ``v`` is the values of the indices byte ``v``
    packs (:func:`pack_bytes`); indices past the codebook (never stored) read its last value."""
    m = 8 // bits
    count = len(codebook) if bits == 8 else 256
    v = np.arange(count)[:, None]
    idx = (v >> (8 - bits * (np.arange(m) + 1))) & ((1 << bits) - 1)
    return np.asarray(codebook)[np.minimum(idx, len(codebook) - 1)]


def unpack(planes: list[np.ndarray], bits: int, n: int) -> np.ndarray:
    """The inverse of :func:`pack` in numpy, computed the way the ONNX graph computes it."""
    acc = np.zeros(padded_length(n, bits), np.int32)
    for w, plane in zip(plane_widths(bits), planes, strict=True):
        if w == 8:
            part = plane.reshape(-1).astype(np.int32)
        else:
            shifts = (w * np.arange(8 // w, dtype=np.uint8))[:, None]
            part = ((plane << shifts) >> np.uint8(8 - w)).astype(np.uint8).reshape(-1)
        acc = acc * (1 << w) + part.astype(np.int32)
    return acc[:n]


def packed_bytes(n: int, bits: int) -> int:
    """Bytes the packed planes of ``n`` indices occupy."""
    n_pad = padded_length(n, bits)
    return sum(n_pad * w // 8 for w in plane_widths(bits))
