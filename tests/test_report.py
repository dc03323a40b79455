"""The compression report's text and JSON (onnxcompress/report.py)."""

from __future__ import annotations

import json

import onnx_ir as ir
import pytest

from onnxcompress.pipeline import PipelineResult
from onnxcompress.report import MEMORY_SLACK, MEMORY_SLACK_BYTES, CompressionReport, SizeInfo, memory_headline

MB = 1 << 20


def _report(original: int | None, compressed: int | None, *, live: tuple[int, int] | None = None
            ) -> CompressionReport:
    size = SizeInfo(file_bytes=100, gzip_bytes=90, parameters=10, weight_bytes=40, sparsity=0.0, nodes=1)
    graph = ir.Graph([], [], nodes=[], name="g")
    result = PipelineResult(model=ir.Model(graph, ir_version=10), passes=[], recipe={})
    memory = {
        "original": {"resident_bytes": original, "peak_bytes": original, "error": None,
                     "live_bytes": live[0] if live else None},
        "compressed": {"resident_bytes": compressed, "peak_bytes": compressed, "error": None,
                       "live_bytes": live[1] if live else None},
    }
    return CompressionReport(input="a.onnx", output="b.onnx", before=size, after=size, result=result,
                             memory=memory)


def test_more_session_memory_than_the_original_is_a_headline() -> None:
    report = _report(10 * MB, 12 * MB)
    text = report.render()
    first = text.splitlines()[0]
    assert first.startswith("!! session memory: the compressed model needs 20% more than the original")
    assert "10.0 MB -> 12.0 MB, resident after load and one run" in first
    assert json.loads(report.to_json())["headlines"] == [first[3:]]


@pytest.mark.parametrize("compressed", [8 * MB, 10 * MB, int(10 * MB * (1 + MEMORY_SLACK)), None])
def test_equal_or_less_memory_or_none_measured_is_no_headline(compressed: int | None) -> None:
    report = _report(10 * MB, compressed)
    assert memory_headline(report.memory) is None
    assert not report.render().startswith("!!")
    assert json.loads(report.to_json())["headlines"] == []


def test_no_memory_measured_is_no_headline() -> None:
    assert memory_headline(None) is None


def test_live_memory_decides_where_both_were_measured() -> None:
    # resident 20% higher (freed load-time copies the allocator keeps), live equal: no headline
    report = _report(10 * MB, 12 * MB, live=(8 * MB, 8 * MB))
    assert memory_headline(report.memory) is None
    assert "live memory" in report.render()
    # live higher: the headline names live memory
    report = _report(10 * MB, 10 * MB, live=(8 * MB, 10 * MB))
    assert memory_headline(report.memory).endswith("(8.0 MB -> 10.0 MB, live, after load and one run)")


def test_resident_memory_well_past_the_originals_is_named_though_live_is_within() -> None:
    # a ResNet-18 torch exports with external data: fp32 105 MB resident, its int8 148 MB (the
    # fold's freed copies the allocator keeps), live 67 MB both: users read resident memory
    report = _report(105 * MB, 148 * MB, live=(67 * MB, 67 * MB))
    report.memory["original"]["peak_bytes"] = 106 * MB
    report.memory["compressed"]["peak_bytes"] = 162 * MB
    line = memory_headline(report.memory)
    assert line is not None and line.startswith("session memory: the compressed model stays resident "
                                                "at 1.41x the original's after load")
    assert "peak 106.0 MB -> 162.0 MB" in line and "(67.0 MB -> 67.0 MB)" in line
    # a few MB of resident noise (nudenet's fp32 moves 41-44 MB between runs) is not named
    assert memory_headline(_report(40 * MB, 46 * MB, live=(33 * MB, 33 * MB)).memory) is None


def test_a_few_hundred_kilobytes_are_not_an_increase() -> None:
    # a small model: 2% alone would be 40 KB, under what a fold's arena chunk costs
    most = int(2 * MB * (1 + MEMORY_SLACK)) + MEMORY_SLACK_BYTES
    assert memory_headline(_report(2 * MB, most).memory) is None
    assert memory_headline(_report(2 * MB, most + 1).memory) is not None


def test_a_load_time_peak_well_above_the_originals_is_named() -> None:
    # paraphrase-MiniLM-L3 static int8: live within the original's, peak 126 -> 245 MB at load
    report = _report(126 * MB, 120 * MB, live=(100 * MB, 100 * MB))
    report.memory["compressed"]["peak_bytes"] = 245 * MB
    line = memory_headline(report.memory)
    assert line is not None and line.startswith("session memory peaks at 1.94x") and "no more" in line
    report.memory["compressed"]["peak_bytes"] = 140 * MB  # 1.11x: transient noise, not named
    assert memory_headline(report.memory) is None
    assert "live (pinned)" not in report.render()
    report.memory["original"]["live_bytes_pinned"] = 99 * MB
    report.memory["compressed"]["live_bytes_pinned"] = 99 * MB
    assert "live (pinned)" in report.render()  # the reading a headline would judge is shown


def test_a_pass_storing_another_type_than_its_name_says_is_named_with_it() -> None:
    # auto's fp16 layers are written by the bfloat16 pass with dtype float16: the report said
    # "pass bfloat16" beside auto's "fp16" (batch 7)
    from onnxcompress.passes import BFloat16
    from onnxcompress.pipeline import Pipeline
    from tests import helpers as h

    size = SizeInfo(file_bytes=100, gzip_bytes=90, parameters=10, weight_bytes=40, sparsity=0.0, nodes=1)
    for dtype, title in (("float16", "pass bfloat16 (dtype float16):"), ("bfloat16", "pass bfloat16:")):
        result = Pipeline([BFloat16(dtype=dtype)]).run(h.mlp())
        text = CompressionReport(input="a.onnx", output="b.onnx", before=size, after=size,
                                 result=result).render()
        assert title in text


def test_metadata_the_run_removed_gets_a_size_row_of_its_own() -> None:
    """A torch 2.13 export of GTCRN carries 355 KB of per-node debug metadata in 653 KB: a
    channel pruning that changed nothing read "2.50x" with nothing beside it but a note."""
    before = SizeInfo(file_bytes=1000, gzip_bytes=900, parameters=10, weight_bytes=400, sparsity=0.0, nodes=1)
    after = SizeInfo(file_bytes=450, gzip_bytes=400, parameters=10, weight_bytes=400, sparsity=0.0, nodes=1)
    graph = ir.Graph([], [], nodes=[], name="g")
    for debug, row in ((500, True), (30, False)):
        result = PipelineResult(model=ir.Model(graph, ir_version=10), passes=[], recipe={}, debug_bytes=debug)
        text = CompressionReport(input="a.onnx", output="b.onnx", before=before, after=after,
                                 result=result).render()
        lines = [line for line in text.splitlines() if "w/o metadata" in line]
        assert bool(lines) is row
        if row:
            assert lines[0].split()[-1] == "1.11x"  # (1000 - 500) / 450

