"""A zoo of small but awkward ONNX models, the way real exporters write them.

Each builder returns a seeded ``onnx.ModelProto`` that passes ``onnx.checker``. Weights are sized
just above the passes' default ``min_size`` (1024 elements for k-means, 256 for pruning) so every
pass has something to do, and everything stays tiny so the robustness matrix runs in seconds.

``ZOO`` maps a model name to a :class:`ZooModel`: the builder plus what a test needs to feed it
(concrete sizes for dynamic dims, integer bounds), whether it is saved with external data, and
which nodes must come out untouched (custom-domain nodes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
from onnx import TensorProto

from tests import helpers

F = TensorProto.FLOAT
H = TensorProto.FLOAT16
I64 = TensorProto.INT64
B = TensorProto.BOOL


@dataclass(frozen=True)
class ZooModel:
    name: str
    build: Callable[[], onnx.ModelProto]
    # Concrete sizes for symbolic dims by dim name (others: 2, the batch).
    dims: dict[str, int] = field(default_factory=dict)
    # Integer inputs are drawn from [0, int_bound).
    int_bound: int = 100
    external: bool = False  # saved with its tensors in an external data file
    custom_nodes: tuple[str, ...] = ()  # names of nodes that must survive untouched

    def save(self, folder: Path) -> Path:
        """Write the model to ``folder`` (with external data when ``external``)."""
        path = folder / f"{self.name}.onnx"
        model = self.build()
        if self.external:
            helpers.save_with_external_data(model, path)
        else:
            onnx.save(model, str(path))
        return path


# -- small building blocks ---------------------------------------------------------------------


def _w(r: np.random.Generator, *shape: int, scale: float | None = None) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    s = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
    return (s * r.standard_normal(shape)).astype(np.float32)


def _model(nodes, name, inputs, outputs, inits: dict[str, np.ndarray], *, opset: int,
           ir_version: int | None = None, extra_opsets=()) -> onnx.ModelProto:
    graph = oh.make_graph(nodes, name, inputs, outputs,
                          initializer=[onh.from_array(a, n) for n, a in inits.items()])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset), *extra_opsets])
    # make_model stamps the newest IR version; onnxruntime wants the one matching the opset.
    model.ir_version = ir_version or _IR_FOR_OPSET.get(
        opset, oh.find_min_ir_version_for([oh.make_opsetid("", opset)]))
    onnx.checker.check_model(model)
    return model


# Opset 7 shipped with IR 3, which lists initializers as inputs; ir3_* models cover that form.
_IR_FOR_OPSET = {7: 4, 9: 4, 11: 6, 13: 7, 17: 8, 21: 10}


def _vi(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return oh.make_tensor_value_info(name, elem, shape)


def _clip(opset: int, x: str, y: str, lo: float, hi: float, inits: dict, name: str) -> onnx.NodeProto:
    """Clip: min/max attributes before opset 11, inputs from 11 on."""
    if opset < 11:
        return oh.make_node("Clip", [x], [y], name=name, min=lo, max=hi)
    inits[f"{name}.min"] = np.array(lo, np.float32)
    inits[f"{name}.max"] = np.array(hi, np.float32)
    return oh.make_node("Clip", [x, f"{name}.min", f"{name}.max"], [y], name=name)


def _bn(opset: int, x: str, y: str, c: int, r: np.random.Generator, inits: dict, name: str) -> onnx.NodeProto:
    """BatchNormalization: opset 7 still has the ``spatial`` attribute (removed in 9)."""
    inits[f"{name}.scale"] = (1 + 0.1 * r.standard_normal(c)).astype(np.float32)
    inits[f"{name}.bias"] = (0.1 * r.standard_normal(c)).astype(np.float32)
    inits[f"{name}.mean"] = (0.1 * r.standard_normal(c)).astype(np.float32)
    inits[f"{name}.var"] = (1 + 0.1 * r.random(c)).astype(np.float32)
    ins = [x] + [f"{name}.{k}" for k in ("scale", "bias", "mean", "var")]
    attrs = {"epsilon": 1e-5}
    if opset < 9:
        attrs["spatial"] = 1
    return oh.make_node("BatchNormalization", ins, [y], name=name, **attrs)


def _upsample2x(opset: int, x: str, y: str, inits: dict, name: str) -> onnx.NodeProto:
    """Nearest 2x upsampling as each opset spells it: Upsample (attr, then input), then Resize."""
    scales = np.array([1, 1, 2, 2], np.float32)
    if opset < 9:
        return oh.make_node("Upsample", [x], [y], name=name, mode="nearest", scales=scales.tolist())
    inits[f"{name}.scales"] = scales
    if opset < 10:
        return oh.make_node("Upsample", [x, f"{name}.scales"], [y], name=name, mode="nearest")
    if opset < 13:  # Resize-11: roi is a required input (empty tensor when unused)
        inits[f"{name}.roi"] = np.zeros(0, np.float32)
        return oh.make_node("Resize", [x, f"{name}.roi", f"{name}.scales"], [y], name=name,
                            mode="nearest")
    return oh.make_node("Resize", [x, "", f"{name}.scales"], [y], name=name, mode="nearest")


def _dropout(opset: int, x: str, y: str, name: str) -> onnx.NodeProto:
    if opset < 12:
        return oh.make_node("Dropout", [x], [y], name=name, ratio=0.1)
    return oh.make_node("Dropout", [x], [y], name=name)


# -- MLP and CNN across opsets -----------------------------------------------------------------


def mlp(opset: int, *, seed: int = 0) -> onnx.ModelProto:
    """x[N,32] -> Gemm(transB=0) -> Relu -> MatMul+Add -> Clip -> Dropout -> Gemm(transB=1) -> Softmax."""
    r = np.random.default_rng(seed)
    inits = {
        "fc0.weight": _w(r, 32, 64), "fc0.bias": _w(r, 64, scale=0.1),
        "fc1.weight": _w(r, 64, 64), "fc1.bias": _w(r, 64, scale=0.1),
        "fc2.weight": _w(r, 48, 64), "fc2.bias": _w(r, 48, scale=0.1),
    }
    nodes = [
        oh.make_node("Gemm", ["x", "fc0.weight", "fc0.bias"], ["h0"], name="fc0", transB=0),
        oh.make_node("Relu", ["h0"], ["r0"], name="relu0"),
        oh.make_node("MatMul", ["r0", "fc1.weight"], ["m1"], name="fc1/MatMul"),
        oh.make_node("Add", ["m1", "fc1.bias"], ["a1"], name="fc1/Add"),
    ]
    nodes.append(_clip(opset, "a1", "c1", 0.0, 6.0, inits, "clip1"))
    nodes.append(_dropout(opset, "c1", "d1", "dropout1"))
    nodes += [
        oh.make_node("Gemm", ["d1", "fc2.weight", "fc2.bias"], ["logits"], name="fc2", transB=1),
        oh.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    return _model(nodes, f"mlp_opset{opset}", [_vi("x", F, ["N", 32])], [_vi("y", F, ["N", 48])],
                  inits, opset=opset)


def cnn(opset: int, *, seed: int = 0) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv-BN-Relu -> Conv-BN-Clip -> MaxPool -> 2x upsample -> Conv(s2)-Relu -> GAP
    -> Gemm."""
    r = np.random.default_rng(seed)
    inits = {
        "conv0.weight": _w(r, 16, 3, 3, 3), "conv0.bias": _w(r, 16, scale=0.1),
        "conv1.weight": _w(r, 16, 16, 3, 3),
        "conv2.weight": _w(r, 32, 16, 3, 3), "conv2.bias": _w(r, 32, scale=0.1),
        "fc.weight": _w(r, 10, 32), "fc.bias": _w(r, 10, scale=0.1),
    }
    nodes = [
        oh.make_node("Conv", ["x", "conv0.weight", "conv0.bias"], ["c0"], name="conv0", pads=[1, 1, 1, 1],
                     kernel_shape=[3, 3]),
        _bn(opset, "c0", "b0", 16, r, inits, "bn0"),
        oh.make_node("Relu", ["b0"], ["r0"], name="relu0"),
        oh.make_node("Conv", ["r0", "conv1.weight"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                     kernel_shape=[3, 3]),
        _bn(opset, "c1", "b1", 16, r, inits, "bn1"),
        _clip(opset, "b1", "r1", 0.0, 6.0, inits, "clip1"),
        oh.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        _upsample2x(opset, "p1", "u1", inits, "up1"),
        oh.make_node("Conv", ["u1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2",
                     pads=[1, 1, 1, 1], strides=[2, 2], kernel_shape=[3, 3]),
        oh.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        oh.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        oh.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        oh.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["y"], name="fc", transB=1),
    ]
    return _model(nodes, f"cnn_opset{opset}", [_vi("x", F, ["N", 3, 8, 8])], [_vi("y", F, ["N", 10])],
                  inits, opset=opset)


def ir3_initializer_inputs(kind: str = "mlp") -> onnx.ModelProto:
    """IR version 3 (opset 7): every initializer is also listed as a graph input, as old exporters did."""
    model = mlp(7, seed=1) if kind == "mlp" else cnn(7, seed=1)
    model.graph.name = f"ir3_{kind}"
    for t in model.graph.initializer:
        model.graph.input.append(_vi(t.name, t.data_type, list(t.dims)))
    model.ir_version = 3
    onnx.checker.check_model(model)
    return model


def constant_weights() -> onnx.ModelProto:
    """The opset-13 MLP with every weight in a Constant node (Paddle-style)."""
    model = helpers.constant_node_weights(mlp(13, seed=2))
    onnx.checker.check_model(model)
    return model


# -- subgraphs ---------------------------------------------------------------------------------


def if_weights(*, seed: int = 3) -> onnx.ModelProto:
    """If: then = x @ W_then (branch initializer), else = x @ W_else (branch Constant); both
    branches then multiply by W_outer, an initializer of the main graph (outer scope)."""
    r = np.random.default_rng(seed)
    w_then, w_else = _w(r, 32, 64), _w(r, 32, 64)
    then_graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "W_then"], ["t0"], name="then/mm0"),
         oh.make_node("Relu", ["t0"], ["t1"], name="then/relu"),
         oh.make_node("MatMul", ["t1", "W_outer"], ["y_then"], name="then/mm1")],
        "then_branch", [], [_vi("y_then", F, ["N", 16])],
        initializer=[onh.from_array(w_then, "W_then")],
    )
    else_graph = oh.make_graph(
        [oh.make_node("Constant", [], ["W_else"], name="else/const", value=onh.from_array(w_else, "W_else")),
         oh.make_node("MatMul", ["x", "W_else"], ["e0"], name="else/mm0"),
         oh.make_node("Tanh", ["e0"], ["e1"], name="else/tanh"),
         oh.make_node("MatMul", ["e1", "W_outer"], ["y_else"], name="else/mm1")],
        "else_branch", [], [_vi("y_else", F, ["N", 16])],
    )
    nodes = [oh.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_graph,
                          else_branch=else_graph)]
    return _model(nodes, "if_weights", [_vi("x", F, ["N", 32]), _vi("cond", B, [])],
                  [_vi("y", F, ["N", 16])], {"W_outer": _w(r, 64, 16)}, opset=13)


