"""The README's pictures from ``benchmarks/run.py``'s results JSON.

matplotlib (the ``[report]`` extra) through ``Figure`` + the Agg canvas, never pyplot's global
state. Each function writes one PNG and returns its file name; ``write_plots`` returns
``{key: file name}`` for the ones it could draw (none without matplotlib).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TOOLS = {  # tool -> (marker, colour)
    "onnxcompress": ("o", "#1f77b4"),
    "onnxruntime": ("s", "#d62728"),
    "onnxsim": ("^", "#2ca02c"),
}
FAMILY_COLOURS = {
    "prune": "#9467bd",
    "kmeans": "#1f77b4",
    "prune+kmeans": "#17becf",
    "int8": "#ff7f0e",
    "int4": "#8c564b",
    "fp16": "#7f7f7f",
    "auto": "#e377c2",
}


def _figure(n: int, width: float = 4.2, height: float = 3.3):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(width * cols, height * rows), dpi=90)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both (larger size ratio, higher score), by size ratio."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return sorted(front)


def _ok(row: dict[str, Any]) -> bool:
    return "error" not in row and "run_error" not in row and "score" in row


def _per_model(
    results: dict[str, Any], path: Path, y_of, ylabel: str, title: str, front: bool, span: float | None = None
) -> str:
    """One panel per model; with ``span``, values more than ``span`` below the fp32 value are drawn
    on the bottom edge (a broken configuration would otherwise squash the interesting range)."""
    models = list(results["models"])
    fig, axes = _figure(len(models))
    for ax, model in zip(axes, models, strict=True):
        info = results["models"][model]
        rows = [r for r in results["rows"] if r["model"] == model and _ok(r) and y_of(r, info) is not None]
        floor = None
        if span is not None and rows:
            ref = y_of({"score": info["fp32_score"]}, info)
            floor = max(min(y_of(r, info) for r in rows), ref - span)
            ax.set_ylim(floor - 0.03 * (ref - floor + 1), ref + 0.05 * (ref - floor + 1))
        for tool, (marker, colour) in TOOLS.items():
            pts = [(r["size_ratio"], max(y_of(r, info), floor if floor is not None else -1e300), r)
                   for r in rows if r["tool"] == tool]  # fmt: skip
            if not pts:
                continue
            if tool == "onnxcompress":
                for x, y, r in pts:
                    ax.scatter(
                        x, y, marker=marker, s=26, color=FAMILY_COLOURS.get(r["family"], colour), alpha=0.85
                    )
            else:
                ax.scatter(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    marker=marker,
                    s=42,
                    facecolors="none",
                    edgecolors=colour,
                    linewidths=1.4,
                    label=tool,
                )
            if front:
                f = pareto_front([(x, y) for x, y, _ in pts])
                ax.step([p[0] for p in f], [p[1] for p in f], where="post", color=colour, lw=1, alpha=0.7)
        ax.scatter(
            [1.0],
            [y_of({"score": info["fp32_score"], "latency": {"ratio": 1.0}}, info)],
            marker="*",
            s=90,
            color="black",
            label="fp32",
        )
        ax.set_xscale("log")
        _ratio_ticks(ax.xaxis)
        ax.set_title(f"{model} ({info['fp32_bytes'] / 1e3:,.0f} kB)", fontsize=9)
        ax.set_xlabel("size ratio (fp32 / output, log)", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles = [
        _handle(m, c, "onnxcompress: " + f, filled=True) for f, c in FAMILY_COLOURS.items() for m in ["o"]
    ] + [_handle(m, c, t, filled=False) for t, (m, c) in TOOLS.items() if t != "onnxcompress"]
    handles.append(_handle("*", "black", "fp32", filled=True))
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    fig.savefig(path)
    return path.name


def _ratio_ticks(axis) -> None:
    """Log-axis ticks as plain ratios (0.5x, 1x, 4x) rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=2))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    axis.set_minor_formatter(NullFormatter())


def _handle(marker: str, colour: str, label: str, filled: bool):
    from matplotlib.lines import Line2D

    return Line2D(
        [], [], marker=marker, ls="", color=colour, markerfacecolor=colour if filled else "none", label=label
    )


def accuracy_vs_size(results: dict[str, Any], out: Path) -> str:
    return _per_model(
        results,
        out / "run_accuracy_vs_size.png",
        lambda r, i: 100 * r["score"],
        "task score (%)",
        "Task score against size: every configuration and peer (lines: each tool's Pareto front; "
        "more than 30 points below fp32: on the bottom edge)",
        front=True,
        span=30.0,
    )


def latency_vs_size(results: dict[str, Any], out: Path) -> str:
    return _per_model(
        results,
        out / "run_latency_vs_size.png",
        lambda r, i: (r.get("latency") or {}).get("ratio"),
        "latency / fp32 (1 thread)",
        "Latency against size (median of alternated runs; below 1 = faster)",
        front=False,
    )


def calibration_memory(results: dict[str, Any], out: Path) -> str | None:
    rows = [r for r in results.get("calibration", []) if "peak_rss" in r]
    if not rows:
        return None
    fig, (ax,) = _figure(1, width=6, height=3.8)
    for tool, method in dict.fromkeys((r["tool"], r["method"]) for r in rows):
        sel = sorted(
            (r for r in rows if r["tool"] == tool and r["method"] == method), key=lambda r: r["samples"]
        )
        name = "onnxcompress" if tool == "ours" else "onnxruntime"
        marker, colour = TOOLS[name]
        ax.plot(
            [r["samples"] for r in sel],
            [r["peak_rss"] / 2**20 for r in sel],
            marker=marker,
            ls="-" if method in ("percentile", "minmax") else "--",
            color=colour,
            label=f"{name} {method}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("calibration samples (resnet_digits)", fontsize=8)
    ax.set_ylabel("peak RSS of the quantizing process (MB)", fontsize=8)
    ax.set_title("Static int8: calibration memory against sample count", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "run_calibration_memory.png"
    fig.savefig(path)
    return path.name


def write_plots(results: dict[str, Any], out: Path) -> dict[str, str]:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.warning("matplotlib is not installed (pip install onnxcompress[report]): no plots")
        return {}
    plots: dict[str, str] = {}
    if results.get("models"):
        plots["accuracy"] = accuracy_vs_size(results, out)
        plots["latency"] = latency_vs_size(results, out)
    cal = calibration_memory(results, out)
    if cal:
        plots["calibration"] = cal
    return plots
