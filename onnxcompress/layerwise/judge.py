"""End-to-end judgement of a refit: the model's outputs against the teacher's on calibration
samples held apart from the fit.

A layer-wise optimum is not a model-wide one: a refit can lower every layer's output error and
still move the model's outputs further from the original's (errors of several layers add up
differently than each alone). Each reconstructing pass therefore fits on the first part of its
calibration feeds and, before it keeps the refit, compares the refit model with the plain one
(the pass without reconstruction) on the rest; the plain one is kept when the refit does not
win. "Closest" is :func:`passes._bit_allocation.output_deviation`: the mean over float outputs
of ``||y - y0||^2 / ||y0||^2``, averaged over the judging samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx_ir as ir

from onnxcompress.activations import quiet_run_options, run
from onnxcompress.data import Feed
from onnxcompress.runtime import create_session

HOLDOUT_FRACTION = 0.25  # calibration feeds held apart to judge refits end to end
MIN_HOLDOUT_FEEDS = 4  # with fewer feeds, every feed both fits and judges


def split_feeds(feeds: Iterable[Feed]) -> tuple[list[Feed], list[Feed], bool]:
    """(feeds to fit on, feeds to judge on, whether the two are disjoint): the last quarter is
    held apart when there are at least ``MIN_HOLDOUT_FEEDS``; else every feed does both."""
    feeds = list(feeds)
    held = int(len(feeds) * HOLDOUT_FRACTION) if len(feeds) >= MIN_HOLDOUT_FEEDS else 0
    if not held:
        return feeds, feeds, False
    return feeds[:len(feeds) - held], feeds[len(feeds) - held:], True


def prefer_refit(refit_score: float, plain_score: float) -> bool:
    """Whether the refit model is kept: strictly closer to the teacher (ties keep the plain)."""
    return refit_score < plain_score


class Judge:
    """The teacher's outputs on ``feeds`` (computed on first use: the teacher must not change
    before then) and :meth:`score` of any model against them."""

    def __init__(self, teacher: ir.Model, feeds: Sequence[Feed]) -> None:
        self.teacher = teacher
        self.feeds = list(feeds)
        self._references: list[list[np.ndarray]] | None = None

    def references(self) -> list[list[np.ndarray]]:
        if self._references is None:
            self._references = self._outputs(self.teacher, "the teacher model")
        return self._references

    def score(self, model: ir.Model) -> float:
        """Mean normalised output deviation of ``model`` from the teacher on the judging feeds.
        Raises :class:`onnxcompress.errors.OnnxCompressError` when a model cannot run."""
        from onnxcompress.passes._bit_allocation import output_deviation

        references = self.references()
        outputs = self._outputs(model, "the reconstruction judge model")
        total = sum(output_deviation(o, r) for o, r in zip(outputs, references, strict=True))
        return total / max(len(self.feeds), 1)

    def _outputs(self, model: ir.Model, label: str) -> list[list[np.ndarray]]:
        session = create_session(model, label=label, arena=False)
        quiet = quiet_run_options()
        return [run(session, None, f, what=f"calibration sample {i}", run_options=quiet)
                for i, f in enumerate(self.feeds)]
