"""Fidelity targets for auto mode: what "good enough" means, measured on the model's outputs.

Targets use the vocabulary of ``compare``: ``top1>=0.99`` (agreement of the arg-max class with the
original model), ``sequence>=0.99`` (samples whose every position keeps its arg-max: a decoded
string changes with one flipped position the decoding sees), ``cosine>=0.999`` (mean per-sample
cosine similarity), ``values>=0.9995`` (the cosine about each column's mean over the samples; a
series' rows about their own means where that spread is smaller),
``mask>=0.995`` (Dice of a probability map binarised at 0.5, a logit map at 0),
``keypoints>=0.99`` (a keypoint heat map's peaks that stay within a cell of the original's),
``spectrum>=0.997`` (the cosine of a waveform's centred log STFT magnitudes: generated audio),
``accuracy>=-0.5pt`` (against the data's labels, in points relative to the original's), each
optionally for one output (``logits:cosine>=0.9999``); several are joined with commas and must
all hold. In the API a target can also be a Python callable
``metric(original_outputs, compressed_outputs) -> float`` with a threshold (higher is better).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from onnxcompress._text import threshold_text
from onnxcompress.auto.default_targets import (
    COSINE_FLOOR,
    DEFAULT_TARGET,
    DEFAULT_TARGET_FRAMES,
    DEFAULT_TARGET_NON_CLASSIFIER,
    DEFAULT_TARGET_STATE,
    Outputs,
    applicable,
    default_target,
    spellable,
)
from onnxcompress.auto.flips import class_rate, flip_rate, flip_ratios, position_ratios, sequence_ratios
from onnxcompress.auto.measure import LOGITS, visible
from onnxcompress.auto.output_kinds import (
    MASK_THRESHOLD,
    SPECTRUM_FFT,
    as_classes,
    grid_positions,
    is_binary,
    series_spread,
    spectrum_cosine,
)
from onnxcompress.errors import ConfigError
from onnxcompress.validation.detections import (
    POSITIVE_SCORE,
    anchor_rows,
    anchor_score_rows,
    box_flip_ratios,
    decode_anchor_head,
    detection_columns,
    split_anchor_heads,
    split_head_ratios,
)
from onnxcompress.validation.keypoints import heatmap_layout, keypoint_ratios
from onnxcompress.validation.metrics import (
    spread_cosine,
)

METRICS = ("top1", "sequence", "cosine", "values", "accuracy", "mask", "detections", "keypoints",
           "spectrum", "within")
#: Metrics that count flips, held to an estimated flip rate (:func:`flip_rate`).
COUNTED = ("top1", "sequence", "accuracy", "detections", "keypoints", "within")

Metric = Callable[[Outputs, Outputs], float]

_TERM = re.compile(
    r"^\s*(?:(?P<output>[^=<>]+?)\s*:\s*)?(?P<metric>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:\(\s*(?P<arg>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\))?\s*>=\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>pt)?\s*$"
)


@dataclass(frozen=True)
class Criterion:
    """One ``[output:]metric>=threshold`` term (``output`` None: every output it applies to)."""

    metric: str
    threshold: float
    output: str | None = None
    tolerance: float | None = None  # within(TOL): the largest change a sample may keep

    @property
    def text(self) -> str:
        unit = "pt" if self.metric == "accuracy" else ""
        prefix = f"{self.output}:" if self.output else ""
        arg = "" if self.tolerance is None else f"({threshold_text(self.tolerance)})"
        return f"{prefix}{self.metric}{arg}>={threshold_text(self.threshold)}{unit}"


@dataclass
class Fidelity:
    """A model's measured fidelity: each criterion's value, whether all hold, and the worst margin
    (value - threshold; >= 0 when met), the "how far from the target" of an unmet target."""

    values: dict[str, float] = field(default_factory=dict)
    met: bool = False
    margin: float = float("-inf")

    def to_dict(self) -> dict[str, object]:
        return {"values": {k: round(v, 6) for k, v in self.values.items()}, "met": self.met,
                "margin": round(self.margin, 6)}


@dataclass(frozen=True)
class Target:
    """Criteria that must all hold, or one callable metric with its threshold."""

    criteria: tuple[Criterion, ...] = ()
    metric: Metric | None = None
    threshold: float = 0.0
    name: str = ""

    @property
    def text(self) -> str:
        if self.metric is not None:
            name = self.name or getattr(self.metric, "__name__", "metric")
            return f"{name}>={threshold_text(self.threshold)}"
        return ",".join(c.text for c in self.criteria)

    @property
    def needs_labels(self) -> bool:
        return any(c.metric == "accuracy" for c in self.criteria)

    def evaluate(self, original: Outputs, compressed: Outputs, labels: np.ndarray | None = None) -> Fidelity:
        """Measure the compressed outputs against the original ones (same samples, same order).
        Counts read a probability output's logits where both give them (``measure.LOGITS``)."""
        result = Fidelity()
        logits = {k: (original[k + LOGITS], compressed[k + LOGITS]) for k in original
                  if k + LOGITS in original and k + LOGITS in compressed}
        original, compressed = visible(original), visible(compressed)
        if self.metric is not None:
            value = float(self.metric(original, compressed))
            result.values[self.text] = value
            result.margin = value - self.threshold
            result.met = result.margin >= 0
            return result
        margins = []
        heads = split_anchor_heads(original) if any(c.metric == "detections" for c in self.criteria) else {}
        distinct = {h.scores: h for h in heads.values()}  # each head once (its outputs share it)
        scores = {k: (h.foreground(original), h.foreground(compressed)) for k, h in distinct.items()}
        pooled: dict[tuple[int, ...], int] = {}  # a head split per stride: its positives counted together
        for k, h in distinct.items():
            positives = int((scores[k][0].max(axis=-1) >= POSITIVE_SCORE).sum())
            pooled[h.family] = pooled.get(h.family, 0) + positives
        for c in self.criteria:
            names = [c.output] if c.output else applicable(c.metric, original)
            for name in names:
                if name not in original or name not in compressed:
                    raise ConfigError(f"target {c.text}: the model has no output '{name}'.",
                                      hint=f"outputs: {', '.join(original)}")
                split = heads.get(name) if c.metric == "detections" else None
                head = None if split is None else (*scores[split.scores], name in split.scores,
                                                   pooled[split.family])
                value = _measure(c.metric, original[name], compressed[name], labels, c.text, head,
                                 logits.get(name) if c.metric in COUNTED else None, c.tolerance)
                key = c.text if c.output or len(names) == 1 else f"{name}:{c.text}"
                result.values[key] = value
                margins.append(value - c.threshold)
        result.margin = min(margins) if margins else 0.0
        result.met = result.margin >= 0
        return result


