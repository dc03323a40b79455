"""The auto benchmark's baseline: the best uniform setting within 1 point, read from a
``bench_real_models.py`` results json (benchmarks/bench_auto_real_models.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_auto_real_models as bench  # noqa: E402


def _row(model: str, config: str, size: int, value: float, exit_code: int = 0) -> dict:
    return {"model": model, "config": config, "exit": exit_code, "bytes": size, "metric": {"value": value}}


def test_smallest_within_one_point_wins() -> None:
    rows = [_row("a", "dynamic", 1000, 0.995), _row("a", "kmeans8", 900, 0.991),
            _row("a", "static", 500, 1.0),  # not a uniform setting the benchmark compares with
            _row("b", "kmeans8", 10, 1.0)]
    assert bench.best_uniform(rows, "a") == (900, "kmeans8 (99.1)")


def test_a_setting_past_one_point_or_failed_does_not_count() -> None:
    rows = [_row("a", "dynamic", 1000, 0.995), _row("a", "kmeans8", 900, 0.985),
            _row("c", "kmeans8", 900, 1.0, exit_code=1)]
    assert bench.best_uniform(rows, "a") == (1000, "dynamic (99.5)")
    assert bench.best_uniform(rows, "c") == (None, "none within 1 pt")


def test_none_within_one_point_and_no_baseline_are_told_apart() -> None:
    rows = [_row("seal", "dynamic", 1000, 0.459), _row("seal", "kmeans8", 990, 0.767)]
    assert bench.best_uniform(rows, "seal") == (None, "none within 1 pt")
    assert bench.best_uniform(rows, "other") == (None, "no baseline")


def test_baseline_rows_from_a_results_json(tmp_path: Path) -> None:
    path = tmp_path / "uniform.json"
    path.write_text(json.dumps({"rows": [_row("a", "dynamic", 1000, 1.0), _row("a", "kmeans8", 990, 0.99)]}))
    assert bench.best_uniform(bench.baseline_rows(path, "a"), "a") == (990, "kmeans8 (99.0)")
    assert bench.baseline_rows(tmp_path / "missing.json", "a") == []
