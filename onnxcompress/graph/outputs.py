"""What a graph output is, read from the graph where its shape alone misleads."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import numpy as np
import onnx_ir as ir

from onnxcompress.graph.fold import SELECTION_OPS

#: Ops that decode step by step; with the recurrent cells, the ops whose outputs include a state.
LOOP_OPS = frozenset({"Loop", "Scan"})
RECURRENT_OPS = LOOP_OPS | {"LSTM", "GRU", "RNN"}


def recurrent_output(value: ir.Value, through: frozenset[str] | None = SELECTION_OPS,
                     ops: frozenset[str] = RECURRENT_OPS) -> bool:
    """Whether ``value`` comes from an output of one of ``ops`` (LSTM/GRU/RNN, Loop, Scan) through
    ops of one data input (of ``through`` only; None: any such op). A recurrent cell's state given out as
    ``[N, hidden]`` is shaped like class scores, but its arg-max means nothing: ``--validate``
    failed a correct g2p LSTM decoder on its state's top-1 (batch 7: every decoded word equal)."""
    for _ in range(16):
        node = value.producer()
        if node is None:
            return False
        if node.op_type in ops and node.domain in ("", "ai.onnx"):
            return True
        if through is not None and node.op_type not in through:
            return False
        data = [x for x in node.inputs if x is not None and x.const_value is None]
        if len(data) != 1:
            return False
        value = data[0]
    return False


def state_outputs(model: ir.Model) -> set[str]:
    """Names of the graph outputs a recurrent op gives out through selection ops only."""
    return {v.name for v in model.graph.outputs if v.name and recurrent_output(v)}


#: Layers whose reading an output makes it a feature the model computes on, not its answer.
FEATURE_READERS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum", "LSTM", "GRU", "RNN"})


def feature_outputs(model: ir.Model) -> set[str]:
    """Names of the graph outputs another layer of the graph reads (directly or through selection
    ops): a penultimate embedding given out beside the scores its head computes from it. Shaped
    like class scores, its arg-max means nothing: atspm-detector's pair model gives out its
    candidates' 128-d embeddings ``z`` beside their logits, and compare held z's top-1 over 128
    dimensions to 0.99 (batch 8)."""
    return {v.name for v in model.graph.outputs if v.name and reaches(
        v, lambda n: n.op_type in FEATURE_READERS and n.domain in ("", "ai.onnx"),
        through=lambda n: n.op_type in SELECTION_OPS)}


def reaches(value: ir.Value, found: Callable[[ir.Node], bool],
            through: Callable[[ir.Node], bool] | None = None) -> bool:
    """Whether a node ``found`` accepts reads ``value``, directly or downstream through nodes
    ``through`` accepts (None: any node)."""
    stack, seen = [value], {id(value)}
    while stack:
        for node, _ in stack.pop().uses():
            if found(node):
                return True
            if through is None or through(node):
                for out in node.outputs:
                    if id(out) not in seen:
                        seen.add(id(out))
                        stack.append(out)
    return False


#: Ops that make an embedding, not class scores, when they make a [N, C] output: pooling
#: (mean pooling written as ReduceSum / Div by the mask's count; a graph network's readout, a
#: scatter-add of its node features per graph: MiniMol's 512-d fingerprints), normalisation, a
#: pooler's Tanh. A ReduceMean / ReduceSum of a linear head's scores pools class scores (a
#: keyword spotter's clip logits, the mean of its frame logits) and stays class scores.
EMBEDDING_HEADS = frozenset({"ReduceMean", "ReduceSum", "ReduceL2", "LpNormalization", "Div", "Tanh",
                             "ScatterElements", "ScatterND"})
_POOLING = frozenset({"ReduceMean", "ReduceSum"})
#: ... and an activation: no classifier's logits pass one, an embedding's features may (an OSNet
#: re-id's 256-d vector ends in a PReLU, which tf2onnx writes as Add(Relu(x), Mul(Relu(-x), -a)):
#: held to top1>=0.99 for its lead of 0.28, auto wrote fp16 at 1.93x where cosine 0.999 gives
#: 3.24x at 0.9997, every nearest match kept). A sigmoid stays: multi-label probabilities.
ACTIVATION_HEADS = frozenset({"Relu", "PRelu", "LeakyRelu", "Elu", "Selu", "Celu", "Clip", "Gelu",
                              "Softplus", "HardSwish", "Mish", "ThresholdedRelu"})


def _table_lookup(node: ir.Node | None) -> bool:
    """Whether ``node`` looks rows up in a constant table: an embedding layer's output (a Keras
    IMDB embedder's 100 tokens x 8 features, flattened to [N, 800]: compare failed int8 at cosine
    0.999994 on "top-1 96.9%", auto stopped at fp16). A Gather of computed scores (a decoder's
    last position) is not one."""
    return node is not None and node.op_type == "Gather" and node.domain in ("", "ai.onnx") \
        and bool(node.inputs) and node.inputs[0] is not None and node.inputs[0].const_value is not None


