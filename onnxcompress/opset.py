"""Opset awareness: find a model's opset and raise it when a pass needs newer ops."""

from __future__ import annotations

import logging

import onnx
import onnx_ir as ir

from onnxcompress import runtime
from onnxcompress.checking import stub_external
from onnxcompress.graph.legacy import standard_legacy_ops
from onnxcompress.model import external_base_dir, proto_graphs, to_proto

logger = logging.getLogger(__name__)


def opset_version(model: ir.Model) -> int:
    """The default-domain opset the model imports (ONNX 1 if it names none)."""
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


def upgrade_opset(model: ir.Model, target: int) -> tuple[ir.Model, str | None]:
    """Return (model at opset >= ``target``, None) or (the unchanged model, why not).

    Uses ``onnx.version_converter``. The upgrade counts as safe only when the converted model
    passes the checker and, if onnxruntime could load the original, loads there too. External
    tensors stay external references throughout, so large models are not copied into memory.
    """
    current = opset_version(model)
    if current >= target:
        return model, None
    try:
        proto = to_proto(model, inline_external=False)
        if rewritten := standard_legacy_ops(proto):  # ImageScaler, Crop...: no schema for the converter
            logger.info("Wrote %s as standard ops before the upgrade.", ", ".join(rewritten))
        converted = onnx.version_converter.convert_version(proto, target)
        if current < 11 <= target:
            _keep_resize_semantics(converted)
        checked = converted
        if external_base_dir(model) is not None:
            checked = stub_external(onnx.ModelProto.FromString(converted.SerializeToString()))
        onnx.checker.check_model(checked)
        _drop_added_value_info(proto.graph, converted.graph)
    except Exception as e:  # the converter raises bare RuntimeErrors with C++ messages
        unknown = sorted({n.op_type for n in model.graph if n.domain in ("", "ai.onnx")
                          and not onnx.defs.has(n.op_type)})
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if unknown:  # (the converter's own message leaves its format string unfilled)
            first = f"op(s) {', '.join(unknown)} have no schema in this onnx"
        return model, f"cannot upgrade opset {current} -> {target}: {first}"
    new_model = ir.serde.deserialize_model(converted)
    base_dir = external_base_dir(model)
    if base_dir:
        ir.external_data.set_base_dir(new_model.graph, base_dir)
    new_model.metadata_props.update(model.metadata_props)
    ok_before, _ = runtime.loadable(model)
    if ok_before:
        ok_after, why = runtime.loadable(new_model)
        if not ok_after:
            return model, f"opset {target} version does not load in onnxruntime: {why}"
    logger.info("Upgraded opset %d -> %d.", current, target)
    return new_model, None


def _drop_added_value_info(before: onnx.GraphProto, after: onnx.GraphProto) -> None:
    """Forget the intermediate types/shapes the converter inferred, in subgraphs too: saved as
    value_info they cost more than they tell (ppocr_cls at int8: 18 KB of a 220 KB file, 8%;
    silero_vad's If branches: 672 entries)."""
    known = {vi.name for g in proto_graphs(before) for vi in g.value_info}
    for graph in proto_graphs(after):
        keep = [vi for vi in graph.value_info if vi.name in known]
        if len(keep) < len(graph.value_info):
            del graph.value_info[:]
            graph.value_info.extend(keep)


def _keep_resize_semantics(converted: onnx.ModelProto) -> None:
    """Give every Resize the converter wrote from an ``Upsample`` or a ``Resize``-10 the
    coordinate mapping those ops had (``asymmetric``; nearest: ``floor``). The converter leaves
    the attributes out, so opset 11's defaults (``half_pixel``, ``round_prefer_floor``) apply:
    a linear upsampling then computes other values, and a nearest one, the same values, runs
    slower (FastDepth's five nearest x2 Upsample-7, batch 27: fp32 1.10x its original's latency;
    0.87x with the old mapping)."""
    for graph in proto_graphs(converted.graph):
        for node in graph.node:
            if node.op_type != "Resize" or node.domain not in ("", "ai.onnx"):
                continue
            attrs = {a.name: a for a in node.attribute}
            if "coordinate_transformation_mode" not in attrs:
                node.attribute.append(
                    onnx.helper.make_attribute("coordinate_transformation_mode", "asymmetric"))
            mode = attrs["mode"].s.decode() if "mode" in attrs else "nearest"
            if mode == "nearest" and "nearest_mode" not in attrs:
                node.attribute.append(onnx.helper.make_attribute("nearest_mode", "floor"))