def loop_weights(*, seed: int = 4) -> onnx.ModelProto:
    """Loop (3 iterations): h = tanh((h @ W_body) @ W_outer); W_body is a Constant inside the body,
    W_outer an initializer of the main graph."""
    r = np.random.default_rng(seed)
    body = oh.make_graph(
        [oh.make_node("Constant", [], ["W_body"], name="body/const",
                      value=onh.from_array(_w(r, 32, 32), "W_body")),
         oh.make_node("MatMul", ["h_in", "W_body"], ["b0"], name="body/mm0"),
         oh.make_node("MatMul", ["b0", "W_outer"], ["b1"], name="body/mm1"),
         oh.make_node("Tanh", ["b1"], ["h_out"], name="body/tanh"),
         oh.make_node("Identity", ["cond_in"], ["cond_out"], name="body/cond")],
        "loop_body",
        [_vi("i", I64, []), _vi("cond_in", B, []), _vi("h_in", F, ["N", 32])],
        [_vi("cond_out", B, []), _vi("h_out", F, ["N", 32])],
    )
    inits = {"trip": np.array(3, np.int64), "keep_going": np.array(True),
             "W_outer": _w(r, 32, 32), "head.weight": _w(r, 32, 40)}
    nodes = [
        oh.make_node("Loop", ["trip", "keep_going", "x"], ["h"], name="loop", body=body),
        oh.make_node("MatMul", ["h", "head.weight"], ["y"], name="head"),
    ]
    return _model(nodes, "loop_weights", [_vi("x", F, ["N", 32])], [_vi("y", F, ["N", 40])],
                  inits, opset=13)


