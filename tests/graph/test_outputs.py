"""What a graph output is, read from the graph (onnxcompress.graph.outputs)."""

from __future__ import annotations

import numpy as np


def test_an_activation_makes_an_embedding_not_class_scores() -> None:
    """An OSNet re-id's 256-d vector ends in a PReLU that tf2onnx spells Add(Relu(x),
    Mul(Relu(-x), -a)); held to top1>=0.99 for its rows' lead, auto wrote fp16 (1.93x) where
    cosine keeps every nearest match at 3.24x. A linear head beside it stays class scores."""
    import onnx
    import onnx.parser

    from onnxcompress.auto.measure import run_outputs
    from onnxcompress.auto.default_targets import default_target
    from onnxcompress.graph.outputs import plain_output_names
    from onnxcompress.model import load_model
    from tests import helpers as h

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 16] x) => (float[N, 32] emb, float[N, 32] prelu, float[N, 32] logits) {
            f = Gemm(x, w)
            pos = Relu(f)
            neg_f = Neg(f)
            neg = Relu(neg_f)
            slope = Mul(neg, minus_a)
            summed = Add(pos, slope)
            emb = Reshape(summed, shape)
            prelu = PRelu(f, a)
            logits = Gemm(x, w)
        }
    """)
    r = np.random.default_rng(0)
    model = h.attach_initializers(model, {
        "w": r.standard_normal((16, 32)).astype(np.float32),
        "minus_a": np.full((32,), -0.25, np.float32), "a": np.full((32,), 0.25, np.float32),
        "shape": np.array([-1, 32], np.int64)})
    feeds = [{"x": r.standard_normal((1, 16)).astype(np.float32)} for _ in range(4)]
    outputs = run_outputs(model, feeds)
    plain = plain_output_names(load_model(model), outputs)
    assert plain == ["emb", "prelu"]
    assert default_target(outputs, plain=plain) == \
        "emb:cosine>=0.999,prelu:cosine>=0.999,logits:top1>=0.99"


def test_a_sigmoid_stays_class_scores() -> None:
    """Multi-label probabilities (a sigmoid per class) keep their top-1: a sigmoid is no sign
    of an embedding."""
    import onnx
    import onnx.parser

    from onnxcompress.auto.measure import run_outputs
    from onnxcompress.graph.outputs import plain_output_names
    from onnxcompress.model import load_model
    from tests import helpers as h

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 16] x) => (float[N, 32] p) {
            f = Gemm(x, w)
            p = Sigmoid(f)
        }
    """)
    r = np.random.default_rng(1)
    model = h.attach_initializers(model, {"w": r.standard_normal((16, 32)).astype(np.float32)})
    feeds = [{"x": r.standard_normal((1, 16)).astype(np.float32)} for _ in range(4)]
    assert plain_output_names(load_model(model), run_outputs(model, feeds)) == []


