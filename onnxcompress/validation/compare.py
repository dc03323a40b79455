"""Run an original and a compressed model on the same feeds and say whether they still agree.

:func:`compare_models` streams the feeds (user data or seeded synthetic inputs) through both
models in onnxruntime, accumulates per-output metrics (:mod:`onnxcompress.validation.metrics`),
checks them against tolerances (:mod:`onnxcompress.validation.tolerance`) and returns a
:class:`ComparisonReport`: one :class:`OutputComparison` per output, optionally the layer-wise
localisation and the latency ratio. The report renders as a table or JSON, never a bare bool.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxcompress.data import FREED_DIMS_KEY, Feed, FeedSource, feed_source
from onnxcompress.errors import ConfigError, DataError, RuntimeUnavailableError
from onnxcompress.graph.maps import map_rows
from onnxcompress.graph.outputs import feature_outputs, plain_output_names, state_outputs
from onnxcompress.memory import READING_SAMPLES, compare_session_memory
from onnxcompress.model import load_model, save_model
from onnxcompress.runtime import create_session
from onnxcompress.synthetic import synthetic_feeds
from onnxcompress.tokens import kept_positions, padding_mask
from onnxcompress.validation.detections import head_rows
from onnxcompress.validation.keypoints import heatmap_heads
from onnxcompress.validation.latency import DEFAULT_LATENCY_RUNS, LatencyResult, measure_latency
from onnxcompress.validation.layers import DEFAULT_MEMORY_BUDGET, LayerReport, compare_layers
from onnxcompress.validation.metrics import TensorStats, ctc_outputs, has_image_input, picture_outputs
from onnxcompress.validation.render import json_safe, render_report
from onnxcompress.validation.tolerance import (
    DEFAULT_SYNTHETIC_TOLERANCE,
    Tolerance,
    default_tolerance,
    is_default,
)

logger = logging.getLogger(__name__)

DEFAULT_SYNTHETIC_SAMPLES = 16
DEFAULT_TOP_K = 5


@dataclass
class Check:
    """One criterion applied to one output."""

    criterion: str  # "allclose", "min_cosine", "max_rel_error", "min_top1", "exact", "non-finite", ...
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class OutputComparison:
    """How one output of the compressed model compares with the original's, over every sample."""

    name: str
    dtype: str | None
    shape: tuple[int, ...] | None  # of the first sample
    kind: str  # "float", "exact" (non-float, compared element for element) or "missing"
    samples: int
    elements: int
    passed: bool
    checks: list[Check]
    tolerance: Tolerance
    max_abs: float | None = None
    mean_abs: float | None = None
    rel_l2: float | None = None
    cosine: float | None = None
    snr_db: float | None = None
    outside: int | None = 0  # elements outside atol/rtol (float; None: no allclose check) or unequal
    nan_original: int = 0
    inf_original: int = 0
    nan_compressed: int = 0
    inf_compressed: int = 0
    nonfinite_mismatch: int = 0
    classifier: bool = False
    rows: int = 0
    top1_agreement: float | None = None
    topk_agreement: float | None = None
    k: int | None = None
    labelled: int = 0
    accuracy_original: float | None = None
    accuracy_compressed: float | None = None
    detection_f1: float | None = None
    detection_unit: str | None = None  # what the F1 counts: reported boxes, positive anchor scores
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("checks", "tolerance")}
        d["shape"] = list(self.shape) if self.shape is not None else None
        d["tolerance"] = self.tolerance.to_dict()
        d["checks"] = [c.to_dict() for c in self.checks]
        return d


@dataclass
class ComparisonReport:
    """The result of :func:`compare_models`; ``passed`` is True when every output is within
    its tolerance."""

    original: str
    compressed: str
    data: str
    samples: int
    outputs: list[OutputComparison]
    layers: LayerReport | None = None
    latency: LatencyResult | None = None
    memory: dict[str, Any] | None = None  # onnxcompress.memory.compare_session_memory
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    @property
    def failed_outputs(self) -> list[str]:
        return [o.name for o in self.outputs if not o.passed]

    def output(self, name: str) -> OutputComparison:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "passed": self.passed,
                "original": self.original,
                "compressed": self.compressed,
                "data": self.data,
                "samples": self.samples,
                "failed_outputs": self.failed_outputs,
                "outputs": [o.to_dict() for o in self.outputs],
                "layers": self.layers.to_dict() if self.layers is not None else None,
                "latency": self.latency.to_dict() if self.latency is not None else None,
                "memory": self.memory,
                "notes": list(self.notes),
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render(self, *, max_layers: int = 30) -> str:
        return render_report(self.to_dict(), max_layers=max_layers)