def scan_weights(*, seed: int = 5) -> onnx.ModelProto:
    """Scan over a sequence: h' = tanh(x_t @ W_x (Constant in the body) + h @ W_h (outer initializer))."""
    r = np.random.default_rng(seed)
    body = oh.make_graph(
        [oh.make_node("Constant", [], ["W_x"], name="scan/const",
                      value=onh.from_array(_w(r, 32, 32), "W_x")),
         oh.make_node("MatMul", ["x_t", "W_x"], ["a"], name="scan/mm_x"),
         oh.make_node("MatMul", ["h", "W_h"], ["b"], name="scan/mm_h"),
         oh.make_node("Add", ["a", "b"], ["c"], name="scan/add"),
         oh.make_node("Tanh", ["c"], ["h_new"], name="scan/tanh"),
         oh.make_node("Identity", ["h_new"], ["y_t"], name="scan/out")],
        "scan_body",
        [_vi("h", F, [32]), _vi("x_t", F, [32])],
        [_vi("h_new", F, [32]), _vi("y_t", F, [32])],
    )
    nodes = [oh.make_node("Scan", ["h0", "x"], ["h_final", "ys"], name="scan", body=body,
                          num_scan_inputs=1)]
    return _model(nodes, "scan_weights", [_vi("h0", F, [32]), _vi("x", F, ["seq", 32])],
                  [_vi("h_final", F, [32]), _vi("ys", F, ["seq", 32])],
                  {"W_h": _w(r, 32, 32)}, opset=13)


# -- dtypes, inputs, outputs -------------------------------------------------------------------


def fp16_model() -> onnx.ModelProto:
    """Entirely float16: input, weights, activations, output."""
    r = np.random.default_rng(6)
    inits = {"fc0.weight": _w(r, 32, 64), "fc0.bias": _w(r, 64, scale=0.1),
             "fc1.weight": _w(r, 64, 32), "fc1.bias": _w(r, 32, scale=0.1)}
    inits = {k: v.astype(np.float16) for k, v in inits.items()}
    nodes = [
        oh.make_node("MatMul", ["x", "fc0.weight"], ["m0"], name="fc0/MatMul"),
        oh.make_node("Add", ["m0", "fc0.bias"], ["a0"], name="fc0/Add"),
        oh.make_node("Relu", ["a0"], ["r0"], name="relu0"),
        oh.make_node("MatMul", ["r0", "fc1.weight"], ["m1"], name="fc1/MatMul"),
        oh.make_node("Add", ["m1", "fc1.bias"], ["y"], name="fc1/Add"),
    ]
    return _model(nodes, "fp16_model", [_vi("x", H, ["N", 32])], [_vi("y", H, ["N", 32])], inits, opset=17)


def fp16_weights_cast() -> onnx.ModelProto:
    """float16 weights stored once, each followed by Cast(to=float) before a float MatMul/Gemm."""
    r = np.random.default_rng(7)
    inits = {"fc0.weight": _w(r, 32, 64).astype(np.float16),
             "fc0.bias": _w(r, 64, scale=0.1).astype(np.float16),
             "fc1.weight": _w(r, 64, 48).astype(np.float16),
             "fc2.weight": _w(r, 48, 16)}
    nodes = [
        oh.make_node("Cast", ["fc0.weight"], ["fc0.weight_f"], name="cast_w0", to=F),
        oh.make_node("Cast", ["fc0.bias"], ["fc0.bias_f"], name="cast_b0", to=F),
        oh.make_node("Cast", ["fc1.weight"], ["fc1.weight_f"], name="cast_w1", to=F),
        oh.make_node("Gemm", ["x", "fc0.weight_f", "fc0.bias_f"], ["h0"], name="fc0"),
        oh.make_node("Relu", ["h0"], ["r0"], name="relu0"),
        oh.make_node("MatMul", ["r0", "fc1.weight_f"], ["h1"], name="fc1"),
        oh.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        oh.make_node("MatMul", ["r1", "fc2.weight"], ["y"], name="fc2"),
    ]
    return _model(nodes, "fp16_weights_cast", [_vi("x", F, ["N", 32])], [_vi("y", F, ["N", 16])],
                  inits, opset=17)


def token_model() -> onnx.ModelProto:
    """input_ids/attention_mask int64 [batch, sequence] -> Gather (embedding) -> LayerNorm ->
    MatMul-Relu-MatMul + residual -> masked mean; outputs hidden [batch, sequence, 32] and pooled."""
    r = np.random.default_rng(8)
    inits = {
        "embed.weight": _w(r, 100, 32, scale=1.0),
        "ln.scale": (1 + 0.1 * r.standard_normal(32)).astype(np.float32),
        "ln.bias": _w(r, 32, scale=0.1),
        "ff1.weight": _w(r, 32, 64), "ff1.bias": _w(r, 64, scale=0.1),
        "ff2.weight": _w(r, 64, 32), "ff2.bias": _w(r, 32, scale=0.1),
        "unsq_axes": np.array([-1], np.int64), "mean_axes": np.array([1], np.int64),
    }
    nodes = [
        oh.make_node("Gather", ["embed.weight", "input_ids"], ["emb"], name="embed", axis=0),
        oh.make_node("LayerNormalization", ["emb", "ln.scale", "ln.bias"], ["ln"], name="ln", axis=-1),
        oh.make_node("MatMul", ["ln", "ff1.weight"], ["f1"], name="ff1/MatMul"),
        oh.make_node("Add", ["f1", "ff1.bias"], ["f1b"], name="ff1/Add"),
        oh.make_node("Relu", ["f1b"], ["f1r"], name="ff1/Relu"),
        oh.make_node("MatMul", ["f1r", "ff2.weight"], ["f2"], name="ff2/MatMul"),
        oh.make_node("Add", ["f2", "ff2.bias"], ["f2b"], name="ff2/Add"),
        oh.make_node("Add", ["f2b", "emb"], ["hidden"], name="residual"),
        oh.make_node("Cast", ["attention_mask"], ["mask_f"], name="mask_cast", to=F),
        oh.make_node("Unsqueeze", ["mask_f", "unsq_axes"], ["mask3"], name="mask_unsq"),
        oh.make_node("Mul", ["hidden", "mask3"], ["masked"], name="mask_mul"),
        oh.make_node("ReduceMean", ["masked"], ["pooled"], name="pool", axes=[1], keepdims=0),
    ]
    return _model(
        nodes, "token_model",
        [_vi("input_ids", I64, ["batch", "sequence"]), _vi("attention_mask", I64, ["batch", "sequence"])],
        [_vi("hidden", F, ["batch", "sequence", 32]), _vi("pooled", F, ["batch", 32])],
        {k: v for k, v in inits.items() if k != "mean_axes"}, opset=17,
    )


