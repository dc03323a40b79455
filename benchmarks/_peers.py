"""One peer-tool compression in this (fresh) process, for ``benchmarks/run.py``.

    python benchmarks/_peers.py TOOL MODE SRC DST CALIB.npz

TOOL ``ort`` (onnxruntime.quantization: ``dynamic``, ``static``, ``int4`` = MatMulNBitsQuantizer)
or ``onnxsim`` (0.8's Python API, the functions its CLI flags and docs name, each after
``onnxsim.simplify`` as its CLI does: ``dynamic`` (``--dynamic-quantize``), ``static``
(``--static-quantize``, calibrated on our data instead of a Hugging Face dataset), ``int4``
(``--weight-only-quantize-int4``), ``fp16`` (``--fp16-quantize``), ``kmeans4``
(``quantize_weight_only_kmeans``), ``prune50`` (``apply_wanda_pruning``, 50%), ``auto``
(``auto_quantize_int4``)). Each peer runs with its defaults on the calibration samples the
onnxcompress rows get (the ``.npz`` arrays named after the inputs, samples on axis 0).

Exits non-zero with one line on stderr when the peer cannot handle the model; the harness puts
that line in the row.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx


def _samples(model: onnx.ModelProto, calib: Path) -> list[dict[str, np.ndarray]]:
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    with np.load(calib) as data:
        n = len(data[names[0]])
        return [{k: np.asarray(data[k][i : i + 1]) for k in names} for i in range(n)]


def _opset_at_least(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """onnxsim's int4 modes need opset 21 (INT4 tensors, blocked DequantizeLinear) and leave an
    older model unchanged: convert it first, as its docs tell the user to."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current >= opset:
        return model
    try:
        from onnx import version_converter

        return version_converter.convert_version(model, opset)
    except Exception as e:  # noqa: BLE001 - quantize the model as given, and say so
        print(f"onnxsim: opset {current} -> {opset} conversion failed ({type(e).__name__})")
        return model


def ort_quantize(mode: str, src: Path, dst: Path, calib: Path) -> None:
    from onnxruntime.quantization import quantize_dynamic, quantize_static

    if mode == "dynamic":
        quantize_dynamic(str(src), str(dst))
        return
    model = onnx.load(str(src))
    if mode == "static":
        samples = iter(_samples(model, calib))

        class _Reader:
            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(samples, None)

        quantize_static(str(src), str(dst), _Reader())
        return
    if mode == "int4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        q = MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True)
        q.process()
        q.model.save_model_to_file(str(dst), use_external_data_format=False)
        return
    raise SystemExit(f"unknown onnxruntime mode {mode!r}")


def onnxsim_quantize(mode: str, src: Path, dst: Path, calib: Path) -> None:
    import onnxsim

    model = onnx.load(str(src))
    # Its CLI simplifies before it quantizes (Gemm -> MatMul + Add, folded constants), so do the same.
    try:
        model, _ = onnxsim.simplify(model)
    except Exception as e:  # noqa: BLE001 - quantize the model as given, and say so
        print(f"onnxsim: simplify failed ({type(e).__name__}), quantizing the model as given")
    if mode in ("int4", "auto"):
        model = _opset_at_least(model, 21)
    if mode == "dynamic":
        out = onnxsim.quantize_dynamic(model)
    elif mode == "static":
        out = onnxsim.quantize_static(model, calibration_data=_samples(model, calib))
    elif mode == "int4":
        out = onnxsim.quantize_weight_only_int4(model)
    elif mode == "fp16":
        out = onnxsim.quantize_fp16(model)
    elif mode == "kmeans4":
        out = onnxsim.quantize_weight_only_kmeans(model, bits=4)
    elif mode == "prune50":
        out = onnxsim.apply_wanda_pruning(model, calibration_data=_samples(model, calib), sparsity=0.5)
    elif mode == "auto":
        samples = _samples(model, calib)
        res = onnxsim.auto_quantize_int4(model, calibration_data=samples, num_samples=len(samples))
        out = res.quantized_model
        print(f"onnxsim auto: techniques {res.techniques_applied}, meets budget {res.meets_budget}")
    else:
        raise SystemExit(f"unknown onnxsim mode {mode!r}")
    onnx.save(out, str(dst))


def main(argv: list[str]) -> int:
    tool, mode, src, dst, calib = argv
    run = {"ort": ort_quantize, "onnxsim": onnxsim_quantize}[tool]
    try:
        run(mode, Path(src), Path(dst), Path(calib))
    except Exception as e:  # the peer's own failure is the result: one line, no traceback
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        print(f"Error: {tool} {mode}: {type(e).__name__}: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