# -- running both models ------------------------------------------------------------------------


def compare_models(
    original: Any,
    compressed: Any,
    data: Any = None,
    *,
    tolerance: Tolerance | Mapping[str, float] | None = None,
    per_output: Mapping[str, Tolerance | Mapping[str, float]] | None = None,
    classifiers: Iterable[str] = (),
    top_k: int = DEFAULT_TOP_K,
    labels: np.ndarray | None = None,
    label_key: str | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    samples: int | None = None,
    seed: int = 0,
    layers: bool = False,
    layers_memory: int = DEFAULT_MEMORY_BUDGET,
    latency: bool = False,
    latency_runs: int = DEFAULT_LATENCY_RUNS,
    threads: int | None = None,
    memory: bool | None = None,
) -> ComparisonReport:
    """Compare ``compressed`` with ``original`` (paths, ``onnx.ModelProto`` or ``ir.Model``).

    ``data``: an ``.npz`` path, a folder of ``.npz``, a ``CalibrationDataReader``, an iterable of
    feed dicts or a :class:`FeedSource`; None for ``samples`` (default 16) seeded synthetic feeds
    shaped by ``shapes`` where the model's dimensions are dynamic. ``tolerance`` applies to every
    output, ``per_output`` replaces it for the outputs it names. ``classifiers`` declares
    outputs whose last axis holds class scores (rank-2 outputs are detected); ``labels`` (or the
    data's ``labels`` array, or ``label_key`` in an ``.npz``) adds the accuracy of both models.
    ``layers`` adds the layer-wise localisation (exposing at most ``layers_memory`` bytes of
    intermediate tensors per model and run), ``latency`` the median time per inference and its
    spread. ``memory`` (default: with ``latency``) adds the onnxruntime session memory of both
    models on the first sample (:mod:`onnxcompress.memory`, a child process each).
    """
    default_tol = _as_tolerance(tolerance, "tolerance") or Tolerance()
    overrides = {k: _as_tolerance(v, f"tolerance for output '{k}'") for k, v in (per_output or {}).items()}
    if top_k < 1:
        raise ConfigError(f"top_k={top_k}: must be >= 1.")
    if samples is not None and samples < 1:
        raise ConfigError(f"samples={samples}: must be >= 1.")
    model_a, label_a, source_a = _load(original, "original")
    model_b, label_b, source_b = _load(compressed, "compressed")
    feeds, synthetic = _feeds(model_a, data, samples=samples, seed=seed, shapes=shapes, label_key=label_key)
    notes: list[str] = []
    if shapes and not synthetic:
        notes.append("--shape applies to synthetic inputs only; the data's shapes were used.")

    session_a = create_session(source_a, threads=threads, label=f"the original model {label_a}")
    session_b = create_session(source_b, threads=threads, label=f"the compressed model {label_b}")
    inputs_a = [i.name for i in session_a.get_inputs()]
    inputs_b = {i.name for i in session_b.get_inputs()}
    # A compressed model may take another float type (a float16 conversion without kept I/O types).
    casts_b = {
        i.name: np.dtype(_ORT_FLOATS[i.type])
        for i in session_b.get_inputs()
        if i.type in _ORT_FLOATS and _ORT_FLOATS[i.type] != _ORT_FLOATS.get(_input_type(session_a, i.name))
    }
    extra = sorted(inputs_b - set(inputs_a))
    if extra:
        raise DataError(
            f"the compressed model {label_b} needs input(s) {', '.join(extra)} that the original "
            f"{label_a} does not have; the two models cannot be fed the same data."
        )
    names_a = [o.name for o in session_a.get_outputs()]
    names_b = {o.name for o in session_b.get_outputs()}
    common = [n for n in names_a if n in names_b]
    unknown = set(overrides) - set(names_a)
    if unknown:
        raise ConfigError(
            f"tolerance given for unknown output(s) {', '.join(sorted(unknown))}; the original's "
            f"outputs are {', '.join(names_a)}."
        )
    classifiers = set(classifiers)
    bad = classifiers - set(names_a)
    if bad:
        raise ConfigError(
            f"--classifier names unknown output(s) {', '.join(sorted(bad))}; the original's outputs "
            f"are {', '.join(names_a)}."
        )
    extra_outputs = sorted(names_b - set(names_a))
    if extra_outputs:
        notes.append(f"outputs of the compressed model only, not compared: {', '.join(extra_outputs)}.")

    tolerances = {n: _resolve(overrides.get(n) or default_tol, synthetic) for n in names_a}
    if synthetic and any(t is DEFAULT_SYNTHETIC_TOLERANCE for t in tolerances.values()):
        notes.append("synthetic inputs: the default checks cosine only (random inputs put classes "
                     "in near-ties); pass --data to check top-1 agreement too.")
    # shaped like class scores, but a recurrent cell's state or a feature another layer reads;
    # outputs that may be keypoint heat maps
    states, heads = state_outputs(model_a) | feature_outputs(model_a), heatmap_heads(model_a)
    stats = {
        n: TensorStats(
            atol=tolerances[n].atol,
            rtol=tolerances[n].rtol,
            classifier=True if n in classifiers else False if n in states else None,
            heatmaps=n in heads,
            top_k=top_k,
        )
        for n in common
    }
    label_array = _class_indices(labels if labels is not None else feeds.labels)
    cursors = dict.fromkeys(common, 0)
    first_feed = first_b = None  # the first sample as each model takes it (latency)
    want_memory = latency if memory is None else memory
    count, kept = 0, []  # the samples session memory is read after
    for index, feed in enumerate(feeds):
        feed_b = _feed_for(feed, inputs_b, casts_b)
        if want_memory and len(kept) < READING_SAMPLES:
            kept.append((feed, feed_b))
        outs_a = _run(session_a, names_a, feed, index, "original", label_a, feeds, synthetic)
        if first_feed is None:  # a soft picture out is held closer by default (PICTURE_MIN_COSINE)
            first_feed, first_b = feed, feed_b
            first, image = dict(zip(names_a, outs_a, strict=True)), has_image_input(feed)
            heads = set(head_rows(first, image))
            for n in picture_outputs({k: v for k, v in first.items() if k not in heads}, image):
                if (overrides.get(n) or default_tol).empty:
                    tolerances[n] = default_tolerance(synthetic=synthetic, picture=True)
            # no arg-max over box offsets, pooled features or a graph's readout
            for n in (heads | set(plain_output_names(model_a, first))) - classifiers:
                stats[n].classifier = False
            for n, axis in ctc_outputs(model_a, first, feed).items():  # strings, not rows of scores
                if n in stats and stats[n].classifier is None:
                    stats[n].sequence_axis, stats[n].classifier = axis, True
        # (no common output: onnxruntime runs them all, for an empty list too; none is kept)
        outs_b = _run(session_b, common or None, feed_b, index, "compressed", label_b, feeds, synthetic,
                      label_a)[: len(common)]
        mask = padding_mask([feed])  # a token model's padded positions are not compared
        for name, a, b in zip(common, (outs_a[names_a.index(n)] for n in common), outs_b, strict=True):
            if (real := kept_positions(a, feed, mask)) is not None and np.shape(b)[:2] == np.shape(a)[:2] \
                    and stats[name].sequence_axis is None:
                if not stats[name].masked:
                    stats[name].notes.append(f"compared where the padding mask '{mask}' is 1")
                a, b, stats[name].masked = real[None], kept_positions(b, feed, mask)[None], True
            lab = None
            if label_array is not None and np.ndim(a) >= 1 and a.shape[-1] > 1:
                rows = a.size // a.shape[-1]
                if cursors[name] + rows <= len(label_array):
                    lab = label_array[cursors[name] : cursors[name] + rows]
                cursors[name] += rows
            stats[name].add(a, b, lab)
        count += 1
        logger.debug("compared sample %d", index)
    if count == 0:
        raise DataError(f"{feeds.description}: no samples to compare.")

    outputs = []
    for name in names_a:
        if name not in stats:
            outputs.append(_missing(name, tolerances[name]))
            continue
        out = _evaluate(name, stats[name], tolerances[name])
        if label_array is not None and out.classifier and cursors[name] != len(label_array):
            out.notes.append(
                f"{len(label_array)} labels for {cursors[name]} prediction rows"
                + ("; accuracy covers the labelled rows only" if out.labelled else "; no accuracy")
            )
        outputs.append(out)
    if label_array is not None and not any(o.classifier for o in outputs):
        notes.append("labels given but no output looks like class scores; use --classifier NAME.")

    report = ComparisonReport(original=label_a, compressed=label_b, data=feeds.description, samples=count,
                              outputs=outputs, notes=notes)
    if layers:
        report.layers = compare_layers(
            model_a,
            model_b,
            feeds,
            compressed_inputs=inputs_b,
            casts=casts_b,
            threads=threads,
            memory_budget=layers_memory,
        )
    if latency and first_b is not None:
        report.latency = measure_latency(session_a, session_b, first_feed, first_b, runs=latency_runs,
                                         threads=threads)
    if want_memory and kept:
        report.memory = _session_memory(source_a, source_b, kept, threads)
    return report