#: ... and a vector its exporter named an embedding or features: the name is the one word the
#: user gave it (batch 28's MobileFaceNet: ``embeddings`` [N, 128] from a 1x1 Conv, which a
#: classifier's logits may come from too: held to top1>=0.99, auto kept 44 of 51 layers float at
#: 1.13x where k-means 8 keeps every verification at 3.74x).
EMBEDDING_NAME = re.compile(r"(^|[^a-z])(embed|embeds|embedding|embeddings|emb|feat|feats|feature|features|"
                            r"descriptor|descriptors|encoding|encodings|pooler_output)([^a-z]|$)", re.I)


def _activation(node: ir.Node | None) -> bool:
    """Whether ``node`` is an activation, or the Add / Max of a Relu that spells one."""
    if node is None or node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in ACTIVATION_HEADS:
        return True
    return node.op_type in ("Add", "Max") and any(
        x is not None and x.producer() is not None and x.producer().op_type == "Relu"
        for x in node.inputs)


def plain_output_names(original: ir.Model, outputs: Mapping[str, np.ndarray]) -> list[str]:
    """Graph outputs whose shape says one thing and whose graph another, compared by plain cosine
    (auto's default target; compare and ``--validate`` hold no top-1 on them): a vector per sample
    made by pooling or normalisation (a sentence encoder's pooled embedding, a BERT pooler's
    output; their arg-max means nothing: paraphrase-MiniLM-L3's 384-d mean pooling held to
    top1>=0.99 ended at 2.06x where int8 keeps cosine 0.9998 at 3.94x; MiniMol's fingerprints
    failed compare on "top-1 96.1%" at cosine 0.9998), and values a Loop or Scan decodes step by
    step (SLANet's cell boxes [N, 501, 4], one per structure token, are no detector's anchors:
    held to their 1-cos 5e-6, auto stayed at 2.07x where int8 keeps every structure at 3.76x).
    ``outputs``: the original's outputs on one or a few samples; rows that are probability
    distributions keep their own target (magika's softmax is Exp / ReduceSum; SLANet's
    structure tokens stay a sequence)."""
    from onnxcompress.passes._int8_search import _LINEAR_OPS, head_node, head_op
    from onnxcompress.validation.metrics import distribution_rows

    found = []
    features = feature_outputs(original)  # an embedding another layer reads (atspm's z)
    scored = {np.shape(a) for a in outputs.values() if distribution_rows(np.asarray(a))}
    for v in original.graph.outputs:
        a = np.asarray(outputs.get(v.name, np.zeros((0, 0))))
        if a.ndim < 2 or a.shape[-1] < 2 or not np.issubdtype(a.dtype, np.floating):
            continue
        if distribution_rows(a):
            continue  # probabilities or their logarithms: class scores, a sequence's tokens
        head_at = head_node(v)
        head = None if head_at is None else head_at.op_type
        node = v.producer()
        if head in _POOLING and node is not None and node.op_type in _POOLING and node.inputs \
                and node.inputs[0] is not None and head_op(node.inputs[0]) in _LINEAR_OPS:
            continue  # pooled class scores
        # a vector a Loop gives out through selection ops only is an RNN's state (chars2vec's
        # word embedding, tf2onnx's LSTM Loop -> Slice -> Squeeze [N, 300]: held to top1>=0.99,
        # auto stayed at 1.99x where int8 keeps cosine 0.9998); an RNN classifier's logits come
        # through its linear head
        if (a.ndim == 2 and (head in EMBEDDING_HEADS or v.name in features or _activation(head_at)
                             or EMBEDDING_NAME.search(v.name) is not None
                             or _table_lookup(head_at) or recurrent_output(v, SELECTION_OPS)
                             or head in _LINEAR_OPS and _regression_beside(a, scored))
                or a.ndim >= 3 and recurrent_output(v, None, LOOP_OPS)):
            found.append(v.name)
    return found


def _regression_beside(a: np.ndarray, scored: set[tuple[int, ...]]) -> bool:
    """A linear head's raw rows ``a`` beside probabilities of another width over the same rows
    (``scored``: the shapes of the outputs that are distributions): the model normalises its
    class scores itself, so these are values (MTCNN's R-Net / O-Net box offsets [N, 4] and
    landmarks [N, 10] beside their face softmax [N, 2]: compare failed every O-Net file on "top-1
    96.9%" over the offsets at cosine 0.99997, with face F1 100). Logits given out beside their
    own softmax have its width and stay class scores."""
    shapes = {s for s in scored if s[:-1] == a.shape[:-1]}
    return bool(shapes) and all(s[-1] != a.shape[-1] for s in shapes)


def maps_image_to_image(model: ir.Model) -> bool:
    """Whether a graph output has the shape of an image input (``[N, C, H, W]`` or NHWC, C <= 4,
    the same dimensions): a restoration or enhancement model, every layer of which adds to the
    error of the picture it gives out (batch 20's FFDNet denoisers: int8 without data 36.6-37.9 dB
    PSNR against fp32, no weight an outlier for the guard to step; with --calibration 43-48 dB)."""
    images = {tuple(v.shape) for v in model.graph.inputs
              if v.shape is not None and len(v.shape) == 4 and (_small(v.shape[1]) or _small(v.shape[3]))}
    return any(v.shape is not None and tuple(v.shape) in images for v in model.graph.outputs)


def _small(dim: object) -> bool:
    return isinstance(dim, int) and 0 < dim <= 4