def parse_target(expr: str | Target | None, outputs: Outputs | None = None, *,
                 metric: Metric | None = None, threshold: float | None = None,
                 class_scores: Sequence[str] = (), token_inputs: bool = False,
                 image_inputs: bool = True, plain: Sequence[str] = (),
                 frames: Sequence[str] = (), colour_inputs: bool = False,
                 heatmaps: Collection[str] | None = None, longest_input: int = 0,
                 states: Collection[str] = (), encoded: Collection[str] = (),
                 decoder: bool = False) -> Target:
    """``expr`` (``"top1>=0.99,cosine>=0.999"``) as a :class:`Target`; None gives the default
    (top-1 agreement where an output looks like class scores, else cosine >= 0.999), which needs
    ``outputs`` (a sample of the original model's outputs) to decide. With ``metric``, a callable
    target with ``threshold``. Raises :class:`ConfigError` (one line) for a bad expression."""
    if metric is not None:
        if threshold is None:
            raise ConfigError("a callable target needs a threshold.", hint="target_threshold=0.99")
        return Target(metric=metric, threshold=float(threshold), name=getattr(metric, "__name__", "metric"))
    if isinstance(expr, Target):
        return expr
    outputs = None if outputs is None else visible(outputs)
    if expr is None or not str(expr).strip():
        expr = default_target(outputs, class_scores, token_inputs=token_inputs, image_inputs=image_inputs,
                              plain=plain, colour_inputs=colour_inputs, heatmaps=heatmaps,
                              longest_input=longest_input, states=states, decoder=decoder)
        held = applicable("top1", outputs or {}) if DEFAULT_TARGET in expr.split(",") else []
        expr = ",".join([expr] + [f"{k}:{DEFAULT_TARGET_FRAMES}" for k in frames if spellable(k)
                                  and (f"{k}:top1>=" in expr or k in held)])
        expr = _with_cosine_floor(_held_as_states(expr, outputs or {}, encoded), held)
        if not expr:  # integer outputs only (labels an ArgMax gives): nothing a target reads
            raise ConfigError(f"auto: no output is float ({', '.join(outputs or {})}): nothing to measure.",
                              hint="auto.search(..., target=callable, target_threshold=x), or one setting")
    criteria = []
    for term in str(expr).split(","):
        m = _TERM.match(term)
        if m is None:
            raise ConfigError(f"target: cannot read '{term.strip()}'.",
                              hint="write METRIC>=VALUE, e.g. top1>=0.99, cosine>=0.999, "
                                   "accuracy>=-0.5pt or OUTPUT:cosine>=0.999, joined by commas")
        name, value = m["metric"].lower(), float(m["value"])
        if name not in METRICS:
            raise ConfigError(f"target: unknown metric '{m['metric']}' in '{term.strip()}'.",
                              hint=f"metrics: {', '.join(METRICS)}")
        if (name == "within") != (m["arg"] is not None) or name == "within" and float(m["arg"]) <= 0:
            raise ConfigError(f"target: '{term.strip()}': within takes the largest change a sample may "
                              "keep, a positive number, and only within takes one.",
                              hint="e.g. within(30)>=0.99: 99% of samples within 30 of the original's")
        if name in ("top1", "sequence", "cosine", "values", "mask", "keypoints", "spectrum", "within") \
                and not -1.0 <= value <= 1.0:
            raise ConfigError(f"target: {name} is a fraction in [0, 1], got {value:g} in '{term.strip()}'.",
                              hint=f"e.g. {name}>=0.99")
        if (name == "accuracy") != bool(m["unit"]):
            raise ConfigError(f"target: '{term.strip()}': accuracy is given in points ('pt'), "
                              "relative to the original model, and only accuracy is.",
                              hint="e.g. accuracy>=-0.5pt")
        criteria.append(Criterion(name, value, m["output"].strip() if m["output"] else None,
                                  None if m["arg"] is None else float(m["arg"])))
        if outputs and not m["output"] and not applicable(name, outputs):
            # an unnamed term no output is read by held nothing: every plan met it (a keyword
            # spotter's [N, 1, 35] under top1>=0.995 went to 2 bits, 37.5% of its words kept)
            raise ConfigError(f"target: no output of the model is one '{term.strip()}' reads "
                              f"({_READS.get(name, 'float values')}).",
                              hint=f"name the output: OUTPUT:{term.strip()}; outputs: {', '.join(outputs)}")
    return Target(tuple(criteria))


