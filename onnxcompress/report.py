"""The compression report: sizes before/after, what every pass did, validation; table or JSON."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxcompress.errors import ConfigError
from onnxcompress.pipeline import PipelineResult

# A report's file format follows its extension; anything else is an error, never silent JSON.
REPORT_FORMATS = {".json": "json", ".html": "html", ".htm": "html"}


def report_format(path: str | os.PathLike) -> str:
    """``"json"`` or ``"html"`` for a report path, by its extension; ConfigError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in REPORT_FORMATS:
        raise ConfigError(
            f"{path}: unknown report format '{suffix or '(no extension)'}'.",
            hint="name the report file .json (data) or .html (a page with tables and plots).",
        )
    return REPORT_FORMATS[suffix]


@dataclass
class SizeInfo:
    file_bytes: int
    gzip_bytes: int
    parameters: int
    weight_bytes: int
    sparsity: float
    nodes: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class CompressionReport:
    input: str
    output: str | None
    before: SizeInfo
    after: SizeInfo
    result: PipelineResult
    validation: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.before.file_bytes / max(self.after.file_bytes, 1)

    @property
    def gzip_ratio(self) -> float:
        return self.before.gzip_bytes / max(self.after.gzip_bytes, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            # Decisions that change what the user asked for come first, as in render().
            "headlines": self.result.headlines,
            "input": self.input,
            "output": self.output,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "size_ratio": round(self.ratio, 4),
            "gzip_ratio": round(self.gzip_ratio, 4),
            **self.result.to_dict(),
            "validation": self.validation,
            **self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default)

    def to_html(self, **kwargs: Any) -> str:
        """The self-contained HTML page (see :func:`onnxcompress.report_html.render_html`); the weight
        histograms read the input and output models from their paths."""
        from onnxcompress.report_html import render_html

        kwargs.setdefault("original_model", self.input)
        kwargs.setdefault("compressed_model", self.output)
        return render_html(self.to_dict(), **kwargs)

    def to_format(self, fmt: str) -> str:
        """The report as ``"json"`` or ``"html"`` (what :func:`report_format` returns)."""
        return self.to_html() if fmt == "html" else self.to_json()

    def render(self, *, max_layers: int = 40) -> str:
        """A human-readable summary: sizes, then per pass the layers changed and the skips."""
        b, a = self.before, self.after
        lines = [f"!! {h}" for h in self.result.headlines]
        if lines:
            lines.append("")
        lines += [
            f"{'':<14}{'before':>14}{'after':>14}{'ratio':>9}",
            f"{'file size':<14}{_fmt_bytes(b.file_bytes):>14}{_fmt_bytes(a.file_bytes):>14}"
            f"{self.ratio:>8.2f}x",
            f"{'gzip size':<14}{_fmt_bytes(b.gzip_bytes):>14}{_fmt_bytes(a.gzip_bytes):>14}"
            f"{self.gzip_ratio:>8.2f}x",
            f"{'weight bytes':<14}{_fmt_bytes(b.weight_bytes):>14}{_fmt_bytes(a.weight_bytes):>14}"
            f"{b.weight_bytes / max(a.weight_bytes, 1):>8.2f}x",
            # Stored values: packed k-means indices or int8 codes count once per stored element.
            f"{'stored values':<14}{b.parameters:>14,}{a.parameters:>14,}",
            f"{'zeros stored':<14}{b.sparsity:>14.1%}{a.sparsity:>14.1%}",
            f"{'nodes':<14}{b.nodes:>14,}{a.nodes:>14,}",
        ]
        for p in self.result.passes:
            lines.append("")
            if p.status == "rolled_back":
                lines.append(f"pass {p.pass_name}: rolled back ({p.reason}), {p.seconds:.2f} s")
            else:
                status = p.status.replace("_", " ")
                lines.append(
                    f"pass {p.pass_name}: {status}, {len(p.layers)} tensor(s) changed, "
                    f"{p.skipped_count} skipped, {p.seconds:.2f} s"
                    + (f" ({p.reason})" if p.status == "unchanged" else "")
                )
            scalars = {k: v for k, v in p.metrics.items() if isinstance(v, (int, float, str, bool))}
            if scalars:
                lines.append("  " + ", ".join(f"{k}={_fmt_metric(v)}" for k, v in scalars.items()))
            if p.layers:
                lines.append(
                    f"  {'tensor':<36}{'op':<10}{'shape':<18}{'bytes':>18}{'sparsity':>9}"
                    f"{'bits/w':>7}{'rel.err':>9}"
                )
                for s in p.layers[:max_layers]:
                    shape = "x".join(str(d) for d in s.shape)
                    size = f"{_fmt_bytes(s.bytes_before)}>{_fmt_bytes(s.bytes_after)}"
                    lines.append(
                        f"  {_clip(s.name, 35):<36}{_clip(s.op_type, 9):<10}{_clip(shape, 17):<18}"
                        f"{size:>18}{_opt(s.sparsity, '.1%'):>9}{_opt(s.bits, '.3g'):>7}"
                        f"{_opt(s.error, '.2e'):>9}"
                    )
                if len(p.layers) > max_layers:
                    lines.append(f"  ... {len(p.layers) - max_layers} more (see --report JSON)")
            for reason, names in p.skipped.items():
                shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
                lines.append(f"  skipped {len(names)}: {reason} ({shown})")
            for note in p.notes:
                lines.append(f"  note: {note}")
        for note in self.result.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)


def _fmt_metric(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def _opt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    return str(obj)
