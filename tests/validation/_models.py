"""Models for the validation tests: perturbed copies and a few shapes the comparison must handle."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper as onh
import onnx.parser

from tests import helpers as h


def perturbed(model: onnx.ModelProto, name: str, scale: float = 0.2, seed: int = 1) -> onnx.ModelProto:
    """A copy of ``model`` whose initializer ``name`` (main graph or a subgraph) got relative
    Gaussian noise of ``scale``."""
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    graphs = [copy.graph]
    found = False
    while graphs:
        g = graphs.pop()
        for t in g.initializer:
            if t.name == name:
                arr = onh.to_array(t).astype(np.float32)
                noise = np.random.default_rng(seed).standard_normal(arr.shape).astype(np.float32)
                t.CopyFrom(onh.from_array(arr + scale * np.abs(arr).mean() * noise, name))
                found = True
        for n in g.node:
            graphs.extend(a.g for a in n.attribute if a.type == onnx.AttributeProto.GRAPH)
    assert found, name
    return copy


def multi_io_model(seed: int = 0) -> onnx.ModelProto:
    """ids int64 [N, 6] and x float [N, 4] -> emb (float [N, 4]) and cls (int64 [N]) and probs."""
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        multi (int64[N, 6] ids, float[N, 4] x) => (float[N, 4] emb, int64[N] cls, float[N, 4] probs) {
            gathered = Gather <axis = 0> (table, ids)
            pooled = ReduceMean <axes = [1], keepdims = 0> (gathered)
            emb = Add (pooled, x)
            cls = ArgMax <axis = 1, keepdims = 0> (emb)
            probs = Softmax <axis = 1> (emb)
        }
        """
    )
    table = h.rng(seed).standard_normal((20, 4)).astype(np.float32)
    return h.attach_initializers(model, {"table": table})


def sequence_model(seed: int = 0) -> onnx.ModelProto:
    """x float [batch, seq, 8] -> y [batch, seq, 4]: two dynamic dimensions."""
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        seq (float[batch, seq, 8] x) => (float[batch, seq, 4] y) {
            h = MatMul (x, w)
            y = Tanh (h)
        }
        """
    )
    return h.attach_initializers(model, {"w": h.rng(seed).standard_normal((8, 4)).astype(np.float32)})


def sqrt_model(relu_first: bool) -> onnx.ModelProto:
    """y = Sqrt(Relu(x)) (no NaN) or Sqrt(x) (NaN for negative inputs)."""
    body = "r = Relu (x)\n y = Sqrt (r)" if relu_first else "y = Sqrt (x)"
    return onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        sq (float[N, 8] x) => (float[N, 8] y) {{
            {body}
        }}
        """
    )


def reshape_model() -> onnx.ModelProto:
    """Runs only when x has 12 elements per sample: synthetic defaults (1x16) make it fail."""
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        rs (float[N, C] x) => (float[1, 12] y) {
            y = Reshape (x, shape)
        }
        """
    )
    return h.attach_initializers(model, {"shape": np.array([1, 12], dtype=np.int64)})


def qdq_copy(model: onnx.ModelProto, *, fold_relu: bool = False) -> onnx.ModelProto:
    """The mlp with an activation Q/DQ pair on h0 (new tensors h0_q, h0_dq) as a quantizer adds.

    ``fold_relu`` does what onnxruntime's QDQ quantizer does: drop the Relu (the uint8 range with
    zero point 0 clamps at 0) and give its output name ``h0`` to the tensor before it.
    """
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = list(copy.graph.node)
    for n in nodes:
        if n.op_type == "MatMul" and n.input[0] == "h0":
            n.input[0] = "h0_dq"
    if fold_relu:
        relu = next(n for n in nodes if list(n.output) == ["h0"])
        nodes.remove(relu)
        for n in nodes:
            if list(n.output) == list(relu.input):
                n.output[0] = "h0"
    index = next(i for i, n in enumerate(nodes) if list(n.output) == ["h0"]) + 1
    nodes[index:index] = [
        onnx.helper.make_node("QuantizeLinear", ["h0", "q_scale", "q_zero"], ["h0_q"], name="h0/Q"),
        onnx.helper.make_node("DequantizeLinear", ["h0_q", "q_scale", "q_zero"], ["h0_dq"], name="h0/DQ"),
    ]
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    scale = onh.from_array(np.array(0.05, np.float32), "q_scale")
    copy.graph.initializer.extend([scale, onh.from_array(np.array(0, np.uint8), "q_zero")])
    return copy


def lstm_state_model(seed: int = 0, hidden: int = 32) -> onnx.ModelProto:
    """x [T, N, 8] -> an LSTM whose last hidden and cell states are given out as [N, hidden]
    (shaped like class scores) beside its logits [T, N, 16] (a seq2seq decoder's step)."""
    model = onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        dec (float[T, N, 8] x) => (float[T, N, 16] logits, float[N, {hidden}] h, float[N, {hidden}] c) {{
            y, yh, yc = LSTM <hidden_size = {hidden}> (x, w, r)
            ys = Squeeze(y, one)
            logits = MatMul(ys, head)
            h = Squeeze(yh, zero)
            c = Squeeze(yc, zero)
        }}
        """
    )
    r = np.random.default_rng(seed)
    return h.attach_initializers(model, {
        "w": (r.standard_normal((1, 4 * hidden, 8)) * 0.3).astype(np.float32),
        "r": (r.standard_normal((1, 4 * hidden, hidden)) * 0.3).astype(np.float32),
        "head": r.standard_normal((hidden, 16)).astype(np.float32),
        "one": np.array([1], np.int64), "zero": np.array([0], np.int64)})