#: What an unnamed term reads (``applicable``), for its error.
_READS = {"top1": "class scores [N, C]", "accuracy": "class scores [N, C]", "sequence": "scores per position",
          "detections": "detection lists or anchor heads",
          "keypoints": "keypoint heat maps [N, K, H, W] or [N, H, W, K]",
          "spectrum": "waveforms [N, T] or [N, 1, T]"}


def _with_cosine_floor(expr: str, held: Sequence[str]) -> str:
    """``expr`` with compare's default cosine floor (COSINE_FLOOR) on every output it holds by a
    count (``held``: those an unnamed top1 term reads) and no cosine of its own: a count alone let
    auto move a botnet detector's p(bot) 0.97 -> 0.66 at 10.6x with every arg-max kept, and compare
    (which holds every output's cosine at 0.99 too) failed the file."""
    terms = [m for t in expr.split(",") if (m := _TERM.match(t))]
    named = {m["output"].strip() for m in terms if m["output"]}
    # in the expression's order (a set's order of strings changes from run to run, and the text
    # is recorded in the file's metadata)
    counted = [m["output"].strip() for m in terms
               if m["output"] and m["metric"] in ("top1", "sequence", "keypoints")]
    plain = {m["output"].strip() for m in terms if m["output"] and m["metric"] in ("cosine", "values")}
    floors = [k for k in dict.fromkeys([*counted, *(k for k in held if k not in named)])
              if k not in plain and spellable(k)]
    return ",".join([expr] + [f"{k}:cosine>={COSINE_FLOOR:g}" for k in floors])