def _session_memory(source_a: Any, source_b: Any, kept: list[tuple[Feed, Feed]], threads: int | None) -> dict:
    """Both models' session memory after the samples ``kept``, read from files (models saved first)."""
    with tempfile.TemporaryDirectory(prefix="onnxcompress-compare-") as tmp:
        paths = []
        for role, source in (("original", source_a), ("compressed", source_b)):
            if isinstance(source, ir.Model):
                path = Path(tmp) / f"{role}.onnx"
                save_model(source, path)
                source = path
            paths.append(source)
        feeds_a, feeds_b = (list(f) for f in zip(*kept, strict=True))
        return compare_session_memory(paths[0], paths[1], feeds_a, feeds_b, threads=threads)


# onnxruntime logs a failing run to stderr itself before raising; the error we raise says it all.
_QUIET_RUN = ort.RunOptions()
_QUIET_RUN.log_severity_level = 4


def _ort_message(error: BaseException) -> str:
    """onnxruntime's message without source paths and C++ signatures."""
    lines = str(error).strip().splitlines()
    if not lines:
        return type(error).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", lines[0])
    text = re.sub(r"/onnxruntime_src/\S+:\d+\s*", "", text)
    text = re.sub(r"onnxruntime::[\w:]+\([^)]*\)\s*", "", text)
    return text[:300]


