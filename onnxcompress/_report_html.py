"""Formatting helpers shared by the HTML report's modules: escaping, numbers, tables, sections, charts."""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from typing import Any

from onnxcompress.report import _fmt_bytes

logger = logging.getLogger("onnxcompress.report_html")

PLOTS_HINT = 'pip install "onnxcompress[report]"'


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, spec: str = ".4g") -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, (int, float)):
        return format(value, spec) if isinstance(value, float) or spec != ".4g" else f"{value:,}"
    return _e(value)


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _bytes(value: Any) -> str:
    return _fmt_bytes(int(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] = ()) -> str:
    """A table of already-escaped cells; ``numeric[i]`` right-aligns column i."""
    cls = [' class="n"' if i < len(numeric) and numeric[i] else "" for i in range(len(headers))]
    head = "".join(f"<th{c}>{_e(h)}</th>" for h, c in zip(headers, cls, strict=True))
    body = "".join(
        "<tr>" + "".join(f"<td{c}>{cell}</td>" for cell, c in zip(row, cls, strict=True)) + "</tr>"
        for row in rows
    )
    # Wide tables scroll inside their section instead of widening the page.
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _section(ident: str, title: str, *parts: str) -> str:
    return (
        f'<section id="{ident}">\n<h2>{_e(title)}</h2>\n' + "\n".join(p for p in parts if p) + "\n</section>"
    )


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_e(alt)}">'


def _chart(draw: bool, alt: str, fn: Any, *args: Any) -> str:
    """A chart, or nothing when matplotlib is missing or the chart fails (the table still stands)."""
    if not draw:
        return ""
    try:
        return _img(fn(*args), alt)
    except Exception as e:  # a chart is decoration: never lose the report over one
        logger.warning("chart '%s' not drawn: %s", alt, e)
        return f'<p class="small">(chart not drawn: {_e(type(e).__name__)}: {_e(e)})</p>'


def _ratio(before: Any, after: Any) -> str:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (before, after)) or not after:
        return "-"
    r = before / after
    cls = "better" if r > 1.0001 else ("worse" if r < 0.9999 else "")
    return f'<span class="{cls}">{r:.2f}x</span>'
