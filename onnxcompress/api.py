"""File-to-file compression: load, run a pipeline, save atomically, measure before and after.

This is what ``onnxcompress compress`` calls; Python users can call it directly or use
:class:`onnxcompress.Pipeline` on in-memory models.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import onnx_ir as ir

from onnxcompress import runtime
from onnxcompress.data import feed_source, input_specs
from onnxcompress.errors import DataError, OnnxCompressError, PassError
from onnxcompress.graph.maps import DETACHED_MAPS
from onnxcompress.model import (
    MODEL_FILES,
    check_output_path,
    external_base_dir,
    is_large,
    load_model,
    model_file_bytes,
    model_files,
    to_proto,
)
from onnxcompress.model import save_model as write_model
from onnxcompress.pipeline import Pipeline, PipelineResult, finish_for_writing
from onnxcompress.progress import ProgressLog
from onnxcompress.report import CompressionReport, SizeInfo
from onnxcompress.stats import GzipJob, gzip_size, model_stats
from onnxcompress.synthetic import check_shape_names, given_shapes, synthetic_feeds

logger = logging.getLogger(__name__)

# Called after saving with (original path, compressed path, calibration source, report) to
# add validation results; the validation module installs itself here.
Validator = Callable[[Path, Path, Any], dict[str, Any]]


def size_info(model: ir.Model, path: Path | None) -> SizeInfo:
    """Sizes of ``model`` (saved at ``path``, or serialized when None), gzip included."""
    info, job = _size_info_started(model, path)
    if job is not None:
        info.gzip_bytes, info.gzip_exact = job.result()
    return info


def _size_info_started(model: ir.Model, path: Path) -> tuple[SizeInfo, GzipJob | None]:
    """Sizes of ``model`` with its gzip size still being computed in a background thread (the
    file and its external data are read in chunks, not held): ``info.gzip_bytes`` is set from
    ``job.result()``. gzip is 40-65% of a dynamic int8 run's time when done inline."""
    stats = model_stats(model)
    info = SizeInfo(
        file_bytes=0,
        gzip_bytes=0,
        parameters=stats.parameters,
        weight_bytes=stats.weight_bytes,
        sparsity=round(stats.sparsity, 6),
        nodes=stats.nodes,
    )
    job = None
    if path is not None:
        read = model.meta.get(MODEL_FILES)  # listed when load_model parsed this file
        info.files = read[1] if read is not None and read[0] == str(path) else model_files(path)
        info.file_bytes = model_file_bytes(path, info.files)
        job = GzipJob(info.files)
    else:
        data = to_proto(model).SerializeToString(deterministic=True)
        info.file_bytes, info.gzip_bytes = len(data), gzip_size(data)
    return info, job


def save_model(model: ir.Model, path: str | os.PathLike, *, overwrite: bool = False,
               protect: tuple[str | os.PathLike, ...] = (), external_data: bool | None = None) -> Path:
    """Write a compressed model (``compress(...).model``) to ``path`` atomically
    (``model.save_model``), with what reading its input set aside put back: a classifier's
    ZipMap output (``graph.maps``)."""
    return write_model(model, path, overwrite=overwrite, protect=protect, external_data=external_data,
                       maps=model.meta.get(DETACHED_MAPS, ()))


def compress_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    pipeline: Pipeline,
    *,
    calibration: Any = None,
    overwrite: bool = False,
    validator: Validator | None = None,
    validation_data: Any = None,
    progress: Callable[[str, int, int], None] | None = None,
    keep_failed: bool = False,
    memory: bool = False,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    check_fidelity: bool = False,
) -> CompressionReport:
    """Compress ``input_path`` into ``output_path`` and return the report.

    The input file is never modified; the output is written atomically and only after every
    pass succeeded (or, with the pipeline's ``best_effort``, was rolled back). With
    ``validator``, the saved output is compared with the input; if the comparison fails the
    output is deleted again (``report.output`` is None) unless ``keep_failed``. With
    ``memory``, the onnxruntime session memory of both files is measured (a child process per
    model, a few seconds) on the first sample of the validation or calibration data, else a
    synthetic one shaped by ``shapes``. With ``check_fidelity`` and calibration data but no
    ``validator``, the output is compared with the input on up to FIDELITY_SAMPLES calibration
    samples under the default tolerance (``report.fidelity``, a headline when it misses): said,
    never gating, and a comparison that cannot run is noted, not raised. ``progress``: a
    ``(stage, done, total)`` callback; None logs progress at INFO (logger ``onnxcompress.progress``).
    """
    input_path, output_path = Path(input_path), Path(output_path)
    check_output_path(output_path, protect=(input_path,), overwrite=overwrite)
    for name, data in (("calibration", calibration), ("validation", validation_data)):
        if isinstance(data, (str, os.PathLike)) and not Path(data).exists():
            raise DataError(f"{data}: no such file or folder (the {name} data).")
    model = load_model(input_path)
    check_shape_names(model, shapes)  # before any work
    if validator is not None and validation_data is not None:
        feed_source(validation_data, model, name="validation data")  # fail before the long work
    before, gzip_before = _size_info_started(model, input_path)
    input_external = external_base_dir(model) is not None
    with contextlib.ExitStack() as stack:
        if progress is None:
            progress = stack.enter_context(ProgressLog())
        # The pipeline works on this model in place (no copy; the original is reread from the
        # file when a pass needs it): the caller's copy is not used again below.
        with given_shapes(shapes):  # the passes' synthetic samples too
            result = pipeline.run(model, calibration=calibration, progress=progress, label=str(input_path),
                                  source_path=input_path)
        del model
        pending = result.pending_ort_check
        # The output of an external-data input keeps that layout: a large one is written tensor
        # by tensor instead of serialized whole in memory (issue 18), and onnxruntime loads
        # external weights without also holding them in a protobuf (khmersm, 7 MB fp32: 18.0 MB
        # of session memory with its external data, 21.6 MB inlined; batch 5).
        external = True if input_external else None
        finish_for_writing(result, keep_debug_info=pipeline.keep_debug_info)
        save_model(result.model, output_path, overwrite=overwrite, protect=(input_path,),
                   external_data=external)  # with a classifier's ZipMap put back
        progress("sizes (gzip)", 0, 1)
        after, gzip_after = _size_info_started(result.model, output_path)
        if pending is not None:
            _check_written_file(result, output_path, pending)
        # Both gzip jobs finish before validation, whose latency timing they would disturb.
        for info, job in ((before, gzip_before), (after, gzip_after)):
            if job is not None:
                info.gzip_bytes, info.gzip_exact = job.result()
        progress("sizes (gzip)", 1, 1)
    report = CompressionReport(
        input=str(input_path), output=str(output_path), before=before, after=after, result=result
    )
    if validator is not None:
        data = validation_data if validation_data is not None else calibration
        try:
            report.validation = validator(input_path, output_path, data)
        except BaseException:
            # A command that fails leaves nothing behind, even after the model was written.
            remove_model_files(output_path)
            raise
    elif check_fidelity and isinstance(calibration, (str, os.PathLike)):  # a reader is spent by now
        report.fidelity = _fidelity(input_path, output_path, calibration)
    if memory and output_path.exists():
        data = validation_data if validation_data is not None else calibration
        report.memory = measure_session_memory(input_path, output_path, load_model(input_path),
                                               result.model, data, shapes)
    if report.validation is not None and report.validation.get("passed") is False and not keep_failed:
        # A model that failed its check is not an output a script should pick up.
        remove_model_files(output_path)
        report.output = None
    return report


