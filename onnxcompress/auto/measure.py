"""Measurements auto mode makes: model outputs on data, decoded weights, latency and memory."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress._report_weights import _decode
from onnxcompress.data import feed_source
from onnxcompress.errors import DataError
from onnxcompress.tokens import id_inputs, kept_positions, padding_mask
from onnxcompress.weights import Weight

#: Feeds per layer and option for the sensitivity probe (one forward pass each).
PROBE_SAMPLES = 8
LATENCY_RUNS = 20


def save_feeds(path: Path, feeds: list[Mapping[str, np.ndarray]]) -> None:
    """Feeds as one .npz (``i/name`` keys), for tasks that run in other processes."""
    np.savez(path, **{f"{i}/{k}": np.asarray(v) for i, feed in enumerate(feeds) for k, v in feed.items()})


def save_calibration(feeds: list[Mapping[str, np.ndarray]], path: Path, source: Any = None) -> Path:
    """Feeds as a stacked .npz (what ``feed_source`` reads back sample by sample). When they are
    the first samples of an .npz file (``source``), its arrays are sliced, so the workers read
    exactly what a replay with that file reads (inputs such as a scalar sample rate or an LSTM
    state keep the layout their file gave them)."""
    if isinstance(source, (str, Path)) and str(source).endswith(".npz") and Path(source).is_file():
        with np.load(source, allow_pickle=False) as data:
            np.savez(path, **{k: data[k][:len(feeds)] for k in feeds[0] if k in data.files})
        return path
    if any(len({np.shape(f[k]) for f in feeds}) > 1 for k in feeds[0]):
        # Samples of different lengths (sentences, clips, a decoder's cache) do not stack: one
        # file a sample, in a folder, which every data reader takes as it takes the user's.
        folder = path.with_suffix("")
        folder.mkdir(exist_ok=True)
        for i, feed in enumerate(feeds):
            np.savez(folder / f"{i:06d}.npz", **{k: np.asarray(v) for k, v in feed.items()})
        return folder
    np.savez(path, **{k: np.stack([np.asarray(f[k]) for f in feeds], axis=0) for k in feeds[0]})
    return path


def probe_feeds(path: str | Path) -> list[dict[str, np.ndarray]]:
    with np.load(path) as data:
        feeds: dict[int, dict[str, np.ndarray]] = {}
        for key in data.files:
            i, name = key.split("/", 1)
            feeds.setdefault(int(i), {})[name] = data[key]
    return [feeds[i] for i in sorted(feeds)]


def decode_weight(proto: onnx.ModelProto, weight: Weight) -> np.ndarray | None:
    """The value ``weight``'s first consumer reads in ``proto`` (the compressed model), computed
    by onnxruntime from the constant subgraph that decodes it; None if it is not constant or its
    shape changed."""
    for use in weight.uses:
        value = _decode(proto, use.node.name or "", use.index, int(weight.dtype))
        if value is not None and value.dtype != weight.dtype.numpy():
            # A Gather of an int8 table reads int8 rows (scaled after it): not the weight's value;
            # a tied table's other reader (the head) reads the decoded floats.
            continue
        if value is not None:
            if value.shape != tuple(weight.shape):
                return None
            scale = _scale_after(proto, use.node.name or "", use.index)
            axis = weight.out_axis
            if scale is not None and axis is not None and scale.size == value.shape[axis]:
                shape = [1] * value.ndim
                shape[axis] = -1
                value = value * scale.reshape(shape).astype(value.dtype)
            return value
    return None


def _scale_after(proto: onnx.ModelProto, node_name: str, index: int) -> np.ndarray | None:
    """The channel scales of an int8-exact weight (quantize's float-compute weights, k-means at
    8 bits): the consumer reads ``Cast(int8 initializer)`` and its output's only reader is a
    ``Mul`` by a constant; None for any other form."""
    from onnx import numpy_helper

    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    node = next((n for n in g.node if node_name and n.name == node_name), None)
    if node is None or index >= len(node.input) or not node.output:
        return None
    cast = next((n for n in g.node if node.input[index] in n.output), None)
    if cast is None or cast.op_type != "Cast" or cast.input[0] not in inits \
            or inits[cast.input[0]].data_type != onnx.TensorProto.INT8:
        return None
    readers = [n for n in g.node if node.output[0] in n.input]
    if len(readers) != 1 or readers[0].op_type != "Mul":
        return None
    other = [x for x in readers[0].input if x != node.output[0]]
    if len(other) != 1 or other[0] not in inits:
        return None
    return numpy_helper.to_array(inits[other[0]]).reshape(-1)


def state_inputs(model: ir.Model) -> set[str]:
    """Float inputs that carry a decoder's state: a cache of past keys and values a Concat appends
    to and the graph gives back (a branch's output counts; ``[batch, heads, past, head_size]``,
    shaped like an image), or a recurrent layer's initial state (a GRU decoder's hidden state:
    batch 24's teacher-forced g2p-en, whose logits auto held by cosine and lost 4 words). An
    image concatenated with its mask (an inpainting net's first op) is neither."""
    return {v.name for v in model.graph.inputs if v.dtype is not None and v.dtype.is_floating_point()
            and (any(n.op_type == "Concat" and _given_back(n.outputs[0]) for n, _ in v.uses())
                 or _initial_state(v))}


def _initial_state(value: ir.Value, depth: int = 4) -> bool:
    """Whether ``value`` reaches an LSTM/GRU/RNN's initial state (inputs 5, 6) through layout ops."""
    for node, index in value.uses():
        if node.op_type in ("LSTM", "GRU", "RNN") and index in (5, 6):
            return True
        if depth > 0 and node.op_type in ("Unsqueeze", "Squeeze", "Reshape", "Slice", "Identity", "Cast",
                                          "Transpose", "Expand") and index == 0 \
                and _initial_state(node.outputs[0], depth - 1):
            return True
    return False


def _given_back(value: ir.Value, depth: int = 4, *, out: ir.Value | None = None,
                beyond: Mapping[int, ir.Value] | None = None) -> bool:
    """Whether ``value`` is a graph output (``out``, where given; ``beyond``: a branch's output
    is its If's), or reaches one through layout-only ops."""
    if value.is_graph_output() if out is None else (beyond or {}).get(id(value), value) is out:
        return True
    return depth > 0 and any(n.op_type in ("Identity", "Transpose", "Reshape", "Cast") and
                             _given_back(n.outputs[0], depth - 1, out=out, beyond=beyond)
                             for n, _ in value.uses())


class OutputRoles(NamedTuple):
    """What the default target reads from the graph beside the outputs' values."""

    scores: Sequence[str] = ()  # per-position class scores (``graph.outputs.class_score_outputs``)
    states: Sequence[str] = ()  # a decoder step's state, given back as its next input (``loop_states``)
    encoded: Sequence[str] = ()  # a recurrent text encoder's memory (``graph.outputs.recurrent_features``)
    # a token model's float values per token [N, T, ...], not class scores: plain values (padded
    # positions dropped, a Transformer encoder's memory [K, 32] read as class scores held auto at
    # 2.14x), and an encoder's memory, held as ``encoded`` is (at cosine 0.999, 92.75% of batch
    # 41's names kept; 0.9999, 98.0%, as int8)
    positions: Sequence[str] = ()


def output_roles(original: Any, model_path: str | Path, feeds: list, *, tokens: bool = False) -> OutputRoles:
    """The outputs' roles, judged on a few search samples: per-position class scores (the int8
    guard's rule: the default target holds their every position's top-1; ``tokens``:
    ``tokens.token_inputs`` of the feeds), a decoder step's states, and, where the inputs are
    tokens, the float outputs a recurrent layer computes (an encoder's, for a decoder)."""
    from onnxcompress.graph.outputs import class_score_outputs, recurrent_features
    from onnxcompress.runtime import create_session

    session = create_session(model_path, label="the original model", arena=False)
    inputs = {i.name for i in session.get_inputs()}
    used = [{k: v for k, v in f.items() if k in inputs} for f in feeds[:4]]
    refs = [session.run(None, f) for f in used]
    flags = class_score_outputs(original, refs, tokens=tokens)
    names = [o.name for o in session.get_outputs()]
    scores = [o.name for o, flag in zip(original.graph.outputs, flags, strict=False) if flag]
    outputs = [dict(zip(names, r, strict=True)) for r in refs]
    states = loop_states(original, used, outputs)
    # per token: shaped [N, T, ...] as token ids [N, T] on every sample, T > 1 on one (a step's
    # state [1, 1, H] beside its one token is no sequence)
    positions = [n for n in names if tokens and refs and n not in scores and n not in states and all(
        np.asarray(o[n]).dtype.kind == "f" and np.ndim(o[n]) >= 3
        and np.shape(o[n])[:2] in {v.shape for v in id_inputs(f).values()}
        for f, o in zip(used, outputs, strict=True)) and any(np.shape(o[n])[1] > 1 for o in outputs)]
    encoded = sorted((recurrent_features(original) - set(scores)) | set(positions)) if tokens else []
    return OutputRoles(scores, states, encoded, positions)



def loop_states(original: ir.Model, feeds: list[Mapping[str, np.ndarray]],
                outputs: list[Mapping[str, np.ndarray]]) -> list[str]:
    """Outputs a step model gives back as its next call's input: a float output computed from a
    float input, shaped as it is on every sample, where the input is a recurrent state
    (:func:`state_inputs`) or the output is named after it (``hidden`` -> ``hidden_out``,
    ``state`` -> ``stateN``, ``h0`` -> ``hn``); one output an input. A decoder run greedily calls
    the step once a token with its last state: an error there compounds over the sequence. (A
    denoiser's mask, shaped as its spectrum input, is neither.)"""
    from onnxcompress.graph.branches import branch_results
    from onnxcompress.graph.outputs import reaches

    given = {v.name: v for v in original.graph.inputs if v.dtype is not None and v.dtype.is_floating_point()}
    if not feeds or len(original.graph.outputs) < 2:
        return []
    recurrent, beyond = state_inputs(original), branch_results(original)
    found: list[str] = []
    for out in original.graph.outputs:
        named = {k: k if out.name.startswith(k) else _STATE_SUFFIX.sub("", k) for k in given}
        shaped = [k for k in given if (k in recurrent or named[k] and out.name.startswith(named[k])) and all(
            np.asarray(o.get(out.name)).dtype.kind == "f"
            and _next_state(np.shape(o.get(out.name)), np.shape(f.get(k)), k in recurrent)
            for f, o in zip(feeds, outputs, strict=True))]
        # an output named after its input first (``h2_out`` is h2's, not h1's), then one its Concat
        # gives out (a KV cache's ``present_key_1`` is ``past_key_1``'s), then the graph's order
        for name in sorted(shaped, key=lambda k: (named[k] != k, not out.name.startswith(named[k]),
                                                  not _appended(given[k], out, beyond))):
            if reaches(given[name], lambda n, out=out: any(beyond.get(id(o), o) is out for o in n.outputs),
                       beyond=beyond):  # computed from it (in an If's branch: a merged decoder's)
                found.append(out.name)
                del given[name]
                break
    return found


def _next_state(out: tuple[int, ...], given: tuple[int, ...], cache: bool) -> bool:
    """Whether an output shaped ``out`` can be the next call's input shaped ``given``: the same
    shape, or for a cache (:func:`state_inputs`) one axis longer, the positions a step appends (a
    KV cache's [1, 8, P + 1, 4] against [1, 8, P, 4]: batch 41's transliterator decoder was no
    step, its names held at top1>=0.99, and auto changed 3.5% of them where int8 changed 1%)."""
    if out == given:
        return True
    changed = [(a, b) for a, b in zip(out, given, strict=False) if a != b]
    return cache and len(out) == len(given) and len(changed) == 1 and changed[0][0] > changed[0][1]


def _appended(value: ir.Value, out: ir.Value, beyond: Mapping[int, ir.Value]) -> bool:
    """Whether a Concat of ``value`` is given out as ``out`` (through layout-only ops, an If)."""
    return any(n.op_type == "Concat" and _given_back(n.outputs[0], out=out, beyond=beyond)
               for n, _ in value.uses())


#: What a state input's name adds to the name its output shares (``h0``, ``state_in``, ``h_1``).
_STATE_SUFFIX = re.compile(r"(_?in(put)?)?_?\d*$")


#: The key ``run_outputs`` gives a probability output's logits under: ``name + LOGITS``.
LOGITS = "\x00logits"


def logit_values(graph: onnx.GraphProto, opset: int) -> dict[str, str]:
    """Graph outputs that are probabilities of logits the graph computes -> the logits' value:
    a ``Softmax`` normalising the last axis (every axis from ``axis`` on before opset 13) or a
    ``Sigmoid``, through Identity nodes. A float32 softmax saturates: MEGnet's logits lead by 50-2500, its
    probabilities are exactly 0 and 1, and auto's flip estimate saw no sample come near a flip
    until one of 32 eval samples flipped."""
    made = {o: n for n in graph.node for o in n.output}
    found = {}
    for out in graph.output:
        node = made.get(out.name)
        while node is not None and node.op_type == "Identity" and node.input[0] in made:
            node = made[node.input[0]]  # tf2onnx's Identity in front of an output
        if node is None or node.domain not in ("", "ai.onnx") or node.input[0] not in made:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
        rank = len(out.type.tensor_type.shape.dim) if out.type.tensor_type.HasField("shape") else 0
        last_axis = opset < 13 or axis == -1 or rank and axis == rank - 1
        # a value read by two heads is given out once, for the first
        if (node.op_type == "Sigmoid" or node.op_type == "Softmax" and last_axis) \
                and node.input[0] not in found.values():
            found[out.name] = node.input[0]
    return found


def argmax_scores(graph: onnx.GraphProto, opset: int) -> dict[str, tuple[str, int]]:
    """Graph outputs an ``ArgMax`` makes (labels: a tagger's, a segmenter's; through Identity and
    Cast) -> the scores it reads (behind a Softmax / LogSoftmax over the same axis) and its axis.
    Labels are measured by those scores: a target reads float class scores, and auto refused an
    export whose every output is labels (batch 40's Japanese tagger, `ArgMax` of its logits)."""
    made = {o: n for n in graph.node for o in n.output}
    found = {}
    for out in graph.output:
        node = made.get(out.name)
        while node is not None and node.op_type in ("Identity", "Cast") and node.input[0] in made:
            node = made[node.input[0]]
        if node is None or node.op_type != "ArgMax" or node.domain not in ("", "ai.onnx") \
                or node.input[0] not in made:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        scores = node.input[0]
        normed = made[scores]
        if normed.op_type in ("Softmax", "LogSoftmax") and opset >= 13 and normed.domain in ("", "ai.onnx") \
                and next((a.i for a in normed.attribute if a.name == "axis"), -1) == axis \
                and normed.input[0] in made:
            scores = normed.input[0]  # a saturated softmax hides the margins a count reads
        found[out.name] = (scores, axis)
    return found


@contextlib.contextmanager
def _with_logits(model: Any) -> Iterator[tuple[Any, dict[str, str], dict[str, int]]]:
    """``model`` as a session is made of it, with its probability outputs' logits
    (:func:`logit_values`) and its labels' scores (:func:`argmax_scores`) given out too; those
    values' names -> their keys in the result (a label output's own name -> "": not read), and
    label keys -> the axis their scores' classes are on.
    A proto gains the outputs for the block only; a path is read as an IR model, its external
    data left in place. Not for a model over ``WHOLE_CHECK_MAX_BYTES`` inline: it would be
    parsed and serialized again beside onnxruntime's own copy (its counts read probabilities)."""
    import os

    import onnx_ir as ir

    from onnxcompress.model import WHOLE_CHECK_MAX_BYTES

    proto = model if isinstance(model, onnx.ModelProto) else None
    if (proto.ByteSize() if proto is not None else os.path.getsize(model)) > WHOLE_CHECK_MAX_BYTES:
        yield model, {}, {}
        return
    if proto is None:
        proto = onnx.load(str(model), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    outputs = {o.name for o in proto.graph.output}
    found = {k: v for k, v in logit_values(proto.graph, opset).items() if v not in outputs}
    keys = {v: k + LOGITS for k, v in found.items()}
    labels: dict[str, tuple[str, int]] = {}
    for k, v in argmax_scores(proto.graph, opset).items():  # each scores given out once
        if v[0] not in outputs and v[0] not in keys and all(v[0] != s for s, _ in labels.values()):
            labels[k] = v
    keys.update({v[0]: k for k, v in labels.items()})
    keys.update({k: "" for k in labels})
    found.update({k: v[0] for k, v in labels.items()})
    moves = {k: v[1] for k, v in labels.items()}
    if not found:
        yield model, {}, {}
    elif isinstance(model, onnx.ModelProto):
        given = len(model.graph.output)
        model.graph.output.extend(onnx.ValueInfoProto(name=v) for v in found.values())
        try:
            yield model, keys, moves
        finally:
            del model.graph.output[given:]
    else:
        loaded = ir.load(str(model))
        values = {v.name: v for node in loaded.graph for v in node.outputs}
        loaded.graph.outputs.extend(values[v] for v in found.values())
        yield loaded, keys, moves


def run_outputs(model: Any, feeds: list[Mapping[str, np.ndarray]],
                label: str = "the auto-mode candidate",
                rows: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """Every output of ``model`` (a path or model proto) on each feed,
    stacked on axis 0, and a probability output's logits under its name + ``LOGITS``; the
    outputs in ``rows`` (None: found as ``row_outputs`` finds them) concatenated as rows of
    their own. A search finds them once, on the original, and hands them to every candidate's
    run: they are stacked as the reference is, without a probe run each time."""
    from onnxcompress.activations import run
    from onnxcompress.runtime import create_session

    with _with_logits(model) as (given, keys, moves):
        session = create_session(given, label=label, arena=False)
    names = [keys.get(o.name, o.name) for o in session.get_outputs()]
    inputs = {i.name for i in session.get_inputs()}
    as_rows = set().union(*_row_outputs(session, feeds)) if rows is None else set(rows)
    mask, masked = padding_mask(feeds), set()
    # a label output's place is its scores' (given out last)
    parts: dict[str, list[np.ndarray]] = {n or o.name: []
                                          for n, o in zip(names, session.get_outputs(), strict=True)}
    for i, feed in enumerate(feeds):
        # a model that cannot run on a sample (a length the exporter fixed in a Reshape) is one
        # error naming the sample and node, not onnxruntime's traceback
        outs = run(session, None, {k: v for k, v in feed.items() if k in inputs},
                   what=f"sample {i} of the data, running {label}")
        for n, o in zip(names, outs, strict=True):
            if not n:  # labels: read by their scores
                continue
            # an 8-bit integer output is a quantized tensor (a QDQ export's uint8 class scores),
            # measured by its values: targets read float outputs (YAMNet w8a8: "cannot read ''")
            o = np.moveaxis(np.asarray(o), moves[n], -1) if n in moves else np.asarray(o)
            if (kept := kept_positions(o, feed, mask)) is not None:  # the positions padding leaves
                o = kept
                masked.add(n)
            parts[n].append(o.astype(np.float32) if o.dtype in (np.uint8, np.int8) else o)
    return {n: _stack(v, n.split(LOGITS)[0] in as_rows or n in masked) for n, v in parts.items()}


def visible(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``outputs`` without the logits ``run_outputs`` adds: the model's own outputs."""
    return {k: v for k, v in outputs.items() if not k.endswith(LOGITS)}


def _batch_outputs(session: Any) -> set[str]:
    """Outputs whose first axis is the model's batch axis: the symbolic dimension (or the fixed
    size > 1 of image inputs, rank >= 4) every input starts with. Its rows are samples of their
    own, whatever a feed holds: atspm-detector's head takes 6 detectors a call and gives each its
    own decision ([6, 7] a feed), which stacked as [feeds, 6, 7] was held as one sequence (auto
    2.35x where static int8 keeps every decision at 3.55x)."""
    inputs = session.get_inputs()
    firsts = {i.shape[0] if i.shape else None for i in inputs}
    axis = next(iter(firsts)) if len(firsts) == 1 else None
    # ... or a fixed one: a batch of images exported with its size (MTCNN R-Net's 16 crops
    # [16, 3, 24, 24] -> [16, 2], held as one sequence of 16: auto 3.07x where int8 keeps every
    # crop at 3.87x); the fixed first axis of a [T, F] or time-major [T, N, F] input is time
    if not isinstance(axis, str) and not (isinstance(axis, int) and axis > 1
                                          and all(len(i.shape) >= 4 for i in inputs)):
        return set()
    return {o.name for o in session.get_outputs() if o.shape and o.shape[0] == axis}


#: Frames a feed's leading axis is cropped by (at least one) to see which outputs follow it.
FRAME_CROP = 8


def _frame_outputs(session: Any, feeds: list[Mapping[str, np.ndarray]], inputs: set[str]) -> set[str]:
    """Outputs whose first axis follows the frames of inputs taken whole (no batch axis: the
    inputs' dynamic first axes are not one symbol): their rows are frames, each a decision or a
    value of its own, found by running the first feed with those inputs cropped by
    1/FRAME_CROP. madmom's downbeat BLSTM (input [frames, 314], output [frames, 3]: beat,
    downbeat or none per frame) was held to every one of a sample's 600 frames agreeing (auto
    1.52x where uniform int8 keeps 99.9 of the frames at 3.43x), its beat TCN's activation curve
    [frames - 4] to its arg-max frame (1.69x against 2.35x)."""
    if not feeds:
        return set()
    dynamic = {i.name for i in session.get_inputs() if i.name in inputs and i.shape
               and not (isinstance(i.shape[0], int) and i.shape[0] > 0)}
    feed = {k: np.asarray(v) for k, v in feeds[0].items() if k in inputs}
    crop = {k: v[: len(v) - max(1, len(v) // FRAME_CROP)] for k, v in feed.items()
            if k in dynamic and v.ndim >= 2 and len(v) > FRAME_CROP}
    if not crop:
        return set()
    try:
        whole = session.run(None, feed)
        cropped = session.run(None, {**feed, **crop})
    except Exception:  # noqa: BLE001 - a model that needs its whole input: samples as they are
        return set()
    return {o.name for o, a, b in zip(session.get_outputs(), whole, cropped, strict=True)
            if np.ndim(a) >= 1 and np.ndim(a) == np.ndim(b) and len(a) > len(b)
            and np.shape(a)[1:] == np.shape(b)[1:]}


def row_outputs(model: Any, feeds: list) -> tuple[set[str], set[str]]:
    """The outputs whose rows are samples of their own: (on the model's batch axis, following
    the frames of an input taken whole); the second only where the first is empty."""
    from onnxcompress.runtime import create_session

    return _row_outputs(create_session(model, label="the original model", arena=False), feeds)


def _row_outputs(session: Any, feeds: list) -> tuple[set[str], set[str]]:
    batch = _batch_outputs(session)
    return batch, set() if batch else _frame_outputs(session, feeds, {i.name for i in session.get_inputs()})


def frame_output_names(model_path: str | Path, feeds: list) -> list[str]:
    """The outputs ``run_outputs`` takes as frames of an input (``_frame_outputs``)."""
    return sorted(row_outputs(model_path, feeds)[1])


def _stack(parts: list[np.ndarray], batch: bool = False) -> np.ndarray:
    # A batch of 1 per feed, or rows on the model's batch axis, stack along that axis; scalars
    # and unbatched outputs get one.
    parts = padded(parts, from_axis=1)
    if all(p.ndim >= 1 and p.shape[0] == 1 for p in parts) or \
            batch and all(p.ndim >= 1 for p in parts) and len({p.shape[1:] for p in parts}) == 1:
        return np.concatenate(parts, axis=0)
    return np.stack(padded(parts, from_axis=0), axis=0)


def padded(parts: list[np.ndarray], from_axis: int) -> list[np.ndarray]:
    """``parts`` brought to one shape from ``from_axis`` on, where samples of different lengths
    gave outputs of different lengths (a folder of sentences or clips, a decoder's cache of each
    step's length): each grows by repeating its last entries, never by zeros, which would read as
    agreeing rows; one with nothing to repeat grows by zeros. Different ranks are flattened."""
    if len({p.shape[from_axis:] for p in parts}) <= 1:
        return parts
    if len({p.ndim for p in parts}) > 1:
        parts = [p.reshape(-1) for p in parts]
        from_axis = 0
    top = np.max([p.shape for p in parts], axis=0)
    grown = []
    for p in parts:
        widths = [(0, 0) if axis < from_axis else (0, int(top[axis]) - p.shape[axis])
                  for axis in range(p.ndim)]
        grown.append(np.pad(p, widths, mode="edge" if p.size else "constant"))
    return grown


def objective_cost(path: Path, objective: str, feed: Mapping[str, np.ndarray]) -> float:
    """The model at ``path`` measured on this machine: median seconds per run (latency) or
    resident session memory in bytes (memory)."""
    if objective == "memory":
        from onnxcompress.memory import session_memory

        m = session_memory(path, dict(feed), threads=1)
        return float(m.resident_bytes or 0)
    from onnxcompress.runtime import create_session

    session = create_session(str(path), label="the latency probe")
    inputs = {i.name for i in session.get_inputs()}
    feed = {k: v for k, v in feed.items() if k in inputs}
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


#: The share of the calibration data held apart when no validation data is given.
HOLDOUT_FRACTION = 0.25


def split_search_data(model: Any, calibration: Any, validate_data: Any) -> tuple[list, Any, list, Any]:
    """The search samples and labels, and the held-apart ones: ``validate_data``, else the tail
    HOLDOUT_FRACTION of the calibration data (the passes read the first samples)."""
    source = feed_source(calibration, model, name="calibration data")
    feeds = [dict(f) for f in source]
    labels = None if source.labels is None else np.asarray(source.labels)
    if validate_data is not None:
        held_source = feed_source(validate_data, model, name="validation data")
        held = [dict(f) for f in held_source]
        held_labels = None if held_source.labels is None else np.asarray(held_source.labels)
        if not feeds or not held:
            raise DataError("auto mode: the calibration or validation data has no samples.")
        return feeds, labels, held, held_labels
    if len(feeds) < 4:
        raise DataError(f"auto mode: {len(feeds)} calibration samples are too few to hold some apart.",
                        hint="give at least 4 samples, or --validate-data DATA")
    # The tail is held apart, so the passes (which read the first samples) never see it.
    n_held = max(2, round(len(feeds) * HOLDOUT_FRACTION))
    cut = len(feeds) - n_held
    return (feeds[:cut], None if labels is None else labels[:cut],
            feeds[cut:], None if labels is None else labels[cut:])
