"""Float weights only custom-domain ops read (onnxruntime's fused transformer ops, a vendor's
ops): no pass compresses them, since the weight slots are known for ONNX-domain ops only, so
the pipeline names them instead of leaving a 1.35x int8 result unexplained."""

from __future__ import annotations

import onnx_ir as ir

from onnxcompress.weights import all_graphs

#: smaller constants are a custom op's parameters (a LayerNorm's gamma), not weights
MIN_VALUES = 4096
_FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)


def foreign_weights(model: ir.Model) -> dict[str, tuple[str, int]]:
    """Constant name -> (the op types reading it, bytes) for float constants of at least
    ``MIN_VALUES`` values that custom-domain ops read and no ONNX-domain op does."""
    custom: dict[str, tuple[set[str], int]] = {}
    standard: set[str] = set()
    for _, graph in all_graphs(model):
        for node in graph:
            for value in node.inputs:
                tensor = value.const_value if value is not None else None
                if tensor is None or tensor.dtype not in _FLOATS or tensor.size < MIN_VALUES:
                    continue
                if node.domain in ("", "ai.onnx"):
                    standard.add(value.name)
                else:
                    ops, nbytes = custom.setdefault(value.name, (set(), int(tensor.nbytes)))
                    ops.add(node.op_type)
    return {name: ("/".join(sorted(ops)), nbytes) for name, (ops, nbytes) in custom.items()
            if name not in standard}


def foreign_note(model: ir.Model) -> str | None:
    """The pipeline's note on ``foreign_weights``, or None when there are none."""
    found = foreign_weights(model)
    if not found:
        return None
    total = sum(nbytes for _, nbytes in found.values())
    ops = sorted({op for op_types, _ in found.values() for op in op_types.split("/")})
    return (f"{len(found)} float weight(s) ({total / 1e6:.1f} MB) are read only by custom-domain ops "
            f"({', '.join(ops)}): no pass compresses them (weight slots are known for ONNX-domain ops); "
            "for onnxruntime's fused transformer ops, compress the unfused export instead")