# Enough samples to see a model that no longer does its job (the check's purpose), few enough to
# cost a second or two: it is not a measurement of a 1-point change (--validate-data is).
FIDELITY_SAMPLES = 8


def _fidelity(input_path: Path, output_path: Path, calibration: Any) -> dict[str, Any]:
    """The default-tolerance comparison on a few calibration samples, or {"error": why}."""
    from onnxcompress.validation.compare import compare_models

    try:
        out = compare_models(input_path, output_path, calibration, samples=FIDELITY_SAMPLES).to_dict()
    except OnnxCompressError as e:
        logger.info("fidelity check did not run: %s", e)
        return {"error": str(e).split(" Hint:")[0]}
    out["data"] = "calibration samples (seen by the passes: an optimistic reading)"
    return out


def _check_written_file(result: PipelineResult, path: Path, input_loads: Callable[[], bool]) -> None:
    """onnxruntime's load check of a large output, on the written file: the in-memory model is
    swapped for the file's (memory-mapped) first, so onnxruntime's copy is the only one."""
    model = load_model(path)
    result.model = model
    for p in result.passes:
        p.model = model
    # Lean when the file is large (what runtime._large would find by parsing the file again).
    ok, why = runtime.loadable(path, lean=is_large(model))
    if not ok and input_loads():
        remove_model_files(path)
        raise PassError(f"the compressed model failed onnxruntime's load check: {why}",
                        hint="this is a bug in onnxcompress, please report it; --exclude can "
                        "leave the layer alone.")


def measure_session_memory(
    original_path: Path,
    compressed_path: Path,
    original: ir.Model,
    compressed: ir.Model,
    data: Any = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, Any]:
    """onnxruntime session memory of both files after the same samples, up to
    ``memory.READING_SAMPLES`` of the data (see :mod:`onnxcompress.memory`):
    ``{"original": {...}, "compressed": {...}, "resident_ratio", "peak_ratio"}``; the ratios are
    original / compressed like ``size_ratio`` (above 1: the compressed model needs less)."""
    from onnxcompress.memory import compare_session_memory

    feeds = _memory_feeds(original, data, shapes)
    specs = {s.name: s for s in input_specs(compressed)}
    # A compressed model may take float16 where the original takes float32.
    feeds_b = [{k: (v.astype(specs[k].dtype) if v.dtype.kind == "f" and specs[k].dtype.kind == "f" else v)
                for k, v in feed.items() if k in specs} for feed in feeds]
    out = compare_session_memory(original_path, compressed_path, feeds or None, feeds_b or None)
    out["feed"] = ("none (zeros of the declared shapes)" if not feeds
                   else f"{len(feeds)} sample(s) of the data" if data is not None else "one synthetic sample")
    return out


def _memory_feeds(model: ir.Model, data: Any, shapes: Mapping[str, tuple[int, ...]] | None) -> list:
    """The samples for the memory measurement: the data's first READING_SAMPLES, else a synthetic
    one, else none."""
    from onnxcompress.memory import READING_SAMPLES

    try:
        source = feed_source(data, model) if data is not None else synthetic_feeds(model, 1, shapes=shapes)
        return list(itertools.islice(iter(source), READING_SAMPLES))
    except OnnxCompressError as e:
        logger.info("session memory measured without a sample: %s", e)
        return []


def remove_model_files(path: Path) -> None:
    """Delete a model file we wrote and its external-data file, if any."""
    for p in (path, path.with_name(path.name + ".data")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
