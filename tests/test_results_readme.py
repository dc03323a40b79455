"""The README results generator (benchmarks/_readme.py) and plots (benchmarks/_plots.py) on a tiny
fake results JSON: the markers, the tables, idempotence. Not the benchmark itself."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _readme  # noqa: E402
from _readme import END, START, render_markdown, update_readme  # noqa: E402


def _row(model: str, config: str, tool: str, family: str, **kw) -> dict:
    row = {
        "model": model,
        "config": config,
        "tool": tool,
        "family": family,
        "label": config,
        "exit": 0,
        "seconds": 1.5,
        "peak_rss_mb": 120.0,
    }
    row.update(kw)
    return row


FAKE = {
    "date": "2026-01-02 03:04",
    "commit": "abc1234 fake",
    "machine": "x86_64, 2 cores",
    "versions": {"onnxruntime": "1.32.0", "onnxsim": "0.8.1", "onnx": "1.23.2"},
    "seconds": 125.0,
    "notes": ["rapid_layout skipped: no network"],
    "models": {
        "digits_mlp": {
            "task": "classify",
            "fp32_bytes": 200_000,
            "fp32_gzip": 190_000,
            "fp32_score": 0.9722,
            "eval_samples": 360,
            "calibration_samples": 200,
        },
    },
    "rows": [
        _row(
            "digits_mlp",
            "static_percentile",
            "onnxcompress",
            "int8",
            bytes=57_143,
            size_ratio=3.5,
            gzip_bytes=50_000,
            gzip_ratio=3.8,
            score=0.9694,
            agreement=0.997,
            latency={"ratio": 0.53, "spread": 0.02},
        ),
        _row(
            "digits_mlp",
            "ort_static",
            "onnxruntime",
            "int8",
            bytes=54_054,
            size_ratio=3.7,
            gzip_bytes=48_000,
            gzip_ratio=3.9,
            score=0.9611,
            agreement=0.99,
            latency={"ratio": 1.57, "spread": 0.1},
        ),
        _row(
            "digits_mlp",
            "sim_static",
            "onnxsim",
            "int8",
            exit=1,
            seconds=0.8,
            error="Error: onnxsim static: ValueError: no | calibration",
        ),
        _row(
            "digits_mlp",
            "sim_fp16",
            "onnxsim",
            "fp16",
            bytes=300_000,
            size_ratio=0.667,
            gzip_bytes=290_000,
            gzip_ratio=0.66,
            score=0.9722,
            agreement=1.0,
            dead_bytes=200_000,
            latency={"ratio": 1.0, "spread": 0.0},
        ),
        _row(
            "digits_mlp",
            "prune90_rec",
            "onnxcompress",
            "prune",
            bytes=200_000,
            size_ratio=1.0,
            gzip_bytes=95_000,
            gzip_ratio=2.0,
            score=0.965,
            agreement=0.99,
            latency={"ratio": 1.0, "spread": 0.01},
        ),
        _row(
            "digits_mlp",
            "prune90_kmeans4_rec",
            "onnxcompress",
            "prune+kmeans",
            bytes=26_000,
            size_ratio=7.69,
            gzip_bytes=18_000,
            gzip_ratio=10.5,
            score=0.964,
            agreement=0.99,
            latency={"ratio": 0.9, "spread": 0.01},
        ),
    ],
    "calibration": [
        {"tool": "ours", "method": "percentile", "samples": 50, "seconds": 0.2, "peak_rss": 140 * 2**20},
        {"tool": "ours", "method": "percentile", "samples": 800, "seconds": 2.9, "peak_rss": 142 * 2**20},
        {"tool": "ort", "method": "entropy", "samples": 50, "seconds": 0.4, "peak_rss": 260 * 2**20},
        {"tool": "ort", "method": "entropy", "samples": 800, "seconds": 6.4, "peak_rss": 2100 * 2**20},
    ],
}
README = (
    f"# Project\n\nintro\n\n## Results\n\n{START}\nold hand-pasted table 1.23x\n{END}\n\n## After\n\ntail\n"
)


def _results() -> dict:
    import run

    results = copy.deepcopy(FAKE)
    results["deep_compression"] = run.deep_compression(results)
    return results


def test_section_between_markers_is_generated_and_idempotent(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README)
    results_dir = tmp_path / "benchmarks" / "results"
    plots = {"accuracy": "run_accuracy_vs_size.png", "calibration": "run_calibration_memory.png"}

    assert update_readme(readme, _results(), plots, results_dir) is True
    text = readme.read_text()
    before, rest = text.split(START)
    section, after = rest.split(END)
    assert before == "# Project\n\nintro\n\n## Results\n\n"
    assert after == "\n\n## After\n\ntail\n"
    assert "old hand-pasted" not in section
    assert text.count(START) == text.count(END) == 1
    # images by path relative to the README; the command that regenerates it is named
    assert "](benchmarks/results/run_accuracy_vs_size.png)" in section
    assert "](benchmarks/results/run_calibration_memory.png)" in section
    assert _readme.COMMAND in section
    # the side-by-side row: ours, onnxruntime, onnxsim's failure on one line with its pipe escaped
    line = next(ln for ln in section.splitlines() if "| int8 static |" in ln)
    cells = [c.strip() for c in line.strip("|").split(" | ")]
    assert cells[0] == "digits_mlp (accuracy 97.2)"
    assert cells[2:] == [
        "3.50x, 96.9, 0.53x",
        "3.70x, 96.1, 1.57x",
        "fails: Error: onnxsim static: ValueError: no \\| calibration",
    ]
    # a peer file that keeps its fp32 originals is flagged; a mode a peer lacks says n/a
    fp16 = next(ln for ln in section.splitlines() if "| fp16 |" in ln)
    assert fp16.endswith("| - | n/a | 0.67x, 97.2, 1.00x † |")
    # the Deep Compression stages: original, pruned, pruned + coded, shared, coded
    stages = [
        ln.split(" | ")[0].strip("| ")
        for ln in section.splitlines()
        if ln.startswith("| ") and "x |" in ln and "%" in ln and "digits_mlp" not in ln
    ]
    assert stages == ["original", "pruned", "pruned + coded", "shared", "coded"]
    assert "| coded | prune90_kmeans4_rec | 18,000 | 11.11x | 96.4% |" in section
    # calibration memory: ours flat, onnxruntime's growing
    assert "| onnxruntime | entropy | 260 MB | 2,100 MB |" in section

    assert update_readme(readme, _results(), plots, results_dir) is False
    assert readme.read_text() == text


def test_missing_markers_raise_and_leave_the_file_alone(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    for text in ("# no markers\n", f"{END}\nreversed\n{START}\n"):
        readme.write_text(text)
        with pytest.raises(ValueError, match="markers"):
            update_readme(readme, _results(), {}, tmp_path)
        assert readme.read_text() == text


def test_full_markdown_lists_every_row_with_its_error() -> None:
    results = _results()
    results["pending"] = ["rapid_layout"]  # a run stopped early says what it did not reach
    md = render_markdown(results, {})
    assert "- The run stopped before measuring: rapid_layout." in md
    table = [
        ln
        for ln in md.splitlines()
        if ln.startswith("| ") and ln.split(" | ")[1] in {"onnxcompress", "onnxruntime", "onnxsim"}
    ]
    assert len(table) == len(FAKE["rows"])
    assert any("ValueError: no \\| calibration" in ln for ln in table)
    assert "| 200 |" in next(ln for ln in table if ln.startswith("| sim_fp16 "))  # dead kB


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from _plots import pareto_front, write_plots

    assert pareto_front([(1.0, 0.9), (2.0, 0.95), (3.0, 0.8), (2.5, 0.7)]) == [(2.0, 0.95), (3.0, 0.8)]
    plots = write_plots(_results(), tmp_path)
    assert set(plots) == {"accuracy", "latency", "calibration"}
    for name in plots.values():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