def _held_as_states(expr: str, outputs: Outputs, encoded: Collection[str]) -> str:
    """``expr`` with the ``encoded`` outputs it holds by plain cosine held as states are."""
    terms = expr.split(",")
    if terms == [DEFAULT_TARGET_NON_CLASSIFIER] and any(k in encoded for k in outputs):
        if not all(map(spellable, outputs)):
            return expr
        terms = [f"{k}:{DEFAULT_TARGET_NON_CLASSIFIER}" for k in applicable("cosine", outputs)]
    plain = {f"{k}:{DEFAULT_TARGET_NON_CLASSIFIER}": f"{k}:{DEFAULT_TARGET_STATE}" for k in encoded}
    return ",".join(plain.get(t, t) for t in terms)


def _unread(text: str, a: np.ndarray, kind: str, hint: str) -> ConfigError:
    return ConfigError(f"target {text}: the output is not {kind} (shape {list(a.shape)}).", hint=hint)


def _kept(ratios: np.ndarray, count: int | None = None) -> float:
    """The share of samples kept, estimated from their flip ratios (``flip_rate``)."""
    return 1.0 - flip_rate(ratios, count) if len(ratios) else 1.0


def _measure(metric: str, a: np.ndarray, b: np.ndarray, labels: np.ndarray | None, text: str,
             head: tuple[np.ndarray, np.ndarray, bool, int] | None = None,
             logits: tuple[np.ndarray, np.ndarray] | None = None, tolerance: float | None = None) -> float:
    """``head``: for an output of a split anchor head (``split_anchor_heads``), its object scores
    in the original and compressed models (``SplitHead.foreground``), whether this output is one
    of its score outputs, and the positive anchors of its family (a count's denominator). ``logits``: the
    logits behind a probability output in both (a count reads its margins on them)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:  # a length the model computes changed (Piper's durations): not kept
        return -100.0 if metric == "accuracy" else -1.0 if metric in ("cosine", "values") else 0.0
    if metric == "within":  # each sample's largest change against the tolerance: past 1 it is out
        return _kept(np.abs(b - a).reshape(len(a), -1).max(axis=1, initial=0.0) / float(tolerance or 1.0))
    if metric in ("cosine", "values"):
        x, y = a.reshape(len(a), -1), b.reshape(len(b), -1)
        values = len(x) > 1 and (x.shape[1] == 1 or metric == "values")  # about each column's mean
        spread = float(np.square(x - x.mean(axis=0)).sum()) if values else 0.0
        if spread > 0 and metric == "values":
            spread = min(spread, series_spread(x))
        if spread > 0:
            # One value per sample (a regressor's prediction): its cosine is 1 whatever the
            # value. Across the samples instead: 1 - |b - a|^2 / (2 |a - mean a|^2), the cosine's
            # second-order form about the original's spread (skl2onnx's MLP surrogate: k-means 4
            # moved predictions by up to 12% of their range and "verified" at cosine 1).
            return float(spread_cosine(float(np.square(y - x).sum()), spread))
        dot = (x * y).sum(axis=1)
        norm = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
        cos = np.where(norm > 0, dot / np.maximum(norm, 1e-300), (np.abs(x - y).max(axis=1) == 0) * 1.0)
        return float(cos.mean())
    if metric == "spectrum":
        if a.ndim not in (2, 3) or a.shape[-1] < SPECTRUM_FFT:
            raise _unread(text, a, "a waveform", "spectrum>= reads [N, T] or [N, C, T] of "
                          f"{SPECTRUM_FFT}+ samples; use cosine>=... here")
        return spectrum_cosine(a, b)
    if metric == "keypoints":  # each present peak of the original's a sample
        axis = heatmap_layout(a)
        if axis is None:
            raise _unread(text, a, "a keypoint heat map", "keypoints>= reads [N, K, H, W] or "
                          "[N, H, W, K] maps with one peak a channel; use cosine>=... here")
        return _kept(keypoint_ratios(a, b, axis))
    if metric == "detections" and head is not None:  # an SSD/RetinaFace output: its positive anchors
        scores_a, scores_b, is_scores, positives = head
        rows = (None, None) if is_scores else (anchor_rows(a), anchor_rows(b))
        ratios = split_head_ratios(scores_a, scores_b, *rows)
        # of every positive anchor of the head's strides: YuNet's stride 16 has 4 in 24 pictures
        return _kept(ratios, max(len(ratios), positives))
    if metric == "detections":
        columns = detection_columns(a)
        rows = anchor_score_rows(a) if columns is None else None
        if rows is not None:  # a raw head (slider_seg's YOLO11-seg): judged by the boxes it gives
            a, b, columns = decode_anchor_head(a, rows), decode_anchor_head(b, rows), (4, 5)
        if columns is None:
            raise _unread(text, a, "a detection list", "detections>= reads [N, K, 6] rows "
                          "x1, y1, x2, y2, score, class sorted by score")
        # each box the original reports is a sample, held to an estimated loss rate as a
        # class is to its flip rate (24 images x ~1 box: F1 1.0 on them let eval lose 1 in 28)
        return _kept(box_flip_ratios(a, b, columns))
    if logits is not None and np.shape(logits[0]) == a.shape == np.shape(logits[1]):
        x, y = (np.asarray(v, dtype=np.float64) for v in logits)
        # a sigmoid's probability p as two classes' logits [0, log(p / (1 - p))]
        a, b = (np.concatenate([np.zeros((len(v), 1)), v.reshape(len(v), 1)], 1) for v in (x, y)) \
            if is_binary(a) else (x, y)
    elif is_binary(a):
        a, b = as_classes(a), as_classes(np.clip(b, 0.0, 1.0))
    if metric == "mask":  # Dice of the binarised maps, every sample and position pooled
        threshold = MASK_THRESHOLD if a.min() >= 0 else 0.0  # probabilities at 0.5, logits at 0
        x, y = a > threshold, b > threshold
        both, either = int(np.sum(x & y)), int(np.sum(x)) + int(np.sum(y))
        return 2.0 * both / either if either else 1.0
    if a.ndim < 2 or a.shape[-1] < 2:
        raise _unread(text, a, "class scores", "use cosine>=... for this output, or name a classifier output")
    if metric == "sequence":  # samples on axis 0: one flip that changes the decoding fails its sample
        return 1.0 - flip_rate(sequence_ratios(a, b))
    if metric == "top1" and grid_positions(a):  # each pixel, and each class on its own
        ratio, top = position_ratios(a.reshape(-1, a.shape[-1]), b.reshape(-1, a.shape[-1]))
        del a, b  # an image's class map: 2 x 8 bytes a class and pixel
        return 1.0 - max(flip_rate(ratio.max(axis=1)), class_rate(ratio, top))
    rows = (-1, 1, a.shape[-1])  # top1 and accuracy count every position of every sample
    ratios = flip_ratios(a.reshape(rows), b.reshape(rows))
    if metric == "top1":
        return 1.0 - flip_rate(ratios)
    if labels is None:
        raise ConfigError(f"target {text}: the data has no labels.",
                          hint="store them as 'labels' in the .npz, or use top1>=...")
    ta, tb = a.reshape(-1, a.shape[-1]).argmax(axis=1), b.reshape(-1, b.shape[-1]).argmax(axis=1)
    y = np.asarray(labels).reshape(-1)
    if y.size != ta.size:
        raise ConfigError(f"target {text}: {y.size} labels for {ta.size} predictions.")
    # a point is lost where a correct prediction flips: the estimated rate of those
    lost = flip_rate(ratios[ta == y], len(y))
    return float(min((tb == y).mean() - (ta == y).mean(), -lost) * 100.0)