def multi_io() -> onnx.ModelProto:
    """Two float inputs, three outputs (two float, one int64 ArgMax)."""
    r = np.random.default_rng(9)
    inits = {"a.weight": _w(r, 32, 64), "b.weight": _w(r, 16, 64), "bias": _w(r, 64, scale=0.1),
             "cls.weight": _w(r, 64, 10), "emb.weight": _w(r, 64, 24)}
    nodes = [
        oh.make_node("MatMul", ["a", "a.weight"], ["ha"], name="a_proj"),
        oh.make_node("MatMul", ["b", "b.weight"], ["hb"], name="b_proj"),
        oh.make_node("Add", ["ha", "hb"], ["s"], name="merge"),
        oh.make_node("Add", ["s", "bias"], ["sb"], name="merge_bias"),
        oh.make_node("Relu", ["sb"], ["h"], name="relu"),
        oh.make_node("MatMul", ["h", "cls.weight"], ["logits"], name="cls"),
        oh.make_node("ArgMax", ["logits"], ["label"], name="argmax", axis=1, keepdims=1),
        oh.make_node("MatMul", ["h", "emb.weight"], ["embedding"], name="emb"),
    ]
    return _model(
        nodes, "multi_io", [_vi("a", F, ["N", 32]), _vi("b", F, ["N", 16])],
        [_vi("logits", F, ["N", 10]), _vi("label", I64, ["N", 1]), _vi("embedding", F, ["N", 24])],
        inits, opset=13,
    )


def custom_domain() -> onnx.ModelProto:
    """A com.example node between two layers; onnxruntime cannot run it."""
    r = np.random.default_rng(10)
    inits = {"fc0.weight": _w(r, 32, 64), "fc0.bias": _w(r, 64, scale=0.1),
             "fc1.weight": _w(r, 64, 64), "fc1.bias": _w(r, 64, scale=0.1),
             "fc2.weight": _w(r, 64, 16)}
    nodes = [
        oh.make_node("MatMul", ["x", "fc0.weight"], ["m0"], name="fc0/MatMul"),
        oh.make_node("Add", ["m0", "fc0.bias"], ["a0"], name="fc0/Add"),
        oh.make_node("FancyAct", ["a0"], ["f0"], name="fancy", domain="com.example", alpha=0.5),
        oh.make_node("MatMul", ["f0", "fc1.weight"], ["m1"], name="fc1/MatMul"),
        oh.make_node("Add", ["m1", "fc1.bias"], ["a1"], name="fc1/Add"),
        oh.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        oh.make_node("MatMul", ["r1", "fc2.weight"], ["y"], name="fc2/MatMul"),
    ]
    return _model(nodes, "custom_domain", [_vi("x", F, ["N", 32])], [_vi("y", F, ["N", 16])], inits,
                  opset=13, extra_opsets=[oh.make_opsetid("com.example", 1)])


# -- weight layouts ----------------------------------------------------------------------------


def shared_weight() -> onnx.ModelProto:
    """One weight used by two MatMuls (tied projections)."""
    r = np.random.default_rng(11)
    inits = {"shared.weight": _w(r, 32, 64), "out.weight": _w(r, 64, 16)}
    nodes = [
        oh.make_node("MatMul", ["x", "shared.weight"], ["hx"], name="proj_x"),
        oh.make_node("MatMul", ["z", "shared.weight"], ["hz"], name="proj_z"),
        oh.make_node("Add", ["hx", "hz"], ["s"], name="sum"),
        oh.make_node("Relu", ["s"], ["r"], name="relu"),
        oh.make_node("MatMul", ["r", "out.weight"], ["y"], name="out"),
    ]
    return _model(nodes, "shared_weight", [_vi("x", F, ["N", 32]), _vi("z", F, ["N", 32])],
                  [_vi("y", F, ["N", 16])], inits, opset=13)


def gemm_transposes() -> onnx.ModelProto:
    """Gemm with transB=0, Gemm with transB=1, and a Gemm with alpha and no bias."""
    r = np.random.default_rng(12)
    inits = {"g0.weight": _w(r, 32, 64), "g0.bias": _w(r, 64, scale=0.1),
             "g1.weight": _w(r, 48, 64), "g1.bias": _w(r, 48, scale=0.1),
             "g2.weight": _w(r, 48, 24)}
    nodes = [
        oh.make_node("Gemm", ["x", "g0.weight", "g0.bias"], ["h0"], name="g0", transB=0),
        oh.make_node("Relu", ["h0"], ["r0"], name="relu0"),
        oh.make_node("Gemm", ["r0", "g1.weight", "g1.bias"], ["h1"], name="g1", transB=1),
        oh.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        oh.make_node("Gemm", ["r1", "g2.weight"], ["y"], name="g2", alpha=0.5),
    ]
    return _model(nodes, "gemm_transposes", [_vi("x", F, ["N", 32])], [_vi("y", F, ["N", 24])], inits,
                  opset=13)


