"""Tolerances: when a compressed model's output counts as "the same" as the original's.

A :class:`Tolerance` holds any of: ``atol``/``rtol`` (numpy ``allclose`` semantics with the
original as reference, ``|compressed - original| <= atol + rtol * |original|`` for every
element), ``min_cosine``, ``max_rel_error`` (relative L2 error), ``min_top1`` (top-1
agreement, classifier outputs only; of a CTC recogniser's per-position scores, the strings read
off them: ``metrics.ctc_time_axis``) and ``min_detection_f1`` (F1 of the reported boxes of a
detection list, or of the positive anchors of an SSD/RetinaFace head's softmax scores:
``validation/detections.py``; the default compares a detection list by this instead of its
cosine, anchor scores by both). An output passes when every criterion given holds.

With no criterion at all, :data:`DEFAULT_TOLERANCE` applies: the one default policy of
``compare``, ``compress --validate`` and ``testing.assert_equivalent``. A compressed model is
rarely element-wise close to its original, so the default asks that each output points the same
way (cosine >= 0.99) and that classifier outputs keep their top-1 class (agreement >= 0.99); the
top-1 criterion is silently not applied to outputs that are not class scores, nor on synthetic
inputs (:func:`default_tolerance`). Any criterion given
replaces the whole default; ``atol`` or ``rtol`` alone get the other half from
:data:`DEFAULT_ATOL`/:data:`DEFAULT_RTOL` (numpy's ``allclose`` needs both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from onnxcompress.errors import ConfigError

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3


@dataclass(frozen=True)
class Tolerance:
    """Criteria one output must meet; see the module doc."""

    atol: float | None = None
    rtol: float | None = None
    min_cosine: float | None = None
    max_rel_error: float | None = None
    min_top1: float | None = None
    min_detection_f1: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
                raise ConfigError(f"tolerance {f.name}={value!r}: expected a number.")
            object.__setattr__(self, f.name, float(value))
        for name in ("atol", "rtol", "max_rel_error"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"tolerance {name}={value}: must be >= 0.")
        if self.min_cosine is not None and not -1 <= self.min_cosine <= 1:
            raise ConfigError(f"tolerance min_cosine={self.min_cosine}: must be in [-1, 1].")
        if self.min_detection_f1 is not None and not 0 <= self.min_detection_f1 <= 1:
            raise ConfigError(f"tolerance min_detection_f1={self.min_detection_f1}: must be a "
                              "fraction in [0, 1].")
        if self.min_top1 is not None and not 0 <= self.min_top1 <= 1:
            raise ConfigError(
                f"tolerance min_top1={self.min_top1}: must be a fraction in [0, 1].",
                hint="0.99 means 99% of the rows keep their top-1 class.",
            )

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def resolved(self) -> Tolerance:
        """Defaults filled in: :data:`DEFAULT_TOLERANCE` when nothing is given, else the missing
        half of atol/rtol."""
        if self.empty:
            return DEFAULT_TOLERANCE
        if (self.atol is None) != (self.rtol is None):
            return replace(
                self,
                atol=DEFAULT_ATOL if self.atol is None else self.atol,
                rtol=DEFAULT_RTOL if self.rtol is None else self.rtol,
            )
        return self

    def merged(self, other: Tolerance | None) -> Tolerance:
        """``self`` with the fields ``other`` sets replaced."""
        if other is None:
            return self
        given = {f.name: getattr(other, f.name) for f in fields(other) if getattr(other, f.name) is not None}
        return replace(self, **given)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = "tolerance") -> Tolerance:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(
                f"{where}: unknown criterion {', '.join(sorted(unknown))}; use {', '.join(sorted(known))}."
            )
        return cls(**values)

    @classmethod
    def parse(cls, text: str, *, where: str = "tolerance") -> Tolerance:
        """``atol=1e-3,rtol=0`` or ``min_cosine=0.999`` (dashes allowed: ``min-cosine``)."""
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip().replace("-", "_")
            try:
                if not sep:
                    raise ValueError
                values[key] = float(value)
            except ValueError:
                raise ConfigError(
                    f"{where}: expected KEY=NUMBER pairs such as 'atol=1e-3,rtol=0', got '{part}'."
                ) from None
        if not values:
            raise ConfigError(f"{where}: no criterion given.", hint="e.g. 'atol=1e-3' or 'min_cosine=0.999'.")
        return cls.from_dict(values, where=where)

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def describe(self) -> str:
        parts = []
        if self.atol is not None or self.rtol is not None:
            parts.append(f"allclose(atol={self.atol or 0:g}, rtol={self.rtol or 0:g})")
        if self.min_cosine is not None:
            parts.append(f"cosine >= {self.min_cosine:g}")
        if self.max_rel_error is not None:
            parts.append(f"rel.err <= {self.max_rel_error:g}")
        if self.min_top1 is not None:
            parts.append(f"top-1 >= {self.min_top1:.2%}")
        if self.min_detection_f1 is not None:
            parts.append(f"detection F1 >= {self.min_detection_f1:g}")
        return ", ".join(parts) or "defaults"


# The one default policy (compare, compress --validate, assert_equivalent): a compressed model is
# not expected to be element-wise close, but its outputs should point the same way and a
# classifier should keep its decisions. min_top1 applies to class-score outputs only.
# min_detection_f1 applies to detection lists (an NMS-free detector's [N, K, 6]: their cosine is
# not applied by default) and SSD/RetinaFace anchor scores (see validation/detections.py).
DEFAULT_TOLERANCE = Tolerance(min_cosine=0.99, min_top1=0.99, min_detection_f1=0.99)
# On synthetic inputs the top-1 criterion is left out: random inputs put classes in near-ties,
# so a compressed model that agrees to cosine 0.9995 still flips a row in 64 (measured on the
# test MLP) without any real input changing class.
DEFAULT_SYNTHETIC_TOLERANCE = Tolerance(min_cosine=DEFAULT_TOLERANCE.min_cosine,
                                        min_detection_f1=DEFAULT_TOLERANCE.min_detection_f1)
# Kept for callers of the earlier name; the same object.
VALIDATE_TOLERANCE = DEFAULT_TOLERANCE


# A soft picture out (``metrics.picture_outputs``: a depth or saliency map, an enhanced image, a
# heightfield, a speech enhancer's gains) is the product itself: the default holds it closer. The
# terrain U-Net's dynamic int8 without data passed at cosine 0.995 with 97% of its heightfields
# off by more than 0.05; its calibrated int8 (all within) reads 0.99996.
PICTURE_MIN_COSINE = 0.999


def default_tolerance(*, synthetic: bool = False, picture: bool = False) -> Tolerance:
    """The default policy, the one place it is decided: :data:`DEFAULT_TOLERANCE` on real data,
    :data:`DEFAULT_SYNTHETIC_TOLERANCE` (cosine only) on synthetic inputs; on a ``picture``
    output, cosine >= :data:`PICTURE_MIN_COSINE`."""
    tol = DEFAULT_SYNTHETIC_TOLERANCE if synthetic else DEFAULT_TOLERANCE
    return replace(tol, min_cosine=PICTURE_MIN_COSINE) if picture else tol


def is_default(tol: Tolerance) -> bool:
    """Whether ``tol`` is one of the default policy's (see :func:`default_tolerance`)."""
    return tol.min_cosine in (DEFAULT_TOLERANCE.min_cosine, PICTURE_MIN_COSINE) and replace(
        tol, min_cosine=DEFAULT_TOLERANCE.min_cosine) in (DEFAULT_TOLERANCE, DEFAULT_SYNTHETIC_TOLERANCE)


def parse_output_tolerance(item: str) -> tuple[str, Tolerance]:
    """``NAME:atol=1e-3,rtol=0`` (CLI ``--tol``) into (output name, Tolerance)."""
    name, sep, spec = item.rpartition(":")
    if not sep or not name:
        raise ConfigError(
            f"--tol '{item}': expected OUTPUT:KEY=VALUE[,KEY=VALUE] such as 'logits:min_cosine=0.999'."
        )
    return name, Tolerance.parse(spec, where=f"--tol '{item}'")
