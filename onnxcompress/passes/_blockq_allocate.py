"""Mixed bits per layer for the block quantization pass, within a size budget.

Each layer has two options, the pass's width and 8 bits (same blocks, same scales), priced by
:func:`onnxcompress.blockwise.bytes_on_disk` and by the relative squared weight error of
round-to-nearest at that width. One sensitivity probe through onnxruntime
(:func:`onnxcompress.passes._bit_allocation.probe_sensitivity`: each layer alone rounded at the
pass's width, every other weight exact) turns weight error into output error, and
:func:`onnxcompress.passes._bit_allocation.allocate` spends the budget on the layers where 8 bits
saves the most output error per byte (in a language model: the tied embedding/head and the first
and last blocks, usually).

The budget is an average code width: ``budget_bits`` between ``bits`` and 8 interpolates the
bytes of uniform ``bits`` and uniform 8 (4.5 with 4-bit blocks: an eighth of the 4->8 bytes).
Rounding for pricing is always RTN (cheap and the same for every layer); the chosen width is then
quantized with the pass's method (GPTQ lowers both widths' errors alike).
"""

from __future__ import annotations

import collections
import functools
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxcompress import blockwise
from onnxcompress.passes import _bit_allocation
from onnxcompress.passes.base import PassContext, PassResult

if TYPE_CHECKING:
    import onnx_ir as ir

    from onnxcompress.passes.block_quantization import _Layer

HIGH_BITS = 8


def allocate_bits(
    model: ir.Model,
    layers: list[_Layer],
    *,
    bits: int,
    budget_bits: float,
    block_size: int,
    symmetric: bool,
    scale_dtype: dict[str, str],
    probe_samples: int,
    context: PassContext,
    result: PassResult,
) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """Bits per layer label (missing: ``bits``) and LayerStat extras per label.

    ``scale_dtype`` maps a label to the scale type its blocks are stored with.
    """
    if bits >= HIGH_BITS or budget_bits <= bits:
        return {}, {}
    if context.calibration is None:
        result.note("mixed bits need calibration data (--calibration): every layer gets "
                    f"{bits} bits")
        return {}, {}
    start = time.perf_counter()
    choices: list[_bit_allocation.LayerChoices] = []
    degraded: dict[str, np.ndarray] = {}
    linked: dict[str, dict[str, np.ndarray]] = {}
    low_error: dict[str, float] = {}
    for layer in layers:
        label = layer.weight.label
        rows, cols = layer.matrix.shape
        options = []
        for width in (bits, HIGH_BITS):
            spec = blockwise.BlockSpec(width, block_size, symmetric, scale_dtype[label])
            qt = blockwise.quantize_rtn(layer.matrix, spec)
            nbytes = blockwise.bytes_on_disk(rows, cols, spec)
            options.append(_bit_allocation.Option(width, nbytes, qt.relative_error(layer.matrix) ** 2))
            if width == bits:
                low_error[label] = options[-1].weight_error
                decoded = qt.dequantize()
                stored = decoded if layer.uses[0].as_stored else decoded.T
                value = np.ascontiguousarray(stored, dtype=layer.weight.numpy().dtype)
                degraded[label] = value
                # The tied copies are the same matrix, so they are degraded with it.
                linked[label] = {c.label: _oriented(decoded, layer.matrix, c.numpy())
                                 for c in layer.copies}
        choices.append(_bit_allocation.LayerChoices(label, options))
    feeds = context.calibration.take(probe_samples)
    weighed = _bit_allocation.weigh_layers(model, choices, degraded, low_error, feeds, context,
                                           result, kept_bits=bits, what="mixed bits", linked=linked)
    if weighed is None:
        return {}, {}
    choices, probe = weighed
    uniform = functools.partial(_bit_allocation.uniform_bytes, choices)

    fraction = (budget_bits - bits) / (HIGH_BITS - bits)
    budget = uniform(bits) + fraction * (uniform(HIGH_BITS) - uniform(bits))
    chosen = _bit_allocation.allocate(choices, budget)
    result.metrics.update(
        allocation="sensitivity", allocation_budget_bytes=round(budget),
        allocation_estimated_bytes=sum(o.nbytes for o in chosen.values()),
        allocated_bits=dict(sorted(collections.Counter(o.bits for o in chosen.values()).items())),
        probe_samples=probe.samples, allocation_seconds=round(time.perf_counter() - start, 2))
    extras = _bit_allocation.allocation_extras(choices, chosen, probe)
    high = [label for label, o in chosen.items() if o.bits == HIGH_BITS]
    if high:
        result.note(f"{len(high)} of {len(chosen)} layers at {HIGH_BITS} bits within the budget of "
                    f"{budget_bits:g} bits: {', '.join(high[:6])}{' ...' if len(high) > 6 else ''}")
    return {label: o.bits for label, o in chosen.items()}, extras


def _oriented(decoded: np.ndarray, matrix: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """``decoded`` ([rows, cols] like ``matrix``) as a copy stored as ``stored`` holds it."""
    as_matrix = stored.shape == matrix.shape and np.array_equal(stored, matrix)
    return np.ascontiguousarray(decoded if as_matrix else decoded.T, dtype=stored.dtype)