def depthwise() -> onnx.ModelProto:
    """Pointwise Conv -> depthwise Conv (group = channels) -> pointwise Conv, MobileNet style."""
    r = np.random.default_rng(13)
    inits = {"pw0.weight": _w(r, 128, 16, 1, 1), "pw0.bias": _w(r, 128, scale=0.1),
             "dw.weight": _w(r, 128, 1, 3, 3), "dw.bias": _w(r, 128, scale=0.1),
             "pw1.weight": _w(r, 32, 128, 1, 1),
             "fc.weight": _w(r, 10, 32), "fc.bias": _w(r, 10, scale=0.1)}
    nodes = [
        oh.make_node("Conv", ["x", "pw0.weight", "pw0.bias"], ["c0"], name="pw0"),
        oh.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        oh.make_node("Conv", ["r0", "dw.weight", "dw.bias"], ["c1"], name="dw", group=128,
                     pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        oh.make_node("Conv", ["r1", "pw1.weight"], ["c2"], name="pw1"),
        oh.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        oh.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        oh.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        oh.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["y"], name="fc", transB=1),
    ]
    return _model(nodes, "depthwise", [_vi("x", F, ["N", 16, 6, 6])], [_vi("y", F, ["N", 10])], inits,
                  opset=13)


def conv_transpose() -> onnx.ModelProto:
    """Conv -> ConvTranspose (stride 2; weight [C_in, C_out, k, k]) -> grouped ConvTranspose -> Conv."""
    r = np.random.default_rng(14)
    inits = {"enc.weight": _w(r, 32, 16, 3, 3), "enc.bias": _w(r, 32, scale=0.1),
             "up.weight": _w(r, 32, 16, 4, 4), "up.bias": _w(r, 16, scale=0.1),
             "gup.weight": _w(r, 16, 8, 3, 3),
             "head.weight": _w(r, 8, 16, 1, 1)}
    nodes = [
        oh.make_node("Conv", ["x", "enc.weight", "enc.bias"], ["c0"], name="enc", pads=[1, 1, 1, 1],
                     kernel_shape=[3, 3]),
        oh.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        oh.make_node("ConvTranspose", ["r0", "up.weight", "up.bias"], ["u"], name="up", strides=[2, 2],
                     pads=[1, 1, 1, 1], kernel_shape=[4, 4]),
        oh.make_node("Relu", ["u"], ["r1"], name="relu1"),
        oh.make_node("ConvTranspose", ["r1", "gup.weight"], ["g"], name="gup", group=2,
                     pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        oh.make_node("Relu", ["g"], ["r2"], name="relu2"),
        oh.make_node("Conv", ["r2", "head.weight"], ["y"], name="head"),
    ]
    return _model(nodes, "conv_transpose", [_vi("x", F, ["N", 16, 4, 4])], [_vi("y", F, ["N", 8, 8, 8])],
                  inits, opset=13)


def lstm() -> onnx.ModelProto:
    """LSTM (W [1,4H,I], R [1,4H,H], B [1,8H]) over x[seq, N, 16], last hidden state -> MatMul head."""
    r = np.random.default_rng(15)
    hidden = 32
    inits = {"lstm.W": _w(r, 1, 4 * hidden, 16), "lstm.R": _w(r, 1, 4 * hidden, hidden),
             "lstm.B": _w(r, 1, 8 * hidden, scale=0.1), "sq_axes": np.array([0], np.int64),
             "head.weight": _w(r, hidden, 40)}
    nodes = [
        oh.make_node("LSTM", ["x", "lstm.W", "lstm.R", "lstm.B"], ["Y", "Y_h"], name="lstm",
                     hidden_size=hidden),
        oh.make_node("Squeeze", ["Y_h", "sq_axes"], ["h"], name="squeeze"),
        oh.make_node("MatMul", ["h", "head.weight"], ["y"], name="head"),
    ]
    return _model(nodes, "lstm", [_vi("x", F, ["seq", "N", 16])],
                  [_vi("y", F, ["N", 40]), _vi("Y", F, ["seq", 1, "N", hidden])], inits, opset=13)


def gru() -> onnx.ModelProto:
    """GRU as torch exports it (linear_before_reset=1), opset 17; output Y [seq, 1, N, H] -> MatMul."""
    r = np.random.default_rng(16)
    hidden = 32
    inits = {"gru.W": _w(r, 1, 3 * hidden, 16), "gru.R": _w(r, 1, 3 * hidden, hidden),
             "gru.B": _w(r, 1, 6 * hidden, scale=0.1), "head.weight": _w(r, hidden, 40)}
    nodes = [
        oh.make_node("GRU", ["x", "gru.W", "gru.R", "gru.B"], ["Y"], name="gru", hidden_size=hidden,
                     linear_before_reset=1),
        oh.make_node("MatMul", ["Y", "head.weight"], ["y"], name="head"),
    ]
    return _model(nodes, "gru", [_vi("x", F, ["seq", "N", 16])], [_vi("y", F, ["seq", 1, "N", 40])],
                  inits, opset=17)


def weight_on_the_left() -> onnx.ModelProto:
    """Constant on the left of MatMul (W @ x, TensorFlow style) and a batched 3-D MatMul weight."""
    r = np.random.default_rng(18)
    inits = {"left.weight": _w(r, 64, 32), "batched.weight": _w(r, 4, 16, 24),
             "shape": np.array([4, 16, -1], np.int64)}
    nodes = [
        oh.make_node("MatMul", ["left.weight", "x"], ["h"], name="left"),  # [64,32] @ [32,N]
        oh.make_node("Relu", ["h"], ["r"], name="relu"),
        oh.make_node("Transpose", ["r"], ["rt"], name="to_rows", perm=[1, 0]),  # [N, 64]
        oh.make_node("Reshape", ["rt", "shape"], ["rb"], name="split_heads"),  # [4, 16, N] when N=1..
        oh.make_node("Transpose", ["rb"], ["rbt"], name="heads_first", perm=[0, 2, 1]),  # [4, N, 16]
        oh.make_node("MatMul", ["rbt", "batched.weight"], ["y"], name="batched"),  # [4, N, 24]
    ]
    return _model(nodes, "weight_on_the_left", [_vi("x", F, [32, "N"])], [_vi("y", F, [4, "N", 24])],
                  inits, opset=13)


def conv1d() -> onnx.ModelProto:
    """1-D convolutions (audio style): Conv [C_out, C_in, k] -> Relu -> Conv with dilation -> mean."""
    r = np.random.default_rng(19)
    inits = {"c0.weight": _w(r, 32, 8, 5), "c0.bias": _w(r, 32, scale=0.1),
             "c1.weight": _w(r, 48, 32, 3), "c1.bias": _w(r, 48, scale=0.1),
             "c2.weight": _w(r, 16, 48, 1)}
    nodes = [
        oh.make_node("Conv", ["x", "c0.weight", "c0.bias"], ["a"], name="c0", pads=[2, 2], kernel_shape=[5]),
        oh.make_node("Relu", ["a"], ["ar"], name="relu0"),
        oh.make_node("Conv", ["ar", "c1.weight", "c1.bias"], ["b"], name="c1", pads=[2, 2], dilations=[2],
                     kernel_shape=[3]),
        oh.make_node("Relu", ["b"], ["br"], name="relu1"),
        oh.make_node("Conv", ["br", "c2.weight"], ["y"], name="c2"),
    ]
    return _model(nodes, "conv1d", [_vi("x", F, ["N", 8, "time"])], [_vi("y", F, ["N", 16, "time"])],
                  inits, opset=13)


def transposed_weights() -> onnx.ModelProto:
    """Weights stored [out, in] and transposed in the graph (Transpose -> MatMul), as some
    converters write nn.Linear, plus one behind Identity."""
    r = np.random.default_rng(20)
    inits = {"fc0.weight": _w(r, 64, 32), "fc1.weight": _w(r, 64, 64), "fc2.weight": _w(r, 16, 64)}
    nodes = [
        oh.make_node("Transpose", ["fc0.weight"], ["w0t"], name="fc0/T", perm=[1, 0]),
        oh.make_node("MatMul", ["x", "w0t"], ["h0"], name="fc0"),
        oh.make_node("Relu", ["h0"], ["r0"], name="relu0"),
        oh.make_node("Identity", ["fc1.weight"], ["w1i"], name="fc1/Identity"),
        oh.make_node("Transpose", ["w1i"], ["w1t"], name="fc1/T", perm=[1, 0]),
        oh.make_node("MatMul", ["r0", "w1t"], ["h1"], name="fc1"),
        oh.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        oh.make_node("Transpose", ["fc2.weight"], ["w2t"], name="fc2/T", perm=[1, 0]),
        oh.make_node("MatMul", ["r1", "w2t"], ["y"], name="fc2"),
    ]
    return _model(nodes, "transposed_weights", [_vi("x", F, ["N", 32])], [_vi("y", F, ["N", 16])], inits,
                  opset=13)


def unnamed_nodes() -> onnx.ModelProto:
    """The opset-13 CNN and MLP ops with every node name empty (many exporters write none)."""
    model = cnn(13, seed=21)
    for node in model.graph.node:
        node.name = ""
    model.graph.name = "unnamed_nodes"
    onnx.checker.check_model(model)
    return model


def with_value_info() -> onnx.ModelProto:
    """The opset-13 CNN with inferred shapes of every intermediate tensor stored in value_info (as
    torch exports do): a pass that changes channel counts must keep these consistent."""
    model = onnx.shape_inference.infer_shapes(cnn(13, seed=22))
    assert len(model.graph.value_info) > 5
    model.graph.name = "with_value_info"
    return model


def tied_embedding() -> onnx.ModelProto:
    """One embedding table read by Gather (input) and, transposed, by the output MatMul (tied LM head)."""
    r = np.random.default_rng(23)
    inits = {"embed.weight": _w(r, 100, 32, scale=1.0), "mid.weight": _w(r, 32, 32)}
    nodes = [
        oh.make_node("Gather", ["embed.weight", "input_ids"], ["e"], name="embed"),
        oh.make_node("MatMul", ["e", "mid.weight"], ["m"], name="mid"),
        oh.make_node("Tanh", ["m"], ["t"], name="tanh"),
        oh.make_node("Transpose", ["embed.weight"], ["embed_t"], name="lm_head/T", perm=[1, 0]),
        oh.make_node("MatMul", ["t", "embed_t"], ["logits"], name="lm_head"),
    ]
    return _model(nodes, "tied_embedding", [_vi("input_ids", I64, ["batch", "sequence"])],
                  [_vi("logits", F, ["batch", "sequence", 100])], inits, opset=13)


def tied_embedding_exporter_copy() -> onnx.ModelProto:
    """``tied_embedding`` as TorchScript exports it: the head reads a second initializer holding
    ``embed.weight.T`` (folded from the Transpose) instead of a Transpose of the table."""
    model = tied_embedding()
    table = next(onh.to_array(t) for t in model.graph.initializer if t.name == "embed.weight")
    model.graph.initializer.append(onh.from_array(np.ascontiguousarray(table.T), "embed_t_copy"))
    nodes = [n for n in model.graph.node if n.op_type != "Transpose"]
    for n in nodes:
        if n.name == "lm_head":
            n.input[1] = "embed_t_copy"
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def prequantized() -> onnx.ModelProto:
    """Already int8: DequantizeLinear(int8 weight, per-channel scale) -> MatMul, then a float layer."""
    r = np.random.default_rng(24)
    w = _w(r, 32, 64)
    scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    inits = {"fc0.weight_q": q, "fc0.scale": scale, "fc0.zero": np.zeros(64, np.int8),
             "fc1.weight": _w(r, 64, 32)}
    nodes = [
        oh.make_node("DequantizeLinear", ["fc0.weight_q", "fc0.scale", "fc0.zero"], ["w0"], name="fc0/dq",
                     axis=1),
        oh.make_node("MatMul", ["x", "w0"], ["h0"], name="fc0"),
        oh.make_node("Relu", ["h0"], ["r0"], name="relu0"),
        oh.make_node("MatMul", ["r0", "fc1.weight"], ["y"], name="fc1"),
    ]
    return _model(nodes, "prequantized", [_vi("x", F, ["N", 32])], [_vi("y", F, ["N", 32])], inits, opset=13)


def odd_shapes() -> onnx.ModelProto:
    """Gemm with a 2-D bias [1, M] (TensorFlow style), MatMul with a 1-D weight vector (score head)."""
    r = np.random.default_rng(25)
    inits = {"fc.weight": _w(r, 32, 1024), "fc.bias": _w(r, 1, 1024, scale=0.1),
             "score.weight": _w(r, 1024, scale=1 / 32)}
    nodes = [
        oh.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["h"], name="fc"),
        oh.make_node("Relu", ["h"], ["r"], name="relu"),
        oh.make_node("MatMul", ["r", "score.weight"], ["y"], name="score"),  # [N, 1024] @ [1024] -> [N]
    ]
    return _model(nodes, "odd_shapes", [_vi("x", F, ["N", 32])], [_vi("y", F, ["N"])], inits, opset=13)


