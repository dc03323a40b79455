"""The HTML report's per-layer, weight, validation and auto-mode sections (see ``report_html``)."""

from __future__ import annotations

import json
from typing import Any

from onnxcompress import _report_plots as plots
from onnxcompress._report_html import PLOTS_HINT, _bytes, _chart, _e, _num, _pct, _ratio, _section, _table

# Layers per chart: a model with hundreds of weights keeps its largest ones in the charts (the
# tables have them all).
MAX_CHART_LAYERS = 40

# Per-layer output error before/after reconstruction: the first pair of keys a layer has.
_REFIT_KEYS = (
    ("output_error_before", "output_error_after"),
    ("output_error_before_refit", "output_error_after_refit"),
    ("error_before_refit", "error_after_refit"),
    ("refit_error_before", "refit_error_after"),
)


def _field(s: dict[str, Any], key: str) -> Any:
    if s.get(key) is not None:
        return s[key]
    extra = s.get("extra")
    return extra.get(key) if isinstance(extra, dict) else None


def _refit(s: dict[str, Any]) -> tuple[Any, Any]:
    for kb, ka in _REFIT_KEYS:
        if _field(s, kb) is not None or _field(s, ka) is not None:
            return _field(s, kb), _field(s, ka)
    return None, None


def _output_error(s: dict[str, Any]) -> Any:
    for key in ("output_error", "estimated_output_error"):
        if _field(s, key) is not None:
            return _field(s, key)
    return None


def _layers(d: dict[str, Any], draw: bool) -> str:
    parts = []
    for p in d.get("passes") or []:
        layers = [s for s in p.get("layers") or [] if isinstance(s, dict)]
        if layers:
            parts.append(_pass_layers(str(p.get("pass", "")), layers, draw))
    if isinstance(d.get("layers"), list) and d["layers"]:  # a pipeline-wide per-layer list, if any
        parts.append(_pass_layers("all passes", [s for s in d["layers"] if isinstance(s, dict)], draw))
    return _section("layers", "Layers", *parts) if parts else ""


def _pass_layers(name: str, layers: list[dict[str, Any]], draw: bool) -> str:
    has_out = any(_output_error(s) is not None for s in layers)
    has_refit = any(any(v is not None for v in _refit(s)) for s in layers)
    headers = [
        "tensor",
        "op",
        "shape",
        "bytes before",
        "bytes after",
        "ratio",
        "sparsity",
        "bits/w",
        "weight rel.err",
    ]
    if has_out:
        headers.append("output err.")
    if has_refit:
        headers += ["out err. before refit", "after refit"]
    headers.append("details")
    rows = []
    for s in layers:
        shape = "&times;".join(_e(x) for x in s.get("shape") or [])
        row = [
            f'<span class="name">{_e(s.get("name"))}</span>',
            _e(s.get("op_type")),
            shape,
            _bytes(s.get("bytes_before")),
            _bytes(s.get("bytes_after")),
            _ratio(s.get("bytes_before"), s.get("bytes_after")),
            _pct(s.get("sparsity")),
            _num(s.get("bits"), ".3g"),
            _num(s.get("error"), ".3g"),
        ]
        if has_out:
            row.append(_num(_output_error(s), ".3g"))
        if has_refit:
            row += [_num(v, ".3g") for v in _refit(s)]
        extra = s.get("extra") if isinstance(s.get("extra"), dict) else {}
        row.append(
            '<span class="small details">'
            + ", ".join(
                f"{_e(k)}={_num(v)}" for k, v in extra.items() if isinstance(v, (int, float, str, bool))
            )
            + "</span>"
        )
        rows.append(row)
    numeric = (
        [False, False, False, True, True, True, True, True, True]
        + [True] * (has_out + 2 * has_refit)
        + [False]
    )
    table = _table(headers, rows, numeric)
    # The <td> of a tensor name gets the monospace class through its span; keep tables in <details> when long.
    if len(rows) > 25:
        table = f"<details><summary>table of all {len(rows)} tensors</summary>{table}</details>"
    chart = _chart(draw, f"{name}: per-layer statistics", _layer_chart, layers)
    shown = ""
    if draw and len(layers) > MAX_CHART_LAYERS:
        shown = f'<p class="small">charts show the {MAX_CHART_LAYERS} largest of {len(layers)} tensors.</p>'
    return f"<h3>{_e(name)}: {len(layers)} tensor(s)</h3>\n{chart}{shown}{table}"


