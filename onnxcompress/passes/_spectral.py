"""Spectral front ends: a basis (an STFT's, a CQT's) or filterbank whose output reaches a ``Log``.

Their int8 error behaves unlike a layer's: a signed basis's sums cancel, so int8's rounding leaves
a floor ~48 dB under the loudest bin, and the log spreads that floor over the quiet bins; one
dynamic int8 scale per input zeroes the small values of a power spectrum the same way. Quantize
keeps such MatMuls out of dynamic int8 compute (``reaches_log``) and, with k-means, keeps a signed
basis float (stored float16: ``spectral_basis``).
"""

from __future__ import annotations

import onnx_ir as ir

from onnxcompress.weights import Weight

# Ops a value passes through, from a MatMul to a Log, without another compute op between
# (magnitudes, powers, sums over bins, the reshaping and joining of a CQT's octaves).
_TO_LOG = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Clip", "Abs", "Relu", "Identity", "Cast",
                     "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Pad", "Concat",
                     "Neg", "Sqrt", "Pow", "ReduceSum", "ReduceMean", "ReduceMax", "Split"})
LOG_PATH_DEPTH = 32  # basic-pitch's CQT kernels reach their Log 22 ops down
LOG_REASON = ("a signed basis whose output reaches a Log (an STFT/CQT front end): int8's error floor, "
              "~48 dB under the loudest bin, is what the log spreads over quiet ones; kept float "
              "(stored float16)")


def spectral_basis(w: Weight) -> bool:
    """Whether ``w`` is a signed basis (both signs: sums that cancel, as a DFT's or CQT's do)
    whose consumers' outputs reach a Log. A filterbank of non-negative weights on a power
    spectrum errs by its own relative error per bin, and is compressed as any weight."""
    if not any(reaches_log(u.node) for u in w.uses):
        return False
    array = w.numpy()
    return bool(array.min() < 0 < array.max())


def reaches_log(node: ir.Node, depth: int = LOG_PATH_DEPTH) -> bool:
    """Whether ``node``'s output reaches a Log through elementwise and shape ops only: a
    spectral front end (an STFT/CQT basis, a mel filterbank). Its int8 error is a floor ~48 dB
    under the loudest bin that the log spreads over quiet ones: kaldi's fbank with its MatMul in
    dynamic int8, feature cosine 0.946 at worst; basic-pitch's CQT kernels stored in int8, -1.8
    points of note F1 (batch 6)."""
    frontier, seen = [node], {id(node)}
    for _ in range(depth):
        following = []
        for n in frontier:
            for v in n.outputs:
                for c in v.consumers():
                    if c.op_type == "Log":
                        return True
                    if c.op_type in _TO_LOG and id(c) not in seen:
                        seen.add(id(c))
                        following.append(c)
        frontier = following
        if not frontier:
            return False