def test_rows_looked_up_in_a_constant_table_are_an_embedding() -> None:
    """A Keras IMDB embedder (Gather over a 10000 x 8 table, flattened to [N, 800]) was held to
    top-1 of its 800 features: compare failed int8 at cosine 0.999994, auto stopped at fp16. A
    Gather of computed scores (a decoder's last position) stays class scores."""
    import onnx
    import onnx.parser

    from onnxcompress.auto.measure import run_outputs
    from onnxcompress.graph.outputs import plain_output_names
    from onnxcompress.model import load_model
    from tests import helpers as h

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[N, 10] ids, float[N, 4, 16] x) => (float[N, 80] features, float[N, 32] last) {
            rows = Gather(table, ids)
            features = Reshape(rows, shape)
            scores = MatMul(x, w)
            last = Gather <axis = 1> (scores, three)
        }
    """)
    r = np.random.default_rng(2)
    model = h.attach_initializers(model, {
        "table": r.standard_normal((50, 8)).astype(np.float32), "shape": np.array([-1, 80], np.int64),
        "w": r.standard_normal((16, 32)).astype(np.float32), "three": np.array(3, np.int64)})
    feeds = [{"ids": r.integers(0, 50, (1, 10)), "x": r.standard_normal((1, 4, 16)).astype(np.float32)}
             for _ in range(4)]
    assert plain_output_names(load_model(model), run_outputs(model, feeds)) == ["features"]


def test_a_regression_computed_by_arithmetic_is_values_not_class_scores() -> None:
    """Batch 34's FSA-Net gives yaw, pitch, roll [N, 3] as sums of products of computed stages
    (SSR-Net): held to top1>=0.99 by their shape, auto put a layer at 3 bits and 2.6% of 189
    faces moved over 2 degrees. Its head adds computed values: plain values, held by ``values``.
    Logits summed from two linear heads (an ensemble) stay class scores."""
    import onnx
    import onnx.parser

    from onnxcompress.auto.measure import run_outputs
    from onnxcompress.auto.default_targets import default_target
    from onnxcompress.graph.outputs import plain_output_names
    from onnxcompress.model import load_model
    from tests import helpers as h

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 16] x) => (float[N, 3] angles, float[N, 3] logits) {
            a = Gemm(x, w1)
            p = Softmax(a)
            stage = Mul(p, bins)
            b = Gemm(x, w2)
            shift = Tanh(b)
            angles = Add(stage, shift)
            l1 = Gemm(x, w1)
            l2 = Gemm(x, w2)
            logits = Add(l1, l2)
        }
    """)
    r = np.random.default_rng(3)
    model = h.attach_initializers(model, {
        "w1": r.standard_normal((16, 3)).astype(np.float32), "w2": r.standard_normal((16, 3)).astype(np.float32),
        "bins": np.array([-60.0, 0.0, 60.0], np.float32)})
    feeds = [{"x": r.standard_normal((1, 16)).astype(np.float32)} for _ in range(4)]
    outputs = run_outputs(model, feeds)
    plain = plain_output_names(load_model(model), outputs)
    assert plain == ["angles"]
    assert default_target(outputs, plain=plain) == "angles:values>=0.9995,logits:top1>=0.99"


def test_an_int8_head_its_author_quantized_is_a_linear_head() -> None:
    """pyfrspell's lemmatiser ships its heads as dynamic int8 (MatMulInteger, Cast, Mul by the
    runtime scale, Add bias): read as a Mul, its character logits were held to a cosine and auto
    lost 3.6 points of its lemmas. The head is the MatMulInteger, as a QLinearMatMul behind a
    DequantizeLinear is; a Mul of two computed values is still no head."""
    import onnx.parser

    from onnxcompress.graph.outputs import LINEAR_OPS, class_score_outputs, head_op
    from onnxcompress.model import load_model
    from tests import helpers as h

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, T, 16] x) => (float[N, T, 40] logits, float[N, T, 40] q, float[N, T, 40] gated) {
            xq, xs, xz = DynamicQuantizeLinear(x)
            acc = MatMulInteger(xq, wq, xz)
            accf = Cast<to = 1>(acc)
            scale = Mul(xs, ws)
            scaled = Mul(accf, scale)
            logits = Add(scaled, b)
            yq = QLinearMatMul(xq, xs, xz, wq, ws, wz, ys, yz)
            q = DequantizeLinear(yq, ys, yz)
            gate = Sigmoid(logits)
            gated = Mul(logits, gate)
        }
    """)
    r = np.random.default_rng(0)
    model = h.attach_initializers(model, {
        "wq": r.integers(-127, 127, (16, 40)).astype(np.int8),
        "ws": np.array(0.01, np.float32), "wz": np.array(0, np.int8),
        "ys": np.array(0.05, np.float32), "yz": np.array(128, np.uint8),
        "b": r.standard_normal(40).astype(np.float32)})
    ir_model = load_model(model)
    heads = {v.name: head_op(v) for v in ir_model.graph.outputs}
    assert heads == {"logits": "MatMulInteger", "q": "QLinearMatMul", "gated": "Mul"}
    assert "MatMulInteger" in LINEAR_OPS
    # token inputs: the int8 head's per-position scores are class scores, the gated product not
    refs = [[r.standard_normal((1, 6, 40)).astype(np.float32) for _ in range(3)] for _ in range(2)]
    assert class_score_outputs(ir_model, refs, tokens=True) == [True, True, False]