def _layer_chart(layers: list[dict[str, Any]]) -> str:
    if len(layers) > MAX_CHART_LAYERS:  # the largest, in model order
        keep = sorted(range(len(layers)), key=lambda i: -(layers[i].get("bytes_before") or 0))[
            :MAX_CHART_LAYERS
        ]
        layers = [layers[i] for i in sorted(keep)]
    names = [str(s.get("name", "")) for s in layers]

    def col(fn: Any) -> list[Any]:
        return [fn(s) for s in layers]

    largest = max(
        [s.get("bytes_before") or 0 for s in layers] + [s.get("bytes_after") or 0 for s in layers] + [1]
    )
    unit, scale = next(
        (u, f) for u, f in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10), ("B", 1)) if largest >= f
    )

    def size(key: str) -> list[Any]:
        return [s[key] / scale if isinstance(s.get(key), (int, float)) else None for s in layers]

    panels: list[dict[str, Any]] = [
        {
            "title": f"size ({unit})",
            "series": [
                ("before", size("bytes_before"), plots.BEFORE),
                ("after", size("bytes_after"), plots.AFTER),
            ],
        }
    ]
    for title, fn, colour, pct in (
        ("bits per weight", lambda s: s.get("bits"), plots.AFTER, False),
        ("sparsity (%)", lambda s: s.get("sparsity"), plots.ACCENT, True),
        ("weight rel. error", lambda s: s.get("error"), plots.BAD, False),
        ("output error", _output_error, plots.BEFORE, False),
    ):
        values = col(fn)
        if any(isinstance(v, (int, float)) and v for v in values):
            panels.append({"title": title, "percent": pct, "series": [(title, values, colour)]})
    refit = [_refit(s) for s in layers]
    if any(v is not None for pair in refit for v in pair):
        panels.append(
            {
                "title": "output error (refit)",
                "series": [
                    ("before refit", [r[0] for r in refit], plots.BEFORE),
                    ("after refit", [r[1] for r in refit], plots.AFTER),
                ],
            }
        )
    return plots.layer_panels(names, panels)


def _weights(d: dict[str, Any], draw: bool, original: Any, compressed: Any, limit: int) -> str:
    if limit <= 0:
        return ""
    if original is None or compressed is None:
        return _section(
            "weights",
            "Weight histograms",
            '<p class="small">Not shown: the report was rendered '
            "without the original and compressed models.</p>",
        )
    if not draw:
        return _section(
            "weights",
            "Weight histograms",
            f'<p class="small">Not shown: <code>{_e(PLOTS_HINT)}</code> adds them.</p>',
        )
    from onnxcompress._report_weights import weight_views

    views, notes = weight_views(original, compressed, d.get("passes") or [], limit)
    parts = [
        '<p class="small">The layers with the largest weight error: the original weights\' histogram, the '
        "compressed model's decoded weights (outline), and the values they were mapped to (lines).</p>"
    ]
    cells = []
    for v in views:
        err = f", weight rel. error {v.error:.3g}" if v.error is not None else ""
        levels = f"{len(v.levels)} {v.level_kind}" if v.levels is not None else "no grid"
        where = f" in output channel {v.channel}" if v.channel is not None else ""
        if v.rescaled:
            where += "; BatchNorm was folded into this weight: the original is shown scaled per channel"
        cells.append(
            f'<div><h3><span class="name">{_e(v.name)}</span> ({_e(v.pass_name)}{err})</h3>'
            f'<p class="small">{_e(levels)}{where}</p>'
            + _chart(draw, f"histogram of {v.name}", plots.weight_histogram, v)
            + "</div>"
        )
    if cells:
        parts.append('<div class="grid">' + "".join(cells) + "</div>")
    parts.extend(f'<p class="small">{_e(n)}</p>' for n in notes)
    if not views and not notes:
        parts = ['<p class="small">No layer lost precision.</p>']
    return _section("weights", "Weight histograms", *parts)


