"""onnxruntime sessions for calibration, checks and validation, created one consistent way."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxcompress.errors import RuntimeUnavailableError
from onnxcompress.model import is_large, save_model, to_proto

logger = logging.getLogger(__name__)


def session_options(*, threads: int | None = None, optimize: bool = True,
                    prepack: bool = True) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # onnxruntime's warnings go to stderr directly; keep them quiet
    if not prepack:
        # Prepacked MatMul weights are a second copy of every weight: a load check needs none.
        opts.add_session_config_entry("session.disable_prepacking", "1")
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    return opts


def create_session(
    model: ir.Model | onnx.ModelProto | str | os.PathLike,
    *,
    threads: int | None = None,
    optimize: bool = True,
    label: str = "the model",
    prepack: bool = True,
    lean: bool = False,
) -> ort.InferenceSession:
    """An onnxruntime CPU session for ``model``; raises RuntimeUnavailableError with the reason.
    ``lean``: for a check that the model loads, not for running it: no constant folding and no
    weight prepacking (the other optimizations still run), so a large model's session holds
    neither a folded float copy of a decode graph nor a packed copy of every weight (a 0.34 GB
    external-data MatMul stack: +393 MB -> +10 MB; its 8-bit k-means output: +874 -> +105 MB)."""
    opts = session_options(threads=threads, optimize=optimize, prepack=prepack and not lean)
    extra: dict = {}
    if lean:
        extra["disabled_optimizers"] = ["ConstantFolding"]
    try:
        if isinstance(model, ir.Model):
            # External data stays external: inlining it would hold the model twice (the proto
            # and its serialization) beside onnxruntime's own copy.
            if is_large(model):
                with tempfile.TemporaryDirectory(prefix="onnxcompress-") as tmp:
                    path = Path(tmp) / "model.onnx"
                    save_model(model, path, external_data=True)
                    return ort.InferenceSession(
                        str(path), opts, providers=["CPUExecutionProvider"], **extra
                    )
            data = to_proto(model).SerializeToString()
            return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"], **extra)
        if isinstance(model, onnx.ModelProto):  # inline (under 2 GB): the caller made it already
            return ort.InferenceSession(model.SerializeToString(), opts,
                                        providers=["CPUExecutionProvider"], **extra)
        return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"], **extra)
    except RuntimeUnavailableError:
        raise
    except Exception as e:  # onnxruntime raises its own exception types for every failure
        raise RuntimeUnavailableError(
            f"onnxruntime cannot load {label}: {first_line(e)}",
            hint="models with custom ops need their runtime; the steps that run the model "
            "(calibration, validation) cannot work without it.",
        ) from e


def loadable(model: ir.Model | onnx.ModelProto | str | os.PathLike) -> tuple[bool, str | None]:
    """Whether onnxruntime can create a session for the model, and if not, why."""
    try:
        # With the optimizations users get by default: some fusions reject graphs that load
        # unoptimized (e.g. QDQ fusions at opset 10). Never prepacked (a second copy of every
        # weight); a model past the external-data size is checked lean (no folding either: the
        # checks of its input and output held 3.2x its size, more than the pass).
        create_session(model, optimize=True, prepack=False,
                       lean=isinstance(model, ir.Model) and is_large(model))
    except RuntimeUnavailableError as e:
        return False, e.message
    return True, None


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    # onnxruntime prefixes messages with "[ONNXRuntimeError] : 1 : FAIL : "; keep the substance.
    if "] :" in line:
        line = line.rsplit(" : ", 1)[-1]
    return line[:300]
