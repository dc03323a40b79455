"""The terminal view of a comparison report: ``render_report(report.to_dict())``.

The per-output table (errors, cosine, SNR, top-1, verdict), top-k and label accuracy lines, and the
per-layer localisation (where the error first jumps). :meth:`ComparisonReport.render` calls it;
``compress --validate`` and ``onnxcompress compare`` print it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxcompress._text import elide_middle
from onnxcompress.report import memory_headline, render_memory
from onnxcompress.validation.latency import render_latency


def _num(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.1%}"


def _clip(text: str, width: int, op_type: str | None = None) -> str:
    return elide_middle(text, width, op_type=op_type)


def render_report(d: Mapping[str, Any], *, max_layers: int = 30) -> str:
    """The terminal view of a comparison report (from :meth:`ComparisonReport.to_dict`)."""
    lines = [f"compared {d['compressed']} with {d['original']} on {d['samples']} sample(s) of {d['data']}"]
    lines.append(
        f"  {'output':<24}{'dtype':<9}{'shape':<14}{'max abs':>10}{'mean abs':>10}{'rel.err':>10}"
        f"{'cosine':>10}{'SNR dB':>8}{'top-1':>8}  result"
    )
    for o in d["outputs"]:
        shape = "x".join(str(x) for x in o["shape"]) if o.get("shape") is not None else "-"
        result = "ok" if o["passed"] else "FAIL"
        if o["passed"] and not any(c["criterion"] not in ("non-finite",) for c in o["checks"]):
            result = "ok (unchecked)"
        lines.append(
            f"  {_clip(o['name'], 23):<24}{(o['dtype'] or '-'):<9}{_clip(shape, 13):<14}"
            f"{_num(o['max_abs'], '.3g'):>10}{_num(o['mean_abs'], '.3g'):>10}{_num(o['rel_l2'], '.3g'):>10}"
            f"{_num(o['cosine'], '.6f'):>10}{_num(o['snr_db'], '.1f'):>8}{_pct(o['top1_agreement']):>8}"
            f"  {result}"
        )
    for o in d["outputs"]:
        for c in o["checks"]:
            if not c["passed"]:
                lines.append(f"  FAIL {o['name']} [{c['criterion']}]: {c['detail']}")
        if o["nan_original"] or o["inf_original"] or o["nan_compressed"] or o["inf_compressed"]:
            lines.append(
                f"  {o['name']}: NaN/Inf: original {o['nan_original']} NaN, {o['inf_original']} Inf; "
                f"compressed {o['nan_compressed']} NaN, {o['inf_compressed']} Inf; "
                f"{o['nonfinite_mismatch']} position(s) disagree"
            )
        if o.get("topk_agreement") is not None:
            lines.append(
                f"  {o['name']}: top-1 agreement {_pct(o['top1_agreement'])}, original's top-1 within the "
                f"compressed top-{o['k']}: {_pct(o['topk_agreement'])} ({o['rows']} rows)"
            )
        if o.get("detection_f1") is not None:
            anchors = str(o.get("detection_unit")).endswith("anchor scores")
            what = ("positive anchors (score >= 0.25, kept at >= 0.2)" if anchors
                    else "detections (score >= 0.25, IoU >= 0.5)")
            lines.append(f"  {o['name']}: {what}: F1 {o['detection_f1']:.4f}")
        if o.get("labelled"):
            a, b = o["accuracy_original"], o["accuracy_compressed"]
            lines.append(
                f"  {o['name']}: accuracy on {o['labelled']} labels: original {_pct(a)}, "
                f"compressed {_pct(b)} ({(b - a) * 100:+.1f} points)"
            )
        for note in o["notes"]:
            lines.append(f"  {o['name']}: note: {note}")
    groups: dict[str, list[str]] = {}
    for o in d["outputs"]:
        if o["kind"] == "float":
            tol = ", ".join(f"{k}={v:g}" for k, v in o["tolerance"].items()) or "none"
            groups.setdefault(tol, []).append(o["name"])
    for tol, names in groups.items():
        who = "every output" if len(groups) == 1 and len(names) > 1 else ", ".join(names)
        lines.append(f"  tolerance ({who}): {tol}; NaN/Inf must match")
    layers = d.get("layers")
    if layers is not None:
        lines.extend(_render_layers(layers, max_layers))
    lat = d.get("latency")
    if lat is not None:
        lines.append("")
        lines.append(render_latency(lat))
    if d.get("memory"):
        lines.append("")
        lines.append(f"{'':<16}{'original':>14}{'compressed':>14}{'ratio':>9}")
        lines.extend(render_memory(d["memory"], label_width=16))
        more = memory_headline(d["memory"])
        if more:
            lines.append(f"!! {more}")
    for note in d.get("notes", []):
        lines.append(f"note: {note}")
    if d["passed"]:
        lines.append(f"PASS: {len(d['outputs'])} output(s) within tolerance")
    else:
        lines.append(
            f"FAIL: output(s) outside tolerance: {', '.join(d['failed_outputs']) or 'none compared'}"
        )
    return "\n".join(lines)


def _layer_label(s: Mapping[str, Any]) -> str:
    node = f" '{s['node']}'" if s["node"] and s["node"] != s["name"] else ""
    via = " [after Q/DQ]" if s.get("compared_as") else ""
    return f"{s['name']} ({s['op_type']}{node}){via}"


def _render_layers(layers: Mapping[str, Any], max_layers: int) -> list[str]:
    lines = [
        "",
        f"layer-wise: {layers['compared']} tensor(s) present in both models, {layers['samples']} sample(s)"
        + (
            f"; {layers['only_original']} in the original only, {layers['only_compressed']} in the "
            "compressed only (ignored)"
            if layers["only_original"] or layers["only_compressed"]
            else ""
        ),
    ]
    jumps = layers["jumps"]
    if not jumps:
        lines.append("  no layer's error grows beyond float noise")
    else:
        lines.append("  largest error jumps (relative error here vs. in its inputs):")
        for rank, s in enumerate(jumps[:5], 1):
            lines.append(
                f"  {rank}. {_layer_label(s)}: {_num(s['input_error'], '.3g')} -> {_num(s['rel_l2'], '.3g')}"
            )
    if layers["first_divergent"]:
        lines.append(f"  first tensor with relative error > 1e-3: {layers['first_divergent']}")
    rows = layers["layers"]
    first = next((i for i, s in enumerate(rows) if s["name"] == layers["first_divergent"]), 0)
    if len(rows) > max_layers and first > 0:
        lines.append(f"  the {first} tensor(s) before {layers['first_divergent']} agree (rel.err <= 1e-3)")
        rows = rows[first:]
    if rows:
        lines.append(
            f"  {'#':>4}  {'tensor':<36}{'op':<14}{'rel.err':>10}{'cosine':>10}{'max abs':>10}{'jump':>10}"
        )
        for s in rows[:max_layers]:
            lines.append(
                f"  {s['index']:>4}  {_clip(s['name'], 35, s['op_type']):<36}{_clip(s['op_type'], 13):<14}"
                f"{_num(s['rel_l2'], '.3g'):>10}{_num(s['cosine'], '.6f'):>10}{_num(s['max_abs'], '.3g'):>10}"
                f"{_num(s['jump'], '.3g'):>10}"
            )
        if len(rows) > max_layers:
            lines.append(f"  ... {len(rows) - max_layers} more (--max-layers N shows more; --json has all)")
    for note in layers.get("notes", []):
        lines.append(f"  note: {note}")
    return lines


def json_safe(value: Any) -> Any:
    """Replace inf/nan (not valid JSON) with the strings "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
