"""A compression report as one self-contained HTML page: tables always, charts when matplotlib is there.

``render_html(report)`` takes the JSON form of a report (``CompressionReport.to_dict()`` or a saved
``--report r.json``) and returns the page: headlines, before/after summary, per-pass status, per-layer
tables and charts, weight histograms of the layers that lost most (when the models are given),
validation per output, the auto mode's Pareto front and plan (when present), and the recipe.
Charts are PNG data URIs and there is no script or external resource, so the file opens offline.
Keys the report does not have are left out; unknown extra keys are ignored. Every string from the
report (layer names, paths, notes) is escaped.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxcompress import __version__
from onnxcompress import _report_plots as plots
from onnxcompress._report_html import (
    PLOTS_HINT,
    _bytes,
    _chart,
    _e,
    _num,
    _pct,
    _ratio,
    _section,
    _table,
)
from onnxcompress._report_sections import _auto, _layers, _validation, _weights
from onnxcompress.report import _fmt_bytes, _json_default

logger = logging.getLogger(__name__)

DEFAULT_HISTOGRAMS = 3

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1f2328;
 margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
header h1{font-size:24px;margin:0 0 4px}
header p{margin:0;color:#57606a}
section{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:16px 20px;margin:18px 0}
h2{font-size:18px;margin:0 0 10px;border-bottom:2px solid #e8833a;display:inline-block;padding-bottom:2px}
h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px;width:auto;max-width:100%}
th,td{padding:4px 10px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
th{background:#f0f3f6;font-weight:600}
tr:nth-child(even) td{background:#fafbfc}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.name{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;overflow-wrap:break-word}
span.details{display:block;min-width:200px;max-width:420px}
.scroll{overflow-x:auto;max-width:100%}
.row{display:flex;flex-wrap:wrap;gap:8px 28px;align-items:flex-start}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:4px 20px}
.grid h3{margin-top:8px}
.small{font-size:12px;color:#57606a}
.headlines{font-size:16px;margin:0;padding-left:20px}
.headlines li{margin:3px 0}
.badge{display:inline-block;white-space:nowrap;padding:1px 8px;border-radius:10px;font-size:12px;
 font-weight:600;color:#fff}
.ok{background:#2e8b57}.warn{background:#b7791f}.bad{background:#c94040}.muted{background:#8c959f}
.better{color:#2e7d32;font-weight:600}.worse{color:#c62828;font-weight:600}
img{max-width:100%;height:auto;display:block;margin:8px 0}
pre{background:#f6f8fa;border:1px solid #d8dee4;border-radius:6px;padding:10px;overflow:auto;font-size:12px}
.note{background:#fff8e6;border-left:4px solid #e8a33a;padding:6px 10px;margin:8px 0}
ul.plain{margin:4px 0;padding-left:20px}
details summary{cursor:pointer;color:#0969da;margin:6px 0}
"""


