"""Charts for the HTML report, drawn with matplotlib (the optional ``[report]`` extra) into PNG data URIs.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, never through
``pyplot``, so rendering a report neither changes the caller's backend nor keeps figures alive.
Every function returns a ``data:image/png;base64,...`` string the page embeds, so the file opens
offline.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Colours shared with the page's CSS: original/before is grey-blue, compressed/after is orange.
BEFORE, AFTER, ACCENT, BAD = "#5b7fa6", "#e8833a", "#3a9d5d", "#c94040"
DPI = 100


def matplotlib_available() -> bool:
    """Whether plots can be drawn (matplotlib importable); the import happens here, not at load."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig


def _style(ax: Any) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(axis="x", color="#e3e3e3", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)


def to_data_uri(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No software/date metadata: the same report renders to the same bytes.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _short(name: str, width: int = 34) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def relative_bars(items: Sequence[tuple[str, float]]) -> str:
    """Horizontal bars of after/before (percent of the original) per summary metric."""
    fig = _figure(6.2, 0.36 * len(items) + 1.0)
    ax = fig.add_subplot()
    labels = [k for k, _ in items][::-1]
    values = [v * 100 for _, v in items][::-1]
    colours = [AFTER if v <= 100 else BAD for v in values]
    bars = ax.barh(labels, values, color=colours, height=0.6)
    ax.axvline(100, color=BEFORE, linestyle="--", linewidth=1.2)
    ax.text(
        100,
        1.0,
        " original = 100%",
        transform=ax.get_xaxis_transform(),
        color=BEFORE,
        fontsize=8,
        va="bottom",
        ha="center",
    )
    for bar, v in zip(bars, values, strict=True):
        ax.text(bar.get_width() + 1, bar.get_y() + bar.get_height() / 2, f"{v:.1f}%", va="center", fontsize=8)
    ax.set_xlim(0, max(110, max(values) * 1.15))
    ax.set_xlabel("compressed, in % of the original (lower is smaller / faster)", fontsize=8)
    _style(ax)
    return to_data_uri(fig)


def layer_panels(names: Sequence[str], panels: Sequence[dict[str, Any]]) -> str:
    """One row of horizontal bar panels sharing the layer axis.

    ``panels``: ``{"title", "series": [(label, values, colour)], "log": bool, "percent": bool}``;
    values may hold None (drawn as nothing).
    """
    n = len(names)
    fig = _figure(min(3.4 * len(panels) + 2.2, 15.5), 0.26 * n + 1.3)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    y = np.arange(n)[::-1]
    for ax, panel in zip(axes, panels, strict=True):
        series = panel["series"]
        height = 0.8 / len(series)
        for i, (label, values, colour) in enumerate(series):
            vals = np.array([np.nan if v is None else float(v) for v in values])
            if panel.get("percent"):
                vals = vals * 100
            offset = (len(series) - 1) / 2 * height - i * height
            ax.barh(y + offset, np.nan_to_num(vals, nan=0.0), height=height, color=colour, label=label)
        ax.set_title(panel["title"], fontsize=9)
        if panel.get("log"):
            ax.set_xscale("log")
        if len(series) > 1:
            ax.legend(fontsize=7, frameon=False, loc="best")
        _style(ax)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([_short(s) for s in names], fontsize=8)
    return to_data_uri(fig)


def weight_histogram(view: Any) -> str:
    """The original weights' histogram, the decoded weights' outline, and the levels as lines."""
    fig = _figure(5.6, 2.7)
    ax = fig.add_subplot()
    w = view.original
    lo, hi = float(np.min(w)), float(np.max(w))
    if view.levels is not None and len(view.levels):
        lo, hi = min(lo, float(view.levels.min())), max(hi, float(view.levels.max()))
    span = hi - lo or 1.0
    bins = np.linspace(lo - 0.02 * span, hi + 0.02 * span, 121)
    # stairs: one artist per histogram (hist draws a patch per bin, which layout then measures).
    counts, _ = np.histogram(w, bins=bins)
    decoded, _ = np.histogram(view.decoded, bins=bins)
    original = "original weights" + (" x BatchNorm scale" if view.rescaled else "")
    ax.stairs(counts, bins, fill=True, color=BEFORE, alpha=0.75, label=original)
    ax.stairs(decoded, bins, color=AFTER, linewidth=1.4, label="compressed weights")
    if view.levels is not None:
        # A few centroids read best as lines across the plot; a dense grid as ticks along the axis.
        many = len(view.levels) > 32
        ax.vlines(
            view.levels,
            0,
            0.07 if many else 1,
            transform=ax.get_xaxis_transform(),
            color=ACCENT,
            linewidth=0.8 if many else 1.0,
            alpha=0.9 if many else 0.8,
            label=f"{view.level_kind} ({len(view.levels)})",
        )
    if max(counts.max(initial=0), decoded.max(initial=0)) > 50:  # a few spikes dwarf the rest
        ax.set_yscale("symlog", linthresh=10)
    ax.set_ylabel("count", fontsize=8)
    where = f", output channel {view.channel}" if view.channel is not None else ""
    if where:
        ax.set_xlabel(f"weights of{where[1:]}", fontsize=8)
    ax.legend(fontsize=7, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.08), ncols=3)
    _style(ax)
    ax.grid(False)
    return to_data_uri(fig)


def drift_chart(rows: Sequence[dict[str, Any]]) -> str:
    """Relative error of every compared intermediate tensor, in topological order (log scale)."""
    errors = np.array([np.nan if r.get("rel_l2") is None else max(float(r["rel_l2"]), 1e-9) for r in rows])
    fig = _figure(10, 2.9)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    ax.plot(x, errors, color=AFTER, marker="o" if len(rows) <= 60 else None, markersize=3, linewidth=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("tensor, in execution order", fontsize=8)
    ax.set_ylabel("relative error vs. original", fontsize=8)
    if len(rows) <= 30:
        ax.set_xticks(x)
        ax.set_xticklabels(
            [_short(str(r.get("name", "")), 18) for r in rows], rotation=60, ha="right", fontsize=7
        )
    _style(ax)
    ax.grid(axis="y", color="#e3e3e3", linewidth=0.8)
    return to_data_uri(fig)


def pareto_chart(points: Sequence[dict[str, Any]], objective: str, fidelity: str) -> str:
    """Objective against fidelity for every candidate the auto mode tried; the chosen one ringed."""
    fig = _figure(7.2, 3.6)
    ax = fig.add_subplot()
    pts = sorted(points, key=lambda p: float(p["objective"]))
    xs = [float(p["objective"]) for p in pts]
    ys = [float(p["fidelity"]) for p in pts]
    ax.plot(xs, ys, color=BEFORE, marker="o", linewidth=1.2, markersize=5, label="front")
    chosen = [p for p in pts if p.get("chosen")]
    if chosen:
        ax.scatter(
            [float(p["objective"]) for p in chosen],
            [float(p["fidelity"]) for p in chosen],
            s=180,
            facecolors="none",
            edgecolors=AFTER,
            linewidths=2.2,
            label="chosen",
            zorder=3,
        )
    ax.set_xlabel(objective, fontsize=8)
    ax.set_ylabel(fidelity, fontsize=8)
    ax.legend(fontsize=8, frameon=False)
    _style(ax)
    ax.grid(True, color="#e3e3e3", linewidth=0.8)
    return to_data_uri(fig)
