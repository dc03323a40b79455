"""Small models for tests, built from ONNX text or a few helper calls, with seeded weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import onnxruntime as ort


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def attach_initializers(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> onnx.ModelProto:
    for name, arr in arrays.items():
        model.graph.initializer.append(onh.from_array(arr, name))
    return model


def mlp(sizes=(16, 32, 10), *, seed: int = 0, opset: int = 17, batch: str | int = "N") -> onnx.ModelProto:
    """x[N, sizes[0]] -> (MatMul + Add + Relu)* -> MatMul + Add -> y, weights as initializers."""
    r = rng(seed)
    nodes, arrays, prev = [], {}, "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        arrays[f"fc{i}.weight"] = (r.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        arrays[f"fc{i}.bias"] = (0.1 * r.standard_normal(b)).astype(np.float32)
        nodes.append(oh.make_node("MatMul", [prev, f"fc{i}.weight"], [f"mm{i}"], name=f"fc{i}/MatMul"))
        out = f"h{i}" if i < len(sizes) - 2 else "y"
        nodes.append(oh.make_node("Add", [f"mm{i}", f"fc{i}.bias"], [f"pre{i}" if out != "y" else "y"], name=f"fc{i}/Add"))
        if out != "y":
            nodes.append(oh.make_node("Relu", [f"pre{i}"], [out], name=f"relu{i}"))
        prev = out
    graph = oh.make_graph(
        nodes, "mlp",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, sizes[0]])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [batch, sizes[-1]])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    return attach_initializers(model, arrays)


def cnn(*, seed: int = 0, opset: int = 13, channels=(3, 8, 16), classes: int = 10) -> onnx.ModelProto:
    """Conv-BN-Relu x2, global pool, Flatten, Gemm; image [N, 3, 16, 16]."""
    r = rng(seed)
    arrays, nodes, prev = {}, [], "x"
    for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
        arrays[f"conv{i}.weight"] = (r.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        arrays[f"conv{i}.bias"] = (0.1 * r.standard_normal(cout)).astype(np.float32)
        arrays[f"bn{i}.scale"] = (1 + 0.1 * r.standard_normal(cout)).astype(np.float32)
        arrays[f"bn{i}.shift"] = (0.1 * r.standard_normal(cout)).astype(np.float32)
        arrays[f"bn{i}.mean"] = (0.1 * r.standard_normal(cout)).astype(np.float32)
        arrays[f"bn{i}.var"] = (1 + 0.1 * r.random(cout)).astype(np.float32)
        nodes += [
            oh.make_node("Conv", [prev, f"conv{i}.weight", f"conv{i}.bias"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
            oh.make_node("BatchNormalization", [f"c{i}", f"bn{i}.scale", f"bn{i}.shift", f"bn{i}.mean", f"bn{i}.var"], [f"b{i}"], name=f"bn{i}"),
            oh.make_node("Relu", [f"b{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        prev = f"r{i}"
    arrays["fc.weight"] = (r.standard_normal((classes, channels[-1])) / np.sqrt(channels[-1])).astype(np.float32)
    arrays["fc.bias"] = np.zeros(classes, np.float32)
    nodes += [
        oh.make_node("GlobalAveragePool", [prev], ["gap"], name="gap"),
        oh.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        oh.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["y"], name="fc", transB=1),
    ]
    graph = oh.make_graph(
        nodes, "cnn",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", channels[0], 16, 16])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", classes])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    return attach_initializers(model, arrays)


def constant_node_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with every initializer moved into a Constant node (as Paddle exports)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    consts = [
        oh.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t)
        for t in model.graph.initializer
    ]
    del model.graph.initializer[:]
    nodes = consts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def if_subgraph_model(*, seed: int = 0, opset: int = 13) -> onnx.ModelProto:
    """y = If(cond, then: x @ W_then (initializer in the branch), else: x @ W_else (Constant))."""
    r = rng(seed)
    w_then = r.standard_normal((8, 4)).astype(np.float32)
    w_else = r.standard_normal((8, 4)).astype(np.float32)
    then_graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "W_then"], ["y_then"], name="then_mm")], "then_branch", [],
        [oh.make_tensor_value_info("y_then", onnx.TensorProto.FLOAT, ["N", 4])],
        initializer=[onh.from_array(w_then, "W_then")],
    )
    else_graph = oh.make_graph(
        [
            oh.make_node("Constant", [], ["W_else"], name="else_const", value=onh.from_array(w_else, "W_else")),
            oh.make_node("MatMul", ["x", "W_else"], ["y_else"], name="else_mm"),
        ],
        "else_branch", [], [oh.make_tensor_value_info("y_else", onnx.TensorProto.FLOAT, ["N", 4])],
    )
    graph = oh.make_graph(
        [oh.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_graph, else_branch=else_graph)],
        "if_model",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8]),
         oh.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])


def custom_domain_model(*, seed: int = 0) -> onnx.ModelProto:
    """An MLP whose hidden activation goes through a node of a custom domain."""
    model = mlp((8, 16, 4), seed=seed)
    for node in model.graph.node:
        if node.op_type == "Relu":
            node.op_type = "FancyRelu"
            node.domain = "com.example"
    model.opset_import.append(oh.make_opsetid("com.example", 1))
    return model


def einsum_model(*, seed: int = 0) -> onnx.ModelProto:
    """Layers written as Einsum with a constant operand: a grouped linear layer (DeepFilterNet's
    ``btgi,gih->btgh``, weight [4, 32, 64]) and a plain one (``bti,ih->bth``), then a MatMul head."""
    import onnx.parser

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, T, 128] x) => (float[N, T, 10] y) {
            xr = Reshape(x, s4)
            e = Einsum <equation = "btgi,gih->btgh"> (xr, grouped)
            er = Reshape(e, s3)
            r = Relu(er)
            a = Einsum <equation = "bti,ih->bth"> (r, dense)
            ab = Add(a, dense_bias)
            r2 = Relu(ab)
            y = MatMul(r2, head)
        }
    """)
    r = rng(seed)
    return attach_initializers(model, {
        "s4": np.array([0, 0, 4, 32], np.int64), "s3": np.array([0, 0, 256], np.int64),
        "grouped": (r.standard_normal((4, 32, 64)) / 6).astype(np.float32),
        "dense": (r.standard_normal((256, 128)) / 16).astype(np.float32),
        "dense_bias": (r.standard_normal(128) * 0.1).astype(np.float32),
        "head": (r.standard_normal((128, 10)) / 11).astype(np.float32)})


