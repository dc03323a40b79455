"""The compression report: sizes before/after, what every pass did, validation; table or JSON."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxcompress._text import elide_middle
from onnxcompress.errors import ConfigError
from onnxcompress.memory import SLACK_BYTES, SLACK_FRACTION, report_excess
from onnxcompress.pipeline import PipelineResult
from onnxcompress.stats import GZIP_LEVEL

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
    # False: gzip_bytes is estimated from samples (files over stats.GZIP_EXACT_MAX_BYTES).
    gzip_exact: bool = True
    # The model file and its external-data files, when measured on disk (not in the report).
    files: list[Path] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "files"}


@dataclass
class CompressionReport:
    input: str
    output: str | None
    before: SizeInfo
    after: SizeInfo
    result: PipelineResult
    validation: dict[str, Any] | None = None
    # onnxruntime session memory of both files (api.measure_session_memory), when asked for.
    memory: dict[str, Any] | None = None
    # A comparison with the input on a few calibration samples (api.check_fidelity) when no
    # --validate was asked for: said, never gating.
    fidelity: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.before.file_bytes / max(self.after.file_bytes, 1)

    @property
    def gzip_ratio(self) -> float:
        return self.before.gzip_bytes / max(self.after.gzip_bytes, 1)

    @property
    def headlines(self) -> list[str]:
        """The passes' headlines, then a measured memory increase: the standard is never more
        session memory than the original, so a miss is said first, not left to a ratio."""
        extra = [h for h in (fidelity_headline(self.fidelity), memory_headline(self.memory)) if h]
        return list(self.result.headlines) + extra

    def to_dict(self) -> dict[str, Any]:
        out = {
            # Decisions that change what the user asked for come first, as in render().
            "headlines": self.headlines,
            "input": self.input,
            "output": self.output,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "size_ratio": round(self.ratio, 4),
            "gzip_ratio": round(self.gzip_ratio, 4),
            "gzip_level": GZIP_LEVEL,
            **self.result.to_dict(),
            "validation": self.validation,
            "fidelity": self.fidelity,
            "memory": self.memory,
            **self.extra,
        }
        out["headlines"] = self.headlines  # the pipeline's dict has only the passes'
        return out

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
        lines = [f"!! {h}" for h in self.headlines]
        if lines:
            lines.append("")
        lines += [
            f"{'':<14}{'before':>14}{'after':>14}{'ratio':>9}",
            f"{'file size':<14}{_fmt_bytes(b.file_bytes):>14}{_fmt_bytes(a.file_bytes):>14}"
            f"{self.ratio:>8.2f}x",
            *_metadata_aside(b.file_bytes, a.file_bytes, self.result.debug_bytes),
            f"{f'gzip -{GZIP_LEVEL} size':<14}{_gz(b):>14}{_gz(a):>14}"
            f"{self.gzip_ratio:>8.2f}x",
            f"{'weight bytes':<14}{_fmt_bytes(b.weight_bytes):>14}{_fmt_bytes(a.weight_bytes):>14}"
            + (f"{b.weight_bytes / max(a.weight_bytes, 1):>8.2f}x" if b.weight_bytes else f"{'-':>9}"),
            # Stored values: packed k-means indices or int8 codes count once per stored element.
            f"{'stored values':<14}{b.parameters:>14,}{a.parameters:>14,}",
            f"{'zeros stored':<14}{b.sparsity:>14.1%}{a.sparsity:>14.1%}",
            f"{'nodes':<14}{b.nodes:>14,}{a.nodes:>14,}",
        ]
        lines += render_memory(self.memory)
        if self.fidelity:
            lines.append(render_fidelity(self.fidelity))
        for p in self.result.passes:
            # A name the pass both changed and skipped (e.g. changed in one use, left alone in
            # another) is listed once, as changed, with the reason as a remark.
            changed = {s.name for s in p.layers}
            skipped = {r: [n for n in names if n not in changed] for r, names in p.skipped.items()}
            partly = {r: [n for n in names if n in changed] for r, names in p.skipped.items()}
            lines.append("")
            # a pass storing another type than its name says (auto's fp16 layers: bfloat16's pass
            # with dtype float16) is named with it
            dtype = p.config.get("dtype") if isinstance(p.config, dict) else None
            name = p.pass_name + (f" (dtype {dtype})" if dtype not in (None, p.pass_name) else "")
            if p.status == "rolled_back":
                lines.append(f"pass {name}: rolled back ({p.reason}), {p.seconds:.2f} s")
            else:
                status = p.status.replace("_", " ")
                lines.append(
                    f"pass {name}: {status}, {len(p.layers)} tensor(s) changed, "
                    f"{sum(map(len, skipped.values()))} skipped, {p.seconds:.2f} s"
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
            for reason, names in skipped.items():
                if names:
                    lines.append(f"  skipped {len(names)}: {reason} ({_some(names)})")
            for reason, names in partly.items():
                if names:
                    lines.append(f"  changed, with a remark, {len(names)}: {reason} ({_some(names)})")
            for note in p.notes:
                lines.append(f"  note: {note}")
        for note in self.result.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)


# Live memory (see onnxcompress.memory) of one file moves by a few pages from process to process:
# the headline's slack is memory.report_excess's (these names are kept for callers).
MEMORY_SLACK = SLACK_FRACTION
MEMORY_SLACK_BYTES = SLACK_BYTES


def fidelity_headline(fidelity: dict[str, Any] | None) -> str | None:
    """One line when the unasked comparison on calibration samples misses the default tolerance
    (the policy of compare and --validate), else None."""
    if not fidelity or fidelity.get("passed") is not False:
        return None
    misses = []
    for o in fidelity.get("outputs", []):
        for c in o.get("checks", []):
            if not c.get("passed", True):
                misses.append(f"{o['name']}: {c.get('detail') or c['criterion']}")
    return (f"fidelity: on {fidelity.get('samples')} calibration sample(s) the output misses the "
            f"default tolerance ({'; '.join(misses[:3]) or 'see the report'}); measure it on held-out "
            "data (compare, or --validate --validate-data); fewer bits or --reconstruct keep more")


def render_fidelity(fidelity: dict[str, Any]) -> str:
    """The report's one fidelity row: the unasked check's outcome per output (worst cosine, top-1)."""
    if "error" in fidelity:
        return f"{'fidelity':<14}not checked: {fidelity['error']}"
    parts = []
    for o in fidelity.get("outputs", []):
        stats = ", ".join(x for x in (
            f"cosine {o['cosine']:.4f}" if isinstance(o.get("cosine"), float) else "",
            f"top-1 {o['top1_agreement']:.1%}" if isinstance(o.get("top1_agreement"), float) else "",
        ) if x)  # fmt: skip
        verdict = "ok" if o.get("passed") else "MISSES"
        parts.append(f"{_clip(o['name'], 24)} {verdict}" + (f" ({stats})" if stats else ""))
    head = f"{'fidelity':<14}{fidelity.get('samples')} calibration samples, default tolerance: "
    return head + "; ".join(parts)


# A load-time peak is named in the headline past this ratio and size (paraphrase-MiniLM-L3: static
# int8 peaked at 1.95x fp32's 126 MB, k-means 8 at 1.62x, while live memory stayed within).
PEAK_NOTE_RATIO = 1.25
PEAK_NOTE_BYTES = 16 << 20
# ... and memory that stays resident after load past this ratio and size, where live memory is
# within: resident memory of one file moves by a few MB between runs (nudenet fp32: 41-44 MB),
# but an original whose weights sit in external data (torch.onnx.export's default since 2.9)
# loads them without the copies onnxruntime's fold of a decode graph frees and the C allocator
# keeps (a ResNet-18 export: fp32 105 MB resident, its weight-only int8 146-166 MB, live 67 MB
# both). Users read resident memory, so the headline names it.
RESIDENT_NOTE_RATIO = 1.10
RESIDENT_NOTE_BYTES = 8 << 20


def _beyond(a: int | None, b: int | None, ratio: float, size: int) -> bool:
    return bool(a and b and b > ratio * a and b - a > size)


def memory_headline(memory: dict[str, Any] | None) -> str | None:
    """One line when the compressed model needs more session memory than the original, else None.
    "Needs" is live memory (resident once the allocator has returned what it holds free), where
    both were measured: resident memory with glibc's defaults also counts the copies onnxruntime
    freed while loading, which vary by megabytes between two runs of one file. Where a live
    excess was read again with the allocator pinned (``compare_session_memory``), that reading
    decides: the default allocator's live reading has two modes. Within live memory, a peak or a
    resident excess well past that noise is still named, with what it is."""
    if not memory:
        return None
    a, b = memory.get("original") or {}, memory.get("compressed") or {}
    key = next((k for k in ("live_bytes_pinned", "live_bytes") if a.get(k) and b.get(k)), "resident_bytes")
    va, vb = a.get(key), b.get(key)
    if not va or not vb or not report_excess(va, vb):
        pa, pb = a.get("peak_bytes"), b.get("peak_bytes")
        ra, rb = a.get("resident_bytes"), b.get("resident_bytes")
        resident = key != "resident_bytes" and _beyond(ra, rb, RESIDENT_NOTE_RATIO, RESIDENT_NOTE_BYTES)
        peak = _beyond(pa, pb, PEAK_NOTE_RATIO, PEAK_NOTE_BYTES)
        if resident:
            # live is within, resident is not: the fold's freed copies stay with the allocator
            return (f"session memory: the compressed model stays resident at {rb / ra:.2f}x the "
                    f"original's after load ({_fmt_bytes(ra)} -> {_fmt_bytes(rb)}"
                    + (f", peak {_fmt_bytes(pa)} -> {_fmt_bytes(pb)}" if pa and pb else "")
                    + "): the C allocator keeps what onnxruntime freed loading and running it (decode "
                    "graphs folded back into float weights, or a per-call decode's buffers); the "
                    f"session's live objects need no more than the original's ({_fmt_bytes(va)} -> "
                    f"{_fmt_bytes(vb)})")
        if peak:
            # transient: what stays is within the original's, but a device must fit the peak too
            return (f"session memory peaks at {pb / pa:.2f}x the original's while onnxruntime "
                    f"loads it ({_fmt_bytes(pa)} -> {_fmt_bytes(pb)}: it folds the decode graphs "
                    "back into float weights); after load it needs no more than the original")
        return None
    what = {"live_bytes_pinned": "live, after load and one run, read again with glibc's mmap "
            "threshold pinned", "live_bytes": "live, after load and one run"}.get(
        key, "resident after load and one run")
    return (f"session memory: the compressed model needs {vb / va - 1:.0%} more than the original "
            f"({_fmt_bytes(va)} -> {_fmt_bytes(vb)}, {what})")


def render_memory(memory: dict[str, Any] | None, *, label_width: int = 14) -> list[str]:
    """Rows "session memory" (resident after load and one run), "live memory" (the same once the
    allocator returned its free memory) and "peak memory" (during load),
    before/after and ratio, in the layout of the size table; a note when not measured."""
    if not memory:
        return []
    a, b = memory.get("original") or {}, memory.get("compressed") or {}
    problems = [f"{who}: {m['error']}" for who, m in (("original", a), ("compressed", b)) if m.get("error")]
    if problems:
        return [f"{'session memory':<{label_width}}not measured ({'; '.join(problems)})"]
    rows = []
    # the pinned re-reading, when an excess was read again, is the one the headline judges
    for label, key in (("session memory", "resident_bytes"), ("live memory", "live_bytes"),
                       ("live (pinned)", "live_bytes_pinned"), ("peak memory", "peak_bytes")):
        va, vb = a.get(key), b.get(key)
        if va is None or vb is None:
            continue
        # ratio as elsewhere in the table: before / after (above 1: the compressed needs less)
        r = f"{va / vb:>8.2f}x" if vb else ""
        rows.append(f"{label:<{label_width}}{_fmt_bytes(va):>14}{_fmt_bytes(vb):>14}{r}")
    notes = [f"{who}: {m['note']}" for who, m in (("original", a), ("compressed", b)) if m.get("note")]
    if notes:
        rows.append(f"{'':<{label_width}}(after session creation only; {'; '.join(notes)})")
    return rows


def _some(names: list[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _fmt_metric(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _clip(text: str, width: int) -> str:
    return elide_middle(text, width)


def _opt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _gz(size: SizeInfo) -> str:
    """The gzip size; "~" marks an estimate from samples (large files)."""
    return ("" if size.gzip_exact else "~") + _fmt_bytes(size.gzip_bytes)


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


#: An exporter's debug metadata over this share of the input gets a size row of its own.
METADATA_ASIDE_SHARE = 0.05


def _metadata_aside(before: int, after: int, debug_bytes: int) -> list[str]:
    """The file size row without the exporter's per-node metadata the run removed, when it is a
    noticeable share of the input: a torch 2.13 export of GTCRN carries 355 KB of it in 653 KB,
    and a channel pruning that changed nothing read "2.50x"."""
    if debug_bytes <= METADATA_ASIDE_SHARE * before:
        return []
    rest = before - debug_bytes
    return [f"{'  w/o metadata':<14}{_fmt_bytes(rest):>14}{_fmt_bytes(after):>14}"
            f"{rest / max(after, 1):>8.2f}x"]