def _validation(d: dict[str, Any], draw: bool) -> str:
    v = d.get("validation")
    if not isinstance(v, dict):
        return ""
    passed = v.get("passed")
    badge = '<span class="badge ok">PASS</span>' if passed else '<span class="badge bad">FAIL</span>'
    intro = f"<p>{badge} compared on {_e(v.get('samples'))} sample(s) of <code>{_e(v.get('data'))}</code></p>"
    rows, extra = [], []
    for o in v.get("outputs") or []:
        shape = "&times;".join(_e(x) for x in o.get("shape") or []) or "-"
        acc = "-"
        if o.get("accuracy_original") is not None:
            acc = f"{_pct(o['accuracy_original'])} &rarr; {_pct(o.get('accuracy_compressed'))}"
        rows.append(
            [
                f'<span class="name">{_e(o.get("name"))}</span>',
                _e(o.get("dtype")),
                shape,
                _num(o.get("max_abs"), ".3g"),
                _num(o.get("mean_abs"), ".3g"),
                _num(o.get("rel_l2"), ".3g"),
                _num(o.get("cosine"), ".6f"),
                _num(o.get("snr_db"), ".1f"),
                _pct(o.get("top1_agreement")),
                acc,
                '<span class="badge ok">ok</span>'
                if o.get("passed")
                else '<span class="badge bad">FAIL</span>',
            ]
        )
        for c in o.get("checks") or []:
            mark = "ok" if c.get("passed") else '<b class="worse">FAIL</b>'
            extra.append(
                f"<li>{_e(o.get('name'))} [{_e(c.get('criterion'))}] {mark}: {_e(c.get('detail'))}</li>"
            )
        extra.extend(f"<li>{_e(o.get('name'))}: note: {_e(n)}</li>" for n in o.get("notes") or [])
    table = _table(
        [
            "output",
            "dtype",
            "shape",
            "max abs",
            "mean abs",
            "rel. err",
            "cosine",
            "SNR dB",
            "top-1 agree",
            "accuracy",
            "result",
        ],
        rows,
        [False, False, False, True, True, True, True, True, True, True, False],
    )
    checks = '<ul class="plain">' + "".join(extra) + "</ul>" if extra else ""
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in v.get("notes") or [])
    return _section("validation", "Validation", intro, table, checks, notes, _drift(v.get("layers"), draw))


def _drift(layers: Any, draw: bool) -> str:
    """The layer-wise localisation: where in the graph the outputs start to drift."""
    if not isinstance(layers, dict) or not layers.get("layers"):
        return ""
    rows = [r for r in layers["layers"] if isinstance(r, dict)]
    jumps = [
        f"<li><code>{_e(j.get('name'))}</code> ({_e(j.get('op_type'))}): "
        f"{_num(j.get('input_error'), '.3g')} &rarr; "
        f"{_num(j.get('rel_l2'), '.3g')}</li>"
        for j in (layers.get("jumps") or [])[:5]
    ]
    first = layers.get("first_divergent")
    return (
        "<h3>Where the outputs drift (intermediate tensors)</h3>"
        + (f"<p>first tensor with relative error &gt; 1e-3: <code>{_e(first)}</code></p>" if first else "")
        + _chart(draw, "relative error per intermediate tensor", plots.drift_chart, rows)
        + (
            "<p>largest error jumps (input error &rarr; output error):</p><ol>" + "".join(jumps) + "</ol>"
            if jumps
            else ""
        )
    )


def _auto(d: dict[str, Any], draw: bool) -> str:
    auto = d.get("auto")
    if not auto:
        return ""
    front = auto if isinstance(auto, list) else (auto.get("front") or auto.get("pareto") or [])
    front = [p for p in front if isinstance(p, dict)]
    plan = auto.get("plan") if isinstance(auto, dict) else None
    objective = auto.get("objective_name", "objective") if isinstance(auto, dict) else "objective"
    fidelity = auto.get("fidelity_name", "fidelity") if isinstance(auto, dict) else "fidelity"
    parts = []
    points = [
        p
        for p in front
        if isinstance(p.get("objective"), (int, float)) and isinstance(p.get("fidelity"), (int, float))
    ]
    if points:
        parts.append(_chart(draw, "Pareto front", plots.pareto_chart, points, str(objective), str(fidelity)))
        keys = list(dict.fromkeys(k for p in front for k in p))
        parts.append(_table(keys, [[_cell(p.get(k)) for k in keys] for p in front]))
    if isinstance(plan, dict) and plan:
        parts.append(
            "<h3>Plan</h3>" + _table(["layer", "choice"], [[_e(k), _cell(v)] for k, v in plan.items()])
        )
    elif isinstance(plan, list) and plan and all(isinstance(r, dict) for r in plan):
        keys = list(dict.fromkeys(k for r in plan for k in r))
        parts.append("<h3>Plan</h3>" + _table(keys, [[_cell(r.get(k)) for k in keys] for r in plan]))
    return _section("auto", "Auto mode: Pareto front and plan", *parts) if parts else ""


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"<code>{_e(json.dumps(value, default=str))}</code>"
    return _num(value)
