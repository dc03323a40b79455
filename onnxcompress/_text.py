"""Text helpers shared by the rendered tables (compression report, comparison report) and the
targets' numbers."""

from __future__ import annotations

import re

ELLIPSIS = "..."


def elide_middle(text: str, width: int, *, op_type: str | None = None) -> str:
    """``text`` in at most ``width`` characters, cut in the middle.

    Tensor names share their beginnings (``/backbone/stage1/...``) and, for exporter-named
    outputs, their endings (``.../BatchNormalization_output_0``); cutting from one side makes
    every BatchNorm row look alike. So: a last segment that only repeats ``op_type`` (shown in
    its own column) shrinks to ``~`` (``~:1`` for output 1), then the middle goes, keeping a
    third of the room for the start and the rest for the end, where names differ most.
    """
    if len(text) <= width:
        return text
    if op_type:
        match = re.search(rf"(^|/){re.escape(op_type)}_output_(\d+)$", text)
        if match:
            k = match.group(2)
            text = text[: match.start()] + match.group(1) + ("~" if k == "0" else f"~:{k}")
            if len(text) <= width:
                return text
    if width <= len(ELLIPSIS) + 1:
        return text[-width:] if width > 0 else ""
    room = width - len(ELLIPSIS)
    head = room // 3
    return text[:head] + ELLIPSIS + text[len(text) - (room - head):]


def threshold_text(x: float) -> str:
    """``x`` as a target spells it: short (0.99, not 0.99000000000000021), and never rounded
    (batch 25: "cosine>=0.9999995" printed as "cosine>=1", so a failed check read as passing)."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def value_text(v: float) -> str:
    """A measured value to 4 digits, more where those would round it to 1 (0.9999992, not 1)."""
    short = f"{v:.4g}"
    return f"{v:.10g}" if short in ("1", "-1") and float(short) != v else short