def save_with_external_data(model: onnx.ModelProto, path: Path, location: str | None = None) -> Path:
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=location or path.name + ".data", size_threshold=0)
    return path


def run(model: onnx.ModelProto | str | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


# Input models that onnx.checker refuses, as (mutation of h.mlp's proto, the one-line reason):
# the CLI and the pipeline must both refuse them up front.
INVALID_INPUTS = [
    (lambda m: m.graph.initializer.pop(0),
     "node 'fc0/MatMul' (MatMul) reads 'fc0.weight', which no node"),
    (lambda m: m.opset_import.pop(), "the model declares no opset for the default ONNX domain"),
]
INVALID_INPUT_IDS = ["dangling-input", "no-opset"]


def loaded_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Op type -> count in the graph onnxruntime's session runs (constant folding done, no
    machine-specific layout): whether a decode folds at load."""
    import collections
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(d) / "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)


def int8_scales(amax: np.ndarray, qmax: float = 127.0) -> np.ndarray:
    """int8 per-channel (or per-block) scales as the quantize pass chooses them: max|w| / qmax,
    rounded to the nearest float16 where that is a normal float16 number (so they are stored in
    float16), float32 otherwise; a zero channel takes 1."""
    s = np.where(amax > 0, np.asarray(amax, np.float64) / qmax, 1.0).astype(np.float32)
    h = s.astype(np.float16).astype(np.float32)
    tiny = np.float32(np.finfo(np.float16).tiny)
    out = np.where(np.isfinite(h) & (np.abs(h) >= tiny), h, s)
    if (s < tiny).any() and out.max() >= 16 * tiny:  # dead channels raised to float16's smallest
        out = np.where(s < tiny, tiny, out)
    return out


def initializer_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Each initializer's values by name; one stored in float16 behind a Cast (``<name>_fp16``)
    also under ``<name>``, widened to float32."""
    arrays = {i.name: onh.to_array(i) for i in model.graph.initializer}
    for name, a in list(arrays.items()):
        if name.endswith("_fp16") and name[:-5] not in arrays:
            arrays[name[:-5]] = a.astype(np.float32)
    return arrays