# -- declared shapes: missing, partial, symbolic (issue 17) ------------------------------------


def _no_shape(name: str, elem: int = F) -> onnx.ValueInfoProto:
    """A value declared with its element type and no shape at all (unknown rank)."""
    vi = onnx.ValueInfoProto()
    vi.name = name
    vi.type.tensor_type.elem_type = elem
    return vi


def _reshape_mlp(r: np.random.Generator, inits: dict) -> list[onnx.NodeProto]:
    """Issue 17's graph, one layer deeper: MatMul -> Reshape -> Add -> Relu -> Gemm."""
    inits.update({"fc0.weight": _w(r, 32, 64), "fc0.bias": _w(r, 64, scale=0.1),
                  "flat": np.array([-1, 64], np.int64),
                  "fc1.weight": _w(r, 48, 64), "fc1.bias": _w(r, 48, scale=0.1)})
    return [
        oh.make_node("MatMul", ["x", "fc0.weight"], ["m0"], name="fc0/MatMul"),
        oh.make_node("Reshape", ["m0", "flat"], ["r0"], name="fc0/Reshape"),
        oh.make_node("Add", ["r0", "fc0.bias"], ["a0"], name="fc0/Add"),
        oh.make_node("Relu", ["a0"], ["h0"], name="relu0"),
        oh.make_node("Gemm", ["h0", "fc1.weight", "fc1.bias"], ["y"], name="fc1", transB=1),
    ]