def _class_indices(labels: Any) -> np.ndarray | None:
    """Labels flattened to one class index per prediction row, in sample order."""
    return None if labels is None else np.asarray(labels).reshape(-1)


_ORT_FLOATS = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


def _input_type(session: Any, name: str) -> str | None:
    return next((i.type for i in session.get_inputs() if i.name == name), None)


def _feed_for(feed: Mapping[str, np.ndarray], names: set[str], casts: Mapping[str, np.dtype]) -> dict:
    """The part of ``feed`` a model takes, cast where its float inputs have another precision."""
    return {k: (v.astype(casts[k]) if k in casts else v) for k, v in feed.items() if k in names}


def _resolve(tol: Tolerance, synthetic: bool) -> Tolerance:
    return default_tolerance(synthetic=synthetic) if tol.empty else tol.resolved()


def _as_tolerance(value: Any, where: str) -> Tolerance | None:
    if value is None or isinstance(value, Tolerance):
        return value
    if isinstance(value, Mapping):
        return Tolerance.from_dict(dict(value), where=where)
    raise ConfigError(f"{where}: expected a Tolerance or a dict such as {{'atol': 1e-3}}.")


def _load(model: Any, role: str) -> tuple[ir.Model, str, Any]:
    """(ir model, label for messages, what to hand onnxruntime)."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        loaded = load_model(path)
        # Input dims written as 0 mean "any size" to us but "size 0" to onnxruntime: hand it the
        # loaded model, whose dims were made dynamic, instead of the file.
        return loaded, str(path), (loaded if loaded.meta.get(FREED_DIMS_KEY) else path)
    if isinstance(model, (onnx.ModelProto, ir.Model)):
        loaded = load_model(model)
        return loaded, f"<{role} model in memory>", loaded
    raise ConfigError(
        f"{role} model: expected a path, an onnx.ModelProto or an ir.Model, got {type(model).__name__}."
    )


def _feeds(
    model: ir.Model,
    data: Any,
    *,
    samples: int | None,
    seed: int,
    shapes: Mapping[str, tuple[int, ...]] | None,
    label_key: str | None,
) -> tuple[FeedSource, bool]:
    if data is None:
        return synthetic_feeds(model, samples or DEFAULT_SYNTHETIC_SAMPLES, seed=seed, shapes=shapes), True
    # Only the samples compared are read (and checked: shapes, dtypes, NaN/Inf).
    source = feed_source(data, model, labels=label_key, check=False)
    if samples is not None:
        source = source.take(samples)
    return source.check(), False


def _run(
    session: Any,
    names: list[str] | None,
    feed: dict[str, np.ndarray],
    index: int,
    role: str,
    label: str,
    feeds: FeedSource,
    synthetic: bool,
    other: str | None = None,
) -> list[np.ndarray]:
    try:
        return [map_rows(v) for v in session.run(names, feed, _QUIET_RUN)]  # a ZipMap's rows
    except Exception as e:  # onnxruntime raises its own exception types
        shapes = ", ".join(
            f"{k}: {'x'.join(map(str, v.shape)) or 'scalar'} {v.dtype}" for k, v in feed.items()
        )
        if other is not None:
            raise RuntimeUnavailableError(
                f"the compressed model {label} fails on sample {index} ({shapes}), which the "
                f"original {other} runs: {_ort_message(e)}",
                hint="the compression broke the model; compare with --debug or inspect it.",
            ) from e
        if synthetic:
            raise DataError(
                f"{label} does not run on synthetic inputs ({shapes}): {_ort_message(e)}",
                hint="pass real data (compare --data PATH, compress --validate-data PATH), or set the "
                "input shapes with --shape NAME:DIMS (e.g. --shape input:1x3x224x224).",
            ) from e
        raise DataError(
            f"{label} does not run on sample {index} of {feeds.description} ({shapes}): {_ort_message(e)}",
            hint="check that the data matches the model's inputs (see `onnxcompress inspect`).",
        ) from e


# -- judging one output -------------------------------------------------------------------------


def _missing(name: str, tol: Tolerance) -> OutputComparison:
    return OutputComparison(
        name=name,
        dtype=None,
        shape=None,
        kind="missing",
        samples=0,
        elements=0,
        passed=False,
        checks=[Check("present", False, "the compressed model has no output of this name")],
        tolerance=tol,
    )


def _evaluate(name: str, s: TensorStats, tol: Tolerance) -> OutputComparison:
    out = OutputComparison(
        name=name,
        dtype=s.dtype,
        shape=s.shape,
        kind="exact" if s.exact else "float",
        samples=s.samples,
        elements=s.elements,
        passed=True,
        checks=[],
        tolerance=tol,
        max_abs=None if s.exact else s.max_abs,
        mean_abs=s.mean_abs,
        rel_l2=s.rel_l2,
        cosine=s.cosine,
        snr_db=s.snr_db,
        outside=s.outside if s.exact or tol.atol is not None or tol.rtol is not None else None,
        nan_original=s.nan_original,
        inf_original=s.inf_original,
        nan_compressed=s.nan_compressed,
        inf_compressed=s.inf_compressed,
        nonfinite_mismatch=s.nonfinite_mismatch,
        classifier=bool(s.classifier) and not s.tied,
        rows=s.rows,
        top1_agreement=s.top1_agreement,
        topk_agreement=s.topk_agreement,
        k=s.k,
        labelled=s.labelled_rows,
        accuracy_original=s.accuracy_original,
        accuracy_compressed=s.accuracy_compressed,
        detection_f1=s.detection_f1,
        detection_unit=s.detection_unit if s.detection_f1 is not None else None,
        notes=list(dict.fromkeys(s.class_recall_notes() + s.notes))[:3],
    )
    checks = out.checks
    if s.shape_mismatch:
        checks.append(Check("shape", False, s.shape_mismatch))
    elif s.exact:
        checks.append(Check("exact", s.outside == 0, f"{s.outside} of {s.elements} elements differ "
                            "(compared exactly)" + (" at the positions padding leaves" if s.masked else "")))
    else:
        checks.append(Check("non-finite", s.nonfinite_mismatch == 0,
                            f"{s.nonfinite_mismatch} positions where the models disagree on NaN/Inf "
                            f"(original: {s.nan_original} NaN, {s.inf_original} Inf; "
                            f"compressed: {s.nan_compressed} NaN, {s.inf_compressed} Inf)"))
        applied = 0
        if tol.atol is not None or tol.rtol is not None:
            applied += 1
            checks.append(Check(
                "allclose", s.outside == 0, f"{s.outside} of {s.finite_elements} elements outside "
                f"|compressed - original| <= {tol.atol:g} + {tol.rtol:g}*|original| "
                f"(max abs error {s.max_abs:.3g})"))
        default = is_default(tol)
        if tol.min_detection_f1 is not None:
            if s.detection_f1 is not None:
                applied += 1
                checks.append(Check(
                    "min_detection_f1", s.detection_f1 >= tol.min_detection_f1,
                    f"detection F1 {s.detection_f1:.4f} ({s.detections_matched} of {s.detections_reported} "
                    f"{s.detection_unit} matched), needs >= {tol.min_detection_f1:g}"))
                if not s.detections_reported:
                    out.notes.append(f"no {s.detection_unit[:-1]} scored >= 0.25 in either model on these "
                                     "inputs: the detection check compared nothing (give real images)")
            elif not default:
                out.notes.append("--min-detection-f1 does not apply: not a detection list")
        if tol.min_cosine is not None and default and s.detection is not None:
            out.notes.append("a detection list: compared by its boxes, not its cosine (rows under "
                             "the score threshold are noise in any order)")
        elif tol.min_cosine is not None:
            applied += 1
            cos = s.cosine if s.cosine is not None else -1.0
            about = " about the samples' spread" if s.about_spread else ""
            checks.append(Check("min_cosine", cos >= tol.min_cosine,
                                f"cosine{about} {cos:.6f}, needs >= {tol.min_cosine:g}"))
            if s.about_spread:
                out.notes.append("one value a sample: its cosine is read across the samples about "
                                 "their mean, 1 - |b - a|^2 / (2 |a - mean a|^2)")
            scores = s.score_cosine
            if scores is not None:  # a raw detector head: its boxes' pixels dominate the cosine
                checks.append(Check("min_cosine", scores >= tol.min_cosine,
                                    f"class-score rows' cosine {scores:.6f}, needs >= {tol.min_cosine:g}"))
        if tol.max_rel_error is not None:
            applied += 1
            rel = s.rel_l2 if s.rel_l2 is not None else math.inf
            checks.append(Check("max_rel_error", rel <= tol.max_rel_error,
                                f"relative error {rel:.3g}, needs <= {tol.max_rel_error:g}"))
        if tol.min_top1 is not None:
            if s.tied:  # (values laid out like class scores: coordinates, features)
                out.notes.append("no clear top-1 in the original's rows: not held (--classifier holds it)")
            elif s.classifier and s.top1_agreement is not None:
                applied += 1
                checks.append(Check("min_top1", s.top1_agreement >= tol.min_top1,
                                    f"top-1 agreement {s.top1_agreement:.2%} over {s.rows} "
                                    f"{s.top1_unit}, needs >= {tol.min_top1:.2%}"))
            elif not default:  # the default asks top-1 of class scores only
                out.notes.append("--min-top1 does not apply: not a classifier output (see --classifier)")
        if applied == 0:
            out.notes.append("no tolerance applies to this output: only NaN/Inf agreement is checked")
    out.passed = all(c.passed for c in checks)
    return out
