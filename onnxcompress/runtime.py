"""onnxruntime sessions for calibration, checks and validation, created one consistent way."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxcompress.errors import RuntimeUnavailableError
from onnxcompress.graph.random import file_mentions_random, mean_draws, proto_random_ops, random_ops
from onnxcompress.model import EXTERNAL_DATA_THRESHOLD, is_large, iter_tensor_protos, save_model, to_proto
from onnxcompress.weights import iter_constant_tensors

logger = logging.getLogger(__name__)


def session_options(*, threads: int | None = None, optimize: bool = True,
                    prepack: bool = True, arena: bool = True, layout: bool = True) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    # onnxruntime writes its warnings and errors to stderr directly; every error it raises is
    # reported by the caller, so its own line (a red "[E:onnxruntime:...] Non-zero status code
    # returned while running Expand node" during auto on MiniMol, batch 11) is kept out
    opts.log_severity_level = 4
    if not arena:
        # A session's arena keeps the largest run's activations until the session goes: two
        # measuring sessions alive held two (DNSMOS, a 9 s input: dynamic int8 peak 490 -> 290
        # MB without them). Only sessions that time or weigh the model keep onnxruntime's default.
        opts.enable_cpu_mem_arena = False
    if not prepack:
        # Prepacked MatMul weights are a second copy of every weight: a load check needs none.
        opts.add_session_config_entry("session.disable_prepacking", "1")
    if threads is not None:
        opts.intra_op_num_threads = threads
    # layout=False stops before the layout transformers (NCHWc...): same arithmetic, and the
    # stage where onnxruntime's optimizer has crashed on float16 graphs (runtime.loads_in_child)
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL if not optimize
        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL if layout
        else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
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
    arena: bool = True,
    layout: bool = True,
) -> ort.InferenceSession:
    """An onnxruntime CPU session for ``model``; raises RuntimeUnavailableError with the reason.
    ``lean``: for a check that the model loads, not for running it: no constant folding, no
    float16 -> float32 weight conversion and no weight prepacking (the other optimizations still
    run), so a large model's session holds neither a folded float copy of a decode graph nor a
    packed copy of every weight (a 0.34 GB
    external-data MatMul stack: +393 MB -> +10 MB; its 8-bit k-means output: +874 -> +105 MB).
    ``arena=False``: for sessions that only read outputs (checks, statistics, guards), not for
    those that time the model or measure its memory (they measure what users run)."""
    opts = session_options(threads=threads, optimize=optimize, prepack=prepack and not lean,
                           arena=arena, layout=layout)
    extra: dict = {}
    if lean:
        # FuseFp16InitializerToFp32NodeTransformer turns every float16 weight of an op without a
        # float16 CPU kernel into a float32 copy at load (a 0.15 GB float16 MatMul stack: +347 MB
        # -> +11 MB without it).
        extra["disabled_optimizers"] = ["ConstantFolding", "FuseFp16InitializerToFp32NodeTransformer"]
    try:
        drawn = _at_mean(model)  # random ops give their mean (graph/random.py)
        if drawn is not None:
            proto, folder = drawn
            if folder is not None:
                opts.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
            return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"],
                                        **extra)
        if isinstance(model, ir.Model):
            # External data stays external: inlining it would hold the model twice (the proto
            # and its serialization) beside onnxruntime's own copy.
            folder = _external_folder(model) if is_large(model) else None
            if folder is not None:
                # Its external tensors are read (memory-mapped) from the input's own files,
                # the rest travels inline: no copy of the model written to a temporary folder
                # (2.4 GB of writes per calibration session of a 2.4 GB model).
                opts.add_session_config_entry(
                    "session.model_external_initializers_file_folder_path", folder)
                data = to_proto(model, inline_external=False).SerializeToString()
                try:
                    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"], **extra)
                except Exception as e:  # noqa: BLE001 - an onnxruntime without the option: save
                    logger.debug("in-place external data failed (%s); saving a copy", first_line(e))
                    del data
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


def _at_mean(model: ir.Model | onnx.ModelProto | str | os.PathLike,
             ) -> tuple[onnx.ModelProto, str | None] | None:
    """A copy of a model holding random ops with each giving its mean (``graph/random.py``), and
    the folder its external data is read from; None for a model without them."""
    if isinstance(model, ir.Model):
        if not random_ops(model):
            return None
        folder = _external_folder(model) if is_large(model) else None
        proto = to_proto(model, inline_external=folder is None)
    elif isinstance(model, onnx.ModelProto):
        if not proto_random_ops(model):
            return None
        proto, folder = onnx.ModelProto.FromString(model.SerializeToString()), None
    else:
        if not file_mentions_random(model):
            return None
        proto = onnx.load(str(model), load_external_data=False)
        folder = str(Path(model).resolve().parent)
    return (proto, folder) if mean_draws(proto) else None


def loadable(model: ir.Model | onnx.ModelProto | str | os.PathLike, *,
             lean: bool | None = None,
             then: Callable[[ort.InferenceSession], None] | None = None) -> tuple[bool, str | None]:
    """Whether onnxruntime can create a session for the model, and if not, why. ``lean``:
    check it lean (see ``create_session``); by default when the model is large (``_large``).
    ``then``: given the session once it loads, unless the check was lean (a lean session is
    not for running: a check that runs the model uses this one)."""
    lean = _large(model) if lean is None else lean
    try:
        # With the optimizations users get by default: some fusions reject graphs that load
        # unoptimized (e.g. QDQ fusions at opset 10). Never prepacked (a second copy of every
        # weight); a model past the external-data size is checked lean (no folding either: the
        # checks of its input and output held 3.2x its size, more than the pass).
        session = create_session(model, optimize=True, prepack=False, lean=lean, arena=False)
    except RuntimeUnavailableError as e:
        return False, e.message
    if then is not None and not lean:
        then(session)
    return True, None


#: What a child needs to load models the way users do (default optimizations, CPU provider).
_CHILD_LOAD = ("import sys, onnxruntime as ort\n"
               "for path in sys.argv[1:]:\n"
               "    o = ort.SessionOptions(); o.log_severity_level = 3\n"
               "    ort.InferenceSession(path, o, providers=['CPUExecutionProvider'])\n")


def loads_in_child(model: ir.Model, *, timeout: float = 600.0) -> tuple[bool, str | None]:
    """Whether onnxruntime, in a child process with its default optimizations, creates a session
    for ``model`` without crashing, and if not, why. For graphs onnxruntime's optimizers may
    never have seen (float16 compute: a GPT's batch-first Transpose before a MatMul on a constant
    crashes onnxruntime 1.32's layout stage with a segmentation fault), so that a crash is a
    skipped step, not a dead run. Whether it crashes depends on which value types the file
    declares, so the model is loaded as it is and as the pipeline writes it (value types that
    shape inference gives back dropped)."""
    import subprocess
    import sys

    from onnxcompress.graph.annotations import drop_inferable_annotations
    from onnxcompress.model import copy_model

    with tempfile.TemporaryDirectory(prefix="onnxcompress-load-") as tmp:
        paths = [Path(tmp) / "model.onnx", Path(tmp) / "written.onnx"]
        save_model(model, paths[0])
        written = copy_model(model)
        drop_inferable_annotations(written)
        save_model(written, paths[1])
        del written
        try:
            done = subprocess.run([sys.executable, "-c", _CHILD_LOAD, *map(str, paths)], capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return False, f"onnxruntime did not load it within {timeout:g} s"
    if done.returncode == 0:
        return True, None
    if done.returncode < 0:
        return False, f"onnxruntime crashed loading it (signal {-done.returncode}: an onnxruntime bug)"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return False, f"onnxruntime cannot load it: {lines[-1] if lines else 'exit ' + str(done.returncode)}"


def _external_folder(model: ir.Model) -> str | None:
    """The one folder every external tensor of ``model`` is read from, when the tensors held in
    memory fit in a protobuf beside them; else None (the model is saved to be loaded)."""
    folders, inline = set(), 0
    for t in iter_constant_tensors(model):
        if isinstance(t, ir.ExternalTensor):
            folders.add(t.base_dir)
        else:
            inline += t.nbytes
    if len(folders) != 1 or inline > EXTERNAL_DATA_THRESHOLD:
        return None
    folder = folders.pop()
    return str(folder) if folder else None


def _large(model: ir.Model | onnx.ModelProto | str | os.PathLike) -> bool:
    """Whether a load check must be lean: an ir.Model that is large, or a file with external
    data or past the external-data size. A written large output checked unlean held 3.6x its
    input's size (a 0.3 GB weight-only int8 stack: onnxruntime folds every int8 weight back to
    float32 and keeps the folded copies); lean, 1.0x (issue 18)."""
    if isinstance(model, ir.Model):
        return is_large(model)
    if isinstance(model, onnx.ModelProto):
        return False
    path = Path(model)
    try:
        if path.stat().st_size > EXTERNAL_DATA_THRESHOLD:
            return True
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable: onnxruntime's own load says why
        return False
    return any(t.data_location == onnx.TensorProto.EXTERNAL for _, t in iter_tensor_protos(proto.graph))


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    # onnxruntime prefixes messages with "[ONNXRuntimeError] : 1 : FAIL : "; keep the substance.
    if "] :" in line:
        line = line.rsplit(" : ", 1)[-1]
    return line[:300]