def value_info_no_shape() -> onnx.ModelProto:
    """Every intermediate declared in value_info with its type only (no shape, unknown rank)."""
    r = np.random.default_rng(26)
    inits: dict = {}
    nodes = _reshape_mlp(r, inits)
    model = _model(nodes, "value_info_no_shape", [_vi("x", F, ["N", 32])], [_vi("y", F, ["N", 48])],
                   inits, opset=17)
    model.graph.value_info.extend(_no_shape(v) for v in ("m0", "r0", "a0", "h0"))
    onnx.checker.check_model(model)
    return model


def partial_shapes() -> onnx.ModelProto:
    """Output and value_info with unknown dims (neither value nor name)."""
    r = np.random.default_rng(27)
    inits: dict = {}
    nodes = _reshape_mlp(r, inits)
    model = _model(nodes, "partial_shapes", [_vi("x", F, ["batch", 32])], [_vi("y", F, [None, None])],
                   inits, opset=17)
    model.graph.value_info.extend([_vi("m0", F, [None, 64]), _vi("r0", F, [None, None]),
                                   _vi("h0", F, ["batch", None])])
    onnx.checker.check_model(model)
    return model


def symbolic_dims() -> onnx.ModelProto:
    """Symbolic dims everywhere, some named unlike what the graph computes (value_info says
    'tokens' where the Reshape makes batch x seq rows): passes must not trust or break them."""
    r = np.random.default_rng(28)
    inits: dict = {}
    nodes = _reshape_mlp(r, inits)
    model = _model(nodes, "symbolic_dims", [_vi("x", F, ["batch", "seq", 32])],
                   [_vi("y", F, ["tokens", "out"])], inits, opset=17)
    model.graph.value_info.extend([_vi("m0", F, ["batch", "seq", "hidden"]),
                                   _vi("r0", F, ["tokens", "hidden"]),
                                   _vi("a0", F, ["tokens", 64]), _vi("h0", F, ["rows", "cols"])])
    onnx.checker.check_model(model)
    return model


def subgraph_no_shape() -> onnx.ModelProto:
    """If whose branch outputs declare no shape (allowed in subgraphs) and a main output of
    unknown dims; the weights sit in the branches and after the If."""
    r = np.random.default_rng(29)
    branches = []
    for name, act in (("then", "Relu"), ("else", "Tanh")):
        w = onh.from_array(_w(r, 32, 64), f"W_{name}")
        branches.append(oh.make_graph(
            [oh.make_node("MatMul", ["x", f"W_{name}"], [f"{name}_m"], name=f"{name}/mm"),
             oh.make_node(act, [f"{name}_m"], [f"{name}_y"], name=f"{name}/act")],
            f"{name}_branch", [], [_no_shape(f"{name}_y")], initializer=[w],
            value_info=[_no_shape(f"{name}_m")],
        ))
    nodes = [oh.make_node("If", ["cond"], ["h"], name="branch", then_branch=branches[0],
                          else_branch=branches[1]),
             oh.make_node("MatMul", ["h", "head.weight"], ["y"], name="head")]
    model = _model(nodes, "subgraph_no_shape", [_vi("x", F, ["N", 32]), _vi("cond", B, [])],
                   [_vi("y", F, [None, None])], {"head.weight": _w(r, 64, 24)}, opset=13)
    model.graph.value_info.append(_no_shape("h"))
    onnx.checker.check_model(model)
    return model


def torch_transformer() -> onnx.ModelProto:
    """A real torch 2.13 export (TorchScript exporter, opset 17): the 2-layer encoder in tests/assets."""
    return onnx.load(str(Path(__file__).parent / "assets" / "transformer_digits.onnx"))