def render_html(
    report: Mapping[str, Any],
    *,
    original_model: Any = None,
    compressed_model: Any = None,
    title: str | None = None,
    histograms: int = DEFAULT_HISTOGRAMS,
) -> str:
    """The page for ``report`` (a ``CompressionReport.to_dict()``), as a string.

    ``original_model`` / ``compressed_model`` (paths, ``ModelProto`` or ``ir.Model``) enable the
    weight histograms of the ``histograms`` layers with the largest weight error.
    """
    # Through JSON once: numpy scalars, tuples and whatever else a live report holds become the
    # same plain values a saved report has, so both render alike.
    d = json.loads(json.dumps(dict(report), default=_json_default))
    draw = plots.matplotlib_available()
    if not draw:
        logger.info("matplotlib is not installed: the HTML report has tables only")
    page_title = title or f"onnxcompress report: {Path(str(d.get('input') or 'model')).name}"
    body = [
        _header(d, page_title, draw),
        _headlines(d),
        _summary(d, draw),
        _passes(d),
        _layers(d, draw),
        _weights(d, draw, original_model, compressed_model, histograms),
        _validation(d, draw),
        _auto(d, draw),
        _recipe(d),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(page_title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(b for b in body if b)
        + f'\n<p class="small">made by onnxcompress {_e(__version__)}</p>\n</main>\n</body>\n</html>\n'
    )


def models_from_report(report: Mapping[str, Any], base: str | os.PathLike | None = None) -> tuple[Any, Any]:
    """The report's input and output model paths, where those files still exist (else None).

    Relative paths are tried from the working directory, then from ``base`` (the saved report's folder).
    """
    found = []
    for key in ("input", "output"):
        value = report.get(key)
        path = None
        if isinstance(value, str) and value:
            for candidate in (Path(value), Path(base or ".") / value):
                if candidate.is_file():
                    path = candidate
                    break
        found.append(path)
    return found[0], found[1]


# -- sections ------------------------------------------------------------------------------------


def _header(d: dict[str, Any], title: str, draw: bool) -> str:
    line = f"{_e(d.get('input'))} &rarr; {_e(d.get('output'))}" if d.get("output") else _e(d.get("input"))
    hint = (
        ""
        if draw
        else (
            f'<p class="note">Plots are not included because matplotlib is not installed: '
            f"<code>{_e(PLOTS_HINT)}</code> adds them.</p>"
        )
    )
    return f"<header>\n<h1>{_e(title)}</h1>\n<p>{line}</p>\n{hint}</header>"


def _auto_headlines(d: dict[str, Any]) -> list[str]:
    """Headlines from the numbers, for reports made before the pipeline wrote its own."""
    out = []
    b, a = d.get("before") or {}, d.get("after") or {}
    if isinstance(b.get("file_bytes"), int) and isinstance(a.get("file_bytes"), int) and a["file_bytes"]:
        out.append(
            f"File {_fmt_bytes(b['file_bytes'])} &rarr; {_fmt_bytes(a['file_bytes'])} "
            f"({b['file_bytes'] / a['file_bytes']:.2f}x smaller)"
        )
    v = d.get("validation")
    if isinstance(v, dict) and "passed" in v:
        outs = v.get("outputs") or []
        state = '<span class="badge ok">PASS</span>' if v["passed"] else '<span class="badge bad">FAIL</span>'
        out.append(f"Validation {state} on {_e(v.get('samples'))} sample(s), {len(outs)} output(s)")
        for o in outs:
            if o.get("accuracy_original") is not None and o.get("accuracy_compressed") is not None:
                out.append(
                    f"Accuracy of {_e(o['name'])}: {_pct(o['accuracy_original'])} &rarr; "
                    f"{_pct(o['accuracy_compressed'])}"
                )
    for p in d.get("passes") or []:
        if str(p.get("status", "")).lower() in ("rolled back", "rolled_back", "failed", "error"):
            out.append(f"Pass {_e(p.get('pass'))} {_e(p.get('status'))}: {_e(p.get('reason') or '')}")
    return out


def _headlines(d: dict[str, Any]) -> str:
    given = d.get("headlines")
    items = [_e(h) for h in given] if isinstance(given, list) and given else _auto_headlines(d)
    if not items:
        return ""
    return _section(
        "headlines", "Headlines", '<ul class="headlines">' + "".join(f"<li>{h}</li>" for h in items) + "</ul>"
    )


def _memory(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Session memory before/after, from ``memory: {before, after}`` (or original/compressed)."""
    m = d.get("memory")
    if isinstance(m, dict):
        for b, a in (("before", "after"), ("original", "compressed")):
            if isinstance(m.get(b), dict) or isinstance(m.get(a), dict):
                return m.get(b) or {}, m.get(a) or {}
    before, after = d.get("before") or {}, d.get("after") or {}
    return before.get("memory") or {}, after.get("memory") or {}


def _macs(d: dict[str, Any]) -> tuple[Any, Any, str]:
    """MACs before/after: from the size rows, else the last pass that measured them."""
    b, a = d.get("before") or {}, d.get("after") or {}
    if b.get("macs") is not None:
        return b.get("macs"), a.get("macs"), ""
    for p in reversed(d.get("passes") or []):
        m = p.get("metrics") or {}
        if m.get("macs_before") is not None:
            sparse = m.get("macs_after_if_sparse")
            note = f" ({sparse:,} with sparse kernels)" if isinstance(sparse, int) else ""
            return m.get("macs_before"), m.get("macs_after"), note
    return None, None, ""


def _latency(d: dict[str, Any]) -> dict[str, Any] | None:
    v = d.get("validation")
    lat = v.get("latency") if isinstance(v, dict) else None
    return (
        lat if isinstance(lat, dict) else (d.get("latency") if isinstance(d.get("latency"), dict) else None)
    )


def _spread(lat: dict[str, Any], side: str) -> str:
    """A latency's spread in whichever form the report has it (IQR, percentiles, std, min)."""
    if isinstance(lat.get(f"{side}_spread_ms"), (int, float)):
        return f" &plusmn; {lat[f'{side}_spread_ms']:.3g}"
    if isinstance(lat.get(f"{side}_iqr_ms"), (int, float)):
        return f" (IQR {lat[f'{side}_iqr_ms']:.3g})"
    for lo, hi in (("p25", "p75"), ("p10", "p90"), ("q1", "q3"), ("min", "max")):
        x, y = lat.get(f"{side}_{lo}_ms"), lat.get(f"{side}_{hi}_ms")
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            return f" ({lo}&ndash;{hi} {x:.3g}&ndash;{y:.3g})"
    if isinstance(lat.get(f"{side}_std_ms"), (int, float)):
        return f" &plusmn; {lat[f'{side}_std_ms']:.3g}"
    if isinstance(lat.get(f"{side}_min_ms"), (int, float)):
        return f" (min {lat[f'{side}_min_ms']:.3g})"
    return ""


def _summary(d: dict[str, Any], draw: bool) -> str:
    b, a = d.get("before") or {}, d.get("after") or {}
    rows: list[list[str]] = []
    rel: list[tuple[str, float]] = []

    def add(label: str, x: Any, y: Any, fmt: Any, *, ratio: bool = True, chart: bool = False) -> None:
        if x is None and y is None:
            return
        rows.append([_e(label), fmt(x), fmt(y), _ratio(x, y) if ratio else ""])
        if chart and isinstance(x, (int, float)) and isinstance(y, (int, float)) and x:
            rel.append((label, y / x))

    add("file size", b.get("file_bytes"), a.get("file_bytes"), _bytes, chart=True)
    add("gzip size", b.get("gzip_bytes"), a.get("gzip_bytes"), _bytes, chart=True)
    add("weight bytes", b.get("weight_bytes"), a.get("weight_bytes"), _bytes, chart=True)
    mb, ma = _memory(d)
    add("session memory (resident)", mb.get("resident_bytes"), ma.get("resident_bytes"), _bytes, chart=True)
    add("session memory (live)", mb.get("live_bytes"), ma.get("live_bytes"), _bytes, chart=True)
    add("session memory (peak)", mb.get("peak_bytes"), ma.get("peak_bytes"), _bytes, chart=True)
    add("parameters (stored values)", b.get("parameters"), a.get("parameters"), _num, chart=True)
    macs_b, macs_a, macs_note = _macs(d)
    if macs_b is not None:
        add("MACs", macs_b, macs_a, _num, chart=True)
        if macs_note:
            rows[-1][2] += f'<br><span class="small">{_e(macs_note.strip(" ()"))}</span>'
    add("zeros stored", b.get("sparsity"), a.get("sparsity"), _pct, ratio=False)
    add("nodes", b.get("nodes"), a.get("nodes"), _num, ratio=False)
    lat = _latency(d)
    if lat and isinstance(lat.get("original_ms"), (int, float)):
        runs = f", median of {lat['runs']} runs" if lat.get("runs") else ""
        rows.append(
            [
                f"latency per inference (ms{_e(runs)})",
                f"{lat['original_ms']:.4g}{_spread(lat, 'original')}",
                f"{lat['compressed_ms']:.4g}{_spread(lat, 'compressed')}",
                _ratio(lat["original_ms"], lat["compressed_ms"]),
            ]
        )
        if lat["original_ms"]:
            rel.append(("latency", lat["compressed_ms"] / lat["original_ms"]))
    if not rows:
        return ""
    notes = []
    for side, m in (("original", mb), ("compressed", ma)):
        for key in ("error", "note"):
            if m.get(key):
                notes.append(f'<p class="small">session memory ({side}): {_e(m[key])}</p>')
    table = _table(["", "original", "compressed", "ratio"], rows, [False, True, True, True])
    chart = _chart(draw and bool(rel), "compressed as a share of the original", plots.relative_bars, rel)
    return _section(
        "summary", "Before and after", f'<div class="row"><div>{table}</div><div>{chart}</div></div>', *notes
    )


_STATUS_CLASS = {
    "applied": "ok",
    "rolled back": "bad",
    "rolled_back": "bad",
    "failed": "bad",
    "error": "bad",
    "skipped": "muted",
    "no change": "muted",
    "partial": "warn",
}


def _passes(d: dict[str, Any]) -> str:
    passes = d.get("passes") or []
    if not passes:
        return ""
    rows, details = [], []
    for p in passes:
        status = p.get("status") or ("applied" if p.get("modified") else "no change")
        badge = f'<span class="badge {_STATUS_CLASS.get(str(status).lower(), "warn")}">{_e(status)}</span>'
        skipped = p.get("skipped") or {}
        n_skipped = sum(len(v) for v in skipped.values() if isinstance(v, list))
        m = p.get("metrics") or {}
        wb, wa = m.get("weight_bytes_before"), m.get("weight_bytes_after")
        if wb is None:  # the changed tensors' bytes, when the pass did not total them
            stats = [s for s in p.get("layers") or [] if isinstance(s, dict)]
            wb = sum(s.get("bytes_before") or 0 for s in stats) or None
            wa = sum(s.get("bytes_after") or 0 for s in stats) or None
        rows.append(
            [
                f"<b>{_e(p.get('pass'))}</b>",
                badge,
                _e(p.get("reason") or ""),
                _num(len(p.get("layers") or [])),
                _num(n_skipped),
                _ratio(wb, wa),
                f"{p['seconds']:.2f}" if isinstance(p.get("seconds"), (int, float)) else "-",
            ]
        )
        parts = []
        scalars = {k: v for k, v in m.items() if isinstance(v, (int, float, str, bool))}
        if scalars:
            parts.append(
                '<p class="small">' + ", ".join(f"{_e(k)}={_num(v)}" for k, v in scalars.items()) + "</p>"
            )
        for reason, names in skipped.items():
            names = [str(n) for n in names] if isinstance(names, list) else [str(names)]
            shown = ", ".join(f"<code>{_e(n)}</code>" for n in names[:8])
            more = f" and {len(names) - 8} more" if len(names) > 8 else ""
            parts.append(f"<li>skipped {len(names)}: {_e(reason)} ({shown}{more})</li>")
        parts.extend(f"<li>note: {_e(n)}</li>" for n in p.get("notes") or [])
        if parts:
            details.append(f'<h3>{_e(p.get("pass"))}</h3><ul class="plain">' + "".join(parts) + "</ul>")
    headers = [
        "pass",
        "status",
        "reason",
        "tensors changed",
        "skipped",
        "bytes of changed tensors",
        "seconds",
    ]
    numeric = [False, False, False, True, True, True, True]
    if not any(r[2] for r in rows):  # no pass said why: no empty column
        headers, numeric, rows = (
            headers[:2] + headers[3:],
            numeric[:2] + numeric[3:],
            [r[:2] + r[3:] for r in rows],
        )
    table = _table(headers, rows, numeric)
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in d.get("notes") or [])
    return _section("passes", "Passes", table, notes, *details)


def _recipe(d: dict[str, Any]) -> str:
    recipe = d.get("recipe")
    if not isinstance(recipe, dict):
        return ""
    text = json.dumps(recipe, indent=2)
    link = "data:application/json;base64," + base64.b64encode(text.encode()).decode("ascii")
    model, out = d.get("input") or "MODEL.onnx", d.get("output") or "OUT.onnx"
    cmd = f"onnxcompress compress {model} -o {out} --recipe recipe.json"
    return _section(
        "recipe",
        "Recipe to reproduce",
        f'<p>Save this as <a download="recipe.json" href="{link}">recipe.json</a> and run:</p>',
        f"<pre>{_e(cmd)}</pre>",
        f"<pre>{_e(text)}</pre>",
    )