def opset23_decoder() -> onnx.ModelProto:
    """What torch 2.13 exports a llama-style block as at opset 23: token ids -> Gather ->
    ``RMSNormalization`` -> q/k/v MatMuls -> causal ``Attention`` (3-D, 4 heads) -> MatMul +
    residual -> RMSNormalization -> MLP + residual -> logits over the 100 tokens."""
    r = np.random.default_rng(23)
    inits = {"embed.weight": _w(r, 100, 64, scale=1.0),
             "n1.scale": (1 + 0.1 * r.standard_normal(64)).astype(np.float32),
             "n2.scale": (1 + 0.1 * r.standard_normal(64)).astype(np.float32),
             **{f"{k}.weight": _w(r, 64, 64) for k in ("q", "k", "v", "o")},
             "up.weight": _w(r, 64, 128), "down.weight": _w(r, 128, 64), "head.weight": _w(r, 64, 100)}
    nodes = [
        oh.make_node("Gather", ["embed.weight", "ids"], ["x"], name="embed", axis=0),
        oh.make_node("RMSNormalization", ["x", "n1.scale"], ["h1"], name="n1", axis=-1),
        *(oh.make_node("MatMul", ["h1", f"{k}.weight"], [k], name=f"{k}_proj") for k in ("q", "k", "v")),
        oh.make_node("Attention", ["q", "k", "v"], ["a"], name="attention", is_causal=1, q_num_heads=4,
                     kv_num_heads=4),
        oh.make_node("MatMul", ["a", "o.weight"], ["ao"], name="o_proj"),
        oh.make_node("Add", ["ao", "x"], ["x2"], name="residual1"),
        oh.make_node("RMSNormalization", ["x2", "n2.scale"], ["h2"], name="n2", axis=-1),
        oh.make_node("MatMul", ["h2", "up.weight"], ["u"], name="up"),
        oh.make_node("Relu", ["u"], ["ur"], name="act"),
        oh.make_node("MatMul", ["ur", "down.weight"], ["d"], name="down"),
        oh.make_node("Add", ["d", "x2"], ["x3"], name="residual2"),
        oh.make_node("MatMul", ["x3", "head.weight"], ["logits"], name="head"),
    ]
    return _model(nodes, "opset23_decoder", [_vi("ids", I64, ["batch", "sequence"])],
                  [_vi("logits", F, ["batch", "sequence", 100])], inits, opset=23)


# -- the zoo -----------------------------------------------------------------------------------

OPSETS = (7, 9, 11, 13, 17, 21)
# The newest opset the installed onnx knows (its own name, so test ids do not change with onnx).
NEWEST = onnx.defs.onnx_opset_version()

_ENTRIES = [
    *(ZooModel(f"mlp_opset{o}", lambda o=o: mlp(o)) for o in OPSETS),
    *(ZooModel(f"cnn_opset{o}", lambda o=o: cnn(o)) for o in OPSETS),
    ZooModel("mlp_opset_newest", lambda: mlp(NEWEST)),
    ZooModel("cnn_opset_newest", lambda: cnn(NEWEST)),
    ZooModel("ir3_mlp", ir3_initializer_inputs),
    ZooModel("ir3_cnn", lambda: ir3_initializer_inputs("cnn")),
    ZooModel("constant_weights", constant_weights),
    ZooModel("if_weights", if_weights),
    ZooModel("loop_weights", loop_weights),
    ZooModel("scan_weights", scan_weights, dims={"seq": 5}),
    ZooModel("external_data", lambda: mlp(17, seed=17), external=True),
    ZooModel("fp16_model", fp16_model),
    ZooModel("fp16_weights_cast", fp16_weights_cast),
    ZooModel("token_model", token_model, dims={"batch": 2, "sequence": 7}),
    ZooModel("multi_io", multi_io),
    ZooModel("custom_domain", custom_domain, custom_nodes=("fancy",)),
    ZooModel("shared_weight", shared_weight),
    ZooModel("gemm_transposes", gemm_transposes),
    ZooModel("depthwise", depthwise),
    ZooModel("conv_transpose", conv_transpose),
    ZooModel("lstm", lstm, dims={"seq": 5}),
    ZooModel("gru", gru, dims={"seq": 5}),
    ZooModel("weight_on_the_left", weight_on_the_left, dims={"N": 3}),
    ZooModel("conv1d", conv1d, dims={"time": 20}),
    ZooModel("transposed_weights", transposed_weights),
    ZooModel("unnamed_nodes", unnamed_nodes),
    ZooModel("with_value_info", with_value_info),
    ZooModel("tied_embedding", tied_embedding, dims={"batch": 2, "sequence": 6}),
    ZooModel("prequantized", prequantized),
    ZooModel("odd_shapes", odd_shapes),
    ZooModel("torch_transformer", torch_transformer),
    ZooModel("value_info_no_shape", value_info_no_shape),
    ZooModel("partial_shapes", partial_shapes),
    ZooModel("symbolic_dims", symbolic_dims, dims={"batch": 2, "seq": 3}),
    ZooModel("subgraph_no_shape", subgraph_no_shape),
    ZooModel("opset23_decoder", opset23_decoder, dims={"batch": 2, "sequence": 6}),
]

ZOO: dict[str, ZooModel] = {m.name: m for m in _ENTRIES}


def feeds(
    model: onnx.ModelProto, entry: ZooModel, count: int = 4, *, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """``count`` seeded feeds for the model's (true) inputs, symbolic dims from ``entry.dims``."""
    r = np.random.default_rng(seed)
    init_names = {t.name for t in model.graph.initializer}
    out = []
    for _ in range(count):
        feed = {}
        for inp in model.graph.input:
            if inp.name in init_names:
                continue
            tt = inp.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else entry.dims.get(d.dim_param, 2)
                     for d in tt.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
            if dtype == np.bool_:
                feed[inp.name] = np.array(r.random(shape) < 0.5)
            elif np.issubdtype(dtype, np.integer):
                if "mask" in inp.name:
                    feed[inp.name] = np.ones(shape, dtype)
                else:
                    feed[inp.name] = r.integers(0, entry.int_bound, shape).astype(dtype)
            else:
                feed[inp.name] = r.standard_normal(shape).astype(dtype)
        out.append(feed)
    return out
